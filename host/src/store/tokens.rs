//! Login sessions and team tokens. Only hashes of token values are stored.

use super::{Store, StoreError, StoreResult, conflict_or};
use sqlx::Row;
use sqlx::any::AnyRow;

#[derive(Debug, Clone)]
pub struct SessionRecord {
    pub email: String,
    pub expires_at: i64,
}

#[derive(Debug, Clone)]
pub struct TeamTokenRecord {
    pub token_id: String,
    pub team: String,
    pub description: String,
    pub token_gen: i64,
    pub creator_email: String,
    pub created_at: i64,
    /// 0 = never expires.
    pub expires_at: i64,
    /// 0 = never used.
    pub last_access: i64,
}

fn team_token(row: AnyRow) -> StoreResult<TeamTokenRecord> {
    Ok(TeamTokenRecord {
        token_id: row.try_get("token_id")?,
        team: row.try_get("team")?,
        description: row.try_get("description")?,
        token_gen: row.try_get("token_gen")?,
        creator_email: row.try_get("creator_email")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        last_access: row.try_get("last_access")?,
    })
}

const TT_COLUMNS: &str = "token_id, team, description, token_gen, creator_email, created_at, expires_at, last_access";

impl Store {
    /// Stores a session; with `max_sessions > 0` the user's oldest sessions
    /// beyond that count are dropped.
    pub async fn create_session(
        &self,
        hash: &str,
        email: &str,
        created_at: i64,
        expires_at: i64,
        max_sessions: u32,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO sessions (token_hash, email, created_at, expires_at) VALUES ($1, $2, $3, $4)")
            .bind(hash)
            .bind(email)
            .bind(created_at)
            .bind(expires_at)
            .execute(&mut *tx)
            .await?;
        if max_sessions > 0 {
            sqlx::query(
                "DELETE FROM sessions WHERE email = $1 AND token_hash NOT IN \
                 (SELECT token_hash FROM sessions WHERE email = $1 ORDER BY created_at DESC, token_hash LIMIT $2)",
            )
            .bind(email)
            .bind(max_sessions as i64)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn session(&self, hash: &str) -> StoreResult<Option<SessionRecord>> {
        let row = sqlx::query("SELECT email, expires_at FROM sessions WHERE token_hash = $1")
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Ok(SessionRecord { email: r.try_get("email")?, expires_at: r.try_get("expires_at")? }))
            .transpose()
    }

    pub async fn delete_session(&self, hash: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM sessions WHERE token_hash = $1").bind(hash).execute(&self.pool).await?;
        Ok(())
    }

    pub async fn create_team_token(&self, t: &TeamTokenRecord, hash: &str) -> StoreResult<()> {
        sqlx::query(&format!("INSERT INTO team_tokens ({TT_COLUMNS}, token_hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"))
            .bind(&t.token_id)
            .bind(&t.team)
            .bind(&t.description)
            .bind(t.token_gen)
            .bind(&t.creator_email)
            .bind(t.created_at)
            .bind(t.expires_at)
            .bind(t.last_access)
            .bind(hash)
            .execute(&self.pool)
            .await
            .map_err(|e| conflict_or(e, &format!("team token {:?} already exists", t.token_id)))?;
        Ok(())
    }

    pub async fn team_token(&self, token_id: &str) -> StoreResult<Option<TeamTokenRecord>> {
        let row = sqlx::query(&format!("SELECT {TT_COLUMNS} FROM team_tokens WHERE token_id = $1"))
            .bind(token_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(team_token).transpose()
    }

    pub async fn team_token_by_hash(&self, hash: &str) -> StoreResult<Option<TeamTokenRecord>> {
        let row = sqlx::query(&format!("SELECT {TT_COLUMNS} FROM team_tokens WHERE token_hash = $1"))
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?;
        row.map(team_token).transpose()
    }

    pub async fn team_tokens(&self) -> StoreResult<Vec<TeamTokenRecord>> {
        sqlx::query(&format!("SELECT {TT_COLUMNS} FROM team_tokens ORDER BY token_id"))
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(team_token)
            .collect()
    }

    /// Writes description, expiry and (when `hash` is given) a new generation.
    pub async fn update_team_token(&self, t: &TeamTokenRecord, hash: Option<&str>) -> StoreResult<()> {
        let done = match hash {
            Some(hash) => sqlx::query(
                "UPDATE team_tokens SET description = $1, expires_at = $2, token_gen = $3, token_hash = $4 WHERE token_id = $5",
            )
            .bind(&t.description)
            .bind(t.expires_at)
            .bind(t.token_gen)
            .bind(hash)
            .bind(&t.token_id),
            None => sqlx::query("UPDATE team_tokens SET description = $1, expires_at = $2 WHERE token_id = $3")
                .bind(&t.description)
                .bind(t.expires_at)
                .bind(&t.token_id),
        }
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("team token not found".into()));
        }
        Ok(())
    }

    pub async fn touch_team_token(&self, token_id: &str, at: i64) -> StoreResult<()> {
        sqlx::query("UPDATE team_tokens SET last_access = $1 WHERE token_id = $2")
            .bind(at)
            .bind(token_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn delete_team_token(&self, token_id: &str) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM role_bindings WHERE subject_kind = 'token' AND subject = $1")
            .bind(token_id)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM team_tokens WHERE token_id = $1").bind(token_id).execute(&mut *tx).await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("team token not found".into()));
        }
        tx.commit().await?;
        Ok(())
    }
}
