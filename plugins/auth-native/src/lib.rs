//! torii's native auth scheme: email + password.
//!
//! Passwords are hashed with argon2id and kept in the plugin's own `kv`
//! namespace (`user/<email>`); password-reset tokens live at `reset/<email>`.
//! The host owns users and sessions; this plugin only answers whether a
//! password is right and manages it.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params as Argon2Params, Version};
use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};
use torii_plugin_sdk::auth::{AuthError, AuthScheme, Login, Mail, Params, SchemeInfo};
use torii_plugin_sdk::{export_auth_scheme, kv, log, validate};

const MIN_PASSWORD: usize = 6;
const MAX_PASSWORD: usize = 50;
const GENERATED_PASSWORD_LEN: usize = 12;

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    /// argon2id memory cost in KiB (OWASP: 19456).
    argon2_memory_kib: u32,
    argon2_iterations: u32,
    argon2_parallelism: u32,
    /// How long a password-reset token stays valid.
    reset_token_hours: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config { argon2_memory_kib: 19_456, argon2_iterations: 2, argon2_parallelism: 1, reset_token_hours: 24 }
    }
}

#[derive(Serialize, Deserialize)]
struct UserRecord {
    hash: String,
}

#[derive(Serialize, Deserialize)]
struct ResetToken {
    token: String,
    expires_at: u64,
}

struct Native {
    argon2: Argon2<'static>,
    reset_ttl_secs: u64,
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn random_bytes<const N: usize>() -> Result<[u8; N], AuthError> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).map_err(|e| AuthError::Internal(format!("no randomness: {e}")))?;
    Ok(buf)
}

fn internal(e: String) -> AuthError {
    AuthError::Internal(e)
}

fn user_key(email: &str) -> String {
    format!("user/{email}")
}

fn reset_key(email: &str) -> String {
    format!("reset/{email}")
}

fn length_ok(password: &str) -> bool {
    (MIN_PASSWORD..=MAX_PASSWORD).contains(&password.len())
}

impl Native {
    fn hash(&self, password: &str) -> Result<String, AuthError> {
        let salt = SaltString::encode_b64(&random_bytes::<16>()?).map_err(|e| internal(e.to_string()))?;
        self.argon2
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| internal(e.to_string()))
    }

    fn verify(&self, record: &UserRecord, password: &str) -> Result<bool, AuthError> {
        let parsed = PasswordHash::new(&record.hash).map_err(|e| internal(format!("stored hash: {e}")))?;
        Ok(self.argon2.verify_password(password.as_bytes(), &parsed).is_ok())
    }

    fn record(&self, email: &str) -> Result<UserRecord, AuthError> {
        kv::get_json::<UserRecord>(&user_key(email))
            .map_err(internal)?
            .ok_or_else(|| AuthError::NotFound("user not found".into()))
    }

    fn store(&self, email: &str, password: &str) -> Result<(), AuthError> {
        let record = UserRecord { hash: self.hash(password)? };
        kv::set_json(&user_key(email), &record).map_err(internal)
    }
}

fn create_length_error() -> AuthError {
    AuthError::InvalidInput("password length should be least 6 characters and at most 50 characters".into())
}

impl AuthScheme for Native {
    fn init(config: serde_json::Value) -> Result<Self, String> {
        let config: Config = if config.is_null() {
            Config::default()
        } else {
            serde_json::from_value(config).map_err(|e| format!("auth-native config: {e}"))?
        };
        let params = Argon2Params::new(
            config.argon2_memory_kib,
            config.argon2_iterations,
            config.argon2_parallelism,
            None,
        )
        .map_err(|e| format!("auth-native config: argon2 parameters: {e}"))?;
        Ok(Native {
            argon2: Argon2::new(Algorithm::Argon2id, Version::V0x13, params),
            reset_ttl_secs: config.reset_token_hours * 3600,
        })
    }

    fn health(&self) -> Result<(), String> {
        Ok(())
    }

    fn info(&self) -> Result<SchemeInfo, AuthError> {
        Ok(SchemeInfo { name: "native".into(), data: None })
    }

    fn authenticate(&self, params: &Params) -> Result<Login, AuthError> {
        let email = params.get("email").unwrap_or_default();
        let Some(password) = params.get("password") else {
            return Err(AuthError::InvalidInput("you must provide a password to login".into()));
        };
        if !validate::is_email(email) {
            return Err(AuthError::InvalidInput("invalid email".into()));
        }
        let record = self.record(email)?;
        if !length_ok(password) {
            return Err(AuthError::InvalidInput(
                "Password length should be least 6 characters and at most 50 characters.".into(),
            ));
        }
        if !self.verify(&record, password)? {
            return Err(AuthError::Unauthorized("Authentication failed, wrong password.".into()));
        }
        Ok(Login::user(email))
    }

    fn manages_credentials(&self) -> bool {
        true
    }

    fn create_user(&self, email: &str, password: &str) -> Result<(), AuthError> {
        if !length_ok(password) {
            return Err(create_length_error());
        }
        self.store(email, password)?;
        log::info(&format!("credentials created for {email}"));
        Ok(())
    }

    fn remove_user(&self, email: &str) -> Result<(), AuthError> {
        kv::delete(&user_key(email)).map_err(internal)?;
        kv::delete(&reset_key(email)).map_err(internal)
    }

    fn change_password(&self, email: &str, old: &str, new: &str) -> Result<(), AuthError> {
        let record = self.record(email)?;
        if !self.verify(&record, old)? {
            return Err(AuthError::Forbidden("the given password didn't match the user's current password".into()));
        }
        if !length_ok(new) {
            return Err(create_length_error());
        }
        self.store(email, new)
    }

    fn start_password_reset(&self, email: &str) -> Result<Mail, AuthError> {
        self.record(email)?;
        let token = hex(&random_bytes::<20>()?);
        let entry = ResetToken { token: token.clone(), expires_at: now_secs() + self.reset_ttl_secs };
        kv::set_json(&reset_key(email), &entry).map_err(internal)?;
        Ok(Mail {
            to: email.into(),
            subject: "[torii] Password reset process".into(),
            body: format!(
                "Someone, hopefully you, asked to reset your password.\n\n\
                 To go on, use this token within {} hours:\n\n{token}\n\n\
                 With the tsuru client: tsuru reset-password {email} --token {token}\n\n\
                 If you did not ask for it, ignore this message: your password is unchanged.\n",
                self.reset_ttl_secs / 3600
            ),
        })
    }

    fn finish_password_reset(&self, email: &str, token: &str) -> Result<Mail, AuthError> {
        self.record(email)?;
        let invalid = || AuthError::Internal("Invalid token".into());
        let entry = kv::get_json::<ResetToken>(&reset_key(email)).map_err(internal)?.ok_or_else(invalid)?;
        if !constant_time_eq(entry.token.as_bytes(), token.as_bytes()) || entry.expires_at < now_secs() {
            return Err(invalid());
        }
        // One use only: drop the token before anything else can fail.
        kv::delete(&reset_key(email)).map_err(internal)?;
        let password = generate_password()?;
        self.store(email, &password)?;
        Ok(Mail {
            to: email.into(),
            subject: "[torii] Your new password".into(),
            body: format!("Your password was reset. Your new password is:\n\n{password}\n\nChange it after you log in.\n"),
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn generate_password() -> Result<String, AuthError> {
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    // Rejection sampling keeps every symbol equally likely.
    let mut out = String::with_capacity(GENERATED_PASSWORD_LEN);
    while out.len() < GENERATED_PASSWORD_LEN {
        for b in random_bytes::<32>()? {
            let limit = (256 / ALPHABET.len() * ALPHABET.len()) as u8;
            if b < limit && out.len() < GENERATED_PASSWORD_LEN {
                out.push(ALPHABET[b as usize % ALPHABET.len()] as char);
            }
        }
    }
    Ok(out)
}

export_auth_scheme!(Native);
