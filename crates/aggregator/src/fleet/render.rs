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
//! tracked scope are copied without looking a node up (except those whose
//! message counts seconds: stale, settling); a tracked scope's blockers,
//! ready list and blocked names are further kept rendered in ranges of
//! names (`ready`), so an answer copies a few hundred pieces (at 100,000
//! nodes, writing the 11,000 blocked names one by one took 4-5 ms of the
//! 7.5 ms an answer was rendered in, docs/benchmarks.md); and the answer's validity for a
//! tracked scope comes from the fleet's earliest self-change
//! (`Fleet::first_change`), never from a walk of its members.
//!
//! Every blocker is critical (a node-level blocker, or an unwaived critical
//! finding), so "worst first" ([`super::sort_blockers`]) is by node, then
//! code and subject: the blockers of the not-go nodes in name order, each
//! node's sorted, are already in that order.

use std::time::SystemTime;

use preflight_model::Verdict;
use serde::Serialize;
use tokio::time::Instant;

use super::answer::{blockers_bytes, inventory_empty, json, verdict};
use super::body::Body;
use super::error::FleetError;
use super::ready::NameRange;
use super::selector::{ScopeCounts, Selector};
use super::version::TEXT_REFRESH;
use super::{Fleet, Node, Status};

/// A gate answer as the API sends it, and until when it stays true without
/// a change of its scope (see `version`).
#[derive(Debug, Clone)]
pub struct GateJson {
    /// The verdict (the HTTP status follows it).
    pub verdict: Verdict,
    /// The JSON body, in pieces ([`Body::join`]).
    pub body: Body,
    /// At or before `now`: a deadline passed that `tick` has not processed;
    /// tick and ask again.
    pub until: Instant,
}

#[derive(Serialize)]
struct At(#[serde(with = "preflight_model::time::rfc3339")] SystemTime);

/// A node name as a JSON string. Names are checked at the door (letters,
/// digits, `.`, `_`, `-`), so they need no escaping; anything else goes
/// through the serializer all the same.
fn name(out: &mut Vec<u8>, n: &str) {
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

impl Fleet {
    /// The gate's answer for `sel` as JSON (without the `ready` list unless
    /// `ready`), and its validity; the same answer as [`Fleet::gate`],
    /// except that a stale or settling node's message, which counts
    /// seconds, may be up to `TEXT_REFRESH` old (as in a cached answer).
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
            return Ok(self.tracked_answer(sel, c, now, wall, ready, base));
        }
        // One look at each member: its name, status, kept blockers and
        // next self-change.
        let (mut members, mut not_go): (Vec<&String>, Vec<(&String, &Node)>) = (vec![], vec![]);
        let mut until = base;
        self.for_each_member(sel, |name, n| {
            members.push(name);
            if n.status != Status::Go {
                not_go.push((name, n));
            }
            if let Some(at) = self.node_changes_at(name, n) {
                until = until.min(at);
            }
        });
        if members.is_empty() && !sel.0.is_empty() {
            return Err(FleetError::UnknownScope(sel.text()));
        }
        let mut out = head(sel, members.len(), not_go.len(), not_go.len() * 240);
        let mut first = true;
        for &(n, node) in &not_go {
            if let Some(b) = &node.blockers {
                push_piece(&mut out, &mut first, b);
            } else {
                if matches!(node.status, Status::Stale | Status::Settling) {
                    until = until.min(now + TEXT_REFRESH);
                }
                push_piece(
                    &mut out,
                    &mut first,
                    &blockers_bytes(self.blockers_of(n, node, now)),
                );
            }
        }
        if members.is_empty() {
            json(&mut out, &inventory_empty());
        }
        out.push(b']');
        if ready {
            out.extend_from_slice(b",\"ready\":[");
            out.extend_from_slice(&ready_text(members.iter().copied(), not_go.iter().copied()));
            out.push(b']');
        }
        let in_scope = |n: &str| members.binary_search_by(|m| m.as_str().cmp(n)).is_ok();
        let mut body = Body::new(out, 0);
        self.tail(
            &mut body,
            |out| {
                out.cur
                    .extend_from_slice(&names_text(not_go.iter().map(|(n, _)| *n)))
            },
            in_scope,
            now,
            wall,
        );
        Ok(GateJson {
            verdict: verdict(members.len(), not_go.len()),
            body,
            until,
        })
    }

    /// A tracked scope's answer: its kept ranges copied, none of its nodes
    /// looked up but those whose text counts seconds.
    fn tracked_answer(
        &self,
        sel: &Selector,
        c: &ScopeCounts,
        now: Instant,
        wall: SystemTime,
        ready: bool,
        base: Instant,
    ) -> GateJson {
        // The fleet's earliest self-change is at or before any member's:
        // conservative, and no walk.
        let waivers = self
            .waivers
            .values()
            .filter(|w| c.members.contains(&w.node))
            .filter_map(|w| self.waiver_due.get(&w.id).copied());
        let mut until = [Some(base), self.first_change()]
            .into_iter()
            .flatten()
            .chain(waivers)
            .min()
            .unwrap_or(base);
        // Own bytes: the head, commas between ranges, the blocked names.
        let ranges = c.blocked.len() + if ready { c.ready.len() } else { 0 };
        let mut out = Body::new(
            head(
                sel,
                c.members.len(),
                c.not_go.len(),
                c.not_go.len() * 16 + ranges,
            ),
            ranges,
        );
        let texts_until = c
            .blocked
            .write(&mut out, now, |range| self.blockers_text(c, range, now));
        if let Some(t) = texts_until {
            until = until.min(t);
        }
        if c.members.is_empty() {
            json(&mut out.cur, &inventory_empty());
        }
        out.cur.push(b']');
        if ready {
            out.cur.extend_from_slice(b",\"ready\":[");
            c.ready.write(&mut out, now, |range| ready_range(c, range));
            out.cur.push(b']');
        }
        self.tail(
            &mut out,
            |out| {
                c.names.write(out, now, |range| names_range(c, range));
            },
            |n| c.members.contains(n),
            now,
            wall,
        );
        GateJson {
            verdict: verdict(c.members.len(), c.not_go.len()),
            body: out,
            until,
        }
    }

    /// The blockers of a tracked scope's not-go members in `range`, and
    /// until when that text holds (a stale or settling node's counts
    /// seconds).
    fn blockers_text(
        &self,
        c: &ScopeCounts,
        range: NameRange<'_>,
        now: Instant,
    ) -> (Vec<u8>, Option<Instant>) {
        let mut text = Vec::new();
        let mut first = true;
        let mut valid = None;
        for (n, kept) in c.not_go.range::<str, _>(range) {
            if let Some(b) = kept {
                push_piece(&mut text, &mut first, b);
            } else {
                let node = &self.nodes[n];
                if matches!(node.status, Status::Stale | Status::Settling) {
                    valid = Some(now + TEXT_REFRESH);
                }
                push_piece(
                    &mut text,
                    &mut first,
                    &blockers_bytes(self.blockers_of(n, node, now)),
                );
            }
        }
        (text, valid)
    }

    /// The answer after its ready list: blocked (the not-go names, comma
    /// separated, written by `blocked`), waived, generated_at.
    fn tail(
        &self,
        body: &mut Body,
        blocked: impl FnOnce(&mut Body),
        in_scope: impl Fn(&str) -> bool,
        now: Instant,
        wall: SystemTime,
    ) {
        body.cur.extend_from_slice(b",\"blocked\":[");
        blocked(body);
        let out = &mut body.cur;
        out.extend_from_slice(b"],\"waived\":[");
        let waived = self
            .waivers
            .values()
            .filter(|w| in_scope(&w.node) && self.waiver_shown(w, now));
        for (i, w) in waived.enumerate() {
            if i > 0 {
                out.push(b',');
            }
            json(out, w);
        }
        out.extend_from_slice(b"],\"generated_at\":");
        json(out, &At(wall));
        out.push(b'}');
    }
}

/// The answer up to its blockers' opening bracket.
fn head(sel: &Selector, members: usize, not_go: usize, size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + size);
    out.extend_from_slice(b"{\"verdict\":");
    json(&mut out, &verdict(members, not_go));
    out.extend_from_slice(b",\"scope\":");
    json(&mut out, &sel.text());
    out.extend_from_slice(b",\"nodes\":");
    json(&mut out, &members);
    out.extend_from_slice(b",\"blockers\":[");
    out
}

/// Appends a comma-separated piece (empty pieces add nothing).
fn push_piece(out: &mut Vec<u8>, first: &mut bool, piece: &[u8]) {
    if piece.is_empty() {
        return;
    }
    if !*first {
        out.push(b',');
    }
    *first = false;
    out.extend_from_slice(piece);
}

/// A tracked scope's go members in `range`: a range of its ready list.
fn ready_range(c: &ScopeCounts, range: NameRange<'_>) -> (Vec<u8>, Option<Instant>) {
    let text = ready_text(
        c.members.range::<str, _>(range),
        c.not_go.range::<str, _>(range),
    );
    (text, None)
}

/// A tracked scope's not-go members in `range`: a range of its blocked
/// names.
fn names_range(c: &ScopeCounts, range: NameRange<'_>) -> (Vec<u8>, Option<Instant>) {
    (
        names_text(c.not_go.range::<str, _>(range).map(|(n, _)| n)),
        None,
    )
}

/// Names as comma-separated JSON strings.
fn names_text<'a>(names: impl Iterator<Item = &'a String>) -> Vec<u8> {
    let mut text = Vec::new();
    for n in names {
        if !text.is_empty() {
            text.push(b',');
        }
        name(&mut text, n);
    }
    text
}

/// The members that are not in `not_go`, as comma-separated JSON strings;
/// both in name order, `not_go` a subset of `members`.
fn ready_text<'a, V: 'a>(
    members: impl Iterator<Item = &'a String>,
    not_go: impl Iterator<Item = (&'a String, V)>,
) -> Vec<u8> {
    let mut text = Vec::new();
    let mut skip = not_go.peekable();
    for m in members {
        if skip.peek().is_some_and(|(n, _)| *n == m) {
            skip.next();
            continue;
        }
        if !text.is_empty() {
            text.push(b',');
        }
        name(&mut text, m);
    }
    text
}
