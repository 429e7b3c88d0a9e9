//! The manager's approval gate and its append-only audit log (`log/audit/`): who may approve a
//! proposal comes from the org (the scope unit's head or anyone above them on the `manager_id`
//! line), every decision is one JSON file written with a single put, and an approval writes the
//! next playbook version and the rollout's seller assignment before its record, which commits it.
//!
//! Kill safety: the record is the commit point. A process killed before it leaves at most an
//! unreferenced playbook file (content-addressed, harmless, re-written identically on retry); a
//! kill during the put leaves a staged file that readers ignore (not `.json`); after it, the
//! decision is whole. Nothing is ever rewritten or deleted.

use std::collections::{BTreeMap, HashMap};

use chrono::{NaiveDate, SecondsFormat, Utc};

use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::layers::LakeSession;
use crate::layers::org;
use crate::learn::playbooks;
use crate::learn::proposals::Proposal;
use crate::outputs::decision_log::record_id;
use crate::stats::experiment::is_treated;

pub use crate::outputs::audit_log::{DIR, Decision, decisions};

use crate::outputs::cadence::kill_point;

async fn append(lake: &Lake, d: &Decision) -> Result<String> {
    let stamp: String = d.decided_at.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    let name = format!("{DIR}/{stamp}-{}.json", d.record_id);
    let bytes = serde_json::to_vec_pretty(d).map_err(|e| Error::Other(e.to_string()))?;
    if std::env::var("GTM_LOOP_KILL_AT").is_ok_and(|p| p == "decision:mid_write") {
        // What an interrupted staged upload leaves: half the bytes under a temporary name.
        lake.put(&format!("{name}#staged"), bytes[..bytes.len() / 2].to_vec()).await?;
        kill_point("decision:mid_write");
    }
    lake.put(&name, bytes).await?;
    Ok(name)
}

/// Who may decide on a change scoped to `scope`: the unit's head and everyone above them on the
/// reporting line; for the company, its head (the one user at the root role with reports) or,
/// where no single one exists, every user with reports and no manager. A unit without a head
/// falls back to its parent unit's approvers.
pub async fn approvers(session: &LakeSession, scope: &str) -> Result<Vec<(String, String)>> {
    let units = org::memberships(session).await?;
    let users = org::users(session).await?;
    let by_id: HashMap<&str, (&str, Option<&str>)> =
        users.iter().map(|(id, name, m)| (id.as_str(), (name.as_str(), m.as_deref()))).collect();
    let unit = units.iter().find(|m| m.unit_id == scope).ok_or_else(|| {
        let known: std::collections::BTreeSet<&str> =
            units.iter().filter(|m| m.level != "seller").map(|m| m.unit_id.as_str()).collect();
        Error::Refused(format!(
            "no org unit '{scope}' as of the decision date; units: {}",
            known.into_iter().collect::<Vec<_>>().join(", ")
        ))
    })?;
    let chain = |head: &str| -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut cur = Some(head);
        while let Some(u) = cur {
            if out.iter().any(|(id, _): &(String, String)| id == u) {
                break; // a cycle in manager_id
            }
            let Some((name, manager)) = by_id.get(u) else { break };
            out.push((u.to_string(), name.to_string()));
            cur = *manager;
        }
        out
    };
    if let Some(head) = unit.head_id.as_deref() {
        return Ok(chain(head));
    }
    if unit.level == "company" {
        let managers: std::collections::BTreeSet<&str> = users.iter().filter_map(|u| u.2.as_deref()).collect();
        return Ok(users
            .iter()
            .filter(|(id, _, m)| managers.contains(id.as_str()) && m.as_deref().is_none_or(|m| !by_id.contains_key(m)))
            .map(|(id, name, _)| (id.clone(), name.clone()))
            .collect());
    }
    let parent = unit.parent_unit_id.clone().unwrap_or_else(|| "company".into());
    Box::pin(approvers(session, &parent)).await
}

/// The sellers a change scoped to `scope` reaches: the unit's members.
pub async fn members(session: &LakeSession, scope: &str) -> Result<Vec<String>> {
    let mut out: Vec<String> =
        org::memberships(session).await?.into_iter().filter(|m| m.unit_id == scope).map(|m| m.member_id).collect();
    out.sort();
    out.dedup();
    Ok(out)
}

/// Whether `narrow` lies within `wide` (the same unit, or one of its descendants).
async fn within(session: &LakeSession, narrow: &str, wide: &str) -> Result<bool> {
    if wide == "company" || narrow == wide {
        return Ok(true);
    }
    let units = org::memberships(session).await?;
    let parent: HashMap<&str, &str> =
        units.iter().filter_map(|m| m.parent_unit_id.as_deref().map(|p| (m.unit_id.as_str(), p))).collect();
    let mut cur = narrow;
    for _ in 0..64 {
        match parent.get(cur) {
            Some(p) if *p == wide => return Ok(true),
            Some(p) => cur = p,
            None => return Ok(false),
        }
    }
    Ok(false)
}

/// What an approval is asked to do.
#[derive(Debug, Clone)]
pub struct ApproveRequest {
    pub by: String,
    pub note: String,
    /// A narrower scope than the proposal's (a manager adopting it for their team).
    pub scope: Option<String>,
    pub holdout_share: f64,
    pub effective_from: NaiveDate,
}

async fn check(
    session: &LakeSession,
    proposal: &Proposal,
    by: &str,
    scope: &str,
    current: &str,
) -> Result<(String, Vec<Decision>)> {
    let lake = &session.lake;
    let past = decisions(lake).await?;
    if let Some(d) = past.iter().find(|d| d.proposal_id == proposal.proposal_id) {
        return Err(Error::Refused(format!(
            "proposal {} was already {} by {} on {} ({}); a decision is final, file a new proposal",
            proposal.proposal_id, d.decision, d.by_name, d.decided_at, d.why
        )));
    }
    if proposal.base_playbook_hash != current {
        return Err(Error::Refused(format!(
            "proposal {} is stale: it was computed against playbook {} ({}) and the lake's playbook is now {current}; \
             the next `gtm-loop proposals run` re-evaluates it against the current version",
            proposal.proposal_id, proposal.base_playbook_label, proposal.base_playbook_hash
        )));
    }
    let who = approvers(session, scope).await?;
    let Some((_, name)) = who.iter().find(|(id, _)| id == by) else {
        let known = org::users(session).await?.into_iter().find(|u| u.0 == by);
        let who_text = if who.is_empty() {
            "nobody in the org (no head of the company: set user.manager_id and the role tree)".to_string()
        } else {
            who.iter().map(|(id, n)| format!("{n} ({id})")).collect::<Vec<_>>().join(", ")
        };
        return Err(Error::Refused(format!(
            "{} may not decide on a change scoped to {scope}: only its head or someone above them on the reporting line may. Who can: {who_text}",
            known.map(|u| format!("{} ({by})", u.1)).unwrap_or_else(|| format!("{by} (not a user of this lake)"))
        )));
    };
    Ok((name.clone(), past))
}

/// Approves a proposal: checks authority and staleness, writes playbook vN+1 and the rollout's
/// assignment, then the audit record (the commit). Returns the decision.
pub async fn approve(
    session: &LakeSession,
    proposal: &Proposal,
    current: &str,
    request: &ApproveRequest,
) -> Result<Decision> {
    let scope = request.scope.clone().unwrap_or_else(|| proposal.scope.clone());
    if !within(session, &scope, &proposal.scope).await? {
        return Err(Error::Refused(format!(
            "scope {scope} is not within the proposal's scope {}; approve it for {} or a unit under it",
            proposal.scope, proposal.scope
        )));
    }
    if !(0.0..1.0).contains(&request.holdout_share) {
        return Err(Error::Config {
            file: "--holdout".into(),
            message: format!("{} is not a share in [0, 1)", request.holdout_share),
        });
    }
    let (by_name, _) = check(session, proposal, &request.by, &scope, current).await?;
    let lake = &session.lake;
    let parent_text = playbooks::text_of(lake, current).await?;
    let label = playbooks::next_label(&playbooks::label(&parent_text));
    let decided_at = Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true);
    let header = format!(
        "Playbook {label}: proposal {} ({}), approved by {by_name} ({}) on {decided_at} for {scope}, effective {}.\nNote: {}\nParent: {current}",
        proposal.proposal_id, proposal.title, request.by, request.effective_from, request.note
    );
    let text = playbooks::apply(&parent_text, &proposal.changes, &label, &header)?;
    kill_point("approve:before_playbook");
    let new_hash = playbooks::store(lake, &text).await?;
    kill_point("approve:after_playbook");
    let share = 1.0 - request.holdout_share;
    let (mut treated, mut holdout) = (Vec::new(), Vec::new());
    for m in members(session, &scope).await? {
        if is_treated(&proposal.proposal_id, &m, share) {
            treated.push(m);
        } else {
            holdout.push(m);
        }
    }
    let d = Decision {
        record_id: record_id(&["decision", &proposal.proposal_id]),
        decision: "approved".into(),
        proposal_id: proposal.proposal_id.clone(),
        proposal_hash: proposal.content_hash.clone(),
        by_user: request.by.clone(),
        by_name,
        decided_at,
        why: request.note.clone(),
        scope,
        parent_playbook: current.to_string(),
        changes: proposal.changes.clone(),
        new_playbook: Some(new_hash),
        new_label: Some(label),
        effective_from: Some(request.effective_from.to_string()),
        treated_share: Some(share),
        treated,
        holdout,
        code_version: crate::outputs::CODE_VERSION.to_string(),
    };
    append(lake, &d).await?;
    kill_point("approve:after_record");
    Ok(d)
}

/// Rejects a proposal with a reason (the same authority as approving).
pub async fn reject(
    session: &LakeSession,
    proposal: &Proposal,
    current: &str,
    by: &str,
    reason: &str,
) -> Result<Decision> {
    if reason.trim().is_empty() {
        return Err(Error::Config { file: "--reason".into(), message: "say why the proposal is rejected".into() });
    }
    let (by_name, _) = check(session, proposal, by, &proposal.scope, current).await?;
    let d = Decision {
        record_id: record_id(&["decision", &proposal.proposal_id]),
        decision: "rejected".into(),
        proposal_id: proposal.proposal_id.clone(),
        proposal_hash: proposal.content_hash.clone(),
        by_user: by.to_string(),
        by_name,
        decided_at: Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true),
        why: reason.to_string(),
        scope: proposal.scope.clone(),
        parent_playbook: current.to_string(),
        changes: proposal.changes.clone(),
        new_playbook: None,
        new_label: None,
        effective_from: None,
        treated_share: None,
        treated: Vec::new(),
        holdout: Vec::new(),
        code_version: crate::outputs::CODE_VERSION.to_string(),
    };
    append(&session.lake, &d).await?;
    kill_point("reject:after_record");
    Ok(d)
}

/// The playbooks a run uses: one per seller during a rollout.
#[derive(Debug, Clone)]
pub struct PlaybookPlan {
    /// The newest version in force on the run date (what the run's manifest names).
    pub current: String,
    pub current_label: String,
    /// The version each seller named in an assignment uses.
    pub by_seller: BTreeMap<String, String>,
    /// Sellers not named in any assignment use this one (new hires, unowned deals): the version
    /// before every rollout still holding a share back, so no one is treated by accident.
    pub default: String,
    /// The approvals in force, oldest first.
    pub approvals: Vec<Decision>,
    pub why: String,
}

impl PlaybookPlan {
    pub fn for_seller(&self, seller: &str) -> &str {
        self.by_seller.get(seller).map(String::as_str).unwrap_or(&self.default)
    }

    pub fn versions(&self) -> Vec<String> {
        let mut v: Vec<String> =
            self.by_seller.values().cloned().chain([self.current.clone(), self.default.clone()]).collect();
        v.sort();
        v.dedup();
        v
    }
}

/// The lake's current playbook (the newest approval, whatever its date), for staleness.
pub async fn current_version(lake: &Lake) -> Result<String> {
    Ok(decisions(lake)
        .await?
        .into_iter()
        .rfind(|d| d.decision == "approved")
        .and_then(|d| d.new_playbook)
        .unwrap_or_else(|| playbooks::hash(crate::jobs::risk::builtin_text())))
}

/// The versions in force on `as_of`: every approval effective by then, the newest last; a seller
/// treated by the newest uses it, one held out (or out of its scope) falls back to the version its
/// parent gave them, recursively, down to the seed.
pub async fn plan(lake: &Lake, as_of: NaiveDate) -> Result<PlaybookPlan> {
    let seed = playbooks::hash(crate::jobs::risk::builtin_text());
    let mut approvals: Vec<Decision> = decisions(lake)
        .await?
        .into_iter()
        .filter(|d| {
            d.decision == "approved" && d.effective_from.as_deref().is_some_and(|e| e <= as_of.to_string().as_str())
        })
        .collect();
    approvals.sort_by(|a, b| (&a.effective_from, &a.decided_at).cmp(&(&b.effective_from, &b.decided_at)));
    let Some(last) = approvals.last() else {
        return Ok(PlaybookPlan {
            current: seed.clone(),
            current_label: "v1".into(),
            by_seller: BTreeMap::new(),
            default: seed,
            approvals,
            why: "the seed playbook (no approved change in force)".into(),
        });
    };
    let version_for = |seller: Option<&str>, idx: usize| -> String {
        let mut i = idx;
        loop {
            let a = &approvals[i];
            if seller.is_some_and(|s| a.treated.iter().any(|t| t == s)) {
                return a.new_playbook.clone().unwrap_or_default();
            }
            match approvals[..i].iter().rposition(|p| p.new_playbook.as_deref() == Some(a.parent_playbook.as_str())) {
                Some(j) => i = j,
                None => return a.parent_playbook.clone(),
            }
        }
    };
    let current = last.new_playbook.clone().unwrap_or_default();
    let mut sellers: Vec<&str> =
        approvals.iter().flat_map(|a| a.treated.iter().chain(&a.holdout)).map(String::as_str).collect();
    sellers.sort();
    sellers.dedup();
    let by_seller: BTreeMap<String, String> =
        sellers.into_iter().map(|s| (s.to_string(), version_for(Some(s), approvals.len() - 1))).collect();
    let default = version_for(None, approvals.len() - 1);
    let why = format!(
        "playbook {} ({current}) from proposal {}, effective {}; {} sellers on an earlier version (holdout or out of scope), other owners on {default}",
        last.new_label.clone().unwrap_or_default(),
        last.proposal_id,
        last.effective_from.clone().unwrap_or_default(),
        by_seller.values().filter(|v| **v != current).count()
    );
    Ok(PlaybookPlan {
        current,
        current_label: last.new_label.clone().unwrap_or_default(),
        by_seller,
        default,
        approvals,
        why,
    })
}
