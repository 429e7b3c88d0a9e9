//! The known layer: each raw table read with contract columns and types, reduced to the version
//! of every row known as of the run date (`sql/staging/_known_as_of.sql`), as `known.<table>`.

use datafusion::arrow::datatypes::DataType;

use crate::error::{Error, Result};
use crate::lake::contract::{ColumnType, cdc_columns, quote};
use crate::lake::inspect::Landed;
use crate::lake::profile::{CONCEPTS, in_contract, stages_sql};
use crate::layers::LakeSession;

const KNOWN_TEMPLATE: &str = repo_file!("sql/staging/_known_as_of.sql");

/// The landed table read with contract columns and types (missing columns NULL), as a subquery.
/// Every table gets the CDC columns, NULL where not landed, so one template serves all. `extra`
/// names landed columns outside the contract that the lake profile reads (as text, lower-case name).
pub fn conformed_sql(landed: &Landed, extra: &[String]) -> String {
    let table = &landed.table;
    let mut columns = table.all_columns();
    if !table.cdc {
        columns.extend(cdc_columns());
    }
    let select: Vec<String> = columns
        .iter()
        .map(|col| {
            let expr = match landed.field(&col.name) {
                None => format!("CAST(NULL AS {})", col.ty.sql()),
                Some(f) => conform_expr(&quote(f.name()), f.data_type(), col.ty),
            };
            format!("{expr} AS {}", quote(&col.name))
        })
        .chain(extra.iter().filter_map(|name| {
            let f = landed.field(name)?;
            Some(format!("CAST({} AS VARCHAR) AS {}", quote(f.name()), quote(&name.to_lowercase())))
        }))
        .collect();
    format!("(SELECT {} FROM raw.{})", select.join(", "), quote(&table.name))
}

/// Registers `known.<table>` for one inspected table (after its `raw` table).
pub async fn register(session: &LakeSession, landed: &Landed) -> Result<()> {
    let table = &landed.table;
    // A lake without the stage catalog may declare its stages in the lake profile.
    if table.name == "opportunity_stage" && !landed.present() && !session.profile.stages.is_empty() {
        let sql = stages_sql(&session.profile.stages);
        let view = session.ctx.sql(&sql).await?.into_view();
        session.ctx.register_table("known.opportunity_stage", view)?;
        return Ok(());
    }
    let conformed = conformed_sql(landed, &profile_columns(session, landed));
    // A known_at column the lake does not carry (optional in the contract): every row is known
    // from the start; `validate` reports the table as not time-travelled.
    let known_filter = match &table.known_at {
        Some(col) if landed.field(col).is_some() => {
            format!("CAST(c.\"{col}\" AS TIMESTAMP) < {}", session.as_of.end_literal())
        }
        _ => "TRUE".into(),
    };
    let key = table.key.iter().map(|k| format!("c.\"{k}\"")).collect::<Vec<_>>().join(", ");
    let sql = session.fill(
        &KNOWN_TEMPLATE
            .replace("{{conformed}}", &conformed)
            .replace("{{key}}", &key)
            .replace("{{known_filter}}", &known_filter),
    );
    let view = session
        .ctx
        .sql(&sql)
        .await
        .map_err(|e| Error::Other(format!("known.{} (sql/staging/_known_as_of.sql) does not plan: {e}", table.name)))?
        .into_view();
    session.ctx.register_table(format!("known.{}", table.name), view)?;
    Ok(())
}

/// Landed columns outside the contract that a profile rule for this table reads.
pub fn profile_columns(session: &LakeSession, landed: &Landed) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for def in CONCEPTS.iter().filter(|c| c.tables.contains(&landed.table.name.as_str())) {
        for rule in session.profile.rules(def.id) {
            let name = rule.column.to_lowercase();
            if !in_contract(&landed.table.name, &name) && landed.field(&name).is_some() && !out.contains(&name) {
                out.push(name);
            }
        }
    }
    out
}

/// The SQL expression that reads a landed column as its contract type. Text (CSV) is parsed with
/// TRY_CAST: values that do not parse become NULL here and are counted by `validate`.
pub fn conform_expr(col: &str, landed: &DataType, ty: ColumnType) -> String {
    let is_text = matches!(landed, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
    if !is_text || ty == ColumnType::String {
        return format!("CAST({col} AS {})", ty.sql());
    }
    let v = format!("NULLIF(TRIM({col}), '')");
    match ty {
        ColumnType::Date => format!("COALESCE(TRY_CAST({v} AS DATE), CAST(TRY_CAST({v} AS TIMESTAMP) AS DATE))"),
        _ => format!("TRY_CAST({v} AS {})", ty.sql()),
    }
}
