//! A real Open vSwitch for a test: ovsdb-server on a unix socket in a temp
//! dir and ovs-vswitchd with the userspace datapath, inside a network
//! namespace of its own so its tun devices (`br-*`, `ovs-netdev`) cannot
//! collide with another test's. Bond members are veths whose peers live in a
//! second namespace: `ip -n PEERS link set PEER down` is a cable pull.
//!
//! Missing binaries are installed (`apt-get install openvswitch-switch`); if
//! that fails the test panics. Drop stops both daemons by their pidfiles and
//! deletes the tun devices and namespaces.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::netns::Netns;

static COUNTER: AtomicU32 = AtomicU32::new(0);
const BINARIES: [&str; 5] = [
    "ovsdb-tool",
    "ovsdb-server",
    "ovs-vsctl",
    "ovs-vswitchd",
    "ovs-appctl",
];
const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";

/// One Open vSwitch instance owned by a test.
pub struct Ovs {
    /// Temp dir with conf.db, db.sock, pidfiles, control sockets and logs.
    pub dir: PathBuf,
    /// The namespace ovs-vswitchd runs in; bond members live here.
    pub ns: Netns,
    /// The namespace holding the members' veth peers (the far end of the
    /// cables).
    pub peers: Netns,
    bridges: std::cell::RefCell<Vec<String>>,
}

fn run(what: &str, cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{what}`: {e}"));
    assert!(
        out.status.success(),
        "`{what}` failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn have(bin: &str) -> bool {
    Command::new(bin).arg("--version").output().is_ok()
}

/// Installs openvswitch-switch when a binary is missing; panics (never
/// skips) when that does not give every binary.
fn ensure_binaries() {
    if BINARIES.iter().all(|b| have(b)) && Path::new(SCHEMA).exists() {
        return;
    }
    eprintln!("Open vSwitch missing: installing openvswitch-switch");
    let _ = Command::new("apt-get").arg("update").status();
    let _ = Command::new("apt-get")
        .args([
            "install",
            "-y",
            "--no-install-recommends",
            "openvswitch-switch",
        ])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status();
    for b in BINARIES {
        assert!(
            have(b),
            "{b} not found and `apt-get install openvswitch-switch` did not provide it; the OVS tests need real Open vSwitch and do not skip"
        );
    }
    assert!(Path::new(SCHEMA).exists(), "{SCHEMA} missing");
}

fn pid_alive(pid: &str) -> bool {
    // A detached daemon is not our child; once killed it may linger as a
    // zombie until init reaps it, which counts as gone.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
    })
}

impl Ovs {
    /// Starts ovsdb-server and ovs-vswitchd. Panics with the reason on any
    /// failure.
    #[must_use]
    pub fn start() -> Self {
        crate::require_root("an Open vSwitch test");
        ensure_binaries();
        let dir = std::env::temp_dir().join(format!(
            "pf-ovs-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the OVS temp dir");
        let ovs = Self {
            ns: Netns::new("ovs"),
            peers: Netns::new("ovsp"),
            dir,
            bridges: std::cell::RefCell::new(Vec::new()),
        };
        run(
            "ovsdb-tool create",
            Command::new("ovsdb-tool")
                .arg("create")
                .arg(ovs.dir.join("conf.db"))
                .arg(SCHEMA),
        );
        ovs.start_db();
        ovs.vsctl(&["--no-wait", "init"]);
        let mut cmd = ovs.ns.command("ovs-vswitchd");
        cmd.arg(format!("unix:{}", ovs.socket().display()))
            .arg(format!("--pidfile={}", ovs.path("vswitchd.pid")))
            .arg(format!("--unixctl={}", ovs.path("vswitchd.ctl")))
            .arg(format!("--log-file={}", ovs.path("vswitchd.log")))
            .args(["--detach", "--disable-system-route"]);
        ovs.env(&mut cmd);
        run("ovs-vswitchd", &mut cmd);
        ovs
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// Keeps every file the daemons and tools make inside the temp dir.
    fn env(&self, cmd: &mut Command) {
        for var in ["OVS_RUNDIR", "OVS_LOGDIR", "OVS_DBDIR"] {
            cmd.env(var, &self.dir);
        }
    }

    /// The ovsdb-server socket.
    #[must_use]
    pub fn socket(&self) -> PathBuf {
        self.dir.join("db.sock")
    }

    /// Starts ovsdb-server (again, after [`Ovs::kill_db`]) on the same
    /// database file.
    pub fn start_db(&self) {
        let mut cmd = Command::new("ovsdb-server");
        cmd.arg(self.dir.join("conf.db"))
            .arg(format!("--remote=punix:{}", self.socket().display()))
            .arg(format!("--pidfile={}", self.path("ovsdb.pid")))
            .arg(format!("--unixctl={}", self.path("ovsdb.ctl")))
            .arg(format!("--log-file={}", self.path("ovsdb.log")))
            .arg("--detach");
        self.env(&mut cmd);
        run("ovsdb-server", &mut cmd);
    }

    /// SIGKILLs ovsdb-server (its socket file stays behind, as after a
    /// crash) and waits until it is gone.
    pub fn kill_db(&self) {
        Self::stop("ovsdb-server", &self.dir.join("ovsdb.pid"), "KILL");
    }

    /// SIGSTOPs (`true`) or SIGCONTs ovsdb-server: a hung server whose
    /// socket stays open.
    pub fn pause_db(&self, paused: bool) {
        let pid = std::fs::read_to_string(self.dir.join("ovsdb.pid")).expect("ovsdb.pid");
        let signal = if paused { "-STOP" } else { "-CONT" };
        run(
            "kill ovsdb-server",
            Command::new("kill").args([signal, pid.trim()]),
        );
    }

    fn stop(what: &str, pidfile: &Path, signal: &str) {
        let Ok(pid) = std::fs::read_to_string(pidfile) else {
            return;
        };
        let pid = pid.trim().to_owned();
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(&pid)
            .output();
        let deadline = Instant::now() + Duration::from_secs(5);
        while pid_alive(&pid) {
            if Instant::now() > deadline {
                let _ = Command::new("kill").args(["-KILL", &pid]).output();
                assert!(
                    Instant::now() < deadline + Duration::from_secs(2),
                    "{what} (pid {pid}) does not exit"
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `ovs-vsctl --db=unix:SOCK --timeout=20 ARGS`; panics on failure.
    pub fn vsctl(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("ovs-vsctl");
        cmd.arg(format!("--db=unix:{}", self.socket().display()))
            .arg("--timeout=20")
            .args(args);
        self.env(&mut cmd);
        let out = run(&format!("ovs-vsctl {}", args.join(" ")), &mut cmd);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ovs-appctl -t vswitchd.ctl ARGS` (`bond/show bond1`).
    pub fn appctl(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("ovs-appctl");
        cmd.arg("-t").arg(self.path("vswitchd.ctl")).args(args);
        let out = run(&format!("ovs-appctl {}", args.join(" ")), &mut cmd);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A bridge on the userspace datapath.
    pub fn add_bridge(&self, name: &str) {
        self.vsctl(&[
            "add-br",
            name,
            "--",
            "set",
            "bridge",
            name,
            "datapath_type=netdev",
        ]);
        self.bridges.borrow_mut().push(name.to_owned());
    }

    /// The veth peer (in [`Ovs::peers`]) of member `member`.
    #[must_use]
    pub fn peer(member: &str) -> String {
        format!("p{member}")
    }

    /// A veth `member` in the OVS namespace, its peer in the peers
    /// namespace, both up.
    pub fn add_member(&self, member: &str) {
        let peer = Self::peer(member);
        self.peers.ip(&format!(
            "link add {peer} type veth peer name {member} netns {}",
            self.ns.name
        ));
        self.peers.ip(&format!("link set {peer} up"));
        self.ns.ip(&format!("link set {member} up"));
    }

    /// An OVS bond `bond` in `bridge` of `members` (veths made here, unless
    /// listed in `missing`: those are named but never created) with extra
    /// `ovs-vsctl add-bond` column settings (`bond_mode=active-backup`).
    pub fn add_bond(
        &self,
        bridge: &str,
        bond: &str,
        members: &[&str],
        missing: &[&str],
        settings: &[&str],
    ) {
        for m in members {
            self.add_member(m);
        }
        let mut args = vec!["add-bond", bridge, bond];
        args.extend_from_slice(members);
        args.extend_from_slice(missing);
        args.extend_from_slice(settings);
        self.vsctl(&args);
    }

    /// Sets the far end of `member`'s cable down (a cable pull) or up.
    pub fn cable(&self, member: &str, up: bool) {
        let state = if up { "up" } else { "down" };
        self.peers
            .ip(&format!("link set {} {state}", Self::peer(member)));
    }
}

impl Drop for Ovs {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("ovsdb.pid")) {
            let _ = Command::new("kill").args(["-CONT", pid.trim()]).output();
        }
        Self::stop("ovs-vswitchd", &self.dir.join("vswitchd.pid"), "TERM");
        Self::stop("ovsdb-server", &self.dir.join("ovsdb.pid"), "TERM");
        // The userspace datapath's tun devices outlive ovs-vswitchd.
        for dev in self
            .bridges
            .borrow()
            .iter()
            .map(String::as_str)
            .chain(["ovs-netdev"])
        {
            let _ = Command::new("ip")
                .args(["-n", &self.ns.name, "link", "del", dev])
                .output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
