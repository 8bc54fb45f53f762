//! Token values: parsing the header, minting, hashing.
//!
//! Session tokens are random (40 hex, as tsuru's). API keys and team tokens are
//! 64 hex derived as HMAC-SHA256(server key, kind ‖ owner ‖ generation): only
//! their SHA-256 is stored, yet `GET /users/api-key` and the team-token listing
//! can show the value again by re-deriving it. Regenerating bumps the generation.

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::path::Path;

/// tsuru's rule: split on single spaces; with one or two parts the last is the
/// token; an empty token or three or more parts is invalid.
pub fn parse_authorization(value: &str) -> Option<&str> {
    let parts: Vec<&str> = value.split(' ').collect();
    match parts.as_slice() {
        [token] | [_, token] if !token.is_empty() => Some(token),
        _ => None,
    }
}

/// tsuru's internal app, whose token node agents hold.
pub const AGENT_APP: &str = "tsr";

pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

pub fn new_session_token() -> String {
    let mut bytes = [0u8; 20];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The secret API keys and team tokens are derived from. Several replicas
/// sharing a database must share this file.
#[derive(Clone)]
pub struct ServerKey([u8; 32]);

impl ServerKey {
    /// Reads `path`, creating it (mode 0600) with fresh random bytes if absent.
    pub fn load_or_create(path: &Path) -> std::io::Result<ServerKey> {
        match std::fs::read(path) {
            Ok(bytes) => {
                let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("{} must hold exactly 32 bytes", path.display()),
                    )
                })?;
                Ok(ServerKey(key))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                rand::thread_rng().fill_bytes(&mut key);
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                let tmp = path.with_extension("tmp");
                {
                    use std::io::Write;
                    use std::os::unix::fs::OpenOptionsExt;
                    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
                    f.write_all(&key)?;
                    f.sync_all()?;
                }
                // Another process may have won the race; keep whichever landed first.
                if std::fs::hard_link(&tmp, path).is_err() {
                    let _ = std::fs::remove_file(&tmp);
                    return ServerKey::load_or_create(path);
                }
                let _ = std::fs::remove_file(&tmp);
                Ok(ServerKey(key))
            }
            Err(e) => Err(e),
        }
    }

    fn derive(&self, kind: &str, owner: &str, generation: i64) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("any key length");
        mac.update(kind.as_bytes());
        mac.update(&[0]);
        mac.update(owner.as_bytes());
        mac.update(&[0]);
        mac.update(&generation.to_be_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// The key secrets are sealed with at rest (`store::sealed`).
    pub fn at_rest_key(&self) -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("any key length");
        mac.update(b"torii at-rest v1");
        mac.finalize().into_bytes().into()
    }

    /// The key in `path` if there is one (`secret.key.previous` during a rotation).
    pub fn load_existing(path: &Path) -> std::io::Result<Option<ServerKey>> {
        match std::fs::metadata(path) {
            Ok(_) => ServerKey::load_or_create(path).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn api_key(&self, email: &str, generation: i64) -> String {
        self.derive("api-key", email, generation)
    }

    pub fn team_token(&self, token_id: &str, generation: i64) -> String {
        self.derive("team-token", token_id, generation)
    }

    /// The token of tsuru's internal app `tsr` (API-NOTES §1.2.4), which
    /// node agents use to send container logs (`GET /logs`). Derived from
    /// the server key, so every replica and restart has the same one, and a
    /// new key (rotation) makes a new one.
    pub fn agent_token(&self) -> String {
        self.derive("app-token", AGENT_APP, 0)
    }
}

/// A random generation number, so a regenerated value is never a past one.
pub fn new_generation() -> i64 {
    (rand::thread_rng().next_u64() >> 1) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_forms_follow_tsuru() {
        assert_eq!(parse_authorization("bearer abc"), Some("abc"));
        assert_eq!(parse_authorization("Bearer abc"), Some("abc"));
        assert_eq!(parse_authorization("token abc"), Some("abc"));
        assert_eq!(parse_authorization("abc"), Some("abc"));
        assert_eq!(parse_authorization("a b c"), None);
        assert_eq!(parse_authorization(""), None);
        assert_eq!(parse_authorization("bearer "), None);
    }

    #[test]
    fn derived_values_depend_on_owner_and_generation() {
        let key = ServerKey([7; 32]);
        let a = key.api_key("a@b.com", 1);
        assert_eq!(a.len(), 64);
        assert_eq!(a, key.api_key("a@b.com", 1));
        assert_ne!(a, key.api_key("a@b.com", 2));
        assert_ne!(a, key.api_key("c@b.com", 1));
        assert_ne!(a, key.team_token("a@b.com", 1));
    }
}
