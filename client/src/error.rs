//! The API's errors on the wire: a [`Reason`] travels as a gRPC status code
//! plus the `flotilla-reason` metadata entry, with Kubernetes' message.
//! The types themselves live in `flotilla_objects::api`.

pub use flotilla_objects::api::{ApiError, Reason, REASON_HEADER};
use tonic::{Code, Status};

/// The gRPC status an [`ApiError`] travels as.
pub fn to_status(e: ApiError) -> Status {
    let mut s = Status::new(Code::from_i32(e.reason.grpc_code()), e.message);
    if let Ok(v) = e.reason.as_str().parse() {
        s.metadata_mut().insert(REASON_HEADER, v);
    }
    s
}

/// The [`ApiError`] a gRPC status carries (its reason from the metadata
/// entry, else from the code).
///
/// Every status a master returns carries its reason in a header. A status
/// without one and with the code `Unknown` was made by the client's own
/// transport: the connection broke under the call (a master killed or
/// restarted while the request was in flight, or a connection it closed
/// that the client had not noticed yet). That is `Unavailable`, so the call
/// moves on to another master; writes carry a request id, so a retried
/// write that had in fact committed is not applied twice.
pub fn from_status(s: Status) -> ApiError {
    let reason = s
        .metadata()
        .get(REASON_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(Reason::parse)
        .unwrap_or_else(|| match s.code() {
            Code::Unknown => Reason::Unavailable,
            c => Reason::from_grpc_code(c as i32),
        });
    let message = if s.message().is_empty() {
        format!("{:?}", s.code())
    } else {
        s.message().to_string()
    };
    ApiError { reason, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_survive_a_status_round_trip() {
        for r in Reason::ALL {
            let e = ApiError::new(r, "m");
            let back = from_status(to_status(e.clone()));
            assert_eq!(back, e);
        }
        // A status without the header falls back to its code.
        let e = from_status(Status::unavailable("no leader"));
        assert_eq!(e.reason, Reason::Unavailable);
        assert_eq!(e.message, "no leader");
        let e = from_status(Status::deadline_exceeded("slow"));
        assert_eq!(e.reason, Reason::Unavailable);
        // What tonic makes of a connection that broke under a call.
        let e = from_status(Status::unknown("transport error"));
        assert_eq!(e.reason, Reason::Unavailable);
        assert_eq!(e.message, "transport error");
        // A server's own Unknown keeps its reason.
        let mut s = Status::unknown("boom");
        s.metadata_mut()
            .insert(REASON_HEADER, "Internal".parse().unwrap());
        assert_eq!(from_status(s).reason, Reason::Internal);
    }
}
