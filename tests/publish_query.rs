//! Publishing is all-or-nothing, and `query` is read-only with four output formats.

mod common;
use common::*;

fn small_lake(root: &std::path::Path, amount: &str) {
    write(root, "raw/salesforce/user/u.csv", "id,name,created_date\nU1,Dana Lee,2023-01-01\n");
    write(root, "raw/salesforce/account/a.csv", "id,name,created_date\nA1,Acme,2024-01-01\n");
    write(
        root,
        "raw/salesforce/opportunity/o.csv",
        &format!(
            "id,account_id,owner_id,stage_name,amount,close_date,created_date\nO1,A1,U1,Prospecting,{amount},2024-06-01,2024-02-01\n"
        ),
    );
    write(
        root,
        "raw/salesforce/opportunity_history/h.csv",
        "id,opportunity_id,created_date,stage_name\nH1,O1,2024-02-01,Prospecting\n",
    );
}

#[test]
fn a_run_that_fails_after_writing_leaves_nothing_visible_and_the_previous_run_intact() {
    let dir = tempdir();
    let root = dir.path();
    small_lake(root, "-5");
    let first = run(root, &["validate", "--as-of", "2024-03-01"]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    let before =
        query(root, "SELECT \"check\", \"count\" FROM output.data_quality WHERE \"check\" = 'negative_value'", None);
    assert_eq!(before.len(), 1);

    // Fix the data, then crash the next run after its data file is written, before it commits.
    small_lake(root, "100");
    let failed =
        run_env(root, &["validate", "--as-of", "2024-03-01"], &[("GTM_LOOP_FAIL_AFTER_WRITE", "data_quality")]);
    assert_ne!(failed.code, 0);
    assert!(failed.stderr.contains("failing after writing output/data_quality/as_of=2024-03-01/"), "{}", failed.stderr);
    // The failed run's file is on disk...
    let files = walk(&root.join("output/data_quality/as_of=2024-03-01"));
    assert_eq!(files.len(), 2, "{files:?}");
    // ...but readers see only the committed run: the old finding is still there, unchanged.
    let after =
        query(root, "SELECT \"check\", \"count\" FROM output.data_quality WHERE \"check\" = 'negative_value'", None);
    assert_eq!(after, before);
    let runs = query(root, "SELECT run_id FROM output.runs", None);
    assert_eq!(runs.len(), 1);

    // A successful re-run of the same date replaces it in one step; other dates are untouched.
    assert_eq!(run(root, &["validate", "--as-of", "2024-03-01"]).code, 0);
    assert_eq!(run(root, &["validate", "--as-of", "2024-04-01"]).code, 0);
    let now = query(
        root,
        "SELECT as_of_date, COUNT(*) AS n FROM output.data_quality WHERE \"check\" = 'negative_value' GROUP BY 1",
        None,
    );
    assert!(now.is_empty(), "the fixed data has no negative amounts: {now:?}");
    let dates = query(root, "SELECT DISTINCT as_of_date FROM output.data_quality ORDER BY 1", None);
    assert_eq!(dates.iter().map(|r| s(r, "as_of_date")).collect::<Vec<_>>(), ["2024-03-01", "2024-04-01"]);
    // The manifest records what was read.
    let manifest_dir = root.join("output/_runs");
    let manifest = std::fs::read_dir(&manifest_dir).unwrap().next().unwrap().unwrap().path();
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(manifest).unwrap()).unwrap();
    assert_eq!(m["job"], "validate");
    assert!(m["inputs"].as_array().unwrap().iter().any(|i| i["table"] == "opportunity" && i["files"] == 1));
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
    }
    out
}

#[test]
fn query_refuses_statements_that_write_or_change() {
    let dir = tempdir();
    small_lake(dir.path(), "100");
    for sql in [
        "CREATE TABLE x AS SELECT 1",
        "INSERT INTO staging.opportunity SELECT * FROM staging.opportunity",
        "COPY (SELECT 1) TO '/tmp/gtm-loop-should-not-exist.csv'",
        "DROP VIEW staging.opportunity",
        "SET datafusion.execution.batch_size = 1",
    ] {
        let r = run(dir.path(), &["query", sql]);
        assert_eq!(r.code, 2, "{sql}: {}", r.stderr);
        assert!(r.stderr.contains("refused: query is read-only"), "{sql}: {}", r.stderr);
    }
    assert!(!std::path::Path::new("/tmp/gtm-loop-should-not-exist.csv").exists());
}

#[test]
fn query_writes_table_csv_json_and_parquet() {
    let dir = tempdir();
    let root = dir.path();
    small_lake(root, "100");
    let sql = "SELECT id, amount FROM opportunity";
    let table = run(root, &["query", sql]);
    assert!(table.stdout.contains("| O1 | 100.0  |") && table.stdout.contains("1 row"), "{}", table.stdout);
    let csv = run(root, &["query", sql, "--format", "csv"]);
    assert_eq!(csv.stdout, "id,amount\nO1,100.0\n");
    let json = run(root, &["query", sql, "--format", "json"]);
    assert_eq!(json.stdout.trim(), r#"{"id":"O1","amount":100.0}"#);
    let out = root.join("o.parquet");
    let pq = run(root, &["query", sql, "--format", "parquet", "--out", out.to_str().unwrap()]);
    assert_eq!(pq.code, 0, "{}", pq.stderr);
    // It is a real Parquet file with the same rows.
    use datafusion::arrow::array::{Float64Array, StringArray};
    let reader = datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(&out).unwrap(),
    )
    .unwrap()
    .build()
    .unwrap();
    let batches: Vec<_> = reader.map(|b| b.unwrap()).collect();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
    let ids =
        datafusion::arrow::compute::cast(batches[0].column(0), &datafusion::arrow::datatypes::DataType::Utf8).unwrap();
    let ids = ids.as_any().downcast_ref::<StringArray>().unwrap();
    let amounts = batches[0].column(1).as_any().downcast_ref::<Float64Array>().unwrap();
    assert_eq!((ids.value(0), amounts.value(0)), ("O1", 100.0));
}

#[test]
fn tables_and_describe_list_every_layer() {
    let dir = tempdir();
    small_lake(dir.path(), "100");
    // Three history rows for the one deal: `tables` must count the table's rows, not the one row
    // of a COUNT(*) query (it printed "1 rows" for every table).
    write(
        dir.path(),
        "raw/salesforce/opportunity_history/h.csv",
        "id,opportunity_id,created_date,stage_name\nH1,O1,2024-02-01,Prospecting\nH2,O1,2024-03-01,Discovery\nH3,O1,2024-04-01,Demo\n",
    );
    let t = run(dir.path(), &["tables"]);
    assert_eq!(t.code, 0, "{}", t.stderr);
    let count = |name: &str| -> String {
        let line = t
            .stdout
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name}: {}", t.stdout));
        line.split_whitespace().nth(1).unwrap().to_string()
    };
    assert_eq!(count("raw.opportunity_history"), "3");
    assert_eq!(count("staging.opportunity_history"), "3");
    assert_eq!(count("staging.opportunity"), "1");
    assert_eq!(count("staging.quota"), "0");
    for line in ["raw.opportunity", "known.opportunity", "staging.opportunity", "output.runs"] {
        assert!(t.stdout.contains(line), "{line} missing:\n{}", t.stdout);
    }
    assert!(t.stdout.contains("staging.quota") && t.stdout.contains("(not landed)"), "{}", t.stdout);
    let d = run(dir.path(), &["describe", "staging.opportunity"]);
    assert!(d.stdout.starts_with("staging.opportunity: 1 rows"), "{}", d.stdout);
    assert!(d.stdout.contains("stage_name") && d.stdout.contains("Current stage."), "{}", d.stdout);
    let missing = run(dir.path(), &["describe", "staging.nope"]);
    assert_ne!(missing.code, 0);
    assert!(missing.stderr.contains("gtm-loop tables"), "{}", missing.stderr);
}
