//! Role-based access control: tsuru's permission tree (`permissions.txt`: its 245
//! schemes with the context types each allows, and torii's `plugin.*` for the
//! plugin admin API) and the one check every handler goes through (API-NOTES §1.8).
//!
//! A grant is (scheme, context type, context value). Holding a scheme implies
//! its descendants; the root scheme (`*`, listed as `""`) implies everything.
//! A check passes when a grant's scheme covers the requested one and its
//! context is `global` or equals one of the contexts the handler supplies.

use serde::Serialize;
use std::collections::HashMap;
use std::fmt;
use std::sync::LazyLock;

use crate::store::RoleBinding;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ContextType {
    Global,
    App,
    Team,
    User,
    Pool,
    Iaas,
    Service,
    ServiceInstance,
    Volume,
    Router,
}

impl ContextType {
    pub const ALL: [ContextType; 10] = [
        ContextType::Global,
        ContextType::App,
        ContextType::Team,
        ContextType::User,
        ContextType::Pool,
        ContextType::Iaas,
        ContextType::Service,
        ContextType::ServiceInstance,
        ContextType::Volume,
        ContextType::Router,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ContextType::Global => "global",
            ContextType::App => "app",
            ContextType::Team => "team",
            ContextType::User => "user",
            ContextType::Pool => "pool",
            ContextType::Iaas => "iaas",
            ContextType::Service => "service",
            ContextType::ServiceInstance => "service-instance",
            ContextType::Volume => "volume",
            ContextType::Router => "router",
        }
    }

    pub fn parse(s: &str) -> Option<ContextType> {
        ContextType::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl fmt::Display for ContextType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ContextType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// One scheme of the permission tree. `name` is `""` for the root.
#[derive(Debug, Clone)]
pub struct Scheme {
    pub name: String,
    pub contexts: Vec<ContextType>,
}

pub struct Registry {
    /// In file order (which is sorted, root first).
    schemes: Vec<Scheme>,
    by_name: HashMap<String, usize>,
}

static REGISTRY: LazyLock<Registry> = LazyLock::new(|| Registry::parse(include_str!("permissions.txt")));

pub fn registry() -> &'static Registry {
    &REGISTRY
}

impl Registry {
    fn parse(text: &str) -> Registry {
        let mut schemes = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let (name, contexts) = line.split_once("contexts:").expect("permissions.txt: `name  contexts: a,b`");
            let name = match name.trim() {
                "*" => String::new(),
                n => n.to_string(),
            };
            let contexts = contexts
                .trim()
                .split(',')
                .map(|c| ContextType::parse(c.trim()).unwrap_or_else(|| panic!("permissions.txt: context {c:?}")))
                .collect();
            schemes.push(Scheme { name, contexts });
        }
        let by_name = schemes.iter().enumerate().map(|(i, s)| (s.name.clone(), i)).collect();
        Registry { schemes, by_name }
    }

    pub fn schemes(&self) -> &[Scheme] {
        &self.schemes
    }

    /// Looks a scheme up by the name used in role definitions (`*` = root).
    pub fn get(&self, name: &str) -> Option<&Scheme> {
        let key = if name == "*" { "" } else { name };
        self.by_name.get(key).map(|&i| &self.schemes[i])
    }

    /// Position in the registry, for "registry order" listings.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.by_name.get(if name == "*" { "" } else { name }).copied()
    }
}

/// tsuru declares its top-level schemes in this order (its registry order);
/// the rest follow in file order. Listings such as `GET /teams` use it.
const DECLARATION_ORDER: &[&str] = &["app", "team", "service", "service-instance"];

/// Sort key of a top-level scheme name in tsuru's registry order.
pub fn top_level_rank(name: &str) -> usize {
    match DECLARATION_ORDER.iter().position(|n| *n == name) {
        Some(i) => i,
        None => DECLARATION_ORDER.len() + registry().position(name).unwrap_or(usize::MAX - DECLARATION_ORDER.len()),
    }
}

/// `granted` covers `requested` when it is the root, the same scheme, or an ancestor.
pub fn covers(granted: &str, requested: &str) -> bool {
    granted.is_empty()
        || granted == requested
        || (requested.len() > granted.len()
            && requested.starts_with(granted)
            && requested.as_bytes()[granted.len()] == b'.')
}

/// A context a handler checks against, e.g. `team:t1` or `app:myapp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    pub kind: ContextType,
    pub value: String,
}

impl Context {
    pub fn new(kind: ContextType, value: impl Into<String>) -> Context {
        Context { kind, value: value.into() }
    }
    pub fn team(value: impl Into<String>) -> Context {
        Context::new(ContextType::Team, value)
    }
    pub fn user(value: impl Into<String>) -> Context {
        Context::new(ContextType::User, value)
    }
}

/// One expanded grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Permission {
    #[serde(rename = "Name")]
    pub scheme: String,
    #[serde(rename = "ContextType")]
    pub context_type: ContextType,
    #[serde(rename = "ContextValue")]
    pub context_value: String,
}

impl Permission {
    fn matches(&self, scheme: &str, contexts: &[Context]) -> bool {
        covers(&self.scheme, scheme)
            && (self.context_type == ContextType::Global
                || contexts.iter().any(|c| c.kind == self.context_type && c.value == self.context_value))
    }
}

/// Expands role instances into grants. Schemes no longer in the registry are dropped.
pub fn expand(bindings: &[RoleBinding]) -> Vec<Permission> {
    let mut out = Vec::new();
    for b in bindings {
        let Some(context_type) = ContextType::parse(&b.role.context_type) else { continue };
        for scheme in &b.role.schemes {
            if let Some(s) = registry().get(scheme) {
                out.push(Permission {
                    scheme: s.name.clone(),
                    context_type,
                    context_value: b.context_value.clone(),
                });
            }
        }
    }
    out
}

/// The grants a caller holds, with the one check every handler uses.
#[derive(Debug, Clone, Default)]
pub struct Grants(pub Vec<Permission>);

impl Grants {
    /// True when some grant covers `scheme` globally or in one of `contexts`.
    pub fn allows(&self, scheme: &str, contexts: &[Context]) -> bool {
        self.0.iter().any(|p| p.matches(scheme, contexts))
    }

    /// Values of the contexts of `kind` in which the caller holds `scheme`
    /// (`None` when it holds it globally, i.e. everywhere).
    pub fn contexts_for(&self, scheme: &str, kind: ContextType) -> Option<Vec<String>> {
        let mut values = Vec::new();
        for p in &self.0 {
            if !covers(&p.scheme, scheme) {
                continue;
            }
            if p.context_type == ContextType::Global {
                return None;
            }
            if p.context_type == kind && !values.contains(&p.context_value) {
                values.push(p.context_value.clone());
            }
        }
        Some(values)
    }

    /// Whether the caller holds every scheme of `schemes` in context `ctx`
    /// (the rule for assigning roles: you can only hand out what you hold).
    pub fn holds_all(&self, schemes: &[String], ctx: Option<&Context>) -> Result<(), String> {
        let contexts: Vec<Context> = ctx.cloned().into_iter().collect();
        for s in schemes {
            let name = if s == "*" { "" } else { s.as_str() };
            if !self.allows(name, &contexts) {
                let where_ = match ctx {
                    Some(c) => format!("{} {}", c.kind, c.value),
                    None => "global".to_string(),
                };
                return Err(format!("User not authorized to use permission {s}({where_})"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_has_every_scheme() {
        assert_eq!(registry().schemes().len(), 249);
        assert_eq!(registry().get("*").unwrap().name, "");
        assert_eq!(
            registry().get("app.update.env.set").unwrap().contexts,
            vec![ContextType::Global, ContextType::App, ContextType::Team, ContextType::Pool]
        );
        assert!(registry().get("app.nope").is_none());
    }

    #[test]
    fn ancestors_cover_descendants_only_at_dots() {
        assert!(covers("", "app.deploy"));
        assert!(covers("app", "app.deploy"));
        assert!(covers("app.deploy", "app.deploy"));
        assert!(!covers("app.deploy", "app"));
        assert!(!covers("app.dep", "app.deploy"));
    }

    #[test]
    fn context_must_match_unless_global() {
        let grants = Grants(vec![Permission {
            scheme: "app".into(),
            context_type: ContextType::Team,
            context_value: "t1".into(),
        }]);
        assert!(grants.allows("app.deploy", &[Context::team("t1")]));
        assert!(!grants.allows("app.deploy", &[Context::team("t2")]));
        assert!(!grants.allows("app.deploy", &[]));
        assert_eq!(grants.contexts_for("app.read", ContextType::Team), Some(vec!["t1".to_string()]));
    }
}
