//! The lake's own commands: `generate` (the demo lake), `validate` (contract and data quality)
//! and `import` (another system's export through a mapping file).

use std::io::Write;
use std::path::Path;

use chrono::NaiveDate;

use crate::demo::GenerateOptions;
use crate::error::Result;
use crate::lake::Lake;
use crate::layers::AsOf;

pub async fn generate(lake: &Lake, opts: &GenerateOptions, out: &mut dyn Write) -> Result<()> {
    let truth = crate::demo::generate(lake, opts).await?;
    for (table, rows) in &truth.row_counts {
        writeln!(out, "  {table:<28} {rows:>12} rows")?;
    }
    writeln!(out, "truth file: {}truth.json", lake.url)?;
    Ok(())
}

pub async fn validate(lake: &Lake, as_of: Option<NaiveDate>, out: &mut dyn Write) -> Result<()> {
    let session = crate::outputs::open_session(lake, AsOf(as_of)).await?;
    validate_in(&session, out).await
}

/// Validates in an open session and prints the findings and the published run.
pub async fn validate_in(session: &crate::layers::LakeSession, out: &mut dyn Write) -> Result<()> {
    let report = crate::quality::run(session, &[]).await?;
    writeln!(out, "lake profile: {}", session.profile.source)?;
    write!(out, "{}", crate::quality::summary(&report.findings))?;
    writeln!(out, "published run {} (output.data_quality, as of {})", report.manifest.run_id, report.manifest.as_of)?;
    Ok(())
}

pub async fn import(lake: &Lake, mapping: &str, source: &Path, out: &mut dyn Write) -> Result<()> {
    let summary = crate::lake::import::import(lake, mapping, source).await?;
    write!(out, "{summary}")?;
    Ok(())
}
