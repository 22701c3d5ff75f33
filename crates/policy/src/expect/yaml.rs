//! YAML text to a JSON value, with a bound on what aliases expand to.
//!
//! yaml-rust2's own loader copies an anchored node at every alias, so a
//! 534-byte file of nested aliases (an "alias bomb") expands to 10^9 nodes
//! and exhausts the memory of `preflight inspect` and of the agent, which
//! read the same file. Here the parser's events are folded into the value
//! directly, every node and every byte of a scalar, copies included, is
//! counted as it is made, and the document is refused the moment a count
//! passes its bound: the work done is at most the bound, whatever the file.

use std::collections::HashMap;

use serde_json::Value;
use yaml_rust2::parser::{Event, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};
use yaml_rust2::Yaml;

/// Largest os-net-config (or mapping) file read, in bytes. Real files are
/// a few KiB; a generated one for many NICs and VLANs well below this.
pub const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// Most nodes (scalars, lists, mappings) a document may hold once its
/// aliases are expanded; each alias counts every node it repeats.
pub const MAX_DOCUMENT_NODES: usize = 100_000;

/// Most bytes of scalar text a document may hold once its aliases are
/// expanded (one anchored long string repeated by many aliases).
pub const MAX_EXPANDED_BYTES: usize = 16 * 1024 * 1024;

/// What a node costs: itself and everything under it.
#[derive(Debug, Clone, Copy, Default)]
struct Cost {
    nodes: usize,
    bytes: usize,
}

impl Cost {
    fn add(&mut self, other: Self) {
        self.nodes = self.nodes.saturating_add(other.nodes);
        self.bytes = self.bytes.saturating_add(other.bytes);
    }
}

/// A list or mapping still being read.
enum Open {
    Seq(Vec<Value>),
    /// The mapping so far, and the key read whose value comes next.
    Map(serde_json::Map<String, Value>, Option<String>),
}

struct Frame {
    open: Open,
    anchor: usize,
    cost: Cost,
}

/// Folds parser events into values, counting as it goes.
#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    /// Anchored nodes of the current document, with what a copy costs.
    anchors: HashMap<usize, (Value, Cost)>,
    /// Everything made so far, copies included.
    spent: Cost,
    /// The first document (os-net-config reads only that one).
    first: Option<Value>,
}

/// Why a document is refused.
pub(super) struct YamlError {
    /// Line reached.
    pub line: usize,
    /// Why.
    pub reason: String,
    /// Refused for a bound, not for its syntax.
    pub bound: bool,
}

/// Reads the first YAML document of `text` (`Null` when there is none).
///
/// # Errors
/// Syntax errors, and a document that would expand beyond
/// [`MAX_DOCUMENT_NODES`] or [`MAX_EXPANDED_BYTES`], with the line reached.
pub(super) fn load(text: &str) -> Result<Value, YamlError> {
    let mut parser = Parser::new_from_str(text);
    let mut b = Builder::default();
    loop {
        let (event, mark) = parser.next_token().map_err(|e| YamlError {
            line: e.marker().line(),
            reason: format!("not valid YAML: {e}"),
            bound: false,
        })?;
        match event {
            Event::StreamEnd => break,
            Event::StreamStart | Event::Nothing | Event::DocumentEnd => {}
            // Anchors belong to their document.
            Event::DocumentStart => b.anchors.clear(),
            Event::Scalar(v, style, anchor, tag) => {
                let cost = Cost {
                    nodes: 1,
                    bytes: v.len(),
                };
                b.charge(cost, mark)?;
                b.complete(scalar(&v, style, tag.as_ref()), cost, anchor, mark)?;
            }
            Event::SequenceStart(anchor, _) => b.open(Open::Seq(Vec::new()), anchor, mark)?,
            Event::MappingStart(anchor, _) => {
                b.open(Open::Map(serde_json::Map::new(), None), anchor, mark)?;
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let Some(f) = b.stack.pop() else {
                    return Err(YamlError {
                        line: mark.line(),
                        reason: "not valid YAML: unbalanced end".into(),
                        bound: false,
                    });
                };
                let v = match f.open {
                    Open::Seq(items) => Value::Array(items),
                    Open::Map(map, _) => Value::Object(map),
                };
                b.complete(v, f.cost, f.anchor, mark)?;
            }
            Event::Alias(id) => {
                // An alias of an anchor still open (`&a [*a]`) has nothing
                // to repeat yet: null, as yaml-rust2's loader reads it.
                let (v, cost) = b.anchors.get(&id).cloned().unwrap_or_default();
                b.charge(cost, mark)?;
                b.complete(v, cost, 0, mark)?;
            }
        }
    }
    Ok(b.first.unwrap_or(Value::Null))
}

impl Builder {
    fn charge(&mut self, cost: Cost, mark: Marker) -> Result<(), YamlError> {
        self.spent.add(cost);
        let why = if self.spent.nodes > MAX_DOCUMENT_NODES {
            format!("the document expands to more than {MAX_DOCUMENT_NODES} nodes")
        } else if self.spent.bytes > MAX_EXPANDED_BYTES {
            format!("the document's values expand to more than {MAX_EXPANDED_BYTES} bytes")
        } else {
            return Ok(());
        };
        Err(YamlError {
            line: mark.line(),
            reason: format!("{why} (YAML aliases repeat what they name: an alias bomb?); refused"),
            bound: true,
        })
    }

    fn open(&mut self, open: Open, anchor: usize, mark: Marker) -> Result<(), YamlError> {
        let cost = Cost { nodes: 1, bytes: 0 };
        self.charge(cost, mark)?;
        self.stack.push(Frame { open, anchor, cost });
        Ok(())
    }

    /// Puts a finished node into the list or mapping it belongs to (or
    /// makes it the document), and keeps a copy of it under its anchor.
    fn complete(
        &mut self,
        v: Value,
        cost: Cost,
        anchor: usize,
        mark: Marker,
    ) -> Result<(), YamlError> {
        if anchor > 0 {
            // The copy kept for aliases is memory too.
            self.charge(cost, mark)?;
            self.anchors.insert(anchor, (v.clone(), cost));
        }
        let Some(parent) = self.stack.last_mut() else {
            if self.first.is_none() {
                self.first = Some(v);
            }
            return Ok(());
        };
        parent.cost.add(cost);
        match &mut parent.open {
            Open::Seq(items) => items.push(v),
            Open::Map(map, key) => match key.take() {
                Some(k) => {
                    map.insert(k, v);
                }
                None => *key = Some(key_text(v)),
            },
        }
        Ok(())
    }
}

/// A mapping key as text (os-net-config's keys are strings).
fn key_text(v: Value) -> String {
    match v {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

/// What YAML 1.1 (PyYAML's `safe_load`, os-net-config's reader) makes of a
/// plain scalar where YAML 1.2 differs, in the forms os-net-config's files
/// meet: `yes`/`no`/`on`/`off` are booleans, and a sexagesimal integer
/// (`52:54:00:12:34:56`: an unquoted MAC of decimal groups below 60) is a
/// number, not a string, so os-net-config matches it with no NIC.
fn yaml11(v: &str) -> Option<Value> {
    match v {
        "yes" | "Yes" | "YES" | "on" | "On" | "ON" => return Some(Value::Bool(true)),
        "no" | "No" | "NO" | "off" | "Off" | "OFF" => return Some(Value::Bool(false)),
        _ => {}
    }
    // [-+]?[1-9][0-9_]*(:[0-5]?[0-9])+
    let (neg, body) = match v.as_bytes().first() {
        Some(b'-') => (true, &v[1..]),
        Some(b'+') => (false, &v[1..]),
        _ => (false, v),
    };
    let mut groups = body.split(':');
    let first = groups.next()?;
    let rest: Vec<&str> = groups.collect();
    let digits = |g: &str| g.bytes().all(|b| b.is_ascii_digit() || b == b'_');
    if rest.is_empty()
        || !first.starts_with(|c: char| ('1'..='9').contains(&c))
        || !digits(first)
        || !rest.iter().all(|g| {
            (1..=2).contains(&g.len())
                && g.bytes().all(|b| b.is_ascii_digit())
                && (g.len() == 1 || g.as_bytes()[0] <= b'5')
        })
    {
        return None;
    }
    let mut n: i128 = first.replace('_', "").parse().ok()?;
    for g in rest {
        n = n.checked_mul(60)?.checked_add(g.parse::<i128>().ok()?)?;
    }
    let n = if neg { -n } else { n };
    Some(i64::try_from(n).map_or_else(|_| serde_json::json!(n as f64), |i| serde_json::json!(i)))
}

/// A scalar as yaml-rust2's loader types it: quoted is a string, a plain
/// one by its `!!` tag or its look (`9000`, `true`, `~`), with YAML 1.1's
/// readings where os-net-config's PyYAML differs ([`yaml11`]).
fn scalar(v: &str, style: TScalarStyle, tag: Option<&Tag>) -> Value {
    if style != TScalarStyle::Plain {
        return Value::String(v.to_owned());
    }
    let y = match tag {
        Some(t) if t.handle == "tag:yaml.org,2002:" => match t.suffix.as_str() {
            "bool" => match v {
                "true" | "True" | "TRUE" => Yaml::Boolean(true),
                "false" | "False" | "FALSE" => Yaml::Boolean(false),
                _ => Yaml::BadValue,
            },
            "int" => v.parse::<i64>().map_or(Yaml::BadValue, Yaml::Integer),
            "float" => Yaml::Real(v.to_owned()),
            "null" => match v {
                "~" | "null" => Yaml::Null,
                _ => Yaml::BadValue,
            },
            _ => Yaml::String(v.to_owned()),
        },
        Some(_) => Yaml::String(v.to_owned()),
        None => match yaml11(v) {
            Some(value) => return value,
            None => Yaml::from_str(v),
        },
    };
    match y {
        Yaml::Real(r) => r
            .parse::<f64>()
            .map_or(Value::Null, |f| serde_json::json!(f)),
        Yaml::Integer(i) => serde_json::json!(i),
        Yaml::String(s) => Value::String(s),
        Yaml::Boolean(b) => Value::Bool(b),
        Yaml::Array(_) | Yaml::Hash(_) | Yaml::Alias(_) | Yaml::Null | Yaml::BadValue => {
            Value::Null
        }
    }
}

#[cfg(test)]
mod yaml11_tests {
    use super::*;

    /// As PyYAML's `safe_load` reads them (checked with PyYAML 6.0).
    #[test]
    fn plain_scalars_read_as_pyyaml_does() {
        let doc = load(
            "a: 52:54:00:12:34:57\nb: '52:54:00:12:34:57'\nc: 52:54:00:ab:cd:04\nd: 52:54:00:12:34:78\ne: yes\nf: off\ng: 00:25:90:12:34:56\nh: \"on\"\n",
        )
        .unwrap_or_else(|e| panic!("loads: {}", e.reason));
        assert_eq!(doc["a"], serde_json::json!(41_135_085_297_i64));
        assert_eq!(doc["b"], "52:54:00:12:34:57");
        assert_eq!(doc["c"], "52:54:00:ab:cd:04");
        assert_eq!(doc["d"], "52:54:00:12:34:78");
        assert_eq!(doc["e"], true);
        assert_eq!(doc["f"], false);
        assert_eq!(doc["g"], "00:25:90:12:34:56");
        assert_eq!(doc["h"], "on");
    }
}
