//! The control plane on a master: the object API served beside the etcd
//! API, the namespaces that always exist, and the controllers (on the
//! leader).

use std::net::SocketAddr;
use std::sync::Arc;

use flotilla_control::alloc::ServiceRanges;
use flotilla_control::gc::GarbageCollector;
use flotilla_control::grpc::ObjectService;
use flotilla_control::ApiServer;
use flotilla_raftstore::{Master, MasterConfig, RunningMaster};
use tonic::service::Routes;

use crate::store::{MasterStore, BOOTSTRAP_RETRY};

/// Where this master's own controllers reach its API.
fn loopback(addr: SocketAddr) -> String {
    let ip = if addr.ip().is_unspecified() {
        match addr {
            SocketAddr::V4(_) => "127.0.0.1".to_string(),
            SocketAddr::V6(_) => "[::1]".to_string(),
        }
    } else if addr.is_ipv6() {
        format!("[{}]", addr.ip())
    } else {
        addr.ip().to_string()
    };
    format!("{ip}:{}", addr.port())
}

/// Start a master with the object API and its controllers.
pub async fn start(
    cfg: MasterConfig,
    ranges: ServiceRanges,
) -> Result<RunningMaster, flotilla_raftstore::node::StartError> {
    let mut api = None;
    let running = flotilla_raftstore::start_with(cfg, |m: &Master| {
        let server = ApiServer::new(Arc::new(MasterStore::new(m.clone())), ranges);
        api = Some(server.clone());
        let limit = m.cfg.limits.max_request_bytes + 512 * 1024;
        Routes::new(ObjectService::server(server, limit))
    })
    .await?;
    let master = running.master.clone();
    if let Some(api) = api {
        let stop = master.shutdown.clone();
        tokio::spawn(async move {
            loop {
                match api.ensure_namespaces().await {
                    Ok(()) => break,
                    Err(e) => tracing::debug!(error = %e, "default namespaces not created yet"),
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(BOOTSTRAP_RETRY) => {}
                }
            }
        });
    }
    match flotilla_client::Client::connect(&[loopback(master.cfg.client_addr)]) {
        Ok(client) => {
            let m = master.clone();
            let gc = GarbageCollector::new(client, Arc::new(move || m.is_leader()));
            tokio::spawn(gc.run(master.shutdown.clone()));
        }
        Err(e) => tracing::error!(error = %e, "controllers not started"),
    }
    Ok(running)
}
