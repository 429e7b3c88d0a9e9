//! The demo lake: deterministic, in the contract, and its truth file agrees with what the lake
//! itself shows when queried (the planted effect is found by SQL written here, not by the generator).

mod common;
use std::collections::BTreeMap;
use std::path::Path;

use common::*;

fn files(root: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.insert(p.strip_prefix(base).unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

#[test]
fn same_seed_same_bytes_other_seed_other_lake() {
    let (a, b, c) = (tempdir(), tempdir(), tempdir());
    for (dir, seed) in [(&a, "7"), (&b, "7"), (&c, "8")] {
        let r = run(dir.path(), &["generate", "--opportunities", "600", "--seed", seed]);
        assert_eq!(r.code, 0, "{}", r.stderr);
    }
    let (fa, fb, fc) = (files(a.path()), files(b.path()), files(c.path()));
    assert!(fa.len() > 15);
    assert!(fa == fb, "same seed must give the same files");
    assert_ne!(
        fa.get("raw/salesforce/opportunity/part-00000.parquet"),
        fc.get("raw/salesforce/opportunity/part-00000.parquet")
    );
}

#[test]
fn the_main_command_generates_validates_runs_risk_funnels_and_kpis_once() {
    let cwd = tempdir();
    // The demo is generated only at the default path, never into a lake folder given by hand.
    let elsewhere = run(&cwd.path().join("mistyped"), &["run", "--opportunities", "300"]);
    assert_eq!(elsewhere.code, 2, "{}", elsewhere.stderr);
    assert!(
        elsewhere.stderr.contains("no lake at") && elsewhere.stderr.contains("does not exist"),
        "{}",
        elsewhere.stderr
    );
    assert!(!cwd.path().join("mistyped").exists(), "a mistyped lake path is not created");
    let first = run_in(cwd.path(), &["run", "--opportunities", "300"]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert!(first.stderr.contains("generating the demo lake"), "{}", first.stderr);
    assert!(first.stdout.contains("data quality:") && first.stdout.contains("published run"), "{}", first.stdout);
    let lake = cwd.path().join("lakes/demo");
    let second = run(&lake, &["run"]);
    assert_eq!(second.code, 0);
    assert!(!second.stderr.contains("generating"), "an existing lake is not regenerated");
    assert!(
        first.stdout.contains("journey sales_led") && first.stdout.contains("journey self_serve"),
        "{}",
        first.stdout
    );
    let runs = query(&lake, "SELECT job, COUNT(*) AS n FROM output.runs GROUP BY 1 ORDER BY 1", None);
    let runs: Vec<(&str, f64)> = runs.iter().map(|r| (s(r, "job"), f(r, "n"))).collect();
    // The weekly risk run publishes momentum beside it.
    assert_eq!(runs, [("deal_risk", 2.0), ("funnel", 2.0), ("kpis", 2.0), ("momentum", 2.0), ("validate", 2.0)]);
    // The as-of date comes from the data (the last deal change), said, so both runs used the same
    // one: the second logs no intervention twice.
    assert!(first.stdout.contains("as of 2026-09-30: the lake's latest recorded deal change"), "{}", first.stdout);
    assert!(first.stdout.contains("report: output/_artifacts/as_of=2026-09-30/"), "{}", first.stdout);
    assert!(second.stdout.contains("(0 new records in log/decision_trace)"), "{}", second.stdout);
    assert!(second.stdout.contains("\n0 new records in log/decision_trace"), "{}", second.stdout);
    // The deal-risk section made it into the leadership report.
    assert!(first.stdout.contains("**Deal risk**:"), "{}", first.stdout);
}

#[test]
fn truth_file_matches_the_lake_and_the_planted_slip_effect_is_found_by_sql() {
    let dir = tempdir();
    let lake = dir.path();
    let r = run(lake, &["generate", "--opportunities", "5000"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let truth: serde_json::Value = serde_json::from_slice(&std::fs::read(lake.join("truth.json")).unwrap()).unwrap();
    assert_eq!(run(lake, &["validate"]).code, 0);

    // Row counts as landed.
    for (table, n) in truth["row_counts"].as_object().unwrap() {
        let got = query(lake, &format!("SELECT COUNT(*) AS n FROM raw.\"{table}\""), None);
        assert_eq!(got[0]["n"], *n, "{table}");
    }
    // Each planted defect is reported with exactly the planted count.
    let m = &truth["messiness"];
    let dq = |table: &str, column: Option<&str>, check: &str| -> f64 {
        let col = column.map(|c| format!("AND column_name = '{c}'")).unwrap_or_default();
        let rows = query(
            lake,
            &format!(
                "SELECT COALESCE(SUM(\"count\"), 0) AS n FROM output.data_quality WHERE table_name = '{table}' {col} AND \"check\" = '{check}'"
            ),
            None,
        );
        f(&rows[0], "n")
    };
    let planted = |k: &str| m[k]["count"].as_f64().unwrap();
    assert!(planted("duplicate_contacts") > 0.0);
    assert_eq!(dq("contact", Some("email"), "duplicate_entity"), planted("duplicate_contacts"));
    assert_eq!(dq("account", Some("industry"), "inconsistent_spelling"), planted("industry_spelling_variants"));
    assert_eq!(
        dq("opportunity", Some("lead_source"), "inconsistent_spelling"),
        planted("opportunity_lead_source_variants")
    );
    assert_eq!(dq("opportunity", Some("amount"), "negative_value"), planted("negative_amounts"));
    assert_eq!(dq("opportunity", Some("currency_iso_code"), "mixed_currency"), planted("eur_opportunities"));
    assert_eq!(dq("opportunity_contact_role", Some("contact_id"), "orphan_reference"), planted("orphan_contact_roles"));
    assert_eq!(dq("task", Some("created_date"), "future_date"), planted("future_dated_tasks"));
    assert_eq!(dq("opportunity_line_item", None, "duplicate_key"), planted("duplicate_line_item_rows"));
    let nulls = query(lake, "SELECT COUNT(*) AS n FROM lead WHERE lead_source IS NULL", None);
    assert_eq!(f(&nulls[0], "n"), planted("lead_source_nulls"));
    // Deleted deals are in raw and gone from staging.
    let deleted = query(lake, "SELECT COUNT(*) AS n FROM raw.opportunity WHERE is_deleted", None);
    assert_eq!(f(&deleted[0], "n"), planted("deleted_opportunities"));
    let staged = query(lake, "SELECT COUNT(*) AS n FROM opportunity", None);
    assert_eq!(
        f(&staged[0], "n"),
        truth["row_counts"]["opportunity"].as_f64().unwrap() - planted("deleted_opportunities")
    );

    // Single-threaded deals slip after Demo about 2.4x as often: found from history and roles alone.
    let slip = query(
        lake,
        "WITH roles AS (SELECT opportunity_id, COUNT(*) AS n FROM opportunity_contact_role GROUP BY 1),
         demo AS (SELECT opportunity_id, MIN(created_date) AS demo_at FROM opportunity_history WHERE stage_name = 'Demo' GROUP BY 1),
         h AS (SELECT opportunity_id, created_date, stage_name, close_date,
                 LAG(close_date) OVER (PARTITION BY opportunity_id ORDER BY created_date, id) AS prev_close
               FROM opportunity_history),
         slipped AS (SELECT DISTINCT h.opportunity_id FROM h JOIN demo d ON d.opportunity_id = h.opportunity_id
                     WHERE h.created_date > d.demo_at AND h.close_date > h.prev_close
                       AND h.stage_name NOT IN ('Closed Won', 'Closed Lost'))
         SELECT CASE WHEN r.n = 1 THEN 'single' ELSE 'multi' END AS threading, COUNT(*) AS deals,
                COUNT(s.opportunity_id) AS slipped
         FROM demo d JOIN roles r ON r.opportunity_id = d.opportunity_id
         LEFT JOIN slipped s ON s.opportunity_id = d.opportunity_id GROUP BY 1 ORDER BY 1",
        None,
    );
    let rate = |row: &serde_json::Map<String, serde_json::Value>| f(row, "slipped") / f(row, "deals");
    let (multi, single) = (&slip[0], &slip[1]);
    assert_eq!((s(multi, "threading"), s(single, "threading")), ("multi", "single"));
    assert!(f(single, "deals") > 400.0 && f(multi, "deals") > 800.0, "{slip:?}");
    let ratio = rate(single) / rate(multi);
    assert!((1.9..=3.0).contains(&ratio), "planted 2.4x, SQL finds {ratio:.2}: {slip:?}");
    // The generator's own tally of the effect agrees with the planted ratio too.
    let realised = truth["effects"]["single_threaded_slip_after_demo"]["realised"]["ratio"].as_f64().unwrap();
    assert!((ratio - realised).abs() < 0.35, "SQL {ratio:.2} vs generator {realised:.2}");
}
