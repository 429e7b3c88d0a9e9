//! Where a session's plans run: in this process (DataFusion, the default) or on an Apache
//! DataFusion Ballista cluster (`--engine df://host:50050`, built with the `distributed` feature).

use crate::error::{Error, Result};

/// The engine that executes a session's plans. Planning always happens in this process; only
/// execution moves, so the SQL, the lake profile and the as-of rules are the same on both.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Engine {
    /// DataFusion in this process, with the shared as-of tables and the spilling memory pool.
    #[default]
    Embedded,
    /// A Ballista scheduler (`df://host:port`): executors read the lake's files themselves, so
    /// every table a plan reads must be a listing of files or a view over them.
    Cluster {
        /// As the user gave it, e.g. `df://scheduler.internal:50050`.
        scheduler: String,
    },
}

/// The port a Ballista scheduler listens on unless told otherwise.
pub const DEFAULT_SCHEDULER_PORT: u16 = 50050;

impl Engine {
    /// `embedded` (or nothing), or `df://host[:port]` for a Ballista scheduler.
    pub fn parse(text: &str) -> Result<Engine> {
        let text = text.trim();
        if text.is_empty() || text.eq_ignore_ascii_case("embedded") {
            return Ok(Engine::Embedded);
        }
        let refused = |why: String| Error::Refused(format!("--engine {text}: {why}"));
        let Some(rest) = text.strip_prefix("df://") else {
            return Err(refused("give `embedded` or a Ballista scheduler as df://host:port".into()));
        };
        let host = rest.split(':').next().unwrap_or("");
        if host.is_empty() || rest.contains('/') {
            return Err(refused("a scheduler is df://host:port, e.g. df://localhost:50050".into()));
        }
        if let Some((_, port)) = rest.split_once(':')
            && port.parse::<u16>().is_err()
        {
            return Err(refused(format!("'{port}' is not a port")));
        }
        if !cfg!(feature = "distributed") {
            return Err(refused(
                "this binary was built without the distributed engine; build it with `--features distributed`".into(),
            ));
        }
        Ok(Engine::Cluster { scheduler: text.to_string() })
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Engine::Cluster { .. })
    }

    /// For messages and manifests.
    pub fn label(&self) -> String {
        match self {
            Engine::Embedded => "embedded".into(),
            Engine::Cluster { scheduler } => format!("ballista {scheduler}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engines_parse() {
        assert_eq!(Engine::parse("").unwrap(), Engine::Embedded);
        assert_eq!(Engine::parse("Embedded").unwrap(), Engine::Embedded);
        for bad in ["localhost:50050", "df://", "df://host:port", "df://host:50050/x", "http://host:50050"] {
            assert!(Engine::parse(bad).is_err(), "{bad} accepted");
        }
        let cluster = Engine::parse("df://scheduler:50050");
        if cfg!(feature = "distributed") {
            assert_eq!(cluster.unwrap(), Engine::Cluster { scheduler: "df://scheduler:50050".into() });
        } else {
            assert!(cluster.unwrap_err().to_string().contains("--features distributed"));
        }
    }
}
