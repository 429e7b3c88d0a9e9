//! `bench`: the cadence on a scaled generated lake, with wall time and peak memory per step.
//! Speed is measured here, never in timed tests.

use std::time::Instant;

use chrono::NaiveDate;

use crate::demo::GenerateOptions;
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::layers::AsOf;

pub struct Step {
    pub name: String,
    pub seconds: f64,
    pub peak_rss_mib: Option<f64>,
    pub detail: String,
}

/// Peak resident memory of this process since the last reset, from /proc (Linux only).
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Resets the peak so each step reports its own (Linux: writing 5 to clear_refs).
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

async fn step<T, F: std::future::Future<Output = Result<T>>>(
    steps: &mut Vec<Step>,
    name: &str,
    work: F,
    detail: impl Fn(&T) -> String,
) -> Result<T> {
    reset_peak();
    let started = Instant::now();
    let out = work.await?;
    steps.push(Step {
        name: name.to_string(),
        seconds: started.elapsed().as_secs_f64(),
        peak_rss_mib: peak_rss_mib(),
        detail: detail(&out),
    });
    eprintln!("bench: {name} done in {:.1}s", started.elapsed().as_secs_f64());
    Ok(out)
}

pub async fn run(
    lake: &Lake,
    opportunities: u64,
    skip_generate: bool,
    as_of: NaiveDate,
    duckdb_python: Option<&str>,
) -> Result<Vec<Step>> {
    let mut steps = Vec::new();
    if !skip_generate {
        let opts = GenerateOptions { opportunities, ..Default::default() };
        step(&mut steps, "generate", crate::demo::generate(lake, &opts), |t| {
            format!("{} rows", t.row_counts.values().sum::<u64>())
        })
        .await?;
    }
    let session = step(
        &mut steps,
        "open (inspect files, plan views)",
        crate::outputs::open_session(lake, AsOf(Some(as_of))),
        |_| String::new(),
    )
    .await?;
    let sql = "SELECT stage_name, COUNT(*) AS deals, SUM(amount) AS amount FROM staging.opportunity \
               WHERE NOT is_closed GROUP BY 1 ORDER BY 1";
    step(
        &mut steps,
        "as-of pipeline query (open deals by stage)",
        async { crate::cli::query::run(&session, sql).await },
        |b| format!("{} stages", b.iter().map(|b| b.num_rows()).sum::<usize>()),
    )
    .await?;
    step(&mut steps, "validate (all checks, publish)", crate::quality::run(&session), |r| {
        format!("{} findings", r.findings.len())
    })
    .await?;
    let journeys = crate::jobs::funnel::load(None)?;
    let cal = crate::jobs::calendar::Calendar::default();
    // The like-for-like comparison with DuckDB: the sales-led step counts (entities and steps are
    // held one by one, as the funnel job does, then joined and counted).
    let sales_led = journeys.iter().find(|j| j.name == "sales_led").expect("built-in journey");
    let counts = |wide: String| {
        format!(
            "SELECT COUNT(t0), COUNT(t1), COUNT(t2), COUNT(t3), COUNT(t4), \
         percentile_cont(0.5) WITHIN GROUP (ORDER BY (date_part('epoch', t1) - date_part('epoch', t0)) / 86400.0) \
         FROM ({wide}) AS w"
        )
    };
    let work = async {
        let (wide, _, _) = crate::jobs::funnel::entity_sql(&session, sales_led, &[]).await?;
        let out = crate::cli::query::run(&session, &counts(wide)).await;
        crate::jobs::funnel::release_work(&session, sales_led)?;
        out
    };
    step(&mut steps, "sales-led funnel counts (DataFusion)", work, |b| {
        b.first()
            .map(|batch| {
                (0..batch.num_columns())
                    .filter_map(|c| datafusion::arrow::util::display::array_value_to_string(batch.column(c), 0).ok())
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    })
    .await?;
    let (rows, _, _) = step(
        &mut steps,
        "funnel (2 journeys, periods, cohorts, publish)",
        crate::jobs::funnel::run(&session, &journeys, None, &[], &cal),
        |(rows, _, _)| format!("{} step rows", rows.len()),
    )
    .await?;
    if let Some(python) = duckdb_python {
        steps.push(duckdb_funnel(lake, python, as_of, &rows)?);
    }
    Ok(steps)
}

/// The same sales-led funnel in DuckDB SQL on the same Parquet (bench/funnel_duckdb.py), timed in
/// its own process; its step counts must equal ours or the bench fails.
fn duckdb_funnel(lake: &Lake, python: &str, as_of: NaiveDate, ours: &[crate::jobs::funnel::StepRow]) -> Result<Step> {
    let dir = lake.url.to_file_path().map_err(|_| Error::Other("the DuckDB comparison needs a local lake".into()))?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/funnel_duckdb.py");
    let out = std::process::Command::new(python)
        .arg(script)
        .arg(&dir)
        .arg(as_of.to_string())
        .output()
        .map_err(|e| Error::Other(format!("cannot run {python}: {e}")))?;
    if !out.status.success() {
        return Err(Error::Other(format!("DuckDB reference failed: {}", String::from_utf8_lossy(&out.stderr))));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| Error::Other(format!("DuckDB reference output: {e}")))?;
    let theirs: Vec<i64> =
        v["entered"].as_array().map(|a| a.iter().filter_map(|x| x.as_i64()).collect()).unwrap_or_default();
    let mine: Vec<i64> =
        ours.iter().filter(|r| r.journey == "sales_led" && r.dimension == "(all)").map(|r| r.entered).collect();
    if theirs != mine {
        return Err(Error::Other(format!(
            "DuckDB and gtm-loop disagree on the sales-led funnel: {theirs:?} vs {mine:?}"
        )));
    }
    Ok(Step {
        name: format!("reference: {} (sales-led funnel SQL)", v["engine"].as_str().unwrap_or("duckdb")),
        seconds: v["seconds"].as_f64().unwrap_or(f64::NAN),
        peak_rss_mib: v["peak_rss_mib"].as_f64(),
        detail: format!("same counts: {theirs:?}"),
    })
}

pub fn render(steps: &[Step], lake: &str) -> String {
    let mut out = format!(
        "benchmark on {lake}, {} cores\n{:<50} {:>10} {:>14}  {}\n",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "step",
        "seconds",
        "peak RSS MiB",
        "detail"
    );
    for s in steps {
        out.push_str(&format!(
            "{:<50} {:>10.1} {:>14}  {}\n",
            s.name,
            s.seconds,
            s.peak_rss_mib.map(|m| format!("{m:.0}")).unwrap_or_else(|| "n/a".into()),
            s.detail
        ));
    }
    out
}
