//! Platforms and their versions.

use super::{Store, StoreError, StoreResult, conflict_or, now_millis};
use sqlx::Row;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformRecord {
    pub name: String,
    pub disabled: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformVersion {
    pub version: i64,
    pub image: String,
    pub current: bool,
}

fn invalid() -> StoreError {
    StoreError::NotFound("Invalid platform".into())
}

/// The image a platform version is built as.
pub fn platform_image(name: &str, version: i64) -> String {
    format!("torii/platform/{name}:v{version}")
}

impl Store {
    /// Records a new platform with version 1.
    pub async fn create_platform(&self, name: &str, dockerfile: &str, build_args: &str) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO platforms (name, disabled, created_at) VALUES ($1, 0, $2)")
            .bind(name)
            .bind(now_millis())
            .execute(&mut *tx)
            .await
            .map_err(|e| conflict_or(e, "Duplicate platform"))?;
        sqlx::query(
            "INSERT INTO platform_versions (platform, version, image, dockerfile, build_args, current, created_at) VALUES ($1, 1, $2, $3, $4, 1, $5)",
        )
        .bind(name)
        .bind(platform_image(name, 1))
        .bind(dockerfile)
        .bind(build_args)
        .bind(now_millis())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn platforms(&self) -> StoreResult<Vec<PlatformRecord>> {
        let rows = sqlx::query("SELECT name, disabled FROM platforms ORDER BY name").fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| Ok(PlatformRecord { name: r.try_get("name")?, disabled: r.try_get::<i64, _>("disabled")? != 0 }))
            .collect()
    }

    pub async fn platform_versions(&self, name: &str) -> StoreResult<Vec<PlatformVersion>> {
        let rows = sqlx::query("SELECT version, image, current FROM platform_versions WHERE platform = $1 ORDER BY version")
            .bind(name)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok(PlatformVersion { version: r.try_get("version")?, image: r.try_get("image")?, current: r.try_get::<i64, _>("current")? != 0 }))
            .collect()
    }

    /// What the platform's current version is built from: its version,
    /// Dockerfile and build arguments. `None` for an unknown platform.
    pub async fn platform_build(&self, name: &str) -> StoreResult<Option<(i64, String, std::collections::BTreeMap<String, String>)>> {
        let row = sqlx::query("SELECT version, dockerfile, build_args FROM platform_versions WHERE platform = $1 AND current = 1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let args: String = row.try_get("build_args")?;
        Ok(Some((row.try_get("version")?, row.try_get("dockerfile")?, serde_json::from_str(&args).unwrap_or_default())))
    }

    /// Adds version N+1 and makes it current; returns N+1.
    pub async fn add_platform_version(&self, name: &str, dockerfile: &str, build_args: &str) -> StoreResult<i64> {
        let mut tx = self.pool.begin().await?;
        let cleared = sqlx::query("UPDATE platform_versions SET current = 0 WHERE platform = $1").bind(name).execute(&mut *tx).await?;
        if cleared.rows_affected() == 0 {
            return Err(invalid());
        }
        let next: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) + 1 AS next FROM platform_versions WHERE platform = $1")
            .bind(name)
            .fetch_one(&mut *tx)
            .await?
            .try_get("next")?;
        sqlx::query(
            "INSERT INTO platform_versions (platform, version, image, dockerfile, build_args, current, created_at) VALUES ($1, $2, $3, $4, $5, 1, $6)",
        )
        .bind(name)
        .bind(next)
        .bind(platform_image(name, next))
        .bind(dockerfile)
        .bind(build_args)
        .bind(now_millis())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(next)
    }

    /// Makes an existing version current.
    pub async fn set_platform_version(&self, name: &str, version: i64) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        let found = sqlx::query("UPDATE platform_versions SET current = CASE WHEN version = $2 THEN 1 ELSE 0 END WHERE platform = $1")
            .bind(name)
            .bind(version)
            .execute(&mut *tx)
            .await?;
        if found.rows_affected() == 0 {
            return Err(invalid());
        }
        let exists: i64 = sqlx::query("SELECT COUNT(*) AS n FROM platform_versions WHERE platform = $1 AND version = $2")
            .bind(name)
            .bind(version)
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
        if exists == 0 {
            return Err(StoreError::NotFound(format!("version {version} of platform {name} not found")));
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn set_platform_disabled(&self, name: &str, disabled: bool) -> StoreResult<()> {
        let done = sqlx::query("UPDATE platforms SET disabled = $1 WHERE name = $2").bind(i64::from(disabled)).bind(name).execute(&self.pool).await?;
        if done.rows_affected() == 0 {
            return Err(invalid());
        }
        Ok(())
    }

    pub async fn delete_platform(&self, name: &str) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM platform_versions WHERE platform = $1").bind(name).execute(&mut *tx).await?;
        let done = sqlx::query("DELETE FROM platforms WHERE name = $1").bind(name).execute(&mut *tx).await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("Platform doesn't exist.".into()));
        }
        tx.commit().await?;
        Ok(())
    }
}
