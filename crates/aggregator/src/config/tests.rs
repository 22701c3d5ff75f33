use super::*;

fn section(src: &str) -> Result<AggregatorSection, ConfigError> {
    toml::from_str::<RawAggregatorSection>(src)
        .expect("parses")
        .validate("aggregator")
}

#[test]
fn defaults_bounds_and_keys() {
    let s = section("").expect("empty is fine");
    assert_eq!(s.fleet.ttl, DEFAULT_TTL);
    assert_eq!(s.listen, DEFAULT_LISTEN.parse().expect("addr"));
    let e = section("max_waiver = \"1s\"").expect_err("too short");
    assert_eq!(e.key, "aggregator.max_waiver");
    let e = section("auth = \"kerberos\"").expect_err("unknown auth");
    assert!(
        e.reason.contains("expected \"token\" or \"none\""),
        "{}",
        e.reason
    );
    let e = section("[[node]]\nname = \"a\"\n[[node]]\nname = \"a\"\n").expect_err("twice");
    assert_eq!(e.key, "aggregator.node[1].name");
    let e = section("report_token = \"r\"\nreport_token_file = \"/f\"").expect_err("both");
    assert_eq!(e.key, "aggregator.report_token");
}

#[test]
fn database_is_a_file_or_postgres() {
    assert_eq!(
        section("").expect("default").database,
        Database::Sqlite(DEFAULT_DATABASE.into())
    );
    let s = section("database = \"postgres://agg@db:5432/preflight?sslmode=disable\"\ndatabase_password_file = \"/run/pw\"").expect("pg");
    assert!(matches!(s.database, Database::Postgres(_)));
    let s = section("database = \"postgres://agg@db/preflight?sslmode=verify-full\"\ndatabase_ca_file = \"/etc/pg-ca.pem\"").expect("tls");
    match s.database {
        Database::Postgres(pg) => {
            assert_eq!(pg.ca_file, Some(PathBuf::from("/etc/pg-ca.pem")));
        }
        Database::Sqlite(_) => panic!("postgres expected"),
    }
    let e = section("database = \"postgres://agg@db/preflight?sslmode=allow\"").expect_err("allow");
    assert_eq!(e.key, "aggregator.database");
    let e =
        section("database = \"postgres://agg@db/p?sslmode=disable\"\ndatabase_ca_file = \"/ca\"")
            .expect_err("CA without TLS");
    assert_eq!(e.key, "aggregator.database_ca_file");
    let e = section("database_ca_file = \"/ca\"").expect_err("sqlite");
    assert_eq!(e.key, "aggregator.database_ca_file");
    let e = section("database_password_file = \"/run/pw\"").expect_err("sqlite");
    assert_eq!(e.key, "aggregator.database_password_file");
}

#[test]
fn token_files_are_read_when_resolving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("admin");
    std::fs::write(&f, "  a \n").expect("write");
    let nodes = dir.path().join("nodes");
    std::fs::write(
        &nodes,
        format!(
            "n1 {}\n",
            crate::auth::hex(&crate::auth::token_digest("t1"))
        ),
    )
    .expect("write");
    let s = section(&format!(
        "listen = \"0.0.0.0:9100\"\ninsecure_plaintext = true\nnode_tokens_file = {:?}\nadmin_token_file = {:?}",
        nodes.display().to_string(),
        f.display().to_string()
    ))
    .expect("valid");
    assert_eq!(s.reads, Reads::Authenticated, "not loopback");
    s.resolve_auth("aggregator").expect("resolves");
    std::fs::write(&f, "\n").expect("write");
    let e = s.resolve_auth("aggregator").expect_err("empty file");
    assert_eq!(e.key, "aggregator.admin_token");
    std::fs::write(&f, "t1").expect("write");
    let e = s.resolve_auth("aggregator").expect_err("same token twice");
    assert!(e.reason.contains("distinct"), "{}", e.reason);
    std::fs::write(&nodes, "n1 zz\n").expect("write");
    let e = s.resolve_auth("aggregator").expect_err("bad line");
    assert_eq!(e.key, "aggregator.node_tokens_file");
}

#[test]
fn tls_and_credentials_off_loopback() {
    let e = section("listen = \"0.0.0.0:9100\"\nadmin_token = \"a\"\nnode_tokens_file = \"/n\"")
        .expect_err("plaintext");
    assert_eq!(e.key, "aggregator.tls");
    let tls =
        "listen = \"0.0.0.0:9100\"\n[tls]\ncert = \"/c\"\nkey = \"/k\"\nclient_ca = \"/ca\"\n";
    let e = section(&format!("report_token = \"r\"\nadmin_token = \"a\"\n{tls}"))
        .expect_err("fleet token without opt-in");
    assert_eq!(e.key, "aggregator.report_token");
    section(&format!(
        "report_token = \"r\"\nfleet_report_token = true\nadmin_token = \"a\"\n{tls}"
    ))
    .expect("opted in");
    let e = section(tls).expect_err("no operator credential");
    assert_eq!(e.key, "aggregator.auth");
    let s = section(&format!(
        "{tls}[[identity]]\nname = \"ci\"\ntoken_sha256 = \"{}\"\nroles = [\"operator\"]\n\n[[identity]]\nname = \"mon\"\ncert_san = \"mon.example.com\"\nroles = [\"reader\"]\n",
        "ab".repeat(32)
    ))
    .expect("identities with mTLS");
    assert_eq!(s.identities.len(), 2);
    let e = section("[[identity]]\nname = \"x\"\ntoken_sha256 = \"00\"\nroles = [\"agent\"]\n")
        .expect_err("agent token without node");
    assert_eq!(e.key, "aggregator.identity[0]");
    let e = section("[[identity]]\nname = \"x\"\ncert_san = \"a\"\nroles = [\"reader\"]\n")
        .expect_err("cert_san without client_ca");
    assert!(e.reason.contains("client_ca"), "{}", e.reason);
    let e = section("reads = \"all\"").expect_err("bad reads");
    assert_eq!(e.key, "aggregator.reads");
}

#[test]
fn state_dir_is_absolute_and_defaults_by_database() {
    let e = section("state_dir = \"state\"").expect_err("relative");
    assert_eq!(e.key, "aggregator.state_dir");
    assert!(e.reason.contains("absolute path"), "{}", e.reason);
    let cfg = |src: &str| {
        section(src)
            .expect("valid")
            .resolve("aggregator")
            .expect("resolves")
            .removals_file()
    };
    assert_eq!(
        cfg("database = \"/srv/p/agg.db\""),
        PathBuf::from("/srv/p/agg.db.removals")
    );
    assert_eq!(
        cfg("database = \"/srv/p/agg.db\"\nstate_dir = \"/var/lib/x\""),
        PathBuf::from("/var/lib/x/agg.db.removals")
    );
    assert_eq!(
        cfg("listen = \"127.0.0.1:9101\"\ndatabase = \"postgres://agg@db/preflight?sslmode=disable\""),
        PathBuf::from(DEFAULT_STATE_DIR).join("waiver-removals-9101")
    );
}
