//! `GET /apps/{app}/shell` (API-NOTES §2.21): a real websocket client against
//! a real container unit on the engines of `.ci/docker-engines`: a terminal
//! that runs commands, has the window size asked for and ends with the
//! shell; isolated shells in a container of their own; the upgrade first,
//! then `Error: ...` frames for what is refused; pings, and a client that
//! answers none dropped; shells per app bounded.

use crate::docker::{ENGINES, add_node, containers, images, nodes, stream_errors, unique};
use crate::support::{Backend, Options, TestServer};
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use crate::support::WebSocket as Socket;

/// Opens the shell websocket of `app` with `query`, as `token` (none: anonymous).
async fn connect(t: &TestServer, app: &str, query: &str, token: Option<&str>) -> Socket {
    t.websocket(&format!("/1.0/apps/{app}/shell?{query}"), token).await
}

/// The next message that is no ping, within 10 s (`None`: the connection ended).
async fn next(socket: &mut Socket) -> Option<Message> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), socket.next()).await.expect("a message within 10 s") {
            Some(Ok(Message::Ping(_))) => continue,
            Some(Ok(m)) => return Some(m),
            Some(Err(_)) | None => return None,
        }
    }
}

/// Terminal text until it contains `wanted`; all of it.
async fn read_until(socket: &mut Socket, wanted: &str) -> String {
    let mut seen = String::new();
    while !seen.contains(wanted) {
        match next(socket).await {
            Some(Message::Text(t)) => seen.push_str(&t),
            other => panic!("waiting for {wanted:?} after {seen:?}: got {other:?}"),
        }
    }
    seen
}

/// The refusal a shell gets: one `Error: ...` text message, then a normal close.
async fn expect_refusal(socket: &mut Socket, message: &str) {
    match next(socket).await {
        Some(Message::Text(t)) => assert_eq!(t.as_str(), format!("Error: {message}\n")),
        other => panic!("expected the error {message:?}, got {other:?}"),
    }
    expect_close(socket).await;
}

async fn expect_close(socket: &mut Socket) {
    match next(socket).await {
        Some(Message::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::Normal),
        other => panic!("expected a normal close, got {other:?}"),
    }
}

async fn send(socket: &mut Socket, text: &str) {
    socket.send(Message::Text(text.into())).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shells_run_in_real_container_units() {
    let Some(nodes) = nodes() else { return };
    let _beside = crate::support::TIMED.read().await;
    let _shared = ENGINES.read().await;
    images(&nodes).await;
    let mut opts = Options::new(Backend::Sqlite);
    opts.extra_toml = "[shell]\nping_interval_secs = 1\npong_timeout_secs = 3\nmax_per_app = 2\n".into();
    let t = TestServer::start_with(opts).await;
    t.team("t1").await;
    let pool = unique("sh", Backend::Sqlite);
    t.req("POST", "/1.0/pools").admin().form(&[("name", pool.as_str()), ("provisioner", "docker")]).send().await.expect(201, "");
    let r = add_node(&t, &nodes[0], &pool).await;
    assert_eq!(stream_errors(&r.body), Vec::<String>::new(), "{}", r.body);
    let app = unique("shell", Backend::Sqlite);
    t.req("POST", "/1.0/apps").admin().form(&[("name", app.as_str()), ("teamOwner", "t1"), ("pool", pool.as_str())]).send().await.expect_status(201);
    let r = t.req("POST", &format!("/1.0/apps/{app}/deploy")).admin().form(&[("image", "torii-test/httpd:1")]).send().await;
    assert!(r.body.ends_with("\nOK\n"), "{}", r.body);
    let unit = t.req("GET", &format!("/1.0/apps/{app}")).admin().send().await.json()["units"][0]["Name"].as_str().unwrap().to_string();

    // A terminal in the unit: commands run there, the window has the size
    // asked for, and the websocket closes when the shell ends.
    let mut shell = connect(&t, &app, "width=101&height=33&term=xterm-256color", Some(&t.admin_token)).await;
    send(&mut shell, "echo hello-$((40+2)) $TERM\n").await;
    read_until(&mut shell, "hello-42 xterm-256color").await;
    send(&mut shell, "stty size; cat /www/index.html; hostname\n").await;
    let seen = read_until(&mut shell, "hello from v1").await;
    assert!(seen.contains("33 101"), "{seen:?}");
    send(&mut shell, "exit\n").await;
    loop {
        match next(&mut shell).await {
            Some(Message::Text(_)) => continue,
            Some(Message::Close(Some(frame))) => {
                assert_eq!(frame.code, CloseCode::Normal);
                break;
            }
            other => panic!("expected the close after exit, got {other:?}"),
        }
    }

    // A named unit: found by its name; an unknown one refused.
    let mut shell = connect(&t, &app, &format!("unit={unit}"), Some(&t.admin_token)).await;
    send(&mut shell, "echo in-$TSURU_APPNAME; exit\n").await;
    read_until(&mut shell, &format!("in-{app}")).await;
    let mut shell = connect(&t, &app, "unit=nosuchunit", Some(&t.admin_token)).await;
    expect_refusal(&mut shell, "unit \"nosuchunit\" not found").await;

    // Isolated: a container of its own with the app's env, gone with the shell.
    let mut shell = connect(&t, &app, "isolated=true", Some(&t.admin_token)).await;
    send(&mut shell, "echo isolated-$TSURU_APPNAME\n").await;
    read_until(&mut shell, &format!("isolated-{app}")).await;
    assert_eq!(containers(&nodes[0], &format!("torii.run={app}")).len(), 1);
    send(&mut shell, "exit\n").await;
    while let Some(Message::Text(_)) = next(&mut shell).await {}
    crate::support::within_10s("the isolated shell's container goes", async || containers(&nodes[0], &format!("torii.run={app}")).is_empty()).await;

    // A shell that does not read what is typed (a foreground sleep) does not
    // hold the server: past a bounded queue the shell is closed with why.
    let mut shell = connect(&t, &app, "", Some(&t.admin_token)).await;
    send(&mut shell, "sleep 60\n").await;
    let paste = "x".repeat(60 * 1024);
    let mut error = None;
    for _ in 0..400 {
        // A server that stopped reading would hold this send forever.
        let sent = tokio::time::timeout(Duration::from_secs(15), shell.send(Message::Text(paste.as_str().into())))
            .await
            .expect("the server keeps taking input until it gives up on the shell");
        if sent.is_err() {
            break;
        }
        if let Ok(Some(Ok(Message::Text(t)))) = tokio::time::timeout(Duration::from_millis(5), shell.next()).await
            && t.starts_with("Error: ")
        {
            error = Some(t.to_string());
            break;
        }
    }
    let error = match error {
        Some(e) => e,
        None => loop {
            match next(&mut shell).await {
                Some(Message::Text(t)) if t.starts_with("Error: ") => break t.to_string(),
                Some(Message::Text(_)) => continue,
                other => panic!("expected the shell to give up on its input, got {other:?}"),
            }
        },
    };
    assert_eq!(error, "Error: the shell is not reading its input\n");

    // Refusals come after the upgrade, as text, then a normal close.
    let mut shell = connect(&t, &app, "", None).await;
    expect_refusal(&mut shell, "no token provided or session expired, please login again").await;
    let mut shell = connect(&t, &app, "", Some("not-a-token")).await;
    expect_refusal(&mut shell, "no token provided or session expired, please login again").await;
    let mut shell = connect(&t, "nosuchapp", "", Some(&t.admin_token)).await;
    expect_refusal(&mut shell, "App nosuchapp not found.").await;
    // Another team's member may not open a shell into this team's app.
    t.team("t2").await;
    let other = t.user("other@example.com").await;
    t.role("t2-member", "team", &["app"]).await;
    t.assign("t2-member", "other@example.com", "t2").await;
    let mut shell = connect(&t, &app, "", Some(&other)).await;
    expect_refusal(&mut shell, "You don't have permission to do this action").await;
    // A WASM app has no container to open a shell in.
    t.req("POST", "/1.0/pools").admin().form(&[("name", "wasm-pool")]).send().await.expect(201, "");
    t.req("POST", "/1.0/apps").admin().form(&[("name", "wasmy"), ("teamOwner", "t1"), ("pool", "wasm-pool")]).send().await.expect_status(201);
    let mut shell = connect(&t, "wasmy", "", Some(&t.admin_token)).await;
    expect_refusal(
        &mut shell,
        "a WASM app has no shell: its units are component instances made per request, not containers; use `tsuru app log` to see what it does",
    )
    .await;

    // Pings: a client that answers them stays past the pong timeout; one
    // that answers none is dropped.
    let mut alive = connect(&t, &app, "", Some(&t.admin_token)).await;
    let mut quiet = connect(&t, &app, "", Some(&t.admin_token)).await;
    for shell in [&mut alive, &mut quiet] {
        send(shell, "echo open-$((3*3))\n").await;
        read_until(shell, "open-9").await;
    }
    // At most two shells per app: a third is refused while both are open.
    let mut third = connect(&t, &app, "", Some(&t.admin_token)).await;
    expect_refusal(&mut third, &format!("app {app} has 2 shells open already; close one first")).await;
    let mut pings = 0;
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < until {
        match tokio::time::timeout_at(until, alive.next()).await {
            Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
            Ok(Some(Ok(Message::Text(_)))) => {}
            Ok(other) => panic!("the answering client was dropped: {other:?}"),
            Err(_) => break,
        }
    }
    assert!(pings >= 3, "{pings} pings in 5 s at a 1 s interval");
    send(&mut alive, "echo still-$((1+1))\n").await;
    read_until(&mut alive, "still-2").await;
    // The quiet client read nothing (so answered no ping) for 5 s: the
    // server closed it (its pongs, written as it reads again, find the
    // connection gone, or it reads the close first).
    loop {
        match next(&mut quiet).await {
            Some(Message::Text(_)) => continue,
            Some(Message::Close(Some(frame))) => break assert_eq!(frame.code, CloseCode::Normal),
            None => break,
            other => panic!("the client that answered no ping was not dropped: {other:?}"),
        }
    }
    // Its place is free again.
    let mut again = connect(&t, &app, "", Some(&t.admin_token)).await;
    send(&mut again, "echo again-$((2+2))\n").await;
    read_until(&mut again, "again-4").await;
    t.stop().await;
}
