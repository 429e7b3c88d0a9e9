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
    // A staging table that reads another comes after it (views are planned as registered).
    "opportunity_history",
    "opportunity",
    "opportunity_stage",
    "opportunity_contact_role",
    "opportunity_line_item",
    "task",
    "event",
    "lead_history",
    "lead",
    "campaign",
    "campaign_member",
    "usage_daily",
    "product_events",
    "tracker_mention",
    "quota",
);

/// Registers `staging.<table>` for every staged table (after `known`, which they read), each held
/// in the order its file declares, if any (`-- @held-order:`, see `layers::ordered`).
pub async fn register(session: &LakeSession) -> Result<()> {
    for (name, sql) in STAGING_SQL {
        let source = format!("sql/staging/{name}.sql");
        let view = session.declared(sql, &source).await?.into_view();
        let order = crate::layers::ordered::declared(sql);
        if let Some(missing) = order.iter().find(|c| view.schema().index_of(c).is_err()) {
            return Err(crate::error::Error::Other(format!(
                "{source}: its @held-order names {missing}, which the table does not have"
            )));
        }
        let table = format!("staging.{name}");
        session.ctx.register_table(table.as_str(), session.share_ordered(&table, view, &order))?;
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
