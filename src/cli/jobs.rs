//! The cadence jobs one at a time: `funnel`, `kpis` (with the leadership report), `risk`, and the
//! deal-risk companions `action` (what reps did) and `backtest` (walk-forward check of the score).

use std::io::Write;
use std::path::Path;

use chrono::NaiveDate;

use crate::cli::refuse_broken;
use crate::error::Result;
use crate::jobs::calendar::Calendar;
use crate::jobs::kpi::{Catalog, Job, RunResult};
use crate::lake::Lake;
use crate::layers::{AsOf, LakeSession};

pub async fn funnel(
    lake: &Lake,
    as_of: Option<NaiveDate>,
    journey: Option<&str>,
    journeys: Option<&Path>,
    by: &[String],
    cal: &Calendar,
    out: &mut dyn Write,
) -> Result<()> {
    let session = crate::outputs::open_session(lake, AsOf(as_of)).await?;
    refuse_broken(&session, lake)?;
    let declared = crate::jobs::funnel::load_for(&session, journeys)?;
    funnel_in(&session, &declared, journey, by, cal, out).await
}

/// Runs the funnels in an open session and prints the summary and the published run.
pub async fn funnel_in(
    session: &LakeSession,
    declared: &[crate::jobs::funnel::Journey],
    journey: Option<&str>,
    by: &[String],
    cal: &Calendar,
    out: &mut dyn Write,
) -> Result<()> {
    let (_, text, manifest) = crate::jobs::funnel::run(session, declared, journey, by, cal).await?;
    write!(out, "{text}")?;
    writeln!(
        out,
        "published run {} (output.funnel_steps, funnel_breakdown, funnel_periods, funnel_cohorts)",
        manifest.run_id
    )?;
    Ok(())
}

pub async fn kpis(
    lake: &Lake,
    as_of: NaiveDate,
    catalog: Option<&Path>,
    job: Option<&Path>,
    fiscal_year_start: u32,
    week_starts_sunday: bool,
    out: &mut dyn Write,
) -> Result<()> {
    let session = crate::outputs::open_session(lake, AsOf(Some(as_of))).await?;
    refuse_broken(&session, lake)?;
    let (job, catalog) = crate::jobs::kpi::load(job, catalog)?;
    kpis_in(&session, &job, &catalog, fiscal_year_start, week_starts_sunday, out).await
}

/// Runs the KPI job with the report in an open session and prints the summary and the run.
pub async fn kpis_in(
    session: &LakeSession,
    job: &Job,
    catalog: &Catalog,
    fiscal_year_start: u32,
    week_starts_sunday: bool,
    out: &mut dyn Write,
) -> Result<()> {
    let result = kpis_with_report(session, job, catalog, fiscal_year_start, week_starts_sunday).await?;
    write!(out, "{}", result.text)?;
    writeln!(out, "published run {} (output.kpi_values, kpi_interventions, kpi_units)", result.manifest.run_id)?;
    Ok(())
}

/// The monthly KPI job with the leadership report in the same run: KPI tables, then the report
/// views, then one commit and the log append.
async fn kpis_with_report(
    session: &LakeSession,
    job: &Job,
    catalog: &Catalog,
    fiscal_year_start: u32,
    week_starts_sunday: bool,
) -> Result<RunResult> {
    let mut prepared = crate::jobs::kpi::prepare(session, job, catalog, fiscal_year_start, week_starts_sunday).await?;
    let (reports, md) = crate::report::publish(session, &mut prepared, catalog).await?;
    crate::jobs::kpi::finish(session, prepared, catalog, reports, md).await
}

pub async fn risk(
    lake: &Lake,
    as_of: NaiveDate,
    playbook: Option<&Path>,
    pinned: Option<&str>,
    out: &mut dyn Write,
) -> Result<()> {
    let session = crate::outputs::open_session(lake, AsOf(Some(as_of))).await?;
    refuse_broken(&session, lake)?;
    let plan = crate::cli::loop_cmds::assignment(lake, as_of, playbook, pinned).await?;
    risk_in(&session, &plan, out).await
}

/// Runs deal risk in an open session and prints the summary and the published run.
pub async fn risk_in(session: &LakeSession, plan: &crate::jobs::risk::Assignment, out: &mut dyn Write) -> Result<()> {
    let (_, text, manifest, _) = crate::jobs::risk::run_assigned(session, plan).await?;
    write!(out, "{text}")?;
    writeln!(out, "published run {} (output.deal_risk, deal_risk_flags)", manifest.run_id)?;
    // The weekly loop's momentum per open deal and account, beside the risk.
    let momentum = crate::learn::momentum::run(session).await?;
    write!(out, "{}", momentum.text)?;
    writeln!(out, "published run {} (output.momentum)", momentum.manifest.run_id)?;
    Ok(())
}

/// The outcome-patterns job (quarterly learning loop).
pub async fn patterns(lake: &Lake, as_of: NaiveDate, job: Option<&Path>, out: &mut dyn Write) -> Result<()> {
    let session = crate::outputs::open_session(lake, AsOf(Some(as_of))).await?;
    refuse_broken(&session, lake)?;
    let job = crate::learn::patterns::load(job)?;
    let run = crate::learn::patterns::run(&session, &job).await?;
    write!(out, "{}", run.text)?;
    writeln!(out, "published run {} (output.patterns, output.deal_trajectory)", run.manifest.run_id)?;
    Ok(())
}

/// The learning loop's fitted models.
pub async fn models(
    lake: &Lake,
    as_of: NaiveDate,
    playbook: Option<&Path>,
    pinned: Option<&str>,
    out: &mut dyn Write,
) -> Result<()> {
    let plan = crate::cli::loop_cmds::assignment(lake, as_of, playbook, pinned).await?;
    let playbook = plan.playbooks[plan.current].clone();
    let session = crate::outputs::open_session(lake, AsOf(Some(as_of))).await?;
    refuse_broken(&session, lake)?;
    let run = crate::learn::models::run_win_model(&session).await?;
    write!(out, "{}", run.text)?;
    writeln!(
        out,
        "published run {} (output.win_probability, output.model_metrics, model card {})",
        run.manifest.run_id, run.model_version
    )?;
    let weights = crate::learn::risk_weights::run(&session, &playbook).await?;
    write!(out, "{}", weights.text)?;
    writeln!(
        out,
        "published run {} (output.risk_weights, model card {})",
        weights.manifest.run_id, weights.weights.model_version
    )?;
    let priority = crate::learn::account_priority::run(&session).await?;
    write!(out, "{}", priority.text)?;
    if let Some(m) = &priority.manifest {
        writeln!(out, "published run {} (output.account_priority)", m.run_id)?;
    }
    Ok(())
}

/// The weekly win probability per open deal (the model is refitted on the deals closed by then).
pub async fn win_probability(lake: &Lake, as_of: NaiveDate, out: &mut dyn Write) -> Result<()> {
    let session = crate::outputs::open_session(lake, AsOf(Some(as_of))).await?;
    refuse_broken(&session, lake)?;
    let run = crate::learn::models::run_win_model(&session).await?;
    write!(out, "{}", run.text)?;
    writeln!(out, "published run {} (output.win_probability, output.model_metrics)", run.manifest.run_id)?;
    Ok(())
}

/// What a rep did on a deal, typed by hand (`action --deal --did`).
pub struct ActionByHand {
    pub deal: Option<String>,
    pub did: Option<String>,
    pub why: String,
    pub by: String,
    pub on: Option<NaiveDate>,
}

pub async fn action(
    lake: &Lake,
    as_of: NaiveDate,
    from_tasks: bool,
    by_hand: ActionByHand,
    out: &mut dyn Write,
) -> Result<()> {
    let session = crate::outputs::open_session(lake, AsOf(Some(as_of))).await?;
    refuse_broken(&session, lake)?;
    let n = if from_tasks {
        crate::jobs::risk::action::import_tasks(&session, as_of).await?
    } else {
        let ActionByHand { deal, did, why, by, on } = by_hand;
        let (deal, did) = (deal.unwrap_or_default(), did.unwrap_or_default());
        crate::jobs::risk::action::record(&session, &deal, &did, &why, &by, on.unwrap_or(as_of), as_of).await?
    };
    writeln!(out, "{n} new action record(s) in log/decision_trace")?;
    Ok(())
}

pub async fn backtest(
    lake: &Lake,
    from: NaiveDate,
    to: NaiveDate,
    every_days: u64,
    horizon_days: u64,
    playbook: Option<&Path>,
    out: &mut dyn Write,
) -> Result<()> {
    let playbook = crate::jobs::risk::load(playbook)?;
    refuse_broken(&crate::outputs::open_session(lake, AsOf(Some(to))).await?, lake)?;
    let report = crate::jobs::risk::backtest::run(lake, &playbook, from, to, every_days, horizon_days).await?;
    write!(out, "{}", report.text)?;
    Ok(())
}
