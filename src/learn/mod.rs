//! The learning loop (quarterly): deal trajectories, outcome patterns, fitted models, playbook
//! proposals, approvals and readouts. Empty until the learning-loop issues land; it sits above
//! `jobs` (it reads their outputs and the decision-trace log) and below `report`.
