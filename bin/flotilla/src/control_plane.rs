//! The control plane on a master: the object API served beside the etcd
//! API (authenticated and authorized), the namespaces and default roles
//! that always exist, and the leader loops (the
//! controllers) run by the controller runtime while this master leads.

use std::sync::Arc;

use flotilla_control::auth::Auth;
use flotilla_control::encryption::EncryptingStore;
use flotilla_control::grpc::ObjectService;
use flotilla_control::{ApiConfig, ApiServer};
use flotilla_objects::api::ObjectApi;
use flotilla_raftstore::{Master, MasterConfig, RunningMaster};
use flotilla_runtime::Manager;
use tonic::service::Routes;

use crate::security::AccessConfig;
use crate::store::{MasterStore, BOOTSTRAP_RETRY};

/// Start a master with the object API, its controllers and, with `dns`,
/// its cluster DNS server (on every master, answering from this replica).
pub async fn start(
    cfg: MasterConfig,
    api_cfg: ApiConfig,
    loops: Vec<Arc<dyn flotilla_runtime::LeaderLoop>>,
    dns: Option<flotilla_dns::DnsConfig>,
    access: AccessConfig,
) -> anyhow::Result<RunningMaster> {
    let mut api = None;
    let running = flotilla_raftstore::start_with(cfg, |m: &Master| {
        let mut store: Arc<dyn flotilla_control::store::Store> =
            Arc::new(MasterStore::new(m.clone()));
        if let Some(enc) = access.encryption {
            store = Arc::new(EncryptingStore::new(store, enc));
        }
        let server = ApiServer::new(store, api_cfg);
        api = Some(server.clone());
        let auth = if access.rbac {
            Auth::rbac(
                access.authn,
                server.clone(),
                m.shutdown_token(),
                access.sa_keys,
            )
        } else {
            Auth::always_allow(access.authn)
        };
        let _ = access.gate.auth.set(auth.clone());
        flotilla_telemetry::register(&m.config().metrics, server.watch_cache_collector());
        let limit = m.config().limits.max_request_bytes + 512 * 1024;
        Routes::new(ObjectService::server(
            server.clone(),
            auth.clone(),
            limit,
            flotilla_control::metrics::ApiMetrics::new(&m.config().metrics),
            access.audit.clone(),
        ))
        .add_service(flotilla_control::relay::Relay::server(
            server,
            auth,
            access.agent_tls,
            access.audit,
        ))
    })
    .await?;
    let master = running.master.clone();
    flotilla_telemetry::register(
        &master.config().metrics,
        flotilla_runtime::metrics::WorkqueueCollector,
    );
    flotilla_scheduler::metrics::register(&master.config().metrics);
    let Some(api) = api else {
        return Ok(running);
    };
    {
        let (api, stop) = (api.clone(), master.shutdown_token());
        tokio::spawn(async move {
            loop {
                match api.ensure_namespaces().await {
                    Ok(()) => match api.ensure_rbac_defaults().await {
                        Ok(()) => break,
                        Err(e) => tracing::debug!(error = %e, "default roles not created yet"),
                    },
                    Err(e) => tracing::debug!(error = %e, "default namespaces not created yet"),
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(BOOTSTRAP_RETRY) => {}
                }
            }
        });
    }
    if let Some(mut dns) = dns {
        dns.metrics = Some(master.config().metrics.clone());
        let (addr, cluster_dns) = (dns.addr, dns.cluster_dns);
        let stop = master.shutdown_token();
        let api_dyn: Arc<dyn ObjectApi> = Arc::new(api.clone());
        let server = match flotilla_dns::start(dns, api_dyn, stop.clone()).await {
            Ok(s) => s,
            Err(e) => {
                running.shutdown().await;
                return Err(anyhow::Error::new(e).context(format!("DNS on {addr}")));
            }
        };
        tokio::spawn(flotilla_dns::kube_dns::publish(
            Arc::new(api.clone()),
            master.config().name.clone(),
            server.addr,
            cluster_dns,
            stop.clone(),
        ));
        tokio::spawn(crate::dns::watch_quorum(master.clone(), server, stop));
    }
    let fenced = api.clone();
    let mut manager = Manager::new(
        &master.config().name,
        Arc::new(move |term| Arc::new(fenced.fenced(term)) as Arc<dyn ObjectApi>),
    );
    for l in loops {
        manager.add(l);
    }
    let (lead, stop) = (master.leadership(), master.shutdown_token());
    tokio::spawn(async move { manager.run(lead, stop).await });
    Ok(running)
}
