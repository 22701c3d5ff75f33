//! The agent's DHCP probe (`agent.dhcp_probe`): on a node whose expected
//! configuration is entirely static, asks now and then whether a DHCP
//! server answers on each statically addressed interface. That is what
//! os-net-config's safe-defaults fallback (DHCP on every interface) would
//! depend on; with no server answering, a renumbered node goes dark on its
//! next run, the seed's exact outage. One DHCPDISCOVER per interface per
//! round, never a REQUEST. Informational: the results go into the report,
//! no finding is raised from them.

use std::time::Duration;

use preflight_model::DhcpProbeResult;
use preflight_policy::expect::Expectations;
use tokio::sync::watch;

/// The interfaces to probe: every kernel interface the expected
/// configuration addresses statically (at least one IPv4 address), and none
/// at all when the file uses DHCP anywhere (`use_dhcp: true`): there, a DHCP
/// server is part of the design and its absence would show as findings.
#[must_use]
pub fn static_interfaces(exp: Option<&Expectations>) -> Vec<String> {
    let Some(exp) = exp else { return Vec::new() };
    if exp.interfaces.iter().any(|x| x.dhcp) {
        return Vec::new();
    }
    let mut out: Vec<String> = exp
        .interfaces
        .iter()
        .filter(|x| x.kind.in_kernel() && x.addresses.iter().any(|(a, _)| a.is_ipv4()))
        .map(|x| x.name.clone())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Probes every interface in `interfaces` once at start, then every
/// `every`, and at once when the set of interfaces changes; the receiver
/// holds the results of the last round. Ends when the receiver is dropped.
#[must_use]
pub fn spawn(
    every: Duration,
    timeout: Duration,
    mut interfaces: watch::Receiver<Vec<String>>,
) -> (
    watch::Receiver<Vec<DhcpProbeResult>>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = watch::channel(Vec::new());
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                r = interfaces.changed() => if r.is_err() { return },
            }
            let list = interfaces.borrow_and_update().clone();
            let mut results = Vec::with_capacity(list.len());
            // One at a time: a DISCOVER is cheap, but not free for the server.
            for i in &list {
                let r = preflight_probe::dhcp::check(i, timeout).await;
                tracing::info!(interface = %i, offered = r.offered, server = ?r.server, invalid_offer = ?r.invalid_offer, error = ?r.error, "DHCP probe");
                results.push(r);
            }
            if tx.send(results).is_err() {
                return;
            }
        }
    });
    (rx, task)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exp(yaml: &str) -> Expectations {
        let doc = preflight_policy::expect::parse_document("t.yaml", yaml).expect("parses");
        preflight_policy::expect::from_os_net_config(
            "t.yaml",
            &doc,
            &std::collections::BTreeMap::new(),
        )
        .expect("reads")
    }

    #[test]
    fn static_files_probe_their_addressed_interfaces_dhcp_files_none() {
        let s = "network_config:\n  - type: interface\n    name: eth0\n    addresses:\n      - ip_netmask: 192.0.2.10/24\n  - type: interface\n    name: eth1\n  - type: vlan\n    device: eth0\n    vlan_id: 20\n    addresses:\n      - ip_netmask: 198.51.100.5/24\n  - type: interface\n    name: eth2\n    addresses:\n      - ip_netmask: 2001:db8::5/64\n";
        let e = exp(s);
        assert_eq!(static_interfaces(Some(&e)), ["eth0", "eth0.20"]);
        let d = exp(&s.replace("    name: eth1\n", "    name: eth1\n    use_dhcp: true\n"));
        assert!(static_interfaces(Some(&d)).is_empty(), "DHCP by design");
        assert!(static_interfaces(None).is_empty());
    }
}
