//! The one way jobs publish tables: data files go under a run-specific folder, then a manifest is
//! written in a single put. Readers only follow manifests, so a run is visible whole or not at all.
//!
//! Layout under the lake root:
//!   output/<table>/as_of=<date>/run=<run_id>/part-00000.parquet   data (invisible until committed)
//!   output/_runs/<run_id>.json                                    the commit marker and manifest
//! For each (table, as-of date) readers take the newest committed run, so re-running a date
//! replaces its outputs atomically and leaves other dates alone.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use chrono::{SecondsFormat, Utc};
use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::layers::{AsOf, LakeSession};

pub const RUNS_DIR: &str = "output/_runs";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileEntry {
    pub path: String,
    pub bytes: u64,
    pub rows: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TableEntry {
    pub name: String,
    pub rows: u64,
    pub files: Vec<FileEntry>,
    pub columns: Vec<(String, String)>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InputFingerprint {
    pub table: String,
    pub files: u64,
    pub bytes: u64,
    /// Hash of every file's path, size and last-modified time: changes when any input changes.
    pub fingerprint: String,
}

/// The commit marker of one run: what it read, what it wrote, with which code and playbook.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub run_id: String,
    pub job: String,
    pub as_of: String,
    pub started_at: String,
    pub committed_at: String,
    pub code_version: String,
    pub playbook_version: Option<String>,
    pub inputs: Vec<InputFingerprint>,
    pub tables: Vec<TableEntry>,
    pub timings_ms: BTreeMap<String, u64>,
    pub notes: Vec<String>,
    /// Files for reports (charts, summaries), written beside the tables.
    #[serde(default)]
    pub artifacts: Vec<FileEntry>,
    /// The cadence run this job ran in: its tables are visible only once that run has committed
    /// (`output/_cadence/<batch>.json` with status committed). None for a job run on its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<String>,
    /// Where the run's plans executed, when not in this process: `ballista df://host:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
}

/// Collects a run's tables; nothing is visible until `commit`.
pub struct RunWriter {
    lake: Lake,
    job: String,
    as_of: AsOf,
    run_id: String,
    started_at: String,
    started: Instant,
    tables: Vec<TableEntry>,
    inputs: Vec<InputFingerprint>,
    timings_ms: BTreeMap<String, u64>,
    notes: Vec<String>,
    artifacts: Vec<FileEntry>,
    playbook_version: Option<String>,
}

impl RunWriter {
    pub fn begin(lake: &Lake, job: &str, as_of: AsOf) -> RunWriter {
        let now = Utc::now();
        let run_id = format!("{}-{}-{}-p{}", now.format("%Y%m%dT%H%M%S%.6fZ"), job, as_of.label(), std::process::id());
        RunWriter {
            lake: lake.clone(),
            job: job.to_string(),
            as_of,
            run_id,
            started_at: now.to_rfc3339_opts(SecondsFormat::Millis, true),
            started: Instant::now(),
            tables: Vec::new(),
            inputs: Vec::new(),
            timings_ms: BTreeMap::new(),
            notes: Vec::new(),
            artifacts: Vec::new(),
            playbook_version: None,
        }
    }

    /// The playbook or catalog version the run used, recorded in its manifest.
    pub fn set_playbook_version(&mut self, version: impl Into<String>) {
        self.playbook_version = Some(version.into());
    }

    /// Writes a report file of the run (a chart, a summary) under
    /// `output/_artifacts/<as_of>/run=<run_id>/<name>`; like tables, it counts once committed.
    pub async fn write_artifact(&mut self, name: &str, bytes: Vec<u8>) -> Result<String> {
        let rel = format!("output/_artifacts/as_of={}/run={}/{name}", self.as_of.label(), self.run_id);
        let size = bytes.len() as u64;
        self.lake.put(&rel, bytes).await?;
        self.artifacts.push(FileEntry { path: rel.clone(), bytes: size, rows: 0 });
        Ok(rel)
    }

    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Records what the run read, from the session's inventory of landed files.
    pub fn record_inputs(&mut self, session: &LakeSession) {
        for landed in session.landed.iter().filter(|l| l.present()) {
            let mut h = Fnv64::default();
            for f in &landed.files {
                h.write(f.location.as_ref().as_bytes());
                h.write(&f.size.to_le_bytes());
                h.write(f.last_modified.to_rfc3339().as_bytes());
            }
            self.inputs.push(InputFingerprint {
                table: landed.table.name.clone(),
                files: landed.files.len() as u64,
                bytes: landed.files.iter().map(|f| f.size).sum(),
                fingerprint: format!("{:016x}", h.0),
            });
        }
    }

    pub fn timing(&mut self, step: &str, ms: u64) {
        self.timings_ms.insert(step.to_string(), ms);
    }

    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// Writes one table of the run (an `as_of_date` column is added first so tables read across
    /// dates stay distinguishable). The file is not visible until the run commits.
    pub async fn write_table(&mut self, name: &str, schema: SchemaRef, batches: &[RecordBatch]) -> Result<()> {
        let mut sink = self.table_sink(name, schema)?;
        for batch in batches {
            sink.write(batch)?;
        }
        self.finish_table(sink).await
    }

    /// Opens one table of the run to be written batch by batch: for a table too large to hold
    /// whole as rows (the KPI job's kpi_values, tens of millions of cells at a million deals),
    /// each batch is encoded into the Parquet file as it comes. `finish_table` stores it.
    pub fn table_sink(&self, name: &str, schema: SchemaRef) -> Result<TableSink> {
        if self.tables.iter().any(|t| t.name == name) {
            return Err(Error::Other(format!("run {} writes table {name} twice", self.run_id)));
        }
        let mut fields = vec![Arc::new(Field::new("as_of_date", DataType::Utf8, false))];
        fields.extend(schema.fields().iter().cloned());
        let schema = Arc::new(Schema::new(fields));
        let props = WriterProperties::builder().set_compression(Compression::ZSTD(ZstdLevel::default())).build();
        let writer = ArrowWriter::try_new(Vec::new(), schema.clone(), Some(props))?;
        Ok(TableSink { name: name.to_string(), label: self.as_of.label(), schema, writer, rows: 0 })
    }

    /// Stores a table opened with `table_sink`. The file is not visible until the run commits.
    pub async fn finish_table(&mut self, sink: TableSink) -> Result<()> {
        let TableSink { name, schema, writer, rows, label } = sink;
        if self.tables.iter().any(|t| t.name == name) {
            return Err(Error::Other(format!("run {} writes table {name} twice", self.run_id)));
        }
        let buf = writer.into_inner()?;
        let rel = format!("output/{name}/as_of={label}/run={}/part-00000.parquet", self.run_id);
        let bytes = buf.len() as u64;
        self.lake.put(&rel, buf).await?;
        if std::env::var("GTM_LOOP_FAIL_AFTER_WRITE").is_ok_and(|v| v == name) {
            // Test hook: a crash after data files exist but before the commit marker.
            return Err(Error::Other(format!("GTM_LOOP_FAIL_AFTER_WRITE: failing after writing {rel}")));
        }
        self.tables.push(TableEntry {
            name,
            rows,
            files: vec![FileEntry { path: rel, bytes, rows }],
            columns: schema.fields().iter().map(|f| (f.name().clone(), f.data_type().to_string())).collect(),
        });
        Ok(())
    }

    /// Publishes the run in one step: the manifest put. Returns the manifest.
    pub async fn commit(mut self) -> Result<Manifest> {
        self.timings_ms.insert("total".into(), self.started.elapsed().as_millis() as u64);
        let manifest = Manifest {
            run_id: self.run_id.clone(),
            job: self.job.clone(),
            as_of: self.as_of.label(),
            started_at: self.started_at.clone(),
            committed_at: Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true),
            code_version: crate::outputs::CODE_VERSION.to_string(),
            playbook_version: self.playbook_version.take(),
            inputs: std::mem::take(&mut self.inputs),
            tables: std::mem::take(&mut self.tables),
            timings_ms: std::mem::take(&mut self.timings_ms),
            notes: std::mem::take(&mut self.notes),
            artifacts: std::mem::take(&mut self.artifacts),
            batch: self.lake.batch.clone(),
            engine: self.lake.engine.is_cluster().then(|| self.lake.engine.label()),
        };
        let json = serde_json::to_vec_pretty(&manifest).map_err(|e| Error::Other(e.to_string()))?;
        self.lake.put(&format!("{RUNS_DIR}/{}.json", manifest.run_id), json).await?;
        Ok(manifest)
    }
}

/// FNV-1a: a small, stable hash for input fingerprints (not for security).
struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Fnv64(0xcbf29ce484222325)
    }
}

impl Fnv64 {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x100000001b3);
        }
    }
}

/// One table of a run being written batch by batch (`RunWriter::table_sink`): rows are encoded
/// into the Parquet file as they arrive, so only the compressed file is held, not the rows.
pub struct TableSink {
    name: String,
    label: String,
    schema: SchemaRef,
    writer: ArrowWriter<Vec<u8>>,
    rows: u64,
}

impl TableSink {
    /// Appends the rows of `batch` (in the schema given to `table_sink`).
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let as_of: ArrayRef = Arc::new(StringArray::from(vec![self.label.as_str(); batch.num_rows()]));
        let mut cols = vec![as_of];
        cols.extend(batch.columns().iter().cloned());
        self.writer.write(&RecordBatch::try_new(self.schema.clone(), cols)?)?;
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }
}
