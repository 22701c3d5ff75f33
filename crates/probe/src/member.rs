//! The member path check: an ARP request out of ONE bond member's netdev
//! (802.1Q-tagged for a VLAN network) and the reply read on that same
//! member, so that a backup member whose switch port lacks a VLAN, or whose
//! far end carries nothing, shows before a failover needs it.
//!
//! It must never disturb the node. A frame from a backup member with the
//! bond's MAC makes the switch move that MAC to the backup port (traffic to
//! the node is lost until the active port sends again), and an ARP pairing
//! the node's IP with another MAC poisons the target's cache. So the request
//! is an RFC 5227 probe: sender IP 0.0.0.0 (answered, never cached), source
//! MAC the member's permanent address, or, when some interface of this node
//! currently uses that address (the bond took its first member's), a
//! locally administered variant no interface uses. The reply is unicast to
//! that address, which is not the member's current one: a
//! `PACKET_MR_UNICAST` membership makes the NIC accept it while the socket
//! is open, and the stack ignores it (not addressed to the node).
//!
//! Received through an `ETH_P_ALL` socket bound to the member, filtered to
//! ARP in the kernel: only the taps see a frame on the member itself before
//! the bond and the VLAN device take it (an inactive member's frames never
//! reach the protocol handlers), and only there does the kernel still carry
//! the 802.1Q tag, in `PACKET_AUXDATA` (it takes the tag out of the frame).

use std::io::IoSliceMut;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use nix::sys::socket::{ControlMessageOwned, LinkAddr, MsgFlags};
use socket2::{Domain, Protocol, SockFilter, Socket, Type};

use crate::ProbeError;

const ETH_P_ALL: u16 = 0x0003;
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_8021Q: u16 = 0x8100;
const BROADCAST: [u8; 6] = [0xff; 6];
/// `PACKET_OUTGOING`: our own request, looped back to the tap.
const PACKET_OUTGOING: u8 = 4;
/// `TP_STATUS_VLAN_VALID` in `tpacket_auxdata.tp_status`.
const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
/// Longest sysfs value read (a MAC is 17 bytes).
const MAX_SYSFS: u64 = 64;

/// What one check of one path got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Requests sent (one per try until one is answered).
    pub sent: u32,
    /// Requests answered (0 or 1: ARP replies carry no sequence number).
    pub answered: u32,
    /// From the answered request to its reply.
    pub rtt: Option<Duration>,
    /// The source MAC the requests carried.
    pub source_mac: [u8; 6],
}

/// `aa:bb:cc:dd:ee:ff`.
#[must_use]
pub fn format_mac(m: [u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

/// Parses `aa:bb:cc:dd:ee:ff` (either case); `None` for anything else.
#[must_use]
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.trim().split(':');
    for b in &mut out {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// The source MAC for a member's requests: its permanent address (else its
/// current one), unless an interface of this node currently uses it; then
/// the same address made locally administered (and changed further until
/// no interface uses it). Never a group address.
#[must_use]
pub fn safe_source(perm: Option<[u8; 6]>, current: [u8; 6], in_use: &[[u8; 6]]) -> [u8; 6] {
    salted_source(perm, current, in_use, 0)
}

/// [`safe_source`] whose variants start at `start` instead of 0.
fn salted_source(
    perm: Option<[u8; 6]>,
    current: [u8; 6],
    in_use: &[[u8; 6]],
    start: u8,
) -> [u8; 6] {
    let mut mac = perm.filter(|m| *m != [0; 6]).unwrap_or(current);
    mac[0] &= !0x01;
    if !in_use.contains(&mac) {
        return mac;
    }
    mac[0] |= 0x02;
    for salt in 0u8..=255 {
        let mut m = mac;
        m[5] ^= start.wrapping_add(salt);
        if !in_use.contains(&m) {
            return m;
        }
    }
    // 256 interfaces sharing one OUI prefix and five octets: not a node.
    mac[4] ^= 0x5a;
    mac
}

/// The Ethernet frame of an RFC 5227 ARP probe for `target` from `src`,
/// 802.1Q-tagged with `vlan` when given.
#[must_use]
pub fn request_frame(src: [u8; 6], vlan: Option<u16>, target: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(64);
    f.extend_from_slice(&BROADCAST);
    f.extend_from_slice(&src);
    if let Some(v) = vlan {
        f.extend_from_slice(&ETH_P_8021Q.to_be_bytes());
        f.extend_from_slice(&(v & 0x0fff).to_be_bytes());
    }
    f.extend_from_slice(&ETH_P_ARP.to_be_bytes());
    f.extend_from_slice(&1u16.to_be_bytes()); // Ethernet
    f.extend_from_slice(&0x0800u16.to_be_bytes()); // IPv4
    f.extend_from_slice(&[6, 4]);
    f.extend_from_slice(&1u16.to_be_bytes()); // request
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0; 4]); // sender 0.0.0.0: a probe, never cached
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target.octets());
    // Minimum Ethernet payload: a NIC pads too, a veth does not.
    f.resize(f.len().max(if vlan.is_some() { 64 } else { 60 }), 0);
    f
}

/// The VLAN id in a `tpacket_auxdata` control message, if it says the
/// frame had a tag; `None` for an untagged frame or a short message.
#[must_use]
pub fn auxdata_vlan(data: &[u8]) -> Option<u16> {
    let status = u32::from_ne_bytes(data.get(0..4)?.try_into().ok()?);
    let tci = u16::from_ne_bytes(data.get(16..18)?.try_into().ok()?);
    (status & TP_STATUS_VLAN_VALID != 0 || tci != 0).then_some(tci & 0x0fff)
}

/// Whether `frame` (as a packet socket reads it, with the VLAN id the
/// kernel reported beside it) is `target`'s reply to our probe from `src`
/// on `vlan`. VLAN 0 (priority tag) counts as untagged.
#[must_use]
pub fn is_reply(
    frame: &[u8],
    aux_vlan: Option<u16>,
    src: [u8; 6],
    target: Ipv4Addr,
    vlan: Option<u16>,
) -> bool {
    let Some(dst) = frame.get(0..6) else {
        return false;
    };
    if dst != src && dst != BROADCAST {
        return false;
    }
    let (seen_vlan, arp) = match frame.get(12..14) {
        Some(t) if t == ETH_P_8021Q.to_be_bytes() => {
            let Some(tci) = frame.get(14..16) else {
                return false;
            };
            if frame.get(16..18) != Some(&ETH_P_ARP.to_be_bytes()[..]) {
                return false;
            }
            (
                Some(u16::from_be_bytes([tci[0], tci[1]]) & 0x0fff),
                frame.get(18..),
            )
        }
        Some(t) if t == ETH_P_ARP.to_be_bytes() => (aux_vlan, frame.get(14..)),
        _ => return false,
    };
    let norm = |v: Option<u16>| v.filter(|id| *id != 0);
    if norm(seen_vlan) != norm(vlan) {
        return false;
    }
    let Some(p) = arp.filter(|p| p.len() >= 28) else {
        return false;
    };
    p[0..2] == 1u16.to_be_bytes()
        && p[2..4] == 0x0800u16.to_be_bytes()
        && p[4] == 6
        && p[5] == 4
        && p[6..8] == 2u16.to_be_bytes()
        && p[14..18] == target.octets()
        && p[18..24] == src
}

/// Kernel filter: ARP frames only (tag taken out by the kernel, or still
/// in the frame), at most 256 bytes of each.
fn arp_filter() -> [SockFilter; 7] {
    const LDH_ABS: u16 = 0x28;
    const JEQ_K: u16 = 0x15;
    const RET_K: u16 = 0x06;
    [
        SockFilter::new(LDH_ABS, 0, 0, 12),
        SockFilter::new(JEQ_K, 3, 0, u32::from(ETH_P_ARP)),
        SockFilter::new(JEQ_K, 0, 3, u32::from(ETH_P_8021Q)),
        SockFilter::new(LDH_ABS, 0, 0, 16),
        SockFilter::new(JEQ_K, 0, 1, u32::from(ETH_P_ARP)),
        SockFilter::new(RET_K, 0, 0, 256),
        SockFilter::new(RET_K, 0, 0, 0),
    ]
}

/// A member as the check needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Interface index.
    pub ifindex: i32,
    /// Current MAC.
    pub current: [u8; 6],
    /// Permanent MAC, where the kernel says (bonding's `perm_hwaddr`).
    pub perm: Option<[u8; 6]>,
    /// Current MACs of every other interface of this node.
    pub others: Vec<[u8; 6]>,
}

impl Member {
    /// The source MAC its requests carry when checked alone
    /// ([`safe_source`]); [`sources`] when checked beside its siblings.
    #[must_use]
    pub fn source(&self) -> [u8; 6] {
        safe_source(self.perm, self.current, &self.others)
    }
}

/// The source MACs of members checked in the same round, in order, all
/// different: besides what [`Member::source`] avoids, never a sibling's
/// permanent or current MAC nor a source already given to a sibling. Team
/// ports have no permanent MAC and all carry the team's, so each would get
/// the same variant and one member's reply would pass another's check; a
/// variant salted with the ifindex and the chosen list keep them apart. With
/// locally administered permanent MACs (52:54:00, fa:16:3e) the variant is
/// the address itself and a salt can land on a sibling's: a MAC flap.
#[must_use]
pub fn sources(members: &[&Member]) -> Vec<[u8; 6]> {
    let mut chosen: Vec<[u8; 6]> = Vec::with_capacity(members.len());
    for (i, m) in members.iter().enumerate() {
        let mut in_use = m.others.clone();
        for (j, o) in members.iter().enumerate() {
            if i != j {
                in_use.push(o.current);
                in_use.extend(o.perm);
            }
        }
        in_use.extend_from_slice(&chosen);
        // Only the low byte salts: a stable start per member, not a secret.
        let salt = m.ifindex.to_le_bytes()[0];
        chosen.push(salted_source(m.perm, m.current, &in_use, salt));
    }
    chosen
}

fn read_small(path: &str) -> Option<String> {
    use std::io::Read;
    let mut s = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(MAX_SYSFS)
        .read_to_string(&mut s)
        .ok()?;
    Some(s)
}

/// Whether `device` is enslaved to something (a bond, team, bridge or
/// Open vSwitch): the kernel links its `master`.
#[must_use]
pub fn has_master(device: &str) -> bool {
    crate::dhcp::valid_device(device)
        && std::fs::symlink_metadata(format!("/sys/class/net/{device}/master")).is_ok()
}

/// Reads what [`Member`] needs of `device` from the kernel.
///
/// # Errors
/// A bad name, no such interface, no Ethernet address, no interface list.
pub fn member(device: &str) -> Result<Member, ProbeError> {
    if !crate::dhcp::valid_device(device) {
        return Err(ProbeError::local(format!(
            "`{}` is not an interface name",
            preflight_model::excerpt(device)
        )));
    }
    let all = nix::ifaddrs::getifaddrs()
        .map_err(|e| ProbeError::local(format!("cannot list interfaces: {e}")))?;
    let mut me = None;
    let mut others = Vec::new();
    for a in all {
        let Some(l) = a.address.as_ref().and_then(|x| x.as_link_addr()) else {
            continue;
        };
        let Some(mac) = l.addr().filter(|m| *m != [0; 6]) else {
            if a.interface_name == device {
                return Err(ProbeError::local(format!(
                    "{device} has no Ethernet address: ARP needs one"
                )));
            }
            continue;
        };
        if a.interface_name == device {
            me = Some((l.ifindex(), mac));
        } else {
            others.push(mac);
        }
    }
    let (ifindex, current) =
        me.ok_or_else(|| ProbeError::local(format!("no interface {device}")))?;
    let perm = read_small(&format!(
        "/sys/class/net/{device}/bonding_slave/perm_hwaddr"
    ))
    .and_then(|s| parse_mac(&s));
    Ok(Member {
        ifindex: i32::try_from(ifindex)
            .map_err(|_| ProbeError::local(format!("{device}: ifindex out of range")))?,
        current,
        perm,
        others,
    })
}

fn local_err(what: &str, device: &str, e: &std::io::Error) -> ProbeError {
    ProbeError::local(if e.kind() == std::io::ErrorKind::PermissionDenied {
        format!("{device}: cannot {what}: {e} (needs CAP_NET_RAW)")
    } else {
        format!("{device}: cannot {what}: {e}")
    })
}

/// One frame off the socket.
struct Received {
    len: usize,
    /// We sent it (our own request, looped back to the tap).
    outgoing: bool,
    /// The VLAN id the kernel took out of it.
    vlan: Option<u16>,
    /// The interface it was seen on.
    ifindex: usize,
}

fn recv_one(sock: &impl AsRawFd, buf: &mut [u8]) -> std::io::Result<Received> {
    let mut cmsg = nix::cmsg_space!(libc::tpacket_auxdata);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = nix::sys::socket::recvmsg::<LinkAddr>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_DONTWAIT,
    )
    .map_err(std::io::Error::from)?;
    let outgoing = msg.address.is_some_and(|a| a.pkttype() == PACKET_OUTGOING);
    let ifindex = msg.address.map_or(0, |a| a.ifindex());
    let mut vlan = None;
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::Unknown(u) = c {
                if u.cmsg_header.cmsg_level == libc::SOL_PACKET
                    && u.cmsg_header.cmsg_type == libc::PACKET_AUXDATA
                {
                    vlan = auxdata_vlan(&u.data_bytes);
                }
            }
        }
    }
    Ok(Received {
        len: msg.bytes,
        outgoing,
        vlan,
        ifindex,
    })
}

/// Checks the path to `target` out of `device` (on `vlan`): up to `tries`
/// requests, each waiting `per_try` for the reply, stopping at the first
/// answer. No answer is an [`Outcome`] with `answered` 0, not an error.
///
/// # Errors
/// Only when the check cannot be made (no such interface, no CAP_NET_RAW):
/// this node cannot tell.
pub async fn check(
    device: &str,
    vlan: Option<u16>,
    target: Ipv4Addr,
    tries: u32,
    per_try: Duration,
) -> Result<Outcome, ProbeError> {
    let m = member(device)?;
    check_member(device, &m, m.source(), &[], vlan, target, tries, per_try).await
}

/// [`check`] for a member already read, with the reply also accepted on
/// the interfaces `also` (ifindexes): the other members of a bond the
/// switch treats as one port (802.3ad, balance-xor), which forwards the
/// reply to the member its hash picks. The request still leaves by `m`
/// alone, so an answer proves that `m`'s port carries the network. `src`
/// is its source MAC ([`sources`] when siblings are checked too).
///
/// # Errors
/// As [`check`].
#[allow(clippy::too_many_arguments)]
pub async fn check_member(
    device: &str,
    m: &Member,
    src: [u8; 6],
    also: &[i32],
    vlan: Option<u16>,
    target: Ipv4Addr,
    tries: u32,
    per_try: Duration,
) -> Result<Outcome, ProbeError> {
    // Protocol 0: nothing is queued before the filter and the bind.
    let sock = Socket::new(Domain::PACKET, Type::RAW, Some(Protocol::from(0)))
        .map_err(|e| local_err("open a packet socket", device, &e))?;
    sock.attach_filter(&arp_filter())
        .map_err(|e| local_err("filter the packet socket", device, &e))?;
    crate::packet::enable_auxdata(&sock).map_err(|e| local_err("ask for VLAN tags", device, &e))?;
    let mut listen = vec![m.ifindex];
    listen.extend(also.iter().filter(|i| **i != m.ifindex));
    // One interface: bound to it. Several: every interface (the filter
    // keeps ARP only), and frames from the others are dropped below.
    let bound = if listen.len() == 1 { m.ifindex } else { 0 };
    sock.bind(&crate::packet::link_addr(bound, ETH_P_ALL, [0; 6]))
        .map_err(|e| local_err("bind a packet socket", device, &e))?;
    for i in &listen {
        crate::packet::add_membership(&sock, *i, libc::PACKET_MR_UNICAST, src)
            .map_err(|e| local_err("accept replies to the probe's address", device, &e))?;
    }
    sock.set_nonblocking(true)
        .map_err(|e| local_err("set up the packet socket", device, &e))?;
    // Sent through a duplicate; received through tokio's datagram type,
    // whose readiness and `try_io` serve a packet socket like any other.
    let tx = sock
        .try_clone()
        .map_err(|e| local_err("set up the packet socket", device, &e))?;
    let rx = tokio::net::UdpSocket::from_std(std::net::UdpSocket::from(sock))
        .map_err(|e| local_err("register the socket", device, &e))?;
    let frame = request_frame(src, vlan, target);
    let to = crate::packet::link_addr(m.ifindex, ETH_P_ARP, BROADCAST);
    let mut sent = 0;
    let mut buf = [0u8; 256];
    for _ in 0..tries.max(1) {
        tx.send_to(&frame, &to)
            .map_err(|e| ProbeError::from(format!("{device}: send: {e}")))?;
        sent += 1;
        let start = Instant::now();
        let wait = async {
            loop {
                rx.readable().await?;
                match rx.try_io(tokio::io::Interest::READABLE, || recv_one(&rx, &mut buf)) {
                    Ok(r) => {
                        let on_member = i32::try_from(r.ifindex).is_ok_and(|i| listen.contains(&i));
                        if on_member
                            && !r.outgoing
                            && is_reply(&buf[..r.len], r.vlan, src, target, vlan)
                        {
                            return Ok::<Duration, std::io::Error>(start.elapsed());
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
        };
        match tokio::time::timeout(per_try, wait).await {
            Ok(Ok(rtt)) => {
                return Ok(Outcome {
                    sent,
                    answered: 1,
                    rtt: Some(rtt),
                    source_mac: src,
                })
            }
            Ok(Err(e)) => return Err(ProbeError::from(format!("{device}: receive: {e}"))),
            Err(_) => {}
        }
    }
    Ok(Outcome {
        sent,
        answered: 0,
        rtt: None,
        source_mac: src,
    })
}

/// One request through `device` for `preflight probe arp:IP@MEMBER` and
/// `path:`: its round trip, or no answer.
pub(crate) async fn once(
    addr: Ipv4Addr,
    device: &str,
    vlan: Option<u16>,
    timeout: Duration,
) -> Result<Duration, ProbeError> {
    let o = check(device, vlan, addr, 1, timeout).await?;
    o.rtt
        .ok_or_else(|| ProbeError::from(format!("no ARP reply within {timeout:?}")))
}

#[cfg(test)]
#[path = "member_tests.rs"]
mod tests;
