//! The object API's shared vocabulary: errors with Kubernetes' reasons and
//! messages, the parameters of lists, deletes and watches, and
//! [`ObjectApi`], the calls themselves.
//!
//! Both sides use these: the API server (which implements [`ObjectApi`]
//! over the store) and the client library (which implements it over gRPC),
//! so that a controller on a master and an agent on a node program against
//! the same interface, and the server does not depend on its client.

use std::fmt;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_core::Stream;
use serde_json::Value;

/// The finalizer a foreground deletion adds: the owner waits for its
/// dependents to be deleted first.
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";
/// The finalizer an orphaning deletion adds: the owner waits for its
/// dependents to lose their reference to it.
pub const ORPHAN_FINALIZER: &str = "orphan";
/// A namespace's `spec.finalizers` entry, removed once it is empty.
pub const NAMESPACE_FINALIZER: &str = "kubernetes";

/// Why a call failed (Kubernetes' StatusReason names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    NotFound,
    AlreadyExists,
    /// A precondition (resourceVersion, uid) did not hold: re-read and retry.
    Conflict,
    /// The object failed validation; the message names the field paths.
    Invalid,
    /// The requested resourceVersion is compacted away: relist.
    Gone,
    BadRequest,
    /// The caller's credentials were not accepted (a token not known).
    Unauthorized,
    Forbidden,
    MethodNotAllowed,
    /// No master could serve the call (no quorum, all unreachable), or the
    /// leadership a fenced write was made for is over.
    Unavailable,
    Internal,
}

/// gRPC status codes (the wire's numbers, so that this crate needs no gRPC library).
mod code {
    pub const CANCELLED: i32 = 1;
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const DEADLINE_EXCEEDED: i32 = 4;
    pub const NOT_FOUND: i32 = 5;
    pub const ALREADY_EXISTS: i32 = 6;
    pub const PERMISSION_DENIED: i32 = 7;
    pub const UNAUTHENTICATED: i32 = 16;
    pub const ABORTED: i32 = 10;
    pub const OUT_OF_RANGE: i32 = 11;
    pub const UNIMPLEMENTED: i32 = 12;
    pub const INTERNAL: i32 = 13;
    pub const UNAVAILABLE: i32 = 14;
}

/// The gRPC metadata entry that carries [`Reason`] on a status.
pub const REASON_HEADER: &str = "flotilla-reason";
/// The gRPC metadata entry that carries a write's request id: every retry of
/// one call carries the same id, and the store applies it at most once.
pub const REQUEST_ID_HEADER: &str = "flotilla-request-id";

impl Reason {
    pub const ALL: [Reason; 11] = [
        Reason::NotFound,
        Reason::AlreadyExists,
        Reason::Conflict,
        Reason::Invalid,
        Reason::Gone,
        Reason::BadRequest,
        Reason::Unauthorized,
        Reason::Forbidden,
        Reason::MethodNotAllowed,
        Reason::Unavailable,
        Reason::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NotFound => "NotFound",
            Reason::AlreadyExists => "AlreadyExists",
            Reason::Conflict => "Conflict",
            Reason::Invalid => "Invalid",
            Reason::Gone => "Gone",
            Reason::BadRequest => "BadRequest",
            Reason::Unauthorized => "Unauthorized",
            Reason::Forbidden => "Forbidden",
            Reason::MethodNotAllowed => "MethodNotAllowed",
            Reason::Unavailable => "Unavailable",
            Reason::Internal => "Internal",
        }
    }

    pub fn parse(s: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// The gRPC status code a reason travels with.
    pub fn grpc_code(self) -> i32 {
        match self {
            Reason::NotFound => code::NOT_FOUND,
            Reason::AlreadyExists => code::ALREADY_EXISTS,
            Reason::Conflict => code::ABORTED,
            Reason::Invalid | Reason::BadRequest => code::INVALID_ARGUMENT,
            Reason::Gone => code::OUT_OF_RANGE,
            Reason::Forbidden => code::PERMISSION_DENIED,
            Reason::Unauthorized => code::UNAUTHENTICATED,
            Reason::MethodNotAllowed => code::UNIMPLEMENTED,
            Reason::Unavailable => code::UNAVAILABLE,
            Reason::Internal => code::INTERNAL,
        }
    }

    /// The reason of a status that carries no [`REASON_HEADER`].
    pub fn from_grpc_code(c: i32) -> Reason {
        match c {
            code::NOT_FOUND => Reason::NotFound,
            code::ALREADY_EXISTS => Reason::AlreadyExists,
            code::ABORTED => Reason::Conflict,
            code::INVALID_ARGUMENT => Reason::BadRequest,
            code::OUT_OF_RANGE => Reason::Gone,
            code::PERMISSION_DENIED => Reason::Forbidden,
            code::UNAUTHENTICATED => Reason::Unauthorized,
            code::UNIMPLEMENTED => Reason::MethodNotAllowed,
            code::UNAVAILABLE | code::DEADLINE_EXCEEDED | code::CANCELLED => Reason::Unavailable,
            _ => Reason::Internal,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An API error: the reason and the message a person reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub reason: Reason,
    pub message: String,
}

impl ApiError {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        ApiError {
            reason,
            message: message.into(),
        }
    }

    /// `pods "web" not found`
    pub fn not_found(qualified: &str, name: &str) -> Self {
        Self::new(
            Reason::NotFound,
            format!("{qualified} \"{name}\" not found"),
        )
    }

    /// `pods "web" already exists`
    pub fn already_exists(qualified: &str, name: &str) -> Self {
        Self::new(
            Reason::AlreadyExists,
            format!("{qualified} \"{name}\" already exists"),
        )
    }

    /// Kubernetes' optimistic-concurrency message.
    pub fn conflict(qualified: &str, name: &str) -> Self {
        Self::new(
            Reason::Conflict,
            format!(
                "Operation cannot be fulfilled on {qualified} \"{name}\": the object has been \
                 modified; please apply your changes to the latest version and try again"
            ),
        )
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(Reason::BadRequest, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Reason::Internal, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(Reason::Unavailable, message)
    }

    pub fn is(&self, reason: Reason) -> bool {
        self.reason == reason
    }
}

/// The parameters of a list.
#[derive(Debug, Clone, Default)]
pub struct ListParams {
    pub label_selector: String,
    pub field_selector: String,
    /// Page size (0: everything in one answer).
    pub limit: i64,
    pub continue_token: String,
    /// Allow a possibly stale answer from the master asked (as
    /// resourceVersion "0" when `resource_version` is empty).
    pub serializable: bool,
    /// Kubernetes' resourceVersion of a list: "" (default) the latest,
    /// read consistently; "0" any (the master's cache, at once); N: not older
    /// than N, or exactly N (see `resource_version_match`).
    pub resource_version: String,
    /// "" (default: NotOlderThan, or Exact with a limit), "NotOlderThan" or
    /// "Exact"; only with a `resource_version`.
    pub resource_version_match: String,
}

impl ListParams {
    pub fn labels(mut self, s: &str) -> Self {
        self.label_selector = s.to_string();
        self
    }
    pub fn fields(mut self, s: &str) -> Self {
        self.field_selector = s.to_string();
        self
    }
    pub fn limit(mut self, n: i64) -> Self {
        self.limit = n;
        self
    }
    /// List at resourceVersion `rv` ("0": any).
    pub fn at(mut self, rv: &str) -> Self {
        self.resource_version = rv.to_string();
        self
    }
    /// List at resourceVersion `rv` exactly.
    pub fn exact(mut self, rv: &str) -> Self {
        self.resource_version = rv.to_string();
        self.resource_version_match = "Exact".into();
        self
    }
}

/// One page of a list.
#[derive(Debug, Clone)]
pub struct ObjectList {
    pub items: Vec<Value>,
    pub resource_version: String,
    /// Pass back in [`ListParams::continue_token`] for the next page; empty
    /// on the last page.
    pub continue_token: String,
}

/// What happens to the objects an object owns when it is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    /// Delete the owner now; its dependents are deleted after it.
    Background,
    /// Delete the dependents first; the owner waits (finalizer foregroundDeletion).
    Foreground,
    /// Keep the dependents, without their reference to the owner.
    Orphan,
}

impl Propagation {
    pub fn as_str(self) -> &'static str {
        match self {
            Propagation::Background => "Background",
            Propagation::Foreground => "Foreground",
            Propagation::Orphan => "Orphan",
        }
    }

    /// "" is no policy (the kind's default); anything else unknown is an error.
    pub fn parse(s: &str) -> Result<Option<Propagation>, ApiError> {
        Ok(match s {
            "" => None,
            "Background" => Some(Propagation::Background),
            "Foreground" => Some(Propagation::Foreground),
            "Orphan" => Some(Propagation::Orphan),
            other => {
                return Err(ApiError::bad_request(format!(
                    "propagationPolicy: Unsupported value: \"{other}\": supported values: \"Background\", \"Foreground\", \"Orphan\""
                )))
            }
        })
    }
}

/// The parameters of a delete.
#[derive(Debug, Clone, Default)]
pub struct DeleteParams {
    pub grace_period_seconds: Option<i64>,
    pub propagation: Option<Propagation>,
    pub precondition_uid: String,
    pub precondition_resource_version: String,
    pub dry_run: bool,
}

/// What a watch reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
    /// No change: the stream has seen everything up to the object's
    /// resourceVersion.
    Bookmark,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
            EventType::Bookmark => "BOOKMARK",
        }
    }
    pub fn parse(s: &str) -> Option<EventType> {
        Some(match s {
            "ADDED" => EventType::Added,
            "MODIFIED" => EventType::Modified,
            "DELETED" => EventType::Deleted,
            "BOOKMARK" => EventType::Bookmark,
            _ => return None,
        })
    }
}

/// The parameters of a watch.
#[derive(Debug, Clone, Default)]
pub struct WatchParams {
    pub label_selector: String,
    pub field_selector: String,
    /// Start after this revision; empty: the current objects first (ADDED).
    pub resource_version: String,
    pub bookmarks: bool,
    /// Zero: the server's default (10 s).
    pub bookmark_interval: Duration,
}

/// One watch event: its type and the object's JSON encoding (shared, as the
/// server serializes each change once for every watcher).
#[derive(Debug, Clone)]
pub struct RawEvent {
    pub kind: EventType,
    pub object: Bytes,
}

pub type RawWatch = Pin<Box<dyn Stream<Item = Result<RawEvent, ApiError>> + Send>>;

/// An object as written (or as a dry run would write it).
#[derive(Debug, Clone)]
pub struct Written {
    pub object: Value,
    /// Unknown fields that were dropped, by path, and other advice.
    pub warnings: Vec<String>,
    /// False when the object was already as asked (nothing written).
    pub changed: bool,
}

/// The result of an apply.
#[derive(Debug, Clone)]
pub struct Applied {
    pub object: Value,
    /// "created", "configured" or "unchanged".
    pub action: String,
    pub warnings: Vec<String>,
}

/// The object API: implemented by the API server (in process, on a master)
/// and by the client library (over gRPC, anywhere). `resource` is a kind's
/// plural name ("pods"); `namespace` is "" for cluster-scoped kinds (and,
/// for lists and watches, for every namespace).
#[async_trait::async_trait]
pub trait ObjectApi: Send + Sync {
    async fn create(
        &self,
        resource: &str,
        namespace: &str,
        object: Value,
        dry_run: bool,
    ) -> Result<Written, ApiError>;

    /// Read one object: linearizable unless `serializable`.
    async fn get(
        &self,
        resource: &str,
        namespace: &str,
        name: &str,
        serializable: bool,
    ) -> Result<Value, ApiError>;

    async fn list(
        &self,
        resource: &str,
        namespace: &str,
        params: &ListParams,
    ) -> Result<ObjectList, ApiError>;

    /// Replace metadata and spec (or, with `status`, only the status); a
    /// non-empty metadata.resourceVersion is a precondition.
    async fn update(
        &self,
        resource: &str,
        namespace: &str,
        object: Value,
        status: bool,
        dry_run: bool,
    ) -> Result<Written, ApiError>;

    /// Apply a JSON merge patch to the object (or, with `status`, to its status).
    async fn patch(
        &self,
        resource: &str,
        namespace: &str,
        name: &str,
        patch: Value,
        status: bool,
        dry_run: bool,
    ) -> Result<Written, ApiError>;

    /// Delete: the object as deleted (or as it now waits) and whether it is gone.
    async fn delete(
        &self,
        resource: &str,
        namespace: &str,
        name: &str,
        params: &DeleteParams,
    ) -> Result<(Value, bool), ApiError>;

    /// Create or update from a manifest (kubectl apply semantics).
    async fn apply(
        &self,
        namespace: &str,
        object: Value,
        dry_run: bool,
    ) -> Result<Applied, ApiError>;

    /// Bind an unbound pod to a node (the pods/binding subresource): one
    /// conditional write; a pod already bound is a Conflict.
    async fn bind(&self, namespace: &str, pod: &str, node: &str) -> Result<Value, ApiError>;

    /// Changes after `params.resource_version` ("" or "0": the current
    /// objects first, as ADDED). A compacted start ends with [`Reason::Gone`].
    async fn watch(
        &self,
        resource: &str,
        namespace: &str,
        params: &WatchParams,
    ) -> Result<RawWatch, ApiError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_round_trip_through_their_names_and_codes() {
        for r in Reason::ALL {
            assert_eq!(Reason::parse(r.as_str()), Some(r));
            let back = Reason::from_grpc_code(r.grpc_code());
            // Invalid travels as InvalidArgument, as BadRequest does: the
            // header, not the code, tells them apart.
            if r != Reason::Invalid {
                assert_eq!(back, r);
            }
        }
        assert_eq!(Reason::parse("Bogus"), None);
        assert_eq!(
            Reason::from_grpc_code(code::DEADLINE_EXCEEDED),
            Reason::Unavailable
        );
    }
}
