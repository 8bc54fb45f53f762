//! Webhooks: CRUD as tsuru, and delivery to a real receiver on loopback with
//! filters, templates, retries, timeouts and history.

use crate::support::{Options, TestServer, backends};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Receiver {
    seen: Mutex<Vec<(String, HeaderMap, String)>>,
    /// Answer 500 to this many requests first.
    fail_first: AtomicUsize,
    delay_ms: AtomicUsize,
}

async fn receive(State(r): State<Arc<Receiver>>, method: Method, headers: HeaderMap, body: Bytes) -> StatusCode {
    tokio::time::sleep(Duration::from_millis(r.delay_ms.load(Ordering::SeqCst) as u64)).await;
    r.seen.lock().unwrap().push((method.to_string(), headers, String::from_utf8_lossy(&body).into_owned()));
    if r.fail_first.load(Ordering::SeqCst) > 0 {
        r.fail_first.fetch_sub(1, Ordering::SeqCst);
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    StatusCode::OK
}

async fn receiver() -> (Arc<Receiver>, String) {
    let r = Arc::new(Receiver::default());
    let app = axum::Router::new().fallback(receive).with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (r, url)
}

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn options(b: crate::support::Backend, extra: &str) -> Options {
    let mut o = Options::new(b);
    o.extra_toml = format!("[webhooks]\nbackoff_ms = 50\n{extra}");
    o
}

/// `options` with the receiver at `url` allowed by the egress rule.
fn options_reaching(b: crate::support::Backend, extra: &str, url: &str) -> Options {
    let mut o = options(b, extra);
    o.extra_toml.push_str(&format!("[egress]\nallow = [{:?}]\n", crate::support::origin(url)));
    o
}

async fn tag_team(t: &TestServer, team: &str, tag: &str) {
    t.req("PUT", &format!("/1.6/teams/{team}")).admin().form(&[("tags", tag)]).send().await.expect_status(200);
}

backends! {
    async fn crud_like_tsuru(b) {
        let t = TestServer::start_with(options(b, "")).await;
        t.team("t1").await;
        t.req("GET", "/1.6/events/webhooks").admin().send().await.expect(204, "");
        let create = |body: Value| {
            let req = t.req("POST", "/1.6/events/webhooks").admin().json(body);
            async move { req.send().await }
        };
        create(json!({"name": "Bad Name", "url": "http://x"})).await.expect_status(400);
        create(json!({"name": "hook"})).await.expect_error(400, "webhook url must not be empty");
        create(json!({"name": "hook", "url": "not a url"})).await.expect_status(400);
        create(json!({"name": "hook", "url": "http://127.0.0.1:9/x", "description": "d",
            "event_filter": {"kind_names": ["app.deploy"], "error_only": true}, "headers": {"X-Key": ["k1"]}, "method": "put"})).await.expect(200, "");
        create(json!({"name": "hook", "url": "http://127.0.0.1:9/x"})).await.expect_error(409, "webhook already exists with the same name");
        let one = t.req("GET", "/1.6/events/webhooks/hook").admin().send().await.json();
        assert_eq!(one, json!({"name": "hook", "description": "d", "team_owner": "t1",
            "event_filter": {"target_types": [], "target_values": [], "kind_types": [], "kind_names": ["app.deploy"], "error_only": true, "success_only": false},
            "url": "http://127.0.0.1:9/x", "proxy_url": "", "headers": {"X-Key": ["k1"]}, "method": "PUT", "body": "", "insecure": false}));
        t.req("GET", "/1.6/events/webhooks/nope").admin().send().await.expect_error(404, "webhook not found");
        // Form bodies work too.
        t.req("PUT", "/1.6/events/webhooks/hook").admin()
            .form(&[("url", "http://127.0.0.1:9/y"), ("event_filter.kind_names.0", "team.create"), ("body", "{{.Kind.Name}}")]).send().await.expect(200, "");
        let one = t.req("GET", "/1.6/events/webhooks/hook").admin().send().await.json();
        assert_eq!((one["url"].clone(), one["event_filter"]["kind_names"].clone(), one["body"].clone()),
            (json!("http://127.0.0.1:9/y"), json!(["team.create"]), json!("{{.Kind.Name}}")));
        t.req("PUT", "/1.6/events/webhooks/nope").admin().form(&[("url", "http://x")]).send().await.expect_error(404, "webhook not found");

        // Another team's member sees and touches nothing.
        t.team("t2").await;
        t.role("hooker", "team", &["webhook"]).await;
        let other = t.user("other@example.com").await;
        t.assign("hooker", "other@example.com", "t2").await;
        t.req("GET", "/1.6/events/webhooks").token(&other).send().await.expect(204, "");
        t.req("GET", "/1.6/events/webhooks/hook").token(&other).send().await.expect_status(403);
        t.req("DELETE", "/1.6/events/webhooks/hook").token(&other).send().await.expect_status(403);
        t.req("PUT", "/1.6/events/webhooks/hook").token(&other).form(&[("url", "http://x"), ("team_owner", "t2")]).send().await.expect_status(403);
        t.req("DELETE", "/1.6/events/webhooks/hook").admin().send().await.expect(200, "");
        t.req("DELETE", "/1.6/events/webhooks/hook").admin().send().await.expect_error(404, "webhook not found");
        t.stop().await;
    }
}

backends! {
    async fn delivers_matching_events(b) {
        let (rx, url) = receiver().await;
        let t = TestServer::start_with(options_reaching(b, "", &url)).await;
        t.team("t1").await;
        t.team("t9").await;
        t.req("POST", "/1.6/events/webhooks").admin()
            .json(json!({"name": "teams", "team_owner": "t9", "url": url, "event_filter": {"kind_names": ["team.update"]}, "headers": {"X-Token": ["abc"]}}))
            .send().await.expect(200, "");
        t.req("POST", "/1.6/events/webhooks").admin()
            .json(json!({"name": "text", "team_owner": "t9", "url": url, "method": "PUT", "body": "{{.Kind.Name}} on {{.Target.Value}}", "event_filter": {"target_values": ["t9"]}}))
            .send().await.expect(200, "");
        tag_team(&t, "t1", "x").await;
        tag_team(&t, "t9", "x").await;
        wait_for("two deliveries", || rx.seen.lock().unwrap().len() >= 2).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let seen = rx.seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 2, "{:?}", seen.iter().map(|s| &s.2).collect::<Vec<_>>());
        let json_posts: Vec<&(String, HeaderMap, String)> = seen.iter().filter(|s| s.0 == "POST").collect();
        assert_eq!(json_posts.len(), 1);
        let (_, headers, body) = json_posts[0];
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["x-token"], "abc");
        let event: Value = serde_json::from_str(body).unwrap();
        assert_eq!((event["Kind"]["Name"].clone(), event["Target"]["Value"].clone()), (json!("team.update"), json!("t9")));
        let texts: Vec<&str> = seen.iter().filter(|s| s.0 == "PUT").map(|s| s.2.as_str()).collect();
        assert_eq!(texts, vec!["team.update on t9"]);
        let history = t.req("GET", "/torii/v1/webhooks/teams/deliveries").admin().send().await.json();
        assert_eq!((history[0]["status"].clone(), history[0]["attempt"].clone(), history[0]["error"].clone()), (json!(200), json!(1), json!("")));
        t.stop().await;
    }
}

backends! {
    async fn retries_with_backoff_and_slow_receivers_never_block_the_api(b) {
        let (rx, url) = receiver().await;
        let t = TestServer::start_with(options_reaching(b, "timeout_ms = 300\nattempts = 3\n", &url)).await;
        t.team("t1").await;
        t.req("POST", "/1.6/events/webhooks").admin().json(json!({"name": "flaky", "url": url, "event_filter": {"kind_names": ["team.update"]}}))
            .send().await.expect(200, "");
        rx.fail_first.store(2, Ordering::SeqCst);
        tag_team(&t, "t1", "a").await;
        wait_for("three attempts", || rx.seen.lock().unwrap().len() >= 3).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let h = history(&t).await;
        let attempts: Vec<(i64, i64)> = h.as_array().unwrap().iter().map(|d| (d["attempt"].as_i64().unwrap(), d["status"].as_i64().unwrap())).collect();
        assert_eq!(attempts, vec![(3, 200), (2, 500), (1, 500)]);
        assert_eq!(h[1]["error"], "receiver answered 500");

        // A receiver slower than the timeout: the API answers at once, the attempts time out.
        rx.delay_ms.store(2000, Ordering::SeqCst);
        let started = Instant::now();
        tag_team(&t, "t1", "b").await;
        assert!(started.elapsed() < Duration::from_millis(1000), "API waited for the webhook: {:?}", started.elapsed());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let h = history(&t).await;
            let timeouts = h.as_array().unwrap().iter().filter(|d| d["status"] == 0 && d["error"].as_str().unwrap().contains("timed out")).count();
            if timeouts == 3 {
                break;
            }
            assert!(Instant::now() < deadline, "{h}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        t.stop().await;
    }
}

async fn history(t: &TestServer) -> Value {
    t.req("GET", "/torii/v1/webhooks/flaky/deliveries").admin().send().await.json()
}
