//! Maintenance leases on PostgreSQL (see [`crate::lease`]), shared by the
//! replicas. Taking a lease holds a transaction-scoped advisory lock, so
//! that two replicas planning at once see each other's leases and their
//! batches together stay within the limits; the `lease_nodes` primary key
//! still refuses a node leased twice should anything bypass the lock.
//! Every change announces `leases` to the other replicas.

use std::collections::BTreeSet;
use std::time::SystemTime;

use postgres::Transaction;

use super::lease::{self, Lease, Taken, COLUMNS};
use super::postgres::PgStore;
use super::rows::sure;
use super::{millis, StoreError};

/// Key of the advisory lock held while a lease is taken.
const LEASE_LOCK: i64 = 0x7072_6566_6c65_6173;

fn expire(tx: &mut Transaction<'_>, now: SystemTime) -> Result<Vec<Lease>, postgres::Error> {
    // FOR UPDATE: a replica expiring at the same moment waits, then finds
    // these ended (each expiry is audited once).
    let rows = tx.query(
        &format!(
            "SELECT {COLUMNS} FROM leases WHERE ended_at IS NULL AND expires_at <= $1
             ORDER BY id FOR UPDATE"
        ),
        &[&millis(now)],
    )?;
    let due: Vec<Lease> = rows.iter().map(|r| sure(lease::lease(r))).collect();
    for l in &due {
        tx.execute(
            "UPDATE leases SET ended_at=expires_at, ended_by='aggregator' WHERE id=$1",
            &[&l.id],
        )?;
        tx.execute("DELETE FROM lease_nodes WHERE lease_id=$1", &[&l.id])?;
        PgStore::audit_tx(
            tx,
            &lease::audit_end(l, "aggregator", "lease.expire", l.expires_at),
        )?;
    }
    Ok(due)
}

impl PgStore {
    pub(super) fn open_leases(&mut self) -> Result<Vec<Lease>, StoreError> {
        let rows = self.run(|c| {
            c.query(
                &format!("SELECT {COLUMNS} FROM leases WHERE ended_at IS NULL ORDER BY id"),
                &[],
            )
        })?;
        Ok(rows.iter().map(|r| sure(lease::lease(r))).collect())
    }

    pub(super) fn take_lease<T>(
        &mut self,
        now: SystemTime,
        choose: impl FnOnce(&BTreeSet<String>) -> (Option<Lease>, T),
    ) -> Result<(Taken, T), StoreError> {
        self.change("leases", |tx| {
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LEASE_LOCK])?;
            expire(tx, now)?;
            let leased: BTreeSet<String> = tx
                .query("SELECT node FROM lease_nodes", &[])?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let (asked, t) = choose(&leased);
            let Some(mut l) = asked else {
                return Ok((Taken::Nothing, t));
            };
            let taken = lease::conflicts(&l, &leased);
            if !taken.is_empty() {
                return Ok((Taken::Conflict(taken), t));
            }
            let row = tx.query_one(
                "INSERT INTO leases(nodes, pipeline, reason, author, created_at, expires_at)
                 VALUES($1, $2, $3, $4, $5, $6) RETURNING id",
                &[
                    &lease::nodes_json(&l),
                    &l.pipeline,
                    &l.reason,
                    &l.author,
                    &millis(l.created_at),
                    &millis(l.expires_at),
                ],
            )?;
            l.id = row.get(0);
            tx.execute(
                "INSERT INTO lease_nodes(node, lease_id) SELECT unnest($1::text[]), $2",
                &[&l.nodes, &l.id],
            )?;
            Self::audit_tx(tx, &lease::audit_create(&l))?;
            Ok((Taken::Leased(l), t))
        })
    }

    pub(super) fn end_lease(
        &mut self,
        id: i64,
        actor: &str,
        at: SystemTime,
    ) -> Result<Option<Lease>, StoreError> {
        self.change("leases", |tx| {
            let rows = tx.query(
                &format!(
                    "SELECT {COLUMNS} FROM leases WHERE id=$1 AND ended_at IS NULL FOR UPDATE"
                ),
                &[&id],
            )?;
            let Some(l) = rows.first().map(|r| sure(lease::lease(r))) else {
                return Ok(None);
            };
            tx.execute(
                "UPDATE leases SET ended_at=$1, ended_by=$2 WHERE id=$3",
                &[&millis(at), &actor, &id],
            )?;
            tx.execute("DELETE FROM lease_nodes WHERE lease_id=$1", &[&id])?;
            Self::audit_tx(tx, &lease::audit_end(&l, actor, "lease.end", at))?;
            Ok(Some(l))
        })
    }

    pub(super) fn expire_leases(&mut self, now: SystemTime) -> Result<Vec<Lease>, StoreError> {
        self.change("leases", |tx| expire(tx, now))
    }
}
