//! Severity: how a KPI cell is read against its target and its own past: on track, a single
//! miss to observe, repeated misses to coach, a sudden change to diagnose first, or systemic.

use std::collections::{BTreeMap, HashMap};

use chrono::NaiveDate;

use crate::jobs::kpi::catalog::{Direction, Kind, Kpi, Severity, Target};
use crate::jobs::kpi::model::{Cell, Period, Unit, fmt_value};
use crate::stats::{RatioSums, ratio_interval, wilson};

/// One unit's sums per period start: (numerator, denominator, n).
pub(super) type Series = BTreeMap<NaiveDate, (f64, f64, i64)>;

/// One unit's per-row spread per period start: (Σnum², Σden², Σnum·den, rows), for the interval
/// of an average.
pub(super) type Spread = BTreeMap<NaiveDate, (f64, f64, f64, i64)>;

/// One unit's sums per period, and their per-row spread where the KPI has one.
pub(super) struct UnitSeries<'a> {
    pub unit: &'a Unit,
    pub series: &'a Series,
    pub spread: Option<&'a Spread>,
}

/// Units compared for systemic misses: same KPI, grain, period, level and parent.
type PeerGroup = (String, String, NaiveDate, String, Option<String>);

/// Whether `v` is worse than `target` for this KPI.
fn misses(kpi: &Kpi, v: f64, target: f64, target_high: Option<f64>) -> bool {
    match (kpi.target, kpi.direction) {
        (Target::Band { .. }, _) => v < target || target_high.is_some_and(|h| v > h),
        (_, Direction::Higher) => v < target,
        (_, Direction::Lower) => v > target,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 { v[m] } else { (v[m - 1] + v[m]) / 2.0 }
}

/// The cells of one unit's series, densified: a period with no rows is a real zero for totals and
/// "no value" for ratios, from the unit's first period with data to the as-of period.
pub(super) fn series_cells(
    kpi: &Kpi,
    g: &str,
    list: &[Period],
    as_of: NaiveDate,
    data: UnitSeries<'_>,
    sev: &Severity,
) -> Vec<Cell> {
    let UnitSeries { unit, series, spread } = data;
    let Some(first) = series.keys().next().copied() else { return Vec::new() };
    let mut out: Vec<Cell> = Vec::new();
    for p in list.iter().filter(|p| p.start >= first) {
        let (num, den, n) = series.get(&p.start).copied().unwrap_or((0.0, 0.0, 0));
        let value = match kpi.kind {
            Kind::Total => Some(num),
            Kind::Ratio => (den != 0.0).then(|| num / den),
        };
        // Rates: Wilson. Averages (other ratios): the ratio estimator's interval over the rows.
        let (ci_low, ci_high) = if kpi.rate {
            wilson(num.round() as i64, den.round() as i64).map_or((None, None), |(l, h)| (Some(l), Some(h)))
        } else if kpi.kind == Kind::Ratio
            && let Some(&(yy, xx, xy, rows)) = spread.and_then(|s| s.get(&p.start))
        {
            ratio_interval(RatioSums { y: num, x: den, yy, xx, xy, rows })
                .map_or((None, None), |(l, h)| (Some(l), Some(h)))
        } else {
            (None, None)
        };
        let complete = p.end <= as_of;
        let enough = |c: &Cell| c.value.is_some() && (kpi.kind == Kind::Total || c.n >= kpi.min_n.max(1));
        // History: this unit's earlier complete periods with enough data.
        let history: Vec<f64> = match kpi.target {
            Target::Historical { lookback, .. } => {
                out.iter().rev().filter(|c| c.complete && enough(c)).take(lookback).filter_map(|c| c.value).collect()
            }
            _ => out.iter().rev().filter(|c| c.complete && enough(c)).take(4).filter_map(|c| c.value).collect(),
        };
        let (target, target_high, source) = match kpi.target {
            Target::Fixed { value } => (Some(value), None, "fixed".to_string()),
            Target::Quota { value } => (Some(value), None, "quota".to_string()),
            Target::Band { low, high } => (Some(low), Some(high), "band".to_string()),
            Target::Historical { tolerance, lookback } => {
                if history.len() >= sev.min_history {
                    let m = median(history.clone());
                    let t = match kpi.direction {
                        Direction::Higher => m - tolerance * m.abs(),
                        Direction::Lower => m + tolerance * m.abs(),
                    };
                    let side = if kpi.direction == Direction::Higher { "below" } else { "above" };
                    let source = format!(
                        "historical: {:.0}% {side} its own median {} of the last {} periods",
                        tolerance * 100.0,
                        fmt_value(&kpi.unit, m),
                        history.len().min(lookback)
                    );
                    (Some(t), None, source)
                } else {
                    (None, None, "historical".to_string())
                }
            }
        };
        let hist_min = history.iter().copied().reduce(f64::min);
        let hist_max = history.iter().copied().reduce(f64::max);
        let prev = out.last().filter(|c| enough(c)).cloned();
        let mut cell = Cell {
            kpi_id: kpi.id.clone(),
            grain: g.to_string(),
            period_start: p.start,
            period_end: p.end,
            complete,
            level: unit.level.clone(),
            unit_id: unit.id.clone(),
            unit_name: unit.name.clone(),
            parent_unit_id: unit.parent.clone(),
            numerator: num,
            denominator: den,
            n,
            value,
            ci_low,
            ci_high,
            target,
            target_high,
            target_source: source,
            hist_min,
            hist_max,
            previous: prev.as_ref().and_then(|c| c.value),
            miss: false,
            status: String::new(),
            reason: String::new(),
        };
        let (status, reason) = if !complete {
            ("in_progress", format!("period not over on {as_of}: read as-to-date, not judged"))
        } else if !enough(&cell) {
            ("not_enough_data", format!("n={n} below the KPI's min_n={}", kpi.min_n))
        } else if let (Some(v), Some(t)) = (value, target) {
            let point_miss = misses(kpi, v, t, target_high);
            match unclear_miss(kpi, &cell, t, target_high, sev) {
                Some(why) if point_miss => ("not_enough_data", why),
                _ => {
                    cell.miss = point_miss;
                    if !cell.miss {
                        ("on_track", String::new())
                    } else {
                        classify(kpi, &cell, prev.as_ref(), &out, sev)
                    }
                }
            }
        } else {
            ("no_target", format!("fewer than {} earlier periods to set a historical target", sev.min_history))
        };
        cell.status = status.to_string();
        cell.reason = reason;
        out.push(cell);
    }
    out
}

/// Why a point below target is not yet a miss, if it is not: an average (a ratio of sums that is
/// not a rate) on fewer than `min_judge_n` rows; or a 95% interval that still reaches the target
/// (Wilson for a rate of counts, the ratio estimator's for an average). Totals are facts, not
/// samples: their misses stand.
fn unclear_miss(kpi: &Kpi, cell: &Cell, target: f64, target_high: Option<f64>, sev: &Severity) -> Option<String> {
    let v = cell.value?;
    if kpi.kind == Kind::Ratio && !kpi.rate && cell.n < sev.min_judge_n {
        return Some(format!(
            "{} against a target of {}, on n={} (a miss of an average needs n >= {}): not enough evidence of a miss",
            fmt_value(&kpi.unit, v),
            fmt_value(&kpi.unit, target),
            cell.n,
            sev.min_judge_n
        ));
    }
    if let (Some(lo), Some(hi)) = (cell.ci_low, cell.ci_high) {
        let clear = match (kpi.target, kpi.direction) {
            (Target::Band { .. }, _) => hi < target || target_high.is_some_and(|h| lo > h),
            (_, Direction::Higher) => hi < target,
            (_, Direction::Lower) => lo > target,
        };
        return (!clear).then(|| {
            format!(
                "{} against a target of {}, but its 95% interval {}-{} (n={}) includes the target: not enough evidence of a miss",
                fmt_value(&kpi.unit, v),
                fmt_value(&kpi.unit, target),
                fmt_value(&kpi.unit, lo),
                fmt_value(&kpi.unit, hi),
                cell.n
            )
        });
    }
    None
}

/// A miss becomes diagnose_first, coaching or observe (systemic is decided across units later).
fn classify(kpi: &Kpi, cell: &Cell, prev: Option<&Cell>, earlier: &[Cell], sev: &Severity) -> (&'static str, String) {
    let v = cell.value.expect("a miss has a value");
    if let Some(p) = prev.filter(|p| p.complete)
        && let Some(pv) = p.value
    {
        let worse = match kpi.direction {
            Direction::Higher => (pv - v) / pv.abs().max(f64::EPSILON),
            Direction::Lower => (v - pv) / pv.abs().max(f64::EPSILON),
        };
        let outside = match kpi.direction {
            Direction::Higher => cell.hist_min.is_none_or(|m| v < m),
            Direction::Lower => cell.hist_max.is_none_or(|m| v > m),
        };
        let volume = if p.n > 0 && cell.n > 0 {
            let r = cell.n as f64 / p.n as f64;
            r > sev.volume_change || r < 1.0 / sev.volume_change
        } else {
            false
        };
        // A "sharp" change must also be more than noise: for a rate of counts a two-proportion test
        // against the previous period at 5% (0 of 90 -> 1 of 92 is not a sudden drop); for an
        // average, the previous value outside this period's 95% interval.
        let beyond_noise = if !kpi.rate {
            // An average with an interval: the previous value must lie outside it.
            match (cell.ci_low, cell.ci_high) {
                (Some(lo), Some(hi)) => pv < lo || pv > hi,
                _ => true,
            }
        } else {
            crate::stats::two_proportion(
                cell.numerator.round() as i64,
                cell.denominator.round() as i64,
                p.numerator.round() as i64,
                p.denominator.round() as i64,
            )
            .is_some_and(|(_, pvalue)| pvalue < 0.05)
        };
        if (worse >= sev.sharp_drop && outside && beyond_noise) || volume {
            return (
                "diagnose_first",
                format!(
                    "sudden change: {} from {} last period ({:+.0}%), n {} -> {}{}; check data quality, owner and territory changes and volume before calling it execution",
                    fmt_value(&kpi.unit, v),
                    fmt_value(&kpi.unit, pv),
                    -worse * 100.0,
                    p.n,
                    cell.n,
                    if volume { " (volume anomaly)" } else { "" }
                ),
            );
        }
    }
    let window: Vec<&Cell> =
        earlier.iter().rev().filter(|c| c.complete).take(sev.repeat_window.saturating_sub(1)).collect();
    let repeated = 1 + window.iter().filter(|c| c.miss).count();
    if repeated >= sev.repeat_misses {
        return ("coaching", format!("missed {repeated} of the last {} periods", window.len() + 1));
    }
    let within = cell.hist_min.zip(cell.hist_max).is_some_and(|(lo, hi)| v >= lo && v <= hi);
    ("observe", if within { "single miss within its historical range".to_string() } else { "single miss".to_string() })
}

/// The same miss across several units under one parent is systemic (owner: leadership).
pub(super) fn systemic(cells: &mut [Cell], sev: &Severity) {
    let mut groups: HashMap<PeerGroup, (usize, usize)> = HashMap::new();
    for c in cells.iter().filter(|c| c.complete && c.level != "company") {
        let judged = c.value.is_some() && !matches!(c.status.as_str(), "not_enough_data" | "no_target" | "in_progress");
        if !judged {
            continue;
        }
        let e = groups
            .entry((c.kpi_id.clone(), c.grain.clone(), c.period_start, c.level.clone(), c.parent_unit_id.clone()))
            .or_default();
        e.0 += 1;
        if c.miss {
            e.1 += 1;
        }
    }
    for c in cells.iter_mut().filter(|c| c.miss && matches!(c.status.as_str(), "observe" | "coaching")) {
        let key = (c.kpi_id.clone(), c.grain.clone(), c.period_start, c.level.clone(), c.parent_unit_id.clone());
        if let Some((judged, missed)) = groups.get(&key)
            && *missed >= sev.systemic_min_units
            && (*missed as f64) >= sev.systemic_share * (*judged as f64)
        {
            c.status = "systemic".into();
            c.reason = format!("{missed} of {judged} {}s under the same parent missed this period", c.level);
        }
    }
}
