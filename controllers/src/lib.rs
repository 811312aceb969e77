//! The controllers that run on the Raft leader, each a loop on the
//! controller runtime (`flotilla-runtime`): today the garbage collector
//! ([`gc`]); the scheduler, workload controllers, endpoints and node
//! lifecycle are added the same way, as [`flotilla_runtime::LeaderLoop`]s,
//! without touching the runtime.
//!
//! Must not depend on: the store or the API server's implementation (they
//! reach objects through `flotilla_objects::api::ObjectApi`), or any
//! node-side role crate.

pub mod gc;

use std::sync::Arc;

use flotilla_runtime::LeaderLoop;

/// Every leader loop a master runs, in the order they start.
pub fn leader_loops() -> Vec<Arc<dyn LeaderLoop>> {
    vec![Arc::new(gc::GarbageCollector)]
}
