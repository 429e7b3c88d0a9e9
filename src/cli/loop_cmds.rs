//! The learning loop's commands: `proposals run|list|show|approve|reject|readout` and
//! `playbook show|history|diff`, plus which playbook versions a run uses (`--playbook`,
//! `--playbook-version`, or the lake's approvals with their holdouts).

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use chrono::NaiveDate;
use clap::Subcommand;

use crate::cli::refuse_broken;
use crate::error::{Error, Result};
use crate::jobs::risk::{self, Assignment};
use crate::lake::Lake;
use crate::layers::AsOf;
use crate::learn::approvals::{self, ApproveRequest};
use crate::learn::{playbooks, proposals};

#[derive(Subcommand, Debug)]
pub enum ProposalsCommand {
    /// Read out every rollout in force, then propose playbook changes against the current version.
    Run {
        #[arg(long)]
        as_of: NaiveDate,
    },
    /// Every proposal with its status.
    List,
    /// One proposal's brief (an id or a unique prefix).
    Show { id: String },
    /// Approve: writes the next playbook version and rolls it out with a holdout.
    Approve {
        id: String,
        /// The approver's user id (the scope's manager or someone above them).
        #[arg(long)]
        by: String,
        #[arg(long, default_value = "")]
        note: String,
        /// Adopt it for a narrower org unit (manager:<user id>, region:<role id>).
        #[arg(long)]
        scope: Option<String>,
        /// Share of the scope's sellers held out on the previous version (0 for none).
        #[arg(long, default_value_t = 0.2)]
        holdout: f64,
        /// First as-of date runs use the new version on (default today); also the date the org is read as of.
        #[arg(long)]
        effective: Option<NaiveDate>,
    },
    /// Reject, with the reason (the same authority as approving).
    Reject {
        id: String,
        #[arg(long)]
        by: String,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        as_of: Option<NaiveDate>,
    },
    /// Measure an approved change: treated vs holdout on its targeted outcome.
    Readout {
        id: String,
        #[arg(long)]
        as_of: NaiveDate,
    },
}

#[derive(Subcommand, Debug)]
pub enum PlaybookCommand {
    /// A version's TOML (a hash, a unique hash prefix or a label; default: the current one).
    Show { version: Option<String> },
    /// Every version: what changed, when, by whom, why, from which proposal.
    History,
    /// The key-level changes from version A to version B.
    Diff { a: String, b: String },
}

/// Resolves a version given as a hash, a hash prefix or a label (v1 is the seed).
pub async fn resolve_version(lake: &Lake, v: &str) -> Result<String> {
    let seed = playbooks::hash(risk::builtin_text());
    let mut known: Vec<(String, String)> = vec![(seed, "v1".into())];
    for d in approvals::decisions(lake).await? {
        if let (Some(h), Some(l)) = (d.new_playbook, d.new_label) {
            known.push((h, l));
        }
    }
    let hits: Vec<&(String, String)> = known.iter().filter(|(h, l)| l == v || h.starts_with(v)).collect();
    let mut hashes: Vec<&String> = hits.iter().map(|(h, _)| h).collect();
    hashes.dedup();
    match hashes[..] {
        [one] => Ok(one.clone()),
        [] => Err(Error::Config {
            file: "--playbook-version".into(),
            message: format!(
                "no playbook version '{v}' in this lake; versions: {}",
                known.iter().map(|(h, l)| format!("{l} {h}")).collect::<Vec<_>>().join(", ")
            ),
        }),
        _ => Err(Error::Config {
            file: "--playbook-version".into(),
            message: format!("'{v}' matches several versions: give more of the hash"),
        }),
    }
}

/// The playbooks a run as of `as_of` uses: a file given on the command line, a pinned version,
/// or the lake's approvals in force (one version per seller during a rollout).
pub async fn assignment(
    lake: &Lake,
    as_of: NaiveDate,
    file: Option<&Path>,
    pinned: Option<&str>,
) -> Result<Assignment> {
    if let Some(f) = file {
        let mut a = Assignment::single(&risk::load(Some(f))?);
        a.note =
            format!("playbook file {} given: the lake's approved versions and rollouts are not applied", f.display());
        return Ok(a);
    }
    if let Some(v) = pinned {
        let h = resolve_version(lake, v).await?;
        let mut a = Assignment::single(&playbooks::load(lake, &h).await?);
        // A pinned version scores as it was written, not with weights fitted since.
        a.own_weights_only = true;
        a.note = format!("pinned to playbook version {h} (--playbook-version): rollouts not applied");
        return Ok(a);
    }
    let plan = approvals::plan(lake, as_of).await?;
    let versions = plan.versions();
    let mut pbs = Vec::new();
    for v in &versions {
        pbs.push(playbooks::load(lake, v).await?);
    }
    let index: HashMap<&str, usize> = versions.iter().enumerate().map(|(i, v)| (v.as_str(), i)).collect();
    Ok(Assignment {
        current: index[plan.current.as_str()],
        default: index[plan.default.as_str()],
        by_seller: plan.by_seller.iter().map(|(s, v)| (s.clone(), index[v.as_str()])).collect(),
        playbooks: pbs,
        note: if plan.approvals.is_empty() { String::new() } else { plan.why.clone() },
        own_weights_only: !plan.approvals.is_empty(),
    })
}

pub async fn proposals_cmd(lake: &Lake, cmd: ProposalsCommand, out: &mut dyn Write) -> Result<()> {
    let today = chrono::Utc::now().date_naive();
    match cmd {
        ProposalsCommand::Run { as_of } => {
            let session = crate::outputs::open_session(lake, AsOf(Some(as_of))).await?;
            refuse_broken(&session, lake)?;
            let run = proposals::run(&session).await?;
            write!(out, "{}", run.text)?;
            writeln!(out, "published run {} (output.proposals, output.readouts)", run.manifest.run_id)?;
        }
        ProposalsCommand::List => {
            let session = crate::outputs::open_session(lake, AsOf(None)).await?;
            let current = approvals::current_version(lake).await?;
            let decisions = approvals::decisions(lake).await?;
            let all = proposals::published(&session).await?;
            if all.is_empty() {
                writeln!(
                    out,
                    "no proposals yet: `gtm-loop proposals run --as-of DATE` files them (after `gtm-loop models`)"
                )?;
            }
            for p in &all {
                writeln!(
                    out,
                    "{}  {:<9} {:<8} {:<7} {}  [{}]",
                    p.proposal_id,
                    p.kind,
                    p.scope,
                    p.confidence,
                    p.title,
                    proposals::status(p, &decisions, &current)
                )?;
            }
        }
        ProposalsCommand::Show { id } => {
            let session = crate::outputs::open_session(lake, AsOf(None)).await?;
            let p = proposals::find(&session, &id).await?;
            let st =
                proposals::status(&p, &approvals::decisions(lake).await?, &approvals::current_version(lake).await?);
            write!(out, "{}", p.brief(&st))?;
        }
        ProposalsCommand::Approve { id, by, note, scope, holdout, effective } => {
            let effective = effective.unwrap_or(today);
            let session = crate::outputs::open_session(lake, AsOf(Some(effective))).await?;
            let p = proposals::find(&session, &id).await?;
            let current = approvals::current_version(lake).await?;
            let req = ApproveRequest { by, note, scope, holdout_share: holdout, effective_from: effective };
            let d = approvals::approve(&session, &p, &current, &req).await?;
            writeln!(
                out,
                "approved {} by {} for {}: playbook {} ({}) from {}, effective {}; {} sellers treated, {} held out on {}",
                d.proposal_id,
                d.by_name,
                d.scope,
                d.new_label.clone().unwrap_or_default(),
                d.new_playbook.clone().unwrap_or_default(),
                d.parent_playbook,
                d.effective_from.clone().unwrap_or_default(),
                d.treated.len(),
                d.holdout.len(),
                d.parent_playbook
            )?;
        }
        ProposalsCommand::Reject { id, by, reason, as_of } => {
            let session = crate::outputs::open_session(lake, AsOf(Some(as_of.unwrap_or(today)))).await?;
            let p = proposals::find(&session, &id).await?;
            let current = approvals::current_version(lake).await?;
            let d = approvals::reject(&session, &p, &current, &by, &reason).await?;
            writeln!(out, "rejected {} by {}: {}", d.proposal_id, d.by_name, d.why)?;
        }
        ProposalsCommand::Readout { id, as_of } => {
            let session = crate::outputs::open_session(lake, AsOf(Some(as_of))).await?;
            let d = approvals::decisions(lake)
                .await?
                .into_iter()
                .find(|d| d.proposal_id.starts_with(&id) && d.decision == "approved")
                .ok_or_else(|| {
                    Error::Other(format!("proposal {id} has no approval: nothing rolled out to read out"))
                })?;
            let target =
                proposals::find(&session, &d.proposal_id).await.map(|p| p.target).unwrap_or(proposals::DEFAULT_TARGET);
            let r = crate::learn::readout::measure(&session, &d, &target, as_of).await?;
            writeln!(out, "readout of {} as of {as_of} (effective {}):", d.proposal_id, r.effective_from)?;
            writeln!(out, "  {}", r.sentence)?;
            for w in &r.warnings {
                writeln!(out, "  warning: {w}")?;
            }
            writeln!(out, "{}", serde_json::to_string_pretty(&r).map_err(|e| Error::Other(e.to_string()))?)?;
        }
    }
    Ok(())
}

pub async fn playbook_cmd(lake: &Lake, cmd: PlaybookCommand, out: &mut dyn Write) -> Result<()> {
    match cmd {
        PlaybookCommand::Show { version } => {
            let h = match version {
                Some(v) => resolve_version(lake, &v).await?,
                None => approvals::current_version(lake).await?,
            };
            write!(out, "{}", playbooks::text_of(lake, &h).await?)?;
        }
        PlaybookCommand::History => {
            let seed = playbooks::hash(risk::builtin_text());
            writeln!(out, "v1 {seed}  the seed playbook (data/playbook.toml)")?;
            for d in approvals::decisions(lake).await? {
                match d.decision.as_str() {
                    "approved" => {
                        writeln!(
                            out,
                            "{} {}  from {} by {} ({}) at {}, effective {}, scope {}, {} treated / {} held out\n    why: {}\n    proposal {}",
                            d.new_label.clone().unwrap_or_default(),
                            d.new_playbook.clone().unwrap_or_default(),
                            d.parent_playbook,
                            d.by_name,
                            d.by_user,
                            d.decided_at,
                            d.effective_from.clone().unwrap_or_default(),
                            d.scope,
                            d.treated.len(),
                            d.holdout.len(),
                            d.why,
                            d.proposal_id
                        )?;
                        for c in &d.changes {
                            writeln!(out, "    {}", c.line())?;
                        }
                    }
                    _ => writeln!(
                        out,
                        "   (rejected proposal {} by {} at {}: {})",
                        d.proposal_id, d.by_name, d.decided_at, d.why
                    )?,
                }
            }
        }
        PlaybookCommand::Diff { a, b } => {
            let (ha, hb) = (resolve_version(lake, &a).await?, resolve_version(lake, &b).await?);
            let (ta, tb) = (playbooks::text_of(lake, &ha).await?, playbooks::text_of(lake, &hb).await?);
            writeln!(out, "playbook {} ({ha}) -> {} ({hb})", playbooks::label(&ta), playbooks::label(&tb))?;
            for c in playbooks::diff(&ta, &tb)? {
                writeln!(out, "{}", c.line())?;
            }
        }
    }
    Ok(())
}
