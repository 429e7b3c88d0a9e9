//! Small query helpers for the checks: rows as display strings, one column, one integer.
//! Errors carry the SQL that failed, so a broken check names itself.

use datafusion::arrow::array::{Array, Int64Array};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::error::{Context, Error, Result};
use crate::layers::LakeSession;

pub(crate) async fn rows(session: &LakeSession, sql: &str) -> Result<Vec<Vec<String>>> {
    let batches = collect(session, sql).await?;
    let opts = FormatOptions::default().with_null("");
    let mut out = Vec::new();
    for batch in batches {
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        for row in 0..batch.num_rows() {
            out.push(formatters.iter().map(|f| f.value(row).to_string()).collect());
        }
    }
    Ok(out)
}

pub(crate) async fn first_col(session: &LakeSession, sql: &str) -> Result<Vec<String>> {
    Ok(rows(session, sql).await?.into_iter().map(|mut r| r.swap_remove(0)).collect())
}

pub(crate) async fn scalar(session: &LakeSession, sql: &str) -> Result<i64> {
    let batches = collect(session, sql).await?;
    let batch = batches.first().ok_or_else(|| Error::Other(format!("no result for {sql}")))?;
    let col =
        batch.column(0).as_any().downcast_ref::<Int64Array>().ok_or_else(|| Error::Other("not an integer".into()))?;
    Ok(if col.is_null(0) { 0 } else { col.value(0) })
}

async fn collect(session: &LakeSession, sql: &str) -> Result<Vec<datafusion::arrow::array::RecordBatch>> {
    let span = crate::layers::trace::start(format!("validate query {}", sql.chars().take(160).collect::<String>()));
    let df = session.ctx.sql(sql).await.context(|| format!("validate: planning `{sql}`"))?;
    let batches = df.collect().await.context(|| format!("validate: running `{sql}`"))?;
    if let Some(span) = span {
        span.done(&format!("{} rows", batches.iter().map(|b| b.num_rows()).sum::<usize>()));
    }
    Ok(batches)
}
