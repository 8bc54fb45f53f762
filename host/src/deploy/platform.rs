//! A platform's image, built when the platform is added or updated: every
//! pool's provisioner that builds images builds it on the pool's nodes
//! (`build-platform`), so a Dockerfile that does not build fails there and
//! then, not at an app's first deploy; app builds onto the platform reuse its
//! layers from the engines' cache. Pools whose provisioner builds nothing
//! (WASM) are skipped; a pool without nodes builds nothing.

use super::{Stored, build_context};
use crate::apps::Progress;
use crate::error::{ApiError, ApiResult};
use crate::plugin::provisioner::{ProvisionError, Refusal};
use crate::server::Server;
use std::collections::BTreeMap;

/// Builds version `version` of platform `name` on every pool that builds
/// images; progress to `out`. How many pools built it.
pub async fn build(server: &Server, name: &str, version: i64, dockerfile: &str, args: &BTreeMap<String, String>, out: &impl Progress) -> ApiResult<usize> {
    let context = build_context(dockerfile, None).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let stored = Stored::put(server, &context).await.map_err(|e| ApiError::internal(e.to_string()))?;
    let result = build_on_pools(server, name, version, &stored.digest, args, out).await;
    stored.forget(server).await;
    result
}

async fn build_on_pools(server: &Server, name: &str, version: i64, context: &str, args: &BTreeMap<String, String>, out: &impl Progress) -> ApiResult<usize> {
    let version = u32::try_from(version).map_err(|_| ApiError::internal(format!("platform version {version} out of range")))?;
    let args: Vec<(String, String)> = args.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let mut built = 0;
    for pool in server.store.pools().await? {
        if server.store.pool_nodes(&pool.name).await?.is_empty() {
            continue;
        }
        let Some(provisioner) = server.provisioners.get(server.config.pool_provisioner(&pool.provisioner)) else { continue };
        match provisioner.build_platform(&pool.name, name, version, context, args.clone()).await {
            Ok(lines) => {
                for line in lines {
                    out.line(line).await;
                }
                built += 1;
            }
            Err(ProvisionError::Refused(Refusal::Unsupported(_))) => {}
            Err(e) => {
                return Err(ApiError::new(e.status(), format!("platform {name} does not build in pool {}: {e}", pool.name)));
            }
        }
    }
    Ok(built)
}
