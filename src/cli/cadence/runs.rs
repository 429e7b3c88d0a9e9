//! `runs list`, `runs show`, `unlock` and `gc`: what cadence runs did, and the clean-up after
//! the ones that did not finish.

use std::collections::BTreeSet;
use std::io::Write;

use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::outputs::cadence::{self as log, CadenceRun};

/// A run's status as a reader should understand it: a `running` manifest whose process is gone
/// was killed (its lock, if still there, says by whom).
fn status(run: &CadenceRun, holder: &Option<log::LockHolder>) -> String {
    if run.status != "running" {
        return run.status.clone();
    }
    let held_by_it = holder.as_ref().is_some_and(|h| h.pid == run.pid && h.host == run.host);
    match holder.as_ref().filter(|_| held_by_it).and_then(|h| h.alive()) {
        Some(true) => "running".into(),
        _ if run.host == log::host() => "killed (its process is gone; not published)".into(),
        _ => "running or killed (on another host; not published)".into(),
    }
}

pub async fn list(lake: &Lake, json: bool, out: &mut dyn Write) -> Result<()> {
    let runs = log::runs(lake).await?;
    let holder = log::holder(lake).await.ok().flatten();
    if json {
        for r in &runs {
            writeln!(out, "{}", serde_json::to_string(r).map_err(|e| Error::Other(e.to_string()))?)?;
        }
        return Ok(());
    }
    if runs.is_empty() {
        writeln!(out, "no cadence runs yet (gtm-loop run weekly|monthly|quarterly, run due, backfill)")?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<58} {:<9} {:<8} {:<10} {:>6} {:>8}  status",
        "run", "cadence", "period", "as of", "steps", "seconds"
    )?;
    for r in &runs {
        let ok = r.steps.iter().filter(|s| s.status == "ok").count();
        let mut st = status(r, &holder);
        if let Some(step) = &r.failed_step {
            st = format!("{st} at {step}");
        }
        writeln!(
            out,
            "{:<58} {:<9} {:<8} {:<10} {:>6} {:>8.1}  {st}",
            r.run_id,
            r.cadence,
            r.period,
            r.as_of,
            format!("{ok}/{}", r.steps.len()),
            r.total_ms() as f64 / 1000.0
        )?;
    }
    if let Some(h) = holder {
        writeln!(out, "\nlock: {}", log::locked_error(&h))?;
    }
    Ok(())
}

pub async fn show(lake: &Lake, id: &str, json: bool, out: &mut dyn Write) -> Result<()> {
    let runs = log::runs(lake).await?;
    let found: Vec<&CadenceRun> = runs.iter().filter(|r| r.run_id.starts_with(id)).collect();
    let r = match found.as_slice() {
        [one] => *one,
        [] => return Err(Error::Refused(format!("no cadence run starts with {id:?}; see `gtm-loop runs list`"))),
        many => return Err(Error::Refused(format!("{} runs start with {id:?}; give more of the id", many.len()))),
    };
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(r).map_err(|e| Error::Other(e.to_string()))?)?;
        return Ok(());
    }
    let holder = log::holder(lake).await.ok().flatten();
    writeln!(out, "run        {}", r.run_id)?;
    writeln!(out, "cadence    {} {} as of {}", r.cadence, r.period, r.as_of)?;
    writeln!(out, "status     {}", status(r, &holder))?;
    writeln!(out, "started    {}  finished {}", r.started_at, r.finished_at.as_deref().unwrap_or("-"))?;
    writeln!(out, "code       {}", r.code_version)?;
    writeln!(out, "playbook   {}", r.playbook_version.as_deref().unwrap_or("-"))?;
    writeln!(out, "command    {} on {} (pid {})", r.command, r.host, r.pid)?;
    let bytes: u64 = r.inputs.iter().map(|i| i.bytes).sum();
    writeln!(
        out,
        "inputs     {} files, {bytes} bytes (runs show --json lists each with its fingerprint)",
        r.inputs.len()
    )?;
    if let Some(e) = &r.error {
        writeln!(out, "error      {e}")?;
    }
    for w in &r.warnings {
        writeln!(out, "warning    {w}")?;
    }
    writeln!(out, "\n{:<20} {:<16} {:<8} {:>8}  outputs", "step", "job", "status", "seconds")?;
    for s in &r.steps {
        let outputs = s.tables.iter().map(|t| format!("{} ({} rows)", t.table, t.rows)).collect::<Vec<_>>().join(", ");
        writeln!(out, "{:<20} {:<16} {:<8} {:>8.1}  {outputs}", s.name, s.job, s.status, s.ms as f64 / 1000.0)?;
        if let Some(e) = &s.error {
            writeln!(out, "{:<20} error: {e}", "")?;
        }
    }
    Ok(())
}

/// `gc`: deletes what runs that never committed left behind, under the lock (so no run is
/// writing): the job manifests and files of failed or killed cadence runs, data files no manifest
/// names (a job killed before its commit), and half-written staged log files. Files younger than
/// `min_age_secs` are kept unless a dead run wrote them, in case a job outside a cadence run (which
/// does not take the lock) is writing them now. Committed runs and the logs are never touched.
pub async fn gc(lake: &Lake, min_age_secs: u64, dry_run: bool, out: &mut dyn Write) -> Result<()> {
    let lock = log::acquire(lake, "gtm-loop gc").await?;
    let result = gc_locked(lake, min_age_secs, dry_run, out).await;
    log::release(lake, &lock).await?;
    result
}

async fn gc_locked(lake: &Lake, min_age_secs: u64, dry_run: bool, out: &mut dyn Write) -> Result<()> {
    let committed = log::committed(lake).await?;
    let all = crate::outputs::registry::all_runs(lake).await?;
    let (keep, dead): (Vec<_>, Vec<_>) =
        all.into_iter().partition(|m| m.batch.as_ref().is_none_or(|b| committed.contains(b)));
    let referenced: BTreeSet<String> = keep
        .iter()
        .flat_map(|m| m.tables.iter().flat_map(|t| t.files.iter()).chain(m.artifacts.iter()))
        .map(|f| f.path.clone())
        .collect();
    let dead_files: BTreeSet<String> = dead
        .iter()
        .flat_map(|m| m.tables.iter().flat_map(|t| t.files.iter()).chain(m.artifacts.iter()))
        .map(|f| f.path.clone())
        .collect();
    let cutoff = chrono::Utc::now() - chrono::Duration::seconds(min_age_secs as i64);
    let mut doomed: Vec<(String, u64)> = Vec::new();
    for item in lake.list("output/").await? {
        let rel = lake.relative(&item.location);
        if rel.starts_with(log::DIR) || rel.starts_with(crate::outputs::run_writer::RUNS_DIR) || rel == log::LOCK {
            continue;
        }
        if !referenced.contains(&rel) && (dead_files.contains(&rel) || item.last_modified < cutoff) {
            doomed.push((rel, item.size));
        }
    }
    for item in lake.list("log/").await? {
        let rel = lake.relative(&item.location);
        if rel.ends_with("#staged") && item.last_modified < cutoff {
            doomed.push((rel, item.size));
        }
    }
    // Rows a process registered for a cluster's executors (`_engine/`), left by a process that
    // died before removing them; a process still running keeps its own (younger than the cutoff).
    for item in lake.list(&format!("{}/", crate::layers::session::SCRATCH_DIR)).await? {
        if item.last_modified < cutoff {
            doomed.push((lake.relative(&item.location), item.size));
        }
    }
    let manifests: Vec<String> =
        dead.iter().map(|m| format!("{}/{}.json", crate::outputs::run_writer::RUNS_DIR, m.run_id)).collect();
    let bytes: u64 = doomed.iter().map(|(_, b)| b).sum();
    let verb = if dry_run { "would delete" } else { "deleted" };
    if !dry_run {
        // Data first, manifests last: a gc killed half-way leaves manifests that gc finds again.
        for (rel, _) in &doomed {
            lake.delete(rel).await?;
        }
        for rel in &manifests {
            lake.delete(rel).await?;
        }
    }
    for (rel, _) in &doomed {
        writeln!(out, "  {rel}")?;
    }
    writeln!(
        out,
        "gc: {verb} {} file(s), {bytes} bytes, and {} job manifest(s) of runs that never committed; {} committed job runs untouched",
        doomed.len(),
        manifests.len(),
        keep.len()
    )?;
    Ok(())
}
