//! The `iaas` plugin kind: make, describe, list and destroy machines (hosts
//! running a Docker engine) through a cloud's API ([`crate::http`]) or from
//! an inventory of hosts the operator lists.

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "torii:plugin/iaas-plugin",
        pub_export_macro: true,
        export_macro_name: "__export_iaas_world",
        default_bindings_module: "torii_plugin_sdk::iaas::bindings",
        with: {
            "torii:plugin/log@0.7.0": torii_plugin_sdk::capabilities::bindings::torii::plugin::log,
            "torii:plugin/kv@0.7.0": torii_plugin_sdk::capabilities::bindings::torii::plugin::kv,
        },
    });
}

pub use bindings::exports::torii::plugin::iaas::{Error, Machine};

/// What an IaaS call answers: the value, or a typed [`Error`].
pub type Outcome<T> = Result<T, Error>;

// A plain message is parameters that cannot make a machine ([`Error::Invalid`]).
invalid_from_text!(Error);

impl Machine {
    /// The value of creation parameter `key`.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.creation_params.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// The value of `key` among `params` (the last one given wins).
pub fn param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// What an IaaS plugin implements. One value lives per plugin instance,
/// made by [`Iaas::init`] from the plugin's config table.
pub trait Iaas: Sized + 'static {
    fn init(config: serde_json::Value) -> Result<Self, String>;

    fn health(&self) -> Result<(), String> {
        Ok(())
    }

    fn create_machine(&self, params: &[(String, String)]) -> Outcome<Machine>;
    fn describe_machine(&self, id: &str) -> Outcome<Machine>;
    fn destroy_machine(&self, id: &str) -> Outcome<()>;
    fn list_machines(&self) -> Outcome<Vec<Machine>>;
}

/// Exports a type implementing [`Iaas`] as the plugin's component exports.
#[macro_export]
macro_rules! export_iaas {
    ($iaas:ty) => {
        const _: () = {
            use $crate::iaas::bindings::exports::torii::plugin::iaas;
            use $crate::iaas::{Error, Iaas, Machine};

            $crate::__plugin_state!($iaas, <$iaas as Iaas>::init);

            struct ToriiExport;

            impl iaas::Guest for ToriiExport {
                fn init(config: String) -> Result<(), String> {
                    init_state(config)
                }
                fn health() -> Result<(), String> {
                    with(|s| s.health())
                }
                fn create_machine(params: Vec<(String, String)>) -> Result<Machine, Error> {
                    with(|s| s.create_machine(&params))
                }
                fn describe_machine(id: String) -> Result<Machine, Error> {
                    with(|s| s.describe_machine(&id))
                }
                fn destroy_machine(id: String) -> Result<(), Error> {
                    with(|s| s.destroy_machine(&id))
                }
                fn list_machines() -> Result<Vec<Machine>, Error> {
                    with(|s| s.list_machines())
                }
            }

            $crate::iaas::bindings::__export_iaas_world!(ToriiExport with_types_in $crate::iaas::bindings);
        };
    };
}
