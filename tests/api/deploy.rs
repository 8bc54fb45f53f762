//! WASM deploys end to end: upload → version → the router serves it.

use crate::support::{TestServer, backends};
use serde_json::json;

pub(crate) const HELLO: &str = env!("TORII_GUEST_APP_HELLO");
pub(crate) const ECHO_ENV: &str = env!("TORII_GUEST_APP_ECHO_ENV");

/// A multipart body with a `file` part and text fields.
pub(crate) fn upload(file: &[u8], fields: &[(&str, &str)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (k, v) in fields {
        body.extend_from_slice(format!("--XBOUNDARY\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n").as_bytes());
    }
    body.extend_from_slice(
        b"--XBOUNDARY\r\nContent-Disposition: form-data; name=\"file\"; filename=\"archive.tar.gz\"\r\nContent-Type: application/octet-stream\r\n\r\n",
    );
    body.extend_from_slice(file);
    body.extend_from_slice(b"\r\n--XBOUNDARY--\r\n");
    body
}

pub(crate) const MP: &str = "multipart/form-data; boundary=XBOUNDARY";

pub(crate) fn tar_gz(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    for (name, bytes) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, name, *bytes).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

/// Sets `ACCESS_LOG` on `app`: the hello app then prints a line per request.
async fn access_log(t: &TestServer, app: &str) {
    let r = t.req("POST", &format!("/1.0/apps/{app}/env")).admin().json(json!({"envs": [{"name": "ACCESS_LOG", "value": "1"}], "noRestart": true})).send().await;
    r.expect_status(200);
}

async fn setup(b: crate::support::Backend) -> TestServer {
    setup_with(b, "").await
}

/// `setup` with `extra` appended to the config.
async fn setup_with(b: crate::support::Backend, extra: &str) -> TestServer {
    let mut o = crate::support::Options::new(b);
    o.api_toml = "max_body_bytes = 2097152".into();
    o.extra_toml = extra.to_string();
    let t = TestServer::start_with(o).await;
    t.team("t1").await;
    t.req("POST", "/1.0/pools").admin().form(&[("name", "main"), ("default", "true")]).send().await.expect(201, "");
    t.req("POST", "/1.0/apps").admin().form(&[("name", "web"), ("teamOwner", "t1")]).send().await.expect_status(201);
    t
}

backends! {
    async fn deploy_serves_redeploy_replaces_and_env_reaches_new_requests(b) {
        let t = setup(b).await;
        let (status, body) = t.app_get("web.apps.test", "/").await;
        assert_eq!((status, body.as_str()), (503, "app web has no deployed version yet: deploy one with `tsuru app deploy`\n"));
        assert_eq!(t.app_get("nobody.apps.test", "/").await, (404, "no app answers at nobody.apps.test\n".into()));
        // `wasm` is built in: a pool may name it (pools naming none use `[pools] default_provisioner`).
        t.req("POST", "/1.0/pools").admin().form(&[("name", "edge"), ("provisioner", "wasm")]).send().await.expect(201, "");
        assert_eq!(t.req("GET", "/1.8/pools/edge").admin().send().await.json()["provisioner"], "wasm");

        // A bare component; with ACCESS_LOG set it prints a line per request.
        access_log(&t, "web").await;
        let hello = std::fs::read(HELLO).unwrap();
        let r = t.req("POST", "/1.0/apps/web/deploy").admin().raw(MP, upload(&hello, &[("origin", "app-deploy"), ("message", "first")])).send().await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("content-type"), "text");
        let event_id = r.header("x-tsuru-eventid");
        assert_eq!(event_id.len(), 24);
        assert!(r.body.ends_with("\nOK\n"), "{}", r.body);
        assert!(r.body.contains("---- Version 1 of app \"web\" is serving all its traffic ----"), "{}", r.body);
        assert_eq!(t.app_get("web.apps.test", "/hi?x=1").await, (200, "hello from web at /hi?x=1\n".into()));
        assert_eq!(t.app_get("WEB.apps.test:80", "/").await.0, 200);
        // What the app printed is in its log, under the unit that served it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let entry = loop {
            let r = t.req("GET", "/1.0/apps/web/log?source=app&lines=10").admin().send().await;
            if r.status == 200 {
                let lines: Vec<serde_json::Value> = serde_json::from_str(r.body.lines().next().unwrap()).unwrap();
                if let Some(e) = lines.iter().find(|e| e["Message"] == "served /hi?x=1") {
                    break e.clone();
                }
            }
            assert!(std::time::Instant::now() < deadline, "the app's output never reached its log: {}", t.req("GET", "/1.0/apps/web/log?lines=10").admin().send().await.body);
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        assert_eq!((entry["Source"].clone(), entry["Unit"].clone(), entry["AppName"].clone()), (json!("app"), json!("web-web-v1-0"), json!("web")));

        // A tar.gz with a Procfile: version 2 replaces version 1.
        let echo = std::fs::read(ECHO_ENV).unwrap();
        let archive = tar_gz(&[("app.wasm", &echo), ("Procfile", b"web: app.wasm\n")]);
        let r = t.req("POST", "/1.0/apps/web/deploy").admin().raw(MP, upload(&archive, &[])).send().await;
        assert!(r.body.ends_with("\nOK\n"), "{}", r.body);
        assert_eq!(t.app_get("web.apps.test", "/?name=TSURU_APPNAME").await, (200, "web\n".into()));

        // New requests see env changes, private values included; without
        // `noRestart` the app restarts (its provisioner gets the new state).
        let r = t.req("POST", "/1.0/apps/web/env").admin()
            .json(json!({"envs": [{"name": "GREETING", "value": "hi"}, {"name": "SECRET", "value": "s3", "private": true}], "noRestart": true}))
            .send().await;
        r.expect_status(200);
        assert!(!r.body.contains("Restarting"), "{}", r.body);
        assert_eq!(t.app_get("web.apps.test", "/?name=GREETING").await, (200, "hi\n".into()));
        assert_eq!(t.app_get("web.apps.test", "/?name=SECRET").await, (200, "s3\n".into()));
        let r = t.req("POST", "/1.0/apps/web/env").admin().json(json!({"envs": [{"name": "MOOD", "value": "calm"}]})).send().await;
        let messages: Vec<String> = r.body.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["Message"].as_str().unwrap_or_default().to_string()).collect();
        assert_eq!(messages, ["---- Setting 1 new environment variables ----\n", "---- Restarting the app \"web\" ----\n",
            " ---> version 2 serves process web with 1 unit(s)\n"]);
        let r = t.req("DELETE", "/1.0/apps/web/env?env=MOOD").admin().send().await;
        assert!(r.body.contains("---- Restarting the app \\\"web\\\" ----"), "{}", r.body);
        assert_eq!(t.app_get("web.apps.test", "/?name=MOOD").await, (404, "MOOD is not set\n".into()));
        let r = t.req("DELETE", "/1.0/apps/web/env?env=MOOD&noRestart=true").admin().send().await;
        assert!(!r.body.contains("Restarting"), "{}", r.body);

        // A cname reaches the app too.
        t.req("POST", "/1.0/apps/web/cname").admin().form(&[("cname", "www.example.com")]).send().await.expect(200, "");
        assert_eq!(t.app_get("www.example.com", "/?name=GREETING").await, (200, "hi\n".into()));

        // History and app info follow.
        let info = t.req("GET", "/1.0/apps/web").admin().send().await.json();
        assert_eq!((info["deploys"].clone(), info["provisioner"].clone()), (json!(2), json!("wasm")));
        let deploys = t.req("GET", "/1.0/deploys?app=web").admin().send().await.json();
        let versions: Vec<_> = deploys.as_array().unwrap().iter().map(|d| (d["Version"].clone(), d["Image"].clone(), d["Error"].clone())).collect();
        assert_eq!(versions, vec![
            (json!(2), json!("torii/app-web:v2"), json!("")),
            (json!(1), json!("torii/app-web:v1"), json!("")),
        ]);
        assert_eq!(deploys[1]["ID"], event_id);
        assert_eq!(deploys[1]["Message"], "first");
        t.stop().await;
    }
}

backends! {
    async fn bad_deploys_fail_clearly_and_change_nothing(b) {
        let t = setup(b).await;
        let hello = std::fs::read(HELLO).unwrap();
        let r = t.req("POST", "/1.0/apps/web/deploy").admin().raw(MP, upload(&hello, &[])).send().await;
        assert!(r.body.ends_with("\nOK\n"), "{}", r.body);

        let native = std::fs::read(env!("TORII_GUEST_AUTH_NATIVE")).unwrap();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"definitely not wasm".to_vec(), "the file is not WebAssembly"),
            (b"\0asm\x01\0\0\0".to_vec(), "the file is a core WebAssembly module, not a component"),
            (native, "the component"),
            (tar_gz(&[("README.md", b"nothing to run")]), "the archive holds no .wasm component"),
            (vec![0x1f, 0x8b, 0, 0], "the archive cannot be read"),
        ];
        for (bytes, expected) in cases {
            let r = t.req("POST", "/1.0/apps/web/deploy").admin().raw(MP, upload(&bytes, &[])).send().await;
            assert_eq!(r.status, 200);
            assert!(r.body.contains("\n---- ERROR during deploy: ----\n"), "{}", r.body);
            assert!(r.body.contains(expected), "expected {expected:?} in {}", r.body);
            assert!(!r.body.ends_with("\nOK\n"), "{}", r.body);
            assert_eq!(t.app_get("web.apps.test", "/").await, (200, "hello from web at /\n".into()));
        }
        let info = t.req("GET", "/1.0/apps/web").admin().send().await.json();
        assert_eq!(info["deploys"], 1);
        let failed = t.req("GET", "/1.1/events?kindname=app.deploy").admin().send().await.json();
        let errors = failed.as_array().unwrap().iter().filter(|e| !e["Error"].as_str().unwrap().is_empty()).count();
        assert_eq!(errors, 5);

        // Source rules and provisioner limits: 400 before anything starts.
        let deploy = |form: &[(&'static str, &'static str)]| t.req("POST", "/1.0/apps/web/deploy").admin().form(form);
        deploy(&[]).send().await.expect_error(400, r#"You must provide at least one of: "archive-url", "dockerfile", "image" or "file""#);
        deploy(&[("archive-url", "http://127.0.0.1:1/a.tar.gz"), ("image", "busybox")]).send().await
            .expect_error(400, r#"Cannot set "archive-url" mutually with "dockerfile", "file" or "image" fields"#);
        deploy(&[("image", "busybox"), ("dockerfile", "FROM scratch")]).send().await
            .expect_error(400, r#"Cannot set "image" mutually with "dockerfile" or "file" fields"#);
        deploy(&[("archive-url", "http://127.0.0.1:1/a"), ("origin", "nowhere")]).send().await.expect_error(400, "Invalid deployment origin");
        deploy(&[("image", "busybox")]).send().await.expect_error(400,
            r#"the wasm provisioner cannot deploy an image: deploy a wasi:http component with "file" or "archive-url""#);
        t.req("POST", "/1.0/apps/ghost/deploy").admin().form(&[("image", "x")]).send().await.expect_error(404, "App ghost not found.");

        // Past the configured body limit (2 MiB here; a 1 GB upload alike): 413
        // as soon as the headers arrive, before one byte of the upload is read.
        let addr = t.base.trim_start_matches("http://").to_string();
        let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let head = format!(
            "POST /1.0/apps/web/deploy HTTP/1.1\r\nHost: {addr}\r\nAuthorization: bearer {}\r\nContent-Type: {MP}\r\nContent-Length: {}\r\n\r\n",
            t.admin_token,
            1u64 << 30
        );
        tokio::io::AsyncWriteExt::write_all(&mut conn, head.as_bytes()).await.unwrap();
        let mut answer = vec![0u8; 4096];
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), tokio::io::AsyncReadExt::read(&mut conn, &mut answer)).await.unwrap().unwrap();
        let answer = String::from_utf8_lossy(&answer[..n]);
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert_eq!(t.req("GET", "/1.0/apps/web").admin().send().await.json()["deploys"], 1);

        // No shell in a WASM app; diff is gone in tsuru too.
        t.req("POST", "/1.0/apps/web/run").admin().form(&[]).send().await.expect_error(400, "You must provide the command to run");
        t.req("POST", "/1.0/apps/web/run").admin().form(&[("command", "ls")]).send().await.expect_error(400,
            "the wasm provisioner does not run commands: a WASM app has no shell or processes to run them in; deploy a component that does the work on a request instead");
        t.req("POST", "/1.0/apps/web/diff").admin().form(&[]).send().await.expect_error(410, "diff deploy is deprecated, this call does nothing");

        // Permission by source kind.
        t.role("uploader", "team", &["app.read", "app.deploy.archive-url"]).await;
        let dev = t.user("dev@example.com").await;
        t.assign("uploader", "dev@example.com", "t1").await;
        t.req("POST", "/1.0/apps/web/deploy").token(&dev).raw(MP, upload(&hello, &[])).send().await
            .expect_error(403, "User does not have permission to do this action in this app");
        t.stop().await;
    }
}

/// The messages of an x-json-stream, and its terminal error.
fn stream(body: &str) -> (Vec<String>, Option<String>) {
    let mut messages = Vec::new();
    let mut error = None;
    for line in body.lines().filter(|l| !l.is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        match v.get("Error") {
            Some(e) => error = Some(e.as_str().unwrap().to_string()),
            None => messages.push(v["Message"].as_str().unwrap().to_string()),
        }
    }
    (messages, error)
}

backends! {
    async fn rollback_stop_start_and_sleep(b) {
        let t = setup(b).await;
        for component in [HELLO, ECHO_ENV] {
            let bytes = std::fs::read(component).unwrap();
            let r = t.req("POST", "/1.0/apps/web/deploy").admin().raw(MP, upload(&bytes, &[])).send().await;
            assert!(r.body.ends_with("\nOK\n"), "{}", r.body);
        }
        assert_eq!(t.app_get("web.apps.test", "/?name=TSURU_APPNAME").await, (200, "web\n".into()));

        // Rollback: version 1 answers again; history records it as a deploy.
        t.req("POST", "/1.0/apps/web/deploy/rollback").admin().form(&[]).send().await
            .expect_error(400, "you cannot rollback without an image name");
        t.req("POST", "/1.0/apps/web/deploy/rollback").admin().form(&[("image", "v9")]).send().await
            .expect_error(400, "invalid version \"v9\": app \"web\" has no such version");
        let r = t.req("POST", "/1.0/apps/web/deploy/rollback").admin().form(&[("image", "torii/app-web:v1")]).send().await;
        let (messages, error) = stream(&r.body);
        assert_eq!(error, None, "{}", r.body);
        assert_eq!(messages.last().unwrap(), "---- Version 1 of app \"web\" is serving all its traffic ----\n");
        assert_eq!(t.app_get("web.apps.test", "/").await, (200, "hello from web at /\n".into()));
        let deploys = t.req("GET", "/1.0/deploys?app=web").admin().send().await.json();
        assert_eq!((deploys[0]["Version"].clone(), deploys[0]["Origin"].clone()), (json!(1), json!("rollback")));

        // A version disabled for rollback is refused inside the stream.
        t.req("PUT", "/1.4/apps/web/deploy/rollback/update").admin().form(&[("image", "v2"), ("disable", "maybe")]).send().await
            .expect_error(400, "Cannot set 'disable' status to: 'maybe', instead of 'true' or 'false'");
        t.req("PUT", "/1.4/apps/web/deploy/rollback/update").admin().form(&[("image", "v2"), ("disable", "true"), ("reason", "leaks memory")]).send().await
            .expect(200, "");
        let r = t.req("POST", "/1.0/apps/web/deploy/rollback").admin().form(&[("image", "2")]).send().await;
        assert_eq!(stream(&r.body).1.as_deref(), Some("the selected version is disabled for rollback: leaks memory"));
        assert_eq!(t.app_get("web.apps.test", "/").await, (200, "hello from web at /\n".into()));

        // A version that serves no traffic can be deleted; the serving one cannot.
        t.req("DELETE", "/1.10/apps/web/versions/1").admin().send().await
            .expect_error(400, "version 1 of app \"web\" is serving traffic: roll back or deploy another version first");
        t.req("DELETE", "/1.10/apps/web/versions/7").admin().send().await.expect_error(404, "version 7 of app \"web\" not found");
        let r = t.req("DELETE", "/1.10/apps/web/versions/2").admin().send().await;
        assert_eq!(stream(&r.body), (vec![
            "---> Deleting version 2 of app web\n".to_string(),
            " ---> version 1 serves process web with 1 unit(s)\n".to_string(),
            "---- Done removing application version 2.\n".to_string(),
        ], None));
        let r = t.req("POST", "/1.0/apps/web/deploy/rollback").admin().form(&[("image", "v2")]).send().await;
        r.expect_error(400, "invalid version \"v2\": app \"web\" has no such version");

        // Units: one per process of the routable version.
        let info = t.req("GET", "/1.0/apps/web").admin().send().await.json();
        let unit = &info["units"][0];
        assert_eq!(info["units"].as_array().unwrap().len(), 1);
        assert_eq!((unit["ID"].clone(), unit["ProcessName"].clone(), unit["Status"].clone(), unit["Version"].clone(), unit["Ready"].clone()),
            (json!("web-web-v1-0"), json!("web"), json!("started"), json!(1), json!(true)));
        assert_eq!(info["quota"], json!({"limit": -1, "inuse": 1}));

        // Stop: the router refuses with a clear answer; start serves again.
        let r = t.req("POST", "/1.0/apps/web/stop").admin().form(&[]).send().await;
        assert_eq!(stream(&r.body), (vec![
            "---- Stopping the app \"web\" ----\n".to_string(),
            " ---> version 1 process web is stopped: not served\n".to_string(),
            " ---> app \"web\" serves nothing now: no code held in memory\n".to_string(),
            " ---> 1 unit(s) stopped\n".to_string(),
        ], None));
        assert_eq!(t.app_get("web.apps.test", "/").await, (503, "app web is stopped: start it with `tsuru app start -a web`\n".into()));
        assert_eq!(t.req("GET", "/1.0/apps/web").admin().send().await.json()["units"][0]["Status"], "stopped");
        // The list shows units too (not with `simplified`), and filters by their status.
        let listed = t.req("GET", "/1.0/apps?name=^web$").admin().send().await.json();
        assert_eq!((listed[0]["units"][0]["ID"].clone(), listed[0]["units"][0]["Status"].clone()), (json!("web-web-v1-0"), json!("stopped")));
        assert_eq!(t.req("GET", "/1.0/apps?name=^web$&simplified=true").admin().send().await.json()[0]["units"], json!([]));
        assert_eq!(t.req("GET", "/1.0/apps?status=stopped&status=error").admin().send().await.json()[0]["name"], "web");
        t.req("GET", "/1.0/apps?status=started").admin().send().await.expect(204, "");
        t.req("POST", "/1.0/apps/web/start").admin().form(&[]).send().await.expect_status(200);
        assert_eq!(t.req("GET", "/1.0/apps?status=started&simplified=true").admin().send().await.json()[0]["units"], json!([]));
        assert_eq!(t.app_get("web.apps.test", "/").await.0, 200);

        // Sleep needs a proxy; the first request wakes the app.
        t.req("POST", "/1.0/apps/web/sleep").admin().form(&[]).send().await.expect_error(400, "Empty proxy URL");
        t.req("POST", "/1.0/apps/web/sleep").admin().form(&[("proxy", "http://127.0.0.1:1")]).send().await.expect_status(200);
        assert_eq!(t.req("GET", "/1.0/apps/web").admin().send().await.json()["units"][0]["Status"], "asleep");
        assert_eq!(t.app_get("web.apps.test", "/").await, (200, "hello from web at /\n".into()));
        assert_eq!(t.req("GET", "/1.0/apps/web").admin().send().await.json()["units"][0]["Status"], "started");
        t.req("POST", "/1.0/apps/web/stop").admin().form(&[("process", "worker")]).send().await
            .expect_error(400, "process error: no command declared in Procfile for process \"worker\"");
        let kinds = t.req("GET", "/1.1/events?target.value=web").admin().send().await.json();
        let names: Vec<&str> = kinds.as_array().unwrap().iter().map(|e| e["Kind"]["Name"].as_str().unwrap()).collect();
        for kind in ["app.update.stop", "app.update.start", "app.update.sleep", "app.update.deploy.rollback"] {
            assert!(names.contains(&kind), "{kind} missing from {names:?}");
        }
        t.stop().await;
    }
}

backends! {
    async fn units_bound_concurrent_requests(b) {
        let mut o = crate::support::Options::new(b);
        o.extra_toml = "[apps]\nqueue_timeout_ms = 100\n".into();
        let t = TestServer::start_with(o).await;
        t.team("t1").await;
        t.req("POST", "/1.0/pools").admin().form(&[("name", "main"), ("default", "true")]).send().await.expect(201, "");
        t.req("POST", "/1.0/apps").admin().form(&[("name", "web"), ("teamOwner", "t1")]).send().await.expect_status(201);
        t.req("PUT", "/1.0/apps/web/units").admin().form(&[("units", "1")]).send().await
            .expect_error(400, "app \"web\" has no deployed version");
        let burn = std::fs::read(env!("TORII_GUEST_APP_BURN")).unwrap();
        let r = t.req("POST", "/1.0/apps/web/deploy").admin().raw(MP, upload(&burn, &[])).send().await;
        assert!(r.body.ends_with("\nOK\n"), "{}", r.body);

        // One unit: a second request at the same time waits 100 ms, then 503.
        let two = || async {
            tokio::join!(t.app_get("web.apps.test", "/sleep?ms=700"), async {
                tokio::time::sleep(std::time::Duration::from_millis(150)).await;
                t.app_get("web.apps.test", "/").await
            })
        };
        let (slow, second) = two().await;
        assert_eq!(slow, (200, "awake\n".into()));
        assert_eq!(second, (503, "app web is busy: its 1 unit(s) are all serving; add units with `tsuru unit add -a web`\n".into()));

        t.req("PUT", "/1.0/apps/web/units").admin().form(&[("units", "0")]).send().await
            .expect_error(400, "Invalid number of units: the number must be an integer greater than 0.");
        t.req("PUT", "/1.0/apps/web/units").admin().form(&[]).send().await.expect_error(400, "You must provide the number of units.");
        let r = t.req("PUT", "/1.0/apps/web/units").admin().form(&[("units", "2")]).send().await;
        assert!(r.body.contains("version 1 now runs 3 unit(s)"), "{}", r.body);
        let (slow, second) = two().await;
        assert_eq!((slow.0, second.0), (200, 200));
        assert_eq!(t.req("GET", "/1.0/apps/web").admin().send().await.json()["units"].as_array().unwrap().len(), 3);

        // The app quota counts units.
        t.req("PUT", "/1.0/apps/web/quota").admin().form(&[("limit", "2")]).send().await
            .expect_error(403, "New limit is less than the current allocated value");
        t.req("PUT", "/1.0/apps/web/quota").admin().form(&[("limit", "4")]).send().await.expect_status(200);
        t.req("PUT", "/1.0/apps/web/units").admin().form(&[("units", "2")]).send().await
            .expect_error(403, "Quota exceeded. Available: 1, Requested: 2.");
        assert_eq!(t.req("GET", "/1.0/apps/web/quota").admin().send().await.json(), json!({"limit": 4, "inuse": 3}));

        // Removing every unit leaves the app deployed but unable to serve.
        t.req("DELETE", "/1.0/apps/web/units?units=3").admin().send().await.expect_status(200);
        assert_eq!(t.app_get("web.apps.test", "/").await, (503, "app web has no units: add some with `tsuru unit add 1 -a web`\n".into()));
        t.req("DELETE", "/1.0/apps/web/units?units=1").admin().send().await.expect_error(400, "process web of version 1 has only 0 unit(s)");
        t.stop().await;
    }
}

backends! {
    // Requests keep arriving while the app is put to sleep and woken again,
    // over and over: every one is served. None may fall between two steps of
    // a change (the routes written, the router entry not yet, or the other
    // way round) and get a 503 for a state that lasts a few milliseconds.
    async fn requests_racing_sleep_and_wake_are_all_served(b) {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        let t = setup(b).await;
        let burn = std::fs::read(env!("TORII_GUEST_APP_BURN")).unwrap();
        let r = t.req("POST", "/1.0/apps/web/deploy").admin().raw(MP, upload(&burn, &[])).send().await;
        assert!(r.body.ends_with("\nOK\n"), "{}", r.body);
        let stop = Arc::new(AtomicBool::new(false));
        let mut load = Vec::new();
        for _ in 0..4 {
            let (client, url, stop) = (reqwest::Client::new(), format!("{}/", t.router_url()), stop.clone());
            load.push(tokio::spawn(async move {
                let (mut served, mut refused) = (0, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    let r = client.get(&url).header("host", "web.apps.test").send().await.unwrap();
                    match (r.status().as_u16(), r.text().await.unwrap()) {
                        (200, body) if body == "awake\n" => served += 1,
                        other => refused.push(other),
                    }
                }
                (served, refused)
            }));
        }
        let mut slept = 0;
        for _ in 0..20 {
            // The app may be held by the wake of a moment ago: then it is awake anyway.
            let r = t.req("POST", "/1.0/apps/web/sleep").admin().form(&[("proxy", "http://127.0.0.1:1")]).send().await;
            match r.status.as_u16() {
                200 => slept += 1,
                409 => {}
                other => panic!("sleep answered {other}: {}", r.body),
            }
            tokio::time::sleep(std::time::Duration::from_millis(15)).await;
        }
        stop.store(true, Ordering::Relaxed);
        let (mut served, mut refused) = (0, Vec::new());
        for l in load {
            let (s, r) = l.await.unwrap();
            served += s;
            refused.extend(r);
        }
        assert_eq!(refused, Vec::<(u16, String)>::new(), "{served} served");
        assert!(slept >= 5 && served >= slept, "{slept} sleeps, {served} served");
        let wakes = t.req("GET", "/1.1/events?kindname=app.wake").admin().send().await.json();
        assert!(wakes.as_array().unwrap().len() >= 5, "{slept} sleeps: {wakes}");
        t.stop().await;
    }
}

backends! {
    // A sleeping WASM app answers its first request at once (its code loads
    // on demand) and its wake is recorded beside the request. What comes
    // after the answer sees the wake done: the app reads started, and an
    // operation on it waits for the wake instead of being refused (409).
    // An operation holding the app holds none of its requests.
    async fn a_sleeping_wasm_app_answers_at_once_and_its_wake_follows(b) {
        use torii::events::{Allowed, EventSpec, Owner, Target};
        let t = setup_with(b, "[apps]\nwake_timeout_ms = 3000\n").await;
        let burn = std::fs::read(env!("TORII_GUEST_APP_BURN")).unwrap();
        let r = t.req("POST", "/1.0/apps/web/deploy").admin().raw(MP, upload(&burn, &[])).send().await;
        assert!(r.body.ends_with("\nOK\n"), "{}", r.body);
        let status = async || t.req("GET", "/1.0/apps/web").admin().send().await.json()["units"][0]["Status"].clone();
        let sleep = async || t.req("POST", "/1.0/apps/web/sleep").admin().form(&[("proxy", "http://127.0.0.1:1")]).send().await;
        let holder = || EventSpec {
            allowed: Allowed::new("app.read.events", vec![]),
            target: Target::new("app", "web"),
            kind: "app.update".into(),
            internal: false,
            owner: Owner::User("admin@example.com".into()),
            source_ip: "127.0.0.1".into(),
            allowed_cancel: None,
            cancelable: false,
            start_custom: serde_json::Value::Null,
            lock: true,
        };
        for i in 0..8 {
            sleep().await.expect_status(200);
            assert_eq!(status().await, "asleep");
            assert_eq!(t.app_get("web.apps.test", "/").await, (200, "awake\n".into()));
            if i % 2 == 0 {
                // The very next operation on the app: not refused by the wake.
                sleep().await.expect_status(200);
                assert_eq!(t.app_get("web.apps.test", "/").await, (200, "awake\n".into()));
            } else {
                // Nor is a lock taken inside the process (no route read first).
                let held = t.server().events.start(holder()).await.expect("the wake is waited for, not a 409");
                held.done(Ok::<(), String>(())).await.unwrap();
            }
            assert_eq!(status().await, "started");
        }
        let wakes = t.req("GET", "/1.1/events?kindname=app.wake").admin().send().await.json();
        let wakes = wakes.as_array().unwrap();
        assert_eq!(wakes.len(), 12, "{wakes:?}");
        assert!(wakes.iter().all(|e| e["Error"] == "" && e["Running"] == false), "{wakes:?}");

        // What waits for a wake is its claim on the app: the app's info and
        // the app list answer only once it goes; another app's info does not
        // wait for it.
        t.req("POST", "/1.0/apps").admin().form(&[("name", "other"), ("teamOwner", "t1")]).send().await.expect_status(201);
        let stranger = t.user("stranger@example.com").await;
        let claim = t.server().events.claims.claim(&Target::new("app", "web")).expect("no wake runs");
        let answered = async |path: &str| {
            t.req("GET", path).admin().send().await.expect_status(200);
            std::time::Instant::now()
        };
        let release = async {
            // Another app's info answers while the claim is held (a wait
            // would last the claim's 10 s bound).
            let asked = std::time::Instant::now();
            t.req("GET", "/1.0/apps/other").admin().send().await.expect_status(200);
            assert!(asked.elapsed() < std::time::Duration::from_secs(5), "another app's info waited for this app's claim");
            // Nor does the list of a user who cannot see the app.
            let asked = std::time::Instant::now();
            t.req("GET", "/1.0/apps").token(&stranger).send().await.expect(204, "");
            assert!(asked.elapsed() < std::time::Duration::from_secs(5), "a stranger's app list waited for this app's claim");
            // Time for the two reads of `web` to arrive and wait.
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            let at = std::time::Instant::now();
            drop(claim);
            at
        };
        let (info, list, released) = tokio::join!(answered("/1.0/apps/web"), answered("/1.0/apps"), release);
        assert!(info >= released && list >= released, "answered before the claim went");

        // An operation holds the app while it sleeps: the request is served
        // now; the app reads asleep (the wake waits for the operation, and
        // nobody waits for the wake) and wakes once the operation ends.
        sleep().await.expect_status(200);
        let running = t.server().events.start(holder()).await.unwrap();
        assert_eq!(t.app_get("web.apps.test", "/").await, (200, "awake\n".into()));
        assert_eq!(t.app_get("web.apps.test", "/").await, (200, "awake\n".into()));
        assert_eq!(status().await, "asleep");
        running.done(Ok::<(), String>(())).await.unwrap();
        crate::support::within(5, "the app woken once the operation ended", async || status().await == "started").await;
        let wakes = t.req("GET", "/1.1/events?kindname=app.wake").admin().send().await.json();
        assert_eq!(wakes.as_array().unwrap().len(), 13, "{wakes}");
        t.stop().await;
    }
}

backends! {
    async fn app_output_still_waiting_for_the_log_is_written_when_torii_stops(b) {
        let mut t = setup(b).await;
        access_log(&t, "web").await;
        let hello = std::fs::read(HELLO).unwrap();
        let r = t.req("POST", "/1.0/apps/web/deploy").admin().raw(MP, upload(&hello, &[])).send().await;
        assert!(r.body.ends_with("\nOK\n"), "{}", r.body);
        // Stopped right after the request: its line waits for the log
        // writer's next batch (every 200 ms), which the stop must not lose.
        assert_eq!(t.app_get("web.apps.test", "/last?words").await.0, 200);
        t.halt().await;
        let mut o = crate::support::Options::new(b);
        o.join(&t);
        let after = TestServer::start_with(o).await;
        let r = after.req("GET", "/1.0/apps/web/log?source=app&lines=10").admin().send().await;
        assert!(r.body.contains("\"Message\":\"served /last?words\""), "{}", r.body);
        after.stop().await;
    }
}

backends! {
    async fn a_runaway_request_is_cut_and_the_next_is_served(b) {
        let mut o = crate::support::Options::new(b);
        o.extra_toml = "[apps]\ncpu_deadline_ms = 300\n".into();
        let t = TestServer::start_with(o).await;
        t.team("t1").await;
        t.req("POST", "/1.0/pools").admin().form(&[("name", "main"), ("default", "true")]).send().await.expect(201, "");
        t.req("POST", "/1.0/apps").admin().form(&[("name", "web"), ("teamOwner", "t1"), ("plan", "c0.1m0.1")]).send().await.expect_status(201);
        let bytes = std::fs::read(env!("TORII_GUEST_APP_BURN")).unwrap();
        let r = t.req("POST", "/1.0/apps/web/deploy").admin().raw(MP, upload(&bytes, &[])).send().await;
        assert!(r.body.ends_with("\nOK\n"), "{}", r.body);
        assert_eq!(t.app_get("web.apps.test", "/burn").await, (504, "the request ran past the app's CPU deadline of 300 ms\n".into()));
        assert_eq!(t.app_get("web.apps.test", "/").await, (200, "awake\n".into()));
        t.stop().await;
    }
}

backends! {
    // The default deadline (10 s): touching 128 MiB on a loaded machine may take
    // longer than the 300 ms the test above sets.
    async fn a_request_past_the_plan_memory_fails_and_the_next_is_served(b) {
        let t = TestServer::start(b).await;
        t.team("t1").await;
        t.req("POST", "/1.0/pools").admin().form(&[("name", "main"), ("default", "true")]).send().await.expect(201, "");

        // The plan's memory (128 MiB) bounds each request.
        t.req("POST", "/1.0/apps").admin().form(&[("name", "hog"), ("teamOwner", "t1"), ("plan", "c0.1m0.1")]).send().await.expect_status(201);
        let bytes = std::fs::read(env!("TORII_GUEST_APP_HOG")).unwrap();
        let r = t.req("POST", "/1.0/apps/hog/deploy").admin().raw(MP, upload(&bytes, &[])).send().await;
        assert!(r.body.ends_with("\nOK\n"), "{}", r.body);
        assert_eq!(t.app_get("hog.apps.test", "/?mb=8").await, (200, "held 8 MiB\n".into()));
        assert_eq!(t.app_get("hog.apps.test", "/?mb=300").await,
            (500, "the request needed more than the app's memory limit of 128 MiB\n".into()));
        assert_eq!(t.app_get("hog.apps.test", "/?mb=8").await, (200, "held 8 MiB\n".into()));
        t.stop().await;
    }
}

backends! {
    async fn new_versions_join_the_traffic_when_made_routable(b) {
        let t = setup(b).await;
        let hello = std::fs::read(HELLO).unwrap();
        let echo = std::fs::read(ECHO_ENV).unwrap();
        let r = t.req("POST", "/1.0/apps/web/deploy").admin().raw(MP, upload(&hello, &[])).send().await;
        assert!(r.body.ends_with("\nOK\n"), "{}", r.body);
        t.req("POST", "/1.0/apps/web/deploy").admin().raw(MP, upload(&echo, &[("new-version", "true"), ("override-versions", "true")])).send().await
            .expect_error(400, "new-version and override-versions cannot be used together");
        let r = t.req("POST", "/1.0/apps/web/deploy").admin().raw(MP, upload(&echo, &[("new-version", "true")])).send().await;
        assert!(r.body.contains("Version 2 of app \"web\" is deployed without traffic"), "{}", r.body);
        assert!(r.body.ends_with("\nOK\n"), "{}", r.body);
        // Still all on version 1.
        for _ in 0..20 {
            assert_eq!(t.app_get("web.apps.test", "/").await, (200, "hello from web at /\n".into()));
        }
        t.req("POST", "/1.8/apps/web/routable").admin().json(json!({"version": "9", "isRoutable": true})).send().await
            .expect_error(400, "Invalid version: 9");
        t.req("POST", "/1.8/apps/web/routable").admin().json(json!({"version": "x", "isRoutable": true})).send().await
            .expect_error(400, "Invalid version: x");
        t.req("POST", "/1.8/apps/web/routable").admin().json(json!({"version": "2", "isRoutable": true})).send().await.expect(200, "");

        // Two routable versions share the traffic equally: 1,000 requests within ±5 points of 50/50.
        let mut hello_count = 0;
        for _ in 0..1000 {
            let (status, body) = t.app_get("web.apps.test", "/").await;
            assert_eq!(status, 200);
            if body.starts_with("hello") {
                hello_count += 1;
            }
        }
        assert!((450..=550).contains(&hello_count), "version 1 got {hello_count} of 1000");
        assert_eq!(t.req("GET", "/1.0/apps/web").admin().send().await.json()["units"].as_array().unwrap().len(), 2);

        // With two versions serving, a plain deploy must say which way it goes.
        t.req("POST", "/1.0/apps/web/deploy").admin().raw(MP, upload(&hello, &[])).send().await
            .expect_error(400, "multiple versions currently deployed, either new-version or override-old-versions must be set");
        let r = t.req("POST", "/1.0/apps/web/deploy").admin().raw(MP, upload(&hello, &[("override-versions", "true")])).send().await;
        assert!(r.body.ends_with("\nOK\n"), "{}", r.body);
        for _ in 0..20 {
            assert_eq!(t.app_get("web.apps.test", "/").await, (200, "hello from web at /\n".into()));
        }
        t.stop().await;
    }
}

/// Serves `body` to every GET on a loopback port until dropped; the URL.
async fn serve_file(body: Vec<u8>) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/app.tar.gz", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else { return };
            let body = body.clone();
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut head = vec![0u8; 4096];
                let _ = conn.read(&mut head).await;
                let answer = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                let _ = conn.write_all(answer.as_bytes()).await;
                let _ = conn.write_all(&body).await;
            });
        }
    });
    (url, task)
}

backends! {
    async fn build_rebuild_archive_url_kill_and_unit_status(b) {
        let hello = std::fs::read(HELLO).unwrap();
        let echo = std::fs::read(ECHO_ENV).unwrap();
        // archive-url: fetched over HTTP (its loopback origin allowed), then deployed like an upload.
        let (url, server) = serve_file(tar_gz(&[("app.wasm", &hello)])).await;
        let t = setup_with(b, &format!("[egress]\nallow = [{:?}]\n", crate::support::origin(&url))).await;
        let r = t.req("POST", "/1.0/apps/web/deploy").admin().form(&[("archive-url", url.as_str())]).send().await;
        assert!(r.body.contains(&format!("---- Downloading {url} ----")), "{}", r.body);
        assert!(r.body.ends_with("\nOK\n"), "{}", r.body);
        server.abort();
        assert_eq!(t.app_get("web.apps.test", "/").await, (200, "hello from web at /\n".into()));
        let r = t.req("POST", "/1.0/apps/web/deploy").admin().form(&[("archive-url", url.as_str())]).send().await;
        assert!(r.body.contains("---- ERROR during deploy: ----\ncannot download"), "{}", r.body);

        // Build: a version without traffic, named at the end of the stream.
        t.req("POST", "/1.5/apps/web/build").admin().raw(MP, upload(&echo, &[])).send().await.expect_error(400, "you must specify the image tag.");
        let r = t.req("POST", "/1.5/apps/web/build").admin().raw(MP, upload(&echo, &[("tag", "canary")])).send().await;
        assert_eq!(r.status, 200);
        assert!(r.body.contains("---- Version 2 of app \"web\" is built (tag \"canary\"), without traffic ----\n"), "{}", r.body);
        assert!(r.body.ends_with("\ntorii/app-web:v2\nOK\n"), "{}", r.body);
        assert_eq!(t.app_get("web.apps.test", "/?name=TSURU_APPNAME").await.1, "hello from web at /?name=TSURU_APPNAME\n");
        let r = t.req("POST", "/1.0/apps/web/deploy/rollback").admin().form(&[("image", "torii/app-web:v2")]).send().await;
        assert_eq!(stream(&r.body).1, None, "{}", r.body);
        assert_eq!(t.app_get("web.apps.test", "/?name=TSURU_APPNAME").await, (200, "web\n".into()));

        // Rebuild: the serving component again, as version 3.
        t.req("POST", "/1.3/apps/web/deploy/rebuild").admin().form(&[]).send().await.expect_error(400, "Invalid deployment origin");
        t.req("POST", "/1.3/apps/web/deploy/rebuild").admin().form(&[("origin", "moon")]).send().await.expect_error(400, "Invalid deployment origin");
        let r = t.req("POST", "/1.3/apps/web/deploy/rebuild").admin().form(&[("origin", "rebuild")]).send().await;
        assert_eq!(r.header("content-type"), "application/x-json-stream");
        let (messages, error) = stream(&r.body);
        assert_eq!(error, None, "{}", r.body);
        assert!(messages.iter().any(|m| m.contains("Checking version 2")), "{messages:?}");
        assert!(messages.last().unwrap().contains("Version 3 of app \"web\" is serving all its traffic"), "{messages:?}");
        assert_eq!(t.app_get("web.apps.test", "/?name=TSURU_APPNAME").await, (200, "web\n".into()));
        let deploys = t.req("GET", "/1.0/deploys?app=web").admin().send().await.json();
        assert_eq!((deploys[0]["Version"].clone(), deploys[0]["Image"].clone()), (json!(3), json!("torii/app-web:v3")));

        // Kill a unit: the request it serves is cut, the next is served.
        let burn = std::fs::read(env!("TORII_GUEST_APP_BURN")).unwrap();
        let r = t.req("POST", "/1.0/apps/web/deploy").admin().raw(MP, upload(&burn, &[])).send().await;
        assert!(r.body.ends_with("\nOK\n"), "{}", r.body);
        t.req("DELETE", "/1.12/apps/web/units/nope").admin().send().await.expect_error(404, "unit \"nope\" not found");
        let started = std::time::Instant::now();
        let (cut, ()) = tokio::join!(t.app_get("web.apps.test", "/sleep?ms=5000"), async {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            t.req("DELETE", "/1.12/apps/web/units/web-web-v4-0?force=true").admin().send().await.expect(200, "");
        });
        assert_eq!(cut, (503, "unit web-web-v4-0 was killed while serving this request\n".into()));
        assert!(started.elapsed() < std::time::Duration::from_secs(4), "the kill did not cut the request");
        assert_eq!(t.app_get("web.apps.test", "/").await, (200, "awake\n".into()));
        // A body larger than what fits in flight streams to the end (the
        // guest goes on writing after the response head left).
        let (status, body) = t.app_get("web.apps.test", "/stream?kb=8192").await;
        assert_eq!((status, body.len()), (200, 8 << 20));
        assert!(body.bytes().all(|b| b == b'x'));
        let unit = &t.req("GET", "/1.0/apps/web").admin().send().await.json()["units"][0];
        assert_eq!((unit["ID"].clone(), unit["Restarts"].clone(), unit["Status"].clone()), (json!("web-web-v4-0"), json!(1), json!("started")));

        // Unit status: matched by id prefix, shown while the app runs.
        t.req("POST", "/1.0/apps/web/units/web-web-v4").admin().form(&[("status", "bogus")]).send().await.expect_error(400, "invalid status");
        t.req("POST", "/1.0/apps/web/units/zzz").admin().form(&[("status", "error")]).send().await.expect_error(404, "unit \"zzz\" not found");
        t.req("POST", "/1.0/apps/web/units/web-web-v4").admin().form(&[("status", "error")]).send().await.expect(200, "");
        let unit = &t.req("GET", "/1.0/apps/web").admin().send().await.json()["units"][0];
        assert_eq!((unit["Status"].clone(), unit["Ready"].clone()), (json!("error"), json!(false)));
        let r = t.req("POST", "/1.0/apps/web/restart").admin().form(&[]).send().await;
        assert_eq!(stream(&r.body).1, None, "{}", r.body);
        assert_eq!(t.req("GET", "/1.0/apps/web").admin().send().await.json()["units"][0]["Status"], "started");

        // A unit's agent registers with the app's token and gets the app's env
        // (not captured as a unit named "register").
        let token = t.server().store.app_env("web").await.unwrap().into_iter().find(|e| e.name == "TSURU_APP_TOKEN").unwrap().value;
        let r = t.req("POST", "/1.0/apps/web/units/register").token(&token).form(&[("hostname", "web-web-v4-0"), ("customdata", "{\"a\": 1}")]).send().await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json(), t.req("GET", "/1.0/apps/web/env").admin().send().await.json());
        t.req("POST", "/1.0/apps/web/units/register").token(&token).form(&[("hostname", "web-web-v9-0")]).send().await
            .expect_error(404, "unit \"web-web-v9-0\" not found");
        t.req("POST", "/1.0/apps/web/units/register").token(&token).form(&[("hostname", "web-web-v4-0"), ("customdata", "[1]")]).send().await
            .expect_error(400, "customdata must be a JSON object");
        t.req("POST", "/1.0/apps/web/units/register").token(&token).header("user-agent", "tsuru-deploy-agent/0.2").form(&[("hostname", "web-web-v4-0")]).send().await
            .expect_error(400, "Please contact admin.  platform is using outdated deploy-agent version, minimum required version is 0.2.4");
        let r = t.req("POST", "/1.0/apps/web/units/register").token(&token).header("user-agent", "tsuru-deploy-agent/0.2").header("x-agent-version", "0.2.4").form(&[("hostname", "web-web-v4-0")]).send().await;
        assert_eq!(r.status, 200, "{}", r.body);
        let outsider = t.user("out@example.com").await;
        t.req("POST", "/1.0/apps/web/units/register").token(&outsider).form(&[("hostname", "web-web-v4-0")]).send().await.expect_status(403);

        // Node status is for tsuru's node agent (its internal app tsr) alone;
        // torii has none, so every token is refused as tsuru refuses them.
        let report = json!({"Addrs": ["127.0.0.1"], "Units": [{"ID": "web-web-v4-0", "Name": "", "Status": "error"}], "Checks": []});
        for caller in [token.as_str(), t.admin_token.as_str()] {
            t.req("POST", "/node/status").token(caller).json(report.clone()).send().await.expect_error(403, "this token is not allowed to execute this action");
        }
        t.req("POST", "/node/status").json(report).send().await.expect_status(401);
        t.stop().await;
    }
}

backends! {
    async fn provisioners_are_plugins_chosen_per_pool(b) {
        // A second copy of the wasm provisioner, configured to send traffic
        // to the `worker` process, and one that lacks the runtime capability.
        let path = env!("TORII_GUEST_PROVISIONER_WASM");
        let mut o = crate::support::Options::new(b);
        o.extra_toml = format!(
            "[[plugin]]\nname = \"edge\"\nkind = \"provisioner\"\npath = {path:?}\ncapabilities = [\"log\", \"app-runtime\"]\n\
             [plugin.config]\nserving_process = \"worker\"\n\
             [[plugin]]\nname = \"jailed\"\nkind = \"provisioner\"\npath = {path:?}\ncapabilities = [\"log\"]\n"
        );
        let t = TestServer::start_with(o).await;
        t.team("t1").await;
        t.req("POST", "/1.0/pools").admin().form(&[("name", "main"), ("default", "true")]).send().await.expect(201, "");
        t.req("POST", "/1.0/pools").admin().form(&[("name", "edge"), ("provisioner", "edge")]).send().await.expect(201, "");
        t.req("POST", "/1.0/pools").admin().form(&[("name", "jail"), ("provisioner", "jailed")]).send().await.expect(201, "");
        t.req("POST", "/1.0/pools").admin().form(&[("name", "bad"), ("provisioner", "nope")]).send().await
            .expect_error(400, "provisioner \"nope\" is not configured");
        for (app, pool) in [("web", "main"), ("edgy", "edge"), ("caged", "jail")] {
            t.req("POST", "/1.0/apps").admin().form(&[("name", app), ("teamOwner", "t1"), ("pool", pool)]).send().await.expect_status(201);
        }
        assert_eq!(t.req("GET", "/1.0/apps/edgy").admin().send().await.json()["provisioner"], "edge");

        // Same archive; each provisioner decides which process serves.
        for app in ["web", "edgy"] {
            access_log(&t, app).await;
        }
        let hello = std::fs::read(HELLO).unwrap();
        let archive = tar_gz(&[("app.wasm", &hello), ("Procfile", b"web: app.wasm\nworker: app.wasm\n")]);
        for app in ["web", "edgy"] {
            let r = t.req("POST", &format!("/1.0/apps/{app}/deploy")).admin().raw(MP, upload(&archive, &[])).send().await;
            assert!(r.body.ends_with("\nOK\n"), "{}", r.body);
        }
        let r = t.req("POST", "/1.0/apps/edgy/deploy").admin().raw(MP, upload(&archive, &[])).send().await;
        assert!(r.body.contains(" ---> a wasi:http component, already compiled, ready in"), "{}", r.body);
        assert!(r.body.contains(" ---> version 2 serves process worker with 1 unit(s)\n"), "{}", r.body);
        for (host, unit) in [("web.apps.test", "web-web-v1-0"), ("edgy.apps.test", "edgy-worker-v2-0")] {
            assert_eq!(t.app_get(host, "/").await.0, 200);
            let app = host.split('.').next().unwrap();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            loop {
                let r = t.req("GET", &format!("/1.0/apps/{app}/log?source=app&lines=10")).admin().send().await;
                if r.status == 200 && r.body.contains(&format!("\"Unit\":\"{unit}\"")) {
                    break;
                }
                assert!(std::time::Instant::now() < deadline, "no log line from unit {unit}: {}", r.body);
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
        // Both processes have units; app info lists what the provisioner reports.
        let units = t.req("GET", "/1.0/apps/edgy").admin().send().await.json()["units"].clone();
        let ids: Vec<_> = units.as_array().unwrap().iter().map(|u| u["ID"].as_str().unwrap().to_string()).collect();
        assert_eq!(ids, ["edgy-web-v2-0", "edgy-worker-v2-0"]);

        // A provisioner without the app-runtime grant fails clearly; nothing is recorded.
        let r = t.req("POST", "/1.0/apps/caged/deploy").admin().raw(MP, upload(&archive, &[])).send().await;
        assert!(r.body.contains("plugin \"jailed\" called capability \"app-runtime\", which its config does not grant"), "{}", r.body);
        assert!(!r.body.ends_with("\nOK\n"), "{}", r.body);
        assert_eq!(t.req("GET", "/1.0/apps/caged").admin().send().await.json()["deploys"], 0);
        assert_eq!(t.app_get("caged.apps.test", "/").await.0, 503);
        t.stop().await;
    }
}

/// The Python hello (`plugins/apps/hello-py`) built with componentize-py
/// into `dir`; `None` (the test says it did not run) when componentize-py is
/// missing, unless `TORII_TEST_REQUIRE_COMPONENTIZE_PY=1` (as in CI).
fn python_hello(dir: &std::path::Path) -> Option<Vec<u8>> {
    let tool = std::env::var("COMPONENTIZE_PY").unwrap_or_else(|_| "componentize-py".into());
    if std::process::Command::new(&tool).arg("--version").output().is_err() {
        assert!(
            std::env::var("TORII_TEST_REQUIRE_COMPONENTIZE_PY").as_deref() != Ok("1"),
            "TORII_TEST_REQUIRE_COMPONENTIZE_PY=1 but componentize-py is not installed"
        );
        eprintln!("Python component test not run: componentize-py is not installed (.ci/run installs it)");
        return None;
    }
    let out = dir.join("hello-py.wasm");
    let build = concat!(env!("CARGO_MANIFEST_DIR"), "/../plugins/apps/hello-py/build");
    let built = std::process::Command::new(build).arg(&out).env("COMPONENTIZE_PY", &tool).output().unwrap();
    assert!(built.status.success(), "{build}: {}", String::from_utf8_lossy(&built.stderr));
    Some(std::fs::read(&out).unwrap())
}

/// A large component (CPython inside, ~18 MB) deploys as a bare file and
/// answers through the router with the app's env.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_component_deploys_and_serves() {
    // Building and compiling it keeps both cores busy for seconds: alone,
    // so the tests that count milliseconds do not run beside it.
    let _alone = crate::support::TIMED.write().await;
    let dir = tempfile::TempDir::new().unwrap();
    let Some(python) = python_hello(dir.path()) else { return };
    assert!(python.len() > 10 << 20, "{} bytes", python.len());
    let t = TestServer::start_with(crate::support::Options::new(crate::support::Backend::Sqlite)).await;
    t.team("t1").await;
    t.req("POST", "/1.0/pools").admin().form(&[("name", "main"), ("default", "true")]).send().await.expect(201, "");
    t.req("POST", "/1.0/apps").admin().form(&[("name", "py"), ("teamOwner", "t1")]).send().await.expect_status(201);
    let r = t.req("POST", "/1.0/apps/py/deploy").admin().raw(MP, upload(&python, &[])).send().await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.ends_with("\nOK\n"), "{}", r.body);
    // Compiled by the host with the deploy's progress, not inside the
    // provisioner's call, and to baseline code first (Cranelift's code takes
    // seconds more).
    assert!(r.body.contains(" ---> the component is ready to run on baseline code, after "), "{}", r.body);
    assert!(r.body.contains(" ---> a wasi:http component, already compiled, ready in "), "{}", r.body);
    let optimizing = |metrics: &str| metrics.lines().find_map(|l| l.strip_prefix("torii_app_versions_optimizing ")).map(str::to_string);
    let metrics = t.req("GET", "/1.2/metrics").send().await;
    assert_eq!(optimizing(&metrics.body).as_deref(), Some("1"), "{}", metrics.body);
    assert_eq!(t.app_get("py.apps.test", "/hi?x=1").await, (200, "hello from python (py) /hi?x=1\n".into()));
    // The optimised code replaces the baseline code, and answers the same.
    crate::support::within(120, "the optimised code replaces the baseline code", async || {
        optimizing(&t.req("GET", "/1.2/metrics").send().await.body).as_deref() == Some("0")
    })
    .await;
    assert_eq!(t.app_get("py.apps.test", "/hi?x=2").await, (200, "hello from python (py) /hi?x=2\n".into()));
}
