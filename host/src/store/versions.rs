//! Deployed app versions.

use super::{Store, StoreResult, json_list, parse_list};
use sqlx::Row;
use sqlx::any::AnyRow;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRecord {
    pub app: String,
    pub version: i64,
    /// SHA-256 of the artifact in the blob store, or an image name.
    pub digest: String,
    /// Its processes (Procfile order), each with its units and status.
    pub processes: Vec<ProcessRecord>,
    /// Where its outbound HTTP may go (`allowed_outbound_hosts`), within
    /// its pool's policy.
    pub outbound: Vec<String>,
    /// SHA-256 of the upload it was made from in the blob store (empty for
    /// an image or a Dockerfile): another kind of provisioner makes it
    /// again from this when the app moves to it.
    pub source: String,
    pub routable: bool,
    /// Share of the traffic among routable versions.
    pub weight: i64,
    pub deploy_event: String,
    pub disabled_reason: String,
    pub created_at: i64,
}

/// What one process of a version should be doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProcessStatus {
    Started,
    Stopped,
    Asleep,
}

impl ProcessStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ProcessStatus::Started => "started",
            ProcessStatus::Stopped => "stopped",
            ProcessStatus::Asleep => "asleep",
        }
    }
}

/// One process of a version: how many units it runs, and whether they run.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProcessRecord {
    pub name: String,
    pub units: i64,
    pub status: ProcessStatus,
}

impl ProcessRecord {
    pub fn new(name: &str, units: i64, status: ProcessStatus) -> ProcessRecord {
        ProcessRecord { name: name.to_string(), units, status }
    }
}

impl VersionRecord {
    pub fn process(&self, name: &str) -> Option<&ProcessRecord> {
        self.processes.iter().find(|p| p.name == name)
    }

    pub fn has_process(&self, name: &str) -> bool {
        self.process(name).is_some()
    }

    pub fn process_names(&self) -> Vec<String> {
        self.processes.iter().map(|p| p.name.clone()).collect()
    }

    /// Units of all its processes.
    pub fn units(&self) -> i64 {
        self.processes.iter().map(|p| p.units).sum()
    }
}

/// Units of the routable versions, whatever their status: the app quota
/// and `[apps] max_units` count these.
pub fn units_in_use(versions: &[VersionRecord]) -> i64 {
    versions.iter().filter(|v| v.routable).map(VersionRecord::units).sum()
}

/// Where a deployed version goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewVersion {
    /// The only routable version: all the traffic.
    Replace,
    /// Beside the routable ones, without traffic until made routable.
    Beside,
}

const COLUMNS: &str = "app, version, digest, processes, routable, weight, deploy_event, disabled_reason, created_at, process_state, outbound, source";

pub(super) fn version(row: &AnyRow) -> StoreResult<VersionRecord> {
    let state: String = row.try_get("process_state")?;
    let processes = serde_json::from_str(&state).map_err(|e| super::StoreError::Corrupt(format!("process state of a version: {e}")))?;
    Ok(VersionRecord {
        app: row.try_get("app")?,
        version: row.try_get("version")?,
        digest: row.try_get("digest")?,
        processes,
        outbound: parse_list(&row.try_get::<String, _>("outbound")?),
        source: row.try_get("source")?,
        routable: row.try_get::<i64, _>("routable")? != 0,
        weight: row.try_get("weight")?,
        deploy_event: row.try_get("deploy_event")?,
        disabled_reason: row.try_get("disabled_reason")?,
        created_at: row.try_get("created_at")?,
    })
}

impl Store {
    /// Makes the versions of `app` recorded as `from` be `to`, inside `tx`:
    /// versions new or changed in `to` are written, versions it lacks
    /// removed, the others left alone.
    pub(super) async fn write_versions(
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        app: &str,
        from: &[VersionRecord],
        to: &[VersionRecord],
    ) -> StoreResult<()> {
        for gone in from.iter().filter(|v| !to.iter().any(|t| t.version == v.version)) {
            sqlx::query("DELETE FROM app_versions WHERE app = $1 AND version = $2").bind(app).bind(gone.version).execute(&mut **tx).await?;
        }
        for v in to.iter().filter(|v| !from.contains(v)) {
            let names: Vec<String> = v.process_names();
            sqlx::query(&format!(
                "INSERT INTO app_versions ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
                 ON CONFLICT (app, version) DO UPDATE SET digest = excluded.digest, processes = excluded.processes, \
                 routable = excluded.routable, weight = excluded.weight, deploy_event = excluded.deploy_event, \
                 disabled_reason = excluded.disabled_reason, process_state = excluded.process_state, \
                 outbound = excluded.outbound, source = excluded.source"
            ))
            .bind(app)
            .bind(v.version)
            .bind(&v.digest)
            .bind(json_list(&names))
            .bind(i64::from(v.routable))
            .bind(v.weight)
            .bind(&v.deploy_event)
            .bind(&v.disabled_reason)
            .bind(v.created_at)
            .bind(serde_json::to_string(&v.processes).expect("serialisable"))
            .bind(json_list(&v.outbound))
            .bind(&v.source)
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }

    /// Marks `version` as not (or again) available for rollback.
    pub async fn set_version_disabled(&self, app: &str, version: i64, reason: &str) -> StoreResult<bool> {
        let _stale = self.views.stale(app);
        let done = sqlx::query("UPDATE app_versions SET disabled_reason = $1 WHERE app = $2 AND version = $3")
            .bind(reason)
            .bind(app)
            .bind(version)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Every version of `app`, oldest first.
    pub async fn versions(&self, app: &str) -> StoreResult<Vec<VersionRecord>> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM app_versions WHERE app = $1 ORDER BY version"))
            .bind(app)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(version).collect()
    }

    /// Every version of every app, by app then version (for the view cache).
    pub(super) async fn all_versions(&self) -> StoreResult<Vec<VersionRecord>> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM app_versions ORDER BY app, version")).fetch_all(&self.pool).await?;
        rows.iter().map(version).collect()
    }
}

/// What the router serves of one version (set by the app's provisioner).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRecord {
    pub version: i64,
    /// The process that takes the traffic.
    pub process: String,
    /// Requests it may run at once.
    pub units: i64,
    /// Share of the traffic among the app's routes.
    pub weight: i64,
    /// HTTP servers on 127.0.0.1 running the version; empty: it runs in the
    /// app runtime.
    pub addresses: Vec<String>,
}

fn route(row: &AnyRow) -> StoreResult<(String, RouteRecord)> {
    Ok((
        row.try_get("app")?,
        RouteRecord {
            version: row.try_get("version")?,
            process: row.try_get("process")?,
            units: row.try_get("units")?,
            weight: row.try_get("weight")?,
            addresses: parse_list(&row.try_get::<String, _>("addresses")?),
        },
    ))
}

impl Store {
    /// Replaces what the router serves for `app`.
    pub async fn set_routes(&self, app: &str, routes: &[RouteRecord]) -> StoreResult<()> {
        let stale = self.views.stale(app);
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM app_routes WHERE app = $1").bind(app).execute(&mut *tx).await?;
        for r in routes {
            sqlx::query("INSERT INTO app_routes (app, version, process, units, weight, addresses) VALUES ($1, $2, $3, $4, $5, $6)")
                .bind(app)
                .bind(r.version)
                .bind(&r.process)
                .bind(r.units)
                .bind(r.weight)
                .bind(json_list(&r.addresses))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        let mut stored = routes.to_vec();
        // In the order a read gives them.
        stored.sort_by_key(|r| r.version);
        stale.patched(move |view| view.routes = stored);
        Ok(())
    }

    pub(super) async fn routes(&self, app: &str) -> StoreResult<Vec<RouteRecord>> {
        let rows = sqlx::query("SELECT app, version, process, units, weight, addresses FROM app_routes WHERE app = $1 ORDER BY version")
            .bind(app)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| route(r).map(|(_, r)| r)).collect()
    }

    pub(super) async fn all_routes(&self) -> StoreResult<Vec<(String, RouteRecord)>> {
        let rows = sqlx::query("SELECT app, version, process, units, weight, addresses FROM app_routes ORDER BY app, version").fetch_all(&self.pool).await?;
        rows.iter().map(route).collect()
    }
}
