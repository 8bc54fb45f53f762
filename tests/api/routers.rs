//! Routers: the catalogue, dynamic routers, app routers, canary weights,
//! routes rebuild and TLS with per-name certificates (API-NOTES §2.9, §2.10).

use crate::deploy::{ECHO_ENV, HELLO, MP, upload};
use crate::support::{Options, TestServer, backends, within_10s};
use serde_json::json;

async fn setup(opts: Options) -> TestServer {
    let t = TestServer::start_with(opts).await;
    t.team("t1").await;
    t.req("POST", "/1.0/pools").admin().form(&[("name", "main"), ("default", "true")]).send().await.expect(201, "");
    t.req("POST", "/1.0/apps").admin().form(&[("name", "web"), ("teamOwner", "t1")]).send().await.expect_status(201);
    let hello = std::fs::read(HELLO).unwrap();
    let r = t.req("POST", "/1.0/apps/web/deploy").admin().raw(MP, upload(&hello, &[])).send().await;
    assert!(r.body.ends_with("\nOK\n"), "{}", r.body);
    t
}

backends! {
    async fn catalogue_dynamic_routers_and_app_routers(b) {
        let t = setup(Options::new(b)).await;
        let list = t.req("GET", "/1.3/routers").admin().send().await.json();
        assert_eq!(list.as_array().unwrap().len(), 1);
        let embedded = &list[0];
        assert_eq!(
            (embedded["name"].clone(), embedded["type"].clone(), embedded["config"].clone(), embedded["readinessGates"].clone(), embedded["dynamic"].clone(), embedded["default"].clone()),
            (json!("embedded"), json!("embedded"), json!({"domain": "apps.test"}), json!(null), json!(false), json!(true))
        );
        assert_eq!((embedded["info"]["domain"].clone(), embedded["info"]["tls"].clone()), (json!("apps.test"), json!("disabled")));
        assert_eq!(t.req("GET", "/plans/routers").admin().send().await.json(), list);

        // A new app gets the pool's default router; its address is the app's ip.
        let r = t.req("POST", "/1.0/apps").admin().form(&[("name", "other"), ("teamOwner", "t1")]).send().await;
        assert_eq!(r.json(), json!({"status": "success", "ip": "other.apps.test"}));
        let info = t.req("GET", "/1.0/apps/web").admin().send().await.json();
        assert_eq!((info["ip"].clone(), info["router"].clone(), info["routeropts"].clone(), info["plan"]["router"].clone()),
            (json!("web.apps.test"), json!("embedded"), json!({}), json!("embedded")));
        let embedded_app_router = json!({"name": "embedded", "opts": {}, "address": "web.apps.test", "addresses": ["web.apps.test"], "type": "embedded", "status": "ready"});
        assert_eq!(info["routers"], json!([embedded_app_router]));
        assert_eq!(t.req("GET", "/1.5/apps/web/routers").admin().send().await.json(), json!([embedded_app_router]));
        let listed = t.req("GET", "/1.0/apps").admin().send().await.json();
        assert_eq!(listed[1]["ip"], "web.apps.test");

        // Dynamic routers: validated, unique, typed.
        let add = |body: serde_json::Value| t.req("POST", "/1.8/routers").admin().json(body);
        add(json!({"name": "canary", "type": "nginx", "config": {"domain": "canary.test"}})).send().await
            .expect_error(400, "router type \"nginx\" is not known: the types are embedded");
        add(json!({"name": "canary", "type": "embedded"})).send().await
            .expect_error(400, "a router of type embedded needs config domain: a DNS name such as apps.example.com");
        add(json!({"name": "canary", "type": "embedded", "config": {"domain": "apps.test"}})).send().await
            .expect_error(400, "domain \"apps.test\" is already the domain of router \"embedded\"");
        add(json!({"Name": "canary", "Type": "embedded", "Config": {"domain": "old.test"}, "ReadinessGates": ["a"]})).send().await.expect(201, "");
        add(json!({"name": "canary", "type": "embedded", "config": {"domain": "x.test"}})).send().await.expect_error(409, "dynamic router already exists");
        add(json!({"name": "embedded", "type": "embedded", "config": {"domain": "x.test"}})).send().await.expect_error(409, "dynamic router already exists");
        t.req("PUT", "/1.8/routers/ghost").admin().json(json!({"type": "embedded", "config": {"domain": "g.test"}})).send().await
            .expect_error(404, "dynamic router not found");
        t.req("PUT", "/1.8/routers/canary").admin().json(json!({"type": "embedded", "config": {"domain": "canary.test"}})).send().await.expect(200, "");
        let list = t.req("GET", "/1.3/routers").admin().send().await.json();
        assert_eq!((list[1]["name"].clone(), list[1]["config"].clone(), list[1]["dynamic"].clone(), list[1]["readinessGates"].clone()),
            (json!("canary"), json!({"domain": "canary.test"}), json!(true), json!(null)));
        let pool = t.req("GET", "/1.8/pools/main").admin().send().await.json();
        assert_eq!(pool["allowed"]["router"], json!(["embedded", "canary"]));

        // Not linked yet: the router's domain does not serve the app.
        assert_eq!(t.app_get("web.canary.test", "/").await, (404, "no app answers at web.canary.test\n".into()));
        let link = |body: serde_json::Value| t.req("POST", "/1.5/apps/web/routers").admin().json(body);
        link(json!({"name": "ghost"})).send().await.expect_error(404, "router \"ghost\" not found");
        link(json!({"name": "canary", "opts": {"canary": "x"}})).send().await
            .expect_error(400, "invalid router option canary \"x\": it must be a percentage from 0 to 100");
        link(json!({"name": "canary", "opts": {"team": "blue"}})).send().await.expect(200, "");
        link(json!({"name": "canary"})).send().await.expect_error(500, "router already linked to this app");
        assert_eq!(t.app_get("web.canary.test", "/").await, (200, "hello from web at /\n".into()));
        assert_eq!(t.app_get("other.canary.test", "/").await.0, 404);
        let routers = t.req("GET", "/1.5/apps/web/routers").admin().send().await.json();
        assert_eq!(routers[1], json!({"name": "canary", "opts": {"team": "blue"}, "address": "web.canary.test", "addresses": ["web.canary.test"], "type": "embedded", "status": "ready"}));
        // A new domain for the router moves its apps there.
        t.req("PUT", "/1.8/routers/canary").admin().json(json!({"type": "embedded", "config": {"domain": "canary2.test"}})).send().await.expect(200, "");
        assert_eq!(t.app_get("web.canary2.test", "/").await, (200, "hello from web at /\n".into()));
        assert_eq!(t.app_get("web.canary.test", "/").await.0, 404);
        t.req("PUT", "/1.8/routers/canary").admin().json(json!({"type": "embedded", "config": {"domain": "canary.test"}})).send().await.expect(200, "");
        assert_eq!(t.app_get("web.canary.test", "/").await.0, 200);
        t.req("PUT", "/1.5/apps/web/routers/canary").admin().json(json!({"opts": {"team": "green"}})).send().await.expect(200, "");
        assert_eq!(t.req("GET", "/1.5/apps/web/routers").admin().send().await.json()[1]["opts"], json!({"team": "green"}));
        t.req("PUT", "/1.5/apps/other/routers/canary").admin().json(json!({"opts": {}})).send().await
            .expect_error(500, "router \"canary\" not found in app");
        t.req("PUT", "/1.5/apps/web/routers/ghost").admin().json(json!({"opts": {}})).send().await.expect_error(404, "router \"ghost\" not found");

        // A pool may keep routers out.
        t.req("PUT", "/1.3/constraints").admin().json(json!({"PoolExpr": "main", "Field": "router", "Values": ["canary"], "Blacklist": true})).send().await.expect_status(200);
        t.req("POST", "/1.5/apps/other/routers").admin().json(json!({"name": "canary"})).send().await
            .expect_error(400, "router \"canary\" is not available for pool \"main\". Available routers are: \"embedded\"");
        t.req("POST", "/1.0/apps").admin().form(&[("name", "third"), ("teamOwner", "t1"), ("router", "canary")]).send().await
            .expect_error(400, "router \"canary\" is not available for pool \"main\". Available routers are: \"embedded\"");
        t.req("POST", "/1.0/apps").admin().form(&[("name", "third"), ("teamOwner", "t1"), ("router", "ghost")]).send().await
            .expect_error(400, "router \"ghost\" not found");
        t.req("PUT", "/1.3/constraints").admin().json(json!({"PoolExpr": "main", "Field": "router", "Values": [], "Blacklist": true})).send().await.expect_status(200);

        // In use, a dynamic router stays.
        t.req("DELETE", "/1.8/routers/canary").admin().send().await
            .expect_error(409, "router \"canary\" is used by the apps web: remove it from them first");
        t.req("DELETE", "/1.5/apps/web/routers/canary").admin().send().await.expect(200, "");
        t.req("DELETE", "/1.5/apps/web/routers/canary").admin().send().await.expect_error(404, "router \"canary\" not found in app");
        assert_eq!(t.app_get("web.canary.test", "/").await.0, 404);
        t.req("DELETE", "/1.8/routers/canary").admin().send().await.expect(200, "");
        t.req("DELETE", "/1.8/routers/canary").admin().send().await.expect_error(404, "dynamic router not found");
        t.req("DELETE", "/1.8/routers/embedded").admin().send().await.expect_error(404, "dynamic router not found");

        // An app without routers answers nowhere, not even at its cnames.
        let r = t.req("POST", "/1.0/apps").admin().form(&[("name", "hidden"), ("teamOwner", "t1"), ("router", "none")]).send().await;
        assert_eq!(r.json(), json!({"status": "success"}));
        let info = t.req("GET", "/1.0/apps/hidden").admin().send().await.json();
        assert_eq!((info.get("ip"), info["routers"].clone(), info["plan"].get("router")), (None, json!([]), None));
        t.req("GET", "/1.5/apps/hidden/routers").admin().send().await.expect(204, "");
        assert_eq!(t.app_get("hidden.apps.test", "/").await.0, 404);

        // Routes rebuild: in step, nothing to add or remove; after the proxy
        // table lost the app's entry, the rebuild (not its dry run) restores it.
        let rebuilt = t.req("POST", "/1.0/apps/web/routes").admin().send().await.json();
        assert_eq!(rebuilt, json!({"embedded": {"PrefixResults": [{"Prefix": "", "Added": null, "Removed": null}], "Added": null, "Removed": null}}));
        assert_eq!(t.req("POST", "/1.0/apps/hidden/routes?dry=true").admin().send().await.json(), json!({}));
        t.server().store.remove_proxy_app("embedded", "web").await.unwrap();
        assert_eq!(t.app_get("web.apps.test", "/").await.0, 404);
        let added = json!({"embedded": {"PrefixResults": [{"Prefix": "", "Added": ["web.apps.test"], "Removed": null}], "Added": ["web.apps.test"], "Removed": null}});
        assert_eq!(t.req("POST", "/1.0/apps/web/routes?dry=true").admin().send().await.json(), added);
        assert_eq!(t.app_get("web.apps.test", "/").await.0, 404);
        assert_eq!(t.req("POST", "/1.0/apps/web/routes").admin().send().await.json(), added);
        assert_eq!(t.app_get("web.apps.test", "/").await, (200, "hello from web at /\n".into()));

        // Who sees what: app.create in a team sees the routers of pools its
        // teams reach, and no config without router.create.
        t.role("creator", "team", &["app.create"]).await;
        let dev = t.user("dev@example.com").await;
        t.assign("creator", "dev@example.com", "t1").await;
        t.req("PUT", "/1.3/constraints").admin().json(json!({"PoolExpr": "main", "Field": "team", "Values": ["t1"], "Blacklist": false})).send().await.expect_status(200);
        let seen = t.req("GET", "/1.3/routers").token(&dev).send().await.json();
        assert_eq!((seen[0]["name"].clone(), seen[0]["config"].clone()), (json!("embedded"), json!(null)));
        t.req("PUT", "/1.3/constraints").admin().json(json!({"PoolExpr": "main", "Field": "team", "Values": ["t2"], "Blacklist": false})).send().await.expect_status(200);
        t.req("GET", "/1.3/routers").token(&dev).send().await.expect(204, "");
        t.req("POST", "/1.8/routers").token(&dev).json(json!({"name": "x", "type": "embedded", "config": {"domain": "x.test"}})).send().await
            .expect_error(403, "You don't have permission to do this action");
        t.req("POST", "/1.5/apps/web/routers").token(&dev).json(json!({"name": "embedded"})).send().await.expect_status(403);

        // Router changes are events.
        let events = t.req("GET", "/1.1/events?kindname=router.create").admin().send().await.json();
        assert_eq!(events[0]["Target"], json!({"Type": "router", "Value": "canary"}));
        t.stop().await;
    }
}

backends! {
    async fn a_canary_option_splits_the_traffic_90_10(b) {
        let t = setup(Options::new(b)).await;
        let echo = std::fs::read(ECHO_ENV).unwrap();
        let r = t.req("POST", "/1.0/apps/web/deploy").admin().raw(MP, upload(&echo, &[("new-version", "true")])).send().await;
        assert!(r.body.ends_with("\nOK\n"), "{}", r.body);
        t.req("POST", "/1.8/apps/web/routable").admin().json(json!({"version": "2", "isRoutable": true})).send().await.expect(200, "");
        t.req("PUT", "/1.5/apps/web/routers/embedded").admin().json(json!({"opts": {"canary": "101"}})).send().await
            .expect_error(400, "invalid router option canary \"101\": it must be a percentage from 0 to 100");
        t.req("PUT", "/1.5/apps/web/routers/embedded").admin().json(json!({"opts": {"canary": "10"}})).send().await.expect(200, "");

        // Version 2 (echo-env) answers the app's name; version 1 says hello.
        let mut canary = 0;
        for _ in 0..1000 {
            let (status, body) = t.app_get("web.apps.test", "/?name=TSURU_APPNAME").await;
            assert_eq!(status, 200, "{body}");
            if body == "web\n" {
                canary += 1;
            } else {
                assert!(body.starts_with("hello from web"), "{body}");
            }
        }
        assert!((70..=130).contains(&canary), "the canary got {canary} of 1000 requests; 100 ± 30 expected");

        // All of it, then none of it.
        t.req("PUT", "/1.5/apps/web/routers/embedded").admin().form(&[("opts.canary", "100")]).send().await.expect(200, "");
        for _ in 0..20 {
            assert_eq!(t.app_get("web.apps.test", "/?name=TSURU_APPNAME").await, (200, "web\n".into()));
        }
        t.req("PUT", "/1.5/apps/web/routers/embedded").admin().json(json!({"opts": {"canary": "0"}})).send().await.expect(200, "");
        for _ in 0..20 {
            assert_eq!(t.app_get("web.apps.test", "/?name=TSURU_APPNAME").await.1, "hello from web at /?name=TSURU_APPNAME\n");
        }
        t.stop().await;
    }
}

fn self_signed(names: &[&str]) -> (String, String, Vec<u8>) {
    let c = rcgen::generate_simple_self_signed(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    (c.cert.pem(), c.key_pair.serialize_pem(), c.cert.der().to_vec())
}

backends! {
    async fn cnames_wildcards_and_swaps_route_requests(b) {
        let t = setup(Options::new(b)).await;
        t.req("POST", "/1.0/apps").admin().form(&[("name", "env"), ("teamOwner", "t1")]).send().await.expect_status(201);
        let echo = std::fs::read(ECHO_ENV).unwrap();
        let r = t.req("POST", "/1.0/apps/env/deploy").admin().raw(MP, upload(&echo, &[])).send().await;
        assert!(r.body.ends_with("\nOK\n"), "{}", r.body);
        let app_at = |host: &'static str| {
            let t = &t;
            async move {
                match t.app_get(host, "/?name=TSURU_APPNAME").await {
                    (200, name) if name == "env\n" => "env".to_string(),
                    (200, body) if body.starts_with("hello from web") => "web".to_string(),
                    (status, body) => format!("{status} {body}"),
                }
            }
        };
        t.req("POST", "/1.0/apps/web/cname").admin().form(&[("cname", "www.example.com"), ("cname", "*.example.org")]).send().await.expect(200, "");
        t.req("POST", "/1.0/apps/env/cname").admin().form(&[("cname", "env.example.com")]).send().await.expect(200, "");
        assert_eq!(app_at("www.example.com").await, "web");
        assert_eq!(app_at("Docs.Example.org").await, "web", "a wildcard cname serves every name one level down");
        assert_eq!(app_at("a.b.example.org").await, "404 no app answers at a.b.example.org\n");
        assert_eq!(app_at("env.example.com").await, "env");

        // Swapped cnames route to their new apps at once.
        t.req("POST", "/1.0/swap").admin().form(&[("app1", "web"), ("app2", "env"), ("cnameOnly", "true"), ("force", "true")]).send().await.expect(200, "");
        assert_eq!(app_at("www.example.com").await, "env");
        assert_eq!(app_at("docs.example.org").await, "env");
        assert_eq!(app_at("env.example.com").await, "web");
        assert_eq!(app_at("web.apps.test").await, "web", "the apps keep their own addresses");

        // A removed cname answers no more; a removed app nowhere.
        t.req("DELETE", "/1.0/apps/env/cname?cname=*.example.org").admin().send().await.expect(200, "");
        assert_eq!(app_at("docs.example.org").await, "404 no app answers at docs.example.org\n");
        t.req("DELETE", "/1.0/apps/env").admin().send().await.expect_status(200);
        assert_eq!(app_at("www.example.com").await, "404 no app answers at www.example.com\n");
        assert_eq!(app_at("env.apps.test").await, "404 no app answers at env.apps.test\n");
        assert!(t.server().store.proxy_routers_of("env").await.unwrap().is_empty());
        t.stop().await;
    }
}

/// An HTTP server on 127.0.0.1 standing for an app running outside torii:
/// it answers 201 with what it received, as JSON, and a header of its own.
async fn echo_backend() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    use axum::http::{HeaderMap, Method, Uri};
    async fn echo(method: Method, uri: Uri, headers: HeaderMap, body: String) -> (axum::http::StatusCode, [(&'static str, &'static str); 1], axum::Json<serde_json::Value>) {
        let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let seen = json!({
            "method": method.as_str(), "uri": uri.to_string(), "body": body, "host": h("host"),
            "forwarded_for": h("x-forwarded-for"), "forwarded_proto": h("x-forwarded-proto"),
            "forwarded_host": h("x-forwarded-host"), "custom": h("x-custom"), "private": h("x-private"),
        });
        (axum::http::StatusCode::CREATED, [("x-backend", "outside")], axum::Json(seen))
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(echo);
    (addr, tokio::spawn(async move { axum::serve(listener, app).await.unwrap() }))
}

backends! {
    async fn versions_with_http_backends_are_proxied_to_them(b) {
        let (live, backend) = echo_backend().await;
        // A port nothing listens on.
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let mut o = Options::new(b);
        o.extra_toml = format!(
            "[[plugin]]\nname = \"outside\"\nkind = \"provisioner\"\npath = {:?}\ncapabilities = [\"log\", \"kv\", \"app-runtime\"]\n\
             [plugin.config.backends]\next = [\"{live}\"]\ndown = [\"{dead}\"]\nfar = [\"192.0.2.1:80\"]\n",
            env!("TORII_GUEST_TEST_HTTP_BACKENDS")
        );
        let t = setup(o).await;
        t.req("POST", "/1.0/pools").admin().form(&[("name", "outside"), ("provisioner", "outside")]).send().await.expect(201, "");
        let hello = std::fs::read(HELLO).unwrap();
        for app in ["ext", "down", "far"] {
            t.req("POST", "/1.0/apps").admin().form(&[("name", app), ("teamOwner", "t1"), ("pool", "outside")]).send().await.expect_status(201);
        }
        let r = t.req("POST", "/1.0/apps/ext/deploy").admin().raw(MP, upload(&hello, &[])).send().await;
        assert!(r.body.contains(&format!(" ---> version 1 served by {live}\n")) && r.body.ends_with("\nOK\n"), "{}", r.body);

        // The request reaches the backend as sent, with X-Forwarded-*; the
        // answer comes back as the backend gave it; connection headers do not pass.
        let r = t.client.post(format!("{}/some/path?q=1", t.router_url())).header("host", "ext.apps.test")
            .header("x-custom", "kept").header("connection", "x-private").header("x-private", "dropped")
            .body("ping").send().await.unwrap();
        assert_eq!((r.status().as_u16(), r.headers()["x-backend"].to_str().unwrap().to_string()), (201, "outside".to_string()));
        let seen: serde_json::Value = r.json().await.unwrap();
        assert_eq!(seen, json!({"method": "POST", "uri": "/some/path?q=1", "body": "ping", "host": "ext.apps.test",
            "forwarded_for": "127.0.0.1", "forwarded_proto": "http", "forwarded_host": "ext.apps.test",
            "custom": "kept", "private": null}));
        let units = t.req("GET", "/1.0/apps/ext").admin().send().await.json()["units"].clone();
        assert_eq!((units[0]["ID"].clone(), units[0]["Status"].clone()), (json!("ext-web-v1-0"), json!("started")));

        // Stopped: the router answers for the app, the backend is not asked.
        t.req("POST", "/1.0/apps/ext/stop").admin().send().await.expect_status(200);
        assert_eq!(t.app_get("ext.apps.test", "/").await, (503, "app ext is stopped: start it with `tsuru app start -a ext`\n".into()));
        t.req("POST", "/1.0/apps/ext/start").admin().send().await.expect_status(200);
        assert_eq!(t.app_get("ext.apps.test", "/").await.0, 201);

        // A backend that does not answer is a 502 naming it.
        let r = t.req("POST", "/1.0/apps/down/deploy").admin().raw(MP, upload(&hello, &[])).send().await;
        assert!(r.body.ends_with("\nOK\n"), "{}", r.body);
        let (status, body) = t.app_get("down.apps.test", "/").await;
        assert_eq!(status, 502, "{body}");
        assert!(body.starts_with(&format!("app down version 1: its backend {dead} did not answer: ")), "{body}");

        // Only loopback addresses may be backends: the deploy says why, nothing is served.
        let r = t.req("POST", "/1.0/apps/far/deploy").admin().raw(MP, upload(&hello, &[])).send().await;
        assert!(r.body.contains("backend address \"192.0.2.1:80\" is not a loopback address with a port, such as 127.0.0.1:8000"), "{}", r.body);
        assert!(!r.body.ends_with("\nOK\n"), "{}", r.body);
        assert_eq!(t.app_get("far.apps.test", "/").await.0, 503);
        // The version the provisioner could not serve is not kept.
        assert_eq!(t.req("GET", "/1.0/apps/far").admin().send().await.json()["deploys"], 0);
        assert!(t.server().store.versions("far").await.unwrap().is_empty());
        backend.abort();
        t.stop().await;
    }
}

/// `GET /` over HTTPS to `host` on the TLS listener; the certificate served.
async fn https_get(t: &TestServer, host: &str) -> Result<(u16, String, Vec<u8>), String> {
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .tls_info(true)
        .resolve(host, t.tls_addr())
        .build()
        .unwrap();
    let r = client.get(format!("https://{host}:{}/", t.tls_addr().port())).send().await.map_err(|e| format!("{e:?}"))?;
    let cert = r.extensions().get::<reqwest::tls::TlsInfo>().and_then(|i| i.peer_certificate()).map(|c| c.to_vec()).unwrap_or_default();
    Ok((r.status().as_u16(), r.text().await.unwrap(), cert))
}

backends! {
    async fn certificates_are_validated_and_served_by_sni(b) {
        // Without a TLS listener no router supports TLS.
        let plain = setup(Options::new(b)).await;
        plain.req("GET", "/1.2/apps/web/certificate").admin().send().await.expect_error(500, "no router with tls support");
        plain.req("PUT", "/1.2/apps/web/certificate").admin().form(&[("cname", "web.apps.test")]).send().await
            .expect_error(400, "no router with tls support");
        plain.stop().await;

        let mut o = Options::new(b);
        o.router_toml = "tls_listen = \"127.0.0.1:0\"".into();
        let t = setup(o).await;
        t.req("POST", "/1.0/apps/web/cname").admin().form(&[("cname", "www.example.com")]).send().await.expect(200, "");
        assert_eq!(t.req("GET", "/1.2/apps/web/certificate").admin().send().await.json(),
            json!({"embedded": {"web.apps.test": "", "www.example.com": ""}}));

        let (cert, key, der) = self_signed(&["web.apps.test"]);
        let (www_cert, www_key, www_der) = self_signed(&["www.example.com"]);
        let (_, stranger_key, _) = self_signed(&["web.apps.test"]);
        let set = |pairs: &[(&str, &str)]| t.req("PUT", "/1.2/apps/web/certificate").admin().form(pairs);
        set(&[("certificate", &cert), ("key", &key)]).send().await.expect_error(400, "You must provide a cname.");
        set(&[("cname", "nope.example.com"), ("certificate", &cert), ("key", &key)]).send().await.expect_error(400, "invalid name");
        set(&[("cname", "www.example.com"), ("certificate", &cert), ("key", &key)]).send().await
            .expect_error(400, "x509: certificate is not valid for www.example.com");
        set(&[("cname", "web.apps.test"), ("certificate", &cert), ("key", &stranger_key)]).send().await
            .expect_error(400, "tls: private key does not match public key");
        set(&[("cname", "web.apps.test"), ("certificate", "junk"), ("key", &key)]).send().await
            .expect_error(400, "tls: failed to find any PEM data in certificate input");
        assert!(https_get(&t, "web.apps.test").await.is_err(), "no certificate yet: the handshake fails");

        set(&[("cname", "web.apps.test"), ("certificate", &cert), ("key", &key)]).send().await.expect(200, "");
        set(&[("cname", "www.example.com"), ("certificate", &www_cert), ("key", &www_key)]).send().await.expect(200, "");
        assert_eq!(t.req("GET", "/1.2/apps/web/certificate").admin().send().await.json(),
            json!({"embedded": {"web.apps.test": cert, "www.example.com": www_cert}}));

        // Each name gets its own certificate, and the app answers.
        let (status, body, served) = https_get(&t, "web.apps.test").await.unwrap();
        assert_eq!((status, body.as_str()), (200, "hello from web at /\n"));
        assert_eq!(served, der);
        let (status, _, served) = https_get(&t, "www.example.com").await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(served, www_der);
        assert!(https_get(&t, "unknown.apps.test").await.is_err());

        // The key never reaches the event log.
        let events = t.req("GET", "/1.1/events?kindname=app.update.certificate.set").admin().send().await.json();
        let data = crate::events::bson_data(&events[1]["StartCustomData"]);
        assert_eq!(data, json!([{"name": ":app", "value": "web"}, {"name": "cname", "value": "web.apps.test"},
            {"name": "certificate", "value": cert}, {"name": "key", "value": "*****"}]));

        t.req("DELETE", "/1.2/apps/web/certificate").admin().send().await.expect_error(400, "You must provide a cname.");
        t.req("DELETE", "/1.2/apps/web/certificate?cname=web.apps.test").admin().send().await.expect(200, "");
        t.req("DELETE", "/1.2/apps/web/certificate?cname=web.apps.test").admin().send().await
            .expect_error(400, "no certificate set for web.apps.test");
        assert!(https_get(&t, "web.apps.test").await.is_err());
        assert_eq!(https_get(&t, "www.example.com").await.unwrap().0, 200);
        t.stop().await;
    }
}

/// A router-API server (tsuru's router API, `reference/router-api.yaml`) of
/// the test's: backends with their options, routes and cnames; it answers
/// 503 to everything while `up` is false, and keeps the headers it saw.
#[derive(Default)]
struct ApiServer {
    up: std::sync::atomic::AtomicBool,
    backends: std::sync::Mutex<std::collections::BTreeMap<String, (serde_json::Value, std::collections::BTreeSet<String>)>>,
    tokens: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

async fn api_server() -> (std::sync::Arc<ApiServer>, std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    use axum::extract::{Path, State};
    use axum::http::{HeaderMap, Method, StatusCode};
    use axum::response::IntoResponse;
    type Shared = std::sync::Arc<ApiServer>;
    async fn handle(State(s): State<Shared>, method: Method, headers: HeaderMap, Path(rest): Path<String>, body: axum::body::Bytes) -> axum::response::Response {
        if !s.up.load(std::sync::atomic::Ordering::SeqCst) {
            return (StatusCode::SERVICE_UNAVAILABLE, "router is down").into_response();
        }
        if let Some(t) = headers.get("x-token").and_then(|v| v.to_str().ok()) {
            s.tokens.lock().unwrap().insert(t.to_string());
        }
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        let parts: Vec<&str> = rest.split('/').collect();
        let mut backends = s.backends.lock().unwrap();
        match (method.as_str(), parts.as_slice()) {
            ("GET", ["support", "cname"]) => StatusCode::OK.into_response(),
            ("GET", ["support", _]) => StatusCode::NOT_FOUND.into_response(),
            ("POST", ["backend", name]) if backends.contains_key(*name) => StatusCode::CONFLICT.into_response(),
            ("POST", ["backend", name]) => {
                backends.insert(name.to_string(), (json, Default::default()));
                StatusCode::OK.into_response()
            }
            (m, ["backend", name, ..]) if !backends.contains_key(*name) => {
                let _ = m;
                (StatusCode::NOT_FOUND, "backend not found").into_response()
            }
            ("PUT", ["backend", name]) => {
                backends.get_mut(*name).unwrap().0 = json;
                StatusCode::OK.into_response()
            }
            ("GET", ["backend", name]) => axum::Json(serde_json::json!({"address": format!("{name}.router.test")})).into_response(),
            ("DELETE", ["backend", name]) => {
                backends.remove(*name);
                StatusCode::OK.into_response()
            }
            ("GET", ["backend", name, "routes"]) => axum::Json(serde_json::json!({"addresses": backends[*name].1})).into_response(),
            ("GET", ["backend", _, "cname"]) => axum::Json(serde_json::json!({"cnames": []})).into_response(),
            (m @ ("POST" | "DELETE"), ["backend", name, "routes"]) => {
                let addresses: Vec<String> = serde_json::from_value(json["addresses"].clone()).unwrap_or_default();
                let routes = &mut backends.get_mut(*name).unwrap().1;
                for a in addresses {
                    if m == "POST" { routes.insert(a); } else { routes.remove(&a); }
                }
                StatusCode::OK.into_response()
            }
            _ => StatusCode::NOT_FOUND.into_response(),
        }
    }
    let state: Shared = std::sync::Arc::new(ApiServer::default());
    state.up.store(true, std::sync::atomic::Ordering::SeqCst);
    let app = axum::Router::new().route("/{*rest}", axum::routing::any(handle)).with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (state, addr, tokio::spawn(async move { axum::serve(listener, app).await.unwrap() }))
}


backends! {
    async fn the_api_router_drives_a_router_api_server_and_recovers_when_it_comes_back(b) {
        let (api, addr, _task) = api_server().await;
        let mut o = Options::new(b);
        o.extra_toml = format!(
            "[routers]\nresync_secs = 1\n[[plugin]]\nname = \"api\"\nkind = \"router\"\nbuiltin = \"router-api\"\n\
             capabilities = [\"log\", \"kv\", \"proxy\", \"http\"]\n[plugin.outbound]\nallow = [\"http://{addr}\"]\ntimeout_ms = 2000\n"
        );
        let t = setup(o).await;
        let config = json!({"domain": "ext.test", "api-url": format!("http://{addr}"), "headers": {"X-Token": "s3cret"}});
        t.req("POST", "/1.8/routers").admin().json(json!({"name": "edge", "type": "api", "config": config})).send().await.expect(201, "");
        t.req("POST", "/1.5/apps/web/routers").admin().json(json!({"name": "edge", "opts": {"team": "blue"}})).send().await.expect(200, "");

        // The backend exists with the app's options; the WASM app is reached
        // through torii's data plane, which answers the app's name there.
        let traffic = t.router_url();
        assert_eq!(api.backends.lock().unwrap().get("web").cloned(), Some((json!({"team": "blue"}), [traffic.clone()].into())));
        assert_eq!(api.tokens.lock().unwrap().iter().cloned().collect::<Vec<_>>(), ["s3cret"]);
        assert_eq!(t.app_get("web.ext.test", "/").await, (200, "hello from web at /\n".into()));
        let edge = async |t: &TestServer| t.req("GET", "/1.5/apps/web/routers").admin().send().await.json()[1].clone();
        assert_eq!(edge(&t).await["status"], "ready");
        // The routes rebuild speaks for the router: it serves its own
        // address (web.router.test), and a dry run shows how that differs
        // from the name torii's routes give it.
        let dry = t.req("POST", "/1.0/apps/web/routes?dry=true").admin().send().await.json();
        assert_eq!((dry["edge"]["Added"].clone(), dry["edge"]["Removed"].clone()), (json!(["web.ext.test"]), json!(["web.router.test"])), "{dry}");
        let rebuilt = t.req("POST", "/1.0/apps/web/routes").admin().send().await.json();
        assert_eq!((rebuilt["edge"]["Added"].clone(), rebuilt["edge"]["Removed"].clone()), (json!(null), json!(null)), "{rebuilt}");

        // The router goes down: a change still succeeds, the status says why...
        api.up.store(false, std::sync::atomic::Ordering::SeqCst);
        t.req("PUT", "/1.5/apps/web/routers/edge").admin().json(json!({"opts": {"team": "green"}})).send().await.expect(200, "");
        let status = edge(&t).await;
        assert_eq!(status["status"], "error", "{status}");
        assert!(status["status-detail"].as_str().unwrap().contains(&format!("POST http://{addr}/backend/web: 503 router is down")), "{status}");
        // ...and once it is back, the resync loop tells it the change.
        api.up.store(true, std::sync::atomic::Ordering::SeqCst);
        within_10s("the router is told again", async || edge(&t).await["status"] == "ready").await;
        assert_eq!(api.backends.lock().unwrap()["web"].0, json!({"team": "green"}));

        // Unlinked while it is down: it is told to forget the app once it is back.
        api.up.store(false, std::sync::atomic::Ordering::SeqCst);
        t.req("DELETE", "/1.5/apps/web/routers/edge").admin().send().await.expect(200, "");
        assert!(api.backends.lock().unwrap().contains_key("web"));
        api.up.store(true, std::sync::atomic::Ordering::SeqCst);
        within_10s("the router forgets the app", async || !api.backends.lock().unwrap().contains_key("web")).await;
        assert_eq!(t.app_get("web.ext.test", "/").await.0, 404);
        t.stop().await;
    }
}

backends! {
    // The proxy table as router plugins write it: a change writes only the
    // hosts that changed, all or nothing, and a host another app holds is
    // refused with nothing written.
    async fn the_proxy_table_changes_only_what_differs_and_refuses_a_taken_host(b) {
        use torii::store::{ProxyBackend, StoreError};
        let t = setup(Options::new(b)).await;
        t.req("POST", "/1.0/apps").admin().form(&[("name", "other"), ("teamOwner", "t1")]).send().await.expect_status(201);
        let store = &t.server().store;
        let v = |version: i64| vec![ProxyBackend { version, addresses: vec![], weight: 100 }];
        let hosts = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let points = async |host: &str| store.proxy_host(host).await.unwrap().map(|e| (e.app.clone(), e.backends[0].version));

        store.set_proxy_app("r1", "other", &hosts(&["a.example.com", "b.example.com"]), &v(1)).await.unwrap();
        store.set_proxy_app("r1", "other", &hosts(&["a.example.com", "b.example.com"]), &v(2)).await.unwrap();
        assert_eq!(points("a.example.com").await, Some(("other".into(), 2)));
        assert_eq!(points("b.example.com").await, Some(("other".into(), 2)));
        // A host dropped goes; one added comes.
        store.set_proxy_app("r1", "other", &hosts(&["b.example.com", "c.example.com"]), &v(2)).await.unwrap();
        assert_eq!(points("a.example.com").await, None);
        assert_eq!(points("c.example.com").await, Some(("other".into(), 2)));
        assert_eq!(store.proxy_hosts_of("r1", "other").await.unwrap(), ["b.example.com", "c.example.com"]);

        // Another app, or the same app on another router, cannot take a host.
        for (router, app) in [("r1", "web"), ("r2", "other")] {
            let refused = store.set_proxy_app(router, app, &hosts(&["d.example.com", "c.example.com"]), &v(7)).await;
            match refused {
                Err(StoreError::Conflict(m)) => assert_eq!(m, "c.example.com is already served by app other on router r1"),
                other => panic!("{other:?}"),
            }
            // All or nothing: the free host was not taken either.
            assert_eq!(points("d.example.com").await, None);
            assert_eq!(points("c.example.com").await, Some(("other".into(), 2)));
        }
        t.stop().await;
    }
}
