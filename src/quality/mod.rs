//! `validate`: contract errors stop the run; data-quality findings become rows of the
//! `data_quality` output table (table, column, check, count, examples, severity, fix).
//!
//! One file per check family: `landing` (what landed and what did not), `keys` (duplicates,
//! orphans, duplicate entities), `values` (parsing, nulls, spellings, signs, dates, currencies),
//! `rules` (the contract's declared row rules and time-travel exactness), `concepts` (what the lake
//! profile's rules find in this lake).

mod concepts;
mod keys;
mod landing;
mod rules;
mod sql;
mod values;

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::error::{Error, Result};
use crate::lake::contract::{ColumnType, Contract, Table, quote};
use crate::lake::inspect::Landed;
use crate::layers::LakeSession;
use crate::outputs::{Manifest, RunWriter};
use sql::scalar;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Info,
    Warning,
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
    pub(crate) fn parse(s: &str) -> Severity {
        match s {
            "error" => Severity::Error,
            "info" => Severity::Info,
            _ => Severity::Warning,
        }
    }
}

/// One data-quality finding. `count` is the number of rows (or values) affected.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub table: String,
    pub column: Option<String>,
    pub check: String,
    pub severity: Severity,
    pub count: i64,
    pub total_rows: i64,
    pub examples: Vec<String>,
    pub detail: String,
    pub fix: String,
}

pub fn findings_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("table_name", DataType::Utf8, false),
        Field::new("column_name", DataType::Utf8, true),
        Field::new("check", DataType::Utf8, false),
        Field::new("severity", DataType::Utf8, false),
        Field::new("count", DataType::Int64, false),
        Field::new("total_rows", DataType::Int64, false),
        Field::new("rate", DataType::Float64, true),
        Field::new("examples", DataType::Utf8, false),
        Field::new("detail", DataType::Utf8, false),
        Field::new("fix", DataType::Utf8, false),
    ]))
}

pub fn findings_batch(findings: &[Finding]) -> Result<RecordBatch> {
    let s = |f: &dyn Fn(&Finding) -> String| -> ArrayRef {
        Arc::new(StringArray::from(findings.iter().map(f).collect::<Vec<_>>()))
    };
    let cols: Vec<ArrayRef> = vec![
        s(&|f| f.table.clone()),
        Arc::new(StringArray::from(findings.iter().map(|f| f.column.clone()).collect::<Vec<_>>())),
        s(&|f| f.check.clone()),
        s(&|f| f.severity.as_str().to_string()),
        Arc::new(Int64Array::from(findings.iter().map(|f| f.count).collect::<Vec<_>>())),
        Arc::new(Int64Array::from(findings.iter().map(|f| f.total_rows).collect::<Vec<_>>())),
        Arc::new(Float64Array::from(
            findings
                .iter()
                .map(|f| (f.total_rows > 0).then(|| f.count as f64 / f.total_rows as f64))
                .collect::<Vec<_>>(),
        )),
        s(&|f| f.examples.join(", ")),
        s(&|f| f.detail.clone()),
        s(&|f| f.fix.clone()),
    ];
    Ok(RecordBatch::try_new(findings_schema(), cols)?)
}

/// The outcome of a validate run.
pub struct Report {
    pub findings: Vec<Finding>,
    pub manifest: Manifest,
}

/// Validates the lake: stops on contract problems, otherwise runs every data-quality check and
/// publishes the findings as `output.data_quality` for the run's as-of date. `keep` names the
/// tables whose known rows stay held after their checks, with the columns their staging table
/// reads (a cadence's later steps compute staging.task from them); every other table's are
/// dropped once checked.
pub async fn run(session: &LakeSession, keep: &[&str]) -> Result<Report> {
    let problems = session.contract_problems();
    if !problems.is_empty() {
        return Err(Error::Contract { lake: session.lake.location.clone(), problems });
    }
    let started = Instant::now();
    let findings = check_all(session, keep).await?;
    let mut run = RunWriter::begin(&session.lake, "validate", session.as_of);
    run.record_inputs(session);
    run.timing("checks", started.elapsed().as_millis() as u64);
    let batch = findings_batch(&findings)?;
    run.write_table("data_quality", findings_schema(), &[batch]).await?;
    let manifest = run.commit().await?;
    Ok(Report { findings, manifest })
}

/// What every check of one table needs: the table, what landed, its known rows held in memory
/// (`known`, the cached as-of view), their count and the key expressions used for examples.
pub(crate) struct TableCheck<'a> {
    pub session: &'a LakeSession,
    pub table: &'a Table,
    pub landed: &'a Landed,
    /// The cached known rows, as a SQL table name.
    pub known: String,
    /// The contract key as one string, over `known`.
    pub key_expr: String,
    /// The landed key as one string, over `raw.<table>` (landed column names).
    pub raw_key_expr: String,
    pub total: i64,
}

impl TableCheck<'_> {
    pub fn finding(&self, column: Option<&str>, check: &str, severity: Severity, count: i64, total: i64) -> Finding {
        Finding {
            table: self.table.name.clone(),
            column: column.map(str::to_string),
            check: check.to_string(),
            severity,
            count,
            total_rows: total,
            examples: Vec::new(),
            detail: String::new(),
            fix: String::new(),
        }
    }
}

/// Every check over every contract table, in contract order. A table's known rows are held for its
/// checks and dropped after them, unless `keep` names it (see `run`): held until the end, every
/// table's took 2.8 GiB on a million deals, and the next cadence step dropped them unread.
pub async fn check_all(session: &LakeSession, keep: &[&str]) -> Result<Vec<Finding>> {
    let contract = Contract::builtin();
    let catalog = session.ctx.catalog("datafusion").ok_or_else(|| Error::Other("no default catalog".into()))?;
    if catalog.schema("validate_cache").is_none() {
        catalog
            .register_schema("validate_cache", std::sync::Arc::new(datafusion::catalog::MemorySchemaProvider::new()))?;
    }
    let mut out = Vec::new();
    let progress = crate::progress::bar(contract.tables.len() as u64, "validating", "tables");
    for table in &contract.tables {
        progress.inc(1);
        let landed = session.landed(&table.name).expect("inspected every contract table");
        if !landed.present() {
            out.push(landing::absent(table));
            out.extend(concepts::absent(&table.name));
            continue;
        }
        out.extend(landing::ignored_files(table, landed));
        let kept = keep.contains(&table.name.as_str());
        let known = match cache_known(session, table, kept).await {
            Ok(k) => k,
            Err(e) => {
                // Name the file: a table that will not read is a contract problem of one of its files.
                let problems = landing::unreadable_files(session, landed).await?;
                if problems.is_empty() {
                    return Err(e);
                }
                return Err(Error::Contract { lake: session.lake.url.to_string(), problems });
            }
        };
        let cx = TableCheck {
            session,
            table,
            landed,
            total: scalar(session, &format!("SELECT COUNT(*) FROM {known}")).await?,
            known,
            key_expr: key_expr(&table.key, quote),
            raw_key_expr: key_expr(&table.key, |k| {
                landed.field(k).map(|f| quote(f.name())).unwrap_or_else(|| quote(k))
            }),
        };
        let span = crate::layers::trace::start(format!("validate checks of {}", table.name));
        let found = out.len();
        out.extend(landing::missing_optional(&cx));
        keys::duplicate_key(&cx, &mut out).await?;
        keys::null_key(&cx, &mut out).await?;
        for col in &table.columns {
            values::unparseable(&cx, col, &mut out).await?;
            if landed.field(&col.name).is_none() || cx.total == 0 {
                continue;
            }
            // Order matters only for the order of findings; each check reads the cached rows.
            values::null_rate(&cx, col, &mut out).await?;
            keys::orphan_reference(&cx, col, &mut out).await?;
            values::inconsistent_spelling(&cx, col, &mut out).await?;
            keys::duplicate_entity(&cx, col, &mut out).await?;
            values::negative(&cx, col, &mut out).await?;
            values::huge_value(&cx, col, &mut out).await?;
            values::implausible_date(&cx, col, &mut out).await?;
            values::future_date(&cx, col, &mut out).await?;
            values::mixed_currency(&cx, col, &mut out).await?;
        }
        rules::declared(&cx, &mut out).await?;
        rules::not_time_travelled(&cx, &mut out).await?;
        concepts::coverage(&cx, &mut out).await?;
        if let Some(span) = span {
            span.done(&format!("{} findings", out.len() - found));
        }
        session.ctx.deregister_table(format!("validate_cache.{}", table.name))?;
        if !kept {
            // A later table's reference check that reads these keys computes them again, alone.
            crate::layers::shared::drop_table(session.fingerprint, &format!("known.{}", table.name));
        }
    }
    out.extend(concepts::declared_stages(session));
    progress.finish_and_clear();
    Ok(out)
}

/// The key columns as one string per row ("a/b"), each column named by `name`.
fn key_expr(key: &[String], name: impl Fn(&str) -> String) -> String {
    key.iter().map(|k| format!("CAST({} AS VARCHAR)", name(k))).collect::<Vec<_>>().join(" || '/' || ")
}

/// Every check below reads this table's known rows: compute the as-of view (a window over all
/// versions) once, hold it in memory for this table's checks, then drop it. Only the columns
/// some check reads are held (all of them where row rules need them).
async fn cache_known(session: &LakeSession, table: &Table, kept: bool) -> Result<String> {
    let mut checked: Vec<String> = table
        .columns
        .iter()
        .filter(|c| {
            !table.checks.is_empty()
                || table.key.contains(&c.name)
                || c.references.is_some()
                || c.max_null_rate.is_some()
                || c.category
                || c.identifies
                || c.non_negative
                || c.currency
                || matches!(c.ty, ColumnType::Date | ColumnType::Timestamp)
        })
        .map(|c| quote(&c.name))
        .chain(concepts::rule_columns(session, &table.name).iter().map(|c| quote(c)))
        .chain(["_version_exact".to_string()])
        .collect();
    // A rule column that a check reads too is held once.
    let mut seen = std::collections::HashSet::new();
    checked.retain(|c| seen.insert(c.clone()));
    // The shared as-of table: computed once with every column a check reads. One that is kept
    // for the steps after validate (see `run`) has the columns its staging table passes on by
    // name too, so computing staging later reads these rows instead of computing the known table
    // again for them (16M tasks: 10 s at a million deals).
    let known = format!("known.{}", table.name);
    // (`warm` keeps the names the known table has: a column staging computes is not among them.)
    let mut wanted = checked.clone();
    if let (true, Ok(staging)) = (kept, session.ctx.table_provider(format!("staging.{}", table.name).as_str()).await) {
        wanted.extend(staging.schema().fields().iter().map(|f| quote(f.name())));
    }
    if crate::layers::shared::warm(session, &known, &wanted).await? {
        session.ctx.register_table(
            format!("validate_cache.{}", table.name),
            session.ctx.table_provider(known.as_str()).await?,
        )?;
        return Ok(format!("validate_cache.{}", quote(&table.name)));
    }
    let cached = session
        .ctx
        .sql(&format!("SELECT {} FROM known.{}", checked.join(", "), quote(&table.name)))
        .await
        .map_err(|e| Error::Other(format!("validate: known.{} does not plan: {e}", table.name)))?
        .cache()
        .await
        .map_err(|e| Error::Other(format!("validate: reading known.{} failed: {e}", table.name)))?;
    session.ctx.register_table(format!("validate_cache.{}", table.name), cached.into_view())?;
    Ok(format!("validate_cache.{}", quote(&table.name)))
}

/// The readable summary printed after a validate run.
pub fn summary(findings: &[Finding]) -> String {
    let mut out = String::new();
    let count = |s: Severity| findings.iter().filter(|f| f.severity == s).count();
    out.push_str(&format!(
        "data quality: {} errors, {} warnings, {} notes\n",
        count(Severity::Error),
        count(Severity::Warning),
        count(Severity::Info)
    ));
    let mut sorted: Vec<&Finding> = findings.iter().collect();
    sorted.sort_by_key(|f| std::cmp::Reverse(f.severity));
    for f in sorted {
        let place = match &f.column {
            Some(c) => format!("{}.{}", f.table, c),
            None => f.table.clone(),
        };
        let rate = if f.total_rows > 0 && f.count > 0 {
            format!(" ({} of {} rows, {:.1}%)", f.count, f.total_rows, 100.0 * f.count as f64 / f.total_rows as f64)
        } else {
            String::new()
        };
        out.push_str(&format!("  {:<7} {:<38} {}{}: {}", f.severity.as_str(), place, f.check, rate, f.detail));
        if !f.examples.is_empty() {
            out.push_str(&format!(" [e.g. {}]", f.examples.join(", ")));
        }
        out.push('\n');
    }
    out
}
