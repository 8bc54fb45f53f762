//! Who may read an event: one rule for `GET /events`, `GET /events/{id}`,
//! cancelling, and webhook delivery. An event stores the permission and the
//! contexts it may be read in (`Allowed`); a reader is a set of grants.
//!
//! A user or token reads with its own grants. A webhook reads with its
//! owner team's: every scheme, but only in the contexts the team owns (the
//! team itself and the apps it has access to), never globally, so events of
//! other teams, of the platform (roles, plans, pools, users) and of apps the
//! team has no access to are not delivered to it.

use super::parse_allowed;
use crate::rbac::{ContextType, Grants, Permission};
use crate::store::{AppColumn, Store, StoreResult};

/// Whether `grants` hold the permission stored in an event's `allowed`. An
/// event without one is tsuru's empty scheme: the root only.
pub fn may_read(grants: &Grants, allowed: &str) -> bool {
    let a = parse_allowed(allowed).unwrap_or_default();
    grants.allows(&a.scheme, &a.contexts)
}

/// The grants a webhook of `team` reads events with.
pub async fn team_grants(store: &Store, team: &str) -> StoreResult<Grants> {
    let owned = |kind, value: &str| Permission { scheme: String::new(), context_type: kind, context_value: value.to_string() };
    let mut grants = vec![owned(ContextType::Team, team)];
    for app in store.app_names_where(AppColumn::Team, team).await? {
        grants.push(owned(ContextType::App, &app));
    }
    Ok(Grants(grants))
}
