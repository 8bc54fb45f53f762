//! Builds the guest workspace (`plugins/`) for wasm32-wasip2 so built-in plugins
//! can be embedded in the `torii` binary and test plugins handed to the tests.
//!
//! The guest build runs in its own target dir so it never waits on the outer
//! cargo lock, with an environment scrubbed of the outer build's settings.

use std::path::PathBuf;
use std::process::{Command, Stdio};

const GUESTS: &[&str] = &["auth_native", "auth_saml", "provisioner_wasm", "provisioner_docker", "provisioner_swarm", "router_embedded", "router_api", "router_caddy", "service_tsuru", "service_osb", "iaas_inventory", "iaas_ec2", "test_chaos", "test_http_backends", "app_hello", "app_echo_env", "app_burn", "app_hog", "app_fetch"];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap().to_path_buf();
    let plugins = root.join("plugins");
    let target_dir = root.join("target").join("guest");

    // The whole guest workspace (cargo scans a directory for any change), so
    // a new plugin crate needs no entry here.
    println!("cargo:rerun-if-changed={}", plugins.display());
    println!("cargo:rerun-if-changed={}", root.join("wit").display());

    ensure_wasm_target();

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&plugins)
        .args(["build", "--release", "--locked", "--target", "wasm32-wasip2", "--target-dir"])
        .arg(&target_dir)
        .stdout(Stdio::from(std::io::stderr()));
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "TARGET",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("run cargo for the guest plugins");
    if !status.success() {
        panic!(
            "building the guest plugins failed (is the target installed? `rustup target add wasm32-wasip2`)"
        );
    }

    let out = target_dir.join("wasm32-wasip2").join("release");
    for guest in GUESTS {
        let path = out.join(format!("{guest}.wasm"));
        assert!(path.exists(), "guest build produced no {}", path.display());
        println!("cargo:rustc-env=TORII_GUEST_{}={}", guest.to_uppercase(), path.display());
    }
}

/// Adds the wasm32-wasip2 target through rustup when the toolchain lacks it,
/// so a fresh clone builds with plain `cargo build`.
fn ensure_wasm_target() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc).args(["--print", "sysroot"]).output().ok().filter(|o| o.status.success());
    let installed = sysroot
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()).join("lib/rustlib/wasm32-wasip2").exists())
        .unwrap_or(false);
    if installed {
        return;
    }
    println!("cargo:warning=adding the wasm32-wasip2 target with rustup (built-in plugins are compiled for it)");
    let added = Command::new("rustup")
        .args(["target", "add", "wasm32-wasip2"])
        .stdout(Stdio::from(std::io::stderr()))
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !added {
        panic!("the wasm32-wasip2 target is missing and rustup could not add it: run `rustup target add wasm32-wasip2`");
    }
}
