//! The `caddy` router (`plugins/router-caddy`) against a real Caddy
//! (Debian's `caddy`, started here on loopback ports with a config of its
//! own and stopped by pid). Without `caddy` the test says so and passes,
//! unless `TORII_TEST_REQUIRE_CADDY=1` (as in CI).

use crate::deploy::{HELLO, MP, upload};
use crate::support::{Options, TestServer, backends, within_10s};
use serde_json::json;
use std::net::SocketAddr;

/// A free loopback port (bound, then let go).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A Caddy process: its admin API and its HTTP server (`torii`, no routes).
struct Caddy {
    child: std::process::Child,
    admin: SocketAddr,
    http: SocketAddr,
    dir: Option<tempfile::TempDir>,
}

impl Caddy {
    fn available() -> bool {
        let found = std::process::Command::new("caddy").arg("version").output().is_ok_and(|o| o.status.success());
        if !found {
            assert!(std::env::var("TORII_TEST_REQUIRE_CADDY").as_deref() != Ok("1"), "TORII_TEST_REQUIRE_CADDY=1 but caddy is not installed");
            eprintln!("caddy tests not run: caddy is not installed (.ci/run installs it)");
        }
        found
    }

    async fn start() -> Caddy {
        let dir = tempfile::TempDir::new().unwrap();
        let (admin, http) = (SocketAddr::from(([127, 0, 0, 1], free_port())), SocketAddr::from(([127, 0, 0, 1], free_port())));
        Caddy::run(dir, admin, http).await
    }

    /// Caddy on `admin` and `http` with a fresh config (no routes).
    async fn run(dir: tempfile::TempDir, admin: SocketAddr, http: SocketAddr) -> Caddy {
        let config = json!({
            "admin": {"listen": admin.to_string()},
            "apps": {"http": {"servers": {"torii": {"listen": [http.to_string()], "routes": [], "automatic_https": {"disable": true}}}}}
        });
        let file = dir.path().join("caddy.json");
        std::fs::write(&file, config.to_string()).unwrap();
        let child = std::process::Command::new("caddy")
            .args(["run", "--config"])
            .arg(&file)
            .env("HOME", dir.path())
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .env("XDG_DATA_HOME", dir.path().join("data"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("caddy starts");
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(http).await.is_ok() && tokio::net::TcpStream::connect(admin).await.is_ok() {
                return Caddy { child, admin, http, dir: Some(dir) };
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("caddy did not listen on {admin} and {http}");
    }

    fn stop(mut self) -> (tempfile::TempDir, SocketAddr, SocketAddr) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        (self.dir.take().expect("a running caddy has its dir"), self.admin, self.http)
    }

    /// What Caddy answers for `host` (status, body).
    async fn get(&self, host: &str) -> (u16, String) {
        let r = reqwest::Client::new().get(format!("http://{}/", self.http)).header("host", host).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// Whether Caddy holds the route of `app` on router `router`.
    async fn has_route(&self, router: &str, app: &str) -> bool {
        let r = reqwest::Client::new().get(format!("http://{}/id/torii-{router}-{app}", self.admin)).send().await.unwrap();
        r.status().is_success()
    }
}

impl Drop for Caddy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}


backends! {
    async fn the_caddy_router_serves_apps_through_caddy_and_survives_its_restarts(b) {
        if !Caddy::available() {
            return;
        }
        let caddy = Caddy::start().await;
        let mut o = Options::new(b);
        o.extra_toml = format!(
            "[routers]\nresync_secs = 1\n[[plugin]]\nname = \"caddy\"\nkind = \"router\"\nbuiltin = \"router-caddy\"\n\
             capabilities = [\"log\", \"kv\", \"proxy\", \"http\"]\n[plugin.outbound]\nallow = [\"http://{}\"]\ntimeout_ms = 2000\n",
            caddy.admin
        );
        let t = TestServer::start_with(o).await;
        t.team("t1").await;
        t.req("POST", "/1.0/pools").admin().form(&[("name", "main"), ("default", "true")]).send().await.expect(201, "");
        t.req("POST", "/1.0/apps").admin().form(&[("name", "web"), ("teamOwner", "t1")]).send().await.expect_status(201);
        let config = json!({"domain": "caddy.test", "admin-url": format!("http://{}", caddy.admin)});
        t.req("POST", "/1.8/routers").admin().json(json!({"name": "edge", "type": "caddy", "config": config})).send().await.expect(201, "");
        t.req("POST", "/1.5/apps/web/routers").admin().json(json!({"name": "edge"})).send().await.expect(200, "");

        // Nothing deployed: Caddy says so; deployed: Caddy serves the WASM
        // app through torii's data plane.
        assert_eq!(caddy.get("web.caddy.test").await, (503, "app web has no routable version\n".into()));
        let r = t.req("POST", "/1.0/apps/web/deploy").admin().raw(MP, upload(&std::fs::read(HELLO).unwrap(), &[])).send().await;
        assert!(r.body.ends_with("\nOK\n"), "{}", r.body);
        assert_eq!(caddy.get("web.caddy.test").await, (200, "hello from web at /\n".into()));
        t.req("PUT", "/1.0/apps/web/units").admin().form(&[("units", "2")]).send().await.expect_status(200);
        assert_eq!(caddy.get("web.caddy.test").await, (200, "hello from web at /\n".into()));

        // Caddy restarts with no routes: the resync loop gives them back.
        let (dir, admin, http) = caddy.stop();
        let caddy = Caddy::run(dir, admin, http).await;
        within_10s("Caddy serves the app again after its restart", async || caddy.get("web.caddy.test").await.0 == 200).await;

        // Caddy down during a deploy: the deploy stands, the router says
        // error; Caddy back: it serves the new version.
        let (dir, admin, http) = caddy.stop();
        let r = t.req("POST", "/1.0/apps/web/deploy").admin().raw(MP, upload(&std::fs::read(crate::deploy::ECHO_ENV).unwrap(), &[])).send().await;
        assert!(r.body.ends_with("\nOK\n"), "{}", r.body);
        let routers = t.req("GET", "/1.5/apps/web/routers").admin().send().await.json();
        assert_eq!(routers[1]["status"], "error", "{routers}");
        let caddy = Caddy::run(dir, admin, http).await;
        within_10s("the router recovers", async || t.req("GET", "/1.5/apps/web/routers").admin().send().await.json()[1]["status"] == "ready").await;
        let (status, body) = caddy.get("web.caddy.test").await;
        assert_eq!(status, 200, "{body}");
        assert_ne!(body, "hello from web at /\n", "the new version serves");

        // An app whose main router is Caddy: its cnames are Caddy's too, and
        // a canary's traffic is shared between its versions.
        t.req("POST", "/1.0/apps").admin().form(&[("name", "site"), ("teamOwner", "t1"), ("router", "edge")]).send().await.expect_status(201);
        let r = t.req("POST", "/1.0/apps/site/deploy").admin().raw(MP, upload(&std::fs::read(HELLO).unwrap(), &[])).send().await;
        assert!(r.body.ends_with("\nOK\n"), "{}", r.body);
        t.req("POST", "/1.0/apps/site/cname").admin().form(&[("cname", "www.site.example")]).send().await.expect(200, "");
        within_10s("Caddy serves the cname", async || caddy.get("www.site.example").await == (200, "hello from site at /\n".to_string())).await;
        let echo = std::fs::read(crate::deploy::ECHO_ENV).unwrap();
        let r = t.req("POST", "/1.0/apps/site/deploy").admin().raw(MP, upload(&echo, &[("new-version", "true")])).send().await;
        assert!(r.body.ends_with("\nOK\n"), "{}", r.body);
        t.req("POST", "/1.8/apps/site/routable").admin().json(json!({"version": "2", "isRoutable": true})).send().await.expect(200, "");
        let mut answers = std::collections::BTreeSet::new();
        for _ in 0..60 {
            let r = reqwest::Client::new().get(format!("http://{}/?name=TSURU_APPNAME", caddy.http)).header("host", "site.caddy.test").send().await.unwrap();
            assert_eq!(r.status().as_u16(), 200);
            answers.insert(r.text().await.unwrap());
        }
        assert_eq!(answers, ["hello from site at /?name=TSURU_APPNAME\n".to_string(), "site\n".to_string()].into());

        // App removal takes its route out of Caddy.
        assert!(caddy.has_route("edge", "web").await);
        t.req("DELETE", "/1.0/apps/web").admin().send().await.expect_status(200);
        within_10s("Caddy forgets the app", async || !caddy.has_route("edge", "web").await).await;
        t.stop().await;
    }
}
