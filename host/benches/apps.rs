//! The speed and footprint benchmark. One run, printed; run with `cargo
//! bench --bench apps`. It ends with one summary table of every goal: what
//! torii measured, the baseline measured beside it, the target and whether
//! it holds.
//!
//! Starts the release `torii` on SQLite and measures, side by side in the
//! same run:
//! - idle RSS right after a first start (every plugin compiled) and after a
//!   restart (plugins from the compiled cache), and the binary's size;
//! - requests/s and p50/p99 through torii's router to the example `hello`
//!   component (32 keep-alive connections, fresh instance per request)
//!   against `wasmtime serve` 48.0.8 on the same component, as it comes and
//!   with `-O pooling-allocator` (skipped with a note when not installed;
//!   `WASMTIME` may name the binary) and a native axum hello as the ceiling
//!   (on runtime threads of its own, as if it were its own process). The load
//!   generator runs on its own threads too, one or two: each server counts
//!   at the setting that drives it hardest on this shared machine (both are
//!   printed). Router and axum take turns, medians of three rounds each;
//! - the router as an HTTP proxy against nginx in front of the same nginx
//!   backend (`common/versus_nginx.rs`; skipped with a note without nginx);
//! - deploy-to-first-200 for a fresh component (compiled on deploy) and for
//!   bytes already compiled, for the small Rust hello and for the ~18 MB
//!   Python one (`plugins/apps/hello-py`, skipped with a note when
//!   componentize-py is not installed), and when the Python one's optimised
//!   code replaced its baseline code;
//! - the extra latency of the first request after sleep;
//! - the server's RSS with 1,000 deployed, sleeping apps.
//!
//! `TORII_BENCH_THROUGHPUT_ONLY=1` stops after the router and axum rows.

mod common;

use common::{CONNECTIONS, GENERATOR_THREADS, Load, MEASURE, Target, Torii, WARMUP, deploy, free_port, micros, torii_binary};
use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const HELLO: &str = env!("TORII_GUEST_APP_HELLO");

/// One GET through the router; the status.
async fn get(client: &reqwest::Client, t: &Torii, app: &str) -> u16 {
    client.get(format!("http://{}/", t.router)).header("host", format!("{app}.apps.bench")).send().await.unwrap().status().as_u16()
}

/// Deploy to first 200 of `bytes` as two new apps: fresh bytes (compiled on
/// deploy), then the same bytes again.
async fn first_200s(t: &Torii, client: &reqwest::Client, apps: [&str; 2], bytes: &[u8]) -> Vec<Duration> {
    let mut times = Vec::new();
    for app in apps {
        t.post("/1.0/apps", &[("name", app), ("teamOwner", "bench")]).await;
        let start = Instant::now();
        deploy(t, app, bytes).await;
        assert_eq!(get(client, t, app).await, 200);
        times.push(start.elapsed());
    }
    times
}

/// Rounds of the router against the ceiling.
const ROUNDS: usize = 3;

/// The round with the median throughput.
fn median(mut loads: Vec<Load>) -> Load {
    loads.sort_by(|a, b| a.rps().total_cmp(&b.rps()));
    loads.swap_remove(loads.len() / 2)
}

/// The server's CPU time per request in each of `loads` that measured it, sorted.
fn cpus(loads: &[Load]) -> Vec<Duration> {
    let mut cpus: Vec<Duration> = loads.iter().filter_map(Load::cpu_per_request).collect();
    cpus.sort();
    cpus
}

/// The throughput of a server's median round at generator setting `threads`.
fn rps_at(medians: &[(usize, Load)], threads: usize) -> f64 {
    medians.iter().find(|(t, _)| *t == threads).map_or(0.0, |(_, l)| l.rps())
}

/// A server's median round at each generator setting, the best first.
fn medians(runs: BTreeMap<usize, Vec<Load>>) -> Vec<(usize, Load)> {
    let mut medians: Vec<(usize, Load)> = runs.into_iter().map(|(threads, loads)| (threads, median(loads))).collect();
    medians.sort_by(|a, b| b.1.rps().total_cmp(&a.1.rps()));
    medians
}

fn generator(threads: usize) -> String {
    format!("{threads} thread{}", if threads == 1 { "" } else { "s" })
}

fn row(name: &str, threads: usize, l: &Load) {
    println!("{:<34} {:>10} {:>10.0} {:>10} {:>10}", name, generator(threads), l.rps(), micros(l.percentile(0.5)), micros(l.percentile(0.99)));
}

/// Rows for a server at each generator setting, the best first.
fn rows(name: &str, medians: &[(usize, Load)]) {
    for (threads, load) in medians {
        row(name, *threads, load);
    }
}

/// A native axum hello on a two-thread runtime of its own (a process of its
/// own would do no better: tried).
fn axum_hello() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).thread_name("axum").enable_all().build().unwrap();
        runtime.block_on(async move {
            let app = axum::Router::new().fallback(|| async { "hello from axum\n" });
            axum::serve(tokio::net::TcpListener::from_std(listener).unwrap(), app).await.unwrap()
        })
    });
    addr
}

/// Time per request of `hello` served by torii's app runtime alone, in this
/// process on a thread of its own: a fresh instance per request from the
/// same runtime settings the server uses (pooling allocator, epoch deadline,
/// memory cap, output pipes), the answer's body read whole, the instance
/// dropped. No network, no router, no units: what the router's WASM row
/// costs beyond this is the data plane's.
async fn runtime_alone(hello: &[u8]) -> Duration {
    use http_body_util::{BodyExt, Empty};
    use std::sync::Arc;
    use torii::runtime::{AppRuntime, Invocation, OutputSink, RuntimeLimits};
    const REQUESTS: u32 = 50_000;
    let hello = hello.to_vec();
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let took = runtime.block_on(async move {
            let dir = tempfile::TempDir::new().unwrap();
            let rt = AppRuntime::new(RuntimeLimits::new(64 << 20, 64, Duration::from_secs(1)), dir.path()).unwrap();
            let code = rt.load(&hello).unwrap();
            let sink: OutputSink = Arc::new(|_, _| {});
            let invocation = Invocation {
                env: vec![("TSURU_APPNAME".into(), "hello".into())],
                output: Some(sink),
                app: Some(Arc::from("hello")),
                ..Invocation::default()
            };
            let one = || async {
                let req = hyper::Request::get("/").header("host", "hello.apps.bench").body(Empty::<hyper::body::Bytes>::new()).unwrap();
                let res = rt.handle(&code, invocation.clone(), req).await;
                assert_eq!(res.status(), 200);
                let body = res.into_body().collect().await.unwrap().to_bytes();
                assert_eq!(&body[..], b"hello from hello at /\n");
            };
            for _ in 0..REQUESTS / 10 {
                one().await;
            }
            let start = Instant::now();
            for _ in 0..REQUESTS {
                one().await;
            }
            start.elapsed() / REQUESTS
        });
        let _ = done.send(took);
    });
    result.await.expect("the runtime-alone measure ended without a result")
}

fn wasmtime_binary() -> Option<String> {
    let candidates = [std::env::var("WASMTIME").ok(), Some("wasmtime".into()), Some("/tmp/wasmtime-cli/bin/wasmtime".into())];
    candidates.into_iter().flatten().find(|c| {
        Command::new(c).arg("--version").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("48.0.8"))
    })
}

/// The Python hello (`plugins/apps/hello-py`) built with componentize-py
/// (`COMPONENTIZE_PY` may name it) into `dir`; why not, when it cannot be.
fn python_hello(dir: &std::path::Path) -> Result<Vec<u8>, String> {
    let tool = std::env::var("COMPONENTIZE_PY").unwrap_or_else(|_| "componentize-py".into());
    if Command::new(&tool).arg("--version").output().is_err() {
        return Err("componentize-py not installed (pip install componentize-py)".into());
    }
    let out = dir.join("hello-py.wasm");
    let build = concat!(env!("CARGO_MANIFEST_DIR"), "/../plugins/apps/hello-py/build");
    let status = Command::new(build).arg(&out).env("COMPONENTIZE_PY", &tool).status().map_err(|e| format!("{build}: {e}"))?;
    if !status.success() {
        return Err(format!("{build} failed: {status}"));
    }
    std::fs::read(&out).map_err(|e| e.to_string())
}

/// `wasmtime serve` with `options` on the hello component: a load at each
/// generator setting.
async fn wasmtime_serve(bin: &str, options: &[&str], client: &reqwest::Client) -> BTreeMap<usize, Vec<Load>> {
    let port = free_port();
    let mut child = Command::new(bin)
        .arg("serve")
        .args(options)
        .args(["-S", "cli", "--addr", &format!("127.0.0.1:{port}"), HELLO])
        .env("TSURU_APPNAME", "hello")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.get(format!("http://{addr}/")).send().await.is_err() {
        assert!(Instant::now() < deadline, "wasmtime serve {options:?} did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let target = Target { addr, path: "/".into(), host: "bench".into(), token: None };
    let mut runs = BTreeMap::<usize, Vec<Load>>::new();
    for threads in GENERATOR_THREADS {
        runs.entry(threads).or_default().push(common::load_on(&target, None, threads).await);
    }
    let _ = child.kill();
    let _ = child.wait();
    runs
}

/// The summary table: one line per goal.
#[derive(Default)]
struct Summary(Vec<[String; 4]>);

impl Summary {
    /// A goal: what it is, what was measured (with its baseline), the
    /// target, and whether it holds (`None`: nothing to hold, or not measured).
    fn goal(&mut self, what: &str, measured: String, target: &str, holds: Option<bool>) {
        let holds = match holds {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "-",
        };
        self.0.push([what.into(), measured, target.into(), holds.into()]);
    }

    fn print(&self) {
        println!();
        println!("summary (this run; ratios measured side by side)");
        println!("{:<44} {:<48} {:<16} {}", "goal", "measured", "target", "holds");
        for [what, measured, target, holds] in &self.0 {
            println!("{what:<44} {measured:<48} {target:<16} {holds}");
        }
    }
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

fn ms(d: Duration) -> String {
    if d >= Duration::from_secs(1) { format!("{:.2} s", d.as_secs_f64()) } else { format!("{:.1} ms", d.as_secs_f64() * 1e3) }
}

/// The server's RSS once it has been idle for a while.
async fn idle_rss(t: &Torii) -> u64 {
    tokio::time::sleep(Duration::from_secs(3)).await;
    t.rss()
}

/// Waits until no app version runs on baseline code (the gauge of
/// `/1.2/metrics` is 0).
async fn optimised(t: &Torii) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let metrics = t.client.get(format!("{}/1.2/metrics", t.base)).send().await.unwrap().text().await.unwrap();
        if metrics.lines().any(|l| l == "torii_app_versions_optimizing 0") {
            return;
        }
        assert!(Instant::now() < deadline, "still optimising after 300 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::main]
async fn main() {
    let mut summary = Summary::default();
    let binary = std::fs::metadata(torii_binary()).unwrap().len();
    summary.goal("release binary, as shipped", mb(binary), "< 80 MB", Some(binary < 80_000_000));
    let dir = tempfile::TempDir::new().unwrap();
    let torii = Torii::start(dir.path(), "").await;
    let first_start = idle_rss(&torii).await;
    let torii = torii.restart().await;
    let warm_start = idle_rss(&torii).await;
    println!("idle RSS on the defaults: {} after a first start, {} after a restart (target < 60 MB)", mb(first_start), mb(warm_start));
    summary.goal(
        "idle RSS: first start / restart",
        format!("{} / {}", mb(first_start), mb(warm_start)),
        "< 60 MB",
        Some(first_start.max(warm_start) < 60_000_000),
    );
    let hello = std::fs::read(HELLO).unwrap();
    torii.post("/1.0/teams", &[("name", "bench")]).await;
    torii.post("/1.0/pools", &[("name", "bench"), ("default", "true")]).await;
    let client = reqwest::Client::new();

    let first_200 = first_200s(&torii, &client, ["hello", "again"], &hello).await;
    // The same component with its access log on: a line per request through
    // the app log (the ceiling logs nothing, so the ratio uses the quiet one).
    torii.post("/1.0/apps", &[("name", "logged"), ("teamOwner", "bench")]).await;
    let res = torii
        .client
        .post(format!("{}/1.0/apps/logged/env", torii.base))
        .bearer_auth(&torii.token)
        .json(&serde_json::json!({"envs": [{"name": "ACCESS_LOG", "value": "1"}], "noRestart": true}))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
    res.text().await.unwrap();
    deploy(&torii, "logged", &hello).await;
    // One unit serves one request at a time: give the loaded apps room for every connection.
    for app in ["hello", "logged"] {
        let res = torii.client.put(format!("{}/1.0/apps/{app}/units", torii.base)).bearer_auth(&torii.token).form(&[("units", "63")]).send().await.unwrap();
        assert!(res.status().is_success());
        res.text().await.unwrap();
    }
    // Measured on optimised code (new bytes serve on baseline code first).
    optimised(&torii).await;

    println!(
        "torii WASM app benchmark: {CONNECTIONS} connections, {}s each after {}s warm-up, release build; torii and native axum alternate {ROUNDS} times (medians)",
        MEASURE.as_secs(),
        WARMUP.as_secs()
    );
    println!("{:<34} {:>10} {:>10} {:>10} {:>10}", "server", "generator", "req/s", "p50", "p99");
    // The machine's speed drifts over a run: the router and the ceiling take
    // turns, and each side's median round counts.
    let axum_addr = axum_hello();
    let router_target = Target { addr: torii.router, path: "/".into(), host: "hello.apps.bench".into(), token: None };
    let axum_target = Target { addr: axum_addr, path: "/".into(), host: "bench".into(), token: None };
    let (mut routers, mut axums) = (BTreeMap::<usize, Vec<Load>>::new(), BTreeMap::<usize, Vec<Load>>::new());
    for _ in 0..ROUNDS {
        for threads in GENERATOR_THREADS {
            routers.entry(threads).or_default().push(common::load_on(&router_target, Some(torii.child.id()), threads).await);
            axums.entry(threads).or_default().push(common::load_on(&axum_target, None, threads).await);
        }
    }
    let cpu_by_threads: BTreeMap<usize, Vec<Duration>> = routers.iter().map(|(threads, loads)| (*threads, cpus(loads))).collect();
    let (routers, axums) = (medians(routers), medians(axums));
    let same: Vec<String> =
        GENERATOR_THREADS.iter().map(|&t| format!("{:.2} ({})", rps_at(&routers, t) / rps_at(&axums, t), generator(t))).collect();
    let (best_threads, router) = &routers[0];
    let axum = &axums[0].1;
    rows("torii router → hello component", &routers);
    rows("native axum hello (ceiling)", &axums);
    let ratio = router.rps() / axum.rps();
    println!("router / native axum throughput, each at its best generator: {ratio:.2} (target ≥ 0.5); with the same generator: {}", same.join(", "));
    summary.goal(
        "WASM hello / native axum hello (32 conns)",
        format!("{ratio:.2} ({:.0} vs {:.0} req/s)", router.rps(), axum.rps()),
        "≥ 0.5",
        Some(ratio >= 0.5),
    );
    let cpu = &cpu_by_threads[best_threads];
    let us = |d: &Duration| format!("{:.1} µs", d.as_secs_f64() * 1e6);
    println!(
        "torii CPU per routed request ({}): {} (median of the rounds: {})",
        generator(*best_threads),
        us(&cpu[cpu.len() / 2]),
        cpu.iter().map(us).collect::<Vec<_>>().join(", ")
    );
    // The floor under that row: the app runtime alone, no network, no router.
    let alone = runtime_alone(&hello).await;
    println!(
        "the app runtime alone (in process, one thread: fresh instance, wasi:http call, body read, instance dropped): {} per request, {:.0} % of torii's CPU per routed request",
        us(&alone),
        100.0 * alone.as_secs_f64() / cpu[cpu.len() / 2].as_secs_f64()
    );
    summary.goal("  of which the app runtime alone, per request", format!("{} of {}", us(&alone), us(&cpu[cpu.len() / 2])), "", None);
    // What the app log costs: the same component printing a line per request.
    let logged_target = Target { addr: torii.router, path: "/".into(), host: "logged.apps.bench".into(), token: None };
    let mut logged = Vec::new();
    for _ in 0..ROUNDS {
        logged.push(common::load_on(&logged_target, Some(torii.child.id()), *best_threads).await);
    }
    let logged_cpu = cpus(&logged);
    let logged = median(logged);
    row("torii router → hello, ACCESS_LOG=1", *best_threads, &logged);
    println!(
        "with a log line per request: {:.0} % of the quiet throughput; torii CPU per request {}",
        100.0 * logged.rps() / router.rps(),
        us(&logged_cpu[logged_cpu.len() / 2])
    );
    if std::env::var_os("TORII_BENCH_THROUGHPUT_ONLY").is_some() {
        summary.print();
        return;
    }

    // wasmtime serve as it comes, and with the pooling allocator that
    // wasmtime's own serve benchmark runs with: the baseline at its best.
    match wasmtime_binary() {
        None => {
            println!("{:<34} skipped: wasmtime 48.0.8 not installed (cargo install wasmtime-cli --version 48.0.8 --locked)", "wasmtime serve");
        }
        Some(bin) => {
            let mut measured = Vec::new();
            for (name, options) in [("wasmtime serve → hello", &[][..]), ("wasmtime serve -O pooling → hello", &["-O", "pooling-allocator"][..])] {
                let mut runs = medians(wasmtime_serve(&bin, options, &client).await);
                rows(name, &runs);
                let best = runs.swap_remove(0).1;
                println!("router / {name}: {:.2} (target ≥ 1.5)", router.rps() / best.rps());
                measured.push((router.rps() / best.rps(), best.rps()));
            }
            summary.goal(
                "WASM hello / wasmtime serve, plain / -O pooling",
                format!("{:.2} / {:.2} ({:.0} / {:.0} req/s)", measured[0].0, measured[1].0, measured[0].1, measured[1].1),
                "≥ 1.5",
                Some(measured.iter().all(|(r, _)| *r >= 1.5)),
            );
        }
    }

    // The router as a proxy, against nginx: a torii of its own (one router
    // worker, as nginx's one worker) while this one idles.
    match common::versus_nginx::measure(false).await {
        Some(f) => {
            summary.goal(
                "router proxy / nginx proxy (32 conns)",
                format!("{:.2}x, p99 {} vs {}", f.ratio, micros(f.p99.0), micros(f.p99.1)),
                "≥ 1.0, p99 ≤",
                Some(f.ratio >= 1.0 && f.p99.0 <= f.p99.1),
            );
            summary.goal(
                "added latency at 1 conn: router / nginx",
                format!("{} / {}", micros(f.added.0), micros(f.added.1)),
                "router ≤ nginx",
                Some(f.added.0 <= f.added.1),
            );
        }
        None => summary.goal("router proxy / nginx proxy", "skipped: nginx not installed".into(), "≥ 1.0", None),
    }

    println!(
        "deploy to first 200: fresh component {:.1} ms (target < 300 ms), already-compiled bytes {:.1} ms (target < 20 ms)",
        first_200[0].as_secs_f64() * 1e3,
        first_200[1].as_secs_f64() * 1e3
    );
    summary.goal(
        "deploy → first 200, Rust hello: fresh / compiled",
        format!("{} / {}", ms(first_200[0]), ms(first_200[1])),
        "< 300 / < 20 ms",
        Some(first_200[0] < Duration::from_millis(300) && first_200[1] < Duration::from_millis(20)),
    );

    // First request after sleep vs a warm request, one at a time. The first
    // is timed to its answer; the wake it causes may be recorded after it
    // (a WASM app's), so the app's info is read (it waits for that) and
    // must show it started before the warm request is timed: no wake work
    // runs beside the warm one.
    let (mut woken, mut warm) = (Vec::new(), Vec::new());
    for _ in 0..50 {
        torii.post("/1.0/apps/again/sleep", &[("proxy", "http://127.0.0.1:1")]).await;
        let start = Instant::now();
        assert_eq!(get(&client, &torii, "again").await, 200);
        woken.push(start.elapsed());
        let info: serde_json::Value = serde_json::from_str(&torii.send(reqwest::Method::GET, "/1.0/apps/again", &[]).await).unwrap();
        assert_eq!(info["units"][0]["Status"], "started", "{info}");
        let start = Instant::now();
        assert_eq!(get(&client, &torii, "again").await, 200);
        warm.push(start.elapsed());
    }
    woken.sort();
    warm.sort();
    let p50 = |v: &[Duration]| v[v.len() / 2];
    let extra = p50(&woken).saturating_sub(p50(&warm));
    println!("first request after sleep: p50 {} vs warm {}: extra {} (target < 1 ms)", micros(p50(&woken)), micros(p50(&warm)), micros(extra));
    summary.goal("first request after sleep, extra p50", format!("{} ({} vs {})", ms(extra), micros(p50(&woken)), micros(p50(&warm))), "< 1 ms", Some(extra < Duration::from_millis(1)));

    // RSS with 1,000 deployed, sleeping apps.
    const APPS: usize = 1000;
    let before = torii.rss();
    let started = Instant::now();
    for i in 0..APPS {
        let app = format!("sleepy-{i:04}");
        torii.post("/1.0/apps", &[("name", &app), ("teamOwner", "bench")]).await;
        deploy(&torii, &app, &hello).await;
        torii.post(&format!("/1.0/apps/{app}/sleep"), &[("proxy", "http://127.0.0.1:1")]).await;
    }
    let with_apps = torii.rss();
    println!(
        "RSS with {APPS} deployed sleeping apps: {} (before them: {}; target < 150 MB); created, deployed and slept in {:.1} s",
        mb(with_apps),
        mb(before),
        started.elapsed().as_secs_f64()
    );
    summary.goal("RSS with 1,000 sleeping apps", format!("{} (before them: {})", mb(with_apps), mb(before)), "< 150 MB", Some(with_apps < 150_000_000));

    // The large component: CPython inside (componentize-py), ~18 MB. Last,
    // so its compile leaves nothing in the rows above.
    match python_hello(dir.path()) {
        Err(why) => {
            println!("deploy to first 200, Python component: skipped: {why}");
            summary.goal("deploy → first 200, Python", format!("skipped: {why}"), "< 2 s", None);
        }
        Ok(bytes) => {
            let started = Instant::now();
            let first_200 = first_200s(&torii, &client, ["hello-py", "again-py"], &bytes).await;
            optimised(&torii).await;
            let optimised_after = started.elapsed();
            println!(
                "deploy to first 200, Python component ({:.1} MB): fresh {:.2} s (target < 2 s), already-loaded bytes {:.0} ms; optimised code serving {:.1} s after the first deploy began",
                bytes.len() as f64 / 1e6,
                first_200[0].as_secs_f64(),
                first_200[1].as_secs_f64() * 1e3,
                optimised_after.as_secs_f64()
            );
            summary.goal(
                &format!("deploy → first 200, Python {:.0} MB: fresh / again", bytes.len() as f64 / 1e6),
                format!("{} / {} (optimised at {})", ms(first_200[0]), ms(first_200[1]), ms(optimised_after)),
                "< 2 s",
                Some(first_200[0] < Duration::from_secs(2)),
            );
        }
    }
    summary.print();
}
