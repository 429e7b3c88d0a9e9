//! Errors a user can act on: each names the file, table or column at fault and what to do next.
//! Lower layers return these; the CLI maps them to exit codes (2 for what the user must fix).

use std::fmt;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{file}: {message}")]
    Config { file: String, message: String },

    #[error("the lake at {lake} breaks its contract:\n{}", ContractList(.problems))]
    Contract { lake: String, problems: Vec<ContractProblem> },

    #[error("cannot open lake {location}: {message}")]
    Lake { location: String, message: String },

    #[error("refused: {0}")]
    Refused(String),

    #[error(
        "no lake at {location}: the folder does not exist. Check the path (--lake or GTM_LOOP_LAKE); \
         a new lake is made only by `gtm-loop generate` or `gtm-loop import`, and the demo only at the default path"
    )]
    NoLake { location: String },

    /// The object store could not be reached or refused an operation (exit code 5).
    #[error(
        "storage failure on {path}: {source}. Nothing of this run was published; check the store (network, credentials, free space) and run again"
    )]
    Storage { path: String, source: object_store::Error },

    /// Another run holds the lake's lock, or a dead run left it (exit code 6).
    #[error("{0}")]
    Locked(String),

    /// Data quality below the threshold a cadence declares (exit code 4).
    #[error("{0}")]
    QualityThreshold(String),

    #[error(transparent)]
    DataFusion(#[from] datafusion::error::DataFusionError),

    #[error(transparent)]
    Arrow(#[from] datafusion::arrow::error::ArrowError),

    #[error(transparent)]
    Parquet(#[from] datafusion::parquet::errors::ParquetError),

    #[error(transparent)]
    ObjectStore(#[from] object_store::Error),

    #[error(transparent)]
    Io(#[from] std::io::Error),

    /// A local file the user named (`--out`, a declaration file) could not be read or written.
    #[error("cannot {action} {path}: {source}")]
    File { path: String, action: &'static str, source: std::io::Error },

    /// An error from below (DataFusion, the object store, a query) with what was being done and on
    /// which table or file, so the message says where to look.
    #[error("{context}: {source}")]
    Context { context: String, source: Box<Error> },

    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The error under any context added on the way up (for exit codes and hints).
    pub fn root(&self) -> &Error {
        match self {
            Error::Context { source, .. } => source.root(),
            e => e,
        }
    }

    /// The process exit code for this error (documented in the README's reliability section):
    /// 2 bad configuration or a refused command, 3 the lake breaks its contract, 4 data quality
    /// below a declared threshold, 5 storage failure, 6 the lake is locked, 1 anything else.
    pub fn exit_code(&self) -> u8 {
        match self.root() {
            Error::Config { .. } | Error::Refused(_) | Error::NoLake { .. } => 2,
            Error::Contract { .. } => 3,
            Error::QualityThreshold(_) => 4,
            Error::Storage { .. } | Error::ObjectStore(_) | Error::Io(_) => 5,
            Error::DataFusion(e) if is_storage(e) => 5,
            Error::Locked(_) => 6,
            _ => 1,
        }
    }
}

/// A DataFusion error that came from the object store or the file system under it.
fn is_storage(e: &datafusion::error::DataFusionError) -> bool {
    use datafusion::error::DataFusionError as D;
    match e {
        D::ObjectStore(_) | D::IoError(_) => true,
        D::Context(_, inner) => is_storage(inner),
        D::Shared(inner) => is_storage(inner),
        D::External(inner) => inner.downcast_ref::<object_store::Error>().is_some(),
        D::ParquetError(p) => matches!(**p, datafusion::parquet::errors::ParquetError::External(_)),
        _ => false,
    }
}

/// Adds what was being done, and on which table or file, to any error convertible to ours.
pub trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: Into<Error>> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::Context { context: what(), source: Box::new(e.into()) })
    }
}

/// Reads a declaration file (a journey, KPI catalog, job or playbook) given on the command line,
/// else the built-in copy compiled from the repository, and parses it as TOML. Errors name the
/// file, so a user knows which declaration to fix.
pub fn read_declaration<T: serde::de::DeserializeOwned>(
    file: Option<&std::path::Path>,
    builtin_name: &str,
    builtin: &str,
) -> Result<(String, T)> {
    read_declaration_text(file, builtin_name, builtin).map(|(name, _, parsed)| (name, parsed))
}

/// As `read_declaration`, also returning the file's text (what a content hash is taken of).
pub fn read_declaration_text<T: serde::de::DeserializeOwned>(
    file: Option<&std::path::Path>,
    builtin_name: &str,
    builtin: &str,
) -> Result<(String, String, T)> {
    let (name, text) = match file {
        Some(p) => (
            p.display().to_string(),
            std::fs::read_to_string(p).map_err(|e| Error::Config {
                file: p.display().to_string(),
                message: format!("cannot read this declaration file ({e}); check the path given on the command line"),
            })?,
        ),
        None => (builtin_name.to_string(), builtin.to_string()),
    };
    let parsed = toml::from_str(&text).map_err(|e| Error::Config { file: name.clone(), message: e.to_string() })?;
    Ok((name, text, parsed))
}

/// One way a lake breaks the contract, with where and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContractProblem {
    pub table: String,
    pub file: Option<String>,
    pub column: Option<String>,
    pub problem: String,
    pub fix: String,
}

impl fmt::Display for ContractProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "table {}", self.table)?;
        if let Some(file) = &self.file {
            write!(f, ", file {file}")?;
        }
        if let Some(col) = &self.column {
            write!(f, ", column {col}")?;
        }
        write!(f, ": {}. Fix: {}", self.problem, self.fix)
    }
}

struct ContractList<'a>(&'a [ContractProblem]);

impl fmt::Display for ContractList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "  - {p}")?;
        }
        Ok(())
    }
}
