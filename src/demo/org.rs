//! The sales organisation of the demo lake: the CRO, a VP per region, managers and sellers in the
//! role tree, their quarterly quotas, the stage picklist and a campaign a month.

use chrono::{Datelike, Days, NaiveDate, NaiveDateTime};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::truth::Tally;
use super::world::*;
use super::{Files, GenerateOptions};
use crate::error::Result;
use crate::lake::rowbuf::{RowBuf, V};

pub(super) struct Org {
    /// (user id, name, region index, manager id) of sellers.
    pub sellers: Vec<(String, String, usize, String)>,
    pub managers_by_region: Vec<Vec<String>>,
}

pub(super) fn gen_org(opts: &GenerateOptions, start: NaiveDate, n_sellers: u64) -> Result<(Org, Files, Tally)> {
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let mut tally = Tally::default();
    let synced = (opts.end - Days::new(400)).and_hms_opt(2, 0, 0).expect("valid");
    let created = (start - Days::new(400)).and_hms_opt(9, 0, 0).expect("valid");
    let mut roles = RowBuf::new("user_role", &["id", "name", "developer_name", "parent_role_id", "_fivetran_synced"]);
    let mut users = RowBuf::new(
        "user",
        &[
            "id",
            "name",
            "email",
            "title",
            "manager_id",
            "user_role_id",
            "is_active",
            "created_date",
            "_fivetran_synced",
        ],
    );
    let mut stages = stage_table(synced);

    let mut user_n = 0u64;
    let mut role_n = 0u64;
    let mut next_user = |rng: &mut ChaCha8Rng| -> (String, String) {
        user_n += 1;
        let name = format!("{} {}", pick(rng, &FIRST), pick(rng, &LAST));
        (id("005", 0, user_n), name)
    };
    let cro_role = id("00E", 0, 0);
    roles.push(vec![cro_role.clone().into(), "CRO".into(), "CRO".into(), V::N, synced.into()]);
    let (cro, cro_name) = next_user(&mut rng);
    let email = |name: &str| format!("{}@example-seller.com", name.to_lowercase().replace(' ', "."));
    users.push(vec![
        cro.clone().into(),
        cro_name.clone().into(),
        email(&cro_name).into(),
        "Chief Revenue Officer".into(),
        V::N,
        cro_role.clone().into(),
        true.into(),
        created.into(),
        synced.into(),
    ]);
    let n_managers = n_sellers.div_ceil(7).max(4);
    let mut managers_by_region = vec![Vec::new(); REGIONS.len()];
    let mut vp_by_region = Vec::new();
    for (region, _) in REGIONS.iter() {
        role_n += 1;
        let role = id("00E", 0, role_n);
        roles.push(vec![
            role.clone().into(),
            format!("VP {region}").into(),
            format!("VP_{}", region.replace(' ', "_")).into(),
            cro_role.clone().into(),
            synced.into(),
        ]);
        let (vp, vp_name) = next_user(&mut rng);
        users.push(vec![
            vp.clone().into(),
            vp_name.clone().into(),
            email(&vp_name).into(),
            format!("VP Sales {region}").into(),
            cro.clone().into(),
            role.clone().into(),
            true.into(),
            created.into(),
            synced.into(),
        ]);
        vp_by_region.push((vp, role));
    }
    let mut team_roles = Vec::new();
    for m in 0..n_managers {
        let r = (m as usize) % REGIONS.len();
        role_n += 1;
        let role = id("00E", 0, role_n);
        let team = format!("{} Team {}", REGIONS[r].0, m / REGIONS.len() as u64 + 1);
        roles.push(vec![
            role.clone().into(),
            team.clone().into(),
            team.replace(' ', "_").into(),
            vp_by_region[r].1.clone().into(),
            synced.into(),
        ]);
        let (mid, mname) = next_user(&mut rng);
        users.push(vec![
            mid.clone().into(),
            mname.clone().into(),
            email(&mname).into(),
            "Sales Manager".into(),
            vp_by_region[r].0.clone().into(),
            role.clone().into(),
            true.into(),
            created.into(),
            synced.into(),
        ]);
        managers_by_region[r].push(mid.clone());
        team_roles.push((mid, role, r));
    }
    let mut sellers = Vec::new();
    let mut quota =
        RowBuf::new("quota", &["owner_id", "period_start", "period_end", "amount", "currency", "created_date"]);
    for s in 0..n_sellers {
        let (mid, role, r) = &team_roles[(s % n_managers) as usize];
        let (sid, sname) = next_user(&mut rng);
        let hired = start - Days::new(rng.random_range(30..500));
        users.push(vec![
            sid.clone().into(),
            sname.clone().into(),
            email(&sname).into(),
            "Account Executive".into(),
            mid.clone().into(),
            role.clone().into(),
            true.into(),
            hired.and_hms_opt(9, 0, 0).expect("valid").into(),
            synced.into(),
        ]);
        // Quarterly quotas across the window, set two weeks before each quarter.
        seller_quotas(&mut quota, &sid, *r, start, opts.end, &mut rng);

        sellers.push((sid, sname, *r, mid.clone()));
    }
    // Campaigns: one a month.
    let mut campaigns = campaign_table(opts, start, synced);

    let mut files = Vec::new();
    for (buf, source) in [
        (&mut roles, "salesforce"),
        (&mut users, "salesforce"),
        (&mut stages, "salesforce"),
        (&mut campaigns, "salesforce"),
        (&mut quota, "finance"),
    ] {
        *tally.rows.entry(buf.table.name.clone()).or_default() += buf.len() as u64;
        files.push((format!("raw/{source}/{}/part-org.parquet", buf.table.name), buf.to_parquet()?));
    }
    Ok((Org { sellers, managers_by_region }, files, tally))
}

/// The stage picklist (`opportunity_stage`), from the stage ladder.
fn stage_table(synced: NaiveDateTime) -> RowBuf {
    let mut stages = RowBuf::new(
        "opportunity_stage",
        &[
            "id",
            "master_label",
            "sort_order",
            "default_probability",
            "is_closed",
            "is_won",
            "is_active",
            "forecast_category_name",
            "_fivetran_synced",
        ],
    );
    for (i, (name, order, prob, fc, closed, won)) in STAGES.iter().enumerate() {
        stages.push(vec![
            id("01J", 0, i as u64).into(),
            (*name).into(),
            (*order).into(),
            (*prob).into(),
            (*closed).into(),
            (*won).into(),
            true.into(),
            (*fc).into(),
            synced.into(),
        ]);
    }
    stages
}

/// Quarterly quotas of one seller across the window, each set two weeks before its quarter.
fn seller_quotas(quota: &mut RowBuf, sid: &str, r: usize, start: NaiveDate, end: NaiveDate, rng: &mut ChaCha8Rng) {
    let mut q = NaiveDate::from_ymd_opt(start.year(), ((start.month0() / 3) * 3) + 1, 1).expect("valid");
    let base = [450_000.0, 420_000.0, 380_000.0, 300_000.0][r];
    while q <= end {
        let next_q = q.checked_add_months(chrono::Months::new(3)).expect("valid");
        quota.push(vec![
            sid.into(),
            q.into(),
            (next_q - Days::new(1)).into(),
            (base * (0.85 + 0.3 * rng.random::<f64>())).round().into(),
            "USD".into(),
            (q - Days::new(14)).and_hms_opt(9, 0, 0).expect("valid").into(),
        ]);
        q = next_q;
    }
}

/// One campaign a month across the window.
fn campaign_table(opts: &GenerateOptions, start: NaiveDate, synced: NaiveDateTime) -> RowBuf {
    let mut campaigns = RowBuf::new(
        "campaign",
        &["id", "name", "type", "status", "start_date", "end_date", "created_date", "_fivetran_synced"],
    );
    let mut month = NaiveDate::from_ymd_opt(start.year(), start.month(), 1).expect("valid");
    let mut cn = 0;
    while month <= opts.end {
        let ty = ["Webinar", "Paid Search", "Event", "Email"][cn % 4];
        campaigns.push(vec![
            id("701", 0, cn as u64).into(),
            format!("{} {}", ty, month.format("%Y-%m")).into(),
            ty.into(),
            (if month.checked_add_months(chrono::Months::new(1)).expect("valid") < opts.end {
                "Completed"
            } else {
                "In Progress"
            })
            .into(),
            month.into(),
            (month.checked_add_months(chrono::Months::new(1)).expect("valid") - Days::new(1)).into(),
            (month - Days::new(10)).and_hms_opt(9, 0, 0).expect("valid").into(),
            synced.into(),
        ]);
        cn += 1;
        month = month.checked_add_months(chrono::Months::new(1)).expect("valid");
    }
    campaigns
}
