//! The `auth-scheme` plugin kind: bindings and the typed API the host uses.

use super::PluginError;
use super::instance::PluginPool;

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "torii:plugin/auth-scheme-plugin",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "torii:plugin/log": crate::plugin::capabilities::bindings::torii::plugin::log,
            "torii:plugin/kv": crate::plugin::capabilities::bindings::torii::plugin::kv,
        },
    });
}

pub use bindings::exports::torii::plugin::auth_scheme::{AuthError as SchemeError, Login, Mail, SchemeInfo};

/// Why a call into the scheme did not succeed: the plugin failed, or it
/// answered with a refusal.
#[derive(Debug, thiserror::Error)]
pub enum AuthCallError {
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error("{0:?}")]
    Scheme(SchemeError),
}

super::instance::plugin_world!(AuthWorld, "auth-scheme", bindings::AuthSchemePlugin, bindings::AuthSchemePluginPre, torii_plugin_auth_scheme);

/// The configured auth scheme.
pub struct AuthScheme {
    pool: std::sync::Arc<PluginPool<AuthWorld>>,
}

fn flatten<T>(r: Result<Result<T, SchemeError>, PluginError>) -> Result<T, AuthCallError> {
    match r {
        Err(e) => Err(AuthCallError::Plugin(e)),
        Ok(Err(e)) => Err(AuthCallError::Scheme(e)),
        Ok(Ok(v)) => Ok(v),
    }
}

impl AuthScheme {
    pub fn new(pool: std::sync::Arc<PluginPool<AuthWorld>>) -> AuthScheme {
        AuthScheme { pool }
    }

    pub fn name(&self) -> &str {
        self.pool.name()
    }

    pub async fn health(&self) -> Result<Result<(), String>, PluginError> {
        self.pool.call(|b, s| Box::pin(b.torii_plugin_auth_scheme().call_health(s))).await
    }

    pub async fn info(&self) -> Result<SchemeInfo, AuthCallError> {
        flatten(self.pool.call(|b, s| Box::pin(b.torii_plugin_auth_scheme().call_info(s))).await)
    }

    /// The scheme's metadata document; `Unsupported` when it has none.
    pub async fn metadata(&self) -> Result<String, AuthCallError> {
        flatten(self.pool.call(|b, s| Box::pin(b.torii_plugin_auth_scheme().call_metadata(s))).await)
    }

    /// An identity provider's answer, posted to the scheme's callback.
    pub async fn callback(&self, params: Vec<(String, String)>) -> Result<(), AuthCallError> {
        flatten(
            self.pool
                .call(move |b, s| Box::pin(async move { b.torii_plugin_auth_scheme().call_callback(s, &params).await }))
                .await,
        )
    }

    pub async fn manages_credentials(&self) -> Result<bool, PluginError> {
        self.pool.call(|b, s| Box::pin(b.torii_plugin_auth_scheme().call_manages_credentials(s))).await
    }

    pub async fn authenticate(&self, params: Vec<(String, String)>) -> Result<Login, AuthCallError> {
        flatten(
            self.pool
                .call(move |b, s| Box::pin(async move { b.torii_plugin_auth_scheme().call_authenticate(s, &params).await }))
                .await,
        )
    }

    pub async fn create_user(&self, email: &str, password: &str) -> Result<(), AuthCallError> {
        let (email, password) = (email.to_string(), password.to_string());
        flatten(
            self.pool
                .call(move |b, s| {
                    Box::pin(async move { b.torii_plugin_auth_scheme().call_create_user(s, &email, &password).await })
                })
                .await,
        )
    }

    pub async fn remove_user(&self, email: &str) -> Result<(), AuthCallError> {
        let email = email.to_string();
        flatten(
            self.pool
                .call(move |b, s| Box::pin(async move { b.torii_plugin_auth_scheme().call_remove_user(s, &email).await }))
                .await,
        )
    }

    pub async fn change_password(&self, email: &str, old: &str, new: &str) -> Result<(), AuthCallError> {
        let (email, old, new) = (email.to_string(), old.to_string(), new.to_string());
        flatten(
            self.pool
                .call(move |b, s| {
                    Box::pin(async move { b.torii_plugin_auth_scheme().call_change_password(s, &email, &old, &new).await })
                })
                .await,
        )
    }

    pub async fn start_password_reset(&self, email: &str) -> Result<Mail, AuthCallError> {
        let email = email.to_string();
        flatten(
            self.pool
                .call(move |b, s| {
                    Box::pin(async move { b.torii_plugin_auth_scheme().call_start_password_reset(s, &email).await })
                })
                .await,
        )
    }

    pub async fn finish_password_reset(&self, email: &str, token: &str) -> Result<Mail, AuthCallError> {
        let (email, token) = (email.to_string(), token.to_string());
        flatten(
            self.pool
                .call(move |b, s| {
                    Box::pin(async move {
                        b.torii_plugin_auth_scheme().call_finish_password_reset(s, &email, &token).await
                    })
                })
                .await,
        )
    }
}
