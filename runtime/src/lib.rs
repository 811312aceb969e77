//! The controller runtime of the masters: what every controller stands on,
//! in the manner of kube-runtime and kube-controller-manager.
//!
//! Owns: shared, indexed list-then-watch caches with per-object events
//! ([`informer`]), the rate-limited, de-duplicating work queue
//! ([`queue`]), controllers as reconcile functions over keys
//! ([`controller`]), and the running of leader-only loops as leadership
//! comes and goes, each term with an object API fenced by that term
//! ([`manager`]).
//!
//! Controllers reach the objects only through `flotilla_objects::api::ObjectApi`:
//! on a master that is the API server itself, in process (one code path
//! for validation and admission, no gRPC hop); in tests, the same server
//! over the in-memory store.
//!
//! Must not depend on: the store (raftstore, RocksDB), the API server's
//! implementation (`flotilla-control`, except in tests), the controllers
//! built on it, or any node-side role crate.

pub mod controller;
pub mod informer;
pub mod manager;
pub mod metrics;
pub mod queue;

pub use controller::{Action, Controller, Reconciler};
pub use informer::{Change, Informer, ObjectRef, Subscription};
pub use manager::{ApiForTerm, Informers, LeaderContext, LeaderLoop, Manager};
pub use queue::{QueueConfig, QueueMetrics, WorkQueue};
