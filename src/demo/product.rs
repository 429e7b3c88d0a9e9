//! Self-serve product telemetry: one workspace for every two opportunities, signing up through a
//! channel (activation rates differ by channel, as planted), then activating, paying, churning.

use chrono::{Days, Duration, NaiveDateTime};
use rand::Rng;

use super::chunk::{Chunk, Ctx};
use super::truth::ACTIVATION_RATE;
use super::world::*;

impl Chunk<'_> {
    pub(super) fn workspaces(&mut self, n_opps: u64) {
        let Chunk { cx, rng, t, out, .. } = self;
        let Ctx { start, end, span_days, chunk, .. } = *cx;
        for w in 0..(n_opps / 2) {
            let ws = format!("ws{chunk:03}{w:08}");
            let signup = at(start + Days::new(rng.random_range(0..span_days as u64)), rng);
            let (channel, act_rate) = ACTIVATION_RATE[rng.random_range(0..ACTIVATION_RATE.len())];
            let region_countries = REGIONS[rng.random_range(0..4)].1;
            let country = pick(rng, region_countries).to_string();
            let mut ev = |name: &str, when: NaiveDateTime, plan: &str, mrr: Option<f64>| {
                out.product.push(vec![
                    format!("{ws}-{name}").into(),
                    ws.clone().into(),
                    name.into(),
                    when.into(),
                    plan.into(),
                    channel.into(),
                    country.clone().into(),
                    mrr.into(),
                ]);
            };
            ev("signup", signup, "free", None);
            // Count activation only where the 14-day window closed before the end, so rates compare.
            let window_closed = (signup + Duration::days(14)).date() <= end;
            let activated = rng.random::<f64>() < act_rate;
            let act_t = signup + Duration::hours(rng.random_range(2..24 * 14));
            if window_closed {
                let e = t.signups.entry(channel.to_string()).or_default();
                e.0 += u64::from(activated);
                e.1 += 1;
            }
            if !activated || act_t.date() > end {
                continue;
            }
            ev("activation", act_t, "free", None);
            if rng.random::<f64>() >= 0.3 {
                continue;
            }
            let paid_t = act_t + Duration::days(rng.random_range(3..60));
            if paid_t.date() > end {
                continue;
            }
            let mrr = [49.0, 99.0, 299.0][rng.random_range(0..3)];
            ev("paid", paid_t, "team", Some(mrr));
            let ret_t = paid_t + Duration::days(90);
            if ret_t.date() > end {
                continue;
            }
            if rng.random::<f64>() < 0.75 {
                ev("retained", ret_t, "team", Some(mrr));
                if rng.random::<f64>() < 0.2 && (ret_t + Duration::days(30)).date() <= end {
                    ev("expanded", ret_t + Duration::days(30), "business", Some(mrr * 3.0));
                }
            } else {
                ev("churned", ret_t, "free", Some(0.0));
            }
        }
    }
}
