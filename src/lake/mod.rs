//! A lake is a root URL (local folder, s3://, gs://, az://) and the object store behind it.
//! Every byte the engine reads or writes goes through here, so remote and local lakes are one path.
//!
//! Below it: the contract the lake is read against, the inspection of what landed, and the two
//! ways rows get into `raw/` (typed row buffers, declarative imports of other exports).

pub mod contract;
pub mod engine;
pub mod import;
pub mod inspect;
pub mod profile;
pub mod rowbuf;

use std::sync::Arc;

use bytes::Bytes;
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload};
use url::Url;

use crate::error::{Error, Result};

#[derive(Clone)]
pub struct Lake {
    /// Root URL with a trailing slash, e.g. `file:///home/me/lake/` or `s3://bucket/gtm/`.
    pub url: Url,
    /// URL of the store alone (scheme and authority), as DataFusion registers it.
    store_url: Url,
    pub store: Arc<dyn ObjectStore>,
    root: Path,
    /// What the user typed, for messages.
    pub location: String,
    /// A lake profile given on the command line (`--profile`), instead of `lake.toml` in the root.
    pub profile_file: Option<std::path::PathBuf>,
    /// The cadence run (weekly, monthly, quarterly) this process works for, if any: the runs its
    /// jobs commit are stamped with it and stay invisible until that cadence run commits.
    pub batch: Option<String>,
    /// Where this process's plans run (`--engine`): here, or on a Ballista cluster.
    pub engine: engine::Engine,
}

impl std::fmt::Debug for Lake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lake").field("url", &self.url.as_str()).finish()
    }
}

impl Lake {
    /// Opens an existing lake from a local path or a URL. A local folder that does not exist is an
    /// error (a mistyped path must not become an empty lake); see `create`.
    pub fn open(location: &str) -> Result<Lake> {
        Lake::open_with(location, false)
    }

    /// Opens a lake, creating a local folder that does not exist yet (for the commands that write a
    /// new lake: `generate`, `import`, and `run` on the default demo path).
    pub fn create(location: &str) -> Result<Lake> {
        Lake::open_with(location, true)
    }

    fn open_with(location: &str, create: bool) -> Result<Lake> {
        let err = |message: String| Error::Lake { location: location.to_string(), message };
        let is_url = location.contains("://");
        if !is_url || location.starts_with("file://") {
            let path = location.strip_prefix("file://").unwrap_or(location);
            if create {
                std::fs::create_dir_all(path).map_err(|e| err(format!("cannot create the folder: {e}")))?;
            } else if !std::path::Path::new(path).is_dir() {
                return Err(Error::NoLake { location: location.to_string() });
            }
            let abs = std::fs::canonicalize(path).map_err(|e| err(e.to_string()))?;
            let mut url = Url::from_directory_path(&abs).map_err(|_| err("not an absolute path".into()))?;
            if !url.path().ends_with('/') {
                url.set_path(&format!("{}/", url.path()));
            }
            let store: Arc<dyn ObjectStore> = Arc::new(object_store::local::LocalFileSystem::new());
            return Lake::at(location, url, Url::parse("file:///").expect("static url"), store);
        }
        let mut url = Url::parse(location).map_err(|e| err(format!("not a URL: {e}")))?;
        if !url.path().ends_with('/') {
            url.set_path(&format!("{}/", url.path()));
        }
        let store = remote_store(&url).map_err(err)?;
        let store_url =
            Url::parse(&format!("{}://{}", url.scheme(), url.authority())).map_err(|e| err(e.to_string()))?;
        Lake::at(location, url, store_url, store)
    }

    /// A lake rooted at `url` (trailing slash) in `store`, with no profile, batch or cluster set.
    fn at(location: &str, url: Url, store_url: Url, store: Arc<dyn ObjectStore>) -> Result<Lake> {
        let root = Path::from_url_path(url.path())
            .map_err(|e| Error::Lake { location: location.to_string(), message: e.to_string() })?;
        Ok(Lake {
            url,
            store_url,
            store,
            root,
            location: location.to_string(),
            profile_file: None,
            batch: None,
            engine: engine::Engine::Embedded,
        })
    }

    /// The object path of `rel` (a `/`-separated path under the lake root).
    pub fn path(&self, rel: &str) -> Path {
        let mut p = self.root.clone();
        for part in rel.split('/').filter(|s| !s.is_empty()) {
            p = p.clone().join(part);
        }
        p
    }

    /// A path relative to the lake root, for messages and manifests.
    pub fn relative(&self, path: &Path) -> String {
        path.prefix_match(&self.root)
            .map(|parts| parts.map(|p| p.as_ref().to_string()).collect::<Vec<_>>().join("/"))
            .unwrap_or_else(|| path.to_string())
    }

    /// The URL DataFusion uses for a folder (trailing slash) or file under the root.
    pub fn listing_url(&self, rel: &str) -> Result<ListingTableUrl> {
        let url = self.url.join(rel).map_err(|e| Error::Other(format!("bad path {rel}: {e}")))?;
        Ok(ListingTableUrl::parse(url.as_str())?)
    }

    /// Makes this lake's store readable by a DataFusion session.
    pub fn register(&self, ctx: &SessionContext) {
        ctx.register_object_store(&self.store_url, self.store.clone());
    }

    /// All objects under `rel`, recursively, sorted by path so runs are reproducible.
    pub async fn list(&self, rel: &str) -> Result<Vec<ObjectMeta>> {
        let prefix = self.path(rel);
        let mut items: Vec<ObjectMeta> =
            self.store.list(Some(&prefix)).try_collect().await.map_err(|e| storage(rel, e))?;
        items.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(items)
    }

    pub async fn get(&self, rel: &str) -> Result<Bytes> {
        let read = async { self.store.get(&self.path(rel)).await?.bytes().await };
        read.await.map_err(|e| match e {
            e @ object_store::Error::NotFound { .. } => Error::ObjectStore(e),
            e => storage(rel, e),
        })
    }

    /// Writes one object. Object stores (and object_store's local backend, which writes a temporary
    /// file and renames it) make a single put all-or-nothing.
    pub async fn put(&self, rel: &str, bytes: impl Into<Bytes>) -> Result<()> {
        let bytes = bytes.into();
        disk_quota(rel, bytes.len())?;
        self.store.put(&self.path(rel), PutPayload::from_bytes(bytes)).await.map_err(|e| storage(rel, e))?;
        Ok(())
    }

    /// Writes one object only if none is at `rel` (a conditional put): false when one already is.
    /// The lock of cadence runs is taken this way, so two processes cannot both hold it.
    pub async fn put_if_absent(&self, rel: &str, bytes: impl Into<Bytes>) -> Result<bool> {
        let bytes = bytes.into();
        disk_quota(rel, bytes.len())?;
        let opts = object_store::PutOptions::from(object_store::PutMode::Create);
        match self.store.put_opts(&self.path(rel), PutPayload::from_bytes(bytes), opts).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) | Err(object_store::Error::Precondition { .. }) => Ok(false),
            Err(e) => Err(storage(rel, e)),
        }
    }

    /// Deletes one object (a missing one is not an error).
    pub async fn delete(&self, rel: &str) -> Result<()> {
        match self.store.delete(&self.path(rel)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(storage(rel, e)),
        }
    }

    /// Every `.json` object directly or deeper under `dir`, parsed as `T`, in path order. One
    /// that does not parse cannot be a whole record of ours (puts are atomic), so it is somebody
    /// else's file: skipped with a warning naming it and `what` it is not.
    pub async fn json_files<T: serde::de::DeserializeOwned>(&self, dir: &str, what: &str) -> Result<Vec<T>> {
        let mut out = Vec::new();
        for item in self.list(&format!("{dir}/")).await? {
            let rel = self.relative(&item.location);
            if !rel.ends_with(".json") {
                continue;
            }
            match serde_json::from_slice::<T>(&self.get(&rel).await?) {
                Ok(v) => out.push(v),
                Err(e) => eprintln!("warning: skipping {rel}: not {what} ({e}); move it out of {dir}/"),
            }
        }
        Ok(out)
    }

    /// The bytes `range` of one object.
    pub async fn get_range(&self, rel: &str, range: std::ops::Range<u64>) -> Result<Bytes> {
        Ok(self.store.get_range(&self.path(rel), range).await?)
    }

    pub async fn exists(&self, rel: &str) -> Result<bool> {
        match self.store.head(&self.path(rel)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn delete_prefix(&self, rel: &str) -> Result<()> {
        for item in self.list(rel).await? {
            self.store.delete(&item.location).await?;
        }
        Ok(())
    }
}

/// An object-store failure on `rel`, named as a storage failure (exit code 5): the store could not
/// be reached or refused the operation, as opposed to bad data in it.
fn storage(rel: &str, e: object_store::Error) -> Error {
    Error::Storage { path: rel.to_string(), source: e }
}

/// A test hook that simulates a full disk: with `GTM_LOOP_DISK_QUOTA_BYTES=N`, the put that would
/// take this process past N bytes fails as a write to a full device does (ENOSPC).
fn disk_quota(rel: &str, len: usize) -> Result<()> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static WRITTEN: AtomicU64 = AtomicU64::new(0);
    let Some(quota) = std::env::var("GTM_LOOP_DISK_QUOTA_BYTES").ok().and_then(|v| v.parse::<u64>().ok()) else {
        return Ok(());
    };
    if WRITTEN.fetch_add(len as u64, Ordering::SeqCst) + len as u64 > quota {
        let source = object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(std::io::Error::from_raw_os_error(28)),
        };
        return Err(storage(rel, source));
    }
    Ok(())
}

/// Retries for transient object-store failures only (connection errors, timeouts, 5xx and
/// throttling; object_store never retries a 4xx), with exponential back-off and jitter, bounded
/// so a dead server gives a clear error in seconds, not minutes.
/// `GTM_LOOP_STORE_RETRIES` (default 4) and `GTM_LOOP_STORE_RETRY_SECS` (default 30) change it.
#[cfg(feature = "cloud")]
fn retry_config() -> object_store::RetryConfig {
    let env = |k: &str, d: u64| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    object_store::RetryConfig {
        backoff: object_store::BackoffConfig::default(),
        max_retries: env("GTM_LOOP_STORE_RETRIES", 4) as usize,
        retry_timeout: std::time::Duration::from_secs(env("GTM_LOOP_STORE_RETRY_SECS", 30)),
    }
}

/// AWS credentials from the shared credentials file (`~/.aws/credentials`, or
/// `AWS_SHARED_CREDENTIALS_FILE`), profile `AWS_PROFILE` or `default`, for when the environment
/// has none. The values are handed to the store and never printed.
#[cfg(feature = "cloud")]
fn aws_credentials_file() -> Vec<(object_store::aws::AmazonS3ConfigKey, String)> {
    use object_store::aws::AmazonS3ConfigKey as K;
    let path = std::env::var("AWS_SHARED_CREDENTIALS_FILE")
        .map(std::path::PathBuf::from)
        .or_else(|_| std::env::var("HOME").map(|h| std::path::Path::new(&h).join(".aws/credentials")));
    let Ok(text) = path.map(std::fs::read_to_string).and_then(|r| r.map_err(|_| std::env::VarError::NotPresent)) else {
        return Vec::new();
    };
    let profile = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into());
    let mut in_profile = false;
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_profile = line.trim_matches(|c| c == '[' || c == ']').trim() == profile;
        } else if let (true, Some((k, v))) = (in_profile, line.split_once('=')) {
            let key = match k.trim() {
                "aws_access_key_id" => K::AccessKeyId,
                "aws_secret_access_key" => K::SecretAccessKey,
                "aws_session_token" => K::Token,
                _ => continue,
            };
            out.push((key, v.trim().to_string()));
        }
    }
    out
}

#[cfg(feature = "cloud")]
fn remote_store(url: &Url) -> std::result::Result<Arc<dyn ObjectStore>, String> {
    if url.scheme() == "s3" || url.scheme() == "s3a" {
        // Credentials and endpoint from AWS_* variables, else the shared credentials file.
        let mut builder =
            object_store::aws::AmazonS3Builder::from_env().with_url(url.as_str()).with_retry(retry_config());
        if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
            for (k, v) in aws_credentials_file() {
                builder = builder.with_config(k, v);
            }
        }
        return builder.build().map(|s| Arc::new(s) as Arc<dyn ObjectStore>).map_err(|e| e.to_string());
    }
    // Credentials come from the usual environment variables (GOOGLE_*, AZURE_*).
    let opts: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("AWS_") || k.starts_with("GOOGLE_") || k.starts_with("AZURE_"))
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    let (store, _) = object_store::parse_url_opts(url, opts).map_err(|e| e.to_string())?;
    Ok(Arc::from(store))
}

#[cfg(not(feature = "cloud"))]
fn remote_store(url: &Url) -> std::result::Result<Arc<dyn ObjectStore>, String> {
    Err(format!(
        "{}:// lakes need the `cloud` feature; rebuild with `cargo build --release --features cloud` \
         (kept out of the default build to keep it small)",
        url.scheme()
    ))
}
