//! Claims: a target whose lock a background task of this process is about
//! to take, for work a client already saw the effect of. The data plane
//! serves the first request of a sleeping WASM app at once and records the
//! wake beside it (`apps::wake::beside`); until that wake has ended, an
//! operation wanting the app's lock waits for it instead of being refused
//! (409), and the reads of the app wait for it, so a client that got its 200
//! never sees the app asleep or locked by its own request.
//!
//! A claim lasts only while its holder takes the lock and converges: a holder
//! that finds the lock held by another operation lets go at once. Waits are
//! bounded ([`SETTLE_BOUND`]). Claims are this process's: another torii
//! process sharing the database sees the lock (and its 409) as before.

use super::Target;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// The longest anyone waits for a claim. A claim's work is a few database
/// statements and one provisioner call, each with its own deadline; past
/// this the waiter goes on as if there were none.
pub const SETTLE_BOUND: Duration = Duration::from_secs(10);

type Key = (String, String);

fn key(target: &Target) -> Key {
    (target.kind.clone(), target.value.clone())
}

/// The claims of one process.
pub struct Claims {
    /// A receiver per claimed target; its sender is the claim: dropping it
    /// tells every waiter.
    held: Arc<Mutex<HashMap<Key, watch::Receiver<()>>>>,
    /// The longest a wait lasts.
    bound: Duration,
}

impl Default for Claims {
    fn default() -> Claims {
        Claims::bounded(SETTLE_BOUND)
    }
}

/// A claim on a target; released when dropped.
pub struct Claim {
    held: Arc<Mutex<HashMap<Key, watch::Receiver<()>>>>,
    key: Key,
    _done: watch::Sender<()>,
}

impl Claim {
    /// Whether this claim is on `target`.
    pub fn covers(&self, target: &Target) -> bool {
        self.key == key(target)
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        // Removed before the sender goes (fields drop after this body), so a
        // waiter woken by it finds the target free.
        self.held.lock().unwrap().remove(&self.key);
    }
}

impl Claims {
    /// Claims whose waits last `bound` at most.
    pub fn bounded(bound: Duration) -> Claims {
        Claims { held: Default::default(), bound }
    }

    /// Claims `target`, unless this process already holds a claim on it.
    pub fn claim(&self, target: &Target) -> Option<Claim> {
        let mut held = self.held.lock().unwrap();
        let key = key(target);
        if held.contains_key(&key) {
            return None;
        }
        let (done, waiting) = watch::channel(());
        held.insert(key.clone(), waiting);
        Some(Claim { held: self.held.clone(), key, _done: done })
    }

    /// Returns once no claim on `target` is held (a bounded wait).
    pub async fn settled(&self, target: &Target) {
        let waiting = self.held.lock().unwrap().get(&key(target)).cloned();
        if let Some(mut waiting) = waiting {
            // Err once the sender is gone: the claim was released.
            let _ = tokio::time::timeout(self.bound, waiting.changed()).await;
        }
    }

    /// The values of the targets of `kind` claimed now.
    pub fn claimed(&self, kind: &str) -> Vec<String> {
        self.held.lock().unwrap().keys().filter(|(k, _)| k == kind).map(|(_, value)| value.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[tokio::test]
    async fn a_claim_is_waited_for_until_released_and_only_for_its_target() {
        let claims = Arc::new(Claims::default());
        let (a, b) = (Target::new("app", "a"), Target::new("app", "b"));
        let claim = claims.claim(&a).expect("free");
        assert!(claim.covers(&a) && !claim.covers(&b));
        assert!(claims.claim(&a).is_none(), "one claim per target");

        // Another target, and nothing claimed: no wait.
        let started = Instant::now();
        claims.settled(&b).await;
        assert!(started.elapsed() < Duration::from_millis(50));

        let waiter = {
            let (claims, a) = (claims.clone(), a.clone());
            tokio::spawn(async move {
                claims.settled(&a).await;
                // Released first, then told: the target is free again.
                claims.claim(&a).is_some()
            })
        };
        assert_eq!(claims.claimed("app"), ["a"]);
        assert!(claims.claimed("team").is_empty());
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!waiter.is_finished());
        drop(claim);
        assert!(waiter.await.unwrap());
        assert!(claims.claimed("app").is_empty());
    }

    #[tokio::test]
    async fn a_claim_never_released_is_waited_for_a_bounded_time() {
        let bound = Duration::from_millis(40);
        let claims = Claims::bounded(bound);
        let _claim = claims.claim(&Target::new("app", "a")).unwrap();
        let started = Instant::now();
        claims.settled(&Target::new("app", "a")).await;
        let waited = started.elapsed();
        assert!(waited >= bound && waited < bound + Duration::from_secs(2), "{waited:?}");
    }
}
