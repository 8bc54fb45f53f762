//! torii's SAML 2.0 Web SSO service provider, an `auth-scheme` plugin.
//!
//! tsuru's login flow: `GET /auth/scheme` starts a login (an AuthnRequest,
//! answerable for `request_timeout_secs`; see [`requests`]) and hands the
//! client its `request_id`, the request and the IdP URL (HTTP-Redirect
//! binding, signed with the SP key when one is configured). The user's
//! browser takes the request to the IdP, which posts its Response to
//! `POST /1.0/auth/saml` (HTTP-POST binding): [`callback`](Saml::callback)
//! verifies it and records the login done. Meanwhile the client polls
//! `POST /auth/login` with `request_id` until it is done, and gets a session.
//!
//! Verified: XML signatures (exclusive c14n; RSA-SHA256/512; SHA-1 only
//! with `allow_sha1`) on the very Response/Assertion that is read, the IdP
//! certificates from its metadata, Destination, Recipient, Audience, the
//! validity window with `clock_skew_secs`, InResponseTo against requests
//! this plugin made, assertion ids used once, encrypted assertions.

mod dsig;
mod requests;
mod response;
mod sp;
mod time;
mod xml;
mod xmlenc;

use std::cell::{Cell, RefCell};

use serde::{Deserialize, Serialize};
use torii_plugin_sdk::auth::{AuthError, AuthScheme, Login, Params, SchemeInfo};
use torii_plugin_sdk::{export_auth_scheme, http, kv, log, validate};

fn default_email_attribute() -> String {
    "mail".into()
}
fn default_groups_attribute() -> String {
    "groups".into()
}
fn default_skew() -> u64 {
    60
}
fn default_timeout() -> u64 {
    180
}
fn default_true() -> bool {
    true
}
fn default_refresh() -> u64 {
    3600
}

/// The plugin entry's `config` table. `*_file` keys are read by the host
/// and arrive here without the suffix.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Our entity id, as the IdP knows us.
    sp_entity_id: String,
    /// Where the IdP posts its answer: torii's `/1.0/auth/saml`, as users' browsers reach it.
    acs_url: String,
    /// PEM RSA key (PKCS#8 or PKCS#1) and its certificate: sign requests, decrypt assertions.
    sp_key: Option<String>,
    sp_cert: Option<String>,
    /// Sign AuthnRequests (default: when a key is configured).
    sign_requests: Option<bool>,
    /// The IdP's metadata, inline, or fetched at start from this URL
    /// (capability `http`; https, or http to a loopback host).
    idp_metadata: Option<String>,
    idp_metadata_url: Option<String>,
    /// How long fetched metadata is used before it is fetched again (a
    /// fetch that fails keeps the last one).
    #[serde(default = "default_refresh")]
    idp_metadata_refresh_secs: u64,
    /// Which IdP of a metadata aggregate.
    idp_entity_id: Option<String>,
    #[serde(default)]
    require_signed_response: bool,
    #[serde(default)]
    require_signed_assertion: bool,
    #[serde(default)]
    allow_sha1: bool,
    #[serde(default = "default_email_attribute")]
    email_attribute: String,
    #[serde(default = "default_groups_attribute")]
    groups_attribute: String,
    #[serde(default = "default_skew")]
    clock_skew_secs: u64,
    #[serde(default = "default_timeout")]
    request_timeout_secs: u64,
    /// Create users torii does not know at their first login.
    #[serde(default)]
    create_users: bool,
    /// Ask the IdP to authenticate the user again (ForceAuthn) rather than
    /// answer silently from a session: a login link someone else started
    /// then cannot log a user in without them noticing.
    #[serde(default = "default_true")]
    force_authn: bool,
}

/// An assertion already used, kept at `assertion/<id>` until it expires.
#[derive(Serialize, Deserialize)]
struct Used {
    expires: i64,
}

struct Saml {
    config: Config,
    idp: sp::Idp,
    keys: Option<sp::SpKeys>,
    sign_requests: bool,
    metadata: String,
    key: RefCell<requests::Key>,
    /// When expired records were last swept.
    swept_at: Cell<i64>,
}

const SWEEP_EVERY: i64 = 30;

fn internal(e: String) -> AuthError {
    AuthError::Internal(e)
}

/// Randomness for RSA blinding, from the host.
pub(crate) struct Random;

impl rand_core::RngCore for Random {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }
    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        getrandom::fill(dest).expect("the host gives randomness");
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl rand_core::CryptoRng for Random {}

impl Saml {
    /// Drops expired login records and used assertions, at most every
    /// [`SWEEP_EVERY`] seconds. Both are written only for answers the IdP
    /// signed, so there are as many as real logins.
    fn sweep(&self, now: i64) -> Result<(), AuthError> {
        if now - self.swept_at.get() < SWEEP_EVERY {
            return Ok(());
        }
        for key in kv::list_keys("done/").map_err(internal)? {
            if kv::get_json::<requests::Done>(&key).map_err(internal)?.is_none_or(|d| d.expires <= now) {
                kv::delete(&key).map_err(internal)?;
            }
        }
        for key in kv::list_keys("assertion/").map_err(internal)? {
            if kv::get_json::<Used>(&key).map_err(internal)?.is_none_or(|u| u.expires <= now) {
                kv::delete(&key).map_err(internal)?;
            }
        }
        self.swept_at.set(now);
        Ok(())
    }

    /// `check` under the MAC key; when it fails, once more under the key
    /// as stored (two instances that first started together may each have
    /// made one; the stored one won).
    fn keyed<T>(&self, check: impl Fn(&requests::Key) -> Option<T>) -> Option<T> {
        if let Some(found) = check(&self.key.borrow()) {
            return Some(found);
        }
        let stored = requests::Key::load().ok()?;
        let found = check(&stored);
        *self.key.borrow_mut() = stored;
        found
    }

    fn expect(&self, now: i64) -> response::Expect<'_> {
        response::Expect {
            idp_entity_id: &self.idp.entity_id,
            idp_keys: &self.idp.keys,
            sp_entity_id: &self.config.sp_entity_id,
            acs_url: &self.config.acs_url,
            sp_key: self.keys.as_ref().map(|k| &k.key),
            require_signed_response: self.config.require_signed_response,
            require_signed_assertion: self.config.require_signed_assertion,
            allow_sha1: self.config.allow_sha1,
            skew: self.config.clock_skew_secs as i64,
            email_attribute: &self.config.email_attribute,
            groups_attribute: &self.config.groups_attribute,
            now,
        }
    }

    /// The user's email: the identity as it is, or (tsuru's rule) a bare
    /// user name at the IdP's host.
    fn email_of(&self, identity: &str) -> Result<String, String> {
        if validate::is_email(identity) {
            return Ok(identity.to_string());
        }
        if identity.contains('@') {
            return Err("attribute user identity contains invalid character".into());
        }
        let host = self.idp.sso_url.split("://").nth(1).unwrap_or("").split(['/', ':', '?']).next().unwrap_or("");
        let email = format!("{identity}@{host}");
        if validate::is_email(&email) { Ok(email) } else { Err(format!("could not make a valid email of {identity:?}")) }
    }

    /// Verifies the IdP's answer; on success the request it answers is done.
    fn verify(&self, encoded: &str, now: i64) -> Result<(), AuthError> {
        use base64::Engine;
        let refuse = |m: String| AuthError::Unauthorized(m);
        let compact: String = encoded.chars().filter(|c| !c.is_whitespace()).collect();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(compact)
            .map_err(|e| refuse(format!("SAMLResponse parse error: not base64: {e}")))?;
        if bytes.len() > xml::MAX_DOCUMENT {
            return Err(refuse(format!("SAMLResponse parse error: larger than {} bytes", xml::MAX_DOCUMENT)));
        }
        let text = String::from_utf8(bytes).map_err(|_| refuse("SAMLResponse parse error: not UTF-8".into()))?;
        let doc = xml::parse(&text).map_err(|e| refuse(format!("SAMLResponse parse error: {e}")))?;
        let proven = response::check(&doc, &self.expect(now)).map_err(refuse)?;

        let used = format!("assertion/{}", proven.assertion_id);
        if kv::get(&used).map_err(internal)?.is_some() {
            return Err(refuse("this assertion was already used".into()));
        }
        let expires = match self.keyed(|k| k.authn_expiry(&proven.request_id)) {
            Some(expires) if expires > now => expires,
            _ => return Err(refuse("request not found or expired".into())),
        };
        let key = requests::done_key(&proven.request_id);
        if kv::get(&key).map_err(internal)?.is_some() {
            return Err(refuse("this login request was already answered".into()));
        }
        kv::set_json(&used, &Used { expires: proven.replayable_until.min(now + 86_400 * 7) }).map_err(internal)?;
        let mut done = requests::Done { expires, email: None, groups: Vec::new(), refused: None, consumed: false };
        match self.email_of(&proven.identity) {
            Ok(email) => {
                log::info(&format!("saml login of {email} for request {} verified", proven.request_id));
                done.email = Some(email);
                done.groups = proven.groups;
                kv::set_json(&key, &done).map_err(internal)
            }
            Err(reason) => {
                done.refused = Some(reason.clone());
                kv::set_json(&key, &done).map_err(internal)?;
                Err(AuthError::Forbidden(reason))
            }
        }
    }
}

/// The IdP's metadata from `url`: fetched, or the copy kept in `kv` while
/// it is younger than `refresh` seconds (an instance that starts again
/// does not fetch again), or when a fetch fails.
fn idp_metadata_from(url: &str, refresh: i64) -> Result<String, String> {
    #[derive(Serialize, Deserialize)]
    struct Kept {
        url: String,
        fetched: i64,
        text: String,
    }
    let loopback = ["http://127.0.0.1:", "http://127.0.0.1/", "http://localhost:", "http://localhost/", "http://[::1]"];
    if !url.starts_with("https://") && !loopback.iter().any(|l| url.starts_with(l)) {
        return Err(format!("auth-saml config: idp_metadata_url {url:?} must be https (its certificates are trusted as they come)"));
    }
    let now = time::now();
    let kept = kv::get_json::<Kept>("idp-metadata")?.filter(|k| k.url == url);
    if let Some(k) = &kept
        && now - k.fetched < refresh
    {
        return Ok(k.text.clone());
    }
    let fetched = http::get(url).map_err(|e| e.0).and_then(|answer| match answer.status {
        200 => Ok(answer.text()),
        status => Err(format!("it answered {status}")),
    });
    match (fetched, kept) {
        (Ok(text), _) => {
            kv::set_json("idp-metadata", &Kept { url: url.to_string(), fetched: now, text: text.clone() })?;
            Ok(text)
        }
        (Err(e), Some(k)) => {
            log::warn(&format!("cannot fetch the idp metadata from {url} ({e}); using the copy fetched at {}", time::format(k.fetched)));
            Ok(k.text)
        }
        (Err(e), None) => Err(format!("auth-saml: cannot fetch the idp metadata from {url}: {e}")),
    }
}

impl AuthScheme for Saml {
    fn init(config: serde_json::Value) -> Result<Self, String> {
        let config: Config = serde_json::from_value(config).map_err(|e| format!("auth-saml config: {e}"))?;
        let metadata_text = match (&config.idp_metadata, &config.idp_metadata_url) {
            (Some(text), None) => text.clone(),
            (None, Some(url)) => idp_metadata_from(url, config.idp_metadata_refresh_secs as i64)?,
            _ => return Err("auth-saml config: give exactly one of idp_metadata, idp_metadata_file or idp_metadata_url".into()),
        };
        let idp = sp::read_idp_metadata(&metadata_text, config.idp_entity_id.as_deref())?;
        let keys = match (&config.sp_key, &config.sp_cert) {
            (Some(key), Some(cert)) => Some(sp::read_sp_keys(key, cert)?),
            (None, None) => None,
            _ => return Err("auth-saml config: sp_key and sp_cert go together".into()),
        };
        let sign_requests = config.sign_requests.unwrap_or(keys.is_some());
        if sign_requests && keys.is_none() {
            return Err("auth-saml config: sign_requests needs sp_key and sp_cert".into());
        }
        for (name, url) in [("acs_url", &config.acs_url)] {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(format!("auth-saml config: {name} must be an http(s) URL"));
            }
        }
        if config.sp_entity_id.is_empty() || config.request_timeout_secs == 0 {
            return Err("auth-saml config: sp_entity_id and request_timeout_secs must be set".into());
        }
        let metadata = sp::metadata(&config.sp_entity_id, &config.acs_url, keys.as_ref(), sign_requests, config.require_signed_assertion);
        let key = requests::Key::load().map_err(|e| format!("auth-saml: {e}"))?;
        Ok(Saml { config, idp, keys, sign_requests, metadata, key: RefCell::new(key), swept_at: Cell::new(i64::MIN / 2) })
    }

    fn info(&self) -> Result<SchemeInfo, AuthError> {
        let now = time::now();
        let timeout = self.config.request_timeout_secs as i64;
        let (id, request_id) = self.key.borrow().start(now + timeout).map_err(internal)?;
        let key = if self.sign_requests { self.keys.as_ref().map(|k| &k.key) } else { None };
        let request = sp::authn_request(&id, now, &self.config.sp_entity_id, &self.config.acs_url, &self.idp, self.config.force_authn, key)
            .map_err(internal)?;
        let data = serde_json::json!({
            "request_id": request_id,
            "saml_request": request.encoded,
            "url": request.url,
            "request_timeout": timeout.to_string(),
        });
        Ok(SchemeInfo { name: "saml".into(), data: Some(data.to_string()) })
    }

    fn authenticate(&self, params: &Params) -> Result<Login, AuthError> {
        let Some(request_id) = params.get("request_id").filter(|id| !id.is_empty()) else {
            return Err(AuthError::InvalidInput("You must provide RequestID to login".into()));
        };
        let now = time::now();
        let gone = || AuthError::InvalidInput("request not found or expired".into());
        let id = self.keyed(|k| k.claimed(request_id).map(str::to_string)).ok_or_else(gone)?;
        if self.keyed(|k| k.authn_expiry(&id)).is_none_or(|expires| expires <= now) {
            return Err(gone());
        }
        let key = requests::done_key(&id);
        let Some(done) = kv::get_json::<requests::Done>(&key).map_err(internal)? else {
            return Err(AuthError::InvalidInput("Waiting credentials from IDP".into()));
        };
        if done.consumed {
            return Err(gone());
        }
        // A login gives one session; the record stays, consumed, so a late
        // second answer to the same request is refused.
        let consumed = requests::Done { expires: done.expires, email: None, groups: Vec::new(), refused: None, consumed: true };
        kv::set_json(&key, &consumed).map_err(internal)?;
        if let Some(reason) = done.refused {
            return Err(AuthError::Unauthorized(reason));
        }
        let email = done.email.ok_or_else(gone)?;
        Ok(Login { email, groups: Some(done.groups), create: self.config.create_users })
    }

    fn callback(&self, params: &Params) -> Result<(), AuthError> {
        let Some(encoded) = params.get("SAMLResponse").filter(|s| !s.is_empty()) else {
            return Err(AuthError::InvalidInput("Empty SAML Response".into()));
        };
        let now = time::now();
        self.sweep(now)?;
        let result = self.verify(encoded, now);
        if let Err(e) = &result {
            log::warn(&format!("saml callback refused: {e:?}"));
        }
        result
    }

    fn metadata(&self) -> Result<String, AuthError> {
        Ok(self.metadata.clone())
    }

    fn manages_credentials(&self) -> bool {
        false
    }

    /// Users are created with no password; the IdP vouches for them.
    fn create_user(&self, _email: &str, _password: &str) -> Result<(), AuthError> {
        Ok(())
    }
}

export_auth_scheme!(Saml);
