//! Pools and constraints.

use crate::support::{TestServer, backends};
use serde_json::{Value, json};

const INVALID: &str = "Invalid pool name, pool name should have at most 40 characters, containing only lower case letters, numbers or dashes, starting with a letter.";

backends! {
    async fn create_validate_show_and_remove(b) {
        let t = TestServer::start(b).await;
        t.req("GET", "/1.0/pools").admin().send().await.expect(204, "");
        let create = |pairs: &[(&'static str, &'static str)]| {
            let req = t.req("POST", "/1.0/pools").admin().form(pairs);
            async move { req.send().await }
        };
        create(&[("name", "")]).await.expect_error(400, "Pool name is required.");
        create(&[("name", "Prod")]).await.expect_error(400, INVALID);
        create(&[("name", "prod"), ("provisioner", "kubernetes")]).await
            .expect_error(400, "provisioner \"kubernetes\" is not configured");
        create(&[("name", "prod"), ("labels.affinity", "not json")]).await.expect_status(400);
        t.req("GET", "/1.0/pools").admin().send().await.expect(204, "");

        create(&[("name", "prod"), ("default", "true"), ("labels.region", "eu")]).await.expect(201, "");
        create(&[("name", "prod")]).await.expect_error(409, "Pool already exists.");
        create(&[("name", "other"), ("default", "true")]).await.expect_error(409, "Default pool already exists.");
        t.req("GET", "/1.8/pools/other").admin().send().await.expect_error(404, "Pool does not exist.");
        t.team("t1").await;
        let p = t.req("GET", "/1.8/pools/prod").admin().send().await;
        p.expect_status(200);
        assert_eq!(p.json(), json!({
            "name": "prod", "default": true, "provisioner": "", "labels": {"region": "eu"}, "public": true,
            "teams": ["t1"],
            "allowed": {"team": ["t1"], "router": ["embedded"], "service": null,
                        "plan": p.json()["allowed"]["plan"].clone(), "volume-plan": null}
        }));
        assert_eq!(p.json()["allowed"]["plan"].as_array().unwrap().len(), 21);
        // GET needs the 1.8 prefix; PUT and DELETE work bare.
        t.req("GET", "/1.0/pools/prod").admin().send().await.expect_status(404);

        // force takes the default flag over.
        create(&[("name", "other"), ("default", "true"), ("force", "true")]).await.expect(201, "");
        assert_eq!(t.req("GET", "/1.8/pools/prod").admin().send().await.json()["default"], false);
        t.req("PUT", "/pools/prod").admin().form(&[("default", "true")]).send().await.expect_error(409, "Default pool already exists.");
        t.req("PUT", "/pools/prod").admin().form(&[("default", "true"), ("force", "true"), ("labels.tier", "gold")]).send().await.expect(200, "");
        let prod = t.req("GET", "/1.8/pools/prod").admin().send().await.json();
        assert_eq!((prod["default"].clone(), prod["labels"].clone()), (json!(true), json!({"tier": "gold"})));
        t.req("PUT", "/pools/ghost").admin().form(&[("public", "true")]).send().await.expect_error(404, "Pool does not exist.");

        let dev = t.user("dev@example.com").await;
        t.req("POST", "/1.0/pools").token(&dev).form(&[("name", "mine")]).send().await.expect_status(403);
        t.req("DELETE", "/pools/other").token(&dev).send().await.expect_status(403);
        t.req("DELETE", "/pools/other").admin().send().await.expect(200, "");
        t.req("DELETE", "/pools/other").admin().send().await.expect_error(404, "Pool does not exist.");
        let names: Vec<String> = t.req("GET", "/1.0/pools").admin().send().await.json().as_array().unwrap()
            .iter().map(|p| p["name"].as_str().unwrap().to_string()).collect();
        assert_eq!(names, vec!["prod"]);
        t.stop().await;
    }
}

backends! {
    async fn teams_public_and_visibility(b) {
        let t = TestServer::start(b).await;
        t.team("blue").await;
        t.team("green").await;
        for name in ["shared", "bluepool", "greenpool"] {
            t.req("POST", "/1.0/pools").admin().form(&[("name", name)]).send().await.expect(201, "");
        }
        t.req("PUT", "/pools/shared").admin().form(&[("public", "true")]).send().await.expect(200, "");
        t.req("POST", "/1.0/pools/shared/team").admin().form(&[("team", "blue")]).send().await
            .expect_error(500, "Public/Default pool can't have teams.");
        t.req("POST", "/1.0/pools/bluepool/team").admin().form(&[]).send().await.expect_error(400, "You must provide the team.");
        t.req("POST", "/1.0/pools/bluepool/team").admin().form(&[("team", "blue")]).send().await.expect(200, "");
        t.req("POST", "/1.0/pools/bluepool/team").admin().form(&[("team", "blue")]).send().await
            .expect_error(500, "Team already exists in pool.");
        t.req("POST", "/1.0/pools/bluepool/team").admin().form(&[("team", "nope")]).send().await.expect_status(404);
        t.req("POST", "/1.0/pools/greenpool/team").admin().form(&[("team", "green"), ("team", "blue")]).send().await.expect(200, "");
        t.req("DELETE", "/1.0/pools/greenpool/team?team=blue").admin().send().await.expect(200, "");
        let green = t.req("GET", "/1.8/pools/greenpool").admin().send().await.json();
        assert_eq!((green["teams"].clone(), green["public"].clone()), (json!(["green"]), json!(false)));
        assert_eq!(t.req("GET", "/1.8/pools/shared").admin().send().await.json()["public"], true);

        // A blue developer (app.create on blue) sees the public pool and blue's pool.
        t.role("creator", "team", &["app.create"]).await;
        let dev = t.user("dev@example.com").await;
        t.assign("creator", "dev@example.com", "blue").await;
        let seen: Vec<String> = t.req("GET", "/1.0/pools").token(&dev).send().await.json().as_array().unwrap()
            .iter().map(|p| p["name"].as_str().unwrap().to_string()).collect();
        assert_eq!(seen, vec!["bluepool", "shared"]);
        t.req("GET", "/1.8/pools/bluepool").token(&dev).send().await.expect_status(403);
        let outsider = t.user("out@example.com").await;
        t.req("GET", "/1.0/pools").token(&outsider).send().await.expect(204, "");
        t.stop().await;
    }
}

backends! {
    async fn constraints(b) {
        let t = TestServer::start(b).await;
        t.req("GET", "/1.3/constraints").admin().send().await.expect(204, "");
        for team in ["ops", "devs", "eu-pay"] {
            t.team(team).await;
        }
        for pool in ["prod-us", "prod-eu", "dev"] {
            t.req("POST", "/1.0/pools").admin().form(&[("name", pool)]).send().await.expect(201, "");
        }
        let set = |body: Value, query: &'static str| {
            let req = t.req("PUT", &format!("/1.3/constraints{query}")).admin().json(body);
            async move { req.send().await }
        };
        set(json!({"PoolExpr": "", "Field": "team", "Values": ["x"]}), "").await
            .expect_error(400, "You must provide a Pool Expression");
        set(json!({"PoolExpr": "prod*", "Field": "colour", "Values": ["x"]}), "").await
            .expect_error(500, "invalid constraint type. Valid types are: [team service router plan volume-plan]");
        set(json!({"PoolExpr": "prod*", "Field": "team", "Values": ["ops"], "Blacklist": false}), "").await.expect(200, "");
        set(json!({"PoolExpr": "prod-eu", "Field": "team", "Values": ["eu-*"]}), "").await.expect(200, "");
        set(json!({"PoolExpr": "prod-eu", "Field": "team", "Values": ["ops"]}), "?append=true").await.expect(200, "");
        set(json!({"PoolExpr": "*", "Field": "plan", "Values": ["c16*"], "Blacklist": true}), "").await.expect(200, "");
        let teams = |pool: &'static str| {
            let req = t.req("GET", &format!("/1.8/pools/{pool}")).admin();
            async move { req.send().await.json()["teams"].clone() }
        };
        assert_eq!(teams("prod-us").await, json!(["ops"]));
        assert_eq!(teams("prod-eu").await, json!(["eu-pay", "ops"]));
        assert_eq!(teams("dev").await, json!(["devs", "eu-pay", "ops"]));
        let plans = t.req("GET", "/1.8/pools/dev").admin().send().await.json()["allowed"]["plan"].clone();
        assert_eq!(plans.as_array().unwrap().len(), 20, "c16m16 is blacklisted");
        let list = t.req("GET", "/1.3/constraints").admin().send().await.json();
        assert_eq!(list, json!([
            {"PoolExpr": "*", "Field": "plan", "Values": ["c16*"], "Blacklist": true},
            {"PoolExpr": "prod*", "Field": "team", "Values": ["ops"], "Blacklist": false},
            {"PoolExpr": "prod-eu", "Field": "team", "Values": ["eu-*", "ops"], "Blacklist": false}
        ]));
        // Empty values delete a constraint.
        set(json!({"PoolExpr": "*", "Field": "plan", "Values": []}), "").await.expect(200, "");
        assert_eq!(t.req("GET", "/1.3/constraints").admin().send().await.json().as_array().unwrap().len(), 2);
        let dev = t.user("dev@example.com").await;
        t.req("GET", "/1.3/constraints").token(&dev).send().await.expect_status(403);
        set(json!({"PoolExpr": "x", "Field": "team", "Values": ["a"]}), "").await.expect_status(200);
        t.stop().await;
    }
}
