//! The gate's answer written straight into its JSON, for the API: the
//! same bytes as serializing [`Fleet::gate`]'s `GateAnswer` (a test plays
//! both against each other), without building that answer first.
//!
//! At 100,000 nodes the answer is megabytes, and it changes with nearly
//! every report somewhere in the fleet, so caching alone does not make it
//! cheap: it is rendered under the fleet's read lock, which every report
//! waits for. So the expensive parts are kept or skipped: a tracked scope's
//! members and not-go nodes are walked in place (both sets are sorted by
//! name, so the ready list is a merge, not a lookup per member); a node's
//! blockers are rendered by `touch`, once per change of that node, and kept
//! beside its name in each tracked scope's not-go map, so the blockers of a
//! tracked scope are copied in one walk of that map without looking a node
//! up (except those whose message counts seconds: stale, settling, which
//! are rendered at each answer); and the answer's validity for a
//! tracked scope comes from the fleet's earliest self-change
//! (`Fleet::first_change`), never from a walk of its members.
//!
//! Every blocker is critical (a node-level blocker, or an unwaived critical
//! finding), so "worst first" ([`super::sort_blockers`]) is by node, then
//! code and subject: the blockers of the not-go nodes in name order, each
//! node's sorted, are already in that order.

use std::borrow::Cow;
use std::time::SystemTime;

use preflight_model::report::Blocker;
use preflight_model::{Code, Severity, Verdict};
use serde::Serialize;
use tokio::time::Instant;

use super::selector::ScopeCounts;
use super::version::TEXT_REFRESH;
use super::{sort_blockers, Fleet, FleetError, Selector, Status};

/// A gate answer as the API sends it, and until when it stays true without
/// a change of its scope (see `version`).
#[derive(Debug, Clone)]
pub struct GateJson {
    /// The verdict (the HTTP status follows it).
    pub verdict: Verdict,
    /// The JSON body.
    pub body: Vec<u8>,
    /// At or before `now`: a deadline passed that `tick` has not processed;
    /// tick and ask again.
    pub until: Instant,
}

#[derive(Serialize)]
struct At(#[serde(with = "preflight_model::time::rfc3339")] SystemTime);

/// A scope's nodes, both sorted by name, `not_go` a subset of `members`
/// with each one's kept blockers where there are (`Node::blockers`).
struct Scope<'a, M, N> {
    sel: &'a Selector,
    /// Its kept counts, when it is tracked.
    tracked: Option<&'a ScopeCounts>,
    count: usize,
    members: M,
    not_go: N,
}

fn json<T: Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
    serde_json::to_writer(out, v).expect("gate answers serialize");
}

/// A node name as a JSON string. Names are checked at the door (letters,
/// digits, `.`, `_`, `-`), so they need no escaping; anything else goes
/// through the serializer all the same.
pub(super) fn name(out: &mut Vec<u8>, n: &str) {
    if n.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        out.push(b'"');
        out.extend_from_slice(n.as_bytes());
        out.push(b'"');
    } else {
        json(out, n);
    }
}

/// Blockers (one node's) as comma-separated JSON objects, worst first.
pub(super) fn blockers_bytes(mut b: Vec<Blocker>) -> Box<[u8]> {
    sort_blockers(&mut b);
    let mut out = Vec::with_capacity(b.len() * 256);
    for (i, x) in b.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json(&mut out, x);
    }
    out.into_boxed_slice()
}

impl Fleet {
    /// The gate's answer for `sel` as JSON (without the `ready` list unless
    /// `ready`), and its validity; the same answer as [`Fleet::gate`].
    ///
    /// # Errors
    /// `UnknownScope` when no node matches a non-empty selector.
    pub fn gate_json(
        &self,
        sel: &Selector,
        now: Instant,
        wall: SystemTime,
        ready: bool,
    ) -> Result<GateJson, FleetError> {
        let base = now + self.cfg.ttl.max(TEXT_REFRESH);
        if let Some(c) = self.scopes.get(sel) {
            if c.members.is_empty() && !sel.0.is_empty() {
                return Err(FleetError::UnknownScope(sel.text()));
            }
            // The fleet's earliest self-change is at or before any
            // member's: conservative, and no walk.
            let waivers = self
                .waivers
                .values()
                .filter(|w| c.members.contains(&w.node))
                .filter_map(|w| self.waiver_due.get(&w.id).copied());
            let until = [Some(base), self.first_change()]
                .into_iter()
                .flatten()
                .chain(waivers)
                .min()
                .unwrap_or(base);
            let scope = Scope {
                sel,
                tracked: Some(c),
                count: c.members.len(),
                members: c.members.iter(),
                not_go: c.not_go.iter().map(|(k, v)| (k, v.as_deref())),
            };
            return Ok(self.write_answer(
                &scope,
                |n| c.members.contains(n),
                now,
                wall,
                ready,
                until,
            ));
        }
        let (members, not_go) = self.scope_members(sel);
        if members.is_empty() && !sel.0.is_empty() {
            return Err(FleetError::UnknownScope(sel.text()));
        }
        let until = members
            .iter()
            .filter_map(|m| self.node_changes_at(m, &self.nodes[m]))
            .fold(base, Instant::min);
        let scope = Scope {
            sel,
            tracked: None,
            count: members.len(),
            members: members.iter(),
            not_go: not_go
                .iter()
                .map(|k| (k, self.nodes[k].blockers.as_deref())),
        };
        Ok(self.write_answer(
            &scope,
            |n| members.binary_search_by(|m| m.as_str().cmp(n)).is_ok(),
            now,
            wall,
            ready,
            until,
        ))
    }

    fn write_answer<'s, M, N>(
        &self,
        scope: &Scope<'_, M, N>,
        is_member: impl Fn(&str) -> bool,
        now: Instant,
        wall: SystemTime,
        ready: bool,
        mut until: Instant,
    ) -> GateJson
    where
        M: Iterator<Item = &'s String> + Clone,
        N: Iterator<Item = (&'s String, Option<&'s [u8]>)> + Clone,
    {
        let blocked = scope.not_go.clone().count();
        // Fail closed: a scope with a node that is not go, or with no node,
        // is no-go whatever its blockers say.
        let verdict = if blocked == 0 && scope.count > 0 {
            Verdict::Go
        } else {
            Verdict::NoGo
        };
        let mut out = Vec::with_capacity(256 + scope.count * 12 + blocked * 240);
        out.extend_from_slice(b"{\"verdict\":");
        json(&mut out, &verdict);
        out.extend_from_slice(b",\"scope\":");
        json(&mut out, &scope.sel.text());
        out.extend_from_slice(b",\"nodes\":");
        json(&mut out, &scope.count);
        out.extend_from_slice(b",\"blockers\":[");
        let mut first = true;
        for (n, kept) in scope.not_go.clone() {
            let frag = match kept {
                Some(b) => Cow::Borrowed(b),
                None => {
                    let node = &self.nodes[n];
                    if matches!(node.status, Status::Stale | Status::Settling) {
                        // Their messages count seconds.
                        until = until.min(now + TEXT_REFRESH);
                    }
                    Cow::Owned(blockers_bytes(self.blockers_of(n, node, now)).into_vec())
                }
            };
            if !frag.is_empty() {
                if !first {
                    out.push(b',');
                }
                first = false;
                out.extend_from_slice(&frag);
            }
        }
        if scope.count == 0 {
            json(
                &mut out,
                &Blocker {
                    node: String::new(),
                    code: Code::InventoryEmpty,
                    severity: Severity::Critical,
                    subject: String::new(),
                    message: Code::InventoryEmpty.meaning().into(),
                    since: None,
                },
            );
        }
        out.push(b']');
        if let (true, Some(c)) = (ready, scope.tracked) {
            out.extend_from_slice(b",\"ready\":[");
            c.ready.write(&mut out, &c.members, &c.not_go);
            out.push(b']');
        } else if ready {
            out.extend_from_slice(b",\"ready\":[");
            let mut skip = scope.not_go.clone().peekable();
            let mut first = true;
            for m in scope.members.clone() {
                if skip.peek().is_some_and(|(n, _)| *n == m) {
                    skip.next();
                    continue;
                }
                if !first {
                    out.push(b',');
                }
                first = false;
                name(&mut out, m);
            }
            out.push(b']');
        }
        out.extend_from_slice(b",\"blocked\":[");
        for (i, (n, _)) in scope.not_go.clone().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            name(&mut out, n);
        }
        out.extend_from_slice(b"],\"waived\":[");
        let waived = self
            .waivers
            .values()
            .filter(|w| is_member(&w.node) && self.waiver_shown(w, now));
        for (i, w) in waived.enumerate() {
            if i > 0 {
                out.push(b',');
            }
            json(&mut out, w);
        }
        out.extend_from_slice(b"],\"generated_at\":");
        json(&mut out, &At(wall));
        out.push(b'}');
        GateJson {
            verdict,
            body: out,
            until,
        }
    }
}
