//! Pure rules: a node [`Snapshot`] (plus configuration) in, findings out. No
//! sockets, no files, no clocks of its own: time is passed in, so every rule
//! is tested with plain values.
//!
//! [`rules`] is stateless; [`Evaluator`] adds what needs memory across
//! snapshots: when each finding started (`since`) and carrier-change history
//! for flap detection.

#![warn(missing_docs)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime};

use preflight_model::{
    lacp, sort_findings, BondMode, Finding, Interface, MiiStatus, OperState, Snapshot,
};

pub mod codes;
pub mod config;
pub mod expect;
pub mod lldp;
pub mod member_path;
pub mod ovs;
pub mod team;

pub use codes::Code;
pub use config::{ConfigError, PolicyConfig, RawPolicyConfig};

/// A finding before severity and time are attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Raw {
    /// Code.
    pub code: Code,
    /// `bond0`, `bond0/eth1`, `eth2`.
    pub subject: String,
    /// Message for a person.
    pub message: String,
}

/// Longest finding message, in bytes. Rules quote outside values as
/// excerpts; this is the backstop for what they join (a list of many OVSDB
/// read errors), so that no finding can make a report larger than the
/// aggregator accepts and hide the node's real state behind a refused push.
pub const MAX_MESSAGE_BYTES: usize = 4096;

/// Most findings one evaluation keeps (a report carries them all): a node
/// has a few dozen at worst. Past it, or past [`MAX_FINDINGS_BYTES`], the
/// worst are kept and one FINDINGS_TRUNCATED (critical, cannot be lowered)
/// stands for the rest, so a report never outgrows what the aggregator
/// accepts and what was left out still blocks.
pub const MAX_FINDINGS: usize = 256;

/// Most bytes of finding subjects and messages one evaluation keeps
/// (a quarter of the aggregator's 1 MiB report limit).
pub const MAX_FINDINGS_BYTES: usize = 256 * 1024;

/// Cuts `findings` (sorted worst first) to the bounds above; returns the
/// FINDINGS_TRUNCATED finding that stands for the rest (its `since` to be
/// set by the caller), or `None` when all fit.
fn truncate(findings: &mut Vec<Finding>) -> Option<Finding> {
    let mut bytes = 0;
    let keep = findings
        .iter()
        .take(MAX_FINDINGS - 1)
        .take_while(|f| {
            bytes += f.subject.len() + f.message.len();
            bytes <= MAX_FINDINGS_BYTES
        })
        .count();
    let total_bytes: usize = findings
        .iter()
        .map(|f| f.subject.len() + f.message.len())
        .sum();
    if findings.len() <= MAX_FINDINGS && total_bytes <= MAX_FINDINGS_BYTES {
        return None;
    }
    let rest = findings.split_off(keep);
    let critical = rest
        .iter()
        .filter(|f| f.severity == preflight_model::Severity::Critical)
        .count();
    Some(Finding {
        code: Code::FindingsTruncated,
        severity: preflight_model::Severity::Critical,
        subject: "findings".into(),
        message: format!(
            "{} more findings ({critical} critical) are not shown or sent: a report carries at most {MAX_FINDINGS} findings and {} KiB of their text; the gate counts this one as critical in their place. Fix the ones shown, or look at the node's configuration for what multiplies them",
            rest.len(),
            MAX_FINDINGS_BYTES / 1024
        ),
        since: std::time::SystemTime::UNIX_EPOCH,
    })
}
/// Longest finding subject, in bytes (names from OVSDB or a file).
pub const MAX_SUBJECT_BYTES: usize = 256;

fn raw(code: Code, subject: impl Into<String>, message: impl Into<String>) -> Raw {
    Raw {
        code,
        subject: bounded(subject.into(), MAX_SUBJECT_BYTES),
        message: bounded(message.into(), MAX_MESSAGE_BYTES),
    }
}

/// `s` cut to an excerpt of at most `max` bytes when longer.
fn bounded(s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    // Room for the ellipsis and the length that follow the excerpt.
    preflight_model::excerpt::excerpt_of(&s, s.len(), max.saturating_sub(32)).into_owned()
}

/// Link changes within the flap window, as computed by the [`Evaluator`];
/// empty for a one-shot check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlapCounts {
    /// Carrier changes per kernel interface index.
    pub links: HashMap<u32, u32>,
    /// OVS `link_resets` increase per `bond/member`.
    pub ovs: HashMap<String, u64>,
}

/// Every rule, applied to one snapshot.
#[must_use]
pub fn rules(snap: &Snapshot, config: &PolicyConfig, flaps: &FlapCounts) -> Vec<Raw> {
    let mut out = Vec::new();
    // Members of OVS bonds are judged by the OVS rules, as bond members.
    let ovs_members = ovs::bond_member_names(snap);
    for iface in snap.interfaces.values() {
        let in_ovs_bond = ovs_members.contains(iface.name.as_str());
        if !iface.parse_errors.is_empty() {
            out.push(raw(
                Code::StateUnreadable,
                &iface.name,
                format!(
                    "{}: the kernel's report could not be fully parsed ({}); preflight cannot vouch for this interface. Run `preflight debug capture` and report it.",
                    iface.name,
                    iface.parse_errors.join("; ")
                ),
            ));
        }
        if let Some(bond) = &iface.bond {
            bond_rules(snap, iface, bond, config, &mut out);
        } else if iface.kind.as_deref() == Some("team") {
            team::rules(snap, iface, config, &mut out);
        } else if iface.bond_port.is_none()
            && !in_ovs_bond
            && !team::is_team_port(snap, iface)
            && iface.admin_up
            && !iface.carrier
            && !config.ignored(&iface.name)
        {
            out.push(raw(
                Code::LinkNoCarrier,
                &iface.name,
                format!("{} is admin up but has no carrier (oper state {}); check the cable and the switch port, or set it down if unused", iface.name, iface.oper_state.as_str()),
            ));
        }
        if let Some(&n) = flaps.links.get(&iface.index) {
            if n >= config.flap_max_changes && !config.ignored(&iface.name) && !in_ovs_bond {
                out.push(raw(
                    Code::LinkFlapping,
                    subject_of(snap, iface),
                    format!(
                        "{} changed carrier {n} times in the last {}; suspect the cable, optics or switch port",
                        iface.name,
                        humantime::format_duration(config.flap_window)
                    ),
                ));
            }
        }
    }
    ovs::rules(snap, config, &flaps.ovs, &mut out);
    lldp::rules(snap, &mut out);
    out
}

/// `bond0/eth1` for a bond port, the name otherwise.
fn subject_of(snap: &Snapshot, iface: &Interface) -> String {
    match (iface.controller, &iface.bond_port) {
        (Some(c), Some(_)) => format!("{}/{}", snap.name_of(c), iface.name),
        _ => iface.name.clone(),
    }
}

fn speed_text(p: &Interface) -> String {
    format!(
        "{} {}",
        p.speed_mbps
            .map_or_else(|| "unknown speed".to_string(), |s| format!("{s}Mb/s")),
        p.duplex.as_deref().unwrap_or("unknown duplex")
    )
}

fn bond_rules(
    snap: &Snapshot,
    iface: &Interface,
    bond: &preflight_model::Bond,
    config: &PolicyConfig,
    out: &mut Vec<Raw>,
) {
    let name = &iface.name;
    let ports = snap.ports_of(iface.index);
    let ports: Vec<&Interface> = ports
        .into_iter()
        .filter(|p| p.bond_port.is_some())
        .collect();
    // A port that lost carrier is down for the gate at once: the carrier
    // loss reaches netlink up to one miimon interval before the bonding
    // driver marks the port's MII status down (`BondPort::is_up`).
    let port_up = |p: &Interface| p.bond_port.as_ref().is_some_and(|b| b.is_up(p.carrier));
    let up: Vec<&&Interface> = ports.iter().filter(|p| port_up(p)).collect();

    if !iface.carrier
        || !matches!(iface.oper_state, OperState::Up | OperState::Unknown)
        || !iface.admin_up
    {
        out.push(raw(
            Code::BondDown,
            name,
            format!(
                "{name} is down ({}, oper state {}, {} of {} ports up); all traffic through it is lost",
                if iface.carrier { "carrier" } else { "no carrier" },
                iface.oper_state.as_str(),
                up.len(),
                ports.len()
            ),
        ));
    }

    for p in &ports {
        let Some(bp) = &p.bond_port else { continue };
        if !port_up(p) {
            out.push(raw(
                Code::BondPortDown,
                format!("{name}/{}", p.name),
                format!(
                    "{name} port {} is down (MII status {}, {} link failures, carrier {}); {name} runs without redundancy. Check the cable and switch port of {}; a network configurator rebuilding {name} during the update may fail on it",
                    p.name,
                    match bp.mii_status {
                        MiiStatus::Up => "up",
                        MiiStatus::GoingDown => "going down",
                        MiiStatus::Down => "down",
                        MiiStatus::GoingBack => "going back",
                    },
                    bp.link_failure_count,
                    if p.carrier { "on" } else { "off" },
                    p.name
                ),
            ));
        }
    }

    let min = config.bond_min_ports as usize;
    if up.len() < ports.len() || ports.len() < min {
        let detail = if ports.len() < min {
            format!(
                "{name} has {} port(s), fewer than the {min} needed for redundancy",
                ports.len()
            )
        } else {
            let down: Vec<&str> = ports
                .iter()
                .filter(|p| !up.iter().any(|u| u.index == p.index))
                .map(|p| p.name.as_str())
                .collect();
            format!(
                "{name} has {} of {} ports up (down: {})",
                up.len(),
                ports.len(),
                down.join(", ")
            )
        };
        out.push(raw(
            Code::BondDegraded,
            name,
            format!("{detail}; one more failure takes it down"),
        ));
    }

    if bond.mode.has_active_port() && iface.carrier {
        let active_ok = bond
            .active_port
            .is_some_and(|a| ports.iter().any(|p| p.index == a));
        if !active_ok {
            out.push(raw(
                Code::BondNoActivePort,
                name,
                format!("active-backup bond {name} has no active port; it passes no traffic"),
            ));
        }
    }

    if bond.miimon_ms == 0 && bond.arp_interval_ms == 0 {
        out.push(raw(
            Code::BondNoLinkMonitor,
            name,
            format!("{name} has miimon=0 and arp_interval=0: a port failure would never be detected; set miimon=100 in its bonding options"),
        ));
    }

    if bond.mode == BondMode::Ieee8023ad {
        lacp_rules(name, bond, &ports, out);
    }

    let speeds: std::collections::BTreeSet<(Option<u32>, Option<&str>)> = ports
        .iter()
        .filter(|p| p.speed_mbps.is_some())
        .map(|p| (p.speed_mbps, p.duplex.as_deref()))
        .collect();
    if speeds.len() > 1 {
        let list: Vec<String> = ports
            .iter()
            .map(|p| format!("{} {}", p.name, speed_text(p)))
            .collect();
        out.push(raw(
            Code::PortSpeedMismatch,
            name,
            format!("{name} ports run at different speed or duplex ({}); traffic is unevenly served and 802.3ad may refuse to aggregate", list.join(", ")),
        ));
    }
}

fn lacp_rules(name: &str, bond: &preflight_model::Bond, ports: &[&Interface], out: &mut Vec<Raw>) {
    let partner_missing = bond
        .ad_info
        .as_ref()
        .is_none_or(|ad| ad.partner_mac.is_empty() || ad.partner_mac == "00:00:00:00:00:00");
    let active_agg = bond.ad_info.as_ref().map(|ad| ad.aggregator_id);
    for p in ports {
        let Some(bp) = &p.bond_port else { continue };
        if !bp.is_up(p.carrier) {
            continue; // BOND_PORT_DOWN already names it
        }
        let subject = format!("{name}/{}", p.name);
        let actor = bp.ad_actor_state.unwrap_or(0);
        let mut why = Vec::new();
        if partner_missing {
            why.push("no LACP partner (partner MAC 00:00:00:00:00:00)".to_string());
        }
        if actor & lacp::DEFAULTED != 0 {
            why.push("partner information defaulted: no LACPDU received".to_string());
        }
        let cd = lacp::COLLECTING | lacp::DISTRIBUTING;
        if actor & cd != cd {
            why.push(format!(
                "not collecting and distributing (actor state 0x{actor:02x})"
            ));
        }
        if !why.is_empty() {
            out.push(raw(
                Code::LacpNotNegotiated,
                &subject,
                format!(
                    "802.3ad bond {name} port {}: {}; check that the switch ports form one LACP LAG (port-channel) in active mode",
                    p.name,
                    why.join(", ")
                ),
            ));
        }
        if let (Some(agg), Some(active)) = (bp.ad_aggregator_id, active_agg) {
            if agg != active {
                out.push(raw(
                    Code::LacpAggregatorSplit,
                    &subject,
                    format!(
                        "{name} port {} is in aggregator {agg} but the active aggregator is {active}: the port carries no traffic; its switch port is probably in another LAG or not in LACP",
                        p.name
                    ),
                ));
            }
        }
    }
}

/// Applies severities and `since` across successive snapshots, and tracks
/// carrier changes for LINK_FLAPPING.
#[derive(Debug)]
pub struct Evaluator {
    config: PolicyConfig,
    expectations: Option<expect::Expectations>,
    configured: Option<expect::Expectations>,
    expectations_error: Option<String>,
    dhcp_probes: Vec<preflight_model::DhcpProbeResult>,
    probes: Vec<preflight_model::ProbeStatus>,
    member_paths: Vec<preflight_model::MemberPathStatus>,
    first_seen: BTreeMap<(Code, String), SystemTime>,
    /// Per ifindex: (when, carrier_changes) samples, oldest first.
    carrier: HashMap<u32, VecDeque<(Instant, u64)>>,
    /// Per OVS `bond/member`: (when, link_resets) samples, oldest first.
    ovs_resets: HashMap<String, VecDeque<(Instant, u64)>>,
}

impl Evaluator {
    /// An evaluator with this configuration and no history.
    #[must_use]
    pub fn new(config: PolicyConfig) -> Self {
        Self {
            config,
            expectations: None,
            configured: None,
            expectations_error: None,
            dhcp_probes: Vec::new(),
            probes: Vec::new(),
            member_paths: Vec::new(),
            first_seen: BTreeMap::new(),
            carrier: HashMap::new(),
            ovs_resets: HashMap::new(),
        }
    }

    /// Sets the expected state (`None`: no expectations).
    pub fn set_expectations(&mut self, e: Option<expect::Expectations>) {
        self.expectations = e;
    }

    /// Records that the expectations could not be (re)read: EXPECTATIONS_INVALID
    /// until cleared; the last good expectations stay in force meanwhile.
    pub fn set_expectations_error(&mut self, e: Option<String>) {
        self.expectations_error = e;
    }

    /// Sets the expectations of preflight's own configuration (`[expect]`),
    /// checked in addition to a file's.
    pub fn set_configured_expectations(&mut self, e: Option<expect::Expectations>) {
        self.configured = e;
    }

    /// Sets the latest DHCP probe results (what a fallback to DHCP would
    /// find: FALLBACK_STRANDS_NODE).
    pub fn set_dhcp_probes(&mut self, results: Vec<preflight_model::DhcpProbeResult>) {
        self.dhcp_probes = results;
    }

    /// Sets the latest reachability probe results.
    pub fn set_probes(&mut self, probes: Vec<preflight_model::ProbeStatus>) {
        self.probes = probes;
    }

    /// Sets the latest member path checks (BOND_PORT_NO_PATH).
    pub fn set_member_paths(&mut self, paths: Vec<preflight_model::MemberPathStatus>) {
        self.member_paths = paths;
    }

    /// The latest reachability probe results.
    #[must_use]
    pub fn probes(&self) -> &[preflight_model::ProbeStatus] {
        &self.probes
    }

    /// The expectations in force.
    #[must_use]
    pub fn expectations(&self) -> Option<&expect::Expectations> {
        self.expectations.as_ref()
    }

    /// The configuration in force.
    #[must_use]
    pub fn config(&self) -> &PolicyConfig {
        &self.config
    }

    /// Findings for `snap`, worst first. `now` is monotonic time (for the
    /// flap window), `wall` the wall clock (for `since`).
    pub fn evaluate(&mut self, snap: &Snapshot, now: Instant, wall: SystemTime) -> Vec<Finding> {
        let flaps = self.update_flaps(snap, now);
        let mut raws = rules(snap, &self.config, &flaps);
        let mut fallback = None;
        for e in self.expectations.iter().chain(self.configured.iter()) {
            raws.extend(expect::rules(snap, e));
            raws.extend(expect::fallback_ignored_rule(e));
            // One fallback per node: the file's prediction, else `[expect]`'s.
            if fallback.is_none() {
                fallback = expect::fallback_rule(snap, e, &self.dhcp_probes);
            }
        }
        raws.extend(fallback);
        for p in self.probes.iter().filter(|p| p.failed) {
            raws.push(raw(
                Code::ReachabilityFailed,
                &p.target,
                format!(
                    "{} failed {} times in a row ({}; {:.0}% loss over the window): this path is dead even if the bond is up",
                    p.target,
                    p.consecutive_failures,
                    p.last_error.as_deref().unwrap_or("no answer"),
                    p.loss * 100.0
                ),
            ));
        }
        raws.extend(member_path::rules(&self.member_paths));
        raws.extend(member_path::dpdk_rules(snap));
        if let Some(err) = &self.expectations_error {
            raws.push(raw(
                Code::ExpectationsInvalid,
                "expectations",
                format!("{err}; the last good expectations stay in force until the file is fixed"),
            ));
        }
        let mut seen = BTreeMap::new();
        let mut findings = Vec::with_capacity(raws.len());
        for r in raws {
            let Some(Some(severity)) = self.config.severity.get(&r.code).copied() else {
                continue;
            };
            let key = (r.code, r.subject.clone());
            let since = self.first_seen.get(&key).copied().unwrap_or(wall);
            seen.insert(key, since);
            findings.push(Finding {
                code: r.code,
                severity,
                subject: r.subject,
                message: self.config.with_reason(r.code, severity, r.message),
                since,
            });
        }
        sort_findings(&mut findings);
        if let Some(cut) = truncate(&mut findings) {
            let key = (cut.code, cut.subject.clone());
            let since = self.first_seen.get(&key).copied().unwrap_or(wall);
            seen.insert(key, since);
            findings.push(Finding { since, ..cut });
            sort_findings(&mut findings);
        }
        self.first_seen = seen;
        findings
    }

    fn update_flaps(&mut self, snap: &Snapshot, now: Instant) -> FlapCounts {
        let window = self.config.flap_window;
        let links = snap
            .interfaces
            .values()
            .map(|i| (i.index, u64::from(i.carrier_changes)));
        let ovs = snap.ovs.bonds().flat_map(|(_, p)| {
            p.interfaces
                .iter()
                .filter_map(|m| Some((format!("{}/{}", p.name, m.name), m.link_resets?)))
        });
        FlapCounts {
            links: window_counts(&mut self.carrier, links, now, window)
                .into_iter()
                .map(|(k, n)| (k, u32::try_from(n).unwrap_or(u32::MAX)))
                .collect(),
            ovs: window_counts(&mut self.ovs_resets, ovs, now, window),
        }
    }

    /// Whether a re-evaluation without a new snapshot could change the result
    /// (a flap window is still open), so watchers know to tick.
    #[must_use]
    pub fn needs_tick(&self) -> bool {
        self.carrier
            .values()
            .chain(self.ovs_resets.values())
            .any(|h| h.len() > 1)
    }

    /// How often to re-evaluate while [`Self::needs_tick`] holds.
    #[must_use]
    pub fn tick_interval(&self) -> Duration {
        (self.config.flap_window / 20).clamp(Duration::from_millis(250), Duration::from_secs(5))
    }
}

/// Per key, how much a monotonic counter (carrier changes, `link_resets`)
/// grew within `window`; `hist` keeps the samples and forgets keys that are
/// gone.
fn window_counts<K: std::hash::Hash + Eq + Clone>(
    hist: &mut HashMap<K, VecDeque<(Instant, u64)>>,
    current: impl Iterator<Item = (K, u64)>,
    now: Instant,
    window: Duration,
) -> HashMap<K, u64> {
    let current: HashMap<K, u64> = current.collect();
    hist.retain(|k, _| current.contains_key(k));
    let mut counts = HashMap::new();
    for (key, value) in current {
        let h = hist.entry(key.clone()).or_default();
        if h.back().is_none_or(|(_, c)| *c != value) {
            h.push_back((now, value));
        }
        // Keep the newest sample older than the window as the baseline.
        while h.len() > 1 && now.saturating_duration_since(h[1].0) >= window {
            h.pop_front();
        }
        let baseline = h.front().map_or(value, |(_, c)| *c);
        let n = value.saturating_sub(baseline);
        if n > 0 {
            counts.insert(key, n);
        }
    }
    counts
}

#[cfg(test)]
mod tests;
