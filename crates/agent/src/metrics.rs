//! The agent's Prometheus metrics. A new evaluation is only recorded
//! ([`AgentMetrics::update`] keeps the latest state); the gauges are set from
//! it at the next scrape, once, however many states came in between. In a
//! flap storm the agent publishes up to twenty states a second and is
//! scraped once every few seconds: resetting and re-creating a few hundred
//! labelled series per state was a sixth of its CPU. A scrape without a new
//! state only encodes what is already there.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use preflight_model::{MiiStatus, NodeState, Severity, Verdict};
use preflight_netlink::WatchStats;
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

mod lldp;

/// Every metric of the agent.
#[derive(Debug, Clone)]
pub struct AgentMetrics {
    registry: Registry,
    bond_info: IntGaugeVec,
    bond_ports: IntGaugeVec,
    bond_ports_up: IntGaugeVec,
    bond_active_port: IntGaugeVec,
    port_mii_up: IntGaugeVec,
    port_link_failures: IntGaugeVec,
    port_actor: IntGaugeVec,
    port_partner: IntGaugeVec,
    port_agg_match: IntGaugeVec,
    if_oper_up: IntGaugeVec,
    if_carrier: IntGaugeVec,
    if_carrier_changes: IntGaugeVec,
    finding: IntGaugeVec,
    probe_up: IntGaugeVec,
    probe_loss: prometheus::GaugeVec,
    probe_rtt: prometheus::GaugeVec,
    member_path_up: IntGaugeVec,
    lldp_neighbor: IntGaugeVec,
    lldp_dropped: IntCounterVec,
    lldp_stats: Arc<Mutex<Option<Arc<preflight_probe::lldp::listen::Stats>>>>,
    node_go: IntGauge,
    resyncs: IntCounterVec,
    parse_errors: IntCounter,
    netlink_messages: IntCounter,
    /// Report pushes by aggregator and result.
    pub pushes: IntCounterVec,
    /// Per aggregator: 1 when the last push was accepted.
    pub reachable: IntGaugeVec,
    /// Reports an aggregator refused, by aggregator and reason
    /// (`too_large`: over its body limit; `refused`: any other 4xx).
    pub rejected: IntCounterVec,
    /// The latest state not yet applied to the gauges. The lock is also
    /// held while a scrape applies and encodes, so no scrape sees gauges
    /// half reset.
    pending: Arc<Mutex<Option<Arc<NodeState>>>>,
}

fn gauge(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric")
}

impl AgentMetrics {
    /// Creates and registers every metric.
    ///
    /// # Panics
    /// Never in practice: names are static and unique.
    #[must_use]
    pub fn new() -> Self {
        let m = Self {
            registry: Registry::new(),
            bond_info: gauge(
                "preflight_bond_info",
                "Bonds on this node (always 1), with their mode.",
                &["bond", "type", "mode"],
            ),
            bond_ports: gauge(
                "preflight_bond_ports",
                "Ports enslaved to the bond (members of an OVS bond).",
                &["bond", "type"],
            ),
            bond_ports_up: gauge(
                "preflight_bond_ports_up",
                "Ports of the bond that are up: carrier and MII status up, as the findings count them (OVS: admin and link up, no error).",
                &["bond", "type"],
            ),
            bond_active_port: gauge(
                "preflight_bond_active_port",
                "1 for the bond's active port.",
                &["bond", "type", "port"],
            ),
            port_mii_up: gauge(
                "preflight_bond_port_mii_up",
                "1 when the bond port's MII status is up.",
                &["bond", "type", "port"],
            ),
            port_link_failures: gauge(
                "preflight_bond_port_link_failures",
                "Link failures the bonding driver counted on the port since it was enslaved (OVS: link_resets).",
                &["bond", "type", "port"],
            ),
            port_actor: gauge(
                "preflight_bond_port_lacp_actor_state",
                "802.3ad actor port state bits (63 = negotiated).",
                &["bond", "port"],
            ),
            port_partner: gauge(
                "preflight_bond_port_lacp_partner_state",
                "802.3ad partner port state bits.",
                &["bond", "port"],
            ),
            port_agg_match: gauge(
                "preflight_bond_port_aggregator_match",
                "1 when an 802.3ad port is in the bond's active aggregator.",
                &["bond", "port"],
            ),
            if_oper_up: gauge(
                "preflight_interface_oper_up",
                "1 when the interface's operational state is up.",
                &["interface"],
            ),
            if_carrier: gauge(
                "preflight_interface_carrier",
                "1 when the interface has carrier.",
                &["interface"],
            ),
            if_carrier_changes: gauge(
                "preflight_interface_carrier_changes",
                "Carrier changes the kernel counted since the interface was created.",
                &["interface"],
            ),
            finding: gauge(
                "preflight_finding_active",
                "One series per active finding (always 1).",
                &["code", "severity", "subject"],
            ),
            probe_up: gauge(
                "preflight_probe_up",
                "1 while a reachability probe target is not failed, 0 once it failed.",
                &["target"],
            ),
            member_path_up: gauge(
                "preflight_bond_member_path_up",
                "1 while a bond member on its own reaches a target of a network its bond carries (ARP through that member), 0 when it does not or cannot be checked.",
                &["bond", "member", "network", "target"],
            ),
            lldp_neighbor: gauge(
                "preflight_lldp_neighbor_info",
                "1 per bond member that hears a switch over LLDP, naming the switch and its port (texts escaped, at most 255 bytes).",
                &["member", "chassis_id", "system_name", "port_id"],
            ),
            lldp_dropped: lldp::dropped(),
            lldp_stats: Arc::default(),
            probe_loss: prometheus::GaugeVec::new(
                Opts::new(
                    "preflight_probe_loss_ratio",
                    "Reachability probe loss over its window, 0 to 1.",
                ),
                &["target"],
            )
            .expect("valid metric"),
            probe_rtt: prometheus::GaugeVec::new(
                Opts::new(
                    "preflight_probe_rtt_seconds",
                    "Mean round trip of the successful probes in the window.",
                ),
                &["target"],
            )
            .expect("valid metric"),
            node_go: IntGauge::new(
                "preflight_node_go",
                "1 when this node's verdict is go, 0 when no-go.",
            )
            .expect("valid metric"),
            resyncs: IntCounterVec::new(
                Opts::new(
                    "preflight_netlink_resyncs_total",
                    "Full netlink re-dumps, by reason (overrun, timer).",
                ),
                &["reason"],
            )
            .expect("valid metric"),
            parse_errors: IntCounter::new(
                "preflight_netlink_parse_errors_total",
                "Netlink messages or attributes that could not be parsed.",
            )
            .expect("valid metric"),
            netlink_messages: IntCounter::new(
                "preflight_netlink_messages_total",
                "Netlink messages applied.",
            )
            .expect("valid metric"),
            pushes: IntCounterVec::new(
                Opts::new(
                    "preflight_report_pushes_total",
                    "Reports pushed to aggregators, by aggregator and result (ok, error).",
                ),
                &["aggregator", "result"],
            )
            .expect("valid metric"),
            reachable: gauge(
                "preflight_aggregator_reachable",
                "1 when the last report pushed to this aggregator was answered (accepted or need_full), 0 when it was refused or not answered.",
                &["aggregator"],
            ),
            rejected: IntCounterVec::new(
                Opts::new(
                    "preflight_report_pushes_rejected_total",
                    "Reports an aggregator refused, by aggregator and reason (too_large, refused).",
                ),
                &["aggregator", "reason"],
            )
            .expect("valid metric"),
            pending: Arc::new(Mutex::new(None)),
        };
        for c in [
            Box::new(m.bond_info.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.bond_ports.clone()),
            Box::new(m.bond_ports_up.clone()),
            Box::new(m.bond_active_port.clone()),
            Box::new(m.port_mii_up.clone()),
            Box::new(m.port_link_failures.clone()),
            Box::new(m.port_actor.clone()),
            Box::new(m.port_partner.clone()),
            Box::new(m.port_agg_match.clone()),
            Box::new(m.if_oper_up.clone()),
            Box::new(m.if_carrier.clone()),
            Box::new(m.if_carrier_changes.clone()),
            Box::new(m.finding.clone()),
            Box::new(m.probe_up.clone()),
            Box::new(m.probe_loss.clone()),
            Box::new(m.probe_rtt.clone()),
            Box::new(m.member_path_up.clone()),
            Box::new(m.lldp_neighbor.clone()),
            Box::new(m.lldp_dropped.clone()),
            Box::new(m.node_go.clone()),
            Box::new(m.resyncs.clone()),
            Box::new(m.parse_errors.clone()),
            Box::new(m.netlink_messages.clone()),
            Box::new(m.pushes.clone()),
            Box::new(m.reachable.clone()),
            Box::new(m.rejected.clone()),
        ] {
            m.registry.register(c).expect("unique metric");
        }
        for r in ["overrun", "timer"] {
            m.resyncs.with_label_values(&[r]);
        }
        m
    }

    /// Records a new evaluation; the state gauges follow it at the next
    /// [`render`](Self::render).
    pub fn update(&self, state: &Arc<NodeState>) {
        *self.lock() = Some(Arc::clone(state));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Arc<NodeState>>> {
        // A panic while applying leaves gauges, not broken invariants.
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sets every state gauge from `state`.
    fn apply(&self, state: &NodeState) {
        for v in [
            &self.bond_info,
            &self.bond_ports,
            &self.bond_ports_up,
            &self.bond_active_port,
            &self.port_mii_up,
            &self.port_link_failures,
            &self.port_actor,
            &self.port_partner,
            &self.port_agg_match,
            &self.if_oper_up,
            &self.if_carrier,
            &self.if_carrier_changes,
            &self.finding,
        ] {
            v.reset();
        }
        for b in &state.bonds {
            let kind = b.kind.as_str();
            self.bond_info
                .with_label_values(&[b.name.as_str(), kind, b.mode.as_str()])
                .set(1);
            self.bond_ports
                .with_label_values(&[b.name.as_str(), kind])
                .set(b.ports.len() as i64);
            let up = b.ports_up();
            self.bond_ports_up
                .with_label_values(&[b.name.as_str(), kind])
                .set(up as i64);
            if let Some(a) = &b.active_port {
                self.bond_active_port
                    .with_label_values(&[b.name.as_str(), kind, a.as_str()])
                    .set(1);
            }
            for p in &b.ports {
                let l = [b.name.as_str(), p.name.as_str()];
                let lt = [b.name.as_str(), kind, p.name.as_str()];
                self.port_mii_up
                    .with_label_values(&lt)
                    .set(i64::from(p.port.mii_status == MiiStatus::Up));
                self.port_link_failures
                    .with_label_values(&lt)
                    .set(i64::from(p.port.link_failure_count));
                if let Some(ad) = &b.ad_info {
                    self.port_actor
                        .with_label_values(&l)
                        .set(i64::from(p.port.ad_actor_state.unwrap_or(0)));
                    self.port_partner
                        .with_label_values(&l)
                        .set(i64::from(p.port.ad_partner_state.unwrap_or(0)));
                    self.port_agg_match
                        .with_label_values(&l)
                        .set(i64::from(p.port.ad_aggregator_id == Some(ad.aggregator_id)));
                }
            }
        }
        for i in &state.interfaces {
            let l = [i.name.as_str()];
            self.if_oper_up
                .with_label_values(&l)
                .set(i64::from(i.oper_state == preflight_model::OperState::Up));
            self.if_carrier
                .with_label_values(&l)
                .set(i64::from(i.carrier));
            self.if_carrier_changes
                .with_label_values(&l)
                .set(i64::from(i.carrier_changes));
        }
        for f in &state.findings {
            let sev = match f.severity {
                Severity::Critical => "critical",
                Severity::Warning => "warning",
            };
            self.finding
                .with_label_values(&[f.code.as_str(), sev, f.subject.as_str()])
                .set(1);
        }
        self.probe_up.reset();
        self.probe_loss.reset();
        self.probe_rtt.reset();
        for p in &state.probes {
            let l = [p.target.as_str()];
            self.probe_up
                .with_label_values(&l)
                .set(i64::from(!p.failed));
            self.probe_loss.with_label_values(&l).set(p.loss);
            if let Some(ms) = p.rtt_ms {
                self.probe_rtt.with_label_values(&l).set(ms / 1000.0);
            }
        }
        self.member_path_up.reset();
        for p in &state.member_paths {
            let target = p.target.to_string();
            self.member_path_up
                .with_label_values(&[&p.bond, &p.member, &p.network, &target])
                .set(i64::from(p.up));
        }
        // Reset first: a neighbour whose TTL ran out leaves no series behind.
        self.lldp_neighbor.reset();
        for n in &state.lldp {
            let name = n.system_name.as_deref().unwrap_or_default();
            self.lldp_neighbor
                .with_label_values(&[&n.member, &n.chassis_id, name, &n.port_id])
                .set(1);
        }
        self.node_go.set(i64::from(state.verdict == Verdict::Go));
    }

    /// Copies the watch's counters.
    pub fn update_watch(&self, stats: &WatchStats) {
        // The watch owns the counts; counters follow them by their increase.
        let follow = |c: &IntCounter, v: &std::sync::atomic::AtomicU64| {
            let now = v.load(Ordering::Relaxed);
            if now > c.get() {
                c.inc_by(now - c.get());
            }
        };
        follow(
            &self.resyncs.with_label_values(&["overrun"]),
            &stats.resyncs_overrun,
        );
        follow(
            &self.resyncs.with_label_values(&["timer"]),
            &stats.resyncs_timer,
        );
        follow(&self.parse_errors, &stats.parse_errors);
        follow(&self.netlink_messages, &stats.messages);
    }

    /// Text exposition format.
    #[must_use]
    pub fn render(&self) -> String {
        let mut pending = self.lock();
        if let Some(state) = pending.take() {
            self.apply(&state);
        }
        self.apply_lldp();
        let mut buf = String::new();
        if let Err(e) =
            prometheus::TextEncoder::new().encode_utf8(&self.registry.gather(), &mut buf)
        {
            tracing::error!(error = %e, "cannot render metrics");
        }
        drop(pending);
        buf
    }
}

impl Default for AgentMetrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use preflight_model::{AdInfo, Bond, BondMode, BondPort, Interface, Snapshot};

    /// docs/metrics.md lists exactly the metrics the agent emits.
    #[test]
    fn every_metric_is_documented_and_emitted() {
        let mut snap = Snapshot::default();
        snap.interfaces.insert(
            5,
            Interface {
                index: 5,
                name: "bond0".into(),
                kind: Some("bond".into()),
                bond: Some(Bond {
                    mode: BondMode::Ieee8023ad,
                    active_port: Some(3),
                    ad_info: Some(AdInfo::default()),
                    ..Bond::default()
                }),
                ..Interface::default()
            },
        );
        snap.interfaces.insert(
            3,
            Interface {
                index: 3,
                name: "eth0".into(),
                controller: Some(5),
                bond_port: Some(BondPort::default()),
                ..Interface::default()
            },
        );
        let finding = preflight_model::Finding {
            code: preflight_model::Code::BondPortDown,
            severity: preflight_model::Severity::Critical,
            subject: "bond0/eth0".into(),
            message: "m".into(),
            since: std::time::SystemTime::now(),
        };
        let m = AgentMetrics::new();
        let mut state = NodeState::new("n".into(), &snap, vec![finding]);
        state.probes.push(preflight_model::ProbeStatus {
            target: "icmp 192.0.2.1 via bond0".into(),
            failed: false,
            loss: 0.0,
            rtt_ms: Some(1.5),
            consecutive_failures: 0,
            last_error: None,
        });
        state.lldp.push(preflight_model::LldpNeighbor {
            member: "eth0".into(),
            chassis_id: "52:54:00:00:00:0a".into(),
            chassis_id_subtype: "mac".into(),
            port_id: "swp1".into(),
            port_id_subtype: "ifname".into(),
            ttl_s: 120,
            system_name: Some("switch-A".into()),
            port_descr: None,
            mgmt_address: None,
            pvid: None,
            vlans: Vec::new(),
            vlans_cut: false,
            max_frame_size: None,
            aggregation: None,
            since: std::time::SystemTime::now(),
        });
        state.member_paths.push(preflight_model::MemberPathStatus {
            bond: "bond0".into(),
            member: "eth0".into(),
            network: "bond0".into(),
            vlan: None,
            target: std::net::Ipv4Addr::new(192, 0, 2, 1),
            sent: 1,
            answered: 1,
            failed: false,
            up: true,
            consecutive_failures: 0,
            source_mac: None,
            last_error: None,
            unchecked: false,
        });
        m.update(&Arc::new(state));
        m.update_watch(&WatchStats::default());
        m.lldp_dropped
            .with_label_values(&["eth0", "malformed"])
            .inc();
        m.pushes.with_label_values(&["http://a:1", "ok"]).inc();
        m.reachable.with_label_values(&["http://a:1"]).set(1);
        m.rejected
            .with_label_values(&["http://a:1", "too_large"])
            .inc();
        let text = m.render();
        let mut emitted: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        emitted.sort_unstable();
        let doc = include_str!("../../../docs/metrics.md");
        let part = doc
            .split("## ")
            .find(|s| s.starts_with("Agent"))
            .expect("agent section");
        let mut documented: Vec<&str> = part
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split('`').next())
            .collect();
        documented.sort_unstable();
        assert_eq!(emitted, documented);
        assert!(
            text.contains(
                "preflight_bond_port_mii_up{bond=\"bond0\",port=\"eth0\",type=\"kernel\"} 0"
            ),
            "{text}"
        );
        assert!(text.contains("preflight_node_go 0"));
    }

    /// States that arrive between two scrapes are applied once, at the
    /// scrape, and the gauges show the last of them: a finding of an
    /// earlier state does not linger, one of the last state is there.
    #[test]
    fn a_scrape_shows_the_last_of_several_states() {
        let iface = |carrier: bool, changes: u32| Interface {
            index: 3,
            name: "eth0".into(),
            carrier,
            carrier_changes: changes,
            ..Interface::default()
        };
        let finding = |code, subject: &str| preflight_model::Finding {
            code,
            severity: preflight_model::Severity::Warning,
            subject: subject.into(),
            message: "m".into(),
            since: std::time::SystemTime::now(),
        };
        let m = AgentMetrics::new();
        let mut snap = Snapshot::default();
        for n in 1..=3 {
            snap.interfaces.insert(3, iface(n % 2 == 0, n));
            let f = finding(preflight_model::Code::LinkNoCarrier, &format!("eth{n}"));
            m.update(&Arc::new(NodeState::new("n".into(), &snap, vec![f])));
        }
        let text = m.render();
        assert!(
            text.contains("preflight_interface_carrier_changes{interface=\"eth0\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("preflight_interface_carrier{interface=\"eth0\"} 0"),
            "{text}"
        );
        assert!(text.contains("subject=\"eth3\""), "{text}");
        assert!(!text.contains("subject=\"eth1\""), "{text}");
        assert!(!text.contains("subject=\"eth2\""), "{text}");
        // Nothing new: the next scrape renders the same gauges.
        assert_eq!(m.render(), text);
    }
}
