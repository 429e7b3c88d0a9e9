//! The funnel chart: a self-contained SVG (no fonts or scripts from outside), text escaped through
//! the one markup path, published beside the run's tables and embedded in the leadership report.

use crate::jobs::funnel::StepRow;
use crate::jobs::funnel::{days, pct};

/// A self-contained SVG funnel: one bar per step, width by entities, with counts, share of the first
/// step, conversion to the next step and median days. No fonts or scripts from outside.
pub fn funnel_svg(journey: &str, steps: &[&StepRow], as_of: &str) -> String {
    use crate::outputs::markup::esc;
    let (w, bar_h, gap, top, left) = (760.0, 34.0, 30.0, 48.0, 170.0);
    let max = steps.iter().map(|s| s.entered).max().unwrap_or(1).max(1) as f64;
    let height = top + steps.len() as f64 * (bar_h + gap) + 10.0;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{height}\" viewBox=\"0 0 {w} {height}\" font-family=\"sans-serif\" font-size=\"13\">\n\
         <title>{} funnel as of {}</title>\n<text x=\"10\" y=\"24\" font-size=\"16\" font-weight=\"bold\">{} funnel, as of {}</text>\n",
        esc(journey),
        esc(as_of),
        esc(journey),
        esc(as_of)
    );
    let span = w - left - 20.0;
    for (i, s) in steps.iter().enumerate() {
        let y = top + i as f64 * (bar_h + gap);
        let bw = (s.entered as f64 / max * span).max(1.0);
        let x = left + (span - bw) / 2.0;
        svg.push_str(&format!(
            "<text x=\"10\" y=\"{:.1}\">{}</text>\n<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{bw:.1}\" height=\"{bar_h}\" fill=\"#a9c7ea\" rx=\"3\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#10243a\" font-weight=\"bold\">{} ({})</text>\n",
            y + bar_h / 2.0 + 4.0,
            esc(&s.step),
            left + span / 2.0,
            y + bar_h / 2.0 + 4.0,
            s.entered,
            pct(s.from_first)
        ));
        if let (Some(next), Some(rate)) = (&s.next_step, s.rate) {
            svg.push_str(&format!(
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#444444\">{:.1}% to {} (95% CI {}-{}), median {} d</text>\n",
                left + span / 2.0,
                y + bar_h + gap / 2.0 + 5.0,
                rate * 100.0,
                esc(next),
                pct(s.ci_low),
                pct(s.ci_high),
                days(s.median_days)
            ));
        }
    }
    svg.push_str("</svg>\n");
    svg
}
