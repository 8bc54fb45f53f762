//! Secrets at rest: private env values (the app token among them), TLS
//! private keys and webhook headers are stored sealed with AES-256-GCM under
//! a key derived from the server key (`data_dir/secret.key`). Each value is
//! bound to its place (the app and variable, the certificate's name, the
//! webhook), so a sealed value copied into another row does not open there.
//!
//! Rotation: put the new `secret.key` in place and the old one beside it as
//! `secret.key.previous`, then start torii: it opens values with either key
//! and seals every one again with the new key at start-up; the previous file
//! may then be removed. (API keys and team tokens are derived from the key
//! too: they change with it.)
//!
//! Values written before sealing existed are read as they are and sealed at
//! the next start.

use super::{StoreError, StoreResult};
use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

/// What starts a sealed value.
const MARK: &str = "torii-sealed:1:";

pub struct Sealer {
    current: Option<LessSafeKey>,
    previous: Option<LessSafeKey>,
    random: SystemRandom,
}

fn key(bytes: &[u8; 32]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, bytes).expect("32 bytes make an AES-256 key"))
}

impl Sealer {
    /// Seals with `current`; opens with `current`, then `previous`.
    pub fn new(current: &[u8; 32], previous: Option<&[u8; 32]>) -> Sealer {
        Sealer { current: Some(key(current)), previous: previous.map(key), random: SystemRandom::new() }
    }

    /// A store without a server key (command-line tools that write no
    /// secrets): values are written as they are.
    pub fn none() -> Sealer {
        Sealer { current: None, previous: None, random: SystemRandom::new() }
    }

    #[cfg(test)]
    pub fn is_sealed(stored: &str) -> bool {
        stored.starts_with(MARK)
    }

    /// `plain`, sealed for `place`.
    pub fn seal(&self, place: &str, plain: &str) -> String {
        let Some(key) = &self.current else { return plain.to_string() };
        let mut nonce = [0u8; NONCE_LEN];
        self.random.fill(&mut nonce).expect("the system random source works");
        let mut data = plain.as_bytes().to_vec();
        key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(place.as_bytes()), &mut data)
            .expect("sealing a bounded value");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        format!("{MARK}{}", STANDARD_NO_PAD.encode(out))
    }

    /// What was sealed for `place` (a value stored before sealing is
    /// returned as it is).
    pub fn open(&self, place: &str, stored: &str) -> StoreResult<String> {
        let Some(encoded) = stored.strip_prefix(MARK) else { return Ok(stored.to_string()) };
        let unreadable = || {
            StoreError::Sealed(format!(
                "a secret stored for {} cannot be opened: secret.key is not the key it was sealed with (see secret.key.previous)",
                place.split('\0').collect::<Vec<_>>().join(" ")
            ))
        };
        let raw = STANDARD_NO_PAD.decode(encoded).map_err(|_| unreadable())?;
        if raw.len() < NONCE_LEN {
            return Err(unreadable());
        }
        for key in self.current.iter().chain(self.previous.iter()) {
            let nonce = Nonce::try_assume_unique_for_key(&raw[..NONCE_LEN]).map_err(|_| unreadable())?;
            let mut data = raw[NONCE_LEN..].to_vec();
            if let Ok(plain) = key.open_in_place(nonce, Aad::from(place.as_bytes()), &mut data) {
                return String::from_utf8(plain.to_vec()).map_err(|_| unreadable());
            }
        }
        Err(unreadable())
    }

    /// Whether `stored` must be written again: not sealed, or sealed with
    /// another key than the current one.
    pub fn needs_resealing(&self, place: &str, stored: &str) -> bool {
        let Some(current) = &self.current else { return false };
        let Some(encoded) = stored.strip_prefix(MARK) else { return true };
        let Ok(raw) = STANDARD_NO_PAD.decode(encoded) else { return false };
        if raw.len() < NONCE_LEN {
            return false;
        }
        let Ok(nonce) = Nonce::try_assume_unique_for_key(&raw[..NONCE_LEN]) else { return false };
        let mut data = raw[NONCE_LEN..].to_vec();
        current.open_in_place(nonce, Aad::from(place.as_bytes()), &mut data).is_err()
    }
}

/// Every column holding secrets: the query reading its rows (keys, then the
/// stored value), the update writing one again (`$1` the value, then the
/// keys, then the value it replaces), and where a row's value lives.
pub(super) const SECRET_COLUMNS: [(&str, &str, fn(&[String]) -> String); 7] = [
    (
        "SELECT app, name, value FROM app_env WHERE public = 0",
        "UPDATE app_env SET value = $1 WHERE app = $2 AND name = $3 AND value = $4",
        |keys| env_place(&keys[0], &keys[1]),
    ),
    (
        "SELECT app, name, key FROM app_certificates",
        "UPDATE app_certificates SET key = $1 WHERE app = $2 AND name = $3 AND key = $4",
        |keys| certificate_place(&keys[0], &keys[1]),
    ),
    ("SELECT name, headers FROM webhooks", "UPDATE webhooks SET headers = $1 WHERE name = $2 AND headers = $3", |keys| webhook_place(&keys[0])),
    ("SELECT name, secrets FROM clusters", "UPDATE clusters SET secrets = $1 WHERE name = $2 AND secrets = $3", |keys| cluster_place(&keys[0])),
    ("SELECT name, password FROM services", "UPDATE services SET password = $1 WHERE name = $2 AND password = $3", |keys| service_place(&keys[0])),
    ("SELECT name, config FROM service_brokers", "UPDATE service_brokers SET config = $1 WHERE name = $2 AND config = $3", |keys| broker_place(&keys[0])),
    (
        "SELECT service, instance, app, env FROM service_binds",
        "UPDATE service_binds SET env = $1 WHERE service = $2 AND instance = $3 AND app = $4 AND env = $5",
        |keys| bind_place(&keys[0], &keys[1], &keys[2]),
    ),
];

/// Where a service's password lives.
pub fn service_place(name: &str) -> String {
    format!("service\0{name}")
}

/// Where a broker's config (its credentials) lives.
pub fn broker_place(name: &str) -> String {
    format!("broker\0{name}")
}

/// Where the variables an app got from a bind live.
pub fn bind_place(service: &str, instance: &str, app: &str) -> String {
    format!("bind\0{service}\0{instance}\0{app}")
}

/// Where a private env value lives.
pub fn env_place(app: &str, name: &str) -> String {
    format!("env\0{app}\0{name}")
}

/// Where a TLS private key lives.
pub fn certificate_place(app: &str, name: &str) -> String {
    format!("certificate\0{app}\0{name}")
}

/// Where a cluster's client key, custom data and kubeconfig live.
pub fn cluster_place(name: &str) -> String {
    format!("cluster\0{name}")
}

/// Where a webhook's headers live.
pub fn webhook_place(name: &str) -> String {
    format!("webhook\0{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_in_their_place_and_with_their_keys() {
        let (old, new) = ([1u8; 32], [2u8; 32]);
        let sealer = Sealer::new(&old, None);
        let stored = sealer.seal("env\0a\0TOKEN", "s3cret");
        assert!(Sealer::is_sealed(&stored) && !stored.contains("s3cret"));
        assert_ne!(stored, sealer.seal("env\0a\0TOKEN", "s3cret"), "a fresh nonce each time");
        assert_eq!(sealer.open("env\0a\0TOKEN", &stored).unwrap(), "s3cret");
        assert!(sealer.open("env\0b\0TOKEN", &stored).is_err(), "moved to another app");
        // Plain values from before sealing read as they are, and want sealing.
        assert_eq!(sealer.open("env\0a\0X", "plain").unwrap(), "plain");
        assert!(sealer.needs_resealing("env\0a\0X", "plain"));
        // Rotation: the new key opens old values through the previous one.
        let rotated = Sealer::new(&new, Some(&old));
        assert_eq!(rotated.open("env\0a\0TOKEN", &stored).unwrap(), "s3cret");
        assert!(rotated.needs_resealing("env\0a\0TOKEN", &stored));
        assert!(!rotated.needs_resealing("env\0a\0TOKEN", &rotated.seal("env\0a\0TOKEN", "s3cret")));
        assert!(Sealer::new(&new, None).open("env\0a\0TOKEN", &stored).is_err());
    }
}
