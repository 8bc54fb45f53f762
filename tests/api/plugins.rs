//! The plugin runtime survives its plugins: a guest that loops, allocates
//! without bound, traps, or calls a capability it was not granted yields an
//! API error naming the plugin and the cause, and the next request succeeds.

use crate::support::{Backend, Options, TestServer, backends};
use torii::config::Config;
use torii::server::Server;

fn chaos_options(b: Backend) -> Options {
    let mut o = Options::new(b);
    o.user_registration = true;
    o.auth_toml = "scheme = \"chaos\"".into();
    o.extra_toml = format!(
        "[[plugin]]\nname = \"chaos\"\nkind = \"auth-scheme\"\npath = {:?}\ncapabilities = [\"log\"]\ntimeout_ms = 300\nmemory_mb = 16\n",
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
            .expect_error(500, "plugin \"chaos\" timed out: its call ran past the 300 ms deadline");
        assert!(started.elapsed() < std::time::Duration::from_secs(2), "took {:?}", started.elapsed());
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

    // A grant the kind's world cannot use; a kind torii does not call yet.
    let parse = |entry: &str| Config::parse(&format!("{base}{entry}")).err().map(|e| e.to_string()).unwrap_or_default();
    assert_eq!(
        parse(&format!("[[plugin]]\nname = \"edge\"\nkind = \"router\"\npath = {provisioner:?}\ncapabilities = [\"log\", \"containers\"]\n")),
        "config: `plugin[0].capabilities`: a router plugin cannot use capability \"containers\" (it may be granted log, kv, proxy, http)"
    );
    assert_eq!(
        parse(&format!("[[plugin]]\nname = \"ec2\"\nkind = \"iaas\"\npath = {provisioner:?}\n")),
        "config: `plugin[0].kind`: this torii has no host side for iaas plugins yet: nothing would call it (it loads auth-scheme, provisioner and router plugins)"
    );
}

#[tokio::test]
async fn compiled_plugins_are_cached_by_content_hash() {
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
    // The built-in plugins: the native auth scheme, the wasm and docker
    // provisioners and the embedded router.
    let first = entries();
    assert_eq!(first.len(), 4, "{first:?}");
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
