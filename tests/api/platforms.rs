//! Platforms: records with versions, uploaded as multipart Dockerfiles.

use crate::support::{TestServer, backends};
use serde_json::{Value, json};

pub(crate) fn multipart(fields: &[(&str, &str)], dockerfile: Option<&str>) -> Vec<u8> {
    let mut body = String::new();
    for (k, v) in fields {
        body.push_str(&format!("--XBOUNDARY\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n"));
    }
    if let Some(d) = dockerfile {
        body.push_str(&format!(
            "--XBOUNDARY\r\nContent-Disposition: form-data; name=\"dockerfile_content\"; filename=\"Dockerfile\"\r\nContent-Type: application/octet-stream\r\n\r\n{d}\r\n"
        ));
    }
    body.push_str("--XBOUNDARY--\r\n");
    body.into_bytes()
}

const MP: &str = "multipart/form-data; boundary=XBOUNDARY";

fn stream(body: &str) -> (Vec<String>, Option<String>) {
    let mut messages = Vec::new();
    let mut error = None;
    for l in body.lines().filter(|l| !l.is_empty()) {
        let v: Value = serde_json::from_str(l).unwrap();
        match v.get("Error") {
            Some(e) => error = Some(e.as_str().unwrap().to_string()),
            None => messages.push(v["Message"].as_str().unwrap().to_string()),
        }
    }
    (messages, error)
}

backends! {
    async fn add_update_rollback_remove(b) {
        let t = TestServer::start(b).await;
        t.req("GET", "/1.0/platforms").admin().send().await.expect(204, "");
        t.req("POST", "/1.0/platforms").admin().raw(MP, multipart(&[("name", "Py")], Some("FROM busybox"))).send().await
            .expect_error(400, "Invalid platform name, should have at most 40 characters, containing only lower case letters, numbers or dashes, starting with a letter.");
        t.req("POST", "/1.0/platforms").admin().raw(MP, multipart(&[("name", "python")], None)).send().await.expect_status(400);
        t.req("POST", "/1.0/platforms").admin().raw(MP, multipart(&[("name", "python")], Some("  "))).send().await
            .expect_error(400, "Missing file content.");
        let r = t.req("POST", "/1.0/platforms").admin().raw(MP, multipart(&[("name", "python"), ("PY_VERSION", "3.12")], Some("FROM busybox\n"))).send().await;
        r.expect_status(200);
        let (messages, error) = stream(&r.body);
        assert_eq!(error, None);
        assert!(messages.last().unwrap().ends_with("Platform successfully added!\n"), "{messages:?}");
        t.req("GET", "/1.0/platforms").admin().send().await.expect(200, "[{\"Name\":\"python\",\"Disabled\":false}]\n");
        let info = t.req("GET", "/1.6/platforms/python").admin().send().await.json();
        assert_eq!(info, json!({"platform": {"Name": "python", "Disabled": false}, "images": ["torii/platform/python:v1"]}));
        t.req("GET", "/1.6/platforms/ruby").admin().send().await.expect_error(500, "Invalid platform");

        t.req("PUT", "/1.0/platforms/python").admin().raw(MP, multipart(&[], None)).send().await
            .expect_error(400, "either disabled or dockerfile must be provided");
        let r = t.req("PUT", "/1.0/platforms/python").admin().raw(MP, multipart(&[], Some("FROM busybox:2"))).send().await;
        assert_eq!(stream(&r.body).0.last().unwrap(), "Platform successfully updated!\n");
        assert_eq!(t.req("GET", "/1.6/platforms/python").admin().send().await.json()["images"], json!(["torii/platform/python:v1", "torii/platform/python:v2"]));
        t.req("POST", "/1.6/platforms/python/rollback").admin().form(&[("image", "x")]).send().await.expect_error(400, "invalid image version \"x\"");
        let r = t.req("POST", "/1.6/platforms/python/rollback").admin().form(&[("image", "torii/platform/python:v1")]).send().await;
        assert_eq!(stream(&r.body), (vec!["---- Rolling back platform \"python\" to version 1 ----\n".to_string(), "Platform successfully updated!\n".to_string()], None));
        let r = t.req("POST", "/1.6/platforms/python/rollback").admin().form(&[("image", "9")]).send().await;
        assert!(stream(&r.body).1.is_some(), "{}", r.body);

        // Apps use platforms; a disabled one is refused to plain users and hidden from them.
        t.team("t1").await;
        t.req("POST", "/1.0/pools").admin().form(&[("name", "main"), ("default", "true")]).send().await.expect(201, "");
        t.role("developer", "team", &["app"]).await;
        let dev = t.user("dev@example.com").await;
        t.assign("developer", "dev@example.com", "t1").await;
        t.req("POST", "/1.0/apps").token(&dev).form(&[("name", "web"), ("platform", "python")]).send().await.expect_status(201);
        assert_eq!(t.req("GET", "/1.0/apps/web").token(&dev).send().await.json()["platform"], "python");
        let r = t.req("PUT", "/1.0/platforms/python").admin().raw(MP, multipart(&[("disabled", "true")], None)).send().await;
        assert_eq!(stream(&r.body).1, None);
        t.req("GET", "/1.0/platforms").token(&dev).send().await.expect(204, "");
        t.req("GET", "/1.0/platforms").admin().send().await.expect(200, "[{\"Name\":\"python\",\"Disabled\":true}]\n");
        t.req("POST", "/1.0/apps").token(&dev).form(&[("name", "web2"), ("platform", "python")]).send().await.expect_error(400, "Invalid platform");
        t.req("POST", "/1.0/platforms").token(&dev).raw(MP, multipart(&[("name", "go")], Some("FROM x"))).send().await.expect_status(403);

        t.req("DELETE", "/1.0/platforms/python").admin().send().await
            .expect_error(500, "Platform has apps. You must remove them before remove the platform.");
        t.req("DELETE", "/1.0/apps/web").admin().send().await.expect_status(200);
        t.req("DELETE", "/1.0/platforms/python").admin().send().await.expect(200, "");
        t.req("DELETE", "/1.0/platforms/python").admin().send().await.expect_error(404, "Platform doesn't exist.");
        t.stop().await;
    }
}
