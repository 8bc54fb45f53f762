//! torii's SAML 2.0 Web SSO service provider, an `auth-scheme` plugin.
//!
//! tsuru's login flow: `GET /auth/scheme` starts a login (an AuthnRequest,
//! kept pending in `kv` for `request_timeout_secs`) and hands the client
//! its id, the request and the IdP URL (HTTP-Redirect binding, signed with
//! the SP key when one is configured). The user's browser takes the
//! request to the IdP, which posts its Response to `POST /1.0/auth/saml`
//! (HTTP-POST binding): [`callback`](Saml::callback) verifies it and marks
//! the pending request done. Meanwhile the client polls `POST /auth/login`
//! with `request_id` until the request is done, and gets a session.
//!
//! Verified: XML signatures (exclusive c14n; RSA-SHA256/512; SHA-1 only
//! with `allow_sha1`) on the very Response/Assertion that is read, the IdP
//! certificates from its metadata, Destination, Recipient, Audience, the
//! validity window with `clock_skew_secs`, InResponseTo against requests
//! this plugin made, assertion ids used once, encrypted assertions.

mod dsig;
mod response;
mod sp;
mod time;
mod xml;
mod xmlenc;

use std::cell::Cell;

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
fn default_max_pending() -> usize {
    10_000
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
    /// The IdP's metadata, inline, or fetched at start from this URL (capability `http`).
    idp_metadata: Option<String>,
    idp_metadata_url: Option<String>,
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
    /// The most logins waiting for the IdP at once.
    #[serde(default = "default_max_pending")]
    max_pending_requests: usize,
}

/// A login started by `info`, kept at `request/<id>`.
#[derive(Serialize, Deserialize)]
struct Pending {
    expires: i64,
    /// Set when the IdP's answer verified.
    email: Option<String>,
    #[serde(default)]
    groups: Vec<String>,
    /// Set when the IdP's answer was refused.
    #[serde(default)]
    refused: Option<String>,
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
    /// When expired records were last swept, and how many logins were pending then (plus those started since).
    swept_at: Cell<i64>,
    pending: Cell<usize>,
}

const SWEEP_EVERY: i64 = 30;

fn internal(e: String) -> AuthError {
    AuthError::Internal(e)
}

fn request_key(id: &str) -> String {
    format!("request/{id}")
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

/// A fresh request id: 128 random bits, an XML NCName.
fn new_id() -> Result<String, AuthError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| internal(format!("no randomness: {e}")))?;
    Ok(format!("_{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()))
}

impl Saml {
    /// Drops expired pending requests and used assertions, at most every
    /// [`SWEEP_EVERY`] seconds, and recounts the pending ones.
    fn sweep(&self, now: i64) -> Result<(), AuthError> {
        if now - self.swept_at.get() < SWEEP_EVERY {
            return Ok(());
        }
        let mut pending = 0;
        for key in kv::list_keys("request/").map_err(internal)? {
            match kv::get_json::<Pending>(&key).map_err(internal)? {
                Some(p) if p.expires > now => pending += 1,
                _ => kv::delete(&key).map_err(internal)?,
            }
        }
        for key in kv::list_keys("assertion/").map_err(internal)? {
            if kv::get_json::<Used>(&key).map_err(internal)?.is_none_or(|u| u.expires <= now) {
                kv::delete(&key).map_err(internal)?;
            }
        }
        self.swept_at.set(now);
        self.pending.set(pending);
        Ok(())
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
        let key = request_key(&proven.request_id);
        let mut pending = match kv::get_json::<Pending>(&key).map_err(internal)? {
            Some(p) if p.expires > now && p.email.is_none() && p.refused.is_none() => p,
            _ => return Err(refuse("request not found or expired".into())),
        };
        kv::set_json(&used, &Used { expires: proven.replayable_until.min(now + 86_400 * 7) }).map_err(internal)?;
        match self.email_of(&proven.identity) {
            Ok(email) => {
                log::info(&format!("saml login of {email} for request {} verified", proven.request_id));
                pending.email = Some(email);
                pending.groups = proven.groups;
                kv::set_json(&key, &pending).map_err(internal)
            }
            Err(reason) => {
                pending.refused = Some(reason.clone());
                kv::set_json(&key, &pending).map_err(internal)?;
                Err(AuthError::Forbidden(reason))
            }
        }
    }
}

impl AuthScheme for Saml {
    fn init(config: serde_json::Value) -> Result<Self, String> {
        let config: Config = serde_json::from_value(config).map_err(|e| format!("auth-saml config: {e}"))?;
        let metadata_text = match (&config.idp_metadata, &config.idp_metadata_url) {
            (Some(text), None) => text.clone(),
            (None, Some(url)) => {
                let answer = http::get(url).map_err(|e| format!("auth-saml: cannot fetch the idp metadata from {url}: {}", e.0))?;
                if answer.status != 200 {
                    return Err(format!("auth-saml: the idp metadata at {url} answered {}", answer.status));
                }
                answer.text()
            }
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
        if config.sp_entity_id.is_empty() || config.request_timeout_secs == 0 || config.max_pending_requests == 0 {
            return Err("auth-saml config: sp_entity_id, request_timeout_secs and max_pending_requests must be set".into());
        }
        let metadata = sp::metadata(&config.sp_entity_id, &config.acs_url, keys.as_ref(), sign_requests, config.require_signed_assertion);
        Ok(Saml { config, idp, keys, sign_requests, metadata, swept_at: Cell::new(i64::MIN / 2), pending: Cell::new(0) })
    }

    fn info(&self) -> Result<SchemeInfo, AuthError> {
        let now = time::now();
        self.sweep(now)?;
        if self.pending.get() >= self.config.max_pending_requests {
            return Err(internal("too many logins are waiting for the identity provider; try again in a few minutes".into()));
        }
        let id = new_id()?;
        let key = if self.sign_requests { self.keys.as_ref().map(|k| &k.key) } else { None };
        let request = sp::authn_request(&id, now, &self.config.sp_entity_id, &self.config.acs_url, &self.idp, key).map_err(internal)?;
        let timeout = self.config.request_timeout_secs as i64;
        let pending = Pending { expires: now + timeout, email: None, groups: Vec::new(), refused: None };
        kv::set_json(&request_key(&request.id), &pending).map_err(internal)?;
        self.pending.set(self.pending.get() + 1);
        let data = serde_json::json!({
            "request_id": request.id,
            "saml_request": request.encoded,
            "url": request.url,
            "request_timeout": timeout.to_string(),
        });
        Ok(SchemeInfo { name: "saml".into(), data: Some(data.to_string()) })
    }

    fn authenticate(&self, params: &Params) -> Result<Login, AuthError> {
        let Some(id) = params.get("request_id").filter(|id| !id.is_empty()) else {
            return Err(AuthError::InvalidInput("You must provide RequestID to login".into()));
        };
        let now = time::now();
        let key = request_key(id);
        let pending = match kv::get_json::<Pending>(&key).map_err(internal)? {
            Some(p) if p.expires > now => p,
            _ => return Err(AuthError::InvalidInput("request not found or expired".into())),
        };
        if let Some(reason) = pending.refused {
            kv::delete(&key).map_err(internal)?;
            return Err(AuthError::Unauthorized(reason));
        }
        let Some(email) = pending.email else {
            return Err(AuthError::InvalidInput("Waiting credentials from IDP".into()));
        };
        // A request gives one session.
        kv::delete(&key).map_err(internal)?;
        Ok(Login { email, groups: Some(pending.groups), create: self.config.create_users })
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
