//! A test-only auth scheme that misbehaves on demand, to prove the host
//! survives its plugins. The login email picks the fault:
//! `loop@…` spins forever, `alloc@…` allocates without bound, `trap@…`
//! panics, `kv@…` calls the `kv` capability (which the tests do not grant),
//! `noisy@…` writes 100 KiB to stderr and then succeeds, `big@…` uses
//! 12 MiB for the call (as a password hash may) and then succeeds.
//! Any other email logs in, so a request after each fault can succeed.

use torii_plugin_sdk::auth::{AuthError, AuthScheme, Login, Params, SchemeInfo};
use torii_plugin_sdk::{export_auth_scheme, kv};

struct Chaos;

impl AuthScheme for Chaos {
    fn init(_config: serde_json::Value) -> Result<Self, String> {
        Ok(Chaos)
    }

    fn info(&self) -> Result<SchemeInfo, AuthError> {
        Ok(SchemeInfo { name: "chaos".into(), data: None })
    }

    fn authenticate(&self, params: &Params) -> Result<Login, AuthError> {
        let email = params.get("email").unwrap_or_default().to_string();
        self.fault(email).map(Login::user)
    }

    fn manages_credentials(&self) -> bool {
        false
    }
}

impl Chaos {
    fn fault(&self, email: String) -> Result<String, AuthError> {
        match email.split('@').next().unwrap_or_default() {
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "alloc" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "trap" => panic!("chaos plugin asked to trap"),
            "noisy" => {
                let line = "x".repeat(99);
                for _ in 0..1024 {
                    eprintln!("{line}");
                }
                Ok(email)
            }
            "big" => {
                let mut scratch = vec![0u8; 12 << 20];
                for page in scratch.chunks_mut(4096) {
                    page[0] = 1;
                }
                std::hint::black_box(&scratch);
                Ok(email)
            }
            "kv" => {
                kv::set("stolen", b"x").map_err(AuthError::Internal)?;
                Ok(email)
            }
            _ => Ok(email),
        }
    }
}

export_auth_scheme!(Chaos);
