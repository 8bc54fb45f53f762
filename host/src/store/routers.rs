//! Dynamic routers, the routers of each app and apps' TLS certificates.

use super::{Store, StoreError, StoreResult, conflict_or, json_list, parse_list};
use sqlx::Row;
use sqlx::any::AnyRow;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A router added through `/1.8/routers`.
#[derive(Debug, Clone, PartialEq)]
pub struct RouterRecord {
    pub name: String,
    pub kind: String,
    pub config: serde_json::Map<String, serde_json::Value>,
    pub readiness_gates: Vec<String>,
}

/// A router serving an app, with the app's options for it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AppRouter {
    pub router: String,
    pub opts: BTreeMap<String, String>,
}

/// A TLS certificate of an app for one of its addresses or cnames (PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateRecord {
    pub name: String,
    pub certificate: String,
    pub key: String,
}

fn router(row: &AnyRow) -> StoreResult<RouterRecord> {
    let config: String = row.try_get("config")?;
    let gates: String = row.try_get("readiness_gates")?;
    Ok(RouterRecord {
        name: row.try_get("name")?,
        kind: row.try_get("type")?,
        config: serde_json::from_str(&config).unwrap_or_default(),
        readiness_gates: parse_list(&gates),
    })
}

fn app_router(row: &AnyRow) -> StoreResult<(String, AppRouter)> {
    let opts: String = row.try_get("opts")?;
    Ok((row.try_get("app")?, AppRouter { router: row.try_get("router")?, opts: serde_json::from_str(&opts).unwrap_or_default() }))
}

/// A certificate row, its private key opened (`sealed`).
fn certificate(sealer: &super::sealed::Sealer, row: &AnyRow) -> StoreResult<(String, CertificateRecord)> {
    let (app, name): (String, String) = (row.try_get("app")?, row.try_get("name")?);
    let key = sealer.open(&super::sealed::certificate_place(&app, &name), &row.try_get::<String, _>("key")?)?;
    Ok((app, CertificateRecord { name, certificate: row.try_get("certificate")?, key }))
}

fn opts_json(opts: &BTreeMap<String, String>) -> String {
    serde_json::to_string(opts).expect("strings serialise")
}

/// Inserts `routers` as the routers of a new app, in order.
pub(super) async fn insert_app_routers(tx: &mut sqlx::Transaction<'_, sqlx::Any>, app: &str, routers: &[AppRouter]) -> StoreResult<()> {
    for (position, r) in routers.iter().enumerate() {
        sqlx::query("INSERT INTO app_routers (app, router, opts, position) VALUES ($1, $2, $3, $4)")
            .bind(app)
            .bind(&r.router)
            .bind(opts_json(&r.opts))
            .bind(position as i64)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

impl Store {
    /// Every dynamic router, by name; cached with the app views.
    pub async fn dynamic_routers(&self) -> StoreResult<Arc<Vec<RouterRecord>>> {
        if let Some(routers) = self.views.routers() {
            return Ok(routers);
        }
        let read_at = self.views.generation();
        let rows = sqlx::query("SELECT name, type, config, readiness_gates FROM routers ORDER BY name").fetch_all(&self.pool).await?;
        let routers = Arc::new(rows.iter().map(router).collect::<StoreResult<Vec<_>>>()?);
        self.views.install_routers(read_at, routers.clone());
        Ok(routers)
    }

    pub async fn add_router(&self, r: &RouterRecord) -> StoreResult<()> {
        let _stale = self.views.stale_all();
        sqlx::query("INSERT INTO routers (name, type, config, readiness_gates) VALUES ($1, $2, $3, $4)")
            .bind(&r.name)
            .bind(&r.kind)
            .bind(serde_json::Value::Object(r.config.clone()).to_string())
            .bind(json_list(&r.readiness_gates))
            .execute(&self.pool)
            .await
            .map_err(|e| conflict_or(e, "dynamic router already exists"))?;
        Ok(())
    }

    pub async fn update_router(&self, r: &RouterRecord) -> StoreResult<()> {
        let _stale = self.views.stale_all();
        let done = sqlx::query("UPDATE routers SET type = $2, config = $3, readiness_gates = $4 WHERE name = $1")
            .bind(&r.name)
            .bind(&r.kind)
            .bind(serde_json::Value::Object(r.config.clone()).to_string())
            .bind(json_list(&r.readiness_gates))
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("dynamic router not found".into()));
        }
        Ok(())
    }

    /// Removes a dynamic router unless an app uses it (those apps are named).
    pub async fn delete_router(&self, name: &str) -> StoreResult<()> {
        let _stale = self.views.stale_all();
        let mut tx = self.pool.begin().await?;
        let exists = sqlx::query("SELECT name FROM routers WHERE name = $1").bind(name).fetch_optional(&mut *tx).await?;
        if exists.is_none() {
            return Err(StoreError::NotFound("dynamic router not found".into()));
        }
        let users = sqlx::query("SELECT app FROM app_routers WHERE router = $1 ORDER BY app").bind(name).fetch_all(&mut *tx).await?;
        if !users.is_empty() {
            let apps = users.iter().map(|r| r.try_get::<String, _>("app")).collect::<Result<Vec<_>, _>>()?;
            return Err(StoreError::Conflict(format!("router {name:?} is used by the apps {}: remove it from them first", apps.join(", "))));
        }
        sqlx::query("DELETE FROM routers WHERE name = $1").bind(name).execute(&mut *tx).await?;
        super::roles::forget_bindings_on(&mut tx, "router", name).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The apps linked to router `name`, by name.
    pub async fn apps_of_router(&self, name: &str) -> StoreResult<Vec<String>> {
        let rows = sqlx::query("SELECT app FROM app_routers WHERE router = $1 ORDER BY app").bind(name).fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok(r.try_get("app")?)).collect()
    }

    /// The routers of `app`, main router first.
    pub(super) async fn app_routers(&self, app: &str) -> StoreResult<Vec<AppRouter>> {
        let rows = sqlx::query("SELECT app, router, opts FROM app_routers WHERE app = $1 ORDER BY position")
            .bind(app)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| app_router(r).map(|(_, r)| r)).collect()
    }

    pub(super) async fn all_app_routers(&self) -> StoreResult<Vec<(String, AppRouter)>> {
        let rows = sqlx::query("SELECT app, router, opts FROM app_routers ORDER BY app, position").fetch_all(&self.pool).await?;
        rows.iter().map(app_router).collect()
    }

    /// Adds a router to `app`, after its other routers.
    pub async fn add_app_router(&self, app: &str, r: &AppRouter) -> StoreResult<()> {
        let _stale = self.views.stale(app);
        sqlx::query(
            "INSERT INTO app_routers (app, router, opts, position) \
             SELECT $1, $2, $3, COALESCE(MAX(position), -1) + 1 FROM app_routers WHERE app = $1",
        )
        .bind(app)
        .bind(&r.router)
        .bind(opts_json(&r.opts))
        .execute(&self.pool)
        .await
        .map_err(|e| conflict_or(e, "router already linked to this app"))?;
        Ok(())
    }

    /// Replaces the options of one of `app`'s routers.
    pub async fn update_app_router(&self, app: &str, r: &AppRouter) -> StoreResult<()> {
        let _stale = self.views.stale(app);
        let done = sqlx::query("UPDATE app_routers SET opts = $3 WHERE app = $1 AND router = $2")
            .bind(app)
            .bind(&r.router)
            .bind(opts_json(&r.opts))
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("router {:?} not found in app", r.router)));
        }
        Ok(())
    }

    pub async fn remove_app_router(&self, app: &str, router: &str) -> StoreResult<()> {
        let _stale = self.views.stale(app);
        let done = sqlx::query("DELETE FROM app_routers WHERE app = $1 AND router = $2").bind(app).bind(router).execute(&self.pool).await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("router {router:?} not found in app")));
        }
        Ok(())
    }

    pub(super) async fn certificates(&self, app: &str) -> StoreResult<Vec<CertificateRecord>> {
        let rows = sqlx::query("SELECT app, name, certificate, key FROM app_certificates WHERE app = $1 ORDER BY name")
            .bind(app)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| certificate(&self.sealer, r).map(|(_, c)| c)).collect()
    }

    pub(super) async fn all_certificates(&self) -> StoreResult<Vec<(String, CertificateRecord)>> {
        let rows = sqlx::query("SELECT app, name, certificate, key FROM app_certificates ORDER BY app, name").fetch_all(&self.pool).await?;
        rows.iter().map(|r| certificate(&self.sealer, r)).collect()
    }

    /// Sets (or replaces) `app`'s certificate for `c.name`.
    pub async fn set_certificate(&self, app: &str, c: &CertificateRecord) -> StoreResult<()> {
        let _stale = self.views.stale(app);
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM app_certificates WHERE app = $1 AND name = $2").bind(app).bind(&c.name).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO app_certificates (app, name, certificate, key) VALUES ($1, $2, $3, $4)")
            .bind(app)
            .bind(&c.name)
            .bind(&c.certificate)
            .bind(self.sealer.seal(&super::sealed::certificate_place(app, &c.name), &c.key))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn unset_certificate(&self, app: &str, name: &str) -> StoreResult<()> {
        let _stale = self.views.stale(app);
        let done = sqlx::query("DELETE FROM app_certificates WHERE app = $1 AND name = $2").bind(app).bind(name).execute(&self.pool).await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("no certificate set for {name}")));
        }
        Ok(())
    }
}

impl Store {
    /// Drops what this process has cached of `app` (routes rebuild).
    pub fn forget_view(&self, app: &str) {
        self.views.invalidate(app);
    }
}
