//! A lake is a root URL (local folder, s3://, gs://, az://) and the object store behind it.
//! Every byte the engine reads or writes goes through here, so remote and local lakes are one path.
//!
//! Below it: the contract the lake is read against, the inspection of what landed, and the two
//! ways rows get into `raw/` (typed row buffers, declarative imports of other exports).

pub mod contract;
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
}

impl std::fmt::Debug for Lake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lake").field("url", &self.url.as_str()).finish()
    }
}

impl Lake {
    /// Opens a lake from a local path or a URL. A local folder is created if it does not exist.
    pub fn open(location: &str) -> Result<Lake> {
        let err = |message: String| Error::Lake { location: location.to_string(), message };
        let is_url = location.contains("://");
        if !is_url || location.starts_with("file://") {
            let path = location.strip_prefix("file://").unwrap_or(location);
            std::fs::create_dir_all(path).map_err(|e| err(format!("cannot create the folder: {e}")))?;
            let abs = std::fs::canonicalize(path).map_err(|e| err(e.to_string()))?;
            let mut url = Url::from_directory_path(&abs).map_err(|_| err("not an absolute path".into()))?;
            if !url.path().ends_with('/') {
                url.set_path(&format!("{}/", url.path()));
            }
            let root = Path::from_url_path(url.path()).map_err(|e| err(e.to_string()))?;
            let store: Arc<dyn ObjectStore> = Arc::new(object_store::local::LocalFileSystem::new());
            return Ok(Lake {
                store_url: Url::parse("file:///").expect("static url"),
                url,
                store,
                root,
                location: location.to_string(),
                profile_file: None,
            });
        }
        let mut url = Url::parse(location).map_err(|e| err(format!("not a URL: {e}")))?;
        if !url.path().ends_with('/') {
            url.set_path(&format!("{}/", url.path()));
        }
        let store = remote_store(&url).map_err(err)?;
        let root = Path::from_url_path(url.path()).map_err(|e| err(e.to_string()))?;
        let store_url =
            Url::parse(&format!("{}://{}", url.scheme(), url.authority())).map_err(|e| err(e.to_string()))?;
        Ok(Lake { url, store_url, store, root, location: location.to_string(), profile_file: None })
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
        let mut items: Vec<ObjectMeta> = self.store.list(Some(&prefix)).try_collect().await?;
        items.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(items)
    }

    pub async fn get(&self, rel: &str) -> Result<Bytes> {
        Ok(self.store.get(&self.path(rel)).await?.bytes().await?)
    }

    /// Writes one object. Object stores (and object_store's local backend, which writes a temporary
    /// file and renames it) make a single put all-or-nothing.
    pub async fn put(&self, rel: &str, bytes: impl Into<Bytes>) -> Result<()> {
        self.store.put(&self.path(rel), PutPayload::from_bytes(bytes.into())).await?;
        Ok(())
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

#[cfg(feature = "cloud")]
fn remote_store(url: &Url) -> std::result::Result<Arc<dyn ObjectStore>, String> {
    // Credentials come from the usual environment variables (AWS_*, GOOGLE_*, AZURE_*).
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
