//! `/auth/scheme`, login and logout with the native scheme.

use crate::support::{ADMIN, TestServer, backends};

backends! {
    async fn scheme_is_native(b) {
        let t = TestServer::start(b).await;
        let r = t.req("GET", "/1.0/auth/scheme").send().await;
        r.expect(200, "{\"name\":\"native\",\"data\":null}\n");
        assert_eq!(r.header("content-type"), "application/json");
        t.stop().await;
    }
}

backends! {
    async fn login_answers_and_errors(b) {
        let t = TestServer::start(b).await;
        let r = t.req("POST", "/1.0/auth/login").form(&[("email", ADMIN), ("password", "admin-secret")]).send().await;
        r.expect_status(200);
        // tsuru writes it without a Content-Type; Go sniffs text.
        assert_eq!(r.header("content-type"), "text/plain; charset=utf-8");
        let token = r.json()["token"].as_str().unwrap().to_string();
        assert_eq!(token.len(), 40);
        assert!(token.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(r.body, format!("{{\"token\":\"{token}\"}}\n"));

        let login = |email: &'static str, password: Option<&'static str>| {
            let mut pairs = vec![("email", email)];
            if let Some(p) = password { pairs.push(("password", p)); }
            let req = t.req("POST", "/1.0/auth/login").form(&pairs);
            async move { req.send().await }
        };
        login(ADMIN, Some("wrong-password")).await.expect_error(401, "Authentication failed, wrong password.");
        login("ghost@example.com", Some("whatever")).await.expect_error(404, "user not found");
        login("not-an-email", Some("whatever")).await.expect_error(400, "invalid email");
        login(ADMIN, None).await.expect_error(400, "you must provide a password to login");
        login(ADMIN, Some("123")).await
            .expect_error(400, "Password length should be least 6 characters and at most 50 characters.");

        // The same through /users/{email}/tokens, with JSON.
        let r = t.req("POST", &format!("/1.0/users/{ADMIN}/tokens"))
            .json(serde_json::json!({"password": "admin-secret"})).send().await;
        r.expect_status(200);
        assert_eq!(r.json()["token"].as_str().unwrap().len(), 40);
        t.stop().await;
    }
}

backends! {
    async fn logout_kills_only_the_presented_session(b) {
        let t = TestServer::start(b).await;
        let one = t.login(ADMIN, "admin-secret").await;
        let two = t.login(ADMIN, "admin-secret").await;
        t.req("DELETE", "/1.0/users/tokens").token(&one).send().await.expect(200, "");
        t.req("GET", "/1.0/users/info").token(&one).send().await.expect_status(401);
        t.req("GET", "/1.0/users/info").token(&two).send().await.expect_status(200);
        t.req("DELETE", "/users/tokens").send().await.expect_status(401);
        t.stop().await;
    }
}

backends! {
    async fn max_simultaneous_sessions_drops_the_oldest(b) {
        use crate::support::Options;
        let mut o = Options::new(b);
        o.auth_toml = "max_simultaneous_sessions = 2".into();
        let t = TestServer::start_with(o).await;
        // The harness's own admin login is the oldest session.
        t.req("GET", "/1.0/users/info").admin().send().await.expect_status(200);
        let second = t.login(ADMIN, "admin-secret").await;
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let third = t.login(ADMIN, "admin-secret").await;
        t.req("GET", "/1.0/users/info").admin().send().await.expect_status(401);
        t.req("GET", "/1.0/users/info").token(&second).send().await.expect_status(200);
        t.req("GET", "/1.0/users/info").token(&third).send().await.expect_status(200);
        t.stop().await;
    }
}
