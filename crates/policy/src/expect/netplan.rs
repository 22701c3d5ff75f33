//! Reads netplan YAML into [`Expectations`] the way `netplan generate`
//! merges its files: the files come in (already shadowed by name, /run over
//! /etc over /lib, and in lexical order of their names: the agent's job),
//! and are folded one after the other into one definition per device, a
//! later file's mapping keys adding to or overriding an earlier one's and
//! its lists (`addresses`, `routes`, `interfaces`) added to the earlier
//! lists, as netplan's parser does when a later file names a device again.
//! Each value keeps the `file:line` it came from. Every file is read with
//! the project's bounded YAML reader (yaml.rs: alias expansion counted).

use std::collections::{BTreeMap, HashMap};

use preflight_model::excerpt::excerpt;
use preflight_model::Snapshot;
use serde_json::Value;

use super::{yaml, ExpectError, Expectations, Unchecked};

mod device;
mod lines;

/// Most netplan files preflight reads.
pub const MAX_NETPLAN_FILES: usize = 256;
/// Largest netplan file preflight reads, in bytes.
pub const MAX_NETPLAN_FILE_BYTES: usize = 256 * 1024;

/// One netplan file, in merge order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetplanFile {
    /// Path (in messages).
    pub path: String,
    /// Its text.
    pub text: String,
}

/// The device sections netplan defines and preflight checks.
const SECTIONS: &[&str] = &["ethernets", "bonds", "vlans", "bridges"];

/// One device as the merged files define it.
#[derive(Debug, Default)]
struct Dev {
    section: String,
    id: String,
    /// The merged keys.
    keys: serde_json::Map<String, Value>,
    /// `file:line` of each key path under the device (`addresses[1]`,
    /// `parameters.mode`); `""` where the device was first named.
    at: HashMap<String, String>,
}

/// Size of a value (nodes, bytes of text), to bound what all files hold
/// together after each one's aliases were expanded.
fn size(v: &Value) -> (usize, usize) {
    match v {
        Value::String(s) => (1, s.len()),
        Value::Array(a) => a
            .iter()
            .map(size)
            .fold((1, 0), |x, y| (x.0 + y.0, x.1 + y.1)),
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| {
                let s = size(v);
                (s.0 + 1, s.1 + k.len())
            })
            .fold((1, 0), |x, y| (x.0 + y.0, x.1 + y.1)),
        _ => (1, 0),
    }
}

fn bad(file: &str, path: &str, reason: String) -> ExpectError {
    ExpectError {
        file: file.to_owned(),
        path: path.to_owned(),
        reason,
    }
}

/// Folds `v` (at `path` of `file`) into `dst` under `key`: mappings key by
/// key, lists appended, anything else replaced.
fn merge(
    dst: &mut serde_json::Map<String, Value>,
    at: &mut HashMap<String, String>,
    key: &str,
    v: Value,
    rel: &str,
    pos: &dyn Fn(&str) -> String,
) {
    match v {
        Value::Object(m) => {
            let slot = dst
                .entry(key.to_owned())
                .or_insert_with(|| Value::Object(serde_json::Map::new()));
            if !slot.is_object() {
                *slot = Value::Object(serde_json::Map::new());
            }
            at.insert(rel.to_owned(), pos(rel));
            if let Value::Object(inner) = slot {
                for (k, v) in m {
                    let r = format!("{rel}.{k}");
                    merge(inner, at, &k, v, &r, pos);
                }
            }
        }
        Value::Array(items) => {
            let slot = dst
                .entry(key.to_owned())
                .or_insert_with(|| Value::Array(Vec::new()));
            if !slot.is_array() {
                *slot = Value::Array(Vec::new());
            }
            at.entry(rel.to_owned()).or_insert_with(|| pos(rel));
            if let Value::Array(list) = slot {
                for (i, item) in items.into_iter().enumerate() {
                    at.insert(
                        format!("{rel}[{}]", list.len()),
                        pos(&format!("{rel}[{i}]")),
                    );
                    list.push(item);
                }
            }
        }
        other => {
            at.insert(rel.to_owned(), pos(rel));
            dst.insert(key.to_owned(), other);
        }
    }
}

/// Reads `files` (in netplan's merge order) as expectations for the links
/// of `snap`.
///
/// # Errors
/// Too many or too large files, YAML that is not valid or expands past the
/// bounds, a `network.version` other than 2, or a value netplan refuses,
/// each naming the file (and line where known) and key path.
pub fn from_netplan(
    source: &str,
    files: &[NetplanFile],
    snap: &Snapshot,
) -> Result<Expectations, ExpectError> {
    if files.len() > MAX_NETPLAN_FILES {
        return Err(bad(
            source,
            "",
            format!(
                "{} files, more than the {MAX_NETPLAN_FILES} preflight reads",
                files.len()
            ),
        ));
    }
    let mut unch = Vec::new();
    let mut devs: BTreeMap<(usize, String), Dev> = BTreeMap::new();
    let mut renderer: Option<(String, String)> = None;
    let (mut nodes, mut bytes) = (0usize, 0usize);
    for f in files {
        if f.text.len() > MAX_NETPLAN_FILE_BYTES {
            return Err(bad(
                &f.path,
                "",
                format!(
                    "{} bytes, more than the {MAX_NETPLAN_FILE_BYTES} bytes preflight reads of a file",
                    f.text.len()
                ),
            ));
        }
        let doc = yaml::load(&f.text)
            .map_err(|e| bad(&format!("{}:{}", f.path, e.line), "", e.reason))?;
        let (n, b) = size(&doc);
        nodes = nodes.saturating_add(n);
        bytes = bytes.saturating_add(b);
        if nodes > yaml::MAX_DOCUMENT_NODES || bytes > yaml::MAX_EXPANDED_BYTES {
            return Err(bad(
                &f.path,
                "",
                format!(
                    "the netplan files together expand to more than {} nodes or {} bytes; refused",
                    yaml::MAX_DOCUMENT_NODES,
                    yaml::MAX_EXPANDED_BYTES
                ),
            ));
        }
        let lines = lines::lines(&f.text);
        let pos = |p: &str| {
            lines
                .get(p)
                .map_or_else(|| f.path.clone(), |l| format!("{}:{l}", f.path))
        };
        let net = match doc {
            // An empty file declares nothing (netplan reads it so too).
            Value::Null => continue,
            Value::Object(mut m) => match m.remove("network") {
                Some(Value::Object(n)) => n,
                Some(Value::Null) | None => {
                    for k in m.keys() {
                        unch.push(Unchecked {
                            at: pos(k),
                            what: format!("`{}` is not a netplan key: not read", excerpt(k)),
                        });
                    }
                    continue;
                }
                Some(_) => return Err(bad(&pos("network"), "network", "is not a mapping".into())),
            },
            _ => {
                return Err(bad(
                    &f.path,
                    "",
                    "is not a YAML mapping (`network:`)".into(),
                ))
            }
        };
        for (key, v) in net {
            let kp = format!("network.{key}");
            match key.as_str() {
                "version" => {
                    if v.as_i64() != Some(2) {
                        return Err(bad(
                            &pos(&kp),
                            &kp,
                            format!("`{}`: netplan reads only version 2", excerpt(&v.to_string())),
                        ));
                    }
                }
                "renderer" => {
                    let r = v.as_str().unwrap_or_default().to_owned();
                    renderer = Some((r, pos(&kp)));
                }
                s if SECTIONS.contains(&s) => {
                    let sec = SECTIONS.iter().position(|x| *x == s).unwrap_or_default();
                    let Value::Object(ids) = v else {
                        if v.is_null() {
                            continue;
                        }
                        return Err(bad(&pos(&kp), &kp, "is not a mapping of devices".into()));
                    };
                    for (id, def) in ids {
                        let dp = format!("{kp}.{id}");
                        let d = devs.entry((sec, id.clone())).or_insert_with(|| Dev {
                            section: s.to_owned(),
                            id: id.clone(),
                            ..Dev::default()
                        });
                        d.at.entry(String::new()).or_insert_with(|| pos(&dp));
                        let Value::Object(def) = def else {
                            if def.is_null() {
                                continue;
                            }
                            return Err(bad(&pos(&dp), &dp, "is not a mapping".into()));
                        };
                        let dpos = |rel: &str| pos(&format!("{dp}.{rel}"));
                        for (k, v) in def {
                            let rel = k.clone();
                            merge(&mut d.keys, &mut d.at, &k, v, &rel, &dpos);
                        }
                    }
                }
                _ => unch.push(Unchecked {
                    at: pos(&kp),
                    what: format!(
                        "network.{} is not checked (preflight reads ethernets, bonds, vlans, bridges)",
                        excerpt(&key)
                    ),
                }),
            }
        }
    }
    let devs: Vec<Dev> = devs.into_values().collect();
    let interfaces = device::expectations(&devs, renderer.as_ref(), snap, &mut unch)?;
    Ok(Expectations {
        source: source.to_owned(),
        interfaces,
        unchecked: unch,
        files: files.iter().map(|f| f.path.clone()).collect(),
        ..Expectations::default()
    })
}

#[cfg(test)]
#[path = "tests/netplan.rs"]
mod tests;
