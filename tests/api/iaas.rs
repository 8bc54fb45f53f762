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
    // Rights on another IaaS do not let one move a template away from this one.
    t.role("tpl-editor", "iaas", &["machine.template.update"]).await;
    t.assign("tpl-editor", "outsider@example.com", "other").await;
    t.req("PUT", "/iaas/templates/z2").token(&outsider).form(&[("IaaSName", "other")]).send().await.expect_status(403);
    t.req("GET", "/iaas/templates").token(&outsider).send().await.expect(200, "[]\n");
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
    // A registered node cannot claim a machine that is not its own (it
    // would be destroyed with the node, or copied by healing).
    let r = t.req("POST", "/1.2/node").admin()
        .form(&[("Register", "true"), ("Metadata.address", nodes[0].as_str()), ("Metadata.pool", pool.as_str()), ("Metadata.iaas-id", "b")]).send().await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.body, "iaas-id \"b\": the machine's engine is not at the node's address\n");
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

/// What moto holds for instance `id` (a DescribeInstances with a dummy
/// signature: moto routes by the credential's service and checks no
/// signatures, so this sees what torii made, not how it asked).
async fn moto_instance(moto: &str, id: &str) -> String {
    let body = format!("Action=DescribeInstances&Version=2016-11-15&InstanceId.1={id}");
    let r = reqwest::Client::new()
        .post(format!("{moto}/"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("authorization", "AWS4-HMAC-SHA256 Credential=AKIDTEST/20261204/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature=0")
        .body(body)
        .send()
        .await
        .unwrap();
    r.text().await.unwrap()
}

/// The ec2 driver against moto's EC2 (server mode, on loopback): machines
/// made from a template, listed, described and destroyed through the API,
/// SigV4-signed requests (the signature itself is checked against AWS's
/// worked example in the plugin's tests: moto checks none).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ec2_machines_through_moto() {
    if !crate::services::python_has(&["moto.server"]) {
        return;
    }
    let _beside = crate::support::TIMED.read().await;
    let moto = crate::services::Provider::start_script("iaas/ec2_server.py", &[]);
    // torii talks to moto through a front that can inject faults.
    let front = crate::services::Provider::start_script("iaas/ec2_front.py", &["--upstream", &moto.url()]);
    let mut opts = Options::new(Backend::Sqlite);
    opts.extra_toml = format!(
        "[[plugin]]\nname = \"ec2\"\nkind = \"iaas\"\nbuiltin = \"iaas-ec2\"\ncapabilities = [\"log\", \"http\"]\n\
         [plugin.config]\nendpoint = {:?}\naccess_key_id = \"AKIDTEST\"\nsecret_access_key = \"not-a-secret\"\nengine_port = 2376\n\
         [plugin.outbound]\nallow = [{:?}]\ntimeout_ms = 5000\n",
        front.url(),
        front.url()
    );
    let t = TestServer::start_with(opts).await;
    t.req("POST", "/iaas/templates").admin()
        .form(&[("Name", "small"), ("IaaSName", "ec2"), ("Data.0.Name", "image"), ("Data.0.Value", "ami-12345678"), ("Data.1.Name", "type"), ("Data.1.Value", "t3.nano"), ("Data.2.Name", "tags"), ("Data.2.Value", "team:red")])
        .send().await.expect(201, "");

    // Made from the template: a running instance, tagged as torii's.
    let r = t.req("POST", "/torii/v1/iaas/machines").admin().form(&[("template", "small")]).send().await;
    assert_eq!(r.status, 201, "{}", r.body);
    let machine = r.json();
    let id = machine["Id"].as_str().unwrap().to_string();
    assert!(id.starts_with("i-"), "{machine}");
    // Answered once EC2 ran it (pending); the host waits for its engine.
    assert_eq!((machine["Iaas"].clone(), machine["Status"].clone(), machine["Port"].clone(), machine["Protocol"].clone()), (json!("ec2"), json!("pending"), json!(2376), json!("https")));
    assert_eq!(machine["CreationParams"], json!({"image": "ami-12345678", "tags": "team:red", "type": "t3.nano"}));
    let held = moto_instance(&moto.url(), &id).await;
    assert!(held.contains("<instanceType>t3.nano</instanceType>") && held.contains("<key>torii-iaas</key>") && held.contains("<value>red</value>"), "{held}");
    assert_eq!(t.req("GET", "/iaas/machines").admin().send().await.json(), json!([machine]));
    let described = t.req("GET", &format!("/torii/v1/iaas/machines/{id}")).admin().send().await.json();
    assert_eq!((described["Status"].clone(), described["Address"].clone()), (json!("running"), machine["Address"].clone()));

    // Bad parameters: the driver says why, nothing is made.
    t.req("POST", "/torii/v1/iaas/machines").admin().form(&[("iaas", "ec2")]).send().await.expect_error(400, "parameter image (the AMI id) is required");
    t.req("POST", "/torii/v1/iaas/machines").admin().form(&[("iaas", "gce")]).send().await.expect_error(400, "IaaS provider \"gce\" based on \"gce\" not registered");
    let outsider = t.user("outsider@example.com").await;
    t.req("POST", "/torii/v1/iaas/machines").token(&outsider).form(&[("template", "small")]).send().await.expect_status(403);
    // Filtered out, as tsuru's: `[]` (not `null`, which says there is none).
    t.req("GET", "/iaas/machines").token(&outsider).send().await.expect(200, "[]\n");

    // A node from it is refused before any traffic (its engine is no
    // address torii reaches: TLS engines off loopback), and the instance is
    // given back.
    let pool = unique("ec2", Backend::Sqlite);
    t.req("POST", "/1.0/pools").admin().form(&[("name", pool.as_str()), ("provisioner", "docker")]).send().await.expect(201, "");
    let r = t.req("POST", "/1.2/node").admin().form(&[("Register", "false"), ("Metadata.template", "small"), ("Metadata.pool", pool.as_str())]).send().await;
    let errors = stream_errors(&r.body);
    assert!(errors.len() == 1 && errors[0].starts_with("Invalid address url: \"https://10."), "{}", r.body);
    assert!(r.body.contains("destroying machine i-"), "{}", r.body);
    let machines = t.req("GET", "/iaas/machines").admin().send().await.json();
    assert_eq!(machines.as_array().unwrap().len(), 1, "{machines}");

    // Destroyed: terminated at moto, gone from the list.
    t.req("DELETE", &format!("/iaas/machines/{id}")).admin().send().await.expect(200, "");
    let held = moto_instance(&moto.url(), &id).await;
    assert!(held.contains("<name>terminated</name>") || held.contains("<name>shutting-down</name>"), "{held}");
    t.req("GET", "/iaas/machines").admin().send().await.expect(200, "null\n");
    t.stop().await;
}

/// Node healing by replacement: a node from the inventory whose engine
/// stops answering is replaced by a free host of the same parameters, the
/// app's unit runs there, the old machine is given back and a healing event
/// says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_iaas_node_is_replaced() {
    let Some(nodes) = nodes() else { return };
    let _beside = crate::support::TIMED.read().await;
    // It freezes an engine: no other docker test runs meanwhile.
    let _alone = ENGINES.write().await;
    crate::docker::images(&nodes).await;
    let mut opts = Options::new(Backend::Sqlite);
    opts.extra_toml = format!(
        "[healing]\ninterval_secs = 1\nnode_max_failures = 2\n[docker]\ncall_timeout_ms = 1000\n\
         [[plugin]]\nname = \"inventory\"\nkind = \"iaas\"\nbuiltin = \"iaas-inventory\"\ncapabilities = [\"log\", \"kv\"]\n\
         [plugin.config]\nhosts = [\n{{ id = \"a\", address = {:?}, labels = {{ rack = \"r1\" }} }},\n{{ id = \"b\", address = {:?}, labels = {{ rack = \"r1\" }} }},\n]\n",
        nodes[0], nodes[1]
    );
    let t = TestServer::start_with(opts).await;
    t.team("t1").await;
    let pool = unique("heal", Backend::Sqlite);
    t.req("POST", "/1.0/pools").admin().form(&[("name", pool.as_str()), ("provisioner", "docker")]).send().await.expect(201, "");
    t.req("POST", "/1.2/healing/node").admin().form(&[("pool", pool.as_str()), ("Enabled", "true"), ("MaxTimeSinceSuccess", "1")]).send().await.expect_status(200);
    let r = t.req("POST", "/1.2/node").admin().form(&[("Register", "false"), ("Metadata.iaas", "inventory"), ("Metadata.pool", pool.as_str()), ("Metadata.rack", "r1")]).send().await;
    assert_eq!(stream_errors(&r.body), Vec::<String>::new(), "{}", r.body);
    let app = unique("healed", Backend::Sqlite);
    let host = format!("{app}.apps.test");
    t.req("POST", "/1.0/apps").admin().form(&[("name", app.as_str()), ("teamOwner", "t1"), ("pool", pool.as_str())]).send().await.expect_status(201);
    let r = t.req("POST", &format!("/1.0/apps/{app}/deploy")).admin().form(&[("image", "torii-test/httpd:1")]).send().await;
    assert!(r.body.ends_with("\nOK\n"), "{}", r.body);
    assert_eq!(t.app_get(&host, "/").await, (200, "hello from v1\n".into()));

    // Engine A stops answering: within the checks, host B replaces it.
    let pid = crate::docker::engine_pid(&nodes[0]);
    crate::docker::signal(pid, "-STOP");
    let mut replaced = false;
    for _ in 0..60 {
        let listed = t.req("GET", "/1.2/node").admin().send().await.json();
        let addresses: Vec<&str> = listed["nodes"].as_array().map(|n| n.iter().map(|n| n["Address"].as_str().unwrap()).collect()).unwrap_or_default();
        let on_b = !crate::docker::containers(&nodes[1], &format!("torii.app={app}")).is_empty();
        // Done once the old machine is given back too.
        let machines = t.req("GET", "/iaas/machines").admin().send().await.json();
        let only_b = machines.as_array().is_some_and(|m| m.len() == 1 && m[0]["Id"] == "b");
        if addresses == [nodes[1].as_str()] && on_b && only_b && t.app_get(&host, "/").await.0 == 200 {
            replaced = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    crate::docker::signal(pid, "-CONT");
    assert!(replaced, "node {} was not replaced by {}", nodes[0], nodes[1]);
    assert_eq!(t.app_get(&host, "/").await, (200, "hello from v1\n".into()));
    let machines = t.req("GET", "/iaas/machines").admin().send().await.json();
    assert_eq!(machines.as_array().unwrap().iter().map(|m| m["Id"].clone()).collect::<Vec<_>>(), vec![json!("b")]);
    let healing = t.req("GET", "/1.3/healing?filter=node").admin().send().await.json();
    assert_eq!(healing[0]["Action"], "node-healing");
    assert_eq!((healing[0]["FailingNode"]["Address"].clone(), healing[0]["CreatedNode"]["Address"].clone()), (json!(nodes[0]), json!(nodes[1])));
    assert_eq!(healing[0]["Successful"], true);
    assert!(healing[0]["Reason"].as_str().unwrap().contains("checks in a row failed"), "{}", healing[0]);

    // Host A was given back to the inventory: it can be claimed again.
    let r = t.req("POST", "/torii/v1/iaas/machines").admin().form(&[("iaas", "inventory"), ("rack", "r1")]).send().await;
    assert_eq!((r.status.as_u16(), r.json()["Id"].clone()), (201, json!("a")), "{}", r.body);
    t.req("DELETE", "/iaas/machines/a").admin().send().await.expect(200, "");

    // The unit left on engine A (it could not be told) is cleaned up here.
    for id in crate::docker::containers(&nodes[0], &format!("torii.app={app}")) {
        let _ = std::process::Command::new("docker").args(["-H", &nodes[0], "rm", "-f", &id]).output();
    }
    let r = t.req("DELETE", &format!("/1.0/apps/{app}")).admin().send().await;
    assert_eq!(r.status, 200, "{}", r.body);
    t.stop().await;
}

/// Node autoscale (count rule): a pool of IaaS nodes gets a node when its
/// units outgrow the rule's room, its units spread onto it, and loses one
/// when they shrink; rules, config, run and history through the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iaas_pools_grow_and_shrink_with_their_units() {
    let Some(nodes) = nodes() else { return };
    let _beside = crate::support::TIMED.read().await;
    let _shared = ENGINES.read().await;
    crate::docker::images(&nodes).await;
    let mut opts = Options::new(Backend::Sqlite);
    opts.extra_toml = format!(
        "[[plugin]]\nname = \"inventory\"\nkind = \"iaas\"\nbuiltin = \"iaas-inventory\"\ncapabilities = [\"log\", \"kv\"]\n\
         [plugin.config]\nhosts = [\n{{ id = \"a\", address = {:?} }},\n{{ id = \"b\", address = {:?} }},\n]\n",
        nodes[0], nodes[1]
    );
    let t = TestServer::start_with(opts).await;
    t.team("t1").await;
    let pool = unique("grow", Backend::Sqlite);
    t.req("POST", "/1.0/pools").admin().form(&[("name", pool.as_str()), ("provisioner", "docker")]).send().await.expect(201, "");
    let r = t.req("POST", "/1.2/node").admin().form(&[("Register", "false"), ("Metadata.iaas", "inventory"), ("Metadata.pool", pool.as_str())]).send().await;
    assert_eq!(stream_errors(&r.body), Vec::<String>::new(), "{}", r.body);

    // Config and rules.
    assert_eq!(
        t.req("GET", "/1.3/node/autoscale/config").admin().send().await.json(),
        json!({"WaitTimeNewMachine": 120_000_000_000u64, "RunInterval": 60_000_000_000u64, "TotalMemoryMetadata": "", "Enabled": false})
    );
    t.req("GET", "/1.3/node/autoscale/rules").admin().send().await.expect(204, "");
    t.req("POST", "/1.3/node/autoscale/rules").admin().form(&[("MetadataFilter", pool.as_str()), ("MaxContainerCount", "2"), ("ScaleDownRatio", "0.5"), ("Enabled", "true")]).send().await
        .expect_error(400, "invalid rule, scale down ratio needs to be greater than 1.0, got 0.500000");
    t.req("POST", "/1.3/node/autoscale/rules").admin().form(&[("MetadataFilter", "nopool"), ("MaxContainerCount", "2"), ("Enabled", "true")]).send().await
        .expect_error(404, "Pool does not exist.");
    t.req("POST", "/1.3/node/autoscale/rules").admin().form(&[("MetadataFilter", pool.as_str()), ("MaxContainerCount", "2"), ("Enabled", "true")]).send().await.expect(200, "");
    let rules: Value = serde_json::from_str(&t.req("GET", "/1.3/node/autoscale/rules").admin().send().await.body).unwrap();
    assert_eq!(rules, json!([{"MetadataFilter": pool, "Error": "", "MaxContainerCount": 2, "ScaleDownRatio": 1.333, "MaxMemoryRatio": 0.0, "Enabled": true, "PreventRebalance": false}]));
    let outsider = t.user("outsider@example.com").await;
    t.req("POST", "/1.3/node/autoscale/run").token(&outsider).send().await.expect_status(403);

    // Three units on one node with room for two: a second node, units spread.
    let app = unique("grower", Backend::Sqlite);
    let host = format!("{app}.apps.test");
    t.req("POST", "/1.0/apps").admin().form(&[("name", app.as_str()), ("teamOwner", "t1"), ("pool", pool.as_str())]).send().await.expect_status(201);
    let r = t.req("POST", &format!("/1.0/apps/{app}/deploy")).admin().form(&[("image", "torii-test/httpd:1")]).send().await;
    assert!(r.body.ends_with("\nOK\n"), "{}", r.body);
    t.req("PUT", &format!("/1.0/apps/{app}/units")).admin().form(&[("units", "2")]).send().await.expect_status(200);
    let r = t.req("POST", "/1.3/node/autoscale/run").admin().send().await;
    assert_eq!(stream_errors(&r.body), Vec::<String>::new(), "{}", r.body);
    let node_list = |v: Value| v["nodes"].as_array().map(|n| n.iter().map(|n| n["Address"].as_str().unwrap().to_string()).collect::<Vec<_>>()).unwrap_or_default();
    let mut listed = node_list(t.req("GET", "/1.2/node").admin().send().await.json());
    listed.sort();
    assert_eq!(listed, vec![nodes[0].clone(), nodes[1].clone()]);
    let label = format!("torii.app={app}");
    assert!(!crate::docker::containers(&nodes[1], &label).is_empty(), "no unit moved to the new node");
    assert_eq!(t.app_get(&host, "/").await, (200, "hello from v1\n".into()));
    // Enough room: a run changes nothing.
    let r = t.req("POST", "/1.3/node/autoscale/run").admin().send().await;
    assert!(!r.body.contains("node "), "{}", r.body);

    // One unit on two nodes: one node goes (its units first), its machine too.
    t.req("DELETE", &format!("/1.0/apps/{app}/units?units=2")).admin().send().await.expect_status(200);
    let r = t.req("POST", "/1.3/node/autoscale/run").admin().send().await;
    assert_eq!(stream_errors(&r.body), Vec::<String>::new(), "{}", r.body);
    assert_eq!(node_list(t.req("GET", "/1.2/node").admin().send().await.json()).len(), 1);
    assert_eq!(t.req("GET", "/iaas/machines").admin().send().await.json().as_array().unwrap().len(), 1);
    assert_eq!(t.app_get(&host, "/").await, (200, "hello from v1\n".into()));

    let history = t.req("GET", "/1.3/node/autoscale").admin().send().await.json();
    let actions: Vec<(String, bool, String)> = history.as_array().unwrap().iter()
        .map(|e| (e["Action"].as_str().unwrap().to_string(), e["Successful"].as_bool().unwrap(), e["Reason"].as_str().unwrap().to_string())).collect();
    assert_eq!(actions, vec![("remove".to_string(), true, "number of free slots is 3".to_string()), ("add".to_string(), true, "number of free slots is -1".to_string())]);
    assert_eq!(t.req("GET", "/docker/autoscale").admin().send().await.json(), history);

    t.req("DELETE", &format!("/1.3/node/autoscale/rules/{pool}")).admin().send().await.expect(200, "");
    t.req("DELETE", &format!("/1.3/node/autoscale/rules/{pool}")).admin().send().await.expect_error(404, "rule not found");
    let r = t.req("DELETE", &format!("/1.0/apps/{app}")).admin().send().await;
    assert_eq!(r.status, 200, "{}", r.body);
    t.stop().await;
}
