//! Volumes (`/1.4/volumes`, `/1.4/volumeplans`, API-NOTES §2.18): plans
//! from the config per provisioner, the pool's `volume-plan` constraint,
//! binds, and a docker app keeping what it wrote across a replacement of
//! its containers, its mount made only of what the plan says.

use crate::docker::{ENGINES, add_node, images, nodes, stream_errors, unique};
use crate::support::{Options, TestServer, backends};
use serde_json::{Value, json};
use std::process::Command;

/// Two plans for the docker provisioner, one for the swarm one; `shared`
/// binds a directory per volume under `storage`.
fn plans(storage: &std::path::Path) -> String {
    format!(
        "[[volume_plan]]\nname = \"fast\"\nprovisioner = \"docker\"\n\
         [[volume_plan]]\nname = \"shared\"\nprovisioner = \"docker\"\ndriver = \"local\"\n\
         [volume_plan.opt]\ntype = \"none\"\no = \"bind\"\ndevice = \"{}/{{volume}}\"\n\
         [[volume_plan]]\nname = \"nfs\"\nprovisioner = \"swarm\"\ndriver = \"local\"\n\
         [volume_plan.opt]\ntype = \"nfs\"\no = \"addr=10.0.0.1\"\n",
        storage.display()
    )
}

backends! {
    async fn volumes_are_made_of_plans_their_pool_admits(b) {
        let storage = tempfile::tempdir().unwrap();
        let mut o = Options::new(b);
        o.extra_toml = plans(storage.path());
        let t = TestServer::start_with(o).await;
        t.team("t1").await;
        t.team("t2").await;
        for (pool, provisioner) in [("dk", "docker"), ("dk2", "docker"), ("wasmy", "wasm")] {
            t.req("POST", "/1.0/pools").admin().form(&[("name", pool), ("provisioner", provisioner)]).send().await.expect(201, "");
        }

        // The plans, per provisioner, as the operator configured them.
        let listed = t.req("GET", "/1.4/volumeplans").admin().send().await.json();
        let shared_opts = json!({"driver": "local", "opt": {"device": format!("{}/{{volume}}", storage.path().display()), "o": "bind", "type": "none"}});
        assert_eq!(listed, json!({
            "docker": [{"Name": "fast", "Opts": {"driver": "local", "opt": {}}}, {"Name": "shared", "Opts": shared_opts}],
            "swarm": [{"Name": "nfs", "Opts": {"driver": "local", "opt": {"o": "addr=10.0.0.1", "type": "nfs"}}}],
        }));
        let nobody = t.user("nobody@example.com").await;
        t.req("GET", "/1.4/volumeplans").token(&nobody).send().await.expect_status(403);
        t.req("GET", "/1.4/volumes").token(&nobody).send().await.expect(204, "");

        // Bad input is refused and changes nothing.
        let create = |form: Vec<(&'static str, String)>| {
            let pairs: Vec<(&str, String)> = form;
            let req = t.req("POST", "/1.4/volumes").admin();
            async move {
                let refs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
                req.form(&refs).send().await
            }
        };
        let form = |name: &str, pool: &str, team: &str, plan: &str| {
            vec![("Name", name.to_string()), ("Pool", pool.to_string()), ("TeamOwner", team.to_string()), ("Plan.Name", plan.to_string())]
        };
        create(form("", "dk", "t1", "fast")).await.expect_error(400, "volume name cannot be empty");
        create(form("Bad_Name", "dk", "t1", "fast")).await.expect_error(
            400,
            "Invalid volume name, volume name should have at most 40 characters, containing only lower case letters, numbers or dashes, starting with a letter.",
        );
        create(form("v1", "nope", "t1", "fast")).await.expect_error(404, "Pool does not exist.");
        create(form("v1", "dk", "nope", "fast")).await.expect_error(404, "Team not found");
        create(form("v1", "wasmy", "t1", "fast")).await.expect_error(400, "no volume-plan found for pool");
        create(form("v1", "dk", "t1", "nfs")).await.expect_error(400, "volume-plan not present in pool constraint");
        t.req("PUT", "/1.3/constraints").admin().json(json!({"PoolExpr": "dk", "Field": "volume-plan", "Values": ["fast"]})).send().await.expect(200, "");
        create(form("v1", "dk", "t1", "shared")).await.expect_error(400, "volume-plan not present in pool constraint");
        let pool = t.req("GET", "/1.8/pools/dk").admin().send().await.json();
        assert_eq!(pool["allowed"]["volume-plan"], json!(["fast"]));
        assert_eq!(t.req("GET", "/1.8/pools/dk2").admin().send().await.json()["allowed"]["volume-plan"], json!(["fast", "shared"]));
        t.req("GET", "/1.4/volumes").admin().send().await.expect(204, "");

        // A volume; its name is taken once.
        let mut with_opts = form("v1", "dk", "t1", "fast");
        with_opts.push(("Opts.size", "1Gi".into()));
        create(with_opts).await.expect(201, "");
        create(form("v1", "dk2", "t1", "shared")).await.expect_error(409, "volume already exists");
        let info = t.req("GET", "/1.4/volumes/v1").admin().send().await.json();
        assert_eq!(info, json!({
            "Name": "v1", "Pool": "dk", "Plan": {"Name": "fast", "Opts": {"driver": "local", "opt": {}}},
            "TeamOwner": "t1", "Status": "", "Binds": null, "Opts": {"size": "1Gi"},
        }));
        t.req("GET", "/1.4/volumes/v9").admin().send().await.expect_error(404, "volume not found");
        // Not bound yet, it may change (JSON as tsuru's client sends it).
        t.req("POST", "/1.4/volumes/v1").admin()
            .json(json!({"name": "ignored", "pool": "dk", "teamOwner": "t2", "plan": {"name": "fast"}, "opts": {"size": "2Gi"}}))
            .send().await.expect(200, "");
        let info = t.req("GET", "/1.4/volumes/v1").admin().send().await.json();
        assert_eq!((info["TeamOwner"].clone(), info["Opts"].clone()), (json!("t2"), json!({"size": "2Gi"})));

        // Binds: to an app of the same pool, at one mount point each.
        for (app, pool) in [("a1", "dk"), ("a2", "dk2")] {
            t.req("POST", "/1.0/apps").admin().form(&[("name", app), ("teamOwner", "t1"), ("pool", pool)]).send().await.expect_status(201);
        }
        let bind = |form: Vec<(&'static str, &'static str)>| {
            let req = t.req("POST", "/1.4/volumes/v1/bind").admin().form(&form);
            async move { req.send().await }
        };
        bind(vec![("App", "nope"), ("MountPoint", "/data")]).await.expect_error(404, "App nope not found.");
        bind(vec![("App", "a2"), ("MountPoint", "/data")]).await
            .expect_error(400, "volume \"v1\" is in pool \"dk\" and app \"a2\" in pool \"dk2\": they must be in the same pool");
        for bad in ["data", "/", "/a/../etc", "/a:b", "/proc", "/sys/fs", "/dev/shm"] {
            let req = t.req("POST", "/1.4/volumes/v1/bind").admin().form(&[("App", "a1"), ("MountPoint", bad)]);
            req.send().await.expect_error(400, &format!("invalid mount point {bad:?}: an absolute path inside the container, not /"));
        }
        bind(vec![("App", "a1"), ("MountPoint", "/data"), ("NoRestart", "true")]).await.expect(200, "");
        bind(vec![("App", "a1"), ("MountPoint", "/data"), ("NoRestart", "true")]).await.expect_error(409, "volume already bound in mountpoint");
        // Without NoRestart the answer is the restart's stream (an app without units has nothing to restart).
        let r = bind(vec![("App", "a1"), ("MountPoint", "/logs"), ("ReadOnly", "true")]).await;
        assert_eq!((r.status.as_u16(), r.header("content-type")), (200, "application/x-json-stream"));
        assert!(stream_errors(&r.body).is_empty() && r.body.contains("Volume v1 bound to the app"), "{}", r.body);
        let info = t.req("GET", "/1.4/volumes/v1").admin().send().await.json();
        assert_eq!(info["Binds"], json!([
            {"ID": {"App": "a1", "MountPoint": "/data", "Volume": "v1"}, "ReadOnly": false},
            {"ID": {"App": "a1", "MountPoint": "/logs", "Volume": "v1"}, "ReadOnly": true},
        ]));
        assert_eq!(t.req("GET", "/1.0/apps/a1").admin().send().await.json()["volumeBinds"].as_array().map(Vec::len), Some(2));
        // The list leaves the binds out.
        let list = t.req("GET", "/1.4/volumes").admin().send().await.json();
        assert_eq!((list.as_array().unwrap().len(), list[0]["Binds"].clone()), (1, Value::Null));

        // Bound, it is provisioned: it cannot change or go.
        t.req("POST", "/1.4/volumes/v1").admin().form(&[("Pool", "dk"), ("TeamOwner", "t1"), ("Plan.Name", "fast")]).send().await.expect_error(
            400,
            "updating a volume already provisioned is not supported, a new volume must be created and the old one deleted if necessary",
        );
        t.req("DELETE", "/1.4/volumes/v1").admin().send().await.expect_error(500, "cannot delete volume with existing binds");

        // Who sees it: readers in its team (its owner is t2 now), not in another.
        t.role("vreader", "team", &["volume.read"]).await;
        let reader = t.user("reader@example.com").await;
        t.assign("vreader", "reader@example.com", "t1").await;
        t.req("GET", "/1.4/volumes").token(&reader).send().await.expect(204, "");
        t.req("GET", "/1.4/volumes/v1").token(&reader).send().await.expect_status(403);
        t.assign("vreader", "reader@example.com", "t2").await;
        let seen = t.req("GET", "/1.4/volumes").token(&reader).send().await.json();
        assert_eq!(seen[0]["Name"], "v1");
        t.req("DELETE", "/1.4/volumes/v1").token(&reader).send().await.expect_status(403);

        // Unbinds take their fields from the query string.
        let unbind = |mount: &'static str| {
            let req = t.req("DELETE", &format!("/1.4/volumes/v1/bind?App=a1&MountPoint={mount}&NoRestart=true")).admin();
            async move { req.send().await }
        };
        unbind("/data").await.expect(200, "");
        unbind("/data").await.expect_error(404, "volume bind not found");
        unbind("/logs").await.expect(200, "");
        t.req("DELETE", "/1.4/volumes/v1").admin().send().await.expect(200, "");
        t.req("GET", "/1.4/volumes/v1").admin().send().await.expect_error(404, "volume not found");
        // Its name is never another volume's: the plan's storage is keyed by it.
        create(form("v1", "dk", "t1", "fast")).await.expect_error(
            409,
            "volume name \"v1\" was used by a deleted volume, whose storage may still hold its data: choose another name",
        );
        // A team that owns volumes stays (a team made later under its name would own them).
        create(form("v3", "dk", "t2", "fast")).await.expect(201, "");
        let r = t.req("DELETE", "/1.0/teams/t2").admin().send().await;
        assert!(r.status == 403 && r.body.contains("Volumes: v3"), "{} {}", r.status, r.body);
        t.req("DELETE", "/1.4/volumes/v3").admin().send().await.expect(200, "");
        // Never bound, its name is free again.
        create(form("v3", "dk", "t1", "fast")).await.expect(201, "");
        // An app mounts 16 volumes at most; its removal drops its binds.
        create(form("v2", "dk", "t1", "fast")).await.expect(201, "");
        for i in 0..17 {
            let mount = format!("/b{i}");
            let r = t.req("POST", "/1.4/volumes/v2/bind").admin().form(&[("App", "a1"), ("MountPoint", mount.as_str()), ("NoRestart", "true")]).send().await;
            if i < 16 {
                r.expect(200, "");
            } else {
                r.expect_error(400, "app \"a1\" mounts 16 volumes, the most an app may mount");
            }
        }
        t.req("DELETE", "/1.0/apps/a1").admin().send().await.expect_status(200);
        t.req("DELETE", "/1.4/volumes/v2").admin().send().await.expect(200, "");
        let events = t.req("GET", "/1.1/events?target.type=volume").admin().send().await.json();
        let kinds: Vec<&str> = events.as_array().unwrap().iter().filter_map(|e| e["Kind"]["Name"].as_str()).collect();
        for kind in ["volume.create", "volume.update", "volume.update.bind", "volume.update.unbind", "volume.delete"] {
            assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
        }
        t.stop().await;
    }
}

backends! {
    async fn docker_apps_keep_what_they_wrote_in_a_volume(b) {
        let Some(nodes) = nodes() else { return };
        let _shared = ENGINES.read().await;
        images(&nodes).await;
        let storage = tempfile::tempdir().unwrap();
        let mut o = Options::new(b);
        o.extra_toml = plans(storage.path());
        let t = TestServer::start_with(o).await;
        t.team("t1").await;
        let pool = unique("vk", b);
        t.req("POST", "/1.0/pools").admin().form(&[("name", pool.as_str()), ("provisioner", "docker")]).send().await.expect(201, "");
        let r = add_node(&t, &nodes[0], &pool).await;
        assert!(stream_errors(&r.body).is_empty(), "{}", r.body);
        let app = unique("vol", b);
        let host = format!("{app}.apps.test");
        t.req("POST", "/1.0/apps").admin().form(&[("name", app.as_str()), ("teamOwner", "t1"), ("pool", pool.as_str())]).send().await.expect_status(201);
        let r = t.req("POST", &format!("/1.0/apps/{app}/deploy")).admin().form(&[("image", "torii-test/httpd:1")]).send().await;
        assert!(r.body.ends_with("\nOK\n"), "{}", r.body);

        // A volume whose options try to name a host path: kept as the
        // user's options, never handed to the engine.
        let volume = format!("v{app}");
        std::fs::create_dir(storage.path().join(&volume)).unwrap();
        t.req("POST", "/1.4/volumes").admin()
            .form(&[("Name", volume.as_str()), ("Pool", pool.as_str()), ("TeamOwner", "t1"), ("Plan.Name", "shared"), ("Opts.device", "/etc")])
            .send().await.expect(201, "");
        let r = t.req("POST", &format!("/1.4/volumes/{volume}/bind")).admin().form(&[("App", app.as_str()), ("MountPoint", "/www/data")]).send().await;
        assert!(stream_errors(&r.body).is_empty() && r.body.contains("Started unit"), "{}", r.body);
        let container = crate::docker::containers(&nodes[0], &format!("torii.app={app}")).remove(0);
        let inspect = |what: &str| {
            let out = Command::new("docker").args(["-H", &nodes[0], "inspect", "--format", what, &container]).output().unwrap();
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        let mounts: Value = serde_json::from_str(&inspect("{{json .HostConfig.Mounts}}")).unwrap();
        assert_eq!(mounts.as_array().map(Vec::len), Some(1), "{mounts}");
        assert_eq!(mounts[0]["Source"], format!("torii-vol-{volume}"));
        assert_eq!(mounts[0]["VolumeOptions"]["DriverConfig"]["Options"]["device"], format!("{}/{volume}", storage.path().display()));
        // A unit writes there; its replacement (an env change) still serves it.
        let out = Command::new("docker").args(["-H", &nodes[0], "exec", &container, "sh", "-c", "echo kept > /www/data/note"]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(std::fs::read_to_string(storage.path().join(&volume).join("note")).unwrap(), "kept\n");
        let r = t.req("POST", &format!("/1.0/apps/{app}/env")).admin().json(json!({"envs": [{"name": "A", "value": "1"}]})).send().await;
        assert!(stream_errors(&r.body).is_empty() && r.body.contains("Started unit"), "{}", r.body);
        assert!(!crate::docker::containers(&nodes[0], &format!("torii.app={app}")).contains(&container), "the container was replaced");
        assert_eq!(t.app_get(&host, "/data/note").await, (200, "kept\n".into()));

        t.req("DELETE", &format!("/1.0/apps/{app}")).admin().send().await.expect_status(200);
        t.req("DELETE", &format!("/1.4/volumes/{volume}")).admin().send().await.expect(200, "");
        let _ = Command::new("docker").args(["-H", &nodes[0], "volume", "rm", &format!("torii-vol-{volume}")]).output();
        t.stop().await;
    }
}
