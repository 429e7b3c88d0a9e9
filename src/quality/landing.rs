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
