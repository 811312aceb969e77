//! The error a master's services return, and how it maps to gRPC; and the
//! store's own errors, which it carries: a read's ([`RangeError`]) and the
//! storage's ([`StoreError`]).

use tonic::{Code, Status};

use crate::kv::KvError;
pub use crate::mvcc::{RangeError, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request broke an etcd rule; the message is etcd's.
    #[error(transparent)]
    Kv(#[from] KvError),
    /// No leader is known, or the leader could not be reached in time.
    #[error("etcdserver: no leader")]
    NoLeader,
    #[error("etcdserver: request timed out")]
    Timeout,
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error("internal: {0}")]
    Internal(String),
}

impl From<RangeError> for Error {
    fn from(e: RangeError) -> Self {
        match e {
            RangeError::Kv(k) => Error::Kv(k),
            RangeError::Store(s) => Error::Store(s),
        }
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        let msg = e.to_string();
        let code = match &e {
            Error::Kv(k) => match k {
                KvError::Compacted { .. } | KvError::FutureRevision | KvError::LeaseTtlTooLarge => {
                    Code::OutOfRange
                }
                KvError::LeaseNotFound => Code::NotFound,
                KvError::LeaseExists => Code::FailedPrecondition,
                KvError::TooManyRequests => Code::ResourceExhausted,
                _ => Code::InvalidArgument,
            },
            Error::NoLeader | Error::Unavailable(_) | Error::Timeout => Code::Unavailable,
            Error::NotFound(_) => Code::NotFound,
            Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::Store(_) | Error::Internal(_) => Code::Internal,
        };
        Status::new(code, msg)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
