//! The world the demo lake simulates: the stage ladder, regions, industries, names, and the
//! random draws every generator shares (ids, log-normal amounts, times of day, company names).

use chrono::{Duration, NaiveDate, NaiveDateTime};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

pub(super) const STAGES: [(&str, i64, f64, &str, bool, bool); 7] = [
    ("Prospecting", 1, 10.0, "Pipeline", false, false),
    ("Discovery", 2, 20.0, "Pipeline", false, false),
    ("Demo", 3, 40.0, "BestCase", false, false),
    ("Proposal", 4, 60.0, "BestCase", false, false),
    ("Negotiation", 5, 80.0, "Forecast", false, false),
    ("Closed Won", 6, 100.0, "Closed", true, true),
    ("Closed Lost", 7, 0.0, "Omitted", true, false),
];

pub(super) const REGIONS: [(&str, &[&str]); 4] = [
    ("NA East", &["United States", "Canada"]),
    ("NA West", &["United States", "Canada", "Mexico"]),
    ("EMEA", &["United Kingdom", "Germany", "France", "Netherlands", "Sweden"]),
    ("APAC", &["Australia", "Japan", "Singapore", "India"]),
];

pub(super) const INDUSTRIES: [&str; 8] =
    ["Technology", "Financial Services", "Healthcare", "Manufacturing", "Retail", "Education", "Media", "Logistics"];

pub(super) const LEAD_SOURCES: [&str; 6] = ["Inbound", "Outbound", "Partner", "Event", "Paid Search", "Referral"];

pub(super) const FIRST: [&str; 24] = [
    "Dana", "Alex", "Sam", "Priya", "Jordan", "Mei", "Lucas", "Amara", "Noah", "Sofia", "Kenji", "Leila", "Omar",
    "Eva", "Ravi", "Chloe", "Mateo", "Hana", "Ivan", "Zoe", "Tariq", "Nina", "Felix", "Ines",
];

pub(super) const LAST: [&str; 24] = [
    "Lee", "Garcia", "Khan", "Smith", "Muller", "Tanaka", "Rossi", "Okafor", "Silva", "Novak", "Dubois", "Chen",
    "Patel", "Larsen", "Kowalski", "Ahmed", "Moreau", "Sato", "Brown", "Fischer", "Costa", "Haddad", "Walsh", "Ito",
];

pub(super) const ADJ: [&str; 32] = [
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

pub(super) const NOUN: [&str; 32] = [
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

pub(super) const SUFFIX: [&str; 6] = ["Inc", "Ltd", "GmbH", "Group", "Co", "AG"];

pub(super) const TITLES: [&str; 8] =
    ["VP Sales", "CFO", "CTO", "Head of RevOps", "Director of IT", "Procurement Manager", "Operations Lead", "CEO"];

pub(super) const COMPETITORS: [&str; 3] = ["Rivalry Inc", "Acme Cloud", "OldGuard Suite"];

pub(super) fn id(prefix: &str, chunk: u64, n: u64) -> String {
    format!("{prefix}{chunk:03}{n:010}")
}

pub(super) fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(1e-12);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

pub(super) fn lognormal(rng: &mut ChaCha8Rng, median: f64, sigma: f64) -> f64 {
    median * (sigma * normal(rng)).exp()
}

pub(super) fn pick<'a, T>(rng: &mut ChaCha8Rng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

pub(super) fn at(day: NaiveDate, rng: &mut ChaCha8Rng) -> NaiveDateTime {
    day.and_hms_opt(rng.random_range(8..18), rng.random_range(0..60), rng.random_range(0..60)).expect("valid time")
}

pub(super) fn company_name(i: u64) -> String {
    let combos = (ADJ.len() * NOUN.len() * SUFFIX.len()) as u64;
    let k = i % combos;
    let base =
        format!("{} {} {}", ADJ[(k % 32) as usize], NOUN[((k / 32) % 32) as usize], SUFFIX[((k / 1024) % 6) as usize]);
    if i >= combos { format!("{base} {}", i / combos + 1) } else { base }
}

/// When a connector synced a row recorded at `ts` (an hour later).
pub(super) fn cdc_at(ts: NaiveDateTime) -> NaiveDateTime {
    ts + Duration::hours(1)
}
