//! The API's errors: a reason a program can match on and Kubernetes' message
//! for people, carried over gRPC as a status code plus the `flotilla-reason`
//! metadata entry.

use std::fmt;

use tonic::{Code, Status};

/// The metadata entry that carries [`Reason`] on a gRPC status.
pub const REASON_HEADER: &str = "flotilla-reason";

/// Why a call failed (Kubernetes' StatusReason names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    Forbidden,
    MethodNotAllowed,
    /// No master could serve the call (no quorum, all unreachable).
    Unavailable,
    Internal,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NotFound => "NotFound",
            Reason::AlreadyExists => "AlreadyExists",
            Reason::Conflict => "Conflict",
            Reason::Invalid => "Invalid",
            Reason::Gone => "Gone",
            Reason::BadRequest => "BadRequest",
            Reason::Forbidden => "Forbidden",
            Reason::MethodNotAllowed => "MethodNotAllowed",
            Reason::Unavailable => "Unavailable",
            Reason::Internal => "Internal",
        }
    }

    fn parse(s: &str) -> Option<Reason> {
        Some(match s {
            "NotFound" => Reason::NotFound,
            "AlreadyExists" => Reason::AlreadyExists,
            "Conflict" => Reason::Conflict,
            "Invalid" => Reason::Invalid,
            "Gone" => Reason::Gone,
            "BadRequest" => Reason::BadRequest,
            "Forbidden" => Reason::Forbidden,
            "MethodNotAllowed" => Reason::MethodNotAllowed,
            "Unavailable" => Reason::Unavailable,
            "Internal" => Reason::Internal,
            _ => return None,
        })
    }

    fn code(self) -> Code {
        match self {
            Reason::NotFound => Code::NotFound,
            Reason::AlreadyExists => Code::AlreadyExists,
            Reason::Conflict => Code::Aborted,
            Reason::Invalid | Reason::BadRequest => Code::InvalidArgument,
            Reason::Gone => Code::OutOfRange,
            Reason::Forbidden => Code::PermissionDenied,
            Reason::MethodNotAllowed => Code::Unimplemented,
            Reason::Unavailable => Code::Unavailable,
            Reason::Internal => Code::Internal,
        }
    }

    fn from_code(code: Code) -> Reason {
        match code {
            Code::NotFound => Reason::NotFound,
            Code::AlreadyExists => Reason::AlreadyExists,
            Code::Aborted => Reason::Conflict,
            Code::InvalidArgument => Reason::BadRequest,
            Code::OutOfRange => Reason::Gone,
            Code::PermissionDenied => Reason::Forbidden,
            Code::Unimplemented => Reason::MethodNotAllowed,
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => Reason::Unavailable,
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

    pub fn is(&self, reason: Reason) -> bool {
        self.reason == reason
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        let mut s = Status::new(e.reason.code(), e.message);
        if let Ok(v) = e.reason.as_str().parse() {
            s.metadata_mut().insert(REASON_HEADER, v);
        }
        s
    }
}

impl From<Status> for ApiError {
    fn from(s: Status) -> ApiError {
        let reason = s
            .metadata()
            .get(REASON_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(Reason::parse)
            .unwrap_or_else(|| Reason::from_code(s.code()));
        let message = if s.message().is_empty() {
            format!("{:?}", s.code())
        } else {
            s.message().to_string()
        };
        ApiError { reason, message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_survive_a_status_round_trip() {
        for r in [
            Reason::NotFound,
            Reason::AlreadyExists,
            Reason::Conflict,
            Reason::Invalid,
            Reason::Gone,
            Reason::BadRequest,
            Reason::Forbidden,
            Reason::MethodNotAllowed,
            Reason::Unavailable,
            Reason::Internal,
        ] {
            let e = ApiError::new(r, "m");
            let back = ApiError::from(Status::from(e.clone()));
            assert_eq!(back, e);
        }
        // A status without the header falls back to its code.
        let e = ApiError::from(Status::unavailable("no leader"));
        assert_eq!(e.reason, Reason::Unavailable);
        assert_eq!(e.message, "no leader");
    }
}
