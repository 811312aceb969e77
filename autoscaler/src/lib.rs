//! The cluster autoscaler: grows node pools for pods that fit no node and
//! shrinks them when nodes sit idle, on the Raft leader, as a leader loop
//! of the controller runtime (`flotilla-runtime`) beside the scheduler.
//!
//! Owns: the pools' node templates ([`template`]); the simulation of pods
//! on existing, upcoming and template nodes with the scheduler's own
//! filters ([`simulate`]); the scale-up decision, bin-packing and the
//! expanders ([`scaleup`]); the scale-down decision, with the pods that
//! keep a node ([`scaledown`]); the provider trait through which machines
//! are created and deleted ([`provider`]); and the loop that keeps each
//! pool's intent in its status and carries it out ([`Autoscaler`]).
//!
//! Intent lives in the store, in each NodePool's status: the target size,
//! the nodes asked for (`creating`) and being removed (`deleting`) with
//! their start times, the nodes found unneeded and since when, and the last
//! scale-up. Every step is written there (a compare-and-swap on the pool)
//! before the provider is called, and providers are called with the
//! node's name, so that a new leader finishing an operation of the last
//! one asks for the same node again rather than for one more.
//!
//! The decisions are pure functions over pods, nodes and pools, tested
//! without a cluster; the loop only reads the informers, writes statuses
//! and events, drains, and calls the provider.
//!
//! Must not depend on: the store, the API server's implementation, the
//! workload controllers or any node-side crate; machines are reached only
//! through a [`NodeProvider`] the binary gives it.

pub mod events;
pub mod provider;
mod run;
pub mod scaledown;
pub mod scaleup;
pub mod simulate;
pub mod template;

use std::time::Duration;

pub use provider::{NodeProvider, ProviderError};
pub use run::Autoscaler;
pub use scaleup::Expander;

/// The component named in events.
pub const COMPONENT: &str = "cluster-autoscaler";

/// Pod annotation: "true" lets the autoscaler move a pod it would keep
/// otherwise, "false" keeps its node.
pub const SAFE_TO_EVICT: &str = "cluster-autoscaler.kubernetes.io/safe-to-evict";

/// The autoscaler's settings (cluster-autoscaler's flags of the same names).
#[derive(Debug, Clone)]
pub struct Config {
    /// How often pods and nodes are looked at.
    pub scan_interval: Duration,
    /// How long a node must be unneeded before it is removed.
    pub scale_down_unneeded_time: Duration,
    /// No scale-down for this long after a scale-up.
    pub scale_down_delay_after_add: Duration,
    /// A node asked for and not registered within this time is given up.
    pub max_node_provision_time: Duration,
    /// How long a drain waits for pods to go before the node is deleted anyway.
    pub max_graceful_termination: Duration,
    /// Most nodes in the cluster, all pools together (0: no limit).
    pub max_nodes_total: usize,
    /// Which pool grows when several would help.
    pub expander: Expander,
    /// A node whose requested CPU and memory are each below this share of
    /// its allocatable is a candidate for removal.
    pub utilization_threshold: f64,
    /// Whether nodes are removed at all.
    pub scale_down_enabled: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            scan_interval: Duration::from_secs(10),
            scale_down_unneeded_time: Duration::from_secs(600),
            scale_down_delay_after_add: Duration::from_secs(600),
            max_node_provision_time: Duration::from_secs(900),
            max_graceful_termination: Duration::from_secs(600),
            max_nodes_total: 0,
            expander: Expander::LeastWaste,
            utilization_threshold: 0.5,
            scale_down_enabled: true,
        }
    }
}

#[cfg(test)]
mod tests;
