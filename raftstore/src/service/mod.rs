//! The gRPC services a master serves: the etcd v3 services and Flotilla's
//! cluster administration on the client address, the peer service on the
//! peer address.

pub mod admin;
pub mod cluster;
pub mod kv;
pub mod lease;
pub mod maintenance;
pub mod peer;
pub mod watch;

use tonic::Status;

use crate::error::Error;

/// Run blocking store work off the async runtime's threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::from(Error::Internal(e.to_string())))
}
