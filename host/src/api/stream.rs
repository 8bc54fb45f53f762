//! `application/x-json-stream` responses (API-NOTES §1.6.1): one JSON object
//! per line, `{"Message":…,"Timestamp":…}`, a bare newline as keep-alive after
//! a quiet period, and a failure after the start as a last line carrying
//! `Error` while the status stays 200.

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde::Serialize;
use std::future::Future;
use std::time::Duration;
use tokio::sync::mpsc;

pub const KEEPALIVE: Duration = Duration::from_secs(30);
/// Node operations use a shorter keep-alive.
pub const NODE_KEEPALIVE: Duration = Duration::from_secs(15);

#[derive(Serialize)]
struct Line<'a> {
    #[serde(rename = "Message")]
    message: &'a str,
    #[serde(rename = "Timestamp")]
    timestamp: String,
    #[serde(rename = "Error", skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

fn timestamp() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// Tsuru's JSON encoder escapes `<`, `>` and `&` inside strings (JSON has
/// them nowhere else). One pass; no copy when there is nothing to escape.
pub fn escape_html(json: String) -> String {
    let Some(first) = memchr::memchr3(b'<', b'>', b'&', json.as_bytes()) else { return json };
    let mut out = String::with_capacity(json.len() + 16);
    out.push_str(&json[..first]);
    for c in json[first..].chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            c => out.push(c),
        }
    }
    out
}

fn encode(message: &str, error: Option<&str>) -> Bytes {
    let line = Line { message, timestamp: timestamp(), error };
    let mut text = escape_html(serde_json::to_string(&line).expect("serialisable"));
    text.push('\n');
    Bytes::from(text)
}

/// The writing end handed to the work of a streaming endpoint.
#[derive(Clone)]
pub struct StreamWriter {
    tx: mpsc::Sender<Bytes>,
}

impl StreamWriter {
    /// Sends one progress message. Returns false once the client has gone.
    pub async fn message(&self, text: &str) -> bool {
        self.tx.send(encode(text, None)).await.is_ok()
    }

    async fn fail(&self, error: &str) {
        let _ = self.tx.send(encode("", Some(error))).await;
    }
}

/// Starts a stream whose body is produced by `work`; an `Err` from it becomes
/// the terminal error line.
pub fn json_stream<F, Fut>(status: StatusCode, keepalive: Duration, work: F) -> Response
where
    F: FnOnce(StreamWriter) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let (work_tx, work_rx) = mpsc::channel::<Bytes>(64);
    let writer = StreamWriter { tx: work_tx };
    tokio::spawn(async move {
        if let Err(e) = work(writer.clone()).await {
            writer.fail(&e).await;
        }
    });
    // A bare newline after `keepalive` of silence (another first if the last
    // byte sent was not one).
    let body = keepalive_body(work_rx, keepalive, |last_newline| Bytes::from_static(if last_newline { b"\n" } else { b"\n\n" }));
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-json-stream"));
    response
}

/// The writing end of a raw text stream (deploy, API-NOTES §1.6.2).
#[derive(Clone)]
pub struct TextWriter {
    tx: mpsc::Sender<Bytes>,
}

impl TextWriter {
    /// Writes `text` as it is. Returns false once the client has gone.
    pub async fn write(&self, text: &str) -> bool {
        self.tx.send(Bytes::from(text.to_string())).await.is_ok()
    }
}

/// Starts a raw text stream (`Content-Type: text`) produced by `work`;
/// `please wait...` lines keep a quiet connection alive.
pub fn text_stream<F, Fut>(keepalive: Duration, headers: &[(&'static str, String)], work: F) -> Response
where
    F: FnOnce(TextWriter) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (work_tx, work_rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(work(TextWriter { tx: work_tx }));
    let mut response = Response::new(keepalive_body(work_rx, keepalive, |_| Bytes::from_static(b"please wait...\n")));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text"));
    for (name, value) in headers {
        if let Ok(v) = HeaderValue::from_str(value) {
            response.headers_mut().insert(*name, v);
        }
    }
    response
}

/// A body forwarding what the work writes, and `keepalive_bytes(last byte
/// sent was a newline)` after each `keepalive` of silence.
fn keepalive_body(mut work_rx: mpsc::Receiver<Bytes>, keepalive: Duration, keepalive_bytes: impl Fn(bool) -> Bytes + Send + 'static) -> Body {
    let (body_tx, body_rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    tokio::spawn(async move {
        let mut last_newline = true;
        loop {
            let bytes = match tokio::time::timeout(keepalive, work_rx.recv()).await {
                Ok(Some(bytes)) => bytes,
                Ok(None) => return,
                Err(_) => keepalive_bytes(last_newline),
            };
            last_newline = bytes.ends_with(b"\n");
            if body_tx.send(Ok(bytes)).await.is_err() {
                return;
            }
        }
    });
    Body::from_stream(receiver_stream(body_rx))
}

pub(super) fn receiver_stream<T: Send + 'static>(mut rx: mpsc::Receiver<T>) -> impl futures_util::Stream<Item = T> + Send {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_characters_are_escaped_as_go_does() {
        assert_eq!(escape_html(r#"{"a":"<b>&é","c":1}"#.to_string()), r#"{"a":"\u003cb\u003e\u0026é","c":1}"#);
        assert_eq!(escape_html(r#"{"a":"plain"}"#.to_string()), r#"{"a":"plain"}"#);
    }
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn messages_keepalives_and_terminal_error() {
        let response = json_stream(StatusCode::OK, Duration::from_millis(50), |w| async move {
            w.message("step <1>\n").await;
            tokio::time::sleep(Duration::from_millis(130)).await;
            w.message("step 2\n").await;
            Err("it broke".to_string())
        });
        assert_eq!(response.headers()["content-type"], "application/x-json-stream");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8(body.to_vec()).unwrap();
        let lines: Vec<&str> = text.split('\n').collect();
        assert!(lines[0].starts_with(r#"{"Message":"step \u003c1\u003e\n","Timestamp":""#), "{text}");
        assert!(lines.iter().filter(|l| l.is_empty()).count() >= 2, "keep-alives missing: {text:?}");
        let objects: Vec<serde_json::Value> =
            lines.iter().filter(|l| !l.is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(objects.len(), 3);
        assert_eq!(objects[1]["Message"], "step 2\n");
        assert!(objects[1].get("Error").is_none());
        assert_eq!(objects[2]["Message"], "");
        assert_eq!(objects[2]["Error"], "it broke");
    }
}
