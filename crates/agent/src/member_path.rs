//! The agent's member path check (`agent.member_path_check`, on by default):
//! every interval, the paths [`preflight_probe::paths::plan`] finds in the
//! latest snapshot (every bond member × every IPv4 network of its bond × a
//! few targets there, at most [`MAX_PATHS`] shared fairly by the members)
//! are checked, each by up to `tries` ARP probes out of that member alone,
//! a member's paths staggered under [`MAX_FRAMES_PER_MEMBER_PER_SEC`] and
//! each member with its own source MAC; paths over the cap and bonds with
//! no path at all are reported unchecked (BOND_PORT_PATH_UNCHECKED); a
//! path's state follows the probes' fail/recover hysteresis, counted in requests: it fails after
//! `probe_fail_after` unanswered requests in a row (one round at the
//! defaults, so a lost backup path shows within one interval plus the
//! tries) and recovers after `probe_recover_after` answered rounds.
//! `preflight inspect` runs one round through [`once`].

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use preflight_model::{MemberPathStatus, Snapshot};
use preflight_probe::member::{self, Outcome};
use preflight_probe::paths::{self, PathCheck};
use preflight_probe::{ProbeConfig, ProbeError, Tracker};
use tokio::sync::watch;

/// ARP requests per path per round (stopping at the first answer).
pub const TRIES: u32 = 3;

/// Most paths checked in one round: a node with many bonds and VLANs is
/// still a bounded number of sockets and frames.
pub const MAX_PATHS: usize = 256;

/// Most ARP requests one member sends per second: a switch's dynamic ARP
/// inspection or port security rate limit must not see a burst (a node
/// with 256 paths would otherwise send them in the same instant).
pub const MAX_FRAMES_PER_MEMBER_PER_SEC: u32 = 10;

/// When each path of `plan` starts, from the start of the round: a
/// member's paths one after another, `tries / MAX_FRAMES_PER_MEMBER_PER_SEC`
/// seconds apart. A path sends at most `tries` requests, so however long
/// its waits, a member never sends more than the cap in any second;
/// members start together (separate switch ports, or one bond's hash).
#[must_use]
pub fn start_offsets(plan: &[PathCheck], tries: u32) -> Vec<Duration> {
    let spacing = Duration::from_secs(u64::from(tries.max(1)))
        .checked_div(MAX_FRAMES_PER_MEMBER_PER_SEC)
        .unwrap_or_default();
    let mut next: BTreeMap<&str, u32> = BTreeMap::new();
    plan.iter()
        .map(|c| {
            let k = next.entry(c.member.as_str()).or_default();
            let at = spacing.saturating_mul(*k);
            *k += 1;
            at
        })
        .collect()
}

/// How the agent checks member paths.
#[derive(Debug, Clone)]
pub struct PathCheckConfig {
    /// Time between rounds.
    pub interval: Duration,
    /// Wait for each request's answer.
    pub per_try: Duration,
    /// Requests per path per round.
    pub tries: u32,
    /// Fail/recover thresholds, in requests (`fail_after`) and rounds
    /// (`recover_after`), as the reachability probes count them.
    pub probe: ProbeConfig,
    /// Configured probe targets (IPv4): targets of the networks they are in.
    pub configured: Vec<Ipv4Addr>,
}

impl PathCheckConfig {
    /// The tracker's thresholds in rounds: `fail_after` requests are
    /// `fail_after / tries` rounds, rounded up.
    fn rounds(&self) -> ProbeConfig {
        let tries = self.tries.max(1);
        ProbeConfig {
            fail_after: self.probe.fail_after.div_ceil(tries).max(1),
            ..self.probe.clone()
        }
    }
}

/// The IPv4 addresses among configured probe targets.
#[must_use]
pub fn configured_addresses(targets: &[preflight_probe::Target]) -> Vec<Ipv4Addr> {
    targets
        .iter()
        .filter_map(|t| match t {
            preflight_probe::Target::Icmp {
                addr: std::net::IpAddr::V4(a),
                ..
            }
            | preflight_probe::Target::Arp { addr: a, .. }
            | preflight_probe::Target::Path { addr: a, .. } => Some(*a),
            preflight_probe::Target::Tcp { addr, .. } => match addr.ip() {
                std::net::IpAddr::V4(a) => Some(a),
                std::net::IpAddr::V6(_) => None,
            },
            preflight_probe::Target::Icmp { .. } => None,
        })
        .collect()
}

/// One round's plan: the paths to check, and those reported unchecked with
/// why (over [`MAX_PATHS`], or a bond with no path planned at all).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Round {
    /// Paths to check.
    pub check: Vec<PathCheck>,
    /// Paths not checked, each with the reason reported for it.
    pub unchecked: Vec<(PathCheck, String)>,
}

/// The paths of `snap` now (reads the VLAN and neighbour tables).
#[must_use]
pub fn plan(snap: &Snapshot, configured: &[Ipv4Addr]) -> Round {
    let vlans = paths::read_vlans();
    let all = paths::plan(snap, &vlans, &paths::read_neighbours(), configured);
    let unplanned = paths::unplanned(snap, &vlans, &all);
    round(all, &unplanned)
}

/// [`plan`] on what was read: cut to [`MAX_PATHS`] fairly, the rest and
/// every unplanned bond's members unchecked (a bond is shown with its own
/// name as the network and 0.0.0.0 as the target: nothing was asked).
#[must_use]
pub fn round(all: Vec<PathCheck>, unplanned: &[paths::Unplanned]) -> Round {
    let (check, dropped) = paths::cap(all, MAX_PATHS);
    let mut unchecked: Vec<(PathCheck, String)> = dropped
        .into_iter()
        .map(|c| {
            (
                c,
                format!("not checked: this node has more than {MAX_PATHS} member paths"),
            )
        })
        .collect();
    for u in unplanned {
        for m in &u.members {
            unchecked.push((
                PathCheck {
                    bond: u.bond.clone(),
                    member: m.clone(),
                    network: u.bond.clone(),
                    vlan: None,
                    target: Ipv4Addr::UNSPECIFIED,
                    also: Vec::new(),
                },
                u.reason.clone(),
            ));
        }
    }
    Round { check, unchecked }
}

/// Checks `round`: every path in [`Round::check`] at once, then every path
/// of the round with its result, the unchecked ones as errors (reported
/// BOND_PORT_PATH_UNCHECKED, never passed).
pub async fn run(
    round: Round,
    tries: u32,
    per_try: Duration,
) -> (Vec<PathCheck>, Vec<Result<Outcome, ProbeError>>) {
    let mut results = check_all(&round.check, tries, per_try).await;
    let mut all = round.check;
    for (c, why) in round.unchecked {
        all.push(c);
        results.push(Err(ProbeError {
            local: true,
            message: why,
        }));
    }
    (all, results)
}

/// Checks every path, each member's paths staggered ([`start_offsets`]).
pub async fn check_all(
    plan: &[PathCheck],
    tries: u32,
    per_try: Duration,
) -> Vec<Result<Outcome, ProbeError>> {
    let mut set = tokio::task::JoinSet::new();
    // A member is read once per round, not once per path.
    let mut members: BTreeMap<&str, Result<member::Member, ProbeError>> = BTreeMap::new();
    for c in plan {
        for name in std::iter::once(&c.member).chain(&c.also) {
            members
                .entry(name.as_str())
                .or_insert_with(|| member::member(name));
        }
    }
    // One source per member across the round, none a sibling's address:
    // a shared source lets one member's reply pass another's check.
    let read: Vec<(&str, &member::Member)> = members
        .iter()
        .filter_map(|(n, m)| Some((*n, m.as_ref().ok()?)))
        .collect();
    let chosen = member::sources(&read.iter().map(|(_, m)| *m).collect::<Vec<_>>());
    let source: BTreeMap<&str, [u8; 6]> = read.iter().map(|(n, _)| *n).zip(chosen).collect();
    let offsets = start_offsets(plan, tries);
    for ((i, c), after) in plan.iter().enumerate().zip(offsets) {
        let m = members.get(c.member.as_str()).cloned();
        let src = source.get(c.member.as_str()).copied();
        let also: Vec<i32> = c
            .also
            .iter()
            .filter_map(|n| members.get(n.as_str())?.as_ref().ok().map(|m| m.ifindex))
            .collect();
        let (device, vlan, target) = (c.member.clone(), c.vlan, c.target);
        set.spawn(async move {
            tokio::time::sleep(after).await;
            let r = match m {
                Some(Ok(m)) => {
                    let src = src.unwrap_or_else(|| m.source());
                    member::check_member(&device, &m, src, &also, vlan, target, tries, per_try)
                        .await
                }
                Some(Err(e)) => Err(e),
                None => Err(ProbeError {
                    local: true,
                    message: format!("{device}: not read"),
                }),
            };
            (i, r)
        });
    }
    let mut out: Vec<Result<Outcome, ProbeError>> = plan
        .iter()
        .map(|_| {
            Err(ProbeError {
                local: true,
                message: "the check did not finish".into(),
            })
        })
        .collect();
    while let Some(r) = set.join_next().await {
        if let Ok((i, r)) = r {
            out[i] = r;
        }
    }
    out
}

/// Path states across rounds.
#[derive(Debug, Default)]
pub struct Paths {
    trackers: BTreeMap<PathCheck, (Tracker, MemberPathStatus)>,
}

fn status(c: &PathCheck) -> MemberPathStatus {
    MemberPathStatus {
        bond: c.bond.clone(),
        member: c.member.clone(),
        network: c.network.clone(),
        vlan: c.vlan,
        target: c.target,
        sent: 0,
        answered: 0,
        failed: false,
        up: false,
        consecutive_failures: 0,
        source_mac: None,
        last_error: None,
        unchecked: false,
    }
}

impl Paths {
    /// Records one round; paths no longer planned are forgotten. Returns
    /// every path's status, in plan order.
    pub fn record(
        &mut self,
        plan: &[PathCheck],
        results: Vec<Result<Outcome, ProbeError>>,
        cfg: &ProbeConfig,
    ) -> Vec<MemberPathStatus> {
        let mut next = BTreeMap::new();
        let mut out = Vec::with_capacity(plan.len());
        for (c, r) in plan.iter().zip(results) {
            let (mut tracker, mut s) = self
                .trackers
                .remove(c)
                .unwrap_or_else(|| (Tracker::new(c.to_string_key()), status(c)));
            match r {
                Ok(o) => {
                    let res = match o.rtt {
                        Some(rtt) if o.answered > 0 => Ok(rtt),
                        _ => Err(format!("{}/{} ARP answered", o.answered, o.sent)),
                    };
                    tracker.record(res, cfg);
                    let t = tracker.status();
                    s.sent = o.sent;
                    s.answered = o.answered;
                    s.failed = t.failed;
                    s.up = !t.failed && o.answered > 0;
                    s.consecutive_failures = t.consecutive_failures;
                    s.source_mac = Some(member::format_mac(o.source_mac));
                    s.last_error = t.last_error;
                    s.unchecked = false;
                }
                Err(e) => {
                    // Cannot tell: neither a pass nor a miss.
                    s.sent = 0;
                    s.answered = 0;
                    s.up = false;
                    s.unchecked = true;
                    s.last_error = Some(e.message);
                }
            }
            out.push(s.clone());
            next.insert(c.clone(), (tracker, s));
        }
        self.trackers = next;
        out
    }
}

/// Key text of a path for its tracker.
trait Key {
    fn to_string_key(&self) -> String;
}

impl Key for PathCheck {
    fn to_string_key(&self) -> String {
        format!(
            "{}/{} {} via {}{}",
            self.bond,
            self.member,
            self.target,
            self.network,
            self.vlan.map(|v| format!(" vlan {v}")).unwrap_or_default()
        )
    }
}

/// One round on `snap`, as `preflight inspect` shows it: a path fails when
/// none of its `tries` requests is answered.
pub async fn once(
    snap: &Snapshot,
    configured: &[Ipv4Addr],
    tries: u32,
    per_try: Duration,
) -> Vec<MemberPathStatus> {
    let (plan, results) = run(plan(snap, configured), tries, per_try).await;
    let cfg = ProbeConfig {
        fail_after: 1,
        recover_after: 1,
        ..ProbeConfig::default()
    };
    Paths::default().record(&plan, results, &cfg)
}

/// Checks every `cfg.interval` (the first round at once) on the latest
/// snapshot; the receiver holds the statuses of the last round. Ends when
/// the receiver is dropped.
#[must_use]
pub fn spawn(
    cfg: PathCheckConfig,
    snapshots: watch::Receiver<Arc<Snapshot>>,
) -> (
    watch::Receiver<Vec<MemberPathStatus>>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = watch::channel(Vec::new());
    let task = tokio::spawn(async move {
        let rounds = cfg.rounds();
        let mut paths = Paths::default();
        let mut tick = tokio::time::interval(cfg.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut planned = 0;
        loop {
            tick.tick().await;
            let snap = Arc::clone(&snapshots.borrow());
            let round = plan(&snap, &cfg.configured);
            if round.check.len() != planned {
                planned = round.check.len();
                tracing::info!(
                    paths = planned,
                    unchecked = round.unchecked.len(),
                    "member path check"
                );
            }
            let (plan, results) = run(round, cfg.tries, cfg.per_try).await;
            let statuses = paths.record(&plan, results, &rounds);
            if tx.is_closed() {
                return;
            }
            tx.send_if_modified(|cur| {
                if *cur == statuses {
                    return false;
                }
                *cur = statuses;
                true
            });
        }
    });
    (rx, task)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(member: &str) -> PathCheck {
        PathCheck {
            bond: "bond0".into(),
            member: member.into(),
            network: "bond0.200".into(),
            vlan: Some(200),
            target: "10.200.0.1".parse().expect("ip"),
            also: Vec::new(),
        }
    }

    fn answered(yes: bool) -> Result<Outcome, ProbeError> {
        Ok(Outcome {
            sent: if yes { 1 } else { 3 },
            answered: u32::from(yes),
            rtt: yes.then(|| Duration::from_millis(1)),
            source_mac: [2, 0, 0, 0, 0, 1],
        })
    }

    #[test]
    fn a_round_of_unanswered_requests_fails_two_answered_rounds_recover() {
        let cfg = PathCheckConfig {
            interval: Duration::from_secs(10),
            per_try: Duration::from_secs(1),
            tries: TRIES,
            probe: ProbeConfig::default(),
            configured: Vec::new(),
        };
        let rounds = cfg.rounds();
        assert_eq!(rounds.fail_after, 1, "3 requests in a row = one round");
        let plan = [check("mA"), check("mB")];
        let mut p = Paths::default();
        let s = p.record(&plan, vec![answered(true), answered(false)], &rounds);
        assert!(s[0].up && !s[0].failed);
        assert!(s[1].failed && !s[1].up);
        assert_eq!((s[1].answered, s[1].sent), (0, 3));
        assert_eq!(s[1].last_error.as_deref(), Some("0/3 ARP answered"));
        let s = p.record(&plan, vec![answered(true), answered(true)], &rounds);
        assert!(s[1].failed, "one answered round does not recover");
        let s = p.record(&plan, vec![answered(true), answered(true)], &rounds);
        assert!(!s[1].failed && s[1].up);
    }

    #[test]
    fn a_check_that_cannot_be_sent_is_unchecked_not_passed() {
        let mut p = Paths::default();
        let s = p.record(
            &[check("mA")],
            vec![Err(ProbeError {
                local: true,
                message: "mA: cannot open a packet socket (needs CAP_NET_RAW)".into(),
            })],
            &ProbeConfig::default(),
        );
        assert!(s[0].unchecked && !s[0].up && !s[0].failed);
        // A path no longer planned is forgotten.
        assert!(p
            .record(&[], Vec::new(), &ProbeConfig::default())
            .is_empty());
        assert!(p.trackers.is_empty());
    }

    /// Review items 13 and 14: dropped paths and path-less bonds are
    /// reported unchecked (BOND_PORT_PATH_UNCHECKED), never lost.
    #[tokio::test]
    async fn dropped_and_unplanned_paths_are_unchecked() {
        let many: Vec<PathCheck> = (0..300u32)
            .map(|i| PathCheck {
                target: Ipv4Addr::from(0x0a00_0000 + i),
                ..check(if i % 2 == 0 { "mA" } else { "mB" })
            })
            .collect();
        let unplanned = [paths::Unplanned {
            bond: "team0".into(),
            members: vec!["t1".into(), "t2".into()],
            reason: "no target on team0".into(),
        }];
        let r = round(many, &unplanned);
        assert!(r.check.len() <= MAX_PATHS);
        assert_eq!(r.check.len() + r.unchecked.len(), 302);
        let kept = r.check.len();
        // Only the unchecked part runs here: no socket is opened.
        let r = Round {
            check: Vec::new(),
            ..r
        };
        let (all, results) = run(r, 1, Duration::from_millis(1)).await;
        let s = Paths::default().record(&all, results, &ProbeConfig::default());
        assert_eq!(s.len(), 302 - kept);
        assert!(s.iter().all(|p| p.unchecked && !p.up && !p.failed));
        assert!(s
            .iter()
            .any(|p| p.bond == "team0" && p.last_error.as_deref() == Some("no target on team0")));
        assert!(s.iter().any(|p| p
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("more than 256"))));
    }

    /// Review item 16: a member's requests are spread, never a burst.
    #[test]
    fn a_members_paths_are_staggered_under_the_frame_cap() {
        let plan: Vec<PathCheck> = (0..40u32)
            .map(|i| PathCheck {
                target: Ipv4Addr::from(0x0a00_0000 + i),
                ..check(if i % 2 == 0 { "mA" } else { "mB" })
            })
            .collect();
        let at = start_offsets(&plan, TRIES);
        assert_eq!(at[0], Duration::ZERO);
        assert_eq!(at[1], Duration::ZERO, "members start together");
        // Worst case: every path sends all its tries 1 s apart; count the
        // requests of mA in every one-second window.
        let sends: Vec<Duration> = plan
            .iter()
            .zip(&at)
            .filter(|(c, _)| c.member == "mA")
            .flat_map(|(_, a)| (0..TRIES).map(move |j| *a + Duration::from_secs(u64::from(j))))
            .collect();
        for s in &sends {
            let in_window = sends
                .iter()
                .filter(|x| **x >= *s && **x < *s + Duration::from_secs(1))
                .count();
            assert!(
                in_window <= MAX_FRAMES_PER_MEMBER_PER_SEC as usize,
                "{in_window} requests in a second"
            );
        }
    }

    #[test]
    fn configured_ipv4_targets_feed_the_plan() {
        let t: Vec<preflight_probe::Target> = [
            "icmp:10.0.0.1@bond0",
            "tcp:[2001:db8::1]:22",
            "tcp:10.0.0.2:22",
            "arp:10.0.0.3@eth0",
        ]
        .iter()
        .map(|s| s.parse().expect("target"))
        .collect();
        assert_eq!(
            configured_addresses(&t),
            [
                Ipv4Addr::new(10, 0, 0, 1),
                Ipv4Addr::new(10, 0, 0, 2),
                Ipv4Addr::new(10, 0, 0, 3)
            ]
        );
    }
}
