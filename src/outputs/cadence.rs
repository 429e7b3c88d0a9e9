//! Cadence runs (weekly, monthly, quarterly) as the lake records them, and the lake's lock.
//!
//! A cadence run is several jobs; each job commits its own manifest (`output/_runs/`), stamped
//! with the cadence run's id (`batch`). Readers skip a stamped manifest until the cadence run's
//! own manifest, `output/_cadence/<run_id>.json`, says `committed`: that one put publishes every
//! step at once. A failed run rewrites it as `failed` with the step and the error; a killed run
//! leaves it at `running`, with its lock behind. Either way the last good outputs stay visible.
//!
//! The lock, `output/_lock.json`, is taken with a conditional put (create only if absent), names
//! its holder (pid, host, process start time, command) and is removed at the end of the run. A
//! lock whose holder died on this host is taken over with a warning; one from another host is not.

use std::collections::BTreeSet;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::lake::Lake;

pub const DIR: &str = "output/_cadence";
pub const LOCK: &str = "output/_lock.json";

/// One input file a cadence run read: where, how big, and a fingerprint that changes with it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InputFile {
    pub path: String,
    pub bytes: u64,
    pub last_modified: String,
    /// The store's e-tag when it gives one, else a hash of path, size and modification time.
    pub fingerprint: String,
}

/// One table a step published, with its row count.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TableRows {
    pub table: String,
    pub rows: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StepRecord {
    pub name: String,
    pub job: String,
    /// ok, failed, skipped (after an earlier step failed).
    pub status: String,
    pub started_at: String,
    pub ms: u64,
    /// The job runs the step committed (ids in `output/_runs/`).
    pub job_runs: Vec<String>,
    pub tables: Vec<TableRows>,
    pub error: Option<String>,
}

/// The manifest of one cadence run (OpenLineage-like: run, job, inputs, outputs, facets).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CadenceRun {
    pub run_id: String,
    pub cadence: String,
    /// The period the run covers: 2026-W39, 2026-09, 2026-Q3.
    pub period: String,
    pub as_of: String,
    /// running, committed or failed.
    pub status: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub code_version: String,
    pub playbook_version: Option<String>,
    pub host: String,
    pub pid: u32,
    pub command: String,
    pub inputs: Vec<InputFile>,
    pub steps: Vec<StepRecord>,
    pub failed_step: Option<String>,
    pub error: Option<String>,
    /// What the run noticed but did not stop for (a lake that stopped syncing, say).
    #[serde(default)]
    pub warnings: Vec<String>,
}

impl CadenceRun {
    pub fn total_ms(&self) -> u64 {
        self.steps.iter().map(|s| s.ms).sum()
    }
}

/// Every cadence run recorded in the lake, oldest first.
pub async fn runs(lake: &Lake) -> Result<Vec<CadenceRun>> {
    let mut out: Vec<CadenceRun> = lake.json_files(DIR, "a cadence manifest").await?;
    out.sort_by(|a, b| a.started_at.cmp(&b.started_at).then(a.run_id.cmp(&b.run_id)));
    Ok(out)
}

/// The ids of the cadence runs that committed: the only batches whose job runs readers see.
pub async fn committed(lake: &Lake) -> Result<BTreeSet<String>> {
    Ok(runs(lake).await?.into_iter().filter(|r| r.status == "committed").map(|r| r.run_id).collect())
}

/// Writes (or rewrites) a cadence manifest in one put.
pub async fn write(lake: &Lake, run: &CadenceRun) -> Result<()> {
    let json = serde_json::to_vec_pretty(run).map_err(|e| Error::Other(e.to_string()))?;
    lake.put(&format!("{DIR}/{}.json", run.run_id), json).await
}

/// A test hook: `GTM_LOOP_KILL_AT=<point>` aborts the process there, as a kill would.
pub fn kill_point(point: &str) {
    if std::env::var("GTM_LOOP_KILL_AT").is_ok_and(|p| p == point) {
        eprintln!("GTM_LOOP_KILL_AT={point}: aborting");
        std::process::abort();
    }
}

pub fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".into())
}

/// The start time of a process (field 22 of /proc/<pid>/stat, in clock ticks since boot), so a
/// reused pid is not mistaken for the lock's holder. None where /proc is not available.
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Who holds the lake's lock.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LockHolder {
    pub token: String,
    pub command: String,
    pub pid: u32,
    pub host: String,
    pub process_start: Option<u64>,
    pub since: String,
}

impl LockHolder {
    /// Some(true) if the holder is a live process on this host, Some(false) if it is gone, None
    /// if it runs on another host or this one has no /proc (this machine cannot tell).
    pub fn alive(&self) -> Option<bool> {
        // Without /proc (not Linux) this machine cannot tell a dead holder from a live one.
        if self.host != host() || !std::path::Path::new("/proc/self/stat").exists() {
            return None;
        }
        match (process_start(self.pid), self.process_start) {
            (None, _) => Some(false),
            (Some(now), Some(then)) => Some(now == then),
            (Some(_), None) => Some(true),
        }
    }

    pub fn describe(&self) -> String {
        let age = DateTime::parse_from_rfc3339(&self.since)
            .map(|t| human_age((Utc::now() - t.with_timezone(&Utc)).num_seconds()))
            .unwrap_or_else(|_| "unknown age".into());
        format!("`{}` (pid {} on host {}, since {}, {age} ago)", self.command, self.pid, self.host, self.since)
    }
}

fn human_age(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} days", s / 86_400),
    }
}

/// The current holder of the lock, if any.
pub async fn holder(lake: &Lake) -> Result<Option<LockHolder>> {
    if !lake.exists(LOCK).await? {
        return Ok(None);
    }
    let bytes = match lake.get(LOCK).await {
        Ok(b) => b,
        Err(Error::ObjectStore(object_store::Error::NotFound { .. })) => return Ok(None),
        Err(e) => return Err(e),
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        Error::Locked(format!(
            "the lake's lock {LOCK} is not a lock file ({e}): something else wrote it. Look at it, then remove it with `gtm-loop unlock --force`"
        ))
    })
}

/// Why the lake is locked, and what to do: the error a second run gets.
pub fn locked_error(h: &LockHolder) -> Error {
    let what = h.describe();
    Error::Locked(match h.alive() {
        Some(true) => format!(
            "the lake is locked by a run in progress: {what}. Two runs on one lake at once are refused; wait for it to finish"
        ),
        Some(false) => format!(
            "the lake is locked by a run that is no longer alive: {what}. Its process is gone (killed or crashed); \
             nothing it did was published. The next run takes the lock over; `gtm-loop gc` deletes the files it left"
        ),
        None => format!(
            "the lake is locked by {what}, on another host, so this machine cannot tell whether it is alive. \
             If you know it is not, remove the lock with `gtm-loop unlock --force`"
        ),
    })
}

/// Takes the lake's lock for `command`, or says who holds it. A lock left by a dead process on
/// this host (its pid gone, or reused by a process that started later) is taken over, not
/// silently: the take-over is said on stderr and recorded under `output/_lock.broken/`, and only
/// one process can claim a given stale lock (a conditional put of that record). A holder on
/// another host, or alive, is never broken: the error says who it is.
pub async fn acquire(lake: &Lake, command: &str) -> Result<LockHolder> {
    let pid = std::process::id();
    let me = LockHolder {
        token: format!("{pid}-{}", Utc::now().timestamp_nanos_opt().unwrap_or_default()),
        command: command.to_string(),
        pid,
        host: host(),
        process_start: process_start(pid),
        since: now(),
    };
    let json = serde_json::to_vec_pretty(&me).map_err(|e| Error::Other(e.to_string()))?;
    if !lake.put_if_absent(LOCK, json.clone()).await? {
        let Some(h) = holder(lake).await? else {
            return Err(Error::Locked(format!("the lake's lock {LOCK} was taken and released meanwhile; run again")));
        };
        if h.alive() != Some(false) {
            return Err(locked_error(&h));
        }
        let record = serde_json::json!({"stale": h, "taken_over_by": me, "at": now()});
        let claim = format!("output/_lock.broken/{}.json", h.token);
        if !lake.put_if_absent(&claim, record.to_string()).await? {
            return Err(Error::Locked(format!(
                "another process is taking over the stale lock of {} right now; run again",
                h.describe()
            )));
        }
        eprintln!(
            "warning: taking over the lake's lock from a run that is no longer alive: {}. Nothing it did was \
             published; `gtm-loop gc` deletes the files it left (recorded in {claim})",
            h.describe()
        );
        lake.delete(LOCK).await?;
        if !lake.put_if_absent(LOCK, json).await? {
            return match holder(lake).await? {
                Some(other) => Err(locked_error(&other)),
                None => Err(Error::Locked(format!("the lake's lock {LOCK} could not be taken; run again"))),
            };
        }
    }
    // Read back: a store that ignored the condition would show another holder's token here.
    match holder(lake).await? {
        Some(h) if h.token == me.token => Ok(me),
        Some(h) => Err(locked_error(&h)),
        None => Err(Error::Locked(format!("the lake's lock {LOCK} vanished right after it was taken; run again"))),
    }
}

/// Gives the lock back (only if it is still ours).
pub async fn release(lake: &Lake, me: &LockHolder) -> Result<()> {
    if holder(lake).await.ok().flatten().is_some_and(|h| h.token == me.token) {
        lake.delete(LOCK).await?;
    }
    Ok(())
}

/// `unlock`: removes a lock whose holder is gone; a live or unknowable holder needs `force`.
pub async fn unlock(lake: &Lake, force: bool) -> Result<String> {
    let Some(h) = holder(lake).await? else {
        return Ok("the lake is not locked\n".into());
    };
    match (h.alive(), force) {
        (Some(true), _) => Err(Error::Refused(format!(
            "the lock's holder is alive: {}; it is not removed (stop that process first)",
            h.describe()
        ))),
        (None, false) => Err(Error::Refused(format!(
            "the lock is held by {} on another host; this machine cannot tell whether it is alive. \
             Pass --force if you know it is not",
            h.describe()
        ))),
        _ => {
            lake.delete(LOCK).await?;
            Ok(format!("removed the lock of {}\n", h.describe()))
        }
    }
}
