//! What each router was told of each app (`router_apps`): the routers that
//! may serve an app (so an unlinked router, or a removed app's, is told to
//! forget it even when torii holds nothing of it), and the last failure of
//! each, which app info shows and the resync loop retries.

use super::{Store, StoreResult, now_millis};
use sqlx::Row;

/// One router's state for one app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterApp {
    pub router: String,
    /// The router type (plugin) it was told through.
    pub kind: String,
    pub app: String,
    /// Why the last ensure or remove failed; empty when it did as told.
    pub error: String,
    /// The names the router said it serves for the app (its last ensure).
    pub names: Vec<String>,
}

fn row(r: &sqlx::any::AnyRow) -> StoreResult<RouterApp> {
    Ok(RouterApp {
        router: r.try_get("router")?,
        kind: r.try_get("kind")?,
        app: r.try_get("app")?,
        error: r.try_get("error")?,
        names: super::parse_list(&r.try_get::<String, _>("names")?),
    })
}

impl Store {
    /// The routers told of `app`, by router name.
    pub async fn router_apps_of(&self, app: &str) -> StoreResult<Vec<RouterApp>> {
        let rows = sqlx::query("SELECT router, kind, app, error, names FROM router_apps WHERE app = $1 ORDER BY router").bind(app).fetch_all(&self.pool).await?;
        rows.iter().map(row).collect()
    }

    /// The apps some router failed for, by name.
    pub async fn apps_with_router_errors(&self) -> StoreResult<Vec<String>> {
        let rows = sqlx::query("SELECT DISTINCT app FROM router_apps WHERE error <> '' ORDER BY app").fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok(r.try_get("app")?)).collect()
    }

    /// The apps linked to a dynamic router whose type is not `kind`, by name
    /// (routers torii does not hold the state of, synced again each round).
    pub async fn apps_on_routers_not_of(&self, kind: &str) -> StoreResult<Vec<String>> {
        let rows = sqlx::query(
            "SELECT DISTINCT ar.app FROM app_routers ar JOIN routers r ON r.name = ar.router WHERE r.type <> $1 ORDER BY ar.app",
        )
        .bind(kind)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get("app")?)).collect()
    }

    /// Records what `router` did of `app` (`error` empty: as told).
    pub async fn set_router_app(&self, r: &RouterApp) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO router_apps (router, kind, app, error, names, updated_at) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (router, app) DO UPDATE SET kind = excluded.kind, error = excluded.error, names = excluded.names, \
             updated_at = excluded.updated_at",
        )
        .bind(&r.router)
        .bind(&r.kind)
        .bind(&r.app)
        .bind(&r.error)
        .bind(super::json_list(&r.names))
        .bind(now_millis())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// `router` forgot `app`.
    pub async fn forget_router_app(&self, router: &str, app: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM router_apps WHERE router = $1 AND app = $2").bind(router).bind(app).execute(&self.pool).await?;
        Ok(())
    }
}
