//! Logins in flight, kept in no state until the IdP answers.
//!
//! A login has two names. The AuthnRequest ID goes to the IdP and back
//! through the user's browser (URLs, the IdP's logs, `InResponseTo`):
//! `_` + hex(nonce ‖ expiry ‖ tag), the tag a MAC under the plugin's key,
//! so the callback knows torii made it, and until when. The client's
//! `request_id` is that ID, `.`, and a second MAC of it: only the client
//! that started the login can claim its session, even where the ID leaks.
//! Nothing is written when a login starts (`GET /auth/scheme` is open to
//! anyone); the IdP's verified answer is written at `done/<ID>`, and a
//! claimed one stays there, consumed, until it expires.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use torii_plugin_sdk::kv;

const KEY: &str = "key";
const TAG: usize = 16;

/// The plugin's MAC key, made once and kept in its `kv`.
pub struct Key(Vec<u8>);

impl Key {
    /// The stored key, or a new one stored (a second instance that raced
    /// to store its own reads back whichever won).
    pub fn load() -> Result<Key, String> {
        if let Some(key) = kv::get(KEY)? {
            return Ok(Key(key));
        }
        let mut key = vec![0u8; 32];
        getrandom::fill(&mut key).map_err(|e| format!("no randomness: {e}"))?;
        kv::set(KEY, &key)?;
        Ok(Key(kv::get(KEY)?.unwrap_or(key)))
    }

    fn tag(&self, purpose: &[u8], data: &[u8]) -> [u8; TAG] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("any key length");
        mac.update(purpose);
        mac.update(data);
        let mut out = [0u8; TAG];
        out.copy_from_slice(&mac.finalize().into_bytes()[..TAG]);
        out
    }

    /// A new login: its AuthnRequest ID and the client's `request_id`.
    pub fn start(&self, expires: i64) -> Result<(String, String), String> {
        let mut body = [0u8; 16 + 8];
        getrandom::fill(&mut body[..16]).map_err(|e| format!("no randomness: {e}"))?;
        body[16..].copy_from_slice(&expires.to_be_bytes());
        let id = format!("_{}{}", hex(&body), hex(&self.tag(b"authn", &body)));
        let request_id = format!("{id}.{}", hex(&self.tag(b"poll", id.as_bytes())));
        Ok((id, request_id))
    }

    /// Until when the AuthnRequest `id` is answerable, if torii made it.
    pub fn authn_expiry(&self, id: &str) -> Option<i64> {
        let bytes = unhex(id.strip_prefix('_')?)?;
        if bytes.len() != 16 + 8 + TAG {
            return None;
        }
        let (body, tag) = bytes.split_at(16 + 8);
        constant_eq(&self.tag(b"authn", body), tag).then(|| i64::from_be_bytes(body[16..].try_into().unwrap()))
    }

    /// The AuthnRequest ID a client's `request_id` claims, if it is genuine.
    pub fn claimed<'a>(&self, request_id: &'a str) -> Option<&'a str> {
        let (id, tag) = request_id.split_once('.')?;
        constant_eq(&self.tag(b"poll", id.as_bytes()), &unhex(tag)?).then_some(id)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 || text.len() > 256 {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What became of a login the IdP answered, at `done/<ID>`.
#[derive(Serialize, Deserialize)]
pub struct Done {
    pub expires: i64,
    /// Who the verified answer names.
    pub email: Option<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    /// Why the answer was refused after it verified.
    #[serde(default)]
    pub refused: Option<String>,
    /// The client has its session.
    #[serde(default)]
    pub consumed: bool,
}

pub fn done_key(id: &str) -> String {
    format!("done/{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_told_from_forgeries_and_claims_need_the_second_tag() {
        let key = Key(vec![7; 32]);
        let (id, request_id) = key.start(1_000).unwrap();
        assert_eq!(key.authn_expiry(&id), Some(1_000));
        assert_eq!(key.claimed(&request_id), Some(id.as_str()));
        // The ID alone (as it travels through the browser) claims nothing.
        assert_eq!(key.claimed(&id), None);
        assert_eq!(key.claimed(&format!("{id}.{}", "0".repeat(32))), None);
        let mut forged = id.clone().into_bytes();
        forged[5] = if forged[5] == b'a' { b'b' } else { b'a' };
        assert_eq!(key.authn_expiry(std::str::from_utf8(&forged).unwrap()), None);
        assert_eq!(Key(vec![8; 32]).authn_expiry(&id), None);
        for junk in ["", "_", "_zz", "x.y", "_00.00"] {
            assert_eq!((key.authn_expiry(junk), key.claimed(junk)), (None, None), "{junk}");
        }
    }
}
