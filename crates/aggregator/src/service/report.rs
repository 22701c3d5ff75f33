//! The report path: an agent's report taken apart, its state moved (never
//! copied) into the `Arc` the fleet keeps, applied to the fleet (in a
//! batch, `apply`), a node it added or relabeled persisted before the
//! answer (or taken out again), and the state, serialized from that same
//! `Arc`, handed to the writer thread, which stores the latest per node in
//! batches (reports are soft state: the next one replaces a lost one),
//! each with its node's retired boot ids in the same row (so that a
//! restart keeps refusing replays of them; no write of its own).

use std::collections::BTreeMap;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::SystemTime;

use preflight_model::names::node_key;
use preflight_model::report::{Report, ReportBody};
use tokio::time::Instant;

use super::{lock, write, Service, ServiceError};
use crate::fleet::{FleetError, PreparedBody, PreparedReport, ReportOutcome};
use crate::store::{NodeChange, PendingReport};

/// The report with its node named in the one form the fleet keeps
/// ([`node_key`]): `NODE-A` is node-a, never a second node. A credential
/// for node-a may send either (names are compared without case there too).
fn canonical(mut report: Report) -> Result<Report, ServiceError> {
    report.node = node_key(&report.node).map_err(FleetError::from)?;
    if let ReportBody::Full { state, .. } = &mut report.body {
        if state.node.eq_ignore_ascii_case(&report.node) {
            state.node.clone_from(&report.node);
        }
    }
    Ok(report)
}

/// What the service keeps of a full report the fleet took: enough to
/// persist the node and the state.
struct Kept {
    node: String,
    boot_id: String,
    seq: u64,
    labels: BTreeMap<String, String>,
    state: Arc<preflight_model::NodeState>,
}

impl Service {
    /// Writes a node its agent added or relabeled: group-committed with
    /// other registrations on PostgreSQL, one transaction on SQLite;
    /// either way durable when this returns `Ok`.
    async fn save_agent_node(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
        actor: &str,
        at: SystemTime,
    ) -> Result<(), ServiceError> {
        let (name, labels) = (name.to_owned(), labels.clone());
        // The audit names the credential that set the labels.
        let actor = format!("agent:{actor}");
        match &self.nodes {
            Some(w) => {
                let r = w
                    .upsert(NodeChange {
                        name,
                        labels,
                        actor,
                        at,
                    })
                    .await;
                self.recorded(r)
            }
            None => {
                self.store(move |s| s.upsert_node(&name, &labels, &actor, at))
                    .await
            }
        }
    }

    /// Applies an agent's report. A node new to an open inventory is
    /// persisted before the answer, or taken out again when that fails: the
    /// inventory must survive a restart, or a node that never reports again
    /// would silently drop out of the gate. The state itself goes to the
    /// report writer (batched; the next report replaces a lost one).
    ///
    /// # Errors
    /// The fleet's refusal (nothing changed), or the store's failure to
    /// persist a new node (the node is removed again).
    ///
    /// `actor` names the credential that sent it (the audit's actor, as
    /// `agent:NAME`, when the report adds or relabels a node).
    pub async fn report(&self, report: Report, actor: &str) -> Result<ReportOutcome, ServiceError> {
        let report = PreparedReport::from(canonical(report)?);
        let wall = crate::clock::wall();
        // What persisting a full report needs once the fleet has taken it:
        // the state is shared, not copied.
        let full = match &report.body {
            PreparedBody::Full { labels, state } => Some(Kept {
                node: report.node.clone(),
                boot_id: report.boot_id.clone(),
                seq: report.seq,
                labels: labels.clone(),
                state: Arc::clone(state.state()),
            }),
            PreparedBody::Heartbeat { .. } => None,
        };
        let Some((outcome, retired_boots)) = self.applier.apply(report).await else {
            return Err(ServiceError::Store(
                "the report was not applied: the aggregator failed applying it (see its log)"
                    .into(),
            ));
        };
        let outcome = outcome?;
        let (
            ReportOutcome::Accepted {
                new_node,
                relabeled,
                ..
            },
            Some(report),
        ) = (&outcome, full)
        else {
            return Ok(outcome);
        };
        let labels = &report.labels;
        if let Some(old) = relabeled {
            // An agent-labelled node moved to other scopes: persisted and
            // audited (actor `agent:CREDENTIAL`), or undone.
            if let Err(e) = self
                .save_agent_node(&report.node, labels, actor, wall)
                .await
            {
                write(&self.fleet).undo_relabel(&report.node, old.clone(), Instant::now());
                return Err(e);
            }
        }
        if *new_node {
            if let Err(e) = self
                .save_agent_node(&report.node, labels, actor, wall)
                .await
            {
                let _ = write(&self.fleet).remove_node(&report.node);
                return Err(e);
            }
        }
        let state_json = serde_json::to_string(&*report.state).expect("state serializes");
        let _ = self.reports_tx.send(PendingReport {
            node: report.node,
            boot_id: report.boot_id,
            seq: report.seq,
            received_at: wall,
            state_json,
            retired_boots,
        });
        Ok(outcome)
    }

    /// Writes reports in batches (latest per node wins) until the channel
    /// closes, i.e. until every clone of this service is dropped.
    pub fn spawn_report_writer(&self, rx: Receiver<PendingReport>) -> std::thread::JoinHandle<()> {
        let store = self.store.clone();
        let metrics = self.metrics.clone();
        std::thread::Builder::new()
            .name("report-writer".into())
            .spawn(move || {
                // Storing reports can wait; a gate question cannot.
                crate::handoff::lower_priority();
                while let Ok(first) = rx.recv() {
                    let mut batch: BTreeMap<String, PendingReport> = BTreeMap::new();
                    batch.insert(first.node.clone(), first);
                    while let Ok(more) = rx.try_recv() {
                        batch.insert(more.node.clone(), more);
                        if batch.len() >= 2000 {
                            break;
                        }
                    }
                    let batch: Vec<PendingReport> = batch.into_values().collect();
                    if let Err(e) = lock(&store).save_reports(&batch) {
                        metrics.store_up.set(0);
                        metrics.store_errors.inc();
                        tracing::error!(error = %e, reports = batch.len(), "cannot persist reports (they are replaced by the next ones)");
                    }
                }
            })
            .expect("spawn report writer thread")
    }
}
