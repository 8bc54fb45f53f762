//! Swarm apps benchmark. One run, printed; run with
//! `cargo bench --bench swarm` while a swarm runs (`.ci/swarm start DIR`, as
//! root, and export what it prints; skipped with a note otherwise).
//!
//! Side by side in the same run, on the same swarm and image (this
//! machine's nginx, answering a fixed "hello" from one worker, imported on
//! every node; Debian's nginx-light, `NGINX` may name the binary):
//! - a deploy of 3 units through the API (a new service, its 3 tasks running
//!   and answering HTTP, routed, the old version's service removed) against
//!   `docker service create --detach --replicas 3` of the image with its
//!   port published in host mode, then polled until the 3 tasks run (the
//!   CLI's own wait adds a stability window of seconds; this does not);
//! - requests/s through torii's router to one unit (a task on a swarm node)
//!   against an nginx proxy (2 workers, keep-alive upstream) to the same
//!   unit.

mod common;

use common::{CONNECTIONS, MEASURE, Target, Torii, WARMUP, docker, nginx_binary, nginx_proxy, row, wait_answering};
use reqwest::Method;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const IMAGE: &str = "torii-bench/nginx:1";

/// An image of this machine's nginx (its binary and the libraries it
/// links, busybox as `/bin/sh`) answering "hello" on port 8888 from one
/// worker: a backend faster than either proxy, so the ratio measures them.
fn nginx_image(node: &str, nginx: &str) {
    let which = |name: &str| String::from_utf8_lossy(&Command::new("sh").args(["-c", &format!("command -v {name}")]).output().unwrap().stdout).trim().to_string();
    let nginx = &if nginx.starts_with('/') { nginx.to_string() } else { which(nginx) };
    let root = tempfile::TempDir::new().unwrap();
    let r = root.path();
    let copy = |from: &str| {
        let to = r.join(from.trim_start_matches('/'));
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, &to).unwrap_or_else(|e| panic!("copy {from}: {e}"));
    };
    copy(nginx);
    let ldd = Command::new("ldd").arg(nginx).output().expect("ldd");
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let path = line.split("=>").last().unwrap_or("").split_whitespace().next().unwrap_or("");
        if path.starts_with('/') {
            copy(path);
        }
    }
    let busybox = which("busybox");
    assert!(!busybox.is_empty(), "busybox (busybox-static) is needed for the image's /bin/sh");
    std::fs::create_dir_all(r.join("bin")).unwrap();
    std::fs::copy(&busybox, r.join("bin/sh")).unwrap();
    for dir in ["tmp", "etc", "var/log/nginx", "var/lib/nginx"] {
        std::fs::create_dir_all(r.join(dir)).unwrap();
    }
    std::fs::write(r.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(r.join("etc/group"), "root:x:0:\n").unwrap();
    std::fs::write(
        r.join("etc/nginx.conf"),
        "daemon off;\nworker_processes 1;\nuser root;\npid /tmp/nginx.pid;\nerror_log stderr;\nevents { worker_connections 1024; }\n\
         http {\n  access_log off;\n  keepalive_requests 10000000;\n  keepalive_timeout 300s;\n  client_body_temp_path /tmp;\n  proxy_temp_path /tmp;\n  fastcgi_temp_path /tmp;\n  uwsgi_temp_path /tmp;\n  scgi_temp_path /tmp;\n\
         server { listen 8888; location / { return 200 \"hello from nginx\\n\"; } }\n}\n",
    )
    .unwrap();
    let script = format!(
        "tar -C {} -c . | docker -H {node} import -c 'CMD [\"{nginx}\", \"-c\", \"/etc/nginx.conf\"]' -c 'EXPOSE 8888' - {IMAGE} >/dev/null",
        r.display()
    );
    let status = Command::new("sh").args(["-c", &script]).stdout(Stdio::null()).status().unwrap();
    assert!(status.success(), "docker import of the nginx image on {node}");
}

/// Waits until `service` runs `n` tasks.
fn wait_running(manager: &str, service: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let states = docker(manager, &["service", "ps", service, "--filter", "desired-state=running", "--format", "{{.CurrentState}}"]);
        if states.lines().filter(|l| l.starts_with("Running")).count() == n {
            return;
        }
        assert!(Instant::now() < deadline, "{service} does not run {n} tasks: {states}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::main]
async fn main() {
    let (Some(manager), Some(nodes)) = (
        std::env::var("TORII_TEST_SWARM_MANAGER").ok().filter(|m| !m.is_empty()),
        std::env::var("TORII_TEST_SWARM_NODES").ok().filter(|n| !n.is_empty()),
    ) else {
        println!("swarm benchmark skipped: no swarm (start one with `.ci/swarm start DIR` as root and export what it prints)");
        return;
    };
    let Some(nginx) = nginx_binary() else {
        println!("swarm benchmark skipped: nginx is not installed (apt-get install nginx-light): the units and the baseline proxy are nginx");
        return;
    };
    for node in nodes.split(',') {
        nginx_image(node, &nginx);
    }
    let dir = tempfile::TempDir::new().unwrap();
    let torii = Torii::start(dir.path(), "[healing]\ninterval_secs = 0\n").await;
    torii.post("/1.0/teams", &[("name", "bench")]).await;
    torii.post("/1.0/pools", &[("name", "big"), ("provisioner", "swarm")]).await;
    let cluster = serde_json::json!({"name": "bench", "provisioner": "swarm", "addresses": [manager], "pools": ["big"]});
    let r = torii.client.post(format!("{}/1.3/provisioner/clusters", torii.base)).bearer_auth(&torii.token).json(&cluster).send().await.unwrap();
    assert!(r.status().is_success(), "cluster add: {}", r.text().await.unwrap_or_default());
    let app = format!("bench-{}", std::process::id());
    torii.post("/1.0/apps", &[("name", app.as_str()), ("teamOwner", "bench"), ("pool", "big")]).await;
    let out = torii.post(&format!("/1.0/apps/{app}/deploy"), &[("image", IMAGE)]).await;
    assert!(out.ends_with("\nOK\n"), "{out}");
    torii.send(Method::PUT, &format!("/1.0/apps/{app}/units"), &[("units", "2"), ("process", "web")]).await;

    // A deploy of 3 units (version 2, a service of its own) vs `docker service create --replicas 3`.
    let start = Instant::now();
    let out = torii.post(&format!("/1.0/apps/{app}/deploy"), &[("image", IMAGE)]).await;
    let deploy_api = start.elapsed();
    assert!(out.ends_with("\nOK\n") && out.contains("3 units running"), "{out}");
    let service = format!("bench-cli-{}", std::process::id());
    let start = Instant::now();
    docker(&manager, &["service", "create", "-q", "--detach", "--name", &service, "--replicas", "3", "--publish", "mode=host,target=8888", IMAGE]);
    wait_running(&manager, &service, 3);
    let service_create = start.elapsed();
    docker(&manager, &["service", "rm", &service]);

    // One unit: through torii's router, and through nginx to the same unit.
    torii.send(Method::DELETE, &format!("/1.0/apps/{app}/units?units=2&process=web"), &[]).await;
    let info: serde_json::Value = serde_json::from_str(&torii.send(Method::GET, &format!("/1.0/apps/{app}"), &[]).await).unwrap();
    let units = info["units"].as_array().unwrap();
    assert_eq!(units.len(), 1, "{units:?}");
    let unit = units[0]["Address"]["Host"].as_str().unwrap().to_string();
    let host = format!("{app}.apps.bench");
    wait_answering(torii.router, &host).await;
    let router = common::load(&Target { addr: torii.router, path: "/".into(), host: host.clone(), token: None }).await;
    let n = nginx_proxy(&nginx, &unit);
    let addr = n.addr();
    wait_answering(addr, &host).await;
    let proxied = common::load(&Target { addr, path: "/".into(), host: host.clone(), token: None }).await;
    drop(n);

    println!();
    println!("swarm apps: {CONNECTIONS} connections, {WARMUP:?} warm-up, {MEASURE:?} measured; manager {manager}");
    println!("{:<40} {:>10}", "deploy of 3 units through the API", format!("{:.0} ms", deploy_api.as_secs_f64() * 1e3));
    println!("{:<40} {:>10}", "`docker service create`, 3 running", format!("{:.0} ms", service_create.as_secs_f64() * 1e3));
    println!("{:<40} {:>10.2}x", "deploy / service create", deploy_api.as_secs_f64() / service_create.as_secs_f64());
    println!();
    println!("{:<40} {:>10} {:>10} {:>10}", format!("one nginx unit at {unit}"), "req/s", "p50", "p99");
    row("torii router -> unit", &router);
    row("nginx proxy -> unit", &proxied);
    println!("{:<40} {:>10.2}x", "router / nginx", router.rps() / proxied.rps());
    torii.send(Method::DELETE, &format!("/1.0/apps/{app}"), &[]).await;
}
