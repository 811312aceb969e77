//! Flotilla's replicated store: masters form their own Raft group (openraft)
//! over RocksDB and serve the etcd v3 API on top of it.
//!
//! # The public interface
//!
//! What an embedder (the `flotilla` binary) uses, and all it can reach:
//!
//! - the running master: [`start`] and [`start_with`] (which also serve
//!   the embedder's own gRPC services on the client address) turn a
//!   [`MasterConfig`] into a [`RunningMaster`], or fail with a
//!   [`StartError`]; its [`Master`] handle proposes commands, reads this
//!   replica, takes linearizable read barriers, follows leadership and
//!   changes membership ([`TransferError`] for a leadership transfer);
//! - the request vocabulary: [`kv`] (etcd's requests and responses, and the
//!   request [`kv::Limits`]) and [`types`] (the [`types::Command`]s a
//!   master proposes and their [`types::Outcome`]s);
//! - the errors: [`error::Error`], and the store's [`error::RangeError`] and
//!   [`error::StoreError`];
//! - watches of a key range: [`watch::follow`], [`watch::follow_map`];
//! - the ports' security: [`transport::TransportSecurity`] and the
//!   [`transport::ClientGate`] the binary decides access with;
//! - health ([`health::MasterHealth`]), backups and restores ([`backup`]),
//!   and the on-disk format's version ([`format`]).
//!
//! Everything else is private: the Raft log and vote on disk (`log_store`),
//! the multi-version key-value state machine with etcd's revision
//! semantics (`mvcc`, `state_machine`, `snapshot`) over its RocksDB
//! (`engine`), the peer transport (`network`), lease expiry (`lease`), when
//! to stand for election (`election`: Pre-Vote), watch fan-out (`watch`),
//! the gRPC services (`service`), protobuf conversion (`convert`), the
//! store's metrics (`metrics`) and the running master's internals (`node`,
//! `server`).
//!
//! How a write travels: a service validates the request and turns it into a
//! [`types::Command`]; [`Master::propose`] hands it to Raft (forwarding to
//! the leader from a follower); a follower acknowledges the append only
//! after a WAL fsync shared by every append queued behind it, while the
//! leader replicates its own append during its fsync (`durable`); once a
//! majority has it on disk, every master applies it to its multi-version
//! store and publishes its events to watchers. A linearizable read first asks the
//! leader for a read index confirmed by a quorum ([`Master::linearize`]).
//!
//! Must not depend on: any other Flotilla crate but `flotilla-proto`
//! (protobuf is converted to this crate's own types in `convert`) and the
//! two leaf crates every role shares, `flotilla-security` (TLS) and
//! `flotilla-telemetry` (metrics registries); the store knows no objects.

// openraft's storage traits fix the (large) error type every helper returns.
#![allow(clippy::result_large_err)]

pub mod backup;
pub mod error;
pub mod format;
pub mod health;
pub mod kv;
pub mod transport;
pub mod types;
pub mod watch;

mod convert;
mod durable;
mod election;
mod engine;
mod lease;
mod log_store;
mod metrics;
mod mvcc;
mod network;
mod node;
mod server;
// Private, but its path stays: `flotilla_raftstore::service::peer` is a
// tracing target operators filter on.
mod service;
mod snapshot;
mod snapshot_data;
mod state_machine;

#[cfg(test)]
mod tests;

pub use node::{AppliesHeld, Master, MasterConfig, StartError, TransferError};
pub use server::{start, start_with, RunningMaster};
