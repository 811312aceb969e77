//! The work queue between what changed and the reconcilers, as client-go's
//! rate-limited queue gives it:
//!
//! - a key is queued once however often it is added before a worker takes
//!   it (de-duplication);
//! - at most one worker holds a key at a time: a key added while it is
//!   being worked on is queued again when that work is done;
//! - a key that failed comes back after a per-key exponential back-off with
//!   a cap, and every rate-limited add also passes a global token bucket;
//! - counters of depth, adds, retries and latency for the metrics.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// The queue's limits.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// First back-off of a failing key; doubled on each failure.
    pub base_backoff: Duration,
    /// Longest back-off.
    pub max_backoff: Duration,
    /// Rate-limited adds per second, across all keys.
    pub qps: f64,
    /// Rate-limited adds allowed at once.
    pub burst: u32,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            base_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_secs(60),
            qps: 50.0,
            burst: 300,
        }
    }
}

/// What the queue counted (for metrics).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueMetrics {
    /// Keys waiting for a worker.
    pub depth: usize,
    pub adds: u64,
    /// Rate-limited adds (failures sent back).
    pub retries: u64,
    /// Keys handed to workers.
    pub processed: u64,
    /// Sum of the time keys waited in the queue, and the longest.
    pub queue_wait_total: Duration,
    pub queue_wait_max: Duration,
    /// Work in progress now: the summed age of every key being worked on,
    /// and the oldest's (client-go's unfinished work and longest running
    /// processor).
    pub unfinished_work: Duration,
    pub longest_running: Duration,
}

struct Inner<T> {
    queue: VecDeque<T>,
    /// Keys queued or waiting to be queued again after their work.
    dirty: HashSet<T>,
    /// Keys being worked on, since when.
    processing: HashMap<T, Instant>,
    added_at: HashMap<T, Instant>,
    failures: HashMap<T, u32>,
    tokens: f64,
    last_refill: Instant,
    shut_down: bool,
    metrics: QueueMetrics,
    /// Set by [`WorkQueue::named`]: the queue's latency histograms.
    timers: Option<crate::metrics::Timers>,
}

impl<T> Inner<T> {
    fn snapshot(&self) -> QueueMetrics {
        let mut m = self.metrics.clone();
        m.depth = self.queue.len();
        let now = Instant::now();
        for since in self.processing.values() {
            let age = now.duration_since(*since);
            m.unfinished_work += age;
            m.longest_running = m.longest_running.max(age);
        }
        m
    }
}

/// Reads a named queue's counters while it lives ([`WorkQueue::named`]).
type Probe = Box<dyn Fn() -> Option<QueueMetrics> + Send + Sync>;

/// The named queues of this process, for `workqueue_*` metrics.
static NAMED: Mutex<Vec<(String, Probe)>> = Mutex::new(Vec::new());

/// The counters of every named queue still alive (dropped ones are
/// forgotten), by name.
pub fn named_queues() -> Vec<(String, QueueMetrics)> {
    let mut all = NAMED.lock().unwrap_or_else(|e| e.into_inner());
    let mut out = Vec::new();
    all.retain(|(name, probe)| match probe() {
        Some(m) => {
            out.push((name.clone(), m));
            true
        }
        None => false,
    });
    out
}

/// A de-duplicating, rate-limited queue of keys. Cheap to clone.
pub struct WorkQueue<T> {
    inner: Arc<Mutex<Inner<T>>>,
    ready: Arc<Notify>,
    cfg: Arc<QueueConfig>,
}

impl<T> Clone for WorkQueue<T> {
    fn clone(&self) -> Self {
        WorkQueue {
            inner: self.inner.clone(),
            ready: self.ready.clone(),
            cfg: self.cfg.clone(),
        }
    }
}

impl<T: Clone + Eq + Hash + Send + 'static> WorkQueue<T> {
    pub fn new(cfg: QueueConfig) -> Self {
        WorkQueue {
            inner: Arc::new(Mutex::new(Inner {
                queue: VecDeque::new(),
                dirty: HashSet::new(),
                processing: HashMap::new(),
                timers: None,
                added_at: HashMap::new(),
                failures: HashMap::new(),
                tokens: f64::from(cfg.burst),
                last_refill: Instant::now(),
                shut_down: false,
                metrics: QueueMetrics::default(),
            })),
            ready: Arc::new(Notify::new()),
            cfg: Arc::new(cfg),
        }
    }

    /// Report this queue's counters as `workqueue_*{name}` while it lives.
    pub fn named(self, name: &str) -> Self {
        let weak = Arc::downgrade(&self.inner);
        let probe: Probe = Box::new(move || {
            let inner = weak.upgrade()?;
            let q = inner.lock().unwrap_or_else(|e| e.into_inner());
            Some(q.snapshot())
        });
        self.lock().timers = Some(crate::metrics::Timers::new(name));
        NAMED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((name.to_string(), probe));
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<T>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue a key now.
    pub fn add(&self, key: T) {
        let mut q = self.lock();
        if q.shut_down || !q.dirty.insert(key.clone()) {
            return;
        }
        q.metrics.adds += 1;
        q.added_at.insert(key.clone(), Instant::now());
        if q.processing.contains_key(&key) {
            // Queued again when its current work is done.
            return;
        }
        q.queue.push_back(key);
        drop(q);
        self.ready.notify_one();
    }

    /// Queue a key after `delay`.
    pub fn add_after(&self, key: T, delay: Duration) {
        if delay.is_zero() {
            return self.add(key);
        }
        let me = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            me.add(key);
        });
    }

    /// Queue a key that failed: after its back-off (doubling with each
    /// failure, up to the cap) and the global rate limit.
    pub fn add_rate_limited(&self, key: T) {
        let delay = {
            let mut q = self.lock();
            q.metrics.retries += 1;
            let n = q.failures.entry(key.clone()).or_insert(0);
            let exp = (*n).min(30);
            *n += 1;
            let per_key = self
                .cfg
                .base_backoff
                .saturating_mul(1u32 << exp.min(31))
                .min(self.cfg.max_backoff);
            // Token bucket: refill, then take one (possibly going into debt,
            // which is the wait).
            let now = Instant::now();
            let refill = now.duration_since(q.last_refill).as_secs_f64() * self.cfg.qps;
            q.tokens = (q.tokens + refill).min(f64::from(self.cfg.burst));
            q.last_refill = now;
            q.tokens -= 1.0;
            let global = if q.tokens >= 0.0 || self.cfg.qps <= 0.0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64(-q.tokens / self.cfg.qps)
            };
            per_key.max(global)
        };
        self.add_after(key, delay);
    }

    /// The key succeeded: its back-off starts over.
    pub fn forget(&self, key: &T) {
        self.lock().failures.remove(key);
    }

    /// How many times the key failed in a row.
    pub fn failures(&self, key: &T) -> u32 {
        self.lock().failures.get(key).copied().unwrap_or(0)
    }

    /// The next key to work on; None once the queue is shut down. The
    /// caller must call [`WorkQueue::done`] with it.
    pub async fn get(&self) -> Option<T> {
        loop {
            let notified = self.ready.notified();
            {
                let mut q = self.lock();
                if let Some(key) = q.queue.pop_front() {
                    q.dirty.remove(&key);
                    q.processing.insert(key.clone(), Instant::now());
                    q.metrics.processed += 1;
                    let mut waited = None;
                    if let Some(at) = q.added_at.remove(&key) {
                        let w = at.elapsed();
                        q.metrics.queue_wait_total += w;
                        q.metrics.queue_wait_max = q.metrics.queue_wait_max.max(w);
                        waited = q.timers.clone().map(|t| (t, w));
                    }
                    let more = !q.queue.is_empty();
                    drop(q);
                    if let Some((t, w)) = waited {
                        t.queued(w);
                    }
                    if more {
                        // Wake another worker for the rest.
                        self.ready.notify_one();
                    }
                    return Some(key);
                }
                if q.shut_down {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// The work on `key` is over; if it was added meanwhile, queue it again.
    pub fn done(&self, key: &T) {
        let mut q = self.lock();
        let worked = match (q.processing.remove(key), &q.timers) {
            (Some(since), Some(t)) => Some((t.clone(), since.elapsed())),
            _ => None,
        };
        let again = q.dirty.contains(key) && !q.shut_down;
        if again {
            q.queue.push_back(key.clone());
        }
        drop(q);
        if let Some((t, w)) = worked {
            t.worked(w);
        }
        if again {
            self.ready.notify_one();
        }
    }

    /// Stop handing out keys; waiting workers get None.
    pub fn shut_down(&self) {
        self.lock().shut_down = true;
        self.ready.notify_waiters();
    }

    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn metrics(&self) -> QueueMetrics {
        self.lock().snapshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q() -> WorkQueue<&'static str> {
        WorkQueue::new(QueueConfig::default())
    }

    #[tokio::test]
    async fn keys_added_twice_are_queued_once() {
        let q = q();
        q.add("a");
        q.add("b");
        q.add("a");
        assert_eq!(q.len(), 2);
        assert_eq!(q.get().await, Some("a"));
        assert_eq!(q.get().await, Some("b"));
        assert_eq!(q.metrics().adds, 2);
    }

    #[tokio::test]
    async fn a_key_in_work_is_held_back_until_done() {
        let q = q();
        q.add("a");
        let k = q.get().await.expect("a");
        // Added while a worker holds it: not handed to a second worker.
        q.add("a");
        assert!(q.is_empty());
        let second = tokio::time::timeout(Duration::from_millis(50), q.get()).await;
        assert!(second.is_err(), "no second worker gets it meanwhile");
        q.done(&k);
        assert_eq!(q.get().await, Some("a"));
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_exponentially_up_to_the_cap() {
        let q = WorkQueue::new(QueueConfig {
            base_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(400),
            qps: 1000.0,
            burst: 1000,
        });
        let mut waits = Vec::new();
        for _ in 0..5 {
            let start = Instant::now();
            q.add_rate_limited("a");
            let k = q.get().await.expect("a");
            waits.push(start.elapsed().as_millis());
            q.done(&k);
        }
        assert_eq!(waits, [100, 200, 400, 400, 400]);
        q.forget(&"a");
        let start = Instant::now();
        q.add_rate_limited("a");
        q.get().await.expect("a");
        assert_eq!(start.elapsed().as_millis(), 100);
        assert_eq!(q.metrics().retries, 6);
    }

    #[tokio::test(start_paused = true)]
    async fn the_global_limit_spaces_retries_beyond_the_burst() {
        let q = WorkQueue::new(QueueConfig {
            base_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(1),
            qps: 10.0,
            burst: 2,
        });
        let start = Instant::now();
        for k in ["a", "b", "c", "d"] {
            q.add_rate_limited(k);
        }
        for _ in 0..4 {
            let k = q.get().await.expect("key");
            q.done(&k);
        }
        // Two go at once, the next two wait for tokens at 10/s.
        assert!(
            start.elapsed() >= Duration::from_millis(200),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test]
    async fn shut_down_wakes_waiting_workers() {
        let q = q();
        let w = {
            let q = q.clone();
            tokio::spawn(async move { q.get().await })
        };
        tokio::task::yield_now().await;
        q.shut_down();
        assert_eq!(w.await.expect("worker"), None);
    }
}
