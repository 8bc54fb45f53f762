//! Container apps benchmark. One run, printed; run with
//! `cargo bench --bench docker` while a Docker engine runs (the first of
//! `TORII_TEST_DOCKER_NODES`, as `.ci/docker-engines start` prints; skipped
//! with a note otherwise).
//!
//! Side by side in the same run, on the same engine and image (busybox httpd
//! built from `torii/busybox:latest`):
//! - adding 10 units through the API (each started and answering on its
//!   127.0.0.1 port) against ten `docker run -d -p 127.0.0.1::8888` of the
//!   image (started, not waited for);
//! - requests/s through torii's router to one unit against nginx (Debian,
//!   `NGINX` may name the binary; skipped with a note when missing)
//!   proxying to the same unit (busybox httpd closes each connection, so
//!   both proxies open one to the unit per request).

mod common;

use common::{CONNECTIONS, MEASURE, Target, Torii, WARMUP, docker, nginx_binary, nginx_proxy, row, wait_answering};
use reqwest::Method;
use std::process::{Command, Stdio};
use std::time::Instant;

const IMAGE: &str = "torii-bench/httpd:1";

fn build_image(node: &str) {
    use std::io::Write;
    let base = std::env::var("TORII_TEST_DOCKER_IMAGE").unwrap_or_else(|_| "torii/busybox:latest".into());
    let dockerfile = format!(
        "FROM {base}\nRUN mkdir -p /www && echo 'hello from busybox' > /www/index.html\nEXPOSE 8888\nCMD [\"httpd\", \"-f\", \"-p\", \"8888\", \"-h\", \"/www\"]\n"
    );
    let mut child = Command::new("docker")
        .args(["-H", node, "build", "-q", "-t", IMAGE, "-"])
        .env("DOCKER_BUILDKIT", "0")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(dockerfile.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success(), "docker build");
}

#[tokio::main]
async fn main() {
    let Some(node) = std::env::var("TORII_TEST_DOCKER_NODES").ok().and_then(|v| v.split(',').next().map(str::to_string)).filter(|n| !n.is_empty())
    else {
        println!("docker benchmark skipped: no Docker engine (start one with `.ci/docker-engines start DIR` and export what it prints)");
        return;
    };
    build_image(&node);
    let dir = tempfile::TempDir::new().unwrap();
    let torii = Torii::start(dir.path(), "[healing]\ninterval_secs = 0\n").await;
    torii.post("/1.0/teams", &[("name", "bench")]).await;
    torii.post("/1.0/pools", &[("name", "boxes"), ("provisioner", "docker")]).await;
    let added = torii.post("/1.2/node", &[("Register", "true"), ("Metadata.address", node.as_str()), ("Metadata.pool", "boxes")]).await;
    assert!(!added.contains("\"Error\":\"") || added.contains("\"Error\":\"\""), "{added}");
    let app = format!("bench-{}", std::process::id());
    torii.post("/1.0/apps", &[("name", app.as_str()), ("teamOwner", "bench"), ("pool", "boxes")]).await;
    let out = torii.post(&format!("/1.0/apps/{app}/deploy"), &[("image", IMAGE)]).await;
    assert!(out.ends_with("\nOK\n"), "{out}");

    // Ten units through the API (started and answering) vs ten `docker run -d`.
    let start = Instant::now();
    let body = torii.send(Method::PUT, &format!("/1.0/apps/{app}/units"), &[("units", "10"), ("process", "web")]).await;
    let units_api = start.elapsed();
    assert!(body.contains("Starting 10 new units") && !body.contains("\"Error\":\"u"), "{body}");
    let start = Instant::now();
    let mut ids = Vec::new();
    for _ in 0..10 {
        ids.push(docker(&node, &["run", "-d", "-p", "127.0.0.1::8888", "--label", "torii-bench=1", IMAGE]));
    }
    let docker_run = start.elapsed();
    let mut rm = vec!["rm", "-f"];
    rm.extend(ids.iter().map(String::as_str));
    docker(&node, &rm);
    torii.send(Method::DELETE, &format!("/1.0/apps/{app}/units?units=10&process=web"), &[]).await;

    // One unit: through torii's router, and through nginx to the same unit.
    let info: serde_json::Value = serde_json::from_str(&torii.send(Method::GET, &format!("/1.0/apps/{app}"), &[]).await).unwrap();
    let units = info["units"].as_array().unwrap();
    assert_eq!(units.len(), 1, "{units:?}");
    let unit = units[0]["Address"]["Host"].as_str().unwrap().to_string();
    let host = format!("{app}.apps.bench");
    wait_answering(torii.router, &host).await;
    let router = common::load(&Target { addr: torii.router, path: "/".into(), host: host.clone(), token: None }).await;
    let nginx = match nginx_binary() {
        Some(bin) => {
            let n = nginx_proxy(&bin, &unit);
            let addr: std::net::SocketAddr = format!("127.0.0.1:{}", n.port).parse().unwrap();
            wait_answering(addr, &host).await;
            let l = common::load(&Target { addr, path: "/".into(), host: host.clone(), token: None }).await;
            drop(n);
            Some(l)
        }
        None => None,
    };

    println!();
    println!("container apps: {CONNECTIONS} connections, {WARMUP:?} warm-up, {MEASURE:?} measured; engine {node}");
    println!("{:<40} {:>10}", "add 10 units through the API", format!("{:.0} ms", units_api.as_secs_f64() * 1e3));
    println!("{:<40} {:>10}", "ten `docker run -d` (CLI)", format!("{:.0} ms", docker_run.as_secs_f64() * 1e3));
    println!("{:<40} {:>10.2}x   (target <= 1.2x)", "units / docker run", units_api.as_secs_f64() / docker_run.as_secs_f64());
    println!();
    println!("{:<40} {:>10} {:>10} {:>10}", "one busybox unit", "req/s", "p50", "p99");
    row("torii router -> unit", &router);
    match &nginx {
        Some(n) => {
            row("nginx -> unit", n);
            println!("{:<40} {:>10.2}x   (target >= 0.9x)", "router / nginx", router.rps() / n.rps());
        }
        None => println!("nginx -> unit: skipped (nginx not installed; apt-get install nginx-light)"),
    }
    // Removing the app takes its containers away; the stream ends when they are gone.
    torii.send(Method::DELETE, &format!("/1.0/apps/{app}"), &[]).await;
}
