//! `generate`: a deterministic demo lake in the contract's layout, with planted effects and planted
//! messiness written to `truth.json` beside the data so tests can check that jobs find them.
//!
//! Split by what it generates: `org` (people, roles, quotas, stages, campaigns), `accounts`,
//! `deals`, `activity`, `leads`, `product` (self-serve telemetry), `messiness`, and `truth` (what was
//! planted and realised); `world` holds the vocabulary and random draws, `chunk` runs one slice.

mod accounts;
mod activity;
mod chunk;
mod deals;
mod leads;
mod messiness;
mod minimal;
mod org;
mod product;
mod truth;
mod world;

use std::time::Instant;

use chrono::{Days, NaiveDate};

use crate::error::Result;
use crate::lake::Lake;
use chunk::generate_chunk;
use org::gen_org;
use truth::{Tally, truth_from};

pub use truth::Truth;

#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub opportunities: u64,
    pub seed: u64,
    /// Last day of data; history runs back `days` from here.
    pub end: NaiveDate,
    pub days: u32,
    /// Days of daily usage kept per customer (the last N days before `end`).
    pub usage_days: u32,
    pub shape: Shape,
    /// Every planted effect off (outcomes independent of single-threading, champions, competitors;
    /// no loss stall), with the same structure and the same random draws: a null lake on which
    /// the learning loop must find nothing.
    pub null_effects: bool,
    /// Plant a condition with no effect that only occurs late in the cycle (legal review on calls
    /// in Proposal): a naive comparison credits it with late-stage win rates, a stratified one
    /// must not.
    pub confounded: bool,
    /// The world after an approval: from a date, deals of the sellers a rollout treats win more.
    pub scenario: Option<Scenario>,
}

/// A simulated rollout's effect (`generate --scenario FILE`, TOML): deals created on or after
/// `from` by a seller that the rollout keyed by `assignment_key` (a proposal id) treats, at
/// `treated_share`, are won outright with probability `effect` (on their own random stream, so
/// the draws of every other deal are as without it). The true effect on the win rate is then
/// `effect` times the share of those deals that would have been lost; each deal's outcome with
/// and without the effect is written to truth_scenario.csv so tests can compute it exactly.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub from: NaiveDate,
    pub assignment_key: String,
    #[serde(default = "default_share")]
    pub treated_share: f64,
    /// Only `won` is simulated.
    pub outcome: String,
    pub effect: f64,
}

fn default_share() -> f64 {
    0.8
}

impl Scenario {
    pub fn load(path: &std::path::Path) -> crate::error::Result<Scenario> {
        let (_, s): (String, Scenario) = crate::error::read_declaration(Some(path), "", "")?;
        if s.outcome != "won" || !(0.0..=1.0).contains(&s.effect) || !(0.0..=1.0).contains(&s.treated_share) {
            return Err(crate::error::Error::Config {
                file: path.display().to_string(),
                message: "outcome must be \"won\", effect and treated_share in [0, 1]".into(),
            });
        }
        Ok(s)
    }
}

/// Per deal of a scenario's treated sellers since `from`: its outcome with and without the effect.
pub const TRUTH_SCENARIO: &str = "truth_scenario.csv";

/// Beside truth.json: each deal's true chance of winning at every open-stage entry, from the
/// generator's own parameters (the best possible win model on this lake).
pub const TRUTH_WIN_PROBABILITY: &str = "truth_win_probability.csv";

/// How the generated lake is landed: every contract table with this project's conventions, or a
/// narrow Salesforce selection with Salesforce's picklists and a lake.toml (`minimal`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Shape {
    #[default]
    Full,
    SalesforceMinimal,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            opportunities: 2_000,
            seed: 42,
            end: NaiveDate::from_ymd_opt(2026, 9, 30).expect("valid date"),
            days: 730,
            usage_days: 90,
            shape: Shape::Full,
            null_effects: false,
            confounded: false,
            scenario: None,
        }
    }
}

type Files = Vec<(String, Vec<u8>)>;

pub async fn generate(lake: &Lake, opts: &GenerateOptions) -> Result<Truth> {
    let started = Instant::now();
    let start = opts.end - Days::new(u64::from(opts.days));
    let n_opps = opts.opportunities.max(50);
    let n_accounts = (n_opps / 3).max(20);
    let n_sellers = (n_opps / 120).clamp(8, 4000);
    const ACCOUNTS_PER_CHUNK: u64 = 20_000;
    let chunks = n_accounts.div_ceil(ACCOUNTS_PER_CHUNK);

    for dir in ["raw/", "truth.json", TRUTH_WIN_PROBABILITY] {
        lake.delete_prefix(dir).await?;
    }
    // A lake.toml an earlier minimal-shape generation wrote goes with its data.
    if lake.exists("lake.toml").await? && lake.get("lake.toml").await? == minimal::PROFILE.as_bytes() {
        lake.delete_prefix("lake.toml").await?;
    }
    let progress = crate::progress::bar(chunks + 1, "generating", "chunks");
    let (org, org_files, mut tally) = gen_org(opts, start, n_sellers)?;
    for (path, bytes) in org_files {
        lake.put(&path, bytes).await?;
    }
    progress.inc(1);

    // Chunks are independent (own RNG stream), so two run at a time on two cores.
    let mut next = 0u64;
    while next < chunks {
        let batch: Vec<u64> = (next..(next + 2).min(chunks)).collect();
        next += batch.len() as u64;
        let results: Vec<Result<(Files, Tally)>> = std::thread::scope(|s| {
            let handles: Vec<_> = batch
                .iter()
                .map(|&c| {
                    let org = &org;
                    s.spawn(move || {
                        let first = c * ACCOUNTS_PER_CHUNK;
                        let last = ((c + 1) * ACCOUNTS_PER_CHUNK).min(n_accounts);
                        let opps = n_opps * last / n_accounts - n_opps * first / n_accounts;
                        generate_chunk(opts, start, org, c, (first, last), opps)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("generator thread panicked")).collect()
        });
        for r in results {
            let (files, t) = r?;
            for (path, bytes) in files {
                lake.put(&path, bytes).await?;
            }
            tally.add(&t);
            progress.inc(1);
        }
    }
    progress.finish_and_clear();

    if opts.shape == Shape::SalesforceMinimal {
        minimal::reshape(lake).await?;
    }
    let mut truth = truth_from(opts, start, n_opps, &tally);
    if opts.shape == Shape::SalesforceMinimal {
        truth.row_counts.retain(|table, _| !minimal::DROPPED.contains(&table.as_str()));
    }
    let json = serde_json::to_vec_pretty(&truth).map_err(|e| crate::error::Error::Other(e.to_string()))?;
    lake.put("truth.json", json).await?;
    let mut csv = String::from("opportunity_id,stage_name,entered_at,true_win_probability\n");
    for line in &tally.win_probabilities {
        csv.push_str(line);
        csv.push('\n');
    }
    lake.put(TRUTH_WIN_PROBABILITY, csv.into_bytes()).await?;
    if opts.scenario.is_some() {
        let mut csv = String::from("opportunity_id,owner_id,created_day,natural_won_day,won_day\n");
        for line in &tally.scenario_deals {
            csv.push_str(line);
            csv.push('\n');
        }
        lake.put(TRUTH_SCENARIO, csv.into_bytes()).await?;
    }
    eprintln!(
        "generated {} opportunities ({} rows in all) in {:.1}s into {}",
        n_opps,
        truth.row_counts.values().sum::<u64>(),
        started.elapsed().as_secs_f64(),
        lake.url
    );
    Ok(truth)
}
