//! The JSON-RPC side of RFC 7047, without sockets: framing a byte stream into
//! messages, the `monitor` request, and what to do with each message the
//! server sends (monitor reply, `update` notification, `echo` request).
//!
//! Keeping this pure lets the recorded sessions in `tests/fixtures/ovsdb/`
//! go through exactly the code the live connection uses.

use serde_json::{json, Map, Value};

use crate::datum::excerpt;
use crate::db::{Tables, MAX_QUOTED_CHARS, MONITORED};
use crate::OvsdbError;

/// The `<json-value>` that names our monitor; `update` notifications carry it.
pub const MONITOR_ID: &str = "preflight";
/// The JSON-RPC id of the monitor request.
pub const MONITOR_REQUEST_ID: &str = "preflight-monitor";
/// The JSON-RPC id of our own liveness echo.
pub const ECHO_REQUEST_ID: &str = "preflight-echo";
/// A message larger than this is refused, complete or not: the framing
/// would otherwise buffer without bound on a peer that never closes a
/// brace, and parsing a message takes several times its size. The largest
/// state preflight accepts, [`MAX_ROWS_PER_TABLE`](crate::db::MAX_ROWS_PER_TABLE)
/// rows in each monitored table at a few hundred bytes a row, fits in
/// about half of it.
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;
/// Nesting deeper than this is refused while framing. An OVSDB message
/// nests at most about ten levels (notification, table, row, column, set,
/// atom); the bound keeps a deeply nested value from reaching the parser.
pub const MAX_DEPTH: usize = 32;
/// After a message, a buffer that grew past this is given back: one large
/// message must not keep its memory for the life of the connection.
const KEEP_BUFFER_BYTES: usize = 64 << 10;

/// The one `monitor` request: the columns preflight reads, initial rows
/// included, then inserts, deletes and modifications.
#[must_use]
pub fn monitor_request() -> Value {
    let requests: Map<String, Value> = MONITORED
        .iter()
        .map(|(table, columns)| ((*table).to_owned(), json!({ "columns": columns })))
        .collect();
    json!({
        "id": MONITOR_REQUEST_ID,
        "method": "monitor",
        "params": ["Open_vSwitch", MONITOR_ID, requests],
    })
}

/// Our liveness probe (answered by the server like any `echo`).
#[must_use]
pub fn echo_request() -> Value {
    json!({ "id": ECHO_REQUEST_ID, "method": "echo", "params": [] })
}

/// Splits a byte stream into JSON texts. OVSDB puts no delimiter between
/// messages, so this tracks nesting (strings and escapes included) to find
/// where each top-level value ends, in one pass over each byte.
#[derive(Debug, Default)]
pub struct Framer {
    buf: Vec<u8>,
    scanned: usize,
    depth: usize,
    in_string: bool,
    escaped: bool,
}

impl Framer {
    /// Appends bytes read from the socket.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete message as raw text, if one is buffered.
    pub fn next_message(&mut self) -> Result<Option<String>, OvsdbError> {
        while self.scanned < self.buf.len() {
            if self.scanned >= MAX_MESSAGE_BYTES {
                return Err(too_large());
            }
            let b = self.buf[self.scanned];
            self.scanned += 1;
            if self.in_string {
                match (self.escaped, b) {
                    (true, _) => self.escaped = false,
                    (false, b'\\') => self.escaped = true,
                    (false, b'"') => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => {
                    self.depth += 1;
                    if self.depth > MAX_DEPTH {
                        return Err(OvsdbError::Protocol(format!(
                            "message nested deeper than {MAX_DEPTH} levels"
                        )));
                    }
                }
                b'}' | b']' => {
                    self.depth = self
                        .depth
                        .checked_sub(1)
                        .ok_or_else(|| OvsdbError::Protocol("unbalanced closing bracket".into()))?;
                    if self.depth == 0 {
                        let raw: Vec<u8> = self.buf.drain(..self.scanned).collect();
                        self.scanned = 0;
                        if self.buf.capacity() > KEEP_BUFFER_BYTES {
                            self.buf.shrink_to(KEEP_BUFFER_BYTES);
                        }
                        let text = String::from_utf8(raw)
                            .map_err(|_| OvsdbError::Protocol("message is not UTF-8".into()))?;
                        return Ok(Some(text.trim_start().to_owned()));
                    }
                }
                b' ' | b'\t' | b'\r' | b'\n' => {}
                _ if self.depth == 0 => {
                    return Err(OvsdbError::Protocol(format!(
                        "unexpected byte {b:#04x} between messages"
                    )))
                }
                _ => {}
            }
        }
        if self.buf.len() > MAX_MESSAGE_BYTES {
            return Err(too_large());
        }
        Ok(None)
    }
}

/// A value from the server as an error quotes it: an excerpt, since the
/// reason travels into findings.
fn quote(v: &Value) -> String {
    excerpt(&v.to_string(), MAX_QUOTED_CHARS)
}

fn too_large() -> OvsdbError {
    OvsdbError::Protocol(format!(
        "message larger than {MAX_MESSAGE_BYTES} bytes, the bound on one OVSDB message"
    ))
}

/// One monitor session: the tables it has received and whether the initial
/// contents (the monitor reply) have arrived.
#[derive(Debug, Default)]
pub struct Session {
    tables: Tables,
    synced: bool,
}

/// What handling one message produced.
#[derive(Debug, Default, PartialEq)]
pub struct Handled {
    /// A message to send back (the answer to an `echo`).
    pub reply: Option<Value>,
    /// The tables changed.
    pub changed: bool,
}

impl Session {
    /// A session that has not received its monitor reply yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the monitor reply has arrived (the tables are a full copy).
    #[must_use]
    pub fn synced(&self) -> bool {
        self.synced
    }

    /// The tables as received so far.
    #[must_use]
    pub fn tables(&self) -> &Tables {
        &self.tables
    }

    /// Handles one message from the server. An error means the session can
    /// no longer be trusted (the monitor was refused, or an update could not
    /// be applied); the caller reconnects and resyncs.
    pub fn handle(&mut self, msg: &Value) -> Result<Handled, OvsdbError> {
        let obj = msg.as_object().ok_or_else(|| {
            OvsdbError::Protocol(format!("message is not an object: {}", quote(msg)))
        })?;
        let id = obj.get("id").unwrap_or(&Value::Null);
        match obj.get("method").and_then(Value::as_str) {
            Some("echo") => Ok(Handled {
                reply: Some(json!({
                    "id": id,
                    "result": obj.get("params").cloned().unwrap_or(json!([])),
                    "error": null,
                })),
                changed: false,
            }),
            Some("update") => self.update(obj.get("params")),
            Some(other) if !id.is_null() => Ok(Handled {
                reply: Some(json!({
                    "id": id,
                    "result": null,
                    "error": format!("unknown method {other}"),
                })),
                changed: false,
            }),
            Some(_) => Ok(Handled::default()),
            None if id == MONITOR_REQUEST_ID => self.monitor_reply(obj),
            // Answers to our echo, or to nothing we sent.
            None => Ok(Handled::default()),
        }
    }

    fn monitor_reply(&mut self, obj: &Map<String, Value>) -> Result<Handled, OvsdbError> {
        if let Some(err) = obj.get("error").filter(|e| !e.is_null()) {
            return Err(OvsdbError::Monitor(quote(err)));
        }
        let result = obj
            .get("result")
            .ok_or_else(|| OvsdbError::Protocol("monitor reply without result".into()))?;
        let mut tables = Tables::default();
        tables.apply(result).map_err(OvsdbError::Protocol)?;
        self.tables = tables;
        self.synced = true;
        Ok(Handled {
            reply: None,
            changed: true,
        })
    }

    fn update(&mut self, params: Option<&Value>) -> Result<Handled, OvsdbError> {
        let Some([monitor, updates]) = params.and_then(Value::as_array).map(Vec::as_slice) else {
            return Err(OvsdbError::Protocol(format!(
                "update notification params are not [monitor, updates]: {}",
                quote(params.unwrap_or(&Value::Null))
            )));
        };
        if monitor != MONITOR_ID {
            return Ok(Handled::default());
        }
        if !self.synced {
            return Err(OvsdbError::Protocol(
                "update notification before the monitor reply".into(),
            ));
        }
        self.tables.apply(updates).map_err(OvsdbError::Protocol)?;
        Ok(Handled {
            reply: None,
            changed: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framer_splits_concatenated_and_partial_messages() {
        let mut f = Framer::default();
        f.push(br#"{"a":"}\"{"}{"b":[1,"#);
        assert_eq!(
            f.next_message().expect("ok").as_deref(),
            Some(r#"{"a":"}\"{"}"#)
        );
        assert_eq!(f.next_message().expect("ok"), None);
        f.push(b"2]}\n");
        assert_eq!(
            f.next_message().expect("ok").as_deref(),
            Some(r#"{"b":[1,2]}"#)
        );
        assert_eq!(f.next_message().expect("ok"), None);
    }

    #[test]
    fn framer_rejects_garbage_between_messages() {
        let mut f = Framer::default();
        f.push(b"x{}");
        assert!(f.next_message().is_err());
        let mut f = Framer::default();
        f.push(b"]");
        assert!(f.next_message().is_err());
    }

    #[test]
    fn framer_refuses_a_message_over_the_byte_bound_even_when_complete() {
        let mut f = Framer::default();
        let big = format!(r#"{{"error":"{}"}}"#, "e".repeat(MAX_MESSAGE_BYTES));
        f.push(big.as_bytes());
        // Only the length is shown if it is wrongly accepted.
        let got = f.next_message().map(|m| m.map(|m| m.len()));
        let err = got.expect_err("over the bound").to_string();
        assert!(
            err.contains(&format!("larger than {MAX_MESSAGE_BYTES} bytes")),
            "{err}"
        );
    }

    #[test]
    fn framer_refuses_nesting_over_the_depth_bound() {
        let mut f = Framer::default();
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        f.push(deep.as_bytes());
        assert!(f.next_message().expect("at the bound").is_some());
        let deeper = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        f.push(deeper.as_bytes());
        let err = f.next_message().expect_err("over the bound").to_string();
        assert!(err.contains(&format!("deeper than {MAX_DEPTH}")), "{err}");
    }

    #[test]
    fn framer_gives_back_the_memory_of_a_large_message() {
        let mut f = Framer::default();
        let big = format!(r#"{{"a":"{}"}}"#, "a".repeat(4 << 20));
        f.push(big.as_bytes());
        assert!(f.next_message().expect("ok").is_some());
        assert!(f.buf.capacity() <= 64 << 10, "{} kept", f.buf.capacity());
    }

    #[test]
    fn echo_is_answered_with_its_params() {
        let mut s = Session::new();
        let h = s
            .handle(&json!({"id": "echo", "method": "echo", "params": [1]}))
            .expect("echo");
        assert_eq!(
            h.reply,
            Some(json!({"id": "echo", "result": [1], "error": null}))
        );
        assert!(!h.changed);
    }

    #[test]
    fn refused_monitor_and_early_update_are_errors() {
        let mut s = Session::new();
        let update = json!({"id": null, "method": "update", "params": [MONITOR_ID, {}]});
        assert!(s.handle(&update).is_err());
        let refused = json!({"id": MONITOR_REQUEST_ID, "result": null, "error": {"error": "unknown database"}});
        assert!(matches!(s.handle(&refused), Err(OvsdbError::Monitor(_))));
        let ok = json!({"id": MONITOR_REQUEST_ID, "result": {}, "error": null});
        assert!(s.handle(&ok).expect("reply").changed);
        assert!(s.synced());
        assert!(s.handle(&update).expect("update").changed);
        let other = json!({"id": null, "method": "update", "params": ["someone-else", {}]});
        assert!(!s.handle(&other).expect("ignored").changed);
    }

    #[test]
    fn monitor_request_names_every_column() {
        let req = monitor_request();
        assert_eq!(req["params"][0], "Open_vSwitch");
        assert_eq!(req["params"][2]["Port"]["columns"][4], "bond_active_slave");
        assert_eq!(req["params"][2]["Interface"]["columns"][3], "link_state");
    }
}
