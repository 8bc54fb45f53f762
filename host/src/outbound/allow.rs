//! Allow-lists of outbound HTTP: `scheme://host[:port]` entries, where the
//! host may be `*` (any) or `*.example.com` (any name under it) and the port
//! may be `*`. An entry without a port allows the scheme's default one.

use reqwest::Url;
use url::Host;

/// How an entry matches a URL's host.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostRule {
    /// Any host (names and addresses).
    Any,
    /// Names under this suffix (stored with its leading dot); never an address.
    Under(String),
    /// This host exactly: the entry names it literally.
    Exact(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PortRule {
    Any,
    Exact(u16),
}

/// One entry of an allow-list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowEntry {
    scheme: String,
    host: HostRule,
    port: PortRule,
    /// The entry as the operator wrote it, for messages.
    pub text: String,
}

impl AllowEntry {
    /// Parses one entry; the error says what an entry looks like.
    pub fn parse(raw: &str) -> Result<AllowEntry, String> {
        let bad = |why: &str| {
            format!("{raw:?} is not an allow entry such as https://api.example.com, http://127.0.0.1:2019 or https://*.example.com:* ({why})")
        };
        let (scheme, rest) = raw.split_once("://").ok_or_else(|| bad("no scheme"))?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return Err(bad("the scheme is http or https"));
        }
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.is_empty() || rest.contains(['/', '?', '#', '@', '\\']) {
            return Err(bad("scheme, host and port only"));
        }
        let (host, port) = match rest.strip_prefix('[') {
            Some(v6) => {
                let (inside, after) = v6.split_once(']').ok_or_else(|| bad("an unclosed [ in the host"))?;
                let port = match after {
                    "" => None,
                    p => Some(p.strip_prefix(':').ok_or_else(|| bad("text after the host"))?),
                };
                (format!("[{inside}]"), port)
            }
            None => match rest.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (rest.to_string(), None),
            },
        };
        let port = match port {
            None => PortRule::Exact(if scheme == "https" { 443 } else { 80 }),
            Some("*") => PortRule::Any,
            Some(p) => PortRule::Exact(p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| bad("the port is 1 to 65535 or *"))?),
        };
        let normal = |host: &str| -> Result<(String, bool), String> {
            let url = Url::parse(&format!("{scheme}://{host}/")).map_err(|_| bad("not a host name or address"))?;
            let is_name = matches!(url.host(), Some(Host::Domain(_)));
            Ok((url.host_str().ok_or_else(|| bad("no host"))?.to_string(), is_name))
        };
        let host = if host == "*" {
            HostRule::Any
        } else if let Some(suffix) = host.strip_prefix("*.") {
            let (suffix, is_name) = normal(suffix)?;
            if !is_name || suffix.contains('*') {
                return Err(bad("a wildcard stands for names under a domain name"));
            }
            HostRule::Under(format!(".{suffix}"))
        } else {
            let (host, _) = normal(&host)?;
            if host.contains('*') {
                return Err(bad("a wildcard is a whole host (*) or its first label (*.example.com)"));
            }
            HostRule::Exact(host)
        };
        Ok(AllowEntry { scheme, host, port, text: raw.to_string() })
    }

    /// Whether this entry lets `url` through.
    pub fn matches(&self, url: &Url) -> bool {
        let port_ok = match (self.port, url.port_or_known_default()) {
            (PortRule::Any, Some(_)) => true,
            (PortRule::Exact(p), Some(q)) => p == q,
            (_, None) => false,
        };
        let host_ok = match (&self.host, url.host(), url.host_str()) {
            (HostRule::Any, Some(_), _) => true,
            (HostRule::Under(suffix), Some(Host::Domain(name)), _) => name.len() > suffix.len() && name.ends_with(suffix.as_str()),
            (HostRule::Exact(h), _, Some(host)) => h == host,
            _ => false,
        };
        url.scheme() == self.scheme && port_ok && host_ok
    }

    /// Whether everything `other` lets through, this entry lets through too.
    pub fn covers(&self, other: &AllowEntry) -> bool {
        let port = match (self.port, other.port) {
            (PortRule::Any, _) => true,
            (PortRule::Exact(p), PortRule::Exact(q)) => p == q,
            (PortRule::Exact(_), PortRule::Any) => false,
        };
        let host = match (&self.host, &other.host) {
            (HostRule::Any, _) => true,
            (HostRule::Under(s), HostRule::Under(t)) => t.ends_with(s.as_str()),
            (HostRule::Under(s), HostRule::Exact(h)) => h.len() > s.len() && h.ends_with(s.as_str()),
            (HostRule::Exact(h), HostRule::Exact(g)) => h == g,
            _ => false,
        };
        self.scheme == other.scheme && port && host
    }

    /// Whether the entry names `url`'s host itself (not through a wildcard):
    /// only then may the host be a loopback or private address.
    pub fn names_literally(&self, url: &Url) -> bool {
        matches!(&self.host, HostRule::Exact(h) if Some(h.as_str()) == url.host_str())
    }
}

/// The entries a plugin (or an app) may reach.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList(Vec<AllowEntry>);

impl AllowList {
    pub fn parse(entries: &[String]) -> Result<AllowList, String> {
        entries.iter().map(|e| AllowEntry::parse(e)).collect::<Result<_, _>>().map(AllowList)
    }

    /// The entry that lets `url` through: one naming its host literally
    /// first, so a wildcard does not hide a literal entry.
    pub fn matching(&self, url: &Url) -> Option<&AllowEntry> {
        let mut found = self.0.iter().filter(|e| e.matches(url));
        let first = found.next()?;
        if first.names_literally(url) {
            return Some(first);
        }
        Some(found.find(|e| e.names_literally(url)).unwrap_or(first))
    }

    /// The entries of this list no entry of `bound` covers.
    pub fn outside(&self, bound: &AllowList) -> Vec<&str> {
        self.0.iter().filter(|e| !bound.0.iter().any(|b| b.covers(e))).map(|e| e.text.as_str()).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The entries as written, for messages.
    pub fn describe(&self) -> String {
        if self.0.is_empty() {
            return "nothing".into();
        }
        self.0.iter().map(|e| e.text.as_str()).collect::<Vec<_>>().join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> AllowList {
        AllowList::parse(&entries.iter().map(|e| e.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn url(u: &str) -> Url {
        Url::parse(u).unwrap()
    }

    #[test]
    fn entries_match_scheme_host_and_port() {
        let l = list(&["https://api.example.com", "http://127.0.0.1:2019", "https://*.amazonaws.com:*", "http://[::1]:8080/"]);
        for ok in [
            "https://api.example.com/v1?x=1",
            "https://API.example.com:443/",
            "http://127.0.0.1:2019/config/",
            "https://s3.amazonaws.com/b",
            "https://a.b.amazonaws.com:8443/",
            "http://[::1]:8080/",
        ] {
            assert!(l.matching(&url(ok)).is_some(), "{ok}");
        }
        for refused in [
            "http://api.example.com/",
            "https://api.example.com:8443/",
            "https://example.com/",
            "https://amazonaws.com/",
            "https://evil-amazonaws.com/",
            "http://127.0.0.1:2020/",
            "http://localhost:2019/",
            "https://s3.amazonaws.com.evil.test/",
        ] {
            assert!(l.matching(&url(refused)).is_none(), "{refused}");
        }
    }

    #[test]
    fn only_entries_without_wildcards_name_a_host_literally() {
        let l = list(&["http://*:*", "http://localhost:9000"]);
        let named = url("http://localhost:9000/");
        assert!(l.matching(&named).unwrap().names_literally(&named));
        let other = url("http://localhost:9001/");
        assert!(!l.matching(&other).unwrap().names_literally(&other));
        // A wildcard of names never stands for addresses.
        assert!(AllowEntry::parse("http://*.0.0.1").is_err());
    }

    #[test]
    fn a_list_is_within_a_bound_when_each_entry_is_covered() {
        let bound = list(&["https://*.example.com", "http://127.0.0.1:*", "https://api.other.test:8443"]);
        let inside = list(&["https://api.example.com", "https://*.eu.example.com", "http://127.0.0.1:9000", "https://api.other.test:8443"]);
        assert_eq!(inside.outside(&bound), Vec::<&str>::new());
        let beyond = list(&[
            "https://example.com",
            "https://*.example.com:*",
            "https://127.0.0.1:9000",
            "https://api.other.test",
            "http://api.example.com",
            "https://*",
        ]);
        assert_eq!(beyond.outside(&bound).len(), 6, "{:?}", beyond.outside(&bound));
        assert_eq!(list(&["http://127.0.0.1"]).outside(&AllowList::default()), vec!["http://127.0.0.1"]);
    }

    #[test]
    fn bad_entries_are_refused_with_the_shape_of_a_good_one() {
        for bad in [
            "api.example.com",
            "ftp://x",
            "https://x/path",
            "https://x:0",
            "https://x:99999",
            "https://a.*.com",
            "https://*.1.2.3.4",
            "https://u@x",
            "https://",
            "http://[::1",
        ] {
            let e = AllowEntry::parse(bad).unwrap_err();
            assert!(e.contains("is not an allow entry such as https://api.example.com"), "{bad}: {e}");
        }
    }
}
