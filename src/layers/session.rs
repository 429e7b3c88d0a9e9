//! A DataFusion session over a lake as of a date, with the layers registered in flow order
//! (raw, known, staging, marts, org units); the SQL helpers every job uses to plan declared files.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{MemorySchemaProvider, TableProvider};
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig};
use datafusion::execution::SessionState;
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::error::{ContractProblem, Error, Result};
use crate::lake::Lake;
use crate::lake::contract::Contract;
use crate::lake::inspect::{Landed, inspect};
use crate::lake::profile::{CONCEPTS, Profile, concept_def, concept_sql};
use crate::layers::{AsOf, SCHEMAS, known, marts, org, raw, staging};

/// A SQL session over a lake as of a date: every layer registered by name.
pub struct LakeSession {
    pub ctx: SessionContext,
    pub lake: Lake,
    pub as_of: AsOf,
    pub landed: Vec<Landed>,
    /// The lake's conventions (lake.toml or --profile over data/profiles/default.toml).
    pub profile: Profile,
    /// What the lake layers are a function of (files, as-of date, profile): the key of the
    /// process's shared as-of tables.
    pub fingerprint: u64,
}

impl LakeSession {
    /// Registers the lake's layers: raw, known, staging, marts and the org units. Tables with
    /// contract problems are registered empty and reported in `landed`; callers that must not run
    /// on a broken lake check `contract_problems()` first. Published outputs and the log are added
    /// by `outputs::open_session`, which is what jobs and queries open.
    pub async fn open_layers(lake: &Lake, as_of: AsOf) -> Result<LakeSession> {
        let contract = Contract::builtin();
        let landed = inspect(lake, contract).await?;
        let profile = Profile::load(lake, lake.profile_file.as_deref()).await?;
        let config = SessionConfig::from_env()?
            .with_default_catalog_and_schema("datafusion", "staging")
            .with_information_schema(true)
            .with_target_partitions(std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).max(2));
        let runtime = runtime()?;
        let state = datafusion::execution::SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(runtime)
            .with_default_features()
            .build();
        let ctx = SessionContext::new_with_state(engine_state(state, &lake.engine)?);
        crate::layers::last_by::register(&ctx);
        lake.register(&ctx);
        let catalog = ctx.catalog("datafusion").ok_or_else(|| Error::Other("no default catalog".into()))?;
        for (schema, _) in SCHEMAS {
            catalog.register_schema(schema, Arc::new(MemorySchemaProvider::new()))?;
        }
        let mut session = LakeSession { ctx, lake: lake.clone(), as_of, landed, profile, fingerprint: 0 };
        session.fingerprint = crate::layers::shared::fingerprint(&session);
        for landed in &session.landed {
            raw::register(&session, landed).await?;
            known::register(&session, landed).await?;
        }
        staging::register(&session).await?;
        marts::register(&session).await?;
        org::register(&session).await?;
        Ok(session)
    }

    /// Plans a declared SQL text (as-of slots filled); an error names where it is declared.
    pub async fn declared(&self, sql: &str, source: &str) -> Result<datafusion::prelude::DataFrame> {
        self.ctx.sql(&self.fill(sql)).await.map_err(|e| Error::Other(format!("{source} does not plan: {e}")))
    }

    /// Runs a declared SQL text and collects its (small) result; errors name where it is declared.
    pub async fn collect_declared(&self, sql: &str, source: &str) -> Result<Vec<RecordBatch>> {
        let df = self.declared(sql, source).await?;
        Ok(self.collect_traced(df, source).await?.1)
    }

    /// Collects a planned query with its schema; with tracing on, prints its time and rows (and,
    /// with GTM_LOOP_TRACE=plan, its executed plan) under `source`, which errors name too.
    pub async fn collect_traced(
        &self,
        df: datafusion::prelude::DataFrame,
        source: &str,
    ) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let span = crate::layers::trace::start(source);
        let schema = Arc::new(df.schema().as_arrow().clone());
        let ran = |e: datafusion::error::DataFusionError| Error::Other(format!("{source} does not run: {e}"));
        let batches = if crate::layers::trace::plans() {
            let task = Arc::new(df.task_ctx());
            let plan = df.create_physical_plan().await.map_err(ran)?;
            let batches = datafusion::physical_plan::collect(plan.clone(), task).await.map_err(ran)?;
            crate::layers::trace::plan(source, plan.as_ref());
            batches
        } else {
            df.collect().await.map_err(ran)?
        };
        if let Some(span) = span {
            span.done(&format!("{} rows", batches.iter().map(|b| b.num_rows()).sum::<usize>()));
        }
        Ok((schema, batches))
    }

    /// Makes sure a table is computed once for the queries that follow, not at every reference.
    /// A shared layer table (see `layers::shared`) already is, and is left alone: it keeps only
    /// the columns queries use. Any other registered view is replaced by its rows.
    pub async fn materialise(&self, table: &str) -> Result<()> {
        let provider = self
            .ctx
            .table_provider(table)
            .await
            .map_err(|e| Error::Other(format!("cannot materialise {table}: {e}")))?;
        if provider.is::<crate::layers::shared::SharedTable>() {
            return Ok(());
        }
        let df = self.ctx.table(table).await.map_err(|e| Error::Other(format!("cannot materialise {table}: {e}")))?;
        let cached = df.cache().await.map_err(|e| Error::Other(format!("cannot materialise {table}: {e}")))?;
        let _ = self.ctx.deregister_table(table)?;
        self.ctx.register_table(table, cached.into_view())?;
        Ok(())
    }

    /// A layer table as the session serves it: embedded, computed once per lake snapshot and shared
    /// (`layers::shared`); on a cluster, the plain view, which travels with every plan (executors
    /// cannot reach this process's memory, and Ballista serialises only views and file listings).
    pub fn share(&self, name: &str, view: Arc<dyn TableProvider>) -> Arc<dyn TableProvider> {
        self.share_ordered(name, view, &[])
    }

    /// `share`, the rows held sorted by `order` (see `layers::ordered`).
    pub fn share_ordered(&self, name: &str, view: Arc<dyn TableProvider>, order: &[String]) -> Arc<dyn TableProvider> {
        if self.lake.engine.is_cluster() {
            view
        } else {
            crate::layers::shared::wrap(self.fingerprint, name, view, order)
        }
    }

    /// Registers rows computed in this process (org units, run manifests, the audit log, periods)
    /// as `name`, replacing any table of that name. Embedded they stay in memory; on a cluster they
    /// are written as one Parquet file under the lake's scratch prefix (`_engine/`) and registered
    /// as a listing, so a plan that reads them still serialises and every executor can read them.
    pub async fn register_rows(&self, name: &str, schema: SchemaRef, batches: Vec<RecordBatch>) -> Result<()> {
        if !self.lake.engine.is_cluster() {
            return register_rows_in(&self.ctx, name, schema, batches);
        }
        let _ = self.ctx.deregister_table(name)?;
        let mut buf = Vec::new();
        let mut writer = datafusion::parquet::arrow::ArrowWriter::try_new(&mut buf, schema.clone(), None)?;
        for batch in &batches {
            writer.write(batch)?;
        }
        writer.close()?;
        // A new file per registration: a plan still running may read the previous one.
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let rel = format!("{}/{name}-{seq}.parquet", scratch_prefix());
        self.lake.put(&rel, buf).await?;
        let options = ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
        let config =
            ListingTableConfig::new(self.lake.listing_url(&rel)?).with_listing_options(options).with_schema(schema);
        self.ctx.register_table(name, Arc::new(ListingTable::try_new(config)?))?;
        Ok(())
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
        // {{cluster}}: whether the SQL runs on a Ballista cluster (where some plan shapes differ).
        sql = sql.replace("{{cluster}}", if self.lake.engine.is_cluster() { "TRUE" } else { "FALSE" });
        // {{landed:table.column}}: whether the lake carries that column at all.
        while let Some(start) = sql.find("{{landed:") {
            let Some(len) = sql[start..].find("}}") else { break };
            let spec = &sql[start + 9..start + len];
            let (table, column) = spec.split_once('.').unwrap_or((spec, ""));
            let landed = self.landed(table).is_some_and(|l| l.field(column).is_some());
            sql.replace_range(start..start + len + 2, if landed { "TRUE" } else { "FALSE" });
        }
        // {{provides:id}}: whether the lake provides that concept.
        while let Some(start) = sql.find("{{provides:") {
            let Some(len) = sql[start..].find("}}") else { break };
            let id = sql[start + 11..start + len].to_string();
            sql.replace_range(start..start + len + 2, if self.provides(&id) { "TRUE" } else { "FALSE" });
        }
        // {{concept:table.id}}: the lake profile's rules for that concept over the table's columns.
        while let Some(start) = sql.find("{{concept:") {
            let Some(len) = sql[start..].find("}}") else { break };
            let spec = sql[start + 10..start + len].to_string();
            let (table, id) = spec.split_once('.').unwrap_or(("", &spec));
            let expr = concept_sql(&self.profile, id, |col| self.landed(table).is_some_and(|l| l.field(col).is_some()));
            sql.replace_range(start..start + len + 2, &format!("({expr})"));
        }
        sql
    }

    /// Whether the lake provides a concept: a profile rule reads a column of a landed table.
    pub fn provides(&self, concept: &str) -> bool {
        let Some(def) = concept_def(concept) else { return false };
        def.tables.iter().any(|t| {
            self.landed(t).is_some_and(|l| {
                l.present() && self.profile.rules(concept).iter().any(|r| l.field(&r.column).is_some())
            })
        })
    }

    /// What of `needs` the lake lacks, each said with how to get it. A need is a contract table
    /// ("task") or a concept of the lake profile ("concept:task_direction").
    pub fn missing(&self, needs: &[String]) -> Vec<String> {
        let present = |t: &str| self.landed(t).is_some_and(|l| l.present());
        let mut out: Vec<String> = Vec::new();
        for need in needs {
            match need.strip_prefix("concept:") {
                Some(id) if !self.provides(id) => match concept_def(id) {
                    // Its table is not landed: that is the gap, said once.
                    Some(def) if !def.tables.iter().any(|t| present(t)) => {
                        let line = format!("{} (not landed)", def.tables.join(" or "));
                        if !out.contains(&line) {
                            out.push(line);
                        }
                    }
                    Some(def) => out.push(format!(
                        "{} (no rule of the lake profile reads a column {} carries; set [[concept.{id}]] in lake.toml)",
                        def.meaning.split(':').next().unwrap_or(id),
                        def.tables.join(" or ")
                    )),
                    None => out.push(format!(
                        "{id} (not a concept; known: {})",
                        CONCEPTS.iter().map(|c| c.id).collect::<Vec<_>>().join(", ")
                    )),
                },
                Some(_) => {}
                None if need == "opportunity_stage" && !self.profile.stages.is_empty() => {}
                None if !present(need) => {
                    let line = format!("{need} (not landed)");
                    if !out.contains(&line) {
                        out.push(line);
                    }
                }
                None => {}
            }
        }
        out
    }
}

/// The lake-relative folder where this process writes the rows it registers for a cluster's
/// executors to read (see `register_rows`): one folder per process, removed when the command ends
/// (`remove_scratch`) and by `gc` when a process died before that.
pub fn scratch_prefix() -> &'static str {
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PREFIX.get_or_init(|| {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        format!("{SCRATCH_DIR}/{}-{nanos}", std::process::id())
    })
}

/// Where `register_rows` writes for a cluster, under the lake root.
pub const SCRATCH_DIR: &str = "_engine";

/// Removes what this process wrote for a cluster's executors (nothing on the embedded engine).
pub async fn remove_scratch(lake: &Lake) -> Result<()> {
    if lake.engine.is_cluster() {
        lake.delete_prefix(scratch_prefix()).await?;
    }
    Ok(())
}

/// The session state for the engine: as built, or handed to a Ballista scheduler, whose query
/// planner sends each optimised logical plan to the cluster instead of executing it here.
fn engine_state(state: SessionState, engine: &crate::lake::engine::Engine) -> Result<SessionState> {
    match engine {
        crate::lake::engine::Engine::Embedded => Ok(state),
        #[cfg(feature = "distributed")]
        crate::lake::engine::Engine::Cluster { scheduler } => crate::layers::cluster::client_state(state, scheduler),
        #[cfg(not(feature = "distributed"))]
        crate::lake::engine::Engine::Cluster { scheduler } => Err(Error::Refused(format!(
            "--engine {scheduler}: this binary was built without the distributed engine; build it with `--features distributed`"
        ))),
    }
}

/// A runtime over the one spilling memory pool every session of this process shares (see
/// `memory_limit`), so two sessions open at once (a job and the outputs it reads) share one budget.
/// Object stores stay per session: two lakes in one process never see each other's credentials.
fn runtime() -> Result<Arc<datafusion::execution::runtime_env::RuntimeEnv>> {
    let pool = pool();
    let mut builder = datafusion::execution::runtime_env::RuntimeEnvBuilder::new();
    if let Some(pool) = pool {
        builder = builder.with_memory_pool(pool.clone());
    }
    Ok(builder.build_arc()?)
}

fn pool() -> &'static Option<Arc<dyn datafusion::execution::memory_pool::MemoryPool>> {
    use datafusion::execution::memory_pool::{FairSpillPool, MemoryPool};
    static POOL: std::sync::OnceLock<Option<Arc<dyn MemoryPool>>> = std::sync::OnceLock::new();
    POOL.get_or_init(|| memory_limit().map(|limit| Arc::new(FairSpillPool::new(limit)) as Arc<dyn MemoryPool>))
}

/// The bytes queries hold in the process's memory pool right now (0 without a limit).
pub fn pool_reserved() -> usize {
    pool().as_ref().map(|p| p.reserved()).unwrap_or(0)
}

/// The query memory budget: GTM_LOOP_MEMORY_LIMIT ("4G", "512M", bytes, "0" for none) or, unset,
/// half of the machine's (or container's) memory. Sorts, joins and aggregates past it spill to disk
/// (a fair-share spilling pool), so ten times the data costs time, not an out-of-memory kill.
pub fn memory_limit() -> Option<usize> {
    match std::env::var("GTM_LOOP_MEMORY_LIMIT") {
        Ok(v) => match parse_bytes(&v) {
            Some(0) => None,
            Some(n) => Some(n),
            None => {
                eprintln!("warning: GTM_LOOP_MEMORY_LIMIT={v} is not a size like 4G or 512M; using the default");
                Some(machine_memory() / 2)
            }
        },
        Err(_) => Some(machine_memory() / 2),
    }
}

/// A size like "4G", "512M", "64K" or plain bytes.
pub fn parse_bytes(v: &str) -> Option<usize> {
    let v = v.trim().to_ascii_uppercase();
    let v = v.strip_suffix("IB").or_else(|| v.strip_suffix('B')).unwrap_or(&v).to_string();
    let (num, mult) = match v.chars().last() {
        Some('G') => (&v[..v.len() - 1], 1usize << 30),
        Some('M') => (&v[..v.len() - 1], 1usize << 20),
        Some('K') => (&v[..v.len() - 1], 1usize << 10),
        _ => (v.as_str(), 1usize),
    };
    let n = num.trim().parse::<f64>().ok().filter(|n| *n >= 0.0)?;
    Some((n * mult as f64) as usize)
}

/// The memory this process may use: the cgroup limit where one is set (a container), else the
/// machine's total (/proc/meminfo); 4 GiB where neither can be read.
pub fn machine_memory() -> usize {
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok().and_then(|s| s.trim().parse::<usize>().ok());
    let total = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
        let line = s.lines().find(|l| l.starts_with("MemTotal:"))?.to_string();
        line.split_whitespace().nth(1)?.parse::<usize>().ok().map(|kib| kib << 10)
    });
    match (cgroup, total) {
        (Some(c), Some(t)) => c.min(t),
        (Some(c), None) => c,
        (None, Some(t)) => t,
        (None, None) => 4 << 30,
    }
}

/// Rows registered in memory as `name` in one context (a session's, or an overlay's: see
/// `layers::overlay`), replacing what that context had under the name.
pub fn register_rows_in(ctx: &SessionContext, name: &str, schema: SchemaRef, batches: Vec<RecordBatch>) -> Result<()> {
    let _ = ctx.deregister_table(name)?;
    let batches = batches.iter().map(crate::layers::columns::compact_views).collect::<Result<Vec<_>>>()?;
    // Dealt batch by batch into as many partitions as the session runs, so the joins and
    // aggregates reading them run on every core without a repartition first.
    let n = ctx.state().config().target_partitions().clamp(1, batches.len().max(1));
    let mut partitions: Vec<Vec<RecordBatch>> = vec![Vec::new(); n];
    for (i, batch) in batches.into_iter().enumerate() {
        partitions[i % n].push(batch);
    }
    ctx.register_table(name, Arc::new(MemTable::try_new(schema, partitions)?))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_bytes("4G"), Some(4 << 30));
        assert_eq!(parse_bytes("512m"), Some(512 << 20));
        assert_eq!(parse_bytes("2GiB"), Some(2 << 30));
        assert_eq!(parse_bytes("1000"), Some(1000));
        assert_eq!(parse_bytes("0"), Some(0));
        assert_eq!(parse_bytes("lots"), None);
        assert_eq!(parse_bytes("-1G"), None);
    }
}
