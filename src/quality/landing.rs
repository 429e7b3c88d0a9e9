//! Landing checks: a table that did not land (and which jobs it would enable), files that are not
//! data, and optional columns the lake does not carry (read as NULL).

use crate::lake::contract::Table;
use crate::lake::inspect::Landed;
use crate::quality::{Finding, Severity, TableCheck};

fn info(table: &Table, column: Option<&str>, check: &str, count: i64, detail: String, fix: String) -> Finding {
    Finding {
        table: table.name.clone(),
        column: column.map(str::to_string),
        check: check.to_string(),
        severity: Severity::Info,
        count,
        total_rows: count,
        examples: Vec::new(),
        detail,
        fix,
    }
}

pub fn absent(table: &Table) -> Finding {
    info(
        table,
        None,
        "table_absent",
        0,
        format!("table not landed; it would enable: {}", table.enables.join(", ")),
        format!("land it under {}/ to enable those jobs", table.path),
    )
}

pub fn ignored_files(table: &Table, landed: &Landed) -> Vec<Finding> {
    landed
        .ignored_files
        .iter()
        .map(|file| {
            info(
                table,
                None,
                "file_ignored",
                0,
                format!("{file} is neither .parquet nor .csv and was not read"),
                "remove it or convert it".into(),
            )
        })
        .collect()
}

pub fn missing_optional(cx: &TableCheck<'_>) -> Vec<Finding> {
    cx.landed
        .missing_optional
        .iter()
        .map(|col| {
            if cx.table.known_at.as_deref() == Some(col.as_str()) {
                return info(
                    cx.table,
                    Some(col),
                    "not_time_travelled",
                    cx.total,
                    format!(
                        "{col} not landed: every row is read as known from the start, so as-of runs see today's {} rows (not time-travelled)",
                        cx.table.name
                    ),
                    format!("add {col} to the connector's column selection to time-travel {}", cx.table.name),
                );
            }
            info(
                cx.table,
                Some(col),
                "column_absent",
                cx.total,
                "optional column not landed; read as NULL".into(),
                format!("land {col} if the source has it"),
            )
        })
        .collect()
}

/// When a table's rows will not read (a corrupt data page, a value no cast can hold), reads each
/// of its files alone through the same conforming casts as `known.<table>`, and names the ones
/// that fail: the footer check passed them, so only their data says which to re-land.
pub async fn unreadable_files(
    session: &crate::layers::LakeSession,
    landed: &Landed,
) -> crate::error::Result<Vec<crate::error::ContractProblem>> {
    use std::sync::Arc;

    use datafusion::datasource::file_format::csv::CsvFormat;
    use datafusion::datasource::file_format::parquet::ParquetFormat;
    use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig};

    use crate::lake::contract::quote;
    use crate::lake::inspect::Format;

    let (Some(schema), Some(format)) = (landed.schema.clone(), landed.format) else {
        return Ok(Vec::new());
    };
    let table = &landed.table.name;
    let probe = format!("{table}__probe");
    let sql = crate::layers::known::conformed_sql(landed, &[])
        .replace(&format!("FROM raw.{})", quote(table)), &format!("FROM raw.{})", quote(&probe)));
    let mut out = Vec::new();
    for f in &landed.files {
        let rel = session.lake.relative(&f.location);
        let options = match format {
            Format::Parquet => ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet"),
            Format::Csv => {
                ListingOptions::new(Arc::new(CsvFormat::default().with_has_header(true))).with_file_extension(".csv")
            }
        };
        let config = ListingTableConfig::new(session.lake.listing_url(&rel)?)
            .with_listing_options(options)
            .with_schema(schema.clone());
        session.ctx.register_table(format!("raw.{probe}"), Arc::new(ListingTable::try_new(config)?))?;
        let read = async { session.ctx.sql(&sql).await?.collect().await };
        if let Err(e) = read.await {
            out.push(crate::error::ContractProblem {
                table: table.clone(),
                file: Some(rel),
                column: None,
                problem: format!("its rows cannot be read as the contract's types ({e})"),
                fix: "the file is corrupt or was written with other types: re-land it from the source (a connector \
                      re-sync), or move it out of the table's folder"
                    .into(),
            });
        }
        session.ctx.deregister_table(format!("raw.{probe}"))?;
    }
    Ok(out)
}
