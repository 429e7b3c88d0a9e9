//! The short Markdown summary of a KPI run for Slack or email: the company's primary KPIs by
//! stage, the riskiest deals and what needs attention. Plain text: nothing here is HTML.

use std::fmt::Write as _;

use crate::jobs::kpi::catalog::STAGES;
use crate::jobs::kpi::intervention::Intervention;
use crate::jobs::kpi::model::level_rank;
use crate::report::inputs::RiskLine;
use crate::report::{Input, STATUS_ORDER, evidence, label, review, target, value};

/// The short summary for Slack or email: the company's primary KPIs and what needs attention.
pub fn markdown(input: &Input) -> String {
    let mut m = format!("# GTM KPIs as of {} (catalog {})\n\n", input.as_of, input.catalog.version);
    for stage in STAGES {
        let _ = writeln!(m, "**{stage}**");
        for kpi in input.catalog.kpis.iter().filter(|k| k.stage == stage && k.primary) {
            let (last, _) = review(&input.index, kpi, "company");
            let status = last.map(|c| c.status.as_str()).unwrap_or("not_enough_data");
            let ev = evidence(kpi, last);
            let _ = writeln!(
                m,
                "- {}: {} (target {}, {} {}{}) — {}",
                kpi.name,
                value(kpi, last),
                target(kpi, last),
                kpi.grain,
                last.map(|c| c.period_start.to_string()).unwrap_or_default(),
                if ev.is_empty() { String::new() } else { format!("; {ev}") },
                label(status)
            );
        }
        m.push('\n');
    }
    if !input.risk.is_empty() {
        let flagged: Vec<&RiskLine> = input.risk.iter().filter(|r| r.score.is_some() && !r.flags.is_empty()).collect();
        let _ = writeln!(m, "**Deal risk**: {} open deals, {} flagged", input.risk.len(), flagged.len());
        for r in flagged.iter().take(3) {
            let _ = writeln!(m, "- risk {} {} ({}): {}", r.score.unwrap_or_default(), r.deal, r.owner, r.action);
        }
        m.push('\n');
    }
    if !input.learning.is_empty() {
        let _ = writeln!(m, "**Learning loop** (playbook proposals and readouts)");
        for l in input.learning {
            let _ = writeln!(m, "- {l}");
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
    if !input.skipped.is_empty() || !input.gaps.is_empty() {
        let kpis: Vec<&str> = input.skipped.iter().map(|(id, _)| id.as_str()).collect();
        let _ = writeln!(m, "\n**Not measured on this lake** (the report says what each needs)");
        if !kpis.is_empty() {
            let _ = writeln!(m, "- {} KPIs not instrumented: {}", kpis.len(), kpis.join(", "));
        }
        for g in input.gaps {
            let _ = writeln!(m, "- {g}");
        }
    }
    m
}
