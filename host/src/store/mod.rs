//! Storage: one repository layer over SQLite (embedded default, WAL) and
//! PostgreSQL (several torii replicas), through sqlx's `Any` driver. Queries
//! use `$n` placeholders, which both backends accept, and only portable types
//! (BIGINT, TEXT, bytes); times are Unix milliseconds.
//!
//! Only this module writes SQL. Each area has its own file.

mod apps;
mod autoscale;
mod blocks;
mod clusters;
mod volumes;
mod events;
mod iaas;
mod kv;
mod logs;
mod nodes;
mod plans;
mod proxy;
mod platforms;
mod pools;
mod roles;
mod router_apps;
mod routers;
pub mod sealed;
mod services;
mod teams;
mod tokens;
mod users;
mod versions;
mod desired;
mod views;
mod webhooks;

pub use apps::{AppColumn, AppRecord, AppView, EnvVar, Metadata, MetadataItem};
pub use autoscale::AutoscaleRecord;
pub use blocks::BlockRecord;
pub use clusters::{ClusterRecord, ClusterSecrets};
pub use volumes::{VolumeBindRecord, VolumeFilter, VolumeRecord};
pub use events::{EventQuery, EventRecord, LockOutcome};
pub use iaas::{MachineRecord, TemplateRecord};
pub use logs::{LogQuery, LogRecord};
pub use nodes::{NODE_DISABLED, NODE_READY, NODE_REMOVING, NodeRecord};
pub use plans::PlanRecord;
pub use proxy::{ProxyBackend, ProxyEntry};
pub use platforms::{PlatformRecord, PlatformVersion, platform_image};
pub use pools::PoolRecord;
pub use router_apps::RouterApp;
pub use routers::{AppRouter, CertificateRecord, RouterRecord};
pub use services::{BindRecord, BrokerRecord, InstanceRecord, InstanceState, ServiceRecord, UnitBind};
pub use roles::{RoleBinding, RoleRecord, SubjectKind};
pub use teams::TeamRecord;
pub use tokens::{SessionRecord, TeamTokenRecord};
pub use users::UserRecord;
pub use versions::{NewVersion, ProcessRecord, ProcessStatus, RouteRecord, VersionRecord, units_in_use};
pub use desired::Desired;
pub use webhooks::{DeliveryRecord, EventFilter, WebhookRecord};

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Executor};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// A secret stored sealed that the server key does not open.
    #[error("{0}")]
    Sealed(String),
    /// A stored value that does not parse (written by a broken migration or by hand).
    #[error("{0}")]
    Corrupt(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    views: std::sync::Arc<views::ViewCache>,
    /// On PostgreSQL, the task applying other processes' invalidations.
    listener: Option<std::sync::Arc<views::ListenerGuard>>,
    /// Seals and opens secrets at rest (`sealed`).
    sealer: std::sync::Arc<sealed::Sealer>,
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

impl Store {
    /// Connects and runs the migrations of the backend named by `url`.
    pub async fn connect(url: &str, max_connections: u32) -> StoreResult<Store> {
        install_default_drivers();
        let backend = if url.starts_with("sqlite:") { Backend::Sqlite } else { Backend::Postgres };
        let mut options = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(30));
        if backend == Backend::Sqlite {
            // A local file cannot drop the connection the way a network can:
            // no ping before each use (it doubled every statement's cost).
            options = options.test_before_acquire(false).after_connect(|conn, _| {
                Box::pin(async move {
                    // WAL lets readers run beside the writer; NORMAL is durable under WAL
                    // except across power loss; busy_timeout queues writers instead of failing.
                    conn.execute("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;")
                        .await?;
                    Ok(())
                })
            });
        }
        let views = std::sync::Arc::new(views::ViewCache::new(backend == Backend::Sqlite));
        if backend == Backend::Postgres {
            // Names this process on the notifications its writes cause
            // (migration 0032), so its listener can skip them.
            let set_origin = format!("SET torii.origin = '{}'", views.origin());
            options = options.after_connect(move |conn, _| {
                let set_origin = set_origin.clone();
                Box::pin(async move {
                    conn.execute(set_origin.as_str()).await?;
                    Ok(())
                })
            });
        }
        let pool = options.connect(url).await?;
        let migrator = match backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator.run(&pool).await.map_err(|e| StoreError::Database(e.into()))?;
        let listener = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(std::sync::Arc::new(views::listen(url.to_string(), views.clone()))),
        };
        Ok(Store { pool, backend, views, listener, sealer: std::sync::Arc::new(sealed::Sealer::none()) })
    }

    /// This store, sealing secrets at rest with `sealer`.
    pub fn with_sealer(mut self, sealer: sealed::Sealer) -> Store {
        self.sealer = std::sync::Arc::new(sealer);
        self
    }

    /// Seals every secret stored in plain text, or sealed with a previous
    /// key, with the current key; returns how many were written again.
    pub async fn reseal_at_rest(&self) -> StoreResult<u64> {
        use sqlx::Row;
        let _stale = self.views.stale_all();
        let mut written = 0;
        for (select, update, place) in sealed::SECRET_COLUMNS {
            for row in sqlx::query(select).fetch_all(&self.pool).await? {
                // The row's keys, then the stored value.
                let columns = (0..row.len()).map(|i| row.try_get::<String, _>(i)).collect::<Result<Vec<_>, _>>()?;
                let (stored, keys) = columns.split_last().expect("a key and a value");
                let place = place(keys);
                if !self.sealer.needs_resealing(&place, stored) {
                    continue;
                }
                let plain = self.sealer.open(&place, stored)?;
                let mut query = sqlx::query(update).bind(self.sealer.seal(&place, &plain));
                for key in keys {
                    query = query.bind(key);
                }
                query.bind(stored).execute(&self.pool).await?;
                written += 1;
            }
        }
        Ok(written)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn connections(&self) -> &AnyPool {
        &self.pool
    }

    /// A cheap round trip, for `/healthcheck?check=database`.
    pub async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        if let Some(l) = &self.listener {
            l.stop();
        }
        self.pool.close().await;
    }
}

pub fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// True when `e` is a unique-constraint violation.
fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// Maps a unique violation to `Conflict(message)`, anything else to `Database`.
fn conflict_or(e: sqlx::Error, message: &str) -> StoreError {
    if is_unique_violation(&e) { StoreError::Conflict(message.into()) } else { StoreError::Database(e) }
}

fn json_list(values: &[String]) -> String {
    serde_json::to_string(values).expect("strings serialise")
}

fn parse_list(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_default()
}
