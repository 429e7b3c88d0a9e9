//! The leadership report: one self-contained HTML file per view (inline CSS and SVG, no network
//! assets, no script) and a short Markdown summary for Slack or email.

pub mod charts;
pub mod html;
pub mod inputs;
pub mod markdown;

pub use html::html;
pub use markdown::markdown;

use std::collections::{BTreeSet, HashMap};

use chrono::NaiveDate;

use crate::error::Result;
use crate::jobs::kpi::Prepared;
use crate::jobs::kpi::catalog::{Catalog, Kpi};
use crate::jobs::kpi::intervention::Intervention;
use crate::jobs::kpi::model::{Cell, Segment, Unit, fmt_value};
use crate::layers::LakeSession;
use crate::report::inputs::RiskLine;

/// Everything a report shows.
pub struct Input<'a> {
    pub as_of: NaiveDate,
    pub run_id: &'a str,
    pub catalog: &'a Catalog,
    pub cells: &'a [Cell],
    /// `cells` by KPI, grain and unit.
    pub index: CellIndex<'a>,
    pub units: &'a [Unit],
    pub interventions: &'a [Intervention],
    /// Funnel charts (journey, SVG) and bottleneck sentences, when the funnel job ran.
    pub funnels: &'a [(String, String)],
    pub bottlenecks: &'a [String],
    /// KPIs whose source tables are not landed, with the tables.
    pub skipped: &'a [(String, Vec<String>)],
    /// Journeys, steps and flags the funnel and deal-risk runs could not measure, in their words.
    pub gaps: &'a [String],
    /// Closed deals by account segment per unit, in the quarter starting `segment_quarter`.
    pub segments: &'a [Segment],
    pub segment_quarter: NaiveDate,
    /// Open deals of the latest deal-risk run for the date, riskiest first (empty if none ran).
    pub risk: &'a [RiskLine],
    /// The learning loop's latest proposals and readouts on or before the date, one sentence each.
    pub learning: &'a [String],
}

/// Renders every view and the Markdown summary into a prepared KPI run (visible once it
/// commits); returns the paths written, the VP's view first, and the Markdown.
pub async fn publish(
    session: &LakeSession,
    prepared: &mut Prepared,
    catalog: &Catalog,
) -> Result<(Vec<String>, String)> {
    // One read of the manifests for both inputs.
    let started = std::time::Instant::now();
    let lap = |run: &mut crate::outputs::run_writer::RunWriter, what: &str, since: &mut std::time::Instant| {
        run.timing(&format!("report:{what}"), since.elapsed().as_millis() as u64);
        *since = std::time::Instant::now();
    };
    let mut since = started;
    let runs = crate::outputs::registry::committed_runs(&session.lake).await?;
    let (funnels, bottlenecks) = inputs::funnel_artifacts(session, &runs).await?;
    lap(&mut prepared.run, "funnels", &mut since);
    let risk = inputs::risk_lines(session, &runs).await?;
    lap(&mut prepared.run, "risk", &mut since);
    let gaps = inputs::gaps(session, &runs);
    let learning = inputs::learning_lines(session).await?;
    lap(&mut prepared.run, "learning", &mut since);
    let run_id = prepared.run.run_id().to_string();
    let input = Input {
        as_of: prepared.as_of,
        run_id: &run_id,
        catalog,
        cells: &prepared.computed.cells,
        index: CellIndex::new(&prepared.computed.cells),
        units: &prepared.computed.units,
        interventions: &prepared.interventions,
        funnels: &funnels,
        bottlenecks: &bottlenecks,
        skipped: &prepared.computed.skipped,
        gaps: &gaps,
        segments: &prepared.segments,
        segment_quarter: prepared.segment_quarter.start,
        risk: &risk,
        learning: &learning,
    };
    let pages: Vec<(String, String)> = views(input.units, input.cells)
        .iter()
        .map(|v| {
            let name = if v.key == "vp" { "report.html".to_string() } else { format!("report_{}.html", v.key) };
            (name, html(&input, v))
        })
        .collect();
    let md = markdown(&input);
    lap(&mut prepared.run, "render", &mut since);
    let mut reports = Vec::new();
    for (name, page) in pages {
        reports.push(prepared.run.write_artifact(&name, page.into_bytes()).await?);
    }
    reports.push(prepared.run.write_artifact("report.md", md.clone().into_bytes()).await?);
    Ok((reports, md))
}

/// Who the view is for: the VP (the whole company), a regional leader or a manager (a subtree).
#[derive(Debug, Clone)]
pub struct View {
    pub key: String,
    pub title: String,
    pub root: String,
}

pub(crate) const STATUS_ORDER: [&str; 9] = [
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

pub(crate) fn colour(status: &str) -> &'static str {
    match status {
        "on_track" => "#2e7d32",
        "observe" => "#f9a825",
        "coaching" => "#ef6c00",
        "systemic" => "#c62828",
        "diagnose_first" => "#6a1b9a",
        _ => "#9e9e9e",
    }
}

pub(crate) fn label(status: &str) -> &'static str {
    match status {
        "on_track" => "on track",
        "observe" => "observe",
        "coaching" => "coaching",
        "systemic" => "systemic",
        "diagnose_first" => "diagnose first",
        "not_enough_data" => "not enough evidence",
        "no_target" => "no target yet",
        "in_progress" => "in progress",
        "not_instrumented" => "not instrumented",
        _ => "-",
    }
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
pub(crate) fn subtree(units: &[Unit], root: &str) -> BTreeSet<String> {
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

/// The cells of each (KPI, grain, unit), oldest period first: built once per report, so a page
/// that reviews every KPI of every unit does not scan every cell each time.
#[derive(Default)]
pub struct CellIndex<'a>(HashMap<(&'a str, &'a str, &'a str), Vec<&'a Cell>>);

impl<'a> CellIndex<'a> {
    pub fn new(cells: &'a [Cell]) -> CellIndex<'a> {
        let mut map: HashMap<(&str, &str, &str), Vec<&Cell>> = HashMap::new();
        for c in cells {
            map.entry((c.kpi_id.as_str(), c.grain.as_str(), c.unit_id.as_str())).or_default().push(c);
        }
        for series in map.values_mut() {
            series.sort_by_key(|c| c.period_start);
        }
        CellIndex(map)
    }
}

pub(crate) fn review<'a>(index: &CellIndex<'a>, kpi: &Kpi, unit: &str) -> (Option<&'a Cell>, Vec<&'a Cell>) {
    let series: &[&Cell] =
        index.0.get(&(kpi.id.as_str(), kpi.grain.as_str(), unit)).map(|v| v.as_slice()).unwrap_or(&[]);
    let complete: Vec<&Cell> = series.iter().copied().filter(|c| c.complete).collect();
    let last = complete.last().copied().or_else(|| series.iter().copied().find(|c| c.status == "not_instrumented"));
    let tail = complete.len().saturating_sub(8);
    (last, complete[tail..].to_vec())
}

pub(crate) fn value(kpi: &Kpi, c: Option<&Cell>) -> String {
    c.and_then(|c| c.value).map(|v| fmt_value(&kpi.unit, v)).unwrap_or_else(|| "–".into())
}

/// The sample behind a value: n, and its 95% interval where it has one ("n=40, 95% CI 14.2–40.2%").
pub(crate) fn evidence(kpi: &Kpi, c: Option<&Cell>) -> String {
    let Some(c) = c.filter(|c| c.value.is_some()) else { return String::new() };
    match (c.ci_low, c.ci_high) {
        (Some(lo), Some(hi)) => {
            format!("n={}, 95% CI {}–{}", c.n, fmt_value(&kpi.unit, lo), fmt_value(&kpi.unit, hi))
        }
        _ => format!("n={}", c.n),
    }
}

pub(crate) fn target(kpi: &Kpi, c: Option<&Cell>) -> String {
    match c.map(|c| (c.target, c.target_high)) {
        Some((Some(lo), Some(hi))) => format!("{}–{}", fmt_value(&kpi.unit, lo), fmt_value(&kpi.unit, hi)),
        Some((Some(t), None)) => fmt_value(&kpi.unit, t),
        _ => "–".into(),
    }
}
