//! Activity on a deal: weekly emails with replies (the champion's thin out before going dark, and
//! everyone's in a losing deal's last stage), calls with tracker mentions, each logged as a task.

use chrono::{Duration, NaiveDateTime};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::chunk::{Chunk, Ctx};
use super::deals::Deal;
use super::messiness::LATE_LOGGED_RATE;
use super::truth::{LEGAL_REVIEW_SHARE, LOSS_STALL_REPLY_FACTOR, Tally};
use super::world::*;
use crate::lake::rowbuf::{RowBuf, V};

impl Chunk<'_> {
    /// Weekly outreach and replies while open; a deal being lost stalls in its last stage, where
    /// replies thin out.
    pub(super) fn activity(&mut self, d: &Deal) {
        let Chunk { cx, rng, t, out, ids, accts } = self;
        let Ctx { end, chunk, .. } = *cx;
        let (o, ai, created, outcome, close_at) = (d.o, d.ai, d.created, d.outcome, d.close_at);
        let (champion_mode, dark_at, competitor_from, pressure, security) =
            (d.champion_mode, d.dark_at, d.competitor_from, d.pressure, d.security);
        let (oid, owner_id, chosen, role_names, changes) = (&d.oid, &d.owner_id, &d.chosen, &d.role_names, &d.changes);
        let stop = close_at.unwrap_or_else(|| end.and_hms_opt(20, 0, 0).expect("valid"));
        let stall_from = if outcome == Some(false) { changes.last().map(|c| c.0) } else { None };
        let legal_review = cx.opts.confounded && unit_hash(cx.opts.seed, chunk, o) < LEGAL_REVIEW_SHARE;
        let mut week = created;
        let mut wk = 0;
        while week < stop {
            for (k, ci) in chosen.iter().enumerate() {
                let contact = &accts[ai].contacts[*ci];
                if rng.random::<f64>() > if k == 0 { 0.8 } else { 0.45 } {
                    continue;
                }
                let sent = week + Duration::hours(rng.random_range(0..96));
                if sent >= stop {
                    continue;
                }
                let is_champion = role_names[k] == "Champion";
                let (p_reply, lag_days) = if is_champion {
                    match champion_mode {
                        1 => match dark_at {
                            Some(d) if sent >= d => (0.03, 9.0),
                            Some(d) if sent >= d - Duration::days(7) => (0.25, 5.0),
                            Some(d) if sent >= d - Duration::days(14) => (0.45, 3.0),
                            Some(d) if sent >= d - Duration::days(21) => (0.6, 2.0),
                            _ => (0.75, 1.0),
                        },
                        2 => (0.12, 4.0),
                        _ => (0.75, 1.0),
                    }
                } else {
                    (0.45, 2.0)
                };
                let stall_reply = if cx.opts.null_effects { 1.0 } else { LOSS_STALL_REPLY_FACTOR };
                let p_reply = if stall_from.is_some_and(|f| sent >= f) { p_reply * stall_reply } else { p_reply };
                push_task(
                    &mut out.tasks,
                    t,
                    rng,
                    ids.next("00T"),
                    oid,
                    &contact.id,
                    &accts[ai].id,
                    owner_id,
                    "Email",
                    "outbound",
                    sent,
                    format!("Follow-up: {}", accts[ai].name),
                );
                if rng.random::<f64>() < p_reply {
                    let reply = sent + Duration::minutes((lognormal(rng, lag_days, 0.4) * 1440.0) as i64);
                    if reply < stop && reply.date() <= end {
                        push_task(
                            &mut out.tasks,
                            t,
                            rng,
                            ids.next("00T"),
                            oid,
                            &contact.id,
                            &accts[ai].id,
                            owner_id,
                            "Email",
                            "inbound",
                            reply,
                            format!("Re: Follow-up: {}", accts[ai].name),
                        );
                    }
                }
            }
            if wk % 2 == 1 && rng.random::<f64>() < 0.7 {
                let call = week + Duration::hours(rng.random_range(0..96));
                if call < stop {
                    let call_id = ids.next("CAL");
                    let who = &accts[ai].contacts[chosen[0]];
                    push_task(
                        &mut out.tasks,
                        t,
                        rng,
                        call_id.clone(),
                        oid,
                        &who.id,
                        &accts[ai].id,
                        owner_id,
                        "Call",
                        "outbound",
                        call,
                        format!("Call with {}", who.name),
                    );
                    let mut mention = |tracker: &str, phrase: &str, rng: &mut ChaCha8Rng| {
                        out.trackers.push(vec![
                            format!("TRK{chunk:03}{:010}", out.trackers.len()).into(),
                            call_id.clone().into(),
                            oid.clone().into(),
                            (call + Duration::minutes(rng.random_range(1..45))).into(),
                            tracker.into(),
                            "customer".into(),
                            who.id.clone().into(),
                            phrase.into(),
                        ]);
                    };
                    if let Some(cf) = competitor_from
                        && call >= cf
                    {
                        let weeks_in = ((call - cf).num_days() / 7 + 1).min(4);
                        let comp = COMPETITORS[(o % 3) as usize];
                        for _ in 0..rng.random_range(1..=weeks_in) {
                            mention("competitor", comp, rng);
                        }
                    }
                    let stage_now = changes.iter().rev().find(|(ts, _, _)| *ts <= call).map(|c| c.1).unwrap_or(0);
                    if stage_now >= 3 && rng.random::<f64>() < 0.5 {
                        mention("pricing", if pressure { "discount" } else { "pricing" }, rng);
                    }
                    if security && stage_now >= 2 && rng.random::<f64>() < 0.6 {
                        mention("security", "SOC 2 report", rng);
                    }
                    // Which deals have legal review comes from a hash, not the random stream, so
                    // lakes without --confounded draw exactly the same numbers as before.
                    if legal_review && stage_now == 3 {
                        mention("legal", "MSA redlines", rng);
                    }
                }
            }
            week += Duration::days(7);
            wk += 1;
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn push_task(
    tasks: &mut RowBuf,
    t: &mut Tally,
    rng: &mut ChaCha8Rng,
    task_id: String,
    opp: &str,
    who: &str,
    account: &str,
    owner: &str,
    kind: &str,
    direction: &str,
    when: NaiveDateTime,
    subject: String,
) {
    let logged = if rng.random::<f64>() < LATE_LOGGED_RATE {
        t.late_logged_tasks += 1;
        when + Duration::days(rng.random_range(1..8))
    } else {
        when + Duration::minutes(rng.random_range(1..120))
    };
    let call_type: V =
        if kind == "Call" { (if direction == "inbound" { "Inbound" } else { "Outbound" }).into() } else { V::N };
    tasks.push(vec![
        task_id.into(),
        opp.into(),
        who.into(),
        account.into(),
        owner.into(),
        subject.into(),
        kind.into(),
        kind.into(),
        call_type,
        direction.into(),
        "Completed".into(),
        when.date().into(),
        logged.into(),
        (logged + Duration::hours(1)).into(),
    ]);
}

/// A number in [0, 1) fixed by (seed, chunk, deal), outside the random stream (splitmix64).
fn unit_hash(seed: u64, chunk: u64, o: u64) -> f64 {
    let mut z = seed ^ chunk.wrapping_mul(0xD6E8_FEB8_6659_FD93) ^ o.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}
