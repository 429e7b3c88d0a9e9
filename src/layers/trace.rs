//! Where a run's time and memory go, for operators sizing a lake: with `GTM_LOOP_TRACE=1` every
//! declared query and every shared-table computation prints one line on stderr with its wall
//! time, rows, and the process's resident and peak memory after it; with `GTM_LOOP_TRACE=plan`
//! each shared table's executed plan is printed too, with every operator's metrics (rows out,
//! time, spills). The deal trajectory, run slice by slice, prints one line per step with its
//! planning and running time and rows summed over the slices. Off by default; nothing is printed
//! and nothing is read from /proc unless set.

use std::time::Instant;

/// Whether tracing is on (GTM_LOOP_TRACE set to anything but "" or "0").
pub fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("GTM_LOOP_TRACE").map(|v| !v.is_empty() && v != "0").unwrap_or(false))
}

/// Whether executed plans are printed too (GTM_LOOP_TRACE=plan).
pub fn plans() -> bool {
    enabled() && std::env::var("GTM_LOOP_TRACE").is_ok_and(|v| v == "plan")
}

/// Prints an executed plan with its metrics when GTM_LOOP_TRACE=plan.
pub fn plan(what: &str, plan: &dyn datafusion::physical_plan::ExecutionPlan) {
    if plans() {
        let shown = datafusion::physical_plan::display::DisplayableExecutionPlan::with_metrics(plan).indent(true);
        eprintln!("trace: plan of {what}:\n{shown}");
    }
}

/// Resident and peak resident memory of this process in MiB (Linux /proc; None elsewhere).
pub fn memory_mib() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kib| kib >> 10)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// A started step; `done` prints its line when tracing is on.
pub struct Span {
    what: String,
    start: Instant,
}

pub fn start(what: impl Into<String>) -> Option<Span> {
    enabled().then(|| Span { what: what.into(), start: Instant::now() })
}

impl Span {
    /// The time since the span started.
    pub fn elapsed(&self) -> std::time::Duration {
        self.start.elapsed()
    }

    pub fn done(self, detail: &str) {
        let (rss, peak) = memory_mib().unwrap_or((0, 0));
        let (_, _, shared) = crate::layers::shared::stats();
        eprintln!(
            "trace: {:>8.2} s  rss {:>6} MiB  peak {:>6} MiB  pool {:>6} MiB  shared {:>6} MiB  {}  {}",
            self.start.elapsed().as_secs_f64(),
            rss,
            peak,
            crate::layers::session::pool_reserved() >> 20,
            shared >> 20,
            self.what,
            detail
        );
    }
}
