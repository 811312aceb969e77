//! Flotilla's client library: how every component and `flt` talk to the
//! object API of the masters.
//!
//! Owns: the untyped calls with failover across masters ([`client`]), the
//! typed calls ([`api`]), the API's error reasons ([`error`]) and the
//! list-then-watch caches that controllers, agents, proxies and DNS read
//! ([`reflector`]).
//!
//! Must not depend on: storage (RocksDB, Raft) or any role crate; only
//! `flotilla-proto` (the wire) and `flotilla-objects` (the kinds).

pub mod api;
pub mod client;
pub mod error;
pub mod reflector;

pub use api::{Api, Event, List};
pub use client::{
    Applied, Client, ClientOptions, DeleteParams, EventType, ListParams, ObjectList, Propagation,
    WatchEvent, WatchParams,
};
pub use error::{ApiError, Reason};
pub use reflector::{Cache, Reflector};
