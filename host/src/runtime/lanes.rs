//! CPU fairness between apps. A request that computes past one epoch tick
//! is CPU-bound; from then on it runs only while it holds a lane, and gives
//! its lane back at every tick. There are fewer lanes than data-plane
//! threads, so requests that do not compute (most of them) always find a
//! thread that runs no guest, or wait at most one tick behind one.
//!
//! Lanes are handed out app by app: each app has a gate of its own that one
//! of its computing requests passes at a time to queue for a lane, so an app
//! with eight burning requests gets the same share as an app with one.
//!
//! A turn is a lease: a request gives its lane back at its next tick, and a
//! request that waits on I/O or a clock instead (it reaches no tick while it
//! waits) loses it when the lease ends, so a guest that computes a little,
//! then sleeps, cannot keep everyone else's CPU.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct CpuLanes {
    lanes: Arc<Semaphore>,
    /// How long a turn lasts at most.
    lease: Duration,
    /// Per app: one computing request at a time queues for a lane.
    gates: Mutex<HashMap<Arc<str>, Arc<Semaphore>>>,
}

/// What a computing request holds while it runs: its app's gate and a
/// lane, and which of its turns it holds them for.
#[derive(Default)]
pub struct Held {
    permits: Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)>,
    turn: u64,
}

impl CpuLanes {
    /// `lanes` requests compute at once, each for turns of at most `lease`
    /// (longer than a tick, so a computing request gives its lane back at
    /// its tick before the lease ends).
    pub fn new(lanes: usize, lease: Duration) -> CpuLanes {
        CpuLanes { lanes: Arc::new(Semaphore::new(lanes.max(1))), lease, gates: Mutex::default() }
    }

    fn gate(&self, app: &Arc<str>) -> Arc<Semaphore> {
        let mut gates = self.gates.lock().unwrap();
        // Gates of apps with nobody computing are dropped as others come.
        if gates.len() > 1024 {
            gates.retain(|_, g| Arc::strong_count(g) > 1);
        }
        gates.entry(app.clone()).or_insert_with(|| Arc::new(Semaphore::new(1))).clone()
    }

    /// What a request of `app` does at each tick it computes through: give
    /// back what it holds, let the thread's other tasks run, then queue for
    /// its app's gate and a lane again. `held` lives as long as the request's
    /// instance, so what it holds goes back when the instance ends, or when
    /// the turn's lease does.
    pub fn next_turn(self: &Arc<Self>, app: &Arc<str>, held: &Arc<Mutex<Held>>) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        held.lock().unwrap().permits = None;
        let (gate, lanes, held, lease) = (self.gate(app), self.lanes.clone(), held.clone(), self.lease);
        Box::pin(async move {
            tokio::task::yield_now().await;
            let Ok(at_gate) = gate.acquire_owned().await else { return };
            let Ok(lane) = lanes.acquire_owned().await else { return };
            // A new turn: the leases of earlier ones no longer apply.
            let turn = {
                let mut held = held.lock().unwrap();
                held.turn += 1;
                held.permits = Some((at_gate, lane));
                held.turn
            };
            // Woken by a lane given back, it would compute a whole tick before
            // the thread looks at its sockets again: let it look first, so
            // requests that arrived meanwhile run before this tick.
            tokio::task::yield_now().await;
            // The lease starts as the guest computes again (in this poll).
            let leased = Arc::downgrade(&held);
            tokio::spawn(async move {
                tokio::time::sleep(lease).await;
                if let Some(held) = leased.upgrade() {
                    let mut held = held.lock().unwrap();
                    if held.turn == turn {
                        held.permits = None;
                    }
                }
            });
        })
    }

    /// Lanes free now.
    #[cfg(test)]
    pub fn free(&self) -> usize {
        self.lanes.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn an_app_with_many_computing_requests_gets_one_turn_like_the_others() {
        let lanes = Arc::new(CpuLanes::new(1, Duration::from_secs(3600)));
        let order = Arc::new(Mutex::new(Vec::new()));
        // A request of `app` takes a turn, notes it, and computes until its
        // app's `release` lets one request of the app go.
        let request = |app: &'static str, release: &Arc<Semaphore>| {
            let turn = Arc::new(Mutex::new(Held::default()));
            let next = lanes.next_turn(&Arc::from(app), &turn);
            let (order, release) = (order.clone(), release.clone());
            tokio::spawn(async move {
                next.await;
                order.lock().unwrap().push(app);
                release.acquire().await.unwrap().forget();
                turn.lock().unwrap().permits = None;
            });
        };
        let (busy, quiet) = (Arc::new(Semaphore::new(0)), Arc::new(Semaphore::new(0)));
        for _ in 0..3 {
            request("busy", &busy);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        request("quiet", &quiet);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(*order.lock().unwrap(), ["busy"]);
        assert_eq!(lanes.free(), 0);
        // Busy's next requests wait at their app's gate; quiet's, queued for
        // the lane itself, comes first.
        for release in [&busy, &quiet, &busy, &busy] {
            release.add_permits(1);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(*order.lock().unwrap(), ["busy", "quiet", "busy", "busy"]);
        assert_eq!(lanes.free(), 1);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_request_that_waits_instead_of_computing_loses_its_lane_when_the_lease_ends() {
        let lanes = Arc::new(CpuLanes::new(1, Duration::from_millis(200)));
        // `sleeper` takes a turn, then waits (it reaches no tick to give it back).
        let sleeper = Arc::new(Mutex::new(Held::default()));
        lanes.next_turn(&Arc::from("sleeper"), &sleeper).await;
        assert_eq!(lanes.free(), 0);
        let other = Arc::new(Mutex::new(Held::default()));
        let turn = tokio::spawn(lanes.next_turn(&Arc::from("other"), &other));
        tokio::task::yield_now().await;
        assert!(!turn.is_finished(), "the sleeper holds the lane");
        tokio::time::timeout(Duration::from_secs(10), turn).await.expect("the sleeper's lease ends").unwrap();
        assert!(sleeper.lock().unwrap().permits.is_none() && other.lock().unwrap().permits.is_some());
        drop(other);
        assert_eq!(lanes.free(), 1);
    }
}
