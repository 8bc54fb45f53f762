//! Services through the real API and the real broker plugins: a tsuru
//! service API provider (`tests/services/tsuru_service.py`) and an Open
//! Service Broker that creates real PostgreSQL databases
//! (`tests/services/osb_broker.py`, PyPI `openbrokerapi`). Both are started
//! here on loopback and stopped by pid. Without Python (or, for the
//! broker, its packages or PostgreSQL) a test says so and passes, unless
//! `TORII_TEST_REQUIRE_SERVICES=1` (as in CI).

use crate::deploy::{ECHO_ENV, MP, upload};
use crate::support::{Options, TestServer, backends, within_10s};
use serde_json::{Value, json};
use std::io::BufRead;

/// A provider process, killed when dropped.
pub(crate) struct Provider {
    child: std::process::Child,
    pub port: u16,
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn required() -> bool {
    std::env::var("TORII_TEST_REQUIRE_SERVICES").as_deref() == Ok("1")
}

/// Whether `python3` can import `modules`; says why not when it cannot.
pub(crate) fn python_has(modules: &[&str]) -> bool {
    let script = modules.iter().map(|m| format!("import {m}")).collect::<Vec<_>>().join("; ");
    let ok = std::process::Command::new("python3").args(["-c", &script]).output().is_ok_and(|o| o.status.success());
    if !ok {
        assert!(!required(), "TORII_TEST_REQUIRE_SERVICES=1 but python3 cannot import {modules:?}");
        eprintln!("service tests not run: python3 cannot import {modules:?} (.ci/run installs them)");
    }
    ok
}

impl Provider {
    /// Starts `tests/services/<script>` with `args`; waits for its `LISTENING <port>`.
    pub(crate) fn start(script: &str, args: &[&str]) -> Provider {
        Provider::start_script(&format!("services/{script}"), args)
    }

    /// Starts `tests/<script>` with `args`; waits for its `LISTENING <port>`.
    pub(crate) fn start_script(script: &str, args: &[&str]) -> Provider {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/");
        let mut child = std::process::Command::new("python3")
            .arg(format!("{path}{script}"))
            .args(["--port", "0"])
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 starts");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port = line.trim().strip_prefix("LISTENING ").and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("{script} said {line:?}"));
        Provider { child, port }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub(crate) async fn get(&self, path: &str) -> Value {
        reqwest::get(format!("{}{path}", self.url())).await.unwrap().json().await.unwrap()
    }

    pub(crate) async fn post(&self, path: &str, body: Value) {
        let r = reqwest::Client::new().post(format!("{}{path}", self.url())).json(&body).send().await.unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
    }

    /// The requests it received whose path starts with `prefix`.
    async fn calls(&self, method: &str, prefix: &str) -> Vec<Value> {
        let all = self.get("/_test/calls").await;
        all.as_array().unwrap().iter().filter(|c| c["method"] == method && c["path"].as_str().unwrap().starts_with(prefix)).cloned().collect()
    }
}

/// A server whose `tsuru` broker may reach loopback providers (2 s limit).
async fn server_with_brokers(b: crate::support::Backend) -> TestServer {
    let mut o = Options::new(b);
    o.extra_toml = "[services]\npoll_interval_ms = 200\nmax_instances_per_team = 3\n\
        [[plugin]]\nname = \"tsuru\"\nkind = \"service-broker\"\nbuiltin = \"service-tsuru\"\ncapabilities = [\"log\", \"http\"]\n\
        [plugin.outbound]\nallow = [\"http://127.0.0.1:*\"]\ntimeout_ms = 2000\n\
        [[plugin]]\nname = \"osb\"\nkind = \"service-broker\"\nbuiltin = \"service-osb\"\ncapabilities = [\"log\", \"kv\", \"http\"]\n\
        [plugin.outbound]\nallow = [\"http://127.0.0.1:*\"]\ntimeout_ms = 10000\n\
        [[pool_policy]]\npool = \"main\"\noutbound = [\"http://127.0.0.1:*\"]\n"
        .to_string();
    let t = TestServer::start_with(o).await;
    t.team("t1").await;
    t.req("POST", "/1.0/pools").admin().form(&[("name", "main"), ("default", "true")]).send().await.expect(201, "");
    t
}

/// The messages of an x-json-stream body, and its error if it ended with one.
fn stream(body: &str) -> (Vec<String>, Option<String>) {
    let mut messages = Vec::new();
    let mut error = None;
    for line in body.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        if let Some(e) = v["Error"].as_str().filter(|e| !e.is_empty()) {
            error = Some(e.to_string());
        }
        messages.push(v["Message"].as_str().unwrap_or_default().to_string());
    }
    (messages, error)
}

/// Deploys the echo-env app as `web` (it answers `?name=X` with X's value).
async fn echo_app(t: &TestServer) {
    t.req("POST", "/1.0/apps").admin().form(&[("name", "web"), ("teamOwner", "t1")]).send().await.expect_status(201);
    let r = t.req("POST", "/1.0/apps/web/deploy").admin().raw(MP, upload(&std::fs::read(ECHO_ENV).unwrap(), &[])).send().await;
    assert!(r.body.ends_with("\nOK\n"), "{}", r.body);
}

fn form_of(call: &Value, key: &str) -> Vec<String> {
    call["form"][key].as_array().map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect()).unwrap_or_default()
}

backends! {
    async fn a_tsuru_service_api_provider_serves_instances_binds_and_proxies(b) {
        if !python_has(&["json"]) {
            return;
        }
        let p = Provider::start("tsuru_service.py", &["--username", "mysql", "--password", "s3cret"]);
        let t = server_with_brokers(b).await;

        // Registered by its provider team; the password never shows.
        let endpoint = p.url();
        let create = [("id", "mysql"), ("username", "mysql"), ("password", "s3cret"), ("endpoint", endpoint.as_str()), ("team", "t1")];
        let r = t.req("POST", "/1.0/services").admin().form(&create).send().await;
        r.expect(201, "success");
        t.req("POST", "/1.0/services").admin().form(&create).send().await.expect_error(409, "Service already exists.");
        t.req("POST", "/1.0/services").admin().form(&[("id", "Bad_Name"), ("password", "x"), ("endpoint", "http://a")]).send().await
            .expect_error(400, "Invalid service id, should have at most 40 characters, containing only lower case letters, numbers or dashes, starting with a letter.");
        t.req("POST", "/1.0/services").admin().form(&[("id", "x"), ("endpoint", "http://a")]).send().await.expect_error(400, "Service password is required");
        t.req("POST", "/1.0/services").admin().form(&[("id", "x"), ("password", "p")]).send().await.expect_error(400, "At least one endpoint is required");
        let list = t.req("GET", "/1.0/services").admin().send().await;
        assert_eq!(list.json(), json!([{"service": "mysql", "instances": null, "plans": null, "service_instances": null}]));
        assert!(!list.body.contains("s3cret"));
        // Pools name the services they admit.
        assert_eq!(t.req("GET", "/1.8/pools/main").admin().send().await.json()["allowed"]["service"], json!(["mysql"]));

        // Plans come from the provider; the doc from torii.
        let plans = t.req("GET", "/1.0/services/mysql/plans").admin().send().await;
        assert_eq!(plans.json(), json!([{"Name": "small", "Description": "a small one"}, {"Name": "big", "Description": "a big one"}]));
        t.req("PUT", "/1.0/services/mysql/doc").admin().form(&[("doc", "use it well")]).send().await.expect(200, "");
        t.req("GET", "/1.0/services/mysql/doc").admin().send().await.expect(200, "use it well");

        // An instance: the provider gets tsuru's form with basic auth.
        let r = t.req("POST", "/1.0/services/mysql/instances").admin()
            .form(&[("name", "db1"), ("plan", "small"), ("owner", "t1"), ("description", "main db"), ("tag", "a"), ("tag", "b"), ("parameters.size", "10")])
            .send().await;
        r.expect(201, "");
        let created = p.calls("POST", "/resources").await;
        assert_eq!(created.len(), 1, "{created:?}");
        let c = &created[0];
        assert_eq!(c["path"], "/resources");
        assert_eq!(c["headers"]["authorization"], "Basic bXlzcWw6czNjcmV0");
        for (k, v) in [("name", vec!["db1"]), ("plan", vec!["small"]), ("team", vec!["t1"]), ("user", vec![crate::support::ADMIN]),
            ("description", vec!["main db"]), ("tag", vec!["a", "b"]), ("parameters.size", vec!["10"])] {
            assert_eq!(form_of(c, k), v, "{k} in {c}");
        }
        assert_eq!(form_of(c, "eventid").len(), 1);
        t.req("POST", "/1.0/services/mysql/instances").admin().form(&[("name", "db1"), ("plan", "small"), ("owner", "t1")]).send().await
            .expect_error(409, "instance name already exists.");
        t.req("POST", "/1.0/services/mysql/instances").admin().form(&[("name", "1db"), ("owner", "t1")]).send().await
            .expect_error(400, "invalid service instance name");

        let info = t.req("GET", "/1.0/services/mysql/instances/db1").admin().send().await;
        info.expect_status(200);
        assert_eq!(info.json(), json!({"Apps": [], "Teams": ["t1"], "TeamOwner": "t1", "Description": "main db", "PlanName": "small",
            "PlanDescription": "a small one", "Pool": "", "CustomInfo": {"Address": "db://db1", "Plan": "small"}, "Tags": ["a", "b"],
            "Parameters": {"size": "10"}}));
        t.req("GET", "/1.0/services/mysql/instances/db1/status").admin().send().await.expect(200, "Service instance \"db1\" is up");
        p.post("/_test/pending/db1", json!({})).await;
        t.req("GET", "/1.0/services/mysql/instances/db1/status").admin().send().await.expect(200, "Service instance \"db1\" is pending");
        reqwest::Client::new().delete(format!("{}/_test/pending/db1", p.url())).send().await.unwrap();

        // Bind: the provider answers the variables; the app sees them, with
        // TSURU_SERVICES, after its restart.
        echo_app(&t).await;
        let r = t.req("PUT", "/1.0/services/mysql/instances/db1/web").admin().form(&[("noRestart", "false")]).send().await;
        r.expect_status(200);
        let (messages, error) = stream(&r.body);
        assert_eq!(error, None, "{}", r.body);
        assert!(messages.contains(&"---- Setting 4 new environment variables ----\n".to_string()), "{messages:?}");
        assert!(messages.contains(&"---- Restarting the app \"web\" ----\n".to_string()), "{messages:?}");
        assert_eq!(&messages[messages.len() - 2..], [
            "\nInstance \"db1\" is now bound to the app \"web\".\n".to_string(),
            "The following environment variables are available for use in your app:\n\n- DB_HOST\n- DB_NAME\n- DB_USER\n- TSURU_SERVICES\n".to_string(),
        ]);
        let bound = p.calls("POST", "/resources/db1/bind-app").await;
        assert_eq!((form_of(&bound[0], "app-name"), form_of(&bound[0], "app-host")), (vec!["web".to_string()], vec!["web.apps.test".to_string()]));
        assert_eq!(t.app_get("web.apps.test", "/?name=DB_HOST").await, (200, "db.example\n".into()));
        let (status, services) = t.app_get("web.apps.test", "/?name=TSURU_SERVICES").await;
        assert_eq!(status, 200);
        assert_eq!(serde_json::from_str::<Value>(services.trim()).unwrap(),
            json!({"mysql": [{"instance_name": "db1", "envs": {"DB_HOST": "db.example", "DB_NAME": "db1", "DB_USER": "u_web"}}]}));
        let env = t.req("GET", "/1.0/apps/web/env").admin().send().await.json();
        let db_user = env.as_array().unwrap().iter().find(|e| e["name"] == "DB_USER").cloned();
        assert_eq!(db_user, Some(json!({"name": "DB_USER", "value": "u_web", "alias": "", "public": false})));
        let app = t.req("GET", "/1.0/apps/web").admin().send().await.json();
        assert_eq!(app["serviceInstanceBinds"], json!([{"service": "mysql", "instance": "db1", "plan": "small"}]));
        t.req("PUT", "/1.0/services/mysql/instances/db1/web").admin().send().await.expect_error(409, "app is already bound to this service instance");
        let listed = t.req("GET", "/1.0/services/instances").admin().send().await.json();
        assert_eq!(listed[0]["service_instances"][0]["apps"], json!(["web"]));

        // The proxy reaches the provider with its credentials.
        let r = t.req("GET", "/1.0/services/mysql/proxy/db1?callback=/resources/db1/echo/x%3Fy").admin().send().await;
        r.expect_status(200);
        let echoed = r.json();
        // The callback is a path with its query.
        assert_eq!((echoed["method"].clone(), echoed["path"].clone(), echoed["query"].clone()), (json!("GET"), json!("/resources/db1/echo/x"), json!("y")), "{echoed}");
        assert_eq!(echoed["headers"]["authorization"], "Basic bXlzcWw6czNjcmV0");
        let r = t.req("POST", "/1.0/services/proxy/service/mysql?callback=/echo").admin().raw("application/json", r#"{"a":1}"#).send().await;
        assert_eq!(r.json()["body"], r#"{"a":1}"#);
        t.req("GET", "/1.0/services/mysql/proxy/db1?callback=http://elsewhere/").admin().send().await.expect_status(400);
        // What torii calls itself is not for the proxy.
        t.req("DELETE", "/1.0/services/mysql/proxy/db1?callback=/resources/db1/bind-app").admin().send().await
            .expect_error(400, "proxy request DELETE \"bind-app\" is forbidden");
        t.req("POST", "/1.0/services/mysql/proxy/db1?callback=/resources/db1").admin().send().await
            .expect_error(400, "proxy request POST \"\" is forbidden");

        // Update: each changed field, compared with what is stored.
        t.req("PUT", "/1.0/services/mysql/instances/db1").admin()
            .form(&[("description", "main db"), ("tag", "a"), ("tag", "b"), ("parameters.size", "10")]).send().await
            .expect_error(400, "Neither description, team owner, tags, plan nor plan parameters were set. You must define at least one.");
        t.req("PUT", "/1.0/services/mysql/instances/db1").admin()
            .form(&[("description", "main db"), ("plan", "big"), ("tag", "a"), ("tag", "b"), ("parameters.size", "10")]).send().await.expect(200, "");
        let updated = p.calls("PUT", "/resources/db1").await;
        assert_eq!(form_of(&updated[0], "plan"), ["big"]);

        // Removing a bound instance needs unbindall.
        let r = t.req("DELETE", "/1.0/services/mysql/instances/db1").admin().send().await;
        r.expect_error(400, "Applications bound to the service \"db1\": \"web\"\n: This service instance is bound to at least one app. Unbind them before removing it");
        t.req("DELETE", "/1.0/services/mysql").admin().send().await
            .expect_error(403, "This service cannot be removed because it has instances.\nPlease remove these instances before removing the service.");

        // Unbind: the provider is told, the app restarts without the variables.
        let r = t.req("DELETE", "/1.0/services/mysql/instances/db1/web").admin().send().await;
        let (messages, error) = stream(&r.body);
        assert_eq!(error, None, "{}", r.body);
        assert_eq!(messages.last().unwrap(), "\nInstance \"db1\" is not bound to the app \"web\" anymore.\n");
        assert_eq!(p.calls("DELETE", "/resources/db1/bind-app").await.len(), 1);
        assert_eq!(t.app_get("web.apps.test", "/?name=DB_HOST").await, (404, "DB_HOST is not set\n".into()));
        assert_eq!(t.req("GET", "/1.0/apps/web").admin().send().await.json()["serviceInstanceBinds"], json!([]));

        // Bind again, then remove with unbindall.
        let r = t.req("PUT", "/1.0/services/mysql/instances/db1/web?noRestart=true").admin().send().await;
        assert_eq!(stream(&r.body).1, None, "{}", r.body);
        let r = t.req("DELETE", "/1.0/services/mysql/instances/db1?unbindall=true").admin().send().await;
        let (messages, error) = stream(&r.body);
        assert_eq!(error, None, "{}", r.body);
        assert_eq!(messages[0], "Unbind app \"web\" ...\n");
        assert_eq!(messages.last().unwrap(), "service instance successfully removed\n");
        assert_eq!(p.calls("DELETE", "/resources/db1").await.iter().filter(|c| c["path"] == "/resources/db1").count(), 1);
        t.req("GET", "/1.0/services/mysql/instances/db1").admin().send().await.expect_error(404, "service instance not found");
        t.req("DELETE", "/1.0/services/mysql").admin().send().await.expect(200, "");
    }
}

backends! {
    async fn a_provider_that_fails_leaves_nothing_half_done(b) {
        if !python_has(&["json"]) {
            return;
        }
        let p = Provider::start("tsuru_service.py", &["--username", "u", "--password", "p"]);
        let t = server_with_brokers(b).await;
        let endpoint = p.url();
        t.req("POST", "/1.0/services").admin().form(&[("id", "kv"), ("password", "p"), ("username", "u"), ("endpoint", &endpoint), ("team", "t1")])
            .send().await.expect(201, "success");

        // 500 on create: an error, no instance.
        p.post("/_test/fault", json!({"route": "POST /resources", "status": 500, "body": "boom", "times": 1})).await;
        let r = t.req("POST", "/1.0/services/kv/instances").admin().form(&[("name", "c1"), ("plan", "small"), ("owner", "t1")]).send().await;
        r.expect_error(500, "Failed to create the instance c1: invalid response: boom (code: 500)");
        t.req("GET", "/1.0/services/kv/instances/c1").admin().send().await.expect_error(404, "service instance not found");

        // Slow (past the 2 s outbound limit): an error, no instance.
        p.post("/_test/fault", json!({"route": "POST /resources", "status": 0, "delay_ms": 3000, "times": 1})).await;
        let r = t.req("POST", "/1.0/services/kv/instances").admin().form(&[("name", "c1"), ("plan", "small"), ("owner", "t1")]).send().await;
        assert_eq!(r.status, 500, "{}", r.body);
        assert!(r.body.contains("does not answer"), "{}", r.body);
        t.req("GET", "/1.0/services/kv/instances/c1").admin().send().await.expect_error(404, "service instance not found");

        t.req("POST", "/1.0/services/kv/instances").admin().form(&[("name", "c1"), ("plan", "small"), ("owner", "t1")]).send().await.expect(201, "");
        echo_app(&t).await;

        // 500 on bind: the stream ends with the error, nothing is bound.
        p.post("/_test/fault", json!({"route": "POST /resources/c1/bind-app", "status": 500, "body": "no room", "times": 1})).await;
        let r = t.req("PUT", "/1.0/services/kv/instances/c1/web").admin().send().await;
        let (_, error) = stream(&r.body);
        assert_eq!(error.as_deref(), Some("Failed to bind the instance \"kv/c1\" to the app \"web\": invalid response: no room (code: 500) (\"c1\" is up)"), "{}", r.body);
        assert_eq!(t.req("GET", "/1.0/apps/web").admin().send().await.json()["serviceInstanceBinds"], json!([]));
        assert_eq!(t.app_get("web.apps.test", "/?name=DB_HOST").await.0, 404);

        // A provider may not set the platform's variables: refused, taken back.
        p.post("/_test/fault", json!({"route": "POST /resources/c1/bind-app", "status": 201, "body": {"TSURU_APP_TOKEN": "stolen"}, "times": 1})).await;
        let r = t.req("PUT", "/1.0/services/kv/instances/c1/web").admin().send().await;
        let (_, error) = stream(&r.body);
        assert_eq!(error.as_deref(), Some("the service's answer to the bind was refused: TSURU_APP_TOKEN is set by the platform (\"c1\" is up)"), "{}", r.body);
        assert_eq!(t.req("GET", "/1.0/apps/web").admin().send().await.json()["serviceInstanceBinds"], json!([]));
        assert_eq!(p.calls("DELETE", "/resources/c1/bind-app").await.len(), 1, "the provider's bind is taken back");

        // Provider down at bind: the same.
        drop(p);
        let r = t.req("PUT", "/1.0/services/kv/instances/c1/web").admin().send().await;
        let (_, error) = stream(&r.body);
        assert!(error.as_deref().is_some_and(|e| e.contains("does not answer")), "{}", r.body);
        assert_eq!(t.req("GET", "/1.0/apps/web").admin().send().await.json()["serviceInstanceBinds"], json!([]));

        // Back, bound; 500 on unbind: still bound; forced: unbound.
        let p = Provider::start("tsuru_service.py", &["--username", "u", "--password", "p"]);
        let endpoint = p.url();
        t.req("PUT", "/1.0/services/kv").admin().form(&[("endpoint", &endpoint), ("password", "p")]).send().await.expect(200, "");
        t.req("POST", "/1.0/services/kv/instances").admin().form(&[("name", "c2"), ("plan", "small"), ("owner", "t1")]).send().await.expect(201, "");
        let r = t.req("PUT", "/1.0/services/kv/instances/c2/web").admin().send().await;
        assert_eq!(stream(&r.body).1, None, "{}", r.body);
        p.post("/_test/fault", json!({"route": "DELETE /resources/c2/bind-app", "status": 500, "body": "busy", "times": -1})).await;
        let r = t.req("DELETE", "/1.0/services/kv/instances/c2/web").admin().send().await;
        assert!(stream(&r.body).1.is_some_and(|e| e.contains("busy")), "{}", r.body);
        assert_eq!(t.req("GET", "/1.0/apps/web").admin().send().await.json()["serviceInstanceBinds"], json!([{"service": "kv", "instance": "c2", "plan": "small"}]));
        assert_eq!(t.app_get("web.apps.test", "/?name=DB_NAME").await, (200, "c2\n".into()));
        // A team owns a bounded number of instances ([services] max_instances_per_team = 3 here).
        t.req("POST", "/1.0/services/kv/instances").admin().form(&[("name", "c3"), ("plan", "small"), ("owner", "t1")]).send().await.expect(201, "");
        t.req("POST", "/1.0/services/kv/instances").admin().form(&[("name", "c4"), ("plan", "small"), ("owner", "t1")]).send().await
            .expect_error(400, "team \"t1\" owns 3 service instances, the most a team may ([services] max_instances_per_team)");
        let r = t.req("DELETE", "/1.0/services/kv/instances/c2/web?force=true").admin().send().await;
        assert_eq!(stream(&r.body).1, None, "{}", r.body);
        assert_eq!(t.req("GET", "/1.0/apps/web").admin().send().await.json()["serviceInstanceBinds"], json!([]));
        within_10s("the app runs without the variables", async || t.app_get("web.apps.test", "/?name=DB_NAME").await.0 == 404).await;
    }
}

/// The app's env value that is a PostgreSQL URL (the bind's `uri`).
async fn database_url(t: &TestServer) -> Option<String> {
    let env = t.req("GET", "/1.0/apps/web/env").admin().send().await.json();
    env.as_array().unwrap().iter().filter_map(|e| e["value"].as_str()).find(|v| v.starts_with("postgres://")).map(str::to_string)
}

async fn can_connect(url: &str) -> Result<(), String> {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(url).await.map_err(|e| e.to_string())?;
    sqlx::query("CREATE TABLE IF NOT EXISTS visits (n int)").execute(&mut c).await.map_err(|e| e.to_string())?;
    Ok(())
}

async fn database_exists(admin: &str, name: &str) -> bool {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(admin).await.unwrap();
    sqlx::query("SELECT 1 FROM pg_database WHERE datname = $1").bind(name).fetch_optional(&mut c).await.unwrap().is_some()
}

backends! {
    async fn an_open_service_broker_provisions_real_databases_that_apps_reach(b) {
        if !python_has(&["openbrokerapi", "psycopg"]) {
            return;
        }
        let Some(admin) = crate::support::postgres_admin_url() else { return };
        let prefix = format!("db_{}_{}_", std::process::id(), if b == crate::support::Backend::Sqlite { "s" } else { "p" });
        let role_prefix = format!("u{}{}_", std::process::id(), if b == crate::support::Backend::Sqlite { "s" } else { "p" });
        let broker = Provider::start("osb_broker.py", &["--username", "broker", "--password", "pw", "--pg", &admin, "--async-delay", "1",
            "--db-prefix", &prefix, "--role-prefix", &role_prefix]);
        let t = server_with_brokers(b).await;

        let config = json!({"AuthConfig": {"BasicAuthConfig": {"Username": "broker", "Password": "pw"}}, "CacheExpirationSeconds": 60});
        t.req("POST", "/1.7/brokers").admin().json(json!({"Name": "pgb", "URL": broker.url(), "Config": config})).send().await.expect(201, "");
        t.req("POST", "/1.7/brokers").admin().json(json!({"Name": "pgb", "URL": broker.url()})).send().await.expect_error(409, "Broker already exists.");
        let brokers = t.req("GET", "/1.7/brokers").admin().send().await.json();
        assert_eq!(brokers["brokers"][0]["Name"], "pgb");
        assert_eq!(brokers["brokers"][0]["Config"]["CacheExpirationSeconds"], 60);

        // The catalogue: the broker's service as pgb::postgresql, its plans with schemas.
        let listed = t.req("GET", "/1.0/services/instances").admin().send().await.json();
        assert_eq!(listed, json!([{"service": "pgb::postgresql", "instances": [], "plans": null, "service_instances": null}]));
        let plans = t.req("GET", "/1.0/services/pgb::postgresql/plans").admin().send().await.json();
        assert_eq!((plans[0]["Name"].clone(), plans[1]["Name"].clone()), (json!("sync"), json!("async")), "{plans}");
        assert!(plans[1]["Schemas"]["service_instance"]["create"]["parameters"].is_object(), "{plans}");

        // Asynchronous: created in the background, polled to success.
        t.req("POST", "/1.0/services/pgb::postgresql/instances").admin().form(&[("name", "main"), ("plan", "async"), ("owner", "t1")]).send().await.expect(201, "");
        let status = t.req("GET", "/1.0/services/pgb::postgresql/instances/main/status").admin().send().await;
        assert_eq!(status.body, "Service instance \"main\" is pending");
        within_10s("the async instance is provisioned", async || {
            t.req("GET", "/1.0/services/pgb::postgresql/instances/main/status").admin().send().await.body == "Service instance \"main\" is up"
        }).await;
        let listed = t.req("GET", "/1.0/services/instances").admin().send().await.json();
        let data = &listed[0]["service_instances"][0]["broker_data"];
        let uuid = data["UUID"].as_str().expect("broker_data has the instance's UUID").to_string();
        let database = format!("{prefix}{}", uuid.replace('-', "_").to_lowercase());
        assert!(database_exists(&admin, &database).await, "{database}");

        // Every request says the API version and who asked.
        let requests = broker.get("/_test/requests").await;
        let provision = requests.as_array().unwrap().iter().find(|r| r["method"] == "PUT").expect("a provision request").clone();
        assert!(provision["headers"]["x-broker-api-version"].as_str().unwrap() >= "2.13", "{provision}");
        assert!(provision["headers"]["x-broker-api-originating-identity"].as_str().is_some_and(|h| h.starts_with("tsuru ")), "{provision}");
        assert_eq!(provision["headers"]["authorization"], "Basic YnJva2VyOnB3");

        // Bound: the app's env holds the credentials, which reach the database.
        echo_app(&t).await;
        let r = t.req("PUT", "/1.0/services/pgb::postgresql/instances/main/web").admin().send().await;
        assert_eq!(stream(&r.body).1, None, "{}", r.body);
        let url = database_url(&t).await.expect("the bind's uri in the app's env");
        can_connect(&url).await.expect("the app's credentials reach its database");
        let (status, _) = t.app_get("web.apps.test", "/?name=TSURU_SERVICES").await;
        assert_eq!(status, 200);

        // Unbound: the credentials are revoked.
        let r = t.req("DELETE", "/1.0/services/pgb::postgresql/instances/main/web").admin().send().await;
        assert_eq!(stream(&r.body).1, None, "{}", r.body);
        assert_eq!(database_url(&t).await, None);
        assert!(can_connect(&url).await.is_err(), "unbind revokes the credentials");

        // Removed: the database is dropped.
        let r = t.req("DELETE", "/1.0/services/pgb::postgresql/instances/main").admin().send().await;
        assert_eq!(stream(&r.body).1, None, "{}", r.body);
        within_10s("the instance is gone", async || {
            t.req("GET", "/1.0/services/pgb::postgresql/instances/main/status").admin().send().await.status == 404
        }).await;
        assert!(!database_exists(&admin, &database).await, "{database} is dropped");

        // Synchronous: ready at once.
        t.req("POST", "/1.0/services/pgb::postgresql/instances").admin().form(&[("name", "quick"), ("plan", "sync"), ("owner", "t1")]).send().await.expect(201, "");
        t.req("GET", "/1.0/services/pgb::postgresql/instances/quick/status").admin().send().await.expect(200, "Service instance \"quick\" is up");
        let r = t.req("DELETE", "/1.0/services/pgb::postgresql/instances/quick").admin().send().await;
        assert_eq!(stream(&r.body).1, None, "{}", r.body);

        // An async operation that fails: the instance says so, nothing binds to it.
        broker.post("/_test/fail-next-async", json!({})).await;
        t.req("POST", "/1.0/services/pgb::postgresql/instances").admin().form(&[("name", "doomed"), ("plan", "async"), ("owner", "t1")]).send().await.expect(201, "");
        within_10s("the failed operation is recorded", async || {
            t.req("GET", "/1.0/services/pgb::postgresql/instances/doomed/status").admin().send().await.body == "Service instance \"doomed\" is failed: disk full"
        }).await;
        let r = t.req("PUT", "/1.0/services/pgb::postgresql/instances/doomed/web").admin().send().await;
        r.expect_error(400, "instance \"doomed\" is not ready: it is failed: disk full");

        // A broker with instances stays; unknown ones are 404.
        t.req("DELETE", "/1.7/brokers/pgb").admin().send().await.expect_error(400, "broker \"pgb\" has service instances: remove them before the broker");
        t.req("PUT", "/1.7/brokers/nope").admin().json(json!({"URL": broker.url()})).send().await.expect_error(404, "service broker not found");
    }
}

backends! {
    async fn service_routes_answer_each_caller_as_their_grants_say(b) {
        if !python_has(&["json"]) {
            return;
        }
        let p = Provider::start("tsuru_service.py", &["--username", "u", "--password", "p"]);
        let t = server_with_brokers(b).await;
        t.team("t2").await;
        let member = ["app", "service", "service-instance", "team"];
        t.role("member", "team", &member).await;
        let outsider = t.user("outsider@example.com").await;
        let other = t.user("other@example.com").await;
        t.assign("member", "other@example.com", "t2").await;
        let owner = t.user("owner@example.com").await;
        t.assign("member", "owner@example.com", "t1").await;
        let admin = t.login(crate::support::ADMIN, crate::support::ADMIN_PASSWORD).await;

        let endpoint = p.url();
        t.req("POST", "/1.0/services").token(&owner).form(&[("id", "mysql"), ("password", "p"), ("username", "u"), ("endpoint", &endpoint)])
            .send().await.expect(201, "success");
        for (name, who) in [("db1", &owner), ("db2", &owner)] {
            t.req("POST", "/1.0/services/mysql/instances").token(who).form(&[("name", name), ("plan", "small")]).send().await.expect(201, "");
        }
        echo_app(&t).await;

        // (method, path, form, status for outsider, other team, owner team, admin)
        let cases: Vec<(&str, &str, Vec<(&str, &str)>, [u16; 4])> = vec![
            ("GET", "/1.0/services/mysql/instances/db1", vec![], [403, 403, 200, 200]),
            ("GET", "/1.0/services/mysql/instances/db1/status", vec![], [403, 403, 200, 200]),
            ("PUT", "/1.0/services/mysql/doc", vec![("doc", "d")], [403, 403, 200, 200]),
            ("GET", "/1.0/services/mysql/proxy/db1?callback=/echo", vec![], [403, 403, 200, 200]),
            ("GET", "/1.0/services/proxy/service/mysql?callback=/echo", vec![], [403, 403, 200, 200]),
            ("GET", "/1.0/services/mysql", vec![], [200, 200, 200, 200]),
            ("GET", "/1.0/services/mysql/plans", vec![], [200, 200, 200, 200]),
            ("GET", "/1.0/services/mysql/doc", vec![], [200, 200, 200, 200]),
            ("PUT", "/1.0/services/mysql", vec![("endpoint", &endpoint)], [403, 403, 200, 200]),
            // Granted to t2 only, the service is restricted: outsiders lose its plans and docs.
            ("PUT", "/1.0/services/mysql/team/t2", vec![], [403, 403, 200, 409]),
            ("GET", "/1.0/services/mysql/plans", vec![], [403, 200, 200, 200]),
            ("GET", "/1.0/services/mysql/doc", vec![], [403, 200, 200, 200]),
            ("DELETE", "/1.0/services/mysql/team/t2", vec![], [403, 403, 403, 403]),
            ("GET", "/1.7/brokers", vec![], [403, 403, 403, 204]),
            ("POST", "/1.7/brokers", vec![("Name", "b"), ("URL", "http://127.0.0.1:1")], [403, 403, 403, 201]),
            ("PUT", "/1.7/brokers/b", vec![("URL", "http://127.0.0.1:2")], [403, 403, 403, 200]),
            ("DELETE", "/1.7/brokers/b", vec![], [403, 403, 403, 200]),
            ("PUT", "/1.0/services/mysql/instances/db2", vec![("description", "x")], [403, 403, 200, 400]),
            ("PUT", "/1.0/services/mysql/instances/permission/db2/t2", vec![], [403, 403, 200, 409]),
            // Once granted, the other team holds the instance: it may revoke itself.
            ("DELETE", "/1.0/services/mysql/instances/permission/db2/t2", vec![], [403, 200, 404, 404]),
            ("POST", "/1.0/services", vec![("id", "pg"), ("password", "p"), ("endpoint", "http://127.0.0.1:1"), ("team", "t1")], [403, 403, 201, 409]),
            ("DELETE", "/1.0/services/pg", vec![], [403, 403, 200, 404]),
        ];
        for (method, path, form, statuses) in &cases {
            for (token, want) in [&outsider, &other, &owner, &admin].into_iter().zip(statuses) {
                let r = t.req(method, path).token(token).form(form).send().await;
                assert_eq!(r.status.as_u16(), *want, "{method} {path} as {}: {}", [&outsider, &other, &owner, &admin].iter().position(|x| *x == token).unwrap(), r.body);
            }
        }

        // Lists: each caller sees what their grants reach.
        t.req("GET", "/1.0/services").token(&outsider).send().await.expect_status(204);
        t.req("GET", "/1.0/services").token(&other).send().await.expect_status(204);
        assert_eq!(t.req("GET", "/1.0/services").token(&owner).send().await.json()[0]["service"], "mysql");
        let seen = |token: &String| {
            let token = token.clone();
            let t = &t;
            async move {
                let r = t.req("GET", "/1.0/services/instances").token(&token).send().await;
                r.json()[0]["instances"].clone()
            }
        };
        // Restricted to t2: the outsider does not see the service at all.
        t.req("GET", "/1.0/services/instances").token(&outsider).send().await.expect_status(204);
        assert_eq!(seen(&other).await, json!([]));
        assert_eq!(seen(&owner).await, json!(["db1", "db2"]));

        // Bind needs the instance and the app: another team has neither.
        for token in [&outsider, &other] {
            t.req("PUT", "/1.0/services/mysql/instances/db1/web").token(token).send().await.expect_status(403);
        }
        let r = t.req("PUT", "/1.0/services/mysql/instances/db1/web?noRestart=true").token(&owner).send().await;
        assert_eq!(stream(&r.body).1, None, "{}", r.body);
        for token in [&outsider, &other] {
            t.req("DELETE", "/1.0/services/mysql/instances/db1/web").token(token).send().await.expect_status(403);
            t.req("DELETE", "/1.0/services/mysql/instances/db2").token(token).send().await.expect_status(403);
        }
    }
}

backends! {
    async fn units_are_bound_and_a_bind_whose_restart_fails_is_taken_back(b) {
        if !python_has(&["json"]) {
            return;
        }
        let p = Provider::start("tsuru_service.py", &["--username", "u", "--password", "p"]);
        // App `ext` runs on `outside` (test-http-backends): its unit has an
        // address, and its next apply can be made to fail.
        let (live, backend) = crate::converge::outside_backend().await;
        let mut o = Options::new(b);
        o.extra_toml = format!(
            "[services]\nbroker_plugin = \"tsuru\"\n\
             [[plugin]]\nname = \"tsuru\"\nkind = \"service-broker\"\nbuiltin = \"service-tsuru\"\ncapabilities = [\"log\", \"http\"]\n\
             [plugin.outbound]\nallow = [\"http://127.0.0.1:*\"]\ntimeout_ms = 2000\n{}",
            crate::converge::outside_toml(&[("ext", live.to_string())])
        );
        let t = TestServer::start_with(o).await;
        crate::converge::outside_app(&t).await;
        let r = t.req("POST", "/1.0/apps/ext/deploy").admin().raw(MP, upload(&std::fs::read(crate::deploy::HELLO).unwrap(), &[])).send().await;
        assert!(r.body.ends_with("\nOK\n"), "{}", r.body);
        let endpoint = p.url();
        t.req("POST", "/1.0/services").admin().form(&[("id", "kv"), ("password", "p"), ("username", "u"), ("endpoint", &endpoint), ("team", "t1")])
            .send().await.expect(201, "success");
        t.req("POST", "/1.0/services/kv/instances").admin().form(&[("name", "c1"), ("plan", "small"), ("owner", "t1")]).send().await.expect(201, "");

        // The restart after the bind fails: the bind is taken back, here and at the provider.
        t.req("POST", "/1.0/apps/ext/run").admin().form(&[("command", "fail-next-apply")]).send().await.expect_status(200);
        let r = t.req("PUT", "/1.0/services/kv/instances/c1/ext").admin().send().await;
        let (messages, error) = stream(&r.body);
        assert!(error.as_deref().is_some_and(|e| e.contains("(injected)")), "{}", r.body);
        assert!(messages.contains(&" ---> the app did not restart: the bind is taken back\n".to_string()), "{messages:?}");
        assert_eq!(t.req("GET", "/1.0/apps/ext").admin().send().await.json()["serviceInstanceBinds"], json!([]));
        assert_eq!((p.calls("POST", "/resources/c1/bind-app").await.len(), p.calls("DELETE", "/resources/c1/bind-app").await.len()), (1, 1));
        assert_eq!(t.app_get("ext.apps.test", "/").await, (200, "outside\n".into()), "the app runs as before");

        // Bound: each unit too, at its address; unbound: each unit first.
        let r = t.req("PUT", "/1.0/services/kv/instances/c1/ext").admin().send().await;
        assert_eq!(stream(&r.body).1, None, "{}", r.body);
        let units = p.calls("POST", "/resources/c1/bind").await;
        let units: Vec<&Value> = units.iter().filter(|c| c["path"] == "/resources/c1/bind").collect();
        assert_eq!(units.len(), 1, "{units:?}");
        assert_eq!((form_of(units[0], "unit-host"), form_of(units[0], "app-name")), (vec![live.to_string()], vec!["ext".to_string()]));
        let listed = t.req("GET", "/1.0/services/instances").admin().send().await.json();
        assert_eq!(listed[0]["service_instances"][0]["bound_units"][0]["ip"], live.to_string());
        let r = t.req("DELETE", "/1.0/services/kv/instances/c1/ext").admin().send().await;
        assert_eq!(stream(&r.body).1, None, "{}", r.body);
        let unbound: Vec<Value> = p.calls("DELETE", "/resources/c1/bind").await.into_iter().filter(|c| c["path"] == "/resources/c1/bind").collect();
        assert_eq!(form_of(&unbound[0], "unit-host"), vec![live.to_string()]);
        backend.abort();
    }
}

backends! {
    async fn a_wasm_app_reaches_its_bound_services_http_endpoints_within_its_pool_policy(b) {
        if !python_has(&["json"]) {
            return;
        }
        let p = Provider::start("tsuru_service.py", &["--username", "u", "--password", "p"]);
        let t = server_with_brokers(b).await;
        t.req("POST", "/1.0/apps").admin().form(&[("name", "web"), ("teamOwner", "t1")]).send().await.expect_status(201);
        let fetch = std::fs::read(env!("TORII_GUEST_APP_FETCH")).unwrap();
        let r = t.req("POST", "/1.0/apps/web/deploy").admin().raw(MP, upload(&fetch, &[])).send().await;
        assert!(r.body.ends_with("\nOK\n"), "{}", r.body);
        let endpoint = p.url();
        t.req("POST", "/1.0/services").admin().form(&[("id", "api"), ("password", "p"), ("username", "u"), ("endpoint", &endpoint), ("team", "t1")])
            .send().await.expect(201, "success");
        t.req("POST", "/1.0/services/api/instances").admin().form(&[("name", "a1"), ("plan", "small"), ("owner", "t1")]).send().await.expect(201, "");

        // The app declares no outbound hosts: the service's endpoint is out of reach.
        let target = format!("{endpoint}/_test/instances");
        let path = format!("/?url={}", url::form_urlencoded::byte_serialize(target.as_bytes()).collect::<String>());
        assert_eq!(t.app_get("web.apps.test", &path).await.0, 502);

        // Bound to an instance whose variables hold that URL: within pool
        // main's policy (http://127.0.0.1:*), the app reaches it.
        p.post("/_test/fault", json!({"route": "POST /resources/a1/bind-app", "status": 201, "body": {"API_URL": target}, "times": 1})).await;
        let r = t.req("PUT", "/1.0/services/api/instances/a1/web").admin().send().await;
        assert_eq!(stream(&r.body).1, None, "{}", r.body);
        let (status, body) = t.app_get("web.apps.test", &path).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.starts_with("200 {"), "{body}");

        // Unbound: out of reach again.
        let r = t.req("DELETE", "/1.0/services/api/instances/a1/web").admin().send().await;
        assert_eq!(stream(&r.body).1, None, "{}", r.body);
        assert_eq!(t.app_get("web.apps.test", &path).await.0, 502);
    }
}
