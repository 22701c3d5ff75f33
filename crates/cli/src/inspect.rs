//! `preflight inspect`: one-shot (or `--watch`) check of this node.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use preflight_agent::expectations::Source;
use preflight_agent::monitor::{MonitorConfig, NodeMonitor, Pipeline};
use preflight_model::{Code, Finding, Verdict};
use preflight_policy::expect::Expectations;

use crate::{config, output, EXIT_GO, EXIT_NO_GO, EXIT_UNDECIDED, EXIT_USAGE};

#[derive(clap::Args)]
pub struct Args {
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
    /// Keep running and print one line per finding change as it happens
    /// (`+` appeared, `-` cleared). Stops on Ctrl-C or SIGTERM with the exit
    /// code of the last verdict.
    #[arg(long)]
    watch: bool,
    /// preflight configuration file (TOML): severities and thresholds.
    #[arg(long, short, value_name = "FILE", env = "PREFLIGHT_CONFIG")]
    config: Option<PathBuf>,
    /// Node name shown in the output [default: this host's name].
    #[arg(long)]
    node: Option<String>,
    /// Receive buffer of the netlink notification socket, in bytes (with
    /// --watch). Overruns are recovered by a full re-read; tests use a tiny
    /// buffer to force them.
    #[arg(long, value_name = "BYTES", default_value_t = 4 * 1024 * 1024, hide_short_help = true)]
    netlink_rcvbuf: usize,
    /// The node's os-net-config file: check the running state against it
    /// (DHCP fallback, missing addresses, routes, bond members, MTU, mode).
    /// Default: /etc/os-net-config/config.{yaml,json} when it exists.
    /// The same as `--expect os-net-config:FILE`.
    #[arg(long, value_name = "FILE", conflicts_with = "expect")]
    os_net_config: Option<PathBuf>,
    /// Which network stack's files declare the expected state, and
    /// optionally a file or directory in place of the stack's own:
    /// `os-net-config[:FILE]` or `networkd[:DIR]` (systemd-networkd's
    /// .netdev/.network files; default its search path, /etc, /run,
    /// /usr/local/lib, /usr/lib systemd/network) or `ifupdown[:FILE]`
    /// (default /etc/network/interfaces, `source` lines followed) or
    /// `networkmanager[:DIR]` (*.nmconnection keyfiles, DIR/NetworkManager.conf
    /// and DIR/conf.d; default NetworkManager's own directories) or
    /// `netplan[:DIR]` (*.yaml; default /lib, /etc and /run netplan, merged
    /// as netplan merges them).
    /// Default: agent.expect.
    #[arg(long, value_name = "STACK[:PATH]", value_parser = parse_expect)]
    expect: Option<(&'static str, Option<PathBuf>)>,
    /// os-net-config mapping file (`interface_mapping: {nic1: em3}`) for nicN
    /// names; without it nicN follow os-net-config's ordering rule.
    #[arg(long, value_name = "FILE")]
    nic_mapping: Option<PathBuf>,
    /// OVSDB socket of Open vSwitch (OVS bonds: `ovs_bond` in an
    /// `ovs_bridge`), or `off` to not read it. Default: agent.ovsdb, else
    /// /run/openvswitch/db.sock, then /var/run/openvswitch/db.sock.
    #[arg(long, value_name = "PATH|off")]
    ovsdb: Option<String>,
    /// Also send one DHCPDISCOVER out of each interface the expected state
    /// addresses statically (none if it uses DHCP anywhere) and show whether
    /// a DHCP server offers: os-net-config's fallback to DHCP would need one.
    /// Never takes a lease. With --watch, repeated every
    /// agent.dhcp_probe_interval (default 10m).
    #[arg(long)]
    dhcp_probe: bool,
    /// Do not check each bond member's own path (an ARP probe out of each
    /// member to the gateways or neighbours of every network its bond
    /// carries; adds at most 2 s). With --watch, the check repeats every
    /// agent.member_path_check (default 10s).
    #[arg(long)]
    no_path_check: bool,
    /// How long to listen for LLDP on the bond members (their switch and
    /// port, BOND_SINGLE_SWITCH, MTU_EXCEEDS_SWITCH, SWITCH_VLAN_MISSING),
    /// alongside the path check. Switches send every 30 s, so the default
    /// mostly hears nothing; `31s` waits out one interval, `0s` skips it.
    /// The agent listens all the time. Ignored with --watch (it listens).
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = crate::cmd::parse_duration)]
    lldp_wait: std::time::Duration,
}

/// Requests per path in one-shot `inspect`, and the wait for each: at most
/// 1.8 s added when a path does not answer.
const PATH_TRIES: u32 = 3;
const PATH_PER_TRY: std::time::Duration = std::time::Duration::from_millis(600);

fn exit_for(v: Verdict) -> u8 {
    match v {
        Verdict::Go => EXIT_GO,
        Verdict::NoGo => EXIT_NO_GO,
    }
}

pub async fn run(args: Args) -> u8 {
    let cfg = match config::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("preflight: bad configuration: {e}");
            return EXIT_USAGE;
        }
    };
    let member_paths = cfg.agent.member_paths();
    let configured = preflight_agent::member_path::configured_addresses(&cfg.agent.probes);
    let node = args.node.clone().unwrap_or(cfg.agent.node);
    let expected = match (&args.expect, &args.os_net_config) {
        (Some(("networkd", _)), _) if args.nic_mapping.is_some() => {
            eprintln!(
                "preflight: --nic-mapping is os-net-config's; systemd-networkd has no nicN names"
            );
            return EXIT_USAGE;
        }
        (Some(("networkd", dir)), _) => Some(Source::networkd(dir.clone())),
        (Some(("ifupdown", _)), _) if args.nic_mapping.is_some() => {
            eprintln!("preflight: --nic-mapping is os-net-config's; ifupdown has no nicN names");
            return EXIT_USAGE;
        }
        (Some(("ifupdown", file)), _) => Some(Source::ifupdown(file.clone())),
        (Some(("networkmanager", _)), _) if args.nic_mapping.is_some() => {
            eprintln!(
                "preflight: --nic-mapping is os-net-config's; NetworkManager has no nicN names"
            );
            return EXIT_USAGE;
        }
        (Some(("networkmanager", dir)), _) => Some(Source::networkmanager(dir.clone())),
        (Some(("netplan", _)), _) if args.nic_mapping.is_some() => {
            eprintln!("preflight: --nic-mapping is os-net-config's; netplan has no nicN names");
            return EXIT_USAGE;
        }
        (Some(("netplan", dir)), _) => Some(Source::netplan(dir.clone())),
        (Some((_, Some(p))), _) | (None, Some(p)) => {
            Some(Source::new(p.clone(), args.nic_mapping.clone()))
        }
        (Some(_), _) => match preflight_agent::expectations::default_path() {
            Some(p) => Some(Source::new(p, args.nic_mapping.clone())),
            None => {
                eprintln!("preflight: --expect os-net-config: no file at /etc/os-net-config/config.yaml or .json; name one with os-net-config:FILE");
                return EXIT_USAGE;
            }
        },
        (None, None) if args.nic_mapping.is_some() => {
            eprintln!(
                "preflight: --nic-mapping needs --os-net-config or --expect os-net-config[:FILE]"
            );
            return EXIT_USAGE;
        }
        (None, None) => cfg.agent.expectations,
    };
    let ovsdb = match args.ovsdb.as_deref() {
        Some("off") => None,
        Some(p) => Some(preflight_ovsdb::SocketPaths::explicit(p)),
        None => cfg.agent.ovsdb,
    };
    if args.watch {
        let monitor = NodeMonitor::start(MonitorConfig {
            node: node.clone(),
            policy: cfg.policy,
            watch: preflight_netlink::WatchConfig {
                receive_buffer: args.netlink_rcvbuf,
                ..preflight_netlink::WatchConfig::default()
            },
            expectations: expected,
            configured_expectations: cfg.agent.configured_expectations,
            probes: None,
            ovsdb,
            dhcp_probe: args.dhcp_probe.then(|| {
                cfg.agent
                    .dhcp_probe
                    .unwrap_or(preflight_agent::config::DEFAULT_DHCP_PROBE_INTERVAL)
            }),
            member_paths: if args.no_path_check {
                None
            } else {
                member_paths
            },
        })
        .await;
        return match monitor {
            Ok(m) => watch(&args, &node, m).await,
            Err(e) => {
                eprintln!("preflight: cannot watch this node's network state: {e}");
                EXIT_UNDECIDED
            }
        };
    }
    let mut pipeline = Pipeline::new(
        node,
        cfg.policy,
        cfg.agent.configured_expectations,
        expected,
    );
    let mut snap = match preflight_netlink::dump().await {
        Ok(mut s) => {
            if let Some(paths) = &ovsdb {
                s.ovs = preflight_ovsdb::read_once(paths).await;
            }
            s
        }
        Err(e) => {
            eprintln!("preflight: cannot read this node's network state: {e}");
            eprintln!("preflight: could not decide; treat as no-go");
            return EXIT_UNDECIDED;
        }
    };
    pipeline.refresh_expectations(&snap);
    let note = pipeline
        .expected()
        .map(|src| expectation_note(&src.path, pipeline.evaluator().expectations()))
        .map(|n| match &args.expect {
            Some(("networkd", _)) if !n.contains("systemd-networkd") => {
                format!("{n} (systemd-networkd)")
            }
            _ => n,
        });
    if args.dhcp_probe {
        let mut results = Vec::new();
        for i in preflight_agent::dhcp::static_interfaces(pipeline.evaluator().expectations()) {
            results.push(
                preflight_probe::dhcp::check(&i, preflight_probe::dhcp::DEFAULT_TIMEOUT).await,
            );
        }
        pipeline.set_dhcp_probes(results);
    }
    // Side by side: together they add at most the longer of the two.
    let paths = async {
        if args.no_path_check {
            None
        } else {
            Some(
                preflight_agent::member_path::once(&snap, &configured, PATH_TRIES, PATH_PER_TRY)
                    .await,
            )
        }
    };
    let (paths, lldp) = tokio::join!(paths, crate::lldp::heard(&snap, args.lldp_wait));
    if let Some(p) = paths {
        pipeline.set_member_paths(p);
    }
    snap.lldp = lldp;
    let state = pipeline.state(&snap);
    if args.json {
        match serde_json::to_string_pretty(&state) {
            Ok(s) => crate::emit(&format!("{s}\n")),
            Err(e) => {
                eprintln!("preflight: cannot encode JSON: {e}");
                return EXIT_UNDECIDED;
            }
        }
    } else {
        let mut out = output::table(&state, note.as_deref());
        out.push_str(&dhcp_section(&state, args.dhcp_probe));
        crate::emit(&out);
    }
    exit_for(state.verdict)
}

/// The DHCP probe results under the table (`--dhcp-probe`).
fn dhcp_section(state: &preflight_model::NodeState, asked: bool) -> String {
    let mut out = String::new();
    if !state.dhcp_probes.is_empty() {
        out.push_str("\nDHCP PROBE (would a fallback to DHCP find a server?)\n");
        for d in &state.dhcp_probes {
            out.push_str(&format!("  {}\n", crate::probe::dhcp_line(d)));
        }
    } else if asked {
        out.push_str("\nDHCP PROBE: nothing probed (no expected state, or it uses DHCP itself: use_dhcp: true)\n");
    }
    out
}

fn line(sign: char, f: &Finding, json: bool, node: &str) -> String {
    let now = preflight_model::time::format(SystemTime::now());
    if json {
        serde_json::json!({
            "time": now,
            "node": node,
            "change": if sign == '+' { "appeared" } else { "cleared" },
            "finding": f,
        })
        .to_string()
    } else {
        format!(
            "{now} {sign} {:<8} {:<22} {:<16} {}",
            f.severity.as_str().to_uppercase(),
            f.code,
            output::escape(&f.subject),
            output::escape(&f.message)
        )
    }
}

/// `STACK[:PATH]` of `--expect`.
fn parse_expect(s: &str) -> Result<(&'static str, Option<PathBuf>), String> {
    preflight_agent::expectations::parse_spec(s)
}

/// One line on what the expected state is and what of it is not checked.
fn expectation_note(path: &std::path::Path, exp: Option<&Expectations>) -> String {
    output::escape(&match exp {
        Some(e) => {
            let mapped: Vec<String> = e
                .interfaces
                .iter()
                .filter_map(|i| i.written_as.as_ref().map(|w| format!("{w}={}", i.name)))
                .collect();
            let label = if e.files.is_empty() {
                path.display().to_string()
            } else {
                e.source.clone()
            };
            let files = if e.files.is_empty() {
                String::new()
            } else {
                format!("; files read: {}", e.files.join(", "))
            };
            let unchecked = if e.unchecked.is_empty() {
                String::new()
            } else {
                format!(
                    "; {} declarations not checked (EXPECTATION_UNCHECKED)",
                    e.unchecked.len()
                )
            };
            format!(
                "expected state: {label} ({} interfaces{}{}{files}{unchecked})",
                e.interfaces.len(),
                if mapped.is_empty() {
                    String::new()
                } else {
                    format!("; {}", mapped.join(" "))
                },
                if e.unsupported.is_empty() {
                    String::new()
                } else {
                    format!("; not checked: {}", e.unsupported.join(", "))
                }
            )
        }
        None => format!(
            "expected state: {} could not be read (see EXPECTATIONS_INVALID)",
            path.display()
        ),
    })
}

async fn watch(args: &Args, node: &str, mut monitor: NodeMonitor) -> u8 {
    let mut shown: BTreeMap<(Code, String), Finding> = BTreeMap::new();
    let mut sigterm = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("preflight: cannot install SIGTERM handler: {e}");
            return EXIT_UNDECIDED;
        }
    };
    let path = args.os_net_config.clone().or_else(|| {
        monitor
            .states
            .borrow()
            .state
            .expected_from
            .as_ref()
            .map(PathBuf::from)
    });
    let mut first = true;
    let mut exp_seen: Option<Arc<Expectations>> = None;
    let mut states = monitor.states.clone();
    loop {
        let current = states.borrow_and_update().clone();
        let mut out = String::new();
        if let Some(p) = &path {
            let changed = match (&exp_seen, &current.expectations) {
                (Some(a), Some(b)) => !Arc::ptr_eq(a, b),
                (None, None) => !first,
                _ => true,
            };
            if (changed || first) && !args.json {
                out.push_str(&expectation_note(p, current.expectations.as_deref()));
                out.push('\n');
            }
            exp_seen.clone_from(&current.expectations);
        }
        let verdict = current.state.verdict;
        let now: BTreeMap<(Code, String), Finding> = current
            .state
            .findings
            .iter()
            .map(|f| ((f.code, f.subject.clone()), f.clone()))
            .collect();
        for (k, f) in &now {
            if shown.get(k).is_none_or(|old| old.severity != f.severity) {
                out.push_str(&line('+', f, args.json, node));
                out.push('\n');
            }
        }
        for (k, f) in &shown {
            if !now.contains_key(k) {
                out.push_str(&line('-', f, args.json, node));
                out.push('\n');
            }
        }
        if first && !args.json {
            out.insert_str(
                0,
                &format!(
                    "watching {}: {} ({} findings)\n",
                    output::escape(node),
                    verdict.as_str().to_uppercase(),
                    now.len()
                ),
            );
            first = false;
        }
        if !out.is_empty() {
            crate::emit(&out);
        }
        shown = now;
        tokio::select! {
            r = states.changed() => {
                if r.is_err() {
                    // The pipeline ended: report why and stop, fail-closed.
                    let why = match monitor.finished().await {
                        Err(e) => e.to_string(),
                        Ok(()) => "watch ended".into(),
                    };
                    eprintln!("preflight: lost the netlink watch: {why}");
                    return EXIT_UNDECIDED;
                }
            }
            _ = tokio::signal::ctrl_c() => return exit_for(verdict),
            _ = sigterm.recv() => return exit_for(verdict),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_watch_line_shows_hidden_characters_escaped() {
        let evil = "eth\u{2066}1\u{9b}2J";
        let f = preflight_model::Finding {
            code: preflight_model::Code::BondPortDown,
            severity: preflight_model::Severity::Critical,
            subject: format!("bond0/{evil}"),
            message: format!("bond0 port {evil} is down"),
            since: std::time::SystemTime::UNIX_EPOCH,
        };
        let out = super::line('+', &f, false, "n1");
        crate::output::escape_tests::assert_shown_as_is(&out);
        assert!(out.contains("bond0/eth\\u{2066}1"), "{out}");
        let note = super::expectation_note(std::path::Path::new(evil), None);
        crate::output::escape_tests::assert_shown_as_is(&note);
    }
}
