//! Pools and pool constraints.

use super::{Store, StoreError, StoreResult, conflict_or, now_millis};
use crate::pools::Constraint;
use sqlx::Row;
use sqlx::any::AnyRow;
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolRecord {
    pub name: String,
    pub provisioner: String,
    pub default: bool,
    pub labels: BTreeMap<String, String>,
}

fn pool(row: &AnyRow) -> StoreResult<PoolRecord> {
    let labels: String = row.try_get("labels")?;
    Ok(PoolRecord {
        name: row.try_get("name")?,
        provisioner: row.try_get("provisioner")?,
        default: row.try_get::<i64, _>("is_default")? != 0,
        labels: serde_json::from_str(&labels).unwrap_or_default(),
    })
}

fn constraint(row: &AnyRow) -> StoreResult<Constraint> {
    let values: String = row.try_get("vals")?;
    Ok(Constraint {
        pool_expr: row.try_get("pool_expr")?,
        field: row.try_get("field")?,
        values: serde_json::from_str(&values).unwrap_or_default(),
        blacklist: row.try_get::<i64, _>("blacklist")? != 0,
    })
}

fn not_found() -> StoreError {
    StoreError::NotFound("Pool does not exist.".into())
}

impl Store {
    /// Creates a pool. `public` adds the team constraint `*`; `force` takes
    /// the default flag from another pool instead of refusing.
    pub async fn create_pool(&self, p: &PoolRecord, public: bool, force: bool) -> StoreResult<()> {
        let _stale = self.views.stale_all();
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO pools (name, provisioner, is_default, labels, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(&p.name)
            .bind(&p.provisioner)
            .bind(i64::from(p.default))
            .bind(serde_json::to_string(&p.labels).expect("serialisable"))
            .bind(now_millis())
            .execute(&mut *tx)
            .await
            .map_err(|e| conflict_or(e, "Pool already exists."))?;
        if p.default {
            let others: i64 = sqlx::query("SELECT COUNT(*) AS n FROM pools WHERE is_default = 1 AND name <> $1")
                .bind(&p.name)
                .fetch_one(&mut *tx)
                .await?
                .try_get("n")?;
            if others > 0 && !force {
                return Err(StoreError::Conflict("Default pool already exists.".into()));
            }
            sqlx::query("UPDATE pools SET is_default = 0 WHERE name <> $1").bind(&p.name).execute(&mut *tx).await?;
        }
        if public || p.default {
            sqlx::query("INSERT INTO pool_constraints (pool_expr, field, vals, blacklist) VALUES ($1, 'team', '[\"*\"]', 0)")
                .bind(&p.name)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn pools(&self) -> StoreResult<Vec<PoolRecord>> {
        let rows = sqlx::query("SELECT name, provisioner, is_default, labels FROM pools ORDER BY name").fetch_all(&self.pool).await?;
        rows.iter().map(pool).collect()
    }

    pub async fn pool(&self, name: &str) -> StoreResult<Option<PoolRecord>> {
        let row = sqlx::query("SELECT name, provisioner, is_default, labels FROM pools WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(pool).transpose()
    }

    /// Updates a pool: `default` (with `force` to take it from another pool)
    /// and `labels` when given.
    pub async fn update_pool(
        &self,
        name: &str,
        default: Option<bool>,
        force: bool,
        labels: Option<&BTreeMap<String, String>>,
    ) -> StoreResult<()> {
        let _stale = self.views.stale_all();
        let mut tx = self.pool.begin().await?;
        // Write first (see `start_event`): touch the row, learn whether it exists.
        let found = sqlx::query("UPDATE pools SET name = name WHERE name = $1").bind(name).execute(&mut *tx).await?;
        if found.rows_affected() == 0 {
            return Err(not_found());
        }
        if let Some(labels) = labels {
            sqlx::query("UPDATE pools SET labels = $1 WHERE name = $2")
                .bind(serde_json::to_string(labels).expect("serialisable"))
                .bind(name)
                .execute(&mut *tx)
                .await?;
        }
        match default {
            Some(true) => {
                let others: i64 = sqlx::query("SELECT COUNT(*) AS n FROM pools WHERE is_default = 1 AND name <> $1")
                    .bind(name)
                    .fetch_one(&mut *tx)
                    .await?
                    .try_get("n")?;
                if others > 0 && !force {
                    return Err(StoreError::Conflict("Default pool already exists.".into()));
                }
                sqlx::query("UPDATE pools SET is_default = CASE WHEN name = $1 THEN 1 ELSE 0 END").bind(name).execute(&mut *tx).await?;
            }
            Some(false) => {
                sqlx::query("UPDATE pools SET is_default = 0 WHERE name = $1").bind(name).execute(&mut *tx).await?;
            }
            None => {}
        }
        tx.commit().await?;
        Ok(())
    }

    /// Removes a pool and the constraints written for it exactly.
    pub async fn delete_pool(&self, name: &str) -> StoreResult<()> {
        let _stale = self.views.stale_all();
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("DELETE FROM pools WHERE name = $1").bind(name).execute(&mut *tx).await?;
        if done.rows_affected() == 0 {
            return Err(not_found());
        }
        sqlx::query("DELETE FROM pool_constraints WHERE pool_expr = $1").bind(name).execute(&mut *tx).await?;
        super::roles::forget_bindings_on(&mut tx, "pool", name).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn constraints(&self) -> StoreResult<Vec<Constraint>> {
        let rows = sqlx::query("SELECT pool_expr, field, vals, blacklist FROM pool_constraints ORDER BY pool_expr, field")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(constraint).collect()
    }

    /// Writes a constraint; empty values remove it.
    pub async fn set_constraint(&self, c: &Constraint) -> StoreResult<()> {
        if c.values.is_empty() {
            sqlx::query("DELETE FROM pool_constraints WHERE pool_expr = $1 AND field = $2")
                .bind(&c.pool_expr)
                .bind(&c.field)
                .execute(&self.pool)
                .await?;
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO pool_constraints (pool_expr, field, vals, blacklist) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (pool_expr, field) DO UPDATE SET vals = excluded.vals, blacklist = excluded.blacklist",
        )
        .bind(&c.pool_expr)
        .bind(&c.field)
        .bind(serde_json::to_string(&c.values).expect("serialisable"))
        .bind(i64::from(c.blacklist))
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
