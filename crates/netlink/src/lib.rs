//! The only crate that speaks rtnetlink. It gives the rest of preflight two
//! things: [`dump`], a one-shot typed [`Snapshot`] of links, addresses and
//! routes, and [`watch`], which keeps such a snapshot current from the kernel's
//! multicast notifications (subscribed before the first dump, re-dumped on
//! overrun and on a timer) and publishes it on a tokio watch channel: every
//! change reaches the snapshot, publications are paced (`pace`).
//!
//! Decoding is in [`decode`] (pure, tested on captured bytes); applying events
//! to a snapshot is [`apply`]; sockets live in `socket`, speed and duplex
//! (sysfs) in `sysfs`.

#![warn(missing_docs)]

use std::sync::Arc;

use preflight_model::Snapshot;

pub mod control;
pub mod decode;
mod pace;
mod socket;
mod sysfs;

pub use decode::{decode_datagram, DecodeProblem, Decoded, Event};
pub use socket::{capture, dump, watch, Watch, WatchConfig, WatchStats};

/// Everything that can go wrong talking to the kernel.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The netlink socket could not be opened or bound.
    #[error("cannot open rtnetlink socket: {0}")]
    Socket(#[source] std::io::Error),
    /// Sending a request failed.
    #[error("cannot send {what} request: {source}")]
    Send {
        /// What was asked (`link dump`).
        what: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Receiving failed for a reason other than an overrun.
    #[error("cannot read from rtnetlink socket: {0}")]
    Recv(#[source] std::io::Error),
    /// The kernel answered a request with an error.
    #[error("kernel rejected {what}: {}", std::io::Error::from_raw_os_error(-code))]
    Kernel {
        /// What was asked.
        what: &'static str,
        /// Negative errno.
        code: i32,
    },
    /// A dump kept being interrupted by changes.
    #[error("{what} dump was interrupted {attempts} times in a row; the network is changing too fast to read")]
    Interrupted {
        /// What was dumped.
        what: &'static str,
        /// Attempts made.
        attempts: u32,
    },
    /// A link change request (tests and benches) failed.
    #[error("{what}: {message}")]
    Control {
        /// What was attempted (`set eth1 down`).
        what: String,
        /// rtnetlink's error.
        message: String,
    },
}

/// Applies one event to a snapshot. Returns whether the snapshot changed.
/// Link events replace the whole interface (RTM_NEWLINK carries full state);
/// the caller fills in what netlink does not carry (speed, duplex).
pub fn apply(snapshot: &mut Snapshot, event: Event) -> bool {
    match event {
        Event::NewLink(iface) => {
            let index = iface.index;
            if snapshot.interfaces.get(&index) == Some(&*iface) {
                return false;
            }
            snapshot.interfaces.insert(index, *iface);
            true
        }
        Event::DelLink(index) => {
            let removed = snapshot.interfaces.remove(&index).is_some();
            let before = snapshot.addresses.len() + snapshot.routes.len();
            snapshot.addresses.retain(|a| a.ifindex != index);
            snapshot.routes.retain(|r| r.oif != Some(index));
            removed || before != snapshot.addresses.len() + snapshot.routes.len()
        }
        Event::NewAddress(a) => {
            if let Some(existing) = snapshot
                .addresses
                .iter_mut()
                .find(|x| x.ifindex == a.ifindex && x.address == a.address)
            {
                if *existing == a {
                    return false;
                }
                *existing = a;
            } else {
                snapshot.addresses.push(a);
            }
            true
        }
        Event::DelAddress(a) => {
            let before = snapshot.addresses.len();
            snapshot
                .addresses
                .retain(|x| !(x.ifindex == a.ifindex && x.address == a.address));
            before != snapshot.addresses.len()
        }
        Event::NewRoute(r) => {
            if let Some(existing) = snapshot.routes.iter_mut().find(|x| same_route(x, &r)) {
                if *existing == r {
                    return false;
                }
                *existing = r;
            } else {
                snapshot.routes.push(r);
            }
            true
        }
        Event::DelRoute(r) => {
            let before = snapshot.routes.len();
            snapshot.routes.retain(|x| !same_route(x, &r));
            before != snapshot.routes.len()
        }
        Event::Done { .. } | Event::Error { .. } | Event::Overrun => false,
    }
}

/// Routes are keyed as the kernel keys them in one table: destination,
/// prefix, metric and family (gateway and oif may be replaced in place).
fn same_route(a: &preflight_model::Route, b: &preflight_model::Route) -> bool {
    a.destination == b.destination
        && a.prefix_len == b.prefix_len
        && a.metric == b.metric
        && a.ipv6 == b.ipv6
}

/// A snapshot shared between the watch task and its readers.
pub type SharedSnapshot = Arc<Snapshot>;

#[cfg(test)]
mod apply_tests {
    use super::*;
    use preflight_model::{Address, Interface, Route};

    fn addr(ifindex: u32, ip: &str, permanent: bool) -> Address {
        Address {
            ifindex,
            address: ip.parse().expect("test ip"),
            prefix_len: 24,
            permanent,
            scope: "global".into(),
        }
    }

    #[test]
    fn dellink_removes_interface_and_its_addresses_and_routes() {
        let mut s = Snapshot::default();
        apply(
            &mut s,
            Event::NewLink(Box::new(Interface {
                index: 3,
                name: "eth0".into(),
                ..Default::default()
            })),
        );
        apply(&mut s, Event::NewAddress(addr(3, "192.0.2.10", true)));
        apply(
            &mut s,
            Event::NewRoute(Route {
                destination: None,
                prefix_len: 0,
                gateway: Some("192.0.2.1".parse().expect("ip")),
                oif: Some(3),
                protocol: "static".into(),
                metric: None,
                ipv6: false,
            }),
        );
        assert!(apply(&mut s, Event::DelLink(3)));
        assert!(s.interfaces.is_empty() && s.addresses.is_empty() && s.routes.is_empty());
    }

    #[test]
    fn address_replaced_in_place_and_unchanged_is_not_a_change() {
        let mut s = Snapshot::default();
        assert!(apply(
            &mut s,
            Event::NewAddress(addr(3, "192.0.2.10", true))
        ));
        assert!(!apply(
            &mut s,
            Event::NewAddress(addr(3, "192.0.2.10", true))
        ));
        assert!(apply(
            &mut s,
            Event::NewAddress(addr(3, "192.0.2.10", false))
        ));
        assert_eq!(s.addresses.len(), 1);
        assert!(!s.addresses[0].permanent);
        assert!(apply(
            &mut s,
            Event::DelAddress(addr(3, "192.0.2.10", false))
        ));
        assert!(s.addresses.is_empty());
    }
}
