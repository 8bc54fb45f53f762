//! Users and their API keys.

use super::{Store, StoreError, StoreResult, conflict_or, now_millis};
use sqlx::Row;
use sqlx::any::AnyRow;

#[derive(Debug, Clone)]
pub struct UserRecord {
    pub email: String,
    pub quota_limit: i64,
    pub api_key_gen: i64,
    pub created_at: i64,
    /// The groups the auth scheme reported at the user's last login.
    pub groups: Vec<String>,
}

fn user(row: AnyRow) -> StoreResult<UserRecord> {
    Ok(UserRecord {
        email: row.try_get("email")?,
        quota_limit: row.try_get("quota_limit")?,
        api_key_gen: row.try_get("api_key_gen")?,
        created_at: row.try_get("created_at")?,
        groups: groups(&row.try_get::<String, _>("idp_groups")?)?,
    })
}

fn groups(text: &str) -> StoreResult<Vec<String>> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("users.idp_groups: {e}")))
}

const COLUMNS: &str = "email, quota_limit, api_key_gen, created_at, idp_groups";

impl Store {
    /// Creates a user holding the given global-context default roles.
    pub async fn create_user(&self, email: &str, quota_limit: i64, default_roles: &[String]) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO users (email, quota_limit, created_at) VALUES ($1, $2, $3)")
            .bind(email)
            .bind(quota_limit)
            .bind(now_millis())
            .execute(&mut *tx)
            .await
            .map_err(|e| conflict_or(e, "this email is already registered"))?;
        for role in default_roles {
            sqlx::query(
                "INSERT INTO role_bindings (subject_kind, subject, role, context_value) VALUES ('user', $1, $2, '') \
                 ON CONFLICT DO NOTHING",
            )
            .bind(email)
            .bind(role)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Replaces the groups the auth scheme reports for `email` (sorted, no
    /// duplicates). Returns whether they changed.
    pub async fn set_user_groups(&self, email: &str, groups: &[String]) -> StoreResult<bool> {
        let mut groups = groups.to_vec();
        groups.sort();
        groups.dedup();
        let text = serde_json::to_string(&groups).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let done = sqlx::query("UPDATE users SET idp_groups = $1 WHERE email = $2 AND idp_groups <> $1")
            .bind(&text)
            .bind(email)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn user(&self, email: &str) -> StoreResult<Option<UserRecord>> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM users WHERE email = $1"))
            .bind(email)
            .fetch_optional(&self.pool)
            .await?;
        row.map(user).transpose()
    }

    pub async fn users(&self) -> StoreResult<Vec<UserRecord>> {
        sqlx::query(&format!("SELECT {COLUMNS} FROM users ORDER BY email"))
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(user)
            .collect()
    }

    /// Removes a user with their sessions and role bindings.
    pub async fn delete_user(&self, email: &str) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM role_bindings WHERE subject_kind = 'user' AND subject = $1")
            .bind(email)
            .execute(&mut *tx)
            .await?;
        super::roles::forget_bindings_on(&mut tx, "user", email).await?;
        sqlx::query("DELETE FROM sessions WHERE email = $1").bind(email).execute(&mut *tx).await?;
        let done = sqlx::query("DELETE FROM users WHERE email = $1").bind(email).execute(&mut *tx).await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("user not found".into()));
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn set_user_quota(&self, email: &str, limit: i64) -> StoreResult<()> {
        let done = sqlx::query("UPDATE users SET quota_limit = $1 WHERE email = $2")
            .bind(limit)
            .bind(email)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("user not found".into()));
        }
        Ok(())
    }

    /// Records a new API key generation and the hash of the key derived from it.
    pub async fn set_api_key(&self, email: &str, generation: i64, hash: &str) -> StoreResult<()> {
        sqlx::query("UPDATE users SET api_key_gen = $1, api_key_hash = $2 WHERE email = $3")
            .bind(generation)
            .bind(hash)
            .bind(email)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn user_by_api_key(&self, hash: &str) -> StoreResult<Option<String>> {
        let row = sqlx::query("SELECT email FROM users WHERE api_key_hash = $1")
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("email")).transpose()?)
    }
}
