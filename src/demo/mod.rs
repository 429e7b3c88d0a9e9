//! `generate`: a deterministic demo lake in the contract's layout, with planted effects and planted
//! messiness written to `truth.json` beside the data so tests can check that jobs find them.

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::{Datelike, Days, Duration, NaiveDate, NaiveDateTime};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::error::Result;
use crate::lake::Lake;
use crate::rowbuf::{RowBuf, V};

#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub opportunities: u64,
    pub seed: u64,
    /// Last day of data; history runs back `days` from here.
    pub end: NaiveDate,
    pub days: u32,
    /// Days of daily usage kept per customer (the last N days before `end`).
    pub usage_days: u32,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            opportunities: 2_000,
            seed: 42,
            end: NaiveDate::from_ymd_opt(2026, 9, 30).expect("valid date"),
            days: 730,
            usage_days: 90,
        }
    }
}

// Planted effects. Tests and the learning loop look for these; truth.json records them.
const SLIP_AFTER_DEMO_SINGLE: f64 = 0.48;
const SLIP_AFTER_DEMO_MULTI: f64 = 0.20;
const CHAMPION_DARK_SHARE: f64 = 0.25;
/// A deal heading for a loss stalls: its last stage lasts this much longer, and in it every
/// stakeholder replies this much less often (the pattern the deal-risk flags look for).
const LOSS_STALL_FACTOR: f64 = 1.8;
const LOSS_STALL_REPLY_FACTOR: f64 = 0.4;
const CHAMPION_ALWAYS_QUIET_SHARE: f64 = 0.10;
const COMPETITOR_SHARE: f64 = 0.25;
const SINGLE_THREADED_SHARE: f64 = 0.35;
const ACTIVATION_RATE: [(&str, f64); 5] =
    [("organic", 0.60), ("paid_search", 0.40), ("referral", 0.65), ("social", 0.50), ("partner", 0.55)];
// Planted messiness (rates of their tables).
const DUP_CONTACT_RATE: f64 = 0.02;
const INDUSTRY_VARIANT_RATE: f64 = 0.03;
const LEAD_SOURCE_NULL_RATE: f64 = 0.03;
const OPP_SOURCE_VARIANT_RATE: f64 = 0.01;
const AMOUNT_NULL_RATE: f64 = 0.01;
const EUR_RATE_EMEA: f64 = 0.05;
const DELETED_OPP_RATE: f64 = 0.005;
const ORPHAN_ROLE_RATE: f64 = 0.003;
const LATE_LOGGED_RATE: f64 = 0.05;

const STAGES: [(&str, i64, f64, &str, bool, bool); 7] = [
    ("Prospecting", 1, 10.0, "Pipeline", false, false),
    ("Discovery", 2, 20.0, "Pipeline", false, false),
    ("Demo", 3, 40.0, "BestCase", false, false),
    ("Proposal", 4, 60.0, "BestCase", false, false),
    ("Negotiation", 5, 80.0, "Forecast", false, false),
    ("Closed Won", 6, 100.0, "Closed", true, true),
    ("Closed Lost", 7, 0.0, "Omitted", true, false),
];
const REGIONS: [(&str, &[&str]); 4] = [
    ("NA East", &["United States", "Canada"]),
    ("NA West", &["United States", "Canada", "Mexico"]),
    ("EMEA", &["United Kingdom", "Germany", "France", "Netherlands", "Sweden"]),
    ("APAC", &["Australia", "Japan", "Singapore", "India"]),
];
const INDUSTRIES: [&str; 8] =
    ["Technology", "Financial Services", "Healthcare", "Manufacturing", "Retail", "Education", "Media", "Logistics"];
const LEAD_SOURCES: [&str; 6] = ["Inbound", "Outbound", "Partner", "Event", "Paid Search", "Referral"];
const FIRST: [&str; 24] = [
    "Dana", "Alex", "Sam", "Priya", "Jordan", "Mei", "Lucas", "Amara", "Noah", "Sofia", "Kenji", "Leila", "Omar",
    "Eva", "Ravi", "Chloe", "Mateo", "Hana", "Ivan", "Zoe", "Tariq", "Nina", "Felix", "Ines",
];
const LAST: [&str; 24] = [
    "Lee", "Garcia", "Khan", "Smith", "Muller", "Tanaka", "Rossi", "Okafor", "Silva", "Novak", "Dubois", "Chen",
    "Patel", "Larsen", "Kowalski", "Ahmed", "Moreau", "Sato", "Brown", "Fischer", "Costa", "Haddad", "Walsh", "Ito",
];
const ADJ: [&str; 32] = [
    "Blue",
    "Northern",
    "Bright",
    "Silver",
    "Rapid",
    "Quiet",
    "Golden",
    "Prime",
    "Clear",
    "Bold",
    "Summit",
    "Urban",
    "Coastal",
    "Iron",
    "Green",
    "Vivid",
    "Lunar",
    "Solar",
    "Crimson",
    "Polar",
    "Swift",
    "Noble",
    "Open",
    "True",
    "Keystone",
    "Harbor",
    "Evergreen",
    "Atlas",
    "Pioneer",
    "Crystal",
    "Granite",
    "Meadow",
];
const NOUN: [&str; 32] = [
    "Analytics",
    "Logistics",
    "Health",
    "Systems",
    "Foods",
    "Capital",
    "Motors",
    "Media",
    "Labs",
    "Energy",
    "Retail",
    "Robotics",
    "Insurance",
    "Textiles",
    "Pharma",
    "Networks",
    "Partners",
    "Freight",
    "Studios",
    "Materials",
    "Software",
    "Dynamics",
    "Ventures",
    "Holdings",
    "Devices",
    "Clinics",
    "Airways",
    "Brewing",
    "Finance",
    "Learning",
    "Security",
    "Works",
];
const SUFFIX: [&str; 6] = ["Inc", "Ltd", "GmbH", "Group", "Co", "AG"];
const TITLES: [&str; 8] =
    ["VP Sales", "CFO", "CTO", "Head of RevOps", "Director of IT", "Procurement Manager", "Operations Lead", "CEO"];
const COMPETITORS: [&str; 3] = ["Rivalry Inc", "Acme Cloud", "OldGuard Suite"];

/// What the generator planted, for tests and for people reading the demo lake.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Truth {
    pub seed: u64,
    pub opportunities: u64,
    pub start: String,
    pub end: String,
    pub effects: BTreeMap<String, serde_json::Value>,
    pub messiness: BTreeMap<String, serde_json::Value>,
    pub row_counts: BTreeMap<String, u64>,
}

/// Counters the simulation keeps so the truth file states realised effects, not only parameters.
#[derive(Debug, Clone, Default)]
struct Tally {
    reached_demo_single: u64,
    slipped_single: u64,
    reached_demo_multi: u64,
    slipped_multi: u64,
    closed_dark: u64,
    won_dark: u64,
    closed_champion_engaged: u64,
    won_champion_engaged: u64,
    dup_contacts: u64,
    industry_variants: u64,
    opp_source_variants: u64,
    amount_nulls: u64,
    negative_amounts: u64,
    eur_opps: u64,
    deleted_opps: u64,
    orphan_roles: u64,
    future_tasks: u64,
    duplicate_line_items: u64,
    null_lead_sources: u64,
    late_logged_tasks: u64,
    signups: BTreeMap<String, (u64, u64)>,
    rows: BTreeMap<String, u64>,
}

impl Tally {
    fn add(&mut self, o: &Tally) {
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
        for (k, v) in &o.rows {
            *self.rows.entry(k.clone()).or_default() += v;
        }
    }
}

struct Org {
    /// (user id, name, region index, manager id) of sellers.
    sellers: Vec<(String, String, usize, String)>,
    managers_by_region: Vec<Vec<String>>,
}

fn id(prefix: &str, chunk: u64, n: u64) -> String {
    format!("{prefix}{chunk:03}{n:010}")
}

fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(1e-12);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

fn lognormal(rng: &mut ChaCha8Rng, median: f64, sigma: f64) -> f64 {
    median * (sigma * normal(rng)).exp()
}

fn pick<'a, T>(rng: &mut ChaCha8Rng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

fn at(day: NaiveDate, rng: &mut ChaCha8Rng) -> NaiveDateTime {
    day.and_hms_opt(rng.random_range(8..18), rng.random_range(0..60), rng.random_range(0..60)).expect("valid time")
}

fn company_name(i: u64) -> String {
    let combos = (ADJ.len() * NOUN.len() * SUFFIX.len()) as u64;
    let k = i % combos;
    let base =
        format!("{} {} {}", ADJ[(k % 32) as usize], NOUN[((k / 32) % 32) as usize], SUFFIX[((k / 1024) % 6) as usize]);
    if i >= combos { format!("{base} {}", i / combos + 1) } else { base }
}

/// Generates the lake. Returns the truth written to `truth.json`.
pub async fn generate(lake: &Lake, opts: &GenerateOptions) -> Result<Truth> {
    let started = Instant::now();
    let start = opts.end - Days::new(u64::from(opts.days));
    let n_opps = opts.opportunities.max(50);
    let n_accounts = (n_opps / 3).max(20);
    let n_sellers = (n_opps / 120).clamp(8, 4000);
    const ACCOUNTS_PER_CHUNK: u64 = 20_000;
    let chunks = n_accounts.div_ceil(ACCOUNTS_PER_CHUNK);

    for dir in ["raw/", "truth.json"] {
        lake.delete_prefix(dir).await?;
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
                        gen_chunk(opts, start, org, c, first, last, opps)
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

    let truth = truth_from(opts, start, n_opps, &tally);
    let json = serde_json::to_vec_pretty(&truth).map_err(|e| crate::error::Error::Other(e.to_string()))?;
    lake.put("truth.json", json).await?;
    eprintln!(
        "generated {} opportunities ({} rows in all) in {:.1}s into {}",
        n_opps,
        truth.row_counts.values().sum::<u64>(),
        started.elapsed().as_secs_f64(),
        lake.url
    );
    Ok(truth)
}

fn truth_from(opts: &GenerateOptions, start: NaiveDate, n_opps: u64, t: &Tally) -> Truth {
    use serde_json::json;
    let rate = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let mut truth = Truth {
        seed: opts.seed,
        opportunities: n_opps,
        start: start.to_string(),
        end: opts.end.to_string(),
        row_counts: t.rows.clone(),
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

type Files = Vec<(String, Vec<u8>)>;

fn gen_org(opts: &GenerateOptions, start: NaiveDate, n_sellers: u64) -> Result<(Org, Files, Tally)> {
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
        let mut q = NaiveDate::from_ymd_opt(start.year(), ((start.month0() / 3) * 3) + 1, 1).expect("valid");
        let base = [450_000.0, 420_000.0, 380_000.0, 300_000.0][*r];
        while q <= opts.end {
            let next_q = q.checked_add_months(chrono::Months::new(3)).expect("valid");
            quota.push(vec![
                sid.clone().into(),
                q.into(),
                (next_q - Days::new(1)).into(),
                (base * (0.85 + 0.3 * rng.random::<f64>())).round().into(),
                "USD".into(),
                (q - Days::new(14)).and_hms_opt(9, 0, 0).expect("valid").into(),
            ]);
            q = next_q;
        }
        sellers.push((sid, sname, *r, mid.clone()));
    }
    // Campaigns: one a month.
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

struct Contact {
    id: String,
    name: String,
}

#[allow(clippy::too_many_arguments)]
fn gen_chunk(
    opts: &GenerateOptions,
    start: NaiveDate,
    org: &Org,
    chunk: u64,
    first_account: u64,
    last_account: u64,
    n_opps: u64,
) -> Result<(Files, Tally)> {
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed ^ (chunk + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut t = Tally::default();
    let end = opts.end;
    let cdc_at = |ts: NaiveDateTime| ts + Duration::hours(1);
    let span_days = opts.days as i64;

    let mut accounts = RowBuf::new(
        "account",
        &[
            "id",
            "name",
            "type",
            "industry",
            "number_of_employees",
            "annual_revenue",
            "billing_country",
            "owner_id",
            "created_date",
            "_fivetran_synced",
            "is_deleted",
        ],
    );
    let mut contacts = RowBuf::new(
        "contact",
        &[
            "id",
            "account_id",
            "first_name",
            "last_name",
            "name",
            "email",
            "title",
            "owner_id",
            "created_date",
            "_fivetran_synced",
            "is_deleted",
        ],
    );
    let mut opps = RowBuf::new(
        "opportunity",
        &[
            "id",
            "account_id",
            "owner_id",
            "name",
            "type",
            "stage_name",
            "amount",
            "currency_iso_code",
            "close_date",
            "probability",
            "forecast_category",
            "is_won",
            "is_closed",
            "lead_source",
            "campaign_id",
            "created_date",
            "_fivetran_synced",
            "is_deleted",
            "last_modified_date",
        ],
    );
    let mut hist = RowBuf::new(
        "opportunity_history",
        &[
            "id",
            "opportunity_id",
            "created_date",
            "created_by_id",
            "stage_name",
            "amount",
            "close_date",
            "probability",
            "forecast_category",
            "_fivetran_synced",
        ],
    );
    let mut roles = RowBuf::new(
        "opportunity_contact_role",
        &["id", "opportunity_id", "contact_id", "role", "is_primary", "created_date", "_fivetran_synced"],
    );
    let mut items = RowBuf::new(
        "opportunity_line_item",
        &[
            "id",
            "opportunity_id",
            "product_2_id",
            "name",
            "quantity",
            "list_price",
            "unit_price",
            "total_price",
            "created_date",
            "_fivetran_synced",
        ],
    );
    let mut tasks = RowBuf::new(
        "task",
        &[
            "id",
            "what_id",
            "who_id",
            "account_id",
            "owner_id",
            "subject",
            "type",
            "task_subtype",
            "call_type",
            "direction",
            "status",
            "activity_date",
            "created_date",
            "_fivetran_synced",
        ],
    );
    let mut events = RowBuf::new(
        "event",
        &[
            "id",
            "what_id",
            "who_id",
            "account_id",
            "owner_id",
            "subject",
            "type",
            "start_date_time",
            "duration_in_minutes",
            "created_date",
            "_fivetran_synced",
        ],
    );
    let mut trackers = RowBuf::new(
        "tracker_mention",
        &["id", "call_id", "opportunity_id", "mentioned_at", "tracker", "speaker_side", "speaker_contact_id", "phrase"],
    );
    let mut leads = RowBuf::new(
        "lead",
        &[
            "id",
            "name",
            "company",
            "email",
            "status",
            "lead_source",
            "industry",
            "country",
            "number_of_employees",
            "owner_id",
            "is_converted",
            "converted_date",
            "converted_account_id",
            "converted_contact_id",
            "converted_opportunity_id",
            "created_date",
            "_fivetran_synced",
        ],
    );
    let mut lead_hist = RowBuf::new(
        "lead_history",
        &["id", "lead_id", "field", "old_value", "new_value", "created_date", "_fivetran_synced"],
    );
    let mut members = RowBuf::new(
        "campaign_member",
        &["id", "campaign_id", "lead_id", "status", "has_responded", "created_date", "_fivetran_synced"],
    );
    let mut usage =
        RowBuf::new("usage_daily", &["account_id", "usage_date", "active_users", "events", "licensed_seats"]);
    let mut product = RowBuf::new(
        "product_events",
        &["event_id", "workspace_id", "event_name", "event_time", "plan", "channel", "country", "mrr"],
    );

    let mut seq = 0u64;
    let mut next = |prefix: &str| {
        seq += 1;
        id(prefix, chunk, seq)
    };
    let campaign_for = |d: NaiveDate| {
        let months = (d.year() - start.year()) * 12 + d.month() as i32 - start.month() as i32;
        id("701", 0, months.max(0) as u64)
    };

    // Accounts and their contacts.
    struct Acct {
        id: String,
        name: String,
        country: String,
        employees: i64,
        industry: String,
        owner: usize,
        contacts: Vec<Contact>,
        created: NaiveDateTime,
        won_at: Option<NaiveDate>,
        seats: i64,
    }
    let mut accts: Vec<Acct> = Vec::new();
    for a in first_account..last_account {
        let owner = rng.random_range(0..org.sellers.len());
        let region = org.sellers[owner].2;
        let country = pick(&mut rng, REGIONS[region].1).to_string();
        let employees = lognormal(&mut rng, 400.0, 1.4).round().max(5.0) as i64;
        let industry = pick(&mut rng, &INDUSTRIES).to_string();
        let created = at(start - Days::new(rng.random_range(0..300)), &mut rng);
        let aid = id("001", chunk, a - first_account);
        let name = company_name(a);
        let domain = name.to_lowercase().replace(' ', "");
        let mut contact_list = Vec::new();
        for _ in 0..rng.random_range(3..8) {
            let (f, l) = (pick(&mut rng, &FIRST).to_string(), pick(&mut rng, &LAST).to_string());
            let cid = next("003");
            let email = format!("{}.{}{}@{domain}.example", f.to_lowercase(), l.to_lowercase(), contact_list.len());
            let ccreated = created + Duration::days(rng.random_range(0..60));
            contacts.push(vec![
                cid.clone().into(),
                aid.clone().into(),
                f.clone().into(),
                l.clone().into(),
                format!("{f} {l}").into(),
                email.clone().into(),
                pick(&mut rng, &TITLES).to_string().into(),
                org.sellers[owner].0.clone().into(),
                ccreated.into(),
                cdc_at(ccreated).into(),
                false.into(),
            ]);
            if rng.random::<f64>() < DUP_CONTACT_RATE {
                let dup = next("003");
                let later = ccreated + Duration::days(rng.random_range(20..200));
                contacts.push(vec![
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

    // Opportunities.
    for o in 0..n_opps {
        let ai = rng.random_range(0..accts.len());
        let (owner_id, _, region, _) = org.sellers[accts[ai].owner].clone();
        let oid = id("006", chunk, o);
        let created_day = start + Days::new(rng.random_range(0..span_days as u64));
        let created = at(created_day, &mut rng).max(accts[ai].created + Duration::days(1));
        let employees = accts[ai].employees;
        let (median_amount, size_mult) = if employees < 200 {
            (12_000.0, 1.0)
        } else if employees < 2000 {
            (45_000.0, 1.25)
        } else {
            (150_000.0, 1.6)
        };
        let mut amount = (lognormal(&mut rng, median_amount, 0.5) / 100.0).round() * 100.0;
        let deal_type = if rng.random::<f64>() < 0.7 {
            "New Business"
        } else if rng.random::<f64>() < 0.67 {
            "Expansion"
        } else {
            "Renewal"
        };
        let mut lead_source = pick(&mut rng, &LEAD_SOURCES).to_string();
        if lead_source == "Paid Search" && rng.random::<f64>() < OPP_SOURCE_VARIANT_RATE * 6.0 {
            lead_source = "paid search".into();
            t.opp_source_variants += 1;
        }
        // Stakeholders.
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

        // Stage path.
        let medians = [9.0, 14.0, 12.0, 14.0, 10.0];
        let base_adv = [0.78, 0.72, 0.72, 0.75, 0.72];
        let mut changes: Vec<(NaiveDateTime, usize, bool)> = vec![(created, 0, false)]; // (time, stage idx, slip)
        let mut tcur = created;
        let mut stage = 0usize;
        let mut dark_at: Option<NaiveDateTime> = None;
        let mut competitor_from: Option<NaiveDateTime> = None;
        let mut outcome: Option<bool> = None;
        let mut demo_at: Option<NaiveDateTime> = None;
        loop {
            let dur = lognormal(&mut rng, medians[stage] * size_mult, 0.55).max(1.0);
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
                p *= 0.5;
            }
            if competitor_from.is_some() {
                p *= 0.85;
            }
            if single {
                p *= 0.95;
            }
            if champion_mode == 3 {
                p = (p * 1.08).min(0.97);
            }
            // Decided now so a deal that will be lost here can stall first (LOSS_STALL_FACTOR).
            let advance = rng.random::<f64>() < p;
            let next_t =
                if advance { next_t } else { tcur + Duration::minutes((dur * LOSS_STALL_FACTOR * 1440.0) as i64) };
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
        let close_at = outcome.map(|_| tcur);
        // Slip after Demo: a close-date push while still open.
        let mut slip_at = None;
        if let Some(d) = demo_at {
            let p = if single { SLIP_AFTER_DEMO_SINGLE } else { SLIP_AFTER_DEMO_MULTI };
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

        // Opportunity history rows, in time order.
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
            hist.push(vec![
                next("008").into(),
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
        opps.push(vec![
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
            campaign_for(created.date()).into(),
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
        // Line item; a few rows landed twice.
        let list = (amount * 1.1 / 100.0).round() * 100.0;
        let item_row = vec![
            next("00k").into(),
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
            items.push(item_row.clone());
            t.duplicate_line_items += 1;
        }
        items.push(item_row);

        // Contact roles (one orphan now and then).
        for (k, ci) in chosen.iter().enumerate() {
            let contact_id = if rng.random::<f64>() < ORPHAN_ROLE_RATE {
                t.orphan_roles += 1;
                format!("003MISSING{:08}", rng.random_range(0..100_000_000u64))
            } else {
                accts[ai].contacts[*ci].id.clone()
            };
            let added = created + Duration::hours(rng.random_range(1..72));
            roles.push(vec![
                next("00K").into(),
                oid.clone().into(),
                contact_id.into(),
                role_names[k].into(),
                (k == 0).into(),
                added.into(),
                cdc_at(added).into(),
            ]);
        }

        // Activity: weekly outreach and replies while open; a deal being lost stalls in its last
        // stage, where replies thin out.
        let stop = close_at.unwrap_or_else(|| end.and_hms_opt(20, 0, 0).expect("valid"));
        let stall_from = if outcome == Some(false) { changes.last().map(|c| c.0) } else { None };
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
                let p_reply =
                    if stall_from.is_some_and(|f| sent >= f) { p_reply * LOSS_STALL_REPLY_FACTOR } else { p_reply };
                push_task(
                    &mut tasks,
                    &mut t,
                    &mut rng,
                    next("00T"),
                    &oid,
                    &contact.id,
                    &accts[ai].id,
                    &owner_id,
                    "Email",
                    "outbound",
                    sent,
                    format!("Follow-up: {}", accts[ai].name),
                );
                if rng.random::<f64>() < p_reply {
                    let reply = sent + Duration::minutes((lognormal(&mut rng, lag_days, 0.4) * 1440.0) as i64);
                    if reply < stop && reply.date() <= end {
                        push_task(
                            &mut tasks,
                            &mut t,
                            &mut rng,
                            next("00T"),
                            &oid,
                            &contact.id,
                            &accts[ai].id,
                            &owner_id,
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
                    let call_id = next("CAL");
                    let who = &accts[ai].contacts[chosen[0]];
                    push_task(
                        &mut tasks,
                        &mut t,
                        &mut rng,
                        call_id.clone(),
                        &oid,
                        &who.id,
                        &accts[ai].id,
                        &owner_id,
                        "Call",
                        "outbound",
                        call,
                        format!("Call with {}", who.name),
                    );
                    let mut mention = |tracker: &str, phrase: &str, rng: &mut ChaCha8Rng| {
                        trackers.push(vec![
                            format!("TRK{chunk:03}{:010}", trackers.len()).into(),
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
                            mention("competitor", comp, &mut rng);
                        }
                    }
                    let stage_now = changes.iter().rev().find(|(ts, _, _)| *ts <= call).map(|c| c.1).unwrap_or(0);
                    if stage_now >= 3 && rng.random::<f64>() < 0.5 {
                        mention("pricing", if pressure { "discount" } else { "pricing" }, &mut rng);
                    }
                    if security && stage_now >= 2 && rng.random::<f64>() < 0.6 {
                        mention("security", "SOC 2 report", &mut rng);
                    }
                }
            }
            week += Duration::days(7);
            wk += 1;
        }
        // Meetings at stage entries.
        for (when, s, _) in &changes {
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
            events.push(vec![
                next("00U").into(),
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
        // Half of the inbound-ish deals came through a lead that converted.
        if lead_source != "Outbound" && rng.random::<f64>() < 0.5 {
            let lid = next("00Q");
            let lcreated = created - Duration::days(rng.random_range(3..30));
            let mql = lcreated + Duration::days(rng.random_range(1..3));
            let sql = mql + Duration::days(1).max(Duration::hours(rng.random_range(2..48)));
            let c = &accts[ai].contacts[chosen[0]];
            leads.push(vec![
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
                lead_hist.push(vec![
                    next("017").into(),
                    lid.clone().into(),
                    "Status".into(),
                    old.into(),
                    new.into(),
                    when.into(),
                    cdc_at(when).into(),
                ]);
            }
        }
    }

    // Deals created by mistake and deleted two days later (Salesforce deletes their children too).
    let n_deleted = ((n_opps as f64) * DELETED_OPP_RATE).round().max(1.0) as u64;
    for k in 0..n_deleted {
        let a = &accts[rng.random_range(0..accts.len())];
        let created = at(start + Days::new(rng.random_range(0..span_days as u64 - 3)), &mut rng);
        let removed = created + Duration::days(2);
        opps.push(vec![
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

    // Unconverted leads: two per opportunity, most stall or are disqualified.
    for _ in 0..(2 * n_opps) {
        let lid = next("00Q");
        let lcreated = at(start + Days::new(rng.random_range(0..span_days as u64)), &mut rng);
        let src: V = if rng.random::<f64>() < LEAD_SOURCE_NULL_RATE {
            t.null_lead_sources += 1;
            V::N
        } else {
            pick(&mut rng, &LEAD_SOURCES).to_string().into()
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
        let f = pick(&mut rng, &FIRST);
        let l = pick(&mut rng, &LAST);
        leads.push(vec![
            lid.clone().into(),
            format!("{f} {l}").into(),
            company_name(rng.random_range(0..1_000_000)).into(),
            format!("{}.{}@lead{}.example", f.to_lowercase(), l.to_lowercase(), lid.to_lowercase()).into(),
            status.into(),
            src,
            pick(&mut rng, &INDUSTRIES).to_string().into(),
            pick(&mut rng, countries).to_string().into(),
            (lognormal(&mut rng, 200.0, 1.3).round().max(2.0) as i64).into(),
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
            lead_hist.push(vec![
                next("017").into(),
                lid.clone().into(),
                "Status".into(),
                old.into(),
                new.into(),
                nw.into(),
                cdc_at(nw).into(),
            ]);
        }
        if rng.random::<f64>() < 0.4 {
            let responded = rng.random::<f64>() < 0.3;
            members.push(vec![
                next("00v").into(),
                campaign_for(lcreated.date()).into(),
                lid.into(),
                (if responded { "Responded" } else { "Sent" }).into(),
                responded.into(),
                lcreated.into(),
                cdc_at(lcreated).into(),
            ]);
        }
    }

    // Accounts (now that won dates are known) and usage for customers.
    let usage_from = end - Days::new(u64::from(opts.usage_days) - 1);
    for a in &accts {
        let mut industry = a.industry.clone();
        if rng.random::<f64>() < INDUSTRY_VARIANT_RATE {
            industry = if rng.random::<bool>() { industry.to_lowercase() } else { format!("{industry} ") };
            t.industry_variants += 1;
        }
        let ty = if a.won_at.is_some() { "Customer" } else { "Prospect" };
        accounts.push(vec![
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
                let active =
                    ((a.seats as f64) * level * if weekday { 1.0 } else { 0.2 } * (0.8 + 0.4 * rng.random::<f64>()))
                        .round() as i64;
                usage.push(vec![
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
    // A few tasks typed ten years ahead.
    if chunk == 0 {
        for k in 0..3 {
            let when = (end + Days::new(3650 + k)).and_hms_opt(10, 0, 0).expect("valid");
            tasks.push(vec![
                next("00T").into(),
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

    // Self-serve workspaces: one for every two opportunities.
    for w in 0..(n_opps / 2) {
        let ws = format!("ws{chunk:03}{w:08}");
        let signup = at(start + Days::new(rng.random_range(0..span_days as u64)), &mut rng);
        let (channel, act_rate) = ACTIVATION_RATE[rng.random_range(0..ACTIVATION_RATE.len())];
        let region_countries = REGIONS[rng.random_range(0..4)].1;
        let country = pick(&mut rng, region_countries).to_string();
        let mut ev = |name: &str, when: NaiveDateTime, plan: &str, mrr: Option<f64>| {
            product.push(vec![
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

    let mut files = Vec::new();
    for (buf, source) in [
        (&mut accounts, "salesforce"),
        (&mut contacts, "salesforce"),
        (&mut opps, "salesforce"),
        (&mut hist, "salesforce"),
        (&mut roles, "salesforce"),
        (&mut items, "salesforce"),
        (&mut tasks, "salesforce"),
        (&mut events, "salesforce"),
        (&mut leads, "salesforce"),
        (&mut lead_hist, "salesforce"),
        (&mut members, "salesforce"),
        (&mut usage, "telemetry"),
        (&mut product, "telemetry"),
        (&mut trackers, "conversations"),
    ] {
        *t.rows.entry(buf.table.name.clone()).or_default() += buf.len() as u64;
        files.push((format!("raw/{source}/{}/part-{chunk:05}.parquet", buf.table.name), buf.to_parquet()?));
    }
    Ok((files, t))
}

#[allow(clippy::too_many_arguments)]
fn push_task(
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
