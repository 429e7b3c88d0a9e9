//! What reps actually did: `action` appends it to the decision-trace log, by hand or imported
//! from CRM tasks logged on flagged deals after the flag, linked to the flag it answers.

use chrono::NaiveDate;

use crate::error::{Error, Result};
use crate::layers::LakeSession;
use crate::layers::columns::{string_rows, strings};
use crate::outputs::decision_log::{Record, record_id};

/// The latest flag record of a deal on or before a date, if any.
async fn latest_flag(session: &LakeSession, deal: &str, on: NaiveDate) -> Result<Option<(String, String)>> {
    let sql = format!(
        "SELECT record_id, playbook_version FROM log.decision_trace WHERE kind = 'deal_flag' AND subject_id = '{}' \
         AND as_of_date <= '{on}' ORDER BY as_of_date DESC, record_id LIMIT 1",
        deal.replace('\'', "''")
    );
    let b = session.ctx.sql(&sql).await?.collect().await?;
    Ok(b.first().filter(|b| b.num_rows() > 0).and_then(|b| {
        let id = strings(b.column(0)).ok()?.first().cloned().flatten()?;
        let v = strings(b.column(1)).ok()?.first().cloned().flatten().unwrap_or_default();
        Some((id, v))
    }))
}

/// Records one action by hand. The same deal, date and text recorded twice is one record.
pub async fn record(
    session: &LakeSession,
    deal: &str,
    did: &str,
    why: &str,
    by: &str,
    on: NaiveDate,
    as_of: NaiveDate,
) -> Result<usize> {
    if did.trim().is_empty() {
        return Err(Error::Other("--did is empty: say what was done".into()));
    }
    let known = session
        .ctx
        .sql(&format!("SELECT COUNT(*) FROM staging.opportunity WHERE id = '{}'", deal.replace('\'', "''")))
        .await?
        .collect()
        .await?;
    let exists = known.first().and_then(|b| strings(b.column(0)).ok()).and_then(|v| v.first().cloned().flatten());
    if exists.as_deref() == Some("0") {
        return Err(Error::Other(format!(
            "no opportunity '{deal}' in the lake as of {as_of}: check the id (gtm-loop query \"SELECT id, name FROM opportunity\")"
        )));
    }
    let flag = latest_flag(session, deal, on).await?;
    let rec = Record {
        record_id: record_id(&["action_taken", deal, &on.to_string(), did]),
        kind: "action_taken".into(),
        as_of_date: on.to_string(),
        recorded_at: chrono::Utc::now().to_rfc3339(),
        subject_type: "opportunity".into(),
        subject_id: deal.to_string(),
        playbook_version: flag.as_ref().map(|f| f.1.clone()).unwrap_or_default(),
        action: Some(did.to_string()),
        owner_name: (!by.is_empty()).then(|| by.to_string()),
        evidence: Some(serde_json::json!({ "why": why, "source": "action command" }).to_string()),
        refers_to: flag.map(|f| f.0),
        ..Record::default()
    };
    crate::outputs::decision_log::append(session, vec![rec]).await
}

/// Imports tasks logged on flagged deals after the flag (up to the as-of date) as actions taken.
pub async fn import_tasks(session: &LakeSession, as_of: NaiveDate) -> Result<usize> {
    let sql = format!(
        "SELECT t.id, t.what_id, CAST(CAST(t.created_date AS DATE) AS VARCHAR), COALESCE(t.subject, t.type, 'task'), \
           t.owner_id, f.record_id, f.playbook_version \
         FROM staging.task AS t \
         JOIN (SELECT subject_id, record_id, playbook_version, as_of_date, \
                 LEAD(as_of_date) OVER (PARTITION BY subject_id ORDER BY as_of_date) AS next_flag \
               FROM log.decision_trace WHERE kind = 'deal_flag' AND as_of_date <= '{as_of}') AS f \
           ON f.subject_id = t.what_id \
          AND CAST(CAST(t.created_date AS DATE) AS VARCHAR) > f.as_of_date \
          AND (f.next_flag IS NULL OR CAST(CAST(t.created_date AS DATE) AS VARCHAR) <= f.next_flag) \
         WHERE COALESCE(t.direction, 'outbound') <> 'inbound' ORDER BY t.id"
    );
    let mut records = Vec::new();
    for b in session.ctx.sql(&sql).await?.collect().await? {
        for c in string_rows(&b, 7)? {
            let Some(task) = c[0].clone() else { continue };
            records.push(Record {
                record_id: record_id(&["action_taken", "task", &task]),
                kind: "action_taken".into(),
                as_of_date: c[2].clone().unwrap_or_default(),
                recorded_at: chrono::Utc::now().to_rfc3339(),
                subject_type: "opportunity".into(),
                subject_id: c[1].clone().unwrap_or_default(),
                playbook_version: c[6].clone().unwrap_or_default(),
                action: c[3].clone(),
                owner_id: c[4].clone(),
                evidence: Some(serde_json::json!({ "source": "crm task", "task_id": task }).to_string()),
                refers_to: c[5].clone(),
                ..Record::default()
            });
        }
    }
    crate::outputs::decision_log::append(session, records).await
}
