//! The lake profile: this lake's conventions mapped onto the engine's concepts (`lake.toml` in the
//! lake root or `--profile`, over the defaults of `data/profiles/default.toml`), compiled to SQL expressions.
//!
//! Flags, marts and KPIs never match literal words of one CRM: they read concept columns
//! (`direction`, `channel`, `stakeholder_role`, ...) that the staging SQL fills from these rules.

use std::collections::BTreeMap;
use std::path::Path;

use object_store::ObjectStoreExt;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::lake::contract::{Contract, quote};

const DEFAULT: &str = repo_file!("data/profiles/default.toml");

/// One concept of the engine's vocabulary: the tables it describes and the values it can take.
pub struct ConceptDef {
    pub id: &'static str,
    pub tables: &'static [&'static str],
    pub values: &'static [&'static str],
    /// What the concept is, and what needs it (shown when it is missing).
    pub meaning: &'static str,
}

pub const CONCEPTS: &[ConceptDef] = &[
    ConceptDef {
        id: "task_direction",
        tables: &["task"],
        values: &["inbound", "outbound"],
        meaning: "task direction (inbound from the customer, outbound from us): the reply-rate KPI and the no-response and champion-dark flags",
    },
    ConceptDef {
        id: "task_channel",
        tables: &["task"],
        values: &["email", "call"],
        meaning: "task channel (email or call): activity mix",
    },
    ConceptDef {
        id: "stakeholder_role",
        tables: &["opportunity_contact_role"],
        values: &["champion", "economic_buyer", "technical_buyer"],
        meaning: "stakeholder roles (champion, economic buyer, technical buyer): the champion, technical and economic-buyer checks",
    },
    ConceptDef {
        id: "meeting_kind",
        tables: &["event"],
        values: &["discovery", "demo"],
        meaning: "meeting kinds (discovery, demo): the discovery checks",
    },
    ConceptDef {
        id: "tracker_topic",
        tables: &["tracker_mention"],
        values: &["competitor", "pricing", "discount", "security", "integration", "technical_blocker", "legal"],
        meaning: "call-tracker topics (competitor, pricing, security, ...): the competition, commercial and technical flags",
    },
    ConceptDef {
        id: "source_class",
        tables: &["opportunity", "lead"],
        values: &["marketing", "seller", "partner"],
        meaning: "lead-source classes (marketing, seller, partner): sourced-pipeline KPIs",
    },
    ConceptDef {
        id: "deal_type",
        tables: &["opportunity"],
        values: &["new_business", "renewal", "expansion"],
        meaning: "deal types (new business, renewal, expansion): renewal, expansion and new-pipeline KPIs",
    },
];

pub fn concept_def(id: &str) -> Option<&'static ConceptDef> {
    CONCEPTS.iter().find(|c| c.id == id)
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Match {
    #[default]
    Equals,
    Prefix,
    Contains,
}

/// One rule: a column of the concept's table whose values map onto concept values.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub column: String,
    #[serde(default, rename = "match")]
    pub matching: Match,
    #[serde(default)]
    pub values: BTreeMap<String, Vec<String>>,
    /// The value for rows whose column is filled but matches none of `values`.
    pub otherwise: Option<String>,
}

fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl Rule {
    /// The rule as a SQL expression over `col` (a quoted column): a concept value or NULL.
    pub fn sql(&self, col: &str) -> String {
        let v = format!("lower(trim(CAST({col} AS VARCHAR)))");
        let mut arms = Vec::new();
        // Equal values are first tested as landed, in the spellings a picklist exports ('email',
        // 'Email', 'EMAIL'): a CASE tests each later arm only on the rows no earlier arm took, so
        // trimming and lower-casing run only on the few rows spelled otherwise (on 16M tasks that
        // took about 2 s of CPU per concept). A spelling is tested early only when it reads as
        // its own word and no earlier value lists that word, so the answer is the same.
        if self.matching == Match::Equals {
            let mut earlier: Vec<String> = Vec::new();
            for (value, words) in &self.values {
                let words: Vec<String> = words.iter().map(|w| w.trim().to_lowercase()).collect();
                let mut spellings: Vec<String> = Vec::new();
                for w in words.iter().filter(|w| !w.is_empty() && !earlier.contains(w)) {
                    let title: String = w
                        .split(' ')
                        .map(|part| {
                            let mut chars = part.chars();
                            chars.next().map(|c| c.to_uppercase().chain(chars).collect::<String>()).unwrap_or_default()
                        })
                        .collect::<Vec<_>>()
                        .join(" ");
                    for spelling in [w.clone(), title, w.to_uppercase()] {
                        if spelling.trim().to_lowercase() == *w && !spellings.contains(&spelling) {
                            spellings.push(spelling);
                        }
                    }
                }
                if !spellings.is_empty() {
                    let listed = spellings.iter().map(|w| literal(w)).collect::<Vec<_>>().join(", ");
                    arms.push(format!("WHEN CAST({col} AS VARCHAR) IN ({listed}) THEN {}", literal(value)));
                }
                earlier.extend(words);
            }
        }
        for (value, words) in &self.values {
            let words: Vec<String> = words.iter().map(|w| w.trim().to_lowercase()).collect();
            let test = match self.matching {
                Match::Equals => {
                    format!("{v} IN ({})", words.iter().map(|w| literal(w)).collect::<Vec<_>>().join(", "))
                }
                Match::Prefix => {
                    words.iter().map(|w| format!("starts_with({v}, {})", literal(w))).collect::<Vec<_>>().join(" OR ")
                }
                Match::Contains => {
                    words.iter().map(|w| format!("strpos({v}, {}) > 0", literal(w))).collect::<Vec<_>>().join(" OR ")
                }
            };
            if !words.is_empty() {
                arms.push(format!("WHEN {test} THEN {}", literal(value)));
            }
        }
        if let Some(o) = &self.otherwise {
            arms.push(format!("WHEN {v} <> '' THEN {}", literal(o)));
        }
        if arms.is_empty() { "CAST(NULL AS VARCHAR)".into() } else { format!("CASE {} END", arms.join(" ")) }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    name: Option<String>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    concept: BTreeMap<String, Vec<Rule>>,
    /// Journeys that fit this lake's export (the `[[journeys]]` of a funnels file), used by
    /// `funnel` and `run` instead of jobs/funnels.toml.
    #[serde(default)]
    journeys: Vec<toml::Table>,
    #[serde(default)]
    stages: Vec<Stage>,
}

/// One stage of the sales process, declared for a lake that does not land the stage catalog
/// (`opportunity_stage`): its order and whether it is closed and won.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    pub name: String,
    pub order: i64,
    #[serde(default)]
    pub closed: bool,
    #[serde(default)]
    pub won: bool,
    pub probability: Option<f64>,
    pub forecast_category: Option<String>,
}

/// The profile a session reads the lake with.
#[derive(Debug, Clone)]
pub struct Profile {
    pub name: String,
    pub description: String,
    /// Where it came from, for messages: the built-in defaults, or a file and what it overrides.
    pub source: String,
    pub concepts: BTreeMap<String, Vec<Rule>>,
    /// The concepts the lake's own file declared (the rest are the defaults).
    pub overridden: Vec<String>,
    pub journeys: Vec<toml::Table>,
    /// The stage catalog, when the lake does not land opportunity_stage.
    pub stages: Vec<Stage>,
}

impl Profile {
    /// The built-in defaults alone.
    pub fn builtin() -> Profile {
        let file: ProfileFile = toml::from_str(DEFAULT).expect("data/profiles/default.toml parses (tested)");
        Profile {
            name: file.name.unwrap_or_else(|| "default".into()),
            description: file.description,
            source: "data/profiles/default.toml (built-in defaults)".into(),
            concepts: file.concept,
            overridden: Vec::new(),
            journeys: Vec::new(),
            stages: Vec::new(),
        }
    }

    /// The lake's profile: `file` if given, else `lake.toml` in the lake root, over the defaults.
    pub async fn load(lake: &Lake, file: Option<&Path>) -> Result<Profile> {
        let (name, text) = match file {
            Some(p) => (
                p.display().to_string(),
                std::fs::read_to_string(p).map_err(|e| Error::Config {
                    file: p.display().to_string(),
                    message: format!("cannot read this lake profile ({e}); check the --profile path"),
                })?,
            ),
            None => match lake.store.get(&lake.path("lake.toml")).await {
                Ok(got) => {
                    let bytes = got.bytes().await?;
                    let text = String::from_utf8(bytes.to_vec()).map_err(|_| Error::Config {
                        file: format!("{}lake.toml", lake.url),
                        message: "not UTF-8 text".into(),
                    })?;
                    (format!("{}lake.toml", lake.url), text)
                }
                Err(object_store::Error::NotFound { .. }) => return Ok(Profile::builtin()),
                Err(e) => return Err(e.into()),
            },
        };
        Profile::parse(&name, &text)
    }

    /// A profile file's text over the defaults; every rule is checked against the contract.
    pub fn parse(name: &str, text: &str) -> Result<Profile> {
        let cfg = |message: String| Error::Config { file: name.to_string(), message };
        let file: ProfileFile = toml::from_str(text).map_err(|e| cfg(e.to_string()))?;
        let mut profile = Profile::builtin();
        for (id, rules) in &file.concept {
            check_concept(id, rules).map_err(cfg)?;
        }
        profile.overridden = file.concept.keys().cloned().collect();
        profile.concepts.extend(file.concept);
        profile.name = file.name.unwrap_or_else(|| "lake".into());
        profile.description = file.description;
        profile.source = if profile.overridden.is_empty() {
            format!("{name} (no concepts declared: the defaults of data/profiles/default.toml)")
        } else {
            format!("{name} (declares {}; the rest from data/profiles/default.toml)", profile.overridden.join(", "))
        };
        profile.journeys = file.journeys;
        for (i, s) in file.stages.iter().enumerate() {
            if s.won && !s.closed {
                return Err(cfg(format!("stage '{}' is won but not closed; a won stage is closed", s.name)));
            }
            if file.stages[..i].iter().any(|o| o.name.eq_ignore_ascii_case(&s.name)) {
                return Err(cfg(format!("stage '{}' is declared twice", s.name)));
            }
        }
        if !file.stages.is_empty() && !file.stages.iter().any(|s| s.won) {
            return Err(cfg("the declared stages have no won stage (won = true, closed = true)".into()));
        }
        profile.stages = file.stages;
        Ok(profile)
    }

    pub fn rules(&self, concept: &str) -> &[Rule] {
        self.concepts.get(concept).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// A declared concept must be the engine's, its values the concept's, its columns the table's
/// contract columns or plain column names (custom fields such as direction__c are read as landed).
fn check_concept(id: &str, rules: &[Rule]) -> std::result::Result<(), String> {
    let def = concept_def(id).ok_or_else(|| {
        format!(
            "unknown concept '{id}'; the engine's concepts are {}",
            CONCEPTS.iter().map(|c| c.id).collect::<Vec<_>>().join(", ")
        )
    })?;
    for r in rules {
        for value in r.values.keys().chain(r.otherwise.iter()) {
            if !def.values.contains(&value.as_str()) {
                return Err(format!(
                    "concept {id}: '{value}' is not one of its values ({}); map this lake's words onto those",
                    def.values.join(", ")
                ));
            }
        }
        if r.column.is_empty() || !r.column.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("concept {id}: column '{}' is not a plain column name", r.column));
        }
        if r.values.is_empty() && r.otherwise.is_none() {
            return Err(format!("concept {id}: a rule on {} maps no values", r.column));
        }
    }
    Ok(())
}

/// The declared stages as a SQL query with the columns of the stage catalog.
pub fn stages_sql(stages: &[Stage]) -> String {
    let opt_f = |v: Option<f64>| v.map_or("CAST(NULL AS DOUBLE)".to_string(), |x| format!("CAST({x} AS DOUBLE)"));
    let opt_s = |v: &Option<String>| v.as_deref().map_or("CAST(NULL AS VARCHAR)".to_string(), literal);
    stages
        .iter()
        .map(|s| {
            format!(
                "SELECT {} AS id, {} AS master_label, CAST({} AS BIGINT) AS sort_order, {} AS default_probability, \
                 {} AS is_closed, {} AS is_won, true AS is_active, {} AS forecast_category_name, true AS _version_exact",
                literal(&format!("declared:{}", s.name)),
                literal(&s.name),
                s.order,
                opt_f(s.probability),
                s.closed,
                s.won,
                opt_s(&s.forecast_category)
            )
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ")
}

/// Whether `column` of `table` is in the contract (else it is a custom column read as landed).
pub fn in_contract(table: &str, column: &str) -> bool {
    Contract::builtin()
        .tables
        .iter()
        .find(|t| t.name == table)
        .is_some_and(|t| t.all_columns().iter().any(|c| c.name.eq_ignore_ascii_case(column)))
}

/// The concept as one SQL expression over a table's columns: the rules whose column is present
/// (`present(column)`), first match wins; NULL when none is.
pub fn concept_sql(profile: &Profile, concept: &str, present: impl Fn(&str) -> bool) -> String {
    let parts: Vec<String> = profile
        .rules(concept)
        .iter()
        .filter(|r| present(&r.column))
        .map(|r| r.sql(&quote(&r.column.to_lowercase())))
        .collect();
    match parts.len() {
        0 => "CAST(NULL AS VARCHAR)".into(),
        1 => parts.into_iter().next().expect("one"),
        _ => format!("COALESCE({})", parts.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_profile_parses_and_names_only_engine_concepts() {
        let p = Profile::builtin();
        for id in p.concepts.keys() {
            let rules = p.rules(id);
            check_concept(id, rules).unwrap();
        }
        assert_eq!(p.concepts.len(), CONCEPTS.len());
    }

    #[test]
    fn a_rule_compiles_to_case_insensitive_sql() {
        let r = Rule {
            column: "subject".into(),
            matching: Match::Prefix,
            values: BTreeMap::from([("inbound".to_string(), vec!["RE:".to_string(), "aw:".to_string()])]),
            otherwise: Some("outbound".into()),
        };
        assert_eq!(
            r.sql("\"subject\""),
            "CASE WHEN starts_with(lower(trim(CAST(\"subject\" AS VARCHAR))), 're:') OR starts_with(lower(trim(CAST(\"subject\" AS VARCHAR))), 'aw:') THEN 'inbound' WHEN lower(trim(CAST(\"subject\" AS VARCHAR))) <> '' THEN 'outbound' END"
        );
    }

    /// The landed-spelling arms change no answer: every value, in every spelling and with stray
    /// spaces, maps as trimming and lower-casing it and looking it up would, also where a word is
    /// listed under two values (the first listed value wins, as in the plain CASE).
    #[tokio::test]
    async fn equal_values_map_the_same_with_or_without_the_landed_spellings() {
        use datafusion::arrow::array::{Array, AsArray};
        let r = Rule {
            column: "kind".into(),
            matching: Match::Equals,
            values: BTreeMap::from([
                ("call".to_string(), vec!["Call".to_string(), "phone".to_string()]),
                ("email".to_string(), vec!["email".to_string(), "list email".to_string(), "phone".to_string()]),
            ]),
            otherwise: Some("other".into()),
        };
        let sql = r.sql("kind");
        assert!(
            sql.starts_with("CASE WHEN CAST(kind AS VARCHAR) IN ('call', 'Call', 'CALL', 'phone', 'Phone', 'PHONE')"),
            "{sql}"
        );
        let inputs = [
            "call",
            "Call",
            "CALL",
            " call ",
            "cAlL",
            "email",
            "Email",
            "EMAIL",
            "List Email",
            "LIST EMAIL",
            "list  email",
            " list email",
            "phone",
            "Phone",
            "PHONE",
            "fax",
            "",
            "  ",
        ];
        let reference = |x: &str| -> Option<&str> {
            let n = x.trim().to_lowercase();
            if ["call", "phone"].contains(&n.as_str()) {
                Some("call")
            } else if ["email", "list email"].contains(&n.as_str()) {
                Some("email")
            } else if !n.is_empty() {
                Some("other")
            } else {
                None
            }
        };
        let values = inputs.iter().map(|x| format!("('{x}')")).collect::<Vec<_>>().join(", ");
        let ctx = datafusion::prelude::SessionContext::new();
        let batches = ctx
            .sql(&format!("SELECT kind, {sql} FROM (VALUES {values}, (NULL)) AS t(kind) ORDER BY 1"))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let mut seen = 0;
        for b in &batches {
            let got =
                datafusion::arrow::compute::cast(b.column(1), &datafusion::arrow::datatypes::DataType::Utf8).unwrap();
            let input =
                datafusion::arrow::compute::cast(b.column(0), &datafusion::arrow::datatypes::DataType::Utf8).unwrap();
            for i in 0..b.num_rows() {
                let x = (!input.is_null(i)).then(|| input.as_string::<i32>().value(i));
                let want = x.and_then(reference);
                let have = (!got.is_null(i)).then(|| got.as_string::<i32>().value(i));
                assert_eq!(have, want, "{x:?}");
                seen += 1;
            }
        }
        assert_eq!(seen, inputs.len() + 1);
    }

    #[test]
    fn a_lake_file_overrides_one_concept_and_keeps_the_rest() {
        let p = Profile::parse(
            "lake.toml",
            "[[concept.stakeholder_role]]\ncolumn = \"role\"\nvalues = { champion = [\"Coach\"] }\n",
        )
        .unwrap();
        assert_eq!(p.overridden, ["stakeholder_role"]);
        assert_eq!(p.rules("stakeholder_role")[0].values["champion"], ["Coach"]);
        assert_eq!(p.rules("task_direction").len(), 2);
    }

    #[test]
    fn unknown_concepts_and_values_are_refused_with_the_vocabulary() {
        let e = Profile::parse("x.toml", "[[concept.mood]]\ncolumn = \"a\"\nvalues = { happy = [\"x\"] }\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown concept 'mood'") && e.contains("task_direction"), "{e}");
        let e =
            Profile::parse("x.toml", "[[concept.task_direction]]\ncolumn = \"a\"\nvalues = { sideways = [\"x\"] }\n")
                .unwrap_err()
                .to_string();
        assert!(e.contains("'sideways' is not one of its values (inbound, outbound)"), "{e}");
    }
}
