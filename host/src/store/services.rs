//! Services, service brokers, service instances and binds (API-NOTES §2.15).
//! A service's password, a broker's config and a bind's variables are
//! stored sealed.

use std::collections::BTreeMap;

use super::sealed::{bind_place, broker_place, service_place};
use super::{Store, StoreError, StoreResult, conflict_or, json_list, now_millis, parse_list};
use sqlx::Row;

/// A service registered with `POST /services` (spoken to with tsuru's service API).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRecord {
    pub name: String,
    pub username: String,
    pub password: String,
    /// Cluster (or `production`) → URL.
    pub endpoints: BTreeMap<String, String>,
    pub owner_teams: Vec<String>,
    /// Teams granted access; the service is restricted to them when `restricted`.
    pub teams: Vec<String>,
    pub restricted: bool,
    pub doc: String,
    pub multi_cluster: bool,
    pub disable_bind_unit: bool,
}

/// A broker of `/1.7/brokers`: its `Config` kept as given.
#[derive(Debug, Clone, PartialEq)]
pub struct BrokerRecord {
    pub name: String,
    pub url: String,
    pub config: serde_json::Value,
}

/// Where a service instance stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceState {
    Ready,
    /// The provider creates it (an operation runs).
    Creating,
    Updating,
    Removing,
    /// The provider's operation failed (`message` says why).
    Failed,
}

impl InstanceState {
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Ready => "ready",
            InstanceState::Creating => "creating",
            InstanceState::Updating => "updating",
            InstanceState::Removing => "removing",
            InstanceState::Failed => "failed",
        }
    }

    fn parse(s: &str) -> InstanceState {
        match s {
            "creating" => InstanceState::Creating,
            "updating" => InstanceState::Updating,
            "removing" => InstanceState::Removing,
            "failed" => InstanceState::Failed,
            _ => InstanceState::Ready,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct InstanceRecord {
    pub service: String,
    pub name: String,
    pub plan: String,
    pub team_owner: String,
    pub teams: Vec<String>,
    pub description: String,
    pub tags: Vec<String>,
    pub parameters: serde_json::Map<String, serde_json::Value>,
    pub pool: String,
    /// What the broker keeps (JSON object text).
    pub data: String,
    pub state: InstanceState,
    pub operation: String,
    /// When `operation` started (Unix ms).
    pub operation_since: i64,
    pub message: String,
    /// While an update runs at the provider: the fields it replaced, as
    /// JSON, put back if it fails (empty otherwise).
    pub previous: String,
    pub created_at: i64,
}

impl InstanceRecord {
    /// The fields an update replaces, as JSON (kept while it runs).
    pub fn updatable(&self) -> String {
        serde_json::json!({
            "plan": self.plan, "team_owner": self.team_owner, "teams": self.teams, "description": self.description,
            "tags": self.tags, "parameters": self.parameters, "data": self.data,
        })
        .to_string()
    }

    /// Puts back the fields `updatable` kept; whether there were any.
    pub fn restore(&mut self, kept: &str) -> bool {
        #[derive(serde::Deserialize)]
        struct Kept {
            plan: String,
            team_owner: String,
            teams: Vec<String>,
            description: String,
            tags: Vec<String>,
            parameters: serde_json::Map<String, serde_json::Value>,
            data: String,
        }
        let Ok(k) = serde_json::from_str::<Kept>(kept) else { return false };
        (self.plan, self.team_owner, self.teams, self.description, self.tags, self.parameters, self.data) =
            (k.plan, k.team_owner, k.teams, k.description, k.tags, k.parameters, k.data);
        true
    }
}

/// An app bound to an instance, with the variables it got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindRecord {
    pub service: String,
    pub instance: String,
    pub app: String,
    pub env: Vec<(String, String)>,
    /// What the broker keeps about the bind (JSON object text).
    pub data: String,
}

/// A unit of an app bound to an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitBind {
    pub service: String,
    pub instance: String,
    pub app: String,
    pub unit: String,
    pub host: String,
}

const SERVICE_COLUMNS: &str = "name, username, password, endpoints, owner_teams, teams, restricted, doc, multi_cluster, disable_bind_unit";
const INSTANCE_COLUMNS: &str =
    "service, name, plan, team_owner, teams, description, tags, parameters, pool, data, state, operation, operation_since, message, previous, created_at";

type Query<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// `$1`..`$15`: an instance's fields in `INSTANCE_COLUMNS` order.
fn instance_fields<'q>(q: Query<'q>, i: &'q InstanceRecord) -> Query<'q> {
    q.bind(&i.service)
        .bind(&i.name)
        .bind(&i.plan)
        .bind(&i.team_owner)
        .bind(json_list(&i.teams))
        .bind(&i.description)
        .bind(json_list(&i.tags))
        .bind(serde_json::Value::Object(i.parameters.clone()).to_string())
        .bind(&i.pool)
        .bind(&i.data)
        .bind(i.state.as_str())
        .bind(&i.operation)
        .bind(i.operation_since)
        .bind(&i.message)
        .bind(&i.previous)
}

fn map_of(text: &str) -> serde_json::Map<String, serde_json::Value> {
    match serde_json::from_str(text) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    }
}

impl Store {
    fn service_row(&self, r: &sqlx::any::AnyRow) -> StoreResult<ServiceRecord> {
        let name: String = r.try_get("name")?;
        let password = self.sealer.open(&service_place(&name), &r.try_get::<String, _>("password")?)?;
        Ok(ServiceRecord {
            username: r.try_get("username")?,
            password,
            endpoints: serde_json::from_str(&r.try_get::<String, _>("endpoints")?).unwrap_or_default(),
            owner_teams: parse_list(&r.try_get::<String, _>("owner_teams")?),
            teams: parse_list(&r.try_get::<String, _>("teams")?),
            restricted: r.try_get::<i64, _>("restricted")? != 0,
            doc: r.try_get("doc")?,
            multi_cluster: r.try_get::<i64, _>("multi_cluster")? != 0,
            disable_bind_unit: r.try_get::<i64, _>("disable_bind_unit")? != 0,
            name,
        })
    }

    /// `$1`..`$10`: a service's fields in `SERVICE_COLUMNS` order, its password sealed.
    fn service_fields<'q>(&self, q: Query<'q>, s: &'q ServiceRecord) -> Query<'q> {
        q.bind(&s.name)
            .bind(&s.username)
            .bind(self.sealer.seal(&service_place(&s.name), &s.password))
            .bind(serde_json::to_string(&s.endpoints).expect("serialisable"))
            .bind(json_list(&s.owner_teams))
            .bind(json_list(&s.teams))
            .bind(i64::from(s.restricted))
            .bind(&s.doc)
            .bind(i64::from(s.multi_cluster))
            .bind(i64::from(s.disable_bind_unit))
    }

    pub async fn services(&self) -> StoreResult<Vec<ServiceRecord>> {
        let rows = sqlx::query(&format!("SELECT {SERVICE_COLUMNS} FROM services ORDER BY name")).fetch_all(&self.pool).await?;
        rows.iter().map(|r| self.service_row(r)).collect()
    }

    pub async fn service(&self, name: &str) -> StoreResult<Option<ServiceRecord>> {
        let row = sqlx::query(&format!("SELECT {SERVICE_COLUMNS} FROM services WHERE name = $1")).bind(name).fetch_optional(&self.pool).await?;
        row.as_ref().map(|r| self.service_row(r)).transpose()
    }

    pub async fn insert_service(&self, s: &ServiceRecord) -> StoreResult<()> {
        let sql = format!("INSERT INTO services ({SERVICE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)");
        self.service_fields(sqlx::query(&sql), s)
            .execute(&self.pool)
            .await
            .map_err(|e| conflict_or(e, "Service already exists."))?;
        Ok(())
    }

    /// Writes every field of `s` but its name.
    pub async fn update_service(&self, s: &ServiceRecord) -> StoreResult<()> {
        let sql = "UPDATE services SET username = $2, password = $3, endpoints = $4, owner_teams = $5, teams = $6, restricted = $7, doc = $8, \
             multi_cluster = $9, disable_bind_unit = $10 WHERE name = $1";
        let done = self.service_fields(sqlx::query(sql), s).execute(&self.pool).await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("Service not found".into()));
        }
        Ok(())
    }

    /// Removes `name` unless it has instances (then `Conflict`).
    pub async fn delete_service(&self, name: &str) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        let used = sqlx::query("SELECT name FROM service_instances WHERE service = $1 LIMIT 1").bind(name).fetch_optional(&mut *tx).await?;
        if used.is_some() {
            return Err(StoreError::Conflict(
                "This service cannot be removed because it has instances.\nPlease remove these instances before removing the service.".into(),
            ));
        }
        let done = sqlx::query("DELETE FROM services WHERE name = $1").bind(name).execute(&mut *tx).await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("Service not found".into()));
        }
        tx.commit().await?;
        Ok(())
    }

    fn broker_row(&self, r: &sqlx::any::AnyRow) -> StoreResult<BrokerRecord> {
        let name: String = r.try_get("name")?;
        let config = self.sealer.open(&broker_place(&name), &r.try_get::<String, _>("config")?)?;
        Ok(BrokerRecord {
            url: r.try_get("url")?,
            config: serde_json::from_str(&config).map_err(|e| StoreError::Corrupt(format!("broker {name:?}: config: {e}")))?,
            name,
        })
    }

    pub async fn brokers(&self) -> StoreResult<Vec<BrokerRecord>> {
        let rows = sqlx::query("SELECT name, url, config FROM service_brokers ORDER BY name").fetch_all(&self.pool).await?;
        rows.iter().map(|r| self.broker_row(r)).collect()
    }

    pub async fn broker(&self, name: &str) -> StoreResult<Option<BrokerRecord>> {
        let row = sqlx::query("SELECT name, url, config FROM service_brokers WHERE name = $1").bind(name).fetch_optional(&self.pool).await?;
        row.as_ref().map(|r| self.broker_row(r)).transpose()
    }

    pub async fn insert_broker(&self, b: &BrokerRecord) -> StoreResult<()> {
        sqlx::query("INSERT INTO service_brokers (name, url, config) VALUES ($1, $2, $3)")
            .bind(&b.name)
            .bind(&b.url)
            .bind(self.sealer.seal(&broker_place(&b.name), &b.config.to_string()))
            .execute(&self.pool)
            .await
            .map_err(|e| conflict_or(e, "Broker already exists."))?;
        Ok(())
    }

    pub async fn update_broker(&self, b: &BrokerRecord) -> StoreResult<()> {
        let done = sqlx::query("UPDATE service_brokers SET url = $2, config = $3 WHERE name = $1")
            .bind(&b.name)
            .bind(&b.url)
            .bind(self.sealer.seal(&broker_place(&b.name), &b.config.to_string()))
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("service broker not found".into()));
        }
        Ok(())
    }

    pub async fn delete_broker(&self, name: &str) -> StoreResult<()> {
        let done = sqlx::query("DELETE FROM service_brokers WHERE name = $1").bind(name).execute(&self.pool).await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("service broker not found".into()));
        }
        Ok(())
    }

    fn instance_row(r: &sqlx::any::AnyRow) -> StoreResult<InstanceRecord> {
        Ok(InstanceRecord {
            service: r.try_get("service")?,
            name: r.try_get("name")?,
            plan: r.try_get("plan")?,
            team_owner: r.try_get("team_owner")?,
            teams: parse_list(&r.try_get::<String, _>("teams")?),
            description: r.try_get("description")?,
            tags: parse_list(&r.try_get::<String, _>("tags")?),
            parameters: map_of(&r.try_get::<String, _>("parameters")?),
            pool: r.try_get("pool")?,
            data: r.try_get("data")?,
            state: InstanceState::parse(&r.try_get::<String, _>("state")?),
            operation: r.try_get("operation")?,
            operation_since: r.try_get("operation_since")?,
            message: r.try_get("message")?,
            previous: r.try_get("previous")?,
            created_at: r.try_get("created_at")?,
        })
    }

    /// Every instance, by service then name.
    pub async fn instances(&self) -> StoreResult<Vec<InstanceRecord>> {
        let rows = sqlx::query(&format!("SELECT {INSTANCE_COLUMNS} FROM service_instances ORDER BY service, name")).fetch_all(&self.pool).await?;
        rows.iter().map(Self::instance_row).collect()
    }

    pub async fn instance(&self, service: &str, name: &str) -> StoreResult<Option<InstanceRecord>> {
        let row = sqlx::query(&format!("SELECT {INSTANCE_COLUMNS} FROM service_instances WHERE service = $1 AND name = $2"))
            .bind(service)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(Self::instance_row).transpose()
    }

    /// Instances with a provider operation running (the poller's work).
    pub async fn instances_in_operation(&self) -> StoreResult<Vec<InstanceRecord>> {
        let rows = sqlx::query(&format!("SELECT {INSTANCE_COLUMNS} FROM service_instances WHERE operation <> '' ORDER BY created_at"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(Self::instance_row).collect()
    }

    pub async fn insert_instance(&self, i: &InstanceRecord) -> StoreResult<()> {
        let sql = format!(
            "INSERT INTO service_instances ({INSTANCE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
        );
        instance_fields(sqlx::query(&sql), i)
            .bind(if i.created_at > 0 { i.created_at } else { now_millis() })
            .execute(&self.pool)
            .await
            .map_err(|e| conflict_or(e, "instance name already exists."))?;
        Ok(())
    }

    /// Writes every field of `i` but its keys and creation time.
    pub async fn update_instance(&self, i: &InstanceRecord) -> StoreResult<()> {
        let sql = "UPDATE service_instances SET plan = $3, team_owner = $4, teams = $5, description = $6, tags = $7, parameters = $8, pool = $9, \
             data = $10, state = $11, operation = $12, operation_since = $13, message = $14, previous = $15 WHERE service = $1 AND name = $2";
        let done = instance_fields(sqlx::query(sql), i).execute(&self.pool).await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("service instance not found".into()));
        }
        Ok(())
    }

    /// Removes the instance and what is left of its unit binds. Refused
    /// (`Conflict`) while an app is bound to it.
    pub async fn delete_instance(&self, service: &str, name: &str) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        let bound = sqlx::query("SELECT app FROM service_binds WHERE service = $1 AND instance = $2 LIMIT 1")
            .bind(service)
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
        if bound.is_some() {
            return Err(StoreError::Conflict(format!("service instance {name:?} is bound to an app")));
        }
        sqlx::query("DELETE FROM service_unit_binds WHERE service = $1 AND instance = $2").bind(service).bind(name).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM service_instances WHERE service = $1 AND name = $2").bind(service).bind(name).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    fn bind_row(&self, r: &sqlx::any::AnyRow) -> StoreResult<BindRecord> {
        let (service, instance, app): (String, String, String) = (r.try_get("service")?, r.try_get("instance")?, r.try_get("app")?);
        let env = self.sealer.open(&bind_place(&service, &instance, &app), &r.try_get::<String, _>("env")?)?;
        Ok(BindRecord {
            env: serde_json::from_str(&env).map_err(|e| StoreError::Corrupt(format!("bind of {app:?} to {service}/{instance}: {e}")))?,
            data: r.try_get("data")?,
            service,
            instance,
            app,
        })
    }

    /// The binds of an instance, by app.
    pub async fn binds_of_instance(&self, service: &str, instance: &str) -> StoreResult<Vec<BindRecord>> {
        let rows = sqlx::query("SELECT service, instance, app, env, data FROM service_binds WHERE service = $1 AND instance = $2 ORDER BY app")
            .bind(service)
            .bind(instance)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| self.bind_row(r)).collect()
    }

    /// The binds of an app, by service and instance, in the order they were made.
    pub async fn binds_of_app(&self, app: &str) -> StoreResult<Vec<BindRecord>> {
        let rows = sqlx::query("SELECT service, instance, app, env, data FROM service_binds WHERE app = $1 ORDER BY created_at, service, instance")
            .bind(app)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| self.bind_row(r)).collect()
    }

    /// Every bind with its variables, in the order they were made.
    pub async fn all_bind_records(&self) -> StoreResult<Vec<BindRecord>> {
        let rows = sqlx::query("SELECT service, instance, app, env, data FROM service_binds ORDER BY created_at, service, instance").fetch_all(&self.pool).await?;
        rows.iter().map(|r| self.bind_row(r)).collect()
    }

    /// Every bind (the apps bound to each instance, for lists).
    pub async fn all_binds(&self) -> StoreResult<Vec<(String, String, String)>> {
        let rows = sqlx::query("SELECT service, instance, app FROM service_binds ORDER BY service, instance, app").fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok((r.try_get("service")?, r.try_get("instance")?, r.try_get("app")?))).collect()
    }

    /// Records a bind (`Conflict` when the app is bound to the instance already).
    pub async fn insert_bind(&self, b: &BindRecord) -> StoreResult<()> {
        let _stale = self.views.stale(&b.app);
        let env = serde_json::to_string(&b.env).expect("serialisable");
        sqlx::query("INSERT INTO service_binds (service, instance, app, env, data, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(&b.service)
            .bind(&b.instance)
            .bind(&b.app)
            .bind(self.sealer.seal(&bind_place(&b.service, &b.instance, &b.app), &env))
            .bind(&b.data)
            .bind(now_millis())
            .execute(&self.pool)
            .await
            .map_err(|e| conflict_or(e, "app is already bound to this service instance"))?;
        Ok(())
    }

    /// Forgets a bind; whether there was one.
    pub async fn delete_bind(&self, service: &str, instance: &str, app: &str) -> StoreResult<bool> {
        let _stale = self.views.stale(app);
        let done = sqlx::query("DELETE FROM service_binds WHERE service = $1 AND instance = $2 AND app = $3")
            .bind(service)
            .bind(instance)
            .bind(app)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn unit_binds(&self, service: &str, instance: &str) -> StoreResult<Vec<UnitBind>> {
        let rows = sqlx::query("SELECT service, instance, app, unit, host FROM service_unit_binds WHERE service = $1 AND instance = $2 ORDER BY app, unit")
            .bind(service)
            .bind(instance)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(UnitBind {
                    service: r.try_get("service")?,
                    instance: r.try_get("instance")?,
                    app: r.try_get("app")?,
                    unit: r.try_get("unit")?,
                    host: r.try_get("host")?,
                })
            })
            .collect()
    }

    pub async fn add_unit_bind(&self, u: &UnitBind) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO service_unit_binds (service, instance, app, unit, host) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (service, instance, app, unit) DO UPDATE SET host = excluded.host",
        )
        .bind(&u.service)
        .bind(&u.instance)
        .bind(&u.app)
        .bind(&u.unit)
        .bind(&u.host)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn remove_unit_bind(&self, service: &str, instance: &str, app: &str, unit: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM service_unit_binds WHERE service = $1 AND instance = $2 AND app = $3 AND unit = $4")
            .bind(service)
            .bind(instance)
            .bind(app)
            .bind(unit)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_update_puts_back_what_it_replaced() {
        let before = InstanceRecord {
            service: "pg".into(),
            name: "db".into(),
            plan: "small".into(),
            team_owner: "t1".into(),
            teams: vec!["t1".into()],
            description: "d".into(),
            tags: vec!["a".into()],
            parameters: serde_json::json!({"size": 1}).as_object().unwrap().clone(),
            pool: String::new(),
            data: "{}".into(),
            state: InstanceState::Ready,
            operation: String::new(),
            operation_since: 0,
            message: String::new(),
            previous: String::new(),
            created_at: 1,
        };
        let mut after = InstanceRecord {
            plan: "big".into(),
            description: "e".into(),
            tags: vec![],
            parameters: Default::default(),
            data: r#"{"PlanID":"big"}"#.into(),
            ..before.clone()
        };
        assert!(after.restore(&before.updatable()));
        assert_eq!(after, before);
        assert!(!after.restore(""), "nothing kept: nothing put back");
    }
}
