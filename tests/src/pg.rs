//! A throwaway PostgreSQL cluster: Debian's `postgresql` package (installed
//! here if missing), `initdb` and `pg_ctl` run as the unprivileged
//! `postgres` user in a temp dir, listening on a free loopback port; stopped
//! and removed on drop. Nothing here skips: no root, no package, no server
//! means a panic with the reason.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A running cluster.
pub struct Pg {
    dir: PathBuf,
    bin: PathBuf,
    /// Loopback port it listens on.
    pub port: u16,
}

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The newest installed `/usr/lib/postgresql/N/bin`, installing the package first if there is none.
fn bin_dir() -> PathBuf {
    let find = || {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("bin"))
            .filter(|b| b.join("initdb").exists())
            .collect();
        dirs.sort();
        dirs.pop()
    };
    if let Some(b) = find() {
        return b;
    }
    run(
        Command::new("apt-get").args(["install", "-y", "--no-install-recommends", "postgresql"]),
        "apt-get install postgresql (needs root)",
    );
    find().expect("postgresql installed but no /usr/lib/postgresql/*/bin/initdb")
}

fn as_postgres(cmd: &str) -> Command {
    let mut c = Command::new("su");
    c.args(["postgres", "-s", "/bin/sh", "-c", cmd]);
    c
}

impl Pg {
    /// initdb, start, and create database `preflight`.
    #[must_use]
    pub fn start() -> Self {
        let bin = bin_dir();
        let dir = std::env::temp_dir().join(format!(
            "preflight-pg-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        std::fs::create_dir_all(dir.join("data")).expect("pg temp dir");
        run(
            Command::new("chown").args(["-R", "postgres"]).arg(&dir),
            "chown the cluster dir to postgres",
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let pg = Self { dir, bin, port };
        run(
            &mut as_postgres(&format!(
                "{} -D {} -A trust -U postgres >/dev/null",
                pg.bin.join("initdb").display(),
                pg.data().display()
            )),
            "initdb",
        );
        pg.pg_ctl_start();
        pg.psql("postgres", "CREATE DATABASE preflight");
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The database URL of `preflight` (no TLS: loopback).
    #[must_use]
    pub fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/preflight?sslmode=disable",
            self.port
        )
    }

    /// Starts the server (again).
    pub fn pg_ctl_start(&self) {
        run(
            &mut as_postgres(&format!(
                "{} -D {} -o '-p {} -k {} -c listen_addresses=127.0.0.1' -l {}/log -w start >/dev/null",
                self.bin.join("pg_ctl").display(),
                self.data().display(),
                self.port,
                self.data().display(),
                self.dir.display()
            )),
            "pg_ctl start",
        );
    }

    /// Stops the server (fast: connections are closed).
    pub fn pg_ctl_stop(&self) {
        run(
            &mut as_postgres(&format!(
                "{} -D {} -m fast -w stop >/dev/null",
                self.bin.join("pg_ctl").display(),
                self.data().display()
            )),
            "pg_ctl stop",
        );
    }

    /// Runs SQL in database `db`; returns psql's unaligned output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        run(
            Command::new(self.bin.join("psql"))
                .args([
                    "-h",
                    "127.0.0.1",
                    "-U",
                    "postgres",
                    "-At",
                    "-v",
                    "ON_ERROR_STOP=1",
                ])
                .args(["-p", &self.port.to_string(), "-d", db, "-c", sql]),
            &format!("psql {sql}"),
        )
    }

    /// A `psql` session on database `db`, not started: for a test that
    /// holds a transaction open while it does something else.
    #[must_use]
    pub fn psql_session(&self, db: &str) -> Command {
        let mut c = Command::new(self.bin.join("psql"));
        c.args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
        ])
        .args(["-p", &self.port.to_string(), "-d", db]);
        c
    }

    /// Turns TLS on (a reload, no restart) with a server certificate for
    /// `san` (e.g. `DNS:localhost`) signed by a new CA; returns the CA's
    /// PEM file. Another call to [`make_ca`] gives a CA that did not sign it.
    pub fn enable_tls(&self, san: &str) -> PathBuf {
        let ca = make_ca(&self.dir, "ca");
        let (key, csr, crt) = (
            self.data().join("server.key"),
            self.dir.join("server.csr"),
            self.data().join("server.crt"),
        );
        openssl(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key.display().to_string(),
            "-out",
            &csr.display().to_string(),
            "-subj",
            "/CN=preflight-test-db",
        ]);
        let ext = self.dir.join("server.ext");
        std::fs::write(
            &ext,
            format!("subjectAltName={san}\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"),
        )
        .expect("write extensions");
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr.display().to_string(),
            "-CA",
            &ca.display().to_string(),
            "-CAkey",
            &self.dir.join("ca.key").display().to_string(),
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &crt.display().to_string(),
            "-extfile",
            &ext.display().to_string(),
        ]);
        run(
            Command::new("chown").args(["postgres"]).arg(&key).arg(&crt),
            "chown the server key",
        );
        run(
            Command::new("chmod").arg("600").arg(&key),
            "chmod the server key",
        );
        self.psql("postgres", "ALTER SYSTEM SET ssl = on");
        self.psql("postgres", "SELECT pg_reload_conf()");
        // The reload is asynchronous: wait until the server says so.
        for _ in 0..100 {
            if self.psql("postgres", "SHOW ssl").trim() == "on" {
                return ca;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("ssl did not turn on:\n{}", self.log());
    }

    /// The server log, for failure messages.
    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(Path::new(&self.dir).join("log")).unwrap_or_default()
    }
}

/// A new directory for a cluster, owned by `postgres`.
fn cluster_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "preflight-{what}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    std::fs::create_dir_all(&dir).expect("pg temp dir");
    run(
        Command::new("chown").args(["-R", "postgres"]).arg(&dir),
        "chown the cluster dir to postgres",
    );
    dir
}

/// The URL of database `preflight` on every cluster of `hosts`, in order,
/// connecting only to the one that takes writes (a failover's new
/// primary), as an aggregator in front of a primary and its standbys.
#[must_use]
pub fn failover_url(hosts: &[&Pg]) -> String {
    let hosts: Vec<String> = hosts
        .iter()
        .map(|p| format!("127.0.0.1:{}", p.port))
        .collect();
    format!(
        "postgres://postgres@{}/preflight?sslmode=disable&target_session_attrs=read-write",
        hosts.join(",")
    )
}

impl Pg {
    /// A streaming standby of this cluster (`pg_basebackup -R`), started
    /// on a free loopback port. It is read-only until [`Pg::promote`].
    #[must_use]
    pub fn standby(&self) -> Self {
        let dir = cluster_dir("pg-standby");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let sb = Self {
            dir,
            bin: self.bin.clone(),
            port,
        };
        run(
            &mut as_postgres(&format!(
                "{} -h 127.0.0.1 -p {} -U postgres -D {} -R -X stream -c fast",
                sb.bin.join("pg_basebackup").display(),
                self.port,
                sb.data().display()
            )),
            "pg_basebackup -R",
        );
        sb.pg_ctl_start();
        sb
    }

    /// Makes this stopped cluster a streaming standby of `primary`, on its
    /// own port (its data is replaced by a base backup): the old primary
    /// rejoining after a failover, for tests that fail over many times.
    pub fn rebuild_as_standby_of(&self, primary: &Pg) {
        let _ = std::fs::remove_dir_all(self.data());
        run(
            &mut as_postgres(&format!(
                "{} -h 127.0.0.1 -p {} -U postgres -D {} -R -X stream -c fast",
                self.bin.join("pg_basebackup").display(),
                primary.port,
                self.data().display()
            )),
            "pg_basebackup -R",
        );
        self.pg_ctl_start();
    }

    /// Promotes this standby to a primary; returns once it takes writes.
    pub fn promote(&self) {
        run(
            &mut as_postgres(&format!(
                "{} -D {} -w promote >/dev/null",
                self.bin.join("pg_ctl").display(),
                self.data().display()
            )),
            "pg_ctl promote",
        );
    }

    /// Stops the server at once, as a crash or a lost host would (no
    /// checkpoint; a standby gets nothing more from it).
    pub fn stop_immediate(&self) {
        run(
            &mut as_postgres(&format!(
                "{} -D {} -m immediate -w stop >/dev/null",
                self.bin.join("pg_ctl").display(),
                self.data().display()
            )),
            "pg_ctl stop -m immediate",
        );
    }

    /// `ALTER SYSTEM SET name = value` (value as SQL, e.g. `'*'`) and a
    /// reload; returns once the server shows the new value.
    pub fn set(&self, name: &str, value: &str) {
        self.psql("postgres", &format!("ALTER SYSTEM SET {name} = {value}"));
        self.psql("postgres", "SELECT pg_reload_conf()");
        let want = value.trim_matches('\'');
        for _ in 0..100 {
            if self.psql("postgres", &format!("SHOW {name}")).trim() == want {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("{name} did not become {value}:\n{}", self.log());
    }

    /// Waits until `standby` has replayed everything this primary has
    /// written so far.
    pub fn wait_replayed(&self, standby: &Pg) {
        let lsn = self.psql("postgres", "SELECT pg_current_wal_lsn()");
        let sql = format!(
            "SELECT pg_last_wal_replay_lsn() >= '{}'::pg_lsn",
            lsn.trim()
        );
        for _ in 0..200 {
            if standby.psql("postgres", &sql).trim() == "t" {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!(
            "the standby did not replay {lsn} within 10 s:\n{}",
            standby.log()
        );
    }

    /// Waits until a standby streams from this primary with `sync_state`
    /// `state` (`async`, `sync`).
    pub fn wait_streaming(&self, state: &str) {
        let sql = format!(
            "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming' AND sync_state = '{state}'"
        );
        for _ in 0..200 {
            if self.psql("postgres", &sql).trim() != "0" {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!(
            "no standby streaming ({state}) within 10 s: {}\n{}",
            self.psql(
                "postgres",
                "SELECT application_name, state, sync_state FROM pg_stat_replication"
            ),
            self.log()
        );
    }
}

fn openssl(args: &[&str]) {
    run(
        Command::new("openssl").args(args),
        &format!("openssl {}", args.join(" ")),
    );
}

/// A new self-signed CA in `dir` (`NAME.key`, `NAME.pem`); returns the PEM.
#[must_use]
pub fn make_ca(dir: &Path, name: &str) -> PathBuf {
    let (key, pem) = (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.pem")),
    );
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        &key.display().to_string(),
        "-out",
        &pem.display().to_string(),
        "-days",
        "2",
        "-subj",
        &format!("/CN=preflight test {name}"),
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    pem
}

impl Drop for Pg {
    fn drop(&mut self) {
        let _ = as_postgres(&format!(
            "{} -D {} -m immediate stop",
            self.bin.join("pg_ctl").display(),
            self.data().display()
        ))
        .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
