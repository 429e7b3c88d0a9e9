//! Did an approved change help? The readout of a rollout: treated vs holdout sellers' deals on
//! the targeted outcome (won within a fixed horizon of creation, so deals still inside their
//! horizon are censored, counted and left out), CUPED-adjusted by each seller's pre-period rate,
//! with cluster-robust (by seller) intervals, randomisation inference when sellers are few, and
//! the minimum detectable effect. A change with no holdout gets a difference-in-differences
//! against sellers outside its scope (with a placebo in time), labelled as weaker evidence.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{Days, NaiveDate};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::layers::LakeSession;
use crate::layers::columns::strings;
use crate::learn::approvals::Decision;
use crate::outputs::decision_log::record_id;
use crate::stats::experiment::{Unit, clustered_difference, cuped, minimum_detectable_effect, randomisation_p, welch};

const DEALS_SQL: &str = repo_file!("sql/learn/readout_deals.sql");
/// Below this many deals or sellers in an arm a readout says "not enough data yet".
pub const MIN_DEALS_PER_ARM: usize = 30;
pub const MIN_SELLERS_PER_ARM: usize = 3;
/// With fewer sellers than this in an arm, randomisation inference decides, not the t interval.
pub const FEW_CLUSTERS: usize = 10;
/// Days of deals before the rollout that give each seller's pre-period rate.
pub const PRE_DAYS: u64 = 365;

/// What a readout measures and what it must be able to see.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Target {
    /// Days after a deal's creation within which a win counts.
    pub horizon_days: u64,
    /// The smallest change in the win rate worth acting on: the readout is "not enough data yet"
    /// while its minimum detectable effect is larger.
    pub minimum_effect: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Readout {
    pub proposal_id: String,
    pub as_of: String,
    pub effective_from: String,
    /// holdout, difference_in_differences or before_after.
    pub design: String,
    pub outcome: String,
    pub horizon_days: u64,
    pub treated_deals: usize,
    pub holdout_deals: usize,
    pub treated_sellers: usize,
    pub holdout_sellers: usize,
    /// Deals created since the rollout whose horizon has not ended by the run date.
    pub censored_deals: usize,
    pub treated_rate: Option<f64>,
    pub holdout_rate: Option<f64>,
    /// The effect (treated minus holdout, in win-rate points; CUPED-adjusted for a holdout).
    pub estimate: Option<f64>,
    pub low: Option<f64>,
    pub high: Option<f64>,
    pub p: Option<f64>,
    pub unadjusted_estimate: Option<f64>,
    pub unadjusted_low: Option<f64>,
    pub unadjusted_high: Option<f64>,
    pub cuped_theta: Option<f64>,
    pub variance_reduction: Option<f64>,
    pub randomisation_p: Option<f64>,
    pub minimum_detectable_effect: Option<f64>,
    pub minimum_effect: f64,
    /// When enough deals will have matured to detect `minimum_effect` (an estimate).
    pub enough_by: Option<String>,
    pub sample_ratio_p: Option<f64>,
    pub balance_p: Option<f64>,
    pub placebo_estimate: Option<f64>,
    pub placebo_low: Option<f64>,
    pub placebo_high: Option<f64>,
    pub warnings: Vec<String>,
    /// helped, no detectable effect, hurt, not enough data yet.
    pub verdict: String,
    pub sentence: String,
}

struct DealRow {
    owner: String,
    created: NaiveDate,
    won: Option<NaiveDate>,
}

/// What a readout reads that this lake lacks (when each deal was won), said with how to get it.
fn missing_inputs(session: &LakeSession) -> Vec<String> {
    session.missing(&["opportunity_history".to_string(), "opportunity_stage".to_string()])
}

async fn deals(session: &LakeSession) -> Result<Vec<DealRow>> {
    let mut out = Vec::new();
    for b in session.collect_declared(DEALS_SQL, "sql/learn/readout_deals.sql").await? {
        let (owner, created, won) = (strings(b.column(1))?, strings(b.column(2))?, strings(b.column(3))?);
        for r in 0..b.num_rows() {
            let (Some(o), Some(c)) = (owner[r].clone(), created[r].as_deref().and_then(|c| c.parse().ok())) else {
                continue;
            };
            out.push(DealRow { owner: o, created: c, won: won[r].as_deref().and_then(|w| w.parse().ok()) });
        }
    }
    Ok(out)
}

fn won_within(d: &DealRow, horizon: u64) -> f64 {
    f64::from(u8::from(d.won.is_some_and(|w| w < d.created + Days::new(horizon))))
}

/// Each seller's rate of deals won within the horizon among deals created in [from, to].
fn rates(rows: &[DealRow], from: NaiveDate, to: NaiveDate, horizon: u64) -> BTreeMap<String, (f64, usize)> {
    let mut acc: BTreeMap<String, (f64, usize)> = BTreeMap::new();
    for d in rows.iter().filter(|d| d.created >= from && d.created <= to) {
        let e = acc.entry(d.owner.clone()).or_default();
        e.0 += won_within(d, horizon);
        e.1 += 1;
    }
    acc.into_iter().map(|(k, (s, n))| (k, (s / n as f64, n))).collect()
}

/// The readout of an approved rollout as of `as_of`.
pub async fn measure(session: &LakeSession, d: &Decision, target: &Target, as_of: NaiveDate) -> Result<Readout> {
    let effective: NaiveDate = d
        .effective_from
        .as_deref()
        .and_then(|e| e.parse().ok())
        .ok_or_else(|| Error::Other(format!("proposal {} was not approved: no readout", d.proposal_id)))?;
    // A lake that does not land when deals were won cannot measure a rollout: that is this
    // readout's answer (a row that says so), not a failure of the whole proposals run.
    let missing = missing_inputs(session);
    let rows = if missing.is_empty() { deals(session).await? } else { Vec::new() };
    let h = target.horizon_days;
    let matured_to = as_of - Days::new(h);
    let treated: BTreeSet<&str> = d.treated.iter().map(String::as_str).collect();
    let holdout: BTreeSet<&str> = d.holdout.iter().map(String::as_str).collect();
    let post: Vec<&DealRow> = rows.iter().filter(|r| r.created >= effective && r.created <= matured_to).collect();
    let censored =
        rows.iter().filter(|r| r.created >= effective && r.created > matured_to && r.created <= as_of).count();
    let mut out = Readout {
        proposal_id: d.proposal_id.clone(),
        as_of: as_of.to_string(),
        effective_from: effective.to_string(),
        design: if holdout.is_empty() { "difference_in_differences".into() } else { "holdout".into() },
        outcome: format!("won within {h} days of creation"),
        horizon_days: h,
        treated_deals: 0,
        holdout_deals: 0,
        treated_sellers: 0,
        holdout_sellers: 0,
        censored_deals: censored,
        treated_rate: None,
        holdout_rate: None,
        estimate: None,
        low: None,
        high: None,
        p: None,
        unadjusted_estimate: None,
        unadjusted_low: None,
        unadjusted_high: None,
        cuped_theta: None,
        variance_reduction: None,
        randomisation_p: None,
        minimum_detectable_effect: None,
        minimum_effect: target.minimum_effect,
        enough_by: None,
        sample_ratio_p: None,
        balance_p: None,
        placebo_estimate: None,
        placebo_low: None,
        placebo_high: None,
        warnings: Vec::new(),
        verdict: "not enough data yet".into(),
        sentence: String::new(),
    };
    if !missing.is_empty() {
        out.verdict = "cannot be measured".into();
        let gap = format!("a readout needs {} (when each deal was won)", missing.join(", "));
        out.sentence = format!("Cannot be measured on this lake: {gap}.");
        out.warnings.push(gap);
        return Ok(out);
    }
    if holdout.is_empty() {
        difference_in_differences(&rows, &treated, effective, matured_to, h, &mut out);
    } else {
        with_holdout(&rows, &post, &treated, &holdout, d, effective, matured_to, h, &mut out);
    }
    if out.sentence.is_empty() {
        out.sentence = sentence(&out);
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn with_holdout(
    rows: &[DealRow],
    post: &[&DealRow],
    treated: &BTreeSet<&str>,
    holdout: &BTreeSet<&str>,
    d: &Decision,
    effective: NaiveDate,
    matured_to: NaiveDate,
    h: u64,
    out: &mut Readout,
) {
    let pre = rates(rows, effective - Days::new(PRE_DAYS), effective - Days::new(h), h);
    let units: Vec<Unit> = post
        .iter()
        .filter(|r| treated.contains(r.owner.as_str()) || holdout.contains(r.owner.as_str()))
        .map(|r| Unit {
            cluster: r.owner.clone(),
            treated: treated.contains(r.owner.as_str()),
            y: won_within(r, h),
            pre: pre.get(&r.owner).map(|p| p.0),
        })
        .collect();
    let sellers =
        |t: bool| units.iter().filter(|u| u.treated == t).map(|u| u.cluster.as_str()).collect::<BTreeSet<_>>().len();
    out.treated_deals = units.iter().filter(|u| u.treated).count();
    out.holdout_deals = units.len() - out.treated_deals;
    out.treated_sellers = sellers(true);
    out.holdout_sellers = sellers(false);
    let share = d.treated_share.unwrap_or(0.8);
    // Sample ratio: the assignment's sellers against the share asked for.
    let assigned = (d.treated.len() + d.holdout.len()) as u64;
    out.sample_ratio_p = crate::stats::binomial_two_sided(d.treated.len() as u64, assigned, share);
    if out.sample_ratio_p.is_some_and(|p| p < 0.01) {
        out.warnings.push(format!(
            "sample ratio mismatch: {} of {assigned} sellers treated against {:.0}% asked (p = {:.4})",
            d.treated.len(),
            share * 100.0,
            out.sample_ratio_p.unwrap_or_default()
        ));
    }
    // Pre-period balance of the sellers' own rates.
    let pre_of = |set: &BTreeSet<&str>| set.iter().filter_map(|s| pre.get(*s).map(|p| p.0)).collect::<Vec<f64>>();
    if let Some((diff, _, _, p)) = welch(&pre_of(treated), &pre_of(holdout)) {
        out.balance_p = Some(p);
        if p < 0.05 {
            out.warnings.push(format!(
                "pre-period imbalance: treated sellers' earlier win rate differs from the holdout's by {:+.3} (p = {p:.3}); CUPED adjusts for it",
                diff
            ));
        }
    }
    let (Some(raw), true) = (clustered_difference(&units, |u| u.y), !units.is_empty()) else {
        out.sentence = format!(
            "not enough data yet: {} treated and {} holdout deals created since {effective} have ended their {h}-day horizon ({} sellers and {} sellers); {} more are still inside it",
            out.treated_deals, out.holdout_deals, out.treated_sellers, out.holdout_sellers, out.censored_deals
        );
        return;
    };
    out.treated_rate = Some(raw.treated_mean);
    out.holdout_rate = Some(raw.holdout_mean);
    out.unadjusted_estimate = Some(raw.estimate);
    out.unadjusted_low = Some(raw.low);
    out.unadjusted_high = Some(raw.high);
    let (adjusted, theta, reduction) = cuped(&units);
    out.cuped_theta = Some(theta);
    out.variance_reduction = Some(reduction);
    let est = clustered_difference(&adjusted, |u| u.y).unwrap_or(raw);
    out.estimate = Some(est.estimate);
    out.low = Some(est.low);
    out.high = Some(est.high);
    out.p = Some(est.p);
    let seed = u64::from_str_radix(&record_id(&["randomisation", &d.proposal_id]), 16).unwrap_or(7);
    out.randomisation_p = randomisation_p(&adjusted, 2000, seed);
    let mde = minimum_detectable_effect(est.se, est.df);
    out.minimum_detectable_effect = Some(mde);
    let few = est.treated_clusters.min(est.holdout_clusters) < FEW_CLUSTERS;
    let enough_sellers = est.treated_clusters >= MIN_SELLERS_PER_ARM && est.holdout_clusters >= MIN_SELLERS_PER_ARM;
    let enough_deals = out.treated_deals >= MIN_DEALS_PER_ARM && out.holdout_deals >= MIN_DEALS_PER_ARM;
    if !enough_sellers {
        out.sentence = format!(
            "not enough data yet, and waiting will not fix it: {} treated and {} holdout sellers have matured deals; a readout needs {MIN_SELLERS_PER_ARM} in each arm (approve for a wider scope or a larger holdout)",
            est.treated_clusters, est.holdout_clusters
        );
        return;
    }
    if !enough_deals || mde > out.minimum_effect {
        // The standard error falls as 1/sqrt(n): the deals needed, and when they will have matured
        // at the rate deals have been created since the rollout.
        let n = units.len() as f64;
        let needed =
            (n * (mde / out.minimum_effect).powi(2)).max(MIN_DEALS_PER_ARM as f64 / share.min(1.0 - share).max(0.01));
        let days = (matured_to - effective).num_days().max(1) as f64;
        let per_day = n / days;
        if per_day > 0.0 {
            let more = ((needed - n).max(0.0) / per_day).ceil() as u64;
            out.enough_by = Some((matured_to + Days::new(more + h)).to_string());
        }
        return;
    }
    let decided_low = est.low > 0.0 && (!few || out.randomisation_p.is_some_and(|p| p < 0.05));
    let decided_high = est.high < 0.0 && (!few || out.randomisation_p.is_some_and(|p| p < 0.05));
    out.verdict = if decided_low {
        "helped"
    } else if decided_high {
        "hurt"
    } else {
        "no detectable effect"
    }
    .into();
    if few {
        out.warnings.push(format!(
            "only {} treated and {} holdout sellers: the verdict also needs the randomisation test (p = {:.3})",
            est.treated_clusters,
            est.holdout_clusters,
            out.randomisation_p.unwrap_or(f64::NAN)
        ));
    }
}

/// No holdout: each seller's change (after minus before) in scope against sellers outside it.
fn difference_in_differences(
    rows: &[DealRow],
    treated: &BTreeSet<&str>,
    effective: NaiveDate,
    matured_to: NaiveDate,
    h: u64,
    out: &mut Readout,
) {
    let span = (matured_to - effective).num_days().max(1) as u64;
    let after = rates(rows, effective, matured_to, h);
    let before = rates(rows, effective - Days::new(span + h), effective - Days::new(h), h);
    let earlier = rates(rows, effective - Days::new(2 * span + h), effective - Days::new(span + h), h);
    let change = |a: &BTreeMap<String, (f64, usize)>, b: &BTreeMap<String, (f64, usize)>, inside: bool| -> Vec<f64> {
        a.iter()
            .filter(|(s, _)| treated.contains(s.as_str()) == inside)
            .filter_map(|(s, (r, _))| b.get(s).map(|(p, _)| r - p))
            .collect()
    };
    out.treated_deals = rows
        .iter()
        .filter(|r| r.created >= effective && r.created <= matured_to && treated.contains(r.owner.as_str()))
        .count();
    out.holdout_deals = rows
        .iter()
        .filter(|r| r.created >= effective && r.created <= matured_to && !treated.contains(r.owner.as_str()))
        .count();
    out.treated_sellers = after.keys().filter(|s| treated.contains(s.as_str())).count();
    out.holdout_sellers = after.len() - out.treated_sellers;
    let (inside, outside) = (change(&after, &before, true), change(&after, &before, false));
    if outside.len() < MIN_SELLERS_PER_ARM {
        out.design = "before_after".into();
        out.warnings.push("weakest evidence: the change reached every seller, so there is no comparison group; this is a before/after difference, open to anything else that changed".into());
        let n = inside.len() as f64;
        if n >= MIN_SELLERS_PER_ARM as f64 {
            let m = inside.iter().sum::<f64>() / n;
            let sd = (inside.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
            let q = statrs::distribution::StudentsT::new(0.0, 1.0, n - 1.0)
                .map(|t| statrs::distribution::ContinuousCDF::inverse_cdf(&t, 0.975))
                .unwrap_or(f64::NAN);
            let se = sd / n.sqrt();
            out.estimate = Some(m);
            out.low = Some(m - q * se);
            out.high = Some(m + q * se);
            out.verdict = verdict_of(m - q * se, m + q * se);
        }
        return;
    }
    out.warnings.push("weaker evidence than a holdout: a difference-in-differences against sellers outside the change's scope assumes both would have moved alike".into());
    if let Some((d, lo, hi, p)) = welch(&inside, &outside) {
        out.estimate = Some(d);
        out.low = Some(lo);
        out.high = Some(hi);
        out.p = Some(p);
        out.verdict = verdict_of(lo, hi);
    }
    if let Some((d, lo, hi, _)) = welch(&change(&before, &earlier, true), &change(&before, &earlier, false)) {
        out.placebo_estimate = Some(d);
        out.placebo_low = Some(lo);
        out.placebo_high = Some(hi);
        if lo > 0.0 || hi < 0.0 {
            out.warnings.push(format!(
                "the placebo in time fails: before the change the two groups already diverged by {d:+.3} ({lo:+.3} to {hi:+.3}); the difference-in-differences is not trustworthy"
            ));
            out.verdict = "no detectable effect".into();
        }
    }
}

fn verdict_of(low: f64, high: f64) -> String {
    if low > 0.0 {
        "helped"
    } else if high < 0.0 {
        "hurt"
    } else {
        "no detectable effect"
    }
    .into()
}

fn sentence(r: &Readout) -> String {
    let pct = |v: Option<f64>| v.map(|v| format!("{:+.1} pts", 100.0 * v)).unwrap_or_else(|| "n/a".into());
    let rate = |v: Option<f64>| v.map(|v| format!("{:.1}%", 100.0 * v)).unwrap_or_else(|| "n/a".into());
    let mut s = format!(
        "{}: {} ({}); treated {} of {} deals ({} sellers) vs holdout {} of {} deals ({} sellers); effect {} (95% CI {} to {})",
        r.verdict,
        r.outcome,
        r.design.replace('_', " "),
        rate(r.treated_rate),
        r.treated_deals,
        r.treated_sellers,
        rate(r.holdout_rate),
        r.holdout_deals,
        r.holdout_sellers,
        pct(r.estimate),
        pct(r.low),
        pct(r.high)
    );
    if let Some(m) = r.minimum_detectable_effect {
        s.push_str(&format!("; detectable now: {} (worth acting on: {})", pct(Some(m)), pct(Some(r.minimum_effect))));
    }
    if let Some(by) = &r.enough_by {
        s.push_str(&format!("; enough deals should have matured by about {by}"));
    }
    s.push_str(&format!("; {} deals still inside their horizon", r.censored_deals));
    s
}
