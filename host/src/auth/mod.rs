//! Identity: who is calling. Tokens are checked natively (never through a
//! plugin) against hashes in the store, with a short-lived cache in front.
//!
//! Token kinds, tried in tsuru's order (API-NOTES §1.2.2): login sessions,
//! user API keys, team tokens. An unknown token is ignored (the request goes
//! on unauthenticated); an expired team token fails the request.

mod identity;
mod tokens;

pub use identity::{Authenticator, Identity, Subject, TokenKind};
pub use tokens::{AGENT_APP, ServerKey, hash_token, new_generation, new_session_token, parse_authorization};
