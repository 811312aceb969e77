//! `flotilla ingress`: flags to a [`flotilla_ingress::Config`], then the
//! router until a signal.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use tokio_util::sync::CancellationToken;

#[derive(Args)]
pub struct IngressArgs {
    #[command(flatten)]
    masters: crate::master_client::MasterClientArgs,
    /// The node this router runs on (for its logs).
    #[arg(long)]
    node_name: String,
    /// Serve plain HTTP here (e.g. 0.0.0.0:80).
    #[arg(long)]
    http_addr: Option<SocketAddr>,
    /// Serve HTTPS here (e.g. 0.0.0.0:443), with certificates from the
    /// Ingresses' kubernetes.io/tls Secrets, chosen by SNI.
    #[arg(long)]
    https_addr: Option<SocketAddr>,
    /// Serve /metrics (Prometheus) and /healthz here, or "off"
    /// (`--metrics-addr`, as the other roles call it, is the same flag; the
    /// default is ingress-nginx's metrics port, on loopback).
    #[arg(long, visible_alias = "metrics-addr", value_name = "ADDR:PORT|off",
          default_value = "127.0.0.1:10254", value_parser = crate::metrics_args::parse)]
    admin_addr: crate::metrics_args::MetricsAddr,
    /// The IngressClass served: Ingresses naming it, and those naming no
    /// class when it is the default class (or when no class is default).
    #[arg(long, default_value = "flotilla")]
    ingress_class: String,
    /// The address written into the served Ingresses'
    /// status.loadBalancer.ingress (default: the HTTP listener's IP).
    #[arg(long)]
    publish_address: Option<String>,
    /// Seconds to connect to a pod before trying another.
    #[arg(long, default_value_t = 3)]
    connect_timeout_seconds: u64,
    /// Seconds from sending a request to a pod to its response headers (504 after).
    #[arg(long, default_value_t = 60)]
    request_timeout_seconds: u64,
    /// Seconds an HTTP/1.1 client connection may wait idle (or send its
    /// headers); HTTP/2 connections stay while they answer pings.
    #[arg(long, default_value_t = 75)]
    idle_timeout_seconds: u64,
}

impl IngressArgs {
    pub fn config(&self) -> Result<flotilla_ingress::Config> {
        if self.http_addr.is_none() && self.https_addr.is_none() {
            anyhow::bail!("give --http-addr, --https-addr or both");
        }
        let mut cfg = flotilla_ingress::Config::new(&self.node_name);
        cfg.http_addr = self.http_addr;
        cfg.https_addr = self.https_addr;
        cfg.admin_addr = match self.admin_addr {
            crate::metrics_args::MetricsAddr::At(a) => Some(a),
            crate::metrics_args::MetricsAddr::Off => None,
        };
        cfg.class = self.ingress_class.clone();
        cfg.status_address = self.publish_address.clone();
        cfg.timeouts = flotilla_ingress::Timeouts {
            connect: Duration::from_secs(self.connect_timeout_seconds.max(1)),
            request: Duration::from_secs(self.request_timeout_seconds.max(1)),
            idle: Duration::from_secs(self.idle_timeout_seconds.max(1)),
        };
        Ok(cfg)
    }
}

pub async fn run(a: IngressArgs, stop: impl std::future::Future<Output = ()>) -> Result<()> {
    let cfg = a.config()?;
    let bound = flotilla_ingress::Bound::bind(cfg).await?;
    let client = a.masters.connect()?;
    let token = CancellationToken::new();
    let run = bound.run(client, token.clone());
    tokio::pin!(run);
    tokio::select! {
        r = &mut run => return r.context("ingress"),
        _ = stop => tracing::info!("stopping"),
    }
    token.cancel();
    run.await.context("ingress")
}

/// `flotilla up`'s ingress flags.
#[derive(Args)]
pub struct UpIngressArgs {
    /// The ingress router's HTTP address (default: 127.0.0.1 and the base
    /// port + 3).
    #[arg(long)]
    ingress_http_addr: Option<SocketAddr>,
    /// Its HTTPS address (default: 127.0.0.1 and the base port + 4).
    #[arg(long)]
    ingress_https_addr: Option<SocketAddr>,
    /// Run no ingress router.
    #[arg(long)]
    no_ingress: bool,
}

/// The ingress `flotilla up` runs in its own process (as the user
/// system:ingress; `admin` sets up the class and the routes), on the machine's
/// side of the agents' bridge: the default IngressClass `flotilla`, and
/// routes to each agent's pod CIDR so that it reaches the pods.
pub struct UpIngress {
    pub http: Option<SocketAddr>,
    pub https: Option<SocketAddr>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    stop: CancellationToken,
}

impl UpIngress {
    pub async fn start(
        a: &UpIngressArgs,
        base_port: u16,
        admin: flotilla_client::Client,
        client: flotilla_client::Client,
        route_pods: bool,
    ) -> Result<Option<UpIngress>> {
        if a.no_ingress {
            return Ok(None);
        }
        let local = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        let mut cfg = flotilla_ingress::Config::new("up");
        cfg.http_addr = Some(a.ingress_http_addr.unwrap_or(local(base_port + 3)));
        cfg.https_addr = Some(a.ingress_https_addr.unwrap_or(local(base_port + 4)));
        let bound = flotilla_ingress::Bound::bind(cfg).await.context(
            "the ingress router (--ingress-http-addr, --ingress-https-addr, --no-ingress)",
        )?;
        default_class(&admin).await;
        let stop = CancellationToken::new();
        let mut up = UpIngress {
            http: bound.http_addr(),
            https: bound.https_addr(),
            tasks: Vec::new(),
            stop: stop.clone(),
        };
        if route_pods {
            up.tasks.push(tokio::spawn(pod_routes(admin, stop.clone())));
        }
        up.tasks.push(tokio::spawn(async move {
            if let Err(e) = bound.run(client, stop).await {
                tracing::error!("ingress stopped: {e}");
            }
        }));
        Ok(Some(up))
    }

    pub async fn shutdown(self) {
        self.stop.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Create the IngressClass `flotilla`, marked default, unless it exists.
async fn default_class(client: &flotilla_client::Client) {
    use flotilla_objects::networking::IngressClass;
    let api = flotilla_client::Api::<IngressClass>::all(client.clone());
    let mut class = IngressClass::default();
    class.metadata.name = "flotilla".into();
    class.metadata.annotations.insert(
        flotilla_objects::networking::DEFAULT_CLASS_ANNOTATION.into(),
        "true".into(),
    );
    class.spec.controller = flotilla_ingress::CONTROLLER.into();
    match api.create(&class).await {
        Ok(_) => tracing::info!("created the default IngressClass flotilla"),
        Err(e) if e.reason == flotilla_client::Reason::AlreadyExists => {}
        Err(e) => tracing::warn!(error = %e, "creating the IngressClass flotilla"),
    }
}

/// Keep a route from this namespace to each node's pod CIDR through the
/// node's InternalIP (the agents' bridge), so that the ingress reaches pods.
async fn pod_routes(client: flotilla_client::Client, stop: CancellationToken) {
    use flotilla_objects::core::Node;
    let nodes = flotilla_client::Reflector::spawn(
        flotilla_client::Api::<Node>::all(client),
        flotilla_client::ListParams::default(),
    );
    let cache = nodes.cache();
    let mut changes = cache.changes();
    let mut done = std::collections::BTreeMap::new();
    loop {
        for n in cache.list() {
            let cidr = n.spec.pod_cidr.clone();
            let ip = n.status.as_ref().and_then(|s| {
                s.addresses
                    .iter()
                    .find(|a| a.type_ == "InternalIP")
                    .map(|a| a.address.clone())
            });
            let (false, Some(ip)) = (cidr.is_empty(), ip) else {
                continue;
            };
            if done.get(&cidr) == Some(&ip) {
                continue;
            }
            let out = tokio::process::Command::new("ip")
                .args(["route", "replace", &cidr, "via", &ip])
                .output()
                .await;
            match out {
                Ok(o) if o.status.success() => {
                    tracing::info!(%cidr, via = %ip, "route to the pods of {}", n.metadata.name);
                    done.insert(cidr, ip);
                }
                Ok(o) => {
                    tracing::warn!(%cidr, via = %ip, "ip route: {}", String::from_utf8_lossy(&o.stderr).trim())
                }
                Err(e) => tracing::warn!("ip route: {e}"),
            }
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = changes.changed() => {}
        }
    }
    for (cidr, ip) in done {
        let _ = tokio::process::Command::new("ip")
            .args(["route", "del", &cidr, "via", &ip])
            .output()
            .await;
    }
}
