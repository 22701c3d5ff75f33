//! One node pipeline, written once: sources (the netlink watch, OVSDB, the
//! expected-state file, reachability probes) → policy → a versioned
//! [`NodeState`]. The agent pushes and serves what [`NodeMonitor`]
//! publishes, `preflight inspect --watch` prints its changes, and one-shot
//! `preflight inspect` assembles a state with the same [`Pipeline`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use preflight_model::{NodeState, OvsSource, Snapshot};
use preflight_policy::expect::Expectations;
use preflight_policy::{Evaluator, PolicyConfig};
use preflight_probe::{ProbeConfig, Target};
use tokio::sync::watch;

use crate::expectations::Source;
use crate::AgentError;

/// A node state with a version that changes whenever the state does.
#[derive(Debug, Clone)]
pub struct Versioned {
    /// Increases on every change.
    pub version: u64,
    /// The state.
    pub state: Arc<NodeState>,
    /// The expectations in force (a new `Arc` whenever they are reloaded).
    pub expectations: Option<Arc<Expectations>>,
}

/// Snapshot → findings → node state, with the expectations and probe
/// results in force. Pure apart from reading the expectation files.
#[derive(Debug)]
pub struct Pipeline {
    node: String,
    evaluator: Evaluator,
    expected: Option<Source>,
    expectations: Option<Arc<Expectations>>,
    dhcp_probes: Vec<preflight_model::DhcpProbeResult>,
    member_paths: Vec<preflight_model::MemberPathStatus>,
}

impl Pipeline {
    /// A pipeline for `node`.
    #[must_use]
    pub fn new(
        node: String,
        policy: PolicyConfig,
        configured: Option<Expectations>,
        expected: Option<Source>,
    ) -> Self {
        let mut evaluator = Evaluator::new(policy);
        evaluator.set_configured_expectations(configured);
        Self {
            node,
            evaluator,
            expected,
            expectations: None,
            dhcp_probes: Vec::new(),
            member_paths: Vec::new(),
        }
    }

    /// Re-reads the expected-state files if they changed; returns whether
    /// anything changed.
    pub fn refresh_expectations(&mut self, snap: &Snapshot) -> bool {
        let Some(src) = self.expected.as_mut() else {
            return false;
        };
        let changed = src.refresh(snap, &mut self.evaluator);
        if changed {
            self.expectations = self.evaluator.expectations().cloned().map(Arc::new);
        }
        changed
    }

    /// The node state of `snap` now.
    pub fn state(&mut self, snap: &Snapshot) -> NodeState {
        let findings = self
            .evaluator
            .evaluate(snap, Instant::now(), SystemTime::now());
        let mut state = NodeState::new(self.node.clone(), snap, findings);
        state.expected_from = self.expected.as_ref().map(|s| s.path.display().to_string());
        state.probes = self.evaluator.probes().to_vec();
        if let Some(e) = self.evaluator.expectations() {
            state.nic_mapping = preflight_policy::expect::nic_table(snap, e);
            if !state.nic_mapping.is_empty() {
                state.nic_rules = Some(e.nics.osnc.rules());
            }
            state.fallback = preflight_policy::expect::predict_fallback(snap, e, &self.dhcp_probes);
        }
        state.dhcp_probes.clone_from(&self.dhcp_probes);
        state.member_paths.clone_from(&self.member_paths);
        state
    }

    /// The latest member path checks, judged and reported from now on.
    pub fn set_member_paths(&mut self, paths: Vec<preflight_model::MemberPathStatus>) {
        self.evaluator.set_member_paths(paths.clone());
        self.member_paths = paths;
    }

    /// The latest DHCP probe results, reported with every state from now on.
    pub fn set_dhcp_probes(&mut self, results: Vec<preflight_model::DhcpProbeResult>) {
        self.evaluator.set_dhcp_probes(results.clone());
        self.dhcp_probes = results;
    }

    /// The evaluator (expectations, configuration in force).
    #[must_use]
    pub fn evaluator(&self) -> &Evaluator {
        &self.evaluator
    }

    /// Where the expectations come from, if anywhere.
    #[must_use]
    pub fn expected(&self) -> Option<&Source> {
        self.expected.as_ref()
    }

    fn versioned(&self, version: u64, state: NodeState) -> Versioned {
        Versioned {
            version,
            state: Arc::new(state),
            expectations: self.expectations.clone(),
        }
    }
}

/// Which reachability probes to run.
#[derive(Debug, Clone, Default)]
pub struct ProbePlan {
    /// Targets given in the configuration.
    pub configured: Vec<Target>,
    /// Also probe the default gateway of each expected interface, through it.
    pub gateways: bool,
    /// With `gateways`, also probe each IPv4 gateway by ARP.
    pub gateways_arp: bool,
    /// Aggregators given by IP address (probed by TCP with `gateways`).
    pub aggregators: Vec<SocketAddr>,
    /// Timing and thresholds.
    pub config: ProbeConfig,
}

impl ProbePlan {
    /// The probe targets: configured ones, each expected default gateway via
    /// its interface (ICMP, and ARP for IPv4), and each aggregator (TCP).
    #[must_use]
    pub fn targets(&self, exp: Option<&Expectations>) -> Vec<Target> {
        let mut t = self.configured.clone();
        if self.gateways {
            for x in exp.map(|e| e.interfaces.as_slice()).unwrap_or_default() {
                if let Some(Some(gw)) = x.default_route {
                    t.push(Target::Icmp {
                        addr: gw,
                        device: Some(x.name.clone()),
                    });
                    if let (true, std::net::IpAddr::V4(addr)) = (self.gateways_arp, gw) {
                        t.push(Target::Arp {
                            addr,
                            device: x.name.clone(),
                        });
                    }
                }
            }
            for addr in &self.aggregators {
                t.push(Target::Tcp {
                    addr: *addr,
                    device: None,
                });
            }
        }
        let mut seen = std::collections::HashSet::new();
        t.retain(|x| seen.insert(x.to_string()));
        t
    }
}

/// What the monitor watches.
#[derive(Debug, Clone)]
pub struct MonitorConfig {
    /// Node name.
    pub node: String,
    /// Policy.
    pub policy: PolicyConfig,
    /// Netlink watch settings.
    pub watch: preflight_netlink::WatchConfig,
    /// Expected state (os-net-config file), re-read when it changes.
    pub expectations: Option<Source>,
    /// Expected state from preflight's own configuration (`[expect]`).
    pub configured_expectations: Option<Expectations>,
    /// Reachability probes; `None`: none.
    pub probes: Option<ProbePlan>,
    /// Where OVSDB is; `None`: not read (the snapshot says `off`).
    pub ovsdb: Option<preflight_ovsdb::SocketPaths>,
    /// DHCP probe interval (`agent.dhcp_probe`); `None`: off.
    pub dhcp_probe: Option<Duration>,
    /// The member path check (`agent.member_path_check`); `None`: off.
    pub member_paths: Option<crate::member_path::PathCheckConfig>,
}

/// How long the first state waits for OVSDB's first answer, so that a
/// healthy OVS node does not start with OVS_STATE_UNREADABLE.
const OVSDB_FIRST_WAIT: Duration = Duration::from_secs(2);

/// A running node pipeline: the latest state in a watch channel.
#[derive(Debug)]
pub struct NodeMonitor {
    /// The latest node state; `changed()` resolves on every change.
    pub states: watch::Receiver<Versioned>,
    /// Netlink watch counters.
    pub stats: Arc<preflight_netlink::WatchStats>,
    /// The LLDP listener's counters, by member.
    pub lldp_stats: Arc<preflight_probe::lldp::listen::Stats>,
    task: tokio::task::JoinHandle<Result<(), AgentError>>,
}

/// How often the expected-state file is checked for changes.
const FILE_CHECK: Duration = Duration::from_secs(10);

impl NodeMonitor {
    /// Starts the watch, takes and evaluates the first snapshot (published
    /// as version 1), then follows every change in a task of its own.
    ///
    /// # Errors
    /// When the netlink watch cannot start.
    pub async fn start(cfg: MonitorConfig) -> Result<Self, AgentError> {
        let w = preflight_netlink::watch(cfg.watch.clone()).await?;
        let mut pipeline = Pipeline::new(
            cfg.node.clone(),
            cfg.policy.clone(),
            cfg.configured_expectations.clone(),
            cfg.expectations.clone(),
        );
        let mut ovs = cfg.ovsdb.map(preflight_ovsdb::watch);
        if let Some(rx) = ovs.as_mut() {
            // The watch starts Unreadable ("not read yet"); give it a moment.
            let _ = tokio::time::timeout(OVSDB_FIRST_WAIT, rx.changed()).await;
        }
        let mut path_task = None;
        let mut paths_rx = None;
        if let Some(pc) = cfg.member_paths.clone() {
            let (rx, task) = crate::member_path::spawn(pc, w.snapshots.clone());
            paths_rx = Some(rx);
            path_task = Some(task);
        }
        // Passive and always on: LLDP costs a socket per bond member.
        let (lldp_rx, lldp_task, lldp_stats) = crate::lldp::spawn(w.snapshots.clone(), ovs.clone());
        let mut sources = Sources {
            member_paths: paths_rx,
            lldp: Some(lldp_rx),
            netlink: w.snapshots,
            ovs,
            ovs_gone: false,
            probes: None,
            dhcp: None,
            snap: Arc::default(),
        };
        sources.take();
        pipeline.refresh_expectations(&sources.snap);
        let mut probe_task = None;
        if let Some(plan) = &cfg.probes {
            let targets = plan.targets(pipeline.evaluator().expectations());
            if !targets.is_empty() {
                tracing::info!(targets = ?targets.iter().map(ToString::to_string).collect::<Vec<_>>(), "reachability probes");
                let (rx, task) = preflight_probe::spawn(targets, plan.config.clone());
                sources.probes = Some(rx);
                probe_task = Some(task);
            }
        }
        let mut dhcp_task = None;
        if let Some(every) = cfg.dhcp_probe {
            let (tx, rx) = watch::channel(crate::dhcp::static_interfaces(
                pipeline.evaluator().expectations(),
            ));
            let (results, task) =
                crate::dhcp::spawn(every, preflight_probe::dhcp::DEFAULT_TIMEOUT, rx);
            sources.dhcp = Some((tx, results));
            dhcp_task = Some(task);
        }
        let first = pipeline.state(&sources.snap);
        let (tx, states) = watch::channel(pipeline.versioned(1, first));
        let watch_task = w.task;
        let window = cfg.watch.coalesce;
        let task = tokio::spawn(async move {
            let r = follow(pipeline, sources, tx, watch_task, window).await;
            lldp_task.abort();
            for p in [probe_task, dhcp_task, path_task].into_iter().flatten() {
                p.abort();
            }
            r
        });
        Ok(Self {
            states,
            stats: w.stats,
            lldp_stats,
            task,
        })
    }

    /// Waits until the monitor stops: the netlink watch failed (an error)
    /// or every receiver of its states was dropped (`Ok`).
    ///
    /// # Errors
    /// Why the watch stopped.
    pub async fn finished(&mut self) -> Result<(), AgentError> {
        match (&mut self.task).await {
            Ok(r) => r,
            Err(e) => Err(AgentError::Task(e.to_string())),
        }
    }
}

impl Drop for NodeMonitor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The inputs of the pipeline, and the snapshot assembled from them.
struct Sources {
    netlink: watch::Receiver<Arc<Snapshot>>,
    ovs: Option<watch::Receiver<OvsSource>>,
    /// The OVSDB reader was configured but its task ended.
    ovs_gone: bool,
    probes: Option<watch::Receiver<Vec<preflight_model::ProbeStatus>>>,
    /// The interfaces to DHCP-probe (sent) and the results (received).
    dhcp: Option<DhcpChannels>,
    member_paths: Option<watch::Receiver<Vec<preflight_model::MemberPathStatus>>>,
    /// The bond members' LLDP neighbours (`crate::lldp`).
    lldp: Option<watch::Receiver<preflight_model::lldp::LldpState>>,
    /// Shared with the netlink watch while OVSDB adds nothing to it: a
    /// clone per evaluation was measurable in a flap storm.
    snap: Arc<Snapshot>,
}

type DhcpChannels = (
    watch::Sender<Vec<String>>,
    watch::Receiver<Vec<preflight_model::DhcpProbeResult>>,
);

impl Sources {
    /// Rebuilds the snapshot from the latest netlink and OVSDB states.
    fn take(&mut self) {
        let mut snap = Arc::clone(&self.netlink.borrow_and_update());
        let ovs = match self.ovs.as_mut() {
            Some(o) => o.borrow_and_update().clone(),
            None if self.ovs_gone => OvsSource::Unreadable {
                path: String::new(),
                reason: "the OVSDB reader stopped".into(),
            },
            None => OvsSource::Off,
        };
        if snap.ovs != ovs {
            Arc::make_mut(&mut snap).ovs = ovs;
        }
        if let Some(l) = self.lldp.as_mut() {
            let l = l.borrow_and_update();
            if snap.lldp != *l {
                Arc::make_mut(&mut snap).lldp = l.clone();
            }
        }
        self.snap = snap;
    }
}

/// Whether to evaluate now: a netlink snapshot at once (the watch's pacer
/// decided it was due), another source's change once `window` has passed
/// since the last evaluation.
fn evaluate_now(netlink: bool, other: bool, since_last: Duration, window: Duration) -> bool {
    netlink || (other && since_last >= window)
}

/// Follows the sources and publishes each new state. The netlink watch has
/// already paced its snapshots (`preflight_netlink`'s pacer: at once after
/// a quiet window or for a steady link losing carrier, else once per
/// window, wider in a storm), so each one is evaluated at once: that pacer
/// is the only one between a cable pull and its finding. The other sources
/// (OVSDB, probes, the expected-state file, DHCP results, the policy's
/// ticks) are not paced where they come from: a change of theirs is
/// evaluated at once after a quiet `window` (the watch's
/// [`preflight_netlink::WatchConfig::coalesce`]) and otherwise at the end
/// of it, with whatever else came meanwhile.
async fn follow(
    mut pipeline: Pipeline,
    mut src: Sources,
    tx: watch::Sender<Versioned>,
    mut watch_task: tokio::task::JoinHandle<Result<(), preflight_netlink::NetlinkError>>,
    window: Duration,
) -> Result<(), AgentError> {
    let mut file_check = tokio::time::interval(FILE_CHECK);
    file_check.tick().await;
    let mut last_eval = tokio::time::Instant::now();
    // A change from a source other than netlink, not yet evaluated.
    let mut dirty = false;
    // A netlink snapshot not yet evaluated: evaluated at once.
    let mut published = false;
    loop {
        let tick = pipeline.evaluator().tick_interval();
        let needs_tick = pipeline.evaluator().needs_tick();
        let has_file = pipeline.expected().is_some();
        let due = last_eval + window;
        tokio::select! {
            r = src.netlink.changed() => {
                if r.is_err() {
                    return match (&mut watch_task).await {
                        Ok(Err(e)) => Err(AgentError::Netlink(e)),
                        Ok(Ok(())) => Ok(()),
                        Err(e) => Err(AgentError::Task(e.to_string())),
                    };
                }
                src.netlink.borrow_and_update(); // seen; read when evaluating
                published = true;
            }
            r = async { src.ovs.as_mut().expect("guarded").changed().await }, if src.ovs.is_some() => {
                if r.is_err() {
                    // The OVSDB task is gone: say so rather than keep old state.
                    src.ovs = None;
                    src.ovs_gone = true;
                } else {
                    src.ovs.as_mut().expect("guarded").borrow_and_update();
                }
                dirty = true;
            }
            r = async { src.probes.as_mut().expect("guarded").changed().await }, if src.probes.is_some() => {
                match r {
                    Ok(()) => {
                        let statuses = src.probes.as_mut().expect("guarded").borrow_and_update().clone();
                        pipeline.evaluator.set_probes(statuses);
                    }
                    Err(_) => src.probes = None,
                }
                dirty = true;
            }
            _ = file_check.tick(), if has_file => {
                src.take();
                pipeline.refresh_expectations(&src.snap);
                dirty = true;
                if let Some((tx, _)) = &src.dhcp {
                    let now = crate::dhcp::static_interfaces(pipeline.evaluator().expectations());
                    tx.send_if_modified(|cur| {
                        if *cur == now {
                            return false;
                        }
                        *cur = now;
                        true
                    });
                }
            }
            r = async { src.dhcp.as_mut().expect("guarded").1.changed().await }, if src.dhcp.is_some() => {
                match r {
                    Ok(()) => {
                        let results = src.dhcp.as_mut().expect("guarded").1.borrow_and_update().clone();
                        pipeline.set_dhcp_probes(results);
                    }
                    Err(_) => src.dhcp = None,
                }
                dirty = true;
            }
            r = async { src.lldp.as_mut().expect("guarded").changed().await }, if src.lldp.is_some() => {
                if r.is_err() {
                    src.lldp = None;
                }
                dirty = true;
            }
            r = async { src.member_paths.as_mut().expect("guarded").changed().await }, if src.member_paths.is_some() => {
                match r {
                    Ok(()) => {
                        let paths = src.member_paths.as_mut().expect("guarded").borrow_and_update().clone();
                        pipeline.set_member_paths(paths);
                    }
                    Err(_) => src.member_paths = None,
                }
                dirty = true;
            }
            () = tokio::time::sleep(tick), if needs_tick => dirty = true,
            () = tokio::time::sleep_until(due), if dirty => {}
            () = tx.closed() => return Ok(()),
        }
        let now = tokio::time::Instant::now();
        if !evaluate_now(
            published,
            dirty,
            now.saturating_duration_since(last_eval),
            window,
        ) {
            continue; // within a burst: the sleep_until arm evaluates later
        }
        dirty = false;
        published = false;
        last_eval = now;
        src.take();
        let state = pipeline.state(&src.snap);
        let expectations = pipeline.expectations.clone();
        let findings = state.findings.len();
        let sent = tx.send_if_modified(|cur| {
            let same_exp = match (&cur.expectations, &expectations) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            };
            if *cur.state == state && same_exp {
                return false;
            }
            cur.version += 1;
            cur.state = Arc::new(state);
            cur.expectations = expectations;
            true
        });
        if sent {
            // Read by the bench (vm-compare) with the watch's and the
            // pusher's lines to split a cable pull's time in the guest.
            tracing::debug!(version = tx.borrow().version, findings, "state evaluated");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_netlink_snapshot_is_evaluated_at_once_other_changes_once_per_window() {
        let window = Duration::from_millis(50);
        let ms = Duration::from_millis;
        // The watch's pacer already decided: no second window.
        assert!(evaluate_now(true, false, ms(1), window));
        assert!(evaluate_now(true, true, ms(0), window));
        // OVSDB, probes, the file: paced here.
        assert!(!evaluate_now(false, true, ms(49), window));
        assert!(evaluate_now(false, true, ms(50), window));
        assert!(!evaluate_now(false, false, ms(500), window));
        // A zero window evaluates every change.
        assert!(evaluate_now(false, true, ms(0), Duration::ZERO));
    }
}
