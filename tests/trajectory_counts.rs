//! The per-deal row counts the win model samples from (sql/learn/deal_landmark_counts.sql) are the
//! deal trajectory counted: for every deal, the rows that carry a stage, those of them at week
//! ends, and whether one is at the run date's week end, read off the whole trajectory built the
//! usual way. The counts SQL never lists the weekly landmarks (it counts them per history span), so
//! this is its independent check, on the full generated lake and on the narrow Salesforce one.

mod common;
use common::*;

use std::collections::BTreeMap;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::TimestampMicrosecondType;
use gtm_loop::layers::AsOf;

const AS_OF: &str = "2026-09-30";

/// Per deal: rows with a stage, of them at week ends, and whether one is at the last week end.
type Counts = BTreeMap<String, (usize, usize, bool)>;

async fn compare(shape: &str, seed: &str) {
    let dir = tempdir();
    let lake_dir = dir.path().join("lake");
    let r = run(&lake_dir, &["generate", "--opportunities", "1500", "--seed", seed, "--shape", shape]);
    assert_eq!(r.code, 0, "generate failed: {}", r.stderr);
    let lake = gtm_loop::lake::Lake::open(lake_dir.to_str().unwrap()).unwrap();
    let session = gtm_loop::outputs::open_session(&lake, AsOf(Some(AS_OF.parse().unwrap()))).await.unwrap();
    // The run date's week end: the first instant after it.
    let end = chrono::NaiveDate::parse_from_str(AS_OF, "%Y-%m-%d")
        .unwrap()
        .succ_opt()
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp_micros();

    let mut counted = Counts::new();
    gtm_loop::learn::trajectory::build_slices_for(
        &session,
        Some(|counts: &[gtm_loop::learn::trajectory::DealCounts]| {
            for c in counts {
                counted.insert(c.id.clone(), (c.rows, c.week_rows, c.open_now));
            }
            // Build nothing: only the counts are wanted here.
            Ok(Vec::new())
        }),
        |_, _| Ok(()),
    )
    .await
    .unwrap();

    let mut built = Counts::new();
    gtm_loop::learn::trajectory::build_slices(&session, |_, batches| {
        for b in &batches {
            let ids = b.column_by_name("opportunity_id").unwrap();
            let ids = datafusion::arrow::compute::cast(ids, &datafusion::arrow::datatypes::DataType::Utf8).unwrap();
            let ids = ids.as_string::<i32>();
            let snapshot = b.column_by_name("snapshot").unwrap();
            let snapshot =
                datafusion::arrow::compute::cast(snapshot, &datafusion::arrow::datatypes::DataType::Utf8).unwrap();
            let snapshot = snapshot.as_string::<i32>();
            let stage = b.column_by_name("stage_name").unwrap();
            let known = b.column_by_name("known_before").unwrap();
            let known = datafusion::arrow::compute::cast(
                known,
                &datafusion::arrow::datatypes::DataType::Timestamp(
                    datafusion::arrow::datatypes::TimeUnit::Microsecond,
                    None,
                ),
            )
            .unwrap();
            let known = known.as_primitive::<TimestampMicrosecondType>();
            for r in 0..b.num_rows() {
                if stage.is_null(r) {
                    continue;
                }
                let e = built.entry(ids.value(r).to_string()).or_default();
                e.0 += 1;
                if snapshot.value(r) == "week" {
                    e.1 += 1;
                    e.2 |= known.value(r) == end;
                }
            }
        }
        Ok(())
    })
    .await
    .unwrap();

    assert!(built.len() > 500, "{shape}: only {} deals have staged rows", built.len());
    let weeks: usize = built.values().map(|c| c.1).sum();
    let open: usize = built.values().filter(|c| c.2).count();
    assert!(weeks > 5 * built.len() && open > 50, "{shape}: {weeks} week rows, {open} open deals");
    let differ: Vec<_> = built
        .iter()
        .filter(|(id, c)| counted.get(*id) != Some(c))
        .map(|(id, c)| format!("{id}: built {c:?}, counted {:?}", counted.get(id)))
        .chain(counted.keys().filter(|id| !built.contains_key(*id)).map(|id| format!("{id}: counted, not built")))
        .take(10)
        .collect();
    assert!(differ.is_empty(), "{shape}: the counts are not the trajectory's:\n{}", differ.join("\n"));
}

#[tokio::test]
async fn the_counts_are_the_trajectory_counted_on_the_full_lake() {
    compare("full", "11").await;
}

#[tokio::test]
async fn the_counts_are_the_trajectory_counted_on_the_narrow_salesforce_lake() {
    compare("salesforce-minimal", "12").await;
}
