//! The LLDP listener on a real kernel: a veth pair between two test-made
//! namespaces, `preflight debug lldp` listening on one end, a switch played
//! by a packet socket on the other (python3, which tests/run.sh installs).
//! A valid LLDPDU is heard; 10,000 malformed frames a second for 4 s
//! neither crash the listener nor grow its memory, and it still hears the
//! valid LLDPDU sent after the flood; and preflight sends no LLDP frame
//! itself. Needs root; never skips.

use std::io::Read as _;
use std::process::Stdio;
use std::time::{Duration, Instant};

use preflight_tests::netns::Netns;
use preflight_tests::{preflight_bin, Proc};
use serde_json::Value;

/// The switch: sends one LLDPDU (chassis `before-flood`), then malformed
/// frames at 10,000/s for 4 s, then one LLDPDU (chassis `after-flood`,
/// system name `switch-B`); counts LLDP frames that arrive from the node
/// meanwhile. Prints `sent=N from_node=M`.
const SWITCH: &str = r#"
import socket, struct, sys, time, random
dev = sys.argv[1]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x88cc))
s.bind((dev, 0x88cc))
s.setblocking(False)
dst = bytes.fromhex("0180c200000e")
src = bytes.fromhex("020000000b01")
def tlv(t, v): return struct.pack("!H", (t << 9) | len(v)) + v
def frame(pdu): return dst + src + b"\x88\xcc" + pdu
def lldpdu(chassis, name):
    return (tlv(1, b"\x07" + chassis) + tlv(2, b"\x05swp1") + tlv(3, struct.pack("!H", 120))
            + tlv(5, name) + tlv(127, b"\x00\x12\x0f\x04" + struct.pack("!H", 1522)) + tlv(0, b""))
good = lldpdu(b"before-flood", b"switch-A")
bad = [
    good[:7],                                   # cut inside the chassis ID
    tlv(1, b"\x07x") + struct.pack("!H", (5 << 9) | 400) + b"abc",  # length past the end
    tlv(2, b"\x05p") + tlv(1, b"\x07c") + tlv(3, b"\x00\x10"),      # out of order
    tlv(1, b"\x00x") + tlv(2, b"\x05p") + tlv(3, b"\x00\x10"),      # reserved subtype
]
rnd = random.Random(7)
bad += [bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(1, 1500))) for _ in range(60)]
from_node = 0
def drain():
    global from_node
    while True:
        try:
            data, addr = s.recvfrom(2048)
        except BlockingIOError:
            return
        if addr[2] != socket.PACKET_OUTGOING:
            from_node += 1
s.send(frame(good))
time.sleep(1.5)
print("flood", flush=True)
sent = 0
start = time.monotonic()
while time.monotonic() - start < 4.0:
    for i in range(100):
        try:
            s.send(frame(bad[(sent + i) % len(bad)]))
        except BlockingIOError:
            pass
    sent += 100
    ahead = sent / 10000.0 - (time.monotonic() - start)
    if ahead > 0:
        time.sleep(ahead)
    drain()
print("flood over", flush=True)
time.sleep(1.5)
s.send(frame(lldpdu(b"after-flood", b"switch-B")))
time.sleep(0.5)
drain()
print(f"sent={sent} from_node={from_node}", flush=True)
"#;

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which ends with the last `)`.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

#[test]
fn lldp_listener_survives_a_flood_of_malformed_frames_and_hears_the_switch_after_it() {
    let node = Netns::new("lldpn");
    let switch = Netns::new("lldps");
    node.ip(&format!(
        "link add m0 type veth peer name sw0 netns {}",
        switch.name
    ));
    node.ip("link set m0 up");
    switch.ip("link set sw0 up");

    let mut listener = Proc(
        node.command(preflight_bin())
            .args(["debug", "lldp", "--interface", "m0", "--seconds", "11"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start preflight debug lldp"),
    );
    let pid = listener.0.id();
    std::thread::sleep(Duration::from_millis(800));
    let mut sw = Proc(
        switch
            .command("python3")
            .args(["-c", SWITCH, "sw0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the switch (python3)"),
    );
    // Memory and CPU before, during and after the flood.
    std::thread::sleep(Duration::from_millis(1200));
    let rss_before = rss_kib(pid).expect("listener running before the flood");
    let cpu_before = cpu_ticks(pid).expect("listener running");
    let mut rss_max = rss_before;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        let rss = rss_kib(pid).expect("the listener is still running during the flood");
        rss_max = rss_max.max(rss);
        std::thread::sleep(Duration::from_millis(100));
    }
    let cpu_during = cpu_ticks(pid).expect("listener running after the flood") - cpu_before;
    let sw_status = sw.0.wait().expect("switch ends");
    let mut sw_out = String::new();
    sw.0.stdout
        .take()
        .expect("piped")
        .read_to_string(&mut sw_out)
        .expect("switch output");
    let mut sw_err = String::new();
    sw.0.stderr
        .take()
        .expect("piped")
        .read_to_string(&mut sw_err)
        .expect("switch errors");
    assert!(sw_status.success(), "switch: {sw_out}{sw_err}");

    let status = listener.0.wait().expect("listener ends");
    let mut out = String::new();
    listener
        .0
        .stdout
        .take()
        .expect("piped")
        .read_to_string(&mut out)
        .expect("listener output");
    let mut err = String::new();
    listener
        .0
        .stderr
        .take()
        .expect("piped")
        .read_to_string(&mut err)
        .expect("listener errors");
    assert!(
        status.success(),
        "preflight debug lldp: {status}\n{out}\n{err}"
    );
    let v: Value =
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {out}\n{err}"));
    eprintln!(
        "switch: {sw_out}listener: {v}\nRSS {rss_before} KiB before the flood, {rss_max} KiB at most during it; {cpu_during} CPU ticks (1/100 s) over the 5 s of flood"
    );
    // Two chassis IDs are two senders, both kept (until their TTL), each
    // under its own key: the one heard after the flood is among them.
    let neighbors = v["neighbors"].as_array().expect("neighbors");
    assert!(
        neighbors.len() <= 4, // the listener's MAX_PER_MEMBER
        "at most a few neighbours per member: {v}"
    );
    let after = neighbors
        .iter()
        .find(|n| n["chassis_id"] == "after-flood")
        .unwrap_or_else(|| panic!("the switch after the flood is heard: {v}"));
    assert_eq!(after["system_name"], "switch-B", "{v}");
    assert_eq!(after["max_frame_size"], 1522, "{v}");
    assert!(v["malformed"].as_u64().expect("malformed") > 0, "{v}");
    assert!(v["limited"].as_u64().expect("limited") > 0, "{v}");
    assert!(
        rss_max <= rss_before + 1024,
        "RSS grew from {rss_before} KiB to {rss_max} KiB during the flood"
    );
    // A frame budget per second: the flood costs well under a CPU.
    assert!(cpu_during < 250, "{cpu_during} ticks in 5 s");
    assert!(
        sw_out.contains("from_node=0"),
        "preflight sent LLDP frames: {sw_out}"
    );
}

/// Switches that send an LLDPDU (MFS 1518) every 0.5 s for `seconds`, with
/// time to live `ttl`, out of each `DEV:CHASSIS:SYSTEM-NAME:PORT` given.
const SWITCHES: &str = r#"
import socket, struct, sys, time
seconds = float(sys.argv[1])
ttl = int(sys.argv[2])
def tlv(t, v): return struct.pack("!H", (t << 9) | len(v)) + v
out = []
for spec in sys.argv[3:]:
    dev, chassis, name, port = spec.split(":")
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x88cc))
    s.bind((dev, 0x88cc))
    pdu = (tlv(1, b"\x07" + chassis.encode()) + tlv(2, b"\x05" + port.encode())
           + tlv(3, struct.pack("!H", ttl)) + tlv(5, name.encode())
           + tlv(127, b"\x00\x12\x0f\x04" + struct.pack("!H", 1518)) + tlv(0, b""))
    out.append((s, bytes.fromhex("0180c200000e020000000c01") + b"\x88\xcc" + pdu))
end = time.monotonic() + seconds
while time.monotonic() < end:
    for s, f in out:
        s.send(f)
    time.sleep(0.5)
"#;

/// `preflight inspect` on a real Open vSwitch bond (active-backup over two
/// veths; OVS bonds are the ones a host kernel without bonding can hold):
/// it listens on both members and shows each member's switch, and
/// BOND_SINGLE_SWITCH names the one switch both hear; two switches: none.
#[test]
fn inspect_shows_each_members_switch_and_a_single_switch_bond_on_real_ovs() {
    use preflight_tests::ovs::Ovs;
    let ovs = Ovs::start();
    ovs.add_bridge("br-ex");
    ovs.add_bond(
        "br-ex",
        "bond1",
        &["la0", "la1"],
        &[],
        &["bond_mode=active-backup"],
    );
    let run = |specs: &[&str]| {
        let _switches = Proc(
            ovs.peers
                .command("python3")
                .args(["-c", SWITCHES, "8", "120"])
                .args(specs)
                .spawn()
                .expect("start the switches (python3)"),
        );
        let out = ovs
            .ns
            .command(preflight_bin())
            .env("PREFLIGHT_LOG", "warn")
            .args([
                "inspect",
                "--json",
                "--no-path-check",
                "--lldp-wait",
                "5s",
                "--ovsdb",
            ])
            .arg(ovs.socket())
            .output()
            .expect("run inspect");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "inspect --json is not JSON ({e}): {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        let table = ovs
            .ns
            .command(preflight_bin())
            .env("PREFLIGHT_LOG", "warn")
            .args(["inspect", "--no-path-check", "--lldp-wait", "5s", "--ovsdb"])
            .arg(ovs.socket())
            .output()
            .expect("run inspect");
        (v, String::from_utf8_lossy(&table.stdout).into_owned())
    };
    let single = |v: &Value| {
        v["findings"]
            .as_array()
            .expect("findings")
            .iter()
            .find(|f| f["code"] == "BOND_SINGLE_SWITCH")
            .cloned()
    };

    let (v, table) = run(&[
        &format!("{}:sw-a:switch-A:swp1", Ovs::peer("la0")),
        &format!("{}:sw-a:switch-A:swp2", Ovs::peer("la1")),
    ]);
    let heard: Vec<(String, String)> = v["lldp"]
        .as_array()
        .unwrap_or_else(|| panic!("no lldp in {v:#}"))
        .iter()
        .map(|n| {
            (
                n["member"].as_str().unwrap_or_default().to_owned(),
                n["port_id"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        heard,
        [("la0".into(), "swp1".into()), ("la1".into(), "swp2".into())],
        "{v:#}"
    );
    let f = single(&v).unwrap_or_else(|| panic!("no BOND_SINGLE_SWITCH: {v:#}"));
    assert_eq!(f["subject"], "bond1");
    assert_eq!(f["severity"], "warning");
    assert!(
        f["message"]
            .as_str()
            .is_some_and(|m| m.contains("switch-A")),
        "{f}"
    );
    assert!(
        table.contains("switch-A swp1") && table.contains("switch-A swp2"),
        "{table}"
    );

    let (v, table) = run(&[
        &format!("{}:sw-a:switch-A:swp1", Ovs::peer("la0")),
        &format!("{}:sw-b:switch-B:swp1", Ovs::peer("la1")),
    ]);
    assert!(single(&v).is_none(), "two switches: {v:#}");
    assert!(table.contains("switch-B swp1"), "{table}");
}

/// The agent on the same OVS bond: its report and its metrics name each
/// member's switch while the switches send, and a neighbour is gone once
/// the TTL of its last LLDPDU ran out.
#[test]
fn the_agent_reports_each_members_switch_and_forgets_it_after_its_ttl() {
    use preflight_tests::ovs::Ovs;
    let ovs = Ovs::start();
    ovs.add_bridge("br-ex");
    ovs.add_bond(
        "br-ex",
        "bond1",
        &["lb0", "lb1"],
        &[],
        &["bond_mode=active-backup"],
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let port = 21_000 + (std::process::id() % 1000) as u16;
    std::fs::write(
        dir.path().join("agent.toml"),
        format!(
            "[agent]\nnode = \"lldp-node\"\naggregators = [\"http://127.0.0.1:9\"]\nlisten = \"127.0.0.1:{port}\"\novsdb = \"{}\"\nprobe_gateways = false\nmember_path_check = \"off\"\n",
            ovs.socket().display()
        ),
    )
    .expect("agent config");
    let _agent = Proc(
        ovs.ns
            .command(preflight_bin())
            .env("PREFLIGHT_LOG", "warn")
            .args(["agent", "--config"])
            .arg(dir.path().join("agent.toml"))
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn agent"),
    );
    let get = |path: &str| {
        let out = ovs
            .ns
            .command("curl")
            .args(["-s", "--max-time", "2"])
            .arg(format!("http://127.0.0.1:{port}{path}"))
            .output()
            .expect("curl runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let until = |what: &str, secs: u64, pred: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !pred() {
            assert!(
                Instant::now() < deadline,
                "{what}: not within {secs} s: {}",
                get("/metrics")
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    // Time to live 3 s, sent for 6 s.
    let switches = Proc(
        ovs.peers
            .command("python3")
            .args(["-c", SWITCHES, "6", "3"])
            .arg(format!("{}:sw-a:switch-A:swp1", Ovs::peer("lb0")))
            .arg(format!("{}:sw-b:switch-B:swp9", Ovs::peer("lb1")))
            .spawn()
            .expect("start the switches (python3)"),
    );
    let metric = r#"preflight_lldp_neighbor_info{chassis_id="sw-b",member="lb1",port_id="swp9",system_name="switch-B"} 1"#;
    until("the metric names lb1's switch", 10, &|| {
        get("/metrics").contains(metric)
    });
    let report: Value = serde_json::from_str(&get("/v1/report")).expect("report JSON");
    let text = report.to_string();
    assert!(
        text.contains("\"member\":\"lb0\"") && text.contains("\"system_name\":\"switch-A\""),
        "{report:#}"
    );
    drop(switches);
    // The last LLDPDU's 3 s run out: the neighbours go.
    let stopped = Instant::now();
    until("the neighbours expire", 10, &|| {
        !get("/metrics").contains("preflight_lldp_neighbor_info{")
    });
    eprintln!(
        "neighbours gone {:?} after the switches stopped",
        stopped.elapsed()
    );
}

/// Guest half of the datapath-member test: `m0` is a port of a bridge
/// whose rx_handler takes every LLDP frame (group_fwd_mask bit 14), as the
/// OVS kernel datapath's `netdev_frame_hook` takes every frame of its
/// ports; `m1` is a plain interface beside it. lldpd in namespace `sw`
/// speaks on the far end of both. Prints each listener's JSON.
const DATAPATH_GUEST: &str = r#"#!/bin/sh
export PATH=/bin:/sbin:/usr/sbin
IP=/sbin/ip
kv=$(uname -r)
for m in llc stp bridge; do insmod "/lib/modules/$kv/$m.ko" || echo "insmod $m failed"; done
$IP netns add sw || exit 1
for i in 0 1; do $IP link add m$i type veth peer name p$i && $IP link set p$i netns sw || exit 1; done
$IP link add dp0 type bridge group_fwd_mask 0x4000 || exit 1
$IP link set m0 master dp0 || exit 1
for l in m0 m1 dp0; do $IP link set $l up; done
$IP -n sw link set lo up; $IP -n sw link set p0 up; $IP -n sw link set p1 up
$IP netns exec sw sh -c "mount -t tmpfs t /run && mkdir -p /run/lldpd && exec lldpd -L /opt/lldpcli -d -u /tmp/sw.sock -I p0,p1 -S switch-dp" >/tmp/lldpd.log 2>&1 &
i=0
while [ ! -S /tmp/sw.sock ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
lldpcli -u /tmp/sw.sock configure lldp tx-interval 1 >/dev/null
lldpcli -u /tmp/sw.sock configure system hostname switch-dp >/dev/null
preflight debug lldp --interface m0 --seconds 6 >/tmp/m0.json 2>/tmp/m0.err &
l0=$!
preflight debug lldp --interface m1 --seconds 6 >/tmp/m1.json 2>/tmp/m1.err &
l1=$!
sleep 0.5
lldpcli -u /tmp/sw.sock resume >/dev/null
wait $l0 $l1
echo "@@m0 $(cat /tmp/m0.json)"
echo "@@m1 $(cat /tmp/m1.json)"
cat /tmp/m0.err /tmp/m1.err | head -n 20
"#;

/// Issue 33 review item 1: a member whose frames a datapath's rx_handler
/// takes (OVS's kernel datapath; here a bridge told to forward LLDP, the
/// same hook, as the OVS kernel module and ovs-vswitchd are not in the
/// test VM) is heard all the same: only taps (`ETH_P_ALL`) see its frames
/// before the handler takes them. Inside a VM (bridges only there).
#[test]
fn the_listener_hears_a_member_whose_frames_a_datapath_takes() {
    use preflight_tests::vm::{Vm, VmSpec};
    preflight_tests::require_root("the LLDP datapath VM test");
    let script = preflight_tests::workspace().join("tests/vm/rig-prepare.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .output()
        .expect("run tests/vm/rig-prepare.sh");
    assert!(
        out.status.success(),
        "tests/vm/rig-prepare.sh failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let overlay = std::path::PathBuf::from(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .expect("rig-prepare.sh prints the overlay dir")
            .trim(),
    );
    let mut vm = Vm::boot(&VmSpec {
        nics: 1,
        memory_mib: 1024,
        overlay: Some(overlay),
        files: vec![("/dp.sh".to_owned(), DATAPATH_GUEST.as_bytes().to_vec())],
        ..VmSpec::default()
    });
    let out = vm.run("sh /dp.sh", Duration::from_secs(120));
    vm.shutdown();
    let heard = |member: &str| -> Value {
        let line = out
            .output
            .lines()
            .find_map(|l| l.strip_prefix(&format!("@@{member} ")))
            .unwrap_or_else(|| panic!("no output for {member}:\n{}", out.output));
        serde_json::from_str(line.trim())
            .unwrap_or_else(|e| panic!("{member}: not JSON ({e}): {}", out.output))
    };
    let (m0, m1) = (heard("m0"), heard("m1"));
    eprintln!("m0: {m0}\nm1: {m1}");
    // The switch speaks: the plain interface hears it.
    assert_eq!(
        m1["neighbors"][0]["system_name"], "switch-dp",
        "{}",
        out.output
    );
    assert_eq!(
        m0["neighbors"][0]["system_name"], "switch-dp",
        "the datapath member heard nothing: {}",
        out.output
    );
}
