//! The changes an app's desired state can go through, as edits of a
//! [`Desired`] in memory: each checks that it can be done (a clear 400
//! otherwise, and nothing changes) and edits. [`super::converge`] records
//! and applies the result.

use crate::error::{ApiError, ApiResult};
use crate::store::{Desired, NewVersion, ProcessRecord, ProcessStatus, VersionRecord, now_millis};

/// The process of a version that serves traffic by default, and that a
/// change naming no process is about: `web`, else the version's only one.
pub const DEFAULT_PROCESS: &str = "web";

/// The version a unit change is about: the one `wanted` names, or (`""`,
/// `"0"`) the app's only routable one.
pub fn target_version(d: &Desired, wanted: &str) -> ApiResult<i64> {
    let routable: Vec<&VersionRecord> = d.routable().collect();
    match (wanted, routable.as_slice()) {
        ("" | "0", []) => Err(ApiError::bad_request(format!("app {:?} has no deployed version", d.app.name))),
        ("" | "0", [one]) => Ok(one.version),
        ("" | "0", _) => Err(ApiError::bad_request("more than one version deployed, you must select one")),
        (n, _) => d
            .versions
            .iter()
            .find(|v| v.version.to_string() == n)
            .map(|v| v.version)
            .ok_or_else(|| ApiError::bad_request(format!("invalid version {n:?} for app {:?}", d.app.name))),
    }
}

fn no_process(name: &str) -> ApiError {
    ApiError::bad_request(format!("process error: no command declared in Procfile for process \"{name}\""))
}

/// The process of `v` a change is about: the one `wanted` names, else the
/// default one (`web`, or the only process).
pub fn target_process(v: &VersionRecord, wanted: &str) -> ApiResult<String> {
    if !wanted.is_empty() {
        return if v.has_process(wanted) { Ok(wanted.to_string()) } else { Err(no_process(wanted)) };
    }
    match v.processes.as_slice() {
        [one] => Ok(one.name.clone()),
        _ if v.has_process(DEFAULT_PROCESS) => Ok(DEFAULT_PROCESS.to_string()),
        [] => Err(ApiError::bad_request(format!("version {} has no processes", v.version))),
        many => Err(ApiError::bad_request(format!(
            "process error: version {} has several processes ({}): name one with the process parameter",
            v.version,
            many.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// Adds `delta` units (negative: removes) to `process` of `version`; the
/// units it has then. Units go only to a started process.
pub fn scale(d: &mut Desired, version: i64, process: &str, delta: i64) -> ApiResult<i64> {
    let v = d.version_mut(version).ok_or_else(|| ApiError::bad_request(format!("invalid version \"{version}\"")))?;
    let p = v.processes.iter_mut().find(|p| p.name == process).ok_or_else(|| no_process(process))?;
    if delta > 0 && p.status != ProcessStatus::Started {
        return Err(ApiError::bad_request(format!(
            "cannot add units to process {process} while it is {}: start it first",
            p.status.as_str()
        )));
    }
    let units = p.units + delta;
    if units < 0 {
        return Err(ApiError::bad_request(format!("process {process} of version {version} has only {} unit(s)", p.units)));
    }
    p.units = units;
    Ok(units)
}

/// Checks that `process` and `version` (empty: all) name something the app
/// has, as start/stop/restart/sleep take them.
pub fn check_selection(d: &Desired, process: &str, version: &str) -> ApiResult<()> {
    if !process.is_empty() && !d.versions.iter().any(|v| v.has_process(process)) {
        return Err(no_process(process));
    }
    if !version.is_empty() && version != "0" && !d.versions.iter().any(|v| v.version.to_string() == version) {
        return Err(ApiError::bad_request(format!("invalid version {version:?} for app {:?}", d.app.name)));
    }
    Ok(())
}

/// Sets the status of the processes `process` and `version` select (empty:
/// all); with `only_from`, only of processes in that status (a wake starts
/// the sleeping ones, not the stopped). The units of the selected processes.
pub fn set_status(d: &mut Desired, process: &str, version: &str, status: ProcessStatus, only_from: Option<ProcessStatus>) -> i64 {
    let mut units = 0;
    for v in d.versions.iter_mut().filter(|v| version.is_empty() || version == "0" || v.version.to_string() == version) {
        for p in v.processes.iter_mut().filter(|p| process.is_empty() || p.name == process) {
            if only_from.is_none_or(|from| p.status == from) {
                p.status = status;
                if v.routable {
                    units += p.units;
                }
            }
        }
    }
    units
}

/// Makes `version` routable (sharing the traffic equally with the other
/// routable versions) or takes it out of the traffic.
pub fn set_routable(d: &mut Desired, version: i64, routable: bool) -> ApiResult<()> {
    let v = d.version_mut(version).ok_or_else(|| ApiError::bad_request(format!("Invalid version: {version}")))?;
    v.routable = routable;
    v.weight = if routable { 100 } else { 0 };
    Ok(())
}

/// Makes `version` the only routable version (all the traffic): a
/// rollback, counted as a deploy.
pub fn route_only(d: &mut Desired, version: i64) -> ApiResult<()> {
    if d.version(version).is_none() {
        return Err(ApiError::bad_request(format!("invalid version \"{version}\": app {:?} has no such version", d.app.name)));
    }
    for v in &mut d.versions {
        v.routable = v.version == version;
        v.weight = if v.routable { 100 } else { 0 };
    }
    d.app.deploys += 1;
    Ok(())
}

/// Removes a version that serves no traffic.
pub fn delete_version(d: &mut Desired, version: i64) -> ApiResult<()> {
    let v = d.version(version).ok_or_else(|| ApiError::not_found(format!("version {version} of app {:?} not found", d.app.name)))?;
    if v.routable {
        return Err(ApiError::bad_request(format!(
            "version {version} of app {:?} is serving traffic: roll back or deploy another version first",
            d.app.name
        )));
    }
    d.versions.retain(|v| v.version != version);
    Ok(())
}

/// The processes a new version of `d` starts with: `Replace` keeps the
/// app's scale (each process takes the units and status the same process
/// has in the routable versions, one started unit when none has it);
/// `Beside` starts each with one unit, to be made routable later.
pub fn new_processes(d: &Desired, names: &[String], how: NewVersion) -> Vec<ProcessRecord> {
    names
        .iter()
        .map(|name| {
            let inherited = match how {
                NewVersion::Replace => d.routable().filter_map(|v| v.process(name)).max_by_key(|p| p.units),
                NewVersion::Beside => None,
            };
            match inherited {
                Some(p) => ProcessRecord::new(name, p.units.max(1), p.status),
                None => ProcessRecord::new(name, 1, ProcessStatus::Started),
            }
        })
        .collect()
}

/// The number the next version of `d` gets.
pub fn next_version(d: &Desired) -> i64 {
    d.versions.iter().map(|v| v.version).max().unwrap_or(0) + 1
}

/// Adds the next version of `d`, made of `artifact` (from the upload
/// `source`, if any), counted as a deploy: `Replace` makes it the only
/// routable version, `Beside` adds it without traffic. Its number.
pub fn add_version(d: &mut Desired, artifact: &str, source: &str, processes: Vec<ProcessRecord>, outbound: Vec<String>, deploy_event: &str, how: NewVersion) -> i64 {
    let number = next_version(d);
    let routable = how == NewVersion::Replace;
    if routable {
        for v in &mut d.versions {
            v.routable = false;
            v.weight = 0;
        }
    }
    d.versions.push(VersionRecord {
        app: d.app.name.clone(),
        version: number,
        digest: artifact.to_string(),
        processes,
        outbound,
        source: source.to_string(),
        routable,
        weight: if routable { 100 } else { 0 },
        deploy_event: deploy_event.to_string(),
        disabled_reason: String::new(),
        created_at: now_millis(),
    });
    d.app.deploys += 1;
    number
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::AppRecord;

    fn version(number: i64, routable: bool, processes: &[(&str, i64, ProcessStatus)]) -> VersionRecord {
        VersionRecord {
            app: "a".into(),
            version: number,
            digest: "d".into(),
            processes: processes.iter().map(|(n, u, s)| ProcessRecord::new(n, *u, *s)).collect(),
            outbound: Vec::new(),
            source: String::new(),
            routable,
            weight: if routable { 100 } else { 0 },
            deploy_event: String::new(),
            disabled_reason: String::new(),
            created_at: 0,
        }
    }

    fn desired(versions: Vec<VersionRecord>) -> Desired {
        Desired { app: AppRecord { name: "a".into(), ..AppRecord::default() }, versions, routes: vec![] }
    }

    use ProcessStatus::{Asleep, Started, Stopped};

    #[test]
    fn scaling_acts_on_one_process() {
        let mut d = desired(vec![version(1, true, &[("web", 1, Started), ("worker", 1, Started)])]);
        assert_eq!(scale(&mut d, 1, "worker", 2), Ok(3));
        assert_eq!(d.versions[0].process("web").unwrap().units, 1);
        assert!(scale(&mut d, 1, "worker", -4).is_err(), "below zero");
        assert!(scale(&mut d, 1, "nope", 1).is_err());
        set_status(&mut d, "web", "", Stopped, None);
        assert!(scale(&mut d, 1, "web", 1).is_err(), "a stopped process takes no units");
        assert_eq!(scale(&mut d, 1, "web", -1), Ok(0), "but gives them back");
    }

    #[test]
    fn the_default_process_is_web_or_the_only_one() {
        let two = version(1, true, &[("web", 1, Started), ("worker", 1, Started)]);
        assert_eq!(target_process(&two, "").unwrap(), "web");
        let one = version(1, true, &[("worker", 1, Started)]);
        assert_eq!(target_process(&one, "").unwrap(), "worker");
        let many = version(1, true, &[("a", 1, Started), ("b", 1, Started)]);
        assert!(target_process(&many, "").is_err());
    }

    #[test]
    fn a_wake_starts_only_sleeping_processes() {
        let mut d = desired(vec![version(1, true, &[("web", 2, Asleep), ("worker", 1, Stopped)])]);
        assert_eq!(set_status(&mut d, "", "", Started, Some(Asleep)), 2);
        let statuses: Vec<_> = d.versions[0].processes.iter().map(|p| p.status).collect();
        assert_eq!(statuses, vec![Started, Stopped]);
    }

    #[test]
    fn a_new_version_keeps_the_scale_of_its_processes() {
        let mut d = desired(vec![version(1, true, &[("web", 3, Started), ("worker", 2, Stopped)])]);
        let names = vec!["web".to_string(), "clock".to_string()];
        let processes = new_processes(&d, &names, NewVersion::Replace);
        assert_eq!(processes, vec![ProcessRecord::new("web", 3, Started), ProcessRecord::new("clock", 1, Started)]);
        assert_eq!(add_version(&mut d, "x", "", processes, Vec::new(), "e", NewVersion::Replace), 2);
        assert_eq!((d.versions[0].routable, d.versions[1].routable, d.app.deploys), (false, true, 1));
        let beside = new_processes(&d, &names, NewVersion::Beside);
        assert_eq!(beside[0], ProcessRecord::new("web", 1, Started));
    }
}
