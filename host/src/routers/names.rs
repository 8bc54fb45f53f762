//! Who owns a host name: one rule for router domains and cnames.
//!
//! - Every name under a router's domain is that router's: `<app>.<domain>`
//!   belongs to the app called `<app>`, now or later, so no cname may be a
//!   router's domain or a name under it (`victim.<domain>`, `*.<domain>`).
//! - Router domains do not overlap: none is another's, or under or above it.
//! - A cname belongs to one app (the store's key); names are compared in
//!   lower case, as DNS does.

/// `name` is `domain` or a name under it.
fn within(name: &str, domain: &str) -> bool {
    name == domain || (name.len() > domain.len() && name.ends_with(domain) && name.as_bytes()[name.len() - domain.len() - 1] == b'.')
}

/// The name a cname claims: a wildcard `*.b` claims the names under `b`.
fn claimed(cname: &str) -> &str {
    cname.strip_prefix("*.").unwrap_or(cname)
}

/// Why `cname` (lower case) may not be added, given the routers' `domains`.
pub fn check_cname(cname: &str, domains: &[String]) -> Result<(), String> {
    match domains.iter().find(|d| within(claimed(cname), d)) {
        Some(d) => Err(format!("cname {cname} is not allowed: names under {d} belong to the apps of its router")),
        None => Ok(()),
    }
}

/// Why a router may not serve `domain`, given the other routers' domains
/// and the cnames of every app.
pub fn check_domain(domain: &str, others: &[String], cnames: &[String]) -> Result<(), String> {
    if let Some(d) = others.iter().find(|d| within(domain, d) || within(d, domain)) {
        return Err(format!("domain {domain:?} overlaps the domain {d:?} of another router"));
    }
    if let Some(c) = cnames.iter().find(|c| within(&claimed(c).to_ascii_lowercase(), domain)) {
        return Err(format!("domain {domain:?} holds the cname {c} of an app: remove it first"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_under_a_router_domain_are_its_own() {
        let domains = vec!["torii.localhost".to_string()];
        for bad in ["torii.localhost", "victim.torii.localhost", "*.torii.localhost", "a.b.torii.localhost"] {
            assert!(check_cname(bad, &domains).is_err(), "{bad}");
        }
        for good in ["www.example.com", "*.example.com", "xtorii.localhost", "localhost", "*.localhost"] {
            assert!(check_cname(good, &domains).is_ok(), "{good}");
        }
    }

    #[test]
    fn router_domains_do_not_overlap_or_hold_cnames() {
        let others = vec!["torii.localhost".to_string()];
        assert!(check_domain("apps.example.com", &others, &[]).is_ok());
        assert!(check_domain("torii.localhost", &others, &[]).is_err());
        assert!(check_domain("x.torii.localhost", &others, &[]).is_err());
        assert!(check_domain("localhost", &others, &[]).is_err());
        assert!(check_domain("example.com", &others, &["*.shop.example.com".into()]).is_err());
        assert!(check_domain("apps.example.com", &others, &["www.example.com".into()]).is_ok());
    }
}
