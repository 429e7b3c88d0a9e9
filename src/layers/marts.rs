//! The mart layer: the facts the jobs share (`sql/marts/<table>.sql`, and the open-deal context
//! the risk flags read), registered as `mart.<table>` views over staging.

use crate::error::Result;
use crate::layers::LakeSession;

/// Mart views (name, file, SQL), in dependency order (`stage_exit` reads `deal`).
pub const MART_SQL: &[(&str, &str, &str)] = &[
    ("deal", "sql/marts/deal.sql", repo_file!("sql/marts/deal.sql")),
    ("quota_day", "sql/marts/quota_day.sql", repo_file!("sql/marts/quota_day.sql")),
    ("stage_exit", "sql/marts/stage_exit.sql", repo_file!("sql/marts/stage_exit.sql")),
    ("activity", "sql/marts/activity.sql", repo_file!("sql/marts/activity.sql")),
    ("deal_state", "sql/marts/deal_state.sql", repo_file!("sql/marts/deal_state.sql")),
    ("deal_context", "sql/risk/deal_context.sql", repo_file!("sql/risk/deal_context.sql")),
    ("meeting", "sql/marts/meeting.sql", repo_file!("sql/marts/meeting.sql")),
];

/// Registers `mart.<table>` for every mart, in dependency order (after staging).
pub async fn register(session: &LakeSession) -> Result<()> {
    for (name, file, sql) in MART_SQL {
        let view = session.declared(sql, file).await?.into_view();
        let table = format!("mart.{name}");
        session.ctx.register_table(table.as_str(), session.share(&table, view))?;
    }
    Ok(())
}
