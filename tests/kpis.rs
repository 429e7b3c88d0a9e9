//! The KPI job: a hand-built org and deals where every value and severity is worked out below,
//! Maven's CRM against figures computed from its CSVs, re-runs that change nothing, and the
//! leadership report rendered by headless Chromium.

mod common;
use common::*;

type Row = serde_json::Map<String, serde_json::Value>;

/// A catalog with one primary KPI (won deals, a total, historical target) and one diagnostic (win
/// rate by count, fixed target 50%, min_n 2), so every number below can be worked out by hand.
const CATALOG: &str = r#"
version = "test-1"

[[kpi]]
id = "won_deals"
name = "Won deals"
stage = "Outcomes"
domain = "Bookings"
primary = true
kind = "total"
unit = "count"
direction = "higher"
grain = "month"
needs = ["opportunity"]
target = { kind = "historical", lookback = 3, tolerance = 0.1 }
sql = "SELECT owner_id, close_date AS day, 1.0 AS numerator, 1.0 AS denominator, 1 AS n FROM mart.deal WHERE is_won"
[kpi.card]
question = "Are we winning deals?"
success = "As many wins as usual."
inspection = ["Which deals slipped?"]
action = "{owner} reviews the open deals of {unit} with each seller"
cadence = "monthly"
owner_level = "manager"
measurability = "reportable"

[[kpi]]
id = "win_rate"
name = "Win rate"
stage = "Outcomes"
domain = "Bookings"
kind = "ratio"
rate = true
unit = "percent"
direction = "higher"
grain = "month"
min_n = 2
needs = ["opportunity"]
target = { kind = "fixed", value = 0.5 }
sql = """
SELECT owner_id, close_date AS day, CASE WHEN is_won THEN 1.0 ELSE 0.0 END AS numerator, 1.0 AS denominator, 1 AS n
FROM mart.deal WHERE is_closed
"""
"#;

const JOB: &str = r#"
catalog = "catalog.toml"
grains = ["month"]
[severity]
min_history = 2
repeat_window = 3
repeat_misses = 2
systemic_min_units = 2
systemic_share = 0.75
sharp_drop = 0.6
volume_change = 100.0
[follow_up_days]
weekly = 7
monthly = 30
quarterly = 90
"#;

/// The org: C (CRO, root role) -> V1 (VP East), V2 (VP West) -> M1 (East team), M2 (West team)
/// -> sellers S1, S2, S3 under M1 and S4, S5, S6 under M2.
///
/// Won deals per month (Dec, Jan, Feb, Mar), closed mid-month; S1 also loses one deal in March:
///   S1 2 2 2 2   S2 2 2 2 1   S3 2 2 1 1   S4 3 3 3 0   S5 2 2 2 1   S6 2 2 2 1
/// so M1 = East = 6 6 5 4, M2 = West = 7 7 7 2, company = 13 13 12 6.
const WINS: [(&str, [usize; 4]); 6] = [
    ("S1", [2, 2, 2, 2]),
    ("S2", [2, 2, 2, 1]),
    ("S3", [2, 2, 1, 1]),
    ("S4", [3, 3, 3, 0]),
    ("S5", [2, 2, 2, 1]),
    ("S6", [2, 2, 2, 1]),
];
const MONTHS: [&str; 4] = ["2023-12", "2024-01", "2024-02", "2024-03"];

fn fixture() -> tempfile::TempDir {
    let dir = tempdir();
    let root = dir.path();
    write(
        root,
        "raw/salesforce/user_role/r.csv",
        "id,name,parent_role_id\nR0,CRO,\nRE,East,R0\nRW,West,R0\nRE1,East Team,RE\nRW1,West Team,RW\n",
    );
    let mut users = String::from("id,name,manager_id,user_role_id,created_date\n");
    users.push_str("C,Cora Chief,,R0,2023-01-01\nV1,Vic East,C,RE,2023-01-01\nV2,Val West,C,RW,2023-01-01\n");
    users.push_str("M1,Mia One,V1,RE1,2023-01-01\nM2,Max Two,V2,RW1,2023-01-01\n");
    for (s, m) in [("S1", "M1"), ("S2", "M1"), ("S3", "M1"), ("S4", "M2"), ("S5", "M2"), ("S6", "M2")] {
        users.push_str(&format!("{s},Seller {s},{m},{},2023-01-01\n", if m == "M1" { "RE1" } else { "RW1" }));
    }
    write(root, "raw/salesforce/user/u.csv", &users);
    write(root, "raw/salesforce/account/a.csv", "id,name,created_date\nA1,Acme,2023-01-01\n");
    let mut opps =
        String::from("id,account_id,owner_id,type,stage_name,amount,close_date,is_won,is_closed,created_date\n");
    let mut hist = String::from("id,opportunity_id,created_date,stage_name,amount,close_date\n");
    let mut n = 0;
    let mut deal = |owner: &str, month: &str, won: bool, opps: &mut String, hist: &mut String| {
        n += 1;
        let stage = if won { "Closed Won" } else { "Closed Lost" };
        opps.push_str(&format!(
            "O{n},A1,{owner},New Business,{stage},1000,{month}-15,{won},true,{month}-01 09:00:00\n"
        ));
        hist.push_str(&format!("H{n}a,O{n},{month}-01 09:00:00,Prospecting,1000,{month}-20\n"));
        hist.push_str(&format!("H{n}b,O{n},{month}-15 17:00:00,{stage},1000,{month}-15\n"));
    };
    for (seller, wins) in WINS {
        for (m, k) in MONTHS.iter().zip(wins) {
            for _ in 0..k {
                deal(seller, m, true, &mut opps, &mut hist);
            }
        }
    }
    deal("S1", "2024-03", false, &mut opps, &mut hist);
    write(root, "raw/salesforce/opportunity/o.csv", &opps);
    write(root, "raw/salesforce/opportunity_history/h.csv", &hist);
    write(
        root,
        "raw/salesforce/opportunity_stage/s.csv",
        "id,master_label,sort_order,is_closed,is_won\nST1,Prospecting,1,false,false\nST2,Closed Won,2,true,true\nST3,Closed Lost,3,true,false\n",
    );
    write(root, "catalog.toml", CATALOG);
    write(root, "job.toml", JOB);
    dir
}

fn run_kpis(lake: &std::path::Path, as_of: &str) -> Run {
    let catalog = lake.join("catalog.toml");
    let job = lake.join("job.toml");
    let r =
        run(lake, &["kpis", "--as-of", as_of, "--catalog", catalog.to_str().unwrap(), "--job", job.to_str().unwrap()]);
    assert_eq!(r.code, 0, "kpis failed:\n{}\n{}", r.stdout, r.stderr);
    r
}

fn cell<'a>(rows: &'a [Row], kpi: &str, unit: &str, month: &str) -> &'a Row {
    rows.iter()
        .find(|r| s(r, "kpi_id") == kpi && s(r, "unit_id") == unit && s(r, "period_start") == format!("{month}-01"))
        .unwrap_or_else(|| panic!("no {kpi} cell for {unit} in {month}"))
}

#[test]
fn hand_built_org_values_at_four_levels_and_every_severity_class() {
    let dir = fixture();
    let lake = dir.path();
    run_kpis(lake, "2024-03-31");
    let rows = query(lake, "SELECT * FROM output.kpi_values WHERE as_of_date = '2024-03-31'", None);

    // Values at all four levels, March: company 6, regions East 4 / West 2, managers M1 4 / M2 2.
    for (unit, level, mar) in [
        ("company", "company", 6.0),
        ("region:RE", "region", 4.0),
        ("region:RW", "region", 2.0),
        ("manager:M1", "manager", 4.0),
        ("manager:M2", "manager", 2.0),
        ("seller:S4", "seller", 0.0),
    ] {
        let c = cell(&rows, "won_deals", unit, "2024-03");
        assert_eq!((s(c, "level"), f(c, "value")), (level, mar), "{unit}");
    }
    // Every December-to-March company value: 13, 13, 12, 6.
    let company: Vec<f64> = MONTHS.iter().map(|m| f(cell(&rows, "won_deals", "company", m), "value")).collect();
    assert_eq!(company, vec![13.0, 13.0, 12.0, 6.0]);

    // Severity, March (targets: 90% of the unit's own median over up to 3 earlier months):
    let expect = [
        // S1: 2 vs median 2 -> target 1.8: met.
        ("seller:S1", "on_track", Some(1.8)),
        // S2: 1 vs 1.8, first miss, 50% drop is not sharp (< 60%).
        ("seller:S2", "observe", Some(1.8)),
        // S3: Feb 1 missed its 1.8; Mar 1 vs median(2, 2, 1) = 2 -> 1.8: 2 misses in 3 months.
        ("seller:S3", "coaching", Some(1.8)),
        // S4: 0 after 3, 3, 3: a 100% drop outside its range -> check the data first.
        ("seller:S4", "diagnose_first", Some(2.7)),
        // S5, S6: single misses, but with S4 all 3 of M2's sellers missed (>= 2 and >= 75%).
        ("seller:S5", "systemic", Some(1.8)),
        ("seller:S6", "systemic", Some(1.8)),
        // M1: Feb 5 missed 5.4; Mar 4 vs median(6, 6, 5) = 6 -> 5.4: repeated -> coaching...
        // ... but regions East and West both missed (2 of 2 under the company): East is systemic.
        ("manager:M1", "coaching", Some(5.4)),
        ("region:RE", "systemic", Some(5.4)),
        // M2 and West: 2 after 7, 7, 7: a 71% drop -> diagnose first.
        ("manager:M2", "diagnose_first", Some(6.3)),
        ("region:RW", "diagnose_first", Some(6.3)),
        // Company: 6 vs median(12, 13, 13) = 13 -> 11.7; a 50% drop, first miss -> observe.
        ("company", "observe", Some(11.7)),
    ];
    for (unit, status, target) in expect {
        let c = cell(&rows, "won_deals", unit, "2024-03");
        assert_eq!(s(c, "status"), status, "{unit}: {c:?}");
        let t = c.get("target").and_then(|v| v.as_f64());
        assert!(t.zip(target).is_some_and(|(a, b)| (a - b).abs() < 1e-9), "{unit} target {t:?} != {target:?}");
    }
    // Win rate (diagnostic): S1 won 2 of 3 in March; S2 won 1 of 1, which is 100% (not 0% as an
    // owner with wins and no losses shows in dbt_salesforce) but below min_n = 2.
    let s1 = cell(&rows, "win_rate", "seller:S1", "2024-03");
    assert!((f(s1, "value") - 2.0 / 3.0).abs() < 1e-12 && s(s1, "status") == "on_track");
    let s2 = cell(&rows, "win_rate", "seller:S2", "2024-03");
    assert_eq!((f(s2, "value"), s(s2, "status")), (1.0, "not_enough_data"));
    // A manager's win rate is its subtree's (4 won of 5 closed), never above 100%.
    assert!((f(cell(&rows, "win_rate", "manager:M1", "2024-03"), "value") - 0.8).abs() < 1e-12);
    let rates: Vec<f64> =
        rows.iter().filter(|r| s(r, "kpi_id") == "win_rate").filter_map(|r| r.get("value")?.as_f64()).collect();
    assert!(rates.len() > 20 && rates.iter().all(|v| (0.0..=1.0).contains(v)), "{rates:?}");
    // The Wilson interval of S1's 2 of 3: 20.8% to 93.9%.
    assert!((f(s1, "ci_low") - 0.2077).abs() < 1e-3 && (f(s1, "ci_high") - 0.9385).abs() < 1e-3, "{s1:?}");

    // Segments of the last complete quarter (Jan-Mar): 13 + 12 + 6 won and 1 lost, all at an
    // account with no employee count, so one '(unknown)' size band: nothing dropped.
    let seg = query(
        lake,
        "SELECT segment, won, closed FROM output.kpi_segments WHERE unit_id = 'company' AND dimension = 'size band'",
        None,
    );
    assert_eq!(seg.len(), 1, "{seg:?}");
    assert_eq!((s(&seg[0], "segment"), f(&seg[0], "won"), f(&seg[0], "closed")), ("(unknown)", 31.0, 32.0));

    // Interventions: one per non-green cell of the primary KPI, systemic ones grouped per parent.
    let iv = query(lake, "SELECT * FROM output.kpi_interventions ORDER BY unit_id, status", None);
    let find = |unit: &str, status: &str| {
        iv.iter()
            .find(|r| s(r, "unit_id") == unit && s(r, "status") == status)
            .unwrap_or_else(|| panic!("no {status} intervention for {unit}: {iv:#?}"))
    };
    // Coaching for S3 is owned by S3's manager; coaching for M1 by M1's manager's unit head (VP East).
    assert_eq!(s(find("seller:S3", "coaching"), "owner_name"), "Mia One");
    assert!(s(find("seller:S3", "coaching"), "action").contains("Mia One reviews the open deals of Seller S3"));
    assert_eq!(s(find("manager:M1", "coaching"), "owner_name"), "Vic East");
    // Systemic: S5 and S6 (and S4's miss) as one programme under M2, owned by leadership (the CRO).
    let sys = find("manager:M2", "systemic");
    assert_eq!(s(sys, "owner_name"), "Cora Chief");
    assert!(s(sys, "action").contains("3 of 3 sellers missed: Seller S4, Seller S5, Seller S6"), "{sys:?}");
    assert_eq!(s(find("company", "systemic"), "owner_name"), "Cora Chief");
    assert_eq!(s(find("seller:S4", "diagnose_first"), "owner_name"), "RevOps (data owner)");
    assert_eq!(s(find("seller:S2", "observe"), "owner_name"), "Seller S2");
    assert_eq!(s(find("seller:S2", "observe"), "follow_up_date"), "2024-04-30");
    // Nothing for the on-track seller; 9 in all: S2, S3, S4, M1, M2, West, company, and the two
    // systemic groups (M2's sellers, the company's regions).
    assert!(!iv.iter().any(|r| s(r, "unit_id") == "seller:S1"));
    assert_eq!(iv.len(), 9, "{iv:#?}");
}

#[test]
fn reruns_are_identical_and_log_nothing_twice_and_outcomes_follow() {
    let dir = fixture();
    let lake = dir.path();
    let first = run_kpis(lake, "2024-03-31");
    assert!(first.stdout.contains("9 new records in log/decision_trace"), "{}", first.stdout);
    let second = run_kpis(lake, "2024-03-31");
    assert!(second.stdout.contains("0 new records in log/decision_trace"), "{}", second.stdout);
    // Both runs' kpi_values files hold the same rows, byte for byte.
    let runs = query(lake, "SELECT run_id FROM output.runs WHERE job = 'kpis' ORDER BY committed_at", None);
    assert_eq!(runs.len(), 2);
    let files: Vec<Vec<u8>> = runs
        .iter()
        .map(|r| {
            let p = lake.join(format!("output/kpi_values/as_of=2024-03-31/run={}/part-00000.parquet", s(r, "run_id")));
            std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        })
        .collect();
    assert!(files[0] == files[1], "kpi_values differ between identical runs");
    let log = query(lake, "SELECT kind, COUNT(*) AS n FROM log.decision_trace_parts GROUP BY kind", None);
    assert_eq!(log.len(), 1);
    assert_eq!(f(&log[0], "n"), 9.0);

    // A run before the follow-up date attaches no outcome; a run after it does, from the data then.
    // (The lake has no April deals: every unit's April is a miss, so nothing recovered.)
    run_kpis(lake, "2024-04-15");
    let outcomes = query(lake, "SELECT * FROM log.decision_trace WHERE kind = 'kpi_outcome'", None);
    assert!(outcomes.is_empty(), "{outcomes:?}");
    run_kpis(lake, "2024-05-31");
    let outcomes = query(lake, "SELECT * FROM log.decision_trace WHERE kind = 'kpi_outcome'", None);
    assert!(!outcomes.is_empty());
    let s2 = query(
        lake,
        "SELECT o.outcome, o.period_start FROM log.decision_trace o JOIN log.decision_trace i ON o.refers_to = i.record_id \
         WHERE i.subject_id = 'won_deals|month|seller:S2' AND i.as_of_date = '2024-03-31'",
        None,
    );
    assert_eq!(s2.len(), 1, "{s2:?}");
    assert_eq!((s(&s2[0], "outcome"), s(&s2[0], "period_start")), ("still_missing", "2024-05-01"));
    // Re-running March after May appends nothing: May's records are not visible as of March, and
    // March's own are already in the log.
    let again = run_kpis(lake, "2024-03-31");
    assert!(again.stdout.contains("0 new records in log/decision_trace"), "{}", again.stdout);
}

#[test]
fn a_kpi_whose_table_is_not_landed_is_not_instrumented_not_zero() {
    let dir = fixture();
    let lake = dir.path();
    let r = run(lake, &["kpis", "--as-of", "2024-03-31"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let rows = query(
        lake,
        "SELECT kpi_id, status, reason, value FROM output.kpi_values \
         WHERE kpi_id IN ('activities_logged', 'discount_depth') AND grain = 'month'",
        None,
    );
    assert_eq!(rows.len(), 2, "{rows:?}");
    for row in &rows {
        assert_eq!(s(row, "status"), "not_instrumented");
        assert!(row.get("value").is_none_or(|v| v.is_null()), "{row:?}");
    }
    assert!(rows.iter().any(|r| s(r, "reason").contains("needs task")));
    assert!(r.stdout.contains("- Activities logged: – (target –, month"), "{}", r.stdout);
    assert!(r.stdout.contains("not instrumented"), "{}", r.stdout);
}

#[test]
fn maven_win_rate_per_office_and_manager_and_won_value() {
    let Some(src) = shared_data("maven_crm") else { return };
    let dir = tempdir();
    let lake = dir.path();
    assert_eq!(run(lake, &["import", "maven_crm", "--source", src.to_str().unwrap()]).code, 0);
    let r = run(lake, &["kpis", "--as-of", "2017-12-31"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // Reference from sales_pipeline.csv and sales_teams.csv with Python's csv module: Won / (Won +
    // Lost) per regional office and per manager, over every close date; won value = sum of
    // close_value of Won deals.
    let expected = [
        ("region", "Central office", 1629.0, 2604.0),
        ("region", "East office", 1171.0, 1858.0),
        ("region", "West office", 1438.0, 2249.0),
        ("manager", "Cara Losch", 480.0, 745.0),
        ("manager", "Celia Rouche", 610.0, 962.0),
        ("manager", "Dustin Brinkmann", 747.0, 1186.0),
        ("manager", "Melvin Marxen", 882.0, 1418.0),
        ("manager", "Rocco Neubert", 691.0, 1113.0),
        ("manager", "Summer Sewald", 828.0, 1287.0),
        ("company", "Company", 4238.0, 6711.0),
    ];
    let rows = query(
        lake,
        "SELECT level, unit_name, SUM(numerator) AS won, SUM(denominator) AS closed FROM output.kpi_values \
         WHERE kpi_id = 'win_rate' AND grain = 'quarter' GROUP BY level, unit_name",
        None,
    );
    for (level, unit, won, closed) in expected {
        let row = rows
            .iter()
            .find(|r| s(r, "level") == level && s(r, "unit_name") == unit)
            .unwrap_or_else(|| panic!("no {level} {unit} in {rows:?}"));
        assert_eq!((f(row, "won"), f(row, "closed")), (won, closed), "{level} {unit}");
    }
    // Quarter by quarter, every unit's win rate is its own won / closed and within [0, 1].
    let q = query(
        lake,
        "SELECT value, numerator, denominator FROM output.kpi_values WHERE kpi_id = 'win_rate' AND value IS NOT NULL",
        None,
    );
    assert!(q.iter().all(|r| (f(r, "value") - f(r, "numerator") / f(r, "denominator")).abs() < 1e-12));
    assert!(q.iter().all(|r| (0.0..=1.0).contains(&f(r, "value"))));
    // Total won value: 10,005,534 at every level (no deal lost or counted twice in the roll-ups).
    let won = query(
        lake,
        "SELECT level, SUM(numerator) AS v FROM output.kpi_values WHERE kpi_id = 'bookings' AND grain = 'month' GROUP BY level",
        None,
    );
    assert_eq!(won.len(), 4);
    for row in &won {
        assert_eq!(f(row, "v"), 10_005_534.0, "{row:?}");
    }
}

/// Headless Chromium from Debian's packages (installed by .ci/run). Without it the test says
/// SKIPPED, unless GTM_LOOP_REQUIRE_CHROMIUM or CI=true is set, where a missing browser fails.
fn chromium() -> Option<&'static str> {
    for bin in ["chromium", "chromium-browser", "google-chrome"] {
        if std::process::Command::new(bin).arg("--version").output().is_ok_and(|o| o.status.success()) {
            return Some(bin);
        }
    }
    assert!(std::env::var("GTM_LOOP_REQUIRE_CHROMIUM").is_err(), "GTM_LOOP_REQUIRE_CHROMIUM is set but no chromium");
    assert!(
        std::env::var("CI").map_or(true, |v| v != "true"),
        "CI=true but no chromium on PATH: the report rendering test cannot run (apt-get install chromium)"
    );
    eprintln!("SKIPPED: no chromium on PATH (apt-get install chromium)");
    None
}

#[test]
fn the_report_renders_in_headless_chromium_with_its_numbers() {
    let Some(browser) = chromium() else { return };
    let dir = fixture();
    let lake = dir.path();
    let r = run_kpis(lake, "2024-03-31");
    let report = r.stdout.lines().find_map(|l| l.strip_prefix("report: ")).expect("report path").to_string();
    let path = lake.join(&report);
    let html = std::fs::read_to_string(&path).unwrap();
    assert!(!html.contains("http://") && !html.contains("https://") && !html.contains("<script"), "not self-contained");
    let url = format!("file://{}", path.display());
    let common = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1280,1600"];
    let dom = std::process::Command::new(browser).args(common).arg("--dump-dom").arg(&url).output().unwrap();
    assert!(dom.status.success(), "{}", String::from_utf8_lossy(&dom.stderr));
    let dom = String::from_utf8_lossy(&dom.stdout);
    // The company's Won deals card: 6 against a target of 11.7 (shown rounded, 12), observe.
    let card_at = dom.find("data-kpi=\"won_deals\"").expect("the won_deals card");
    let card = &dom[card_at..card_at + 600.min(dom.len() - card_at)];
    assert!(card.contains(">6</span>") && card.contains("target 12") && card.contains("observe"), "{card}");
    assert!(dom.contains("Mia One reviews the open deals of Seller S3"));
    assert!(dom.contains("2024-03-31"));
    // A screenshot that is not blank: many distinct colours, and no single colour over 97%.
    let png = lake.join("shot.png");
    let shot = std::process::Command::new(browser)
        .args(common)
        .arg(format!("--screenshot={}", png.display()))
        .arg(&url)
        .output()
        .unwrap();
    assert!(shot.status.success(), "{}", String::from_utf8_lossy(&shot.stderr));
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    let pixels = &buf[..info.buffer_size()];
    let mut counts = std::collections::HashMap::new();
    for px in pixels.chunks(channels) {
        *counts.entry(px[..3].to_vec()).or_insert(0usize) += 1;
    }
    let total = pixels.len() / channels;
    let top = counts.values().max().copied().unwrap_or(0);
    assert!(counts.len() > 50, "only {} colours: blank page?", counts.len());
    assert!((top as f64) < 0.97 * total as f64, "one colour covers {top} of {total} pixels");
}
