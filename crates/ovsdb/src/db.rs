//! The monitored tables, keyed by row uuid, and the bridges of an
//! [`OvsSource`](preflight_model::OvsSource) built from them.
//!
//! Rows are kept as the server sent them (the `new` object of a row update)
//! and decoded only when the bridges are built, column by column: a column
//! that is missing or of the wrong type becomes a `parse_errors` entry on
//! that row's port or interface (or bridge) and every other column and row
//! is still read. A reference to a row the tables do not hold is an error on
//! the referencing row, never a silently shorter bond.
//!
//! What the server sends is bounded before it is kept or built: rows per
//! table ([`MAX_ROWS_PER_TABLE`], over it the whole state is refused),
//! references per set, each row built at most once however often it is
//! referenced, and the quoted `error` column and per-row errors cut short.
//! A node has tens of rows; these bounds only stop a hostile or broken
//! server from turning a small message into gigabytes.

use std::collections::{HashMap, HashSet};

use preflight_model::{OvsBridge, OvsInterface, OvsPort};
use serde_json::{Map, Value};

use crate::datum::{self, DatumError};

/// Tables and columns requested by the monitor; everything else is ignored.
pub const MONITORED: [(&str, &[&str]); 3] = [
    ("Bridge", &["name", "ports", "datapath_type"]),
    (
        "Port",
        &[
            "name",
            "interfaces",
            "bond_mode",
            "lacp",
            "bond_active_slave",
            "bond_updelay",
            "bond_downdelay",
            "other_config",
        ],
    ),
    (
        "Interface",
        &[
            "name",
            "type",
            "admin_state",
            "link_state",
            "link_resets",
            "lacp_current",
            "mac_in_use",
            "ifindex",
            "error",
            "link_speed",
            "duplex",
        ],
    ),
];

/// Rows one monitored table may hold. A node has tens; a message that
/// would leave more is refused whole (the session fails, the source reads
/// as unreadable) rather than kept in memory.
pub const MAX_ROWS_PER_TABLE: usize = 10_000;
/// References one set column (`Bridge.ports`, `Port.interfaces`) may hold:
/// more than a table may have rows cannot all be distinct rows.
pub const MAX_SET_REFERENCES: usize = MAX_ROWS_PER_TABLE;
/// Characters of the `error` column kept: it is quoted into findings.
pub const MAX_QUOTED_CHARS: usize = 256;
/// Errors kept per row; the rest are counted in one last entry.
const MAX_ROW_ERRORS: usize = 16;
/// A table whose map capacity exceeds four times its rows and this many
/// slots is shrunk, so a burst of rows later deleted is given back.
const SHRINK_ABOVE: usize = 64;

/// The three monitored tables: row uuid to the row's latest `new` value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tables {
    bridges: HashMap<String, Value>,
    ports: HashMap<String, Value>,
    interfaces: HashMap<String, Value>,
}

impl Tables {
    /// Applies a `<table-updates>` object (a monitor reply or the second
    /// parameter of an `update` notification). A row update with a `new`
    /// object replaces the row (the monitor sends every monitored column in
    /// `new`); one without `new`, or with a null `new`, deletes it. Unknown
    /// tables are ignored. Fails when the message as a whole is not a
    /// table-updates object or would leave a table with more than
    /// [`MAX_ROWS_PER_TABLE`] rows; then nothing has been applied and the
    /// caller must resync.
    pub fn apply(&mut self, updates: &Value) -> Result<(), String> {
        let tables = updates.as_object().ok_or_else(|| {
            format!(
                "table-updates is not an object: {}",
                datum::describe(updates)
            )
        })?;
        for (name, rows) in tables {
            let Some(table) = self.table(name) else {
                continue;
            };
            let rows = rows.as_object().ok_or_else(|| {
                format!(
                    "{name}: table-update is not an object: {}",
                    datum::describe(rows)
                )
            })?;
            let after = rows_after(table, rows);
            if after > MAX_ROWS_PER_TABLE {
                return Err(format!(
                    "{name}: the update leaves {after} rows, over the bound of {MAX_ROWS_PER_TABLE} rows per table; the state is not read"
                ));
            }
        }
        for (name, rows) in tables {
            let Some(table) = self.table_mut(name) else {
                continue;
            };
            for (uuid, update) in rows.as_object().into_iter().flatten() {
                match update.as_object().map(|u| u.get("new")) {
                    Some(None | Some(Value::Null)) => {
                        table.remove(uuid);
                    }
                    Some(Some(new)) => {
                        table.insert(uuid.clone(), new.clone());
                    }
                    // Not a row update at all: keep it as a row that fails
                    // to decode, so it shows as unreadable instead of
                    // vanishing or taking the whole message with it.
                    None => {
                        table.insert(uuid.clone(), update.clone());
                    }
                }
            }
            // HashMap never gives memory back by itself: without this a
            // burst of rows, deleted again, stays resident for good.
            if table.capacity() > SHRINK_ABOVE.max(table.len() * 4) {
                table.shrink_to_fit();
            }
        }
        Ok(())
    }

    fn table(&self, name: &str) -> Option<&HashMap<String, Value>> {
        match name {
            "Bridge" => Some(&self.bridges),
            "Port" => Some(&self.ports),
            "Interface" => Some(&self.interfaces),
            _ => None,
        }
    }

    fn table_mut(&mut self, name: &str) -> Option<&mut HashMap<String, Value>> {
        match name {
            "Bridge" => Some(&mut self.bridges),
            "Port" => Some(&mut self.ports),
            "Interface" => Some(&mut self.interfaces),
            _ => None,
        }
    }

    /// Bridges with their ports and interfaces, each level sorted by name.
    /// Each Port and Interface row is built once: a second reference to it
    /// is an error on the referencing row (OVS gives a port one bridge and
    /// an interface one port), so shared references cannot multiply rows.
    #[must_use]
    pub fn bridges(&self) -> Vec<OvsBridge> {
        // Sorted by uuid so which row claims a shared row, and which one
        // reports it, does not depend on hash order.
        let mut rows: Vec<(&String, &Value)> = self.bridges.iter().collect();
        rows.sort_by(|a, b| a.0.cmp(b.0));
        let mut built = Built::default();
        let mut bridges: Vec<OvsBridge> = rows
            .into_iter()
            .map(|(uuid, row)| self.bridge(uuid, row, &mut built))
            .collect();
        bridges.sort_by(|a, b| a.name.cmp(&b.name));
        bridges
    }

    fn bridge<'a>(&'a self, uuid: &str, row: &Value, built: &mut Built<'a>) -> OvsBridge {
        let mut r = Row::new("Bridge", uuid, row);
        let name = r.name();
        let datapath_type = r.column("datapath_type", datum::string).unwrap_or_default();
        let refs = r.refs("ports");
        let mut ports = Vec::with_capacity(refs.len());
        for port in refs {
            match self.ports.get_key_value(&port) {
                Some((key, _)) if !built.ports.insert(key) => r.error(format!(
                    "ports: Port {port} is already a port of another bridge"
                )),
                Some((key, row)) => ports.push(self.port(key, row, built)),
                None => r.error(format!("ports: no Port row {port}")),
            }
        }
        ports.sort_by(|a, b| a.name.cmp(&b.name));
        OvsBridge {
            name,
            datapath_type,
            ports,
            parse_errors: r.into_errors(),
        }
    }

    fn port<'a>(&'a self, uuid: &str, row: &Value, built: &mut Built<'a>) -> OvsPort {
        let mut r = Row::new("Port", uuid, row);
        let name = r.name();
        let bond_mode = r.optional("bond_mode", datum::string);
        let lacp = r.optional("lacp", datum::string);
        let bond_active_slave = r.optional("bond_active_slave", datum::string);
        let bond_updelay_ms = r.column("bond_updelay", datum::integer).unwrap_or(0);
        let bond_downdelay_ms = r.column("bond_downdelay", datum::integer).unwrap_or(0);
        let other_config = r
            .column("other_config", datum::string_map)
            .unwrap_or_default();
        let refs = r.refs("interfaces");
        let mut interfaces = Vec::with_capacity(refs.len());
        for iface in refs {
            match self.interfaces.get_key_value(&iface) {
                Some((key, _)) if !built.interfaces.insert(key) => r.error(format!(
                    "interfaces: Interface {iface} is already a member of another port"
                )),
                Some((key, row)) => interfaces.push(interface(key, row)),
                None => r.error(format!("interfaces: no Interface row {iface}")),
            }
        }
        interfaces.sort_by(|a, b| a.name.cmp(&b.name));
        OvsPort {
            name,
            bond_mode,
            lacp,
            bond_active_slave,
            bond_updelay_ms,
            bond_downdelay_ms,
            other_config,
            interfaces,
            parse_errors: r.into_errors(),
        }
    }
}

/// The rows a table would hold after `rows` (a table-update) is applied.
fn rows_after(table: &HashMap<String, Value>, rows: &Map<String, Value>) -> usize {
    let mut len = table.len();
    for (uuid, update) in rows {
        let deletes = update
            .as_object()
            .is_some_and(|u| u.get("new").is_none_or(Value::is_null));
        match (table.contains_key(uuid), deletes) {
            (false, false) => len += 1,
            (true, true) => len -= 1,
            _ => {}
        }
    }
    len
}

/// The Port and Interface rows already built by one [`Tables::bridges`].
#[derive(Default)]
struct Built<'a> {
    ports: HashSet<&'a str>,
    interfaces: HashSet<&'a str>,
}

fn interface(uuid: &str, row: &Value) -> OvsInterface {
    let mut r = Row::new("Interface", uuid, row);
    OvsInterface {
        name: r.name(),
        iface_type: r.column("type", datum::string).unwrap_or_default(),
        admin_state: r.optional("admin_state", datum::string),
        link_state: r.optional("link_state", datum::string),
        link_resets: r.optional("link_resets", datum::integer),
        lacp_current: r.optional("lacp_current", datum::boolean),
        mac_in_use: r.optional("mac_in_use", datum::string),
        ifindex: r.optional("ifindex", |v| {
            let i = datum::integer(v)?;
            u32::try_from(i).map_err(|_| format!("ifindex {i} out of range"))
        }),
        error: r.optional("error", |v| {
            datum::string(v).map(|e| datum::excerpt(&e, MAX_QUOTED_CHARS))
        }),
        link_speed: r.optional("link_speed", datum::integer),
        duplex: r.optional("duplex", datum::string),
        parse_errors: r.into_errors(),
    }
}

/// One row being decoded, collecting what could not be read.
struct Row<'a> {
    table: &'static str,
    uuid: &'a str,
    columns: Option<&'a Map<String, Value>>,
    errors: Vec<String>,
    /// Errors past [`MAX_ROW_ERRORS`], counted instead of kept.
    dropped: usize,
}

impl<'a> Row<'a> {
    fn new(table: &'static str, uuid: &'a str, row: &'a Value) -> Self {
        let columns = row.as_object();
        let mut r = Self {
            table,
            uuid,
            columns,
            errors: Vec::new(),
            dropped: 0,
        };
        if columns.is_none() {
            r.error(format!("row is not an object: {}", datum::describe(row)));
        }
        r
    }

    fn error(&mut self, e: String) {
        if self.errors.len() < MAX_ROW_ERRORS {
            self.errors.push(e);
        } else {
            self.dropped += 1;
        }
    }

    fn into_errors(mut self) -> Vec<String> {
        if self.dropped > 0 {
            self.errors
                .push(format!("and {} more errors on this row", self.dropped));
        }
        self.errors
    }

    /// A set-of-references column; unreadable (so empty) when malformed.
    fn refs(&mut self, name: &str) -> Vec<String> {
        self.column(name, |v| datum::uuid_set(v, MAX_SET_REFERENCES))
            .unwrap_or_default()
    }

    /// `name`, or a stand-in naming the row's uuid so the row still shows.
    fn name(&mut self) -> String {
        self.column("name", datum::string)
            .unwrap_or_else(|| format!("<{} {}>", self.table, self.uuid))
    }

    fn column<T>(
        &mut self,
        name: &str,
        read: impl Fn(&Value) -> Result<T, DatumError>,
    ) -> Option<T> {
        let columns = self.columns?;
        let Some(value) = columns.get(name) else {
            self.error(format!("{name}: column missing"));
            return None;
        };
        match read(value) {
            Ok(v) => Some(v),
            Err(e) => {
                self.error(format!("{name}: {e}"));
                None
            }
        }
    }

    fn optional<T>(
        &mut self,
        name: &str,
        read: impl Fn(&Value) -> Result<T, DatumError>,
    ) -> Option<T> {
        self.column(name, |v| datum::optional(v, &read)).flatten()
    }
}

#[cfg(test)]
mod tests;
