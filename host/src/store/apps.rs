//! Apps, app teams, app env and app tokens.

use super::sealed::Sealer;
use super::views::Slot;
use super::{AppRouter, CertificateRecord, PlanRecord, RouteRecord, Store, StoreError, StoreResult, VersionRecord, conflict_or, json_list, now_millis, parse_list};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataItem {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    pub labels: Vec<MetadataItem>,
    pub annotations: Vec<MetadataItem>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppRecord {
    pub name: String,
    pub platform: String,
    pub platform_version: String,
    pub team_owner: String,
    pub owner: String,
    pub pool: String,
    pub plan: String,
    pub override_memory: i64,
    pub override_cpumilli: i64,
    pub description: String,
    pub tags: Vec<String>,
    pub metadata: Metadata,
    pub cnames: Vec<String>,
    pub quota_limit: i64,
    pub deploys: i64,
    pub created_at: i64,
    /// Teams with access, the owner's team included.
    pub teams: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvVar {
    pub name: String,
    pub value: String,
    pub public: bool,
    /// When set, the variable shows the value of the variable it names.
    pub alias: String,
    pub managed_by: String,
}

const COLUMNS: &str = "name, platform, platform_version, team_owner, owner, pool, plan, override_memory, \
     override_cpumilli, description, tags, metadata, quota_limit, deploys, created_at";

fn app(row: &AnyRow) -> StoreResult<AppRecord> {
    let tags: String = row.try_get("tags")?;
    let metadata: String = row.try_get("metadata")?;
    Ok(AppRecord {
        name: row.try_get("name")?,
        platform: row.try_get("platform")?,
        platform_version: row.try_get("platform_version")?,
        team_owner: row.try_get("team_owner")?,
        owner: row.try_get("owner")?,
        pool: row.try_get("pool")?,
        plan: row.try_get("plan")?,
        override_memory: row.try_get("override_memory")?,
        override_cpumilli: row.try_get("override_cpumilli")?,
        description: row.try_get("description")?,
        tags: parse_list(&tags),
        metadata: serde_json::from_str(&metadata).unwrap_or_default(),
        cnames: Vec::new(),
        quota_limit: row.try_get("quota_limit")?,
        deploys: row.try_get("deploys")?,
        created_at: row.try_get("created_at")?,
        teams: Vec::new(),
    })
}

/// The app columns plus its teams and cnames, each aggregated into one
/// comma-separated column (names and hostnames cannot hold commas).
/// `string_agg(... ORDER BY ...)` is valid on PostgreSQL and SQLite ≥ 3.44.
fn full_columns() -> String {
    let columns = COLUMNS.split(", ").map(|c| format!("a.{c}")).collect::<Vec<_>>().join(", ");
    format!(
        "{columns}, (SELECT string_agg(t.team, ',' ORDER BY t.team) FROM app_teams t WHERE t.app = a.name) AS team_list, \
         (SELECT string_agg(c.cname, ',' ORDER BY c.cname) FROM app_cnames c WHERE c.app = a.name) AS cname_list"
    )
}

fn full_app(row: &AnyRow) -> StoreResult<AppRecord> {
    let split = |column: &str| -> StoreResult<Vec<String>> {
        let joined: Option<String> = row.try_get(column)?;
        Ok(joined.map(|j| j.split(',').map(str::to_string).collect()).unwrap_or_default())
    };
    let mut a = app(row)?;
    a.teams = split("team_list")?;
    a.cnames = split("cname_list")?;
    Ok(a)
}

/// An env row; private values are opened (`sealed`).
fn env_var(sealer: &Sealer, r: &AnyRow) -> StoreResult<(String, EnvVar)> {
    let (app, name): (String, String) = (r.try_get("app")?, r.try_get("name")?);
    let public = r.try_get::<i64, _>("public")? != 0;
    let stored: String = r.try_get("value")?;
    let value = if public { stored } else { sealer.open(&super::sealed::env_place(&app, &name), &stored)? };
    Ok((app, EnvVar { name, value, public, alias: r.try_get("alias")?, managed_by: r.try_get("managed_by")? }))
}

/// Rows of many apps, grouped by app (each group keeps the rows' order).
fn by_app<T>(rows: impl IntoIterator<Item = (String, T)>) -> HashMap<String, Vec<T>> {
    let mut out: HashMap<String, Vec<T>> = HashMap::new();
    for (app, row) in rows {
        out.entry(app).or_default().push(row);
    }
    out
}

/// Stale apps the list reads one by one; more, and it reads the whole table.
const MAX_REREAD: usize = 64;

/// The app views query: apps with plan, pool provisioner and lock holder.
fn view_sql(tail: &str) -> String {
    format!(
        "SELECT {}, p.name AS plan_name, p.memory AS plan_memory, p.cpumilli AS plan_cpumilli, \
         p.cpushare AS plan_cpushare, p.is_default AS plan_default, pl.provisioner AS pool_provisioner, \
         l.event_id AS lock_event \
         FROM apps a LEFT JOIN plans p ON p.name = a.plan LEFT JOIN pools pl ON pl.name = a.pool \
         LEFT JOIN event_locks l ON l.target_type = 'app' AND l.target_value = a.name {tail}",
        full_columns()
    )
}

fn app_view(row: &AnyRow) -> StoreResult<AppView> {
    let plan = match row.try_get::<Option<String>, _>("plan_name")? {
        None => None,
        Some(name) => Some(PlanRecord {
            name,
            memory: row.try_get("plan_memory")?,
            cpumilli: row.try_get("plan_cpumilli")?,
            cpushare: row.try_get("plan_cpushare")?,
            default: row.try_get::<i64, _>("plan_default")? != 0,
        }),
    };
    Ok(AppView {
        app: full_app(row)?,
        plan,
        provisioner: row.try_get("pool_provisioner")?,
        lock_event: row.try_get("lock_event")?,
        versions: Vec::new(),
        env: Vec::new(),
        routers: Vec::new(),
        certificates: Vec::new(),
        routes: Vec::new(),
        binds: Vec::new(),
        volume_binds: Vec::new(),
        from_binds: FromBinds::default(),
    })
}

/// An app with what its info page shows beside it.
#[derive(Debug, Clone)]
pub struct AppView {
    pub app: AppRecord,
    pub plan: Option<PlanRecord>,
    pub provisioner: Option<String>,
    /// The running event holding the app's lock.
    pub lock_event: Option<String>,
    /// Deployed versions, oldest first.
    pub versions: Vec<VersionRecord>,
    pub env: Vec<EnvVar>,
    /// Routers serving the app, main router first.
    pub routers: Vec<AppRouter>,
    pub certificates: Vec<CertificateRecord>,
    /// What the router serves, as the provisioner set it.
    pub routes: Vec<RouteRecord>,
    /// The service instances bound to the app, with the variables each gave.
    pub binds: Vec<super::BindRecord>,
    /// Where the app mounts volumes.
    pub volume_binds: Vec<super::VolumeBindRecord>,
    /// What `binds` give, worked out once: a view is not changed once made,
    /// and requests read these on the data plane's path.
    pub from_binds: FromBinds,
}

/// What a view's binds give, each worked out at its first use.
#[derive(Debug, Clone, Default)]
pub struct FromBinds {
    env: std::sync::OnceLock<Vec<(String, String)>>,
    origins: std::sync::OnceLock<Vec<String>>,
}

impl AppView {
    /// The variables the app's binds give it, in the order they were
    /// bound, then `TSURU_SERVICES` (tsuru's JSON of every bind:
    /// `{"<service>":[{"instance_name":"db1","envs":{"K":"V"}}]}`; `{}`
    /// when the app is bound to nothing).
    pub fn service_env(&self) -> &[(String, String)] {
        self.from_binds.env.get_or_init(|| {
            let mut out: Vec<(String, String)> = self.binds.iter().flat_map(|b| b.env.iter().cloned()).collect();
            let mut services: std::collections::BTreeMap<&str, Vec<serde_json::Value>> = Default::default();
            for b in &self.binds {
                let envs: serde_json::Map<String, serde_json::Value> =
                    b.env.iter().map(|(k, v)| (k.clone(), serde_json::Value::from(v.as_str()))).collect();
                services.entry(&b.service).or_default().push(serde_json::json!({"instance_name": b.instance, "envs": envs}));
            }
            out.push(("TSURU_SERVICES".into(), serde_json::to_string(&services).expect("serialisable")));
            out
        })
    }

    /// Every variable the app's units get: its own (aliases resolved, and
    /// whether each is public), then its binds' (private). An app bound to
    /// nothing runs without TSURU_SERVICES, as it did before services
    /// existed (its units are not replaced for it).
    pub fn runtime_env(&self) -> Vec<(String, String, bool)> {
        let own = self.env.iter().map(|e| (e.name.clone(), self.env_value(e), e.public));
        let bound = self.service_env().iter().filter(|_| !self.binds.is_empty()).map(|(k, v)| (k.clone(), v.clone(), false));
        own.chain(bound).collect()
    }

    /// The origins (`scheme://host:port`) of the http(s) URLs among the
    /// variables of the app's binds: a WASM app may reach its bound
    /// services' HTTP endpoints where its pool's outbound policy allows.
    pub fn bound_origins(&self) -> &[String] {
        self.from_binds.origins.get_or_init(|| {
            let mut out: Vec<String> = Vec::new();
            for (_, value) in self.binds.iter().flat_map(|b| b.env.iter()) {
                let Ok(url) = url::Url::parse(value) else { continue };
                if !matches!(url.scheme(), "http" | "https") {
                    continue;
                }
                let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else { continue };
                let origin = format!("{}://{host}:{port}", url.scheme());
                if !out.contains(&origin) {
                    out.push(origin);
                }
            }
            out
        })
    }

    /// The value `var` shows: its own, or that of the variable its alias
    /// names (empty when that variable is gone).
    pub fn env_value(&self, var: &EnvVar) -> String {
        if var.alias.is_empty() {
            return var.value.clone();
        }
        self.env.iter().find(|o| o.name == var.alias).map(|o| o.value.clone()).unwrap_or_default()
    }

    /// The app's memory in bytes: its override, else its plan's (0: none).
    pub fn memory(&self) -> i64 {
        match self.app.override_memory {
            m if m > 0 => m,
            _ => self.plan.as_ref().map(|p| p.memory).unwrap_or(0),
        }
    }

    /// The app's CPU in millicores: its override, else its plan's (0: none).
    pub fn cpu_milli(&self) -> i64 {
        match self.app.override_cpumilli {
            c if c > 0 => c,
            _ => self.plan.as_ref().map(|p| p.cpumilli).unwrap_or(0),
        }
    }
}

fn app_not_found(name: &str) -> StoreError {
    StoreError::NotFound(format!("App {name} not found."))
}

impl Store {
    /// Creates an app with its owner team, env and token hash, atomically.
    pub async fn create_app(&self, a: &AppRecord, env: &[EnvVar], routers: &[AppRouter], token_hash: &str) -> StoreResult<()> {
        let _stale = self.views.stale(&a.name);
        let mut tx = self.pool.begin().await?;
        sqlx::query(&format!(
            "INSERT INTO apps ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
        ))
        .bind(&a.name)
        .bind(&a.platform)
        .bind(&a.platform_version)
        .bind(&a.team_owner)
        .bind(&a.owner)
        .bind(&a.pool)
        .bind(&a.plan)
        .bind(a.override_memory)
        .bind(a.override_cpumilli)
        .bind(&a.description)
        .bind(json_list(&a.tags))
        .bind(serde_json::to_string(&a.metadata).expect("serialisable"))
        .bind(a.quota_limit)
        .bind(a.deploys)
        .bind(a.created_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| conflict_or(e, &format!("tsuru failed to create the app \"{}\": there is already an app with this name", a.name)))?;
        for team in &a.teams {
            sqlx::query("INSERT INTO app_teams (app, team) VALUES ($1, $2)").bind(&a.name).bind(team).execute(&mut *tx).await?;
        }
        for e in env {
            insert_env(&mut tx, &self.sealer, &a.name, e).await?;
        }
        super::routers::insert_app_routers(&mut tx, &a.name, routers).await?;
        sqlx::query("INSERT INTO app_tokens (token_hash, app, created_at) VALUES ($1, $2, $3)")
            .bind(token_hash)
            .bind(&a.name)
            .bind(now_millis())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// One app with its teams and cnames, in one query.
    pub async fn app(&self, name: &str) -> StoreResult<Option<AppRecord>> {
        let row = sqlx::query(&format!("SELECT {} FROM apps a WHERE a.name = $1", full_columns()))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(full_app).transpose()
    }

    /// One app as its info page shows it: the app, its plan, its pool's
    /// provisioner and the id of the event locking it, in one query.
    /// Served from the view cache when it holds the app.
    pub async fn app_view(&self, name: &str) -> StoreResult<Option<Arc<AppView>>> {
        if let Some(view) = self.views.get(name) {
            return Ok(Some(view));
        }
        let read_at = self.views.generation();
        let row = sqlx::query(&view_sql("WHERE a.name = $1")).bind(name).fetch_optional(&self.pool).await?;
        let view = match row.as_ref().map(app_view).transpose()? {
            None => None,
            Some(mut view) => {
                view.versions = self.versions(name).await?;
                view.env = self.app_env(name).await?;
                view.routers = self.app_routers(name).await?;
                view.certificates = self.certificates(name).await?;
                view.routes = self.routes(name).await?;
                view.binds = self.binds_of_app(name).await?;
                view.volume_binds = self.volume_binds_of_app(name).await?;
                Some(Arc::new(view))
            }
        };
        self.views.insert(read_at, name, view.clone());
        Ok(view)
    }

    /// Every app as the list shows it, by name. Served from the view cache
    /// once it knows every app, reading again only the apps changed since.
    pub async fn app_views(&self) -> StoreResult<Vec<Arc<AppView>>> {
        if let Some(all) = self.views.all()
            && all.iter().filter(|(_, slot)| matches!(slot, Slot::Stale)).count() <= MAX_REREAD
        {
            let mut out = Vec::with_capacity(all.len());
            for (name, slot) in all {
                match slot {
                    Slot::Fresh(view) => out.push(view),
                    Slot::Stale => out.extend(self.app_view(&name).await?),
                }
            }
            return Ok(out);
        }
        let read_at = self.views.generation();
        let rows = sqlx::query(&view_sql("ORDER BY a.name")).fetch_all(&self.pool).await?;
        let mut versions = by_app(self.all_versions().await?.into_iter().map(|v| (v.app.clone(), v)));
        let mut env = by_app(self.all_env().await?);
        let mut routers = by_app(self.all_app_routers().await?);
        let mut certificates = by_app(self.all_certificates().await?);
        let mut routes = by_app(self.all_routes().await?);
        let mut binds = by_app(self.all_bind_records().await?.into_iter().map(|b| (b.app.clone(), b)));
        let mut volume_binds = by_app(self.all_volume_binds().await?.into_iter().map(|b| (b.app.clone(), b)));
        let views = rows
            .iter()
            .map(|r| {
                let mut view = app_view(r)?;
                view.versions = versions.remove(&view.app.name).unwrap_or_default();
                view.env = env.remove(&view.app.name).unwrap_or_default();
                view.routers = routers.remove(&view.app.name).unwrap_or_default();
                view.certificates = certificates.remove(&view.app.name).unwrap_or_default();
                view.routes = routes.remove(&view.app.name).unwrap_or_default();
                view.binds = binds.remove(&view.app.name).unwrap_or_default();
                view.volume_binds = volume_binds.remove(&view.app.name).unwrap_or_default();
                Ok(Arc::new(view))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        self.views.install(read_at, &views);
        Ok(views)
    }

    /// Names of apps matching a simple column filter, for references and quotas.
    pub async fn app_names_where(&self, column: AppColumn, value: &str) -> StoreResult<Vec<String>> {
        let sql = match column {
            AppColumn::TeamOwner => "SELECT name FROM apps WHERE team_owner = $1 ORDER BY name",
            AppColumn::Owner => "SELECT name FROM apps WHERE owner = $1 ORDER BY name",
            AppColumn::Pool => "SELECT name FROM apps WHERE pool = $1 ORDER BY name",
            AppColumn::Plan => "SELECT name FROM apps WHERE plan = $1 ORDER BY name",
            AppColumn::Platform => "SELECT name FROM apps WHERE platform = $1 ORDER BY name",
            AppColumn::Team => "SELECT app AS name FROM app_teams WHERE team = $1 ORDER BY app",
        };
        let rows = sqlx::query(sql).bind(value).fetch_all(&self.pool).await?;
        rows.into_iter().map(|r| Ok(r.try_get("name")?)).collect()
    }

    pub async fn delete_app(&self, name: &str) -> StoreResult<()> {
        let _stale = self.views.stale(name);
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM app_tokens WHERE app = $1").bind(name).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM app_logs WHERE app = $1").bind(name).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM app_cnames WHERE app = $1").bind(name).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM app_routers WHERE app = $1").bind(name).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM app_routes WHERE app = $1").bind(name).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM proxy_hosts WHERE app = $1").bind(name).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM app_certificates WHERE app = $1").bind(name).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM app_env WHERE app = $1").bind(name).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM app_teams WHERE app = $1").bind(name).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM service_binds WHERE app = $1").bind(name).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM service_unit_binds WHERE app = $1").bind(name).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM volume_binds WHERE app = $1").bind(name).execute(&mut *tx).await?;
        super::roles::forget_bindings_on(&mut tx, "app", name).await?;
        let done = sqlx::query("DELETE FROM apps WHERE name = $1").bind(name).execute(&mut *tx).await?;
        if done.rows_affected() == 0 {
            return Err(app_not_found(name));
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn grant_app_team(&self, app: &str, team: &str) -> StoreResult<()> {
        let _stale = self.views.stale(app);
        sqlx::query("INSERT INTO app_teams (app, team) VALUES ($1, $2)")
            .bind(app)
            .bind(team)
            .execute(&self.pool)
            .await
            .map_err(|e| conflict_or(e, "team already have access to this app"))?;
        Ok(())
    }

    pub async fn revoke_app_team(&self, app: &str, team: &str) -> StoreResult<()> {
        let _stale = self.views.stale(app);
        let done = sqlx::query("DELETE FROM app_teams WHERE app = $1 AND team = $2").bind(app).bind(team).execute(&self.pool).await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("team does not have access to this app".into()));
        }
        Ok(())
    }

    pub async fn set_app_quota(&self, app: &str, limit: i64) -> StoreResult<()> {
        let _stale = self.views.stale(app);
        let done = sqlx::query("UPDATE apps SET quota_limit = $1 WHERE name = $2").bind(limit).bind(app).execute(&self.pool).await?;
        if done.rows_affected() == 0 {
            return Err(app_not_found(app));
        }
        Ok(())
    }

    pub async fn app_env(&self, app: &str) -> StoreResult<Vec<EnvVar>> {
        let rows = sqlx::query("SELECT app, name, value, public, alias, managed_by FROM app_env WHERE app = $1 ORDER BY name")
            .bind(app)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| env_var(&self.sealer, r)).map(|r| r.map(|(_, v)| v)).collect()
    }

    /// Every app's env, by app then name (for the view cache).
    async fn all_env(&self) -> StoreResult<Vec<(String, EnvVar)>> {
        let rows = sqlx::query("SELECT app, name, value, public, alias, managed_by FROM app_env ORDER BY app, name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| env_var(&self.sealer, r)).collect()
    }

    /// Sets variables (replacing same-named ones) and, with `prune`, removes
    /// the variables managed by it that are not in `vars`. Returns the pruned names.
    pub async fn set_app_env(&self, app: &str, vars: &[EnvVar], prune: Option<&str>) -> StoreResult<Vec<String>> {
        let _stale = self.views.stale(app);
        let mut tx = self.pool.begin().await?;
        for v in vars {
            sqlx::query("DELETE FROM app_env WHERE app = $1 AND name = $2").bind(app).bind(&v.name).execute(&mut *tx).await?;
            insert_env(&mut tx, &self.sealer, app, v).await?;
        }
        let mut pruned = Vec::new();
        if let Some(manager) = prune {
            let rows = sqlx::query("SELECT name FROM app_env WHERE app = $1 AND managed_by = $2 ORDER BY name")
                .bind(app)
                .bind(manager)
                .fetch_all(&mut *tx)
                .await?;
            for row in rows {
                let name: String = row.try_get("name")?;
                if !vars.iter().any(|v| v.name == name) {
                    sqlx::query("DELETE FROM app_env WHERE app = $1 AND name = $2").bind(app).bind(&name).execute(&mut *tx).await?;
                    pruned.push(name);
                }
            }
        }
        tx.commit().await?;
        Ok(pruned)
    }

    /// Removes variables by name; returns how many existed.
    pub async fn unset_app_env(&self, app: &str, names: &[String]) -> StoreResult<u64> {
        let _stale = self.views.stale(app);
        let mut tx = self.pool.begin().await?;
        let mut removed = 0;
        for name in names {
            removed += sqlx::query("DELETE FROM app_env WHERE app = $1 AND name = $2")
                .bind(app)
                .bind(name)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        Ok(removed)
    }

    pub async fn app_by_token(&self, hash: &str) -> StoreResult<Option<String>> {
        let row = sqlx::query("SELECT app FROM app_tokens WHERE token_hash = $1").bind(hash).fetch_optional(&self.pool).await?;
        Ok(row.map(|r| r.try_get("app")).transpose()?)
    }

    /// `Some(disabled)` for a known platform.
    pub async fn platform_disabled(&self, name: &str) -> StoreResult<Option<bool>> {
        let row = sqlx::query("SELECT disabled FROM platforms WHERE name = $1").bind(name).fetch_optional(&self.pool).await?;
        Ok(row.map(|r| r.try_get::<i64, _>("disabled").map(|d| d != 0)).transpose()?)
    }
}

#[derive(Debug, Clone, Copy)]
pub enum AppColumn {
    TeamOwner,
    Owner,
    Pool,
    Plan,
    Platform,
    Team,
}

/// Writes an env row, a private value sealed (`sealed`).
async fn insert_env(tx: &mut sqlx::Transaction<'_, sqlx::Any>, sealer: &Sealer, app: &str, e: &EnvVar) -> StoreResult<()> {
    let value = if e.public { e.value.clone() } else { sealer.seal(&super::sealed::env_place(app, &e.name), &e.value) };
    sqlx::query("INSERT INTO app_env (app, name, value, public, alias, managed_by) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(app)
        .bind(&e.name)
        .bind(&value)
        .bind(i64::from(e.public))
        .bind(&e.alias)
        .bind(&e.managed_by)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

impl Store {
    /// Which app holds a CNAME.
    pub async fn cname_owner(&self, cname: &str) -> StoreResult<Option<String>> {
        let row = sqlx::query("SELECT app FROM app_cnames WHERE cname = $1").bind(cname).fetch_optional(&self.pool).await?;
        Ok(row.map(|r| r.try_get("app")).transpose()?)
    }

    /// Every app's cnames.
    pub async fn all_cnames(&self) -> StoreResult<Vec<String>> {
        let rows = sqlx::query("SELECT cname FROM app_cnames ORDER BY cname").fetch_all(&self.pool).await?;
        rows.into_iter().map(|r| Ok(r.try_get("cname")?)).collect()
    }

    /// Adds CNAMEs to an app, all or none.
    pub async fn add_cnames(&self, app: &str, cnames: &[String]) -> StoreResult<()> {
        let _stale = self.views.stale(app);
        let mut tx = self.pool.begin().await?;
        for c in cnames {
            sqlx::query("INSERT INTO app_cnames (cname, app) VALUES ($1, $2)")
                .bind(c)
                .bind(app)
                .execute(&mut *tx)
                .await
                .map_err(|e| conflict_or(e, &format!("cname {c} already exists")))?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn remove_cnames(&self, app: &str, cnames: &[String]) -> StoreResult<()> {
        let _stale = self.views.stale(app);
        let mut tx = self.pool.begin().await?;
        for c in cnames {
            let done = sqlx::query("DELETE FROM app_cnames WHERE cname = $1 AND app = $2").bind(c).bind(app).execute(&mut *tx).await?;
            if done.rows_affected() == 0 {
                return Err(StoreError::NotFound(format!("cname {c} is not an address of app {app}")));
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Exchanges the CNAMEs of two apps atomically.
    pub async fn swap_cnames(&self, a: &str, b: &str) -> StoreResult<()> {
        let (_stale_a, _stale_b) = (self.views.stale(a), self.views.stale(b));
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE app_cnames SET app = CASE WHEN app = $1 THEN $2 ELSE $1 END WHERE app = $1 OR app = $2")
            .bind(a)
            .bind(b)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}
