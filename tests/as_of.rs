//! No look-ahead: a hand-written CSV lake (not made by `generate`) queried as of several dates.
//! Every expected value below is read off the fixture by hand.

mod common;
use common::*;

fn fixture() -> tempfile::TempDir {
    let dir = tempdir();
    let root = dir.path();
    write(root, "raw/salesforce/user/users.csv", "id,name,manager_id,created_date\nU1,Dana Lee,,2023-01-01 09:00:00\n");
    // A1 was renamed on 2024-03-01: the lake keeps both CDC versions.
    write(
        root,
        "raw/salesforce/account/account.csv",
        "id,name,industry,created_date,_fivetran_synced\n\
         A1,Acme,Technology,2024-01-01 09:00:00,2024-01-01 10:00:00\n\
         A1,Acme Corp,Technology,2024-01-01 09:00:00,2024-03-01 10:00:00\n\
         A2,Beta,Retail,2024-02-15 09:00:00,2024-02-15 10:00:00\n",
    );
    write(
        root,
        "raw/salesforce/opportunity_stage/stages.csv",
        "id,master_label,sort_order,is_closed,is_won\nS1,Prospecting,1,false,false\nS2,Proposal,2,false,false\nS3,Closed Won,3,true,true\nS4,Closed Lost,4,true,false\n",
    );
    // The opportunity rows hold only the latest state. O2 was deleted on 2024-03-20.
    write(
        root,
        "raw/salesforce/opportunity/part-0.csv",
        "id,account_id,owner_id,stage_name,amount,close_date,created_date,is_won,is_closed,_fivetran_synced,is_deleted,last_modified_date\n\
         O1,A1,U1,Closed Won,120,2024-04-10,2024-01-10 09:00:00,true,true,2024-04-10 12:00:00,false,2024-04-10 11:00:00\n\
         O2,A1,U1,Proposal,50,2024-05-01,2024-02-01 09:00:00,false,false,2024-03-20 12:00:00,true,2024-03-20 11:00:00\n\
         O3,A2,U1,Prospecting,70,2024-06-01,2024-03-10 09:00:00,false,false,2024-03-10 12:00:00,false,2024-03-10 09:00:00\n",
    );
    // History lives in a second file of the same table, in a sub-folder (hive-style).
    write(
        root,
        "raw/salesforce/opportunity_history/year=2024/h.csv",
        "id,opportunity_id,created_date,stage_name,amount,close_date,probability\n\
         H1,O1,2024-01-10 09:00:00,Prospecting,100,2024-03-31,10\n\
         H2,O1,2024-02-20 10:00:00,Proposal,110,2024-03-31,60\n\
         H3,O1,2024-03-15 10:00:00,Proposal,120,2024-04-15,60\n\
         H4,O1,2024-04-10 11:00:00,Closed Won,120,2024-04-10,100\n\
         H5,O2,2024-02-01 09:00:00,Proposal,50,2024-05-01,60\n\
         H6,O3,2024-03-10 09:00:00,Prospecting,70,2024-06-01,10\n",
    );
    // T1 is about 2024-02-28 but was logged on 2024-03-02.
    write(
        root,
        "raw/salesforce/task/task.csv",
        "id,what_id,subject,activity_date,created_date\nT1,O1,Call,2024-02-28,2024-03-02 08:00:00\nT2,O1,Email,2024-02-27,2024-02-27 08:00:00\n",
    );
    write(
        root,
        "raw/salesforce/lead/lead.csv",
        "id,status,lead_source,is_converted,converted_date,converted_opportunity_id,created_date\n\
         L1,Converted,Web,true,2024-02-28,O2,2024-01-05 09:00:00\n",
    );
    write(
        root,
        "raw/salesforce/lead_history/lh.csv",
        "id,lead_id,field,old_value,new_value,created_date\n\
         LH1,L1,Status,Open,Working,2024-01-06 09:00:00\n\
         LH2,L1,Status,Working,MQL,2024-02-10 09:00:00\n\
         LH3,L1,Status,MQL,Converted,2024-02-28 09:00:00\n",
    );
    dir
}

fn opp(lake: &std::path::Path, id: &str, as_of: Option<&str>) -> Option<serde_json::Map<String, serde_json::Value>> {
    let rows = query(
        lake,
        &format!(
            "SELECT id, stage_name, amount, CAST(close_date AS VARCHAR) AS close_date, is_closed, is_won, state_from_history \
             FROM staging.opportunity WHERE id = '{id}'"
        ),
        as_of,
    );
    assert!(rows.len() <= 1, "one row per id: {rows:?}");
    rows.into_iter().next()
}

#[test]
fn opportunity_state_is_rebuilt_from_history_as_of_a_date() {
    let dir = fixture();
    let lake = dir.path();
    // 2024-03-01: O1 was in Proposal at 110, closing 2024-03-31 (H2); the stage changed after.
    let o1 = opp(lake, "O1", Some("2024-03-01")).expect("O1 exists");
    assert_eq!(s(&o1, "stage_name"), "Proposal");
    assert_eq!(f(&o1, "amount"), 110.0);
    assert_eq!(s(&o1, "close_date"), "2024-03-31");
    assert_eq!(o1["is_closed"], false);
    assert_eq!(o1["is_won"], false);
    assert_eq!(o1["state_from_history"], true);
    // End of 2024-03-15 includes H3 (10:00 that day): the close date slipped to 2024-04-15.
    let o1 = opp(lake, "O1", Some("2024-03-15")).unwrap();
    assert_eq!((f(&o1, "amount"), s(&o1, "close_date")), (120.0, "2024-04-15"));
    let o1 = opp(lake, "O1", Some("2024-03-14")).unwrap();
    assert_eq!(s(&o1, "close_date"), "2024-03-31");
    // Won on 2024-04-10.
    let o1 = opp(lake, "O1", Some("2024-04-10")).unwrap();
    assert_eq!(s(&o1, "stage_name"), "Closed Won");
    assert_eq!(o1["is_won"], true);
    // Before it was created, it does not exist.
    assert!(opp(lake, "O1", Some("2024-01-09")).is_none());
}

#[test]
fn rows_created_or_deleted_after_the_date_are_seen_as_they_were() {
    let dir = fixture();
    let lake = dir.path();
    // O3 was created 2024-03-10.
    assert!(opp(lake, "O3", Some("2024-03-01")).is_none());
    assert!(opp(lake, "O3", Some("2024-03-10")).is_some());
    // O2 was deleted on 2024-03-20: alive before, gone after and in the latest view.
    assert_eq!(s(&opp(lake, "O2", Some("2024-03-19")).unwrap(), "stage_name"), "Proposal");
    assert!(opp(lake, "O2", Some("2024-03-20")).is_none());
    assert!(opp(lake, "O2", None).is_none());
    // The account's older CDC version is the one known before the rename.
    let name = |d: Option<&str>| query(lake, "SELECT name FROM staging.account WHERE id = 'A1'", d);
    assert_eq!(s(&name(Some("2024-02-29"))[0], "name"), "Acme");
    assert_eq!(s(&name(Some("2024-03-01"))[0], "name"), "Acme Corp");
    assert_eq!(s(&name(None)[0], "name"), "Acme Corp");
}

#[test]
fn activities_exist_from_when_they_were_logged_not_when_they_happened() {
    let dir = fixture();
    let lake = dir.path();
    let ids = |d: &str| {
        query(lake, "SELECT id FROM staging.task ORDER BY id", Some(d))
            .iter()
            .map(|r| s(r, "id").to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids("2024-03-01"), ["T2"]);
    assert_eq!(ids("2024-03-02"), ["T1", "T2"]);
}

#[test]
fn lead_status_and_conversion_follow_lead_history() {
    let dir = fixture();
    let lake = dir.path();
    let lead = |d: &str| {
        query(lake, "SELECT status, is_converted, converted_opportunity_id FROM staging.lead", Some(d)).remove(0)
    };
    let before = lead("2024-02-15");
    assert_eq!(s(&before, "status"), "MQL");
    assert_eq!(before["is_converted"], false);
    assert!(before.get("converted_opportunity_id").is_none_or(|v| v.is_null()));
    let after = lead("2024-02-28");
    assert_eq!(s(&after, "status"), "Converted");
    assert_eq!(after["is_converted"], true);
    assert_eq!(s(&after, "converted_opportunity_id"), "O2");
}

#[test]
fn a_hand_written_csv_lake_validates_and_says_what_is_missing() {
    let dir = fixture();
    let r = run(dir.path(), &["validate", "--as-of", "2024-03-01"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    // Optional tables it lacks are named with what they would enable, not treated as zero.
    assert!(r.stdout.contains("usage_daily") && r.stdout.contains("table_absent"), "{}", r.stdout);
    let dq = query(
        dir.path(),
        "SELECT table_name, \"check\", \"count\" FROM output.data_quality WHERE \"check\" = 'table_absent' AND table_name = 'quota'",
        None,
    );
    assert_eq!(dq.len(), 1);
}
