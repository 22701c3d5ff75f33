//! Maintenance leases and plans: the store takes a lease first (under its
//! lock, against every lease in force, whichever replica took it), then
//! the fleet puts it in force. The lease sweeper ends leases as they fall
//! due (recorded once across replicas) and brings nodes back from their
//! grace time.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::time::Instant;

use super::{lock, read, write, Service, ServiceError};
use crate::fleet::{FleetError, Plan, PlanQuestion, MAX_LEASE_NODES};
use crate::store::{Lease, StoreError, Taken};

/// How often the lease sweeper looks for leases that fell due and nodes
/// whose grace time ran out.
pub const LEASE_TICK: Duration = Duration::from_secs(1);

/// How often a reload reads the store again when a local lease change
/// overtook it before giving up until the next one.
const RELOAD_TRIES: usize = 8;

/// Longest `reason`, `pipeline` and `author` of a lease, in bytes.
pub const MAX_LEASE_TEXT: usize = 1024;

impl Service {
    /// Puts the store's leases in force (at start, and when another
    /// replica changed them).
    ///
    /// # Errors
    /// Store errors.
    pub fn reload_leases(&self) -> Result<usize, StoreError> {
        for _ in 0..RELOAD_TRIES {
            // The store is read without the fleet lock: a lease this
            // replica takes or ends meanwhile moves the generation, and
            // the stale list is read again rather than applied over it.
            let generation = read(&self.fleet).lease_generation();
            let leases = lock(&self.store).open_leases()?;
            let n = leases.len();
            let wall = crate::clock::wall();
            let mut f = write(&self.fleet);
            if f.lease_generation() != generation {
                continue;
            }
            let expired = f.set_leases(leases, wall, Instant::now());
            drop(f);
            if expired {
                // Expired before this replica followed them (at start:
                // while it was down): recorded now, with their audit.
                for l in lock(&self.store).expire_leases(wall)? {
                    tracing::info!(lease = l.id, nodes = ?l.nodes, pipeline = %l.pipeline, "maintenance lease expired");
                }
            }
            self.note_maintenance();
            return Ok(n);
        }
        // Local changes kept coming: they are in force already, and the
        // next reload catches up with the rest.
        Ok(read(&self.fleet).leases().len())
    }

    /// Checks a lease's text and duration (`reason`, `pipeline`, `author`
    /// bounded; more than 0 and at most `max_lease`).
    fn check_lease_terms(&self, l: &Lease) -> Result<(), FleetError> {
        let bad = |m: String| Err(FleetError::BadLease(m));
        for (what, text) in [
            ("reason", &l.reason),
            ("pipeline", &l.pipeline),
            ("author", &l.author),
        ] {
            if text.trim().is_empty() || text.len() > MAX_LEASE_TEXT {
                return bad(format!("{what}: 1 to {MAX_LEASE_TEXT} bytes"));
            }
        }
        let max = read(&self.fleet).config().max_lease;
        let asked = l
            .expires_at
            .duration_since(l.created_at)
            .unwrap_or_default();
        if asked.is_zero() || asked > max {
            return bad(format!(
                "duration {}: more than 0 and at most max_lease ({})",
                humantime::format_duration(asked),
                humantime::format_duration(max)
            ));
        }
        Ok(())
    }

    /// Checks what a lease asks for: its terms, and known nodes, each
    /// once, at most [`MAX_LEASE_NODES`].
    fn check_lease(&self, l: &Lease) -> Result<(), FleetError> {
        self.check_lease_terms(l)?;
        let bad = |m: String| Err(FleetError::BadLease(m));
        if l.nodes.is_empty() {
            return bad("no nodes".into());
        }
        if l.nodes.len() > MAX_LEASE_NODES {
            return bad(format!(
                "{} nodes; at most {MAX_LEASE_NODES} per lease",
                l.nodes.len()
            ));
        }
        let f = read(&self.fleet);
        let mut seen = BTreeSet::new();
        for n in &l.nodes {
            if f.labels(n).is_none() {
                return Err(FleetError::NoSuchNode(
                    preflight_model::excerpt::excerpt(n).into_owned(),
                ));
            }
            if !seen.insert(n) {
                return bad(format!(
                    "node `{}` listed twice",
                    preflight_model::excerpt::excerpt(n)
                ));
            }
        }
        Ok(())
    }

    /// Takes a lease of its nodes (store first, then the fleet). Only go
    /// nodes may be leased: a lease takes a node out of every gate, and
    /// a node that is not go would take its findings with it. Unlike
    /// [`Service::take_plan`], no `max_unavailable` or failure-domain
    /// limit is checked.
    ///
    /// # Errors
    /// Invalid request, nodes already leased or not go (nothing
    /// written), store failure.
    pub async fn add_lease(&self, mut l: Lease) -> Result<Lease, ServiceError> {
        l.nodes.sort();
        self.check_lease(&l)?;
        let svc = self.clone();
        let (taken, refused) = self
            .store(move |s| {
                s.take_lease(crate::clock::wall(), |leased| {
                    if l.nodes.iter().any(|n| leased.contains(n)) {
                        // The store names every node already leased.
                        return (Some(l), None);
                    }
                    match svc.caught_up(|f, _| first_not_go(f, &l.nodes)) {
                        Some(e) => (None, Some(e)),
                        None => (Some(l), None),
                    }
                })
            })
            .await?;
        match taken {
            Taken::Leased(l) => {
                write(&self.fleet).add_lease(l.clone(), crate::clock::wall(), Instant::now());
                self.note_maintenance();
                Ok(l)
            }
            Taken::Conflict(nodes) => Err(FleetError::Leased(nodes).into()),
            Taken::Nothing => Err(refused
                .unwrap_or_else(|| FleetError::BadLease("no nodes".into()))
                .into()),
        }
    }

    /// Ends lease `id` early on behalf of `actor`; its nodes start their
    /// grace time.
    ///
    /// # Errors
    /// No such lease in force; store failure.
    pub async fn end_lease(&self, id: i64, actor: String) -> Result<Lease, ServiceError> {
        let wall = crate::clock::wall();
        let ended = self.store(move |s| s.end_lease(id, &actor, wall)).await?;
        let mut f = write(&self.fleet);
        let in_memory = f.end_lease(id, wall, Instant::now());
        drop(f);
        self.note_maintenance();
        ended
            .or(in_memory)
            .ok_or_else(|| FleetError::NoSuchLease(id).into())
    }

    /// The plan for `q` as this replica sees it (a read).
    ///
    /// # Errors
    /// Unknown scope.
    pub fn plan(&self, q: &PlanQuestion) -> Result<Plan, FleetError> {
        // Deadlines already due first: a node whose TTL ran out is not go.
        self.caught_up(|f, _| f.plan(q, &BTreeSet::new()))
    }

    /// Takes the plan's batch for `q` under a lease made from `template`
    /// (its nodes ignored), atomically: the plan is made under the store's
    /// lease lock, against the leases the store holds, so that plans taken
    /// at once through any replicas stay within the limits together.
    /// Returns the plan and the lease (`None` when the batch is empty).
    ///
    /// # Errors
    /// Unknown scope or invalid lease (nothing written), store failure.
    pub async fn take_plan(
        &self,
        q: PlanQuestion,
        template: Lease,
    ) -> Result<(Plan, Option<Lease>), ServiceError> {
        self.check_lease_terms(&template)?;
        let svc = self.clone();
        let (taken, plan) = self
            .store(move |s| {
                s.take_lease(crate::clock::wall(), |leased| {
                    let plan = svc.caught_up(|f, _| f.plan(&q, leased));
                    let plan = plan.map(cap_batch);
                    let lease = match &plan {
                        Ok(p) if !p.batch.is_empty() => Some(Lease {
                            nodes: p.batch.clone(),
                            ..template
                        }),
                        _ => None,
                    };
                    (lease, plan)
                })
            })
            .await?;
        let mut plan = plan?;
        match taken {
            Taken::Leased(l) => {
                write(&self.fleet).add_lease(l.clone(), crate::clock::wall(), Instant::now());
                self.note_maintenance();
                plan.batch.clone_from(&l.nodes);
                Ok((plan, Some(l)))
            }
            Taken::Nothing => Ok((plan, None)),
            // The plan counted every leased node as out: cannot happen
            // under the lock, refused rather than trusted.
            Taken::Conflict(nodes) => Err(FleetError::Leased(nodes).into()),
        }
    }

    /// Sets the maintenance metrics from the fleet.
    fn note_maintenance(&self) {
        let (n, overruns) = self.read(|f| (f.nodes_in_maintenance(), f.overruns().len()));
        self.metrics
            .nodes_in_maintenance
            .set(i64::try_from(n).unwrap_or(i64::MAX));
        self.metrics
            .maintenance_overruns
            .set(i64::try_from(overruns).unwrap_or(i64::MAX));
    }

    /// Ends leases as they fall due (in memory at once; recorded in the
    /// store, once across replicas, retried while it is down) and brings
    /// nodes back from their grace time, forever.
    pub async fn sweep_leases(self) {
        let mut owed = false;
        let mut tick = tokio::time::interval(LEASE_TICK);
        loop {
            tick.tick().await;
            let wall = crate::clock::wall();
            let ended = write(&self.fleet).tick_maintenance(wall, Instant::now());
            owed |= !ended.is_empty();
            if owed {
                match self.store(move |s| s.expire_leases(wall)).await {
                    Ok(done) => {
                        for l in &done {
                            tracing::info!(lease = l.id, nodes = ?l.nodes, pipeline = %l.pipeline, "maintenance lease expired");
                        }
                        owed = false;
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot record lease expiries; retried"),
                }
            }
            self.note_maintenance();
        }
    }
}

/// The first of `nodes` that is not go (or still back from a lease and
/// not yet go), as the refusal naming it and its status.
fn first_not_go(f: &crate::fleet::Fleet, nodes: &[String]) -> Option<FleetError> {
    nodes.iter().find_map(|n| {
        let status = f.status(n)?;
        let returning = matches!(f.excused(n), Some(crate::fleet::Excused::Returning { .. }));
        (status != crate::fleet::Status::Go || returning).then(|| FleetError::NotGo {
            node: preflight_model::excerpt::excerpt(n).into_owned(),
            status: if returning {
                "back from maintenance".into()
            } else {
                status.as_str().into()
            },
        })
    })
}

/// A batch of at most [`MAX_LEASE_NODES`]: the rest are held as
/// `budget_spent`, never dropped unnamed.
fn cap_batch(mut p: Plan) -> Plan {
    if p.batch.len() > MAX_LEASE_NODES {
        let rest = p.batch.split_off(MAX_LEASE_NODES);
        let detail = format!("at most {MAX_LEASE_NODES} node(s) per batch");
        p.held
            .extend(rest.into_iter().map(|node| crate::fleet::Held {
                node,
                reason: crate::fleet::HeldReason::BudgetSpent,
                detail: detail.clone(),
            }));
        p.held.sort_by(|a, b| a.node.cmp(&b.node));
    }
    p
}
