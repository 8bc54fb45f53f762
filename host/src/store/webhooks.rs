//! Webhooks and their delivery history.

use super::{Store, StoreError, StoreResult, conflict_or};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EventFilter {
    pub target_types: Vec<String>,
    pub target_values: Vec<String>,
    pub kind_types: Vec<String>,
    pub kind_names: Vec<String>,
    pub error_only: bool,
    pub success_only: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookRecord {
    pub name: String,
    pub description: String,
    pub team_owner: String,
    pub event_filter: EventFilter,
    pub url: String,
    pub proxy_url: String,
    pub headers: BTreeMap<String, Vec<String>>,
    pub method: String,
    pub body: String,
    pub insecure: bool,
    /// Unix ms; events that finished earlier are not delivered to it.
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeliveryRecord {
    pub event_id: String,
    pub attempt: i64,
    pub at: i64,
    pub status: i64,
    pub error: String,
    pub duration_ms: i64,
}

/// A webhook row, its headers opened (`sealed`).
fn webhook(sealer: &super::sealed::Sealer, row: &AnyRow) -> StoreResult<WebhookRecord> {
    let filter: String = row.try_get("event_filter")?;
    let name: String = row.try_get("name")?;
    let headers = sealer.open(&super::sealed::webhook_place(&name), &row.try_get::<String, _>("headers")?)?;
    Ok(WebhookRecord {
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        team_owner: row.try_get("team_owner")?,
        event_filter: serde_json::from_str(&filter).unwrap_or_default(),
        url: row.try_get("url")?,
        proxy_url: row.try_get("proxy_url")?,
        headers: serde_json::from_str(&headers).unwrap_or_default(),
        method: row.try_get("method")?,
        body: row.try_get("body")?,
        insecure: row.try_get::<i64, _>("insecure")? != 0,
        created_at: row.try_get("created_at")?,
    })
}

const COLUMNS: &str = "name, description, team_owner, event_filter, url, proxy_url, headers, method, body, insecure, created_at";

impl Store {
    /// Inserts, or with `replace` overwrites an existing webhook.
    pub async fn save_webhook(&self, w: &WebhookRecord, replace: bool) -> StoreResult<()> {
        let sql = if replace {
            "UPDATE webhooks SET description = $2, team_owner = $3, event_filter = $4, url = $5, proxy_url = $6, \
             headers = $7, method = $8, body = $9, insecure = $10 WHERE name = $1"
                .to_string()
        } else {
            format!("INSERT INTO webhooks ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)")
        };
        // `created_at` is bound last; the UPDATE leaves it alone.
        let mut query = sqlx::query(&sql)
            .bind(&w.name)
            .bind(&w.description)
            .bind(&w.team_owner)
            .bind(serde_json::to_string(&w.event_filter).expect("serialisable"))
            .bind(&w.url)
            .bind(&w.proxy_url)
            .bind(self.sealer.seal(&super::sealed::webhook_place(&w.name), &serde_json::to_string(&w.headers).expect("serialisable")))
            .bind(&w.method)
            .bind(&w.body)
            .bind(i64::from(w.insecure));
        if !replace {
            query = query.bind(w.created_at);
        }
        let done = query.execute(&self.pool).await.map_err(|e| conflict_or(e, "webhook already exists with the same name"))?;
        if replace && done.rows_affected() == 0 {
            return Err(StoreError::NotFound("webhook not found".into()));
        }
        Ok(())
    }

    pub async fn webhooks(&self) -> StoreResult<Vec<WebhookRecord>> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM webhooks ORDER BY name")).fetch_all(&self.pool).await?;
        rows.iter().map(|r| webhook(&self.sealer, r)).collect()
    }

    pub async fn webhook(&self, name: &str) -> StoreResult<Option<WebhookRecord>> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM webhooks WHERE name = $1")).bind(name).fetch_optional(&self.pool).await?;
        row.as_ref().map(|r| webhook(&self.sealer, r)).transpose()
    }

    pub async fn delete_webhook(&self, name: &str) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("DELETE FROM webhooks WHERE name = $1").bind(name).execute(&mut *tx).await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("webhook not found".into()));
        }
        sqlx::query("DELETE FROM webhook_deliveries WHERE webhook = $1").bind(name).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records a delivery attempt, keeping the newest `keep` per webhook.
    pub async fn record_delivery(&self, webhook: &str, d: &DeliveryRecord, keep: i64) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO webhook_deliveries (webhook, event_id, attempt, at, status, error, duration_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(webhook)
        .bind(&d.event_id)
        .bind(d.attempt)
        .bind(d.at)
        .bind(d.status)
        .bind(&d.error)
        .bind(d.duration_ms)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM webhook_deliveries WHERE webhook = $1 AND id <= \
             (SELECT id FROM webhook_deliveries WHERE webhook = $1 ORDER BY id DESC LIMIT 1 OFFSET $2)",
        )
        .bind(webhook)
        .bind(keep)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Delivery attempts of a webhook, newest first.
    pub async fn deliveries(&self, webhook: &str) -> StoreResult<Vec<DeliveryRecord>> {
        let rows = sqlx::query(
            "SELECT event_id, attempt, at, status, error, duration_ms FROM webhook_deliveries WHERE webhook = $1 ORDER BY id DESC",
        )
        .bind(webhook)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DeliveryRecord {
                    event_id: r.try_get("event_id")?,
                    attempt: r.try_get("attempt")?,
                    at: r.try_get("at")?,
                    status: r.try_get("status")?,
                    error: r.try_get("error")?,
                    duration_ms: r.try_get("duration_ms")?,
                })
            })
            .collect()
    }
}
