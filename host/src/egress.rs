//! The egress rule: every request the host sends to a URL a user gave
//! (webhook deliveries and their proxies, `archive-url` downloads, later the
//! outbound HTTP of plugins) goes through [`Egress::send`].
//!
//! - Only `http` and `https`.
//! - The host resolves the name itself and refuses loopback, private,
//!   link-local (cloud metadata included), shared, multicast and reserved
//!   addresses, unless the URL's origin is listed exactly in `[egress] allow`
//!   (`"http://127.0.0.1:9000"`: scheme, host and port).
//! - The connection goes to the address that was checked (the client is
//!   pinned to it), so a name that resolves differently a moment later
//!   cannot slip through.
//! - Redirects are followed only when asked, at most [`MAX_REDIRECTS`], each
//!   hop checked again; otherwise a 3xx is the answer.
//! - Errors say what failed in general words: the host is no port scanner.

use reqwest::{Method, Url};
use reqwest::header::{HeaderMap, LOCATION};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// Redirect hops followed by a request that follows them.
pub const MAX_REDIRECTS: usize = 5;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum EgressError {
    #[error("{0} is not a valid http or https URL")]
    BadUrl(String),
    #[error("{0} is not an allowed destination")]
    Refused(String),
    #[error("{0} could not be resolved")]
    Unresolved(String),
    #[error("the request to {0} timed out")]
    Timeout(String),
    #[error("the request to {0} failed")]
    Failed(String),
    #[error("{0} redirected more than {MAX_REDIRECTS} times")]
    TooManyRedirects(String),
}

/// An origin the operator allows whatever its address: scheme, host, port.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    fn of(url: &Url) -> Option<Origin> {
        Some(Origin {
            scheme: url.scheme().to_ascii_lowercase(),
            host: url.host_str()?.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase(),
            port: url.port_or_known_default()?,
        })
    }
}

/// The host's egress rule, from `[egress]`.
#[derive(Debug, Clone, Default)]
pub struct Egress {
    allow: Vec<Origin>,
}

/// One request through the rule.
pub struct Request {
    pub method: Method,
    pub url: String,
    pub headers: HeaderMap,
    pub body: Option<Vec<u8>>,
    /// A proxy to send the request through; it passes the rule too.
    pub proxy: Option<String>,
    /// Accept any TLS certificate (webhooks' `insecure`).
    pub insecure: bool,
    pub timeout: Duration,
    /// Follow redirects (each hop checked); otherwise a 3xx is the answer.
    pub follow: bool,
}

impl Request {
    pub fn get(url: &str, timeout: Duration) -> Request {
        Request {
            method: Method::GET,
            url: url.to_string(),
            headers: HeaderMap::new(),
            body: None,
            proxy: None,
            insecure: false,
            timeout,
            follow: true,
        }
    }
}

impl Egress {
    /// The rule allowing `allow` (origins such as `http://127.0.0.1:9000`).
    pub fn new(allow: &[String]) -> Result<Egress, String> {
        let mut origins = Vec::with_capacity(allow.len());
        for entry in allow {
            let url = Url::parse(entry).map_err(|e| format!("{entry:?} is not an origin such as http://127.0.0.1:9000: {e}"))?;
            if !matches!(url.scheme(), "http" | "https") || url.path() != "/" || url.query().is_some() {
                return Err(format!("{entry:?} is not an origin such as http://127.0.0.1:9000 (scheme, host and port only)"));
            }
            origins.push(Origin::of(&url).ok_or_else(|| format!("{entry:?} names no host"))?);
        }
        Ok(Egress { allow: origins })
    }

    fn allowed_origin(&self, url: &Url) -> bool {
        Origin::of(url).is_some_and(|o| self.allow.contains(&o))
    }

    /// Parses `raw` as an http(s) URL; the wire form of the error names it.
    pub fn parse(raw: &str) -> Result<Url, EgressError> {
        match Url::parse(raw) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Ok(u),
            _ => Err(EgressError::BadUrl(raw.to_string())),
        }
    }

    /// The addresses `url` may be reached at: every address its host resolves
    /// to must be allowed (a name with one private address is refused whole).
    pub async fn check(&self, url: &Url) -> Result<Vec<SocketAddr>, EgressError> {
        if url.host_str().is_none() || url.port_or_known_default().is_none() {
            return Err(EgressError::BadUrl(url.to_string()));
        }
        let shown = display_origin(url);
        let addrs = resolve(url, Duration::from_secs(5)).await;
        if addrs.is_empty() {
            return Err(EgressError::Unresolved(shown));
        }
        if !self.allowed_origin(url) && addrs.iter().any(|a| !is_public(a.ip())) {
            return Err(EgressError::Refused(shown));
        }
        Ok(addrs)
    }

    /// Sends `req` under the rule (see the module docs).
    pub async fn send(&self, req: Request) -> Result<reqwest::Response, EgressError> {
        let mut url = Egress::parse(&req.url)?;
        let proxy = match &req.proxy {
            Some(p) if !p.is_empty() => {
                let proxy_url = Egress::parse(p)?;
                let addrs = self.check(&proxy_url).await?;
                Some((proxy_url, addrs))
            }
            _ => None,
        };
        let (mut method, mut body) = (req.method.clone(), req.body.clone());
        let deadline = tokio::time::Instant::now() + req.timeout;
        for _ in 0..=MAX_REDIRECTS {
            let shown = display_origin(&url);
            let mut builder = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .danger_accept_invalid_certs(req.insecure)
                .timeout(deadline.saturating_duration_since(tokio::time::Instant::now()));
            match &proxy {
                Some((proxy_url, addrs)) => {
                    // The proxy is who the host connects to; it was checked.
                    let p = reqwest::Proxy::all(proxy_url.as_str()).map_err(|_| EgressError::BadUrl(proxy_url.to_string()))?;
                    builder = builder.proxy(p);
                    if let Some(host) = proxy_url.host_str().filter(|_| literal_ip(proxy_url).is_none()) {
                        builder = builder.resolve_to_addrs(host, addrs);
                    }
                }
                None => {
                    let addrs = self.check(&url).await?;
                    builder = builder.no_proxy();
                    if let Some(host) = url.host_str().filter(|_| literal_ip(&url).is_none()) {
                        builder = builder.resolve_to_addrs(host, &addrs);
                    }
                }
            }
            let client = builder.build().map_err(|_| EgressError::Failed(shown.clone()))?;
            let mut r = client.request(method.clone(), url.clone()).headers(req.headers.clone());
            if let Some(b) = &body {
                r = r.body(b.clone());
            }
            let response = r.send().await.map_err(|e| if e.is_timeout() { EgressError::Timeout(shown.clone()) } else { EgressError::Failed(shown.clone()) })?;
            let status = response.status();
            if !req.follow || !status.is_redirection() {
                return Ok(response);
            }
            let Some(next) = response.headers().get(LOCATION).and_then(|l| l.to_str().ok()).and_then(|l| url.join(l).ok()) else {
                return Ok(response);
            };
            if !matches!(next.scheme(), "http" | "https") {
                return Err(EgressError::Refused(display_origin(&next)));
            }
            // 301/302/303 turn into a GET without a body, as browsers do.
            if matches!(status.as_u16(), 301..=303) && method != Method::HEAD {
                method = Method::GET;
                body = None;
            }
            url = next;
        }
        Err(EgressError::TooManyRedirects(req.url))
    }
}

/// The addresses `url`'s host stands for, with its port: the address it
/// names literally, else what the host's resolver answers within `timeout`
/// (none when it does not).
pub async fn resolve(url: &Url, timeout: Duration) -> Vec<SocketAddr> {
    let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else { return Vec::new() };
    if let Some(ip) = literal_ip(url) {
        return vec![SocketAddr::new(ip, port)];
    }
    match tokio::time::timeout(timeout, tokio::net::lookup_host((host, port))).await {
        Ok(Ok(found)) => found.collect(),
        _ => Vec::new(),
    }
}

/// The address `url` names literally, if its host is one.
fn literal_ip(url: &Url) -> Option<IpAddr> {
    url.host_str()?.trim_start_matches('[').trim_end_matches(']').parse().ok()
}

/// `scheme://host:port` of `url`, for error texts (no path, query or credentials).
fn display_origin(url: &Url) -> String {
    match (url.host_str(), url.port_or_known_default()) {
        (Some(h), Some(p)) => format!("{}://{h}:{p}", url.scheme()),
        _ => url.scheme().to_string(),
    }
}

/// Whether `ip` is a global unicast address: not loopback, private, shared
/// (CGNAT), link-local (metadata services), multicast, documentation,
/// benchmarking or reserved; IPv4 inside IPv6 is judged as IPv4.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return public_v4(v4);
            }
            let s = v6.segments();
            // NAT64 (64:ff9b::/96) carries an IPv4 address in its last 32 bits.
            if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
                return public_v4(Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8));
            }
            public_v6(v6)
        }
    }
}

fn public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && c == 0)
        || (a == 198 && (18..20).contains(&b))
        || a >= 240)
}

fn public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local
        || (first & 0xffc0) == 0xfe80 // link-local
        || (first & 0xffc0) == 0xfec0 // site-local (deprecated)
        || (first == 0x2001 && ip.segments()[1] == 0x0db8) // documentation
        || ip.segments()[..6] == [0, 0, 0, 0, 0, 0]) // IPv4-compatible (deprecated)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_global_unicast_is_public() {
        for bad in [
            "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "0.0.0.0", "100.64.0.1",
            "255.255.255.255", "224.0.0.1", "198.18.0.1", "::1", "::", "fe80::1", "fd00::1", "::ffff:127.0.0.1",
            "::ffff:10.0.0.1", "64:ff9b::a9fe:a9fe", "::127.0.0.1", "ff02::1",
        ] {
            assert!(!is_public(bad.parse().unwrap()), "{bad}");
        }
        for good in ["1.1.1.1", "8.8.8.8", "2606:4700::1111", "::ffff:1.1.1.1"] {
            assert!(is_public(good.parse().unwrap()), "{good}");
        }
    }

    #[tokio::test]
    async fn loopback_is_refused_unless_its_origin_is_listed() {
        let none = Egress::new(&[]).unwrap();
        let url = Url::parse("http://127.0.0.1:9000/x").unwrap();
        assert_eq!(none.check(&url).await, Err(EgressError::Refused("http://127.0.0.1:9000".into())));
        let named = Url::parse("http://localhost:9000/x").unwrap();
        assert_eq!(none.check(&named).await, Err(EgressError::Refused("http://localhost:9000".into())));
        let some = Egress::new(&["http://127.0.0.1:9000".into()]).unwrap();
        assert!(some.check(&url).await.is_ok());
        // Another port or scheme of the same host is another origin.
        assert!(some.check(&Url::parse("http://127.0.0.1:9001/").unwrap()).await.is_err());
        assert!(some.check(&Url::parse("https://127.0.0.1:9000/").unwrap()).await.is_err());
        assert!(Egress::new(&["http://127.0.0.1:9000/path".into()]).is_err());
        assert!(Egress::new(&["ftp://127.0.0.1".into()]).is_err());
        assert!(Egress::parse("file:///etc/passwd").is_err());
    }
}
