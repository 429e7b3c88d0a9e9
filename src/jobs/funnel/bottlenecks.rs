//! Funnel bottlenecks in words: breakdown cells converting below their peers (two-proportion
//! test, Holm over all cells) and significant drops against the step's own past.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::error::Result;
use crate::jobs::funnel::StepRow;
use crate::jobs::funnel::periods::PeriodRow;
use crate::stats::two_proportion;

/// A step or breakdown cell converting significantly below its peers or its own past, in words.
#[derive(Debug, Clone, PartialEq)]
pub struct Bottleneck {
    pub journey: String,
    pub kind: String,
    pub dimension: String,
    pub value: String,
    pub step: String,
    pub next_step: String,
    pub rate: f64,
    pub baseline_rate: f64,
    pub entered: i64,
    pub baseline_entered: i64,
    pub p_adjusted: f64,
    pub z: f64,
    pub sentence: String,
}

/// Cells needing at least this many entities before they are tested against their peers.
const MIN_CELL: i64 = 30;

/// Breakdown columns whose value looks set by the outcome itself (leakage), with the reason: at
/// some step most entities do not convert (at most half), yet one value of the column holding at
/// least MIN_CELL entities converts at 90% or more. A lead's owner team that Salesforce reassigns
/// on conversion, or a product known only once a deal exists, show this way; a real channel or
/// segment effect almost never does. Such columns are kept in funnel_breakdown for analysts but
/// refused as bottleneck findings, and the run says why.
pub fn leaky_dimensions(rows: &[StepRow]) -> Vec<(String, String, String)> {
    let mut out: Vec<(String, String, String)> = Vec::new();
    for all in rows.iter().filter(|r| r.dimension == "(all)") {
        let Some(rate) = all.rate.filter(|r| *r <= 0.5) else { continue };
        let pure = rows.iter().find(|r| {
            r.journey == all.journey
                && r.step_index == all.step_index
                && r.dimension != "(all)"
                && r.entered >= MIN_CELL
                && r.rate.is_some_and(|x| x >= 0.9)
                && !out.iter().any(|(j, d, _)| *j == r.journey && *d == r.dimension)
        });
        if let Some(cell) = pure {
            out.push((
                cell.journey.clone(),
                cell.dimension.clone(),
                format!(
                    "breakdown {} refused as a finding (leakage): {} = {} converts {:.1}% ({} of {}) at {} -> {} where the step converts {:.1}%; its value is likely set by the conversion itself",
                    cell.dimension,
                    cell.dimension,
                    cell.value,
                    100.0 * cell.rate.unwrap_or(0.0),
                    cell.converted.unwrap_or(0),
                    cell.entered,
                    cell.step,
                    cell.next_step.as_deref().unwrap_or("-"),
                    100.0 * rate
                ),
            ));
        }
    }
    out
}

/// Peers: each breakdown cell against the rest of its step (two-proportion test, Holm over all
/// cells). Own past: significant drops from the period comparison. Worst (most negative z) first.
pub fn bottlenecks(rows: &[StepRow], periods: &[PeriodRow]) -> Vec<Bottleneck> {
    let overall: std::collections::HashMap<(&str, i64), &StepRow> =
        rows.iter().filter(|r| r.dimension == "(all)").map(|r| ((r.journey.as_str(), r.step_index), r)).collect();
    let mut tests: Vec<(f64, f64, &StepRow, i64, i64)> = Vec::new();
    for cell in rows.iter().filter(|r| r.dimension != "(all)" && r.entered >= MIN_CELL) {
        let (Some(c), Some(all)) = (cell.converted, overall.get(&(cell.journey.as_str(), cell.step_index))) else {
            continue;
        };
        let (rest_n, rest_k) = (all.entered - cell.entered, all.converted.unwrap_or(0) - c);
        if rest_n < MIN_CELL {
            continue;
        }
        if let Some((z, p)) = two_proportion(c, cell.entered, rest_k, rest_n) {
            tests.push((z, p, cell, rest_k, rest_n));
        }
    }
    // Holm over the peer tests.
    let adjusted = crate::stats::multiple::holm(&tests.iter().map(|t| t.1).collect::<Vec<_>>());
    let mut out = Vec::new();
    for (i, (z, _, cell, rest_k, rest_n)) in tests.iter().enumerate() {
        if *z >= 0.0 || adjusted[i] >= 0.05 {
            continue;
        }
        let rate = cell.rate.unwrap_or(0.0);
        let base = *rest_k as f64 / *rest_n as f64;
        let (lo, hi) = (cell.ci_low.unwrap_or(0.0), cell.ci_high.unwrap_or(0.0));
        out.push(Bottleneck {
            journey: cell.journey.clone(),
            kind: "below_peers".into(),
            dimension: cell.dimension.clone(),
            value: cell.value.clone(),
            step: cell.step.clone(),
            next_step: cell.next_step.clone().unwrap_or_default(),
            rate,
            baseline_rate: base,
            entered: cell.entered,
            baseline_entered: *rest_n,
            p_adjusted: adjusted[i],
            z: *z,
            sentence: format!(
                "{}: {} -> {} for {} = {} converts {:.1}% (95% CI {:.1}-{:.1}%, n={}) vs {:.1}% for the rest (n={}); adjusted p={:.3}",
                cell.journey,
                cell.step,
                cell.next_step.as_deref().unwrap_or("-"),
                cell.dimension,
                cell.value,
                rate * 100.0,
                lo * 100.0,
                hi * 100.0,
                cell.entered,
                base * 100.0,
                rest_n,
                adjusted[i]
            ),
        });
    }
    for p in periods.iter().filter(|p| p.significant && p.rate < p.base_rate) {
        out.push(Bottleneck {
            journey: p.journey.clone(),
            kind: format!("below_{}", p.comparison),
            dimension: "(all)".into(),
            value: "(all)".into(),
            step: p.step.clone(),
            next_step: p.next_step.clone(),
            rate: p.rate,
            baseline_rate: p.base_rate,
            entered: p.entered,
            baseline_entered: p.base_entered,
            p_adjusted: p.p_adjusted.unwrap_or(1.0),
            z: p.z.unwrap_or(0.0),
            sentence: format!(
                "{}: {} -> {} fell from {:.1}% ({} {}, n={}) to {:.1}% ({} {}, n={}); adjusted p={:.3}",
                p.journey,
                p.step,
                p.next_step,
                p.base_rate * 100.0,
                p.grain,
                p.base_period,
                p.base_entered,
                p.rate * 100.0,
                p.grain,
                p.period,
                p.entered,
                p.p_adjusted.unwrap_or(1.0)
            ),
        });
    }
    out.sort_by(|a, b| a.z.partial_cmp(&b.z).expect("finite z"));
    out
}

pub fn bottleneck_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("journey", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("dimension", DataType::Utf8, false),
        Field::new("value", DataType::Utf8, false),
        Field::new("step", DataType::Utf8, false),
        Field::new("next_step", DataType::Utf8, false),
        Field::new("conversion_rate", DataType::Float64, false),
        Field::new("baseline_rate", DataType::Float64, false),
        Field::new("entered", DataType::Int64, false),
        Field::new("baseline_entered", DataType::Int64, false),
        Field::new("z", DataType::Float64, false),
        Field::new("p_adjusted", DataType::Float64, false),
        Field::new("sentence", DataType::Utf8, false),
    ]))
}

pub(super) fn bottleneck_batch(rows: &[Bottleneck]) -> Result<RecordBatch> {
    let s = |f: &dyn Fn(&Bottleneck) -> String| -> ArrayRef {
        Arc::new(StringArray::from(rows.iter().map(f).collect::<Vec<_>>()))
    };
    let i = |f: &dyn Fn(&Bottleneck) -> i64| -> ArrayRef {
        Arc::new(Int64Array::from(rows.iter().map(f).collect::<Vec<_>>()))
    };
    let x = |f: &dyn Fn(&Bottleneck) -> f64| -> ArrayRef {
        Arc::new(Float64Array::from(rows.iter().map(f).collect::<Vec<_>>()))
    };
    Ok(RecordBatch::try_new(
        bottleneck_schema(),
        vec![
            s(&|r| r.journey.clone()),
            s(&|r| r.kind.clone()),
            s(&|r| r.dimension.clone()),
            s(&|r| r.value.clone()),
            s(&|r| r.step.clone()),
            s(&|r| r.next_step.clone()),
            x(&|r| r.rate),
            x(&|r| r.baseline_rate),
            i(&|r| r.entered),
            i(&|r| r.baseline_entered),
            x(&|r| r.z),
            x(&|r| r.p_adjusted),
            s(&|r| r.sentence.clone()),
        ],
    )?)
}
