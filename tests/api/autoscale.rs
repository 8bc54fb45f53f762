//! App autoscale (`/1.9/apps/{app}/units/autoscale`, API-NOTES §2.5, §2.19):
//! the specs through the API, a WASM app under a concurrent load loop that
//! grows to its most units and shrinks back (then sleeps at minUnits 0), and
//! a container app burning CPU that gets a second unit.

use crate::deploy::{MP, upload};
use crate::docker::{ENGINES, add_node, images, nodes, stream_errors, unique};
use crate::support::{Backend, Options, TestServer, backends, within};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

const FAST: &str = "[autoscale]\ninterval_secs = 1\nsample_ms = 50\nscale_down_delay_secs = 3\ncooldown_secs = 1\n";

/// The units of `process` in app info, and their statuses.
async fn units(t: &TestServer, app: &str, process: &str) -> Vec<String> {
    let info = t.req("GET", &format!("/1.0/apps/{app}")).admin().send().await.json();
    info["units"].as_array().unwrap().iter().filter(|u| u["ProcessName"] == process).map(|u| u["Status"].as_str().unwrap().to_string()).collect()
}

/// Each autoscale event's data, newest first.
fn autoscale_data(events: &Value) -> Vec<Value> {
    events.as_array().unwrap().iter().map(|e| crate::events::bson_object(&e["StartCustomData"])).collect()
}

/// Each autoscale event's (from, to) units, newest first.
fn moves(events: &Value) -> Vec<(i64, i64)> {
    autoscale_data(events).iter().map(|d| (d["from"].as_i64().unwrap(), d["to"].as_i64().unwrap())).collect()
}

backends! {
    async fn wasm_apps_scale_by_requests_in_flight(b) {
        let mut opts = Options::new(b);
        opts.extra_toml = FAST.into();
        let t = TestServer::start_with(opts).await;
        t.team("t1").await;
        t.req("POST", "/1.0/pools").admin().form(&[("name", "main"), ("default", "true")]).send().await.expect(201, "");
        t.req("POST", "/1.0/apps").admin().form(&[("name", "web"), ("teamOwner", "t1")]).send().await.expect_status(201);
        let path = "/1.9/apps/web/units/autoscale";
        // Specs are checked: bad ones change nothing.
        t.req("GET", path).admin().send().await.expect(200, "null\n");
        let spec = |min: &str, max: &str, cpu: &str| json!({"process": "web", "minUnits": min.parse::<i64>().unwrap(), "maxUnits": max.parse::<i64>().unwrap(), "averageCPU": cpu});
        t.req("POST", path).admin().json(spec("1", "4", "50%")).send().await
            .expect_error(400, "unable to validate autoscale spec: app \"web\" has no deployed version: deploy it first");
        let burn = std::fs::read(env!("TORII_GUEST_APP_BURN")).unwrap();
        let r = t.req("POST", "/1.0/apps/web/deploy").admin().raw(MP, upload(&burn, &[])).send().await;
        assert!(r.body.ends_with("\nOK\n"), "{}", r.body);
        for (body, why) in [
            (spec("3", "2", "50%"), "maximum units must be greater than minimum units"),
            (spec("1", "4", "50"), "invalid average CPU value: \"50\" (use a percentage such as \"70%\" or millicores such as \"700m\")"),
            (spec("1", "4", "150%"), "the app's units run one request each: average CPU is the share of units kept busy, at most 100%"),
        ] {
            t.req("POST", path).admin().json(body).send().await.expect_error(400, &format!("unable to validate autoscale spec: {why}"));
        }
        t.req("GET", path).admin().send().await.expect(200, "null\n");
        t.req("POST", path).admin().json(json!({"process": "worker", "minUnits": 1, "maxUnits": 2, "averageCPU": "50%"})).send().await
            .expect_error(400, "process error: no command declared in Procfile for process \"worker\"");
        // An outsider may not set one.
        let outsider = t.user("outsider@example.com").await;
        t.req("POST", path).token(&outsider).json(spec("1", "4", "50%")).send().await.expect_status(403);

        t.req("POST", path).admin().json(spec("1", "4", "50%")).send().await.expect(200, "");
        let listed = t.req("GET", path).admin().send().await.json();
        assert_eq!(listed, json!([{"process": "web", "minUnits": 1, "maxUnits": 4, "averageCPU": "50%", "version": 0}]));
        assert_eq!(t.req("GET", "/1.0/apps/web").admin().send().await.json()["autoscale"], listed);
        t.req("PUT", "/1.0/apps/web/units").admin().form(&[("units", "1"), ("process", "web")]).send().await
            .expect_error(400, "cannot add units to an app with autoscaler configured, please update autoscale settings");

        // A concurrent load loop: every unit busy and more waiting, so the
        // process grows to its most units.
        let stop = Arc::new(AtomicBool::new(false));
        let mut load = Vec::new();
        for _ in 0..6 {
            let (client, url, stop) = (reqwest::Client::new(), format!("{}/sleep?ms=150", t.router_url()), stop.clone());
            load.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let _ = client.get(&url).header("host", "web.apps.test").send().await;
                }
            }));
        }
        within(20, "the loaded app grows to 4 units", async || units(&t, "web", "web").await.len() == 4).await;
        stop.store(true, Ordering::Relaxed);
        for l in load {
            l.await.unwrap();
        }
        // Idle: back to its fewest units once the delay has passed.
        within(20, "the idle app shrinks back to 1 unit", async || units(&t, "web", "web").await.len() == 1).await;
        let events = t.req("GET", "/1.1/events?kindname=autoscale").admin().send().await.json();
        let made = moves(&events);
        assert!(made.iter().any(|(_, to)| *to == 4) && made.iter().any(|(from, to)| *to == 1 && *from > 1), "{made:?}");
        let reason = autoscale_data(&events)[0]["reason"].as_str().unwrap().to_string();
        assert!(reason.starts_with("concurrency: "), "{reason}");

        // minUnits 0: an idle process sleeps, and its first request wakes it.
        t.req("POST", path).admin().json(spec("0", "4", "50%")).send().await.expect(200, "");
        within(20, "the idle app sleeps", async || units(&t, "web", "web").await == ["asleep"]).await;
        assert_eq!(t.app_get("web.apps.test", "/").await, (200, "awake\n".into()));
        assert_eq!(units(&t, "web", "web").await, ["started"]);

        // Removed: the units stay as they are; a second remove finds nothing.
        t.req("DELETE", &format!("{path}?process=web")).admin().send().await.expect(200, "");
        t.req("GET", path).admin().send().await.expect(200, "null\n");
        t.req("DELETE", &format!("{path}?process=web")).admin().send().await.expect_error(404, "app web has no autoscale for process \"web\"");
        t.req("PUT", "/1.0/apps/web/units").admin().form(&[("units", "1"), ("process", "web")]).send().await.expect_status(200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_apps_scale_by_cpu() {
    let Some(nodes) = nodes() else { return };
    let _beside = crate::support::TIMED.read().await;
    let _shared = ENGINES.read().await;
    images(&nodes).await;
    let mut opts = Options::new(Backend::Sqlite);
    opts.extra_toml = FAST.into();
    let t = TestServer::start_with(opts).await;
    t.team("t1").await;
    let pool = unique("as", Backend::Sqlite);
    t.req("POST", "/1.0/pools").admin().form(&[("name", pool.as_str()), ("provisioner", "docker")]).send().await.expect(201, "");
    for node in &nodes {
        let r = add_node(&t, node, &pool).await;
        assert_eq!(stream_errors(&r.body), Vec::<String>::new(), "{}", r.body);
    }
    let app = unique("burner", Backend::Sqlite);
    t.req("POST", "/1.0/apps").admin().form(&[("name", app.as_str()), ("teamOwner", "t1"), ("pool", pool.as_str())]).send().await.expect_status(201);
    // One busy loop beside the web server: about one core.
    let dockerfile = "FROM torii-test/httpd:1\nCMD [\"sh\", \"-c\", \"(while :; do :; done) & exec httpd -f -p 8888 -h /www\"]\n";
    let r = t.req("POST", &format!("/1.0/apps/{app}/deploy")).admin().form(&[("dockerfile", dockerfile)]).send().await;
    assert!(r.body.ends_with("\nOK\n"), "{}", r.body);
    let path = format!("/1.9/apps/{app}/units/autoscale");
    // Container units are measured by CPU: at least one unit always.
    t.req("POST", &path).admin().json(json!({"minUnits": 0, "maxUnits": 2, "averageCPU": "50%"})).send().await
        .expect_error(400, "unable to validate autoscale spec: minimum units must be greater than 0");
    t.req("POST", &path).admin().json(json!({"minUnits": 1, "maxUnits": 2, "averageCPU": "500m"})).send().await.expect(200, "");
    within(30, "the burning app gets a second unit", async || units(&t, &app, "web").await == ["started", "started"]).await;
    let events = t.req("GET", "/1.1/events?kindname=autoscale").admin().send().await.json();
    assert_eq!(moves(&events), vec![(1, 2)]);
    let reason = autoscale_data(&events)[0]["reason"].as_str().unwrap().to_string();
    // The target is averageCPU of the plan's CPU limit (of one core without one).
    let plan_cpu = t.req("GET", &format!("/1.0/apps/{app}")).admin().send().await.json()["plan"]["cpumilli"].as_i64().unwrap();
    let target = if plan_cpu > 0 { plan_cpu / 2 } else { 500 };
    assert!(reason.starts_with("cpu: 1 unit(s) use ") && reason.ends_with(&format!("target {target}m per unit")), "{reason}");
    // Gone, with its burning units.
    let r = t.req("DELETE", &format!("/1.0/apps/{app}")).admin().send().await;
    assert_eq!(r.status, 200, "{}", r.body);
    t.stop().await;
}
