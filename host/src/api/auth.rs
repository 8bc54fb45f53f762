//! `/auth/scheme`, login, logout, and the identity provider's side of a
//! single sign-on scheme (`/1.0/auth/saml`: the scheme's metadata and the
//! provider's callback).

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::events::record;
use crate::events::Target;
use super::params::Params;
use super::users::create_user;
use super::{AppState, Caller, ClientIp, Routes, empty, json, json_untyped};
use crate::auth::{TokenKind, hash_token, new_session_token};
use crate::error::{ApiError, ApiResult};
use crate::plugin::auth_scheme::{AuthCallError, SchemeError};
use crate::store::now_millis;

pub(super) fn routes(r: Routes) -> Routes {
    r.add("1.0", Method::GET, "/auth/scheme", scheme)
        .add("1.0", Method::POST, "/auth/login", login)
        .add("1.0", Method::POST, "/users/{email}/tokens", login_as)
        .add("1.0", Method::DELETE, "/users/tokens", logout)
        .add("1.0", Method::GET, "/auth/saml", metadata)
        .add("1.0", Method::POST, "/auth/saml", callback)
}

/// What tsuru answers on the SSO routes when the scheme has no such thing.
fn only_sso(e: AuthCallError) -> ApiError {
    match e {
        AuthCallError::Scheme(SchemeError::Unsupported) => ApiError::bad_request("This URL is only supported with saml enabled"),
        other => other.into(),
    }
}

async fn metadata(State(server): AppState) -> ApiResult<Response> {
    let xml = server.scheme.metadata().await.map_err(only_sso)?;
    Ok(([(header::CONTENT_TYPE, "application/xml")], xml).into_response())
}

/// The identity provider's answer, posted by the user's browser. A login
/// that fails is a page saying why (200, as tsuru answers); a post that is
/// not an answer at all is a 400.
async fn callback(State(server): AppState, params: Params) -> ApiResult<Response> {
    let page = match server.scheme.callback(params.pairs()).await {
        Ok(()) => LOGIN_DONE.to_string(),
        Err(AuthCallError::Scheme(SchemeError::InvalidInput(m))) => return Err(ApiError::bad_request(m)),
        Err(e @ (AuthCallError::Scheme(SchemeError::Unsupported) | AuthCallError::Plugin(_))) => return Err(only_sso(e)),
        Err(AuthCallError::Scheme(
            SchemeError::Unauthorized(m)
            | SchemeError::Forbidden(m)
            | SchemeError::NotFound(m)
            | SchemeError::Conflict(m)
            | SchemeError::Internal(m),
        )) => LOGIN_FAILED.replace("{}", &html_escape(&m)),
    };
    Ok(([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page).into_response())
}

/// tsuru's pages for the end of a single sign-on.
const LOGIN_DONE: &str = "\n\t<script>window.close();</script>\n\t<h1>Login Successful!</h1>\n\t<p>You can close this window now.</p>\n";
const LOGIN_FAILED: &str = "\n\t<h1>Login Failed!</h1>\n\t<pre>{}</pre>\n";

fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

async fn scheme(State(server): AppState) -> ApiResult<Response> {
    let info = server.scheme.info().await?;
    let data: Value = match info.data {
        None => Value::Null,
        Some(text) => serde_json::from_str(&text)
            .map_err(|e| ApiError::internal(format!("auth scheme {:?} returned bad data: {e}", server.scheme.name())))?,
    };
    #[derive(serde::Serialize)]
    struct SchemeJson {
        name: String,
        data: Value,
    }
    Ok(json(StatusCode::OK, &SchemeJson { name: info.name, data }))
}

async fn login(state: AppState, ip: ClientIp, params: Params) -> ApiResult<Response> {
    do_login(state, ip, params.pairs()).await
}

/// Same as login with the email from the path, overridable by the body.
async fn login_as(state: AppState, ip: ClientIp, Path(email): Path<String>, params: Params) -> ApiResult<Response> {
    let mut pairs = params.pairs();
    if !pairs.iter().any(|(k, _)| k == "email") {
        pairs.push(("email".into(), email));
    }
    do_login(state, ip, pairs).await
}

async fn do_login(State(server): AppState, ip: ClientIp, pairs: Vec<(String, String)>) -> ApiResult<Response> {
    let login = server.scheme.authenticate(pairs).await?;
    let email = login.email;
    if server.store.user(&email).await?.is_none() {
        if !login.create {
            return Err(ApiError::not_found("user not found"));
        }
        // First login through an identity provider that may create users.
        let data = serde_json::json!([{"name": "email", "value": email}]);
        let event = record(&server, None, &ip, "user.create", Target::new("user", &email), data).await?;
        event.done(create_user(&server, &email, "").await).await?;
    }
    if let Some(groups) = &login.groups
        && server.store.set_user_groups(&email, &bounded_groups(&email, groups)).await?
    {
        // Group bindings grant differently now.
        server.auth.invalidate();
    }
    let token = new_session_token();
    let now = now_millis();
    let expires = now + i64::from(server.config.auth.token_expire_days) * 86_400_000;
    server
        .store
        .create_session(&hash_token(&token), &email, now, expires, server.config.auth.max_simultaneous_sessions)
        .await?;
    if server.config.auth.max_simultaneous_sessions > 0 {
        // Older sessions may just have been dropped.
        server.auth.invalidate();
    }
    Ok(json_untyped(StatusCode::OK, &serde_json::json!({ "token": token })))
}

/// The most groups a user keeps, and the longest group name: what an IdP
/// reports is bounded like everything else a tenant's identity carries.
const MAX_GROUPS: usize = 1000;
const MAX_GROUP_BYTES: usize = 256;

fn bounded_groups(email: &str, groups: &[String]) -> Vec<String> {
    let kept: Vec<String> = groups.iter().filter(|g| !g.is_empty() && g.len() <= MAX_GROUP_BYTES).take(MAX_GROUPS).cloned().collect();
    if kept.len() < groups.len() {
        tracing::warn!(user = email, reported = groups.len(), kept = kept.len(), "auth scheme reported groups beyond the bounds ({MAX_GROUPS} groups of at most {MAX_GROUP_BYTES} bytes); the rest are ignored");
    }
    kept
}

async fn logout(State(server): AppState, Caller(caller): Caller) -> ApiResult<Response> {
    if caller.kind == TokenKind::Session {
        server.store.delete_session(&caller.token_hash).await?;
        server.auth.invalidate();
    }
    Ok(empty(StatusCode::OK))
}
