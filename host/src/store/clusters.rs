//! Provisioner clusters (`/provisioner/clusters`): the engines a
//! provisioner runs apps on and the pools each serves. The client key,
//! custom data and kubeconfig are sealed at rest together.

use super::{Store, StoreError, StoreResult, conflict_or, now_millis};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterRecord {
    pub name: String,
    pub provisioner: String,
    /// Where its engine answers (Swarm managers: `unix://…`, `tcp://…`).
    pub addresses: Vec<String>,
    /// The pools it serves; none when it is its provisioner's default.
    pub pools: Vec<String>,
    /// Serves the pools of its provisioner no other cluster names.
    pub default: bool,
    pub local: bool,
    /// PEM, base64 as tsuru sends them.
    pub cacert: String,
    pub clientcert: String,
    pub http_proxy: String,
    pub secrets: ClusterSecrets,
    pub created_at: i64,
}

/// What only `cluster.admin` (and the cluster's provisioner) may read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClusterSecrets {
    /// base64, as tsuru sends it.
    pub clientkey: String,
    pub custom_data: BTreeMap<String, String>,
    /// A kubeconfig's `cluster` and `user`, as given.
    #[serde(rename = "kubeConfig")]
    pub kube_config: Option<serde_json::Value>,
}

const COLUMNS: &str = "name, provisioner, addresses, pools, is_default, local, cacert, clientcert, http_proxy, secrets, created_at";

fn list(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_default()
}

fn cluster(sealer: &super::sealed::Sealer, row: &AnyRow) -> StoreResult<ClusterRecord> {
    let name: String = row.try_get("name")?;
    let secrets = sealer.open(&super::sealed::cluster_place(&name), &row.try_get::<String, _>("secrets")?)?;
    Ok(ClusterRecord {
        provisioner: row.try_get("provisioner")?,
        addresses: list(&row.try_get::<String, _>("addresses")?),
        pools: list(&row.try_get::<String, _>("pools")?),
        default: row.try_get::<i64, _>("is_default")? != 0,
        local: row.try_get::<i64, _>("local")? != 0,
        cacert: row.try_get("cacert")?,
        clientcert: row.try_get("clientcert")?,
        http_proxy: row.try_get("http_proxy")?,
        secrets: serde_json::from_str(&secrets).map_err(|e| StoreError::Corrupt(format!("secrets of cluster {name:?}: {e}")))?,
        created_at: row.try_get("created_at")?,
        name,
    })
}

impl Store {
    /// Every cluster, by name.
    pub async fn clusters(&self) -> StoreResult<Vec<ClusterRecord>> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM clusters ORDER BY name")).fetch_all(&self.pool).await?;
        rows.iter().map(|r| cluster(&self.sealer, r)).collect()
    }

    pub async fn cluster(&self, name: &str) -> StoreResult<Option<ClusterRecord>> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM clusters WHERE name = $1")).bind(name).fetch_optional(&self.pool).await?;
        row.as_ref().map(|r| cluster(&self.sealer, r)).transpose()
    }

    /// The cluster of `provisioner` serving `pool`: the one naming it, else
    /// the provisioner's default.
    pub async fn cluster_of_pool(&self, provisioner: &str, pool: &str) -> StoreResult<Option<ClusterRecord>> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM clusters WHERE provisioner = $1 ORDER BY name"))
            .bind(provisioner)
            .fetch_all(&self.pool)
            .await?;
        let clusters = rows.iter().map(|r| cluster(&self.sealer, r)).collect::<StoreResult<Vec<_>>>()?;
        let named = clusters.iter().find(|c| c.pools.iter().any(|p| p == pool));
        Ok(named.or_else(|| clusters.iter().find(|c| c.default)).cloned())
    }

    /// Adds `c`; one of that name is a conflict. As in tsuru, the pools it
    /// names leave the other clusters of its provisioner, and a default
    /// cluster is the only default of its provisioner.
    pub async fn add_cluster(&self, c: &ClusterRecord) -> StoreResult<()> {
        let query = format!("INSERT INTO clusters ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)");
        let mut tx = self.pool.begin().await?;
        Self::take_over(&mut tx, c).await?;
        self.bind_cluster(&query, c, if c.created_at > 0 { c.created_at } else { now_millis() })
            .execute(&mut *tx)
            .await
            .map_err(|e| conflict_or(e, "cluster already exists"))?;
        tx.commit().await?;
        Ok(())
    }

    /// Writes `c` over the cluster of its name (whole: what it lacks is
    /// gone), taking its pools and default over as [`Store::add_cluster`]
    /// does; false when there is none.
    pub async fn update_cluster(&self, c: &ClusterRecord) -> StoreResult<bool> {
        let query = "UPDATE clusters SET name = $1, provisioner = $2, addresses = $3, pools = $4, is_default = $5, local = $6, \
                     cacert = $7, clientcert = $8, http_proxy = $9, secrets = $10, created_at = $11 WHERE name = $1";
        let mut tx = self.pool.begin().await?;
        Self::take_over(&mut tx, c).await?;
        let done = self.bind_cluster(query, c, c.created_at).execute(&mut *tx).await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }

    /// The other clusters of `c`'s provisioner lose the pools `c` names, and
    /// their default when `c` is the default.
    async fn take_over(tx: &mut sqlx::Transaction<'_, sqlx::Any>, c: &ClusterRecord) -> StoreResult<()> {
        if c.default {
            sqlx::query("UPDATE clusters SET is_default = 0 WHERE provisioner = $1 AND name <> $2")
                .bind(&c.provisioner)
                .bind(&c.name)
                .execute(&mut **tx)
                .await?;
        }
        if c.pools.is_empty() {
            return Ok(());
        }
        let others = sqlx::query("SELECT name, pools FROM clusters WHERE provisioner = $1 AND name <> $2")
            .bind(&c.provisioner)
            .bind(&c.name)
            .fetch_all(&mut **tx)
            .await?;
        for row in others {
            let (name, pools): (String, String) = (row.try_get("name")?, row.try_get("pools")?);
            let before = list(&pools);
            let after: Vec<&String> = before.iter().filter(|p| !c.pools.contains(p)).collect();
            if after.len() != before.len() {
                sqlx::query("UPDATE clusters SET pools = $1 WHERE name = $2")
                    .bind(serde_json::to_string(&after).expect("a list serialises"))
                    .bind(&name)
                    .execute(&mut **tx)
                    .await?;
            }
        }
        Ok(())
    }

    /// The values of `c` bound to `query`'s eleven parameters, in [`COLUMNS`] order.
    fn bind_cluster<'q>(&self, query: &'q str, c: &ClusterRecord, created_at: i64) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
        let secrets = serde_json::to_string(&c.secrets).expect("secrets serialise");
        sqlx::query(query)
            .bind(c.name.clone())
            .bind(c.provisioner.clone())
            .bind(serde_json::to_string(&c.addresses).expect("a list serialises"))
            .bind(serde_json::to_string(&c.pools).expect("a list serialises"))
            .bind(i64::from(c.default))
            .bind(i64::from(c.local))
            .bind(c.cacert.clone())
            .bind(c.clientcert.clone())
            .bind(c.http_proxy.clone())
            .bind(self.sealer.seal(&super::sealed::cluster_place(&c.name), &secrets))
            .bind(created_at)
    }

    /// Removes a cluster; false when there was none.
    pub async fn remove_cluster(&self, name: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM clusters WHERE name = $1").bind(name).execute(&self.pool).await?;
        Ok(done.rows_affected() == 1)
    }
}
