//! Roles and role bindings (role instances held by users, team tokens and groups).

use super::{Store, StoreError, StoreResult, conflict_or, json_list, parse_list};
use sqlx::Row;
use sqlx::any::AnyRow;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleRecord {
    pub name: String,
    pub context_type: String,
    pub description: String,
    pub schemes: Vec<String>,
    pub events: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectKind {
    User,
    Token,
    Group,
}

impl SubjectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SubjectKind::User => "user",
            SubjectKind::Token => "token",
            SubjectKind::Group => "group",
        }
    }
}

/// A role instance: the role (with its definition) bound at a context value.
#[derive(Debug, Clone)]
pub struct RoleBinding {
    pub role: RoleRecord,
    pub context_value: String,
    /// The group it comes from, for bindings inherited through a group.
    pub group: Option<String>,
}

fn role(row: &AnyRow) -> StoreResult<RoleRecord> {
    let schemes: String = row.try_get("schemes")?;
    let events: String = row.try_get("events")?;
    Ok(RoleRecord {
        name: row.try_get("name")?,
        context_type: row.try_get("context_type")?,
        description: row.try_get("description")?,
        schemes: parse_list(&schemes),
        events: parse_list(&events),
    })
}

const ROLE_COLUMNS: &str = "name, context_type, description, schemes, events";

fn not_found() -> StoreError {
    StoreError::NotFound("role not found".into())
}

/// Removes every role binding whose context is the object `value` of
/// `context_type` (`app`, `pool`, `router`, `team`, `user`, ...), in the
/// transaction that removes the object: a binding must not outlive its object,
/// or it would grant whoever creates another of the same name. Every removal
/// of an object that role contexts name calls this.
pub(super) async fn forget_bindings_on(conn: &mut sqlx::AnyConnection, context_type: &str, value: &str) -> StoreResult<()> {
    sqlx::query(
        "DELETE FROM role_bindings WHERE context_value = $1 \
         AND role IN (SELECT name FROM roles WHERE context_type = $2)",
    )
    .bind(value)
    .bind(context_type)
    .execute(conn)
    .await?;
    Ok(())
}

impl Store {
    pub async fn create_role(&self, r: &RoleRecord) -> StoreResult<()> {
        sqlx::query(&format!("INSERT INTO roles ({ROLE_COLUMNS}) VALUES ($1, $2, $3, $4, $5)"))
            .bind(&r.name)
            .bind(&r.context_type)
            .bind(&r.description)
            .bind(json_list(&r.schemes))
            .bind(json_list(&r.events))
            .execute(&self.pool)
            .await
            .map_err(|e| conflict_or(e, "role already exists"))?;
        Ok(())
    }

    pub async fn role(&self, name: &str) -> StoreResult<Option<RoleRecord>> {
        let row = sqlx::query(&format!("SELECT {ROLE_COLUMNS} FROM roles WHERE name = $1"))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(role).transpose()
    }

    pub async fn roles(&self) -> StoreResult<Vec<RoleRecord>> {
        let rows = sqlx::query(&format!("SELECT {ROLE_COLUMNS} FROM roles ORDER BY name")).fetch_all(&self.pool).await?;
        rows.iter().map(role).collect()
    }

    /// Replaces a role's definition; `old_name` may differ from `r.name` (rename
    /// cascades to the bindings).
    pub async fn update_role(&self, old_name: &str, r: &RoleRecord) -> StoreResult<()> {
        let done = sqlx::query(
            "UPDATE roles SET name = $1, context_type = $2, description = $3, schemes = $4, events = $5 WHERE name = $6",
        )
        .bind(&r.name)
        .bind(&r.context_type)
        .bind(&r.description)
        .bind(json_list(&r.schemes))
        .bind(json_list(&r.events))
        .bind(old_name)
        .execute(&self.pool)
        .await
        .map_err(|e| conflict_or(e, "role already exists"))?;
        if done.rows_affected() == 0 {
            return Err(not_found());
        }
        Ok(())
    }

    pub async fn delete_role(&self, name: &str) -> StoreResult<()> {
        let done = sqlx::query("DELETE FROM roles WHERE name = $1").bind(name).execute(&self.pool).await?;
        if done.rows_affected() == 0 {
            return Err(not_found());
        }
        Ok(())
    }

    pub async fn bind_role(&self, kind: SubjectKind, subject: &str, role: &str, context_value: &str) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO role_bindings (subject_kind, subject, role, context_value) VALUES ($1, $2, $3, $4) \
             ON CONFLICT DO NOTHING",
        )
        .bind(kind.as_str())
        .bind(subject)
        .bind(role)
        .bind(context_value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn unbind_role(&self, kind: SubjectKind, subject: &str, role: &str, context_value: &str) -> StoreResult<()> {
        sqlx::query(
            "DELETE FROM role_bindings WHERE subject_kind = $1 AND subject = $2 AND role = $3 AND context_value = $4",
        )
        .bind(kind.as_str())
        .bind(subject)
        .bind(role)
        .bind(context_value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The role instances a subject holds (plus those of `groups`, for users).
    pub async fn bindings(&self, kind: SubjectKind, subject: &str, groups: &[String]) -> StoreResult<Vec<RoleBinding>> {
        let rows = sqlx::query(
            "SELECT b.subject_kind, b.subject, b.context_value, r.name, r.context_type, r.description, r.schemes, r.events \
             FROM role_bindings b JOIN roles r ON r.name = b.role \
             WHERE b.subject_kind = $1 AND b.subject = $2 ORDER BY r.name, b.context_value",
        )
        .bind(kind.as_str())
        .bind(subject)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            out.push(RoleBinding { role: role(row)?, context_value: row.try_get("context_value")?, group: None });
        }
        if groups.is_empty() {
            return Ok(out);
        }
        // One query however many groups an IdP reports: bindings to groups
        // are few (an admin makes each), the groups of a user may be many.
        let rows = sqlx::query(
            "SELECT b.subject, b.context_value, r.name, r.context_type, r.description, r.schemes, r.events \
             FROM role_bindings b JOIN roles r ON r.name = b.role \
             WHERE b.subject_kind = $1 ORDER BY b.subject, r.name, b.context_value",
        )
        .bind(SubjectKind::Group.as_str())
        .fetch_all(&self.pool)
        .await?;
        let groups: std::collections::HashSet<&str> = groups.iter().map(String::as_str).collect();
        for row in &rows {
            let group: String = row.try_get("subject")?;
            if groups.contains(group.as_str()) {
                out.push(RoleBinding { role: role(row)?, context_value: row.try_get("context_value")?, group: Some(group) });
            }
        }
        Ok(out)
    }

    /// Subjects of `kind` bound to `role`.
    pub async fn role_subjects(&self, kind: SubjectKind, role: &str) -> StoreResult<Vec<String>> {
        let rows = sqlx::query("SELECT DISTINCT subject FROM role_bindings WHERE subject_kind = $1 AND role = $2 ORDER BY subject")
            .bind(kind.as_str())
            .bind(role)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(|r| Ok(r.try_get("subject")?)).collect()
    }
}
