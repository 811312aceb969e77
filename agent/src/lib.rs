//! Flotilla's node agent, the kubelet of a Flotilla cluster: it registers
//! its Node, keeps it alive with a Lease, and runs the pods bound to it as
//! real containers through containerd's CRI, each with its own network
//! namespace and an IP from the node's pod CIDR through CNI.
//!
//! Owns: the agent's configuration ([`config`]), the supervision of its own
//! containerd ([`containerd`]), the CRI client ([`cri`]), the CNI
//! configuration it writes for the node's pod network ([`cni`]) and the
//! routes to other nodes' pods ([`routes`], host-gw), the node's network
//! namespace when the agent runs outside it ([`netns`]), the Node and its
//! Lease ([`node`]), the pods ([`pods`]: one worker per pod that brings what
//! the runtime runs to what the pod's spec asks, probes it, and writes the
//! pod's status back), and the pod streams the masters relay `flt logs`,
//! `flt exec`, `flt attach` and `flt top` to ([`streams`], reading container
//! logs with [`logs`], pods' CPU and memory with [`stats`]).
//!
//! Reaches the masters only through the object API (`flotilla-client`),
//! like any other client: never the store, Raft or the API server's
//! internals. Must not depend on: `flotilla-raftstore`, `flotilla-control`,
//! the controllers.

mod agent;
mod attach;
pub mod cni;
pub mod config;
pub mod containerd;
pub mod cri;
pub mod error;
pub mod fake;
mod forward;
pub mod logs;
pub mod masquerade;
pub mod metrics;
pub mod netns;
pub mod node;
pub mod pods;
pub mod routes;
pub mod stats;
pub mod streams;
pub mod tasks;

pub use agent::Agent;
pub use config::{AgentConfig, RegistryMirror};
pub use error::{Error, Result};
