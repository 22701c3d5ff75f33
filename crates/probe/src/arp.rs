//! ARP probes for on-link targets: a request out of one interface through a
//! packet socket (CAP_NET_RAW), answered by a reply from the target. Every
//! IPv4 host on the link answers ARP, even one that drops ICMP, and the
//! answer proves the layer-2 path through this very interface.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use crate::ProbeError;

const ETH_P_ARP: u16 = 0x0806;
const BROADCAST: [u8; 6] = [0xff; 6];

/// What the probe needs to know of its interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Local {
    pub ifindex: i32,
    pub mac: [u8; 6],
    /// Sender address: one of the interface's own in the target's subnet,
    /// else its first, else 0.0.0.0 (an RFC 5227 probe, still answered).
    pub ip: Ipv4Addr,
}

fn local(device: &str, target: Ipv4Addr) -> Result<Local, ProbeError> {
    let mut link = None;
    let mut addrs = Vec::new();
    let all = nix::ifaddrs::getifaddrs()
        .map_err(|e| ProbeError::local(format!("cannot list interfaces: {e}")))?;
    for a in all {
        if a.interface_name != device {
            continue;
        }
        let Some(addr) = a.address.as_ref() else {
            continue;
        };
        if let Some(l) = addr.as_link_addr() {
            link = Some((l.ifindex(), l.addr()));
        } else if let Some(v4) = addr.as_sockaddr_in() {
            let mask = a
                .netmask
                .as_ref()
                .and_then(|m| m.as_sockaddr_in())
                .map_or(u32::MAX, |m| u32::from(m.ip()));
            addrs.push((v4.ip(), mask));
        }
    }
    let (ifindex, mac) = link.ok_or_else(|| format!("no interface {device}"))?;
    let mac = mac
        .filter(|m| *m != [0; 6])
        .ok_or_else(|| format!("{device} has no Ethernet address: ARP needs one"))?;
    let ip = addrs
        .iter()
        .find(|(ip, mask)| u32::from(*ip) & mask == u32::from(target) & mask)
        .or_else(|| addrs.first())
        .map_or(Ipv4Addr::UNSPECIFIED, |(ip, _)| *ip);
    Ok(Local {
        ifindex: i32::try_from(ifindex)
            .map_err(|_| ProbeError::local(format!("{device}: ifindex out of range")))?,
        mac,
        ip,
    })
}

/// An ARP request (RFC 826) for `target` from `l`, without the Ethernet
/// header (the packet socket is SOCK_DGRAM: the kernel adds it).
pub(crate) fn request(l: &Local, target: Ipv4Addr) -> [u8; 28] {
    let mut p = [0u8; 28];
    p[0..2].copy_from_slice(&1u16.to_be_bytes()); // Ethernet
    p[2..4].copy_from_slice(&0x0800u16.to_be_bytes()); // IPv4
    p[4] = 6;
    p[5] = 4;
    p[6..8].copy_from_slice(&1u16.to_be_bytes()); // request
    p[8..14].copy_from_slice(&l.mac);
    p[14..18].copy_from_slice(&l.ip.octets());
    // Target hardware address unknown: zero.
    p[24..28].copy_from_slice(&target.octets());
    p
}

/// Whether `p` is `target`'s reply to a request from `l`.
pub(crate) fn is_reply(p: &[u8], l: &Local, target: Ipv4Addr) -> bool {
    p.len() >= 28
        && p[0..2] == 1u16.to_be_bytes()
        && p[2..4] == 0x0800u16.to_be_bytes()
        && p[4] == 6
        && p[5] == 4
        && p[6..8] == 2u16.to_be_bytes()
        && p[14..18] == target.octets()
        && p[18..24] == l.mac
}

/// One ARP probe of `target` out of `device`.
pub(crate) async fn probe(
    target: Ipv4Addr,
    device: &str,
    timeout: Duration,
) -> Result<Duration, ProbeError> {
    let l = local(device, target)?;
    let sock = Socket::new(
        Domain::PACKET,
        Type::DGRAM,
        Some(Protocol::from(i32::from(ETH_P_ARP.to_be()))),
    )
    .map_err(|e| {
        ProbeError::local(if e.kind() == std::io::ErrorKind::PermissionDenied {
            format!("cannot open a packet socket for ARP: {e} (needs CAP_NET_RAW)")
        } else {
            format!("cannot open a packet socket for ARP: {e}")
        })
    })?;
    sock.bind(&crate::packet::link_addr(l.ifindex, ETH_P_ARP, [0; 6]))
        .map_err(|e| format!("cannot bind to {device}: {e}"))?;
    sock.set_nonblocking(true)
        .map_err(|e| ProbeError::local(e.to_string()))?;
    let start = Instant::now();
    sock.send_to(
        &request(&l, target),
        &crate::packet::link_addr(l.ifindex, ETH_P_ARP, BROADCAST),
    )
    .map_err(|e| format!("send: {e}"))?;
    // Received through tokio's datagram type: a reply already queued is
    // reported as soon as the socket is registered, and `recv` is a plain
    // recv(2), which a packet socket answers like any datagram socket.
    let rx = tokio::net::UdpSocket::from_std(std::net::UdpSocket::from(sock))
        .map_err(|e| ProbeError::local(e.to_string()))?;
    let wait = async {
        let mut buf = [0u8; 128];
        loop {
            let n = rx
                .recv(&mut buf)
                .await
                .map_err(|e| format!("receive: {e}"))?;
            if is_reply(&buf[..n], &l, target) {
                return Ok::<Duration, String>(start.elapsed());
            }
        }
    };
    Ok(tokio::time::timeout(timeout, wait)
        .await
        .map_err(|_| format!("no ARP reply within {timeout:?}"))??)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_and_reply_bytes() {
        let l = Local {
            ifindex: 2,
            mac: [2, 0, 0, 0, 0, 1],
            ip: Ipv4Addr::new(192, 0, 2, 10),
        };
        let gw = Ipv4Addr::new(192, 0, 2, 1);
        let req = request(&l, gw);
        assert_eq!(
            req,
            [
                0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1, 192, 0, 2, 10, 0, 0, 0, 0, 0, 0, 192, 0,
                2, 1
            ]
        );
        assert!(!is_reply(&req, &l, gw), "our own request is not a reply");
        // The gateway's reply: op 2, sender = gateway, target = us.
        let mut rep = [0u8; 28];
        rep[..6].copy_from_slice(&[0, 1, 8, 0, 6, 4]);
        rep[6..8].copy_from_slice(&[0, 2]);
        rep[8..14].copy_from_slice(&[2, 0, 0, 0, 0, 9]);
        rep[14..18].copy_from_slice(&gw.octets());
        rep[18..24].copy_from_slice(&l.mac);
        rep[24..28].copy_from_slice(&l.ip.octets());
        assert!(is_reply(&rep, &l, gw));
        assert!(
            !is_reply(&rep, &l, Ipv4Addr::new(192, 0, 2, 2)),
            "other host"
        );
        let mut other = rep;
        other[18..24].copy_from_slice(&[2, 0, 0, 0, 0, 7]);
        assert!(!is_reply(&other, &l, gw), "a reply to someone else");
        assert!(!is_reply(&rep[..20], &l, gw), "truncated");
    }
}
