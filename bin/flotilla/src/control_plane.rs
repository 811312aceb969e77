//! The control plane on a master: the object API served beside the etcd
//! API, the namespaces that always exist, and the leader loops (the
//! controllers) run by the controller runtime while this master leads.

use std::sync::Arc;

use flotilla_control::grpc::ObjectService;
use flotilla_control::{ApiConfig, ApiServer};
use flotilla_objects::api::ObjectApi;
use flotilla_raftstore::{Master, MasterConfig, RunningMaster};
use flotilla_runtime::Manager;
use tokio::sync::watch;
use tonic::service::Routes;

use crate::store::{MasterStore, BOOTSTRAP_RETRY};

/// Leadership as a stream: Some(term) while this master leads in `term`.
fn leadership(master: &Master) -> watch::Receiver<Option<u64>> {
    let mut metrics = master.raft.metrics();
    let current = |m: &openraft::RaftMetrics<u64, flotilla_raftstore::types::MasterNode>| {
        (m.state == openraft::ServerState::Leader).then_some(m.current_term)
    };
    let (tx, rx) = watch::channel(current(&metrics.borrow()));
    tokio::spawn(async move {
        while metrics.changed().await.is_ok() {
            let now = current(&metrics.borrow());
            tx.send_if_modified(|t| {
                let changed = *t != now;
                *t = now;
                changed
            });
            if tx.is_closed() {
                return;
            }
        }
        // The master is shutting down: nobody leads here any more.
        tx.send_replace(None);
    });
    rx
}

/// Start a master with the object API and its controllers.
pub async fn start(
    cfg: MasterConfig,
    api_cfg: ApiConfig,
) -> Result<RunningMaster, flotilla_raftstore::node::StartError> {
    let mut api = None;
    let running = flotilla_raftstore::start_with(cfg, |m: &Master| {
        let server = ApiServer::new(Arc::new(MasterStore::new(m.clone())), api_cfg);
        api = Some(server.clone());
        let limit = m.cfg.limits.max_request_bytes + 512 * 1024;
        Routes::new(ObjectService::server(server.clone(), limit))
            .add_service(flotilla_control::relay::Relay::server(server))
    })
    .await?;
    let master = running.master.clone();
    let Some(api) = api else {
        return Ok(running);
    };
    {
        let (api, stop) = (api.clone(), master.shutdown.clone());
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
    let fenced = api.clone();
    let mut manager = Manager::new(
        &master.cfg.name,
        Arc::new(move |term| Arc::new(fenced.fenced(term)) as Arc<dyn ObjectApi>),
    );
    for l in flotilla_controllers::leader_loops() {
        manager.add(l);
    }
    let (lead, stop) = (leadership(&master), master.shutdown.clone());
    tokio::spawn(async move { manager.run(lead, stop).await });
    Ok(running)
}
