//! preflight-ovsdb against a real ovsdb-server and ovs-vswitchd (userspace
//! datapath, veth members whose peers sit in a namespace). Needs root; never
//! skips. `PREFLIGHT_CAPTURE_OVSDB=1` also rewrites the recorded sessions in
//! `tests/fixtures/ovsdb/` from the capture test.

use std::time::{Duration, Instant};

use preflight_model::{OvsInterface, OvsPort, OvsSource};
use preflight_ovsdb::{read_once, watch, watch_recording, SocketPaths};
use preflight_tests::ovs::Ovs;
use tokio::sync::watch::Receiver;

/// Waits until `pred` holds for the published state; panics with the last
/// state after `timeout`.
async fn wait_for(
    rx: &mut Receiver<OvsSource>,
    timeout: Duration,
    what: &str,
    pred: impl Fn(&OvsSource) -> bool,
) -> OvsSource {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        {
            let cur = rx.borrow_and_update();
            if pred(&cur) {
                return cur.clone();
            }
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => panic!("watch task ended while waiting for {what}"),
            Err(_) => panic!(
                "{what}: not seen within {timeout:?}; last state: {:#?}",
                *rx.borrow()
            ),
        }
    }
}

fn bond<'a>(s: &'a OvsSource, name: &str) -> Option<&'a OvsPort> {
    s.bonds().map(|(_, p)| p).find(|p| p.name == name)
}

fn member<'a>(p: &'a OvsPort, name: &str) -> Option<&'a OvsInterface> {
    p.interfaces.iter().find(|i| i.name == name)
}

fn healthy_ab(s: &OvsSource, name: &str) -> bool {
    bond(s, name).is_some_and(|b| {
        b.interfaces.len() == 2
            && b.interfaces.iter().all(OvsInterface::is_up)
            && b.active_member().is_some()
    })
}

fn active(s: &OvsSource, name: &str) -> Option<String> {
    bond(s, name)?.active_member().map(|m| m.name.clone())
}

fn ab_bond(ovs: &Ovs) {
    ovs.add_bridge("br-ex");
    ovs.add_bond(
        "br-ex",
        "bond1",
        &["va0", "va1"],
        &[],
        &["bond_mode=active-backup"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_once_reads_a_real_active_backup_bond() {
    let ovs = Ovs::start();
    ab_bond(&ovs);
    let paths = SocketPaths::explicit(ovs.socket());
    // ovs-vswitchd fills in link_state and mac_in_use shortly after add-bond.
    let deadline = Instant::now() + Duration::from_secs(10);
    let state = loop {
        let s = read_once(&paths).await;
        if healthy_ab(&s, "bond1") || Instant::now() > deadline {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(healthy_ab(&state, "bond1"), "{state:#?}");
    let br = &state.bridges()[0];
    assert_eq!(
        (br.name.as_str(), br.datapath_type.as_str()),
        ("br-ex", "netdev")
    );
    let b = bond(&state, "bond1").expect("bond1");
    assert_eq!(b.bond_mode.as_deref(), Some("active-backup"));
    assert!(b.parse_errors.is_empty() && br.parse_errors.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_backup_failover_seen_within_a_second_and_restored() {
    let ovs = Ovs::start();
    ab_bond(&ovs);
    let mut rx = watch(SocketPaths::explicit(ovs.socket()));
    let s = wait_for(&mut rx, Duration::from_secs(10), "healthy bond1", |s| {
        healthy_ab(s, "bond1")
    })
    .await;
    let b = bond(&s, "bond1").expect("bond1");
    let mac = b.bond_active_slave.clone().expect("active slave");
    assert!(b
        .interfaces
        .iter()
        .any(|i| i.mac_in_use.as_deref() == Some(mac.as_str())));
    assert!(b
        .interfaces
        .iter()
        .all(|i| i.link_state.as_deref() == Some("up")));

    let mut delays = Vec::new();
    for round in 0..5 {
        let pulled = active(&rx.borrow(), "bond1").expect("an active member");
        let other = if pulled == "va0" { "va1" } else { "va0" };
        let t0 = Instant::now();
        ovs.cable(&pulled, false);
        let s = wait_for(&mut rx, Duration::from_secs(1), "member down", |s| {
            bond(s, "bond1")
                .and_then(|b| member(b, &pulled))
                .is_some_and(|m| m.link_state.as_deref() == Some("down"))
        })
        .await;
        let down = t0.elapsed();
        let s = if active(&s, "bond1").as_deref() == Some(other) {
            s
        } else {
            wait_for(&mut rx, Duration::from_secs(1), "failover", |s| {
                active(s, "bond1").as_deref() == Some(other)
            })
            .await
        };
        let failover = t0.elapsed();
        assert!(
            failover < Duration::from_secs(1),
            "failover after {failover:?}"
        );
        let m = member(bond(&s, "bond1").expect("bond1"), &pulled).expect("member");
        assert!(m.link_resets.unwrap_or(0) >= 1, "{m:?}");
        println!(
            "round {round}: {pulled} peer down -> update with link_state down after {down:?}, active slave moved to {other} after {failover:?}"
        );
        delays.push(down);

        let t1 = Instant::now();
        ovs.cable(&pulled, true);
        wait_for(&mut rx, Duration::from_secs(2), "member restored", |s| {
            healthy_ab(s, "bond1")
        })
        .await;
        println!(
            "round {round}: {pulled} peer up -> both members up after {:?}",
            t1.elapsed()
        );
    }
    delays.sort();
    println!(
        "peer down -> update: min {:?}, median {:?}, max {:?} over {} pulls",
        delays[0],
        delays[delays.len() / 2],
        delays[delays.len() - 1],
        delays.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lacp_active_without_partner_and_balance_slb() {
    let ovs = Ovs::start();
    ovs.add_bridge("br-ex");
    ovs.add_bond(
        "br-ex",
        "bond-tcp",
        &["vt0", "vt1"],
        &[],
        &["bond_mode=balance-tcp", "lacp=active"],
    );
    ovs.add_bond(
        "br-ex",
        "bond-slb",
        &["vs0", "vs1"],
        &[],
        &["bond_mode=balance-slb"],
    );
    let mut rx = watch(SocketPaths::explicit(ovs.socket()));
    let s = wait_for(&mut rx, Duration::from_secs(10), "members up", |s| {
        ["bond-tcp", "bond-slb"].iter().all(|n| {
            bond(s, n).is_some_and(|b| {
                b.interfaces
                    .iter()
                    .all(|i| i.link_state.as_deref() == Some("up"))
            })
        })
    })
    .await;
    // Real OVS (3.1) first reports lacp_current true on a member that just
    // came up, then false once the partner information expires (no partner
    // ever answered): wait for that, and record how long it took.
    let t0 = Instant::now();
    let first: Vec<Option<bool>> = bond(&s, "bond-tcp")
        .expect("bond-tcp")
        .interfaces
        .iter()
        .map(|i| i.lacp_current)
        .collect();
    wait_for(
        &mut rx,
        Duration::from_secs(10),
        "lacp_current false",
        |s| {
            bond(s, "bond-tcp")
                .is_some_and(|b| b.interfaces.iter().all(|i| i.lacp_current == Some(false)))
        },
    )
    .await;
    println!(
        "bond-tcp members: lacp_current first {first:?}, false on both {:?} after the members were up",
        t0.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s2 = rx.borrow().clone();
    let tcp = bond(&s2, "bond-tcp").expect("bond-tcp");
    assert_eq!(tcp.lacp.as_deref(), Some("active"));
    assert_eq!(tcp.bond_mode.as_deref(), Some("balance-tcp"));
    for m in &tcp.interfaces {
        assert_eq!(m.lacp_current, Some(false), "stays false: {m:?}");
    }
    println!("{}", ovs.appctl(&["bond/show", "bond-tcp"]));
    let slb = bond(&s2, "bond-slb").expect("bond-slb");
    assert_eq!(slb.bond_mode.as_deref(), Some("balance-slb"));
    assert!(slb.interfaces.iter().all(OvsInterface::is_up), "{slb:?}");
    assert_eq!(slb.lacp, None);
    assert!(
        slb.interfaces.iter().all(|i| i.lacp_current.is_none()),
        "{slb:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_naming_a_missing_device_has_an_error() {
    let ovs = Ovs::start();
    ovs.add_bridge("br-ex");
    ovs.add_bond("br-ex", "bond1", &["va0"], &["nosuchdev0"], &[]);
    let mut rx = watch(SocketPaths::explicit(ovs.socket()));
    let s = wait_for(
        &mut rx,
        Duration::from_secs(10),
        "error on nosuchdev0",
        |s| {
            bond(s, "bond1")
                .and_then(|b| member(b, "nosuchdev0"))
                .is_some_and(|m| m.error.is_some())
        },
    )
    .await;
    let b = bond(&s, "bond1").expect("bond1");
    let bad = member(b, "nosuchdev0").expect("member");
    println!(
        "nosuchdev0: error {:?}, link_state {:?}",
        bad.error, bad.link_state
    );
    assert!(!bad.is_up());
    assert!(b.parse_errors.is_empty() && bad.parse_errors.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ovsdb_server_killed_is_unreadable_then_recovers() {
    let ovs = Ovs::start();
    ab_bond(&ovs);
    let mut rx = watch(SocketPaths::explicit(ovs.socket()));
    wait_for(&mut rx, Duration::from_secs(10), "healthy bond1", |s| {
        healthy_ab(s, "bond1")
    })
    .await;
    let t0 = Instant::now();
    ovs.kill_db();
    let s = wait_for(&mut rx, Duration::from_secs(2), "Unreadable", |s| {
        matches!(s, OvsSource::Unreadable { .. })
    })
    .await;
    println!("ovsdb-server killed -> {s:?} after {:?}", t0.elapsed());
    // Stay down past a few reconnect attempts: still unreadable.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        matches!(*rx.borrow(), OvsSource::Unreadable { .. }),
        "{:?}",
        *rx.borrow()
    );
    let t1 = Instant::now();
    ovs.start_db();
    wait_for(&mut rx, Duration::from_secs(10), "Ok after restart", |s| {
        healthy_ab(s, "bond1")
    })
    .await;
    println!(
        "ovsdb-server restarted -> Ok again after {:?}",
        t1.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_ovsdb_server_is_unreadable_then_recovers() {
    let ovs = Ovs::start();
    ab_bond(&ovs);
    let mut rx = watch(SocketPaths::explicit(ovs.socket()));
    wait_for(&mut rx, Duration::from_secs(10), "healthy bond1", |s| {
        healthy_ab(s, "bond1")
    })
    .await;
    let t0 = Instant::now();
    ovs.pause_db(true);
    // The watch echoes after 5 s of silence and gives up 5 s later.
    let s = wait_for(&mut rx, Duration::from_secs(15), "Unreadable", |s| {
        matches!(s, OvsSource::Unreadable { .. })
    })
    .await;
    println!("ovsdb-server stopped -> {s:?} after {:?}", t0.elapsed());
    ovs.pause_db(false);
    wait_for(&mut rx, Duration::from_secs(10), "Ok after SIGCONT", |s| {
        healthy_ab(s, "bond1")
    })
    .await;
}

/// Records the sessions replayed by `crates/ovsdb/tests/replay.rs`. Always
/// runs the scenarios and checks the recording replays to what the watch
/// saw; writes the fixture files only with `PREFLIGHT_CAPTURE_OVSDB=1`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_recorded_sessions() {
    let write = std::env::var("PREFLIGHT_CAPTURE_OVSDB").is_ok_and(|v| v == "1");
    let dir = preflight_tests::workspace().join("tests/fixtures/ovsdb");

    // 1: active-backup bond, the active member's cable pulled, restored.
    let ovs = Ovs::start();
    ab_bond(&ovs);
    let paths = SocketPaths::explicit(ovs.socket());
    let mut plain = watch(paths.clone());
    wait_for(&mut plain, Duration::from_secs(10), "healthy", |s| {
        healthy_ab(s, "bond1")
    })
    .await;
    drop(plain);
    let (mut rx, mut tap) = watch_recording(paths.clone());
    wait_for(&mut rx, Duration::from_secs(5), "healthy", |s| {
        healthy_ab(s, "bond1")
    })
    .await;
    let pulled = active(&rx.borrow(), "bond1").expect("active");
    ovs.cable(&pulled, false);
    wait_for(&mut rx, Duration::from_secs(2), "failover", |s| {
        active(s, "bond1").is_some_and(|a| a != pulled)
            && bond(s, "bond1")
                .and_then(|b| member(b, &pulled))
                .is_some_and(|m| m.link_state.as_deref() == Some("down"))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    ovs.cable(&pulled, true);
    wait_for(&mut rx, Duration::from_secs(2), "restored", |s| {
        healthy_ab(s, "bond1")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    save(&dir, "ab-failover.jsonl", &rx, &mut tap, write);
    drop(rx);
    drop(ovs);

    // 2: lacp=active balance-tcp with no partner, and balance-slb.
    let ovs = Ovs::start();
    ovs.add_bridge("br-ex");
    ovs.add_bond(
        "br-ex",
        "bond-tcp",
        &["vt0", "vt1"],
        &[],
        &["bond_mode=balance-tcp", "lacp=active"],
    );
    ovs.add_bond(
        "br-ex",
        "bond-slb",
        &["vs0", "vs1"],
        &[],
        &["bond_mode=balance-slb"],
    );
    let (mut rx, mut tap) = watch_recording(SocketPaths::explicit(ovs.socket()));
    wait_for(&mut rx, Duration::from_secs(10), "members up", |s| {
        s.bonds().count() == 2
            && s.bonds()
                .all(|(_, b)| b.interfaces.iter().all(OvsInterface::is_up))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    save(&dir, "lacp-slb.jsonl", &rx, &mut tap, write);
    drop(rx);
    drop(ovs);

    // 3: a member naming a device that does not exist.
    let ovs = Ovs::start();
    ovs.add_bridge("br-ex");
    ovs.add_bond("br-ex", "bond1", &["va0"], &["nosuchdev0"], &[]);
    let (mut rx, mut tap) = watch_recording(SocketPaths::explicit(ovs.socket()));
    wait_for(&mut rx, Duration::from_secs(10), "error set", |s| {
        bond(s, "bond1")
            .and_then(|b| member(b, "nosuchdev0"))
            .is_some_and(|m| m.error.is_some())
            && bond(s, "bond1")
                .and_then(|b| member(b, "va0"))
                .is_some_and(OvsInterface::is_up)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    save(&dir, "member-error.jsonl", &rx, &mut tap, write);
}

/// Replays the recorded messages through the decoder, checks they give the
/// state the watch published, and writes them when asked.
fn save(
    dir: &std::path::Path,
    name: &str,
    rx: &Receiver<OvsSource>,
    tap: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    write: bool,
) {
    let mut lines = Vec::new();
    while let Ok(line) = tap.try_recv() {
        lines.push(line);
    }
    let mut session = preflight_ovsdb::session::Session::new();
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).expect("recorded JSON");
        session.handle(&v).expect("recorded message replays");
    }
    let OvsSource::Ok { bridges, .. } = &*rx.borrow() else {
        panic!("not Ok at the end of {name}");
    };
    assert_eq!(
        &session.tables().bridges(),
        bridges,
        "{name}: replay differs from the watch"
    );
    println!("{name}: {} messages", lines.len());
    if write {
        std::fs::create_dir_all(dir).expect("fixture dir");
        std::fs::write(dir.join(name), lines.join("\n") + "\n").expect("write fixture");
        println!("wrote {}", dir.join(name).display());
    }
}
