//! Fitted models (linfa) on feature frames built with Polars from the deal trajectories, handed
//! across through the Arrow C data interface (`frame.rs`): the win-probability model, its held-out evaluation (AUC with a deal-cluster
//! bootstrap interval, Brier score, calibration by decile) against a stage-only model, the CRM's
//! stage probability and, on generated lakes, the true probability; its model card.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use chrono::{Days, NaiveDate};
use datafusion::arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{Field, Schema};
use linfa::prelude::*;
use linfa_logistic::LogisticRegression;
use ndarray::{Array1, Array2};
use polars::prelude::{DataFrame, DataType as PlDataType, IntoLazy, col, lit, when};
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::trajectory;
use crate::error::{Error, Result};
use crate::layers::LakeSession;
use crate::outputs::decision_log::record_id;
use crate::outputs::{Manifest, RunWriter};
use crate::stats::{RankedScores, auc, wilson};

/// Counts and durations: heavy-tailed, entered as log(1 + x).
const LOG_FEATURES: [&str; 15] = [
    "amount",
    "days_in_stage",
    "age_days",
    "contacts",
    "close_pushes",
    "meetings",
    "meetings_28d",
    "inbound_28d",
    "outbound_28d",
    "champion_in_28d",
    "champion_out_28d",
    "champion_in_prev_28d",
    "competitor_mentions",
    "security_mentions",
    "technical_mentions",
];
const FLAG_FEATURES: [&str; 4] = ["has_champion", "has_economic_buyer", "has_technical_buyer", "had_discovery"];
/// The regularisation strengths tried (linfa's L2 weight on the summed log-loss), chosen on a
/// time-ordered validation split.
const ALPHAS: [f64; 5] = [0.1, 10.0, 1_000.0, 10_000.0, 100_000.0];
/// Deals closed in the last this-many days before the run date are the test period.
pub const TEST_DAYS: u64 = 182;
const BOOTSTRAP: usize = 200;
/// At most about this many training rows, and as many test rows, go into the fits and the
/// evaluation: beyond it a fixed sample of deals (by a hash of the id, so the same lake gives the
/// same sample) is used. A few dozen coefficients are pinned down long before this; the weekly
/// rows of one deal are near-copies of each other, so more rows mostly cost time and memory.
/// Every open deal is scored, sampled or not.
pub const MAX_ROWS: usize = 150_000;
/// The fits stop when the gradient of the mean log-loss (per row) is below this.
const GRADIENT_TOLERANCE: f64 = 1e-6;

/// Timestamps as microseconds, whatever unit the trajectory carries.
fn micros() -> PlDataType {
    PlDataType::Datetime(polars::prelude::TimeUnit::Microseconds, None)
}

fn pe(e: polars::prelude::PolarsError) -> Error {
    Error::Other(format!("feature frame (Polars): {e}"))
}

fn le(e: impl std::fmt::Display) -> Error {
    Error::Other(format!("win-probability model (linfa): {e}"))
}

/// One trajectory row as the model sees it.
struct Sample {
    deal: String,
    stage: String,
    snapshot: String,
    known_before: i64,
    closed_at: Option<i64>,
    won: Option<bool>,
    crm_probability: Option<f64>,
    x: Vec<f64>,
    stage_x: Vec<f64>,
}

/// How the rows were thinned to `MAX_ROWS` (all kept when under it).
#[derive(Debug, Clone, Serialize)]
struct Thinning {
    training_rows_eligible: usize,
    training_deals_eligible: usize,
    training_share: f64,
    test_rows_eligible: usize,
    test_deals_eligible: usize,
    test_share: f64,
}

impl Thinning {
    fn sentence(&self) -> Option<String> {
        (self.training_share < 1.0 || self.test_share < 1.0).then(|| {
            format!(
                "a fixed sample of deals (hash of the id): {:.1}% of the {} training deals ({} rows) and {:.1}% of the {} test deals ({} rows), to keep each side near {MAX_ROWS} rows",
                self.training_share * 100.0,
                self.training_deals_eligible,
                self.training_rows_eligible,
                self.test_share * 100.0,
                self.test_deals_eligible,
                self.test_rows_eligible
            )
        })
    }
}

/// A deal's place in [0, 1), fixed by its id: the rollouts' assignment hash, under its own key.
fn deal_draw(id: &str) -> f64 {
    crate::stats::experiment::assignment_uniform("win-model-sample", id)
}

/// How many rows and deals of a frame each model side could use.
#[derive(Debug, Default, Clone, Copy)]
struct Eligible {
    train_rows: usize,
    train_deals: usize,
    test_rows: usize,
    test_deals: usize,
}

impl std::ops::AddAssign for Eligible {
    fn add_assign(&mut self, o: Eligible) {
        self.train_rows += o.train_rows;
        self.train_deals += o.train_deals;
        self.test_rows += o.test_rows;
        self.test_deals += o.test_deals;
    }
}

/// Each row's role, 0: not used, 1: training, 2: test (and stage entries of test deals), 3: open
/// now; its deal's draw (training and test rows only); and the eligible counts.
fn roles(df: &DataFrame, end: i64, cutoff: i64) -> Result<(Vec<u8>, Vec<f64>, Eligible)> {
    let keys = df
        .clone()
        .lazy()
        .select([
            col("opportunity_id"),
            col("snapshot"),
            col("known_before").cast(micros()).cast(PlDataType::Int64).alias("known_before_us"),
            col("closed_at").cast(micros()).cast(PlDataType::Int64).alias("closed_at_us"),
            col("won").is_not_null().alias("decided"),
            col("stage_name").is_not_null().alias("staged"),
        ])
        .collect()
        .map_err(pe)?;
    let deal = keys.column("opportunity_id").map_err(pe)?.str().map_err(pe)?;
    let snapshot = keys.column("snapshot").map_err(pe)?.str().map_err(pe)?;
    let known = keys.column("known_before_us").map_err(pe)?.i64().map_err(pe)?;
    let closed = keys.column("closed_at_us").map_err(pe)?.i64().map_err(pe)?;
    let decided = keys.column("decided").map_err(pe)?.bool().map_err(pe)?;
    let staged = keys.column("staged").map_err(pe)?.bool().map_err(pe)?;
    let mut role = Vec::with_capacity(keys.height());
    let mut draw = Vec::with_capacity(keys.height());
    let mut e = Eligible::default();
    let (mut train_deals, mut test_deals) = (std::collections::HashSet::new(), std::collections::HashSet::new());
    let mut draws: HashMap<&str, f64> = HashMap::new();
    for r in 0..keys.height() {
        let (Some(true), Some(id)) = (staged.get(r), deal.get(r)) else {
            role.push(0u8);
            draw.push(0.0);
            continue;
        };
        let c = closed.get(r).filter(|c| *c < end && decided.get(r) == Some(true));
        let k = match c {
            Some(c) if c < cutoff => {
                e.train_rows += 1;
                train_deals.insert(id);
                1
            }
            Some(_) => {
                e.test_rows += usize::from(snapshot.get(r) == Some("week"));
                test_deals.insert(id);
                2
            }
            None if snapshot.get(r) == Some("week")
                && known.get(r) == Some(end)
                && closed.get(r).is_none_or(|c| c >= end) =>
            {
                3
            }
            None => 0,
        };
        role.push(k);
        draw.push(if k == 1 || k == 2 { *draws.entry(id).or_insert_with(|| deal_draw(id)) } else { 0.0 });
    }
    e.train_deals = train_deals.len();
    e.test_deals = test_deals.len();
    Ok((role, draw, e))
}

/// The deals the model can use, drawn before any feature is built: `roles` and `keep_mask` applied
/// to every deal's row counts instead of its rows. Returns the whole lake's eligible counts and
/// the deals to build: training and test deals whose draw is below their side's share (every
/// landmark), and deals open on the run date that are not among them (the run date's week only,
/// to be scored).
fn sample_deals(counts: &[trajectory::DealCounts], end: i64, cutoff: i64) -> (Eligible, Vec<(String, Option<i64>)>) {
    let mut e = Eligible::default();
    let role = |d: &trajectory::DealCounts| match d.closed_at.filter(|c| *c < end && d.decided) {
        Some(c) if c < cutoff => 1u8,
        Some(_) => 2,
        None if d.open_now => 3,
        None => 0,
    };
    for d in counts.iter().filter(|d| d.rows > 0) {
        match role(d) {
            1 => {
                e.train_rows += d.rows;
                e.train_deals += 1;
            }
            2 => {
                e.test_rows += d.week_rows;
                e.test_deals += 1;
            }
            _ => {}
        }
    }
    let (train, test) = (share(e.train_rows), share(e.test_rows));
    let deals = counts
        .iter()
        .filter(|d| d.rows > 0)
        .filter_map(|d| match role(d) {
            1 if train >= 1.0 || deal_draw(&d.id) < train => Some((d.id.clone(), None)),
            2 if test >= 1.0 || deal_draw(&d.id) < test => Some((d.id.clone(), None)),
            3 => Some((d.id.clone(), Some(end))),
            _ => None,
        })
        .collect();
    (e, deals)
}

/// The rows to keep: every open-now row, and training and test rows whose deal's draw is below
/// that side's share.
fn keep_mask(role: &[u8], draw: &[f64], train: f64, test: f64) -> polars::prelude::BooleanChunked {
    role.iter()
        .zip(draw)
        .map(|(k, d)| match k {
            1 => train >= 1.0 || *d < train,
            2 => test >= 1.0 || *d < test,
            3 => true,
            _ => false,
        })
        .collect()
}

fn share(rows: usize) -> f64 {
    if rows > MAX_ROWS { MAX_ROWS as f64 / rows as f64 } else { 1.0 }
}

/// Keeps the rows the model uses (training, test, open now), thinning training and test deals to
/// about `MAX_ROWS` rows each, before the feature columns are built: on a large lake the trajectory
/// holds tens of millions of weekly rows, and only these become features.
#[cfg(test)]
fn thin(df: DataFrame, end: i64, cutoff: i64) -> Result<(DataFrame, Thinning)> {
    let (role, draw, e) = roles(&df, end, cutoff)?;
    let thinning = Thinning {
        training_rows_eligible: e.train_rows,
        training_deals_eligible: e.train_deals,
        training_share: share(e.train_rows),
        test_rows_eligible: e.test_rows,
        test_deals_eligible: e.test_deals,
        test_share: share(e.test_rows),
    };
    let mask = keep_mask(&role, &draw, thinning.training_share, thinning.test_share);
    Ok((df.filter(&mask).map_err(pe)?, thinning))
}

/// `thin` applied slice by slice of the trajectory, so the whole trajectory is never held (on a
/// million deals it is tens of millions of rows and its frame did not fit in 24 GiB). Each slice
/// keeps its rows whose deal's draw is below a running threshold per side; when a side holds more
/// than `4 * MAX_ROWS` rows, its threshold halves and the held slices are filtered again. The
/// final share (`MAX_ROWS` over every eligible row) is then applied as `thin` would: a threshold
/// only halves while it holds more than twice the rows the final share needs, so it stays above
/// that share and the sample is the one `thin` takes of the whole trajectory (the deals drawn below
/// the share). Were it ever below, the share reported is the threshold actually used.
struct SliceSampler {
    end: i64,
    cutoff: i64,
    frames: Vec<DataFrame>,
    eligible: Eligible,
    /// Running thresholds (training, test) and the rows held under them.
    train: f64,
    test: f64,
    held_train: usize,
    held_test: usize,
}

impl SliceSampler {
    fn new(end: i64, cutoff: i64) -> SliceSampler {
        SliceSampler {
            end,
            cutoff,
            frames: Vec::new(),
            eligible: Eligible::default(),
            train: 1.0,
            test: 1.0,
            held_train: 0,
            held_test: 0,
        }
    }

    fn add(&mut self, df: DataFrame) -> Result<()> {
        let (role, draw, e) = roles(&df, self.end, self.cutoff)?;
        self.eligible += e;
        let mask = keep_mask(&role, &draw, self.train, self.test);
        for (k, keep) in role.iter().zip(mask.iter()) {
            if keep == Some(true) {
                self.held_train += usize::from(*k == 1);
                self.held_test += usize::from(*k == 2);
            }
        }
        self.frames.push(df.filter(&mask).map_err(pe)?);
        while self.held_train > 4 * MAX_ROWS || self.held_test > 4 * MAX_ROWS {
            if self.held_train > 4 * MAX_ROWS {
                self.train /= 2.0;
            }
            if self.held_test > 4 * MAX_ROWS {
                self.test /= 2.0;
            }
            self.refilter()?;
        }
        Ok(())
    }

    /// Filters the held slices with the current thresholds and recounts them.
    fn refilter(&mut self) -> Result<()> {
        (self.held_train, self.held_test) = (0, 0);
        for frame in &mut self.frames {
            let (role, draw, _) = roles(frame, self.end, self.cutoff)?;
            let mask = keep_mask(&role, &draw, self.train, self.test);
            for (k, keep) in role.iter().zip(mask.iter()) {
                if keep == Some(true) {
                    self.held_train += usize::from(*k == 1);
                    self.held_test += usize::from(*k == 2);
                }
            }
            *frame = frame.filter(&mask).map_err(pe)?;
        }
        Ok(())
    }

    /// `whole`: the eligible counts of the whole lake when the slices held only the deals drawn
    /// from them (`sample_deals`); the shares are then the whole lake's.
    fn finish(self, empty: DataFrame, whole: Option<Eligible>) -> Result<(DataFrame, Thinning)> {
        let e = whole.unwrap_or(self.eligible);
        let thinning = Thinning {
            training_rows_eligible: e.train_rows,
            training_deals_eligible: e.train_deals,
            training_share: share(e.train_rows).min(self.train),
            test_rows_eligible: e.test_rows,
            test_deals_eligible: e.test_deals,
            test_share: share(e.test_rows).min(self.test),
        };
        let mut all = empty;
        for frame in &self.frames {
            all.vstack_mut(frame).map_err(pe)?;
        }
        all.rechunk_mut();
        let (role, draw, _) = roles(&all, self.end, self.cutoff)?;
        let mask = keep_mask(&role, &draw, thinning.training_share, thinning.test_share);
        Ok((all.filter(&mask).map_err(pe)?, thinning))
    }
}

/// Builds the feature frame with Polars: stage and size-band indicators, numeric features cast and
/// null-filled, from the trajectory (handed over through the Arrow C data interface).
fn feature_frame(df: DataFrame) -> Result<(Vec<String>, Vec<String>, Vec<Sample>)> {
    let distinct = |name: &str| -> Result<Vec<String>> {
        let mut v: Vec<String> =
            df.column(name).map_err(pe)?.str().map_err(pe)?.iter().flatten().map(str::to_string).collect();
        v.sort();
        v.dedup();
        Ok(v)
    };
    let stages = distinct("stage_name")?;
    let bands = distinct("size_band")?;
    let mut exprs = vec![
        col("opportunity_id"),
        col("stage_name"),
        col("snapshot"),
        col("known_before").cast(micros()).cast(PlDataType::Int64).alias("known_before_us"),
        col("closed_at").cast(micros()).cast(PlDataType::Int64).alias("closed_at_us"),
        col("won"),
        col("probability").cast(PlDataType::Float64).alias("crm_probability"),
    ];
    let mut names = Vec::new();
    for c in LOG_FEATURES {
        exprs.push(col(c).cast(PlDataType::Float64).fill_null(lit(0.0)).alias(format!("f_{c}")));
        names.push(format!("log1p({c})"));
    }
    for c in FLAG_FEATURES {
        exprs.push(col(c).cast(PlDataType::Float64).fill_null(lit(0.0)).alias(format!("f_{c}")));
        names.push(c.to_string());
    }
    // Indicators: every stage but the first and every size band but the first (the intercept
    // carries the reference level).
    for (i, s) in stages.iter().enumerate().skip(1) {
        exprs.push(
            when(col("stage_name").eq(lit(s.as_str()))).then(lit(1.0)).otherwise(lit(0.0)).alias(format!("s_{i}")),
        );
        names.push(format!("stage = {s}"));
    }
    for (i, b) in bands.iter().enumerate().skip(1) {
        exprs.push(
            when(col("size_band").eq(lit(b.as_str()))).then(lit(1.0)).otherwise(lit(0.0)).alias(format!("b_{i}")),
        );
        names.push(format!("size_band = {b}"));
    }
    // Sorted: DataFusion's partitions hand rows over in any order, and the fit (a few hundred
    // L-BFGS steps) must see the same rows in the same order to give the same model.
    let frame = df
        .lazy()
        .filter(col("stage_name").is_not_null())
        .select(exprs)
        .sort(["opportunity_id", "known_before_us", "snapshot"], Default::default())
        .collect()
        .map_err(pe)?;
    let n = frame.height();
    let s = |name: &str| -> Result<Vec<Option<String>>> {
        Ok(frame.column(name).map_err(pe)?.str().map_err(pe)?.iter().map(|v| v.map(str::to_string)).collect())
    };
    let i = |name: &str| -> Result<Vec<Option<i64>>> {
        Ok(frame.column(name).map_err(pe)?.i64().map_err(pe)?.iter().collect())
    };
    let f = |name: &str| -> Result<Vec<Option<f64>>> {
        Ok(frame.column(name).map_err(pe)?.f64().map_err(pe)?.iter().collect())
    };
    let (deal, stage, snapshot) = (s("opportunity_id")?, s("stage_name")?, s("snapshot")?);
    let (known, closed) = (i("known_before_us")?, i("closed_at_us")?);
    let won: Vec<Option<bool>> = frame.column("won").map_err(pe)?.bool().map_err(pe)?.iter().collect();
    let crm = f("crm_probability")?;
    let mut cols: Vec<Vec<f64>> = Vec::new();
    for c in LOG_FEATURES {
        cols.push(f(&format!("f_{c}"))?.into_iter().map(|v| v.unwrap_or(0.0).max(0.0).ln_1p()).collect());
    }
    for c in FLAG_FEATURES {
        cols.push(f(&format!("f_{c}"))?.into_iter().map(|v| v.unwrap_or(0.0)).collect());
    }
    let stage_cols: Vec<Vec<f64>> = (1..stages.len())
        .map(|k| f(&format!("s_{k}")).map(|v| v.into_iter().map(|x| x.unwrap_or(0.0)).collect()))
        .collect::<Result<_>>()?;
    cols.extend(stage_cols.iter().cloned());
    for k in 1..bands.len() {
        cols.push(f(&format!("b_{k}"))?.into_iter().map(|x| x.unwrap_or(0.0)).collect());
    }
    let samples = (0..n)
        .map(|r| Sample {
            deal: deal[r].clone().unwrap_or_default(),
            stage: stage[r].clone().unwrap_or_default(),
            snapshot: snapshot[r].clone().unwrap_or_default(),
            known_before: known[r].unwrap_or(0),
            closed_at: closed[r],
            won: won[r],
            crm_probability: crm[r].map(|p| p / 100.0),
            x: cols.iter().map(|c| c[r]).collect(),
            stage_x: stage_cols.iter().map(|c| c[r]).collect(),
        })
        .collect();
    Ok((names, stages, samples))
}

/// Standardisation learned on the training rows.
pub(crate) struct Scaler {
    mean: Vec<f64>,
    sd: Vec<f64>,
}

impl Scaler {
    pub(crate) fn fit(rows: &[&Vec<f64>]) -> Scaler {
        let k = rows.first().map(|r| r.len()).unwrap_or(0);
        let n = rows.len().max(1) as f64;
        let mean: Vec<f64> = (0..k).map(|j| rows.iter().map(|r| r[j]).sum::<f64>() / n).collect();
        let sd = (0..k)
            .map(|j| {
                let v = rows.iter().map(|r| (r[j] - mean[j]).powi(2)).sum::<f64>() / n;
                if v > 1e-12 { v.sqrt() } else { 1.0 }
            })
            .collect();
        Scaler { mean, sd }
    }
    pub(crate) fn matrix(&self, rows: &[&Vec<f64>]) -> Array2<f64> {
        let k = self.mean.len();
        Array2::from_shape_fn((rows.len(), k), |(i, j)| (rows[i][j] - self.mean[j]) / self.sd[j])
    }
}

struct Fitted {
    model: linfa_logistic::FittedLogisticRegression<f64, bool>,
    scaler: Scaler,
    alpha: f64,
    validation: Vec<(f64, f64)>,
}

impl Fitted {
    fn predict(&self, rows: &[&Vec<f64>]) -> Vec<f64> {
        if rows.is_empty() {
            return Vec::new();
        }
        win_probabilities(&self.model, &self.scaler.matrix(rows))
    }
}

/// P(won). linfa's `predict_probabilities` is the probability of its "positive" class, which is
/// the more frequent label in the training data (not `true`): flip it when that is a loss.
pub(crate) fn win_probabilities(
    model: &linfa_logistic::FittedLogisticRegression<f64, bool>,
    x: &Array2<f64>,
) -> Vec<f64> {
    let p = model.predict_probabilities(x);
    if model.labels().pos.class { p.to_vec() } else { p.iter().map(|v| 1.0 - v).collect() }
}

pub(crate) fn fit_once(
    rows: &[&Vec<f64>],
    y: &[bool],
    alpha: f64,
    scaler: &Scaler,
) -> Result<linfa_logistic::FittedLogisticRegression<f64, bool>> {
    let data = Dataset::new(scaler.matrix(rows), Array1::from(y.to_vec()));
    // linfa minimises the summed log-loss, so its gradient grows with the rows: a fixed tolerance
    // (its default 1e-4) tightens with every row, and on thousands of rows fits ran up to their
    // iteration cap. They stop when the gradient of the mean loss is below GRADIENT_TOLERANCE.
    let tolerance = (GRADIENT_TOLERANCE * rows.len() as f64).max(1e-4);
    LogisticRegression::default().alpha(alpha).gradient_tolerance(tolerance).max_iterations(200).fit(&data).map_err(le)
}

pub(crate) fn log_loss(p: &[f64], y: &[bool]) -> f64 {
    let n = p.len().max(1) as f64;
    -p.iter()
        .zip(y)
        .map(|(p, y)| {
            let p = p.clamp(1e-9, 1.0 - 1e-9);
            if *y { p.ln() } else { (1.0 - p).ln() }
        })
        .sum::<f64>()
        / n
}

/// One model's training rows: features, outcomes and close times.
struct TrainingSet<'a> {
    rows: Vec<&'a Vec<f64>>,
    y: &'a [bool],
    closed: &'a [i64],
}

/// Fits each model on its training rows, choosing its alpha on the latest quarter of them (by
/// close time). Every fit is deterministic, so they are spread over the cores and the results are
/// the same as one after the other. They run as a queue with one dependency: a model's final fit
/// (all its rows, at the alpha its validation fits chose) is queued as soon as the last of its own
/// validation fits is done, ahead of the other models' validation fits. Fitted in two rounds (every
/// validation fit, then the finals), the full model's final fit, the longest, ran alone on one
/// core for about 2 s of a million-deal weekly run while the stage-only model's final took 0.1.
fn fit_models(sets: &[TrainingSet]) -> Result<Vec<Fitted>> {
    struct Split<'a> {
        early: Vec<&'a Vec<f64>>,
        ye: Vec<bool>,
        late: Vec<&'a Vec<f64>>,
        yl: Vec<bool>,
        scaler: Scaler,
    }
    let splits: Vec<Split> = sets
        .iter()
        .map(|set| {
            let mut order: Vec<usize> = (0..set.rows.len()).collect();
            order.sort_by_key(|&i| set.closed[i]);
            let (early, late) = order.split_at(set.rows.len() * 3 / 4);
            let pick = |idx: &[usize]| -> (Vec<&Vec<f64>>, Vec<bool>) {
                (idx.iter().map(|&i| set.rows[i]).collect(), idx.iter().map(|&i| set.y[i]).collect())
            };
            let ((early, ye), (late, yl)) = (pick(early), pick(late));
            let scaler = Scaler::fit(&early);
            Split { early, ye, late, yl, scaler }
        })
        .collect();
    // A model whose earlier rows all have one outcome has no validation: alpha 1.0.
    let validated: Vec<bool> = splits.iter().map(|s| !(s.ye.iter().all(|v| *v) || s.ye.iter().all(|v| !*v))).collect();
    let mut queue = std::collections::VecDeque::new();
    for (m, v) in validated.iter().enumerate() {
        if *v {
            queue.extend((0..ALPHAS.len()).map(|a| FitJob::Validation(m, a)));
        } else {
            queue.push_front(FitJob::Final(m, 1.0));
        }
    }
    let queue = FitQueue::new(queue, sets.len());
    let done = queue.run(|fit| match fit {
        FitJob::Validation(m, a) => {
            let s = &splits[m];
            let fitted = fit_once(&s.early, &s.ye, ALPHAS[a], &s.scaler)?;
            Ok(FitDone::Loss(log_loss(&win_probabilities(&fitted, &s.scaler.matrix(&s.late)), &s.yl)))
        }
        FitJob::Final(m, alpha) => {
            let scaler = Scaler::fit(&sets[m].rows);
            Ok(FitDone::Model(fit_once(&sets[m].rows, sets[m].y, alpha, &scaler)?, scaler))
        }
    })?;
    Ok(done.into_iter().map(|(model, scaler, alpha, validation)| Fitted { model, scaler, alpha, validation }).collect())
}

/// One model's scores to evaluate: its name, (probability, won) per test row, and each row's deal.
type Evaluation<'a> = (&'a str, Vec<(f64, bool)>, Vec<usize>);

/// One fit of `fit_models`: model m's validation fit at ALPHAS[a], or its final fit at an alpha.
#[derive(Clone, Copy, Debug)]
enum FitJob {
    Validation(usize, usize),
    Final(usize, f64),
}

/// What a fit gives: a validation log-loss, or a final model with its scaler.
enum FitDone {
    Loss(f64),
    Model(linfa_logistic::FittedLogisticRegression<f64, bool>, Scaler),
}

/// A model's final fit, its scaler, its alpha and its validation log-losses (alpha, loss).
type FinalFit = (linfa_logistic::FittedLogisticRegression<f64, bool>, Scaler, f64, Vec<(f64, f64)>);

/// The fits of `fit_models` on as many threads as there are cores, each thread taking the next
/// queued fit; a model's final fit is queued (first) once its validation fits are all done.
struct FitQueue {
    state: std::sync::Mutex<FitState>,
    ready: std::sync::Condvar,
}

struct FitState {
    queue: std::collections::VecDeque<FitJob>,
    running: usize,
    losses: Vec<Vec<Option<f64>>>,
    finals: Vec<Option<FinalFit>>,
    failed: Option<Error>,
}

impl FitQueue {
    fn new(queue: std::collections::VecDeque<FitJob>, models: usize) -> FitQueue {
        FitQueue {
            state: std::sync::Mutex::new(FitState {
                queue,
                running: 0,
                losses: vec![vec![None; ALPHAS.len()]; models],
                finals: (0..models).map(|_| None).collect(),
                failed: None,
            }),
            ready: std::sync::Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FitState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn run(self, fit: impl Fn(FitJob) -> Result<FitDone> + Sync) -> Result<Vec<FinalFit>> {
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).max(1);
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| self.work(&fit));
            }
        });
        let state = self.state.into_inner().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = state.failed {
            return Err(e);
        }
        state
            .finals
            .into_iter()
            .map(|f| f.ok_or_else(|| Error::Other("a model's final fit did not run".into())))
            .collect()
    }

    fn work(&self, fit: &(impl Fn(FitJob) -> Result<FitDone> + Sync)) {
        loop {
            let job = {
                let mut state = self.lock();
                loop {
                    if state.failed.is_some() {
                        return;
                    }
                    if let Some(job) = state.queue.pop_front() {
                        state.running += 1;
                        break job;
                    }
                    if state.running == 0 {
                        return;
                    }
                    state = self.ready.wait(state).unwrap_or_else(|e| e.into_inner());
                }
            };
            // A panicking fit is an error like any other, so no thread waits for it forever.
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fit(job)))
                .unwrap_or_else(|_| Err(Error::Other(format!("a model fit panicked ({job:?})"))));
            let mut state = self.lock();
            state.running -= 1;
            match (job, result) {
                (_, Err(e)) => state.failed = Some(e),
                (FitJob::Validation(m, a), Ok(FitDone::Loss(loss))) => {
                    state.losses[m][a] = Some(loss);
                    if state.losses[m].iter().all(Option::is_some) {
                        let validation: Vec<(f64, f64)> =
                            ALPHAS.iter().zip(&state.losses[m]).map(|(a, l)| (*a, l.unwrap_or(f64::NAN))).collect();
                        let alpha = validation.iter().min_by(|a, b| a.1.total_cmp(&b.1)).map(|v| v.0).unwrap_or(1.0);
                        state.queue.push_front(FitJob::Final(m, alpha));
                    }
                }
                (FitJob::Final(m, alpha), Ok(FitDone::Model(model, scaler))) => {
                    let validation: Vec<(f64, f64)> = if state.losses[m].iter().all(Option::is_some) {
                        ALPHAS.iter().zip(&state.losses[m]).map(|(a, l)| (*a, l.unwrap_or(f64::NAN))).collect()
                    } else {
                        Vec::new()
                    };
                    state.finals[m] = Some((model, scaler, alpha, validation));
                }
                (job, Ok(_)) => {
                    state.failed = Some(Error::Other(format!("a model fit gave the wrong result ({job:?})")))
                }
            }
            self.ready.notify_all();
        }
    }
}

/// `f` over `items` on as many threads as there are cores (at most one per item), each taking
/// the next item not yet taken; the results in the items' order.
fn in_parallel<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(items.len()).max(1);
    let next = AtomicUsize::new(0);
    let results: std::sync::Mutex<Vec<Option<R>>> = std::sync::Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    let r = f(item);
                    results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
                }
            });
        }
    });
    // A panic in `f` panics the scope above, so every slot is filled here.
    results.into_inner().unwrap_or_else(|e| e.into_inner()).into_iter().flatten().collect()
}

/// One metric of one model on the test rows.
#[derive(Debug, Clone, Serialize)]
pub struct Metric {
    pub model: String,
    pub metric: String,
    pub value: f64,
    pub low: Option<f64>,
    pub high: Option<f64>,
    pub n: i64,
}

/// AUC with a bootstrap interval that resamples deals (a deal's rows move together).
pub(crate) fn auc_with_interval(
    scored: &[(f64, bool)],
    deals: &[usize],
    n_deals: usize,
    seed: u64,
) -> Option<(f64, f64, f64)> {
    let point = auc(scored)?;
    // Sorted once: a resample is a weighting of the rows by how often their deal was drawn, so
    // each replicate is one pass (no copy, no sort), with the same draws and the same answer.
    let ranked = RankedScores::new(scored);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut reps = Vec::with_capacity(BOOTSTRAP);
    let mut drawn = vec![0.0f64; n_deals];
    let mut weight = vec![0.0f64; scored.len()];
    for _ in 0..BOOTSTRAP {
        drawn.iter_mut().for_each(|d| *d = 0.0);
        for _ in 0..n_deals {
            drawn[rng.random_range(0..n_deals)] += 1.0;
        }
        for (w, d) in weight.iter_mut().zip(deals) {
            *w = drawn[*d];
        }
        if let Some(a) = ranked.weighted_auc(&weight) {
            reps.push(a);
        }
    }
    reps.sort_by(f64::total_cmp);
    let q = |p: f64| reps[((reps.len() as f64 - 1.0) * p).round() as usize];
    (!reps.is_empty()).then(|| (point, q(0.025), q(0.975)))
}

fn brier(scored: &[(f64, bool)]) -> f64 {
    scored.iter().map(|(p, y)| (p - f64::from(u8::from(*y))).powi(2)).sum::<f64>() / scored.len().max(1) as f64
}

/// Calibration by decile of the predicted probability: (n, mean predicted, observed, 95% CI).
fn calibration(scored: &[(f64, bool)]) -> Vec<(usize, f64, f64, (f64, f64))> {
    let mut s = scored.to_vec();
    s.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n = s.len();
    (0..10)
        .filter_map(|k| {
            let (lo, hi) = (n * k / 10, n * (k + 1) / 10);
            let bin = &s[lo..hi];
            if bin.is_empty() {
                return None;
            }
            let wins = bin.iter().filter(|v| v.1).count();
            let mean = bin.iter().map(|v| v.0).sum::<f64>() / bin.len() as f64;
            Some((bin.len(), mean, wins as f64 / bin.len() as f64, wilson(wins as i64, bin.len() as i64)?))
        })
        .collect()
}

/// What the win-probability run produced.
pub struct WinModelRun {
    pub text: String,
    pub metrics: Vec<Metric>,
    pub manifest: Manifest,
    pub model_version: String,
    pub predictions: usize,
}

#[derive(Serialize)]
struct ModelCard<'a> {
    model: &'a str,
    version: &'a str,
    /// The code that fitted it (the run's manifest holds the wall-clock time): the same inputs
    /// and code give the same card.
    code_version: &'static str,
    as_of: String,
    algorithm: &'static str,
    features: &'a [String],
    coefficients: Vec<(String, f64)>,
    intercept: f64,
    alpha: f64,
    validation_log_loss: &'a [(f64, f64)],
    training_window: String,
    test_window: String,
    training_rows: usize,
    training_deals: usize,
    /// Which of the eligible rows were used (all, or a fixed sample of deals on a large lake).
    sample: String,
    thinning: Thinning,
    test_rows: usize,
    test_deals: usize,
    metrics: &'a [Metric],
    calibration: Vec<(usize, f64, f64, (f64, f64))>,
    must_not_be_used_for: [&'static str; 4],
}

/// Fits the win-probability model as of the run date, evaluates it on the deals closed in the last
/// `TEST_DAYS`, and publishes a probability for every deal open on the run date.
pub async fn run_win_model(session: &LakeSession) -> Result<WinModelRun> {
    let started = std::time::Instant::now();
    let as_of = session.as_of.0.ok_or_else(|| Error::Other("the win model needs --as-of".into()))?;
    let micros = |d: NaiveDate| d.and_hms_opt(0, 0, 0).expect("midnight").and_utc().timestamp_micros();
    let end = micros(as_of.checked_add_days(Days::new(1)).unwrap_or(as_of));
    let cutoff = micros(as_of.checked_sub_days(Days::new(TEST_DAYS)).unwrap_or(as_of));
    // The sample of deals is drawn from every deal's row counts before any feature is built, and
    // only the sampled deals (every landmark) and the open ones (this week's) are built; the rows
    // are then thinned slice by slice as before, with the shares of the whole lake.
    let mut sampler = SliceSampler::new(end, cutoff);
    let mut whole: Option<Eligible> = None;
    let choose = |counts: &[trajectory::DealCounts]| {
        let (eligible, deals) = sample_deals(counts, end, cutoff);
        whole = Some(eligible);
        Ok(deals)
    };
    let (schema, _) = trajectory::build_slices_for(session, Some(choose), |schema, rows| {
        sampler.add(super::frame::to_polars(schema, &rows)?)
    })
    .await?;
    let built_ms = started.elapsed().as_millis() as u64;
    let (frame, thinning) = sampler.finish(super::frame::to_polars(&schema, &[])?, whole)?;
    let (names, _stages, samples) = feature_frame(frame)?;
    let frame_ms = started.elapsed().as_millis() as u64;
    // Training: weekly rows of deals closed before the cut-off (their outcome was known then).
    // Test: stage-entry rows of deals closed from the cut-off to the run date.
    let closed = |s: &Sample| s.closed_at.filter(|c| *c < end).is_some() && s.won.is_some();
    let train: Vec<&Sample> =
        samples.iter().filter(|s| closed(s) && s.closed_at.unwrap_or(i64::MAX) < cutoff).collect();
    let test: Vec<&Sample> =
        samples.iter().filter(|s| s.snapshot == "week" && closed(s) && s.closed_at.unwrap_or(0) >= cutoff).collect();
    // The generator's true probability is defined at stage entries: compared there.
    let entries: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.snapshot == "stage_entry" && closed(s) && s.closed_at.unwrap_or(0) >= cutoff)
        .collect();
    let open_now: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.snapshot == "week" && s.known_before == end && s.closed_at.is_none_or(|c| c >= end))
        .collect();
    let deals = |v: &[&Sample]| v.iter().map(|s| s.deal.as_str()).collect::<std::collections::BTreeSet<_>>().len();
    if deals(&train) < 50 || deals(&test) < 30 {
        return Err(Error::Other(format!(
            "not enough evidence to fit a win model as of {as_of}: {} deals closed before {} and {} after (needs 50 and 30)",
            deals(&train),
            as_of - chrono::Duration::days(TEST_DAYS as i64),
            deals(&test)
        )));
    }
    let y_train: Vec<bool> = train.iter().map(|s| s.won == Some(true)).collect();
    let closed_train: Vec<i64> = train.iter().map(|s| s.closed_at.unwrap_or(0)).collect();
    let mut fitted = fit_models(&[
        TrainingSet { rows: train.iter().map(|s| &s.x).collect(), y: &y_train, closed: &closed_train },
        TrainingSet { rows: train.iter().map(|s| &s.stage_x).collect(), y: &y_train, closed: &closed_train },
    ])?
    .into_iter();
    let (Some(full), Some(stage_only)) = (fitted.next(), fitted.next()) else {
        return Err(Error::Other("the win model's fits returned fewer models than asked".into()));
    };
    let fitted_ms = started.elapsed().as_millis() as u64;
    let p_full = full.predict(&test.iter().map(|s| &s.x).collect::<Vec<_>>());
    let p_stage = stage_only.predict(&test.iter().map(|s| &s.stage_x).collect::<Vec<_>>());
    let y_test: Vec<bool> = test.iter().map(|s| s.won == Some(true)).collect();
    let mut deal_ix: HashMap<&str, usize> = HashMap::new();
    let deal_of: Vec<usize> = test
        .iter()
        .map(|s| {
            let n = deal_ix.len();
            *deal_ix.entry(s.deal.as_str()).or_insert(n)
        })
        .collect();
    let oracle = read_oracle(session, &entries.iter().map(|s| s.deal.as_str()).collect()).await?;
    // Each evaluation (its AUC's deal bootstrap above all) is independent of the others: listed
    // here in their order, computed on every core, and published in the same order.
    let mut evaluations: Vec<Evaluation> = Vec::new();
    let zip = |p: &[f64]| p.iter().copied().zip(y_test.iter().copied()).collect::<Vec<_>>();
    evaluations.push(("win_model", zip(&p_full), deal_of.clone()));
    evaluations.push(("stage_only", zip(&p_stage), deal_of.clone()));
    let crm: Vec<(usize, (f64, bool))> =
        test.iter().enumerate().filter_map(|(i, s)| s.crm_probability.map(|p| (i, (p, y_test[i])))).collect();
    if !crm.is_empty() {
        evaluations.push((
            "crm_stage_probability",
            crm.iter().map(|c| c.1).collect(),
            crm.iter().map(|c| deal_of[c.0]).collect(),
        ));
    }
    let mut oracle_rows = 0;
    if let Some(truth) = &oracle {
        let on: Vec<(&Sample, f64)> =
            entries.iter().filter_map(|s| truth.get(&(s.deal.clone(), s.stage.clone())).map(|p| (*s, *p))).collect();
        let y_on: Vec<bool> = on.iter().map(|(s, _)| s.won == Some(true)).collect();
        let mut ix: HashMap<&str, usize> = HashMap::new();
        let deal_on: Vec<usize> = on
            .iter()
            .map(|(s, _)| {
                let n = ix.len();
                *ix.entry(s.deal.as_str()).or_insert(n)
            })
            .collect();
        let p_model = full.predict(&on.iter().map(|(s, _)| &s.x).collect::<Vec<_>>());
        let p_stage_on = stage_only.predict(&on.iter().map(|(s, _)| &s.stage_x).collect::<Vec<_>>());
        oracle_rows = on.len();
        if oracle_rows > 0 {
            let with = |p: &[f64]| p.iter().copied().zip(y_on.iter().copied()).collect::<Vec<_>>();
            let truth: Vec<f64> = on.iter().map(|(_, p)| *p).collect();
            evaluations.push(("true_probability", with(&truth), deal_on.clone()));
            evaluations.push(("win_model_at_stage_entries", with(&p_model), deal_on.clone()));
            evaluations.push(("stage_only_at_stage_entries", with(&p_stage_on), deal_on));
        }
    }
    let evaluated = in_parallel(&evaluations, |(_, scored, deals_of)| {
        let n_deals = deals_of.iter().copied().max().map(|m| m + 1).unwrap_or(0);
        (auc_with_interval(scored, deals_of, n_deals, 7), brier(scored), scored.len() as i64)
    });
    let evaluated_ms = started.elapsed().as_millis() as u64;
    let mut metrics = Vec::new();
    for ((model, _, _), (auc, brier, n)) in evaluations.iter().zip(evaluated) {
        if let Some((a, lo, hi)) = auc {
            metrics.push(Metric {
                model: model.to_string(),
                metric: "auc".into(),
                value: a,
                low: Some(lo),
                high: Some(hi),
                n,
            });
        }
        metrics.push(Metric {
            model: model.to_string(),
            metric: "brier".into(),
            value: brier,
            low: None,
            high: None,
            n,
        });
    }
    let calib = calibration(&zip(&p_full));
    let coefficients: Vec<(String, f64)> =
        names.iter().cloned().zip(full.model.params().iter().zip(&full.scaler.sd).map(|(b, sd)| b / sd)).collect();
    // Versioned by what was fitted: the same stable hash the decision log ids use.
    let fitted: Vec<String> =
        full.model.params().iter().chain([full.model.intercept()].iter()).map(|v| format!("{v:e}")).collect();
    let version = format!("win-{as_of}-{}", &record_id(&fitted.iter().map(String::as_str).collect::<Vec<_>>())[..8]);
    let p_open = full.predict(&open_now.iter().map(|s| &s.x).collect::<Vec<_>>());
    let mut text = summary(
        &metrics,
        &full,
        &calib,
        train.len(),
        deals(&train),
        test.len(),
        deals(&test),
        oracle_rows,
        p_open.len(),
        &version,
    );
    if let Some(sample) = thinning.sentence() {
        text.push_str(&format!("rows used: {sample}\n"));
    }
    let card = ModelCard {
        model: "win_probability",
        version: &version,
        code_version: crate::outputs::CODE_VERSION,
        as_of: as_of.to_string(),
        algorithm: "L2-regularised logistic regression (linfa-logistic), standardised features, alpha chosen on the latest quarter of the training deals by log-loss",
        features: &names,
        coefficients,
        intercept: full.model.intercept(),
        alpha: full.alpha,
        validation_log_loss: &full.validation,
        training_window: format!(
            "weekly rows and stage entries of deals closed before {}",
            as_of - chrono::Duration::days(TEST_DAYS as i64)
        ),
        test_window: format!(
            "weekly rows of deals closed from {} to {as_of} (stage entries for the true probability)",
            as_of - chrono::Duration::days(TEST_DAYS as i64)
        ),
        training_rows: train.len(),
        training_deals: deals(&train),
        sample: thinning.sentence().unwrap_or_else(|| "every eligible row".into()),
        thinning: thinning.clone(),
        test_rows: test.len(),
        test_deals: deals(&test),
        metrics: &metrics,
        calibration: calib.clone(),
        must_not_be_used_for: [
            "judging sellers: it scores deal signals, and a seller's book carries their segment and territory",
            "causal claims: a coefficient is an association; stage-stratified effects are in output.patterns",
            "deals unlike its training deals (another segment mix, currency or sales motion) or another lake",
            "forecast commits without the calibration table: read probabilities by decile, not one by one",
        ],
    };
    let mut run = RunWriter::begin(&session.lake, "models", session.as_of);
    run.record_inputs(session);
    run.set_playbook_version(version.clone());
    run.timing("trajectory", built_ms);
    run.timing("feature_frame", frame_ms - built_ms);
    run.timing("fit", fitted_ms - frame_ms);
    run.timing("evaluation", evaluated_ms - fitted_ms);
    let card_json = serde_json::to_vec_pretty(&card).map_err(|e| Error::Other(e.to_string()))?;
    run.write_artifact("model_card_win_probability.json", card_json).await?;
    run.write_artifact("model_card_win_probability.md", model_card_markdown(&card).into_bytes()).await?;
    let probs = RecordBatch::try_from_iter(vec![
        (
            "opportunity_id",
            Arc::new(StringArray::from(open_now.iter().map(|s| s.deal.clone()).collect::<Vec<_>>())) as ArrayRef,
        ),
        (
            "stage_name",
            Arc::new(StringArray::from(open_now.iter().map(|s| s.stage.clone()).collect::<Vec<_>>())) as ArrayRef,
        ),
        ("win_probability", Arc::new(Float64Array::from(p_open.clone())) as ArrayRef),
        ("model_version", Arc::new(StringArray::from(vec![version.clone(); open_now.len()])) as ArrayRef),
    ])?;
    run.write_table("win_probability", probs.schema(), &[probs]).await?;
    let m = metrics_batch(&metrics, &version)?;
    run.write_table("model_metrics", m.schema(), &[m]).await?;
    run.timing("models", started.elapsed().as_millis() as u64);
    let manifest = run.commit().await?;
    Ok(WinModelRun { text, metrics, manifest, model_version: version, predictions: p_open.len() })
}

/// The generator's truth_win_probability.csv, when the lake has one: the rows of the deals asked
/// for (the test period's stage entries). The file has a row per stage entry of every deal (156 MB
/// on a million deals); reading all of it into a map took 1.5 s of one core in every weekly run.
async fn read_oracle(
    session: &LakeSession,
    deals: &std::collections::HashSet<&str>,
) -> Result<Option<HashMap<(String, String), f64>>> {
    let file = crate::demo::TRUTH_WIN_PROBABILITY;
    if !session.lake.exists(file).await? {
        return Ok(None);
    }
    let bytes = session.lake.get(file).await?;
    let mut out = HashMap::new();
    for line in bytes.split(|b| *b == b'\n').skip(1) {
        let Some(comma) = line.iter().position(|b| *b == b',') else { continue };
        let Ok(deal) = std::str::from_utf8(&line[..comma]) else { continue };
        if !deals.contains(deal) {
            continue;
        }
        let line = String::from_utf8_lossy(line);
        let f: Vec<&str> = line.trim_end_matches('\r').split(',').collect();
        if let [deal, stage, _, p] = f.as_slice()
            && let Ok(p) = p.parse::<f64>()
        {
            out.insert((deal.to_string(), stage.to_string()), p);
        }
    }
    Ok(Some(out))
}

fn metrics_batch(metrics: &[Metric], version: &str) -> Result<RecordBatch> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("model", datafusion::arrow::datatypes::DataType::Utf8, false),
        Field::new("metric", datafusion::arrow::datatypes::DataType::Utf8, false),
        Field::new("value", datafusion::arrow::datatypes::DataType::Float64, false),
        Field::new("low", datafusion::arrow::datatypes::DataType::Float64, true),
        Field::new("high", datafusion::arrow::datatypes::DataType::Float64, true),
        Field::new("n", datafusion::arrow::datatypes::DataType::Int64, false),
        Field::new("model_version", datafusion::arrow::datatypes::DataType::Utf8, false),
    ]));
    Ok(RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(metrics.iter().map(|m| m.model.clone()).collect::<Vec<_>>())),
            Arc::new(StringArray::from(metrics.iter().map(|m| m.metric.clone()).collect::<Vec<_>>())),
            Arc::new(Float64Array::from(metrics.iter().map(|m| m.value).collect::<Vec<_>>())),
            Arc::new(Float64Array::from(metrics.iter().map(|m| m.low).collect::<Vec<_>>())),
            Arc::new(Float64Array::from(metrics.iter().map(|m| m.high).collect::<Vec<_>>())),
            Arc::new(Int64Array::from(metrics.iter().map(|m| m.n).collect::<Vec<_>>())),
            Arc::new(StringArray::from(vec![version.to_string(); metrics.len()])),
        ],
    )?)
}

#[allow(clippy::too_many_arguments)]
fn summary(
    metrics: &[Metric],
    full: &Fitted,
    calib: &[(usize, f64, f64, (f64, f64))],
    train_rows: usize,
    train_deals: usize,
    test_rows: usize,
    test_deals: usize,
    oracle_rows: usize,
    open: usize,
    version: &str,
) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "win-probability model {version}: trained on {train_rows} rows of {train_deals} deals, alpha {} (chosen on a later validation quarter)",
        full.alpha
    );
    let _ = writeln!(t, "held out: {test_rows} weekly rows of {test_deals} deals closed in the last {TEST_DAYS} days");
    let get = |m: &str, k: &str| metrics.iter().find(|x| x.model == m && x.metric == k);
    for model in [
        "win_model",
        "stage_only",
        "crm_stage_probability",
        "true_probability",
        "win_model_at_stage_entries",
        "stage_only_at_stage_entries",
    ] {
        let (Some(a), Some(b)) = (get(model, "auc"), get(model, "brier")) else { continue };
        let label = match model {
            "win_model" => "fitted model",
            "stage_only" => "stage only",
            "crm_stage_probability" => "CRM stage probability",
            "true_probability" => "at stage entries: best possible (the true probability)",
            "win_model_at_stage_entries" => "at stage entries: fitted model",
            _ => "at stage entries: stage only",
        };
        let _ = writeln!(
            t,
            "  {label:<55} AUC {:.3} (95% CI {:.3}-{:.3}), Brier {:.4}, n {}",
            a.value,
            a.low.unwrap_or(f64::NAN),
            a.high.unwrap_or(f64::NAN),
            b.value,
            a.n
        );
    }
    if oracle_rows == 0 {
        let _ = writeln!(t, "  (no truth_win_probability.csv on this lake: the best possible is not known)");
    }
    let _ = writeln!(t, "calibration by decile (predicted -> observed, n):");
    for (n, p, o, (lo, hi)) in calib {
        let _ = writeln!(t, "  {:>5.1}% -> {:>5.1}% ({:.1}-{:.1}%), {n}", p * 100.0, o * 100.0, lo * 100.0, hi * 100.0);
    }
    let _ = writeln!(t, "published a win probability for {open} open deals");
    t
}

fn model_card_markdown(c: &ModelCard) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "# Model card: {} {}\n", c.model, c.version);
    let _ = writeln!(t, "- fitted as of {} by gtm-loop {}; {}", c.as_of, c.code_version, c.algorithm);
    let _ = writeln!(
        t,
        "- training: {} ({} rows, {} deals); alpha {}",
        c.training_window, c.training_rows, c.training_deals, c.alpha
    );
    let _ = writeln!(t, "- test: {} ({} rows, {} deals)", c.test_window, c.test_rows, c.test_deals);
    let _ = writeln!(t, "- rows used: {}\n", c.sample);
    let _ =
        writeln!(t, "## Metrics on the test deals\n\n| model | metric | value | 95% CI | n |\n|---|---|---|---|---|");
    for m in c.metrics {
        let ci = match (m.low, m.high) {
            (Some(l), Some(h)) => format!("{l:.3}-{h:.3}"),
            _ => String::new(),
        };
        let _ = writeln!(t, "| {} | {} | {:.4} | {ci} | {} |", m.model, m.metric, m.value, m.n);
    }
    let _ = writeln!(t, "\n## Features (coefficient per unit of the feature, log-odds)\n");
    for (f, b) in &c.coefficients {
        let _ = writeln!(t, "- {f}: {b:+.4}");
    }
    let _ = writeln!(t, "\n## Must not be used for\n");
    for m in c.must_not_be_used_for {
        let _ = writeln!(t, "- {m}");
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use polars::prelude::{Column, NamedFrom, Series};
    use std::collections::BTreeMap;

    /// (deal, snapshot, known_before, closed_at, won)
    type Row = (String, &'static str, i64, Option<i64>, Option<bool>);

    /// The trajectory columns `thin` reads.
    fn frame(rows: &[Row]) -> DataFrame {
        let micros_col = |name: &str, v: Vec<Option<i64>>| -> Column {
            Series::new(name.into(), v).cast(&micros()).expect("datetime").into()
        };
        DataFrame::new_infer_height(vec![
            Series::new("opportunity_id".into(), rows.iter().map(|r| r.0.clone()).collect::<Vec<_>>()).into(),
            Series::new("snapshot".into(), rows.iter().map(|r| r.1).collect::<Vec<_>>()).into(),
            micros_col("known_before", rows.iter().map(|r| Some(r.2)).collect()),
            micros_col("closed_at", rows.iter().map(|r| r.3).collect()),
            Series::new("won".into(), rows.iter().map(|r| r.4).collect::<Vec<_>>()).into(),
            Series::new("stage_name".into(), vec!["Discovery"; rows.len()]).into(),
        ])
        .unwrap()
    }

    /// 10,000 training deals of 100 weekly rows (a million rows: the running threshold halves once,
    /// past 4 x MAX_ROWS held) and 8,000 test deals of 20, cut into 9 slices by deal: the sample
    /// taken slice by slice is exactly the one `thin` takes of the whole frame.
    #[test]
    fn thinning_slice_by_slice_keeps_the_same_rows_as_thinning_the_whole() {
        let (end, cutoff) = (1_000_000_i64, 500_000_i64);
        let mut slices: Vec<Vec<Row>> = vec![Vec::new(); 9];
        for d in 0..10_000 {
            for w in 0..100 {
                slices[d % 9].push((format!("train-{d}"), "week", w, Some(100_000), Some(d % 3 == 0)));
            }
        }
        for d in 0..8_000 {
            for w in 0..20 {
                slices[(d * 7) % 9].push((format!("test-{d}"), "week", 600_000 + w, Some(700_000), Some(d % 2 == 0)));
            }
        }
        for d in 0..30 {
            slices[d % 9].push((format!("open-{d}"), "week", end, None, None));
        }
        let whole: Vec<Row> = slices.concat();
        let (expected, t) = thin(frame(&whole), end, cutoff).unwrap();
        let mut sampler = SliceSampler::new(end, cutoff);
        for slice in &slices {
            sampler.add(frame(slice)).unwrap();
        }
        assert!(sampler.train < 1.0, "the running threshold halved: {}", sampler.train);
        let (kept, s) = sampler.finish(frame(&[]), None).unwrap();
        assert_eq!(format!("{t:?}"), format!("{s:?}"));
        assert!((t.training_share - 0.15).abs() < 1e-12 && (t.test_share - 150_000.0 / 160_000.0).abs() < 1e-12);
        let ids = |df: &DataFrame| -> Vec<String> {
            let mut v: Vec<String> =
                df.column("opportunity_id").unwrap().str().unwrap().iter().map(|v| v.unwrap().to_string()).collect();
            v.sort();
            v
        };
        assert_eq!(ids(&kept), ids(&expected));
        assert!(kept.height() > 150_000, "{} rows kept", kept.height());
    }

    /// The deals drawn from row counts before anything is built (`sample_deals`), once their rows
    /// are built and thinned with the whole lake's counts, are the rows `thin` keeps of the whole
    /// trajectory. 4,000 training deals of 61 rows and 30,000 test deals of 20 weekly rows put both
    /// shares below 1; deals of no use (closed without a won or lost stage) are not built at all,
    /// and open deals are built for the run date's week only.
    #[test]
    fn deals_drawn_from_counts_are_the_rows_thinning_the_whole_keeps() {
        let (end, cutoff) = (1_000_000_i64, 500_000_i64);
        let mut rows: Vec<Row> = Vec::new();
        for d in 0..4_000 {
            rows.push((format!("train-{d}"), "stage_entry", 1, Some(100_000), Some(d % 3 == 0)));
            for w in 0..60 {
                rows.push((format!("train-{d}"), "week", 10 + w, Some(100_000), Some(d % 3 == 0)));
            }
        }
        for d in 0..30_000 {
            rows.push((format!("test-{d}"), "stage_entry", 600_000, Some(700_000), Some(d % 2 == 0)));
            for w in 0..20 {
                rows.push((format!("test-{d}"), "week", 600_001 + w, Some(700_000), Some(d % 2 == 0)));
            }
        }
        for d in 0..50 {
            rows.push((format!("open-{d}"), "week", 900_000, None, None));
            rows.push((format!("open-{d}"), "week", end, None, None));
        }
        for d in 0..20 {
            rows.push((format!("undecided-{d}"), "week", 10, Some(100_000), None));
        }
        let (expected, t) = thin(frame(&rows), end, cutoff).unwrap();
        let mut counts: BTreeMap<String, trajectory::DealCounts> = BTreeMap::new();
        for r in &rows {
            let c = counts.entry(r.0.clone()).or_insert_with(|| trajectory::DealCounts {
                id: r.0.clone(),
                closed_at: r.3,
                decided: r.4.is_some(),
                rows: 0,
                week_rows: 0,
                open_now: false,
            });
            c.rows += 1;
            c.week_rows += usize::from(r.1 == "week");
            c.open_now |= r.1 == "week" && r.2 == end;
        }
        let counts: Vec<trajectory::DealCounts> = counts.into_values().collect();
        let (eligible, deals) = sample_deals(&counts, end, cutoff);
        let wanted: HashMap<&str, Option<i64>> = deals.iter().map(|(id, since)| (id.as_str(), *since)).collect();
        assert!(wanted.len() < counts.len() / 2, "{} of {} deals built", wanted.len(), counts.len());
        assert!(!wanted.keys().any(|id| id.starts_with("undecided")));
        assert!((0..50).all(|d| wanted.get(format!("open-{d}").as_str()) == Some(&Some(end))));
        let built: Vec<Row> = rows
            .iter()
            .filter(|r| matches!(wanted.get(r.0.as_str()), Some(since) if since.is_none_or(|s| r.2 >= s)))
            .cloned()
            .collect();
        let mut sampler = SliceSampler::new(end, cutoff);
        sampler.add(frame(&built)).unwrap();
        let (kept, s) = sampler.finish(frame(&[]), Some(eligible)).unwrap();
        assert_eq!(format!("{t:?}"), format!("{s:?}"));
        assert!(t.training_share < 1.0 && t.test_share < 1.0, "{t:?}");
        let keys = |df: &DataFrame| -> Vec<(String, i64)> {
            let ids = df.column("opportunity_id").unwrap().str().unwrap().clone();
            let at = df.column("known_before").unwrap().cast(&PlDataType::Int64).unwrap();
            let at = at.i64().unwrap().clone();
            let mut v: Vec<(String, i64)> =
                ids.iter().zip(at.iter()).map(|(i, a)| (i.unwrap().to_string(), a.unwrap())).collect();
            v.sort();
            v
        };
        assert_eq!(keys(&kept), keys(&expected));
    }

    /// 3,000 closed training deals of 100 weekly rows each (300,000 rows, twice MAX_ROWS), 50 test
    /// deals of 10 rows, 40 open deals scored now and one row that is neither.
    #[test]
    fn thinning_keeps_whole_deals_every_open_deal_and_about_max_rows() {
        let (end, cutoff) = (1_000_000_i64, 500_000_i64);
        let mut rows: Vec<Row> = Vec::new();
        for d in 0..3_000 {
            for w in 0..100 {
                rows.push((format!("train-{d}"), "week", w, Some(100_000), Some(d % 3 == 0)));
            }
        }
        for d in 0..50 {
            for w in 0..10 {
                rows.push((format!("test-{d}"), "week", 600_000 + w, Some(700_000), Some(true)));
            }
        }
        for d in 0..40 {
            rows.push((format!("open-{d}"), "week", end, None, None));
        }
        rows.push(("earlier-week-of-an-open-deal".into(), "week", 10, None, None));
        let (kept, t) = thin(frame(&rows), end, cutoff).unwrap();
        assert_eq!((t.training_rows_eligible, t.training_deals_eligible), (300_000, 3_000));
        assert!((t.training_share - 0.5).abs() < 1e-12, "{t:?}");
        assert_eq!((t.test_rows_eligible, t.test_share), (500, 1.0));
        let ids: Vec<String> =
            kept.column("opportunity_id").unwrap().str().unwrap().iter().map(|v| v.unwrap().to_string()).collect();
        let count = |prefix: &str| ids.iter().filter(|i| i.starts_with(prefix)).count();
        assert_eq!(count("open-"), 40, "every open deal is scored");
        assert_eq!(count("test-"), 500, "under the cap: every test row");
        assert_eq!(count("earlier-"), 0, "rows no model reads are dropped");
        // Whole deals: a multiple of 100 rows; about half of them (binomial sd ~ 27 deals).
        let train = count("train-");
        assert_eq!(train % 100, 0);
        assert!((1_350..=1_650).contains(&(train / 100)), "{train} training rows kept");
        // The same lake, the same sample.
        let again: Vec<bool> = (0..3_000).map(|d| deal_draw(&format!("train-{d}")) < 0.5).collect();
        assert_eq!(again.iter().filter(|k| **k).count() * 100, train);
    }
}
