//! Units of WASM apps: concurrency slots of a version, and what the API can
//! do to one unit (kill it, set its status), kept in this process.
//!
//! A version with N units runs at most N requests at once; more wait up to
//! `[apps] queue_timeout_ms`, then get 503. Killing a unit cuts the request
//! it is serving (503) and counts a restart; the slot serves the next one.
//! A request finds its slots, its unit's name and its unit's control without
//! allocating: the maps are keyed by app first, and each version's slots
//! hold their units' names and controls.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};

/// Every unit this process knows: slots by app and version, controls by app
/// and unit name.
#[derive(Default)]
pub struct Units {
    by_version: Mutex<HashMap<String, HashMap<i64, Arc<UnitSlots>>>>,
    controls: Mutex<HashMap<String, HashMap<String, Arc<Control>>>>,
    /// Bumped on every kill and status change, so unit lists made before are stale.
    generation: AtomicU64,
    /// Units serving a request now, over every app.
    in_use: Arc<AtomicU64>,
    /// Requests served or waiting for a unit now, by app and process (over
    /// the generations of slots a scale makes): what autoscale reads.
    demand: Mutex<HashMap<String, HashMap<String, Arc<AtomicU64>>>>,
}

/// The units of one version and process: a permit per unit, which unit
/// numbers are free, and each unit's name and control (by number).
pub struct UnitSlots {
    app: Arc<str>,
    process: String,
    permits: Arc<Semaphore>,
    free: Mutex<Vec<i64>>,
    units: Vec<(Arc<str>, Arc<Control>)>,
    in_use: Arc<AtomicU64>,
    demand: Arc<AtomicU64>,
}

/// A unit serving one request; its number goes back when dropped.
pub struct Unit {
    slots: Arc<UnitSlots>,
    pub number: i64,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

/// A request waiting for a unit, counted in its slots' demand until it
/// gets one (the unit takes the count over) or gives up.
struct Waiting<'a>(&'a AtomicU64);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Unit {
    pub fn app(&self) -> &Arc<str> {
        &self.slots.app
    }

    /// `<app>-<process>-v<version>-<number>`, as unit lists and the app log name it.
    pub fn name(&self) -> &Arc<str> {
        &self.slots.units[self.number as usize].0
    }

    pub fn control(&self) -> &Control {
        &self.slots.units[self.number as usize].1
    }

    /// The unit's control, for holding past the unit itself.
    pub fn control_arc(&self) -> Arc<Control> {
        self.slots.units[self.number as usize].1.clone()
    }
}

impl Drop for Unit {
    fn drop(&mut self) {
        self.slots.free.lock().unwrap().push(self.number);
        self.slots.in_use.fetch_sub(1, Ordering::Relaxed);
        self.slots.demand.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the API changed about one unit.
#[derive(Default)]
pub struct Control {
    kill: Notify,
    restarts: AtomicI64,
    /// A status set through `POST /apps/{app}/units/{unit}`, shown while the app runs.
    status: Mutex<Option<String>>,
}

impl Control {
    /// Resolves when the unit is killed after this call.
    pub fn killed(&self) -> tokio::sync::futures::Notified<'_> {
        self.kill.notified()
    }

    pub fn restarts(&self) -> i64 {
        self.restarts.load(Ordering::Relaxed)
    }

    pub fn status(&self) -> Option<String> {
        self.status.lock().unwrap().clone()
    }
}

impl Units {
    /// Units serving a request now, over every app (one instance each).
    pub fn in_use(&self) -> u64 {
        self.in_use.load(Ordering::Relaxed)
    }

    /// The `units` units of `app`'s `version` running `process` (replaced
    /// when the count changed; requests holding the old ones finish on them).
    pub fn slots(&self, app: &str, process: &str, version: i64, units: i64) -> Arc<UnitSlots> {
        let count = units.max(0);
        let mut map = self.by_version.lock().unwrap();
        if let Some(slots) = map.get(app).and_then(|versions| versions.get(&version))
            && slots.units.len() as i64 == count
            && slots.process == process
        {
            return slots.clone();
        }
        let slots = Arc::new(UnitSlots {
            app: Arc::from(app),
            process: process.to_string(),
            permits: Arc::new(Semaphore::new(usize::try_from(count).unwrap_or(0))),
            free: Mutex::new((0..count).rev().collect()),
            units: (0..count)
                .map(|n| {
                    let name = format!("{app}-{process}-v{version}-{n}");
                    let control = self.control(app, &name);
                    (Arc::from(name), control)
                })
                .collect(),
            in_use: self.in_use.clone(),
            demand: self.demand_of(app, process),
        });
        map.entry(app.to_string()).or_default().insert(version, slots.clone());
        slots
    }

    fn demand_of(&self, app: &str, process: &str) -> Arc<AtomicU64> {
        let mut map = self.demand.lock().unwrap();
        map.entry(app.to_string()).or_default().entry(process.to_string()).or_default().clone()
    }

    /// Forgets a removed app's slots, controls and demand (requests still
    /// holding its units finish on them).
    pub fn forget_app(&self, app: &str) {
        self.by_version.lock().unwrap().remove(app);
        self.controls.lock().unwrap().remove(app);
        self.demand.lock().unwrap().remove(app);
    }

    /// Requests of `app`'s `process` served or waiting for a unit now.
    pub fn demand(&self, app: &str, process: &str) -> u64 {
        let map = self.demand.lock().unwrap();
        map.get(app).and_then(|p| p.get(process)).map_or(0, |d| d.load(Ordering::Relaxed))
    }

    /// The control of `app`'s unit called `name`.
    pub fn control(&self, app: &str, name: &str) -> Arc<Control> {
        let mut map = self.controls.lock().unwrap();
        if let Some(c) = map.get(app).and_then(|units| units.get(name)) {
            return c.clone();
        }
        let c = Arc::new(Control::default());
        map.entry(app.to_string()).or_default().insert(name.to_string(), c.clone());
        c
    }

    /// The control of a unit if the API or a request ever touched it.
    pub fn known(&self, app: &str, name: &str) -> Option<Arc<Control>> {
        self.controls.lock().unwrap().get(app).and_then(|units| units.get(name)).cloned()
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Cuts the request the unit serves, if any, and counts a restart.
    pub fn kill(&self, app: &str, name: &str) {
        let c = self.control(app, name);
        c.restarts.fetch_add(1, Ordering::Relaxed);
        c.kill.notify_waiters();
        self.changed();
    }

    pub fn set_status(&self, app: &str, name: &str, status: &str) {
        *self.control(app, name).status.lock().unwrap() = Some(status.to_string());
        self.changed();
    }

    /// Every unit of `app` this process has seen: (name, restarts, status set).
    pub fn seen(&self, app: &str) -> Vec<(String, i64, Option<String>)> {
        let map = self.controls.lock().unwrap();
        let mut out: Vec<_> = map.get(app).into_iter().flatten().map(|(name, c)| (name.clone(), c.restarts(), c.status())).collect();
        out.sort();
        out
    }

    /// Forgets statuses set on `app`'s units (it was started, stopped or restarted).
    pub fn reset_statuses(&self, app: &str) {
        for c in self.controls.lock().unwrap().get(app).into_iter().flat_map(|units| units.values()) {
            *c.status.lock().unwrap() = None;
        }
        self.changed();
    }
}

impl UnitSlots {
    /// Waits up to `queue` for a free unit.
    pub async fn take(self: &Arc<Self>, queue: Duration) -> Option<Unit> {
        // Counted from the moment it waits (a request that waits is demand
        // too) until its unit is dropped, it gives up or its caller goes.
        self.demand.fetch_add(1, Ordering::Relaxed);
        let waiting = Waiting(&self.demand);
        let permit = tokio::time::timeout(queue, self.permits.clone().acquire_owned()).await.ok()?.ok()?;
        let number = self.free.lock().unwrap().pop()?;
        self.in_use.fetch_add(1, Ordering::Relaxed);
        // The unit holds the count now; it gives it back when dropped.
        std::mem::forget(waiting);
        Some(Unit { slots: self.clone(), number, _permit: permit })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_killed_unit_cuts_its_request_and_counts_a_restart() {
        let units = Units::default();
        let c = units.control("web", "web-web-v1-0");
        let killed = c.killed();
        units.kill("web", "web-web-v1-0");
        tokio::time::timeout(Duration::from_secs(1), killed).await.expect("the waiting request sees the kill");
        assert_eq!(c.restarts(), 1);
        units.set_status("web", "web-web-v1-0", "error");
        let other = units.control("web-api", "web-api-web-v1-0");
        units.set_status("web-api", "web-api-web-v1-0", "error");
        assert_eq!(c.status().as_deref(), Some("error"));
        units.reset_statuses("web");
        assert_eq!(other.status().as_deref(), Some("error"), "another app's units keep theirs");
        assert_eq!(c.status(), None);
    }

    #[tokio::test]
    async fn slots_queue_then_give_up() {
        let units = Units::default();
        let slots = units.slots("a", "web", 1, 1);
        let first = slots.take(Duration::from_millis(10)).await.unwrap();
        assert_eq!(&**first.name(), "a-web-v1-0");
        assert!(slots.take(Duration::from_millis(10)).await.is_none());
        // Demand: the request served, not the one that gave up.
        assert_eq!(units.demand("a", "web"), 1);
        let waiting = tokio::spawn({
            let slots = slots.clone();
            async move { slots.take(Duration::from_secs(5)).await.map(|u| u.number) }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(units.demand("a", "web"), 2, "a waiting request counts");
        drop(first);
        assert_eq!(waiting.await.unwrap(), Some(0));
        assert_eq!(units.demand("a", "web"), 0);
        assert_eq!(slots.take(Duration::from_millis(10)).await.unwrap().number, 0);
        // A kill through the API reaches the unit's request through its slots.
        let unit = slots.take(Duration::from_millis(10)).await.unwrap();
        let killed = unit.control().killed();
        units.kill("a", "a-web-v1-0");
        tokio::time::timeout(Duration::from_secs(1), killed).await.expect("the request sees the kill");
        assert_eq!(unit.control().restarts(), 1);
        // A new unit count makes new slots; the unit keeps its control.
        let more = units.slots("a", "web", 1, 2);
        assert!(!Arc::ptr_eq(&slots, &more));
        assert_eq!(more.take(Duration::from_millis(10)).await.unwrap().control().restarts(), 1);
    }
}
