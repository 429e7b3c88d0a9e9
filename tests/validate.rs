//! `validate`: each contract error names table, file, column and fix; each data-quality problem
//! becomes a row of output.data_quality with its count and examples.

mod common;
use std::sync::Arc;

use common::*;
use datafusion::arrow::array::{
    ArrayRef, Date32Array, Float64Array, Int32Array, RecordBatch, StringArray, TimestampNanosecondArray,
};
use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::parquet::arrow::ArrowWriter;

const USERS: &str = "id,name,created_date\nU1,Dana Lee,2023-01-01\n";
const HISTORY: &str = "id,opportunity_id,created_date,stage_name\nH1,O1,2024-01-10,Prospecting\n";

fn minimal(root: &std::path::Path) {
    write(root, "raw/salesforce/user/u.csv", USERS);
    write(root, "raw/salesforce/account/a.csv", "id,name,created_date\nA1,Acme,2024-01-01\n");
    write(root, "raw/salesforce/opportunity_history/h.csv", HISTORY);
}

fn parquet(path: &std::path::Path, columns: Vec<(&str, ArrayRef)>) {
    let schema = Arc::new(Schema::new(
        columns.iter().map(|(n, a)| Field::new(*n, a.data_type().clone(), true)).collect::<Vec<_>>(),
    ));
    let batch = RecordBatch::try_new(schema.clone(), columns.into_iter().map(|(_, a)| a).collect()).unwrap();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut w = ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

#[test]
fn a_missing_required_table_stops_with_its_name_and_the_fix() {
    let dir = tempdir();
    write(dir.path(), "raw/salesforce/user/u.csv", USERS);
    write(dir.path(), "raw/salesforce/account/a.csv", "id,name,created_date\nA1,Acme,2024-01-01\n");
    let r = run(dir.path(), &["validate"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "table opportunity: required table is missing (no .parquet or .csv files under raw/salesforce/opportunity/)"
        ),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("table opportunity_history: required table is missing"), "{}", r.stderr);
    assert!(r.stderr.contains("Fix: land the opportunity table there"), "{}", r.stderr);
    // Nothing was published by the failed validation.
    assert!(!dir.path().join("output/_runs").exists());
}

#[test]
fn a_missing_required_column_names_the_file_and_column() {
    let dir = tempdir();
    minimal(dir.path());
    write(
        dir.path(),
        "raw/salesforce/opportunity/o.csv",
        "id,account_id,stage_name,close_date,created_date\nO1,A1,Prospecting,2024-05-01,2024-01-10\n",
    );
    let r = run(dir.path(), &["validate"]);
    assert_eq!(r.code, 3);
    assert!(
        r.stderr.contains("table opportunity, file raw/salesforce/opportunity/o.csv, column owner_id: required column is missing. Fix: add column owner_id (string)"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_wrong_parquet_type_and_a_truncated_file_are_named() {
    let dir = tempdir();
    minimal(dir.path());
    let opp = dir.path().join("raw/salesforce/opportunity/part-0.parquet");
    parquet(
        &opp,
        vec![
            ("id", Arc::new(StringArray::from(vec!["O1"])) as ArrayRef),
            ("owner_id", Arc::new(StringArray::from(vec!["U1"]))),
            ("stage_name", Arc::new(StringArray::from(vec!["Prospecting"]))),
            ("close_date", Arc::new(Date32Array::from(vec![19_800]))),
            ("created_date", Arc::new(Date32Array::from(vec![19_700]))),
            ("amount", Arc::new(StringArray::from(vec!["1,000"]))),
        ],
    );
    // A second file cut off half-way, as an interrupted upload leaves it.
    let bytes = std::fs::read(&opp).unwrap();
    std::fs::write(dir.path().join("raw/salesforce/opportunity/part-1.parquet"), &bytes[..bytes.len() / 2]).unwrap();
    let r = run(dir.path(), &["validate"]);
    assert_eq!(r.code, 3);
    assert!(
        r.stderr.contains("file raw/salesforce/opportunity/part-0.parquet, column amount: has Parquet type Utf8 but the contract says float"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("file raw/salesforce/opportunity/part-1.parquet: unreadable Parquet file"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("re-land the file"), "{}", r.stderr);
}

#[test]
fn a_parquet_lake_with_other_physical_types_validates_and_queries() {
    // Written with arrow directly (nanosecond UTC timestamps, 32-bit ints, dates), not by `generate`.
    let dir = tempdir();
    let root = dir.path();
    let ts = |v: Vec<i64>| Arc::new(TimestampNanosecondArray::from(v).with_timezone("UTC")) as ArrayRef;
    let day = 1_704_067_200_000_000_000i64; // 2024-01-01T00:00:00Z in ns
    parquet(
        &root.join("raw/salesforce/user/u.parquet"),
        vec![("id", Arc::new(StringArray::from(vec!["U1"])) as ArrayRef), ("created_date", ts(vec![day]))],
    );
    parquet(
        &root.join("raw/salesforce/account/a.parquet"),
        vec![
            ("id", Arc::new(StringArray::from(vec!["A1", "A2"])) as ArrayRef),
            ("number_of_employees", Arc::new(Int32Array::from(vec![150, 5000]))),
            ("created_date", ts(vec![day, day])),
        ],
    );
    parquet(
        &root.join("raw/salesforce/opportunity/o.parquet"),
        vec![
            ("id", Arc::new(StringArray::from(vec!["O1", "O2"])) as ArrayRef),
            ("account_id", Arc::new(StringArray::from(vec!["A1", "A2"]))),
            ("owner_id", Arc::new(StringArray::from(vec!["U1", "U1"]))),
            ("stage_name", Arc::new(StringArray::from(vec!["Prospecting", "Prospecting"]))),
            ("amount", Arc::new(Int32Array::from(vec![1000, 2500]))),
            ("close_date", Arc::new(Date32Array::from(vec![19_800, 19_810]))),
            ("created_date", ts(vec![day + 86_400_000_000_000, day + 2 * 86_400_000_000_000])),
        ],
    );
    parquet(
        &root.join("raw/salesforce/opportunity_history/h.parquet"),
        vec![
            ("id", Arc::new(StringArray::from(vec!["H1", "H2"])) as ArrayRef),
            ("opportunity_id", Arc::new(StringArray::from(vec!["O1", "O2"]))),
            ("amount", Arc::new(Float64Array::from(vec![1000.0, 2500.0]))),
            ("stage_name", Arc::new(StringArray::from(vec!["Prospecting", "Prospecting"]))),
            ("created_date", ts(vec![day + 86_400_000_000_000, day + 2 * 86_400_000_000_000])),
        ],
    );
    let r = run(root, &["validate"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let rows = query(
        root,
        "SELECT a.size_band, SUM(o.amount) AS amount FROM staging.opportunity o JOIN staging.account a ON a.id = o.account_id GROUP BY 1 ORDER BY 1",
        None,
    );
    assert_eq!(rows.len(), 2);
    assert_eq!((s(&rows[0], "size_band"), f(&rows[0], "amount")), ("Enterprise", 2500.0));
    assert_eq!((s(&rows[1], "size_band"), f(&rows[1], "amount")), ("SMB", 1000.0));
    // As of 2024-01-02 only O1 (created that day) exists.
    let n = query(root, "SELECT COUNT(*) AS n FROM staging.opportunity", Some("2024-01-02"));
    assert_eq!(f(&n[0], "n"), 1.0);
}

#[test]
fn each_data_quality_problem_becomes_a_row_with_count_and_examples() {
    let dir = tempdir();
    let root = dir.path();
    write(root, "raw/salesforce/user/u.csv", USERS);
    // A1 landed twice in the same version; industry spelled two ways.
    write(
        root,
        "raw/salesforce/account/a.csv",
        "id,name,industry,created_date,_fivetran_synced\n\
         A1,Acme,Technology,2024-01-01,2024-01-01\nA1,Acme,Technology,2024-01-01,2024-01-01\n\
         A2,Beta,technology ,2024-01-01,2024-01-01\nA3,Gamma,Technology,2024-01-01,2024-01-01\n",
    );
    write(
        root,
        "raw/salesforce/contact/c.csv",
        "id,account_id,email,created_date\nC1,A1,dana@acme.example,2024-01-02\nC2,A1,Dana@Acme.example ,2024-01-03\nC3,A2,x@beta.example,2024-01-02\n",
    );
    // O2 points to a missing account, O3 has a negative amount, O4 is in EUR, O5's amount is not a number,
    // O6 closed before it was created.
    write(
        root,
        "raw/salesforce/opportunity/o.csv",
        "id,account_id,owner_id,stage_name,amount,currency_iso_code,close_date,created_date,is_closed,is_won\n\
         O1,A1,U1,Prospecting,100,USD,2024-06-01,2024-02-01,false,false\n\
         O2,A9,U1,Prospecting,100,USD,2024-06-01,2024-02-01,false,false\n\
         O3,A1,U1,Prospecting,-5,USD,2024-06-01,2024-02-01,false,false\n\
         O4,A2,U1,Prospecting,100,EUR,2024-06-01,2024-02-01,false,false\n\
         O5,A3,U1,Prospecting,abc,USD,2024-06-01,2024-02-01,false,false\n\
         O6,A3,U1,Closed Lost,100,USD,2024-01-15,2024-02-01,true,false\n",
    );
    write(root, "raw/salesforce/opportunity_history/h.csv", HISTORY);
    // A task typed with the wrong year.
    write(root, "raw/salesforce/task/t.csv", "id,what_id,created_date\nT1,O1,2024-02-03\nT2,O1,2099-02-03\n");
    let r = run(root, &["validate"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let dq = query(
        root,
        "SELECT table_name, column_name, \"check\", severity, \"count\", total_rows, examples, detail FROM output.data_quality \
         WHERE severity <> 'info' ORDER BY table_name, \"check\", column_name",
        None,
    );
    let find = |table: &str, check: &str, column: Option<&str>| {
        dq.iter()
            .find(|r| {
                s(r, "table_name") == table
                    && s(r, "check") == check
                    && column.is_none_or(|c| r.get("column_name").and_then(|v| v.as_str()) == Some(c))
            })
            .unwrap_or_else(|| panic!("no {table}.{check} finding in {dq:#?}"))
    };
    let dup = find("account", "duplicate_key", None);
    assert_eq!((f(dup, "count"), s(dup, "examples"), s(dup, "severity")), (1.0, "A1", "error"));
    let spell = find("account", "inconsistent_spelling", Some("industry"));
    assert_eq!((f(spell, "count"), s(spell, "examples")), (1.0, "technology "));
    assert!(s(spell, "detail").contains("'Technology' (2)"), "{spell:?}");
    let email = find("contact", "duplicate_entity", Some("email"));
    assert_eq!((f(email, "count"), s(email, "examples")), (1.0, "C1"));
    let orphan = find("opportunity", "orphan_reference", Some("account_id"));
    assert_eq!((f(orphan, "count"), s(orphan, "examples")), (1.0, "O2"));
    assert!(s(orphan, "detail").contains("'A9'"));
    let neg = find("opportunity", "negative_value", Some("amount"));
    assert_eq!((f(neg, "count"), s(neg, "examples")), (1.0, "O3"));
    let cur = find("opportunity", "mixed_currency", Some("currency_iso_code"));
    assert_eq!((f(cur, "count"), s(cur, "examples")), (1.0, "EUR"));
    let bad = find("opportunity", "unparseable", Some("amount"));
    assert_eq!((f(bad, "count"), s(bad, "examples")), (1.0, "O5"));
    assert!(s(bad, "detail").contains("'abc'"));
    let early = find("opportunity", "closed_before_created", None);
    assert_eq!((f(early, "count"), s(early, "examples")), (1.0, "O6"));
    let future = find("task", "future_date", Some("created_date"));
    assert_eq!((f(future, "count"), s(future, "examples")), (1.0, "T2"));
    // account_id is NULL nowhere, but amount (O5 unparsed) is NULL in 1 of 6 rows: over 5%.
    let nulls = find("opportunity", "null_rate", Some("amount"));
    assert_eq!((f(nulls, "count"), f(nulls, "total_rows")), (1.0, 6.0));
    // The summary printed for people says the same.
    assert!(r.stdout.contains("data quality: 1 errors"), "{}", r.stdout);
    assert!(r.stdout.contains("opportunity.amount") && r.stdout.contains("unparseable"), "{}", r.stdout);
}
