//! Planted messiness: the rates at which the demo lake is dirty the way real lakes are, and the
//! rows that are nothing but mess (deals created by mistake and deleted, tasks typed ten years ahead).

use chrono::{Days, Duration};
use rand::Rng;

use super::chunk::{Chunk, Ctx};
use super::world::*;
use crate::lake::rowbuf::V;

pub(super) const DUP_CONTACT_RATE: f64 = 0.02;
pub(super) const INDUSTRY_VARIANT_RATE: f64 = 0.03;
pub(super) const LEAD_SOURCE_NULL_RATE: f64 = 0.03;
pub(super) const OPP_SOURCE_VARIANT_RATE: f64 = 0.01;
pub(super) const AMOUNT_NULL_RATE: f64 = 0.01;
pub(super) const EUR_RATE_EMEA: f64 = 0.05;
pub(super) const DELETED_OPP_RATE: f64 = 0.005;
pub(super) const ORPHAN_ROLE_RATE: f64 = 0.003;
pub(super) const LATE_LOGGED_RATE: f64 = 0.05;

impl Chunk<'_> {
    /// Deals created by mistake and deleted two days later (Salesforce deletes their children too).
    pub(super) fn deleted_deals(&mut self, n_opps: u64) {
        let Chunk { cx, rng, t, out, accts, .. } = self;
        let Ctx { start, span_days, org, chunk, .. } = *cx;
        let n_deleted = ((n_opps as f64) * DELETED_OPP_RATE).round().max(1.0) as u64;
        for k in 0..n_deleted {
            let a = &accts[rng.random_range(0..accts.len())];
            let created = at(start + Days::new(rng.random_range(0..span_days as u64 - 3)), rng);
            let removed = created + Duration::days(2);
            out.opps.push(vec![
                id("006", chunk, n_opps + k).into(),
                a.id.clone().into(),
                org.sellers[a.owner].0.clone().into(),
                format!("{} - duplicate", a.name).into(),
                "New Business".into(),
                "Prospecting".into(),
                1000.0.into(),
                "USD".into(),
                (created.date() + Days::new(90)).into(),
                10.0.into(),
                "Pipeline".into(),
                false.into(),
                false.into(),
                "Outbound".into(),
                V::N,
                created.into(),
                cdc_at(removed).into(),
                true.into(),
                removed.into(),
            ]);
            t.deleted_opps += 1;
        }
    }

    /// A few tasks typed ten years ahead (chunk 0 only).
    pub(super) fn future_tasks(&mut self) {
        let Chunk { cx, t, out, ids, accts, .. } = self;
        let Ctx { end, org, chunk, .. } = *cx;
        if chunk == 0 {
            for k in 0..3 {
                let when = (end + Days::new(3650 + k)).and_hms_opt(10, 0, 0).expect("valid");
                out.tasks.push(vec![
                    ids.next("00T").into(),
                    V::N,
                    V::N,
                    accts[0].id.clone().into(),
                    org.sellers[0].0.clone().into(),
                    "Typo in date".into(),
                    "Other".into(),
                    "Task".into(),
                    V::N,
                    V::N,
                    "Completed".into(),
                    when.date().into(),
                    when.into(),
                    cdc_at(when).into(),
                ]);
                t.future_tasks += 1;
            }
        }
    }
}
