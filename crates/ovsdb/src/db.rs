//! The monitored tables, keyed by row uuid, and the bridges of an
//! [`OvsSource`](preflight_model::OvsSource) built from them.
//!
//! Rows are kept as the server sent them (the `new` object of a row update)
//! and decoded only when the bridges are built, column by column: a column
//! that is missing or of the wrong type becomes a `parse_errors` entry on
//! that row's port or interface (or bridge) and every other column and row
//! is still read. A reference to a row the tables do not hold is an error on
//! the referencing row, never a silently shorter bond.

use std::collections::HashMap;

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

/// The three monitored tables: row uuid to the row's latest `new` value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tables {
    bridges: HashMap<String, Value>,
    ports: HashMap<String, Value>,
    interfaces: HashMap<String, Value>,
}

impl Tables {
    /// Applies a `<table-updates>` object (a monitor reply or the second
    /// parameter of an `update` notification). A row update with `new`
    /// replaces the row (the monitor sends every monitored column in `new`),
    /// one without `new` deletes it. Unknown tables are ignored. Fails only
    /// when the message as a whole is not a table-updates object; then
    /// nothing has been applied and the caller must resync.
    pub fn apply(&mut self, updates: &Value) -> Result<(), String> {
        let tables = updates
            .as_object()
            .ok_or_else(|| format!("table-updates is not an object: {updates}"))?;
        for (name, rows) in tables {
            if matches!(name.as_str(), "Bridge" | "Port" | "Interface") && !rows.is_object() {
                return Err(format!("{name}: table-update is not an object: {rows}"));
            }
        }
        for (name, rows) in tables {
            let table = match name.as_str() {
                "Bridge" => &mut self.bridges,
                "Port" => &mut self.ports,
                "Interface" => &mut self.interfaces,
                _ => continue,
            };
            for (uuid, update) in rows.as_object().into_iter().flatten() {
                match update.as_object().map(|u| u.get("new")) {
                    Some(Some(new)) => {
                        table.insert(uuid.clone(), new.clone());
                    }
                    Some(None) => {
                        table.remove(uuid);
                    }
                    // Not a row update at all: keep it as a row that fails
                    // to decode, so it shows as unreadable instead of
                    // vanishing or taking the whole message with it.
                    None => {
                        table.insert(uuid.clone(), update.clone());
                    }
                }
            }
        }
        Ok(())
    }

    /// Bridges with their ports and interfaces, each level sorted by name.
    #[must_use]
    pub fn bridges(&self) -> Vec<OvsBridge> {
        let mut bridges: Vec<OvsBridge> = self
            .bridges
            .iter()
            .map(|(uuid, row)| self.bridge(uuid, row))
            .collect();
        bridges.sort_by(|a, b| a.name.cmp(&b.name));
        bridges
    }

    fn bridge(&self, uuid: &str, row: &Value) -> OvsBridge {
        let mut r = Row::new("Bridge", uuid, row);
        let name = r.name();
        let datapath_type = r.column("datapath_type", datum::string).unwrap_or_default();
        let refs = r
            .column("ports", |v| datum::set(v, datum::uuid))
            .unwrap_or_default();
        let mut ports = Vec::with_capacity(refs.len());
        for port in refs {
            match self.ports.get(&port) {
                Some(row) => ports.push(self.port(&port, row)),
                None => r.errors.push(format!("ports: no Port row {port}")),
            }
        }
        ports.sort_by(|a, b| a.name.cmp(&b.name));
        OvsBridge {
            name,
            datapath_type,
            ports,
            parse_errors: r.errors,
        }
    }

    fn port(&self, uuid: &str, row: &Value) -> OvsPort {
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
        let refs = r
            .column("interfaces", |v| datum::set(v, datum::uuid))
            .unwrap_or_default();
        let mut interfaces = Vec::with_capacity(refs.len());
        for iface in refs {
            match self.interfaces.get(&iface) {
                Some(row) => interfaces.push(interface(&iface, row)),
                None => r
                    .errors
                    .push(format!("interfaces: no Interface row {iface}")),
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
            parse_errors: r.errors,
        }
    }
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
        error: r.optional("error", datum::string),
        link_speed: r.optional("link_speed", datum::integer),
        duplex: r.optional("duplex", datum::string),
        parse_errors: r.errors,
    }
}

/// One row being decoded, collecting what could not be read.
struct Row<'a> {
    table: &'static str,
    uuid: &'a str,
    columns: Option<&'a Map<String, Value>>,
    errors: Vec<String>,
}

impl<'a> Row<'a> {
    fn new(table: &'static str, uuid: &'a str, row: &'a Value) -> Self {
        let columns = row.as_object();
        let errors = if columns.is_none() {
            vec![format!("row is not an object: {row}")]
        } else {
            Vec::new()
        };
        Self {
            table,
            uuid,
            columns,
            errors,
        }
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
            self.errors.push(format!("{name}: column missing"));
            return None;
        };
        match read(value) {
            Ok(v) => Some(v),
            Err(e) => {
                self.errors.push(format!("{name}: {e}"));
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
