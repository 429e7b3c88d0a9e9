//! The statistics every job shares: distributions and special functions from `statrs`, and what it
//! lacks (Wilson, Newcombe, Holm, Benjamini-Hochberg, AUC) written once, tested on published examples.

pub mod auc;
pub mod hypothesis;
pub mod intervals;
pub mod multiple;

pub use auc::auc;
pub use hypothesis::two_proportion;
pub use intervals::{RatioSums, newcombe_difference, ratio_interval, wilson};
pub use multiple::{benjamini_hochberg, holm};
