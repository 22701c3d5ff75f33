//! OVSDB datum encodings (RFC 7047 section 5.1) to plain Rust values.
//!
//! A column value on the wire is an atom (`"up"`, `3`, `true`,
//! `["uuid", "..."]`), a set (`["set", [atom, ...]]`, or a bare atom for a
//! set of one) or a map (`["map", [[key, value], ...]]`). An optional column
//! (`min: 0, max: 1`) is a set of zero or one atom: `["set", []]` means unset.
//! Each function here reads one column type and says precisely what it got
//! when the value is not of that type, so the caller can record the problem
//! on the row and keep the rest.

use std::collections::BTreeMap;

use serde_json::Value;

/// Why a column value could not be read (for `parse_errors`).
pub type DatumError = String;

fn describe(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 {
        format!("{}...", s.chars().take(57).collect::<String>())
    } else {
        s
    }
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
}
