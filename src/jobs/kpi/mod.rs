//! The KPI hierarchy: the declared catalog (data/kpi_catalog.toml) computed at company, region,
//! manager and seller level per week, month and quarter, then read with the severity rules of
//! jobs/kpis.toml into a status per cell and an intervention per non-green primary cell.

pub mod catalog;
pub mod intervention;
pub mod model;
mod severity;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{Days, NaiveDate};
use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Float64Array, Int64Array, RecordBatch, StringArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

pub use catalog::{Catalog, Direction, Job, Kind, Kpi, STAGES, Severity, Target, grain, grain_name, load};
pub use model::{Cell, Period, Segment, Unit, fmt_value, level_rank, period_of, periods};

use crate::error::{Error, Result};
use crate::jobs::calendar::{Calendar, Grain};
use crate::layers::LakeSession;
use crate::layers::columns::{dates, floats, strings};
use crate::layers::org::{Membership, NO_REGION};
use crate::outputs::{Manifest, RunWriter, TableSink};
use intervention::Intervention;
use severity::{Series, Spread, UnitSeries, series_cells, systemic};

/// Deal snapshots per period of the grain being computed (they read `mart.period`).
const SNAPSHOT_SQL: [(&str, &str); 2] = [
    ("deal_at_period_start", repo_file!("sql/marts/deal_at_period_start.sql")),
    ("deal_at_period_end", repo_file!("sql/marts/deal_at_period_end.sql")),
];

pub struct Computed {
    /// The organisation the KPIs were rolled up over (published as kpi_units).
    pub members: Vec<Membership>,
    /// Milliseconds per KPI (all grains), for the run manifest.
    pub timings_ms: BTreeMap<String, u64>,
    /// The cells at each KPI's own grain (the one its severity is judged at, `Kpi::grain`): what
    /// interventions, outcomes and the report read. The cells at the other grains are published
    /// in kpi_values as they are computed and not kept (at a million deals the weekly seller
    /// cells alone are tens of millions).
    pub cells: Vec<Cell>,
    /// Every cell published in kpi_values, all grains.
    pub values: u64,
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
    let period = cal.period_start("CAST(f.day AS TIMESTAMP(6))");
    format!(
        "WITH f(owner_id, day, numerator, denominator, n) AS ({body}),
        fp AS (SELECT CAST(f.owner_id AS VARCHAR) AS owner_id, CAST({period} AS DATE) AS period_start,
                 CAST(f.numerator AS DOUBLE) AS num, CAST(f.denominator AS DOUBLE) AS den, CAST(f.n AS BIGINT) AS n
               FROM f WHERE f.day IS NOT NULL AND CAST(f.day AS DATE) <= {as_of}),
        known_users AS (SELECT DISTINCT member_id FROM mart.org_unit WHERE level = 'seller')
        SELECT 'company' AS level, 'company' AS unit_id, period_start, SUM(num) AS num, SUM(den) AS den, SUM(n) AS n, {spread}
          FROM fp GROUP BY period_start
        UNION ALL
        SELECT m.level, m.unit_id, fp.period_start, SUM(fp.num), SUM(fp.den), SUM(fp.n), {spread}
          FROM fp JOIN mart.org_unit AS m ON m.member_id = fp.owner_id AND m.level <> 'company'
          GROUP BY m.level, m.unit_id, fp.period_start
        UNION ALL
        SELECT 'seller', 'seller:' || COALESCE(fp.owner_id, '(none)'), fp.period_start, SUM(fp.num), SUM(fp.den), SUM(fp.n), {spread}
          FROM fp LEFT JOIN known_users AS k ON k.member_id = fp.owner_id WHERE k.member_id IS NULL
          GROUP BY 2, fp.period_start
        UNION ALL
        SELECT 'region', 'region:{NO_REGION}', fp.period_start, SUM(fp.num), SUM(fp.den), SUM(fp.n), {spread}
          FROM fp LEFT JOIN known_users AS k ON k.member_id = fp.owner_id WHERE k.member_id IS NULL
          GROUP BY fp.period_start",
        as_of = session.fill("{{as_of_date}}"),
        // Per-row spread for the interval of an average (a ratio of sums over rows).
        spread = "SUM(fp.num * fp.num), SUM(fp.den * fp.den), SUM(fp.num * fp.den), COUNT(*)",
    )
}

/// The periods table a KPI may read (`mart.period`), for the grain being computed.
async fn register_periods(session: &LakeSession, list: &[Period]) -> Result<()> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("period_start", DataType::Date32, false),
        Field::new("period_end", DataType::Date32, false),
    ]));
    let d = |f: &dyn Fn(&Period) -> NaiveDate| -> ArrayRef {
        Arc::new(Date32Array::from(list.iter().map(|p| Date32Array::from_naive_date(f(p))).collect::<Vec<_>>()))
    };
    let batch = RecordBatch::try_new(schema.clone(), vec![d(&|p| p.start), d(&|p| p.end)])?;
    session.register_rows("mart.period", schema, vec![batch]).await
}

trait FromNaive {
    fn from_naive_date(d: NaiveDate) -> i32;
}

impl FromNaive for Date32Array {
    fn from_naive_date(d: NaiveDate) -> i32 {
        (d - NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")).num_days() as i32
    }
}

/// Computes every KPI of the catalog at every level and grain, as of the session's date, writing
/// every cell into `values` (kpi_values) one KPI and grain at a time, and keeping in memory only
/// the cells at each KPI's own grain.
pub async fn compute(
    session: &LakeSession,
    job: &Job,
    catalog: &Catalog,
    fiscal_year_start_month: u32,
    week_starts_sunday: bool,
    values: &mut TableSink,
) -> Result<Computed> {
    let as_of = session.as_of.0.ok_or_else(|| {
        Error::Other("the KPI job needs an explicit as-of date (never 'now'): pass --as-of YYYY-MM-DD".into())
    })?;
    let members = crate::layers::org::memberships(session).await?;
    let mut units = units_of(&members);
    // Every KPI reads the same few marts: compute each once for this run, not once per KPI.
    for name in ["deal", "stage_exit", "activity", "quota_day"] {
        session.materialise(&format!("mart.{name}")).await?;
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
    // Where each unit is in `units` (thousands of sellers at a million deals: no linear scans).
    let mut unit_at: HashMap<String, usize> = units.iter().enumerate().map(|(i, u)| (u.id.clone(), i)).collect();
    let mut skipped = Vec::new();
    let mut timings_ms = BTreeMap::new();
    for kpi in &catalog.kpis {
        let missing = session.missing(&kpi.needs);
        if !missing.is_empty() {
            skipped.push((kpi.id.clone(), missing));
        }
    }
    for g in &job.grains {
        let cal = Calendar { grain: grain(g).map_err(Error::Other)?, fiscal_year_start_month, week_starts_sunday };
        let list = periods(&cal, first, as_of);
        register_periods(session, &list).await?;
        // Deal snapshots at each period's start and end, once per grain, for the KPIs that need them.
        for (name, sql) in SNAPSHOT_SQL {
            let table = format!("mart.{name}");
            let _ = session.ctx.deregister_table(table.as_str())?;
            let snap = session.declared(sql, &format!("sql/marts/{name}.sql")).await?.cache().await?;
            session.ctx.register_table(table.as_str(), snap.into_view())?;
        }
        for kpi in &catalog.kpis {
            // This KPI's cells at this grain: published whole, since systemic reads across the
            // units of one KPI, grain and period.
            let mut chunk = Vec::new();
            if let Some((_, missing)) = skipped.iter().find(|(id, _)| *id == kpi.id) {
                let p = period_of(&cal, as_of);
                chunk.push(not_instrumented(kpi, g, p, missing));
                publish_chunk(chunk, kpi, g, catalog, &job.severity, values, &mut cells)?;
                continue;
            }
            let kpi_started = std::time::Instant::now();
            let sql = aggregate_sql(session, kpi, &cal);
            let batches = session.collect_declared(&sql, &format!("KPI {} (data/kpi_catalog.toml)", kpi.id)).await?;
            let mut raw: BTreeMap<(String, String), Series> = BTreeMap::new();
            let mut spreads: BTreeMap<(String, String), Spread> = BTreeMap::new();
            for b in &batches {
                let (lv, id, ps) = (strings(b.column(0))?, strings(b.column(1))?, dates(b.column(2))?);
                let (num, den, n) = (floats(b.column(3))?, floats(b.column(4))?, floats(b.column(5))?);
                let (yy, xx, xy, rows) =
                    (floats(b.column(6))?, floats(b.column(7))?, floats(b.column(8))?, floats(b.column(9))?);
                for r in 0..b.num_rows() {
                    let (Some(lv), Some(id), Some(ps)) = (lv[r].clone(), id[r].clone(), ps[r]) else { continue };
                    let sp = spreads.entry((lv.clone(), id.clone())).or_default().entry(ps).or_default();
                    sp.0 += yy[r].unwrap_or(0.0);
                    sp.1 += xx[r].unwrap_or(0.0);
                    sp.2 += xy[r].unwrap_or(0.0);
                    sp.3 += rows[r].unwrap_or(0.0) as i64;
                    let e = raw.entry((lv, id)).or_default().entry(ps).or_insert((0.0, 0.0, 0));
                    e.0 += num[r].unwrap_or(0.0);
                    e.1 += den[r].unwrap_or(0.0);
                    e.2 += n[r].unwrap_or(0.0) as i64;
                }
            }
            for ((level, unit_id), series) in &raw {
                if !unit_at.contains_key(unit_id) {
                    unit_at.insert(unit_id.clone(), units.len());
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
                let unit = units[unit_at[unit_id]].clone();
                let spread = spreads.get(&(level.clone(), unit_id.clone()));
                chunk.extend(series_cells(
                    kpi,
                    g,
                    &list,
                    as_of,
                    UnitSeries { unit: &unit, series, spread },
                    &job.severity,
                ));
            }
            publish_chunk(chunk, kpi, g, catalog, &job.severity, values, &mut cells)?;
            *timings_ms.entry(kpi.id.clone()).or_default() += kpi_started.elapsed().as_millis() as u64;
        }
    }
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
    Ok(Computed { members, timings_ms, cells, values: values.rows(), units, skipped })
}

/// Reads the systemic rule over one KPI's cells at one grain, writes them (ordered by level, unit
/// and period) into kpi_values, and keeps them when `grain` is the KPI's own.
fn publish_chunk(
    mut chunk: Vec<Cell>,
    kpi: &Kpi,
    grain: &str,
    catalog: &Catalog,
    severity: &Severity,
    values: &mut TableSink,
    kept: &mut Vec<Cell>,
) -> Result<()> {
    systemic(&mut chunk, severity);
    chunk.sort_by(|a, b| {
        (level_rank(&a.level), &a.unit_id, a.period_start).cmp(&(level_rank(&b.level), &b.unit_id, b.period_start))
    });
    if !chunk.is_empty() {
        values.write(&cell_batch(&chunk, catalog)?)?;
    }
    if grain == kpi.grain {
        kept.append(&mut chunk);
    }
    Ok(())
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
        reason: format!("not instrumented: needs {}", missing.join("; ")),
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
    pub interventions: Vec<Intervention>,
    pub text: String,
    pub manifest: Manifest,
    pub reports: Vec<String>,
    pub logged: usize,
}

/// A KPI run whose tables are written but not yet committed: the report is added to it by the
/// layer above (`report::publish`), then `finish` commits it and appends to the log.
pub struct Prepared {
    pub run: RunWriter,
    pub as_of: NaiveDate,
    pub computed: Computed,
    pub interventions: Vec<Intervention>,
    pub segments: Vec<Segment>,
    /// The quarter the segments cover (the last complete one before the as-of date).
    pub segment_quarter: Period,
    started: std::time::Instant,
}

/// Computes every KPI as of the session's date, plans interventions and writes kpi_values,
/// kpi_interventions, kpi_units and kpi_segments into a run that is not yet visible.
pub async fn prepare(
    session: &LakeSession,
    job: &Job,
    catalog: &Catalog,
    fiscal_year_start_month: u32,
    week_starts_sunday: bool,
) -> Result<Prepared> {
    let started = std::time::Instant::now();
    let as_of = session.as_of.0.ok_or_else(|| Error::Other("the KPI job needs --as-of YYYY-MM-DD".into()))?;
    let mut run = RunWriter::begin(&session.lake, "kpis", session.as_of);
    let mut values = run.table_sink("kpi_values", cell_schema())?;
    let computed = compute(session, job, catalog, fiscal_year_start_month, week_starts_sunday, &mut values).await?;
    let computed_ms = started.elapsed().as_millis() as u64;
    let interventions = intervention::plan(session, job, catalog, &computed.cells, &computed.units, as_of).await;
    let planned_ms = started.elapsed().as_millis() as u64 - computed_ms;
    run.record_inputs(session);
    run.set_playbook_version(format!("kpi_catalog {}", catalog.version));
    run.timing("compute", computed_ms);
    run.timing("interventions", planned_ms);
    for (id, ms) in &computed.timings_ms {
        run.timing(&format!("kpi:{id}"), *ms);
    }
    for (id, tables) in &computed.skipped {
        run.note(format!("KPI {id} not instrumented: needs {}", tables.join("; ")));
    }
    run.finish_table(values).await?;
    run.write_table("kpi_interventions", intervention::schema(), &[intervention::batch(&interventions)?]).await?;
    run.write_table("kpi_units", crate::layers::org::schema(), &[crate::layers::org::batch(&computed.members)?])
        .await?;
    let cal = Calendar { grain: Grain::Quarter, fiscal_year_start_month, week_starts_sunday };
    let current = period_of(&cal, as_of);
    let quarter = if current.end <= as_of { current } else { period_of(&cal, current.start - Days::new(1)) };
    let segments_started = std::time::Instant::now();
    let segments = segments(session, quarter).await?;
    run.timing("segments", segments_started.elapsed().as_millis() as u64);
    run.write_table("kpi_segments", segment_schema(), &[segment_batch(&segments, quarter)?]).await?;
    Ok(Prepared { run, as_of, computed, interventions, segments, segment_quarter: quarter, started })
}

/// Commits a prepared run (with the report files `reports` and the Markdown summary `md` already
/// written into it), then appends the interventions and the outcomes of earlier ones to the log.
pub async fn finish(
    session: &LakeSession,
    prepared: Prepared,
    catalog: &Catalog,
    reports: Vec<String>,
    md: String,
) -> Result<RunResult> {
    let Prepared { mut run, as_of, computed, interventions, started, .. } = prepared;
    run.timing("total_before_commit", started.elapsed().as_millis() as u64);
    let manifest = run.commit().await?;
    // The log is appended after the run is visible: a failed run recommends nothing, and a log
    // append that fails is redone by the next run (ids are stable, so nothing doubles).
    let recorded_at = manifest.committed_at.clone();
    let mut records = intervention::records(&interventions, catalog, as_of, &recorded_at);
    records.extend(intervention::outcomes(session, &computed.cells, as_of, &recorded_at).await?);
    let logged = crate::outputs::decision_log::append(session, records).await?;
    let mut text = md;
    text.push_str(&format!(
        "\n{} KPI values, {} interventions ({} new records in log/decision_trace)\nreport: {}\n",
        computed.values,
        interventions.len(),
        logged,
        reports.first().map(String::as_str).unwrap_or("-")
    ));
    Ok(RunResult { computed, interventions, text, manifest, reports, logged })
}

#[cfg(test)]
mod tests {
    use super::catalog::check_catalog;
    use super::severity::Spread;
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

    /// One seller with no parent: the unit the severity tests judge.
    fn seller_s() -> Unit {
        Unit {
            level: "seller".into(),
            id: "seller:S".into(),
            name: "S".into(),
            parent: None,
            head_id: None,
            head_name: None,
        }
    }

    #[test]
    fn a_rate_jump_within_noise_is_not_a_sudden_drop() {
        let (job, cat) = load(None, None).unwrap();
        let kpi = cat.kpis.iter().find(|k| k.id == "slip_rate").unwrap().clone();
        let d = |m: u32| NaiveDate::from_ymd_opt(2026, m, 1).unwrap();
        let list = periods(&Calendar::default(), d(1), d(4) + Days::new(29));
        let unit = seller_s();
        let status = |april: (f64, f64)| {
            let series: Series = [(d(1), (0.0, 90.0, 90)), (d(2), (0.0, 90.0, 90)), (d(3), (0.0, 95.0, 95))]
                .into_iter()
                .chain([(d(4), (april.0, april.1, april.1 as i64))])
                .collect();
            let cells = series_cells(
                &kpi,
                "month",
                &list,
                d(4) + Days::new(29),
                UnitSeries { unit: &unit, series: &series, spread: None },
                &job.severity,
            );
            cells.last().unwrap().status.clone()
        };
        // 0 of 95 slipped, then 1 of 92: a miss of a 0% target, but within noise (p ~ 0.3).
        assert_eq!(status((1.0, 92.0)), "observe");
        // 0 of 95, then 30 of 92: sudden and far beyond noise -> check the data first.
        assert_eq!(status((30.0, 92.0)), "diagnose_first");
    }

    #[test]
    fn a_miss_needs_its_interval_clear_of_the_target() {
        let (job, cat) = load(None, None).unwrap();
        let mut kpi = cat.kpis.iter().find(|k| k.id == "win_rate").unwrap().clone();
        kpi.min_n = 3;
        kpi.target = catalog::Target::Fixed { value: 0.5 };
        let d = |m: u32| NaiveDate::from_ymd_opt(2026, m, 1).unwrap();
        let list = periods(&Calendar::default(), d(1), d(3) + Days::new(30));
        let unit = seller_s();
        let cells = |won: f64, closed: f64| {
            let series: Series = (1..=3).map(|m| (d(m), (won, closed, closed as i64))).collect();
            series_cells(
                &kpi,
                "month",
                &list,
                d(3) + Days::new(30),
                UnitSeries { unit: &unit, series: &series, spread: None },
                &job.severity,
            )
        };
        // 1 of 3 won, three months running: 33% < 50%, but the Wilson interval (6.1%-79.2%, by hand:
        // (p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)) includes 50%: no miss, no coaching.
        let small = cells(1.0, 3.0);
        let last = small.last().unwrap();
        assert_eq!(last.status, "not_enough_data", "{}", last.reason);
        assert!(last.reason.contains("includes the target"), "{}", last.reason);
        assert!(small.iter().all(|c| !c.miss));
        assert!((last.ci_low.unwrap() - 0.0615).abs() < 1e-3 && (last.ci_high.unwrap() - 0.7923).abs() < 1e-3);
        // 10 of 40 won, three months running: 25%, interval 14.2%-40.2%, clear of 50%: coaching.
        let big = cells(10.0, 40.0);
        let last = big.last().unwrap();
        assert!((last.ci_high.unwrap() - 0.4024).abs() < 1e-3);
        assert_eq!(last.status, "coaching", "{}", last.reason);
        // An average (discount depth) below target on 4 deals is not a miss; on 25 it is.
        let mut avg = cat.kpis.iter().find(|k| k.id == "discount_depth").unwrap().clone();
        avg.min_n = 3;
        avg.target = catalog::Target::Fixed { value: 0.10 };
        let judge = |n: i64| {
            let series: Series = [(d(1), (0.2 * n as f64, n as f64, n))].into_iter().collect();
            series_cells(
                &avg,
                "month",
                &list[..1],
                d(3),
                UnitSeries { unit: &unit, series: &series, spread: None },
                &job.severity,
            )[0]
            .status
            .clone()
        };
        assert_eq!(judge(4), "not_enough_data");
        assert_eq!(judge(25), "observe");
        // With the spread of its 25 deals: all at 20% is a clear miss of 15%; 12 deals at 40% and 13
        // at 1.54% (the same 20% on average) give 12.3%-27.7% by hand (SS = 0.923, se = 0.0392),
        // which includes 15%: not a miss.
        avg.target = catalog::Target::Fixed { value: 0.15 };
        let spread_judge = |yy: f64| {
            let series: Series = [(d(1), (5.0, 25.0, 25))].into_iter().collect();
            let spread: Spread = [(d(1), (yy, 25.0, 5.0, 25))].into_iter().collect();
            let cells = series_cells(
                &avg,
                "month",
                &list[..1],
                d(3),
                UnitSeries { unit: &unit, series: &series, spread: Some(&spread) },
                &job.severity,
            );
            (cells[0].status.clone(), cells[0].ci_low.unwrap(), cells[0].ci_high.unwrap())
        };
        let (tight, lo, hi) = spread_judge(1.0);
        assert_eq!(tight, "observe");
        assert!((lo - 0.2).abs() < 1e-6 && (hi - 0.2).abs() < 1e-6, "{lo} {hi}");
        let wide_yy = 12.0 * 0.16 + 13.0 * (0.2f64 / 13.0).powi(2);
        let (wide, lo, hi) = spread_judge(wide_yy);
        assert_eq!(wide, "not_enough_data");
        assert!((lo - 0.1231).abs() < 1e-3 && (hi - 0.2769).abs() < 1e-3, "{lo} {hi}");
    }
}
