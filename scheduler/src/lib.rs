//! The scheduler: puts pending pods on nodes, on the Raft leader, as a
//! leader loop of the controller runtime (`flotilla-runtime`).
//!
//! Owns: the pure filter and score functions over a pod, a node and the
//! pods on it ([`filters`], [`score`], [`nodeinfo`], [`resources`]), which
//! the autoscaler reuses to simulate, and topology spreading over the
//! whole cluster ([`spread`]) and required pod (anti-)affinity across
//! topology domains ([`interpod`]); the unschedulable message
//! ([`message`]); the queue of pending pods in priority order ([`queue`]);
//! the cache of nodes with bound and assumed pods ([`cache`]); one
//! decision, preemption included ([`algorithm`]); and the loop that runs
//! them and binds ([`Scheduler`]).
//!
//! It reads pods and nodes from the term's shared informers, binds only
//! through `ObjectApi::bind` (a conditional write: no pod is bound twice,
//! even across a change of leader), assumes a pod on its node until the
//! binding is seen so that bindings in flight never over-commit a node,
//! and marks a pod that fits nowhere PodScheduled=False (reason
//! Unschedulable, with kube-scheduler's message) with a FailedScheduling
//! event; such a pod is tried again when nodes or pods change, or after a
//! back-off.
//!
//! The autoscaler asks the same filters whether a pending pod would fit a
//! node that does not exist yet (a pool's template), with the pods it
//! would carry:
//!
//! ```ignore
//! let fits = flotilla_scheduler::filter(&PodInfo::new(pod), &NodeInfo::with_pods(template, pods));
//! ```
//!
//! Must not depend on: the store or the API server's implementation
//! (except in tests), the workload controllers, or any node-side crate.

pub mod algorithm;
pub mod cache;
pub mod events;
pub mod filters;
pub mod interpod;
pub mod message;
pub mod metrics;
pub mod nodeinfo;
pub mod queue;
pub mod resources;
mod run;
pub mod score;
pub mod spread;
#[cfg(test)]
mod tests;

pub use events::COMPONENT;
pub use filters::{filter, Unfit};
pub use message::Diagnosis;
pub use nodeinfo::{NodeInfo, PodInfo};
pub use run::Scheduler;
