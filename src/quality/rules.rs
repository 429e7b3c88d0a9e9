//! Declared rules: the contract's row-level checks (closed before created, won without amount...)
//! and whether a CDC table can be time-travelled exactly to the run date.

use crate::error::{Error, Result};
use crate::quality::sql::{first_col, scalar};
use crate::quality::{Finding, Severity, TableCheck};

/// Each declared row rule over the latest known version of each row (contract columns), not the
/// as-of rebuild.
pub async fn declared(cx: &TableCheck<'_>, out: &mut Vec<Finding>) -> Result<()> {
    for check in &cx.table.checks {
        let sql = format!("SELECT {} FROM {} WHERE {} ORDER BY 1", cx.key_expr, cx.known, check.when);
        let hits = first_col(cx.session, &sql).await.map_err(|e| {
            Error::Other(format!(
                "check {}.{} in the contract (data/contract/lake.toml) does not run: {e}",
                cx.table.name, check.name
            ))
        })?;
        if !hits.is_empty() {
            out.push(Finding {
                examples: hits.iter().take(5).cloned().collect(),
                detail: format!("{} rows: {}", hits.len(), check.meaning),
                fix: check.fix.clone(),
                ..cx.finding(None, &check.name, Severity::parse(&check.severity), hits.len() as i64, cx.total)
            });
        }
    }
    Ok(())
}

/// Rows known only in a version synced after the run date: fields without a history table then
/// show their current values, and the run says so.
pub async fn not_time_travelled(cx: &TableCheck<'_>, out: &mut Vec<Finding>) -> Result<()> {
    let session = cx.session;
    if !(cx.table.cdc && session.as_of.0.is_some() && cx.total > 0) {
        return Ok(());
    }
    let inexact = scalar(session, &format!("SELECT COUNT(*) FROM {} WHERE NOT _version_exact", cx.known)).await?;
    if inexact > 0 {
        out.push(Finding {
            detail: format!(
                "{inexact} rows are known only in a version synced after {}: fields without a history table show their current values",
                session.as_of.label()
            ),
            fix: "keep older versions (Fivetran history mode) to time-travel this table exactly".into(),
            ..cx.finding(None, "not_time_travelled", Severity::Info, inexact, cx.total)
        });
    }
    Ok(())
}
