//! Account priority (`output.account_priority`): which accounts are likeliest to win a deal in
//! the next `WINDOW_DAYS`, fitted (linfa logistic) to the segments that won, the buyer's
//! engagement (momentum) and product usage where it landed, with each account's top reasons.
//!
//! Every snapshot is read from a session as of its own date; labels (a win within the window
//! after the snapshot) from the run date's session, so nothing recorded after the run is read.
//! Evaluation: fitted on the snapshot two windows back, tested on the snapshot one window back
//! (whose window ends on the run date), beside a segment-only model. The published scores come
//! from a refit on the latest complete snapshot, applied to the accounts as they stand today.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;

use chrono::{Days, NaiveDate};
use datafusion::arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde::Serialize;

use super::models::{Scaler, auc_with_interval, fit_once, win_probabilities};
use super::momentum;
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::layers::columns::{floats, strings};
use crate::layers::{AsOf, LakeSession};
use crate::outputs::decision_log::record_id;
use crate::outputs::{Manifest, RunWriter};

pub const FEATURES_FILE: &str = "sql/learn/account_features.sql";
const FEATURES_SQL: &str = repo_file!("sql/learn/account_features.sql");
pub const WINS_FILE: &str = "sql/learn/account_wins.sql";
const WINS_SQL: &str = repo_file!("sql/learn/account_wins.sql");
/// A snapshot's label: the account won a deal within this many days after it.
pub const WINDOW_DAYS: u64 = 180;
/// linfa's L2 weight (on standardised features, summed log-loss).
const ALPHA: f64 = 1.0;
const MIN_ACCOUNTS: usize = 100;
const MIN_WINNERS: usize = 20;
/// A segment level with fewer accounts than this in the training snapshot gets no coefficient.
const MIN_LEVEL: usize = 20;

/// One account at one date.
#[derive(Debug, Clone)]
struct Account {
    id: String,
    name: String,
    industry: Option<String>,
    size_band: Option<String>,
    open_deals: f64,
    won_deals: f64,
    momentum: f64,
    buyer_touches: f64,
    usage: f64,
}

async fn snapshot(lake: &Lake, date: NaiveDate) -> Result<Vec<Account>> {
    let session = crate::outputs::open_session(lake, AsOf(Some(date))).await?;
    let engaged: HashMap<String, momentum::Row> = momentum::compute(&session)
        .await?
        .into_iter()
        .filter(|r| r.subject_type == "account")
        .map(|r| (r.subject_id.clone(), r))
        .collect();
    let mut out = Vec::new();
    for b in session.collect_declared(FEATURES_SQL, FEATURES_FILE).await? {
        let s: Vec<Vec<Option<String>>> = (0..4).map(|i| strings(b.column(i))).collect::<Result<_>>()?;
        let f: Vec<Vec<Option<f64>>> = (4..6).map(|i| floats(b.column(i))).collect::<Result<_>>()?;
        for r in 0..b.num_rows() {
            let Some(id) = s[0][r].clone() else { continue };
            let m = engaged.get(&id);
            out.push(Account {
                name: s[1][r].clone().unwrap_or_default(),
                industry: s[2][r].clone(),
                size_band: s[3][r].clone(),
                open_deals: f[0][r].unwrap_or(0.0),
                won_deals: f[1][r].unwrap_or(0.0),
                momentum: m.map(|m| m.momentum).unwrap_or(0.0),
                buyer_touches: m.map(|m| m.recent as f64).unwrap_or(0.0),
                usage: m.and_then(|m| m.usage_recent).unwrap_or(0.0),
                id,
            });
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// Each account's win dates, as known in the session (the run date's).
async fn wins(session: &LakeSession) -> Result<HashMap<String, Vec<NaiveDate>>> {
    let sql = format!("SELECT account_id, CAST(CAST(won_at AS DATE) AS VARCHAR) FROM ({WINS_SQL}) AS w");
    let mut out: HashMap<String, Vec<NaiveDate>> = HashMap::new();
    for b in session.collect_declared(&sql, WINS_FILE).await? {
        let (a, d) = (strings(b.column(0))?, strings(b.column(1))?);
        for (a, d) in a.into_iter().zip(d) {
            if let (Some(a), Some(d)) = (a, d.and_then(|d| d.parse::<NaiveDate>().ok())) {
                out.entry(a).or_default().push(d);
            }
        }
    }
    Ok(out)
}

fn won_within(wins: &HashMap<String, Vec<NaiveDate>>, account: &str, after: NaiveDate) -> bool {
    let end = after + Days::new(WINDOW_DAYS);
    wins.get(account).is_some_and(|w| w.iter().any(|d| *d > after && *d <= end))
}

/// The feature design, fixed on the training snapshot: segment indicators (the most common level of
/// each is the reference), engagement, usage (when it landed), open deal, won before.
struct Design {
    industries: Vec<String>,
    bands: Vec<String>,
    usage: bool,
}

impl Design {
    fn new(rows: &[Account], usage: bool) -> Design {
        // Levels held by at least MIN_LEVEL accounts, most common first (the reference). A rarer
        // level (a misspelling, a one-off industry) would get a coefficient from a handful of
        // accounts, which a light penalty lets run to a certain win: it is scored as the
        // reference instead, as is a level first seen after the fit.
        let levels = |f: &dyn Fn(&Account) -> Option<String>| -> Vec<String> {
            let mut counts: BTreeMap<String, usize> = BTreeMap::new();
            for v in rows.iter().filter_map(f) {
                *counts.entry(v).or_default() += 1;
            }
            let mut kept: Vec<(String, usize)> = counts.into_iter().filter(|(_, n)| *n >= MIN_LEVEL).collect();
            kept.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            kept.into_iter().map(|(v, _)| v).collect()
        };
        Design { industries: levels(&|a| a.industry.clone()), bands: levels(&|a| a.size_band.clone()), usage }
    }

    fn names(&self, segment_only: bool) -> Vec<String> {
        let mut n: Vec<String> = self.industries.iter().skip(1).map(|i| format!("industry = {i}")).collect();
        n.extend(self.bands.iter().skip(1).map(|b| format!("size band = {b}")));
        if !segment_only {
            n.push("buyer engagement (momentum)".into());
            n.push("buyer touches in the last 28 days".into());
            if self.usage {
                n.push("product usage (active-user days, last 28 days)".into());
            }
            n.push("has an open deal".into());
            n.push("has won before".into());
        }
        n
    }

    fn row(&self, a: &Account, segment_only: bool) -> Vec<f64> {
        let is = |v: &Option<String>, level: &str| f64::from(u8::from(v.as_deref() == Some(level)));
        let mut x: Vec<f64> = self.industries.iter().skip(1).map(|i| is(&a.industry, i)).collect();
        x.extend(self.bands.iter().skip(1).map(|b| is(&a.size_band, b)));
        if !segment_only {
            x.push(a.momentum.ln_1p());
            x.push(a.buyer_touches.ln_1p());
            if self.usage {
                x.push(a.usage.ln_1p());
            }
            x.push(f64::from(u8::from(a.open_deals > 0.0)));
            x.push(f64::from(u8::from(a.won_deals > 0.0)));
        }
        x
    }
}

struct Fit {
    model: linfa_logistic::FittedLogisticRegression<f64, bool>,
    scaler: Scaler,
}

impl Fit {
    fn new(x: &[Vec<f64>], y: &[bool]) -> Result<Fit> {
        let rows: Vec<&Vec<f64>> = x.iter().collect();
        let scaler = Scaler::fit(&rows);
        let model = fit_once(&rows, y, ALPHA, &scaler)?;
        Ok(Fit { model, scaler })
    }
    fn predict(&self, x: &[Vec<f64>]) -> Vec<f64> {
        let rows: Vec<&Vec<f64>> = x.iter().collect();
        if rows.is_empty() {
            return Vec::new();
        }
        win_probabilities(&self.model, &self.scaler.matrix(&rows))
    }
    /// Coefficients on the standardised features, for P(win).
    fn coefficients(&self) -> Vec<f64> {
        let sign = if self.model.labels().pos.class { 1.0 } else { -1.0 };
        self.model.params().iter().map(|b| sign * b).collect()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Card {
    pub as_of: String,
    pub model_version: String,
    /// The code that fitted it.
    pub code_version: &'static str,
    pub window_days: u64,
    pub train_snapshot: String,
    pub test_snapshot: String,
    pub train_accounts: usize,
    pub train_winners: usize,
    pub test_accounts: usize,
    pub test_winners: usize,
    pub auc: Option<(f64, f64, f64)>,
    pub segment_only_auc: Option<(f64, f64, f64)>,
    pub features: Vec<(String, f64)>,
    pub usage_landed: bool,
}

pub struct PriorityRun {
    pub text: String,
    pub manifest: Option<Manifest>,
    pub card: Option<Card>,
}

pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("as_of_date", DataType::Utf8, false),
        Field::new("account_id", DataType::Utf8, false),
        Field::new("account_name", DataType::Utf8, false),
        Field::new("priority", DataType::Float64, false),
        Field::new("rank", DataType::Int64, false),
        Field::new("top_reasons", DataType::Utf8, false),
        Field::new("model_version", DataType::Utf8, false),
    ]))
}

/// The three largest positive contributions of a standardised feature to the account's logit.
fn reasons(names: &[String], beta: &[f64], z: &[f64]) -> String {
    let mut c: Vec<(f64, &String)> =
        beta.iter().zip(z).map(|(b, z)| b * z).zip(names).filter(|(c, _)| *c > 0.0).collect();
    c.sort_by(|a, b| b.0.total_cmp(&a.0));
    if c.is_empty() {
        return "nothing above the average account".into();
    }
    c.iter().take(3).map(|(v, n)| format!("{n} (+{v:.2})")).collect::<Vec<_>>().join("; ")
}

pub async fn run(session: &LakeSession) -> Result<PriorityRun> {
    let as_of = session.as_of.0.ok_or_else(|| Error::Other("account priority needs --as-of".into()))?;
    let lake = &session.lake;
    let test_at = as_of - Days::new(WINDOW_DAYS);
    let train_at = test_at - Days::new(WINDOW_DAYS);
    if !session.missing(&["account".to_string(), "opportunity_history".to_string()]).is_empty() {
        return Ok(PriorityRun {
            text: "account priority not instrumented: needs account, opportunity_history\n".into(),
            manifest: None,
            card: None,
        });
    }
    let usage = session.missing(&["usage_daily".to_string()]).is_empty();
    let won = wins(session).await?;
    let train = snapshot(lake, train_at).await?;
    let test = snapshot(lake, test_at).await?;
    let y_train: Vec<bool> = train.iter().map(|a| won_within(&won, &a.id, train_at)).collect();
    let y_test: Vec<bool> = test.iter().map(|a| won_within(&won, &a.id, test_at)).collect();
    let positives = |y: &[bool]| y.iter().filter(|v| **v).count();
    if train.len() < MIN_ACCOUNTS
        || positives(&y_train) < MIN_WINNERS
        || positives(&y_train) == train.len()
        || test.len() < MIN_ACCOUNTS
        || positives(&y_test) < MIN_WINNERS
        || positives(&y_test) == test.len()
    {
        return Ok(PriorityRun {
            text: format!(
                "account priority: not enough evidence to fit ({} accounts on {train_at} with {} winning within {WINDOW_DAYS} days, {} on {test_at} with {}; needs {MIN_ACCOUNTS} and {MIN_WINNERS})\n",
                train.len(),
                positives(&y_train),
                test.len(),
                positives(&y_test)
            ),
            manifest: None,
            card: None,
        });
    }
    // Evaluation: fitted two windows back, tested one window back.
    let design = Design::new(&train, usage);
    let evaluate = |segment_only: bool| -> Result<Option<(f64, f64, f64)>> {
        let x: Vec<Vec<f64>> = train.iter().map(|a| design.row(a, segment_only)).collect();
        let fit = Fit::new(&x, &y_train)?;
        let xt: Vec<Vec<f64>> = test.iter().map(|a| design.row(a, segment_only)).collect();
        let scored: Vec<(f64, bool)> = fit.predict(&xt).into_iter().zip(y_test.iter().copied()).collect();
        let ids: Vec<usize> = (0..scored.len()).collect();
        Ok(auc_with_interval(&scored, &ids, scored.len(), 5))
    };
    let auc = evaluate(false)?;
    let segment_only_auc = evaluate(true)?;
    // The published scores: refit on the latest complete snapshot, applied to today's accounts.
    let design = Design::new(&test, usage);
    let names = design.names(false);
    let x: Vec<Vec<f64>> = test.iter().map(|a| design.row(a, false)).collect();
    let fit = Fit::new(&x, &y_test)?;
    let beta = fit.coefficients();
    let now = snapshot(lake, as_of).await?;
    let xn: Vec<Vec<f64>> = now.iter().map(|a| design.row(a, false)).collect();
    let p = fit.predict(&xn);
    let coefficients: Vec<String> = names.iter().zip(&beta).map(|(n, b)| format!("{n}={b:.6}")).collect();
    let snapshot_day = test_at.to_string();
    let mut parts: Vec<&str> = vec!["account_priority", &snapshot_day];
    parts.extend(coefficients.iter().map(String::as_str));
    let version = record_id(&parts);
    let mut order: Vec<usize> = (0..now.len()).collect();
    order.sort_by(|a, b| p[*b].total_cmp(&p[*a]).then(now[*a].id.cmp(&now[*b].id)));
    let mut rank = vec![0i64; now.len()];
    for (r, i) in order.iter().enumerate() {
        rank[*i] = r as i64 + 1;
    }
    let z: Vec<Vec<f64>> = {
        let rows: Vec<&Vec<f64>> = xn.iter().collect();
        let m = fit.scaler.matrix(&rows);
        m.rows().into_iter().map(|r| r.to_vec()).collect()
    };
    let why: Vec<String> = z.iter().map(|z| reasons(&names, &beta, z)).collect();
    let batch = RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(StringArray::from(vec![as_of.to_string(); now.len()])) as ArrayRef,
            Arc::new(StringArray::from(now.iter().map(|a| a.id.clone()).collect::<Vec<_>>())),
            Arc::new(StringArray::from(now.iter().map(|a| a.name.clone()).collect::<Vec<_>>())),
            Arc::new(Float64Array::from(p.clone())),
            Arc::new(Int64Array::from(rank)),
            Arc::new(StringArray::from(why.clone())),
            Arc::new(StringArray::from(vec![version.clone(); now.len()])),
        ],
    )?;
    let card = Card {
        as_of: as_of.to_string(),
        model_version: version.clone(),
        code_version: crate::outputs::CODE_VERSION,
        window_days: WINDOW_DAYS,
        train_snapshot: train_at.to_string(),
        test_snapshot: test_at.to_string(),
        train_accounts: train.len(),
        train_winners: positives(&y_train),
        test_accounts: test.len(),
        test_winners: positives(&y_test),
        auc,
        segment_only_auc,
        features: names.iter().cloned().zip(beta.iter().copied()).collect(),
        usage_landed: usage,
    };
    let auc_text = |a: Option<(f64, f64, f64)>| {
        a.map(|(v, lo, hi)| format!("{v:.3} (95% CI {lo:.3}-{hi:.3})")).unwrap_or_else(|| "n/a".into())
    };
    let mut md = format!(
        "# Model card: account priority {version}\n\n\
         P(the account wins a deal within {WINDOW_DAYS} days), as of {as_of}. Logistic regression (linfa, L2 alpha {ALPHA}) on standardised features.\n\n\
         - Evaluation: fitted on the accounts as of {train_at} ({} accounts, {} won within the window), tested on those as of {test_at} ({} accounts, {} won).\n\
         - Held-out ROC AUC {} against segment alone {}.\n\
         - Published scores: refitted on the {test_at} snapshot (its window ends on the run date) and applied to the accounts as of {as_of}.\n\
         - Product usage: {}.\n\n| feature (standardised) | coefficient |\n|---|---|\n",
        card.train_accounts,
        card.train_winners,
        card.test_accounts,
        card.test_winners,
        auc_text(auc),
        auc_text(segment_only_auc),
        if usage { "used (usage_daily landed)" } else { "not instrumented: needs usage_daily" }
    );
    for (n, b) in &card.features {
        let _ = writeln!(md, "| {n} | {b:+.3} |");
    }
    md.push_str(
        "\n## Must not be used for\n\n\
         - Territory or compensation decisions on its own: it ranks accounts by who won before, so it favours segments the team already sells to.\n\
         - Causal reading of a reason: \"has an open deal\" predicts a win, opening a deal does not cause one.\n\
         - Accounts unlike the training ones (a new industry has no coefficient of its own: it is scored as the reference level).\n",
    );
    let mut run = RunWriter::begin(lake, "account_priority", session.as_of);
    run.record_inputs(session);
    if !usage {
        run.note("account priority: product usage not instrumented: needs usage_daily".to_string());
    }
    run.write_artifact(
        "model_card_account_priority.json",
        serde_json::to_vec_pretty(&card).map_err(|e| Error::Other(e.to_string()))?,
    )
    .await?;
    run.write_artifact("model_card_account_priority.md", md.into_bytes()).await?;
    run.write_table("account_priority", batch.schema(), &[batch]).await?;
    let manifest = run.commit().await?;
    let mut text = format!(
        "account priority {version} (win within {WINDOW_DAYS} days): held-out AUC {} vs segment alone {}; {} accounts scored\n",
        auc_text(auc),
        auc_text(segment_only_auc),
        now.len()
    );
    if !usage {
        text.push_str("  product usage not instrumented: needs usage_daily\n");
    }
    for i in order.iter().take(5) {
        let _ = writeln!(text, "  {:>5.1}%  {}: {}", 100.0 * p[*i], now[*i].name, why[*i]);
    }
    Ok(PriorityRun { text, manifest: Some(manifest), card: Some(card) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_win_counts_only_inside_the_window_after_the_snapshot() {
        let d = |s: &str| s.parse::<NaiveDate>().unwrap();
        let won: HashMap<String, Vec<NaiveDate>> = [("A".to_string(), vec![d("2026-01-10")])].into();
        assert!(won_within(&won, "A", d("2025-12-31")));
        assert!(!won_within(&won, "A", d("2026-01-10")), "a win on the snapshot day was already known");
        assert!(!won_within(&won, "A", d("2025-07-13")), "181 days before: outside the window");
        assert!(won_within(&won, "A", d("2025-07-14")));
        assert!(!won_within(&won, "B", d("2025-12-31")));
    }

    #[test]
    fn reasons_are_the_largest_positive_contributions() {
        let names: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        let r = reasons(&names, &[1.0, -2.0, 0.5, 0.1], &[0.5, -1.0, 2.0, -3.0]);
        assert_eq!(r, "b (+2.00); c (+1.00); a (+0.50)");
        assert_eq!(
            reasons(&names, &[1.0, 1.0, 1.0, 1.0], &[-1.0, -1.0, 0.0, -2.0]),
            "nothing above the average account"
        );
    }
}
