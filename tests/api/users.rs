//! Users: create, list, info, remove, passwords, API keys, quota.

use crate::support::{ADMIN, Options, TestServer, backends};
use serde_json::json;

backends! {
    async fn create_needs_an_admin_unless_registration_is_open(b) {
        let t = TestServer::start(b).await;
        let form = [("email", "new@example.com"), ("password", "123456")];
        t.req("POST", "/1.0/users").form(&form).send().await
            .expect_error(401, "User registration is disabled for non-admin users.");
        let plain = t.user("plain@example.com").await;
        t.req("POST", "/1.0/users").token(&plain).form(&form).send().await
            .expect_error(401, "User registration is disabled for non-admin users.");
        // An API key of an admin is not a login session: refused too.
        let key = t.req("GET", "/1.0/users/api-key").admin().send().await.json();
        t.req("POST", "/1.0/users").token(key.as_str().unwrap()).form(&form).send().await.expect_status(401);
        t.req("POST", "/1.0/users").admin().form(&form).send().await.expect(201, "");
        t.login("new@example.com", "123456").await;
        t.stop().await;

        let mut o = Options::new(b);
        o.user_registration = true;
        let t = TestServer::start_with(o).await;
        t.req("POST", "/users").form(&form).send().await.expect(201, "");
        t.stop().await;
    }
}

backends! {
    async fn create_rejects_bad_input_and_changes_nothing(b) {
        let t = TestServer::start(b).await;
        let create = |email: &'static str, password: &'static str| {
            let req = t.req("POST", "/1.0/users").admin().form(&[("email", email), ("password", password)]);
            async move { req.send().await }
        };
        create("bad-email", "123456").await.expect_error(400, "invalid email");
        create("Upper@Example.COM", "123456").await.expect_error(400, "invalid email");
        create("short@example.com", "12345").await
            .expect_error(400, "password length should be least 6 characters and at most 50 characters");
        create("long@example.com", &*"x".repeat(51).leak()).await
            .expect_error(400, "password length should be least 6 characters and at most 50 characters");
        create(ADMIN, "123456").await.expect_error(409, "this email is already registered");
        let r = t.req("GET", "/1.0/users").admin().send().await;
        let emails: Vec<String> = r.json().as_array().unwrap().iter().map(|u| u["Email"].as_str().unwrap().to_string()).collect();
        assert_eq!(emails, vec![ADMIN.to_string()]);
        t.req("POST", "/1.0/auth/login").form(&[("email", "short@example.com"), ("password", "12345678")]).send().await
            .expect_error(404, "user not found");
        t.stop().await;
    }
}

backends! {
    async fn info_shows_roles_and_expanded_permissions(b) {
        let t = TestServer::start(b).await;
        let token = t.user("dev@example.com").await;
        let r = t.req("GET", "/1.0/users/info").token(&token).send().await;
        r.expect(200, "{\"Email\":\"dev@example.com\",\"Roles\":[],\"Permissions\":null,\"Groups\":null}\n");
        assert_eq!(r.header("content-type"), "application/json");
        t.team("t1").await;
        t.role("deployer", "team", &["app.deploy", "app.read"]).await;
        t.assign("deployer", "dev@example.com", "t1").await;
        let r = t.req("GET", "/1.0/users/info").token(&token).send().await;
        assert_eq!(r.json(), json!({
            "Email": "dev@example.com",
            "Roles": [{"Name": "deployer", "ContextType": "team", "ContextValue": "t1"}],
            "Permissions": [
                {"Name": "app.deploy", "ContextType": "team", "ContextValue": "t1"},
                {"Name": "app.read", "ContextType": "team", "ContextValue": "t1"}
            ],
            "Groups": null
        }));
        t.stop().await;
    }
}

backends! {
    async fn list_is_filtered_by_what_the_caller_holds(b) {
        let t = TestServer::start(b).await;
        let alice = t.user("alice@example.com").await;
        t.user("bob@example.com").await;
        t.team("t1").await;
        t.role("reader", "team", &["app.read"]).await;
        t.assign("reader", "bob@example.com", "t1").await;

        let all = t.req("GET", "/1.0/users").admin().send().await.json();
        assert_eq!(all.as_array().unwrap().len(), 3);
        let one = t.req("GET", "/1.0/users?userEmail=bob@example.com").admin().send().await.json();
        assert_eq!(one[0]["Email"], "bob@example.com");
        let by_role = t.req("GET", "/1.0/users?role=reader&context=t1").admin().send().await.json();
        assert_eq!(by_role.as_array().unwrap().len(), 1);
        t.req("GET", "/1.0/users?role=reader&context=t2").admin().send().await
            .expect_error(404, "Wrong context being passed.");

        // Alice holds nothing: she sees only herself.
        let mine = t.req("GET", "/1.0/users").token(&alice).send().await.json();
        assert_eq!(mine, json!([{"Email": "alice@example.com", "Roles": [], "Permissions": null, "Groups": null}]));
        // Once she holds app.read on t1 she sees bob's t1 role instance.
        t.assign("reader", "alice@example.com", "t1").await;
        let seen = t.req("GET", "/1.0/users").token(&alice).send().await.json();
        let emails: Vec<&str> = seen.as_array().unwrap().iter().map(|u| u["Email"].as_str().unwrap()).collect();
        assert_eq!(emails, vec!["alice@example.com", "bob@example.com"]);
        t.stop().await;
    }
}

backends! {
    async fn remove_self_or_with_permission(b) {
        let t = TestServer::start(b).await;
        let alice = t.user("alice@example.com").await;
        t.user("bob@example.com").await;
        t.req("DELETE", "/1.0/users?user=bob@example.com").token(&alice).send().await
            .expect_error(403, "You don't have permission to do this action");
        t.req("DELETE", "/1.0/users?user=ghost@example.com").admin().send().await.expect_error(404, "user not found");
        t.req("DELETE", "/1.0/users").token(&alice).send().await.expect(200, "");
        t.req("GET", "/1.0/users/info").token(&alice).send().await.expect_status(401);
        t.req("POST", "/1.0/auth/login").form(&[("email", "alice@example.com"), ("password", "123456")]).send().await
            .expect_error(404, "user not found");
        t.req("DELETE", "/1.0/users?user=bob@example.com").admin().send().await.expect(200, "");
        // The email can be registered again, with fresh credentials.
        t.req("POST", "/1.0/users").admin().form(&[("email", "bob@example.com"), ("password", "654321")]).send().await.expect_status(201);
        t.login("bob@example.com", "654321").await;
        t.stop().await;
    }
}

backends! {
    async fn change_password(b) {
        let t = TestServer::start(b).await;
        let token = t.user("dev@example.com").await;
        let change = |old: &'static str, new: &'static str, confirm: &'static str| {
            let req = t.req("PUT", "/1.0/users/password").token(&token).form(&[("old", old), ("new", new), ("confirm", confirm)]);
            async move { req.send().await }
        };
        change("", "abcdef", "abcdef").await.expect_error(400, "Both the old and the new passwords are required.");
        change("123456", "abcdef", "abcdeg").await.expect_error(400, "New password and password confirmation didn't match.");
        change("wrong1", "abcdef", "abcdef").await.expect_error(403, "the given password didn't match the user's current password");
        change("123456", "abc", "abc").await
            .expect_error(400, "password length should be least 6 characters and at most 50 characters");
        t.login("dev@example.com", "123456").await;
        change("123456", "abcdef", "abcdef").await.expect(200, "");
        t.login("dev@example.com", "abcdef").await;
        t.req("POST", "/1.0/auth/login").form(&[("email", "dev@example.com"), ("password", "123456")]).send().await
            .expect_status(401);
        t.stop().await;
    }
}

backends! {
    async fn api_key_is_stable_until_regenerated(b) {
        let t = TestServer::start(b).await;
        let token = t.user("dev@example.com").await;
        let r = t.req("GET", "/1.0/users/api-key").token(&token).send().await;
        r.expect_status(200);
        assert_eq!(r.header("content-type"), "application/json");
        let key = r.json().as_str().unwrap().to_string();
        assert_eq!(key.len(), 64);
        assert_eq!(r.body, format!("\"{key}\"\n"));
        assert_eq!(t.req("GET", "/1.0/users/api-key").token(&token).send().await.json(), key.as_str());
        // The key authenticates as the user.
        let me = t.req("GET", "/1.0/users/info").token(&key).send().await.json();
        assert_eq!(me["Email"], "dev@example.com");

        let new = t.req("POST", "/1.0/users/api-key").token(&token).send().await.json().as_str().unwrap().to_string();
        assert_ne!(new, key);
        t.req("GET", "/1.0/users/info").token(&key).send().await.expect_status(401);
        t.req("GET", "/1.0/users/info").token(&new).send().await.expect_status(200);

        // Another user's key needs user.update.token.
        let other = t.user("other@example.com").await;
        t.req("GET", "/1.0/users/api-key?user=dev@example.com").token(&other).send().await.expect_status(403);
        t.req("POST", "/1.0/users/api-key?user=dev@example.com").token(&other).send().await.expect_status(403);
        let seen = t.req("GET", "/1.0/users/api-key?user=dev@example.com").admin().send().await.json();
        assert_eq!(seen, new.as_str());
        t.stop().await;
    }
}

backends! {
    async fn user_quota(b) {
        let t = TestServer::start(b).await;
        let token = t.user("dev@example.com").await;
        let r = t.req("GET", "/1.0/users/dev@example.com/quota").token(&token).send().await;
        r.expect(200, "{\"limit\":-1,\"inuse\":0}\n");
        t.req("GET", &format!("/1.0/users/{ADMIN}/quota")).token(&token).send().await.expect_status(403);
        t.req("PUT", "/1.0/users/dev@example.com/quota").token(&token).form(&[("limit", "3")]).send().await.expect_status(403);
        t.req("PUT", "/1.0/users/dev@example.com/quota").admin().form(&[("limit", "lots")]).send().await
            .expect_error(400, "Invalid limit");
        t.req("PUT", "/1.0/users/dev@example.com/quota").admin().form(&[("limit", "3")]).send().await.expect(200, "");
        t.req("GET", "/1.0/users/dev@example.com/quota").token(&token).send().await.expect(200, "{\"limit\":3,\"inuse\":0}\n");
        t.req("PUT", "/1.0/users/dev@example.com/quota").admin().form(&[("limit", "-7")]).send().await.expect(200, "");
        t.req("GET", "/1.0/users/dev@example.com/quota").token(&token).send().await.expect(200, "{\"limit\":-1,\"inuse\":0}\n");
        t.req("PUT", "/1.0/users/ghost@example.com/quota").admin().form(&[("limit", "1")]).send().await.expect_status(404);
        t.stop().await;
    }
}
