//! Webhook delivery: after an event finishes, every webhook whose filter
//! matches it and whose owner team may read it (`events::visibility`) is
//! called in the background — never on the request path — through the
//! egress rule, with a timeout per attempt, retries with exponential backoff,
//! and each attempt recorded in a bounded per-webhook history.

use serde_json::Value;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

use crate::egress::{Egress, Request};
use crate::events::event_json;
use crate::events::visibility::{may_read, team_grants};
use crate::store::{DeliveryRecord, EventRecord, Store, WebhookRecord, now_millis};
use std::collections::HashMap;
use std::sync::Arc;

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
pub fn start(store: Store, settings: Delivery, egress: Arc<Egress>, metrics: Arc<crate::metrics::Metrics>) -> mpsc::UnboundedSender<String> {
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
            let mut readers = HashMap::new();
            for hook in hooks.into_iter().filter(|h| matches(h, &event)) {
                if !readers.contains_key(&hook.team_owner) {
                    match team_grants(&store, &hook.team_owner).await {
                        Ok(g) => readers.insert(hook.team_owner.clone(), g),
                        Err(e) => {
                            tracing::warn!(event = id, team = hook.team_owner, error = %e, "webhook dispatch could not read the team's apps");
                            continue;
                        }
                    };
                }
                if may_read(&readers[&hook.team_owner], &event.allowed) {
                    tokio::spawn(deliver(store.clone(), settings, egress.clone(), metrics.clone(), hook, event.clone()));
                }
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

async fn deliver(store: Store, settings: Delivery, egress: Arc<Egress>, metrics: Arc<crate::metrics::Metrics>, hook: WebhookRecord, event: EventRecord) {
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
        let outcome = send(&egress, &hook, &method, body.clone(), settings.timeout).await;
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
        metrics.webhook_delivery(error.is_empty());
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

/// One attempt: the receiver's status, or why there is none. A 3xx is the
/// answer (redirects are not followed).
async fn send(egress: &Egress, hook: &WebhookRecord, method: &str, body: Option<String>, timeout: Duration) -> Result<u16, String> {
    let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
    let mut headers = reqwest::header::HeaderMap::new();
    for (name, values) in &hook.headers {
        let Ok(name) = reqwest::header::HeaderName::from_bytes(name.as_bytes()) else { continue };
        for v in values {
            if let Ok(v) = reqwest::header::HeaderValue::from_str(v) {
                headers.append(name.clone(), v);
            }
        }
    }
    if body.is_some() && hook.body.is_empty() && !headers.contains_key(reqwest::header::CONTENT_TYPE) {
        headers.insert(reqwest::header::CONTENT_TYPE, reqwest::header::HeaderValue::from_static("application/json"));
    }
    let request = Request {
        method,
        url: hook.url.clone(),
        headers,
        body: body.map(String::into_bytes),
        proxy: Some(hook.proxy_url.clone()),
        insecure: hook.insecure,
        timeout,
        follow: false,
    };
    egress.send(request).await.map(|r| r.status().as_u16()).map_err(|e| e.to_string())
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
