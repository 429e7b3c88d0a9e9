//! Fitted weights for the deal-risk score. The playbook scores a deal by practitioner priors
//! (a base logit plus one weight per fired flag). Here the same score is fitted: every open deal
//! is scored at past dates from a session that saw only what was known then, each deal-week's
//! outcome is read `HORIZON_DAYS` later from the history as known on the run date, and a logistic
//! regression (linfa) of "bad" (lost, or the close date moved later) on the flag indicators gives
//! logit weights in the playbook's own units. The fit is tested on the latest third of the dates,
//! after a purge gap as long as the horizon (no training label looks into the test period), and
//! published in `output.risk_weights` with its verdict. The weekly risk job uses it only when it
//! beat the priors there: a lower held-out log-loss with the whole 95% interval of the difference
//! (a deal-cluster bootstrap) below zero, and an AUC at least the priors'.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use chrono::{Days, NaiveDate};
use datafusion::arrow::array::{ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use linfa::prelude::*;
use linfa_logistic::LogisticRegression;
use ndarray::{Array1, Array2};
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::models::log_loss;
use crate::error::{Error, Result};
use crate::jobs::risk::Playbook;
use crate::jobs::risk::backtest::{DealWeek, deal_weeks};
use crate::layers::{AsOf, LakeSession};
use crate::outputs::decision_log::record_id;
use crate::outputs::{Manifest, RunWriter};
use crate::stats::auc;

/// A deal-week is bad when by this many days later it was lost or its close date had moved.
pub const HORIZON_DAYS: u64 = 60;
/// Past dates scored: every this-many days over the last year before the horizon.
pub const EVERY_DAYS: u64 = 14;
pub const LOOKBACK_DAYS: u64 = 364;
/// Below these, the fit says "not enough evidence" and the priors stay.
const MIN_ROWS: usize = 200;
const MIN_BAD: usize = 30;
/// linfa's L2 weight on the summed log-loss: at a few thousand deal-weeks, a light touch that
/// keeps a flag that never fires in training at zero rather than at minus infinity.
const ALPHA: f64 = 1.0;
const BOOTSTRAP: usize = 200;

fn le(e: impl std::fmt::Display) -> Error {
    Error::Other(format!("risk weights (linfa): {e}"))
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// A logistic regression of `y` on 0/1 indicators, returning the intercept and the coefficients on
/// the logit of P(y = true), unscaled, so they read as playbook weights.
pub fn fit_logit(x: &[Vec<f64>], y: &[bool], alpha: f64) -> Result<(f64, Vec<f64>)> {
    let k = x.first().map(|r| r.len()).unwrap_or(0);
    if y.iter().all(|v| *v) || y.iter().all(|v| !*v) {
        return Err(Error::Other("risk weights: every training deal-week has the same outcome".into()));
    }
    let m = Array2::from_shape_fn((x.len(), k), |(i, j)| x[i][j]);
    let data = Dataset::new(m, Array1::from(y.to_vec()));
    let model = LogisticRegression::default().alpha(alpha).max_iterations(500).fit(&data).map_err(le)?;
    // linfa models its "positive" class, the more frequent label, which need not be `true`.
    let sign = if model.labels().pos.class { 1.0 } else { -1.0 };
    Ok((sign * model.intercept(), model.params().iter().map(|w| sign * w).collect()))
}

/// The held-out comparison: log-loss of both, its difference (fitted − priors) with a bootstrap
/// interval over deals, and both AUCs.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub test_rows: usize,
    pub test_bad: usize,
    pub test_deals: usize,
    pub prior_log_loss: f64,
    pub fitted_log_loss: f64,
    pub difference: f64,
    pub difference_low: f64,
    pub difference_high: f64,
    pub prior_auc: Option<f64>,
    pub fitted_auc: Option<f64>,
}

fn compare(prior: &[f64], fitted: &[f64], y: &[bool], deal: &[usize]) -> Comparison {
    let n_deals = deal.iter().copied().max().map(|m| m + 1).unwrap_or(0);
    let mut rows_of: Vec<Vec<usize>> = vec![Vec::new(); n_deals];
    for (i, d) in deal.iter().enumerate() {
        rows_of[*d].push(i);
    }
    let loss = |p: f64, y: bool| log_loss(&[p], &[y]);
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut diffs = Vec::with_capacity(BOOTSTRAP);
    for _ in 0..BOOTSTRAP {
        let (mut sum, mut n) = (0.0, 0usize);
        for _ in 0..n_deals {
            for &i in &rows_of[rng.random_range(0..n_deals)] {
                sum += loss(fitted[i], y[i]) - loss(prior[i], y[i]);
                n += 1;
            }
        }
        if n > 0 {
            diffs.push(sum / n as f64);
        }
    }
    diffs.sort_by(f64::total_cmp);
    let q = |p: f64| diffs.get(((diffs.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(f64::NAN);
    let scored = |p: &[f64]| p.iter().copied().zip(y.iter().copied()).collect::<Vec<_>>();
    let (pl, fl) = (log_loss(prior, y), log_loss(fitted, y));
    Comparison {
        test_rows: y.len(),
        test_bad: y.iter().filter(|v| **v).count(),
        test_deals: n_deals,
        prior_log_loss: pl,
        fitted_log_loss: fl,
        difference: fl - pl,
        difference_low: q(0.025),
        difference_high: q(0.975),
        prior_auc: auc(&scored(prior)),
        fitted_auc: auc(&scored(fitted)),
    }
}

/// What one fit found.
#[derive(Debug, Clone, Serialize)]
pub struct RiskWeights {
    pub fitted_as_of: String,
    pub playbook_version: String,
    pub playbook_hash: String,
    pub model_version: String,
    /// The code that fitted it.
    pub code_version: &'static str,
    pub horizon_days: u64,
    pub train_dates: (String, String),
    pub test_dates: (String, String),
    pub train_rows: usize,
    pub train_bad: usize,
    /// (term, prior weight, fitted weight, training deal-weeks with the flag): "(intercept)" first.
    pub terms: Vec<(String, f64, Option<f64>, usize)>,
    pub not_instrumented: Vec<String>,
    pub comparison: Option<Comparison>,
    pub beats_priors: bool,
    pub verdict: String,
}

pub struct RiskWeightsRun {
    pub weights: RiskWeights,
    pub text: String,
    pub manifest: Manifest,
}

/// The dates scored: every `EVERY_DAYS` back from the run date minus the horizon, over a year.
fn dates(as_of: NaiveDate) -> Vec<NaiveDate> {
    let last = as_of - Days::new(HORIZON_DAYS);
    let first = last - Days::new(LOOKBACK_DAYS);
    let mut out = Vec::new();
    let mut d = last;
    while d >= first {
        out.push(d);
        d = d - Days::new(EVERY_DAYS);
    }
    out.reverse();
    out
}

/// Splits the dates: the latest third is the test period; training dates end a horizon before
/// it, so no training outcome is read inside the test period.
fn split(dates: &[NaiveDate]) -> (Vec<NaiveDate>, Vec<NaiveDate>) {
    let n_test = dates.len().div_ceil(3);
    let test: Vec<NaiveDate> = dates[dates.len() - n_test..].to_vec();
    let Some(first_test) = test.first().copied() else { return (Vec::new(), test) };
    let train = dates.iter().copied().filter(|d| *d + Days::new(HORIZON_DAYS) <= first_test).collect();
    (train, test)
}

/// Fits the weights as of the session's date and judges them against the priors.
pub async fn fit(session: &LakeSession, pb: &Playbook) -> Result<RiskWeights> {
    let as_of = session.as_of.0.ok_or_else(|| Error::Other("risk weights need --as-of".into()))?;
    let all = dates(as_of);
    let (train_dates, test_dates) = split(&all);
    let (rows, blind) = deal_weeks(&session.lake, pb, &all, HORIZON_DAYS, AsOf(Some(as_of))).await?;
    let flags: Vec<&crate::jobs::risk::FlagDef> = pb.flags.iter().filter(|f| !blind.contains_key(&f.id)).collect();
    let features =
        |w: &DealWeek| -> Vec<f64> { flags.iter().map(|f| f64::from(u8::from(w.flags.contains(&f.id)))).collect() };
    let train: Vec<&DealWeek> = rows.iter().filter(|w| train_dates.contains(&w.date)).collect();
    let test: Vec<&DealWeek> = rows.iter().filter(|w| test_dates.contains(&w.date)).collect();
    let train_bad = train.iter().filter(|w| w.bad).count();
    let test_bad = test.iter().filter(|w| w.bad).count();
    let span = |d: &[NaiveDate]| {
        (d.first().map(|d| d.to_string()).unwrap_or_default(), d.last().map(|d| d.to_string()).unwrap_or_default())
    };
    let mut out = RiskWeights {
        fitted_as_of: as_of.to_string(),
        playbook_version: format!("playbook {}", pb.version),
        playbook_hash: pb.content_hash.clone(),
        model_version: String::new(),
        code_version: crate::outputs::CODE_VERSION,
        horizon_days: HORIZON_DAYS,
        train_dates: span(&train_dates),
        test_dates: span(&test_dates),
        train_rows: train.len(),
        train_bad,
        terms: Vec::new(),
        not_instrumented: blind.keys().cloned().collect(),
        comparison: None,
        beats_priors: false,
        verdict: String::new(),
    };
    let thin = |rows: usize, bad: usize| rows < MIN_ROWS || bad < MIN_BAD || bad == rows;
    if thin(train.len(), train_bad) || thin(test.len(), test_bad) {
        out.verdict = format!(
            "not enough evidence: {} training deal-weeks ({train_bad} bad) and {} test deal-weeks ({test_bad} bad); needs {MIN_ROWS} and {MIN_BAD} bad in each",
            train.len(),
            test.len()
        );
        if rows.is_empty() {
            out.verdict.push_str(&format!(
                "; no open deal was scored at any of the {} dates from {} to {}: the risk job leaves a deal without activities or stage changes unscored (insufficient_history)",
                all.len(),
                all.first().map(|d| d.to_string()).unwrap_or_default(),
                all.last().map(|d| d.to_string()).unwrap_or_default()
            ));
        }
        out.terms.push(("(intercept)".into(), pb.scoring.base_logit, None, train.len()));
        for f in &flags {
            let n = train.iter().filter(|w| w.flags.contains(&f.id)).count();
            out.terms.push((f.id.clone(), f.weight, None, n));
        }
        out.model_version = record_id(&["risk_weights", &pb.content_hash, &out.fitted_as_of, "none"]);
        return Ok(out);
    }
    let x: Vec<Vec<f64>> = train.iter().map(|w| features(w)).collect();
    let y: Vec<bool> = train.iter().map(|w| w.bad).collect();
    let (b0, w) = fit_logit(&x, &y, ALPHA)?;
    out.terms.push(("(intercept)".into(), pb.scoring.base_logit, Some(b0), train.len()));
    for (j, f) in flags.iter().enumerate() {
        let n = x.iter().filter(|r| r[j] > 0.5).count();
        out.terms.push((f.id.clone(), f.weight, Some(w[j]), n));
    }
    // Held out: both as probabilities (the priors' exact logit, not the rounded 0-100 score).
    let prior_logit = |r: &[f64]| pb.scoring.base_logit + flags.iter().zip(r).map(|(f, x)| f.weight * x).sum::<f64>();
    let fitted_logit = |r: &[f64]| b0 + w.iter().zip(r).map(|(w, x)| w * x).sum::<f64>();
    let xt: Vec<Vec<f64>> = test.iter().map(|w| features(w)).collect();
    let yt: Vec<bool> = test.iter().map(|w| w.bad).collect();
    let mut ix: HashMap<&str, usize> = HashMap::new();
    let deal: Vec<usize> = test
        .iter()
        .map(|w| {
            let n = ix.len();
            *ix.entry(w.deal.as_str()).or_insert(n)
        })
        .collect();
    let prior: Vec<f64> = xt.iter().map(|r| sigmoid(prior_logit(r))).collect();
    let fitted: Vec<f64> = xt.iter().map(|r| sigmoid(fitted_logit(r))).collect();
    let c = compare(&prior, &fitted, &yt, &deal);
    let auc_ok = matches!((c.fitted_auc, c.prior_auc), (Some(f), Some(p)) if f >= p);
    out.beats_priors = c.difference_high < 0.0 && auc_ok;
    let auc_text = |a: Option<f64>| a.map(|a| format!("{a:.3}")).unwrap_or_else(|| "n/a".into());
    out.verdict = format!(
        "held-out log-loss {:.4} vs priors {:.4} (difference {:+.4}, 95% CI {:+.4} to {:+.4}), AUC {} vs {}, on {} deal-weeks of {} deals ({} bad){}",
        c.fitted_log_loss,
        c.prior_log_loss,
        c.difference,
        c.difference_low,
        c.difference_high,
        auc_text(c.fitted_auc),
        auc_text(c.prior_auc),
        c.test_rows,
        c.test_deals,
        c.test_bad,
        if out.beats_priors {
            ": beats the priors"
        } else if c.difference_high >= 0.0 {
            ": the interval does not exclude no improvement, so the priors stay"
        } else {
            ": better calibrated but ranks deals worse than the priors, so the priors stay"
        }
    );
    let coefficients: Vec<String> = out.terms.iter().map(|t| format!("{}={:.6}", t.0, t.2.unwrap_or(0.0))).collect();
    let mut parts: Vec<&str> = vec!["risk_weights", &pb.content_hash, &out.fitted_as_of];
    parts.extend(coefficients.iter().map(String::as_str));
    out.model_version = record_id(&parts);
    out.comparison = Some(c);
    Ok(out)
}

pub fn schema() -> SchemaRef {
    let s = |n: &str| Field::new(n, DataType::Utf8, false);
    let f = |n: &str| Field::new(n, DataType::Float64, true);
    Arc::new(Schema::new(vec![
        s("fitted_as_of"),
        s("term"),
        Field::new("prior_weight", DataType::Float64, false),
        f("fitted_weight"),
        Field::new("train_rows_with_term", DataType::Int64, false),
        Field::new("beats_priors", DataType::Boolean, false),
        f("prior_log_loss"),
        f("fitted_log_loss"),
        f("log_loss_difference_low"),
        f("log_loss_difference_high"),
        f("prior_auc"),
        f("fitted_auc"),
        Field::new("test_rows", DataType::Int64, false),
        s("playbook_version"),
        s("playbook_hash"),
        s("model_version"),
        s("verdict"),
    ]))
}

pub fn batch(w: &RiskWeights) -> Result<RecordBatch> {
    let n = w.terms.len();
    let rep = |v: &str| -> ArrayRef { Arc::new(StringArray::from(vec![v; n])) };
    let c = w.comparison.as_ref();
    let num = |v: Option<f64>| -> ArrayRef { Arc::new(Float64Array::from(vec![v; n])) };
    Ok(RecordBatch::try_new(
        schema(),
        vec![
            rep(&w.fitted_as_of),
            Arc::new(StringArray::from(w.terms.iter().map(|t| t.0.clone()).collect::<Vec<_>>())),
            Arc::new(Float64Array::from(w.terms.iter().map(|t| t.1).collect::<Vec<_>>())),
            Arc::new(Float64Array::from(w.terms.iter().map(|t| t.2).collect::<Vec<_>>())),
            Arc::new(Int64Array::from(w.terms.iter().map(|t| t.3 as i64).collect::<Vec<_>>())),
            Arc::new(BooleanArray::from(vec![w.beats_priors; n])),
            num(c.map(|c| c.prior_log_loss)),
            num(c.map(|c| c.fitted_log_loss)),
            num(c.map(|c| c.difference_low)),
            num(c.map(|c| c.difference_high)),
            num(c.and_then(|c| c.prior_auc)),
            num(c.and_then(|c| c.fitted_auc)),
            Arc::new(Int64Array::from(vec![c.map(|c| c.test_rows as i64).unwrap_or(0); n])),
            rep(&w.playbook_version),
            rep(&w.playbook_hash),
            rep(&w.model_version),
            rep(&w.verdict),
        ],
    )?)
}

fn card_markdown(w: &RiskWeights) -> String {
    let mut md = format!(
        "# Model card: deal-risk weights {}\n\n\
         Fitted as of {} for {} (file hash {}). A deal-week is bad when within {} days the deal was lost or its close date moved later.\n\n\
         - Training: deal-weeks scored every {} days from {} to {} ({} rows, {} bad).\n\
         - Test: {} to {}, after a gap of one horizon so no training outcome falls inside it.\n\
         - Verdict: {}.\n\
         - Used by the weekly risk job: {}.\n\n\
         | term | prior weight | fitted weight | training deal-weeks with it |\n|---|---|---|---|\n",
        w.model_version,
        w.fitted_as_of,
        w.playbook_version,
        w.playbook_hash,
        w.horizon_days,
        EVERY_DAYS,
        w.train_dates.0,
        w.train_dates.1,
        w.train_rows,
        w.train_bad,
        w.test_dates.0,
        w.test_dates.1,
        w.verdict,
        if w.beats_priors { "yes, from the next run dated on or after the fit" } else { "no, the priors stay" }
    );
    for t in &w.terms {
        let _ = writeln!(
            md,
            "| {} | {:.3} | {} | {} |",
            t.0,
            t.1,
            t.2.map(|v| format!("{v:.3}")).unwrap_or_else(|| "not fitted".into()),
            t.3
        );
    }
    for f in &w.not_instrumented {
        let _ = writeln!(md, "| {f} | not instrumented on this lake | | |");
    }
    md.push_str(
        "\n## Must not be used for\n\n\
         - Causal claims: a weight says how often flagged deals went bad, not that the flag caused it or that acting on it helps \
         (the playbook proposals and their holdouts measure that).\n\
         - Another playbook's flags: the weights belong to this playbook file's flag definitions (its hash); the risk job ignores them for any other.\n\
         - Lakes or periods unlike the training window: refit each quarter.\n",
    );
    md
}

/// Fits, publishes `output.risk_weights` and the model card, and says what it found.
pub async fn run(session: &LakeSession, pb: &Playbook) -> Result<RiskWeightsRun> {
    let started = std::time::Instant::now();
    let w = fit(session, pb).await?;
    let mut run = RunWriter::begin(&session.lake, "risk_weights", session.as_of);
    run.record_inputs(session);
    run.set_playbook_version(w.playbook_version.clone());
    run.timing("fit", started.elapsed().as_millis() as u64);
    for f in &w.not_instrumented {
        run.note(format!("flag {f} not instrumented: not fitted"));
    }
    run.write_artifact(
        "model_card_risk_weights.json",
        serde_json::to_vec_pretty(&w).map_err(|e| Error::Other(e.to_string()))?,
    )
    .await?;
    run.write_artifact("model_card_risk_weights.md", card_markdown(&w).into_bytes()).await?;
    let b = batch(&w)?;
    run.write_table("risk_weights", b.schema(), &[b]).await?;
    let manifest = run.commit().await?;
    let mut text = format!(
        "deal-risk weights {} ({}, horizon {} days): {}\n",
        w.model_version, w.playbook_version, w.horizon_days, w.verdict
    );
    let _ = writeln!(text, "  {:<28} {:>8} {:>8} {:>8}", "term", "prior", "fitted", "n");
    for t in &w.terms {
        let _ = writeln!(
            text,
            "  {:<28} {:>8.3} {:>8} {:>8}",
            t.0,
            t.1,
            t.2.map(|v| format!("{v:.3}")).unwrap_or_else(|| "-".into()),
            t.3
        );
    }
    for f in &w.not_instrumented {
        let _ = writeln!(text, "  {f:<28} not instrumented on this lake: not fitted");
    }
    let _ = writeln!(
        text,
        "  the weekly risk job {}",
        if w.beats_priors { "now scores with these weights" } else { "keeps the playbook's priors" }
    );
    Ok(RiskWeightsRun { weights: w, text, manifest })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With one indicator per row (or none) the unpenalised logistic MLE is saturated: the
    /// intercept is the log odds of the rows without a flag, each weight the log odds ratio of its
    /// rows against them, computed here by hand from the counts.
    #[test]
    fn weights_are_log_odds_ratios_when_flags_do_not_overlap() {
        // (flag a, flag b, bad, count)
        let cells = [
            (0, 0, true, 30),
            (0, 0, false, 170),
            (1, 0, true, 40),
            (1, 0, false, 60),
            (0, 1, true, 9),
            (0, 1, false, 81),
        ];
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for (a, b, bad, n) in cells {
            for _ in 0..n {
                x.push(vec![f64::from(a), f64::from(b)]);
                y.push(bad);
            }
        }
        let (b0, w) = fit_logit(&x, &y, 1e-6).unwrap();
        let lo = |k: f64, m: f64| (k / m).ln();
        assert!((b0 - lo(30.0, 170.0)).abs() < 1e-3, "{b0}");
        assert!((w[0] - (lo(40.0, 60.0) - lo(30.0, 170.0))).abs() < 1e-3, "{w:?}");
        assert!((w[1] - (lo(9.0, 81.0) - lo(30.0, 170.0))).abs() < 1e-3, "{w:?}");
        // The sign does not depend on which label is more frequent: flip the outcome.
        let flipped: Vec<bool> = y.iter().map(|v| !v).collect();
        let (b1, v) = fit_logit(&x, &flipped, 1e-6).unwrap();
        assert!((b1 + b0).abs() < 1e-3 && (v[0] + w[0]).abs() < 1e-3 && (v[1] + w[1]).abs() < 1e-3);
    }

    #[test]
    fn the_training_dates_end_a_horizon_before_the_test_period() {
        let d = dates(NaiveDate::from_ymd_opt(2026, 6, 30).unwrap());
        assert_eq!(d.last().copied(), NaiveDate::from_ymd_opt(2026, 5, 1));
        assert_eq!(d.len(), 27);
        let (train, test) = split(&d);
        assert_eq!(test.len(), 9);
        assert!(train.iter().all(|t| *t + Days::new(HORIZON_DAYS) <= test[0]));
        assert_eq!(train.len(), 27 - 9 - 4);
    }

    #[test]
    fn a_fit_no_better_than_the_priors_is_not_declared_better() {
        // The same probabilities on both sides: the difference and its interval are zero.
        let p = vec![0.2, 0.4, 0.6, 0.3];
        let y = vec![false, true, true, false];
        let c = compare(&p, &p, &y, &[0, 1, 2, 3]);
        assert_eq!((c.difference, c.difference_low, c.difference_high), (0.0, 0.0, 0.0));
        assert!(c.difference_high >= 0.0);
    }
}
