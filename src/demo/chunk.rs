//! One chunk of the demo lake: a slice of accounts with their deals, activity, leads, usage and
//! workspaces, simulated from its own random stream so chunks run in parallel and stay deterministic.

use chrono::{Datelike, NaiveDate, NaiveDateTime};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::org::Org;
use super::truth::Tally;
use super::world::id;
use super::{Files, GenerateOptions};
use crate::error::Result;
use crate::lake::rowbuf::RowBuf;

/// What a chunk reads and never changes.
#[derive(Clone, Copy)]
pub(super) struct Ctx<'a> {
    pub opts: &'a GenerateOptions,
    pub start: NaiveDate,
    pub end: NaiveDate,
    pub span_days: i64,
    pub org: &'a Org,
    pub chunk: u64,
}

impl Ctx<'_> {
    /// The monthly campaign running on day `d`.
    pub fn campaign_for(&self, d: NaiveDate) -> String {
        let months = (d.year() - self.start.year()) * 12 + d.month() as i32 - self.start.month() as i32;
        id("701", 0, months.max(0) as u64)
    }
}

/// Record ids of one chunk: a prefix (Salesforce's key prefix), the chunk and a sequence number.
pub(super) struct Ids {
    chunk: u64,
    seq: u64,
}

impl Ids {
    pub fn next(&mut self, prefix: &str) -> String {
        self.seq += 1;
        id(prefix, self.chunk, self.seq)
    }
}

/// The raw tables a chunk writes, each in its contract's column order.
pub(super) struct Tables {
    pub accounts: RowBuf,
    pub contacts: RowBuf,
    pub opps: RowBuf,
    pub hist: RowBuf,
    pub roles: RowBuf,
    pub items: RowBuf,
    pub tasks: RowBuf,
    pub events: RowBuf,
    pub trackers: RowBuf,
    pub leads: RowBuf,
    pub lead_hist: RowBuf,
    pub members: RowBuf,
    pub usage: RowBuf,
    pub product: RowBuf,
}

impl Tables {
    // A declaration, not logic (about 180 lines): each raw table's columns, in the order the rows
    // below push their values. Kept in one place so a column is added in one spot.
    fn new() -> Tables {
        Tables {
            accounts: RowBuf::new(
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
            ),
            contacts: RowBuf::new(
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
            ),
            opps: RowBuf::new(
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
            ),
            hist: RowBuf::new(
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
            ),
            roles: RowBuf::new(
                "opportunity_contact_role",
                &["id", "opportunity_id", "contact_id", "role", "is_primary", "created_date", "_fivetran_synced"],
            ),
            items: RowBuf::new(
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
            ),
            tasks: RowBuf::new(
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
            ),
            events: RowBuf::new(
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
            ),
            trackers: RowBuf::new(
                "tracker_mention",
                &[
                    "id",
                    "call_id",
                    "opportunity_id",
                    "mentioned_at",
                    "tracker",
                    "speaker_side",
                    "speaker_contact_id",
                    "phrase",
                ],
            ),
            leads: RowBuf::new(
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
            ),
            lead_hist: RowBuf::new(
                "lead_history",
                &["id", "lead_id", "field", "old_value", "new_value", "created_date", "_fivetran_synced"],
            ),
            members: RowBuf::new(
                "campaign_member",
                &["id", "campaign_id", "lead_id", "status", "has_responded", "created_date", "_fivetran_synced"],
            ),
            usage: RowBuf::new(
                "usage_daily",
                &["account_id", "usage_date", "active_users", "events", "licensed_seats"],
            ),
            product: RowBuf::new(
                "product_events",
                &["event_id", "workspace_id", "event_name", "event_time", "plan", "channel", "country", "mrr"],
            ),
        }
    }
}

pub(super) struct Contact {
    pub id: String,
    pub name: String,
}

/// An account as the simulation holds it (its row is written last, once won dates are known).
pub(super) struct Acct {
    pub id: String,
    pub name: String,
    pub country: String,
    pub employees: i64,
    pub industry: String,
    pub owner: usize,
    pub contacts: Vec<Contact>,
    pub created: NaiveDateTime,
    pub won_at: Option<NaiveDate>,
    pub seats: i64,
}

/// A chunk being simulated. Sections run in a fixed order (see `generate_chunk`): the random
/// stream is consumed in that order, so the same seed gives the same bytes.
pub(super) struct Chunk<'a> {
    pub cx: Ctx<'a>,
    pub rng: ChaCha8Rng,
    pub t: Tally,
    pub out: Tables,
    pub ids: Ids,
    pub accts: Vec<Acct>,
}

/// Simulates accounts `first_account..last_account` and `n_opps` deals on them.
pub(super) fn generate_chunk(
    opts: &GenerateOptions,
    start: NaiveDate,
    org: &Org,
    chunk: u64,
    (first_account, last_account): (u64, u64),
    n_opps: u64,
) -> Result<(Files, Tally)> {
    let mut c = Chunk {
        cx: Ctx { opts, start, end: opts.end, span_days: opts.days as i64, org, chunk },
        rng: ChaCha8Rng::seed_from_u64(opts.seed ^ (chunk + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
        t: Tally::default(),
        out: Tables::new(),
        ids: Ids { chunk, seq: 0 },
        accts: Vec::new(),
    };
    c.accounts(first_account, last_account);
    for o in 0..n_opps {
        c.opportunity(o);
    }
    c.deleted_deals(n_opps);
    c.unconverted_leads(n_opps);
    c.account_rows_and_usage();
    c.future_tasks();
    c.workspaces(n_opps);
    c.into_files()
}

impl Chunk<'_> {
    /// The chunk's Parquet files, one per table, and its tally.
    fn into_files(self) -> Result<(Files, Tally)> {
        let Chunk { cx, mut t, out, .. } = self;
        let chunk = cx.chunk;
        let Tables {
            mut accounts,
            mut contacts,
            mut opps,
            mut hist,
            mut roles,
            mut items,
            mut tasks,
            mut events,
            mut trackers,
            mut leads,
            mut lead_hist,
            mut members,
            mut usage,
            mut product,
        } = out;
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
}
