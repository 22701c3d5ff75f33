//! The listener's neighbour table: one entry per sender a member hears,
//! keyed by member, chassis ID and port ID, so that two senders on one
//! link (a switch and its NIC's firmware agent) are both kept instead of
//! overwriting each other on every frame, and a shutdown LLDPDU from one
//! removes only its own entry.

use std::collections::BTreeMap;
use std::time::Duration;

use preflight_model::LldpNeighbor;
use tokio::time::Instant;

/// Senders kept per member; a new one past this drops the one heard
/// longest ago (a link carries a switch and perhaps a NIC agent: more is a
/// flood, which must cost no memory).
pub const MAX_PER_MEMBER: usize = 4;

/// Member, chassis ID, port ID.
type Key = (String, String, String);

struct Entry {
    neighbor: LldpNeighbor,
    expires: Instant,
    heard: Instant,
}

/// The live neighbours.
#[derive(Default)]
pub(crate) struct Table {
    entries: BTreeMap<Key, Entry>,
}

impl Table {
    /// Takes an LLDPDU heard at `now`.
    pub(crate) fn heard(&mut self, n: LldpNeighbor, now: Instant) {
        let key = (n.member.clone(), n.chassis_id.clone(), n.port_id.clone());
        if n.ttl_s == 0 {
            // A shutdown LLDPDU: forget this sender now (§9.2.7.7.2).
            self.entries.remove(&key);
            return;
        }
        let expires = now + Duration::from_secs(u64::from(n.ttl_s));
        let neighbor = match self.entries.remove(&key) {
            // Same contents: keep when it was first heard, so the state
            // changes only when the sender's answer does.
            Some(old) if same(&old.neighbor, &n) => old.neighbor,
            _ => {
                self.make_room(&n.member);
                n
            }
        };
        self.entries.insert(
            key,
            Entry {
                neighbor,
                expires,
                heard: now,
            },
        );
    }

    /// Drops the member's sender heard longest ago while it has
    /// [`MAX_PER_MEMBER`].
    fn make_room(&mut self, member: &str) {
        let of = |k: &Key| k.0 == member;
        while self.entries.keys().filter(|k| of(k)).count() >= MAX_PER_MEMBER {
            let oldest = self
                .entries
                .iter()
                .filter(|(k, _)| of(k))
                .min_by_key(|(_, e)| e.heard)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => self.entries.remove(&k),
                None => return,
            };
        }
    }

    /// Forgets the entries whose TTL ran out by `now`.
    pub(crate) fn expire(&mut self, now: Instant) {
        self.entries.retain(|_, e| e.expires > now);
    }

    /// Keeps only the members in `wanted`.
    pub(crate) fn retain_members(&mut self, wanted: &[String]) {
        self.entries.retain(|k, _| wanted.contains(&k.0));
    }

    /// When the next entry runs out.
    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        self.entries.values().map(|e| e.expires).min()
    }

    /// The neighbours, ordered by member, chassis ID and port ID.
    pub(crate) fn published(&self) -> Vec<LldpNeighbor> {
        self.entries.values().map(|e| e.neighbor.clone()).collect()
    }
}

/// Same neighbour, apart from when it was heard and its TTL.
fn same(a: &LldpNeighbor, b: &LldpNeighbor) -> bool {
    LldpNeighbor {
        since: b.since,
        ttl_s: b.ttl_s,
        ..a.clone()
    } == *b
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;

    fn sender(member: &str, chassis: &str, ttl_s: u16) -> LldpNeighbor {
        LldpNeighbor {
            member: member.into(),
            chassis_id: chassis.into(),
            chassis_id_subtype: "mac".into(),
            port_id: "p1".into(),
            port_id_subtype: "ifname".into(),
            ttl_s,
            system_name: None,
            port_descr: None,
            mgmt_address: None,
            pvid: None,
            vlans: Vec::new(),
            vlans_cut: false,
            max_frame_size: None,
            aggregation: None,
            since: SystemTime::now(),
        }
    }

    #[test]
    fn two_senders_on_one_member_are_both_kept_without_flapping() {
        let mut t = Table::default();
        let now = Instant::now();
        t.heard(sender("eth0", "switch", 120), now);
        t.heard(sender("eth0", "nic-agent", 120), now);
        let first = t.published();
        assert_eq!(first.len(), 2);
        // Alternating frames: the published set never changes.
        for i in 1..10 {
            let at = now + Duration::from_secs(i);
            let who = if i % 2 == 0 { "switch" } else { "nic-agent" };
            t.heard(sender("eth0", who, 120), at);
            assert_eq!(t.published(), first, "after frame {i}");
        }
        // A shutdown LLDPDU from the agent removes the agent only.
        t.heard(sender("eth0", "nic-agent", 0), now);
        let left = t.published();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].chassis_id, "switch");
    }

    #[test]
    fn a_member_keeps_at_most_four_senders_dropping_the_one_heard_longest_ago() {
        let mut t = Table::default();
        let now = Instant::now();
        for i in 0..6u64 {
            t.heard(
                sender("eth0", &format!("c{i}"), 120),
                now + Duration::from_secs(i),
            );
        }
        t.heard(sender("eth1", "other", 120), now);
        let ids: Vec<String> = t
            .published()
            .into_iter()
            .filter(|n| n.member == "eth0")
            .map(|n| n.chassis_id)
            .collect();
        assert_eq!(ids, ["c2", "c3", "c4", "c5"]);
        assert_eq!(t.published().len(), 5);
        // Each runs out on its own TTL.
        t.expire(now + Duration::from_secs(123));
        let ids: Vec<String> = t.published().into_iter().map(|n| n.chassis_id).collect();
        assert_eq!(ids, ["c4", "c5"]);
    }
}
