//! The PostgreSQL backend, shared by several aggregator replicas. One
//! connection per replica, reopened on the next call after it broke (so a
//! database that comes back is used again without a restart). Every change
//! to inventory or waivers sends a `NOTIFY` in its own transaction, which
//! PostgreSQL delivers on commit to every replica's [`PgListener`].
//!
//! Migrations are numbered; the applied number is in `schema_version`, and
//! replicas starting together take an advisory lock so only one migrates.

use std::time::{Duration, SystemTime};

use fallible_iterator::FallibleIterator;
use postgres::{Client, NoTls, Transaction};
use preflight_model::report::Waiver;

use super::pgconf::{PgSettings, PG_CHANNEL};
use super::pgsync::Notices;
use super::pgtls::{client_config, SslMode};
use super::rows::{self as row, sure, Audit};
use super::{
    millis, parse_labels, parse_report, retired_json, AuditEntry, Labels, NodeChange,
    PendingReport, StoreError, StoredReport,
};
use crate::BootAnchor;

/// Migration `i` takes the schema from version `i` to `i + 1`. Never edit
/// one that has shipped: add the next (and keep each readable by the
/// previous release, so replicas can be upgraded one at a time).
const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE nodes(
        name TEXT PRIMARY KEY, labels TEXT NOT NULL, added_at BIGINT NOT NULL);
    CREATE TABLE reports(
        node TEXT PRIMARY KEY, boot_id TEXT NOT NULL, seq BIGINT NOT NULL,
        received_at BIGINT NOT NULL, state TEXT NOT NULL);
    CREATE TABLE waivers(
        id BIGSERIAL PRIMARY KEY, node TEXT NOT NULL, code TEXT, subject TEXT,
        reason TEXT NOT NULL, author TEXT NOT NULL, created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL, ended_at BIGINT, ended_by TEXT);
    CREATE INDEX waivers_active ON waivers(expires_at) WHERE ended_at IS NULL;
    CREATE TABLE audit(
        id BIGSERIAL PRIMARY KEY, at BIGINT NOT NULL, actor TEXT NOT NULL,
        action TEXT NOT NULL, detail TEXT NOT NULL);
",
    "
    ALTER TABLE nodes ADD COLUMN origin TEXT NOT NULL DEFAULT 'inventory';
    ALTER TABLE waivers ADD COLUMN boot_id TEXT, ADD COLUMN boot_ms BIGINT;
",
    // The boot ids a node's agent left behind (a JSON array of hex
    // fingerprints), so that a restart keeps refusing their replays.
    "
    ALTER TABLE reports ADD COLUMN retired_boots TEXT;
",
    // Maintenance leases; a node is under one lease at most (crate::lease).
    "
    CREATE TABLE IF NOT EXISTS leases(
        id BIGSERIAL PRIMARY KEY, nodes TEXT NOT NULL, pipeline TEXT NOT NULL,
        reason TEXT NOT NULL, author TEXT NOT NULL, created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL, ended_at BIGINT, ended_by TEXT);
    CREATE TABLE IF NOT EXISTS lease_nodes(node TEXT PRIMARY KEY, lease_id BIGINT NOT NULL);
",
];

/// Key of the advisory lock held while migrating (any constant unique to preflight).
const MIGRATION_LOCK: i64 = 0x7072_6566_6c69_6768;

/// The schema version this preflight writes.
#[must_use]
pub fn schema_version() -> i64 {
    i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX)
}

/// The error with its causes: the driver's top-level message alone is often
/// just "error connecting to server".
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let c_text = c.to_string();
        if !s.contains(&c_text) {
            s.push_str(": ");
            s.push_str(&c_text);
        }
        src = c.source();
    }
    s
}

fn connect(settings: &PgSettings, notices: Option<&Notices>) -> Result<Client, StoreError> {
    let err = |message| StoreError::Postgres {
        db: settings.display.clone(),
        message,
    };
    let mut cfg = settings.config().map_err(err)?;
    if let Some(n) = notices {
        n.attach(&mut cfg);
    }
    match settings.sslmode {
        SslMode::Disable => cfg.connect(NoTls),
        mode => {
            let tls = client_config(mode, settings.ca_file.as_ref()).map_err(err)?;
            cfg.connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls))
        }
    }
    .map_err(|e| err(chain(&e)))
}

/// The PostgreSQL store of one replica.
pub struct PgStore {
    settings: PgSettings,
    client: Option<Client>,
    /// Warnings the server sent (a cancelled wait for a standby).
    pub(super) notices: Notices,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("db", &self.settings.display)
            .finish_non_exhaustive()
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // The synchronous client closes through its own runtime, which must
        // not run inside the service's: close it on a thread of its own.
        if let Some(c) = self.client.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                let _ = std::thread::Builder::new()
                    .name("pg-close".into())
                    .spawn(move || drop(c));
            }
        }
    }
}

impl PgStore {
    /// Connects and applies missing migrations.
    ///
    /// # Errors
    /// Unreachable database, or a schema newer than this preflight.
    pub fn open(settings: &PgSettings) -> Result<Self, StoreError> {
        let notices = Notices::default();
        let mut s = Self {
            settings: settings.clone(),
            client: Some(connect(settings, Some(&notices))?),
            notices,
        };
        let found = s.run(|c| {
            let mut tx = c.transaction()?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
            tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version(version BIGINT NOT NULL)")?;
            let found: Option<i64> = tx
                .query_one("SELECT max(version) FROM schema_version", &[])?
                .get(0);
            let found = found.unwrap_or(0);
            if found > schema_version() {
                return Ok(found);
            }
            for m in MIGRATIONS
                .iter()
                .skip(usize::try_from(found).unwrap_or(usize::MAX))
            {
                tx.batch_execute(m)?;
            }
            if found < schema_version() {
                tx.execute("DELETE FROM schema_version", &[])?;
                tx.execute(
                    "INSERT INTO schema_version(version) VALUES($1)",
                    &[&schema_version()],
                )?;
                tracing::info!(db = %settings.display, from = found, to = schema_version(), "database schema migrated");
            }
            tx.commit()?;
            Ok(found)
        })?;
        if found > schema_version() {
            return Err(StoreError::Schema {
                path: settings.display.clone(),
                found,
                supported: schema_version(),
            });
        }
        Ok(s)
    }

    /// A store that connects on its first call, without migrating: a
    /// second connection of a replica whose store is already open.
    pub(super) fn unopened(settings: &PgSettings) -> Self {
        Self {
            settings: settings.clone(),
            client: None,
            notices: Notices::default(),
        }
    }

    /// Where it connects.
    #[must_use]
    pub fn settings(&self) -> &PgSettings {
        &self.settings
    }

    /// Runs `f` on the connection, connecting first if there is none; a
    /// connection that broke is dropped so that the next call reconnects.
    pub(super) fn run<T>(
        &mut self,
        f: impl FnOnce(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T, StoreError> {
        if self.client.as_ref().is_some_and(Client::is_closed) {
            self.client = None;
        }
        let client = match &mut self.client {
            Some(c) => c,
            None => self
                .client
                .insert(connect(&self.settings, Some(&self.notices))?),
        };
        f(client).map_err(|e| {
            if e.as_db_error().is_none() {
                self.client = None;
            }
            StoreError::Postgres {
                db: self.settings.display.clone(),
                message: chain(&e),
            }
        })
    }

    pub(super) fn audit_tx(tx: &mut Transaction<'_>, a: &Audit<'_>) -> Result<(), postgres::Error> {
        tx.execute(
            "INSERT INTO audit(at, actor, action, detail) VALUES($1, $2, $3, $4)",
            &[&a.at_ms(), &a.actor, &a.action, &a.detail],
        )
        .map(|_| ())
    }

    pub(super) fn nodes(&mut self) -> Result<Vec<(String, Labels)>, StoreError> {
        let rows = self.run(|c| c.query("SELECT name, labels FROM nodes ORDER BY name", &[]))?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let name: String = r.get(0);
                parse_labels(&name, r.get(1)).map(|l| (name, l))
            })
            .collect())
    }

    pub(super) fn agent_nodes(&mut self) -> Result<Vec<String>, StoreError> {
        let rows = self.run(|c| c.query("SELECT name FROM nodes WHERE origin='agent'", &[]))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    pub(super) fn open_waivers(&mut self) -> Result<Vec<(Waiver, Option<BootAnchor>)>, StoreError> {
        let rows = self.run(|c| {
            c.query(
                "SELECT id, node, code, subject, reason, author, created_at, expires_at, boot_id, boot_ms
                 FROM waivers WHERE ended_at IS NULL ORDER BY id",
                &[],
            )
        })?;
        Ok(rows.iter().map(|r| sure(row::anchored_waiver(r))).collect())
    }

    pub(super) fn reports(&mut self) -> Result<Vec<StoredReport>, StoreError> {
        let rows = self.run(|c| {
            c.query(
                "SELECT node, boot_id, seq, received_at, state, retired_boots FROM reports",
                &[],
            )
        })?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                parse_report(r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5))
            })
            .collect())
    }

    pub(super) fn active_waivers(&mut self, now: SystemTime) -> Result<Vec<Waiver>, StoreError> {
        let rows = self.run(|c| {
            c.query(
                "SELECT id, node, code, subject, reason, author, created_at, expires_at FROM waivers
                 WHERE ended_at IS NULL AND expires_at > $1 ORDER BY id",
                &[&millis(now)],
            )
        })?;
        Ok(rows.iter().map(|r| sure(row::waiver(r))).collect())
    }

    pub(super) fn upsert_node(
        &mut self,
        name: &str,
        labels: &Labels,
        actor: &str,
        at: SystemTime,
    ) -> Result<(), StoreError> {
        self.upsert_nodes(&[NodeChange {
            name: name.to_owned(),
            labels: labels.clone(),
            actor: actor.to_owned(),
            at,
        }])
    }

    pub(super) fn remove_node(
        &mut self,
        name: &str,
        actor: &str,
        at: SystemTime,
    ) -> Result<(), StoreError> {
        self.change("nodes", |tx| {
            tx.execute("DELETE FROM nodes WHERE name=$1", &[&name])?;
            tx.execute("DELETE FROM reports WHERE node=$1", &[&name])?;
            Self::audit_tx(tx, &Audit::node_remove(name, actor, at))
        })
    }

    pub(super) fn insert_waiver(&mut self, mut w: Waiver) -> Result<Waiver, StoreError> {
        let anchor = BootAnchor::now();
        let (w, unsynced) = self.change_bounded("waivers", |tx| {
            let row = tx.query_one(
                "INSERT INTO waivers(node, code, subject, reason, author, created_at, expires_at, boot_id, boot_ms)
                 VALUES($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
                &[
                    &w.node,
                    &w.code,
                    &w.subject,
                    &w.reason,
                    &w.author,
                    &millis(w.created_at),
                    &millis(w.expires_at),
                    &anchor.as_ref().map(|a| a.boot_id.clone()),
                    &anchor.as_ref().map(|a| a.boot_ms),
                ],
            )?;
            w.id = row.get(0);
            Self::audit_tx(tx, &Audit::waiver_create(&w))?;
            Ok(w)
        })?;
        match unsynced {
            None => Ok(w),
            Some(why) => {
                // Refused, yet committed on the primary, where the other
                // replicas would take it up: end it there at once.
                if let Err(e) = self.end_refused(w.id, SystemTime::now()) {
                    tracing::error!(waiver = w.id, error = %e, "cannot end a refused waiver on the primary; other replicas may apply it until a failover drops it");
                }
                Err(self.unsynced("waivers", why))
            }
        }
    }

    pub(super) fn end_waiver(
        &mut self,
        w: &Waiver,
        actor: &str,
        action: &str,
        at: SystemTime,
    ) -> Result<bool, StoreError> {
        self.change("waivers", |tx| {
            let ended = tx.execute(
                "UPDATE waivers SET ended_at=$1, ended_by=$2 WHERE id=$3 AND ended_at IS NULL",
                &[&millis(at), &actor, &w.id],
            )?;
            if ended == 0 {
                return Ok(false);
            }
            Self::audit_tx(tx, &Audit::waiver_end(w, actor, action, at))?;
            Ok(true)
        })
    }

    pub(super) fn expire_due(&mut self, now: SystemTime) -> Result<usize, StoreError> {
        self.change("waivers", |tx| {
            // FOR UPDATE: a replica catching up at the same moment waits for
            // this transaction, then finds these rows ended (each expiry is
            // audited once across replicas).
            let rows = tx.query(
                "SELECT id, node, code, subject, reason, author, created_at, expires_at FROM waivers
                 WHERE ended_at IS NULL AND expires_at <= $1 ORDER BY id FOR UPDATE",
                &[&millis(now)],
            )?;
            for r in &rows {
                let w = sure(row::waiver(r));
                tx.execute(
                    "UPDATE waivers SET ended_at=expires_at, ended_by='aggregator' WHERE id=$1",
                    &[&w.id],
                )?;
                Self::audit_tx(tx, &Audit::waiver_expire(&w))?;
            }
            Ok(rows.len())
        })
    }

    pub(super) fn save_reports(&mut self, batch: &[PendingReport]) -> Result<(), StoreError> {
        // One statement for the whole batch: a round trip per report would
        // make the writer fall behind at fleet sizes SQLite handles.
        let nodes: Vec<&str> = batch.iter().map(|r| r.node.as_str()).collect();
        let boots: Vec<&str> = batch.iter().map(|r| r.boot_id.as_str()).collect();
        let seqs: Vec<i64> = batch
            .iter()
            .map(|r| i64::try_from(r.seq).unwrap_or(i64::MAX))
            .collect();
        let ats: Vec<i64> = batch.iter().map(|r| millis(r.received_at)).collect();
        let states: Vec<&str> = batch.iter().map(|r| r.state_json.as_str()).collect();
        // The retired boot ids go in the same row (NULL keeps the stored ones).
        let retired: Vec<Option<String>> = batch
            .iter()
            .map(|r| retired_json(&r.retired_boots))
            .collect();
        self.run(|c| {
            let mut tx = c.transaction()?;
            // Reports are cheap to lose (the next one replaces them): the
            // writer does not wait for the WAL flush, which would otherwise
            // cost one disk sync per batch.
            tx.batch_execute("SET LOCAL synchronous_commit TO off")?;
            tx.execute(
                "INSERT INTO reports(node, boot_id, seq, received_at, state, retired_boots)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::text[], $6::text[])
                 ON CONFLICT(node) DO UPDATE SET boot_id=excluded.boot_id, seq=excluded.seq,
                 received_at=excluded.received_at, state=excluded.state,
                 retired_boots=COALESCE(excluded.retired_boots, reports.retired_boots)",
                &[&nodes, &boots, &seqs, &ats, &states, &retired],
            )?;
            tx.commit()
        })
    }

    pub(super) fn append_audit(
        &mut self,
        at: SystemTime,
        actor: &str,
        action: &str,
        detail: &serde_json::Value,
    ) -> Result<(), StoreError> {
        self.change("audit", |tx| {
            Self::audit_tx(tx, &Audit::new(at, actor, action, detail))
        })
    }

    pub(super) fn audit(&mut self, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = self.run(|c| {
            c.query(
                "SELECT id, at, actor, action, detail FROM audit ORDER BY id DESC LIMIT $1",
                &[&i64::from(limit)],
            )
        })?;
        Ok(rows.iter().map(|r| sure(row::audit_entry(r))).collect())
    }
}

/// A replica's own connection that `LISTEN`s for changes made by any
/// replica (its own included).
pub struct PgListener {
    client: Client,
    display: String,
    /// The payload suffix of this replica's own announcements.
    own: String,
}

impl PgListener {
    /// Connects and starts listening.
    ///
    /// # Errors
    /// Unreachable database.
    pub fn connect(settings: &PgSettings) -> Result<Self, StoreError> {
        let mut client = connect(settings, None)?;
        client
            .batch_execute(&format!("LISTEN {PG_CHANNEL}"))
            .map_err(|e| StoreError::Postgres {
                db: settings.display.clone(),
                message: chain(&e),
            })?;
        Ok(Self {
            client,
            display: settings.display.clone(),
            own: format!(" {}", settings.origin),
        })
    }

    /// Waits up to `timeout` for announcements and returns their payloads
    /// (every one that is pending; empty after a quiet `timeout`), except
    /// those of this replica's own changes.
    ///
    /// # Errors
    /// The connection broke: connect again, and reload everything, since
    /// announcements made meanwhile are lost.
    pub fn wait(&mut self, timeout: Duration) -> Result<Vec<String>, StoreError> {
        let display = self.display.clone();
        let broken = |message: String| StoreError::Postgres {
            db: display.clone(),
            message,
        };
        let mut out = Vec::new();
        {
            let mut n = self.client.notifications();
            if let Some(m) = n
                .timeout_iter(timeout)
                .next()
                .map_err(|e| broken(chain(&e)))?
            {
                out.push(m.payload().to_owned());
            }
            let mut pending = n.iter();
            while let Some(m) = pending.next().map_err(|e| broken(chain(&e)))? {
                out.push(m.payload().to_owned());
            }
        }
        out.retain(|p| !p.ends_with(&self.own));
        if self.client.is_closed() {
            return Err(broken("connection closed".into()));
        }
        Ok(out)
    }
}
