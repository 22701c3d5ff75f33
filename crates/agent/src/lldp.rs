//! The agent's LLDP listener, on by default: it follows the snapshots, keeps
//! a passive listener ([`preflight_probe::lldp::listen`]) on every bond
//! member that is a kernel netdev (kernel bonds, OVS bonds; DPDK members
//! have none), and publishes the [`LldpState`] the policy reads, with the
//! node's VLAN subinterfaces. A member counts as fully heard once it was
//! listened on for [`FULL_INTERVAL`]: before that, no neighbour is not yet
//! "no neighbour".

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use preflight_model::lldp::{LldpState, VlanLink};
use preflight_model::{OvsSource, Snapshot};
use tokio::sync::watch;
use tokio::time::Instant;

/// One LLDP transmit interval (802.1AB's default msgTxInterval, 30 s) and
/// some slack: a switch sends at least once in it.
pub const FULL_INTERVAL: Duration = Duration::from_secs(35);

/// The members to listen on: every port of a kernel bond and every member
/// of an OVS bond that exists as a kernel netdev, sorted.
#[must_use]
pub fn members(snap: &Snapshot) -> Vec<String> {
    members_with(snap, &snap.ovs)
}

/// [`members`] with the OVS bonds of `ovs` (the agent's netlink snapshots
/// do not carry OVSDB's state; the monitor merges it later).
fn members_with(snap: &Snapshot, ovs: &OvsSource) -> Vec<String> {
    let mut out: Vec<String> = snap
        .interfaces
        .values()
        .filter(|i| i.bond.is_some())
        .flat_map(|b| snap.ports_of(b.index))
        .map(|p| p.name.clone())
        .chain(
            ovs.bonds()
                .flat_map(|(_, p)| p.interfaces.iter())
                .filter(|m| snap.by_name(&m.name).is_some())
                .map(|m| m.name.clone()),
        )
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Listens on the bond members of the snapshots `snaps` publishes and of
/// the OVS bonds `ovs` reads; the receiver holds the LLDP state to put into
/// each snapshot, the counters what each member's listener dropped (for
/// metrics). Ends when the receiver is dropped or the snapshots end.
#[must_use]
pub fn spawn(
    mut snaps: watch::Receiver<Arc<Snapshot>>,
    mut ovs: Option<watch::Receiver<OvsSource>>,
) -> (
    watch::Receiver<LldpState>,
    tokio::task::JoinHandle<()>,
    Arc<preflight_probe::lldp::listen::Stats>,
) {
    let (tx, rx) = watch::channel(LldpState {
        listening: true,
        ..LldpState::default()
    });
    let now_ovs = |o: &mut Option<watch::Receiver<OvsSource>>| {
        o.as_mut()
            .map_or(OvsSource::Off, |r| r.borrow_and_update().clone())
    };
    let first = members_with(&snaps.borrow_and_update(), &now_ovs(&mut ovs));
    let (members_tx, members_rx) = watch::channel(first);
    let mut listener = preflight_probe::lldp::listen::spawn(members_rx);
    let stats = Arc::clone(&listener.stats);
    let task = tokio::spawn(async move {
        // When each member was first listened on.
        let mut started: BTreeMap<String, Instant> = BTreeMap::new();
        loop {
            let now = Instant::now();
            let wanted = members_tx.borrow().clone();
            started.retain(|m, _| wanted.contains(m));
            for m in &wanted {
                started.entry(m.clone()).or_insert(now);
            }
            let pending = started
                .values()
                .map(|t| *t + FULL_INTERVAL)
                .filter(|t| *t > now)
                .min();
            let errors = listener.errors.borrow_and_update().clone();
            let state = LldpState {
                listening: true,
                // A member that cannot be listened on has not been heard
                // for an interval: its silence must not read as no switch.
                complete: pending.is_none() && errors.is_empty(),
                errors,
                neighbors: listener.neighbors.borrow_and_update().clone(),
                // Only a node with bond members has VLANs to judge.
                vlans: if wanted.is_empty() {
                    Vec::new()
                } else {
                    vlans()
                },
            };
            replace_if_changed(&tx, state);
            tokio::select! {
                r = snaps.changed() => {
                    if r.is_err() {
                        return;
                    }
                    let m = members_with(&snaps.borrow_and_update(), &now_ovs(&mut ovs));
                    replace_if_changed(&members_tx, m);
                }
                r = async { ovs.as_mut().expect("guarded").changed().await }, if ovs.is_some() => {
                    if r.is_err() {
                        ovs = None;
                    }
                    let m = members_with(&snaps.borrow_and_update(), &now_ovs(&mut ovs));
                    replace_if_changed(&members_tx, m);
                }
                r = listener.neighbors.changed() => if r.is_err() { return },
                r = listener.errors.changed() => if r.is_err() { return },
                () = async { tokio::time::sleep_until(pending.expect("guarded")).await }, if pending.is_some() => {}
                () = tx.closed() => return,
            }
        }
    });
    (rx, task, stats)
}

/// Publishes `value` only when it differs: a receiver wakes for a change.
fn replace_if_changed<T: PartialEq>(tx: &watch::Sender<T>, value: T) {
    tx.send_if_modified(|cur| {
        let changed = *cur != value;
        if changed {
            *cur = value;
        }
        changed
    });
}

/// The node's VLAN subinterfaces, as the member path check reads them.
#[must_use]
pub fn vlans() -> Vec<VlanLink> {
    preflight_probe::paths::read_vlans()
        .into_iter()
        .map(|v| VlanLink {
            name: v.name,
            id: v.id,
            parent: v.parent,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use preflight_model::{Bond, Interface};

    use super::*;

    #[test]
    fn members_are_the_ports_of_every_bond() {
        let bond = Interface {
            index: 10,
            name: "bond0".into(),
            bond: Some(Bond::default()),
            ..Interface::default()
        };
        let port = |index, name: &str| Interface {
            index,
            name: name.into(),
            controller: Some(10),
            ..Interface::default()
        };
        let other = Interface {
            index: 4,
            name: "eth9".into(),
            ..Interface::default()
        };
        let snap = Snapshot {
            interfaces: [bond, port(3, "eth1"), port(2, "eth0"), other]
                .into_iter()
                .map(|i| (i.index, i))
                .collect(),
            ..Snapshot::default()
        };
        assert_eq!(members(&snap), ["eth0", "eth1"]);
    }

    /// A real lldpd capture (tests/fixtures/lldp/`file`: `mA-0.bin` from
    /// switch-A, whose port carries VLANs 100 and 200, `mB-0.bin` from
    /// switch-B, VLAN 100 only), decoded as heard on `member`.
    fn captured(file: &str, member: &str) -> preflight_model::LldpNeighbor {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/lldp")
            .join(file);
        let frame = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        preflight_probe::lldp::decode_frame(&frame, member, std::time::SystemTime::now())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// The rig, judged from the bytes lldpd sent: bond0
    /// (active-backup) over mA and mB, with bond0.100 and bond0.200.
    fn rig(
        a: preflight_model::LldpNeighbor,
        b: preflight_model::LldpNeighbor,
    ) -> Vec<(String, String, String)> {
        let bond = Interface {
            index: 10,
            name: "bond0".into(),
            mtu: 1500,
            bond: Some(Bond {
                mode: preflight_model::BondMode::ActiveBackup,
                ..Bond::default()
            }),
            ..Interface::default()
        };
        let port = |index, name: &str| Interface {
            index,
            name: name.into(),
            mtu: 1500,
            controller: Some(10),
            ..Interface::default()
        };
        let vlan = |id: u16| VlanLink {
            name: format!("bond0.{id}"),
            id,
            parent: "bond0".into(),
        };
        let snap = Snapshot {
            interfaces: [bond, port(2, "mA"), port(3, "mB")]
                .into_iter()
                .map(|i| (i.index, i))
                .collect(),
            lldp: LldpState {
                listening: true,
                complete: true,
                neighbors: vec![a, b],
                vlans: vec![vlan(100), vlan(200)],
                errors: std::collections::BTreeMap::new(),
            },
            ..Snapshot::default()
        };
        // Only the LLDP rules: the fixture's bond has no MII state to judge.
        preflight_policy::rules(
            &snap,
            &preflight_policy::PolicyConfig::default(),
            &preflight_policy::FlapCounts::default(),
        )
        .into_iter()
        .filter(|r| {
            [
                "BOND_SINGLE_SWITCH",
                "MTU_EXCEEDS_SWITCH",
                "SWITCH_VLAN_MISSING",
            ]
            .contains(&r.code.as_str())
        })
        .map(|r| (r.code.as_str().to_owned(), r.subject, r.message))
        .collect()
    }

    #[test]
    fn captured_lldpdus_name_the_member_whose_switch_lacks_a_vlan_and_a_single_switch() {
        // switch-B's port carries VLAN 100 only: a failover to mB cuts bond0.200 off.
        let found = rig(captured("mA-0.bin", "mA"), captured("mB-0.bin", "mB"));
        assert_eq!(found.len(), 1, "{found:?}");
        let (code, subject, message) = &found[0];
        assert_eq!(
            (code.as_str(), subject.as_str()),
            ("SWITCH_VLAN_MISSING", "bond0/mB")
        );
        assert!(
            message.contains("VLAN 200 (bond0.200)") && message.contains("switch-B port"),
            "{message}"
        );
        // Both members on switch-A: one switch, named.
        let found = rig(captured("mA-0.bin", "mA"), captured("mA-1.bin", "mB"));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].0, "BOND_SINGLE_SWITCH");
        assert!(found[0].2.contains("switch-A"), "{}", found[0].2);
        // A switch port whose frame size is below the node's MTU + 18.
        let mut small = captured("mB-0.bin", "mB");
        small.vlans.clear();
        small.max_frame_size = Some(1418);
        let found = rig(captured("mA-0.bin", "mA"), small);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            (found[0].0.as_str(), found[0].1.as_str()),
            ("MTU_EXCEEDS_SWITCH", "bond0/mB")
        );
    }
}
