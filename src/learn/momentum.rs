//! Momentum (`sql/learn/momentum.sql`, `output.momentum`): the buyer's engagement per open deal
//! and per account, time-decayed, with a trend (rising, flat, falling) called only when an exact
//! binomial test of the last 28 days' touches against the 28 before says the rate changed.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::error::{Error, Result};
use crate::layers::LakeSession;
use crate::layers::columns::{floats, strings};
use crate::outputs::{Manifest, RunWriter};
use crate::stats::binomial_two_sided;

pub const MOMENTUM_FILE: &str = "sql/learn/momentum.sql";
const MOMENTUM_SQL: &str = repo_file!("sql/learn/momentum.sql");
/// A touch this many days old counts half.
pub const HALF_LIFE_DAYS: f64 = 14.0;
/// The trend test's level, and the fewest touches in the two windows at which it can reach it
/// (all 6 on one side: p = 2 / 64 = 0.031; with 5, p = 0.0625 at best, so it is never called).
pub const TREND_ALPHA: f64 = 0.05;
pub const MIN_TOUCHES: i64 = 6;

/// The trend of `recent` touches in the last 28 days against `previous` in the 28 before:
/// under no change each touch falls in either window with probability 1/2.
pub fn trend(recent: i64, previous: i64) -> (&'static str, Option<f64>) {
    let n = recent + previous;
    if n < MIN_TOUCHES {
        return ("not_enough_activity", None);
    }
    let p = binomial_two_sided(recent.max(0) as u64, n.max(0) as u64, 0.5);
    match p {
        Some(p) if p < TREND_ALPHA && recent > previous => ("rising", Some(p)),
        Some(p) if p < TREND_ALPHA && recent < previous => ("falling", Some(p)),
        other => ("flat", other),
    }
}

#[derive(Debug, Clone)]
pub struct Row {
    pub subject_type: String,
    pub subject_id: String,
    pub account_id: Option<String>,
    pub momentum: f64,
    pub recent: i64,
    pub previous: i64,
    pub seller_recent: i64,
    pub days_since_buyer_touch: Option<f64>,
    pub usage_recent: Option<f64>,
    pub usage_previous: Option<f64>,
    pub trend: &'static str,
    pub trend_p: Option<f64>,
}

pub struct MomentumRun {
    pub rows: Vec<Row>,
    pub text: String,
    pub manifest: Manifest,
    pub not_instrumented: Vec<String>,
}

/// What momentum cannot see on this lake: without the task direction no reply is a buyer touch,
/// without events no meeting is; without usage_daily accounts carry no product usage.
fn blind(session: &LakeSession) -> Vec<String> {
    let mut out = Vec::new();
    for (needs, what) in [
        (vec!["task", "concept:task_direction"], "replies and inbound messages"),
        (vec!["event"], "meetings"),
        (vec!["usage_daily"], "product usage"),
    ] {
        let missing = session.missing(&needs.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        if !missing.is_empty() {
            out.push(format!("{what} not instrumented: needs {}", missing.join(", ")));
        }
    }
    out
}

/// Runs the file's `-- @step <table>` sections in order, each registered as its table for the ones
/// after it, and returns the last one's rows; the step tables are dropped afterwards.
async fn run_steps(session: &LakeSession, sql: &str) -> Result<Vec<RecordBatch>> {
    use crate::learn::trajectory::{drop_steps, register_steps, steps};
    let steps = steps(sql);
    let Some(((_, last), before)) = steps.split_last() else {
        return Err(Error::Other(format!("{MOMENTUM_FILE} has no `-- @step` section")));
    };
    register_steps(session, before, MOMENTUM_FILE, "").await?;
    let out = session.collect_declared(last, MOMENTUM_FILE).await;
    drop_steps(session, before)?;
    out
}

pub async fn compute(session: &LakeSession) -> Result<Vec<Row>> {
    let sql = MOMENTUM_SQL.replace("{{half_life_days}}", &format!("{HALF_LIFE_DAYS:.1}"));
    let batches = run_steps(session, &sql).await?;
    let mut out = Vec::new();
    for b in batches {
        let s: Vec<Vec<Option<String>>> = (0..3).map(|i| strings(b.column(i))).collect::<Result<_>>()?;
        let f: Vec<Vec<Option<f64>>> = (3..10).map(|i| floats(b.column(i))).collect::<Result<_>>()?;
        for r in 0..b.num_rows() {
            let count = |k: usize| f[k][r].unwrap_or(0.0) as i64;
            let (recent, previous) = (count(1), count(2));
            let (trend, trend_p) = trend(recent, previous);
            out.push(Row {
                subject_type: s[0][r].clone().unwrap_or_default(),
                subject_id: s[1][r].clone().unwrap_or_default(),
                account_id: s[2][r].clone(),
                momentum: f[0][r].unwrap_or(0.0),
                recent,
                previous,
                seller_recent: count(3),
                days_since_buyer_touch: f[4][r],
                usage_recent: f[5][r],
                usage_previous: f[6][r],
                trend,
                trend_p,
            });
        }
    }
    out.sort_by(|a, b| (&a.subject_type, &a.subject_id).cmp(&(&b.subject_type, &b.subject_id)));
    Ok(out)
}

pub fn schema() -> SchemaRef {
    let s = |n: &str, null: bool| Field::new(n, DataType::Utf8, null);
    let f = |n: &str| Field::new(n, DataType::Float64, true);
    let i = |n: &str| Field::new(n, DataType::Int64, false);
    Arc::new(Schema::new(vec![
        s("as_of_date", false),
        s("subject_type", false),
        s("subject_id", false),
        s("account_id", true),
        Field::new("momentum", DataType::Float64, false),
        i("buyer_touches_28d"),
        i("buyer_touches_prev_28d"),
        i("seller_touches_28d"),
        f("days_since_buyer_touch"),
        s("trend", false),
        f("trend_p"),
        f("active_user_days_28d"),
        f("active_user_days_prev_28d"),
    ]))
}

pub fn batch(rows: &[Row], as_of: &str) -> Result<RecordBatch> {
    let s = |f: &dyn Fn(&Row) -> Option<String>| -> ArrayRef {
        Arc::new(StringArray::from(rows.iter().map(f).collect::<Vec<_>>()))
    };
    let f = |f: &dyn Fn(&Row) -> Option<f64>| -> ArrayRef {
        Arc::new(Float64Array::from(rows.iter().map(f).collect::<Vec<_>>()))
    };
    let i =
        |f: &dyn Fn(&Row) -> i64| -> ArrayRef { Arc::new(Int64Array::from(rows.iter().map(f).collect::<Vec<_>>())) };
    Ok(RecordBatch::try_new(
        schema(),
        vec![
            s(&|_| Some(as_of.to_string())),
            s(&|r| Some(r.subject_type.clone())),
            s(&|r| Some(r.subject_id.clone())),
            s(&|r| r.account_id.clone()),
            f(&|r| Some(r.momentum)),
            i(&|r| r.recent),
            i(&|r| r.previous),
            i(&|r| r.seller_recent),
            f(&|r| r.days_since_buyer_touch),
            s(&|r| Some(r.trend.to_string())),
            f(&|r| r.trend_p),
            f(&|r| r.usage_recent),
            f(&|r| r.usage_previous),
        ],
    )?)
}

/// Computes and publishes `output.momentum` for the session's date.
pub async fn run(session: &LakeSession) -> Result<MomentumRun> {
    let as_of = session.as_of.0.ok_or_else(|| Error::Other("momentum needs --as-of".into()))?;
    let started = std::time::Instant::now();
    let not_instrumented = blind(session);
    let rows = compute(session).await?;
    let mut run = RunWriter::begin(&session.lake, "momentum", session.as_of);
    run.record_inputs(session);
    run.timing("compute", started.elapsed().as_millis() as u64);
    for n in &not_instrumented {
        run.note(format!("momentum: {n}"));
    }
    let b = batch(&rows, &as_of.to_string())?;
    run.write_table("momentum", b.schema(), &[b]).await?;
    let manifest = run.commit().await?;
    let count = |t: &str, tr: &str| rows.iter().filter(|r| r.subject_type == t && r.trend == tr).count();
    let mut text = String::new();
    for t in ["opportunity", "account"] {
        let n = rows.iter().filter(|r| r.subject_type == t).count();
        text.push_str(&format!(
            "momentum as of {as_of}, {n} {t} rows (half-life {HALF_LIFE_DAYS} days): {} rising, {} flat, {} falling, {} with too few touches to call (under {MIN_TOUCHES} in 56 days)\n",
            count(t, "rising"),
            count(t, "flat"),
            count(t, "falling"),
            count(t, "not_enough_activity"),
        ));
    }
    for n in &not_instrumented {
        text.push_str(&format!("  {n}\n"));
    }
    Ok(MomentumRun { rows, text, manifest, not_instrumented })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trend_is_called_only_when_the_test_says_so() {
        // 9 of 10 touches in the last 28 days: p = 2 * 11 / 1024 = 0.0215, rising.
        let (t, p) = trend(9, 1);
        assert_eq!(t, "rising");
        assert!((p.unwrap() - 22.0 / 1024.0).abs() < 1e-12);
        // 8 of 10: p = 2 * 56 / 1024 = 0.109, not called.
        assert_eq!(trend(8, 2).0, "flat");
        assert_eq!(trend(0, 6).0, "falling");
        // 5 of 5 can never reach 0.05: said to be too few, not flat.
        assert_eq!(trend(5, 0), ("not_enough_activity", None));
    }
}
