//! The registry of published tables: which runs committed (their manifests), which files readers
//! see per table and as-of date, and the `output` schema registered from them.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig};

use crate::error::Result;
use crate::lake::Lake;
use crate::layers::LakeSession;
use crate::outputs::run_writer::{FileEntry, Manifest, RUNS_DIR, TableEntry};

/// Every committed run, oldest first. A manifest that does not parse is skipped with a warning:
/// it cannot be a complete commit (puts are atomic), so it is somebody else's file.
/// A run made inside a cadence run counts only once that cadence run has committed (or, for the
/// cadence run's own later steps, while it is the one in progress in this process).
pub async fn committed_runs(lake: &Lake) -> Result<Vec<Manifest>> {
    let batches = crate::outputs::cadence::committed(lake).await?;
    Ok(all_runs(lake)
        .await?
        .into_iter()
        .filter(|m| m.batch.as_ref().is_none_or(|b| batches.contains(b) || lake.batch.as_ref() == Some(b)))
        .collect())
}

/// Every job manifest in the lake, committed cadence or not (for `gc` and `runs`).
pub async fn all_runs(lake: &Lake) -> Result<Vec<Manifest>> {
    let mut runs: Vec<Manifest> = lake.json_files(RUNS_DIR, "a run manifest").await?;
    runs.sort_by(|a, b| a.committed_at.cmp(&b.committed_at).then(a.run_id.cmp(&b.run_id)));
    Ok(runs)
}

/// The newest committed run of `job` for the as-of date `as_of` (a date or "latest").
pub fn latest_run<'a>(runs: &'a [Manifest], job: &str, as_of: &str) -> Option<&'a Manifest> {
    runs.iter().rev().find(|m| m.job == job && m.as_of == as_of)
}

/// The file of `table` in the newest committed run of `job` for `as_of` that wrote that table.
pub fn latest_table_file<'a>(runs: &'a [Manifest], job: &str, table: &str, as_of: &str) -> Option<&'a FileEntry> {
    runs.iter()
        .rev()
        .filter(|m| m.job == job && m.as_of == as_of)
        .find_map(|m| m.tables.iter().find(|t| t.name == table).and_then(|t| t.files.first()))
}

/// The files readers see for each output table: per as-of date, those of the newest committed run.
pub fn visible_files(runs: &[Manifest]) -> BTreeMap<String, Vec<String>> {
    let mut latest: BTreeMap<(String, String), &TableEntry> = BTreeMap::new();
    for run in runs {
        for t in &run.tables {
            latest.insert((t.name.clone(), run.as_of.clone()), t);
        }
    }
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for ((name, _), entry) in latest {
        out.entry(name).or_default().extend(entry.files.iter().map(|f| f.path.clone()));
    }
    out
}

/// Registers `output.<table>` for every published table and `output.runs` for the manifests.
pub async fn register_outputs(session: &LakeSession) -> Result<()> {
    let runs = committed_runs(&session.lake).await?;
    for (name, files) in visible_files(&runs) {
        let urls = files.iter().map(|f| session.lake.listing_url(f)).collect::<Result<Vec<_>>>()?;
        let options = ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
        let config = ListingTableConfig::new_with_multi_paths(urls)
            .with_listing_options(options)
            .infer_schema(&session.ctx.state())
            .await?;
        session.ctx.register_table(format!("output.{name}"), Arc::new(ListingTable::try_new(config)?))?;
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("run_id", DataType::Utf8, false),
        Field::new("job", DataType::Utf8, false),
        Field::new("as_of", DataType::Utf8, false),
        Field::new("committed_at", DataType::Utf8, false),
        Field::new("tables", DataType::Utf8, false),
        Field::new("code_version", DataType::Utf8, false),
        // "playbook <label> <content hash>" for the jobs that use a playbook.
        Field::new("playbook_version", DataType::Utf8, true),
        Field::new("notes", DataType::Utf8, false),
        // Where the run's plans executed: NULL for this process, `ballista df://host:port` on a cluster.
        Field::new("engine", DataType::Utf8, true),
    ]));
    let col = |f: &dyn Fn(&Manifest) -> String| -> ArrayRef {
        Arc::new(StringArray::from(runs.iter().map(f).collect::<Vec<_>>()))
    };
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            col(&|m| m.run_id.clone()),
            col(&|m| m.job.clone()),
            col(&|m| m.as_of.clone()),
            col(&|m| m.committed_at.clone()),
            col(&|m| m.tables.iter().map(|t| format!("{}({})", t.name, t.rows)).collect::<Vec<_>>().join(", ")),
            col(&|m| m.code_version.clone()),
            Arc::new(StringArray::from(runs.iter().map(|m| m.playbook_version.clone()).collect::<Vec<_>>())),
            // What the run could not measure or chose to skip, one note per line.
            col(&|m| m.notes.join("\n")),
            Arc::new(StringArray::from(runs.iter().map(|m| m.engine.clone()).collect::<Vec<_>>())),
        ],
    )?;
    session.register_rows("output.runs", schema, vec![batch]).await
}
