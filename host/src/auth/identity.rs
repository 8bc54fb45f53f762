//! Resolving a token to an [`Identity`], with a small cache.
//!
//! The cache keeps resolved identities for a few seconds so authenticated
//! reads cost one hash and one map lookup. Any change that can alter an
//! identity on this process (roles, bindings, users, tokens, teams) clears it;
//! other replicas see the change within the TTL.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::tokens::{ServerKey, hash_token};
use crate::error::{ApiError, ApiResult};
use crate::rbac::{self, Context, ContextType, Grants, Permission};
use crate::store::{RoleBinding, Store, SubjectKind, TeamTokenRecord, now_millis};

const CACHE_TTL: Duration = Duration::from_secs(5);
const CACHE_MAX: usize = 50_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Session,
    AppToken,
    ApiKey,
    TeamToken,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    User { email: String },
    TeamToken { token_id: String, team: String },
    /// An app's own token (`TSURU_APP_TOKEN`).
    App { app: String },
}

/// A caller: who they are and every grant they hold.
#[derive(Debug, Clone)]
pub struct Identity {
    pub subject: Subject,
    pub kind: TokenKind,
    /// The user's email, or `<token_id>@tsuru-team-token`.
    pub email: String,
    pub roles: Vec<RoleBinding>,
    pub groups: Vec<String>,
    pub grants: Grants,
    pub token_hash: String,
}

impl Identity {
    pub fn allows(&self, scheme: &str, contexts: &[Context]) -> bool {
        self.grants.allows(scheme, contexts)
    }

    /// The one permission check of the API: `Err(403)` unless allowed.
    pub fn require(&self, scheme: &str, contexts: &[Context]) -> ApiResult<()> {
        if self.allows(scheme, contexts) { Ok(()) } else { Err(ApiError::forbidden()) }
    }

    pub fn user_email(&self) -> Option<&str> {
        match &self.subject {
            Subject::User { email } => Some(email),
            Subject::TeamToken { .. } | Subject::App { .. } => None,
        }
    }
}

struct Cached {
    identity: Option<Arc<Identity>>,
    /// Session expiry (ms) to re-check on hits; 0 = none.
    expires_at: i64,
    fetched: Instant,
}

pub struct Authenticator {
    store: Store,
    key: ServerKey,
    /// The hash of the `tsr` token ([`ServerKey::agent_token`]).
    agent_hash: String,
    cache: Mutex<HashMap<String, Cached>>,
}

impl Authenticator {
    pub fn new(store: Store, key: ServerKey) -> Authenticator {
        let agent_hash = super::tokens::hash_token(&key.agent_token());
        Authenticator { store, key, agent_hash, cache: Mutex::new(HashMap::new()) }
    }

    pub fn key(&self) -> &ServerKey {
        &self.key
    }

    /// Forgets every cached identity; call after any change to who holds what.
    pub fn invalidate(&self) {
        self.cache.lock().unwrap().clear();
    }

    /// Resolves a bare token. `Ok(None)` = not a valid token.
    pub async fn resolve(&self, token: &str) -> ApiResult<Option<Arc<Identity>>> {
        let hash = hash_token(token);
        {
            let cache = self.cache.lock().unwrap();
            if let Some(hit) = cache.get(&hash)
                && hit.fetched.elapsed() < CACHE_TTL
            {
                if hit.expires_at != 0 && hit.expires_at <= now_millis() {
                    return self.expired(&hit.identity);
                }
                return Ok(hit.identity.clone());
            }
        }
        let (identity, expires_at) = self.load(&hash).await?;
        {
            let mut cache = self.cache.lock().unwrap();
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
            cache.insert(hash, Cached { identity: identity.clone(), expires_at, fetched: Instant::now() });
        }
        if expires_at != 0 && expires_at <= now_millis() {
            return self.expired(&identity);
        }
        Ok(identity)
    }

    fn expired(&self, identity: &Option<Arc<Identity>>) -> ApiResult<Option<Arc<Identity>>> {
        match identity.as_ref().map(|i| i.kind) {
            Some(TokenKind::TeamToken) => Err(ApiError::internal("team token expired")),
            _ => Ok(None),
        }
    }

    async fn load(&self, hash: &str) -> ApiResult<(Option<Arc<Identity>>, i64)> {
        if let Some(session) = self.store.session(hash).await? {
            let identity = self.user_identity(&session.email, TokenKind::Session, hash).await?;
            return Ok((Some(Arc::new(identity)), session.expires_at));
        }
        if hash == self.agent_hash {
            return Ok((Some(Arc::new(app_identity(super::tokens::AGENT_APP, hash))), 0));
        }
        if let Some(app) = self.store.app_by_token(hash).await? {
            return Ok((Some(Arc::new(app_identity(&app, hash))), 0));
        }
        if let Some(email) = self.store.user_by_api_key(hash).await? {
            let identity = self.user_identity(&email, TokenKind::ApiKey, hash).await?;
            return Ok((Some(Arc::new(identity)), 0));
        }
        if let Some(token) = self.store.team_token_by_hash(hash).await? {
            self.store.touch_team_token(&token.token_id, now_millis()).await?;
            let identity = self.team_token_identity(&token, hash).await?;
            return Ok((Some(Arc::new(identity)), token.expires_at));
        }
        Ok((None, 0))
    }

    /// A user's identity: their role instances, those bound to the groups
    /// the auth scheme reported at their last login, and the implicit
    /// `user` permission on themselves.
    pub async fn user_identity(&self, email: &str, kind: TokenKind, hash: &str) -> ApiResult<Identity> {
        let groups = self.store.user(email).await?.map(|u| u.groups).unwrap_or_default();
        let roles = self.store.bindings(SubjectKind::User, email, &groups).await?;
        let mut grants = rbac::expand(&roles);
        grants.push(Permission { scheme: "user".into(), context_type: ContextType::User, context_value: email.into() });
        Ok(Identity {
            subject: Subject::User { email: email.into() },
            kind,
            email: email.into(),
            roles,
            groups,
            grants: Grants(grants),
            token_hash: hash.into(),
        })
    }

    async fn team_token_identity(&self, token: &TeamTokenRecord, hash: &str) -> ApiResult<Identity> {
        let roles = self.store.bindings(SubjectKind::Token, &token.token_id, &[]).await?;
        let grants = rbac::expand(&roles);
        Ok(Identity {
            subject: Subject::TeamToken { token_id: token.token_id.clone(), team: token.team.clone() },
            kind: TokenKind::TeamToken,
            email: format!("{}@tsuru-team-token", token.token_id),
            roles,
            groups: Vec::new(),
            grants: Grants(grants),
            token_hash: hash.into(),
        })
    }
}

/// What an app token may do: only these, only on its own app (API-NOTES §1.2.4).
const APP_TOKEN_SCHEMES: [&str; 5] =
    ["app.update.unit.register", "app.update.log", "app.update.unit.status", "app.read.deploy", "app.read.log"];

fn app_identity(app: &str, hash: &str) -> Identity {
    let grants = APP_TOKEN_SCHEMES
        .iter()
        .map(|s| Permission { scheme: (*s).into(), context_type: ContextType::App, context_value: app.into() })
        .collect();
    Identity {
        subject: Subject::App { app: app.into() },
        kind: TokenKind::AppToken,
        email: format!("{app}@tsuru-app-token"),
        roles: Vec::new(),
        groups: Vec::new(),
        grants: Grants(grants),
        token_hash: hash.into(),
    }
}
