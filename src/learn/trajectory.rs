//! Deal trajectories (`sql/learn/deal_trajectory.sql`): every deal at each stage entry and each
//! weekly as-of date, with what was observable then and the outcome known by the run date.

use std::sync::Arc;

use chrono::{Days, NaiveDate};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;

use crate::error::{Error, Result};
use crate::layers::LakeSession;
use crate::layers::columns::dates;

pub const TRAJECTORY_FILE: &str = "sql/learn/deal_trajectory.sql";
const TRAJECTORY_SQL: &str = repo_file!("sql/learn/deal_trajectory.sql");
const COUNTS_FILE: &str = "sql/learn/deal_landmark_counts.sql";
const COUNTS_SQL: &str = repo_file!("sql/learn/deal_landmark_counts.sql");
/// The deals a caller wants built (see `build_slices_for`): the id and the first landmark instant
/// wanted, in microseconds (NULL: every landmark).
pub const WANTED_TABLE: &str = "mart._trajectory_wanted";
/// What fills the landmarks step's `wanted` slot when only some deals are built.
const WANTED_JOIN: &str = "JOIN mart._trajectory_wanted AS w ON w.opportunity_id = l.opportunity_id \
     WHERE w.since IS NULL OR l.known_before >= w.since";
/// What the trajectory cannot be built without: the stage history is the spine.
pub const NEEDS: [&str; 2] = ["opportunity_history", "opportunity_stage"];

/// Deals per slice: the trajectory and the pattern signatures are computed slice by slice (every
/// row of a deal is in one slice), which bounds memory on large lakes. Measured (debug build,
/// 100k-deal lake): in 2k slices every step of a slice takes well under a second and the run holds
/// about 2.4 GB. In 5k slices the last step of the first slice (the join of the feature families)
/// grew past 24 GB and was killed, though every step before it, and the same join on 2k slices,
/// is small; that is not understood yet, so the slices stay at 2k.
pub const DEALS_PER_SLICE: i64 = 2_000;

/// How many slices a lake of `deals` deals is cut into (`GTM_LOOP_DEALS_PER_SLICE` overrides the
/// slice size: the tests check that slicing changes no number).
pub fn slices(deals: i64) -> i64 {
    let per = std::env::var("GTM_LOOP_DEALS_PER_SLICE").ok().and_then(|v| v.parse::<i64>().ok()).filter(|v| *v > 0);
    let per = per.unwrap_or(DEALS_PER_SLICE);
    ((deals + per - 1) / per).clamp(1, 1024)
}

/// Fills `{{deals:COLUMN}}` with the predicate that keeps slice `k` of `n`: a rolling hash of the
/// id's last six characters (modulo a prime), modulo `n`. Sequential ids (generated ones, most
/// integer keys) differ in their last characters, so they spread evenly; Salesforce's 18-character
/// ids end in checksum letters. The hash used to be of the last two characters only: ids ending in
/// two digits then fell into at most 100 slices, so a million deals cut "into 256 slices" was 96
/// slices of up to 20,100 deals each, and the first slice's joins outgrew 24 GiB.
pub fn fill_slice(sql: &str, k: i64, n: i64) -> String {
    let mut sql = sql.to_string();
    while let Some(start) = sql.find("{{deals:") {
        let Some(len) = sql[start..].find("}}") else { break };
        let column = sql[start + 8..start + len].to_string();
        // IN (k, -1), not = k: DataFusion 55 takes `expr = 1` as making `expr` and the literal 1
        // equivalent and rewrites unrelated sort keys of the known layer's window with it, which
        // then fails its own sanity check. the key is never negative, so -1 matches nothing.
        let predicate = if n <= 1 { "TRUE".to_string() } else { format!("({} IN ({k}, -1))", slice_key(&column, n)) };
        sql.replace_range(start..start + len + 2, &predicate);
    }
    sql
}

/// The slice (0..n) of the deal whose id is `column`: NULL for a NULL id when there are slices.
fn slice_key(column: &str, n: i64) -> String {
    if n <= 1 {
        // One slice holds every row, as `fill_slice`'s TRUE does.
        return "CAST(0 AS BIGINT)".to_string();
    }
    let mut hash = "CAST(0 AS BIGINT)".to_string();
    for i in (1..=6).rev() {
        hash = format!("(({hash} * 1000003) % 2147483647 + CAST(ascii(left(right({column}, {i}), 1)) AS BIGINT))");
    }
    format!("({hash} % {n})")
}

/// Rows of one table cut into the `n` slices of `fill_slice` (a row whose deal id is NULL is in
/// none): computed in one pass, so a slice reads its own rows instead of filtering every row of
/// the table again. Filtering the whole table in each slice cost O(slices × rows): at a million
/// deals, 503 slices each hashing the ids of ~20M activities.
pub struct Sliced {
    pub schema: SchemaRef,
    pub slices: Vec<Vec<RecordBatch>>,
}

/// Rows gathered before they are cut into slices: large enough that a slice gets batches of a
/// few thousand rows rather than a few rows (a million tiny batches cost more than their data),
/// small enough that the gathered copy stays a fraction of the table.
const SLICE_CHUNK_ROWS: usize = 1 << 20;

/// Cuts the rows of `select` (a query) into `n` slices by the deal id in its column `column`.
pub async fn slice_rows(session: &LakeSession, select: &str, column: &str, n: i64, source: &str) -> Result<Sliced> {
    use datafusion::arrow::array::{Array, Int64Array};
    use futures::StreamExt;
    const KEY: &str = "__gtm_loop_slice";
    let sql = format!("SELECT t.*, {} AS {KEY} FROM ({select}) AS t", slice_key(&format!("t.{column}"), n));
    let run = |e: datafusion::error::DataFusionError| Error::Other(format!("{source} does not run: {e}"));
    let df = session.declared(&sql, source).await?;
    let keyed = Arc::new(df.schema().as_arrow().clone());
    let key_at = keyed.index_of(KEY).map_err(|e| Error::Other(format!("{source}: {e}")))?;
    let keep: Vec<usize> = (0..keyed.fields().len()).filter(|i| *i != key_at).collect();
    let schema = Arc::new(keyed.project(&keep)?);
    let mut slices: Vec<Vec<RecordBatch>> = vec![Vec::new(); n.max(1) as usize];
    let mut stream = df.execute_stream().await.map_err(run)?;
    let mut chunk: Vec<RecordBatch> = Vec::new();
    let mut chunk_rows = 0usize;
    let flush = |chunk: &mut Vec<RecordBatch>, slices: &mut Vec<Vec<RecordBatch>>| -> Result<()> {
        let mut picks: Vec<Vec<(usize, usize)>> = vec![Vec::new(); slices.len()];
        for (b, batch) in chunk.iter().enumerate() {
            let keys = batch
                .column(key_at)
                .as_any()
                .downcast_ref::<Int64Array>()
                .ok_or_else(|| Error::Other(format!("{source}: the slice key is not a BIGINT")))?;
            for row in 0..keys.len() {
                if keys.is_valid(row) {
                    let k = keys.value(row);
                    if let Some(p) = usize::try_from(k).ok().and_then(|k| picks.get_mut(k)) {
                        p.push((b, row));
                    }
                }
            }
        }
        let projected = chunk.iter().map(|b| b.project(&keep)).collect::<std::result::Result<Vec<_>, _>>()?;
        let refs: Vec<&RecordBatch> = projected.iter().collect();
        for (k, rows) in picks.iter().enumerate() {
            if !rows.is_empty() {
                slices[k].push(datafusion::arrow::compute::interleave_record_batch(&refs, rows)?);
            }
        }
        chunk.clear();
        Ok(())
    };
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(run)?;
        chunk_rows += batch.num_rows();
        chunk.push(batch);
        if chunk_rows >= SLICE_CHUNK_ROWS {
            flush(&mut chunk, &mut slices)?;
            chunk_rows = 0;
        }
    }
    flush(&mut chunk, &mut slices)?;
    Ok(Sliced { schema, slices })
}

/// The `-- @step <table>` sections of a SQL file, in order: (the table the step's result is
/// registered as, its SQL). The last one's result is the file's result.
pub fn steps(sql: &str) -> Vec<(String, String)> {
    sql.split("\n-- @step ")
        .skip(1)
        .map(|part| {
            let (name, body) = part.split_once('\n').unwrap_or((part, ""));
            (name.trim().to_string(), body.to_string())
        })
        .collect()
}

/// The number of deals the session sees.
pub async fn deal_count(session: &LakeSession) -> Result<i64> {
    let b = session.collect_declared("SELECT COUNT(*) AS n FROM staging.opportunity", TRAJECTORY_FILE).await?;
    Ok(b.first()
        .filter(|b| b.num_rows() > 0)
        .and_then(|b| b.column(0).as_any().downcast_ref::<datafusion::arrow::array::Int64Array>().map(|a| a.value(0)))
        .unwrap_or(0))
}

/// The weekly as-of days: the run date and every seventh day before it, back to the first deal's
/// creation.
pub async fn week_days(session: &LakeSession, as_of: NaiveDate) -> Result<Vec<NaiveDate>> {
    let batches = session
        .collect_declared("SELECT CAST(MIN(created_date) AS DATE) AS first FROM staging.opportunity", TRAJECTORY_FILE)
        .await?;
    let first =
        batches.first().filter(|b| b.num_rows() > 0).and_then(|b| dates(b.column(0)).ok()?.first().copied().flatten());
    let Some(first) = first else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    let mut d = as_of;
    while d >= first {
        out.push(d);
        let Some(prev) = d.checked_sub_days(Days::new(7)) else { break };
        d = prev;
    }
    out.reverse();
    Ok(out)
}

/// The staged tables the trajectory reads. Each is an as-of view (a window over every CDC
/// version of the table): read in several joins of every slice, it would be recomputed each time,
/// which made 100k-deal lakes run for hours. They are computed once per run instead.
pub const INPUTS: [&str; 8] = [
    "staging.opportunity_history",
    "staging.opportunity",
    "staging.opportunity_stage",
    "staging.opportunity_contact_role",
    "mart.meeting",
    "staging.task",
    "staging.tracker_mention",
    "mart.deal",
];

/// Materialises `INPUTS` on the session (see `LakeSession::materialise`).
pub async fn materialise_inputs(session: &LakeSession) -> Result<()> {
    let progress = crate::progress::bar(INPUTS.len() as u64, "as-of tables", "tables");
    for table in INPUTS {
        session.materialise(table).await?;
        progress.inc(1);
    }
    progress.finish_and_clear();
    Ok(())
}

/// Builds the trajectory slice by slice and hands each slice's rows to `each` (every row of a deal
/// is in one slice) instead of holding them: a caller that keeps only some rows never holds the
/// whole trajectory (tens of millions of rows on a million deals). Returns the rows' schema and
/// the number of weekly as-of dates.
pub async fn build_slices(
    session: &LakeSession,
    each: impl FnMut(&SchemaRef, Vec<RecordBatch>) -> Result<()>,
) -> Result<(SchemaRef, usize)> {
    build_slices_for(session, None::<fn(&[DealCounts]) -> Result<Vec<(String, Option<i64>)>>>, each).await
}

/// One deal's trajectory rows that carry a stage, counted before anything is built
/// (`sql/learn/deal_landmark_counts.sql`): what a caller that samples deals by their rows needs.
#[derive(Debug, Clone)]
pub struct DealCounts {
    pub id: String,
    /// When the deal closed (microseconds), as known by the run date.
    pub closed_at: Option<i64>,
    /// Whether its closing stage says won or lost.
    pub decided: bool,
    pub rows: usize,
    pub week_rows: usize,
    /// Whether it has a row at the run date's week end (open then).
    pub open_now: bool,
}

/// `build_slices` for some deals only: `choose` gets every deal's counts and returns the deals
/// to build, each with the first landmark instant wanted (None: every landmark). Every feature of
/// a row reads only its own deal and instant, so the rows built are the same rows the whole
/// trajectory holds. The win model uses about 4% of a million deals' rows: building only those
/// is what keeps the weekly cadence from building the whole trajectory every week.
pub async fn build_slices_for(
    session: &LakeSession,
    choose: Option<impl FnOnce(&[DealCounts]) -> Result<Vec<(String, Option<i64>)>>>,
    mut each: impl FnMut(&SchemaRef, Vec<RecordBatch>) -> Result<()>,
) -> Result<(SchemaRef, usize)> {
    let as_of = session.as_of.0.ok_or_else(|| {
        Error::Other("deal trajectories need --as-of: the outcomes are read as known on that date".into())
    })?;
    let missing = session.missing(&NEEDS.map(String::from));
    if !missing.is_empty() {
        return Err(Error::Other(format!(
            "deal trajectories are not instrumented on this lake: needs {}",
            missing.join(", ")
        )));
    }
    let weeks = week_days(session, as_of).await?;
    let values = if weeks.is_empty() {
        // No deals: one week end that no deal precedes keeps the SQL valid and the result empty.
        "(CAST(TIMESTAMP '1900-01-01 00:00:00' AS TIMESTAMP(6)))".to_string()
    } else {
        weeks
            .iter()
            .map(|d| {
                format!(
                    "(CAST(TIMESTAMP '{} 00:00:00' AS TIMESTAMP(6)))",
                    d.checked_add_days(Days::new(1)).unwrap_or(*d)
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let sql = TRAJECTORY_SQL.replace("{{weeks}}", &values);
    materialise_inputs(session).await?;
    let wanted = match choose {
        None => None,
        Some(choose) => {
            let end = as_of.checked_add_days(Days::new(1)).unwrap_or(as_of);
            let end = format!("CAST(TIMESTAMP '{end} 00:00:00' AS TIMESTAMP(6))");
            // The landmarks the counts list are the stage entries: the weekly ones are counted.
            let entries = sql.replace("{{wanted}}", "WHERE l.snapshot = 'stage_entry'");
            let counts = deal_counts(session, &entries, &end, weeks.len() as i64 - 1).await?;
            let deals = choose(&counts)?;
            register_wanted(session, &deals).await?;
            Some(deals.len())
        }
    };
    let sql = sql.replace("{{wanted}}", if wanted.is_some() { WANTED_JOIN } else { "" });
    let n = slices(match wanted {
        Some(w) => w as i64,
        None => deal_count(session).await?,
    });
    let steps = steps(&sql);
    let Some(((_, last), temporaries)) = steps.split_last() else {
        return Err(Error::Other(format!("{TRAJECTORY_FILE} has no `-- @step` sections")));
    };
    // Embedded, the deal-keyed inputs are cut into slices once and each slice is served its own
    // rows; the originals are registered again afterwards, for the steps after this one. On a
    // cluster the executors cannot read this process's memory: each slice filters the inputs.
    let mut sliced: Vec<(&str, Arc<dyn datafusion::catalog::TableProvider>, Sliced)> = Vec::new();
    if n > 1 && !session.lake.engine.is_cluster() {
        let used = used_columns(session, &steps, n).await?;
        let inputs = SLICED_INPUTS.iter().copied().chain(wanted.map(|_| (WANTED_TABLE, "opportunity_id")));
        for (table, column) in inputs {
            let original = session
                .ctx
                .table_provider(table)
                .await
                .map_err(|e| Error::Other(format!("deal trajectories: cannot read {table}: {e}")))?;
            // Only the columns the steps read (all when a step's scan of it was not seen), so the
            // shared table is not recomputed with columns nothing reads (subjects and the like).
            let select = match used.get(table) {
                Some(cols) if !cols.is_empty() => {
                    let mut cols: Vec<String> =
                        cols.iter().map(|c| format!("\"{}\"", c.replace('"', "\"\""))).collect();
                    let key = format!("\"{column}\"");
                    if !cols.contains(&key) {
                        cols.push(key);
                    }
                    format!("SELECT {} FROM {table}", cols.join(", "))
                }
                _ => format!("SELECT * FROM {table}"),
            };
            // Only the wanted deals' rows, when some are wanted: one pass over each input.
            let select = match wanted {
                Some(_) if table != WANTED_TABLE => format!(
                    "SELECT * FROM ({select}) AS t WHERE t.\"{column}\" IN (SELECT opportunity_id FROM {WANTED_TABLE})"
                ),
                _ => select,
            };
            let rows = slice_rows(session, &select, column, n, TRAJECTORY_FILE).await?;
            sliced.push((table, original, rows));
        }
    }
    let result = run_slices(session, n, &sliced, temporaries, last, &mut each).await;
    for (table, original, _) in sliced {
        let _ = session.ctx.deregister_table(table)?;
        session.ctx.register_table(table, original)?;
    }
    for (table, _) in temporaries {
        let _ = session.ctx.deregister_table(table.as_str())?;
    }
    if wanted.is_some() {
        let _ = session.ctx.deregister_table(WANTED_TABLE)?;
    }
    let schema = result?.ok_or_else(|| Error::Other("deal trajectories: no slice planned".into()))?;
    Ok((schema, weeks.len()))
}

/// Every deal's row counts (see `DealCounts`): the trajectory's steps up to its landmarks run once
/// over the whole lake (no slices: a few columns per landmark), then `deal_landmark_counts.sql`.
/// Runs `steps` (table, SQL) in order, each result registered as its table for the steps after
/// it; errors name `file` and the step (`label` added to it). On an error the tables registered so
/// far are dropped; otherwise the caller drops them when done (`drop_steps`).
pub(crate) async fn register_steps(
    session: &LakeSession,
    steps: &[(String, String)],
    file: &str,
    label: &str,
) -> Result<()> {
    for (done, (table, step)) in steps.iter().enumerate() {
        let source = format!("{file} (step {table}{label})");
        let ran = match session.declared(step, &source).await {
            Ok(df) => session.collect_traced(df, &source).await,
            Err(e) => Err(e),
        };
        let registered = match ran {
            Ok((schema, rows)) => session.register_rows(table, schema, rows).await,
            Err(e) => Err(e),
        };
        if let Err(e) = registered {
            drop_steps(session, &steps[..done])?;
            return Err(e);
        }
    }
    Ok(())
}

/// Drops the tables `register_steps` registered.
pub(crate) fn drop_steps(session: &LakeSession, steps: &[(String, String)]) -> Result<()> {
    for (table, _) in steps {
        let _ = session.ctx.deregister_table(table.as_str())?;
    }
    Ok(())
}

async fn deal_counts(session: &LakeSession, sql: &str, end: &str, last_week: i64) -> Result<Vec<DealCounts>> {
    use datafusion::arrow::array::{Array, BooleanArray, Int64Array};
    let span = crate::layers::trace::start(COUNTS_FILE);
    let all = steps(sql);
    let upto = all.iter().position(|(t, _)| t == "mart._trajectory_landmarks").ok_or_else(|| {
        Error::Other(format!("{TRAJECTORY_FILE} has no `-- @step mart._trajectory_landmarks` section"))
    })?;
    let counts = COUNTS_SQL.replace("{{end}}", end).replace("{{last_week}}", &last_week.to_string());
    let ranges = deal_ranges(session).await?;
    let batches = if ranges.len() > 1 {
        counts_by_range(session, &all[..=upto], &counts, &ranges).await?
    } else {
        let registered: Vec<(String, String)> =
            all[..=upto].iter().map(|(table, step)| (table.clone(), fill_slice(step, 0, 1))).collect();
        register_steps(session, &registered, TRAJECTORY_FILE, ", whole lake").await?;
        let counts = fill_slice(&counts, 0, 1);
        let batches = match session.declared(&counts, COUNTS_FILE).await {
            Ok(df) => session.collect_traced(df, &format!("{COUNTS_FILE} (the query)")).await,
            Err(e) => Err(e),
        };
        drop_steps(session, &registered)?;
        batches?.1
    };
    let mut out = Vec::new();
    let column = |b: &RecordBatch, name: &str| {
        b.column_by_name(name).cloned().ok_or_else(|| Error::Other(format!("{COUNTS_FILE}: no column {name}")))
    };
    let wrong = |name: &str| Error::Other(format!("{COUNTS_FILE}: column {name} has an unexpected type"));
    for b in &batches {
        let ids = column(b, "opportunity_id")?;
        let ids = crate::layers::columns::strings(&ids)?;
        let closed = column(b, "closed_at_us")?;
        let closed = closed.as_any().downcast_ref::<Int64Array>().ok_or_else(|| wrong("closed_at_us"))?;
        let decided = column(b, "decided")?;
        let decided = decided.as_any().downcast_ref::<BooleanArray>().ok_or_else(|| wrong("decided"))?;
        let rows = column(b, "staged_rows")?;
        let rows = rows.as_any().downcast_ref::<Int64Array>().ok_or_else(|| wrong("staged_rows"))?;
        let weeks = column(b, "staged_week_rows")?;
        let weeks = weeks.as_any().downcast_ref::<Int64Array>().ok_or_else(|| wrong("staged_week_rows"))?;
        let open = column(b, "open_now")?;
        let open = open.as_any().downcast_ref::<BooleanArray>().ok_or_else(|| wrong("open_now"))?;
        for (r, id) in ids.into_iter().enumerate() {
            let Some(id) = id else { continue };
            out.push(DealCounts {
                id,
                closed_at: closed.is_valid(r).then(|| closed.value(r)),
                decided: decided.is_valid(r) && decided.value(r),
                rows: usize::try_from(rows.value(r)).unwrap_or(0),
                week_rows: if weeks.is_valid(r) { usize::try_from(weeks.value(r)).unwrap_or(0) } else { 0 },
                open_now: open.is_valid(r) && open.value(r),
            });
        }
    }
    if let Some(span) = span {
        span.done(&format!("{} deals", out.len()));
    }
    Ok(out)
}

/// The deals cut into one range of ids per core for the counting pass, `(from, to)` with `from`
/// included and `to` not, None an open end: boundaries at equal shares of the deal history's rows,
/// read in its held order (no sort). One range (every deal) on a cluster, on one core, or where
/// the history has too few deals to cut.
async fn deal_ranges(session: &LakeSession) -> Result<Vec<(Option<String>, Option<String>)>> {
    let whole = vec![(None, None)];
    let parts = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    if parts <= 1 || session.lake.engine.is_cluster() {
        return Ok(whole);
    }
    let int = |batches: &[RecordBatch]| -> Option<i64> {
        let b = batches.first()?;
        let c = datafusion::arrow::compute::cast(b.column(0), &datafusion::arrow::datatypes::DataType::Int64).ok()?;
        c.as_any().downcast_ref::<datafusion::arrow::array::Int64Array>().map(|a| a.value(0))
    };
    let rows = session
        .collect_declared(
            "SELECT COUNT(opportunity_id) FROM staging.opportunity_history",
            "the counting pass's deal ranges",
        )
        .await?;
    let rows = int(&rows).unwrap_or(0);
    let mut bounds: Vec<String> = Vec::new();
    for i in 1..parts as i64 {
        let sql = format!(
            "SELECT opportunity_id AS deal FROM staging.opportunity_history WHERE opportunity_id IS NOT NULL \
             ORDER BY deal LIMIT 1 OFFSET {}",
            rows * i / parts as i64
        );
        let batches = session.collect_declared(&sql, "the counting pass's deal ranges").await?;
        let bound = batches
            .first()
            .filter(|b| b.num_rows() > 0)
            .and_then(|b| crate::layers::columns::strings(b.column(0)).ok())
            .and_then(|v| v.into_iter().next().flatten());
        // Equal bounds (a deal with most of the rows) make an empty range: kept once.
        if let Some(bound) = bound
            && bounds.last() != Some(&bound)
        {
            bounds.push(bound);
        }
    }
    if bounds.is_empty() {
        return Ok(whole);
    }
    let mut ranges = Vec::with_capacity(bounds.len() + 1);
    let mut from = None;
    for bound in bounds {
        ranges.push((from, Some(bound.clone())));
        from = Some(bound);
    }
    ranges.push((from, None));
    Ok(ranges)
}

/// Fills `{{deals:COLUMN}}` with the predicate that keeps the deals whose id is in `[from, to)`
/// (a row whose deal id is NULL is in no range, as in no slice of `fill_slice`).
fn fill_range(sql: &str, from: Option<&str>, to: Option<&str>) -> String {
    let lit = |v: &str| format!("'{}'", v.replace('\'', "''"));
    let mut sql = sql.to_string();
    while let Some(start) = sql.find("{{deals:") {
        let Some(len) = sql[start..].find("}}") else { break };
        let column = sql[start + 8..start + len].to_string();
        let mut parts = vec![format!("{column} IS NOT NULL")];
        parts.extend(from.map(|f| format!("{column} >= {}", lit(f))));
        parts.extend(to.map(|t| format!("{column} < {}", lit(t))));
        sql.replace_range(start..start + len + 2, &format!("({})", parts.join(" AND ")));
    }
    sql
}

/// The counting pass over each range of deals side by side, each in an overlay context of its
/// own (`layers::overlay`): its whole-lake steps are windows over the deal history held in deal
/// order, which run on one core, and a range of it filtered keeps that order (no sort). Every
/// count is its own deal's, so the ranges' rows together are the whole pass's.
async fn counts_by_range(
    session: &LakeSession,
    steps: &[(String, String)],
    counts: &str,
    ranges: &[(Option<String>, Option<String>)],
) -> Result<Vec<RecordBatch>> {
    let mut running = tokio::task::JoinSet::new();
    for (i, (from, to)) in ranges.iter().enumerate() {
        let ctx = crate::layers::overlay::context(&session.ctx);
        let filled: Vec<(String, String)> = steps
            .iter()
            .map(|(table, step)| (table.clone(), session.fill(&fill_range(step, from.as_deref(), to.as_deref()))))
            .collect();
        let counts = session.fill(&fill_range(counts, from.as_deref(), to.as_deref()));
        let label = format!("deals {} to {}", from.as_deref().unwrap_or("(first)"), to.as_deref().unwrap_or("(last)"));
        running.spawn(async move {
            let span = crate::layers::trace::start(format!("{COUNTS_FILE} ({label})"));
            // The steps and the counts query of one range, as a trajectory slice runs its steps.
            let out = run_slice(&ctx, None, Vec::new(), &filled, (&counts, COUNTS_FILE), 0, 1)
                .await
                .map_err(|e| Error::Other(format!("{e} ({label})")))?;
            if let Some(span) = span {
                span.done(&format!("{} deals", out.rows.iter().map(|b| b.num_rows()).sum::<usize>()));
            }
            Ok::<_, Error>((i, out.rows))
        });
    }
    let mut parts = Vec::with_capacity(ranges.len());
    while let Some(done) = running.join_next().await {
        parts.push(done.map_err(|e| Error::Other(format!("{COUNTS_FILE}: a range stopped: {e}")))??);
    }
    parts.sort_by_key(|(i, _)| *i);
    Ok(parts.into_iter().flat_map(|(_, b)| b).collect())
}

/// Registers the deals to build as `WANTED_TABLE` (opportunity_id, since).
async fn register_wanted(session: &LakeSession, deals: &[(String, Option<i64>)]) -> Result<()> {
    use datafusion::arrow::array::{StringArray, TimestampMicrosecondArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    let schema = Arc::new(Schema::new(vec![
        Field::new("opportunity_id", DataType::Utf8, false),
        Field::new("since", DataType::Timestamp(TimeUnit::Microsecond, None), true),
    ]));
    let ids: StringArray = deals.iter().map(|(id, _)| Some(id.as_str())).collect();
    let since: TimestampMicrosecondArray = deals.iter().map(|(_, s)| *s).collect();
    let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(ids), Arc::new(since)])?;
    session.register_rows(WANTED_TABLE, schema, vec![batch]).await
}

/// The columns of each table the steps scan, read from their optimised plans (every step is
/// planned, not run: a temporary table is registered empty with the schema its step plans).
async fn used_columns(
    session: &LakeSession,
    steps: &[(String, String)],
    n: i64,
) -> Result<std::collections::HashMap<String, std::collections::BTreeSet<String>>> {
    use datafusion::common::tree_node::TreeNodeRecursion;
    use datafusion::logical_expr::LogicalPlan;
    let mut used: std::collections::HashMap<String, std::collections::BTreeSet<String>> = Default::default();
    let plan_err =
        |e: datafusion::error::DataFusionError| Error::Other(format!("{TRAJECTORY_FILE} does not plan: {e}"));
    for (i, (table, step)) in steps.iter().enumerate() {
        let df = session.declared(&fill_slice(step, 0, n), &format!("{TRAJECTORY_FILE} (step {table})")).await?;
        let schema = Arc::new(df.schema().as_arrow().clone());
        let plan = df.into_optimized_plan().map_err(plan_err)?;
        plan.apply_with_subqueries(|node| {
            if let LogicalPlan::TableScan(scan) = node {
                let cols = used.entry(scan.table_name.to_string()).or_default();
                cols.extend(scan.projected_schema.fields().iter().map(|f| f.name().clone()));
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .map_err(plan_err)?;
        if i + 1 < steps.len() {
            session.register_rows(table, schema, Vec::new()).await?;
        }
    }
    Ok(used)
}

/// The deal-keyed inputs of the trajectory and the column that holds the deal's id.
const SLICED_INPUTS: [(&str, &str); 7] = [
    ("staging.opportunity_history", "opportunity_id"),
    ("staging.opportunity", "id"),
    ("staging.opportunity_contact_role", "opportunity_id"),
    ("mart.meeting", "what_id"),
    ("staging.task", "what_id"),
    ("staging.tracker_mention", "opportunity_id"),
    ("mart.deal", "id"),
];

/// Runs the steps of every slice and hands each slice's rows to `each`, slice after slice.
///
/// Embedded, with the inputs cut into slices, the slices run side by side: one worker per core,
/// each in its own overlay context (`layers::overlay`: its steps' tables and its slice's inputs
/// under the names the SQL reads, the run's shared tables beneath), worker w taking slices w,
/// w + workers, ...; `each` still gets them in slice order. A slice's steps are small joins of a
/// few thousand deals that mostly run on one core: one after the other, the million-deal weekly's
/// 57 slices took 10.5 s at 1.1 cores. On a cluster (inputs filtered in each slice), one at a time.
async fn run_slices(
    session: &LakeSession,
    n: i64,
    sliced: &[(&str, Arc<dyn datafusion::catalog::TableProvider>, Sliced)],
    temporaries: &[(String, String)],
    last: &str,
    each: &mut impl FnMut(&SchemaRef, Vec<RecordBatch>) -> Result<()>,
) -> Result<Option<SchemaRef>> {
    let progress = crate::progress::bar(n as u64, "deal trajectories", "slices");
    let mut schema: Option<SchemaRef> = None;
    // With GTM_LOOP_TRACE on, each step's planning and running time summed over the slices.
    let mut timing = StepTiming::default();
    // Inputs cut into slices already hold only slice k's rows: the steps' slice predicates (a
    // six-character hash of every row's id) would keep every row, so they are left out.
    let hashed = if sliced.is_empty() { n } else { 1 };
    let steps: Arc<Vec<(String, String)>> =
        Arc::new(temporaries.iter().map(|(table, step)| (table.clone(), session.fill(step))).collect());
    let last = Arc::new(session.fill(last));
    let mut done = |schema: &mut Option<SchemaRef>, out: SliceOut| -> Result<()> {
        for (step, plan, run, rows) in &out.timing {
            timing.add(step, *plan, *run, *rows);
        }
        let schema = schema.get_or_insert(out.schema).clone();
        each(&schema, out.rows)?;
        progress.inc(1);
        Ok(())
    };
    let workers = std::thread::available_parallelism().map(|w| w.get() as i64).unwrap_or(1).min(n);
    if sliced.is_empty() || workers <= 1 || session.lake.engine.is_cluster() {
        for k in 0..n {
            let inputs: Vec<SliceInput> = sliced
                .iter()
                .map(|(table, _, rows)| (table.to_string(), rows.schema.clone(), rows.slices[k as usize].clone()))
                .collect();
            let out =
                run_slice(&session.ctx, Some(session), inputs, &steps, (&last, TRAJECTORY_FILE), k, hashed).await?;
            done(&mut schema, out)?;
        }
    } else {
        let sliced: Arc<Vec<SlicedInput>> = Arc::new(
            sliced
                .iter()
                .map(|(table, _, rows)| (table.to_string(), rows.schema.clone(), rows.slices.clone()))
                .collect(),
        );
        let mut results = Vec::new();
        let mut running = Vec::new();
        for w in 0..workers {
            // At most one finished slice waits per worker: memory stays a few slices whatever n is.
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<SliceOut>>(1);
            let ctx = crate::layers::overlay::context(&session.ctx);
            let (sliced, steps, last) = (sliced.clone(), steps.clone(), last.clone());
            running.push(tokio::spawn(async move {
                for k in (w..n).step_by(workers as usize) {
                    let inputs = sliced
                        .iter()
                        .map(|(table, schema, slices)| (table.clone(), schema.clone(), slices[k as usize].clone()))
                        .collect();
                    let out = run_slice(&ctx, None, inputs, &steps, (&last, TRAJECTORY_FILE), k, 1).await;
                    let failed = out.is_err();
                    if tx.send(out).await.is_err() || failed {
                        break;
                    }
                }
            }));
            results.push(rx);
        }
        let mut outcome = Ok(());
        for k in 0..n {
            let next = results[(k % workers) as usize].recv().await;
            let out = match next {
                Some(out) => out,
                None => Err(Error::Other(format!("{TRAJECTORY_FILE}: slice {k} stopped without a result"))),
            };
            if let Err(e) = out.and_then(|out| done(&mut schema, out)) {
                outcome = Err(e);
                break;
            }
        }
        for task in running {
            task.abort();
        }
        outcome?;
    }
    progress.finish_and_clear();
    timing.print(n);
    Ok(schema)
}

/// One input table's rows cut into every slice: its name, schema and each slice's rows.
type SlicedInput = (String, SchemaRef, Vec<Vec<RecordBatch>>);

/// One input table's rows for one slice: its name, schema and rows.
type SliceInput = (String, SchemaRef, Vec<RecordBatch>);

/// One slice's trajectory rows and, per step, its planning and running time and rows.
struct SliceOut {
    schema: SchemaRef,
    rows: Vec<RecordBatch>,
    timing: Vec<(String, std::time::Duration, std::time::Duration, usize)>,
}

/// The steps of slice k in `ctx`: its inputs registered under their tables' names, each step run
/// and registered for the next, then the last step's rows. Registered through `session` when given
/// (a cluster's executors read registered rows as files), otherwise in `ctx`'s memory.
async fn run_slice(
    ctx: &datafusion::prelude::SessionContext,
    session: Option<&LakeSession>,
    inputs: Vec<SliceInput>,
    steps: &[(String, String)],
    (last, last_source): (&str, &str),
    k: i64,
    hashed: i64,
) -> Result<SliceOut> {
    let register = async |name: &str, schema: SchemaRef, rows: Vec<RecordBatch>| match session {
        Some(session) => session.register_rows(name, schema, rows).await,
        None => crate::layers::session::register_rows_in(ctx, name, schema, rows),
    };
    let plan_err = |source: String| {
        move |e: datafusion::error::DataFusionError| Error::Other(format!("{source} does not plan: {e}"))
    };
    let run = |e: datafusion::error::DataFusionError| Error::Other(format!("{TRAJECTORY_FILE} does not run: {e}"));
    let mut timing = Vec::with_capacity(steps.len() + 2);
    let t = std::time::Instant::now();
    for (table, schema, rows) in inputs {
        register(&table, schema, rows).await?;
    }
    timing.push(("(serve sliced inputs)".to_string(), t.elapsed(), std::time::Duration::ZERO, 0));
    for (table, step) in steps {
        let t = std::time::Instant::now();
        let df = ctx
            .sql(&fill_slice(step, k, hashed))
            .await
            .map_err(plan_err(format!("{TRAJECTORY_FILE} (step {table})")))?;
        let planned = t.elapsed();
        let step_schema = Arc::new(df.schema().as_arrow().clone());
        let rows = df.collect().await.map_err(run)?;
        timing.push((table.clone(), planned, t.elapsed() - planned, rows.iter().map(|b| b.num_rows()).sum()));
        register(table, step_schema, rows).await?;
    }
    let t = std::time::Instant::now();
    let df = ctx.sql(&fill_slice(last, k, hashed)).await.map_err(plan_err(last_source.to_string()))?;
    let planned = t.elapsed();
    let schema = Arc::new(df.schema().as_arrow().clone());
    let rows = df.collect().await.map_err(|e| Error::Other(format!("{last_source} does not run: {e}")))?;
    timing.push(("trajectory".to_string(), planned, t.elapsed() - planned, rows.iter().map(|b| b.num_rows()).sum()));
    Ok(SliceOut { schema, rows, timing })
}

/// Per-step totals over every slice, printed under GTM_LOOP_TRACE: where a large lake's
/// trajectory time goes (planning against running, and which join).
#[derive(Default)]
struct StepTiming(Vec<StepTotal>);

struct StepTotal {
    step: String,
    plan: std::time::Duration,
    run: std::time::Duration,
    rows: usize,
}

impl StepTiming {
    fn add(&mut self, step: &str, plan: std::time::Duration, run: std::time::Duration, rows: usize) {
        if !crate::layers::trace::enabled() {
            return;
        }
        match self.0.iter_mut().find(|s| s.step == step) {
            Some(s) => {
                s.plan += plan;
                s.run += run;
                s.rows += rows;
            }
            None => self.0.push(StepTotal { step: step.to_string(), plan, run, rows }),
        }
    }

    fn print(&self, slices: i64) {
        for s in &self.0 {
            eprintln!(
                "trace: trajectory step {:<32} plan {:>8.2} s  run {:>8.2} s  {:>10} rows  ({slices} slices)",
                s.step,
                s.plan.as_secs_f64(),
                s.run.as_secs_f64(),
                s.rows
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ranges of `fill_range` split the rows between them, each row in exactly one, a NULL
    /// deal in none, and a bound with a quote in it is read as text.
    #[tokio::test]
    async fn deal_ranges_split_the_rows_with_nulls_in_none() {
        use datafusion::arrow::array::StringArray;
        use datafusion::arrow::datatypes::{DataType, Field, Schema};
        let ctx = datafusion::prelude::SessionContext::new();
        let schema = Arc::new(Schema::new(vec![Field::new("opportunity_id", DataType::Utf8, true)]));
        let ids = StringArray::from(vec![Some("a"), Some("b'c"), Some("b'd"), None, Some("e")]);
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(ids)]).expect("batch");
        ctx.register_batch("h", batch).expect("register");
        let sql = "SELECT COUNT(*) AS n FROM h WHERE {{deals:h.opportunity_id}}";
        let count = |sql: String| {
            let ctx = ctx.clone();
            async move {
                let b = ctx.sql(&sql).await.expect("plans").collect().await.expect("runs");
                let c = datafusion::arrow::compute::cast(b[0].column(0), &DataType::Int64).expect("cast");
                c.as_any().downcast_ref::<datafusion::arrow::array::Int64Array>().expect("BIGINT").value(0)
            }
        };
        assert_eq!(count(fill_range(sql, None, Some("b'c"))).await, 1);
        assert_eq!(count(fill_range(sql, Some("b'c"), Some("e"))).await, 2);
        assert_eq!(count(fill_range(sql, Some("e"), None)).await, 1);
        assert_eq!(count(fill_range(sql, None, None)).await, 4);
    }
}
