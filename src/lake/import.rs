//! `import`: load another system's export into the lake contract through a declarative mapping
//! file (data/mappings/*.toml): source files, one SQL SELECT per contract table, and the export's
//! known quirks with how each is handled. No Rust per export.

use std::path::Path;
use std::sync::Arc;

use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig};
use datafusion::prelude::SessionContext;
use object_store::ObjectStoreExt;
use serde::Deserialize;

use crate::error::{Context, Error, Result};
use crate::lake::Lake;
use crate::lake::contract::Contract;
use crate::lake::contract::quote;

const BUILTIN: &[(&str, &str)] = &[
    ("maven_crm", repo_file!("data/mappings/maven_crm.toml")),
    ("olist_marketing_funnel", repo_file!("data/mappings/olist_marketing_funnel.toml")),
];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    pub name: String,
    pub description: String,
    pub sources: Vec<Source>,
    #[serde(default)]
    pub quirks: Vec<Quirk>,
    pub targets: Vec<Target>,
    /// The lake profile that fits this export (concept rules, journeys), written to the lake's
    /// `lake.toml` by the import unless the lake already has one of its own.
    pub lake_profile: Option<String>,
}

/// The first line of a lake.toml the import wrote (and may rewrite); a user's own file lacks it.
const WRITTEN_BY_IMPORT: &str = "# Written by `gtm-loop import`";

/// A file of the export, registered for the target SQL under `name`; every column is read as text.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    pub name: String,
    pub file: String,
}

/// A known defect of the export and how this mapping handles it: a `rule` in the SQL below, or a
/// `data_quality` finding that `validate` will report. Never silently.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quirk {
    pub quirk: String,
    pub handling: String,
    pub how: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub table: String,
    pub sql: String,
}

impl Mapping {
    /// A built-in mapping by name, or a mapping file by path.
    pub fn load(name_or_path: &str) -> Result<Mapping> {
        let (file, text) = match BUILTIN.iter().find(|(n, _)| *n == name_or_path) {
            Some((n, text)) => (format!("data/mappings/{n}.toml"), text.to_string()),
            None => {
                let text = std::fs::read_to_string(name_or_path).map_err(|e| Error::Config {
                    file: name_or_path.to_string(),
                    message: format!(
                        "{e}; give a mapping file path or one of: {}",
                        BUILTIN.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                    ),
                })?;
                (name_or_path.to_string(), text)
            }
        };
        let mapping: Mapping =
            toml::from_str(&text).map_err(|e| Error::Config { file: file.clone(), message: e.to_string() })?;
        let contract = Contract::builtin();
        for target in &mapping.targets {
            if contract.table(&target.table).is_none() {
                return Err(Error::Config {
                    file,
                    message: format!("target table {} is not in the contract", target.table),
                });
            }
        }
        for q in &mapping.quirks {
            if q.handling != "rule" && q.handling != "data_quality" {
                return Err(Error::Config {
                    file,
                    message: format!(
                        "quirk '{}': handling must be 'rule' or 'data_quality', not '{}'",
                        q.quirk, q.handling
                    ),
                });
            }
        }
        if let Some(text) = &mapping.lake_profile {
            crate::lake::profile::Profile::parse(&format!("{file} (lake_profile)"), text)?;
        }
        Ok(mapping)
    }
}

/// Runs a mapping over the export in `source_dir` and writes one Parquet file per target table
/// into the lake's raw area (`raw/<source>/<table>/<mapping>.parquet`, replacing an earlier import).
pub async fn import(lake: &Lake, mapping_name: &str, source_dir: &Path) -> Result<String> {
    let mapping = Mapping::load(mapping_name)?;
    if !source_dir.is_dir() {
        return Err(Error::Other(format!("{}: not a folder holding the export's files", source_dir.display())));
    }
    let source_lake = Lake::open(&source_dir.to_string_lossy())?;
    let ctx = SessionContext::new();
    source_lake.register(&ctx);
    for source in &mapping.sources {
        if !source_dir.join(&source.file).is_file() {
            return Err(Error::Other(format!(
                "mapping {}: source {} expects the file {} in {}",
                mapping.name,
                source.name,
                source.file,
                source_dir.display()
            )));
        }
        let head = source_lake.get(&source.file).await?;
        let names = crate::lake::inspect::csv_header(&head[..head.len().min(64 * 1024)])
            .ok_or_else(|| Error::Other(format!("{}: no header line", source.file)))?;
        let schema = Arc::new(datafusion::arrow::datatypes::Schema::new(
            names
                .iter()
                .map(|n| {
                    datafusion::arrow::datatypes::Field::new(n, datafusion::arrow::datatypes::DataType::Utf8, true)
                })
                .collect::<Vec<_>>(),
        ));
        let options =
            ListingOptions::new(Arc::new(CsvFormat::default().with_has_header(true))).with_file_extension(".csv");
        let config = ListingTableConfig::new(source_lake.listing_url(&source.file)?)
            .with_listing_options(options)
            .with_schema(schema);
        ctx.register_table(source.name.as_str(), Arc::new(ListingTable::try_new(config)?))?;
    }
    let contract = Contract::builtin();
    let mut summary = format!("import {} from {} into {}\n", mapping.name, source_dir.display(), lake.url);
    for target in &mapping.targets {
        let table = contract.table(&target.table).expect("checked at load");
        let df = ctx.sql(&target.sql).await.map_err(|e| {
            Error::Other(format!("mapping {}: the SQL for {} does not run: {e}", mapping.name, target.table))
        })?;
        let produced: Vec<String> = df.schema().fields().iter().map(|f| f.name().clone()).collect();
        let all = table.all_columns();
        let mut select = Vec::new();
        for name in &produced {
            let col = all.iter().find(|c| &c.name == name).ok_or_else(|| {
                Error::Other(format!(
                    "mapping {}: target {} produces column {name}, which is not in the contract (see data/contract/CONTRACT.md)",
                    mapping.name, target.table
                ))
            })?;
            select.push(format!("CAST({} AS {}) AS {}", quote(name), col.ty.sql(), quote(name)));
        }
        for col in all.iter().filter(|c| c.required) {
            if !produced.contains(&col.name) {
                return Err(Error::Other(format!(
                    "mapping {}: target {} must produce the required column {}",
                    mapping.name, target.table, col.name
                )));
            }
        }
        ctx.register_table("__target", df.into_view())?;
        // Sorted on every column, key first: DataFusion returns rows in partition order, which
        // varies between runs, and the same export must land as the same bytes.
        let order: Vec<String> = table
            .key
            .iter()
            .filter(|k| produced.contains(k))
            .chain(produced.iter().filter(|c| !table.key.contains(c)))
            .map(|c| quote(c))
            .collect();
        let sql = format!("SELECT {} FROM __target ORDER BY {}", select.join(", "), order.join(", "));
        let batches = ctx
            .sql(&sql)
            .await
            .context(|| format!("mapping {}: target {}", mapping.name, target.table))?
            .collect()
            .await
            .context(|| format!("mapping {}: reading the source files for {}", mapping.name, target.table))?;
        ctx.deregister_table("__target")?;
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        let schema = batches.first().map(|b| b.schema()).ok_or_else(|| Error::Other("no output".into()))?;
        let batch = datafusion::arrow::compute::concat_batches(&schema, &batches)?;
        let bytes = crate::lake::rowbuf::parquet_bytes(&batch)?;
        lake.put(&format!("{}/{}.parquet", table.path, mapping.name), bytes).await?;
        summary.push_str(&format!("  {:<28} {rows:>8} rows\n", target.table));
    }
    if let Some(text) = &mapping.lake_profile {
        let own = match lake.store.get(&lake.path("lake.toml")).await {
            Ok(got) => !String::from_utf8_lossy(&got.bytes().await?).starts_with(WRITTEN_BY_IMPORT),
            Err(object_store::Error::NotFound { .. }) => false,
            Err(e) => return Err(e.into()),
        };
        if own {
            summary.push_str("lake.toml: the lake has its own profile; the mapping's was not written\n");
        } else {
            let body = format!(
                "{WRITTEN_BY_IMPORT} from the mapping {}: this export's conventions and journeys.\n{text}",
                mapping.name
            );
            lake.put("lake.toml", bytes::Bytes::from(body)).await?;
            summary.push_str("lake.toml: the mapping's lake profile (its conventions and journeys)\n");
        }
    }
    summary.push_str("quirks handled:\n");
    for q in &mapping.quirks {
        summary.push_str(&format!("  [{}] {}: {}\n", q.handling, q.quirk, q.how));
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_mappings_load() {
        for (name, _) in BUILTIN {
            let m = Mapping::load(name).unwrap();
            assert!(!m.quirks.is_empty(), "{name} documents its quirks");
        }
    }
}
