//! Accounts and their contacts (with planted duplicate contacts), and, once the deals have run
//! and won dates are known, the account rows and daily product usage of customers.

use chrono::{Datelike, Days, Duration};
use rand::Rng;

use super::chunk::{Acct, Chunk, Contact, Ctx};
use super::messiness::{DUP_CONTACT_RATE, INDUSTRY_VARIANT_RATE};
use super::world::*;
use crate::lake::rowbuf::V;

impl Chunk<'_> {
    /// The chunk's accounts, each with three to seven contacts.
    pub(super) fn accounts(&mut self, first_account: u64, last_account: u64) {
        let Chunk { cx, rng, t, out, ids, accts } = self;
        let Ctx { start, org, chunk, .. } = *cx;
        for a in first_account..last_account {
            let owner = rng.random_range(0..org.sellers.len());
            let region = org.sellers[owner].2;
            let country = pick(rng, REGIONS[region].1).to_string();
            let employees = lognormal(rng, 400.0, 1.4).round().max(5.0) as i64;
            let industry = pick(rng, &INDUSTRIES).to_string();
            let created = at(start - Days::new(rng.random_range(0..300)), rng);
            let aid = id("001", chunk, a - first_account);
            let name = company_name(a);
            let domain = name.to_lowercase().replace(' ', "");
            let mut contact_list = Vec::new();
            for _ in 0..rng.random_range(3..8) {
                let (f, l) = (pick(rng, &FIRST).to_string(), pick(rng, &LAST).to_string());
                let cid = ids.next("003");
                let email = format!("{}.{}{}@{domain}.example", f.to_lowercase(), l.to_lowercase(), contact_list.len());
                let ccreated = created + Duration::days(rng.random_range(0..60));
                out.contacts.push(vec![
                    cid.clone().into(),
                    aid.clone().into(),
                    f.clone().into(),
                    l.clone().into(),
                    format!("{f} {l}").into(),
                    email.clone().into(),
                    pick(rng, &TITLES).to_string().into(),
                    org.sellers[owner].0.clone().into(),
                    ccreated.into(),
                    cdc_at(ccreated).into(),
                    false.into(),
                ]);
                if rng.random::<f64>() < DUP_CONTACT_RATE {
                    let dup = ids.next("003");
                    let later = ccreated + Duration::days(rng.random_range(20..200));
                    out.contacts.push(vec![
                        dup.into(),
                        aid.clone().into(),
                        f.clone().into(),
                        l.clone().into(),
                        format!("{f} {l}").into(),
                        email.to_uppercase().into(),
                        V::N,
                        org.sellers[owner].0.clone().into(),
                        later.into(),
                        cdc_at(later).into(),
                        false.into(),
                    ]);
                    t.dup_contacts += 1;
                }
                contact_list.push(Contact { id: cid, name: format!("{f} {l}") });
            }
            accts.push(Acct {
                id: aid,
                name,

                country,
                employees,
                industry,
                owner,
                contacts: contact_list,
                created,
                won_at: None,
                seats: 0,
            });
        }
    }

    /// Account rows (type Customer once a deal was won) and daily usage of customers over the
    /// last `usage_days` days.
    pub(super) fn account_rows_and_usage(&mut self) {
        let Chunk { cx, rng, t, out, accts, .. } = self;
        let Ctx { opts, end, org, .. } = *cx;
        let usage_from = end - Days::new(u64::from(opts.usage_days) - 1);
        for a in accts.iter() {
            let mut industry = a.industry.clone();
            if rng.random::<f64>() < INDUSTRY_VARIANT_RATE {
                industry = if rng.random::<bool>() { industry.to_lowercase() } else { format!("{industry} ") };
                t.industry_variants += 1;
            }
            let ty = if a.won_at.is_some() { "Customer" } else { "Prospect" };
            out.accounts.push(vec![
                a.id.clone().into(),
                a.name.clone().into(),
                ty.into(),
                industry.into(),
                a.employees.into(),
                (a.employees as f64 * 150_000.0).into(),
                a.country.clone().into(),
                org.sellers[a.owner].0.clone().into(),
                a.created.into(),
                cdc_at(a.won_at.map(|d| d.and_hms_opt(12, 0, 0).expect("valid")).unwrap_or(a.created)).into(),
                false.into(),
            ]);
            if let Some(won) = a.won_at {
                let engaged = 0.35 + 0.5 * rng.random::<f64>();
                let declining = rng.random::<f64>() < 0.2;
                let mut d = won.max(usage_from);
                while d <= end {
                    let age = (d - usage_from).num_days() as f64 / f64::from(opts.usage_days.max(1));
                    let level = if declining { engaged * (1.0 - 0.7 * age) } else { engaged };
                    let weekday = d.weekday().num_days_from_monday() < 5;
                    let active = ((a.seats as f64)
                        * level
                        * if weekday { 1.0 } else { 0.2 }
                        * (0.8 + 0.4 * rng.random::<f64>()))
                    .round() as i64;
                    out.usage.push(vec![
                        a.id.clone().into(),
                        d.into(),
                        active.max(0).into(),
                        (active * rng.random_range(5..40)).into(),
                        a.seats.into(),
                    ]);
                    d = d + Days::new(1);
                }
            }
        }
    }
}
