//! Example app: `GET /?url=<url>` fetches `url` through outbound HTTP
//! (`wasi:http/outgoing-handler`, with the SDK's blocking client) and
//! answers `<status> <body>`; a refused or failed fetch answers 502 with the
//! reason. Which URLs it may reach is the `allowed_outbound_hosts` of its
//! `torii.toml`, within its pool's policy.

use app_support::respond;
use torii_plugin_sdk::http;
use wasip2::http::types::{IncomingRequest, ResponseOutparam};

struct Fetch;

wasip2::http::proxy::export!(Fetch);

impl wasip2::exports::http::incoming_handler::Guest for Fetch {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let query = request.path_with_query().unwrap_or_default();
        let Some(url) = query.split_once("url=").map(|(_, u)| decode(u.split('&').next().unwrap_or_default())) else {
            return respond(out, 400, "ask for /?url=<url>\n");
        };
        match http::get(&url) {
            Ok(r) => respond(out, 200, &format!("{} {}\n", r.status, r.text())),
            Err(e) => respond(out, 502, &format!("{e}\n")),
        }
    }
}

/// Percent-decoding of a query value (`+` is a space).
fn decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
