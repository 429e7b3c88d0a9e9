//! `bench`: the cadence on a scaled generated lake, with wall time and peak memory per step.
//! Speed is measured here, never in timed tests.

use std::time::Instant;

use chrono::NaiveDate;

use crate::catalog::{AsOf, LakeSession};
use crate::error::Result;
use crate::generate::GenerateOptions;
use crate::lake::Lake;

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

pub async fn run(lake: &Lake, opportunities: u64, skip_generate: bool, as_of: NaiveDate) -> Result<Vec<Step>> {
    let mut steps = Vec::new();
    if !skip_generate {
        let opts = GenerateOptions { opportunities, ..Default::default() };
        step(&mut steps, "generate", crate::generate::generate(lake, &opts), |t| {
            format!("{} rows", t.row_counts.values().sum::<u64>())
        })
        .await?;
    }
    let session =
        step(&mut steps, "open (inspect files, plan views)", LakeSession::open(lake, AsOf(Some(as_of))), |_| {
            String::new()
        })
        .await?;
    let sql = "SELECT stage_name, COUNT(*) AS deals, SUM(amount) AS amount FROM staging.opportunity \
               WHERE NOT is_closed GROUP BY 1 ORDER BY 1";
    step(
        &mut steps,
        "as-of pipeline query (open deals by stage)",
        async { crate::query::run(&session, sql).await },
        |b| format!("{} stages", b.iter().map(|b| b.num_rows()).sum::<usize>()),
    )
    .await?;
    step(&mut steps, "validate (all checks, publish)", crate::validate::run(&session), |r| {
        format!("{} findings", r.findings.len())
    })
    .await?;
    Ok(steps)
}

pub fn render(steps: &[Step], opportunities: u64) -> String {
    let mut out = format!(
        "benchmark: {opportunities} opportunities, {} cores\n{:<44} {:>10} {:>14}  {}\n",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "step",
        "seconds",
        "peak RSS MiB",
        "detail"
    );
    for s in steps {
        out.push_str(&format!(
            "{:<44} {:>10.1} {:>14}  {}\n",
            s.name,
            s.seconds,
            s.peak_rss_mib.map(|m| format!("{m:.0}")).unwrap_or_else(|| "n/a".into()),
            s.detail
        ));
    }
    out
}
