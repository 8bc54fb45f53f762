//! The `torii` binary's command-line forms, which outside scripts rely on.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_torii");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn version() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), format!("torii {}\n", env!("CARGO_PKG_VERSION")));
}

#[test]
fn bad_config_stops_startup_naming_the_key() {
    let dir = tempfile::TempDir::new().unwrap();
    let path = dir.path().join("torii.toml");
    std::fs::write(&path, "[api]\nlistne = \"127.0.0.1:1\"\n").unwrap();
    let out = Command::new(BIN).args(["serve", "--config"]).arg(&path).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("listne"), "{stderr}");

    std::fs::write(&path, "[auth]\ntoken_expire_days = 0\n").unwrap();
    let out = Command::new(BIN).args(["serve", "--config"]).arg(&path).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("auth.token_expire_days"));
}

#[tokio::test]
async fn root_user_create_then_serve() {
    // Beside the timed test, never during it (see support::TIMED).
    let _beside = crate::support::TIMED.read().await;
    let dir = tempfile::TempDir::new().unwrap();
    let port = free_port();
    let config = dir.path().join("torii.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[api]\nlisten = \"127.0.0.1:{port}\"\n[router]\nlisten = \"127.0.0.1:0\"\n[plugins]\ncache_dir = {:?}\n",
            dir.path().join("data"),
            crate::support::shared_cache_dir()
        ),
    )
    .unwrap();

    let mut child = Command::new(BIN)
        .args(["root-user-create", "root@example.com", "--config"])
        .arg(&config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"sup3r-secret\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Root user \"root@example.com\" created successfully.\n");

    let mut server = Command::new(BIN).args(["serve", "--config"]).arg(&config).stderr(Stdio::null()).spawn().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(format!("{base}/healthcheck")).send().await
            && r.status() == 200
        {
            break;
        }
        assert!(Instant::now() < deadline, "server did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let login: serde_json::Value = client
        .post(format!("{base}/1.0/auth/login"))
        .form(&[("email", "root@example.com"), ("password", "sup3r-secret")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["token"].as_str().unwrap();
    let me: serde_json::Value = client
        .get(format!("{base}/1.0/users/info"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["Roles"], serde_json::json!([{"Name": "AllowAll", "ContextType": "global", "ContextValue": ""}]));
    assert_eq!(me["Permissions"], serde_json::json!([{"Name": "", "ContextType": "global", "ContextValue": ""}]));

    // The node agents' token (tsr): printed by `agent-token`, accepted by
    // `GET /logs` only (app routes refuse it as another app's token).
    let out = Command::new(BIN).args(["agent-token", "--config"]).arg(&config).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let agent = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(agent.len(), 64, "{agent}");
    let r = client.get(format!("{base}/1.0/users/info")).bearer_auth(&agent).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["Email"], "tsr@tsuru-app-token");

    // One serving process per SQLite database.
    let second = Command::new(BIN).args(["serve", "--config"]).arg(&config).output().unwrap();
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("another torii process is serving the SQLite database")
            && stderr.contains("share PostgreSQL between several"),
        "{stderr}"
    );

    // SIGTERM: a clean stop.
    Command::new("kill").args(["-TERM", &server.id().to_string()]).status().unwrap();
    let status = server.wait().unwrap();
    assert!(status.success(), "{status:?}");
}
