//! Teams.

use crate::support::{TestServer, backends};
use serde_json::json;

const INVALID: &str = "Invalid team name, team names should start with a letter andcontain only lower case letters, numbers, dashes, underscore and @.";

backends! {
    async fn create_validate_and_list(b) {
        let t = TestServer::start(b).await;
        t.req("GET", "/1.0/teams").admin().send().await.expect(204, "");
        t.req("POST", "/1.0/teams").admin().form(&[("name", "Team")]).send().await.expect_error(400, INVALID);
        t.req("POST", "/1.0/teams").admin().form(&[("name", "a")]).send().await.expect_error(400, INVALID);
        t.req("POST", "/1.0/teams").admin().form(&[("name", "9lives")]).send().await.expect_error(400, INVALID);
        t.req("GET", "/1.0/teams").admin().send().await.expect(204, "");
        t.req("POST", "/1.0/teams").admin()
            .form(&[("name", " backend "), ("tags.0", "prod"), ("tags.1", "prod"), ("tag", "eu")]).send().await.expect(201, "");
        t.req("POST", "/1.0/teams").admin().form(&[("name", "backend")]).send().await.expect_error(409, "team already exists");
        let r = t.req("GET", "/1.0/teams").admin().send().await;
        let list = r.json();
        assert_eq!(list[0]["name"], "backend");
        assert_eq!(list[0]["tags"], json!(["prod", "eu"]));
        let perms: Vec<&str> = list[0]["permissions"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
        assert!(perms.starts_with(&["app", "team", "service"]), "{perms:?}");

        // A plain user sees no team; a creator (with team.create) gets team-create roles.
        let dev = t.user("dev@example.com").await;
        t.req("GET", "/1.0/teams").token(&dev).send().await.expect(204, "");
        t.req("POST", "/1.0/teams").token(&dev).form(&[("name", "mine")]).send().await
            .expect_error(403, "You don't have permission to do this action");
        t.role("team-creator", "global", &["team.create"]).await;
        t.role("team-member", "team", &["app.read", "team.read.quota"]).await;
        t.req("POST", "/1.0/role/default").admin().form(&[("team-create", "team-member")]).send().await.expect(200, "");
        t.assign("team-creator", "dev@example.com", "").await;
        t.req("POST", "/1.0/teams").token(&dev).form(&[("name", "mine")]).send().await.expect(201, "");
        let list = t.req("GET", "/1.0/teams").token(&dev).send().await.json();
        assert_eq!(list, json!([{"name": "mine", "tags": null, "permissions": ["app", "team"]}]));
        t.stop().await;
    }
}

backends! {
    async fn info_update_rename_and_remove(b) {
        let t = TestServer::start(b).await;
        t.team("alpha").await;
        t.role("member", "team", &["team.update", "team.delete"]).await;
        let dev = t.user("dev@example.com").await;
        let outsider = t.user("out@example.com").await;
        t.assign("member", "dev@example.com", "alpha").await;

        let info = t.req("GET", "/1.4/teams/alpha").admin().send().await.json();
        assert_eq!(info["name"], "alpha");
        assert_eq!(info["pools"], json!([]));
        assert_eq!(info["apps"], json!([]));
        // The pools the team may use (a public one, one admitting it; not
        // one for another team) and its apps, each as app info shows it.
        t.team("gamma").await;
        t.req("POST", "/1.0/pools").admin().form(&[("name", "open"), ("public", "true")]).send().await.expect(201, "");
        for (pool, team) in [("ours", "alpha"), ("theirs", "gamma")] {
            t.req("POST", "/1.0/pools").admin().form(&[("name", pool)]).send().await.expect(201, "");
            t.req("POST", &format!("/1.0/pools/{pool}/team")).admin().form(&[("team", team)]).send().await.expect(200, "");
        }
        t.req("POST", "/1.0/apps").admin().form(&[("name", "site"), ("teamOwner", "alpha"), ("pool", "ours")]).send().await.expect_status(201);
        t.req("POST", "/1.0/apps").admin().form(&[("name", "other"), ("teamOwner", "gamma"), ("pool", "theirs")]).send().await.expect_status(201);
        let info = t.req("GET", "/1.4/teams/alpha").admin().send().await.json();
        let pools: Vec<&str> = info["pools"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
        assert_eq!(pools, vec!["open", "ours"]);
        assert_eq!(info["apps"].as_array().unwrap().len(), 1, "{}", info["apps"]);
        assert_eq!(info["apps"][0], t.req("GET", "/1.0/apps/site").admin().send().await.json());
        for app in ["site", "other"] {
            t.req("DELETE", &format!("/1.0/apps/{app}")).admin().send().await.expect_status(200);
        }
        t.req("DELETE", "/1.0/teams/gamma").admin().send().await.expect_status(200);
        let users: Vec<&str> = info["users"].as_array().unwrap().iter().map(|u| u["Email"].as_str().unwrap()).collect();
        assert_eq!(users, vec!["admin@example.com", "dev@example.com"]);
        // team.read is needed globally.
        t.req("GET", "/1.4/teams/alpha").token(&dev).send().await.expect_status(403);
        t.req("GET", "/1.4/teams/nope").admin().send().await.expect_error(404, "team not found");

        t.req("PUT", "/1.6/teams/alpha").token(&outsider).form(&[("tags", "x")]).send().await.expect_status(403);
        t.req("PUT", "/1.6/teams/alpha").token(&dev).form(&[("tags", "x"), ("tags", "y")]).send().await.expect(200, "");
        assert_eq!(t.req("GET", "/1.4/teams/alpha").admin().send().await.json()["tags"], json!(["x", "y"]));
        t.req("PUT", "/1.6/teams/alpha").token(&dev).form(&[("newname", "Bad Name")]).send().await.expect_error(400, INVALID);
        // Rename through the legacy POST route: role instances follow.
        t.req("POST", "/1.4/teams/alpha").token(&dev).form(&[("NewName", "beta")]).send().await.expect(200, "");
        t.req("GET", "/1.4/teams/alpha").admin().send().await.expect_status(404);
        let me = t.req("GET", "/1.0/users/info").token(&dev).send().await.json();
        assert_eq!(me["Roles"], json!([{"Name": "member", "ContextType": "team", "ContextValue": "beta"}]));
        assert_eq!(t.req("GET", "/1.4/teams/beta").admin().send().await.json()["tags"], json!(["x", "y"]));

        // Lacking permission looks exactly like not existing.
        t.req("DELETE", "/1.0/teams/beta").token(&outsider).send().await.expect_error(404, "Team \"beta\" not found.");
        t.req("DELETE", "/1.0/teams/ghost").admin().send().await.expect_error(404, "Team \"ghost\" not found.");
        t.req("DELETE", "/1.0/teams/beta").token(&dev).send().await.expect(200, "");
        t.req("GET", "/1.0/teams").admin().send().await.expect(204, "");
        let me = t.req("GET", "/1.0/users/info").token(&dev).send().await.json();
        assert_eq!(me["Roles"], json!([]));
        t.stop().await;
    }
}

backends! {
    async fn team_quota(b) {
        let t = TestServer::start(b).await;
        t.team("alpha").await;
        let dev = t.user("dev@example.com").await;
        t.req("GET", "/1.12/teams/alpha/quota").admin().send().await.expect(200, "{\"limit\":-1,\"inuse\":0}\n");
        t.req("GET", "/1.12/teams/alpha/quota").token(&dev).send().await.expect_status(403);
        t.req("PUT", "/1.12/teams/alpha/quota").token(&dev).form(&[("limit", "2")]).send().await.expect_status(403);
        t.req("PUT", "/1.12/teams/alpha/quota").admin().form(&[("limit", "x")]).send().await.expect_error(400, "Invalid limit");
        t.req("PUT", "/1.12/teams/alpha/quota").admin().form(&[("limit", "2")]).send().await.expect(200, "");
        t.req("GET", "/teams/alpha/quota").admin().send().await.expect(200, "{\"limit\":2,\"inuse\":0}\n");
        t.req("GET", "/1.0/teams/alpha/quota").admin().send().await.expect_status(404);
        t.req("GET", "/1.12/teams/ghost/quota").admin().send().await.expect_error(404, "team not found");
        t.stop().await;
    }
}

backends! {
    async fn a_member_of_another_team_is_denied(b) {
        let t = TestServer::start(b).await;
        t.team("team-a").await;
        t.team("team-b").await;
        t.role("team-admin", "team", &["team", "team.token"]).await;
        let alice = t.user("alice@example.com").await;
        let bob = t.user("bob@example.com").await;
        t.assign("team-admin", "alice@example.com", "team-a").await;
        t.assign("team-admin", "bob@example.com", "team-b").await;
        t.req("POST", "/1.6/tokens").token(&alice).form(&[("token_id", "a-bot")]).send().await.expect_status(201);

        // Bob administers team-b and nothing of team-a.
        t.req("PUT", "/1.6/teams/team-a").token(&bob).form(&[("tags", "pwned")]).send().await
            .expect_error(403, "You don't have permission to do this action");
        t.req("DELETE", "/1.0/teams/team-a").token(&bob).send().await.expect_error(404, "Team \"team-a\" not found.");
        t.req("GET", "/1.12/teams/team-a/quota").token(&bob).send().await.expect_status(403);
        t.req("PUT", "/1.12/teams/team-a/quota").token(&bob).form(&[("limit", "0")]).send().await.expect_status(403);
        t.req("GET", "/1.7/tokens/a-bot").token(&bob).send().await.expect_status(403);
        t.req("PUT", "/1.6/tokens/a-bot").token(&bob).form(&[("regenerate", "true")]).send().await.expect_status(403);
        t.req("DELETE", "/1.6/tokens/a-bot").token(&bob).send().await.expect_status(403);
        t.req("POST", "/1.6/tokens").token(&bob).form(&[("team", "team-a")]).send().await.expect_status(403);
        // He cannot hand himself team-a either.
        t.req("POST", "/1.0/roles/team-admin/user").token(&bob).form(&[("email", "bob@example.com"), ("context", "team-a")]).send().await
            .expect_status(403);
        t.req("GET", "/1.6/tokens").token(&bob).send().await.expect(204, "");
        let teams = t.req("GET", "/1.0/teams").token(&bob).send().await.json();
        assert_eq!(teams.as_array().unwrap().len(), 1);
        assert_eq!(teams[0]["name"], "team-b");

        // Nothing changed for team-a.
        assert_eq!(t.req("GET", "/1.4/teams/team-a").admin().send().await.json()["tags"], json!(null));
        t.req("GET", "/1.12/teams/team-a/quota").token(&alice).send().await.expect(200, "{\"limit\":-1,\"inuse\":0}\n");
        t.req("GET", "/1.7/tokens/a-bot").token(&alice).send().await.expect_status(200);
        t.stop().await;
    }
}
