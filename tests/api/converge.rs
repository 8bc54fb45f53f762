//! The converge path (`host/src/apps`): processes change one at a time, a
//! change whose apply fails leaves the previous state recorded and running,
//! and plugins built against another contract version are refused.

use crate::deploy::{HELLO, MP, tar_gz, upload};
use crate::support::{Backend, Options, TestServer, backends};
use serde_json::{Value, json};
use torii::config::Config;
use torii::server::Server;

/// The (process, status) of each unit app info lists, sorted.
async fn units(t: &TestServer, app: &str) -> Vec<(String, String)> {
    let info = t.req("GET", &format!("/1.0/apps/{app}")).admin().send().await.json();
    let mut out: Vec<(String, String)> = info["units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["ProcessName"].as_str().unwrap().to_string(), u["Status"].as_str().unwrap().to_string()))
        .collect();
    out.sort();
    out
}

fn n(process: &str, status: &str, count: usize) -> Vec<(String, String)> {
    vec![(process.to_string(), status.to_string()); count]
}

/// The error an x-json-stream ended with, if any.
fn stream_error(body: &str) -> Option<String> {
    body.lines().filter(|l| !l.is_empty()).find_map(|l| serde_json::from_str::<Value>(l).ok()?.get("Error")?.as_str().map(str::to_string))
}

backends! {
    async fn processes_scale_start_and_stop_one_at_a_time(b) {
        let t = TestServer::start(b).await;
        t.team("t1").await;
        t.req("POST", "/1.0/pools").admin().form(&[("name", "main"), ("default", "true")]).send().await.expect(201, "");
        t.req("POST", "/1.0/apps").admin().form(&[("name", "duo"), ("teamOwner", "t1")]).send().await.expect_status(201);
        let hello = std::fs::read(HELLO).unwrap();
        let two = tar_gz(&[("app.wasm", &hello), ("Procfile", b"web: serve\nworker: work\n")]);
        let r = t.req("POST", "/1.0/apps/duo/deploy").admin().raw(MP, upload(&two, &[])).send().await;
        assert!(r.body.ends_with("\nOK\n"), "{}", r.body);
        assert_eq!(units(&t, "duo").await, [n("web", "started", 1), n("worker", "started", 1)].concat());

        // unit add -p worker: only the worker grows.
        let r = t.req("PUT", "/1.0/apps/duo/units").admin().form(&[("units", "2"), ("process", "worker")]).send().await;
        assert_eq!(stream_error(&r.body), None, "{}", r.body);
        assert!(r.body.contains("process worker of version 1 now runs 3 unit(s)"), "{}", r.body);
        assert_eq!(units(&t, "duo").await, [n("web", "started", 1), n("worker", "started", 3)].concat());
        // Without -p: the web process.
        t.req("PUT", "/1.0/apps/duo/units").admin().form(&[("units", "1")]).send().await.expect_status(200);
        assert_eq!(units(&t, "duo").await, [n("web", "started", 2), n("worker", "started", 3)].concat());
        t.req("DELETE", "/1.0/apps/duo/units?units=1&process=worker").admin().send().await.expect_status(200);
        assert_eq!(units(&t, "duo").await, [n("web", "started", 2), n("worker", "started", 2)].concat());
        t.req("DELETE", "/1.0/apps/duo/units?units=5&process=worker").admin().send().await
            .expect_error(400, "process worker of version 1 has only 2 unit(s)");
        t.req("PUT", "/1.0/apps/duo/units").admin().form(&[("units", "1"), ("process", "clock")]).send().await
            .expect_error(400, "process error: no command declared in Procfile for process \"clock\"");

        // stop -p worker: the worker stops, web still serves.
        let r = t.req("POST", "/1.0/apps/duo/stop").admin().form(&[("process", "worker")]).send().await;
        assert!(r.body.contains("---- Stopping process worker of the app \\\"duo\\\" ----") && r.body.contains("2 unit(s) stopped"), "{}", r.body);
        assert_eq!(units(&t, "duo").await, [n("web", "started", 2), n("worker", "stopped", 2)].concat());
        assert_eq!(t.app_get("duo.apps.test", "/").await, (200, "hello from duo at /\n".into()));
        // A stopped process takes no units until it starts.
        t.req("PUT", "/1.0/apps/duo/units").admin().form(&[("units", "1"), ("process", "worker")]).send().await
            .expect_error(400, "cannot add units to process worker while it is stopped: start it first");
        t.req("POST", "/1.0/apps/duo/start").admin().form(&[("process", "worker")]).send().await.expect_status(200);
        assert_eq!(units(&t, "duo").await, [n("web", "started", 2), n("worker", "started", 2)].concat());

        // stop -p web: the app serves nothing and says so; restart -p web serves again.
        t.req("POST", "/1.0/apps/duo/stop").admin().form(&[("process", "web")]).send().await.expect_status(200);
        assert_eq!(units(&t, "duo").await, [n("web", "stopped", 2), n("worker", "started", 2)].concat());
        let (status, body) = t.app_get("duo.apps.test", "/").await;
        assert_eq!(status, 503, "{body}");
        t.req("POST", "/1.0/apps/duo/restart").admin().form(&[("process", "web")]).send().await.expect_status(200);
        assert_eq!(t.app_get("duo.apps.test", "/").await.0, 200);

        // A new deploy keeps each process's scale; a new process starts with one unit.
        let three = tar_gz(&[("app.wasm", &hello), ("Procfile", b"web: serve\nworker: work\nclock: tick\n")]);
        let r = t.req("POST", "/1.0/apps/duo/deploy").admin().raw(MP, upload(&three, &[])).send().await;
        assert!(r.body.ends_with("\nOK\n"), "{}", r.body);
        assert_eq!(units(&t, "duo").await, [n("clock", "started", 1), n("web", "started", 2), n("worker", "started", 2)].concat());
        // A sleeping process wakes on the first request.
        t.req("POST", "/1.0/apps/duo/sleep").admin().form(&[("proxy", "http://127.0.0.1:1"), ("process", "web")]).send().await.expect_status(200);
        assert_eq!(units(&t, "duo").await, [n("clock", "started", 1), n("web", "asleep", 2), n("worker", "started", 2)].concat());
        assert_eq!(t.app_get("duo.apps.test", "/").await, (200, "hello from duo at /\n".into()));
        assert_eq!(units(&t, "duo").await, [n("clock", "started", 1), n("web", "started", 2), n("worker", "started", 2)].concat());
        let events = t.req("GET", "/1.1/events?target.value=duo&kindname=app.wake").admin().send().await.json();
        assert_eq!(events.as_array().map(Vec::len), Some(1), "{events}");
        t.stop().await;
    }
}

/// A server whose `outside` provisioner (test-http-backends) serves app
/// `ext` from an HTTP server of the test's, and can be made to fail its next
/// apply (`app run fail-next-apply`).
async fn flaky(b: Backend) -> (TestServer, tokio::task::JoinHandle<()>) {
    let (live, backend) = outside_backend().await;
    let mut o = Options::new(b);
    o.extra_toml = outside_toml(&[("ext", live.to_string())]);
    let t = TestServer::start_with(o).await;
    outside_app(&t).await;
    (t, backend)
}

/// The HTTP server app `ext` of the `outside` provisioner runs on: it answers `outside`.
pub(crate) async fn outside_backend() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let live = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(|| async { "outside\n" });
    (live, tokio::spawn(async move { axum::serve(listener, app).await.unwrap() }))
}

/// The `outside` provisioner's entry (test-http-backends), serving each app
/// of `backends` from its address.
pub(crate) fn outside_toml(backends: &[(&str, String)]) -> String {
    let lines: String = backends.iter().map(|(app, addr)| format!("{app} = [\"{addr}\"]\n")).collect();
    format!(
        "[[plugin]]\nname = \"outside\"\nkind = \"provisioner\"\npath = {:?}\ncapabilities = [\"log\", \"kv\", \"app-runtime\"]\n\
         [plugin.config.backends]\n{lines}",
        env!("TORII_GUEST_TEST_HTTP_BACKENDS")
    )
}

/// Team `t1`, pool `outside` and its app `ext`.
pub(crate) async fn outside_app(t: &TestServer) {
    t.team("t1").await;
    t.req("POST", "/1.0/pools").admin().form(&[("name", "outside"), ("provisioner", "outside")]).send().await.expect(201, "");
    t.req("POST", "/1.0/apps").admin().form(&[("name", "ext"), ("teamOwner", "t1"), ("pool", "outside")]).send().await.expect_status(201);
}

async fn fail_next_apply(t: &TestServer) {
    t.req("POST", "/1.0/apps/ext/run").admin().form(&[("command", "fail-next-apply")]).send().await.expect_status(200);
}

/// What is recorded of `ext` (versions: routable, processes) and what its
/// provisioner runs (units) and the router serves.
async fn observed(t: &TestServer) -> (Value, Vec<(String, String)>, (u16, String)) {
    let versions: Vec<Value> = t.server().store.versions("ext").await.unwrap().iter()
        .map(|v| json!({"version": v.version, "routable": v.routable, "processes": serde_json::to_value(&v.processes).unwrap()}))
        .collect();
    let plan = t.req("GET", "/1.0/apps/ext").admin().send().await.json()["plan"]["name"].clone();
    (json!({"versions": versions, "plan": plan}), units(t, "ext").await, t.app_get("ext.apps.test", "/").await)
}

backends! {
    async fn a_failed_apply_leaves_the_previous_state_recorded_and_running(b) {
        let (t, backend) = flaky(b).await;
        let hello = std::fs::read(HELLO).unwrap();
        // Version 1 serves; version 2 is deployed beside it, without traffic.
        for fields in [&[][..], &[("new-version", "true")][..]] {
            let r = t.req("POST", "/1.0/apps/ext/deploy").admin().raw(MP, upload(&hello, fields)).send().await;
            assert!(r.body.ends_with("\nOK\n"), "{}", r.body);
        }
        t.req("POST", "/1.0/plans").admin().form(&[("name", "big"), ("memory", "268435456"), ("cpumilli", "1000")]).send().await.expect_status(201);
        let before = observed(&t).await;
        assert_eq!(before.2, (200, "outside\n".to_string()));
        assert_eq!(before.1, n("web", "started", 1));

        let injected = "provisioner \"outside\": the backends of app \"ext\" failed while applying (injected)";
        let changes: [(&str, &str, Vec<(&str, &str)>); 6] = [
            ("PUT", "/1.0/apps/ext/units", vec![("units", "2"), ("version", "1")]),
            ("POST", "/1.0/apps/ext/stop", vec![]),
            ("POST", "/1.0/apps/ext/sleep", vec![("proxy", "http://127.0.0.1:1")]),
            ("POST", "/1.8/apps/ext/routable", vec![("version", "2"), ("isRoutable", "true")]),
            ("DELETE", "/1.10/apps/ext/versions/2", vec![]),
            ("PUT", "/1.0/apps/ext", vec![("plan", "big")]),
        ];
        for (method, path, form) in changes {
            fail_next_apply(&t).await;
            let r = t.req(method, path).admin().form(&form).send().await;
            let failed = stream_error(&r.body).or((r.status.as_u16() >= 400).then(|| r.body.clone())).unwrap_or_default();
            assert!(failed.contains(injected), "{method} {path}: {} {}", r.status, r.body);
            assert_eq!(observed(&t).await, before, "{method} {path} left a change behind");
        }
        // The same changes pass once the provisioner does.
        t.req("PUT", "/1.0/apps/ext/units").admin().form(&[("units", "2"), ("version", "1")]).send().await.expect_status(200);
        assert_eq!(units(&t, "ext").await, n("web", "started", 3));
        backend.abort();
        t.stop().await;
    }
}

#[tokio::test]
async fn a_plugin_built_against_another_contract_version_is_refused_naming_both() {
    // Beside the timed test, never during it (see support::TIMED).
    let _beside = crate::support::TIMED.read().await;
    let dir = tempfile::TempDir::new().unwrap();
    let cache = crate::support::shared_cache_dir();
    let old = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/provisioner-contract-0.1.0.wasm");
    let toml = format!(
        "data_dir = {:?}\n[plugins]\ncache_dir = {cache:?}\n[[plugin]]\nname = \"old\"\nkind = \"provisioner\"\npath = {old:?}\ncapabilities = [\"log\", \"app-runtime\"]\n",
        dir.path()
    );
    let err = format!("{:#}", Server::build(Config::parse(&toml).unwrap()).await.err().expect("refused"));
    assert_eq!(
        err,
        "plugin \"old\" was built against torii:plugin@0.1.0, but this torii speaks torii:plugin@0.7.0: \
         rebuild it with the plugin SDK of torii:plugin@0.7.0"
    );
}

backends! {
    async fn a_router_that_fails_does_not_fail_the_change(b) {
        // `broken`: the embedded router without the grant it routes with, so
        // each of its calls fails.
        let mut o = Options::new(b);
        o.extra_toml = "[[plugin]]\nname = \"broken\"\nkind = \"router\"\nbuiltin = \"router-embedded\"\ncapabilities = [\"log\"]\n".into();
        let t = TestServer::start_with(o).await;
        t.team("t1").await;
        t.req("POST", "/1.0/pools").admin().form(&[("name", "main"), ("default", "true")]).send().await.expect(201, "");
        t.req("POST", "/1.0/apps").admin().form(&[("name", "solo"), ("teamOwner", "t1")]).send().await.expect_status(201);
        let r = t.req("POST", "/1.0/apps/solo/deploy").admin().raw(MP, upload(&std::fs::read(HELLO).unwrap(), &[])).send().await;
        assert!(r.body.ends_with("\nOK\n"), "{}", r.body);
        t.req("POST", "/1.8/routers").admin().json(json!({"name": "flaky", "type": "broken", "config": {"domain": "flaky.test"}})).send().await.expect(201, "");
        // Linking it fails at the router: the link stands, and the app
        // router's status says why (the resync loop tells it again).
        t.req("POST", "/1.5/apps/solo/routers").admin().json(json!({"name": "flaky"})).send().await.expect(200, "");
        let routers = t.req("GET", "/1.5/apps/solo/routers").admin().send().await.json();
        assert_eq!(routers[1]["status"], "error", "{routers}");
        assert_eq!(routers[1]["status-detail"], "plugin \"broken\" called capability \"proxy\", which its config does not grant", "{routers}");
        assert_eq!(routers[0]["status"], "ready", "{routers}");

        // The provisioner's work stands; the router's failure is reported.
        let r = t.req("PUT", "/1.0/apps/solo/units").admin().form(&[("units", "2")]).send().await;
        assert_eq!((r.status.as_u16(), stream_error(&r.body)), (200, None), "{}", r.body);
        assert!(r.body.contains("the routers were not told of the change") && r.body.contains("router \\\"flaky\\\""), "{}", r.body);
        assert_eq!(units(&t, "solo").await, n("web", "started", 3));
        assert_eq!(t.app_get("solo.apps.test", "/").await, (200, "hello from solo at /\n".into()));
        t.stop().await;
    }
}
