//! What the websocket routes (`shell`, `log_ingest`) share.

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use std::time::Duration;

/// How long a closing server waits for the client's close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Sends a close frame and waits a moment for the client's (the closing
/// handshake), so a client reading its last messages finds them all
/// instead of a reset connection.
pub(super) async fn close(mut socket: WebSocket, code: u16, reason: &str) {
    if socket.send(Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        while let Some(Ok(message)) = socket.recv().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}
