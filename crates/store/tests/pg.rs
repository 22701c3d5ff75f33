//! The store suite on a real PostgreSQL (a throwaway cluster from
//! `preflight_tests::pg`), in clear and over TLS; the SQLite backend runs
//! the same suite in the crate's unit tests. Needs root (it runs the
//! cluster as the `postgres` user) and fails, never skips, without it.

use preflight_store::{suite, Database, PgSettings, Store};
use preflight_tests::pg::Pg;

fn db(pg: &Pg) -> Database {
    Database::Postgres(PgSettings::parse(&pg.url(), None).expect("url"))
}

#[test]
fn store_suite_on_postgres() {
    let pg = Pg::start();
    suite::run_all(&db(&pg));
    let v = pg.psql("preflight", "SELECT version FROM schema_version");
    assert_eq!(v.trim(), "4");
}

/// TLS to PostgreSQL follows libpq's sslmode: the store suite runs over
/// `verify-full` against a server certificate from a CA the test made;
/// a wrong CA, or a name the certificate does not carry, is refused.
#[test]
fn tls_follows_sslmode() {
    let pg = Pg::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let url = |db: &str, host: &str, mode: &str| {
        format!("postgres://postgres@{host}:{}/{db}?sslmode={mode}", pg.port)
    };
    let settings = |url: String, ca: Option<&std::path::Path>| {
        PgSettings::parse(&url, None)
            .expect("url")
            .with_ca_file(ca.map(std::path::Path::to_path_buf))
            .expect("ca")
    };
    let open = |url: String, ca: Option<&std::path::Path>| {
        Store::open(&Database::Postgres(settings(url, ca))).map(drop)
    };

    // A server without TLS: require is refused, prefer connects in clear.
    let e = open(url("preflight", "127.0.0.1", "require"), None).expect_err("no TLS");
    assert!(e.to_string().contains("TLS"), "{e}");
    open(url("preflight", "127.0.0.1", "prefer"), None).expect("prefer without TLS");

    let ca = pg.enable_tls("DNS:localhost");
    let wrong = preflight_tests::pg::make_ca(dir.path(), "wrong");
    pg.psql("postgres", "CREATE DATABASE tls");

    // The whole store suite over verify-full with the right CA.
    let full = Database::Postgres(settings(url("tls", "localhost", "verify-full"), Some(&ca)));
    suite::run_all(&full);
    let mut store = Store::open(&full).expect("verify-full");
    store.ping().expect("ping");
    let encrypted = pg.psql(
        "postgres",
        "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid)
         WHERE application_name = 'preflight-aggregator' AND ssl",
    );
    assert_eq!(encrypted.trim(), "1", "the store's connection is TLS");
    drop(store);

    // A CA that did not sign the server's certificate.
    let e = open(url("tls", "localhost", "verify-full"), Some(&wrong)).expect_err("wrong CA");
    assert!(e.to_string().contains("certificate"), "{e}");
    eprintln!("wrong CA: {e}");
    // The certificate names localhost, not 127.0.0.1: verify-full refuses,
    // verify-ca (chain only) accepts, still not with the wrong CA.
    let e = open(url("tls", "127.0.0.1", "verify-full"), Some(&ca)).expect_err("name");
    assert!(e.to_string().contains("certificate"), "{e}");
    eprintln!("wrong name: {e}");
    open(url("tls", "127.0.0.1", "verify-ca"), Some(&ca)).expect("verify-ca");
    open(url("tls", "127.0.0.1", "verify-ca"), Some(&wrong)).expect_err("verify-ca, wrong CA");
    // require: encrypted, certificate unchecked unless a CA is given.
    open(url("tls", "127.0.0.1", "require"), None).expect("require");
    open(url("tls", "127.0.0.1", "require"), Some(&wrong))
        .expect_err("require with a CA checks it");
    // verify-full without a CA file checks against the system roots, which
    // do not hold the test's CA.
    open(url("tls", "localhost", "verify-full"), None).expect_err("system roots");
}

/// Two replicas' stores taking leases at the same moment: each decides on
/// the leases it sees (a budget of 2 nodes in all, first free by name,
/// with a pause between reading and writing to widen any race), and the
/// lock makes the second see the first's lease. Together they never hold
/// more than the budget, and no node twice.
#[test]
fn concurrent_leases_see_each_other() {
    let pg = Pg::start();
    let db = db(&pg);
    drop(Store::open(&db).expect("migrated"));
    let nodes = ["n1", "n2", "n3", "n4", "n5", "n6"];
    let rounds = 10;
    let barrier = std::sync::Barrier::new(2);
    let taken: Vec<Vec<String>> = std::thread::scope(|s| {
        let handles: Vec<_> = ["p1", "p2"]
            .into_iter()
            .map(|pipeline| {
                let (db, barrier) = (&db, &barrier);
                s.spawn(move || {
                    let mut store = Store::open(db).expect("open");
                    let mut mine = Vec::new();
                    for _ in 0..rounds {
                        barrier.wait();
                        let now = std::time::SystemTime::now();
                        // An error is kept, not raised: the other thread
                        // must not wait at the barrier for one that died.
                        match store.take_lease(now, |leased| {
                            std::thread::sleep(std::time::Duration::from_millis(30));
                            let room = 2usize.saturating_sub(leased.len());
                            let batch: Vec<&str> = nodes
                                .iter()
                                .copied()
                                .filter(|n| !leased.contains(*n))
                                .take(room)
                                .collect();
                            let lease =
                                (!batch.is_empty()).then(|| suite::lease(&batch, pipeline, now));
                            (lease, ())
                        }) {
                            Ok((preflight_store::Taken::Leased(l), ())) => mine.extend(l.nodes),
                            Ok(_) => {}
                            Err(e) => mine.push(format!("error: {e}")),
                        }
                    }
                    mine
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let mut all: Vec<&String> = taken.iter().flatten().collect();
    all.sort();
    assert_eq!(all, ["n1", "n2"], "{taken:?}");
    let rows = pg.psql("preflight", "SELECT count(*) FROM lease_nodes");
    assert_eq!(rows.trim(), "2");
}
