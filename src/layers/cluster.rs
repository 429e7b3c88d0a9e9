//! The distributed engine (the `distributed` feature): a session whose plans run on an Apache
//! DataFusion Ballista cluster, and a scheduler with executors started in one process.
//!
//! The client plans here, as embedded, then Ballista's query planner serialises the optimised
//! logical plan (views inlined, every scan a file listing) and submits it to the scheduler, which
//! splits it into stages for the executors and hands back the result partitions.

use std::net::SocketAddr;
use std::sync::Arc;

use ballista::extension::SessionStateExt;
use datafusion::catalog::Session;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::listing::ListingTable;
use datafusion::datasource::source_as_provider;
use datafusion::error::DataFusionError;
use datafusion::execution::context::QueryPlanner;
use datafusion::execution::{SessionState, SessionStateBuilder};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::ExecutionPlan;

use crate::error::{Error, Result};
use crate::lake::engine::DEFAULT_SCHEDULER_PORT;

/// Ballista settings for the client's jobs, `key=value,...` (Ballista's `ballista.*` keys).
pub const SETTINGS_VAR: &str = "GTM_LOOP_BALLISTA_SET";

/// `state` with its plans executed by the scheduler at `df://host[:port]`.
pub fn client_state(state: SessionState, scheduler: &str) -> Result<SessionState> {
    let url = grpc_url(scheduler)?;
    let mut state = state.upgrade_for_ballista(url).map_err(|e| Error::Other(format!("--engine {scheduler}: {e}")))?;
    // Ballista 55's adaptive planner never finishes a job in which a hash-shuffled stage produced
    // no rows and is read under a UNION ALL: the scheduler accepts it and it stays running, with
    // no error (`SELECT count(*) FROM (SELECT a FROM t UNION ALL SELECT b FROM u WHERE false GROUP
    // BY b)`). The momentum query and the KPI job have that shape whenever a table is empty as of
    // the run date. The static distributed planner runs them; it is the default here.
    let options = state.config_mut().options_mut();
    options.set("ballista.planner.adaptive.enabled", "false")?;
    // Ballista turns DataFusion's hash joins into sort-merge joins (they spill), but its static
    // planner then splits a sort-merge join whose sides arrive with different partition counts
    // (the funnel: "Invalid SortMergeJoinExec, partition count mismatch 2!=1"). Hash joins, as
    // the embedded engine runs them, plan correctly on both planners.
    options.set("datafusion.optimizer.prefer_hash_join", "true")?;
    // Other Ballista settings for this client's jobs, `key=value,key=value` (e.g. to turn the
    // adaptive planner back on once it is fixed).
    if let Ok(settings) = std::env::var(SETTINGS_VAR) {
        for kv in settings.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            options.set(k.trim(), v.trim()).map_err(|e| Error::Other(format!("{SETTINGS_VAR}: `{kv}`: {e}")))?;
        }
    }
    let planner = Arc::new(CheckedPlanner { inner: state.query_planner().clone(), scheduler: scheduler.to_string() });
    Ok(SessionStateBuilder::new_from_existing(state).with_query_planner(planner).build())
}

/// Ballista's query planner behind a check: a plan that scans a table the executors cannot read
/// (rows in this process's memory, a custom provider) is refused with that table's name, instead
/// of Ballista's "LogicalExtensionCodec is not provided"; and a scheduler that cannot be reached
/// is named in the error.
#[derive(Debug)]
struct CheckedPlanner {
    inner: Arc<dyn QueryPlanner + Send + Sync>,
    scheduler: String,
}

#[async_trait::async_trait]
impl QueryPlanner for CheckedPlanner {
    async fn create_physical_plan(
        &self,
        plan: &LogicalPlan,
        state: &dyn Session,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        unreadable_scan(plan)?;
        self.inner.create_physical_plan(plan, state).await.map_err(|e| {
            DataFusionError::Context(format!("on the Ballista cluster at {}", self.scheduler), Box::new(e))
        })
    }
}

/// Refuses a plan that scans anything but files (a listing table) or an empty relation.
fn unreadable_scan(plan: &LogicalPlan) -> datafusion::error::Result<()> {
    plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            let provider = source_as_provider(&scan.source)?;
            if !provider.is::<ListingTable>() {
                let kind = format!("{provider:?}");
                let kind = kind.split(|c: char| !c.is_alphanumeric()).next().unwrap_or("a custom provider");
                return Err(DataFusionError::Plan(format!(
                    "{} is a {kind}, which a Ballista cluster's executors cannot read; only tables of files \
                     (listings) and views over them run there",
                    scan.table_name
                )));
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .map(|_| ())
}

/// `df://host[:port]` as the gRPC address Ballista's client dials.
fn grpc_url(scheduler: &str) -> Result<String> {
    let rest = scheduler
        .strip_prefix("df://")
        .ok_or_else(|| Error::Refused(format!("--engine {scheduler}: a scheduler is df://host:port")))?;
    let (host, port) = match rest.split_once(':') {
        Some((h, p)) => {
            (h, p.parse::<u16>().map_err(|_| Error::Refused(format!("--engine {scheduler}: '{p}' is not a port")))?)
        }
        None => (rest, DEFAULT_SCHEDULER_PORT),
    };
    Ok(format!("http://{host}:{port}"))
}

/// Starts a Ballista scheduler on a free loopback port and `executors` executors with `slots`
/// task slots each, all in this process (Ballista's standalone mode: the same scheduler and
/// executor code as separate processes, talking gRPC and Arrow Flight over loopback). Returns the
/// scheduler's address; the servers live as long as the process's runtime.
pub async fn start_local(executors: usize, slots: usize) -> Result<SocketAddr> {
    use ballista_core::serde::BallistaCodec;
    use ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient;

    let failed = |what: &str, e: &dyn std::fmt::Display| Error::Other(format!("cannot start the {what}: {e}"));
    let addr = ballista_scheduler::standalone::new_standalone_scheduler().await.map_err(|e| failed("scheduler", &e))?;
    let url = format!("http://localhost:{}", addr.port());
    let mut tries = 0;
    let client = loop {
        match SchedulerGrpcClient::connect(url.clone()).await {
            Ok(client) => break client,
            Err(e) if tries >= 100 => return Err(failed("scheduler (not reachable after 10 s)", &e)),
            Err(_) => {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    };
    for _ in 0..executors.max(1) {
        ballista_executor::new_standalone_executor(client.clone(), slots.max(1), BallistaCodec::default())
            .await
            .map_err(|e| failed("executor", &e))?;
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduler_addresses() {
        assert_eq!(grpc_url("df://sched:6000").unwrap(), "http://sched:6000");
        assert_eq!(grpc_url("df://sched").unwrap(), "http://sched:50050");
        assert!(grpc_url("df://sched:x").is_err());
    }
}
