//! Teams.

use super::{Store, StoreError, StoreResult, conflict_or, json_list, now_millis, parse_list};
use sqlx::Row;
use sqlx::any::AnyRow;

#[derive(Debug, Clone)]
pub struct TeamRecord {
    pub name: String,
    pub tags: Vec<String>,
    pub quota_limit: i64,
}

fn team(row: AnyRow) -> StoreResult<TeamRecord> {
    let tags: String = row.try_get("tags")?;
    Ok(TeamRecord { name: row.try_get("name")?, tags: parse_list(&tags), quota_limit: row.try_get("quota_limit")? })
}

impl Store {
    /// Creates a team and gives `creator` the `team-create` roles on it.
    pub async fn create_team(
        &self,
        name: &str,
        tags: &[String],
        quota_limit: i64,
        creator: Option<(&str, &str)>,
        creator_roles: &[String],
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO teams (name, tags, quota_limit, created_at) VALUES ($1, $2, $3, $4)")
            .bind(name)
            .bind(json_list(tags))
            .bind(quota_limit)
            .bind(now_millis())
            .execute(&mut *tx)
            .await
            .map_err(|e| conflict_or(e, "team already exists"))?;
        if let Some((kind, subject)) = creator {
            for role in creator_roles {
                sqlx::query(
                    "INSERT INTO role_bindings (subject_kind, subject, role, context_value) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(kind)
                .bind(subject)
                .bind(role)
                .bind(name)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn team(&self, name: &str) -> StoreResult<Option<TeamRecord>> {
        let row = sqlx::query("SELECT name, tags, quota_limit FROM teams WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.map(team).transpose()
    }

    pub async fn teams(&self) -> StoreResult<Vec<TeamRecord>> {
        sqlx::query("SELECT name, tags, quota_limit FROM teams ORDER BY name")
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(team)
            .collect()
    }

    pub async fn set_team_tags(&self, name: &str, tags: &[String]) -> StoreResult<()> {
        let done = sqlx::query("UPDATE teams SET tags = $1 WHERE name = $2")
            .bind(json_list(tags))
            .bind(name)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("Team {name:?} not found.")));
        }
        Ok(())
    }

    /// Renames a team and every reference to it, atomically.
    pub async fn rename_team(&self, old: &str, new: &str, tags: &[String]) -> StoreResult<()> {
        let _stale = self.views.stale_all();
        let mut tx = self.pool.begin().await?;
        // One statement that writes first (see `start_event` on SQLite).
        let created = sqlx::query(
            "INSERT INTO teams (name, tags, quota_limit, created_at) SELECT $1, $2, quota_limit, $3 FROM teams WHERE name = $4",
        )
        .bind(new)
        .bind(json_list(tags))
        .bind(now_millis())
        .bind(old)
        .execute(&mut *tx)
        .await
        .map_err(|e| conflict_or(e, "team already exists"))?;
        if created.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("Team {old:?} not found.")));
        }
        sqlx::query("UPDATE team_tokens SET team = $1 WHERE team = $2").bind(new).bind(old).execute(&mut *tx).await?;
        sqlx::query("UPDATE apps SET team_owner = $1 WHERE team_owner = $2").bind(new).bind(old).execute(&mut *tx).await?;
        sqlx::query("UPDATE volumes SET team_owner = $1 WHERE team_owner = $2").bind(new).bind(old).execute(&mut *tx).await?;
        sqlx::query("UPDATE app_teams SET team = $1 WHERE team = $2").bind(new).bind(old).execute(&mut *tx).await?;
        sqlx::query(
            "UPDATE role_bindings SET context_value = $1 WHERE context_value = $2 \
             AND role IN (SELECT name FROM roles WHERE context_type = 'team')",
        )
        .bind(new)
        .bind(old)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM teams WHERE name = $1").bind(old).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Removes a team and the team-context role bindings on it.
    pub async fn delete_team(&self, name: &str) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        super::roles::forget_bindings_on(&mut tx, "team", name).await?;
        let done = sqlx::query("DELETE FROM teams WHERE name = $1").bind(name).execute(&mut *tx).await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("Team {name:?} not found.")));
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn team_token_ids(&self, team: &str) -> StoreResult<Vec<String>> {
        let rows = sqlx::query("SELECT token_id FROM team_tokens WHERE team = $1 ORDER BY token_id")
            .bind(team)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(|r| Ok(r.try_get("token_id")?)).collect()
    }

    pub async fn set_team_quota(&self, name: &str, limit: i64) -> StoreResult<()> {
        let done = sqlx::query("UPDATE teams SET quota_limit = $1 WHERE name = $2")
            .bind(limit)
            .bind(name)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("Team {name:?} not found.")));
        }
        Ok(())
    }
}
