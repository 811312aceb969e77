//! Flotilla's replicated store: masters form their own Raft group (openraft)
//! over RocksDB and serve the etcd v3 API on top of it.
//!
//! Owns: the Raft log and vote on disk ([`log_store`]), the multi-version
//! key-value state machine with etcd's revision semantics ([`mvcc`],
//! [`state_machine`], [`snapshot`]), the peer transport ([`network`]), lease
//! expiry ([`lease`]), when to stand for election ([`election`]: Pre-Vote),
//! watch fan-out ([`watch`]), the gRPC services
//! ([`service`]) and the running master ([`node`], [`server`]).
//!
//! How a write travels: a service validates the request and turns it into a
//! [`types::Command`]; [`node::Master::propose`] hands it to Raft (forwarding
//! to the leader from a follower); the log store acknowledges the append only
//! after a WAL fsync shared by every append queued behind it; once a majority
//! has it, every master applies it in [`mvcc::KvStore::apply`] and publishes
//! its events to watchers. A linearizable read first asks the leader for a
//! read index confirmed by a quorum ([`node::Master::linearize`]).
//!
//! Must not depend on: any other Flotilla crate but `flotilla-proto`
//! (protobuf is converted to this crate's own types in [`convert`]).

// openraft's storage traits fix the (large) error type every helper returns.
#![allow(clippy::result_large_err)]

pub mod backup;
pub mod convert;
pub mod election;
pub mod engine;
pub mod error;
pub mod format;
pub mod health;
pub mod kv;
pub mod lease;
pub mod log_store;
pub mod metrics;
pub mod mvcc;
pub mod network;
pub mod node;
pub mod server;
pub mod service;
pub mod snapshot;
pub mod state_machine;
pub mod transport;
pub mod types;
pub mod watch;

pub use node::{Master, MasterConfig};
pub use server::{start, start_with, RunningMaster};
