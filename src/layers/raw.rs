//! The raw layer: every contract table exactly as landed (`raw.<table>`), read in place through
//! the lake's object store; a table that did not land, or breaks the contract, is registered empty.

use std::sync::Arc;

use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig};

use crate::error::Result;
use crate::lake::inspect::{Format, Landed};
use crate::layers::LakeSession;

/// Registers `raw.<table>` for one inspected table.
pub async fn register(session: &LakeSession, landed: &Landed) -> Result<()> {
    let name = format!("raw.{}", landed.table.name);
    let (Some(schema), Some(format)) = (landed.schema.clone(), landed.format) else {
        let empty = Arc::new(landed.table.arrow_schema(landed.table.cdc));
        return session.register_rows(&name, empty, vec![]).await;
    };
    // Parquet text columns are read as string views (`lake::inspect::text_as_views`).
    let options = match format {
        Format::Parquet => ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet"),
        Format::Csv => {
            ListingOptions::new(Arc::new(CsvFormat::default().with_has_header(true))).with_file_extension(".csv")
        }
    };
    let url = session.lake.listing_url(&format!("{}/", landed.table.path))?;
    let config = ListingTableConfig::new(url).with_listing_options(options).with_schema(schema);
    session.ctx.register_table(name, Arc::new(ListingTable::try_new(config)?))?;
    Ok(())
}
