//! Sessions recorded from a real ovsdb-server (tests/fixtures/ovsdb/, made by
//! `capture_recorded_sessions` in tests/tests/ovs.rs) replayed through the
//! framer and the session, and hand-edited copies of them: a malformed or
//! unknown column, or a dangling reference, never hides the other rows.

use preflight_model::{OvsBridge, OvsInterface, OvsPort};
use preflight_ovsdb::session::{Framer, Session, MONITOR_REQUEST_ID};
use serde_json::{json, Value};

const AB_FAILOVER: &str = include_str!("../../../tests/fixtures/ovsdb/ab-failover.jsonl");
const LACP_SLB: &str = include_str!("../../../tests/fixtures/ovsdb/lacp-slb.jsonl");
const MEMBER_ERROR: &str = include_str!("../../../tests/fixtures/ovsdb/member-error.jsonl");

/// The recorded messages, framed from the raw bytes in odd-sized chunks as
/// they might arrive from the socket.
fn messages(fixture: &str) -> Vec<Value> {
    let mut framer = Framer::default();
    let mut out = Vec::new();
    for chunk in fixture.as_bytes().chunks(97) {
        framer.push(chunk);
        while let Some(raw) = framer.next_message().expect("fixture frames") {
            out.push(serde_json::from_str(&raw).expect("fixture is JSON"));
        }
    }
    assert_eq!(out.len(), fixture.lines().count());
    out
}

/// The bridges after each message.
fn replay(msgs: &[Value]) -> Vec<Vec<OvsBridge>> {
    let mut s = Session::new();
    msgs.iter()
        .map(|m| {
            s.handle(m).expect("recorded message is accepted");
            s.tables().bridges()
        })
        .collect()
}

fn port<'a>(bridges: &'a [OvsBridge], name: &str) -> &'a OvsPort {
    bridges
        .iter()
        .flat_map(|b| &b.ports)
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("no port {name}"))
}

fn member<'a>(p: &'a OvsPort, name: &str) -> &'a OvsInterface {
    p.interfaces
        .iter()
        .find(|i| i.name == name)
        .unwrap_or_else(|| panic!("no member {name}"))
}

fn no_errors(bridges: &[OvsBridge]) -> bool {
    bridges.iter().all(|b| {
        b.parse_errors.is_empty()
            && b.ports.iter().all(|p| {
                p.parse_errors.is_empty() && p.interfaces.iter().all(|i| i.parse_errors.is_empty())
            })
    })
}

#[test]
fn active_backup_failover_and_restore() {
    let states = replay(&messages(AB_FAILOVER));
    assert_eq!(states.len(), 3, "monitor reply, failover, restore");
    let healthy = &states[0];
    assert!(no_errors(healthy));
    assert_eq!(healthy.len(), 1);
    assert_eq!(healthy[0].name, "br-ex");
    assert_eq!(healthy[0].datapath_type, "netdev");
    let names: Vec<&str> = healthy[0].ports.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["bond1", "br-ex"], "ports sorted by name");
    let bond = port(healthy, "bond1");
    assert!(bond.is_bond());
    assert_eq!(bond.mode(), "active-backup");
    assert!(bond.interfaces.iter().all(OvsInterface::is_up));
    let first_active = bond.active_member().expect("an active member").name.clone();
    assert!(!port(healthy, "br-ex").is_bond());

    // The active member's cable pulled: one update carries both its
    // link_state down and the active slave moving to the other member.
    let failed = port(&states[1], "bond1");
    let pulled = member(failed, &first_active);
    assert_eq!(pulled.link_state.as_deref(), Some("down"));
    assert_eq!(pulled.link_resets, Some(1));
    assert_eq!(pulled.down_reason().as_deref(), Some("link_state down"));
    let now_active = failed.active_member().expect("failed over");
    assert_ne!(now_active.name, first_active);
    assert!(now_active.is_up());

    // Restored: up again; OVS keeps the new active member (no bond-primary).
    let restored = port(&states[2], "bond1");
    assert!(restored.interfaces.iter().all(OvsInterface::is_up));
    assert_eq!(member(restored, &first_active).link_resets, Some(2));
    assert_eq!(
        restored.active_member().map(|m| m.name.as_str()),
        Some(now_active.name.as_str())
    );
}

#[test]
fn lacp_active_without_partner_and_balance_slb() {
    let states = replay(&messages(LACP_SLB));
    let last = states.last().expect("messages");
    assert!(no_errors(last));
    let tcp = port(last, "bond-tcp");
    assert_eq!(tcp.mode(), "balance-tcp");
    assert!(tcp.lacp_enabled());
    // Recorded from OVS 3.1: true right after the member came up, false once
    // no partner answered.
    assert!(tcp.interfaces.iter().all(|i| i.lacp_current == Some(false)));
    assert!(port(&states[0], "bond-tcp")
        .interfaces
        .iter()
        .all(|i| i.lacp_current == Some(true)));
    let slb = port(last, "bond-slb");
    assert_eq!(slb.mode(), "balance-slb");
    assert!(!slb.lacp_enabled());
    assert!(slb
        .interfaces
        .iter()
        .all(|i| i.lacp_current.is_none() && i.is_up()));
    assert!(slb.bond_active_slave.is_some(), "{slb:?}");
}

#[test]
fn member_naming_a_missing_device() {
    let states = replay(&messages(MEMBER_ERROR));
    let bond = port(&states[0], "bond1");
    let bad = member(bond, "nosuchdev0");
    assert_eq!(
        bad.error.as_deref(),
        Some("could not open network device nosuchdev0 (No such device)")
    );
    assert!(!bad.is_up());
    assert!(bad.down_reason().is_some_and(|r| r.starts_with("error")));
    assert!(member(bond, "va0").is_up());
    assert!(no_errors(&states[0]));
}

/// The monitor reply of the failover session, for hand edits.
fn reply() -> Value {
    messages(AB_FAILOVER).remove(0)
}

/// The uuid of the row named `name` in `table` of a monitor reply.
fn uuid_of(reply: &Value, table: &str, name: &str) -> String {
    reply["result"][table]
        .as_object()
        .expect("table")
        .iter()
        .find(|(_, r)| r["new"]["name"] == name)
        .map(|(u, _)| u.clone())
        .unwrap_or_else(|| panic!("no {table} row {name}"))
}

fn row<'a>(reply: &'a mut Value, table: &str, name: &str) -> &'a mut Value {
    let uuid = uuid_of(reply, table, name);
    &mut reply["result"][table][uuid]["new"]
}

fn bridges_of(reply: &Value) -> Vec<OvsBridge> {
    let mut s = Session::new();
    s.handle(reply).expect("reply accepted");
    s.tables().bridges()
}

#[test]
fn wrong_type_in_link_state_marks_only_that_row() {
    let mut r = reply();
    row(&mut r, "Interface", "va0")["link_state"] = json!(5);
    row(&mut r, "Interface", "va1")["ifindex"] = json!(["set", [1, 2]]);
    let b = bridges_of(&r);
    let bond = port(&b, "bond1");
    let va0 = member(bond, "va0");
    assert_eq!(va0.parse_errors, ["link_state: expected a string, got 5"]);
    assert_eq!(va0.link_state, None);
    assert!(!va0.is_up(), "unknown is never up");
    assert_eq!(va0.admin_state.as_deref(), Some("up"), "other columns kept");
    let va1 = member(bond, "va1");
    assert_eq!(
        va1.parse_errors,
        ["ifindex: expected at most one value, got a set of 2"]
    );
    assert!(va1.is_up());
    assert!(bond.parse_errors.is_empty());
    assert_eq!(bond.interfaces.len(), 2);
}

#[test]
fn unknown_columns_and_tables_are_ignored() {
    let mut r = reply();
    row(&mut r, "Interface", "va0")["statistics"] = json!(["map", [["rx_packets", 3]]]);
    row(&mut r, "Port", "bond1")["qos"] = json!(["set", []]);
    r["result"]["Mirror"] = json!({ "x": { "new": { "name": "m" } } });
    assert_eq!(bridges_of(&r), bridges_of(&reply()));
    assert!(no_errors(&bridges_of(&r)));
}

#[test]
fn dangling_references_are_errors_on_the_referencing_row() {
    let mut r = reply();
    let va1 = uuid_of(&r, "Interface", "va1");
    r["result"]["Interface"]
        .as_object_mut()
        .expect("table")
        .remove(&va1);
    let br_port = uuid_of(&r, "Port", "br-ex");
    r["result"]["Port"]
        .as_object_mut()
        .expect("table")
        .remove(&br_port);
    let b = bridges_of(&r);
    assert_eq!(b[0].parse_errors, [format!("ports: no Port row {br_port}")]);
    let bond = port(&b, "bond1");
    assert_eq!(
        bond.parse_errors,
        [format!("interfaces: no Interface row {va1}")]
    );
    assert_eq!(bond.interfaces.len(), 1, "va0 still read");
    assert!(member(bond, "va0").is_up());
}

#[test]
fn a_row_that_is_not_an_object_or_lacks_columns_still_shows() {
    let mut r = reply();
    let va0 = uuid_of(&r, "Interface", "va0");
    r["result"]["Interface"][&va0] = json!("garbage");
    let obj = row(&mut r, "Port", "bond1").as_object_mut().expect("row");
    obj.remove("bond_mode");
    let b = bridges_of(&r);
    let bond = port(&b, "bond1");
    assert_eq!(bond.parse_errors, ["bond_mode: column missing"]);
    let broken = member(bond, &format!("<Interface {va0}>"));
    assert!(broken.parse_errors[0].starts_with("row is not an object"));
    assert!(!broken.is_up());
    assert!(member(bond, "va1").is_up());
}

#[test]
fn an_update_that_is_not_table_updates_fails_the_session_and_keeps_the_state() {
    let msgs = messages(AB_FAILOVER);
    let mut s = Session::new();
    s.handle(&msgs[0]).expect("reply");
    let before = s.tables().clone();
    let bad = json!({"id": null, "method": "update", "params": ["preflight", {"Interface": 3}]});
    assert!(s.handle(&bad).is_err());
    assert_eq!(s.tables(), &before, "nothing half-applied");
    let reply_err = json!({"id": MONITOR_REQUEST_ID, "result": [], "error": null});
    assert!(Session::new().handle(&reply_err).is_err());
}
