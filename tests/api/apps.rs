//! Apps: create, info, list, remove, team access, quotas, app tokens.

use crate::support::{ADMIN, TestServer, backends};
use serde_json::{Value, json};

const INVALID: &str = "Invalid app name, your app should have at most 40 characters, containing only lower case letters, numbers or dashes, starting with a letter.";

/// A server with team `t1`, a public default pool `main` and a user `dev` who
/// may create and manage apps of `t1`.
async fn setup(b: crate::support::Backend) -> (TestServer, String) {
    let t = TestServer::start(b).await;
    t.team("t1").await;
    t.req("POST", "/1.0/pools").admin().form(&[("name", "main"), ("default", "true")]).send().await.expect(201, "");
    t.role("developer", "team", &["app"]).await;
    let dev = t.user("dev@example.com").await;
    t.assign("developer", "dev@example.com", "t1").await;
    (t, dev)
}

backends! {
    async fn create_validates_and_answers_like_tsuru(b) {
        let (t, dev) = setup(b).await;
        let create = |pairs: &[(&'static str, &'static str)]| {
            let req = t.req("POST", "/1.0/apps").token(&dev).form(pairs);
            async move { req.send().await }
        };
        create(&[("name", "My_App")]).await.expect_error(400, INVALID);
        create(&[("name", "tsr")]).await.expect_error(400, INVALID);
        create(&[("name", "myapp"), ("platform", "python")]).await.expect_error(500, "Invalid platform");
        create(&[("name", "myapp"), ("plan", "nope")]).await.expect_error(400, "plan not found");
        create(&[("name", "myapp"), ("router", "ingress")]).await.expect_error(400, "router \"ingress\" not found");
        create(&[("name", "myapp"), ("pool", "ghost")]).await.expect_error(400, "Pool does not exist.");
        let outsider = t.user("out@example.com").await;
        t.req("POST", "/1.0/apps").token(&outsider).form(&[("name", "x")]).send().await
            .expect_error(400, "In order to create an app, you should be member of at least one team");
        t.req("GET", "/1.0/apps").token(&dev).send().await.expect(204, "");

        // `tags` first, then the legacy repeated `tag`, trimmed and de-duplicated.
        let r = create(&[("name", "myapp"), ("description", "my app"), ("tag", "a"), ("tag", " a "), ("tags.0", "b")]).await;
        r.expect(201, "{\"status\":\"success\",\"ip\":\"myapp.apps.test\"}\n");
        assert_eq!(r.header("content-type"), "application/json");
        create(&[("name", "myapp")]).await
            .expect_error(409, "tsuru failed to create the app \"myapp\": there is already an app with this name");

        let info = t.req("GET", "/1.0/apps/myapp").token(&dev).send().await;
        info.expect_status(200);
        let v = info.json();
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted, "app info keys are sorted as tsuru's map");
        assert_eq!(v, json!({
            "cname": null, "deploys": 0, "description": "my app", "ip": "myapp.apps.test",
            "lock": {"Locked": false, "Reason": "", "Owner": "", "AcquireDate": "0001-01-01T00:00:00Z"},
            "metadata": {"labels": null, "annotations": null},
            "name": "myapp", "owner": "dev@example.com",
            "plan": {"name": "c0.1m0.2", "memory": 268435456, "cpushare": 0, "cpumilli": 100, "override": {"memory": null, "cpumilli": null}, "router": "embedded"},
            "platform": "", "pool": "main", "provisioner": "wasm", "quota": {"limit": -1, "inuse": 0},
            "router": "embedded", "routeropts": {},
            "routers": [{"name": "embedded", "opts": {}, "address": "myapp.apps.test", "addresses": ["myapp.apps.test"], "type": "embedded", "status": "ready"}],
            "serviceInstanceBinds": [], "tags": ["b", "a"], "teamowner": "t1", "teams": ["t1"], "units": [], "volumeBinds": null
        }));
        t.req("GET", "/1.0/apps/ghost").token(&dev).send().await.expect_error(404, "App ghost not found.");
        // 404 comes before the permission check.
        t.req("GET", "/1.0/apps/ghost").token(&outsider).send().await.expect_error(404, "App ghost not found.");
        t.req("GET", "/1.0/apps/myapp").token(&outsider).send().await
            .expect_error(403, "You don't have permission to do this action");
        t.req("DELETE", "/1.0/apps/myapp/lock").token(&dev).send().await
            .expect_error(410, "app unlock is deprecated, this call does nothing");

        let events = t.req("GET", "/1.1/events?kindname=app.create").token(&dev).send().await.json();
        assert_eq!(events[0]["Target"], json!({"Type": "app", "Value": "myapp"}));
        assert_eq!(events[0]["Allowed"]["Contexts"], json!([
            {"CtxType": "team", "Value": "t1"}, {"CtxType": "app", "Value": "myapp"}, {"CtxType": "pool", "Value": "main"}
        ]));
        t.stop().await;
    }
}

backends! {
    async fn pool_team_and_plan_rules(b) {
        let (t, dev) = setup(b).await;
        t.team("t2").await;
        t.assign("developer", "dev@example.com", "t2").await;
        // Several teams: one must be chosen.
        t.req("POST", "/1.0/apps").token(&dev).form(&[("name", "a1")]).send().await
            .expect_error(400, "You must provide a team to execute this action.");
        // A pool naming t2 is chosen over the default for t2's apps.
        t.req("POST", "/1.0/pools").admin().form(&[("name", "t2pool")]).send().await.expect(201, "");
        t.req("POST", "/1.0/pools/t2pool/team").admin().form(&[("team", "t2")]).send().await.expect(200, "");
        t.req("POST", "/1.0/apps").token(&dev).form(&[("name", "a2"), ("teamOwner", "t2")]).send().await.expect_status(201);
        assert_eq!(t.req("GET", "/1.0/apps/a2").token(&dev).send().await.json()["pool"], "t2pool");
        t.req("POST", "/1.0/apps").token(&dev).form(&[("name", "a3"), ("teamOwner", "t1"), ("pool", "t2pool")]).send().await
            .expect_error(400, "App team owner \"t1\" has no access to pool \"t2pool\"");
        t.req("PUT", "/1.3/constraints").admin().json(json!({"PoolExpr": "t2pool", "Field": "plan", "Values": ["c1m*"]})).send().await.expect(200, "");
        t.req("POST", "/1.0/apps").token(&dev).form(&[("name", "a3"), ("teamOwner", "t2"), ("plan", "c2m2")]).send().await
            .expect_error(400, "App plan \"c2m2\" is not allowed on pool \"t2pool\"");
        // Without a plan, the default plan is not allowed there: the first allowed one is used.
        t.req("POST", "/1.0/apps").token(&dev).json(json!({"name": "a3", "teamOwner": "t2", "planOverride": {"memory": 536870912}})).send().await.expect_status(201);
        let a3 = t.req("GET", "/1.0/apps/a3").token(&dev).send().await.json();
        assert_eq!(a3["plan"]["name"], "c1m1");
        assert_eq!(a3["plan"]["override"], json!({"memory": 536870912, "cpumilli": null}));
        // Pools and teams with apps cannot be removed.
        t.req("DELETE", "/pools/t2pool").admin().send().await
            .expect_error(403, "This pool has apps, you need to migrate or remove them before removing the pool");
        t.req("DELETE", "/1.0/teams/t2").admin().send().await
            .expect_error(403, "This team cannot be removed because there are still references to it:\nApps: a2, a3");
        t.stop().await;
    }
}

backends! {
    async fn list_visibility_and_filters(b) {
        let (t, dev) = setup(b).await;
        t.team("t2").await;
        for (name, team, tags) in [("alpha", "t1", "x"), ("beta", "t1", "y"), ("gamma", "t2", "x")] {
            t.req("POST", "/1.0/apps").admin().form(&[("name", name), ("teamOwner", team), ("tag", tags), ("description", "d")])
                .send().await.expect_status(201);
        }
        let names = |v: Value| -> Vec<String> {
            v.as_array().map(|a| a.iter().map(|x| x["name"].as_str().unwrap().to_string()).collect()).unwrap_or_default()
        };
        assert_eq!(names(t.req("GET", "/1.0/apps").token(&dev).send().await.json()), vec!["alpha", "beta"]);
        assert_eq!(names(t.req("GET", "/1.0/apps").admin().send().await.json()), vec!["alpha", "beta", "gamma"]);
        assert_eq!(names(t.req("GET", "/1.0/apps?name=^b").admin().send().await.json()), vec!["beta"]);
        assert_eq!(names(t.req("GET", "/1.0/apps?teamOwner=t2").admin().send().await.json()), vec!["gamma"]);
        assert_eq!(names(t.req("GET", "/1.0/apps?tag=x").admin().send().await.json()), vec!["alpha", "gamma"]);
        assert_eq!(names(t.req("GET", &format!("/1.0/apps?owner={ADMIN}&pool=main&locked=false")).admin().send().await.json()).len(), 3);
        t.req("GET", "/1.0/apps?name=(").admin().send().await.expect_status(400);
        t.req("GET", "/1.0/apps?status=started").admin().send().await.expect(204, "");
        let outsider = t.user("out@example.com").await;
        t.req("GET", "/1.0/apps").token(&outsider).send().await.expect(204, "");

        let list = t.req("GET", "/1.0/apps?name=alpha").admin().send().await.json();
        assert_eq!(list[0], json!({
            "name": "alpha", "pool": "main", "teamowner": "t1",
            "plan": {"name": "c0.1m0.2", "memory": 268435456, "cpushare": 0, "cpumilli": 100, "default": true, "override": {"memory": null, "cpumilli": null}},
            "units": [], "cname": null, "ip": "alpha.apps.test",
            "routers": [{"name": "embedded", "opts": {}, "address": "alpha.apps.test", "addresses": null, "type": ""}],
            "lock": {"Locked": false, "Reason": "", "Owner": "", "AcquireDate": "0001-01-01T00:00:00Z"},
            "tags": ["x"], "metadata": {"labels": null, "annotations": null}
        }));
        let ext = t.req("GET", "/1.0/apps?name=alpha&extended=true").admin().send().await.json();
        assert_eq!(ext[0]["description"], "d");
        t.stop().await;
    }
}

backends! {
    async fn team_access_and_quotas(b) {
        let (t, dev) = setup(b).await;
        t.team("t2").await;
        let other = t.user("other@example.com").await;
        t.assign("developer", "other@example.com", "t2").await;
        t.req("POST", "/1.0/apps").token(&dev).form(&[("name", "shared")]).send().await.expect_status(201);
        t.req("GET", "/1.0/apps/shared").token(&other).send().await.expect_status(403);
        t.req("PUT", "/1.0/apps/shared/teams/ghost").token(&dev).send().await.expect_error(404, "Team not found");
        t.req("PUT", "/1.0/apps/shared/teams/t1").token(&dev).send().await.expect_error(409, "team already have access to this app");
        t.req("PUT", "/1.0/apps/shared/teams/t2").token(&other).send().await.expect_status(403);
        t.req("PUT", "/1.0/apps/shared/teams/t2").token(&dev).send().await.expect(200, "");
        assert_eq!(t.req("GET", "/1.0/apps/shared").token(&other).send().await.json()["teams"], json!(["t1", "t2"]));
        t.req("DELETE", "/1.0/apps/shared/teams/t1").token(&dev).send().await.expect(200, "");
        t.req("DELETE", "/1.0/apps/shared/teams/t1").token(&other).send().await.expect_error(404, "team does not have access to this app");
        t.req("DELETE", "/1.0/apps/shared/teams/t2").token(&other).send().await.expect_error(403,
            "You can not revoke the access from this team, because it is the unique team with access to the app, and an app can not be orphaned");
        // dev lost access with t1's revocation.
        t.req("GET", "/1.0/apps/shared").token(&dev).send().await.expect_status(403);

        t.req("GET", "/1.0/apps/shared/quota").token(&other).send().await.expect(200, "{\"limit\":-1,\"inuse\":0}\n");
        let reader = t.user("reader@example.com").await;
        t.role("app-reader", "team", &["app.read"]).await;
        t.assign("app-reader", "reader@example.com", "t2").await;
        t.req("GET", "/1.0/apps/shared/quota").token(&reader).send().await.expect_status(200);
        t.req("PUT", "/1.0/apps/shared/quota").token(&reader).form(&[("limit", "4")]).send().await.expect_status(403);
        t.req("PUT", "/1.0/apps/shared/quota").admin().form(&[("limit", "4")]).send().await.expect(200, "");
        t.req("GET", "/1.0/apps/shared/quota").token(&other).send().await.expect(200, "{\"limit\":4,\"inuse\":0}\n");

        // User and team quotas count apps and refuse beyond the limit.
        t.req("GET", "/1.0/users/dev@example.com/quota").token(&dev).send().await.expect(200, "{\"limit\":-1,\"inuse\":1}\n");
        t.req("PUT", "/1.0/users/dev@example.com/quota").admin().form(&[("limit", "0")]).send().await
            .expect_error(403, "New limit is less than the current allocated value");
        t.req("PUT", "/1.0/users/dev@example.com/quota").admin().form(&[("limit", "1")]).send().await.expect(200, "");
        t.req("POST", "/1.0/apps").token(&dev).form(&[("name", "second")]).send().await.expect_error(403, "Quota exceeded");
        t.req("PUT", "/1.0/users/dev@example.com/quota").admin().form(&[("limit", "-1")]).send().await.expect(200, "");
        t.req("PUT", "/1.12/teams/t1/quota").admin().form(&[("limit", "1")]).send().await.expect(200, "");
        t.req("GET", "/1.12/teams/t1/quota").admin().send().await.expect(200, "{\"limit\":1,\"inuse\":1}\n");
        t.req("POST", "/1.0/apps").token(&dev).form(&[("name", "second")]).send().await.expect_error(403, "Quota exceeded");
        t.stop().await;
    }
}

backends! {
    async fn app_token_reaches_only_its_app(b) {
        let (t, dev) = setup(b).await;
        for name in ["one", "two"] {
            t.req("POST", "/1.0/apps").token(&dev).form(&[("name", name)]).send().await.expect_status(201);
        }
        let env = t.server().store.app_env("one").await.unwrap();
        let get = |n: &str| env.iter().find(|e| e.name == n).unwrap().clone();
        assert_eq!((get("TSURU_APPNAME").value.as_str(), get("TSURU_APPNAME").public), ("one", false));
        assert_eq!(get("TSURU_APPDIR").value, "/home/application/current");
        let token = get("TSURU_APP_TOKEN").value;
        assert_eq!(token.len(), 40);
        t.req("GET", "/1.0/apps/two").token(&token).send().await
            .expect_error(403, "app token mismatch, token for \"one\", request for \"two\"");
        // Its own app, but app tokens hold only unit, log and deploy-read permissions.
        t.req("GET", "/1.0/apps/one").token(&token).send().await.expect_error(403, "You don't have permission to do this action");
        t.req("GET", "/1.0/apps").token(&token).send().await.expect(204, "");
        t.stop().await;
    }
}

backends! {
    async fn remove_streams_progress(b) {
        let (t, dev) = setup(b).await;
        t.req("POST", "/1.0/apps").token(&dev).form(&[("name", "doomed")]).send().await.expect_status(201);
        let token = t.server().store.app_env("doomed").await.unwrap().into_iter().find(|e| e.name == "TSURU_APP_TOKEN").unwrap().value;
        let outsider = t.user("out@example.com").await;
        t.req("DELETE", "/1.0/apps/doomed").token(&outsider).send().await.expect_status(403);
        let r = t.req("DELETE", "/1.0/apps/doomed").token(&dev).send().await;
        r.expect_status(200);
        assert_eq!(r.header("content-type"), "application/x-json-stream");
        let lines: Vec<Value> = r.body.lines().filter(|l| !l.is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect();
        let messages: Vec<&str> = lines.iter().map(|l| l["Message"].as_str().unwrap()).collect();
        assert_eq!(messages, vec!["---- Removing application \"doomed\"...\n", "---- Done removing application.\n"]);
        assert!(lines.iter().all(|l| l.get("Error").is_none()));
        t.req("GET", "/1.0/apps/doomed").token(&dev).send().await.expect_error(404, "App doomed not found.");
        // Its token died with it; its events stay.
        t.req("GET", "/1.0/users/info").token(&token).send().await.expect_status(401);
        let events = t.req("GET", "/1.1/events?target.value=doomed").admin().send().await.json();
        let kinds: Vec<&str> = events.as_array().unwrap().iter().map(|e| e["Kind"]["Name"].as_str().unwrap()).collect();
        assert_eq!(kinds, vec!["app.delete", "app.create"]);
        // The name is free again.
        t.req("POST", "/1.0/apps").token(&dev).form(&[("name", "doomed")]).send().await.expect_status(201);
        t.stop().await;
    }
}

backends! {
    async fn update_checks_each_field(b) {
        let (t, dev) = setup(b).await;
        t.req("POST", "/1.0/apps").token(&dev).form(&[("name", "web")]).send().await.expect_status(201);
        let update = |token: String, body: Value| {
            let req = t.req("PUT", "/1.0/apps/web").token(&token).json(body);
            async move { req.send().await }
        };
        update(dev.clone(), json!({})).await.expect_error(400,
            "Neither the description, tags, plan, pool, team owner or platform were set. You must define at least one.");
        update(dev.clone(), json!({"router": "x"})).await.expect_error(400,
            "updating router was deprecated, please add the wanted router and remove the old one");
        update(dev.clone(), json!({"plan": "nope"})).await.expect_error(400, "plan not found");
        update(dev.clone(), json!({"platform": "python"})).await.expect_error(500, "Invalid platform");
        t.req("POST", "/1.0/pools").admin().form(&[("name", "other")]).send().await.expect(201, "");
        t.req("PUT", "/1.0/apps/web?noRestart=true").token(&dev).json(json!({"pool": "other"})).send().await
            .expect_error(400, "You must restart the app when changing the pool.");

        let r = update(dev.clone(), json!({"description": "new words", "tags": ["x", "y"], "plan": "c1m1",
            "planOverride": {"cpumilli": 250}, "metadata": {"labels": [{"name": "tier", "value": "web"}]}})).await;
        r.expect_status(200);
        assert_eq!(r.header("content-type"), "application/x-json-stream");
        assert!(!r.body.contains("\"Error\""), "{}", r.body);
        let info = t.req("GET", "/1.0/apps/web").token(&dev).send().await.json();
        assert_eq!(info["description"], "new words");
        assert_eq!(info["tags"], json!(["x", "y"]));
        assert_eq!(info["plan"]["name"], "c1m1");
        assert_eq!(info["plan"]["override"], json!({"memory": null, "cpumilli": 250}));
        assert_eq!(info["metadata"], json!({"labels": [{"name": "tier", "value": "web"}], "annotations": null}));
        update(dev.clone(), json!({"metadata": {"labels": [{"name": "tier", "delete": true}]}})).await.expect_status(200);
        assert_eq!(t.req("GET", "/1.0/apps/web").token(&dev).send().await.json()["metadata"]["labels"], Value::Null);
        update(dev.clone(), json!({"metadata": {"labels": [{"name": "tsuru.io/x", "value": "y"}]}})).await.expect_status(400);

        // Each field needs its own permission.
        t.role("describer", "team", &["app.update.description", "app.read"]).await;
        let writer = t.user("writer@example.com").await;
        t.assign("describer", "writer@example.com", "t1").await;
        update(writer.clone(), json!({"description": "mine"})).await.expect_status(200);
        update(writer.clone(), json!({"description": "mine", "tags": ["z"]})).await.expect_error(403, "You don't have permission to do this action");
        assert_eq!(t.req("GET", "/1.0/apps/web").token(&dev).send().await.json()["tags"], json!(["x", "y"]));

        // A new team owner gets access.
        t.team("t2").await;
        update(dev.clone(), json!({"teamOwner": "t2"})).await.expect_status(200);
        let info = t.req("GET", "/1.0/apps/web").token(&dev).send().await.json();
        assert_eq!((info["teamowner"].clone(), info["teams"].clone()), (json!("t2"), json!(["t1", "t2"])));
        update(dev.clone(), json!({"pool": "other"})).await.expect_status(200);
        assert_eq!(t.req("GET", "/1.0/apps/web").token(&dev).send().await.json()["pool"], "other");
        // The owner team's access, once revoked, stays so: later changes to
        // the app do not grant it again (tsuru's rule).
        t.req("DELETE", "/1.0/apps/web/teams/t2").admin().send().await.expect(200, "");
        update(dev.clone(), json!({"description": "after the revoke"})).await.expect_status(200);
        let info = t.req("GET", "/1.0/apps/web").admin().send().await.json();
        assert_eq!((info["teamowner"].clone(), info["teams"].clone()), (json!("t2"), json!(["t1"])));
        let kinds = t.req("GET", "/1.1/events?kindname=app.update").admin().send().await.json();
        assert_eq!(kinds.as_array().unwrap().len(), 6);
        t.stop().await;
    }
}

backends! {
    async fn deploy_history_comes_from_deploy_events(b) {
        use torii::events::{Allowed, EventSpec, Owner, Target};
        use torii::rbac::{Context, ContextType};
        let (t, dev) = setup(b).await;
        t.req("POST", "/1.0/apps").token(&dev).form(&[("name", "web")]).send().await.expect_status(201);
        t.req("GET", "/1.0/deploys").token(&dev).send().await.expect(204, "");
        t.req("GET", "/1.0/deploys/nope").token(&dev).send().await.expect_status(500);
        t.req("GET", "/1.0/deploys/0123456789abcdef01234567").token(&dev).send().await.expect_error(404, "Deploy not found.");

        // A deploy as the deploy pipeline records it.
        let contexts = vec![Context::team("t1"), Context::new(ContextType::App, "web"), Context::new(ContextType::Pool, "main")];
        let running = t.server().events.start(EventSpec {
            target: Target::new("app", "web"),
            kind: "app.deploy".into(),
            internal: false,
            owner: Owner::User("dev@example.com".into()),
            source_ip: "127.0.0.1".into(),
            allowed: Allowed::new("app.read.events", contexts),
            allowed_cancel: None,
            cancelable: true,
            start_custom: json!({"image": "torii/app-web:v3", "origin": "app-deploy", "commit": "abc123", "message": "first"}),
            lock: true,
        }).await.unwrap();
        running.log("building\n");
        let id = running.id().to_string();
        running.done(Ok::<(), String>(())).await.unwrap();

        let list = t.req("GET", "/1.0/deploys?app=web").token(&dev).send().await.json();
        let d = &list[0];
        assert_eq!((d["ID"].as_str(), d["App"].as_str(), d["Version"].as_i64()), (Some(id.as_str()), Some("web"), Some(3)));
        assert_eq!((d["Origin"].as_str(), d["Commit"].as_str(), d["User"].as_str()), (Some("app-deploy"), Some("abc123"), Some("dev@example.com")));
        assert_eq!((d["CanRollback"].as_bool(), d["Log"].as_str(), d["Message"].as_str()), (Some(true), Some(""), Some("first")));
        assert!(d["Duration"].as_i64().unwrap() >= 0);
        let one = t.req("GET", &format!("/1.0/deploys/{id}")).token(&dev).send().await.json();
        assert_eq!(one["CanRollback"], false);
        assert!(one["Log"].as_str().unwrap().ends_with(": building\n"), "{}", one["Log"]);
        let outsider = t.user("out@example.com").await;
        t.req("GET", "/1.0/deploys").token(&outsider).send().await.expect(204, "");
        t.req("GET", &format!("/1.0/deploys/{id}")).token(&outsider).send().await.expect_error(404, "Deploy not found.");
        t.stop().await;
    }
}

backends! {
    async fn cnames_metric_envs_and_swap(b) {
        let (t, dev) = setup(b).await;
        for name in ["blue", "green"] {
            t.req("POST", "/1.0/apps").token(&dev).form(&[("name", name)]).send().await.expect_status(201);
        }
        t.req("POST", "/1.0/apps/blue/cname").token(&dev).form(&[]).send().await.expect_error(400, "You must provide the cname.");
        t.req("POST", "/1.0/apps/blue/cname").token(&dev).form(&[("cname", "-bad")]).send().await.expect_error(400, "Invalid cname");
        t.req("POST", "/1.0/apps/blue/cname").token(&dev).form(&[("cname", "www.example.com"), ("cname", "*.example.org")]).send().await.expect(200, "");
        t.req("POST", "/1.0/apps/green/cname").token(&dev).form(&[("cname", "www.example.com")]).send().await
            .expect_error(500, "cname www.example.com already exists for app blue");
        t.req("POST", "/1.0/apps/green/cname").token(&dev).form(&[("cname", "green.example.com")]).send().await.expect(200, "");
        assert_eq!(t.req("GET", "/1.0/apps/blue").token(&dev).send().await.json()["cname"], json!(["*.example.org", "www.example.com"]));
        let list = t.req("GET", "/1.0/apps?name=^green$").token(&dev).send().await.json();
        assert_eq!(list[0]["cname"], json!(["green.example.com"]));
        t.req("DELETE", "/1.0/apps/blue/cname?cname=nope.example.com").token(&dev).send().await.expect_status(400);
        t.req("DELETE", "/1.0/apps/blue/cname?cname=*.example.org").token(&dev).send().await.expect(200, "");
        t.req("GET", "/1.0/apps/blue/metric/envs").token(&dev).send().await.expect(200, "{}\n");
        // The METRICS_* variables of the metrics agent (node container
        // big-sibling) as it applies to the app's pool.
        let base = [("Name", "big-sibling"), ("Config.Image", "agent:1"), ("Config.Env.0", "METRICS_BACKEND=prometheus"), ("Config.Env.1", "METRICS_ADDR=a:1"), ("Config.Env.2", "OTHER=x")];
        t.req("POST", "/1.2/nodecontainers").admin().form(&base).send().await.expect(200, "");
        t.req("POST", "/1.2/nodecontainers/big-sibling").admin().form(&[("pool", "main"), ("Config.Env.0", "METRICS_ADDR=b:2")]).send().await.expect(200, "");
        let envs = t.req("GET", "/1.0/apps/blue/metric/envs").token(&dev).send().await.json();
        assert_eq!(envs, json!({"METRICS_BACKEND": "prometheus", "METRICS_ADDR": "b:2"}));
        let outsider = t.user("outsider@example.com").await;
        t.req("GET", "/1.0/apps/blue/metric/envs").token(&outsider).send().await.expect_status(403);

        // Swap: by CNAMEs only; apps must match unless forced.
        t.req("POST", "/1.0/swap").token(&dev).form(&[("app1", "blue"), ("app2", "green")]).send().await
            .expect_error(500, "swapping using router api v2 will work only with cnameOnly");
        t.req("POST", "/1.0/swap").token(&dev).form(&[("app1", "blue"), ("app2", "blue"), ("cnameOnly", "true")]).send().await.expect_status(400);
        t.req("POST", "/1.0/swap").token(&dev).form(&[("app1", "blue"), ("app2", "ghost"), ("cnameOnly", "true")]).send().await
            .expect_error(404, "App ghost not found.");
        let outsider = t.user("out@example.com").await;
        t.req("POST", "/1.0/swap").token(&outsider).form(&[("app1", "blue"), ("app2", "green"), ("cnameOnly", "true")]).send().await.expect_status(403);
        t.req("POST", "/1.0/swap").token(&dev).form(&[("app1", "blue"), ("app2", "green"), ("cnameOnly", "true")]).send().await.expect(200, "");
        assert_eq!(t.req("GET", "/1.0/apps/blue").token(&dev).send().await.json()["cname"], json!(["green.example.com"]));
        assert_eq!(t.req("GET", "/1.0/apps/green").token(&dev).send().await.json()["cname"], json!(["www.example.com"]));
        // A removed app frees its CNAMEs.
        t.req("DELETE", "/1.0/apps/green").token(&dev).send().await.expect_status(200);
        t.req("POST", "/1.0/apps/blue/cname").token(&dev).form(&[("cname", "www.example.com")]).send().await.expect(200, "");
        t.stop().await;
    }
}

backends! {
    async fn permissions_in_pool_and_app_contexts(b) {
        let (t, dev) = setup(b).await;
        t.req("POST", "/1.0/pools").admin().form(&[("name", "edge"), ("public", "true")]).send().await.expect(201, "");
        t.req("POST", "/1.0/apps").token(&dev).form(&[("name", "in-main")]).send().await.expect_status(201);
        t.req("POST", "/1.0/apps").token(&dev).form(&[("name", "in-edge"), ("pool", "edge")]).send().await.expect_status(201);
        // An operator of the edge pool reads every app there, and nothing else.
        t.role("pool-reader", "pool", &["app.read"]).await;
        let ops = t.user("ops@example.com").await;
        t.assign("pool-reader", "ops@example.com", "edge").await;
        t.req("GET", "/1.0/apps/in-edge").token(&ops).send().await.expect_status(200);
        t.req("GET", "/1.0/apps/in-main").token(&ops).send().await.expect_status(403);
        let names: Vec<String> = t.req("GET", "/1.0/apps").token(&ops).send().await.json().as_array().unwrap()
            .iter().map(|a| a["name"].as_str().unwrap().to_string()).collect();
        assert_eq!(names, vec!["in-edge"]);
        t.req("DELETE", "/1.0/apps/in-edge").token(&ops).send().await.expect_status(403);
        // A grant on one app reaches that app only.
        t.role("app-admin", "app", &["app"]).await;
        let owner = t.user("owner@example.com").await;
        t.assign("app-admin", "owner@example.com", "in-main").await;
        t.req("PUT", "/1.0/apps/in-main").token(&owner).json(json!({"description": "mine"})).send().await.expect_status(200);
        t.req("PUT", "/1.0/apps/in-edge").token(&owner).json(json!({"description": "mine"})).send().await.expect_status(403);
        t.stop().await;
    }
}

backends! {
    async fn list_and_info_show_a_running_operations_lock(b) {
        use torii::events::{Allowed, EventSpec, Owner, Target};
        let (t, dev) = setup(b).await;
        for name in ["busy", "idle"] {
            t.req("POST", "/1.0/apps").token(&dev).form(&[("name", name)]).send().await.expect_status(201);
        }
        let running = t.server().events.start(EventSpec {
            target: Target::new("app", "busy"),
            kind: "app.deploy".into(),
            internal: false,
            owner: Owner::User("dev@example.com".into()),
            source_ip: String::new(),
            allowed: Allowed::new("app.read.events", vec![]),
            allowed_cancel: None,
            cancelable: false,
            start_custom: Value::Null,
            lock: true,
        }).await.unwrap();
        let locked = t.req("GET", "/1.0/apps?locked=true").token(&dev).send().await.json();
        assert_eq!(locked.as_array().unwrap().len(), 1);
        assert_eq!(locked[0]["name"], "busy");
        let lock = &locked[0]["lock"];
        assert_eq!((lock["Locked"].clone(), lock["Reason"].clone(), lock["Owner"].clone()), (json!(true), json!("app.deploy"), json!("dev@example.com")));
        assert_ne!(lock["AcquireDate"], "0001-01-01T00:00:00Z");
        assert_eq!(t.req("GET", "/1.0/apps/busy").token(&dev).send().await.json()["lock"], lock.clone());
        // As tsuru: only `locked=true` filters; false or garbage lists all.
        for query in ["locked=false", "locked=maybe"] {
            let all = t.req("GET", &format!("/1.0/apps?{query}")).token(&dev).send().await.json();
            assert_eq!(all.as_array().unwrap().len(), 2, "{query}");
        }
        running.done(Ok::<(), String>(())).await.unwrap();
        t.req("GET", "/1.0/apps?locked=true").token(&dev).send().await.expect(204, "");
        t.stop().await;
    }
}

/// Polls `GET path` on `t` until `check` holds, for at most five seconds.
async fn eventually(t: &TestServer, path: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let r = t.req("GET", path).admin().send().await;
        let v = if r.body.is_empty() { Value::Null } else { r.json() };
        if check(&v) {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "GET {path} never showed the change: {v}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Each server keeps app views in memory; a change made through one server
/// reaches the info and list answers of another sharing PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_views_follow_changes_made_by_another_server() {
    // Beside the timed test, never during it (see support::TIMED).
    let _beside = crate::support::TIMED.read().await;
    if crate::support::postgres_admin_url().is_none() {
        return;
    }
    let (one, dev) = setup(crate::support::Backend::Postgres).await;
    one.req("POST", "/1.0/apps").token(&dev).form(&[("name", "shared")]).send().await.expect_status(201);
    let mut o = crate::support::Options::new(crate::support::Backend::Postgres);
    o.join(&one);
    let two = TestServer::start_with(o).await;
    // Two reads both answers, so both are cached.
    assert_eq!(two.req("GET", "/1.0/apps/shared").admin().send().await.json()["description"], "");
    assert_eq!(two.req("GET", "/1.0/apps").admin().send().await.json().as_array().unwrap().len(), 1);

    one.req("PUT", "/1.0/apps/shared").token(&dev).json(json!({"description": "changed"})).send().await.expect_status(200);
    one.team("t2").await;
    one.req("PUT", "/1.0/apps/shared/teams/t2").token(&dev).send().await.expect(200, "");
    one.req("POST", "/1.0/apps/shared/cname").token(&dev).form(&[("cname", "www.example.com")]).send().await.expect(200, "");
    one.req("POST", "/1.0/apps").token(&dev).form(&[("name", "fresh")]).send().await.expect_status(201);
    let info = eventually(&two, "/1.0/apps/shared", |v| v["cname"] == json!(["www.example.com"])).await;
    assert_eq!((info["description"].clone(), info["teams"].clone()), (json!("changed"), json!(["t1", "t2"])));
    eventually(&two, "/1.0/apps", |v| v.as_array().is_some_and(|a| a.len() == 2)).await;

    // A plan change touches every app; a removal drops the app.
    one.req("POST", "/1.0/plans").admin().form(&[("name", "huge"), ("memory", "1G"), ("cpumilli", "2000"), ("default", "true")]).send().await.expect_status(201);
    eventually(&two, "/1.0/apps", |v| v[0]["plan"].get("default").is_none()).await;
    one.req("DELETE", "/1.0/apps/fresh").token(&dev).send().await.expect_status(200);
    eventually(&two, "/1.0/apps", |v| v.as_array().is_some_and(|a| a.len() == 1)).await;
    two.req("GET", "/1.0/apps/fresh").admin().send().await.expect_error(404, "App fresh not found.");
    two.stop().await;
    one.stop().await;
}
