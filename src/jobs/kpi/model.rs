//! What the KPI job produces and the report and interventions read: periods, org units, cells
//! (a KPI for a unit in a period, with target and status), segments, and how values are shown.

use chrono::{Datelike, Days, Months, NaiveDate};

use crate::jobs::calendar::{Calendar, Grain};
use crate::jobs::kpi::catalog::LEVELS;

/// A period of a calendar: [start, end] inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Period {
    pub start: NaiveDate,
    pub end: NaiveDate,
}

/// The period holding `d` (the same arithmetic as `Calendar::period_start` in SQL).
pub fn period_of(cal: &Calendar, d: NaiveDate) -> Period {
    match cal.grain {
        Grain::Week => {
            let back = if cal.week_starts_sunday {
                d.weekday().num_days_from_sunday()
            } else {
                d.weekday().num_days_from_monday()
            };
            let start = d - Days::new(back.into());
            Period { start, end: start + Days::new(6) }
        }
        Grain::Month => {
            let start = d.with_day(1).expect("day 1");
            Period { start, end: start + Months::new(1) - Days::new(1) }
        }
        Grain::Quarter => {
            let shift = (cal.fiscal_year_start_month.clamp(1, 12) - 1) % 3;
            let m0 = d.month0() as i32;
            let offset = (m0 - shift as i32).rem_euclid(3) as u32;
            let start = d.with_day(1).expect("day 1") - Months::new(offset);
            Period { start, end: start + Months::new(3) - Days::new(1) }
        }
    }
}

/// Periods from the one holding `first` to the one holding `last`.
pub fn periods(cal: &Calendar, first: NaiveDate, last: NaiveDate) -> Vec<Period> {
    let mut out = Vec::new();
    let mut p = period_of(cal, first);
    while p.start <= last {
        out.push(p);
        p = period_of(cal, p.end + Days::new(1));
    }
    out
}

/// A unit of the organisation as the KPI job reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Unit {
    pub level: String,
    pub id: String,
    pub name: String,
    pub parent: Option<String>,
    pub head_id: Option<String>,
    pub head_name: Option<String>,
}

/// One KPI value: a unit in a period, with its target and status.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    pub kpi_id: String,
    pub grain: String,
    pub period_start: NaiveDate,
    pub period_end: NaiveDate,
    pub complete: bool,
    pub level: String,
    pub unit_id: String,
    pub unit_name: String,
    pub parent_unit_id: Option<String>,
    pub numerator: f64,
    pub denominator: f64,
    pub n: i64,
    pub value: Option<f64>,
    pub ci_low: Option<f64>,
    pub ci_high: Option<f64>,
    pub target: Option<f64>,
    pub target_high: Option<f64>,
    pub target_source: String,
    pub hist_min: Option<f64>,
    pub hist_max: Option<f64>,
    pub previous: Option<f64>,
    pub miss: bool,
    pub status: String,
    pub reason: String,
}

pub fn level_rank(level: &str) -> usize {
    LEVELS.iter().position(|l| *l == level).unwrap_or(LEVELS.len())
}

pub fn fmt_value(unit: &str, v: f64) -> String {
    match unit {
        "percent" => format!("{:.1}%", v * 100.0),
        "currency" => {
            if v.abs() >= 1e6 {
                format!("{:.2}M", v / 1e6)
            } else if v.abs() >= 1e3 {
                format!("{:.1}k", v / 1e3)
            } else {
                format!("{v:.0}")
            }
        }
        "multiple" => format!("{v:.2}x"),
        "days" => format!("{v:.1} d"),
        "count" => format!("{v:.0}"),
        _ => format!("{v:.2}"),
    }
}

/// Closed deals of a unit's subtree in the last complete quarter, by account segment.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub unit_id: String,
    pub dimension: String,
    pub segment: String,
    pub won: i64,
    pub closed: i64,
    pub bookings: f64,
}
