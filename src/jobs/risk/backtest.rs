//! Walk-forward backtest of the deal risk score. At each as-of date the score is computed from a
//! session that sees only what was known then; the outcome is read `horizon` days later from the
//! full history (evaluation is the only place allowed to look ahead). A deal-week is "bad" when by
//! the horizon the deal was lost or its close date had moved later than it stood on the as-of date.

use std::collections::{BTreeMap, HashMap};

use chrono::{Days, NaiveDate};

use crate::error::{Error, Result};
use crate::jobs::risk::Playbook;
use crate::lake::Lake;
use crate::layers::AsOf;
use crate::layers::columns::string_rows;
use crate::stats::{auc, two_proportion, wilson};

pub struct Report {
    pub text: String,
    pub deal_weeks: usize,
    pub auc: Option<f64>,
    pub precision_top10: Option<f64>,
    pub base_rate: f64,
    pub flagged: (usize, usize),
    pub unflagged: (usize, usize),
}

/// One scored deal-week: (score, bad by the horizon, active flags).
type Scored = (f64, bool, Vec<String>);

/// A deal's history: (recorded at, stage, close date), oldest first.
type History = HashMap<String, Vec<(String, String, Option<String>)>>;

/// Every deal's stage history and the stage catalog, as known `as_of` (`AsOf(None)`: everything
/// landed, which only an evaluation of the past may read).
async fn history(lake: &Lake, as_of: AsOf) -> Result<(History, HashMap<String, (bool, bool)>)> {
    let session = crate::outputs::open_session(lake, as_of).await?;
    let mut history: History = HashMap::new();
    let b = session
        .ctx
        .sql(
            "SELECT opportunity_id, CAST(created_date AS VARCHAR) AS recorded_at, stage_name, \
               CAST(close_date AS VARCHAR) AS close_day \
             FROM staging.opportunity_history",
        )
        .await?
        .collect()
        .await?;
    for batch in b {
        for c in string_rows(&batch, 4)? {
            let (Some(id), Some(at)) = (c[0].clone(), c[1].clone()) else { continue };
            history.entry(id).or_default().push((at, c[2].clone().unwrap_or_default(), c[3].clone()));
        }
    }
    // Oldest first per deal (row order out of a query is not guaranteed).
    for rows in history.values_mut() {
        rows.sort();
    }
    let mut stages = HashMap::new();
    for batch in session
        .ctx
        .sql("SELECT master_label, CAST(is_closed AS VARCHAR), CAST(is_won AS VARCHAR) FROM staging.opportunity_stage")
        .await?
        .collect()
        .await?
    {
        for c in string_rows(&batch, 3)? {
            if let Some(n) = c[0].clone() {
                stages.insert(n, (c[1].as_deref() == Some("true"), c[2].as_deref() == Some("true")));
            }
        }
    }
    Ok((history, stages))
}

/// The deal's (stage, close date) at the end of a day, from its history.
fn state_at(rows: &[(String, String, Option<String>)], day: NaiveDate) -> Option<(String, Option<String>)> {
    let end = (day + Days::new(1)).to_string();
    rows.iter().rev().find(|(at, _, _)| at.as_str() < end.as_str()).map(|(_, s, c)| (s.clone(), c.clone()))
}

/// One scored open deal at one as-of date, with its outcome by the horizon.
#[derive(Debug, Clone)]
pub struct DealWeek {
    pub date: NaiveDate,
    pub deal: String,
    /// The playbook's prior score (0-100).
    pub score: f64,
    /// Lost, or the close date moved later, by `date + horizon`.
    pub bad: bool,
    pub flags: Vec<String>,
}

/// Scores every open deal at each date from a session that sees only what was known then, and
/// reads each outcome `horizon_days` later from the history as known `outcomes_as_of`. Returns the
/// deal-weeks and the flags the lake cannot fire (with what they lack).
pub async fn deal_weeks(
    lake: &Lake,
    pb: &Playbook,
    dates: &[NaiveDate],
    horizon_days: u64,
    outcomes_as_of: AsOf,
) -> Result<(Vec<DealWeek>, BTreeMap<String, Vec<String>>)> {
    let (history, stages) = history(lake, outcomes_as_of).await?;
    let mut rows = Vec::new();
    // Flags this lake cannot fire (the same on every date: they follow what landed).
    let mut blind: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let bar = crate::progress::bar(dates.len() as u64, "risk scores at past dates", "as-of dates");
    for &d in dates {
        let session = crate::outputs::open_session(lake, AsOf(Some(d))).await?;
        let risk = crate::jobs::risk::compute_with(&session, pb, &crate::jobs::risk::Weights::priors(pb)).await?;
        blind.extend(crate::jobs::risk::uninstrumented(&session, pb));
        let horizon = d + Days::new(horizon_days);
        for r in risk.iter().filter(|r| r.score.is_some()) {
            let Some(h) = history.get(&r.deal.id) else { continue };
            let Some((stage_later, close_later)) = state_at(h, horizon) else { continue };
            let (closed, won) = stages.get(&stage_later).copied().unwrap_or((false, false));
            let lost = closed && !won;
            let slipped = matches!((&r.deal.close_date, &close_later), (Some(a), Some(b)) if b > a);
            rows.push(DealWeek {
                date: d,
                deal: r.deal.id.clone(),
                score: r.score.unwrap_or_default() as f64,
                bad: lost || slipped,
                flags: r.flags.iter().map(|f| f.flag.clone()).collect(),
            });
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok((rows, blind))
}

pub async fn run(
    lake: &Lake,
    pb: &Playbook,
    from: NaiveDate,
    to: NaiveDate,
    every_days: u64,
    horizon_days: u64,
) -> Result<Report> {
    if to < from || every_days == 0 {
        return Err(Error::Other("backtest needs --from <= --to and --every-days >= 1".into()));
    }
    let mut dates = Vec::new();
    let mut d = from;
    while d <= to {
        dates.push(d);
        d = d + Days::new(every_days);
    }
    let weeks = dates.len();
    let (weeks_scored, blind) = deal_weeks(lake, pb, &dates, horizon_days, AsOf(None)).await?;
    let rows: Vec<Scored> = weeks_scored.into_iter().map(|w| (w.score, w.bad, w.flags)).collect();
    let n = rows.len();
    if n == 0 {
        return Err(Error::Other(format!("no open, scored deals between {from} and {to}: nothing to backtest")));
    }
    let bad = rows.iter().filter(|r| r.1).count();
    let base_rate = bad as f64 / n as f64;
    let scores: Vec<(f64, bool)> = rows.iter().map(|r| (r.0, r.1)).collect();
    let auc = auc(&scores);
    let mut ranked = rows.clone();
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
    let top = (n / 10).max(1);
    let top_bad = ranked[..top].iter().filter(|r| r.1).count();
    let precision = top_bad as f64 / top as f64;
    let count = |f: &dyn Fn(&Scored) -> bool| {
        let sel: Vec<&Scored> = rows.iter().filter(|r| f(r)).collect();
        (sel.iter().filter(|r| r.1).count(), sel.len())
    };
    let flagged = count(&|r| !r.2.is_empty());
    let unflagged = count(&|r| r.2.is_empty());
    let pct = |k: usize, n: usize| {
        if n == 0 {
            "   -  ".to_string()
        } else {
            let (lo, hi) = wilson(k as i64, n as i64).unwrap_or((0.0, 0.0));
            format!("{:5.1}% (95% CI {:.1}-{:.1}%, {k}/{n})", 100.0 * k as f64 / n as f64, lo * 100.0, hi * 100.0)
        }
    };
    let mut text = format!(
        "walk-forward backtest of deal risk (playbook {}, priors): {weeks} as-of dates from {from} to {to} every {every_days} days\n\
         outcome read {horizon_days} days after each date; bad = lost, or close date moved later (a slip)\n\
         deal-weeks scored: {n} (a deal counts once per as-of date it is open), bad: {bad} (base rate {:.1}%)\n",
        pb.version,
        100.0 * base_rate
    );
    text.push_str(&format!(
        "ROC AUC of the risk score: {}\nprecision in the top 10% by score ({top} deal-weeks): {} vs base rate {:.1}% (lift {:.2}x)\n",
        auc.map(|a| format!("{a:.3}")).unwrap_or_else(|| "n/a".into()),
        pct(top_bad, top),
        100.0 * base_rate,
        precision / base_rate.max(f64::EPSILON)
    ));
    let z = two_proportion(flagged.0 as i64, flagged.1 as i64, unflagged.0 as i64, unflagged.1 as i64);
    text.push_str(&format!(
        "flagged deal-weeks:   {}\nunflagged deal-weeks: {}\n{}\n",
        pct(flagged.0, flagged.1),
        pct(unflagged.0, unflagged.1),
        z.map(|(z, p)| format!("two-proportion z = {z:.2}, p = {p:.2e} (deal-weeks are not independent: a deal repeats across weeks, so read p as optimistic)"))
            .unwrap_or_default()
    ));
    text.push_str("by flag (bad rate when the flag is active):\n");
    let mut per_flag: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for r in &rows {
        for f in &r.2 {
            let e = per_flag.entry(f.clone()).or_default();
            e.1 += 1;
            e.0 += usize::from(r.1);
        }
    }
    for f in &pb.flags {
        if let Some(missing) = blind.get(&f.id) {
            text.push_str(&format!("  {:<28} not instrumented: needs {}\n", f.id, missing.join("; ")));
            continue;
        }
        let (k, m) = per_flag.get(&f.id).copied().unwrap_or((0, 0));
        let note = if m < 30 { "  (not enough evidence: n < 30)" } else { "" };
        text.push_str(&format!("  {:<28} {}{note}\n", f.id, pct(k, m)));
    }
    Ok(Report { text, deal_weeks: n, auc, precision_top10: Some(precision), base_rate, flagged, unflagged })
}
