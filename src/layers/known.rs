//! The known layer: each raw table read with contract columns and types, reduced to the version
//! of every row known as of the run date (`sql/staging/_known_as_of.sql`), as `known.<table>`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::logical_expr::{Expr, LogicalPlan, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;

use crate::error::{Error, Result};
use crate::lake::contract::{ColumnType, cdc_columns, quote};
use crate::lake::inspect::Landed;
use crate::lake::profile::{CONCEPTS, in_contract, stages_sql};
use crate::layers::LakeSession;

const KNOWN_TEMPLATE: &str = repo_file!("sql/staging/_known_as_of.sql");

/// The landed table read with contract columns and types (missing columns NULL), as a subquery.
/// Every table gets the CDC columns, NULL where not landed, so one template serves all. `extra`
/// names landed columns outside the contract that the lake profile reads (as text, lower-case name).
pub fn conformed_sql(landed: &Landed, extra: &[String]) -> String {
    let table = &landed.table;
    let columns = conformed_columns(landed);
    let select: Vec<String> = columns
        .iter()
        .map(|col| {
            let expr = match landed.field(&col.name) {
                None => format!("CAST(NULL AS {})", col.ty.sql()),
                Some(f) => conform_expr(&quote(f.name()), f.data_type(), col.ty),
            };
            format!("{expr} AS {}", quote(&col.name))
        })
        .chain(extra.iter().filter_map(|name| {
            let f = landed.field(name)?;
            Some(format!("CAST({} AS VARCHAR) AS {}", quote(f.name()), quote(&name.to_lowercase())))
        }))
        .collect();
    format!("(SELECT {} FROM raw.{})", select.join(", "), quote(&table.name))
}

/// The contract columns of a conformed table (CDC columns included, landed or not).
fn conformed_columns(landed: &Landed) -> Vec<crate::lake::contract::Column> {
    let mut columns = landed.table.all_columns();
    if !landed.table.cdc {
        columns.extend(cdc_columns());
    }
    columns
}

/// The column names of `conformed_sql`'s result, in order.
fn conformed_names(landed: &Landed, extra: &[String]) -> Vec<String> {
    conformed_columns(landed)
        .into_iter()
        .map(|c| c.name)
        .chain(extra.iter().filter(|n| landed.field(n).is_some()).map(|n| n.to_lowercase()))
        .collect()
}

/// Registers `known.<table>` for one inspected table (after its `raw` table).
pub async fn register(session: &LakeSession, landed: &Landed) -> Result<()> {
    let table = &landed.table;
    // A lake without the stage catalog may declare its stages in the lake profile.
    if table.name == "opportunity_stage" && !landed.present() && !session.profile.stages.is_empty() {
        let sql = stages_sql(&session.profile.stages);
        let view = session.ctx.sql(&sql).await?.into_view();
        session.ctx.register_table("known.opportunity_stage", session.share("known.opportunity_stage", view))?;
        return Ok(());
    }
    let extra = profile_columns(session, landed);
    let conformed = conformed_sql(landed, &extra);
    // A known_at column the lake does not carry (optional in the contract): every row is known
    // from the start; `validate` reports the table as not time-travelled.
    let known_filter = match &table.known_at {
        Some(col) if landed.field(col).is_some() => {
            format!("CAST(c.\"{col}\" AS TIMESTAMP(6)) < {}", session.as_of.end_literal())
        }
        _ => "TRUE".into(),
    };
    let names = conformed_names(landed, &extra);
    let key: Vec<String> = table.key.iter().map(|k| quote(k)).collect();
    // The latest version of each key in one ordered pass: the versions sorted by key and then
    // version (highest first), a row kept when it is the table's first or its key differs from the
    // row before. No repartition and no per-key state: on a million deals' line items the former
    // `GROUP BY key` with a `first_value(... ORDER BY _version_key DESC)` per column spent 5.3 s of
    // CPU merging its accumulators where this takes about 0.5 s, and over 18.7M tasks with every
    // column it took 30.0 s and 4.9 GB where this takes 12.4 s and 2.8 GB.
    let window = format!("ORDER BY {}, _version_key DESC", key.join(", "));
    let same_key =
        key.iter().map(|k| format!("(LAG({k}) OVER w IS NOT DISTINCT FROM {k})")).collect::<Vec<_>>().join(" AND ");
    let latest = format!(
        "SELECT * FROM (SELECT *, ROW_NUMBER() OVER w = 1 OR NOT ({same_key}) AS _first_version \
         FROM versions WINDOW w AS ({window})) AS v WHERE _first_version"
    );
    // On a Ballista cluster the latest version is kept by a hash aggregate instead: there a LEFT
    // JOIN whose right side is a window's output dropped left rows (tests/distributed.rs: 372
    // deals became 179 to 193), and a known table is the right side of many. first_value has a
    // hash-grouped accumulator for numbers, dates, timestamps and text but not for booleans:
    // those cross as 0/1 and back.
    let latest = if session.lake.engine.is_cluster() {
        let booleans: Vec<String> = conformed_columns(landed)
            .into_iter()
            .filter(|c| c.ty == ColumnType::Bool)
            .map(|c| c.name)
            .chain(["_version_exact".to_string()])
            .collect();
        let picks: Vec<String> = names
            .iter()
            .filter(|n| !table.key.contains(n))
            .chain(["_version_at".to_string(), "_version_exact".to_string()].iter())
            .map(|n| {
                let q = quote(n);
                if booleans.contains(n) {
                    format!("CAST(first_value(CAST({q} AS TINYINT) ORDER BY _version_key DESC) AS BOOLEAN) AS {q}")
                } else {
                    format!("first_value({q} ORDER BY _version_key DESC) AS {q}")
                }
            })
            .collect();
        format!("SELECT {k}, {} FROM versions GROUP BY {k}", picks.join(", "), k = key.join(", "))
    } else {
        latest
    };
    let columns = names.iter().map(|n| quote(n)).collect::<Vec<_>>().join(", ");
    let plan = |latest: &str| {
        session.fill(
            &KNOWN_TEMPLATE
                .replace("{{latest}}", latest)
                .replace("{{columns}}", &columns)
                .replace("{{conformed}}", &conformed)
                .replace("{{known_filter}}", &known_filter),
        )
    };
    let deduplicated = plan(&latest);
    let as_landed = plan("SELECT * FROM versions");
    let keys = table.key.iter().map(|k| format!("c.\"{k}\"")).collect::<Vec<_>>().join(", ");
    let check = format!(
        "SELECT COUNT(*) AS repeated FROM (SELECT {keys} FROM {conformed} AS c WHERE {known_filter} \
         GROUP BY {keys} HAVING COUNT(*) > 1) AS r"
    );
    let key_rows = format!("SELECT {keys} FROM {conformed} AS c WHERE {known_filter}");
    // Every landed row's key as landed, when reading it as the contract's text keeps distinct
    // values distinct (text or integers read as text; not a timestamp cut to microseconds).
    let columns = landed.table.all_columns();
    let raw_keys: Option<Vec<String>> = table
        .key
        .iter()
        .map(|k| {
            let field = landed.field(k)?;
            let text = columns.iter().find(|c| &c.name == k).is_some_and(|c| c.ty == ColumnType::String);
            let keeps = matches!(
                field.data_type(),
                DataType::Utf8
                    | DataType::LargeUtf8
                    | DataType::Utf8View
                    | DataType::Int8
                    | DataType::Int16
                    | DataType::Int32
                    | DataType::Int64
                    | DataType::UInt8
                    | DataType::UInt16
                    | DataType::UInt32
                    | DataType::UInt64
            );
            (text && keeps).then(|| quote(field.name()))
        })
        .collect();
    // With the version column `quality::keys::duplicate_key` groups by, when landed.
    let version = ["_fivetran_start", "_fivetran_synced"].iter().find_map(|c| landed.field(c)).map(|f| quote(f.name()));
    let raw_key_rows = match raw_keys {
        Some(cols) if !cols.is_empty() => Some((
            session
                .ctx
                .sql(&format!(
                    "SELECT {} FROM raw.{}",
                    cols.iter().chain(version.iter()).cloned().collect::<Vec<_>>().join(", "),
                    quote(&table.name)
                ))
                .await?
                .into_unoptimized_plan(),
            cols.len(),
        )),
        _ => None,
    };
    let name = format!("known.{}", table.name);
    let plan_err = |e: datafusion::error::DataFusionError| {
        Error::Other(format!("{name} (sql/staging/_known_as_of.sql) does not plan: {e}"))
    };
    let known = KnownTable {
        key: (session.fingerprint, name.clone()),
        deduplicated: session.ctx.sql(&deduplicated).await.map_err(plan_err)?.into_view(),
        as_landed: session.ctx.sql(&as_landed).await.map_err(plan_err)?.into_view(),
        check: session.ctx.sql(&check).await.map_err(plan_err)?.into_unoptimized_plan(),
        key_rows: session.ctx.sql(&key_rows).await.map_err(plan_err)?.into_unoptimized_plan(),
        raw_key_rows,
        table: table.name.clone(),
    };
    if session.lake.engine.is_cluster() {
        // A cluster gets a plain view (a custom provider does not serialise): which one is decided
        // now, by the same aggregate run on the cluster.
        let unique = known.keys_unique(&session.ctx.state(), false).await?;
        let view = if unique { known.as_landed } else { known.deduplicated };
        session.ctx.register_table(name.as_str(), view)?;
        return Ok(());
    }
    session.ctx.register_table(name.as_str(), session.share(&name, Arc::new(known)))?;
    Ok(())
}

/// Whether each table's keys were each known once (so no de-duplication is needed), per lake
/// fingerprint and table: decided by one aggregate at the first scan, then remembered.
fn unique_keys() -> &'static Mutex<HashMap<(u64, String), bool>> {
    static UNIQUE: OnceLock<Mutex<HashMap<(u64, String), bool>>> = OnceLock::new();
    UNIQUE.get_or_init(Default::default)
}

/// `known.<table>`: the latest version of each row known as of the run date. The plan is chosen at
/// the first scan: where one aggregate shows no key known twice, the versions are the rows and no
/// de-duplication runs; otherwise a hash aggregate keeps the winning version of each key.
struct KnownTable {
    key: (u64, String),
    deduplicated: Arc<dyn TableProvider>,
    as_landed: Arc<dyn TableProvider>,
    /// The exact test: how many keys are known more than once (one hash aggregate of the keys).
    check: LogicalPlan,
    /// The keys of every row known by the run date, which `hashes_distinct` reads.
    key_rows: LogicalPlan,
    /// Every landed row's key as landed, then its version column when landed (see
    /// `raw_hashes_distinct`), and how many of the columns are the key.
    raw_key_rows: Option<(LogicalPlan, usize)>,
    /// The landed table's name.
    table: String,
}

impl std::fmt::Debug for KnownTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KnownTable").field("table", &self.key.1).finish()
    }
}

impl KnownTable {
    /// Whether every key was known once. In this process, first by `hashes_distinct`, and by the
    /// exact aggregate only when that finds a repeated hash; on a cluster (`hashed` false), by the
    /// aggregate there, so no key crosses the network.
    async fn keys_unique(&self, state: &dyn Session, hashed: bool) -> datafusion::error::Result<bool> {
        if let Some(unique) = unique_keys().lock().expect("lock").get(&self.key) {
            return Ok(*unique);
        }
        let unique = if hashed && (self.raw_hashes_distinct(state).await? || self.hashes_distinct(state).await?) {
            true
        } else {
            let plan = state.create_physical_plan(&self.check).await?;
            let batches = datafusion::physical_plan::collect(plan, state.task_ctx()).await?;
            let repeated = batches
                .first()
                .and_then(|b| {
                    b.column(0).as_any().downcast_ref::<datafusion::arrow::array::Int64Array>().map(|a| a.value(0))
                })
                .unwrap_or(1);
            repeated == 0
        };
        unique_keys().lock().expect("lock").insert(self.key.clone(), unique);
        Ok(unique)
    }

    async fn hashes_distinct(&self, state: &dyn Session) -> datafusion::error::Result<bool> {
        hashes_distinct(state, &self.key_rows, &self.key.1).await
    }

    /// Whether every landed row has a key of its own, versions and rows known later included:
    /// then no key is known twice as of any date. False when a key repeats (CDC versions,
    /// duplicates) or cannot be read as landed: the known rows' keys are then hashed as before.
    /// The same pass hashes each (key, version) pair, which answers `quality::keys::duplicate_key`
    /// (no two rows of one version share a key) without another pass over the table.
    async fn raw_hashes_distinct(&self, state: &dyn Session) -> datafusion::error::Result<bool> {
        let Some((rows, key)) = &self.raw_key_rows else { return Ok(false) };
        let found = hashes_distinct_by(state, rows, &format!("raw.{}", self.table), &[*key]).await?;
        let keys = RawKeys { keys_distinct: found[0], pairs_distinct: found[1] };
        raw_distinct().lock().expect("lock").insert((self.key.0, self.table.clone()), keys);
        Ok(keys.keys_distinct)
    }
}

/// What one pass over a landed table's keys found (see `KnownTable::raw_hashes_distinct`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawKeys {
    /// Every landed row has a key of its own.
    pub keys_distinct: bool,
    /// Every landed row has a (key, version) pair of its own.
    pub pairs_distinct: bool,
}

fn raw_distinct() -> &'static Mutex<HashMap<(u64, String), RawKeys>> {
    static DISTINCT: OnceLock<Mutex<HashMap<(u64, String), RawKeys>>> = OnceLock::new();
    DISTINCT.get_or_init(Default::default)
}

/// Whether the landed rows of `table` (in the lake snapshot `fingerprint`) have keys and (key,
/// version) pairs of their own, when its known table has found out (`KnownTable::raw_hashes_distinct`).
pub fn raw_keys(fingerprint: u64, table: &str) -> Option<RawKeys> {
    raw_distinct().lock().expect("lock").get(&(fingerprint, table.to_string())).copied()
}

/// True when the 64-bit hashes of a query's rows (every column, a key) are all different, which
/// proves the rows are. A repeated hash is a repeated row or, rarely, a collision (about 1 in
/// 100,000 for the 16M tasks of a million-deal lake): false, and the caller runs its exact
/// aggregate. Hashing and sorting 8 bytes a row replaces a hash aggregate over the key text: on
/// those 16M tasks the aggregate took 5 s of the 8 s that computing known.task took.
pub async fn hashes_distinct(state: &dyn Session, rows: &LogicalPlan, what: &str) -> datafusion::error::Result<bool> {
    Ok(hashes_distinct_by(state, rows, what, &[]).await?.pop().unwrap_or(false))
}

/// `hashes_distinct` of several leading column sets of one query in one pass: for each `width` in
/// `prefixes` (ascending), whether the rows' first `width` columns are distinct, and last whether
/// whole rows are.
pub async fn hashes_distinct_by(
    state: &dyn Session,
    rows: &LogicalPlan,
    what: &str,
    prefixes: &[usize],
) -> datafusion::error::Result<Vec<bool>> {
    use datafusion::common::hash_utils::{RandomState, create_hashes};
    use futures::StreamExt;
    let span = crate::layers::trace::start(format!("{what} key hashes"));
    let plan = state.create_physical_plan(rows).await?;
    let mut stream = datafusion::physical_plan::execute_stream(plan, state.task_ctx())?;
    let hasher = RandomState::with_seed(0x6774_6d2d_6c6f_6f70);
    let mut hashes: Vec<Vec<u64>> = vec![Vec::new(); prefixes.len() + 1];
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let widths = prefixes.iter().copied().chain([batch.num_columns()]);
        for (out, width) in hashes.iter_mut().zip(widths) {
            let start = out.len();
            out.resize(start + batch.num_rows(), 0);
            create_hashes(batch.columns()[..width].iter(), &hasher, &mut out[start..])?;
        }
    }
    let read = span.as_ref().map(|s| s.elapsed());
    // Columns distinct as a prefix are distinct with more columns: those need no sort.
    let mut distinct = Vec::with_capacity(hashes.len());
    for h in hashes.iter_mut() {
        if distinct.last() == Some(&true) {
            distinct.push(true);
            continue;
        }
        h.sort_unstable();
        distinct.push(h.windows(2).all(|w| w[0] != w[1]));
    }
    if let (Some(span), Some(read)) = (span, read) {
        span.done(&format!(
            "{} keys read in {:.2} s, distinct: {}",
            hashes[0].len(),
            read.as_secs_f64(),
            distinct.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(" / ")
        ));
    }
    Ok(distinct)
}

#[async_trait]
impl TableProvider for KnownTable {
    fn schema(&self) -> SchemaRef {
        self.deduplicated.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::error::Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Exact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let view = if self.keys_unique(state, true).await? { &self.as_landed } else { &self.deduplicated };
        view.scan(state, projection, filters, limit).await
    }
}

/// Landed columns outside the contract that a profile rule for this table reads.
pub fn profile_columns(session: &LakeSession, landed: &Landed) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for def in CONCEPTS.iter().filter(|c| c.tables.contains(&landed.table.name.as_str())) {
        for rule in session.profile.rules(def.id) {
            let name = rule.column.to_lowercase();
            if !in_contract(&landed.table.name, &name) && landed.field(&name).is_some() && !out.contains(&name) {
                out.push(name);
            }
        }
    }
    out
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
