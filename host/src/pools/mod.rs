//! Pool constraints: which teams, routers, services, plans and volume plans a
//! pool admits (API-NOTES §2.11). Pure logic; storage is in `store::pools`.
//!
//! A constraint is (pool expression, field, values, blacklist); expression and
//! values are globs where `*` matches any run. For a pool and a field, the
//! matching constraint with the longest expression wins (fewest `*` on ties);
//! a value is admitted when it matches one of the values, inverted by
//! `blacklist`. A field without any matching constraint admits everything.

use serde::{Deserialize, Serialize};

pub const FIELDS: [&str; 5] = ["team", "service", "router", "plan", "volume-plan"];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Constraint {
    #[serde(rename = "PoolExpr")]
    pub pool_expr: String,
    #[serde(rename = "Field")]
    pub field: String,
    #[serde(rename = "Values")]
    pub values: Vec<String>,
    #[serde(rename = "Blacklist")]
    pub blacklist: bool,
}

/// `*` matches any run of characters; everything else matches itself.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && p[pi] != '*' && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// The constraint on `field` that governs `pool`, if any.
pub fn governing<'a>(constraints: &'a [Constraint], pool: &str, field: &str) -> Option<&'a Constraint> {
    constraints
        .iter()
        .filter(|c| c.field == field && glob(&c.pool_expr, pool))
        .max_by(|a, b| {
            let stars = |c: &Constraint| c.pool_expr.matches('*').count();
            a.pool_expr.len().cmp(&b.pool_expr.len()).then(stars(b).cmp(&stars(a)))
        })
}

/// Whether `pool` admits `value` for `field`.
pub fn admits(constraints: &[Constraint], pool: &str, field: &str, value: &str) -> bool {
    match governing(constraints, pool, field) {
        None => true,
        Some(c) => c.values.iter().any(|v| glob(v, value)) != c.blacklist,
    }
}

/// The existing objects `pool` admits for `field`.
pub fn admitted(constraints: &[Constraint], pool: &str, field: &str, existing: &[String]) -> Vec<String> {
    existing.iter().filter(|v| admits(constraints, pool, field, v)).cloned().collect()
}

/// Whether the pool's own team constraint (exact expression) admits everyone.
pub fn is_public(constraints: &[Constraint], pool: &str) -> bool {
    constraints
        .iter()
        .any(|c| c.pool_expr == pool && c.field == "team" && !c.blacklist && c.values.iter().any(|v| v == "*"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(expr: &str, field: &str, values: &[&str], blacklist: bool) -> Constraint {
        Constraint {
            pool_expr: expr.into(),
            field: field.into(),
            values: values.iter().map(|v| v.to_string()).collect(),
            blacklist,
        }
    }

    #[test]
    fn globs() {
        assert!(glob("*", ""));
        assert!(glob("prod*", "prod-eu"));
        assert!(glob("*-eu", "prod-eu"));
        assert!(glob("p*d*u", "prod-eu"));
        assert!(!glob("prod", "prod-eu"));
        assert!(!glob("prod*x", "prod-eu"));
    }

    #[test]
    fn longest_expression_wins_and_blacklist_inverts() {
        let cs = vec![
            c("*", "team", &["*"], false),
            c("prod*", "team", &["ops"], false),
            c("prod-eu", "team", &["eu-*"], false),
            c("prod*", "router", &["legacy"], true),
        ];
        assert!(admits(&cs, "dev", "team", "anyone"));
        assert!(admits(&cs, "prod-us", "team", "ops"));
        assert!(!admits(&cs, "prod-us", "team", "devs"));
        assert!(admits(&cs, "prod-eu", "team", "eu-payments"));
        assert!(!admits(&cs, "prod-eu", "team", "ops"));
        assert!(!admits(&cs, "prod-us", "router", "legacy"));
        assert!(admits(&cs, "prod-us", "router", "fast"));
        assert!(admits(&cs, "dev", "plan", "anything"), "no constraint admits everything");
        let teams = vec!["ops".to_string(), "devs".to_string()];
        assert_eq!(admitted(&cs, "prod-us", "team", &teams), vec!["ops"]);
    }

    #[test]
    fn ties_prefer_fewer_stars() {
        let cs = vec![c("pr*d", "team", &["a"], false), c("p**d", "team", &["b"], false)];
        assert!(admits(&cs, "prod", "team", "a"));
        assert!(!admits(&cs, "prod", "team", "b"));
    }
}
