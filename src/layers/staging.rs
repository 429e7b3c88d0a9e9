//! The staging layer: one SQL file per contract table (`sql/staging/<table>.sql`), typed and
//! as-of filtered over `known`, registered as `staging.<table>` views.

use crate::error::Result;
use crate::layers::LakeSession;

macro_rules! staging_sql {
    ($($name:literal),* $(,)?) => {
        &[$(($name, repo_file!(concat!("sql/staging/", $name, ".sql")))),*]
    };
}

/// One SQL file per staged table, named after the table it produces.
pub const STAGING_SQL: &[(&str, &str)] = staging_sql!(
    "account",
    "contact",
    "user",
    "user_role",
    "opportunity",
    "opportunity_history",
    "opportunity_stage",
    "opportunity_contact_role",
    "opportunity_line_item",
    "task",
    "event",
    "lead",
    "lead_history",
    "campaign",
    "campaign_member",
    "usage_daily",
    "product_events",
    "tracker_mention",
    "quota",
);

/// Registers `staging.<table>` for every staged table (after `known`, which they read).
pub async fn register(session: &LakeSession) -> Result<()> {
    for (name, sql) in STAGING_SQL {
        let view = session.declared(sql, &format!("sql/staging/{name}.sql")).await?.into_view();
        let table = format!("staging.{name}");
        session.ctx.register_table(table.as_str(), session.share(&table, view))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lake::contract::Contract;

    #[test]
    fn every_contract_table_has_a_staging_model() {
        for t in &Contract::builtin().tables {
            assert!(STAGING_SQL.iter().any(|(n, _)| *n == t.name), "sql/staging/{}.sql missing", t.name);
        }
    }
}
