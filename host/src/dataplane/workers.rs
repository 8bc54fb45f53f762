//! The data plane's threads: one single-threaded tokio runtime per worker,
//! each serving whole connections handed to it round-robin by the accept
//! loop (thread per core, as nginx does). A request runs start to end on one
//! thread: no wake-ups across cores, no work stealing, no locks on a run
//! queue. A guest that computes yields at each epoch tick (see the app
//! runtime), so a busy request delays the other connections of its worker by
//! one tick at most.
//!
//! The workers are the process's, started once and kept: database and
//! backend connections opened by a request are registered with the worker's
//! reactor, which must outlive them. Each data plane stops its own
//! connections when it ends.

use std::future::Future;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::runtime::Handle;

pub struct Workers {
    handles: Vec<Handle>,
    next: AtomicUsize,
}

static WORKERS: OnceLock<Workers> = OnceLock::new();

impl Workers {
    /// The process's `count` workers, started by the first call (later calls
    /// get those, whatever their count).
    pub fn get(count: usize) -> &'static Workers {
        WORKERS.get_or_init(|| Workers { handles: (0..count.max(1)).map(start).collect(), next: AtomicUsize::new(0) })
    }

    /// Runs `connection` on the next worker.
    pub fn spawn(&self, connection: impl Future<Output = ()> + Send + 'static) {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        self.handles[i].spawn(connection);
    }
}

/// Worker `i`: a thread running a single-threaded runtime forever.
fn start(i: usize) -> Handle {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("data plane runtime");
    let handle = runtime.handle().clone();
    std::thread::Builder::new()
        .name(format!("torii-router-{i}"))
        .spawn(move || runtime.block_on(std::future::pending::<()>()))
        .expect("data plane thread");
    handle
}
