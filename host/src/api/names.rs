//! tsuru's shared name rule (API-NOTES §3): apps, pools, platforms, webhooks,
//! clusters, volumes, service ids and team-token ids are `^[a-z][a-z0-9-]{0,39}$`.

use std::sync::LazyLock;

static NAME: LazyLock<regex::Regex> = LazyLock::new(|| regex::Regex::new(r"^[a-z][a-z0-9-]{0,39}$").expect("valid regex"));

pub fn valid(name: &str) -> bool {
    NAME.is_match(name)
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
}
