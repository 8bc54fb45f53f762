//! IaaS machines and templates (`/iaas/machines`, `/iaas/templates`).

use super::{Store, StoreError, StoreResult, conflict_or, now_millis};
use sqlx::Row;
use sqlx::any::AnyRow;
use std::collections::BTreeMap;

/// A machine an IaaS driver made, as tsuru shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineRecord {
    pub id: String,
    pub iaas: String,
    pub status: String,
    pub address: String,
    pub port: i64,
    pub protocol: String,
    pub creation_params: BTreeMap<String, String>,
    /// The pool it is being made for, until its node joins.
    pub joining: String,
    pub created_at: i64,
}

impl MachineRecord {
    /// Where the machine's Docker engine answers, as a node address.
    pub fn engine_address(&self) -> String {
        match self.protocol.as_str() {
            "unix" => format!("unix://{}", self.address),
            protocol => format!("{protocol}://{}:{}", self.address, self.port),
        }
    }
}

/// A named parameter set of one IaaS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateRecord {
    pub name: String,
    pub iaas: String,
    pub data: Vec<(String, String)>,
}

fn machine(row: &AnyRow) -> StoreResult<MachineRecord> {
    let params: String = row.try_get("creation_params")?;
    Ok(MachineRecord {
        id: row.try_get("id")?,
        iaas: row.try_get("iaas")?,
        status: row.try_get("status")?,
        address: row.try_get("address")?,
        port: row.try_get("port")?,
        protocol: row.try_get("protocol")?,
        creation_params: serde_json::from_str(&params).unwrap_or_default(),
        joining: row.try_get("joining")?,
        created_at: row.try_get("created_at")?,
    })
}

fn template(row: &AnyRow) -> StoreResult<TemplateRecord> {
    let data: String = row.try_get("data")?;
    Ok(TemplateRecord { name: row.try_get("name")?, iaas: row.try_get("iaas")?, data: serde_json::from_str(&data).unwrap_or_default() })
}

const MACHINE: &str = "id, iaas, status, address, port, protocol, creation_params, joining, created_at";

impl Store {
    pub async fn add_machine(&self, m: &MachineRecord) -> StoreResult<()> {
        let params = serde_json::to_string(&m.creation_params).expect("params serialise");
        sqlx::query(&format!("INSERT INTO iaas_machines ({MACHINE}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"))
            .bind(&m.id)
            .bind(&m.iaas)
            .bind(&m.status)
            .bind(&m.address)
            .bind(m.port)
            .bind(&m.protocol)
            .bind(params)
            .bind(&m.joining)
            .bind(if m.created_at > 0 { m.created_at } else { now_millis() })
            .execute(&self.pool)
            .await
            .map_err(|e| conflict_or(e, &format!("machine {:?} exists already", m.id)))?;
        Ok(())
    }

    pub async fn machines(&self) -> StoreResult<Vec<MachineRecord>> {
        let rows = sqlx::query(&format!("SELECT {MACHINE} FROM iaas_machines ORDER BY created_at, id")).fetch_all(&self.pool).await?;
        rows.iter().map(machine).collect()
    }

    pub async fn machine(&self, id: &str) -> StoreResult<Option<MachineRecord>> {
        let row = sqlx::query(&format!("SELECT {MACHINE} FROM iaas_machines WHERE id = $1")).bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(machine).transpose()
    }

    /// The machine whose engine answers at `address` (a node's).
    pub async fn machine_at(&self, address: &str) -> StoreResult<Option<MachineRecord>> {
        Ok(self.machines().await?.into_iter().find(|m| m.engine_address() == address))
    }

    /// The node running on machine `id` (by the node's IaaS id).
    pub async fn node_of_machine(&self, id: &str) -> StoreResult<Option<super::NodeRecord>> {
        Ok(self.nodes().await?.into_iter().find(|n| n.iaas_id == id))
    }

    /// Marks a machine as (still) joining `pool`: healing destroys it once
    /// it has been so for long (a destroy that failed is tried again so).
    pub async fn set_machine_joining(&self, id: &str, pool: &str) -> StoreResult<()> {
        sqlx::query("UPDATE iaas_machines SET joining = $2 WHERE id = $1").bind(id).bind(pool).execute(&self.pool).await?;
        Ok(())
    }

    /// The machine's node joined its pool.
    pub async fn machine_joined(&self, id: &str) -> StoreResult<()> {
        sqlx::query("UPDATE iaas_machines SET joining = '' WHERE id = $1").bind(id).execute(&self.pool).await?;
        Ok(())
    }

    pub async fn remove_machine(&self, id: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM iaas_machines WHERE id = $1").bind(id).execute(&self.pool).await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn templates(&self) -> StoreResult<Vec<TemplateRecord>> {
        let rows = sqlx::query("SELECT name, iaas, data FROM iaas_templates ORDER BY name").fetch_all(&self.pool).await?;
        rows.iter().map(template).collect()
    }

    pub async fn template(&self, name: &str) -> StoreResult<Option<TemplateRecord>> {
        let row = sqlx::query("SELECT name, iaas, data FROM iaas_templates WHERE name = $1").bind(name).fetch_optional(&self.pool).await?;
        row.as_ref().map(template).transpose()
    }

    /// Adds a template; one of that name is a conflict.
    pub async fn add_template(&self, t: &TemplateRecord) -> StoreResult<()> {
        let data = serde_json::to_string(&t.data).expect("data serialise");
        sqlx::query("INSERT INTO iaas_templates (name, iaas, data) VALUES ($1, $2, $3)")
            .bind(&t.name)
            .bind(&t.iaas)
            .bind(data)
            .execute(&self.pool)
            .await
            .map_err(|e| conflict_or(e, &format!("template name {:?} already used", t.name)))?;
        Ok(())
    }

    pub async fn update_template(&self, t: &TemplateRecord) -> StoreResult<()> {
        let data = serde_json::to_string(&t.data).expect("data serialise");
        let done = sqlx::query("UPDATE iaas_templates SET iaas = $2, data = $3 WHERE name = $1").bind(&t.name).bind(&t.iaas).bind(data).execute(&self.pool).await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("template not found".into()));
        }
        Ok(())
    }

    pub async fn remove_template(&self, name: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM iaas_templates WHERE name = $1").bind(name).execute(&self.pool).await?;
        Ok(done.rows_affected() > 0)
    }
}
