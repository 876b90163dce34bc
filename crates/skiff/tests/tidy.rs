//! The workspace's dependency rules, read from `cargo metadata` (as rust-analyzer's tidy does):
//! dependencies point one way (apimachinery, protobuf and the store at the bottom, the API
//! server above them, components above the client, the composition root and the binary on
//! top), and components (controllers, examples, later the scheduler, node agent, proxy, DNS)
//! never depend on the store or the API server. Dev-dependencies are free: tests may boot
//! anything.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::Value;

/// Every workspace crate with its layer; a crate may only depend on lower layers. A new crate
/// must be placed here.
const LAYERS: &[(&str, u8)] = &[
    ("skiff-apimachinery", 0),
    ("skiff-protobuf", 0),
    ("skiff-store", 0),
    ("skiff-apiserver", 1),
    ("skiff-client", 1),
    ("skiff-controllers", 2),
    ("skiff-scheduler", 2),
    ("skiff-sim-nodes", 2),
    ("skiff-proxy", 2),
    ("skiff-dns", 2),
    ("smtp-credentials", 2),
    // The node agent runs the service proxy.
    ("skiff-agent", 3),
    ("skiff-cluster", 4),
    ("skiff", 5),
];

/// The crates that are components: clients of the API and nothing more.
const COMPONENTS: &[&str] = &[
    "skiff-controllers",
    "skiff-scheduler",
    "skiff-sim-nodes",
    "skiff-agent",
    "skiff-proxy",
    "skiff-dns",
    "smtp-credentials",
];

/// What components must never depend on.
const SERVER_SIDE: &[&str] = &["skiff-store", "skiff-apiserver", "skiff-cluster"];

/// Each workspace crate's normal (non-dev) dependencies on other workspace crates.
fn workspace_dependencies() -> BTreeMap<String, Vec<String>> {
    let output = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: Value = serde_json::from_slice(&output.stdout).unwrap();
    let packages = metadata["packages"].as_array().unwrap();
    let names: Vec<&str> = packages
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    packages
        .iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["kind"].is_null() || d["kind"] == "build")
                .filter_map(|d| d["name"].as_str())
                .filter(|d| names.contains(d))
                .map(str::to_string)
                .collect();
            (p["name"].as_str().unwrap().to_string(), deps)
        })
        .collect()
}

fn layer(name: &str) -> u8 {
    LAYERS
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("crate {name} has no layer in tests/tidy.rs: place it"))
        .1
}

#[test]
fn dependencies_should_point_down_and_components_should_never_reach_the_server() {
    let mut problems = Vec::new();
    for (name, deps) in workspace_dependencies() {
        for dep in &deps {
            if layer(dep) >= layer(&name) {
                problems.push(format!("{name} depends on {dep}, which is not below it"));
            }
            if COMPONENTS.contains(&name.as_str()) && SERVER_SIDE.contains(&dep.as_str()) {
                problems.push(format!(
                    "component {name} depends on {dep}: components reach the cluster through the API only"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
