//! Interventions: every non-green cell of a primary KPI, in its review period, becomes one
//! specific action with an owner and a follow-up date, logged to the decision-trace log; later
//! runs attach whether the KPI recovered by the follow-up.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{Days, NaiveDate};
use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::error::Result;
use crate::jobs::kpi::catalog::{Card, Catalog, Job, Kpi};
use crate::jobs::kpi::model::{Cell, Unit, fmt_value};
use crate::layers::LakeSession;
use crate::layers::columns::strings;
use crate::outputs::Manifest;
use crate::outputs::decision_log::{Record, record_id};
use crate::outputs::registry::{committed_runs, latest_table_file};

pub const LEADERSHIP: &str = "leadership";

#[derive(Debug, Clone, PartialEq)]
pub struct Intervention {
    pub intervention_id: String,
    pub kpi_id: String,
    pub kpi_name: String,
    pub grain: String,
    pub period_start: NaiveDate,
    pub level: String,
    pub unit_id: String,
    pub unit_name: String,
    pub status: String,
    pub action: String,
    pub owner_id: Option<String>,
    pub owner_name: String,
    pub follow_up_date: NaiveDate,
    pub evidence: String,
    pub expected_outcome: String,
}

/// The review cell of each unit: the KPI's own grain, the last complete period.
pub fn review_period(cells: &[Cell], kpi: &Kpi) -> Option<NaiveDate> {
    cells.iter().filter(|c| c.kpi_id == kpi.id && c.grain == kpi.grain && c.complete).map(|c| c.period_start).max()
}

fn head(units: &HashMap<&str, &Unit>, id: Option<&str>) -> Option<(Option<String>, String)> {
    let u = units.get(id?)?;
    u.head_name.clone().map(|n| (u.head_id.clone(), n))
}

/// Data-quality findings on the tables a KPI reads, from this as-of date's latest validate run.
/// Read from the committed runs (`runs`, read once per plan), not the session's snapshot of
/// `output`, so a validate run made earlier in the same cadence counts; "run validate first" is
/// said only when none exists.
pub async fn dq_context(session: &LakeSession, runs: &Result<Vec<Manifest>>, kpi: &Kpi) -> String {
    let label = session.as_of.label();
    let runs = match runs {
        Ok(runs) => runs,
        Err(e) => return format!("the run manifests could not be read ({e})"),
    };
    let Some(file) = latest_table_file(runs, "validate", "data_quality", &label) else {
        return format!("no validate run for {label}: run `gtm-loop validate --as-of {label}` first");
    };
    // A concept need ("concept:deal_type") is checked on the tables it describes.
    let mut tables: Vec<String> = Vec::new();
    for need in &kpi.needs {
        let named: Vec<String> = match need.strip_prefix("concept:").and_then(crate::lake::profile::concept_def) {
            Some(def) => def.tables.iter().map(|t| t.to_string()).collect(),
            None => vec![need.clone()],
        };
        for t in named {
            if !tables.contains(&t) {
                tables.push(t);
            }
        }
    }
    match count_findings(session, &file.path, &tables).await {
        Ok((all, errors)) => format!("data-quality findings on {}: {all} ({errors} errors)", tables.join(", ")),
        Err(e) => format!("the validate run's findings ({}) could not be read: {e}", file.path),
    }
}

/// Findings and error findings in one published data_quality file on the given tables.
async fn count_findings(session: &LakeSession, path: &str, tables: &[String]) -> Result<(i64, i64)> {
    use datafusion::prelude::{ParquetReadOptions, col, lit};
    let url = session.lake.listing_url(path)?;
    let df = session.ctx.read_parquet(url.as_str(), ParquetReadOptions::default()).await?;
    let on: Vec<_> = tables.iter().map(|t| lit(t.clone())).collect();
    let df = df.filter(col("table_name").in_list(on, false))?;
    let rows = df.select_columns(&["severity"])?.collect().await?;
    let (mut all, mut errors) = (0i64, 0i64);
    for b in &rows {
        for s in strings(b.column(0))? {
            all += 1;
            errors += i64::from(s.as_deref() == Some("error"));
        }
    }
    Ok((all, errors))
}

fn evidence(kpi: &Kpi, c: &Cell) -> String {
    let v = c.value.map(|v| fmt_value(&kpi.unit, v)).unwrap_or_else(|| "-".into());
    let t = match (c.target, c.target_high) {
        (Some(lo), Some(hi)) => format!("{}-{}", fmt_value(&kpi.unit, lo), fmt_value(&kpi.unit, hi)),
        (Some(t), None) => fmt_value(&kpi.unit, t),
        _ => "-".into(),
    };
    let ci = c
        .ci_low
        .zip(c.ci_high)
        .map(|(l, h)| format!(", 95% CI {}-{}", fmt_value(&kpi.unit, l), fmt_value(&kpi.unit, h)))
        .unwrap_or_default();
    format!(
        "{} {v} vs target {t} ({}) in the {} from {}, n={}{ci}; {}",
        kpi.name, c.target_source, c.grain, c.period_start, c.n, c.reason
    )
}

/// One primary KPI's review period, with what every intervention for it needs.
struct Review<'a> {
    kpi: &'a Kpi,
    card: &'a Card,
    catalog: &'a Catalog,
    by_id: &'a HashMap<&'a str, &'a Unit>,
    /// The company's head (owner of systemic programmes), if known.
    company: Option<(Option<String>, String)>,
    period: NaiveDate,
    follow: NaiveDate,
}

/// Interventions for the review period of every primary KPI. Systemic misses are grouped into one
/// intervention per parent unit, owned by leadership.
pub async fn plan(
    session: &LakeSession,
    job: &Job,
    catalog: &Catalog,
    cells: &[Cell],
    units: &[Unit],
    as_of: NaiveDate,
) -> Vec<Intervention> {
    let by_id: HashMap<&str, &Unit> = units.iter().map(|u| (u.id.as_str(), u)).collect();
    let company = head(&by_id, Some("company"));
    // The run manifests, read the first time a diagnose-first cell needs them.
    let mut manifests: Option<Result<Vec<Manifest>>> = None;
    let mut out = Vec::new();
    for kpi in catalog.kpis.iter().filter(|k| k.primary) {
        let Some(card) = &kpi.card else { continue };
        let Some(period) = review_period(cells, kpi) else { continue };
        let follow = as_of
            + Days::new(match card.cadence.as_str() {
                "weekly" => job.follow_up_days.weekly,
                "quarterly" => job.follow_up_days.quarterly,
                _ => job.follow_up_days.monthly,
            });
        let r = Review { kpi, card, catalog, by_id: &by_id, company: company.clone(), period, follow };
        let review: Vec<&Cell> =
            cells.iter().filter(|c| c.kpi_id == kpi.id && c.grain == kpi.grain && c.period_start == period).collect();
        let mut dq: Option<String> = None;
        let mut systemic: BTreeSet<(String, Option<String>)> = BTreeSet::new();
        for c in &review {
            match c.status.as_str() {
                "systemic" => {
                    systemic.insert((c.level.clone(), c.parent_unit_id.clone()));
                    continue;
                }
                "diagnose_first" if dq.is_none() => {
                    if manifests.is_none() {
                        manifests = Some(committed_runs(&session.lake).await);
                    }
                    let runs = manifests.as_ref().expect("just read");
                    dq = Some(dq_context(session, runs, kpi).await);
                }
                _ => {}
            }
            if let Some(iv) = r.for_unit(c, dq.as_deref().unwrap_or("")) {
                out.push(iv);
            }
        }
        for (level, parent) in systemic {
            out.push(r.systemic(&review, &level, parent));
        }
    }
    out
}

impl Review<'_> {
    /// The intervention for one unit's cell (observe, coaching, diagnose first), if any.
    fn for_unit(&self, c: &Cell, dq: &str) -> Option<Intervention> {
        let (kpi, by_id, company) = (self.kpi, self.by_id, &self.company);
        let fill = |owner: &str| self.card.action.replace("{unit}", &c.unit_name).replace("{owner}", owner);
        let (owner_id, owner_name, action) = match c.status.as_str() {
            "observe" => {
                let (id, name) =
                    head(by_id, Some(&c.unit_id)).or_else(|| company.clone()).unwrap_or((None, LEADERSHIP.into()));
                let action = format!(
                    "Observe: {name} watches {} in {} next period; act if it misses again ({})",
                    kpi.name, c.unit_name, c.reason
                );
                (id, name, action)
            }
            "coaching" => {
                let (id, name) = head(by_id, c.parent_unit_id.as_deref())
                    .or_else(|| company.clone())
                    .unwrap_or((None, LEADERSHIP.into()));
                let action = format!("Coach: {}", fill(&name));
                (id, name, action)
            }
            "diagnose_first" => {
                let name = "RevOps (data owner)".to_string();
                let action = format!(
                    "Diagnose first: before treating {} in {} as an execution problem, RevOps checks the data ({}), owner and territory changes in {}, and the volume change; then hand it to {}",
                    kpi.name,
                    c.unit_name,
                    dq,
                    c.unit_name,
                    head(by_id, c.parent_unit_id.as_deref()).map(|h| h.1).unwrap_or_else(|| LEADERSHIP.into())
                );
                (None, name, action)
            }
            _ => return None,
        };
        Some(Intervention {
            intervention_id: record_id(&[
                "kpi_intervention",
                &kpi.id,
                &c.grain,
                &c.unit_id,
                &c.period_start.to_string(),
                &c.status,
                &self.catalog.version,
            ]),
            kpi_id: kpi.id.clone(),
            kpi_name: kpi.name.clone(),
            grain: c.grain.clone(),
            period_start: c.period_start,
            level: c.level.clone(),
            unit_id: c.unit_id.clone(),
            unit_name: c.unit_name.clone(),
            status: c.status.clone(),
            action,
            owner_id,
            owner_name,
            follow_up_date: self.follow,
            evidence: evidence(kpi, c),
            expected_outcome: format!(
                "{} back on target in {} by the {} after {}",
                kpi.name, c.unit_name, c.grain, c.period_start
            ),
        })
    }

    /// One programme for every unit at `level` under `parent` that missed, owned by leadership.
    fn systemic(&self, review: &[&Cell], level: &str, parent: Option<String>) -> Intervention {
        let (kpi, period) = (self.kpi, self.period);
        let parent_name = parent
            .as_deref()
            .and_then(|p| self.by_id.get(p))
            .map(|u| u.name.clone())
            .unwrap_or_else(|| "the company".into());
        let (owner_id, owner_name) = self.company.clone().unwrap_or((None, LEADERSHIP.into()));
        // Every unit of the group that missed, whatever its own status (a diagnose-first unit
        // still missed), so the sentence gives the whole pattern.
        let missed: Vec<&Cell> =
            review.iter().copied().filter(|c| c.miss && c.level == level && c.parent_unit_id == parent).collect();
        let judged = review
            .iter()
            .filter(|c| {
                c.level == level
                    && c.parent_unit_id == parent
                    && c.value.is_some()
                    && !matches!(c.status.as_str(), "not_enough_data" | "no_target" | "in_progress")
            })
            .count();
        let names: Vec<&str> = missed.iter().map(|c| c.unit_name.as_str()).collect();
        // The subject is the parent unit: whether the programme worked shows in its own cell.
        let unit_id = parent.clone().unwrap_or_else(|| "company".into());
        Intervention {
            intervention_id: record_id(&[
                "kpi_intervention",
                &kpi.id,
                &kpi.grain,
                &unit_id,
                level,
                &period.to_string(),
                "systemic",
                &self.catalog.version,
            ]),
            kpi_id: kpi.id.clone(),
            kpi_name: kpi.name.clone(),
            grain: kpi.grain.clone(),
            period_start: period,
            level: level.to_string(),
            unit_id,
            unit_name: format!("{} of {judged} {level}s of {parent_name}", missed.len()),
            status: "systemic".into(),
            action: format!(
                "Systemic: {owner_name} treats {} as a programme, not individual coaching: {} ({} of {judged} {level}s missed: {})",
                kpi.name,
                self.card.action.replace("{unit}", &parent_name).replace("{owner}", &owner_name),
                missed.len(),
                names.join(", ")
            ),
            owner_id,
            owner_name,
            follow_up_date: self.follow,
            evidence: missed
                .iter()
                .map(|c| format!("{}: {}", c.unit_name, evidence(kpi, c)))
                .collect::<Vec<_>>()
                .join(" | "),
            expected_outcome: format!(
                "{} back on target in most {level}s of {parent_name} by the {} after {period}",
                kpi.name, kpi.grain
            ),
        }
    }
}

pub fn schema() -> SchemaRef {
    let s = |n: &str, null: bool| Field::new(n, DataType::Utf8, null);
    Arc::new(Schema::new(vec![
        s("intervention_id", false),
        s("kpi_id", false),
        s("kpi_name", false),
        s("grain", false),
        s("period_start", false),
        s("level", false),
        s("unit_id", false),
        s("unit_name", false),
        s("status", false),
        s("action", false),
        s("owner_id", true),
        s("owner_name", false),
        s("follow_up_date", false),
        s("evidence", false),
        s("expected_outcome", false),
    ]))
}

pub fn batch(rows: &[Intervention]) -> Result<RecordBatch> {
    let s = |f: &dyn Fn(&Intervention) -> Option<String>| -> ArrayRef {
        Arc::new(StringArray::from(rows.iter().map(f).collect::<Vec<_>>()))
    };
    Ok(RecordBatch::try_new(
        schema(),
        vec![
            s(&|r| Some(r.intervention_id.clone())),
            s(&|r| Some(r.kpi_id.clone())),
            s(&|r| Some(r.kpi_name.clone())),
            s(&|r| Some(r.grain.clone())),
            s(&|r| Some(r.period_start.to_string())),
            s(&|r| Some(r.level.clone())),
            s(&|r| Some(r.unit_id.clone())),
            s(&|r| Some(r.unit_name.clone())),
            s(&|r| Some(r.status.clone())),
            s(&|r| Some(r.action.clone())),
            s(&|r| r.owner_id.clone()),
            s(&|r| Some(r.owner_name.clone())),
            s(&|r| Some(r.follow_up_date.to_string())),
            s(&|r| Some(r.evidence.clone())),
            s(&|r| Some(r.expected_outcome.clone())),
        ],
    )?)
}

/// The log records of this run's interventions.
pub fn records(rows: &[Intervention], catalog: &Catalog, as_of: NaiveDate, recorded_at: &str) -> Vec<Record> {
    rows.iter()
        .map(|r| Record {
            record_id: r.intervention_id.clone(),
            kind: "kpi_intervention".into(),
            as_of_date: as_of.to_string(),
            recorded_at: recorded_at.to_string(),
            subject_type: "kpi_cell".into(),
            subject_id: format!("{}|{}|{}", r.kpi_id, r.grain, r.unit_id),
            period_start: Some(r.period_start.to_string()),
            playbook_version: format!("kpi_catalog {}", catalog.version),
            status: Some(r.status.clone()),
            action: Some(r.action.clone()),
            owner_id: r.owner_id.clone(),
            owner_name: Some(r.owner_name.clone()),
            follow_up_date: Some(r.follow_up_date.to_string()),
            expected_outcome: Some(r.expected_outcome.clone()),
            evidence: Some(
                serde_json::json!({ "text": r.evidence, "level": r.level, "unit": r.unit_name }).to_string(),
            ),
            ..Record::default()
        })
        .collect()
}

/// Outcomes of earlier interventions whose follow-up date has come: did the KPI recover? Reads
/// only log records written as of this run's date or before (no look-ahead in backtests).
pub async fn outcomes(
    session: &LakeSession,
    cells: &[Cell],
    as_of: NaiveDate,
    recorded_at: &str,
) -> Result<Vec<Record>> {
    let sql = format!(
        "SELECT i.record_id, i.subject_id, i.period_start, i.playbook_version FROM log.decision_trace AS i \
         WHERE i.kind = 'kpi_intervention' AND i.as_of_date <= '{as_of}' AND i.follow_up_date <= '{as_of}' \
         AND NOT EXISTS (SELECT 1 FROM log.decision_trace AS o WHERE o.kind = 'kpi_outcome' AND o.refers_to = i.record_id \
           AND o.as_of_date <= '{as_of}') ORDER BY i.record_id"
    );
    let batches = session.ctx.sql(&sql).await?.collect().await?;
    let mut out = Vec::new();
    for b in &batches {
        let (ids, subjects, periods, versions) =
            (strings(b.column(0))?, strings(b.column(1))?, strings(b.column(2))?, strings(b.column(3))?);
        for r in 0..b.num_rows() {
            let (Some(id), Some(subject)) = (ids[r].clone(), subjects[r].clone()) else { continue };
            let mut parts = subject.splitn(3, '|');
            let (Some(kpi), Some(grain), Some(unit)) = (parts.next(), parts.next(), parts.next()) else { continue };
            let after = periods[r].as_deref().and_then(|p| NaiveDate::parse_from_str(p, "%Y-%m-%d").ok());
            // The latest complete period after the one the intervention was about.
            let later = cells
                .iter()
                .filter(|c| c.kpi_id == kpi && c.grain == grain && c.unit_id == unit && c.complete)
                .filter(|c| after.is_none_or(|a| c.period_start > a))
                .max_by_key(|c| c.period_start);
            let Some(c) = later else { continue };
            let outcome = match c.status.as_str() {
                "on_track" => "recovered",
                "not_enough_data" | "no_target" => "unknown",
                _ => "still_missing",
            };
            out.push(Record {
                record_id: record_id(&["kpi_outcome", &id]),
                kind: "kpi_outcome".into(),
                as_of_date: as_of.to_string(),
                recorded_at: recorded_at.to_string(),
                subject_type: "kpi_cell".into(),
                subject_id: subject.clone(),
                period_start: Some(c.period_start.to_string()),
                playbook_version: versions[r].clone().unwrap_or_default(),
                status: Some(c.status.clone()),
                refers_to: Some(id),
                outcome: Some(outcome.into()),
                outcome_value: c.value,
                ..Record::default()
            });
        }
    }
    Ok(out)
}
