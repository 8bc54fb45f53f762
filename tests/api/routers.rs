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
        o.extra_toml = crate::converge::outside_toml(&[("ext", live.to_string()), ("down", dead.to_string()), ("far", "192.0.2.1:80".into())]);
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

/// A backend written byte by byte, for what a framework would smooth over:
/// any path answers with the head and body it received (a HEAD request
/// with their length), `/chunked` with a
/// chunked body, `/rude` closes its connection after answering without
/// saying so, `/eof` answers HTTP/1.0 with a body ended by closing. It
/// counts the connections it accepts.
async fn raw_backend() -> (std::net::SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>, tokio::task::JoinHandle<()>) {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = accepted.clone();
    let serving = tokio::spawn(async move {
        loop {
            let (mut c, _) = listener.accept().await.unwrap();
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let Some(end) = read_message(&mut c, &mut buf).await else { return };
                    let message: Vec<u8> = buf.drain(..end).collect();
                    let text = String::from_utf8_lossy(&message).to_string();
                    let path = text.split(' ').nth(1).unwrap_or_default().to_string();
                    let answer = match path.as_str() {
                        "/chunked" => "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n".to_string(),
                        "/rude" => "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nrude".to_string(),
                        "/eof" => "HTTP/1.0 200 OK\r\nx-old: 1\r\n\r\nuntil close".to_string(),
                        // A HEAD answer tells the length only.
                        _ if text.starts_with("HEAD ") => format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", text.len()),
                        _ => format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{text}", text.len()),
                    };
                    if c.write_all(answer.as_bytes()).await.is_err() || path == "/rude" || path == "/eof" {
                        return;
                    }
                }
            });
        }
    });
    (addr, accepted, serving)
}

/// Reads one whole message (a head, then a `Content-Length` body) into
/// `buf`; where it ends, or `None` when the connection ends first.
async fn read_message(c: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    use tokio::io::AsyncReadExt;
    loop {
        if let Some(head) = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4) {
            let text = String::from_utf8_lossy(&buf[..head]).to_ascii_lowercase();
            let length: usize = text.lines().find_map(|l| l.strip_prefix("content-length:")).map_or(0, |v| v.trim().parse().unwrap());
            let chunked = text.contains("transfer-encoding: chunked");
            let end = if chunked { buf.windows(5).position(|w| w == b"0\r\n\r\n").map(|p| p + 5) } else { Some(head + length) };
            if let Some(end) = end.filter(|e| *e <= buf.len()) {
                return Some(end);
            }
        }
        let mut more = [0u8; 4096];
        match c.read(&mut more).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&more[..n]),
        }
    }
}

/// The next answer on a client connection to the router: its head (lower
/// case, a line each, without the date) and body (none to a HEAD request).
/// An answer with no length ends with the connection.
async fn next_answer(c: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> (String, String) {
    answer_to(c, buf, false).await
}

async fn answer_to(c: &mut tokio::net::TcpStream, buf: &mut Vec<u8>, head_request: bool) -> (String, String) {
    use tokio::io::AsyncReadExt;
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let mut more = [0u8; 4096];
        let n = c.read(&mut more).await.unwrap();
        assert!(n > 0, "the connection ended before an answer: {:?}", String::from_utf8_lossy(buf));
        buf.extend_from_slice(&more[..n]);
    };
    let head: String = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase().lines().filter(|l| !l.starts_with("date: ")).collect::<Vec<_>>().join("\n");
    if head_request {
        buf.drain(..head_end);
        return (head, String::new());
    }
    if head.contains("content-length") || head.contains("transfer-encoding") {
        let end = read_message(c, buf).await.expect("a whole answer");
        let body = String::from_utf8_lossy(&buf[head_end..end]).to_string();
        buf.drain(..end);
        return (head, body);
    }
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).await.unwrap();
    buf.extend_from_slice(&rest);
    let body = String::from_utf8_lossy(&buf[head_end..]).to_string();
    buf.clear();
    (head, body)
}

backends! {
    async fn the_byte_level_path_keeps_http_framing_and_hands_over_what_it_does_not_take(b) {
        use std::sync::atomic::Ordering;
        use tokio::io::AsyncWriteExt;
        let (addr, accepted, serving) = raw_backend().await;
        let mut o = Options::new(b);
        o.router_toml = "tls_listen = \"127.0.0.1:0\"".into();
        o.extra_toml = crate::converge::outside_toml(&[("raw", addr.to_string())]);
        let t = setup(o).await;
        t.req("POST", "/1.0/pools").admin().form(&[("name", "outside"), ("provisioner", "outside")]).send().await.expect(201, "");
        t.req("POST", "/1.0/apps").admin().form(&[("name", "raw"), ("teamOwner", "t1"), ("pool", "outside")]).send().await.expect_status(201);
        let hello = std::fs::read(HELLO).unwrap();
        let r = t.req("POST", "/1.0/apps/raw/deploy").admin().raw(MP, upload(&hello, &[])).send().await;
        assert!(r.body.ends_with("\nOK\n"), "{}", r.body);
        let router = t.router_url().trim_start_matches("http://").to_string();
        let mut c = tokio::net::TcpStream::connect(&router).await.unwrap();
        let mut buf = Vec::new();

        // Two requests in one write: each reaches the backend rewritten, on
        // one kept connection, and each answer comes back whole, in order.
        c.write_all(b"POST /echo?a=1 HTTP/1.1\r\nHost: Raw.Apps.Test:80\r\nConnection: x-private\r\nX-Private: 1\r\nx-forwarded-for: 10.1.1.1\r\n\
                       X-Forwarded-Proto: https\r\nContent-Length: 4\r\nX-Custom: kept\r\n\r\npingGET /echo HTTP/1.1\r\nhost: raw.apps.test\r\n\r\n").await.unwrap();
        let (head, body) = next_answer(&mut c, &mut buf).await;
        assert!(head.starts_with("http/1.1 200 ok\n") && head.contains("content-length: "), "{head}");
        assert_eq!(body, "POST /echo?a=1 HTTP/1.1\r\nHost: Raw.Apps.Test:80\r\nX-Custom: kept\r\nx-forwarded-for: 10.1.1.1, 127.0.0.1\r\n\
                          x-forwarded-host: Raw.Apps.Test:80\r\nx-forwarded-proto: http\r\ncontent-length: 4\r\n\r\nping");
        let (_, body) = next_answer(&mut c, &mut buf).await;
        assert!(body.starts_with("GET /echo HTTP/1.1\r\nhost: raw.apps.test\r\nx-forwarded-for: 127.0.0.1\r\n"), "{body}");

        // A chunked answer passes as it came; a HEAD answer has no body.
        c.write_all(b"GET /chunked HTTP/1.1\r\nhost: raw.apps.test\r\n\r\n").await.unwrap();
        let (head, body) = next_answer(&mut c, &mut buf).await;
        assert_eq!((head.as_str(), body.as_str()), ("http/1.1 200 ok\ntransfer-encoding: chunked\n", "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"));
        c.write_all(b"HEAD /echo HTTP/1.1\r\nhost: raw.apps.test\r\n\r\nGET /echo HTTP/1.1\r\nhost: raw.apps.test\r\n\r\n").await.unwrap();
        let (head, _) = answer_to(&mut c, &mut buf, true).await;
        assert!(head.starts_with("http/1.1 200 ok\ncontent-length: "), "{head}");
        assert!(buf.is_empty() || buf.starts_with(b"HTTP/1.1 200"), "the HEAD answer had a body: {:?}", String::from_utf8_lossy(&buf));
        let (_, body) = next_answer(&mut c, &mut buf).await;
        assert!(body.starts_with("GET /echo HTTP/1.1\r\n"), "{body}");
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "the backend connection was not kept");

        // A backend that closes after answering: the next request gets a new connection.
        for _ in 0..2 {
            c.write_all(b"GET /rude HTTP/1.1\r\nhost: raw.apps.test\r\n\r\n").await.unwrap();
            assert_eq!(next_answer(&mut c, &mut buf).await.1, "rude");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        c.write_all(b"GET /echo HTTP/1.1\r\nhost: raw.apps.test\r\n\r\n").await.unwrap();
        assert!(next_answer(&mut c, &mut buf).await.1.starts_with("GET /echo "));
        assert_eq!(accepted.load(Ordering::SeqCst), 3);

        // A request for a WASM app hands the connection to hyper, which
        // serves that request and the ones after it, whatever their app;
        // the request before it in the same write went to the backend
        // alone (its body ends where its length says, and what follows is
        // routed by its own host).
        c.write_all(b"POST /echo HTTP/1.1\r\nhost: raw.apps.test\r\ncontent-length: 2\r\n\r\nokGET /hi HTTP/1.1\r\nhost: web.apps.test\r\n\r\n\
                      GET /echo HTTP/1.1\r\nhost: raw.apps.test\r\n\r\n").await.unwrap();
        let (_, body) = next_answer(&mut c, &mut buf).await;
        assert!(body.starts_with("POST /echo HTTP/1.1\r\n") && body.ends_with("\r\n\r\nok"), "{body}");
        let (head, body) = next_answer(&mut c, &mut buf).await;
        assert_eq!((head.contains("transfer-encoding: chunked"), body.as_str()), (true, "16\r\nhello from web at /hi\n\r\n0\r\n\r\n"));
        assert!(next_answer(&mut c, &mut buf).await.1.starts_with("GET /echo HTTP/1.1\r\n"));
        // An unknown host, a chunked body, HTTP/1.0: hyper's too.
        c.write_all(b"GET / HTTP/1.1\r\nhost: nobody.apps.test\r\n\r\n").await.unwrap();
        let (head, body) = next_answer(&mut c, &mut buf).await;
        assert_eq!((head.lines().next().unwrap(), body.as_str()), ("http/1.1 404 not found", "no app answers at nobody.apps.test\n"));
        for raw in [
            &b"POST /echo HTTP/1.1\r\nhost: raw.apps.test\r\ntransfer-encoding: chunked\r\n\r\n4\r\npong\r\n0\r\n\r\n"[..],
            b"GET /echo HTTP/1.0\r\nhost: raw.apps.test\r\n\r\n",
        ] {
            let mut c = tokio::net::TcpStream::connect(&router).await.unwrap();
            c.write_all(raw).await.unwrap();
            let (head, body) = next_answer(&mut c, &mut Vec::new()).await;
            assert!(head.split_once(' ').unwrap().1.starts_with("200 ok\n"), "{head}");
            assert!(body.contains("x-forwarded-for: 127.0.0.1\r\n") && !body.contains("HTTP/1.0"), "{body}");
        }

        // Framing that could be read two ways is hyper's to judge: it reads
        // the body as chunked (RFC 9112 §6.3) and closes the connection, so
        // what followed the body never reaches the backend.
        let mut c = tokio::net::TcpStream::connect(&router).await.unwrap();
        c.write_all(b"POST /echo HTTP/1.1\r\nhost: raw.apps.test\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nhost: raw.apps.test\r\n\r\n").await.unwrap();
        let (head, body) = next_answer(&mut c, &mut Vec::new()).await;
        assert!(head.starts_with("http/1.1 200 ok\n") && head.contains("connection: close"), "{head}");
        assert!(body.starts_with("POST /echo HTTP/1.1\r\n") && !body.contains("smuggled"), "{body}");
        let mut rest = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut c, &mut rest).await.unwrap();
        assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));

        // An answer ended by closing: the client's connection ends after it.
        let mut c = tokio::net::TcpStream::connect(&router).await.unwrap();
        c.write_all(b"GET /eof HTTP/1.1\r\nhost: raw.apps.test\r\n\r\n").await.unwrap();
        let (head, body) = next_answer(&mut c, &mut Vec::new()).await;
        assert_eq!((head.as_str(), body.as_str()), ("http/1.1 200 ok\nx-old: 1\nconnection: close\n", "until close"));

        // Over HTTPS the same path serves, and says so to the backend.
        let c = rcgen::generate_simple_self_signed(vec!["raw.apps.test".to_string()]).unwrap();
        t.req("PUT", "/1.2/apps/raw/certificate").admin()
            .form(&[("cname", "raw.apps.test"), ("certificate", &c.cert.pem()), ("key", &c.key_pair.serialize_pem())]).send().await.expect(200, "");
        let (status, body, _) = https_get(&t, "raw.apps.test").await.unwrap();
        assert_eq!(status, 200);
        assert!(body.starts_with("GET / HTTP/1.1\r\n") && body.contains("\r\nx-forwarded-proto: https\r\n"), "{body}");

        // A stopped app is answered for by the router.
        t.req("POST", "/1.0/apps/raw/stop").admin().send().await.expect_status(200);
        let mut c = tokio::net::TcpStream::connect(&router).await.unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nhost: raw.apps.test\r\n\r\n").await.unwrap();
        let (head, body) = next_answer(&mut c, &mut Vec::new()).await;
        assert_eq!((head.lines().next().unwrap(), body.as_str()), ("http/1.1 503 service unavailable", "app raw is stopped: start it with `tsuru app start -a raw`\n"));
        serving.abort();
        t.stop().await;
    }
}
