//! The agent's life: containerd up, the node registered with its pod CIDR,
//! the pod network configured, then the heartbeat and the pods until told
//! to stop.

use std::sync::Arc;

use flotilla_client::{Api, Client, ListParams, Reflector};
use flotilla_objects::core::{Node, Pod};
use tokio_util::sync::CancellationToken;

use crate::config::AgentConfig;
use crate::containerd::Supervisor;
use crate::cri::Cri;
use crate::error::{Error, Result};
use crate::node::{self, Heartbeat, HostInfo};
use crate::{cni, pods};

/// A node agent.
pub struct Agent;

impl Agent {
    /// Run the node until `stop` is cancelled. Containers keep running when
    /// the agent stops; the next agent on the node adopts them.
    pub async fn run(cfg: AgentConfig, client: Client, stop: CancellationToken) -> Result<()> {
        cfg.validate()?;
        std::fs::create_dir_all(&cfg.data_dir)
            .map_err(Error::io(format!("creating {}", cfg.data_dir.display())))?;
        if cfg.fake_runtime {
            return run_fake(&cfg, client, stop).await;
        }
        let supervisor = match cfg.containerd_socket {
            Some(_) => None,
            None => Some(Supervisor::start(&cfg).await?),
        };
        let res = run_node(&cfg, client, stop).await;
        if let Some(s) = supervisor {
            s.stop().await;
        }
        res
    }
}

/// A node without containers ([`crate::fake`]).
async fn run_fake(cfg: &AgentConfig, client: Client, stop: CancellationToken) -> Result<()> {
    let host = HostInfo::read();
    let runtime = crate::fake::RUNTIME.to_string();
    let node = node::register(&client, cfg, node::node_status(cfg, &host, &runtime, true)).await?;
    let pod_cidr = if node.spec.pod_cidr.is_empty() {
        node::wait_pod_cidr(&client, &cfg.name).await?
    } else {
        node.spec.pod_cidr.clone()
    };
    let heartbeat = tokio::spawn(heartbeat(
        cfg.clone(),
        client.clone(),
        host,
        runtime,
        stop.clone(),
    ));
    if let Some(m) = &cfg.metrics {
        m.set_ready();
    }
    let r = crate::fake::run_pods(cfg, client, &pod_cidr, stop).await;
    heartbeat.abort();
    r
}

async fn run_node(cfg: &AgentConfig, client: Client, stop: CancellationToken) -> Result<()> {
    let mut cri = Cri::connect(&cfg.socket()).await?;
    if let Some(m) = &cfg.metrics {
        cri.observe(m.runtime_ops.clone());
    }
    let runtime = cri.version().await?;
    tracing::info!(%runtime, socket = %cfg.socket().display(), "container runtime answers");
    let host = HostInfo::read();
    let node = node::register(&client, cfg, node::node_status(cfg, &host, &runtime, false)).await?;
    let pod_cidr = if node.spec.pod_cidr.is_empty() {
        node::wait_pod_cidr(&client, &cfg.name).await?
    } else {
        node.spec.pod_cidr.clone()
    };
    let conf = cni::write(
        &cfg.cni_conf_dir(),
        &cfg.cni_bridge,
        &pod_cidr,
        &cfg.data_dir.join("cni").join("ipam"),
    )?;
    tracing::info!(%pod_cidr, conf = %conf.display(), "pod network configured");
    let heartbeat = tokio::spawn(heartbeat(
        cfg.clone(),
        client.clone(),
        host,
        runtime,
        stop.clone(),
    ));
    let masquerade = cfg.cluster_cidr.clone().map(|cluster_cidr| {
        tokio::spawn(crate::masquerade::run(
            cfg.netns.clone(),
            pod_cidr.clone(),
            cluster_cidr,
            stop.clone(),
        ))
    });
    let routes = tokio::spawn(crate::routes::run(
        cfg.clone(),
        client.clone(),
        stop.clone(),
    ));
    let reflector = Reflector::spawn(
        Api::<Pod>::all(client.clone()),
        ListParams::default().fields(&format!("spec.nodeName={}", cfg.name)),
    );
    let cache = reflector.cache();
    let ctx = Arc::new(pods::Ctx {
        cfg: cfg.clone(),
        cri,
        client,
    });
    let streams = {
        let (ctx, cache, stop) = (ctx.clone(), cache.clone(), stop.clone());
        tokio::spawn(async move {
            if let Err(e) = crate::streams::serve(ctx, cache, stop).await {
                tracing::error!("pod logs and exec are unavailable: {e}");
            }
        })
    };
    tokio::select! {
        _ = stop.cancelled() => {}
        ready = reflector.wait_until_ready(pods::CACHE_TIMEOUT) => {
            if !ready {
                tracing::warn!("the pod list has not arrived yet; running with what comes");
            } else if let Some(m) = &cfg.metrics {
                m.set_ready();
            }
            pods::run(ctx, cache, stop.clone()).await;
        }
    }
    heartbeat.abort();
    streams.abort();
    routes.abort();
    if let Some(m) = masquerade {
        m.abort();
    }
    Ok(())
}

/// Renew the Lease every lease interval; write the node's status when it
/// changes or every status interval.
async fn heartbeat(
    cfg: AgentConfig,
    client: Client,
    host: HostInfo,
    runtime: String,
    stop: CancellationToken,
) {
    let mut lease = Heartbeat::new(&client, &cfg);
    let nodes = Api::<Node>::all(client);
    let mut written: Option<(
        tokio::time::Instant,
        Vec<flotilla_objects::core::NodeCondition>,
    )> = None;
    let mut tick = tokio::time::interval(cfg.lease_interval);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = lease.renew().await {
            tracing::warn!("renewing the node lease: {e}");
        }
        let mut st = node::node_status(&cfg, &host, &runtime, true);
        let due = match &written {
            None => true,
            Some((at, old)) => {
                node::merge_conditions(old, &mut st.conditions)
                    || at.elapsed() >= cfg.status_interval
            }
        };
        if !due {
            continue;
        }
        let status = serde_json::to_value(&st).unwrap_or_default();
        match nodes
            .patch_status(&cfg.name, &serde_json::json!({"status": status}))
            .await
        {
            Ok(_) => written = Some((tokio::time::Instant::now(), st.conditions)),
            Err(e) => tracing::warn!("writing the node status: {e}"),
        }
    }
}
