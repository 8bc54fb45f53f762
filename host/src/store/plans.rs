//! Plans.

use super::{Store, StoreError, StoreResult, conflict_or};
use sqlx::Row;
use sqlx::any::AnyRow;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanRecord {
    pub name: String,
    pub memory: i64,
    pub cpumilli: i64,
    pub cpushare: i64,
    pub default: bool,
}

fn plan(row: &AnyRow) -> StoreResult<PlanRecord> {
    Ok(PlanRecord {
        name: row.try_get("name")?,
        memory: row.try_get("memory")?,
        cpumilli: row.try_get("cpumilli")?,
        cpushare: row.try_get("cpushare")?,
        default: row.try_get::<i64, _>("is_default")? != 0,
    })
}

impl Store {
    /// Adds a plan; a new default plan takes the flag from the old one.
    pub async fn create_plan(&self, p: &PlanRecord) -> StoreResult<()> {
        let _stale = self.views.stale_all();
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO plans (name, memory, cpumilli, cpushare, is_default) VALUES ($1, $2, $3, $4, $5)")
            .bind(&p.name)
            .bind(p.memory)
            .bind(p.cpumilli)
            .bind(p.cpushare)
            .bind(i64::from(p.default))
            .execute(&mut *tx)
            .await
            .map_err(|e| conflict_or(e, "plan already exists"))?;
        if p.default {
            sqlx::query("UPDATE plans SET is_default = 0 WHERE name <> $1").bind(&p.name).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn plans(&self) -> StoreResult<Vec<PlanRecord>> {
        let rows = sqlx::query("SELECT name, memory, cpumilli, cpushare, is_default FROM plans ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(plan).collect()
    }

    pub async fn plan(&self, name: &str) -> StoreResult<Option<PlanRecord>> {
        let row = sqlx::query("SELECT name, memory, cpumilli, cpushare, is_default FROM plans WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(plan).transpose()
    }

    pub async fn delete_plan(&self, name: &str) -> StoreResult<()> {
        let _stale = self.views.stale_all();
        let done = sqlx::query("DELETE FROM plans WHERE name = $1").bind(name).execute(&self.pool).await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("plan not found".into()));
        }
        Ok(())
    }

    /// Seeds `plans` when the table is empty (first start). Safe to race:
    /// a concurrent seeder's rows are left alone.
    pub async fn seed_plans(&self, plans: &[PlanRecord]) -> StoreResult<()> {
        let _stale = self.views.stale_all();
        let count: i64 = sqlx::query("SELECT COUNT(*) AS n FROM plans").fetch_one(&self.pool).await?.try_get("n")?;
        if count > 0 {
            return Ok(());
        }
        for p in plans {
            sqlx::query(
                "INSERT INTO plans (name, memory, cpumilli, cpushare, is_default) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (name) DO NOTHING",
            )
            .bind(&p.name)
            .bind(p.memory)
            .bind(p.cpumilli)
            .bind(p.cpushare)
            .bind(i64::from(p.default))
            .execute(&self.pool)
            .await?;
        }
        Ok(())
    }
}
