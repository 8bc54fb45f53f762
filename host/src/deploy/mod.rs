//! The deploy pipeline for WASM apps: from uploaded bytes to a new routable
//! version. HTTP-free: the API hands it bytes and a progress sink.
//!
//! An upload is a bare component or a tar.gz holding one (`app.wasm`, or the
//! only `.wasm` file) and optionally a `Procfile` naming processes. The
//! component is checked and compiled before anything is recorded, so a bad
//! deploy leaves the running version untouched.

use crate::blobs::Blobs;
use crate::plugin::provisioner::{Provisioner, app_state, app_version};
use crate::server::Server;
use crate::store::NewVersion;
use std::io::Read;

/// What a deploy unpacked.
#[derive(Debug, PartialEq, Eq)]
pub struct Artifact {
    pub component: Vec<u8>,
    /// Process names from the Procfile; `web` without one.
    pub processes: Vec<String>,
    /// Where the component came from, for the progress output.
    pub source: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("the upload is empty")]
    Empty,
    #[error("the archive cannot be read: {0}")]
    Archive(String),
    #[error("the archive holds no .wasm component (put one at app.wasm)")]
    NoComponent,
    #[error("the archive holds several .wasm files ({0}); name the one to run app.wasm")]
    SeveralComponents(String),
    /// The provisioner refused the version, or failed.
    #[error("{0}")]
    Provision(String),
    #[error("cannot store the component: {0}")]
    Blob(std::io::Error),
    #[error("cannot record the version: {0}")]
    Store(#[from] crate::store::StoreError),
}

/// Largest file read out of an archive (the upload itself is bounded by the
/// API's body limit; this bounds what decompression may produce).
const MAX_UNPACKED: u64 = 1 << 30;

/// A bare component, or a tar.gz holding one.
pub fn extract(upload: &[u8]) -> Result<Artifact, DeployError> {
    if upload.is_empty() {
        return Err(DeployError::Empty);
    }
    if !upload.starts_with(&[0x1f, 0x8b]) {
        return Ok(Artifact { component: upload.to_vec(), processes: vec!["web".into()], source: "the uploaded file".into() });
    }
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(upload));
    let mut wasm: Vec<(String, Vec<u8>)> = Vec::new();
    let mut procfile = None;
    let entries = archive.entries().map_err(|e| DeployError::Archive(e.to_string()))?;
    for entry in entries {
        let entry = entry.map_err(|e| DeployError::Archive(e.to_string()))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path().map_err(|e| DeployError::Archive(e.to_string()))?.to_string_lossy().trim_start_matches("./").to_string();
        let wanted = path.ends_with(".wasm") || path == "Procfile";
        if !wanted {
            continue;
        }
        let mut bytes = Vec::new();
        entry.take(MAX_UNPACKED).read_to_end(&mut bytes).map_err(|e| DeployError::Archive(e.to_string()))?;
        if path == "Procfile" {
            procfile = Some(String::from_utf8_lossy(&bytes).into_owned());
        } else {
            wasm.push((path, bytes));
        }
    }
    let (name, component) = match wasm.iter().position(|(p, _)| p == "app.wasm") {
        Some(i) => wasm.swap_remove(i),
        None if wasm.len() == 1 => wasm.remove(0),
        None if wasm.is_empty() => return Err(DeployError::NoComponent),
        None => return Err(DeployError::SeveralComponents(wasm.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>().join(", "))),
    };
    Ok(Artifact { component, processes: procfile.as_deref().map(processes).unwrap_or_else(|| vec!["web".into()]), source: name })
}

/// Process names of a Procfile (`name: command` lines).
fn processes(procfile: &str) -> Vec<String> {
    let names: Vec<String> = procfile
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(name, _)| name.trim().to_string())
        .filter(|n| !n.is_empty() && !n.starts_with('#'))
        .collect();
    if names.is_empty() { vec!["web".into()] } else { names }
}

/// Where progress goes (the deploy's text stream).
pub trait Progress {
    fn line(&self, text: String) -> impl Future<Output = ()> + Send;
}

/// Stores `artifact`, has the app's provisioner check it can run, records it
/// as the next version of `app` (taking all the traffic, or none beside the
/// others) and has the provisioner serve the new state. A version the
/// provisioner refuses, or whose new state it cannot serve, is not kept.
/// Returns the version number.
pub async fn deploy_component(
    server: &Server,
    provisioner: &Provisioner,
    app: &str,
    artifact: Artifact,
    event_id: &str,
    how: NewVersion,
    out: &impl Progress,
) -> Result<i64, DeployError> {
    let digest = Blobs::digest(&artifact.component);
    out.line(format!(
        "---- Checking {} ({} KiB, sha256 {}) ----\n",
        artifact.source,
        artifact.component.len().div_ceil(1024),
        &digest[..12]
    ))
    .await;
    let known = server.apps.blobs.contains(&digest).await;
    server.apps.blobs.put(&artifact.component).await.map_err(DeployError::Blob)?;
    if let Err(e) = prepare(server, provisioner, app, &digest, &artifact.processes, how, out).await {
        if !known {
            // Nothing refers to bytes that never passed the checks.
            let _ = server.apps.blobs.remove(&digest).await;
        }
        return Err(e);
    }
    record(server, provisioner, app, &digest, &artifact.processes, event_id, how, out).await
}

/// Deploys an image (present on the provisioner's backends) as the app's next
/// version: its `web` process runs the image's own command.
pub async fn deploy_image(
    server: &Server,
    provisioner: &Provisioner,
    app: &str,
    image: &str,
    event_id: &str,
    how: NewVersion,
    out: &impl Progress,
) -> Result<i64, DeployError> {
    out.line(format!("---- Deploying image {image} ----\n")).await;
    let processes = ["web".to_string()];
    prepare(server, provisioner, app, image, &processes, how, out).await?;
    record(server, provisioner, app, image, &processes, event_id, how, out).await
}

/// The artifact of a version built from a build context in the blob store:
/// `build:<sha256 of the context tar>`. The provisioner builds the image.
pub fn build_artifact(digest: &str) -> String {
    format!("build:{digest}")
}

/// A build context: the files of `upload` (a tar.gz or tar, if any) and the
/// `Dockerfile` given, as one uncompressed tar.
pub fn build_context(dockerfile: &str, upload: Option<&[u8]>) -> Result<Vec<u8>, DeployError> {
    let mut out = tar::Builder::new(Vec::new());
    if let Some(upload) = upload.filter(|u| !u.is_empty()) {
        let reader: Box<dyn Read> =
            if upload.starts_with(&[0x1f, 0x8b]) { Box::new(flate2::read::GzDecoder::new(upload)) } else { Box::new(upload) };
        let mut archive = tar::Archive::new(reader);
        let mut unpacked: u64 = 0;
        for entry in archive.entries().map_err(|e| DeployError::Archive(e.to_string()))? {
            let mut entry = entry.map_err(|e| DeployError::Archive(e.to_string()))?;
            let path = entry.path().map_err(|e| DeployError::Archive(e.to_string()))?.into_owned();
            if path.as_os_str() == "Dockerfile" || path.as_os_str() == "./Dockerfile" {
                continue;
            }
            unpacked += entry.header().size().unwrap_or(0);
            if unpacked > MAX_UNPACKED {
                return Err(DeployError::Archive(format!("the build context unpacks past {} MiB", MAX_UNPACKED >> 20)));
            }
            let mut header = entry.header().clone();
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).map_err(|e| DeployError::Archive(e.to_string()))?;
            out.append_data(&mut header, &path, bytes.as_slice()).map_err(|e| DeployError::Archive(e.to_string()))?;
        }
    }
    let mut header = tar::Header::new_gnu();
    header.set_size(dockerfile.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    out.append_data(&mut header, "Dockerfile", dockerfile.as_bytes()).map_err(|e| DeployError::Archive(e.to_string()))?;
    out.into_inner().map_err(|e| DeployError::Archive(e.to_string()))
}

/// Deploys an image built from `context` (see [`build_context`]) as the
/// app's next version; the provisioner builds it before it is recorded.
pub async fn deploy_build(
    server: &Server,
    provisioner: &Provisioner,
    app: &str,
    context: Vec<u8>,
    event_id: &str,
    how: NewVersion,
    out: &impl Progress,
) -> Result<i64, DeployError> {
    let digest = Blobs::digest(&context);
    out.line(format!("---- Building an image from the Dockerfile ({} KiB of context) ----\n", context.len().div_ceil(1024))).await;
    let known = server.apps.blobs.contains(&digest).await;
    server.apps.blobs.put(&context).await.map_err(DeployError::Blob)?;
    let artifact = build_artifact(&digest);
    let processes = ["web".to_string()];
    if let Err(e) = prepare(server, provisioner, app, &artifact, &processes, how, out).await {
        if !known {
            let _ = server.apps.blobs.remove(&digest).await;
        }
        return Err(e);
    }
    record(server, provisioner, app, &artifact, &processes, event_id, how, out).await
}

/// Deploys what `version` was made from again, as the next version
/// (`rebuild`): the same component, image or build context.
pub async fn redeploy(
    server: &Server,
    provisioner: &Provisioner,
    app: &str,
    version: &crate::store::VersionRecord,
    event_id: &str,
    how: NewVersion,
    out: &impl Progress,
) -> Result<i64, DeployError> {
    let missing = |e: std::io::Error| DeployError::Provision(format!("what version {} was made from is missing: {e}", version.version));
    if let Some(digest) = version.digest.strip_prefix("build:") {
        let context = server.apps.blobs.get(digest).await.map_err(missing)?;
        return deploy_build(server, provisioner, app, context, event_id, how, out).await;
    }
    if !Blobs::is_digest(&version.digest) {
        return deploy_image(server, provisioner, app, &version.digest, event_id, how, out).await;
    }
    let component = server.apps.blobs.get(&version.digest).await.map_err(missing)?;
    let artifact = Artifact { component, processes: version.processes.clone(), source: format!("version {}", version.version) };
    deploy_component(server, provisioner, app, artifact, event_id, how, out).await
}

/// The provisioner's check of a version not recorded yet; its lines go out.
async fn prepare(
    server: &Server,
    provisioner: &Provisioner,
    app: &str,
    artifact: &str,
    processes: &[String],
    how: NewVersion,
    out: &impl Progress,
) -> Result<(), DeployError> {
    let view = server.store.app_view(app).await?.ok_or_else(|| DeployError::Provision(format!("App {app} not found.")))?;
    let candidate = app_version(0, artifact, processes, 1, how == NewVersion::Replace, 1);
    let lines = provisioner.prepare(app_state(&view), candidate).await.map_err(|e| DeployError::Provision(e.to_string()))?;
    for line in lines {
        out.line(line).await;
    }
    Ok(())
}

/// Records the version and has the provisioner serve the new state; a state
/// it cannot serve takes the version back.
#[allow(clippy::too_many_arguments)]
async fn record(
    server: &Server,
    provisioner: &Provisioner,
    app: &str,
    artifact: &str,
    processes: &[String],
    event_id: &str,
    how: NewVersion,
    out: &impl Progress,
) -> Result<i64, DeployError> {
    let before = server.store.versions(app).await?;
    let version = server.store.add_version(app, artifact, processes, event_id, how).await?;
    out.line(format!(" ---> processes: {}\n", processes.join(", "))).await;
    match provisioner.apply_stored(&server.store, app).await {
        Ok(lines) => {
            for line in lines {
                out.line(line).await;
            }
            Ok(version)
        }
        Err(e) => {
            // The provisioner could not serve the new state: the app goes
            // back to what it served before, and the version is not kept.
            server.store.undo_version(app, version, &before).await?;
            if let Err(again) = provisioner.apply_stored(&server.store, app).await {
                tracing::warn!(app, error = %again, "deploy: the earlier state could not be applied again");
            }
            Err(DeployError::Provision(e))
        }
    }
}

/// What a deploy says once its version is recorded.
pub fn placed(app: &str, version: i64, how: NewVersion) -> String {
    match how {
        NewVersion::Replace => format!("---- Version {version} of app {app:?} is serving all its traffic ----\n"),
        NewVersion::Beside => {
            format!("---- Version {version} of app {app:?} is deployed without traffic: make it routable to share the traffic ----\n")
        }
    }
}

/// The image name tsuru shows for a version (deploy history parses `:vN`).
pub fn image_name(app: &str, version: i64) -> String {
    format!("torii/app-{app}:v{version}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_gz(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
        for (name, bytes) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, name, *bytes).unwrap();
        }
        builder.into_inner().unwrap().finish().unwrap()
    }

    #[test]
    fn finds_the_component_and_processes() {
        let bare = extract(b"\0asm....").unwrap();
        assert_eq!((bare.component, bare.processes), (b"\0asm....".to_vec(), vec!["web".to_string()]));
        let one = extract(&tar_gz(&[("./dist/hello.wasm", b"W"), ("Procfile", b"web: run\nworker: work\n"), ("README", b"x")])).unwrap();
        assert_eq!((one.component, one.processes, one.source), (b"W".to_vec(), vec!["web".into(), "worker".into()], "dist/hello.wasm".into()));
        let named = extract(&tar_gz(&[("a.wasm", b"A"), ("app.wasm", b"B")])).unwrap();
        assert_eq!(named.component, b"B");
        assert!(matches!(extract(&tar_gz(&[("a.wasm", b"A"), ("b.wasm", b"B")])), Err(DeployError::SeveralComponents(_))));
        assert!(matches!(extract(&tar_gz(&[("README", b"x")])), Err(DeployError::NoComponent)));
        assert!(matches!(extract(&[0x1f, 0x8b, 1, 2, 3]), Err(DeployError::Archive(_))));
        assert!(matches!(extract(b""), Err(DeployError::Empty)));
    }
}
