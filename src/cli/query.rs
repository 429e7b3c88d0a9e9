//! `query`, `tables`, `describe`: read-only SQL over every layer, printed or saved.
//! Statements that would change anything are refused before they are planned.

use std::io::Write;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::execution::context::SQLOptions;
use datafusion::parquet::arrow::ArrowWriter;

use crate::error::{Context, Error, Result};
use crate::layers::{LakeSession, SCHEMAS};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Table,
    Csv,
    Json,
    Parquet,
}

/// Runs one read-only statement. DDL, DML (INSERT, COPY, ...) and SET are refused before planning.
pub async fn run(session: &LakeSession, sql: &str) -> Result<Vec<RecordBatch>> {
    let options = SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false);
    let df = session.ctx.sql_with_options(sql, options).await.map_err(|e| {
        let msg = e.to_string();
        if msg.contains("not supported") && (msg.contains("DDL") || msg.contains("DML") || msg.contains("Statement")) {
            Error::Refused(format!(
                "query is read-only: this statement would create, write or change something ({msg}). \
                 Use SELECT (or WITH ... SELECT); jobs publish outputs through their own runs"
            ))
        } else {
            Error::DataFusion(e)
        }
    })?;
    Ok(df.collect().await?)
}

/// Writes batches in the chosen format to `out` (a terminal table, CSV, JSON lines or Parquet).
pub fn write(batches: &[RecordBatch], format: OutputFormat, out: &mut dyn Write) -> Result<()> {
    match format {
        OutputFormat::Table => {
            writeln!(out, "{}", pretty_format_batches(batches)?)?;
            let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            writeln!(out, "{rows} row{}", if rows == 1 { "" } else { "s" })?;
        }
        OutputFormat::Csv => {
            let mut w = datafusion::arrow::csv::WriterBuilder::new().with_header(true).build(out);
            for b in batches {
                w.write(b)?;
            }
        }
        OutputFormat::Json => {
            let mut w = datafusion::arrow::json::LineDelimitedWriter::new(out);
            for b in batches {
                w.write(b)?;
            }
            w.finish()?;
        }
        OutputFormat::Parquet => {
            let Some(first) = batches.first() else {
                return Err(Error::Other("no rows and no schema to write as Parquet".into()));
            };
            let mut buf = Vec::new();
            let mut w = ArrowWriter::try_new(&mut buf, first.schema(), None)?;
            for b in batches {
                w.write(b)?;
            }
            w.close()?;
            out.write_all(&buf)?;
        }
    }
    Ok(())
}

/// Every table of every layer with its row count (as of the session's date).
pub async fn tables(session: &LakeSession) -> Result<String> {
    let mut out = format!("lake {} as of {}\n", session.lake.url, session.as_of.label());
    for (schema, meaning) in SCHEMAS {
        out.push_str(&format!("\n{schema}: {meaning}\n"));
        let provider = session.ctx.catalog("datafusion").and_then(|c| c.schema(schema));
        let Some(provider) = provider else { continue };
        let mut names = provider.table_names();
        names.sort();
        for name in names {
            // DataFrame::count counts the rows of the frame: of the table, not of a COUNT(*) query.
            let count = session.ctx.sql(&format!("SELECT * FROM {schema}.\"{name}\"")).await?.count().await?;
            let status = if schema == &"output" {
                String::new()
            } else {
                match session.landed(&name) {
                    Some(l) if !l.present() => "  (not landed)".into(),
                    Some(l) if !l.problems.is_empty() => "  (contract problems: run validate)".into(),
                    _ => String::new(),
                }
            };
            out.push_str(&format!("  {schema}.{name:<28} {count:>10} rows{status}\n"));
        }
    }
    Ok(out)
}

/// Columns and types of one table, and its row count.
pub async fn describe(session: &LakeSession, table: &str) -> Result<String> {
    let df = session.ctx.table(table).await.map_err(|e| {
        Error::Other(format!(
            "no table {table} ({e}); `gtm-loop tables` lists them (name them as schema.table, e.g. staging.opportunity)"
        ))
    })?;
    let schema = df.schema().clone();
    let rows = df.count().await?;
    let mut out = format!("{table}: {rows} rows as of {}\n", session.as_of.label());
    let contract_table = table.rsplit('.').next().and_then(|n| crate::lake::contract::Contract::builtin().table(n));
    for field in schema.fields() {
        let meaning =
            contract_table.and_then(|t| t.column(field.name())).map(|c| c.description.clone()).unwrap_or_default();
        out.push_str(&format!(
            "  {:<28} {:<28} {:<8} {}\n",
            field.name(),
            field.data_type().to_string(),
            if field.is_nullable() { "null" } else { "not null" },
            meaning
        ));
    }
    Ok(out)
}

/// `query`: runs the statement and prints it, or writes it to `--out` (Parquet needs a file).
pub async fn query_command(
    lake: &crate::lake::Lake,
    sql: &str,
    as_of: Option<chrono::NaiveDate>,
    format: OutputFormat,
    file: Option<&std::path::Path>,
    out: &mut dyn Write,
) -> Result<()> {
    let session = crate::cli::open_for_reading(lake, crate::layers::AsOf(as_of)).await?;
    let batches = run(&session, sql).await?;
    match file {
        Some(path) => {
            let mut f = std::fs::File::create(path).map_err(|e| Error::File {
                path: path.display().to_string(),
                action: "create the --out file",
                source: e,
            })?;
            write(&batches, format, &mut f).context(|| format!("writing the query result to {}", path.display()))?;
            let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            eprintln!("wrote {rows} rows to {}", path.display());
        }
        None if format == OutputFormat::Parquet => {
            return Err(Error::Other("--format parquet needs --out FILE".into()));
        }
        None => write(&batches, format, out)?,
    }
    Ok(())
}
