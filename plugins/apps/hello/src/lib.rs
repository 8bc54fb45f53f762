//! Example app: answers every request with a greeting naming the app
//! (`TSURU_APPNAME`) and the request path. With `ACCESS_LOG` set (to
//! anything but empty), it also prints one access-log line per request,
//! which lands in the app's log.

use app_support::respond;
use wasip2::http::types::{IncomingRequest, ResponseOutparam};

struct Hello;

wasip2::http::proxy::export!(Hello);

impl wasip2::exports::http::incoming_handler::Guest for Hello {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let app = std::env::var("TSURU_APPNAME").unwrap_or_else(|_| "an app".into());
        let path = request.path_with_query().unwrap_or_default();
        let text = format!("hello from {app} at {path}\n");
        if std::env::var_os("ACCESS_LOG").is_some_and(|v| !v.is_empty()) {
            println!("served {path}");
        }
        respond(out, 200, &text);
    }
}
