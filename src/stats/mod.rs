//! The statistics every job shares: distributions and special functions from `statrs`, and what it
//! lacks (Wilson, Newcombe, Holm, Benjamini-Hochberg, AUC) written once, tested on published examples.

pub mod auc;
pub mod experiment;
pub mod hypothesis;
pub mod intervals;
pub mod multiple;
pub mod tables;

pub use auc::{RankedScores, auc};
pub use hypothesis::{binomial_two_sided, two_proportion};
pub use intervals::{RatioSums, newcombe_difference, ratio_interval, wilson};
pub use multiple::{benjamini_hochberg, holm};
pub use tables::{
    Estimate, MantelHaenszel, Table2x2, breslow_day, mantel_haenszel, normal_two_sided, ratio_of_odds_ratios,
};
