//! compose.yml cannot run here (no Docker engine), so it is checked against
//! what it describes: every `USHER_*` setting it sets is one the binary
//! reads, every flag it passes is one `usher serve` takes, the admin port
//! Prometheus scrapes is the one the nodes listen on, the files it mounts
//! exist, and the Grafana dashboard draws only metrics the binary exports,
//! and all of them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Every `USHER_…` word in `text`.
fn usher_vars(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("USHER_") {
        let word: String = rest[at..].chars().take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_').collect();
        rest = &rest[at + word.len()..];
        if word.len() > "USHER_".len() && !word.ends_with('_') {
            out.insert(word);
        }
    }
    out
}

/// The services of compose.yml: `name:` lines indented by two under `services:`.
fn services(compose: &str) -> Vec<String> {
    let body = compose.split("\nservices:\n").nth(1).expect("compose.yml has services");
    body.lines()
        .take_while(|l| !l.starts_with(|c: char| c.is_ascii_alphabetic()))
        .filter(|l| l.starts_with("  ") && !l.starts_with("   ") && l.trim_end().ends_with(':'))
        .map(|l| l.trim().trim_end_matches(':').to_owned())
        .collect()
}

#[test]
fn compose_sets_only_settings_the_binary_reads_and_passes_only_its_flags() {
    let compose = read("compose.yml");
    let known: BTreeSet<String> = [read("gateway/src/config.rs"), read("gateway/src/main.rs")].iter().flat_map(|t| usher_vars(t)).collect();
    // The keys compose sets (a comment may mention others, e.g. to suggest them).
    let set: BTreeSet<String> =
        compose.lines().filter(|l| !l.trim_start().starts_with('#')).flat_map(|l| usher_vars(l.split(':').next().unwrap_or(""))).collect();
    assert!(set.contains("USHER_ADMIN_ADDR") && set.contains("USHER_KAFKA_BROKERS") && set.contains("USHER_REDIS_URL"), "{set:?}");
    for v in &set {
        assert!(known.contains(v), "compose.yml sets {v}, which the binary does not read");
    }
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_usher")).args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for line in compose.lines().filter(|l| l.trim_start().starts_with("command:") && l.contains("\"serve\"")) {
        for flag in line.split('"').filter(|w| w.starts_with("--")) {
            assert!(help.contains(flag), "compose.yml passes {flag} to `usher serve`, which does not take it:\n{help}");
        }
    }
}

/// README's configuration table is the settings list (`config::SETTINGS`,
/// the one declaration): a row for every setting naming its variable and,
/// where `usher serve` takes one, its flag (which `--help` lists); and no
/// variable the binary does not read.
#[test]
fn the_readme_configuration_table_is_the_settings_list() {
    let readme = read("README.md");
    let section = readme.split("## Configuration").nth(1).expect("README has a Configuration section");
    let rows: Vec<&str> = section.lines().skip_while(|l| !l.starts_with("| setting")).take_while(|l| l.starts_with('|')).collect();
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_usher")).args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for s in usher_gateway::config::SETTINGS {
        let row = rows
            .iter()
            .find(|r| r.split('|').nth(1).is_some_and(|c| c.contains(&format!("`{}`", s.name)) || c.contains(&format!("`[{}]`", s.name))))
            .unwrap_or_else(|| panic!("README's configuration table has no row for `{}`", s.name));
        if let Some(env) = s.env {
            assert!(row.contains(&format!("`{env}`")), "README's row for `{}` does not name {env}", s.name);
        }
        if s.flag {
            let flag = format!("--{}", s.name.replace('_', "-"));
            assert!(row.contains(&format!("`{flag}`")), "README's row for `{}` does not name {flag}", s.name);
            assert!(help.contains(&flag), "`usher serve --help` does not list {flag}:\n{help}");
        }
    }
    let read_by_binary: BTreeSet<&str> =
        usher_gateway::config::SETTINGS.iter().filter_map(|s| s.env).chain(["USHER_CONFIG", "USHER_PARTNER_RATE_PER_S"]).collect();
    for v in rows.iter().flat_map(|r| usher_vars(r)) {
        assert!(read_by_binary.contains(v.as_str()), "README's configuration table names {v}, which the binary does not read");
    }
}

#[test]
fn prometheus_scrapes_every_node_on_the_admin_port_the_nodes_listen_on() {
    let compose = read("compose.yml");
    let svcs = services(&compose);
    for s in ["postgres", "redis", "kafka", "prometheus", "grafana", "jaeger", "usher-1", "usher-2", "usher-3"] {
        assert!(svcs.iter().any(|x| x == s), "compose.yml has no service {s}: {svcs:?}");
    }
    let nodes: Vec<&String> = svcs.iter().filter(|s| s.starts_with("usher-")).collect();
    // The nodes listen on the admin port compose sets, which is the
    // image's (Dockerfile) and the binary's default.
    let admin_line = compose.lines().find(|l| l.trim_start().starts_with("USHER_ADMIN_ADDR:")).unwrap();
    let port = admin_line.rsplit(':').next().unwrap().trim();
    assert!(read("Dockerfile").contains(&format!("USHER_ADMIN_ADDR=0.0.0.0:{port}")), "Dockerfile's admin port is not {port}");
    assert_eq!(usher_gateway::config::Config::default().admin_addr.port().to_string(), port);
    let prom = read("deploy/prometheus.yml");
    let targets: BTreeSet<String> = prom
        .lines()
        .filter(|l| l.contains("targets:"))
        .flat_map(|l| l.split('"').skip(1).step_by(2).map(str::to_owned).collect::<Vec<_>>())
        .collect();
    let want: BTreeSet<String> = nodes.iter().map(|n| format!("{n}:{port}")).collect();
    assert_eq!(targets, want, "deploy/prometheus.yml must scrape exactly every node's admin listener");
    assert!(prom.contains("metrics_path: /metrics"));
    // Traces go to a service of this file, on OTLP/gRPC's port.
    let otlp = compose.lines().find_map(|l| l.trim().strip_prefix("USHER_OTLP_ENDPOINT: ")).expect("compose.yml sets USHER_OTLP_ENDPOINT");
    let host = otlp.trim_start_matches("http://").split(':').next().unwrap();
    assert!(svcs.iter().any(|s| s == host), "USHER_OTLP_ENDPOINT names {host}, not a service");
    assert!(otlp.ends_with(":4317"), "{otlp}: OTLP/gRPC listens on 4317");
}

#[test]
fn the_files_compose_mounts_exist_and_grafana_finds_the_dashboard_and_its_data_source() {
    let compose = read("compose.yml");
    for line in compose.lines().map(str::trim).filter(|l| l.starts_with("- ./")) {
        let local = line.trim_start_matches("- ").split(':').next().unwrap();
        assert!(root().join(local).exists(), "compose.yml mounts {local}, which is not in the repository");
    }
    let ds = read("deploy/grafana/provisioning/datasources/prometheus.yml");
    assert!(ds.contains("uid: prometheus") && ds.contains("url: http://prometheus:9090"));
    let provider = read("deploy/grafana/provisioning/dashboards/usher.yml");
    let path = provider.lines().find_map(|l| l.trim().strip_prefix("path: ")).unwrap();
    assert!(compose.contains(&format!("./deploy/grafana/dashboards:{path}")), "the dashboards folder is not mounted at {path}");
    let dash: serde_json::Value = serde_json::from_str(&read("deploy/grafana/dashboards/usher.json")).unwrap();
    for p in dash["panels"].as_array().unwrap().iter().filter(|p| p["type"] != "row") {
        assert_eq!(p["datasource"]["uid"], "prometheus", "panel {}", p["title"]);
    }
}

#[test]
fn the_dashboard_draws_every_metric_and_only_metrics_the_binary_exports() {
    let dash: serde_json::Value = serde_json::from_str(&read("deploy/grafana/dashboards/usher.json")).unwrap();
    let mut used = BTreeSet::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap();
            let mut rest = expr;
            while let Some(at) = rest.find("usher_") {
                let word: String = rest[at..].chars().take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_').collect();
                rest = &rest[at + word.len()..];
                let family = ["_bucket", "_sum", "_count"].iter().find_map(|s| word.strip_suffix(s)).unwrap_or(&word);
                let m = usher_actors::metrics::find(family)
                    .or_else(|| usher_actors::metrics::find(&word))
                    .unwrap_or_else(|| panic!("panel {} draws {word}, which the binary does not export", p["title"]));
                used.insert(m.name);
            }
        }
    }
    for m in usher_actors::metrics::ALL {
        assert!(used.contains(m.name), "the dashboard draws nothing of {}", m.name);
    }
}
