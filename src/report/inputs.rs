//! What the leadership report reads besides the KPI run itself: the charts and bottleneck
//! sentences of the latest funnel run, and the deals of the latest deal-risk run, for the date.

use crate::error::Result;
use crate::layers::LakeSession;
use crate::layers::columns::{floats, string_rows, strings};
use crate::outputs::Manifest;
use crate::outputs::registry::{latest_run, latest_table_file};

/// The funnel charts and bottleneck sentences of the latest funnel run for this as-of date.
pub async fn funnel_artifacts(
    session: &LakeSession,
    runs: &[Manifest],
) -> Result<(Vec<(String, String)>, Vec<String>)> {
    let Some(run) = latest_run(runs, "funnel", &session.as_of.label()) else {
        return Ok((Vec::new(), Vec::new()));
    };
    let (mut charts, mut bottlenecks) = (Vec::new(), Vec::new());
    for a in &run.artifacts {
        let bytes = session.lake.get(&a.path).await?;
        let text = String::from_utf8_lossy(&bytes).to_string();
        if a.path.ends_with(".svg") {
            charts.push((a.path.clone(), text));
        } else if a.path.ends_with("funnel_bottlenecks.md") {
            bottlenecks.extend(text.lines().filter_map(|l| l.strip_prefix("- ")).map(str::to_string));
        }
    }
    Ok((charts, bottlenecks))
}

/// What the latest funnel and deal-risk runs for this date could not measure on this lake: skipped
/// journeys and steps, flags not instrumented, breakdowns refused as leakage (their run notes).
pub fn gaps(session: &LakeSession, runs: &[Manifest]) -> Vec<String> {
    let label = session.as_of.label();
    ["funnel", "deal_risk"]
        .iter()
        .filter_map(|job| latest_run(runs, job, &label))
        .flat_map(|run| run.notes.iter())
        .filter(|n| n.contains("skipped") || n.contains("not instrumented") || n.contains("refused"))
        .cloned()
        .collect()
}

/// One deal of the latest deal-risk run, for the leadership report.
#[derive(Debug, Clone, PartialEq)]
pub struct RiskLine {
    pub deal: String,
    pub account: String,
    pub owner_id: String,
    pub owner: String,
    pub stage: String,
    pub amount: Option<f64>,
    pub score: Option<i64>,
    pub flags: String,
    pub action: String,
}

/// The deals of the latest deal-risk run for this as-of date (none when it has not run).
pub async fn risk_lines(session: &LakeSession, runs: &[Manifest]) -> Result<Vec<RiskLine>> {
    let Some(file) = latest_table_file(runs, "deal_risk", "deal_risk", &session.as_of.label()) else {
        return Ok(Vec::new());
    };
    let url = session.lake.listing_url(&file.path)?;
    let df = session
        .ctx
        .read_parquet(url.as_str(), datafusion::prelude::ParquetReadOptions::default())
        .await?
        .select_columns(&[
            "deal_name",
            "account_name",
            "owner_id",
            "owner_name",
            "stage_name",
            "amount",
            "risk_score",
            "flags",
            "action",
        ])?;
    let mut out = Vec::new();
    for b in df.collect().await? {
        let c: Vec<Vec<Option<String>>> = (0..9).map(|i| strings(b.column(i))).collect::<Result<_>>()?;
        let amount = floats(b.column(5))?;
        let score = floats(b.column(6))?;
        for r in 0..b.num_rows() {
            let g = |k: usize| c[k][r].clone().unwrap_or_default();
            out.push(RiskLine {
                deal: g(0),
                account: g(1),
                owner_id: g(2),
                owner: g(3),
                stage: g(4),
                amount: amount[r],
                score: score[r].map(|s| s as i64),
                flags: g(7),
                action: g(8),
            });
        }
    }
    out.sort_by(|a, b| (std::cmp::Reverse(a.score), &a.deal).cmp(&(std::cmp::Reverse(b.score), &b.deal)));
    Ok(out)
}

/// The newest proposals and readouts published on or before the report's date, one sentence each
/// (proposal: kind, title, status, confidence; readout: its verdict sentence).
pub async fn learning_lines(session: &LakeSession) -> Result<Vec<String>> {
    let d = session.as_of.label();
    let mut out = Vec::new();
    let newest = |t: &str| format!("as_of_date = (SELECT MAX(as_of_date) FROM output.{t} WHERE as_of_date <= '{d}')");
    if session.ctx.table_exist("output.readouts").unwrap_or(false) {
        let sql = format!(
            "SELECT proposal_id, sentence, warnings FROM output.readouts WHERE {} ORDER BY proposal_id",
            newest("readouts")
        );
        for b in session.ctx.sql(&sql).await?.collect().await? {
            for row in string_rows(&b, 3)? {
                let g = |i: usize| row[i].clone().unwrap_or_default();
                // Sample-ratio and pre-period imbalance warnings travel with the readout.
                let warn = if g(2).is_empty() { String::new() } else { format!(" Warning: {}", g(2)) };
                out.push(format!("Readout of proposal {}: {}.{warn}", g(0), g(1)));
            }
        }
    }
    if session.ctx.table_exist("output.proposals").unwrap_or(false) {
        let sql = format!(
            // The status now (a later decision in log.audit), not the one at publication.
            "SELECT p.proposal_id, p.kind, p.title, COALESCE(a.decision || ' by ' || a.by_name, p.status), p.confidence, \
             p.explanation FROM output.proposals AS p LEFT JOIN log.audit AS a ON a.proposal_id = p.proposal_id \
             WHERE p.{} ORDER BY p.proposal_id",
            newest("proposals")
        );
        for b in session.ctx.sql(&sql).await?.collect().await? {
            for row in string_rows(&b, 6)? {
                let g = |i: usize| row[i].clone().unwrap_or_default();
                out.push(format!("Proposal {} ({}, {}, confidence {}): {}. {}", g(0), g(1), g(3), g(4), g(2), g(5)));
            }
        }
    }
    Ok(out)
}
