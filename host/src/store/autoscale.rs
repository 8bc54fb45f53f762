//! App autoscale specs (`/1.9/apps/{app}/units/autoscale`), one per process.

use super::{Store, StoreResult};
use sqlx::Row;
use sqlx::any::AnyRow;

/// What the autoscaler keeps a process of an app within.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoscaleRecord {
    pub app: String,
    pub process: String,
    pub min_units: i64,
    pub max_units: i64,
    /// As given: `"70%"` or `"700m"`.
    pub average_cpu: String,
    /// 0: the app's serving version.
    pub version: i64,
}

fn record(row: &AnyRow) -> StoreResult<AutoscaleRecord> {
    Ok(AutoscaleRecord {
        app: row.try_get("app")?,
        process: row.try_get("process")?,
        min_units: row.try_get("min_units")?,
        max_units: row.try_get("max_units")?,
        average_cpu: row.try_get("average_cpu")?,
        version: row.try_get("version")?,
    })
}

const COLUMNS: &str = "app, process, min_units, max_units, average_cpu, version";

impl Store {
    /// The app's specs, by process.
    pub async fn autoscales(&self, app: &str) -> StoreResult<Vec<AutoscaleRecord>> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM app_autoscale WHERE app = $1 ORDER BY process"))
            .bind(app)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(record).collect()
    }

    /// Every spec of every app, by app and process.
    pub async fn all_autoscales(&self) -> StoreResult<Vec<AutoscaleRecord>> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM app_autoscale ORDER BY app, process")).fetch_all(&self.pool).await?;
        rows.iter().map(record).collect()
    }

    /// Sets the spec of `r.process` (replacing the one it had).
    pub async fn set_autoscale(&self, r: &AutoscaleRecord) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM app_autoscale WHERE app = $1 AND process = $2").bind(&r.app).bind(&r.process).execute(&mut *tx).await?;
        sqlx::query(&format!("INSERT INTO app_autoscale ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"))
            .bind(&r.app)
            .bind(&r.process)
            .bind(r.min_units)
            .bind(r.max_units)
            .bind(&r.average_cpu)
            .bind(r.version)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Removes the spec of `process`; whether there was one.
    pub async fn remove_autoscale(&self, app: &str, process: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM app_autoscale WHERE app = $1 AND process = $2").bind(app).bind(process).execute(&self.pool).await?;
        Ok(done.rows_affected() > 0)
    }
}
