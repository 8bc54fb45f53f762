//! SAML instants (`xs:dateTime` in UTC): the SDK's date-times.

pub use torii_plugin_sdk::time::{format, now, parse};
