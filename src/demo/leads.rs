//! Leads: the converted lead behind half of the inbound-ish deals (with its status history), and
//! two unconverted leads per opportunity that stall or are disqualified, some in campaigns.

use chrono::{Days, Duration, NaiveDateTime};
use rand::Rng;

use super::chunk::{Chunk, Ctx};
use super::deals::Deal;
use super::messiness::LEAD_SOURCE_NULL_RATE;
use super::world::*;
use crate::lake::rowbuf::{RowBuf, V};

impl Chunk<'_> {
    /// Half of the inbound-ish deals came through a lead that converted.
    pub(super) fn converted_lead(&mut self, d: &Deal) {
        let Chunk { rng, out, ids, accts, .. } = self;
        let (ai, created, employees) = (d.ai, d.created, d.employees);
        let (lead_source, owner_id, oid, chosen) = (&d.lead_source, &d.owner_id, &d.oid, &d.chosen);
        if lead_source != "Outbound" && rng.random::<f64>() < 0.5 {
            let lid = ids.next("00Q");
            let lcreated = created - Duration::days(rng.random_range(3..30));
            let mql = lcreated + Duration::days(rng.random_range(1..3));
            let sql = mql + Duration::days(1).max(Duration::hours(rng.random_range(2..48)));
            let c = &accts[ai].contacts[chosen[0]];
            out.leads.push(vec![
                lid.clone().into(),
                c.name.clone().into(),
                accts[ai].name.clone().into(),
                V::N,
                "Converted".into(),
                lead_source.clone().into(),
                accts[ai].industry.clone().into(),
                accts[ai].country.clone().into(),
                employees.into(),
                owner_id.clone().into(),
                true.into(),
                created.date().into(),
                accts[ai].id.clone().into(),
                c.id.clone().into(),
                oid.clone().into(),
                lcreated.into(),
                cdc_at(created).into(),
            ]);
            for (when, old, new) in [(mql, "Open", "MQL"), (sql, "MQL", "SQL"), (created, "SQL", "Converted")] {
                status_change(&mut out.lead_hist, ids.next("017"), &lid, old, new, when);
            }
        }
    }

    /// Unconverted leads: two per opportunity, most stall or are disqualified.
    pub(super) fn unconverted_leads(&mut self, n_opps: u64) {
        let Chunk { cx, rng, t, out, ids, .. } = self;
        let Ctx { start, end, span_days, org, .. } = *cx;
        for _ in 0..(2 * n_opps) {
            let lid = ids.next("00Q");
            let lcreated = at(start + Days::new(rng.random_range(0..span_days as u64)), rng);
            let src: V = if rng.random::<f64>() < LEAD_SOURCE_NULL_RATE {
                t.null_lead_sources += 1;
                V::N
            } else {
                pick(rng, &LEAD_SOURCES).to_string().into()
            };
            let countries = REGIONS[rng.random_range(0..REGIONS.len())].1;
            let mut status = "Open";
            let mut when = lcreated;
            let path: &[&str] = match rng.random_range(0..10) {
                0..=3 => &["Working", "Disqualified"],
                4..=6 => &["Working", "MQL", "Disqualified"],
                7 => &["Working", "MQL", "SQL", "Disqualified"],
                _ => &["Working"],
            };
            let mut changes = Vec::new();
            for s in path {
                let nw = when + Duration::days(rng.random_range(1..20));
                if nw.date() > end {
                    break;
                }
                changes.push((nw, status, *s));
                status = s;
                when = nw;
            }
            let f = pick(rng, &FIRST);
            let l = pick(rng, &LAST);
            out.leads.push(vec![
                lid.clone().into(),
                format!("{f} {l}").into(),
                company_name(rng.random_range(0..1_000_000)).into(),
                format!("{}.{}@lead{}.example", f.to_lowercase(), l.to_lowercase(), lid.to_lowercase()).into(),
                status.into(),
                src,
                pick(rng, &INDUSTRIES).to_string().into(),
                pick(rng, countries).to_string().into(),
                (lognormal(rng, 200.0, 1.3).round().max(2.0) as i64).into(),
                org.managers_by_region[0][0].clone().into(),
                false.into(),
                V::N,
                V::N,
                V::N,
                V::N,
                lcreated.into(),
                cdc_at(when).into(),
            ]);
            for (nw, old, new) in changes {
                status_change(&mut out.lead_hist, ids.next("017"), &lid, old, new, nw);
            }
            if rng.random::<f64>() < 0.4 {
                let responded = rng.random::<f64>() < 0.3;
                out.members.push(vec![
                    ids.next("00v").into(),
                    cx.campaign_for(lcreated.date()).into(),
                    lid.into(),
                    (if responded { "Responded" } else { "Sent" }).into(),
                    responded.into(),
                    lcreated.into(),
                    cdc_at(lcreated).into(),
                ]);
            }
        }
    }
}

/// One `lead_history` row: the lead's status changed from `old` to `new` at `when`.
fn status_change(lead_hist: &mut RowBuf, id: String, lead: &str, old: &str, new: &str, when: NaiveDateTime) {
    lead_hist.push(vec![
        id.into(),
        lead.into(),
        "Status".into(),
        old.into(),
        new.into(),
        when.into(),
        cdc_at(when).into(),
    ]);
}
