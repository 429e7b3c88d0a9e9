//! Concept coverage: for each concept of the lake profile, whether this lake provides it, how many
//! rows each rule matched, the values it gave, and the most common words no rule maps.

use crate::error::Result;
use crate::lake::contract::quote;
use crate::lake::profile::{CONCEPTS, ConceptDef, concept_sql};
use crate::layers::LakeSession;
use crate::quality::sql::{first_col, scalar};
use crate::quality::{Finding, Severity};

fn finding(def: &ConceptDef, table: &str, severity: Severity, count: i64, total: i64) -> Finding {
    Finding {
        table: table.to_string(),
        column: None,
        check: format!("concept:{}", def.id),
        severity,
        count,
        total_rows: total,
        examples: Vec::new(),
        detail: String::new(),
        fix: String::new(),
    }
}

/// One finding per concept and table: an info row when provided, a warning when not.
pub async fn coverage(session: &LakeSession) -> Result<Vec<Finding>> {
    let mut out = Vec::new();
    let declare =
        |id: &str| format!("declare [[concept.{id}]] rules in the lake's lake.toml (see data/profiles/default.toml)");
    if !session.profile.stages.is_empty() && !session.landed("opportunity_stage").is_some_and(|l| l.present()) {
        let stages = &session.profile.stages;
        let n = stages.len() as i64;
        out.push(Finding {
            table: "opportunity_stage".into(),
            column: None,
            check: "stages_declared".into(),
            severity: Severity::Info,
            count: n,
            total_rows: n,
            examples: Vec::new(),
            detail: format!(
                "not landed: the lake profile declares the stages ({})",
                stages.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
            ),
            fix: "land opportunity_stage to read the CRM's own catalog instead".into(),
        });
    }
    for def in CONCEPTS {
        let rules = session.profile.rules(def.id);
        for table in def.tables {
            let Some(landed) = session.landed(table).filter(|l| l.readable()) else {
                let mut f = finding(def, table, Severity::Info, 0, 0);
                f.detail = format!("{} not available: {table} is not landed", def.meaning);
                f.fix = format!("land {table} to enable it");
                out.push(f);
                continue;
            };
            let known = format!("known.{}", quote(table));
            let total = scalar(session, &format!("SELECT COUNT(*) FROM {known}")).await?;
            let present: Vec<_> = rules.iter().filter(|r| landed.field(&r.column).is_some()).collect();
            if present.is_empty() {
                let mut f = finding(def, table, Severity::Warning, 0, total);
                let columns: Vec<&str> = rules.iter().map(|r| r.column.as_str()).collect();
                f.detail = format!(
                    "the lake does not provide {}: no rule of the profile ({}) reads a column {table} carries (rules read {})",
                    def.meaning,
                    session.profile.name,
                    if columns.is_empty() { "nothing".to_string() } else { columns.join(", ") }
                );
                f.fix = declare(def.id);
                out.push(f);
                continue;
            }
            let expr = concept_sql(&session.profile, def.id, |c| landed.field(c).is_some());
            let values = first_col(
                session,
                &format!(
                    "SELECT v || ' ' || CAST(n AS VARCHAR) FROM (SELECT {expr} AS v, COUNT(*) AS n FROM {known} GROUP BY 1) AS g \
                     WHERE v IS NOT NULL ORDER BY n DESC, v"
                ),
            )
            .await?;
            let matched = scalar(session, &format!("SELECT COUNT(*) FROM {known} WHERE ({expr}) IS NOT NULL")).await?;
            // Each rule's share: the rows it decides (no earlier rule matched them).
            let mut per_rule = Vec::new();
            let mut earlier: Vec<String> = Vec::new();
            for r in &present {
                let this = r.sql(&quote(&r.column.to_lowercase()));
                let cond = std::iter::once(format!("({this}) IS NOT NULL"))
                    .chain(earlier.iter().map(|e| format!("({e}) IS NULL")))
                    .collect::<Vec<_>>()
                    .join(" AND ");
                let n = scalar(session, &format!("SELECT COUNT(*) FROM {known} WHERE {cond}")).await?;
                per_rule.push(format!("{} ({:?}) {n}", r.column, r.matching).to_lowercase());
                earlier.push(this);
            }
            // The words no rule maps, most common first: what to add to the profile.
            let first = &present[0];
            let unmapped = first_col(
                session,
                &format!(
                    "SELECT w || ' (' || CAST(n AS VARCHAR) || ')' FROM (SELECT CAST({col} AS VARCHAR) AS w, COUNT(*) AS n FROM {known} \
                     WHERE ({expr}) IS NULL AND NULLIF(TRIM(CAST({col} AS VARCHAR)), '') IS NOT NULL GROUP BY 1) AS g \
                     ORDER BY n DESC, w LIMIT 5",
                    col = quote(&first.column.to_lowercase())
                ),
            )
            .await?;
            let severity = if matched == 0 && total > 0 { Severity::Warning } else { Severity::Info };
            let mut f = finding(def, table, severity, matched, total);
            f.detail = format!(
                "{}: {} of {total} rows have a value ({}); rules decided: {}",
                def.id,
                matched,
                if values.is_empty() { "none".to_string() } else { values.join(", ") },
                per_rule.join(", ")
            );
            f.examples = unmapped.into_iter().map(|w| format!("unmapped {}: {w}", first.column)).collect();
            f.fix = if severity == Severity::Warning {
                declare(def.id)
            } else {
                "map the unmapped words in lake.toml if they mean one of the concept's values".into()
            };
            out.push(f);
        }
    }
    Ok(out)
}
