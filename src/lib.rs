//! gtm-loop: a go-to-market data lake turned into a learning loop.
//! The library does the work; `main.rs` is a thin `clap` front end over `cli::run`.

pub mod action;
pub mod backtest;
pub mod bench;
pub mod catalog;
pub mod cli;
pub mod columns;
pub mod contract;
pub mod decision_log;
pub mod error;
pub mod funnel;
pub mod generate;
pub mod import;
pub mod intervention;
pub mod kpi;
pub mod lake;
pub mod org;
pub mod progress;
pub mod publish;
pub mod query;
pub mod report;
pub mod risk;
pub mod rowbuf;
pub mod validate;

pub use catalog::{AsOf, LakeSession};
pub use error::{Error, Result};
pub use lake::Lake;
