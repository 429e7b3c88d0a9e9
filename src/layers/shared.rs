//! The run's shared as-of tables: every `known`, `staging` and `mart` table is computed at most once
//! per lake snapshot and as-of date, with only the columns the queries used, and then read from
//! memory by every later query, job and cadence step of the same process.
//!
//! DataFusion re-plans a view at each reference and does not share common sub-plans, so a funnel
//! that reads `staging.opportunity` in six joins would otherwise de-duplicate the CDC versions of
//! every deal six times. A table here is a wrapper around its view: the first scan runs the view
//! with the columns it was asked for and keeps the rows; a later scan that needs no other column is
//! served from them; one that needs more recomputes with the union of both column sets, once.
//!
//! What makes sharing correct is the key: a fingerprint of everything the layers are a function of
//! (the lake's location, the as-of date, the lake profile, and every landed file's path, size,
//! modification time and e-tag). A file landed between two steps changes the fingerprint, so a
//! later step never reads rows of an older snapshot. Published outputs and logs are never wrapped:
//! they change within a run. Memory is bounded: least recently used tables are dropped past a
//! budget (`GTM_LOOP_TABLE_CACHE`, default a quarter of the machine's memory; `0` turns sharing off).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;

use crate::layers::LakeSession;

/// One computed table: the columns it holds (indices into the view's schema, ascending) and rows.
/// `schema` is the view's (projected to `columns`), the one every scan is served under; `held` is
/// how the rows are stored: the same, except text columns kept as per-batch dictionaries (see
/// `store`), which a served scan turns back into the view's type batch by batch.
struct Entry {
    columns: Vec<usize>,
    schema: SchemaRef,
    held: SchemaRef,
    partitions: Vec<Vec<RecordBatch>>,
    /// The columns the rows are sorted by (held as one partition), when the view declares them.
    order: Vec<String>,
    bytes: usize,
    used: u64,
}

#[derive(Default)]
struct Cache {
    entries: HashMap<(u64, String), Entry>,
    /// One lock per table, so a table is computed once even when several queries ask at once
    /// (and a staging table can compute the known table it reads while holding its own).
    locks: HashMap<(u64, String), Arc<tokio::sync::Mutex<()>>>,
    bytes: usize,
    tick: u64,
    computed: u64,
    served: u64,
    /// How often each table was computed (tests read it: a table is computed once per snapshot).
    computes: HashMap<(u64, String), u64>,
}

fn cache() -> &'static Mutex<Cache> {
    static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// How often tables were computed and served from memory in this process, and the bytes held.
pub fn stats() -> (u64, u64, usize) {
    let c = cache().lock().expect("cache lock");
    (c.computed, c.served, c.bytes)
}

/// Whether one table of one snapshot is held now.
pub fn is_held(fingerprint: u64, table: &str) -> bool {
    let c = cache().lock().expect("cache lock");
    c.entries.contains_key(&(fingerprint, table.to_string()))
}

/// How often one table of one snapshot has been computed in this process.
pub fn computed_for(fingerprint: u64, table: &str) -> u64 {
    let c = cache().lock().expect("cache lock");
    c.computes.get(&(fingerprint, table.to_string())).copied().unwrap_or(0)
}

/// A table recomputed for more columns is taken whole when all its columns would fit in this
/// share of the budget (estimated from the bytes per column held so far).
const RECOMPUTE_ALL_SHARE: usize = 8;

/// The memory the shared tables may hold, from GTM_LOOP_TABLE_CACHE ("2G", "0") or a quarter of
/// the machine's (or container's) memory.
pub fn budget() -> usize {
    match std::env::var("GTM_LOOP_TABLE_CACHE") {
        Ok(v) => crate::layers::session::parse_bytes(&v).unwrap_or(0),
        Err(_) => crate::layers::session::machine_memory() / 4,
    }
}

/// The fingerprint of everything the lake layers of a session are a function of.
pub fn fingerprint(session: &LakeSession) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    session.lake.url.as_str().hash(&mut h);
    session.as_of.label().hash(&mut h);
    format!("{:?}", session.profile).hash(&mut h);
    for landed in &session.landed {
        landed.table.name.hash(&mut h);
        format!("{:?}", landed.schema).hash(&mut h);
        for f in &landed.files {
            f.location.as_ref().hash(&mut h);
            f.size.hash(&mut h);
            f.last_modified.timestamp_micros().hash(&mut h);
            f.e_tag.hash(&mut h);
        }
    }
    h.finish()
}

/// A layer table served from the process's shared tables (see the module doc).
pub struct SharedTable {
    key: (u64, String),
    view: Arc<dyn TableProvider>,
    /// The order its rows are held in (`layers::ordered`), or none.
    order: Vec<String>,
}

impl std::fmt::Debug for SharedTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedTable").field("table", &self.key.1).finish()
    }
}

/// Wraps a registered view so it is computed once per fingerprint, its rows held sorted by `order`
/// (columns of the view; see `layers::ordered`) when that is not empty; with a zero budget, the view.
pub fn wrap(fingerprint: u64, name: &str, view: Arc<dyn TableProvider>, order: &[String]) -> Arc<dyn TableProvider> {
    if budget() == 0 {
        return view;
    }
    Arc::new(SharedTable { key: (fingerprint, name.to_string()), view, order: order.to_vec() })
}

impl SharedTable {
    /// The held rows, if they carry every column of `wanted`, as a scan with that projection.
    fn served(&self, wanted: &[usize]) -> datafusion::error::Result<Option<Arc<dyn ExecutionPlan>>> {
        let mut c = cache().lock().expect("cache lock");
        c.tick += 1;
        let tick = c.tick;
        let Some(entry) = c.entries.get_mut(&self.key) else { return Ok(None) };
        let Some(projection) =
            wanted.iter().map(|w| entry.columns.iter().position(|c| c == w)).collect::<Option<Vec<_>>>()
        else {
            return Ok(None);
        };
        entry.used = tick;
        let plan = serve(&entry.partitions, &entry.schema, &entry.held, projection, &entry.order)?;
        c.served += 1;
        Ok(Some(plan))
    }

    /// The columns held now and the memory they take (none and 0 before the first computation).
    fn held(&self) -> (Vec<usize>, usize) {
        let c = cache().lock().expect("cache lock");
        c.entries.get(&self.key).map(|e| (e.columns.clone(), e.bytes)).unwrap_or_default()
    }

    /// Keeps computed rows, dropping least recently used tables past the budget.
    fn keep(&self, entry: Entry) {
        let budget = budget();
        let mut c = cache().lock().expect("cache lock");
        if let Some(old) = c.entries.remove(&self.key) {
            c.bytes -= old.bytes;
        }
        c.computed += 1;
        *c.computes.entry(self.key.clone()).or_default() += 1;
        c.bytes += entry.bytes;
        c.entries.insert(self.key.clone(), entry);
        while c.bytes > budget && c.entries.len() > 1 {
            let Some(oldest) =
                c.entries.iter().filter(|(k, _)| **k != self.key).min_by_key(|(_, e)| e.used).map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(e) = c.entries.remove(&oldest) {
                c.bytes -= e.bytes;
            }
        }
    }

    fn lock(&self) -> Arc<tokio::sync::Mutex<()>> {
        let mut c = cache().lock().expect("cache lock");
        c.locks.entry(self.key.clone()).or_default().clone()
    }
}

#[async_trait]
impl TableProvider for SharedTable {
    fn schema(&self) -> SchemaRef {
        self.view.schema()
    }

    fn table_type(&self) -> TableType {
        self.view.table_type()
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::error::Result<Vec<TableProviderFilterPushDown>> {
        // Filters stay above the scan: the held rows are the whole table (its used columns).
        Ok(vec![TableProviderFilterPushDown::Unsupported; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let all: Vec<usize> = (0..self.view.schema().fields().len()).collect();
        let wanted: Vec<usize> = projection.cloned().unwrap_or_else(|| all.clone());
        if let Some(plan) = self.served(&wanted)? {
            return Ok(plan);
        }
        if self.order.is_empty() && streamed().lock().expect("streamed lock").contains_key(&self.key) {
            return self.view.scan(state, Some(&wanted), &[], None).await;
        }
        let lock = self.lock();
        let _guard = lock.lock().await;
        // Another query may have computed it while this one waited.
        if let Some(plan) = self.served(&wanted)? {
            return Ok(plan);
        }
        let (mut columns, held_so_far) = self.held();
        if !columns.is_empty() && held_so_far / columns.len() * all.len() <= budget() / RECOMPUTE_ALL_SHARE {
            // A second computation because a later query named other columns: a table this small
            // is taken whole, so it is computed at most twice, not once per new column set (the
            // 1M-deal risk run computed staging.opportunity six times).
            columns = all.clone();
        }
        columns.extend(wanted.iter().copied());
        // The columns of the held order are held too (they are what makes it an order).
        let schema = self.view.schema();
        columns.extend(self.order.iter().filter_map(|c| schema.index_of(c).ok()));
        columns.sort_unstable();
        columns.dedup();
        if columns.is_empty() {
            // A row count (COUNT(*)) needs no column, but a projection must keep one.
            columns.push(0);
        }
        let span = crate::layers::trace::start(format!("shared {}", self.key.1));
        // A known table computed only to compute this staging table is not kept: the staging
        // table is (what later queries read), and a known table is read directly only by the
        // lake's checks, which compute it themselves. Kept, the million-deal win-probability step
        // held its known contacts and contact roles (392 MB) beside their staging tables.
        let known_before = (self.key.1.starts_with("staging.")
            && KEEP_KNOWN.load(std::sync::atomic::Ordering::Relaxed) == 0)
            .then(|| held_keys(self.key.0, "known."));
        let mut plan = self.view.scan(state, Some(&columns), &[], None).await?;
        if !self.order.is_empty() {
            plan = crate::layers::ordered::sorted(plan, &self.order)?;
        }
        // The rows are served under the view's logical schema, which the queries above were planned
        // against; `hold` stores each batch compactly as it arrives.
        let schema = Arc::new(self.view.schema().project(&columns)?);
        let (held, partitions) = hold(plan.clone(), state.task_ctx(), schema.clone()).await?;
        crate::layers::trace::plan(&self.key.1, plan.as_ref());
        let bytes = held_bytes(&partitions);
        if let Some(span) = span {
            let rows: usize = partitions.iter().flatten().map(|b| b.num_rows()).sum();
            // The columns that take the most, for tables worth looking at.
            let mut largest = String::new();
            if bytes >= 64 << 20 {
                let mut each: Vec<(usize, &str)> = (0..held.fields().len())
                    .map(|i| {
                        let one: Vec<Vec<RecordBatch>> = partitions
                            .iter()
                            .map(|p| p.iter().map(|b| b.project(&[i]).expect("a held column")).collect())
                            .collect();
                        (held_bytes(&one), held.field(i).name().as_str())
                    })
                    .collect();
                each.sort_unstable_by(|a, b| b.cmp(a));
                let top: Vec<String> = each.iter().take(6).map(|(b, n)| format!("{n} {}", b >> 20)).collect();
                largest = format!(" ({})", top.join(", "));
            }
            let batches: usize = partitions.iter().map(|p| p.len()).sum();
            span.done(&format!(
                "{} columns, {rows} rows in {batches} batches, {} MiB held{largest}",
                columns.len(),
                bytes >> 20
            ));
        }
        self.keep(Entry { columns, schema, held, partitions, order: self.order.clone(), bytes, used: 0 });
        if let Some(before) = known_before {
            drop_known_since(self.key.0, &before);
        }
        match self.served(&wanted)? {
            Some(plan) => Ok(plan),
            None => Err(datafusion::error::DataFusionError::Internal(format!(
                "shared table {} lost its rows right after computing them",
                self.key.1
            ))),
        }
    }
}

/// A scan of held rows under the view's schema: the projected columns, and those held as
/// dictionaries cast back to the view's text type as each batch streams out (a batch's dictionary
/// is its own, so what a served batch keeps alive is that batch's strings, not the table's). Rows
/// held in order are served as such (`layers::ordered::Ordered`).
fn serve(
    partitions: &[Vec<RecordBatch>],
    schema: &SchemaRef,
    held: &SchemaRef,
    projection: Vec<usize>,
    order: &[String],
) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
    let plan = serve_columns(partitions, schema, held, projection)?;
    Ok(if order.is_empty() { plan } else { crate::layers::ordered::Ordered::wrap(plan, order) })
}

fn serve_columns(
    partitions: &[Vec<RecordBatch>],
    schema: &SchemaRef,
    held: &SchemaRef,
    projection: Vec<usize>,
) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
    use datafusion::physical_expr::PhysicalExpr;
    use datafusion::physical_expr::expressions::{CastExpr, Column};
    use datafusion::physical_plan::projection::ProjectionExec;
    let decode = projection.iter().any(|&i| held.field(i).data_type() != schema.field(i).data_type());
    let scan = MemorySourceConfig::try_new_exec(partitions, held.clone(), Some(projection.clone()))?;
    if !decode {
        return Ok(scan);
    }
    let exprs: Vec<(Arc<dyn PhysicalExpr>, String)> = projection
        .iter()
        .enumerate()
        .map(|(at, &i)| {
            let field = schema.field(i);
            let column: Arc<dyn PhysicalExpr> = Arc::new(Column::new(field.name(), at));
            let expr: Arc<dyn PhysicalExpr> = if held.field(i).data_type() == field.data_type() {
                column
            } else {
                Arc::new(CastExpr::new(column, field.data_type().clone(), None))
            };
            (expr, field.name().clone())
        })
        .collect();
    Ok(Arc::new(ProjectionExec::try_new(exprs, scan)?))
}

/// A table of fewer rows is held as computed: dictionaries would save little and cost a cast at
/// every scan.
const DICTIONARY_MIN_ROWS: usize = 200_000;

/// Held batches gather at least half this many rows (one default DataFusion batch); a batch that
/// has them is held as it came (copying every 7k-row batch of known.task's filter made computing
/// staging.task take 4.6 s instead of 2.9 on a million deals). Each held batch carries its own
/// dictionaries and pays a per-batch cost at every scan; DataFusion's filters already emit full
/// batches (known.task at 30% selectivity: 8k rows a batch), so this only guards plans whose
/// operators do not.
const HELD_BATCH_ROWS: usize = 8192;

/// The most rows a held batch has: its dictionaries' keys are 16-bit (`dictionary_type`).
const HELD_BATCH_MAX: usize = i16::MAX as usize;

/// Runs a shared table's plan and stores its rows compactly as they arrive, partition by
/// partition; returns the schema they are held under and the rows.
///
/// Text columns are held the way Parquet stores them: each batch's column as a dictionary of its
/// own distinct values, where that takes less than 0.6 of the plain column, and otherwise as plain
/// strings (see `choose`; decided once for the table, on the largest batch buffered when the first
/// DICTIONARY_MIN_ROWS rows have arrived). A million-deal lake's 16M tasks carry five 16-character ids, each 32 bytes a
/// row as views; the owner, the deal and the contact repeat within a batch, so as dictionaries they
/// take about 5: known.task with 13 columns went from 4,103 MiB held to 1,448, staging.task with 7
/// from 2,753 MiB to 1,193. Each batch is stored as it arrives, so the plain table never exists as
/// a whole: collecting it first and storing it afterwards made computing known.task peak at 4.7 GB
/// above what was already held, for 1.5 GB kept.
///
/// Columns held plain get their strings copied into buffers of their own: a string-view column
/// that came out of a filter, an aggregate or a de-duplication still points into every data buffer
/// the Parquet decoder filled (versions dropped included), so a held table kept its whole input
/// alive, and every later operator that sized such a batch (`get_array_memory_size`, once per
/// buffer) spent its time there and reserved the whole input from the memory pool: a repartition
/// over mart.stage_exit spilled 120 times on a million deals with the pool mostly free.
///
/// A batch whose columns' types differ from `schema` (a UNION ALL of Utf8 and Utf8View comes out
/// as its first input's type) is cast to it, so a served scan matches the plans made against the
/// view's logical schema exactly.
async fn hold(
    plan: Arc<dyn ExecutionPlan>,
    ctx: Arc<datafusion::execution::TaskContext>,
    schema: SchemaRef,
) -> datafusion::error::Result<(SchemaRef, Vec<Vec<RecordBatch>>)> {
    use datafusion::error::DataFusionError;
    use futures::StreamExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    /// The table-wide choice of columns to hold as dictionaries, made once by whichever partition
    /// first sees the rows seen so far reach DICTIONARY_MIN_ROWS.
    #[derive(Default)]
    struct Choice {
        rows: AtomicUsize,
        held: OnceLock<SchemaRef>,
    }
    /// One partition's rows on their way in: small batches gathered into batches of at least half
    /// HELD_BATCH_ROWS, then stored as held once the choice is made.
    struct Partition {
        choice: Arc<Choice>,
        schema: SchemaRef,
        pending: Vec<RecordBatch>,
        pending_rows: usize,
        /// Batches from `stored` on are as computed, waiting for the choice.
        batches: Vec<RecordBatch>,
        stored: usize,
    }
    impl Partition {
        fn push(&mut self, batch: RecordBatch) -> datafusion::error::Result<()> {
            if batch.num_rows() > 0 {
                self.pending_rows += batch.num_rows();
                self.pending.push(conform(batch, &self.schema)?);
            }
            if self.pending_rows >= HELD_BATCH_ROWS / 2 { self.flush() } else { Ok(()) }
        }
        fn flush(&mut self) -> datafusion::error::Result<()> {
            let pending = std::mem::take(&mut self.pending);
            self.pending_rows = 0;
            let batch = match pending.len() {
                0 => return Ok(()),
                1 => pending.into_iter().next().expect("one batch"),
                _ => datafusion::arrow::compute::concat_batches(&self.schema, &pending)?,
            };
            // Dictionary keys are 16-bit (see `dictionary_type`): a larger batch is held in pieces.
            let piece = if batch.num_rows() <= HELD_BATCH_MAX { batch.num_rows() } else { HELD_BATCH_ROWS };
            for at in (0..batch.num_rows()).step_by(piece.max(1)) {
                self.keep(batch.slice(at, piece.min(batch.num_rows() - at)))?;
            }
            Ok(())
        }
        fn keep(&mut self, batch: RecordBatch) -> datafusion::error::Result<()> {
            let rows = self.choice.rows.fetch_add(batch.num_rows(), Ordering::Relaxed) + batch.num_rows();
            self.batches.push(batch);
            if self.choice.held.get().is_none() && rows >= DICTIONARY_MIN_ROWS {
                let sample = self.batches[self.stored..].iter().max_by_key(|b| b.num_rows()).expect("a batch");
                let _ = self.choice.held.set(choose(&self.schema, sample)?);
            }
            if let Some(held) = self.choice.held.get() {
                for batch in &mut self.batches[self.stored..] {
                    *batch = convert(batch, held)?;
                }
                self.stored = self.batches.len();
            }
            Ok(())
        }
    }
    let choice = Arc::new(Choice::default());
    let mut running = tokio::task::JoinSet::new();
    for partition in 0..plan.properties().output_partitioning().partition_count() {
        let mut stream = plan.execute(partition, ctx.clone())?;
        let mut part = Partition {
            choice: choice.clone(),
            schema: schema.clone(),
            pending: Vec::new(),
            pending_rows: 0,
            batches: Vec::new(),
            stored: 0,
        };
        running.spawn(async move {
            while let Some(batch) = stream.next().await {
                part.push(batch?)?;
            }
            part.flush()?;
            Ok::<_, DataFusionError>((partition, part.batches, part.stored))
        });
    }
    let mut partitions = Vec::new();
    while let Some(done) = running.join_next().await {
        partitions.push(done.map_err(|e| DataFusionError::Internal(format!("computing a shared table: {e}")))??);
    }
    partitions.sort_by_key(|(partition, _, _)| *partition);
    // A table smaller than DICTIONARY_MIN_ROWS is held as computed (its strings compacted).
    let held = choice.held.get().cloned().unwrap_or_else(|| schema.clone());
    let mut out = Vec::with_capacity(partitions.len().max(1));
    for (_, mut batches, stored) in partitions {
        for batch in &mut batches[stored..] {
            *batch = convert(batch, &held)?;
        }
        out.push(batches);
    }
    if out.is_empty() {
        out.push(Vec::new());
    }
    Ok((held, out))
}

/// A batch under `schema`: columns of another type (see `hold`) are cast.
fn conform(batch: RecordBatch, schema: &SchemaRef) -> datafusion::error::Result<RecordBatch> {
    if batch.schema().fields() == schema.fields() {
        return Ok(batch);
    }
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(c.clone())
            } else {
                datafusion::arrow::compute::cast(c, f.data_type())
            }
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let options = datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    Ok(RecordBatch::try_new_with_options(schema.clone(), columns, &options)?)
}

/// Each held batch's own dictionary, with 16-bit keys: a batch has at most HELD_BATCH_MAX rows,
/// so no more distinct values; 32-bit keys took 4 bytes a row where 2 do (16M tasks: 32 MiB a
/// column saved, and a mostly empty column such as a task's call type becomes worth encoding).
fn dictionary_type() -> datafusion::arrow::datatypes::DataType {
    use datafusion::arrow::datatypes::DataType;
    DataType::Dictionary(Box::new(DataType::Int16), Box::new(DataType::Utf8))
}

/// How a table's text columns are held, judged on one batch: as dictionaries where that takes
/// less than 0.6 of the plain column, otherwise as plain strings (4 bytes of offset a row instead
/// of a view's 16: a million-deal lake's 16M task ids take 320 MB instead of 515).
fn choose(schema: &SchemaRef, sample: &RecordBatch) -> datafusion::error::Result<SchemaRef> {
    use datafusion::arrow::array::Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    let dictionary = dictionary_type();
    let fields = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            // Views as read from Parquet, and plain strings as a CASE of literals makes them (the
            // lake profile's concepts: a task's direction and channel held plain took 188 MiB
            // each for 16M rows, as dictionaries about 70).
            if !matches!(f.data_type(), DataType::Utf8View | DataType::Utf8) {
                return Ok(f.clone());
            }
            let plain = datafusion::arrow::compute::cast(sample.column(i), &DataType::Utf8)?.get_array_memory_size();
            let encoded = datafusion::arrow::compute::cast(sample.column(i), &dictionary)?.get_array_memory_size();
            let ty = if encoded * 10 < plain * 6 { dictionary.clone() } else { DataType::Utf8 };
            Ok(Arc::new(Field::new(f.name(), ty, f.is_nullable()).with_metadata(f.metadata().clone())))
        })
        .collect::<datafusion::error::Result<Vec<_>>>()?;
    Ok(Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone())))
}

/// One batch as held (see `choose`); text held as computed gets its strings compacted.
fn convert(batch: &RecordBatch, held: &SchemaRef) -> datafusion::error::Result<RecordBatch> {
    use datafusion::arrow::array::{ArrayRef, AsArray, RecordBatchOptions};
    use datafusion::arrow::datatypes::DataType;
    let columns: Vec<ArrayRef> = batch
        .columns()
        .iter()
        .zip(held.fields())
        .map(|(c, f)| {
            Ok(if c.data_type() != f.data_type() {
                datafusion::arrow::compute::cast(c, f.data_type())?
            } else {
                match c.data_type() {
                    DataType::Utf8View => Arc::new(c.as_string_view().gc()) as ArrayRef,
                    DataType::BinaryView => Arc::new(c.as_binary_view().gc()) as ArrayRef,
                    _ => compacted(c)?,
                }
            })
        })
        .collect::<datafusion::error::Result<_>>()?;
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    Ok(RecordBatch::try_new_with_options(held.clone(), columns, &options)?)
}

/// A column whose buffers are more than twice what its rows need, copied into buffers of its own.
/// A plan's output can point into larger allocations than its rows: mart.stage_exit's boolean
/// column held 95 MiB for 2.4M rows (0.3 MiB of bits), 320 KiB an 8k-row batch.
fn compacted(
    column: &datafusion::arrow::array::ArrayRef,
) -> datafusion::error::Result<datafusion::arrow::array::ArrayRef> {
    use datafusion::arrow::array::{Array, MutableArrayData, make_array};
    let data = column.to_data();
    // A type whose slice size arrow does not compute is held as computed.
    let Ok(needed) = data.get_slice_memory_size() else { return Ok(column.clone()) };
    if column.get_buffer_memory_size() <= 2 * needed + 4096 {
        return Ok(column.clone());
    }
    let mut copy = MutableArrayData::new(vec![&data], false, data.len());
    copy.try_extend(0, 0, data.len())?;
    Ok(make_array(copy.freeze()))
}

/// The memory a table's batches keep alive, each underlying allocation counted once. A batch's
/// own `get_array_memory_size` counts a whole buffer for every slice of it, and an aggregate or a
/// sort emits its result as slices of one large buffer: summed per batch, an 870k-row table of two
/// columns measured 13.8 GB while the process held 2.4 GB, and the budget evicted every other table.
fn held_bytes(partitions: &[Vec<RecordBatch>]) -> usize {
    use datafusion::arrow::array::{Array, ArrayData};
    fn walk(data: &ArrayData, seen: &mut std::collections::HashSet<usize>, total: &mut usize) {
        let mut count = |b: &datafusion::arrow::buffer::Buffer| {
            if seen.insert(b.data_ptr().as_ptr() as usize) {
                *total += b.capacity().max(b.len());
            }
        };
        for b in data.buffers() {
            count(b);
        }
        if let Some(nulls) = data.nulls() {
            count(nulls.inner().inner());
        }
        for child in data.child_data() {
            walk(child, seen, total);
        }
    }
    let mut seen = std::collections::HashSet::new();
    let mut total = 0;
    for batch in partitions.iter().flatten() {
        for column in batch.columns() {
            walk(&column.to_data(), &mut seen, &mut total);
        }
    }
    total
}

/// Computes a shared table with the given columns now, so the queries that follow (each reading
/// some of them) are all served from one computation. Any other table is left alone.
pub async fn warm(session: &LakeSession, table: &str, columns: &[String]) -> crate::error::Result<bool> {
    warm_in(&session.ctx, table, columns).await
}

async fn warm_in(ctx: &SessionContext, table: &str, columns: &[String]) -> crate::error::Result<bool> {
    let provider = ctx.table_provider(table).await?;
    let Some(shared) = provider.downcast_ref::<SharedTable>() else { return Ok(false) };
    let schema = shared.schema();
    let indices: Vec<usize> =
        columns.iter().filter_map(|c| schema.fields().iter().position(|f| f.name() == c.trim_matches('"'))).collect();
    let state = ctx.state();
    shared.scan(&state, Some(&indices), &[], None).await?;
    Ok(true)
}

/// Computes each shared table that `queries` read, once, with the union of the columns they read
/// (found in their optimised plans, which costs no execution). For a job that runs several queries
/// one after another over the same table, each naming other columns: without this the first
/// computes the table with its columns and the next computes it again with more (the sales-led
/// funnel computed staging.lead twice, 4.2 s and then 7.9 s, on a million deals). A query that
/// does not plan is left to fail where it runs, with its own message.
pub async fn warm_for(session: &LakeSession, queries: &[String]) -> crate::error::Result<()> {
    let mut used: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for sql in queries {
        let Ok(df) = session.ctx.sql(sql).await else { continue };
        let Ok(plan) = df.into_optimized_plan() else { continue };
        scanned(&plan, &mut used)?;
    }
    let direct: std::collections::BTreeSet<String> = used.keys().cloned().collect();
    // And what the views among them read of other shared tables, with only the columns read of
    // the views: staging.lead reads the id of staging.lead_history, which the funnel's own queries
    // do not, and computed it again for that column (and its known table whole).
    // Which of them each view reads, so it is computed only after those are.
    let mut reads: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    let mut pending: Vec<String> = used.keys().cloned().collect();
    while let Some(table) = pending.pop() {
        let Ok(provider) = session.ctx.table_provider(table.as_str()).await else { continue };
        let Some(shared) = provider.downcast_ref::<SharedTable>() else { continue };
        let columns: Vec<String> = used.get(&table).cloned().unwrap_or_default();
        if shared.view.get_logical_plan().is_none() || columns.is_empty() {
            continue;
        }
        let Ok(df) = session.ctx.read_table(shared.view.clone()) else { continue };
        let Ok(df) = df.select_columns(&columns.iter().map(String::as_str).collect::<Vec<_>>()) else { continue };
        let Ok(plan) = df.into_optimized_plan() else { continue };
        let mut its = std::collections::BTreeMap::new();
        scanned(&plan, &mut its)?;
        reads.insert(table.clone(), its.keys().filter(|t| **t != table).cloned().collect());
        let before = used.clone();
        for (t, cols) in its {
            let all = used.entry(t).or_default();
            for c in cols {
                if !all.contains(&c) {
                    all.push(c);
                }
            }
        }
        pending.extend(used.iter().filter(|(t, c)| before.get(*t) != Some(*c)).map(|(t, _)| t.clone()));
    }
    // A known table that one staging table alone reads here (and no query directly) is not held:
    // its rows stream into that staging table's computation, which holds them as it keeps them.
    // Held, each of the funnel's four known tables was stored (as dictionaries) and then read
    // back to be stored again, as a staging table that is mostly the same rows.
    let readers = |t: &String| reads.values().filter(|r| r.contains(t)).count();
    let streamed: Vec<String> = used
        .keys()
        .filter(|t| {
            t.starts_with("known.") && !direct.contains(*t) && readers(t) == 1 && !is_held(session.fingerprint, t)
        })
        .cloned()
        .collect();
    for t in &streamed {
        used.remove(t);
    }
    let streaming = Streaming::start(session.fingerprint, &streamed);
    // Several staging tables read the same known table (staging.opportunity and
    // staging.opportunity_history both read the deal history): it is kept while they are all
    // computed, then dropped.
    let before = held_keys(session.fingerprint, "known.");
    KEEP_KNOWN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // A table is warmed after the ones it may read (in the order the layers are registered), so
    // it is computed from them: in name order staging.lead came before the history it reads, which
    // was then computed twice (with the columns staging.lead read, then again with the funnel's).
    // Tables that do not read each other are computed side by side, as many at once as the
    // session has partitions: each is mostly one-core work (a key check, a decode, staging.lead's
    // one ordered pass), so one after another left a core idle for most of the sales-led funnel's
    // first five seconds on a million deals.
    let mut used: Vec<(String, Vec<String>)> = used.into_iter().collect();
    used.sort_by_key(|(table, _)| registration_rank(table));
    let at_once = session.ctx.state().config().target_partitions().max(1);
    let mut waiting: std::collections::VecDeque<(String, Vec<String>)> = used.into();
    let warmed: std::collections::BTreeSet<String> = waiting.iter().map(|(t, _)| t.clone()).collect();
    // Of the tables ready, the one with the longest chain of tables computed before it starts
    // first: staging.lead (computed from staging.lead_history), then one sort on one core, started
    // after the deal tables and ran alone at the end.
    let mut depth: std::collections::BTreeMap<String, usize> = Default::default();
    for (table, _) in &waiting {
        chain_depth(table, &reads, &warmed, &mut depth, 0);
    }
    let mut done: std::collections::BTreeSet<String> = Default::default();
    let mut running = tokio::task::JoinSet::new();
    let mut failed = None;
    while failed.is_none() && (!waiting.is_empty() || !running.is_empty()) {
        while running.len() < at_once {
            let ready = waiting
                .iter()
                .enumerate()
                .filter(|(_, (table, _))| {
                    reads.get(table).is_none_or(|r| r.iter().all(|t| done.contains(t) || !warmed.contains(t)))
                })
                .max_by_key(|(at, (table, _))| (depth.get(table).copied().unwrap_or(0), std::cmp::Reverse(*at)))
                .map(|(at, _)| at);
            let Some(at) = ready else { break };
            let (table, columns) = waiting.remove(at).expect("a waiting table");
            let ctx = session.ctx.clone();
            running.spawn(async move {
                // A table that will not compute fails again in the query that reads it, which says where.
                let _ = warm_in(&ctx, &table, &columns).await;
                table
            });
        }
        match running.join_next().await {
            Some(Ok(table)) => {
                done.insert(table);
            }
            // A computation that panicked: the others are stopped (dropping the set aborts them)
            // and the known tables released as on success before the error is returned.
            Some(Err(e)) => failed = Some(format!("a shared table's computation failed: {e}")),
            None => break,
        }
    }
    drop(running);
    KEEP_KNOWN.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    drop(streaming);
    drop_known_since(session.fingerprint, &before);
    match failed {
        Some(e) => Err(crate::error::Error::Other(e)),
        None => Ok(()),
    }
}

/// The tables of `warm_for` read as they are computed, not held (see there), while it runs.
static STREAMED: OnceLock<Mutex<HashMap<(u64, String), usize>>> = OnceLock::new();

fn streamed() -> &'static Mutex<HashMap<(u64, String), usize>> {
    STREAMED.get_or_init(Default::default)
}

/// Tables marked as streamed until dropped (counted: two warmings at once may mark one table).
struct Streaming(Vec<(u64, String)>);

impl Streaming {
    fn start(fingerprint: u64, tables: &[String]) -> Streaming {
        let keys: Vec<(u64, String)> = tables.iter().map(|t| (fingerprint, t.clone())).collect();
        let mut s = streamed().lock().expect("streamed lock");
        for k in &keys {
            *s.entry(k.clone()).or_default() += 1;
        }
        Streaming(keys)
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        let mut s = streamed().lock().expect("streamed lock");
        for k in &self.0 {
            if let Some(n) = s.get_mut(k) {
                *n -= 1;
                if *n == 0 {
                    s.remove(k);
                }
            }
        }
    }
}

/// How many tables, one reading the next, are computed before `table` among those `warm_for`
/// computes (a view that reads none of them: 0). A cycle, which registered views cannot form,
/// stops at a depth bound instead of recursing without end.
fn chain_depth(
    table: &str,
    reads: &std::collections::BTreeMap<String, Vec<String>>,
    warmed: &std::collections::BTreeSet<String>,
    depth: &mut std::collections::BTreeMap<String, usize>,
    level: usize,
) -> usize {
    if let Some(d) = depth.get(table) {
        return *d;
    }
    if level > warmed.len() {
        return 0;
    }
    let d = reads
        .get(table)
        .into_iter()
        .flatten()
        .filter(|t| warmed.contains(*t))
        .map(|t| 1 + chain_depth(t, reads, warmed, depth, level + 1))
        .max()
        .unwrap_or(0);
    depth.insert(table.to_string(), d);
    d
}

/// Adds the tables `plan` scans, with the columns it reads of each, to `used`.
fn scanned(
    plan: &datafusion::logical_expr::LogicalPlan,
    used: &mut std::collections::BTreeMap<String, Vec<String>>,
) -> datafusion::error::Result<()> {
    use datafusion::common::tree_node::TreeNodeRecursion;
    use datafusion::logical_expr::LogicalPlan;
    plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            let cols = used.entry(scan.table_name.to_string()).or_default();
            for f in scan.projected_schema.fields() {
                if !cols.contains(f.name()) {
                    cols.push(f.name().clone());
                }
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(())
}

/// Where a table comes in the order the layers register them (known, staging, marts, each in its
/// list's order): a view reads only tables registered before it. Others come last, by name.
fn registration_rank(table: &str) -> (usize, usize, String) {
    let staging = || crate::layers::staging::STAGING_SQL.iter().map(|(n, _)| *n);
    let marts = || crate::layers::marts::MART_SQL.iter().map(|(n, _, _)| *n);
    let (layer, at) = match table.split_once('.') {
        Some(("known", _)) => (0, 0),
        Some(("staging", name)) => (1, staging().position(|n| n == name).unwrap_or(usize::MAX)),
        Some(("mart", name)) => (2, marts().position(|n| n == name).unwrap_or(usize::MAX)),
        _ => (3, 0),
    };
    (layer, at, table.to_string())
}

/// While positive, known tables computed for staging tables are kept (see `warm_for`).
static KEEP_KNOWN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The tables of a layer (`"known."`) of one snapshot held now.
fn held_keys(fingerprint: u64, layer: &str) -> std::collections::HashSet<(u64, String)> {
    let c = cache().lock().expect("cache lock");
    c.entries.keys().filter(|k| k.0 == fingerprint && k.1.starts_with(layer)).cloned().collect()
}

/// Drops the held tables whose key `gone` picks and returns the bytes freed.
fn drop_where(gone: impl Fn(&(u64, String)) -> bool) -> usize {
    let mut c = cache().lock().expect("cache lock");
    let keys: Vec<(u64, String)> = c.entries.keys().filter(|k| gone(k)).cloned().collect();
    let freed: usize = keys.iter().filter_map(|k| c.entries.remove(k)).map(|e| e.bytes).sum();
    c.bytes -= freed;
    freed
}

/// Drops the known tables of one snapshot computed since `before` was taken (with `held_keys`). One
/// that another query of the same snapshot computed meanwhile goes too: that costs a
/// recomputation, never a wrong row. Another snapshot's (another lake or as-of date, computed at
/// the same time in the same process) are its own: dropping them made the shared-table tests,
/// which run at once on lakes of their own, recompute each other's tables now and then.
fn drop_known_since(fingerprint: u64, before: &std::collections::HashSet<(u64, String)>) {
    drop_where(|k| k.0 == fingerprint && k.1.starts_with("known.") && !before.contains(k));
}

/// Drops every held table of a layer (`"known."`) of one snapshot but those named in `keep`, and
/// returns the bytes freed. A cadence calls it between steps: the known tables (every column of
/// every CDC table, as the lake's checks read them) are read after validation only by the staging
/// tables computed from them, which are held themselves; one a later step needs is computed again
/// with its columns.
pub fn release(fingerprint: u64, layer: &str, keep: &[&str]) -> usize {
    drop_where(|(f, name)| *f == fingerprint && name.starts_with(layer) && !keep.contains(&name.as_str()))
}

/// Drops one held table of one snapshot and returns the bytes freed.
pub fn drop_table(fingerprint: u64, table: &str) -> usize {
    drop_where(|(f, name)| *f == fingerprint && name == table)
}

/// Keeps only the named columns of one held table (those a cadence's later steps read) and returns
/// the bytes freed; nothing is recomputed. A query that names another column later computes the
/// table again, with that column: slower, never wrong. On a million deals the weekly's risk and
/// win-probability steps read 5 of the 9 task columns its first step read (the task ids and
/// subjects, 416 MiB held, only the first).
pub fn narrow(fingerprint: u64, table: &str, columns: &[&str]) -> datafusion::error::Result<usize> {
    let mut c = cache().lock().expect("cache lock");
    let Some(entry) = c.entries.get_mut(&(fingerprint, table.to_string())) else { return Ok(0) };
    let positions: Vec<usize> =
        (0..entry.columns.len()).filter(|&at| columns.contains(&entry.schema.field(at).name().as_str())).collect();
    if positions.len() == entry.columns.len() || positions.is_empty() {
        return Ok(0);
    }
    let partitions = entry
        .partitions
        .iter()
        .map(|p| p.iter().map(|b| b.project(&positions)).collect::<std::result::Result<Vec<_>, _>>())
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let bytes = held_bytes(&partitions);
    let freed = entry.bytes.saturating_sub(bytes);
    entry.columns = positions.iter().map(|&at| entry.columns[at]).collect();
    entry.schema = Arc::new(entry.schema.project(&positions)?);
    entry.held = Arc::new(entry.held.project(&positions)?);
    entry.partitions = partitions;
    entry.bytes = bytes;
    c.bytes -= freed;
    Ok(freed)
}

/// Computes a shared table with every column now: for a table that a job (or a cadence's steps)
/// reads in many queries, each naming other columns, so it is computed once instead of once per new
/// column set (the risk job computed mart.deal_context three times on a million deals, 35 s of 96).
/// A staging table computed whole no longer needs the known table it was computed from: that one is
/// dropped (a query that reads it directly computes it again), so the two are not held side by side.
pub async fn warm_all(session: &LakeSession, table: &str) -> crate::error::Result<bool> {
    warm_with(session, table, None).await
}

/// `warm_all` with only the named columns (None: all), for a caller that knows every column the
/// later queries read (a cadence's steps: see `narrow`).
pub async fn warm_with(session: &LakeSession, table: &str, columns: Option<&[&str]>) -> crate::error::Result<bool> {
    let provider = session.ctx.table_provider(table).await?;
    let columns: Vec<String> = provider
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .filter(|name| columns.is_none_or(|wanted| wanted.contains(&name.as_str())))
        .collect();
    let warmed = warm(session, table, &columns).await?;
    if let (true, Some(name)) = (warmed, table.strip_prefix("staging.")) {
        let known = (session.fingerprint, format!("known.{name}"));
        drop_where(|k| *k == known);
    }
    Ok(warmed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    #[test]
    fn tables_are_warmed_after_the_ones_registered_before_them() {
        let mut tables =
            vec!["mart.stage_exit", "staging.lead", "mart.deal", "other.x", "staging.lead_history", "known.task"];
        tables.sort_by_key(|t| registration_rank(t));
        assert_eq!(
            tables,
            ["known.task", "staging.lead_history", "staging.lead", "mart.deal", "mart.stage_exit", "other.x"]
        );
    }

    #[test]
    fn a_column_pointing_into_a_larger_buffer_is_copied_and_a_tight_one_kept() {
        use datafusion::arrow::array::{Array, ArrayRef, BooleanArray};
        let n = 1_000_000;
        let big: ArrayRef = Arc::new(BooleanArray::from((0..n).map(|i| i % 3 == 0).collect::<Vec<_>>()));
        let slice = big.slice(8_192, 8_192);
        let copied = compacted(&slice).unwrap();
        assert_eq!(copied.as_ref(), slice.as_ref(), "the same values");
        assert!(slice.get_buffer_memory_size() > 100_000, "the slice keeps the whole bitmap alive");
        assert!(copied.get_buffer_memory_size() < 4_096, "{} bytes", copied.get_buffer_memory_size());
        let tight: ArrayRef = Arc::new(BooleanArray::from(vec![true, false, true]));
        let kept = compacted(&tight).unwrap();
        assert_eq!(kept.to_data().buffers()[0].as_ptr(), tight.to_data().buffers()[0].as_ptr(), "not copied");
    }

    #[test]
    fn slices_of_one_buffer_count_once() {
        let n = 100_000;
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]));
        let ids = Int64Array::from((0..n as i64).collect::<Vec<_>>());
        let names = StringArray::from((0..n).map(|i| (i % 3 != 0).then(|| format!("deal-{i}"))).collect::<Vec<_>>());
        let whole = RecordBatch::try_new(schema, vec![Arc::new(ids), Arc::new(names)]).unwrap();
        let once = held_bytes(&[vec![whole.clone()]]);
        // The values alone: 8 bytes per id, the name bytes, 4-byte offsets, one null bit per row.
        let names_len: usize = (0..n).filter(|i| i % 3 != 0).map(|i| format!("deal-{i}").len()).sum();
        let floor = 8 * n + names_len + 4 * n + n / 8;
        assert!(once >= floor && once < floor * 2, "held {once} for a floor of {floor}");
        // Ten slices of the same batch keep the same memory alive.
        let slices: Vec<RecordBatch> = (0..10).map(|k| whole.slice(k * n / 10, n / 10)).collect();
        assert_eq!(held_bytes(std::slice::from_ref(&slices)), once);
        let naive: usize = slices.iter().map(|b| b.get_array_memory_size()).sum();
        assert!(naive > 5 * once, "per-slice accounting counts the buffer each time ({naive} vs {once})");
        // Two partitions holding disjoint copies count both.
        // (concat_batches of one batch hands back the same buffers; a two-way concat copies.)
        let copy = datafusion::arrow::compute::concat_batches(&whole.schema(), [&whole, &whole.slice(0, 0)]).unwrap();
        assert_ne!(copy.column(0).to_data().buffers()[0].as_ptr(), whole.column(0).to_data().buffers()[0].as_ptr());
        assert!(held_bytes(&[vec![whole], vec![copy]]) >= 2 * floor);
    }

    #[tokio::test]
    async fn text_held_as_dictionaries_is_served_as_computed() {
        use datafusion::arrow::array::{Array, AsArray, StringViewArray};
        let n = 3 * DICTIONARY_MIN_ROWS;
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8View, false),
            Field::new("owner_id", DataType::Utf8View, true),
            Field::new("amount", DataType::Int64, false),
            Field::new("direction", DataType::Utf8, true),
        ]));
        // Unique ids stay plain; an owner repeated within each batch (with NULLs) becomes a
        // dictionary, and so does a plain-string column of a few values (a CASE of literals). Rows
        // are cut into batches of 8192 over two partitions, as a plan emits them.
        let ids = StringViewArray::from((0..n).map(|i| format!("00T{i:013}")).collect::<Vec<_>>());
        let owners = StringViewArray::from(
            (0..n).map(|i| (i % 11 != 0).then(|| format!("0050000000{:06}", i % 97))).collect::<Vec<_>>(),
        );
        let amounts = Int64Array::from((0..n as i64).collect::<Vec<_>>());
        let directions =
            StringArray::from((0..n).map(|i| [Some("inbound"), Some("outbound"), None][i % 3]).collect::<Vec<_>>());
        let whole = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(ids), Arc::new(owners), Arc::new(amounts), Arc::new(directions)],
        )
        .unwrap();
        let batches: Vec<RecordBatch> = (0..n).step_by(8192).map(|at| whole.slice(at, 8192.min(n - at))).collect();
        let half = batches.len() / 2;
        let partitions = vec![batches[..half].to_vec(), batches[half..].to_vec()];
        let plain = held_bytes(&partitions);
        let ctx = datafusion::prelude::SessionContext::new();
        // Stored as the two partitions stream in: the choice is made once DICTIONARY_MIN_ROWS rows
        // have arrived, and the batches buffered before it are stored the same way as later ones.
        let input = MemorySourceConfig::try_new_exec(&partitions, schema.clone(), None).unwrap();
        let (held, partitions) = hold(input, ctx.task_ctx(), schema.clone()).await.unwrap();
        assert_eq!(partitions.iter().map(Vec::len).collect::<Vec<_>>(), vec![half, batches.len() - half]);
        assert!(partitions.iter().flatten().all(|b| b.schema() == held));
        assert_eq!(held.field(0).data_type(), &DataType::Utf8, "unique ids are held as plain strings");
        assert!(matches!(held.field(1).data_type(), DataType::Dictionary(_, _)), "{:?}", held.field(1));
        assert_eq!(held.field(2).data_type(), &DataType::Int64);
        assert!(matches!(held.field(3).data_type(), DataType::Dictionary(_, _)), "{:?}", held.field(3));
        let stored = held_bytes(&partitions);
        // The owner column: 32 bytes a row as views, 4 (a key) plus each batch's 97 values stored.
        let owners_plain = 32 * n;
        assert!(plain - stored > owners_plain * 3 / 4, "held {stored} bytes, {plain} before");
        // A table of fewer rows is held as computed.
        let few = MemorySourceConfig::try_new_exec(&[batches[..3].to_vec()], schema.clone(), None).unwrap();
        let (few_held, _) = hold(few, ctx.task_ctx(), schema.clone()).await.unwrap();
        assert_eq!(few_held, schema);
        // One batch larger than a 16-bit key can index is held in pieces, and served back the same.
        let one = MemorySourceConfig::try_new_exec(&[vec![whole.clone()]], schema.clone(), None).unwrap();
        let (one_held, one_parts) = hold(one, ctx.task_ctx(), schema.clone()).await.unwrap();
        assert_eq!(one_held, held);
        assert_eq!(
            held.field(1).data_type(),
            &DataType::Dictionary(Box::new(DataType::Int16), Box::new(DataType::Utf8))
        );
        assert_eq!(one_parts[0].iter().map(|b| b.num_rows()).max(), Some(8192));
        assert_eq!(one_parts[0].iter().map(|b| b.num_rows()).sum::<usize>(), n);
        let plan = serve(&one_parts, &schema, &one_held, vec![0, 1, 2, 3], &[]).unwrap();
        let out = datafusion::physical_plan::collect(plan, ctx.task_ctx()).await.unwrap();
        assert_eq!(datafusion::arrow::compute::concat_batches(&schema, &out).unwrap(), whole);
        // Served with every projection, the rows and types are the computed ones.
        for projection in [vec![0, 1, 2, 3], vec![1], vec![3, 2, 1]] {
            let plan = serve(&partitions, &schema, &held, projection.clone(), &[]).unwrap();
            assert_eq!(plan.schema().fields(), schema.project(&projection).unwrap().fields());
            // Partition by partition, in order (a plain collect interleaves them).
            let out: Vec<RecordBatch> = datafusion::physical_plan::collect_partitioned(plan, ctx.task_ctx())
                .await
                .unwrap()
                .into_iter()
                .flatten()
                .collect();
            let got = datafusion::arrow::compute::concat_batches(&out[0].schema(), &out).unwrap();
            let want = whole.project(&projection).unwrap();
            assert_eq!(got.num_rows(), n);
            for (g, w) in got.columns().iter().zip(want.columns()) {
                assert_eq!(g.data_type(), w.data_type());
                if let (Some(g), Some(w)) = (g.as_string_view_opt(), w.as_string_view_opt()) {
                    assert!(g.iter().eq(w.iter()));
                    assert_eq!(g.null_count(), w.null_count());
                } else {
                    assert_eq!(g.as_ref(), w.as_ref());
                }
            }
        }
    }
}
