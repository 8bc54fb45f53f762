//! The `kv` capability's storage: one namespace per plugin name.

use super::{Store, StoreResult};
use sqlx::Row;

impl Store {
    pub async fn kv_get(&self, plugin: &str, key: &str) -> StoreResult<Option<Vec<u8>>> {
        let row = sqlx::query("SELECT value FROM plugin_kv WHERE plugin = $1 AND key = $2")
            .bind(plugin)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("value")).transpose()?)
    }

    pub async fn kv_set(&self, plugin: &str, key: &str, value: &[u8]) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO plugin_kv (plugin, key, value) VALUES ($1, $2, $3) \
             ON CONFLICT (plugin, key) DO UPDATE SET value = excluded.value",
        )
        .bind(plugin)
        .bind(key)
        .bind(value.to_vec())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Sets `key` unless it exists; whether it was set.
    pub async fn kv_set_if_absent(&self, plugin: &str, key: &str, value: &[u8]) -> StoreResult<bool> {
        let done = sqlx::query("INSERT INTO plugin_kv (plugin, key, value) VALUES ($1, $2, $3) ON CONFLICT (plugin, key) DO NOTHING")
            .bind(plugin)
            .bind(key)
            .bind(value.to_vec())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn kv_delete(&self, plugin: &str, key: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM plugin_kv WHERE plugin = $1 AND key = $2")
            .bind(plugin)
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn kv_list_keys(&self, plugin: &str, prefix: &str) -> StoreResult<Vec<String>> {
        let rows = sqlx::query(
            "SELECT key FROM plugin_kv WHERE plugin = $1 AND substr(key, 1, length($2)) = $2 ORDER BY key",
        )
        .bind(plugin)
        .bind(prefix)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(|r| Ok(r.try_get("key")?)).collect()
    }
}
