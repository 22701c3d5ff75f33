//! Which reports are replays. Within one boot id (one agent process) the
//! sequence number only grows; across boot ids, a boot that a later one
//! replaced never comes back: an agent that restarts picks a new boot id,
//! so a report of an earlier boot is a recorded one played again (and its
//! old, perhaps healthy, state must not make a blocked node go).
//!
//! Each node remembers its last [`MAX_RETIRED_BOOTS`] replaced boot ids as
//! hashes (8 bytes each, whatever the length of the id), so the memory a
//! node can take stays bounded however often its agent restarts. The list
//! lives in memory: after the aggregator restarts, only the boot of each
//! node's last stored report is known.

use std::hash::{Hash, Hasher};

use super::error::FleetError;
use super::report::PreparedReport;
use super::{Node, MAX_SEQ_JUMP};

/// How many replaced boot ids each node remembers. An agent restarts a few
/// times a day at most; replaying a report needs a boot older than this
/// many restarts.
pub const MAX_RETIRED_BOOTS: usize = 32;

/// A boot id's fingerprint (kept in memory only, so the process's own
/// hasher is enough). A collision only refuses a new boot id with 409,
/// and the agent then picks another.
fn boot_hash(boot_id: &str) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    boot_id.hash(&mut h);
    h.finish()
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
        } else if self.retired_boots.contains(&boot_hash(&r.boot_id)) {
            return Err(FleetError::RetiredBoot {
                node: r.node.clone(),
                boot_id: r.boot_id.chars().take(64).collect(),
            });
        }
        Ok(())
    }

    /// Makes `boot_id` the node's current boot; the one it replaces is
    /// remembered as retired.
    pub(super) fn set_boot(&mut self, boot_id: &str) {
        if self.boot_id.as_deref() == Some(boot_id) {
            return;
        }
        if let Some(old) = self.boot_id.replace(boot_id.to_owned()) {
            if self.retired_boots.len() >= MAX_RETIRED_BOOTS {
                self.retired_boots.remove(0);
            }
            self.retired_boots.push(boot_hash(&old));
        }
    }
}
