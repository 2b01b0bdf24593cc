//! Checking user passwords without letting password guessing slow the data path.
//!
//! bcrypt is slow on purpose (tens of milliseconds a check), so three things keep it off the
//! threads that move blobs:
//!
//! - it runs on a few dedicated threads ([`AuthConfig::password_threads`]) fed by a bounded
//!   queue; when the queue is full the check is not queued but answered "busy" (`503` with
//!   `Retry-After`), so a flood costs at most those threads and never tokio's blocking pool,
//!   which serves blob reads and writes;
//! - a verified password is remembered for [`CACHE_TTL`], and a wrong one for
//!   [`FAILURE_TTL`], by the SHA-256 of the user name and password (never the password
//!   itself): clients send credentials with every request of a push, and a client retrying
//!   the same wrong password is answered without hashing;
//! - each client address may fail [`AuthConfig::max_failures_per_minute`] checks a minute;
//!   past that its checks are answered `429` without hashing until the minute is over.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use kraken_core::Digest;
use tokio::sync::oneshot;

use super::config::AuthConfig;

/// How long a verified password is trusted without running bcrypt again.
pub(crate) const CACHE_TTL: Duration = Duration::from_secs(300);
/// How long a wrong password is refused without running bcrypt again.
pub(crate) const FAILURE_TTL: Duration = Duration::from_secs(60);
/// The window of [`AuthConfig::max_failures_per_minute`].
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Most entries in each cache and in the per-address failure counts; a full map first drops
/// its expired entries, and is emptied if none were.
const CAPACITY: usize = 4096;

/// The outcome of a password check.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) enum Verdict {
    /// The password is the user's.
    Valid,
    /// Unknown user or wrong password.
    Invalid,
    /// This client failed too often this minute; try again after the duration.
    Limited(Duration),
    /// The hashing threads are saturated; try again shortly.
    Busy,
}

/// The users' password hashes, the caches and the hashing threads.
#[derive(Debug)]
pub(crate) struct Passwords {
    /// User name → bcrypt hash.
    users: HashMap<String, Arc<str>>,
    verified: Expiring<Digest>,
    failed: Expiring<Digest>,
    failures: Mutex<HashMap<IpAddr, Window>>,
    max_failures: u32,
    hasher: Hasher,
}

impl Passwords {
    /// Starts the hashing threads for `users` (name → bcrypt hash).
    pub(crate) fn new(users: HashMap<String, String>, config: &AuthConfig) -> Self {
        Self {
            users: users
                .into_iter()
                .map(|(name, hash)| (name, Arc::from(hash)))
                .collect(),
            verified: Expiring::new(CACHE_TTL),
            failed: Expiring::new(FAILURE_TTL),
            failures: Mutex::new(HashMap::new()),
            max_failures: config.max_failures_per_minute,
            hasher: Hasher::start(config.password_threads, config.password_queue),
        }
    }

    /// Whether `password` is `name`'s, asked by `client`.
    pub(crate) async fn check(
        &self,
        name: &str,
        password: &str,
        client: Option<IpAddr>,
    ) -> Verdict {
        // An unknown user costs no hashing, so it is neither limited nor counted.
        let Some(hash) = self.users.get(name) else {
            return Verdict::Invalid;
        };
        let key = Digest::sha256_of(format!("{name}\0{password}").as_bytes());
        let now = Instant::now();
        if self.verified.contains(&key, now) {
            return Verdict::Valid;
        }
        // Every check counts as a failure until it succeeds, so concurrent guesses cannot
        // all slip under the limit before the first one fails.
        if let Some(ip) = client
            && let Err(retry_after) = self.reserve_failure(ip, now)
        {
            return Verdict::Limited(retry_after);
        }
        if self.failed.contains(&key, now) {
            return Verdict::Invalid;
        }
        let valid = self.hasher.verify(password, hash).await;
        let now = Instant::now();
        match valid {
            Some(true) => {
                self.verified.insert(key, now);
                self.refund_failure(client);
                Verdict::Valid
            }
            Some(false) => {
                self.failed.insert(key, now);
                Verdict::Invalid
            }
            None => {
                self.refund_failure(client);
                Verdict::Busy
            }
        }
    }

    /// How many bcrypt checks have run.
    #[cfg(test)]
    pub(crate) fn hashes_run(&self) -> u64 {
        self.hasher.runs.load(Ordering::Relaxed)
    }

    /// Counts a failure of `ip` in advance; `Err` with the time until its window ends if it
    /// has had its share this minute.
    fn reserve_failure(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let mut failures = lock(&self.failures);
        if failures.len() >= CAPACITY && !failures.contains_key(&ip) {
            failures.retain(|_, w| now.saturating_duration_since(w.started) < FAILURE_WINDOW);
            // Still full of live windows: make room by the oldest, not by forgetting every
            // address (which would reset the window of the address asking).
            while failures.len() >= CAPACITY {
                let Some(oldest) = failures
                    .iter()
                    .min_by_key(|(_, w)| w.started)
                    .map(|(ip, _)| *ip)
                else {
                    break;
                };
                failures.remove(&oldest);
            }
        }
        let window = failures.entry(ip).or_insert(Window {
            started: now,
            count: 0,
        });
        if now.saturating_duration_since(window.started) >= FAILURE_WINDOW {
            *window = Window {
                started: now,
                count: 0,
            };
        }
        if window.count >= self.max_failures {
            return Err(window.started + FAILURE_WINDOW - now);
        }
        window.count += 1;
        Ok(())
    }

    /// Takes back a failure counted in advance for a check that did not fail.
    fn refund_failure(&self, client: Option<IpAddr>) {
        if let Some(ip) = client
            && let Some(window) = lock(&self.failures).get_mut(&ip)
        {
            window.count = window.count.saturating_sub(1);
        }
    }
}

/// One client address's failures in the current minute.
#[derive(Debug)]
struct Window {
    started: Instant,
    count: u32,
}

/// A bounded set whose entries expire after `ttl`.
#[derive(Debug)]
struct Expiring<K> {
    entries: Mutex<HashMap<K, Instant>>,
    ttl: Duration,
}

impl<K: Eq + Hash> Expiring<K> {
    fn new(ttl: Duration) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            ttl,
        }
    }

    fn contains(&self, key: &K, now: Instant) -> bool {
        lock(&self.entries)
            .get(key)
            .is_some_and(|at| now.saturating_duration_since(*at) < self.ttl)
    }

    fn insert(&self, key: K, now: Instant) {
        let mut entries = lock(&self.entries);
        if entries.len() >= CAPACITY {
            let ttl = self.ttl;
            entries.retain(|_, at| now.saturating_duration_since(*at) < ttl);
            if entries.len() >= CAPACITY {
                entries.clear();
            }
        }
        entries.insert(key, now);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Caches and counters: a panic while holding one cannot leave it inconsistent.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One bcrypt check for the hashing threads.
struct Job {
    password: String,
    hash: Arc<str>,
    answer: oneshot::Sender<bool>,
}

/// The dedicated bcrypt threads and their bounded queue. The threads end when the
/// [`Passwords`] holding this is dropped.
#[derive(Debug)]
struct Hasher {
    jobs: SyncSender<Job>,
    /// bcrypt checks run, read by tests.
    #[cfg_attr(not(test), allow(dead_code))]
    runs: Arc<AtomicU64>,
}

impl Hasher {
    fn start(threads: usize, queue: usize) -> Self {
        let (jobs, receiver) = std::sync::mpsc::sync_channel::<Job>(queue);
        let receiver = Arc::new(Mutex::new(receiver));
        let runs = Arc::new(AtomicU64::new(0));
        for i in 0..threads.max(1) {
            let receiver = Arc::clone(&receiver);
            let runs = Arc::clone(&runs);
            let spawned = std::thread::Builder::new()
                .name(format!("kraken-bcrypt-{i}"))
                .spawn(move || hash_jobs(&receiver, &runs));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a password hashing thread");
            }
        }
        Self { jobs, runs }
    }

    /// Whether `password` matches `hash`; `None` when the queue is full.
    async fn verify(&self, password: &str, hash: &Arc<str>) -> Option<bool> {
        let (answer, answered) = oneshot::channel();
        let job = Job {
            password: password.to_owned(),
            hash: Arc::clone(hash),
            answer,
        };
        match self.jobs.try_send(job) {
            Ok(()) => Some(answered.await.unwrap_or(false)),
            Err(TrySendError::Full(_)) => None,
            Err(TrySendError::Disconnected(_)) => Some(false),
        }
    }
}

fn hash_jobs(receiver: &Mutex<Receiver<Job>>, runs: &AtomicU64) {
    loop {
        // The lock is held only while waiting for the next job, not while hashing.
        let Ok(job) = lock(receiver).recv() else {
            return;
        };
        if job.answer.is_closed() {
            // The request went away while queued: nothing to answer.
            continue;
        }
        runs.fetch_add(1, Ordering::Relaxed);
        let valid = bcrypt::verify(&job.password, &job.hash).unwrap_or(false);
        let _ = job.answer.send(valid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passwords(cost: u32, configure: impl FnOnce(&mut AuthConfig)) -> Passwords {
        let mut config = AuthConfig::default();
        configure(&mut config);
        let hash = bcrypt::hash("s3cret", cost).unwrap();
        Passwords::new(HashMap::from([("ci".to_owned(), hash)]), &config)
    }

    #[tokio::test]
    async fn failures_are_limited_per_address_and_repeats_are_not_hashed_again() {
        let passwords = passwords(4, |c| c.max_failures_per_minute = 5);
        let (a, b) = (
            Some(IpAddr::from([10, 0, 0, 1])),
            Some(IpAddr::from([10, 0, 0, 2])),
        );
        for i in 0..5 {
            let verdict = passwords.check("ci", &format!("wrong{i}"), a).await;
            assert_eq!(verdict, Verdict::Invalid);
        }
        assert_eq!(passwords.hashes_run(), 5);
        for password in ["wrong5", "wrong0", "s3cret"] {
            assert!(matches!(
                passwords.check("ci", password, a).await,
                Verdict::Limited(after) if after <= FAILURE_WINDOW
            ));
        }
        assert_eq!(passwords.hashes_run(), 5, "limited checks hash nothing");
        // Another address is not limited; a repeated wrong password is hashed once.
        assert_eq!(passwords.check("ci", "s3cret", b).await, Verdict::Valid);
        assert_eq!(passwords.check("ci", "wrong0", b).await, Verdict::Invalid);
        assert_eq!(passwords.check("ci", "wrong0", b).await, Verdict::Invalid);
        assert_eq!(passwords.hashes_run(), 6);
        // Unknown users cost nothing and count nothing.
        for _ in 0..10 {
            assert_eq!(passwords.check("nobody", "x", b).await, Verdict::Invalid);
        }
        assert_eq!(passwords.check("ci", "s3cret", b).await, Verdict::Valid);
        assert_eq!(passwords.hashes_run(), 6, "a verified password is cached");
    }

    /// A flood of distinct wrong passwords from many addresses fills the queue of the one
    /// hashing thread and is answered "busy" at once; tokio's blocking pool, which serves
    /// blob reads and writes, is not used.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flood_fills_its_own_queue_not_the_blocking_pool() {
        let passwords = Arc::new(passwords(12, |c| {
            c.password_threads = 1;
            c.password_queue = 2;
        }));
        let started = Instant::now();
        let flood: Vec<_> = (0..50u8)
            .map(|i| {
                let passwords = Arc::clone(&passwords);
                tokio::spawn(async move {
                    let client = Some(IpAddr::from([10, 1, 0, i]));
                    passwords.check("ci", &format!("guess{i}"), client).await
                })
            })
            .collect();
        // The data path's blocking work runs at once while the flood is hashed.
        for _ in 0..20 {
            let queued = Instant::now();
            tokio::task::spawn_blocking(|| ()).await.unwrap();
            assert!(queued.elapsed() < Duration::from_millis(100));
        }
        let mut busy = 0;
        for check in flood {
            match check.await.unwrap() {
                Verdict::Busy => busy += 1,
                verdict => assert_eq!(verdict, Verdict::Invalid),
            }
        }
        assert!(busy >= 45, "{busy} of 50 answered busy");
        assert!(
            passwords.hashes_run() <= 5,
            "{} hashed",
            passwords.hashes_run()
        );
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
