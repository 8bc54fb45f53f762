//! API and plugin-call benchmark. One run, printed; run with `cargo bench --bench api`.
//!
//! Starts the release `torii` binary on SQLite, then drives it over loopback
//! with 32 keep-alive HTTP/1.1 connections:
//! - `GET /healthcheck` (no auth): the baseline;
//! - `GET /1.0/users/info` with a session token: the cost of authentication;
//! - `GET /1.0/apps/{app}` (app info) with a session token;
//! and prints requests/s, p50 and p99 for each and their ratio. Then it
//! creates 10,000 apps through the API and times `GET /1.0/apps` (the full
//! list, one request at a time). Last, in process, the median cost of a
//! trivial call into a plugin (`health` on the built-in native auth scheme),
//! against a bare async call as the baseline.

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CONNECTIONS: usize = 32;
const WARMUP: Duration = Duration::from_secs(1);
const MEASURE: Duration = Duration::from_secs(5);

struct Load {
    requests: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Load {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
    fn percentile(&self, p: f64) -> Duration {
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[i]
    }
}

async fn connection(addr: std::net::SocketAddr, path: String, token: Option<String>, until: Instant, record_from: Instant) -> (usize, Vec<Duration>) {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(conn);
    let mut latencies = Vec::with_capacity(200_000);
    let mut count = 0;
    loop {
        let now = Instant::now();
        if now >= until {
            break;
        }
        let mut req = Request::get(path.as_str()).header("host", "bench");
        if let Some(t) = &token {
            req = req.header("authorization", format!("bearer {t}"));
        }
        let req = req.body(Empty::<Bytes>::new()).unwrap();
        let start = Instant::now();
        let res = sender.send_request(req).await.expect("response");
        assert_eq!(res.status(), StatusCode::OK);
        res.into_body().collect().await.expect("body");
        if start >= record_from {
            latencies.push(start.elapsed());
            count += 1;
        }
    }
    (count, latencies)
}

async fn load(addr: std::net::SocketAddr, path: &str, token: Option<&str>) -> Load {
    let start = Instant::now();
    let record_from = start + WARMUP;
    let until = record_from + MEASURE;
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|_| tokio::spawn(connection(addr, path.to_string(), token.map(str::to_string), until, record_from)))
        .collect();
    let mut requests = 0;
    let mut latencies = Vec::new();
    for t in tasks {
        let (n, l) = t.await.unwrap();
        requests += n;
        latencies.extend(l);
    }
    latencies.sort();
    Load { requests, elapsed: MEASURE, latencies }
}

fn micros(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

#[tokio::main]
async fn main() {
    let dir = tempfile::TempDir::new().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = dir.path().join("torii.toml");
    std::fs::write(&config, format!("data_dir = {:?}\n[api]\nlisten = \"127.0.0.1:{port}\"\n[router]\nlisten = \"127.0.0.1:0\"\n", dir.path().join("data"))).unwrap();
    let bin = env!("CARGO_BIN_EXE_torii");

    let mut create = Command::new(bin)
        .args(["root-user-create", "bench@example.com", "--config"])
        .arg(&config)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    create.stdin.take().unwrap().write_all(b"bench-secret\n").unwrap();
    assert!(create.wait().unwrap().success());
    let mut server = Command::new(bin)
        .args(["serve", "--config"])
        .arg(&config)
        .env("TORII_LOG", "warn")
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let client = reqwest::Client::new();
    let base = format!("http://{addr}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.get(format!("{base}/healthcheck")).send().await.is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let login: serde_json::Value = client
        .post(format!("{base}/1.0/auth/login"))
        .form(&[("email", "bench@example.com"), ("password", "bench-secret")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["token"].as_str().unwrap().to_string();

    println!("torii API benchmark: {CONNECTIONS} connections, {}s per endpoint after {}s warm-up, SQLite, release build", MEASURE.as_secs(), WARMUP.as_secs());
    let health = load(addr, "/healthcheck", None).await;
    let info = load(addr, "/1.0/users/info", Some(&token)).await;
    println!("{:<28} {:>12} {:>10} {:>10}", "endpoint", "req/s", "p50", "p99");
    for (name, l) in [("GET /healthcheck", &health), ("GET /1.0/users/info (auth)", &info)] {
        println!("{:<28} {:>12.0} {:>10} {:>10}", name, l.rps(), micros(l.percentile(0.5)), micros(l.percentile(0.99)));
    }
    println!("auth'd reads / healthcheck throughput: {:.2} (target ≥ 0.50)", info.rps() / health.rps());

    let api = Api { client: client.clone(), base: base.clone(), token: token.clone() };
    api.post("/1.0/teams", &[("name", "bench")]).await;
    api.post("/1.0/pools", &[("name", "bench"), ("default", "true")]).await;
    api.post("/1.0/apps", &[("name", "bench-app"), ("teamOwner", "bench")]).await;
    let app = load(addr, "/1.0/apps/bench-app", Some(&token)).await;
    println!(
        "{:<28} {:>12.0} {:>10} {:>10}   (target p99 < 2 ms)",
        "GET /1.0/apps/{app}",
        app.rps(),
        micros(app.percentile(0.5)),
        micros(app.percentile(0.99))
    );
    println!("app info / healthcheck throughput: {:.2}", app.rps() / health.rps());

    const APPS: usize = 10_000;
    let started = Instant::now();
    let creators: Vec<_> = (0..8)
        .map(|w| {
            let api = api.clone();
            tokio::spawn(async move {
                for i in (w..APPS - 1).step_by(8) {
                    api.post("/1.0/apps", &[("name", &format!("app-{i:05}")), ("teamOwner", "bench")]).await;
                }
            })
        })
        .collect();
    for c in creators {
        c.await.unwrap();
    }
    println!("created {} more apps through the API in {:.1} s", APPS - 1, started.elapsed().as_secs_f64());
    let mut list = Vec::new();
    for round in 0..23 {
        let start = Instant::now();
        let res = client.get(format!("{base}/1.0/apps")).bearer_auth(&token).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let body = res.bytes().await.unwrap();
        // The whole body is here: the client's own JSON parsing is not timed.
        let elapsed = start.elapsed();
        let apps: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
        assert_eq!(apps.len(), APPS);
        if round >= 3 {
            list.push(elapsed);
        }
    }
    list.sort();
    println!(
        "GET /1.0/apps with {APPS} apps: p50 {:.1} ms, max {:.1} ms over {} requests (target < 50 ms)",
        list[list.len() / 2].as_secs_f64() * 1e3,
        list[list.len() - 1].as_secs_f64() * 1e3,
        list.len()
    );
    Command::new("kill").args(["-TERM", &server.id().to_string()]).status().unwrap();
    server.wait().unwrap();

    plugin_call(dir.path()).await;
}

#[derive(Clone)]
struct Api {
    client: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    async fn post(&self, path: &str, form: &[(&str, &str)]) {
        let res = self.client.post(format!("{}{path}", self.base)).bearer_auth(&self.token).form(form).send().await.unwrap();
        let status = res.status();
        assert!(status.is_success(), "POST {path}: {status} {}", res.text().await.unwrap_or_default());
        res.bytes().await.unwrap();
    }
}

/// Median of a trivial call into the native auth plugin, against a bare async call.
async fn plugin_call(dir: &std::path::Path) {
    let toml = format!("data_dir = {:?}\n", dir.join("plugin-data"));
    let server = torii::server::Server::build(torii::config::Config::parse(&toml).unwrap()).await.unwrap();
    const N: usize = 20_000;
    for _ in 0..1000 {
        server.scheme.health().await.unwrap().unwrap();
    }
    let mut plugin = Vec::with_capacity(N);
    for _ in 0..N {
        let start = Instant::now();
        server.scheme.health().await.unwrap().unwrap();
        plugin.push(start.elapsed());
    }
    let mut baseline = Vec::with_capacity(N);
    for _ in 0..N {
        let start = Instant::now();
        std::hint::black_box(noop().await);
        baseline.push(start.elapsed());
    }
    plugin.sort();
    baseline.sort();
    let median = |v: &[Duration]| v[v.len() / 2].as_secs_f64() * 1e6;
    println!(
        "plugin call (native `health`): median {:.2} µs, p99 {:.2} µs; bare async call {:.3} µs (target < 10 µs)",
        median(&plugin),
        plugin[N * 99 / 100].as_secs_f64() * 1e6,
        median(&baseline)
    );
    server.store.close().await;
}

#[inline(never)]
async fn noop() -> u32 {
    std::hint::black_box(1)
}
