//! App autoscale (`/1.9/apps/{app}/units/autoscale`): a process with a spec
//! keeps between `minUnits` and `maxUnits` units, as many as its load needs
//! at the spec's `averageCPU` target.
//!
//! The load is read two ways, by what the app's provisioner can measure:
//! - **CPU** (its `usage` answers: container units): units = ⌈Σ unit CPU ÷
//!   target⌉, the target being `averageCPU` of the plan's CPU (of one core
//!   when the plan sets none), as Kubernetes' HPA computes it;
//! - **concurrency** (`usage` unsupported: WASM units run in the host, one
//!   request each): units = ⌈requests in flight or waiting, averaged over
//!   the interval ÷ `averageCPU`⌉, the share of units kept busy (Knative's
//!   target utilisation). `minUnits` 0 lets an idle process sleep; its first
//!   request wakes it.
//!
//! More units come at once (then none for `[autoscale] cooldown_secs`);
//! fewer only once the load asked for fewer during `[autoscale]
//! scale_down_delay_secs`. Each change goes through [`super::converge`]
//! under the app's lock as an `autoscale` event naming its reason; an app
//! an operation holds is left for the next round.

use super::{Quiet, change, converge};
use crate::events::{Allowed, EventSpec, Target};
use crate::plugin::provisioner::{ProvisionError, Refusal, app_state};
use crate::rbac::{Context, ContextType};
use crate::server::Server;
use crate::store::{AutoscaleRecord, Desired, ProcessStatus};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// The event kind of an autoscale change.
pub const AUTOSCALE: &str = "autoscale";

/// The most a round waits for one app (its provisioner's usage, its change).
const APP_LIMIT: Duration = Duration::from_secs(30);

/// `averageCPU` as a percentage: `"70%"`, or millicores `"700m"` (÷ 10).
pub fn parse_average_cpu(raw: &str) -> Result<u32, String> {
    let bad = || format!("invalid average CPU value: {raw:?} (use a percentage such as \"70%\" or millicores such as \"700m\")");
    let trimmed = raw.trim();
    let percent = if let Some(n) = trimmed.strip_suffix('%') {
        n.parse::<u32>().map_err(|_| bad())?
    } else if let Some(n) = trimmed.strip_suffix('m') {
        n.parse::<u32>().map_err(|_| bad())? / 10
    } else {
        return Err(bad());
    };
    if percent == 0 {
        return Err(bad());
    }
    Ok(percent)
}

/// What a process's load asks for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Load {
    /// Its running units' CPU (thousandths of a core) against a per-unit target.
    Cpu { units: u32, total_milli: u64, target_milli: u64 },
    /// Requests in flight or waiting (averaged) against the busy share kept.
    Concurrency { demand: f64, target_share: f64 },
}

impl Load {
    /// The units the load needs (before the spec's bounds); `None` when it
    /// says nothing (no running unit to measure).
    pub fn units(self) -> Option<i64> {
        match self {
            Load::Cpu { units: 0, .. } => None,
            Load::Cpu { total_milli, target_milli, .. } => Some(total_milli.div_ceil(target_milli.max(1)) as i64),
            Load::Concurrency { demand, target_share } => Some((demand / target_share.max(0.01) - 1e-9).ceil().max(0.0) as i64),
        }
    }

    pub fn describe(self) -> String {
        match self {
            Load::Cpu { units, total_milli, target_milli } => {
                format!("cpu: {units} unit(s) use {total_milli}m in all, target {target_milli}m per unit")
            }
            Load::Concurrency { demand, target_share } => {
                format!("concurrency: {demand:.2} request(s) in flight on average, target {:.0}% of units busy", target_share * 100.0)
            }
        }
    }
}

/// Where a process stands between rounds.
#[derive(Debug, Default, Clone, Copy)]
pub struct Track {
    /// Since when the load has asked for fewer units than it has.
    below_since: Option<Instant>,
    /// The most units asked for while below.
    below_peak: i64,
    last_change: Option<Instant>,
}

/// The timing rules.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    pub scale_down_delay: Duration,
    pub cooldown: Duration,
}

/// The units a process goes to now, if any change: `current` units, the
/// load asking for `wanted` (within the spec's bounds already).
pub fn step(track: &mut Track, current: i64, wanted: i64, now: Instant, pace: Pace) -> Option<i64> {
    let cooled = track.last_change.is_none_or(|t| now.duration_since(t) >= pace.cooldown);
    if wanted >= current {
        track.below_since = None;
        if wanted > current && cooled {
            track.last_change = Some(now);
            return Some(wanted);
        }
        return None;
    }
    let since = match track.below_since {
        Some(since) => {
            track.below_peak = track.below_peak.max(wanted);
            since
        }
        None => {
            track.below_since = Some(now);
            track.below_peak = wanted;
            now
        }
    };
    if now.duration_since(since) >= pace.scale_down_delay && cooled && track.below_peak < current {
        let to = track.below_peak;
        track.below_since = None;
        track.last_change = Some(now);
        return Some(to);
    }
    None
}

/// The autoscaler's memory: the specs as last read, concurrency samples and
/// each process's track.
#[derive(Default)]
pub struct Autoscaler {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    specs: Vec<AutoscaleRecord>,
    /// (app, process) → (sum of samples, count) since the last decision.
    samples: HashMap<(String, String), (f64, u32)>,
    tracks: HashMap<(String, String), Track>,
}

/// Starts sampling and deciding; both end when the server is gone.
pub fn start(server: Weak<Server>, every: Duration, sample: Duration) {
    crate::server::rounds(server.clone(), sample, |server| Box::pin(async move { server.autoscaler.sample(&server) }));
    crate::server::rounds(server, every, |server| Box::pin(async move { round(&server).await }));
}

impl Autoscaler {
    /// Samples the requests in flight of every autoscaled process.
    fn sample(&self, server: &Server) {
        let mut state = self.state.lock().unwrap();
        let State { specs, samples, .. } = &mut *state;
        for spec in specs.iter() {
            let demand = server.units.demand(&spec.app, &spec.process) as f64;
            let entry = samples.entry((spec.app.clone(), spec.process.clone())).or_default();
            entry.0 += demand;
            entry.1 += 1;
        }
    }

    /// The average demand of a process since the last call (and forgets it).
    fn take_demand(&self, app: &str, process: &str) -> f64 {
        let mut state = self.state.lock().unwrap();
        match state.samples.remove(&(app.to_string(), process.to_string())) {
            Some((sum, n)) if n > 0 => sum / f64::from(n),
            _ => 0.0,
        }
    }

    fn track(&self, app: &str, process: &str) -> Track {
        self.state.lock().unwrap().tracks.get(&(app.to_string(), process.to_string())).copied().unwrap_or_default()
    }

    fn set_track(&self, app: &str, process: &str, track: Track) {
        self.state.lock().unwrap().tracks.insert((app.to_string(), process.to_string()), track);
    }

    fn set_specs(&self, specs: Vec<AutoscaleRecord>) {
        let mut state = self.state.lock().unwrap();
        let keys: std::collections::HashSet<(String, String)> = specs.iter().map(|s| (s.app.clone(), s.process.clone())).collect();
        state.tracks.retain(|k, _| keys.contains(k));
        state.samples.retain(|k, _| keys.contains(k));
        state.specs = specs;
    }
}

/// How many apps a round decides for at once.
const APPS_AT_ONCE: usize = 4;

/// One decision per autoscaled process; apps side by side (a few at a
/// time), each bounded in time, so a slow one does not hold the others.
async fn round(server: &Arc<Server>) {
    use futures_util::StreamExt;
    let specs = match server.store.all_autoscales().await {
        Ok(specs) => specs,
        Err(e) => {
            tracing::warn!(error = %e, "autoscale: cannot read the specs");
            return;
        }
    };
    server.autoscaler.set_specs(specs.clone());
    let mut by_app: Vec<(String, Vec<AutoscaleRecord>)> = Vec::new();
    for spec in specs {
        match by_app.last_mut() {
            Some((app, list)) if *app == spec.app => list.push(spec),
            _ => by_app.push((spec.app.clone(), vec![spec])),
        }
    }
    futures_util::stream::iter(by_app)
        .for_each_concurrent(APPS_AT_ONCE, |(app, specs)| async move {
            if tokio::time::timeout(APP_LIMIT, decide(server, &app, &specs)).await.is_err() {
                tracing::warn!(app, "autoscale: the app took too long; next round");
            }
        })
        .await;
}

/// The version a spec is about: its own, else the app's newest routable one.
fn target_version(d: &Desired, spec: &AutoscaleRecord) -> Option<i64> {
    if spec.version > 0 {
        return d.version(spec.version).map(|v| v.version);
    }
    d.routable().map(|v| v.version).max()
}

/// Decides for every spec of `app`, its provisioner asked for usage once.
async fn decide(server: &Arc<Server>, app: &str, specs: &[AutoscaleRecord]) {
    let demands: Vec<f64> = specs.iter().map(|s| server.autoscaler.take_demand(app, &s.process)).collect();
    let Ok(Some(view)) = server.store.app_view(app).await else { return };
    if view.lock_event.is_some() {
        return;
    }
    let Ok(Some(desired)) = server.store.desired(app).await else { return };
    let Ok(provisioner) = super::provisioner_of(server, &view.app).await else { return };
    let state = app_state(&view);
    let usage = match provisioner.usage(state.clone()).await {
        Ok(usage) => Some(usage),
        Err(ProvisionError::Refused(Refusal::Unsupported(_))) => None,
        Err(e) => {
            tracing::warn!(app, error = %e, "autoscale: the provisioner's usage failed");
            return;
        }
    };
    for (spec, demand) in specs.iter().zip(demands) {
        let Some(version) = target_version(&desired, spec) else { continue };
        let Some(process) = desired.version(version).and_then(|v| v.processes.iter().find(|p| p.name == spec.process)).cloned() else { continue };
        let current = match process.status {
            ProcessStatus::Started => process.units,
            ProcessStatus::Asleep => 0,
            // A stopped process is the user's: left alone.
            ProcessStatus::Stopped => continue,
        };
        let Ok(percent) = parse_average_cpu(&spec.average_cpu) else { continue };
        let load = match &usage {
            Some(usage) => {
                let mine: Vec<_> = usage.iter().filter(|u| i64::from(u.version) == version && u.process == spec.process).collect();
                let base = if state.plan_cpu_milli > 0 { u64::from(state.plan_cpu_milli) } else { 1000 };
                Load::Cpu {
                    units: mine.len() as u32,
                    total_milli: mine.iter().map(|u| u64::from(u.cpu_milli)).sum(),
                    target_milli: base * u64::from(percent) / 100,
                }
            }
            None => Load::Concurrency { demand, target_share: f64::from(percent) / 100.0 },
        };
        let Some(asked) = load.units() else { continue };
        let wanted = asked.clamp(spec.min_units, spec.max_units);
        // A sleeping process wakes on its first request, not here.
        if process.status == ProcessStatus::Asleep && wanted > 0 {
            continue;
        }
        let pace = Pace {
            scale_down_delay: Duration::from_secs(server.config.autoscale.scale_down_delay_secs),
            cooldown: Duration::from_secs(server.config.autoscale.cooldown_secs),
        };
        let mut track = server.autoscaler.track(app, &spec.process);
        let to = step(&mut track, current, wanted, Instant::now(), pace);
        server.autoscaler.set_track(app, &spec.process, track);
        if let Some(to) = to {
            apply(server, spec, version, current, to, &load.describe()).await;
        }
    }
}

/// Moves the process from `from` to `to` units (0: asleep) as an `autoscale` event.
async fn apply(server: &Arc<Server>, spec: &AutoscaleRecord, version: i64, from: i64, to: i64, reason: &str) {
    let app = spec.app.as_str();
    let data = serde_json::json!({"app": app, "process": spec.process, "version": version, "from": from, "to": to, "reason": reason});
    let allowed = Allowed::new("app.read.events", vec![Context::new(ContextType::App, app)]);
    let event = EventSpec { lock: true, ..EventSpec::by_torii(Target::new("app", app), AUTOSCALE, allowed, data) };
    // Held by an operation: next round.
    let Ok(event) = server.events.start(event).await else { return };
    tracing::info!(app, process = spec.process, from, to, reason, "autoscale");
    let process = spec.process.clone();
    let result = converge(server, app, &Quiet, |d| {
        if to == 0 {
            change::set_status(d, &process, &version.to_string(), ProcessStatus::Asleep, Some(ProcessStatus::Started));
            return Ok(());
        }
        let units = d.version(version).and_then(|v| v.processes.iter().find(|p| p.name == process)).map_or(0, |p| p.units);
        change::scale(d, version, &process, to - units).map(|_| ())
    })
    .await;
    if to == 0 {
        server.units.reset_statuses(app);
    }
    let _ = event.done(result.map(|_| ()).map_err(|e| e.message)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn average_cpu_is_a_percentage_or_millicores() {
        assert_eq!(parse_average_cpu("70%"), Ok(70));
        assert_eq!(parse_average_cpu("700m"), Ok(70));
        assert_eq!(parse_average_cpu("1500m"), Ok(150));
        for bad in ["", "70", "0%", "5m", "x%", "-1%"] {
            assert!(parse_average_cpu(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn load_asks_for_units() {
        // Two units at 900m each, a target of 500m per unit: four.
        assert_eq!(Load::Cpu { units: 2, total_milli: 1800, target_milli: 500 }.units(), Some(4));
        assert_eq!(Load::Cpu { units: 0, total_milli: 0, target_milli: 500 }.units(), None);
        assert_eq!(Load::Cpu { units: 3, total_milli: 30, target_milli: 500 }.units(), Some(1));
        // 3.5 requests busy at a 70% target: five units; none at rest.
        assert_eq!(Load::Concurrency { demand: 3.5, target_share: 0.7 }.units(), Some(5));
        assert_eq!(Load::Concurrency { demand: 2.8, target_share: 0.7 }.units(), Some(4));
        assert_eq!(Load::Concurrency { demand: 0.0, target_share: 0.7 }.units(), Some(0));
    }

    #[test]
    fn up_at_once_down_after_the_delay() {
        let pace = Pace { scale_down_delay: Duration::from_secs(10), cooldown: Duration::from_secs(3) };
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut track = Track::default();
        assert_eq!(step(&mut track, 1, 3, at(0), pace), Some(3));
        // Within the cool-down: no second change.
        assert_eq!(step(&mut track, 3, 5, at(1), pace), None);
        assert_eq!(step(&mut track, 3, 5, at(3), pace), Some(5));
        // Fewer asked: only after the delay, to the most asked meanwhile.
        assert_eq!(step(&mut track, 5, 1, at(4), pace), None);
        assert_eq!(step(&mut track, 5, 2, at(8), pace), None);
        assert_eq!(step(&mut track, 5, 1, at(14), pace), Some(2));
        // A load back up in between restarts the delay.
        assert_eq!(step(&mut track, 2, 1, at(20), pace), None);
        assert_eq!(step(&mut track, 2, 2, at(25), pace), None);
        assert_eq!(step(&mut track, 2, 1, at(31), pace), None);
        assert_eq!(step(&mut track, 2, 1, at(41), pace), Some(1));
    }
}
