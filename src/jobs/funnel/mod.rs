//! Journey funnels: declared steps (jobs/funnels.toml) turned into per-step conversion with Wilson
//! intervals, time to convert (median, p90) and breakdowns, published through the run writer.

pub mod bottlenecks;
pub mod chart;
pub mod cohorts;
pub mod periods;

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde::Deserialize;

use bottlenecks::{bottleneck_batch, bottleneck_schema, bottlenecks, leaky_dimensions};
use chart::funnel_svg;
use cohorts::{CohortRow, cohort_batch, cohort_schema, cohort_table};
use periods::{PeriodRow, holm, period_batch, period_comparison, period_schema, period_summary};

use crate::error::{Error, Result};
use crate::jobs::calendar::Calendar;
use crate::lake::contract::quote;
use crate::layers::LakeSession;
use crate::outputs::{Manifest, RunWriter};
use crate::stats::wilson;

const BUILTIN: &str = repo_file!("jobs/funnels.toml");

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
    /// Tables and lake-profile concepts the step reads: when one is missing the step is skipped
    /// (said in the output) and conversions run from the previous present step.
    #[serde(default)]
    pub needs: Vec<String>,
}

/// A journey as this lake can measure it: the steps kept and why the others were skipped.
pub struct Effective {
    pub journey: Journey,
    pub skipped: Vec<String>,
}

/// The journeys this lake is measured with: a file given on the command line, else the journeys
/// its lake profile ships (an import's mapping writes them there), else jobs/funnels.toml.
pub fn load_for(session: &LakeSession, file: Option<&Path>) -> Result<Vec<Journey>> {
    if file.is_some() || session.profile.journeys.is_empty() {
        return load(file);
    }
    let name = format!("the journeys of the lake profile {}", session.profile.source);
    let value = toml::Value::Array(session.profile.journeys.iter().cloned().map(toml::Value::Table).collect());
    let journeys: Vec<Journey> =
        value.try_into().map_err(|e: toml::de::Error| Error::Config { file: name.clone(), message: e.to_string() })?;
    check(&name, &journeys)?;
    Ok(journeys)
}

/// The journeys of a file, or the built-in jobs/funnels.toml.
pub fn load(file: Option<&Path>) -> Result<Vec<Journey>> {
    let (name, parsed): (String, JourneyFile) = crate::error::read_declaration(file, "jobs/funnels.toml", BUILTIN)?;
    check(&name, &parsed.journeys)?;
    Ok(parsed.journeys)
}

fn check(name: &str, journeys: &[Journey]) -> Result<()> {
    for j in journeys {
        if j.steps.len() < 2 {
            return Err(Error::Config {
                file: name.to_string(),
                message: format!("journey {} needs at least two steps", j.name),
            });
        }
    }
    Ok(())
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
/// column names and the journey as measured: a step whose `needs` the lake lacks, or that no
/// entity reached while a later step was reached (its data is not in this lake: under the ordered
/// rule nobody could pass it), or whose every reach is at the instant of a later step's (a proxy
/// of that step, not a step of its own), is skipped and said, never counted as zero. It reads
/// `work.<journey>_reaches`, computed here; `release_work` drops it.
pub async fn entity_sql(
    session: &LakeSession,
    journey: &Journey,
    extra_by: &[String],
) -> Result<(String, Vec<String>, Effective)> {
    let ctx = &session.ctx;
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

    // Every step's first reaches (one aggregate over the union of the steps' reaches, a column
    // per step) are held, from the staged tables `warm_for` holds.
    // One table of reaches replaced one per step, each counted, checked and then joined to the
    // entities on its own: on a million deals the five joins took a second.
    let catalog = ctx.catalog("datafusion").ok_or_else(|| Error::Other("no default catalog".into()))?;
    if catalog.schema("work").is_none() {
        catalog.register_schema("work", Arc::new(datafusion::catalog::MemorySchemaProvider::new()))?;
    }
    // Every step is read in its own query below: the staged tables they share are computed once,
    // with every column any of them reads.
    let mut queries = vec![entities.clone()];
    queries.extend(journey.steps.iter().map(|s| session.fill(&s.reached)));
    crate::layers::shared::warm_for(session, &queries).await?;
    let mut present: Vec<usize> = Vec::new();
    let mut branches = Vec::new();
    let mut skipped = Vec::new();
    for (k, step) in journey.steps.iter().enumerate() {
        let missing = session.missing(&step.needs);
        if k > 0 && !missing.is_empty() {
            skipped.push(format!("step {} skipped: needs {}", step.name, missing.join("; ")));
            continue;
        }
        let branch = format!(
            "SELECT CAST(entity_id AS VARCHAR) AS entity_id, CAST(reached_at AS TIMESTAMP(6)) AS t, CAST({k} AS INT) AS k FROM ({}) AS q",
            session.fill(&step.reached)
        );
        // Planned alone first, so a step that does not plan is named.
        ctx.sql(&branch).await.map_err(|e| plan_err(&format!("step {}", step.name), e))?;
        branches.push(branch);
        present.push(k);
    }
    let firsts: Vec<String> = present.iter().map(|k| format!("MIN(CASE WHEN k = {k} THEN t END) AS r{k}")).collect();
    let reaches_sql =
        format!("SELECT entity_id, {} FROM ({}) AS u GROUP BY 1", firsts.join(", "), branches.join(" UNION ALL "));
    let reaches = format!("work.{}_reaches", journey.name);
    hold_rows(session, &reaches, ctx.sql(&reaches_sql).await.map_err(|e| plan_err("the steps", e))?).await?;
    // Entities (of any id, as each step's query returns them) with a first reach of each step.
    let counts = present.iter().map(|k| format!("COUNT(r{k})")).collect::<Vec<_>>().join(", ");
    let counted = counts_of(session, &format!("SELECT {counts} FROM {reaches}")).await?;
    let mut held: Vec<Option<i64>> = vec![None; journey.steps.len()];
    for (at, k) in present.iter().enumerate() {
        held[*k] = Some(counted.get(at).copied().unwrap_or(0));
    }
    let reached_later = |k: usize| held[k + 1..].iter().flatten().any(|c| *c > 0);
    let mut kept = Vec::new();
    for (k, h) in held.iter().enumerate() {
        match h {
            Some(0) if k > 0 && reached_later(k) => skipped.push(format!(
                "step {} skipped: no entity reached it while later steps were reached, so this lake does not record it",
                journey.steps[k].name
            )),
            // A stand-in is only called on enough reaches that coincidence cannot explain it.
            Some(count) if k > 0 && *count >= MIN_PROXY_REACHES => {
                let later: Vec<usize> = (k + 1..held.len()).filter(|i| held[*i].is_some()).collect();
                match proxy_of(session, &reaches, k, &later).await? {
                    Some(j) => skipped.push(format!(
                        "step {} skipped: each of its {count} reaches is at the very instant of a later step's ({}), so this lake records it only as that step",
                        journey.steps[k].name, journey.steps[j].name
                    )),
                    None => kept.push(k),
                }
            }
            Some(_) => kept.push(k),
            None => {}
        }
    }
    let mut effective = journey.clone();
    effective.steps = kept.iter().map(|k| journey.steps[*k].clone()).collect();
    let n = effective.steps.len();
    if n < 2 {
        return Err(Error::Other(format!(
            "journey {}: fewer than two steps can be measured on this lake ({})",
            journey.name,
            skipped.join("; ")
        )));
    }
    let journey = &effective;
    // The entities are read here only, so they are computed in this query, not held first.
    let mut sql = format!("WITH e AS ({entities}), s AS (SELECT * FROM {reaches})");
    let mut select = vec![
        "CAST(e.entity_id AS VARCHAR) AS entity_id".to_string(),
        "CAST(e.entered_at AS TIMESTAMP(6)) AS entered_at".into(),
    ];
    select.extend(dims.iter().map(|d| format!("e.{}", quote(d))));
    select.extend(kept.iter().enumerate().map(|(j, k)| format!("s.r{k} AS r{j}")));
    sql.push_str(&format!(
        ", w0 AS (SELECT {}, s.r{} AS t0 FROM e LEFT JOIN s ON s.entity_id = CAST(e.entity_id AS VARCHAR))",
        select.join(", "),
        kept[0]
    ));
    // Windows still open are judged at the as-of date, or now for a run on everything landed.
    let end =
        if session.as_of.0.is_some() { session.as_of.end_literal() } else { "CAST(now() AS TIMESTAMP(6))".into() };
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
    Ok((sql, dims, Effective { journey: effective.clone(), skipped }))
}

/// Computes a query's rows once and registers them as `name` for the queries that follow: held
/// in memory, or on a cluster (where `DataFrame::cache` computes nothing, so every later plan
/// carried the whole query: the breakdowns over the steps' union outgrew what a plan may nest,
/// DecodeError RecursionLimitReached) written as a scratch Parquet listing.
async fn hold_rows(session: &LakeSession, name: &str, df: datafusion::prelude::DataFrame) -> Result<()> {
    let ctx = &session.ctx;
    ctx.deregister_table(name)?;
    if session.lake.engine.is_cluster() {
        let schema = Arc::new(df.schema().as_arrow().clone());
        let batches = df.collect().await?;
        return session.register_rows(name, schema, batches).await;
    }
    ctx.register_table(name, df.cache().await?.into_view())?;
    Ok(())
}

/// Reaches a step needs before "all at a later step's instant" is read as a stand-in for it.
const MIN_PROXY_REACHES: i64 = 20;

/// Whether every reach of a step coincides (same entity, same instant) with the reach of one later
/// step: then the step carries no timing of its own (Olist's 'Converted' status stands in for
/// "sales-qualified" at the moment the deal is won). `reaches` holds each step's first reach per
/// entity as column r<k>. Returns that later step's index.
async fn proxy_of(session: &LakeSession, reaches: &str, step: usize, later: &[usize]) -> Result<Option<usize>> {
    for &j in later {
        let sql =
            format!("SELECT COUNT(*) FROM {reaches} WHERE r{step} IS NOT NULL AND (r{j} IS NULL OR r{j} <> r{step})");
        if count_query(session, &sql).await? == 0 {
            return Ok(Some(j));
        }
    }
    Ok(None)
}

async fn count_query(session: &LakeSession, sql: &str) -> Result<i64> {
    Ok(counts_of(session, sql).await?.first().copied().unwrap_or(0))
}

/// The columns of a one-row query of counts (none returned: zeros).
async fn counts_of(session: &LakeSession, sql: &str) -> Result<Vec<i64>> {
    let batches = session.collect_declared(sql, "a funnel step count").await?;
    let Some(b) = batches.iter().find(|b| b.num_rows() > 0) else { return Ok(Vec::new()) };
    (0..b.num_columns())
        .map(|at| {
            let col = cast(b.column(at), &DataType::Int64)?;
            Ok(col.as_any().downcast_ref::<Int64Array>().map(|a| a.value(0)).unwrap_or(0))
        })
        .collect()
}

/// Drops the held tables of `entity_sql`.
pub fn release_work(session: &LakeSession, journey: &Journey) -> Result<()> {
    session.ctx.deregister_table(format!("work.{}_reaches", journey.name).as_str())?;
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
    let plan_err = |what: &str, e: datafusion::error::DataFusionError| {
        Error::Other(format!("journey {}: {what} does not run: {e}", journey.name))
    };
    let declared = journey;
    let (sql, dims, effective) = entity_sql(session, journey, extra_by).await?;
    let journey = &effective.journey;
    let n = journey.steps.len();
    let span = crate::layers::trace::start(format!("journey {}: its entities and step times", journey.name));
    let view = format!("funnel_entities_{}", journey.name);
    hold_rows(session, &view, ctx.sql(&sql).await.map_err(|e| plan_err("its steps", e))?).await?;
    if let Some(span) = span {
        span.done("");
    }

    let mut cells: Vec<(String, String)> = vec![("(all)".into(), "'(all)'".into())];
    cells.extend(dims.iter().map(|d| (d.clone(), format!("COALESCE(CAST({} AS VARCHAR), '(unknown)')", quote(d)))));
    // One pass over the entities per breakdown: every step's counts and times to convert are
    // columns of one aggregate (a union of one aggregate per step read the entities n times).
    let mut aggregates: Vec<String> = (0..n).map(|k| format!("COUNT(t{k}) AS e{k}")).collect();
    for k in 1..n {
        aggregates.push(format!("CAST(SUM(CASE WHEN oo{k} THEN 1 ELSE 0 END) AS BIGINT) AS oo{k}"));
        aggregates.push(format!("CAST(SUM(CASE WHEN open{k} THEN 1 ELSE 0 END) AS BIGINT) AS open{k}"));
    }
    for k in 0..n - 1 {
        aggregates.push(format!("percentile_cont(0.5) WITHIN GROUP (ORDER BY d{k}) AS p50_{k}"));
        aggregates.push(format!("percentile_cont(0.9) WITHIN GROUP (ORDER BY d{k}) AS p90_{k}"));
    }
    let days: Vec<String> = (0..n - 1)
        .map(|k| format!("(date_part('epoch', t{}) - date_part('epoch', t{k})) / 86400.0 AS d{k}", k + 1))
        .collect();
    // The breakdowns, the period comparison and the cohorts each read the held entities and
    // nothing else: they run side by side (at 100k deals each is a few small queries that leave
    // the cores idle between them), and the rows come out in the breakdowns' order.
    let aggregates = &aggregates;
    let days = &days;
    let view_name = &view;
    let breakdowns = futures::future::try_join_all(cells.iter().map(|(dimension, value_expr)| async move {
        let view = view_name;
        let q = format!(
            "SELECT {value_expr} AS value, {} FROM (SELECT *, {} FROM {view}) AS x GROUP BY 1 ORDER BY value",
            aggregates.join(", "),
            days.join(", ")
        );
        let span = crate::layers::trace::start(format!("journey {}: step counts by {dimension}", journey.name));
        let batches = ctx.sql(&q).await.map_err(|e| plan_err("the step counts", e))?.collect().await?;
        if let Some(span) = span {
            span.done(&format!("{} values", batches.iter().map(|b| b.num_rows()).sum::<usize>()));
        }
        let mut cell_rows: Vec<StepRow> = Vec::new();
        for b in &batches {
            let value = cast(b.column(0), &DataType::Utf8)?;
            let value = value.as_any().downcast_ref::<StringArray>().expect("utf8");
            let column = |name: String, to: &DataType| -> Result<ArrayRef> {
                let at = b.schema().index_of(&name)?;
                Ok(cast(b.column(at), to)?)
            };
            let int = |name: String| -> Result<Int64Array> {
                Ok(column(name, &DataType::Int64)?.as_any().downcast_ref::<Int64Array>().expect("i64").clone())
            };
            let float = |name: String| -> Result<Float64Array> {
                Ok(column(name, &DataType::Float64)?.as_any().downcast_ref::<Float64Array>().expect("f64").clone())
            };
            let entered = (0..n).map(|k| int(format!("e{k}"))).collect::<Result<Vec<_>>>()?;
            let oo = (1..n).map(|k| int(format!("oo{k}"))).collect::<Result<Vec<_>>>()?;
            let open = (1..n).map(|k| int(format!("open{k}"))).collect::<Result<Vec<_>>>()?;
            let p50 = (0..n - 1).map(|k| float(format!("p50_{k}"))).collect::<Result<Vec<_>>>()?;
            let p90 = (0..n - 1).map(|k| float(format!("p90_{k}"))).collect::<Result<Vec<_>>>()?;
            for r in 0..b.num_rows() {
                let opt_f = |a: &Float64Array| (!a.is_null(r)).then(|| a.value(r));
                let opt_i = |a: &Int64Array| (!a.is_null(r)).then(|| a.value(r));
                for k in 0..n {
                    let e = entered[k].value(r);
                    let last = k + 1 == n;
                    let c = (!last).then(|| entered[k + 1].value(r));
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
                        median_days: if last { None } else { opt_f(&p50[k]) },
                        p90_days: if last { None } else { opt_f(&p90[k]) },
                        drop_off: c.map(|c| e - c),
                        out_of_order: if last { 0 } else { opt_i(&oo[k]).unwrap_or(0) },
                        in_window: if last { 0 } else { opt_i(&open[k]).unwrap_or(0) },
                    });
                }
            }
        }
        // Share of the cell's first-step entities that reached each step.
        let firsts: std::collections::HashMap<String, i64> =
            cell_rows.iter().filter(|r| r.step_index == 1).map(|r| (r.value.clone(), r.entered)).collect();
        for r in &mut cell_rows {
            r.from_first = firsts.get(&r.value).filter(|f| **f > 0).map(|f| r.entered as f64 / *f as f64);
        }
        Ok::<Vec<StepRow>, Error>(cell_rows)
    }));
    let periods = async {
        let span = crate::layers::trace::start(format!("journey {}: periods", journey.name));
        let periods = period_comparison(session, journey, &view, cal).await?;
        if let Some(span) = span {
            span.done(&format!("{} rows", periods.len()));
        }
        Ok::<_, Error>(periods)
    };
    let cohorts = async {
        let span = crate::layers::trace::start(format!("journey {}: cohorts", journey.name));
        let cohorts = cohort_table(session, journey, &view).await?;
        if let Some(span) = span {
            span.done(&format!("{} rows", cohorts.len()));
        }
        Ok::<_, Error>(cohorts)
    };
    let (cells_rows, periods, cohorts) = futures::future::try_join3(breakdowns, periods, cohorts).await?;
    let rows: Vec<StepRow> = cells_rows.into_iter().flatten().collect();
    ctx.deregister_table(view.as_str())?;
    release_work(session, declared)?;
    Ok(Computed { steps: rows, periods, cohorts, skipped: effective.skipped })
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
        let missing = session.missing(&journey.needs);
        if !missing.is_empty() {
            let line = format!("journey {} skipped: needs {}\n", journey.name, missing.join("; "));
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
        for line in &computed.skipped {
            text.push_str(&format!("  {line}\n"));
            run.note(format!("journey {}: {line}", journey.name));
        }
        all.extend(rows);
    }
    let span = crate::layers::trace::start("the funnel's outputs written and committed");
    let (overall, breakdown): (Vec<StepRow>, Vec<StepRow>) = all.iter().cloned().partition(|r| r.dimension == "(all)");
    run.write_table("funnel_steps", schema(), &[batch(&overall)?]).await?;
    run.write_table("funnel_breakdown", schema(), &[batch(&breakdown)?]).await?;
    holm(&mut periods);
    text.push_str(&period_summary(&periods));
    run.write_table("funnel_periods", period_schema(), &[period_batch(&periods)?]).await?;
    run.write_table("funnel_cohorts", cohort_schema(), &[cohort_batch(&cohorts)?]).await?;
    let leaky = leaky_dimensions(&all);
    for (journey, _, line) in &leaky {
        text.push_str(&format!("journey {journey}: {line}\n"));
        run.note(format!("journey {journey}: {line}"));
    }
    let judged: Vec<StepRow> =
        all.iter().filter(|r| !leaky.iter().any(|(j, d, _)| *j == r.journey && *d == r.dimension)).cloned().collect();
    let bottlenecks = bottlenecks(&judged, &periods);
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
    if let Some(span) = span {
        span.done("");
    }
    Ok((all, text, manifest))
}

/// The funnel of one journey: steps (overall and broken down), period comparisons, cohorts.
pub struct Computed {
    pub steps: Vec<StepRow>,
    pub periods: Vec<PeriodRow>,
    pub cohorts: Vec<CohortRow>,
    /// Steps this lake cannot measure, with why.
    pub skipped: Vec<String>,
}

pub(super) fn pct(x: Option<f64>) -> String {
    x.map(|v| format!("{:.1}%", v * 100.0)).unwrap_or_else(|| "-".into())
}

pub(super) fn days(x: Option<f64>) -> String {
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
    fn builtin_journeys_load() {
        let j = load(None).unwrap();
        assert_eq!(j.iter().map(|j| j.name.as_str()).collect::<Vec<_>>(), ["sales_led", "self_serve"]);
        assert_eq!(j[0].steps.len(), 5);
    }
}
