//! The `kube-dns` Service in kube-system (selector-less, a fixed ClusterIP)
//! and one EndpointSlice per master listing that master's DNS address.
//!
//! Every master with DNS keeps its own slice (`kube-dns-<master>`) and
//! renews it; every master deletes the slices that were not renewed for
//! [`EXPIRY`], so a dead master's address goes away without a leader.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flotilla_objects::api::{ApiError, DeleteParams, ListParams, ObjectApi, Reason};
use flotilla_objects::core::{Service, ServicePort};
use flotilla_objects::discovery::{
    Endpoint, EndpointConditions, EndpointSlice, EndpointSlicePort, LABEL_MANAGED_BY,
    LABEL_SERVICE_NAME,
};
use flotilla_runtime::informer::ObjectRef;
use tokio_util::sync::CancellationToken;

pub const NAMESPACE: &str = "kube-system";
pub const SERVICE: &str = "kube-dns";
/// The manager label of the masters' slices.
pub const MANAGED_BY: &str = "flotilla-dns";
/// When the master last renewed its slice (Unix seconds).
pub const RENEWED_AT: &str = "flotilla.dev/renewed-at";
/// How often a master renews its slice.
pub const RENEW: Duration = Duration::from_secs(10);
/// The next try after a failed renewal (e.g. before kube-system exists).
pub const RETRY: Duration = Duration::from_secs(1);
/// A slice not renewed for this long is deleted.
pub const EXPIRY: Duration = Duration::from_secs(30);

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn service(cluster_dns: IpAddr) -> Service {
    let mut s = Service::default();
    s.metadata.namespace = NAMESPACE.into();
    s.metadata.name = SERVICE.into();
    s.metadata.labels.insert("k8s-app".into(), SERVICE.into());
    s.spec.cluster_ip = cluster_dns.to_string();
    for (name, proto) in [("dns", "UDP"), ("dns-tcp", "TCP")] {
        s.spec.ports.push(ServicePort {
            name: name.into(),
            protocol: proto.into(),
            port: 53,
            ..Default::default()
        });
    }
    s
}

fn slice(master: &str, addr: SocketAddr) -> EndpointSlice {
    let mut s = EndpointSlice::default();
    s.metadata.namespace = NAMESPACE.into();
    s.metadata.name = format!("{SERVICE}-{}", master.to_ascii_lowercase());
    s.metadata
        .labels
        .insert(LABEL_SERVICE_NAME.into(), SERVICE.into());
    s.metadata
        .labels
        .insert(LABEL_MANAGED_BY.into(), MANAGED_BY.into());
    s.metadata
        .annotations
        .insert(RENEWED_AT.into(), now().to_string());
    s.address_type = if addr.is_ipv4() { "IPv4" } else { "IPv6" }.into();
    s.endpoints.push(Endpoint {
        addresses: vec![addr.ip().to_string()],
        conditions: EndpointConditions {
            ready: Some(true),
            serving: Some(true),
            terminating: Some(false),
        },
        hostname: Some(master.to_ascii_lowercase()),
        ..Default::default()
    });
    for (name, proto) in [("dns", "UDP"), ("dns-tcp", "TCP")] {
        s.ports.push(EndpointSlicePort {
            name: Some(name.into()),
            protocol: Some(proto.into()),
            port: Some(i32::from(addr.port())),
            ..Default::default()
        });
    }
    s
}

async fn renew(
    api: &flotilla_client::Api<Service>,
    slices: &flotilla_client::Api<EndpointSlice>,
    master: &str,
    addr: SocketAddr,
    cluster_dns: IpAddr,
) -> Result<(), ApiError> {
    match api.get(SERVICE).await {
        Err(e) if e.reason == Reason::NotFound => match api.create(&service(cluster_dns)).await {
            Ok(_) => tracing::info!(ip = %cluster_dns, "created the kube-dns Service"),
            Err(e) if e.reason == Reason::AlreadyExists => {}
            Err(e) => return Err(e),
        },
        Err(e) => return Err(e),
        Ok(_) => {}
    }
    let mut mine = slice(master, addr);
    match slices.get(&mine.metadata.name).await {
        Ok(old) => {
            mine.metadata.resource_version = old.metadata.resource_version;
            slices.replace(&mine).await?;
        }
        Err(e) if e.reason == Reason::NotFound => {
            slices.create(&mine).await?;
        }
        Err(e) => return Err(e),
    }
    let list = slices
        .list(&ListParams::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGED_BY}")))
        .await?;
    let limit = now().saturating_sub(EXPIRY.as_secs());
    for s in list.items {
        let at = s
            .metadata
            .annotations
            .get(RENEWED_AT)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        if at < limit {
            tracing::info!(slice = %ObjectRef::of(&s), "removing a master's expired DNS address");
            let _ = slices
                .delete(&s.metadata.name, &DeleteParams::default())
                .await;
        }
    }
    Ok(())
}

/// Keep the kube-dns Service and this master's slice until `stop`; the
/// slice is deleted on a graceful stop.
pub async fn publish(
    api: Arc<dyn ObjectApi>,
    master: String,
    addr: SocketAddr,
    cluster_dns: IpAddr,
    stop: CancellationToken,
) {
    let services = flotilla_client::Api::<Service>::namespaced_with(api.clone(), NAMESPACE);
    let slices = flotilla_client::Api::<EndpointSlice>::namespaced_with(api, NAMESPACE);
    loop {
        let next = match renew(&services, &slices, &master, addr, cluster_dns).await {
            Ok(()) => RENEW,
            Err(e) => {
                tracing::debug!(error = %e, "kube-dns endpoints not renewed yet");
                RETRY
            }
        };
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(next) => {}
        }
    }
    let name = slice(&master, addr).metadata.name;
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        slices.delete(&name, &DeleteParams::default()),
    )
    .await;
}
