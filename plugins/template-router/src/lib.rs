//! A router plugin to start from: it keeps, for each app, the names and
//! backends torii hands it (in its own `kv`) and answers the names it
//! serves. Replace the bodies of `ensure` and `remove` with calls to your
//! proxy (`torii_plugin_sdk::http`, granted `http` and an allow list).

use torii_plugin_sdk::router::{Outcome, Route, Router};
use torii_plugin_sdk::{export_router, kv, log};

struct MyRouter {
    /// A config key of the plugin entry (`[plugin.config] greeting = "…"`).
    greeting: String,
}

impl Router for MyRouter {
    fn init(config: serde_json::Value) -> Result<Self, String> {
        let greeting = config.get("greeting").and_then(|g| g.as_str()).unwrap_or("hello").to_string();
        Ok(MyRouter { greeting })
    }

    fn ensure(&self, route: &Route) -> Outcome<Vec<String>> {
        let hosts = route.hosts();
        let backends: Vec<String> = route.backends.iter().map(|b| format!("v{} x{}: {}", b.version, b.weight, b.addresses.join(" "))).collect();
        kv::set_json(&format!("{}/{}", route.router, route.app), &(&hosts, &backends))?;
        log::info(&format!("{}: router {} serves app {} at {}", self.greeting, route.router, route.app, hosts.join(", ")));
        Ok(hosts)
    }

    fn remove(&self, router: &str, app: &str) -> Outcome<()> {
        kv::delete(&format!("{router}/{app}"))?;
        Ok(())
    }
}

export_router!(MyRouter);
