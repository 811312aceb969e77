//! Flotilla's control plane: the object API server and the controllers
//! that run beside it.
//!
//! Owns: the API's semantics ([`api`]: validation through
//! `flotilla-objects`, optimistic concurrency, deletion with finalizers and
//! grace, apply, watch), its gRPC face ([`grpc`]), the narrow interface it
//! needs from the replicated store ([`store`]), the per-kind watch cache
//! that fans changes out to watchers ([`watch_cache`]), service address
//! allocation ([`alloc`]), and the garbage collector that carries out
//! cascading and namespace deletion ([`gc`]).
//!
//! Must not depend on: `flotilla-raftstore`, RocksDB or Raft (the master
//! binary plugs the store in through [`store::Store`]), nor on the node-side
//! role crates. Controllers read through `flotilla-client` caches.

pub mod alloc;
pub mod api;
pub mod gc;
pub mod grpc;
pub mod store;
pub mod watch_cache;

pub use api::ApiServer;
pub use store::Store;
