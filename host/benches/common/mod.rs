//! Shared by the bench binaries: a keep-alive HTTP/1.1 load generator and a
//! release `torii` started on SQLite with a logged-in root user.

#![allow(dead_code)]

pub mod versus_nginx;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const CONNECTIONS: usize = 32;
pub const WARMUP: Duration = Duration::from_secs(1);
pub const MEASURE: Duration = Duration::from_secs(5);

pub struct Load {
    pub requests: usize,
    pub elapsed: Duration,
    pub latencies: Vec<Duration>,
    /// CPU time (user + system) the server process spent over the measured
    /// window, when its pid was given.
    pub server_cpu: Option<Duration>,
}

impl Load {
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
    /// The server's CPU time per measured request.
    pub fn cpu_per_request(&self) -> Option<Duration> {
        self.server_cpu.map(|cpu| cpu / self.requests.max(1) as u32)
    }
    pub fn percentile(&self, p: f64) -> Duration {
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[i]
    }
}

pub fn micros(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

/// What each request carries.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub path: String,
    pub host: String,
    pub token: Option<String>,
}

async fn connection(target: Target, until: Instant, record_from: Instant) -> (usize, Vec<Duration>) {
    let stream = tokio::net::TcpStream::connect(target.addr).await.expect("connect");
    stream.set_nodelay(true).unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(conn);
    let mut latencies = Vec::with_capacity(200_000);
    let mut count = 0;
    loop {
        if Instant::now() >= until {
            break;
        }
        let mut req = Request::get(target.path.as_str()).header("host", target.host.as_str());
        if let Some(t) = &target.token {
            req = req.header("authorization", format!("bearer {t}"));
        }
        let req = req.body(Empty::<Bytes>::new()).unwrap();
        let start = Instant::now();
        let res = sender.send_request(req).await.expect("response");
        assert_eq!(res.status(), StatusCode::OK, "GET {} (host {})", target.path, target.host);
        res.into_body().collect().await.expect("body");
        if start >= record_from {
            latencies.push(start.elapsed());
            count += 1;
        }
    }
    (count, latencies)
}

/// `CONNECTIONS` keep-alive connections for `WARMUP` + `MEASURE`.
pub async fn load(target: &Target) -> Load {
    load_measuring(target, None).await
}

/// CPU time (user + system) process `pid` has used so far.
pub fn process_cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the server's /proc stat");
    // Fields after the command name (which may hold spaces): state is the 3rd
    // field, utime and stime the 14th and 15th, in clock ticks.
    let after = &stat[stat.rfind(')').expect("stat names the command") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let per_second = Command::new("getconf").arg("CLK_TCK").output().ok().and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<u64>().ok()).unwrap_or(100);
    Duration::from_nanos(ticks * 1_000_000_000 / per_second)
}

/// [`load`], also measuring the CPU time server process `pid` spends over
/// the measured window.
pub async fn load_measuring(target: &Target, pid: Option<u32>) -> Load {
    load_connections(target, pid, CONNECTIONS).await
}

/// [`load_measuring`] over `connections` keep-alive connections.
pub async fn load_connections(target: &Target, pid: Option<u32>, connections: usize) -> Load {
    let start = Instant::now();
    let record_from = start + WARMUP;
    let until = record_from + MEASURE;
    let tasks: Vec<_> = (0..connections).map(|_| tokio::spawn(connection(target.clone(), until, record_from))).collect();
    let cpu_from = match pid {
        Some(pid) => {
            tokio::time::sleep_until(record_from.into()).await;
            Some((pid, process_cpu(pid)))
        }
        None => None,
    };
    let mut requests = 0;
    let mut latencies = Vec::new();
    for t in tasks {
        let (n, l) = t.await.unwrap();
        requests += n;
        latencies.extend(l);
    }
    let server_cpu = cpu_from.map(|(pid, from)| process_cpu(pid).saturating_sub(from));
    latencies.sort();
    Load { requests, elapsed: MEASURE, latencies, server_cpu }
}

/// How many threads the load generator runs on, in a runtime of its own:
/// the settings [`load_on`] tries. A heavy server leaves the generator
/// waiting; on two cores a second generator thread then mostly adds wake-ups
/// that take CPU from the server, while a light server needs both threads
/// to be driven to its peak.
pub const GENERATOR_THREADS: [usize; 2] = [1, 2];

/// [`load_measuring`] with the generator on `threads` threads of its own
/// runtime, apart from the bench's runtime (and any server it hosts).
pub async fn load_on(target: &Target, pid: Option<u32>, threads: usize) -> Load {
    load_on_with(target, pid, threads, CONNECTIONS).await
}

/// [`load_on`] over `connections` keep-alive connections.
pub async fn load_on_with(target: &Target, pid: Option<u32>, threads: usize, connections: usize) -> Load {
    let target = target.clone();
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(format!("load-{threads}"))
        .spawn(move || {
            let runtime = match threads {
                1 => tokio::runtime::Builder::new_current_thread().enable_all().build(),
                n => tokio::runtime::Builder::new_multi_thread().worker_threads(n).enable_all().build(),
            };
            let _ = done.send(runtime.expect("load generator runtime").block_on(load_connections(&target, pid, connections)));
        })
        .expect("load generator thread");
    result.await.expect("the load generator ended without a result")
}

/// A deploy's multipart body with `file` as app.wasm, and its content type.
pub fn multipart(file: &[u8]) -> (String, Vec<u8>) {
    let mut body = b"--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"app.wasm\"\r\n\r\n".to_vec();
    body.extend_from_slice(file);
    body.extend_from_slice(b"\r\n--B--\r\n");
    ("multipart/form-data; boundary=B".into(), body)
}

/// Deploys `bytes` (a component) to `app` as the root user; panics unless
/// the deploy ends OK.
pub async fn deploy(t: &Torii, app: &str, bytes: &[u8]) {
    let (ct, body) = multipart(bytes);
    let res = t
        .client
        .post(format!("{}/1.0/apps/{app}/deploy", t.base))
        .bearer_auth(&t.token)
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .unwrap();
    let text = res.text().await.unwrap();
    assert!(text.ends_with("\nOK\n"), "deploy {app}: {text}");
}

/// An nginx on a free loopback port, run from the nginx.conf that `conf`
/// writes for that port and a directory of its own (pid, logs, temp
/// files); stopped on drop.
pub struct Nginx {
    pub child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Nginx {
    pub fn start(bin: &str, conf: impl FnOnce(u16, &str) -> String) -> Nginx {
        let dir = tempfile::TempDir::new().unwrap();
        let port = free_port();
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, conf(port, &dir.path().display().to_string())).unwrap();
        let child = Command::new(bin).arg("-c").arg(&path).arg("-p").arg(dir.path()).stderr(Stdio::null()).spawn().unwrap();
        Nginx { child, port, _dir: dir }
    }

    pub fn addr(&self) -> SocketAddr {
        format!("127.0.0.1:{}", self.port).parse().unwrap()
    }

    /// Its first worker's pid (nginx's master forks them).
    pub fn worker(&self) -> u32 {
        let pid = self.child.id();
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        children.split_whitespace().next().and_then(|p| p.parse().ok()).expect("nginx has a worker")
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

/// nginx (`NGINX`, else Debian's), when installed.
pub fn nginx_binary() -> Option<String> {
    let candidates = [std::env::var("NGINX").ok(), Some("nginx".into()), Some("/usr/sbin/nginx".into())];
    candidates.into_iter().flatten().find(|c| Command::new(c).arg("-v").output().is_ok_and(|o| o.status.success()))
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A release `torii serve` on SQLite in `dir` (the build `TORII_BENCH_BIN`
/// names, else this one); stopped (SIGTERM) on drop.
pub struct Torii {
    pub child: Child,
    pub api: SocketAddr,
    pub router: SocketAddr,
    pub base: String,
    pub token: String,
    pub client: reqwest::Client,
    config: std::path::PathBuf,
}

/// The torii binary the benches run: `TORII_BENCH_BIN` (another build, for
/// an A/B of two builds), else this one.
pub fn torii_binary() -> String {
    std::env::var("TORII_BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_torii").to_string())
}

impl Torii {
    pub async fn start(dir: &std::path::Path, extra_toml: &str) -> Torii {
        let (port, router_port) = (free_port(), free_port());
        let config = dir.join("torii.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = {:?}\n[api]\nlisten = \"127.0.0.1:{port}\"\n[router]\nlisten = \"127.0.0.1:{router_port}\"\ndomain = \"apps.bench\"\n{extra_toml}",
                dir.join("data")
            ),
        )
        .unwrap();
        let mut create = Command::new(torii_binary())
            .args(["root-user-create", "bench@example.com", "--config"])
            .arg(&config)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        create.stdin.take().unwrap().write_all(b"bench-secret\n").unwrap();
        assert!(create.wait().unwrap().success());
        Torii::serve(config, format!("127.0.0.1:{port}").parse().unwrap(), format!("127.0.0.1:{router_port}").parse().unwrap()).await
    }

    /// Stops this server and starts it again on the same data (its compiled
    /// cache included), logged in again.
    pub async fn restart(self) -> Torii {
        let (config, api, router) = (self.config.clone(), self.api, self.router);
        drop(self);
        Torii::serve(config, api, router).await
    }

    async fn serve(config: std::path::PathBuf, api: SocketAddr, router: SocketAddr) -> Torii {
        let child = Command::new(torii_binary()).args(["serve", "--config"]).arg(&config).env("TORII_LOG", "warn").spawn().unwrap();
        let client = reqwest::Client::new();
        let base = format!("http://{api}");
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
        Torii { child, api, router, base, token, client, config }
    }

    /// POSTs a form as the root user; panics unless it succeeds.
    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> String {
        self.send(reqwest::Method::POST, path, form).await
    }

    /// Sends a request (with a form, unless empty) as the root user and reads
    /// the whole answer (a stream to its end); panics unless it succeeds.
    pub async fn send(&self, method: reqwest::Method, path: &str, form: &[(&str, &str)]) -> String {
        let mut req = self.client.request(method.clone(), format!("{}{path}", self.base)).bearer_auth(&self.token);
        if !form.is_empty() {
            req = req.form(form);
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        let body = res.text().await.unwrap_or_default();
        assert!(status.is_success(), "{method} {path}: {status} {body}");
        body
    }

    /// Resident memory of the server process, in bytes.
    pub fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kb: u64 = status.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)).unwrap().parse().unwrap();
        kb * 1024
    }
}

impl Drop for Torii {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

/// `docker -H node args…`; its output, trimmed; panics unless it succeeds.
pub fn docker(node: &str, args: &[&str]) -> String {
    let out = Command::new("docker").arg("-H").arg(node).args(args).output().expect("docker CLI");
    assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// One line of a load table: requests/s, p50, p99.
pub fn row(name: &str, l: &Load) {
    println!("{:<40} {:>10.0} {:>10} {:>10}", name, l.rps(), micros(l.percentile(0.5)), micros(l.percentile(0.99)));
}

/// nginx proxying to `backend`, as a reverse proxy is set up for
/// production: two workers (the machine's cores), keep-alive to clients and
/// to the upstream, without a cap on requests per connection.
pub fn nginx_proxy(bin: &str, backend: &str) -> Nginx {
    Nginx::start(bin, |port, d| {
        format!(
            "daemon off;\nworker_processes 2;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  keepalive_requests 10000000;\n  keepalive_timeout 300s;\n  client_body_temp_path {d};\n  proxy_temp_path {d};\n  fastcgi_temp_path {d};\n  uwsgi_temp_path {d};\n  scgi_temp_path {d};\n\
               upstream app {{ server {backend}; keepalive 64; keepalive_requests 10000000; }}\n\
               server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      proxy_pass http://app;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_set_header Host $host;\n      proxy_set_header X-Forwarded-For $remote_addr;\n    }}\n  }}\n}}\n"
        )
    })
}

/// Waits until `addr` answers a request for `host` with a success.
pub async fn wait_answering(addr: SocketAddr, host: &str) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = client.get(format!("http://{addr}/")).header("host", host).send().await
            && r.status().is_success()
        {
            return;
        }
        assert!(Instant::now() < deadline, "{addr} does not answer");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
