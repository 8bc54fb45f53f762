//! The plugin runtime survives its plugins: a guest that loops, allocates
//! without bound, traps, or calls a capability it was not granted yields an
//! API error naming the plugin and the cause, and the next request succeeds.

use crate::support::{Backend, Options, TestServer, backends};
use serde_json::{Value, json};
use torii::config::Config;
use torii::server::Server;

fn chaos_options(b: Backend) -> Options {
    let mut o = Options::new(b);
    o.user_registration = true;
    o.auth_toml = "scheme = \"chaos\"".into();
    // The deadline leaves room for the calls that must succeed (the noisy
    // one writes 100 KiB of stderr) in a debug build on two busy cores.
    o.extra_toml = format!(
        "[[plugin]]\nname = \"chaos\"\nkind = \"auth-scheme\"\npath = {:?}\ncapabilities = [\"log\"]\ntimeout_ms = 1000\nmemory_mb = 16\n",
        env!("TORII_GUEST_TEST_CHAOS")
    );
    o
}

backends! {
    async fn faults_become_errors_and_the_next_call_succeeds(b) {
        let t = TestServer::start_with(chaos_options(b)).await;
        t.req("GET", "/1.0/auth/scheme").send().await.expect(200, "{\"name\":\"chaos\",\"data\":null}\n");
        t.req("POST", "/1.0/users").form(&[("email", "ok@example.com"), ("password", "whatever")]).send().await.expect(201, "");
        let login = |email: &'static str| {
            let req = t.req("POST", "/1.0/auth/login").form(&[("email", email), ("password", "x")]);
            async move { req.send().await }
        };
        login("ok@example.com").await.expect_status(200);

        let started = std::time::Instant::now();
        login("loop@example.com").await
            .expect_error(500, "plugin \"chaos\" timed out: its call ran past the 1000 ms deadline");
        assert!(started.elapsed() < std::time::Duration::from_secs(3), "took {:?}", started.elapsed());
        login("ok@example.com").await.expect_status(200);

        login("alloc@example.com").await
            .expect_error(500, "plugin \"chaos\" ran out of memory: it tried to grow past its 16 MiB limit");
        login("ok@example.com").await.expect_status(200);

        let r = login("trap@example.com").await;
        r.expect_status(500);
        assert!(r.body.starts_with("plugin \"chaos\" trapped: "), "{}", r.body);
        assert!(r.body.contains("chaos plugin asked to trap"), "{}", r.body);
        login("ok@example.com").await.expect_status(200);

        login("kv@example.com").await
            .expect_error(500, "plugin \"chaos\" called capability \"kv\", which its config does not grant");
        login("ok@example.com").await.expect_status(200);

        // A plugin that writes a lot to stderr keeps working (the plugin accepts
        // the login; 404 is the host: no such torii user), and a later panic is
        // still reported with its own message, not stale output.
        for _ in 0..3 {
            login("noisy@example.com").await.expect_error(404, "user not found");
        }
        let r = login("trap@example.com").await;
        assert!(r.body.contains("chaos plugin asked to trap"), "{}", r.body);
        assert!(!r.body.contains("xxxx"), "stale stderr in {}", r.body);

        // A call that needed much memory gives it back: its instance is not
        // kept warm (linear memory never shrinks); a small one is.
        // (What `GET /torii/v1/plugins/chaos` shows; this server has no admin.)
        let warm = || {
            let status = t.server().plugins["chaos"].status();
            (status.warm_instances, status.warm_memory_bytes)
        };
        let keep = torii::plugin::instance::KEEP_WARM_MEMORY;
        login("ok@example.com").await.expect_status(200);
        let (instances, bytes) = warm();
        assert!(instances == 1 && bytes > 0 && bytes <= keep, "{instances} instance(s) holding {bytes} bytes");
        login("big@example.com").await.expect_error(404, "user not found");
        assert_eq!(warm(), (0, 0));
        login("ok@example.com").await.expect_status(200);
        assert_eq!(warm().0, 1);

        // Several faults at once do not disturb each other or the host.
        let (a, b2, c) = tokio::join!(login("loop@example.com"), login("trap@example.com"), login("ok@example.com"));
        a.expect_status(500);
        b2.expect_status(500);
        c.expect_status(200);
        t.req("GET", "/healthcheck?check=auth-scheme").send().await.expect_status(200);
        t.stop().await;
    }
}

#[tokio::test]
async fn bad_plugin_config_or_file_stops_startup_naming_the_plugin() {
    // Beside the timed test, never during it (see support::TIMED).
    let _beside = crate::support::TIMED.read().await;
    let dir = tempfile::TempDir::new().unwrap();
    let cache = crate::support::shared_cache_dir();
    let base = format!("data_dir = {:?}\n[plugins]\ncache_dir = {cache:?}\n", dir.path());

    let toml = format!("{base}[[plugin]]\nname = \"native\"\nkind = \"auth-scheme\"\nbuiltin = \"auth-native\"\ncapabilities = [\"kv\"]\n[plugin.config]\nargon2_memory_kib = \"lots\"\n");
    let err = Server::build(Config::parse(&toml).unwrap()).await.err().expect("refused").to_string();
    assert!(err.starts_with("plugin \"native\" failed to initialise: auth-native config:"), "{err}");

    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"\0asm garbage").unwrap();
    let toml = format!("{base}[auth]\nscheme = \"junk\"\n[[plugin]]\nname = \"junk\"\nkind = \"auth-scheme\"\npath = {junk:?}\n");
    let err = format!("{:#}", Server::build(Config::parse(&toml).unwrap()).await.err().expect("refused"));
    assert!(err.starts_with("plugin \"junk\" is not a valid component"), "{err}");
}

#[tokio::test]
async fn entries_that_do_not_fit_their_kind_are_refused_at_load() {
    // Beside the timed test, never during it (see support::TIMED).
    let _beside = crate::support::TIMED.read().await;
    let dir = tempfile::TempDir::new().unwrap();
    let cache = crate::support::shared_cache_dir();
    let base = format!("data_dir = {:?}\n[plugins]\ncache_dir = {cache:?}\n", dir.path());
    let provisioner = env!("TORII_GUEST_TEST_HTTP_BACKENDS");

    // The component is another kind than its entry says.
    let toml = format!("{base}[[plugin]]\nname = \"edge\"\nkind = \"router\"\npath = {provisioner:?}\ncapabilities = [\"log\"]\n");
    let err = format!("{:#}", Server::build(Config::parse(&toml).unwrap()).await.err().expect("refused"));
    assert_eq!(
        err,
        format!("plugin \"edge\": its entry says kind router, but the component is of kind provisioner (it exports torii:plugin/provisioner@{})", torii::plugin::CONTRACT_VERSION)
    );

    // Grants the kind's world cannot use.
    let parse = |entry: &str| Config::parse(&format!("{base}{entry}")).err().map(|e| e.to_string()).unwrap_or_default();
    assert_eq!(
        parse(&format!("[[plugin]]\nname = \"edge\"\nkind = \"router\"\npath = {provisioner:?}\ncapabilities = [\"log\", \"containers\"]\n")),
        "config: `plugin[0].capabilities`: a router plugin cannot use capability \"containers\" (it may be granted log, kv, proxy, http)"
    );
    assert_eq!(
        parse(&format!("[[plugin]]\nname = \"ec2\"\nkind = \"iaas\"\npath = {provisioner:?}\ncapabilities = [\"containers\"]\n")),
        "config: `plugin[0].capabilities`: an iaas plugin cannot use capability \"containers\" (it may be granted log, kv, http)"
    );
}

#[tokio::test]
async fn compiled_plugins_are_cached_by_content_hash() {
    // Beside the timed test, never during it (see support::TIMED).
    let _beside = crate::support::TIMED.read().await;
    let dir = tempfile::TempDir::new().unwrap();
    let cache = dir.path().join("cache");
    let toml = format!("data_dir = {:?}\n[plugins]\ncache_dir = {cache:?}\n", dir.path().join("data"));
    let server = Server::build(Config::parse(&toml).unwrap()).await.unwrap();
    server.store.close().await;
    drop(server);
    let entries = || {
        let mut v: Vec<_> = std::fs::read_dir(&cache).unwrap().flatten().map(|e| e.path()).collect();
        v.sort();
        v
    };
    // The built-in plugins: the native auth scheme, the wasm, docker and
    // swarm provisioners, the embedded router and the tsuru and osb brokers.
    let first = entries();
    assert_eq!(first.len(), 7, "{first:?}");
    for entry in &first {
        let name = entry.file_name().unwrap().to_string_lossy().to_string();
        // <sha256 of the component>-<engine compatibility hash>.cwasm
        let (digest, rest) = name.split_once('-').unwrap();
        assert_eq!(digest.len(), 64);
        assert!(rest.ends_with(".cwasm"));
    }
    let modified: Vec<_> = first.iter().map(|e| std::fs::metadata(e).unwrap().modified().unwrap()).collect();

    // A restart loads the compiled bytes instead of compiling again.
    let server = Server::build(Config::parse(&toml).unwrap()).await.unwrap();
    assert_eq!(server.scheme.info().await.unwrap().name, "native");
    server.store.close().await;
    assert_eq!(entries(), first);
    let again: Vec<_> = first.iter().map(|e| std::fs::metadata(e).unwrap().modified().unwrap()).collect();
    assert_eq!(again, modified);
}

backends! {
    async fn plugins_are_listed_and_swapped_while_they_serve(b) {
        let t = crate::support::TestServer::start(b).await;
        // Listed with where they come from, what they speak and how they do.
        let list = t.req("GET", "/torii/v1/plugins").admin().send().await.json();
        let names: Vec<&str> = list.as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["docker", "embedded", "native", "osb", "swarm", "tsuru", "wasm"], "{list}");
        let native = list.as_array().unwrap().iter().find(|p| p["name"] == "native").unwrap().clone();
        let builtin_digest = native["digest"].as_str().unwrap().to_string();
        assert_eq!(builtin_digest.len(), 64);
        assert_eq!(
            (native["kind"].clone(), native["source"].clone(), native["contract"].clone(), native["grants"].clone(), native["health"].clone()),
            (json!("auth-scheme"), json!("builtin:auth-native"), json!(torii::plugin::CONTRACT_VERSION), json!(["log", "kv"]), json!("ok"))
        );
        let token = t.user("someone@example.com").await;
        t.req("GET", "/torii/v1/plugins").token(&token).send().await.expect_status(403);
        t.req("PUT", "/torii/v1/plugins/native").token(&token).raw("application/wasm", b"\0asm".to_vec()).send().await.expect_status(403);
        t.req("GET", "/torii/v1/plugins/nope").admin().send().await.expect_error(404, "plugin \"nope\" not found");

        // Swapped while a client keeps asking it: every answer comes, from
        // the old one, then the new one.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (client, base, halt) = (reqwest::Client::new(), t.base.clone(), stop.clone());
        let asking = tokio::spawn(async move {
            let mut seen = Vec::new();
            while !halt.load(std::sync::atomic::Ordering::SeqCst) {
                let r = client.get(format!("{base}/1.0/auth/scheme")).send().await.unwrap();
                let status = r.status().as_u16();
                let name = r.json::<Value>().await.map(|v| v["name"].as_str().unwrap_or_default().to_string()).unwrap_or_default();
                seen.push((status, name));
            }
            seen
        });
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let chaos = std::fs::read(env!("TORII_GUEST_TEST_CHAOS")).unwrap();
        let r = t.req("PUT", "/torii/v1/plugins/native").admin().raw("application/wasm", chaos).send().await;
        assert_eq!(r.status.as_u16(), 200, "{}", r.body);
        let swapped = r.json();
        assert_eq!((swapped["source"].clone(), swapped["health"].clone()), (json!("upload"), json!("ok")));
        assert_ne!(swapped["digest"], json!(builtin_digest));
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let seen = asking.await.unwrap();
        assert!(seen.iter().all(|(status, _)| *status == 200), "{:?}", seen.iter().filter(|(s, _)| *s != 200).collect::<Vec<_>>());
        let names: std::collections::BTreeSet<&str> = seen.iter().map(|(_, n)| n.as_str()).collect();
        assert_eq!(names, ["chaos", "native"].into(), "{} answers", seen.len());

        // A component that does not fit leaves the current one serving.
        t.req("PUT", "/torii/v1/plugins/native").admin().raw("application/wasm", b"\0asm junk".to_vec()).send().await.expect_status(400);
        let provisioner = std::fs::read(env!("TORII_GUEST_TEST_HTTP_BACKENDS")).unwrap();
        t.req("PUT", "/torii/v1/plugins/native").admin().raw("application/wasm", provisioner).send().await.expect_error(
            400,
            &format!("plugin \"native\": its entry says kind auth-scheme, but the component is of kind provisioner (it exports torii:plugin/provisioner@{})", torii::plugin::CONTRACT_VERSION),
        );
        assert_eq!(t.req("GET", "/1.0/auth/scheme").send().await.json()["name"], "chaos");
        let now = t.req("GET", "/torii/v1/plugins/native").admin().send().await.json();
        assert_eq!(now["digest"], swapped["digest"]);
        t.stop().await;
    }
}

/// `plugins/template-router` copied out of the tree, built against the SDK
/// by path with the tree's lockfile, and loaded as a router plugin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_template_plugin_builds_out_of_tree_and_serves() {
    // Beside the timed test, never during it (see support::TIMED).
    let _beside = crate::support::TIMED.read().await;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    let dir = tempfile::TempDir::new().unwrap();
    let crate_dir = dir.path().join("my-router");
    std::fs::create_dir_all(crate_dir.join("src")).unwrap();
    let manifest = std::fs::read_to_string(root.join("plugins/template-router/Cargo.toml")).unwrap();
    let sdk = root.join("plugins/sdk");
    assert!(manifest.contains("path = \"../sdk\""), "{manifest}");
    std::fs::write(crate_dir.join("Cargo.toml"), manifest.replace("path = \"../sdk\"", &format!("path = {:?}", sdk.display().to_string()))).unwrap();
    std::fs::copy(root.join("plugins/template-router/src/lib.rs"), crate_dir.join("src/lib.rs")).unwrap();
    std::fs::copy(root.join("plugins/Cargo.lock"), crate_dir.join("Cargo.lock")).unwrap();
    let target = root.join("target/guest-template");
    let build = tokio::task::spawn_blocking({
        let (crate_dir, target) = (crate_dir.clone(), target.clone());
        move || {
            let mut cmd = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
            cmd.current_dir(&crate_dir).args(["build", "--release", "--target", "wasm32-wasip2", "--target-dir"]).arg(&target);
            for var in ["CARGO_TARGET_DIR", "CARGO_BUILD_TARGET", "RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "CARGO_MAKEFLAGS", "MAKEFLAGS", "MFLAGS"] {
                cmd.env_remove(var);
            }
            cmd.output().expect("cargo runs")
        }
    })
    .await
    .unwrap();
    assert!(build.status.success(), "the template does not build out of tree:\n{}", String::from_utf8_lossy(&build.stderr));
    let wasm = target.join("wasm32-wasip2/release/my_router.wasm");

    let mut o = Options::new(Backend::Sqlite);
    o.extra_toml = format!("[[plugin]]\nname = \"mine\"\nkind = \"router\"\npath = {:?}\ncapabilities = [\"log\", \"kv\"]\n[plugin.config]\ngreeting = \"hi\"\n", wasm.display().to_string());
    let t = TestServer::start_with(o).await;
    t.team("t1").await;
    t.req("POST", "/1.0/pools").admin().form(&[("name", "main"), ("default", "true")]).send().await.expect(201, "");
    t.req("POST", "/1.0/apps").admin().form(&[("name", "web"), ("teamOwner", "t1")]).send().await.expect_status(201);
    t.req("POST", "/1.8/routers").admin().json(json!({"name": "own", "type": "mine", "config": {"domain": "own.test"}})).send().await.expect(201, "");
    t.req("POST", "/1.5/apps/web/routers").admin().json(json!({"name": "own"})).send().await.expect(200, "");
    let routers = t.req("GET", "/1.5/apps/web/routers").admin().send().await.json();
    assert_eq!((routers[1]["name"].clone(), routers[1]["status"].clone()), (json!("own"), json!("ready")), "{routers}");
    let mine = t.req("GET", "/torii/v1/plugins/mine").admin().send().await.json();
    assert_eq!((mine["kind"].clone(), mine["source"].clone(), mine["health"].clone(), mine["errors"].clone()), (json!("router"), json!(wasm.display().to_string()), json!("ok"), json!(0)), "{mine}");
    t.stop().await;
}
