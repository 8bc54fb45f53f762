//! Plans.

use crate::support::{TestServer, backends};
use serde_json::json;

backends! {
    async fn seeded_create_list_remove(b) {
        let t = TestServer::start(b).await;
        let dev = t.user("dev@example.com").await;
        let list = t.req("GET", "/1.0/plans").token(&dev).send().await;
        list.expect_status(200);
        let plans = list.json();
        assert_eq!(plans.as_array().unwrap().len(), 21);
        let default = plans.as_array().unwrap().iter().find(|p| p["name"] == "c0.1m0.2").unwrap();
        assert_eq!(default, &json!({"name": "c0.1m0.2", "memory": 268435456, "cpushare": 0, "cpumilli": 100,
            "default": true, "override": {"memory": null, "cpumilli": null}}));
        let other = plans.as_array().unwrap().iter().find(|p| p["name"] == "c1m2").unwrap();
        assert!(other.get("default").is_none());
        t.req("GET", "/1.0/plans").send().await.expect_status(401);

        let create = |pairs: &[(&'static str, &'static str)]| {
            let req = t.req("POST", "/1.0/plans").admin().form(pairs);
            async move { req.send().await }
        };
        create(&[("name", "")]).await.expect_error(500, "invalid value for name");
        create(&[("name", "tiny"), ("memory", "1M")]).await.expect_error(400, "The minimum allowed memory is 4MB");
        create(&[("name", "tiny"), ("cpushare", "1")]).await.expect_error(400, "The minimum allowed cpu-shares is 2");
        create(&[("name", "tiny"), ("memory", "lots")]).await.expect_status(400);
        create(&[("name", "c1m1")]).await.expect_error(409, "plan already exists");
        let r = create(&[("name", "huge"), ("memory", "2G"), ("cpumilli", "4000"), ("default", "true")]).await;
        r.expect_status(201);
        assert_eq!(r.header("content-type"), "text/plain; charset=utf-8");
        assert_eq!(r.json(), json!({"name": "huge", "memory": 2147483648u64, "cpushare": 0, "cpumilli": 4000,
            "default": true, "override": {"memory": null, "cpumilli": null}}));
        // Only one default remains.
        let plans = t.req("GET", "/1.0/plans").admin().send().await.json();
        let defaults: Vec<&str> = plans.as_array().unwrap().iter().filter(|p| p["default"] == true).map(|p| p["name"].as_str().unwrap()).collect();
        assert_eq!(defaults, vec!["huge"]);

        t.req("POST", "/1.0/plans").token(&dev).form(&[("name", "mine")]).send().await.expect_status(403);
        t.req("DELETE", "/1.0/plans/huge").token(&dev).send().await.expect_status(403);
        t.req("DELETE", "/1.0/plans/nope").admin().send().await.expect_error(404, "plan not found");
        t.req("DELETE", "/1.0/plans/huge").admin().send().await.expect(200, "");
        assert_eq!(t.req("GET", "/1.0/plans").admin().send().await.json().as_array().unwrap().len(), 21);
        let events = t.req("GET", "/1.1/events?target.type=plan").admin().send().await.json();
        let seen: Vec<(&str, &str, &str)> = events.as_array().unwrap().iter()
            .map(|e| (e["Kind"]["Name"].as_str().unwrap(), e["Target"]["Value"].as_str().unwrap(), e["Error"].as_str().unwrap()))
            .collect();
        // The refused duplicate is recorded too, with its error.
        assert_eq!(seen, vec![("plan.delete", "huge", ""), ("plan.create", "huge", ""), ("plan.create", "c1m1", "plan already exists")]);
        t.stop().await;
    }
}
