//! SAML single sign-on through the built-in `auth-saml` plugin, against a
//! real identity provider: pysaml2 (with xmlsec1) running
//! `tests/saml/idp.py` on loopback. The test plays the user's browser and
//! tsuru's client: scheme info, the IdP's login, the callback, the login
//! poll, then what the session may do through the roles of its groups.
//! Without pysaml2 or xmlsec1 it says so and passes, unless
//! `TORII_TEST_REQUIRE_SERVICES=1` (as in CI).

use crate::services::{Provider, python_has};
use crate::support::{ADMIN, ADMIN_PASSWORD, Backend, Options, TestServer, backends};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A torii on `one`'s database whose scheme is SAML with `extra` config
/// lines (the IdP's metadata from its URL unless `extra` gives it).
async fn saml_server(b: Backend, one: &TestServer, idp: &Provider, keys: &std::path::Path, extra: &str) -> (TestServer, String) {
    let port = free_port();
    let acs = format!("http://127.0.0.1:{port}/1.0/auth/saml");
    let mut o = Options::new(b);
    o.join(one);
    o.api_listen = format!("127.0.0.1:{port}");
    o.auth_toml = "scheme = \"saml\"\n".into();
    o.extra_toml = format!(
        "[[plugin]]\nname = \"saml\"\nkind = \"auth-scheme\"\nbuiltin = \"auth-saml\"\ncapabilities = [\"log\", \"kv\", \"http\"]\n\
         [plugin.config]\nsp_entity_id = \"http://127.0.0.1:{port}/sp\"\nacs_url = {acs:?}\n{}\n\
         sp_key_file = {:?}\nsp_cert_file = {:?}\ncreate_users = true\nclock_skew_secs = 5\n{extra}\n\
         [plugin.outbound]\nallow = [\"http://127.0.0.1:*\"]\ntimeout_ms = 5000\n",
        if extra.contains("idp_metadata") { String::new() } else { format!("idp_metadata_url = \"{}/metadata\"", idp.url()) },
        keys.join("sp.key").display().to_string(),
        keys.join("sp.crt").display().to_string(),
    );
    let t = TestServer::start_with(o).await;
    // The IdP learns who we are from our own metadata.
    let metadata = t.req("GET", "/1.0/auth/saml").send().await;
    assert_eq!(metadata.status, 200, "{}", metadata.body);
    assert!(metadata.body.contains(&format!("Location=\"{acs}\"")), "{}", metadata.body);
    let r = reqwest::Client::new().post(format!("{}/_test/sp-metadata", idp.url())).body(metadata.body.clone()).send().await.unwrap();
    assert!(r.status().is_success(), "sp metadata refused: {}", r.text().await.unwrap());
    (t, acs)
}

/// What one trip through the IdP gave the browser.
struct Trip {
    request_id: String,
    response: String,
    action: String,
    /// The IdP URL the browser was sent to.
    url: String,
}

fn attribute<'a>(html: &'a str, name: &str) -> &'a str {
    let at = html.find(&format!("name=\"{name}\"")).unwrap_or_else(|| panic!("no {name} in {html}"));
    let value = &html[at..];
    let start = value.find("value=\"").unwrap() + 7;
    &value[start..start + value[start..].find('"').unwrap()]
}

/// Starts a login at torii and has the IdP answer it with `options`.
async fn trip(t: &TestServer, idp: &Provider, options: Value) -> Trip {
    let scheme = t.req("GET", "/1.0/auth/scheme").send().await.json();
    assert_eq!(scheme["name"], "saml");
    let data = &scheme["data"];
    assert_eq!(data["request_timeout"], "180");
    let url = data["url"].as_str().unwrap();
    assert!(url.starts_with(&format!("{}/sso?SAMLRequest=", idp.url())), "{url}");
    idp.post("/_test/next-login", options).await;
    let page = reqwest::get(url).await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    let action = html.split("action=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
    Trip {
        request_id: data["request_id"].as_str().unwrap().to_string(),
        response: attribute(&html, "SAMLResponse").to_string(),
        action,
        url: url.to_string(),
    }
}

/// Posts a SAMLResponse to torii's callback; answers the page.
async fn post_back(t: &TestServer, response: &str) -> String {
    let r = t.req("POST", "/1.0/auth/saml").form(&[("SAMLResponse", response)]).send().await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body.clone()
}

async fn poll(t: &TestServer, request_id: &str) -> crate::support::Response {
    t.req("POST", "/1.0/auth/login").form(&[("request_id", request_id)]).send().await
}

/// The page says the login failed, with `reason`; the request gives no session.
async fn refused(t: &TestServer, trip: &Trip, response: &str, reason: &str) {
    let page = post_back(t, response).await;
    let text = page.replace("&quot;", "\"").replace("&#39;", "'").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&");
    assert!(page.contains("<h1>Login Failed!</h1>") && text.contains(reason), "wanted {reason:?}, got {page}");
    poll(t, &trip.request_id).await.expect_error(400, "Waiting credentials from IDP");
}

fn xml_of(response: &str) -> String {
    String::from_utf8(STANDARD.decode(response).unwrap()).unwrap()
}

fn encode(xml: &str) -> String {
    STANDARD.encode(xml)
}

/// The assertion element of a response, as written.
fn assertion_of(xml: &str) -> &str {
    let start = xml.find("<saml:Assertion").unwrap();
    let end = xml.find("</saml:Assertion>").unwrap() + "</saml:Assertion>".len();
    &xml[start..end]
}

fn alice_logs_in() -> Value {
    json!({"user": "alice", "sign_response": false, "sign_assertion": true})
}

backends! {
    async fn saml_logins_through_a_real_idp_grant_the_roles_of_their_groups(b) {
        if !python_has(&["saml2", "cryptography"]) {
            return;
        }
        assert!(std::process::Command::new("xmlsec1").arg("--version").output().is_ok(), "pysaml2 is there but xmlsec1 is not");
        let keys = tempfile::TempDir::new().unwrap();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/saml/make_sp_keys.py");
        let made = std::process::Command::new("python3").env("PYTHONWARNINGS", "ignore").arg(script).arg(keys.path()).output().unwrap();
        assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
        let idp_dir = tempfile::TempDir::new().unwrap();
        let idp = Provider::start_script("saml/idp.py", &["--dir", idp_dir.path().to_str().unwrap()]);
        idp.post("/_test/users", json!({
            "alice": {"mail": ["alice@example.com"], "groups": ["devs", "ops"]},
            "bob": {"mail": ["bob@example.com"]},
            "eve": {"mail": ["eve@bad@example.com"]},
            "mallory": {"mail": ["alice@example.com.evil.com"]},
        })).await;

        // A native torii: users, a team's app, a role bound to the group `devs`.
        let native = TestServer::start(b).await;
        native.team("t1").await;
        native.req("POST", "/1.0/pools").admin().form(&[("name", "main"), ("default", "true")]).send().await.expect(201, "");
        native.req("POST", "/1.0/apps").admin().form(&[("name", "web"), ("teamOwner", "t1")]).send().await.expect_status(201);
        native.user("alice@example.com").await;
        native.role("dev", "team", &["app.read"]).await;
        native.req("POST", "/1.9/roles/dev/group").admin().form(&[("group_name", "devs"), ("context", "t1")]).send().await.expect(200, "");
        native.req("GET", "/1.0/auth/saml").send().await.expect_error(400, "This URL is only supported with saml enabled");
        native.req("POST", "/1.0/auth/saml").form(&[("SAMLResponse", "x")]).send().await.expect_error(400, "This URL is only supported with saml enabled");

        // The same database behind a SAML torii.
        let (t, acs) = saml_server(b, &native, &idp, keys.path(), "").await;
        t.req("POST", "/1.0/auth/saml").form(&[("other", "x")]).send().await.expect_error(400, "Empty SAML Response");
        poll(&t, "").await.expect_error(400, "You must provide RequestID to login");
        poll(&t, "_nope").await.expect_error(400, "request not found or expired");

        // alice: an existing user; her groups come with the login.
        let first = trip(&t, &idp, alice_logs_in()).await;
        assert_eq!(first.action, acs);
        let last = idp.get("/_test/last").await;
        assert_eq!((&last["request_signed"], &last["request_signature_valid"]), (&json!(true), &json!(true)));
        // What travels through the browser (the AuthnRequest's ID) is not
        // what claims the session: that needs the client's own request_id.
        let authn_id = last["request_id"].as_str().unwrap().to_string();
        assert!(first.request_id.starts_with(&format!("{authn_id}.")), "{} / {authn_id}", first.request_id);
        poll(&t, &first.request_id).await.expect_error(400, "Waiting credentials from IDP");
        let page = post_back(&t, &first.response).await;
        assert!(page.contains("<h1>Login Successful!</h1>"), "{page}");
        poll(&t, &authn_id).await.expect_error(400, "request not found or expired");
        poll(&t, &format!("{authn_id}.{}", "0".repeat(32))).await.expect_error(400, "request not found or expired");
        let token = poll(&t, &first.request_id).await.json()["token"].as_str().unwrap().to_string();
        poll(&t, &first.request_id).await.expect_error(400, "request not found or expired");
        let info = t.req("GET", "/1.0/users/info").token(&token).send().await.json();
        assert_eq!(info["Email"], "alice@example.com");
        assert_eq!(info["Groups"], json!(["devs", "ops"]));
        assert!(info["Roles"].as_array().unwrap().contains(&json!({"Name": "dev", "ContextType": "team", "ContextValue": "t1", "Group": "devs"})), "{info}");
        t.req("GET", "/1.0/apps/web").token(&token).send().await.expect_status(200);

        // bob: unknown to torii, created at his first login; no group, no app.
        let bob = trip(&t, &idp, json!({"user": "bob"})).await;
        assert!(post_back(&t, &bob.response).await.contains("Login Successful!"));
        let bob_token = poll(&t, &bob.request_id).await.json()["token"].as_str().unwrap().to_string();
        let bob_info = t.req("GET", "/1.0/users/info").token(&bob_token).send().await.json();
        assert_eq!((&bob_info["Email"], &bob_info["Groups"]), (&json!("bob@example.com"), &Value::Null));
        t.req("GET", "/1.0/apps/web").token(&bob_token).send().await.expect_error(403, "You don't have permission to do this action");

        // A second answer to an answered request is refused; the first stands.
        let twice = trip(&t, &idp, json!({"user": "bob"})).await;
        assert!(post_back(&t, &twice.response).await.contains("Login Successful!"));
        let second = attribute(&reqwest::get(&twice.url).await.unwrap().text().await.unwrap(), "SAMLResponse").to_string();
        assert!(post_back(&t, &second).await.contains("this login request was already answered"));
        let again = t.req("GET", "/1.0/users/info").token(poll(&t, &twice.request_id).await.json()["token"].as_str().unwrap()).send().await;
        assert_eq!(again.json()["Email"], "bob@example.com");

        // CBC, which a changed ciphertext still decrypts, only inside a
        // signed response; GCM alone is fine.
        let cbc = trip(&t, &idp, json!({"user": "alice", "sign_response": false, "encrypt_assertion": true, "block_cipher": "aes128-cbc"})).await;
        refused(&t, &cbc, &cbc.response, "accepted only in a signed response").await;
        let gcm = trip(&t, &idp, json!({"user": "alice", "sign_response": false, "encrypt_assertion": true, "block_cipher": "aes256-gcm"})).await;
        assert!(post_back(&t, &gcm.response).await.contains("Login Successful!"));
        poll(&t, &gcm.request_id).await.expect_status(200);
        // Encrypted assertions, either cipher.
        for cipher in ["aes128-cbc", "aes256-gcm"] {
            let sealed = trip(&t, &idp, json!({"user": "alice", "encrypt_assertion": true, "block_cipher": cipher})).await;
            assert!(xml_of(&sealed.response).contains("EncryptedAssertion"));
            assert!(post_back(&t, &sealed.response).await.contains("Login Successful!"), "{cipher}");
            poll(&t, &sealed.request_id).await.expect_status(200);
        }

        // Refused, each with its reason, and no session.
        let replay = trip(&t, &idp, alice_logs_in()).await;
        refused(&t, &replay, &first.response, "this assertion was already used").await;
        let tampered = xml_of(&replay.response).replace("alice@example.com", "bob@example.com");
        refused(&t, &replay, &encode(&tampered), "was changed after it was signed").await;
        let other = trip(&t, &idp, json!({"user": "alice", "audience": "http://elsewhere/sp"})).await;
        refused(&t, &other, &other.response, "is meant for \"http://elsewhere/sp\"").await;
        let old = trip(&t, &idp, json!({"user": "alice", "not_before": -900, "not_on_or_after": -600})).await;
        refused(&t, &old, &old.response, "the assertion has expired").await;
        let early = trip(&t, &idp, json!({"user": "alice", "not_before": 600})).await;
        refused(&t, &early, &early.response, "the assertion is not valid yet").await;
        let stray = trip(&t, &idp, json!({"user": "alice", "in_response_to": "_0123456789abcdef"})).await;
        refused(&t, &stray, &stray.response, "request not found or expired").await;
        let impostor = trip(&t, &idp, json!({"user": "alice", "impostor": true})).await;
        refused(&t, &impostor, &impostor.response, "does not verify with the identity provider's certificate").await;
        let sha1 = trip(&t, &idp, json!({"user": "alice", "sign_alg": "sha1"})).await;
        refused(&t, &sha1, &sha1.response, "signed with SHA-1").await;
        let unsigned = trip(&t, &idp, json!({"user": "alice", "sign_response": false, "sign_assertion": false})).await;
        refused(&t, &unsigned, &unsigned.response, "neither the response nor the assertion is signed").await;
        let elsewhere = trip(&t, &idp, json!({"user": "alice", "destination": "http://127.0.0.1:9/1.0/auth/saml"})).await;
        refused(&t, &elsewhere, &elsewhere.response, "the response is addressed to \"http://127.0.0.1:9/1.0/auth/saml\", not to this service provider").await;
        let bad_email = trip(&t, &idp, json!({"user": "eve"})).await;
        assert!(post_back(&t, &bad_email.response).await.contains("attribute user identity contains invalid character"));
        poll(&t, &bad_email.request_id).await.expect_error(401, "attribute user identity contains invalid character");

        // Signature wrapping: the signed assertion kept, a forged one read.
        let wrap = trip(&t, &idp, alice_logs_in()).await;
        let xml = xml_of(&wrap.response);
        let signed = assertion_of(&xml);
        let id = signed.split("ID=\"").nth(1).unwrap().split('"').next().unwrap();
        let forged = signed.replace("alice@example.com", "mallory@example.com");
        // 1. a second, unsigned assertion beside the signed one;
        let beside = xml.replace(signed, &format!("{forged}{signed}").replacen(&format!("ID=\"{id}\""), "ID=\"_forged\"", 1));
        refused(&t, &wrap, &encode(&beside), "exactly one assertion").await;
        // 2. the forged one carries the signed one inside, and its signature;
        let inside = forged.replacen(&format!("ID=\"{id}\""), "ID=\"_forged\"", 1).replace("</saml:Assertion>", "") + signed + "</saml:Assertion>";
        refused(&t, &wrap, &encode(&xml.replace(signed, &inside)), "not the Assertion itself").await;
        // 3. the same, both with the signed ID.
        let same_id = forged.replace("</saml:Assertion>", "") + signed + "</saml:Assertion>";
        refused(&t, &wrap, &encode(&xml.replace(signed, &same_id)), "appears twice").await;
        // 4. a comment cuts a signed value short (c14n drops comments): the
        // whole value is still what is read.
        let cut = trip(&t, &idp, json!({"user": "mallory", "sign_response": false, "sign_assertion": true})).await;
        let cut_xml = xml_of(&cut.response).replace(">alice@example.com.evil.com<", ">alice@example.com<!---->.evil.com<");
        assert!(post_back(&t, &encode(&cut_xml)).await.contains("Login Successful!"));
        let cut_token = poll(&t, &cut.request_id).await.json()["token"].as_str().unwrap().to_string();
        assert_eq!(t.req("GET", "/1.0/users/info").token(&cut_token).send().await.json()["Email"], "alice@example.com.evil.com");
        // The honest answer still works once the forgeries are refused.
        assert!(post_back(&t, &wrap.response).await.contains("Login Successful!"));
        poll(&t, &wrap.request_id).await.expect_status(200);

        // Groups are re-read at each login: leaving `devs` at the IdP takes
        // the role away, from older sessions too.
        idp.post("/_test/users", json!({"alice": {"mail": ["alice@example.com"], "groups": ["ops"]}})).await;
        let moved = trip(&t, &idp, alice_logs_in()).await;
        assert!(post_back(&t, &moved.response).await.contains("Login Successful!"));
        let moved_token = poll(&t, &moved.request_id).await.json()["token"].as_str().unwrap().to_string();
        assert_eq!(t.req("GET", "/1.0/users/info").token(&moved_token).send().await.json()["Groups"], json!(["ops"]));
        for session in [&moved_token, &token] {
            t.req("GET", "/1.0/apps/web").token(session).send().await.expect_error(403, "You don't have permission to do this action");
        }
        drop(t);

        // A torii that wants the response itself signed, and reads the IdP's
        // metadata from a file.
        let metadata = reqwest::get(format!("{}/metadata", idp.url())).await.unwrap().text().await.unwrap();
        std::fs::write(keys.path().join("idp.xml"), metadata).unwrap();
        let strict_config = format!("require_signed_response = true\nidp_metadata_file = {:?}", keys.path().join("idp.xml").display().to_string());
        let (strict, _) = saml_server(b, &native, &idp, keys.path(), &strict_config).await;
        let only_assertion = trip(&strict, &idp, alice_logs_in()).await;
        refused(&strict, &only_assertion, &only_assertion.response, "the response is not signed").await;
        let both = trip(&strict, &idp, json!({"user": "alice"})).await;
        assert!(post_back(&strict, &both.response).await.contains("Login Successful!"));
        poll(&strict, &both.request_id).await.expect_status(200);
        drop(strict);

        // Back to native: the same users log in with their passwords.
        let mut o = Options::new(b);
        o.join(&native);
        let back = TestServer::start_with(o).await;
        back.login(ADMIN, ADMIN_PASSWORD).await;
        back.login("alice@example.com", "123456").await;
        assert_eq!(back.req("GET", "/1.0/auth/scheme").send().await.json(), json!({"name": "native", "data": null}));
    }
}
