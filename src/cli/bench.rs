//! `bench`: the cadences and each SQL-shaped step on generated lakes at several scales, each in its
//! own process, with wall time, CPU time and peak memory; DuckDB runs the same semantics beside.
//! Speed is measured here, never in timed tests.
//!
//! Every unit is a child process (this binary with the step's own command line, or DuckDB's
//! Python), timed by this process and measured with `wait4`: CPU time is user + system of the
//! child, peak memory its `ru_maxrss`. A child starts cold: nothing is shared between units, so a
//! step alone pays for reading the lake, as it does when cron runs it. The DuckDB side must give
//! the same answers (row counts of every known table, the open pipeline, the sales-led funnel) or
//! the bench fails.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use chrono::NaiveDate;

use crate::error::{Error, Result};
use crate::lake::Lake;

/// One timed unit at one scale.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Measure {
    pub deals: u64,
    pub unit: String,
    pub engine: String,
    pub seconds: f64,
    pub cpu_seconds: f64,
    pub peak_rss_mib: f64,
    pub detail: String,
    /// The unit did not finish (an error exit, or killed: out of memory is SIGKILL). The report
    /// keeps it, with its time and peak up to the failure, and the remaining units still run.
    #[serde(default)]
    pub failed: bool,
}

/// Why a child failed, for the report: its exit or signal, and its last line of stderr.
fn failure(out: &std::process::Output) -> String {
    let how = match out.status.code() {
        Some(code) if code > 128 => match code - 128 {
            9 => "killed (SIGKILL: out of memory?)".to_string(),
            sig => format!("killed by signal {sig}"),
        },
        Some(code) => format!("exit {code}"),
        None => "killed".to_string(),
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").chars().take(120).collect::<String>();
    if last.is_empty() { format!("FAILED: {how}") } else { format!("FAILED: {how}: {last}") }
}

pub struct Options {
    pub scales: Vec<u64>,
    pub skip_generate: bool,
    pub as_of: NaiveDate,
    pub duckdb: Option<String>,
    /// Only these units (all when empty).
    pub units: Vec<String>,
}

/// The tables the staging unit counts on both engines (bench/asof.py declares the same).
const COUNTED: &[&str] = &[
    "account",
    "contact",
    "opportunity",
    "opportunity_history",
    "opportunity_stage",
    "opportunity_contact_role",
    "task",
    "event",
    "lead",
    "lead_history",
    "user",
    "user_role",
];

const PIPELINE: &str = "SELECT stage_name, COUNT(*) AS deals, SUM(amount) AS amount FROM staging.opportunity \
                        WHERE NOT is_closed GROUP BY 1 ORDER BY 1";

/// The funnel unit of the sales-led journey alone, which DuckDB's funnel reference runs beside.
const FUNNEL_SALES_LED: &str = "funnel (sales-led)";

/// The units, in the order they run: (name, arguments after `--lake DIR`).
fn units(as_of: NaiveDate) -> Vec<(&'static str, Vec<String>)> {
    let d = as_of.to_string();
    let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let counts = COUNTED
        .iter()
        .map(|t| format!("SELECT '{t}' AS table_name, COUNT(*) AS n FROM known.{t}"))
        .chain([format!("SELECT 'pipeline:' || stage_name AS table_name, deals AS n FROM ({PIPELINE}) AS p")])
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    vec![
        ("staging", a(&["query", "--as-of", &d, "--format", "json", &counts])),
        ("validate", a(&["validate", "--as-of", &d])),
        ("funnel", a(&["funnel", "--as-of", &d])),
        // The journey DuckDB's reference computes, alone: like for like but for what the job does
        // beyond counting (intervals, breakdowns, time to convert, publishing).
        (FUNNEL_SALES_LED, a(&["funnel", "--as-of", &d, "--journey", "sales_led"])),
        ("kpis", a(&["kpis", "--as-of", &d])),
        ("risk", a(&["risk", "--as-of", &d])),
        ("patterns", a(&["patterns", "--as-of", &d])),
        ("weekly cadence", a(&["run", "weekly", "--as-of", &d, "--rerun"])),
        ("monthly cadence", a(&["run", "monthly", "--as-of", &d, "--rerun"])),
    ]
}

/// Runs a child to its end and measures it: wall, CPU (user + system) and peak RSS.
fn measured(mut cmd: Command, what: &str) -> Result<(std::process::Output, f64, f64, f64)> {
    use std::io::Read;
    cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let started = Instant::now();
    let mut child = cmd.spawn().map_err(|e| Error::Other(format!("bench: cannot start {what}: {e}")))?;
    // Read the pipes on threads so a chatty child never blocks on a full pipe.
    let mut out_pipe = child.stdout.take().expect("piped");
    let mut err_pipe = child.stderr.take().expect("piped");
    let out_thread = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out_pipe.read_to_end(&mut v);
        v
    });
    let err_thread = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err_pipe.read_to_end(&mut v);
        v
    });
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain data; wait4 fills it for the child we spawned and reaps it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let seconds = started.elapsed().as_secs_f64();
    if waited != pid {
        return Err(Error::Other(format!("bench: waiting for {what} failed: {}", std::io::Error::last_os_error())));
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let cpu = tv(usage.ru_utime) + tv(usage.ru_stime);
    let peak_mib = usage.ru_maxrss as f64 / 1024.0;
    let stdout = out_thread.join().unwrap_or_default();
    let stderr = err_thread.join().unwrap_or_default();
    let code = if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 128 + libc::WTERMSIG(status) };
    let output = std::process::Output { status: exit_status(code), stdout, stderr };
    Ok((output, seconds, cpu, peak_mib))
}

fn exit_status(code: i32) -> std::process::ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    std::process::ExitStatus::from_raw(code << 8)
}

fn lake_dir(root: &Path, deals: u64) -> PathBuf {
    root.join(format!("deals-{deals}"))
}

/// Runs the benchmark; every scale's lake is `<lake>/deals-<n>`.
pub async fn run(lake: &Lake, opts: &Options, progress: &mut dyn std::io::Write) -> Result<Vec<Measure>> {
    let root = lake.url.to_file_path().map_err(|_| Error::Other("bench needs a local lake folder".into()))?;
    let exe = std::env::current_exe().map_err(|e| Error::Other(format!("bench: cannot find its own binary: {e}")))?;
    let mut all = Vec::new();
    for &deals in &opts.scales {
        let dir = lake_dir(&root, deals);
        let dir_s = dir.to_string_lossy().to_string();
        if !opts.skip_generate || !dir.join("raw").is_dir() {
            // In a child too: a parent that had generated the lake in memory would pass its own
            // peak on to every child (Linux keeps ru_maxrss across fork and exec).
            let mut cmd = Command::new(&exe);
            cmd.arg("--lake").arg(&dir_s).args(["generate", "--opportunities", &deals.to_string()]);
            std::fs::create_dir_all(&dir)?;
            let (out, seconds, _, peak) = measured(cmd, "generate")?;
            if !out.status.success() {
                return Err(Error::Other(format!("bench: generate failed: {}", String::from_utf8_lossy(&out.stderr))));
            }
            writeln!(progress, "bench: generated {deals} deals in {seconds:.0}s ({peak:.0} MiB)")?;
        }
        let mut staging_ours: Option<Vec<(String, i64)>> = None;
        for (unit, args) in units(opts.as_of) {
            if !opts.units.is_empty() && !opts.units.iter().any(|u| u == unit) {
                continue;
            }
            let mut cmd = Command::new(&exe);
            cmd.arg("--lake").arg(&dir_s).args(&args).env_remove("GTM_LOOP_LAKE");
            let (out, seconds, cpu, peak) = measured(cmd, unit)?;
            if !out.status.success() {
                let detail = failure(&out);
                writeln!(progress, "bench: {deals} deals, {unit}: {detail} after {seconds:.1}s, {peak:.0} MiB")?;
                all.push(Measure {
                    deals,
                    unit: unit.to_string(),
                    engine: "gtm-loop".into(),
                    seconds,
                    cpu_seconds: cpu,
                    peak_rss_mib: peak,
                    detail,
                    failed: true,
                });
                continue;
            }
            let stdout = String::from_utf8_lossy(&out.stdout).to_string();
            let detail = match unit {
                "staging" => {
                    let counts = json_counts(&stdout)?;
                    let rows: i64 = counts.iter().filter(|(t, _)| !t.starts_with("pipeline:")).map(|(_, n)| n).sum();
                    staging_ours = Some(counts);
                    format!("{rows} known rows")
                }
                _ => stdout.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").chars().take(80).collect(),
            };
            writeln!(progress, "bench: {deals} deals, {unit}: {seconds:.1}s, {peak:.0} MiB")?;
            all.push(Measure {
                deals,
                unit: unit.to_string(),
                engine: "gtm-loop".into(),
                seconds,
                cpu_seconds: cpu,
                peak_rss_mib: peak,
                detail,
                failed: false,
            });
            if let Some(python) = &opts.duckdb {
                let reference = match unit {
                    "staging" => {
                        Some(duckdb_staging(python, &dir, opts.as_of, staging_ours.as_deref().unwrap_or(&[]))?)
                    }
                    FUNNEL_SALES_LED => Some(duckdb_funnel(&exe, python, &dir_s, opts.as_of)?),
                    _ => None,
                };
                if let Some(mut m) = reference {
                    m.deals = deals;
                    writeln!(
                        progress,
                        "bench: {deals} deals, {unit} (DuckDB): {:.1}s, {:.0} MiB",
                        m.seconds, m.peak_rss_mib
                    )?;
                    all.push(m);
                }
            }
        }
    }
    Ok(all)
}

/// (table, count) pairs from `query --format json` lines.
fn json_counts(stdout: &str) -> Result<Vec<(String, i64)>> {
    let mut out = Vec::new();
    for line in stdout.lines().filter(|l| l.trim_start().starts_with('{')) {
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| Error::Other(format!("bench: staging output {line:?}: {e}")))?;
        out.push((v["table_name"].as_str().unwrap_or("").to_string(), v["n"].as_i64().unwrap_or(-1)));
    }
    out.sort();
    Ok(out)
}

fn script(name: &str) -> String {
    format!("{}/bench/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// The staging unit in DuckDB: every counted table and the open pipeline must equal ours.
fn duckdb_staging(python: &str, dir: &Path, as_of: NaiveDate, ours: &[(String, i64)]) -> Result<Measure> {
    let mut cmd = Command::new(python);
    cmd.arg(script("staging_duckdb.py")).arg(dir).arg(as_of.to_string());
    let (out, seconds, cpu, peak) = measured(cmd, "the DuckDB staging reference")?;
    let v = reference_json(&out)?;
    let mut theirs: Vec<(String, i64)> = v["counts"]
        .as_object()
        .map(|m| m.iter().map(|(k, n)| (k.clone(), n.as_i64().unwrap_or(-1))).collect())
        .unwrap_or_default();
    for row in v["pipeline"].as_array().into_iter().flatten() {
        theirs.push((format!("pipeline:{}", row[0].as_str().unwrap_or("")), row[1].as_i64().unwrap_or(-1)));
    }
    theirs.sort();
    if theirs != ours {
        return Err(Error::Other(format!(
            "DuckDB and gtm-loop disagree on the staged tables:\n  duckdb:   {theirs:?}\n  gtm-loop: {ours:?}"
        )));
    }
    Ok(Measure {
        deals: 0,
        unit: "staging".into(),
        engine: v["engine"].as_str().unwrap_or("duckdb").into(),
        seconds,
        cpu_seconds: cpu,
        peak_rss_mib: peak,
        detail: format!("same counts ({} tables, {} open stages)", COUNTED.len(), theirs.len() - COUNTED.len()),
        failed: false,
    })
}

/// The sales-led funnel in DuckDB (bench/funnel_duckdb.py): every cell the funnel unit just
/// published in funnel_steps and funnel_breakdown (overall and per breakdown value, each step's
/// entities, median and 90th-percentile days to the next step) must equal DuckDB's.
fn duckdb_funnel(exe: &Path, python: &str, dir: &str, as_of: NaiveDate) -> Result<Measure> {
    let cells = |table: &str| {
        format!(
            "SELECT dimension, value, step_index, entered, median_days, p90_days FROM output.{table} \
             WHERE journey = 'sales_led' AND as_of_date = DATE '{as_of}'"
        )
    };
    let sql = format!("{} UNION ALL {}", cells("funnel_steps"), cells("funnel_breakdown"));
    let ours = Command::new(exe)
        .args(["--lake", dir, "query", "--format", "json", &sql])
        .output()
        .map_err(|e| Error::Other(format!("bench: reading the funnel output: {e}")))?;
    let mine: Vec<Cell> = String::from_utf8_lossy(&ours.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| {
            Cell::of(&[
                &v["dimension"],
                &v["value"],
                &v["step_index"],
                &v["entered"],
                &v["median_days"],
                &v["p90_days"],
            ])
        })
        .collect();
    let mut cmd = Command::new(python);
    cmd.arg(script("funnel_duckdb.py")).arg(dir).arg(as_of.to_string());
    let (out, seconds, cpu, peak) = measured(cmd, "the DuckDB funnel reference")?;
    let v = reference_json(&out)?;
    let theirs: Vec<Cell> = v["cells"]
        .as_array()
        .map(|a| a.iter().filter_map(|c| c.as_array()).map(|c| Cell::of(&c.iter().collect::<Vec<_>>())).collect())
        .unwrap_or_default();
    if let Some(problem) = Cell::differ(&mine, &theirs) {
        return Err(Error::Other(format!("DuckDB and gtm-loop disagree on the sales-led funnel: {problem}")));
    }
    let entered: Vec<i64> =
        v["entered"].as_array().map(|a| a.iter().filter_map(|x| x.as_i64()).collect()).unwrap_or_default();
    Ok(Measure {
        deals: 0,
        unit: FUNNEL_SALES_LED.into(),
        engine: v["engine"].as_str().unwrap_or("duckdb").into(),
        seconds,
        cpu_seconds: cpu,
        peak_rss_mib: peak,
        detail: format!("same {} cells (steps and breakdowns, counts and days); entered {entered:?}", mine.len()),
        failed: false,
    })
}

/// One published funnel cell: (dimension, value, step), its entities and days to the next step.
#[derive(Debug, Clone, PartialEq)]
struct Cell {
    at: (String, String, i64),
    entered: Option<i64>,
    days: [Option<f64>; 2],
}

impl Cell {
    fn of(v: &[&serde_json::Value]) -> Cell {
        let text = |x: &serde_json::Value| x.as_str().map(str::to_string).unwrap_or_else(|| x.to_string());
        let get = |i: usize| v.get(i).copied().unwrap_or(&serde_json::Value::Null);
        Cell {
            at: (text(get(0)), text(get(1)), get(2).as_i64().unwrap_or(-1)),
            entered: get(3).as_i64(),
            days: [get(4).as_f64(), get(5).as_f64()],
        }
    }

    /// The first difference between two sets of cells (in any order), if any: the same cells, the
    /// same counts, days within a thousandth of a day (86 ms). Both engines interpolate between the
    /// same two values, but DataFusion's percentile_cont truncates the interpolation weight to
    /// millionths (0.8 can become 0.799999): a 90th percentile between values 3.8 days apart
    /// came out 0.33 s below DuckDB's.
    fn differ(mine: &[Cell], theirs: &[Cell]) -> Option<String> {
        if mine.is_empty() {
            return Some("gtm-loop published no cells".into());
        }
        if mine.len() != theirs.len() {
            return Some(format!("{} cells against DuckDB's {}", mine.len(), theirs.len()));
        }
        let index: std::collections::HashMap<_, _> = theirs.iter().map(|c| (c.at.clone(), c)).collect();
        for c in mine {
            let Some(t) = index.get(&c.at) else { return Some(format!("{:?} is not in DuckDB's cells", c.at)) };
            let close = |a: Option<f64>, b: Option<f64>| match (a, b) {
                (Some(a), Some(b)) => (a - b).abs() <= 1e-3,
                (a, b) => a.is_none() && b.is_none(),
            };
            if c.entered != t.entered || !close(c.days[0], t.days[0]) || !close(c.days[1], t.days[1]) {
                return Some(format!(
                    "{:?}: {:?} {:?} against DuckDB's {:?} {:?}",
                    c.at, c.entered, c.days, t.entered, t.days
                ));
            }
        }
        None
    }
}

fn reference_json(out: &std::process::Output) -> Result<serde_json::Value> {
    if !out.status.success() {
        return Err(Error::Other(format!("DuckDB reference failed: {}", String::from_utf8_lossy(&out.stderr))));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| Error::Other(format!("DuckDB reference output: {e}")))
}

/// The results as a fixed-width table (what `bench` prints).
pub fn render(measures: &[Measure], lake: &str) -> String {
    let mut out = format!(
        "benchmark on {lake}, {} cores\n{:>9}  {:<26} {:<14} {:>9} {:>9} {:>9}  {}\n",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "deals",
        "unit",
        "engine",
        "wall s",
        "cpu s",
        "peak MiB",
        "detail"
    );
    for m in measures {
        out.push_str(&format!(
            "{:>9}  {:<26} {:<14} {:>9.1} {:>9.1} {:>9.0}  {}\n",
            m.deals, m.unit, m.engine, m.seconds, m.cpu_seconds, m.peak_rss_mib, m.detail
        ));
    }
    out
}

/// The results as a Markdown table, with DuckDB's time beside ours and the ratio.
pub fn markdown(measures: &[Measure]) -> String {
    let mut out = String::from(
        "| deals | unit | gtm-loop wall s | cpu s | peak MiB | DuckDB wall s | DuckDB peak MiB | ratio |\n\
         |---:|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for m in measures.iter().filter(|m| m.engine == "gtm-loop") {
        let reference = measures.iter().find(|r| r.engine != "gtm-loop" && r.deals == m.deals && r.unit == m.unit);
        let (dw, dp, ratio) = match reference {
            Some(r) => {
                (format!("{:.1}", r.seconds), format!("{:.0}", r.peak_rss_mib), format!("{:.2}", m.seconds / r.seconds))
            }
            None => ("".into(), "".into(), "".into()),
        };
        if m.failed {
            out.push_str(&format!(
                "| {} | {} | {} after {:.1} | {:.1} | {:.0} | {dw} | {dp} | |\n",
                m.deals,
                m.unit,
                m.detail.replace('|', "/"),
                m.seconds,
                m.cpu_seconds,
                m.peak_rss_mib
            ));
            continue;
        }
        out.push_str(&format!(
            "| {} | {} | {:.1} | {:.1} | {:.0} | {dw} | {dp} | {ratio} |\n",
            m.deals, m.unit, m.seconds, m.cpu_seconds, m.peak_rss_mib
        ));
    }
    out
}

/// Time against scale, log-log, one line per unit (DuckDB dashed): a self-contained SVG.
pub fn svg(measures: &[Measure]) -> String {
    // A failed unit has no time to plot (the table says how far it got).
    let finished: Vec<Measure> = measures.iter().filter(|m| !m.failed).cloned().collect();
    let measures = &finished[..];
    let (w, h, left, right, top, bottom) = (860.0, 460.0, 70.0, 330.0, 30.0, 50.0);
    let xs: Vec<f64> = measures.iter().map(|m| (m.deals as f64).max(1.0).log10()).collect();
    let ys: Vec<f64> = measures.iter().map(|m| m.seconds.max(0.01).log10()).collect();
    let (x0, x1) =
        (xs.iter().cloned().fold(f64::MAX, f64::min).floor(), xs.iter().cloned().fold(f64::MIN, f64::max).ceil());
    let (y0, y1) =
        (ys.iter().cloned().fold(f64::MAX, f64::min).floor(), ys.iter().cloned().fold(f64::MIN, f64::max).ceil());
    let (x1, y1) = (if x1 > x0 { x1 } else { x0 + 1.0 }, if y1 > y0 { y1 } else { y0 + 1.0 });
    let px = |x: f64| left + (x - x0) / (x1 - x0) * (w - left - right);
    let py = |y: f64| h - bottom - (y - y0) / (y1 - y0) * (h - top - bottom);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    let mut e = 0.0f64;
    while x0 + e <= x1 + 1e-9 {
        let x = px(x0 + e);
        s.push_str(&format!(
            "<line x1=\"{x:.1}\" y1=\"{top}\" x2=\"{x:.1}\" y2=\"{}\" stroke=\"#ddd\"/><text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
            h - bottom,
            h - bottom + 16.0,
            thousands(10f64.powf(x0 + e))
        ));
        e += 1.0;
    }
    let mut e = 0.0f64;
    while y0 + e <= y1 + 1e-9 {
        let y = py(y0 + e);
        s.push_str(&format!(
            "<line x1=\"{left}\" y1=\"{y:.1}\" x2=\"{}\" y2=\"{y:.1}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{} s</text>\n",
            w - right,
            left - 6.0,
            y + 4.0,
            10f64.powf(y0 + e)
        ));
        e += 1.0;
    }
    s.push_str(&format!(
        "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">deals in the lake (log)</text>\n<text x=\"14\" y=\"{:.1}\" transform=\"rotate(-90 14 {:.1})\" text-anchor=\"middle\">wall time (log)</text>\n",
        (left + w - right) / 2.0,
        h - 12.0,
        h / 2.0,
        h / 2.0
    ));
    let colours = [
        "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf", "#bcbd22",
        "#000000",
    ];
    let mut series: Vec<(String, String)> = Vec::new();
    for m in measures {
        let key = (m.unit.clone(), m.engine.clone());
        if !series.contains(&key) {
            series.push(key);
        }
    }
    for (i, (unit, engine)) in series.iter().enumerate() {
        let base = unit.split(" (").next().unwrap_or(unit);
        let ci = series
            .iter()
            .map(|(u, _)| u.split(" (").next().unwrap_or(u).to_string())
            .position(|u| u == base)
            .unwrap_or(i);
        let colour = colours[ci % colours.len()];
        let dash = if engine == "gtm-loop" { "" } else { " stroke-dasharray=\"5,4\"" };
        let pts: Vec<(f64, f64)> = measures
            .iter()
            .filter(|m| &m.unit == unit && &m.engine == engine)
            .map(|m| (px((m.deals as f64).max(1.0).log10()), py(m.seconds.max(0.01).log10())))
            .collect();
        let path = pts.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect::<Vec<_>>().join(" ");
        s.push_str(&format!(
            "<polyline points=\"{path}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"{dash}/>\n"
        ));
        for (x, y) in &pts {
            s.push_str(&format!("<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"3\" fill=\"{colour}\"/>\n"));
        }
        let ly = top + 16.0 * i as f64;
        let lx = w - right + 12.0;
        s.push_str(&format!(
            "<line x1=\"{lx}\" y1=\"{ly}\" x2=\"{}\" y2=\"{ly}\" stroke=\"{colour}\" stroke-width=\"2\"{dash}/><text x=\"{}\" y=\"{}\">{}</text>\n",
            lx + 22.0,
            lx + 28.0,
            ly + 4.0,
            crate::outputs::markup::esc(&if engine == "gtm-loop" { unit.clone() } else { format!("{unit}, {engine}") })
        ));
    }
    s.push_str("</svg>\n");
    s
}

fn thousands(n: f64) -> String {
    let n = n.round() as u64;
    match n {
        n if n >= 1_000_000 => format!("{}M", n / 1_000_000),
        n if n >= 1_000 => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The funnel check: the same cells in another order pass, days off by less than a thousandth
    /// of a day pass, and a count, a day beyond that, a missing median or a missing cell fail.
    #[test]
    fn funnel_cells_match_only_when_every_count_and_day_does() {
        let cell = |value: &str, step: i64, entered: i64, median: Option<f64>| {
            let v = [
                serde_json::json!("channel"),
                serde_json::json!(value),
                serde_json::json!(step),
                serde_json::json!(entered),
                serde_json::json!(median),
                serde_json::json!(median.map(|m| m * 2.0)),
            ];
            Cell::of(&v.iter().collect::<Vec<_>>())
        };
        let ours = vec![cell("Web", 1, 10, Some(3.0)), cell("Web", 2, 4, None), cell("(unknown)", 1, 2, Some(1.5))];
        let mut theirs = ours.clone();
        theirs.reverse();
        assert_eq!(Cell::differ(&ours, &theirs), None);
        theirs[0] = cell("(unknown)", 1, 2, Some(1.5004));
        assert_eq!(Cell::differ(&ours, &theirs), None, "within a thousandth of a day");
        for wrong in [
            cell("(unknown)", 1, 3, Some(1.5)),
            cell("(unknown)", 1, 2, Some(1.502)),
            cell("(unknown)", 1, 2, None),
            cell("Email", 1, 2, Some(1.5)),
        ] {
            theirs[0] = wrong.clone();
            assert!(Cell::differ(&ours, &theirs).is_some(), "{wrong:?} should differ");
        }
        assert!(Cell::differ(&ours, &ours[..2]).is_some(), "a missing cell");
        assert!(Cell::differ(&[], &[]).is_some(), "nothing published is no match");
    }

    fn m(deals: u64, unit: &str, engine: &str, seconds: f64, failed: bool) -> Measure {
        Measure {
            deals,
            unit: unit.into(),
            engine: engine.into(),
            seconds,
            cpu_seconds: seconds,
            peak_rss_mib: 100.0,
            detail: if failed { "FAILED: killed (SIGKILL: out of memory?)".into() } else { String::new() },
            failed,
        }
    }

    #[test]
    fn a_failed_unit_is_reported_not_plotted() {
        let all = vec![
            m(10_000, "risk", "gtm-loop", 1.5, false),
            m(10_000, "staging", "gtm-loop", 2.0, false),
            m(10_000, "staging", "duckdb 2.0.1", 4.0, false),
            m(1_000_000, "risk", "gtm-loop", 95.0, true),
        ];
        let md = markdown(&all);
        assert!(md.contains("| 10000 | staging | 2.0 | 2.0 | 100 | 4.0 | 100 | 0.50 |"), "{md}");
        assert!(md.contains("| 1000000 | risk | FAILED: killed (SIGKILL: out of memory?) after 95.0 |"), "{md}");
        let plot = svg(&all);
        // Two risk points would make a two-point polyline; the failed one is left out.
        let risk_line = plot.lines().find(|l| l.starts_with("<polyline")).unwrap();
        assert_eq!(risk_line.matches(',').count(), 1, "{risk_line}");
        // A signal exit reads as what it was.
        let out = std::process::Output { status: exit_status(137), stdout: vec![], stderr: b"working\n".to_vec() };
        assert_eq!(failure(&out), "FAILED: killed (SIGKILL: out of memory?): working");
    }
}
