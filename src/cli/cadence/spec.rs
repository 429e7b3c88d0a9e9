//! The cadence declarations (`jobs/weekly.toml`, `monthly.toml`, `quarterly.toml`) and their
//! periods: which dates a run covers, which periods have ended, which are still due.

use std::path::Path;

use chrono::{Datelike, Duration, NaiveDate};
use serde::Deserialize;

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum Cadence {
    Weekly,
    Monthly,
    Quarterly,
}

impl Cadence {
    pub const ALL: [Cadence; 3] = [Cadence::Weekly, Cadence::Monthly, Cadence::Quarterly];

    pub fn name(self) -> &'static str {
        match self {
            Cadence::Weekly => "weekly",
            Cadence::Monthly => "monthly",
            Cadence::Quarterly => "quarterly",
        }
    }

    fn builtin(self) -> (&'static str, &'static str) {
        match self {
            Cadence::Weekly => ("jobs/weekly.toml", repo_file!("jobs/weekly.toml")),
            Cadence::Monthly => ("jobs/monthly.toml", repo_file!("jobs/monthly.toml")),
            Cadence::Quarterly => ("jobs/quarterly.toml", repo_file!("jobs/quarterly.toml")),
        }
    }
}

/// One job of the engine a step can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepJob {
    Validate,
    Actions,
    Funnels,
    Risk,
    WinProbability,
    Kpis,
    Patterns,
    Models,
    Proposals,
}

impl StepJob {
    /// Whether the job reads the CRM tasks (staging.task), the largest table of a lake (16M rows on
    /// a million deals), each job in several queries naming other columns of it.
    pub fn reads_tasks(self) -> bool {
        matches!(
            self,
            StepJob::Actions
                | StepJob::Risk
                | StepJob::WinProbability
                | StepJob::Kpis
                | StepJob::Patterns
                | StepJob::Models
        )
    }

    /// The staging.task columns the job reads, where they are listed (None: any of them). A
    /// cadence computes the tasks once with the columns its steps read and drops, between steps,
    /// those no later step reads; a column missing here costs a recomputation of the tasks, which
    /// tests/cadence.rs catches (the weekly computes them once).
    pub fn task_columns(self) -> Option<&'static [&'static str]> {
        match self {
            // Tasks logged on flagged deals after the flag, as actions taken (jobs/risk/action.rs).
            StepJob::Actions => Some(&["id", "what_id", "created_date", "subject", "type", "owner_id", "direction"]),
            // sql/risk/*.sql (deal_context, champion_going_dark, no_stakeholder_response,
            // technical_incompatibility) and sql/learn/momentum.sql.
            StepJob::Risk => Some(&["what_id", "who_id", "account_id", "created_date", "direction"]),
            // The trajectory's task steps (sql/learn/deal_trajectory.sql).
            StepJob::WinProbability => Some(&["what_id", "who_id", "created_date", "direction"]),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            StepJob::Validate => "validate",
            StepJob::Actions => "actions",
            StepJob::Funnels => "funnels",
            StepJob::Risk => "risk",
            StepJob::WinProbability => "win_probability",
            StepJob::Kpis => "kpis",
            StepJob::Patterns => "patterns",
            StepJob::Models => "models",
            StepJob::Proposals => "proposals",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub name: String,
    pub job: StepJob,
    /// validate: more error-level findings than this stop the run (exit code 4).
    pub max_errors: Option<u64>,
    /// validate: an error-level finding on more than this share of its table's rows stops the run.
    pub max_error_rate: Option<f64>,
    /// kpis: first month of the fiscal year.
    pub fiscal_year_start: Option<u32>,
    /// kpis: weeks start on Sunday.
    pub week_starts_sunday: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub cadence: String,
    pub steps: Vec<Step>,
    /// Where the declaration came from (for messages and manifests).
    #[serde(skip)]
    pub source: String,
}

/// Reads a cadence's declaration: `file` if given, else the built-in `jobs/<cadence>.toml`.
pub fn load(cadence: Cadence, file: Option<&Path>) -> Result<Spec> {
    let (name, text) = cadence.builtin();
    let (source, mut spec): (String, Spec) = crate::error::read_declaration(file, name, text)?;
    let bad = |message: String| Error::Config { file: source.clone(), message };
    if spec.cadence != cadence.name() {
        return Err(bad(format!(
            "declares cadence = \"{}\" but is run as the {} cadence; fix the cadence line or pass the file to `run {}`",
            spec.cadence,
            cadence.name(),
            spec.cadence
        )));
    }
    if spec.steps.is_empty() {
        return Err(bad("has no [[steps]]: a cadence runs at least one job".into()));
    }
    let mut seen = std::collections::BTreeSet::new();
    for s in &spec.steps {
        if s.name.trim().is_empty() || !s.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(bad(format!("step name {:?} must be letters, digits and _", s.name)));
        }
        if !seen.insert(s.name.clone()) {
            return Err(bad(format!("two steps are named {:?}; step names must be unique", s.name)));
        }
        if (s.max_errors.is_some() || s.max_error_rate.is_some()) && s.job != StepJob::Validate {
            return Err(bad(format!(
                "step {:?}: max_errors and max_error_rate apply only to job = \"validate\"",
                s.name
            )));
        }
        if let Some(r) = s.max_error_rate.filter(|r| !(0.0..=1.0).contains(r)) {
            return Err(bad(format!("step {:?}: max_error_rate = {r} is not a share between 0 and 1", s.name)));
        }
        if let Some(m) = s.fiscal_year_start.filter(|m| !(1..=12).contains(m)) {
            return Err(bad(format!("step {:?}: fiscal_year_start = {m} is not a month (1-12)", s.name)));
        }
    }
    spec.source = source;
    Ok(spec)
}

/// The dates one run of a cadence covers; `end` is its as-of date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Period {
    pub cadence: Cadence,
    /// 2026-W39 (ISO week), 2026-09, 2026-Q3.
    pub label: String,
    pub start: NaiveDate,
    pub end: NaiveDate,
}

/// The period of `cadence` that contains `day`: ISO weeks (Monday to Sunday), calendar months,
/// calendar quarters.
pub fn period_of(cadence: Cadence, day: NaiveDate) -> Period {
    match cadence {
        Cadence::Weekly => {
            let start = day - Duration::days(i64::from(day.weekday().num_days_from_monday()));
            let week = start.iso_week();
            Period {
                cadence,
                label: format!("{}-W{:02}", week.year(), week.week()),
                start,
                end: start + Duration::days(6),
            }
        }
        Cadence::Monthly => {
            let start = day.with_day(1).expect("day 1");
            Period { cadence, label: format!("{}-{:02}", day.year(), day.month()), start, end: month_end(start, 1) }
        }
        Cadence::Quarterly => {
            let q = (day.month() - 1) / 3;
            let start = NaiveDate::from_ymd_opt(day.year(), q * 3 + 1, 1).expect("quarter start");
            Period { cadence, label: format!("{}-Q{}", day.year(), q + 1), start, end: month_end(start, 3) }
        }
    }
}

/// The last day of the `months`-long span starting on the first of a month.
fn month_end(first: NaiveDate, months: u32) -> NaiveDate {
    first.checked_add_months(chrono::Months::new(months)).expect("in range") - Duration::days(1)
}

impl Period {
    pub fn previous(&self) -> Period {
        period_of(self.cadence, self.start - Duration::days(1))
    }

    pub fn next(&self) -> Period {
        period_of(self.cadence, self.end + Duration::days(1))
    }
}

/// The latest period of `cadence` that has ended before `today` (a period ending today is not
/// over yet: its last day's records may still land).
pub fn latest_ended(cadence: Cadence, today: NaiveDate) -> Period {
    period_of(cadence, today).previous()
}

/// The periods of `cadence` whose as-of date (last day) lies in `[from, to]`, oldest first.
pub fn ending_in(cadence: Cadence, from: NaiveDate, to: NaiveDate) -> Vec<Period> {
    let mut p = period_of(cadence, from);
    if p.end < from {
        p = p.next();
    }
    let mut out = Vec::new();
    while p.end <= to {
        out.push(p.clone());
        p = p.next();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn periods_by_hand() {
        // 2026-09-30 is a Wednesday: ISO week 40 runs Monday 28 September to Sunday 4 October.
        let w = period_of(Cadence::Weekly, d("2026-09-30"));
        assert_eq!((w.label.as_str(), w.start, w.end), ("2026-W40", d("2026-09-28"), d("2026-10-04")));
        // ISO week 1 of 2027 starts Monday 4 January 2027; 3 January is in 2026-W53.
        assert_eq!(period_of(Cadence::Weekly, d("2027-01-03")).label, "2026-W53");
        let m = period_of(Cadence::Monthly, d("2028-02-10"));
        assert_eq!((m.label.as_str(), m.end), ("2028-02", d("2028-02-29")));
        let q = period_of(Cadence::Quarterly, d("2026-11-15"));
        assert_eq!((q.label.as_str(), q.start, q.end), ("2026-Q4", d("2026-10-01"), d("2026-12-31")));
        assert_eq!(q.previous().label, "2026-Q3");
        assert_eq!(q.next().label, "2027-Q1");
    }

    #[test]
    fn a_period_ending_today_is_not_over() {
        // Sunday 4 October 2026 ends W40: on that day the latest ended week is still W39.
        assert_eq!(latest_ended(Cadence::Weekly, d("2026-10-04")).label, "2026-W39");
        assert_eq!(latest_ended(Cadence::Weekly, d("2026-10-05")).label, "2026-W40");
        assert_eq!(latest_ended(Cadence::Monthly, d("2026-10-01")).label, "2026-09");
        assert_eq!(latest_ended(Cadence::Quarterly, d("2026-12-31")).label, "2026-Q3");
    }

    #[test]
    fn periods_ending_in_a_range() {
        let weeks = ending_in(Cadence::Weekly, d("2026-06-01"), d("2026-07-26"));
        assert_eq!(weeks.len(), 8);
        assert_eq!(weeks[0].end, d("2026-06-07"));
        assert_eq!(weeks[7].end, d("2026-07-26"));
        let months: Vec<_> =
            ending_in(Cadence::Monthly, d("2026-06-01"), d("2026-07-26")).into_iter().map(|p| p.label).collect();
        assert_eq!(months, vec!["2026-06"]);
        assert_eq!(ending_in(Cadence::Quarterly, d("2026-06-30"), d("2026-06-30")).len(), 1);
    }

    #[test]
    fn the_shipped_declarations_load() {
        for c in Cadence::ALL {
            let spec = load(c, None).unwrap();
            assert_eq!(spec.steps[0].job, StepJob::Validate, "{}: data quality first", c.name());
        }
    }
}
