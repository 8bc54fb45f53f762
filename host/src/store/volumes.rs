//! Volumes (`/1.4/volumes`): storage of an operator's plan in a pool, owned
//! by a team, and the apps that mount it (binds).

use super::{Store, StoreResult, conflict_or, now_millis};
use sqlx::Row;
use sqlx::any::AnyRow;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeRecord {
    pub name: String,
    pub pool: String,
    pub plan: String,
    pub team_owner: String,
    pub opts: BTreeMap<String, String>,
    /// Bound at least once: its storage exists, and it no longer changes.
    pub provisioned: bool,
    pub created_at: i64,
}

/// Where an app mounts a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeBindRecord {
    pub volume: String,
    pub app: String,
    pub mount_point: String,
    pub read_only: bool,
}

/// Which volumes a list shows: all, or those of these teams, names or pools.
#[derive(Debug, Clone, Default)]
pub struct VolumeFilter {
    pub teams: Vec<String>,
    pub names: Vec<String>,
    pub pools: Vec<String>,
}

const COLUMNS: &str = "name, pool, plan, team_owner, opts, provisioned, created_at";

fn volume(row: &AnyRow) -> StoreResult<VolumeRecord> {
    Ok(VolumeRecord {
        name: row.try_get("name")?,
        pool: row.try_get("pool")?,
        plan: row.try_get("plan")?,
        team_owner: row.try_get("team_owner")?,
        opts: serde_json::from_str(&row.try_get::<String, _>("opts")?).unwrap_or_default(),
        provisioned: row.try_get::<i64, _>("provisioned")? != 0,
        created_at: row.try_get("created_at")?,
    })
}

fn bind(row: &AnyRow) -> StoreResult<VolumeBindRecord> {
    Ok(VolumeBindRecord {
        volume: row.try_get("volume")?,
        app: row.try_get("app")?,
        mount_point: row.try_get("mount_point")?,
        read_only: row.try_get::<i64, _>("read_only")? != 0,
    })
}

impl Store {
    /// Every volume `filter` shows (`None`: all), by name.
    pub async fn volumes(&self, filter: Option<&VolumeFilter>) -> StoreResult<Vec<VolumeRecord>> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM volumes ORDER BY name")).fetch_all(&self.pool).await?;
        let all = rows.iter().map(volume).collect::<StoreResult<Vec<_>>>()?;
        Ok(match filter {
            None => all,
            Some(f) => all.into_iter().filter(|v| f.teams.contains(&v.team_owner) || f.names.contains(&v.name) || f.pools.contains(&v.pool)).collect(),
        })
    }

    pub async fn volume(&self, name: &str) -> StoreResult<Option<VolumeRecord>> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM volumes WHERE name = $1")).bind(name).fetch_optional(&self.pool).await?;
        row.as_ref().map(volume).transpose()
    }

    /// Whether a deleted volume had this name (its storage may hold its data).
    pub async fn volume_name_used(&self, name: &str) -> StoreResult<bool> {
        Ok(sqlx::query("SELECT 1 FROM volume_names_used WHERE name = $1").bind(name).fetch_optional(&self.pool).await?.is_some())
    }

    /// Adds `v`; one of that name is a conflict.
    pub async fn add_volume(&self, v: &VolumeRecord) -> StoreResult<()> {
        sqlx::query(&format!("INSERT INTO volumes ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, 0, $6)"))
            .bind(&v.name)
            .bind(&v.pool)
            .bind(&v.plan)
            .bind(&v.team_owner)
            .bind(serde_json::to_string(&v.opts).expect("strings serialise"))
            .bind(now_millis())
            .execute(&self.pool)
            .await
            .map_err(|e| conflict_or(e, "volume already exists"))?;
        Ok(())
    }

    /// Replaces what `v` names unless it was provisioned meanwhile; whether it changed.
    pub async fn update_volume(&self, v: &VolumeRecord) -> StoreResult<bool> {
        let done = sqlx::query("UPDATE volumes SET pool = $1, plan = $2, team_owner = $3, opts = $4 WHERE name = $5 AND provisioned = 0")
            .bind(&v.pool)
            .bind(&v.plan)
            .bind(&v.team_owner)
            .bind(serde_json::to_string(&v.opts).expect("strings serialise"))
            .bind(&v.name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Removes volume `name` when nothing mounts it, keeping its name used
    /// (when it was ever bound); whether it did.
    pub async fn remove_volume(&self, name: &str) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        let provisioned = sqlx::query("SELECT provisioned FROM volumes WHERE name = $1").bind(name).fetch_optional(&mut *tx).await?;
        let done = sqlx::query("DELETE FROM volumes WHERE name = $1 AND NOT EXISTS (SELECT 1 FROM volume_binds WHERE volume = $1)")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        if provisioned.is_some_and(|r| r.try_get::<i64, _>("provisioned").unwrap_or(1) != 0) {
            sqlx::query("INSERT INTO volume_names_used (name) VALUES ($1)").bind(name).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    pub async fn volume_binds(&self, volume: &str) -> StoreResult<Vec<VolumeBindRecord>> {
        let rows = sqlx::query("SELECT volume, app, mount_point, read_only FROM volume_binds WHERE volume = $1 ORDER BY app, mount_point")
            .bind(volume)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(bind).collect()
    }

    pub async fn volume_binds_of_app(&self, app: &str) -> StoreResult<Vec<VolumeBindRecord>> {
        let rows = sqlx::query("SELECT volume, app, mount_point, read_only FROM volume_binds WHERE app = $1 ORDER BY mount_point")
            .bind(app)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(bind).collect()
    }

    pub(super) async fn all_volume_binds(&self) -> StoreResult<Vec<VolumeBindRecord>> {
        let rows = sqlx::query("SELECT volume, app, mount_point, read_only FROM volume_binds ORDER BY app, mount_point").fetch_all(&self.pool).await?;
        rows.iter().map(bind).collect()
    }

    /// Binds `b`, marking its volume (in `pool`) provisioned. The same mount
    /// point of the app taken already (by this volume or another) is a
    /// conflict, and so is a volume gone or moved meanwhile.
    pub async fn add_volume_bind(&self, b: &VolumeBindRecord, pool: &str) -> StoreResult<()> {
        let _stale = self.views.stale(&b.app);
        let mut tx = self.pool.begin().await?;
        let taken = sqlx::query("SELECT 1 FROM volume_binds WHERE app = $1 AND mount_point = $2").bind(&b.app).bind(&b.mount_point).fetch_optional(&mut *tx).await?;
        if taken.is_some() {
            return Err(super::StoreError::Conflict("volume already bound in mountpoint".into()));
        }
        sqlx::query("INSERT INTO volume_binds (volume, app, mount_point, read_only) VALUES ($1, $2, $3, $4)")
            .bind(&b.volume)
            .bind(&b.app)
            .bind(&b.mount_point)
            .bind(i64::from(b.read_only))
            .execute(&mut *tx)
            .await
            .map_err(|e| conflict_or(e, "volume already bound in mountpoint"))?;
        // The volume is still there, in the app's pool (a delete or an update may have raced).
        let marked = sqlx::query("UPDATE volumes SET provisioned = 1 WHERE name = $1 AND pool = $2").bind(&b.volume).bind(pool).execute(&mut *tx).await?;
        if marked.rows_affected() != 1 {
            return Err(super::StoreError::Conflict(format!("volume {:?} changed meanwhile: try again", b.volume)));
        }
        tx.commit().await?;
        Ok(())
    }

    /// Removes a bind; whether there was one.
    pub async fn remove_volume_bind(&self, volume: &str, app: &str, mount_point: &str) -> StoreResult<bool> {
        let _stale = self.views.stale(app);
        let done = sqlx::query("DELETE FROM volume_binds WHERE volume = $1 AND app = $2 AND mount_point = $3")
            .bind(volume)
            .bind(app)
            .bind(mount_point)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}
