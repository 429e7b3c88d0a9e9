//! The command line: one subcommand per thing a RevOps user or analyst does.
//! Parses arguments, opens the lake and its session, and hands each command to the library.

pub mod bench;
pub mod cadence;
pub mod jobs;
pub mod lake_cmds;
pub mod loop_cmds;
pub mod query;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use chrono::NaiveDate;
use clap::{Parser, Subcommand};

use crate::cli::query::OutputFormat;
use crate::demo::GenerateOptions;
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::lake::contract::Contract;
use crate::layers::{AsOf, LakeSession};

/// The demo lake: generated here on first use, git-ignored.
pub const DEFAULT_LAKE: &str = "lakes/demo";

#[derive(Parser, Debug)]
#[command(name = "gtm-loop", version, about = "Turns a go-to-market data lake into a learning loop")]
pub struct Cli {
    /// The lake: a local folder or an s3://, gs://, az:// URL.
    #[arg(long, global = true, env = "GTM_LOOP_LAKE", default_value = DEFAULT_LAKE)]
    pub lake: String,
    /// The lake profile (this lake's conventions: activity direction, role, stage and source
    /// names); default: lake.toml in the lake root, else data/profiles/default.toml.
    #[arg(long, global = true, env = "GTM_LOOP_PROFILE")]
    pub profile: Option<PathBuf>,
    /// Logs for schedulers: cadence runs print one JSON event per line on stdout (START,
    /// STEP_COMPLETE, STEP_FAIL, COMPLETE, FAIL, SKIP) instead of the jobs' text; `runs` prints JSON.
    #[arg(long, global = true)]
    pub json: bool,
    /// Where plans run: `embedded` (in this process, the default) or an Apache DataFusion
    /// Ballista scheduler as df://host:port (a build with `--features distributed`). The same
    /// staging, mart and job SQL runs on either; see "Scale-out" in the README.
    #[arg(long, global = true, env = "GTM_LOOP_ENGINE", default_value = "embedded")]
    pub engine: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// A cadence run. `run weekly|monthly|quarterly --as-of DATE` runs that loop (jobs/<cadence>.toml)
    /// for the period containing DATE and publishes it whole or not at all; `run due` (for a daily
    /// cron line) runs every ended period not yet done, oldest first. Plain `run` is the demo:
    /// generate the demo lake if absent, validate it, funnels, deal risk, KPIs and the report.
    Run {
        /// weekly, monthly, quarterly or due; none for the demo run.
        #[arg(value_enum)]
        cadence: Option<RunWhat>,
        /// See the lake as it stood at the end of this day (YYYY-MM-DD). Default for the demo run:
        /// the day of the lake's latest recorded deal change (said on the first line), never the
        /// wall clock. Required for weekly, monthly and quarterly.
        #[arg(long)]
        as_of: Option<NaiveDate>,
        /// For `run due`: the day it is (default: today's date, UTC). Periods that ended before it
        /// are due.
        #[arg(long)]
        today: Option<NaiveDate>,
        /// Run a period again even though it has a committed run.
        #[arg(long)]
        rerun: bool,
        /// A cadence declaration instead of the built-in jobs/<cadence>.toml.
        #[arg(long)]
        spec: Option<PathBuf>,
        /// Opportunities to generate when the demo lake is empty.
        #[arg(long, default_value_t = 2_000)]
        opportunities: u64,
    },
    /// Run past periods, oldest first: every period of the cadences whose last day is between
    /// --from and --to (done ones are skipped unless --rerun).
    Backfill {
        #[arg(long)]
        from: NaiveDate,
        #[arg(long)]
        to: NaiveDate,
        /// Only these cadences (repeatable; default all three).
        #[arg(long = "cadence", value_enum)]
        cadences: Vec<cadence::spec::Cadence>,
        #[arg(long)]
        rerun: bool,
    },
    /// Cadence runs recorded in the lake: list, show ID (a unique prefix).
    Runs {
        #[command(subcommand)]
        command: RunsCommand,
    },
    /// Remove the lake's lock left by a run that died (refused while its holder is alive).
    Unlock {
        /// Remove it even if this machine cannot tell whether the holder (on another host) is alive.
        #[arg(long)]
        force: bool,
    },
    /// Delete what runs that never committed left behind (never committed outputs or the logs).
    Gc {
        /// Keep unreferenced files younger than this, unless a dead run wrote them.
        #[arg(long, default_value_t = 3600)]
        min_age_secs: u64,
        /// Only list what would be deleted.
        #[arg(long)]
        dry_run: bool,
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
        /// A playbook file instead of the lake's approved versions (rollouts are then not applied).
        #[arg(long, conflicts_with = "playbook_version")]
        playbook: Option<PathBuf>,
        /// Pin every deal to one approved version (a hash, a prefix or a label such as v1), for backtests.
        #[arg(long)]
        playbook_version: Option<String>,
    },
    /// Outcome patterns (the quarterly learning loop): deal trajectories, then every condition of
    /// jobs/patterns.toml against every outcome, stratified by stage, by segment, with
    /// Benjamini-Hochberg and a holdout re-test (output.patterns, output.deal_trajectory).
    Patterns {
        #[arg(long)]
        as_of: NaiveDate,
        /// A patterns declaration instead of the built-in jobs/patterns.toml.
        #[arg(long)]
        job: Option<PathBuf>,
    },
    /// Fitted models (the quarterly learning loop): the win-probability model trained on deals
    /// closed before the last half-year and tested on those closed since, beside a stage-only model,
    /// the CRM's stage probability and (on generated lakes) the true probability; a probability per
    /// open deal (output.win_probability), output.model_metrics and the model card.
    /// Then the deal-risk weights: the playbook's score fitted on past deal-weeks (each scored as
    /// of its date, its outcome read 60 days later), tested on the latest third of the dates, and
    /// used by the weekly risk job only if they beat the priors there (output.risk_weights).
    Models {
        #[arg(long)]
        as_of: NaiveDate,
        /// A playbook file instead of the lake's current version (for the risk weights).
        #[arg(long, conflicts_with = "playbook_version")]
        playbook: Option<PathBuf>,
        #[arg(long)]
        playbook_version: Option<String>,
    },
    /// Playbook-update proposals, the approval gate and readouts (the learning loop).
    Proposals {
        #[command(subcommand)]
        command: loop_cmds::ProposalsCommand,
    },
    /// The lake's playbook versions: show, history, diff.
    Playbook {
        #[command(subcommand)]
        command: loop_cmds::PlaybookCommand,
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
        /// The lake's shape: `full` (every table of the contract, this project's conventions) or
        /// `salesforce-minimal` (a narrow Fivetran selection with Salesforce's own picklists and
        /// its lake.toml; see data/profiles/salesforce_minimal.toml).
        #[arg(long, value_enum, default_value_t = crate::demo::Shape::Full)]
        shape: crate::demo::Shape,
        /// Switch every planted effect off (same structure, same random draws): a null lake, on
        /// which `patterns` must report nothing significant.
        #[arg(long)]
        null_effects: bool,
        /// Also plant a condition with no effect that only occurs late (legal review in Proposal):
        /// a naive comparison credits it with late-stage win rates, a stratified one must not.
        #[arg(long)]
        confounded: bool,
        /// Simulate the world after an approval (a TOML file: from, assignment_key, treated_share,
        /// outcome = "won", effect); see `demo::Scenario`.
        #[arg(long)]
        scenario: Option<PathBuf>,
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
        #[arg(long, value_enum, default_value_t = crate::jobs::calendar::Grain::Month)]
        grain: crate::jobs::calendar::Grain,
        /// First month (1-12) of the fiscal year, for quarters.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=12))]
        fiscal_year_start: u32,
        /// Weeks start on Sunday (default Monday).
        #[arg(long)]
        week_starts_sunday: bool,
    },
    /// Time the cadences and each step on generated lakes at several scales (each unit its own
    /// process: wall, CPU, peak memory), with DuckDB doing the same work beside (--duckdb).
    Bench {
        /// One scale (deals in the lake); --scales takes several.
        #[arg(long, conflicts_with = "scales")]
        opportunities: Option<u64>,
        /// Comma-separated scales, e.g. 10000,100000,1000000 (default 10000,100000).
        #[arg(long, value_delimiter = ',')]
        scales: Vec<u64>,
        /// Reuse each scale's lake (<lake>/deals-<n>) where it exists instead of generating it.
        #[arg(long)]
        skip_generate: bool,
        /// The as-of date of the timed runs.
        #[arg(long, default_value = "2026-06-28")]
        as_of: NaiveDate,
        /// Also run the staging and funnel units in DuckDB (this Python must have the duckdb package).
        #[arg(long)]
        duckdb: Option<String>,
        /// Only these units (staging, validate, funnel, kpis, risk, patterns, weekly cadence,
        /// monthly cadence); all by default.
        #[arg(long = "unit")]
        units: Vec<String>,
        /// Also write the results: FILE.md (Markdown table), FILE.svg (time against scale), FILE.json.
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// Print the lake contract as Markdown (data/contract/CONTRACT.md is this output).
    Contract,
    /// A Ballista cluster in this process (a build with `--features distributed`): a scheduler on
    /// a free loopback port and its executors. Prints the scheduler's df:// address for `--engine`
    /// and serves until stopped. For several machines, see "Scale-out" in the README.
    Cluster {
        /// Executors to start.
        #[arg(long, default_value_t = 1)]
        executors: usize,
        /// Tasks each executor runs at once (default: this machine's cores).
        #[arg(long)]
        slots: Option<usize>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RunWhat {
    Weekly,
    Monthly,
    Quarterly,
    Due,
}

#[derive(Subcommand, Debug)]
pub enum RunsCommand {
    /// Every cadence run, oldest first, with its status.
    List,
    /// One run's manifest: steps, timings, outputs with row counts, inputs, code and playbook.
    Show { id: String },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let engine = cli.engine.clone();
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            let text = e.to_string();
            if engine.starts_with("df://") && (text.contains("tonic::transport") || text.contains("tcp connect error"))
            {
                eprintln!(
                    "hint: the Ballista scheduler at {engine} cannot be reached: start one (`gtm-loop cluster`, or \
                     ballista-scheduler and ballista-executor) or drop --engine / GTM_LOOP_ENGINE to run here"
                );
            }
            if let (true, Some(limit)) =
                (e.to_string().contains("Resources exhausted"), crate::layers::session::memory_limit())
            {
                eprintln!("hint: GTM_LOOP_MEMORY_LIMIT caps queries at {} MiB; raise or unset it", limit >> 20);
            }
            ExitCode::from(e.exit_code())
        }
    }
}

pub async fn run(cli: Cli) -> Result<()> {
    // Only the commands that make a lake create its folder (generate, import, bench without
    // --skip-generate); `run` makes one only at the default demo path, so a mistyped --lake is an
    // error, not a fresh demo lake.
    let creates = match &cli.command {
        Command::Generate { .. } | Command::Import { .. } | Command::Bench { skip_generate: false, .. } => true,
        Command::Run { cadence: None, .. } => cli.lake == DEFAULT_LAKE,
        _ => false,
    };
    let engine = crate::lake::engine::Engine::parse(&cli.engine)?;
    let mut stdout = std::io::stdout().lock();
    let out: &mut dyn Write = &mut stdout;
    if let Command::Cluster { executors, slots } = cli.command {
        return cluster(executors, slots, out).await;
    }
    let mut lake = if creates { Lake::create(&cli.lake)? } else { Lake::open(&cli.lake)? };
    lake.profile_file = cli.profile.clone();
    lake.engine = engine;
    let result = dispatch(cli, &lake, out).await;
    // What this process wrote for a cluster's executors goes, whatever the command's outcome.
    let cleaned = crate::layers::session::remove_scratch(&lake).await;
    result.and(cleaned)
}

/// Runs one command on an opened lake.
async fn dispatch(cli: Cli, lake: &Lake, out: &mut dyn Write) -> Result<()> {
    match cli.command {
        Command::Run { cadence: what, as_of, today, rerun, spec, opportunities } => {
            use cadence::spec::Cadence;
            let opts = cadence::runner::Options { rerun, json: cli.json, spec_file: spec };
            let need_as_of = || {
                as_of.ok_or_else(|| {
                    Error::Refused("give --as-of YYYY-MM-DD: the day the run reads the lake as of".into())
                })
            };
            match what {
                None => cadence::run(lake, as_of, opportunities, out).await,
                Some(RunWhat::Due) => {
                    if opts.spec_file.is_some() {
                        return Err(Error::Refused(
                            "run due uses the built-in jobs/*.toml; --spec is for one cadence".into(),
                        ));
                    }
                    let today = today.unwrap_or_else(|| chrono::Utc::now().date_naive());
                    cadence::runner::due(lake, today, &opts, out).await
                }
                Some(RunWhat::Weekly) => {
                    cadence::runner::run_one(lake, Cadence::Weekly, need_as_of()?, &opts, out).await
                }
                Some(RunWhat::Monthly) => {
                    cadence::runner::run_one(lake, Cadence::Monthly, need_as_of()?, &opts, out).await
                }
                Some(RunWhat::Quarterly) => {
                    cadence::runner::run_one(lake, Cadence::Quarterly, need_as_of()?, &opts, out).await
                }
            }
        }
        Command::Backfill { from, to, cadences, rerun } => {
            let opts = cadence::runner::Options { rerun, json: cli.json, spec_file: None };
            let cadences = if cadences.is_empty() { cadence::spec::Cadence::ALL.to_vec() } else { cadences };
            cadence::runner::backfill(lake, from, to, &cadences, &opts, out).await
        }
        Command::Runs { command: RunsCommand::List } => cadence::runs::list(lake, cli.json, out).await,
        Command::Runs { command: RunsCommand::Show { id } } => cadence::runs::show(lake, &id, cli.json, out).await,
        Command::Unlock { force } => Ok(write!(out, "{}", crate::outputs::cadence::unlock(lake, force).await?)?),
        Command::Gc { min_age_secs, dry_run } => cadence::runs::gc(lake, min_age_secs, dry_run, out).await,
        Command::Kpis { as_of, catalog, job, fiscal_year_start, week_starts_sunday } => {
            jobs::kpis(lake, as_of, catalog.as_deref(), job.as_deref(), fiscal_year_start, week_starts_sunday, out)
                .await
        }
        Command::Risk { as_of, playbook, playbook_version } => {
            jobs::risk(lake, as_of, playbook.as_deref(), playbook_version.as_deref(), out).await
        }
        Command::Models { as_of, playbook, playbook_version } => {
            jobs::models(lake, as_of, playbook.as_deref(), playbook_version.as_deref(), out).await
        }
        Command::Proposals { command } => loop_cmds::proposals_cmd(lake, command, out).await,
        Command::Playbook { command } => loop_cmds::playbook_cmd(lake, command, out).await,
        Command::Patterns { as_of, job } => jobs::patterns(lake, as_of, job.as_deref(), out).await,
        Command::Action { deal, did, why, by, on, as_of, from_tasks } => {
            let by_hand = jobs::ActionByHand { deal, did, why, by, on };
            jobs::action(lake, as_of, from_tasks, by_hand, out).await
        }
        Command::Backtest { from, to, every_days, horizon_days, playbook } => {
            jobs::backtest(lake, from, to, every_days, horizon_days, playbook.as_deref(), out).await
        }
        Command::Funnel { as_of, journey, journeys, by, grain, fiscal_year_start, week_starts_sunday } => {
            let cal = crate::jobs::calendar::Calendar {
                grain,
                fiscal_year_start_month: fiscal_year_start,
                week_starts_sunday,
            };
            jobs::funnel(lake, as_of, journey.as_deref(), journeys.as_deref(), &by, &cal, out).await
        }
        Command::Generate { opportunities, seed, end, days, usage_days, shape, null_effects, confounded, scenario } => {
            let scenario = scenario.as_deref().map(crate::demo::Scenario::load).transpose()?;
            let opts = GenerateOptions {
                opportunities,
                seed,
                end,
                days,
                usage_days,
                shape,
                null_effects,
                confounded,
                scenario,
            };
            lake_cmds::generate(lake, &opts, out).await
        }
        Command::Validate { as_of } => lake_cmds::validate(lake, as_of, out).await,
        Command::Import { mapping, source } => lake_cmds::import(lake, &mapping, &source, out).await,
        Command::Contract => Ok(write!(out, "{}", Contract::builtin().to_markdown())?),
        Command::Query { sql, as_of, format, out: file } => {
            query::query_command(lake, &sql, as_of, format, file.as_deref(), out).await
        }
        Command::Tables { as_of } => {
            let session = open_for_reading(lake, AsOf(as_of)).await?;
            Ok(write!(out, "{}", query::tables(&session).await?)?)
        }
        Command::Describe { table, as_of } => {
            let session = open_for_reading(lake, AsOf(as_of)).await?;
            Ok(write!(out, "{}", query::describe(&session, &table).await?)?)
        }
        Command::Bench { opportunities, scales, skip_generate, as_of, duckdb, units, report } => {
            let scales = match (opportunities, scales.is_empty()) {
                (Some(n), _) => vec![n],
                (None, true) => vec![10_000, 100_000],
                (None, false) => scales,
            };
            let opts = bench::Options { scales, skip_generate, as_of, duckdb, units };
            let measures = bench::run(lake, &opts, &mut std::io::stderr()).await?;
            if let Some(path) = report {
                let with = |ext: &str| path.with_extension(ext);
                std::fs::write(with("md"), bench::markdown(&measures))?;
                std::fs::write(with("svg"), bench::svg(&measures))?;
                std::fs::write(
                    with("json"),
                    serde_json::to_string_pretty(&measures).map_err(|e| Error::Other(e.to_string()))?,
                )?;
            }
            write!(out, "{}", bench::render(&measures, lake.url.as_str()))?;
            let failed: Vec<String> =
                measures.iter().filter(|m| m.failed).map(|m| format!("{} at {} deals", m.unit, m.deals)).collect();
            if failed.is_empty() {
                Ok(())
            } else {
                Err(Error::Other(format!(
                    "bench: {} unit(s) failed ({}); the report has how far each got",
                    failed.len(),
                    failed.join(", ")
                )))
            }
        }
        Command::Cluster { .. } => unreachable!("handled before a lake is opened"),
    }
}

/// `cluster`: a scheduler and executors in this process, serving until the process is stopped.
#[cfg(feature = "distributed")]
async fn cluster(executors: usize, slots: Option<usize>, out: &mut dyn Write) -> Result<()> {
    let slots = slots.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2));
    // Ballista logs its jobs and stages through `log`: on stderr, warnings by default, RUST_LOG=info
    // to follow each job.
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).try_init();
    let addr = crate::layers::cluster::start_local(executors, slots).await?;
    // The first line is the address, for scripts and tests that start a cluster and read it.
    writeln!(out, "df://localhost:{}", addr.port())?;
    writeln!(out, "ballista scheduler with {executors} executor(s) of {slots} task slot(s); stop with Ctrl-C")?;
    out.flush()?;
    std::future::pending::<()>().await;
    Ok(())
}

#[cfg(not(feature = "distributed"))]
async fn cluster(_executors: usize, _slots: Option<usize>, _out: &mut dyn Write) -> Result<()> {
    Err(Error::Refused(
        "this binary was built without the distributed engine; build it with `--features distributed`".into(),
    ))
}

/// Jobs do not run on a lake that breaks its contract (they would read empty tables as zeros).
pub(crate) fn refuse_broken(session: &LakeSession, lake: &Lake) -> Result<()> {
    let problems = session.contract_problems();
    if problems.is_empty() { Ok(()) } else { Err(Error::Contract { lake: lake.url.to_string(), problems }) }
}

/// Queries run on a lake with contract problems (analysts need to look at broken data), but say so.
pub(crate) async fn open_for_reading(lake: &Lake, as_of: AsOf) -> Result<LakeSession> {
    let session = crate::outputs::open_session(lake, as_of).await?;
    let problems = session.contract_problems();
    if !problems.is_empty() {
        eprintln!(
            "warning: {} contract problem(s); the tables concerned read as empty. Run `gtm-loop validate` for details.",
            problems.len()
        );
    }
    Ok(session)
}
