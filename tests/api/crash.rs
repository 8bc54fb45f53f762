//! Crash safety: SIGKILL the real server while app operations hold locks,
//! restart it, and check that the locks expire, the app is usable again and
//! no acknowledged write was lost.

use serde_json::{Value, json};
use sqlx::Connection;
use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_torii");
const EXPIRE_SECS: u64 = 2;

/// The server process; killed when dropped, so a failing test leaves nothing behind.
struct Server(Child);

impl Server {
    fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(config: &std::path::Path) -> Server {
    Server(Command::new(BIN).args(["serve", "--config"]).arg(config).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap())
}

async fn wait_up(client: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.get(format!("{base}/healthcheck")).send().await.map(|r| r.status() != 200).unwrap_or(true) {
        assert!(Instant::now() < deadline, "server did not come up");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A root user made with the CLI, the server started and logged in as it:
/// its base URL, a client, the process and the root token.
async fn first_start(config: &std::path::Path, port: u16) -> (String, reqwest::Client, Server, String) {
    let mut create = Command::new(BIN).args(["root-user-create", "root@example.com", "--config"]).arg(config)
        .stdin(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap();
    create.stdin.take().unwrap().write_all(b"root-secret\n").unwrap();
    assert!(create.wait().unwrap().success());
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let server = start(config);
    wait_up(&client, &base).await;
    let login: Value = client.post(format!("{base}/1.0/auth/login")).form(&[("email", "root@example.com"), ("password", "root-secret")])
        .send().await.unwrap().json().await.unwrap();
    let token = login["token"].as_str().unwrap().to_string();
    (base, client, server, token)
}

fn stream_ok(body: &str) -> bool {
    body.lines().filter(|l| !l.is_empty()).all(|l| serde_json::from_str::<Value>(l).is_ok_and(|v| v.get("Error").is_none()))
        && body.contains("---- Setting 1 new environment variables ----")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_holding_locks_loses_nothing_acknowledged() {
    // Beside the timed test, never during it (see support::TIMED).
    let _beside = crate::support::TIMED.read().await;
    let dir = tempfile::TempDir::new().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let db = dir.path().join("data/torii.db");
    let config = dir.path().join("torii.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[api]\nlisten = \"127.0.0.1:{port}\"\n[router]\nlisten = \"127.0.0.1:0\"\n[events]\nlock_expire_secs = {EXPIRE_SECS}\n[plugins]\ncache_dir = {:?}\n",
            dir.path().join("data"),
            crate::support::shared_cache_dir()
        ),
    )
    .unwrap();
    let (base, client, mut server, token) = first_start(&config, port).await;
    let admin = |rb: reqwest::RequestBuilder| rb.bearer_auth(&token);
    assert_eq!(admin(client.post(format!("{base}/1.0/teams"))).form(&[("name", "t1")]).send().await.unwrap().status(), 201);
    assert_eq!(admin(client.post(format!("{base}/1.0/pools"))).form(&[("name", "main"), ("default", "true")]).send().await.unwrap().status(), 201);
    assert_eq!(admin(client.post(format!("{base}/1.0/apps"))).form(&[("name", "web"), ("teamOwner", "t1")]).send().await.unwrap().status(), 201);

    let acknowledged: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let mut caught_a_lock = false;
    let mut counter = 0usize;
    for _attempt in 0..10 {
        // Writers hammer the app with env sets.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut writers = Vec::new();
        for w in 0..6 {
            let (client, base, token, stop, acked) = (client.clone(), base.clone(), token.clone(), stop.clone(), acknowledged.clone());
            let start = counter + w * 100_000;
            writers.push(tokio::spawn(async move {
                let mut i = start;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let name = format!("V{i}");
                    i += 1;
                    let r = client.post(format!("{base}/1.0/apps/web/env")).bearer_auth(&token)
                        .json(&json!({"envs": [{"name": name, "value": "x"}], "noRestart": true})).send().await;
                    let Ok(r) = r else { continue };
                    let ok = r.status() == 200;
                    if let Ok(body) = r.text().await
                        && ok
                        && stream_ok(&body)
                    {
                        acked.lock().unwrap().insert(name);
                    }
                }
            }));
        }
        counter += 1_000_000;
        // Let writes be acknowledged first, then kill the moment the lock
        // table shows a held lock.
        let warmup = Instant::now() + Duration::from_secs(10);
        let before = acknowledged.lock().unwrap().len();
        while acknowledged.lock().unwrap().len() < before + 20 && Instant::now() < warmup {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let url = format!("sqlite://{}?mode=ro", db.display());
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let held: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM event_locks").fetch_one(&mut conn).await.unwrap_or(0);
            if held > 0 {
                break;
            }
        }
        drop(server);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for w in writers {
            w.await.unwrap();
        }
        let held: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM event_locks").fetch_one(&mut conn).await.unwrap();
        drop(conn);
        server = start(&config);
        wait_up(&client, &base).await;
        if held > 0 {
            caught_a_lock = true;
            break;
        }
    }
    assert!(caught_a_lock, "never caught the server holding a lock in 10 tries");

    // The dead process's lock expires: within the expiry (plus the API's own
    // patience) the app takes a change again.
    let started = Instant::now();
    let r = admin(client.post(format!("{base}/1.0/apps/web/env"))).json(&json!({"envs": [{"name": "AFTER", "value": "1"}]})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(stream_ok(&r.text().await.unwrap()));
    assert!(started.elapsed() < Duration::from_secs(EXPIRE_SECS + 5), "took {:?}", started.elapsed());

    // Every acknowledged write is there.
    let env: Value = admin(client.get(format!("{base}/1.0/apps/web/env"))).send().await.unwrap().json().await.unwrap();
    let present: BTreeSet<String> = env.as_array().unwrap().iter().map(|v| v["name"].as_str().unwrap().to_string()).collect();
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(!acknowledged.is_empty());
    let lost: Vec<&String> = acknowledged.iter().filter(|n| !present.contains(*n)).collect();
    assert!(lost.is_empty(), "lost acknowledged writes: {lost:?}");
    assert!(present.contains("AFTER"));

    // The interrupted event was ended with the expiry error; none is left running.
    let running: Value = admin(client.get(format!("{base}/1.1/events?running=true"))).send().await.unwrap()
        .text().await.map(|t| if t.is_empty() { Value::Null } else { serde_json::from_str(&t).unwrap() }).unwrap();
    assert_eq!(running, Value::Null, "events left running: {running}");
    let expired: Value = admin(client.get(format!("{base}/1.1/events?erroronly=true&kindname=app.update.env.set"))).send().await.unwrap().json().await.unwrap();
    assert!(expired.as_array().unwrap().iter().any(|e| e["Error"] == "event lock expired: the torii process running it stopped responding"), "{expired}");

    Command::new("kill").args(["-TERM", &server.id().to_string()]).status().unwrap();
    assert!(server.0.wait().unwrap().success());
}

/// A crash while a node added through an IaaS waits for its engine: the
/// machine was made and recorded, its node never joined. After the restart
/// healing destroys it (the inventory host is free again) and its record goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_node_add_leaves_no_orphaned_machine() {
    // Beside the timed test, never during it (see support::TIMED).
    let _beside = crate::support::TIMED.read().await;
    let dir = tempfile::TempDir::new().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = dir.path().join("torii.toml");
    let dead = dir.path().join("no-engine.sock");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[api]\nlisten = \"127.0.0.1:{port}\"\n[router]\nlisten = \"127.0.0.1:0\"\n[plugins]\ncache_dir = {:?}\n\
             [healing]\ninterval_secs = 1\norphan_machine_secs = 2\n\
             [[plugin]]\nname = \"inventory\"\nkind = \"iaas\"\nbuiltin = \"iaas-inventory\"\ncapabilities = [\"log\", \"kv\"]\n\
             [plugin.config]\nhosts = [{{ id = \"only\", address = \"unix://{}\" }}]\n",
            dir.path().join("data"),
            crate::support::shared_cache_dir(),
            dead.display()
        ),
    )
    .unwrap();
    let (base, client, server, token) = first_start(&config, port).await;
    let status = client.post(format!("{base}/1.0/pools")).bearer_auth(&token).form(&[("name", "boxes"), ("provisioner", "docker")]).send().await.unwrap().status();
    assert_eq!(status, 201);

    // The node add waits up to a minute for an engine that never answers.
    let adding = {
        let (client, base, token) = (client.clone(), base.clone(), token.clone());
        tokio::spawn(async move {
            let r = client.post(format!("{base}/1.2/node")).bearer_auth(&token)
                .form(&[("Register", "false"), ("Metadata.pool", "boxes"), ("WaitTO", "60")]).send().await;
            if let Ok(r) = r { let _ = r.text().await; }
        })
    };
    let machines = async || match client.get(format!("{base}/iaas/machines")).bearer_auth(&token).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = machines().await;
        if text.contains("\"Id\":\"only\"") {
            break;
        }
        assert!(Instant::now() < deadline, "the machine was never recorded: {text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Killed mid-wait: the machine is recorded, its node never joined.
    drop(server);
    adding.abort();

    let _server = start(&config);
    wait_up(&client, &base).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = machines().await;
        if text.trim() == "null" {
            break;
        }
        assert!(Instant::now() < deadline, "the orphaned machine is still recorded: {text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // And the inventory host was released: it can be claimed again.
    let r = client.post(format!("{base}/torii/v1/iaas/machines")).bearer_auth(&token).form(&[("iaas", "inventory")]).send().await.unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
}
