//! The report's small charts, drawn as inline SVG from numbers only (no text inside), so they
//! need no escaping and can be handed to the templates as safe markup.

use std::fmt::Write as _;

use crate::jobs::kpi::model::Cell;
use crate::report::colour;

/// A small trend line of the last periods, with the target dashed.
pub fn sparkline(series: &[&Cell]) -> String {
    let vals: Vec<f64> = series.iter().filter_map(|c| c.value).collect();
    if vals.len() < 2 {
        return String::new();
    }
    let target = series.last().and_then(|c| c.target);
    let lo = vals.iter().copied().chain(target).fold(f64::INFINITY, f64::min);
    let hi = vals.iter().copied().chain(target).fold(f64::NEG_INFINITY, f64::max);
    let (w, h) = (120.0, 28.0);
    let span = if hi > lo { hi - lo } else { 1.0 };
    let y = |v: f64| h - 3.0 - (v - lo) / span * (h - 6.0);
    let step = w / (series.len().max(2) - 1) as f64;
    let mut pts = Vec::new();
    for (i, c) in series.iter().enumerate() {
        if let Some(v) = c.value {
            pts.push(format!("{:.1},{:.1}", i as f64 * step, y(v)));
        }
    }
    let mut svg = format!(
        "<svg class=\"spark\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"trend\">"
    );
    if let Some(t) = target {
        let ty = y(t);
        let _ = write!(
            svg,
            "<line x1=\"0\" x2=\"{w}\" y1=\"{ty:.1}\" y2=\"{ty:.1}\" stroke=\"#888\" stroke-dasharray=\"3,3\"/>"
        );
    }
    let _ =
        write!(svg, "<polyline fill=\"none\" stroke=\"#1565c0\" stroke-width=\"1.6\" points=\"{}\"/>", pts.join(" "));
    if let Some(c) = series.last()
        && let Some(v) = c.value
    {
        let _ = write!(
            svg,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.6\" fill=\"{}\"/>",
            (series.len() - 1) as f64 * step,
            y(v),
            colour(&c.status)
        );
    }
    svg.push_str("</svg>");
    svg
}
