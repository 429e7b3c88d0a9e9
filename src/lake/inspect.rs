//! Inspects what landed for each contract table: files, format, merged schema, and every way
//! they break the contract (collected, not stopped at the first), before any SQL runs.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::parquet::arrow::ParquetRecordBatchStreamBuilder;
// Deprecated in parquet 59 in favour of hand-written AsyncFileReaders; it still does exactly the
// footer-only read we need, so keep it until DataFusion's own replacement lands.
#[allow(deprecated)]
use datafusion::parquet::arrow::async_reader::ParquetObjectReader;
use object_store::{ObjectMeta, ObjectStoreExt};

use crate::error::{ContractProblem, Result};
use crate::lake::Lake;
use crate::lake::contract::{Contract, Table};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Parquet,
    Csv,
}

/// What landed for one contract table.
#[derive(Debug, Clone)]
pub struct Landed {
    pub table: Table,
    pub files: Vec<ObjectMeta>,
    pub format: Option<Format>,
    /// Merged schema of the files (CSV: every column a string).
    pub schema: Option<SchemaRef>,
    pub missing_optional: Vec<String>,
    pub problems: Vec<ContractProblem>,
    /// Files skipped because they are neither Parquet nor CSV.
    pub ignored_files: Vec<String>,
}

impl Landed {
    pub fn present(&self) -> bool {
        !self.files.is_empty()
    }

    /// Usable: present and readable (problems in optional columns do not block reading).
    pub fn readable(&self) -> bool {
        self.present() && self.schema.is_some()
    }

    /// The landed field for a contract column (names compared case-insensitively).
    pub fn field(&self, column: &str) -> Option<&Field> {
        self.schema.as_ref()?.fields().iter().find(|f| f.name().eq_ignore_ascii_case(column)).map(|f| f.as_ref())
    }
}

/// Lists and inspects every contract table: which files landed, their format and schema, and every
/// way they break the contract (collected, not stopped at the first).
pub async fn inspect(lake: &Lake, contract: &Contract) -> Result<Vec<Landed>> {
    let mut out = Vec::new();
    for table in &contract.tables {
        out.push(inspect_table(lake, table).await?);
    }
    Ok(out)
}

async fn inspect_table(lake: &Lake, table: &Table) -> Result<Landed> {
    let mut landed = Landed {
        table: table.clone(),
        files: Vec::new(),
        format: None,
        schema: None,
        missing_optional: Vec::new(),
        problems: Vec::new(),
        ignored_files: Vec::new(),
    };
    let (parquet, csv) = list_files(lake, table, &mut landed).await?;
    if parquet.is_empty() && csv.is_empty() {
        if table.required {
            landed.problems.push(problem(
                table,
                None,
                None,
                format!("required table is missing (no .parquet or .csv files under {}/)", table.path),
                format!("land the {} table there; its columns are in data/contract/CONTRACT.md", table.name),
            ));
        }
        return Ok(landed);
    }
    if !parquet.is_empty() && !csv.is_empty() {
        landed.problems.push(problem(
            table,
            None,
            None,
            format!("mixes {} Parquet and {} CSV files", parquet.len(), csv.len()),
            "land one format per table (convert the CSV files to Parquet, or move them to another lake)".into(),
        ));
        return Ok(landed);
    }
    let schemas = if !parquet.is_empty() {
        landed.format = Some(Format::Parquet);
        let schemas = parquet_schemas(lake, table, &parquet, &mut landed.problems).await;
        landed.files = parquet;
        schemas
    } else {
        landed.format = Some(Format::Csv);
        let schemas = csv_schemas(lake, table, &csv, &mut landed.problems).await?;
        landed.files = csv;
        schemas
    };
    check_columns(table, landed.format, &schemas, &mut landed.problems);
    if landed.problems.iter().any(|p| p.file.is_some()) {
        return Ok(landed);
    }
    match merged_schema(table, landed.format, &schemas) {
        Ok(schema) => landed.schema = Some(schema),
        Err(p) => {
            landed.problems.push(p);
            return Ok(landed);
        }
    }
    landed.missing_optional = table
        .columns
        .iter()
        .filter(|c| !c.required && landed.field(&c.name).is_none())
        .map(|c| c.name.clone())
        .collect();
    Ok(landed)
}

fn problem(table: &Table, file: Option<&str>, column: Option<&str>, problem: String, fix: String) -> ContractProblem {
    ContractProblem {
        table: table.name.clone(),
        file: file.map(str::to_string),
        column: column.map(str::to_string),
        problem,
        fix,
    }
}

/// The table's Parquet and CSV files; hidden files (`_`, `.`) are skipped, others recorded as ignored.
async fn list_files(lake: &Lake, table: &Table, landed: &mut Landed) -> Result<(Vec<ObjectMeta>, Vec<ObjectMeta>)> {
    let mut parquet = Vec::new();
    let mut csv = Vec::new();
    for item in lake.list(&format!("{}/", table.path)).await? {
        let rel = lake.relative(&item.location);
        let hidden = rel.split('/').any(|part| part.starts_with('_') || part.starts_with('.'));
        if hidden {
            continue;
        }
        if rel.ends_with(".parquet") {
            parquet.push(item);
        } else if rel.ends_with(".csv") {
            csv.push(item);
        } else {
            landed.ignored_files.push(rel);
        }
    }
    Ok((parquet, csv))
}

/// Each Parquet file's schema, from its footer only; an unreadable file is a problem, not an error.
async fn parquet_schemas(
    lake: &Lake,
    table: &Table,
    files: &[ObjectMeta],
    problems: &mut Vec<ContractProblem>,
) -> Vec<(String, SchemaRef)> {
    let mut schemas = Vec::new();
    for item in files {
        let rel = lake.relative(&item.location);
        #[allow(deprecated)]
        let reader = ParquetObjectReader::new(lake.store.clone(), item.location.clone()).with_file_size(item.size);
        match ParquetRecordBatchStreamBuilder::new(reader).await {
            Ok(builder) => schemas.push((rel, builder.schema().clone())),
            Err(e) => problems.push(problem(
                table,
                Some(&rel),
                None,
                format!("unreadable Parquet file ({e})"),
                "re-land the file: a truncated or interrupted upload looks like this; if it is not data, remove it"
                    .into(),
            )),
        }
    }
    schemas
}

/// Each CSV file's header as an all-string schema.
async fn csv_schemas(
    lake: &Lake,
    table: &Table,
    files: &[ObjectMeta],
    problems: &mut Vec<ContractProblem>,
) -> Result<Vec<(String, SchemaRef)>> {
    let mut schemas = Vec::new();
    for item in files {
        let rel = lake.relative(&item.location);
        let head = lake.store.get_range(&item.location, 0..item.size.min(64 * 1024)).await?;
        match csv_header(&head) {
            Some(names) => {
                let fields: Vec<Field> = names.into_iter().map(|n| Field::new(n, DataType::Utf8, true)).collect();
                schemas.push((rel, Arc::new(Schema::new(fields))));
            }
            None => problems.push(problem(
                table,
                Some(&rel),
                None,
                "CSV file has no header line".into(),
                "write a header line with the contract's column names".into(),
            )),
        }
    }
    Ok(schemas)
}

/// Per file: every required column present, every present column of a readable type.
fn check_columns(
    table: &Table,
    format: Option<Format>,
    schemas: &[(String, SchemaRef)],
    problems: &mut Vec<ContractProblem>,
) {
    for (rel, schema) in schemas {
        for col in table.all_columns() {
            let field = schema.fields().iter().find(|f| f.name().eq_ignore_ascii_case(&col.name));
            match field {
                None if col.required => problems.push(problem(
                    table,
                    Some(rel),
                    Some(&col.name),
                    "required column is missing".into(),
                    format!("add column {} ({}) to the file, or map it in an import mapping", col.name, col.ty.name()),
                )),
                Some(f) if format == Some(Format::Parquet) && !col.ty.accepts(f.data_type()) => problems.push(problem(
                    table,
                    Some(rel),
                    Some(&col.name),
                    format!("has Parquet type {} but the contract says {}", f.data_type(), col.ty.name()),
                    format!("land {} as {} (cast it in the connector or an import mapping)", col.name, col.ty.name()),
                )),
                _ => {}
            }
        }
    }
}

/// One schema for the table: CSV files must share a header, Parquet files merge.
fn merged_schema(
    table: &Table,
    format: Option<Format>,
    schemas: &[(String, SchemaRef)],
) -> std::result::Result<SchemaRef, ContractProblem> {
    if format == Some(Format::Csv) {
        let first = &schemas[0];
        if let Some((rel, _)) = schemas.iter().find(|(_, s)| s.fields() != first.1.fields()) {
            return Err(problem(
                table,
                Some(rel),
                None,
                format!("CSV header differs from {}", first.0),
                "give every CSV file of a table the same header".into(),
            ));
        }
        return Ok(first.1.clone());
    }
    // Text is one type whichever writer landed it (plain, large or view strings).
    match Schema::try_merge(schemas.iter().map(|(_, s)| text_as_views(s))) {
        Ok(merged) => Ok(Arc::new(merged)),
        Err(e) => Err(problem(
            table,
            None,
            None,
            format!("files disagree on column types ({e})"),
            "re-land the files with one type per column".into(),
        )),
    }
}

/// Column names from a CSV header line; a trailing empty name (a line ending in a comma, as some
/// exports write) becomes `_unnamed_N` so the rows still line up.
pub fn csv_header(head: &[u8]) -> Option<Vec<String>> {
    let text = String::from_utf8_lossy(head);
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let line = text.lines().next()?.trim_end_matches('\r');
    if line.trim().is_empty() {
        return None;
    }
    let mut names = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for ch in line.chars() {
        match ch {
            '"' => quoted = !quoted,
            ',' if !quoted => names.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    names.push(cur);
    Some(
        names
            .into_iter()
            .enumerate()
            .map(|(i, n)| if n.trim().is_empty() { format!("_unnamed_{i}") } else { n.trim().to_string() })
            .collect(),
    )
}

/// A Parquet file's schema with its text columns read as string views: the reader decodes them
/// straight into views of its pages, where plain strings would be copied out and then cast to the
/// views every later layer reads (`CAST(... AS VARCHAR)` is `Utf8View`). On a million deals that
/// cast and the copy a filter made of the plain strings cost validate 7 s and 1.7 GB of its peak.
/// Files of one table that differ only in how their text is typed (a writer that stores views,
/// another plain strings) merge to one schema.
pub fn text_as_views(schema: &SchemaRef) -> Schema {
    let fields: Vec<_> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Utf8 | DataType::LargeUtf8 => Arc::new(f.as_ref().clone().with_data_type(DataType::Utf8View)),
            _ => f.clone(),
        })
        .collect();
    Schema::new_with_metadata(fields, schema.metadata().clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_header_handles_trailing_comma_and_quotes() {
        let h = csv_header(b"\xef\xbb\xbf\"Prospect ID\",Lead Number,\r\n1,2,\r\n").unwrap();
        assert_eq!(h, ["Prospect ID", "Lead Number", "_unnamed_2"]);
    }
}
