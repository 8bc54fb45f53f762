//! Request parameters the way tsuru reads them (API-NOTES §1.3), in one place.
//!
//! Sources: the query string always; the body for POST/PUT/PATCH when it is
//! `application/x-www-form-urlencoded` (body values first); a JSON object body
//! on any method. Two lookups: [`Params::get`] by exact, case-sensitive key
//! (also the exact top-level JSON key) and [`Params::field`], which matches a
//! struct field name case-insensitively as Go's decoders do.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{Method, StatusCode, header};
use serde_json::Value;

use crate::error::ApiError;

#[derive(Debug, Default, Clone)]
pub struct Params {
    /// Form body pairs, then query pairs (Go's precedence).
    pairs: Vec<(String, String)>,
    json: Option<serde_json::Map<String, Value>>,
}

fn json_scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null => Some(String::new()),
        _ => None,
    }
}

fn json_values(v: &Value) -> Vec<String> {
    match v {
        Value::Array(items) => items.iter().filter_map(json_scalar).collect(),
        other => json_scalar(other).into_iter().collect(),
    }
}

/// Go's `url.ParseQuery` refuses bad percent-escapes; so do we.
fn check_escapes(s: &str) -> Result<(), String> {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let ok = i + 2 < bytes.len() && bytes[i + 1].is_ascii_hexdigit() && bytes[i + 2].is_ascii_hexdigit();
            if !ok {
                let end = (i + 3).min(bytes.len());
                return Err(format!("invalid URL escape {:?}", String::from_utf8_lossy(&bytes[i..end])));
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    Ok(())
}

fn parse_pairs(s: &str) -> Result<Vec<(String, String)>, String> {
    check_escapes(s)?;
    Ok(form_urlencoded::parse(s.as_bytes()).into_owned().collect())
}

impl Params {
    pub fn from_parts(query: Option<&str>, content_type: Option<&str>, method: &Method, body: &[u8]) -> Result<Params, ApiError> {
        let mut params = Params::default();
        let media = content_type.map(|c| c.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
        let body_method = matches!(*method, Method::POST | Method::PUT | Method::PATCH);
        match media.as_deref() {
            Some("application/x-www-form-urlencoded") if body_method => {
                let text = String::from_utf8_lossy(body);
                params.pairs = parse_pairs(&text).map_err(|e| ApiError::bad_request(format!("unable to decode form: {e}")))?;
            }
            Some("application/json") if !body.is_empty() => {
                match serde_json::from_slice::<Value>(body) {
                    Ok(Value::Object(map)) => params.json = Some(map),
                    Ok(_) => {
                        return Err(ApiError::bad_request(format!(
                            "unable to parse as json: {:?} - expected a JSON object",
                            String::from_utf8_lossy(body)
                        )));
                    }
                    Err(e) => {
                        return Err(ApiError::bad_request(format!(
                            "unable to parse as json: {:?} - {e}",
                            String::from_utf8_lossy(body)
                        )));
                    }
                }
            }
            _ => {}
        }
        if let Some(q) = query {
            let pairs = parse_pairs(q).map_err(|e| ApiError::bad_request(format!("unable to decode form: {e}")))?;
            params.pairs.extend(pairs);
        }
        Ok(params)
    }

    /// The first value of the exact key `key`.
    pub fn get(&self, key: &str) -> Option<String> {
        if let Some(v) = self.json.as_ref().and_then(|m| m.get(key)) {
            return json_values(v).into_iter().next();
        }
        self.pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
    }

    /// Every value of the exact key `key`.
    pub fn all(&self, key: &str) -> Vec<String> {
        let mut out: Vec<String> = self.json.as_ref().and_then(|m| m.get(key)).map(json_values).unwrap_or_default();
        out.extend(self.pairs.iter().filter(|(k, _)| k == key).map(|(_, v)| v.clone()));
        out
    }

    /// A struct field, matched case-insensitively.
    pub fn field(&self, name: &str) -> Option<String> {
        if let Some(map) = &self.json
            && let Some((_, v)) = map.iter().find(|(k, _)| k.eq_ignore_ascii_case(name))
        {
            return json_scalar(v);
        }
        self.pairs.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone())
    }

    /// A slice field: a JSON array, or form keys `Name.0`, `Name.1`, … (or the
    /// bare repeated key), case-insensitively.
    pub fn field_list(&self, name: &str) -> Vec<String> {
        if let Some(map) = &self.json
            && let Some((_, v)) = map.iter().find(|(k, _)| k.eq_ignore_ascii_case(name))
        {
            return json_values(v);
        }
        let mut indexed: Vec<(usize, String)> = Vec::new();
        let mut bare = Vec::new();
        for (k, v) in &self.pairs {
            if k.eq_ignore_ascii_case(name) {
                bare.push(v.clone());
            } else if let Some((head, idx)) = k.rsplit_once('.')
                && head.eq_ignore_ascii_case(name)
                && let Ok(i) = idx.parse::<usize>()
            {
                indexed.push((i, v.clone()));
            }
        }
        indexed.sort_by_key(|(i, _)| *i);
        bare.extend(indexed.into_iter().map(|(_, v)| v));
        bare
    }

    /// A map field: a JSON object, or form keys `Name.<key>` (the prefix
    /// matched case-insensitively, the key kept as sent).
    pub fn field_map(&self, name: &str) -> std::collections::BTreeMap<String, String> {
        let mut out = std::collections::BTreeMap::new();
        if let Some(map) = &self.json
            && let Some((_, Value::Object(obj))) = map.iter().find(|(k, _)| k.eq_ignore_ascii_case(name))
        {
            for (k, v) in obj {
                if let Some(v) = json_scalar(v) {
                    out.insert(k.clone(), v);
                }
            }
            return out;
        }
        for (k, v) in &self.pairs {
            if let Some((head, key)) = k.split_once('.')
                && head.eq_ignore_ascii_case(name)
                && !key.is_empty()
            {
                out.entry(key.to_string()).or_insert_with(|| v.clone());
            }
        }
        out
    }

    /// The raw JSON value of a top-level field (case-insensitive), for JSON bodies.
    pub fn json_field(&self, name: &str) -> Option<&Value> {
        self.json.as_ref()?.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v)
    }

    /// A nested field `outer.inner`: the JSON object's key, or the form key,
    /// both matched case-insensitively.
    pub fn nested(&self, outer: &str, inner: &str) -> Option<String> {
        if let Some(map) = &self.json
            && let Some((_, Value::Object(obj))) = map.iter().find(|(k, _)| k.eq_ignore_ascii_case(outer))
        {
            return obj.iter().find(|(k, _)| k.eq_ignore_ascii_case(inner)).and_then(|(_, v)| json_scalar(v));
        }
        self.field(&format!("{outer}.{inner}"))
    }

    /// A list of `{name, value, delete}` items (app metadata), from JSON or
    /// from form keys `outer.inner.N.name` / `.value` / `.delete`.
    pub fn named_items(&self, outer: &str, inner: &str) -> Vec<(String, String, bool)> {
        if let Some(map) = &self.json
            && let Some((_, Value::Object(obj))) = map.iter().find(|(k, _)| k.eq_ignore_ascii_case(outer))
        {
            let items = obj.iter().find(|(k, _)| k.eq_ignore_ascii_case(inner)).map(|(_, v)| v);
            return match items {
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|i| {
                        let get = |k: &str| i.get(k).and_then(json_scalar).unwrap_or_default();
                        (get("name"), get("value"), i.get("delete").and_then(Value::as_bool).unwrap_or(false))
                    })
                    .collect(),
                _ => vec![],
            };
        }
        let mut out: std::collections::BTreeMap<usize, (String, String, bool)> = Default::default();
        for (k, v) in &self.pairs {
            let parts: Vec<&str> = k.split('.').collect();
            if let [o, i, idx, field] = parts.as_slice()
                && o.eq_ignore_ascii_case(outer)
                && i.eq_ignore_ascii_case(inner)
                && let Ok(idx) = idx.parse::<usize>()
            {
                let entry = out.entry(idx).or_default();
                match field.to_ascii_lowercase().as_str() {
                    "name" => entry.0 = v.clone(),
                    "value" => entry.1 = v.clone(),
                    "delete" => entry.2 = parse_bool(v).unwrap_or(false),
                    _ => {}
                }
            }
        }
        out.into_values().collect()
    }

    /// tsuru's tags: the `tags` slice field, then the legacy repeated `tag`
    /// key appended; trimmed, de-duplicated, empties dropped. At most
    /// `MAX_TAGS` of them, each a printable name (`names`).
    pub fn tags(&self) -> Result<Vec<String>, ApiError> {
        use super::names::{MAX_NAME, MAX_TAGS, printable};
        let mut out: Vec<String> = Vec::new();
        let mut raw = self.field_list("tags");
        raw.extend(self.all("tag"));
        for t in raw {
            let t = t.trim().to_string();
            if t.is_empty() || out.contains(&t) {
                continue;
            }
            if !printable(&t, MAX_NAME) {
                return Err(ApiError::bad_request(format!("invalid tag {:?}: at most {MAX_NAME} printable characters", t.chars().take(MAX_NAME).collect::<String>())));
            }
            out.push(t);
            if out.len() > MAX_TAGS {
                return Err(ApiError::bad_request(format!("too many tags: at most {MAX_TAGS}")));
            }
        }
        Ok(out)
    }

    /// An optional boolean struct field, decoded as Go decodes a pointer: absent
    /// is `None`, present but empty is `Some(false)`, otherwise Go's booleans.
    pub fn optional_bool(&self, key: &str) -> Result<Option<bool>, ApiError> {
        match self.field(key) {
            None => Ok(None),
            Some(raw) if raw.is_empty() => Ok(Some(false)),
            Some(raw) => parse_bool(&raw)
                .map(Some)
                .ok_or_else(|| ApiError::bad_request(format!("unable to decode form: invalid {key} {raw:?}"))),
        }
    }

    /// All pairs, for handing a login form to the auth scheme.
    pub fn pairs(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some(map) = &self.json {
            for (k, v) in map {
                if let Some(s) = json_scalar(v) {
                    out.push((k.clone(), s));
                }
            }
        }
        out.extend(self.pairs.iter().cloned());
        out
    }
}

/// Go's `strconv.ParseBool`.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

impl<S: Send + Sync> FromRequest<S> for Params {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let method = req.method().clone();
        let query = req.uri().query().map(str::to_owned);
        let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "request body too large")
            } else {
                ApiError::bad_request(format!("cannot read request body: {e}"))
            }
        })?;
        Params::from_parts(query.as_deref(), content_type.as_deref(), &method, &body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(body: &str, query: Option<&str>) -> Params {
        Params::from_parts(query, Some("application/x-www-form-urlencoded"), &Method::POST, body.as_bytes()).unwrap()
    }

    #[test]
    fn body_wins_over_query_and_keys_are_exact() {
        let p = form("name=body&Tags.1=b&tags.0=a&tag=x", Some("name=query&NoRestart=1"));
        assert_eq!(p.get("name").as_deref(), Some("body"));
        assert_eq!(p.get("Name"), None);
        assert_eq!(p.field("NAME").as_deref(), Some("body"));
        assert_eq!(p.field_list("tags"), vec!["a", "b"]);
        assert_eq!(p.all("tag"), vec!["x"]);
        assert_eq!(p.get("NoRestart").as_deref(), Some("1"));
    }

    #[test]
    fn delete_bodies_are_not_parsed_as_forms() {
        let p = Params::from_parts(Some("user=a"), Some("application/x-www-form-urlencoded"), &Method::DELETE, b"user=b").unwrap();
        assert_eq!(p.get("user").as_deref(), Some("a"));
    }

    #[test]
    fn json_bodies_are_read_by_exact_key_and_by_field() {
        let p = Params::from_parts(None, Some("application/json; charset=utf-8"), &Method::POST, br#"{"Email":"a@b.co","n":3,"tags":["x","y"]}"#).unwrap();
        assert_eq!(p.get("email"), None);
        assert_eq!(p.field("email").as_deref(), Some("a@b.co"));
        assert_eq!(p.get("n").as_deref(), Some("3"));
        assert_eq!(p.all("tags"), vec!["x", "y"]);
    }

    #[test]
    fn malformed_input_is_a_400() {
        let e = Params::from_parts(None, Some("application/json"), &Method::POST, b"{nope").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.starts_with("unable to parse as json: \"{nope\" - "), "{}", e.message);
        let e = Params::from_parts(None, Some("application/x-www-form-urlencoded"), &Method::POST, b"a=%zz").unwrap_err();
        assert_eq!(e.message, "unable to decode form: invalid URL escape \"%zz\"");
    }

    #[test]
    fn post_without_content_type_is_not_parsed() {
        let p = Params::from_parts(None, None, &Method::POST, b"a=b").unwrap();
        assert_eq!(p.get("a"), None);
    }
}
