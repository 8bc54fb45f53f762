//! The deploy pipeline for WASM apps: from uploaded bytes to a new routable
//! version. HTTP-free: the API hands it bytes and a progress sink.
//!
//! An upload is a bare component or a tar.gz holding one (`app.wasm`, or the
//! only `.wasm` file) and optionally a `Procfile` naming processes. The
//! component is checked and compiled before anything is recorded, so a bad
//! deploy leaves the running version untouched.


pub mod platform;
use crate::blobs::Blobs;
use crate::plugin::provisioner::{Provisioner, app_state, app_version};
use crate::server::Server;
use crate::runtime::Tier;
use crate::apps::change;
use crate::store::{NewVersion, units_in_use};
use std::io::Read;
use std::sync::Arc;

/// What a deploy unpacked.
#[derive(Debug, PartialEq, Eq)]
pub struct Artifact {
    pub component: Vec<u8>,
    /// Process names from the Procfile; `web` without one.
    pub processes: Vec<String>,
    /// Where the component came from, for the progress output.
    pub source: String,
    /// What the app may reach (`allowed_outbound_hosts` of its `torii.toml`).
    pub outbound: Vec<String>,
}

/// The `wasm` section of `tsuru.yaml`: the same declarations as
/// `torii.toml`, for apps that keep tsuru's file. Its other sections
/// (hooks, healthcheck, …) are tsuru's and not read here.
#[derive(Debug, Default, serde::Deserialize)]
struct TsuruYaml {
    #[serde(default)]
    wasm: Option<Manifest>,
}

/// `torii.toml` beside the component: what the app declares of itself.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    /// Allow entries (`https://api.example.com`, `https://*.example.com:*`):
    /// where the app's outbound HTTP may go, within its pool's policy.
    #[serde(default)]
    allowed_outbound_hosts: Vec<String>,
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
    #[error("the archive holds no Procfile: name the processes to run in one (web: <command>)")]
    NoProcfile,
    #[error("Procfile: {0}")]
    Procfile(String),
    /// What the app declares of itself (`torii.toml`, or the `wasm` section
    /// of `tsuru.yaml`) cannot be taken; the text names the file.
    #[error("{0}")]
    Manifest(String),
    #[error("{path} is larger than the {} MiB it may be", limit >> 20)]
    TooLarge { path: String, limit: u64 },
    #[error("{0}")]
    Limit(#[from] crate::limits::LimitError),
    #[error("the platform's Dockerfile has no FROM line")]
    PlatformWithoutFrom,
    /// The app has no platform, or one that does not exist, for files
    /// going onto a container provisioner.
    #[error("{0}")]
    Platform(String),
    /// A version cannot be made for the provisioner it moves to.
    #[error("{0}")]
    Unmovable(String),
    /// The provisioner refused the version, or failed.
    #[error("{0}")]
    Provision(String),
    #[error("cannot store the component: {0}")]
    Blob(std::io::Error),
    #[error("cannot record the version: {0}")]
    Store(#[from] crate::store::StoreError),
    /// Someone canceled the deploy's event (`tsuru event cancel`).
    #[error("canceled by user request")]
    Canceled,
}

/// What decompressing an upload may produce in all (every entry counted,
/// skipped ones too): a small archive cannot make the host inflate gigabytes.
const MAX_UNPACKED: u64 = 1 << 30;
/// The largest component an archive may hold (a componentize-py app is
/// ~40 MiB); larger entries are refused from their header, before reading.
pub const MAX_COMPONENT: u64 = 128 << 20;
/// The largest Procfile (and torii.toml).
const MAX_PROCFILE: u64 = 1 << 20;
/// Process names: letters, digits, `-` and `_`, starting with a letter or
/// digit, at most 63 characters (a DNS label: they name units and labels).
static PROCESS_NAME: std::sync::LazyLock<regex::Regex> =
    std::sync::LazyLock::new(|| regex::Regex::new(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$").expect("valid regex"));

/// A bare component, or a tar.gz holding one. At most `max_processes`
/// processes; what decompression produces is bounded (see [`MAX_UNPACKED`],
/// [`MAX_COMPONENT`]) and at most two components are held at once.
pub fn extract(upload: &[u8], max_processes: usize) -> Result<Artifact, DeployError> {
    if upload.is_empty() {
        return Err(DeployError::Empty);
    }
    if !upload.starts_with(&[0x1f, 0x8b]) {
        return Ok(Artifact { component: upload.to_vec(), processes: vec!["web".into()], source: "the uploaded file".into(), outbound: Vec::new() });
    }
    let archive_error = |e: std::io::Error| DeployError::Archive(e.to_string());
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(upload));
    // `app.wasm`, else the only `.wasm`: the first other one is kept until
    // an `app.wasm` shows up; more are only named, for the error.
    let (mut app_wasm, mut first, mut others) = (None::<Vec<u8>>, None::<(String, Vec<u8>)>, Vec::<String>::new());
    let (mut procfile, mut manifest, mut tsuru_yaml) = (None, None, None);
    let mut unpacked: u64 = 0;
    for entry in archive.entries().map_err(archive_error)? {
        let mut entry = entry.map_err(archive_error)?;
        let size = entry.header().size().unwrap_or(u64::MAX);
        unpacked = unpacked.saturating_add(size);
        if unpacked > MAX_UNPACKED {
            return Err(DeployError::Archive(format!("the archive unpacks past {} MiB", MAX_UNPACKED >> 20)));
        }
        let path = entry.path().map_err(archive_error)?.to_string_lossy().trim_start_matches("./").to_string();
        let is_wasm = path.ends_with(".wasm");
        let wanted = entry.header().entry_type().is_file() && (is_wasm || matches!(path.as_str(), "Procfile" | "torii.toml" | "tsuru.yaml" | "tsuru.yml"));
        if !wanted || (is_wasm && path != "app.wasm" && (app_wasm.is_some() || first.is_some())) {
            if wanted {
                others.push(path);
            }
            // Skipped entries are read past by the archive (decompressed, not kept).
            continue;
        }
        let cap = if is_wasm { MAX_COMPONENT } else { MAX_PROCFILE };
        if size > cap {
            return Err(DeployError::TooLarge { path, limit: cap });
        }
        let mut bytes = Vec::with_capacity(size as usize);
        (&mut entry).take(cap).read_to_end(&mut bytes).map_err(archive_error)?;
        match path.as_str() {
            "Procfile" => procfile = Some(String::from_utf8_lossy(&bytes).into_owned()),
            "torii.toml" => manifest = Some(String::from_utf8_lossy(&bytes).into_owned()),
            "tsuru.yaml" | "tsuru.yml" => tsuru_yaml = Some((path.clone(), String::from_utf8_lossy(&bytes).into_owned())),
            "app.wasm" => app_wasm = Some(bytes),
            _ => first = Some((path, bytes)),
        }
    }
    let (source, component) = match (app_wasm, first) {
        (Some(bytes), _) => ("app.wasm".to_string(), bytes),
        (None, Some(one)) if others.is_empty() => one,
        (None, None) => return Err(DeployError::NoComponent),
        (None, Some((name, _))) => {
            let mut names = vec![name];
            names.extend(others.into_iter().filter(|p| p.ends_with(".wasm")));
            return Err(DeployError::SeveralComponents(names.join(", ")));
        }
    };
    let processes = match procfile {
        Some(text) => processes(&text, max_processes)?,
        None => vec!["web".into()],
    };
    let from_yaml = match tsuru_yaml {
        Some((name, text)) => serde_yaml_ng::from_str::<TsuruYaml>(&text).map_err(|e| DeployError::Archive(format!("{name}: {e}")))?.wasm,
        None => None,
    };
    let manifest: (Manifest, &str) = match (manifest, from_yaml) {
        (Some(_), Some(_)) => {
            return Err(DeployError::Manifest("the archive declares the app in both torii.toml and the wasm section of tsuru.yaml: keep one".into()));
        }
        (Some(text), None) => {
            (toml::from_str(&text).map_err(|e| DeployError::Manifest(format!("torii.toml: {}", e.message())))?, "torii.toml")
        }
        (None, Some(wasm)) => (wasm, "tsuru.yaml (wasm)"),
        (None, None) => (Manifest::default(), ""),
    };
    let (manifest, file) = manifest;
    crate::outbound::AllowList::parse(&manifest.allowed_outbound_hosts)
        .map_err(|e| DeployError::Manifest(format!("{file}: allowed_outbound_hosts: {e}")))?;
    Ok(Artifact { component, processes, source, outbound: manifest.allowed_outbound_hosts })
}

/// Process names of a Procfile (`name: command` lines; `web` without any),
/// each checked, at most `max` of them.
pub fn processes(procfile: &str, max: usize) -> Result<Vec<String>, DeployError> {
    let mut names: Vec<String> = Vec::new();
    for line in procfile.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, _)) = line.split_once(':') else { continue };
        let name = name.trim();
        if !PROCESS_NAME.is_match(name) {
            return Err(DeployError::Procfile(format!(
                "invalid process name {:?}: use letters, digits, '-' and '_' (at most 63)",
                name.chars().take(64).collect::<String>()
            )));
        }
        if names.iter().any(|n| n == name) {
            return Err(DeployError::Procfile(format!("process {name:?} is declared twice")));
        }
        names.push(name.to_string());
        if names.len() > max {
            return Err(DeployError::Procfile(format!("the Procfile names more than {max} processes")));
        }
    }
    if names.is_empty() { Ok(vec!["web".into()]) } else { Ok(names) }
}

pub use crate::apps::Progress;

/// Stores `artifact`, has the app's provisioner check it can run, records it
/// as the next version of `app` (taking all the traffic, or none beside the
/// others) and has the provisioner serve the new state. A version the
/// provisioner refuses, or whose new state it cannot serve, is not kept.
/// Returns the version number.
#[allow(clippy::too_many_arguments)]
pub async fn deploy_component(
    server: &Server,
    provisioner: &Provisioner,
    app: &str,
    artifact: Artifact,
    upload: &str,
    event_id: &str,
    how: NewVersion,
    out: &impl Progress,
) -> Result<i64, DeployError> {
    let pool = server.store.app(app).await?.map(|a| a.pool).unwrap_or_default();
    within_policy(server, &pool, &artifact.outbound)?;
    let component = Arc::new(artifact.component);
    let digest = Blobs::digest(&component);
    out.line(format!("---- Checking {} ({} KiB, sha256 {}) ----\n", artifact.source, component.len().div_ceil(1024), &digest[..12])).await;
    // The compile (seconds for a large component) runs while the bytes are
    // written: they are the digest's whatever the write comes to.
    let compile = async {
        if server.config.runs_components(provisioner.name()) {
            compile_ahead(server, &digest, component.clone(), out).await;
        }
        Ok(())
    };
    let (stored, ()) = tokio::try_join!(Stored::put_hashed(server, &digest, &component), compile)?;
    let version = Version { artifact: &digest, upload, processes: &artifact.processes, outbound: &artifact.outbound };
    prepare_and_record(server, provisioner, app, version, Some(stored), event_id, how, out).await
}

/// Compiles a component the host's app runtime will serve, here, with the
/// deploy's progress, rather than inside the provisioner's `prepare` call,
/// whose deadline (`[plugins] timeout_ms`) a large component's compile
/// could pass: the provisioner then finds it compiled. Bytes that do not
/// compile are left to the provisioner to refuse, in its words.
async fn compile_ahead(server: &Server, digest: &str, bytes: Arc<Vec<u8>>, out: &impl Progress) {
    if server.apps.is_loaded(digest) {
        return;
    }
    let started = std::time::Instant::now();
    if let Ok(code) = server.apps.compile(digest, bytes).await {
        let took = started.elapsed().as_millis();
        out.line(match code.tier() {
            Tier::Optimized => format!(" ---> the component is ready to run, after {took} ms of loading and compiling\n"),
            Tier::Baseline => format!(
                " ---> the component is ready to run on baseline code, after {took} ms of loading and compiling; optimised code replaces it in the background\n"
            ),
        })
        .await;
    }
}

/// Bytes put in the blob store for a version not recorded yet, and whether
/// they were there before (then something else may refer to them).
pub struct Stored {
    digest: String,
    known: bool,
}

impl Stored {
    async fn put(server: &Server, bytes: &[u8]) -> Result<Stored, DeployError> {
        Stored::put_hashed(server, &Blobs::digest(bytes), bytes).await
    }

    /// Puts `bytes`, whose digest is `digest`.
    async fn put_hashed(server: &Server, digest: &str, bytes: &[u8]) -> Result<Stored, DeployError> {
        let known = server.apps.blobs.contains(digest).await;
        server.apps.blobs.put(digest, bytes).await.map_err(DeployError::Blob)?;
        Ok(Stored { digest: digest.to_string(), known })
    }

    /// Nothing refers to bytes that never became a version.
    pub async fn forget(self, server: &Server) {
        if !self.known {
            let _ = server.apps.blobs.remove(&self.digest).await;
        }
    }
}

/// What a new version is made of.
struct Version<'a> {
    artifact: &'a str,
    /// The digest of the upload it was made from (empty: none).
    upload: &'a str,
    processes: &'a [String],
    outbound: &'a [String],
}

/// The steps every deploy ends with: the provisioner checks (or builds) the
/// version, then it is recorded and served through the converge path.
/// Before each step, a cancel asked of the deploy's event stops it there:
/// nothing is recorded yet, so nothing needs undoing but `stored`.
#[allow(clippy::too_many_arguments)]
async fn prepare_and_record(
    server: &Server,
    provisioner: &Provisioner,
    app: &str,
    version: Version<'_>,
    stored: Option<Stored>,
    event_id: &str,
    how: NewVersion,
    out: &impl Progress,
) -> Result<i64, DeployError> {
    let steps = async {
        stop_if_canceled(server, event_id).await?;
        prepare(server, provisioner, app, version.artifact, version.processes, how, out).await?;
        stop_if_canceled(server, event_id).await
    };
    if let Err(e) = steps.await {
        if let Some(stored) = stored {
            stored.forget(server).await;
        }
        return Err(e);
    }
    record(server, app, &version, event_id, how, out).await
}

async fn stop_if_canceled(server: &Server, event_id: &str) -> Result<(), DeployError> {
    if server.events.acknowledge_cancel(event_id).await? { Err(DeployError::Canceled) } else { Ok(()) }
}

/// Refuses `outbound` (a version's `allowed_outbound_hosts`) when it goes
/// beyond what `pool` allows its apps (`[[pool_policy]] outbound`).
fn within_policy(server: &Server, pool: &str, outbound: &[String]) -> Result<(), DeployError> {
    if outbound.is_empty() {
        return Ok(());
    }
    let policy = server.config.pool_outbound(pool);
    let (asked, bound) = (crate::outbound::AllowList::parse(outbound), crate::outbound::AllowList::parse(policy));
    let (Ok(asked), Ok(bound)) = (asked, bound) else {
        return Err(DeployError::Manifest("allowed_outbound_hosts cannot be checked against the pool's policy".into()));
    };
    let beyond = asked.outside(&bound);
    if beyond.is_empty() {
        return Ok(());
    }
    Err(DeployError::Manifest(format!(
        "the app's allowed_outbound_hosts {} go beyond what pool {pool:?} lets its apps reach ({}): ask the operator to widen its [[pool_policy]]",
        beyond.join(", "),
        bound.describe()
    )))
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
    let version = Version { artifact: image, upload: "", processes: &processes, outbound: &[] };
    prepare_and_record(server, provisioner, app, version, None, event_id, how, out).await
}

/// The artifact of a version built from a build context in the blob store:
/// `build:<sha256 of the context tar>`. The provisioner builds the image.
pub fn build_artifact(digest: &str) -> String {
    format!("build:{digest}")
}

/// What a build context (kept in memory, then stored) may unpack to.
const MAX_CONTEXT: u64 = 256 << 20;

/// Calls `f` with each entry of `upload` (a tar, or a tar.gz): its path
/// without a leading `./`, its header and its bytes. What the entries unpack
/// to is bounded by [`MAX_CONTEXT`], checked from each header before it is
/// read; `what` names the upload in that error.
fn for_each_entry(upload: &[u8], what: &str, mut f: impl FnMut(String, tar::Header, Vec<u8>) -> Result<(), DeployError>) -> Result<(), DeployError> {
    let archive_error = |e: std::io::Error| DeployError::Archive(e.to_string());
    let reader: Box<dyn Read> = if upload.starts_with(&[0x1f, 0x8b]) { Box::new(flate2::read::GzDecoder::new(upload)) } else { Box::new(upload) };
    let mut archive = tar::Archive::new(reader);
    let mut unpacked: u64 = 0;
    for entry in archive.entries().map_err(archive_error)? {
        let mut entry = entry.map_err(archive_error)?;
        let path = entry.path().map_err(archive_error)?.to_string_lossy().trim_start_matches("./").to_string();
        unpacked = unpacked.saturating_add(entry.header().size().unwrap_or(u64::MAX));
        if unpacked > MAX_CONTEXT {
            return Err(DeployError::Archive(format!("{what} unpacks past {} MiB", MAX_CONTEXT >> 20)));
        }
        let header = entry.header().clone();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).map_err(archive_error)?;
        f(path, header, bytes)?;
    }
    Ok(())
}

/// Adds a regular file `name` with `bytes` and permissions `mode` to `tar`.
fn append_file(tar: &mut tar::Builder<Vec<u8>>, name: &str, bytes: &[u8], mode: u32) -> Result<(), DeployError> {
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    header.set_mode(mode);
    header.set_cksum();
    tar.append_data(&mut header, name, bytes).map_err(|e| DeployError::Archive(e.to_string()))
}

/// A build context: the files of `upload` (a tar.gz or tar, if any) and the
/// `Dockerfile` given, as one uncompressed tar.
pub fn build_context(dockerfile: &str, upload: Option<&[u8]>) -> Result<Vec<u8>, DeployError> {
    let mut out = tar::Builder::new(Vec::new());
    if let Some(upload) = upload.filter(|u| !u.is_empty()) {
        for_each_entry(upload, "the build context", |path, mut header, bytes| {
            if path == "Dockerfile" {
                return Ok(());
            }
            out.append_data(&mut header, &path, bytes.as_slice()).map_err(|e| DeployError::Archive(e.to_string()))
        })?;
    }
    append_file(&mut out, "Dockerfile", dockerfile.as_bytes(), 0o644)?;
    out.into_inner().map_err(|e| DeployError::Archive(e.to_string()))
}

/// Where a platform build puts the app's files.
pub const APP_DIR: &str = "/home/application/current";
/// The stage name the platform's Dockerfile is built as, in a platform build.
const PLATFORM_STAGE: &str = "torii-platform";
/// Runs the Procfile process `$TSURU_PROCESSNAME` names (the provisioner
/// sets it per unit), from the app's directory.
const START_SCRIPT: &str = r#"#!/bin/sh
# torii: runs the Procfile process named by $TSURU_PROCESSNAME (default: web).
cd /home/application/current || exit 1
proc="${TSURU_PROCESSNAME:-web}"
cmd=$(sed -n "s/^${proc}:[[:space:]]*//p" Procfile | head -n 1)
if [ -z "$cmd" ]; then
    echo "torii: the Procfile has no process '$proc'" >&2
    exit 1
fi
exec /bin/sh -c "$cmd"
"#;

/// A build context deploying `upload` (a tar.gz or tar holding a `Procfile`)
/// onto a platform: the platform's Dockerfile (its build arguments as `ARG`
/// defaults) as the base stage, the app's files in [`APP_DIR`], and a start
/// script that runs the unit's Procfile process. Also the process names.
pub fn platform_context(
    platform_dockerfile: &str,
    args: &std::collections::BTreeMap<String, String>,
    upload: &[u8],
    max_processes: usize,
) -> Result<(Vec<u8>, Vec<String>), DeployError> {
    if upload.is_empty() {
        return Err(DeployError::Empty);
    }
    let mut files = tar::Builder::new(Vec::new());
    let mut procfile = None;
    for_each_entry(upload, "the archive", |path, mut header, bytes| {
        if path.is_empty() || path.starts_with('/') || path.split('/').any(|p| p == "..") {
            return Ok(());
        }
        if path == "Procfile" {
            procfile = Some(String::from_utf8_lossy(&bytes).into_owned());
        }
        files.append_data(&mut header, format!("app/{path}"), bytes.as_slice()).map_err(|e| DeployError::Archive(e.to_string()))
    })?;
    let processes = processes(&procfile.ok_or(DeployError::NoProcfile)?, max_processes)?;
    let mut dockerfile = String::new();
    let lines: Vec<&str> = platform_dockerfile.lines().collect();
    let last_from = lines.iter().rposition(|l| l.trim_start().to_ascii_uppercase().starts_with("FROM ")).ok_or(DeployError::PlatformWithoutFrom)?;
    let mut stage = PLATFORM_STAGE.to_string();
    for (i, line) in lines.iter().enumerate() {
        if i == last_from {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.iter().position(|w| w.eq_ignore_ascii_case("AS")) {
                Some(at) if at + 1 < words.len() => stage = words[at + 1].to_string(),
                _ => {
                    dockerfile.push_str(&format!("{} AS {PLATFORM_STAGE}\n", line.trim_end()));
                    continue;
                }
            }
        }
        dockerfile.push_str(&with_build_arg(line, args));
        dockerfile.push('\n');
    }
    dockerfile.push_str(&format!(
        "\nFROM {stage}\nCOPY app/ {APP_DIR}/\nCOPY torii-start /torii-start\nWORKDIR {APP_DIR}\nCMD [\"/bin/sh\", \"/torii-start\"]\n"
    ));
    append_file(&mut files, "torii-start", START_SCRIPT.as_bytes(), 0o755)?;
    append_file(&mut files, "Dockerfile", dockerfile.as_bytes(), 0o644)?;
    let context = files.into_inner().map_err(|e| DeployError::Archive(e.to_string()))?;
    Ok((context, processes))
}

/// An `ARG name[=default]` line whose argument was given, with the given
/// value as its default: what `--build-arg` does, for a Dockerfile built as
/// one stage of another. Other lines as they are.
fn with_build_arg(line: &str, args: &std::collections::BTreeMap<String, String>) -> String {
    let trimmed = line.trim_start();
    if trimmed.len() > 4 && trimmed[..4].eq_ignore_ascii_case("ARG ") {
        let name = trimmed[4..].trim().split(['=', ' ', '\t']).next().unwrap_or_default();
        if let Some(value) = args.get(name) {
            return format!("ARG {name}={value:?}");
        }
    }
    line.to_string()
}

/// Deploys an image built from `context` (see [`build_context`] and
/// [`platform_context`]) running `processes` as the app's next version; the
/// provisioner builds it before it is recorded.
#[allow(clippy::too_many_arguments)]
pub async fn deploy_build(
    server: &Server,
    provisioner: &Provisioner,
    app: &str,
    context: Vec<u8>,
    processes: &[String],
    upload: &str,
    event_id: &str,
    how: NewVersion,
    out: &impl Progress,
) -> Result<i64, DeployError> {
    out.line(format!("---- Building the app's image ({} KiB of context) ----\n", context.len().div_ceil(1024))).await;
    let stored = Stored::put(server, &context).await?;
    let artifact = build_artifact(&stored.digest);
    let version = Version { artifact: &artifact, upload, processes, outbound: &[] };
    prepare_and_record(server, provisioner, app, version, Some(stored), event_id, how, out).await
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
        return deploy_build(server, provisioner, app, context, &version.process_names(), &version.source, event_id, how, out).await;
    }
    if !Blobs::is_digest(&version.digest) {
        return deploy_image(server, provisioner, app, &version.digest, event_id, how, out).await;
    }
    let component = server.apps.blobs.get(&version.digest).await.map_err(missing)?;
    let artifact = Artifact {
        component,
        processes: version.process_names(),
        source: format!("version {}", version.version),
        outbound: version.outbound.clone(),
    };
    deploy_component(server, provisioner, app, artifact, &version.source, event_id, how, out).await
}

/// What an upload becomes for a provisioner.
pub enum Packaged {
    /// For the WASM provisioner: the component it holds.
    Component(Artifact),
    /// For a provisioner with nodes: a build context onto the app's
    /// platform, and the Procfile's processes.
    Build { context: Vec<u8>, processes: Vec<String> },
}

/// Deploys an upload (a file, or what `archive-url` named) as the app's
/// next version: the upload is kept as the version's source, then packaged
/// for the app's provisioner (see [`package`]). A deploy that fails keeps
/// nothing.
pub async fn deploy_upload(
    server: &Server,
    provisioner: &Provisioner,
    app: &str,
    upload: Vec<u8>,
    event_id: &str,
    how: NewVersion,
    out: &impl Progress,
) -> Result<i64, DeployError> {
    if upload.is_empty() {
        return Err(DeployError::Empty);
    }
    let record = server.store.app(app).await?.ok_or_else(|| DeployError::Provision(format!("App {app} not found.")))?;
    let source = Stored::put(server, &upload).await?;
    let digest = source.digest.clone();
    let deployed = async {
        match package(server, provisioner, &record, &upload, out).await? {
            Packaged::Component(artifact) => deploy_component(server, provisioner, app, artifact, &digest, event_id, how, out).await,
            Packaged::Build { context, processes } => {
                deploy_build(server, provisioner, app, context, &processes, &digest, event_id, how, out).await
            }
        }
    }
    .await;
    if deployed.is_err() {
        source.forget(server).await;
    }
    deployed
}

/// What `upload` becomes for `provisioner`: on a provisioner with nodes, a
/// build onto `app`'s platform; on the others, the component it holds.
pub async fn package(server: &Server, provisioner: &Provisioner, app: &crate::store::AppRecord, upload: &[u8], out: &impl Progress) -> Result<Packaged, DeployError> {
    let max = server.config.apps.max_processes as usize;
    if !server.config.uses_nodes(provisioner.name()) {
        return Ok(Packaged::Component(extract(upload, max)?));
    }
    let (name, platform) = (&app.name, &app.platform);
    if platform.is_empty() {
        return Err(DeployError::Platform(format!(
            "app {name:?} has no platform to deploy files onto: set one (tsuru app update -l <platform>), or deploy an image or a Dockerfile"
        )));
    }
    let (version, dockerfile, args) =
        server.store.platform_build(platform).await?.ok_or_else(|| DeployError::Platform(format!("platform {platform:?} does not exist")))?;
    out.line(format!("---- Deploying onto platform {platform} (version {version}) ----\n")).await;
    let (context, processes) = platform_context(&dockerfile, &args, upload, max)?;
    Ok(Packaged::Build { context, processes })
}

/// Whether `provisioner` runs artifacts of `artifact`'s kind: a container
/// provisioner images and builds, not components (a digest); a provisioner
/// of the app runtime alone (the WASM one) components only. Others are
/// taken to run what they were given.
pub fn runs(server: &Server, provisioner: &Provisioner, artifact: &str) -> bool {
    let name = provisioner.name();
    if server.config.runs_containers(name) {
        !Blobs::is_digest(artifact)
    } else if server.config.runs_components(name) {
        Blobs::is_digest(artifact)
    } else {
        true
    }
}

/// Makes `version` of `app` again for `provisioner` from the upload it was
/// deployed from, when its artifact is of a kind `provisioner` does not run:
/// an app moving between the WASM and a container provisioner is rebuilt
/// for it, as Heroku rebuilds an app for a new stack. Its artifact (and
/// outbound, kept within `app`'s pool's policy) replaced; what was stored
/// for it, to forget if the change fails. Nothing when it runs as it is.
pub async fn remake(
    server: &Server,
    provisioner: &Provisioner,
    app: &crate::store::AppRecord,
    version: &mut crate::store::VersionRecord,
    out: &impl Progress,
) -> Result<Option<Stored>, DeployError> {
    if runs(server, provisioner, &version.digest) {
        return Ok(None);
    }
    let (n, to) = (version.version, provisioner.name());
    if version.source.is_empty() {
        return Err(DeployError::Unmovable(format!(
            "version {n} cannot run on provisioner {to:?} and has no upload to be made again from (it was deployed from an image or a Dockerfile, or before uploads were kept): deploy the app from an archive first"
        )));
    }
    let upload = server.apps.blobs.get(&version.source).await.map_err(|e| DeployError::Unmovable(format!("the upload version {n} was made from is missing: {e}")))?;
    out.line(format!(" ---> provisioner {to:?} makes version {n} again from the upload it was deployed from\n")).await;
    // The server's own failures stay its own (500); the rest name the version.
    let cannot = |e: DeployError| match e {
        DeployError::Store(_) | DeployError::Blob(_) => e,
        e => DeployError::Unmovable(format!("version {n} cannot be made for provisioner {to:?}: {e}")),
    };
    let packaged = package(server, provisioner, app, &upload, out).await.map_err(cannot)?;
    // The same upload, so the same Procfile: the version keeps its processes
    // (and their units), unless the archive now reads otherwise.
    let names = match &packaged {
        Packaged::Component(artifact) => &artifact.processes,
        Packaged::Build { processes, .. } => processes,
    };
    if *names != version.process_names() {
        return Err(cannot(DeployError::Procfile(format!(
            "it names the processes {} where the version has {}",
            names.join(", "),
            version.process_names().join(", ")
        ))));
    }
    let stored = match packaged {
        Packaged::Component(artifact) => {
            within_policy(server, &app.pool, &artifact.outbound).map_err(cannot)?;
            let stored = Stored::put(server, &artifact.component).await?;
            (version.digest, version.outbound) = (stored.digest.clone(), artifact.outbound);
            stored
        }
        Packaged::Build { context, .. } => {
            let stored = Stored::put(server, &context).await?;
            (version.digest, version.outbound) = (build_artifact(&stored.digest), Vec::new());
            stored
        }
    };
    Ok(Some(stored))
}

/// The provisioner's check of a version not recorded yet; its lines go out.
async fn prepare(
    server: &Server,
    provisioner: &Provisioner,
    app: &str,
    artifact: &str,
    names: &[String],
    how: NewVersion,
    out: &impl Progress,
) -> Result<(), DeployError> {
    let desired = server.store.desired(app).await?.ok_or_else(|| DeployError::Provision(format!("App {app} not found.")))?;
    let processes = change::new_processes(&desired, names, how);
    // Bounded before any work (the converge path checks it again).
    let mut after = desired.clone();
    change::add_version(&mut after, artifact, "", processes.clone(), Vec::new(), "", how);
    let quota = desired.app.quota_limit;
    crate::limits::check_units(app, quota, server.config.apps.max_units, units_in_use(&desired.versions), units_in_use(&after.versions))?;
    // The number `record` will give it (the app is locked while it deploys).
    let number = change::next_version(&desired);
    let replace = how == NewVersion::Replace;
    let candidate = app_version(number, artifact, &processes, replace, if replace { 100 } else { 0 });
    let view = server.store.app_view(app).await?.ok_or_else(|| DeployError::Provision(format!("App {app} not found.")))?;
    let lines = provisioner.prepare(app_state(&view), candidate).await.map_err(|e| DeployError::Provision(e.to_string()))?;
    for line in lines {
        out.line(line).await;
    }
    Ok(())
}

/// Records the version and has the provisioner serve the new state, through
/// the converge path: a state it cannot serve takes the version back.
async fn record(server: &Server, app: &str, version: &Version<'_>, event_id: &str, how: NewVersion, out: &impl Progress) -> Result<i64, DeployError> {
    out.line(format!(" ---> processes: {}\n", version.processes.join(", "))).await;
    let mut number = 0;
    crate::apps::converge(server, app, out, |d| {
        let processes = change::new_processes(d, version.processes, how);
        number = change::add_version(d, version.artifact, version.upload, processes, version.outbound.to_vec(), event_id, how);
        Ok(())
    })
    .await
    .map_err(|e| DeployError::Provision(e.message))?;
    Ok(number)
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

    fn tar_entries(tar: &[u8]) -> Vec<(String, String)> {
        let mut archive = tar::Archive::new(tar);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let path = e.path().unwrap().to_string_lossy().into_owned();
                let mut text = String::new();
                e.read_to_string(&mut text).unwrap();
                (path, text)
            })
            .collect()
    }

    #[test]
    fn outbound_hosts_come_from_torii_toml_or_the_wasm_section_of_tsuru_yaml() {
        let wasm: &[u8] = b"\0asm....";
        let toml = tar_gz(&[("app.wasm", wasm), ("torii.toml", b"allowed_outbound_hosts = [\"https://api.example.com\"]\n")]);
        assert_eq!(extract(&toml, 32).unwrap().outbound, ["https://api.example.com"]);
        let yaml = b"hooks:\n  build: [make]\nwasm:\n  allowed_outbound_hosts:\n    - https://*.example.org:*\n";
        assert_eq!(extract(&tar_gz(&[("app.wasm", wasm), ("tsuru.yaml", yaml)]), 32).unwrap().outbound, ["https://*.example.org:*"]);
        assert_eq!(extract(&tar_gz(&[("app.wasm", wasm), ("tsuru.yaml", b"hooks: {}\n")]), 32).unwrap().outbound, Vec::<String>::new());
        let both = tar_gz(&[("app.wasm", wasm), ("torii.toml", b""), ("tsuru.yaml", yaml)]);
        assert_eq!(
            extract(&both, 32).unwrap_err().to_string(),
            "the archive declares the app in both torii.toml and the wasm section of tsuru.yaml: keep one"
        );
        let typo = tar_gz(&[("app.wasm", wasm), ("tsuru.yaml", b"wasm:\n  allowed_hosts: []\n")]);
        assert!(extract(&typo, 32).unwrap_err().to_string().contains("unknown field `allowed_hosts`"));
        let bad = tar_gz(&[("app.wasm", wasm), ("tsuru.yaml", b"wasm:\n  allowed_outbound_hosts: [\"127.0.0.1\"]\n")]);
        assert!(extract(&bad, 32).unwrap_err().to_string().starts_with("tsuru.yaml (wasm): allowed_outbound_hosts: \"127.0.0.1\" is not an allow entry"));
    }

    #[test]
    fn platform_builds_stack_the_app_on_the_platform_stage() {
        let args = std::collections::BTreeMap::from([("V".to_string(), "1 \"two\"".to_string())]);
        let upload = tar_gz(&[("Procfile", b"web: run\nworker: work\n"), ("./src/a.txt", b"A")]);
        let (context, processes) = platform_context("ARG BASE=x\nFROM busybox\nARG V\nRUN echo $V\n", &args, &upload, 32).unwrap();
        assert_eq!(processes, ["web", "worker"]);
        let entries = tar_entries(&context);
        let names: Vec<&str> = entries.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(names, ["app/Procfile", "app/src/a.txt", "torii-start", "Dockerfile"]);
        assert_eq!(
            entries[3].1,
            "ARG BASE=x\nFROM busybox AS torii-platform\nARG V=\"1 \\\"two\\\"\"\nRUN echo $V\n\nFROM torii-platform\n\
             COPY app/ /home/application/current/\nCOPY torii-start /torii-start\nWORKDIR /home/application/current\nCMD [\"/bin/sh\", \"/torii-start\"]\n"
        );
        // A named last stage is reused; an archive without a Procfile is refused.
        let (context, _) = platform_context("FROM a AS base\n", &Default::default(), &upload, 32).unwrap();
        assert!(tar_entries(&context)[3].1.starts_with("FROM a AS base\n\nFROM base\n"));
        assert!(matches!(platform_context("FROM a\n", &Default::default(), &tar_gz(&[("x", b"")]), 32), Err(DeployError::NoProcfile)));
        assert!(matches!(platform_context("RUN x\n", &Default::default(), &upload, 32), Err(DeployError::PlatformWithoutFrom)));
    }

    #[test]
    fn dockerfile_contexts_carry_the_upload_and_the_dockerfile() {
        let context = build_context("FROM x\n", Some(&tar_gz(&[("Dockerfile", b"ignored"), ("site/i.html", b"hi")]))).unwrap();
        assert_eq!(tar_entries(&context), [("site/i.html".to_string(), "hi".to_string()), ("Dockerfile".to_string(), "FROM x\n".to_string())]);
        assert_eq!(tar_entries(&build_context("FROM y\n", None).unwrap()), [("Dockerfile".to_string(), "FROM y\n".to_string())]);
    }

    #[test]
    fn finds_the_component_and_processes() {
        let bare = extract(b"\0asm....", 32).unwrap();
        assert_eq!((bare.component, bare.processes), (b"\0asm....".to_vec(), vec!["web".to_string()]));
        let one = extract(&tar_gz(&[("./dist/hello.wasm", b"W"), ("Procfile", b"web: run\nworker: work\n"), ("README", b"x")]), 32).unwrap();
        assert_eq!((one.component, one.processes, one.source), (b"W".to_vec(), vec!["web".into(), "worker".into()], "dist/hello.wasm".into()));
        let named = extract(&tar_gz(&[("a.wasm", b"A"), ("app.wasm", b"B")]), 32).unwrap();
        assert_eq!(named.component, b"B");
        assert!(matches!(extract(&tar_gz(&[("a.wasm", b"A"), ("b.wasm", b"B")]), 32), Err(DeployError::SeveralComponents(_))));
        assert!(matches!(extract(&tar_gz(&[("README", b"x")]), 32), Err(DeployError::NoComponent)));
        assert!(matches!(extract(&[0x1f, 0x8b, 1, 2, 3], 32), Err(DeployError::Archive(_))));
        assert!(matches!(extract(b"", 32), Err(DeployError::Empty)));
    }

    #[test]
    fn procfiles_are_bounded_and_their_names_checked() {
        assert!(matches!(processes("a: x\nb: y\nc: z\n", 2), Err(DeployError::Procfile(_))));
        for bad in ["we b: x", "<script>: x", "a\u{202e}b: x", "a\0: x", "web: x\nweb: y", &format!("{}: x", "a".repeat(64))] {
            assert!(matches!(processes(bad, 32), Err(DeployError::Procfile(_))), "{bad:?}");
        }
        assert_eq!(processes("# c: d\nweb: x\nworker_2: y\nnot a process\n", 32).unwrap(), ["web", "worker_2"]);
    }
}
