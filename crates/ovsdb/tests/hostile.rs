//! Hostile OVSDB messages (issue 37, item 4): a small message must never
//! make preflight build an unbounded state, and a state over a bound is
//! refused (the source reads as unreadable, so policy says no-go), never
//! half-read into something that looks healthy. Each case goes through the
//! real framer and session, and the socket cases through a real unix socket
//! served by a stand-in ovsdb-server.

use std::path::{Path, PathBuf};

use preflight_model::{OvsBridge, OvsSource};
use preflight_ovsdb::db::MAX_ROWS_PER_TABLE;
use preflight_ovsdb::session::{
    Framer, Session, MAX_MESSAGE_BYTES, MONITOR_ID, MONITOR_REQUEST_ID,
};
use preflight_ovsdb::SocketPaths;
use serde_json::{json, Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn uuid(n: usize) -> String {
    format!("00000000-0000-4000-8000-{n:012x}")
}

fn refs(uuids: &[String]) -> Value {
    let atoms: Vec<Value> = uuids.iter().map(|u| json!(["uuid", u])).collect();
    json!(["set", atoms])
}

fn bridge_row(name: &str, ports: &[String]) -> Value {
    json!({ "new": { "name": name, "ports": refs(ports), "datapath_type": "" } })
}

fn port_row(name: &str, interfaces: &[String]) -> Value {
    json!({ "new": {
        "name": name, "interfaces": refs(interfaces), "bond_mode": "active-backup",
        "lacp": ["set", []], "bond_active_slave": ["set", []], "bond_updelay": 0,
        "bond_downdelay": 0, "other_config": ["map", []],
    } })
}

fn interface_row(name: &str) -> Value {
    json!({ "new": {
        "name": name, "type": "", "admin_state": "up", "link_state": "up",
        "link_resets": 0, "lacp_current": ["set", []], "mac_in_use": "52:54:00:00:00:01",
        "ifindex": 4, "error": ["set", []], "link_speed": 10_000_000_000_u64, "duplex": "full",
    } })
}

fn monitor_reply(result: Value) -> Value {
    json!({ "id": MONITOR_REQUEST_ID, "result": result, "error": null })
}

/// The issue's 300 KB reply: `Bridge.ports` names one Port 3,000 times and
/// that Port's `interfaces` one Interface 3,000 times.
fn duplicate_reference_reply() -> Value {
    let (b, p, i) = (uuid(1), uuid(2), uuid(3));
    monitor_reply(json!({
        "Bridge": { b: bridge_row("br-ex", &vec![p.clone(); 3000]) },
        "Port": { p: port_row("bond1", &vec![i.clone(); 3000]) },
        "Interface": { i: interface_row("eth0") },
    }))
}

/// Frames `text` as the connection does (64 KiB reads) and hands every
/// message to one session; the first error ends the session, as it does the
/// connection.
fn feed(session: &mut Session, text: &str) -> Result<(), String> {
    let mut framer = Framer::default();
    for chunk in text.as_bytes().chunks(64 << 10) {
        framer.push(chunk);
        while let Some(raw) = framer.next_message().map_err(|e| e.to_string())? {
            let msg: Value = serde_json::from_str(&raw).map_err(|e| e.to_string())?;
            session.handle(&msg).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// Every port and interface object built, over all bridges.
fn objects(bridges: &[OvsBridge]) -> usize {
    bridges
        .iter()
        .flat_map(|b| &b.ports)
        .map(|p| 1 + p.interfaces.len())
        .sum()
}

fn all_errors(bridges: &[OvsBridge]) -> Vec<String> {
    let mut out = Vec::new();
    for b in bridges {
        out.extend(b.parse_errors.iter().cloned());
        for p in &b.ports {
            out.extend(p.parse_errors.iter().cloned());
            for i in &p.interfaces {
                out.extend(i.parse_errors.iter().cloned());
            }
        }
    }
    out
}

#[test]
fn duplicate_references_never_multiply_rows() {
    let text = duplicate_reference_reply().to_string();
    assert!(text.len() < 400_000, "the issue's message is ~300 KB");
    let mut s = Session::new();
    feed(&mut s, &text).expect("the reply is accepted; its rows are what is wrong");
    let bridges = s.tables().bridges();
    let built = objects(&bridges);
    assert!(
        built <= 2,
        "built {built} port/interface objects from 3 rows"
    );
    let errors = all_errors(&bridges);
    assert!(
        errors.iter().any(|e| e.contains("listed twice")),
        "the duplicate shows as an unreadable column: {errors:?}"
    );
}

#[test]
fn duplicate_member_references_leave_the_port_unreadable() {
    let (b, p, i) = (uuid(1), uuid(2), uuid(3));
    let reply = monitor_reply(json!({
        "Bridge": { b: bridge_row("br-ex", std::slice::from_ref(&p)) },
        "Port": { p: port_row("bond1", &[i.clone(), i.clone()]) },
        "Interface": { i.clone(): interface_row("eth0") },
    }));
    let mut s = Session::new();
    s.handle(&reply).expect("accepted");
    let bridges = s.tables().bridges();
    let bond = &bridges[0].ports[0];
    assert!(bond.interfaces.len() <= 1, "{bond:?}");
    assert_eq!(
        bond.parse_errors,
        [format!(
            "interfaces: reference {i} listed twice; an OVSDB set holds each element once"
        )]
    );
}

/// Distinct references within each set, but every Port lists the same
/// Interfaces: without building each row once, 500 x 500 objects.
#[test]
fn rows_shared_between_sets_are_built_once() {
    let ifaces: Vec<String> = (0..500).map(|n| uuid(10_000 + n)).collect();
    let ports: Vec<String> = (0..500).map(|n| uuid(20_000 + n)).collect();
    let mut port_rows = Map::new();
    for (n, p) in ports.iter().enumerate() {
        port_rows.insert(p.clone(), port_row(&format!("p{n:03}"), &ifaces));
    }
    let iface_rows: Map<String, Value> = ifaces
        .iter()
        .enumerate()
        .map(|(n, i)| (i.clone(), interface_row(&format!("eth{n}"))))
        .collect();
    let reply = monitor_reply(json!({
        "Bridge": { uuid(1): bridge_row("br-ex", &ports) },
        "Port": port_rows,
        "Interface": iface_rows,
    }));
    let mut s = Session::new();
    s.handle(&reply).expect("accepted");
    let bridges = s.tables().bridges();
    let built = objects(&bridges);
    assert!(built <= 1000, "built {built} objects from 1,000 rows");
    let claimed = bridges[0]
        .ports
        .iter()
        .filter(|p| {
            p.parse_errors
                .iter()
                .any(|e| e.contains("already a member of another port"))
        })
        .count();
    assert_eq!(claimed, 499, "every port but the first names the sharing");
}

fn interfaces_table(rows: usize) -> Value {
    let table: Map<String, Value> = (0..rows)
        .map(|n| (uuid(n), interface_row(&format!("eth{n}"))))
        .collect();
    Value::Object(table)
}

#[test]
fn a_table_over_the_row_bound_is_refused() {
    let reply = monitor_reply(json!({ "Interface": interfaces_table(MAX_ROWS_PER_TABLE + 1) }));
    let err = Session::new()
        .handle(&reply)
        .expect_err("more rows than the bound");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("{}", MAX_ROWS_PER_TABLE + 1))
            && msg.contains(&format!("bound of {MAX_ROWS_PER_TABLE} rows")),
        "{msg}"
    );
    // At the bound itself the state is read.
    let at = monitor_reply(json!({ "Interface": interfaces_table(MAX_ROWS_PER_TABLE) }));
    Session::new().handle(&at).expect("at the bound");
}

/// The issue's second case: a 1,000,000-row update after a healthy sync is
/// refused as it arrives (the framer's byte bound stops it before it is
/// parsed) and the state read before it is untouched.
#[test]
fn a_million_row_update_is_refused_and_changes_nothing() {
    let mut s = Session::new();
    let reply = monitor_reply(json!({ "Interface": interfaces_table(3) }));
    feed(&mut s, &reply.to_string()).expect("healthy");
    let before = s.tables().clone();
    let mut text =
        format!(r#"{{"id":null,"method":"update","params":["{MONITOR_ID}",{{"Interface":{{"#);
    for n in 0..1_000_000 {
        if n > 0 {
            text.push(',');
        }
        text.push_str(&format!(
            r#""{}":{{"new":{{"name":"x{n}"}}}}"#,
            uuid(100 + n)
        ));
    }
    text.push_str("}}]}");
    let err = feed(&mut s, &text).expect_err("refused");
    assert!(
        err.contains(&format!("larger than {MAX_MESSAGE_BYTES} bytes")),
        "{err}"
    );
    assert_eq!(s.tables(), &before, "nothing of it applied");
}

/// A stand-in ovsdb-server on a real unix socket: answers the monitor
/// request with `reply` and keeps the connection open.
async fn serve(dir: &Path, reply: String) -> PathBuf {
    let path = dir.join("db.sock");
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path).expect("bind");
    tokio::spawn(async move {
        let Ok((mut sock, _)) = listener.accept().await else {
            return;
        };
        let mut buf = vec![0; 4096];
        if sock.read(&mut buf).await.unwrap_or(0) == 0 {
            return;
        }
        if sock.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
        while sock.read(&mut buf).await.unwrap_or(0) > 0 {}
    });
    path
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pf-ovsdb-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[tokio::test]
async fn read_once_over_a_socket_reports_a_bound_as_unreadable() {
    let dir = temp_dir("rows");
    let reply = monitor_reply(json!({ "Interface": interfaces_table(MAX_ROWS_PER_TABLE + 1) }));
    let path = serve(&dir, reply.to_string()).await;
    match preflight_ovsdb::read_once(&SocketPaths::explicit(&path)).await {
        OvsSource::Unreadable { reason, .. } => {
            assert!(reason.contains("rows per table"), "{reason}");
        }
        other => panic!("expected Unreadable, got {}", short(&other)),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn read_once_over_a_socket_builds_duplicate_references_once() {
    let dir = temp_dir("dups");
    let path = serve(&dir, duplicate_reference_reply().to_string()).await;
    let src = preflight_ovsdb::read_once(&SocketPaths::explicit(&path)).await;
    assert!(
        objects(src.bridges()) <= 2,
        "built {} objects",
        objects(src.bridges())
    );
    assert!(
        all_errors(src.bridges())
            .iter()
            .any(|e| e.contains("listed twice")),
        "{}",
        short(&src)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The running agent's path: a healthy state is published, then an update
/// over the row bound turns it unreadable (naming the bound) instead of
/// being kept.
#[tokio::test]
async fn watch_turns_unreadable_when_an_update_exceeds_the_row_bound() {
    let dir = temp_dir("watch");
    let (b, p, i) = (uuid(1), uuid(2), uuid(3));
    let healthy = monitor_reply(json!({
        "Bridge": { b: bridge_row("br-ex", std::slice::from_ref(&p)) },
        "Port": { p: port_row("bond1", std::slice::from_ref(&i)) },
        "Interface": { i: interface_row("eth0") },
    }));
    let flood: Map<String, Value> = (0..=MAX_ROWS_PER_TABLE)
        .map(|n| (uuid(100 + n), json!({ "new": { "name": format!("x{n}") } })))
        .collect();
    let update =
        json!({ "id": null, "method": "update", "params": [MONITOR_ID, { "Interface": flood }] });
    let path = serve(&dir, format!("{healthy}{update}")).await;
    let mut rx = preflight_ovsdb::watch(SocketPaths::explicit(&path));
    let reason = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            let reason = match &*rx.borrow_and_update() {
                OvsSource::Ok { bridges, .. } => {
                    assert!(objects(bridges) <= 2, "{bridges:?}");
                    None
                }
                OvsSource::Unreadable { reason, .. } if reason.contains("rows per table") => {
                    Some(reason.clone())
                }
                _ => None,
            };
            if let Some(r) = reason {
                return r;
            }
            rx.changed().await.expect("watch task alive");
        }
    })
    .await
    .expect("the watch reports the bound within 10 s");
    assert!(
        reason.contains(&format!("bound of {MAX_ROWS_PER_TABLE} rows per table")),
        "{reason}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The `error` column is quoted into findings: a megabyte of it is cut to a
/// short excerpt where the state is built.
#[test]
fn a_huge_interface_error_is_kept_as_an_excerpt() {
    let (b, p, i) = (uuid(1), uuid(2), uuid(3));
    let mut iface = interface_row("eth0");
    iface["new"]["error"] = json!("x".repeat(1 << 20));
    let reply = monitor_reply(json!({
        "Bridge": { b: bridge_row("br-ex", std::slice::from_ref(&p)) },
        "Port": { p: port_row("bond1", std::slice::from_ref(&i)) },
        "Interface": { i: iface },
    }));
    let mut s = Session::new();
    s.handle(&reply).expect("accepted");
    let bridges = s.tables().bridges();
    let member = &bridges[0].ports[0].interfaces[0];
    let error = member.error.as_deref().expect("error kept");
    assert!(error.len() <= 300, "error of {} bytes kept", error.len());
    assert!(
        error.starts_with("xxxx") && error.ends_with("..."),
        "{error}"
    );
    assert!(!member.is_up(), "still an error");
}

/// A message that is not what it should be is named in the reason, never
/// quoted whole.
#[test]
fn protocol_errors_quote_an_excerpt() {
    let huge = "y".repeat(1 << 20);
    let mut s = Session::new();
    let reply = json!({ "id": MONITOR_REQUEST_ID, "result": null, "error": huge });
    let err = s.handle(&reply).expect_err("refused monitor").to_string();
    assert!(err.len() < 400, "{} bytes", err.len());
    let err = Session::new()
        .handle(&json!(["not", "an", "object", huge]))
        .expect_err("not an object")
        .to_string();
    assert!(err.len() < 400, "{} bytes", err.len());
}

fn short(src: &OvsSource) -> String {
    let s = format!("{src:?}");
    s.chars().take(300).collect()
}
