//! The bad-input suite: each case breaks a copy of a lake that already has published outputs, runs
//! the command a user would, and asserts a clear error (exit code and the words that say what to
//! fix) or a data-quality row, and that everything published before is still there, unchanged.
//! The README's reliability section lists these cases with what each gets.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::*;

const AS_OF: &str = "2026-07-19";

/// A lake with one committed weekly run: the outputs no bad input may lose.
fn base() -> &'static Path {
    static BASE: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &BASE
        .get_or_init(|| {
            let dir = tempdir();
            let lake = dir.path().join("base");
            let g = run(&lake, &["generate", "--opportunities", "300", "--end", "2026-07-31", "--days", "400"]);
            assert_eq!(g.code, 0, "{}", g.stderr);
            let r = run(&lake, &["run", "weekly", "--as-of", AS_OF]);
            assert_eq!(r.code, 0, "{}", r.stderr);
            (dir, lake)
        })
        .1
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

/// What the base run published, read back: its job runs and the rows of its deal-risk date.
fn published(lake: &Path) -> (Vec<String>, f64, usize) {
    let runs = query(lake, "SELECT run_id FROM output.runs WHERE job <> 'validate' ORDER BY run_id", None);
    let risk = query(lake, &format!("SELECT COUNT(*) AS n FROM output.deal_risk WHERE as_of_date = '{AS_OF}'"), None);
    let log = query(lake, "SELECT COUNT(*) AS n FROM log.decision_trace", None);
    (runs.iter().map(|r| s(r, "run_id").to_string()).collect(), f(&risk[0], "n"), f(&log[0], "n") as usize)
}

struct Case {
    lake: PathBuf,
    _dir: tempfile::TempDir,
}

impl Case {
    fn new() -> Case {
        let dir = tempdir();
        let lake = dir.path().join("lake");
        copy_dir(base(), &lake);
        Case { lake, _dir: dir }
    }

    fn raw(&self, table: &str) -> PathBuf {
        let dir = ["salesforce", "telemetry", "finance", "conversations"]
            .iter()
            .map(|s| self.lake.join("raw").join(s).join(table))
            .find(|p| p.is_dir())
            .unwrap_or_else(|| panic!("no raw folder for {table}"));
        std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "parquet"))
            .unwrap()
    }

    /// Rewrites a raw table through SQL over the base lake's raw layer (as Parquet).
    fn rewrite(&self, table: &str, sql: &str) {
        let target = self.raw(table);
        let tmp = self.lake.join("rewrite.parquet");
        let r = run(base(), &["query", sql, "--format", "parquet", "--out", tmp.to_str().unwrap()]);
        assert_eq!(r.code, 0, "{sql}: {}", r.stderr);
        std::fs::rename(&tmp, &target).unwrap();
    }

    /// Runs the command; asserts its exit code and that stderr says each of `says`.
    fn expect(&self, args: &[&str], code: i32, says: &[&str]) -> Run {
        self.expect_env(args, &[], code, says)
    }

    fn expect_env(&self, args: &[&str], env: &[(&str, &str)], code: i32, says: &[&str]) -> Run {
        let r = run_env(&self.lake, args, env);
        assert_eq!(r.code, code, "{args:?}: exit code\n{}\n{}", r.stderr, r.stdout);
        for s in says {
            assert!(
                r.stderr.contains(s) || r.stdout.contains(s),
                "{args:?}: expected {s:?} in\n{}\n{}",
                r.stderr,
                r.stdout
            );
        }
        r
    }

    /// `validate` publishes the finding as a data-quality row: table, column, check.
    fn finding(&self, table: &str, column: &str, check: &str) {
        let r = run(&self.lake, &["validate", "--as-of", AS_OF]);
        assert_eq!(r.code, 0, "validate: {}", r.stderr);
        let rows = query(
            &self.lake,
            &format!(
                "SELECT severity, fix FROM output.data_quality WHERE as_of_date = '{AS_OF}' AND table_name = '{table}' \
                 AND column_name = '{column}' AND \"check\" = '{check}'"
            ),
            None,
        );
        assert_eq!(rows.len(), 1, "{table}.{column} {check}: a data-quality row\n{}", r.stdout);
        assert!(!s(&rows[0], "fix").is_empty(), "the row says how to fix it");
    }

    /// Nothing the base run published was lost or changed: its job runs are all still visible,
    /// its deal-risk date has the same rows, and the log has every record it had.
    fn nothing_lost(&self) {
        let (runs, risk, log) = published(&self.lake);
        let (base_runs, base_risk, base_log) = published(base());
        for r in &base_runs {
            assert!(runs.contains(r), "published run {r} is no longer visible");
        }
        assert_eq!(risk, base_risk, "the published deal-risk rows changed");
        assert!(log >= base_log, "decision-trace records were lost: {log} < {base_log}");
    }
}

fn corrupt(path: &Path, f: impl Fn(Vec<u8>) -> Vec<u8>) {
    let bytes = std::fs::read(path).unwrap();
    std::fs::write(path, f(bytes)).unwrap();
}

const WEEK: [&str; 4] = ["run", "weekly", "--as-of", "2026-07-26"];

// ---- Files that cannot be read, or do not match the contract: the run stops (exit 3), naming
// the file and the fix, before anything is computed.

#[test]
fn unreadable_and_mistyped_files_stop_the_run_naming_the_file() {
    // 1. A corrupt Parquet file: bytes overwritten over the first page header (right after the
    // magic number), which every reader must decode. Bytes overwritten inside a page of plain
    // values are not detectable without page checksums, which arrow-rs does not write: they read
    // as other values. (This case once overwrote the middle of the file and passed only because
    // the garbage, a sync time in the year 2540, overflowed a nanosecond cast.)
    let c = Case::new();
    let f = c.raw("opportunity");
    corrupt(&f, |mut b| {
        b[4..68].fill(0xAB);
        b
    });
    c.expect(&WEEK, 3, &["raw/salesforce/opportunity/", "Fix:"]);
    c.nothing_lost();
    // 2. A truncated Parquet file (an interrupted upload).
    let c = Case::new();
    corrupt(&c.raw("opportunity_history"), |b| b[..b.len() / 3].to_vec());
    c.expect(&WEEK, 3, &["raw/salesforce/opportunity_history/", "Fix:"]);
    c.nothing_lost();
    // 3. An empty (zero-byte) Parquet file.
    let c = Case::new();
    std::fs::write(c.raw("account"), b"").unwrap();
    c.expect(&WEEK, 3, &["raw/salesforce/account/", "Fix:"]);
    c.nothing_lost();
    // 4. A wrong type: amount as text.
    let c = Case::new();
    c.rewrite("opportunity", "SELECT * EXCLUDE (amount), CAST(amount AS VARCHAR) AS amount FROM raw.opportunity");
    c.expect(&WEEK, 3, &["column amount", "but the contract says float", "Fix: land amount as float"]);
    c.nothing_lost();
    // 5. A missing required column.
    let c = Case::new();
    c.rewrite("opportunity", "SELECT * EXCLUDE (stage_name) FROM raw.opportunity");
    c.expect(&WEEK, 3, &["column stage_name", "Fix:"]);
    c.nothing_lost();
    // 6. Funnel, backtest and action refuse a lake that breaks its contract, as kpis and risk do.
    for args in [
        vec!["funnel", "--as-of", AS_OF],
        vec!["backtest", "--from", "2026-06-01", "--to", "2026-07-01"],
        vec!["action", "--from-tasks", "--as-of", AS_OF],
        vec!["risk", "--as-of", AS_OF],
        vec!["kpis", "--as-of", AS_OF],
    ] {
        c.expect(&args, 3, &["breaks its contract", "column stage_name"]);
    }
    c.nothing_lost();
}

#[test]
fn an_empty_lake_a_one_table_lake_and_a_missing_lake() {
    // 7. An empty lake (the folder exists, nothing landed).
    let dir = tempdir();
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let r = run(&empty, &WEEK);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("required table is missing") && r.stderr.contains("Fix: land"), "{}", r.stderr);
    assert!(!empty.join("output/_runs").exists(), "nothing published");
    // 8. A lake with only one table.
    let one = dir.path().join("one");
    copy_dir(&base().join("raw/salesforce/user"), &one.join("raw/salesforce/user"));
    let r = run(&one, &WEEK);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("table opportunity: required table is missing"), "{}", r.stderr);
    // 9. A lake path that does not exist: an error, and no folder, no demo made there.
    let missing = dir.path().join("lakes/dmeo");
    for args in [&WEEK[..], &["run"], &["validate"], &["query", "SELECT 1"]] {
        let r = run(&missing, args);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains("no lake at") && r.stderr.contains("does not exist"), "{}", r.stderr);
        assert!(!missing.exists(), "{args:?} created the mistyped lake folder");
    }
    // 10. An existing but empty folder is not turned into a demo either.
    let r = run(&empty, &["run"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("the demo lake is generated only at the default path"), "{}", r.stderr);
    assert!(!empty.join("raw").exists());
}

// ---- Bad values: the run goes on and each gets a data-quality row naming table, column and fix.

#[test]
fn bad_values_get_data_quality_rows() {
    let ids = query(base(), "SELECT id FROM raw.opportunity ORDER BY id LIMIT 3", None);
    let first_ids = format!("({})", ids.iter().map(|r| format!("'{}'", s(r, "id"))).collect::<Vec<_>>().join(", "));
    let cases: Vec<(&str, String, &str, &str, &str)> = vec![
        // 11. Duplicate ids.
        (
            "opportunity",
            format!("SELECT * FROM raw.opportunity UNION ALL SELECT * FROM raw.opportunity WHERE id IN {first_ids}"),
            "opportunity",
            "id",
            "duplicate_key",
        ),
        // 12. Orphan ids: deals of accounts that do not exist.
        (
            "opportunity",
            format!(
                "SELECT * EXCLUDE (account_id), CASE WHEN id IN {first_ids} THEN 'NO-SUCH-' || id ELSE account_id END AS account_id FROM raw.opportunity"
            ),
            "opportunity",
            "account_id",
            "orphan_reference",
        ),
        // 13. Future dates.
        (
            "opportunity",
            format!(
                "SELECT * EXCLUDE (created_date), CASE WHEN id IN {first_ids} THEN CAST('2031-01-01 00:00:00' AS TIMESTAMP) ELSE created_date END AS created_date FROM raw.opportunity"
            ),
            "opportunity",
            "created_date",
            "future_date",
        ),
        // 14. Absurd dates (a placeholder exported as a date).
        (
            "opportunity",
            format!(
                "SELECT * EXCLUDE (close_date), CASE WHEN id IN {first_ids} THEN DATE '1900-01-01' ELSE close_date END AS close_date FROM raw.opportunity"
            ),
            "opportunity",
            "close_date",
            "implausible_date",
        ),
        // 15. Negative amounts.
        (
            "opportunity",
            format!(
                "SELECT * EXCLUDE (amount), CASE WHEN id IN {first_ids} THEN -amount ELSE amount END AS amount FROM raw.opportunity"
            ),
            "opportunity",
            "amount",
            "negative_value",
        ),
        // 16. Huge amounts (cents exported as dollars, a test record).
        (
            "opportunity",
            format!(
                "SELECT * EXCLUDE (amount), CASE WHEN id IN {first_ids} THEN 1e13 ELSE amount END AS amount FROM raw.opportunity"
            ),
            "opportunity",
            "amount",
            "huge_value",
        ),
        // 17. Mixed currencies.
        (
            "opportunity",
            format!(
                "SELECT * EXCLUDE (currency_iso_code), CASE WHEN id IN {first_ids} THEN 'EUR' ELSE 'USD' END AS currency_iso_code FROM raw.opportunity"
            ),
            "opportunity",
            "currency_iso_code",
            "mixed_currency",
        ),
        // 18. A stage that is not in the stage catalog.
        (
            "opportunity",
            format!(
                "SELECT * EXCLUDE (stage_name), CASE WHEN id IN {first_ids} THEN 'Negotiation/Review' ELSE stage_name END AS stage_name FROM raw.opportunity"
            ),
            "opportunity",
            "stage_name",
            "orphan_reference",
        ),
        // 19. Nulls in a key.
        (
            "opportunity",
            format!(
                "SELECT * EXCLUDE (id), CASE WHEN id IN {first_ids} THEN NULL ELSE id END AS id FROM raw.opportunity"
            ),
            "opportunity",
            "id",
            "null_key",
        ),
    ];
    for (table, sql, t, col, check) in cases {
        let c = Case::new();
        c.rewrite(table, &sql);
        c.finding(t, col, check);
        c.nothing_lost();
    }
}

#[test]
fn a_data_quality_threshold_stops_the_cadence_with_exit_4() {
    // 20. Duplicate ids are error-level: on 50 of about 300 deals (over the weekly loop's
    // max_error_rate of 2%) the run stops before deal risk.
    let c = Case::new();
    c.rewrite(
        "opportunity",
        "SELECT * FROM raw.opportunity UNION ALL (SELECT * FROM raw.opportunity ORDER BY id LIMIT 50)",
    );
    c.expect(
        &WEEK,
        4,
        &[
            "data quality below the threshold of step data_quality",
            "opportunity.id duplicate_key (50 of",
            "max_error_rate",
        ],
    );
    c.nothing_lost();
    let list = c.expect(&["runs", "list"], 0, &["failed at data_quality"]);
    let line = list.stdout.lines().find(|l| l.contains(" 2026-W30 ")).expect("the stopped week is listed");
    assert!(line.contains(" 0/4 ") && line.ends_with("failed at data_quality"), "{}", list.stdout);
}

// ---- Bad declarations: exit 2, naming the file and what is wrong in it.

#[test]
fn malformed_declarations_name_the_file() {
    let c = Case::new();
    let root = c.lake.parent().unwrap().to_path_buf();
    // 21. A jobs file that is not TOML.
    let bad = write(&root, "weekly.toml", "cadence = \"weekly\"\n[[steps]\nname = ");
    c.expect(&["run", "weekly", "--as-of", AS_OF, "--spec", bad.to_str().unwrap()], 2, &["weekly.toml"]);
    // 22. A jobs file naming a job the engine does not have.
    let bad = write(&root, "weekly2.toml", "cadence = \"weekly\"\n[[steps]]\nname = \"x\"\njob = \"forecast\"\n");
    c.expect(&["run", "weekly", "--as-of", AS_OF, "--spec", bad.to_str().unwrap()], 2, &["weekly2.toml", "forecast"]);
    // 23. A jobs file declaring another cadence.
    let bad = write(&root, "weekly3.toml", "cadence = \"monthly\"\n[[steps]]\nname = \"x\"\njob = \"funnels\"\n");
    c.expect(
        &["run", "weekly", "--as-of", AS_OF, "--spec", bad.to_str().unwrap()],
        2,
        &["declares cadence = \"monthly\""],
    );
    // 24. A malformed playbook.
    let bad = write(&root, "playbook.toml", "version = \"v9\"\n[flags.single_threaded\nmin_contacts = 2\n");
    c.expect(&["risk", "--as-of", AS_OF, "--playbook", bad.to_str().unwrap()], 2, &["playbook.toml"]);
    // 25. A malformed lake profile (lake.toml in the lake root).
    std::fs::write(c.lake.join("lake.toml"), "[activity\ndirection = ").unwrap();
    c.expect(&WEEK, 2, &["lake.toml"]);
    std::fs::remove_file(c.lake.join("lake.toml")).unwrap();
    // 26. A date that is not a date.
    c.expect(&["run", "weekly", "--as-of", "2026-13-01"], 2, &["--as-of"]);
    c.nothing_lost();
}

// ---- Runs that cannot go ahead: a date before any data, a held lock, a full disk, a killed run.

#[test]
fn runs_that_cannot_go_ahead_say_why_and_publish_nothing() {
    let c = Case::new();
    // 27. An as-of date before any data.
    c.expect(
        &["run", "weekly", "--as-of", "2019-01-06"],
        2,
        &["is before any data in the lake", "first recorded deal change"],
    );
    c.nothing_lost();
    // 28. A lock held by a live process (this test's own pid stands in for a run in progress).
    let me = std::process::id();
    let start = std::fs::read_to_string(format!("/proc/{me}/stat")).unwrap();
    let start: u64 = start[start.rfind(')').unwrap() + 1..].split_whitespace().nth(19).unwrap().parse().unwrap();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_string();
    let lock = |pid: u32, host: &str, start: Option<u64>| {
        serde_json::json!({"token": "t", "command": "gtm-loop run weekly", "pid": pid, "host": host,
            "process_start": start, "since": "2026-12-01T08:00:00.000Z"})
        .to_string()
    };
    std::fs::write(c.lake.join("output/_lock.json"), lock(me, &host, Some(start))).unwrap();
    c.expect(&WEEK, 6, &["locked by a run in progress", &format!("pid {me} on host {host}"), "ago"]);
    // 29. A lock from another host: never broken, explained, `unlock --force` removes it.
    std::fs::write(c.lake.join("output/_lock.json"), lock(4242, "other-host-7", None)).unwrap();
    c.expect(&WEEK, 6, &["on another host", "other-host-7", "unlock --force"]);
    c.expect(&["unlock"], 2, &["Pass --force"]);
    c.expect(&["unlock", "--force"], 0, &["removed the lock"]);
    // 30. A lock file that is not a lock.
    std::fs::write(c.lake.join("output/_lock.json"), "garbage").unwrap();
    c.expect(&WEEK, 6, &["is not a lock file"]);
    std::fs::remove_file(c.lake.join("output/_lock.json")).unwrap();
    // 31. A full disk, part-way through the run (simulated: the put that passes the quota fails
    // as a write to a full device does).
    c.expect_env(&WEEK, &[("GTM_LOOP_DISK_QUOTA_BYTES", "40000")], 5, &["storage failure", "No space left on device"]);
    c.nothing_lost();
    // 32. A killed run, then the next one: the dead run's lock is taken over with a warning.
    let r = run_env(&c.lake, &WEEK, &[("GTM_LOOP_KILL_AT", "cadence:after:deal_risk")]);
    assert_ne!(r.code, 0);
    c.nothing_lost();
    c.expect(&WEEK, 0, &["taking over the lake's lock from a run that is no longer alive"]);
    // 33. A manifest that is not one (somebody's file in output/_runs): skipped with a warning.
    std::fs::write(c.lake.join("output/_runs/notes.json"), "{ not json").unwrap();
    let r = c.expect(&["runs", "list"], 0, &[]);
    assert!(r.stdout.contains("committed"), "{}", r.stdout);
    let q = run(&c.lake, &["query", "SELECT COUNT(*) FROM output.runs"]);
    assert!(q.code == 0 && q.stderr.contains("skipping output/_runs/notes.json"), "{}", q.stderr);
    c.nothing_lost();
    // 37. A lake that stopped syncing: the run goes ahead as of the date asked, and says so (on
    // stderr and in its manifest).
    let r = c.expect(
        &["run", "weekly", "--as-of", "2026-09-27"],
        0,
        &["59 days before the as-of date 2026-09-27", "still syncing"],
    );
    let id =
        r.stdout.lines().find(|l| l.starts_with("committed weekly run")).unwrap().split_whitespace().nth(3).unwrap();
    let shown = c.expect(&["runs", "show", id], 0, &[]);
    assert!(shown.stdout.contains("warning    the lake's latest deal change is on 2026-07-30"), "{}", shown.stdout);
    c.nothing_lost();
}
