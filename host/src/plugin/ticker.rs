//! The epoch clock of a set of engines: guests' CPU deadlines and yields are
//! counted in its ticks ([`EPOCH_TICK`]).
//!
//! It ticks only while guests may run. A guest's code runs only while a
//! [`Running`] from [`EpochTicker::running`] is held (an app request's
//! store, a plugin call). Once none has been held for [`IDLE_TICKS`] ticks the
//! thread waits on a condition variable, and the next `running` wakes it: an
//! idle torii has no timer waking it a hundred times a second. While guests run
//! now and then (even one at a time, with gaps between them shorter than
//! that), taking and dropping a `Running` is two atomic operations.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use wasmtime::Engine;

/// How often the epoch advances; deadlines are whole ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Ticks with no guest before the clock stops (one second).
const IDLE_TICKS: u32 = 100;

/// Advances the epoch of its engines on a thread of its own; stopped by
/// [`EpochTicker::stop`].
#[derive(Clone)]
pub struct EpochTicker {
    shared: Arc<Shared>,
}

struct Shared {
    /// `Running`s held.
    running: AtomicUsize,
    /// Whether the thread waits for a guest (guarded, with `wake`).
    stopped_ticking: Mutex<bool>,
    wake: Condvar,
    stop: AtomicBool,
}

/// Held while a guest may run: the clock ticks.
pub struct Running {
    shared: Arc<Shared>,
}

impl EpochTicker {
    pub fn spawn(engines: Vec<Engine>, name: &str) -> std::io::Result<EpochTicker> {
        let shared = Arc::new(Shared { running: AtomicUsize::new(0), stopped_ticking: Mutex::new(false), wake: Condvar::new(), stop: AtomicBool::new(false) });
        let ticking = shared.clone();
        std::thread::Builder::new().name(name.into()).spawn(move || ticking.tick(&engines))?;
        Ok(EpochTicker { shared })
    }

    /// Keeps the clock ticking until the result is dropped; take it before a
    /// guest's code may run.
    pub fn running(&self) -> Running {
        if self.shared.running.fetch_add(1, Ordering::SeqCst) == 0 {
            let stopped = self.shared.stopped_ticking.lock().unwrap_or_else(|p| p.into_inner());
            if *stopped {
                self.shared.wake.notify_one();
            }
        }
        Running { shared: self.shared.clone() }
    }

    /// Ends the thread (at its next tick).
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _stopped = self.shared.stopped_ticking.lock().unwrap_or_else(|p| p.into_inner());
        self.shared.wake.notify_one();
    }

    #[cfg(test)]
    fn is_ticking(&self) -> bool {
        !*self.shared.stopped_ticking.lock().unwrap()
    }
}

impl Shared {
    fn tick(&self, engines: &[Engine]) {
        let mut idle = 0;
        while !self.stop.load(Ordering::SeqCst) {
            std::thread::sleep(EPOCH_TICK);
            engines.iter().for_each(Engine::increment_epoch);
            if self.running.load(Ordering::SeqCst) > 0 {
                idle = 0;
                continue;
            }
            idle += 1;
            if idle < IDLE_TICKS {
                continue;
            }
            // Checked under the lock `running` takes after counting itself:
            // a guest that starts now either is seen here or sees the flag.
            let mut stopped = self.stopped_ticking.lock().unwrap_or_else(|p| p.into_inner());
            *stopped = true;
            while self.running.load(Ordering::SeqCst) == 0 && !self.stop.load(Ordering::SeqCst) {
                stopped = self.wake.wait(stopped).unwrap_or_else(|p| p.into_inner());
            }
            *stopped = false;
            idle = 0;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shared.running.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// An engine's epoch is read through a store's deadline: a store whose
    /// deadline is one tick away traps on entry once the epoch moved.
    fn epoch_moves(engine: &Engine) -> bool {
        // (module (func (export "f")))
        const MODULE: &[u8] = b"\0asm\x01\0\0\0\x01\x04\x01\x60\0\0\x03\x02\x01\0\x07\x05\x01\x01f\0\0\x0a\x04\x01\x02\0\x0b";
        let module = wasmtime::Module::new(engine, MODULE).unwrap();
        let mut store = wasmtime::Store::new(engine, ());
        store.set_epoch_deadline(1);
        let instance = wasmtime::Instance::new(&mut store, &module, &[]).unwrap();
        let f = instance.get_typed_func::<(), ()>(&mut store, "f").unwrap();
        std::thread::sleep(EPOCH_TICK * 3);
        f.call(&mut store, ()).is_err()
    }

    #[test]
    fn the_clock_stops_with_no_guest_and_starts_with_one() {
        let engine = Engine::new(wasmtime::Config::new().epoch_interruption(true)).unwrap();
        let ticker = EpochTicker::spawn(vec![engine.clone()], "test-epoch").unwrap();
        let running = ticker.running();
        assert!(epoch_moves(&engine));
        std::thread::sleep(EPOCH_TICK * (IDLE_TICKS + 20));
        assert!(ticker.is_ticking(), "stopped with a guest running");
        drop(running);
        wait_until("the clock goes on with no guest", || !ticker.is_ticking());
        assert!(!epoch_moves(&engine), "the epoch moved with the clock stopped");
        let _running = ticker.running();
        wait_until("a new guest did not wake the clock", || ticker.is_ticking());
        assert!(epoch_moves(&engine), "a new guest did not start the clock");
        ticker.stop();
    }
}
