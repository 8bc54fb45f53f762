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
//! against a bare async call as the baseline; and one outbound HTTP call
//! from a plugin (`test-http-backends`' `fetch`, through the SDK and the
//! host's outbound rule) against the same request from native Rust (a fresh
//! connection each time, as the host opens one per request), both to the
//! same loopback server, interleaved. Last, a service bind round trip
//! (bind then unbind an app through the API, as `tsuru service instance bind`
//! and `unbind` do, with the built-in `service-tsuru` broker) against the same
//! two provider calls made directly (a fresh connection each, as the host's
//! outbound HTTP opens), to the same in-process provider, interleaved.
//! Last, a SAML login's callback (the `auth-saml` scheme verifying a
//! signed assertion from a real pysaml2 IdP, `tests/saml/idp.py`) against
//! the scheme's login poll of a pending request (a plain plugin call with
//! a `kv` read), in process, interleaved.
//! `TORII_BENCH_ONLY=plugins` runs the plugin, service and SAML rows alone.

mod common;

use common::{CONNECTIONS, Load, MEASURE, Target, Torii, WARMUP, micros};
use hyper::StatusCode;
use std::time::{Duration, Instant};

async fn load(addr: std::net::SocketAddr, path: &str, token: Option<&str>) -> Load {
    common::load(&Target { addr, path: path.to_string(), host: "bench".into(), token: token.map(str::to_string) }).await
}

#[tokio::main]
async fn main() {
    let dir = tempfile::TempDir::new().unwrap();
    if std::env::var("TORII_BENCH_ONLY").as_deref() == Ok("plugins") {
        plugin_call(dir.path()).await;
        outbound_call(dir.path()).await;
        bind_round_trip(dir.path()).await;
        saml_callback(dir.path()).await;
        return;
    }
    let torii = std::sync::Arc::new(Torii::start(dir.path(), "").await);
    let (addr, client, base, token) = (torii.api, torii.client.clone(), torii.base.clone(), torii.token.clone());

    println!("torii API benchmark: {CONNECTIONS} connections, {}s per endpoint after {}s warm-up, SQLite, release build", MEASURE.as_secs(), WARMUP.as_secs());
    let health = load(addr, "/healthcheck", None).await;
    let info = load(addr, "/1.0/users/info", Some(&token)).await;
    println!("{:<28} {:>12} {:>10} {:>10}", "endpoint", "req/s", "p50", "p99");
    for (name, l) in [("GET /healthcheck", &health), ("GET /1.0/users/info (auth)", &info)] {
        println!("{:<28} {:>12.0} {:>10} {:>10}", name, l.rps(), micros(l.percentile(0.5)), micros(l.percentile(0.99)));
    }
    println!("auth'd reads / healthcheck throughput: {:.2} (target ≥ 0.50)", info.rps() / health.rps());

    let api = torii.clone();
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
    drop(api);
    drop(torii);

    plugin_call(dir.path()).await;
    outbound_call(dir.path()).await;
    bind_round_trip(dir.path()).await;
}

/// `req` on a connection of its own (as the host's outbound HTTP opens
/// one per request): the status and body.
async fn fresh_request(addr: std::net::SocketAddr, req: hyper::Request<http_body_util::Full<bytes::Bytes>>) -> (StatusCode, bytes::Bytes) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await.unwrap();
    let conn = tokio::spawn(conn);
    let res = sender.send_request(req).await.unwrap();
    let status = res.status();
    let body = http_body_util::BodyExt::collect(res.into_body()).await.unwrap().to_bytes();
    drop(sender);
    let _ = conn.await;
    (status, body)
}

/// A tsuru service API provider in process: binds answer one variable.
async fn service_provider() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    use axum::routing::{get, post};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route("/resources/plans", get(|| async { axum::Json(serde_json::json!([{"name": "small", "description": "s"}])) }))
        .route("/resources", post(|| async { StatusCode::CREATED }))
        .route(
            "/resources/{name}/bind-app",
            post(|| async { (StatusCode::CREATED, axum::Json(serde_json::json!({"DB_URL": "db://x"}))) }).delete(|| async { StatusCode::OK }),
        );
    let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, task)
}

/// Median of a bind + unbind through torii against the two provider calls made directly.
async fn bind_round_trip(dir: &std::path::Path) {
    let (provider, task) = service_provider().await;
    let extra = format!(
        "[[plugin]]\nname = \"tsuru\"\nkind = \"service-broker\"\nbuiltin = \"service-tsuru\"\ncapabilities = [\"log\", \"http\"]\n\
         [plugin.outbound]\nallow = [\"http://{provider}\"]\n"
    );
    let bench_dir = dir.join("bind");
    std::fs::create_dir_all(&bench_dir).unwrap();
    let torii = Torii::start(&bench_dir, &extra).await;
    let (client, base, token) = (torii.client.clone(), torii.base.clone(), torii.token.clone());
    let call = async |method: reqwest::Method, path: &str, form: &[(&str, &str)]| {
        let r = client.request(method, format!("{base}{path}")).bearer_auth(&token).form(form).send().await.unwrap();
        let status = r.status();
        let body = r.text().await.unwrap();
        assert!(status.is_success() && !body.contains("\"Error\""), "{path}: {status} {body}");
    };
    call(reqwest::Method::POST, "/1.0/teams", &[("name", "bench")]).await;
    call(reqwest::Method::POST, "/1.0/pools", &[("name", "main"), ("default", "true")]).await;
    call(reqwest::Method::POST, "/1.0/apps", &[("name", "web"), ("teamOwner", "bench")]).await;
    let endpoint = format!("http://{provider}");
    call(reqwest::Method::POST, "/1.0/services", &[("id", "db"), ("password", "p"), ("endpoint", &endpoint), ("team", "bench")]).await;
    call(reqwest::Method::POST, "/1.0/services/db/instances", &[("name", "i1"), ("plan", "small"), ("owner", "bench")]).await;

    let through_torii = async || {
        call(reqwest::Method::PUT, "/1.0/services/db/instances/i1/web", &[("noRestart", "true")]).await;
        call(reqwest::Method::DELETE, "/1.0/services/db/instances/i1/web?noRestart=true", &[]).await;
    };
    let direct_client = async |method: hyper::Method| {
        let form = "app-name=web&app-host=web.apps.bench&app-hosts=web.apps.bench&user=bench%40example.com&eventid=x";
        let req = hyper::Request::builder()
            .method(method)
            .uri("/resources/i1/bind-app")
            .header("host", provider.to_string())
            .header("authorization", "Basic ZGI6cA==")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(http_body_util::Full::new(bytes::Bytes::from_static(form.as_bytes())))
            .unwrap();
        let (status, _) = fresh_request(provider, req).await;
        assert!(status.is_success());
    };
    let direct = async || {
        direct_client(hyper::Method::POST).await;
        direct_client(hyper::Method::DELETE).await;
    };
    let (t, d) = in_turns(50, 500, through_torii, direct).await;
    println!(
        "service bind + unbind: through torii median {:.0} µs (p99 {:.0}), the provider's two calls direct median {:.0} µs (p99 {:.0}); ratio {:.1}",
        quantile_us(&t, 50),
        quantile_us(&t, 99),
        quantile_us(&d, 50),
        quantile_us(&d, 99),
        quantile_us(&t, 50) / quantile_us(&d, 50)
    );
    drop(torii);
    task.abort();
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

/// Median cost of a plugin's outbound HTTP call against native Rust's.
async fn outbound_call(dir: &std::path::Path) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let origin = tokio::spawn(async move {
        axum::serve(listener, axum::Router::new().route("/", axum::routing::get(|| async { "ok" }))).await.unwrap();
    });
    let toml = format!(
        "data_dir = {:?}\n[[plugin]]\nname = \"outside\"\nkind = \"provisioner\"\npath = {:?}\n\
         capabilities = [\"log\", \"kv\", \"app-runtime\", \"http\"]\n[plugin.outbound]\nallow = [\"http://{addr}\"]\n",
        dir.join("outbound-data"),
        env!("TORII_GUEST_TEST_HTTP_BACKENDS")
    );
    let server = torii::server::Server::build(torii::config::Config::parse(&toml).unwrap()).await.unwrap();
    let plugin = &server.provisioners["outside"];
    let state = torii::plugin::provisioner::AppState {
        name: "bench".into(),
        pool: "bench".into(),
        plan_memory: 0,
        plan_cpu_milli: 0,
        env: Vec::new(),
        versions: Vec::new(),
        volumes: Vec::new(),
    };
    let command = format!("fetch http://{addr}/");
    let from_plugin = async || {
        let lines = plugin.run(state.clone(), &command, false, false).await.unwrap();
        assert_eq!(lines, vec!["200 ok\n".to_string()]);
    };
    let native = async || {
        let req = hyper::Request::get("/").header("host", addr.to_string()).body(http_body_util::Full::new(bytes::Bytes::new())).unwrap();
        let (_, body) = fresh_request(addr, req).await;
        assert_eq!(&body[..], b"ok");
    };
    let (p, n) = in_turns(300, 3000, from_plugin, native).await;
    println!(
        "outbound HTTP call: plugin median {:.1} µs (p99 {:.1}), native median {:.1} µs (p99 {:.1}); added by the plugin {:.1} µs, ratio {:.2} (target added < 50 µs)",
        quantile_us(&p, 50),
        quantile_us(&p, 99),
        quantile_us(&n, 50),
        quantile_us(&n, 99),
        quantile_us(&p, 50) - quantile_us(&n, 50),
        quantile_us(&p, 50) / quantile_us(&n, 50)
    );
    origin.abort();
    server.store.close().await;
}

/// Median cost of verifying a SAML Response (signed assertion) in the
/// `auth-saml` scheme, against a login poll of a pending request.
async fn saml_callback(dir: &std::path::Path) {
    let tests = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/saml");
    let ready = std::process::Command::new("python3").args(["-c", "import saml2, cryptography"]).output().is_ok_and(|o| o.status.success());
    if !ready || std::process::Command::new("xmlsec1").arg("--version").output().is_err() {
        println!("SAML callback: not measured (needs python3 with pysaml2 and xmlsec1; .ci/run installs them)");
        return;
    }
    let keys = dir.join("saml-keys");
    std::fs::create_dir_all(&keys).unwrap();
    let made = std::process::Command::new("python3").env("PYTHONWARNINGS", "ignore").arg(format!("{tests}/make_sp_keys.py")).arg(&keys).output().unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let mut idp = std::process::Command::new("python3")
        .arg(format!("{tests}/idp.py"))
        .args(["--port", "0", "--dir"])
        .arg(&keys)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(idp.stdout.take().unwrap()), &mut line).unwrap();
    let idp_url = format!("http://127.0.0.1:{}", line.trim().trim_start_matches("LISTENING "));
    let toml = format!(
        "data_dir = {:?}\n[auth]\nscheme = \"saml\"\n[[plugin]]\nname = \"saml\"\nkind = \"auth-scheme\"\nbuiltin = \"auth-saml\"\n\
         capabilities = [\"log\", \"kv\", \"http\"]\n[plugin.config]\nsp_entity_id = \"http://127.0.0.1:9/sp\"\n\
         acs_url = \"http://127.0.0.1:9/1.0/auth/saml\"\nidp_metadata_url = \"{idp_url}/metadata\"\nsp_key_file = {:?}\nsp_cert_file = {:?}\n\
         [plugin.outbound]\nallow = [\"http://127.0.0.1:*\"]\n",
        dir.join("saml-data"),
        keys.join("sp.key"),
        keys.join("sp.crt"),
    );
    let server = torii::server::Server::build(torii::config::Config::parse(&toml).unwrap()).await.unwrap();
    let client = reqwest::Client::new();
    let metadata = server.scheme.metadata().await.unwrap();
    assert!(client.post(format!("{idp_url}/_test/sp-metadata")).body(metadata).send().await.unwrap().status().is_success());
    let users = serde_json::json!({"alice": {"mail": ["alice@example.com"], "groups": ["devs"]}});
    assert!(client.post(format!("{idp_url}/_test/users")).json(&users).send().await.unwrap().status().is_success());
    let login = serde_json::json!({"user": "alice", "sign_response": false, "sign_assertion": true});
    assert!(client.post(format!("{idp_url}/_test/next-login")).json(&login).send().await.unwrap().status().is_success());
    // Responses made ahead (the IdP signs with xmlsec1), one per pending request.
    const LOGINS: usize = 200;
    let mut answers = Vec::with_capacity(LOGINS);
    for _ in 0..LOGINS {
        let info: serde_json::Value = serde_json::from_str(&server.scheme.info().await.unwrap().data.unwrap()).unwrap();
        let html = client.get(info["url"].as_str().unwrap()).send().await.unwrap().text().await.unwrap();
        let at = html.find("name=\"SAMLResponse\"").unwrap();
        let value = &html[at..];
        let start = value.find("value=\"").unwrap() + 7;
        answers.push(value[start..start + value[start..].find('"').unwrap()].to_string());
    }
    let waiting = serde_json::from_str::<serde_json::Value>(&server.scheme.info().await.unwrap().data.unwrap()).unwrap()["request_id"].as_str().unwrap().to_string();
    let answers = std::sync::Mutex::new(answers.into_iter());
    let verify = async || {
        let answer = answers.lock().unwrap().next().unwrap();
        server.scheme.callback(vec![("SAMLResponse".into(), answer)]).await.unwrap();
    };
    let poll = async || {
        assert!(server.scheme.authenticate(vec![("request_id".into(), waiting.clone())]).await.is_err());
    };
    let (v, p) = in_turns(20, LOGINS - 20, verify, poll).await;
    println!(
        "SAML callback (signed assertion verified in auth-saml): median {:.0} µs (p99 {:.0}); login poll median {:.0} µs; ratio {:.1}",
        quantile_us(&v, 50),
        quantile_us(&v, 99),
        quantile_us(&p, 50),
        quantile_us(&v, 50) / quantile_us(&p, 50)
    );
    let _ = idp.kill();
    let _ = idp.wait();
    server.store.close().await;
}

/// `a` and `b` taken in turns, `warm` times untimed, then `n` times timed:
/// the times of each, sorted.
async fn in_turns(warm: usize, n: usize, a: impl AsyncFn(), b: impl AsyncFn()) -> (Vec<Duration>, Vec<Duration>) {
    for _ in 0..warm {
        a().await;
        b().await;
    }
    let (mut ta, mut tb) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        let start = Instant::now();
        a().await;
        ta.push(start.elapsed());
        let start = Instant::now();
        b().await;
        tb.push(start.elapsed());
    }
    ta.sort();
    tb.sort();
    (ta, tb)
}

/// The `percent`th percentile of sorted times, in µs.
fn quantile_us(sorted: &[Duration], percent: usize) -> f64 {
    sorted[sorted.len() * percent / 100].as_secs_f64() * 1e6
}

#[inline(never)]
async fn noop() -> u32 {
    std::hint::black_box(1)
}
