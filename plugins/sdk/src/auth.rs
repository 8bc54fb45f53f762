//! The `auth-scheme` plugin kind.

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "torii:plugin/auth-scheme-plugin",
        pub_export_macro: true,
        export_macro_name: "__export_auth_scheme_world",
        default_bindings_module: "torii_plugin_sdk::auth::bindings",
        with: {
            "torii:plugin/log@0.4.0": torii_plugin_sdk::capabilities::bindings::torii::plugin::log,
            "torii:plugin/kv@0.4.0": torii_plugin_sdk::capabilities::bindings::torii::plugin::kv,
        },
    });
}

pub use bindings::exports::torii::plugin::auth_scheme::{AuthError, Mail, SchemeInfo};

/// Login parameters as the client sent them.
pub struct Params(pub Vec<(String, String)>);

impl Params {
    /// The value of `key` (exact, case-sensitive), if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// What an auth scheme plugin implements. One value lives per plugin instance,
/// made by [`AuthScheme::init`] from the plugin's config table.
pub trait AuthScheme: Sized + 'static {
    fn init(config: serde_json::Value) -> Result<Self, String>;

    fn health(&self) -> Result<(), String> {
        Ok(())
    }

    fn info(&self) -> SchemeInfo;

    /// Verifies a login and returns the user's email.
    fn authenticate(&self, params: &Params) -> Result<String, AuthError>;

    /// Whether this scheme keeps passwords (and so supports the password calls).
    fn manages_credentials(&self) -> bool;

    fn create_user(&self, email: &str, password: &str) -> Result<(), AuthError> {
        let _ = (email, password);
        Ok(())
    }

    fn remove_user(&self, email: &str) -> Result<(), AuthError> {
        let _ = email;
        Ok(())
    }

    fn change_password(&self, email: &str, old: &str, new: &str) -> Result<(), AuthError> {
        let _ = (email, old, new);
        Err(AuthError::Unsupported)
    }

    fn start_password_reset(&self, email: &str) -> Result<Mail, AuthError> {
        let _ = email;
        Err(AuthError::Unsupported)
    }

    fn finish_password_reset(&self, email: &str, token: &str) -> Result<Mail, AuthError> {
        let _ = (email, token);
        Err(AuthError::Unsupported)
    }
}

/// Exports a type implementing [`AuthScheme`] as the plugin's component exports.
#[macro_export]
macro_rules! export_auth_scheme {
    ($scheme:ty) => {
        const _: () = {
            use $crate::auth::bindings::exports::torii::plugin::auth_scheme;
            use $crate::auth::{AuthError, AuthScheme, Mail, Params, SchemeInfo};

            $crate::__plugin_state!($scheme, <$scheme as AuthScheme>::init);

            struct ToriiExport;

            impl auth_scheme::Guest for ToriiExport {
                fn init(config: String) -> Result<(), String> {
                    init_state(config)
                }
                fn health() -> Result<(), String> {
                    with(|s| s.health())
                }
                fn info() -> SchemeInfo {
                    with(|s| s.info())
                }
                fn authenticate(params: Vec<(String, String)>) -> Result<String, AuthError> {
                    with(|s| s.authenticate(&Params(params)))
                }
                fn manages_credentials() -> bool {
                    with(|s| s.manages_credentials())
                }
                fn create_user(email: String, password: String) -> Result<(), AuthError> {
                    with(|s| s.create_user(&email, &password))
                }
                fn remove_user(email: String) -> Result<(), AuthError> {
                    with(|s| s.remove_user(&email))
                }
                fn change_password(email: String, old: String, new: String) -> Result<(), AuthError> {
                    with(|s| s.change_password(&email, &old, &new))
                }
                fn start_password_reset(email: String) -> Result<Mail, AuthError> {
                    with(|s| s.start_password_reset(&email))
                }
                fn finish_password_reset(email: String, token: String) -> Result<Mail, AuthError> {
                    with(|s| s.finish_password_reset(&email, &token))
                }
            }

            $crate::auth::bindings::__export_auth_scheme_world!(ToriiExport with_types_in $crate::auth::bindings);
        };
    };
}
