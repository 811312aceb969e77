//! The queue of pods waiting for a node, as kube-scheduler's scheduling
//! queue:
//!
//! - **active**: ready to be tried, highest priority first, first in first
//!   out within a priority;
//! - **backoff**: failed recently; back to active after 1 s, doubling per
//!   attempt up to 10 s;
//! - **unschedulable**: fit nowhere; they wait for a change to the cluster
//!   (a node added or changed, a pod deleted: [`SchedulingQueue::move_all`])
//!   and are tried again at least every [`UNSCHEDULABLE_FLUSH`] anyway, so
//!   nothing busy-loops and nothing waits forever.
//!
//! A pod being tried is "in flight": if the cluster changed meanwhile, a
//! failure sends it to backoff rather than to unschedulable, so that the
//! change it missed is not lost.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_objects::core::Pod;
use tokio::sync::Notify;
use tokio::time::Instant;

/// First back-off of a pod that failed; doubled per attempt.
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// Longest back-off.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// An unschedulable pod is tried again after this long even if nothing
/// changed.
pub const UNSCHEDULABLE_FLUSH: Duration = Duration::from_secs(60);

/// "namespace/name"
pub type PodKey = String;

pub fn pod_key(p: &Pod) -> PodKey {
    format!("{}/{}", p.metadata.namespace, p.metadata.name)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Active,
    Backoff(Instant),
    Unschedulable(Instant),
    /// Popped; `cycle` is the move counter when it was.
    InFlight {
        cycle: u64,
    },
}

struct Entry {
    pod: Arc<Pod>,
    /// Order of arrival (FIFO within a priority).
    seq: u64,
    attempts: u32,
    state: State,
}

#[derive(PartialEq, Eq)]
struct HeapItem {
    priority: i32,
    seq: Reverse<u64>,
    key: PodKey,
}

impl Ord for HeapItem {
    fn cmp(&self, o: &Self) -> Ordering {
        (self.priority, self.seq).cmp(&(o.priority, o.seq))
    }
}
impl PartialOrd for HeapItem {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

#[derive(Default)]
struct Inner {
    entries: HashMap<PodKey, Entry>,
    /// Active pods (stale items, whose entry is gone or not active or has
    /// another seq, are skipped).
    heap: BinaryHeap<HeapItem>,
    next_seq: u64,
    /// Bumped by every move_all.
    cycle: u64,
    closed: bool,
}

impl Inner {
    fn activate(&mut self, key: &PodKey) {
        let Some(e) = self.entries.get_mut(key) else {
            return;
        };
        e.state = State::Active;
        self.heap.push(HeapItem {
            priority: e.pod.spec.priority.unwrap_or(0),
            seq: Reverse(e.seq),
            key: key.clone(),
        });
    }
}

/// Cheap to clone.
#[derive(Clone)]
pub struct SchedulingQueue {
    inner: Arc<Mutex<Inner>>,
    ready: Arc<Notify>,
}

impl Default for SchedulingQueue {
    fn default() -> Self {
        Self::new()
    }
}

/// A popped pod and how many times it was tried before.
pub struct Popped {
    pub pod: Arc<Pod>,
    pub attempts: u32,
}

fn backoff(attempts: u32) -> Duration {
    INITIAL_BACKOFF
        .saturating_mul(1u32 << attempts.saturating_sub(1).min(16))
        .min(MAX_BACKOFF)
}

/// Whether an update could change where the pod fits (not a status or
/// bookkeeping change, such as the scheduler's own condition).
fn spec_changed(old: &Pod, new: &Pod) -> bool {
    old.spec != new.spec
        || old.metadata.labels != new.metadata.labels
        || old.metadata.annotations != new.metadata.annotations
}

impl SchedulingQueue {
    pub fn new() -> Self {
        SchedulingQueue {
            inner: Arc::new(Mutex::new(Inner::default())),
            ready: Arc::new(Notify::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A pending pod appeared or changed.
    pub fn add_or_update(&self, pod: Arc<Pod>) {
        let key = pod_key(&pod);
        let mut q = self.lock();
        match q.entries.get_mut(&key) {
            Some(e) => {
                let changed = spec_changed(&e.pod, &pod);
                let priority_changed = e.pod.spec.priority != pod.spec.priority;
                e.pod = pod;
                let state = e.state;
                match state {
                    State::Unschedulable(_) | State::Backoff(_) if changed => {
                        q.activate(&key);
                    }
                    State::Active if priority_changed => q.activate(&key),
                    _ => return,
                }
            }
            None => {
                let seq = q.next_seq;
                q.next_seq += 1;
                q.entries.insert(
                    key.clone(),
                    Entry {
                        pod,
                        seq,
                        attempts: 0,
                        state: State::Active,
                    },
                );
                q.activate(&key);
            }
        }
        drop(q);
        self.ready.notify_one();
    }

    /// The pod was bound or deleted: forget it.
    pub fn remove(&self, key: &str) {
        self.lock().entries.remove(key);
    }

    /// The next pod to try, highest priority first; None once closed.
    pub async fn pop(&self) -> Option<Popped> {
        loop {
            let notified = self.ready.notified();
            {
                let mut q = self.lock();
                if q.closed {
                    return None;
                }
                let cycle = q.cycle;
                while let Some(item) = q.heap.pop() {
                    let Some(e) = q.entries.get_mut(&item.key) else {
                        continue;
                    };
                    if e.state != State::Active || e.seq != item.seq.0 {
                        continue;
                    }
                    if e.pod.spec.priority.unwrap_or(0) != item.priority {
                        continue;
                    }
                    e.state = State::InFlight { cycle };
                    return Some(Popped {
                        pod: e.pod.clone(),
                        attempts: e.attempts,
                    });
                }
            }
            notified.await;
        }
    }

    /// The pod fit nowhere: park it until the cluster changes (or, if it
    /// changed while the pod was tried, back off and retry).
    pub fn unschedulable(&self, key: &str) {
        let mut q = self.lock();
        let cycle = q.cycle;
        let Some(e) = q.entries.get_mut(key) else {
            return;
        };
        e.attempts += 1;
        let now = Instant::now();
        e.state = match e.state {
            State::InFlight { cycle: c } if c != cycle => State::Backoff(now + backoff(e.attempts)),
            _ => State::Unschedulable(now),
        };
    }

    /// Trying the pod failed for a passing reason (a write that failed):
    /// back off and retry.
    pub fn retry(&self, key: &str) {
        let mut q = self.lock();
        if let Some(e) = q.entries.get_mut(key) {
            e.attempts += 1;
            e.state = State::Backoff(Instant::now() + backoff(e.attempts));
        }
    }

    /// The cluster changed in a way that may make parked pods fit: every
    /// unschedulable pod goes back (to active, or to backoff if its
    /// back-off is not over).
    pub fn move_all(&self) {
        let mut q = self.lock();
        q.cycle += 1;
        let now = Instant::now();
        let keys: Vec<PodKey> = q
            .entries
            .iter()
            .filter(|(_, e)| matches!(e.state, State::Unschedulable(_)))
            .map(|(k, _)| k.clone())
            .collect();
        let mut any = false;
        for k in keys {
            let Some(e) = q.entries.get_mut(&k) else {
                continue;
            };
            let State::Unschedulable(since) = e.state else {
                continue;
            };
            let until = since + backoff(e.attempts);
            if until > now {
                e.state = State::Backoff(until);
            } else {
                q.activate(&k);
                any = true;
            }
        }
        drop(q);
        if any {
            self.ready.notify_one();
        }
    }

    /// Move pods whose back-off is over to active, and pods unschedulable
    /// for longer than [`UNSCHEDULABLE_FLUSH`]; call periodically.
    pub fn flush(&self) {
        let mut q = self.lock();
        let now = Instant::now();
        let due: Vec<PodKey> = q
            .entries
            .iter()
            .filter(|(_, e)| match e.state {
                State::Backoff(until) => until <= now,
                State::Unschedulable(since) => now.duration_since(since) >= UNSCHEDULABLE_FLUSH,
                _ => false,
            })
            .map(|(k, _)| k.clone())
            .collect();
        let any = !due.is_empty();
        for k in due {
            q.activate(&k);
        }
        drop(q);
        if any {
            self.ready.notify_one();
        }
    }

    /// Stop: pop returns None.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_waiters();
    }

    /// Pods known (in any state), and those ready to be tried.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The pods parked as unschedulable (for tests and metrics).
    pub fn unschedulable_len(&self) -> usize {
        self.lock()
            .entries
            .values()
            .filter(|e| matches!(e.state, State::Unschedulable(_)))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, prio: i32) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name, "namespace": "d"},
                "spec": {"priority": prio}}))
            .expect("pod"),
        )
    }

    async fn pop_name(q: &SchedulingQueue) -> String {
        tokio::time::timeout(Duration::from_secs(1), q.pop())
            .await
            .expect("a pod is ready")
            .expect("open")
            .pod
            .metadata
            .name
            .clone()
    }

    #[tokio::test]
    async fn highest_priority_first_then_first_in_first_out() {
        let q = SchedulingQueue::new();
        for (n, p) in [("a", 0), ("b", 10), ("c", 0), ("d", 10), ("e", 5)] {
            q.add_or_update(pod(n, p));
        }
        let mut order = Vec::new();
        for _ in 0..5 {
            order.push(pop_name(&q).await);
        }
        assert_eq!(order, ["b", "d", "e", "a", "c"]);
    }

    #[tokio::test(start_paused = true)]
    async fn unschedulable_pods_wait_for_a_change_not_a_loop() {
        let q = SchedulingQueue::new();
        q.add_or_update(pod("a", 0));
        assert_eq!(pop_name(&q).await, "a");
        q.unschedulable("d/a");
        assert_eq!(q.unschedulable_len(), 1);
        // A status-only update (the scheduler's own condition) does not
        // wake it.
        let mut same = (*pod("a", 0)).clone();
        same.status = Some(Default::default());
        q.add_or_update(Arc::new(same));
        tokio::time::advance(Duration::from_secs(5)).await;
        q.flush();
        assert!(tokio::time::timeout(Duration::from_millis(100), q.pop())
            .await
            .is_err());
        // A cluster change does (its 1 s back-off is over).
        q.move_all();
        assert_eq!(pop_name(&q).await, "a");
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_while_in_flight_is_not_missed() {
        let q = SchedulingQueue::new();
        q.add_or_update(pod("a", 0));
        assert_eq!(pop_name(&q).await, "a");
        q.move_all();
        q.unschedulable("d/a");
        assert_eq!(q.unschedulable_len(), 0, "backs off instead of parking");
        tokio::time::advance(INITIAL_BACKOFF).await;
        q.flush();
        assert_eq!(pop_name(&q).await, "a");
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let b: Vec<u64> = (1..7).map(|a| backoff(a).as_secs()).collect();
        assert_eq!(b, [1, 2, 4, 8, 10, 10]);
    }
}
