//! App logs: write, read with filters, follow, and the per-app bound.

use crate::support::{Options, TestServer, backends};
use serde_json::Value;
use std::time::Duration;

async fn setup(t: &TestServer) -> String {
    t.team("t1").await;
    t.req("POST", "/1.0/pools").admin().form(&[("name", "main"), ("default", "true")]).send().await.expect(201, "");
    t.req("POST", "/1.0/apps").admin().form(&[("name", "web"), ("teamOwner", "t1")]).send().await.expect_status(201);
    t.server().store.app_env("web").await.unwrap().into_iter().find(|e| e.name == "TSURU_APP_TOKEN").unwrap().value
}

fn messages(line: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(line).unwrap();
    v.as_array().unwrap().iter().map(|e| e["Message"].as_str().unwrap().to_string()).collect()
}

backends! {
    async fn write_read_filter_and_bound(b) {
        let mut o = Options::new(b);
        o.extra_toml = "[logs]\nmax_lines_per_app = 5\n".into();
        let t = TestServer::start_with(o).await;
        let app_token = setup(&t).await;
        t.req("GET", "/1.0/apps/web/log").admin().send().await.expect_error(400, "Parameter \"lines\" is mandatory.");
        t.req("GET", "/1.0/apps/web/log?lines=x").admin().send().await.expect_error(400, "Parameter \"lines\" must be an integer.");
        let r = t.req("GET", "/1.0/apps/web/log?lines=10").admin().send().await;
        r.expect(200, "[]\n");
        assert_eq!(r.header("content-type"), "application/x-json-stream");

        // The app's own token may write its log.
        t.req("POST", "/1.0/apps/web/log").token(&app_token).form(&[("message", "one"), ("message", "two"), ("unit", "web-1")])
            .send().await.expect(200, "");
        t.req("POST", "/1.0/apps/web/log").admin().form(&[("message", "three"), ("source", "worker"), ("unit", "web-2")])
            .send().await.expect(200, "");
        let all = t.req("GET", "/1.0/apps/web/log?lines=0").admin().send().await;
        let entries: Value = serde_json::from_str(all.body.trim()).unwrap();
        assert_eq!(entries[0]["AppName"], "web");
        assert_eq!(entries[0]["Source"], "app");
        assert_eq!(entries[0]["Unit"], "web-1");
        assert_ne!(entries[0]["Date"], "0001-01-01T00:00:00Z");
        assert_eq!(entries[0].as_object().unwrap().keys().collect::<Vec<_>>(), vec!["Date", "Message", "Source", "AppName", "Unit"]);
        assert_eq!(messages(all.body.trim()), vec!["one", "two", "three"]);
        assert_eq!(messages(t.req("GET", "/1.0/apps/web/log?lines=2").admin().send().await.body.trim()), vec!["two", "three"]);
        assert_eq!(messages(t.req("GET", "/1.0/apps/web/log?lines=-1").admin().send().await.body.trim()), Vec::<String>::new());
        assert_eq!(messages(t.req("GET", "/1.0/apps/web/log?lines=0&source=worker").admin().send().await.body.trim()), vec!["three"]);
        assert_eq!(messages(t.req("GET", "/1.0/apps/web/log?lines=0&source=worker&invert-source=true").admin().send().await.body.trim()), vec!["one", "two"]);
        assert_eq!(messages(t.req("GET", "/1.8/apps/web/log-instance?lines=0&unit=web-2").admin().send().await.body.trim()), vec!["three"]);

        // A noisy app keeps only its newest entries.
        let many: Vec<(&str, String)> = (0..8).map(|i| ("message", format!("m{i}"))).collect();
        let pairs: Vec<(&str, &str)> = many.iter().map(|(k, v)| (*k, v.as_str())).collect();
        t.req("POST", "/1.0/apps/web/log").admin().form(&pairs).send().await.expect(200, "");
        assert_eq!(messages(t.req("GET", "/1.0/apps/web/log?lines=0").admin().send().await.body.trim()), vec!["m3", "m4", "m5", "m6", "m7"]);

        // Another team's member can neither read nor write it.
        t.team("t2").await;
        t.role("dev2", "team", &["app"]).await;
        let other = t.user("other@example.com").await;
        t.assign("dev2", "other@example.com", "t2").await;
        t.req("GET", "/1.0/apps/web/log?lines=1").token(&other).send().await.expect_status(403);
        t.req("POST", "/1.0/apps/web/log").token(&other).form(&[("message", "x")]).send().await.expect_status(403);
        t.req("GET", "/1.0/apps/ghost/log?lines=1").admin().send().await.expect_error(404, "App ghost not found.");
        t.stop().await;
    }
}

backends! {
    async fn follow_streams_new_entries(b) {
        let t = TestServer::start(b).await;
        setup(&t).await;
        t.req("POST", "/1.0/apps/web/log").admin().form(&[("message", "before")]).send().await.expect(200, "");
        let client = reqwest::Client::new();
        let mut r = client.get(format!("{}/1.0/apps/web/log?lines=10&follow=1", t.base)).bearer_auth(&t.admin_token).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let mut buffer = String::new();
        let mut next_line = async || -> String {
            loop {
                if let Some(i) = buffer.find('\n') {
                    let line = buffer[..i].to_string();
                    buffer.drain(..=i);
                    return line;
                }
                let chunk = tokio::time::timeout(Duration::from_secs(5), r.chunk()).await.expect("a line within 5 s").unwrap().unwrap();
                buffer.push_str(std::str::from_utf8(&chunk).unwrap());
            }
        };
        assert_eq!(messages(&next_line().await), vec!["before"]);
        t.req("POST", "/1.0/apps/web/log").admin().form(&[("message", "after 1"), ("message", "after 2")]).send().await.expect(200, "");
        assert_eq!(messages(&next_line().await), vec!["after 1"]);
        assert_eq!(messages(&next_line().await), vec!["after 2"]);
        t.req("POST", "/1.0/apps/web/log").admin().form(&[("message", "later")]).send().await.expect(200, "");
        assert_eq!(messages(&next_line().await), vec!["later"]);
        // A follower does not keep a stopping server alive past its grace period.
        tokio::time::timeout(torii::server::SHUTDOWN_GRACE + Duration::from_secs(3), t.stop()).await.expect("server stopped");
        drop(r);
    }
}


mod ingest {
    use super::*;
    use futures_util::{SinkExt, StreamExt};
    use crate::support::WebSocket as Socket;
    use tokio_tungstenite::tungstenite::Message;

    async fn connect(t: &TestServer, token: Option<&str>) -> Socket {
        t.websocket("/logs", token).await
    }

    /// The server's last word: one JSON frame `{"error": ...}`, then a close.
    async fn ending(socket: &mut Socket) -> Value {
        let text = loop {
            match tokio::time::timeout(Duration::from_secs(10), socket.next()).await.expect("an answer within 10 s") {
                Some(Ok(Message::Text(t))) => break t.to_string(),
                Some(Ok(Message::Ping(_))) => continue,
                other => panic!("expected the error frame, got {other:?}"),
            }
        };
        assert!(matches!(socket.next().await, Some(Ok(Message::Close(_)))));
        serde_json::from_str(&text).unwrap()
    }

    backends! {
        async fn node_agents_send_logs_with_the_tsr_token_only(b) {
            let t = TestServer::start(b).await;
            let app_token = setup(&t).await;
            t.req("POST", "/1.0/apps").admin().form(&[("name", "other"), ("teamOwner", "t1")]).send().await.expect_status(201);

            // Only the tsr token: none, a user's, an app's are refused after the upgrade.
            assert_eq!(ending(&mut connect(&t, None).await).await, serde_json::json!({"error": "wslogs: no token"}));
            assert_eq!(ending(&mut connect(&t, Some("bogus")).await).await, serde_json::json!({"error": "wslogs: no token"}));
            assert_eq!(ending(&mut connect(&t, Some(&t.admin_token)).await).await, serde_json::json!({"error": "wslogs: invalid token app name: \"\""}));
            assert_eq!(ending(&mut connect(&t, Some(&app_token)).await).await, serde_json::json!({"error": "wslogs: invalid token app name: \"web\""}));
            let r = t.req("GET", "/1.0/apps/web/log?lines=0").admin().send().await;
            r.expect(200, "[]\n");

            let tsr = t.server().auth.key().agent_token();
            let mut agent = connect(&t, Some(&tsr)).await;
            let entries = [
                r#"{"Date":"2026-12-04T10:00:00.5Z","Message":"first","Source":"web","AppName":"web","Unit":"web-1"}"#,
                r#"{"Date":"2026-12-04T10:00:01Z","Message":"to other","Source":"worker","AppName":"other","Unit":"other-1"}"#,
                // Ignored: no date, no app, no message, an app that does not exist, not an entry.
                r#"{"Message":"undated","Source":"web","AppName":"web","Unit":"web-1"}"#,
                r#"{"Date":"2026-12-04T10:00:02Z","Message":"nobody's","Source":"web","Unit":"web-1"}"#,
                r#"{"Date":"2026-12-04T10:00:02Z","Message":"","Source":"web","AppName":"web","Unit":"web-1"}"#,
                r#"{"Date":"2026-12-04T10:00:02Z","Message":"ghost","Source":"web","AppName":"nosuchapp","Unit":"x"}"#,
                "not json",
                r#"{"Date":"2026-12-04T10:00:03+01:00","Message":"second","Source":"web","AppName":"web","Unit":"web-2"}"#,
            ];
            for e in entries {
                agent.send(Message::Text(e.into())).await.unwrap();
            }
            // Written within the flush interval, while the connection stays open.
            crate::support::within_10s("the agent's entries are in the log", async || {
                t.req("GET", "/1.0/apps/web/log?lines=0").admin().send().await.body.lines().next().is_some_and(|l| messages(l).len() == 2)
            }).await;
            let web: Value = t.req("GET", "/1.0/apps/web/log?lines=0").admin().send().await.json();
            assert_eq!(web, serde_json::json!([
                {"Date": "2026-12-04T10:00:00.500Z", "Message": "first", "Source": "web", "AppName": "web", "Unit": "web-1"},
                {"Date": "2026-12-04T09:00:03Z", "Message": "second", "Source": "web", "AppName": "web", "Unit": "web-2"},
            ]));
            let other = t.req("GET", "/1.0/apps/other/log?lines=0").admin().send().await;
            assert_eq!(messages(other.body.lines().next().unwrap()), vec!["to other"]);
            // The agent closes: the server completes the closing handshake.
            agent.send(Message::Close(None)).await.unwrap();
            assert!(matches!(agent.next().await, Some(Ok(Message::Close(_)))));
            // The tsr token reaches no app's own routes.
            t.req("GET", "/1.0/apps/web/log?lines=1").token(&tsr).send().await.expect_error(403, "app token mismatch, token for \"tsr\", request for \"web\"");
        }
    }
}
