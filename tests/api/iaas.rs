//! IaaS machines and templates (API-NOTES §2.17) with the built-in
//! `inventory` driver, whose hosts are the Docker engines of
//! `.ci/docker-engines`: templates through the API, a node added through
//! the IaaS (machine made, engine waited for, node registered with its IaaS
//! id), refused when no host is free, given back when its engine never
//! answers, and destroyed with the node (`remove-iaas=true`).

use crate::docker::{ENGINES, nodes, stream_errors, unique};
use crate::support::{Backend, Options, TestServer};
use serde_json::{Value, json};

fn inventory_toml(nodes: &[String; 2], dead: &str) -> String {
    format!(
        "[[plugin]]\nname = \"inventory\"\nkind = \"iaas\"\nbuiltin = \"iaas-inventory\"\ncapabilities = [\"log\", \"kv\"]\n\
         [plugin.config]\nhosts = [\n\
         {{ id = \"a\", address = {:?}, labels = {{ zone = \"z1\" }} }},\n\
         {{ id = \"b\", address = {:?}, labels = {{ zone = \"z2\" }} }},\n\
         {{ id = \"dead\", address = {dead:?}, labels = {{ zone = \"z3\" }} }},\n]\n",
        nodes[0], nodes[1]
    )
}

fn socket_path(address: &str) -> &str {
    address.strip_prefix("unix://").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_come_from_an_inventory_iaas() {
    let Some(nodes) = nodes() else { return };
    let _beside = crate::support::TIMED.read().await;
    let _shared = ENGINES.read().await;
    let mut opts = Options::new(Backend::Sqlite);
    opts.extra_toml = inventory_toml(&nodes, "unix:///tmp/torii-no-such-engine.sock");
    let t = TestServer::start_with(opts).await;
    let pool = unique("iaas", Backend::Sqlite);
    t.req("POST", "/1.0/pools").admin().form(&[("name", pool.as_str()), ("provisioner", "docker")]).send().await.expect(201, "");

    // Templates: checked, listed, merged, removed.
    t.req("GET", "/iaas/templates").admin().send().await.expect(200, "null\n");
    let create = |name: &'static str, iaas: &'static str, zone: &'static str| {
        t.req("POST", "/iaas/templates").admin().form(&[("Name", name), ("IaaSName", iaas), ("Data.0.Name", "zone"), ("Data.0.Value", zone), ("Data.1.Name", "pool"), ("Data.1.Value", pool.as_str())])
    };
    create("z2", "inventory", "z2").send().await.expect(201, "");
    create("z2", "inventory", "z2").send().await.expect_error(409, "template name \"z2\" already used");
    create("other", "nope", "z1").send().await.expect_error(500, "IaaS provider \"nope\" based on \"nope\" not registered");
    t.req("POST", "/iaas/templates").admin().form(&[("IaaSName", "inventory")]).send().await.expect_error(400, "template name cannot be empty");
    create("z3", "inventory", "z3").send().await.expect(201, "");
    let listed = t.req("GET", "/iaas/templates").admin().send().await.json();
    assert_eq!(listed[0], json!({"Name": "z2", "IaaSName": "inventory", "Data": [{"Name": "zone", "Value": "z2"}, {"Name": "pool", "Value": pool}]}));
    t.req("PUT", "/iaas/templates/z3").admin().form(&[("Data.0.Name", "size"), ("Data.0.Value", "big")]).send().await.expect(200, "");
    t.req("PUT", "/iaas/templates/z3").admin().form(&[("Data.0.Name", "size"), ("Data.0.Value", "")]).send().await.expect(200, "");
    t.req("PUT", "/iaas/templates/nope").admin().form(&[("Data.0.Name", "a"), ("Data.0.Value", "b")]).send().await.expect_error(404, "template not found");
    let z3 = &t.req("GET", "/iaas/templates").admin().send().await.json()[1];
    assert_eq!(z3["Data"], json!([{"Name": "pool", "Value": pool}, {"Name": "zone", "Value": "z3"}]));
    // A user without machine.template.read sees none; one may not create.
    let outsider = t.user("outsider@example.com").await;
    t.req("GET", "/iaas/templates").token(&outsider).send().await.expect(200, "null\n");
    t.req("POST", "/iaas/templates").token(&outsider).form(&[("Name", "x"), ("IaaSName", "inventory")]).send().await.expect_status(403);

    // A node through the IaaS: the template's host (zone z2) is claimed,
    // its engine answers, the node is registered with the machine's id.
    t.req("GET", "/iaas/machines").admin().send().await.expect(200, "null\n");
    let r = t.req("POST", "/1.2/node").admin().form(&[("Register", "false"), ("Metadata.template", "z2")]).send().await;
    assert_eq!((r.status.as_u16(), stream_errors(&r.body)), (201, vec![]), "{}", r.body);
    let machine = json!({
        "Id": "b", "Iaas": "inventory", "Status": "running", "Address": socket_path(&nodes[1]), "Port": 0, "Protocol": "unix",
        "CreationParams": {"pool": pool, "zone": "z2"},
    });
    assert_eq!(t.req("GET", "/iaas/machines").admin().send().await.json(), json!([machine]));
    let listed = t.req("GET", "/1.2/node").admin().send().await.json();
    assert_eq!(listed["machines"], json!([machine]));
    assert_eq!(listed["nodes"], json!([{"Address": nodes[1], "IaaSID": "b", "Metadata": {"iaas": "inventory", "pool": pool, "zone": "z2"}, "Status": "ready", "Pool": pool, "Provisioner": "docker"}]));
    // No host of that zone is free now: refused, nothing recorded.
    let r = t.req("POST", "/1.2/node").admin().form(&[("Register", "false"), ("Metadata.template", "z2")]).send().await;
    assert_eq!(stream_errors(&r.body), vec!["all 1 host(s) of the inventory that match the parameters are in use"], "{}", r.body);
    // A machine a node runs on is not destroyed behind the node's back.
    t.req("DELETE", "/iaas/machines/b").admin().send().await
        .expect_error(400, &format!("machine b runs node {} of pool {pool}: remove the node first (or destroy with force=true)", nodes[1]));
    t.req("DELETE", "/iaas/machines/nope").admin().send().await.expect_error(404, "machine not found");

    // An engine that never answers: the machine is given back.
    let r = t.req("POST", "/1.2/node").admin().form(&[("Register", "false"), ("Metadata.template", "z3"), ("WaitTO", "2")]).send().await;
    let errors = stream_errors(&r.body);
    assert!(errors.len() == 1 && errors[0].starts_with("the docker engine of machine dead did not answer within 2 s"), "{}", r.body);
    assert_eq!(t.req("GET", "/iaas/machines").admin().send().await.json(), json!([machine]));

    // The node goes with its machine; the host is free again.
    let r = t.req("DELETE", &format!("/1.2/node/{}?remove-iaas=true", urlencode(&nodes[1]))).admin().send().await;
    assert!(r.body.contains("Machine b destroyed (IaaS inventory)."), "{}", r.body);
    t.req("GET", "/iaas/machines").admin().send().await.expect(200, "null\n");
    let r = t.req("POST", "/1.2/node").admin().form(&[("Register", "false"), ("Metadata.iaas", "inventory"), ("Metadata.pool", pool.as_str()), ("Metadata.zone", "z2")]).send().await;
    assert_eq!(stream_errors(&r.body), Vec::<String>::new(), "{}", r.body);
    // force destroys a machine even under a node.
    t.req("DELETE", "/iaas/machines/b?force=true").admin().send().await.expect(200, "");
    let machines: Value = t.req("GET", "/iaas/machines").admin().send().await.json();
    assert_eq!(machines, Value::Null);
    t.stop().await;
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
