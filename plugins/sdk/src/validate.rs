//! Validation rules shared by plugins, written out by hand so guests need no
//! regex engine.

/// tsuru's email rule: `^([^@\s]+)@((?:[-a-z0-9]+\.)+[a-z]{2,})$`, at most
/// 254 bytes and without control characters.
pub fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    if s.len() > 254 || local.is_empty() || local.chars().any(|c| c.is_whitespace() || c.is_control()) || domain.contains('@') {
        return false;
    }
    let labels: Vec<&str> = domain.split('.').collect();
    let Some((tld, rest)) = labels.split_last() else {
        return false;
    };
    !rest.is_empty()
        && tld.len() >= 2
        && tld.bytes().all(|b| b.is_ascii_lowercase())
        && rest
            .iter()
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'))
}

#[cfg(test)]
mod tests {
    use super::is_email;

    #[test]
    fn email_rule_matches_tsuru() {
        for ok in ["a@b.co", "first.last+x@mail.example.com", "x@a-b.io", "A@b.com"] {
            assert!(is_email(ok), "{ok}");
        }
        for bad in ["", "a", "a@b", "a@b.c", "a@B.com", "a b@c.com", "@b.com", "a@.com", "a@b..com", "a@b@c.com", "a@b.c0m", "a\0@b.com"] {
            assert!(!is_email(bad), "{bad}");
        }
        assert!(!is_email(&format!("{}@b.com", "a".repeat(250))));
    }
}
