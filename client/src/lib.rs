//! Flotilla's client library: how every component and `flt` talk to the
//! object API of the masters.
//!
//! Owns: the gRPC implementation of [`ObjectApi`] with failover across
//! masters and safe retries of writes ([`client`]), the typed calls over any
//! [`ObjectApi`] ([`api`]), the gRPC form of the API's errors ([`error`]),
//! the list-then-watch loop ([`watcher`]) and the caches on it that agents,
//! proxies and `flt` read ([`reflector`]), and the aggregating event
//! recorder every component uses ([`events`]). The API's types (errors,
//! parameters, [`ObjectApi`]) live in `flotilla_objects::api` and are
//! re-exported here.
//!
//! Must not depend on: storage (RocksDB, Raft) or any role crate; only
//! `flotilla-proto` (the wire) and `flotilla-objects` (the kinds).

pub mod api;
pub mod client;
pub mod error;
pub mod events;
pub mod reflector;
pub mod watcher;

pub use api::{Api, Event, List};
pub use client::{Client, ClientOptions, Credentials, WatchEvent, WatchStream};
pub use error::{ApiError, Reason};
pub use flotilla_objects::api::{
    Applied, DeleteParams, EventType, ListParams, ObjectApi, ObjectList, Propagation, RawEvent,
    WatchParams, Written,
};
pub use reflector::{Cache, Reflector};
