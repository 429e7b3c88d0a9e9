//! The cadence runner: one period of a cadence (`run weekly|monthly|quarterly`), the periods due
//! today (`run due`, for a daily cron line), and past periods (`backfill`).
//!
//! A run takes the lake's lock, records itself as `running`, runs its steps with the lake stamped
//! with its id (so each job's commit stays invisible), then publishes everything with one put of
//! its manifest as `committed`. On an error it records `failed` with the step and the message and
//! gives the lock back; killed, it leaves `running` and its lock, which the next run explains.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use chrono::NaiveDate;
use serde_json::json;

use super::spec::{self, Cadence, Period, Spec, Step, StepJob};
use crate::cli::{jobs, refuse_broken};
use crate::error::{Error, Result};
use crate::jobs::calendar::Calendar;
use crate::lake::Lake;
use crate::layers::AsOf;
use crate::outputs::cadence::{self as log, CadenceRun, InputFile, StepRecord, TableRows, kill_point};

pub struct Options {
    /// Run periods that already have a committed run again.
    pub rerun: bool,
    /// One JSON event per line on stdout (for schedulers) instead of the jobs' text.
    pub json: bool,
    /// A declaration file instead of the built-in jobs/<cadence>.toml (one cadence only).
    pub spec_file: Option<PathBuf>,
}

/// Where the runner says what it does: one line per step on stderr, or JSON events on stdout.
struct Events<'a> {
    json: bool,
    out: &'a mut dyn Write,
}

impl Events<'_> {
    fn emit(&mut self, event: &str, run: &CadenceRun, step: Option<&StepRecord>, text: String) -> Result<()> {
        if self.json {
            let mut v = json!({
                "eventType": event,
                "eventTime": log::now(),
                "run_id": run.run_id,
                "cadence": run.cadence,
                "period": run.period,
                "as_of": run.as_of,
            });
            if let Some(s) = step {
                v["step"] = json!(s.name);
                v["job"] = json!(s.job);
                v["ms"] = json!(s.ms);
                v["outputs"] = json!(s.tables);
                if let Some(e) = &s.error {
                    v["error"] = json!(e);
                }
            } else if let Some(e) = &run.error {
                v["error"] = json!(e);
            }
            writeln!(self.out, "{v}")?;
        } else {
            eprintln!("{} {} (as of {}): {text}", run.cadence, run.period, run.as_of);
        }
        Ok(())
    }
}

/// What became of one period.
pub enum Outcome {
    Committed(Box<CadenceRun>),
    /// Already done (the committed run's id); not run again without --rerun.
    Skipped(String),
}

/// A committed run of this period, as of its last day (an ad-hoc run as of another date does
/// not finish a period).
fn done<'a>(runs: &'a [CadenceRun], p: &Period) -> Option<&'a CadenceRun> {
    runs.iter().rev().find(|r| {
        r.status == "committed" && r.cadence == p.cadence.name() && r.period == p.label && r.as_of == p.end.to_string()
    })
}

/// `run weekly|monthly|quarterly --as-of DATE`: the period containing DATE, read as of DATE.
pub async fn run_one(
    lake: &Lake,
    cadence: Cadence,
    as_of: NaiveDate,
    opts: &Options,
    out: &mut dyn Write,
) -> Result<()> {
    let spec = spec::load(cadence, opts.spec_file.as_deref())?;
    let period = spec::period_of(cadence, as_of);
    let outcome = run_period(lake, &spec, &period, as_of, opts, out).await?;
    say_outcome(&outcome, &period, opts, out)
}

fn say_outcome(outcome: &Outcome, p: &Period, opts: &Options, out: &mut dyn Write) -> Result<()> {
    match outcome {
        Outcome::Committed(run) if !opts.json => writeln!(
            out,
            "committed {} run {} ({}, as of {}): {} steps in {:.1} s",
            run.cadence,
            run.run_id,
            run.period,
            run.as_of,
            run.steps.len(),
            run.total_ms() as f64 / 1000.0
        )?,
        Outcome::Skipped(id) => {
            if opts.json {
                let v = json!({"eventType": "SKIP", "cadence": p.cadence.name(), "period": p.label, "done_by": id});
                writeln!(out, "{v}")?;
            } else {
                writeln!(
                    out,
                    "{} {} already done by run {id} (pass --rerun to run it again)",
                    p.cadence.name(),
                    p.label
                )?;
            }
        }
        Outcome::Committed(_) => {}
    }
    Ok(())
}

/// `run due --today DAY`: for each cadence, the periods that ended before DAY and have no
/// committed run, from the one after its latest committed period (or only the latest ended one
/// on a lake that has none), oldest first, weekly before monthly before quarterly on one date.
pub async fn due(lake: &Lake, today: NaiveDate, opts: &Options, out: &mut dyn Write) -> Result<()> {
    let runs = log::runs(lake).await?;
    let mut todo: Vec<Period> = Vec::new();
    for c in Cadence::ALL {
        let latest = spec::latest_ended(c, today);
        let last_done = runs
            .iter()
            .filter(|r| r.status == "committed" && r.cadence == c.name())
            .filter_map(|r| r.as_of.parse::<NaiveDate>().ok().map(|d| spec::period_of(c, d)))
            .filter(|p| done(&runs, p).is_some())
            .max_by_key(|p| p.end);
        match last_done {
            Some(p) if p.end >= latest.end => {}
            Some(p) => todo.extend(spec::ending_in(c, p.end + chrono::Duration::days(1), latest.end)),
            None => todo.push(latest),
        }
    }
    run_all(lake, todo, opts, out, &format!("nothing is due on {today}: every ended period has a committed run")).await
}

/// `backfill --from --to`: every period of the chosen cadences whose last day is in the range.
pub async fn backfill(
    lake: &Lake,
    from: NaiveDate,
    to: NaiveDate,
    cadences: &[Cadence],
    opts: &Options,
    out: &mut dyn Write,
) -> Result<()> {
    if to < from {
        return Err(Error::Refused(format!("--to {to} is before --from {from}")));
    }
    let todo = cadences.iter().flat_map(|c| spec::ending_in(*c, from, to)).collect();
    run_all(lake, todo, opts, out, &format!("no period of these cadences ends between {from} and {to}")).await
}

async fn run_all(lake: &Lake, mut todo: Vec<Period>, opts: &Options, out: &mut dyn Write, none: &str) -> Result<()> {
    if todo.is_empty() {
        writeln!(out, "{none}")?;
        return Ok(());
    }
    todo.sort_by_key(|p| (p.end, p.cadence));
    let mut specs = std::collections::BTreeMap::new();
    for p in &todo {
        if let std::collections::btree_map::Entry::Vacant(e) = specs.entry(p.cadence) {
            e.insert(spec::load(p.cadence, None)?);
        }
    }
    let (mut ran, mut skipped) = (0, 0);
    for p in &todo {
        match run_period(lake, &specs[&p.cadence], p, p.end, opts, out).await? {
            o @ Outcome::Committed(_) => {
                ran += 1;
                say_outcome(&o, p, opts, out)?;
            }
            o @ Outcome::Skipped(_) => {
                skipped += 1;
                say_outcome(&o, p, opts, out)?;
            }
        }
    }
    if !opts.json {
        writeln!(out, "{ran} period(s) run, {skipped} already done")?;
    }
    Ok(())
}

/// One period: skip it if done, else lock, run, commit or record the failure, unlock.
async fn run_period(
    lake: &Lake,
    spec: &Spec,
    period: &Period,
    as_of: NaiveDate,
    opts: &Options,
    out: &mut dyn Write,
) -> Result<Outcome> {
    let finishes_period = as_of == period.end;
    if !opts.rerun
        && finishes_period
        && let Some(r) = done(&log::runs(lake).await?, period)
    {
        return Ok(Outcome::Skipped(r.run_id.clone()));
    }
    let command = format!("gtm-loop run {} --as-of {as_of}", period.cadence.name());
    let lock = log::acquire(lake, &command).await?;
    // Checked again under the lock: a run that finished meanwhile is not repeated.
    let result = match log::runs(lake).await {
        Ok(runs) if !opts.rerun && finishes_period && done(&runs, period).is_some() => {
            Ok(Outcome::Skipped(done(&runs, period).map(|r| r.run_id.clone()).unwrap_or_default()))
        }
        Ok(_) => {
            locked_run(lake, spec, period, as_of, &command, opts, out).await.map(|r| Outcome::Committed(Box::new(r)))
        }
        Err(e) => Err(e),
    };
    kill_point("cadence:before_unlock");
    let released = log::release(lake, &lock).await;
    let outcome = result?;
    released?;
    Ok(outcome)
}

async fn locked_run(
    lake: &Lake,
    spec: &Spec,
    period: &Period,
    as_of: NaiveDate,
    command: &str,
    opts: &Options,
    out: &mut dyn Write,
) -> Result<CadenceRun> {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.6fZ");
    let run_id = format!("{stamp}-{}-{}-p{}", period.cadence.name(), period.label, std::process::id());
    let mut batch_lake = lake.clone();
    batch_lake.batch = Some(run_id.clone());
    let mut run = CadenceRun {
        run_id: run_id.clone(),
        cadence: period.cadence.name().into(),
        period: period.label.clone(),
        as_of: as_of.to_string(),
        status: "running".into(),
        started_at: log::now(),
        finished_at: None,
        code_version: crate::outputs::CODE_VERSION.into(),
        playbook_version: None,
        host: log::host(),
        pid: std::process::id(),
        command: format!("{command} ({})", spec.source),
        inputs: Vec::new(),
        steps: spec
            .steps
            .iter()
            .map(|s| StepRecord {
                name: s.name.clone(),
                job: s.job.name().into(),
                status: "pending".into(),
                started_at: String::new(),
                ms: 0,
                job_runs: Vec::new(),
                tables: Vec::new(),
                error: None,
            })
            .collect(),
        failed_step: None,
        error: None,
        warnings: Vec::new(),
    };
    log::write(lake, &run).await?;
    let mut events = Events { json: opts.json, out };
    events.emit("START", &run, None, format!("run {run_id}, {} steps", spec.steps.len()))?;
    // One line per step here; the long steps draw their own progress bars (stderr, terminals only).
    let result = steps(&batch_lake, spec, as_of, &mut run, &mut events).await;
    run.finished_at = Some(log::now());
    match result {
        Ok(()) => {
            kill_point("cadence:before_commit");
            run.status = "committed".into();
            // The commit: one put makes every step's outputs visible at once.
            log::write(lake, &run).await?;
            kill_point("cadence:after_commit");
            events.emit("COMPLETE", &run, None, format!("committed in {:.1} s", run.total_ms() as f64 / 1000.0))?;
            Ok(run)
        }
        Err(e) => {
            run.status = "failed".into();
            run.error = Some(e.to_string());
            for s in run.steps.iter_mut().filter(|s| s.status == "pending") {
                s.status = "skipped".into();
            }
            // Best effort: the store may be what failed. The run stays invisible either way.
            if let Err(w) = log::write(lake, &run).await {
                eprintln!("warning: could not record the failed run {run_id}: {w}");
            }
            let what = match &run.failed_step {
                Some(step) => format!("at step {step}"),
                None => "before its first step".into(),
            };
            events.emit("FAIL", &run, None, format!("FAILED {what}; nothing of this run is published"))?;
            Err(Error::Context {
                context: format!(
                    "{} run {run_id} ({}) failed {what}; the last good outputs stay as they were",
                    run.cadence, run.period
                ),
                source: Box::new(e),
            })
        }
    }
}

/// The steps in order; the first error stops the run.
async fn steps(
    lake: &Lake,
    spec: &Spec,
    as_of: NaiveDate,
    run: &mut CadenceRun,
    events: &mut Events<'_>,
) -> Result<()> {
    // The contract first: a broken lake stops the run before any step (exit code 3).
    let session = crate::outputs::open_session(lake, AsOf(Some(as_of))).await?;
    run.inputs = inputs(&session);
    refuse_broken(&session, lake)?;
    // One read of the latest deal change: none before the as-of date refuses the run, one
    // weeks before it is a warning.
    match super::recorded_day(&session, "MAX").await? {
        None => return Err(before_any_data(lake, as_of).await),
        Some(latest) if (as_of - latest).num_days() > 14 => {
            let w = format!(
                "the lake's latest deal change is on {latest}, {} days before the as-of date {as_of}: is the \
                 connector still syncing? The run reads the lake as it is",
                (as_of - latest).num_days()
            );
            eprintln!("warning: {w}");
            run.warnings.push(w);
        }
        Some(_) => {}
    }
    drop(session);
    let run_id = run.run_id.clone();
    // The tasks, read by several steps with other columns each, are computed whole once, at the first
    // of them, instead of again for each new column set (on a million deals, 16M rows computed three
    // times, about 30 s). One step alone computes only what it reads.
    let mut tasks_whole = spec.steps.iter().filter(|s| s.job.reads_tasks()).count() > 1;
    for (i, step) in spec.steps.iter().enumerate() {
        let before = batch_runs(lake, &run_id).await?.len();
        let t0 = Instant::now();
        run.steps[i].started_at = log::now();
        let mut text = Vec::new();
        let warm_tasks = tasks_whole && step.job.reads_tasks();
        // Releasing is only memory: a lake that does not open here is left to the step, which
        // records the failure as its own; computing the tasks whole stays as it was.
        let session = if i > 0 || warm_tasks {
            match crate::outputs::open_session(lake, AsOf(Some(as_of))).await {
                Ok(session) => Some(session),
                Err(e) if warm_tasks => return Err(e),
                Err(_) => None,
            }
        } else {
            None
        };
        if let Some(session) = session {
            // The previous steps' known tables (validation holds every column of each: 2.4 GB on a
            // million deals) are read later only to compute staging tables; one a step needs is
            // computed again with its columns. The tasks stay until staging.task is computed from
            // them just below (which then drops them).
            let keep: &[&str] = if warm_tasks { &["known.task"] } else { &[] };
            let freed = crate::layers::shared::release(session.fingerprint, "known.", keep);
            if let Some(span) = crate::layers::trace::start("released known tables") {
                span.done(&format!("{} MiB", freed >> 20));
            }
            // The tasks with the columns this step and the later ones read (all, when one of them
            // does not list its columns); later, only those the steps still to come read.
            let columns = task_columns(&spec.steps[i..]);
            if warm_tasks {
                tasks_whole = false;
                if session.landed("task").is_some_and(|l| l.present()) {
                    crate::layers::shared::warm_with(&session, "staging.task", columns.as_deref()).await?;
                }
            } else if i > 0 {
                let freed = match columns {
                    Some(columns) if columns.is_empty() => {
                        crate::layers::shared::drop_table(session.fingerprint, "staging.task")
                    }
                    Some(columns) => crate::layers::shared::narrow(session.fingerprint, "staging.task", &columns)?,
                    None => 0,
                };
                if let (Some(span), true) = (crate::layers::trace::start("narrowed staging.task"), freed > 0) {
                    span.done(&format!("{} MiB freed", freed >> 20));
                }
            }
        }
        // Validation keeps the known tasks for the step that computes staging.task from them.
        let keep_known: &[&str] = if tasks_whole { &["task"] } else { &[] };
        let result = run_step(lake, step, as_of, keep_known, &mut text).await;
        if !events.json {
            events.out.write_all(&text)?;
        }
        let made = batch_runs(lake, &run_id).await?;
        let rec = &mut run.steps[i];
        rec.ms = t0.elapsed().as_millis() as u64;
        for m in made.iter().skip(before) {
            rec.job_runs.push(m.run_id.clone());
            rec.tables.extend(m.tables.iter().map(|t| TableRows { table: t.name.clone(), rows: t.rows }));
            if run.playbook_version.is_none() {
                run.playbook_version = m.playbook_version.clone().filter(|v| v.starts_with("playbook"));
            }
        }
        match result {
            Ok(()) => {
                rec.status = "ok".into();
                let outputs =
                    rec.tables.iter().map(|t| format!("{} {}", t.table, t.rows)).collect::<Vec<_>>().join(", ");
                let line = format!(
                    "step {}/{} {} ok in {:.1} s ({outputs})",
                    i + 1,
                    spec.steps.len(),
                    rec.name,
                    rec.ms as f64 / 1000.0
                );
                let rec = rec.clone();
                events.emit("STEP_COMPLETE", run, Some(&rec), line)?;
            }
            Err(e) => {
                rec.status = "failed".into();
                rec.error = Some(e.to_string());
                run.failed_step = Some(step.name.clone());
                let rec = rec.clone();
                events.emit("STEP_FAIL", run, Some(&rec), format!("step {} FAILED: {e}", rec.name))?;
                return Err(e);
            }
        }
        kill_point(&format!("cadence:after:{}", step.name));
    }
    Ok(())
}

/// An as-of date before the lake's first recorded deal change would compute every output as
/// zero: the refusal names the first date that has data.
async fn before_any_data(lake: &Lake, as_of: NaiveDate) -> Error {
    let first = match crate::outputs::open_session(lake, AsOf(None)).await {
        Ok(all) => super::recorded_day(&all, "MIN").await,
        Err(e) => Err(e),
    };
    match first {
        Ok(Some(d)) => Error::Refused(format!(
            "--as-of {as_of} is before any data in the lake: its first recorded deal change is on {d}. \
             Choose an as-of date on or after it"
        )),
        Ok(None) => Error::Refused(
            "the lake has no deal history (staging.opportunity_history is empty): nothing to run on".into(),
        ),
        Err(e) => e,
    }
}

/// The job runs committed so far under this cadence run, in commit order.
async fn batch_runs(lake: &Lake, run_id: &str) -> Result<Vec<crate::outputs::Manifest>> {
    Ok(crate::outputs::registry::all_runs(lake)
        .await?
        .into_iter()
        .filter(|m| m.batch.as_deref() == Some(run_id))
        .collect())
}

/// Every landed file the run reads, with its size and a fingerprint.
fn inputs(session: &crate::layers::LakeSession) -> Vec<InputFile> {
    let mut out = Vec::new();
    for landed in session.landed.iter().filter(|l| l.present()) {
        for f in &landed.files {
            let path = session.lake.relative(&f.location);
            let modified = f.last_modified.to_rfc3339();
            let fingerprint = f
                .e_tag
                .clone()
                .unwrap_or_else(|| crate::outputs::decision_log::record_id(&[&path, &f.size.to_string(), &modified]));
            out.push(InputFile { path, bytes: f.size, last_modified: modified, fingerprint });
        }
    }
    out
}

async fn run_step(lake: &Lake, step: &Step, as_of: NaiveDate, keep_known: &[&str], out: &mut dyn Write) -> Result<()> {
    match step.job {
        StepJob::Validate => {
            let session = crate::outputs::open_session(lake, AsOf(Some(as_of))).await?;
            let report = crate::quality::run(&session, keep_known).await?;
            write!(out, "{}", crate::quality::summary(&report.findings))?;
            let errors: Vec<&crate::quality::Finding> =
                report.findings.iter().filter(|f| f.severity == crate::quality::Severity::Error).collect();
            let share =
                |f: &crate::quality::Finding| if f.total_rows > 0 { f.count as f64 / f.total_rows as f64 } else { 1.0 };
            let too_many = step
                .max_errors
                .filter(|m| errors.len() as u64 > *m)
                .map(|m| format!("{} error-level finding(s), at most {m} allowed (max_errors)", errors.len()));
            let too_wide: Vec<&&crate::quality::Finding> =
                step.max_error_rate.map(|r| errors.iter().filter(|f| share(f) > r).collect()).unwrap_or_default();
            let breach = too_many.or_else(|| {
                (!too_wide.is_empty()).then(|| {
                    format!(
                        "{} error-level finding(s) on more than {:.1}% of their table's rows (max_error_rate)",
                        too_wide.len(),
                        100.0 * step.max_error_rate.unwrap_or(0.0)
                    )
                })
            });
            if let Some(breach) = breach {
                let first: Vec<String> = errors
                    .iter()
                    .take(5)
                    .map(|f| {
                        format!(
                            "{}.{} {} ({} of {} rows): {}",
                            f.table,
                            f.column.as_deref().unwrap_or("*"),
                            f.check,
                            f.count,
                            f.total_rows,
                            f.fix
                        )
                    })
                    .collect();
                return Err(Error::QualityThreshold(format!(
                    "data quality below the threshold of step {}: {breach}. Fix the lake, or change the threshold \
                     in the cadence file. First: {}",
                    step.name,
                    first.join("; ")
                )));
            }
            Ok(())
        }
        StepJob::Actions => {
            let by_hand = jobs::ActionByHand { deal: None, did: None, why: String::new(), by: String::new(), on: None };
            jobs::action(lake, as_of, true, by_hand, out).await
        }
        StepJob::Funnels => jobs::funnel(lake, Some(as_of), None, None, &[], &Calendar::default(), out).await,
        StepJob::Risk => jobs::risk(lake, as_of, None, None, out).await,
        StepJob::WinProbability => jobs::win_probability(lake, as_of, out).await,
        StepJob::Kpis => {
            let fy = step.fiscal_year_start.unwrap_or(1);
            jobs::kpis(lake, as_of, None, None, fy, step.week_starts_sunday.unwrap_or(false), out).await
        }
        StepJob::Patterns => jobs::patterns(lake, as_of, None, out).await,
        StepJob::Models => jobs::models(lake, as_of, None, None, out).await,
        StepJob::Proposals => {
            let session = crate::outputs::open_session(lake, AsOf(Some(as_of))).await?;
            refuse_broken(&session, lake)?;
            let run = crate::learn::proposals::run(&session).await?;
            write!(out, "{}", run.text)?;
            Ok(())
        }
    }
}

/// The staging.task columns the steps read: None when one that reads tasks does not list them,
/// empty when none reads tasks.
fn task_columns(steps: &[super::spec::Step]) -> Option<Vec<&'static str>> {
    let mut columns: Vec<&'static str> = Vec::new();
    for step in steps.iter().filter(|s| s.job.reads_tasks()) {
        columns.extend(step.job.task_columns()?);
    }
    columns.sort_unstable();
    columns.dedup();
    Some(columns)
}
