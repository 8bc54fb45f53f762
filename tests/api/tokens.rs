//! Team tokens.

use crate::support::{TestServer, backends};
use serde_json::json;

backends! {
    async fn create_show_use_update_delete(b) {
        let t = TestServer::start(b).await;
        t.req("GET", "/1.6/tokens").admin().send().await.expect(204, "");
        t.req("POST", "/1.6/tokens").admin().form(&[("token_id", "ci")]).send().await.expect_error(404, "team not found");
        t.team("t1").await;
        // One team exists and the caller holds the permission globally: auto-selected.
        let r = t.req("POST", "/1.6/tokens").admin()
            .form(&[("token_id", "ci-bot"), ("description", "deploys"), ("expires_in", "0")]).send().await;
        r.expect_status(201);
        assert_eq!(r.header("content-type"), "text/plain; charset=utf-8");
        let tok = r.json();
        let value = tok["token"].as_str().unwrap().to_string();
        assert_eq!(value.len(), 64);
        assert_eq!(tok["token_id"], "ci-bot");
        assert_eq!(tok["team"], "t1");
        assert_eq!(tok["description"], "deploys");
        assert_eq!(tok["creator_email"], "admin@example.com");
        assert_eq!(tok["expires_at"], "0001-01-01T00:00:00Z");
        assert_eq!(tok["last_access"], "0001-01-01T00:00:00Z");
        assert!(tok.get("roles").is_none());
        t.req("POST", "/1.6/tokens").admin().form(&[("token_id", "ci-bot")]).send().await.expect_status(500);
        t.req("POST", "/1.6/tokens").admin().form(&[("token_id", "Bad_Id")]).send().await.expect_error(500, "invalid token_id");
        t.team("t2").await;
        t.req("POST", "/1.6/tokens").admin().form(&[("token_id", "x")]).send().await
            .expect_error(400, "You must provide a team to execute this action.");
        t.req("POST", "/1.6/tokens").admin().form(&[("team", "t2")]).send().await.expect_status(201);

        // The token authenticates as a synthetic user with only its roles.
        let me = t.req("GET", "/1.0/users/info").token(&value).send().await.json();
        assert_eq!(me, json!({"Email": "ci-bot@tsuru-team-token", "Roles": [], "Permissions": null, "Groups": null}));
        t.role("teamreader", "team", &["team.read.quota"]).await;
        t.req("POST", "/1.6/roles/teamreader/token").admin().form(&[("token_id", "ci-bot"), ("context", "t1")]).send().await.expect(200, "");
        t.req("POST", "/1.6/roles/teamreader/token").admin().form(&[("token_id", "ghost"), ("context", "t1")]).send().await.expect(404, "");
        t.req("GET", "/1.12/teams/t1/quota").token(&value).send().await.expect_status(200);
        t.req("GET", "/1.12/teams/t2/quota").token(&value).send().await.expect_status(403);

        let info = t.req("GET", "/1.7/tokens/ci-bot").admin().send().await.json();
        assert_eq!(info["roles"], json!([{"Name": "teamreader", "ContextValue": "t1"}]));
        assert_eq!(info["token"], value.as_str());
        assert_ne!(info["last_access"], "0001-01-01T00:00:00Z");
        t.req("GET", "/1.7/tokens/nope").admin().send().await.expect_error(404, "team token not found");
        // Dissociate and re-associate: the token loses and regains the grant.
        t.req("DELETE", "/1.6/roles/teamreader/token/ci-bot?context=t1").admin().send().await.expect(200, "");
        t.req("GET", "/1.12/teams/t1/quota").token(&value).send().await.expect_status(403);
        t.req("DELETE", "/1.6/roles/teamreader/token/ghost?context=t1").admin().send().await.expect(404, "");
        t.req("POST", "/1.6/roles/teamreader/token").admin().form(&[("token_id", "ci-bot"), ("context", "t1")]).send().await.expect(200, "");
        t.req("GET", "/1.12/teams/t1/quota").token(&value).send().await.expect_status(200);
        t.req("GET", "/1.6/tokens/ci-bot").admin().send().await.expect_status(404);

        // Someone who can read the team's tokens but lacks the token's permissions sees no value.
        t.role("tokenreader", "team", &["team.token.read"]).await;
        let dev = t.user("dev@example.com").await;
        t.assign("tokenreader", "dev@example.com", "t1").await;
        let seen = t.req("GET", "/1.6/tokens").token(&dev).send().await.json();
        assert_eq!(seen.as_array().unwrap().len(), 1);
        assert_eq!(seen[0]["token_id"], "ci-bot");
        assert_eq!(seen[0]["token"], "");

        // Regenerate: the old value stops working.
        let r = t.req("PUT", "/1.6/tokens/ci-bot").admin().form(&[("regenerate", "true"), ("description", "")]).send().await;
        r.expect_status(200);
        let new = r.json()["token"].as_str().unwrap().to_string();
        assert_ne!(new, value);
        assert_eq!(r.json()["description"], "deploys");
        t.req("GET", "/1.0/users/info").token(&value).send().await.expect_status(401);
        t.req("GET", "/1.0/users/info").token(&new).send().await.expect_status(200);
        t.req("PUT", "/1.6/tokens/ci-bot").token(&dev).form(&[("description", "mine")]).send().await.expect_status(403);

        t.req("DELETE", "/1.6/tokens/ci-bot").token(&dev).send().await.expect_status(403);
        t.req("DELETE", "/1.6/tokens/ci-bot").admin().send().await.expect(200, "");
        t.req("GET", "/1.0/users/info").token(&new).send().await.expect_status(401);
        t.req("DELETE", "/1.6/tokens/ci-bot").admin().send().await.expect_error(404, "team token not found");
        t.stop().await;
    }
}

backends! {
    async fn expired_team_token_fails_every_route(b) {
        let t = TestServer::start(b).await;
        t.team("t1").await;
        let r = t.req("POST", "/1.6/tokens").admin().form(&[("token_id", "short"), ("expires_in", "1")]).send().await;
        let value = r.json()["token"].as_str().unwrap().to_string();
        assert_ne!(r.json()["expires_at"], "0001-01-01T00:00:00Z");
        t.req("GET", "/1.0/users/info").token(&value).send().await.expect_status(200);
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        t.req("GET", "/1.0/users/info").token(&value).send().await.expect_error(500, "team token expired");
        t.req("GET", "/healthcheck").token(&value).send().await.expect_error(500, "team token expired");
        // Clearing the expiry revives it.
        t.req("PUT", "/1.6/tokens/short").admin().form(&[("expires_in", "-1")]).send().await.expect_status(200);
        t.req("GET", "/1.0/users/info").token(&value).send().await.expect_status(200);
        t.stop().await;
    }
}
