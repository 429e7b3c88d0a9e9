//! The KPI hierarchy: the declared catalog (data/kpi_catalog.toml) computed at company, region,
//! manager and seller level per week, month and quarter, then read with the severity rules of
//! jobs/kpis.toml into a status per cell and an intervention per non-green primary cell.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use chrono::{Datelike, Days, Months, NaiveDate};
use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Float64Array, Int64Array, RecordBatch, StringArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::datasource::MemTable;
use serde::Deserialize;

use crate::catalog::LakeSession;
use crate::columns::{dates, floats, strings};
use crate::error::{Error, Result};
use crate::funnel::{Calendar, Grain, wilson};
use crate::org::{Membership, NO_REGION};

const BUILTIN_CATALOG: &str = include_str!("../data/kpi_catalog.toml");
const BUILTIN_JOB: &str = include_str!("../jobs/kpis.toml");
/// Deal snapshots per period of the grain being computed (they read `mart.period`).
const SNAPSHOT_SQL: [(&str, &str); 2] = [
    ("deal_at_period_start", include_str!("../sql/marts/deal_at_period_start.sql")),
    ("deal_at_period_end", include_str!("../sql/marts/deal_at_period_end.sql")),
];
pub const STAGES: [&str; 4] = ["Inputs", "Capability", "Execution", "Outcomes"];
pub const LEVELS: [&str; 4] = ["company", "region", "manager", "seller"];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    pub version: String,
    #[serde(rename = "kpi")]
    pub kpis: Vec<Kpi>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Ratio,
    Total,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Higher,
    Lower,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Target {
    Fixed { value: f64 },
    Quota { value: f64 },
    Historical { lookback: usize, tolerance: f64 },
    Band { low: f64, high: f64 },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Card {
    pub question: String,
    pub success: String,
    pub inspection: Vec<String>,
    pub action: String,
    pub cadence: String,
    pub owner_level: String,
    pub measurability: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kpi {
    pub id: String,
    pub name: String,
    pub stage: String,
    pub domain: String,
    #[serde(default)]
    pub primary: bool,
    pub kind: Kind,
    #[serde(default)]
    pub rate: bool,
    pub unit: String,
    pub direction: Direction,
    pub grain: String,
    #[serde(default)]
    pub min_n: i64,
    pub needs: Vec<String>,
    pub target: Target,
    pub sql: String,
    pub card: Option<Card>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Severity {
    pub min_history: usize,
    pub repeat_window: usize,
    pub repeat_misses: usize,
    pub systemic_min_units: usize,
    pub systemic_share: f64,
    pub sharp_drop: f64,
    pub volume_change: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FollowUp {
    pub weekly: u64,
    pub monthly: u64,
    pub quarterly: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Job {
    pub catalog: String,
    pub grains: Vec<String>,
    pub severity: Severity,
    pub follow_up_days: FollowUp,
}

/// Loads the job (jobs/kpis.toml) and its catalog; the built-in copies unless files are given.
pub fn load(job_file: Option<&Path>, catalog_file: Option<&Path>) -> Result<(Job, Catalog)> {
    let (job_name, job): (String, Job) = crate::error::read_declaration(job_file, "jobs/kpis.toml", BUILTIN_JOB)?;
    for g in &job.grains {
        grain(g).map_err(|message| Error::Config { file: job_name.clone(), message })?;
    }
    let (cat_name, catalog): (String, Catalog) =
        crate::error::read_declaration(catalog_file, "data/kpi_catalog.toml", BUILTIN_CATALOG)?;
    check_catalog(&catalog).map_err(|message| Error::Config { file: cat_name, message })?;
    Ok((job, catalog))
}

pub fn grain(name: &str) -> std::result::Result<Grain, String> {
    match name {
        "week" => Ok(Grain::Week),
        "month" => Ok(Grain::Month),
        "quarter" => Ok(Grain::Quarter),
        other => Err(format!("unknown grain '{other}': use week, month or quarter")),
    }
}

pub fn grain_name(g: Grain) -> &'static str {
    match g {
        Grain::Week => "week",
        Grain::Month => "month",
        Grain::Quarter => "quarter",
    }
}

/// The catalog's own rules: unique ids, known stages and grains, one primary per domain with a card.
fn check_catalog(c: &Catalog) -> std::result::Result<(), String> {
    let mut seen = std::collections::BTreeSet::new();
    let mut primaries: BTreeMap<(&str, &str), Vec<&str>> = BTreeMap::new();
    for k in &c.kpis {
        if !seen.insert(k.id.as_str()) {
            return Err(format!("KPI id '{}' is declared twice", k.id));
        }
        if !STAGES.contains(&k.stage.as_str()) {
            return Err(format!("KPI '{}': stage '{}' is not one of {}", k.id, k.stage, STAGES.join(", ")));
        }
        grain(&k.grain).map_err(|e| format!("KPI '{}': {e}", k.id))?;
        if k.rate && k.kind != Kind::Ratio {
            return Err(format!("KPI '{}': rate = true needs kind = \"ratio\"", k.id));
        }
        let entry = primaries.entry((k.stage.as_str(), k.domain.as_str())).or_default();
        if k.primary {
            entry.push(&k.id);
            if k.card.is_none() {
                return Err(format!("KPI '{}' is primary and needs a [kpi.card] (the management card)", k.id));
            }
        }
    }
    for ((stage, domain), p) in &primaries {
        if p.len() != 1 {
            return Err(format!(
                "domain '{domain}' ({stage}) has {} primary KPIs ({}); declare exactly one with primary = true",
                p.len(),
                p.join(", ")
            ));
        }
    }
    Ok(())
}

/// A period of a calendar: [start, end] inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Period {
    pub start: NaiveDate,
    pub end: NaiveDate,
}

/// The period holding `d` (the same arithmetic as `Calendar::period_start` in SQL).
pub fn period_of(cal: &Calendar, d: NaiveDate) -> Period {
    match cal.grain {
        Grain::Week => {
            let back = if cal.week_starts_sunday {
                d.weekday().num_days_from_sunday()
            } else {
                d.weekday().num_days_from_monday()
            };
            let start = d - Days::new(back.into());
            Period { start, end: start + Days::new(6) }
        }
        Grain::Month => {
            let start = d.with_day(1).expect("day 1");
            Period { start, end: start + Months::new(1) - Days::new(1) }
        }
        Grain::Quarter => {
            let shift = (cal.fiscal_year_start_month.clamp(1, 12) - 1) % 3;
            let m0 = d.month0() as i32;
            let offset = (m0 - shift as i32).rem_euclid(3) as u32;
            let start = d.with_day(1).expect("day 1") - Months::new(offset);
            Period { start, end: start + Months::new(3) - Days::new(1) }
        }
    }
}

/// Periods from the one holding `first` to the one holding `last`.
pub fn periods(cal: &Calendar, first: NaiveDate, last: NaiveDate) -> Vec<Period> {
    let mut out = Vec::new();
    let mut p = period_of(cal, first);
    while p.start <= last {
        out.push(p);
        p = period_of(cal, p.end + Days::new(1));
    }
    out
}

/// One unit's sums per period start: (numerator, denominator, n).
type Series = BTreeMap<NaiveDate, (f64, f64, i64)>;

/// Units compared for systemic misses: same KPI, grain, period, level and parent.
type PeerGroup = (String, String, NaiveDate, String, Option<String>);

/// A unit of the organisation as the KPI job reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Unit {
    pub level: String,
    pub id: String,
    pub name: String,
    pub parent: Option<String>,
    pub head_id: Option<String>,
    pub head_name: Option<String>,
}

/// One KPI value: a unit in a period, with its target and status.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    pub kpi_id: String,
    pub grain: String,
    pub period_start: NaiveDate,
    pub period_end: NaiveDate,
    pub complete: bool,
    pub level: String,
    pub unit_id: String,
    pub unit_name: String,
    pub parent_unit_id: Option<String>,
    pub numerator: f64,
    pub denominator: f64,
    pub n: i64,
    pub value: Option<f64>,
    pub ci_low: Option<f64>,
    pub ci_high: Option<f64>,
    pub target: Option<f64>,
    pub target_high: Option<f64>,
    pub target_source: String,
    pub hist_min: Option<f64>,
    pub hist_max: Option<f64>,
    pub previous: Option<f64>,
    pub miss: bool,
    pub status: String,
    pub reason: String,
}

pub struct Computed {
    /// The organisation the KPIs were rolled up over (published as kpi_units).
    pub members: Vec<Membership>,
    /// Milliseconds per KPI (all grains), for the run manifest.
    pub timings_ms: BTreeMap<String, u64>,
    pub cells: Vec<Cell>,
    pub units: Vec<Unit>,
    pub skipped: Vec<(String, Vec<String>)>,
}

/// Units from the memberships, plus owners of facts who are not in the user table.
fn units_of(members: &[Membership]) -> Vec<Unit> {
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for m in members {
        if seen.insert(m.unit_id.clone()) {
            out.push(Unit {
                level: m.level.to_string(),
                id: m.unit_id.clone(),
                name: m.unit_name.clone(),
                parent: m.parent_unit_id.clone(),
                head_id: m.head_id.clone(),
                head_name: m.head_name.clone(),
            });
        }
    }
    out
}

/// The aggregation of one KPI over the org: rows (level, unit_id, period_start, num, den, n).
fn aggregate_sql(session: &LakeSession, kpi: &Kpi, cal: &Calendar) -> String {
    let body = session.fill(&kpi.sql);
    let period = cal.period_start("CAST(f.day AS TIMESTAMP)");
    format!(
        "WITH f(owner_id, day, numerator, denominator, n) AS ({body}),
        fp AS (SELECT CAST(f.owner_id AS VARCHAR) AS owner_id, CAST({period} AS DATE) AS period_start,
                 CAST(f.numerator AS DOUBLE) AS num, CAST(f.denominator AS DOUBLE) AS den, CAST(f.n AS BIGINT) AS n
               FROM f WHERE f.day IS NOT NULL AND CAST(f.day AS DATE) <= {as_of}),
        known_users AS (SELECT DISTINCT member_id FROM mart.org_unit WHERE level = 'seller')
        SELECT 'company' AS level, 'company' AS unit_id, period_start, SUM(num) AS num, SUM(den) AS den, SUM(n) AS n
          FROM fp GROUP BY period_start
        UNION ALL
        SELECT m.level, m.unit_id, fp.period_start, SUM(fp.num), SUM(fp.den), SUM(fp.n)
          FROM fp JOIN mart.org_unit AS m ON m.member_id = fp.owner_id AND m.level <> 'company'
          GROUP BY m.level, m.unit_id, fp.period_start
        UNION ALL
        SELECT 'seller', 'seller:' || COALESCE(fp.owner_id, '(none)'), fp.period_start, SUM(fp.num), SUM(fp.den), SUM(fp.n)
          FROM fp LEFT JOIN known_users AS k ON k.member_id = fp.owner_id WHERE k.member_id IS NULL
          GROUP BY 2, fp.period_start
        UNION ALL
        SELECT 'region', 'region:{NO_REGION}', fp.period_start, SUM(fp.num), SUM(fp.den), SUM(fp.n)
          FROM fp LEFT JOIN known_users AS k ON k.member_id = fp.owner_id WHERE k.member_id IS NULL
          GROUP BY fp.period_start",
        as_of = session.fill("{{as_of_date}}"),
    )
}

/// The periods table a KPI may read (`mart.period`), for the grain being computed.
fn register_periods(session: &LakeSession, list: &[Period]) -> Result<()> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("period_start", DataType::Date32, false),
        Field::new("period_end", DataType::Date32, false),
    ]));
    let d = |f: &dyn Fn(&Period) -> NaiveDate| -> ArrayRef {
        Arc::new(Date32Array::from(list.iter().map(|p| Date32Array::from_naive_date(f(p))).collect::<Vec<_>>()))
    };
    let batch = RecordBatch::try_new(schema.clone(), vec![d(&|p| p.start), d(&|p| p.end)])?;
    let _ = session.ctx.deregister_table("mart.period")?;
    session.ctx.register_table("mart.period", Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))?;
    Ok(())
}

trait FromNaive {
    fn from_naive_date(d: NaiveDate) -> i32;
}

impl FromNaive for Date32Array {
    fn from_naive_date(d: NaiveDate) -> i32 {
        (d - NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")).num_days() as i32
    }
}

/// Computes every KPI of the catalog at every level and grain, as of the session's date.
pub async fn compute(
    session: &LakeSession,
    job: &Job,
    catalog: &Catalog,
    fiscal_year_start_month: u32,
    week_starts_sunday: bool,
) -> Result<Computed> {
    let as_of = session.as_of.0.ok_or_else(|| {
        Error::Other("the KPI job needs an explicit as-of date (never 'now'): pass --as-of YYYY-MM-DD".into())
    })?;
    let members = crate::org::memberships(session).await?;
    let mut units = units_of(&members);
    // Every KPI reads the same few marts: compute each once for this run, not once per KPI.
    for name in ["deal", "stage_exit", "activity", "quota_day"] {
        let table = format!("mart.{name}");
        let cached = session.ctx.table(table.as_str()).await?.cache().await?;
        session.ctx.deregister_table(table.as_str())?;
        session.ctx.register_table(table.as_str(), cached.into_view())?;
    }
    let first = session
        .ctx
        .sql("SELECT MIN(created_day) FROM mart.deal")
        .await?
        .collect()
        .await?
        .first()
        .and_then(|b| dates(b.column(0)).ok())
        .and_then(|v| v.first().copied().flatten())
        .unwrap_or(as_of)
        .min(as_of);
    let mut cells = Vec::new();
    let mut skipped = Vec::new();
    let mut timings_ms = BTreeMap::new();
    for kpi in &catalog.kpis {
        let missing: Vec<String> =
            kpi.needs.iter().filter(|t| !session.landed(t).is_some_and(|l| l.present())).cloned().collect();
        if !missing.is_empty() {
            skipped.push((kpi.id.clone(), missing));
        }
    }
    for g in &job.grains {
        let cal = Calendar { grain: grain(g).map_err(Error::Other)?, fiscal_year_start_month, week_starts_sunday };
        let list = periods(&cal, first, as_of);
        register_periods(session, &list)?;
        // Deal snapshots at each period's start and end, once per grain, for the KPIs that need them.
        for (name, sql) in SNAPSHOT_SQL {
            let table = format!("mart.{name}");
            let _ = session.ctx.deregister_table(table.as_str())?;
            let snap = session.declared(sql, &format!("sql/marts/{name}.sql")).await?.cache().await?;
            session.ctx.register_table(table.as_str(), snap.into_view())?;
        }
        for kpi in &catalog.kpis {
            if let Some((_, missing)) = skipped.iter().find(|(id, _)| *id == kpi.id) {
                let p = period_of(&cal, as_of);
                cells.push(not_instrumented(kpi, g, p, missing));
                continue;
            }
            let kpi_started = std::time::Instant::now();
            let sql = aggregate_sql(session, kpi, &cal);
            let batches = session.collect_declared(&sql, &format!("KPI {} (data/kpi_catalog.toml)", kpi.id)).await?;
            let mut raw: BTreeMap<(String, String), Series> = BTreeMap::new();
            for b in &batches {
                let (lv, id, ps) = (strings(b.column(0))?, strings(b.column(1))?, dates(b.column(2))?);
                let (num, den, n) = (floats(b.column(3))?, floats(b.column(4))?, floats(b.column(5))?);
                for r in 0..b.num_rows() {
                    let (Some(lv), Some(id), Some(ps)) = (lv[r].clone(), id[r].clone(), ps[r]) else { continue };
                    let e = raw.entry((lv, id)).or_default().entry(ps).or_insert((0.0, 0.0, 0));
                    e.0 += num[r].unwrap_or(0.0);
                    e.1 += den[r].unwrap_or(0.0);
                    e.2 += n[r].unwrap_or(0.0) as i64;
                }
            }
            for ((level, unit_id), series) in &raw {
                if !units.iter().any(|u| &u.id == unit_id) {
                    let owner = unit_id.trim_start_matches("seller:");
                    units.push(Unit {
                        level: level.clone(),
                        id: unit_id.clone(),
                        name: if level == "region" {
                            NO_REGION.into()
                        } else {
                            format!("{owner} (not in the user table)")
                        },
                        parent: Some(if level == "region" { "company".into() } else { format!("region:{NO_REGION}") }),
                        head_id: None,
                        head_name: None,
                    });
                }
                let unit = units.iter().find(|u| &u.id == unit_id).expect("just added").clone();
                cells.extend(series_cells(kpi, g, &list, as_of, &unit, series, &job.severity));
            }
            *timings_ms.entry(kpi.id.clone()).or_default() += kpi_started.elapsed().as_millis() as u64;
        }
    }
    systemic(&mut cells, &job.severity);
    cells.sort_by(|a, b| {
        (&a.kpi_id, &a.grain, level_rank(&a.level), &a.unit_id, a.period_start).cmp(&(
            &b.kpi_id,
            &b.grain,
            level_rank(&b.level),
            &b.unit_id,
            b.period_start,
        ))
    });
    units.sort_by(|a, b| (level_rank(&a.level), &a.name, &a.id).cmp(&(level_rank(&b.level), &b.name, &b.id)));
    Ok(Computed { members, timings_ms, cells, units, skipped })
}

pub fn level_rank(level: &str) -> usize {
    LEVELS.iter().position(|l| *l == level).unwrap_or(LEVELS.len())
}

fn not_instrumented(kpi: &Kpi, g: &str, p: Period, missing: &[String]) -> Cell {
    Cell {
        kpi_id: kpi.id.clone(),
        grain: g.to_string(),
        period_start: p.start,
        period_end: p.end,
        complete: false,
        level: "company".into(),
        unit_id: "company".into(),
        unit_name: "Company".into(),
        parent_unit_id: None,
        numerator: 0.0,
        denominator: 0.0,
        n: 0,
        value: None,
        ci_low: None,
        ci_high: None,
        target: None,
        target_high: None,
        target_source: String::new(),
        hist_min: None,
        hist_max: None,
        previous: None,
        miss: false,
        status: "not_instrumented".into(),
        reason: format!("not instrumented: needs {} (not landed)", missing.join(", ")),
    }
}

/// Whether `v` is worse than `target` for this KPI.
fn misses(kpi: &Kpi, v: f64, target: f64, target_high: Option<f64>) -> bool {
    match (kpi.target, kpi.direction) {
        (Target::Band { .. }, _) => v < target || target_high.is_some_and(|h| v > h),
        (_, Direction::Higher) => v < target,
        (_, Direction::Lower) => v > target,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 { v[m] } else { (v[m - 1] + v[m]) / 2.0 }
}

/// The cells of one unit's series, densified: a period with no rows is a real zero for totals and
/// "no value" for ratios, from the unit's first period with data to the as-of period.
fn series_cells(
    kpi: &Kpi,
    g: &str,
    list: &[Period],
    as_of: NaiveDate,
    unit: &Unit,
    series: &Series,
    sev: &Severity,
) -> Vec<Cell> {
    let Some(first) = series.keys().next().copied() else { return Vec::new() };
    let mut out: Vec<Cell> = Vec::new();
    for p in list.iter().filter(|p| p.start >= first) {
        let (num, den, n) = series.get(&p.start).copied().unwrap_or((0.0, 0.0, 0));
        let value = match kpi.kind {
            Kind::Total => Some(num),
            Kind::Ratio => (den != 0.0).then(|| num / den),
        };
        let (ci_low, ci_high) = if kpi.rate {
            wilson(num.round() as i64, den.round() as i64).map_or((None, None), |(l, h)| (Some(l), Some(h)))
        } else {
            (None, None)
        };
        let complete = p.end <= as_of;
        let enough = |c: &Cell| c.value.is_some() && (kpi.kind == Kind::Total || c.n >= kpi.min_n.max(1));
        // History: this unit's earlier complete periods with enough data.
        let history: Vec<f64> = match kpi.target {
            Target::Historical { lookback, .. } => {
                out.iter().rev().filter(|c| c.complete && enough(c)).take(lookback).filter_map(|c| c.value).collect()
            }
            _ => out.iter().rev().filter(|c| c.complete && enough(c)).take(4).filter_map(|c| c.value).collect(),
        };
        let (target, target_high, source) = match kpi.target {
            Target::Fixed { value } => (Some(value), None, "fixed".to_string()),
            Target::Quota { value } => (Some(value), None, "quota".to_string()),
            Target::Band { low, high } => (Some(low), Some(high), "band".to_string()),
            Target::Historical { tolerance, lookback } => {
                if history.len() >= sev.min_history {
                    let m = median(history.clone());
                    let t = match kpi.direction {
                        Direction::Higher => m - tolerance * m.abs(),
                        Direction::Lower => m + tolerance * m.abs(),
                    };
                    let side = if kpi.direction == Direction::Higher { "below" } else { "above" };
                    let source = format!(
                        "historical: {:.0}% {side} its own median {} of the last {} periods",
                        tolerance * 100.0,
                        fmt_value(&kpi.unit, m),
                        history.len().min(lookback)
                    );
                    (Some(t), None, source)
                } else {
                    (None, None, "historical".to_string())
                }
            }
        };
        let hist_min = history.iter().copied().reduce(f64::min);
        let hist_max = history.iter().copied().reduce(f64::max);
        let prev = out.last().filter(|c| enough(c)).cloned();
        let mut cell = Cell {
            kpi_id: kpi.id.clone(),
            grain: g.to_string(),
            period_start: p.start,
            period_end: p.end,
            complete,
            level: unit.level.clone(),
            unit_id: unit.id.clone(),
            unit_name: unit.name.clone(),
            parent_unit_id: unit.parent.clone(),
            numerator: num,
            denominator: den,
            n,
            value,
            ci_low,
            ci_high,
            target,
            target_high,
            target_source: source,
            hist_min,
            hist_max,
            previous: prev.as_ref().and_then(|c| c.value),
            miss: false,
            status: String::new(),
            reason: String::new(),
        };
        let (status, reason) = if !complete {
            ("in_progress", format!("period not over on {as_of}: read as-to-date, not judged"))
        } else if !enough(&cell) {
            ("not_enough_data", format!("n={n} below the KPI's min_n={}", kpi.min_n))
        } else if let (Some(v), Some(t)) = (value, target) {
            cell.miss = misses(kpi, v, t, target_high);
            if !cell.miss { ("on_track", String::new()) } else { classify(kpi, &cell, prev.as_ref(), &out, sev) }
        } else {
            ("no_target", format!("fewer than {} earlier periods to set a historical target", sev.min_history))
        };
        cell.status = status.to_string();
        cell.reason = reason;
        out.push(cell);
    }
    out
}

/// A miss becomes diagnose_first, coaching or observe (systemic is decided across units later).
fn classify(kpi: &Kpi, cell: &Cell, prev: Option<&Cell>, earlier: &[Cell], sev: &Severity) -> (&'static str, String) {
    let v = cell.value.expect("a miss has a value");
    if let Some(p) = prev.filter(|p| p.complete)
        && let Some(pv) = p.value
    {
        let worse = match kpi.direction {
            Direction::Higher => (pv - v) / pv.abs().max(f64::EPSILON),
            Direction::Lower => (v - pv) / pv.abs().max(f64::EPSILON),
        };
        let outside = match kpi.direction {
            Direction::Higher => cell.hist_min.is_none_or(|m| v < m),
            Direction::Lower => cell.hist_max.is_none_or(|m| v > m),
        };
        let volume = if p.n > 0 && cell.n > 0 {
            let r = cell.n as f64 / p.n as f64;
            r > sev.volume_change || r < 1.0 / sev.volume_change
        } else {
            false
        };
        // For a rate of counts, a "sharp" change must also be more than noise: a two-proportion
        // test against the previous period at 5% (0 of 90 -> 1 of 92 is not a sudden drop).
        let beyond_noise = !kpi.rate
            || crate::funnel::two_proportion(
                cell.numerator.round() as i64,
                cell.denominator.round() as i64,
                p.numerator.round() as i64,
                p.denominator.round() as i64,
            )
            .is_some_and(|(_, pvalue)| pvalue < 0.05);
        if (worse >= sev.sharp_drop && outside && beyond_noise) || volume {
            return (
                "diagnose_first",
                format!(
                    "sudden change: {} from {} last period ({:+.0}%), n {} -> {}{}; check data quality, owner and territory changes and volume before calling it execution",
                    fmt_value(&kpi.unit, v),
                    fmt_value(&kpi.unit, pv),
                    -worse * 100.0,
                    p.n,
                    cell.n,
                    if volume { " (volume anomaly)" } else { "" }
                ),
            );
        }
    }
    let window: Vec<&Cell> =
        earlier.iter().rev().filter(|c| c.complete).take(sev.repeat_window.saturating_sub(1)).collect();
    let repeated = 1 + window.iter().filter(|c| c.miss).count();
    if repeated >= sev.repeat_misses {
        return ("coaching", format!("missed {repeated} of the last {} periods", window.len() + 1));
    }
    let within = cell.hist_min.zip(cell.hist_max).is_some_and(|(lo, hi)| v >= lo && v <= hi);
    ("observe", if within { "single miss within its historical range".to_string() } else { "single miss".to_string() })
}

/// The same miss across several units under one parent is systemic (owner: leadership).
fn systemic(cells: &mut [Cell], sev: &Severity) {
    let mut groups: HashMap<PeerGroup, (usize, usize)> = HashMap::new();
    for c in cells.iter().filter(|c| c.complete && c.level != "company") {
        let judged = c.value.is_some() && !matches!(c.status.as_str(), "not_enough_data" | "no_target" | "in_progress");
        if !judged {
            continue;
        }
        let e = groups
            .entry((c.kpi_id.clone(), c.grain.clone(), c.period_start, c.level.clone(), c.parent_unit_id.clone()))
            .or_default();
        e.0 += 1;
        if c.miss {
            e.1 += 1;
        }
    }
    for c in cells.iter_mut().filter(|c| c.miss && matches!(c.status.as_str(), "observe" | "coaching")) {
        let key = (c.kpi_id.clone(), c.grain.clone(), c.period_start, c.level.clone(), c.parent_unit_id.clone());
        if let Some((judged, missed)) = groups.get(&key)
            && *missed >= sev.systemic_min_units
            && (*missed as f64) >= sev.systemic_share * (*judged as f64)
        {
            c.status = "systemic".into();
            c.reason = format!("{missed} of {judged} {}s under the same parent missed this period", c.level);
        }
    }
}

pub fn fmt_value(unit: &str, v: f64) -> String {
    match unit {
        "percent" => format!("{:.1}%", v * 100.0),
        "currency" => {
            if v.abs() >= 1e6 {
                format!("{:.2}M", v / 1e6)
            } else if v.abs() >= 1e3 {
                format!("{:.1}k", v / 1e3)
            } else {
                format!("{v:.0}")
            }
        }
        "multiple" => format!("{v:.2}x"),
        "days" => format!("{v:.1} d"),
        "count" => format!("{v:.0}"),
        _ => format!("{v:.2}"),
    }
}

pub fn cell_schema() -> SchemaRef {
    let s = |n: &str, null: bool| Field::new(n, DataType::Utf8, null);
    let f = |n: &str| Field::new(n, DataType::Float64, true);
    Arc::new(Schema::new(vec![
        s("kpi_id", false),
        s("kpi_name", false),
        s("stage", false),
        s("domain", false),
        Field::new("is_primary", DataType::Boolean, false),
        s("unit_of_measure", false),
        s("direction", false),
        s("grain", false),
        Field::new("period_start", DataType::Date32, false),
        Field::new("period_end", DataType::Date32, false),
        Field::new("complete", DataType::Boolean, false),
        s("level", false),
        s("unit_id", false),
        s("unit_name", false),
        s("parent_unit_id", true),
        Field::new("numerator", DataType::Float64, false),
        Field::new("denominator", DataType::Float64, false),
        Field::new("n", DataType::Int64, false),
        f("value"),
        f("ci_low"),
        f("ci_high"),
        f("target"),
        f("target_high"),
        s("target_source", false),
        f("hist_min"),
        f("hist_max"),
        f("previous_value"),
        Field::new("miss", DataType::Boolean, false),
        s("status", false),
        s("reason", false),
    ]))
}

pub fn cell_batch(cells: &[Cell], catalog: &Catalog) -> Result<RecordBatch> {
    let kpi: HashMap<&str, &Kpi> = catalog.kpis.iter().map(|k| (k.id.as_str(), k)).collect();
    let s = |f: &dyn Fn(&Cell) -> Option<String>| -> ArrayRef {
        Arc::new(StringArray::from(cells.iter().map(f).collect::<Vec<_>>()))
    };
    let x = |f: &dyn Fn(&Cell) -> Option<f64>| -> ArrayRef {
        Arc::new(Float64Array::from(cells.iter().map(f).collect::<Vec<_>>()))
    };
    let b = |f: &dyn Fn(&Cell) -> bool| -> ArrayRef {
        Arc::new(BooleanArray::from(cells.iter().map(f).collect::<Vec<_>>()))
    };
    let d = |f: &dyn Fn(&Cell) -> NaiveDate| -> ArrayRef {
        Arc::new(Date32Array::from(cells.iter().map(|c| Date32Array::from_naive_date(f(c))).collect::<Vec<_>>()))
    };
    let k = |c: &Cell| kpi[c.kpi_id.as_str()];
    Ok(RecordBatch::try_new(
        cell_schema(),
        vec![
            s(&|c| Some(c.kpi_id.clone())),
            s(&|c| Some(k(c).name.clone())),
            s(&|c| Some(k(c).stage.clone())),
            s(&|c| Some(k(c).domain.clone())),
            b(&|c| k(c).primary),
            s(&|c| Some(k(c).unit.clone())),
            s(&|c| Some(format!("{:?}", k(c).direction).to_lowercase())),
            s(&|c| Some(c.grain.clone())),
            d(&|c| c.period_start),
            d(&|c| c.period_end),
            b(&|c| c.complete),
            s(&|c| Some(c.level.clone())),
            s(&|c| Some(c.unit_id.clone())),
            s(&|c| Some(c.unit_name.clone())),
            s(&|c| c.parent_unit_id.clone()),
            x(&|c| Some(c.numerator)),
            x(&|c| Some(c.denominator)),
            Arc::new(Int64Array::from(cells.iter().map(|c| c.n).collect::<Vec<_>>())),
            x(&|c| c.value),
            x(&|c| c.ci_low),
            x(&|c| c.ci_high),
            x(&|c| c.target),
            x(&|c| c.target_high),
            s(&|c| Some(c.target_source.clone())),
            x(&|c| c.hist_min),
            x(&|c| c.hist_max),
            x(&|c| c.previous),
            b(&|c| c.miss),
            s(&|c| Some(c.status.clone())),
            s(&|c| Some(c.reason.clone())),
        ],
    )?)
}

/// Closed deals of a unit's subtree in the last complete quarter, by account segment.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub unit_id: String,
    pub dimension: String,
    pub segment: String,
    pub won: i64,
    pub closed: i64,
    pub bookings: f64,
}

/// Segments (size band, industry) per company, region and manager unit for the last complete
/// calendar-or-fiscal quarter before the as-of date: the regional leader's territory view.
pub async fn segments(session: &LakeSession, quarter: Period) -> Result<Vec<Segment>> {
    let mut out = Vec::new();
    for (dimension, column) in [("size band", "size_band"), ("industry", "industry")] {
        let sql = format!(
            "SELECT m.unit_id, COALESCE(CAST(d.{column} AS VARCHAR), '(unknown)') AS segment, \
               SUM(CASE WHEN d.is_won THEN 1 ELSE 0 END) AS won, COUNT(*) AS closed, \
               SUM(CASE WHEN d.is_won THEN COALESCE(d.amount, 0) ELSE 0 END) AS bookings \
             FROM mart.deal AS d JOIN mart.org_unit AS m ON m.member_id = d.owner_id \
             WHERE d.is_closed AND m.level IN ('company', 'region', 'manager') \
               AND d.close_date BETWEEN DATE '{}' AND DATE '{}' \
             GROUP BY 1, 2 ORDER BY 1, 2",
            quarter.start, quarter.end
        );
        for b in session.ctx.sql(&sql).await?.collect().await? {
            let (u, seg) = (strings(b.column(0))?, strings(b.column(1))?);
            let (won, closed, bookings) = (floats(b.column(2))?, floats(b.column(3))?, floats(b.column(4))?);
            for r in 0..b.num_rows() {
                out.push(Segment {
                    unit_id: u[r].clone().unwrap_or_default(),
                    dimension: dimension.into(),
                    segment: seg[r].clone().unwrap_or_default(),
                    won: won[r].unwrap_or(0.0) as i64,
                    closed: closed[r].unwrap_or(0.0) as i64,
                    bookings: bookings[r].unwrap_or(0.0),
                });
            }
        }
    }
    Ok(out)
}

pub fn segment_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("period_start", DataType::Date32, false),
        Field::new("unit_id", DataType::Utf8, false),
        Field::new("dimension", DataType::Utf8, false),
        Field::new("segment", DataType::Utf8, false),
        Field::new("won", DataType::Int64, false),
        Field::new("closed", DataType::Int64, false),
        Field::new("win_rate", DataType::Float64, true),
        Field::new("bookings", DataType::Float64, false),
    ]))
}

pub fn segment_batch(rows: &[Segment], quarter: Period) -> Result<RecordBatch> {
    let s = |f: &dyn Fn(&Segment) -> String| -> ArrayRef {
        Arc::new(StringArray::from(rows.iter().map(f).collect::<Vec<_>>()))
    };
    Ok(RecordBatch::try_new(
        segment_schema(),
        vec![
            Arc::new(Date32Array::from(vec![Date32Array::from_naive_date(quarter.start); rows.len()])),
            s(&|r| r.unit_id.clone()),
            s(&|r| r.dimension.clone()),
            s(&|r| r.segment.clone()),
            Arc::new(Int64Array::from(rows.iter().map(|r| r.won).collect::<Vec<_>>())),
            Arc::new(Int64Array::from(rows.iter().map(|r| r.closed).collect::<Vec<_>>())),
            Arc::new(Float64Array::from(
                rows.iter().map(|r| (r.closed > 0).then(|| r.won as f64 / r.closed as f64)).collect::<Vec<_>>(),
            )),
            Arc::new(Float64Array::from(rows.iter().map(|r| r.bookings).collect::<Vec<_>>())),
        ],
    )?)
}

/// What one KPI run produced.
pub struct RunResult {
    pub computed: Computed,
    pub interventions: Vec<crate::intervention::Intervention>,
    pub text: String,
    pub manifest: crate::publish::Manifest,
    pub reports: Vec<String>,
    pub logged: usize,
}

/// The funnel charts and bottleneck sentences of the latest funnel run for this as-of date.
pub async fn funnel_artifacts(session: &LakeSession) -> Result<(Vec<(String, String)>, Vec<String>)> {
    let runs = crate::publish::committed_runs(&session.lake).await?;
    let Some(run) = runs.iter().rev().find(|m| m.job == "funnel" && m.as_of == session.as_of.label()) else {
        return Ok((Vec::new(), Vec::new()));
    };
    let (mut charts, mut bottlenecks) = (Vec::new(), Vec::new());
    for a in &run.artifacts {
        let bytes = session.lake.get(&a.path).await?;
        let text = String::from_utf8_lossy(&bytes).to_string();
        if a.path.ends_with(".svg") {
            charts.push((a.path.clone(), text));
        } else if a.path.ends_with("funnel_bottlenecks.md") {
            bottlenecks.extend(text.lines().filter_map(|l| l.strip_prefix("- ")).map(str::to_string));
        }
    }
    Ok((charts, bottlenecks))
}

/// One deal of the latest deal-risk run, for the leadership report.
#[derive(Debug, Clone, PartialEq)]
pub struct RiskLine {
    pub deal: String,
    pub account: String,
    pub owner_id: String,
    pub owner: String,
    pub stage: String,
    pub amount: Option<f64>,
    pub score: Option<i64>,
    pub flags: String,
    pub action: String,
}

/// The deals of the latest deal-risk run for this as-of date (none when it has not run).
pub async fn risk_lines(session: &LakeSession) -> Result<Vec<RiskLine>> {
    let runs = crate::publish::committed_runs(&session.lake).await?;
    let Some(file) = runs
        .iter()
        .rev()
        .filter(|m| m.job == "deal_risk" && m.as_of == session.as_of.label())
        .find_map(|m| m.tables.iter().find(|t| t.name == "deal_risk").and_then(|t| t.files.first()))
    else {
        return Ok(Vec::new());
    };
    let url = session.lake.listing_url(&file.path)?;
    let df = session
        .ctx
        .read_parquet(url.as_str(), datafusion::prelude::ParquetReadOptions::default())
        .await?
        .select_columns(&[
            "deal_name",
            "account_name",
            "owner_id",
            "owner_name",
            "stage_name",
            "amount",
            "risk_score",
            "flags",
            "action",
        ])?;
    let mut out = Vec::new();
    for b in df.collect().await? {
        let c: Vec<Vec<Option<String>>> = (0..9).map(|i| strings(b.column(i))).collect::<Result<_>>()?;
        let amount = floats(b.column(5))?;
        let score = floats(b.column(6))?;
        for r in 0..b.num_rows() {
            let g = |k: usize| c[k][r].clone().unwrap_or_default();
            out.push(RiskLine {
                deal: g(0),
                account: g(1),
                owner_id: g(2),
                owner: g(3),
                stage: g(4),
                amount: amount[r],
                score: score[r].map(|s| s as i64),
                flags: g(7),
                action: g(8),
            });
        }
    }
    out.sort_by(|a, b| (std::cmp::Reverse(a.score), &a.deal).cmp(&(std::cmp::Reverse(b.score), &b.deal)));
    Ok(out)
}

/// Runs the KPI job as of the session's date: computes every KPI, plans interventions, publishes
/// kpi_values, kpi_interventions and kpi_units with the reports, then appends the interventions
/// and the outcomes of earlier ones to the decision-trace log.
pub async fn run(
    session: &LakeSession,
    job: &Job,
    catalog: &Catalog,
    fiscal_year_start_month: u32,
    week_starts_sunday: bool,
) -> Result<RunResult> {
    let started = std::time::Instant::now();
    let as_of = session.as_of.0.ok_or_else(|| Error::Other("the KPI job needs --as-of YYYY-MM-DD".into()))?;
    let computed = compute(session, job, catalog, fiscal_year_start_month, week_starts_sunday).await?;
    let interventions = crate::intervention::plan(session, job, catalog, &computed.cells, &computed.units, as_of).await;
    let mut run = crate::publish::RunWriter::begin(&session.lake, "kpis", session.as_of);
    run.record_inputs(session);
    run.set_playbook_version(format!("kpi_catalog {}", catalog.version));
    run.timing("compute", started.elapsed().as_millis() as u64);
    for (id, ms) in &computed.timings_ms {
        run.timing(&format!("kpi:{id}"), *ms);
    }
    for (id, tables) in &computed.skipped {
        run.note(format!("KPI {id} not instrumented: needs {} (not landed)", tables.join(", ")));
    }
    run.write_table("kpi_values", cell_schema(), &[cell_batch(&computed.cells, catalog)?]).await?;
    run.write_table("kpi_interventions", crate::intervention::schema(), &[crate::intervention::batch(&interventions)?])
        .await?;
    run.write_table("kpi_units", crate::org::schema(), &[crate::org::batch(&computed.members)?]).await?;
    let cal = Calendar { grain: Grain::Quarter, fiscal_year_start_month, week_starts_sunday };
    let current = period_of(&cal, as_of);
    let quarter = if current.end <= as_of { current } else { period_of(&cal, current.start - Days::new(1)) };
    let segments = segments(session, quarter).await?;
    run.write_table("kpi_segments", segment_schema(), &[segment_batch(&segments, quarter)?]).await?;
    let (funnels, bottlenecks) = funnel_artifacts(session).await?;
    let risk = risk_lines(session).await?;
    let input = crate::report::Input {
        as_of,
        run_id: run.run_id(),
        catalog,
        cells: &computed.cells,
        units: &computed.units,
        interventions: &interventions,
        funnels: &funnels,
        bottlenecks: &bottlenecks,
        skipped: &computed.skipped,
        segments: &segments,
        segment_quarter: quarter.start,
        risk: &risk,
    };
    let views = crate::report::views(&computed.units, &computed.cells);
    let pages: Vec<(String, String)> = views
        .iter()
        .map(|v| {
            let name = if v.key == "vp" { "report.html".to_string() } else { format!("report_{}.html", v.key) };
            (name, crate::report::html(&input, v))
        })
        .collect();
    let md = crate::report::markdown(&input);
    let mut reports = Vec::new();
    for (name, page) in pages {
        reports.push(run.write_artifact(&name, page.into_bytes()).await?);
    }
    reports.push(run.write_artifact("report.md", md.clone().into_bytes()).await?);
    run.timing("total_before_commit", started.elapsed().as_millis() as u64);
    let manifest = run.commit().await?;
    // The log is appended after the run is visible: a failed run recommends nothing, and a log
    // append that fails is redone by the next run (ids are stable, so nothing doubles).
    let recorded_at = manifest.committed_at.clone();
    let mut records = crate::intervention::records(&interventions, catalog, as_of, &recorded_at);
    records.extend(crate::intervention::outcomes(session, &computed.cells, as_of, &recorded_at).await?);
    let logged = crate::decision_log::append(session, records).await?;
    let mut text = md;
    text.push_str(&format!(
        "\n{} KPI values, {} interventions ({} new records in log/decision_trace)\nreport: {}\n",
        computed.cells.len(),
        interventions.len(),
        logged,
        reports.first().map(String::as_str).unwrap_or("-")
    ));
    Ok(RunResult { computed, interventions, text, manifest, reports, logged })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_catalog_has_one_primary_per_domain_and_the_asked_for_kpis() {
        let (job, cat) = load(None, None).unwrap();
        assert_eq!(job.grains, vec!["week", "month", "quarter"]);
        let primaries: Vec<&Kpi> = cat.kpis.iter().filter(|k| k.primary).collect();
        assert!((15..=20).contains(&primaries.len()), "{} primary KPIs", primaries.len());
        for stage in STAGES {
            assert!(primaries.iter().any(|k| k.stage == stage), "no primary KPI in {stage}");
        }
        for id in
            ["win_rate", "win_rate_amount", "quota_attainment", "slip_rate", "churn_rate", "net_revenue_retention"]
        {
            assert!(cat.kpis.iter().any(|k| k.id == id), "{id} missing");
        }
    }

    #[test]
    fn a_second_primary_in_a_domain_is_refused() {
        let (_, mut cat) = load(None, None).unwrap();
        let i = cat.kpis.iter().position(|k| k.id == "win_rate_amount").unwrap();
        cat.kpis[i].primary = true;
        cat.kpis[i].card = cat.kpis.iter().find(|k| k.id == "win_rate").unwrap().card.clone();
        let e = check_catalog(&cat).unwrap_err();
        assert!(e.contains("domain 'Win rate' (Execution) has 2 primary KPIs"), "{e}");
    }

    #[test]
    fn fiscal_quarters_and_weeks() {
        let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        let feb = Calendar { grain: Grain::Quarter, fiscal_year_start_month: 2, week_starts_sunday: false };
        // Fiscal year from February: quarters start Feb, May, Aug, Nov.
        assert_eq!(period_of(&feb, d("2026-01-15")), Period { start: d("2025-11-01"), end: d("2026-01-31") });
        assert_eq!(period_of(&feb, d("2026-02-01")).start, d("2026-02-01"));
        let sun = Calendar { grain: Grain::Week, fiscal_year_start_month: 1, week_starts_sunday: true };
        // 2026-11-24 is a Tuesday.
        assert_eq!(period_of(&sun, d("2026-11-24")).start, d("2026-11-22"));
        let mon = Calendar { week_starts_sunday: false, ..sun };
        assert_eq!(period_of(&mon, d("2026-11-24")).start, d("2026-11-23"));
        let months = periods(&Calendar::default(), d("2026-01-31"), d("2026-03-01"));
        assert_eq!(
            months.iter().map(|p| p.start).collect::<Vec<_>>(),
            vec![d("2026-01-01"), d("2026-02-01"), d("2026-03-01")]
        );
        assert_eq!(months[1].end, d("2026-02-28"));
    }

    #[test]
    fn a_rate_jump_within_noise_is_not_a_sudden_drop() {
        let (job, cat) = load(None, None).unwrap();
        let kpi = cat.kpis.iter().find(|k| k.id == "slip_rate").unwrap().clone();
        let d = |m: u32| NaiveDate::from_ymd_opt(2026, m, 1).unwrap();
        let list = periods(&Calendar::default(), d(1), d(4) + Days::new(29));
        let unit = Unit {
            level: "seller".into(),
            id: "seller:S".into(),
            name: "S".into(),
            parent: None,
            head_id: None,
            head_name: None,
        };
        let status = |april: (f64, f64)| {
            let series: Series = [(d(1), (0.0, 90.0, 90)), (d(2), (0.0, 90.0, 90)), (d(3), (0.0, 95.0, 95))]
                .into_iter()
                .chain([(d(4), (april.0, april.1, april.1 as i64))])
                .collect();
            let cells = series_cells(&kpi, "month", &list, d(4) + Days::new(29), &unit, &series, &job.severity);
            cells.last().unwrap().status.clone()
        };
        // 0 of 95 slipped, then 1 of 92: a miss of a 0% target, but within noise (p ~ 0.3).
        assert_eq!(status((1.0, 92.0)), "observe");
        // 0 of 95, then 30 of 92: sudden and far beyond noise -> check the data first.
        assert_eq!(status((30.0, 92.0)), "diagnose_first");
    }
}
