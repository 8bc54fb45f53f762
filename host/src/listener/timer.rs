//! The clock of hyper's header read timeout: coarse, and free when it does
//! not fire.
//!
//! hyper arms the timeout at the start of every request head it reads and
//! drops it as soon as the head is in, so on a keep-alive connection it is
//! set and cancelled once per request and almost never fires. On tokio's
//! timer wheel each of those arms is a registration, and one that falls
//! before the runtime's planned wake-up also unparks the runtime: an
//! eventfd write and an extra turn of the event loop per request.
//!
//! Here arming is a slot in a slab under an uncontended lock, and one task
//! per listener looks at the slots every `tick` while any are taken, waking
//! those past their deadline. A timeout fires up to one tick late; the tick
//! is chosen by the listener as a fraction of the timeout.

use hyper::rt::{Sleep, Timer};
use slab::Slab;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// A hyper [`Timer`] whose sleeps are checked every `tick`.
#[derive(Clone)]
pub struct CoarseTimer {
    wheel: Arc<Wheel>,
}

struct Wheel {
    tick: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    armed: Slab<Armed>,
    /// Whether the task that checks the slots is running.
    ticking: bool,
}

struct Armed {
    deadline: Instant,
    /// Taken when the deadline has passed and the sleeper was woken.
    waker: Option<Waker>,
}

impl Wheel {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Checks the slots every tick, waking the sleepers past their deadline;
    /// ends when none is left (the next arm starts it again).
    async fn check(self: Arc<Wheel>) {
        let mut due = Vec::new();
        loop {
            tokio::time::sleep(self.tick).await;
            let now = Instant::now();
            {
                let mut state = self.state();
                if state.armed.is_empty() {
                    state.ticking = false;
                    return;
                }
                due.extend(state.armed.iter_mut().filter(|(_, a)| a.deadline <= now).filter_map(|(_, a)| a.waker.take()));
            }
            due.drain(..).for_each(Waker::wake);
        }
    }
}

impl CoarseTimer {
    /// Sleeps made by this timer end at most `tick` after their deadline.
    /// They must be polled within a tokio runtime.
    pub fn new(tick: Duration) -> CoarseTimer {
        CoarseTimer { wheel: Arc::new(Wheel { tick, state: Mutex::default() }) }
    }
}

impl Timer for CoarseTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        Box::pin(CoarseSleep { wheel: self.wheel.clone(), deadline, slot: None })
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn Sleep>>, new_deadline: Instant) {
        match sleep.as_mut().downcast_mut_pin::<CoarseSleep>() {
            Some(mut ours) => ours.as_mut().get_mut().reset(new_deadline),
            None => *sleep = self.sleep_until(new_deadline),
        }
    }
}

/// A sleep that takes a slot of its wheel while it is waited on.
struct CoarseSleep {
    wheel: Arc<Wheel>,
    deadline: Instant,
    slot: Option<usize>,
}

impl CoarseSleep {
    fn reset(&mut self, deadline: Instant) {
        self.deadline = deadline;
        if let Some(slot) = self.slot {
            let mut state = self.wheel.state();
            state.armed[slot].deadline = deadline;
        }
    }

    fn disarm(&mut self) {
        if let Some(slot) = self.slot.take() {
            self.wheel.state().armed.remove(slot);
        }
    }
}

impl Sleep for CoarseSleep {}

impl Future for CoarseSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if Instant::now() >= this.deadline {
            this.disarm();
            return Poll::Ready(());
        }
        let mut state = this.wheel.state();
        match this.slot {
            Some(slot) => {
                let armed = &mut state.armed[slot];
                if !armed.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    armed.waker = Some(cx.waker().clone());
                }
            }
            None => {
                this.slot = Some(state.armed.insert(Armed { deadline: this.deadline, waker: Some(cx.waker().clone()) }));
                if !state.ticking {
                    state.ticking = true;
                    drop(state);
                    tokio::spawn(this.wheel.clone().check());
                }
            }
        }
        Poll::Pending
    }
}

impl Drop for CoarseSleep {
    fn drop(&mut self) {
        self.disarm();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    #[tokio::test(flavor = "current_thread")]
    async fn a_sleep_ends_after_its_deadline_within_a_tick() {
        let timer = CoarseTimer::new(Duration::from_millis(20));
        let started = Instant::now();
        timer.sleep(Duration::from_millis(50)).await;
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(50) && took < Duration::from_millis(200), "{took:?}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn dropped_sleeps_free_their_slots_and_the_checker_stops() {
        let timer = CoarseTimer::new(Duration::from_millis(10));
        for _ in 0..100 {
            let mut sleep = timer.sleep(Duration::from_secs(60));
            assert!((&mut sleep).now_or_never().is_none());
        }
        assert!(timer.wheel.state().armed.is_empty());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!timer.wheel.state().ticking);
        // Armed again, it fires.
        timer.sleep(Duration::from_millis(15)).await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn reset_moves_an_armed_deadline() {
        let timer = CoarseTimer::new(Duration::from_millis(10));
        let mut sleep = timer.sleep(Duration::from_secs(60));
        assert!((&mut sleep).now_or_never().is_none());
        let started = Instant::now();
        timer.reset(&mut sleep, Instant::now() + Duration::from_millis(30));
        sleep.await;
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(timer.wheel.state().armed.is_empty());
    }
}
