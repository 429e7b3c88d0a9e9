//! The KPI catalog (data/kpi_catalog.toml) and the KPI job's declaration (jobs/kpis.toml): what
//! each KPI measures, its target and card, and the severity rules; read and checked here.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::jobs::calendar::Grain;

const BUILTIN_CATALOG: &str = repo_file!("data/kpi_catalog.toml");
const BUILTIN_JOB: &str = repo_file!("jobs/kpis.toml");
pub const STAGES: [&str; 4] = ["Inputs", "Capability", "Execution", "Outcomes"];

pub const LEVELS: [&str; 4] = ["company", "region", "manager", "seller"];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    pub version: String,
    #[serde(rename = "kpi")]
    pub kpis: Vec<Kpi>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Ratio,
    Total,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Higher,
    Lower,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Target {
    Fixed { value: f64 },
    Quota { value: f64 },
    Historical { lookback: usize, tolerance: f64 },
    Band { low: f64, high: f64 },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Card {
    pub question: String,
    pub success: String,
    pub inspection: Vec<String>,
    pub action: String,
    pub cadence: String,
    pub owner_level: String,
    pub measurability: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kpi {
    pub id: String,
    pub name: String,
    pub stage: String,
    pub domain: String,
    #[serde(default)]
    pub primary: bool,
    pub kind: Kind,
    #[serde(default)]
    pub rate: bool,
    pub unit: String,
    pub direction: Direction,
    pub grain: String,
    #[serde(default)]
    pub min_n: i64,
    pub needs: Vec<String>,
    pub target: Target,
    pub sql: String,
    pub card: Option<Card>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Severity {
    pub min_history: usize,
    pub repeat_window: usize,
    pub repeat_misses: usize,
    pub systemic_min_units: usize,
    pub systemic_share: f64,
    pub sharp_drop: f64,
    pub volume_change: f64,
    /// The sample an average (a ratio KPI that is not a rate of counts) needs before a value below
    /// target is called a miss (20 when a job file does not say).
    #[serde(default = "default_min_judge_n")]
    pub min_judge_n: i64,
}

fn default_min_judge_n() -> i64 {
    20
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FollowUp {
    pub weekly: u64,
    pub monthly: u64,
    pub quarterly: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Job {
    pub catalog: String,
    pub grains: Vec<String>,
    pub severity: Severity,
    pub follow_up_days: FollowUp,
}

/// Loads the job (jobs/kpis.toml) and its catalog; the built-in copies unless files are given.
pub fn load(job_file: Option<&Path>, catalog_file: Option<&Path>) -> Result<(Job, Catalog)> {
    let (job_name, job): (String, Job) = crate::error::read_declaration(job_file, "jobs/kpis.toml", BUILTIN_JOB)?;
    for g in &job.grains {
        grain(g).map_err(|message| Error::Config { file: job_name.clone(), message })?;
    }
    let (cat_name, catalog): (String, Catalog) =
        crate::error::read_declaration(catalog_file, "data/kpi_catalog.toml", BUILTIN_CATALOG)?;
    check_catalog(&catalog).map_err(|message| Error::Config { file: cat_name, message })?;
    Ok((job, catalog))
}

pub fn grain(name: &str) -> std::result::Result<Grain, String> {
    match name {
        "week" => Ok(Grain::Week),
        "month" => Ok(Grain::Month),
        "quarter" => Ok(Grain::Quarter),
        other => Err(format!("unknown grain '{other}': use week, month or quarter")),
    }
}

pub fn grain_name(g: Grain) -> &'static str {
    match g {
        Grain::Week => "week",
        Grain::Month => "month",
        Grain::Quarter => "quarter",
    }
}

/// The catalog's own rules: unique ids, known stages and grains, one primary per domain with a card.
pub(super) fn check_catalog(c: &Catalog) -> std::result::Result<(), String> {
    let mut seen = std::collections::BTreeSet::new();
    let mut primaries: BTreeMap<(&str, &str), Vec<&str>> = BTreeMap::new();
    for k in &c.kpis {
        if !seen.insert(k.id.as_str()) {
            return Err(format!("KPI id '{}' is declared twice", k.id));
        }
        if !STAGES.contains(&k.stage.as_str()) {
            return Err(format!("KPI '{}': stage '{}' is not one of {}", k.id, k.stage, STAGES.join(", ")));
        }
        grain(&k.grain).map_err(|e| format!("KPI '{}': {e}", k.id))?;
        if k.rate && k.kind != Kind::Ratio {
            return Err(format!("KPI '{}': rate = true needs kind = \"ratio\"", k.id));
        }
        let entry = primaries.entry((k.stage.as_str(), k.domain.as_str())).or_default();
        if k.primary {
            entry.push(&k.id);
            if k.card.is_none() {
                return Err(format!("KPI '{}' is primary and needs a [kpi.card] (the management card)", k.id));
            }
        }
    }
    for ((stage, domain), p) in &primaries {
        if p.len() != 1 {
            return Err(format!(
                "domain '{domain}' ({stage}) has {} primary KPIs ({}); declare exactly one with primary = true",
                p.len(),
                p.join(", ")
            ));
        }
    }
    Ok(())
}
