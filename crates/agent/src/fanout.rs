//! Every replica gets every report. An aggregator in the agent's list whose
//! host is a name may stand for several replicas (a Kubernetes headless
//! Service answers with one address per pod), and each replica's gate is
//! complete only if it has every node's report. So the name is resolved
//! every [`RESOLVE_EVERY`], and sooner when a pusher cannot connect; one
//! pusher runs per address, started and stopped as the set of addresses
//! changes. Each pusher's URL is the configured one pinned to its address
//! ([`BaseUrl::at`]), so replicas still see the name they were asked by.
//! The resolver is injected, so this logic is tested without DNS.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use preflight_client::BaseUrl;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// Longest time between two resolutions of an aggregator's name.
pub const RESOLVE_EVERY: Duration = Duration::from_secs(30);

/// Shortest time between two resolutions (a pusher that cannot connect asks
/// for one at once, but a dead replica must not turn into a DNS storm).
pub const RESOLVE_MIN_GAP: Duration = Duration::from_secs(1);

/// What a resolution gives.
pub type Resolved = std::io::Result<Vec<SocketAddr>>;

/// Turns a host and port into addresses.
pub trait Resolver: Send + Sync + 'static {
    /// All addresses of `host`, each with `port`.
    fn resolve(&self, host: &str, port: u16) -> Pin<Box<dyn Future<Output = Resolved> + Send>>;
}

/// The system's resolver (`getaddrinfo` through tokio: `/etc/hosts`, DNS).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn resolve(&self, host: &str, port: u16) -> Pin<Box<dyn Future<Output = Resolved> + Send>> {
        let target = (host.to_owned(), port);
        Box::pin(async move { Ok(tokio::net::lookup_host(target).await?.collect()) })
    }
}

/// The running pushers of one configured URL, by address; dropping it (the
/// fan-out task ends or is aborted) stops them all.
#[derive(Default)]
struct Pushers(BTreeMap<SocketAddr, JoinHandle<()>>);

impl Drop for Pushers {
    fn drop(&mut self) {
        for h in self.0.values() {
            h.abort();
        }
    }
}

/// Runs pushers for `url` until aborted: one for the URL itself when its
/// host is an IP address, else one per address its name resolves to.
/// `start(url, unreachable)` starts one pusher for a (pinned) URL; the
/// pusher calls `unreachable.notify_one()` when it cannot connect, which
/// brings the next resolution forward. A resolution that fails or finds no
/// address keeps the pushers running (DNS trouble is not a replica gone),
/// and is retried sooner while there is no pusher at all.
pub async fn fan_out<F>(url: BaseUrl, resolver: Arc<dyn Resolver>, mut start: F)
where
    F: FnMut(BaseUrl, Arc<Notify>) -> JoinHandle<()>,
{
    let unreachable = Arc::new(Notify::new());
    // https: one pusher per URL (the certificate names the host, so the
    // connection is made by name; see BaseUrl::at).
    if !url.is_name() || url.is_tls() {
        let _ = start(url, unreachable).await;
        return;
    }
    let mut pushers = Pushers::default();
    let mut retry = RESOLVE_MIN_GAP;
    loop {
        let resolved_at = tokio::time::Instant::now();
        match resolver.resolve(url.host(), url.port()).await {
            Ok(addrs) if !addrs.is_empty() => {
                let want: BTreeSet<SocketAddr> = addrs.into_iter().collect();
                reconcile(&mut pushers, &want, &url, &unreachable, &mut start);
            }
            Ok(_) => {
                tracing::warn!(aggregator = %url, running = pushers.0.len(), "name resolves to no address; keeping the last known replicas");
            }
            Err(e) => {
                tracing::warn!(aggregator = %url, error = %e, running = pushers.0.len(), "cannot resolve; keeping the last known replicas");
            }
        }
        let wait = if pushers.0.is_empty() {
            let w = retry;
            retry = (retry * 2).min(RESOLVE_EVERY);
            w
        } else {
            retry = RESOLVE_MIN_GAP;
            RESOLVE_EVERY
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = unreachable.notified() => {
                tokio::time::sleep_until(resolved_at + RESOLVE_MIN_GAP).await;
            }
        }
    }
}

/// Starts a pusher for each new address and stops those of addresses gone.
fn reconcile<F>(
    pushers: &mut Pushers,
    want: &BTreeSet<SocketAddr>,
    url: &BaseUrl,
    unreachable: &Arc<Notify>,
    start: &mut F,
) where
    F: FnMut(BaseUrl, Arc<Notify>) -> JoinHandle<()>,
{
    pushers.0.retain(|addr, handle| {
        let keep = want.contains(addr) && !handle.is_finished();
        if !keep {
            tracing::info!(aggregator = %url, address = %addr, "replica gone; stopping its pusher");
            handle.abort();
        }
        keep
    });
    for addr in want {
        if !pushers.0.contains_key(addr) {
            tracing::info!(aggregator = %url, address = %addr, "pushing to replica");
            let handle = start(url.at(*addr), Arc::clone(unreachable));
            pushers.0.insert(*addr, handle);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Answers what the test last set, and counts the questions.
    #[derive(Default)]
    struct Fake {
        answer: Mutex<Option<Vec<SocketAddr>>>,
        asked: Mutex<Vec<(String, u16)>>,
    }

    impl Resolver for Fake {
        fn resolve(&self, host: &str, port: u16) -> Pin<Box<dyn Future<Output = Resolved> + Send>> {
            self.asked
                .lock()
                .expect("lock")
                .push((host.to_owned(), port));
            let r =
                self.answer.lock().expect("lock").clone().ok_or_else(|| {
                    std::io::Error::new(std::io::ErrorKind::NotFound, "no such name")
                });
            Box::pin(async move { r })
        }
    }

    /// The set of running pushers, as each pusher sees itself: a pusher adds
    /// its URL when it starts and removes it when it is dropped (aborted).
    type Running = Arc<Mutex<BTreeSet<String>>>;

    /// The `unreachable` notifies handed to the pushers, in start order.
    type Notifies = Arc<Mutex<Vec<Arc<Notify>>>>;

    struct Member(Running, String);
    impl Drop for Member {
        fn drop(&mut self) {
            self.0.lock().expect("lock").remove(&self.1);
        }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("addr")
    }

    /// Starts `fan_out` with pushers that only record themselves; returns
    /// the running set, the notifies handed out, and the task.
    fn start(url: &str, fake: &Arc<Fake>) -> (Running, Notifies, JoinHandle<()>) {
        let running: Running = Arc::default();
        let notifies: Notifies = Arc::default();
        let (r, n) = (Arc::clone(&running), Arc::clone(&notifies));
        let resolver: Arc<dyn Resolver> = Arc::clone(fake) as Arc<dyn Resolver>;
        let task = tokio::spawn(fan_out(
            BaseUrl::parse(url).expect("url"),
            resolver,
            move |u, notify| {
                n.lock().expect("lock").push(notify);
                let r = Arc::clone(&r);
                tokio::spawn(async move {
                    let name = u.to_string();
                    r.lock().expect("lock").insert(name.clone());
                    let _member = Member(r, name);
                    std::future::pending::<()>().await;
                })
            },
        ));
        (running, notifies, task)
    }

    fn set(r: &Running) -> Vec<String> {
        r.lock().expect("lock").iter().cloned().collect()
    }

    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_pusher_per_address_following_the_name() {
        let fake = Arc::new(Fake::default());
        *fake.answer.lock().expect("lock") = Some(vec![
            addr("10.0.0.1:9100"),
            addr("10.0.0.2:9100"),
            addr("10.0.0.1:9100"),
        ]);
        let (running, _, task) = start("http://agg.svc:9100", &fake);
        settle().await;
        assert_eq!(
            set(&running),
            [
                "http://agg.svc:9100 via 10.0.0.1:9100",
                "http://agg.svc:9100 via 10.0.0.2:9100"
            ]
        );
        assert_eq!(
            fake.asked.lock().expect("lock")[0],
            ("agg.svc".to_owned(), 9100)
        );

        // A pod replaced: the next resolution (30 s) stops one, starts one.
        *fake.answer.lock().expect("lock") =
            Some(vec![addr("10.0.0.2:9100"), addr("[fd00::3]:9100")]);
        tokio::time::sleep(RESOLVE_EVERY - Duration::from_secs(1)).await;
        settle().await;
        assert_eq!(set(&running).len(), 2);
        assert!(
            set(&running)[0].ends_with("10.0.0.1:9100"),
            "not yet re-resolved"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        settle().await;
        assert_eq!(
            set(&running),
            [
                "http://agg.svc:9100 via 10.0.0.2:9100",
                "http://agg.svc:9100 via [fd00::3]:9100"
            ]
        );

        // DNS fails, then answers nothing: the known replicas keep their reports.
        *fake.answer.lock().expect("lock") = None;
        tokio::time::sleep(RESOLVE_EVERY + Duration::from_secs(1)).await;
        *fake.answer.lock().expect("lock") = Some(vec![]);
        tokio::time::sleep(RESOLVE_EVERY + Duration::from_secs(1)).await;
        settle().await;
        assert_eq!(set(&running).len(), 2);
        assert_eq!(fake.asked.lock().expect("lock").len(), 4);

        // Stopping the fan-out stops every pusher.
        task.abort();
        settle().await;
        assert!(set(&running).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_pusher_brings_the_resolution_forward_but_not_below_the_gap() {
        let fake = Arc::new(Fake::default());
        *fake.answer.lock().expect("lock") = Some(vec![addr("10.0.0.1:9100")]);
        let (running, notifies, _task) = start("http://agg.svc:9100", &fake);
        settle().await;
        assert_eq!(set(&running).len(), 1);
        *fake.answer.lock().expect("lock") = Some(vec![addr("10.0.0.4:9100")]);
        let n = Arc::clone(&notifies.lock().expect("lock")[0]);
        n.notify_one();
        settle().await;
        assert_eq!(fake.asked.lock().expect("lock").len(), 1, "held to the gap");
        tokio::time::sleep(RESOLVE_MIN_GAP).await;
        settle().await;
        assert_eq!(fake.asked.lock().expect("lock").len(), 2);
        assert_eq!(set(&running), ["http://agg.svc:9100 via 10.0.0.4:9100"]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unresolvable_name_is_retried_with_backoff_until_it_resolves() {
        let fake = Arc::new(Fake::default());
        let (running, _, _task) = start("http://agg.svc:9100", &fake);
        // Tried at 0, 1, 3, 7 s (backoff from the 1 s gap).
        tokio::time::sleep(Duration::from_millis(7500)).await;
        settle().await;
        assert_eq!(fake.asked.lock().expect("lock").len(), 4);
        assert!(set(&running).is_empty());
        *fake.answer.lock().expect("lock") = Some(vec![addr("10.0.0.1:9100")]);
        tokio::time::sleep(Duration::from_secs(8)).await;
        settle().await;
        assert_eq!(set(&running).len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_ip_address_is_pushed_to_as_configured_without_resolving() {
        let fake = Arc::new(Fake::default());
        let (running, _, _task) = start("http://[::1]:9100", &fake);
        settle().await;
        assert_eq!(set(&running), ["http://[::1]:9100"]);
        tokio::time::sleep(RESOLVE_EVERY * 3).await;
        assert!(fake.asked.lock().expect("lock").is_empty());
    }
}
