//! The `service-broker` plugin kind: speak to service providers (tsuru's
//! service API, the Open Service Broker API, or your own) over [`crate::http`].
//!
//! The host owns services, instances, binds, permissions and events. A
//! broker is handed the [`Provider`] (where and how to reach it) and the
//! [`Instance`] with each call, and keeps nothing between calls but what it
//! hands back as `data` (a JSON object the host stores with the instance, or
//! with the bind).

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "torii:plugin/service-broker-plugin",
        pub_export_macro: true,
        export_macro_name: "__export_service_broker_world",
        default_bindings_module: "torii_plugin_sdk::broker::bindings",
        with: {
            "torii:plugin/log@0.7.0": torii_plugin_sdk::capabilities::bindings::torii::plugin::log,
            "torii:plugin/kv@0.7.0": torii_plugin_sdk::capabilities::bindings::torii::plugin::kv,
        },
    });
}

pub use bindings::exports::torii::plugin::service_broker::{
    App, Auth, Binding, Change, Error, Instance, OperationState, Plan, Provider, ProxyTarget, Requester, Service, Unit,
};

/// What a broker call answers: the value, or a typed [`Error`].
pub type Outcome<T> = Result<T, Error>;

// A plain message is a refusal of the request as given ([`Error::Invalid`]).
invalid_from_text!(Error);

impl From<crate::http::HttpError> for Error {
    /// A request that got no answer: the provider is unavailable.
    fn from(e: crate::http::HttpError) -> Error {
        Error::Unavailable(e.0)
    }
}

impl Error {
    pub fn message(&self) -> &str {
        match self {
            Error::NotFound(m) | Error::Invalid(m) | Error::NotReady(m) | Error::Conflict(m) | Error::Unavailable(m) | Error::Internal(m) => m,
        }
    }
}

impl Provider {
    /// `path` under the provider's endpoint (one `/` between them).
    pub fn url(&self, path: &str) -> String {
        format!("{}/{}", self.endpoint.trim_end_matches('/'), path.trim_start_matches('/'))
    }

    /// The `Authorization` header value of the provider's credentials.
    pub fn authorization(&self) -> Option<String> {
        match &self.auth {
            Auth::None => None,
            Auth::Basic((user, password)) => Some(format!("Basic {}", base64(format!("{user}:{password}").as_bytes()))),
            Auth::Bearer(token) => Some(format!("Bearer {token}")),
        }
    }

    /// A request to `path` with the provider's credentials.
    pub fn request(&self, method: &str, path: &str) -> crate::http::Request {
        let request = crate::http::Request::new(method, &self.url(path));
        match self.authorization() {
            Some(value) => request.header("Authorization", &value),
            None => request,
        }
    }

    /// The provider's setting `key` (from its JSON `settings`).
    pub fn setting(&self, key: &str) -> Option<serde_json::Value> {
        match serde_json::from_str::<serde_json::Value>(&self.settings) {
            Ok(serde_json::Value::Object(mut map)) => map.remove(key),
            _ => None,
        }
    }
}

impl Instance {
    /// What the broker kept about the instance (`{}` when nothing).
    pub fn data(&self) -> serde_json::Map<String, serde_json::Value> {
        match serde_json::from_str::<serde_json::Value>(&self.data) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        }
    }

    /// The unchanged instance, done: what a synchronous change answers
    /// when it keeps nothing new.
    pub fn unchanged(&self) -> Change {
        Change { data: if self.data.is_empty() { "{}".into() } else { self.data.clone() }, operation: None }
    }
}

/// `application/x-www-form-urlencoded` of `pairs`, in order.
pub fn form(pairs: &[(String, String)]) -> String {
    pairs.iter().map(|(k, v)| format!("{}={}", form_escape(k), form_escape(v))).collect::<Vec<_>>().join("&")
}

fn form_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Standard base64 with padding.
pub fn base64(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16) | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8) | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// What a service-broker plugin implements. One value lives per plugin
/// instance, made by [`Broker::init`] from the plugin's config table.
pub trait Broker: Sized + 'static {
    fn init(config: serde_json::Value) -> Result<Self, String>;

    fn health(&self) -> Result<(), String> {
        Ok(())
    }

    /// The services `provider` offers, with their plans.
    fn catalog(&self, provider: &Provider) -> Outcome<Vec<Service>>;

    fn create_instance(&self, provider: &Provider, instance: &Instance, who: &Requester) -> Outcome<Change>;

    /// `instance` carries the new plan, description, tags and parameters.
    fn update_instance(&self, provider: &Provider, instance: &Instance, who: &Requester) -> Outcome<Change>;

    fn remove_instance(&self, provider: &Provider, instance: &Instance, who: &Requester) -> Outcome<Change>;

    /// The state of an operation a change left running; a broker whose
    /// changes are all synchronous never gets this call.
    fn last_operation(&self, _provider: &Provider, _instance: &Instance, operation: &str) -> Outcome<OperationState> {
        Err(Error::Internal(format!("this broker leaves no operation running (asked about {operation:?})")))
    }

    fn bind_app(&self, provider: &Provider, instance: &Instance, app: &App, parameters: &[(String, String)], who: &Requester) -> Outcome<Binding>;

    /// `binding` is the `data` [`Broker::bind_app`] answered.
    fn unbind_app(&self, provider: &Provider, instance: &Instance, app: &App, binding: &str, who: &Requester) -> Outcome<()>;

    fn bind_unit(&self, _provider: &Provider, _instance: &Instance, _app: &App, _unit: &Unit) -> Outcome<()> {
        Ok(())
    }

    fn unbind_unit(&self, _provider: &Provider, _instance: &Instance, _app: &App, _unit: &Unit) -> Outcome<()> {
        Ok(())
    }

    /// One line: `up`, `pending`, or what is wrong.
    fn status(&self, provider: &Provider, instance: &Instance) -> Outcome<String>;

    /// Labelled facts about the instance (tsuru's `CustomInfo`).
    fn info(&self, _provider: &Provider, _instance: &Instance) -> Outcome<Vec<(String, String)>> {
        Ok(Vec::new())
    }

    /// Where the host sends a proxied request for `path` (the service's
    /// when `instance` is `None`), with the headers to add.
    fn proxy(&self, provider: &Provider, instance: Option<&Instance>, path: &str) -> Outcome<ProxyTarget>;
}

/// Exports a type implementing [`Broker`] as the plugin's component exports.
#[macro_export]
macro_rules! export_broker {
    ($broker:ty) => {
        const _: () = {
            use $crate::broker::bindings::exports::torii::plugin::service_broker as wit;
            use $crate::broker::{App, Binding, Broker, Change, Error, Instance, OperationState, Provider, ProxyTarget, Requester, Service, Unit};

            $crate::__plugin_state!($broker, <$broker as Broker>::init);

            struct ToriiExport;

            impl wit::Guest for ToriiExport {
                fn init(config: String) -> Result<(), String> {
                    init_state(config)
                }
                fn health() -> Result<(), String> {
                    with(|s| s.health())
                }
                fn catalog(provider: Provider) -> Result<Vec<Service>, Error> {
                    with(|s| s.catalog(&provider))
                }
                fn create_instance(provider: Provider, instance: Instance, who: Requester) -> Result<Change, Error> {
                    with(|s| s.create_instance(&provider, &instance, &who))
                }
                fn update_instance(provider: Provider, instance: Instance, who: Requester) -> Result<Change, Error> {
                    with(|s| s.update_instance(&provider, &instance, &who))
                }
                fn remove_instance(provider: Provider, instance: Instance, who: Requester) -> Result<Change, Error> {
                    with(|s| s.remove_instance(&provider, &instance, &who))
                }
                fn last_operation(provider: Provider, instance: Instance, operation: String) -> Result<OperationState, Error> {
                    with(|s| s.last_operation(&provider, &instance, &operation))
                }
                fn bind_app(provider: Provider, instance: Instance, app: App, parameters: Vec<(String, String)>, who: Requester) -> Result<Binding, Error> {
                    with(|s| s.bind_app(&provider, &instance, &app, &parameters, &who))
                }
                fn unbind_app(provider: Provider, instance: Instance, app: App, binding: String, who: Requester) -> Result<(), Error> {
                    with(|s| s.unbind_app(&provider, &instance, &app, &binding, &who))
                }
                fn bind_unit(provider: Provider, instance: Instance, app: App, unit: Unit) -> Result<(), Error> {
                    with(|s| s.bind_unit(&provider, &instance, &app, &unit))
                }
                fn unbind_unit(provider: Provider, instance: Instance, app: App, unit: Unit) -> Result<(), Error> {
                    with(|s| s.unbind_unit(&provider, &instance, &app, &unit))
                }
                fn status(provider: Provider, instance: Instance) -> Result<String, Error> {
                    with(|s| s.status(&provider, &instance))
                }
                fn info(provider: Provider, instance: Instance) -> Result<Vec<(String, String)>, Error> {
                    with(|s| s.info(&provider, &instance))
                }
                fn proxy(provider: Provider, instance: Option<Instance>, path: String) -> Result<ProxyTarget, Error> {
                    with(|s| s.proxy(&provider, instance.as_ref(), &path))
                }
            }

            $crate::broker::bindings::__export_service_broker_world!(ToriiExport with_types_in $crate::broker::bindings);
        };
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_pads_as_the_standard_says() {
        assert_eq!(super::base64(b"user:pass"), "dXNlcjpwYXNz");
        assert_eq!(super::base64(b"a"), "YQ==");
        assert_eq!(super::base64(b"ab"), "YWI=");
        assert_eq!(super::base64(b""), "");
    }

    #[test]
    fn forms_escape_what_a_form_must() {
        let pairs = [("app-name".to_string(), "my app".to_string()), ("parameters.x".to_string(), "a&b=c/é".to_string())];
        assert_eq!(super::form(&pairs), "app-name=my+app&parameters.x=a%26b%3Dc%2F%C3%A9");
    }
}
