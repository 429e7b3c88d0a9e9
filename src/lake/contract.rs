//! The raw lake contract (`data/contract/lake.toml`): which tables a lake holds, their columns,
//! types, keys and checks. Everything that reads or writes the lake goes through this one file.

use std::collections::BTreeMap;

use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use serde::Deserialize;

use crate::error::{Error, Result};

const CONTRACT_TOML: &str = repo_file!("data/contract/lake.toml");

/// Columns Fivetran adds to every table it syncs; optional, used to time-travel and drop deletes.
pub const CDC_COLUMNS: &[(&str, ColumnType, &str)] = &[
    ("is_deleted", ColumnType::Bool, "Salesforce soft delete (recycle bin)."),
    ("last_modified_date", ColumnType::Timestamp, "Last change in Salesforce; dates a delete."),
    ("_fivetran_synced", ColumnType::Timestamp, "When Fivetran wrote this version."),
    ("_fivetran_deleted", ColumnType::Bool, "Deleted at the source, as seen by Fivetran."),
    ("_fivetran_start", ColumnType::Timestamp, "History mode: this version valid from."),
    ("_fivetran_end", ColumnType::Timestamp, "History mode: this version valid until."),
    ("_fivetran_active", ColumnType::Bool, "History mode: the current version."),
];

/// Fivetran's change columns as contract columns (all optional).
pub fn cdc_columns() -> Vec<Column> {
    CDC_COLUMNS
        .iter()
        .map(|(name, ty, description)| Column {
            name: (*name).to_string(),
            ty: *ty,
            required: false,
            description: (*description).to_string(),
            references: None,
            max_null_rate: None,
            category: false,
            non_negative: false,
            recorded_time: false,
            currency: false,
            identifies: false,
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    String,
    Int,
    Float,
    Bool,
    Date,
    Timestamp,
}

impl ColumnType {
    pub fn arrow(self) -> DataType {
        match self {
            ColumnType::String => DataType::Utf8,
            ColumnType::Int => DataType::Int64,
            ColumnType::Float => DataType::Float64,
            ColumnType::Bool => DataType::Boolean,
            ColumnType::Date => DataType::Date32,
            ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
        }
    }

    /// The SQL type staged columns are cast to.
    pub fn sql(self) -> &'static str {
        match self {
            ColumnType::String => "VARCHAR",
            ColumnType::Int => "BIGINT",
            ColumnType::Float => "DOUBLE",
            ColumnType::Bool => "BOOLEAN",
            ColumnType::Date => "DATE",
            ColumnType::Timestamp => "TIMESTAMP(6)",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ColumnType::String => "string",
            ColumnType::Int => "int",
            ColumnType::Float => "float",
            ColumnType::Bool => "bool",
            ColumnType::Date => "date",
            ColumnType::Timestamp => "timestamp",
        }
    }

    /// Whether a landed Parquet column of type `landed` can be read as this type without loss of
    /// meaning. Strings holding numbers or dates are not accepted: that is a contract error to fix
    /// upstream (or to handle in a mapping), not something to guess at.
    pub fn accepts(self, landed: &DataType) -> bool {
        use DataType as D;
        let is_string = matches!(landed, D::Utf8 | D::LargeUtf8 | D::Utf8View);
        let is_int = landed.is_integer();
        match self {
            ColumnType::String => {
                is_string || is_int || matches!(landed, D::Dictionary(_, v) if matches!(**v, D::Utf8 | D::LargeUtf8))
            }
            ColumnType::Int => is_int,
            ColumnType::Float => {
                is_int || landed.is_floating() || matches!(landed, D::Decimal128(_, _) | D::Decimal256(_, _))
            }
            ColumnType::Bool => matches!(landed, D::Boolean),
            ColumnType::Date | ColumnType::Timestamp => {
                matches!(landed, D::Date32 | D::Date64 | D::Timestamp(_, _))
            }
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: ColumnType,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub description: String,
    pub references: Option<String>,
    pub max_null_rate: Option<f64>,
    #[serde(default)]
    pub category: bool,
    #[serde(default)]
    pub non_negative: bool,
    #[serde(default)]
    pub recorded_time: bool,
    #[serde(default)]
    pub currency: bool,
    #[serde(default)]
    pub identifies: bool,
}

/// A declared row-level rule: rows of the staged table matching `when` are a data-quality finding.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RowCheck {
    pub name: String,
    /// A SQL predicate over the table's contract columns.
    pub when: String,
    pub severity: String,
    pub meaning: String,
    pub fix: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Table {
    pub name: String,
    pub source: String,
    pub path: String,
    pub key: Vec<String>,
    pub known_at: Option<String>,
    #[serde(default)]
    pub cdc: bool,
    #[serde(default)]
    pub required: bool,
    pub description: String,
    #[serde(default)]
    pub enables: Vec<String>,
    pub columns: Vec<Column>,
    #[serde(default)]
    pub checks: Vec<RowCheck>,
}

impl Table {
    /// Contract columns plus, for CDC tables, Fivetran's change columns.
    pub fn all_columns(&self) -> Vec<Column> {
        let mut cols = self.columns.clone();
        if self.cdc {
            cols.extend(cdc_columns());
        }
        cols
    }

    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// The Arrow schema of the table as the generator and importers write it.
    pub fn arrow_schema(&self, with_cdc: bool) -> Schema {
        let cols = if with_cdc { self.all_columns() } else { self.columns.clone() };
        Schema::new(cols.iter().map(|c| Field::new(&c.name, c.ty.arrow(), !c.required)).collect::<Vec<_>>())
    }
}

#[derive(Debug, Clone, Deserialize)]
struct ContractFile {
    table: Vec<Table>,
}

#[derive(Debug, Clone)]
pub struct Contract {
    pub tables: Vec<Table>,
}

impl Contract {
    /// The contract compiled into this binary.
    pub fn builtin() -> &'static Contract {
        static CONTRACT: std::sync::OnceLock<Contract> = std::sync::OnceLock::new();
        CONTRACT.get_or_init(|| Contract::parse(CONTRACT_TOML).expect("data/contract/lake.toml is valid"))
    }

    pub fn parse(text: &str) -> Result<Contract> {
        let file: ContractFile = toml::from_str(text)
            .map_err(|e| Error::Config { file: "data/contract/lake.toml".into(), message: e.to_string() })?;
        let contract = Contract { tables: file.table };
        contract.check()?;
        Ok(contract)
    }

    fn check(&self) -> Result<()> {
        let mut seen = BTreeMap::new();
        for t in &self.tables {
            if seen.insert(t.name.clone(), ()).is_some() {
                return Err(self.bad(format!("table {} is declared twice", t.name)));
            }
            for k in t.key.iter().chain(t.known_at.iter()) {
                if t.column(k).is_none() {
                    return Err(self.bad(format!("table {}: key/known_at column {k} is not declared", t.name)));
                }
            }
        }
        for t in &self.tables {
            for c in &t.columns {
                if let Some(r) = &c.references {
                    let (rt, rc) = r.split_once('.').unwrap_or((r, "id"));
                    let ok = self.table(rt).is_some_and(|t| t.column(rc).is_some());
                    if !ok {
                        return Err(self.bad(format!("{}.{} references unknown {r}", t.name, c.name)));
                    }
                }
            }
        }
        Ok(())
    }

    fn bad(&self, message: String) -> Error {
        Error::Config { file: "data/contract/lake.toml".into(), message }
    }

    pub fn table(&self, name: &str) -> Option<&Table> {
        self.tables.iter().find(|t| t.name == name)
    }

    /// The contract as Markdown, table by table (`gtm-loop contract` writes data/contract/CONTRACT.md).
    pub fn to_markdown(&self) -> String {
        let mut out = String::from(
            "# The raw lake contract\n\nGenerated from `data/contract/lake.toml` by `gtm-loop contract`; do not edit by hand.\n\n\
             Files are Parquet or CSV (many files per table; sub-folders such as hive-style partitions are read \
             recursively). Extra columns are ignored. A missing optional column is read as NULL and reported by \
             `validate`; a missing required column, a missing required table, a wrong Parquet type or an unreadable \
             file stops the run with a message naming the file and the fix. CSV values are parsed to the column \
             type; values that do not parse are reported as data-quality findings, never dropped silently.\n\n\
             **As of a date D** (`--as-of D`): a row exists only if its `known_at` column is on or before D; \
             CDC tables keep the latest version synced on or before D, then drop rows deleted as known at D; \
             an opportunity's stage, amount, close date, probability and forecast category are those of its last \
             `opportunity_history` row created on or before D, and a lead's status comes from `lead_history`.\n\n",
        );
        out.push_str("| table | source | path | key | known at | required |\n|---|---|---|---|---|---|\n");
        for t in &self.tables {
            out.push_str(&format!(
                "| [{n}](#{n}) | {} | `{}/` | {} | {} | {} |\n",
                t.source,
                t.path,
                t.key.join(", "),
                t.known_at.as_deref().unwrap_or("(always)"),
                if t.required { "yes" } else { "no" },
                n = t.name
            ));
        }
        for t in &self.tables {
            out.push_str(&format!("\n## {}\n\n{}\n\n", t.name, t.description));
            if !t.enables.is_empty() {
                out.push_str(&format!("Enables: {}.\n\n", t.enables.join(", ")));
            }
            out.push_str("| column | type | required | checks | meaning |\n|---|---|---|---|---|\n");
            for c in &t.columns {
                let mut checks = Vec::new();
                if let Some(r) = &c.references {
                    checks.push(format!("references {r}"));
                }
                if let Some(m) = c.max_null_rate {
                    checks.push(format!("nulls <= {:.0}%", m * 100.0));
                }
                if c.category {
                    checks.push("consistent spelling".into());
                }
                if c.non_negative {
                    checks.push(">= 0".into());
                }
                if c.recorded_time {
                    checks.push("not after as-of".into());
                }
                if c.currency {
                    checks.push("one currency".into());
                }
                if c.identifies {
                    checks.push("one id per value".into());
                }
                out.push_str(&format!(
                    "| `{}` | {} | {} | {} | {} |\n",
                    c.name,
                    c.ty.name(),
                    if c.required { "yes" } else { "" },
                    checks.join("; "),
                    c.description.replace('|', "\\|")
                ));
            }
            for check in &t.checks {
                out.push_str(&format!(
                    "\nRule `{}` ({}): rows where `{}`: {}\n",
                    check.name, check.severity, check.when, check.meaning
                ));
            }
            if t.cdc {
                out.push_str("\nPlus Fivetran's optional change columns: ");
                out.push_str(&CDC_COLUMNS.iter().map(|(n, _, _)| format!("`{n}`")).collect::<Vec<_>>().join(", "));
                out.push_str(".\n");
            }
        }
        out
    }
}

/// A SQL identifier, quoted (contract and landed column names may hold spaces or capitals).
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_contract_parses_and_holds_the_fivetran_tables() {
        let c = Contract::builtin();
        for t in [
            "opportunity",
            "opportunity_history",
            "account",
            "contact",
            "opportunity_contact_role",
            "user",
            "user_role",
            "task",
            "event",
            "lead",
            "opportunity_line_item",
            "opportunity_stage",
            "campaign",
            "campaign_member",
            "usage_daily",
            "product_events",
            "tracker_mention",
            "quota",
        ] {
            assert!(c.table(t).is_some(), "{t} missing from the contract");
        }
        let required: Vec<_> = c.tables.iter().filter(|t| t.required).map(|t| t.name.as_str()).collect();
        assert_eq!(required, ["account", "user", "opportunity", "opportunity_history"]);
    }

    #[test]
    fn contract_doc_is_in_sync() {
        let doc = repo_file!("data/contract/CONTRACT.md");
        assert_eq!(doc, Contract::builtin().to_markdown(), "run `gtm-loop contract > data/contract/CONTRACT.md`");
    }

    #[test]
    fn type_acceptance() {
        assert!(ColumnType::Timestamp.accepts(&DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))));
        assert!(ColumnType::Float.accepts(&DataType::Int32));
        assert!(!ColumnType::Float.accepts(&DataType::Utf8));
        assert!(!ColumnType::Bool.accepts(&DataType::Int64));
    }
}
