//! Apps on a real three-node Docker Swarm (the `swarm` provisioner): a
//! cluster for the pool, image deploys as services whose tasks Swarm spreads
//! over the nodes, the router proxying to each task's port on its node,
//! scaling, a roll that loses no request, rollback and removal.
//!
//! Needs the swarm `.ci/swarm start` forms (`TORII_TEST_SWARM_MANAGER`,
//! `TORII_TEST_SWARM_NODES`); without it the tests say so and pass, unless
//! `TORII_TEST_REQUIRE_SWARM=1` (as in CI).

use crate::docker::{stream_errors, stream_text, unique};
use crate::support::{Options, TestServer, backends};
use serde_json::{Value, json};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use tokio::sync::OnceCell;

struct Swarm {
    manager: String,
    /// Each host's engine, then its address on the swarm's subnet.
    nodes: Vec<String>,
    addresses: Vec<String>,
    /// `.ci/swarm DIR`: kills and revives hosts.
    ctl: Vec<String>,
}

fn swarm() -> Option<Swarm> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    match (var("TORII_TEST_SWARM_MANAGER"), var("TORII_TEST_SWARM_NODES"), var("TORII_TEST_SWARM_ADDRESSES"), var("TORII_TEST_SWARM_CTL")) {
        (Some(manager), Some(nodes), Some(addresses), Some(ctl)) => {
            let list = |v: String| v.split(',').map(str::to_string).collect::<Vec<_>>();
            Some(Swarm { manager, nodes: list(nodes), addresses: list(addresses), ctl: ctl.split_whitespace().map(str::to_string).collect() })
        }
        _ => {
            if std::env::var("TORII_TEST_REQUIRE_SWARM").as_deref() == Ok("1") {
                panic!("TORII_TEST_REQUIRE_SWARM=1 but TORII_TEST_SWARM_MANAGER is not set");
            }
            eprintln!("swarm tests not run: TORII_TEST_SWARM_MANAGER is not set (.ci/run sets it)");
            None
        }
    }
}

/// The swarm is shared: its tests run one at a time.
static SWARM: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
static IMAGES: OnceCell<()> = OnceCell::const_new();

/// `torii-test/httpd:1` and `:2` on every node (images are not pulled).
async fn images(nodes: &[String]) {
    IMAGES
        .get_or_init(|| async {
            let nodes = nodes.to_vec();
            tokio::task::spawn_blocking(move || {
                for node in &nodes {
                    crate::docker::build(node, "torii-test/httpd:1", &crate::docker::httpd_dockerfile("hello from v1"));
                    crate::docker::build(node, "torii-test/httpd:2", &crate::docker::httpd_dockerfile("hello from v2"));
                    // Version 2 also says where it started: the app log shows what tasks print.
                    let talker = crate::docker::httpd_dockerfile("hello from v2")
                        .replace("CMD [\"httpd\"", "CMD [\"sh\", \"-c\", \"echo talker up on $(hostname); exec httpd \\\"$@\\\"\", \"httpd\"");
                    crate::docker::build(node, "torii-test/talker:2", &talker);
                }
            })
            .await
            .unwrap();
        })
        .await;
}

/// `docker -H manager args…`, its output lines.
fn docker(manager: &str, args: &[&str]) -> Vec<String> {
    let out = Command::new("docker").args(["-H", manager]).args(args).output().expect("docker CLI");
    assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

/// The app's services on the swarm.
fn services(manager: &str, app: &str) -> Vec<String> {
    docker(manager, &["service", "ls", "--filter", &format!("label=torii.app={app}"), "--format", "{{.Name}}"])
}

/// The nodes running tasks of `service` now.
fn task_nodes(manager: &str, service: &str) -> Vec<String> {
    docker(manager, &["service", "ps", service, "--filter", "desired-state=running", "--format", "{{.Node}} {{.CurrentState}}"])
        .into_iter()
        .filter(|l| l.contains("Running"))
        .map(|l| l.split_whitespace().next().unwrap_or_default().to_string())
        .collect()
}

impl Swarm {
    /// `.ci/swarm kill|revive DIR host`.
    fn host(&self, what: &str, host: usize) {
        let out = Command::new(&self.ctl[0]).arg(what).args(&self.ctl[1..]).arg(host.to_string()).output().expect(".ci/swarm");
        assert!(out.status.success(), ".ci/swarm {what} {host}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Waits until every node of the swarm is ready again.
    async fn all_ready(&self) {
        for _ in 0..240 {
            let ready = docker(&self.manager, &["node", "ls", "--format", "{{.Status}}"]).iter().filter(|s| *s == "Ready").count();
            if ready == self.nodes.len() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        panic!("the swarm's nodes are not all ready again: {:?}", docker(&self.manager, &["node", "ls"]));
    }
}

/// Starts a killed host again when dropped, unless [`Revive::now`] did.
struct Revive<'a> {
    swarm: &'a Swarm,
    host: usize,
    done: bool,
}

impl Revive<'_> {
    async fn now(mut self) {
        self.swarm.host("revive", self.host);
        self.done = true;
        self.swarm.all_ready().await;
    }
}

impl Drop for Revive<'_> {
    fn drop(&mut self) {
        if !self.done {
            let ctl = &self.swarm.ctl;
            let _ = Command::new(&ctl[0]).arg("revive").args(&ctl[1..]).arg(self.host.to_string()).output();
        }
    }
}

/// Removes an app's services when a test ends, passed or not (the swarm
/// outlives the test).
struct Leftovers<'a> {
    manager: &'a str,
    app: &'a str,
}

impl Drop for Leftovers<'_> {
    fn drop(&mut self) {
        let names = services(self.manager, self.app);
        if !names.is_empty() {
            let _ = Command::new("docker").args(["-H", self.manager, "service", "rm"]).args(&names).output();
        }
    }
}

fn units(info: &Value) -> Vec<Value> {
    info["units"].as_array().cloned().unwrap_or_default()
}

backends! {
    async fn swarm_apps_run_as_services_behind_the_router(b) {
        let Some(swarm) = swarm() else { return };
        let _one = SWARM.lock().await;
        swarm.all_ready().await;
        images(&swarm.nodes).await;
        // Volumes of plan "shared" live under this directory, one directory
        // each (the operator's storage: every node sees it, as NFS would).
        let storage = tempfile::tempdir().unwrap();
        let mut o = Options::new(b);
        o.extra_toml = format!(
            "[healing]\ninterval_secs = 30\nfollow_interval_secs = 2\n\
             [[volume_plan]]\nname = \"shared\"\nprovisioner = \"swarm\"\ndriver = \"local\"\n\
             [volume_plan.opt]\ntype = \"none\"\no = \"bind\"\ndevice = \"{}/{{volume}}\"\n",
            storage.path().display()
        );
        let t = TestServer::start_with(o).await;
        t.team("t1").await;
        let pool = unique("sw", b);
        t.req("POST", "/1.0/pools").admin().form(&[("name", pool.as_str()), ("provisioner", "swarm")]).send().await.expect(201, "");
        let app = unique("web", b);
        let host = format!("{app}.apps.test");
        let _leftovers = Leftovers { manager: &swarm.manager, app: &app };
        t.req("POST", "/1.0/apps").admin().form(&[("name", app.as_str()), ("teamOwner", "t1"), ("pool", pool.as_str())]).send().await.expect_status(201);
        let deploy = async |image: &str| t.req("POST", &format!("/1.0/apps/{app}/deploy")).admin().form(&[("image", image)]).send().await;

        // No cluster serves the pool yet: the deploy says what to do.
        let r = deploy("torii-test/httpd:1").await;
        assert!(r.body.contains(&format!("pool {pool:?} has no \"swarm\" cluster: add one with POST /1.3/provisioner/clusters")), "{}", r.body);
        assert!(!r.body.ends_with("\nOK\n"), "{}", r.body);
        // What the swarm provisioner cannot deploy is refused before anything runs.
        let r = t.req("POST", &format!("/1.0/apps/{app}/deploy")).admin().form(&[("dockerfile", "FROM scratch\n")]).send().await;
        assert!(r.body.contains("the swarm provisioner cannot deploy from \"dockerfile\""), "{}", r.body);

        let cluster = json!({"name": format!("c-{pool}"), "provisioner": "swarm", "addresses": [swarm.manager], "pools": [pool]});
        t.req("POST", "/1.3/provisioner/clusters").admin().raw("application/json", cluster.to_string()).send().await.expect(200, "");
        let providers = t.req("GET", "/1.7/provisioner").admin().send().await.json();
        let help = providers.as_array().unwrap().iter().find(|p| p["name"] == "swarm").map(|p| p["cluster_help"]["provisioner_help"].clone());
        assert!(help.is_some_and(|h| h.as_str().unwrap().contains("Docker Swarm")), "{providers}");

        // An image the nodes lack: refused, nothing recorded.
        let r = deploy("torii-test/absent:9").await;
        assert!(r.body.contains("image \"torii-test/absent:9\" is not on the cluster's manager"), "{}", r.body);
        assert_eq!(t.req("GET", &format!("/1.0/apps/{app}")).admin().send().await.json()["deploys"], 0);

        // An image deploy: a service, its task reached through the router.
        let r = deploy("torii-test/httpd:1").await;
        assert!(r.body.contains(&format!(" ---> Created service {app}-web-v1 [web: 1]")) && r.body.ends_with("\nOK\n"), "{}", r.body);
        assert_eq!(t.app_get(&host, "/").await, (200, "hello from v1\n".into()));
        let service = format!("{app}-web-v1");
        assert_eq!(services(&swarm.manager, &app), vec![service.clone()]);

        // Three units: Swarm spreads them over the three nodes; each is a
        // task torii lists with its node and address.
        let r = t.req("PUT", &format!("/1.0/apps/{app}/units")).admin().form(&[("units", "2"), ("process", "web")]).send().await;
        assert!(stream_errors(&r.body).is_empty() && stream_text(&r.body).contains(&format!("Scaled service {service} [web: 1 -> 3]")), "{}", r.body);
        let info = t.req("GET", &format!("/1.0/apps/{app}")).admin().send().await.json();
        let listed = units(&info);
        assert_eq!(listed.len(), 3, "{listed:?}");
        for u in &listed {
            assert_eq!((u["Status"].as_str(), u["ProcessName"].as_str(), u["Version"].as_i64()), (Some("started"), Some("web"), Some(1)), "{u}");
            assert_eq!(u["Address"]["Scheme"], "http");
        }
        let mut on = task_nodes(&swarm.manager, &service);
        on.sort();
        on.dedup();
        assert_eq!(on.len(), 3, "the tasks are spread over the three nodes: {on:?}");
        for _ in 0..12 {
            assert_eq!(t.app_get(&host, "/").await, (200, "hello from v1\n".into()));
        }

        // A worker dies with its engine: Swarm moves its task to the other
        // nodes (once it counts the node down), and torii's units and routes
        // follow within 30 s; no request fails meanwhile.
        let (victim, dead) = (3, swarm.addresses[2].clone());
        assert!(units(&info).iter().any(|u| u["HostAddr"] == dead.as_str()), "a unit runs on {dead}: {info}");
        swarm.host("kill", victim);
        // Revived however the test ends: the next test needs the three nodes.
        let revive = Revive { swarm: &swarm, host: victim, done: false };
        let since = std::time::Instant::now();
        loop {
            assert_eq!(t.app_get(&host, "/").await, (200, "hello from v1\n".into()));
            let listed = units(&t.req("GET", &format!("/1.0/apps/{app}")).admin().send().await.json());
            let routes = t.server().store.app_view(&app).await.unwrap().unwrap().routes.clone();
            let routed: Vec<&String> = routes.iter().flat_map(|r| &r.addresses).collect();
            let moved = listed.len() == 3 && listed.iter().all(|u| u["HostAddr"] != dead.as_str() && u["Status"] == "started");
            if moved && routed.len() == 3 && routed.iter().all(|a| !a.starts_with(&format!("{dead}:"))) {
                break;
            }
            assert!(since.elapsed() < std::time::Duration::from_secs(30), "units and routes still on the dead node after 30 s: {listed:?} {routed:?}");
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
        // The round records its repairs once the routes followed.
        let mut healed = String::new();
        for _ in 0..50 {
            healed = t.req("GET", "/1.3/healing").admin().send().await.body;
            if healed.contains("Swarm replaced task") {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(healed.contains("Swarm replaced task"), "the move is a healing event: {healed}");
        revive.now().await;

        // Scale to 6 and back to 2.
        let r = t.req("PUT", &format!("/1.0/apps/{app}/units")).admin().form(&[("units", "3"), ("process", "web")]).send().await;
        assert!(stream_errors(&r.body).is_empty() && stream_text(&r.body).contains("web: 3 -> 6"), "{}", r.body);
        assert_eq!(units(&t.req("GET", &format!("/1.0/apps/{app}")).admin().send().await.json()).len(), 6);
        let r = t.req("DELETE", &format!("/1.0/apps/{app}/units?units=4&process=web")).admin().send().await;
        assert!(stream_errors(&r.body).is_empty() && stream_text(&r.body).contains("web: 6 -> 2"), "{}", r.body);
        assert_eq!(units(&t.req("GET", &format!("/1.0/apps/{app}")).admin().send().await.json()).len(), 2);
        for _ in 0..8 {
            assert_eq!(t.app_get(&host, "/").await, (200, "hello from v1\n".into()));
        }

        // An env change rolls the tasks; a client looping through the
        // router meanwhile sees no failed request.
        let stop = Arc::new(AtomicBool::new(false));
        let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let client = {
            let (url, host, stop, sent, failed) = (t.router_url(), host.clone(), stop.clone(), sent.clone(), failed.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                while !stop.load(Ordering::Relaxed) {
                    let ok = match http.get(format!("{url}/")).header("host", &host).send().await {
                        Ok(r) => r.status() == 200 && r.text().await.is_ok_and(|t| t == "hello from v1\n"),
                        Err(_) => false,
                    };
                    sent.fetch_add(1, Ordering::Relaxed);
                    if !ok {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        };
        let before: Vec<String> = units(&t.req("GET", &format!("/1.0/apps/{app}")).admin().send().await.json()).iter().map(|u| u["ID"].to_string()).collect();
        let r = t.req("POST", &format!("/1.0/apps/{app}/env")).admin().json(json!({"envs": [{"name": "GREETING", "value": "hi"}]})).send().await;
        assert!(stream_errors(&r.body).is_empty() && stream_text(&r.body).contains(&format!("Rolling service {service} onto its new spec")), "{}", r.body);
        // The old tasks drain after the roll: keep the client on until they are gone.
        tokio::time::sleep(std::time::Duration::from_secs(12)).await;
        stop.store(true, Ordering::Relaxed);
        client.await.unwrap();
        let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
        assert!(sent > 50, "the client looped through the roll: {sent} requests");
        assert_eq!(failed, 0, "{failed} of {sent} requests failed during the roll");
        let after = units(&t.req("GET", &format!("/1.0/apps/{app}")).admin().send().await.json());
        assert_eq!(after.len(), 2);
        assert!(after.iter().all(|u| !before.contains(&u["ID"].to_string())), "every task was replaced: {before:?} {after:?}");
        let env = docker(&swarm.manager, &["service", "inspect", &service, "--format", "{{json .Spec.TaskTemplate.ContainerSpec.Env}}"]).join("");
        assert!(env.contains("\"GREETING=hi\"") && env.contains("\"PORT=8888\""), "{env}");

        // A second version, then a rollback: each version is a service of its own.
        let r = deploy("torii-test/talker:2").await;
        assert!(r.body.ends_with("\nOK\n") && r.body.contains(&format!("Removed service {service}")), "{}", r.body);
        assert_eq!(t.app_get(&host, "/").await, (200, "hello from v2\n".into()));
        assert_eq!(services(&swarm.manager, &app), vec![format!("{app}-web-v2")]);
        // What its tasks printed is in the app log, each line under its task.
        let mut logged = Value::Null;
        for _ in 0..50 {
            logged = t.req("GET", &format!("/1.0/apps/{app}/log?lines=100")).admin().send().await.json();
            if logged.as_array().is_some_and(|l| l.iter().filter(|e| e["Message"].as_str().is_some_and(|m| m.starts_with("talker up on "))).count() >= 2) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let talked: Vec<&Value> = logged.as_array().unwrap().iter().filter(|e| e["Message"].as_str().is_some_and(|m| m.starts_with("talker up on "))).collect();
        assert_eq!(talked.len(), 2, "each of the 2 tasks logged its start: {logged}");
        assert!(talked.iter().all(|e| e["Unit"].as_str().is_some_and(|u| u.len() == 25)), "under its task's id: {talked:?}");
        assert!(!logged.to_string().contains("Terminated"), "the drain shell says nothing: {logged}");
        let r = t.req("POST", &format!("/1.0/apps/{app}/deploy/rollback")).admin().form(&[("image", "v1")]).send().await;
        assert!(stream_errors(&r.body).is_empty() && stream_text(&r.body).contains(&format!("Removed service {app}-web-v2")), "{}", r.body);
        assert_eq!(t.app_get(&host, "/").await, (200, "hello from v1\n".into()));
        assert_eq!(services(&swarm.manager, &app), vec![service.clone()]);

        // A volume bound to the app: its tasks mount it (the app restarts),
        // and what a unit wrote there is still served after every task was
        // replaced.
        let volume = format!("v{app}");
        std::fs::create_dir(storage.path().join(&volume)).unwrap();
        t.req("POST", "/1.4/volumes").admin()
            .form(&[("Name", volume.as_str()), ("Pool", pool.as_str()), ("TeamOwner", "t1"), ("Plan.Name", "shared")])
            .send().await.expect(201, "");
        let r = t.req("POST", &format!("/1.4/volumes/{volume}/bind")).admin().form(&[("App", app.as_str()), ("MountPoint", "/www/data")]).send().await;
        assert!(stream_errors(&r.body).is_empty() && stream_text(&r.body).contains(&format!("Rolling service {service} onto its new spec")), "{}", r.body);
        let mounts = docker(&swarm.manager, &["service", "inspect", &service, "--format", "{{json .Spec.TaskTemplate.ContainerSpec.Mounts}}"]).join("");
        assert!(mounts.contains(&format!("\"Source\":\"torii-vol-{volume}\"")) && mounts.contains("\"Target\":\"/www/data\""), "{mounts}");
        // A unit writes into it (through its container on its node).
        let (node, task) = {
            let line = docker(&swarm.manager, &["service", "ps", &service, "--no-trunc", "--filter", "desired-state=running", "--format", "{{.Node}} {{.ID}}"]).remove(0);
            let (node, task) = line.split_once(' ').unwrap();
            (node.to_string(), task.to_string())
        };
        let engine = &swarm.nodes[node.trim_start_matches("swarm-").parse::<usize>().unwrap() - 1];
        let container = docker(engine, &["ps", "-q", "--filter", &format!("label=com.docker.swarm.task.id={task}")]).remove(0);
        docker(engine, &["exec", &container, "sh", "-c", "echo kept > /www/data/note"]);
        assert_eq!(t.app_get(&host, "/data/note").await, (200, "kept\n".into()));
        let r = t.req("POST", &format!("/1.0/apps/{app}/env")).admin().json(json!({"envs": [{"name": "GREETING", "value": "hello"}]})).send().await;
        assert!(stream_errors(&r.body).is_empty(), "{}", r.body);
        for _ in 0..6 {
            assert_eq!(t.app_get(&host, "/data/note").await, (200, "kept\n".into()));
        }
        let info = t.req("GET", &format!("/1.0/apps/{app}")).admin().send().await.json();
        assert_eq!(info["volumeBinds"], json!([{"ID": {"App": app, "MountPoint": "/www/data", "Volume": volume}, "ReadOnly": false}]));
        // Bound, it cannot go; unbound (without a restart), it can.
        t.req("DELETE", &format!("/1.4/volumes/{volume}")).admin().send().await.expect_error(500, "cannot delete volume with existing binds");

        // `app run`: a one-off task like the units (env, volumes), gone afterwards.
        let ran = t.req("POST", &format!("/1.0/apps/{app}/run")).admin().form(&[("command", "echo ran-$GREETING-$PORT; cat /www/data/note"), ("once", "true")]).send().await;
        assert_eq!(ran.status, 200, "{}", ran.body);
        assert!(ran.body.contains("ran-hello-8888") && ran.body.contains("kept"), "{}", ran.body);
        let ran = t.req("POST", &format!("/1.0/apps/{app}/run")).admin().form(&[("command", "echo before; exit 3")]).send().await;
        assert!(ran.status == 400 && ran.body.contains("before") && ran.body.contains("the command failed in a one-off task"), "{} {}", ran.status, ran.body);
        assert_eq!(docker(&swarm.manager, &["service", "ls", "-q", "--filter", &format!("label=torii.run={app}")]), Vec::<String>::new());

        // Stop and start: the service keeps its spec at no tasks, then runs them again.
        let r = t.req("POST", &format!("/1.0/apps/{app}/stop")).admin().send().await;
        assert!(stream_errors(&r.body).is_empty(), "{}", r.body);
        assert_eq!(units(&t.req("GET", &format!("/1.0/apps/{app}")).admin().send().await.json()), Vec::<Value>::new());
        assert_eq!(services(&swarm.manager, &app), vec![service.clone()]);
        let r = t.req("POST", &format!("/1.0/apps/{app}/start")).admin().send().await;
        assert!(stream_errors(&r.body).is_empty(), "{}", r.body);
        assert_eq!(units(&t.req("GET", &format!("/1.0/apps/{app}")).admin().send().await.json()).len(), 2);
        assert_eq!(t.app_get(&host, "/data/note").await, (200, "kept\n".into()));

        // Removal leaves no service, and no bind: the volume can go.
        t.req("DELETE", &format!("/1.0/apps/{app}")).admin().send().await.expect_status(200);
        assert_eq!(services(&swarm.manager, &app), Vec::<String>::new());
        t.req("DELETE", &format!("/1.4/volumes/{volume}")).admin().send().await.expect(200, "");
        t.stop().await;
    }
}
