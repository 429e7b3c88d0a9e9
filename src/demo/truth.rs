//! What the generator planted and what it realised: the effects the jobs should find (with their
//! planted rates) and the messiness `validate` should report, written to `truth.json`.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use serde::Serialize;

use super::GenerateOptions;
use super::messiness::*;

// Planted effects. Tests and the learning loop look for these; truth.json records them.
pub(super) const SLIP_AFTER_DEMO_SINGLE: f64 = 0.48;
pub(super) const SLIP_AFTER_DEMO_MULTI: f64 = 0.20;
/// Under --null-effects every deal that reached Demo slips with this probability.
pub(super) const SLIP_AFTER_DEMO_NULL: f64 = 0.30;
pub(super) const CHAMPION_DARK_SHARE: f64 = 0.25;
/// Stage-advance probability factors: once the champion has gone dark, with a competitor in the
/// deal, single-threaded, with an engaged champion.
pub(super) const DARK_ADVANCE_FACTOR: f64 = 0.5;
pub(super) const COMPETITOR_ADVANCE_FACTOR: f64 = 0.85;
pub(super) const SINGLE_ADVANCE_FACTOR: f64 = 0.95;
pub(super) const ENGAGED_CHAMPION_ADVANCE_FACTOR: f64 = 1.08;
/// --confounded: the share of deals in Proposal whose calls bring up legal review (no effect).
pub(super) const LEGAL_REVIEW_SHARE: f64 = 0.5;

/// A deal heading for a loss stalls: its last stage lasts this much longer, and in it every
/// stakeholder replies this much less often (the pattern the deal-risk flags look for).
pub(super) const LOSS_STALL_FACTOR: f64 = 1.8;
pub(super) const LOSS_STALL_REPLY_FACTOR: f64 = 0.4;
pub(super) const CHAMPION_ALWAYS_QUIET_SHARE: f64 = 0.10;
pub(super) const COMPETITOR_SHARE: f64 = 0.25;
pub(super) const SINGLE_THREADED_SHARE: f64 = 0.35;
pub(super) const ACTIVATION_RATE: [(&str, f64); 5] =
    [("organic", 0.60), ("paid_search", 0.40), ("referral", 0.65), ("social", 0.50), ("partner", 0.55)];

/// What the generator planted, for tests and for people reading the demo lake.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Truth {
    pub seed: u64,
    pub opportunities: u64,
    pub start: String,
    pub end: String,
    pub effects: BTreeMap<String, serde_json::Value>,
    /// Whether the effects were switched off (--null-effects) and the late condition planted
    /// (--confounded).
    pub null_effects: bool,
    pub confounded: bool,
    /// The risk ratios the learning loop's patterns should find, in the terms of jobs/patterns.toml
    /// (condition, outcome, the stage entry where it is observed): 1.0 where nothing was planted.
    pub planted_patterns: Vec<PlantedPattern>,
    pub messiness: BTreeMap<String, serde_json::Value>,
    pub row_counts: BTreeMap<String, u64>,
}

/// One planted effect as the patterns job should report it.
#[derive(Debug, Clone, Serialize)]
pub struct PlantedPattern {
    pub condition: String,
    pub outcome: String,
    pub stage: String,
    pub risk_ratio: f64,
    pub why: String,
}

/// The planted patterns: stage advances are multiplied by a factor at each remaining stage, so
/// from the entry of stage k the win probability is multiplied by factor^(stages left), the same
/// for every other attribute a deal has (the factors multiply), which makes it the risk ratio
/// within that stage.
fn planted_patterns(opts: &GenerateOptions) -> Vec<PlantedPattern> {
    let on = |planted: f64| if opts.null_effects { 1.0 } else { planted };
    let p = |condition: &str, outcome: &str, stage: &str, risk_ratio: f64, why: &str| PlantedPattern {
        condition: condition.into(),
        outcome: outcome.into(),
        stage: stage.into(),
        risk_ratio,
        why: why.into(),
    };
    let mut out = vec![
        p(
            "single_threaded",
            "slipped",
            "Demo",
            on(SLIP_AFTER_DEMO_SINGLE / SLIP_AFTER_DEMO_MULTI),
            "a single-threaded deal slips after Demo with probability 0.48, a multi-threaded one 0.20",
        ),
        p(
            "competitor_in_play",
            "won",
            "Proposal",
            on(COMPETITOR_ADVANCE_FACTOR.powi(2)),
            "a competitor multiplies each stage advance by 0.85; two advances remain from Proposal",
        ),
        p(
            "competitor_in_play",
            "won",
            "Negotiation",
            on(COMPETITOR_ADVANCE_FACTOR),
            "one advance remains from Negotiation",
        ),
    ];
    if opts.confounded {
        out.push(p(
            "legal_review",
            "won",
            "Negotiation",
            1.0,
            "legal review comes up on calls in Proposal for half the deals and changes nothing",
        ));
    }
    out
}

/// Counters the simulation keeps so the truth file states realised effects, not only parameters.
#[derive(Debug, Clone, Default)]
pub(super) struct Tally {
    pub reached_demo_single: u64,
    pub slipped_single: u64,
    pub reached_demo_multi: u64,
    pub slipped_multi: u64,
    pub closed_dark: u64,
    pub won_dark: u64,
    pub closed_champion_engaged: u64,
    pub won_champion_engaged: u64,
    pub dup_contacts: u64,
    pub industry_variants: u64,
    pub opp_source_variants: u64,
    pub amount_nulls: u64,
    pub negative_amounts: u64,
    pub eur_opps: u64,
    pub deleted_opps: u64,
    pub orphan_roles: u64,
    pub future_tasks: u64,
    pub duplicate_line_items: u64,
    pub null_lead_sources: u64,
    pub late_logged_tasks: u64,
    pub signups: BTreeMap<String, (u64, u64)>,
    /// "opportunity_id,stage,entered_at,probability" per open-stage entry (the oracle).
    pub win_probabilities: Vec<String>,
    /// "opportunity_id,owner_id,created_day,natural_won_day,won_day" per scenario-treated deal.
    pub scenario_deals: Vec<String>,
    pub rows: BTreeMap<String, u64>,
}

impl Tally {
    pub(super) fn add(&mut self, o: &Tally) {
        macro_rules! sum { ($($f:ident),*) => { $( self.$f += o.$f; )* } }
        sum!(
            reached_demo_single,
            slipped_single,
            reached_demo_multi,
            slipped_multi,
            closed_dark,
            won_dark,
            closed_champion_engaged,
            won_champion_engaged,
            dup_contacts,
            industry_variants,
            opp_source_variants,
            amount_nulls,
            negative_amounts,
            eur_opps,
            deleted_opps,
            orphan_roles,
            future_tasks,
            duplicate_line_items,
            null_lead_sources,
            late_logged_tasks
        );
        for (k, (a, b)) in &o.signups {
            let e = self.signups.entry(k.clone()).or_default();
            e.0 += a;
            e.1 += b;
        }
        self.win_probabilities.extend(o.win_probabilities.iter().cloned());
        self.scenario_deals.extend(o.scenario_deals.iter().cloned());
        for (k, v) in &o.rows {
            *self.rows.entry(k.clone()).or_default() += v;
        }
    }
}

pub(super) fn truth_from(opts: &GenerateOptions, start: NaiveDate, n_opps: u64, t: &Tally) -> Truth {
    use serde_json::json;
    let rate = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let mut truth = Truth {
        seed: opts.seed,
        opportunities: n_opps,
        start: start.to_string(),
        end: opts.end.to_string(),
        row_counts: t.rows.clone(),
        null_effects: opts.null_effects,
        confounded: opts.confounded,
        planted_patterns: planted_patterns(opts),
        ..Default::default()
    };
    truth.effects.insert(
        "single_threaded_slip_after_demo".into(),
        json!({
            "definition": "a deal with exactly one contact role that reached Demo has its close date pushed out (a later close_date in an opportunity_history row created after Demo, while still open)",
            "planted_probability_single": SLIP_AFTER_DEMO_SINGLE,
            "planted_probability_multi": SLIP_AFTER_DEMO_MULTI,
            "planted_ratio": SLIP_AFTER_DEMO_SINGLE / SLIP_AFTER_DEMO_MULTI,
            "realised": {"single": [t.slipped_single, t.reached_demo_single], "multi": [t.slipped_multi, t.reached_demo_multi],
                         "ratio": rate(t.slipped_single, t.reached_demo_single) / rate(t.slipped_multi, t.reached_demo_multi).max(1e-9)}
        }),
    );
    truth.effects.insert(
        "losing_deals_stall".into(),
        json!({
            "definition": "a deal that will be lost at its next stage transition stays in its last stage longer and its stakeholders reply less there",
            "planted_stage_duration_factor": LOSS_STALL_FACTOR,
            "planted_reply_rate_factor": LOSS_STALL_REPLY_FACTOR
        }),
    );
    truth.effects.insert(
        "champion_going_dark_lowers_win_rate".into(),
        json!({
            "definition": "in a deal with a Champion contact role, the champion's inbound replies thin out over three weeks (lower reply rate, longer reply lag) and then stop; every later stage advance is halved",
            "planted_share_of_champion_deals": CHAMPION_DARK_SHARE,
            "always_quiet_share_of_champion_deals": CHAMPION_ALWAYS_QUIET_SHARE,
            "realised_win_rate_dark": [t.won_dark, t.closed_dark, rate(t.won_dark, t.closed_dark)],
            "realised_win_rate_engaged_champion": [t.won_champion_engaged, t.closed_champion_engaged, rate(t.won_champion_engaged, t.closed_champion_engaged)]
        }),
    );
    truth.effects.insert(
        "competitor_emerging".into(),
        json!({"planted_share": COMPETITOR_SHARE, "definition": "competitor tracker mentions start mid-cycle and become more frequent; stage advances x0.85"}),
    );
    truth.effects.insert(
        "self_serve_activation_by_channel".into(),
        json!({"planted_rates": ACTIVATION_RATE.iter().map(|(c, r)| (c.to_string(), *r)).collect::<BTreeMap<_,_>>(),
               "realised": t.signups.iter().map(|(k, (a, s))| (k.clone(), json!([a, s, rate(*a, *s)]))).collect::<BTreeMap<_,_>>()}),
    );
    let m = &mut truth.messiness;
    m.insert("duplicate_contacts".into(), json!({"rate": DUP_CONTACT_RATE, "count": t.dup_contacts, "how": "a second contact id with the same email in other letter case"}));
    m.insert("industry_spelling_variants".into(), json!({"rate": INDUSTRY_VARIANT_RATE, "count": t.industry_variants, "how": "lower-case or trailing-space variants of account.industry"}));
    m.insert("opportunity_lead_source_variants".into(), json!({"rate": OPP_SOURCE_VARIANT_RATE, "count": t.opp_source_variants, "how": "'paid search' for 'Paid Search'"}));
    m.insert("lead_source_nulls".into(), json!({"rate": LEAD_SOURCE_NULL_RATE, "count": t.null_lead_sources}));
    m.insert(
        "opportunity_amount_nulls".into(),
        json!({"rate": AMOUNT_NULL_RATE, "count": t.amount_nulls, "how": "open deals only"}),
    );
    m.insert("negative_amounts".into(), json!({"count": t.negative_amounts}));
    m.insert(
        "eur_opportunities".into(),
        json!({"rate_in_emea": EUR_RATE_EMEA, "count": t.eur_opps, "how": "currency_iso_code EUR; the rest USD"}),
    );
    m.insert("deleted_opportunities".into(), json!({"rate": DELETED_OPP_RATE, "count": t.deleted_opps, "how": "is_deleted = true, last_modified_date two days after creation"}));
    m.insert("orphan_contact_roles".into(), json!({"rate": ORPHAN_ROLE_RATE, "count": t.orphan_roles, "how": "contact_id of a contact that was never synced"}));
    m.insert(
        "future_dated_tasks".into(),
        json!({"count": t.future_tasks, "how": "created_date typed ten years ahead"}),
    );
    m.insert(
        "duplicate_line_item_rows".into(),
        json!({"count": t.duplicate_line_items, "how": "the same row landed twice (same id, same _fivetran_synced)"}),
    );
    m.insert("late_logged_tasks".into(), json!({"rate": LATE_LOGGED_RATE, "count": t.late_logged_tasks, "how": "created_date 1-7 days after activity_date"}));
    truth
}
