//! The proxy table: which app, and which of its versions, each host name
//! goes to. Router plugins write it (capability `proxy`); the data plane
//! reads it through the view cache, so a lookup costs no database trip.

use super::{Store, StoreError, StoreResult};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use std::sync::Arc;

/// One routable version of an app in the proxy table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyBackend {
    pub version: i64,
    /// HTTP servers on 127.0.0.1; empty: the version runs in the app runtime.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    pub weight: u32,
}

/// What a host name points at (whichever router wrote it: the data plane
/// serves them all alike).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyEntry {
    pub app: String,
    /// Only backends with a positive weight.
    pub backends: Vec<ProxyBackend>,
}

impl Store {
    /// Points `hosts` at `app`'s `backends` for `router`, replacing what the
    /// router pointed at for the app; all or nothing. A host another app or
    /// router holds is a conflict.
    pub async fn set_proxy_app(&self, router: &str, app: &str, hosts: &[String], backends: &[ProxyBackend]) -> StoreResult<()> {
        let live: Vec<&ProxyBackend> = backends.iter().filter(|b| b.weight > 0).collect();
        let encoded = serde_json::to_string(&live).expect("backends serialise");
        // Only what changed is written: an unchanged entry (a sync at start,
        // a rebuild in step) costs no write, so no other process's cache is
        // emptied for nothing, and a version change is one row per host.
        let rows = sqlx::query("SELECT host, backends FROM proxy_hosts WHERE router = $1 AND app = $2 ORDER BY host")
            .bind(router)
            .bind(app)
            .fetch_all(&self.pool)
            .await?;
        let held: Vec<(String, String)> = rows.iter().map(|r| Ok((r.try_get("host")?, r.try_get("backends")?))).collect::<StoreResult<_>>()?;
        let mut wanted: Vec<&String> = hosts.iter().collect();
        wanted.sort();
        wanted.dedup();
        // Hosts that stay as they are, and those the router no longer points here.
        let kept = |host: &str| held.iter().any(|(h, b)| h == host && *b == encoded);
        let gone: Vec<&String> = held.iter().map(|(h, _)| h).filter(|h| !wanted.contains(h)).collect();
        if gone.is_empty() && wanted.iter().all(|h| kept(h)) {
            return Ok(());
        }
        let _stale = self.views.stale_hosts();
        let mut tx = self.pool.begin().await?;
        for host in gone {
            sqlx::query("DELETE FROM proxy_hosts WHERE host = $1 AND router = $2 AND app = $3")
                .bind(host)
                .bind(router)
                .bind(app)
                .execute(&mut *tx)
                .await?;
        }
        for host in wanted.into_iter().filter(|h| !kept(h)) {
            // Added, or its backends set; a host of another app or router
            // is left alone (nothing written) and refused.
            let done = sqlx::query(
                "INSERT INTO proxy_hosts (host, router, app, backends) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (host) DO UPDATE SET backends = excluded.backends \
                 WHERE proxy_hosts.router = excluded.router AND proxy_hosts.app = excluded.app",
            )
            .bind(host)
            .bind(router)
            .bind(app)
            .bind(&encoded)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 0 {
                let row = sqlx::query("SELECT router, app FROM proxy_hosts WHERE host = $1").bind(host).fetch_one(&mut *tx).await?;
                let (other_router, other_app): (String, String) = (row.try_get("router")?, row.try_get("app")?);
                return Err(StoreError::Conflict(format!("{host} is already served by app {other_app} on router {other_router}")));
            }
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn remove_proxy_app(&self, router: &str, app: &str) -> StoreResult<()> {
        let _stale = self.views.stale_hosts();
        sqlx::query("DELETE FROM proxy_hosts WHERE router = $1 AND app = $2").bind(router).bind(app).execute(&self.pool).await?;
        Ok(())
    }

    /// The routers holding proxy entries for `app`.
    pub async fn proxy_routers_of(&self, app: &str) -> StoreResult<Vec<String>> {
        let rows = sqlx::query("SELECT DISTINCT router FROM proxy_hosts WHERE app = $1 ORDER BY router").bind(app).fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok(r.try_get("router")?)).collect()
    }

    /// The hosts `router` points at `app`, in order.
    pub async fn proxy_hosts_of(&self, router: &str, app: &str) -> StoreResult<Vec<String>> {
        let rows = sqlx::query("SELECT host FROM proxy_hosts WHERE router = $1 AND app = $2 ORDER BY host")
            .bind(router)
            .bind(app)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok(r.try_get("host")?)).collect()
    }

    /// What `host` points at; cached with the app views.
    pub async fn proxy_host(&self, host: &str) -> StoreResult<Option<Arc<ProxyEntry>>> {
        if let Some(entry) = self.views.host(host) {
            return Ok(entry);
        }
        let read_at = self.views.generation();
        let row = sqlx::query("SELECT app, backends FROM proxy_hosts WHERE host = $1").bind(host).fetch_optional(&self.pool).await?;
        let entry = match row {
            None => None,
            Some(row) => {
                let backends: String = row.try_get("backends")?;
                Some(Arc::new(ProxyEntry {
                    app: row.try_get("app")?,
                    backends: serde_json::from_str(&backends).unwrap_or_default(),
                }))
            }
        };
        self.views.insert_host(read_at, host, entry.clone());
        Ok(entry)
    }
}
