//! The as-of tables computed once and shared (src/layers/shared.rs), and the version rule computed
//! in one ordered pass (sql/staging/_known_as_of.sql). Expected values are read off the
//! hand-written fixtures below.

mod common;
use common::*;

use gtm_loop::lake::Lake;
use gtm_loop::layers::AsOf;

fn date(s: &str) -> AsOf {
    AsOf(Some(s.parse().unwrap()))
}

/// Rows of a small query, as "a|b|c" strings, in order.
async fn rows(lake: &Lake, as_of: AsOf, sql: &str) -> Vec<String> {
    let session = gtm_loop::outputs::open_session(lake, as_of).await.unwrap();
    let batches = session.ctx.sql(sql).await.unwrap().collect().await.unwrap();
    let mut out = Vec::new();
    for b in &batches {
        for r in 0..b.num_rows() {
            let cells: Vec<String> = (0..b.num_columns())
                .map(|c| datafusion::arrow::util::display::array_value_to_string(b.column(c), r).unwrap())
                .collect();
            out.push(cells.join("|"));
        }
    }
    out
}

/// Accounts with every kind of version: A1 three versions synced before 2024-06-30 (the latest
/// wins); A2 one undated and one dated version (the dated one wins); A3 two versions both synced
/// after 2024-06-30 (the earliest wins, marked not exact); A4 one version, deleted on 2024-05-01
/// (gone by 2024-06-30, alive on 2024-04-30); A5 two versions with the same sync time (one of them,
/// never both).
fn versions_lake() -> tempfile::TempDir {
    let dir = tempdir();
    write(dir.path(), "raw/salesforce/user/users.csv", "id,name,created_date\nU1,Dana,2023-01-01 09:00:00\n");
    write(
        dir.path(),
        "raw/salesforce/account/a.csv",
        "id,name,created_date,_fivetran_synced,is_deleted,last_modified_date\n\
         A1,one-a,2024-01-01 09:00:00,2024-01-01 10:00:00,false,2024-01-01 10:00:00\n\
         A1,one-c,2024-01-01 09:00:00,2024-05-01 10:00:00,false,2024-05-01 10:00:00\n\
         A1,one-b,2024-01-01 09:00:00,2024-03-01 10:00:00,false,2024-03-01 10:00:00\n\
         A2,two-undated,2024-01-01 09:00:00,,false,\n\
         A2,two-dated,2024-01-01 09:00:00,2024-02-01 10:00:00,false,2024-02-01 10:00:00\n\
         A3,three-late,2024-01-01 09:00:00,2024-09-01 10:00:00,false,2024-09-01 10:00:00\n\
         A3,three-later,2024-01-01 09:00:00,2024-10-01 10:00:00,false,2024-10-01 10:00:00\n\
         A4,four,2024-01-01 09:00:00,2024-05-01 10:00:00,true,2024-05-01 10:00:00\n\
         A5,five-x,2024-01-01 09:00:00,2024-02-01 10:00:00,false,2024-02-01 10:00:00\n\
         A5,five-y,2024-01-01 09:00:00,2024-02-01 10:00:00,false,2024-02-01 10:00:00\n",
    );
    dir
}

#[tokio::test]
async fn the_ordered_pass_keeps_the_version_the_as_of_rules_name() {
    let dir = versions_lake();
    let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
    let sql = "SELECT id, name, _version_exact FROM known.account ORDER BY id";
    let got = rows(&lake, date("2024-06-30"), sql).await;
    assert_eq!(got.len(), 4, "A4 deleted by then, one row per other id: {got:?}");
    assert_eq!(got[0], "A1|one-c|true");
    assert_eq!(got[1], "A2|two-dated|true");
    assert_eq!(got[2], "A3|three-late|false");
    assert!(got[3] == "A5|five-x|true" || got[3] == "A5|five-y|true", "{got:?}");
    // Earlier: A1's second version, A4 alive (its delete is after the date, and known to be).
    let got = rows(&lake, date("2024-04-30"), sql).await;
    assert_eq!(got[0], "A1|one-b|true");
    assert_eq!(got[3], "A4|four|false", "A4's only version was synced after 2024-04-30: {got:?}");
}

/// A key of two columns: a row is another key's when either column differs, and of one key's
/// versions the latest known by the date wins (usage_daily: account and day, re-synced counts).
#[tokio::test]
async fn the_ordered_pass_keeps_one_version_per_key_of_two_columns() {
    let dir = tempdir();
    write(dir.path(), "raw/salesforce/user/users.csv", "id,name,created_date\nU1,Dana,2023-01-01 09:00:00\n");
    write(
        dir.path(),
        "raw/telemetry/usage_daily/u.csv",
        "account_id,usage_date,active_users,_fivetran_synced\n\
         A1,2024-03-01,5,2024-03-02 01:00:00\n\
         A1,2024-03-01,7,2024-03-05 01:00:00\n\
         A1,2024-03-02,3,2024-03-03 01:00:00\n\
         A2,2024-03-01,9,2024-03-02 01:00:00\n\
         A2,2024-03-02,4,2024-03-03 01:00:00\n\
         A2,2024-03-02,6,2024-07-01 01:00:00\n",
    );
    let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
    let sql = "SELECT account_id, CAST(usage_date AS VARCHAR), active_users FROM known.usage_daily ORDER BY 1, 2";
    let got = rows(&lake, date("2024-06-30"), sql).await;
    // A1's first day was re-synced with 7; A2's second day was re-synced only after the date.
    assert_eq!(got, ["A1|2024-03-01|7", "A1|2024-03-02|3", "A2|2024-03-01|9", "A2|2024-03-02|4"]);
    // Earlier, A1's first day still had its first count: the re-sync came later.
    let got = rows(&lake, date("2024-03-03"), sql).await;
    assert_eq!(got, ["A1|2024-03-01|5", "A1|2024-03-02|3", "A2|2024-03-01|9", "A2|2024-03-02|4"]);
}

#[tokio::test]
async fn keys_known_once_skip_the_de_duplication_and_give_the_same_rows() {
    // The same accounts with one version each: the plain path (no aggregate) must agree with what
    // the aggregate would keep, including the delete rule.
    let dir = tempdir();
    write(dir.path(), "raw/salesforce/user/users.csv", "id,name,created_date\nU1,Dana,2023-01-01 09:00:00\n");
    write(
        dir.path(),
        "raw/salesforce/account/a.csv",
        "id,name,created_date,_fivetran_synced,is_deleted,last_modified_date\n\
         A1,one,2024-01-01 09:00:00,2024-05-01 10:00:00,false,2024-05-01 10:00:00\n\
         A4,four,2024-01-01 09:00:00,2024-05-01 10:00:00,true,2024-05-01 10:00:00\n\
         A6,six,2024-08-01 09:00:00,2024-08-01 10:00:00,false,2024-08-01 10:00:00\n",
    );
    let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
    let sql = "SELECT id, name, _version_exact FROM known.account ORDER BY id";
    assert_eq!(rows(&lake, date("2024-06-30"), sql).await, vec!["A1|one|true"]);
    assert_eq!(rows(&lake, date("2024-04-30"), sql).await, vec!["A1|one|false", "A4|four|false"]);
}

#[tokio::test]
async fn a_table_is_computed_once_per_snapshot_and_a_new_file_is_seen_at_once() {
    let dir = versions_lake();
    let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
    let sql = "SELECT name FROM known.account WHERE id = 'A1'";
    assert_eq!(rows(&lake, date("2024-06-30"), sql).await, vec!["one-c"]);
    // Other tests of this binary run at once, so counts are compared per table key, not globally:
    // a second session of the same snapshot reads the rows the first one computed.
    let session = gtm_loop::outputs::open_session(&lake, date("2024-06-30")).await.unwrap();
    let before = gtm_loop::layers::shared::computed_for(session.fingerprint, "known.account");
    assert_eq!(before, 1, "computed once by the first session");
    let again = session.ctx.sql(sql).await.unwrap().collect().await.unwrap();
    assert_eq!(again[0].num_rows(), 1);
    assert_eq!(
        gtm_loop::layers::shared::computed_for(session.fingerprint, "known.account"),
        1,
        "served, not recomputed"
    );
    // A connector lands a newer version: the next session sees it (another fingerprint).
    write(
        dir.path(),
        "raw/salesforce/account/b.csv",
        "id,name,created_date,_fivetran_synced,is_deleted,last_modified_date\n\
         A1,one-d,2024-01-01 09:00:00,2024-06-01 10:00:00,false,2024-06-01 10:00:00\n",
    );
    assert_eq!(rows(&lake, date("2024-06-30"), sql).await, vec!["one-d"]);
}

#[tokio::test]
async fn a_query_needing_another_column_recomputes_with_both_and_answers_right() {
    let dir = versions_lake();
    let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
    let as_of = date("2024-06-30");
    assert_eq!(rows(&lake, as_of, "SELECT COUNT(*) FROM known.account").await, vec!["4"]);
    assert_eq!(rows(&lake, as_of, "SELECT id FROM known.account WHERE name LIKE 'three%'").await, vec!["A3"]);
    assert_eq!(
        rows(&lake, as_of, "SELECT CAST(created_date AS VARCHAR), name FROM known.account WHERE id = 'A2'").await,
        vec!["2024-01-01T09:00:00|two-dated"]
    );
}

#[tokio::test]
async fn known_tables_are_kept_for_the_checks_and_released_between_cadence_steps() {
    let dir = versions_lake();
    let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
    let session = gtm_loop::outputs::open_session(&lake, date("2024-06-30")).await.unwrap();
    let fp = session.fingerprint;
    use gtm_loop::layers::shared::{computed_for, is_held, release};
    // A staging table computes the known table it reads and keeps only itself.
    let names = session.ctx.sql("SELECT id, name FROM staging.account ORDER BY id").await.unwrap();
    assert_eq!(names.collect().await.unwrap()[0].num_rows(), 4, "A1, A2, A3 and A5 as of 2024-06-30");
    assert_eq!(computed_for(fp, "known.account"), 1);
    assert!(is_held(fp, "staging.account"));
    assert!(!is_held(fp, "known.account"), "computed only for staging.account, not kept");
    // Read directly with every column (as the checks read it), it is computed and kept ...
    session.ctx.sql("SELECT * FROM known.account").await.unwrap().collect().await.unwrap();
    assert_eq!(computed_for(fp, "known.account"), 2);
    assert!(is_held(fp, "known.account"));
    // ... and a staging table computed afterwards with more columns is served from it.
    session.ctx.sql("SELECT * FROM staging.account").await.unwrap().collect().await.unwrap();
    assert_eq!(computed_for(fp, "known.account"), 2, "served, not recomputed");
    assert!(is_held(fp, "known.account"), "held before, so kept");
    // Between cadence steps the known layer is released, the named tables and staging kept.
    session.ctx.sql("SELECT COUNT(*) FROM known.user").await.unwrap().collect().await.unwrap();
    assert!(release(fp, "known.", &["known.user"]) > 0);
    assert!(!is_held(fp, "known.account"));
    assert!(is_held(fp, "known.user"));
    assert!(is_held(fp, "staging.account"));
    assert_eq!(release(fp + 1, "known.", &[]), 0, "another snapshot's tables are its own");
    assert!(is_held(fp, "known.user"));
}

#[tokio::test]
async fn a_narrowed_table_serves_its_kept_columns_and_recomputes_for_a_dropped_one() {
    let dir = versions_lake();
    let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
    let as_of = date("2024-06-30");
    let session = gtm_loop::outputs::open_session(&lake, as_of).await.unwrap();
    let fp = session.fingerprint;
    use gtm_loop::layers::shared::{computed_for, narrow};
    let all = "SELECT id, name, CAST(created_date AS VARCHAR) FROM staging.account ORDER BY id";
    let before = rows(&lake, as_of, all).await;
    assert_eq!(computed_for(fp, "staging.account"), 1);
    assert!(narrow(fp, "staging.account", &["id", "name"]).unwrap() > 0, "the dates freed");
    assert_eq!(narrow(fp, "staging.account", &["id", "name"]).unwrap(), 0, "nothing more to drop");
    assert_eq!(narrow(fp + 1, "staging.account", &["id"]).unwrap(), 0, "another snapshot's tables are its own");
    // The kept columns are served as they were, without computing again ...
    let names = rows(&lake, as_of, "SELECT id, name FROM staging.account ORDER BY id").await;
    let expected: Vec<String> = before.iter().map(|r| r.rsplit_once('|').unwrap().0.to_string()).collect();
    assert_eq!(names, expected);
    assert_eq!(computed_for(fp, "staging.account"), 1, "served, not recomputed");
    // ... and a dropped one is computed again, with the same answer.
    assert_eq!(rows(&lake, as_of, all).await, before);
    assert_eq!(computed_for(fp, "staging.account"), 2);
}

/// A deal history landed out of order, with rows tied on their time (the larger id is the later):
/// staging.opportunity_history is held sorted by deal, time and id (its @held-order line), an
/// ordered pass over it plans no sort, and the passes answer as read off the rows by hand.
#[tokio::test]
async fn the_deal_history_is_held_in_order_and_its_ordered_passes_sort_nothing() {
    let dir = tempdir();
    let root = dir.path();
    write(root, "raw/salesforce/user/u.csv", "id,name,created_date\nU1,Dana Lee,2023-01-01\n");
    write(root, "raw/salesforce/account/a.csv", "id,name,created_date\nA1,Acme,2024-01-01\n");
    write(
        root,
        "raw/salesforce/opportunity/o.csv",
        "id,account_id,owner_id,stage_name,amount,close_date,created_date\n\
         O1,A1,U1,Closed Won,100,2024-06-01,2024-02-01\n\
         O2,A1,U1,Prospecting,50,2024-07-01,2024-02-05\n\
         O3,A1,U1,Prospecting,70,2024-07-01,2024-02-07\n",
    );
    write(
        root,
        "raw/salesforce/opportunity_history/h.csv",
        "id,opportunity_id,created_date,stage_name,amount\n\
         H5,O2,2024-03-01 10:00:00,Negotiation,55\n\
         H1,O1,2024-02-01 09:00:00,Prospecting,100\n\
         H4,O2,2024-02-05 09:00:00,Prospecting,50\n\
         H3,O1,2024-04-01 09:00:00,Proposal,100\n\
         H2,O1,2024-04-01 09:00:00,Qualification,100\n\
         H6,O2,2024-03-01 10:00:00,Proposal,60\n",
    );
    let lake = Lake::open(root.to_str().unwrap()).unwrap();
    let as_of = date("2024-06-30");
    let pass = "SELECT opportunity_id, id, COALESCE(LAG(id) OVER w, '-') FROM staging.opportunity_history \
                WINDOW w AS (ORDER BY opportunity_id, created_date, id)";
    assert_eq!(
        rows(&lake, as_of, pass).await,
        vec!["O1|H1|-", "O1|H2|H1", "O1|H3|H2", "O2|H4|H3", "O2|H5|H4", "O2|H6|H5"]
    );
    let plan = rows(&lake, as_of, &format!("EXPLAIN {pass}")).await.join("\n");
    assert!(plan.contains("HeldInOrder: [opportunity_id, created_date, id]"), "{plan}");
    assert!(!plan.contains("SortExec"), "the held order is used, not sorted again: {plan}");
    // The deal's last change (its latest row, the larger id of two at the same time), or its own
    // row when no history row is known then.
    let deals =
        "SELECT id, stage_name, CAST(amount AS BIGINT), state_from_history FROM staging.opportunity ORDER BY id";
    assert_eq!(
        rows(&lake, as_of, deals).await,
        vec!["O1|Proposal|100|true", "O2|Proposal|60|true", "O3|Prospecting|70|false"]
    );
    assert_eq!(
        rows(&lake, date("2024-03-15"), deals).await,
        vec!["O1|Prospecting|100|true", "O2|Proposal|60|true", "O3|Prospecting|70|false"]
    );
}

/// Warming a job's queries computes each table once, with the columns the queries read and the
/// columns the views among them read of the others: staging.lead reads the id of
/// staging.lead_history (the tie-break of its last status), which the queries do not name. Run on
/// two worker threads, as the tables that do not read each other are computed side by side: a
/// table still waits for the ones it reads (staging.lead started beside its history computed that
/// history a second time, with its own columns only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warming_computes_a_table_once_with_what_the_views_reading_it_need() {
    let dir = tempdir();
    let root = dir.path();
    write(root, "raw/salesforce/user/u.csv", "id,name,created_date\nU1,Dana Lee,2023-01-01\n");
    write(root, "raw/salesforce/lead/l.csv", "id,status,created_date\nL1,Open,2024-01-01\nL2,Open,2024-01-02\n");
    write(
        root,
        "raw/salesforce/lead_history/h.csv",
        "id,lead_id,field,old_value,new_value,created_date\n\
         K2,L1,Status,Working,MQL,2024-02-01 09:00:00\n\
         K1,L1,Status,Open,Working,2024-02-01 09:00:00\n\
         K3,L2,Status,Open,Working,2024-02-03 09:00:00\n",
    );
    let lake = Lake::open(root.to_str().unwrap()).unwrap();
    let session = gtm_loop::outputs::open_session(&lake, date("2024-06-30")).await.unwrap();
    let fp = session.fingerprint;
    let queries = vec![
        // old_value: a column staging.lead does not read.
        "SELECT lead_id, created_date, old_value FROM staging.lead_history WHERE LOWER(field) = 'status'".to_string(),
        "SELECT id, status FROM staging.lead".to_string(),
    ];
    gtm_loop::layers::shared::warm_for(&session, &queries).await.unwrap();
    use gtm_loop::layers::shared::computed_for;
    assert_eq!(computed_for(fp, "staging.lead_history"), 1);
    assert_eq!(computed_for(fp, "staging.lead"), 1);
    // Both queries are served from what was warmed; the later change (K2, the larger id at the
    // same instant) is L1's status.
    let statuses = rows(&lake, date("2024-06-30"), "SELECT id, status FROM staging.lead ORDER BY id").await;
    assert_eq!(statuses, vec!["L1|MQL", "L2|Working"]);
    let changes = rows(&lake, date("2024-06-30"), &format!("SELECT COUNT(*) FROM ({})", queries[0])).await;
    assert_eq!(changes, vec!["3"]);
    assert_eq!(computed_for(fp, "staging.lead_history"), 1, "not computed again for staging.lead's id");
    assert_eq!(computed_for(fp, "staging.lead"), 1);
}
