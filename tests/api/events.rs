//! Events: recorded for every state-changing request, listed and shown in
//! tsuru's shape, filtered by permission; target locks with heartbeats and
//! expiry.

use crate::support::{ADMIN, Options, TestServer, backends};
use base64::Engine as _;
use serde_json::{Value, json};
use std::time::Duration;
use torii::events::{Allowed, EventSpec, Owner, Target};
use torii::rbac::Context;

pub(crate) fn bson_data(custom: &Value) -> Value {
    let data = custom["Data"].as_str().expect("Data");
    let bytes = base64::engine::general_purpose::STANDARD.decode(data).unwrap();
    let doc = bson::Document::from_reader(&mut bytes.as_slice()).unwrap();
    let mut items = Vec::new();
    for (_, v) in doc {
        items.push(serde_json::to_value(v.into_relaxed_extjson()).unwrap());
    }
    Value::Array(items)
}

/// Custom data holding an object (a BSON document), as JSON.
pub(crate) fn bson_object(custom: &Value) -> Value {
    let data = custom["Data"].as_str().expect("Data");
    let bytes = base64::engine::general_purpose::STANDARD.decode(data).unwrap();
    let doc = bson::Document::from_reader(&mut bytes.as_slice()).unwrap();
    bson::Bson::Document(doc).into_relaxed_extjson()
}

fn spec(target: Target, kind: &str) -> EventSpec {
    EventSpec {
        allowed: Allowed::new("team.read.events", vec![Context::team(&target.value)]),
        target,
        kind: kind.into(),
        internal: false,
        owner: Owner::User(ADMIN.into()),
        source_ip: "127.0.0.1".into(),
        allowed_cancel: None,
        cancelable: false,
        start_custom: Value::Null,
        lock: true,
    }
}

backends! {
    async fn recorded_in_tsuru_shape(b) {
        let t = TestServer::start(b).await;
        t.req("POST", "/1.0/teams").admin().form(&[("name", "backend"), ("tag", "prod")]).send().await.expect_status(201);
        let list = t.req("GET", "/1.1/events?kindname=team.create").admin().send().await;
        list.expect_status(200);
        assert_eq!(list.header("content-type"), "application/json");
        let events = list.json();
        assert_eq!(events.as_array().unwrap().len(), 1);
        let e = &events[0];
        let id = e["UniqueID"].as_str().unwrap();
        assert_eq!(id.len(), 24);
        assert!(id.bytes().all(|c| c.is_ascii_hexdigit()));
        let keys: Vec<&str> = e.as_object().unwrap().keys().map(String::as_str).collect();
        let mut expected = vec!["ID", "UniqueID", "StartTime", "EndTime", "Target", "ExtraTargets", "StartCustomData",
            "EndCustomData", "OtherCustomData", "Kind", "Owner", "SourceIP", "LockUpdateTime", "Error", "Log",
            "StructuredLog", "CancelInfo", "Cancelable", "Running", "Allowed", "AllowedCancel", "Instance"];
        let mut got = keys.clone();
        got.sort();
        expected.sort();
        assert_eq!(got, expected);
        assert_eq!(e["ID"], json!({"Target": {"Type": "", "Value": ""}, "ObjId": id}));
        assert_eq!(e["Target"], json!({"Type": "team", "Value": "backend"}));
        assert_eq!(e["ExtraTargets"], Value::Null);
        assert_eq!(e["Kind"], json!({"Type": "permission", "Name": "team.create"}));
        assert_eq!(e["Owner"], json!({"Type": "user", "Name": ADMIN}));
        assert_eq!(e["SourceIP"], "127.0.0.1");
        assert_eq!(e["Error"], "");
        assert_eq!(e["Running"], false);
        assert_eq!(e["Cancelable"], false);
        assert_ne!(e["StartTime"], "0001-01-01T00:00:00Z");
        assert_ne!(e["EndTime"], "0001-01-01T00:00:00Z");
        assert_eq!(e["StartCustomData"]["Kind"], 4);
        assert_eq!(bson_data(&e["StartCustomData"]), json!([{"name": "name", "value": "backend"}, {"name": "tag", "value": "prod"}]));
        assert_eq!(e["EndCustomData"], json!({"Kind": 0, "Data": null}));
        assert_eq!(e["OtherCustomData"], json!({"Kind": 0, "Data": null}));
        assert_eq!(e["Allowed"], json!({"Scheme": "team.read.events", "Contexts": [{"CtxType": "team", "Value": "backend"}]}));
        assert_eq!(e["AllowedCancel"], json!({"Scheme": "", "Contexts": null}));
        assert_eq!(e["CancelInfo"], json!({"Owner": "", "StartTime": "0001-01-01T00:00:00Z", "AckTime": "0001-01-01T00:00:00Z",
            "Reason": "", "Asked": false, "Canceled": false}));
        assert_eq!(e["StructuredLog"], Value::Null);
        assert!(e["Instance"]["Name"].as_str().is_some());

        let one = t.req("GET", &format!("/1.1/events/{id}")).admin().send().await.json();
        assert_eq!(&one, e);
        t.req("GET", "/1.1/events/nope").admin().send().await.expect_error(400, "uuid parameter is not ObjectId: nope");
        t.req("GET", "/1.1/events/0123456789abcdef01234567").admin().send().await.expect_error(404, "event not found");
        t.req("GET", "/1.0/events").admin().send().await.expect_error(404, "404 page not found");
        t.stop().await;
    }
}

backends! {
    async fn secrets_stay_out_and_failures_are_recorded(b) {
        let t = TestServer::start(b).await;
        t.user("dev@example.com").await;
        let e = &t.req("GET", "/1.1/events?kindname=user.create").admin().send().await.json()[0];
        assert_eq!(e["Target"], json!({"Type": "user", "Value": "dev@example.com"}));
        assert_eq!(bson_data(&e["StartCustomData"]), json!([{"name": "email", "value": "dev@example.com"}]));

        t.team("ops").await;
        t.req("POST", "/1.6/tokens").admin().form(&[("token_id", "ops-bot"), ("team", "ops")]).send().await.expect_status(201);
        t.req("DELETE", "/1.0/teams/ops").admin().send().await.expect_status(403);
        let failed = t.req("GET", "/1.1/events?erroronly=true").admin().send().await.json();
        assert_eq!(failed.as_array().unwrap().len(), 1);
        assert_eq!(failed[0]["Kind"]["Name"], "team.delete");
        assert_eq!(failed[0]["Error"], "This team cannot be removed because there are still references to it:\nTeam tokens: ops-bot");
        t.stop().await;
    }
}

backends! {
    async fn filters_kinds_and_paging(b) {
        let t = TestServer::start(b).await;
        for name in ["t1", "t2", "t3"] {
            t.team(name).await;
        }
        t.req("PUT", "/1.6/teams/t2").admin().form(&[("tags", "x")]).send().await.expect_status(200);
        let names = |v: &Value| -> Vec<String> {
            v.as_array().map(|a| a.iter().map(|e| format!("{}:{}", e["Kind"]["Name"].as_str().unwrap(), e["Target"]["Value"].as_str().unwrap())).collect()).unwrap_or_default()
        };
        let all = t.req("GET", "/1.1/events").admin().send().await.json();
        assert_eq!(names(&all), vec!["team.update:t2", "team.create:t3", "team.create:t2", "team.create:t1"]);
        let asc = t.req("GET", "/1.1/events?sort=starttime&limit=2").admin().send().await.json();
        assert_eq!(names(&asc), vec!["team.create:t1", "team.create:t2"]);
        let page = t.req("GET", "/1.1/events?limit=2&skip=1").admin().send().await.json();
        assert_eq!(names(&page), vec!["team.create:t3", "team.create:t2"]);
        let t2 = t.req("GET", "/1.1/events?target.type=team&target.value=t2").admin().send().await.json();
        assert_eq!(names(&t2), vec!["team.update:t2", "team.create:t2"]);
        let by_kind = t.req("GET", "/1.1/events?kindname=team.update&kindname=team.delete").admin().send().await.json();
        assert_eq!(names(&by_kind), vec!["team.update:t2"]);
        // tsuru-client sends every key, empty ones too.
        let client = t.req("GET", "/1.1/events?target.type=&target.value=&kindname=&ownername=admin@example.com&ownertype=user&limit=&skip=&running=false").admin().send().await.json();
        assert_eq!(names(&client).len(), 4);
        t.req("GET", "/1.1/events?running=true").admin().send().await.expect(204, "");
        t.req("GET", "/1.1/events?ownername=someone@example.com").admin().send().await.expect(204, "");
        t.req("GET", "/1.1/events?since=2999-01-01").admin().send().await.expect(204, "");
        let until = t.req("GET", "/1.1/events?until=2999-01-01T00:00:00Z").admin().send().await.json();
        assert_eq!(names(&until).len(), 4);
        t.req("GET", "/1.1/events?since=yesterday").admin().send().await.expect_status(400);
        t.req("GET", "/1.1/events?limit=-1").admin().send().await.expect_status(400);

        let kinds = t.req("GET", "/1.1/events/kinds").admin().send().await;
        assert_eq!(kinds.json(), json!([{"Type": "permission", "Name": "team.create"}, {"Type": "permission", "Name": "team.update"}]));
        t.stop().await;
    }
}

backends! {
    async fn only_events_the_caller_may_see(b) {
        let t = TestServer::start(b).await;
        t.team("team-a").await;
        t.team("team-b").await;
        t.role("watcher", "team", &["team.read.events"]).await;
        let bob = t.user("bob@example.com").await;
        t.assign("watcher", "bob@example.com", "team-b").await;
        let seen = t.req("GET", "/1.1/events").token(&bob).send().await.json();
        let targets: Vec<&str> = seen.as_array().unwrap().iter().map(|e| e["Target"]["Value"].as_str().unwrap()).collect();
        // His own user.create (user context is his) and team-b, never team-a.
        assert!(targets.contains(&"team-b"), "{targets:?}");
        assert!(targets.contains(&"bob@example.com"), "{targets:?}");
        assert!(!targets.contains(&"team-a"), "{targets:?}");
        let a = t.req("GET", "/1.1/events?target.value=team-a").admin().send().await.json();
        let id = a[0]["UniqueID"].as_str().unwrap();
        t.req("GET", &format!("/1.1/events/{id}")).token(&bob).send().await
            .expect_error(403, "You don't have permission to do this action");
        t.req("GET", "/1.1/events").send().await.expect_status(401);
        t.stop().await;
    }
}

backends! {
    async fn cancel_requests(b) {
        let t = TestServer::start(b).await;
        t.team("t1").await;
        let done = t.req("GET", "/1.1/events").admin().send().await.json();
        let finished = done[0]["UniqueID"].as_str().unwrap().to_string();
        t.req("POST", &format!("/1.1/events/{finished}/cancel")).admin().form(&[("reason", "")]).send().await
            .expect_error(400, "reason is mandatory");
        t.req("POST", &format!("/1.1/events/{finished}/cancel")).admin().form(&[("reason", "stop")]).send().await
            .expect_error(400, "event is not cancelable");

        let mut s = spec(Target::new("team", "t1"), "team.update");
        s.cancelable = true;
        s.allowed_cancel = Some(Allowed::new("team.update", vec![Context::team("t1")]));
        let running = t.server().events.start(s).await.unwrap();
        let id = running.id().to_string();
        let dev = t.user("dev@example.com").await;
        t.req("POST", &format!("/1.1/events/{id}/cancel")).token(&dev).form(&[("reason", "x")]).send().await.expect_status(403);
        t.req("POST", &format!("/1.1/events/{id}/cancel")).admin().form(&[("reason", "wrong target")]).send().await.expect(204, "");
        t.req("POST", &format!("/1.1/events/{id}/cancel")).admin().form(&[("reason", "again")]).send().await
            .expect_error(500, "event cancel already requested");
        let e = t.req("GET", &format!("/1.1/events/{id}")).admin().send().await.json();
        assert_eq!(e["Running"], true);
        assert_eq!(e["ID"], json!({"Target": {"Type": "team", "Value": "t1"}, "ObjId": ""}));
        assert_eq!(e["EndTime"], "0001-01-01T00:00:00Z");
        assert_eq!(e["CancelInfo"]["Asked"], true);
        assert_eq!(e["CancelInfo"]["Reason"], "wrong target");
        assert_eq!(e["CancelInfo"]["Owner"], ADMIN);
        running.done(Ok::<(), String>(())).await.unwrap();
        t.stop().await;
    }
}

backends! {
    async fn a_locked_target_refuses_a_second_operation(b) {
        let mut o = Options::new(b);
        o.extra_toml = "[events]\nlock_expire_secs = 1\n".into();
        let t = TestServer::start_with(o).await;
        t.team("t1").await;
        let running = t.server().events.start(spec(Target::new("team", "t1"), "team.update")).await.unwrap();
        running.log("working on it");
        let r = t.req("PUT", "/1.6/teams/t1").admin().form(&[("tags", "x")]).send().await;
        r.expect_status(500);
        assert!(r.body.starts_with("event locked: team(t1) running \"team.update\" start by user admin@example.com at "), "{}", r.body);
        // A refused operation leaves no event behind and changes nothing.
        let updates = t.req("GET", "/1.1/events?kindname=team.update").admin().send().await.json();
        assert_eq!(updates.as_array().unwrap().len(), 1);
        assert_eq!(t.req("GET", "/1.4/teams/t1").admin().send().await.json()["tags"], Value::Null);
        // Another target is not affected.
        t.team("t2").await;
        // The holder is alive: its heartbeat keeps the lock past the expiry.
        tokio::time::sleep(Duration::from_millis(1600)).await;
        t.req("PUT", "/1.6/teams/t1").admin().form(&[("tags", "x")]).send().await.expect_status(500);
        running.done(Ok::<(), String>(())).await.unwrap();
        t.req("PUT", "/1.6/teams/t1").admin().form(&[("tags", "x")]).send().await.expect(200, "");
        let e = &t.req("GET", "/1.1/events?kindname=team.update&sort=starttime").admin().send().await.json()[0];
        assert_eq!(e["StructuredLog"][0]["Message"], "working on it");
        assert!(e["Log"].as_str().unwrap().ends_with(" +0000: working on it\n"), "{}", e["Log"]);
        t.stop().await;
    }
}

backends! {
    async fn a_dead_holders_lock_expires(b) {
        use torii::store::EventRecord;
        let mut o = Options::new(b);
        o.extra_toml = "[events]\nlock_expire_secs = 1\n".into();
        let t = TestServer::start_with(o).await;
        t.team("t1").await;
        // A lock taken by a process that then died: it never heartbeats.
        let now = torii::store::now_millis();
        let dead = EventRecord {
            id: "00000000000000000000dead".into(),
            target_type: "team".into(),
            target_value: "t1".into(),
            kind_type: "permission".into(),
            kind_name: "team.update".into(),
            owner_type: "user".into(),
            owner_name: ADMIN.into(),
            start_time: now,
            running: true,
            lock_update_time: now,
            log: "[]".into(),
            start_custom: "null".into(),
            end_custom: "null".into(),
            other_custom: "null".into(),
            cancel_info: "{}".into(),
            allowed: r#"{"scheme":"team.read.events","contexts":[["team","t1"]]}"#.into(),
            allowed_cancel: "null".into(),
            instance: "{}".into(),
            ..Default::default()
        };
        t.server().store.start_event(&dead, true, 0).await.unwrap();
        t.req("PUT", "/1.6/teams/t1").admin().form(&[("tags", "x")]).send().await.expect_status(500);
        tokio::time::sleep(Duration::from_millis(1300)).await;
        t.req("PUT", "/1.6/teams/t1").admin().form(&[("tags", "x")]).send().await.expect(200, "");
        let e = t.req("GET", "/1.1/events/00000000000000000000dead").admin().send().await.json();
        assert_eq!(e["Running"], false);
        assert_eq!(e["Error"], "event lock expired: the torii process running it stopped responding");
        assert_eq!(t.req("GET", "/1.4/teams/t1").admin().send().await.json()["tags"], json!(["x"]));
        t.stop().await;
    }
}

backends! {
    async fn locks_hold_across_servers_sharing_a_database(b) {
        let one = TestServer::start(b).await;
        let mut o = Options::new(b);
        o.join(&one);
        let two = TestServer::start_with(o).await;
        one.team("shared").await;
        // Held by server one, refused by server two.
        let running = one.server().events.start(spec(Target::new("team", "shared"), "team.update")).await.unwrap();
        let r = two.req("PUT", "/1.6/teams/shared").admin().form(&[("tags", "x")]).send().await;
        r.expect_status(500);
        assert!(r.body.starts_with("event locked: team(shared) running \"team.update\""), "{}", r.body);
        running.done(Ok::<(), String>(())).await.unwrap();
        two.req("PUT", "/1.6/teams/shared").admin().form(&[("tags", "x")]).send().await.expect(200, "");
        // Both see every event.
        let seen = one.req("GET", "/1.1/events?target.value=shared").admin().send().await.json();
        assert_eq!(seen.as_array().unwrap().len(), 3);
        two.stop().await;
        one.stop().await;
    }
}

backends! {
    async fn event_blocks_refuse_matching_operations(b) {
        let t = TestServer::start(b).await;
        t.team("t1").await;
        t.team("t2").await;
        let blocks = "/1.3/events/blocks";
        t.req("GET", blocks).admin().send().await.expect(204, "");
        t.req("POST", blocks).admin().form(&[("KindName", "team.update")]).send().await
            .expect_error(400, "reason is required");
        let dev = t.user("dev@example.com").await;
        t.req("POST", blocks).token(&dev).form(&[("Reason", "x")]).send().await.expect_status(403);
        t.req("GET", blocks).token(&dev).send().await.expect_status(403);

        t.req("POST", blocks).admin()
            .form(&[("KindName", "team.update"), ("Target.Type", "team"), ("Target.Value", "t1"), ("Reason", "maintenance")])
            .send().await.expect(200, "");
        let list = t.req("GET", blocks).admin().send().await.json();
        let block = &list[0];
        let id = block["ID"].as_str().unwrap().to_string();
        assert_eq!(id.len(), 24);
        assert_eq!(block["KindName"], "team.update");
        assert_eq!(block["OwnerName"], "");
        assert_eq!(block["Target"], json!({"Type": "team", "Value": "t1"}));
        assert_eq!(block["Conditions"], Value::Null);
        assert_eq!(block["Reason"], "maintenance");
        assert_eq!(block["Active"], true);
        assert_eq!(block["EndTime"], "0001-01-01T00:00:00Z");

        t.req("PUT", "/1.6/teams/t1").admin().form(&[("tags", "x")]).send().await
            .expect_error(500, "error running \"team.update\" on team(t1): block team.update by all owners on team(t1): maintenance");
        assert_eq!(t.req("GET", "/1.4/teams/t1").admin().send().await.json()["tags"], Value::Null);
        t.req("PUT", "/1.6/teams/t2").admin().form(&[("tags", "x")]).send().await.expect(200, "");
        t.team("t3").await;

        // Conditions match request fields.
        t.req("POST", blocks).admin().form(&[("KindName", "team."), ("Conditions.tags", "frozen"), ("Reason", "no freezing")])
            .send().await.expect(200, "");
        t.req("PUT", "/1.6/teams/t2").admin().form(&[("tags", "frozen")]).send().await.expect_status(500);
        t.req("PUT", "/1.6/teams/t2").admin().form(&[("tags", "thawed")]).send().await.expect(200, "");

        t.req("DELETE", &format!("{blocks}/{id}")).admin().send().await.expect(200, "");
        t.req("DELETE", &format!("{blocks}/{id}")).admin().send().await
            .expect_error(404, &format!("active event block with id {id} not found"));
        t.req("PUT", "/1.6/teams/t1").admin().form(&[("tags", "x")]).send().await.expect(200, "");
        let inactive = t.req("GET", &format!("{blocks}?active=false")).admin().send().await.json();
        assert_eq!(inactive.as_array().unwrap().len(), 1);
        assert_eq!(inactive[0]["Active"], false);
        assert_ne!(inactive[0]["EndTime"], "0001-01-01T00:00:00Z");
        let active = t.req("GET", &format!("{blocks}?active=true")).admin().send().await.json();
        assert_eq!(active[0]["Conditions"], json!({"tags": "frozen"}));
        let kinds = t.req("GET", "/1.1/events?kindname=event-block.add").admin().send().await.json();
        assert_eq!(kinds.as_array().unwrap().len(), 2);
        t.stop().await;
    }
}
