//! The `torii` command: `serve`, `root-user-create`, `--version`.

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

use torii::config::Config;
use torii::server::{self, Server};
use torii::store::{RoleRecord, SubjectKind};

/// mimalloc: a routed request allocates and frees a few hundred small
/// objects (wasmtime's store and instance, wasi-http's fields), and with
/// glibc's malloc that was a sixth of the data plane's instructions.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Start-up compiles the plugins the compiled cache lacks (Cranelift, on
/// wasmtime's worker threads), and mimalloc would keep what that frees in
/// those threads' pages: ~150 MB of idle RSS after a first start. While the
/// server is built, freed memory goes back to the system at once; then
/// mimalloc's own delay is back, so the data plane's frees stay cheap.
mod startup_memory {
    use std::ffi::{c_int, c_long};

    unsafe extern "C" {
        fn mi_option_get(option: c_int) -> c_long;
        fn mi_option_set(option: c_int, value: c_long);
        fn mi_collect(force: bool);
    }

    /// `mi_option_purge_delay` of mimalloc.h (the same in its v2 and v3).
    const PURGE_DELAY: c_int = 15;

    /// Purging at once, until [`Eager::end`]; the delay it replaced.
    pub struct Eager(c_long);

    pub fn eager() -> Eager {
        // SAFETY: mimalloc's option calls take any option number and value.
        unsafe {
            let delay = mi_option_get(PURGE_DELAY);
            mi_option_set(PURGE_DELAY, 0);
            Eager(delay)
        }
    }

    impl Eager {
        pub fn end(self) {
            // SAFETY: as above; `mi_collect` only frees what is unused.
            unsafe {
                mi_option_set(PURGE_DELAY, self.0);
                mi_collect(true);
            }
        }
    }
}

#[derive(Parser)]
#[command(name = "torii", version, about = "A tsuru-compatible PaaS control plane with WebAssembly plugins")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the API server.
    Serve {
        /// Config file (TOML); defaults to $TORII_CONFIG, else the embedded defaults.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Creates a user holding the global root role. Asks for the password twice
    /// on a terminal; reads one line from stdin otherwise.
    RootUserCreate {
        email: String,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Prints the token of the internal app `tsr`, which node agents use
    /// to send container logs (`GET /logs`). It follows the server key
    /// (`data_dir/secret.key`): a new key makes a new token.
    AgentToken {
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn load_config(path: Option<PathBuf>) -> anyhow::Result<Config> {
    let path = path.or_else(|| std::env::var_os("TORII_CONFIG").map(PathBuf::from));
    Ok(Config::load(path.as_deref())?)
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TORII_LOG").unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("torii: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config } => serve(load_config(config)?).await,
        Command::RootUserCreate { email, config } => root_user_create(load_config(config)?, &email).await,
        Command::AgentToken { config } => {
            let config = load_config(config)?;
            let path = config.data_dir.join("secret.key");
            let key = torii::auth::ServerKey::load_existing(&path)?.ok_or_else(|| anyhow::anyhow!("no server key at {}: run `torii serve` once first", path.display()))?;
            println!("{}", key.agent_token());
            Ok(())
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    // Held until the process exits (the OS drops it on a crash too).
    let _sqlite_lock = match config.sqlite_path() {
        Some(db) => Some(lock_sqlite(&db)?),
        None => None,
    };
    let eager = startup_memory::eager();
    let server = Server::build(config).await?;
    eager.end();
    let running = server::start(server, None).await?;
    tracing::info!(
        api = %running.addr,
        apps = %running.router_addr,
        apps_tls = ?running.tls_addr,
        database = ?running.server.store.backend(),
        auth_scheme = running.server.scheme.name(),
        "torii {} is serving the tsuru API",
        env!("CARGO_PKG_VERSION")
    );
    shutdown_signal().await;
    tracing::info!("shutting down");
    running.stop().await;
    Ok(())
}

/// One serving process per SQLite database: its caches (app views,
/// identities) are kept coherent within the process only. Several torii
/// processes share a PostgreSQL database instead.
fn lock_sqlite(db: &std::path::Path) -> anyhow::Result<std::fs::File> {
    let mut path = db.as_os_str().to_owned();
    path.push(".serve-lock");
    if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", std::path::Path::new(&path).display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "another torii process is serving the SQLite database {}; run one process per SQLite database, or share PostgreSQL between several",
            db.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("cannot lock {}", std::path::Path::new(&path).display())),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn read_password() -> anyhow::Result<String> {
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ")?;
        let second = rpassword::prompt_password("Confirm: ")?;
        if first != second {
            bail!("passwords didn't match");
        }
        Ok(first)
    } else {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).context("cannot read the password from stdin")?;
        Ok(line.trim_end_matches(['\n', '\r']).to_string())
    }
}

/// The role `root-user-create` grants: every permission, globally.
const ROOT_ROLE: &str = "AllowAll";

async fn root_user_create(config: Config, email: &str) -> anyhow::Result<()> {
    let server = Server::build(config).await?;
    let exists = server.store.user(email).await?.is_some();
    if !exists {
        let password = read_password()?;
        torii::api::users::create_user(&server, email, &password).await.map_err(|e| anyhow::anyhow!(e.message))?;
    }
    if server.store.role(ROOT_ROLE).await?.is_none() {
        let role = RoleRecord {
            name: ROOT_ROLE.into(),
            context_type: "global".into(),
            description: "Every permission, everywhere".into(),
            schemes: vec!["*".into()],
            events: vec![],
        };
        match server.store.create_role(&role).await {
            Ok(()) | Err(torii::store::StoreError::Conflict(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    server.store.bind_role(SubjectKind::User, email, ROOT_ROLE, "").await?;
    server.store.close().await;
    if exists {
        println!("User {email:?} already existed; it now holds the root role.");
    } else {
        println!("Root user {email:?} created successfully.");
    }
    Ok(())
}
