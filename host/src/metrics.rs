//! torii's own figures for `GET /1.2/metrics` (Prometheus text exposition
//! 0.0.4): API requests by route and status with latency histograms, app
//! traffic through the data plane by app and status with latency, units in
//! use, plugin calls and errors, webhook deliveries, healing repairs and
//! event locks held.
//!
//! Counting is lock-free on the data plane's path (an app's counters are
//! found once per request under a read lock, then atomics); labels are
//! bounded: API routes are the route templates, apps are the apps that
//! exist (an app's series go with it), statuses are HTTP codes.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// Histogram bucket bounds, in seconds.
const BUCKETS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

#[derive(Default)]
struct Histogram {
    /// Counts per bucket (not cumulative; summed when written).
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn observe(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| seconds <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    fn write(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (bound, count) in BUCKETS.iter().zip(&self.buckets) {
            cumulative += count.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9);
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

/// The statuses an app's counters keep without a lock.
const COMMON: [u16; 14] = [200, 201, 204, 301, 302, 304, 400, 401, 403, 404, 500, 502, 503, 504];

/// One app's traffic through the data plane.
#[derive(Default)]
pub struct AppTraffic {
    common: [AtomicU64; COMMON.len()],
    other: Mutex<HashMap<u16, u64>>,
    latency: Histogram,
}

impl AppTraffic {
    /// A request answered with `status` after `took` (to its headers).
    pub fn answered(&self, status: u16, took: Duration) {
        match COMMON.iter().position(|c| *c == status) {
            Some(i) => {
                self.common[i].fetch_add(1, Ordering::Relaxed);
            }
            None => *self.other.lock().unwrap().entry(status).or_default() += 1,
        }
        self.latency.observe(took);
    }

    fn by_status(&self) -> Vec<(u16, u64)> {
        let mut out: Vec<(u16, u64)> = COMMON.iter().zip(&self.common).map(|(s, c)| (*s, c.load(Ordering::Relaxed))).filter(|(_, c)| *c > 0).collect();
        out.extend(self.other.lock().unwrap().iter().map(|(s, c)| (*s, *c)));
        out.sort();
        out
    }
}

#[derive(Default)]
struct Route {
    by_status: HashMap<u16, u64>,
    latency: Arc<Histogram>,
}

/// The figures torii counts itself; the rest is read when scraped.
#[derive(Default)]
pub struct Metrics {
    /// By (method, route template).
    api: Mutex<HashMap<(String, String), Route>>,
    apps: RwLock<HashMap<String, Arc<AppTraffic>>>,
    webhook_ok: AtomicU64,
    webhook_failed: AtomicU64,
    healing_repairs: AtomicU64,
}

/// What the scrape reads from elsewhere in the process.
pub struct Readings {
    pub units_in_use: u64,
    /// App versions serving on baseline code while their optimised code compiles.
    pub versions_optimizing: usize,
    /// (plugin name, kind, calls, errors)
    pub plugins: Vec<(String, &'static str, u64, u64)>,
    pub event_locks: i64,
    pub uptime: Duration,
}

impl Metrics {
    /// An API request to `route` (its template, e.g. `/1.0/apps/{app}`).
    pub fn api_request(&self, method: &str, route: &str, status: u16, took: Duration) {
        let latency = {
            let mut api = self.api.lock().unwrap();
            let entry = api.entry((method.to_string(), route.to_string())).or_default();
            *entry.by_status.entry(status).or_default() += 1;
            entry.latency.clone()
        };
        latency.observe(took);
    }

    /// The counters of `app`'s traffic.
    pub fn app(&self, app: &str) -> Arc<AppTraffic> {
        if let Some(found) = self.apps.read().unwrap().get(app) {
            return found.clone();
        }
        self.apps.write().unwrap().entry(app.to_string()).or_default().clone()
    }

    /// `app` was removed: its series go with it.
    pub fn forget_app(&self, app: &str) {
        self.apps.write().unwrap().remove(app);
    }

    pub fn webhook_delivery(&self, ok: bool) {
        if ok { &self.webhook_ok } else { &self.webhook_failed }.fetch_add(1, Ordering::Relaxed);
    }

    pub fn healing_repairs(&self, repaired: usize) {
        self.healing_repairs.fetch_add(repaired as u64, Ordering::Relaxed);
    }

    /// The exposition, text format 0.0.4. The per-app series (which name
    /// every team's apps and their traffic) only `with_apps`.
    pub fn render(&self, readings: &Readings, with_apps: bool) -> String {
        let mut out = String::with_capacity(16 * 1024);
        header(&mut out, "torii_api_requests_total", "counter", "API requests by method, route template and status.");
        let api = self.api.lock().unwrap();
        let mut routes: Vec<_> = api.iter().collect();
        routes.sort_by(|a, b| a.0.cmp(b.0));
        for ((method, route), r) in &routes {
            let mut statuses: Vec<_> = r.by_status.iter().collect();
            statuses.sort();
            for (status, count) in statuses {
                let _ = writeln!(out, "torii_api_requests_total{{method=\"{method}\",route=\"{}\",status=\"{status}\"}} {count}", escape(route));
            }
        }
        header(&mut out, "torii_api_request_duration_seconds", "histogram", "API request latency to the response's headers.");
        for ((method, route), r) in &routes {
            r.latency.write(&mut out, "torii_api_request_duration_seconds", &format!("method=\"{method}\",route=\"{}\"", escape(route)));
        }
        drop(api);

        header(&mut out, "torii_app_requests_total", "counter", "App requests through the data plane by app and status.");
        let apps = self.apps.read().unwrap();
        let mut names: Vec<_> = apps.keys().filter(|_| with_apps).collect();
        names.sort();
        for name in &names {
            for (status, count) in apps[*name].by_status() {
                let _ = writeln!(out, "torii_app_requests_total{{app=\"{}\",status=\"{status}\"}} {count}", escape(name));
            }
        }
        header(&mut out, "torii_app_request_duration_seconds", "histogram", "App request latency through the data plane, to the response's headers.");
        for name in &names {
            apps[*name].latency.write(&mut out, "torii_app_request_duration_seconds", &format!("app=\"{}\"", escape(name)));
        }
        drop(apps);

        header(&mut out, "torii_units_in_use", "gauge", "WASM app units serving a request now (one instance each).");
        let _ = writeln!(out, "torii_units_in_use {}", readings.units_in_use);
        header(&mut out, "torii_app_versions_optimizing", "gauge", "WASM app versions serving on baseline (Winch) code while Cranelift optimises them.");
        let _ = writeln!(out, "torii_app_versions_optimizing {}", readings.versions_optimizing);
        header(&mut out, "torii_plugin_calls_total", "counter", "Calls into each plugin since it was loaded.");
        for (name, kind, calls, _) in &readings.plugins {
            let _ = writeln!(out, "torii_plugin_calls_total{{plugin=\"{}\",kind=\"{kind}\"}} {calls}", escape(name));
        }
        header(&mut out, "torii_plugin_errors_total", "counter", "Calls into each plugin that failed (trap, timeout, refusal).");
        for (name, kind, _, errors) in &readings.plugins {
            let _ = writeln!(out, "torii_plugin_errors_total{{plugin=\"{}\",kind=\"{kind}\"}} {errors}", escape(name));
        }
        header(&mut out, "torii_webhook_deliveries_total", "counter", "Webhook delivery attempts by result.");
        let _ = writeln!(out, "torii_webhook_deliveries_total{{result=\"ok\"}} {}", self.webhook_ok.load(Ordering::Relaxed));
        let _ = writeln!(out, "torii_webhook_deliveries_total{{result=\"failed\"}} {}", self.webhook_failed.load(Ordering::Relaxed));
        header(&mut out, "torii_healing_repairs_total", "counter", "Units and nodes healing repaired.");
        let _ = writeln!(out, "torii_healing_repairs_total {}", self.healing_repairs.load(Ordering::Relaxed));
        header(&mut out, "torii_event_locks_held", "gauge", "Event locks held now (operations running on their targets).");
        let _ = writeln!(out, "torii_event_locks_held {}", readings.event_locks);
        header(&mut out, "torii_uptime_seconds", "gauge", "Seconds since this torii process started.");
        let _ = writeln!(out, "torii_uptime_seconds {}", readings.uptime.as_secs_f64());
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value: `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_labels_escaped() {
        let m = Metrics::default();
        m.api_request("GET", "/1.0/apps/{app}", 200, Duration::from_micros(700));
        m.api_request("GET", "/1.0/apps/{app}", 404, Duration::from_secs(9));
        m.app("a\"b").answered(503, Duration::from_millis(3));
        m.app("a\"b").answered(418, Duration::from_millis(3));
        let readings = Readings { units_in_use: 2, versions_optimizing: 1, plugins: vec![("native".into(), "auth-scheme", 5, 1)], event_locks: 0, uptime: Duration::from_secs(1) };
        assert!(!m.render(&readings, false).contains("a\\\"b"));
        let text = m.render(&readings, true);
        assert!(text.contains("torii_api_requests_total{method=\"GET\",route=\"/1.0/apps/{app}\",status=\"404\"} 1\n"), "{text}");
        assert!(text.contains("torii_api_request_duration_seconds_bucket{method=\"GET\",route=\"/1.0/apps/{app}\",le=\"0.0005\"} 0\n"));
        assert!(text.contains("torii_api_request_duration_seconds_bucket{method=\"GET\",route=\"/1.0/apps/{app}\",le=\"0.001\"} 1\n"));
        assert!(text.contains("torii_api_request_duration_seconds_bucket{method=\"GET\",route=\"/1.0/apps/{app}\",le=\"5\"} 1\n"));
        assert!(text.contains("torii_api_request_duration_seconds_bucket{method=\"GET\",route=\"/1.0/apps/{app}\",le=\"+Inf\"} 2\n"));
        assert!(text.contains("torii_app_requests_total{app=\"a\\\"b\",status=\"418\"} 1\ntorii_app_requests_total{app=\"a\\\"b\",status=\"503\"} 1\n"), "{text}");
        assert!(text.contains("torii_plugin_errors_total{plugin=\"native\",kind=\"auth-scheme\"} 1\n"));
        m.forget_app("a\"b");
        assert!(!m.render(&Readings { units_in_use: 0, versions_optimizing: 0, plugins: vec![], event_locks: 0, uptime: Duration::ZERO }, true).contains("a\\\"b"));
    }
}
