//! How a master's ports are secured: TLS on the client and peer ports (the
//! certificates followed on disk, see `flotilla_security::tls`), the TLS
//! this master presents when it calls its peers and other masters' client
//! ports, and the gate that decides who may use the etcd and cluster admin
//! APIs on the client port. The gate is given by the binary: the store
//! knows no users or roles.

use std::fmt;
use std::sync::Arc;

use flotilla_security::tls::ServerTls;
use tonic::service::Interceptor;
use tonic::transport::{ClientTlsConfig, Endpoint};
use tonic::{Request, Status};

/// Decides whether a call of the etcd API (or of the cluster admin API) on
/// the client port may proceed.
pub trait ClientGate: Send + Sync {
    fn check(&self, req: &Request<()>) -> Result<(), Status>;
}

/// The gate as a tonic interceptor.
#[derive(Clone)]
pub(crate) struct GateInterceptor(pub(crate) Option<Arc<dyn ClientGate>>);

impl Interceptor for GateInterceptor {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(g) = &self.0 {
            g.check(&req)?;
        }
        Ok(req)
    }
}

/// A master's transport security; the default is plaintext, no gate.
#[derive(Clone, Default)]
pub struct TransportSecurity {
    /// TLS on the client port.
    pub client_tls: Option<Arc<ServerTls>>,
    /// TLS on the peer port (peers must present a certificate of the peer CA).
    pub peer_tls: Option<Arc<ServerTls>>,
    /// What this master presents when it calls a peer's port.
    pub peer_client: Option<ClientTlsConfig>,
    /// What this master presents when it calls another master's client
    /// port (joining, forwarding a membership change to the leader).
    pub client_client: Option<ClientTlsConfig>,
    /// Who may use the etcd and cluster admin APIs.
    pub gate: Option<Arc<dyn ClientGate>>,
}

impl fmt::Debug for TransportSecurity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransportSecurity")
            .field("client_tls", &self.client_tls.is_some())
            .field("peer_tls", &self.peer_tls.is_some())
            .field("gate", &self.gate.is_some())
            .finish()
    }
}

/// An endpoint for `addr` (HOST:PORT): https with `tls` when given.
pub(crate) fn endpoint(addr: &str, tls: Option<&ClientTlsConfig>) -> Result<Endpoint, String> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let ep = Endpoint::from_shared(format!("{scheme}://{addr}"))
        .map_err(|e| format!("bad address {addr}: {e}"))?;
    match tls {
        Some(t) => ep
            .tls_config(t.clone())
            .map_err(|e| format!("TLS for {addr}: {e}")),
        None => Ok(ep),
    }
}
