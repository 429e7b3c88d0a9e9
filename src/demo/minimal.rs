//! The `salesforce-minimal` shape: the demo lake re-landed the way a narrow Fivetran Salesforce
//! selection would hold it (data/profiles/salesforce_minimal.toml says what differs and declares it).
//!
//! Same deals, people and activity as the full demo lake of the same seed, so what a job finds here
//! can be checked against the full shape: only the vocabulary and the missing parts differ.

use std::sync::Arc;

use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig};
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::error::{Context, Result};
use crate::lake::Lake;
use crate::lake::contract::Contract;

/// The profile this shape is read with, written to the lake root as `lake.toml`.
pub const PROFILE: &str = repo_file!("data/profiles/salesforce_minimal.toml");

/// Tables a narrow selection does not land.
pub(super) const DROPPED: &[&str] =
    &["lead_history", "opportunity_stage", "usage_daily", "product_events", "tracker_mention", "quota"];

/// The deterministic per-row draw the reshaping uses: the sequence number in the demo's ids.
const SEQ: &str = "CAST(right(id, 10) AS BIGINT)";

fn stage(col: &str) -> String {
    format!(
        "CASE {col} WHEN 'Discovery' THEN 'Qualification' WHEN 'Demo' THEN 'Needs Analysis' \
         WHEN 'Proposal' THEN 'Proposal/Price Quote' WHEN 'Negotiation' THEN 'Negotiation/Review' ELSE {col} END"
    )
}

fn lead_source() -> &'static str {
    "CASE lower(trim(lead_source)) WHEN 'inbound' THEN 'Web' WHEN 'outbound' THEN 'Cold Call' \
     WHEN 'partner' THEN 'Partner Referral' WHEN 'event' THEN 'Trade Show' WHEN 'paid search' THEN 'Advertisement' \
     WHEN 'referral' THEN 'Employee Referral' ELSE lead_source END"
}

/// 'Technology' becomes Salesforce's 'Software', one in 29 of them misspelt 'Sofware' (the case
/// and spacing variants of the full shape are kept).
fn industry() -> String {
    format!(
        "CASE industry WHEN 'Technology' THEN CASE WHEN {SEQ} % 29 = 0 THEN 'Sofware' ELSE 'Software' END \
         WHEN 'technology' THEN 'software' WHEN 'Technology ' THEN 'Software ' ELSE industry END"
    )
}

/// The SQL that re-lands one table (over `t`, the table as the full shape wrote it).
fn reshape_sql(table: &str) -> Option<String> {
    let sql = match table {
        "account" => format!("SELECT * EXCLUDE (created_date, industry), {} AS industry FROM t", industry()),
        "contact" | "user" => "SELECT * EXCLUDE (created_date) FROM t".into(),
        "lead" => format!(
            "SELECT * EXCLUDE (lead_source, industry), {} AS lead_source, {} AS industry FROM t",
            lead_source(),
            industry()
        ),
        "opportunity" => format!(
            "SELECT * EXCLUDE (stage_name, lead_source, type), {} AS stage_name, {} AS lead_source, \
             CASE type WHEN 'New Business' THEN 'New Customer' WHEN 'Expansion' THEN 'Existing Customer - Upgrade' \
             WHEN 'Renewal' THEN 'Existing Customer - Renewal' ELSE type END AS type FROM t",
            stage("stage_name"),
            lead_source()
        ),
        "opportunity_history" => format!("SELECT * EXCLUDE (stage_name), {} AS stage_name FROM t", stage("stage_name")),
        "opportunity_contact_role" => "SELECT * EXCLUDE (role), CASE role WHEN 'Champion' THEN 'Coach' \
             WHEN 'Economic Buyer' THEN 'Decision Maker' WHEN 'Technical Buyer' THEN 'Evaluator' ELSE role END AS role FROM t"
            .into(),
        // Emails say their direction only in the subject ("Re: ...", half the replies) or in the
        // logged body ("From: ..." for the other half, "To: ..." for what we sent).
        "task" => format!(
            "SELECT * EXCLUDE (direction, subject), \
               CASE WHEN type = 'Email' AND direction = 'inbound' AND {SEQ} % 2 = 1 AND starts_with(subject, 'Re: ') \
                    THEN substr(subject, 5) ELSE subject END AS subject, \
               CASE WHEN type = 'Email' AND direction = 'outbound' THEN 'To: ' || COALESCE(who_id, 'contact') || chr(10) || subject \
                    WHEN type = 'Email' AND direction = 'inbound' AND {SEQ} % 2 = 1 THEN 'From: ' || COALESCE(who_id, 'contact') || chr(10) || subject \
               END AS description \
             FROM t"
        ),
        // Meeting kinds only in the subject.
        "event" => "SELECT * EXCLUDE (type, subject), CAST(NULL AS VARCHAR) AS type, \
             CASE WHEN starts_with(subject, 'Demo: ') THEN 'Product demo - ' || substr(subject, 7) ELSE subject END AS subject FROM t"
            .into(),
        _ => return None,
    };
    Some(sql)
}

/// Re-lands a freshly generated full-shape lake in the minimal shape and writes its lake.toml.
pub async fn reshape(lake: &Lake) -> Result<()> {
    // Plain strings, as a connector writes them (not DataFusion's in-memory string views).
    let config = SessionConfig::new().set_bool("datafusion.execution.parquet.schema_force_view_types", false);
    let ctx = SessionContext::new_with_config(config);
    lake.register(&ctx);
    for table in &Contract::builtin().tables {
        if DROPPED.contains(&table.name.as_str()) {
            lake.delete_prefix(&format!("{}/", table.path)).await?;
            continue;
        }
        let Some(sql) = reshape_sql(&table.name) else { continue };
        let files = lake.list(&format!("{}/", table.path)).await?;
        if files.is_empty() {
            continue;
        }
        let options = ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
        let config = ListingTableConfig::new(lake.listing_url(&format!("{}/", table.path))?)
            .with_listing_options(options)
            .infer_schema(&ctx.state())
            .await?;
        ctx.register_table("t", Arc::new(ListingTable::try_new(config)?))?;
        let batches = ctx
            .sql(&format!("SELECT * FROM ({sql}) AS r ORDER BY id"))
            .await
            .context(|| format!("reshaping {} to salesforce-minimal", table.name))?
            .collect()
            .await
            .context(|| format!("reshaping {} to salesforce-minimal", table.name))?;
        ctx.deregister_table("t")?;
        let schema = batches.first().map(|b| b.schema()).expect("a non-empty table gives a batch schema");
        let batch = datafusion::arrow::compute::concat_batches(&schema, &batches)?;
        lake.delete_prefix(&format!("{}/", table.path)).await?;
        lake.put(&format!("{}/part-00000.parquet", table.path), crate::lake::rowbuf::parquet_bytes(&batch)?).await?;
    }
    lake.put("lake.toml", PROFILE.as_bytes().to_vec()).await?;
    Ok(())
}
