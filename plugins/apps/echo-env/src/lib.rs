//! Example app: answers with the environment variables it was given, one
//! `NAME=value` line each, sorted; `?name=X` answers only X's value.

use app_support::respond;
use wasip2::http::types::{IncomingRequest, ResponseOutparam};

struct EchoEnv;

wasip2::http::proxy::export!(EchoEnv);

impl wasip2::exports::http::incoming_handler::Guest for EchoEnv {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let query = request.path_with_query().unwrap_or_default();
        let wanted = query.split_once("?name=").map(|(_, n)| n.to_string());
        let text = match wanted {
            Some(name) => match std::env::var(&name) {
                Ok(value) => format!("{value}\n"),
                Err(_) => return respond(out, 404, &format!("{name} is not set\n")),
            },
            None => {
                let mut vars: Vec<(String, String)> = std::env::vars().collect();
                vars.sort();
                vars.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
            }
        };
        respond(out, 200, &text);
    }
}
