//! Test harness: a real torii server per test, in process, on a loopback port,
//! driven over HTTP. Every storage-touching test runs on SQLite and on
//! PostgreSQL (a fresh database per test) through [`backends!`].

use reqwest::{Method, StatusCode, header::HeaderMap};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use tempfile::TempDir;
use torii::config::Config;
use torii::server::{self, Running, Server};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Generates `sqlite` and `postgres` test functions from one async body that
/// takes a [`Backend`].
macro_rules! backends {
    ($(#[$meta:meta])* async fn $name:ident($b:ident) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            async fn run($b: $crate::support::Backend) $body

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let _beside = $crate::support::TIMED.read().await;
                run($crate::support::Backend::Sqlite).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if $crate::support::postgres_admin_url().is_some() {
                    let _beside = $crate::support::TIMED.read().await;
                    run($crate::support::Backend::Postgres).await
                }
            }
        }
    };
}
pub(crate) use backends;

/// Polls `check` every 100 ms for up to 10 s; fails naming `what`.
pub async fn within_10s(what: &str, check: impl AsyncFnMut() -> bool) {
    within(10, what, check).await
}

/// Polls `check` every 100 ms for up to `secs`; fails naming `what`.
pub async fn within(secs: u64, what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..secs * 10 {
        if check().await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{what}: not within {secs} s");
}

/// Tests that assert how fast something answers run alone: they hold this
/// for writing, every `backends!` test holds it for reading, so their
/// figures measure torii and not the other tests of the run.
/// A websocket client of the API ([`TestServer::websocket`]).
pub type WebSocket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub static TIMED: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// The admin URL of the test PostgreSQL, from `TORII_TEST_DATABASE_URL`.
/// With `TORII_TEST_REQUIRE_POSTGRES=1` (as in CI) its absence fails the test.
pub fn postgres_admin_url() -> Option<String> {
    match std::env::var("TORII_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            if std::env::var("TORII_TEST_REQUIRE_POSTGRES").as_deref() == Ok("1") {
                panic!("TORII_TEST_REQUIRE_POSTGRES=1 but TORII_TEST_DATABASE_URL is not set");
            }
            eprintln!("PostgreSQL variant not run: TORII_TEST_DATABASE_URL is not set (.ci/run sets it)");
            None
        }
    }
}

static NEXT_DB: AtomicU64 = AtomicU64::new(0);

async fn fresh_postgres_database() -> String {
    use sqlx::Connection;
    let admin = postgres_admin_url().expect("postgres url");
    let name = format!("torii_t{}_{}_{}", std::process::id(), NEXT_DB.fetch_add(1, Ordering::SeqCst), rand_suffix());
    let mut conn = sqlx::PgConnection::connect(&admin).await.expect("connect to test PostgreSQL");
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.expect("create test database");
    let (base, _) = admin.rsplit_once('/').expect("url has a database path");
    format!("{base}/{name}")
}

fn rand_suffix() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos() as u64
}

/// `scheme://host:port` of `url`: what `[egress] allow` lists.
pub fn origin(url: &str) -> String {
    let u = reqwest::Url::parse(url).expect("a URL");
    format!("{}://{}:{}", u.scheme(), u.host_str().expect("a host"), u.port_or_known_default().expect("a port"))
}

/// Compiled plugins are cached across tests, as across restarts in production.
pub fn shared_cache_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-plugin-cache");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub const ADMIN: &str = "admin@example.com";
pub const ADMIN_PASSWORD: &str = "admin-secret";

pub struct TestServer {
    pub running: Option<Running>,
    pub database_url: String,
    pub base: String,
    pub client: reqwest::Client,
    /// Holds the data dir until the server is dropped.
    pub _data: TempDir,
    pub admin_token: String,
}

pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Response {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }
    #[track_caller]
    pub fn expect(&self, status: u16, body: &str) -> &Self {
        assert_eq!((self.status.as_u16(), self.body.as_str()), (status, body));
        self
    }
    #[track_caller]
    pub fn expect_status(&self, status: u16) -> &Self {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.body);
        self
    }
    /// A tsuru plain-text error: the message plus a newline.
    #[track_caller]
    pub fn expect_error(&self, status: u16, message: &str) -> &Self {
        assert_eq!((self.status.as_u16(), self.body.as_str()), (status, format!("{message}\n").as_str()));
        assert_eq!(self.header("content-type"), "text/plain; charset=utf-8");
        self
    }
}

/// A request being built.
pub struct Req<'a> {
    server: &'a TestServer,
    method: Method,
    path: String,
    token: Option<String>,
    form: Option<Vec<(String, String)>>,
    json: Option<Value>,
    raw: Option<(String, Vec<u8>)>,
    auth_header: Option<String>,
    headers: Vec<(String, String)>,
}

impl<'a> Req<'a> {
    pub fn token(mut self, token: &str) -> Self {
        self.token = Some(token.to_string());
        self
    }
    pub fn admin(self) -> Self {
        let t = self.server.admin_token.clone();
        self.token(&t)
    }
    pub fn authorization(mut self, value: &str) -> Self {
        self.auth_header = Some(value.to_string());
        self
    }
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
    pub fn form(mut self, pairs: &[(&str, &str)]) -> Self {
        self.form = Some(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        self
    }
    pub fn json(mut self, value: Value) -> Self {
        self.json = Some(value);
        self
    }
    pub fn raw(mut self, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        self.raw = Some((content_type.to_string(), body.into()));
        self
    }
    pub async fn send(self) -> Response {
        let url = format!("{}{}", self.server.base, self.path);
        let mut rb = self.server.client.request(self.method, url);
        if let Some(t) = &self.token {
            rb = rb.header("Authorization", format!("bearer {t}"));
        }
        if let Some(h) = &self.auth_header {
            rb = rb.header("Authorization", h);
        }
        for (name, value) in &self.headers {
            rb = rb.header(name, value);
        }
        if let Some(form) = &self.form {
            let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
            rb = rb.header("Content-Type", "application/x-www-form-urlencoded").body(body);
        }
        if let Some(json) = &self.json {
            rb = rb.header("Content-Type", "application/json").body(json.to_string());
        }
        if let Some((ct, body)) = self.raw {
            rb = rb.header("Content-Type", ct).body(body);
        }
        let r = rb.send().await.expect("request reaches the server");
        let status = r.status();
        let headers = r.headers().clone();
        let body = r.text().await.expect("body");
        Response { status, headers, body }
    }
}

pub struct Options {
    pub backend: Backend,
    /// Extra TOML appended to the generated config.
    pub extra_toml: String,
    /// Extra lines inside the `[auth]` table.
    pub auth_toml: String,
    /// Extra lines inside the `[api]` table.
    pub api_toml: String,
    /// Extra lines inside the `[router]` table.
    pub router_toml: String,
    pub user_registration: bool,
    /// Join this database (another test server's) instead of a fresh one.
    pub database_url: Option<String>,
    /// The server key to use (servers sharing a database share their key).
    pub secret_key: Option<Vec<u8>>,
    /// Files written into the data dir before the server starts.
    pub data_files: Vec<(&'static str, Vec<u8>)>,
    /// `[api] listen` (default: any free loopback port).
    pub api_listen: String,
}

impl Options {
    pub fn new(backend: Backend) -> Options {
        Options {
            backend,
            extra_toml: String::new(),
            auth_toml: String::new(),
            api_toml: String::new(),
            router_toml: String::new(),
            user_registration: false,
            database_url: None,
            secret_key: None,
            data_files: Vec::new(),
            api_listen: "127.0.0.1:0".into(),
        }
    }

    /// Joins `other`'s database, with its server key, as replicas do.
    pub fn join(&mut self, other: &TestServer) {
        self.database_url = Some(other.database_url.clone());
        self.secret_key = Some(std::fs::read(other._data.path().join("secret.key")).expect("the other server's key"));
    }
}

impl TestServer {
    pub async fn start(backend: Backend) -> TestServer {
        TestServer::start_with(Options::new(backend)).await
    }

    /// Starts a server with a root user (`ADMIN`) logged in.
    pub async fn start_with(opts: Options) -> TestServer {
        let data = TempDir::new().unwrap();
        let joined = opts.database_url.is_some();
        let db_url = match (&opts.database_url, opts.backend) {
            (Some(url), _) => url.clone(),
            (None, Backend::Sqlite) => format!("sqlite://{}?mode=rwc", data.path().join("torii.db").display()),
            (None, Backend::Postgres) => fresh_postgres_database().await,
        };
        let toml = format!(
            "data_dir = {:?}\n{}\n[database]\nurl = {:?}\nmax_connections = 8\n[api]\nlisten = {:?}\n{}\n\
             [router]\nlisten = \"127.0.0.1:0\"\ndomain = \"apps.test\"\n{}\n[auth]\nuser_registration = {}\n{}\n[plugins]\ncache_dir = {:?}\n",
            data.path(),
            "",
            db_url,
            opts.api_listen,
            opts.api_toml,
            opts.router_toml,
            opts.user_registration,
            opts.auth_toml,
            shared_cache_dir(),
        );
        let toml = format!("{toml}{}", opts.extra_toml);
        if let Some(key) = &opts.secret_key {
            std::fs::write(data.path().join("secret.key"), key).unwrap();
        }
        for (name, bytes) in &opts.data_files {
            std::fs::write(data.path().join(name), bytes).unwrap();
        }
        let config = Config::parse(&toml).unwrap_or_else(|e| panic!("test config: {e}\n{toml}"));
        let scheme_is_native = config.auth.scheme == "native";
        let server = Server::build(config).await.expect("server builds");
        if scheme_is_native && !joined {
            make_root(&server, ADMIN, ADMIN_PASSWORD).await;
        }
        let running = server::start(server, None).await.expect("server starts");
        let base = format!("http://{}", running.addr);
        let mut ts = TestServer {
            running: Some(running),
            database_url: db_url,
            base,
            client: reqwest::Client::new(),
            _data: data,
            admin_token: String::new(),
        };
        if scheme_is_native {
            ts.admin_token = ts.login(ADMIN, ADMIN_PASSWORD).await;
        }
        ts
    }

    /// Where app traffic arrives: the embedded router's data plane.
    pub fn router_url(&self) -> String {
        format!("http://{}", self.running.as_ref().unwrap().router_addr)
    }

    /// Where HTTPS app traffic arrives, when `[router] tls_listen` is set.
    pub fn tls_addr(&self) -> std::net::SocketAddr {
        self.running.as_ref().unwrap().tls_addr.expect("[router] tls_listen is set")
    }

    /// `GET path` through the router to `host`; answers status and body.
    /// A websocket to `path` (with its query) on the API, as `token`
    /// (none: anonymous); the upgrade must be answered with 101.
    pub async fn websocket(&self, path: &str, token: Option<&str>) -> WebSocket {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = format!("{}{path}", self.base.replacen("http://", "ws://", 1)).into_client_request().unwrap();
        if let Some(token) = token {
            let value = tokio_tungstenite::tungstenite::http::HeaderValue::from_str(&format!("bearer {token}")).unwrap();
            request.headers_mut().insert("Authorization", value);
        }
        let (socket, response) = tokio_tungstenite::connect_async(request).await.expect("the upgrade is answered");
        assert_eq!(response.status(), 101);
        socket
    }

    pub async fn app_get(&self, host: &str, path: &str) -> (u16, String) {
        let r = self.client.get(format!("{}{path}", self.router_url())).header("host", host).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// The in-process server, for tests that reach below the API.
    pub fn server(&self) -> &std::sync::Arc<Server> {
        &self.running.as_ref().unwrap().server
    }

    pub fn req(&self, method: &str, path: &str) -> Req<'_> {
        Req {
            server: self,
            method: Method::from_bytes(method.as_bytes()).unwrap(),
            path: path.to_string(),
            token: None,
            form: None,
            json: None,
            raw: None,
            auth_header: None,
            headers: Vec::new(),
        }
    }

    pub async fn login(&self, email: &str, password: &str) -> String {
        let r = self.req("POST", "/1.0/auth/login").form(&[("email", email), ("password", password)]).send().await;
        assert_eq!(r.status, 200, "login {email}: {}", r.body);
        r.json()["token"].as_str().unwrap().to_string()
    }

    /// Creates a user (as admin) and logs them in.
    pub async fn user(&self, email: &str) -> String {
        self.req("POST", "/1.0/users").admin().form(&[("email", email), ("password", "123456")]).send().await.expect_status(201);
        self.login(email, "123456").await
    }

    pub async fn team(&self, name: &str) {
        self.req("POST", "/1.0/teams").admin().form(&[("name", name)]).send().await.expect_status(201);
    }

    /// Creates `role` with `context` holding `permissions`.
    pub async fn role(&self, name: &str, context: &str, permissions: &[&str]) {
        self.req("POST", "/1.0/roles").admin().form(&[("name", name), ("context", context)]).send().await.expect_status(201);
        if !permissions.is_empty() {
            let pairs: Vec<(&str, &str)> = permissions.iter().map(|p| ("permission", *p)).collect();
            self.req("POST", &format!("/1.0/roles/{name}/permissions")).admin().form(&pairs).send().await.expect_status(200);
        }
    }

    pub async fn assign(&self, role: &str, email: &str, context: &str) {
        self.req("POST", &format!("/1.0/roles/{role}/user"))
            .admin()
            .form(&[("email", email), ("context", context)])
            .send()
            .await
            .expect_status(200);
    }

    pub async fn stop(mut self) {
        self.halt().await;
    }

    /// Stops the server as SIGTERM does, keeping its database (a server
    /// joined to it reads what it left).
    pub async fn halt(&mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
    }
}

/// What `torii root-user-create` does, without the process.
pub async fn make_root(server: &Server, email: &str, password: &str) {
    use torii::store::{RoleRecord, SubjectKind};
    torii::api::users::create_user(server, email, password).await.expect("root user");
    let role = RoleRecord {
        name: "AllowAll".into(),
        context_type: "global".into(),
        description: String::new(),
        schemes: vec!["*".into()],
        events: vec![],
    };
    let _ = server.store.create_role(&role).await;
    server.store.bind_role(SubjectKind::User, email, "AllowAll", "").await.unwrap();
}
