//! Value checks, one column at a time: CSV text that does not parse, null rates over the
//! contract's threshold, one category spelled several ways, negative amounts, recorded times in
//! the future, and amounts in several currencies.

use crate::error::Result;
use crate::lake::contract::{Column, ColumnType, quote};
use crate::lake::inspect::Format;
use crate::layers::known::conform_expr;
use crate::quality::sql::{first_col, rows, scalar};
use crate::quality::{Finding, Severity, TableCheck};

/// CSV text that does not parse as the column's type (it reads as NULL in staging).
pub async fn unparseable(cx: &TableCheck<'_>, col: &Column, out: &mut Vec<Finding>) -> Result<()> {
    let landed = cx.landed;
    let Some(f) = landed.field(&col.name) else { return Ok(()) };
    if landed.format != Some(Format::Csv) || col.ty == ColumnType::String {
        return Ok(());
    }
    let raw_col = quote(f.name());
    let parsed = conform_expr(&raw_col, f.data_type(), col.ty);
    let bad = rows(
        cx.session,
        &format!(
            "SELECT {}, {raw_col} FROM raw.{} WHERE NULLIF(TRIM({raw_col}), '') IS NOT NULL AND {parsed} IS NULL",
            cx.raw_key_expr,
            quote(&cx.table.name)
        ),
    )
    .await?;
    if !bad.is_empty() {
        let mut values: Vec<String> = bad.iter().map(|r| format!("'{}'", r[1])).collect();
        values.dedup();
        out.push(Finding {
            examples: bad.iter().take(5).map(|r| r[0].clone()).collect(),
            detail: format!(
                "values that are not a {}: {}",
                col.ty.name(),
                values.into_iter().take(5).collect::<Vec<_>>().join(", ")
            ),
            fix: format!(
                "write {} as a {} (ISO dates, '.' decimals); these rows read it as NULL",
                col.name,
                col.ty.name()
            ),
            ..cx.finding(Some(&col.name), "unparseable", Severity::Warning, bad.len() as i64, cx.total)
        });
    }
    Ok(())
}

pub async fn null_rate(cx: &TableCheck<'_>, col: &Column, out: &mut Vec<Finding>) -> Result<()> {
    let Some(max) = col.max_null_rate else { return Ok(()) };
    let (c, known, total) = (quote(&col.name), &cx.known, cx.total);
    let nulls = scalar(cx.session, &format!("SELECT COUNT(*) FROM {known} WHERE {c} IS NULL")).await?;
    if nulls as f64 / total as f64 > max {
        let ex =
            first_col(cx.session, &format!("SELECT {} FROM {known} WHERE {c} IS NULL ORDER BY 1 LIMIT 5", cx.key_expr))
                .await?;
        out.push(Finding {
            examples: ex,
            detail: format!("{:.1}% NULL, over the {:.0}% threshold", 100.0 * nulls as f64 / total as f64, max * 100.0),
            fix: format!("fill {} at the source; rows without it fall into '(unknown)' breakdowns", col.name),
            ..cx.finding(Some(&col.name), "null_rate", Severity::Warning, nulls, total)
        });
    }
    Ok(())
}

/// One pass: every distinct spelling with its count; grouped here by the spelling reduced to
/// lower-case letters and digits ('Paid Search', 'paid search ').
pub async fn inconsistent_spelling(cx: &TableCheck<'_>, col: &Column, out: &mut Vec<Finding>) -> Result<()> {
    if !col.category {
        return Ok(());
    }
    let (c, known) = (quote(&col.name), &cx.known);
    let values =
        rows(cx.session, &format!("SELECT {c} AS v, COUNT(*) AS n FROM {known} WHERE {c} IS NOT NULL GROUP BY 1"))
            .await?;
    let mut groups: std::collections::BTreeMap<String, Vec<(String, i64)>> = Default::default();
    for r in values {
        let norm: String = r[0].chars().filter(|ch| ch.is_alphanumeric()).flat_map(char::to_lowercase).collect();
        groups.entry(norm).or_default().push((r[0].clone(), r[1].parse().unwrap_or(0)));
    }
    near_duplicates(cx, col, &groups, out);
    for mut group in groups.into_values().filter(|g| g.len() > 1) {
        group.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let minority: i64 = group.iter().skip(1).map(|g| g.1).sum();
        out.push(Finding {
            examples: group.iter().skip(1).map(|g| g.0.clone()).collect(),
            detail: format!(
                "one category spelled {} ways: {}",
                group.len(),
                group.iter().map(|(v, n)| format!("'{v}' ({n})")).collect::<Vec<_>>().join(", ")
            ),
            fix: format!("standardise the picklist to '{}', or map the variants in an import mapping", group[0].0),
            ..cx.finding(Some(&col.name), "inconsistent_spelling", Severity::Warning, minority, cx.total)
        });
    }
    Ok(())
}

/// Near-duplicate spellings ('Sofware' beside 'Software'): a rare category within edit distance 1
/// (2 for names of 9 letters or more) of a category at least five times as common. Short names
/// (under 5 letters: SMB, SME) are skipped, and so are columns of more than 300 categories.
fn near_duplicates(
    cx: &TableCheck<'_>,
    col: &Column,
    groups: &std::collections::BTreeMap<String, Vec<(String, i64)>>,
    out: &mut Vec<Finding>,
) {
    if groups.len() > 300 {
        return;
    }
    // Each normalised category with its most common spelling and total count.
    let mut cats: Vec<(&str, &str, i64)> = groups
        .iter()
        .map(|(norm, g)| {
            let top = g.iter().max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0))).expect("non-empty group");
            (norm.as_str(), top.0.as_str(), g.iter().map(|x| x.1).sum())
        })
        .collect();
    cats.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(b.0)));
    for (i, &(norm, spelling, n)) in cats.iter().enumerate() {
        let letters = norm.chars().count();
        if letters < 5 {
            continue;
        }
        let limit = if letters >= 9 { 2 } else { 1 };
        let dominant =
            cats[..i].iter().find(|&&(other, _, m)| m >= 5 * n && strsim::damerau_levenshtein(norm, other) <= limit);
        if let Some(&(_, right, m)) = dominant {
            out.push(Finding {
                examples: vec![spelling.to_string()],
                detail: format!("'{spelling}' ({n}) looks like a misspelling of '{right}' ({m})"),
                fix: format!("correct '{spelling}' to '{right}' in the source, or map it in an import mapping"),
                ..cx.finding(Some(&col.name), "near_duplicate_spelling", Severity::Warning, n, cx.total)
            });
        }
    }
}

pub async fn negative(cx: &TableCheck<'_>, col: &Column, out: &mut Vec<Finding>) -> Result<()> {
    if !col.non_negative {
        return Ok(());
    }
    let (c, known) = (quote(&col.name), &cx.known);
    let n = scalar(cx.session, &format!("SELECT COUNT(*) FROM {known} WHERE {c} < 0")).await?;
    if n > 0 {
        let ex =
            first_col(cx.session, &format!("SELECT {} FROM {known} WHERE {c} < 0 ORDER BY 1 LIMIT 5", cx.key_expr))
                .await?;
        out.push(Finding {
            examples: ex,
            detail: format!("{n} negative values"),
            fix: format!("correct {} (refunds and credits belong in their own records)", col.name),
            ..cx.finding(Some(&col.name), "negative_value", Severity::Warning, n, cx.total)
        });
    }
    Ok(())
}

/// Dates no go-to-market record carries: before 1980 or after 2100 (a typo, a 0001-01-01 default,
/// an epoch-zero from a broken export). Dates merely in the future are `future_date`'s concern.
pub async fn implausible_date(cx: &TableCheck<'_>, col: &Column, out: &mut Vec<Finding>) -> Result<()> {
    if !matches!(col.ty, ColumnType::Date | ColumnType::Timestamp) {
        return Ok(());
    }
    let c = quote(&col.name);
    let pred = format!("(CAST({c} AS DATE) < DATE '1980-01-01' OR CAST({c} AS DATE) > DATE '2100-01-01')");
    let fix = format!("correct {} at the source (a default or placeholder date was exported)", col.name);
    rows_where(cx, col, &pred, "implausible_date", "dates before 1980 or after 2100: no real record has them", fix, out)
        .await
}

/// Amounts over a thousand times the column's median positive value: a misplaced decimal point, a
/// value in cents, or a test record, any of which dominates every sum it enters.
pub async fn huge_value(cx: &TableCheck<'_>, col: &Column, out: &mut Vec<Finding>) -> Result<()> {
    if !(col.non_negative && col.ty == ColumnType::Float) {
        return Ok(());
    }
    let (c, known) = (quote(&col.name), &cx.known);
    let pred = format!("{c} > 1000 * (SELECT median({c}) FROM {known} WHERE {c} > 0)");
    let fix = format!("check {} at the source (decimal point, unit, test records)", col.name);
    rows_where(cx, col, &pred, "huge_value", "values over 1000 times the median", fix, out).await
}

/// A warning for the known rows matching `pred`, with up to five of them as `key: value`.
#[allow(clippy::too_many_arguments)]
async fn rows_where(
    cx: &TableCheck<'_>,
    col: &Column,
    pred: &str,
    check: &str,
    what: &str,
    fix: String,
    out: &mut Vec<Finding>,
) -> Result<()> {
    let (c, known) = (quote(&col.name), &cx.known);
    let n = scalar(cx.session, &format!("SELECT COUNT(*) FROM {known} WHERE {pred}")).await?;
    if n > 0 {
        let ex = first_col(
            cx.session,
            &format!(
                "SELECT {} || ': ' || CAST({c} AS VARCHAR) FROM {known} WHERE {pred} ORDER BY 1 LIMIT 5",
                cx.key_expr
            ),
        )
        .await?;
        out.push(Finding {
            examples: ex,
            detail: format!("{n} {what}"),
            fix,
            ..cx.finding(Some(&col.name), check, Severity::Warning, n, cx.total)
        });
    }
    Ok(())
}

/// Against the clock of this run (or the as-of date, if later): a recorded time in the future is
/// a typo or a clock problem, whatever date the run looks at. Read from every landed row, since
/// the as-of filter would hide exactly these.
pub async fn future_date(cx: &TableCheck<'_>, col: &Column, out: &mut Vec<Finding>) -> Result<()> {
    if !col.recorded_time {
        return Ok(());
    }
    let session = cx.session;
    let c = quote(&col.name);
    let limit = match session.as_of.0 {
        Some(d) if d > chrono::Utc::now().date_naive() => session.as_of.end_literal(),
        _ => "CAST(now() AS TIMESTAMP(6))".to_string(),
    };
    let conformed = crate::layers::known::conformed_sql(cx.landed, &[]);
    let sql = format!(
        "SELECT {}, CAST({c} AS VARCHAR) FROM {conformed} AS t WHERE CAST({c} AS TIMESTAMP(6)) > {limit} ORDER BY 1",
        cx.key_expr
    );
    let future = rows(session, &sql).await?;
    if !future.is_empty() {
        out.push(Finding {
            examples: future.iter().take(5).map(|r| r[0].clone()).collect(),
            detail: format!(
                "{} rows recorded in the future, e.g. {}; no as-of run will ever see them",
                future.len(),
                future.iter().take(3).map(|r| r[1].clone()).collect::<Vec<_>>().join(", ")
            ),
            fix: format!("correct {} at the source", col.name),
            ..cx.finding(Some(&col.name), "future_date", Severity::Warning, future.len() as i64, cx.total)
        });
    }
    Ok(())
}

pub async fn mixed_currency(cx: &TableCheck<'_>, col: &Column, out: &mut Vec<Finding>) -> Result<()> {
    if !col.currency {
        return Ok(());
    }
    let (c, known) = (quote(&col.name), &cx.known);
    let groups = rows(
        cx.session,
        &format!("SELECT COALESCE({c}, '(none)'), COUNT(*) AS n FROM {known} GROUP BY 1 ORDER BY n DESC, 1"),
    )
    .await?;
    let named: Vec<_> = groups.iter().filter(|r| r[0] != "(none)").collect();
    if named.len() > 1 {
        let minority: i64 = groups.iter().skip(1).map(|r| r[1].parse::<i64>().unwrap_or(0)).sum();
        out.push(Finding {
            examples: groups.iter().skip(1).map(|r| r[0].clone()).collect(),
            detail: format!(
                "amounts in several currencies: {}; sums across them are not meaningful without conversion",
                groups.iter().map(|r| format!("{} ({})", r[0], r[1])).collect::<Vec<_>>().join(", ")
            ),
            fix: "convert to one reporting currency (dated exchange rates) before comparing amounts".into(),
            ..cx.finding(Some(&col.name), "mixed_currency", Severity::Warning, minority, cx.total)
        });
    }
    Ok(())
}
