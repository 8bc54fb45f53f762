//! Events and target locks.

use super::{Store, StoreError, StoreResult};
use sqlx::Row;
use sqlx::any::AnyRow;

#[derive(Debug, Clone, Default)]
pub struct EventRecord {
    pub id: String,
    pub target_type: String,
    pub target_value: String,
    pub kind_type: String,
    pub kind_name: String,
    pub owner_type: String,
    pub owner_name: String,
    pub source_ip: String,
    pub start_time: i64,
    pub end_time: i64,
    pub running: bool,
    pub lock_update_time: i64,
    pub error: String,
    /// JSON array of `{"date": ms, "message": "…"}`.
    pub log: String,
    /// JSON values.
    pub start_custom: String,
    pub end_custom: String,
    pub other_custom: String,
    pub cancelable: bool,
    pub cancel_info: String,
    pub allowed: String,
    pub allowed_cancel: String,
    pub instance: String,
}

const COLUMNS: &str = "id, target_type, target_value, kind_type, kind_name, owner_type, owner_name, source_ip, \
     start_time, end_time, running, lock_update_time, error, log, start_custom, end_custom, other_custom, \
     cancelable, cancel_info, allowed, allowed_cancel, instance";

fn event(row: &AnyRow) -> StoreResult<EventRecord> {
    Ok(EventRecord {
        id: row.try_get("id")?,
        target_type: row.try_get("target_type")?,
        target_value: row.try_get("target_value")?,
        kind_type: row.try_get("kind_type")?,
        kind_name: row.try_get("kind_name")?,
        owner_type: row.try_get("owner_type")?,
        owner_name: row.try_get("owner_name")?,
        source_ip: row.try_get("source_ip")?,
        start_time: row.try_get("start_time")?,
        end_time: row.try_get("end_time")?,
        running: row.try_get::<i64, _>("running")? != 0,
        lock_update_time: row.try_get("lock_update_time")?,
        error: row.try_get("error")?,
        log: row.try_get("log")?,
        start_custom: row.try_get("start_custom")?,
        end_custom: row.try_get("end_custom")?,
        other_custom: row.try_get("other_custom")?,
        cancelable: row.try_get::<i64, _>("cancelable")? != 0,
        cancel_info: row.try_get("cancel_info")?,
        allowed: row.try_get("allowed")?,
        allowed_cancel: row.try_get("allowed_cancel")?,
        instance: row.try_get("instance")?,
    })
}

/// SQL-side filters of the event list; permission filtering happens above.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    pub target_type: Option<String>,
    pub target_value: Option<String>,
    pub kind_type: Option<String>,
    pub kind_names: Vec<String>,
    pub owner_type: Option<String>,
    pub owner_name: Option<String>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub running: Option<bool>,
    pub error_only: bool,
    /// Oldest first instead of newest first.
    pub ascending: bool,
}

/// What a failed lock attempt found holding the target.
#[derive(Debug, Clone)]
pub enum LockOutcome {
    Acquired {
        /// A dead holder whose lock expired and was taken over.
        took_over: Option<String>,
    },
    Held(String),
}

impl Store {
    /// Records a new event and, with `lock`, takes its target's lock in the
    /// same transaction. A lock whose heartbeat is older than `expired_before`
    /// is taken over and its event ended with an error.
    ///
    /// The transaction's first statement is a write: on SQLite a transaction
    /// that reads first and writes later can fail under concurrency instead
    /// of waiting its turn.
    pub async fn start_event(&self, e: &EventRecord, lock: bool, expired_before: i64) -> StoreResult<LockOutcome> {
        // A taken lock is patched into the app's cached view; a lock held by
        // another (our event rolled back: nothing happened) leaves it; a
        // failure drops it.
        let stale = (lock && e.target_type == "app").then(|| self.views.stale(&e.target_value));
        let outcome = self.insert_event(e, lock, expired_before).await;
        if let (Some(stale), Ok(outcome)) = (stale, &outcome) {
            match outcome {
                LockOutcome::Acquired { .. } => stale.locked(&e.id),
                LockOutcome::Held(_) => stale.unchanged(),
            }
        }
        outcome
    }

    /// [`Store::start_event`]'s writes, in one transaction committed only
    /// when the event starts.
    async fn insert_event(&self, e: &EventRecord, lock: bool, expired_before: i64) -> StoreResult<LockOutcome> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(&format!(
            "INSERT INTO events ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22)"
        ))
        .bind(&e.id)
        .bind(&e.target_type)
        .bind(&e.target_value)
        .bind(&e.kind_type)
        .bind(&e.kind_name)
        .bind(&e.owner_type)
        .bind(&e.owner_name)
        .bind(&e.source_ip)
        .bind(e.start_time)
        .bind(e.end_time)
        .bind(i64::from(e.running))
        .bind(e.lock_update_time)
        .bind(&e.error)
        .bind(&e.log)
        .bind(&e.start_custom)
        .bind(&e.end_custom)
        .bind(&e.other_custom)
        .bind(i64::from(e.cancelable))
        .bind(&e.cancel_info)
        .bind(&e.allowed)
        .bind(&e.allowed_cancel)
        .bind(&e.instance)
        .execute(&mut *tx)
        .await?;
        if !lock {
            tx.commit().await?;
            return Ok(LockOutcome::Acquired { took_over: None });
        }
        let insert_lock = "INSERT INTO event_locks (target_type, target_value, event_id, heartbeat_at) VALUES ($1, $2, $3, $4) \
                           ON CONFLICT (target_type, target_value) DO NOTHING";
        // On PostgreSQL the holder may release between our insert and our look at
        // it; then the lock is free and the insert is simply tried again.
        let (holder, heartbeat) = loop {
            let got = sqlx::query(insert_lock)
                .bind(&e.target_type)
                .bind(&e.target_value)
                .bind(&e.id)
                .bind(e.start_time)
                .execute(&mut *tx)
                .await?;
            if got.rows_affected() == 1 {
                tx.commit().await?;
                return Ok(LockOutcome::Acquired { took_over: None });
            }
            let row = sqlx::query("SELECT event_id, heartbeat_at FROM event_locks WHERE target_type = $1 AND target_value = $2")
                .bind(&e.target_type)
                .bind(&e.target_value)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some(row) = row {
                break (row.try_get::<String, _>("event_id")?, row.try_get::<i64, _>("heartbeat_at")?);
            }
        };
        if heartbeat >= expired_before {
            // Dropping the transaction rolls our event back: nothing happened.
            return Ok(LockOutcome::Held(holder));
        }
        // Take over exactly the stale row we saw; a concurrent taker wins otherwise.
        let taken = sqlx::query("DELETE FROM event_locks WHERE target_type = $1 AND target_value = $2 AND event_id = $3 AND heartbeat_at = $4")
            .bind(&e.target_type)
            .bind(&e.target_value)
            .bind(&holder)
            .bind(heartbeat)
            .execute(&mut *tx)
            .await?;
        if taken.rows_affected() == 0 {
            return Ok(LockOutcome::Held(holder));
        }
        sqlx::query("UPDATE events SET running = 0, end_time = $1, error = $2 WHERE id = $3 AND running = 1")
            .bind(e.start_time)
            .bind("event lock expired: the torii process running it stopped responding")
            .bind(&holder)
            .execute(&mut *tx)
            .await?;
        let got = sqlx::query(insert_lock)
            .bind(&e.target_type)
            .bind(&e.target_value)
            .bind(&e.id)
            .bind(e.start_time)
            .execute(&mut *tx)
            .await?;
        if got.rows_affected() == 0 {
            // Another process took the freed lock first; roll everything back.
            let winner = self.lock_holder(&e.target_type, &e.target_value).await?.unwrap_or_default();
            return Ok(LockOutcome::Held(winner));
        }
        tx.commit().await?;
        Ok(LockOutcome::Acquired { took_over: Some(holder) })
    }

    /// The running events holding locks on targets of `target_type`, by target value.
    pub async fn locking_events(&self, target_type: &str) -> StoreResult<std::collections::HashMap<String, EventRecord>> {
        let columns = COLUMNS.split(", ").map(|c| format!("e.{c}")).collect::<Vec<_>>().join(", ");
        let rows = sqlx::query(&format!(
            "SELECT {columns} FROM event_locks l JOIN events e ON e.id = l.event_id WHERE l.target_type = $1"
        ))
        .bind(target_type)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| event(r).map(|e| (e.target_value.clone(), e))).collect()
    }

    pub async fn lock_holder(&self, target_type: &str, target_value: &str) -> StoreResult<Option<String>> {
        let row = sqlx::query("SELECT event_id FROM event_locks WHERE target_type = $1 AND target_value = $2")
            .bind(target_type)
            .bind(target_value)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("event_id")).transpose()?)
    }

    /// Refreshes the heartbeat of the locks (and events) this process holds.
    pub async fn heartbeat(&self, event_ids: &[String], now: i64) -> StoreResult<()> {
        for id in event_ids {
            sqlx::query("UPDATE event_locks SET heartbeat_at = $1 WHERE event_id = $2")
                .bind(now)
                .bind(id)
                .execute(&self.pool)
                .await?;
            sqlx::query("UPDATE events SET lock_update_time = $1 WHERE id = $2 AND running = 1")
                .bind(now)
                .bind(id)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// Releases event `id`'s lock in `tx`; the app whose lock it was, if an
    /// app's (its view shows the lock, so it is stale once `tx` commits).
    async fn release_lock(tx: &mut sqlx::Transaction<'_, sqlx::Any>, id: &str) -> StoreResult<Option<String>> {
        let released = sqlx::query("DELETE FROM event_locks WHERE event_id = $1 RETURNING target_type, target_value")
            .bind(id)
            .fetch_optional(&mut **tx)
            .await?;
        Ok(match released {
            Some(row) if row.try_get::<String, _>("target_type")? == "app" => Some(row.try_get("target_value")?),
            _ => None,
        })
    }

    /// Removes a running event and its lock, as if it never ran.
    pub async fn discard_event(&self, id: &str) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        let released_app = Self::release_lock(&mut tx, id).await?;
        let stale = released_app.as_deref().map(|app| self.views.stale(app));
        sqlx::query("DELETE FROM events WHERE id = $1 AND running = 1").bind(id).execute(&mut *tx).await?;
        tx.commit().await?;
        if let Some(s) = stale {
            s.unlocked(id);
        }
        Ok(())
    }

    /// Ends an event and releases its lock.
    pub async fn finish_event(&self, id: &str, end_time: i64, error: &str, log: &str, end_custom: &str) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        let released_app = Self::release_lock(&mut tx, id).await?;
        let stale = released_app.as_deref().map(|app| self.views.stale(app));
        let done = sqlx::query(
            "UPDATE events SET running = 0, end_time = $1, error = $2, log = $3, end_custom = $4, lock_update_time = $1 \
             WHERE id = $5 AND running = 1",
        )
        .bind(end_time)
        .bind(error)
        .bind(log)
        .bind(end_custom)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        if let Some(s) = stale {
            s.unlocked(id);
        }
        if done.rows_affected() == 0 {
            // Our lock expired and someone took it over: the event was already closed.
            return Err(StoreError::Conflict(format!("event {id} was already ended")));
        }
        Ok(())
    }

    pub async fn event(&self, id: &str) -> StoreResult<Option<EventRecord>> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM events WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(event).transpose()
    }

    /// Events matching `q`, newest first (or oldest first), `limit` rows from `offset`.
    pub async fn events(&self, q: &EventQuery, offset: i64, limit: i64) -> StoreResult<Vec<EventRecord>> {
        let mut sql = format!("SELECT {COLUMNS} FROM events WHERE 1 = 1");
        let mut args: Vec<String> = Vec::new();
        let mut push = |sql: &mut String, clause: &str, value: String| {
            args.push(value);
            sql.push_str(&clause.replace('?', &format!("${}", args.len())));
        };
        if let Some(v) = &q.target_type {
            push(&mut sql, " AND target_type = ?", v.clone());
        }
        if let Some(v) = &q.target_value {
            push(&mut sql, " AND target_value = ?", v.clone());
        }
        if let Some(v) = &q.kind_type {
            push(&mut sql, " AND kind_type = ?", v.clone());
        }
        if !q.kind_names.is_empty() {
            sql.push_str(" AND kind_name IN (");
            for (i, name) in q.kind_names.iter().enumerate() {
                if i > 0 {
                    sql.push_str(", ");
                }
                push(&mut sql, "?", name.clone());
            }
            sql.push(')');
        }
        if let Some(v) = &q.owner_type {
            push(&mut sql, " AND owner_type = ?", v.clone());
        }
        if let Some(v) = &q.owner_name {
            push(&mut sql, " AND owner_name = ?", v.clone());
        }
        // Numbers are inlined: they are ours, not the client's text.
        if let Some(since) = q.since {
            sql.push_str(&format!(" AND start_time >= {since}"));
        }
        if let Some(until) = q.until {
            sql.push_str(&format!(" AND start_time <= {until}"));
        }
        if let Some(running) = q.running {
            sql.push_str(&format!(" AND running = {}", i64::from(running)));
        }
        if q.error_only {
            sql.push_str(" AND error <> ''");
        }
        let order = if q.ascending { "ASC" } else { "DESC" };
        sql.push_str(&format!(" ORDER BY start_time {order}, id {order} LIMIT {limit} OFFSET {offset}"));
        let mut query = sqlx::query(&sql);
        for a in &args {
            query = query.bind(a);
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter().map(event).collect()
    }

    /// Distinct (kind type, kind name) pairs.
    pub async fn event_kinds(&self) -> StoreResult<Vec<(String, String)>> {
        let rows = sqlx::query("SELECT DISTINCT kind_type, kind_name FROM events ORDER BY kind_type, kind_name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok((r.try_get("kind_type")?, r.try_get("kind_name")?))).collect()
    }
}

impl Store {
    /// Records a cancel request on a running, cancelable event. `Ok(false)`
    /// when one was already requested.
    /// How many event locks are held (operations running on their targets).
    pub async fn event_locks_held(&self) -> StoreResult<i64> {
        Ok(sqlx::query("SELECT COUNT(*) AS n FROM event_locks").fetch_one(&self.pool).await?.try_get("n")?)
    }

    /// The cancel info of `id` while it runs and may be canceled.
    pub async fn running_cancel_info(&self, id: &str) -> StoreResult<Option<String>> {
        let row = sqlx::query("SELECT cancel_info FROM events WHERE id = $1 AND running = 1 AND cancelable = 1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("cancel_info")).transpose()?)
    }

    /// Replaces `id`'s cancel info with `new` if it is still `old`.
    pub async fn swap_cancel_info(&self, id: &str, old: &str, new: &str) -> StoreResult<bool> {
        let done = sqlx::query("UPDATE events SET cancel_info = $1 WHERE id = $2 AND cancel_info = $3")
            .bind(new)
            .bind(id)
            .bind(old)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn request_cancel(&self, id: &str, cancel_info: &str) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE events SET cancel_info = $1 WHERE id = $2 AND running = 1 AND cancelable = 1 \
             AND cancel_info NOT LIKE '%\"Asked\":true%'",
        )
        .bind(cancel_info)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
