//! Which reports are replays. Within one boot id (one agent process) the
//! sequence number only grows, and that holds across boot ids too: a boot
//! that a later one replaced keeps the last sequence number it had, and a
//! report of it at or below that number is a recorded one played again (its
//! old, perhaps healthy, state must not make a blocked node go). A report
//! of that boot with a higher number is a live agent still running under
//! it (two agents claiming one node, or a forger with its credential): it
//! counts like any report, so the two alternate and the node's settle time
//! keeps it from going go, rather than the live one being locked out.
//!
//! Each node remembers its last [`MAX_RETIRED_BOOTS`] replaced boot ids as
//! fingerprints (8 bytes each, whatever the length of the id) with their
//! last sequence numbers, so the memory a node can take stays bounded
//! however often its agent restarts.
//! The list is stored with the node's report (the service hands it to the
//! report writer, [`Fleet::retired_boots`]) and given back at start
//! ([`Fleet::restore_retired_boots`]): a restart of the aggregator keeps
//! refusing them.

use super::error::FleetError;
use super::report::PreparedReport;
use super::{Fleet, Node, MAX_SEQ_JUMP};

/// How many replaced boot ids each node remembers. An agent restarts a few
/// times a day at most; replaying a report needs a boot older than this
/// many restarts.
pub const MAX_RETIRED_BOOTS: usize = 32;

/// A boot id's fingerprint: the first 8 bytes of its SHA-256, big-endian.
/// Stored, so it must not change between builds or releases (the standard
/// library's hasher may). A collision only refuses a new boot id with 409,
/// and the agent then picks another.
fn boot_hash(boot_id: &str) -> u64 {
    let digest = ring::digest::digest(&ring::digest::SHA256, boot_id.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_ref()[..8]);
    u64::from_be_bytes(first)
}

impl Node {
    /// Refuses `r` when it is not after the last accepted report of its
    /// node: an older sequence number of the current boot, a jump far
    /// ahead, or any report of a boot a later one replaced.
    pub(super) fn check_sequence(&self, r: &PreparedReport) -> Result<(), FleetError> {
        if self.boot_id.as_deref() == Some(r.boot_id.as_str()) {
            if r.seq <= self.seq {
                return Err(FleetError::StaleSequence {
                    node: r.node.clone(),
                    boot_id: r.boot_id.clone(),
                    got: r.seq,
                    last: self.seq,
                });
            }
            if r.seq - self.seq > MAX_SEQ_JUMP {
                return Err(FleetError::SequenceJump {
                    node: r.node.clone(),
                    boot_id: r.boot_id.clone(),
                    got: r.seq,
                    last: self.seq,
                });
            }
        } else if let Some(&(_, last)) = self
            .retired_boots
            .iter()
            .find(|(h, _)| *h == boot_hash(&r.boot_id))
        {
            if r.seq <= last {
                return Err(FleetError::RetiredBoot {
                    node: r.node.clone(),
                    boot_id: r.boot_id.chars().take(64).collect(),
                });
            }
            if r.seq - last > MAX_SEQ_JUMP {
                return Err(FleetError::SequenceJump {
                    node: r.node.clone(),
                    boot_id: r.boot_id.clone(),
                    got: r.seq,
                    last,
                });
            }
        }
        Ok(())
    }

    /// Makes `boot_id` the node's current boot; the one it replaces is
    /// remembered as retired with its last sequence number (`self.seq`,
    /// not yet moved to the new report's).
    pub(super) fn set_boot(&mut self, boot_id: &str) {
        if self.boot_id.as_deref() == Some(boot_id) {
            return;
        }
        let new = boot_hash(boot_id);
        self.retired_boots.retain(|(h, _)| *h != new);
        if let Some(old) = self.boot_id.replace(boot_id.to_owned()) {
            if self.retired_boots.len() >= MAX_RETIRED_BOOTS {
                self.retired_boots.remove(0);
            }
            self.retired_boots.push((boot_hash(&old), self.seq));
        }
    }
}

impl Fleet {
    /// The fingerprints of the boot ids that later ones replaced on `node`,
    /// oldest first (at most [`MAX_RETIRED_BOOTS`]; empty for an unknown
    /// node): what the report writer stores with the node's report.
    #[must_use]
    pub fn retired_boots(&self, node: &str) -> &[(u64, u64)] {
        self.nodes
            .get(node)
            .map_or(&[], |n| n.retired_boots.as_slice())
    }

    /// Gives a node back the retired boot ids stored with its report after
    /// a restart (the newest [`MAX_RETIRED_BOOTS`] of them, oldest first),
    /// so that their replays stay refused. An unknown node is left alone,
    /// as by [`Fleet::restore_report`].
    pub fn restore_retired_boots(&mut self, node: &str, retired: &[(u64, u64)]) {
        if let Some(n) = self.nodes.get_mut(node) {
            let newest = &retired[retired.len().saturating_sub(MAX_RETIRED_BOOTS)..];
            n.retired_boots = newest.to_vec();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use preflight_model::report::{Report, ReportBody};
    use preflight_model::{NodeState, Snapshot};
    use tokio::time::Instant;

    use super::{boot_hash, MAX_RETIRED_BOOTS};
    use crate::fleet::{Fleet, FleetConfig, FleetError};

    fn report(boot: &str, seq: u64) -> Report {
        Report {
            node: "n1".into(),
            boot_id: boot.into(),
            seq,
            body: ReportBody::Full {
                labels: Default::default(),
                state: Box::new(NodeState::new("n1".into(), &Snapshot::default(), vec![])),
            },
        }
    }

    fn apply(f: &mut Fleet, boot: &str, seq: u64) -> Result<(), FleetError> {
        f.apply_report(&report(boot, seq), Instant::now(), SystemTime::now())
            .map(drop)
    }

    /// The fingerprint is stored: the same for every build (SHA-256, not
    /// the standard library's hasher).
    #[test]
    fn the_fingerprint_is_stable() {
        // SHA-256("a1") = f55ff16f66f43360 266b95db...
        assert_eq!(boot_hash("a1"), 0xf55f_f16f_66f4_3360);
    }

    /// A fleet started again with the list of the one before refuses the
    /// boots that one retired, and takes the current and new boots.
    #[test]
    fn restored_retired_boots_are_refused() {
        let mut before = Fleet::new(FleetConfig::default(), SystemTime::now());
        apply(&mut before, "a1", 1).expect("a1");
        apply(&mut before, "a2", 1).expect("a2");
        assert_eq!(before.retired_boots("n1"), [(boot_hash("a1"), 1)]);
        assert!(before.retired_boots("nobody").is_empty());
        let stored = before.retired_boots("n1").to_vec();

        let mut after = Fleet::new(FleetConfig::default(), SystemTime::now());
        after
            .upsert_node("n1", Default::default(), Instant::now(), SystemTime::now())
            .expect("inventory");
        let state = NodeState::new("n1".into(), &Snapshot::default(), vec![]);
        after.restore_report("n1", "a2".into(), 1, state, SystemTime::now());
        after.restore_retired_boots("n1", &stored);
        after.restore_retired_boots("nobody", &stored);
        assert!(
            matches!(
                apply(&mut after, "a1", 1),
                Err(FleetError::RetiredBoot { .. })
            ),
            "a1 replayed after a restart"
        );
        apply(&mut after, "a2", 2).expect("the current boot goes on");
        apply(&mut after, "a3", 1).expect("a new boot");
        assert_eq!(
            after.retired_boots("n1"),
            [(boot_hash("a1"), 1), (boot_hash("a2"), 2)]
        );
        // A live agent still running under a1 goes on past its last
        // number (not a replay): a1 becomes current, a3 retired at 1.
        apply(&mut after, "a1", 2).expect("a1's next report");
        assert_eq!(
            after.retired_boots("n1"),
            [(boot_hash("a2"), 2), (boot_hash("a3"), 1)]
        );
        assert!(matches!(
            apply(&mut after, "a3", 1),
            Err(FleetError::RetiredBoot { .. })
        ));
    }

    /// A stored list longer than the bound keeps its newest entries.
    #[test]
    fn a_restored_list_stays_bounded() {
        let mut f = Fleet::new(FleetConfig::default(), SystemTime::now());
        f.upsert_node("n1", Default::default(), Instant::now(), SystemTime::now())
            .expect("inventory");
        let long: Vec<(u64, u64)> = (0..100).map(|i| (i, i)).collect();
        f.restore_retired_boots("n1", &long);
        assert_eq!(f.retired_boots("n1"), &long[100 - MAX_RETIRED_BOOTS..]);
    }
}
