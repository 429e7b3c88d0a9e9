//! The learning loop (quarterly): deal trajectories, outcome patterns, fitted models, playbook
//! proposals, approvals and readouts. It sits above `jobs` (it reads their outputs and the
//! decision-trace log) and below `report`.

pub mod models;
pub mod patterns;
pub mod stratified;
pub mod trajectory;
