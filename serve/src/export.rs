//! `COPY … TO` with a size cap (`--export-max`).
//!
//! DataFusion writes an export through the object store registered for
//! `file://`. Each `COPY` runs with a registry of its own whose local store
//! counts every byte handed to it and refuses the write that would pass
//! the cap, so a `COPY` of a huge join stops at the cap instead of filling
//! the export directory's disk. A refused write never reaches the file:
//! small files are written whole or not at all, and a multipart upload
//! that fails is dropped, which deletes its staging file.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_trait::async_trait;
use datafusion::common::Result as DfResult;
use datafusion::execution::object_store::{DefaultObjectStoreRegistry, ObjectStoreRegistry};
use datafusion::object_store::local::LocalFileSystem;
use datafusion::object_store::path::Path;
use datafusion::object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, UploadPart,
};
use futures::stream::BoxStream;
use url::Url;

/// How many bytes one export may still write.
#[derive(Debug)]
pub struct Budget {
    limit: u64,
    setting: String,
    written: AtomicU64,
    exceeded: AtomicBool,
}

impl Budget {
    /// A budget of `limit` bytes, a limit its error names as `setting`.
    pub fn new(limit: u64, setting: String) -> Arc<Budget> {
        Arc::new(Budget { limit, setting, written: AtomicU64::new(0), exceeded: AtomicBool::new(false) })
    }

    /// Whether a write was refused for passing the cap.
    pub fn exceeded(&self) -> bool {
        self.exceeded.load(Ordering::Relaxed)
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    fn take(&self, bytes: usize) -> datafusion::object_store::Result<()> {
        let bytes = bytes as u64;
        let before = self.written.fetch_add(bytes, Ordering::Relaxed);
        if before.saturating_add(bytes) > self.limit {
            self.written.fetch_sub(bytes, Ordering::Relaxed);
            self.exceeded.store(true, Ordering::Relaxed);
            return Err(datafusion::object_store::Error::Generic {
                store: "export",
                source: format!("the export would pass {} bytes ({})", self.limit, self.setting).into(),
            });
        }
        Ok(())
    }
}

/// The object store registry of one export: `file://` goes through the
/// capped local store, everything else to the server's registry.
#[derive(Debug)]
pub struct ExportRegistry {
    inner: Arc<dyn ObjectStoreRegistry>,
    local: Arc<dyn ObjectStore>,
}

impl ExportRegistry {
    /// A registry over `inner` whose local writes draw on `budget`.
    pub fn new(inner: Arc<dyn ObjectStoreRegistry>, budget: Arc<Budget>) -> ExportRegistry {
        ExportRegistry { inner, local: Arc::new(Capped { inner: Arc::new(LocalFileSystem::new()), budget }) }
    }
}

impl ObjectStoreRegistry for ExportRegistry {
    fn register_store(&self, url: &Url, store: Arc<dyn ObjectStore>) -> Option<Arc<dyn ObjectStore>> {
        self.inner.register_store(url, store)
    }
    fn get_store(&self, url: &Url) -> DfResult<Arc<dyn ObjectStore>> {
        if url.scheme() == "file" && url.host_str().is_none_or(str::is_empty) {
            return Ok(self.local.clone());
        }
        self.inner.get_store(url)
    }
}

/// The server's default registry (for a server without one of its own).
pub fn default_registry() -> Arc<dyn ObjectStoreRegistry> {
    Arc::new(DefaultObjectStoreRegistry::new())
}

#[derive(Debug)]
struct Capped {
    inner: Arc<dyn ObjectStore>,
    budget: Arc<Budget>,
}

impl std::fmt::Display for Capped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Capped({}, {} bytes)", self.inner, self.budget.limit)
    }
}

#[async_trait]
impl ObjectStore for Capped {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> datafusion::object_store::Result<PutResult> {
        self.budget.take(payload.content_length())?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> datafusion::object_store::Result<Box<dyn MultipartUpload>> {
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(CappedUpload { inner, budget: self.budget.clone() }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> datafusion::object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, datafusion::object_store::Result<Path>>,
    ) -> BoxStream<'static, datafusion::object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, datafusion::object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> datafusion::object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> datafusion::object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[derive(Debug)]
struct CappedUpload {
    inner: Box<dyn MultipartUpload>,
    budget: Arc<Budget>,
}

#[async_trait]
impl MultipartUpload for CappedUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        match self.budget.take(data.content_length()) {
            Ok(()) => self.inner.put_part(data),
            Err(e) => Box::pin(async move { Err(e) }),
        }
    }

    async fn complete(&mut self) -> datafusion::object_store::Result<PutResult> {
        self.inner.complete().await
    }

    async fn abort(&mut self) -> datafusion::object_store::Result<()> {
        self.inner.abort().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::object_store::ObjectStoreExt;

    #[test]
    fn writes_past_the_cap_are_refused_and_leave_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let budget = Budget::new(100, "export_max".into());
        let registry = ExportRegistry::new(default_registry(), budget.clone());
        let url = Url::parse("file:///").unwrap();
        let store = registry.get_store(&url).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let small = Path::from_absolute_path(dir.path().join("small.csv")).unwrap();
        rt.block_on(store.put(&small, PutPayload::from(vec![b'x'; 60]))).unwrap();
        assert!(!budget.exceeded());
        let big = Path::from_absolute_path(dir.path().join("big.csv")).unwrap();
        let e = rt.block_on(store.put(&big, PutPayload::from(vec![b'x'; 60]))).unwrap_err();
        assert!(e.to_string().contains("100 bytes (export_max)"), "{e}");
        assert!(budget.exceeded());
        assert!(!dir.path().join("big.csv").exists());
        let parts = Path::from_absolute_path(dir.path().join("parts.csv")).unwrap();
        let upload = rt.block_on(async {
            let mut upload = store.put_multipart(&parts).await.unwrap();
            upload.put_part(PutPayload::from(vec![b'y'; 30])).await.unwrap();
            upload.put_part(PutPayload::from(vec![b'y'; 30])).await.unwrap_err();
            upload
        });
        drop(upload); // an unfinished upload leaves no file
        assert_eq!(budget.written(), 90);
        assert!(!dir.path().join("parts.csv").exists());
        // Other schemes go to the server's own registry.
        assert!(registry.get_store(&Url::parse("s3://bucket/x").unwrap()).is_err());
    }
}
