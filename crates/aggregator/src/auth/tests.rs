use super::*;

fn headers(tok: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(header::AUTHORIZATION, tok.parse().expect("header"));
    h
}

fn auth() -> Auth {
    let mut a = Auth::new(Reads::Authenticated);
    a.add_token(
        token_digest("n1tok"),
        Identity {
            name: "node-token:n1".into(),
            roles: Roles::AGENT,
            nodes: Nodes::Only(vec!["n1".into()]),
        },
    )
    .expect("distinct");
    a.add_token(
        token_digest("admin"),
        Identity {
            name: "admin-token".into(),
            roles: Roles::OPERATOR,
            nodes: Nodes::Only(vec![]),
        },
    )
    .expect("distinct");
    a.set_mtls(true);
    a
}

#[test]
fn roles_and_nodes() {
    let a = auth();
    let none = HeaderMap::new();
    let e = a
        .check(Role::Reader, &none, None)
        .expect_err("no credential");
    assert_eq!(e.status(), StatusCode::UNAUTHORIZED);
    let c = a
        .check(Role::Agent, &headers("bearer n1tok"), None)
        .expect("case-insensitive scheme");
    assert!(c.may_report_for("n1") && !c.may_report_for("n2"));
    a.check(Role::Reader, &headers("Bearer n1tok"), None)
        .expect("any identity reads");
    let e = a
        .check(Role::Operator, &headers("Bearer n1tok"), None)
        .expect_err("a node cannot waive");
    assert_eq!(e.status(), StatusCode::FORBIDDEN);
    let e = a
        .check(Role::Agent, &headers("Bearer admin"), None)
        .expect_err("the admin token does not report");
    assert_eq!(e.status(), StatusCode::FORBIDDEN);
    let e = a
        .check(Role::Reader, &headers("Bearer n1to"), None)
        .expect_err("a wrong token is refused even for reads");
    assert_eq!(e.status(), StatusCode::UNAUTHORIZED);
    let peer = PeerCert {
        dns_names: vec!["n2.example.com".into()],
    };
    let c = a.check(Role::Agent, &none, Some(&peer)).expect("cert");
    assert!(c.may_report_for("N2.example.com") && !c.may_report_for("n1"));
    assert_eq!(c.name(), "cert:n2.example.com");
}

/// Issue 37 item 1: a client CA and a reader identity, no operator
/// credential, on loopback. A caller with no credential at all must not
/// write (it did: the operator role had no credential, so it counted as
/// "not configured" and its routes fell open), nor report.
#[test]
fn no_write_is_open_once_any_credential_exists() {
    let mut a = Auth::new(Reads::Open);
    a.set_mtls(true);
    a.add_token(
        token_digest("reader-secret"),
        Identity {
            name: "dashboard".into(),
            roles: Roles {
                reader: true,
                ..Roles::default()
            },
            nodes: Nodes::Only(Vec::new()),
        },
    )
    .expect("reader");
    let none = HeaderMap::new();
    let e = a
        .check(Role::Operator, &none, None)
        .expect_err("no operator credential exists, and still no open write");
    assert_eq!(e.status(), StatusCode::UNAUTHORIZED);
    let e = a
        .check(Role::Operator, &headers("Bearer reader-secret"), None)
        .expect_err("the reader is not an operator");
    assert_eq!(e.status(), StatusCode::FORBIDDEN);
    a.check(Role::Reader, &none, None).expect("reads stay open");
    // Only a reader token (no agent credential): reports are writes too.
    let mut b = Auth::new(Reads::Open);
    b.add_token(
        token_digest("reader-secret"),
        Identity {
            name: "dashboard".into(),
            roles: Roles {
                reader: true,
                ..Roles::default()
            },
            nodes: Nodes::Only(Vec::new()),
        },
    )
    .expect("reader");
    b.check(Role::Agent, &none, None)
        .expect_err("no open report once a credential exists");
    b.check(Role::Operator, &none, None)
        .expect_err("no open write once a credential exists");
    assert_eq!(b.closed_roles(), [Role::Agent, Role::Operator]);
    assert_eq!(a.closed_roles(), [Role::Operator]);
    assert!(Auth::default().closed_roles().is_empty());
}

#[test]
fn open_when_nothing_is_configured_and_digests_parse() {
    let a = Auth::default();
    let c = a
        .check(Role::Operator, &HeaderMap::new(), None)
        .expect("open");
    assert!(c.may_report_for("any"));
    let mut a = Auth::new(Reads::Open);
    a.add_token(
        token_digest("x"),
        Identity {
            name: "x".into(),
            roles: Roles::OPERATOR,
            nodes: Nodes::Any,
        },
    )
    .expect("first");
    a.check(Role::Reader, &HeaderMap::new(), None)
        .expect("open reads");
    a.check(Role::Operator, &HeaderMap::new(), None)
        .expect_err("writes never open once configured");
    let d = token_digest("abc");
    assert_eq!(parse_digest(&hex(&d)).expect("round trip"), d);
    let lines = parse_node_tokens(&format!("# c\n\nn1 {}\n", hex(&d))).expect("parses");
    assert_eq!(lines, vec![("n1".into(), d)]);
    assert!(parse_node_tokens("n1 abc")
        .expect_err("short")
        .starts_with("line 1"));
}
