//! The approval audit log (`log/audit/`, `log.audit` in SQL): one JSON file per decision on a
//! playbook proposal, written with a single put and never rewritten; the learning loop's
//! approval gate (`learn::approvals`) writes it, every session reads it.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::lake::Lake;
use crate::layers::LakeSession;

/// One key-level playbook edit (see `learn::playbooks`): `before` None adds, `after` None removes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub path: String,
    pub before: Option<String>,
    pub after: Option<String>,
}

pub const DIR: &str = "log/audit";

/// One decision on a proposal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub record_id: String,
    /// approved or rejected.
    pub decision: String,
    pub proposal_id: String,
    /// The content hash of the proposal as it was decided.
    pub proposal_hash: String,
    pub by_user: String,
    pub by_name: String,
    /// Wall-clock time of the decision.
    pub decided_at: String,
    /// The approver's note or the rejecter's reason.
    pub why: String,
    /// The org unit the change applies to: company, region:<role>, manager:<user>.
    pub scope: String,
    pub parent_playbook: String,
    pub changes: Vec<Change>,
    /// Set when approved: the new playbook's hash and label.
    pub new_playbook: Option<String>,
    pub new_label: Option<String>,
    /// The first as-of date runs use the new version on.
    pub effective_from: Option<String>,
    pub treated_share: Option<f64>,
    /// The rollout's assignment, by seller, drawn from the proposal id.
    pub treated: Vec<String>,
    pub holdout: Vec<String>,
    pub code_version: String,
}

/// Every complete decision, in the order they were made. A `.json` file that does not parse is
/// somebody else's: skipped with a warning naming it.
pub async fn decisions(lake: &Lake) -> Result<Vec<Decision>> {
    let mut out: Vec<Decision> = lake.json_files(DIR, "an audit record").await?;
    out.sort_by(|a, b| (&a.decided_at, &a.record_id).cmp(&(&b.decided_at, &b.record_id)));
    Ok(out)
}

/// Registers `log.audit`: one row per decision (lists as comma-separated ids, edits one per line).
pub async fn register(session: &LakeSession) -> Result<()> {
    let ds = decisions(&session.lake).await?;
    let s = |n: &str| Field::new(n, DataType::Utf8, true);
    let schema = Arc::new(Schema::new(vec![
        s("record_id"),
        s("decision"),
        s("proposal_id"),
        s("proposal_hash"),
        s("by_user"),
        s("by_name"),
        s("decided_at"),
        s("why"),
        s("scope"),
        s("parent_playbook"),
        s("new_playbook"),
        s("new_label"),
        s("effective_from"),
        Field::new("treated_share", DataType::Float64, true),
        s("treated"),
        s("holdout"),
        s("changes"),
        s("code_version"),
    ]));
    let col = |f: &dyn Fn(&Decision) -> Option<String>| -> ArrayRef {
        Arc::new(StringArray::from(ds.iter().map(f).collect::<Vec<_>>()))
    };
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            col(&|d| Some(d.record_id.clone())),
            col(&|d| Some(d.decision.clone())),
            col(&|d| Some(d.proposal_id.clone())),
            col(&|d| Some(d.proposal_hash.clone())),
            col(&|d| Some(d.by_user.clone())),
            col(&|d| Some(d.by_name.clone())),
            col(&|d| Some(d.decided_at.clone())),
            col(&|d| Some(d.why.clone())),
            col(&|d| Some(d.scope.clone())),
            col(&|d| Some(d.parent_playbook.clone())),
            col(&|d| d.new_playbook.clone()),
            col(&|d| d.new_label.clone()),
            col(&|d| d.effective_from.clone()),
            Arc::new(Float64Array::from(ds.iter().map(|d| d.treated_share).collect::<Vec<_>>())),
            col(&|d| Some(d.treated.join(","))),
            col(&|d| Some(d.holdout.join(","))),
            col(&|d| {
                Some(
                    d.changes
                        .iter()
                        .map(|c| {
                            format!(
                                "{}: {} -> {}",
                                c.path,
                                c.before.as_deref().unwrap_or("(none)"),
                                c.after.as_deref().unwrap_or("(none)")
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("\n"),
                )
            }),
            col(&|d| Some(d.code_version.clone())),
        ],
    )?;
    session.register_rows("log.audit", schema, vec![batch]).await
}
