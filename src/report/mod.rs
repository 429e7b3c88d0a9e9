//! The leadership report: one self-contained HTML file per view (inline CSS and SVG, no network
//! assets, no script) and a short Markdown summary for Slack or email.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;

use chrono::NaiveDate;

use crate::intervention::Intervention;
use crate::kpi::{Catalog, Cell, Kpi, STAGES, Unit, fmt_value, level_rank};

/// Everything a report shows.
pub struct Input<'a> {
    pub as_of: NaiveDate,
    pub run_id: &'a str,
    pub catalog: &'a Catalog,
    pub cells: &'a [Cell],
    pub units: &'a [Unit],
    pub interventions: &'a [Intervention],
    /// Funnel charts (journey, SVG) and bottleneck sentences, when the funnel job ran.
    pub funnels: &'a [(String, String)],
    pub bottlenecks: &'a [String],
    /// KPIs whose source tables are not landed, with the tables.
    pub skipped: &'a [(String, Vec<String>)],
    /// Closed deals by account segment per unit, in the quarter starting `segment_quarter`.
    pub segments: &'a [crate::kpi::Segment],
    pub segment_quarter: NaiveDate,
    /// Open deals of the latest deal-risk run for the date, riskiest first (empty if none ran).
    pub risk: &'a [crate::kpi::RiskLine],
}

/// Who the view is for: the VP (the whole company), a regional leader or a manager (a subtree).
#[derive(Debug, Clone)]
pub struct View {
    pub key: String,
    pub title: String,
    pub root: String,
}

const STATUS_ORDER: [&str; 9] = [
    "systemic",
    "diagnose_first",
    "coaching",
    "observe",
    "on_track",
    "no_target",
    "not_enough_data",
    "in_progress",
    "not_instrumented",
];

fn colour(status: &str) -> &'static str {
    match status {
        "on_track" => "#2e7d32",
        "observe" => "#f9a825",
        "coaching" => "#ef6c00",
        "systemic" => "#c62828",
        "diagnose_first" => "#6a1b9a",
        _ => "#9e9e9e",
    }
}

fn label(status: &str) -> &'static str {
    match status {
        "on_track" => "on track",
        "observe" => "observe",
        "coaching" => "coaching",
        "systemic" => "systemic",
        "diagnose_first" => "diagnose first",
        "not_enough_data" => "not enough data",
        "no_target" => "no target yet",
        "in_progress" => "in progress",
        "not_instrumented" => "not instrumented",
        _ => "-",
    }
}

pub fn esc(t: &str) -> String {
    t.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The views to render: the VP's, one per region and one per manager that has any KPI data.
pub fn views(units: &[Unit], cells: &[Cell]) -> Vec<View> {
    let active: BTreeSet<&str> = cells.iter().filter(|c| c.n > 0).map(|c| c.unit_id.as_str()).collect();
    let mut out = vec![View { key: "vp".into(), title: "VP view: the whole company".into(), root: "company".into() }];
    for u in units.iter().filter(|u| (u.level == "region" || u.level == "manager") && active.contains(u.id.as_str())) {
        let slug: String =
            u.name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect();
        out.push(View {
            key: format!("{}_{slug}", u.level),
            title: format!("{} view: {}", if u.level == "region" { "Regional leader" } else { "Manager" }, u.name),
            root: u.id.clone(),
        });
    }
    out
}

/// The units of a view: its root and every unit whose parent chain reaches it.
fn subtree(units: &[Unit], root: &str) -> BTreeSet<String> {
    let parent: HashMap<&str, Option<&str>> = units.iter().map(|u| (u.id.as_str(), u.parent.as_deref())).collect();
    units
        .iter()
        .filter(|u| {
            let mut cur = Some(u.id.as_str());
            for _ in 0..16 {
                match cur {
                    Some(c) if c == root => return true,
                    Some(c) => cur = parent.get(c).copied().flatten(),
                    None => return false,
                }
            }
            false
        })
        .map(|u| u.id.clone())
        .collect()
}

fn review<'a>(cells: &'a [Cell], kpi: &Kpi, unit: &str) -> (Option<&'a Cell>, Vec<&'a Cell>) {
    let mut series: Vec<&Cell> =
        cells.iter().filter(|c| c.kpi_id == kpi.id && c.grain == kpi.grain && c.unit_id == unit).collect();
    series.sort_by_key(|c| c.period_start);
    let complete: Vec<&Cell> = series.iter().copied().filter(|c| c.complete).collect();
    let last = complete.last().copied().or_else(|| series.iter().copied().find(|c| c.status == "not_instrumented"));
    let tail = complete.len().saturating_sub(8);
    (last, complete[tail..].to_vec())
}

/// A small trend line of the last periods, with the target dashed.
fn sparkline(series: &[&Cell]) -> String {
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

fn chip(status: &str) -> String {
    format!("<span class=\"chip\" style=\"background:{}\">{}</span>", colour(status), label(status))
}

fn value(kpi: &Kpi, c: Option<&Cell>) -> String {
    c.and_then(|c| c.value).map(|v| fmt_value(&kpi.unit, v)).unwrap_or_else(|| "–".into())
}

fn target(kpi: &Kpi, c: Option<&Cell>) -> String {
    match c.map(|c| (c.target, c.target_high)) {
        Some((Some(lo), Some(hi))) => format!("{}–{}", fmt_value(&kpi.unit, lo), fmt_value(&kpi.unit, hi)),
        Some((Some(t), None)) => fmt_value(&kpi.unit, t),
        _ => "–".into(),
    }
}

const CSS: &str = "body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#1b1f24;background:#fff}\
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}\
h3{font-size:15px;margin:0 0 6px}.meta{color:#555;font-size:13px}.stages{display:grid;grid-template-columns:repeat(4,1fr);gap:12px}\
.stage{background:#f6f8fa;border-radius:6px;padding:10px}.stage>h3{text-transform:uppercase;letter-spacing:.05em;color:#444}\
.card{background:#fff;border:1px solid #d0d7de;border-left:6px solid #999;border-radius:4px;padding:8px;margin:8px 0}\
.card .v{font-size:20px;font-weight:600}.card .t{color:#555;font-size:12px}.diag{font-size:12px;color:#333;margin:4px 0 0;padding-left:14px}\
.chip{color:#fff;border-radius:9px;padding:1px 7px;font-size:11px;white-space:nowrap}table{border-collapse:collapse;font-size:12px;width:100%}\
th,td{border-bottom:1px solid #e5e5e5;padding:4px 6px;text-align:left;vertical-align:top}th{background:#f6f8fa}\
td.num{text-align:right;font-variant-numeric:tabular-nums}.l1{padding-left:18px}.l2{padding-left:34px}.l3{padding-left:50px}\
details{margin:6px 0}summary{cursor:pointer;font-weight:600}.legend span{margin-right:8px}.spark{vertical-align:middle}";

/// One HTML view.
pub fn html(input: &Input, view: &View) -> String {
    let units_in = subtree(input.units, &view.root);
    let root_name =
        input.units.iter().find(|u| u.id == view.root).map(|u| u.name.clone()).unwrap_or_else(|| "Company".into());
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>GTM KPI report: {} as of {}</title><style>{CSS}</style></head><body>",
        esc(&root_name),
        input.as_of
    );
    let _ = write!(
        h,
        "<h1>GTM KPI report: {}</h1><div class=\"meta\">{} · as of <b id=\"as-of\">{}</b> · KPI catalog {} · run {}</div>",
        esc(&root_name),
        esc(&view.title),
        input.as_of,
        esc(&input.catalog.version),
        esc(input.run_id)
    );
    h.push_str("<p class=\"legend meta\">");
    for s in ["on_track", "observe", "coaching", "systemic", "diagnose_first", "not_enough_data"] {
        h.push_str(&chip(s));
    }
    h.push_str(" Each primary KPI is read in its review period (the last complete week, month or quarter before the as-of date); the line shows the last periods against the dashed target.</p>");

    // The KPI tree by stage.
    h.push_str("<h2>KPI tree: Inputs → Capability → Execution → Outcomes</h2><div class=\"stages\">");
    for stage in STAGES {
        let _ = write!(h, "<div class=\"stage\"><h3>{stage}</h3>");
        for kpi in input.catalog.kpis.iter().filter(|k| k.stage == stage && k.primary) {
            let (last, series) = review(input.cells, kpi, &view.root);
            let status = last.map(|c| c.status.as_str()).unwrap_or("not_enough_data");
            let _ = write!(
                h,
                "<div class=\"card\" style=\"border-left-color:{}\" data-kpi=\"{}\"><div class=\"t\">{}</div><b>{}</b><br>\
                 <span class=\"v\">{}</span> <span class=\"t\">target {} · {} {}</span><br>{} {}",
                colour(status),
                esc(&kpi.id),
                esc(&kpi.domain),
                esc(&kpi.name),
                value(kpi, last),
                target(kpi, last),
                esc(&kpi.grain),
                last.map(|c| c.period_start.to_string()).unwrap_or_default(),
                chip(status),
                sparkline(&series)
            );
            if status == "not_instrumented" {
                let _ =
                    write!(h, "<div class=\"t\">{}</div>", esc(&last.map(|c| c.reason.clone()).unwrap_or_default()));
            }
            let diags: Vec<&Kpi> = input
                .catalog
                .kpis
                .iter()
                .filter(|d| !d.primary && d.stage == stage && d.domain == kpi.domain)
                .collect();
            if !diags.is_empty() {
                h.push_str("<ul class=\"diag\">");
                for d in diags {
                    let (dl, _) = review(input.cells, d, &view.root);
                    let _ = write!(
                        h,
                        "<li>{}: <b>{}</b> <span style=\"color:{}\">●</span> {}</li>",
                        esc(&d.name),
                        value(d, dl),
                        colour(dl.map(|c| c.status.as_str()).unwrap_or("")),
                        label(dl.map(|c| c.status.as_str()).unwrap_or(""))
                    );
                }
                h.push_str("</ul>");
            }
            h.push_str("</div>");
        }
        h.push_str("</div>");
    }
    h.push_str("</div>");

    // Interventions in this view.
    let mut ivs: Vec<&Intervention> = input.interventions.iter().filter(|i| units_in.contains(&i.unit_id)).collect();
    ivs.sort_by_key(|i| {
        (STATUS_ORDER.iter().position(|s| *s == i.status), level_rank(&i.level), i.kpi_id.clone(), i.unit_name.clone())
    });
    let _ = write!(h, "<h2>Interventions ({})</h2>", ivs.len());
    if ivs.is_empty() {
        h.push_str("<p>None: every primary KPI in this view is on track or has too little data to judge.</p>");
    } else {
        h.push_str("<table><tr><th>Severity</th><th>KPI</th><th>Where</th><th>Action</th><th>Owner</th><th>Follow up</th><th>Evidence</th></tr>");
        for i in ivs.iter().take(200) {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{} ({})</td><td>{}</td><td>{}</td><td>{}</td><td class=\"meta\">{}</td></tr>",
                chip(&i.status),
                esc(&i.kpi_name),
                esc(&i.unit_name),
                esc(&i.level),
                esc(&i.action),
                esc(&i.owner_name),
                i.follow_up_date,
                esc(&i.evidence)
            );
        }
        h.push_str("</table>");
        if ivs.len() > 200 {
            let _ = write!(h, "<p class=\"meta\">{} more in output.kpi_interventions.</p>", ivs.len() - 200);
        }
    }

    // Drill-down: region -> manager -> seller for each primary KPI.
    h.push_str("<h2>Drill-down</h2>");
    let mut ordered: Vec<&Unit> = Vec::new();
    fn walk<'a>(units: &'a [Unit], id: &str, out: &mut Vec<&'a Unit>, depth: usize) {
        if let Some(u) = units.iter().find(|u| u.id == id) {
            out.push(u);
        }
        if depth > 8 {
            return;
        }
        let mut kids: Vec<&Unit> = units.iter().filter(|u| u.parent.as_deref() == Some(id) && u.id != id).collect();
        kids.sort_by(|a, b| (level_rank(&a.level), &a.name).cmp(&(level_rank(&b.level), &b.name)));
        for k in kids {
            walk(units, &k.id, out, depth + 1);
        }
    }
    walk(input.units, &view.root, &mut ordered, 0);
    let root_rank = input.units.iter().find(|u| u.id == view.root).map(|u| level_rank(&u.level)).unwrap_or(0);
    for kpi in input.catalog.kpis.iter().filter(|k| k.primary) {
        let _ = write!(
            h,
            "<details><summary>{} ({}, by {})</summary><table><tr><th>Unit</th><th>Level</th><th>Value</th><th>Target</th><th>n</th><th>Status</th><th>Trend</th></tr>",
            esc(&kpi.name),
            esc(&kpi.stage),
            esc(&kpi.grain)
        );
        for u in &ordered {
            let (last, series) = review(input.cells, kpi, &u.id);
            let Some(c) = last else { continue };
            let depth = level_rank(&u.level).saturating_sub(root_rank).min(3);
            let _ = write!(
                h,
                "<tr><td class=\"l{depth}\">{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td></tr>",
                esc(&u.name),
                esc(&u.level),
                value(kpi, Some(c)),
                target(kpi, Some(c)),
                c.n,
                chip(&c.status),
                sparkline(&series)
            );
        }
        h.push_str("</table></details>");
    }

    let deals: Vec<&crate::kpi::RiskLine> = input
        .risk
        .iter()
        .filter(|r| view.root == "company" || units_in.contains(&format!("seller:{}", r.owner_id)))
        .collect();
    if !deals.is_empty() {
        let scored: Vec<&&crate::kpi::RiskLine> = deals.iter().filter(|r| r.score.is_some()).collect();
        let flagged = scored.iter().filter(|r| !r.flags.is_empty()).count();
        let at_risk: f64 = scored.iter().filter(|r| !r.flags.is_empty()).filter_map(|r| r.amount).sum();
        let _ = write!(
            h,
            "<h2>Deal risk ({} open deals, {flagged} flagged, {} of pipeline at risk)</h2>\
             <table><tr><th>Risk</th><th>Deal</th><th>Owner</th><th>Stage</th><th>Amount</th><th>Flags</th><th>This week's move</th></tr>",
            deals.len(),
            fmt_value("currency", at_risk)
        );
        for r in scored.iter().filter(|r| !r.flags.is_empty()).take(15) {
            let _ = write!(
                h,
                "<tr><td class=\"num\">{}</td><td>{} ({})</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td></tr>",
                r.score.unwrap_or_default(),
                esc(&r.deal),
                esc(&r.account),
                esc(&r.owner),
                esc(&r.stage),
                r.amount.map(|a| fmt_value("currency", a)).unwrap_or_else(|| "–".into()),
                esc(&r.flags.replace(',', ", ")),
                esc(&r.action)
            );
        }
        h.push_str("</table>");
    }
    let segs: Vec<&crate::kpi::Segment> = input.segments.iter().filter(|s| s.unit_id == view.root).collect();
    if !segs.is_empty() {
        let _ = write!(
            h,
            "<h2>Territory by segment (deals closed in the quarter from {})</h2><div class=\"stages\">",
            input.segment_quarter
        );
        for dim in ["size band", "industry"] {
            let _ = write!(
                h,
                "<div><h3>By {dim}</h3><table><tr><th>{dim}</th><th>Won / closed</th><th>Win rate</th><th>Bookings</th></tr>"
            );
            for s in segs.iter().filter(|s| s.dimension == dim) {
                let rate =
                    if s.closed > 0 { fmt_value("percent", s.won as f64 / s.closed as f64) } else { "–".into() };
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td class=\"num\">{} / {}</td><td class=\"num\">{rate}</td><td class=\"num\">{}</td></tr>",
                    esc(&s.segment),
                    s.won,
                    s.closed,
                    fmt_value("currency", s.bookings)
                );
            }
            h.push_str("</table></div>");
        }
        h.push_str("</div>");
    }
    if !input.funnels.is_empty() || !input.bottlenecks.is_empty() {
        h.push_str("<h2>Funnels and bottlenecks</h2>");
        for (_, svg) in input.funnels {
            let body = svg.trim_start_matches("<?xml version=\"1.0\" encoding=\"UTF-8\"?>");
            h.push_str(body);
        }
        if !input.bottlenecks.is_empty() {
            h.push_str("<ul>");
            for b in input.bottlenecks.iter().take(15) {
                let _ = write!(h, "<li>{}</li>", esc(b));
            }
            h.push_str("</ul>");
        }
    }
    if !input.skipped.is_empty() {
        h.push_str("<h2>Not instrumented</h2><ul>");
        for (id, tables) in input.skipped {
            let _ = write!(h, "<li>{}: needs {} (not landed)</li>", esc(id), esc(&tables.join(", ")));
        }
        h.push_str("</ul>");
    }
    h.push_str("<h2>Definitions</h2><ul class=\"meta\">");
    for kpi in input.catalog.kpis.iter().filter(|k| k.primary) {
        if let Some(card) = &kpi.card {
            let _ = write!(
                h,
                "<li><b>{}</b>: {} Success: {} ({}; owner level {}; review {}).</li>",
                esc(&kpi.name),
                esc(&card.question),
                esc(&card.success),
                esc(&card.measurability),
                esc(&card.owner_level),
                esc(&card.cadence)
            );
        }
    }
    h.push_str("</ul></body></html>\n");
    h
}

/// The short summary for Slack or email: the company's primary KPIs and what needs attention.
pub fn markdown(input: &Input) -> String {
    let mut m = format!("# GTM KPIs as of {} (catalog {})\n\n", input.as_of, input.catalog.version);
    for stage in STAGES {
        let _ = writeln!(m, "**{stage}**");
        for kpi in input.catalog.kpis.iter().filter(|k| k.stage == stage && k.primary) {
            let (last, _) = review(input.cells, kpi, "company");
            let status = last.map(|c| c.status.as_str()).unwrap_or("not_enough_data");
            let _ = writeln!(
                m,
                "- {}: {} (target {}, {} {}) — {}",
                kpi.name,
                value(kpi, last),
                target(kpi, last),
                kpi.grain,
                last.map(|c| c.period_start.to_string()).unwrap_or_default(),
                label(status)
            );
        }
        m.push('\n');
    }
    if !input.risk.is_empty() {
        let flagged: Vec<&crate::kpi::RiskLine> =
            input.risk.iter().filter(|r| r.score.is_some() && !r.flags.is_empty()).collect();
        let _ = writeln!(m, "**Deal risk**: {} open deals, {} flagged", input.risk.len(), flagged.len());
        for r in flagged.iter().take(3) {
            let _ = writeln!(m, "- risk {} {} ({}): {}", r.score.unwrap_or_default(), r.deal, r.owner, r.action);
        }
        m.push('\n');
    }
    let mut ivs: Vec<&Intervention> = input.interventions.iter().filter(|i| i.status != "observe").collect();
    ivs.sort_by_key(|i| (STATUS_ORDER.iter().position(|s| *s == i.status), level_rank(&i.level), i.kpi_id.clone()));
    let _ = writeln!(
        m,
        "**Needs attention** ({} actions; {} more to observe)",
        ivs.len(),
        input.interventions.len() - ivs.len()
    );
    for i in ivs.iter().take(10) {
        let _ = writeln!(
            m,
            "- [{}] {} — owner {}, follow up {}",
            label(&i.status),
            i.action,
            i.owner_name,
            i.follow_up_date
        );
    }
    if ivs.len() > 10 {
        let _ = writeln!(m, "- … and {} more in the report", ivs.len() - 10);
    }
    m
}
