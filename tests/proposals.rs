//! The learning loop closed: a fitted change is proposed, refused to a seller, approved by the
//! top of the org, rolled out with a holdout (the next run's manifest names vN+1, holdout deals
//! keep v1), read out later; kills during approval lose no record and leave none half-written;
//! `playbook diff` shows exactly the proposal's edits; and on lakes simulating the world after an
//! approval the readout's interval holds the planted effect, and finds none when none was planted.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::*;
use gtm_loop::jobs::risk::builtin_text;
use gtm_loop::learn::playbooks;
use gtm_loop::outputs::decision_log::record_id;
use gtm_loop::stats::experiment::is_treated;
use serde_json::Value;

/// The id the reweight proposal against the seed playbook gets on any lake: the finding and the
/// version it edits, not the fitted numbers.
fn reweight_id() -> String {
    record_id(&["proposal", "reweight", "risk_weights", &playbooks::hash(builtin_text())])
}

fn ok(lake: &Path, args: &[&str]) -> String {
    let r = run(lake, args);
    assert_eq!(r.code, 0, "{args:?} failed:\n{}\n{}", r.stderr, r.stdout);
    r.stdout
}

fn audit_records(lake: &Path) -> Vec<Value> {
    let dir = lake.join("log/audit");
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.ends_with(".json") {
            out.push(serde_json::from_slice(&std::fs::read(e.path()).unwrap()).expect("a whole record"));
        }
    }
    out
}

fn json_after(text: &str) -> Value {
    let start = text.find("\n{").map(|i| i + 1).expect("json in the output");
    serde_json::from_str(&text[start..]).expect("readout json")
}

fn scenario(root: &Path, key: &str, from: &str, effect: f64) -> String {
    let p = write(
        root,
        "scenario.toml",
        &format!(
            "from = \"{from}\"\nassignment_key = \"{key}\"\ntreated_share = 0.8\noutcome = \"won\"\neffect = {effect}\n"
        ),
    );
    p.display().to_string()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let t = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &t);
        } else {
            std::fs::copy(e.path(), t).unwrap();
        }
    }
}

#[test]
fn the_loop_closes_from_proposal_to_readout() {
    let dir = tempdir();
    let lake = dir.path().join("lake");
    let pid = reweight_id();
    let sc = scenario(dir.path(), &pid, "2026-09-30", 0.3);
    ok(
        &lake,
        &[
            "generate",
            "--opportunities",
            "3000",
            "--seed",
            "9",
            "--end",
            "2027-03-31",
            "--days",
            "910",
            "--scenario",
            &sc,
        ],
    );
    let models = ok(&lake, &["models", "--as-of", "2026-09-30"]);
    assert!(models.contains("the weekly risk job now scores with these weights"), "{models}");
    let run1 = ok(&lake, &["proposals", "run", "--as-of", "2026-09-30"]);
    assert!(run1.contains(&pid) && run1.contains("reweight [open]"), "{run1}");
    let brief = ok(&lake, &["proposals", "show", &pid[..8]]);
    let change_lines: Vec<&str> =
        brief.split("## The change\n\n```\n").nth(1).and_then(|s| s.split("```").next()).unwrap().lines().collect();
    assert!(change_lines.iter().any(|l| l.starts_with("~ flag.")), "{brief}");

    // Who may approve a company-wide change: the head of the company only.
    let users = query(
        &lake,
        "SELECT u.id, u.manager_id, (SELECT COUNT(*) FROM \"user\" r WHERE r.manager_id = u.id) AS reports FROM \"user\" u ORDER BY u.id",
        Some("2026-09-30"),
    );
    // (The JSON lines leave NULL columns out.)
    let has_manager = |u: &serde_json::Map<String, Value>| u.get("manager_id").is_some_and(|m| !m.is_null());
    let reports = |u: &serde_json::Map<String, Value>| u.get("reports").and_then(Value::as_i64).unwrap_or(0);
    let seller = users.iter().find(|u| reports(u) == 0 && has_manager(u)).unwrap();
    let top = users.iter().find(|u| !has_manager(u) && reports(u) > 0).unwrap();
    let manager = users.iter().find(|u| has_manager(u) && reports(u) > 0).unwrap();
    let refused = run(
        &lake,
        &["proposals", "approve", &pid, "--by", s(seller, "id"), "--note", "me", "--effective", "2026-09-30"],
    );
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(refused.stderr.contains("may not decide") && refused.stderr.contains(s(top, "id")), "{}", refused.stderr);
    let refused = run(&lake, &["proposals", "approve", &pid, "--by", s(manager, "id"), "--effective", "2026-09-30"]);
    assert_eq!(refused.code, 2, "a manager cannot approve company-wide: {}", refused.stderr);
    assert!(audit_records(&lake).is_empty(), "a refusal writes nothing");

    // Kills during approval, each on a copy of the lake: never a half record, never a lost one.
    for point in ["approve:before_playbook", "approve:after_playbook", "decision:mid_write", "approve:after_record"] {
        let copy = dir.path().join(format!("kill-{}", point.replace(':', "-")));
        copy_dir(&lake, &copy);
        let args =
            ["proposals", "approve", &pid, "--by", s(top, "id"), "--note", "kill test", "--effective", "2026-09-30"];
        let killed = run_env(&copy, &args, &[("GTM_LOOP_KILL_AT", point)]);
        assert_ne!(killed.code, 0, "{point}: the process should have died");
        let records = audit_records(&copy);
        let committed = point == "approve:after_record";
        assert_eq!(records.len(), usize::from(committed), "{point}: {records:?}");
        let listed = ok(&copy, &["proposals", "list"]);
        assert_eq!(listed.contains("approved by"), committed, "{point}: {listed}");
        let again = run(&copy, &args);
        if committed {
            assert_eq!(again.code, 2, "{point}: a second approval is refused: {}", again.stderr);
            assert!(again.stderr.contains("already approved"), "{}", again.stderr);
        } else {
            assert_eq!(again.code, 0, "{point}: the retry succeeds: {}", again.stderr);
        }
        assert_eq!(audit_records(&copy).len(), 1, "{point}: exactly one record in the end");
    }

    let approved = ok(
        &lake,
        &["proposals", "approve", &pid, "--by", s(top, "id"), "--note", "fits better", "--effective", "2026-09-30"],
    );
    assert!(approved.contains("approved") && approved.contains("v2"), "{approved}");
    let record = audit_records(&lake).pop().unwrap();
    let v2 = record["new_playbook"].as_str().unwrap().to_string();
    let v1 = playbooks::hash(builtin_text());
    assert_eq!(record["parent_playbook"], v1.as_str());
    let (treated, holdout): (BTreeSet<String>, BTreeSet<String>) = (
        record["treated"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect(),
        record["holdout"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect(),
    );
    // The assignment is the one the proposal id draws, and about 80/20.
    for u in &treated {
        assert!(is_treated(&pid, u, 0.8));
    }
    for u in &holdout {
        assert!(!is_treated(&pid, u, 0.8));
    }
    assert!(!holdout.is_empty() && treated.len() > holdout.len(), "{treated:?} {holdout:?}");

    // playbook diff v1 v2 is exactly the proposal's change; history says who, why, from what.
    let diff = ok(&lake, &["playbook", "diff", "v1", "v2"]);
    let diff_lines: Vec<&str> = diff.lines().skip(1).collect();
    assert_eq!(diff_lines, change_lines, "{diff}\n{brief}");
    let history = ok(&lake, &["playbook", "history"]);
    assert!(history.contains(&v2) && history.contains("fits better") && history.contains(&pid), "{history}");
    let shown = ok(&lake, &["playbook", "show"]);
    assert!(shown.starts_with("# Playbook v2: proposal") && shown.contains("version = \"v2\""), "{shown}");

    // The next weekly run uses v2 for the treated sellers, v1 for the holdout.
    let risk = ok(&lake, &["risk", "--as-of", "2026-10-05"]);
    assert!(risk.contains("holdout or out of scope"), "{risk}");
    let runs =
        query(&lake, "SELECT playbook_version FROM output.runs WHERE job = 'deal_risk' AND as_of = '2026-10-05'", None);
    assert!(runs[0]["playbook_version"].as_str().unwrap().contains(&v2), "{runs:?}");
    let logged = query(
        &lake,
        "SELECT owner_id, playbook_hash, COUNT(*) AS n FROM log.decision_trace WHERE as_of_date = '2026-10-05' \
         AND kind IN ('deal_flag', 'deal_score') GROUP BY owner_id, playbook_hash",
        None,
    );
    assert!(logged.len() > 5, "{logged:?}");
    for r in &logged {
        let want = if treated.contains(s(r, "owner_id")) { &v2 } else { &v1 };
        assert_eq!(s(r, "playbook_hash"), want, "{r:?}");
    }
    assert!(logged.iter().any(|r| s(r, "playbook_hash") == v1) && logged.iter().any(|r| s(r, "playbook_hash") == v2));
    // A backtest can pin the old version.
    let pinned = ok(&lake, &["risk", "--as-of", "2026-10-12", "--playbook-version", "v1"]);
    assert!(pinned.contains("pinned to playbook version"), "{pinned}");
    let runs =
        query(&lake, "SELECT playbook_version FROM output.runs WHERE as_of = '2026-10-12' AND job = 'deal_risk'", None);
    assert!(runs[0]["playbook_version"].as_str().unwrap().contains(&v1), "{runs:?}");

    // A later run reads the rollout out, logs it, and the decided proposal is not filed again.
    let later = ok(&lake, &["proposals", "run", "--as-of", "2027-03-31"]);
    assert!(later.contains(&format!("readout {pid}")), "{later}");
    assert!(!later.contains(&format!("{pid} reweight [open]")), "{later}");
    let readouts = query(&lake, "SELECT verdict, enough_by, treated_deals, holdout_deals FROM output.readouts", None);
    assert_eq!(readouts.len(), 1, "{readouts:?}");
    let verdict = s(&readouts[0], "verdict");
    assert!(["helped", "no detectable effect", "hurt", "not enough data yet"].contains(&verdict), "{verdict}");
    if verdict == "not enough data yet" {
        assert!(!readouts[0]["enough_by"].is_null(), "says when it will be enough: {readouts:?}");
    }
    let log = query(&lake, "SELECT outcome FROM log.decision_trace WHERE kind = 'readout'", None);
    assert_eq!(log.len(), 1, "{log:?}");
    let readout = json_after(&ok(&lake, &["proposals", "readout", &pid, "--as-of", "2027-03-31"]));
    assert_eq!(readout["verdict"], verdict);
}

/// Generates a 1095-day lake (12,000 deals, 100 sellers) whose treated sellers (under the proposal id `key`) win `effect`
/// of their deals outright from 2026-09-30, records an approval with that assignment, and reads
/// it out on 2027-09-30. Returns the readout and the true effect on the readout's deals.
fn simulated_readout(root: &Path, seed: u64, effect: f64) -> (Value, f64) {
    let lake = root.join(format!("lake-{seed}-{effect}"));
    let key = format!("seed-proposal-{seed}");
    let sc = scenario(root, &key, "2026-09-30", effect);
    ok(
        &lake,
        &[
            "generate",
            "--opportunities",
            "12000",
            "--seed",
            &seed.to_string(),
            "--end",
            "2027-09-30",
            "--days",
            "1095",
            "--usage-days",
            "7",
            "--scenario",
            &sc,
        ],
    );
    let users = query(&lake, "SELECT id FROM \"user\" ORDER BY id", Some("2026-09-30"));
    let (mut treated, mut holdout) = (Vec::new(), Vec::new());
    for u in &users {
        let id = s(u, "id").to_string();
        if is_treated(&key, &id, 0.8) { treated.push(id) } else { holdout.push(id) }
    }
    // The approval as `proposals approve` records it (the rollout's assignment is what matters).
    let record = serde_json::json!({
        "record_id": record_id(&["decision", &key]), "decision": "approved", "proposal_id": key,
        "proposal_hash": "test", "by_user": "test", "by_name": "test", "decided_at": "2026-09-30T00:00:00Z",
        "why": "simulated", "scope": "company", "parent_playbook": playbooks::hash(builtin_text()),
        "changes": [], "new_playbook": playbooks::hash(builtin_text()), "new_label": "v1",
        "effective_from": "2026-09-30", "treated_share": 0.8, "treated": treated, "holdout": holdout,
        "code_version": "test",
    });
    write(&lake, "log/audit/20260930-test.json", &record.to_string());
    let readout = json_after(&ok(&lake, &["proposals", "readout", &key, "--as-of", "2027-09-30"]));
    // The true effect: each treated deal created in the readout's window, won within 120 days
    // with the effect minus without it (the generator's own counterfactual), averaged.
    let truth = std::fs::read_to_string(lake.join("truth_scenario.csv")).unwrap();
    let within = |created: &str, won: &str| -> f64 {
        if won.is_empty() {
            return 0.0;
        }
        let (c, w) = (created.parse::<chrono::NaiveDate>().unwrap(), won.parse::<chrono::NaiveDate>().unwrap());
        f64::from(u8::from((w - c).num_days() < 120))
    };
    let last = "2027-06-02"; // 2027-09-30 minus the 120-day horizon
    let rows: Vec<f64> = truth
        .lines()
        .skip(1)
        .filter_map(|l| {
            let c: Vec<&str> = l.split(',').collect();
            (c[2] <= last).then(|| within(c[2], c[4]) - within(c[2], c[3]))
        })
        .collect();
    (readout, rows.iter().sum::<f64>() / rows.len().max(1) as f64)
}

#[test]
fn a_planted_effect_is_inside_the_readout_interval() {
    let dir = tempdir();
    let seeds = [1u64, 2, 3, 4, 5];
    let mut inside = 0;
    for seed in seeds {
        let (r, truth) = simulated_readout(dir.path(), seed, 0.3);
        let (lo, hi) = (r["low"].as_f64().unwrap(), r["high"].as_f64().unwrap());
        eprintln!(
            "seed {seed}: planted {truth:.3}, estimate {} [{lo:.3}, {hi:.3}], verdict {}",
            r["estimate"], r["verdict"]
        );
        assert!(truth > 0.1, "the scenario plants a real effect: {truth}");
        inside += usize::from(lo <= truth && truth <= hi);
        assert_eq!(r["design"], "holdout");
        assert!(r["cuped_theta"].is_number() && r["minimum_detectable_effect"].as_f64().unwrap() < 0.1, "{r}");
    }
    // 95% intervals: 4 of 5 or better happens with probability 0.977 when they are honest.
    assert!(inside >= seeds.len() - 1, "{inside} of {} intervals held the planted effect", seeds.len());
}

#[test]
fn no_planted_effect_reads_no_detectable_effect() {
    let dir = tempdir();
    let seeds: Vec<u64> = (101..121).collect();
    let mut none = 0;
    for &seed in &seeds {
        let (r, truth) = simulated_readout(dir.path(), seed, 0.0);
        assert_eq!(truth, 0.0);
        eprintln!("seed {seed}: {} [{}, {}] {}", r["estimate"], r["low"], r["high"], r["verdict"]);
        none += usize::from(r["verdict"] == "no detectable effect");
    }
    assert!(none * 100 >= seeds.len() * 95, "{none} of {} null lakes read 'no detectable effect'", seeds.len());
}

#[test]
fn a_readout_the_lake_cannot_measure_says_so_and_the_run_goes_on() {
    // A lake without the stage catalog (and no stages declared in a lake profile) cannot say when
    // a deal was won: the rollout's readout is a row that says so, and `proposals run` publishes.
    let dir = tempdir();
    let lake = dir.path().join("lake");
    ok(&lake, &["generate", "--opportunities", "600"]);
    std::fs::remove_dir_all(lake.join("raw/salesforce/opportunity_stage")).unwrap();
    let key = "no-stages-rollout";
    let record = serde_json::json!({
        "record_id": record_id(&["decision", key]), "decision": "approved", "proposal_id": key,
        "proposal_hash": "test", "by_user": "test", "by_name": "test", "decided_at": "2026-03-01T00:00:00Z",
        "why": "simulated", "scope": "company", "parent_playbook": playbooks::hash(builtin_text()),
        "changes": [], "new_playbook": playbooks::hash(builtin_text()), "new_label": "v1",
        "effective_from": "2026-03-01", "treated_share": 0.8, "treated": ["U1"], "holdout": ["U2"],
        "code_version": "test",
    });
    write(&lake, "log/audit/20260301-test.json", &record.to_string());
    let readout = json_after(&ok(&lake, &["proposals", "readout", key, "--as-of", "2026-06-28"]));
    assert_eq!(readout["verdict"], "cannot be measured", "{readout}");
    assert!(readout["sentence"].as_str().unwrap().contains("opportunity_stage"), "names the table: {readout}");
    let out = ok(&lake, &["proposals", "run", "--as-of", "2026-06-28"]);
    assert!(out.contains("1 readouts") || out.contains(", 1 readout"), "{out}");
    let rows = query(&lake, "SELECT verdict FROM output.readouts WHERE as_of_date = '2026-06-28'", None);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(s(&rows[0], "verdict"), "cannot be measured");
}
