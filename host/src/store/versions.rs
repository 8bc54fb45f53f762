//! Deployed app versions.

use super::{Store, StoreResult, json_list, now_millis, parse_list};
use sqlx::Row;
use sqlx::any::AnyRow;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRecord {
    pub app: String,
    pub version: i64,
    /// SHA-256 of the artifact in the blob store.
    pub digest: String,
    pub processes: Vec<String>,
    pub routable: bool,
    /// Share of the traffic among routable versions.
    pub weight: i64,
    pub deploy_event: String,
    pub disabled_reason: String,
    pub created_at: i64,
    /// Requests of this version that may run at once, per process.
    pub units: i64,
}

/// Units of the routable versions: one per process per unit count. The app
/// quota counts these.
pub fn units_in_use(versions: &[VersionRecord]) -> i64 {
    versions.iter().filter(|v| v.routable).map(|v| v.units * v.processes.len() as i64).sum()
}

/// Where a deployed version goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewVersion {
    /// The only routable version: all the traffic.
    Replace,
    /// Beside the routable ones, without traffic until made routable.
    Beside,
}

const COLUMNS: &str = "app, version, digest, processes, routable, weight, deploy_event, disabled_reason, created_at, units";

pub(super) fn version(row: &AnyRow) -> StoreResult<VersionRecord> {
    let processes: String = row.try_get("processes")?;
    Ok(VersionRecord {
        app: row.try_get("app")?,
        version: row.try_get("version")?,
        digest: row.try_get("digest")?,
        processes: super::parse_list(&processes),
        routable: row.try_get::<i64, _>("routable")? != 0,
        weight: row.try_get("weight")?,
        deploy_event: row.try_get("deploy_event")?,
        disabled_reason: row.try_get("disabled_reason")?,
        created_at: row.try_get("created_at")?,
        units: row.try_get("units")?,
    })
}

impl Store {
    /// Records version N+1 of `app` and returns N+1; counts the deploy on the
    /// app. `Replace` makes it the only routable version (all the traffic),
    /// with as many units as the routable version it replaces had (as a
    /// tsuru deploy keeps the app's scale); `Beside` adds it without traffic
    /// (tsuru's `new-version`) and one unit, to be made routable later.
    pub async fn add_version(&self, app: &str, digest: &str, processes: &[String], deploy_event: &str, how: NewVersion) -> StoreResult<i64> {
        let _stale = self.views.stale(app);
        let mut tx = self.pool.begin().await?;
        // Written first: on SQLite this takes the write lock before any read.
        sqlx::query("UPDATE apps SET deploys = deploys + 1 WHERE name = $1").bind(app).execute(&mut *tx).await?;
        let units: i64 = match how {
            NewVersion::Replace => {
                let row = sqlx::query("SELECT COALESCE(MAX(units), 1) AS units FROM app_versions WHERE app = $1 AND routable = 1")
                    .bind(app)
                    .fetch_one(&mut *tx)
                    .await?;
                row.try_get::<i64, _>("units")?.max(1)
            }
            NewVersion::Beside => 1,
        };
        let routable = match how {
            NewVersion::Replace => {
                sqlx::query("UPDATE app_versions SET routable = 0, weight = 0 WHERE app = $1").bind(app).execute(&mut *tx).await?;
                1
            }
            NewVersion::Beside => 0,
        };
        let row = sqlx::query(&format!(
            "INSERT INTO app_versions ({COLUMNS}) \
             SELECT $1, COALESCE(MAX(version), 0) + 1, $2, $3, $6, $7, $4, '', $5, $8 FROM app_versions WHERE app = $1 \
             RETURNING version"
        ))
        .bind(app)
        .bind(digest)
        .bind(super::json_list(processes))
        .bind(deploy_event)
        .bind(now_millis())
        .bind(routable)
        .bind(routable * 100)
        .bind(units)
        .fetch_one(&mut *tx)
        .await?;
        let number: i64 = row.try_get("version")?;
        tx.commit().await?;
        Ok(number)
    }

    /// Takes back a deploy whose new `version` could not be served: removes
    /// it, gives the other versions back their routable flags and weights as
    /// in `before`, and uncounts the deploy.
    pub async fn undo_version(&self, app: &str, version: i64, before: &[VersionRecord]) -> StoreResult<()> {
        let _stale = self.views.stale(app);
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE apps SET deploys = deploys - 1 WHERE name = $1 AND deploys > 0").bind(app).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM app_versions WHERE app = $1 AND version = $2").bind(app).bind(version).execute(&mut *tx).await?;
        for v in before {
            sqlx::query("UPDATE app_versions SET routable = $3, weight = $4 WHERE app = $1 AND version = $2")
                .bind(app)
                .bind(v.version)
                .bind(i64::from(v.routable))
                .bind(v.weight)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Makes `version` the only routable version of `app` (all the traffic).
    pub async fn route_only(&self, app: &str, version: i64) -> StoreResult<()> {
        let _stale = self.views.stale(app);
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE app_versions SET routable = CASE WHEN version = $2 THEN 1 ELSE 0 END, \
             weight = CASE WHEN version = $2 THEN 100 ELSE 0 END WHERE app = $1",
        )
        .bind(app)
        .bind(version)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE apps SET deploys = deploys + 1 WHERE name = $1").bind(app).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Makes `version` routable (sharing the traffic equally with the other
    /// routable versions) or takes it out of the traffic. False when there is
    /// no such version.
    pub async fn set_routable(&self, app: &str, version: i64, routable: bool) -> StoreResult<bool> {
        let _stale = self.views.stale(app);
        let done = sqlx::query("UPDATE app_versions SET routable = $1, weight = $2 WHERE app = $3 AND version = $4")
            .bind(i64::from(routable))
            .bind(if routable { 100i64 } else { 0 })
            .bind(app)
            .bind(version)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Sets how many units `version` runs.
    pub async fn set_version_units(&self, app: &str, version: i64, units: i64) -> StoreResult<()> {
        let _stale = self.views.stale(app);
        sqlx::query("UPDATE app_versions SET units = $1 WHERE app = $2 AND version = $3")
            .bind(units)
            .bind(app)
            .bind(version)
            .execute(&self.pool)
            .await?;
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

    /// Removes `version` of `app`.
    pub async fn delete_version(&self, app: &str, version: i64) -> StoreResult<()> {
        let _stale = self.views.stale(app);
        sqlx::query("DELETE FROM app_versions WHERE app = $1 AND version = $2").bind(app).bind(version).execute(&self.pool).await?;
        Ok(())
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
        let _stale = self.views.stale(app);
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
