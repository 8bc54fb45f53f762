//! The memory budget all app instances share: what their linear memories
//! may add up to, checked as they grow. A request whose growth would pass
//! it fails alone (503: the machine is short of app memory now), instead of
//! the host growing without bound when a team moves its app to a huge plan
//! and sends many requests at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Debug)]
pub struct MemoryBudget {
    total: usize,
    used: AtomicUsize,
}

/// Why a growth was refused: the shared budget, not the app's own cap.
#[derive(Debug, thiserror::Error)]
#[error("the app memory budget of the host is spent")]
pub struct BudgetSpent;

impl MemoryBudget {
    pub fn new(total: usize) -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget { total, used: AtomicUsize::new(0) })
    }

    /// Takes `bytes` from the budget, or nothing when they are not there.
    pub fn take(&self, bytes: usize) -> bool {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            let Some(next) = used.checked_add(bytes).filter(|n| *n <= self.total) else { return false };
            match self.used.compare_exchange_weak(used, next, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(now) => used = now,
            }
        }
    }

    pub fn give_back(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }

    #[cfg(test)]
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

/// What one instance took from the budget; all of it goes back when the
/// instance (its store) is dropped.
pub struct Taken {
    budget: Arc<MemoryBudget>,
    bytes: usize,
}

impl Taken {
    pub fn new(budget: Arc<MemoryBudget>) -> Taken {
        Taken { budget, bytes: 0 }
    }

    /// A memory grows from `current` to `desired` bytes.
    pub fn grow(&mut self, current: usize, desired: usize) -> bool {
        let more = desired.saturating_sub(current);
        if self.budget.take(more) {
            self.bytes += more;
            true
        } else {
            false
        }
    }
}

impl Drop for Taken {
    fn drop(&mut self) {
        self.budget.give_back(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_share_the_budget_and_give_it_back() {
        let budget = MemoryBudget::new(100);
        let mut a = Taken::new(budget.clone());
        assert!(a.grow(0, 60));
        let mut b = Taken::new(budget.clone());
        assert!(!b.grow(0, 50));
        assert!(b.grow(0, 40));
        drop(a);
        assert_eq!(budget.used(), 40);
        assert!(b.grow(40, 90));
        drop(b);
        assert_eq!(budget.used(), 0);
    }
}
