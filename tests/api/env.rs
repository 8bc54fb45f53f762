//! App environment variables, and concurrent changes under event locks.

use crate::support::{Options, TestServer, backends};
use serde_json::{Value, json};
use std::collections::BTreeSet;

async fn setup(t: &TestServer) {
    t.team("t1").await;
    t.req("POST", "/1.0/pools").admin().form(&[("name", "main"), ("default", "true")]).send().await.expect(201, "");
    t.req("POST", "/1.0/apps").admin().form(&[("name", "web"), ("teamOwner", "t1")]).send().await.expect_status(201);
}

fn stream_messages(body: &str) -> (Vec<String>, Option<String>) {
    let mut messages = Vec::new();
    let mut error = None;
    for line in body.lines().filter(|l| !l.is_empty()) {
        let v: Value = serde_json::from_str(line).unwrap();
        if let Some(e) = v.get("Error") {
            error = Some(e.as_str().unwrap().to_string());
        } else {
            messages.push(v["Message"].as_str().unwrap().to_string());
        }
    }
    (messages, error)
}

/// The app's own variables (not TSURU_*), as name → (value, public).
async fn user_env(t: &TestServer) -> Vec<(String, String, bool)> {
    let all = t.req("GET", "/1.0/apps/web/env").admin().send().await.json();
    all.as_array().unwrap().iter()
        .filter(|v| !v["name"].as_str().unwrap().starts_with("TSURU_"))
        .map(|v| (v["name"].as_str().unwrap().into(), v["value"].as_str().unwrap().into(), v["public"].as_bool().unwrap()))
        .collect()
}

backends! {
    async fn set_get_unset(b) {
        let t = TestServer::start(b).await;
        setup(&t).await;
        let r = t.req("POST", "/1.0/apps/web/env").admin()
            .json(json!({"envs": [{"name": "DB_HOST", "value": "db.local"}, {"name": "DB_PASS", "value": "s3cret", "private": true}], "noRestart": true}))
            .send().await;
        r.expect_status(200);
        assert_eq!(r.header("content-type"), "application/x-json-stream");
        assert_eq!(stream_messages(&r.body), (vec!["---- Setting 2 new environment variables ----\n".to_string()], None));
        // Form keys work too, and aliases show their target's value.
        t.req("POST", "/1.0/apps/web/env").admin()
            .form(&[("Envs.0.Name", "PRIMARY_DB"), ("Envs.0.Alias", "DB_HOST"), ("NoRestart", "true")]).send().await.expect_status(200);
        let all = t.req("GET", "/1.0/apps/web/env").admin().send().await;
        assert_eq!(all.header("content-type"), "application/json");
        let all = all.json();
        let names: BTreeSet<&str> = all.as_array().unwrap().iter().map(|v| v["name"].as_str().unwrap()).collect();
        assert_eq!(names, BTreeSet::from(["DB_HOST", "DB_PASS", "PRIMARY_DB", "TSURU_APPDIR", "TSURU_APPNAME", "TSURU_APP_TOKEN", "TSURU_SERVICES"]));
        let pass = all.as_array().unwrap().iter().find(|v| v["name"] == "DB_PASS").unwrap();
        assert_eq!(pass, &json!({"name": "DB_PASS", "value": "s3cret", "alias": "", "public": false}));
        let alias = all.as_array().unwrap().iter().find(|v| v["name"] == "PRIMARY_DB").unwrap();
        assert_eq!((alias["value"].clone(), alias["alias"].clone()), (json!("db.local"), json!("DB_HOST")));
        let some = t.req("GET", "/1.0/apps/web/env?env=DB_HOST&env=TSURU_SERVICES").admin().send().await.json();
        assert_eq!(some, json!([{"name": "DB_HOST", "value": "db.local", "alias": "", "public": true}]));
        t.req("GET", "/1.0/apps/web/env?env=NOPE").admin().send().await.expect(200, "null\n");
        // The event keeps private values masked.
        let e = &t.req("GET", "/1.1/events?kindname=app.update.env.set&sort=starttime").admin().send().await.json()[0];
        assert!(!serde_json::to_string(e).unwrap().contains("s3cret"));

        let bad = |body: Value| {
            let req = t.req("POST", "/1.0/apps/web/env").admin().json(body);
            async move { req.send().await }
        };
        bad(json!({"envs": []})).await.expect_error(400, "You must provide the list of environment variables");
        bad(json!({"envs": [{"name": "TSURU_APPNAME", "value": "x"}]})).await.expect_error(400,
            "Can't change the following environment variables (write protected): [TSURU_APPNAME TSURU_APP_TOKEN TSURU_SERVICE TSURU_APPDIR]");
        bad(json!({"envs": [{"name": "1BAD", "value": "x"}]})).await.expect_error(400, "Invalid environment variable name: '1BAD'");
        bad(json!({"envs": [{"name": "A", "value": "x"}], "pruneUnused": true})).await.expect_error(400, "Prune unused requires a managed-by value");
        t.req("POST", "/1.0/apps/web/env").admin().raw("application/json", "{\"envs\": [").send().await.expect_status(400);
        // Other TSURU_ names are allowed.
        bad(json!({"envs": [{"name": "TSURU_CUSTOM", "value": "x"}]})).await.expect_status(200);

        // managedBy + pruneUnused replaces that manager's set.
        bad(json!({"envs": [{"name": "TF_A", "value": "1"}, {"name": "TF_B", "value": "2"}], "managedBy": "terraform"})).await.expect_status(200);
        let r = bad(json!({"envs": [{"name": "TF_A", "value": "3"}], "managedBy": "terraform", "pruneUnused": true})).await;
        assert_eq!(stream_messages(&r.body).0, vec!["---- Setting 1 new environment variables ----\n", "---- Pruning TF_B from environment variables ----\n"]);
        let tf = t.req("GET", "/1.0/apps/web/env?env=TF_A&env=TF_B").admin().send().await.json();
        assert_eq!(tf, json!([{"name": "TF_A", "value": "3", "alias": "", "public": true, "managedBy": "terraform"}]));

        t.req("DELETE", "/1.0/apps/web/env").admin().send().await.expect_error(400, "You must provide the list of environment variables.");
        let r = t.req("DELETE", "/1.0/apps/web/env?env=DB_HOST&env=DB_PASS&noRestart=true").admin().send().await;
        assert_eq!(stream_messages(&r.body), (vec!["---- Unsetting 2 environment variables ----\n".to_string()], None));
        let left: Vec<String> = user_env(&t).await.into_iter().map(|(n, _, _)| n).collect();
        assert_eq!(left, vec!["PRIMARY_DB", "TF_A"]);

        // Permissions: a member of another team can neither read nor change it.
        t.team("t2").await;
        t.role("dev2", "team", &["app"]).await;
        let other = t.user("other@example.com").await;
        t.assign("dev2", "other@example.com", "t2").await;
        t.req("GET", "/1.0/apps/web/env").token(&other).send().await.expect_status(403);
        t.req("POST", "/1.0/apps/web/env").token(&other).json(json!({"envs": [{"name": "X", "value": "1"}]})).send().await.expect_status(403);
        t.req("DELETE", "/1.0/apps/web/env?env=TF_A").token(&other).send().await.expect_status(403);
        // The app's own token may read it.
        let token = t.server().store.app_env("web").await.unwrap().into_iter().find(|e| e.name == "TSURU_APP_TOKEN").unwrap().value;
        t.req("GET", "/1.0/apps/web/env").token(&token).send().await.expect_status(200);
        t.stop().await;
    }
}

/// Sends `n` env-set requests at once, alternating between `servers`; returns
/// the names acknowledged and checks every refusal is the lock answer.
async fn concurrent_sets(servers: &[&TestServer], n: usize) -> BTreeSet<String> {
    let mut tasks = Vec::new();
    for i in 0..n {
        let t = servers[i % servers.len()];
        // A client per request: several connections.
        let client = reqwest::Client::new();
        let url = format!("{}/1.0/apps/web/env", t.base);
        let token = t.admin_token.clone();
        tasks.push(tokio::spawn(async move {
            let r = client.post(url).bearer_auth(token).json(&json!({"envs": [{"name": format!("V{i}"), "value": i.to_string()}], "noRestart": true}))
                .send().await.unwrap();
            let status = r.status().as_u16();
            (i, status, r.text().await.unwrap())
        }));
    }
    let mut acknowledged = BTreeSet::new();
    let started = std::time::Instant::now();
    for task in tasks {
        let (i, status, body) = task.await.unwrap();
        match status {
            200 => {
                let (_, error) = stream_messages(&body);
                assert_eq!(error, None, "request {i}");
                acknowledged.insert(format!("V{i}"));
            }
            500 => assert!(body.starts_with("event locked: app(web) running \"app.update.env.set\""), "request {i}: {body}"),
            other => panic!("request {i}: unexpected {other}: {body}"),
        }
    }
    eprintln!("{} of {n} concurrent env sets acknowledged in {:?}", acknowledged.len(), started.elapsed());
    acknowledged
}

backends! {
    async fn fifty_concurrent_sets_keep_every_acknowledged_change(b) {
        let t = TestServer::start(b).await;
        setup(&t).await;
        let acknowledged = concurrent_sets(&[&t], 50).await;
        assert!(!acknowledged.is_empty());
        let present: BTreeSet<String> = user_env(&t).await.into_iter().map(|(n, _, _)| n).collect();
        assert_eq!(present, acknowledged);
        let events = t.req("GET", "/1.1/events?kindname=app.update.env.set&limit=100").admin().send().await.json();
        assert_eq!(events.as_array().unwrap().len(), acknowledged.len());
        t.stop().await;
    }
}

backends! {
    async fn concurrent_sets_through_two_servers_sharing_a_database(b) {
        let one = TestServer::start(b).await;
        setup(&one).await;
        let mut o = Options::new(b);
        o.join(&one);
        let two = TestServer::start_with(o).await;
        let acknowledged = concurrent_sets(&[&one, &two], 50).await;
        assert!(!acknowledged.is_empty());
        let present: BTreeSet<String> = user_env(&two).await.into_iter().map(|(n, _, _)| n).collect();
        assert_eq!(present, acknowledged);
        two.stop().await;
        one.stop().await;
    }
}
