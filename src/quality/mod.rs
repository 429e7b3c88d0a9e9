//! `validate`: contract errors stop the run; data-quality findings become rows of the
//! `data_quality` output table (table, column, check, count, examples, severity, fix).

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::catalog::{Format, LakeSession, conform_expr, quote};
use crate::contract::{ColumnType, Contract};
use crate::error::{Error, Result};
use crate::publish::{Manifest, RunWriter};

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
    fn parse(s: &str) -> Severity {
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
/// publishes the findings as `output.data_quality` for the run's as-of date.
pub async fn run(session: &LakeSession) -> Result<Report> {
    let problems = session.contract_problems();
    if !problems.is_empty() {
        return Err(Error::Contract { lake: session.lake.location.clone(), problems });
    }
    let started = Instant::now();
    let findings = check_all(session).await?;
    let mut run = RunWriter::begin(&session.lake, "validate", session.as_of);
    run.record_inputs(session);
    run.timing("checks", started.elapsed().as_millis() as u64);
    let batch = findings_batch(&findings)?;
    run.write_table("data_quality", findings_schema(), &[batch]).await?;
    let manifest = run.commit().await?;
    Ok(Report { findings, manifest })
}

/// Every check over every contract table, in contract order.
pub async fn check_all(session: &LakeSession) -> Result<Vec<Finding>> {
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
        let finding = |column: Option<&str>, check: &str, severity: Severity, count: i64, total: i64| Finding {
            table: table.name.clone(),
            column: column.map(str::to_string),
            check: check.to_string(),
            severity,
            count,
            total_rows: total,
            examples: Vec::new(),
            detail: String::new(),
            fix: String::new(),
        };
        if !landed.present() {
            out.push(Finding {
                detail: format!("table not landed; it would enable: {}", table.enables.join(", ")),
                fix: format!("land it under {}/ to enable those jobs", table.path),
                ..finding(None, "table_absent", Severity::Info, 0, 0)
            });
            continue;
        }
        for file in &landed.ignored_files {
            out.push(Finding {
                detail: format!("{file} is neither .parquet nor .csv and was not read"),
                fix: "remove it or convert it".into(),
                ..finding(None, "file_ignored", Severity::Info, 0, 0)
            });
        }
        let key = &table.key;
        let key_expr =
            key.iter().map(|k| format!("CAST({} AS VARCHAR)", quote(k))).collect::<Vec<_>>().join(" || '/' || ");
        // Every check below reads this table's known rows: compute the as-of view (a window over
        // all versions) once, hold it in memory for this table's checks, then drop it.
        // Only the columns some check reads are held (all of them where row rules need them).
        let checked: Vec<String> = table
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
            })
            .map(|c| quote(&c.name))
            .chain(["_version_exact".to_string()])
            .collect();
        let cached = session
            .ctx
            .sql(&format!("SELECT {} FROM known.{}", checked.join(", "), quote(&table.name)))
            .await?
            .cache()
            .await?;
        session.ctx.register_table(format!("validate_cache.{}", table.name), cached.into_view())?;
        let known = format!("validate_cache.{}", quote(&table.name));
        let total = scalar(session, &format!("SELECT COUNT(*) FROM {known}")).await?;
        for col in &landed.missing_optional {
            out.push(Finding {
                detail: "optional column not landed; read as NULL".into(),
                fix: format!("land {col} if the source has it"),
                ..finding(Some(col), "column_absent", Severity::Info, total, total)
            });
        }

        // Duplicate keys among rows that are the same version (CDC versions are not duplicates).
        let raw_key = key
            .iter()
            .map(|k| landed.field(k).map(|f| quote(f.name())).unwrap_or_else(|| quote(k)))
            .collect::<Vec<_>>();
        let version =
            ["_fivetran_start", "_fivetran_synced"].iter().find_map(|c| landed.field(c)).map(|f| quote(f.name()));
        let group = raw_key.iter().cloned().chain(version).collect::<Vec<_>>().join(", ");
        let raw_key_expr =
            raw_key.iter().map(|k| format!("CAST({k} AS VARCHAR)")).collect::<Vec<_>>().join(" || '/' || ");
        let dup_sql = format!(
            "SELECT {raw_key_expr} AS k, COUNT(*) AS n FROM raw.{} GROUP BY {group} HAVING COUNT(*) > 1 ORDER BY k",
            quote(&table.name)
        );
        let dups = rows(session, &dup_sql).await?;
        if !dups.is_empty() {
            let extra: i64 = dups.iter().map(|r| r[1].parse::<i64>().unwrap_or(0) - 1).sum();
            out.push(Finding {
                examples: dups.iter().take(5).map(|r| r[0].clone()).collect(),
                detail: format!(
                    "{} keys appear more than once in the same version; staging keeps one row per key",
                    dups.len()
                ),
                fix: format!("de-duplicate {} at the source or the connector", key.join(", ")),
                ..finding(Some(&key.join(",")), "duplicate_key", Severity::Error, extra, total)
            });
        }

        for col in &table.columns {
            let c = quote(&col.name);
            let present = landed.field(&col.name).is_some();
            // CSV text that does not parse as the column's type.
            if present && landed.format == Some(Format::Csv) && col.ty != ColumnType::String {
                let f = landed.field(&col.name).expect("present");
                let raw_col = quote(f.name());
                let parsed = conform_expr(&raw_col, f.data_type(), col.ty);
                let raw_keys = raw_key_expr.clone();
                let bad = rows(
                    session,
                    &format!(
                        "SELECT {raw_keys}, {raw_col} FROM raw.{} WHERE NULLIF(TRIM({raw_col}), '') IS NOT NULL AND {parsed} IS NULL",
                        quote(&table.name)
                    ),
                )
                .await?;
                if !bad.is_empty() {
                    let mut values: Vec<String> = bad.iter().map(|r| format!("'{}'", r[1])).collect();
                    values.dedup();
                    out.push(Finding {
                        examples: bad.iter().take(5).map(|r| r[0].clone()).collect(),
                        detail: format!(
                            "values that are not a {}: {}",
                            col.ty.name(),
                            values.into_iter().take(5).collect::<Vec<_>>().join(", ")
                        ),
                        fix: format!(
                            "write {} as a {} (ISO dates, '.' decimals); these rows read it as NULL",
                            col.name,
                            col.ty.name()
                        ),
                        ..finding(Some(&col.name), "unparseable", Severity::Warning, bad.len() as i64, total)
                    });
                }
            }
            if !present || total == 0 {
                continue;
            }
            if let Some(max) = col.max_null_rate {
                let nulls = scalar(session, &format!("SELECT COUNT(*) FROM {known} WHERE {c} IS NULL")).await?;
                if nulls as f64 / total as f64 > max {
                    let ex = first_col(
                        session,
                        &format!("SELECT {key_expr} FROM {known} WHERE {c} IS NULL ORDER BY 1 LIMIT 5"),
                    )
                    .await?;
                    out.push(Finding {
                        examples: ex,
                        detail: format!(
                            "{:.1}% NULL, over the {:.0}% threshold",
                            100.0 * nulls as f64 / total as f64,
                            max * 100.0
                        ),
                        fix: format!(
                            "fill {} at the source; rows without it fall into '(unknown)' breakdowns",
                            col.name
                        ),
                        ..finding(Some(&col.name), "null_rate", Severity::Warning, nulls, total)
                    });
                }
            }
            if let Some(reference) = &col.references {
                let (pt, pc) = reference.split_once('.').unwrap_or((reference, "id"));
                let parent = session.landed(pt).expect("contract checked");
                if !parent.present() {
                    out.push(Finding {
                        detail: format!("cannot check: {pt} is not landed"),
                        fix: format!("land {pt}"),
                        ..finding(Some(&col.name), "orphan_reference_unchecked", Severity::Info, 0, total)
                    });
                } else {
                    let sql = format!(
                        "SELECT {key_expr}, CAST(t.{c} AS VARCHAR) FROM {known} AS t \
                         LEFT JOIN (SELECT DISTINCT {pcq} AS parent_key FROM known.{ptq}) AS p ON t.{c} = p.parent_key \
                         WHERE t.{c} IS NOT NULL AND p.parent_key IS NULL ORDER BY 1",
                        pcq = quote(pc),
                        ptq = quote(pt)
                    );
                    let orphans = rows(session, &sql).await?;
                    if !orphans.is_empty() {
                        out.push(Finding {
                            examples: orphans.iter().take(5).map(|r| r[0].clone()).collect(),
                            detail: format!(
                                "{} rows point to a {reference} that does not exist (as of {}), e.g. {}",
                                orphans.len(),
                                session.as_of.label(),
                                orphans.iter().take(3).map(|r| format!("'{}'", r[1])).collect::<Vec<_>>().join(", ")
                            ),
                            fix: format!("land the missing {pt} rows or correct {}", col.name),
                            ..finding(
                                Some(&col.name),
                                "orphan_reference",
                                Severity::Warning,
                                orphans.len() as i64,
                                total,
                            )
                        });
                    }
                }
            }
            if col.category {
                // One pass: every distinct spelling with its count; grouped here by the spelling
                // reduced to lower-case letters and digits ('Paid Search', 'paid search ').
                let values = rows(
                    session,
                    &format!("SELECT {c} AS v, COUNT(*) AS n FROM {known} WHERE {c} IS NOT NULL GROUP BY 1"),
                )
                .await?;
                let mut groups: std::collections::BTreeMap<String, Vec<(String, i64)>> = Default::default();
                for r in values {
                    let norm: String =
                        r[0].chars().filter(|ch| ch.is_alphanumeric()).flat_map(char::to_lowercase).collect();
                    groups.entry(norm).or_default().push((r[0].clone(), r[1].parse().unwrap_or(0)));
                }
                for mut group in groups.into_values().filter(|g| g.len() > 1) {
                    group.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                    let minority: i64 = group.iter().skip(1).map(|g| g.1).sum();
                    out.push(Finding {
                        examples: group.iter().skip(1).map(|g| g.0.clone()).collect(),
                        detail: format!(
                            "one category spelled {} ways: {}",
                            group.len(),
                            group.iter().map(|(v, n)| format!("'{v}' ({n})")).collect::<Vec<_>>().join(", ")
                        ),
                        fix: format!(
                            "standardise the picklist to '{}', or map the variants in an import mapping",
                            group[0].0
                        ),
                        ..finding(Some(&col.name), "inconsistent_spelling", Severity::Warning, minority, total)
                    });
                }
            }
            if col.identifies {
                let norm = format!("LOWER(TRIM({c}))");
                let sql = format!(
                    "SELECT {norm} AS v, COUNT(*) AS n, MIN({key_expr}) AS k FROM {known} WHERE {c} IS NOT NULL AND TRIM({c}) <> '' \
                     GROUP BY {norm} HAVING COUNT(*) > 1 ORDER BY n DESC, v"
                );
                let groups = rows(session, &sql).await?;
                if !groups.is_empty() {
                    let extra: i64 = groups.iter().map(|r| r[1].parse::<i64>().unwrap_or(0) - 1).sum();
                    out.push(Finding {
                        examples: groups.iter().take(5).map(|r| r[2].clone()).collect(),
                        detail: format!(
                            "{} values are held by several ids, e.g. '{}' ({} ids)",
                            groups.len(),
                            groups[0][0],
                            groups[0][1]
                        ),
                        fix: format!("merge the duplicate {} records in the CRM", table.name),
                        ..finding(Some(&col.name), "duplicate_entity", Severity::Warning, extra, total)
                    });
                }
            }
            if col.non_negative {
                let n = scalar(session, &format!("SELECT COUNT(*) FROM {known} WHERE {c} < 0")).await?;
                if n > 0 {
                    let ex =
                        first_col(session, &format!("SELECT {key_expr} FROM {known} WHERE {c} < 0 ORDER BY 1 LIMIT 5"))
                            .await?;
                    out.push(Finding {
                        examples: ex,
                        detail: format!("{n} negative values"),
                        fix: format!("correct {} (refunds and credits belong in their own records)", col.name),
                        ..finding(Some(&col.name), "negative_value", Severity::Warning, n, total)
                    });
                }
            }
            if col.recorded_time {
                // Against the clock of this run (or the as-of date, if later): a recorded time in
                // the future is a typo or a clock problem, whatever date the run looks at.
                let limit = match session.as_of.0 {
                    Some(d) if d > chrono::Utc::now().date_naive() => session.as_of.end_literal(),
                    _ => "CAST(now() AS TIMESTAMP)".to_string(),
                };
                let conformed = crate::catalog::LakeSession::conformed_sql(landed);
                let sql = format!(
                    "SELECT {key_expr}, CAST({c} AS VARCHAR) FROM {conformed} AS t WHERE CAST({c} AS TIMESTAMP) > {limit} ORDER BY 1"
                );
                let future = rows(session, &sql).await?;
                if !future.is_empty() {
                    out.push(Finding {
                        examples: future.iter().take(5).map(|r| r[0].clone()).collect(),
                        detail: format!(
                            "{} rows recorded in the future, e.g. {}; no as-of run will ever see them",
                            future.len(),
                            future.iter().take(3).map(|r| r[1].clone()).collect::<Vec<_>>().join(", ")
                        ),
                        fix: format!("correct {} at the source", col.name),
                        ..finding(Some(&col.name), "future_date", Severity::Warning, future.len() as i64, total)
                    });
                }
            }
            if col.currency {
                let groups = rows(
                    session,
                    &format!(
                        "SELECT COALESCE({c}, '(none)'), COUNT(*) AS n FROM {known} GROUP BY 1 ORDER BY n DESC, 1"
                    ),
                )
                .await?;
                let named: Vec<_> = groups.iter().filter(|r| r[0] != "(none)").collect();
                if named.len() > 1 {
                    let minority: i64 = groups.iter().skip(1).map(|r| r[1].parse::<i64>().unwrap_or(0)).sum();
                    out.push(Finding {
                        examples: groups.iter().skip(1).map(|r| r[0].clone()).collect(),
                        detail: format!(
                            "amounts in several currencies: {}; sums across them are not meaningful without conversion",
                            groups.iter().map(|r| format!("{} ({})", r[0], r[1])).collect::<Vec<_>>().join(", ")
                        ),
                        fix: "convert to one reporting currency (dated exchange rates) before comparing amounts".into(),
                        ..finding(Some(&col.name), "mixed_currency", Severity::Warning, minority, total)
                    });
                }
            }
        }

        for check in &table.checks {
            // Over the latest known version of each row (contract columns), not the as-of rebuild.
            let sql = format!("SELECT {key_expr} FROM {known} WHERE {} ORDER BY 1", check.when);
            let hits = first_col(session, &sql).await.map_err(|e| {
                Error::Other(format!("check {}.{} in the contract does not run: {e}", table.name, check.name))
            })?;
            if !hits.is_empty() {
                out.push(Finding {
                    examples: hits.iter().take(5).cloned().collect(),
                    detail: format!("{} rows: {}", hits.len(), check.meaning),
                    fix: check.fix.clone(),
                    ..finding(None, &check.name, Severity::parse(&check.severity), hits.len() as i64, total)
                });
            }
        }

        if table.cdc && session.as_of.0.is_some() && total > 0 {
            let inexact = scalar(session, &format!("SELECT COUNT(*) FROM {known} WHERE NOT _version_exact")).await?;
            if inexact > 0 {
                out.push(Finding {
                    detail: format!(
                        "{inexact} rows are known only in a version synced after {}: fields without a history table show their current values",
                        session.as_of.label()
                    ),
                    fix: "keep older versions (Fivetran history mode) to time-travel this table exactly".into(),
                    ..finding(None, "not_time_travelled", Severity::Info, inexact, total)
                });
            }
        }
        session.ctx.deregister_table(format!("validate_cache.{}", table.name))?;
    }
    progress.finish_and_clear();
    Ok(out)
}

async fn rows(session: &LakeSession, sql: &str) -> Result<Vec<Vec<String>>> {
    let batches = session.ctx.sql(sql).await?.collect().await?;
    let opts = FormatOptions::default().with_null("");
    let mut out = Vec::new();
    for batch in batches {
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        for row in 0..batch.num_rows() {
            out.push(formatters.iter().map(|f| f.value(row).to_string()).collect());
        }
    }
    Ok(out)
}

async fn first_col(session: &LakeSession, sql: &str) -> Result<Vec<String>> {
    Ok(rows(session, sql).await?.into_iter().map(|mut r| r.swap_remove(0)).collect())
}

async fn scalar(session: &LakeSession, sql: &str) -> Result<i64> {
    let batches = session.ctx.sql(sql).await?.collect().await?;
    let batch = batches.first().ok_or_else(|| Error::Other(format!("no result for {sql}")))?;
    let col =
        batch.column(0).as_any().downcast_ref::<Int64Array>().ok_or_else(|| Error::Other("not an integer".into()))?;
    Ok(if col.is_null(0) { 0 } else { col.value(0) })
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
