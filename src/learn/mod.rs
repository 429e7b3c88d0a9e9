//! The learning loop (quarterly): deal trajectories, outcome patterns, fitted models, playbook
//! proposals, approvals and readouts. It sits above `jobs` (it reads their outputs and the
//! decision-trace log) and below `report`.

pub mod account_priority;
pub mod approvals;
pub mod frame;
pub mod models;
pub mod momentum;
pub mod patterns;
pub mod playbooks;
pub mod proposals;
pub mod readout;
pub mod risk_weights;
pub mod stratified;
pub mod trajectory;
