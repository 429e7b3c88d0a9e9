//! gtm-loop: a go-to-market data lake turned into a learning loop.
//! The library does the work; `main.rs` is a thin `clap` front end over `cli::run`.
//!
//! Modules follow the flow, lowest first; a module imports only from its own layer or below
//! (`tests/layers.rs` checks it):
//!   0 `error`, `progress`, `stats`    shared foundations
//!   1 `lake`                          the store, the contract, inspection of what landed, imports
//!   2 `layers`, `demo`                raw → known → staging → marts, org units; the demo generator
//!   3 `outputs`                       run writer, manifests, registry of published tables, the log
//!   4 `quality`, `jobs`               validate; funnels, KPIs, deal risk
//!   5 `learn`                         the learning loop
//!   6 `report`                        the leadership report (templates, charts)
//!   7 `cli`                           commands

/// A file of the repository (SQL, declarations, templates) compiled in, by its path from the
/// repository root, so moving a module never breaks the path.
macro_rules! repo_file {
    ($path:expr) => {
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/", $path))
    };
}

pub mod cli;
pub mod demo;
pub mod error;
pub mod jobs;
pub mod lake;
pub mod layers;
pub mod learn;
pub mod outputs;
pub mod progress;
pub mod quality;
pub mod report;
pub mod stats;

pub use error::{Error, Result};
pub use lake::Lake;
pub use layers::{AsOf, LakeSession};
