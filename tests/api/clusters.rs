//! Provisioner clusters (API-NOTES §2.20): CRUD through the API, tsuru's
//! checks and messages, secrets only for `cluster.admin`, pools and the
//! default taken over as tsuru's storage does, secrets sealed at rest.

use crate::support::{TestServer, backends};
use serde_json::{Value, json};

const JSON: &str = "application/json";
/// "PEM" bytes, base64 as tsuru's clients send them.
const KEY: &str = "LS0tLS1CRUdJTiBQUklWQVRFIEtFWS0tLS0tCnNlY3JldAo=";
const CERT: &str = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCnB1YmxpYwo=";

fn names(list: &Value) -> Vec<(String, Value, bool)> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap().to_string(), c["pools"].clone(), c["default"].as_bool().unwrap()))
        .collect()
}

backends! {
    async fn clusters_are_created_listed_updated_and_removed_as_tsuru_does(b) {
        let t = TestServer::start(b).await;
        for pool in ["p1", "p2"] {
            t.req("POST", "/1.0/pools").admin().form(&[("name", pool)]).send().await.expect(201, "");
        }
        t.req("GET", "/1.3/provisioner/clusters").admin().send().await.expect(204, "");
        let provisioners = t.req("GET", "/1.7/provisioner").admin().send().await.json();
        let wasm = provisioners.as_array().unwrap().iter().find(|p| p["name"] == "wasm").expect("wasm is listed");
        assert!(wasm["cluster_help"]["provisioner_help"].as_str().unwrap().contains("WebAssembly"), "{wasm}");

        // JSON only, without media type parameters.
        let create = |body: Value| t.req("POST", "/1.3/provisioner/clusters").admin().raw(JSON, body.to_string());
        t.req("POST", "/1.3/provisioner/clusters").admin().form(&[("name", "c1")]).send().await
            .expect_error(500, "Invalid Content-Type \"application/x-www-form-urlencoded\"");
        t.req("POST", "/1.3/provisioner/clusters").admin().raw("application/json; charset=utf-8", "{}").send().await
            .expect_error(500, "Invalid Content-Type \"application/json; charset=utf-8\"");
        let r = t.req("POST", "/1.3/provisioner/clusters").admin().raw(JSON, "{\"name\":").send().await;
        assert!(r.status == 400 && r.body.starts_with("unable to parse as json: \"{\\\"name\\\":\" - "), "{}", r.body);

        // tsuru's checks, in its order; none records anything.
        for (body, status, message) in [
            (json!({}), 400, "cluster name is mandatory"),
            (json!({"name": "  "}), 400, "cluster name is mandatory"),
            (json!({"name": "C_1", "provisioner": "wasm", "default": true}), 400,
             "Invalid cluster name, cluster name should have at most 40 characters, containing only lower case letters, numbers or dashes, starting with a letter."),
            (json!({"name": "c1"}), 400, "provisioner name is mandatory"),
            (json!({"name": "c1", "provisioner": "wasm", "pools": ["p1"], "default": true}), 400, "cannot have both pools and default set"),
            (json!({"name": "c1", "provisioner": "wasm"}), 400, "either default or a list of pools must be set"),
            (json!({"name": "c1", "provisioner": "kubernetes", "default": true}), 400, "provisioner error: unknown provisioner: \"kubernetes\""),
            (json!({"name": "c1", "provisioner": "wasm", "pools": ["nope"]}), 404, "Pool does not exist."),
            (json!({"name": "c1", "provisioner": "wasm", "default": true, "addresses": ["ftp://x"]}), 400,
             "invalid address \"ftp://x\": use unix://, tcp://, http:// or https://"),
            (json!({"name": "c1", "provisioner": "wasm", "default": true, "clientkey": "not base64!"}), 400,
             "clientkey: not base64: Invalid symbol 32, offset 3."),
        ] {
            create(body.clone()).send().await.expect_error(status, message);
        }
        t.req("GET", "/1.3/provisioner/clusters").admin().send().await.expect(204, "");

        // Keys match without regard to case, as Go's decoder does.
        let c1 = json!({
            "Name": "c1", "provisioner": "wasm", "addresses": ["unix:///run/swarm.sock", "tcp://127.0.0.1:2376"],
            "pools": ["p1"], "cacert": CERT, "clientcert": CERT, "clientkey": KEY,
            "custom_data": {"token": "s3cret-token", "password": "hunter2", "namespace": "apps"},
        });
        create(c1.clone()).send().await.expect(200, "");
        create(c1).send().await.expect_error(409, "cluster already exists");

        // Info shows the secrets to a reader; lists only to `cluster.admin`.
        let info = t.req("GET", "/1.8/provisioner/clusters/c1").admin().send().await.json();
        assert_eq!(info, json!({
            "name": "c1", "addresses": ["unix:///run/swarm.sock", "tcp://127.0.0.1:2376"], "provisioner": "wasm",
            "cacert": CERT, "clientcert": CERT, "clientkey": KEY, "pools": ["p1"],
            "custom_data": {"namespace": "apps", "password": "hunter2", "token": "s3cret-token"},
            "local": false, "default": false,
        }));
        t.req("GET", "/1.8/provisioner/clusters/c9").admin().send().await.expect_error(404, "cluster not found");
        t.role("reader", "global", &["cluster.read"]).await;
        let reader = t.user("reader@example.com").await;
        t.assign("reader", "reader@example.com", "").await;
        let listed = t.req("GET", "/1.3/provisioner/clusters").token(&reader).send().await.json();
        assert_eq!(listed[0]["clientkey"], Value::Null);
        assert_eq!(listed[0]["custom_data"], json!({"namespace": "apps"}));
        assert_eq!(listed[0]["cacert"], CERT);
        let listed = t.req("GET", "/1.3/provisioner/clusters").admin().send().await.json();
        assert_eq!(listed[0]["clientkey"], KEY);
        assert_eq!(listed[0]["custom_data"]["token"], "s3cret-token");
        // Nothing without `cluster.read`, and changes need their own permission.
        let nobody = t.user("nobody@example.com").await;
        t.req("GET", "/1.3/provisioner/clusters").token(&nobody).send().await.expect_status(403);
        t.req("GET", "/1.7/provisioner").token(&nobody).send().await.expect_status(403);
        t.req("POST", "/1.3/provisioner/clusters").token(&reader).raw(JSON, json!({"name": "c5"}).to_string()).send().await.expect_status(403);
        t.req("DELETE", "/1.3/provisioner/clusters/c1").token(&reader).send().await.expect_status(403);

        // A pool named by a new cluster leaves the other clusters of its
        // provisioner; a new default is the only one.
        create(json!({"name": "c2", "provisioner": "wasm", "pools": ["p1", "p2"]})).send().await.expect(200, "");
        create(json!({"name": "c3", "provisioner": "wasm", "default": true})).send().await.expect(200, "");
        let r = create(json!({"name": "c4", "provisioner": "wasm", "default": true}))
            .header("accept", "application/x-json-stream").send().await;
        assert_eq!((r.status.as_u16(), r.header("content-type")), (200, "application/x-json-stream"));
        let listed = t.req("GET", "/1.3/provisioner/clusters").admin().send().await.json();
        assert_eq!(names(&listed), vec![
            ("c1".into(), json!([]), false), ("c2".into(), json!(["p1", "p2"]), false),
            ("c3".into(), json!([]), false), ("c4".into(), json!([]), true),
        ]);

        // An update replaces the cluster whole; its name is the path's.
        let update = |name: &str, body: Value| t.req("POST", &format!("/1.4/provisioner/clusters/{name}")).admin().raw(JSON, body.to_string());
        update("c9", json!({"provisioner": "wasm", "default": true})).send().await.expect_error(404, "cluster not found");
        update("c1", json!({"provisioner": "wasm", "pools": ["nope"]})).send().await.expect_error(400, "Pool does not exist.");
        update("c1", json!({"provisioner": "wasm"})).send().await.expect_error(400, "either default or a list of pools must be set");
        update("c1", json!({"name": "other", "provisioner": "wasm", "pools": ["p2"], "httpProxy": "http://127.0.0.1:3128"})).send().await.expect(200, "");
        let info = t.req("GET", "/1.8/provisioner/clusters/c1").admin().send().await.json();
        assert_eq!((info["pools"].clone(), info["clientkey"].clone(), info["custom_data"].clone(), info["httpProxy"].clone()),
                   (json!(["p2"]), json!(""), json!({}), json!("http://127.0.0.1:3128")));
        assert_eq!(t.req("GET", "/1.8/provisioner/clusters/c2").admin().send().await.json()["pools"], json!(["p1"]));

        // The events keep what was asked, never the secrets.
        let events = t.req("GET", "/1.1/events?kindname=cluster.create").admin().send().await.json();
        let created: Vec<&str> = events.as_array().unwrap().iter().map(|e| e["Target"]["Value"].as_str().unwrap()).collect();
        assert_eq!(created, vec!["c4", "c3", "c2", "c1"]);
        assert!(!events.to_string().contains("s3cret-token") && !events.to_string().contains(KEY), "{events}");
        // Sealed at rest.
        let stored: Vec<String> = sqlx::query_scalar("SELECT secrets FROM clusters").fetch_all(t.server().store.connections()).await.unwrap();
        assert!(stored.iter().all(|s| s.starts_with("torii-sealed:1:") && !s.contains("s3cret")), "{stored:?}");

        t.req("DELETE", "/1.3/provisioner/clusters/c9").admin().send().await.expect_error(404, "cluster not found");
        for name in ["c1", "c2", "c3", "c4"] {
            t.req("DELETE", &format!("/1.3/provisioner/clusters/{name}")).admin().send().await.expect(200, "");
        }
        t.req("GET", "/1.3/provisioner/clusters").admin().send().await.expect(204, "");
        t.stop().await;
    }
}
