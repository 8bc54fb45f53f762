//! Event blocks.

use super::{Store, StoreResult};
use sqlx::Row;
use sqlx::any::AnyRow;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockRecord {
    pub id: String,
    pub start_time: i64,
    pub end_time: i64,
    pub kind_name: String,
    pub owner_name: String,
    pub target_type: String,
    pub target_value: String,
    pub conditions: BTreeMap<String, String>,
    pub reason: String,
    pub active: bool,
}

fn block(row: &AnyRow) -> StoreResult<BlockRecord> {
    let conditions: String = row.try_get("conditions")?;
    Ok(BlockRecord {
        id: row.try_get("id")?,
        start_time: row.try_get("start_time")?,
        end_time: row.try_get("end_time")?,
        kind_name: row.try_get("kind_name")?,
        owner_name: row.try_get("owner_name")?,
        target_type: row.try_get("target_type")?,
        target_value: row.try_get("target_value")?,
        conditions: serde_json::from_str(&conditions).unwrap_or_default(),
        reason: row.try_get("reason")?,
        active: row.try_get::<i64, _>("active")? != 0,
    })
}

const COLUMNS: &str = "id, start_time, end_time, kind_name, owner_name, target_type, target_value, conditions, reason, active";

impl Store {
    pub async fn add_block(&self, b: &BlockRecord) -> StoreResult<()> {
        sqlx::query(&format!("INSERT INTO event_blocks ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"))
            .bind(&b.id)
            .bind(b.start_time)
            .bind(b.end_time)
            .bind(&b.kind_name)
            .bind(&b.owner_name)
            .bind(&b.target_type)
            .bind(&b.target_value)
            .bind(serde_json::to_string(&b.conditions).expect("strings serialise"))
            .bind(&b.reason)
            .bind(i64::from(b.active))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Blocks, newest first; `active` filters when given.
    pub async fn blocks(&self, active: Option<bool>) -> StoreResult<Vec<BlockRecord>> {
        let filter = match active {
            None => String::new(),
            Some(a) => format!(" WHERE active = {}", i64::from(a)),
        };
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM event_blocks{filter} ORDER BY start_time DESC, id DESC"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(block).collect()
    }

    /// Ends an active block. `false` when there is no active block with that id.
    pub async fn deactivate_block(&self, id: &str, now: i64) -> StoreResult<bool> {
        let done = sqlx::query("UPDATE event_blocks SET active = 0, end_time = $1 WHERE id = $2 AND active = 1")
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}
