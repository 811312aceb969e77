//! Flotilla's cluster objects: the typed kinds every component shares
//! (pods, nodes, services, ...), with Kubernetes' field names so that
//! Kubernetes manifests apply unchanged, and what the API server does to an
//! object on its way in: decoding with unknown-field warnings, defaulting and
//! validation with errors that name the field path.
//!
//! Owns: the kinds ([`core`], [`apps`], [`batch`], [`networking`],
//! [`nodepool`], [`scheduling`], [`coordination`]), object metadata ([`meta`]), the kind table
//! ([`registry`]), admission ([`admit`]), label and field selectors
//! ([`selector`]), JSON merge patch ([`patch`]), and the object API's
//! shared vocabulary ([`api`]: errors and reasons, list, delete and watch
//! parameters, and the [`api::ObjectApi`] trait that the API server and the
//! client library both implement).
//!
//! Must not depend on: any other Flotilla crate, gRPC or storage. It is pure
//! data and rules, used by the API server, the client library, the
//! controllers, the node agents and `flt`.

pub mod admit;
pub mod api;
pub mod apps;
pub mod batch;
pub mod certificates;
pub mod coordination;
pub mod core;
pub mod discovery;
pub mod meta;
pub mod networking;
pub mod nodepool;
pub mod patch;
pub mod rbac;
pub mod registry;
pub mod scheduling;
pub mod security;
pub mod selector;

mod decode;
mod defaults;
mod names;
mod quantity;
mod validation;

pub use admit::{admit, invalid_message, validate_update, Admitted, FieldError, FieldErrorKind};
pub use api::{ApiError, ObjectApi, Reason};
pub use defaults::{
    DEFAULT_SERVICE_ACCOUNT, DEFAULT_TOLERATION_SECONDS, TAINT_NOT_READY, TAINT_UNREACHABLE,
};
pub use meta::{ObjectMeta, OwnerReference, Time};
pub use patch::merge_patch;
pub use quantity::parse as parse_quantity;
pub use registry::{lookup, ResourceInfo, RESOURCES};
pub use selector::{FieldSelector, Selector, SelectorError};
pub use validation::{parse_schedule, parse_time_zone};

use serde::{de::DeserializeOwned, Serialize};

/// A kind of object: its entry in the kind table and its metadata.
pub trait Resource:
    Serialize + DeserializeOwned + Clone + std::fmt::Debug + Default + Send + Sync + 'static
{
    fn info() -> &'static ResourceInfo;
    fn meta(&self) -> &ObjectMeta;
    fn meta_mut(&mut self) -> &mut ObjectMeta;
}
