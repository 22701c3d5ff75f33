//! Issue 33 on a rig built like a rack, in a real kernel: two switch
//! namespaces with VLAN-aware bridges, a gateway per VLAN, lldpd speaking
//! for each switch, and the node's active-backup bond with one member cabled
//! to each switch (tests/vm/rig-guest.sh draws it). One VM boot runs every
//! scenario from one guest script; this side asserts on what it printed.
//!
//! Every failed assertion is collected and reported together, so one run
//! shows all that is missing. Set PREFLIGHT_UPDATE_FIXTURES=1 to rewrite the
//! LLDP frames under tests/fixtures/lldp/ from this rig's lldpd, and
//! PREFLIGHT_RIG_REMOVALS=N to measure the agent's latency over N removals
//! of VLAN 200 (about 30 s each, after the test's own scenarios).

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use preflight_tests::vm::{fixture, Vm, VmSpec};
use serde_json::Value;

/// What the guest script printed for one scenario.
#[derive(Default, Debug)]
struct Scenario {
    keys: BTreeMap<String, Vec<String>>,
    json: BTreeMap<String, Value>,
    text: BTreeMap<String, String>,
}

impl Scenario {
    fn key(&self, k: &str) -> &str {
        self.keys
            .get(k)
            .and_then(|v| v.last())
            .map_or("<missing>", String::as_str)
    }
    fn all(&self, k: &str) -> &[String] {
        self.keys.get(k).map_or(&[], Vec::as_slice)
    }
}

/// Parses the guest's `@@` lines into scenarios, and `@@PCAP` blobs.
fn parse(out: &str, into: &mut BTreeMap<String, Scenario>, pcaps: &mut Vec<(String, Vec<u8>)>) {
    let mut block: Option<(bool, String, String, Vec<&str>)> = None;
    for line in out.lines() {
        if let Some((is_json, s, label, lines)) = &mut block {
            let end = if *is_json {
                "@@JSON-END "
            } else {
                "@@TEXT-END "
            };
            if line.starts_with(end) {
                let body = lines.join("\n");
                let sc = into.entry(s.clone()).or_default();
                if *is_json {
                    let v = serde_json::from_str(&body)
                        .unwrap_or_else(|e| Value::String(format!("<not JSON ({e})>: {body}")));
                    sc.json.insert(label.clone(), v);
                } else {
                    sc.text.insert(label.clone(), body);
                }
                block = None;
            } else {
                lines.push(line);
            }
            continue;
        }
        let mut w = line.splitn(4, ' ');
        match w.next() {
            Some("@@K") => {
                let (s, k) = (w.next().unwrap_or(""), w.next().unwrap_or(""));
                into.entry(s.to_owned())
                    .or_default()
                    .keys
                    .entry(k.to_owned())
                    .or_default()
                    .push(w.next().unwrap_or("").to_owned());
            }
            Some(m @ ("@@JSON-BEGIN" | "@@TEXT-BEGIN")) => {
                let (s, l) = (w.next().unwrap_or(""), w.next().unwrap_or(""));
                block = Some((m == "@@JSON-BEGIN", s.to_owned(), l.to_owned(), Vec::new()));
            }
            Some("@@PCAP") => {
                let name = w.next().unwrap_or("").to_owned();
                pcaps.push((name, base64_decode(w.next().unwrap_or(""))));
            }
            _ => {}
        }
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => continue,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((acc >> bits) & 0xff).expect("byte"));
        }
    }
    out
}

/// The frames of a classic little-endian pcap file (tcpdump -w).
fn pcap_frames(p: &[u8]) -> Vec<Vec<u8>> {
    assert!(
        p.len() >= 24 && p[..4] == [0xd4, 0xc3, 0xb2, 0xa1],
        "not a pcap file ({} bytes)",
        p.len()
    );
    let mut frames = Vec::new();
    let mut at = 24;
    while at + 16 <= p.len() {
        let len = u32::from_le_bytes(p[at + 8..at + 12].try_into().expect("4 bytes")) as usize;
        assert!(len <= 65_535 && at + 16 + len <= p.len(), "bad pcap record");
        frames.push(p[at + 16..at + 16 + len].to_vec());
        at += 16 + len;
    }
    frames
}

/// The body of the first TLV of an LLDPDU that `want` accepts (by type and
/// body), walking the TLVs.
fn lldp_tlv(frame: &[u8], want: impl Fn(u16, &[u8]) -> bool) -> Option<&[u8]> {
    let mut at = 14;
    while at + 2 <= frame.len() {
        let h = u16::from_be_bytes([frame[at], frame[at + 1]]);
        let (ty, len) = (h >> 9, usize::from(h & 0x1ff));
        let body = frame.get(at + 2..at + 2 + len)?;
        if ty == 0 {
            return None;
        }
        if want(ty, body) {
            return Some(body);
        }
        at += 2 + len;
    }
    None
}

/// The System Name TLV (type 5).
fn lldp_system_name(frame: &[u8]) -> Option<String> {
    lldp_tlv(frame, |t, _| t == 5).map(|b| String::from_utf8_lossy(b).into_owned())
}

/// The 802.3 Maximum Frame Size TLV (type 127, OUI 00-12-0F, subtype 4).
fn lldp_mfs(frame: &[u8]) -> Option<u16> {
    lldp_tlv(frame, |t, b| {
        t == 127 && b.len() == 6 && b[..4] == [0x00, 0x12, 0x0f, 4]
    })
    .map(|b| u16::from_be_bytes([b[4], b[5]]))
}

fn findings(v: &Value) -> &[Value] {
    v["findings"].as_array().map_or(&[], Vec::as_slice)
}

/// A finding with `code` about `member` (a `/member` part of its subject,
/// any member when empty) whose subject or message contains every needle.
fn finding<'a>(v: &'a Value, code: &str, member: &str, needles: &[&str]) -> Option<&'a Value> {
    findings(v).iter().find(|f| {
        let subject = f["subject"].as_str().unwrap_or("");
        let text = format!("{subject} {}", f["message"].as_str().unwrap_or(""));
        f["code"] == code
            && (member.is_empty() || subject.split('/').any(|p| p == member))
            && needles.iter().all(|n| text.contains(n))
    })
}

fn codes(v: &Value) -> Vec<String> {
    findings(v)
        .iter()
        .map(|f| {
            format!(
                "{} {} {} ({})",
                f["severity"].as_str().unwrap_or("?"),
                f["code"].as_str().unwrap_or("?"),
                f["subject"].as_str().unwrap_or("?"),
                f["message"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

/// The system names the inspect JSON shows for `member`: every object whose
/// `member` or `name` is that member, searched for `switch-*` strings
/// (wherever the LLDP helper puts the neighbour: a port row or a list).
fn member_switches(v: &Value, member: &str) -> Vec<String> {
    fn strings(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) if s.starts_with("switch-") => out.push(s.clone()),
            Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
            Value::Object(o) => o.values().for_each(|x| strings(x, out)),
            _ => {}
        }
    }
    fn walk(v: &Value, member: &str, out: &mut Vec<String>) {
        match v {
            Value::Object(o) => {
                if o.get("member").or_else(|| o.get("name")) == Some(&Value::from(member)) {
                    strings(v, out);
                }
                o.values().for_each(|x| walk(x, member, out));
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, member, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(v, member, &mut out);
    out.sort();
    out.dedup();
    out
}

/// `3000 packets transmitted, 3000 packets received, 0% packet loss`.
fn ping_counts(line: &str) -> Option<(u64, u64)> {
    let n: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    Some((*n.first()?, *n.get(1)?))
}

struct Checks(Vec<String>);

impl Checks {
    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.0.push(what());
        }
    }
}

fn rig_overlay() -> std::path::PathBuf {
    preflight_tests::require_root("the two-switch VM rig");
    let script = preflight_tests::workspace().join("tests/vm/rig-prepare.sh");
    let out = Command::new("bash")
        .arg(&script)
        .output()
        .expect("run tests/vm/rig-prepare.sh");
    assert!(
        out.status.success(),
        "tests/vm/rig-prepare.sh failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::path::PathBuf::from(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .expect("rig-prepare.sh prints the overlay dir")
            .trim(),
    )
}

/// Writes the captured LLDPDUs as fixtures, one frame a file, when
/// PREFLIGHT_UPDATE_FIXTURES is set.
fn write_fixtures(pcaps: &[(String, Vec<u8>)]) {
    if std::env::var_os("PREFLIGHT_UPDATE_FIXTURES").is_none() {
        return;
    }
    let dir = fixture("lldp");
    std::fs::create_dir_all(&dir).expect("mkdir fixtures/lldp");
    for (name, p) in pcaps {
        for (i, f) in pcap_frames(p).into_iter().enumerate() {
            std::fs::write(dir.join(format!("{name}-{i}.bin")), f).expect("write fixture");
        }
    }
}

#[test]
fn two_switch_rig() {
    let overlay = rig_overlay();
    let mut vm = Vm::boot(&VmSpec {
        nics: 1,
        memory_mib: 1024,
        overlay: Some(overlay),
        files: vec![(
            "/rig.sh".to_owned(),
            include_bytes!("../vm/rig-guest.sh").to_vec(),
        )],
        ..VmSpec::default()
    });
    let mut sc = BTreeMap::new();
    let mut pcaps = Vec::new();
    let run = |vm: &mut Vm, step: &str, limit: u64| {
        let out = vm.run(&format!("sh /rig.sh {step}"), Duration::from_secs(limit));
        assert!(
            out.output.contains(&format!("@@DONE {step}")),
            "rig.sh {step} did not finish (exit {}):\n{}",
            out.status,
            out.output
        );
        eprintln!("rig.sh {step}:\n{}", out.output);
        out.output
    };

    // The rig itself: a broken rig proves nothing, so these stop the test.
    let out = run(&mut vm, "setup", 120);
    parse(&out, &mut sc, &mut pcaps);
    let setup = &sc["setup"];
    assert!(
        setup.all("insmod_failed").is_empty()
            && setup.all("mfs_failed").is_empty()
            && setup.key("ping100") == "ok"
            && setup.key("ping200") == "ok"
            && setup.key("active") == "mA",
        "the rig does not work:\n{out}"
    );

    // LLDP frames first, so that the decoder has real ones to test against.
    let out = run(&mut vm, "fixtures", 60);
    parse(&out, &mut sc, &mut pcaps);
    let mut frames = Vec::new();
    for (name, p) in &pcaps {
        for (i, f) in pcap_frames(p).into_iter().enumerate() {
            frames.push((format!("{name}-{i}"), f));
        }
    }
    let names: Vec<_> = frames
        .iter()
        .map(|(n, f)| (n.clone(), lldp_system_name(f)))
        .collect();
    for (n, f) in &frames {
        assert!(
            f.len() >= 14 && f[..6] == [0x01, 0x80, 0xc2, 0, 0, 0x0e] && f[12..14] == [0x88, 0xcc],
            "{n} is not an LLDPDU to the nearest-bridge address"
        );
    }
    assert!(
        names
            .iter()
            .any(|(n, s)| n.starts_with("mA-") && s.as_deref() == Some("switch-A"))
            && names
                .iter()
                .any(|(n, s)| n.starts_with("mB-") && s.as_deref() == Some("switch-B")),
        "lldpd's frames on the members do not name their switches: {names:?}\n{out}"
    );

    for (n, f) in &frames {
        assert_eq!(
            lldp_mfs(f),
            Some(1522),
            "{n}: the rig advertises MFS 1522\n{out}"
        );
    }
    write_fixtures(&pcaps);

    let out = run(&mut vm, "scenarios", 420);
    parse(&out, &mut sc, &mut pcaps);
    // A measurement, not part of the test: PREFLIGHT_RIG_REMOVALS=20 repeats
    // the agent scenario (removal -> finding -> re-add -> cleared) 20 times.
    let removals: Option<u64> = std::env::var("PREFLIGHT_RIG_REMOVALS")
        .ok()
        .map(|n| n.parse().expect("PREFLIGHT_RIG_REMOVALS is a count"));
    if let Some(n) = removals {
        let out = vm.run(
            &format!("RIG_REMOVALS={n} sh /rig.sh agent"),
            Duration::from_secs(70 * n + 60),
        );
        eprintln!("rig.sh agent x{n}:\n{}", out.output);
        let mut m = BTreeMap::new();
        parse(&out.output, &mut m, &mut Vec::new());
        for k in ["appear_cs", "clear_cs"] {
            let mut v: Vec<u64> = m
                .get("agent")
                .map(|s| s.all(k).iter().filter_map(|x| x.parse().ok()).collect())
                .unwrap_or_default();
            v.sort_unstable();
            if let (Some(min), Some(max)) = (v.first(), v.last()) {
                let p99 = v[(v.len() * 99).div_ceil(100).saturating_sub(1)];
                eprintln!(
                    "vm_rig measure {k}: n={} min {min} median {} p99 {p99} max {max} (centiseconds)",
                    v.len(),
                    v[v.len() / 2]
                );
            }
        }
    }
    vm.shutdown();
    write_fixtures(&pcaps);
    let mtu_frames: Vec<_> = pcaps
        .iter()
        .filter(|(n, _)| n == "mA-mtu1400")
        .flat_map(|(_, p)| pcap_frames(p))
        .collect();
    assert!(
        !mtu_frames.is_empty() && mtu_frames.iter().all(|f| lldp_mfs(f) == Some(1422)),
        "the rig did not advertise MFS 1422 on pA after its MTU went to 1400"
    );
    let mut c = Checks(Vec::new());
    let none = Value::Null;
    let json = |s: &str, l: &str| sc.get(s).and_then(|x| x.json.get(l)).unwrap_or(&none);
    let key = |s: &str, k: &str| sc.get(s).map_or("<no scenario>", |x| x.key(k)).to_owned();

    for (name, s) in &sc {
        c.check(s.all("lldp_wait_failed").is_empty(), || {
            format!(
                "{name}: the rig's lldpd did not advertise the change: {:?}",
                s.all("lldp_wait_failed")
            )
        });
    }

    // 1. VLAN 200 missing on the backup member's switch port: no-go naming
    //    mB and VLAN 200; mA reaches everything.
    let v = json("vlan200_missing", "json");
    c.check(key("vlan200_missing", "json.exit") == "1", || {
        format!(
            "vlan200_missing: inspect exit {} (want 1, no-go); findings: {:#?}",
            key("vlan200_missing", "json.exit"),
            codes(v)
        )
    });
    c.check(
        finding(v, "BOND_PORT_NO_PATH", "mB", &["200"]).is_some(),
        || {
            format!(
                "vlan200_missing: no BOND_PORT_NO_PATH naming mB and VLAN 200; findings: {:#?}",
                codes(v)
            )
        },
    );
    c.check(finding(v, "BOND_PORT_NO_PATH", "mA", &[]).is_none(), || {
        format!(
            "vlan200_missing: mA reaches both VLANs, yet: {:#?}",
            codes(v)
        )
    });
    let text = sc
        .get("vlan200_missing")
        .and_then(|s| s.text.get("text"))
        .cloned()
        .unwrap_or_default();
    c.check(
        text.lines()
            .any(|l| l.contains("BOND_PORT_NO_PATH") && l.contains("mB"))
            && text.contains("200"),
        || format!("vlan200_missing: the text output does not name mB and VLAN 200:\n{text}"),
    );
    let np = json("vlan200_missing", "no_path_check");
    c.check(
        ["0", "1"].contains(&key("vlan200_missing", "no_path_check.exit").as_str())
            && finding(np, "BOND_PORT_NO_PATH", "", &[]).is_none(),
        || {
            format!(
                "vlan200_missing: `inspect --no-path-check` exit {}, still a path finding: {:#?}",
                key("vlan200_missing", "no_path_check.exit"),
                codes(np)
            )
        },
    );
    let cs = |k: &str| key("vlan200_missing", k).parse::<i64>().unwrap_or(i64::MAX);
    // ≤ 2 s added by the check (issue 33), + 0.5 s for TCG's jitter.
    c.check(cs("json.cs") - cs("no_path_check.cs") <= 250, || {
        format!(
            "vlan200_missing: the path check added {} cs to inspect (bound 200 + 50)",
            cs("json.cs").saturating_sub(cs("no_path_check.cs"))
        )
    });

    // 2. VLAN 200 allowed: go; each member's switch shown.
    let v = json("vlan200_allowed", "json");
    c.check(
        key("vlan200_allowed", "json.exit") == "0"
            && finding(v, "BOND_PORT_NO_PATH", "", &[]).is_none(),
        || {
            format!(
                "vlan200_allowed: inspect exit {} (want 0, go); findings: {:#?}",
                key("vlan200_allowed", "json.exit"),
                codes(v)
            )
        },
    );
    for k in ["full100", "full200"] {
        c.check(key("vlan200_allowed", k) == "ok", || {
            format!("vlan200_allowed: full-size ping {k}: {} (the rig's ports carry 1500-byte tagged packets)", key("vlan200_allowed", k))
        });
    }
    for (m, s) in [("mA", "switch-A"), ("mB", "switch-B")] {
        c.check(member_switches(v, m) == [s], || {
            format!(
                "vlan200_allowed: inspect JSON shows {m}'s switch as {:?}, want [{s}]",
                member_switches(v, m)
            )
        });
    }

    // 3. Both members on switch A: BOND_SINGLE_SWITCH naming switch-A.
    let v = json("single_switch", "json");
    c.check(
        finding(v, "BOND_SINGLE_SWITCH", "", &["switch-A"]).is_some(),
        || {
            format!(
                "single_switch: no BOND_SINGLE_SWITCH naming switch-A; findings: {:#?}",
                codes(v)
            )
        },
    );
    for m in ["mA", "mB"] {
        c.check(member_switches(v, m) == ["switch-A"], || {
            format!(
                "single_switch: inspect JSON shows {m}'s switch as {:?}, want [switch-A]",
                member_switches(v, m)
            )
        });
    }

    // 4. Switch port MTU 1400 under the node's 1500.
    let v = json("mtu", "json");
    c.check(
        finding(v, "MTU_EXCEEDS_SWITCH", "mA", &[]).is_some(),
        || {
            format!(
                "mtu: no MTU_EXCEEDS_SWITCH naming mA; findings: {:#?}",
                codes(v)
            )
        },
    );

    c.check(
        key("mtu", "full100") == "fail" && key("mtu", "small100") == "ok",
        || {
            format!(
                "mtu: with pA at MTU 1400, full-size ping {} (want fail), small {} (want ok)",
                key("mtu", "full100"),
                key("mtu", "small100")
            )
        },
    );

    // 5. No disturbance during 100 rounds of member checks.
    let d = |k: &str| key("no_disturbance", k);
    for k in [
        "fdb_moves",
        "neigh_changes",
        "active_changes",
        "findings_raised",
    ] {
        c.check(d(k) == "0", || {
            format!(
                "no_disturbance: {k} = {} (want 0); details: {:?} {:?} {:?} {:?}",
                d(k),
                sc.get("no_disturbance").map(|s| s.all("move")),
                sc.get("no_disturbance").map(|s| s.all("neigh")),
                sc.get("no_disturbance").map(|s| s.all("active_changed")),
                sc.get("no_disturbance").map(|s| s.all("last_round")),
            )
        });
    }
    for k in ["flood100", "flood200"] {
        // Interrupting ping may leave the last request in flight: ≤ 1.
        let counts = ping_counts(&d(k));
        c.check(
            counts.is_some_and(|(tx, rx)| tx >= 100 && tx - rx <= 1),
            || format!("no_disturbance: ping flood {k} lost packets: {}", d(k)),
        );
    }
    c.check(d("rounds") == "100", || {
        format!("no_disturbance: {} rounds, want 100", d("rounds"))
    });
    c.check(d("permB_on_pB").parse::<u64>().is_ok_and(|n| n > 0), || {
        format!(
            "no_disturbance: switch B never saw mB's own address on pB ({}): the member checks did not go out through mB with its permanent MAC",
            d("permB_on_pB")
        )
    });

    // 6. A backup member whose far end carries nothing.
    let v = json("far_end_nothing", "json");
    for vlan in ["100", "200"] {
        c.check(
            finding(v, "BOND_PORT_NO_PATH", "mB", &[vlan]).is_some(),
            || {
                format!(
                "far_end_nothing: no BOND_PORT_NO_PATH naming mB and VLAN {vlan}; findings: {:#?}",
                codes(v)
            )
            },
        );
    }

    // 7. The finding was right: after the active member's cable is pulled,
    //    VLAN 200 is gone and VLAN 100 works.
    let v = json("failover_reveals", "json");
    c.check(finding(v, "BOND_PORT_NO_PATH", "mB", &["200"]).is_some(), || {
        format!(
            "failover_reveals: no BOND_PORT_NO_PATH naming mB and VLAN 200 before the pull; findings: {:#?}",
            codes(v)
        )
    });
    let f = |k: &str| key("failover_reveals", k);
    let fa = sc
        .get("failover_reveals")
        .map(|s| s.all("active").to_vec())
        .unwrap_or_default();
    c.check(
        fa.first().map(String::as_str) == Some("mB") && f("ping100") == "ok" && f("ping200") == "fail",
        || {
            format!(
                "failover_reveals: after the pull: active {fa:?} (want mB first), VLAN 100 {} (want ok), VLAN 200 {} (want fail)",
                f("ping100"),
                f("ping200")
            )
        },
    );

    // 8. The agent's pipeline (inspect --watch): VLAN 200 removed on mB's
    //    port -> the finding within one interval + timeout (10 s + 3 x 0.6 s
    //    at defaults; the goal: <= 15 s); re-added -> cleared.
    let a = |k: &str| key("agent", k);
    c.check(
        a("appear_cs").parse::<u64>().is_ok_and(|cs| cs <= 1500),
        || {
            format!(
                "agent: BOND_PORT_NO_PATH for mB appeared after {} cs (bound 1500); watch lines {:?} stderr {:?}",
                a("appear_cs"),
                sc.get("agent").map(|s| s.all("line")),
                sc.get("agent").map(|s| s.all("stderr"))
            )
        },
    );
    c.check(
        a("clear_cs").parse::<u64>().is_ok_and(|cs| cs < 3000),
        || {
            format!(
                "agent: the finding did not clear within 30 s of VLAN 200's return ({} cs)",
                a("clear_cs")
            )
        },
    );

    let mu = json("mfs_untagged", "json");
    eprintln!(
        "vm_rig figures: inspect --lldp-wait 0s {} cs without the path check, {} cs with it (all paths up); inspect {} cs with the path check, {} cs without (VLAN 200 missing, LLDP wait 2 s); {} rounds of member checks (inspect --watch, member_path_check 1s) in {} cs; agent: finding after {} cs, cleared after {} cs; a switch advertising MFS 1518 for MTU 1500 (full-size ping {}): {:?}",
        d("plain_cs"),
        d("path_cs"),
        key("vlan200_missing", "json.cs"),
        key("vlan200_missing", "no_path_check.cs"),
        d("rounds"),
        d("rounds_cs"),
        a("appear_cs"),
        a("clear_cs"),
        key("mfs_untagged", "full100"),
        codes(mu)
    );
    assert!(
        c.0.is_empty(),
        "{} of the rig's assertions failed:\n- {}",
        c.0.len(),
        c.0.join("\n- ")
    );
}
