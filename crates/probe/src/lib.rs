//! Reachability probes bound to an interface (SO_BINDTODEVICE), so that a
//! working bond cannot hide a dead path: ICMP echo (unprivileged ICMP socket
//! where `net.ipv4.ping_group_range` allows, raw socket with CAP_NET_RAW
//! otherwise), TCP connect, and ARP for on-link IPv4 targets (packet socket,
//! CAP_NET_RAW). Each target keeps a window of results: loss,
//! mean round trip, and a failed state entered after `fail_after`
//! consecutive failures and left after `recover_after` consecutive successes.

#![warn(missing_docs)]

mod arp;
pub mod dhcp;
pub mod lldp;
pub mod member;
mod packet;
pub mod paths;

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use preflight_model::ProbeStatus;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::watch;

/// What to probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// ICMP echo to an address, optionally out of one interface.
    Icmp {
        /// Address.
        addr: IpAddr,
        /// Interface to bind to.
        device: Option<String>,
    },
    /// TCP connect to an address and port, optionally out of one interface.
    Tcp {
        /// Address and port.
        addr: SocketAddr,
        /// Interface to bind to.
        device: Option<String>,
    },
    /// ARP request to an on-link IPv4 address out of one interface.
    Arp {
        /// Address.
        addr: Ipv4Addr,
        /// Interface the request leaves by (required: ARP is per link).
        device: String,
    },
    /// The member path check ([`member`]): an RFC 5227 ARP probe out of
    /// one bond member, from its permanent MAC, tagged with `vlan`.
    Path {
        /// Address.
        addr: Ipv4Addr,
        /// The member the request leaves by.
        device: String,
        /// 802.1Q VLAN id to tag the request with.
        vlan: Option<u16>,
    },
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (kind, addr, dev) = match self {
            Self::Icmp { addr, device } => ("icmp", addr.to_string(), device),
            Self::Tcp { addr, device } => ("tcp", addr.to_string(), device),
            Self::Arp { addr, device } => return write!(f, "arp {addr} via {device}"),
            Self::Path { addr, device, vlan } => {
                write!(f, "path {addr} via {device}")?;
                return match vlan {
                    Some(v) => write!(f, " vlan {v}"),
                    None => Ok(()),
                };
            }
        };
        write!(f, "{kind} {addr}")?;
        if let Some(d) = dev {
            write!(f, " via {d}")?;
        }
        Ok(())
    }
}

/// A target that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "probe target `{0}`: expected icmp:ADDRESS[@DEVICE], tcp:ADDRESS:PORT[@DEVICE], arp:IPV4@DEVICE or path:IPV4@MEMBER[/VLAN]"
)]
pub struct BadTarget(pub String);

impl std::str::FromStr for Target {
    type Err = BadTarget;

    /// `icmp:192.0.2.1@bond0`, `tcp:10.0.0.5:9100`, `tcp:[2001:db8::1]:22@eth0`,
    /// `arp:192.0.2.1@bond0`.
    fn from_str(s: &str) -> Result<Self, BadTarget> {
        let bad = || BadTarget(s.to_owned());
        let (kind, rest) = s.split_once(':').ok_or_else(bad)?;
        if kind == "path" {
            let (addr, dev) = rest.rsplit_once('@').ok_or_else(bad)?;
            let (device, vlan) = match dev.split_once('/') {
                Some((d, v)) => (
                    d,
                    Some(
                        v.parse::<u16>()
                            .ok()
                            .filter(|v| (1..4095).contains(v))
                            .ok_or_else(bad)?,
                    ),
                ),
                None => (dev, None),
            };
            if !dhcp::valid_device(device) {
                return Err(bad());
            }
            return Ok(Self::Path {
                addr: addr.parse().map_err(|_| bad())?,
                device: device.to_owned(),
                vlan,
            });
        }
        let (addr, device) = match rest.rsplit_once('@') {
            Some((a, d)) if !d.is_empty() && d.len() < 16 => (a, Some(d.to_owned())),
            Some(_) => return Err(bad()),
            None => (rest, None),
        };
        match kind {
            "icmp" => Ok(Self::Icmp {
                addr: addr.parse().map_err(|_| bad())?,
                device,
            }),
            "tcp" => Ok(Self::Tcp {
                addr: addr.parse().map_err(|_| bad())?,
                device,
            }),
            "arp" => Ok(Self::Arp {
                addr: addr.parse().map_err(|_| bad())?,
                device: device.ok_or_else(bad)?,
            }),
            _ => Err(bad()),
        }
    }
}

/// Why a probe got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ProbeError {
    /// The probe could not be sent at all (no socket, no permission): this
    /// node cannot tell whether the target is reachable.
    pub local: bool,
    /// What happened, for people.
    pub message: String,
}

impl ProbeError {
    fn local(message: String) -> Self {
        Self {
            local: true,
            message,
        }
    }
}

/// Sent, and no (or a negative) answer: the path or the target failed.
impl From<String> for ProbeError {
    fn from(message: String) -> Self {
        Self {
            local: false,
            message,
        }
    }
}

/// Probe settings.
#[derive(Debug, Clone)]
pub struct ProbeConfig {
    /// Time between probes of one target.
    pub interval: Duration,
    /// A probe without answer within this is a failure.
    pub timeout: Duration,
    /// Consecutive failures that make the target failed.
    pub fail_after: u32,
    /// Consecutive successes that make a failed target recover.
    pub recover_after: u32,
    /// Results kept for loss and round trip.
    pub window: usize,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            fail_after: 3,
            recover_after: 2,
            window: 30,
        }
    }
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !u16::try_from(sum).expect("folded to 16 bits")
}

fn bind(sock: &Socket, device: Option<&String>) -> std::io::Result<()> {
    if let Some(d) = device {
        sock.bind_device(Some(d.as_bytes()))?;
    }
    Ok(())
}

async fn icmp(
    addr: IpAddr,
    device: Option<&String>,
    seq: u16,
    timeout: Duration,
) -> Result<Duration, ProbeError> {
    let (domain, proto, req_type, reply_type) = match addr {
        IpAddr::V4(_) => (Domain::IPV4, Protocol::ICMPV4, 8u8, 0u8),
        IpAddr::V6(_) => (Domain::IPV6, Protocol::ICMPV6, 128u8, 129u8),
    };
    // Unprivileged ICMP first; raw (CAP_NET_RAW) when the kernel refuses it.
    let (sock, raw) = match Socket::new(domain, Type::DGRAM, Some(proto)) {
        Ok(s) => (s, false),
        Err(_) => (
            Socket::new(domain, Type::RAW, Some(proto)).map_err(|e| {
                ProbeError::local(format!(
                    "cannot open an ICMP socket: {e} (unprivileged ICMP is off for this group; raw needs CAP_NET_RAW)"
                ))
            })?,
            true,
        ),
    };
    bind(&sock, device)
        .map_err(|e| format!("cannot bind to {}: {e}", device.map_or("-", String::as_str)))?;
    sock.set_nonblocking(true)
        .map_err(|e| ProbeError::local(e.to_string()))?;
    let udp = tokio::net::UdpSocket::from_std(std::net::UdpSocket::from(sock))
        .map_err(|e| ProbeError::local(e.to_string()))?;
    let id: u16 = u16::try_from(std::process::id() & 0xffff).unwrap_or(0);
    let mut pkt = vec![req_type, 0, 0, 0];
    pkt.extend_from_slice(&id.to_be_bytes());
    pkt.extend_from_slice(&seq.to_be_bytes());
    pkt.extend_from_slice(b"preflight-probe!");
    if addr.is_ipv4() {
        let c = checksum(&pkt);
        pkt[2..4].copy_from_slice(&c.to_be_bytes());
    }
    let start = Instant::now();
    udp.send_to(&pkt, SocketAddr::new(addr, 0))
        .await
        .map_err(|e| format!("send: {e}"))?;
    let wait = async {
        let mut buf = [0u8; 1500];
        loop {
            let (n, from) = udp
                .recv_from(&mut buf)
                .await
                .map_err(|e| format!("receive: {e}"))?;
            if from.ip() != addr {
                continue;
            }
            // Raw IPv4 sockets deliver the IP header too.
            let icmp = if raw && addr.is_ipv4() {
                let ihl = usize::from(buf[0] & 0x0f) * 4;
                buf.get(ihl..n).unwrap_or_default()
            } else {
                &buf[..n]
            };
            if icmp.len() >= 8 && icmp[0] == reply_type && icmp[6..8] == seq.to_be_bytes() {
                return Ok::<Duration, String>(start.elapsed());
            }
        }
    };
    Ok(tokio::time::timeout(timeout, wait)
        .await
        .map_err(|_| format!("no echo reply within {timeout:?}"))??)
}

async fn tcp(
    addr: SocketAddr,
    device: Option<&String>,
    timeout: Duration,
) -> Result<Duration, ProbeError> {
    let sock = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(|e| ProbeError::local(format!("cannot open a TCP socket: {e}")))?;
    if let Some(d) = device {
        sock.bind_device(Some(d.as_bytes()))
            .map_err(|e| format!("cannot bind to {d}: {e}"))?;
    }
    let start = Instant::now();
    let stream = tokio::time::timeout(timeout, sock.connect(addr))
        .await
        .map_err(|_| format!("no connection within {timeout:?}"))?
        .map_err(|e| format!("connect: {e}"))?;
    drop(stream);
    Ok(start.elapsed())
}

/// Probes a target once.
///
/// # Errors
/// Why there was no answer (timeout, refused, cannot bind, ...), and whether
/// the probe could be sent at all.
pub async fn probe_once(t: &Target, seq: u16, timeout: Duration) -> Result<Duration, ProbeError> {
    match t {
        Target::Icmp { addr, device } => icmp(*addr, device.as_ref(), seq, timeout).await,
        Target::Tcp { addr, device } => tcp(*addr, device.as_ref(), timeout).await,
        Target::Arp { addr, device } if member::has_master(device) => {
            member::once(*addr, device, None, timeout).await
        }
        Target::Arp { addr, device } => arp::probe(*addr, device, timeout).await,
        Target::Path { addr, device, vlan } => member::once(*addr, device, *vlan, timeout).await,
    }
}

/// The running state of one target (pure: fed results, tested alone).
#[derive(Debug, Clone)]
pub struct Tracker {
    target: String,
    results: VecDeque<Option<Duration>>,
    consecutive_fail: u32,
    consecutive_ok: u32,
    failed: bool,
    last_error: Option<String>,
}

impl Tracker {
    /// A target with no results yet (not failed: it has not been tried).
    #[must_use]
    pub fn new(target: String) -> Self {
        Self {
            target,
            results: VecDeque::new(),
            consecutive_fail: 0,
            consecutive_ok: 0,
            failed: false,
            last_error: None,
        }
    }

    /// Records one result.
    pub fn record(&mut self, r: Result<Duration, String>, cfg: &ProbeConfig) {
        match r {
            Ok(rtt) => {
                self.results.push_back(Some(rtt));
                self.consecutive_ok += 1;
                self.consecutive_fail = 0;
                self.last_error = None;
                if self.failed && self.consecutive_ok >= cfg.recover_after {
                    self.failed = false;
                }
            }
            Err(e) => {
                self.results.push_back(None);
                self.consecutive_fail += 1;
                self.consecutive_ok = 0;
                self.last_error = Some(e);
                if self.consecutive_fail >= cfg.fail_after {
                    self.failed = true;
                }
            }
        }
        while self.results.len() > cfg.window.max(1) {
            self.results.pop_front();
        }
    }

    /// The status as reported.
    #[must_use]
    pub fn status(&self) -> ProbeStatus {
        let ok: Vec<Duration> = self.results.iter().flatten().copied().collect();
        let n = self.results.len();
        ProbeStatus {
            target: self.target.clone(),
            failed: self.failed,
            loss: if n == 0 {
                0.0
            } else {
                (n - ok.len()) as f64 / n as f64
            },
            rtt_ms: (!ok.is_empty()).then(|| {
                ok.iter().map(Duration::as_secs_f64).sum::<f64>() * 1000.0 / ok.len() as f64
            }),
            consecutive_failures: self.consecutive_fail,
            last_error: self.last_error.clone(),
        }
    }
}

/// Starts probing every target; the receiver holds the latest statuses and
/// changes after every round.
#[must_use]
pub fn spawn(
    targets: Vec<Target>,
    cfg: ProbeConfig,
) -> (
    watch::Receiver<Vec<ProbeStatus>>,
    tokio::task::JoinHandle<()>,
) {
    let mut trackers: Vec<Tracker> = targets
        .iter()
        .map(|t| Tracker::new(t.to_string()))
        .collect();
    let (tx, rx) = watch::channel(trackers.iter().map(Tracker::status).collect());
    let task = tokio::spawn(async move {
        let mut seq = 0u16;
        let mut tick = tokio::time::interval(cfg.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            seq = seq.wrapping_add(1);
            let results = futures_join(&targets, seq, cfg.timeout).await;
            for (t, r) in trackers.iter_mut().zip(results) {
                t.record(r, &cfg);
            }
            if tx
                .send(trackers.iter().map(Tracker::status).collect())
                .is_err()
            {
                return;
            }
        }
    });
    (rx, task)
}

async fn futures_join(
    targets: &[Target],
    seq: u16,
    timeout: Duration,
) -> Vec<Result<Duration, String>> {
    let mut set = tokio::task::JoinSet::new();
    for (i, t) in targets.iter().enumerate() {
        let t = t.clone();
        set.spawn(async move {
            let r = probe_once(&t, seq, timeout).await;
            (i, r.map_err(|e| e.to_string()))
        });
    }
    let mut out: Vec<Result<Duration, String>> = vec![Err("not run".into()); targets.len()];
    while let Some(r) = set.join_next().await {
        if let Ok((i, r)) = r {
            out[i] = r;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        assert_eq!(
            "icmp:192.0.2.1@bond0".parse::<Target>(),
            Ok(Target::Icmp {
                addr: "192.0.2.1".parse().expect("ip"),
                device: Some("bond0".into())
            })
        );
        assert_eq!(
            "tcp:[2001:db8::1]:22".parse::<Target>(),
            Ok(Target::Tcp {
                addr: "[2001:db8::1]:22".parse().expect("sa"),
                device: None
            })
        );
        assert!("udp:1.2.3.4".parse::<Target>().is_err());
        assert!("icmp:1.2.3.4@".parse::<Target>().is_err());
        assert!("tcp:1.2.3.4".parse::<Target>().is_err());
        assert_eq!(
            "arp:192.0.2.1@bond0".parse::<Target>(),
            Ok(Target::Arp {
                addr: "192.0.2.1".parse().expect("ip"),
                device: "bond0".into()
            })
        );
        assert!(
            "arp:192.0.2.1".parse::<Target>().is_err(),
            "ARP needs an interface"
        );
        assert!(
            "arp:2001:db8::1@eth0".parse::<Target>().is_err(),
            "IPv4 only"
        );
        assert_eq!(
            "icmp:192.0.2.1@bond0"
                .parse::<Target>()
                .expect("ok")
                .to_string(),
            "icmp 192.0.2.1 via bond0"
        );
    }

    #[test]
    fn fails_after_n_and_recovers_after_m() {
        let cfg = ProbeConfig {
            fail_after: 3,
            recover_after: 2,
            window: 10,
            ..ProbeConfig::default()
        };
        let mut t = Tracker::new("x".into());
        let ok = || Ok(Duration::from_millis(2));
        let err = || Err("timeout".to_string());
        t.record(err(), &cfg);
        t.record(err(), &cfg);
        assert!(!t.status().failed, "two failures are not yet a failure");
        t.record(err(), &cfg);
        assert!(t.status().failed);
        t.record(ok(), &cfg);
        assert!(t.status().failed, "one success does not recover");
        t.record(ok(), &cfg);
        let s = t.status();
        assert!(!s.failed);
        assert!((s.loss - 0.6).abs() < 1e-9, "{}", s.loss);
        assert!(s.rtt_ms.is_some_and(|r| (r - 2.0).abs() < 1e-6));
    }

    #[test]
    fn icmp_checksum_matches_a_known_packet() {
        // Echo request id 1 seq 1, no payload: checksum 0xf7fd.
        assert_eq!(checksum(&[8, 0, 0, 0, 0, 1, 0, 1]), 0xf7fd);
    }

    #[tokio::test]
    async fn loopback_probes_succeed_and_closed_port_fails() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("listen");
        let addr = l.local_addr().expect("addr");
        let ok = probe_once(
            &Target::Tcp { addr, device: None },
            1,
            Duration::from_secs(2),
        )
        .await;
        assert!(ok.is_ok(), "{ok:?}");
        drop(l);
        let refused = probe_once(
            &Target::Tcp { addr, device: None },
            2,
            Duration::from_secs(2),
        )
        .await;
        assert!(refused.is_err());
        let ping = probe_once(
            &Target::Icmp {
                addr: "127.0.0.1".parse().expect("ip"),
                device: None,
            },
            3,
            Duration::from_secs(2),
        )
        .await;
        assert!(ping.is_ok(), "{ping:?}");
    }
}
