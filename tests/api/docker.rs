//! Container apps on real Docker engines: nodes, image deploys, units spread
//! over two engines, the router proxying to published 127.0.0.1 ports.
//!
//! Needs the engines `.ci/docker-engines start` runs (`TORII_TEST_DOCKER_NODES`,
//! two sockets, with `torii/busybox:latest` imported); without them the tests
//! say so and pass, unless `TORII_TEST_REQUIRE_DOCKER=1` (as in CI).

use crate::deploy::{MP, tar_gz, upload};
use crate::support::{Backend, Options, TestServer, backends};
use serde_json::{Value, json};
use std::process::Command;
use tokio::sync::OnceCell;

/// The two engines' addresses, or `None` (test skipped) when none run.
pub(crate) fn nodes() -> Option<[String; 2]> {
    match std::env::var("TORII_TEST_DOCKER_NODES") {
        Ok(v) if !v.is_empty() => {
            let list: Vec<String> = v.split(',').map(str::to_string).collect();
            assert_eq!(list.len(), 2, "TORII_TEST_DOCKER_NODES names two engines: {v}");
            Some([list[0].clone(), list[1].clone()])
        }
        _ => {
            if std::env::var("TORII_TEST_REQUIRE_DOCKER").as_deref() == Ok("1") {
                panic!("TORII_TEST_REQUIRE_DOCKER=1 but TORII_TEST_DOCKER_NODES is not set");
            }
            eprintln!("docker tests not run: TORII_TEST_DOCKER_NODES is not set (.ci/run sets it)");
            None
        }
    }
}

fn base_image() -> String {
    std::env::var("TORII_TEST_DOCKER_IMAGE").unwrap_or_else(|_| "torii/busybox:latest".into())
}

/// `docker build` on `node` from a Dockerfile alone (no context).
pub(crate) fn build(node: &str, tag: &str, dockerfile: &str) {
    use std::io::Write;
    let mut child = Command::new("docker")
        .args(["-H", node, "build", "-q", "-t", tag, "-"])
        .env("DOCKER_BUILDKIT", "0")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("docker CLI");
    child.stdin.take().unwrap().write_all(dockerfile.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "docker build {tag} on {node}: {}", String::from_utf8_lossy(&out.stderr));
}

/// The image names (`repository:tag`) on `node` in `repository`.
fn image_names(node: &str, repository: &str) -> Vec<String> {
    let out = Command::new("docker").args(["-H", node, "images", "--format", "{{.Repository}}:{{.Tag}}", repository]).output().expect("docker CLI");
    assert!(out.status.success(), "docker images on {node}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

/// `docker tag image name` on `node`.
fn tag(node: &str, image: &str, name: &str) {
    let out = Command::new("docker").args(["-H", node, "tag", image, name]).output().expect("docker CLI");
    assert!(out.status.success(), "docker tag {image} {name} on {node}: {}", String::from_utf8_lossy(&out.stderr));
}

/// An image serving `text` with busybox httpd on port 8888.
pub(crate) fn httpd_dockerfile(text: &str) -> String {
    format!(
        "FROM {}\nRUN mkdir -p /www && echo '{text}' > /www/index.html\nEXPOSE 8888\nCMD [\"httpd\", \"-f\", \"-p\", \"8888\", \"-h\", \"/www\"]\n",
        base_image()
    )
}

static IMAGES: OnceCell<()> = OnceCell::const_new();

/// Docker tests share the engines: the fault test, which freezes one, runs alone.
pub(crate) static ENGINES: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// `torii-test/httpd:1` and `:2` on both engines, built once per test run.
pub(crate) async fn images(nodes: &[String; 2]) {
    IMAGES
        .get_or_init(|| async {
            let nodes = nodes.clone();
            tokio::task::spawn_blocking(move || {
                for node in &nodes {
                    build(node, "torii-test/httpd:1", &httpd_dockerfile("hello from v1"));
                    build(node, "torii-test/httpd:2", &httpd_dockerfile("hello from v2"));
                }
            })
            .await
            .unwrap();
        })
        .await;
}

/// Containers on `node` carrying `label`.
pub(crate) fn containers(node: &str, label: &str) -> Vec<String> {
    let out = Command::new("docker").args(["-H", node, "ps", "-aq", "--filter", &format!("label={label}")]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

/// A name unique to this test run and backend (the engines are shared).
pub(crate) fn unique(prefix: &str, b: Backend) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{prefix}-{}-{:x}", if b == Backend::Sqlite { "s" } else { "p" }, nanos & 0xfffff)
}

/// The messages of an x-json-stream, joined.
pub(crate) fn stream_text(body: &str) -> String {
    body.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).filter_map(|v| v["Message"].as_str().map(str::to_string)).collect()
}

pub(crate) fn stream_errors(body: &str) -> Vec<String> {
    body.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).filter_map(|v| v["Error"].as_str().map(str::to_string)).filter(|e| !e.is_empty()).collect()
}

pub(crate) async fn add_node(t: &TestServer, address: &str, pool: &str) -> crate::support::Response {
    t.req("POST", "/1.2/node")
        .admin()
        .form(&[("Register", "true"), ("Metadata.address", address), ("Metadata.pool", pool), ("Metadata.zone", "z1")])
        .send()
        .await
}

backends! {
    async fn image_deploys_run_units_across_nodes_behind_the_router(b) {
        let Some(nodes) = nodes() else { return };
        let _shared = ENGINES.read().await;
        images(&nodes).await;
        let t = TestServer::start_with(Options::new(b)).await;
        t.team("t1").await;
        let pool = unique("dk", b);
        t.req("POST", "/1.0/pools").admin().form(&[("name", pool.as_str()), ("provisioner", "docker")]).send().await.expect(201, "");

        // Nodes: bad input is refused before anything starts.
        t.req("POST", "/1.2/node").admin().form(&[("Register", "true"), ("Metadata.address", nodes[0].as_str())]).send().await
            .expect_error(400, "pool is required");
        t.req("POST", "/1.0/pools").admin().form(&[("name", "wasmy")]).send().await.expect(201, "");
        add_node(&t, &nodes[0], "wasmy").await.expect_error(400, "pool \"wasmy\" is provisioned by \"wasm\", which runs no units on docker nodes");
        add_node(&t, &nodes[0], "nopool").await.expect_error(404, "Pool does not exist.");
        // Checks that need the engine answer in the 201 stream.
        let r = add_node(&t, "tcp://10.1.2.3:2375", &pool).await;
        assert_eq!(r.status, 201);
        assert_eq!(stream_errors(&r.body), vec!["Invalid address url: \"tcp://10.1.2.3:2375\": engines are reached on loopback only (127.0.0.1)"]);
        for node in &nodes {
            let r = add_node(&t, node, &pool).await;
            assert_eq!((r.status.as_u16(), stream_errors(&r.body)), (201, vec![]), "{}", r.body);
            assert!(r.body.contains(&format!("---- Node {node} added to pool"), ), "{}", r.body);
        }
        let r = add_node(&t, &nodes[0], &pool).await;
        assert_eq!(stream_errors(&r.body), vec![format!("node with address {:?} already exists in provisioner \"docker\"", nodes[0])]);
        let listed = t.req("GET", "/1.2/node").admin().send().await;
        let listed = listed.json();
        assert_eq!(listed["machines"], json!([]));
        assert_eq!(
            listed["nodes"][0],
            json!({"Address": nodes[0], "IaaSID": "", "Metadata": {"pool": pool, "zone": "z1"}, "Status": "ready", "Pool": pool, "Provisioner": "docker"})
        );
        assert_eq!(listed["nodes"].as_array().unwrap().len(), 2);

        // An image deploy: a unit starts, the router reaches it on 127.0.0.1.
        let app = unique("web", b);
        let host = format!("{app}.apps.test");
        t.req("POST", "/1.0/apps").admin().form(&[("name", app.as_str()), ("teamOwner", "t1"), ("pool", pool.as_str())]).send().await.expect_status(201);
        let r = t.req("POST", &format!("/1.0/apps/{app}/deploy")).admin().form(&[("image", "torii-test/httpd:1")]).send().await;
        assert!(r.body.contains("---- Deploying image torii-test/httpd:1 ----") && r.body.contains(" ---> Started unit "), "{}", r.body);
        assert!(r.body.ends_with("\nOK\n"), "{}", r.body);
        assert_eq!(t.app_get(&host, "/").await, (200, "hello from v1\n".into()));

        // An image no node has: refused, nothing recorded, v1 still serves.
        let r = t.req("POST", &format!("/1.0/apps/{app}/deploy")).admin().form(&[("image", "torii-test/absent:9")]).send().await;
        assert!(r.body.contains("image \"torii-test/absent:9\" is not on docker node"), "{}", r.body);
        assert!(!r.body.ends_with("\nOK\n"), "{}", r.body);
        assert_eq!(t.req("GET", &format!("/1.0/apps/{app}")).admin().send().await.json()["deploys"], 1);

        // Three units: spread over both nodes, each a container of the app.
        let r = t.req("PUT", &format!("/1.0/apps/{app}/units")).admin().form(&[("units", "2"), ("process", "web")]).send().await;
        assert!(stream_errors(&r.body).is_empty() && r.body.contains("Starting 2 new units [web: 3]"), "{}", r.body);
        let info = t.req("GET", &format!("/1.0/apps/{app}")).admin().send().await.json();
        let units = info["units"].as_array().unwrap().clone();
        assert_eq!(units.len(), 3, "{units:?}");
        for u in &units {
            assert_eq!((u["Type"].as_str(), u["Status"].as_str(), u["ProcessName"].as_str(), u["Version"].as_i64()), (Some("container"), Some("started"), Some("web"), Some(1)));
            assert_eq!(u["Address"]["Scheme"], "http");
            assert_eq!(u["HostAddr"], "127.0.0.1");
        }
        let app_label = format!("torii.app={app}");
        let per_node: Vec<usize> = nodes.iter().map(|n| containers(n, &app_label).len()).collect();
        assert_eq!(per_node.iter().sum::<usize>(), 3);
        assert!(per_node.iter().all(|n| *n >= 1), "units spread over both nodes: {per_node:?}");
        for (node, count) in nodes.iter().zip(&per_node) {
            let on = t.req("GET", &format!("/1.2/node/{node}/containers")).admin().send().await;
            let on = on.json();
            assert_eq!(on.as_array().unwrap().len(), *count, "{on}");
        }
        let by_app = t.req("GET", &format!("/1.2/node/apps/{app}/containers")).admin().send().await.json();
        assert_eq!(by_app.as_array().unwrap().len(), 3);
        for _ in 0..12 {
            assert_eq!(t.app_get(&host, "/").await, (200, "hello from v1\n".into()));
        }

        // A second image: new units take over, the old ones go.
        let r = t.req("POST", &format!("/1.0/apps/{app}/deploy")).admin().form(&[("image", "torii-test/httpd:2")]).send().await;
        assert!(r.body.ends_with("\nOK\n"), "{}", r.body);
        assert_eq!(t.app_get(&host, "/").await, (200, "hello from v2\n".into()));
        let info = t.req("GET", &format!("/1.0/apps/{app}")).admin().send().await.json();
        assert!(info["units"].as_array().unwrap().iter().all(|u| u["Version"] == 2), "{}", info["units"]);

        // A Dockerfile with the uploaded file as its context: built on every node, then deployed.
        let dockerfile = format!(
            "FROM {}\nCOPY site/ /www/\nEXPOSE 8888\nCMD [\"httpd\", \"-f\", \"-p\", \"8888\", \"-h\", \"/www\"]\n",
            base_image()
        );
        let context = tar_gz(&[("site/index.html", b"hello from the build\n")]);
        let r = t.req("POST", &format!("/1.0/apps/{app}/deploy")).admin().raw(MP, upload(&context, &[("dockerfile", dockerfile.as_str())])).send().await;
        assert!(r.body.contains("---- Building the app's image") && r.body.contains(" ---> image torii-build:"), "{}", r.body);
        assert!(r.body.ends_with("\nOK\n"), "{}", r.body);
        assert_eq!(t.app_get(&host, "/").await, (200, "hello from the build\n".into()));
        // A Dockerfile that does not build: the stream says why, version 3 keeps serving.
        let r = t.req("POST", &format!("/1.0/apps/{app}/deploy")).admin().form(&[("dockerfile", "FROM torii-test/absent:1\n")]).send().await;
        assert!(r.body.contains("build image") && !r.body.ends_with("\nOK\n"), "{}", r.body);
        assert_eq!(t.app_get(&host, "/").await, (200, "hello from the build\n".into()));
        // A file alone goes onto the app's platform, and this app has none.
        let r = t.req("POST", &format!("/1.0/apps/{app}/deploy")).admin().raw(MP, upload(&context, &[])).send().await;
        assert!(r.body.contains(&format!("app {app:?} has no platform to deploy files onto")) && !r.body.ends_with("\nOK\n"), "{}", r.body);

        // An image name moved to another image after its deploy: each version
        // runs what its deploy pinned, so a rollback brings the old one back.
        let moving = format!("torii-test/moving-{app}:latest");
        for (text, image, version) in [("hello from v1", "torii-test/httpd:1", 4), ("hello from v2", "torii-test/httpd:2", 5)] {
            for node in &nodes {
                tag(node, image, &moving);
            }
            let r = t.req("POST", &format!("/1.0/apps/{app}/deploy")).admin().form(&[("image", moving.as_str())]).send().await;
            assert!(r.body.contains(&format!(" ---> image {moving} pinned as torii/app-{app}:v{version} on ")), "{}", r.body);
            assert!(r.body.ends_with("\nOK\n"), "{}", r.body);
            assert_eq!(t.app_get(&host, "/").await, (200, format!("{text}\n")));
        }
        let r = t.req("POST", &format!("/1.0/apps/{app}/deploy/rollback")).admin().form(&[("image", "v4")]).send().await;
        assert!(stream_errors(&r.body).is_empty() && !r.body.contains("pinned as"), "{}", r.body);
        assert_eq!(t.app_get(&host, "/").await, (200, "hello from v1\n".into()));

        // Rollback: version 1's image runs again.
        let r = t.req("POST", &format!("/1.0/apps/{app}/deploy/rollback")).admin().form(&[("image", "v1")]).send().await;
        assert!(stream_errors(&r.body).is_empty(), "{}", r.body);
        assert_eq!(t.app_get(&host, "/").await, (200, "hello from v1\n".into()));

        // Env set: units are replaced and see it.
        let r = t.req("POST", &format!("/1.0/apps/{app}/env")).admin().json(json!({"envs": [{"name": "GREETING", "value": "hi"}]})).send().await;
        assert!(stream_errors(&r.body).is_empty() && r.body.contains("Started unit"), "{}", r.body);
        let ran = t.req("POST", &format!("/1.0/apps/{app}/run")).admin().form(&[("command", "echo $GREETING-$PORT"), ("once", "true")]).send().await;
        assert!(ran.body.contains("hi-8888"), "{}", ran.body);
        // An isolated run: a container of its own, from the serving version's
        // image with the app's env, gone once the command ends.
        let ran = t.req("POST", &format!("/1.0/apps/{app}/run")).admin()
            .form(&[("command", "echo isolated-$GREETING-$TSURU_PROCESSNAME; cat /www/index.html"), ("isolated", "true")]).send().await;
        assert_eq!(ran.status, 200, "{}", ran.body);
        assert!(ran.body.contains("isolated-hi-web") && ran.body.contains("hello from v1"), "{}", ran.body);
        let ran = t.req("POST", &format!("/1.0/apps/{app}/run")).admin().form(&[("command", "echo before; exit 3"), ("isolated", "true")]).send().await;
        assert!(ran.status.as_u16() >= 400 && ran.body.contains("before") && ran.body.contains("the command exited with code 3 in an isolated container"), "{} {}", ran.status, ran.body);
        assert!(nodes.iter().all(|n| containers(n, &format!("torii.run={app}")).is_empty()), "an isolated run's container was left behind");

        // Stop: the containers stop and the router answers for the app; start brings them back.
        t.req("POST", &format!("/1.0/apps/{app}/stop")).admin().send().await.expect_status(200);
        assert_eq!(t.app_get(&host, "/").await.0, 503);
        let info = t.req("GET", &format!("/1.0/apps/{app}")).admin().send().await.json();
        assert!(info["units"].as_array().unwrap().iter().all(|u| u["Status"] == "stopped"), "{}", info["units"]);
        t.req("POST", &format!("/1.0/apps/{app}/start")).admin().send().await.expect_status(200);
        assert_eq!(t.app_get(&host, "/").await, (200, "hello from v1\n".into()));
        // Sleep: the containers stop; the first request wakes the app (the
        // host starts them again through the provisioner) and is answered.
        t.req("POST", &format!("/1.0/apps/{app}/sleep")).admin().form(&[("proxy", "http://127.0.0.1:1")]).send().await.expect_status(200);
        let info = t.req("GET", &format!("/1.0/apps/{app}")).admin().send().await.json();
        assert!(info["units"].as_array().unwrap().iter().all(|u| u["Status"] == "asleep"), "{}", info["units"]);
        assert_eq!(t.app_get(&host, "/").await, (200, "hello from v1\n".into()));
        let info = t.req("GET", &format!("/1.0/apps/{app}")).admin().send().await.json();
        assert!(info["units"].as_array().unwrap().iter().all(|u| u["Status"] == "started"), "{}", info["units"]);

        // Moves: every unit of node A to node B, then one back; rebalance evens them out.
        let r = t.req("POST", "/docker/containers/move").admin().form(&[("from", nodes[0].as_str()), ("to", nodes[1].as_str())]).send().await;
        assert!(stream_errors(&r.body).is_empty() && r.body.contains("Containers moved successfully!"), "{}", r.body);
        assert_eq!((containers(&nodes[0], &app_label).len(), containers(&nodes[1], &app_label).len()), (0, 3));
        assert_eq!(t.app_get(&host, "/").await, (200, "hello from v1\n".into()));
        let r = t.req("POST", "/1.3/node/rebalance").admin().form(&[("MetadataFilter.pool", pool.as_str()), ("Dry", "true")]).send().await;
        assert!(r.body.contains("Would move unit") && r.body.contains("Units would be rebalanced as above."), "{}", r.body);
        assert_eq!((containers(&nodes[0], &app_label).len(), containers(&nodes[1], &app_label).len()), (0, 3));
        let r = t.req("POST", "/1.3/node/rebalance").admin().form(&[("MetadataFilter.pool", pool.as_str())]).send().await;
        assert!(stream_errors(&r.body).is_empty() && r.body.contains("Moved unit") && r.body.contains("Units successfully rebalanced!"), "{}", r.body);
        assert_eq!((containers(&nodes[0], &app_label).len(), containers(&nodes[1], &app_label).len()), (1, 2));
        let one = containers(&nodes[1], &app_label)[0].clone();
        let r = t.req("POST", &format!("/docker/container/{one}/move")).admin().form(&[("to", nodes[0].as_str())]).send().await;
        assert!(stream_errors(&r.body).is_empty() && r.body.contains("Moved unit"), "{}", r.body);
        assert_eq!((containers(&nodes[0], &app_label).len(), containers(&nodes[1], &app_label).len()), (2, 1));
        t.req("POST", "/docker/container/feedbeef/move").admin().form(&[("to", nodes[0].as_str())]).send().await.expect_error(404, "Container feedbeef not found");
        for _ in 0..6 {
            assert_eq!(t.app_get(&host, "/").await, (200, "hello from v1\n".into()));
        }

        // Node info and removal: the node's units move to the other node.
        let info = t.req("GET", &format!("/1.6/node/{}", nodes[1])).admin().send().await.json();
        assert_eq!((info["node"]["Address"].clone(), info["status"]["Checks"][0]["Checks"][0]["Successful"].clone()), (json!(nodes[1]), json!(true)));
        let r = t.req("DELETE", &format!("/1.2/node/{}", nodes[1])).admin().send().await;
        assert!(r.body.ends_with(&format!("Node {} removed.\n", nodes[1])), "{}", r.body);
        assert_eq!(containers(&nodes[1], &app_label).len(), 0);
        assert_eq!(containers(&nodes[0], &app_label).len(), 3);
        assert_eq!(t.app_get(&host, "/").await, (200, "hello from v1\n".into()));
        t.req("DELETE", &format!("/1.2/node/{}", nodes[1])).admin().send().await.expect_error(404, "Node not found.");

        // App removal takes its containers and its versions' pinned images away.
        let pins = format!("torii/app-{app}");
        assert_eq!(image_names(&nodes[0], &pins).len(), 4, "{:?}", image_names(&nodes[0], &pins));
        let r = t.req("DELETE", &format!("/1.0/apps/{app}")).admin().send().await;
        assert!(stream_errors(&r.body).is_empty(), "{}", r.body);
        assert_eq!(containers(&nodes[0], &app_label).len(), 0);
        assert_eq!(image_names(&nodes[0], &pins), Vec::<String>::new());
        t.stop().await;
    }
}

/// A server whose healing runs every second and whose engine calls give up
/// after `call_timeout_ms`, with both engines as nodes of a
/// fresh docker pool; the pool's name.
async fn healing_server(b: Backend, nodes: &[String; 2], call_timeout_ms: u64) -> (TestServer, String) {
    let mut o = Options::new(b);
    o.extra_toml = format!("[healing]\ninterval_secs = 1\n[docker]\ncall_timeout_ms = {call_timeout_ms}\n");
    let t = TestServer::start_with(o).await;
    t.team("t1").await;
    let pool = unique("heal", b);
    t.req("POST", "/1.0/pools").admin().form(&[("name", pool.as_str()), ("provisioner", "docker")]).send().await.expect(201, "");
    for node in nodes {
        let r = add_node(&t, node, &pool).await;
        assert!(stream_errors(&r.body).is_empty(), "{}", r.body);
    }
    (t, pool)
}

/// Polls `check` for up to 20 s.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..100 {
        if check().await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    panic!("{what}: not within 20 s");
}

backends! {
    async fn healing_replaces_units_killed_behind_its_back(b) {
        let Some(nodes) = nodes() else { return };
        let _shared = ENGINES.read().await;
        images(&nodes).await;
        let (t, pool) = healing_server(b, &nodes, 15_000).await;
        t.req("GET", "/1.3/healing").admin().send().await.expect_status(204);
        t.req("GET", "/1.3/healing?filter=machine").admin().send().await.expect_error(400, "invalid filter, possible values are 'node' or 'container'");

        // A node marked down gets no new units.
        t.req("PUT", "/1.2/node").admin().form(&[("Address", nodes[1].as_str()), ("Disable", "true")]).send().await.expect(200, "");
        t.req("PUT", "/1.2/node").admin().form(&[("Address", nodes[1].as_str()), ("Disable", "true"), ("Enable", "true")]).send().await
            .expect_error(400, "A node can't be enabled and disabled simultaneously.");
        let listed = t.req("GET", "/1.2/node").admin().send().await.json();
        assert_eq!(listed["nodes"][1]["Status"], "disabled");
        let app = unique("heal", b);
        let host = format!("{app}.apps.test");
        let app_label = format!("torii.app={app}");
        t.req("POST", "/1.0/apps").admin().form(&[("name", app.as_str()), ("teamOwner", "t1"), ("pool", pool.as_str())]).send().await.expect_status(201);
        let r = t.req("POST", &format!("/1.0/apps/{app}/deploy")).admin().form(&[("image", "torii-test/httpd:1")]).send().await;
        assert!(r.body.ends_with("\nOK\n"), "{}", r.body);
        let r = t.req("PUT", &format!("/1.0/apps/{app}/units")).admin().form(&[("units", "1")]).send().await;
        assert!(stream_errors(&r.body).is_empty(), "{}", r.body);
        assert_eq!((containers(&nodes[0], &app_label).len(), containers(&nodes[1], &app_label).len()), (2, 0));
        t.req("PUT", "/1.2/node").admin().form(&[("Address", nodes[1].as_str()), ("Enable", "true")]).send().await.expect(200, "");

        // A unit killed behind torii's back is replaced, and the repair is recorded.
        let victim = containers(&nodes[0], &app_label)[0].clone();
        let name = String::from_utf8(Command::new("docker").args(["-H", &nodes[0], "inspect", "-f", "{{.Name}}", &victim]).output().unwrap().stdout).unwrap();
        let name = name.trim().trim_start_matches('/').to_string();
        assert!(Command::new("docker").args(["-H", &nodes[0], "kill", &victim]).output().unwrap().status.success());
        eventually("the killed unit is replaced", async || {
            let running: usize = nodes.iter().map(|n| {
                let out = Command::new("docker").args(["-H", n, "ps", "-q", "--filter", &format!("label={app_label}")]).output().unwrap();
                String::from_utf8_lossy(&out.stdout).lines().count()
            }).sum();
            running == 2 && !containers(&nodes[0], &app_label).contains(&victim)
        }).await;
        // The repair is recorded once the provisioner has reported it.
        eventually("the repair is recorded", async || t.req("GET", "/1.3/healing").admin().send().await.status == 200).await;
        let history = t.req("GET", "/1.3/healing?filter=container").admin().send().await.json();
        let entry = history.as_array().unwrap().iter().find(|e| e["FailingContainer"]["ID"] == json!(name)).unwrap_or_else(|| panic!("{history:#}"));
        assert_eq!(history.as_array().unwrap().len(), 1, "one repair: {history:#}");
        assert_eq!((entry["Action"].clone(), entry["FailingContainer"]["ID"].clone(), entry["Successful"].clone()), (json!("container-healing"), json!(name), json!(true)));
        assert_eq!(entry["FailingNode"]["Address"], json!(nodes[0]));
        assert!(entry["Reason"].as_str().unwrap().starts_with(&format!("unit {name} was exited")), "{entry}");
        t.req("GET", "/1.3/healing?filter=node").admin().send().await.expect_status(204);
        assert_eq!(t.app_get(&host, "/").await, (200, "hello from v1\n".into()));

        // Healing turned off for the pool: a dead unit stays dead until it is on again.
        let config = t.req("GET", "/1.2/healing/node").admin().send().await.json();
        assert_eq!(config, json!({"": {"Enabled": null, "EnabledInherited": false, "MaxTimeSinceSuccess": null, "MaxTimeSinceSuccessInherited": false, "MaxUnresponsiveTime": null, "MaxUnresponsiveTimeInherited": false}}));
        t.req("POST", "/1.2/healing/node").admin().form(&[("MaxUnresponsiveTime", "120")]).send().await.expect(200, "");
        t.req("POST", "/1.2/healing/node").admin().form(&[("pool", pool.as_str()), ("Enabled", "false")]).send().await.expect(200, "");
        t.req("POST", "/1.2/healing/node").admin().form(&[("pool", pool.as_str()), ("MaxTimeSinceSuccess", "soon")]).send().await
            .expect_error(400, "invalid MaxTimeSinceSuccess: \"soon\"");
        let config = t.req("GET", "/1.2/healing/node").admin().send().await.json();
        assert_eq!(config[pool.as_str()], json!({"Enabled": false, "EnabledInherited": false, "MaxTimeSinceSuccess": null, "MaxTimeSinceSuccessInherited": false, "MaxUnresponsiveTime": 120, "MaxUnresponsiveTimeInherited": true}));
        let victim = containers(&nodes[1], &app_label).into_iter().chain(containers(&nodes[0], &app_label)).next().unwrap();
        let on = if containers(&nodes[1], &app_label).contains(&victim) { &nodes[1] } else { &nodes[0] };
        assert!(Command::new("docker").args(["-H", on, "kill", &victim]).output().unwrap().status.success());
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        assert!(containers(on, &app_label).contains(&victim), "healing is off for the pool");
        t.req("DELETE", &format!("/1.2/healing/node?pool={pool}&name=Enabled")).admin().send().await.expect(200, "");
        eventually("healing is back on", async || !containers(on, &app_label).contains(&victim)).await;

        // A log config for the pool: units are replaced with it at once (restart=true).
        let r = t.req("POST", "/docker/logs").admin().form(&[("pool", pool.as_str()), ("restart", "true"), ("Driver", "json-file"), ("LogOpts.max-size", "1m")]).send().await;
        assert!(stream_errors(&r.body).is_empty() && r.body.contains("restarting unit"), "{}", r.body);
        let logs = t.req("GET", "/docker/logs").admin().send().await.json();
        assert_eq!(logs[pool.as_str()], json!({"Driver": "json-file", "LogOpts": {"max-size": "1m"}}));
        t.req("POST", "/docker/logs").admin().form(&[("pool", pool.as_str())]).send().await.expect_error(400, "log driver is mandatory");
        for node in &nodes {
            for c in containers(node, &app_label) {
                let out = Command::new("docker").args(["-H", node, "inspect", "-f", "{{json .HostConfig.LogConfig}}", &c]).output().unwrap();
                let config: Value = serde_json::from_slice(&out.stdout).unwrap();
                assert_eq!(config, json!({"Type": "json-file", "Config": {"max-size": "1m"}}));
            }
        }
        assert_eq!(t.app_get(&host, "/").await, (200, "hello from v1\n".into()));

        // Killing a unit through the API replaces it at once.
        let units = t.req("GET", &format!("/1.0/apps/{app}")).admin().send().await.json()["units"].clone();
        let unit = units[0]["Name"].as_str().unwrap().to_string();
        t.req("DELETE", &format!("/1.12/apps/{app}/units/{unit}?force=true")).admin().send().await.expect_status(200);
        let units = t.req("GET", &format!("/1.0/apps/{app}")).admin().send().await.json()["units"].clone();
        assert_eq!(units.as_array().unwrap().len(), 2, "{units}");
        assert!(units.as_array().unwrap().iter().all(|u| u["Name"] != json!(unit) && u["Status"] == "started"), "{units}");

        let r = t.req("DELETE", &format!("/1.0/apps/{app}")).admin().send().await;
        assert!(stream_errors(&r.body).is_empty(), "{}", r.body);
        t.stop().await;
    }
}

backends! {
    async fn archives_deploy_onto_a_platform_built_from_its_dockerfile(b) {
        let Some(nodes) = nodes() else { return };
        let _shared = ENGINES.read().await;
        let (t, pool) = healing_server(b, &nodes, 15_000).await;
        // A platform from an uploaded Dockerfile; its other form fields are build arguments.
        let platform = unique("busy", b);
        let dockerfile = format!("FROM {}\nARG GREETING\nRUN mkdir -p /etc/torii && echo \"$GREETING\" > /etc/torii/greeting\n", base_image());
        let r = t.req("POST", "/1.0/platforms").admin()
            .raw(MP, crate::platforms::multipart(&[("name", platform.as_str()), ("GREETING", "built with an argument")], Some(&dockerfile)))
            .send().await;
        assert!(r.body.contains("Platform successfully added!"), "{}", r.body);
        // Built at once on the pool's nodes (the app builds reuse its layers).
        let text = stream_text(&r.body);
        for node in &nodes {
            assert!(text.contains(&format!(" ---> building platform {platform} as torii/platform/{platform}:v1 on {node}")), "{text}");
            assert_eq!(image_names(node, &format!("torii/platform/{platform}")), vec![format!("torii/platform/{platform}:v1")]);
        }
        assert!(!text.contains("will be built by the provisioner on first use"), "{text}");
        // A Dockerfile that does not build: refused when added, nothing recorded.
        let broken = unique("broken", b);
        let r = t.req("POST", "/1.0/platforms").admin()
            .raw(MP, crate::platforms::multipart(&[("name", broken.as_str())], Some(&format!("FROM {}\nRUN exit 3\n", base_image()))))
            .send().await;
        let errors = stream_errors(&r.body);
        assert!(errors.len() == 1 && errors[0].starts_with(&format!("platform {broken} does not build in pool {pool}: platform {broken} does not build on node ")), "{}", r.body);
        assert!(!r.body.contains("Platform successfully added!"), "{}", r.body);
        t.req("GET", &format!("/1.6/platforms/{broken}")).admin().send().await.expect_error(500, "Invalid platform");
        // An update that does not build: refused, the platform stays at version 1.
        let r = t.req("PUT", &format!("/1.0/platforms/{platform}")).admin()
            .raw(MP, crate::platforms::multipart(&[], Some(&format!("FROM {}\nRUN exit 4\n", base_image()))))
            .send().await;
        assert_eq!(stream_errors(&r.body).len(), 1, "{}", r.body);
        let info = t.req("GET", &format!("/1.6/platforms/{platform}")).admin().send().await.json();
        assert_eq!(info["images"], json!([format!("torii/platform/{platform}:v1")]));
        let app = unique("site", b);
        let host = format!("{app}.apps.test");
        t.req("POST", "/1.0/apps").admin()
            .form(&[("name", app.as_str()), ("teamOwner", "t1"), ("pool", pool.as_str()), ("platform", platform.as_str())]).send().await.expect_status(201);

        // An archive without a Procfile: refused, nothing recorded.
        let r = t.req("POST", &format!("/1.0/apps/{app}/deploy")).admin().raw(MP, upload(&tar_gz(&[("index.html", b"x")]), &[])).send().await;
        assert!(r.body.contains("the archive holds no Procfile") && !r.body.ends_with("\nOK\n"), "{}", r.body);

        // The archive lands in /home/application/current; each Procfile process runs in its own units.
        let archive = tar_gz(&[
            ("Procfile", b"web: echo web is up; cat /etc/torii/greeting > public/greeting.txt && httpd -f -p $PORT -h public\nworker: echo worker is up; sleep 3600\n"),
            ("public/index.html", b"hello from the platform\n"),
        ]);
        let r = t.req("POST", &format!("/1.0/apps/{app}/deploy")).admin().raw(MP, upload(&archive, &[])).send().await;
        assert!(r.body.contains(&format!("---- Deploying onto platform {platform} (version 1) ----")), "{}", r.body);
        assert!(r.body.contains(" ---> processes: web, worker") && r.body.ends_with("\nOK\n"), "{}", r.body);
        assert_eq!(t.app_get(&host, "/").await, (200, "hello from the platform\n".into()));
        assert_eq!(t.app_get(&host, "/greeting.txt").await, (200, "built with an argument\n".into()));
        let units = t.req("GET", &format!("/1.0/apps/{app}")).admin().send().await.json()["units"].clone();
        let mut processes: Vec<&str> = units.as_array().unwrap().iter().map(|u| u["ProcessName"].as_str().unwrap()).collect();
        processes.sort();
        assert_eq!(processes, ["web", "worker"], "{units}");
        assert!(units.as_array().unwrap().iter().all(|u| u["Status"] == "started"), "{units}");
        // What the units print reaches the app log under their names.
        eventually("the units' output is in the app log", async || {
            let log = t.req("GET", &format!("/1.0/apps/{app}/log?lines=50")).admin().send().await;
            let entries: Vec<Value> = serde_json::from_str(&log.body).unwrap_or_default();
            let line = |text: &str, process: &str| entries.iter().any(|e| e["Message"] == text && e["Unit"].as_str().is_some_and(|u| u.starts_with(&format!("{app}-{process}-v1-"))));
            line("web is up", "web") && line("worker is up", "worker")
        }).await;
        let ran = t.req("POST", &format!("/1.0/apps/{app}/run")).admin().form(&[("command", "pwd; cat Procfile | wc -l"), ("once", "true")]).send().await;
        assert!(ran.body.contains("/home/application/current") && ran.body.contains('2'), "{}", ran.body);

        // Processes act one at a time: unit add/remove -p, stop/start/restart -p.
        let r = t.req("PUT", &format!("/1.0/apps/{app}/units")).admin().form(&[("units", "2"), ("process", "worker")]).send().await;
        assert!(stream_errors(&r.body).is_empty(), "{}", r.body);
        assert_eq!(unit_states(&t, &app).await, [states("web", "started", 1), states("worker", "started", 3)].concat());
        let r = t.req("DELETE", &format!("/1.0/apps/{app}/units?units=1&process=worker")).admin().send().await;
        assert!(stream_errors(&r.body).is_empty(), "{}", r.body);
        assert_eq!(unit_states(&t, &app).await, [states("web", "started", 1), states("worker", "started", 2)].concat());
        let r = t.req("POST", &format!("/1.0/apps/{app}/stop")).admin().form(&[("process", "worker")]).send().await;
        assert!(stream_errors(&r.body).is_empty(), "{}", r.body);
        assert_eq!(unit_states(&t, &app).await, [states("web", "started", 1), states("worker", "stopped", 2)].concat());
        assert_eq!(t.app_get(&host, "/").await, (200, "hello from the platform\n".into()));
        let r = t.req("POST", &format!("/1.0/apps/{app}/start")).admin().form(&[("process", "worker")]).send().await;
        assert!(stream_errors(&r.body).is_empty(), "{}", r.body);
        assert_eq!(unit_states(&t, &app).await, [states("web", "started", 1), states("worker", "started", 2)].concat());
        let r = t.req("POST", &format!("/1.0/apps/{app}/stop")).admin().form(&[("process", "web")]).send().await;
        assert!(stream_errors(&r.body).is_empty(), "{}", r.body);
        assert_eq!(t.app_get(&host, "/").await.0, 503);
        assert_eq!(unit_states(&t, &app).await, [states("web", "stopped", 1), states("worker", "started", 2)].concat());
        let r = t.req("POST", &format!("/1.0/apps/{app}/restart")).admin().form(&[("process", "web")]).send().await;
        assert!(stream_errors(&r.body).is_empty(), "{}", r.body);
        assert_eq!(unit_states(&t, &app).await, [states("web", "started", 1), states("worker", "started", 2)].concat());
        assert_eq!(t.app_get(&host, "/").await, (200, "hello from the platform\n".into()));

        let r = t.req("DELETE", &format!("/1.0/apps/{app}")).admin().send().await;
        assert!(stream_errors(&r.body).is_empty(), "{}", r.body);
        t.stop().await;
    }
}

/// The (process, status) of each unit app info lists, sorted.
async fn unit_states(t: &TestServer, app: &str) -> Vec<(String, String)> {
    let info = t.req("GET", &format!("/1.0/apps/{app}")).admin().send().await.json();
    let mut out: Vec<(String, String)> =
        info["units"].as_array().unwrap().iter().map(|u| (u["ProcessName"].as_str().unwrap().to_string(), u["Status"].as_str().unwrap().to_string())).collect();
    out.sort();
    out
}

fn states(process: &str, status: &str, count: usize) -> Vec<(String, String)> {
    vec![(process.to_string(), status.to_string()); count]
}

backends! {
    async fn a_pool_move_hands_the_app_to_the_new_provisioner(b) {
        let Some(nodes) = nodes() else { return };
        let _shared = ENGINES.read().await;
        images(&nodes).await;
        // Two docker provisioners, each with one engine; and the wasm one.
        let mut o = Options::new(b);
        o.extra_toml = "[[plugin]]\nname = \"docker-b\"\nkind = \"provisioner\"\nbuiltin = \"provisioner-docker\"\n\
                        capabilities = [\"log\", \"app-runtime\", \"containers\"]\ntimeout_ms = 120000\n".into();
        let t = TestServer::start_with(o).await;
        t.team("t1").await;
        let (pa, pb, pw) = (unique("pa", b), unique("pb", b), unique("pw", b));
        for (pool, provisioner) in [(&pa, "docker"), (&pb, "docker-b"), (&pw, "wasm")] {
            t.req("POST", "/1.0/pools").admin().form(&[("name", pool.as_str()), ("provisioner", provisioner)]).send().await.expect(201, "");
        }
        for (node, pool) in [(&nodes[0], &pa), (&nodes[1], &pb)] {
            let r = add_node(&t, node, pool).await;
            assert!(stream_errors(&r.body).is_empty(), "{}", r.body);
        }
        let app = unique("mover", b);
        let host = format!("{app}.apps.test");
        let label = format!("torii.app={app}");
        t.req("POST", "/1.0/apps").admin().form(&[("name", app.as_str()), ("teamOwner", "t1"), ("pool", pa.as_str())]).send().await.expect_status(201);
        let r = t.req("POST", &format!("/1.0/apps/{app}/deploy")).admin().form(&[("image", "torii-test/httpd:1")]).send().await;
        assert!(r.body.ends_with("\nOK\n"), "{}", r.body);
        let r = t.req("PUT", &format!("/1.0/apps/{app}/units")).admin().form(&[("units", "1")]).send().await;
        assert!(stream_errors(&r.body).is_empty(), "{}", r.body);
        let on_nodes = || (containers(&nodes[0], &label).len(), containers(&nodes[1], &label).len());
        assert_eq!(on_nodes(), (2, 0));

        // To the other docker provisioner: its engine runs the units, the old one's are gone.
        let r = t.req("PUT", &format!("/1.0/apps/{app}")).admin().form(&[("pool", pb.as_str())]).send().await;
        assert!(stream_errors(&r.body).is_empty(), "{}", r.body);
        assert!(r.body.contains("provisioner \\\"docker-b\\\" prepares version 1"), "{}", r.body);
        assert_eq!(on_nodes(), (0, 2));
        assert_eq!(unit_states(&t, &app).await, states("web", "started", 2));
        assert_eq!(t.app_get(&host, "/").await, (200, "hello from v1\n".into()));

        // To wasm, which cannot run an image, and an image has no upload to
        // be made again from: refused before anything changed.
        let r = t.req("PUT", &format!("/1.0/apps/{app}")).admin().form(&[("pool", pw.as_str())]).send().await;
        assert_eq!(stream_errors(&r.body), ["version 1 cannot run on provisioner \"wasm\" and has no upload to be made again from \
                                             (it was deployed from an image or a Dockerfile, or before uploads were kept): deploy the app from an archive first"], "{}", r.body);
        let info = t.req("GET", &format!("/1.0/apps/{app}")).admin().send().await.json();
        assert_eq!(info["pool"], pb.as_str());
        assert_eq!(on_nodes(), (0, 2));
        assert_eq!(t.app_get(&host, "/").await, (200, "hello from v1\n".into()));

        // And back: the first engine runs it again.
        let r = t.req("PUT", &format!("/1.0/apps/{app}")).admin().form(&[("pool", pa.as_str())]).send().await;
        assert!(stream_errors(&r.body).is_empty(), "{}", r.body);
        assert_eq!(on_nodes(), (2, 0));
        assert_eq!(t.app_get(&host, "/").await, (200, "hello from v1\n".into()));

        let r = t.req("DELETE", &format!("/1.0/apps/{app}")).admin().send().await;
        assert!(stream_errors(&r.body).is_empty(), "{}", r.body);
        assert_eq!(on_nodes(), (0, 0));

        // An app deployed from an archive holding a component moves to wasm
        // and back: each provisioner makes it again from that archive.
        let platform = unique("both", b);
        let r = t.req("POST", "/1.0/platforms").admin()
            .raw(MP, crate::platforms::multipart(&[("name", platform.as_str())], Some(&format!("FROM {}\n", base_image())))).send().await;
        assert!(r.body.contains("Platform successfully added!"), "{}", r.body);
        let app = unique("both", b);
        let host = format!("{app}.apps.test");
        let label = format!("torii.app={app}");
        let on_nodes = || (containers(&nodes[0], &label).len(), containers(&nodes[1], &label).len());
        t.req("POST", "/1.0/apps").admin()
            .form(&[("name", app.as_str()), ("teamOwner", "t1"), ("pool", pa.as_str()), ("platform", platform.as_str())]).send().await.expect_status(201);
        let hello = std::fs::read(crate::deploy::HELLO).unwrap();
        let archive = tar_gz(&[
            ("app.wasm", &hello),
            ("Procfile", b"web: httpd -f -p $PORT -h public\nworker: sleep 3600\n"),
            ("public/index.html", b"hello from the container\n"),
        ]);
        let r = t.req("POST", &format!("/1.0/apps/{app}/deploy")).admin().raw(MP, upload(&archive, &[])).send().await;
        assert!(r.body.ends_with("\nOK\n"), "{}", r.body);
        let r = t.req("PUT", &format!("/1.0/apps/{app}/units")).admin().form(&[("units", "1"), ("process", "web")]).send().await;
        assert!(stream_errors(&r.body).is_empty(), "{}", r.body);
        assert_eq!(on_nodes(), (3, 0));
        assert_eq!(t.app_get(&host, "/").await, (200, "hello from the container\n".into()));

        // To wasm: the component of the archive serves, no container is left.
        let r = t.req("PUT", &format!("/1.0/apps/{app}")).admin().form(&[("pool", pw.as_str())]).send().await;
        assert!(stream_errors(&r.body).is_empty(), "{}", r.body);
        assert!(r.body.contains("provisioner \\\"wasm\\\" makes version 1 again from the upload it was deployed from"), "{}", r.body);
        assert_eq!(on_nodes(), (0, 0));
        assert_eq!(t.app_get(&host, "/").await, (200, format!("hello from {app} at /\n")));
        assert_eq!(unit_states(&t, &app).await, [states("web", "started", 2), states("worker", "started", 1)].concat());
        let info = t.req("GET", &format!("/1.0/apps/{app}")).admin().send().await.json();
        assert_eq!(info["pool"], pw.as_str());

        // A second version deployed on wasm.
        let again = tar_gz(&[
            ("app.wasm", &hello),
            ("Procfile", b"web: httpd -f -p $PORT -h public\nworker: sleep 3600\n"),
            ("public/index.html", b"hello again from the container\n"),
        ]);
        let r = t.req("POST", &format!("/1.0/apps/{app}/deploy")).admin().raw(MP, upload(&again, &[])).send().await;
        assert!(r.body.ends_with("\nOK\n"), "{}", r.body);

        // And back onto docker-b's engine: built onto the platform again.
        let r = t.req("PUT", &format!("/1.0/apps/{app}")).admin().form(&[("pool", pb.as_str())]).send().await;
        assert!(stream_errors(&r.body).is_empty(), "{}", r.body);
        assert!(r.body.contains("provisioner \\\"docker-b\\\" makes version 2 again from the upload it was deployed from"), "{}", r.body);
        assert_eq!(on_nodes(), (0, 3));
        assert_eq!(t.app_get(&host, "/").await, (200, "hello again from the container\n".into()));
        assert_eq!(unit_states(&t, &app).await, [states("web", "started", 2), states("worker", "started", 1)].concat());

        // A rollback to the version made for wasm makes it again too.
        let r = t.req("POST", &format!("/1.0/apps/{app}/deploy/rollback")).admin().form(&[("image", "v1")]).send().await;
        assert!(r.body.contains("provisioner \\\"docker-b\\\" makes version 1 again from the upload it was deployed from"), "{}", r.body);
        assert!(stream_errors(&r.body).is_empty(), "{}", r.body);
        assert_eq!(t.app_get(&host, "/").await, (200, "hello from the container\n".into()));
        assert_eq!(on_nodes(), (0, 3));

        let r = t.req("DELETE", &format!("/1.0/apps/{app}")).admin().send().await;
        assert!(stream_errors(&r.body).is_empty(), "{}", r.body);
        assert_eq!(on_nodes(), (0, 0));
        t.stop().await;
    }
}

/// The pid of the engine behind `node` (`.ci/docker-engines` keeps
/// `docker.pid` beside `docker.sock`).
pub(crate) fn engine_pid(node: &str) -> i32 {
    let pidfile = node.trim_start_matches("unix://").replace("docker.sock", "docker.pid");
    std::fs::read_to_string(&pidfile).unwrap_or_else(|e| panic!("{pidfile}: {e}")).trim().parse().unwrap()
}

pub(crate) fn signal(pid: i32, sig: &str) {
    assert!(Command::new("kill").args([sig, &pid.to_string()]).status().unwrap().success());
}

backends! {
    async fn an_engine_that_stops_answering_mid_deploy_fails_it_cleanly(b) {
        let Some(nodes) = nodes() else { return };
        let _alone = ENGINES.write().await;
        images(&nodes).await;
        let slow = httpd_dockerfile("hello from slow").replace("CMD [\"httpd\"", "CMD [\"sh\", \"-c\", \"sleep 4; exec httpd -f -p 8888 -h /www\"]\n#");
        for node in &nodes {
            build(node, "torii-test/slow:1", &slow);
        }
        let (t, pool) = healing_server(b, &nodes, 2_000).await;
        // Units land on node B only.
        t.req("PUT", "/1.2/node").admin().form(&[("Address", nodes[0].as_str()), ("Disable", "true")]).send().await.expect(200, "");
        let app = unique("fault", b);
        let host = format!("{app}.apps.test");
        t.req("POST", "/1.0/apps").admin().form(&[("name", app.as_str()), ("teamOwner", "t1"), ("pool", pool.as_str())]).send().await.expect_status(201);
        let r = t.req("POST", &format!("/1.0/apps/{app}/deploy")).admin().form(&[("image", "torii-test/httpd:1")]).send().await;
        assert!(r.body.ends_with("\nOK\n"), "{}", r.body);

        // Engine B freezes while the new version's unit starts.
        let pid = engine_pid(&nodes[1]);
        let deploy = {
            let (client, url, token) = (t.client.clone(), format!("{}/1.0/apps/{app}/deploy", t.base), t.admin_token.clone());
            tokio::spawn(async move {
                client.post(url).bearer_auth(token).form(&[("image", "torii-test/slow:1")]).send().await.unwrap().text().await.unwrap()
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        signal(pid, "-STOP");
        let body = deploy.await.unwrap();
        signal(pid, "-CONT");
        assert!(body.contains("---- ERROR during deploy: ----") && body.contains("did not answer within 2 s"), "{body}");
        assert!(!body.ends_with("\nOK\n"), "{body}");
        // The version is not kept; its half-started unit goes once the engine answers again.
        assert_eq!(t.req("GET", &format!("/1.0/apps/{app}")).admin().send().await.json()["deploys"], 1);
        let version_2 = "torii.version=2";
        eventually("the unit of the failed version is removed", async || {
            containers(&nodes[1], &format!("torii.app={app}")).len() == 1 && containers(&nodes[1], version_2).iter().all(|c| {
                !String::from_utf8_lossy(&Command::new("docker").args(["-H", &nodes[1], "inspect", "-f", "{{index .Config.Labels \"torii.app\"}}", c]).output().unwrap().stdout).contains(&app)
            })
        }).await;
        assert_eq!(t.app_get(&host, "/").await, (200, "hello from v1\n".into()));

        let r = t.req("DELETE", &format!("/1.0/apps/{app}")).admin().send().await;
        assert!(stream_errors(&r.body).is_empty(), "{}", r.body);
        t.stop().await;
    }
}

/// Env of the node container `name` on `node`.
fn node_container_env(node: &str, name: &str) -> Vec<String> {
    let ids = containers(node, &format!("torii.nodecontainer={name}"));
    assert_eq!(ids.len(), 1, "one {name} on {node}: {ids:?}");
    let out = Command::new("docker").args(["-H", node, "inspect", "-f", "{{json .Config.Env}}", &ids[0]]).output().unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

backends! {
    async fn node_containers_run_on_every_node_of_their_pools(b) {
        let Some(nodes) = nodes() else { return };
        let _shared = ENGINES.read().await;
        let (t, pool) = healing_server(b, &nodes, 15_000).await;
        let name = unique("agent", b);
        let image = base_image();
        t.req("POST", "/1.2/nodecontainers").admin().form(&[("Name", name.as_str())]).send().await
            .expect_error(400, "node container config image cannot be empty");
        t.req("POST", "/1.2/nodecontainers").admin().form(&[("Config.Image", image.as_str())]).send().await
            .expect_error(400, "node container config name cannot be empty");
        let form = [("Name", name.as_str()), ("Config.Image", image.as_str()), ("Config.Cmd", "sleep"), ("Config.Cmd", "3600"), ("Config.Env.0", "A=1")];
        t.req("POST", "/1.2/nodecontainers").admin().form(&form).send().await.expect(200, "");
        t.req("POST", "/1.2/nodecontainers").admin().form(&form).send().await.expect_error(400, &format!("node container {name:?} already exists"));
        for node in &nodes {
            assert!(node_container_env(node, &name).contains(&"A=1".to_string()));
        }
        let listed = t.req("GET", "/1.2/nodecontainers").admin().send().await.json();
        let mine = listed.as_array().unwrap().iter().find(|n| n["Name"] == json!(name)).unwrap().clone();
        assert_eq!(mine["ConfigPools"][""]["Config"], json!({"Image": image, "Env": ["A=1"], "Cmd": ["sleep", "3600"]}));

        // A pool's config extends the base: its nodes' containers are replaced.
        t.req("POST", &format!("/1.2/nodecontainers/{name}")).admin().form(&[("pool", pool.as_str()), ("Config.Env.0", "B=2")]).send().await.expect(200, "");
        for node in &nodes {
            let env = node_container_env(node, &name);
            assert!(env.contains(&"A=1".to_string()) && env.contains(&"B=2".to_string()), "{env:?}");
        }
        let info = t.req("GET", &format!("/1.2/nodecontainers/{name}")).admin().send().await.json();
        assert_eq!(info[pool.as_str()]["Config"]["Env"], json!(["B=2"]));
        let before = containers(&nodes[0], &format!("torii.nodecontainer={name}"));
        let r = t.req("POST", &format!("/1.2/nodecontainers/{name}/upgrade")).admin().send().await;
        assert!(stream_errors(&r.body).is_empty() && r.body.contains("running on"), "{}", r.body);
        assert_ne!(containers(&nodes[0], &format!("torii.nodecontainer={name}")), before, "upgrade recreates");

        // Removing the pool's config keeps the base; kill takes the containers away.
        t.req("DELETE", &format!("/1.2/nodecontainers/{name}?pool={pool}")).admin().send().await.expect(200, "");
        let r = t.req("DELETE", &format!("/1.2/nodecontainers/{name}?kill=true")).admin().send().await;
        assert!(stream_errors(&r.body).is_empty(), "{}", r.body);
        for node in &nodes {
            assert!(containers(node, &format!("torii.nodecontainer={name}")).is_empty());
        }
        t.req("GET", &format!("/1.2/nodecontainers/{name}")).admin().send().await.expect_error(404, &format!("node container {name:?} not found"));
        t.stop().await;
    }
}

backends! {
    async fn a_deploy_canceled_while_it_builds_stops_at_its_next_step(b) {
        let Some(nodes) = nodes() else { return };
        let _shared = ENGINES.read().await;
        images(&nodes).await;
        let t = TestServer::start_with(Options::new(b)).await;
        t.team("t1").await;
        let pool = unique("cx", b);
        t.req("POST", "/1.0/pools").admin().form(&[("name", pool.as_str()), ("provisioner", "docker")]).send().await.expect(201, "");
        let r = add_node(&t, &nodes[0], &pool).await;
        assert_eq!(stream_errors(&r.body), Vec::<String>::new(), "{}", r.body);
        let app = unique("cancel", b);
        let host = format!("{app}.apps.test");
        t.req("POST", "/1.0/apps").admin().form(&[("name", app.as_str()), ("teamOwner", "t1"), ("pool", pool.as_str())]).send().await.expect_status(201);
        let r = t.req("POST", &format!("/1.0/apps/{app}/deploy")).admin().form(&[("image", "torii-test/httpd:1")]).send().await;
        assert!(r.body.ends_with("\nOK\n"), "{}", r.body);

        // A build that takes a while (unique, so no layer cache skips the
        // sleep), canceled as soon as it starts.
        let slow = httpd_dockerfile(&format!("hello from the slow build of {app}")).replace("RUN mkdir", "RUN sleep 3 && mkdir");
        let started = t.client.post(format!("{}/1.0/apps/{app}/deploy", t.base)).bearer_auth(&t.admin_token).form(&[("dockerfile", slow.as_str())]).send().await.unwrap();
        let id = started.headers()["x-tsuru-eventid"].to_str().unwrap().to_string();
        let running = t.req("GET", &format!("/1.1/events/{id}")).admin().send().await.json();
        assert_eq!((&running["Running"], &running["Cancelable"], &running["AllowedCancel"]["Scheme"]), (&json!(true), &json!(true), &json!("app.update.events")));
        let dev = t.user("dev@example.com").await;
        t.req("POST", &format!("/1.1/events/{id}/cancel")).token(&dev).form(&[("reason", "mine now")]).send().await.expect_status(403);
        t.req("POST", &format!("/1.1/events/{id}/cancel")).admin().form(&[("reason", "changed my mind")]).send().await.expect(204, "");
        let body = started.text().await.unwrap();
        assert!(body.contains("---- ERROR during deploy: ----\ncanceled by user request\n") && !body.ends_with("\nOK\n"), "{body}");

        let e = t.req("GET", &format!("/1.1/events/{id}")).admin().send().await.json();
        assert_eq!((&e["Running"], &e["Error"]), (&json!(false), &json!("canceled by user request")));
        let info = &e["CancelInfo"];
        assert_eq!((&info["Asked"], &info["Canceled"], &info["Reason"], &info["Owner"]), (&json!(true), &json!(true), &json!("changed my mind"), &json!(crate::support::ADMIN)));
        assert_ne!(info["AckTime"], "0001-01-01T00:00:00Z");
        t.req("POST", &format!("/1.1/events/{id}/cancel")).admin().form(&[("reason", "again")]).send().await.expect_error(400, "event is not cancelable");
        // Nothing was recorded: version 1 still serves, and the next deploy is version 2.
        assert_eq!(t.req("GET", &format!("/1.0/apps/{app}")).admin().send().await.json()["deploys"], 1);
        assert_eq!(t.app_get(&host, "/").await, (200, "hello from v1\n".into()));
        let r = t.req("POST", &format!("/1.0/apps/{app}/deploy")).admin().form(&[("image", "torii-test/httpd:2")]).send().await;
        assert!(r.body.contains("torii/app-") && r.body.ends_with("\nOK\n"), "{}", r.body);
        assert_eq!(t.app_get(&host, "/").await, (200, "hello from v2\n".into()));

        let r = t.req("DELETE", &format!("/1.0/apps/{app}")).admin().send().await;
        assert!(stream_errors(&r.body).is_empty(), "{}", r.body);
        t.stop().await;
    }
}
