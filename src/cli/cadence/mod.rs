//! `run`: the demo's one command and today's cadence in order: validate, the journey funnels,
//! deal risk, then the KPI hierarchy with the leadership report, all as of one date.
//! Below it, the scheduled cadences: their declarations and periods (`spec`), the runner that
//! publishes a period whole or not at all (`runner`), and what runs left behind (`runs`).

pub mod runner;
pub mod runs;
pub mod spec;

use std::io::Write;

use chrono::NaiveDate;

use crate::cli::{jobs, lake_cmds};
use crate::demo::GenerateOptions;
use crate::error::{Error, Result};
use crate::jobs::calendar::Calendar;
use crate::lake::Lake;
use crate::layers::AsOf;

/// Generates the demo lake if the lake has no raw data, then runs every job as of `as_of` (default:
/// the lake's latest recorded deal change).
pub async fn run(lake: &Lake, as_of: Option<NaiveDate>, opportunities: u64, stdout: &mut dyn Write) -> Result<()> {
    if lake.list("raw/").await?.is_empty() {
        if lake.location != crate::cli::DEFAULT_LAKE {
            return Err(Error::Refused(format!(
                "no raw data in {}: the demo lake is generated only at the default path {} (so a mistyped --lake \
                 never becomes a demo). Check the path, or make a demo lake here with `gtm-loop generate --lake {}`",
                lake.location,
                crate::cli::DEFAULT_LAKE,
                lake.location
            )));
        }
        eprintln!("no raw data in {}: generating the demo lake ({opportunities} opportunities)", lake.url);
        crate::demo::generate(lake, &GenerateOptions { opportunities, ..Default::default() }).await?;
    }
    let as_of = match as_of {
        Some(d) => d,
        None => {
            let d = latest_recorded_day(lake).await?;
            writeln!(stdout, "as of {d}: the lake's latest recorded deal change (pass --as-of to choose)")?;
            d
        }
    };
    let session = crate::outputs::open_session(lake, AsOf(Some(as_of))).await?;
    lake_cmds::validate_in(&session, stdout).await?;
    // Monthly performance loop: journey funnels.
    writeln!(stdout)?;
    let journeys = crate::jobs::funnel::load_for(&session, None)?;
    jobs::funnel_in(&session, &journeys, None, &[], &Calendar::default(), stdout).await?;
    // Weekly execution loop: deal risk.
    writeln!(stdout)?;
    jobs::risk_in(&session, &crate::cli::loop_cmds::assignment(lake, as_of, None, None).await?, stdout).await?;
    // Monthly performance loop: the KPI hierarchy and the leadership report.
    writeln!(stdout)?;
    let (job, catalog) = crate::jobs::kpi::load(None, None)?;
    jobs::kpis_in(&session, &job, &catalog, 1, false, stdout).await?;
    Ok(())
}

/// The day of the lake's latest recorded deal change: the default as-of of `run`, taken from the
/// data and said, so a scheduled run is reproducible (the wall clock would not be).
async fn latest_recorded_day(lake: &Lake) -> Result<NaiveDate> {
    let session = crate::outputs::open_session(lake, AsOf(None)).await?;
    recorded_day(&session, "MAX").await?.ok_or_else(|| {
        Error::Other("the lake has no opportunity_history to date the run from: pass --as-of YYYY-MM-DD".into())
    })
}

/// The first (`MIN`) or latest (`MAX`) day with a deal change the session sees; None when it sees
/// none (an as-of date before any data, or no history landed). Read from the known rows, which
/// staging.opportunity_history only projects: that table is held sorted, a sort this does not need.
pub(crate) async fn recorded_day(session: &crate::layers::LakeSession, agg: &str) -> Result<Option<NaiveDate>> {
    let sql = format!("SELECT CAST({agg}(created_date) AS DATE) FROM known.opportunity_history");
    let batches = session.ctx.sql(&sql).await?.collect().await?;
    Ok(batches.first().filter(|b| b.num_rows() > 0).and_then(|b| {
        let days = b.column(0).as_any().downcast_ref::<datafusion::arrow::array::Date32Array>()?;
        // MIN/MAX over no rows is NULL, whose slot would read as 1970-01-01.
        datafusion::arrow::array::Array::is_valid(days, 0).then(|| days.value_as_date(0)).flatten()
    }))
}
