//! Repository checks that keep the architecture honest: who may depend on
//! whom (here), module cycles (`modules`), function length (`lengths`) and
//! documentation (`docs`). `tidy` runs them all; so does `cargo test -p xtask`.

pub mod docs;
pub mod lengths;
pub mod modules;
pub mod source;

use std::collections::{BTreeSet, HashMap};
use std::process::Command;

use serde_json::Value;

/// Crates the pure domain must never reach, directly or not.
const ENGINE_FORBIDDEN: &[&str] = &["tokio", "sqlx", "tonic", "ractor", "axum", "hyper", "prost"];
/// Direct dependencies each crate must not take (who may know what).
/// `usher-test-support` is a dev-dependency only (the bench may use it):
/// nothing test-only reaches the `usher` binary.
const DIRECT_FORBIDDEN: &[(&str, &[&str])] = &[
    ("usher-engine", &["usher-test-support"]),
    ("usher-actors", &["sqlx", "tonic", "axum", "prost", "usher-proto", "usher-adapters", "usher-test-support"]),
    ("usher-adapters", &["tonic", "axum", "ractor", "usher-test-support"]),
    ("usher-proto", &["sqlx", "ractor", "usher-engine", "usher-actors", "usher-test-support"]),
    ("usher-gateway", &["usher-test-support"]),
];

fn metadata() -> Result<Value, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .map_err(|e| format!("cargo metadata: {e}"))?;
    if !out.status.success() {
        return Err(format!("cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("cargo metadata output: {e}"))
}

/// The resolved dependency graph, normal dependencies only.
struct Graph {
    /// Workspace package name → package id.
    id_of: HashMap<String, String>,
    /// Package id → ids of its normal dependencies.
    deps: HashMap<String, Vec<String>>,
    /// Package id → package name.
    name_of: HashMap<String, String>,
}

fn graph(meta: &Value) -> Graph {
    let mut name_of = HashMap::new();
    let mut id_of = HashMap::new();
    for p in meta["packages"].as_array().into_iter().flatten() {
        let (id, name) = (p["id"].as_str().unwrap_or_default(), p["name"].as_str().unwrap_or_default());
        name_of.insert(id.to_owned(), name.to_owned());
        if meta["workspace_members"].as_array().into_iter().flatten().any(|m| m.as_str() == Some(id)) {
            id_of.insert(name.to_owned(), id.to_owned());
        }
    }
    let mut deps = HashMap::new();
    for n in meta["resolve"]["nodes"].as_array().into_iter().flatten() {
        let normal: Vec<String> = n["deps"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|d| d["dep_kinds"].as_array().into_iter().flatten().any(|k| k["kind"].is_null()))
            .filter_map(|d| d["pkg"].as_str().map(str::to_owned))
            .collect();
        deps.insert(n["id"].as_str().unwrap_or_default().to_owned(), normal);
    }
    Graph { id_of, deps, name_of }
}

/// A check over the workspace's sources: its findings go to the list;
/// `Err` when it could not read them.
type Check = fn(&[source::Crate], &mut Vec<String>) -> Result<(), String>;

/// Every check; the errors are sentences, one per finding.
pub fn tidy() -> Result<(), Vec<String>> {
    let mut errors = dependencies().err().unwrap_or_default();
    let crates = source::crates().map_err(|e| vec![e])?;
    let checks: [Check; 3] = [modules::check, lengths::check, docs::check_module_docs];
    for check in checks {
        check(&crates, &mut errors).map_err(|e| vec![e])?;
    }
    docs::check_map_paths(&mut errors).map_err(|e| vec![e])?;
    if errors.is_empty() { Ok(()) } else { Err(errors) }
}

/// The dependency rules between crates, from `cargo metadata`.
pub fn dependencies() -> Result<(), Vec<String>> {
    let meta = metadata().map_err(|e| vec![e])?;
    let Graph { id_of, deps, name_of } = graph(&meta);
    let mut errors = Vec::new();
    let Some(engine) = id_of.get("usher-engine") else { return Err(vec!["no usher-engine in the workspace".into()]) };
    let mut seen = BTreeSet::new();
    let mut stack = vec![engine.clone()];
    while let Some(id) = stack.pop() {
        for d in deps.get(&id).into_iter().flatten() {
            if seen.insert(d.clone()) {
                stack.push(d.clone());
            }
        }
    }
    for id in &seen {
        let name = &name_of[id];
        if ENGINE_FORBIDDEN.contains(&name.as_str()) {
            errors.push(format!("usher-engine must stay pure but depends on {name}"));
        }
    }
    for (krate, forbidden) in DIRECT_FORBIDDEN {
        let Some(id) = id_of.get(*krate) else { continue };
        for d in deps.get(id).into_iter().flatten() {
            if forbidden.contains(&name_of[d].as_str()) {
                errors.push(format!("{krate} must not depend on {}", name_of[d]));
            }
        }
    }
    if errors.is_empty() { Ok(()) } else { Err(errors) }
}

#[cfg(test)]
mod tests {
    #[test]
    fn tidy_finds_nothing() {
        if let Err(errors) = super::tidy() {
            panic!("tidy found:\n{}", errors.join("\n"));
        }
    }
}
