//! Deals: who is on each opportunity, how it moves through the stages (with the planted effects:
//! slips after Demo, champions going dark, competitors, losing deals stalling), its history rows,
//! line item, contact roles and the meetings at stage entries.

use chrono::{Days, Duration, NaiveDate, NaiveDateTime};
use rand::Rng;

use super::chunk::{Chunk, Ctx};
use super::messiness::*;
use super::truth::*;
use super::world::*;
use crate::lake::rowbuf::V;

/// One opportunity as simulated: what it is, who is on it, and how it moved.
pub(super) struct Deal {
    pub o: u64,
    /// Index of its account in the chunk.
    pub ai: usize,
    pub owner_id: String,
    pub region: usize,
    pub oid: String,
    pub created: NaiveDateTime,
    pub employees: i64,
    pub size_mult: f64,
    pub amount: f64,
    pub deal_type: &'static str,
    pub lead_source: String,
    pub single: bool,
    /// Contacts on the deal (indices into the account's contacts) and their roles.
    pub chosen: Vec<usize>,
    pub role_names: Vec<&'static str>,
    /// 0 no champion, 1 goes dark, 2 always quiet, 3 engaged.
    pub champion_mode: i32,
    pub competitor: bool,
    pub security: bool,
    pub no_discovery_meeting: bool,
    /// Stage changes (time, stage index, slip), from creation.
    pub changes: Vec<(NaiveDateTime, usize, bool)>,
    pub dark_at: Option<NaiveDateTime>,
    pub competitor_from: Option<NaiveDateTime>,
    /// Some(won) once closed.
    pub outcome: Option<bool>,
    pub demo_at: Option<NaiveDateTime>,
    pub close_at: Option<NaiveDateTime>,
    pub slip_at: Option<NaiveDateTime>,
    /// Commercial pressure: a discount at Proposal and pricing talk on calls.
    pub pressure: bool,
}

/// Median days in each open stage (times the deal's size factor) and the chance to advance.
const STAGE_MEDIAN_DAYS: [f64; 5] = [9.0, 14.0, 12.0, 14.0, 10.0];
const STAGE_ADVANCE: [f64; 5] = [0.78, 0.72, 0.72, 0.75, 0.72];
/// Paths simulated per stage entry for the true win probability.
const ORACLE_PATHS: u32 = 200;

/// What decides a deal's stage advances, for the oracle.
struct Latents {
    size_mult: f64,
    single: bool,
    champion_mode: i32,
    competitor: bool,
    null: bool,
}

impl Latents {
    /// The chance of winning from the entry of `stage` at `at`: the stage loop of `stage_path` run
    /// `ORACLE_PATHS` times from there with the deal's own attributes (and its champion's dark
    /// date when already decided), on a stream of its own so the lake's draws are untouched.
    /// It is the best any model could know: the generator's own probability, not observable data.
    fn win_probability(&self, stage: usize, at: NaiveDateTime, known_dark: Option<NaiveDateTime>, seed: u64) -> f64 {
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let f = |planted: f64| if self.null { 1.0 } else { planted };
        let mut wins = 0u32;
        for _ in 0..ORACLE_PATHS {
            let (mut s, mut tcur, mut dark) = (stage, at, known_dark);
            loop {
                let dur = lognormal(&mut rng, STAGE_MEDIAN_DAYS[s] * self.size_mult, 0.55).max(1.0);
                let next_t = tcur + Duration::minutes((dur * 1440.0) as i64);
                if s == 1 && self.champion_mode == 1 && dark.is_none() {
                    dark = Some(
                        tcur + Duration::minutes((dur * 1440.0 * rng.random::<f64>()) as i64) + Duration::days(14),
                    );
                }
                let mut p = STAGE_ADVANCE[s];
                if dark.is_some_and(|d| d < next_t) {
                    p *= f(DARK_ADVANCE_FACTOR);
                }
                if self.competitor && s >= 1 {
                    p *= f(COMPETITOR_ADVANCE_FACTOR);
                }
                if self.single {
                    p *= f(SINGLE_ADVANCE_FACTOR);
                }
                if self.champion_mode == 3 {
                    p = (p * f(ENGAGED_CHAMPION_ADVANCE_FACTOR)).min(0.97);
                }
                if rng.random::<f64>() >= p {
                    break;
                }
                if s == 4 {
                    wins += 1;
                    break;
                }
                s += 1;
                tcur = next_t;
            }
        }
        f64::from(wins) / f64::from(ORACLE_PATHS)
    }
}

impl Chunk<'_> {
    /// One opportunity and everything recorded about it, in the order the random stream is read.
    pub(super) fn opportunity(&mut self, o: u64) {
        let mut d = self.deal(o);
        self.stage_path(&mut d);
        self.slip(&mut d);
        self.history(&mut d);
        self.line_item(&d);
        self.contact_roles(&d);
        self.activity(&d);
        self.meetings(&d);
        self.converted_lead(&d);
    }

    /// The deal's account, owner, size, type, source and stakeholders.
    fn deal(&mut self, o: u64) -> Deal {
        let Chunk { cx, rng, t, accts, .. } = self;
        let Ctx { start, span_days, org, chunk, .. } = *cx;
        let ai = rng.random_range(0..accts.len());
        let (owner_id, _, region, _) = org.sellers[accts[ai].owner].clone();
        let oid = id("006", chunk, o);
        let created_day = start + Days::new(rng.random_range(0..span_days as u64));
        let created = at(created_day, rng).max(accts[ai].created + Duration::days(1));
        let employees = accts[ai].employees;
        let (median_amount, size_mult) = if employees < 200 {
            (12_000.0, 1.0)
        } else if employees < 2000 {
            (45_000.0, 1.25)
        } else {
            (150_000.0, 1.6)
        };
        let amount = (lognormal(rng, median_amount, 0.5) / 100.0).round() * 100.0;
        let deal_type = if rng.random::<f64>() < 0.7 {
            "New Business"
        } else if rng.random::<f64>() < 0.67 {
            "Expansion"
        } else {
            "Renewal"
        };
        let mut lead_source = pick(rng, &LEAD_SOURCES).to_string();
        if lead_source == "Paid Search" && rng.random::<f64>() < OPP_SOURCE_VARIANT_RATE * 6.0 {
            lead_source = "paid search".into();
            t.opp_source_variants += 1;
        }
        let single = rng.random::<f64>() < SINGLE_THREADED_SHARE;
        let n_roles = if single { 1 } else { rng.random_range(2..=4.min(accts[ai].contacts.len())) };
        let mut chosen: Vec<usize> = (0..accts[ai].contacts.len()).collect();
        for i in 0..n_roles {
            let j = rng.random_range(i..chosen.len());
            chosen.swap(i, j);
        }
        chosen.truncate(n_roles);
        let has_champion = rng.random::<f64>() < 0.75;
        let mut role_names = Vec::new();
        for (k, _) in chosen.iter().enumerate() {
            let r = if k == 0 && has_champion {
                "Champion"
            } else if k <= 1 && rng.random::<f64>() < 0.6 {
                "Economic Buyer"
            } else if rng.random::<f64>() < 0.5 {
                "Technical Buyer"
            } else {
                "Influencer"
            };
            role_names.push(r);
        }
        let champion_mode = if !has_champion {
            0
        } else {
            let u = rng.random::<f64>();
            if u < CHAMPION_DARK_SHARE {
                1
            } else if u < CHAMPION_DARK_SHARE + CHAMPION_ALWAYS_QUIET_SHARE {
                2
            } else {
                3
            }
        }; // 0 none, 1 goes dark, 2 always quiet, 3 engaged
        let competitor = rng.random::<f64>() < COMPETITOR_SHARE;
        let security = rng.random::<f64>() < 0.15;
        let no_discovery_meeting = rng.random::<f64>() < 0.15;
        Deal {
            o,
            ai,
            owner_id,
            region,
            oid,
            created,
            employees,
            size_mult,
            amount,
            deal_type,
            lead_source,
            single,
            chosen,
            role_names,
            champion_mode,
            competitor,
            security,
            no_discovery_meeting,
            changes: Vec::new(),
            dark_at: None,
            competitor_from: None,
            outcome: None,
            demo_at: None,
            close_at: None,
            slip_at: None,
            pressure: false,
        }
    }

    /// Stage by stage until won, lost or the end of the window.
    fn stage_path(&mut self, d: &mut Deal) {
        let (rng, end, null) = (&mut self.rng, self.cx.end, self.cx.opts.null_effects);
        // Under --null-effects every factor is 1: the same draws, outcomes independent of them.
        let effect = |planted: f64| if null { 1.0 } else { planted };
        let (created, size_mult, single, champion_mode, competitor) =
            (d.created, d.size_mult, d.single, d.champion_mode, d.competitor);
        let (medians, base_adv) = (STAGE_MEDIAN_DAYS, STAGE_ADVANCE);
        let mut changes: Vec<(NaiveDateTime, usize, bool)> = vec![(created, 0, false)]; // (time, stage idx, slip)
        let mut tcur = created;
        let mut stage = 0usize;
        let mut dark_at: Option<NaiveDateTime> = None;
        let mut competitor_from: Option<NaiveDateTime> = None;
        let mut outcome: Option<bool> = None;
        let mut demo_at: Option<NaiveDateTime> = None;
        loop {
            let dur = lognormal(rng, medians[stage] * size_mult, 0.55).max(1.0);
            let next_t = tcur + Duration::minutes((dur * 1440.0) as i64);
            if stage == 1 && champion_mode == 1 && dark_at.is_none() {
                dark_at =
                    Some(tcur + Duration::minutes((dur * 1440.0 * rng.random::<f64>()) as i64) + Duration::days(14));
            }
            if stage == 1 && competitor && competitor_from.is_none() {
                competitor_from = Some(tcur + Duration::days(rng.random_range(0..10)));
            }
            let mut p: f64 = base_adv[stage];
            if dark_at.is_some_and(|d| d < next_t) {
                p *= effect(DARK_ADVANCE_FACTOR);
            }
            if competitor_from.is_some() {
                p *= effect(COMPETITOR_ADVANCE_FACTOR);
            }
            if single {
                p *= effect(SINGLE_ADVANCE_FACTOR);
            }
            if champion_mode == 3 {
                p = (p * effect(ENGAGED_CHAMPION_ADVANCE_FACTOR)).min(0.97);
            }
            // Decided now so a deal that will be lost here can stall first (LOSS_STALL_FACTOR).
            let advance = rng.random::<f64>() < p;
            let next_t = if advance {
                next_t
            } else {
                tcur + Duration::minutes((dur * effect(LOSS_STALL_FACTOR) * 1440.0) as i64)
            };
            if next_t.date() > end {
                break;
            }
            tcur = next_t;
            if advance {
                if stage == 4 {
                    outcome = Some(true);
                    break;
                }
                stage += 1;
                if stage == 2 {
                    demo_at = Some(tcur);
                }
                changes.push((tcur, stage, false));
            } else {
                outcome = Some(false);
                break;
            }
        }
        let mut close_at = outcome.map(|_| tcur);
        if let Some(sc) = self.cx.opts.scenario.as_ref().filter(|sc| {
            created.date() >= sc.from
                && crate::stats::experiment::is_treated(&sc.assignment_key, &d.owner_id, sc.treated_share)
        }) {
            // The scenario's effect, on the deal's own stream: with probability `effect` the deal
            // advances at every stage (a won deal stays as it was).
            use rand::SeedableRng;
            let natural_won = (outcome == Some(true)).then(|| tcur.date());
            let forced = crate::stats::experiment::assignment_uniform(&format!("{}#effect", sc.assignment_key), &d.oid)
                < sc.effect;
            if forced && outcome != Some(true) {
                let seed =
                    (crate::stats::experiment::assignment_uniform(&format!("{}#stream", sc.assignment_key), &d.oid)
                        * (1u64 << 53) as f64) as u64;
                let mut own = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
                let (mut t, mut st) = (created, 0usize);
                changes = vec![(created, 0, false)];
                outcome = None;
                demo_at = None;
                loop {
                    let dur = lognormal(&mut own, medians[st] * size_mult, 0.55).max(1.0);
                    let next_t = t + Duration::minutes((dur * 1440.0) as i64);
                    if next_t.date() > end {
                        break;
                    }
                    t = next_t;
                    if st == 4 {
                        outcome = Some(true);
                        break;
                    }
                    st += 1;
                    if st == 2 {
                        demo_at = Some(t);
                    }
                    changes.push((t, st, false));
                }
                close_at = outcome.map(|_| t);
            }
            let won_day = (outcome == Some(true)).then(|| close_at.map(|c| c.date())).flatten();
            let day = |d: Option<NaiveDate>| d.map(|d| d.to_string()).unwrap_or_default();
            self.t.scenario_deals.push(format!(
                "{},{},{},{},{}",
                d.oid,
                d.owner_id,
                created.date(),
                day(natural_won),
                day(won_day)
            ));
        }
        // The deal's true chance of winning at each open-stage entry, for truth_win_probability.csv.
        let oracle_latents = Latents { size_mult, single, champion_mode, competitor, null };
        for &(at, stage, _) in &changes {
            let known_dark = if stage >= 2 { dark_at } else { None };
            let seed = self.cx.opts.seed ^ (self.cx.chunk << 40) ^ (d.o << 4) ^ stage as u64;
            let p = oracle_latents.win_probability(stage, at, known_dark, seed);
            self.t.win_probabilities.push(format!(
                "{},{},{},{p:.4}",
                d.oid,
                STAGES[stage].0,
                at.format("%Y-%m-%d %H:%M:%S")
            ));
        }
        d.changes = changes;
        d.dark_at = dark_at;
        d.competitor_from = competitor_from;
        d.outcome = outcome;
        d.demo_at = demo_at;
        d.close_at = close_at;
    }

    /// Slip after Demo: a close-date push while still open (the planted single-threading effect),
    /// and the tallies of realised effects.
    fn slip(&mut self, d: &mut Deal) {
        let (rng, t, end) = (&mut self.rng, &mut self.t, self.cx.end);
        let (demo_at, single, close_at, outcome, champion_mode, dark_at) =
            (d.demo_at, d.single, d.close_at, d.outcome, d.champion_mode, d.dark_at);
        let mut slip_at = None;
        if let Some(d) = demo_at {
            let p = match (self.cx.opts.null_effects, single) {
                (true, _) => SLIP_AFTER_DEMO_NULL,
                (false, true) => SLIP_AFTER_DEMO_SINGLE,
                (false, false) => SLIP_AFTER_DEMO_MULTI,
            };
            let limit = close_at.unwrap_or_else(|| end.and_hms_opt(23, 0, 0).expect("valid"));
            let when = d + Duration::hours(rng.random_range(24..24 * 20));
            let slipped = rng.random::<f64>() < p;
            if slipped && when < limit {
                slip_at = Some(when);
            }
            // Count only deals whose slip window (Demo + 20 days) had passed by the end, so the
            // realised figures are comparable to what a job can see.
            if (limit - d).num_days() >= 20 {
                if single {
                    t.reached_demo_single += 1;
                    t.slipped_single += u64::from(slip_at.is_some());
                } else {
                    t.reached_demo_multi += 1;
                    t.slipped_multi += u64::from(slip_at.is_some());
                }
            }
        }
        if let Some(won) = outcome {
            if champion_mode == 1 && dark_at.is_some_and(|d| Some(d) < close_at) {
                t.closed_dark += 1;
                t.won_dark += u64::from(won);
            } else if champion_mode == 3 {
                t.closed_champion_engaged += 1;
                t.won_champion_engaged += u64::from(won);
            }
        }
        d.slip_at = slip_at;
    }

    /// Opportunity history rows in time order, then the opportunity row (its latest state).
    fn history(&mut self, d: &mut Deal) {
        let Chunk { cx, rng, t, out, ids, accts } = self;
        let (o, ai, region, created, size_mult) = (d.o, d.ai, d.region, d.created, d.size_mult);
        let (outcome, close_at, slip_at, deal_type) = (d.outcome, d.close_at, d.slip_at, d.deal_type);
        let (oid, owner_id, lead_source, changes) = (&d.oid, &d.owner_id, &d.lead_source, &d.changes);
        let mut amount = d.amount;
        let mut close_date = (created + Duration::days((75.0 * size_mult) as i64 + rng.random_range(0..30))).date();
        let mut rows: Vec<(NaiveDateTime, &str, f64, NaiveDate, f64, &str)> = Vec::new();
        let mut events_t: Vec<(NaiveDateTime, usize)> = changes.iter().map(|(t, s, _)| (*t, *s)).collect();
        if let Some(s) = slip_at {
            events_t.push((s, usize::MAX));
        }
        let pressure = rng.random::<f64>() < 0.12;
        events_t.sort();
        let mut cur_stage = 0usize;
        for (when, s) in events_t {
            if s == usize::MAX {
                close_date = close_date.max(when.date()) + Days::new(rng.random_range(30..61));
            } else {
                cur_stage = s;
                if pressure && s == 3 {
                    amount = (amount * 0.8 / 100.0).round() * 100.0;
                }
            }
            let (name, _, prob, fc, _, _) = STAGES[cur_stage];
            rows.push((when, name, amount, close_date, prob, fc));
        }
        if let (Some(won), Some(c)) = (outcome, close_at) {
            let (name, _, prob, fc, _, _) = STAGES[if won { 5 } else { 6 }];
            close_date = c.date();
            rows.push((c, name, amount, close_date, prob, fc));
        }
        let mut last_amount: Option<f64> = Some(amount);
        let open = outcome.is_none();
        if open && rng.random::<f64>() < AMOUNT_NULL_RATE {
            last_amount = None;
            t.amount_nulls += 1;
        }
        if o == 7 || rng.random::<f64>() < 0.0003 {
            last_amount = Some(-amount);
            t.negative_amounts += 1;
        }
        let currency = if region == 2 && rng.random::<f64>() < EUR_RATE_EMEA {
            t.eur_opps += 1;
            "EUR"
        } else {
            "USD"
        };
        let n_rows = rows.len();
        for (k, (when, name, amt, cd, prob, fc)) in rows.iter().enumerate() {
            // The latest row carries the deal's final amount (null or negative where planted).
            let amt_v: V = if k == n_rows - 1 { last_amount.into() } else { (*amt).into() };
            out.hist.push(vec![
                ids.next("008").into(),
                oid.clone().into(),
                (*when).into(),
                owner_id.clone().into(),
                (*name).into(),
                amt_v,
                (*cd).into(),
                (*prob).into(),
                (*fc).into(),
                cdc_at(*when).into(),
            ]);
        }
        let (last_t, last_stage, _, last_cd, last_prob, last_fc) = *rows.last().expect("created row");
        let (_, _, _, _, is_closed, is_won) = STAGES.iter().find(|s| s.0 == last_stage).copied().expect("known stage");
        out.opps.push(vec![
            oid.clone().into(),
            accts[ai].id.clone().into(),
            owner_id.clone().into(),
            format!("{} - {}", accts[ai].name, deal_type).into(),
            deal_type.into(),
            last_stage.into(),
            last_amount.into(),
            currency.into(),
            last_cd.into(),
            last_prob.into(),
            last_fc.into(),
            is_won.into(),
            is_closed.into(),
            lead_source.clone().into(),
            cx.campaign_for(created.date()).into(),
            created.into(),
            cdc_at(last_t).into(),
            false.into(),
            last_t.into(),
        ]);
        if outcome == Some(true) {
            let a = &mut accts[ai];
            let d = close_at.expect("closed").date();
            a.won_at = Some(a.won_at.map_or(d, |w| w.min(d)));
            a.seats += (amount / 600.0).round().max(3.0) as i64;
        }
        d.amount = amount;
        d.pressure = pressure;
    }

    /// Line item; a few rows landed twice.
    fn line_item(&mut self, d: &Deal) {
        let Chunk { t, out, ids, .. } = self;
        let (o, amount, created, oid) = (d.o, d.amount, d.created, &d.oid);
        let list = (amount * 1.1 / 100.0).round() * 100.0;
        let item_row = vec![
            ids.next("00k").into(),
            oid.clone().into(),
            format!("01t{:015}", o % 3).into(),
            ["Platform", "Analytics Add-on", "Premium Support"][(o % 3) as usize].into(),
            1.0.into(),
            list.into(),
            amount.into(),
            amount.into(),
            created.into(),
            cdc_at(created).into(),
        ];
        if o % 997 == 5 {
            out.items.push(item_row.clone());
            t.duplicate_line_items += 1;
        }
        out.items.push(item_row);
    }

    /// Contact roles (one orphan now and then).
    fn contact_roles(&mut self, d: &Deal) {
        let Chunk { rng, t, out, ids, accts, .. } = self;
        let (ai, created, oid, chosen, role_names) = (d.ai, d.created, &d.oid, &d.chosen, &d.role_names);
        for (k, ci) in chosen.iter().enumerate() {
            let contact_id = if rng.random::<f64>() < ORPHAN_ROLE_RATE {
                t.orphan_roles += 1;
                format!("003MISSING{:08}", rng.random_range(0..100_000_000u64))
            } else {
                accts[ai].contacts[*ci].id.clone()
            };
            let added = created + Duration::hours(rng.random_range(1..72));
            out.roles.push(vec![
                ids.next("00K").into(),
                oid.clone().into(),
                contact_id.into(),
                role_names[k].into(),
                (k == 0).into(),
                added.into(),
                cdc_at(added).into(),
            ]);
        }
    }

    /// Meetings at stage entries (Discovery, Demo, sometimes an executive briefing).
    fn meetings(&mut self, d: &Deal) {
        let Chunk { cx, rng, out, ids, accts, .. } = self;
        let end = cx.end;
        let (ai, oid, owner_id, chosen, changes) = (d.ai, &d.oid, &d.owner_id, &d.chosen, &d.changes);
        let no_discovery_meeting = d.no_discovery_meeting;
        for (when, s, _) in changes.iter() {
            let ty = match s {
                1 if !no_discovery_meeting => "Discovery",
                2 => "Demo",
                4 if rng.random::<f64>() < 0.4 => "Executive Briefing",
                _ => continue,
            };
            let meet = *when + Duration::hours(rng.random_range(1..48));
            if meet.date() > end {
                continue;
            }
            out.events.push(vec![
                ids.next("00U").into(),
                oid.clone().into(),
                accts[ai].contacts[chosen[0]].id.clone().into(),
                accts[ai].id.clone().into(),
                owner_id.clone().into(),
                format!("{ty}: {}", accts[ai].name).into(),
                ty.into(),
                meet.into(),
                45i64.into(),
                (*when).into(),
                cdc_at(*when).into(),
            ]);
        }
    }
}
