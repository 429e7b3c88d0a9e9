//! Builds the SQL catalog of a lake: `raw` (as landed), `known` (the version of each row known as
//! of the run date), `staging` (typed, business-ready, sql/staging/*.sql) and `output` (published runs).

use std::sync::Arc;

use chrono::{Days, NaiveDate};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::MemorySchemaProvider;
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig};
use datafusion::parquet::arrow::ParquetRecordBatchStreamBuilder;
// Deprecated in parquet 59 in favour of hand-written AsyncFileReaders; it still does exactly the
// footer-only read we need, so keep it until DataFusion's own replacement lands.
#[allow(deprecated)]
use datafusion::parquet::arrow::async_reader::ParquetObjectReader;
use datafusion::prelude::{SessionConfig, SessionContext};
use object_store::{ObjectMeta, ObjectStoreExt};

use crate::contract::{ColumnType, Contract, Table};
use crate::error::{ContractProblem, Error, Result};
use crate::lake::Lake;

/// The layers an analyst can query, in the order data flows through them.
pub const SCHEMAS: &[(&str, &str)] = &[
    ("raw", "tables exactly as landed (files under raw/)"),
    ("known", "contract columns and types, the version of each row known as of the run date"),
    ("staging", "typed, as-of, business-ready (sql/staging/*.sql); the default schema"),
    ("mart", "facts the jobs share (sql/marts/*.sql and the org hierarchy), as of the run date"),
    ("output", "tables published by jobs (latest committed run per as-of date)"),
    ("log", "append-only logs (the decision-trace log), every record ever appended"),
];

const KNOWN_TEMPLATE: &str = include_str!("../sql/staging/_known_as_of.sql");

macro_rules! staging_sql {
    ($($name:literal),* $(,)?) => {
        &[$(($name, include_str!(concat!("../sql/staging/", $name, ".sql")))),*]
    };
}

/// One SQL file per staged table, named after the table it produces.
/// Mart views, in dependency order (`stage_exit` reads `deal`).
pub const MART_SQL: &[(&str, &str)] = &[
    ("deal", include_str!("../sql/marts/deal.sql")),
    ("quota_day", include_str!("../sql/marts/quota_day.sql")),
    ("stage_exit", include_str!("../sql/marts/stage_exit.sql")),
    ("activity", include_str!("../sql/marts/activity.sql")),
    ("deal_context", include_str!("../sql/risk/deal_context.sql")),
];

pub const STAGING_SQL: &[(&str, &str)] = staging_sql!(
    "account",
    "contact",
    "user",
    "user_role",
    "opportunity",
    "opportunity_history",
    "opportunity_stage",
    "opportunity_contact_role",
    "opportunity_line_item",
    "task",
    "event",
    "lead",
    "lead_history",
    "campaign",
    "campaign_member",
    "usage_daily",
    "product_events",
    "tracker_mention",
    "quota",
);

/// The run date. `None` means "everything landed so far".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AsOf(pub Option<NaiveDate>);

impl AsOf {
    /// The first instant after the as-of date, as a SQL literal.
    pub fn end_literal(&self) -> String {
        match self.0 {
            Some(d) => format!("TIMESTAMP '{} 00:00:00'", d.checked_add_days(Days::new(1)).unwrap_or(d)),
            None => "TIMESTAMP '2200-01-01 00:00:00'".to_string(),
        }
    }

    pub fn label(&self) -> String {
        self.0.map(|d| d.to_string()).unwrap_or_else(|| "latest".into())
    }
}

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
    let problem = |file: Option<&str>, column: Option<&str>, problem: String, fix: String| ContractProblem {
        table: table.name.clone(),
        file: file.map(str::to_string),
        column: column.map(str::to_string),
        problem,
        fix,
    };
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
    if parquet.is_empty() && csv.is_empty() {
        if table.required {
            landed.problems.push(problem(
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
            None,
            None,
            format!("mixes {} Parquet and {} CSV files", parquet.len(), csv.len()),
            "land one format per table (convert the CSV files to Parquet, or move them to another lake)".into(),
        ));
        return Ok(landed);
    }
    let mut schemas = Vec::new();
    if !parquet.is_empty() {
        landed.format = Some(Format::Parquet);
        for item in &parquet {
            let rel = lake.relative(&item.location);
            #[allow(deprecated)]
            let reader = ParquetObjectReader::new(lake.store.clone(), item.location.clone()).with_file_size(item.size);
            match ParquetRecordBatchStreamBuilder::new(reader).await {
                Ok(builder) => schemas.push((rel, builder.schema().clone())),
                Err(e) => landed.problems.push(problem(
                    Some(&rel),
                    None,
                    format!("unreadable Parquet file ({e})"),
                    "re-land the file: a truncated or interrupted upload looks like this; if it is not data, remove it"
                        .into(),
                )),
            }
        }
        landed.files = parquet;
    } else {
        landed.format = Some(Format::Csv);
        for item in &csv {
            let rel = lake.relative(&item.location);
            let head = lake.store.get_range(&item.location, 0..item.size.min(64 * 1024)).await?;
            match csv_header(&head) {
                Some(names) => {
                    let fields: Vec<Field> = names.into_iter().map(|n| Field::new(n, DataType::Utf8, true)).collect();
                    schemas.push((rel, Arc::new(Schema::new(fields))));
                }
                None => landed.problems.push(problem(
                    Some(&rel),
                    None,
                    "CSV file has no header line".into(),
                    "write a header line with the contract's column names".into(),
                )),
            }
        }
        landed.files = csv;
    }
    // Per file: every required column present, every present column of a readable type.
    for (rel, schema) in &schemas {
        for col in table.all_columns() {
            let field = schema.fields().iter().find(|f| f.name().eq_ignore_ascii_case(&col.name));
            match field {
                None if col.required => landed.problems.push(problem(
                    Some(rel),
                    Some(&col.name),
                    "required column is missing".into(),
                    format!("add column {} ({}) to the file, or map it in an import mapping", col.name, col.ty.name()),
                )),
                Some(f) if landed.format == Some(Format::Parquet) && !col.ty.accepts(f.data_type()) => {
                    landed.problems.push(problem(
                        Some(rel),
                        Some(&col.name),
                        format!("has Parquet type {} but the contract says {}", f.data_type(), col.ty.name()),
                        format!(
                            "land {} as {} (cast it in the connector or an import mapping)",
                            col.name,
                            col.ty.name()
                        ),
                    ))
                }
                _ => {}
            }
        }
    }
    if landed.problems.iter().any(|p| p.file.is_some()) {
        return Ok(landed);
    }
    if landed.format == Some(Format::Csv) {
        let first = &schemas[0];
        if let Some((rel, _)) = schemas.iter().find(|(_, s)| s.fields() != first.1.fields()) {
            landed.problems.push(problem(
                Some(rel),
                None,
                format!("CSV header differs from {}", first.0),
                "give every CSV file of a table the same header".into(),
            ));
            return Ok(landed);
        }
        landed.schema = Some(first.1.clone());
    } else {
        match Schema::try_merge(schemas.iter().map(|(_, s)| s.as_ref().clone())) {
            Ok(merged) => landed.schema = Some(Arc::new(merged)),
            Err(e) => {
                landed.problems.push(problem(
                    None,
                    None,
                    format!("files disagree on column types ({e})"),
                    "re-land the files with one type per column".into(),
                ));
                return Ok(landed);
            }
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

/// A SQL session over a lake as of a date: every layer registered by name.
pub struct LakeSession {
    pub ctx: SessionContext,
    pub lake: Lake,
    pub as_of: AsOf,
    pub landed: Vec<Landed>,
}

impl LakeSession {
    /// Registers every layer. Tables with contract problems are registered empty and reported in
    /// `landed`; callers that must not run on a broken lake check `contract_problems()` first.
    pub async fn open(lake: &Lake, as_of: AsOf) -> Result<LakeSession> {
        let contract = Contract::builtin();
        let landed = inspect(lake, contract).await?;
        let config = SessionConfig::new()
            .with_default_catalog_and_schema("datafusion", "staging")
            .with_information_schema(true)
            .with_target_partitions(std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).max(2));
        // With GTM_LOOP_MEMORY_LIMIT set, sorts and joins spill to disk past that budget. Unset, the
        // pool is unbounded: DataFusion 55 cannot spill every merge, so a default cap made large
        // validations fail that fit in memory (see the closing notes of the lake-foundation issue).
        let mut builder = datafusion::execution::runtime_env::RuntimeEnvBuilder::new();
        if let Some(limit) = memory_limit() {
            builder = builder.with_memory_limit(limit, 1.0);
        }
        let runtime = builder.build_arc()?;
        let ctx = SessionContext::new_with_config_rt(config, runtime);
        lake.register(&ctx);
        let catalog = ctx.catalog("datafusion").ok_or_else(|| Error::Other("no default catalog".into()))?;
        for (schema, _) in SCHEMAS {
            catalog.register_schema(schema, Arc::new(MemorySchemaProvider::new()))?;
        }
        let session = LakeSession { ctx, lake: lake.clone(), as_of, landed };
        for landed in &session.landed {
            session.register_raw(landed).await?;
            session.register_known(landed).await?;
        }
        for (name, sql) in STAGING_SQL {
            let view = session.declared(sql, &format!("sql/staging/{name}.sql")).await?.into_view();
            session.ctx.register_table(format!("staging.{name}"), view)?;
        }
        for (name, sql) in MART_SQL {
            let view = session.declared(sql, &format!("sql/marts/{name}.sql")).await?.into_view();
            session.ctx.register_table(format!("mart.{name}"), view)?;
        }
        crate::org::register(&session).await?;
        crate::publish::register_outputs(&session).await?;
        crate::decision_log::register(&session).await?;
        Ok(session)
    }

    /// Plans a declared SQL text (as-of slots filled); an error names where it is declared.
    pub async fn declared(&self, sql: &str, source: &str) -> Result<datafusion::prelude::DataFrame> {
        self.ctx.sql(&self.fill(sql)).await.map_err(|e| Error::Other(format!("{source} does not plan: {e}")))
    }

    /// Runs a declared SQL text and collects its (small) result; errors name where it is declared.
    pub async fn collect_declared(&self, sql: &str, source: &str) -> Result<Vec<RecordBatch>> {
        self.declared(sql, source)
            .await?
            .collect()
            .await
            .map_err(|e| Error::Other(format!("{source} does not run: {e}")))
    }

    /// Every contract problem found while inspecting the lake.
    pub fn contract_problems(&self) -> Vec<ContractProblem> {
        self.landed.iter().flat_map(|l| l.problems.clone()).collect()
    }

    pub fn landed(&self, table: &str) -> Option<&Landed> {
        self.landed.iter().find(|l| l.table.name == table)
    }

    /// Fills the as-of slots of a SQL text.
    pub fn fill(&self, sql: &str) -> String {
        let date = match self.as_of.0 {
            Some(d) => format!("DATE '{d}'"),
            None => "DATE '2199-12-31'".into(),
        };
        let mut sql = sql.replace("{{as_of_end}}", &self.as_of.end_literal()).replace("{{as_of_date}}", &date);
        // {{landed:table.column}}: whether the lake carries that column at all.
        while let Some(start) = sql.find("{{landed:") {
            let Some(len) = sql[start..].find("}}") else { break };
            let spec = &sql[start + 9..start + len];
            let (table, column) = spec.split_once('.').unwrap_or((spec, ""));
            let landed = self.landed(table).is_some_and(|l| l.field(column).is_some());
            sql.replace_range(start..start + len + 2, if landed { "TRUE" } else { "FALSE" });
        }
        sql
    }

    async fn register_raw(&self, landed: &Landed) -> Result<()> {
        let name = format!("raw.{}", landed.table.name);
        let (Some(schema), Some(format)) = (landed.schema.clone(), landed.format) else {
            let empty = Arc::new(landed.table.arrow_schema(landed.table.cdc));
            self.ctx.register_table(name, Arc::new(MemTable::try_new(empty, vec![vec![]])?))?;
            return Ok(());
        };
        let options = match format {
            Format::Parquet => ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet"),
            Format::Csv => {
                ListingOptions::new(Arc::new(CsvFormat::default().with_has_header(true))).with_file_extension(".csv")
            }
        };
        let url = self.lake.listing_url(&format!("{}/", landed.table.path))?;
        let config = ListingTableConfig::new(url).with_listing_options(options).with_schema(schema);
        self.ctx.register_table(name, Arc::new(ListingTable::try_new(config)?))?;
        Ok(())
    }

    /// The landed table read with contract columns and types (missing columns NULL), as a subquery.
    /// Every table gets the CDC columns, NULL where not landed, so one template serves all.
    pub fn conformed_sql(landed: &Landed) -> String {
        let table = &landed.table;
        let mut columns = table.all_columns();
        if !table.cdc {
            columns.extend(crate::contract::cdc_columns());
        }
        let select: Vec<String> = columns
            .iter()
            .map(|col| {
                let expr = match landed.field(&col.name) {
                    None => format!("CAST(NULL AS {})", col.ty.sql()),
                    Some(f) => conform_expr(&quote(f.name()), f.data_type(), col.ty),
                };
                format!("{expr} AS {}", quote(&col.name))
            })
            .collect();
        format!("(SELECT {} FROM raw.{})", select.join(", "), quote(&table.name))
    }

    async fn register_known(&self, landed: &Landed) -> Result<()> {
        let table = &landed.table;
        let conformed = Self::conformed_sql(landed);
        let known_filter = match &table.known_at {
            Some(col) => format!("CAST(c.\"{col}\" AS TIMESTAMP) < {}", self.as_of.end_literal()),
            None => "TRUE".into(),
        };
        let key = table.key.iter().map(|k| format!("c.\"{k}\"")).collect::<Vec<_>>().join(", ");
        let sql = self.fill(
            &KNOWN_TEMPLATE
                .replace("{{conformed}}", &conformed)
                .replace("{{key}}", &key)
                .replace("{{known_filter}}", &known_filter),
        );
        let view = self
            .ctx
            .sql(&sql)
            .await
            .map_err(|e| Error::Other(format!("known.{} does not plan: {e}", table.name)))?
            .into_view();
        self.ctx.register_table(format!("known.{}", table.name), view)?;
        Ok(())
    }
}

/// The query memory budget from GTM_LOOP_MEMORY_LIMIT ("4G", "512M", bytes), if set.
pub fn memory_limit() -> Option<usize> {
    let v = std::env::var("GTM_LOOP_MEMORY_LIMIT").ok()?;
    let v = v.trim().to_ascii_uppercase();
    let (num, mult) = match v.chars().last() {
        Some('G') => (&v[..v.len() - 1], 1usize << 30),
        Some('M') => (&v[..v.len() - 1], 1usize << 20),
        _ => (v.as_str(), 1usize),
    };
    match num.parse::<f64>() {
        Ok(n) => Some((n * mult as f64) as usize),
        Err(_) => {
            eprintln!("warning: GTM_LOOP_MEMORY_LIMIT={v} is not a size like 4G or 512M; no limit set");
            None
        }
    }
}

/// A SQL identifier, quoted.
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The SQL expression that reads a landed column as its contract type. Text (CSV) is parsed with
/// TRY_CAST: values that do not parse become NULL here and are counted by `validate`.
pub fn conform_expr(col: &str, landed: &DataType, ty: ColumnType) -> String {
    let is_text = matches!(landed, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
    if !is_text || ty == ColumnType::String {
        return format!("CAST({col} AS {})", ty.sql());
    }
    let v = format!("NULLIF(TRIM({col}), '')");
    match ty {
        ColumnType::Date => format!("COALESCE(TRY_CAST({v} AS DATE), CAST(TRY_CAST({v} AS TIMESTAMP) AS DATE))"),
        _ => format!("TRY_CAST({v} AS {})", ty.sql()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_contract_table_has_a_staging_model() {
        for t in &Contract::builtin().tables {
            assert!(STAGING_SQL.iter().any(|(n, _)| *n == t.name), "sql/staging/{}.sql missing", t.name);
        }
    }

    #[test]
    fn csv_header_handles_trailing_comma_and_quotes() {
        let h = csv_header(b"\xef\xbb\xbf\"Prospect ID\",Lead Number,\r\n1,2,\r\n").unwrap();
        assert_eq!(h, ["Prospect ID", "Lead Number", "_unnamed_2"]);
    }

    #[test]
    fn as_of_end_is_the_next_midnight() {
        let a = AsOf(Some(NaiveDate::from_ymd_opt(2024, 2, 29).unwrap()));
        assert_eq!(a.end_literal(), "TIMESTAMP '2024-03-01 00:00:00'");
    }
}
