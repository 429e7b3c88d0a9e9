//! The Deal Risk Monitor (weekly execution loop): the playbook's seven flags on every open deal as
//! of the run date, a 0-100 risk score with a confidence, one specific next move, and the
//! decision-trace records the learning loop trains on.

pub mod action;
pub mod backtest;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use chrono::{Datelike, Days, NaiveDate};
use datafusion::arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::layers::LakeSession;
use crate::layers::columns::{floats, string_rows, strings};
use crate::outputs::decision_log::{Record, record_id};

const BUILTIN_PLAYBOOK: &str = repo_file!("data/playbook.toml");
pub const FLAG_SQL: [(&str, &str); 7] = [
    ("too_long_in_stage", repo_file!("sql/risk/too_long_in_stage.sql")),
    ("no_stakeholder_response", repo_file!("sql/risk/no_stakeholder_response.sql")),
    ("champion_going_dark", repo_file!("sql/risk/champion_going_dark.sql")),
    ("competition_emerging", repo_file!("sql/risk/competition_emerging.sql")),
    ("commercial_pressure", repo_file!("sql/risk/commercial_pressure.sql")),
    ("technical_incompatibility", repo_file!("sql/risk/technical_incompatibility.sql")),
    ("weak_discovery", repo_file!("sql/risk/weak_discovery.sql")),
];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Playbook {
    pub version: String,
    pub description: String,
    pub scoring: Scoring,
    #[serde(rename = "flag")]
    pub flags: Vec<FlagDef>,
    #[serde(rename = "action")]
    pub actions: Vec<ActionDef>,
    /// The file it was read from (or the built-in's repository path), for error messages.
    #[serde(skip)]
    pub source: String,
    /// The content hash of the file's text (FNV-1a 64, hex): `version` is a label two different
    /// files can share; the hash says which file a score or a record was made with.
    #[serde(skip)]
    pub content_hash: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scoring {
    pub base_logit: f64,
    pub min_age_days: i64,
    pub confident_activities: i64,
    pub confident_age_days: i64,
    pub outcome_after_days: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlagDef {
    pub id: String,
    pub name: String,
    pub weight: f64,
    pub params: BTreeMap<String, toml::Value>,
    /// Tables and lake-profile concepts the flag reads ("task", "concept:task_direction"): when
    /// one is missing the flag cannot fire and the run says so, instead of staying silent.
    #[serde(default)]
    pub needs: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionDef {
    pub id: String,
    pub when: Vec<String>,
    pub priority: i64,
    pub kind: String,
    pub days: u64,
    pub template: String,
}

/// Loads the playbook (the built-in data/playbook.toml unless a file is given) and checks that
/// every flag has its SQL and every action names known flags.
pub fn load(file: Option<&Path>) -> Result<Playbook> {
    let (name, text, _): (String, String, toml::Table) =
        crate::error::read_declaration_text(file, "data/playbook.toml", BUILTIN_PLAYBOOK)?;
    load_text(&name, &text)
}

/// The built-in seed playbook's text (data/playbook.toml): version 1 of every lake.
pub fn builtin_text() -> &'static str {
    BUILTIN_PLAYBOOK
}

/// Parses and checks a playbook from its text; `name` says where it came from in errors.
pub fn load_text(name: &str, text: &str) -> Result<Playbook> {
    let name = name.to_string();
    let mut pb: Playbook =
        toml::from_str(text).map_err(|e| Error::Config { file: name.clone(), message: e.to_string() })?;
    pb.source = name.clone();
    pb.content_hash = record_id(&[text]);
    for f in &pb.flags {
        if !FLAG_SQL.iter().any(|(id, _)| *id == f.id) {
            return Err(Error::Config {
                file: name,
                message: format!(
                    "flag '{}' has no sql/risk/{}.sql; known flags: {}",
                    f.id,
                    f.id,
                    FLAG_SQL.iter().map(|(id, _)| *id).collect::<Vec<_>>().join(", ")
                ),
            });
        }
    }
    for a in &pb.actions {
        if let Some(bad) = a.when.iter().find(|w| !pb.flags.iter().any(|f| &f.id == *w)) {
            return Err(Error::Config { file: name, message: format!("action '{}' names unknown flag '{bad}'", a.id) });
        }
    }
    // Every parameter a flag's SQL names must be declared, and be a plain value: found here, at
    // load, with the file's name, rather than when the weekly run reaches that flag.
    for f in &pb.flags {
        fill_params(f, &name, template(f).to_string())?;
    }
    Ok(pb)
}

/// The flag's SQL with its playbook parameters filled in; a parameter the SQL names but the
/// playbook lacks is an error naming both.
pub fn flag_sql(session: &LakeSession, pb: &Playbook, flag: &FlagDef) -> Result<String> {
    fill_params(flag, &pb.source, session.fill(template(flag)))
}

fn template(flag: &FlagDef) -> &'static str {
    FLAG_SQL.iter().find(|(id, _)| *id == flag.id).map(|(_, s)| *s).unwrap_or_default()
}

/// Fills the `{{param:...}}` slots of a flag's SQL from the playbook read from `source`.
fn fill_params(flag: &FlagDef, source: &str, mut sql: String) -> Result<String> {
    while let Some(start) = sql.find("{{param:") {
        let Some(len) = sql[start..].find("}}") else { break };
        let key = sql[start + 8..start + len].to_string();
        let value = flag.params.get(&key).ok_or_else(|| Error::Config {
            file: source.to_string(),
            message: format!("flag '{}' needs params.{key} (sql/risk/{}.sql uses it)", flag.id, flag.id),
        })?;
        let text = match value {
            toml::Value::String(s) => s.replace('\'', "''"),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => {
                return Err(Error::Config {
                    file: source.to_string(),
                    message: format!(
                        "flag '{}': params.{key} must be a number, text or true/false, not {other:?}",
                        flag.id
                    ),
                });
            }
        };
        sql.replace_range(start..start + len + 2, &text);
    }
    Ok(sql)
}

/// One open deal's context (names, stage, age), from mart.deal_context.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Deal {
    pub id: String,
    pub name: String,
    pub account: String,
    pub owner_id: String,
    pub owner: String,
    pub manager_id: Option<String>,
    pub manager: String,
    pub stage: String,
    pub amount: Option<f64>,
    pub close_date: Option<String>,
    pub age_days: i64,
    pub days_in_stage: i64,
    pub stage_changes: i64,
    pub contacts: i64,
    pub activities: i64,
    pub champion: String,
    pub economic_buyer: String,
    pub technical_buyer: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FiredFlag {
    pub opportunity_id: String,
    pub flag: String,
    pub value: Option<f64>,
    pub evidence: String,
}

/// One open deal's risk: the output row.
#[derive(Debug, Clone, PartialEq)]
pub struct DealRisk {
    pub deal: Deal,
    /// scored, or insufficient_history (no score, as Einstein does).
    pub status: String,
    pub score: Option<i64>,
    pub confidence: Option<f64>,
    pub scored_by: String,
    pub flags: Vec<FiredFlag>,
    pub action_id: Option<String>,
    pub action_kind: Option<String>,
    pub action: String,
    pub deadline: Option<NaiveDate>,
}

async fn deals(session: &LakeSession) -> Result<Vec<Deal>> {
    let sql = "SELECT opportunity_id, deal_name, account_name, owner_id, owner_name, manager_id, manager_name, stage_name, \
               amount, CAST(close_date AS VARCHAR), age_days, days_in_stage, stage_changes, contacts, activities, \
               champion_name, economic_buyer_name, technical_buyer_name FROM mart.deal_context ORDER BY opportunity_id";
    let mut out = Vec::new();
    for b in session.collect_declared(sql, "the risk job's read of mart.deal_context").await? {
        let s: Vec<Vec<Option<String>>> =
            [0, 1, 2, 3, 4, 5, 6, 7, 9, 15, 16, 17].iter().map(|i| strings(b.column(*i))).collect::<Result<_>>()?;
        let f: Vec<Vec<Option<f64>>> =
            [8, 10, 11, 12, 13, 14].iter().map(|i| floats(b.column(*i))).collect::<Result<_>>()?;
        for r in 0..b.num_rows() {
            let g = |k: usize| s[k][r].clone().unwrap_or_default();
            let n = |k: usize| f[k][r].unwrap_or(0.0) as i64;
            out.push(Deal {
                id: g(0),
                name: g(1),
                account: g(2),
                owner_id: g(3),
                owner: g(4),
                manager_id: s[5][r].clone(),
                manager: g(6),
                stage: g(7),
                close_date: s[8][r].clone(),
                champion: g(9),
                economic_buyer: g(10),
                technical_buyer: g(11),
                amount: f[0][r],
                age_days: n(1),
                days_in_stage: n(2),
                stage_changes: n(3),
                contacts: n(4),
                activities: n(5),
            });
        }
    }
    Ok(out)
}

/// Every flag that fires, per deal, with its evidence.
/// The flags this lake cannot fire, each with what it lacks.
pub fn uninstrumented(session: &LakeSession, pb: &Playbook) -> Vec<(String, Vec<String>)> {
    pb.flags
        .iter()
        .map(|f| (f.id.clone(), session.missing(&f.needs)))
        .filter(|(_, missing)| !missing.is_empty())
        .collect()
}

pub async fn fired(session: &LakeSession, pb: &Playbook) -> Result<Vec<FiredFlag>> {
    let mut out = Vec::new();
    let blind = uninstrumented(session, pb);
    for flag in pb.flags.iter().filter(|f| !blind.iter().any(|(id, _)| *id == f.id)) {
        let sql = flag_sql(session, pb, flag)?;
        let batches = session.collect_declared(&sql, &format!("sql/risk/{}.sql", flag.id)).await?;
        for b in batches {
            let (ids, values, ev) = (strings(b.column(0))?, floats(b.column(1))?, strings(b.column(2))?);
            for r in 0..b.num_rows() {
                let Some(id) = ids[r].clone() else { continue };
                out.push(FiredFlag {
                    opportunity_id: id,
                    flag: flag.id.clone(),
                    value: values[r],
                    evidence: ev[r].clone().unwrap_or_default(),
                });
            }
        }
    }
    out.sort_by(|a, b| (&a.opportunity_id, &a.flag).cmp(&(&b.opportunity_id, &b.flag)));
    out.dedup_by(|a, b| a.opportunity_id == b.opportunity_id && a.flag == b.flag);
    Ok(out)
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Fills an action template with the deal's names and dates.
pub fn render(template: &str, deal: &Deal, flags: &[FiredFlag], deadline: NaiveDate) -> String {
    let mut out = template
        .replace("{owner}", &deal.owner)
        .replace("{manager}", &deal.manager)
        .replace("{account}", &deal.account)
        .replace("{deal}", &deal.name)
        .replace("{stage}", &deal.stage)
        .replace("{days_in_stage}", &deal.days_in_stage.to_string())
        .replace("{champion}", &deal.champion)
        .replace("{economic_buyer}", &deal.economic_buyer)
        .replace("{technical_buyer}", &deal.technical_buyer)
        .replace("{close_date}", deal.close_date.as_deref().unwrap_or("(no close date)"))
        .replace("{deadline}", &deadline.to_string());
    while let Some(start) = out.find("{evidence:") {
        let Some(len) = out[start..].find('}') else { break };
        let flag = &out[start + 10..start + len];
        let ev = flags.iter().find(|f| f.flag == flag).map(|f| f.evidence.clone()).unwrap_or_default();
        out.replace_range(start..start + len + 1, &ev);
    }
    out
}

/// Scores each open deal and picks its move.
pub fn assess(
    pb: &Playbook,
    deals: Vec<Deal>,
    fired: &[FiredFlag],
    as_of: NaiveDate,
    weights: &Weights,
) -> Vec<DealRisk> {
    let mut by_deal: HashMap<&str, Vec<FiredFlag>> = HashMap::new();
    for f in fired {
        by_deal.entry(f.opportunity_id.as_str()).or_default().push(f.clone());
    }
    let weight = &weights.by_flag;
    let scored_by = weights.scored_by.clone();
    let mut out = Vec::new();
    for deal in deals {
        let flags = by_deal.remove(deal.id.as_str()).unwrap_or_default();
        let thin = deal.age_days < pb.scoring.min_age_days || (deal.activities == 0 && deal.stage_changes <= 1);
        if thin {
            out.push(DealRisk {
                status: "insufficient_history".into(),
                score: None,
                confidence: None,
                scored_by: scored_by.clone(),
                action: format!(
                    "Not scored: {} is {} days old with {} activities; not enough history to judge",
                    deal.name, deal.age_days, deal.activities
                ),
                flags,
                action_id: None,
                action_kind: None,
                deadline: None,
                deal,
            });
            continue;
        }
        let logit =
            weights.base_logit + flags.iter().map(|f| weight.get(f.flag.as_str()).copied().unwrap_or(0.0)).sum::<f64>();
        let score = (100.0 * sigmoid(logit)).round() as i64;
        let confidence = 0.4
            + 0.2 * f64::from(u8::from(deal.activities >= pb.scoring.confident_activities))
            + 0.2 * f64::from(u8::from(deal.contacts >= 1))
            + 0.2 * f64::from(u8::from(deal.age_days >= pb.scoring.confident_age_days));
        let active: Vec<&str> = flags.iter().map(|f| f.flag.as_str()).collect();
        let mut actions: Vec<&ActionDef> =
            pb.actions.iter().filter(|a| a.when.iter().all(|w| active.contains(&w.as_str()))).collect();
        actions.sort_by_key(|a| std::cmp::Reverse(a.priority));
        let (action_id, kind, action, deadline) = match actions.first() {
            Some(a) => {
                let deadline = as_of + Days::new(a.days);
                (Some(a.id.clone()), Some(a.kind.clone()), render(&a.template, &deal, &flags, deadline), Some(deadline))
            }
            None => (None, None, "No move needed this week: no risk flag is active".to_string(), None),
        };
        out.push(DealRisk {
            deal,
            status: "scored".into(),
            score: Some(score),
            confidence: Some(confidence),
            scored_by: scored_by.clone(),
            flags,
            action_id,
            action_kind: kind,
            action,
            deadline,
        });
    }
    out.sort_by(|a, b| (std::cmp::Reverse(a.score), &a.deal.id).cmp(&(std::cmp::Reverse(b.score), &b.deal.id)));
    out
}

/// Assesses every open deal as of the session's date, with the weights `weights` chooses.
pub async fn compute(session: &LakeSession, pb: &Playbook) -> Result<Vec<DealRisk>> {
    let w = weights(session, pb).await?;
    compute_with(session, pb, &w).await
}

/// Assesses every open deal as of the session's date with the given weights.
pub async fn compute_with(session: &LakeSession, pb: &Playbook, weights: &Weights) -> Result<Vec<DealRisk>> {
    let as_of = session.as_of.0.ok_or_else(|| {
        Error::Other("the deal risk job needs an explicit as-of date: pass --as-of YYYY-MM-DD".into())
    })?;
    // The flags read these in a dozen queries naming different columns: compute each once, whole,
    // the tables the others read first (mart.deal_context reads two columns of mart.deal, and
    // both read staging.opportunity: warmed later, each was computed twice, first with the few
    // columns the earlier query named; 3.7 s of the job on a million deals). The deal history
    // comes first: staging.opportunity reads a few of its columns, the flags the rest.
    for table in ["staging.opportunity_history", "staging.opportunity", "mart.deal", "mart.deal_context"] {
        crate::layers::shared::warm_all(session, table).await?;
    }
    let deals = deals(session).await?;
    let fired = fired(session, pb).await?;
    Ok(assess(pb, deals, &fired, as_of, weights))
}

/// The weights a score is made with: the playbook's priors, or weights the learning loop fitted
/// (`gtm-loop models`, `output.risk_weights`) when they beat the priors on held-out deal-weeks.
#[derive(Debug, Clone, PartialEq)]
pub struct Weights {
    pub base_logit: f64,
    pub by_flag: HashMap<String, f64>,
    /// What scored the deals, and why: shown in `scored_by` and in the run's text.
    pub scored_by: String,
    pub fitted: bool,
}

impl Weights {
    pub fn priors(pb: &Playbook) -> Weights {
        Weights {
            base_logit: pb.scoring.base_logit,
            by_flag: pb.flags.iter().map(|f| (f.id.clone(), f.weight)).collect(),
            scored_by: format!("playbook {} priors", pb.version),
            fitted: false,
        }
    }
}

/// The weights for a run: the newest fit in `output.risk_weights` made on or before the run's
/// date for this very playbook file (its content hash), used only when that fit beat the priors
/// on its held-out period; otherwise the priors, saying why.
pub async fn weights(session: &LakeSession, pb: &Playbook) -> Result<Weights> {
    let mut priors = Weights::priors(pb);
    let exists = session.ctx.table_exist("output.risk_weights").unwrap_or(false);
    let Some(as_of) = session.as_of.0 else { return Ok(priors) };
    if !exists {
        priors.scored_by.push_str(" (no fitted weights yet: gtm-loop models fits them)");
        return Ok(priors);
    }
    let sql = format!(
        "SELECT term, fitted_weight, CAST(beats_priors AS VARCHAR) AS beats, model_version, fitted_as_of, verdict          FROM output.risk_weights WHERE playbook_hash = '{}' AND fitted_as_of <= '{as_of}'            AND fitted_as_of = (SELECT MAX(fitted_as_of) FROM output.risk_weights                                WHERE playbook_hash = '{}' AND fitted_as_of <= '{as_of}')          ORDER BY term",
        pb.content_hash, pb.content_hash
    );
    let mut rows = Vec::new();
    for b in session.ctx.sql(&sql).await?.collect().await? {
        let (terms, w, rest) = (strings(b.column(0))?, floats(b.column(1))?, string_rows(&b, 6)?);
        for r in 0..b.num_rows() {
            rows.push((terms[r].clone().unwrap_or_default(), w[r], rest[r][2..].to_vec()));
        }
    }
    let Some((_, _, meta)) = rows.first() else {
        priors.scored_by.push_str(&format!(
            " (no weights fitted on or before {as_of} for this playbook file, hash {})",
            pb.content_hash
        ));
        return Ok(priors);
    };
    let [beats, version, fitted_as_of, verdict] = [0, 1, 2, 3].map(|i| meta[i].clone().unwrap_or_default());
    if beats != "true" {
        priors.scored_by.push_str(&format!(
            " (the weights fitted {fitted_as_of}, {version}, did not beat them on held-out data: {verdict})"
        ));
        return Ok(priors);
    }
    let mut fitted = Weights {
        base_logit: priors.base_logit,
        by_flag: HashMap::new(),
        scored_by: format!("fitted weights {version} (fitted {fitted_as_of}; {verdict})"),
        fitted: true,
    };
    for (term, w, _) in &rows {
        let Some(w) = *w else { continue };
        if term == "(intercept)" {
            fitted.base_logit = w;
        } else {
            fitted.by_flag.insert(term.clone(), w);
        }
    }
    Ok(fitted)
}

pub fn schema() -> SchemaRef {
    let s = |n: &str, null: bool| Field::new(n, DataType::Utf8, null);
    Arc::new(Schema::new(vec![
        s("opportunity_id", false),
        s("deal_name", false),
        s("account_name", false),
        s("owner_id", false),
        s("owner_name", false),
        s("manager_id", true),
        s("manager_name", false),
        s("stage_name", false),
        Field::new("amount", DataType::Float64, true),
        s("close_date", true),
        Field::new("days_in_stage", DataType::Int64, false),
        s("status", false),
        Field::new("risk_score", DataType::Int64, true),
        Field::new("confidence", DataType::Float64, true),
        s("scored_by", false),
        s("flags", false),
        s("evidence", false),
        s("action_id", true),
        s("action_kind", true),
        s("action", false),
        s("deadline", true),
    ]))
}

pub fn batch(rows: &[DealRisk]) -> Result<RecordBatch> {
    let s = |f: &dyn Fn(&DealRisk) -> Option<String>| -> ArrayRef {
        Arc::new(StringArray::from(rows.iter().map(f).collect::<Vec<_>>()))
    };
    Ok(RecordBatch::try_new(
        schema(),
        vec![
            s(&|r| Some(r.deal.id.clone())),
            s(&|r| Some(r.deal.name.clone())),
            s(&|r| Some(r.deal.account.clone())),
            s(&|r| Some(r.deal.owner_id.clone())),
            s(&|r| Some(r.deal.owner.clone())),
            s(&|r| r.deal.manager_id.clone()),
            s(&|r| Some(r.deal.manager.clone())),
            s(&|r| Some(r.deal.stage.clone())),
            Arc::new(Float64Array::from(rows.iter().map(|r| r.deal.amount).collect::<Vec<_>>())),
            s(&|r| r.deal.close_date.clone()),
            Arc::new(Int64Array::from(rows.iter().map(|r| r.deal.days_in_stage).collect::<Vec<_>>())),
            s(&|r| Some(r.status.clone())),
            Arc::new(Int64Array::from(rows.iter().map(|r| r.score).collect::<Vec<_>>())),
            Arc::new(Float64Array::from(rows.iter().map(|r| r.confidence).collect::<Vec<_>>())),
            s(&|r| Some(r.scored_by.clone())),
            s(&|r| Some(r.flags.iter().map(|f| f.flag.as_str()).collect::<Vec<_>>().join(","))),
            s(&|r| Some(r.flags.iter().map(|f| format!("{}: {}", f.flag, f.evidence)).collect::<Vec<_>>().join(" | "))),
            s(&|r| r.action_id.clone()),
            s(&|r| r.action_kind.clone()),
            s(&|r| Some(r.action.clone())),
            s(&|r| r.deadline.map(|d| d.to_string())),
        ],
    )?)
}

pub fn flag_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("opportunity_id", DataType::Utf8, false),
        Field::new("flag", DataType::Utf8, false),
        Field::new("value", DataType::Float64, true),
        Field::new("evidence", DataType::Utf8, false),
    ]))
}

pub fn flag_batch(rows: &[DealRisk]) -> Result<RecordBatch> {
    let all: Vec<&FiredFlag> = rows.iter().flat_map(|r| r.flags.iter()).collect();
    Ok(RecordBatch::try_new(
        flag_schema(),
        vec![
            Arc::new(StringArray::from(all.iter().map(|f| f.opportunity_id.clone()).collect::<Vec<_>>())),
            Arc::new(StringArray::from(all.iter().map(|f| f.flag.clone()).collect::<Vec<_>>())),
            Arc::new(Float64Array::from(all.iter().map(|f| f.value).collect::<Vec<_>>())),
            Arc::new(StringArray::from(all.iter().map(|f| f.evidence.clone()).collect::<Vec<_>>())),
        ],
    )?)
}

/// The Monday of the as-of date's week: one decision record per deal per week, however often the
/// week is re-run.
pub fn week_of(d: NaiveDate) -> NaiveDate {
    d - Days::new(d.weekday().num_days_from_monday().into())
}

/// The log records of this run: one per scored open deal per week, keyed by deal, week and
/// playbook. A deal with a flag is a `deal_flag` (a move was recommended); one without is a
/// `deal_score`, the control group the learning loop compares flagged deals against. Both carry
/// the score, the action's id, the playbook's content hash and the code version (set on append).
/// Both kinds share one id per deal and week, so a week re-run after the deal changed keeps the
/// first record, whichever kind it was.
pub fn records(rows: &[DealRisk], pb: &Playbook, as_of: NaiveDate, recorded_at: &str) -> Vec<Record> {
    let week = week_of(as_of).to_string();
    rows.iter()
        .filter(|r| r.status == "scored")
        .map(|r| {
            let state = serde_json::json!({
                "stage": r.deal.stage, "amount": r.deal.amount, "close_date": r.deal.close_date,
                "days_in_stage": r.deal.days_in_stage, "score": r.score, "confidence": r.confidence,
                "scored_by": r.scored_by,
                "flags": r.flags.iter().map(|f| serde_json::json!({"flag": f.flag, "value": f.value, "evidence": f.evidence})).collect::<Vec<_>>(),
            });
            let flagged = !r.flags.is_empty();
            Record {
                record_id: record_id(&["deal_flag", &r.deal.id, &week, &pb.version]),
                kind: if flagged { "deal_flag" } else { "deal_score" }.into(),
                as_of_date: as_of.to_string(),
                recorded_at: recorded_at.to_string(),
                subject_type: "opportunity".into(),
                subject_id: r.deal.id.clone(),
                period_start: Some(week.clone()),
                playbook_version: format!("playbook {}", pb.version),
                status: flagged.then(|| r.flags.iter().map(|f| f.flag.as_str()).collect::<Vec<_>>().join(",")),
                action: flagged.then(|| r.action.clone()),
                action_id: r.action_id.clone(),
                owner_id: Some(r.deal.owner_id.clone()),
                owner_name: Some(r.deal.owner.clone()),
                follow_up_date: r.deadline.map(|d| d.to_string()),
                expected_outcome: Some(format!(
                    "{} advances beyond {} or closes won, without its close date moving, within {} days",
                    r.deal.name, r.deal.stage, pb.scoring.outcome_after_days
                )),
                evidence: Some(state.to_string()),
                score: r.score.map(|s| s as f64),
                playbook_hash: Some(pb.content_hash.clone()),
                ..Record::default()
            }
        })
        .collect()
}

/// What became of a deal between a flag and a later date: won, lost, slipped (its close date moved
/// later while open), stage_advanced, or no_change.
pub fn outcome(then_stage_order: Option<i64>, then_close: Option<&str>, now: &DealState) -> &'static str {
    if now.is_closed {
        return if now.is_won { "won" } else { "lost" };
    }
    if let (Some(a), Some(b)) = (then_close, now.close_date.as_deref())
        && b > a
    {
        return "slipped";
    }
    if let (Some(t), Some(n)) = (then_stage_order, now.stage_order)
        && n > t
    {
        return "stage_advanced";
    }
    "no_change"
}

#[derive(Debug, Clone, Default)]
pub struct DealState {
    pub is_closed: bool,
    pub is_won: bool,
    pub close_date: Option<String>,
    pub stage_order: Option<i64>,
}

/// Outcome records for deal scores (flagged or not) logged at least `outcome_after_days` before
/// this run's date, read from the deal as it stands on this run's date (the log records only what was known then).
pub async fn outcomes(
    session: &LakeSession,
    pb: &Playbook,
    as_of: NaiveDate,
    recorded_at: &str,
) -> Result<Vec<Record>> {
    let cutoff = as_of - Days::new(pb.scoring.outcome_after_days);
    // The deal's state at flag time is in the record's JSON (read in Rust); its state now is the
    // staged opportunity as of this run.
    let sql = format!(
        "SELECT i.record_id, i.subject_id, i.evidence, i.playbook_version, CAST(o.is_closed AS VARCHAR), \
           CAST(o.is_won AS VARCHAR), CAST(o.close_date AS VARCHAR), o.stage_order, i.playbook_hash \
         FROM log.decision_trace AS i JOIN staging.opportunity AS o ON o.id = i.subject_id \
         WHERE i.kind IN ('deal_flag', 'deal_score') AND i.as_of_date <= '{cutoff}' \
           AND NOT EXISTS (SELECT 1 FROM log.decision_trace AS x WHERE x.kind = 'deal_outcome' \
             AND x.refers_to = i.record_id AND x.as_of_date <= '{as_of}') \
         ORDER BY i.record_id"
    );
    let stage_order: HashMap<String, i64> = {
        let b =
            session.ctx.sql("SELECT master_label, sort_order FROM staging.opportunity_stage").await?.collect().await?;
        let mut m = HashMap::new();
        for batch in b {
            let (n, o) = (strings(batch.column(0))?, floats(batch.column(1))?);
            for (n, o) in n.into_iter().zip(o) {
                if let (Some(n), Some(o)) = (n, o) {
                    m.insert(n, o as i64);
                }
            }
        }
        m
    };
    let mut out = Vec::new();
    for b in session.ctx.sql(&sql).await?.collect().await? {
        let s: Vec<Vec<Option<String>>> = (0..7).map(|i| strings(b.column(i))).collect::<Result<_>>()?;
        let order = floats(b.column(7))?;
        let hashes = strings(b.column(8))?;
        for r in 0..b.num_rows() {
            let (Some(id), Some(deal)) = (s[0][r].clone(), s[1][r].clone()) else { continue };
            let state: serde_json::Value =
                s[2][r].as_deref().and_then(|e| serde_json::from_str(e).ok()).unwrap_or_default();
            let then_stage = state["stage"].as_str().and_then(|st| stage_order.get(st)).copied();
            let then_close = state["close_date"].as_str();
            let now = DealState {
                is_closed: s[4][r].as_deref() == Some("true"),
                is_won: s[5][r].as_deref() == Some("true"),
                close_date: s[6][r].clone(),
                stage_order: order[r].map(|o| o as i64),
            };
            let what = outcome(then_stage, then_close, &now);
            out.push(Record {
                record_id: record_id(&["deal_outcome", &id]),
                kind: "deal_outcome".into(),
                as_of_date: as_of.to_string(),
                recorded_at: recorded_at.to_string(),
                subject_type: "opportunity".into(),
                subject_id: deal,
                playbook_version: s[3][r].clone().unwrap_or_default(),
                playbook_hash: hashes[r].clone(),
                refers_to: Some(id),
                outcome: Some(what.into()),
                ..Record::default()
            });
        }
    }
    Ok(out)
}

/// The rep's list (their deals ranked, with the move) and the manager's team board, as Markdown.
pub fn views(rows: &[DealRisk], as_of: NaiveDate, pb: &Playbook) -> (String, String) {
    let mut reps = format!("# Deal risk by rep, as of {as_of} (playbook {})\n", pb.version);
    let mut by_owner: BTreeMap<(&str, &str), Vec<&DealRisk>> = BTreeMap::new();
    for r in rows {
        by_owner.entry((r.deal.owner.as_str(), r.deal.owner_id.as_str())).or_default().push(r);
    }
    for ((owner, _), deals) in &by_owner {
        reps.push_str(&format!(
            "\n## {owner}\n\n| risk | deal | stage | flags | this week's move |\n|---|---|---|---|---|\n"
        ));
        for r in deals {
            reps.push_str(&format!(
                "| {} | {} ({}) | {} ({} d) | {} | {} |\n",
                r.score.map(|s| s.to_string()).unwrap_or_else(|| "n/a".into()),
                r.deal.name,
                r.deal.account,
                r.deal.stage,
                r.deal.days_in_stage,
                r.flags.iter().map(|f| f.flag.as_str()).collect::<Vec<_>>().join(", "),
                r.action.replace('|', "/")
            ));
        }
    }
    let mut board = format!("# Team deal-risk board, as of {as_of}\n");
    let mut by_manager: BTreeMap<&str, Vec<&DealRisk>> = BTreeMap::new();
    for r in rows {
        by_manager.entry(r.deal.manager.as_str()).or_default().push(r);
    }
    for (manager, deals) in &by_manager {
        let scored: Vec<&&DealRisk> = deals.iter().filter(|r| r.score.is_some()).collect();
        let flagged = scored.iter().filter(|r| !r.flags.is_empty()).count();
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for r in deals {
            for f in &r.flags {
                *counts.entry(f.flag.as_str()).or_default() += 1;
            }
        }
        board.push_str(&format!(
            "\n## {manager}: {} open deals, {flagged} flagged, {} not scored\n\nFlags: {}\n\nTop risks:\n",
            deals.len(),
            deals.len() - scored.len(),
            counts.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
        ));
        for r in scored.iter().take(5) {
            board.push_str(&format!(
                "- {} ({}): risk {} — {}\n",
                r.deal.name,
                r.deal.owner,
                r.score.unwrap_or_default(),
                r.action
            ));
        }
    }
    (reps, board)
}

/// Which playbook scores whose deals: during a rollout the treated sellers' deals use the new
/// version and the holdout's the one before (decided by the learning loop's approvals).
#[derive(Debug, Clone)]
pub struct Assignment {
    pub playbooks: Vec<Playbook>,
    /// The version in force (the manifest's playbook).
    pub current: usize,
    pub by_seller: HashMap<String, usize>,
    /// For owners not named in any rollout.
    pub default: usize,
    pub note: String,
    /// Score with each version's own weights, never with weights fitted since: set once the lake
    /// has an approved version, so a holdout keeps exactly the previous play and fitted weights
    /// reach the score only through an approved proposal.
    pub own_weights_only: bool,
}

impl Assignment {
    pub fn single(pb: &Playbook) -> Assignment {
        Assignment {
            playbooks: vec![pb.clone()],
            current: 0,
            by_seller: HashMap::new(),
            default: 0,
            note: String::new(),
            own_weights_only: false,
        }
    }

    pub fn for_owner(&self, owner: &str) -> usize {
        self.by_seller.get(owner).copied().unwrap_or(self.default)
    }
}

/// The run: assess, publish deal_risk and deal_risk_flags with the rep and manager views, then log
/// the flagged deals and the outcomes of earlier flags.
pub async fn run(
    session: &LakeSession,
    pb: &Playbook,
) -> Result<(Vec<DealRisk>, String, crate::outputs::Manifest, usize)> {
    run_assigned(session, &Assignment::single(pb)).await
}

/// The run with one playbook per seller (a rollout with its holdout).
pub async fn run_assigned(
    session: &LakeSession,
    plan: &Assignment,
) -> Result<(Vec<DealRisk>, String, crate::outputs::Manifest, usize)> {
    let started = std::time::Instant::now();
    let as_of = session.as_of.0.ok_or_else(|| Error::Other("the deal risk job needs --as-of YYYY-MM-DD".into()))?;
    let pb = &plan.playbooks[plan.current];
    let used: BTreeSet<usize> = plan.by_seller.values().copied().chain([plan.current, plan.default]).collect();
    let mut rows: Vec<DealRisk> = Vec::new();
    let mut groups: Vec<(usize, Vec<DealRisk>)> = Vec::new();
    let mut weights = Weights::priors(pb);
    for &i in &used {
        let w = if plan.own_weights_only {
            let mut w = Weights::priors(&plan.playbooks[i]);
            w.scored_by = format!(
                "playbook {} weights (an approved version: fitted weights reach the score only through `proposals approve`)",
                plan.playbooks[i].version
            );
            w
        } else {
            self::weights(session, &plan.playbooks[i]).await?
        };
        let mine: Vec<DealRisk> = compute_with(session, &plan.playbooks[i], &w)
            .await?
            .into_iter()
            .filter(|r| plan.for_owner(&r.deal.owner_id) == i)
            .collect();
        if i == plan.current {
            weights = w;
        }
        rows.extend(mine.iter().cloned());
        groups.push((i, mine));
    }
    rows.sort_by(|a, b| (std::cmp::Reverse(a.score), &a.deal.id).cmp(&(std::cmp::Reverse(b.score), &b.deal.id)));
    let mut run = crate::outputs::RunWriter::begin(&session.lake, "deal_risk", session.as_of);
    run.note(format!("scored by {}", weights.scored_by));
    if !plan.note.is_empty() {
        run.note(plan.note.clone());
    }
    for (i, g) in &groups {
        if *i != plan.current {
            let p = &plan.playbooks[*i];
            run.note(format!(
                "{} deals scored with playbook {} {} (holdout or outside the rollout's scope)",
                g.len(),
                p.version,
                p.content_hash
            ));
        }
    }
    run.record_inputs(session);
    run.set_playbook_version(format!("playbook {} {}", pb.version, pb.content_hash));
    run.timing("compute", started.elapsed().as_millis() as u64);
    let blind = uninstrumented(session, pb);
    for (id, missing) in &blind {
        run.note(format!("flag {id} not instrumented: needs {}", missing.join("; ")));
    }
    let span = crate::layers::trace::start("the risk job's outputs written and committed");
    run.write_table("deal_risk", schema(), &[batch(&rows)?]).await?;
    run.write_table("deal_risk_flags", flag_schema(), &[flag_batch(&rows)?]).await?;
    let (reps, board) = views(&rows, as_of, pb);
    run.write_artifact("deal_risk_reps.md", reps.into_bytes()).await?;
    run.write_artifact("deal_risk_board.md", board.into_bytes()).await?;
    let manifest = run.commit().await?;
    if let Some(span) = span {
        span.done(&format!("{} deals", rows.len()));
    }
    let span = crate::layers::trace::start("the risk job's decision-log records");
    let mut records = Vec::new();
    for (i, g) in &groups {
        records.extend(self::records(g, &plan.playbooks[*i], as_of, &manifest.committed_at));
    }
    records.extend(outcomes(session, pb, as_of, &manifest.committed_at).await?);
    if let Some(span) = span {
        span.done(&format!("{} records", records.len()));
    }
    let span = crate::layers::trace::start("decision log append");
    let logged = crate::outputs::decision_log::append(session, records).await?;
    if let Some(span) = span {
        span.done(&format!("{logged} new records"));
    }
    let scored = rows.iter().filter(|r| r.score.is_some()).count();
    let flagged = rows.iter().filter(|r| r.score.is_some() && !r.flags.is_empty()).count();
    let mut text = format!(
        "deal risk as of {as_of} (playbook {}, scored by {}): {} open deals, {scored} scored, {flagged} flagged, {} not enough history\n",
        pb.version,
        weights.scored_by,
        rows.len(),
        rows.len() - scored
    );
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &rows {
        for f in &r.flags {
            *counts.entry(f.flag.as_str()).or_default() += 1;
        }
    }
    for (k, v) in &counts {
        text.push_str(&format!("  {k:<28} {v:>6} deals\n"));
    }
    for r in rows.iter().filter(|r| r.score.is_some()).take(5) {
        text.push_str(&format!("  risk {:>3}  {}: {}\n", r.score.unwrap_or_default(), r.deal.name, r.action));
    }
    for (id, missing) in &blind {
        text.push_str(&format!("  flag {id} not instrumented: needs {}\n", missing.join("; ")));
    }
    if !plan.note.is_empty() {
        text.push_str(&format!("  {}\n", plan.note));
    }
    text.push_str(&format!("{logged} new records in log/decision_trace\n"));
    Ok((rows, text, manifest, logged))
}
