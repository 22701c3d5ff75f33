//! The crate boundaries of docs/design.md, checked on every Cargo.toml of
//! the workspace: only crates/netlink speaks rtnetlink, only crates/client
//! has an HTTP client, and the CLI and the bench reach aggregators through
//! the client crate, never the agent's.

use std::collections::BTreeMap;

fn manifests() -> BTreeMap<String, toml::Table> {
    let root = preflight_tests::workspace();
    let mut out = BTreeMap::new();
    let mut dirs: Vec<_> = std::fs::read_dir(root.join("crates"))
        .expect("crates/")
        .map(|e| e.expect("entry").path())
        .collect();
    dirs.push(root.join("tests"));
    for d in dirs {
        let text = std::fs::read_to_string(d.join("Cargo.toml"))
            .unwrap_or_else(|e| panic!("{}: {e}", d.display()));
        let name = d.file_name().expect("name").to_string_lossy().into_owned();
        out.insert(name, text.parse().expect("Cargo.toml parses"));
    }
    assert!(out.len() >= 9, "found only {:?}", out.keys());
    out
}

/// (dependency name, its features) of every normal dependency.
fn deps(m: &toml::Table) -> Vec<(String, Vec<String>)> {
    let Some(t) = m.get("dependencies").and_then(toml::Value::as_table) else {
        return Vec::new();
    };
    t.iter()
        .map(|(k, v)| {
            let features = v
                .get("features")
                .and_then(toml::Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|f| f.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            (k.clone(), features)
        })
        .collect()
}

#[test]
fn crate_boundaries_hold() {
    for (krate, m) in manifests() {
        for (dep, features) in deps(&m) {
            if dep == "rtnetlink" || dep.starts_with("netlink-packet-route") {
                assert_eq!(krate, "netlink", "{krate} depends on {dep}");
            }
            let http_client = (dep == "hyper" && features.iter().any(|f| f == "client"))
                || (dep == "hyper-util" && features.iter().any(|f| f.starts_with("client")));
            assert!(
                !http_client || krate == "client",
                "{krate} has an HTTP client ({dep} {features:?}); use preflight-client"
            );
            if dep == "preflight-agent" {
                // The CLI and the agent's own binary run the agent daemon;
                // nothing else needs it.
                assert!(
                    krate == "cli" || krate == "agentd",
                    "{krate} depends on preflight-agent"
                );
            }
        }
    }
}

/// The CLI may run the agent, but it talks HTTP only through the client.
#[test]
fn the_cli_does_not_use_the_agent_for_http() {
    let src = preflight_tests::workspace().join("crates/cli/src");
    let mut files = vec![src.clone()];
    let mut checked = 0;
    while let Some(p) = files.pop() {
        if p.is_dir() {
            files.extend(
                std::fs::read_dir(&p)
                    .expect("dir")
                    .map(|e| e.expect("entry").path()),
            );
        } else if p.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&p).expect("read");
            checked += 1;
            for bad in [
                "preflight_agent::http",
                "preflight_agent::Client",
                "preflight_agent::BaseUrl",
                "preflight_agent::{",
            ] {
                assert!(!text.contains(bad), "{}: uses `{bad}`", p.display());
            }
        }
    }
    assert!(checked > 5, "read only {checked} files");
}

/// The table "Who may import whom" of docs/design.md: the preflight crates
/// each crate may depend on (normal dependencies).
#[test]
fn crates_use_only_the_layers_below_them() {
    let lower = ["model", "netlink", "ovsdb", "policy", "probe", "client"];
    let allowed = |krate: &str| -> Vec<&str> {
        match krate {
            "model" => vec![],
            "netlink" | "ovsdb" | "policy" | "probe" | "client" | "aggregator" => vec!["model"],
            "agent" => lower.to_vec(),
            "agentd" => vec!["model", "policy", "agent"],
            "cli" => [&lower[..], &["agent", "agentd", "aggregator"]].concat(),
            "bench" => vec![
                "model",
                "netlink",
                "policy",
                "client",
                "aggregator",
                "tests",
            ],
            other => panic!("{other}: not in docs/design.md's table; add it there and here"),
        }
    };
    for (krate, m) in manifests() {
        if krate == "tests" {
            continue;
        }
        for (dep, _) in deps(&m) {
            let Some(dep) = dep.strip_prefix("preflight-") else {
                continue;
            };
            assert!(
                allowed(&krate).contains(&dep),
                "{krate} depends on preflight-{dep}; docs/design.md allows {:?}",
                allowed(&krate)
            );
        }
    }
}
