//! Webhook delivery: after an event finishes, every webhook whose filter
//! matches it is called in the background — never on the request path —
//! with a timeout per attempt, retries with exponential backoff, and each
//! attempt recorded in a bounded per-webhook history.

use serde_json::Value;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

use crate::events::event_json;
use crate::store::{DeliveryRecord, EventRecord, Store, WebhookRecord, now_millis};

/// Delivery settings.
#[derive(Debug, Clone, Copy)]
pub struct Delivery {
    pub timeout: Duration,
    pub attempts: u32,
    /// Wait before the second attempt; doubled after each failure.
    pub backoff: Duration,
    /// Attempts kept per webhook.
    pub history: i64,
}

/// Starts the dispatcher; send it the ids of finished events.
pub fn start(store: Store, settings: Delivery) -> mpsc::UnboundedSender<String> {
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        while let Some(id) = rx.recv().await {
            let (event, hooks) = match (store.event(&id).await, store.webhooks().await) {
                (Ok(Some(e)), Ok(h)) => (e, h),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!(event = id, error = %e, "webhook dispatch could not read its data");
                    continue;
                }
                (Ok(None), _) => continue,
            };
            for hook in hooks.into_iter().filter(|h| matches(h, &event)) {
                tokio::spawn(deliver(store.clone(), settings, hook, event.clone()));
            }
        }
    });
    tx
}

fn any_or(list: &[String], value: &str) -> bool {
    list.is_empty() || list.iter().any(|v| v == value)
}

pub fn matches(hook: &WebhookRecord, e: &EventRecord) -> bool {
    let f = &hook.event_filter;
    // Delivery is asynchronous: a webhook created after the event ended must not get it.
    hook.created_at <= e.end_time
        && any_or(&f.target_types, &e.target_type)
        && any_or(&f.target_values, &e.target_value)
        && any_or(&f.kind_types, &e.kind_type)
        && any_or(&f.kind_names, &e.kind_name)
        && !(f.error_only && e.error.is_empty())
        && !(f.success_only && !e.error.is_empty())
}

/// A subset of Go templates: `{{.Field.Sub}}` is replaced by that field of
/// the event JSON (strings as they are, other values as JSON); unknown
/// fields become empty.
pub fn render(template: &str, event: &Value) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let path = rest[start + 2..start + end].trim();
        let mut value = event;
        let mut found = path.starts_with('.');
        for key in path.trim_start_matches('.').split('.').filter(|k| !k.is_empty()) {
            match value.get(key) {
                Some(v) => value = v,
                None => {
                    found = false;
                    break;
                }
            }
        }
        if found {
            match value {
                Value::String(s) => out.push_str(s),
                other => out.push_str(&other.to_string()),
            }
        }
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    out
}

fn client(hook: &WebhookRecord, timeout: Duration) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder().timeout(timeout).danger_accept_invalid_certs(hook.insecure);
    if !hook.proxy_url.is_empty() {
        b = b.proxy(reqwest::Proxy::all(&hook.proxy_url).map_err(|e| format!("bad proxy_url: {e}"))?);
    }
    b.build().map_err(|e| e.to_string())
}

async fn deliver(store: Store, settings: Delivery, hook: WebhookRecord, event: EventRecord) {
    let event_value = serde_json::to_value(event_json(&event)).expect("serialisable");
    let method = if hook.method.is_empty() { "POST".to_string() } else { hook.method.to_ascii_uppercase() };
    let body = if hook.body.is_empty() {
        matches!(method.as_str(), "POST" | "PUT" | "PATCH").then(|| event_value.to_string())
    } else {
        Some(render(&hook.body, &event_value))
    };
    let mut wait = settings.backoff;
    for attempt in 1..=settings.attempts {
        let started = Instant::now();
        let outcome = send(&hook, &method, body.clone(), settings.timeout).await;
        let (status, error) = match &outcome {
            Ok(s) if (200..400).contains(s) => (*s, String::new()),
            Ok(s) => (*s, format!("receiver answered {s}")),
            Err(e) => (0, e.clone()),
        };
        let record = DeliveryRecord {
            event_id: event.id.clone(),
            attempt: i64::from(attempt),
            at: now_millis(),
            status: i64::from(status),
            error: error.clone(),
            duration_ms: started.elapsed().as_millis() as i64,
        };
        if let Err(e) = store.record_delivery(&hook.name, &record, settings.history).await {
            tracing::warn!(webhook = hook.name, error = %e, "could not record a webhook delivery");
        }
        if error.is_empty() {
            return;
        }
        tracing::info!(webhook = hook.name, event = event.id, attempt, error, "webhook delivery failed");
        if attempt < settings.attempts {
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
    }
}

async fn send(hook: &WebhookRecord, method: &str, body: Option<String>, timeout: Duration) -> Result<u16, String> {
    let client = client(hook, timeout)?;
    let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
    let mut req = client.request(method, &hook.url);
    let mut has_content_type = false;
    for (name, values) in &hook.headers {
        has_content_type |= name.eq_ignore_ascii_case("content-type");
        for v in values {
            req = req.header(name, v);
        }
    }
    if let Some(body) = body {
        if !has_content_type && hook.body.is_empty() {
            req = req.header("content-type", "application/json");
        }
        req = req.body(body);
    }
    req.send().await.map(|r| r.status().as_u16()).map_err(|e| {
        if e.is_timeout() {
            format!("timed out after {} ms", timeout.as_millis())
        } else if e.is_connect() {
            format!("cannot connect to {}: {e}", hook.url)
        } else {
            e.to_string()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_events_ending_after_the_webhook_exists_match() {
        let hook = WebhookRecord { created_at: 1_000, ..Default::default() };
        let event = |end_time| EventRecord { end_time, kind_name: "team.create".into(), ..Default::default() };
        assert!(!matches(&hook, &event(999)));
        assert!(matches(&hook, &event(1_000)));
        let filtered = WebhookRecord {
            event_filter: crate::store::EventFilter { kind_names: vec!["app.deploy".into()], ..Default::default() },
            ..hook.clone()
        };
        assert!(!matches(&filtered, &event(2_000)));
        let errors_only = WebhookRecord { event_filter: crate::store::EventFilter { error_only: true, ..Default::default() }, ..hook };
        assert!(!matches(&errors_only, &event(2_000)));
        assert!(matches(&errors_only, &EventRecord { error: "boom".into(), ..event(2_000) }));
    }

    #[test]
    fn templates_read_event_fields() {
        let e = serde_json::json!({"Kind": {"Name": "app.deploy"}, "Target": {"Value": "web"}, "Running": false});
        assert_eq!(render("{{.Kind.Name}} on {{ .Target.Value }}: {{.Running}}{{.Nope}}!", &e), "app.deploy on web: false!");
        assert_eq!(render("no template", &e), "no template");
        assert_eq!(render("broken {{.Kind", &e), "broken {{.Kind");
    }
}
