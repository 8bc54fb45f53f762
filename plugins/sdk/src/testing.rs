//! Test doubles of the host capabilities, for plugin logic tested natively
//! (`cargo test` on the build machine, not in torii): built for every
//! target but `wasm32`, where [`crate::kv`], [`crate::log`],
//! [`crate::proxy`] and [`crate::http`] reach these instead of the host.
//! Each test thread has its own doubles; [`reset`] empties them.
//!
//! ```ignore
//! torii_plugin_sdk::testing::on_http(|req| Ok(Response { status: 200, headers: vec![], body: b"ok".to_vec() }));
//! let routes = my_router.ensure(&route)?;
//! assert_eq!(torii_plugin_sdk::testing::requests()[0].url, "http://127.0.0.1:9000/backend/web");
//! ```

use crate::http::{HttpError, Request, Response};
use std::cell::RefCell;
use std::collections::BTreeMap;

type Handler = Box<dyn Fn(&Request) -> Result<Response, HttpError>>;

#[derive(Default)]
struct Doubles {
    kv: BTreeMap<String, Vec<u8>>,
    log: Vec<String>,
    /// (router, app) → hosts and the versions of the backends.
    proxy: BTreeMap<(String, String), (Vec<String>, Vec<u32>)>,
    http: Option<Handler>,
    requests: Vec<Request>,
}

thread_local! {
    static DOUBLES: RefCell<Doubles> = RefCell::new(Doubles::default());
}

/// Empties every double of this thread.
pub fn reset() {
    DOUBLES.with(|d| *d.borrow_mut() = Doubles::default());
}

/// What the plugin stored in its kv.
pub fn kv() -> BTreeMap<String, Vec<u8>> {
    DOUBLES.with(|d| d.borrow().kv.clone())
}

/// The lines the plugin logged, as `level: message`.
pub fn log_lines() -> Vec<String> {
    DOUBLES.with(|d| d.borrow().log.clone())
}

/// The proxy table the plugin wrote: (router, app) → (hosts, backend versions).
pub fn proxy_table() -> BTreeMap<(String, String), (Vec<String>, Vec<u32>)> {
    DOUBLES.with(|d| d.borrow().proxy.clone())
}

/// Answers the plugin's outbound requests with `handler` (without one,
/// every request fails as the host refuses a plugin without the grant).
pub fn on_http(handler: impl Fn(&Request) -> Result<Response, HttpError> + 'static) {
    DOUBLES.with(|d| d.borrow_mut().http = Some(Box::new(handler)));
}

/// The outbound requests the plugin sent, in order.
pub fn requests() -> Vec<Request> {
    DOUBLES.with(|d| d.borrow().requests.clone())
}

pub(crate) fn kv_get(key: &str) -> Result<Option<Vec<u8>>, String> {
    Ok(DOUBLES.with(|d| d.borrow().kv.get(key).cloned()))
}

pub(crate) fn kv_set(key: &str, value: &[u8]) -> Result<(), String> {
    DOUBLES.with(|d| d.borrow_mut().kv.insert(key.to_string(), value.to_vec()));
    Ok(())
}

pub(crate) fn kv_set_if_absent(key: &str, value: &[u8]) -> Result<bool, String> {
    Ok(DOUBLES.with(|d| {
        let kv = &mut d.borrow_mut().kv;
        if kv.contains_key(key) {
            return false;
        }
        kv.insert(key.to_string(), value.to_vec());
        true
    }))
}

pub(crate) fn kv_delete(key: &str) -> Result<(), String> {
    DOUBLES.with(|d| d.borrow_mut().kv.remove(key));
    Ok(())
}

pub(crate) fn kv_list(prefix: &str) -> Result<Vec<String>, String> {
    Ok(DOUBLES.with(|d| d.borrow().kv.keys().filter(|k| k.starts_with(prefix)).cloned().collect()))
}

pub(crate) fn log(level: &str, message: &str) {
    DOUBLES.with(|d| d.borrow_mut().log.push(format!("{level}: {message}")));
}

pub(crate) fn proxy_set(router: &str, app: &str, hosts: &[String], versions: Vec<u32>) -> Result<(), String> {
    DOUBLES.with(|d| d.borrow_mut().proxy.insert((router.to_string(), app.to_string()), (hosts.to_vec(), versions)));
    Ok(())
}

pub(crate) fn proxy_remove(router: &str, app: &str) -> Result<(), String> {
    DOUBLES.with(|d| d.borrow_mut().proxy.remove(&(router.to_string(), app.to_string())));
    Ok(())
}

pub(crate) fn send(request: &Request) -> Result<Response, HttpError> {
    DOUBLES.with(|d| {
        d.borrow_mut().requests.push(request.clone());
        let d = d.borrow();
        match &d.http {
            Some(handler) => handler(request),
            None => Err(HttpError(format!("{} {}: no test double answers outbound HTTP (testing::on_http)", request.method, request.url))),
        }
    })
}
