//! `POST /apps/{app}/deploy` (API-NOTES §2.7, §1.6.2): the source rules,
//! permissions by source kind, and tsuru's raw text stream ending in `OK`.
//! The pipeline itself is `crate::deploy`.

use super::apps::{AppTarget, app_contexts, app_event, cancelable_app_event};
use super::provision::api_error;
use crate::apps::{Quiet, change, converge, provisioner_of};
use super::params::Params;
use super::stream::{KEEPALIVE, TextWriter, text_stream};
use super::{AppState, Caller, ClientIp, Routes};
use crate::deploy::{DeployError, Progress, build_context, deploy_build, deploy_image, deploy_upload, image_name, placed};
use crate::error::{ApiError, ApiResult};
use crate::server::Server;
use crate::store::NewVersion;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

pub(super) fn routes(r: Routes) -> Routes {
    r.add("1.0", Method::POST, "/apps/{app}/deploy", deploy)
        .add("1.0", Method::POST, "/apps/{app}/deploy/rollback", rollback)
        .add("1.4", Method::PUT, "/apps/{app}/deploy/rollback/update", rollback_update)
        .add("1.10", Method::DELETE, "/apps/{app}/versions/{version}", version_delete)
        .add("1.0", Method::POST, "/apps/{appname}/diff", diff)
        .add("1.8", Method::POST, "/apps/{app}/routable", routable)
        .add("1.5", Method::POST, "/apps/{app}/build", build)
        .add("1.3", Method::POST, "/apps/{app}/deploy/rebuild", rebuild)
        .torii(Method::GET, "/torii/v1/apps/{app}/versions", versions_list)
}

/// `GET /torii/v1/apps/{app}/versions`: each version with its processes
/// (units, status), its share of the traffic and where its outbound HTTP
/// may go.
async fn versions_list(State(server): AppState, Caller(caller): Caller, AppTarget(app): AppTarget) -> ApiResult<Response> {
    caller.require("app.read", &app_contexts(&app))?;
    let out: Vec<Value> = server
        .store
        .versions(&app.name)
        .await?
        .iter()
        .map(|v| {
            json!({
                "version": v.version,
                "image": image_name(&app.name, v.version),
                "processes": v.processes,
                "routable": v.routable,
                "weight": v.weight,
                "allowedOutboundHosts": v.outbound,
                "disabledReason": v.disabled_reason,
                "createdAt": super::time_json(v.created_at),
            })
        })
        .collect();
    Ok(super::json(axum::http::StatusCode::OK, &out))
}

/// `POST /1.8/apps/{app}/routable`: a version joins the traffic (shared
/// equally among routable versions) or leaves it.
async fn routable(State(server): AppState, Caller(caller): Caller, ip: ClientIp, AppTarget(app): AppTarget, params: Params) -> ApiResult<Response> {
    let raw = params.field("version").unwrap_or_default();
    let version: i64 = raw.parse().ok().filter(|n| *n > 0).ok_or_else(|| ApiError::bad_request(format!("Invalid version: {raw}")))?;
    let is_routable = params.optional_bool("isRoutable")?.unwrap_or(false);
    caller.require("app.update.routable", &app_contexts(&app))?;
    let data = json!({"app": app.name, "version": version, "isRoutable": is_routable});
    let event = app_event(&server, &caller, &ip, "app.update.routable", &app, data).await?;
    let result = converge(&server, &app.name, &Quiet, |d| change::set_routable(d, version, is_routable)).await;
    event.done(result.map(|_| axum::http::StatusCode::OK.into_response())).await
}

/// `POST /apps/{appname}/diff`: deprecated in tsuru, always 410.
async fn diff(Caller(_): Caller) -> ApiResult<Response> {
    Err(ApiError::new(axum::http::StatusCode::GONE, "diff deploy is deprecated, this call does nothing"))
}

/// `DELETE /1.10/apps/{app}/versions/{version}`: removes a version that no
/// longer serves traffic (its bytes stay in the blob store for other apps).
async fn version_delete(
    State(server): AppState,
    Caller(caller): Caller,
    ip: ClientIp,
    AppTarget(app): AppTarget,
    axum::extract::Path((_, version)): axum::extract::Path<(String, String)>,
) -> ApiResult<Response> {
    caller.require("app.update", &app_contexts(&app))?;
    let number = version_named(&version).ok_or_else(|| ApiError::bad_request(format!("invalid version {version:?}")))?;
    let desired = server.store.desired(&app.name).await?.ok_or_else(|| ApiError::not_found(format!("App {} not found.", app.name)))?;
    crate::apps::plan(&server, &desired, |d| change::delete_version(d, number))?;
    let data = json!({"app": app.name, "version": number});
    let event = app_event(&server, &caller, &ip, "app.update", &app, data).await?;
    Ok(super::stream::json_stream(axum::http::StatusCode::OK, KEEPALIVE, move |w| async move {
        w.message(&format!("---> Deleting version {number} of app {}\n", app.name)).await;
        let result = converge(&server, &app.name, &w, |d| change::delete_version(d, number)).await;
        event.done(result).await.map_err(|e| e.message)?;
        w.message(&format!("---- Done removing application version {number}.\n")).await;
        Ok(())
    }))
}

/// The version an `image` names: `v3`, `3` or an image ending in `:v3`.
fn version_named(image: &str) -> Option<i64> {
    let tail = image.rsplit_once(":v").map(|(_, v)| v).unwrap_or(image);
    tail.trim_start_matches('v').parse().ok().filter(|n| *n > 0)
}

/// `POST /apps/{app}/deploy/rollback`: an earlier version takes all the traffic again.
async fn rollback(State(server): AppState, Caller(caller): Caller, ip: ClientIp, AppTarget(app): AppTarget, params: Params) -> ApiResult<Response> {
    let image = params.get("image").unwrap_or_default();
    if image.is_empty() {
        return Err(ApiError::bad_request("you cannot rollback without an image name"));
    }
    check_origin(&params.get("origin").unwrap_or_default())?;
    if !caller.allows("app.deploy.rollback", &app_contexts(&app)) {
        return Err(ApiError::forbidden_with("You don't have permission to do this action"));
    }
    let versions = server.store.versions(&app.name).await?;
    let Some(target) = version_named(&image).and_then(|n| versions.iter().find(|v| v.version == n)).cloned() else {
        return Err(ApiError::bad_request(format!("invalid version {image:?}: app {:?} has no such version", app.name)));
    };
    let data = json!({"app": app.name, "image": image, "origin": "rollback", "kind": "rollback"});
    let event = cancelable_app_event(&server, &caller, &ip, "app.deploy", &app, data).await?;
    Ok(super::stream::json_stream(axum::http::StatusCode::OK, KEEPALIVE, move |w| async move {
        let result = async {
            if !target.disabled_reason.is_empty() {
                return Err(format!("the selected version is disabled for rollback: {}", target.disabled_reason));
            }
            w.message(&format!("---- Rolling back app {:?} to version {} ----\n", app.name, target.version)).await;
            let provisioner = provisioner_of(&server, &app).await.map_err(|e| e.message)?;
            // The version must still run: its bytes and compiled code are
            // kept. One made for another kind of provisioner (before a pool
            // move) is made again from its upload by the converge path.
            if crate::deploy::runs(&server, provisioner, &target.digest) {
                let candidate = crate::plugin::provisioner::app_version(target.version, &target.digest, &target.processes, true, 100);
                let view = server.store.app_view(&app.name).await.map_err(|e| e.to_string())?.ok_or_else(|| format!("App {} not found.", app.name))?;
                provisioner.prepare(crate::plugin::provisioner::app_state(&view), candidate).await.map_err(|e| e.to_string())?;
            }
            if server.events.acknowledge_cancel(event.id()).await.map_err(|e| e.to_string())? {
                return Err(DeployError::Canceled.to_string());
            }
            converge(&server, &app.name, &w, |d| change::route_only(d, target.version)).await.map_err(|e| e.message)?;
            event.set_end_data(json!({"image": image_name(&app.name, target.version)}));
            w.message(&format!("---- Version {} of app {:?} is serving all its traffic ----\n", target.version, app.name)).await;
            Ok(())
        }
        .await;
        event.done(result).await
    }))
}

/// `PUT /1.4/apps/{app}/deploy/rollback/update`: (un)marks a version for rollback.
async fn rollback_update(State(server): AppState, Caller(caller): Caller, ip: ClientIp, AppTarget(app): AppTarget, params: Params) -> ApiResult<Response> {
    let image = params.get("image").unwrap_or_default();
    if image.is_empty() {
        return Err(ApiError::bad_request("you must specify an image"));
    }
    let raw = params.get("disable").unwrap_or_default();
    let Some(disable) = super::params::parse_bool(&raw) else {
        return Err(ApiError::bad_request(format!("Cannot set 'disable' status to: '{raw}', instead of 'true' or 'false'")));
    };
    let reason = params.get("reason").unwrap_or_default();
    if disable && reason.is_empty() {
        return Err(ApiError::bad_request("reason is mandatory when disabling a version for rollback"));
    }
    caller.require("app.update.deploy.rollback", &app_contexts(&app))?;
    let Some(number) = version_named(&image) else {
        return Err(ApiError::bad_request(format!("invalid version {image:?}")));
    };
    let data = json!({"app": app.name, "image": image, "disable": disable, "reason": reason});
    let event = app_event(&server, &caller, &ip, "app.update.deploy.rollback", &app, data).await?;
    let result = match server.store.set_version_disabled(&app.name, number, if disable { &reason } else { "" }).await {
        Ok(true) => Ok(axum::http::StatusCode::OK.into_response()),
        Ok(false) => Err(ApiError::bad_request(format!("invalid version {image:?}: app {:?} has no such version", app.name))),
        Err(e) => Err(ApiError::from(e)),
    };
    event.done(result).await
}


const ORIGINS: &[&str] = &["app-deploy", "git", "rollback", "drag-and-drop", "image", "rebuild"];

/// An empty origin, or one of tsuru's deployment origins.
fn check_origin(origin: &str) -> ApiResult<()> {
    if origin.is_empty() || ORIGINS.contains(&origin) { Ok(()) } else { Err(ApiError::bad_request("Invalid deployment origin")) }
}

/// The deploy's input: the uploaded `file` and the other fields.
struct Input {
    file: Option<Vec<u8>>,
    fields: BTreeMap<String, String>,
}

impl Input {
    async fn read(req: Request, server: &Arc<Server>) -> ApiResult<Input> {
        let multipart = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("multipart/form-data"));
        if !multipart {
            let params = Params::from_request(req, server).await?;
            let fields = params.pairs().into_iter().collect();
            return Ok(Input { file: None, fields });
        }
        let mut form = Multipart::from_request(req, server).await.map_err(|e| ApiError::bad_request(e.body_text()))?;
        let mut input = Input { file: None, fields: BTreeMap::new() };
        while let Some(field) = form.next_field().await.map_err(|e| ApiError::bad_request(e.body_text()))? {
            let name = field.name().unwrap_or_default().to_string();
            let bytes = field.bytes().await.map_err(|e| ApiError::bad_request(e.body_text()))?;
            if name == "file" {
                input.file = Some(bytes.to_vec());
            } else {
                input.fields.insert(name, String::from_utf8_lossy(&bytes).into_owned());
            }
        }
        Ok(input)
    }

    fn field(&self, key: &str) -> &str {
        self.fields.get(key).map(String::as_str).unwrap_or_default()
    }
}

/// What a deploy or build asks for, once its source rules are checked.
struct Source {
    archive_url: String,
    /// An image to deploy as it is (`image`).
    image: String,
    /// A Dockerfile to build (with `file`, if given, as its context).
    dockerfile: String,
    how: NewVersion,
    origin: String,
    /// The permission its source kind needs (`app.deploy.upload`, ...).
    permission: &'static str,
}

/// tsuru's source rules (API-NOTES §2.7), then what the wasm provisioner can
/// take. Every failure is a 400 before anything starts.
async fn source(server: &Server, app: &crate::store::AppRecord, input: &Input) -> ApiResult<Source> {
    let (archive_url, image, dockerfile) = (input.field("archive-url"), input.field("image"), input.field("dockerfile"));
    let has_file = input.file.is_some();
    if !archive_url.is_empty() && (!image.is_empty() || !dockerfile.is_empty() || has_file) {
        return Err(ApiError::bad_request(r#"Cannot set "archive-url" mutually with "dockerfile", "file" or "image" fields"#));
    }
    if !image.is_empty() && (!dockerfile.is_empty() || has_file) {
        return Err(ApiError::bad_request(r#"Cannot set "image" mutually with "dockerfile" or "file" fields"#));
    }
    if archive_url.is_empty() && image.is_empty() && dockerfile.is_empty() && !has_file {
        return Err(ApiError::bad_request(r#"You must provide at least one of: "archive-url", "dockerfile", "image" or "file""#));
    }
    if reserved_image(image) {
        return Err(ApiError::bad_request(format!(
            "image {image:?} is not allowed: names under torii/app-, torii-build and build: are torii's own, and an image is named, not given by its ID"
        )));
    }
    let how = versions_flags(server, &app.name, input.field("new-version"), input.field("override-versions")).await?;
    let origin = if image.is_empty() { input.field("origin").to_string() } else { "image".to_string() };
    check_origin(&origin)?;
    if !archive_url.is_empty() {
        // Refused before anything starts; the download checks every hop again.
        let url = crate::egress::Egress::parse(archive_url).map_err(|e| ApiError::bad_request(format!("invalid archive-url: {e}")))?;
        server.egress.check(&url).await.map_err(|e| ApiError::bad_request(format!("invalid archive-url: {e}")))?;
    }
    let permission = if !dockerfile.is_empty() {
        "app.deploy.dockerfile"
    } else if !image.is_empty() {
        "app.deploy.image"
    } else if has_file {
        "app.deploy.upload"
    } else if !input.field("commit").is_empty() {
        "app.deploy.git"
    } else {
        "app.deploy.archive-url"
    };
    let kind = if !dockerfile.is_empty() {
        "dockerfile"
    } else if !image.is_empty() {
        "image"
    } else if has_file {
        "file"
    } else {
        "archive-url"
    };
    provisioner_of(server, app).await?.can_deploy(kind).await.map_err(api_error)?;
    Ok(Source { archive_url: archive_url.to_string(), image: image.to_string(), dockerfile: dockerfile.to_string(), how, origin, permission })
}

/// Whether `image` names what torii keeps for itself on the nodes: the
/// versions it pins (`torii/app-<app>:v<N>`, one app's must not reach
/// another), its builds (`torii-build:<digest>`) and the `build:<digest>`
/// artifacts naming blobs; and image IDs. Docker Hub's default registry
/// prefixes name the same local images.
fn reserved_image(image: &str) -> bool {
    let mut name = image.trim().to_ascii_lowercase();
    for prefix in ["docker.io/", "index.docker.io/", "registry-1.docker.io/", "library/"] {
        if let Some(rest) = name.strip_prefix(prefix) {
            name = rest.to_string();
        }
    }
    // An image ID, or any prefix of one (which Docker resolves to whatever
    // local image it starts, another app's pinned version too), and a bare
    // SHA-256, which names a blob (a component).
    let bare = name.split(':').next().unwrap_or_default();
    let id = name.starts_with("sha256:") || (!bare.is_empty() && bare.bytes().all(|b| b.is_ascii_hexdigit()));
    name.starts_with("torii/app-") || name.starts_with("torii-build") || name.starts_with("build:") || id
}

/// `new-version` / `override-versions`: where the new version goes. With
/// several routable versions one of them must be given.
async fn versions_flags(server: &Server, app: &str, new_version: &str, override_versions: &str) -> ApiResult<NewVersion> {
    let flag = |key: &str, raw: &str| -> ApiResult<bool> {
        match raw {
            "" => Ok(false),
            raw => super::params::parse_bool(raw).ok_or_else(|| ApiError::bad_request(format!("invalid {key}: {raw:?}"))),
        }
    };
    let (new_version, override_versions) = (flag("new-version", new_version)?, flag("override-versions", override_versions)?);
    if new_version && override_versions {
        return Err(ApiError::bad_request("new-version and override-versions cannot be used together"));
    }
    let routable = server.store.versions(app).await?.iter().filter(|v| v.routable).count();
    if routable > 1 && !new_version && !override_versions {
        return Err(ApiError::bad_request("multiple versions currently deployed, either new-version or override-old-versions must be set"));
    }
    Ok(if new_version { NewVersion::Beside } else { NewVersion::Replace })
}

/// The uploaded file, or what `archive-url` names, fetched.
async fn upload_bytes(server: &Server, file: Option<Vec<u8>>, archive_url: &str, out: &TextWriter) -> Result<Vec<u8>, String> {
    match file {
        Some(bytes) => Ok(bytes),
        None => fetch(server, archive_url, out).await,
    }
}

/// Unpacks the upload (or fetches `archive-url`) and deploys it as the app's
/// next version through its provisioner; the version number.
async fn upload_version(server: &Server, provisioner: &str, app: &str, file: Option<Vec<u8>>, src: &Source, event_id: &str, how: NewVersion, out: &TextWriter) -> Result<i64, String> {
    let provisioner = &server.provisioners[provisioner];
    if !src.image.is_empty() {
        return deploy_image(server, provisioner, app, &src.image, event_id, how, out).await.map_err(|e| e.to_string());
    }
    if !src.dockerfile.is_empty() {
        let context = build_context(&src.dockerfile, file.as_deref()).map_err(|e| e.to_string())?;
        return deploy_build(server, provisioner, app, context, &["web".to_string()], "", event_id, how, out).await.map_err(|e| e.to_string());
    }
    let upload = upload_bytes(server, file, &src.archive_url, out).await?;
    deploy_upload(server, provisioner, app, upload, event_id, how, out).await.map_err(|e| e.to_string())
}

/// The event data of a deploy or build: `fields`, then the source's kind and URL.
fn source_data(mut data: Value, src: &Source) -> Value {
    data["origin"] = Value::String(src.origin.clone());
    data["kind"] = Value::String(src.permission.trim_start_matches("app.deploy.").to_string());
    if !src.archive_url.is_empty() {
        data["archive-url"] = Value::String(src.archive_url.clone());
    }
    data
}

async fn deploy(State(server): AppState, Caller(caller): Caller, ip: ClientIp, AppTarget(app): AppTarget, req: Request) -> ApiResult<Response> {
    let input = Input::read(req, &server).await?;
    let src = source(&server, &app, &input).await?;
    if !caller.allows(src.permission, &app_contexts(&app)) {
        return Err(ApiError::forbidden_with("User does not have permission to do this action in this app"));
    }
    let data = source_data(json!({"app": app.name, "message": input.field("message")}), &src);
    let provisioner = provisioner_of(&server, &app).await?.name().to_string();
    let event = cancelable_app_event(&server, &caller, &ip, "app.deploy", &app, data).await?;
    let event_id = event.id().to_string();
    let headers = [("x-tsuru-eventid", event_id.clone())];
    Ok(text_stream(KEEPALIVE, &headers, move |out| async move {
        let result: Result<i64, String> = async {
            let version = upload_version(&server, &provisioner, &app.name, input.file, &src, &event_id, src.how, &out).await?;
            out.write(&placed(&app.name, version, src.how)).await;
            Ok(version)
        }
        .await;
        match &result {
            Ok(version) => event.set_end_data(json!({"image": image_name(&app.name, *version)})),
            Err(e) => {
                out.write(&format!("\n---- ERROR during deploy: ----\n{e}\n")).await;
            }
        }
        if event.done(result).await.is_ok() {
            out.write("\nOK\n").await;
        }
    }))
}

/// `POST /1.5/apps/{app}/build`: builds a version without deploying it. The
/// version waits beside the routable ones: make it routable, or roll back
/// to it, to give it traffic. The answer ends with its image name and `OK`.
async fn build(State(server): AppState, Caller(caller): Caller, ip: ClientIp, AppTarget(app): AppTarget, req: Request) -> ApiResult<Response> {
    let input = Input::read(req, &server).await?;
    let tag = input.field("tag").to_string();
    if tag.is_empty() {
        return Err(ApiError::bad_request("you must specify the image tag."));
    }
    let src = source(&server, &app, &input).await?;
    caller.require("app.build", &app_contexts(&app))?;
    let data = source_data(json!({"app": app.name, "tag": tag}), &src);
    let provisioner = provisioner_of(&server, &app).await?.name().to_string();
    let event = cancelable_app_event(&server, &caller, &ip, "app.build", &app, data).await?;
    let event_id = event.id().to_string();
    let headers = [("x-tsuru-eventid", event_id.clone())];
    Ok(text_stream(KEEPALIVE, &headers, move |out| async move {
        let result: Result<i64, String> = async {
            let version = upload_version(&server, &provisioner, &app.name, input.file, &src, &event_id, NewVersion::Beside, &out).await?;
            out.write(&format!("---- Version {version} of app {:?} is built (tag {tag:?}), without traffic ----\n", app.name)).await;
            Ok(version)
        }
        .await;
        match &result {
            Ok(version) => {
                let image = image_name(&app.name, *version);
                event.set_end_data(json!({"image": image, "tag": tag}));
                out.write(&format!("{image}\n")).await;
            }
            Err(e) => {
                out.write(&format!("\n---- ERROR during build: ----\n{e}\n")).await;
            }
        }
        if event.done(result).await.is_ok() {
            out.write("OK\n").await;
        }
    }))
}

/// `POST /1.3/apps/{app}/deploy/rebuild`: deploys the newest routable
/// version's component again as a new version (compiled code is reused).
async fn rebuild(State(server): AppState, Caller(caller): Caller, ip: ClientIp, AppTarget(app): AppTarget, params: Params) -> ApiResult<Response> {
    let origin = params.get("origin").unwrap_or_default();
    if origin.is_empty() {
        return Err(ApiError::bad_request("Invalid deployment origin"));
    }
    check_origin(&origin)?;
    caller.require("app.deploy", &app_contexts(&app))?;
    let how = versions_flags(
        &server,
        &app.name,
        &params.get("new-version").unwrap_or_default(),
        &params.get("override-versions").unwrap_or_default(),
    )
    .await?;
    let versions = server.store.versions(&app.name).await?;
    let Some(current) = versions.iter().filter(|v| v.routable).max_by_key(|v| v.version).cloned() else {
        return Err(ApiError::bad_request(format!("app {:?} has no deployed version to rebuild", app.name)));
    };
    let provisioner = provisioner_of(&server, &app).await?.name().to_string();
    let data = json!({"app": app.name, "origin": origin, "kind": "rebuild"});
    let event = cancelable_app_event(&server, &caller, &ip, "app.deploy", &app, data).await?;
    let event_id = event.id().to_string();
    Ok(super::stream::json_stream(axum::http::StatusCode::OK, KEEPALIVE, move |w| async move {
        let result = async {
            let provisioner = &server.provisioners[&provisioner];
            let version = crate::deploy::redeploy(&server, provisioner, &app.name, &current, &event_id, how, &w).await.map_err(|e| e.to_string())?;
            w.message(&placed(&app.name, version, how)).await;
            event.set_end_data(json!({"image": image_name(&app.name, version)}));
            Ok(())
        }
        .await;
        event.done(result).await
    }))
}

impl Progress for super::stream::StreamWriter {
    async fn line(&self, text: String) {
        self.message(&text).await;
    }
}

impl Progress for TextWriter {
    async fn line(&self, text: String) {
        self.write(&text).await;
    }
}

/// Downloads `archive-url` through the egress rule, bounded by the API's
/// body limit.
async fn fetch(server: &Server, url: &str, out: &TextWriter) -> Result<Vec<u8>, String> {
    out.write(&format!("---- Downloading {url} ----\n")).await;
    let limit = server.config.api.max_body_bytes;
    let request = crate::egress::Request::get(url, std::time::Duration::from_secs(120));
    let mut response = server.egress.send(request).await.map_err(|e| format!("cannot download {url}: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("cannot download {url}: the server answered {}", response.status()));
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|_| format!("cannot download {url}: the transfer failed"))? {
        if bytes.len() + chunk.len() > limit {
            return Err(format!("{url} is larger than the {limit} bytes a deploy may be"));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}
