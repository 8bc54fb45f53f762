//! App logs.

use super::{Backend, Store, StoreResult};
use sqlx::Row;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub id: i64,
    pub app: String,
    pub date: i64,
    pub message: String,
    pub source: String,
    pub unit: String,
}

/// Which entries to read.
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    pub source: Option<String>,
    /// Exclude `source` instead of keeping only it.
    pub invert_source: bool,
    pub units: Vec<String>,
}

/// One statement inserts a whole batch, handed over as one JSON parameter
/// (`[[date, message, source, unit], ...]`, in order): a busy app's batch
/// of thousands of lines costs one bind, not five per line.
const INSERT_SQLITE: &str = "INSERT INTO app_logs (app, date, message, source, unit) \
     SELECT $1, json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'), json_extract(value, '$[3]') \
     FROM json_each($2) ORDER BY key";
const INSERT_POSTGRES: &str = "INSERT INTO app_logs (app, date, message, source, unit) \
     SELECT $1, (e->>0)::bigint, e->>1, e->>2, e->>3 \
     FROM jsonb_array_elements($2::jsonb) WITH ORDINALITY AS t(e, n) ORDER BY n";

impl Store {
    /// Appends entries (date, message, source, unit; tuples of owned or
    /// borrowed strings) and trims the app's log to its newest `keep` entries.
    pub async fn append_logs<M, S, U>(&self, app: &str, entries: &[(i64, M, S, U)], keep: i64) -> StoreResult<()>
    where
        M: serde::Serialize + Sync,
        S: serde::Serialize + Sync,
        U: serde::Serialize + Sync,
    {
        // Entries past what the log keeps would be trimmed at once.
        let skip = entries.len().saturating_sub(usize::try_from(keep.max(0)).unwrap_or(usize::MAX));
        let rows = serde_json::to_string(&entries[skip..]).expect("log entries serialise");
        let insert = match self.backend {
            Backend::Sqlite => INSERT_SQLITE,
            Backend::Postgres => INSERT_POSTGRES,
        };
        let mut tx = self.pool.begin().await?;
        sqlx::query(insert).bind(app).bind(rows).execute(&mut *tx).await?;
        sqlx::query(
            "DELETE FROM app_logs WHERE app = $1 AND id <= \
             (SELECT id FROM app_logs WHERE app = $1 ORDER BY id DESC LIMIT 1 OFFSET $2)",
        )
        .bind(app)
        .bind(keep)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Entries with id > `after`, oldest first; `last` keeps only the newest n.
    pub async fn logs(&self, app: &str, q: &LogQuery, after: i64, last: Option<i64>) -> StoreResult<Vec<LogRecord>> {
        let mut sql = String::from("SELECT id, app, date, message, source, unit FROM app_logs WHERE app = $1 AND id > $2");
        let mut args: Vec<String> = Vec::new();
        if let Some(source) = &q.source {
            args.push(source.clone());
            sql.push_str(&format!(" AND source {} ${}", if q.invert_source { "<>" } else { "=" }, args.len() + 2));
        }
        if !q.units.is_empty() {
            let mut list = Vec::new();
            for unit in &q.units {
                args.push(unit.clone());
                list.push(format!("${}", args.len() + 2));
            }
            sql.push_str(&format!(" AND unit IN ({})", list.join(", ")));
        }
        let sql = match last {
            Some(n) => format!("SELECT * FROM ({sql} ORDER BY id DESC LIMIT {n}) AS newest ORDER BY id"),
            None => format!("{sql} ORDER BY id"),
        };
        let mut query = sqlx::query(&sql).bind(app).bind(after);
        for a in &args {
            query = query.bind(a);
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                Ok(LogRecord {
                    id: r.try_get("id")?,
                    app: r.try_get("app")?,
                    date: r.try_get("date")?,
                    message: r.try_get("message")?,
                    source: r.try_get("source")?,
                    unit: r.try_get("unit")?,
                })
            })
            .collect()
    }
}
