//! Where each key and list item of a YAML document starts: yaml.rs folds
//! the document into values without positions, so the parser's events are
//! walked once more (after yaml.rs accepted the text, so within its
//! bounds; an alias is not expanded here, so the walk is linear in the
//! text) to name `file:line` in findings.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, Parser};

/// Deepest path remembered; netplan's keys of interest are far shallower.
const MAX_DEPTH: usize = 12;

enum Frame {
    /// A mapping, with the key whose value comes next.
    Map(Option<String>),
    /// A list, with the index of the next item.
    Seq(usize),
}

/// Line (1-based) of each node by its path: mapping keys joined with `.`,
/// list items as `[N]` (`network.ethernets.eth0.addresses[1]`). For a
/// mapping value the line is that of its key. Empty for text the parser
/// refuses (yaml.rs reports that).
pub(super) fn lines(text: &str) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    let mut parser = Parser::new_from_str(text);
    let mut stack: Vec<(Frame, String)> = Vec::new();
    // The document's first node only, as yaml.rs reads it.
    let mut done = false;
    while let Ok((ev, mark)) = parser.next_token() {
        let line = mark.line();
        // The path of the node this event starts, or None for a key.
        let mut node_path =
            |stack: &mut Vec<(Frame, String)>, key: Option<&str>| -> Option<String> {
                match stack.last_mut() {
                    None => Some(String::new()),
                    Some((Frame::Map(k), base)) => match k.take() {
                        Some(k) => Some(join(base, &k)),
                        None => {
                            let name = key.unwrap_or("?").to_owned();
                            out.entry(join(base, &name)).or_insert(line);
                            *k = Some(name);
                            None
                        }
                    },
                    Some((Frame::Seq(i), base)) => {
                        let p = format!("{base}[{i}]");
                        *i += 1;
                        out.entry(p.clone()).or_insert(line);
                        Some(p)
                    }
                }
            };
        match ev {
            Event::StreamEnd => break,
            Event::DocumentEnd => done = true,
            _ if done => {}
            Event::Scalar(v, ..) => {
                node_path(&mut stack, Some(&v));
            }
            Event::Alias(_) => {
                node_path(&mut stack, None);
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                let is_map = matches!(ev, Event::MappingStart(..));
                // A list or mapping used as a key has no path of its own.
                let p = node_path(&mut stack, None).unwrap_or_default();
                if stack.len() >= MAX_DEPTH {
                    // Still tracked, so the ends balance, under no path.
                    stack.push((Frame::Seq(0), "…".into()));
                    continue;
                }
                let f = if is_map {
                    Frame::Map(None)
                } else {
                    Frame::Seq(0)
                };
                stack.push((f, p));
            }
            Event::MappingEnd | Event::SequenceEnd => {
                stack.pop();
            }
            _ => {}
        }
    }
    out
}

fn join(base: &str, key: &str) -> String {
    if base.is_empty() {
        key.to_owned()
    } else {
        format!("{base}.{key}")
    }
}
