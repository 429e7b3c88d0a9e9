//! What runs leave behind in the lake: the atomic run writer and its manifests, the registry of
//! published tables (`output.*`), and the append-only decision-trace log (`log.*`).

pub mod audit_log;
pub mod cadence;
pub mod decision_log;
pub mod markup;
pub mod registry;
pub mod run_writer;

pub use run_writer::{Manifest, RunWriter, TableSink};

/// The code that produced a run, a record or a model: the package version and, built from a git
/// checkout, `git describe --always --dirty` (stamped by build.rs).
pub const CODE_VERSION: &str = env!("GTM_LOOP_CODE_VERSION");

use crate::error::Result;
use crate::lake::Lake;
use crate::layers::{AsOf, LakeSession};

/// The session every job and query works in: the lake's layers (raw → marts, org units), then
/// what earlier runs published (`output`) and the decision-trace log (`log`), in that order.
pub async fn open_session(lake: &Lake, as_of: AsOf) -> Result<LakeSession> {
    let session = LakeSession::open_layers(lake, as_of).await?;
    registry::register_outputs(&session).await?;
    decision_log::register(&session).await?;
    audit_log::register(&session).await?;
    Ok(session)
}
