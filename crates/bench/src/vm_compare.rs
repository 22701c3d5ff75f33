//! Detection latency, cable pull -> "do not update", preflight versus what
//! operators run today, in one VM boot, side by side:
//!
//! - preflight: the agent in the guest pushes to an aggregator on the host
//!   (through qemu's guestfwd); the bench polls the gate until it is no-go
//!   with BOND_PORT_DOWN.
//! - node_exporter (bonding collector) in the same guest, scraped by a
//!   Prometheus on the host (through hostfwd) with the rule
//!   `node_bonding_active < node_bonding_slaves`; the bench polls the
//!   Prometheus alerts API until the alert fires.
//!
//! Several bonds (`--bonds`, each two NICs) are pulled concurrently, each at
//! its own random phase, so that 30 pulls at a 15 s interval fit in minutes.
//! Both clocks start when the monitor command is sent. Traffic stays on the
//! host's loopback and inside the VM.
//!
//! Where preflight's time goes is printed per boot from two sources. On the
//! host's clock, the relay that carries the agent's reports notes when a
//! report naming the pulled port arrived and when the aggregator answered
//! it, so a pull splits into guest + qemu network (monitor command ->
//! report at the relay), aggregator (-> its answer) and the gate poll.
//! On the guest's clock, the agent's debug lines (netlink watch, monitor,
//! pusher) give carrier loss seen -> state evaluated -> report answered,
//! which the host's load affects least.

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use preflight_client::HttpClient as Client;
use preflight_tests::vm::{Vm, VmSpec};

use trace::{guest_stages, print_guest_stages, print_host_stages, RelayLog, AGENT_LOG};

mod trace;

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

fn prometheus(dir: &std::path::Path, interval: u64, target: u16) -> (Kill, u16) {
    let port = free_port();
    let timeout_ms = (interval * 1000).saturating_sub(100).min(10_000);
    std::fs::write(
        dir.join("rules.yml"),
        "groups:\n  - name: bonding\n    rules:\n      - alert: BondDegraded\n        expr: node_bonding_active < node_bonding_slaves\n",
    )
    .expect("rules");
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: {interval}s\n  evaluation_interval: {interval}s\n  scrape_timeout: {timeout_ms}ms\nrule_files: [\"{}\"]\nscrape_configs:\n  - job_name: node\n    static_configs:\n      - targets: [\"127.0.0.1:{target}\"]\n",
            dir.join("rules.yml").display()
        ),
    )
    .expect("config");
    let _ = std::fs::remove_dir_all(dir.join(format!("tsdb-{interval}")));
    let child = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join(format!("tsdb-{interval}")).display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn prometheus (apt-get install prometheus)");
    (Kill(child), port)
}

async fn get_json(client: &Client, url: &str) -> Option<serde_json::Value> {
    let (_, body) = client.get(url).await.ok()?;
    serde_json::from_slice(&body).ok()
}

/// Whether the gate names `subject` (`bond1/eth3`) as BOND_PORT_DOWN.
async fn gate_blocked(client: &Client, agg: u16, subject: &str) -> Option<bool> {
    let v = get_json(client, &format!("http://127.0.0.1:{agg}/v1/gate")).await?;
    Some(
        v["blockers"]
            .as_array()?
            .iter()
            .any(|b| b["code"] == "BOND_PORT_DOWN" && b["subject"] == subject),
    )
}

/// Whether Prometheus fires BondDegraded for `master`.
async fn alert_firing(client: &Client, prom: u16, master: &str) -> Option<bool> {
    let v = get_json(client, &format!("http://127.0.0.1:{prom}/api/v1/alerts")).await?;
    Some(v["data"]["alerts"].as_array()?.iter().any(|a| {
        a["labels"]["alertname"] == "BondDegraded"
            && a["labels"]["master"] == master
            && a["state"] == "firing"
    }))
}

/// Whether Prometheus has scraped node_exporter's figures for `bonds` bonds.
async fn node_up(client: &Client, prom: u16, bonds: usize) -> bool {
    let url = format!("http://127.0.0.1:{prom}/api/v1/query?query=node_bonding_slaves");
    get_json(client, &url).await.is_some_and(|v| {
        v["data"]["result"]
            .as_array()
            .is_some_and(|r| r.len() == bonds)
    })
}

/// How often the bench asks the gate while it waits for a no-go: the
/// figure includes up to this much polling delay.
const GATE_POLL: Duration = Duration::from_millis(2);

/// One pull: preflight ms, Prometheus ms, when the monitor command was sent.
type Pull = (f64, f64, Instant);

/// One bond's series of pulls of its second port (the backup: traffic
/// keeps flowing through the first), each at a random phase of the
/// Prometheus cycle; returns each [`Pull`].
async fn pull_series(
    vm: &Vm,
    client: &Client,
    (agg, prom): (u16, u16),
    bond: usize,
    interval: u64,
    pulls: usize,
) -> Vec<Pull> {
    let master = format!("bond{bond}");
    let nic = 2 * bond + 1;
    let subject = format!("{master}/eth{nic}");
    let mut seed = 0x9E37_79B9_7F4A_7C15u64 ^ (interval << 8) ^ (bond as u64 + 1);
    let mut out = Vec::new();
    for i in 0..pulls {
        // Clean start: both say this bond is healthy.
        let deadline = Instant::now() + Duration::from_secs(120 + 4 * interval);
        while !(gate_blocked(client, agg, &subject).await == Some(false)
            && alert_firing(client, prom, &master).await == Some(false))
        {
            assert!(
                Instant::now() < deadline,
                "{master} did not return to healthy"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // A random phase: a pull right after the alert cleared would always
        // land just after an evaluation and measure the worst case.
        let phase = Duration::from_millis(rand_below(&mut seed, interval * 1000));
        tokio::time::sleep(phase).await;
        let t0 = Instant::now();
        vm.set_link(nic, false);
        // Two independent pollers, so that a slow Prometheus query never
        // delays noticing the gate's answer (and the other way round).
        let limit = Instant::now() + Duration::from_secs(30 + 4 * interval);
        let (a, b) = tokio::join!(
            async {
                while Instant::now() < limit {
                    if gate_blocked(client, agg, &subject).await == Some(true) {
                        return Some(t0.elapsed().as_secs_f64() * 1000.0);
                    }
                    tokio::time::sleep(GATE_POLL).await;
                }
                None
            },
            async {
                while Instant::now() < limit {
                    if alert_firing(client, prom, &master).await == Some(true) {
                        return Some(t0.elapsed().as_secs_f64() * 1000.0);
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                None
            }
        );
        let (a, b) = (
            a.unwrap_or_else(|| panic!("preflight never said no-go for {subject}")),
            b.unwrap_or_else(|| panic!("prometheus never fired for {master}")),
        );
        eprintln!(
            "  interval {interval}s {master} pull {}: preflight {a:.0} ms, prometheus {b:.0} ms",
            i + 1
        );
        out.push((a, b, t0));
        vm.set_link(nic, true);
    }
    out
}

/// Interval seconds, preflight ms and Prometheus ms per pull.
pub type Series = (u64, Vec<f64>, Vec<f64>);

/// One VM boot: for each `(interval seconds, pulls)` of `plan`, a Prometheus
/// at that interval and `pulls` cable pulls spread over `bonds` bonds pulled
/// concurrently (each at its own random phase); returns per interval the
/// (preflight ms, prometheus ms) samples.
pub fn run(preflight: &str, plan: &[(u64, usize)], bonds: usize) -> Vec<Series> {
    let bonds = bonds.max(1);
    std::env::set_var("PREFLIGHT_BIN", preflight);
    let ne = which("prometheus-node-exporter");
    let dir = std::env::temp_dir().join(format!("pf-cmp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let agg_port = free_port();
    std::fs::write(
        dir.join("agg.toml"),
        format!("[aggregator]\nlisten = \"127.0.0.1:{agg_port}\"\ndatabase = \"{}\"\nauth = \"none\"\nsettle = \"0s\"\nttl = \"30s\"\n", dir.join("cmp.db").display()),
    )
    .expect("agg config");
    let _ = std::fs::remove_file(dir.join("cmp.db"));
    let _agg = Kill(
        Command::new(preflight)
            .args(["aggregator", "-c"])
            .arg(dir.join("agg.toml"))
            .env("PREFLIGHT_LOG", "error")
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn aggregator"),
    );
    // qemu connects the guestfwd to the aggregator once, when it starts:
    // on a loaded machine the aggregator may not be listening yet.
    let up = block_on(async {
        let client = Client::new(Duration::from_secs(2));
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if get_json(&client, &format!("http://127.0.0.1:{agg_port}/healthz"))
                .await
                .is_some()
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    });
    assert!(up, "the aggregator on port {agg_port} never answered");
    let relay_log = RelayLog::default();
    let relay_port = relay(agg_port, relay_log.clone());
    let mut vm = Vm::boot(&VmSpec {
        nics: 2 * bonds,
        guestfwd_port: Some(relay_port),
        extra_bins: vec![ne],
        ..VmSpec::default()
    });
    for b in 0..bonds {
        let (p, q) = (2 * b, 2 * b + 1);
        vm.sh(&format!("/sbin/ip link add bond{b} type bond mode active-backup miimon 100 && /sbin/ip link set eth{p} down && /sbin/ip link set eth{q} down && /sbin/ip link set eth{p} master bond{b} && /sbin/ip link set eth{q} master bond{b} && /sbin/ip link set eth{p} up && /sbin/ip link set eth{q} up && /sbin/ip link set bond{b} up"));
    }
    vm.sh("/sbin/ip addr add 10.0.2.15/24 dev bond0 && sleep 1");
    // Each NIC is its own qemu user network, and only eth0's has the relay
    // at 10.0.2.100: a member path check would rightly find that bond0's
    // backup reaches nothing (BOND_PORT_NO_PATH) and hold the node no-go.
    // This bench measures a cable pull, so the check is off.
    vm.sh(&format!(
        "printf '[agent]\\nnode = \"vm\"\\naggregators = [\"http://10.0.2.100:{relay_port}\"]\\nheartbeat = \"2s\"\\nlisten = \"0.0.0.0:9101\"\\nprobe_gateways = false\\nmember_path_check = \"off\"\\n' > /tmp/agent.toml"
    ));
    vm.sh(&format!("NO_COLOR=1 PREFLIGHT_LOG={AGENT_LOG} preflight agent -c /tmp/agent.toml > /tmp/agent.log 2>&1 &"));
    vm.sh("prometheus-node-exporter --collector.disable-defaults --collector.bonding --web.listen-address=0.0.0.0:9100 > /dev/null 2>&1 &");
    let ne_port = vm.host_port_9100.expect("hostfwd to 9100");
    let mut results = Vec::new();
    for &(interval, pulls) in plan {
        let (prom, prom_port) = prometheus(&dir, interval, ne_port);
        let clean = block_on(async {
            let client = Client::new(Duration::from_secs(2));
            let deadline = Instant::now() + Duration::from_secs(60 + 3 * interval);
            loop {
                let up = node_up(&client, prom_port, bonds).await;
                let gate = get_json(&client, &format!("http://127.0.0.1:{agg_port}/v1/gate")).await;
                if up
                    && gate
                        .as_ref()
                        .is_some_and(|v| v["blockers"].as_array().is_some_and(Vec::is_empty))
                {
                    return Ok(());
                }
                if Instant::now() >= deadline {
                    return Err(format!(
                        "prometheus scraped node_exporter: {up}; gate: {gate:?}"
                    ));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        if let Err(e) = clean {
            let log = vm.sh("cat /tmp/agent.log; ps");
            panic!("not ready to pull: {e}\nagent log:\n{log}");
        }
        // One thread (and runtime) per bond: pulling a cable is a blocking
        // exchange with the qemu monitor, which must not stall the pollers
        // of the other bonds.
        let per_bond = pulls.div_ceil(bonds);
        let vm_ref = &vm;
        let series: Vec<(usize, Vec<Pull>)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..bonds)
                .map(|b| {
                    s.spawn(move || {
                        let pulls = block_on(async {
                            let client = Client::new(Duration::from_secs(2));
                            pull_series(
                                vm_ref,
                                &client,
                                (agg_port, prom_port),
                                b,
                                interval,
                                per_bond,
                            )
                            .await
                        });
                        (b, pulls)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("bond thread"))
                .collect()
        });
        let (mut pre, mut pro) = (Vec::new(), Vec::new());
        let mut host = Vec::new();
        for (b, pulls) in series {
            let subject = format!("bond{b}/eth{}", 2 * b + 1);
            for (a, p, t0) in pulls {
                pre.push(a);
                pro.push(p);
                host.push(relay_log.stages(&subject, t0, a));
            }
        }
        print_host_stages(interval, &host);
        let log = vm.sh(
            "grep -E 'steady link lost carrier|state evaluated|full report answered' /tmp/agent.log || true",
        );
        print_guest_stages(interval, &guest_stages(&log));
        relay_log.clear();
        let samples = (pre, pro);
        drop(prom);
        results.push((interval, samples.0, samples.1));
    }
    vm.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
    results
}

pub(crate) fn which(name: &str) -> std::path::PathBuf {
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .find(|p| p.exists())
        })
        .unwrap_or_else(|| panic!("{name} not found: apt-get install prometheus-node-exporter"))
}

/// qemu connects a guestfwd to its host port once, when it starts, and
/// never again: when the aggregator closed that connection (an idle one,
/// on a loaded machine where the guest took long to boot) the guest could
/// no longer reach it. This relay holds qemu's connection for the whole
/// run and opens a connection to the aggregator whenever bytes arrive and
/// none is open, noting in `log` what passes. Returns the port qemu should
/// use.
fn relay(upstream: u16, log: RelayLog) -> u16 {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    let l = TcpListener::bind("127.0.0.1:0").expect("relay port");
    let port = l.local_addr().expect("relay addr").port();
    std::thread::spawn(move || {
        for down in l.incoming().map_while(Result::ok) {
            let log = log.clone();
            // No Nagle on either leg: a report's body written while its
            // headers are unacknowledged would wait for the peer's delayed
            // ACK (up to 40 ms on Linux).
            let _ = down.set_nodelay(true);
            let _ = socket2::SockRef::from(&down).set_tcp_quickack(true);
            std::thread::spawn(move || {
                let up: Arc<Mutex<Option<TcpStream>>> = Arc::new(Mutex::new(None));
                let mut down_r = down.try_clone().expect("clone");
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match down_r.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    // qemu's side of this connection (its guestfwd
                    // chardev) keeps Nagle on: a report's second segment
                    // waits for our ACK, which Linux delays up to 40 ms
                    // unless asked for at once, after every read.
                    let _ = socket2::SockRef::from(&down_r).set_tcp_quickack(true);
                    let mut g = up.lock().expect("relay lock");
                    if g.is_none() {
                        let Ok(u) = TcpStream::connect(("127.0.0.1", upstream)) else {
                            continue;
                        };
                        let _ = u.set_nodelay(true);
                        let (mut ur, mut dw) = (
                            u.try_clone().expect("clone"),
                            down.try_clone().expect("clone"),
                        );
                        let slot = Arc::clone(&up);
                        let answers = log.clone();
                        std::thread::spawn(move || {
                            let mut b = vec![0u8; 64 * 1024];
                            while let Ok(n) = ur.read(&mut b) {
                                if n == 0 {
                                    break;
                                }
                                answers.answer();
                                if dw.write_all(&b[..n]).is_err() {
                                    break;
                                }
                            }
                            // Upstream closed: the next bytes open a new one.
                            let _ = ur.shutdown(Shutdown::Both);
                            *slot.lock().expect("relay lock") = None;
                        });
                        *g = Some(u);
                    }
                    // Noted before forwarding: the aggregator cannot have
                    // it earlier.
                    log.report(&buf[..n]);
                    if let Some(u) = g.as_mut() {
                        if u.write_all(&buf[..n]).is_err() {
                            *g = None;
                        }
                    }
                }
            });
        }
    });
    port
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt")
        .block_on(f)
}

/// xorshift64: a uniformly distributed phase in [0, n) milliseconds.
fn rand_below(state: &mut u64, n: u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state % n.max(1)
}
