//! Funnel periods: conversion per step by entry period, the latest matured period against the one
//! before and the same period a year earlier (two-proportion z, Holm across every comparison).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::error::Result;
use crate::jobs::calendar::{Calendar, Grain};
use crate::jobs::funnel::Journey;
use crate::layers::LakeSession;
use crate::stats::two_proportion;

/// One step's conversion in one entry period, compared with a base period.
#[derive(Debug, Clone, PartialEq)]
pub struct PeriodRow {
    pub journey: String,
    pub step: String,
    pub next_step: String,
    pub grain: String,
    pub comparison: String,
    pub period: String,
    pub base_period: String,
    pub entered: i64,
    pub converted: i64,
    pub base_entered: i64,
    pub base_converted: i64,
    pub rate: f64,
    pub base_rate: f64,
    pub z: Option<f64>,
    pub p_value: Option<f64>,
    pub p_adjusted: Option<f64>,
    pub significant: bool,
}

/// Holm's step-down adjustment across every comparison of the run; significant = adjusted p < 0.05.
pub fn holm(rows: &mut [PeriodRow]) {
    let tested: Vec<usize> = (0..rows.len()).filter(|&i| rows[i].p_value.is_some()).collect();
    let p: Vec<f64> = tested.iter().map(|&i| rows[i].p_value.expect("some")).collect();
    for (&i, adj) in tested.iter().zip(crate::stats::multiple::holm(&p)) {
        rows[i].p_adjusted = Some(adj);
        rows[i].significant = adj < 0.05;
    }
}

/// Conversion per step by entry period; the latest matured period against the one before and the
/// same period a year earlier.
pub(super) async fn period_comparison(
    session: &LakeSession,
    journey: &Journey,
    view: &str,
    cal: &Calendar,
) -> Result<Vec<PeriodRow>> {
    let n = journey.steps.len();
    let period = cal.period_start("t0");
    let mut parts = Vec::new();
    for k in 0..n - 1 {
        parts.push(format!(
            "SELECT CAST({k} AS BIGINT) AS k, CAST({period} AS DATE) AS p, COUNT(t{k}) AS entered, COUNT(t{}) AS converted \
             FROM {view} WHERE t0 IS NOT NULL GROUP BY 1, 2",
            k + 1
        ));
    }
    let sql = format!(
        "SELECT k, CAST(p AS VARCHAR) AS p, entered, converted FROM ({}) AS u ORDER BY k, p",
        parts.join(" UNION ALL ")
    );
    let batches = session.ctx.sql(&sql).await?.collect().await?;
    let mut by_step: Vec<Vec<(String, i64, i64)>> = vec![Vec::new(); n - 1];
    for b in &batches {
        let k = cast(b.column(0), &DataType::Int64)?;
        let k = k.as_any().downcast_ref::<Int64Array>().expect("i64");
        let p = cast(b.column(1), &DataType::Utf8)?;
        let p = p.as_any().downcast_ref::<StringArray>().expect("utf8");
        let e = cast(b.column(2), &DataType::Int64)?;
        let e = e.as_any().downcast_ref::<Int64Array>().expect("i64");
        let c = cast(b.column(3), &DataType::Int64)?;
        let c = c.as_any().downcast_ref::<Int64Array>().expect("i64");
        for r in 0..b.num_rows() {
            by_step[k.value(r) as usize].push((p.value(r).to_string(), e.value(r), c.value(r)));
        }
    }
    // Compare only matured periods: the period is over and every entity in it has had the whole
    // conversion window, so a recent period is not called a drop just because deals are still open.
    let as_of_end = match session.as_of.0 {
        Some(d) => d.succ_opt().unwrap_or(d),
        None => chrono::Utc::now().date_naive(),
    };
    let mut out = Vec::new();
    for (k, series) in by_step.iter().enumerate() {
        // Entry to step k+1 can take every window up to it, so maturity counts them all.
        let window: u64 = journey.steps[1..=k + 1]
            .iter()
            .map(|st| u64::from(st.window_days.unwrap_or(journey.default_window_days)))
            .sum();
        let matured = |start: &str| {
            shift_period(start, cal, -1)
                .and_then(|next| chrono::NaiveDate::parse_from_str(&next, "%Y-%m-%d").ok())
                .is_some_and(|next| next + chrono::Days::new(window) <= as_of_end)
        };
        let complete: Vec<&(String, i64, i64)> = series.iter().filter(|r| matured(&r.0)).collect();
        let Some(current) = complete.last() else { continue };
        let find = |back: usize| -> Option<&(String, i64, i64)> {
            let idx = series.iter().position(|r| r.0 == current.0)?;
            // Periods with no entries are absent from the series, so step back by date, not index.
            let target = shift_period(&current.0, cal, back as i64)?;
            series[..idx].iter().find(|r| r.0 == target)
        };
        for (comparison, back) in [("previous", 1usize), ("last_year", cal.per_year())] {
            let Some(base) = find(back) else { continue };
            let test = two_proportion(current.2, current.1, base.2, base.1);
            out.push(PeriodRow {
                journey: journey.name.clone(),
                step: journey.steps[k].name.clone(),
                next_step: journey.steps[k + 1].name.clone(),
                grain: cal.name().into(),
                comparison: comparison.into(),
                period: current.0.clone(),
                base_period: base.0.clone(),
                entered: current.1,
                converted: current.2,
                base_entered: base.1,
                base_converted: base.2,
                rate: if current.1 > 0 { current.2 as f64 / current.1 as f64 } else { 0.0 },
                base_rate: if base.1 > 0 { base.2 as f64 / base.1 as f64 } else { 0.0 },
                z: test.map(|t| t.0),
                p_value: test.map(|t| t.1),
                p_adjusted: None,
                significant: false,
            });
        }
    }
    Ok(out)
}

/// The start of the period `back` periods before the one starting on `start` (YYYY-MM-DD);
/// a negative `back` moves forward.
fn shift_period(start: &str, cal: &Calendar, back: i64) -> Option<String> {
    let d = chrono::NaiveDate::parse_from_str(start, "%Y-%m-%d").ok()?;
    let months = |n: i64| {
        if n >= 0 {
            d.checked_sub_months(chrono::Months::new(n as u32))
        } else {
            d.checked_add_months(chrono::Months::new((-n) as u32))
        }
    };
    let shifted = match cal.grain {
        Grain::Week => d.checked_sub_signed(chrono::Duration::days(7 * back))?,
        Grain::Month => months(back)?,
        Grain::Quarter => months(3 * back)?,
    };
    Some(shifted.format("%Y-%m-%d").to_string())
}

pub(super) fn period_summary(rows: &[PeriodRow]) -> String {
    let called: Vec<&PeriodRow> = rows.iter().filter(|r| r.significant).collect();
    let mut out = format!(
        "period comparison: {} tests, {} significant after Holm correction (p < 0.05)\n",
        rows.iter().filter(|r| r.p_value.is_some()).count(),
        called.len()
    );
    for r in called {
        out.push_str(&format!(
            "  {} {} -> {}: {:.1}% in the {} from {} vs {:.1}% in {} ({}; n={} vs {}, adjusted p={:.3})\n",
            r.journey,
            r.step,
            r.next_step,
            r.rate * 100.0,
            r.grain,
            r.period,
            r.base_rate * 100.0,
            r.base_period,
            if r.rate < r.base_rate { "down" } else { "up" },
            r.entered,
            r.base_entered,
            r.p_adjusted.unwrap_or(1.0)
        ));
    }
    out
}

pub fn period_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("journey", DataType::Utf8, false),
        Field::new("step", DataType::Utf8, false),
        Field::new("next_step", DataType::Utf8, false),
        Field::new("grain", DataType::Utf8, false),
        Field::new("comparison", DataType::Utf8, false),
        Field::new("period", DataType::Utf8, false),
        Field::new("base_period", DataType::Utf8, false),
        Field::new("entered", DataType::Int64, false),
        Field::new("converted", DataType::Int64, false),
        Field::new("base_entered", DataType::Int64, false),
        Field::new("base_converted", DataType::Int64, false),
        Field::new("conversion_rate", DataType::Float64, false),
        Field::new("base_conversion_rate", DataType::Float64, false),
        Field::new("change", DataType::Float64, false),
        Field::new("z", DataType::Float64, true),
        Field::new("p_value", DataType::Float64, true),
        Field::new("p_adjusted", DataType::Float64, true),
        Field::new("significant", DataType::Boolean, false),
    ]))
}

pub(super) fn period_batch(rows: &[PeriodRow]) -> Result<RecordBatch> {
    let s = |f: &dyn Fn(&PeriodRow) -> String| -> ArrayRef {
        Arc::new(StringArray::from(rows.iter().map(f).collect::<Vec<_>>()))
    };
    let i = |f: &dyn Fn(&PeriodRow) -> i64| -> ArrayRef {
        Arc::new(Int64Array::from(rows.iter().map(f).collect::<Vec<_>>()))
    };
    let x = |f: &dyn Fn(&PeriodRow) -> Option<f64>| -> ArrayRef {
        Arc::new(Float64Array::from(rows.iter().map(f).collect::<Vec<_>>()))
    };
    Ok(RecordBatch::try_new(
        period_schema(),
        vec![
            s(&|r| r.journey.clone()),
            s(&|r| r.step.clone()),
            s(&|r| r.next_step.clone()),
            s(&|r| r.grain.clone()),
            s(&|r| r.comparison.clone()),
            s(&|r| r.period.clone()),
            s(&|r| r.base_period.clone()),
            i(&|r| r.entered),
            i(&|r| r.converted),
            i(&|r| r.base_entered),
            i(&|r| r.base_converted),
            x(&|r| Some(r.rate)),
            x(&|r| Some(r.base_rate)),
            x(&|r| Some(r.rate - r.base_rate)),
            x(&|r| r.z),
            x(&|r| r.p_value),
            x(&|r| r.p_adjusted),
            Arc::new(datafusion::arrow::array::BooleanArray::from(
                rows.iter().map(|r| r.significant).collect::<Vec<_>>(),
            )),
        ],
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holm_adjusts_in_order_and_keeps_monotone() {
        let row = |p: f64| PeriodRow {
            journey: "j".into(),
            step: "a".into(),
            next_step: "b".into(),
            grain: "month".into(),
            comparison: "previous".into(),
            period: "2024-01-01".into(),
            base_period: "2023-12-01".into(),
            entered: 1,
            converted: 1,
            base_entered: 1,
            base_converted: 1,
            rate: 0.0,
            base_rate: 0.0,
            z: None,
            p_value: Some(p),
            p_adjusted: None,
            significant: false,
        };
        // p = 0.01, 0.04, 0.03 -> sorted 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04 -> max 0.06).
        let mut rows = vec![row(0.01), row(0.04), row(0.03)];
        holm(&mut rows);
        let adj: Vec<f64> = rows.iter().map(|r| r.p_adjusted.unwrap()).collect();
        assert!(
            (adj[0] - 0.03).abs() < 1e-12 && (adj[1] - 0.06).abs() < 1e-12 && (adj[2] - 0.06).abs() < 1e-12,
            "{adj:?}"
        );
        assert_eq!(rows.iter().map(|r| r.significant).collect::<Vec<_>>(), [true, false, false]);
    }
    #[test]
    fn fiscal_quarters_and_sunday_weeks_shift_the_period() {
        let cal = Calendar { grain: Grain::Quarter, fiscal_year_start_month: 2, week_starts_sunday: false };
        assert!(cal.period_start("t").contains("INTERVAL '1 months'"));
        assert_eq!(shift_period("2024-02-01", &cal, 4).as_deref(), Some("2023-02-01"));
        let weeks = Calendar { grain: Grain::Week, week_starts_sunday: true, ..Calendar::default() };
        assert_eq!(shift_period("2024-03-03", &weeks, 1).as_deref(), Some("2024-02-25"));
    }
}
