//! Recording events (core/v1 Event) the way Kubernetes' event recorder
//! does: one object per distinct happening, aggregated on repeats.
//!
//! An event is identified by its source, the object it is about, its type,
//! reason and message. The first occurrence creates an Event object
//! (`<object>.<random>`, count 1); repeats within ten minutes increment that
//! object's count and lastTimestamp instead of writing new objects, so a pod
//! that fails to schedule a hundred times makes one event with count 100.
//! Each source and object also get a token bucket (25 at once, then one
//! every five seconds) so that a hot loop cannot flood the store. Recording
//! never fails the caller: a lost event is logged at debug level.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flotilla_objects::api::{ObjectApi, Reason};
use flotilla_objects::core::{Event, EventObjectReference, EventSource};
use flotilla_objects::{ObjectMeta, Resource, Time};
use serde_json::json;

use crate::api::encode;

/// Repeats within this window aggregate into one event.
const AGGREGATE_WINDOW: Duration = Duration::from_secs(600);
/// Distinct events remembered for aggregation.
const CACHE_SIZE: usize = 4096;
/// Burst and refill of the per-object bucket.
const BURST: f64 = 25.0;
const REFILL_EVERY: Duration = Duration::from_secs(5);

/// Normal or Warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    object: (String, String, String, String),
    type_: EventType,
    reason: String,
    message: String,
}

struct Seen {
    name: String,
    namespace: String,
    count: i32,
    last_at: Instant,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Default)]
struct State {
    seen: HashMap<Key, Seen>,
    buckets: HashMap<(String, String, String, String), Bucket>,
}

/// Records events for one component ("default-scheduler", "replicaset-controller", ...).
#[derive(Clone)]
pub struct Recorder {
    api: Arc<dyn ObjectApi>,
    component: String,
    host: String,
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("component", &self.component)
            .finish()
    }
}

/// The object an event is about.
pub fn reference<K: Resource>(k: &K) -> EventObjectReference {
    let m = k.meta();
    EventObjectReference {
        kind: K::info().kind.to_string(),
        namespace: m.namespace.clone(),
        name: m.name.clone(),
        uid: m.uid.clone(),
        api_version: K::info().api_version(),
        resource_version: m.resource_version.clone(),
        field_path: String::new(),
    }
}

fn random_suffix() -> String {
    format!("{:016x}", uuid::Uuid::new_v4().as_u128() as u64)
}

impl Recorder {
    pub fn new(api: Arc<dyn ObjectApi>, component: &str) -> Self {
        Recorder {
            api,
            component: component.to_string(),
            host: String::new(),
            state: Arc::new(Mutex::new(State::default())),
        }
    }

    /// The node a node-side component runs on (events' source.host).
    pub fn on_host(mut self, host: &str) -> Self {
        self.host = host.to_string();
        self
    }

    /// Record that `reason` happened to `k`.
    pub async fn record<K: Resource>(&self, k: &K, type_: EventType, reason: &str, message: &str) {
        self.record_ref(reference(k), type_, reason, message).await
    }

    pub async fn record_ref(
        &self,
        obj: EventObjectReference,
        type_: EventType,
        reason: &str,
        message: &str,
    ) {
        let okey = (
            obj.kind.clone(),
            obj.namespace.clone(),
            obj.name.clone(),
            obj.uid.clone(),
        );
        let key = Key {
            object: okey.clone(),
            type_,
            reason: reason.to_string(),
            message: message.to_string(),
        };
        let now = Time::now();
        let repeat = {
            let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let b = s.buckets.entry(okey).or_insert(Bucket {
                tokens: BURST,
                at: Instant::now(),
            });
            let refill = b.at.elapsed().as_secs_f64() / REFILL_EVERY.as_secs_f64();
            b.tokens = (b.tokens + refill).min(BURST);
            b.at = Instant::now();
            if b.tokens < 1.0 {
                tracing::debug!(reason, object = %obj.name, "event dropped by the rate limit");
                return;
            }
            b.tokens -= 1.0;
            match s.seen.get_mut(&key) {
                Some(seen) if seen.last_at.elapsed() < AGGREGATE_WINDOW => {
                    seen.count += 1;
                    seen.last_at = Instant::now();
                    Some((seen.name.clone(), seen.namespace.clone(), seen.count))
                }
                _ => None,
            }
        };
        let ns = if obj.namespace.is_empty() {
            "default".to_string()
        } else {
            obj.namespace.clone()
        };
        if let Some((name, namespace, count)) = repeat {
            let patch = json!({"count": count, "lastTimestamp": now.to_string()});
            match self
                .api
                .patch("events", &namespace, &name, patch, false, false)
                .await
            {
                Ok(_) => return,
                // Expired or deleted meanwhile: start a new one.
                Err(e) if e.is(Reason::NotFound) => {}
                Err(e) => {
                    tracing::debug!(error = %e, reason, "could not update an event");
                    return;
                }
            }
        }
        let name = format!("{}.{}", obj.name, random_suffix());
        let ev = Event {
            metadata: ObjectMeta {
                name: name.clone(),
                namespace: ns.clone(),
                ..Default::default()
            },
            involved_object: obj,
            reason: reason.to_string(),
            message: message.to_string(),
            type_: type_.as_str().to_string(),
            count: 1,
            first_timestamp: Some(now),
            last_timestamp: Some(now),
            source: EventSource {
                component: self.component.clone(),
                host: self.host.clone(),
            },
            reporting_component: self.component.clone(),
            ..Default::default()
        };
        let v = match encode(&ev) {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!(error = %e, "could not encode an event");
                return;
            }
        };
        match self.api.create("events", &ns, v, false).await {
            Ok(_) => {
                let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
                if s.seen.len() >= CACHE_SIZE {
                    // Forget the oldest half: aggregation is best effort.
                    let mut ages: Vec<(Instant, Key)> =
                        s.seen.iter().map(|(k, v)| (v.last_at, k.clone())).collect();
                    ages.sort_by_key(|(t, _)| *t);
                    for (_, k) in ages.into_iter().take(CACHE_SIZE / 2) {
                        s.seen.remove(&k);
                    }
                }
                s.seen.insert(
                    key,
                    Seen {
                        name,
                        namespace: ns,
                        count: 1,
                        last_at: Instant::now(),
                    },
                );
            }
            Err(e) => tracing::debug!(error = %e, reason, "could not record an event"),
        }
    }
}
