//! Platforms (API-NOTES §2.13): records with versions. Each uploaded
//! Dockerfile is a new version; provisioners build the image it names.

use axum::extract::{Multipart, Path, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde::Serialize;
use serde_json::json;
use std::collections::BTreeMap;

use super::events::{record, request_data};
use super::params::{Params, parse_bool};
use super::stream::{KEEPALIVE, json_stream};
use super::{AppState, Caller, ClientIp, Routes, empty, json as json_response, json_list};
use crate::auth::Identity;
use crate::error::{ApiError, ApiResult};
use crate::events::Target;
use crate::store::AppColumn;

pub(super) fn routes(r: Routes) -> Routes {
    r.add("1.0", Method::GET, "/platforms", list)
        .add("1.0", Method::POST, "/platforms", add)
        .add("1.6", Method::GET, "/platforms/{name}", info)
        .add("1.0", Method::PUT, "/platforms/{name}", update)
        .add("1.0", Method::DELETE, "/platforms/{name}", remove)
        .add("1.6", Method::POST, "/platforms/{name}/rollback", rollback)
}

const INVALID_NAME: &str = "Invalid platform name, should have at most 40 characters, containing only lower case letters, numbers or dashes, starting with a letter.";
const MAX_DOCKERFILE: usize = 1 << 20;

#[derive(Serialize)]
struct PlatformJson {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "Disabled")]
    disabled: bool,
}

/// The parts of a platform upload: the Dockerfile (if sent) and the other fields.
struct Upload {
    dockerfile: Option<String>,
    fields: BTreeMap<String, String>,
}

async fn read_upload(mut multipart: Multipart) -> ApiResult<Upload> {
    let mut upload = Upload { dockerfile: None, fields: BTreeMap::new() };
    while let Some(field) = multipart.next_field().await.map_err(|e| ApiError::bad_request(e.to_string()))? {
        let name = field.name().unwrap_or_default().to_string();
        let text = field.text().await.map_err(|e| ApiError::bad_request(e.to_string()))?;
        if name == "dockerfile_content" {
            if text.len() > MAX_DOCKERFILE {
                return Err(ApiError::bad_request("dockerfile_content is larger than 1 MiB"));
            }
            upload.dockerfile = Some(text);
        } else {
            upload.fields.insert(name, text);
        }
    }
    Ok(upload)
}

/// Who sees and may use disabled platforms.
pub(super) fn may_manage(caller: &Identity) -> bool {
    caller.allows("platform.update", &[]) || caller.allows("platform.create", &[])
}

async fn list(State(server): AppState, Caller(caller): Caller) -> ApiResult<Response> {
    let show_disabled = may_manage(&caller);
    let out: Vec<PlatformJson> = server
        .store
        .platforms()
        .await?
        .into_iter()
        .filter(|p| show_disabled || !p.disabled)
        .map(|p| PlatformJson { name: p.name, disabled: p.disabled })
        .collect();
    Ok(json_list(&out))
}

async fn info(State(server): AppState, Caller(caller): Caller, Path(name): Path<String>) -> ApiResult<Response> {
    if !(caller.allows("platform.update", &[]) || caller.allows("platform.read", &[])) {
        return Err(ApiError::forbidden());
    }
    let disabled = server.store.platform_disabled(&name).await?.ok_or_else(|| ApiError::internal("Invalid platform"))?;
    let images: Vec<String> = server.store.platform_versions(&name).await?.into_iter().map(|v| v.image).collect();
    Ok(json_response(StatusCode::OK, &json!({"platform": {"Name": name, "Disabled": disabled}, "images": images})))
}

async fn add(State(server): AppState, Caller(caller): Caller, ip: ClientIp, multipart: Multipart) -> ApiResult<Response> {
    caller.require("platform.create", &[])?;
    let upload = read_upload(multipart).await?;
    let name = upload.fields.get("name").cloned().unwrap_or_default();
    if !super::names::valid(&name) {
        return Err(ApiError::bad_request(INVALID_NAME));
    }
    let dockerfile = upload.dockerfile.ok_or_else(|| ApiError::bad_request("http: no such file"))?;
    if dockerfile.trim().is_empty() {
        return Err(ApiError::bad_request("Missing file content."));
    }
    let mut args = upload.fields.clone();
    args.remove("name");
    let build_args = serde_json::to_string(&args).expect("serialisable");
    let data = json!(upload.fields.iter().map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>());
    let event = record(&server, Some(&caller), &ip, "platform.create", Target::new("platform", &name), data).await?;
    Ok(json_stream(StatusCode::OK, KEEPALIVE, move |w| async move {
        let work = async {
            if server.store.platform_disabled(&name).await?.is_some() {
                return Err(ApiError::conflict("Duplicate platform"));
            }
            // Built first: a platform that does not build is not added.
            let built = crate::deploy::platform::build(&server, &name, 1, &dockerfile, &args, &w).await?;
            w.message(&format!("---- Recording platform {name:?} ----\n")).await;
            server.store.create_platform(&name, &dockerfile, &build_args).await.map_err(|e| match e {
                crate::store::StoreError::Conflict(_) => ApiError::conflict("Duplicate platform"),
                other => other.into(),
            })?;
            Ok(built)
        };
        let result = event.done(work.await).await.map_err(|e| e.message);
        if let Ok(built) = result {
            if built == 0 {
                let image = crate::store::platform_image(&name, 1);
                w.message(&format!("Image {image} will be built by the provisioner on first use.\n")).await;
            }
            w.message("Platform successfully added!\n").await;
        }
        result.map(|_| ())
    }))
}

async fn update(State(server): AppState, Caller(caller): Caller, ip: ClientIp, Path(name): Path<String>, multipart: Multipart) -> ApiResult<Response> {
    caller.require("platform.update", &[])?;
    let upload = read_upload(multipart).await?;
    let disabled = match upload.fields.get("disabled").filter(|d| !d.is_empty()) {
        None => None,
        Some(raw) => Some(parse_bool(raw).ok_or_else(|| ApiError::bad_request(format!("invalid disabled: {raw:?}")))?),
    };
    let dockerfile = upload.dockerfile.filter(|d| !d.trim().is_empty());
    if disabled.is_none() && dockerfile.is_none() {
        return Err(ApiError::bad_request("either disabled or dockerfile must be provided"));
    }
    if server.store.platform_disabled(&name).await?.is_none() {
        return Err(ApiError::internal("Invalid platform"));
    }
    let mut args = upload.fields.clone();
    args.remove("disabled");
    let build_args = serde_json::to_string(&args).expect("serialisable");
    let data = json!([{"name": ":name", "value": name}, {"name": "disabled", "value": disabled.map(|d| d.to_string()).unwrap_or_default()}]);
    let event = record(&server, Some(&caller), &ip, "platform.update", Target::new("platform", &name), data).await?;
    Ok(json_stream(StatusCode::OK, KEEPALIVE, move |w| async move {
        let work = async {
            if let Some(d) = disabled {
                server.store.set_platform_disabled(&name, d).await?;
            }
            if let Some(dockerfile) = &dockerfile {
                let next = server.store.platform_versions(&name).await?.iter().map(|v| v.version).max().unwrap_or(0) + 1;
                crate::deploy::platform::build(&server, &name, next, dockerfile, &args, &w).await?;
                let version = server.store.add_platform_version(&name, dockerfile, &build_args).await?;
                w.message(&format!("---- Recorded version {version} of platform {name:?} ----\n")).await;
                // Apps of the platform are rebuilt on their next deploy.
            }
            Ok::<(), ApiError>(())
        };
        let result = event.done(work.await).await.map_err(|e| e.message);
        if result.is_ok() {
            w.message("Platform successfully updated!\n").await;
        }
        result
    }))
}

async fn remove(State(server): AppState, Caller(caller): Caller, ip: ClientIp, Path(name): Path<String>) -> ApiResult<Response> {
    caller.require("platform.delete", &[])?;
    if server.store.platform_disabled(&name).await?.is_none() {
        return Err(ApiError::not_found("Platform doesn't exist."));
    }
    let data = request_data(&Params::default(), &[("name", &name)]);
    let event = record(&server, Some(&caller), &ip, "platform.delete", Target::new("platform", &name), data).await?;
    let work = async {
        if !server.store.app_names_where(AppColumn::Platform, &name).await?.is_empty() {
            return Err(ApiError::internal("Platform has apps. You must remove them before remove the platform."));
        }
        server.store.delete_platform(&name).await?;
        Ok(empty(StatusCode::OK))
    };
    event.done(work.await).await
}

/// `image` is a version number or an image name tagged `vN`.
fn parse_version(raw: &str) -> Option<i64> {
    raw.parse::<i64>().ok().or_else(|| raw.rsplit_once(":v").and_then(|(_, v)| v.parse().ok())).filter(|v| *v > 0)
}

async fn rollback(State(server): AppState, Caller(caller): Caller, ip: ClientIp, Path(name): Path<String>, params: Params) -> ApiResult<Response> {
    caller.require("platform.update", &[])?;
    let raw = params.get("image").unwrap_or_default();
    let version = parse_version(&raw).ok_or_else(|| ApiError::bad_request(format!("invalid image version {raw:?}")))?;
    if server.store.platform_disabled(&name).await?.is_none() {
        return Err(ApiError::internal("Invalid platform"));
    }
    let data = request_data(&params, &[("name", &name)]);
    let event = record(&server, Some(&caller), &ip, "platform.update", Target::new("platform", &name), data).await?;
    Ok(json_stream(StatusCode::OK, KEEPALIVE, move |w| async move {
        w.message(&format!("---- Rolling back platform {name:?} to version {version} ----\n")).await;
        let result = server.store.set_platform_version(&name, version).await.map_err(ApiError::from);
        let result = event.done(result).await.map_err(|e| e.message);
        if result.is_ok() {
            w.message("Platform successfully updated!\n").await;
        }
        result
    }))
}
