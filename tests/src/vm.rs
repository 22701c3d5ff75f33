//! A qemu VM (TCG) with a real Debian kernel, for bonding tests this host's
//! kernel cannot run. `tests/vm/prepare.sh` installs qemu and caches the
//! kernel and a base initramfs; [`Vm::boot`] adds the `preflight` binary and
//! a guest shell that runs commands sent over the serial console, framing
//! each answer between markers. The qemu monitor pulls virtual cables.
//!
//! Boot failures and timeouts panic with the console log attached.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Output of one command in the guest.
#[derive(Debug, Clone)]
pub struct GuestOutput {
    /// Exit status of the command in the guest.
    pub status: i32,
    /// stdout and stderr, interleaved.
    pub output: String,
}

#[derive(Default)]
struct Console {
    lines: Vec<String>,
    closed: bool,
}

/// A running VM.
pub struct Vm {
    child: Child,
    stdin: ChildStdin,
    console: Arc<(Mutex<Console>, Condvar)>,
    /// Initramfs, monitor socket; removed on drop, after qemu is gone.
    dir: tempfile::TempDir,
    next_id: u32,
    /// Host port forwarded to the guest, if requested.
    pub host_port: Option<u16>,
    /// Host port forwarded to the guest's port 9100 (first NIC).
    pub host_port_9100: Option<u16>,
}

/// What to boot.
#[derive(Debug, Clone)]
pub struct VmSpec {
    /// Number of virtio NICs (nic0, nic1, ... in the monitor; eth0, eth1, ... in the guest).
    pub nics: usize,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// `guestfwd` of the first NIC: the guest's 10.0.2.100:PORT reaches the
    /// host's 127.0.0.1:PORT (an aggregator on the host's loopback).
    pub guestfwd_port: Option<u16>,
    /// More host binaries to put in the guest's /bin (same libc as the host).
    pub extra_bins: Vec<PathBuf>,
    /// A directory copied over the initramfs root (binaries with their
    /// libraries, modules, /etc files), e.g. the two-switch rig's overlay
    /// from tests/vm/rig-prepare.sh.
    pub overlay: Option<PathBuf>,
    /// Files written into the initramfs: (path inside the guest, contents);
    /// executable.
    pub files: Vec<(String, Vec<u8>)>,
}

impl Default for VmSpec {
    fn default() -> Self {
        Self {
            nics: 2,
            memory_mib: 512,
            guestfwd_port: None,
            extra_bins: Vec::new(),
            overlay: None,
            files: Vec::new(),
        }
    }
}

fn run_ok(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs tests/vm/prepare.sh (idempotent, cached) and returns the cache dir.
#[must_use]
pub fn prepare() -> PathBuf {
    crate::require_root("a VM test (qemu, apt-get)");
    let script = crate::workspace().join("tests/vm/prepare.sh");
    let out = run_ok(Command::new("bash").arg(&script), "tests/vm/prepare.sh");
    PathBuf::from(
        out.lines()
            .last()
            .expect("prepare.sh prints the cache dir")
            .trim(),
    )
}

const INIT: &str = r#"#!/bin/sh
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts /run/netns
echo 1 > /proc/sys/kernel/printk
KV=$(uname -r)
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci failover net_failover virtio_net tls veth; do
  insmod /lib/modules/$KV/$m.ko 2>/dev/null
done
insmod /lib/modules/$KV/bonding.ko max_bonds=0
/sbin/ip link set lo up
stty -echo 2>/dev/null
echo "@@READY"
while read -r id cmd; do
  [ "$cmd" = "@@poweroff" ] && break
  echo "@@BEGIN $id"
  sh -c "$cmd" 2>&1
  rc=$?
  echo "@@END $id $rc"
done
poweroff -f
"#;

impl Vm {
    /// Boots a VM with `preflight` at /bin/preflight and waits until its
    /// command shell is ready.
    #[must_use]
    pub fn boot(spec: &VmSpec) -> Self {
        let cache = prepare();
        let kver = std::fs::read_to_string(cache.join("kernel.ready"))
            .expect("kernel.ready")
            .trim()
            .to_owned();
        let tmp = tempfile::Builder::new()
            .prefix("preflight-vm-")
            .tempdir()
            .expect("vm dir");
        let dir = tmp.path();
        let root = dir.join("root");
        run_ok(
            Command::new("cp")
                .arg("-a")
                .arg(cache.join("base"))
                .arg(&root),
            "copy base initramfs",
        );
        run_ok(
            Command::new("strip")
                .arg("-o")
                .arg(root.join("bin/preflight"))
                .arg(crate::preflight_bin()),
            "strip preflight into the initramfs",
        );
        for extra in &spec.extra_bins {
            let name = extra.file_name().expect("binary file name");
            run_ok(
                Command::new("strip")
                    .arg("-o")
                    .arg(root.join("bin").join(name))
                    .arg(extra),
                "strip extra binary",
            );
        }
        // The binary's shared libraries (glibc, libgcc_s) from this host.
        let mut bins = vec![crate::preflight_bin()];
        bins.extend(spec.extra_bins.iter().cloned());
        for b in &bins {
            let ldd = run_ok(Command::new("ldd").arg(b), "ldd");
            for lib in ldd.split_whitespace().filter(|w| w.starts_with('/')) {
                let dst = root.join(lib.trim_start_matches('/'));
                if !dst.exists() {
                    std::fs::create_dir_all(dst.parent().expect("lib dir")).expect("mkdir lib");
                    std::fs::copy(lib, &dst).unwrap_or_else(|e| panic!("copy {lib}: {e}"));
                }
            }
        }
        if let Some(overlay) = &spec.overlay {
            run_ok(
                Command::new("cp")
                    .arg("-a")
                    .arg(overlay.join("."))
                    .arg(&root),
                "copy the overlay into the initramfs",
            );
        }
        for (path, contents) in &spec.files {
            let dst = root.join(path.trim_start_matches('/'));
            std::fs::create_dir_all(dst.parent().expect("file dir")).expect("mkdir for file");
            std::fs::write(&dst, contents).unwrap_or_else(|e| panic!("write {path}: {e}"));
            run_ok(Command::new("chmod").arg("+x").arg(&dst), "chmod file");
        }
        std::fs::write(root.join("init"), INIT).expect("write init");
        run_ok(
            Command::new("chmod").arg("+x").arg(root.join("init")),
            "chmod init",
        );
        let initrd = dir.join("initrd.gz");
        run_ok(
            Command::new("sh").arg("-c").arg(format!(
                "cd '{}' && find . -print0 | cpio --null -o -H newc --quiet | gzip -1 > '{}'",
                root.display(),
                initrd.display()
            )),
            "pack initramfs",
        );
        let _ = std::fs::remove_dir_all(&root);

        let mon = dir.join("mon.sock");
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args([
            "-accel",
            "tcg",
            "-m",
            &spec.memory_mib.to_string(),
            "-smp",
            "1",
            "-nographic",
            "-no-reboot",
        ])
        .arg("-kernel")
        .arg(cache.join(format!("kernel/boot/vmlinuz-{kver}")))
        .arg("-initrd")
        .arg(&initrd)
        .args(["-append", "console=ttyS0 quiet loglevel=1 panic=-1"])
        .arg("-monitor")
        .arg(format!("unix:{},server,nowait", mon.display()));
        let mut host_port = None;
        let mut host_port_9100 = None;
        for n in 0..spec.nics {
            let mut netdev = format!("user,id=n{n},restrict=on");
            if n == 0 {
                if let Some(p) = spec.guestfwd_port {
                    netdev.push_str(&format!(",guestfwd=tcp:10.0.2.100:{p}-tcp:127.0.0.1:{p}"));
                }
                let hp = free_port();
                netdev.push_str(&format!(",hostfwd=tcp:127.0.0.1:{hp}-:9101"));
                host_port = Some(hp);
                let hp2 = free_port();
                netdev.push_str(&format!(",hostfwd=tcp:127.0.0.1:{hp2}-:9100"));
                host_port_9100 = Some(hp2);
            }
            cmd.arg("-netdev").arg(netdev);
            cmd.arg("-device").arg(format!(
                "virtio-net-pci,netdev=n{n},id=nic{n},romfile=,speed=10000,duplex=full"
            ));
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start qemu-system-x86_64: {e}"));
        let stdin = child.stdin.take().expect("stdin");
        let console = Arc::new((Mutex::new(Console::default()), Condvar::new()));
        for stream in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let c = Arc::clone(&console);
            std::thread::spawn(move || {
                for l in BufReader::new(stream).lines() {
                    let Ok(l) = l else { break };
                    let (m, cv) = &*c;
                    m.lock()
                        .expect("console lock")
                        .lines
                        .push(l.trim_end_matches('\r').to_owned());
                    cv.notify_all();
                }
                let (m, cv) = &*c;
                m.lock().expect("console lock").closed = true;
                cv.notify_all();
            });
        }
        let vm = Self {
            child,
            stdin,
            console,
            dir: tmp,
            next_id: 0,
            host_port,
            host_port_9100,
        };
        vm.wait_line(
            |l| l.ends_with("@@READY"),
            Duration::from_secs(180),
            "boot to the command shell",
        );
        vm
    }

    /// The console so far, for failure messages.
    #[must_use]
    pub fn console_log(&self) -> String {
        self.console
            .0
            .lock()
            .expect("console lock")
            .lines
            .join("\n")
    }

    /// Waits for a console line after line number `from` that satisfies
    /// `pred`; returns its number and text. Panics with the console on timeout.
    pub fn wait_console(
        &self,
        from: usize,
        pred: impl Fn(&str) -> bool,
        limit: Duration,
        what: &str,
    ) -> (usize, String) {
        let i = self.wait_line_from(from, pred, limit, what);
        (
            i,
            self.console.0.lock().expect("console lock").lines[i].clone(),
        )
    }

    /// Number of console lines so far.
    #[must_use]
    pub fn console_len(&self) -> usize {
        self.console.0.lock().expect("console lock").lines.len()
    }

    fn wait_line(&self, pred: impl Fn(&str) -> bool, limit: Duration, what: &str) -> usize {
        self.wait_line_from(0, pred, limit, what)
    }

    fn wait_line_from(
        &self,
        start: usize,
        pred: impl Fn(&str) -> bool,
        limit: Duration,
        what: &str,
    ) -> usize {
        let deadline = Instant::now() + limit;
        let (m, cv) = &*self.console;
        let mut g = m.lock().expect("console lock");
        let mut from = start.min(g.lines.len());
        loop {
            if let Some(i) = g.lines[from..].iter().position(|l| pred(l)) {
                return from + i;
            }
            from = g.lines.len();
            if g.closed {
                drop(g);
                panic!(
                    "VM exited while waiting to {what}; console:\n{}",
                    self.console_log()
                );
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                drop(g);
                panic!(
                    "VM did not {what} within {limit:?}; console:\n{}",
                    self.console_log()
                );
            }
            g = cv.wait_timeout(g, left).expect("console lock").0;
        }
    }

    /// Runs a shell command in the guest and returns its output and status.
    pub fn run(&mut self, cmd: &str, limit: Duration) -> GuestOutput {
        assert!(!cmd.contains('\n'), "one line per command");
        self.next_id += 1;
        let id = self.next_id;
        writeln!(self.stdin, "{id} {cmd}")
            .and_then(|()| self.stdin.flush())
            .expect("write to guest console");
        let begin = format!("@@BEGIN {id}");
        let end_prefix = format!("@@END {id} ");
        let end = self.wait_line(
            |l| l.starts_with(&end_prefix),
            limit,
            &format!("finish `{cmd}`"),
        );
        let g = self.console.0.lock().expect("console lock");
        let start = g.lines[..end]
            .iter()
            .rposition(|l| *l == begin)
            .expect("BEGIN before END");
        let status = g.lines[end][end_prefix.len()..]
            .trim()
            .parse()
            .expect("status");
        GuestOutput {
            status,
            output: g.lines[start + 1..end].join("\n"),
        }
    }

    /// Runs a command and panics (with the console) unless it exits 0.
    pub fn sh(&mut self, cmd: &str) -> String {
        let out = self.run(cmd, Duration::from_secs(60));
        assert_eq!(
            out.status, 0,
            "guest command `{cmd}` failed:\n{}",
            out.output
        );
        out.output
    }

    /// Sends a command to the qemu monitor (`set_link nic1 off`).
    pub fn monitor(&self, cmd: &str) {
        let path = self.dir.path().join("mon.sock");
        let mut s = UnixStream::connect(&path)
            .unwrap_or_else(|e| panic!("qemu monitor {}: {e}", path.display()));
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut buf = Vec::new();
        read_until_prompt(&mut s, &mut buf);
        writeln!(s, "{cmd}").expect("monitor write");
        buf.clear();
        read_until_prompt(&mut s, &mut buf);
    }

    /// Pulls (`false`) or plugs (`true`) the cable of NIC `n`.
    pub fn set_link(&self, n: usize, up: bool) {
        self.monitor(&format!(
            "set_link nic{n} {}",
            if up { "on" } else { "off" }
        ));
    }

    /// Powers the guest off and waits for qemu.
    pub fn shutdown(mut self) {
        let _ = writeln!(self.stdin, "0 @@poweroff");
        let _ = self.stdin.flush();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn read_until_prompt(s: &mut UnixStream, buf: &mut Vec<u8>) {
    let mut chunk = [0u8; 4096];
    while !buf.windows(7).any(|w| w == b"(qemu) ") {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Path of a fixture under tests/fixtures/.
#[must_use]
pub fn fixture(rel: &str) -> PathBuf {
    crate::workspace().join("tests/fixtures").join(rel)
}
