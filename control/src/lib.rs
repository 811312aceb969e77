//! Flotilla's object API server.
//!
//! Owns: the API's semantics ([`api`]: one module per operation, a
//! strategy per kind, validation through `flotilla-objects`, optimistic
//! concurrency, deletion with finalizers and grace, apply, bind, watch), its
//! gRPC face ([`grpc`]), the narrow interface it needs from the replicated
//! store ([`store`]) and an in-memory implementation of it for tests
//! ([`memstore`]), the per-kind watch cache that holds every object of its
//! kind, serves lists and fans changes out to watchers ([`watch_cache`]), service address allocation ([`alloc`]) and
//! nodes' pod CIDRs ([`podcidr`]), and who may do what ([`auth`]:
//! authentication of each call and Kubernetes' RBAC).
//! [`ApiServer`] implements `flotilla_objects::api::ObjectApi`, so the
//! controllers on a master call it in process, through the same admission
//! as every other client.
//!
//! Must not depend on: `flotilla-raftstore`, RocksDB or Raft (the master
//! binary plugs the store in through [`store::Store`]), its own client
//! (`flotilla-client`), the controllers or the node-side role crates.

pub mod alloc;
pub mod api;
pub mod audit;
pub mod auth;
pub mod encryption;
pub mod grpc;
pub mod memstore;
pub mod metrics;
pub mod podcidr;
pub mod relay;
pub mod store;
pub mod watch_cache;

pub use api::{ApiConfig, ApiServer};
pub use store::Store;
