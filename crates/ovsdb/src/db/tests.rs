use serde_json::{json, Map, Value};

use super::*;

fn rows(range: std::ops::Range<usize>, row: impl Fn(usize) -> Value) -> Value {
    let table: Map<String, Value> = range.map(|n| (format!("u{n}"), row(n))).collect();
    json!({ "Interface": table })
}

#[test]
fn deleted_rows_are_removed_and_their_memory_released() {
    let mut t = Tables::default();
    t.apply(&rows(
        0..9_000,
        |n| json!({ "new": { "name": format!("eth{n}") } }),
    ))
    .expect("insert");
    assert_eq!(t.interfaces.len(), 9_000);
    // Half deleted the RFC 7047 way (no `new`), half with a null `new`.
    t.apply(&rows(0..4_500, |_| json!({ "old": { "name": "x" } })))
        .expect("delete");
    t.apply(&rows(4_500..9_000, |_| json!({ "old": {}, "new": null })))
        .expect("delete");
    assert!(t.interfaces.is_empty(), "{} rows left", t.interfaces.len());
    assert!(
        t.interfaces.capacity() < 64,
        "capacity {} kept after every row went",
        t.interfaces.capacity()
    );
}

#[test]
fn the_row_bound_counts_what_the_update_leaves() {
    let mut t = Tables::default();
    t.apply(&rows(0..MAX_ROWS_PER_TABLE, |_| json!({ "new": {} })))
        .expect("at the bound");
    // Replacing a row and deleting one to add one keep the count.
    let mut update = rows(0..1, |_| json!({ "new": { "name": "again" } }));
    update["Interface"]["u1"] = json!({ "old": {} });
    update["Interface"]["extra"] = json!({ "new": {} });
    t.apply(&update).expect("same count");
    let before = t.clone();
    let err = t
        .apply(&rows(
            MAX_ROWS_PER_TABLE + 5..MAX_ROWS_PER_TABLE + 6,
            |_| json!({ "new": {} }),
        ))
        .expect_err("one more row");
    assert!(err.contains("Interface"), "{err}");
    assert_eq!(t, before, "nothing applied");
}

#[test]
fn errors_per_row_are_capped_and_counted() {
    let dangling: Vec<Value> = (0..100).map(|n| json!(["uuid", format!("p{n}")])).collect();
    let mut t = Tables::default();
    t.apply(&json!({ "Bridge": { "b": { "new": {
        "name": "br-ex", "datapath_type": "", "ports": ["set", dangling],
    } } } }))
    .expect("apply");
    let errors = &t.bridges()[0].parse_errors;
    assert_eq!(errors.len(), MAX_ROW_ERRORS + 1);
    assert_eq!(errors[0], "ports: no Port row p0");
    assert_eq!(
        errors.last().map(String::as_str),
        Some("and 84 more errors on this row")
    );
}
