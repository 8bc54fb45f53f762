//! What one app may take of the shared machine, checked wherever the amount
//! changes: units (over its routable versions and their processes), against
//! the app's quota and the operator's `[apps] max_units`.

use crate::store::{VersionRecord, units_in_use};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// tsuru's answer for an app quota.
    #[error("Quota exceeded. Available: {available}, Requested: {requested}.")]
    Quota { available: i64, requested: i64 },
    #[error("app {app} would run {wanted} units (units × processes of its routable versions): an app runs at most {max}")]
    MaxUnits { app: String, wanted: i64, max: i64 },
}

/// Whether `app` may go from `before` to `after` units in use. Shrinking is
/// always allowed, so an app above a lowered bound can come back under it.
pub fn check_units(app: &str, quota: i64, max_units: u32, before: i64, after: i64) -> Result<(), LimitError> {
    if after <= before {
        return Ok(());
    }
    if after > i64::from(max_units) {
        return Err(LimitError::MaxUnits { app: app.to_string(), wanted: after, max: i64::from(max_units) });
    }
    if quota >= 0 && after > quota {
        return Err(LimitError::Quota { available: (quota - before).max(0), requested: after - before });
    }
    Ok(())
}

/// Units in use once `change` is applied to a copy of `versions`.
pub fn units_after(versions: &[VersionRecord], change: impl FnOnce(&mut Vec<VersionRecord>)) -> i64 {
    let mut after = versions.to_vec();
    change(&mut after);
    units_in_use(&after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_is_bounded_by_quota_and_max() {
        assert_eq!(check_units("a", -1, 100, 0, 100), Ok(()));
        assert!(matches!(check_units("a", -1, 100, 0, 101), Err(LimitError::MaxUnits { wanted: 101, .. })));
        assert_eq!(check_units("a", 4, 100, 3, 6), Err(LimitError::Quota { available: 1, requested: 3 }));
        // Shrinking passes even above the bounds.
        assert_eq!(check_units("a", 4, 100, 500, 200), Ok(()));
    }
}
