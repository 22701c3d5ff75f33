//! Open vSwitch bond member down → finding, on a real ovsdb-server and
//! ovs-vswitchd (userspace datapath, veth members whose peers sit in a
//! namespace): the time from the peer's `set down` (an in-process rtnetlink
//! call in the peers' namespace, so no process start-up is counted) to
//! `preflight inspect --watch` printing BOND_PORT_DOWN for that member; and
//! the agent's RSS with the OVSDB source on and off, side by side.

use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use preflight_tests::ovs::Ovs;
use preflight_tests::watcher::Watcher;
use preflight_tests::Proc;

/// Toggles links of one namespace from a thread living in it; answers each
/// request with the instant just before the rtnetlink call.
fn toggler(ns: String) -> (mpsc::Sender<(String, bool)>, mpsc::Receiver<Instant>) {
    let (tx, rx) = mpsc::channel::<(String, bool)>();
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        crate::enter(&ns);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        for (name, up) in rx {
            let t0 = Instant::now();
            rt.block_on(preflight_netlink::control::set_link(&name, up))
                .expect("toggle the peer");
            if done_tx.send(t0).is_err() {
                break;
            }
        }
    });
    (tx, done_rx)
}

fn healthy(ovs: &Ovs, bin: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = ovs
            .ns
            .command(bin)
            .args(["inspect", "--json", "--ovsdb"])
            .arg(ovs.socket())
            .output()
            .expect("inspect");
        if out.status.code() == Some(0)
            && String::from_utf8_lossy(&out.stdout).contains("\"bond1\"")
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "OVS bond never healthy: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `pulls` member pulls (alternating members, each restored before the
/// next): milliseconds from the peer going down to BOND_PORT_DOWN.
#[must_use]
pub fn latency(bin: &str, pulls: usize) -> Vec<f64> {
    let ovs = Ovs::start();
    ovs.add_bridge("br-ex");
    ovs.add_bond(
        "br-ex",
        "bond1",
        &["va0", "va1"],
        &[],
        &["bond_mode=active-backup"],
    );
    healthy(&ovs, bin);
    let w = Watcher::start(
        ovs.ns.command(bin),
        &["--ovsdb", &ovs.socket().display().to_string()],
    );
    std::thread::sleep(Duration::from_millis(500));
    let (toggle, started) = toggler(ovs.peers.name.clone());
    let mut out = Vec::with_capacity(pulls);
    for i in 0..pulls {
        let member = if i % 2 == 0 { "va0" } else { "va1" };
        let subject = format!("bond1/{member}");
        toggle.send((Ovs::peer(member), false)).expect("toggler");
        let t0 = started.recv().expect("toggled");
        w.expect(
            "appeared",
            "BOND_PORT_DOWN",
            &subject,
            Duration::from_secs(10),
        );
        out.push(t0.elapsed().as_secs_f64() * 1000.0);
        toggle.send((Ovs::peer(member), true)).expect("toggler");
        let _ = started.recv();
        w.expect(
            "cleared",
            "BOND_PORT_DOWN",
            &subject,
            Duration::from_secs(10),
        );
        // Let OVS settle (failover back, lacp/link state) before the next pull.
        std::thread::sleep(Duration::from_millis(50));
    }
    out
}

/// Agent RSS (MiB) after `idle` with the OVSDB source on, then off, on the
/// same node (one OVS bond, 2 members).
#[must_use]
pub fn agent_rss(bin: &str, idle: Duration) -> (f64, f64) {
    let ovs = Ovs::start();
    ovs.add_bridge("br-ex");
    ovs.add_bond(
        "br-ex",
        "bond1",
        &["va0", "va1"],
        &[],
        &["bond_mode=active-backup"],
    );
    healthy(&ovs, bin);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rss = Vec::new();
    for ovsdb in [ovs.socket().display().to_string(), "off".to_owned()] {
        let cfg = dir.path().join("agent.toml");
        std::fs::write(
            &cfg,
            format!("[agent]\nnode = \"bench\"\nlisten = \"127.0.0.1:0\"\novsdb = \"{ovsdb}\"\nprobe_gateways = false\n"),
        )
        .expect("agent config");
        let p = Proc(
            ovs.ns
                .command(bin)
                .args(["agent", "--config"])
                .arg(&cfg)
                .env("PREFLIGHT_LOG", "warn")
                .stdout(Stdio::null())
                .spawn()
                .expect("spawn agent"),
        );
        std::thread::sleep(idle);
        rss.push(crate::rss_kib(p.0.id()).expect("agent alive") as f64 / 1024.0);
    }
    (rss[0], rss[1])
}

/// Prints both figures over `reps` repetitions.
pub fn report(bin: &str, pulls: usize, reps: usize, idle: Duration) {
    let samples = latency(bin, pulls);
    let (p50, p99, min, max) = crate::stats(samples.clone());
    println!(
        "OVS member down -> BOND_PORT_DOWN (inspect --watch, real ovs-vswitchd, userspace datapath), {} pulls:",
        samples.len()
    );
    println!("  median {p50:.2} ms  p99 {p99:.2} ms  min {min:.2}  max {max:.2}");
    let (on, off): (Vec<f64>, Vec<f64>) = (0..reps).map(|_| agent_rss(bin, idle)).unzip();
    let (on50, _, onmin, onmax) = crate::stats(on);
    let (off50, _, offmin, offmax) = crate::stats(off);
    println!(
        "agent RSS after {}s idle, {reps} reps: OVSDB on {on50:.2} MiB ({onmin:.2}..{onmax:.2}), off {off50:.2} MiB ({offmin:.2}..{offmax:.2})",
        idle.as_secs()
    );
}
