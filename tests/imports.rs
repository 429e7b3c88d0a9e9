//! The real exports in ../shared/data load through mapping files, and figures computed
//! independently from the raw CSVs (Python's csv module, by hand; see each assertion) come back.

mod common;
use common::*;

fn import(name: &str) -> Option<tempfile::TempDir> {
    let src = shared_data(name)?;
    let dir = tempdir();
    let r = run(dir.path(), &["import", name, "--source", src.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("quirks handled:"), "{}", r.stdout);
    Some(dir)
}

#[test]
fn maven_win_rates_by_office_and_manager_and_won_value() {
    let Some(dir) = import("maven_crm") else { return };
    let lake = dir.path();
    assert_eq!(run(lake, &["validate"]).code, 0);
    // Win rate by count = Won / (Won + Lost), from sales_pipeline.csv joined to sales_teams.csv.
    let offices = query(
        lake,
        "SELECT r.name AS office, SUM(CASE WHEN o.is_won THEN 1 ELSE 0 END) AS won, COUNT(*) AS closed, SUM(o.amount) AS won_value \
         FROM opportunity o JOIN \"user\" u ON u.id = o.owner_id JOIN user_role t ON t.id = u.user_role_id \
         JOIN user_role r ON r.id = t.parent_role_id WHERE o.is_closed GROUP BY 1 ORDER BY 1",
        None,
    );
    let got: Vec<(String, f64, f64, f64)> =
        offices.iter().map(|r| (s(r, "office").to_string(), f(r, "won"), f(r, "closed"), f(r, "won_value"))).collect();
    assert_eq!(
        got,
        [
            ("Central office".to_string(), 1629.0, 2604.0, 3_346_293.0),
            ("East office".to_string(), 1171.0, 1858.0, 3_090_594.0),
            ("West office".to_string(), 1438.0, 2249.0, 3_568_647.0),
        ]
    );
    let managers = query(
        lake,
        "SELECT m.name AS manager, SUM(CASE WHEN o.is_won THEN 1.0 ELSE 0 END) / COUNT(*) AS win_rate \
         FROM opportunity o JOIN \"user\" u ON u.id = o.owner_id JOIN \"user\" m ON m.id = u.manager_id \
         WHERE o.is_closed GROUP BY 1 ORDER BY 1",
        None,
    );
    let expected = [
        ("Cara Losch", 480.0 / 745.0),
        ("Celia Rouche", 610.0 / 962.0),
        ("Dustin Brinkmann", 747.0 / 1186.0),
        ("Melvin Marxen", 882.0 / 1418.0),
        ("Rocco Neubert", 691.0 / 1113.0),
        ("Summer Sewald", 828.0 / 1287.0),
    ];
    assert_eq!(managers.len(), 6);
    for (row, (name, rate)) in managers.iter().zip(expected) {
        assert_eq!(s(row, "manager"), name);
        assert!((f(row, "win_rate") - rate).abs() < 1e-12, "{name}: {row:?}");
    }
    let total = query(lake, "SELECT SUM(amount) AS won FROM opportunity WHERE is_won", None);
    assert_eq!(f(&total[0], "won"), 10_005_534.0);
    // The GTXPro / 'GTX Pro' mismatch is mapped: all 1,480 deals keep their product.
    let gtx = query(
        lake,
        "SELECT COUNT(*) AS n FROM opportunity_line_item WHERE name = 'GTX Pro' AND list_price = 4821",
        None,
    );
    assert_eq!(f(&gtx[0], "n"), 1480.0);
    // The 1,425 deals without an account are reported, not dropped.
    let dq = query(
        lake,
        "SELECT \"count\" FROM output.data_quality WHERE table_name = 'opportunity' AND column_name = 'account_id' AND \"check\" = 'null_rate'",
        None,
    );
    assert_eq!(f(&dq[0], "count"), 1425.0);
    // As of 2017-06-30: 2,679 deals had closed by then (1,785 won) and 1,686 were engaging.
    let asof =
        query(lake, "SELECT stage_name, COUNT(*) AS n FROM opportunity GROUP BY 1 ORDER BY 1", Some("2017-06-30"));
    let got: Vec<(&str, f64)> = asof.iter().map(|r| (s(r, "stage_name"), f(r, "n"))).collect();
    assert_eq!(got, [("Engaging", 1686.0), ("Lost", 894.0), ("Won", 1785.0)]);
}

#[test]
fn olist_conversion_by_origin_and_its_quirks() {
    let Some(dir) = import("olist_marketing_funnel") else { return };
    let lake = dir.path();
    assert_eq!(run(lake, &["validate"]).code, 0);
    let all =
        query(lake, "SELECT COUNT(*) AS leads, SUM(CASE WHEN is_converted THEN 1 ELSE 0 END) AS won FROM lead", None);
    assert_eq!((f(&all[0], "leads"), f(&all[0], "won")), (8000.0, 842.0));
    // Lead -> closed deal by origin; NULL origin stays apart from 'unknown'.
    let by = query(
        lake,
        "SELECT COALESCE(lead_source, '(null)') AS origin, COUNT(*) AS leads, SUM(CASE WHEN is_converted THEN 1 ELSE 0 END) AS won \
         FROM lead GROUP BY 1 ORDER BY 1",
        None,
    );
    let get = |o: &str| by.iter().find(|r| s(r, "origin") == o).map(|r| (f(r, "leads"), f(r, "won"))).unwrap();
    assert_eq!(get("organic_search"), (2296.0, 271.0));
    assert_eq!(get("paid_search"), (1586.0, 195.0));
    assert_eq!(get("unknown"), (1099.0, 179.0));
    assert_eq!(get("(null)"), (60.0, 14.0));
    assert_eq!(by.len(), 11);
    // The deal won before its first contact is a data-quality row, named.
    let dq = query(
        lake,
        "SELECT \"count\", examples FROM output.data_quality WHERE \"check\" = 'closed_before_created'",
        None,
    );
    assert_eq!((f(&dq[0], "count"), s(&dq[0], "examples")), (1.0, "b91cf8812365f50ff4bda4bcd6206b05"));
    // 'jewerly' is mapped; 0 revenue means "not declared" (NULL) and is reported.
    let seg = query(
        lake,
        "SELECT COUNT(*) AS n FROM account WHERE industry IN ('jewelry', 'jewerly') GROUP BY industry",
        None,
    );
    assert_eq!(f(&seg[0], "n"), 8.0);
    let amt = query(lake, "SELECT \"count\" FROM output.data_quality WHERE \"check\" = 'won_without_amount'", None);
    assert_eq!(f(&amt[0], "count"), 797.0);
    // As of 2018-03-31: 5,345 MQLs had made first contact and 336 had converted.
    let asof = query(
        lake,
        "SELECT COUNT(*) AS leads, SUM(CASE WHEN is_converted THEN 1 ELSE 0 END) AS won FROM lead",
        Some("2018-03-31"),
    );
    assert_eq!((f(&asof[0], "leads"), f(&asof[0], "won")), (5345.0, 336.0));
}
