//! The DHCP probe: is any DHCP server answering on this interface? One
//! DHCPDISCOVER (RFC 2131) goes out of one interface and the first OFFER
//! for its transaction id that a client could take is reported (server id,
//! offered address, round trip); one without an address or a server id is
//! no offer (fail closed: it is not a server that would serve the node). It is the seed outage's last question: if os-net-config's
//! safe-defaults fallback put this interface on DHCP, would anyone answer?
//!
//! Read-only by construction: the probe never sends a REQUEST, so no server
//! commits a lease (an OFFER binds nothing, RFC 2131 §4.3.1), and it never
//! touches an address, a route or a lease file. It uses a plain UDP socket
//! bound to 0.0.0.0:68 on the device (SO_BINDTODEVICE, SO_BROADCAST): the
//! kernel sends a limited broadcast out of a bound device even when the
//! device has no IPv4 address. SO_REUSEADDR/SO_REUSEPORT let it share port 68
//! with a DHCP client that set them too; the OFFER is broadcast (the
//! BROADCAST flag is set), and the kernel hands a broadcast to every socket
//! bound to the port. On an interface without an IPv4 address, reverse-path
//! filtering would drop the OFFER before the UDP socket: there a packet
//! socket (CAP_NET_RAW) receives it too.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use crate::ProbeError;

/// Default wait for an OFFER. Not shorter: dnsmasq (OpenStack's DHCP
/// server) pings an address before offering it and answers a new client
/// after 3 s (measured: 3.0 s with dnsmasq 2.90); a real client waits 4 s
/// before it retransmits (RFC 2131 §4.1).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

const CLIENT_PORT: u16 = 68;
const SERVER_PORT: u16 = 67;
const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
/// Fixed BOOTP header (RFC 951) before the options.
const HEADER: usize = 236;
/// Smallest BOOTP message some relays and servers accept (RFC 951).
const MIN_MESSAGE: usize = 300;
const OPT_PAD: u8 = 0;
const OPT_MESSAGE_TYPE: u8 = 53;
const OPT_SERVER_ID: u8 = 54;
const OPT_PARAMS: u8 = 55;
const OPT_CLIENT_ID: u8 = 61;
const OPT_END: u8 = 255;
const DISCOVER: u8 = 1;
const OFFER: u8 = 2;
const BROADCAST_FLAG: u16 = 0x8000;
const ETH_P_IP: u16 = 0x0800;

/// A server's answer to the probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpOffer {
    /// Server identifier (option 54).
    pub server: Ipv4Addr,
    /// The address offered (`yiaddr`).
    pub address: Ipv4Addr,
    /// From sending the DISCOVER to receiving the OFFER.
    pub rtt: Duration,
}

/// What one DISCOVER got back.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Probed {
    /// The first OFFER a client could take, if one came in time.
    pub offer: Option<DhcpOffer>,
    /// The first OFFER for us that no client would take (see
    /// [`Answer::Invalid`]), if one came: why.
    pub invalid: Option<String>,
}

/// An OFFER for the probe's transaction, as [`parse_offer`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// An address a client could take, from a server it could ask for it
    /// (RFC 2131 §4.3.1: the server identifier is what its REQUEST names).
    Offer {
        /// Server identifier (option 54).
        server: Ipv4Addr,
        /// The address offered (`yiaddr`).
        address: Ipv4Addr,
    },
    /// An OFFER no client would take: no address (`yiaddr` 0.0.0.0, or a
    /// broadcast, multicast or loopback one), or no usable server
    /// identifier. It does not mean a DHCP server would serve the node.
    Invalid(String),
}

/// A DHCPDISCOVER for transaction `xid` from hardware address `mac`, with
/// the BROADCAST flag so that the server broadcasts its OFFER (we have no
/// address to unicast to).
#[must_use]
pub fn discover(xid: u32, mac: [u8; 6]) -> Vec<u8> {
    let mut p = vec![0u8; HEADER];
    p[0] = 1; // op: BOOTREQUEST
    p[1] = 1; // htype: Ethernet
    p[2] = 6; // hlen
    p[4..8].copy_from_slice(&xid.to_be_bytes());
    p[10..12].copy_from_slice(&BROADCAST_FLAG.to_be_bytes());
    p[28..34].copy_from_slice(&mac);
    p.extend_from_slice(&MAGIC_COOKIE);
    p.extend_from_slice(&[OPT_MESSAGE_TYPE, 1, DISCOVER]);
    p.extend_from_slice(&[OPT_CLIENT_ID, 7, 1]);
    p.extend_from_slice(&mac);
    // Subnet mask, router, DNS, domain name, lease time, server id: what a
    // real client asks, so the server answers as it would answer one.
    p.extend_from_slice(&[OPT_PARAMS, 6, 1, 3, 6, 15, 51, 54]);
    p.push(OPT_END);
    p.resize(p.len().max(MIN_MESSAGE), OPT_PAD);
    p
}

/// The OFFER in `p` if it is one for transaction `xid` and hardware address
/// `mac`, valid or not; `None` for anything else (a request, an ACK,
/// another client's transaction, a truncated or malformed message). Never
/// panics.
#[must_use]
pub fn parse_offer(p: &[u8], xid: u32, mac: [u8; 6]) -> Option<Answer> {
    if p.len() < HEADER + MAGIC_COOKIE.len()
        || p[0] != 2
        || p[4..8] != xid.to_be_bytes()
        || p[28..34] != mac
        || p[HEADER..HEADER + 4] != MAGIC_COOKIE
    {
        return None;
    }
    let yiaddr = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
    let mut message_type = None;
    let mut server = None;
    let mut opts = &p[HEADER + 4..];
    loop {
        match opts {
            [] | [OPT_END, ..] => break,
            [OPT_PAD, rest @ ..] => opts = rest,
            [code, len, rest @ ..] => {
                let value = rest.get(..usize::from(*len))?;
                match (*code, value) {
                    (OPT_MESSAGE_TYPE, [t]) => message_type = Some(*t),
                    (OPT_SERVER_ID, [a, b, c, d]) => server = Some(Ipv4Addr::new(*a, *b, *c, *d)),
                    _ => {}
                }
                opts = &rest[value.len()..];
            }
            // A code without its length byte: truncated.
            [_] => return None,
        }
    }
    if message_type != Some(OFFER) {
        return None;
    }
    let unusable =
        |a: Ipv4Addr| a.is_unspecified() || a.is_broadcast() || a.is_multicast() || a.is_loopback();
    Some(match server {
        None => Answer::Invalid(format!(
            "an OFFER of {yiaddr} without a server identifier (option 54)"
        )),
        Some(s) if unusable(s) => Answer::Invalid(format!(
            "an OFFER of {yiaddr} with server identifier {s}, not a server's address"
        )),
        Some(s) if unusable(yiaddr) => Answer::Invalid(format!(
            "an OFFER of {yiaddr} from {s}, not an address a client can take"
        )),
        Some(server) => Answer::Offer {
            server,
            address: yiaddr,
        },
    })
}

/// Whether `name` can be a Linux interface name (the kernel's
/// `dev_valid_name`): 1 to 15 bytes, not `.` or `..`, no `/`, `:` or white
/// space.
#[must_use]
pub fn valid_device(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace())
}

/// What the probe needs to know of its interface.
struct Link {
    ifindex: i32,
    mac: [u8; 6],
    /// Whether it has an IPv4 address (see [`packet_receiver`]).
    has_ipv4: bool,
}

/// The interface's index, MAC address and whether it has an IPv4 address,
/// or why the probe cannot run on it.
fn link(device: &str) -> Result<Link, ProbeError> {
    let all = nix::ifaddrs::getifaddrs()
        .map_err(|e| ProbeError::local(format!("cannot list interfaces: {e}")))?;
    let mut found = false;
    let mut has_ipv4 = false;
    let mut hw = None;
    for a in all.filter(|a| a.interface_name == device) {
        found = true;
        let Some(addr) = a.address.as_ref() else {
            continue;
        };
        has_ipv4 |= addr.as_sockaddr_in().is_some();
        if let Some(l) = addr.as_link_addr() {
            hw = l.addr().filter(|m| *m != [0; 6]).map(|m| (l.ifindex(), m));
        }
    }
    let (ifindex, mac) = hw.ok_or_else(|| {
        ProbeError::local(if found {
            format!("{device} has no Ethernet address: DHCP needs one")
        } else {
            format!("no interface {device}")
        })
    })?;
    Ok(Link {
        ifindex: i32::try_from(ifindex)
            .map_err(|_| ProbeError::local(format!("{device}: ifindex out of range")))?,
        mac,
        has_ipv4,
    })
}

/// Reverse-path filtering in force for `device` (the larger of `all` and
/// the device's own setting, as the kernel takes it).
fn rp_filter(device: &str) -> u8 {
    ["all", device]
        .iter()
        .filter_map(|d| {
            std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{d}/rp_filter")).ok()
        })
        .filter_map(|v| v.trim().parse::<u8>().ok())
        .max()
        .unwrap_or(0)
}

/// On an interface without an IPv4 address the kernel has no route back to
/// the server, so with reverse-path filtering on (RHEL and systemd set it)
/// it drops the OFFER before any UDP socket sees it: measured, a false "no
/// offer". A packet socket (CAP_NET_RAW) sees the frame before that filter.
/// Only used there: on an addressed, busy interface it would copy every IPv4
/// packet for the whole wait.
fn packet_receiver(l: &Link, device: &str) -> Result<Option<tokio::net::UdpSocket>, ProbeError> {
    if l.has_ipv4 {
        return Ok(None);
    }
    let open = || -> std::io::Result<Socket> {
        let s = Socket::new(
            Domain::PACKET,
            Type::DGRAM,
            Some(Protocol::from(i32::from(ETH_P_IP.to_be()))),
        )?;
        s.bind(&crate::packet::link_addr(l.ifindex, ETH_P_IP, [0; 6]))?;
        s.set_nonblocking(true)?;
        Ok(s)
    };
    match open() {
        // Received through tokio's datagram type, as the ARP probe does.
        Ok(s) => tokio::net::UdpSocket::from_std(std::net::UdpSocket::from(s))
            .map(Some)
            .map_err(|e| ProbeError::local(e.to_string())),
        Err(_) if rp_filter(device) == 0 => Ok(None),
        Err(e) => Err(socket_error(
            "has no IPv4 address and rp_filter is on, so the kernel would drop an OFFER; cannot open a packet socket to see it",
            device,
            &e,
        )),
    }
}

/// The UDP payload of IPv4 packet `p` if it is addressed to the client port.
/// A fragment is not: the packet socket sees fragments before the kernel
/// reassembles them, and the first alone could read as a whole OFFER cut
/// short; DHCP clients that read packet sockets (systemd-networkd,
/// NetworkManager) drop fragments too.
fn udp_to_client(p: &[u8]) -> Option<&[u8]> {
    let ihl = usize::from(*p.first()? & 0x0f) * 4;
    if p[0] >> 4 != 4 || ihl < 20 || *p.get(9)? != 17 {
        return None;
    }
    // More-fragments flag or a fragment offset.
    if u16::from_be_bytes([*p.get(6)?, *p.get(7)?]) & 0x3fff != 0 {
        return None;
    }
    let udp = p.get(ihl..)?;
    (udp.get(2..4)? == CLIENT_PORT.to_be_bytes()).then_some(())?;
    udp.get(8..)
}

/// A transaction id nobody else is likely to use.
fn random_xid() -> u32 {
    use std::io::Read as _;
    let mut b = [0u8; 4];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_ok()
    {
        return u32::from_ne_bytes(b);
    }
    // No /dev/urandom (a bare chroot): std's per-process random hash keys.
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    // The low 32 bits of the hash: a transaction id needs no more.
    h.finish() as u32
}

fn socket_error(what: &str, device: &str, e: &std::io::Error) -> ProbeError {
    let hint = match (e.kind(), e.raw_os_error()) {
        (std::io::ErrorKind::PermissionDenied, _) if what.contains("port 68") => {
            " (binding port 68 needs CAP_NET_BIND_SERVICE)"
        }
        (std::io::ErrorKind::PermissionDenied, _) => " (needs CAP_NET_RAW)",
        (_, Some(libc::EADDRINUSE)) => {
            " (another program, likely a DHCP client, holds UDP port 68 on it without SO_REUSEADDR)"
        }
        _ => "",
    };
    ProbeError::local(format!("{device}: {what}: {e}{hint}"))
}

/// Sends one DHCPDISCOVER out of `device` and waits up to `timeout` for an
/// OFFER a client could take; an invalid one is noted and the wait goes on.
///
/// # Errors
/// The probe could not be sent (no such interface, no MAC address, port 68
/// unavailable, missing capability, interface down): the caller cannot tell
/// whether a server would answer. Always `local`.
pub async fn probe(device: &str, timeout: Duration) -> Result<Probed, ProbeError> {
    if !valid_device(device) {
        return Err(ProbeError::local(format!(
            "`{device}` is not an interface name"
        )));
    }
    let l = link(device)?;
    let mac = l.mac;
    let raw = packet_receiver(&l, device)?;
    let sock = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
        .map_err(|e| socket_error("cannot open a UDP socket", device, &e))?;
    sock.set_reuse_address(true)
        .and_then(|()| sock.set_reuse_port(true))
        .and_then(|()| sock.set_broadcast(true))
        .map_err(|e| socket_error("cannot set socket options", device, &e))?;
    // Bound to the device before the port, so that port 68 is shared only
    // with sockets of this device (or unbound ones).
    sock.bind_device(Some(device.as_bytes()))
        .map_err(|e| socket_error("cannot bind to the interface", device, &e))?;
    sock.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, CLIENT_PORT).into())
        .map_err(|e| socket_error("cannot bind UDP port 68", device, &e))?;
    sock.set_nonblocking(true)
        .map_err(|e| ProbeError::local(e.to_string()))?;
    let udp = tokio::net::UdpSocket::from_std(std::net::UdpSocket::from(sock))
        .map_err(|e| ProbeError::local(e.to_string()))?;
    let xid = random_xid();
    let start = Instant::now();
    udp.send_to(
        &discover(xid, mac),
        SocketAddrV4::new(Ipv4Addr::BROADCAST, SERVER_PORT),
    )
    .await
    .map_err(|e| socket_error("cannot send the DHCPDISCOVER", device, &e))?;
    let mut invalid = None;
    let wait = receive(&udp, raw.as_ref(), (xid, mac), start, device, &mut invalid);
    let offer = match tokio::time::timeout(timeout, wait).await {
        Ok(r) => Some(r?),
        Err(_) => None,
    };
    Ok(Probed { offer, invalid })
}

/// Largest IPv4 packet, so the largest UDP message: a receive buffer any
/// smaller cuts an OFFER on a link of a larger MTU (a 3.3 KB one on a
/// jumbo-frame link), and a cut OFFER is no offer.
const MAX_IPV4_PACKET: usize = 65_535;

/// Waits for an OFFER a client could take, of transaction `xid` for `mac`,
/// on `udp` and, when there is one, the packet socket `raw`; skips
/// everything else and notes the first invalid OFFER in `invalid`.
async fn receive(
    udp: &tokio::net::UdpSocket,
    raw: Option<&tokio::net::UdpSocket>,
    (xid, mac): (u32, [u8; 6]),
    start: Instant,
    device: &str,
    invalid: &mut Option<String>,
) -> Result<DhcpOffer, ProbeError> {
    let mut buf = vec![0u8; MAX_IPV4_PACKET];
    let mut frame = vec![0u8; MAX_IPV4_PACKET];
    loop {
        // The OFFER through whichever socket sees it first.
        let message = tokio::select! {
            r = udp.recv(&mut buf) => {
                let n = r.map_err(|e| socket_error("receive", device, &e))?;
                &buf[..n]
            }
            r = async { raw.expect("guarded").recv(&mut frame).await }, if raw.is_some() => {
                let n = r.map_err(|e| socket_error("receive", device, &e))?;
                udp_to_client(&frame[..n]).unwrap_or_default()
            }
        };
        match parse_offer(message, xid, mac) {
            Some(Answer::Offer { server, address }) => {
                return Ok(DhcpOffer {
                    server,
                    address,
                    rtt: start.elapsed(),
                })
            }
            Some(Answer::Invalid(why)) => {
                tracing::debug!(device, %why, "DHCP probe: invalid OFFER ignored");
                invalid.get_or_insert(why);
            }
            None => {}
        }
    }
}

/// [`probe`] as reported: the model's [`DhcpProbeResult`], stamped now.
///
/// [`DhcpProbeResult`]: preflight_model::DhcpProbeResult
pub async fn check(device: &str, timeout: Duration) -> preflight_model::DhcpProbeResult {
    let (Probed { offer, invalid }, error) = match probe(device, timeout).await {
        Ok(p) => (p, None),
        Err(e) => (Probed::default(), Some(e.message)),
    };
    preflight_model::DhcpProbeResult {
        interface: device.to_owned(),
        offered: offer.is_some(),
        invalid_offer: invalid,
        server: offer.as_ref().map(|o| o.server),
        address: offer.as_ref().map(|o| o.address),
        rtt_ms: offer.as_ref().map(|o| o.rtt.as_secs_f64() * 1000.0),
        error,
        checked_at: std::time::SystemTime::now(),
    }
}

#[cfg(test)]
mod tests;
