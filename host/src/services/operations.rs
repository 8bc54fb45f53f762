//! Provider operations that go on after their answer (OSB's asynchronous
//! provision, update and deprovision): every `[services] poll_interval_ms`
//! each instance with an operation is asked about it (`last-operation`)
//! until it ends or `[services] operation_timeout_secs` pass.
//! A finished creation makes the instance ready; a finished removal forgets
//! it; a failure is recorded on the instance (status shows it).

use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::plugin::service_broker::OperationState;
use crate::server::Server;
use crate::store::{InstanceRecord, InstanceState, now_millis};

/// Starts the rounds; they end when the server is gone.
pub fn start(server: Weak<Server>, every: Duration) {
    crate::server::rounds(server, every, |server| Box::pin(async move { poll(&server).await }));
}

/// One round: every instance with an operation, asked once.
pub async fn poll(server: &Arc<Server>) {
    let instances = match server.store.instances_in_operation().await {
        Ok(list) => list,
        Err(e) => {
            tracing::warn!(error = %e, "services: cannot read the operations in progress");
            return;
        }
    };
    for i in instances {
        settle(server, i).await;
    }
}

/// Asks about `i`'s operation and records what it says.
pub async fn settle(server: &Server, mut i: InstanceRecord) {
    let timeout = Duration::from_secs(server.config.services.operation_timeout_secs);
    let late = now_millis() - i.operation_since > i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
    let state = match super::resolve(server, &i.service).await {
        Err(e) => Err(e.message),
        Ok(resolved) => match super::provider(server, &resolved) {
            Err(e) => Err(e.message),
            Ok((plugin, provider)) => {
                let asked = plugin.last_operation(provider, super::instance(&resolved, &i), i.operation.clone()).await;
                asked.map_err(|e| e.message)
            }
        },
    };
    let outcome = match state {
        Ok(OperationState::InProgress(_)) if !late => return,
        Ok(OperationState::InProgress(d)) => Err(format!("the operation did not end within {} s ({d})", timeout.as_secs())),
        Ok(OperationState::Succeeded) => Ok(()),
        Ok(OperationState::Failed(why)) => Err(why),
        Err(e) if !late => {
            tracing::debug!(instance = %i.name, error = %e, "services: an operation's state could not be read; asked again next round");
            return;
        }
        Err(e) => Err(format!("the operation's state could not be read within {} s: {e}", timeout.as_secs())),
    };
    let was = i.state;
    let previous = std::mem::take(&mut i.previous);
    i.operation.clear();
    i.operation_since = 0;
    let written = match (was, outcome) {
        (InstanceState::Removing, Ok(())) => server.store.delete_instance(&i.service, &i.name).await,
        (_, Ok(())) => {
            i.state = InstanceState::Ready;
            i.message.clear();
            server.store.update_instance(&i).await
        }
        (InstanceState::Creating, Err(why)) => {
            i.state = InstanceState::Failed;
            i.message = why;
            server.store.update_instance(&i).await
        }
        // A failed update or removal leaves the instance as it was.
        (_, Err(why)) => {
            if was == InstanceState::Updating {
                i.restore(&previous);
            }
            i.state = InstanceState::Ready;
            i.message = why;
            server.store.update_instance(&i).await
        }
    };
    if let Err(e) = written {
        tracing::warn!(instance = %i.name, error = %e, "services: an operation's end could not be recorded");
    }
}
