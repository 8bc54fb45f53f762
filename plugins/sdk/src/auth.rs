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
            "torii:plugin/log@0.7.0": torii_plugin_sdk::capabilities::bindings::torii::plugin::log,
            "torii:plugin/kv@0.7.0": torii_plugin_sdk::capabilities::bindings::torii::plugin::kv,
        },
    });
}

pub use bindings::exports::torii::plugin::auth_scheme::{AuthError, Login, Mail, SchemeInfo};

impl Login {
    /// A known user, for schemes that report no groups and create no one.
    pub fn user(email: impl Into<String>) -> Login {
        Login { email: email.into(), groups: None, create: false }
    }
}

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

    /// What `GET /auth/scheme` shows; a scheme may start a login here.
    fn info(&self) -> Result<SchemeInfo, AuthError>;

    /// Verifies a login: who the caller is, their groups, whether the host
    /// creates them when unknown.
    fn authenticate(&self, params: &Params) -> Result<Login, AuthError>;

    /// An identity provider's answer posted to the scheme's callback URL.
    fn callback(&self, params: &Params) -> Result<(), AuthError> {
        let _ = params;
        Err(AuthError::Unsupported)
    }

    /// The scheme's metadata document (SAML: the SP's EntityDescriptor).
    fn metadata(&self) -> Result<String, AuthError> {
        Err(AuthError::Unsupported)
    }

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
            use $crate::auth::{AuthError, AuthScheme, Login, Mail, Params, SchemeInfo};

            $crate::__plugin_state!($scheme, <$scheme as AuthScheme>::init);

            struct ToriiExport;

            impl auth_scheme::Guest for ToriiExport {
                fn init(config: String) -> Result<(), String> {
                    init_state(config)
                }
                fn health() -> Result<(), String> {
                    with(|s| s.health())
                }
                fn info() -> Result<SchemeInfo, AuthError> {
                    with(|s| s.info())
                }
                fn authenticate(params: Vec<(String, String)>) -> Result<Login, AuthError> {
                    with(|s| s.authenticate(&Params(params)))
                }
                fn callback(params: Vec<(String, String)>) -> Result<(), AuthError> {
                    with(|s| s.callback(&Params(params)))
                }
                fn metadata() -> Result<String, AuthError> {
                    with(|s| s.metadata())
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
