//! The command line: one subcommand per thing a RevOps user or analyst does.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use chrono::NaiveDate;
use clap::{Parser, Subcommand};

use crate::catalog::{AsOf, LakeSession};
use crate::contract::Contract;
use crate::error::{Error, Result};
use crate::generate::GenerateOptions;
use crate::lake::Lake;
use crate::query::OutputFormat;

/// The demo lake: generated here on first use, git-ignored.
pub const DEFAULT_LAKE: &str = "lakes/demo";

#[derive(Parser, Debug)]
#[command(name = "gtm-loop", version, about = "Turns a go-to-market data lake into a learning loop")]
pub struct Cli {
    /// The lake: a local folder or an s3://, gs://, az:// URL.
    #[arg(long, global = true, env = "GTM_LOOP_LAKE", default_value = DEFAULT_LAKE)]
    pub lake: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// The scheduled cadence: generate the demo lake if absent, validate it, run the journey
    /// funnels and the KPI job, and write the leadership report.
    Run {
        /// See the lake as it stood at the end of this day (YYYY-MM-DD). Default: the day of the
        /// lake's latest recorded deal change (said on the first line), never the wall clock.
        #[arg(long)]
        as_of: Option<NaiveDate>,
        /// Opportunities to generate when the lake is empty.
        #[arg(long, default_value_t = 2_000)]
        opportunities: u64,
    },
    /// The KPI hierarchy (data/kpi_catalog.toml) at company, region, manager and seller level,
    /// its severity, interventions and the leadership report (HTML and Markdown).
    Kpis {
        /// The as-of date (required: KPIs are always relative to an explicit date).
        #[arg(long)]
        as_of: NaiveDate,
        /// A KPI catalog file instead of the built-in data/kpi_catalog.toml.
        #[arg(long)]
        catalog: Option<PathBuf>,
        /// A job file instead of the built-in jobs/kpis.toml (grains, severity rules).
        #[arg(long)]
        job: Option<PathBuf>,
        /// First month of the fiscal year (1-12).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=12))]
        fiscal_year_start: u32,
        /// Weeks start on Sunday (default Monday).
        #[arg(long)]
        week_starts_sunday: bool,
    },
    /// The weekly Deal Risk Monitor: the playbook's flags on every open deal, a risk score, this
    /// week's move, the rep and manager views, and the decision-trace log.
    Risk {
        #[arg(long)]
        as_of: NaiveDate,
        /// A playbook file instead of the built-in data/playbook.toml.
        #[arg(long)]
        playbook: Option<PathBuf>,
    },
    /// Record what a rep actually did on a flagged deal (appended to the decision-trace log), or
    /// import it from CRM tasks logged on flagged deals after the flag.
    Action {
        /// The deal (opportunity id).
        #[arg(long, required_unless_present = "from_tasks")]
        deal: Option<String>,
        /// What was done.
        #[arg(long, required_unless_present = "from_tasks")]
        did: Option<String>,
        /// Why (or why the recommended move was not taken).
        #[arg(long, default_value = "")]
        why: String,
        /// Who did it (a user id or name).
        #[arg(long, default_value = "")]
        by: String,
        /// The date it was done (default: the as-of date).
        #[arg(long)]
        on: Option<NaiveDate>,
        /// Read the lake as of this date (default: today is never used; give a date).
        #[arg(long)]
        as_of: NaiveDate,
        /// Import every task logged on a flagged deal after its flag, up to the as-of date.
        #[arg(long)]
        from_tasks: bool,
    },
    /// Walk-forward backtest of the deal risk score: weekly as-of dates, no look-ahead; how well
    /// the score ranks deals that later slip or are lost.
    Backtest {
        #[arg(long)]
        from: NaiveDate,
        #[arg(long)]
        to: NaiveDate,
        /// Days between as-of dates.
        #[arg(long, default_value_t = 7)]
        every_days: u64,
        /// Days after each as-of date at which the outcome is read.
        #[arg(long, default_value_t = 60)]
        horizon_days: u64,
        #[arg(long)]
        playbook: Option<PathBuf>,
    },
    /// Write a deterministic demo lake (replaces raw/ and truth.json; outputs are kept).
    Generate {
        #[arg(long, default_value_t = 2_000)]
        opportunities: u64,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Last day of generated history.
        #[arg(long, default_value = "2026-09-30")]
        end: NaiveDate,
        /// Days of history.
        #[arg(long, default_value_t = 730)]
        days: u32,
        /// Days of daily usage kept per customer.
        #[arg(long, default_value_t = 90)]
        usage_days: u32,
    },
    /// Check the lake against its contract and publish data-quality findings.
    Validate {
        #[arg(long)]
        as_of: Option<NaiveDate>,
    },
    /// Run a read-only SQL statement over every layer (raw, known, staging, output).
    Query {
        sql: String,
        #[arg(long)]
        as_of: Option<NaiveDate>,
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
        /// Write to this file instead of standard output (required for parquet).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// List every table with its row count.
    Tables {
        #[arg(long)]
        as_of: Option<NaiveDate>,
    },
    /// Columns, types and meaning of one table.
    Describe {
        table: String,
        #[arg(long)]
        as_of: Option<NaiveDate>,
    },
    /// Load an export into the lake through a mapping file (data/mappings/<name>.toml).
    Import {
        /// A mapping name (maven_crm, olist_marketing_funnel) or a path to a mapping file.
        mapping: String,
        /// The folder holding the export's files.
        #[arg(long)]
        source: PathBuf,
    },
    /// Journey funnels (jobs/funnels.toml): per-step conversion, intervals, time to convert, breakdowns.
    Funnel {
        #[arg(long)]
        as_of: Option<NaiveDate>,
        /// Only this journey (default: every declared journey whose tables are landed).
        #[arg(long)]
        journey: Option<String>,
        /// A journeys file instead of the built-in jobs/funnels.toml.
        #[arg(long)]
        journeys: Option<PathBuf>,
        /// Also break down by this column of the journey's entity table (repeatable).
        #[arg(long = "by")]
        by: Vec<String>,
        /// Entry-period grain for period comparisons.
        #[arg(long, value_enum, default_value_t = crate::funnel::Grain::Month)]
        grain: crate::funnel::Grain,
        /// First month (1-12) of the fiscal year, for quarters.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=12))]
        fiscal_year_start: u32,
        /// Weeks start on Sunday (default Monday).
        #[arg(long)]
        week_starts_sunday: bool,
    },
    /// Time the cadence on a scaled generated lake: wall time and peak memory per step.
    Bench {
        #[arg(long, default_value_t = 100_000)]
        opportunities: u64,
        /// Reuse the lake as it is instead of generating it.
        #[arg(long)]
        skip_generate: bool,
        /// The as-of date of the timed run.
        #[arg(long, default_value = "2026-06-30")]
        as_of: NaiveDate,
        /// Also run the sales-led funnel in DuckDB (this Python must have the duckdb package).
        #[arg(long)]
        duckdb: Option<String>,
    },
    /// Print the lake contract as Markdown (data/contract/CONTRACT.md is this output).
    Contract,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            if let (true, Some(limit)) = (e.to_string().contains("Resources exhausted"), crate::catalog::memory_limit())
            {
                eprintln!("hint: GTM_LOOP_MEMORY_LIMIT caps queries at {} MiB; raise or unset it", limit >> 20);
            }
            match e {
                Error::Contract { .. } | Error::Refused(_) | Error::Config { .. } => ExitCode::from(2),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

pub async fn run(cli: Cli) -> Result<()> {
    let lake = Lake::open(&cli.lake)?;
    let mut stdout = std::io::stdout().lock();
    match cli.command {
        Command::Run { as_of, opportunities } => {
            if lake.list("raw/").await?.is_empty() {
                eprintln!("no raw data in {}: generating the demo lake ({opportunities} opportunities)", lake.url);
                crate::generate::generate(&lake, &GenerateOptions { opportunities, ..Default::default() }).await?;
            }
            let as_of = match as_of {
                Some(d) => d,
                None => {
                    let d = latest_recorded_day(&lake).await?;
                    writeln!(stdout, "as of {d}: the lake's latest recorded deal change (pass --as-of to choose)")?;
                    d
                }
            };
            let session = LakeSession::open(&lake, AsOf(Some(as_of))).await?;
            let report = crate::validate::run(&session).await?;
            write!(stdout, "{}", crate::validate::summary(&report.findings))?;
            writeln!(
                stdout,
                "published run {} (output.data_quality, as of {})",
                report.manifest.run_id, report.manifest.as_of
            )?;
            // Monthly performance loop: journey funnels.
            let journeys = crate::funnel::load(None)?;
            let cal = crate::funnel::Calendar::default();
            let (_, text, manifest) = crate::funnel::run(&session, &journeys, None, &[], &cal).await?;
            write!(stdout, "\n{text}")?;
            writeln!(
                stdout,
                "published run {} (output.funnel_steps, funnel_breakdown, funnel_periods, funnel_cohorts)",
                manifest.run_id
            )?;
            // Weekly execution loop: deal risk.
            let playbook = crate::risk::load(None)?;
            let (_, text, manifest, _) = crate::risk::run(&session, &playbook).await?;
            write!(stdout, "\n{text}")?;
            writeln!(stdout, "published run {} (output.deal_risk, deal_risk_flags)", manifest.run_id)?;
            // Monthly performance loop: the KPI hierarchy and the leadership report.
            let (job, catalog) = crate::kpi::load(None, None)?;
            let result = crate::kpi::run(&session, &job, &catalog, 1, false).await?;
            write!(stdout, "\n{}", result.text)?;
            writeln!(
                stdout,
                "published run {} (output.kpi_values, kpi_interventions, kpi_units)",
                result.manifest.run_id
            )?;
        }
        Command::Kpis { as_of, catalog, job, fiscal_year_start, week_starts_sunday } => {
            let session = LakeSession::open(&lake, AsOf(Some(as_of))).await?;
            refuse_broken(&session, &lake)?;
            let (job, catalog) = crate::kpi::load(job.as_deref(), catalog.as_deref())?;
            let result = crate::kpi::run(&session, &job, &catalog, fiscal_year_start, week_starts_sunday).await?;
            write!(stdout, "{}", result.text)?;
            writeln!(
                stdout,
                "published run {} (output.kpi_values, kpi_interventions, kpi_units)",
                result.manifest.run_id
            )?;
        }
        Command::Risk { as_of, playbook } => {
            let session = LakeSession::open(&lake, AsOf(Some(as_of))).await?;
            refuse_broken(&session, &lake)?;
            let playbook = crate::risk::load(playbook.as_deref())?;
            let (_, text, manifest, _) = crate::risk::run(&session, &playbook).await?;
            write!(stdout, "{text}")?;
            writeln!(stdout, "published run {} (output.deal_risk, deal_risk_flags)", manifest.run_id)?;
        }
        Command::Action { deal, did, why, by, on, as_of, from_tasks } => {
            let session = LakeSession::open(&lake, AsOf(Some(as_of))).await?;
            let n = if from_tasks {
                crate::action::import_tasks(&session, as_of).await?
            } else {
                let deal = deal.unwrap_or_default();
                let did = did.unwrap_or_default();
                crate::action::record(&session, &deal, &did, &why, &by, on.unwrap_or(as_of), as_of).await?
            };
            writeln!(stdout, "{n} new action record(s) in log/decision_trace")?;
        }
        Command::Backtest { from, to, every_days, horizon_days, playbook } => {
            let playbook = crate::risk::load(playbook.as_deref())?;
            let report = crate::backtest::run(&lake, &playbook, from, to, every_days, horizon_days).await?;
            write!(stdout, "{}", report.text)?;
        }
        Command::Generate { opportunities, seed, end, days, usage_days } => {
            let truth =
                crate::generate::generate(&lake, &GenerateOptions { opportunities, seed, end, days, usage_days })
                    .await?;
            for (table, rows) in &truth.row_counts {
                writeln!(stdout, "  {table:<28} {rows:>12} rows")?;
            }
            writeln!(stdout, "truth file: {}truth.json", lake.url)?;
        }
        Command::Validate { as_of } => {
            let session = LakeSession::open(&lake, AsOf(as_of)).await?;
            let report = crate::validate::run(&session).await?;
            write!(stdout, "{}", crate::validate::summary(&report.findings))?;
            writeln!(
                stdout,
                "published run {} (output.data_quality, as of {})",
                report.manifest.run_id, report.manifest.as_of
            )?;
        }
        Command::Query { sql, as_of, format, out } => {
            let session = open_for_reading(&lake, AsOf(as_of)).await?;
            let batches = crate::query::run(&session, &sql).await?;
            match out {
                Some(path) => {
                    let mut file = std::fs::File::create(&path)?;
                    crate::query::write(&batches, format, &mut file)?;
                    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
                    eprintln!("wrote {rows} rows to {}", path.display());
                }
                None if format == OutputFormat::Parquet => {
                    return Err(Error::Other("--format parquet needs --out FILE".into()));
                }
                None => crate::query::write(&batches, format, &mut stdout)?,
            }
        }
        Command::Tables { as_of } => {
            let session = open_for_reading(&lake, AsOf(as_of)).await?;
            write!(stdout, "{}", crate::query::tables(&session).await?)?;
        }
        Command::Describe { table, as_of } => {
            let session = open_for_reading(&lake, AsOf(as_of)).await?;
            write!(stdout, "{}", crate::query::describe(&session, &table).await?)?;
        }
        Command::Import { mapping, source } => {
            let summary = crate::import::import(&lake, &mapping, &source).await?;
            write!(stdout, "{summary}")?;
        }
        Command::Funnel { as_of, journey, journeys, by, grain, fiscal_year_start, week_starts_sunday } => {
            let session = LakeSession::open(&lake, AsOf(as_of)).await?;
            let declared = crate::funnel::load(journeys.as_deref())?;
            let cal = crate::funnel::Calendar { grain, fiscal_year_start_month: fiscal_year_start, week_starts_sunday };
            let (_, text, manifest) = crate::funnel::run(&session, &declared, journey.as_deref(), &by, &cal).await?;
            write!(stdout, "{text}")?;
            writeln!(
                stdout,
                "published run {} (output.funnel_steps, funnel_breakdown, funnel_periods, funnel_cohorts)",
                manifest.run_id
            )?;
        }
        Command::Bench { opportunities, skip_generate, as_of, duckdb } => {
            let steps = crate::bench::run(&lake, opportunities, skip_generate, as_of, duckdb.as_deref()).await?;
            let label = if skip_generate {
                lake.url.to_string()
            } else {
                format!("{} ({opportunities} opportunities)", lake.url)
            };
            write!(stdout, "{}", crate::bench::render(&steps, &label))?;
        }
        Command::Contract => {
            write!(stdout, "{}", Contract::builtin().to_markdown())?;
        }
    }
    Ok(())
}

/// The day of the lake's latest recorded deal change: the default as-of of `run`, taken from the
/// data and said, so a scheduled run is reproducible (the wall clock would not be).
async fn latest_recorded_day(lake: &Lake) -> Result<NaiveDate> {
    let session = LakeSession::open(lake, AsOf(None)).await?;
    let batches = session
        .ctx
        .sql("SELECT CAST(MAX(created_date) AS DATE) FROM staging.opportunity_history")
        .await?
        .collect()
        .await?;
    let day = batches.first().filter(|b| b.num_rows() > 0).and_then(|b| {
        b.column(0).as_any().downcast_ref::<datafusion::arrow::array::Date32Array>().and_then(|a| a.value_as_date(0))
    });
    day.ok_or_else(|| {
        Error::Other("the lake has no opportunity_history to date the run from: pass --as-of YYYY-MM-DD".into())
    })
}

/// Jobs do not run on a lake that breaks its contract (they would read empty tables as zeros).
fn refuse_broken(session: &LakeSession, lake: &Lake) -> Result<()> {
    let problems = session.contract_problems();
    if problems.is_empty() { Ok(()) } else { Err(Error::Contract { lake: lake.url.to_string(), problems }) }
}

/// Queries run on a lake with contract problems (analysts need to look at broken data), but say so.
async fn open_for_reading(lake: &Lake, as_of: AsOf) -> Result<LakeSession> {
    let session = LakeSession::open(lake, as_of).await?;
    let problems = session.contract_problems();
    if !problems.is_empty() {
        eprintln!(
            "warning: {} contract problem(s); the tables concerned read as empty. Run `gtm-loop validate` for details.",
            problems.len()
        );
    }
    Ok(session)
}
