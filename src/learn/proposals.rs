//! Playbook-update proposals (`gtm-loop proposals run`, quarterly): first the readout of every
//! rollout in force, then machine-applicable playbook edits with their evidence, published as
//! `output.proposals` (one Markdown brief each) and `output.readouts`, and logged.
//!
//! Kinds: `reweight` (the fitted risk weights, when they beat the priors on held-out deal-weeks)
//! and `rollback` (undo an approved change whose readout says it hurt). A proposal's id is the
//! finding it rests on and the playbook version it edits, so the same finding is filed once; a
//! proposal goes stale when the playbook moves on, and the next run re-evaluates it against the
//! new version (a new id). A finding whose change was read out as "no detectable effect" or
//! "hurt" is not proposed again until its evidence changes.

use std::sync::Arc;

use chrono::NaiveDate;
use datafusion::arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::layers::LakeSession;
use crate::layers::columns::strings;
use crate::learn::approvals::{self, Decision};
use crate::learn::playbooks::{self, Change};
use crate::learn::readout::{self, Readout, Target};
use crate::outputs::decision_log::{self, Record, record_id};
use crate::outputs::run_writer::InputFingerprint;

/// The outcome every rollout is read out on, unless a proposal says otherwise.
pub const DEFAULT_TARGET: Target = Target { horizon_days: 120, minimum_effect: 0.10 };

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    pub proposal_id: String,
    pub kind: String,
    /// What the proposal rests on (the same finding is filed once per playbook version).
    pub finding_key: String,
    pub title: String,
    /// The org unit it applies to: company, region:<role>, manager:<user>.
    pub scope: String,
    pub base_playbook_hash: String,
    pub base_playbook_label: String,
    pub changes: Vec<Change>,
    /// The rows and figures it rests on.
    pub evidence: serde_json::Value,
    /// The data those were computed from.
    pub inputs: Vec<InputFingerprint>,
    pub effect_measure: String,
    pub effect: Option<f64>,
    pub effect_low: Option<f64>,
    pub effect_high: Option<f64>,
    pub affected_deals: i64,
    pub affected_sellers: i64,
    pub expected_impact: String,
    pub confidence: String,
    pub explanation: String,
    pub target: Target,
    pub computed_as_of: String,
    pub rolls_back: Option<String>,
    /// Hash of everything above: what an approval is an approval of.
    pub content_hash: String,
}

impl Proposal {
    fn seal(mut self) -> Proposal {
        // In key order, as `playbook diff` lists them.
        self.changes.sort_by(|a, b| a.path.cmp(&b.path));
        self.content_hash.clear();
        let text = serde_json::to_string(&self).unwrap_or_default();
        self.content_hash = record_id(&[&text]);
        self
    }

    /// The brief a manager reads before deciding.
    pub fn brief(&self, status: &str) -> String {
        let f = |v: Option<f64>| v.map(|v| format!("{v:.3}")).unwrap_or_else(|| "n/a".into());
        let mut s = format!(
            "# Proposal {}: {}\n\n- status: {status}\n- kind: {} · scope: {} · confidence: {}\n- edits playbook {} ({})\n- computed as of {} · content hash {}\n\n## Why\n\n{}\n\n## The change\n\n```\n",
            self.proposal_id,
            self.title,
            self.kind,
            self.scope,
            self.confidence,
            self.base_playbook_label,
            self.base_playbook_hash,
            self.computed_as_of,
            self.content_hash,
            self.explanation
        );
        for c in &self.changes {
            s.push_str(&c.line());
            s.push('\n');
        }
        s.push_str(&format!(
            "```\n\n## Evidence\n\n- {}: {} (95% CI {} to {})\n- reaches {} open deals of {} sellers\n- expected impact: {}\n- read out on: deals won within {} days of creation; worth acting on: {:+.1} pts\n\n```json\n{}\n```\n\nInputs:\n\n",
            self.effect_measure,
            f(self.effect),
            f(self.effect_low),
            f(self.effect_high),
            self.affected_deals,
            self.affected_sellers,
            self.expected_impact,
            self.target.horizon_days,
            100.0 * self.target.minimum_effect,
            serde_json::to_string_pretty(&self.evidence).unwrap_or_default()
        ));
        for i in &self.inputs {
            s.push_str(&format!(
                "- {}: {} files, {} bytes, fingerprint {}\n",
                i.table, i.files, i.bytes, i.fingerprint
            ));
        }
        s.push_str(&format!(
            "\nDecide: `gtm-loop proposals approve {id} --by USER --note ...` or `gtm-loop proposals reject {id} --by USER --reason ...` (the scope's manager or someone above them).\n",
            id = self.proposal_id
        ));
        s
    }
}

async fn rows(session: &LakeSession, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
    let mut out = Vec::new();
    for b in session.ctx.sql(sql).await?.collect().await? {
        let cols: Vec<Vec<Option<String>>> =
            (0..b.num_columns()).map(|i| strings(b.column(i))).collect::<Result<_>>()?;
        for r in 0..b.num_rows() {
            out.push(cols.iter().map(|c| c[r].clone()).collect());
        }
    }
    Ok(out)
}

fn num(v: &Option<String>) -> Option<f64> {
    v.as_deref().and_then(|s| s.parse().ok())
}

async fn open_deals(session: &LakeSession) -> Result<(i64, i64)> {
    let r = rows(
        session,
        "SELECT CAST(COUNT(*) AS VARCHAR), CAST(COUNT(DISTINCT owner_id) AS VARCHAR) FROM mart.deal_context",
    )
    .await?;
    let v = r.first().cloned().unwrap_or_default();
    Ok((
        num(&v.first().cloned().flatten()).unwrap_or(0.0) as i64,
        num(&v.get(1).cloned().flatten()).unwrap_or(0.0) as i64,
    ))
}

/// The reweight proposal from the newest risk-weight fit for the current playbook, when it beat
/// the priors; otherwise None with the reason.
async fn reweight(
    session: &LakeSession,
    base_text: &str,
    base_hash: &str,
    as_of: NaiveDate,
) -> Result<std::result::Result<Proposal, String>> {
    if !session.ctx.table_exist("output.risk_weights").unwrap_or(false) {
        return Ok(Err("no fitted risk weights yet (gtm-loop models fits them)".into()));
    }
    let sql = format!(
        "SELECT term, CAST(prior_weight AS VARCHAR), CAST(fitted_weight AS VARCHAR), CAST(beats_priors AS VARCHAR), \
           CAST(prior_log_loss AS VARCHAR), CAST(fitted_log_loss AS VARCHAR), CAST(log_loss_difference_low AS VARCHAR), \
           CAST(log_loss_difference_high AS VARCHAR), CAST(prior_auc AS VARCHAR), CAST(fitted_auc AS VARCHAR), \
           CAST(test_rows AS VARCHAR), model_version, fitted_as_of, verdict, CAST(train_rows_with_term AS VARCHAR) \
         FROM output.risk_weights WHERE playbook_hash = '{base_hash}' AND fitted_as_of <= '{as_of}' \
           AND fitted_as_of = (SELECT MAX(fitted_as_of) FROM output.risk_weights WHERE playbook_hash = '{base_hash}' AND fitted_as_of <= '{as_of}') \
         ORDER BY term"
    );
    let fit = rows(session, &sql).await?;
    let Some(first) = fit.first() else {
        return Ok(Err(format!("no risk weights fitted on or before {as_of} for playbook {base_hash}")));
    };
    let s = |i: usize| first[i].clone().unwrap_or_default();
    if s(3) != "true" {
        return Ok(Err(format!("the fitted risk weights ({}, {}) did not beat the priors: {}", s(11), s(12), s(13))));
    }
    let flat = playbooks::flatten(base_text)?;
    let round = |v: f64| (v * 100.0).round() / 100.0;
    let mut changes = Vec::new();
    let mut moved = Vec::new();
    for r in &fit {
        let (Some(term), Some(prior), Some(fitted)) = (r[0].clone(), num(&r[1]), num(&r[2])) else { continue };
        if (round(fitted) - prior).abs() < 0.05 {
            continue;
        }
        let path = if term == "(intercept)" { "scoring.base_logit".to_string() } else { format!("flag.{term}.weight") };
        let Some(before) = flat.get(&path).cloned() else { continue };
        let after = playbooks::literal(&toml::Value::Float(round(fitted)));
        if before != after {
            if term != "(intercept)" {
                moved.push(format!("{term} {prior:.2} -> {:.2}", round(fitted)));
            }
            changes.push(Change { path, before: Some(before), after: Some(after) });
        }
    }
    if changes.is_empty() {
        return Ok(Err("the fitted weights are within 0.05 of the playbook's: nothing to change".into()));
    }
    let (deals, sellers) = open_deals(session).await?;
    let (prior_ll, fitted_ll, lo, hi, prior_auc, fitted_auc, test_rows) = (
        num(&first[4]),
        num(&first[5]),
        num(&first[6]),
        num(&first[7]),
        num(&first[8]),
        num(&first[9]),
        num(&first[10]),
    );
    let runs = crate::outputs::registry::committed_runs(&session.lake).await?;
    let inputs = runs
        .iter()
        .rev()
        .find(|m| m.job == "risk_weights" && m.as_of == s(12))
        .map(|m| m.inputs.clone())
        .unwrap_or_default();
    let confident = hi.is_some_and(|h| h < -0.05) && test_rows.is_some_and(|n| n >= 1000.0);
    let evidence = serde_json::json!({
        "source": "output.risk_weights",
        "model_version": s(11),
        "fitted_as_of": s(12),
        "verdict": s(13),
        "test_rows": test_rows,
        "prior_log_loss": prior_ll, "fitted_log_loss": fitted_ll,
        "prior_auc": prior_auc, "fitted_auc": fitted_auc,
        "terms": fit.iter().map(|r| serde_json::json!({"term": r[0], "prior": num(&r[1]), "fitted": num(&r[2]), "train_rows_with_term": num(&r[14])})).collect::<Vec<_>>(),
    });
    let explanation = format!(
        "The risk score adds up practitioner guesses for each flag. Fitted on our own deals (which flagged deals were later lost or slipped), some flags matter more and some less than guessed: {}. On later deals the fitted weights predicted trouble better than the guesses (log-loss {} against {}, AUC {} against {}). Approving re-ranks which deals are flagged first and which move each seller is given; 20% of sellers keep the current weights, so a later readout can show whether win rates moved.",
        if moved.is_empty() { "only the base rate moves".to_string() } else { moved.join(", ") },
        fitted_ll.map(|v| format!("{v:.3}")).unwrap_or_default(),
        prior_ll.map(|v| format!("{v:.3}")).unwrap_or_default(),
        fitted_auc.map(|v| format!("{v:.3}")).unwrap_or_default(),
        prior_auc.map(|v| format!("{v:.3}")).unwrap_or_default(),
    );
    Ok(Ok(Proposal {
        proposal_id: record_id(&["proposal", "reweight", "risk_weights", base_hash]),
        kind: "reweight".into(),
        finding_key: "risk_weights".into(),
        title: format!("Re-weight the risk flags from the fit {} ({})", s(11), s(12)),
        scope: "company".into(),
        base_playbook_hash: base_hash.to_string(),
        base_playbook_label: playbooks::label(base_text),
        changes,
        evidence,
        inputs,
        effect_measure: "held-out log-loss, fitted minus priors (negative: better predictions)".into(),
        effect: match (fitted_ll, prior_ll) {
            (Some(f), Some(p)) => Some(f - p),
            _ => None,
        },
        effect_low: lo,
        effect_high: hi,
        affected_deals: deals,
        affected_sellers: sellers,
        expected_impact: format!(
            "ranking of risky deals: AUC {} -> {} on held-out deal-weeks; the effect on win rates is unknown until the holdout readout (worth acting on: {:+.0} pts)",
            prior_auc.map(|v| format!("{v:.3}")).unwrap_or_default(),
            fitted_auc.map(|v| format!("{v:.3}")).unwrap_or_default(),
            100.0 * DEFAULT_TARGET.minimum_effect
        ),
        confidence: if confident { "high" } else { "medium" }.into(),
        explanation,
        target: DEFAULT_TARGET,
        computed_as_of: as_of.to_string(),
        rolls_back: None,
        content_hash: String::new(),
    }
    .seal()))
}

/// Every proposal ever published, the newest computation of each id.
pub async fn published(session: &LakeSession) -> Result<Vec<Proposal>> {
    if !session.ctx.table_exist("output.proposals").unwrap_or(false) {
        return Ok(Vec::new());
    }
    let mut out: Vec<Proposal> = Vec::new();
    for r in rows(session, "SELECT proposal_json FROM output.proposals ORDER BY computed_as_of, proposal_id").await? {
        if let Some(p) = r[0].as_deref().and_then(|j| serde_json::from_str::<Proposal>(j).ok()) {
            out.retain(|q| q.proposal_id != p.proposal_id);
            out.push(p);
        }
    }
    Ok(out)
}

pub async fn find(session: &LakeSession, id: &str) -> Result<Proposal> {
    let all = published(session).await?;
    let hits: Vec<&Proposal> = all.iter().filter(|p| p.proposal_id.starts_with(id)).collect();
    match hits[..] {
        [one] => Ok(one.clone()),
        [] => Err(Error::Other(format!(
            "no proposal {id} in output.proposals; `gtm-loop proposals list` shows them ({} published)",
            all.len()
        ))),
        _ => Err(Error::Other(format!("{id} matches {} proposals: give more of the id", hits.len()))),
    }
}

/// A proposal's status: its decision, else stale when the playbook moved on, else open.
pub fn status(p: &Proposal, decisions: &[Decision], current: &str) -> String {
    if let Some(d) = decisions.iter().find(|d| d.proposal_id == p.proposal_id) {
        return format!("{} by {} ({})", d.decision, d.by_name, &d.decided_at[..10.min(d.decided_at.len())]);
    }
    if p.base_playbook_hash != current {
        return format!(
            "stale: computed against {}; re-evaluated against {current} by the next proposals run",
            p.base_playbook_hash
        );
    }
    "open".into()
}

pub fn proposal_schema() -> SchemaRef {
    let s = |n: &str| Field::new(n, DataType::Utf8, true);
    let f = |n: &str| Field::new(n, DataType::Float64, true);
    Arc::new(Schema::new(vec![
        s("proposal_id"),
        s("kind"),
        s("title"),
        s("scope"),
        s("status"),
        s("base_playbook_hash"),
        s("base_playbook_label"),
        s("changes"),
        s("effect_measure"),
        f("effect"),
        f("effect_low"),
        f("effect_high"),
        f("affected_deals"),
        f("affected_sellers"),
        s("expected_impact"),
        s("confidence"),
        s("explanation"),
        s("rolls_back"),
        s("content_hash"),
        s("computed_as_of"),
        s("proposal_json"),
    ]))
}

fn proposal_batch(ps: &[(Proposal, String)]) -> Result<RecordBatch> {
    let s = |f: &dyn Fn(&Proposal, &str) -> Option<String>| -> ArrayRef {
        Arc::new(StringArray::from(ps.iter().map(|(p, st)| f(p, st)).collect::<Vec<_>>()))
    };
    let n = |f: &dyn Fn(&Proposal) -> Option<f64>| -> ArrayRef {
        Arc::new(Float64Array::from(ps.iter().map(|(p, _)| f(p)).collect::<Vec<_>>()))
    };
    Ok(RecordBatch::try_new(
        proposal_schema(),
        vec![
            s(&|p, _| Some(p.proposal_id.clone())),
            s(&|p, _| Some(p.kind.clone())),
            s(&|p, _| Some(p.title.clone())),
            s(&|p, _| Some(p.scope.clone())),
            s(&|_, st| Some(st.to_string())),
            s(&|p, _| Some(p.base_playbook_hash.clone())),
            s(&|p, _| Some(p.base_playbook_label.clone())),
            s(&|p, _| Some(p.changes.iter().map(Change::line).collect::<Vec<_>>().join("\n"))),
            s(&|p, _| Some(p.effect_measure.clone())),
            n(&|p| p.effect),
            n(&|p| p.effect_low),
            n(&|p| p.effect_high),
            n(&|p| Some(p.affected_deals as f64)),
            n(&|p| Some(p.affected_sellers as f64)),
            s(&|p, _| Some(p.expected_impact.clone())),
            s(&|p, _| Some(p.confidence.clone())),
            s(&|p, _| Some(p.explanation.clone())),
            s(&|p, _| p.rolls_back.clone()),
            s(&|p, _| Some(p.content_hash.clone())),
            s(&|p, _| Some(p.computed_as_of.clone())),
            s(&|p, _| serde_json::to_string(p).ok()),
        ],
    )?)
}

pub fn readout_schema() -> SchemaRef {
    let s = |n: &str| Field::new(n, DataType::Utf8, true);
    let f = |n: &str| Field::new(n, DataType::Float64, true);
    Arc::new(Schema::new(vec![
        s("proposal_id"),
        s("effective_from"),
        s("design"),
        s("verdict"),
        f("estimate"),
        f("low"),
        f("high"),
        f("p"),
        f("randomisation_p"),
        f("minimum_detectable_effect"),
        f("minimum_effect"),
        s("enough_by"),
        f("treated_deals"),
        f("holdout_deals"),
        f("treated_sellers"),
        f("holdout_sellers"),
        f("censored_deals"),
        s("warnings"),
        s("sentence"),
        s("readout_json"),
    ]))
}

fn readout_batch(rs: &[Readout]) -> Result<RecordBatch> {
    let s = |f: &dyn Fn(&Readout) -> Option<String>| -> ArrayRef {
        Arc::new(StringArray::from(rs.iter().map(f).collect::<Vec<_>>()))
    };
    let n = |f: &dyn Fn(&Readout) -> Option<f64>| -> ArrayRef {
        Arc::new(Float64Array::from(rs.iter().map(f).collect::<Vec<_>>()))
    };
    Ok(RecordBatch::try_new(
        readout_schema(),
        vec![
            s(&|r| Some(r.proposal_id.clone())),
            s(&|r| Some(r.effective_from.clone())),
            s(&|r| Some(r.design.clone())),
            s(&|r| Some(r.verdict.clone())),
            n(&|r| r.estimate),
            n(&|r| r.low),
            n(&|r| r.high),
            n(&|r| r.p),
            n(&|r| r.randomisation_p),
            n(&|r| r.minimum_detectable_effect),
            n(&|r| Some(r.minimum_effect)),
            s(&|r| r.enough_by.clone()),
            n(&|r| Some(r.treated_deals as f64)),
            n(&|r| Some(r.holdout_deals as f64)),
            n(&|r| Some(r.treated_sellers as f64)),
            n(&|r| Some(r.holdout_sellers as f64)),
            n(&|r| Some(r.censored_deals as f64)),
            s(&|r| Some(r.warnings.join("; "))),
            s(&|r| Some(r.sentence.clone())),
            s(&|r| serde_json::to_string(r).ok()),
        ],
    )?)
}

/// The readouts of every rollout in force on the session's date.
pub async fn readouts(session: &LakeSession, as_of: NaiveDate) -> Result<Vec<(Decision, Readout)>> {
    let all = published(session).await?;
    let mut out = Vec::new();
    for d in approvals::decisions(&session.lake).await?.into_iter().filter(|d| {
        d.decision == "approved" && d.effective_from.as_deref().is_some_and(|e| e <= as_of.to_string().as_str())
    }) {
        let target =
            all.iter().find(|p| p.proposal_id == d.proposal_id).map(|p| p.target.clone()).unwrap_or(DEFAULT_TARGET);
        let r = readout::measure(session, &d, &target, as_of).await?;
        out.push((d, r));
    }
    Ok(out)
}

fn readout_record(r: &Readout, recorded_at: &str, playbook: &str) -> Record {
    Record {
        record_id: record_id(&["readout", &r.proposal_id, &r.as_of]),
        kind: "readout".into(),
        as_of_date: r.as_of.clone(),
        recorded_at: recorded_at.to_string(),
        subject_type: "proposal".into(),
        subject_id: r.proposal_id.clone(),
        playbook_version: playbook.to_string(),
        outcome: Some(r.verdict.clone()),
        outcome_value: r.estimate,
        evidence: serde_json::to_string(r).ok(),
        expected_outcome: Some(r.sentence.clone()),
        ..Record::default()
    }
}

pub struct ProposalsRun {
    pub proposals: Vec<Proposal>,
    pub readouts: Vec<Readout>,
    pub text: String,
    pub manifest: crate::outputs::Manifest,
}

/// The quarterly run: readouts, then proposals against the lake's current playbook.
pub async fn run(session: &LakeSession) -> Result<ProposalsRun> {
    let as_of = session
        .as_of
        .0
        .ok_or_else(|| Error::Other("proposals need an explicit as-of date: pass --as-of YYYY-MM-DD".into()))?;
    let lake = &session.lake;
    let plan = approvals::plan(lake, as_of).await?;
    let base_hash = plan.current.clone();
    let base_text = playbooks::text_of(lake, &base_hash).await?;
    let decisions = approvals::decisions(lake).await?;
    let mut run = crate::outputs::RunWriter::begin(lake, "proposals", session.as_of);
    run.record_inputs(session);
    run.set_playbook_version(format!("playbook {} {base_hash}", plan.current_label));
    let mut text = format!("proposals as of {as_of} against playbook {} ({base_hash})\n", plan.current_label);
    let readouts = readouts(session, as_of).await?;
    let earlier = published(session).await?;
    let mut proposals: Vec<Proposal> = Vec::new();
    for (d, r) in &readouts {
        text.push_str(&format!("  readout {}: {}\n", d.proposal_id, r.sentence));
        if r.verdict == "hurt" && d.new_playbook.as_deref() == Some(base_hash.as_str()) {
            let p = Proposal {
                proposal_id: record_id(&["proposal", "rollback", &d.proposal_id, &base_hash]),
                kind: "rollback".into(),
                finding_key: format!("readout:{}", d.proposal_id),
                title: format!("Roll back proposal {}: its readout says it hurt", d.proposal_id),
                scope: d.scope.clone(),
                base_playbook_hash: base_hash.clone(),
                base_playbook_label: plan.current_label.clone(),
                changes: d.changes.iter().map(Change::inverse).collect(),
                evidence: serde_json::to_value(r).unwrap_or_default(),
                inputs: Vec::new(),
                effect_measure: r.outcome.clone(),
                effect: r.estimate,
                effect_low: r.low,
                effect_high: r.high,
                affected_deals: (r.treated_deals + r.holdout_deals) as i64,
                affected_sellers: (r.treated_sellers + r.holdout_sellers) as i64,
                expected_impact: format!("win rate back by about {:+.1} pts", -100.0 * r.estimate.unwrap_or_default()),
                confidence: "high".into(),
                explanation: format!(
                    "The change approved as {} lowered the win rate of the sellers who got it against those held out: {}. Rolling back restores the version before it.",
                    d.proposal_id, r.sentence
                ),
                target: DEFAULT_TARGET,
                computed_as_of: as_of.to_string(),
                rolls_back: Some(d.proposal_id.clone()),
                content_hash: String::new(),
            }
            .seal();
            proposals.push(p);
        }
    }
    match reweight(session, &base_text, &base_hash, as_of).await? {
        Ok(p) => {
            // Not again without new evidence: a read-out change that did not help, with the same fit.
            let same_fit_failed = readouts.iter().any(|(d, r)| {
                (r.verdict == "no detectable effect" || r.verdict == "hurt")
                    && earlier.iter().any(|q| {
                        q.proposal_id == d.proposal_id
                            && q.finding_key == p.finding_key
                            && q.evidence["model_version"] == p.evidence["model_version"]
                    })
            });
            if same_fit_failed {
                text.push_str("  reweight: not proposed again: the same fit was rolled out and did not help\n");
            } else {
                proposals.push(p);
            }
        }
        Err(why) => text.push_str(&format!("  reweight: no proposal: {why}\n")),
    }
    let mut rows = Vec::new();
    for p in &proposals {
        let st = status(p, &decisions, &base_hash);
        run.write_artifact(&format!("proposal_{}.md", p.proposal_id), p.brief(&st).into_bytes()).await?;
        text.push_str(&format!(
            "  {} {} [{}] {}: {} edits, {}\n",
            p.proposal_id,
            p.kind,
            st,
            p.title,
            p.changes.len(),
            p.confidence
        ));
        rows.push((p.clone(), st));
    }
    for q in earlier
        .iter()
        .filter(|q| q.base_playbook_hash != base_hash && !decisions.iter().any(|d| d.proposal_id == q.proposal_id))
    {
        text.push_str(&format!(
            "  {} is stale (computed against {}); re-evaluated above\n",
            q.proposal_id, q.base_playbook_hash
        ));
    }
    run.write_table("proposals", proposal_schema(), &[proposal_batch(&rows)?]).await?;
    let rs: Vec<Readout> = readouts.iter().map(|(_, r)| r.clone()).collect();
    run.write_table("readouts", readout_schema(), &[readout_batch(&rs)?]).await?;
    let manifest = run.commit().await?;
    let records: Vec<Record> = rs
        .iter()
        .map(|r| readout_record(r, &manifest.committed_at, &format!("playbook {}", plan.current_label)))
        .collect();
    let logged = decision_log::append(session, records).await?;
    text.push_str(&format!("{} proposals, {} readouts ({logged} new log records)\n", proposals.len(), rs.len()));
    Ok(ProposalsRun { proposals, readouts: rs, text, manifest })
}
