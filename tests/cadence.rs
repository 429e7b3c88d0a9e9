//! The cadence runner: `run due` does each period once, a backfill leaves nothing due, a run's
//! manifest says what it read and wrote, and a run killed anywhere (named points and signals at
//! arbitrary moments) never shows part of itself and never loses a log record.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

fn ok(lake: &Path, args: &[&str]) -> String {
    let r = run(lake, args);
    assert_eq!(r.code, 0, "{args:?} failed:\n{}\n{}", r.stderr, r.stdout);
    r.stdout
}

/// A small demo lake with history up to the end of July 2026.
fn small_lake(root: &Path) -> PathBuf {
    let lake = root.join("lake");
    ok(&lake, &["generate", "--opportunities", "400", "--end", "2026-07-31", "--days", "400"]);
    lake
}

fn cadence_runs(lake: &Path) -> Vec<Value> {
    ok(lake, &["--json", "runs", "list"]).lines().map(|l| serde_json::from_str(l).expect("json run")).collect()
}

fn committed(lake: &Path, cadence: &str) -> Vec<String> {
    cadence_runs(lake)
        .iter()
        .filter(|r| r["status"] == "committed" && r["cadence"] == cadence)
        .map(|r| r["period"].as_str().unwrap().to_string())
        .collect()
}

/// What readers see: every visible job run, and the rows of each visible deal-risk date.
fn visible(lake: &Path) -> (Vec<String>, Vec<(String, f64)>) {
    let runs = query(lake, "SELECT run_id FROM output.runs ORDER BY run_id", None);
    let risk = if runs.is_empty() {
        Vec::new()
    } else {
        query(lake, "SELECT as_of_date, COUNT(*) AS n FROM output.deal_risk GROUP BY 1 ORDER BY 1", None)
    };
    (
        runs.iter().map(|r| s(r, "run_id").to_string()).collect(),
        risk.iter().map(|r| (s(r, "as_of_date").to_string(), f(r, "n"))).collect(),
    )
}

/// Every file of the logs with its bytes.
fn log_files(lake: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.insert(p.strip_prefix(base).unwrap().display().to_string(), std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(lake, &lake.join("log"), &mut out);
    out
}

#[test]
fn run_due_does_each_period_once_and_a_backfill_leaves_nothing_due() {
    let root = tempdir();
    let lake = small_lake(root.path());

    // Eight weeks ending 7 June to 26 July, with June and the second quarter ending inside.
    let out = ok(&lake, &["backfill", "--from", "2026-06-01", "--to", "2026-07-26"]);
    assert!(out.contains("10 period(s) run, 0 already done"), "{out}");
    let weeks = committed(&lake, "weekly");
    assert_eq!(weeks.len(), 8, "{weeks:?}");
    assert_eq!((weeks[0].as_str(), weeks[7].as_str()), ("2026-W23", "2026-W30"));
    assert_eq!(committed(&lake, "monthly"), ["2026-06"]);
    assert_eq!(committed(&lake, "quarterly"), ["2026-Q2"]);
    // Oldest first: the runs were made in the order of their as-of dates.
    let order: Vec<String> = cadence_runs(&lake).iter().map(|r| r["as_of"].as_str().unwrap().to_string()).collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted);

    // The Monday after: nothing more is due.
    let jobs_before = visible(&lake).0.len();
    let out = ok(&lake, &["run", "due", "--today", "2026-07-27"]);
    assert!(out.contains("nothing is due on 2026-07-27"), "{out}");
    assert_eq!(visible(&lake).0.len(), jobs_before, "run due did no work");

    // A week later: the week of 27 July - 2 August and July are due, once.
    let out = ok(&lake, &["run", "due", "--today", "2026-08-04"]);
    assert!(out.contains("2 period(s) run"), "{out}");
    assert_eq!(committed(&lake, "weekly").last().map(String::as_str), Some("2026-W31"));
    assert_eq!(committed(&lake, "monthly"), ["2026-06", "2026-07"]);
    let jobs_after = visible(&lake).0.len();
    let out = ok(&lake, &["run", "due", "--today", "2026-08-04"]);
    assert!(out.contains("nothing is due"), "{out}");
    assert_eq!(visible(&lake).0.len(), jobs_after);
    let out = ok(&lake, &["backfill", "--from", "2026-06-01", "--to", "2026-07-26", "--cadence", "weekly"]);
    assert!(out.contains("0 period(s) run, 8 already done"), "{out}");

    // A run's manifest: what it read, what it wrote (row counts that match the tables), with which
    // code and playbook, step by step.
    let week = cadence_runs(&lake).into_iter().find(|r| r["period"] == "2026-W30").unwrap();
    let id = week["run_id"].as_str().unwrap();
    let shown: Value = serde_json::from_str(&ok(&lake, &["--json", "runs", "show", &id[..30]])).unwrap();
    assert_eq!(shown["as_of"], "2026-07-26");
    assert!(shown["code_version"].as_str().unwrap().starts_with("0.1.0"), "{shown}");
    assert!(shown["playbook_version"].as_str().unwrap().starts_with("playbook v1 "), "{shown}");
    let inputs = shown["inputs"].as_array().unwrap();
    assert!(
        inputs.iter().any(|i| i["path"].as_str().unwrap().starts_with("raw/salesforce/opportunity/")),
        "{inputs:?}"
    );
    assert!(inputs.iter().all(|i| i["bytes"].as_u64().unwrap() > 0 && !i["fingerprint"].as_str().unwrap().is_empty()));
    let steps: Vec<&str> = shown["steps"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(steps, ["data_quality", "rep_actions", "deal_risk", "win_probability"]);
    let risk_rows = shown["steps"][2]["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == "deal_risk")
        .map(|t| t["rows"].as_f64().unwrap())
        .unwrap();
    let visible_rows = visible(&lake).1.into_iter().find(|(d, _)| d == "2026-07-26").unwrap().1;
    assert_eq!(risk_rows, visible_rows);
    let text = ok(&lake, &["runs", "show", id]);
    assert!(text.contains("deal_risk") && text.contains("ok"), "{text}");

    // --rerun runs a done period again, and its outputs replace the old ones for that date.
    let out = ok(&lake, &["run", "weekly", "--as-of", "2026-07-26", "--rerun"]);
    assert!(out.contains("committed weekly run"), "{out}");
    assert_eq!(committed(&lake, "weekly").iter().filter(|p| *p == "2026-W30").count(), 2);
    let rows_now = visible(&lake).1.into_iter().find(|(d, _)| d == "2026-07-26").unwrap().1;
    assert_eq!(rows_now, visible_rows, "the rerun replaces the date's rows, it does not add to them");

    // --json: one event per line for a scheduler.
    let r = run(&lake, &["--json", "run", "weekly", "--as-of", "2026-07-29"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let events: Vec<Value> =
        r.stdout.lines().map(|l| serde_json::from_str(l).expect("one JSON event per line")).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["eventType"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["START", "STEP_COMPLETE", "STEP_COMPLETE", "STEP_COMPLETE", "STEP_COMPLETE", "COMPLETE"]);
    // That ad-hoc run (as of Wednesday 29 July) belongs to W31 but does not finish a week: the
    // week counts as done by the run as of its Sunday, and nothing more is due.
    let w31: Vec<String> = cadence_runs(&lake)
        .iter()
        .filter(|r| r["period"] == "2026-W31")
        .map(|r| r["as_of"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(w31, ["2026-08-02", "2026-07-29"]);
    assert!(ok(&lake, &["run", "due", "--today", "2026-08-04"]).contains("nothing is due"));
}

#[test]
fn a_run_killed_anywhere_shows_nothing_of_itself_and_loses_no_record() {
    let root = tempdir();
    let lake = small_lake(root.path());
    ok(&lake, &["run", "weekly", "--as-of", "2026-07-19"]);
    let good = visible(&lake);
    assert_eq!(good.1.len(), 1);
    let week = ["run", "weekly", "--as-of", "2026-07-26", "--rerun"];

    // Named points: after each step, before the commit, and inside a job between its data files
    // and its manifest.
    let points = [
        "cadence:after:data_quality",
        "cadence:after:deal_risk",
        "cadence:after:win_probability",
        "cadence:before_commit",
    ];
    let mut logs = log_files(&lake);
    for point in points {
        let r = run_env(&lake, &week, &[("GTM_LOOP_KILL_AT", point)]);
        assert_ne!(r.code, 0, "{point}: the run was killed");
        assert_eq!(visible(&lake), good, "{point}: nothing of the killed run is visible");
        let now = log_files(&lake);
        for (f, bytes) in &logs {
            assert_eq!(now.get(f), Some(bytes), "{point}: log file {f} lost or changed");
        }
        logs = now;
        // The lock it left is explained by the next command that wants it.
        assert!(lake.join("output/_lock.json").exists(), "{point}: a killed run leaves its lock");
        let list = ok(&lake, &["runs", "list"]);
        assert!(list.contains("killed (its process is gone; not published)"), "{point}: {list}");
        assert!(list.contains("no longer alive") && list.contains("pid"), "{point}: {list}");
    }
    // Signals at arbitrary moments of the run (SIGKILL, nothing can clean up).
    for delay_ms in [150u64, 700, 1500, 2600, 4000] {
        let mut child = Command::new(bin())
            .arg("--lake")
            .arg(&lake)
            .args(week)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let status = child.wait().unwrap();
        let seen = visible(&lake);
        if status.success() {
            // It finished before the signal: then it is visible whole.
            assert_eq!(seen.1.len(), 2, "after {delay_ms} ms: {seen:?}");
        } else {
            assert_eq!(seen, good, "killed after {delay_ms} ms: nothing of it is visible");
        }
        let now = log_files(&lake);
        for (f, bytes) in &logs {
            assert_eq!(now.get(f), Some(bytes), "after {delay_ms} ms: log file {f} lost or changed");
        }
        logs = now;
        // Every log record is whole: the log reads.
        query(&lake, "SELECT COUNT(*) AS n FROM log.decision_trace", None);
        if status.success() {
            break;
        }
    }
    // Killed right after the commit: the run is whole and visible, only its lock is left.
    let r = run_env(&lake, &week, &[("GTM_LOOP_KILL_AT", "cadence:after_commit")]);
    assert_ne!(r.code, 0);
    let after_commit = visible(&lake);
    assert_eq!(after_commit.1.len(), 2, "{after_commit:?}");
    assert_eq!(after_commit.1[0], good.1[0]);

    // The next run takes the dead run's lock over (saying so) and succeeds.
    let r = run(&lake, &week);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("taking over the lake's lock from a run that is no longer alive"), "{}", r.stderr);
    assert!(r.stderr.contains("pid") && r.stderr.contains("ago"), "{}", r.stderr);
    let last = visible(&lake);
    assert_eq!(last.1[0], good.1[0], "the earlier week never changed");
    assert_eq!(last.1[1].1, after_commit.1[1].1, "the same week computed again gives the same rows");

    // gc deletes the files the dead runs left, and nothing anyone can see.
    let files_before = count_files(&lake.join("output"));
    let out = ok(&lake, &["gc", "--min-age-secs", "0"]);
    assert!(out.contains("gc: deleted"), "{out}");
    assert!(count_files(&lake.join("output")) < files_before, "{out}");
    assert_eq!(visible(&lake), last);
    let out = ok(&lake, &["gc", "--min-age-secs", "0"]);
    assert!(out.contains("gc: deleted 0 file(s), 0 bytes, and 0 job manifest(s)"), "{out}");
    assert_eq!(log_files(&lake).len(), logs.len().max(log_files(&lake).len()));
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| if e.path().is_dir() { count_files(&e.path()) } else { 1 })
        .sum()
}

#[test]
fn a_failed_step_publishes_nothing_says_what_failed_and_releases_the_lock() {
    let root = tempdir();
    let lake = small_lake(root.path());
    ok(&lake, &["run", "weekly", "--as-of", "2026-07-19"]);
    let good = visible(&lake);
    let r = run_env(&lake, &["run", "weekly", "--as-of", "2026-07-26"], &[("GTM_LOOP_FAIL_AFTER_WRITE", "deal_risk")]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("failed at step deal_risk; the last good outputs stay as they were"), "{}", r.stderr);
    assert_eq!(visible(&lake), good);
    assert!(!lake.join("output/_lock.json").exists(), "a failed run gives the lock back");
    let list = ok(&lake, &["runs", "list"]);
    assert!(list.contains("failed at deal_risk"), "{list}");
    // And the next run of that week works at once.
    ok(&lake, &["run", "weekly", "--as-of", "2026-07-26"]);
    assert_eq!(visible(&lake).1.len(), 2);
}

#[test]
fn two_runs_at_once_the_second_is_refused_with_the_holder() {
    let root = tempdir();
    let lake = small_lake(root.path());
    let mut first = Command::new(bin())
        .arg("--lake")
        .arg(&lake)
        .args(["run", "weekly", "--as-of", "2026-07-19"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lock = lake.join("output/_lock.json");
    for _ in 0..200 {
        if lock.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    assert!(lock.exists(), "the first run took the lock");
    let second = run(&lake, &["run", "monthly", "--as-of", "2026-06-30"]);
    assert_eq!(second.code, 6, "{}", second.stderr);
    assert!(second.stderr.contains("locked by a run in progress"), "{}", second.stderr);
    assert!(second.stderr.contains(&format!("pid {}", first.id())), "{}", second.stderr);
    assert!(first.wait().unwrap().success());
    assert!(!lock.exists());
    ok(&lake, &["run", "monthly", "--as-of", "2026-06-30"]);
}

/// The weekly computes the tasks once, with the columns its steps list (StepJob::task_columns),
/// and drops those no later step reads between steps: a step reading a column its list lacks
/// would make it compute them a second time, which this catches.
#[test]
fn the_weekly_computes_the_tasks_once_and_narrows_them_between_steps() {
    let root = tempdir();
    let lake = small_lake(root.path());
    let r = run_env(&lake, &["run", "weekly", "--as-of", "2026-07-26"], &[("GTM_LOOP_TRACE", "1")]);
    assert_eq!(r.code, 0, "{}\n{}", r.stderr, r.stdout);
    let computed: Vec<&str> = r.stderr.lines().filter(|l| l.contains("  shared staging.task  ")).collect();
    assert_eq!(computed.len(), 1, "staging.task computed {} times:\n{}", computed.len(), computed.join("\n"));
    // With the actions step's columns (the task ids and subjects among them), not every column.
    assert!(computed[0].contains("  9 columns, "), "{}", computed[0]);
    let narrowed: Vec<&str> = r.stderr.lines().filter(|l| l.contains("narrowed staging.task")).collect();
    assert!(!narrowed.is_empty(), "the task ids and subjects were kept after the actions step:\n{}", r.stderr);
}
