//! Name rules, one per kind of name. tsuru's shared rule (API-NOTES §3):
//! apps, pools, platforms, webhooks, clusters, volumes, service ids and
//! team-token ids are `^[a-z][a-z0-9-]{0,39}$`. Free-form names (roles,
//! tags) and texts are bounded in length and may not hold control or
//! bidirectional-override characters, which would forge what other users
//! read in lists and logs.

use std::sync::LazyLock;

static NAME: LazyLock<regex::Regex> = LazyLock::new(|| regex::Regex::new(r"^[a-z][a-z0-9-]{0,39}$").expect("valid regex"));

pub fn valid(name: &str) -> bool {
    NAME.is_match(name)
}

/// The longest team name, role name and tag (a DNS label).
pub const MAX_NAME: usize = 63;
/// Tags one app or team may carry.
pub const MAX_TAGS: usize = 64;
/// The longest email address (RFC 5321's path limit).
pub const MAX_EMAIL: usize = 254;
/// The longest description.
pub const MAX_DESCRIPTION: usize = 1024;

/// Characters that change how text around them reads: controls (NUL, CR,
/// LF, ESC...), bidirectional overrides and isolates, zero-width marks.
fn deceptive(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

/// A free-form name: 1 to `max` characters, none of them deceptive.
pub fn printable(name: &str, max: usize) -> bool {
    !name.is_empty() && name.chars().count() <= max && !name.chars().any(deceptive)
}

/// A text such as a description: at most `max` characters; line breaks and
/// tabs are allowed, other deceptive characters are not.
pub fn text(value: &str, max: usize) -> bool {
    value.chars().count() <= max && !value.chars().any(|c| deceptive(c) && !matches!(c, '\n' | '\t'))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_rule() {
        assert!(super::valid("a"));
        assert!(super::valid("my-app-2"));
        assert!(super::valid(&"a".repeat(40)));
        assert!(!super::valid(&"a".repeat(41)));
        for bad in ["", "2app", "My", "a_b", "a.b", "-a"] {
            assert!(!super::valid(bad), "{bad}");
        }
    }

    #[test]
    fn free_form_names_are_bounded_and_printable() {
        assert!(super::printable("Team Lead (ops)", 63));
        assert!(super::printable("é", 1));
        for bad in ["", "a\0b", "a\r\nb", "evil\u{202e}gpj.exe", &"x".repeat(64)] {
            assert!(!super::printable(bad, 63), "{bad:?}");
        }
        assert!(super::text("two\nlines", 20));
        assert!(!super::text("bell\u{7}", 20));
    }
}
