//! The layers of a lake as SQL: `raw` (as landed), `known` (the version of each row known as of
//! the run date), `staging` (typed, business-ready) and `mart` (shared facts), registered in that order.
//!
//! Registration order is decided here for the layers this module owns; `outputs::open_session`
//! adds what runs published (`output`, `log`) on top, so nothing here knows about outputs.

#[cfg(feature = "distributed")]
pub mod cluster;
pub mod columns;
pub mod known;
pub mod last_by;
pub mod marts;
pub mod ordered;
pub mod org;
pub mod overlay;
pub mod raw;
pub mod session;
pub mod shared;
pub mod staging;
pub mod trace;

use chrono::{Days, NaiveDate};

pub use session::LakeSession;

/// The layers an analyst can query, in the order data flows through them.
pub const SCHEMAS: &[(&str, &str)] = &[
    ("raw", "tables exactly as landed (files under raw/)"),
    ("known", "contract columns and types, the version of each row known as of the run date"),
    ("staging", "typed, as-of, business-ready (sql/staging/*.sql); the default schema"),
    ("mart", "facts the jobs share (sql/marts/*.sql and the org hierarchy), as of the run date"),
    ("output", "tables published by jobs (latest committed run per as-of date)"),
    ("log", "append-only logs (the decision-trace log), every record ever appended"),
];

/// The run date. `None` means "everything landed so far".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AsOf(pub Option<NaiveDate>);

impl AsOf {
    /// The first instant after the as-of date, as a SQL literal in microseconds (the unit the
    /// lake's timestamps are read in: a nanosecond literal would make its version-key arithmetic
    /// mix units, and a comparison would cast every row).
    pub fn end_literal(&self) -> String {
        let day = match self.0 {
            Some(d) => d.checked_add_days(Days::new(1)).unwrap_or(d).to_string(),
            None => "2200-01-01".to_string(),
        };
        format!("CAST(TIMESTAMP '{day} 00:00:00' AS TIMESTAMP(6))")
    }

    pub fn label(&self) -> String {
        self.0.map(|d| d.to_string()).unwrap_or_else(|| "latest".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_of_end_is_the_next_midnight() {
        let a = AsOf(Some(NaiveDate::from_ymd_opt(2024, 2, 29).unwrap()));
        assert_eq!(a.end_literal(), "CAST(TIMESTAMP '2024-03-01 00:00:00' AS TIMESTAMP(6))");
    }
}
