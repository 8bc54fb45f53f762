//! The `provisioner` plugin kind.

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "torii:plugin/provisioner-plugin",
        pub_export_macro: true,
        export_macro_name: "__export_provisioner_world",
        default_bindings_module: "torii_plugin_sdk::provisioner::bindings",
        with: {
            "torii:plugin/log@0.7.0": torii_plugin_sdk::capabilities::bindings::torii::plugin::log,
            "torii:plugin/kv@0.7.0": torii_plugin_sdk::capabilities::bindings::torii::plugin::kv,
            "torii:plugin/app-runtime@0.7.0": torii_plugin_sdk::capabilities::bindings::torii::plugin::app_runtime,
            "torii:plugin/containers@0.7.0": torii_plugin_sdk::capabilities::bindings::torii::plugin::containers,
            "torii:plugin/swarm@0.7.0": torii_plugin_sdk::capabilities::bindings::torii::plugin::swarm,
        },
    });
}

pub use bindings::exports::torii::plugin::provisioner::{
    Applied, AppState, AppVersion, EnvVar, Error, Process, ProcessStatus, Repair, Route, ShellTarget, Unit, UnitUsage, VolumeBind,
};

/// FNV-1a of the parts a unit is made from (image, command, env, plan…),
/// each ended by a NUL so parts never run into each other: a unit whose hash
/// differs from the desired one's is replaced.
pub fn config_hash<'a>(parts: impl IntoIterator<Item = &'a str>) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain([0u8]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// What a provisioner call answers: the value, or a typed [`Error`] (the
/// host maps each case to one HTTP status).
pub type Outcome<T> = Result<T, Error>;

// A plain message is a refusal the user reads (400). Name the other cases
// where they apply ([`Error::NotFound`], [`Error::Unavailable`], ...).
invalid_from_text!(Error);

impl ProcessStatus {
    /// The unit status tsuru shows for units of a process in this status.
    pub fn as_str(self) -> &'static str {
        match self {
            ProcessStatus::Started => "started",
            ProcessStatus::Stopped => "stopped",
            ProcessStatus::Asleep => "asleep",
        }
    }

    pub fn running(self) -> bool {
        self == ProcessStatus::Started
    }
}

/// What a provisioner plugin implements. One value lives per plugin
/// instance, made by [`Provisioner::init`] from the plugin's config table.
/// Calls come from the host after it changed the app's desired state.
pub trait Provisioner: Sized + 'static {
    fn init(config: serde_json::Value) -> Result<Self, String>;

    fn health(&self) -> Result<(), String> {
        Ok(())
    }

    /// `Err` with the message the user sees when `kind` cannot be deployed.
    fn can_deploy(&self, kind: &str) -> Outcome<()>;
    fn prepare(&self, desired: &AppState, version: &AppVersion) -> Outcome<Vec<String>>;
    /// Makes the backend run `desired`; the routes it serves now.
    fn apply(&self, desired: &AppState) -> Outcome<Applied>;
    fn units(&self, desired: &AppState) -> Outcome<Vec<Unit>>;
    fn kill_unit(&self, desired: &AppState, unit: &str) -> Outcome<()>;
    fn set_unit_status(&self, desired: &AppState, unit: &str, status: &str) -> Outcome<()>;
    fn run(&self, desired: &AppState, command: &str, once: bool, isolated: bool) -> Outcome<Vec<String>>;
    fn destroy(&self, app: &str) -> Outcome<()>;

    /// Moves units to node `to` (provisioners that place units on nodes).
    fn move_units(&self, _desired: &AppState, _units: &[String], _to: &str) -> Outcome<Vec<String>> {
        Err(Error::Unsupported("this provisioner does not place units on nodes".into()))
    }

    /// Spreads the app's units evenly over the nodes.
    fn rebalance(&self, _desired: &AppState, _dry: bool) -> Outcome<Vec<String>> {
        Err(Error::Unsupported("this provisioner does not place units on nodes".into()))
    }

    /// Repairs the app's drift from `desired` (healing); the repairs made.
    fn reconcile(&self, _desired: &AppState) -> Outcome<Vec<Repair>> {
        Ok(vec![])
    }

    /// Where an interactive shell into the app runs (provisioners whose
    /// units are containers).
    fn open_shell(&self, _desired: &AppState, _unit: &str, _isolated: bool) -> Outcome<ShellTarget> {
        Err(Error::Unsupported("this provisioner's units are not containers: there is no shell to open in them".into()))
    }

    /// The shell in `target` ended: an isolated container goes.
    fn close_shell(&self, _desired: &AppState, _target: &ShellTarget) -> Outcome<()> {
        Ok(())
    }

    /// What the app's running units use now (app autoscale by CPU).
    fn usage(&self, _desired: &AppState) -> Outcome<Vec<UnitUsage>> {
        Err(Error::Unsupported("this provisioner's units have no CPU of their own to measure".into()))
    }

    /// Builds a platform's image on the nodes of `pool` (provisioners that
    /// build images); progress lines.
    fn build_platform(&self, _pool: &str, _name: &str, _version: u32, _context: &str, _args: &[(String, String)]) -> Outcome<Vec<String>> {
        Err(Error::Unsupported("this provisioner builds no images".into()))
    }
}

/// Exports a type implementing [`Provisioner`] as the plugin's component exports.
#[macro_export]
macro_rules! export_provisioner {
    ($provisioner:ty) => {
        const _: () = {
            use $crate::provisioner::bindings::exports::torii::plugin::provisioner;
            use $crate::provisioner::{Applied, AppState, AppVersion, Error, Provisioner, ShellTarget, Unit};

            $crate::__plugin_state!($provisioner, <$provisioner as Provisioner>::init);

            struct ToriiExport;

            impl provisioner::Guest for ToriiExport {
                fn init(config: String) -> Result<(), String> {
                    init_state(config)
                }
                fn health() -> Result<(), String> {
                    with(|s| s.health())
                }
                fn can_deploy(kind: String) -> Result<(), Error> {
                    with(|s| s.can_deploy(&kind))
                }
                fn prepare(desired: AppState, version: AppVersion) -> Result<Vec<String>, Error> {
                    with(|s| s.prepare(&desired, &version))
                }
                fn apply(desired: AppState) -> Result<Applied, Error> {
                    with(|s| s.apply(&desired))
                }
                fn units(desired: AppState) -> Result<Vec<Unit>, Error> {
                    with(|s| s.units(&desired))
                }
                fn kill_unit(desired: AppState, unit: String) -> Result<(), Error> {
                    with(|s| s.kill_unit(&desired, &unit))
                }
                fn set_unit_status(desired: AppState, unit: String, status: String) -> Result<(), Error> {
                    with(|s| s.set_unit_status(&desired, &unit, &status))
                }
                fn run(desired: AppState, command: String, once: bool, isolated: bool) -> Result<Vec<String>, Error> {
                    with(|s| s.run(&desired, &command, once, isolated))
                }
                fn destroy(app: String) -> Result<(), Error> {
                    with(|s| s.destroy(&app))
                }
                fn move_units(desired: AppState, units: Vec<String>, to: String) -> Result<Vec<String>, Error> {
                    with(|s| s.move_units(&desired, &units, &to))
                }
                fn rebalance(desired: AppState, dry: bool) -> Result<Vec<String>, Error> {
                    with(|s| s.rebalance(&desired, dry))
                }
                fn reconcile(desired: AppState) -> Result<Vec<$crate::provisioner::Repair>, Error> {
                    with(|s| s.reconcile(&desired))
                }
                fn open_shell(desired: AppState, unit: String, isolated: bool) -> Result<ShellTarget, Error> {
                    with(|s| s.open_shell(&desired, &unit, isolated))
                }
                fn close_shell(desired: AppState, target: ShellTarget) -> Result<(), Error> {
                    with(|s| s.close_shell(&desired, &target))
                }
                fn usage(desired: AppState) -> Result<Vec<$crate::provisioner::UnitUsage>, Error> {
                    with(|s| s.usage(&desired))
                }
                fn build_platform(pool: String, name: String, version: u32, context: String, args: Vec<(String, String)>) -> Result<Vec<String>, Error> {
                    with(|s| s.build_platform(&pool, &name, version, &context, &args))
                }
            }

            $crate::provisioner::bindings::__export_provisioner_world!(ToriiExport with_types_in $crate::provisioner::bindings);
        };
    };
}

#[cfg(test)]
mod tests {
    use super::config_hash;

    #[test]
    fn config_hash_tells_parts_apart() {
        assert_eq!(config_hash(["a", "b"]), config_hash(["a", "b"]));
        assert_ne!(config_hash(["ab", ""]), config_hash(["a", "b"]));
        assert_ne!(config_hash(["A=1"]), config_hash(["A=2"]));
    }
}
