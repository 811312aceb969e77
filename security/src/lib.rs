//! Transport security and identities, shared by the masters, the node roles
//! and `flt`: certificates ([`certs`], rcgen), TLS for gRPC servers with
//! certificates reloaded when their files change and TLS for gRPC clients
//! ([`tls`], rustls), and who a caller is ([`authn`]: client certificates
//! read as Kubernetes reads them, CN the user and O the groups; bearer
//! tokens from a Kubernetes token file), ServiceAccount tokens ([`satoken`]:
//! JWTs the masters sign) and bootstrap tokens ([`bootstrap`]).
//!
//! Owns no objects and no authorization: RBAC lives with the API server
//! (`flotilla-control`), which asks this crate only who is calling.
//!
//! Must not depend on: the store (raftstore, RocksDB), objects, or any role
//! crate; `flt` links it.

pub mod authn;
pub mod bootstrap;
pub mod certs;
pub mod csr;
pub mod satoken;
pub mod tls;

pub use authn::{Authenticator, Identity};
