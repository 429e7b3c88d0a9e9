//! Concept coverage: for each concept of the lake profile, whether this lake provides it, how many
//! rows each rule decided, the values it gave, and the most common words no rule maps.

use crate::error::Result;
use crate::lake::contract::quote;
use crate::lake::profile::{CONCEPTS, ConceptDef, concept_sql};
use crate::layers::LakeSession;
use crate::quality::sql::rows;
use crate::quality::{Finding, Severity, TableCheck};

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

fn declare(id: &str) -> String {
    format!("declare [[concept.{id}]] rules in the lake's lake.toml (see data/profiles/default.toml)")
}

/// The columns of `table` the profile's rules read and the lake carries (for the validate cache).
pub fn rule_columns(session: &LakeSession, table: &str) -> Vec<String> {
    let Some(landed) = session.landed(table) else { return Vec::new() };
    let mut out: Vec<String> = Vec::new();
    for def in CONCEPTS.iter().filter(|c| c.tables.contains(&table)) {
        for r in session.profile.rules(def.id) {
            let col = r.column.to_lowercase();
            if landed.field(&col).is_some() && !out.contains(&col) {
                out.push(col);
            }
        }
    }
    out
}

/// Concepts of a table that did not land: not available, said once per concept.
pub fn absent(table: &str) -> Vec<Finding> {
    CONCEPTS
        .iter()
        .filter(|c| c.tables.contains(&table))
        .map(|def| {
            let mut f = finding(def, table, Severity::Info, 0, 0);
            f.detail = format!("{} not available: {table} is not landed", def.meaning);
            f.fix = format!("land {table} to enable it");
            f
        })
        .collect()
}

/// One finding per concept of this table, over its cached known rows: an info row when the lake
/// provides it, a warning when no rule reads a column it carries or the rules match nothing.
pub async fn coverage(cx: &TableCheck<'_>, out: &mut Vec<Finding>) -> Result<()> {
    let (session, table, known, total) = (cx.session, cx.table.name.as_str(), &cx.known, cx.total);
    for def in CONCEPTS.iter().filter(|c| c.tables.contains(&table)) {
        let rules = session.profile.rules(def.id);
        let present: Vec<_> = rules.iter().filter(|r| cx.landed.field(&r.column).is_some()).collect();
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
        // One grouped scan: the concept's value and the rule that decided it, per row, and the
        // words of the first rule's column that no rule maps (what to add to the profile), of
        // which the five most common are kept. (Two scans, one for each, took 1 s more of the
        // checks of a million deals' 16M tasks.)
        let expr = concept_sql(&session.profile, def.id, |c| cx.landed.field(c).is_some());
        let decided = present
            .iter()
            .enumerate()
            .map(|(i, r)| format!("WHEN ({}) IS NOT NULL THEN {}", r.sql(&quote(&r.column.to_lowercase())), i + 1))
            .collect::<Vec<_>>()
            .join(" ");
        let first = present[0];
        let col = quote(&first.column.to_lowercase());
        let groups = rows(
            session,
            &format!(
                "SELECT COALESCE(v, ''), CAST(d AS VARCHAR), COALESCE(w, ''), CAST(n AS VARCHAR) FROM ( \
                   SELECT v, d, w, n, ROW_NUMBER() OVER (PARTITION BY w IS NULL ORDER BY n DESC, w) AS r FROM ( \
                     SELECT v, d, w, COUNT(*) AS n FROM ( \
                       SELECT v, d, CASE WHEN v IS NULL AND NULLIF(TRIM(raw), '') IS NOT NULL THEN raw END AS w FROM ( \
                         SELECT {expr} AS v, CASE {decided} ELSE 0 END AS d, CAST({col} AS VARCHAR) AS raw FROM {known} \
                       ) AS q \
                     ) AS q GROUP BY 1, 2, 3 \
                   ) AS g \
                 ) AS ranked WHERE w IS NULL OR r <= 5"
            ),
        )
        .await?;
        let mut values: std::collections::BTreeMap<String, i64> = Default::default();
        let mut per_rule = vec![0i64; present.len()];
        let mut unmapped: Vec<(i64, String)> = Vec::new();
        for g in &groups {
            let (v, d, w, n) = (&g[0], g[1].parse::<usize>().unwrap_or(0), &g[2], g[3].parse::<i64>().unwrap_or(0));
            if !w.is_empty() {
                unmapped.push((n, w.clone()));
                continue;
            }
            if !v.is_empty() {
                *values.entry(v.clone()).or_default() += n;
            }
            if d > 0 {
                per_rule[d - 1] += n;
            }
        }
        unmapped.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        let matched: i64 = values.values().sum();
        let mut by_count: Vec<(&String, &i64)> = values.iter().collect();
        by_count.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let unmapped: Vec<String> = unmapped.into_iter().map(|(n, w)| format!("{w} ({n})")).collect();
        let severity = if matched == 0 && total > 0 { Severity::Warning } else { Severity::Info };
        let mut f = finding(def, table, severity, matched, total);
        f.detail = format!(
            "{} of {total} rows have a value ({}); rules decided: {}",
            matched,
            if by_count.is_empty() {
                "none".to_string()
            } else {
                by_count.iter().map(|(v, n)| format!("{v} {n}")).collect::<Vec<_>>().join(", ")
            },
            present
                .iter()
                .zip(&per_rule)
                .map(|(r, n)| format!("{} ({:?}) {n}", r.column, r.matching).to_lowercase())
                .collect::<Vec<_>>()
                .join(", ")
        );
        f.examples = unmapped.into_iter().map(|w| format!("unmapped {}: {w}", first.column)).collect();
        f.fix = if severity == Severity::Warning {
            declare(def.id)
        } else {
            "map the unmapped words in lake.toml if they mean one of the concept's values".into()
        };
        out.push(f);
    }
    Ok(())
}

/// Stages declared in the profile for a lake without the stage catalog.
pub fn declared_stages(session: &LakeSession) -> Option<Finding> {
    let stages = &session.profile.stages;
    if stages.is_empty() || session.landed("opportunity_stage").is_some_and(|l| l.present()) {
        return None;
    }
    let n = stages.len() as i64;
    Some(Finding {
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
    })
}
