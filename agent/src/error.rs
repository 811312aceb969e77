//! The agent's one error type.

use flotilla_client::ApiError;

/// What can go wrong in the agent, by what the caller can do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The agent was started with something unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// A local file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// containerd could not be started or reached.
    #[error("containerd: {0}")]
    Containerd(String),
    /// The container runtime (CRI) refused or failed a call.
    #[error("{op}: {status}")]
    Runtime {
        op: &'static str,
        status: Box<tonic::Status>,
    },
    /// The masters refused or failed a call.
    #[error(transparent)]
    Api(#[from] ApiError),
}

impl Error {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }

    pub(crate) fn runtime(op: &'static str) -> impl FnOnce(tonic::Status) -> Error {
        move |status| Error::Runtime {
            op,
            status: Box::new(status),
        }
    }

    /// The runtime's own message, without the call's name (for pod status).
    pub fn runtime_message(&self) -> String {
        match self {
            Error::Runtime { status, .. } => status.message().to_string(),
            other => other.to_string(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
