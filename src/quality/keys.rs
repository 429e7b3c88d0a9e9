//! Key checks: duplicate keys within one version, references to rows that do not exist (as of the
//! run date), and one identifying value (an email) held by several ids.

use crate::error::Result;
use crate::lake::contract::{Column, quote};
use crate::quality::sql::rows;
use crate::quality::{Finding, Severity, TableCheck};

/// Duplicate keys among rows that are the same version (CDC versions are not duplicates).
pub async fn duplicate_key(cx: &TableCheck<'_>, out: &mut Vec<Finding>) -> Result<()> {
    let (table, landed) = (cx.table, cx.landed);
    let key = &table.key;
    let raw_key =
        key.iter().map(|k| landed.field(k).map(|f| quote(f.name())).unwrap_or_else(|| quote(k))).collect::<Vec<_>>();
    let version = ["_fivetran_start", "_fivetran_synced"].iter().find_map(|c| landed.field(c)).map(|f| quote(f.name()));
    let group = raw_key.iter().cloned().chain(version).collect::<Vec<_>>().join(", ");
    // Distinct hashes of (key, version) prove no duplicate: the aggregate below runs only when a
    // hash repeats (a duplicate, or a rare collision it then rules out). Not on a cluster, where
    // the keys would cross the network: the aggregate runs there.
    // Found when its known table was computed, in the same pass as the keys (`layers::known`):
    // distinct pairs prove no duplicate, and repeated ones call for the aggregate below.
    let found = crate::layers::known::raw_keys(cx.session.fingerprint, &table.name);
    if found.is_some_and(|k| k.keys_distinct || k.pairs_distinct) {
        return Ok(());
    }
    if found.is_none() && !cx.session.lake.engine.is_cluster() {
        let pairs = format!("SELECT {group} FROM raw.{}", quote(&table.name));
        let pairs = cx.session.ctx.sql(&pairs).await?.into_unoptimized_plan();
        let state = cx.session.ctx.state();
        if crate::layers::known::hashes_distinct(&state, &pairs, &format!("raw.{}", table.name)).await? {
            return Ok(());
        }
    }
    let dup_sql = format!(
        "SELECT {} AS k, COUNT(*) AS n FROM raw.{} GROUP BY {group} HAVING COUNT(*) > 1 ORDER BY k",
        cx.raw_key_expr,
        quote(&table.name)
    );
    let dups = rows(cx.session, &dup_sql).await?;
    if !dups.is_empty() {
        let extra: i64 = dups.iter().map(|r| r[1].parse::<i64>().unwrap_or(0) - 1).sum();
        out.push(Finding {
            examples: dups.iter().take(5).map(|r| r[0].clone()).collect(),
            detail: format!(
                "{} keys appear more than once in the same version; staging keeps one row per key",
                dups.len()
            ),
            fix: format!("de-duplicate {} at the source or the connector", key.join(", ")),
            ..cx.finding(Some(&key.join(",")), "duplicate_key", Severity::Error, extra, cx.total)
        });
    }
    Ok(())
}

/// Rows whose key is NULL in a column of it: they cannot be told apart, joined or de-duplicated,
/// and every job that reads the table by key loses them. Read from every landed row.
pub async fn null_key(cx: &TableCheck<'_>, out: &mut Vec<Finding>) -> Result<()> {
    let (table, landed) = (cx.table, cx.landed);
    let cols: Vec<String> = table.key.iter().filter_map(|k| landed.field(k).map(|f| quote(f.name()))).collect();
    if cols.is_empty() {
        return Ok(());
    }
    let pred = cols.iter().map(|c| format!("{c} IS NULL")).collect::<Vec<_>>().join(" OR ");
    let n = rows(cx.session, &format!("SELECT COUNT(*) FROM raw.{} WHERE {pred}", quote(&table.name))).await?;
    let n: i64 = n.first().and_then(|r| r[0].parse().ok()).unwrap_or(0);
    if n > 0 {
        out.push(Finding {
            detail: format!(
                "{n} rows have no {}: they cannot be told apart or joined, and are left out",
                table.key.join(", ")
            ),
            fix: format!(
                "fill {} at the source (the connector's primary key must never be empty)",
                table.key.join(", ")
            ),
            ..cx.finding(Some(&table.key.join(",")), "null_key", Severity::Error, n, cx.total.max(n))
        });
    }
    Ok(())
}

/// Rows whose reference column points at a parent row that is not known as of the run date.
pub async fn orphan_reference(cx: &TableCheck<'_>, col: &Column, out: &mut Vec<Finding>) -> Result<()> {
    let Some(reference) = &col.references else { return Ok(()) };
    let (pt, pc) = reference.split_once('.').unwrap_or((reference, "id"));
    let parent = cx.session.landed(pt).expect("contract checked");
    if !parent.present() {
        out.push(Finding {
            detail: format!("cannot check: {pt} is not landed"),
            fix: format!("land {pt}"),
            ..cx.finding(Some(&col.name), "orphan_reference_unchecked", Severity::Info, 0, cx.total)
        });
        return Ok(());
    }
    let (c, known, key_expr) = (quote(&col.name), &cx.known, &cx.key_expr);
    let sql = format!(
        "SELECT {key_expr}, CAST(t.{c} AS VARCHAR) FROM {known} AS t \
         LEFT JOIN (SELECT DISTINCT {pcq} AS parent_key FROM known.{ptq}) AS p ON t.{c} = p.parent_key \
         WHERE t.{c} IS NOT NULL AND p.parent_key IS NULL ORDER BY 1",
        pcq = quote(pc),
        ptq = quote(pt)
    );
    let orphans = rows(cx.session, &sql).await?;
    if !orphans.is_empty() {
        out.push(Finding {
            examples: orphans.iter().take(5).map(|r| r[0].clone()).collect(),
            detail: format!(
                "{} rows point to a {reference} that does not exist (as of {}), e.g. {}",
                orphans.len(),
                cx.session.as_of.label(),
                orphans.iter().take(3).map(|r| format!("'{}'", r[1])).collect::<Vec<_>>().join(", ")
            ),
            fix: format!("land the missing {pt} rows or correct {}", col.name),
            ..cx.finding(Some(&col.name), "orphan_reference", Severity::Warning, orphans.len() as i64, cx.total)
        });
    }
    Ok(())
}

/// One identifying value (case and surrounding spaces ignored) held by several ids.
pub async fn duplicate_entity(cx: &TableCheck<'_>, col: &Column, out: &mut Vec<Finding>) -> Result<()> {
    if !col.identifies {
        return Ok(());
    }
    let (c, known, key_expr) = (quote(&col.name), &cx.known, &cx.key_expr);
    let norm = format!("LOWER(TRIM({c}))");
    let sql = format!(
        "SELECT {norm} AS v, COUNT(*) AS n, MIN({key_expr}) AS k FROM {known} WHERE {c} IS NOT NULL AND TRIM({c}) <> '' \
         GROUP BY {norm} HAVING COUNT(*) > 1 ORDER BY n DESC, v"
    );
    let groups = rows(cx.session, &sql).await?;
    if !groups.is_empty() {
        let extra: i64 = groups.iter().map(|r| r[1].parse::<i64>().unwrap_or(0) - 1).sum();
        out.push(Finding {
            examples: groups.iter().take(5).map(|r| r[2].clone()).collect(),
            detail: format!(
                "{} values are held by several ids, e.g. '{}' ({} ids)",
                groups.len(),
                groups[0][0],
                groups[0][1]
            ),
            fix: format!("merge the duplicate {} records in the CRM", cx.table.name),
            ..cx.finding(Some(&col.name), "duplicate_entity", Severity::Warning, extra, cx.total)
        });
    }
    Ok(())
}
