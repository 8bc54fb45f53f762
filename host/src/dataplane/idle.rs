//! Idle keep-alive connections to backends, for both proxy paths: each
//! data-plane thread keeps its own, by backend address (no lock, no shared
//! pool). A request takes the connection given back last that is ready,
//! else opens one; connections found gone are dropped as they are met. Every
//! [`SWEEP_EVERY`] takes, the gone ones and those idle for [`IDLE`] are
//! dropped for every address, and addresses left with none.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long an unused connection to a backend is kept.
pub const IDLE: Duration = Duration::from_secs(30);
/// Most idle connections a thread keeps to one backend address.
pub const MAX_PER_ADDRESS: usize = 512;
/// Takes between two sweeps of a thread's pool.
pub const SWEEP_EVERY: u32 = 4096;

/// What a kept connection can do now.
pub enum Kept {
    /// Take a request.
    Ready,
    /// Not yet (its last answer is still being read): it stays.
    Busy,
    /// Nothing more (closed by the backend): it goes.
    Gone,
}

pub struct IdlePool<C> {
    by_address: HashMap<String, Vec<(C, Instant)>>,
    takes: u32,
}

impl<C> Default for IdlePool<C> {
    fn default() -> IdlePool<C> {
        IdlePool { by_address: HashMap::new(), takes: 0 }
    }
}

impl<C> IdlePool<C> {
    /// A connection to `address` that `state` finds ready, if any.
    pub fn take(&mut self, address: &str, state: impl Fn(&C) -> Kept) -> Option<C> {
        self.takes = self.takes.wrapping_add(1);
        if self.takes.is_multiple_of(SWEEP_EVERY) {
            self.sweep(&state);
        }
        let idle = self.by_address.get_mut(address)?;
        let mut i = idle.len();
        while i > 0 {
            i -= 1;
            let (connection, since) = &idle[i];
            match if since.elapsed() < IDLE { state(connection) } else { Kept::Gone } {
                Kept::Ready => return Some(idle.swap_remove(i).0),
                Kept::Busy => {}
                // The one swapped in was looked at already.
                Kept::Gone => drop(idle.swap_remove(i)),
            }
        }
        None
    }

    /// Keeps `connection` for the next request to `address` (past
    /// [`MAX_PER_ADDRESS`] it is dropped).
    pub fn put(&mut self, address: &str, connection: C) {
        let idle = match self.by_address.get_mut(address) {
            Some(idle) => idle,
            None => self.by_address.entry(address.to_string()).or_default(),
        };
        if idle.len() < MAX_PER_ADDRESS {
            idle.push((connection, Instant::now()));
        }
    }

    fn sweep(&mut self, state: &impl Fn(&C) -> Kept) {
        let now = Instant::now();
        for idle in self.by_address.values_mut() {
            idle.retain(|(connection, since)| now.duration_since(*since) < IDLE && !matches!(state(connection), Kept::Gone));
        }
        self.by_address.retain(|_, idle| !idle.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_ready_one_is_taken_busy_ones_stay_and_gone_ones_go() {
        // A connection is its state here.
        let state = |c: &(u8, &'static str)| match c.1 {
            "ready" => Kept::Ready,
            "busy" => Kept::Busy,
            _ => Kept::Gone,
        };
        let mut pool = IdlePool::default();
        for c in [(1, "ready"), (2, "busy"), (3, "ready"), (4, "gone"), (5, "busy")] {
            pool.put("a", c);
        }
        assert_eq!(pool.take("a", state), Some((3, "ready")));
        assert_eq!(pool.take("a", state), Some((1, "ready")));
        assert_eq!(pool.take("a", state), None);
        assert_eq!(pool.take("b", state), None);
        let mut left: Vec<u8> = pool.by_address["a"].iter().map(|(c, _)| c.0).collect();
        left.sort();
        assert_eq!(left, [2, 5]);
        for _ in 0..MAX_PER_ADDRESS {
            pool.put("a", (9, "busy"));
        }
        assert_eq!(pool.by_address["a"].len(), MAX_PER_ADDRESS);
    }
}
