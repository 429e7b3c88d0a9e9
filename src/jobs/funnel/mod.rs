//! Journey funnels: declared steps (jobs/funnels.toml) turned into per-step conversion with Wilson
//! intervals, time to convert (median, p90) and breakdowns, published through the run writer.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde::Deserialize;

use crate::catalog::{LakeSession, quote};
use crate::error::{Error, Result};
use crate::publish::{Manifest, RunWriter};

const BUILTIN: &str = include_str!("../jobs/funnels.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct JourneyFile {
    journeys: Vec<Journey>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Journey {
    pub name: String,
    pub unit: String,
    #[serde(default)]
    pub description: String,
    pub default_window_days: u32,
    #[serde(default)]
    pub needs: Vec<String>,
    /// The staged table of the entity (joined on its `id`) for `--by` breakdowns.
    pub entity_table: Option<String>,
    /// SQL returning entity_id, entered_at and the breakdown columns.
    pub entities: String,
    pub steps: Vec<JourneyStep>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JourneyStep {
    pub name: String,
    /// SQL returning entity_id, reached_at.
    pub reached: String,
    pub window_days: Option<u32>,
}

/// The journeys of a file, or the built-in jobs/funnels.toml.
pub fn load(file: Option<&Path>) -> Result<Vec<Journey>> {
    let (name, parsed): (String, JourneyFile) = crate::error::read_declaration(file, "jobs/funnels.toml", BUILTIN)?;
    for j in &parsed.journeys {
        if j.steps.len() < 2 {
            return Err(Error::Config { file: name, message: format!("journey {} needs at least two steps", j.name) });
        }
    }
    Ok(parsed.journeys)
}

/// 95% Wilson score interval for k successes in n trials (good at small n and near 0 or 1).
pub fn wilson(k: i64, n: i64) -> Option<(f64, f64)> {
    if n <= 0 {
        return None;
    }
    let z = 1.959_963_984_540_054_f64;
    let (n, p) = (n as f64, k as f64 / n as f64);
    let denom = 1.0 + z * z / n;
    let centre = (p + z * z / (2.0 * n)) / denom;
    let half = z * ((p * (1.0 - p) / n) + z * z / (4.0 * n * n)).sqrt() / denom;
    Some(((centre - half).max(0.0), (centre + half).min(1.0)))
}

/// One step of one breakdown cell.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRow {
    pub journey: String,
    pub dimension: String,
    pub value: String,
    pub step_index: i64,
    pub step: String,
    pub next_step: Option<String>,
    pub entered: i64,
    pub converted: Option<i64>,
    pub rate: Option<f64>,
    pub ci_low: Option<f64>,
    pub ci_high: Option<f64>,
    pub from_first: Option<f64>,
    pub median_days: Option<f64>,
    pub p90_days: Option<f64>,
    pub drop_off: Option<i64>,
    pub out_of_order: i64,
    pub in_window: i64,
}

/// The SQL of one row per entity: breakdown columns, r_k (first reach of step k) and t_k (the
/// ordered, in-window reach), out-of-order and still-in-window flags. Returns it with the breakdown
/// column names. It reads `work.<journey>_*` tables computed here; `release_work` drops them.
pub async fn entity_sql(
    session: &LakeSession,
    journey: &Journey,
    extra_by: &[String],
) -> Result<(String, Vec<String>)> {
    let ctx = &session.ctx;
    let n = journey.steps.len();
    let plan_err = |what: &str, e: datafusion::error::DataFusionError| {
        Error::Other(format!("journey {}: {what} does not run: {e}", journey.name))
    };
    // Entities with their breakdown columns (and any --by column of the entity table).
    let mut entities = format!("SELECT * FROM ({}) AS e", session.fill(&journey.entities));
    if !extra_by.is_empty() {
        let table = journey.entity_table.as_ref().ok_or_else(|| {
            Error::Other(format!("journey {} declares no entity_table, so --by cannot add columns", journey.name))
        })?;
        let cols = extra_by.iter().map(|c| format!("x.{} AS {}", quote(c), quote(c))).collect::<Vec<_>>().join(", ");
        entities = format!(
            "SELECT e.*, {cols} FROM ({}) AS e LEFT JOIN {table} AS x ON CAST(x.id AS VARCHAR) = CAST(e.entity_id AS VARCHAR)",
            session.fill(&journey.entities)
        );
    }
    let entity_schema = ctx.sql(&entities).await.map_err(|e| plan_err("entities", e))?.schema().clone();
    let dims: Vec<String> = entity_schema
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .filter(|n| n != "entity_id" && n != "entered_at")
        .collect();

    // Entities and each step's first reaches are computed one at a time and held (a few columns
    // each), so the as-of views behind them never run side by side in one plan: at 1M deals one
    // combined plan needed more than 24 GB.
    let catalog = ctx.catalog("datafusion").ok_or_else(|| Error::Other("no default catalog".into()))?;
    if catalog.schema("work").is_none() {
        catalog.register_schema("work", Arc::new(datafusion::catalog::MemorySchemaProvider::new()))?;
    }
    let hold = |name: String, sql: String, what: &'static str| async move {
        let df = ctx.sql(&sql).await.map_err(|e| plan_err(what, e))?.cache().await?;
        ctx.deregister_table(format!("work.{name}").as_str())?;
        ctx.register_table(format!("work.{name}").as_str(), df.into_view())?;
        Ok::<String, Error>(format!("work.{name}"))
    };
    let e_table = hold(format!("{}_entities", journey.name), entities, "entities").await?;
    let mut sql = format!("WITH e AS (SELECT * FROM {e_table})");
    for (k, step) in journey.steps.iter().enumerate() {
        let reached = format!(
            "SELECT CAST(entity_id AS VARCHAR) AS entity_id, MIN(CAST(reached_at AS TIMESTAMP)) AS t FROM ({}) AS q GROUP BY 1",
            session.fill(&step.reached)
        );
        let table = hold(format!("{}_step{k}", journey.name), reached, "a step").await?;
        sql.push_str(&format!(", s{k} AS (SELECT * FROM {table})"));
    }
    let mut select = vec![
        "CAST(e.entity_id AS VARCHAR) AS entity_id".to_string(),
        "CAST(e.entered_at AS TIMESTAMP) AS entered_at".into(),
    ];
    select.extend(dims.iter().map(|d| format!("e.{}", quote(d))));
    select.extend((0..n).map(|k| format!("s{k}.t AS r{k}")));
    let joins: String =
        (0..n).map(|k| format!(" LEFT JOIN s{k} ON s{k}.entity_id = CAST(e.entity_id AS VARCHAR)")).collect();
    sql.push_str(&format!(", w0 AS (SELECT {}, s0.t AS t0 FROM e{joins})", select.join(", ")));
    // Windows still open are judged at the as-of date, or now for a run on everything landed.
    let end = if session.as_of.0.is_some() { session.as_of.end_literal() } else { "CAST(now() AS TIMESTAMP)".into() };
    for (k, step) in journey.steps.iter().enumerate().skip(1) {
        let w = step.window_days.unwrap_or(journey.default_window_days);
        let p = k - 1;
        sql.push_str(&format!(
            ", w{k} AS (SELECT *, \
               CASE WHEN t{p} IS NOT NULL AND r{k} >= t{p} AND r{k} < t{p} + INTERVAL '{w} days' THEN r{k} END AS t{k}, \
               (t{p} IS NOT NULL AND r{k} IS NOT NULL AND r{k} < t{p}) AS oo{k}, \
               (t{p} IS NOT NULL AND r{k} IS NULL AND t{p} + INTERVAL '{w} days' > {end}) AS open{k} \
             FROM w{p})"
        ));
    }
    sql.push_str(&format!(" SELECT * FROM w{}", n - 1));
    Ok((sql, dims))
}

/// Drops the held tables of `entity_sql`.
pub fn release_work(session: &LakeSession, journey: &Journey) -> Result<()> {
    session.ctx.deregister_table(format!("work.{}_entities", journey.name).as_str())?;
    for k in 0..journey.steps.len() {
        session.ctx.deregister_table(format!("work.{}_step{k}", journey.name).as_str())?;
    }
    Ok(())
}

/// Computes every step, overall ('(all)') and per breakdown column, as of the session's date.
pub async fn compute(
    session: &LakeSession,
    journey: &Journey,
    extra_by: &[String],
    cal: &Calendar,
) -> Result<Computed> {
    let ctx = &session.ctx;
    let n = journey.steps.len();
    let plan_err = |what: &str, e: datafusion::error::DataFusionError| {
        Error::Other(format!("journey {}: {what} does not run: {e}", journey.name))
    };
    let (sql, dims) = entity_sql(session, journey, extra_by).await?;
    let wide = ctx.sql(&sql).await.map_err(|e| plan_err("its steps", e))?.cache().await?;
    let view = format!("funnel_entities_{}", journey.name);
    ctx.register_table(view.as_str(), wide.into_view())?;

    let mut rows = Vec::new();
    let mut cells: Vec<(String, String)> = vec![("(all)".into(), "'(all)'".into())];
    cells.extend(dims.iter().map(|d| (d.clone(), format!("COALESCE(CAST({} AS VARCHAR), '(unknown)')", quote(d)))));
    for (dimension, value_expr) in &cells {
        let mut parts = Vec::new();
        for k in 0..n {
            let next = k + 1;
            let (converted, oo, open, days) = if next < n {
                (
                    format!("COUNT(t{next})"),
                    format!("SUM(CASE WHEN oo{next} THEN 1 ELSE 0 END)"),
                    format!("SUM(CASE WHEN open{next} THEN 1 ELSE 0 END)"),
                    format!("(date_part('epoch', t{next}) - date_part('epoch', t{k})) / 86400.0"),
                )
            } else {
                ("CAST(NULL AS BIGINT)".into(), "0".into(), "0".into(), "CAST(NULL AS DOUBLE)".into())
            };
            parts.push(format!(
                "SELECT {value_expr} AS value, CAST({k} AS BIGINT) AS step_index, COUNT(t{k}) AS entered, {converted} AS converted, \
                 CAST({oo} AS BIGINT) AS out_of_order, CAST({open} AS BIGINT) AS in_window, \
                 percentile_cont(0.5) WITHIN GROUP (ORDER BY d) AS median_days, \
                 percentile_cont(0.9) WITHIN GROUP (ORDER BY d) AS p90_days \
                 FROM (SELECT *, {days} AS d FROM {view}) AS x GROUP BY 1"
            ));
        }
        let q = format!("{} ORDER BY value, step_index", parts.join(" UNION ALL "));
        let batches = ctx.sql(&q).await.map_err(|e| plan_err("the step counts", e))?.collect().await?;
        let mut cell_rows: Vec<StepRow> = Vec::new();
        for b in &batches {
            let value = cast(b.column(0), &DataType::Utf8)?;
            let value = value.as_any().downcast_ref::<StringArray>().expect("utf8");
            let int = |i: usize| {
                cast(b.column(i), &DataType::Int64)
                    .map(|a| a.as_any().downcast_ref::<Int64Array>().expect("i64").clone())
            };
            let float = |i: usize| {
                cast(b.column(i), &DataType::Float64)
                    .map(|a| a.as_any().downcast_ref::<Float64Array>().expect("f64").clone())
            };
            let (idx, entered, converted, oo, open) = (int(1)?, int(2)?, int(3)?, int(4)?, int(5)?);
            let (median, p90) = (float(6)?, float(7)?);
            for r in 0..b.num_rows() {
                let k = idx.value(r) as usize;
                let opt_i = |a: &Int64Array| (!a.is_null(r)).then(|| a.value(r));
                let opt_f = |a: &Float64Array| (!a.is_null(r)).then(|| a.value(r));
                let e = entered.value(r);
                let c = opt_i(&converted);
                cell_rows.push(StepRow {
                    journey: journey.name.clone(),
                    dimension: dimension.clone(),
                    value: value.value(r).to_string(),
                    step_index: k as i64 + 1,
                    step: journey.steps[k].name.clone(),
                    next_step: journey.steps.get(k + 1).map(|s| s.name.clone()),
                    entered: e,
                    converted: c,
                    rate: c.and_then(|c| (e > 0).then(|| c as f64 / e as f64)),
                    ci_low: c.and_then(|c| wilson(c, e)).map(|w| w.0),
                    ci_high: c.and_then(|c| wilson(c, e)).map(|w| w.1),
                    from_first: None,
                    median_days: opt_f(&median),
                    p90_days: opt_f(&p90),
                    drop_off: c.map(|c| e - c),
                    out_of_order: opt_i(&oo).unwrap_or(0),
                    in_window: opt_i(&open).unwrap_or(0),
                });
            }
        }
        // Share of the cell's first-step entities that reached each step.
        let firsts: std::collections::HashMap<String, i64> =
            cell_rows.iter().filter(|r| r.step_index == 1).map(|r| (r.value.clone(), r.entered)).collect();
        for r in &mut cell_rows {
            r.from_first = firsts.get(&r.value).filter(|f| **f > 0).map(|f| r.entered as f64 / *f as f64);
        }
        rows.extend(cell_rows);
    }
    let periods = period_comparison(session, journey, &view, cal).await?;
    let cohorts = cohort_table(session, journey, &view).await?;
    ctx.deregister_table(view.as_str())?;
    release_work(session, journey)?;
    Ok(Computed { steps: rows, periods, cohorts })
}

pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("journey", DataType::Utf8, false),
        Field::new("dimension", DataType::Utf8, false),
        Field::new("value", DataType::Utf8, false),
        Field::new("step_index", DataType::Int64, false),
        Field::new("step", DataType::Utf8, false),
        Field::new("next_step", DataType::Utf8, true),
        Field::new("entered", DataType::Int64, false),
        Field::new("converted", DataType::Int64, true),
        Field::new("conversion_rate", DataType::Float64, true),
        Field::new("ci_low", DataType::Float64, true),
        Field::new("ci_high", DataType::Float64, true),
        Field::new("from_first", DataType::Float64, true),
        Field::new("median_days", DataType::Float64, true),
        Field::new("p90_days", DataType::Float64, true),
        Field::new("drop_off", DataType::Int64, true),
        Field::new("out_of_order", DataType::Int64, false),
        Field::new("in_window", DataType::Int64, false),
    ]))
}

pub fn batch(rows: &[StepRow]) -> Result<RecordBatch> {
    let s = |f: &dyn Fn(&StepRow) -> Option<String>| -> ArrayRef {
        Arc::new(StringArray::from(rows.iter().map(f).collect::<Vec<_>>()))
    };
    let i = |f: &dyn Fn(&StepRow) -> Option<i64>| -> ArrayRef {
        Arc::new(Int64Array::from(rows.iter().map(f).collect::<Vec<_>>()))
    };
    let x = |f: &dyn Fn(&StepRow) -> Option<f64>| -> ArrayRef {
        Arc::new(Float64Array::from(rows.iter().map(f).collect::<Vec<_>>()))
    };
    Ok(RecordBatch::try_new(
        schema(),
        vec![
            s(&|r| Some(r.journey.clone())),
            s(&|r| Some(r.dimension.clone())),
            s(&|r| Some(r.value.clone())),
            i(&|r| Some(r.step_index)),
            s(&|r| Some(r.step.clone())),
            s(&|r| r.next_step.clone()),
            i(&|r| Some(r.entered)),
            i(&|r| r.converted),
            x(&|r| r.rate),
            x(&|r| r.ci_low),
            x(&|r| r.ci_high),
            x(&|r| r.from_first),
            x(&|r| r.median_days),
            x(&|r| r.p90_days),
            i(&|r| r.drop_off),
            i(&|r| Some(r.out_of_order)),
            i(&|r| Some(r.in_window)),
        ],
    )?)
}

/// Runs the chosen journeys (all by default), publishes `funnel_steps` (overall) and
/// `funnel_breakdown` (per breakdown column), and returns the rows with a readable summary.
pub async fn run(
    session: &LakeSession,
    journeys: &[Journey],
    only: Option<&str>,
    extra_by: &[String],
    cal: &Calendar,
) -> Result<(Vec<StepRow>, String, Manifest)> {
    let mut all = Vec::new();
    let mut periods = Vec::new();
    let mut cohorts = Vec::new();
    let mut text = String::new();
    let mut run = RunWriter::begin(&session.lake, "funnel", session.as_of);
    run.record_inputs(session);
    let chosen: Vec<&Journey> = journeys.iter().filter(|j| only.is_none_or(|o| o == j.name)).collect();
    if chosen.is_empty() {
        return Err(Error::Other(format!(
            "no journey named {}; declared: {}",
            only.unwrap_or(""),
            journeys.iter().map(|j| j.name.as_str()).collect::<Vec<_>>().join(", ")
        )));
    }
    for journey in chosen {
        let missing: Vec<&str> = journey
            .needs
            .iter()
            .filter(|t| !session.landed(t).is_some_and(|l| l.present()))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            let line = format!("journey {} skipped: needs {} (not landed)\n", journey.name, missing.join(", "));
            text.push_str(&line);
            run.note(line.trim_end());
            continue;
        }
        let by: &[String] = if journey.entity_table.is_none() && !extra_by.is_empty() && only.is_none() {
            let line = format!("journey {}: --by ignored (it declares no entity_table)\n", journey.name);
            text.push_str(&line);
            run.note(line.trim_end());
            &[]
        } else {
            extra_by
        };
        let started = std::time::Instant::now();
        let computed = compute(session, journey, by, cal).await?;
        let rows = computed.steps;
        periods.extend(computed.periods);
        cohorts.extend(computed.cohorts);
        run.timing(&journey.name, started.elapsed().as_millis() as u64);
        text.push_str(&summary(journey, &rows, session.as_of.label()));
        all.extend(rows);
    }
    let (overall, breakdown): (Vec<StepRow>, Vec<StepRow>) = all.iter().cloned().partition(|r| r.dimension == "(all)");
    run.write_table("funnel_steps", schema(), &[batch(&overall)?]).await?;
    run.write_table("funnel_breakdown", schema(), &[batch(&breakdown)?]).await?;
    holm(&mut periods);
    text.push_str(&period_summary(&periods));
    run.write_table("funnel_periods", period_schema(), &[period_batch(&periods)?]).await?;
    run.write_table("funnel_cohorts", cohort_schema(), &[cohort_batch(&cohorts)?]).await?;
    let bottlenecks = bottlenecks(&all, &periods);
    text.push_str(&format!("bottlenecks ({}):\n", bottlenecks.len()));
    if bottlenecks.is_empty() {
        text.push_str("  none: no step or breakdown cell converts significantly below its peers or its own past\n");
    }
    for b in bottlenecks.iter().take(10) {
        text.push_str(&format!("  {}\n", b.sentence));
    }
    run.write_table("funnel_bottlenecks", bottleneck_schema(), &[bottleneck_batch(&bottlenecks)?]).await?;
    let mut names: Vec<&str> = overall.iter().map(|r| r.journey.as_str()).collect();
    names.dedup();
    for name in names {
        let steps: Vec<&StepRow> = overall.iter().filter(|r| r.journey == name).collect();
        let path = run
            .write_artifact(
                &format!("funnel_{name}.svg"),
                funnel_svg(name, &steps, &session.as_of.label()).into_bytes(),
            )
            .await?;
        text.push_str(&format!("chart: {path}\n"));
    }
    let mut md = format!("# Funnel bottlenecks, as of {}\n\n", session.as_of.label());
    for b in &bottlenecks {
        md.push_str(&format!("- {}\n", b.sentence));
    }
    run.write_artifact("funnel_bottlenecks.md", md.into_bytes()).await?;
    let manifest = run.commit().await?;
    Ok((all, text, manifest))
}

/// The funnel of one journey: steps (overall and broken down), period comparisons, cohorts.
pub struct Computed {
    pub steps: Vec<StepRow>,
    pub periods: Vec<PeriodRow>,
    pub cohorts: Vec<CohortRow>,
}

/// How entry periods are cut: grain, first month of the fiscal year, first day of the week.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Calendar {
    pub grain: Grain,
    pub fiscal_year_start_month: u32,
    pub week_starts_sunday: bool,
}

impl Default for Calendar {
    fn default() -> Self {
        Calendar { grain: Grain::Month, fiscal_year_start_month: 1, week_starts_sunday: false }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Grain {
    Week,
    Month,
    Quarter,
}

impl Calendar {
    /// SQL for the start of the period holding timestamp `t`.
    pub fn period_start(&self, t: &str) -> String {
        match self.grain {
            Grain::Week if self.week_starts_sunday => {
                format!("(date_trunc('week', {t} + INTERVAL '1 day') - INTERVAL '1 day')")
            }
            Grain::Week => format!("date_trunc('week', {t})"),
            Grain::Month => format!("date_trunc('month', {t})"),
            Grain::Quarter => {
                let shift = (self.fiscal_year_start_month.clamp(1, 12) - 1) % 3;
                format!("(date_trunc('quarter', {t} - INTERVAL '{shift} months') + INTERVAL '{shift} months')")
            }
        }
    }

    /// Periods per year, for the same-period-last-year comparison.
    fn per_year(&self) -> usize {
        match self.grain {
            Grain::Week => 52,
            Grain::Month => 12,
            Grain::Quarter => 4,
        }
    }

    fn name(&self) -> &'static str {
        match self.grain {
            Grain::Week => "week",
            Grain::Month => "month",
            Grain::Quarter => "quarter",
        }
    }
}

/// One step's conversion in one entry period, compared with a base period.
#[derive(Debug, Clone, PartialEq)]
pub struct PeriodRow {
    pub journey: String,
    pub step: String,
    pub next_step: String,
    pub grain: String,
    pub comparison: String,
    pub period: String,
    pub base_period: String,
    pub entered: i64,
    pub converted: i64,
    pub base_entered: i64,
    pub base_converted: i64,
    pub rate: f64,
    pub base_rate: f64,
    pub z: Option<f64>,
    pub p_value: Option<f64>,
    pub p_adjusted: Option<f64>,
    pub significant: bool,
}

/// Two-proportion z test (pooled), two-sided. None when either side is empty or nothing varies.
pub fn two_proportion(k1: i64, n1: i64, k2: i64, n2: i64) -> Option<(f64, f64)> {
    if n1 == 0 || n2 == 0 {
        return None;
    }
    let (n1f, n2f) = (n1 as f64, n2 as f64);
    let pooled = (k1 + k2) as f64 / (n1f + n2f);
    let se = (pooled * (1.0 - pooled) * (1.0 / n1f + 1.0 / n2f)).sqrt();
    if se == 0.0 {
        return None;
    }
    let z = (k1 as f64 / n1f - k2 as f64 / n2f) / se;
    Some((z, erfc(z.abs() / std::f64::consts::SQRT_2)))
}

/// Complementary error function (Numerical Recipes' erfcc Chebyshev fit: fractional error below
/// 1.2e-7 everywhere), enough for p-values.
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

/// Holm's step-down adjustment across every comparison of the run; significant = adjusted p < 0.05.
pub fn holm(rows: &mut [PeriodRow]) {
    let mut order: Vec<usize> = (0..rows.len()).filter(|&i| rows[i].p_value.is_some()).collect();
    order.sort_by(|&a, &b| rows[a].p_value.partial_cmp(&rows[b].p_value).expect("finite p"));
    let m = order.len();
    let mut running = 0.0f64;
    for (rank, &i) in order.iter().enumerate() {
        let adj = ((m - rank) as f64 * rows[i].p_value.expect("some")).min(1.0).max(running);
        running = adj;
        rows[i].p_adjusted = Some(adj);
        rows[i].significant = adj < 0.05;
    }
}

/// Conversion per step by entry period; the latest matured period against the one before and the
/// same period a year earlier.
async fn period_comparison(
    session: &LakeSession,
    journey: &Journey,
    view: &str,
    cal: &Calendar,
) -> Result<Vec<PeriodRow>> {
    let n = journey.steps.len();
    let period = cal.period_start("t0");
    let mut parts = Vec::new();
    for k in 0..n - 1 {
        parts.push(format!(
            "SELECT CAST({k} AS BIGINT) AS k, CAST({period} AS DATE) AS p, COUNT(t{k}) AS entered, COUNT(t{}) AS converted \
             FROM {view} WHERE t0 IS NOT NULL GROUP BY 1, 2",
            k + 1
        ));
    }
    let sql = format!(
        "SELECT k, CAST(p AS VARCHAR) AS p, entered, converted FROM ({}) AS u ORDER BY k, p",
        parts.join(" UNION ALL ")
    );
    let batches = session.ctx.sql(&sql).await?.collect().await?;
    let mut by_step: Vec<Vec<(String, i64, i64)>> = vec![Vec::new(); n - 1];
    for b in &batches {
        let k = cast(b.column(0), &DataType::Int64)?;
        let k = k.as_any().downcast_ref::<Int64Array>().expect("i64");
        let p = cast(b.column(1), &DataType::Utf8)?;
        let p = p.as_any().downcast_ref::<StringArray>().expect("utf8");
        let e = cast(b.column(2), &DataType::Int64)?;
        let e = e.as_any().downcast_ref::<Int64Array>().expect("i64");
        let c = cast(b.column(3), &DataType::Int64)?;
        let c = c.as_any().downcast_ref::<Int64Array>().expect("i64");
        for r in 0..b.num_rows() {
            by_step[k.value(r) as usize].push((p.value(r).to_string(), e.value(r), c.value(r)));
        }
    }
    // Compare only matured periods: the period is over and every entity in it has had the whole
    // conversion window, so a recent period is not called a drop just because deals are still open.
    let as_of_end = match session.as_of.0 {
        Some(d) => d.succ_opt().unwrap_or(d),
        None => chrono::Utc::now().date_naive(),
    };
    let mut out = Vec::new();
    for (k, series) in by_step.iter().enumerate() {
        // Entry to step k+1 can take every window up to it, so maturity counts them all.
        let window: u64 = journey.steps[1..=k + 1]
            .iter()
            .map(|st| u64::from(st.window_days.unwrap_or(journey.default_window_days)))
            .sum();
        let matured = |start: &str| {
            shift_period(start, cal, -1)
                .and_then(|next| chrono::NaiveDate::parse_from_str(&next, "%Y-%m-%d").ok())
                .is_some_and(|next| next + chrono::Days::new(window) <= as_of_end)
        };
        let complete: Vec<&(String, i64, i64)> = series.iter().filter(|r| matured(&r.0)).collect();
        let Some(current) = complete.last() else { continue };
        let find = |back: usize| -> Option<&(String, i64, i64)> {
            let idx = series.iter().position(|r| r.0 == current.0)?;
            // Periods with no entries are absent from the series, so step back by date, not index.
            let target = shift_period(&current.0, cal, back as i64)?;
            series[..idx].iter().find(|r| r.0 == target)
        };
        for (comparison, back) in [("previous", 1usize), ("last_year", cal.per_year())] {
            let Some(base) = find(back) else { continue };
            let test = two_proportion(current.2, current.1, base.2, base.1);
            out.push(PeriodRow {
                journey: journey.name.clone(),
                step: journey.steps[k].name.clone(),
                next_step: journey.steps[k + 1].name.clone(),
                grain: cal.name().into(),
                comparison: comparison.into(),
                period: current.0.clone(),
                base_period: base.0.clone(),
                entered: current.1,
                converted: current.2,
                base_entered: base.1,
                base_converted: base.2,
                rate: if current.1 > 0 { current.2 as f64 / current.1 as f64 } else { 0.0 },
                base_rate: if base.1 > 0 { base.2 as f64 / base.1 as f64 } else { 0.0 },
                z: test.map(|t| t.0),
                p_value: test.map(|t| t.1),
                p_adjusted: None,
                significant: false,
            });
        }
    }
    Ok(out)
}

/// The start of the period `back` periods before the one starting on `start` (YYYY-MM-DD);
/// a negative `back` moves forward.
fn shift_period(start: &str, cal: &Calendar, back: i64) -> Option<String> {
    let d = chrono::NaiveDate::parse_from_str(start, "%Y-%m-%d").ok()?;
    let months = |n: i64| {
        if n >= 0 {
            d.checked_sub_months(chrono::Months::new(n as u32))
        } else {
            d.checked_add_months(chrono::Months::new((-n) as u32))
        }
    };
    let shifted = match cal.grain {
        Grain::Week => d.checked_sub_signed(chrono::Duration::days(7 * back))?,
        Grain::Month => months(back)?,
        Grain::Quarter => months(3 * back)?,
    };
    Some(shifted.format("%Y-%m-%d").to_string())
}

fn period_summary(rows: &[PeriodRow]) -> String {
    let called: Vec<&PeriodRow> = rows.iter().filter(|r| r.significant).collect();
    let mut out = format!(
        "period comparison: {} tests, {} significant after Holm correction (p < 0.05)\n",
        rows.iter().filter(|r| r.p_value.is_some()).count(),
        called.len()
    );
    for r in called {
        out.push_str(&format!(
            "  {} {} -> {}: {:.1}% in the {} from {} vs {:.1}% in {} ({}; n={} vs {}, adjusted p={:.3})\n",
            r.journey,
            r.step,
            r.next_step,
            r.rate * 100.0,
            r.grain,
            r.period,
            r.base_rate * 100.0,
            r.base_period,
            if r.rate < r.base_rate { "down" } else { "up" },
            r.entered,
            r.base_entered,
            r.p_adjusted.unwrap_or(1.0)
        ));
    }
    out
}

pub fn period_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("journey", DataType::Utf8, false),
        Field::new("step", DataType::Utf8, false),
        Field::new("next_step", DataType::Utf8, false),
        Field::new("grain", DataType::Utf8, false),
        Field::new("comparison", DataType::Utf8, false),
        Field::new("period", DataType::Utf8, false),
        Field::new("base_period", DataType::Utf8, false),
        Field::new("entered", DataType::Int64, false),
        Field::new("converted", DataType::Int64, false),
        Field::new("base_entered", DataType::Int64, false),
        Field::new("base_converted", DataType::Int64, false),
        Field::new("conversion_rate", DataType::Float64, false),
        Field::new("base_conversion_rate", DataType::Float64, false),
        Field::new("change", DataType::Float64, false),
        Field::new("z", DataType::Float64, true),
        Field::new("p_value", DataType::Float64, true),
        Field::new("p_adjusted", DataType::Float64, true),
        Field::new("significant", DataType::Boolean, false),
    ]))
}

fn period_batch(rows: &[PeriodRow]) -> Result<RecordBatch> {
    let s = |f: &dyn Fn(&PeriodRow) -> String| -> ArrayRef {
        Arc::new(StringArray::from(rows.iter().map(f).collect::<Vec<_>>()))
    };
    let i = |f: &dyn Fn(&PeriodRow) -> i64| -> ArrayRef {
        Arc::new(Int64Array::from(rows.iter().map(f).collect::<Vec<_>>()))
    };
    let x = |f: &dyn Fn(&PeriodRow) -> Option<f64>| -> ArrayRef {
        Arc::new(Float64Array::from(rows.iter().map(f).collect::<Vec<_>>()))
    };
    Ok(RecordBatch::try_new(
        period_schema(),
        vec![
            s(&|r| r.journey.clone()),
            s(&|r| r.step.clone()),
            s(&|r| r.next_step.clone()),
            s(&|r| r.grain.clone()),
            s(&|r| r.comparison.clone()),
            s(&|r| r.period.clone()),
            s(&|r| r.base_period.clone()),
            i(&|r| r.entered),
            i(&|r| r.converted),
            i(&|r| r.base_entered),
            i(&|r| r.base_converted),
            x(&|r| Some(r.rate)),
            x(&|r| Some(r.base_rate)),
            x(&|r| Some(r.rate - r.base_rate)),
            x(&|r| r.z),
            x(&|r| r.p_value),
            x(&|r| r.p_adjusted),
            Arc::new(datafusion::arrow::array::BooleanArray::from(
                rows.iter().map(|r| r.significant).collect::<Vec<_>>(),
            )),
        ],
    )?)
}

/// Entry month x months since entry: the share of the month's entities that reached the journey's
/// last step by the end of that month. Cells not yet observable on the as-of date are left out.
#[derive(Debug, Clone, PartialEq)]
pub struct CohortRow {
    pub journey: String,
    pub cohort_month: String,
    pub months_since_entry: i64,
    pub entered: i64,
    pub reached_last: i64,
}

async fn cohort_table(session: &LakeSession, journey: &Journey, view: &str) -> Result<Vec<CohortRow>> {
    let last = journey.steps.len() - 1;
    let end = if session.as_of.0.is_some() { session.as_of.end_literal() } else { "CAST(now() AS TIMESTAMP)".into() };
    // Months counted on a year * 12 + month index, so "by the end of month m" is an integer compare.
    let mi =
        |x: &str| format!("(CAST(date_part('year', {x}) AS BIGINT) * 12 + CAST(date_part('month', {x}) AS BIGINT))");
    let sql = format!(
        "WITH c AS (SELECT date_trunc('month', t0) AS cohort, {cohort_mi} AS cm, {last_mi} AS lm FROM {view} WHERE t0 IS NOT NULL), \
              m AS (SELECT value AS months FROM generate_series(0, 24)) \
         SELECT CAST(CAST(c.cohort AS DATE) AS VARCHAR) AS cohort_month, m.months, COUNT(*) AS entered, \
                SUM(CASE WHEN c.lm IS NOT NULL AND c.lm - c.cm <= m.months THEN 1 ELSE 0 END) AS reached \
         FROM c CROSS JOIN m \
         WHERE c.cm + m.months + 1 <= {end_mi} \
         GROUP BY 1, 2 ORDER BY 1, 2",
        cohort_mi = mi("t0"),
        last_mi = mi(&format!("t{last}")),
        end_mi = mi(&end),
    );
    let batches = session.ctx.sql(&sql).await?.collect().await?;
    let mut out = Vec::new();
    for b in &batches {
        let cohort = cast(b.column(0), &DataType::Utf8)?;
        let cohort = cohort.as_any().downcast_ref::<StringArray>().expect("utf8");
        let ints: Vec<Int64Array> = (1..4)
            .map(|i| {
                cast(b.column(i), &DataType::Int64)
                    .map(|a| a.as_any().downcast_ref::<Int64Array>().expect("i64").clone())
            })
            .collect::<std::result::Result<_, _>>()?;
        for r in 0..b.num_rows() {
            out.push(CohortRow {
                journey: journey.name.clone(),
                cohort_month: cohort.value(r).to_string(),
                months_since_entry: ints[0].value(r),
                entered: ints[1].value(r),
                reached_last: ints[2].value(r),
            });
        }
    }
    Ok(out)
}

pub fn cohort_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("journey", DataType::Utf8, false),
        Field::new("cohort_month", DataType::Utf8, false),
        Field::new("months_since_entry", DataType::Int64, false),
        Field::new("entered", DataType::Int64, false),
        Field::new("reached_last_step", DataType::Int64, false),
        Field::new("cumulative_conversion", DataType::Float64, false),
    ]))
}

fn cohort_batch(rows: &[CohortRow]) -> Result<RecordBatch> {
    Ok(RecordBatch::try_new(
        cohort_schema(),
        vec![
            Arc::new(StringArray::from(rows.iter().map(|r| r.journey.clone()).collect::<Vec<_>>())),
            Arc::new(StringArray::from(rows.iter().map(|r| r.cohort_month.clone()).collect::<Vec<_>>())),
            Arc::new(Int64Array::from(rows.iter().map(|r| r.months_since_entry).collect::<Vec<_>>())),
            Arc::new(Int64Array::from(rows.iter().map(|r| r.entered).collect::<Vec<_>>())),
            Arc::new(Int64Array::from(rows.iter().map(|r| r.reached_last).collect::<Vec<_>>())),
            Arc::new(Float64Array::from(
                rows.iter()
                    .map(|r| if r.entered > 0 { r.reached_last as f64 / r.entered as f64 } else { 0.0 })
                    .collect::<Vec<_>>(),
            )),
        ],
    )?)
}

/// A step or breakdown cell converting significantly below its peers or its own past, in words.
#[derive(Debug, Clone, PartialEq)]
pub struct Bottleneck {
    pub journey: String,
    pub kind: String,
    pub dimension: String,
    pub value: String,
    pub step: String,
    pub next_step: String,
    pub rate: f64,
    pub baseline_rate: f64,
    pub entered: i64,
    pub baseline_entered: i64,
    pub p_adjusted: f64,
    pub z: f64,
    pub sentence: String,
}

/// Cells needing at least this many entities before they are tested against their peers.
const MIN_CELL: i64 = 30;

/// Peers: each breakdown cell against the rest of its step (two-proportion test, Holm over all
/// cells). Own past: significant drops from the period comparison. Worst (most negative z) first.
pub fn bottlenecks(rows: &[StepRow], periods: &[PeriodRow]) -> Vec<Bottleneck> {
    let overall: std::collections::HashMap<(&str, i64), &StepRow> =
        rows.iter().filter(|r| r.dimension == "(all)").map(|r| ((r.journey.as_str(), r.step_index), r)).collect();
    let mut tests: Vec<(f64, f64, &StepRow, i64, i64)> = Vec::new();
    for cell in rows.iter().filter(|r| r.dimension != "(all)" && r.entered >= MIN_CELL) {
        let (Some(c), Some(all)) = (cell.converted, overall.get(&(cell.journey.as_str(), cell.step_index))) else {
            continue;
        };
        let (rest_n, rest_k) = (all.entered - cell.entered, all.converted.unwrap_or(0) - c);
        if rest_n < MIN_CELL {
            continue;
        }
        if let Some((z, p)) = two_proportion(c, cell.entered, rest_k, rest_n) {
            tests.push((z, p, cell, rest_k, rest_n));
        }
    }
    // Holm over the peer tests.
    let mut order: Vec<usize> = (0..tests.len()).collect();
    order.sort_by(|&a, &b| tests[a].1.partial_cmp(&tests[b].1).expect("finite p"));
    let mut adjusted = vec![1.0; tests.len()];
    let mut running = 0.0f64;
    for (rank, &i) in order.iter().enumerate() {
        running = ((tests.len() - rank) as f64 * tests[i].1).min(1.0).max(running);
        adjusted[i] = running;
    }
    let mut out = Vec::new();
    for (i, (z, _, cell, rest_k, rest_n)) in tests.iter().enumerate() {
        if *z >= 0.0 || adjusted[i] >= 0.05 {
            continue;
        }
        let rate = cell.rate.unwrap_or(0.0);
        let base = *rest_k as f64 / *rest_n as f64;
        let (lo, hi) = (cell.ci_low.unwrap_or(0.0), cell.ci_high.unwrap_or(0.0));
        out.push(Bottleneck {
            journey: cell.journey.clone(),
            kind: "below_peers".into(),
            dimension: cell.dimension.clone(),
            value: cell.value.clone(),
            step: cell.step.clone(),
            next_step: cell.next_step.clone().unwrap_or_default(),
            rate,
            baseline_rate: base,
            entered: cell.entered,
            baseline_entered: *rest_n,
            p_adjusted: adjusted[i],
            z: *z,
            sentence: format!(
                "{}: {} -> {} for {} = {} converts {:.1}% (95% CI {:.1}-{:.1}%, n={}) vs {:.1}% for the rest (n={}); adjusted p={:.3}",
                cell.journey,
                cell.step,
                cell.next_step.as_deref().unwrap_or("-"),
                cell.dimension,
                cell.value,
                rate * 100.0,
                lo * 100.0,
                hi * 100.0,
                cell.entered,
                base * 100.0,
                rest_n,
                adjusted[i]
            ),
        });
    }
    for p in periods.iter().filter(|p| p.significant && p.rate < p.base_rate) {
        out.push(Bottleneck {
            journey: p.journey.clone(),
            kind: format!("below_{}", p.comparison),
            dimension: "(all)".into(),
            value: "(all)".into(),
            step: p.step.clone(),
            next_step: p.next_step.clone(),
            rate: p.rate,
            baseline_rate: p.base_rate,
            entered: p.entered,
            baseline_entered: p.base_entered,
            p_adjusted: p.p_adjusted.unwrap_or(1.0),
            z: p.z.unwrap_or(0.0),
            sentence: format!(
                "{}: {} -> {} fell from {:.1}% ({} {}, n={}) to {:.1}% ({} {}, n={}); adjusted p={:.3}",
                p.journey,
                p.step,
                p.next_step,
                p.base_rate * 100.0,
                p.grain,
                p.base_period,
                p.base_entered,
                p.rate * 100.0,
                p.grain,
                p.period,
                p.entered,
                p.p_adjusted.unwrap_or(1.0)
            ),
        });
    }
    out.sort_by(|a, b| a.z.partial_cmp(&b.z).expect("finite z"));
    out
}

pub fn bottleneck_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("journey", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("dimension", DataType::Utf8, false),
        Field::new("value", DataType::Utf8, false),
        Field::new("step", DataType::Utf8, false),
        Field::new("next_step", DataType::Utf8, false),
        Field::new("conversion_rate", DataType::Float64, false),
        Field::new("baseline_rate", DataType::Float64, false),
        Field::new("entered", DataType::Int64, false),
        Field::new("baseline_entered", DataType::Int64, false),
        Field::new("z", DataType::Float64, false),
        Field::new("p_adjusted", DataType::Float64, false),
        Field::new("sentence", DataType::Utf8, false),
    ]))
}

fn bottleneck_batch(rows: &[Bottleneck]) -> Result<RecordBatch> {
    let s = |f: &dyn Fn(&Bottleneck) -> String| -> ArrayRef {
        Arc::new(StringArray::from(rows.iter().map(f).collect::<Vec<_>>()))
    };
    let i = |f: &dyn Fn(&Bottleneck) -> i64| -> ArrayRef {
        Arc::new(Int64Array::from(rows.iter().map(f).collect::<Vec<_>>()))
    };
    let x = |f: &dyn Fn(&Bottleneck) -> f64| -> ArrayRef {
        Arc::new(Float64Array::from(rows.iter().map(f).collect::<Vec<_>>()))
    };
    Ok(RecordBatch::try_new(
        bottleneck_schema(),
        vec![
            s(&|r| r.journey.clone()),
            s(&|r| r.kind.clone()),
            s(&|r| r.dimension.clone()),
            s(&|r| r.value.clone()),
            s(&|r| r.step.clone()),
            s(&|r| r.next_step.clone()),
            x(&|r| r.rate),
            x(&|r| r.baseline_rate),
            i(&|r| r.entered),
            i(&|r| r.baseline_entered),
            x(&|r| r.z),
            x(&|r| r.p_adjusted),
            s(&|r| r.sentence.clone()),
        ],
    )?)
}

/// A self-contained SVG funnel: one bar per step, width by entities, with counts, share of the first
/// step, conversion to the next step and median days. No fonts or scripts from outside.
pub fn funnel_svg(journey: &str, steps: &[&StepRow], as_of: &str) -> String {
    let esc = |t: &str| t.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    let (w, bar_h, gap, top, left) = (760.0, 34.0, 30.0, 48.0, 170.0);
    let max = steps.iter().map(|s| s.entered).max().unwrap_or(1).max(1) as f64;
    let height = top + steps.len() as f64 * (bar_h + gap) + 10.0;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{height}\" viewBox=\"0 0 {w} {height}\" font-family=\"sans-serif\" font-size=\"13\">\n\
         <title>{} funnel as of {}</title>\n<text x=\"10\" y=\"24\" font-size=\"16\" font-weight=\"bold\">{} funnel, as of {}</text>\n",
        esc(journey),
        esc(as_of),
        esc(journey),
        esc(as_of)
    );
    let span = w - left - 20.0;
    for (i, s) in steps.iter().enumerate() {
        let y = top + i as f64 * (bar_h + gap);
        let bw = (s.entered as f64 / max * span).max(1.0);
        let x = left + (span - bw) / 2.0;
        svg.push_str(&format!(
            "<text x=\"10\" y=\"{:.1}\">{}</text>\n<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{bw:.1}\" height=\"{bar_h}\" fill=\"#a9c7ea\" rx=\"3\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#10243a\" font-weight=\"bold\">{} ({})</text>\n",
            y + bar_h / 2.0 + 4.0,
            esc(&s.step),
            left + span / 2.0,
            y + bar_h / 2.0 + 4.0,
            s.entered,
            pct(s.from_first)
        ));
        if let (Some(next), Some(rate)) = (&s.next_step, s.rate) {
            svg.push_str(&format!(
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#444444\">{:.1}% to {} (95% CI {}-{}), median {} d</text>\n",
                left + span / 2.0,
                y + bar_h + gap / 2.0 + 5.0,
                rate * 100.0,
                esc(next),
                pct(s.ci_low),
                pct(s.ci_high),
                days(s.median_days)
            ));
        }
    }
    svg.push_str("</svg>\n");
    svg
}

fn pct(x: Option<f64>) -> String {
    x.map(|v| format!("{:.1}%", v * 100.0)).unwrap_or_else(|| "-".into())
}

fn days(x: Option<f64>) -> String {
    x.map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into())
}

pub fn summary(journey: &Journey, rows: &[StepRow], as_of: String) -> String {
    let mut out = format!("journey {} (unit: {}), as of {as_of}\n", journey.name, journey.unit);
    out.push_str(&format!(
        "  {:<22} {:>9} {:>9} {:>7} {:>15} {:>10} {:>8} {:>8} {:>9}\n",
        "step", "entered", "converted", "rate", "95% CI", "of first", "median d", "p90 d", "in window"
    ));
    for r in rows.iter().filter(|r| r.dimension == "(all)") {
        out.push_str(&format!(
            "  {:<22} {:>9} {:>9} {:>7} {:>15} {:>10} {:>8} {:>8} {:>9}\n",
            r.step,
            r.entered,
            r.converted.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
            pct(r.rate),
            match (r.ci_low, r.ci_high) {
                (Some(l), Some(h)) => format!("{:.1}-{:.1}%", l * 100.0, h * 100.0),
                _ => "-".into(),
            },
            pct(r.from_first),
            days(r.median_days),
            days(r.p90_days),
            r.in_window
        ));
        if r.out_of_order > 0 {
            out.push_str(&format!(
                "    {} reached {} before {}: not counted as conversions\n",
                r.out_of_order,
                r.next_step.as_deref().unwrap_or("-"),
                r.step
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_interval_matches_worked_values() {
        // 81 of 263: p = 0.30798; z^2 = 3.8415; centre = (0.30798 + 3.8415/526) / (1 + 3.8415/263)
        // = 0.31528 / 1.014606 = 0.31074; half = 1.96 * sqrt(0.30798*0.69202/263 + 3.8415/(4*263^2)) / 1.014606
        // = 1.96 * sqrt(0.00081037 + 0.00001389) / 1.014606 = 0.05545; interval 0.2553 to 0.3662.
        let (lo, hi) = wilson(81, 263).unwrap();
        assert!((lo - 0.2553).abs() < 5e-4 && (hi - 0.3662).abs() < 5e-4, "{lo} {hi}");
        // 0 of 10 still has an upper bound: z^2/(n+z^2) = 3.8415/13.8415 = 0.2775.
        let (lo, hi) = wilson(0, 10).unwrap();
        assert_eq!(lo, 0.0);
        assert!((hi - 0.2775).abs() < 5e-4, "{hi}");
        assert!(wilson(0, 0).is_none());
    }

    #[test]
    fn two_proportion_test_matches_a_worked_example() {
        // 30/100 vs 50/100: pooled 0.4; se = sqrt(0.24 * 0.02) = 0.069282; z = -0.2 / 0.069282
        // = -2.88675; two-sided p = 0.003892 (normal tables).
        let (z, p) = two_proportion(30, 100, 50, 100).unwrap();
        assert!((z + 2.886_75).abs() < 1e-4, "{z}");
        assert!((p - 0.003_892).abs() < 2e-6, "{p}");
        assert!(two_proportion(0, 0, 1, 2).is_none());
        assert!((erfc(0.0) - 1.0).abs() < 1e-7 && (erfc(1.0) - 0.157_299_2).abs() < 2e-7);
    }

    #[test]
    fn holm_adjusts_in_order_and_keeps_monotone() {
        let row = |p: f64| PeriodRow {
            journey: "j".into(),
            step: "a".into(),
            next_step: "b".into(),
            grain: "month".into(),
            comparison: "previous".into(),
            period: "2024-01-01".into(),
            base_period: "2023-12-01".into(),
            entered: 1,
            converted: 1,
            base_entered: 1,
            base_converted: 1,
            rate: 0.0,
            base_rate: 0.0,
            z: None,
            p_value: Some(p),
            p_adjusted: None,
            significant: false,
        };
        // p = 0.01, 0.04, 0.03 -> sorted 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04 -> max 0.06).
        let mut rows = vec![row(0.01), row(0.04), row(0.03)];
        holm(&mut rows);
        let adj: Vec<f64> = rows.iter().map(|r| r.p_adjusted.unwrap()).collect();
        assert!(
            (adj[0] - 0.03).abs() < 1e-12 && (adj[1] - 0.06).abs() < 1e-12 && (adj[2] - 0.06).abs() < 1e-12,
            "{adj:?}"
        );
        assert_eq!(rows.iter().map(|r| r.significant).collect::<Vec<_>>(), [true, false, false]);
    }

    #[test]
    fn fiscal_quarters_and_sunday_weeks_shift_the_period() {
        let cal = Calendar { grain: Grain::Quarter, fiscal_year_start_month: 2, week_starts_sunday: false };
        assert!(cal.period_start("t").contains("INTERVAL '1 months'"));
        assert_eq!(shift_period("2024-02-01", &cal, 4).as_deref(), Some("2023-02-01"));
        let weeks = Calendar { grain: Grain::Week, week_starts_sunday: true, ..Calendar::default() };
        assert_eq!(shift_period("2024-03-03", &weeks, 1).as_deref(), Some("2024-02-25"));
    }

    #[test]
    fn builtin_journeys_load() {
        let j = load(None).unwrap();
        assert_eq!(j.iter().map(|j| j.name.as_str()).collect::<Vec<_>>(), ["sales_led", "self_serve"]);
        assert_eq!(j[0].steps.len(), 5);
    }
}
