//! Docker nodes (`/1.2/node`): the engines container apps run on, by pool.

use super::{Store, StoreError, StoreResult, conflict_or, now_millis};
use sqlx::Row;
use sqlx::any::AnyRow;
use std::collections::BTreeMap;

/// A registered Docker engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    /// `unix:///path/docker.sock` or `tcp://127.0.0.1:port`.
    pub address: String,
    pub pool: String,
    /// tsuru's node metadata, without `pool`.
    pub metadata: BTreeMap<String, String>,
    /// "ready", "disabled" or "removing".
    pub status: String,
    pub iaas_id: String,
}

pub const NODE_READY: &str = "ready";
pub const NODE_DISABLED: &str = "disabled";
/// A node being removed: its units move to the pool's other nodes.
pub const NODE_REMOVING: &str = "removing";

fn node(row: &AnyRow) -> StoreResult<NodeRecord> {
    let metadata: String = row.try_get("metadata")?;
    Ok(NodeRecord {
        address: row.try_get("address")?,
        pool: row.try_get("pool")?,
        metadata: serde_json::from_str(&metadata).unwrap_or_default(),
        status: row.try_get("status")?,
        iaas_id: row.try_get("iaas_id")?,
    })
}

const COLUMNS: &str = "address, pool, metadata, status, iaas_id";

impl Store {
    /// Registers a node; a node at the same address is a conflict.
    pub async fn add_node(&self, n: &NodeRecord) -> StoreResult<()> {
        sqlx::query("INSERT INTO nodes (address, pool, metadata, status, iaas_id, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(&n.address)
            .bind(&n.pool)
            .bind(serde_json::to_string(&n.metadata).expect("strings serialise"))
            .bind(&n.status)
            .bind(&n.iaas_id)
            .bind(now_millis())
            .execute(&self.pool)
            .await
            .map_err(|e| conflict_or(e, &format!("node with address {:?} already exists", n.address)))?;
        Ok(())
    }

    pub async fn node(&self, address: &str) -> StoreResult<Option<NodeRecord>> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM nodes WHERE address = $1")).bind(address).fetch_optional(&self.pool).await?;
        row.as_ref().map(node).transpose()
    }

    /// Every node, by address.
    pub async fn nodes(&self) -> StoreResult<Vec<NodeRecord>> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM nodes ORDER BY address")).fetch_all(&self.pool).await?;
        rows.iter().map(node).collect()
    }

    /// The nodes of `pool`, by address.
    pub async fn pool_nodes(&self, pool: &str) -> StoreResult<Vec<NodeRecord>> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM nodes WHERE pool = $1 ORDER BY address")).bind(pool).fetch_all(&self.pool).await?;
        rows.iter().map(node).collect()
    }

    /// Replaces a node's pool, metadata and status.
    pub async fn update_node(&self, n: &NodeRecord) -> StoreResult<()> {
        let done = sqlx::query("UPDATE nodes SET pool = $2, metadata = $3, status = $4 WHERE address = $1")
            .bind(&n.address)
            .bind(&n.pool)
            .bind(serde_json::to_string(&n.metadata).expect("strings serialise"))
            .bind(&n.status)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("Node not found.".into()));
        }
        Ok(())
    }

    pub async fn remove_node(&self, address: &str) -> StoreResult<()> {
        let done = sqlx::query("DELETE FROM nodes WHERE address = $1").bind(address).execute(&self.pool).await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("Node not found.".into()));
        }
        Ok(())
    }
}

impl Store {
    /// Sets node container `name`'s config for `pool` ('' = every pool).
    pub async fn set_node_container(&self, name: &str, pool: &str, config: &serde_json::Value) -> StoreResult<()> {
        let text = config.to_string();
        let done = sqlx::query("UPDATE node_containers SET config = $3 WHERE name = $1 AND pool = $2")
            .bind(name)
            .bind(pool)
            .bind(&text)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            sqlx::query("INSERT INTO node_containers (name, pool, config) VALUES ($1, $2, $3)")
                .bind(name)
                .bind(pool)
                .bind(&text)
                .execute(&self.pool)
                .await
                .map_err(|e| conflict_or(e, "node container already exists"))?;
        }
        Ok(())
    }

    /// Every node container config: (name, pool, config), by name then pool.
    pub async fn node_containers(&self) -> StoreResult<Vec<(String, String, serde_json::Value)>> {
        let rows = sqlx::query("SELECT name, pool, config FROM node_containers ORDER BY name, pool").fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                let config: String = r.try_get("config")?;
                Ok((r.try_get("name")?, r.try_get("pool")?, serde_json::from_str(&config).unwrap_or_default()))
            })
            .collect()
    }

    /// Removes `name`'s config for `pool`; whether there was one.
    pub async fn delete_node_container(&self, name: &str, pool: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM node_containers WHERE name = $1 AND pool = $2").bind(name).bind(pool).execute(&self.pool).await?;
        Ok(done.rows_affected() > 0)
    }
}

impl Store {
    /// Every pool's setting of `kind` (`healing`, `logs`): pool → JSON object.
    pub async fn pool_settings(&self, kind: &str) -> StoreResult<std::collections::BTreeMap<String, serde_json::Value>> {
        let rows = sqlx::query("SELECT pool, value FROM pool_settings WHERE kind = $1 ORDER BY pool").bind(kind).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                let value: String = r.try_get("value")?;
                Ok((r.try_get("pool")?, serde_json::from_str(&value).unwrap_or_default()))
            })
            .collect()
    }

    /// Sets (or, with `None`, removes) `pool`'s setting of `kind`.
    pub async fn set_pool_setting(&self, kind: &str, pool: &str, value: Option<&serde_json::Value>) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM pool_settings WHERE kind = $1 AND pool = $2").bind(kind).bind(pool).execute(&mut *tx).await?;
        if let Some(value) = value {
            sqlx::query("INSERT INTO pool_settings (kind, pool, value) VALUES ($1, $2, $3)")
                .bind(kind)
                .bind(pool)
                .bind(value.to_string())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
