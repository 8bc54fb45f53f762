//! Example app: answers every request with a greeting naming the app
//! (`TSURU_APPNAME`) and the request path.

use wasip2::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

struct Hello;

wasip2::http::proxy::export!(Hello);

impl wasip2::exports::http::incoming_handler::Guest for Hello {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let app = std::env::var("TSURU_APPNAME").unwrap_or_else(|_| "an app".into());
        let path = request.path_with_query().unwrap_or_default();
        let text = format!("hello from {app} at {path}\n");
        // One access-log line on stdout: it lands in the app's log.
        println!("served {path}");
        respond(out, 200, &text);
    }
}

fn respond(out: ResponseOutparam, status: u16, text: &str) {
    let headers = Fields::from_list(&[("content-type".into(), b"text/plain; charset=utf-8".to_vec())]).unwrap_or_else(|_| Fields::new());
    let response = OutgoingResponse::new(headers);
    let _ = response.set_status_code(status);
    let Ok(body) = response.body() else { return };
    ResponseOutparam::set(out, Ok(response));
    if let Ok(stream) = body.write() {
        // The client may have gone away: a failed write is not the app's fault.
        let _ = stream.blocking_write_and_flush(text.as_bytes());
    }
    let _ = OutgoingBody::finish(body, None);
}
