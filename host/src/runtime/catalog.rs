//! Loaded app versions by artifact digest: the blob store's bytes, checked and
//! compiled once per process (the optimised code is also cached on disk),
//! shared by every app deployed with the same bytes.
//!
//! Large bytes not compiled before serve first on baseline code (see the
//! runtime's tiers) while one background task at a time optimises them; the
//! optimised code then replaces the baseline code here, for the requests that
//! follow (those running finish on what they started with).

use super::{AppCode, AppRuntime, Invocation, LoadError, Tier};
use crate::blobs::Blobs;
use crate::store::AppView;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// Components from this size on serve on baseline code first. Smaller ones
/// compile to optimised code at once: Cranelift takes a fraction of a second
/// for them, and a background compile beside the deploys and requests that
/// follow costs more than it saves (the 65 KB Rust hello deployed again
/// took 36 ms to its first 200 beside its background compile, 10-19 ms
/// without).
pub const BASELINE_FROM_BYTES: usize = 1 << 20;

pub struct Catalog {
    pub runtime: AppRuntime,
    pub blobs: Blobs,
    loaded: Mutex<HashMap<String, Arc<AppCode>>>,
    /// Digests whose optimised code is being compiled or waits its turn.
    optimizing: Mutex<HashSet<String>>,
    /// One optimising compile at a time (it takes every core for seconds).
    optimizer: tokio::sync::Semaphore,
    /// [`BASELINE_FROM_BYTES`], but for tests.
    baseline_from: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("the artifact {0} is missing from the blob store: {1}")]
    Missing(String, std::io::Error),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("torii is shutting down")]
    ShuttingDown,
}

impl Catalog {
    pub fn new(runtime: AppRuntime, blobs: Blobs) -> Catalog {
        Catalog {
            runtime,
            blobs,
            loaded: Mutex::new(HashMap::new()),
            optimizing: Mutex::new(HashSet::new()),
            optimizer: tokio::sync::Semaphore::new(1),
            baseline_from: BASELINE_FROM_BYTES,
        }
    }

    /// Versions serving on baseline code until their optimised code is ready.
    pub fn optimizing(&self) -> usize {
        self.optimizing.lock().unwrap().len()
    }

    /// True when the version with `digest` is loaded in memory.
    pub fn is_loaded(&self, digest: &str) -> bool {
        self.loaded.lock().unwrap().contains_key(digest)
    }

    /// Forgets the loaded version with `digest` (the next use reads the
    /// compiled code from disk again).
    pub fn unload(&self, digest: &str) {
        self.loaded.lock().unwrap().remove(digest);
    }

    /// The loaded version with `digest`, read from the blob store if needed.
    pub async fn code(self: &Arc<Self>, digest: &str) -> Result<Arc<AppCode>, CatalogError> {
        self.code_of(digest, None).await
    }

    /// [`Catalog::code`] for bytes in hand (`digest` is theirs), which need
    /// not be in the blob store yet: a deploy compiles what it received
    /// while the bytes are being written.
    pub async fn compile(self: &Arc<Self>, digest: &str, bytes: Arc<Vec<u8>>) -> Result<Arc<AppCode>, CatalogError> {
        self.code_of(digest, Some(bytes)).await
    }

    async fn code_of(self: &Arc<Self>, digest: &str, bytes: Option<Arc<Vec<u8>>>) -> Result<Arc<AppCode>, CatalogError> {
        if let Some(code) = self.loaded.lock().unwrap().get(digest) {
            return Ok(code.clone());
        }
        // Compiled before (a wake-up, a restart): straight from the compiled
        // cache. Otherwise from the blob. Loading and compiling are blocking
        // work, kept off the async workers (the data plane's are
        // single-threaded).
        let compiled = self.blocking({
            let digest = digest.to_string();
            move |catalog| catalog.runtime.load_compiled(&digest)
        });
        let code = match compiled.await? {
            Some(code) => code,
            None => {
                let bytes = match bytes {
                    Some(bytes) => bytes,
                    None => Arc::new(self.blobs.get(digest).await.map_err(|e| CatalogError::Missing(digest.to_string(), e))?),
                };
                let code = self.blocking({
                    let bytes = bytes.clone();
                    move |catalog| {
                        if bytes.len() >= catalog.baseline_from { catalog.runtime.load_baseline(&bytes) } else { catalog.runtime.load(&bytes) }
                    }
                });
                let code = code.await??;
                if code.tier() == Tier::Baseline {
                    self.optimize(digest, bytes);
                }
                code
            }
        };
        // Another caller may have loaded it meanwhile: one copy serves.
        Ok(self.loaded.lock().unwrap().entry(digest.to_string()).or_insert_with(|| Arc::new(code)).clone())
    }

    /// Compiles `bytes` (of `digest`) to optimised code in the background,
    /// after the optimising compiles queued before it, and swaps it in for
    /// the baseline code if the version is still loaded by then (the compiled
    /// cache has it either way).
    fn optimize(self: &Arc<Self>, digest: &str, bytes: Arc<Vec<u8>>) {
        if !self.optimizing.lock().unwrap().insert(digest.to_string()) {
            return;
        }
        let (catalog, digest) = (self.clone(), digest.to_string());
        tokio::spawn(async move {
            let optimized = match catalog.optimizer.acquire().await {
                Ok(_turn) => catalog.blocking(move |catalog| catalog.runtime.load(&bytes)).await,
                Err(_) => Err(CatalogError::ShuttingDown),
            };
            match optimized {
                Ok(Ok(code)) => {
                    if let Some(loaded) = catalog.loaded.lock().unwrap().get_mut(&digest)
                        && loaded.tier() == Tier::Baseline
                    {
                        *loaded = Arc::new(code);
                    }
                }
                // Winch compiled them, Cranelift does not: they keep running
                // on baseline code, and the next load tries again.
                Ok(Err(e)) => tracing::warn!(%digest, error = %e, "cannot optimise an app version"),
                Err(_) => {}
            }
            catalog.optimizing.lock().unwrap().remove(&digest);
        });
    }

    /// Runs `work` on the blocking pool.
    async fn blocking<R: Send + 'static>(self: &Arc<Self>, work: impl FnOnce(&Catalog) -> R + Send + 'static) -> Result<R, CatalogError> {
        let catalog = self.clone();
        match tokio::task::spawn_blocking(move || work(&catalog)).await {
            Ok(result) => Ok(result),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(CatalogError::ShuttingDown),
        }
    }
}

/// What a request to `view`'s app runs with: every env var (aliases resolved,
/// private ones included) and the plan's memory (or the app's override).
pub fn invocation(view: &AppView) -> Invocation {
    let env = view.runtime_env().into_iter().map(|(name, value, _)| (name, value)).collect();
    Invocation { env, memory_bytes: usize::try_from(view.memory()).unwrap_or(0), ..Invocation::default() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::RuntimeLimits;
    use std::time::Duration;

    /// New large bytes serve on baseline code at once; the optimised code, once
    /// compiled in the background, replaces it and is what a later load (a
    /// wake-up, a restart) finds in the cache.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn baseline_code_serves_until_the_optimised_code_replaces_it() {
        let dir = tempfile::TempDir::new().unwrap();
        let runtime = AppRuntime::new(RuntimeLimits::new(64 << 20, 8, Duration::from_millis(500)), &dir.path().join("cache")).unwrap();
        let mut catalog = Catalog::new(runtime, Blobs::new(&dir.path().join("blobs")).unwrap());
        let (hello, echo) = (std::fs::read(env!("TORII_GUEST_APP_HELLO")).unwrap(), std::fs::read(env!("TORII_GUEST_APP_ECHO_ENV")).unwrap());
        // The examples are small: from this size on, baseline code first.
        catalog.baseline_from = hello.len().min(echo.len()) + 1;
        let catalog = Arc::new(catalog);
        let (bytes, small) = if hello.len() > echo.len() { (hello, echo) } else { (echo, hello) };
        let (digest, small_digest) = (Blobs::digest(&bytes), Blobs::digest(&small));
        catalog.blobs.put(&digest, &bytes).await.unwrap();
        catalog.blobs.put(&small_digest, &small).await.unwrap();
        // Small bytes: optimised code at once, nothing in the background.
        assert_eq!(catalog.code(&small_digest).await.unwrap().tier(), Tier::Optimized);
        assert_eq!(catalog.optimizing(), 0);

        let first = catalog.code(&digest).await.unwrap();
        assert_eq!(first.tier(), Tier::Baseline);
        assert_eq!(catalog.optimizing(), 1);
        // A second caller meanwhile gets the same code, and no second compile is queued.
        assert!(Arc::ptr_eq(&first, &catalog.code(&digest).await.unwrap()));
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while catalog.optimizing() > 0 {
            assert!(std::time::Instant::now() < deadline, "still optimising");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(catalog.code(&digest).await.unwrap().tier(), Tier::Optimized);
        catalog.unload(&digest);
        assert!(!catalog.is_loaded(&digest));
        assert_eq!(catalog.code(&digest).await.unwrap().tier(), Tier::Optimized, "from the compiled cache");
        assert_eq!(catalog.optimizing(), 0);
    }
}
