//! OVSDB datum encodings (RFC 7047 section 5.1) to plain Rust values.
//!
//! A column value on the wire is an atom (`"up"`, `3`, `true`,
//! `["uuid", "..."]`), a set (`["set", [atom, ...]]`, or a bare atom for a
//! set of one) or a map (`["map", [[key, value], ...]]`). An optional column
//! (`min: 0, max: 1`) is a set of zero or one atom: `["set", []]` means unset.
//! Each function here reads one column type and says precisely what it got
//! when the value is not of that type, so the caller can record the problem
//! on the row and keep the rest.

use std::collections::{BTreeMap, HashSet};

use serde_json::Value;

/// Why a column value could not be read (for `parse_errors`).
pub type DatumError = String;

/// At most `max` characters of `s`, cut with `...`: what the server sent is
/// quoted into findings and reasons that travel to the aggregator, so one
/// huge value must not become a huge message.
pub(crate) fn excerpt(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_owned(),
        Some(_) => {
            let keep = max.saturating_sub(3);
            let end = s.char_indices().nth(keep).map_or(s.len(), |(i, _)| i);
            format!("{}...", &s[..end])
        }
    }
}

pub(crate) fn describe(v: &Value) -> String {
    excerpt(&v.to_string(), 60)
}

/// The elements of a set: `["set", [...]]`, or a bare atom (a set of one).
fn set_elements(v: &Value) -> Vec<&Value> {
    match v.as_array().map(Vec::as_slice) {
        Some([tag, Value::Array(items)]) if tag == "set" => items.iter().collect(),
        _ => vec![v],
    }
}

/// A string atom.
pub fn string(v: &Value) -> Result<String, DatumError> {
    v.as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("expected a string, got {}", describe(v)))
}

/// An integer atom, which for the columns read here is never negative.
pub fn integer(v: &Value) -> Result<u64, DatumError> {
    v.as_u64()
        .ok_or_else(|| format!("expected a non-negative integer, got {}", describe(v)))
}

/// A boolean atom.
pub fn boolean(v: &Value) -> Result<bool, DatumError> {
    v.as_bool()
        .ok_or_else(|| format!("expected a boolean, got {}", describe(v)))
}

/// A `["uuid", "..."]` atom.
pub fn uuid(v: &Value) -> Result<String, DatumError> {
    match v.as_array().map(Vec::as_slice) {
        Some([tag, Value::String(u)]) if tag == "uuid" => Ok(u.clone()),
        _ => Err(format!("expected [\"uuid\", ...], got {}", describe(v))),
    }
}

/// An optional column (`min: 0, max: 1`): an empty set is `None`, one atom
/// is read with `atom`, more than one is an error.
pub fn optional<T>(
    v: &Value,
    atom: impl Fn(&Value) -> Result<T, DatumError>,
) -> Result<Option<T>, DatumError> {
    match set_elements(v).as_slice() {
        [] => Ok(None),
        [one] => atom(one).map(Some),
        many => Err(format!(
            "expected at most one value, got a set of {}",
            many.len()
        )),
    }
}

/// A set column, each element read with `atom`. The first bad element fails
/// the whole column: a partly read set of references would silently drop a
/// member, which is worse than saying the column is unreadable.
pub fn set<T>(
    v: &Value,
    atom: impl Fn(&Value) -> Result<T, DatumError>,
) -> Result<Vec<T>, DatumError> {
    set_elements(v).into_iter().map(atom).collect()
}

/// A set of `["uuid", ...]` references with at most `max` elements.
/// RFC 7047 sets hold each element once, so a repeated reference is a
/// malformed message and fails the column; taken as it is, each repeat
/// would build the referenced row (and everything it references) again.
pub fn uuid_set(v: &Value, max: usize) -> Result<Vec<String>, DatumError> {
    let elements = set_elements(v);
    if elements.len() > max {
        return Err(format!(
            "a set of {} references, over the bound of {max}",
            elements.len()
        ));
    }
    let mut seen = HashSet::with_capacity(elements.len());
    let mut out = Vec::with_capacity(elements.len());
    for e in elements {
        let u = uuid(e)?;
        if !seen.insert(u.clone()) {
            return Err(format!(
                "reference {} listed twice; an OVSDB set holds each element once",
                excerpt(&u, 60)
            ));
        }
        out.push(u);
    }
    Ok(out)
}

/// A `map` column of string keys and string values.
pub fn string_map(v: &Value) -> Result<BTreeMap<String, String>, DatumError> {
    let pairs = match v.as_array().map(Vec::as_slice) {
        Some([tag, Value::Array(pairs)]) if tag == "map" => pairs,
        _ => return Err(format!("expected [\"map\", ...], got {}", describe(v))),
    };
    pairs
        .iter()
        .map(|pair| match pair.as_array().map(Vec::as_slice) {
            Some([k, v]) => Ok((string(k)?, string(v)?)),
            _ => Err(format!(
                "expected a [key, value] pair, got {}",
                describe(pair)
            )),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn atoms() {
        assert_eq!(string(&json!("up")), Ok("up".into()));
        assert_eq!(integer(&json!(7)), Ok(7));
        assert_eq!(boolean(&json!(false)), Ok(false));
        assert_eq!(uuid(&json!(["uuid", "abc"])), Ok("abc".into()));
        assert!(string(&json!(3))
            .expect_err("3 is no string")
            .contains("got 3"));
        assert!(integer(&json!(-1)).is_err());
        assert!(uuid(&json!(["named-uuid", "x"])).is_err());
    }

    #[test]
    fn optional_column_is_a_set_of_zero_or_one() {
        assert_eq!(optional(&json!(["set", []]), string), Ok(None));
        assert_eq!(optional(&json!("down"), string), Ok(Some("down".into())));
        assert_eq!(
            optional(&json!(["set", ["down"]]), string),
            Ok(Some("down".into()))
        );
        assert!(optional(&json!(["set", ["a", "b"]]), string).is_err());
        assert!(optional(&json!(["set", [1]]), string).is_err());
        assert!(optional(&json!(true), integer).is_err());
    }

    #[test]
    fn sets_and_maps() {
        assert_eq!(set(&json!(["uuid", "a"]), uuid), Ok(vec!["a".to_owned()]));
        assert_eq!(
            set(&json!(["set", [["uuid", "a"], ["uuid", "b"]]]), uuid),
            Ok(vec!["a".to_owned(), "b".to_owned()])
        );
        assert_eq!(set(&json!(["set", []]), uuid), Ok(vec![]));
        assert!(set(&json!(["set", [["uuid", "a"], "b"]]), uuid).is_err());
        let m = string_map(&json!(["map", [["bond-primary", "va0"]]])).expect("map");
        assert_eq!(m.get("bond-primary").map(String::as_str), Some("va0"));
        assert_eq!(string_map(&json!(["map", []])), Ok(BTreeMap::new()));
        assert!(string_map(&json!(["map", [["k", 1]]])).is_err());
        assert!(string_map(&json!(["set", []])).is_err());
    }

    #[test]
    fn reference_sets_refuse_repeats_and_oversize() {
        let two = json!(["set", [["uuid", "a"], ["uuid", "b"]]]);
        assert_eq!(uuid_set(&two, 2), Ok(vec!["a".to_owned(), "b".to_owned()]));
        assert_eq!(
            uuid_set(&two, 1),
            Err("a set of 2 references, over the bound of 1".to_owned())
        );
        let repeat = json!(["set", [["uuid", "a"], ["uuid", "a"]]]);
        assert!(uuid_set(&repeat, 10)
            .expect_err("repeat")
            .contains("reference a listed twice"));
    }

    #[test]
    fn excerpts_cut_on_characters() {
        assert_eq!(excerpt("short", 10), "short");
        assert_eq!(excerpt("0123456789", 10), "0123456789");
        assert_eq!(excerpt("0123456789a", 10), "0123456...");
        assert_eq!(excerpt("ééééé", 4), "é...");
    }
}
