//! How to reach PostgreSQL: the `aggregator.database` URL, checked when the
//! configuration is validated, and the password, read when connecting (from
//! the URL, `aggregator.database_password_file`, or a `PGPASSFILE` entry) so
//! that a rotated password file is picked up on the next reconnect.
//!
//! `sslmode` is libpq's (see [`super::pgtls`]); the CA for `verify-ca` and
//! `verify-full` is `aggregator.database_ca_file`, else the system's roots.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use super::pgtls::SslMode;

/// The channel every change to inventory or waivers is announced on.
pub const PG_CHANNEL: &str = "preflight_changes";

/// How long a connection attempt may take before the database counts as
/// unreachable (a write is answered 503 well within the request timeout).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A validated `postgres://` database.
#[derive(Clone, PartialEq, Eq)]
pub struct PgSettings {
    /// The URL without its `sslmode` (the driver knows no `verify-*`).
    url: String,
    password_file: Option<PathBuf>,
    /// `sslmode` (libpq's default, `prefer`, when absent).
    pub sslmode: SslMode,
    /// The CA to check the server's certificate against; `None`: system roots.
    pub ca_file: Option<PathBuf>,
    /// This replica's mark on its announcements (unique per parse, across
    /// hosts), so that its listener skips the changes it made itself.
    pub(crate) origin: String,
    /// The database as shown in logs and errors: no password.
    pub display: String,
}

impl std::fmt::Debug for PgSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSettings")
            .field("db", &self.display)
            .field("password_file", &self.password_file)
            .field("sslmode", &self.sslmode)
            .field("ca_file", &self.ca_file)
            .finish_non_exhaustive()
    }
}

/// Whether `database` names PostgreSQL rather than a SQLite file.
#[must_use]
pub fn is_postgres_url(database: &str) -> bool {
    database.starts_with("postgres://") || database.starts_with("postgresql://")
}

impl PgSettings {
    /// Checks a `postgres://` URL; `password_file` is read at connect time.
    ///
    /// # Errors
    /// A URL the driver cannot parse, or an unknown (or `allow`) sslmode.
    pub fn parse(url: &str, password_file: Option<PathBuf>) -> Result<Self, String> {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut sslmode = SslMode::Prefer;
        let mut rest = Vec::new();
        for kv in query.split('&').filter(|kv| !kv.is_empty()) {
            match kv.split_once('=') {
                Some(("sslmode", v)) => sslmode = SslMode::parse(v)?,
                _ => rest.push(kv),
            }
        }
        let url = if rest.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", rest.join("&"))
        };
        let cfg = postgres::Config::from_str(&url).map_err(|e| {
            format!("not a PostgreSQL URL ({e}); e.g. postgres://preflight@db:5432/preflight")
        })?;
        if cfg.get_user().is_none() {
            return Err("the URL names no user: postgres://USER@HOST/DB".into());
        }
        if cfg.get_password().is_some() && password_file.is_some() {
            return Err("a password in the URL and database_password_file: give only one".into());
        }
        let hosts = cfg
            .get_hosts()
            .iter()
            .zip(cfg.get_ports().iter().chain(std::iter::repeat(&5432)))
            .map(|(h, p)| match h {
                postgres::config::Host::Tcp(h) => format!("{h}:{p}"),
                postgres::config::Host::Unix(d) => format!("{}:{p}", d.display()),
            })
            .collect::<Vec<_>>()
            .join(",");
        let display = format!(
            "postgres://{}@{hosts}/{}",
            cfg.get_user().unwrap_or_default(),
            cfg.get_dbname().unwrap_or_default()
        );
        Ok(Self {
            url,
            password_file,
            sslmode,
            ca_file: None,
            origin: new_origin(),
            display,
        })
    }

    /// Sets `aggregator.database_ca_file` (read at every connect).
    ///
    /// # Errors
    /// A CA file with an `sslmode` that checks no certificate.
    pub fn with_ca_file(mut self, ca_file: Option<PathBuf>) -> Result<Self, String> {
        if ca_file.is_some() && matches!(self.sslmode, SslMode::Disable | SslMode::Prefer) {
            return Err(
                "a CA file is used only with sslmode=require, verify-ca or verify-full".into(),
            );
        }
        self.ca_file = ca_file;
        Ok(self)
    }

    /// The driver's configuration with the password resolved.
    ///
    /// # Errors
    /// An unreadable or empty password file.
    pub fn config(&self) -> Result<postgres::Config, String> {
        let mut cfg = postgres::Config::from_str(&self.url).map_err(|e| e.to_string())?;
        cfg.ssl_mode(self.sslmode.driver());
        if cfg.get_connect_timeout().is_none() {
            cfg.connect_timeout(CONNECT_TIMEOUT);
        }
        // A database host that vanishes without closing the connection is
        // noticed within about a minute instead of the kernel's two hours.
        cfg.keepalives(true)
            .keepalives_idle(Duration::from_secs(30));
        if cfg.get_application_name().is_none() {
            cfg.application_name("preflight-aggregator");
        }
        if cfg.get_password().is_none() {
            if let Some(f) = &self.password_file {
                let p = std::fs::read_to_string(f)
                    .map_err(|e| format!("database_password_file {}: {e}", f.display()))?;
                let p = p.trim_end_matches(['\n', '\r']);
                if p.is_empty() {
                    return Err(format!("database_password_file {} is empty", f.display()));
                }
                cfg.password(p);
            } else if let Some(f) = std::env::var_os("PGPASSFILE") {
                if let Some(p) = pgpass_lookup(Path::new(&f), &cfg)? {
                    cfg.password(p);
                }
            }
        }
        Ok(cfg)
    }
}

/// A mark unique to this replica: the kernel's random UUID (pid and clock
/// when it cannot be read), plus a counter for several stores in one process.
fn new_origin() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let id = std::fs::read_to_string("/proc/sys/kernel/random/uuid").map_or_else(
        |_| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            format!("{}-{}", std::process::id(), t.as_nanos())
        },
        |s| s.trim().to_owned(),
    );
    format!("{id}.{n}")
}

/// Splits a `.pgpass` line into its fields (`:` separates, `\` escapes).
fn pgpass_fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => fields.last_mut().expect("never empty").extend(chars.next()),
            ':' => fields.push(String::new()),
            c => fields.last_mut().expect("never empty").push(c),
        }
    }
    fields
}

/// The password of the first `PGPASSFILE` line that matches the first host,
/// its port, the database and the user (`*` matches anything), as libpq.
fn pgpass_lookup(file: &Path, cfg: &postgres::Config) -> Result<Option<String>, String> {
    let text =
        std::fs::read_to_string(file).map_err(|e| format!("PGPASSFILE {}: {e}", file.display()))?;
    let host = match cfg.get_hosts().first() {
        Some(postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "localhost".to_owned(),
    };
    let port = cfg.get_ports().first().copied().unwrap_or(5432).to_string();
    let user = cfg.get_user().unwrap_or_default();
    let db = cfg.get_dbname().unwrap_or(user);
    let wanted = [host.as_str(), port.as_str(), db, user];
    for line in text.lines() {
        if line.trim_start().starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let f = pgpass_fields(line);
        if f.len() == 5
            && f.iter()
                .zip(wanted)
                .all(|(have, want)| have == "*" || have == want)
        {
            return Ok(Some(f[4].clone()));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_sslmodes() {
        let s = PgSettings::parse(
            "postgres://agg:secret@db:5433/preflight?sslmode=disable",
            None,
        )
        .expect("valid");
        assert_eq!(s.display, "postgres://agg@db:5433/preflight");
        assert!(!format!("{s:?}").contains("secret"));
        assert_eq!(s.sslmode, SslMode::Disable);
        for (q, mode) in [
            ("", SslMode::Prefer),
            ("?sslmode=prefer", SslMode::Prefer),
            ("?sslmode=require", SslMode::Require),
            ("?application_name=x&sslmode=verify-ca", SslMode::VerifyCa),
            (
                "?sslmode=verify-full&connect_timeout=2",
                SslMode::VerifyFull,
            ),
        ] {
            let s = PgSettings::parse(&format!("postgres://agg@db/preflight{q}"), None).expect(q);
            assert_eq!(s.sslmode, mode, "{q}");
            let cfg = s.config().expect("driver config");
            assert_eq!(
                cfg.get_ssl_mode(),
                mode.driver(),
                "{q}: the driver sees TLS as required, preferred or off"
            );
        }
        let e = PgSettings::parse("postgres://agg@db/preflight?sslmode=allow", None)
            .expect_err("allow");
        assert!(e.contains("allow"), "{e}");
        let ca = Some(PathBuf::from("/etc/ca.pem"));
        assert!(
            PgSettings::parse("postgres://agg@db/p?sslmode=verify-full", None)
                .expect("ok")
                .with_ca_file(ca.clone())
                .is_ok()
        );
        let e = PgSettings::parse("postgres://agg@db/p?sslmode=disable", None)
            .expect("ok")
            .with_ca_file(ca)
            .expect_err("CA without TLS checks");
        assert!(e.contains("only with sslmode"), "{e}");
        assert!(
            PgSettings::parse("postgres://db/preflight", None).is_err(),
            "no user"
        );
        assert!(
            PgSettings::parse("postgres://a:p@db/preflight", Some(PathBuf::from("/f"))).is_err()
        );
    }

    #[test]
    fn password_from_file_and_pgpass() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("pw");
        std::fs::write(&f, "s3cret\n").expect("write");
        let s = PgSettings::parse("postgres://agg@db/preflight", Some(f)).expect("valid");
        assert_eq!(
            s.config().expect("cfg").get_password(),
            Some(&b"s3cret"[..])
        );
        let pass = dir.path().join("pgpass");
        std::fs::write(
            &pass,
            "# comment\nother:*:*:*:no\ndb:5432:preflight:agg:p\\:w\n",
        )
        .expect("write");
        let cfg = postgres::Config::from_str("postgres://agg@db/preflight").expect("cfg");
        assert_eq!(
            pgpass_lookup(&pass, &cfg).expect("read"),
            Some("p:w".to_owned())
        );
    }
}
