//! An app's desired state as the converge path (`crate::apps`) records it:
//! the app's editable fields and deploy count, its versions with their
//! processes, and the routes its provisioner last answered. Recording a
//! state and putting back an earlier one are the same write, so every
//! change has its undo.

use super::{AppRecord, RouteRecord, Store, StoreResult, VersionRecord, json_list};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub app: AppRecord,
    /// Oldest first.
    pub versions: Vec<VersionRecord>,
    /// What the router serves, as the provisioner answered it.
    pub routes: Vec<RouteRecord>,
}

impl Desired {
    pub fn version(&self, number: i64) -> Option<&VersionRecord> {
        self.versions.iter().find(|v| v.version == number)
    }

    pub fn version_mut(&mut self, number: i64) -> Option<&mut VersionRecord> {
        self.versions.iter_mut().find(|v| v.version == number)
    }

    pub fn routable(&self) -> impl Iterator<Item = &VersionRecord> {
        self.versions.iter().filter(|v| v.routable)
    }
}

impl Store {
    /// `app`'s desired state now; `None` when there is no such app.
    pub async fn desired(&self, app: &str) -> StoreResult<Option<Desired>> {
        let Some(record) = self.app(app).await? else { return Ok(None) };
        Ok(Some(Desired { app: record, versions: self.versions(app).await?, routes: self.routes(app).await? }))
    }

    /// Writes `to` as its app's desired state in one transaction, where
    /// `from` is the state recorded now (read under the app's lock): the
    /// app's editable fields and deploy count when they differ, and the
    /// versions that differ (versions `to` lacks are removed). Routes are
    /// the provisioner's answer: [`Store::set_routes`] writes them. Putting
    /// `from` back after `to` is the same write the other way round.
    pub async fn record_desired(&self, from: &Desired, to: &Desired) -> StoreResult<()> {
        let a = &to.app;
        let stale = self.views.stale(&a.name);
        let mut tx = self.pool.begin().await?;
        if from.app != to.app {
            Store::write_app(&mut tx, &from.app, a).await?;
        }
        Store::write_versions(&mut tx, &a.name, &from.versions, &to.versions).await?;
        tx.commit().await?;
        // The app row (its teams, the joins on its plan and pool) is read
        // again when it changed; versions alone are patched in.
        if from.app == to.app {
            let (from, to) = (from.versions.clone(), to.versions.clone());
            stale.patched(move |view| {
                view.versions.retain(|v| to.iter().any(|t| t.version == v.version) || !from.iter().any(|f| f.version == v.version));
                for v in to.iter().filter(|v| !from.contains(v)) {
                    match view.versions.iter_mut().find(|held| held.version == v.version) {
                        Some(held) => *held = v.clone(),
                        None => view.versions.push(v.clone()),
                    }
                }
                view.versions.sort_by_key(|v| v.version);
            });
        }
        Ok(())
    }

    /// Writes the app row `a`, and the team grants that differ from
    /// `from`'s (the owner team's, given when it became the owner). A
    /// change that leaves the teams alone touches no grant: a team whose
    /// access was revoked, the owner team too, stays revoked (tsuru's rule).
    async fn write_app(tx: &mut sqlx::Transaction<'_, sqlx::Any>, from: &AppRecord, a: &AppRecord) -> StoreResult<()> {
        let done = sqlx::query(
            "UPDATE apps SET platform = $1, platform_version = $2, team_owner = $3, pool = $4, plan = $5, \
             override_memory = $6, override_cpumilli = $7, description = $8, tags = $9, metadata = $10, deploys = $11 \
             WHERE name = $12",
        )
        .bind(&a.platform)
        .bind(&a.platform_version)
        .bind(&a.team_owner)
        .bind(&a.pool)
        .bind(&a.plan)
        .bind(a.override_memory)
        .bind(a.override_cpumilli)
        .bind(&a.description)
        .bind(json_list(&a.tags))
        .bind(serde_json::to_string(&a.metadata).expect("serialisable"))
        .bind(a.deploys)
        .bind(&a.name)
        .execute(&mut **tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(super::StoreError::NotFound(format!("App {} not found.", a.name)));
        }
        for team in a.teams.iter().filter(|t| !from.teams.contains(t)) {
            sqlx::query("INSERT INTO app_teams (app, team) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                .bind(&a.name)
                .bind(team)
                .execute(&mut **tx)
                .await?;
        }
        for team in from.teams.iter().filter(|t| !a.teams.contains(t)) {
            sqlx::query("DELETE FROM app_teams WHERE app = $1 AND team = $2").bind(&a.name).bind(team).execute(&mut **tx).await?;
        }
        Ok(())
    }
}
