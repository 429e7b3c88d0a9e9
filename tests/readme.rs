//! Every command of the README's "What you can do" block, run as written (smaller lakes, a shorter
//! backtest) and checked against what it prints: row counts, finding counts, KPI and intervention
//! counts, each compared with the same number read another way.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::*;

/// The README's commands: the `gtm-loop ...` lines of the sh block under "## What you can do",
/// without their comments, split like a shell would (double quotes only).
fn readme_commands() -> Vec<Vec<String>> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = readme.split("## What you can do").nth(1).expect("the README has a 'What you can do' section");
    let block = section.split("```sh").nth(1).and_then(|b| b.split("```").next()).expect("an sh block");
    block
        .lines()
        .filter(|l| l.starts_with("gtm-loop "))
        .map(|l| {
            let mut words = Vec::new();
            let (mut word, mut quoted, mut started) = (String::new(), false, false);
            for c in l.chars() {
                match c {
                    '"' => {
                        quoted = !quoted;
                        started = true;
                    }
                    '#' if !quoted && !started => break,
                    ' ' if !quoted => {
                        if started {
                            words.push(std::mem::take(&mut word));
                            started = false;
                        }
                    }
                    _ => {
                        word.push(c);
                        started = true;
                    }
                }
            }
            if started {
                words.push(word);
            }
            words.remove(0);
            words
        })
        .collect()
}

fn count(lake: &Path, sql: &str, as_of: Option<&str>) -> i64 {
    let rows = query(lake, &format!("SELECT COUNT(*) AS n FROM ({sql}) AS q"), as_of);
    f(&rows[0], "n") as i64
}

/// `  name   123 rows` lines of a command's output.
fn row_lines(out: &str) -> BTreeMap<String, i64> {
    out.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let (name, n, unit) = (w.next()?, w.next()?, w.next()?);
            (unit == "rows").then(|| Some((name.to_string(), n.parse().ok()?)))?
        })
        .collect()
}

fn arg<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).map(String::as_str)
}

/// A Python with duckdb for `bench --duckdb`: $GTM_LOOP_DUCKDB_PYTHON (.ci/run sets it). Without it
/// the DuckDB side is left out, loudly; under CI=true that fails.
fn duckdb_python() -> Option<String> {
    if let Ok(p) = std::env::var("GTM_LOOP_DUCKDB_PYTHON") {
        return Some(p);
    }
    assert!(
        std::env::var("CI").map_or(true, |v| v != "true"),
        "CI=true but GTM_LOOP_DUCKDB_PYTHON is not set: the README's bench --duckdb cannot be checked"
    );
    eprintln!("SKIPPED: bench --duckdb's DuckDB side (set GTM_LOOP_DUCKDB_PYTHON to a python with duckdb)");
    None
}

#[test]
fn every_readme_command_runs_and_prints_figures_that_check_out() {
    let commands = readme_commands();
    assert!(commands.len() >= 18, "{commands:?}");
    let root = tempdir();
    let mut lakes: BTreeMap<&str, PathBuf> =
        ["big", "sf", "null", "maven", "bench"].iter().map(|n| (*n, root.path().join(n))).collect();
    // The set-up command makes the demo lake, at the default path, that the commands without
    // --lake read.
    lakes.insert("demo", root.path().join("lakes/demo"));
    let setup = run_in(root.path(), &["run", "--opportunities", "1500"]);
    assert_eq!(setup.code, 0, "{}", setup.stderr);
    let mut checked = Vec::new();
    for words in commands {
        let mut args: Vec<String> = Vec::new();
        let mut lake = lakes["demo"].clone();
        let mut i = 0;
        while i < words.len() {
            match words[i].as_str() {
                "--lake" => {
                    let name = words[i + 1].trim_start_matches("lakes/");
                    lake = lakes.get(name).unwrap_or_else(|| panic!("README lake {name}")).clone();
                    i += 2;
                    continue;
                }
                // Smaller lakes than the README's, same commands.
                "--opportunities" => args.extend(["--opportunities".to_string(), "1500".into()]),
                // The bench once at the smallest scale, the units DuckDB runs beside (a smoke test:
                // its times are never asserted; BENCHMARKS.md holds the measured ones).
                "--scales" => args.extend(
                    ["--scales", "1500", "--unit", "staging", "--unit", "funnel", "--unit", "funnel (sales-led)"]
                        .iter()
                        .map(|a| a.to_string()),
                ),
                "--report" => {
                    args.extend(["--report".to_string(), root.path().join(&words[i + 1]).to_string_lossy().into()])
                }
                "--duckdb" => {
                    if let Some(p) = duckdb_python() {
                        args.extend(["--duckdb".to_string(), p]);
                    }
                }
                "--source" => {
                    let Some(src) = shared_data(Path::new(&words[i + 1]).file_name().unwrap().to_str().unwrap()) else {
                        return;
                    };
                    args.extend(["--source".to_string(), src.to_string_lossy().into()]);
                }
                "--out" => args.extend(["--out".to_string(), root.path().join(&words[i + 1]).to_string_lossy().into()]),
                // Walk-forward over the last 8 weeks of the README's range (each week is a full
                // deal-risk run: the whole range takes minutes).
                "--from" if words[0] == "backtest" => args.extend(["--from".to_string(), "2026-06-01".into()]),
                "--deal" => {
                    let flagged = query(
                        &lake,
                        "SELECT opportunity_id FROM output.deal_risk_flags WHERE as_of_date = '2026-06-29' ORDER BY opportunity_id LIMIT 1",
                        None,
                    );
                    args.extend(["--deal".to_string(), s(&flagged[0], "opportunity_id").to_string()]);
                }
                _ => {
                    args.push(words[i].clone());
                    i += 1;
                    continue;
                }
            }
            i += 2;
        }
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = run(&lake, &argv);
        assert_eq!(r.code, 0, "gtm-loop {argv:?}\n{}\n{}", r.stdout, r.stderr);
        let as_of = arg(&args, "--as-of");
        match (argv[0], argv.get(1).copied()) {
            ("generate", _) | ("import", _) => {
                // Each table it says it wrote holds that many rows when read back through raw.
                let wrote = row_lines(&r.stdout);
                assert!(wrote.len() >= 7, "{}", r.stdout);
                for (table, n) in wrote {
                    assert_eq!(count(&lake, &format!("SELECT * FROM raw.{table}"), None), n, "{table}");
                }
                if argv[0] == "import" {
                    // Maven's sales_pipeline.csv: one opportunity per line after the header.
                    let csv = std::fs::read_to_string(Path::new(&args[3]).join("sales_pipeline.csv")).unwrap();
                    let lines = csv.lines().filter(|l| !l.trim().is_empty()).count() as i64 - 1;
                    assert_eq!(count(&lake, "SELECT * FROM raw.opportunity", None), lines);
                }
            }
            ("validate", _) => {
                let line = r.stdout.lines().find(|l| l.starts_with("data quality:")).expect("summary line");
                let n: Vec<i64> = line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
                for (sev, expected) in ["error", "warning", "info"].iter().zip(&n) {
                    let sql = format!(
                        "SELECT * FROM output.data_quality WHERE severity = '{sev}' AND as_of_date = '{}'",
                        as_of.unwrap()
                    );
                    assert_eq!(count(&lake, &sql, None), *expected, "{sev}: {line}");
                }
                assert!(r.stdout.contains("lake profile: "), "{}", r.stdout);
            }
            ("tables", _) => {
                let listed = row_lines(&r.stdout);
                for t in ["raw.opportunity", "staging.opportunity", "staging.lead", "staging.task", "mart.deal"] {
                    assert_eq!(listed[t], count(&lake, &format!("SELECT * FROM {t}"), as_of), "{t}");
                }
                assert!(listed["staging.task"] > 1000, "{listed:?}");
            }
            ("describe", _) => {
                let n = count(&lake, "SELECT * FROM staging.opportunity", None);
                assert!(r.stdout.starts_with(&format!("staging.opportunity: {n} rows")), "{}", r.stdout);
            }
            ("query", _) if argv.contains(&"--out") => {
                let file = std::fs::read_to_string(arg(&args, "--out").unwrap()).unwrap();
                // Findings are one line each unless a field holds a newline; count CSV records.
                let n = count(&lake, "SELECT * FROM output.data_quality", None);
                let mut records = 0;
                let mut open_quote = false;
                for line in file.lines() {
                    if !open_quote {
                        records += 1;
                    }
                    if line.matches('"').count() % 2 == 1 {
                        open_quote = !open_quote;
                    }
                }
                assert_eq!(records, n + 1, "header + one record per finding");
            }
            ("query", Some(sql)) => {
                // "N rows" under the table: the same statement's row count, read as JSON.
                let n = query(&lake, sql, as_of).len();
                assert!(r.stdout.trim_end().ends_with(&format!("{n} rows")), "{sql}: {}", r.stdout);
                assert!(n > 0, "{sql}");
            }
            ("funnel", _) => {
                let lead = r.stdout.lines().find(|l| l.trim_start().starts_with("Lead ")).expect("the Lead step");
                let entered: i64 = lead.split_whitespace().nth(1).unwrap().parse().unwrap();
                assert_eq!(entered, count(&lake, "SELECT * FROM staging.lead", as_of));
                let by = format!(
                    "SELECT * FROM output.funnel_breakdown WHERE dimension = 'status' AND as_of_date = '{}'",
                    as_of.unwrap()
                );
                assert!(count(&lake, &by, None) > 0);
            }
            ("kpis", _) => {
                let line = r.stdout.lines().find(|l| l.contains(" KPI values, ")).expect("the KPI count line");
                let n: Vec<i64> = line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
                let on = format!("WHERE as_of_date = '{}'", as_of.unwrap());
                assert_eq!(n[0], count(&lake, &format!("SELECT * FROM output.kpi_values {on}"), None), "{line}");
                assert_eq!(n[1], count(&lake, &format!("SELECT * FROM output.kpi_interventions {on}"), None), "{line}");
            }
            ("risk", _) => {
                let open: i64 =
                    r.stdout.split(" open deals").next().unwrap().rsplit(' ').next().unwrap().parse().unwrap();
                let on = format!("WHERE as_of_date = '{}'", as_of.unwrap());
                assert_eq!(open, count(&lake, &format!("SELECT * FROM output.deal_risk {on}"), None));
                let staged = "SELECT * FROM staging.opportunity WHERE NOT COALESCE(is_closed, false)";
                assert_eq!(open, count(&lake, staged, as_of));
            }
            ("action", _) => {
                let n: i64 = r.stdout.split_whitespace().next().unwrap().parse().unwrap();
                assert!(n >= 1, "{}", r.stdout);
                let logged = "SELECT * FROM log.decision_trace WHERE kind = 'action_taken'";
                assert!(count(&lake, logged, None) >= n);
            }
            ("backtest", _) => {
                // "flagged deal-weeks: 69.5% (95% CI 68.4-70.6%, 4532/6519)": the share is k/n.
                let line = r.stdout.lines().find(|l| l.starts_with("flagged deal-weeks:")).expect("flagged line");
                let pct: f64 = line.split_whitespace().nth(2).unwrap().trim_end_matches('%').parse().unwrap();
                let frac = line.rsplit(", ").next().unwrap().trim_end_matches(')');
                let (k, n) = frac.split_once('/').unwrap();
                let (k, n): (f64, f64) = (k.parse().unwrap(), n.parse().unwrap());
                assert!(n > 0.0 && (100.0 * k / n - pct).abs() < 0.051, "{line}");
                assert!(r.stdout.contains("AUC"), "{}", r.stdout);
            }
            ("patterns", _) => {
                // "outcome patterns: 412 tests (Benjamini-Hochberg at q = 0.05), 9 significant"
                let line = r.stdout.lines().find(|l| l.starts_with("outcome patterns:")).expect("patterns line");
                let n: Vec<i64> = line.split_whitespace().filter_map(|w| w.trim_matches(',').parse().ok()).collect();
                let on = format!("FROM output.patterns WHERE as_of_date = '{}'", as_of.unwrap());
                assert_eq!(n[0], count(&lake, &format!("SELECT * {on} AND tested"), None), "{line}");
                assert_eq!(n[1], count(&lake, &format!("SELECT * {on} AND significant"), None), "{line}");
                assert_eq!(n[1], count(&lake, &format!("SELECT * {on} AND finding IS NOT NULL"), None), "{line}");
            }
            ("models", _) => {
                // "published a win probability for 214 open deals": one per deal open that day.
                let line =
                    r.stdout.lines().find(|l| l.starts_with("published a win probability")).expect("models line");
                let n: i64 = line.split_whitespace().find_map(|w| w.parse().ok()).unwrap();
                let on = format!("WHERE as_of_date = '{}'", as_of.unwrap());
                assert_eq!(n, count(&lake, &format!("SELECT * FROM output.win_probability {on}"), None));
                let staged = "SELECT * FROM staging.opportunity WHERE NOT COALESCE(is_closed, false)";
                assert_eq!(n, count(&lake, staged, as_of));
                assert!(r.stdout.contains("stage only") && r.stdout.contains("AUC"), "{}", r.stdout);
            }
            ("contract", _) => {
                let doc =
                    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("data/contract/CONTRACT.md"))
                        .unwrap();
                assert_eq!(r.stdout, doc);
            }
            ("bench", _) => {
                assert!(r.stdout.contains("staging") && r.stdout.contains("funnel"), "{}", r.stdout);
                if argv.contains(&"--duckdb") {
                    // The bench fails unless DuckDB's counts (and the funnel's every published
                    // cell) equal ours; both are listed.
                    assert!(r.stdout.contains("same counts (12 tables"), "{}", r.stdout);
                    assert!(r.stdout.contains("cells (steps and breakdowns, counts and days)"), "{}", r.stdout);
                }
                let report = root.path().join("BENCHMARKS-run");
                let md = std::fs::read_to_string(report.with_extension("md")).unwrap();
                assert!(md.contains("| 1500 | staging |"), "{md}");
                let svg = std::fs::read_to_string(report.with_extension("svg")).unwrap();
                assert!(svg.starts_with("<svg") && svg.contains("polyline"), "{svg}");
            }
            ("proposals", _) if argv[1] == "run" => {
                // "1 proposals, 0 readouts (0 new log records)": the rows published for the date.
                let line = r.stdout.lines().find(|l| l.contains(" proposals, ")).expect("summary line");
                let n: i64 = line.split_whitespace().next().unwrap().parse().unwrap();
                let on = format!("WHERE as_of_date = '{}'", as_of.unwrap());
                assert_eq!(n, count(&lake, &format!("SELECT * FROM output.proposals {on}"), None), "{line}");
                assert!(r.stdout.contains("reweight"), "says what became of the reweight: {}", r.stdout);
            }
            ("proposals", _) => {
                let listed =
                    r.stdout.lines().filter(|l| l.contains("  reweight ") || l.contains("  rollback ")).count() as i64;
                let all = "SELECT DISTINCT proposal_id FROM output.proposals";
                let published = if listed == 0 { 0 } else { count(&lake, all, None) };
                assert_eq!(listed, published, "{}", r.stdout);
                assert!(listed > 0 || r.stdout.contains("no proposals yet"), "{}", r.stdout);
            }
            ("playbook", _) => {
                let seed = gtm_loop::learn::playbooks::hash(gtm_loop::jobs::risk::builtin_text());
                assert!(r.stdout.starts_with(&format!("v1 {seed}")), "{}", r.stdout);
            }
            ("run", Some("weekly")) => {
                // "committed weekly run <id> (2026-W26, as of 2026-06-28): 3 steps in 4.2 s"
                let line = r.stdout.lines().find(|l| l.starts_with("committed weekly run")).expect("commit line");
                let id = line.split_whitespace().nth(3).unwrap();
                let on = format!("WHERE as_of_date = '{}'", as_of.unwrap());
                let staged = "SELECT * FROM staging.opportunity WHERE NOT COALESCE(is_closed, false)";
                assert_eq!(
                    count(&lake, &format!("SELECT * FROM output.deal_risk {on}"), None),
                    count(&lake, staged, as_of)
                );
                let shown = run(&lake, &["--json", "runs", "show", id]);
                let manifest: serde_json::Value = serde_json::from_str(&shown.stdout).expect("manifest json");
                assert_eq!(manifest["status"], "committed", "{line}");
            }
            ("runs", _) => {
                // One line per cadence run under the header, as many as the manifests say.
                let json = run(&lake, &["--json", "runs", "list"]);
                let n = json.stdout.lines().filter(|l| !l.trim().is_empty()).count();
                let listed = r.stdout.lines().skip(1).take_while(|l| !l.trim().is_empty()).count();
                assert!(n >= 1 && listed == n, "{}", r.stdout);
            }
            (other, _) => panic!("the README's {other} command has no check here: add one"),
        }
        checked.push(argv[0].to_string());
    }
    for cmd in [
        "generate",
        "validate",
        "tables",
        "describe",
        "query",
        "import",
        "funnel",
        "kpis",
        "risk",
        "action",
        "backtest",
        "patterns",
        "models",
        "contract",
        "bench",
        "proposals",
        "playbook",
        "run",
        "runs",
    ] {
        assert!(checked.iter().any(|c| c == cmd), "{cmd} not in the README's commands");
    }
}
