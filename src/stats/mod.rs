//! The statistics every job shares, written once and tested against published worked examples:
//! intervals for rates, tests for differences, multiple-testing control and ranking quality.

pub mod auc;
pub mod hypothesis;
pub mod intervals;
pub mod multiple;

pub use auc::auc;
pub use hypothesis::two_proportion;
pub use intervals::{newcombe_difference, wilson};
pub use multiple::{benjamini_hochberg, holm};
