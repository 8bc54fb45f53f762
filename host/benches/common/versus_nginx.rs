//! The router as an HTTP proxy against nginx, in front of the same fast
//! backend.
//!
//! One nginx binary (`NGINX`, else Debian's) runs twice: a static server
//! answering `hello` (one worker, no access log) as the backend, and a
//! reverse proxy to it (one worker, keep-alive upstream, no access log,
//! the same forwarded headers torii adds). A release torii of its own
//! (`[router] workers = 1`, its access log off as always for HTTP backends)
//! serves an app of the test provisioner `test-http-backends`, routed to
//! that backend. The same load generator drives each, in turns (medians of
//! the rounds): 32 keep-alive connections for throughput and p99, then one
//! connection for the latency each proxy adds over the backend alone. Each
//! proxy's CPU per request is its process's (torii's whole process; nginx's
//! worker).

use super::{GENERATOR_THREADS, Load, Nginx, Target, Torii, load_on_with, micros, nginx_binary, process_cpu};
use std::time::{Duration, Instant};

const HELLO: &str = env!("TORII_GUEST_APP_HELLO");
const BACKENDS: &str = env!("TORII_GUEST_TEST_HTTP_BACKENDS");
const ROUNDS: usize = 3;

/// What the comparison found, for a summary.
pub struct Figures {
    /// torii / nginx requests/s at 32 connections, each at the generator
    /// setting that drives it hardest (as the WASM row compares with axum:
    /// picking the setting where the ratio is best would credit torii with
    /// the setting that starves nginx), and the p99s of those two rounds
    /// (torii, nginx).
    pub ratio: f64,
    pub p99: (Duration, Duration),
    /// p50 latency each adds over the backend alone at one connection (torii, nginx).
    pub added: (Duration, Duration),
}

/// One nginx with one worker; `location` is its only location's body.
fn nginx(bin: &str, upstream: &str, location: &str) -> Nginx {
    Nginx::start(bin, |port, d| {
        format!(
            "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d};\n  proxy_temp_path {d};\n  fastcgi_temp_path {d};\n  uwsgi_temp_path {d};\n  scgi_temp_path {d};\n\
               keepalive_requests 10000000;\n  keepalive_timeout 300s;\n  {upstream}\n\
               server {{\n    listen 127.0.0.1:{port} reuseport;\n    location / {{\n      {location}\n    }}\n  }}\n}}\n"
        )
    })
}

/// Keeps in `best` whichever of it and `load` served more requests/s.
fn keep_best(best: &mut Option<Load>, load: Load) {
    if best.as_ref().is_none_or(|b| load.rps() > b.rps()) {
        *best = Some(load);
    }
}

async fn wait_answering(target: &Target) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(format!("http://{}{}", target.addr, target.path)).header("host", &target.host).send().await
            && r.status().is_success()
            && r.text().await.is_ok_and(|b| b == "hello\n")
        {
            return;
        }
        assert!(Instant::now() < deadline, "{} does not answer hello", target.addr);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn median(mut loads: Vec<Load>) -> Load {
    loads.sort_by(|a, b| a.rps().total_cmp(&b.rps()));
    loads.swap_remove(loads.len() / 2)
}

/// Median CPU per request of `pid`'s process over `loads`' windows.
fn cpu(loads: &[Load]) -> String {
    let mut per: Vec<Duration> = loads.iter().filter_map(Load::cpu_per_request).collect();
    per.sort();
    per.get(per.len() / 2).map_or("-".into(), |d| format!("{:.1} µs", d.as_secs_f64() * 1e6))
}

fn row(name: &str, threads: usize, connections: usize, l: &Load, cpu: &str) {
    println!(
        "{name:<34} {:>4} {:>5} {:>10.0} {:>9} {:>9} {:>10}",
        threads,
        connections,
        l.rps(),
        micros(l.percentile(0.5)),
        micros(l.percentile(0.99)),
        cpu
    );
}

/// Runs the comparison, printing its rows; `None` (said) without nginx.
/// `hold` keeps everything up afterwards until Ctrl-C, for a profiler.
pub async fn measure(hold: bool) -> Option<Figures> {
    let Some(bin) = nginx_binary() else {
        println!("router vs nginx: skipped (nginx not installed; apt-get install nginx-light)");
        return None;
    };
    let backend = nginx(&bin, "", "return 200 \"hello\\n\";");
    let upstream = format!("upstream app {{ server 127.0.0.1:{}; keepalive 64; keepalive_requests 10000000; }}", backend.port);
    let proxy = nginx(
        &bin,
        &upstream,
        "proxy_pass http://app;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_set_header Host $host;\n      \
         proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n      proxy_set_header X-Forwarded-Host $host;\n      proxy_set_header X-Forwarded-Proto $scheme;",
    );
    let dir = tempfile::TempDir::new().unwrap();
    // `Torii::start` appends this to its `[router]` table: one worker, as nginx.
    let extra = format!(
        "workers = 1\n[[plugin]]\nname = \"outside\"\nkind = \"provisioner\"\npath = {BACKENDS:?}\ncapabilities = [\"log\", \"kv\", \"app-runtime\"]\n\
         [plugin.config.backends]\nproxied = [\"127.0.0.1:{}\"]\n",
        backend.port
    );
    let torii = Torii::start(dir.path(), &extra).await;
    torii.post("/1.0/teams", &[("name", "bench")]).await;
    torii.post("/1.0/pools", &[("name", "outside"), ("provisioner", "outside")]).await;
    torii.post("/1.0/apps", &[("name", "proxied"), ("teamOwner", "bench"), ("pool", "outside")]).await;
    let hello = std::fs::read(HELLO).unwrap();
    super::deploy(&torii, "proxied", &hello).await;

    let direct = Target { addr: backend.addr(), path: "/".into(), host: "proxied.apps.bench".into(), token: None };
    let through_nginx = Target { addr: proxy.addr(), ..direct.clone() };
    let through_torii = Target { addr: torii.router, ..direct.clone() };
    for t in [&direct, &through_nginx, &through_torii] {
        wait_answering(t).await;
    }
    let (torii_pid, nginx_pid) = (torii.child.id(), proxy.worker());
    let _ = process_cpu(nginx_pid);

    println!(
        "router as an HTTP proxy vs nginx (one worker each) in front of nginx static (one worker); {ROUNDS} rounds in turns, medians; {}s each after {}s warm-up",
        super::MEASURE.as_secs(),
        super::WARMUP.as_secs()
    );
    println!("{:<34} {:>4} {:>5} {:>10} {:>9} {:>9} {:>10}", "path", "gen", "conns", "req/s", "p50", "p99", "CPU/req");
    // Each proxy's best median round at 32 connections.
    let (mut best_torii, mut best_nginx): (Option<Load>, Option<Load>) = (None, None);
    let mut added = (Duration::ZERO, Duration::ZERO);
    for connections in [32, 1] {
        for threads in GENERATOR_THREADS.iter().copied().filter(|t| connections > 1 || *t == 1) {
            let (mut alone, mut nginxes, mut toriis) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..ROUNDS {
                alone.push(load_on_with(&direct, None, threads, connections).await);
                nginxes.push(load_on_with(&through_nginx, Some(nginx_pid), threads, connections).await);
                toriis.push(load_on_with(&through_torii, Some(torii_pid), threads, connections).await);
            }
            let (nginx_cpu, torii_cpu) = (cpu(&nginxes), cpu(&toriis));
            let (alone, nginx_load, torii_load) = (median(alone), median(nginxes), median(toriis));
            row("nginx static alone (backend)", threads, connections, &alone, "-");
            row("nginx proxy → backend", threads, connections, &nginx_load, &nginx_cpu);
            row("torii router → backend", threads, connections, &torii_load, &torii_cpu);
            if connections > 1 {
                let ratio = torii_load.rps() / nginx_load.rps();
                let p99 = (torii_load.percentile(0.99), nginx_load.percentile(0.99));
                println!("  torii / nginx with this generator: {ratio:.2}x throughput, p99 {} vs {}", micros(p99.0), micros(p99.1));
                keep_best(&mut best_torii, torii_load);
                keep_best(&mut best_nginx, nginx_load);
            } else {
                let over = |l: &Load| l.percentile(0.5).saturating_sub(alone.percentile(0.5));
                added = (over(&torii_load), over(&nginx_load));
                println!(
                    "  added latency at one connection (p50 over the backend alone): torii {} vs nginx {} (target: no worse)",
                    micros(added.0),
                    micros(added.1)
                );
            }
        }
    }
    let (torii_best, nginx_best) = (best_torii.expect("a generator setting"), best_nginx.expect("a generator setting"));
    let ratio = torii_best.rps() / nginx_best.rps();
    let p99 = (torii_best.percentile(0.99), nginx_best.percentile(0.99));
    println!(
        "router / nginx proxy at 32 connections, each at its best generator setting: {ratio:.2}x throughput ({:.0} vs {:.0} req/s; target ≥ 1.0), p99 {} vs {}",
        torii_best.rps(),
        nginx_best.rps(),
        micros(p99.0),
        micros(p99.1)
    );
    if hold {
        // For profiling (perf, strace) with a generator of one's own.
        println!(
            "holding (TORII_BENCH_HOLD): backend {}, nginx proxy {} (worker pid {nginx_pid}), torii router {} (pid {torii_pid}), host proxied.apps.bench; Ctrl-C ends",
            direct.addr, through_nginx.addr, through_torii.addr
        );
        let _ = tokio::signal::ctrl_c().await;
    }
    Some(Figures { ratio, p99, added })
}
