//! Raw rtnetlink datagrams to typed model values.
//!
//! This is deliberately our own framing loop rather than netlink-proto's codec:
//! that codec drops a whole message (and so a whole interface) when one
//! attribute inside it does not parse. Here a message that fails as a whole is
//! parsed again attribute by attribute, the bad attribute is recorded on the
//! interface (`parse_errors`) and everything else is kept, so one odd NIC
//! driver can neither hide another interface nor make a broken one look fine.

use std::net::IpAddr;

use netlink_packet_core::{NetlinkBuffer, Parseable};
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::link::{
    BondAdInfo, BondMode as NlBondMode, BondPortState, InfoBond, InfoBondPort, InfoData, InfoKind,
    InfoPortData, InfoPortKind, LinkAttribute, LinkFlags, LinkHeader, LinkInfo,
    MiiStatus as NlMiiStatus, State,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteType,
};
use netlink_packet_route::AddressFamily;
use preflight_model::{
    AdInfo, Address, Bond, BondMode, BondPort, Interface, MiiStatus, OperState, PortState, Route,
};

/// Netlink control and rtnetlink message types we handle.
pub(crate) mod msg_type {
    pub const NLMSG_ERROR: u16 = 2;
    pub const NLMSG_DONE: u16 = 3;
    pub const NLMSG_OVERRUN: u16 = 4;
    pub const RTM_NEWLINK: u16 = 16;
    pub const RTM_DELLINK: u16 = 17;
    pub const RTM_NEWADDR: u16 = 20;
    pub const RTM_DELADDR: u16 = 21;
    pub const RTM_NEWROUTE: u16 = 24;
    pub const RTM_DELROUTE: u16 = 25;
}

/// NLM_F_DUMP_INTR: the dump was interrupted by a change and is inconsistent.
pub(crate) const NLM_F_DUMP_INTR: u16 = 0x10;

/// One decoded netlink message.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// RTM_NEWLINK: full state of one interface.
    NewLink(Box<Interface>),
    /// RTM_DELLINK: interface with this index is gone.
    DelLink(u32),
    /// RTM_NEWADDR.
    NewAddress(Address),
    /// RTM_DELADDR.
    DelAddress(Address),
    /// RTM_NEWROUTE (main table, unicast only).
    NewRoute(Route),
    /// RTM_DELROUTE.
    DelRoute(Route),
    /// End of a dump (sequence number, whether the kernel flagged the dump as
    /// interrupted).
    Done {
        /// Sequence number of the request.
        seq: u32,
        /// NLM_F_DUMP_INTR was set on some part of the dump.
        interrupted: bool,
    },
    /// The kernel rejected a request (negative errno).
    Error {
        /// Sequence number of the request.
        seq: u32,
        /// errno (negative, as the kernel sends it).
        code: i32,
    },
    /// NLMSG_OVERRUN: messages were lost.
    Overrun,
}

/// A message that could not be decoded in full, for logs and counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeProblem {
    /// The interface it concerns, when known (`eth1` or `ifindex 7`).
    pub concerns: String,
    /// What went wrong.
    pub reason: String,
}

/// Result of decoding one datagram.
#[derive(Debug, Default)]
pub struct Decoded {
    /// Messages decoded (possibly partially).
    pub events: Vec<Event>,
    /// Problems met on the way; each also marked on the interface concerned.
    pub problems: Vec<DecodeProblem>,
    /// Some message in the datagram carried NLM_F_DUMP_INTR.
    pub dump_interrupted: bool,
}

/// Decodes every netlink message in one datagram. Never fails: problems are
/// collected and the rest of the datagram is still decoded, except after a
/// corrupt length field, where the remaining bytes cannot be framed.
#[must_use]
pub fn decode_datagram(mut buf: &[u8]) -> Decoded {
    let mut out = Decoded::default();
    while !buf.is_empty() {
        let nl = match NetlinkBuffer::new_checked(buf) {
            Ok(nl) => nl,
            Err(e) => {
                out.problems.push(DecodeProblem {
                    concerns: "datagram".into(),
                    reason: format!(
                        "cannot frame netlink message ({e}); {} bytes skipped",
                        buf.len()
                    ),
                });
                break;
            }
        };
        let len = nl.length() as usize;
        let flags = nl.flags();
        let seq = nl.sequence_number();
        if flags & NLM_F_DUMP_INTR != 0 {
            out.dump_interrupted = true;
        }
        decode_one(nl.message_type(), seq, nl.payload(), &mut out);
        // Messages are 4-byte aligned within a datagram.
        let advance = (len + 3) & !3;
        if advance == 0 || advance > buf.len() {
            break;
        }
        buf = &buf[advance..];
    }
    out
}

fn decode_one(kind: u16, seq: u32, payload: &[u8], out: &mut Decoded) {
    use msg_type::*;
    match kind {
        NLMSG_DONE => out.events.push(Event::Done {
            seq,
            interrupted: out.dump_interrupted,
        }),
        NLMSG_ERROR => {
            let code = payload
                .get(..4)
                .map_or(-1, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
            // code 0 is an ACK; we never ask for ACKs on dumps.
            if code != 0 {
                out.events.push(Event::Error { seq, code });
            }
        }
        NLMSG_OVERRUN => out.events.push(Event::Overrun),
        RTM_NEWLINK | RTM_DELLINK => {
            if let Some(iface) = decode_link(payload, &mut out.problems) {
                if kind == RTM_NEWLINK {
                    out.events.push(Event::NewLink(Box::new(iface)));
                } else {
                    out.events.push(Event::DelLink(iface.index));
                }
            }
        }
        RTM_NEWADDR | RTM_DELADDR => match AddressMessage::parse(payload) {
            Ok(m) => {
                if let Some(a) = convert_address(&m) {
                    out.events.push(if kind == RTM_NEWADDR {
                        Event::NewAddress(a)
                    } else {
                        Event::DelAddress(a)
                    });
                }
            }
            Err(e) => out.problems.push(DecodeProblem {
                concerns: ifindex_hint(payload, 4),
                reason: format!("address message: {e}"),
            }),
        },
        RTM_NEWROUTE | RTM_DELROUTE => match RouteMessage::parse(payload) {
            Ok(m) => {
                if let Some(r) = convert_route(&m) {
                    out.events.push(if kind == RTM_NEWROUTE {
                        Event::NewRoute(r)
                    } else {
                        Event::DelRoute(r)
                    });
                }
            }
            Err(e) => out.problems.push(DecodeProblem {
                concerns: "route".into(),
                reason: format!("route message: {e}"),
            }),
        },
        _ => {}
    }
}

fn ifindex_hint(payload: &[u8], offset: usize) -> String {
    payload.get(offset..offset + 4).map_or_else(
        || "unknown interface".into(),
        |b| format!("ifindex {}", u32::from_ne_bytes([b[0], b[1], b[2], b[3]])),
    )
}

/// Length of `struct ifinfomsg`, before a link message's attributes.
const LINK_HEADER_LEN: usize = 16;

/// Decodes an RTM_NEWLINK/RTM_DELLINK payload. Returns `None` for messages
/// that are not about a whole interface (AF_BRIDGE port notifications share
/// the link group but carry only bridge-port data) or whose header is broken.
fn decode_link(payload: &[u8], problems: &mut Vec<DecodeProblem>) -> Option<Interface> {
    let header = match LinkHeader::parse(payload) {
        Ok(h) => h,
        Err(e) => {
            problems.push(DecodeProblem {
                concerns: ifindex_hint(payload, 4),
                reason: format!("link header: {e}"),
            });
            return None;
        }
    };
    if header.interface_family != AddressFamily::Unspec {
        return None;
    }
    let mut errors = Vec::new();
    let attributes = attrs::link_attributes(
        payload.get(LINK_HEADER_LEN..).unwrap_or_default(),
        header.interface_family,
        &mut errors,
    );
    let mut iface = convert_link(&header, &attributes);
    if !errors.is_empty() {
        let concerns = if iface.name.is_empty() {
            format!("ifindex {}", iface.index)
        } else {
            iface.name.clone()
        };
        for reason in &errors {
            problems.push(DecodeProblem {
                concerns: concerns.clone(),
                reason: reason.clone(),
            });
        }
        iface.parse_errors = errors;
    }
    Some(iface)
}

fn mac(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    s
}

fn convert_link(header: &LinkHeader, attributes: &[LinkAttribute]) -> Interface {
    let mut iface = Interface {
        index: header.index,
        admin_up: header.flags.contains(LinkFlags::Up),
        // IFF_LOWER_UP is "running and carrier ok", what `ip link` and sysfs
        // show; IFLA_CARRIER alone says 1 for devices that never managed
        // carrier, even when they are down.
        carrier: header.flags.contains(LinkFlags::LowerUp),
        ..Interface::default()
    };
    let mut is_bond_port = false;
    for attr in attributes {
        match attr {
            LinkAttribute::IfName(n) => iface.name.clone_from(n),
            LinkAttribute::CarrierChanges(c) => iface.carrier_changes = *c,
            LinkAttribute::Mtu(m) => iface.mtu = *m,
            LinkAttribute::Controller(c) if *c != 0 => iface.controller = Some(*c),
            LinkAttribute::Address(a) => iface.mac = Some(mac(a)),
            LinkAttribute::OperState(s) => iface.oper_state = oper(*s),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    match info {
                        LinkInfo::Kind(k) => iface.kind = Some(kind_name(k)),
                        LinkInfo::Data(InfoData::Bond(b)) => iface.bond = Some(convert_bond(b)),
                        LinkInfo::PortKind(InfoPortKind::Bond) => is_bond_port = true,
                        LinkInfo::PortData(InfoPortData::BondPort(p)) => {
                            iface.bond_port = Some(convert_bond_port(p));
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    if is_bond_port && iface.bond_port.is_none() {
        // Port kind without port data: keep the membership visible, with a
        // state that cannot pass for healthy.
        iface.bond_port = Some(BondPort::default());
        iface
            .parse_errors
            .push("bond port without IFLA_INFO_SLAVE_DATA".into());
    }
    if iface.kind.as_deref() == Some("bond") && iface.bond.is_none() {
        iface.bond = Some(Bond::default());
        iface
            .parse_errors
            .push("bond without IFLA_INFO_DATA".into());
    }
    iface
}

fn kind_name(k: &InfoKind) -> String {
    k.to_string()
}

fn oper(s: State) -> OperState {
    match s {
        State::NotPresent => OperState::NotPresent,
        State::Down => OperState::Down,
        State::LowerLayerDown => OperState::LowerLayerDown,
        State::Testing => OperState::Testing,
        State::Dormant => OperState::Dormant,
        State::Up => OperState::Up,
        _ => OperState::Unknown,
    }
}

fn convert_bond(attrs: &[InfoBond]) -> Bond {
    let mut bond = Bond::default();
    for a in attrs {
        match a {
            InfoBond::Mode(m) => {
                bond.mode = match m {
                    NlBondMode::ActiveBackup => BondMode::ActiveBackup,
                    NlBondMode::BalanceXor => BondMode::BalanceXor,
                    NlBondMode::Broadcast => BondMode::Broadcast,
                    NlBondMode::Ieee8023Ad => BondMode::Ieee8023ad,
                    NlBondMode::BalanceTlb => BondMode::BalanceTlb,
                    NlBondMode::BalanceAlb => BondMode::BalanceAlb,
                    _ => BondMode::BalanceRr,
                }
            }
            InfoBond::MiiMon(v) => bond.miimon_ms = *v,
            InfoBond::ArpInterval(v) => bond.arp_interval_ms = *v,
            InfoBond::ArpIpTarget(t) => {
                bond.arp_ip_targets = t.iter().map(|a| IpAddr::V4(*a)).collect();
            }
            InfoBond::MinLinks(v) => bond.min_links = *v,
            InfoBond::ActivePort(p) if *p != 0 => bond.active_port = Some(*p),
            InfoBond::AdLacpRate(r) => bond.lacp_rate = Some(r.to_string()),
            InfoBond::XmitHashPolicy(p) => bond.xmit_hash_policy = Some(p.to_string()),
            InfoBond::AdInfo(info) => {
                let mut ad = AdInfo::default();
                for i in info {
                    match i {
                        BondAdInfo::Aggregator(v) => ad.aggregator_id = *v,
                        BondAdInfo::NumPorts(v) => ad.num_ports = *v,
                        BondAdInfo::ActorKey(v) => ad.actor_key = *v,
                        BondAdInfo::PartnerKey(v) => ad.partner_key = *v,
                        BondAdInfo::PartnerMac(m) => ad.partner_mac = mac(m),
                        _ => {}
                    }
                }
                bond.ad_info = Some(ad);
            }
            _ => {}
        }
    }
    bond
}

fn convert_bond_port(attrs: &[InfoBondPort]) -> BondPort {
    let mut port = BondPort::default();
    for a in attrs {
        match a {
            InfoBondPort::MiiStatus(s) => {
                port.mii_status = match s {
                    NlMiiStatus::Up => MiiStatus::Up,
                    NlMiiStatus::GoingDown => MiiStatus::GoingDown,
                    NlMiiStatus::GoingBack => MiiStatus::GoingBack,
                    _ => MiiStatus::Down,
                }
            }
            InfoBondPort::BondPortState(s) => {
                port.state = if matches!(s, BondPortState::Active) {
                    PortState::Active
                } else {
                    PortState::Backup
                }
            }
            InfoBondPort::LinkFailureCount(c) => port.link_failure_count = *c,
            InfoBondPort::PermHwaddr(m) => port.perm_mac = Some(mac(m)),
            InfoBondPort::AdAggregatorId(id) => port.ad_aggregator_id = Some(*id),
            InfoBondPort::AdActorOperPortState(s) => port.ad_actor_state = Some(s.bits()),
            InfoBondPort::AdPartnerOperPortState(s) => port.ad_partner_state = Some(s.bits()),
            _ => {}
        }
    }
    port
}

fn convert_address(m: &AddressMessage) -> Option<Address> {
    let mut local = None;
    let mut address = None;
    let mut flags32 = None;
    for a in &m.attributes {
        match a {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            AddressAttribute::Flags(f) => flags32 = Some(*f),
            _ => {}
        }
    }
    let permanent = flags32.map_or_else(
        || m.header.flags.contains(AddressHeaderFlags::Permanent),
        |f| f.contains(AddressFlags::Permanent),
    );
    Some(Address {
        ifindex: m.header.index,
        address: local.or(address)?,
        prefix_len: m.header.prefix_len,
        permanent,
        scope: match m.header.scope {
            AddressScope::Universe => "global".into(),
            AddressScope::Site => "site".into(),
            AddressScope::Link => "link".into(),
            AddressScope::Host => "host".into(),
            AddressScope::Nowhere => "nowhere".into(),
            other => format!("{other:?}").to_lowercase(),
        },
    })
}

fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn convert_route(m: &RouteMessage) -> Option<Route> {
    let mut table = u32::from(m.header.table);
    let mut destination = None;
    let mut gateway = None;
    let mut oif = None;
    let mut metric = None;
    for a in &m.attributes {
        match a {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(d) => destination = route_ip(d),
            RouteAttribute::Gateway(g) => gateway = route_ip(g),
            RouteAttribute::Oif(o) => oif = Some(*o),
            RouteAttribute::Priority(p) => metric = Some(*p),
            RouteAttribute::MultiPath(hops) => {
                // Keep the first next hop: enough to know a default exists.
                if let Some(h) = hops.first() {
                    oif = oif.or(Some(h.interface_index));
                    for ha in &h.attributes {
                        if let RouteAttribute::Gateway(g) = ha {
                            gateway = gateway.or_else(|| route_ip(g));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) || m.header.kind != RouteType::Unicast {
        return None;
    }
    let ipv6 = m.header.address_family == AddressFamily::Inet6;
    if !ipv6 && m.header.address_family != AddressFamily::Inet {
        return None;
    }
    Some(Route {
        destination,
        prefix_len: m.header.destination_prefix_length,
        gateway,
        oif,
        protocol: match m.header.protocol {
            RouteProtocol::Kernel => "kernel".into(),
            RouteProtocol::Boot => "boot".into(),
            RouteProtocol::Static => "static".into(),
            RouteProtocol::Dhcp => "dhcp".into(),
            RouteProtocol::Ra => "ra".into(),
            other => u8::from(other).to_string(),
        },
        metric,
        ipv6,
    })
}

/// A capture file (`preflight debug capture`) that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("capture file is truncated at byte {offset}: expected {expected} more bytes")]
pub struct CaptureError {
    /// Where the problem starts.
    pub offset: usize,
    /// Bytes the length prefix promised.
    pub expected: usize,
}

/// Splits a capture file into its datagrams.
///
/// # Errors
/// When a length prefix points past the end of the file.
pub fn capture_datagrams(bytes: &[u8]) -> Result<Vec<&[u8]>, CaptureError> {
    let mut out = Vec::new();
    let mut off = 0;
    while off < bytes.len() {
        let Some(len) = bytes.get(off..off + 4) else {
            return Err(CaptureError {
                offset: off,
                expected: 4,
            });
        };
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let start = off + 4;
        let Some(d) = bytes.get(start..start + len) else {
            return Err(CaptureError {
                offset: start,
                expected: len,
            });
        };
        out.push(d);
        off = start + len;
    }
    Ok(out)
}

/// Decodes a whole capture file into a snapshot (speed and duplex, which
/// come from sysfs, are not part of a capture).
///
/// # Errors
/// When the file is truncated.
pub fn decode_capture(bytes: &[u8]) -> Result<preflight_model::Snapshot, CaptureError> {
    let mut snap = preflight_model::Snapshot::default();
    for d in capture_datagrams(bytes)? {
        for e in decode_datagram(d).events {
            crate::apply(&mut snap, e);
        }
    }
    Ok(snap)
}

mod attrs;
#[cfg(test)]
mod tests;
