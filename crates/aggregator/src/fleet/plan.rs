//! The plan: the largest batch of a scope that may start an update now.
//! Only go nodes are chosen; nodes out for maintenance (leased, or back
//! from a lease within their grace time) count against `max_unavailable`
//! and against their failure domain (`per=LABEL:K`: at most K nodes of one
//! value of LABEL out at once); no node is chosen whose failure domain
//! holds a node that is not go (its neighbours are the redundancy: a
//! leased node whose report since the lease started is blocked counts), nor
//! one without the domain's label (cannot tell its domain). Domains are
//! counted over the whole fleet, not only the scope: a rack is down by
//! its nodes whatever scope asked. Nodes are taken in name order, so the
//! same question gets the same batch; greedy in that order is also the
//! largest batch (the limits are a budget and a cap per domain).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::{Fleet, FleetError, Node, Selector, Status};

/// How many nodes of the scope may be out at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// A number of nodes.
    Count(usize),
    /// A percentage of the scope's nodes, rounded down, at least 1 when
    /// above 0 (a small scope still makes progress one node at a time).
    Percent(u8),
}

impl Budget {
    /// Parses `N` or `P%` (P at most 100).
    ///
    /// # Errors
    /// Anything else, with why.
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some(p) = s.strip_suffix('%') {
            return match p.parse::<u8>() {
                Ok(v) if v <= 100 => Ok(Self::Percent(v)),
                _ => Err(format!("`{s}`: a percentage is 0% to 100%")),
            };
        }
        s.parse::<usize>().map(Self::Count).map_err(|_| {
            format!("`{s}`: expected a number of nodes (e.g. 2) or a percentage (e.g. 10%)")
        })
    }

    /// Nodes of a scope of `members`.
    #[must_use]
    pub fn of(self, members: usize) -> usize {
        match self {
            Self::Count(n) => n,
            Self::Percent(0) => 0,
            Self::Percent(p) => (members * usize::from(p) / 100).max(1),
        }
    }
}

/// A plan question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanQuestion {
    /// The scope.
    pub scope: Selector,
    /// `max_unavailable`.
    pub max_unavailable: Budget,
    /// `per=LABEL:K`.
    pub per: Option<(String, usize)>,
}

/// Why a node of the scope is not in the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HeldReason {
    /// Under a lease, or back from one and not yet go.
    Maintenance,
    /// Not go itself.
    NotGo,
    /// Its failure domain holds a node that is not go.
    DomainBlocked,
    /// Its failure domain has K nodes out already.
    DomainFull,
    /// `max_unavailable` nodes of the scope are out (or chosen) already.
    BudgetSpent,
    /// It has no value of the domain label.
    NoDomain,
}

/// A node not chosen, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Held {
    /// Node.
    pub node: String,
    /// Why.
    pub reason: HeldReason,
    /// The same for people.
    pub detail: String,
}

/// A plan's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// The scope, as asked.
    pub scope: String,
    /// Nodes that may start now, by name.
    pub batch: Vec<String>,
    /// Every other node of the scope, by name.
    pub held: Vec<Held>,
    /// Nodes of the scope.
    pub members: usize,
    /// `max_unavailable` in nodes.
    pub max_unavailable: usize,
    /// Nodes of the scope out for maintenance now.
    pub unavailable: Vec<String>,
}

/// One node as the plan sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate<'a> {
    /// Name.
    pub name: &'a str,
    /// Out for maintenance.
    pub out: bool,
    /// Its status when not out (`None`: go).
    pub not_go: Option<&'static str>,
    /// Its value of the domain label, when one is asked for.
    pub domain: Option<&'a str>,
}

/// What the plan knows of one failure domain, fleet-wide.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Domain {
    /// Nodes out for maintenance.
    pub out: usize,
    /// The first node (by name) that is not go and not out.
    pub blocked: Option<String>,
}

/// The plan over plain values: `members` sorted by name, `domains` keyed by
/// label value. Pure, so that the property tests check it directly.
#[must_use]
pub fn choose(
    members: &[Candidate<'_>],
    domains: &BTreeMap<String, Domain>,
    max_unavailable: usize,
    per: Option<(&str, usize)>,
) -> (Vec<String>, Vec<Held>) {
    let mut spent = members.iter().filter(|c| c.out).count();
    let mut taken: BTreeMap<&str, usize> = BTreeMap::new();
    let (mut batch, mut held) = (Vec::new(), Vec::new());
    let mut spent_detail: Option<String> = None;
    let mut hold = |c: &Candidate<'_>, reason, detail: String| {
        held.push(Held {
            node: c.name.to_owned(),
            reason,
            detail,
        });
    };
    for c in members {
        if c.out {
            hold(
                c,
                HeldReason::Maintenance,
                format!("{} is out for maintenance", c.name),
            );
            continue;
        }
        if let Some(status) = c.not_go {
            hold(c, HeldReason::NotGo, format!("{} is {status}", c.name));
            continue;
        }
        let mut domain_key = None;
        if let Some((label, k)) = per {
            let Some(value) = c.domain else {
                hold(
                    c,
                    HeldReason::NoDomain,
                    format!("{} has no `{label}` label", c.name),
                );
                continue;
            };
            let (out, blocked) = domains
                .get(value)
                .map_or((0, None), |d| (d.out, d.blocked.as_ref()));
            if let Some(b) = blocked {
                hold(
                    c,
                    HeldReason::DomainBlocked,
                    format!("{label}={value} holds {b}, which is not go"),
                );
                continue;
            }
            let down = out + taken.get(value).copied().unwrap_or(0);
            if down >= k {
                hold(
                    c,
                    HeldReason::DomainFull,
                    format!("{label}={value} has {down} of at most {k} node(s) out"),
                );
                continue;
            }
            domain_key = Some(value);
        }
        if spent >= max_unavailable {
            // The same words for every node past the budget: written once.
            let detail = spent_detail
                .get_or_insert_with(|| {
                    format!("{spent} of at most {max_unavailable} node(s) of the scope out")
                })
                .clone();
            hold(c, HeldReason::BudgetSpent, detail);
            continue;
        }
        spent += 1;
        if let Some(v) = domain_key {
            *taken.entry(v).or_default() += 1;
        }
        batch.push(c.name.to_owned());
    }
    (batch, held)
}

impl Fleet {
    /// The plan for `q`, with the nodes of `also_leased` (the store's
    /// leases, which may be ahead of this replica's) counted as out.
    ///
    /// # Errors
    /// An unknown scope (no node has its labels).
    pub fn plan<'f>(
        &'f self,
        q: &PlanQuestion,
        also_leased: &BTreeSet<String>,
    ) -> Result<Plan, FleetError> {
        let label = q.per.as_ref().map(|(l, _)| l.as_str());
        let out = |name: &str, excused: bool| excused || also_leased.contains(name);
        let candidate = |name: &'f String, n: &'f Node| Candidate {
            name,
            out: out(name, n.excused),
            not_go: (n.status != Status::Go).then(|| n.status.as_str()),
            domain: label.and_then(|l| n.labels.get(l).map(String::as_str)),
        };
        let mut members: Vec<Candidate> = Vec::new();
        if let Some(c) = self.scopes.get(&q.scope) {
            // A tracked scope keeps its members in order; those out for
            // maintenance are in no scope, and few: add them and sort
            // (nearly sorted: one merge).
            let mut names: Vec<&String> = c.members.iter().collect();
            names.extend(self.out_nodes().filter(|n| {
                self.nodes
                    .get(*n)
                    .is_some_and(|node| q.scope.matches(&node.labels))
            }));
            names.sort();
            names.dedup();
            members.extend(names.into_iter().map(|n| candidate(n, &self.nodes[n])));
        } else {
            // From the label index: a rack-sized scope costs its own size.
            self.for_each_labeled(&q.scope, |name, n| members.push(candidate(name, n)));
        }
        if members.is_empty() && !q.scope.0.is_empty() {
            return Err(FleetError::UnknownScope(q.scope.text()));
        }
        let domains = label
            .map(|l| self.domains(l, also_leased))
            .unwrap_or_default();
        let max_unavailable = q.max_unavailable.of(members.len());
        let (batch, held) = choose(
            &members,
            &domains,
            max_unavailable,
            q.per.as_ref().map(|(l, k)| (l.as_str(), *k)),
        );
        Ok(Plan {
            scope: q.scope.text(),
            batch,
            held,
            members: members.len(),
            max_unavailable,
            unavailable: members
                .iter()
                .filter(|c| c.out)
                .map(|c| c.name.to_owned())
                .collect(),
        })
    }

    /// Every failure domain of `label` (its values) that has nodes out or
    /// not go, fleet-wide. Read from the few nodes out for maintenance and
    /// the whole fleet's kept not-go list, never by walking each domain:
    /// at 1,000 racks of 100 nodes that walk is the whole fleet.
    fn domains(&self, label: &str, also_leased: &BTreeSet<String>) -> BTreeMap<String, Domain> {
        let mut domains: BTreeMap<String, Domain> = BTreeMap::new();
        let outs: BTreeSet<&String> = self
            .out_nodes()
            .chain(also_leased)
            .filter(|n| self.nodes.contains_key(*n))
            .collect();
        for name in &outs {
            if let Some(v) = self.nodes[*name].labels.get(label) {
                domains.entry(v.clone()).or_default().out += 1;
            }
        }
        let mut blocked = |name: &String, n: &Node, out_but_blocked: bool| {
            if outs.contains(name) && !out_but_blocked {
                return;
            }
            if let Some(v) = n.labels.get(label) {
                let d = domains.entry(v.clone()).or_default();
                if d.blocked.as_ref().is_none_or(|b| name < b) {
                    d.blocked = Some(name.clone());
                }
            }
        };
        for name in &outs {
            if self.blocked_under_lease(name) {
                blocked(name, &self.nodes[*name], true);
            }
        }
        match self.scopes.get(&Selector::default()) {
            // The whole fleet is always tracked: its not-go members.
            Some(all) => {
                for name in all.not_go.keys() {
                    blocked(name, &self.nodes[name], false);
                }
            }
            None => {
                for (name, n) in &self.nodes {
                    if !n.excused && n.status != Status::Go {
                        blocked(name, n, false);
                    }
                }
            }
        }
        domains
    }
}
