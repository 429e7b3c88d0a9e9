//! Outcome patterns (`gtm-loop patterns`, output.patterns): the conditions and outcomes declared
//! in jobs/patterns.toml, tested at the stage entries of the deal trajectories, stratified by
//! stage, by segment, with Benjamini-Hochberg across the run and a later holdout re-test.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use serde::Deserialize;

use super::stratified::{Signature, cells, deals_by_side, pooled};
use super::trajectory;
use crate::error::{Error, Result};
use crate::layers::LakeSession;
use crate::layers::columns::{string_rows, strings};
use crate::outputs::{Manifest, RunWriter, TableSink};
use crate::stats::{Estimate, Table2x2, benjamini_hochberg, normal_two_sided, ratio_of_odds_ratios};

const BUILTIN_JOB: &str = repo_file!("jobs/patterns.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatternsJob {
    pub settings: Settings,
    #[serde(rename = "outcome")]
    pub outcomes: Vec<OutcomeDef>,
    #[serde(rename = "condition")]
    pub conditions: Vec<ConditionDef>,
    #[serde(skip)]
    pub source: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub q: f64,
    pub min_side: i64,
    pub min_events: i64,
    pub small_cell: i64,
    pub holdout_days: i64,
    #[serde(default)]
    pub interactions: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutcomeDef {
    pub id: String,
    pub name: String,
    pub horizon_days: i64,
    pub event: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionDef {
    pub id: String,
    pub name: String,
    pub when: String,
    #[serde(default)]
    pub defined: Option<String>,
    #[serde(default)]
    pub stages: Vec<String>,
    #[serde(default)]
    pub needs: Vec<String>,
}

/// Reads jobs/patterns.toml (or the file given).
pub fn load(path: Option<&Path>) -> Result<PatternsJob> {
    let (source, mut job): (String, PatternsJob) =
        crate::error::read_declaration(path, "jobs/patterns.toml", BUILTIN_JOB)?;
    job.source = source.clone();
    let bad = |message: String| Error::Config { file: source.clone(), message };
    let ident = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    for id in job.conditions.iter().map(|c| &c.id).chain(job.outcomes.iter().map(|o| &o.id)) {
        if !ident(id) {
            return Err(bad(format!("id '{id}' must be letters, digits and _")));
        }
    }
    for col in &job.settings.interactions {
        if !ident(col) {
            return Err(bad(format!("interaction column '{col}' must be a column of output.deal_trajectory")));
        }
    }
    if !(job.settings.q > 0.0 && job.settings.q < 1.0) {
        return Err(bad("settings.q must be between 0 and 1".into()));
    }
    Ok(job)
}

/// One row of output.patterns.
#[derive(Debug, Clone, Default)]
pub struct PatternRow {
    pub condition: String,
    pub outcome: String,
    /// pooled | stage | segment
    pub scope: String,
    /// The stage name, or "column=value" for a segment, or "all stages".
    pub stratum: String,
    pub exposed_rows: i64,
    pub exposed_events: i64,
    pub unexposed_rows: i64,
    pub unexposed_events: i64,
    pub exposed_deals: i64,
    pub unexposed_deals: i64,
    pub exposed_rate: Option<f64>,
    pub unexposed_rate: Option<f64>,
    pub rate_difference: Option<f64>,
    pub risk_ratio: Option<Estimate>,
    pub odds_ratio: Option<Estimate>,
    pub method: String,
    pub naive_risk_ratio: Option<Estimate>,
    pub homogeneity_p: Option<f64>,
    /// Segment rows: the segment's odds ratio over the rest's.
    pub odds_ratio_ratio: Option<Estimate>,
    pub tested: bool,
    pub evidence: String,
    pub discovery_p: Option<f64>,
    pub q_value: Option<f64>,
    pub significant: bool,
    pub holdout_risk_ratio: Option<Estimate>,
    pub replication: String,
    pub finding: Option<String>,
}

/// What a run of the patterns job found.
pub struct PatternsRun {
    pub rows: Vec<PatternRow>,
    pub text: String,
    pub manifest: Manifest,
    pub tested: usize,
}

type Key = (String, String, String); // condition, outcome, segment value ("*" for all)

/// Per (condition, outcome, segment value, period): deal signatures.
#[derive(Default)]
struct Signatures {
    by: BTreeMap<(Key, String), Vec<Signature>>,
}

fn sql_text(s: &str) -> String {
    s.replace('\'', "''")
}

/// The one query that turns trajectory rows into deal signatures for every condition x outcome.
/// The stage-entry rows of the slice being counted.
const BASE_TABLE: &str = "mart._pattern_base";

fn signature_sql(job: &PatternsJob, conditions: &[&ConditionDef], segment: Option<&str>) -> String {
    // A segment key names its column ("size_band=SMB"), so two interaction columns never mix.
    let seg =
        segment.map(|c| format!("'{c}=' || COALESCE(CAST({c} AS VARCHAR), '(none)')")).unwrap_or_else(|| "'*'".into());
    let mut branches = Vec::new();
    for c in conditions {
        let stage_filter = if c.stages.is_empty() {
            String::new()
        } else {
            format!(
                " AND stage_name IN ({})",
                c.stages.iter().map(|s| format!("'{}'", sql_text(s))).collect::<Vec<_>>().join(", ")
            )
        };
        let defined = c.defined.as_deref().map(|d| format!(" AND COALESCE(({d}), false)")).unwrap_or_default();
        for o in &job.outcomes {
            let (h, hold) = (o.horizon_days, job.settings.holdout_days);
            branches.push(format!(
                "SELECT '{cid}' AS condition, '{oid}' AS outcome, {seg} AS seg, opportunity_id,
                   CASE WHEN known_before > {{{{as_of_end}}}} - INTERVAL '{h} days' - INTERVAL '{hold} days' THEN 'holdout' ELSE 'discovery' END AS period,
                   stage_order * 4 + CASE WHEN COALESCE(({when}), false) THEN 2 ELSE 0 END + CASE WHEN COALESCE(({event}), false) THEN 1 ELSE 0 END AS code
                 FROM base
                 WHERE known_before + INTERVAL '{h} days' <= {{{{as_of_end}}}}{defined}{stage_filter}",
                cid = c.id,
                oid = o.id,
                when = c.when,
                event = o.event,
            ));
        }
    }
    format!(
        "WITH base AS (SELECT * FROM {BASE_TABLE}),
         landmark_rows AS ({}),
         per_deal AS (
           SELECT condition, outcome, seg, opportunity_id,
             array_to_string(array_agg(code), ',') AS sig_all,
             array_to_string(array_agg(code) FILTER (WHERE period = 'discovery'), ',') AS sig_discovery,
             array_to_string(array_agg(code) FILTER (WHERE period = 'holdout'), ',') AS sig_holdout
           FROM landmark_rows GROUP BY condition, outcome, seg, opportunity_id
         )
         SELECT condition, outcome, seg, 'all' AS period, sig_all AS sig, COUNT(*) AS deals FROM per_deal GROUP BY condition, outcome, seg, sig_all
         UNION ALL
         SELECT condition, outcome, seg, 'discovery', sig_discovery, COUNT(*) FROM per_deal WHERE sig_discovery <> '' GROUP BY condition, outcome, seg, sig_discovery
         UNION ALL
         SELECT condition, outcome, seg, 'holdout', sig_holdout, COUNT(*) FROM per_deal WHERE sig_holdout <> '' GROUP BY condition, outcome, seg, sig_holdout",
        branches.join("\nUNION ALL\n")
    )
}

async fn collect_signatures(session: &LakeSession, sql: &str, into: &mut Signatures) -> Result<()> {
    let batches = session.collect_declared(sql, "jobs/patterns.toml (conditions and outcomes)").await?;
    for b in &batches {
        let n = b.num_rows();
        let text = string_rows(b, 5)?;
        let deals = b
            .column(5)
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(|| Error::Other("patterns: deal counts are not integers".into()))?;
        for (i, row) in text.iter().enumerate().take(n) {
            let [Some(c), Some(o), Some(seg), Some(period), sig] = row.as_slice() else { continue };
            let Some(sig) = sig.as_deref().filter(|s| !s.is_empty()) else { continue };
            // The codes come unordered (an ordered array_agg has no hash-grouped accumulator in
            // DataFusion 55: one boxed accumulator per deal and branch made the signatures slower
            // than the trajectory at a million deals), so one deal's rows may come in any order
            // and the same rows may be counted under two signatures. Every use of a signature is
            // a sum over its rows times its deals, so neither changes a number; the rows are
            // sorted here all the same.
            let mut codes: Vec<i64> = sig.split(',').filter_map(|v| v.trim().parse::<i64>().ok()).collect();
            codes.sort_unstable();
            let rows = codes
                .into_iter()
                .map(|code| (code.div_euclid(4), code.rem_euclid(4) >= 2, code.rem_euclid(2) == 1))
                .collect();
            into.by
                .entry(((c.clone(), o.clone(), seg.clone()), period.clone()))
                .or_default()
                .push(Signature { rows, deals: deals.value(i) as f64 });
        }
    }
    Ok(())
}

/// A 2x2 table judged on its own (one stratum): intervals and test, or why it was not tested.
fn judge_table(t: &Table2x2, s: &Settings) -> (Option<Estimate>, Option<Estimate>, Option<f64>, String, bool, String) {
    if let Some(why) = thin(t, s) {
        return (t.risk_ratio(), t.odds_ratio(), None, String::new(), false, why);
    }
    if t.min_cell() < s.small_cell as f64 {
        let f = t.fisher();
        return (
            t.risk_ratio(),
            f.map(|f| f.odds_ratio),
            f.map(|f| f.p),
            "Fisher exact (small cells)".into(),
            true,
            "tested".into(),
        );
    }
    let or = t.odds_ratio();
    let p = or.map(|e| {
        let se = (1.0 / t.a + 1.0 / t.b + 1.0 / t.c + 1.0 / t.d).sqrt();
        normal_two_sided(e.value.ln() / se)
    });
    (t.risk_ratio(), or, p, "Katz risk ratio, Woolf odds ratio".into(), true, "tested".into())
}

/// "not enough evidence: ..." when a side or an outcome class is too thin to test.
fn thin(t: &Table2x2, s: &Settings) -> Option<String> {
    let (events, non_events) = (t.a + t.c, t.b + t.d);
    if t.exposed() < s.min_side as f64 || t.unexposed() < s.min_side as f64 {
        return Some(format!(
            "not enough evidence: {} rows with the condition, {} without (needs {} each)",
            t.exposed(),
            t.unexposed(),
            s.min_side
        ));
    }
    if events < s.min_events as f64 || non_events < s.min_events as f64 {
        return Some(format!(
            "not enough evidence: {events} outcomes and {non_events} non-outcomes (needs {} each)",
            s.min_events
        ));
    }
    None
}

fn total(sigs: &[Signature]) -> Table2x2 {
    let mut t = Table2x2::default();
    for c in cells(sigs).values() {
        t.a += c.a;
        t.b += c.b;
        t.c += c.c;
        t.d += c.d;
    }
    t
}

fn fill_counts(row: &mut PatternRow, t: &Table2x2) {
    row.exposed_rows = t.exposed() as i64;
    row.exposed_events = t.a as i64;
    row.unexposed_rows = t.unexposed() as i64;
    row.unexposed_events = t.c as i64;
    row.exposed_rate = (t.exposed() > 0.0).then(|| t.a / t.exposed());
    row.unexposed_rate = (t.unexposed() > 0.0).then(|| t.c / t.unexposed());
    row.rate_difference = t.rate_difference();
}

/// Runs the patterns job: builds the trajectories, tests every condition x outcome, publishes
/// output.deal_trajectory and output.patterns.
pub async fn run(session: &LakeSession, job: &PatternsJob) -> Result<PatternsRun> {
    let started = Instant::now();
    let mut run = RunWriter::begin(&session.lake, "patterns", session.as_of);
    // The trajectory is published as it is built, slice by slice, and only its stage-entry rows
    // (all the signatures read) are kept, by slice: at a million deals the whole trajectory is
    // tens of millions of rows, the stage entries a few per deal.
    let mut sink: Option<TableSink> = None;
    let mut entries: Vec<Vec<RecordBatch>> = Vec::new();
    let mut rows = 0usize;
    let (schema, weeks) = trajectory::build_slices(session, |schema, batches| {
        let sink = match &mut sink {
            Some(sink) => sink,
            None => sink.insert(run.table_sink("deal_trajectory", schema.clone())?),
        };
        let mut kept = Vec::new();
        for b in &batches {
            sink.write(b)?;
            rows += b.num_rows();
            let e = stage_entries(b)?;
            if e.num_rows() > 0 {
                kept.push(e);
            }
        }
        entries.push(kept);
        Ok(())
    })
    .await?;
    let sink = match sink {
        Some(sink) => sink,
        None => run.table_sink("deal_trajectory", schema.clone())?,
    };
    run.finish_table(sink).await?;
    let built_ms = started.elapsed().as_millis() as u64;
    let traj = Built { schema, entries, rows, weeks };
    run_on(session, job, run, &traj, built_ms).await
}

/// What `run` keeps of the trajectory it published: the stage-entry rows by slice, and counts.
struct Built {
    schema: datafusion::arrow::datatypes::SchemaRef,
    /// The rows with `snapshot = 'stage_entry'` and a stage order, one list per slice (a deal's
    /// rows are all in one slice, so signature counts add up across slices).
    entries: Vec<Vec<RecordBatch>>,
    rows: usize,
    weeks: usize,
}

/// Stage-entry rows per signature query. A trajectory slice (2,000 deals) has about 8,000 and
/// each query is a union of conditions x outcomes branches planned anew, so at a million deals one
/// query per slice is 500 plans of it. Slices are merged up to this many rows (about 50,000 deals,
/// a few GiB of working memory at 48 branches); `GTM_LOOP_SIGNATURE_ROWS` overrides it (the tests
/// check that the grouping changes no number).
const SIGNATURE_ROWS: usize = 200_000;

fn signature_rows() -> usize {
    std::env::var("GTM_LOOP_SIGNATURE_ROWS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|v| *v > 0)
        .unwrap_or(SIGNATURE_ROWS)
}

/// The stage-entry rows of consecutive slices merged into groups of at least `per` rows (the last
/// may have fewer; at least one group, so the query always runs).
fn signature_groups(entries: &[Vec<RecordBatch>], per: usize) -> Vec<Vec<RecordBatch>> {
    let mut groups = Vec::new();
    let (mut group, mut rows) = (Vec::new(), 0usize);
    for slice in entries {
        group.extend(slice.iter().cloned());
        rows += slice.iter().map(|b| b.num_rows()).sum::<usize>();
        if rows >= per {
            groups.push(std::mem::take(&mut group));
            rows = 0;
        }
    }
    if !group.is_empty() || groups.is_empty() {
        groups.push(group);
    }
    groups
}

/// The stage-entry rows of a trajectory batch that have a stage order (what the signature query
/// reads; `snapshot` and `stage_order` are read whatever their Arrow types).
fn stage_entries(b: &RecordBatch) -> Result<RecordBatch> {
    use datafusion::arrow::array::Array;
    use datafusion::arrow::compute::{cast, filter_record_batch};
    let column = |name: &str| {
        b.column_by_name(name)
            .cloned()
            .ok_or_else(|| Error::Other(format!("{}: no column {name}", trajectory::TRAJECTORY_FILE)))
    };
    let snapshot = cast(&column("snapshot")?, &DataType::Utf8)?;
    let snapshot = snapshot
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| Error::Other("deal trajectory: snapshot is not text".into()))?;
    let order = column("stage_order")?;
    let keep: BooleanArray = (0..b.num_rows())
        .map(|i| Some(snapshot.is_valid(i) && snapshot.value(i) == "stage_entry" && order.is_valid(i)))
        .collect();
    Ok(filter_record_batch(b, &keep)?)
}

async fn run_on(
    session: &LakeSession,
    job: &PatternsJob,
    mut run: RunWriter,
    traj: &Built,
    built_ms: u64,
) -> Result<PatternsRun> {
    let started = Instant::now();
    let s = &job.settings;
    let mut notes = Vec::new();
    let mut usable: Vec<&ConditionDef> = Vec::new();
    let mut not_instrumented: Vec<(String, String)> = Vec::new();
    for c in &job.conditions {
        let missing = session.missing(&c.needs);
        if missing.is_empty() {
            usable.push(c);
        } else {
            not_instrumented.push((c.id.clone(), missing.join(", ")));
            notes.push(format!("condition {}: not instrumented: needs {}", c.id, missing.join(", ")));
        }
    }
    let stage_names = stage_names(session, traj).await?;
    let mut sigs = Signatures::default();
    if !usable.is_empty() {
        // Group by group of whole trajectory slices: a deal's rows are all in one slice, and
        // signature counts add up across groups. Each group's stage-entry rows are registered as
        // BASE_TABLE: the signature query reads them once per condition and outcome (DataFusion
        // inlines the CTE), which over the whole trajectory was 48 scans of it per slice.
        let groups = signature_groups(&traj.entries, signature_rows());
        let progress = crate::progress::bar(groups.len() as u64, "pattern signatures", "groups");
        for rows in groups {
            session.register_rows(BASE_TABLE, traj.schema.clone(), rows).await?;
            collect_signatures(session, &session.fill(&signature_sql(job, &usable, None)), &mut sigs).await?;
            for col in &s.interactions {
                collect_signatures(session, &session.fill(&signature_sql(job, &usable, Some(col))), &mut sigs).await?;
            }
            progress.inc(1);
        }
        let _ = session.ctx.deregister_table(BASE_TABLE)?;
        progress.finish_and_clear();
    }
    let get = |c: &str, o: &str, seg: &str, period: &str| -> &[Signature] {
        sigs.by
            .get(&((c.to_string(), o.to_string(), seg.to_string()), period.to_string()))
            .map(|v| v.as_slice())
            .unwrap_or(&[])
    };
    let mut rows: Vec<PatternRow> = Vec::new();
    // (row index, discovery p) of every test in the run's family.
    let mut family: Vec<(usize, f64)> = Vec::new();
    for c in &usable {
        for o in &job.outcomes {
            let all = get(&c.id, &o.id, "*", "all");
            let disc = get(&c.id, &o.id, "*", "discovery");
            let hold = get(&c.id, &o.id, "*", "holdout");
            // Pooled over stages.
            let mut row = PatternRow {
                condition: c.id.clone(),
                outcome: o.id.clone(),
                scope: "pooled".into(),
                stratum: "all stages".into(),
                method: "Mantel-Haenszel over stages, cluster-robust by deal".into(),
                ..Default::default()
            };
            let t_all = total(all);
            fill_counts(&mut row, &t_all);
            let (ed, ud) = deals_by_side(all);
            row.exposed_deals = ed as i64;
            row.unexposed_deals = ud as i64;
            let p_all = pooled(all, false);
            row.risk_ratio = p_all.and_then(|p| p.risk_ratio);
            row.odds_ratio = p_all.map(|p| p.odds_ratio);
            row.homogeneity_p = p_all.and_then(|p| p.homogeneity_p);
            row.naive_risk_ratio = pooled(all, true).and_then(|p| p.risk_ratio);
            match thin(&total(disc), s) {
                Some(why) => row.evidence = format!("{why} in the discovery period"),
                None => match pooled(disc, false) {
                    Some(p) => {
                        row.tested = true;
                        row.evidence = "tested".into();
                        row.discovery_p = Some(p.p);
                    }
                    None => row.evidence = "not enough evidence: no stage has both sides with an outcome".into(),
                },
            }
            row.holdout_risk_ratio = pooled(hold, false).and_then(|p| p.risk_ratio);
            if thin(&total(hold), s).is_some() {
                row.holdout_risk_ratio = None;
            }
            if row.tested {
                family.push((rows.len(), row.discovery_p.unwrap_or(1.0)));
            }
            rows.push(row);
            // Within each stage.
            let by_stage_all = cells(all);
            let by_stage_disc = cells(disc);
            let by_stage_hold = cells(hold);
            for (k, t) in &by_stage_all {
                let name = stage_names.get(k).cloned().unwrap_or_else(|| format!("stage {k}"));
                let mut row = PatternRow {
                    condition: c.id.clone(),
                    outcome: o.id.clone(),
                    scope: "stage".into(),
                    stratum: name,
                    ..Default::default()
                };
                fill_counts(&mut row, t);
                row.exposed_deals = row.exposed_rows;
                row.unexposed_deals = row.unexposed_rows;
                let (rr, or, _, method, _, _) = judge_table(t, s);
                row.risk_ratio = rr;
                row.odds_ratio = or;
                row.method = method;
                let d = by_stage_disc.get(k).copied().unwrap_or_default();
                let (_, _, p, method_d, tested, why) = judge_table(&d, s);
                if row.method.is_empty() {
                    row.method = method_d;
                }
                row.tested = tested && p.is_some();
                row.discovery_p = p;
                row.evidence = if tested { "tested".into() } else { format!("{why} in the discovery period") };
                let h = by_stage_hold.get(k).copied().unwrap_or_default();
                row.holdout_risk_ratio = if thin(&h, s).is_none() { h.risk_ratio() } else { None };
                if row.tested {
                    family.push((rows.len(), row.discovery_p.unwrap_or(1.0)));
                }
                rows.push(row);
            }
            // By segment: the segment's stratified odds ratio over the rest's.
            for col in &s.interactions {
                let prefix = format!("{col}=");
                let of_col = |seg: &str| seg.starts_with(&prefix);
                let mut values: Vec<String> = sigs
                    .by
                    .keys()
                    .filter(|((cc, oo, seg), period)| cc == &c.id && oo == &o.id && of_col(seg) && period == "all")
                    .map(|((_, _, seg), _)| seg.clone())
                    .collect();
                values.dedup();
                for v in values {
                    let seg_key = |period: &str| get(&c.id, &o.id, &v, period).to_vec();
                    let rest = |period: &str| -> Vec<Signature> {
                        sigs.by
                            .iter()
                            .filter(|(((cc, oo, seg), pp), _)| {
                                cc == &c.id && oo == &o.id && of_col(seg) && seg != &v && pp == period
                            })
                            .flat_map(|(_, s)| s.iter().cloned())
                            .collect()
                    };
                    let (seg_all, rest_all) = (seg_key("all"), rest("all"));
                    let mut row = PatternRow {
                        condition: c.id.clone(),
                        outcome: o.id.clone(),
                        scope: "segment".into(),
                        stratum: v.clone(),
                        method: "ratio of stage-stratified odds ratios, segment over the rest".into(),
                        ..Default::default()
                    };
                    fill_counts(&mut row, &total(&seg_all));
                    let (ed, ud) = deals_by_side(&seg_all);
                    row.exposed_deals = ed as i64;
                    row.unexposed_deals = ud as i64;
                    let ps = pooled(&seg_all, false);
                    row.risk_ratio = ps.and_then(|p| p.risk_ratio);
                    row.odds_ratio = ps.map(|p| p.odds_ratio);
                    if let (Some(a), Some(b)) = (ps, pooled(&rest_all, false)) {
                        row.odds_ratio_ratio =
                            Some(ratio_of_odds_ratios(a.log_or, a.var_log_or, b.log_or, b.var_log_or).0);
                    }
                    let (seg_d, rest_d) = (seg_key("discovery"), rest("discovery"));
                    match (thin(&total(&seg_d), s), thin(&total(&rest_d), s)) {
                        (None, None) => {
                            if let (Some(a), Some(b)) = (pooled(&seg_d, false), pooled(&rest_d, false)) {
                                let (_, p) = ratio_of_odds_ratios(a.log_or, a.var_log_or, b.log_or, b.var_log_or);
                                row.tested = true;
                                row.discovery_p = Some(p);
                                row.evidence = "tested".into();
                            } else {
                                row.evidence = "not enough evidence: an odds ratio is 0 or infinite".into();
                            }
                        }
                        (Some(why), _) => row.evidence = format!("{why} in the segment (discovery period)"),
                        (_, Some(why)) => row.evidence = format!("{why} in the rest (discovery period)"),
                    }
                    let (seg_h, rest_h) = (seg_key("holdout"), rest("holdout"));
                    if thin(&total(&seg_h), s).is_none()
                        && thin(&total(&rest_h), s).is_none()
                        && let (Some(a), Some(b)) = (pooled(&seg_h, false), pooled(&rest_h, false))
                    {
                        row.holdout_risk_ratio =
                            Some(ratio_of_odds_ratios(a.log_or, a.var_log_or, b.log_or, b.var_log_or).0);
                    }
                    if row.tested {
                        family.push((rows.len(), row.discovery_p.unwrap_or(1.0)));
                    }
                    rows.push(row);
                }
            }
        }
    }
    // Benjamini-Hochberg across every test of the run.
    let q = benjamini_hochberg(&family.iter().map(|(_, p)| *p).collect::<Vec<_>>());
    for ((i, _), qv) in family.iter().zip(q) {
        rows[*i].q_value = Some(qv);
        rows[*i].significant = qv <= s.q;
    }
    let names: BTreeMap<&str, &str> = job.conditions.iter().map(|c| (c.id.as_str(), c.name.as_str())).collect();
    let verbs: BTreeMap<&str, &str> = job.outcomes.iter().map(|o| (o.id.as_str(), o.name.as_str())).collect();
    let holdout_label = format!("the last {} days", s.holdout_days);
    let strongest = strongest_stages(&rows);
    for row in rows.iter_mut() {
        row.replication = replication(row, &holdout_label);
        if row.significant {
            let strong = strongest
                .get(&(row.condition.clone(), row.outcome.clone()))
                .map(|(stage, rr)| format!("strongest at {stage} ({})", ratio_words(*rr)))
                .unwrap_or_default();
            row.finding = Some(sentence(row, names[row.condition.as_str()], verbs[row.outcome.as_str()], &strong));
        }
    }
    let tested = family.len();
    let text = summary(job, &rows, tested, &not_instrumented, traj);
    run.record_inputs(session);
    run.set_playbook_version(format!("patterns: {}", job.source));
    run.timing("trajectory", built_ms);
    run.note(format!(
        "{tested} tests in the Benjamini-Hochberg family at q = {}; {} significant",
        s.q,
        rows.iter().filter(|r| r.significant).count()
    ));
    for n in notes {
        run.note(n);
    }
    let batch = to_batch(&rows)?;
    run.write_table("patterns", batch.schema(), &[batch]).await?;
    run.timing("patterns", started.elapsed().as_millis() as u64);
    let manifest = run.commit().await?;
    Ok(PatternsRun { rows, text, manifest, tested })
}

/// For each condition x outcome: the stage whose own ratio is furthest from 1 among tested ones.
fn strongest_stages(rows: &[PatternRow]) -> BTreeMap<(String, String), (String, f64)> {
    let mut out: BTreeMap<(String, String), (String, f64)> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.scope == "stage" && r.tested) {
        let Some(rr) = r.risk_ratio.map(|e| e.value) else { continue };
        let e = out.entry((r.condition.clone(), r.outcome.clone())).or_insert((r.stratum.clone(), rr));
        if rr.ln().abs() > e.1.ln().abs() {
            *e = (r.stratum.clone(), rr);
        }
    }
    out
}

fn ratio_words(rr: f64) -> String {
    if rr >= 1.0 { format!("{rr:.1}x more often") } else { format!("{rr:.2}x as often") }
}

fn replication(row: &PatternRow, label: &str) -> String {
    if !row.significant {
        return "not tested (not a finding)".into();
    }
    let Some(h) = row.holdout_risk_ratio else {
        return format!("not enough evidence in {label} to re-test");
    };
    let dir = row.risk_ratio.or(row.odds_ratio_ratio).map(|e| e.value >= 1.0).unwrap_or(true);
    let held = if dir { h.low > 1.0 } else { h.high < 1.0 };
    if held {
        format!("held on {label} ({:.2}, 95% CI {:.2}-{:.2})", h.value, h.low, h.high)
    } else {
        format!("did not hold on {label} ({:.2}, 95% CI {:.2}-{:.2})", h.value, h.low, h.high)
    }
}

/// The plain sentence of a finding.
fn sentence(row: &PatternRow, name: &str, verb: &str, strongest: &str) -> String {
    let n = |v: i64| {
        let s = v.to_string();
        let mut out = String::new();
        for (i, ch) in s.chars().enumerate() {
            if i > 0 && (s.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(ch);
        }
        out
    };
    match row.scope.as_str() {
        "segment" => {
            let Some(ror) = row.odds_ratio_ratio else {
                return format!(
                    "{name}: {verb} in {}: significant in the discovery period, no estimate over all rows",
                    row.stratum
                );
            };
            format!(
                "{name}: the odds to {verb} are {:.2}x those elsewhere in {} (ratio of odds ratios, 95% CI {:.2}-{:.2}; {} vs {} deals in the segment; {})",
                ror.value,
                row.stratum,
                ror.low,
                ror.high,
                n(row.exposed_deals),
                n(row.unexposed_deals),
                row.replication
            )
        }
        _ => {
            // The risk ratio when both sides have outcomes; else the (exact) odds ratio, said so.
            let (e, words) = match (row.risk_ratio, row.odds_ratio) {
                (Some(rr), _) => (rr, ratio_words(rr.value)),
                (None, Some(or)) => (or, format!("with {:.2}x the odds", or.value)),
                (None, None) => {
                    return format!("{name}: {verb}: significant in the discovery period, no estimate over all rows");
                }
            };
            let at = if row.scope == "stage" { format!(" from {}", row.stratum) } else { String::new() };
            let stages = if row.scope == "pooled" {
                match row.homogeneity_p {
                    Some(h) if h >= 0.05 => format!("holds within every stage (Breslow-Day p = {h:.2})"),
                    Some(h) => format!("differs by stage (Breslow-Day p = {h:.3}); {strongest}"),
                    None => "one stage".into(),
                }
            } else {
                "one stage".into()
            };
            let naive = match row.naive_risk_ratio {
                Some(nv) if row.scope == "pooled" && ((nv.value.ln() - e.value.ln()).abs() > 0.2) => {
                    format!("; the naive comparison says {:.2}", nv.value)
                }
                _ => String::new(),
            };
            format!(
                "{name} {verb} {words}{at} (95% CI {:.2}-{:.2}; {} vs {} deals; {stages}{naive}; {})",
                e.low,
                e.high,
                n(row.exposed_deals),
                n(row.unexposed_deals),
                row.replication
            )
        }
    }
}

fn summary(
    job: &PatternsJob,
    rows: &[PatternRow],
    tested: usize,
    not_instrumented: &[(String, String)],
    traj: &Built,
) -> String {
    let mut t = String::new();
    let _ =
        writeln!(t, "deal trajectories: {} rows ({} weekly as-of dates and every stage entry)", traj.rows, traj.weeks);
    let significant: Vec<&PatternRow> = rows.iter().filter(|r| r.significant).collect();
    let _ = writeln!(
        t,
        "outcome patterns: {tested} tests (Benjamini-Hochberg at q = {}), {} significant",
        job.settings.q,
        significant.len()
    );
    for scope in ["pooled", "stage", "segment"] {
        for r in significant.iter().filter(|r| r.scope == scope) {
            if let Some(f) = &r.finding {
                let _ = writeln!(t, "  - {f}");
            }
        }
    }
    let explained: Vec<&PatternRow> = rows
        .iter()
        .filter(|r| r.scope == "pooled" && r.tested && !r.significant)
        .filter(|r| match (r.naive_risk_ratio, r.risk_ratio) {
            (Some(nv), Some(st)) => (nv.low > 1.0 || nv.high < 1.0) && st.low <= 1.0 && st.high >= 1.0,
            _ => false,
        })
        .collect();
    for r in explained {
        let nv = r.naive_risk_ratio.expect("filtered");
        let st = r.risk_ratio.expect("filtered");
        let _ = writeln!(
            t,
            "  explained by stage: {} x {}: naive {:.2} (95% CI {:.2}-{:.2}), within stage {:.2} ({:.2}-{:.2})",
            r.condition, r.outcome, nv.value, nv.low, nv.high, st.value, st.low, st.high
        );
    }
    let thin = rows.iter().filter(|r| r.scope == "pooled" && !r.tested).count();
    if thin > 0 {
        let _ = writeln!(t, "  not enough evidence: {thin} condition x outcome pairs (see output.patterns.evidence)");
    }
    for (c, why) in not_instrumented {
        let _ = writeln!(t, "  not instrumented: {c} needs {why}");
    }
    t
}

/// The name of each stage order, from the stage-entry rows (the strata the tables are cut by).
async fn stage_names(session: &LakeSession, traj: &Built) -> Result<BTreeMap<i64, String>> {
    let all: Vec<RecordBatch> = traj.entries.iter().flatten().cloned().collect();
    session.register_rows(BASE_TABLE, traj.schema.clone(), all).await?;
    let batches = session
        .collect_declared(
            &format!("SELECT DISTINCT CAST(stage_order AS VARCHAR), stage_name FROM {BASE_TABLE}"),
            trajectory::TRAJECTORY_FILE,
        )
        .await?;
    let _ = session.ctx.deregister_table(BASE_TABLE)?;
    let mut out = BTreeMap::new();
    for b in &batches {
        let (k, v) = (strings(b.column(0))?, strings(b.column(1))?);
        for (k, v) in k.into_iter().zip(v) {
            if let (Some(k), Some(v)) = (k.and_then(|k| k.parse::<i64>().ok()), v) {
                out.insert(k, v);
            }
        }
    }
    Ok(out)
}

fn to_batch(rows: &[PatternRow]) -> Result<RecordBatch> {
    let s = |f: &dyn Fn(&PatternRow) -> Option<String>| -> ArrayRef {
        Arc::new(StringArray::from(rows.iter().map(f).collect::<Vec<_>>()))
    };
    let i = |f: &dyn Fn(&PatternRow) -> i64| -> ArrayRef {
        Arc::new(Int64Array::from(rows.iter().map(f).collect::<Vec<_>>()))
    };
    let x = |f: &dyn Fn(&PatternRow) -> Option<f64>| -> ArrayRef {
        Arc::new(Float64Array::from(rows.iter().map(f).collect::<Vec<_>>()))
    };
    let b = |f: &dyn Fn(&PatternRow) -> bool| -> ArrayRef {
        Arc::new(BooleanArray::from(rows.iter().map(f).collect::<Vec<_>>()))
    };
    let cols: Vec<(&str, ArrayRef)> = vec![
        ("condition", s(&|r| Some(r.condition.clone()))),
        ("outcome", s(&|r| Some(r.outcome.clone()))),
        ("scope", s(&|r| Some(r.scope.clone()))),
        ("stratum", s(&|r| Some(r.stratum.clone()))),
        ("exposed_rows", i(&|r| r.exposed_rows)),
        ("exposed_events", i(&|r| r.exposed_events)),
        ("unexposed_rows", i(&|r| r.unexposed_rows)),
        ("unexposed_events", i(&|r| r.unexposed_events)),
        ("exposed_deals", i(&|r| r.exposed_deals)),
        ("unexposed_deals", i(&|r| r.unexposed_deals)),
        ("exposed_rate", x(&|r| r.exposed_rate)),
        ("unexposed_rate", x(&|r| r.unexposed_rate)),
        ("rate_difference", x(&|r| r.rate_difference)),
        ("risk_ratio", x(&|r| r.risk_ratio.map(|e| e.value))),
        ("risk_ratio_low", x(&|r| r.risk_ratio.map(|e| e.low))),
        ("risk_ratio_high", x(&|r| r.risk_ratio.map(|e| e.high))),
        ("odds_ratio", x(&|r| r.odds_ratio.map(|e| e.value))),
        ("odds_ratio_low", x(&|r| r.odds_ratio.map(|e| e.low))),
        ("odds_ratio_high", x(&|r| r.odds_ratio.map(|e| e.high))),
        ("method", s(&|r| Some(r.method.clone()))),
        ("naive_risk_ratio", x(&|r| r.naive_risk_ratio.map(|e| e.value))),
        ("naive_risk_ratio_low", x(&|r| r.naive_risk_ratio.map(|e| e.low))),
        ("naive_risk_ratio_high", x(&|r| r.naive_risk_ratio.map(|e| e.high))),
        ("breslow_day_p", x(&|r| r.homogeneity_p)),
        ("odds_ratio_ratio", x(&|r| r.odds_ratio_ratio.map(|e| e.value))),
        ("odds_ratio_ratio_low", x(&|r| r.odds_ratio_ratio.map(|e| e.low))),
        ("odds_ratio_ratio_high", x(&|r| r.odds_ratio_ratio.map(|e| e.high))),
        ("tested", b(&|r| r.tested)),
        ("evidence", s(&|r| Some(r.evidence.clone()))),
        ("discovery_p", x(&|r| r.discovery_p)),
        ("q_value", x(&|r| r.q_value)),
        ("significant", b(&|r| r.significant)),
        ("holdout_ratio", x(&|r| r.holdout_risk_ratio.map(|e| e.value))),
        ("holdout_ratio_low", x(&|r| r.holdout_risk_ratio.map(|e| e.low))),
        ("holdout_ratio_high", x(&|r| r.holdout_risk_ratio.map(|e| e.high))),
        ("replication", s(&|r| Some(r.replication.clone()))),
        ("finding", s(&|r| r.finding.clone())),
    ];
    let schema = Arc::new(Schema::new(
        cols.iter()
            .map(|(n, a)| {
                Field::new(
                    *n,
                    a.data_type().clone(),
                    a.null_count() > 0 || matches!(a.data_type(), DataType::Float64 | DataType::Utf8),
                )
            })
            .collect::<Vec<_>>(),
    ));
    Ok(RecordBatch::try_new(schema, cols.into_iter().map(|(_, a)| a).collect())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(rows: &[usize]) -> Vec<RecordBatch> {
        rows.iter()
            .map(|n| {
                let ids: ArrayRef = Arc::new(Int64Array::from((0..*n as i64).collect::<Vec<_>>()));
                RecordBatch::try_from_iter([("id", ids)]).unwrap()
            })
            .collect()
    }

    #[test]
    fn signature_groups_keep_slices_whole_and_every_row() {
        // Slices of 3, 4 (in two batches), 0 and 5 rows, grouped at 6 rows: [3+4], [0+5].
        let entries = vec![slice(&[3]), slice(&[1, 3]), slice(&[]), slice(&[5])];
        let sizes = |per: usize| -> Vec<Vec<usize>> {
            signature_groups(&entries, per).iter().map(|g| g.iter().map(|b| b.num_rows()).collect()).collect()
        };
        assert_eq!(sizes(6), vec![vec![3, 1, 3], vec![5]]);
        assert_eq!(sizes(1), vec![vec![3], vec![1, 3], vec![5]], "an empty slice joins the next group");
        assert_eq!(sizes(SIGNATURE_ROWS), vec![vec![3, 1, 3, 5]]);
        assert_eq!(signature_groups(&[], 6).len(), 1, "no slices still gives one (empty) group");
    }
}
