//! Roles, permissions, assignment, default roles.

use crate::support::{TestServer, backends};
use serde_json::json;

backends! {
    async fn create_list_info_update_remove(b) {
        let t = TestServer::start(b).await;
        t.req("POST", "/1.0/roles").admin().form(&[("name", " "), ("context", "team")]).send().await
            .expect_error(400, "invalid role name");
        t.req("POST", "/1.0/roles").admin().form(&[("name", "r1"), ("context", "galaxy")]).send().await
            .expect_error(500, "invalid context type \"galaxy\"");
        t.req("POST", "/1.0/roles").admin().form(&[("name", "r1"), ("context", "team"), ("description", "first")]).send().await
            .expect(201, "");
        t.req("POST", "/1.0/roles").admin().form(&[("name", "r1"), ("context", "app")]).send().await
            .expect_error(409, "role already exists");
        let r = t.req("GET", "/1.0/roles/r1").admin().send().await;
        r.expect(200, "{\"name\":\"r1\",\"context\":\"team\",\"Description\":\"first\"}\n");
        t.req("GET", "/1.0/roles/nope").admin().send().await.expect_error(404, "role not found");
        let list = t.req("GET", "/1.0/roles").admin().send().await.json();
        let names: Vec<&str> = list.as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
        assert_eq!(names, vec!["AllowAll", "r1"]);

        t.req("PUT", "/1.4/roles").admin().form(&[("name", "r1")]).send().await.expect_status(400);
        t.req("PUT", "/1.4/roles").admin()
            .form(&[("name", "r1"), ("newName", "r2"), ("contextType", "app"), ("description", "second")]).send().await
            .expect(200, "");
        t.req("GET", "/1.0/roles/r2").admin().send().await.expect(200, "{\"name\":\"r2\",\"context\":\"app\",\"Description\":\"second\"}\n");

        // Users assigned: 412 until dissociated. A binding names an existing app.
        t.user("dev@example.com").await;
        t.req("POST", "/1.0/roles/r2/user").admin().form(&[("email", "dev@example.com"), ("context", "myapp")]).send().await
            .expect_error(400, "app not found");
        t.team("t1").await;
        t.req("POST", "/1.0/pools").admin().form(&[("name", "main"), ("default", "true")]).send().await.expect(201, "");
        t.req("POST", "/1.0/apps").admin().form(&[("name", "myapp"), ("teamOwner", "t1")]).send().await.expect_status(201);
        t.req("POST", "/1.0/roles/r2/user").admin().form(&[("email", "dev@example.com"), ("context", "myapp")]).send().await.expect(200, "");
        t.req("DELETE", "/1.0/roles/r2").admin().send().await
            .expect_error(412, "role has users assigned. you must dissociate them before remove the role.");
        t.req("DELETE", "/1.0/roles/r2/user/dev@example.com?context=myapp").admin().send().await.expect(200, "");
        t.req("DELETE", "/1.0/roles/r2").admin().send().await.expect(200, "");
        t.req("DELETE", "/1.0/roles/r2").admin().send().await.expect_error(404, "role not found");

        let dev = t.login("dev@example.com", "123456").await;
        t.req("GET", "/1.0/roles").token(&dev).send().await.expect_status(403);
        t.req("POST", "/1.0/roles").token(&dev).form(&[("name", "x"), ("context", "team")]).send().await.expect_status(403);
        t.stop().await;
    }
}

backends! {
    async fn permissions_add_and_remove(b) {
        let t = TestServer::start(b).await;
        t.role("dev", "team", &[]).await;
        let add = |perms: &[&'static str]| {
            let pairs: Vec<(&str, &str)> = perms.iter().map(|p| ("permission", *p)).collect();
            let req = t.req("POST", "/1.0/roles/dev/permissions").admin().form(&pairs);
            async move { req.send().await }
        };
        add(&["app.nope"]).await.expect_error(400, "permission named \"app.nope\" not found");
        add(&[""]).await.expect_error(400, "invalid permission name");
        add(&["app.deploy", "role.create"]).await
            .expect_error(409, "permission \"role.create\" not allowed with context of type \"team\"");
        // A refused batch changes nothing.
        t.req("GET", "/1.0/roles/dev").admin().send().await.expect(200, "{\"name\":\"dev\",\"context\":\"team\",\"Description\":\"\"}\n");
        add(&["app.deploy", "app.read"]).await.expect(200, "");
        let role = t.req("GET", "/1.0/roles/dev").admin().send().await.json();
        assert_eq!(role["scheme_names"], json!(["app.deploy", "app.read"]));
        t.req("DELETE", "/1.0/roles/dev/permissions/app.deploy").admin().send().await.expect(200, "");
        let role = t.req("GET", "/1.0/roles/dev").admin().send().await.json();
        assert_eq!(role["scheme_names"], json!(["app.read"]));
        t.stop().await;
    }
}

backends! {
    async fn assigning_needs_holding_what_you_hand_out(b) {
        let t = TestServer::start(b).await;
        t.team("t1").await;
        t.role("deployer", "team", &["app.deploy"]).await;
        t.role("assigner", "global", &["role.update.assign", "role.update.dissociate"]).await;
        let lead = t.user("lead@example.com").await;
        t.user("dev@example.com").await;
        t.assign("assigner", "lead@example.com", "").await;
        let assign = |token: String, email: &'static str, ctx: &'static str| {
            let req = t.req("POST", "/1.0/roles/deployer/user").token(&token).form(&[("email", email), ("context", ctx)]);
            async move { req.send().await }
        };
        assign(lead.clone(), "dev@example.com", "t1").await
            .expect_error(403, "User not authorized to use permission app.deploy(team t1)");
        t.assign("deployer", "lead@example.com", "t1").await;
        assign(lead.clone(), "dev@example.com", "t1").await.expect(200, "");
        assign(lead.clone(), "dev@example.com", "").await
            .expect_error(400, "Global context value is not valid for role with context type team");
        assign(lead.clone(), "dev@example.com", "ghost-team").await.expect_error(400, "team not found");
        assign(lead.clone(), "ghost@example.com", "t1").await.expect_error(404, "user not found");
        let dev = t.login("dev@example.com", "123456").await;
        assign(dev, "dev@example.com", "t1").await.expect_status(403);
        t.req("DELETE", "/1.0/roles/deployer/user/dev@example.com?context=t1").token(&lead).send().await.expect(200, "");
        let info = t.req("GET", "/1.0/users?userEmail=dev@example.com").admin().send().await.json();
        assert_eq!(info[0]["Roles"], json!([]));
        t.stop().await;
    }
}

backends! {
    async fn default_roles(b) {
        let t = TestServer::start(b).await;
        t.req("GET", "/1.0/role/default").admin().send().await.expect(200, "null\n");
        t.role("newbie", "global", &["team.create"]).await;
        t.role("teamy", "team", &["app"]).await;
        t.req("POST", "/1.0/role/default").admin().form(&[("user-create", "teamy")]).send().await
            .expect_error(400, "wrong context type for role event, expected \"global\" role has \"team\"");
        t.req("POST", "/1.0/role/default").admin().form(&[("user-create", "newbie"), ("team-create", "teamy")]).send().await
            .expect(200, "");
        let defaults = t.req("GET", "/1.0/role/default").admin().send().await.json();
        assert_eq!(defaults, json!([
            {"name": "newbie", "context": "global", "Description": "", "scheme_names": ["team.create"], "events": ["user-create"]},
            {"name": "teamy", "context": "team", "Description": "", "scheme_names": ["app"], "events": ["team-create"]}
        ]));
        // New users get `newbie`; creating a team then gives them `teamy` on it.
        let dev = t.user("dev@example.com").await;
        t.req("POST", "/1.0/teams").token(&dev).form(&[("name", "devs")]).send().await.expect(201, "");
        let me = t.req("GET", "/1.0/users/info").token(&dev).send().await.json();
        assert_eq!(me["Roles"], json!([
            {"Name": "newbie", "ContextType": "global", "ContextValue": ""},
            {"Name": "teamy", "ContextType": "team", "ContextValue": "devs"}
        ]));
        t.req("DELETE", "/1.0/role/default?user-create=newbie").admin().send().await.expect(200, "");
        let defaults = t.req("GET", "/1.0/role/default").admin().send().await.json();
        assert_eq!(defaults.as_array().unwrap().len(), 1);
        t.stop().await;
    }
}

backends! {
    async fn permission_list(b) {
        let t = TestServer::start(b).await;
        let list = t.req("GET", "/1.0/permissions").admin().send().await.json();
        let list = list.as_array().unwrap();
        assert_eq!(list.len(), 249);
        assert_eq!(list[0], json!({"Name": "", "Contexts": ["global"]}));
        assert_eq!(list[1], json!({"Name": "app", "Contexts": ["global", "app", "team", "pool"]}));
        let dev = t.user("dev@example.com").await;
        t.req("GET", "/1.0/permissions").token(&dev).send().await.expect_status(403);
        t.stop().await;
    }
}

backends! {
    async fn group_roles_bind_and_unbind(b) {
        let t = TestServer::start(b).await;
        t.team("t1").await;
        t.role("viewer", "team", &["app.read"]).await;
        t.req("POST", "/1.9/roles/viewer/group").admin().form(&[("group_name", "ops"), ("context", "t1")]).send().await.expect(200, "");
        t.req("POST", "/1.9/roles/viewer/group").admin().form(&[("group_name", "ops"), ("context", "")]).send().await
            .expect_status(400);
        t.req("DELETE", "/1.9/roles/viewer/group/ops?context=t1").admin().send().await.expect(200, "");
        t.req("POST", "/1.0/roles/viewer/group").admin().form(&[("group_name", "ops"), ("context", "t1")]).send().await
            .expect_status(404);
        t.stop().await;
    }
}
