//! Following changes made through other replicas, in process on a real
//! PostgreSQL (a throwaway cluster from `preflight_tests::pg`): a
//! [`Service`] restored from the shared database, changed through a second
//! store handle (another replica, as far as the database can tell), and
//! brought in line by [`Service::reload`] / [`Service::reload_waivers`]
//! called directly, or by the follower thread under a burst of
//! announcements.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant, SystemTime};

use preflight_aggregator::fleet::{Fleet, FleetConfig};
use preflight_aggregator::metrics::Metrics;
use preflight_aggregator::service::{ReloadCounts, Service};
use preflight_aggregator::store::{suite, Database, NodeChange, NodeWriter, PgSettings, Store};
use preflight_model::report::Waiver;
use preflight_tests::pg::Pg;

fn settings(pg: &Pg) -> PgSettings {
    PgSettings::parse(&pg.url(), None).expect("url")
}

fn labels(role: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("role".into(), role.into())])
}

/// A replica's service on `pg`, restored from what the database holds.
fn service(pg: &Pg, metrics: &Metrics) -> Service {
    let store = Store::open(&Database::Postgres(settings(pg))).expect("open");
    let fleet = Fleet::new(FleetConfig::default(), SystemTime::now());
    let (s, _reports) = Service::restore(store, fleet, &[], &[], metrics.clone()).expect("restore");
    s
}

fn waiver(node: &str) -> Waiver {
    suite::waiver(node, SystemTime::now())
}

fn lock_taken(m: &Metrics) -> u64 {
    m.replica_reload_lock.get_sample_count()
}

fn reloads(m: &Metrics, scope: &str) -> u64 {
    m.replica_reload
        .with_label_values(&[scope])
        .get_sample_count()
}

/// Every kind of change made elsewhere is followed, only the differences
/// are applied, and a reload that finds nothing new leaves the fleet's
/// write lock alone (its hold is not observed).
#[test]
fn reload_applies_only_differences_and_skips_the_lock_when_nothing_changed() {
    let pg = Pg::start();
    let mut other = Store::open(&Database::Postgres(settings(&pg))).expect("open");
    let now = SystemTime::now();
    other
        .upsert_node("c0", &labels("compute"), "api", now)
        .expect("write");
    let metrics = Metrics::new();
    let svc = service(&pg, &metrics);
    let mut known: HashSet<String> = HashSet::from(["c0".to_owned()]);

    // Nothing new since the restore: no change, no write lock.
    let c = svc.reload(&mut known).expect("reload");
    assert_eq!((c.nodes, c.waivers, c.stored_nodes), (0, 0, 1), "{c:?}");
    assert_eq!(c.locked, Duration::ZERO);
    assert_eq!(lock_taken(&metrics), 0);
    assert_eq!(reloads(&metrics, "all"), 1);

    // Two nodes added elsewhere.
    for n in ["c1", "c2"] {
        other
            .upsert_node(n, &labels("compute"), "api", now)
            .expect("write");
    }
    let c = svc.reload(&mut known).expect("reload");
    assert_eq!((c.nodes, c.waivers, c.stored_nodes), (2, 0, 3), "{c:?}");
    assert_eq!(lock_taken(&metrics), 1);
    assert_eq!(known.len(), 3);
    assert_eq!(
        svc.read(|f| f
            .labels("c2")
            .map(preflight_aggregator::fleet::Labels::to_map)),
        Some(labels("compute"))
    );

    // Again: nothing new, the lock is not taken.
    let c = svc.reload(&mut known).expect("reload");
    assert_eq!(
        c,
        ReloadCounts {
            stored_nodes: 3,
            took: c.took,
            ..ReloadCounts::default()
        }
    );
    assert_eq!(lock_taken(&metrics), 1);

    // Relabeled elsewhere: that node only.
    other
        .upsert_node("c1", &labels("storage"), "api", now)
        .expect("write");
    let c = svc.reload(&mut known).expect("reload");
    assert_eq!((c.nodes, c.waivers), (1, 0), "{c:?}");
    assert_eq!(
        svc.read(|f| f
            .labels("c1")
            .map(preflight_aggregator::fleet::Labels::to_map)),
        Some(labels("storage"))
    );
    assert_eq!(lock_taken(&metrics), 2);

    // A waiver made elsewhere: a reload of waivers only finds it; the
    // next one finds nothing and takes no lock.
    let w = other.insert_waiver(waiver("c2")).expect("waiver");
    let c = svc.reload_waivers().expect("reload");
    assert_eq!((c.nodes, c.waivers, c.stored_nodes), (0, 1, 0), "{c:?}");
    assert!(svc.read(|f| f.waiver(w.id).is_some()));
    assert_eq!(lock_taken(&metrics), 3);
    let c = svc.reload_waivers().expect("reload");
    assert_eq!((c.waivers, c.stored_waivers), (0, 1), "{c:?}");
    assert_eq!(lock_taken(&metrics), 3);
    assert_eq!(reloads(&metrics, "waivers"), 2);

    // Ended elsewhere.
    assert!(other
        .end_waiver(&w, "bob", "waiver.remove", SystemTime::now())
        .expect("end"));
    let c = svc.reload_waivers().expect("reload");
    assert_eq!(c.waivers, 1, "{c:?}");
    assert!(svc.read(|f| f.waiver(w.id).is_none()));

    // Removed elsewhere.
    other
        .remove_node("c2", "api", SystemTime::now())
        .expect("remove");
    let c = svc.reload(&mut known).expect("reload");
    assert_eq!((c.nodes, c.stored_nodes), (1, 2), "{c:?}");
    assert!(svc.read(|f| f.status("c2").is_none()));
    assert!(!known.contains("c2"));
    assert_eq!(lock_taken(&metrics), 5);
}

/// Agents registering through another replica announce every batch; the
/// follower serves a burst of announcements with fewer reloads, and a
/// waiver made elsewhere in the middle of the burst still reaches this
/// replica, as does every node.
#[test]
fn a_waiver_made_during_a_burst_of_announcements_is_followed() {
    let pg = Pg::start();
    let mut other = Store::open(&Database::Postgres(settings(&pg))).expect("open");
    other
        .upsert_node("c0", &labels("compute"), "api", SystemTime::now())
        .expect("write");
    let metrics = Metrics::new();
    let svc = service(&pg, &metrics);
    drop(preflight_aggregator::replicas::spawn_follower(
        svc.clone(),
        settings(&pg),
    ));
    // The follower's first reload, on listening, is done.
    let t = Instant::now();
    while reloads(&metrics, "all") == 0 {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "follower never reloaded"
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    let writer = NodeWriter::spawn(&settings(&pg));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    const WAVES: usize = 20;
    const PER_WAVE: usize = 100;
    let mut waiver_at = None;
    let mut waiver_id = 0;
    for wave in 0..WAVES {
        rt.block_on(async {
            let tasks: Vec<_> = (0..PER_WAVE)
                .map(|i| {
                    let w = writer.clone();
                    tokio::spawn(async move {
                        w.upsert(NodeChange {
                            name: format!("n{wave:02}-{i:03}"),
                            labels: labels("compute"),
                            actor: "agent".into(),
                            at: SystemTime::now(),
                        })
                        .await
                    })
                })
                .collect();
            for t in tasks {
                t.await.expect("task").expect("registered");
            }
        });
        if wave == WAVES / 2 {
            waiver_id = other.insert_waiver(waiver("c0")).expect("waiver").id;
            waiver_at = Some(Instant::now());
        }
    }
    let waiver_at = waiver_at.expect("made");
    while !svc.read(|f| f.waiver(waiver_id).is_some()) {
        assert!(
            waiver_at.elapsed() < Duration::from_secs(10),
            "the waiver never reached this replica"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    eprintln!(
        "waiver followed {:?} after it was committed",
        waiver_at.elapsed()
    );
    let all = 1 + WAVES * PER_WAVE;
    let t = Instant::now();
    while svc.read(Fleet::len) != all {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{} of {all} nodes followed",
            svc.read(Fleet::len)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!(
        "{} registration batches announced; {} full reloads, {} of waivers only",
        writer.batches(),
        reloads(&metrics, "all"),
        reloads(&metrics, "waivers")
    );
}
