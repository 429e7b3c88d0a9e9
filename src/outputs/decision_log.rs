//! The decision-trace log (action-outcome log): every recommendation, intervention and later
//! outcome, append-only in the lake under `log/decision_trace/`, the learning loop's training data.
//!
//! Why it cannot lose or half-write a record: each append is ONE new Parquet file written with a
//! single object-store put (a staged file renamed into place on local disk, one PUT on a cloud
//! store), so a crash leaves either the whole file or none; files are never rewritten or deleted.
//! Why re-running a week does not duplicate: record ids are derived from what the record is about
//! (not from the clock), ids already in the log are skipped before writing, the file is named by
//! the hash of its ids, and readers keep the first record per id.

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig};
use datafusion::parquet::arrow::ArrowWriter;
use serde::Serialize;

use crate::error::Result;
use crate::lake::Lake;
use crate::layers::LakeSession;
use crate::layers::columns::strings;

pub const DIR: &str = "log/decision_trace";

/// One record of the log. Which fields are set depends on `kind`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Record {
    pub record_id: String,
    /// kpi_intervention, kpi_outcome (the deal jobs add their own kinds).
    pub kind: String,
    pub as_of_date: String,
    pub recorded_at: String,
    pub subject_type: String,
    pub subject_id: String,
    pub period_start: Option<String>,
    pub playbook_version: String,
    pub status: Option<String>,
    pub action: Option<String>,
    pub owner_id: Option<String>,
    pub owner_name: Option<String>,
    pub follow_up_date: Option<String>,
    pub expected_outcome: Option<String>,
    /// JSON: the values and rows that fired the record.
    pub evidence: Option<String>,
    /// For an outcome: the record_id it is the outcome of.
    pub refers_to: Option<String>,
    pub outcome: Option<String>,
    /// For an outcome: the measured value (a KPI's value when the outcome was read).
    pub outcome_value: Option<f64>,
    /// The recommended action's playbook id (`action` holds its filled-in sentence).
    pub action_id: Option<String>,
    /// The score the record was made with (deal risk 0-100); `outcome_value` is never a score.
    pub score: Option<f64>,
    /// The content hash of the playbook file the record was made with (`playbook_version` is its
    /// human label, which two different files can share).
    pub playbook_hash: Option<String>,
    /// The code that wrote the record (`GTM_LOOP_CODE_VERSION`: package version + git describe);
    /// filled in by `append` when the writer leaves it empty.
    pub code_version: Option<String>,
}

/// A stable id from the parts that say what a record is about (FNV-1a, 64 bits, hex).
pub fn record_id(parts: &[&str]) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for p in parts {
        for b in p.as_bytes().iter().chain(std::iter::once(&0x1f)) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x100000001b3);
        }
    }
    format!("{h:016x}")
}

pub fn schema() -> SchemaRef {
    let s = |n: &str, null: bool| Field::new(n, DataType::Utf8, null);
    Arc::new(Schema::new(vec![
        s("record_id", false),
        s("kind", false),
        s("as_of_date", false),
        s("recorded_at", false),
        s("subject_type", false),
        s("subject_id", false),
        s("period_start", true),
        s("playbook_version", false),
        s("status", true),
        s("action", true),
        s("owner_id", true),
        s("owner_name", true),
        s("follow_up_date", true),
        s("expected_outcome", true),
        s("evidence", true),
        s("refers_to", true),
        s("outcome", true),
        Field::new("outcome_value", DataType::Float64, true),
        // Added with the learning loop: parts written before it read these as NULL.
        s("action_id", true),
        Field::new("score", DataType::Float64, true),
        s("playbook_hash", true),
        s("code_version", true),
    ]))
}

fn batch(records: &[Record]) -> Result<RecordBatch> {
    let s = |f: &dyn Fn(&Record) -> Option<String>| -> ArrayRef {
        Arc::new(StringArray::from(records.iter().map(f).collect::<Vec<_>>()))
    };
    Ok(RecordBatch::try_new(
        schema(),
        vec![
            s(&|r| Some(r.record_id.clone())),
            s(&|r| Some(r.kind.clone())),
            s(&|r| Some(r.as_of_date.clone())),
            s(&|r| Some(r.recorded_at.clone())),
            s(&|r| Some(r.subject_type.clone())),
            s(&|r| Some(r.subject_id.clone())),
            s(&|r| r.period_start.clone()),
            s(&|r| Some(r.playbook_version.clone())),
            s(&|r| r.status.clone()),
            s(&|r| r.action.clone()),
            s(&|r| r.owner_id.clone()),
            s(&|r| r.owner_name.clone()),
            s(&|r| r.follow_up_date.clone()),
            s(&|r| r.expected_outcome.clone()),
            s(&|r| r.evidence.clone()),
            s(&|r| r.refers_to.clone()),
            s(&|r| r.outcome.clone()),
            Arc::new(Float64Array::from(records.iter().map(|r| r.outcome_value).collect::<Vec<_>>())),
            s(&|r| r.action_id.clone()),
            Arc::new(Float64Array::from(records.iter().map(|r| r.score).collect::<Vec<_>>())),
            s(&|r| r.playbook_hash.clone()),
            s(&|r| r.code_version.clone()),
        ],
    )?)
}

/// The log's files: complete Parquet parts only. A staged upload left by a killed writer does not
/// end in `.parquet`; a `.parquet` file that is not one (no footer magic) is somebody else's
/// damaged file and is skipped with a warning naming it, so one bad file never hides the log.
async fn parts(lake: &Lake) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for meta in lake.list(&format!("{DIR}/")).await? {
        let rel = lake.relative(&meta.location);
        if !rel.ends_with(".parquet") {
            continue;
        }
        let ok = meta.size >= 12
            && lake.get_range(&rel, 0..4).await.is_ok_and(|b| b.as_ref() == b"PAR1")
            && lake.get_range(&rel, meta.size - 4..meta.size).await.is_ok_and(|b| b.as_ref() == b"PAR1");
        if ok {
            out.push(rel);
        } else {
            eprintln!(
                "warning: {rel} is not a complete Parquet file; skipped from log.decision_trace (move it out of {DIR}/)"
            );
        }
    }
    out.sort();
    Ok(out)
}

/// Every record id already in the log.
pub async fn existing_ids(session: &LakeSession) -> Result<BTreeSet<String>> {
    let batches = session.ctx.sql("SELECT record_id FROM log.decision_trace").await?.collect().await?;
    let mut ids = BTreeSet::new();
    for b in &batches {
        ids.extend(strings(b.column(0))?.into_iter().flatten());
    }
    Ok(ids)
}

/// Appends the records whose ids are not yet in the log, in one atomic file. Returns how many
/// were new. The session's `log.decision_trace` is re-registered to include them.
pub async fn append(session: &LakeSession, records: Vec<Record>) -> Result<usize> {
    let known = existing_ids(session).await?;
    let mut seen = BTreeSet::new();
    let new: Vec<Record> = records
        .into_iter()
        .filter(|r| !known.contains(&r.record_id) && seen.insert(r.record_id.clone()))
        .map(|mut r| {
            r.code_version.get_or_insert_with(|| crate::outputs::CODE_VERSION.to_string());
            r
        })
        .collect();
    if new.is_empty() {
        return Ok(0);
    }
    let ids: Vec<&str> = new.iter().map(|r| r.record_id.as_str()).collect();
    let name = format!("{DIR}/part-{}-{}.parquet", new[0].as_of_date, record_id(&ids));
    let mut buf = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut buf, schema(), None)?;
    writer.write(&batch(&new)?)?;
    writer.close()?;
    if std::env::var("GTM_LOOP_CRASH_IN_LOG_APPEND").is_ok() {
        // Test hook: the writer is killed half-way through its upload, leaving what an interrupted
        // staged upload leaves (a partial file under a temporary name), and never renaming it.
        session.lake.put(&format!("{name}#staged"), buf[..buf.len() / 2].to_vec()).await?;
        std::process::abort();
    }
    if !session.lake.exists(&name).await? {
        session.lake.put(&name, buf).await?;
    }
    register(session).await?;
    Ok(new.len())
}

/// Registers `log.decision_trace` (one row per record id, first written wins) and
/// `log.decision_trace_parts` (every row of every file, for audits).
pub async fn register(session: &LakeSession) -> Result<()> {
    let files = parts(&session.lake).await?;
    let _ = session.ctx.deregister_table("log.decision_trace_parts")?;
    let _ = session.ctx.deregister_table("log.decision_trace")?;
    if files.is_empty() {
        session.register_rows("log.decision_trace_parts", schema(), vec![]).await?;
    } else {
        let urls = files.iter().map(|f| session.lake.listing_url(f)).collect::<Result<Vec<_>>>()?;
        let options = ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
        let config = ListingTableConfig::new_with_multi_paths(urls).with_listing_options(options).with_schema(schema());
        session.ctx.register_table("log.decision_trace_parts", Arc::new(ListingTable::try_new(config)?))?;
    }
    let view = session
        .ctx
        .sql(
            "SELECT * EXCEPT (rk) FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY record_id ORDER BY recorded_at, as_of_date) AS rk \
             FROM log.decision_trace_parts) AS t WHERE rk = 1",
        )
        .await?
        .into_view();
    session.ctx.register_table("log.decision_trace", view)?;
    Ok(())
}
