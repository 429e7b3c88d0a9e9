//! One HTML view of the leadership report, rendered from `templates/report.html` with every value
//! auto-escaped through `outputs::markup::esc`; Rust builds the page's data, the template its shape.

use std::collections::BTreeSet;

use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior, Value};
use serde::Serialize;

use crate::jobs::kpi::catalog::{Kpi, STAGES};
use crate::jobs::kpi::intervention::Intervention;
use crate::jobs::kpi::model::{Unit, fmt_value, level_rank};
use crate::outputs::markup::esc;
use crate::report::charts::sparkline;
use crate::report::{Input, STATUS_ORDER, View, colour, evidence, label, review, subtree, target, value};

const TEMPLATE: &str = repo_file!("src/report/templates/report.html");

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

/// A status as the page shows it: a colour and words.
#[derive(Serialize)]
struct Status {
    colour: &'static str,
    label: &'static str,
}

fn status(s: &str) -> Status {
    Status { colour: colour(s), label: label(s) }
}

#[derive(Serialize)]
struct Diagnostic {
    name: String,
    value: String,
    evidence: String,
    status: Status,
}

#[derive(Serialize)]
struct Card {
    kpi_id: String,
    domain: String,
    name: String,
    value: String,
    evidence: String,
    target: String,
    grain: String,
    period: String,
    status: Status,
    spark: Value,
    reason: Option<String>,
    diags: Vec<Diagnostic>,
}

#[derive(Serialize)]
struct Stage {
    name: &'static str,
    cards: Vec<Card>,
}

#[derive(Serialize)]
struct InterventionRow {
    status: Status,
    kpi_name: String,
    unit_name: String,
    level: String,
    action: String,
    owner_name: String,
    follow_up_date: String,
    evidence: String,
}

#[derive(Serialize)]
struct Interventions {
    count: usize,
    rows: Vec<InterventionRow>,
    more: Option<usize>,
}

#[derive(Serialize)]
struct DrillRow {
    depth: usize,
    name: String,
    level: String,
    value: String,
    target: String,
    n: i64,
    status: Status,
    spark: Value,
}

#[derive(Serialize)]
struct Drill {
    name: String,
    stage: String,
    grain: String,
    rows: Vec<DrillRow>,
}

#[derive(Serialize)]
struct RiskRow {
    score: i64,
    deal: String,
    account: String,
    owner: String,
    stage: String,
    amount: String,
    flags: String,
    action: String,
}

#[derive(Serialize)]
struct Risk {
    open: usize,
    flagged: usize,
    at_risk: String,
    rows: Vec<RiskRow>,
}

#[derive(Serialize)]
struct SegmentRow {
    segment: String,
    won: i64,
    closed: i64,
    rate: String,
    bookings: String,
}

#[derive(Serialize)]
struct Dimension {
    name: &'static str,
    rows: Vec<SegmentRow>,
}

#[derive(Serialize)]
struct Territory {
    quarter: String,
    dimensions: Vec<Dimension>,
}

#[derive(Serialize)]
struct Funnels {
    charts: Vec<Value>,
    bottlenecks: Vec<String>,
}

#[derive(Serialize)]
struct Skipped {
    id: String,
    tables: String,
}

#[derive(Serialize)]
struct Definition {
    name: String,
    question: String,
    success: String,
    measurability: String,
    owner_level: String,
    cadence: String,
}

#[derive(Serialize)]
struct Page {
    root_name: String,
    view_title: String,
    as_of: String,
    catalog_version: String,
    run_id: String,
    css: Value,
    legend: Vec<Status>,
    stages: Vec<Stage>,
    interventions: Interventions,
    drill: Vec<Drill>,
    risk: Option<Risk>,
    territory: Option<Territory>,
    funnels: Option<Funnels>,
    skipped: Vec<Skipped>,
    gaps: Vec<String>,
    learning: Vec<String>,
    definitions: Vec<Definition>,
}

/// The template environment: strict about undefined names, and every printed value escaped by
/// `esc` unless Rust marked it safe (the CSS and charts built from numbers).
fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    // HTML escaping on, so macro output (the status chips) comes back marked safe.
    env.set_auto_escape_callback(|_| AutoEscape::Html);
    env.set_formatter(|out, _state, value| {
        let text = if value.is_safe() { value.to_string() } else { esc(&value.to_string()) };
        out.write_str(&text).map_err(|_| minijinja::Error::new(ErrorKind::WriteFailure, "writing the report page"))
    });
    // Indented for reading; the page itself is one line, as browsers and mail clients prefer.
    let joined: String = TEMPLATE.lines().map(str::trim_start).collect();
    env.add_template_owned("report.html", joined).expect("src/report/templates/report.html parses");
    env
}

/// One HTML view.
pub fn html(input: &Input, view: &View) -> String {
    static ENV: std::sync::OnceLock<Environment<'static>> = std::sync::OnceLock::new();
    let page = page(input, view);
    // Parsed once per process, not once per view (a KPI run renders one view per manager).
    let mut out = ENV
        .get_or_init(environment)
        .get_template("report.html")
        .and_then(|t| t.render(&page))
        .expect("the report template renders its own page model (names are checked by the tests)");
    out.push('\n');
    out
}

fn page(input: &Input, view: &View) -> Page {
    let units_in = subtree(input.units, &view.root);
    let root_name =
        input.units.iter().find(|u| u.id == view.root).map(|u| u.name.clone()).unwrap_or_else(|| "Company".into());
    Page {
        root_name,
        view_title: view.title.clone(),
        as_of: input.as_of.to_string(),
        catalog_version: input.catalog.version.clone(),
        run_id: input.run_id.to_string(),
        css: Value::from_safe_string(CSS.to_string()),
        legend: ["on_track", "observe", "coaching", "systemic", "diagnose_first", "not_enough_data"]
            .into_iter()
            .map(status)
            .collect(),
        stages: stages(input, view),
        interventions: interventions(input, &units_in),
        drill: drill(input, view),
        risk: risk(input, view, &units_in),
        territory: territory(input, view),
        funnels: funnels(input),
        gaps: input.gaps.to_vec(),
        learning: input.learning.to_vec(),
        skipped: input
            .skipped
            .iter()
            .map(|(id, tables)| Skipped { id: id.clone(), tables: tables.join("; ") })
            .collect(),
        definitions: input
            .catalog
            .kpis
            .iter()
            .filter(|k| k.primary)
            .filter_map(|k| {
                k.card.as_ref().map(|c| Definition {
                    name: k.name.clone(),
                    question: c.question.clone(),
                    success: c.success.clone(),
                    measurability: c.measurability.clone(),
                    owner_level: c.owner_level.clone(),
                    cadence: c.cadence.clone(),
                })
            })
            .collect(),
    }
}

/// The KPI tree: per stage, a card per primary KPI with its diagnostics.
fn stages(input: &Input, view: &View) -> Vec<Stage> {
    STAGES
        .iter()
        .map(|&stage| Stage {
            name: stage,
            cards: input
                .catalog
                .kpis
                .iter()
                .filter(|k| k.stage == stage && k.primary)
                .map(|kpi| card(input, view, kpi))
                .collect(),
        })
        .collect()
}

fn card(input: &Input, view: &View, kpi: &Kpi) -> Card {
    let (last, series) = review(&input.index, kpi, &view.root);
    let st = last.map(|c| c.status.as_str()).unwrap_or("not_enough_data");
    let diags = input
        .catalog
        .kpis
        .iter()
        .filter(|d| !d.primary && d.stage == kpi.stage && d.domain == kpi.domain)
        .map(|d| {
            let (dl, _) = review(&input.index, d, &view.root);
            Diagnostic {
                name: d.name.clone(),
                value: value(d, dl),
                evidence: evidence(d, dl),
                status: status(dl.map(|c| c.status.as_str()).unwrap_or("")),
            }
        })
        .collect();
    Card {
        kpi_id: kpi.id.clone(),
        domain: kpi.domain.clone(),
        name: kpi.name.clone(),
        value: value(kpi, last),
        evidence: evidence(kpi, last),
        target: target(kpi, last),
        grain: kpi.grain.clone(),
        period: last.map(|c| c.period_start.to_string()).unwrap_or_default(),
        status: status(st),
        spark: Value::from_safe_string(sparkline(&series)),
        // Why a card is not judged: what it needs, or why below-target is not yet a miss.
        reason: matches!(st, "not_instrumented" | "not_enough_data")
            .then(|| last.map(|c| c.reason.clone()).unwrap_or_default())
            .filter(|r| !r.is_empty()),
        diags,
    }
}

/// Interventions in this view, most severe first; the first 200 shown.
fn interventions(input: &Input, units_in: &BTreeSet<String>) -> Interventions {
    let mut ivs: Vec<&Intervention> = input.interventions.iter().filter(|i| units_in.contains(&i.unit_id)).collect();
    ivs.sort_by_key(|i| {
        (STATUS_ORDER.iter().position(|s| *s == i.status), level_rank(&i.level), i.kpi_id.clone(), i.unit_name.clone())
    });
    Interventions {
        count: ivs.len(),
        rows: ivs
            .iter()
            .take(200)
            .map(|i| InterventionRow {
                status: status(&i.status),
                kpi_name: i.kpi_name.clone(),
                unit_name: i.unit_name.clone(),
                level: i.level.clone(),
                action: i.action.clone(),
                owner_name: i.owner_name.clone(),
                follow_up_date: i.follow_up_date.to_string(),
                evidence: i.evidence.clone(),
            })
            .collect(),
        more: (ivs.len() > 200).then(|| ivs.len() - 200),
    }
}

/// Drill-down: region -> manager -> seller for each primary KPI, in tree order.
fn drill(input: &Input, view: &View) -> Vec<Drill> {
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
    input
        .catalog
        .kpis
        .iter()
        .filter(|k| k.primary)
        .map(|kpi| Drill {
            name: kpi.name.clone(),
            stage: kpi.stage.clone(),
            grain: kpi.grain.clone(),
            rows: ordered
                .iter()
                .filter_map(|u| {
                    let (last, series) = review(&input.index, kpi, &u.id);
                    let c = last?;
                    Some(DrillRow {
                        depth: level_rank(&u.level).saturating_sub(root_rank).min(3),
                        name: u.name.clone(),
                        level: u.level.clone(),
                        value: value(kpi, Some(c)),
                        target: target(kpi, Some(c)),
                        n: c.n,
                        status: status(&c.status),
                        spark: Value::from_safe_string(sparkline(&series)),
                    })
                })
                .collect(),
        })
        .collect()
}

/// The view's open deals of the latest deal-risk run: the 15 riskiest flagged ones.
fn risk(input: &Input, view: &View, units_in: &BTreeSet<String>) -> Option<Risk> {
    let deals: Vec<_> = input
        .risk
        .iter()
        .filter(|r| view.root == "company" || units_in.contains(&format!("seller:{}", r.owner_id)))
        .collect();
    if deals.is_empty() {
        return None;
    }
    let flagged: Vec<_> = deals.iter().filter(|r| r.score.is_some() && !r.flags.is_empty()).collect();
    Some(Risk {
        open: deals.len(),
        flagged: flagged.len(),
        at_risk: fmt_value("currency", flagged.iter().filter_map(|r| r.amount).sum()),
        rows: flagged
            .iter()
            .take(15)
            .map(|r| RiskRow {
                score: r.score.unwrap_or_default(),
                deal: r.deal.clone(),
                account: r.account.clone(),
                owner: r.owner.clone(),
                stage: r.stage.clone(),
                amount: r.amount.map(|a| fmt_value("currency", a)).unwrap_or_else(|| "–".into()),
                flags: r.flags.replace(',', ", "),
                action: r.action.clone(),
            })
            .collect(),
    })
}

/// Closed deals by size band and industry for the view's root unit.
fn territory(input: &Input, view: &View) -> Option<Territory> {
    let segs: Vec<_> = input.segments.iter().filter(|s| s.unit_id == view.root).collect();
    if segs.is_empty() {
        return None;
    }
    let dimensions = ["size band", "industry"]
        .into_iter()
        .map(|dim| Dimension {
            name: dim,
            rows: segs
                .iter()
                .filter(|s| s.dimension == dim)
                .map(|s| SegmentRow {
                    segment: s.segment.clone(),
                    won: s.won,
                    closed: s.closed,
                    rate: if s.closed > 0 {
                        fmt_value("percent", s.won as f64 / s.closed as f64)
                    } else {
                        "–".into()
                    },
                    bookings: fmt_value("currency", s.bookings),
                })
                .collect(),
        })
        .collect();
    Some(Territory { quarter: input.segment_quarter.to_string(), dimensions })
}

/// The latest funnel run's charts (SVG the funnel job escaped through the same `esc`) and the
/// first 15 bottleneck sentences.
fn funnels(input: &Input) -> Option<Funnels> {
    if input.funnels.is_empty() && input.bottlenecks.is_empty() {
        return None;
    }
    Some(Funnels {
        charts: input
            .funnels
            .iter()
            .map(|(_, svg)| {
                Value::from_safe_string(
                    svg.trim_start_matches("<?xml version=\"1.0\" encoding=\"UTF-8\"?>").to_string(),
                )
            })
            .collect(),
        bottlenecks: input.bottlenecks.iter().take(15).cloned().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::kpi::model::Unit;

    #[test]
    fn names_from_the_crm_are_escaped_and_the_page_is_one_self_contained_line() {
        let (_, catalog) = crate::jobs::kpi::load(None, None).unwrap();
        let units = vec![Unit {
            level: "company".into(),
            id: "company".into(),
            name: r#"<script>alert("R&D")</script>"#.into(),
            parent: None,
            head_id: None,
            head_name: None,
        }];
        let bottlenecks = vec!["a < b & \"c\"".to_string()];
        let input = Input {
            as_of: chrono::NaiveDate::from_ymd_opt(2026, 6, 30).unwrap(),
            run_id: "r1",
            catalog: &catalog,
            cells: &[],
            index: Default::default(),
            units: &units,
            interventions: &[],
            funnels: &[],
            bottlenecks: &bottlenecks,
            skipped: &[],
            gaps: &[],
            segments: &[],
            segment_quarter: chrono::NaiveDate::from_ymd_opt(2026, 4, 1).unwrap(),
            risk: &[],
            learning: &[],
        };
        let view = View { key: "vp".into(), title: "VP view: the whole company".into(), root: "company".into() };
        let page = html(&input, &view);
        assert!(page.contains("GTM KPI report: &lt;script&gt;alert(&quot;R&amp;D&quot;)&lt;/script&gt;"), "{page}");
        assert!(!page.contains("<script>"));
        assert!(page.contains("<li>a &lt; b &amp; &quot;c&quot;</li>"));
        // The CSS is the page's own, not escaped; nothing is fetched from outside.
        assert!(page.contains(".stage>h3{"));
        assert!(!page.contains("http://") && !page.contains("https://") && !page.contains("<script"));
        assert_eq!(page.lines().count(), 1);
        assert!(page.starts_with("<!DOCTYPE html>") && page.ends_with("</ul></body></html>\n"));
        // Every primary KPI has a card and a definition, with no data "not enough evidence".
        let primaries = catalog.kpis.iter().filter(|k| k.primary).count();
        assert_eq!(page.matches("<div class=\"card\"").count(), primaries);
        assert_eq!(page.matches("not enough evidence</span>").count(), primaries + 1); // + the legend
    }
}
