//! `/auth/scheme`, login, logout.

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::Value;

use super::params::Params;
use super::{AppState, Caller, Routes, empty, json, json_untyped};
use crate::auth::{TokenKind, hash_token, new_session_token};
use crate::error::{ApiError, ApiResult};
use crate::store::now_millis;

pub(super) fn routes(r: Routes) -> Routes {
    r.add("1.0", Method::GET, "/auth/scheme", scheme)
        .add("1.0", Method::POST, "/auth/login", login)
        .add("1.0", Method::POST, "/users/{email}/tokens", login_as)
        .add("1.0", Method::DELETE, "/users/tokens", logout)
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

async fn login(state: AppState, params: Params) -> ApiResult<Response> {
    do_login(state, params.pairs()).await
}

/// Same as login with the email from the path, overridable by the body.
async fn login_as(state: AppState, Path(email): Path<String>, params: Params) -> ApiResult<Response> {
    let mut pairs = params.pairs();
    if !pairs.iter().any(|(k, _)| k == "email") {
        pairs.push(("email".into(), email));
    }
    do_login(state, pairs).await
}

async fn do_login(State(server): AppState, pairs: Vec<(String, String)>) -> ApiResult<Response> {
    let email = server.scheme.authenticate(pairs).await?;
    if server.store.user(&email).await?.is_none() {
        return Err(ApiError::not_found("user not found"));
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

async fn logout(State(server): AppState, Caller(caller): Caller) -> ApiResult<Response> {
    if caller.kind == TokenKind::Session {
        server.store.delete_session(&caller.token_hash).await?;
        server.auth.invalidate();
    }
    Ok(empty(StatusCode::OK))
}
