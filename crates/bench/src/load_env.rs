//! What the aggregator load bench needs from the machine around it: a
//! process's open sockets and CPU time from /proc, a higher open-file
//! limit, CPU pinning, and a throwaway CA with a server certificate (made
//! with the `openssl` CLI, so no certificate crate is linked for it).

/// Open sockets of a process (its client connections plus a few).
pub fn sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| {
        d.filter_map(Result::ok)
            .filter(|e| {
                std::fs::read_link(e.path())
                    .is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
            })
            .count()
    })
}

/// Nanoseconds the process's threads have waited on a run queue for a CPU
/// (the second field of each `/proc/PID/task/TID/schedstat`), summed: the
/// threads that work for reports (`preflight-reports` and `report-writer`
/// at nice +10, `report-apply`) apart from the others (gate questions, the
/// rest of the API).
pub fn run_delay_ns(pid: u32) -> RunDelay {
    let mut d = RunDelay::default();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return d;
    };
    for t in tasks.filter_map(Result::ok) {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        let Some(ns) = std::fs::read_to_string(t.path().join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        else {
            continue;
        };
        let comm = comm.trim();
        if comm.starts_with("preflight-repor") || comm == "report-writer" || comm == "report-apply"
        {
            d.reports += ns;
        } else {
            d.front += ns;
        }
    }
    d
}

/// Run-queue waits of an aggregator's threads, nanoseconds ([`run_delay_ns`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct RunDelay {
    /// The report threads and those working for them.
    pub reports: u64,
    /// Every other thread: gate questions, the API, the sweeper.
    pub front: u64,
}

/// CPU time the hypervisor gave to others while this machine's vCPUs
/// wanted it (`steal` in `/proc/stat`, all CPUs), in clock ticks.
pub fn steal_ticks() -> u64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("cpu "))?;
            line.split_whitespace().nth(8)?.parse().ok()
        })
        .unwrap_or(0)
}

/// User + system CPU time of a process, in clock ticks (1/100 s).
pub fn cpu_ticks(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the line.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    rest.split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse::<u64>().ok())
        .sum()
}

/// Raises this process's open-file limit to what `want` descriptors need
/// (the hard limit too, as root); the aggregator it spawns inherits it.
pub fn raise_nofile(want: u64) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let target = want.max(soft);
    if target <= soft {
        return;
    }
    let hard = hard.max(target);
    if setrlimit(Resource::RLIMIT_NOFILE, target, hard).is_err() {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard.min(target), hard);
    }
    let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).unwrap_or((0, 0));
    eprintln!("  RLIMIT_NOFILE {soft} (wanted {want})");
}

/// Pins the calling thread (and the threads it starts later) to `cpus`.
pub fn pin_to(cpus: &[usize]) {
    let mut set = nix::sched::CpuSet::new();
    for c in cpus {
        let _ = set.set(*c);
    }
    if let Err(e) = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set) {
        eprintln!("  cannot pin the load generator to {cpus:?}: {e}");
    }
}

/// Sets the calling thread's nice value (Linux: per thread; threads it
/// starts afterwards inherit it), with `renice` as root.
pub fn nice_this_thread(n: i32) {
    let tid = nix::unistd::gettid().to_string();
    let done = std::process::Command::new("renice")
        .args(["-n", &n.to_string(), "-p", &tid])
        .stdout(std::process::Stdio::null())
        .status();
    if !matches!(done, Ok(s) if s.success()) {
        eprintln!("  cannot set the load generator's nice value to {n} (renice -n {n} -p {tid}: {done:?})");
    }
}

/// A throwaway CA and a server certificate for 127.0.0.1 signed by it
/// (openssl CLI, as the tests make theirs); returns (CA, certificate, key)
/// paths.
pub fn make_certs(
    dir: &std::path::Path,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    preflight_tests::certs::ca(dir, "ca");
    preflight_tests::certs::leaf(dir, "ca", "server", "IP:127.0.0.1,DNS:localhost", None);
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}
