//! Outbound HTTP of plugins (`host/src/outbound`): a plugin granted `http`
//! reaches what its `[plugin.outbound] allow` list names and nothing else,
//! under its limits. The plugin is `test-http-backends`, whose `app run
//! fetch <url>` / `post <url> <bytes>` go through the SDK's `http` client;
//! every server it talks to is the test's, on loopback.

use crate::support::{Options, TestServer, backends};
use bytes::Bytes;
use http_body_util::Full;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use torii::config::Config;

/// Serves `app` on a fresh loopback port.
async fn serve(app: axum::Router) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (addr, tokio::spawn(async move { axum::serve(listener, app).await.unwrap() }))
}

/// A CA, and an HTTPS server on loopback whose certificate (for
/// `localhost`) it signed: the CA's PEM and the server's address.
async fn tls_server() -> (String, SocketAddr, tokio::task::JoinHandle<()>) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "torii test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap().signed_by(&leaf_key, &ca, &ca_key).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"hello over tls"))))
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(tls), service).await;
            });
        }
    });
    (ca.pem(), addr, task)
}

/// What `app run` printed, or its error (`(status, text)`).
async fn app_run(t: &TestServer, app: &str, command: &str) -> (u16, String) {
    let r = t.req("POST", &format!("/1.0/apps/{app}/run")).admin().form(&[("command", command)]).send().await;
    if r.status.as_u16() != 200 {
        return (r.status.as_u16(), r.body.trim_end_matches('\n').to_string());
    }
    let text = r.body.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).filter_map(|v| v["Message"].as_str().map(str::to_string)).collect();
    (200, text)
}

/// A provisioner entry `name` of test-http-backends: `grants`, and `outbound` as its `[plugin.outbound]` lines.
fn entry(name: &str, grants: &str, outbound: &str) -> String {
    let outbound = if outbound.is_empty() { String::new() } else { format!("[plugin.outbound]\n{outbound}\n") };
    format!(
        "[[plugin]]\nname = \"{name}\"\nkind = \"provisioner\"\npath = {:?}\ncapabilities = [{grants}]\n{outbound}",
        env!("TORII_GUEST_TEST_HTTP_BACKENDS")
    )
}

backends! {
    async fn plugins_reach_what_their_allow_list_names_and_nothing_else(b) {
        let other_hits = Arc::new(AtomicUsize::new(0));
        let hits = other_hits.clone();
        let (other, _other_task) = serve(axum::Router::new().route("/hit", axum::routing::get(move || {
            hits.fetch_add(1, Ordering::SeqCst);
            async { "reached" }
        }))).await;
        let other_port = other.port();
        let (origin, _origin_task) = serve(
            axum::Router::new()
                .route("/hello", axum::routing::get(|| async { "hello from the origin" }))
                .route("/around", axum::routing::get(|| async { axum::response::Redirect::to("/hello") }))
                .route("/away", axum::routing::get(move || async move { axum::response::Redirect::to(&format!("http://127.0.0.1:{other_port}/hit")) }))
                .route("/big", axum::routing::get(|| async { vec![b'b'; 2 << 20] }))
                .route("/slow", axum::routing::get(|| async {
                    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                    "late"
                }))
                .route("/size", axum::routing::post(|body: Bytes| async move { body.len().to_string() }))
                .layer(axum::extract::DefaultBodyLimit::max(4 << 20)),
        ).await;
        let (ca_pem, tls, _tls_task) = tls_server().await;
        let dir = tempfile::TempDir::new().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca_pem).unwrap();

        let (o, p, q) = (origin.port(), other.port(), tls.port());
        let mut opts = Options::new(b);
        opts.extra_toml = [
            entry("outside", "\"log\", \"kv\", \"app-runtime\", \"http\"", &format!(
                "allow = [\"http://127.0.0.1:{o}\", \"http://*:{o}\", \"http://localhost:{p}\", \"https://localhost:{q}\"]\n\
                 timeout_ms = 1000\nmax_request_bytes = 65536\nmax_response_bytes = 1048576\nca_files = [{ca_file:?}]"
            )),
            entry("bare", "\"log\", \"kv\", \"app-runtime\", \"http\"", &format!("allow = [\"https://localhost:{q}\"]")),
            entry("closed", "\"log\", \"kv\", \"app-runtime\"", ""),
        ].concat();
        let t = TestServer::start_with(opts).await;
        t.team("t1").await;
        for name in ["outside", "bare", "closed"] {
            t.req("POST", "/1.0/pools").admin().form(&[("name", name), ("provisioner", name)]).send().await.expect(201, "");
            t.req("POST", "/1.0/apps").admin().form(&[("name", &format!("{name}-app")), ("teamOwner", "t1"), ("pool", name)]).send().await.expect_status(201);
        }
        let allow = format!("http://127.0.0.1:{o}, http://*:{o}, http://localhost:{p}, https://localhost:{q}");

        // An allowed origin answers; a redirect within the list is followed.
        assert_eq!(app_run(&t, "outside-app", &format!("fetch http://127.0.0.1:{o}/hello")).await, (200, "200 hello from the origin\n".into()));
        assert_eq!(app_run(&t, "outside-app", &format!("fetch http://127.0.0.1:{o}/around")).await, (200, "200 hello from the origin\n".into()));

        // A host the list does not name: refused before any byte leaves.
        assert_eq!(
            app_run(&t, "outside-app", "fetch http://example.com/x?token=secret").await,
            (503, format!("GET http://example.com/x?token=secret: plugin \"outside\": http://example.com/x is not allowed: no entry of its allow-list ({allow}) matches it"))
        );
        // A redirect to a place the list does not name: refused at that hop.
        assert_eq!(
            app_run(&t, "outside-app", &format!("fetch http://127.0.0.1:{o}/away")).await,
            (503, format!("GET http://127.0.0.1:{p}/hit: plugin \"outside\": http://127.0.0.1:{p}/hit is not allowed: no entry of its allow-list ({allow}) matches it"))
        );
        assert_eq!(other_hits.load(Ordering::SeqCst), 0);

        // A name resolving to loopback passes only through an entry naming it.
        let (status, text) = app_run(&t, "outside-app", &format!("fetch http://localhost:{o}/hello")).await;
        assert_eq!(status, 503, "{text}");
        assert_eq!(
            text,
            format!("GET http://localhost:{o}/hello: plugin \"outside\": http://localhost:{o}/hello is not allowed: localhost resolves to a loopback, private or reserved address, which only an allow entry naming localhost itself lets through (it matched \"http://*:{o}\")")
        );
        assert_eq!(app_run(&t, "outside-app", &format!("fetch http://localhost:{p}/hit")).await, (200, "200 reached\n".into()));
        assert_eq!(other_hits.load(Ordering::SeqCst), 1);

        // Bytes and time are bounded.
        assert_eq!(
            app_run(&t, "outside-app", &format!("fetch http://127.0.0.1:{o}/big")).await,
            (503, format!("GET http://127.0.0.1:{o}/big: reading the response body: HTTP response body size exceeds limit: 1048576 bytes"))
        );
        assert_eq!(app_run(&t, "outside-app", &format!("post http://127.0.0.1:{o}/size 65536")).await, (200, "200 65536\n".into()));
        assert_eq!(
            app_run(&t, "outside-app", &format!("post http://127.0.0.1:{o}/size 65537")).await,
            (503, format!("POST http://127.0.0.1:{o}/size: the request body is over the 65536 bytes allowed"))
        );
        let started = std::time::Instant::now();
        assert_eq!(
            app_run(&t, "outside-app", &format!("fetch http://127.0.0.1:{o}/slow")).await,
            (503, format!("GET http://127.0.0.1:{o}/slow: the response did not come in time"))
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(4), "{:?}", started.elapsed());

        // TLS: trusted through the entry's CA file, refused without it.
        assert_eq!(app_run(&t, "outside-app", &format!("fetch https://localhost:{q}/")).await, (200, "200 hello over tls\n".into()));
        let (status, text) = app_run(&t, "bare-app", &format!("fetch https://localhost:{q}/")).await;
        assert_eq!(status, 503, "{text}");
        assert!(text.starts_with(&format!("GET https://localhost:{q}/: plugin \"bare\": TLS with https://localhost:{q}/ failed: ")) && text.contains("UnknownIssuer"), "{text}");

        // Without the grant, nothing is sent.
        assert_eq!(
            app_run(&t, "closed-app", &format!("fetch http://127.0.0.1:{o}/hello")).await,
            (503, format!("GET http://127.0.0.1:{o}/hello: plugin \"closed\": http://127.0.0.1:{o}/hello is not allowed: the plugin is not granted capability \"http\""))
        );
        t.stop().await;
    }
}

#[test]
fn outbound_config_is_checked_at_load() {
    let load = |entry: String| Config::parse(&entry).err().map(|e| e.to_string()).unwrap_or_default();
    assert_eq!(
        load(entry("x", "\"http\"", "")),
        "config: `plugin[0].capabilities`: grant \"http\" with [plugin.outbound] allow = [...], the destinations it may reach"
    );
    assert_eq!(
        load(entry("x", "\"log\"", "allow = [\"https://api.example.com\"]")),
        "config: `plugin[0].outbound`: is given, but the entry is not granted capability \"http\""
    );
    assert_eq!(
        load(entry("x", "\"http\"", "allow = [\"api.example.com\"]")),
        "config: `plugin[0].outbound.allow`: \"api.example.com\" is not an allow entry such as https://api.example.com, \
         http://127.0.0.1:2019 or https://*.example.com:* (no scheme)"
    );
    assert_eq!(load(entry("x", "\"http\"", "allow = [\"https://*.example.com:*\"]\ntimeout_ms = 0")), "config: `plugin[0].outbound`: timeouts and byte limits must be positive");
    assert_eq!(load(entry("x", "\"http\"", "allow = [\"https://*.example.com:*\", \"http://127.0.0.1:2019\"]")), "");
}

backends! {
    async fn apps_reach_what_their_torii_toml_declares_within_their_pool_policy(b) {
        use crate::deploy::{MP, tar_gz, upload};
        let (origin, _origin_task) = serve(axum::Router::new().route("/hello", axum::routing::get(|| async { "hello from the origin" }))).await;
        let o = origin.port();
        let mut opts = Options::new(b);
        opts.extra_toml = "[[pool_policy]]\npool = \"main\"\noutbound = [\"http://127.0.0.1:*\"]\n".into();
        let t = TestServer::start_with(opts).await;
        t.team("t1").await;
        t.req("POST", "/1.0/pools").admin().form(&[("name", "main"), ("default", "true")]).send().await.expect(201, "");
        t.req("POST", "/1.0/pools").admin().form(&[("name", "closed")]).send().await.expect(201, "");
        let fetch = std::fs::read(env!("TORII_GUEST_APP_FETCH")).unwrap();
        let deploy = |app: &'static str, files: Vec<(&'static str, Vec<u8>)>| {
            let t = &t;
            async move {
                let files: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (*n, b.as_slice())).collect();
                t.req("POST", &format!("/1.0/apps/{app}/deploy")).admin().raw(MP, upload(&tar_gz(&files), &[])).send().await
            }
        };
        let manifest = |hosts: &str| format!("allowed_outbound_hosts = [{hosts}]\n").into_bytes();
        for (app, pool) in [("caller", "main"), ("plain", "main"), ("shut", "closed")] {
            t.req("POST", "/1.0/apps").admin().form(&[("name", app), ("teamOwner", "t1"), ("pool", pool)]).send().await.expect_status(201);
        }

        // Declared and within the pool's policy: reached.
        let r = deploy("caller", vec![("app.wasm", fetch.clone()), ("torii.toml", manifest(&format!("\"http://127.0.0.1:{o}\"")))]).await;
        assert!(r.body.ends_with("\nOK\n"), "{}", r.body);
        let get = |app: &str, url: String| {
            let t = &t;
            let host = format!("{app}.apps.test");
            async move { t.app_get(&host, &format!("/?url={url}")).await }
        };
        assert_eq!(get("caller", format!("http://127.0.0.1:{o}/hello")).await, (200, "200 hello from the origin\n".into()));
        // Within the policy but not declared: refused.
        assert_eq!(
            get("caller", "http://127.0.0.1:9/x".into()).await,
            (502, format!("GET http://127.0.0.1:9/x: app \"caller\": http://127.0.0.1:9/x is not allowed: no entry of its allow-list (http://127.0.0.1:{o}) matches it\n"))
        );
        // Torii's own view shows what each version may reach.
        let versions = t.req("GET", "/torii/v1/apps/caller/versions").admin().send().await.json();
        assert_eq!(versions[0]["allowedOutboundHosts"], serde_json::json!([format!("http://127.0.0.1:{o}")]), "{versions}");
        assert_eq!(versions[0]["processes"], serde_json::json!([{"name": "web", "units": 1, "status": "started"}]), "{versions}");
        // Another team's member reads nothing of it.
        let outsider = t.user("outsider@example.com").await;
        t.req("GET", "/torii/v1/apps/caller/versions").token(&outsider).send().await.expect_status(403);

        // Nothing declared: nothing reached.
        let r = deploy("plain", vec![("app.wasm", fetch.clone())]).await;
        assert!(r.body.ends_with("\nOK\n"), "{}", r.body);
        assert_eq!(
            get("plain", format!("http://127.0.0.1:{o}/hello")).await,
            (502, format!("GET http://127.0.0.1:{o}/hello: app \"plain\": http://127.0.0.1:{o}/hello is not allowed: no entry of its allow-list (nothing: its torii.toml declares no allowed_outbound_hosts) matches it\n"))
        );

        // Beyond the pool's policy, or a bad torii.toml: the deploy is refused, nothing recorded.
        let r = deploy("caller", vec![("app.wasm", fetch.clone()), ("torii.toml", manifest("\"https://api.example.com\", \"http://127.0.0.1:1\""))]).await;
        assert!(r.body.contains("the app's allowed_outbound_hosts https://api.example.com go beyond what pool \"main\" lets its apps reach (http://127.0.0.1:*): ask the operator to widen its [[pool_policy]]") && !r.body.ends_with("\nOK\n"), "{}", r.body);
        let r = deploy("shut", vec![("app.wasm", fetch.clone()), ("torii.toml", manifest(&format!("\"http://127.0.0.1:{o}\"")))]).await;
        assert!(r.body.contains("go beyond what pool \"closed\" lets its apps reach (nothing)") && !r.body.ends_with("\nOK\n"), "{}", r.body);
        let r = deploy("caller", vec![("app.wasm", fetch.clone()), ("torii.toml", b"allowed_hosts = []\n".to_vec())]).await;
        assert!(r.body.contains("torii.toml: unknown field `allowed_hosts`") && !r.body.ends_with("\nOK\n"), "{}", r.body);
        let r = deploy("caller", vec![("app.wasm", fetch.clone()), ("torii.toml", manifest("\"127.0.0.1\""))]).await;
        assert!(r.body.contains("torii.toml: allowed_outbound_hosts: \"127.0.0.1\" is not an allow entry") && !r.body.ends_with("\nOK\n"), "{}", r.body);
        assert_eq!(t.req("GET", "/1.0/apps/caller").admin().send().await.json()["deploys"], 1);
        t.stop().await;
    }
}
