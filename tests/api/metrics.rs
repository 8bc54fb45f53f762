//! `GET /1.2/metrics`: torii's figures, read back with the official Python
//! client's parser (`tests/metrics/parse.py`, PyPI `prometheus_client`).
//! Without it the test says so and passes, unless
//! `TORII_TEST_REQUIRE_SERVICES=1` (as in CI).

use crate::deploy::{HELLO, MP, upload};
use crate::services::python_has;
use crate::support::{TestServer, backends};
use serde_json::Value;

/// The samples of an exposition, as the reference parser reads them.
fn parse(text: &str) -> Vec<Value> {
    use std::io::Write;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/metrics/parse.py");
    let mut child = std::process::Command::new("python3")
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}\n{text}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice::<Value>(&out.stdout).unwrap().as_array().unwrap().clone()
}

/// The value of the sample `name` whose labels include `labels`, if any.
fn value(samples: &[Value], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| s["name"] == name && labels.iter().all(|(k, v)| s["labels"][*k] == *v))
        .map(|s| s["value"].as_f64().unwrap())
}

/// A scrape as the operator's scraper makes it (a token holding `app.read`
/// globally: the per-app series come too).
async fn scrape(t: &TestServer) -> Vec<Value> {
    scrape_as(t, Some(&t.admin_token)).await
}

async fn scrape_as(t: &TestServer, token: Option<&str>) -> Vec<Value> {
    let mut req = t.req("GET", "/1.2/metrics");
    if let Some(token) = token {
        req = req.token(token);
    }
    let r = req.send().await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("content-type"), "text/plain; version=0.0.4; charset=utf-8");
    parse(&r.body)
}

backends! {
    async fn metrics_parse_and_move_with_traffic(b) {
        if !python_has(&["prometheus_client"]) {
            return;
        }
        let t = TestServer::start(b).await;
        let before = scrape(&t).await;
        let info = [("method", "GET"), ("route", "/1.0/users/info"), ("status", "200")];
        let seen = value(&before, "torii_api_requests_total", &info).unwrap_or(0.0);
        for _ in 0..3 {
            t.req("GET", "/1.0/users/info").admin().send().await.expect_status(200);
        }
        t.req("GET", "/1.0/apps/nope").admin().send().await.expect_status(404);
        let native_calls = value(&before, "torii_plugin_calls_total", &[("plugin", "native"), ("kind", "auth-scheme")]).unwrap();

        // An app's traffic, by status, with its latency.
        t.team("t1").await;
        t.req("POST", "/1.0/pools").admin().form(&[("name", "main"), ("default", "true")]).send().await.expect(201, "");
        t.req("POST", "/1.0/apps").admin().form(&[("name", "web"), ("teamOwner", "t1")]).send().await.expect_status(201);
        let r = t.req("POST", "/1.0/apps/web/deploy").admin().raw(MP, upload(&std::fs::read(HELLO).unwrap(), &[])).send().await;
        assert!(r.body.ends_with("\nOK\n"), "{}", r.body);
        for _ in 0..5 {
            assert_eq!(t.app_get("web.apps.test", "/").await.0, 200);
        }
        t.login(crate::support::ADMIN, crate::support::ADMIN_PASSWORD).await;

        let after = scrape(&t).await;
        assert_eq!(value(&after, "torii_api_requests_total", &info), Some(seen + 3.0));
        assert_eq!(value(&after, "torii_api_requests_total", &[("route", "/1.0/apps/{app}"), ("status", "404")]), Some(1.0));
        assert_eq!(value(&after, "torii_api_request_duration_seconds_count", &[("method", "GET"), ("route", "/1.0/users/info")]), Some(seen + 3.0));
        assert_eq!(value(&after, "torii_app_requests_total", &[("app", "web"), ("status", "200")]), Some(5.0));
        assert_eq!(value(&after, "torii_app_request_duration_seconds_count", &[("app", "web")]), Some(5.0));
        assert_eq!(value(&after, "torii_app_request_duration_seconds_bucket", &[("app", "web"), ("le", "+Inf")]), Some(5.0));
        assert!(value(&after, "torii_plugin_calls_total", &[("plugin", "native")]).unwrap() > native_calls);
        assert!(value(&after, "torii_plugin_calls_total", &[("plugin", "wasm"), ("kind", "provisioner")]).unwrap() > 0.0);
        assert_eq!(value(&after, "torii_units_in_use", &[]), Some(0.0));
        assert_eq!(value(&after, "torii_event_locks_held", &[]), Some(0.0));
        for family in ["torii_webhook_deliveries_total", "torii_healing_repairs_total", "torii_uptime_seconds"] {
            assert!(after.iter().any(|s| s["name"] == family), "no {family}");
        }
        // Other teams (and anonymous scrapes) do not learn which apps exist
        // or their traffic; the rest of the figures are for everyone.
        let other = t.user("other@example.com").await;
        for token in [None, Some(other.as_str())] {
            let samples = scrape_as(&t, token).await;
            assert!(!samples.iter().any(|s| s["labels"]["app"] == "web"), "{token:?} sees app series");
            assert!(value(&samples, "torii_api_requests_total", &info).is_some_and(|v| v >= seen + 3.0));
        }

        // A removed app's series go with it.
        t.req("DELETE", "/1.0/apps/web").admin().send().await.expect_status(200);
        assert_eq!(value(&scrape(&t).await, "torii_app_requests_total", &[("app", "web")]), None);
        t.stop().await;
    }
}
