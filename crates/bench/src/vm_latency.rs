//! Cable pull to finding in a real kernel (qemu guest, active-backup bond,
//! miimon 100 ms). `guest_watch` runs inside the guest and prints, for each
//! pull, the time from the port's carrier loss to BOND_PORT_DOWN on its
//! monotonic clock; `run` drives it from the host through the qemu monitor and
//! also measures the host-side round trip (monitor command sent to the
//! finding line read from the serial console).

use std::time::{Duration, Instant, SystemTime};

use preflight_policy::{Evaluator, PolicyConfig};
use preflight_tests::vm::{Vm, VmSpec};

/// Inside the guest: watch `port` of `bond` and print events.
pub fn guest_watch(bond: &str, port: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut w = preflight_netlink::watch(preflight_netlink::WatchConfig::default())
            .await
            .expect("watch");
        let mut ev = Evaluator::new(PolicyConfig::default());
        let subject = format!("{bond}/{port}");
        let mut carrier = true;
        let mut carrier_off_at: Option<Instant> = None;
        let mut finding = false;
        println!("PFLAT ready");
        loop {
            let snap = w.snapshots.borrow_and_update().clone();
            let now = Instant::now();
            let c = snap.by_name(port).is_some_and(|i| i.carrier);
            if carrier && !c {
                carrier_off_at = Some(now);
            }
            carrier = c;
            let f = ev
                .evaluate(&snap, now, SystemTime::now())
                .iter()
                .any(|f| f.code == "BOND_PORT_DOWN" && f.subject == subject);
            if f && !finding {
                let guest_ms = carrier_off_at
                    .map_or(f64::NAN, |t| now.duration_since(t).as_secs_f64() * 1000.0);
                println!("PFLAT finding guest_ms={guest_ms:.3}");
            }
            if !f && finding {
                println!("PFLAT cleared");
            }
            finding = f;
            if w.snapshots.changed().await.is_err() {
                break;
            }
        }
    });
}

fn stats(mut v: Vec<f64>) -> (f64, f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let p = |q: f64| {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let i = ((q / 100.0) * (v.len() - 1) as f64).round() as usize;
        v[i]
    };
    (p(50.0), p(99.0), v[0], v[v.len() - 1])
}

/// On the host: boot, bond, pull the cable `pulls` times; print figures.
pub fn run(preflight: &str, pulls: usize) -> (Vec<f64>, Vec<f64>) {
    std::env::set_var("PREFLIGHT_BIN", preflight);
    let me = std::env::current_exe().expect("bench path");
    let mut vm = Vm::boot(&VmSpec {
        extra_bins: vec![me],
        ..VmSpec::default()
    });
    vm.sh("/sbin/ip link add bond0 type bond mode active-backup miimon 100 && /sbin/ip link set eth0 down && /sbin/ip link set eth1 down && /sbin/ip link set eth0 master bond0 && /sbin/ip link set eth1 master bond0 && /sbin/ip link set eth0 up && /sbin/ip link set eth1 up && /sbin/ip link set bond0 up && sleep 1");
    let from = vm.console_len();
    vm.sh("preflight-bench guest-watch bond0 eth1 > /dev/console 2>&1 &");
    vm.wait_console(
        from,
        |l| l.contains("PFLAT ready"),
        Duration::from_secs(30),
        "start the guest watch",
    );
    let mut guest = Vec::new();
    let mut host = Vec::new();
    for i in 0..pulls {
        let from = vm.console_len();
        let t0 = Instant::now();
        vm.set_link(1, false);
        let (_, line) = vm.wait_console(
            from,
            |l| l.contains("PFLAT finding"),
            Duration::from_secs(10),
            "report BOND_PORT_DOWN",
        );
        host.push(t0.elapsed().as_secs_f64() * 1000.0);
        let g: f64 = line
            .split("guest_ms=")
            .nth(1)
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(f64::NAN);
        guest.push(g);
        let from = vm.console_len();
        vm.set_link(1, true);
        vm.wait_console(
            from,
            |l| l.contains("PFLAT cleared"),
            Duration::from_secs(10),
            "clear BOND_PORT_DOWN",
        );
        std::thread::sleep(Duration::from_millis(300));
        eprintln!(
            "  pull {}: guest {g:.1} ms, host round trip {:.1} ms",
            i + 1,
            host[host.len() - 1]
        );
    }
    vm.shutdown();
    (guest, host)
}

/// Prints the summary of one or more runs.
pub fn report(runs: &[(Vec<f64>, Vec<f64>)]) {
    let mut gm = Vec::new();
    let mut g99 = Vec::new();
    let mut hm = Vec::new();
    let mut h99 = Vec::new();
    for (i, (g, h)) in runs.iter().enumerate() {
        let (a, b, c, d) = stats(g.clone());
        let (e, f, gg, hh) = stats(h.clone());
        println!("  boot {}: guest carrier->finding median {a:.1} ms p99 {b:.1} (min {c:.1} max {d:.1}); host monitor->console median {e:.1} ms p99 {f:.1} (min {gg:.1} max {hh:.1})", i + 1);
        gm.push(a);
        g99.push(b);
        hm.push(e);
        h99.push(f);
    }
    let s = |v: &Vec<f64>| {
        let (m, _, lo, hi) = stats(v.clone());
        format!("{m:.1} ms ({lo:.1}..{hi:.1})")
    };
    println!(
        "cable pull -> BOND_PORT_DOWN, miimon 100 ms, {} boots x {} pulls:",
        runs.len(),
        runs[0].0.len()
    );
    println!("  guest: median {}  p99 {}", s(&gm), s(&g99));
    println!("  host round trip: median {}  p99 {}", s(&hm), s(&h99));
}
