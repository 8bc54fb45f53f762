//! Cross-cutting wire conventions (API-NOTES §0, §1).

use crate::support::{TestServer, backends};

backends! {
    async fn version_prefixes_and_methods(b) {
        let t = TestServer::start(b).await;
        t.req("GET", "/1.0/users/info").admin().send().await.expect_status(200);
        t.req("GET", "/users/info").admin().send().await.expect_status(200);
        // Registered at 1.0 only: any other version is unknown.
        t.req("GET", "/1.1/users/info").admin().send().await.expect_error(404, "404 page not found");
        t.req("GET", "/1.6/teams").admin().send().await.expect_error(404, "404 page not found");
        // Registered at 1.4: the bare path works, 1.0 does not.
        t.req("GET", "/1.4/teams/none").admin().send().await.expect_error(404, "team not found");
        t.req("GET", "/1.0/teams/none").admin().send().await.expect_error(404, "404 page not found");
        // A wrong method is 404, never 405, and carries no Allow header.
        let r = t.req("PATCH", "/1.0/users/info").admin().send().await;
        r.expect_error(404, "404 page not found");
        assert_eq!(r.header("allow"), "");
        t.req("GET", "/1.0/users/info/").admin().send().await.expect_error(404, "404 page not found");
        t.req("GET", "/nothing/here").send().await.expect_error(404, "404 page not found");
        t.stop().await;
    }
}

backends! {
    async fn tsuru_headers_on_every_response(b) {
        let t = TestServer::start(b).await;
        for r in [t.req("GET", "/healthcheck").send().await, t.req("GET", "/nope").send().await] {
            assert_eq!(r.header("supported-tsuru"), "1.0.1");
            assert_eq!(r.header("supported-crane"), "1.0.0");
            assert_eq!(r.header("supported-tsuru-admin"), "1.0.0");
        }
        t.stop().await;
    }
}

backends! {
    async fn authorization_header_forms(b) {
        let t = TestServer::start(b).await;
        let token = t.admin_token.clone();
        for form in [format!("bearer {token}"), format!("Bearer {token}"), format!("token {token}"), token.clone()] {
            t.req("GET", "/1.0/users/info").authorization(&form).send().await.expect_status(200);
        }
        // Three words, an unknown token, or none: unauthenticated.
        for form in [format!("a b {token}"), "bearer 0123".to_string()] {
            let r = t.req("GET", "/1.0/users/info").authorization(&form).send().await;
            r.expect_error(401, "You must provide a valid Authorization header");
            assert_eq!(r.header("www-authenticate"), r#"Bearer realm="tsuru" scope="tsuru""#);
        }
        t.req("GET", "/1.0/users/info").send().await.expect_error(401, "You must provide a valid Authorization header");
        // An invalid token on a route without auth is simply ignored.
        t.req("GET", "/healthcheck").authorization("bearer nonsense").send().await.expect(200, "WORKING");
        t.stop().await;
    }
}

backends! {
    async fn health_info_and_index(b) {
        let t = TestServer::start(b).await;
        let r = t.req("GET", "/healthcheck").send().await;
        r.expect(200, "WORKING");
        t.req("GET", "/healthcheck/").send().await.expect(200, "WORKING");
        t.req("GET", "/1.0/healthcheck").send().await.expect(200, "WORKING");
        let r = t.req("GET", "/healthcheck?check=all").send().await;
        r.expect_status(200);
        assert!(r.body.starts_with("database: WORKING ("), "{}", r.body);
        assert!(r.body.contains("\nauth-scheme: WORKING ("), "{}", r.body);
        let r = t.req("GET", "/healthcheck?check=database&check=bogus").send().await;
        r.expect_status(500);
        assert!(r.body.contains("bogus: fail - unknown checker"), "{}", r.body);

        t.req("GET", "/1.0/info").send().await.expect_status(401);
        let r = t.req("GET", "/1.0/info").admin().send().await;
        r.expect(200, "{\"version\":\"1.14.0-rc1\"}\n");
        assert_eq!(r.header("content-type"), "application/json");

        let r = t.req("GET", "/").send().await;
        r.expect_status(200);
        assert!(r.header("content-type").starts_with("text/html"));
        assert!(r.body.contains("tsuru target-add"));
        t.req("GET", "/1.0/").send().await.expect_status(200);
        t.stop().await;
    }
}

backends! {
    async fn malformed_and_oversized_bodies_are_4xx_and_change_nothing(b) {
        let t = TestServer::start(b).await;
        let r = t.req("POST", "/1.0/teams").admin().raw("application/json", "{\"name\": ").send().await;
        r.expect_status(400);
        assert!(r.body.starts_with("unable to parse as json: \"{\\\"name\\\": \" - "), "{}", r.body);
        t.req("POST", "/1.0/teams").admin().raw("application/x-www-form-urlencoded", "name=ok&x=%zz")
            .send().await.expect_error(400, "unable to decode form: invalid URL escape \"%zz\"");
        // Past the 32 MiB default limit: refused from the announced length,
        // before the body is read (a raw socket, so the client is not still
        // uploading when the answer comes).
        let answer = raw_exchange(&t, &format!(
            "POST /1.0/teams HTTP/1.1\r\nHost: torii\r\nAuthorization: bearer {}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\nname=big",
            t.admin_token, 33 << 20)).await;
        assert!(answer.starts_with("HTTP/1.1 413 "), "{answer}");
        assert!(answer.ends_with("\r\n\r\nrequest body too large\n"), "{answer}");
        t.req("GET", "/1.0/teams").admin().send().await.expect(204, "");
        // JSON bodies work, with case-insensitive struct fields.
        t.req("POST", "/1.0/teams").admin().json(serde_json::json!({"Name": "viajson"})).send().await.expect_status(201);
        t.req("GET", "/1.4/teams/viajson").admin().send().await.expect_status(200);
        t.stop().await;
    }
}

/// Writes `request` on a fresh connection and reads the answer until the
/// server closes or the response's Content-Length is reached.
async fn raw_exchange(t: &TestServer, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = t.base.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let read = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut chunk)).await;
        match read {
            Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
        let text = String::from_utf8_lossy(&buf);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ").map(|v| v.trim().parse::<usize>().unwrap_or(0)));
            if len.is_some_and(|len| body.len() >= len) {
                break;
            }
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}
