//! A node without containers, as kubemark's hollow nodes: it registers and
//! heartbeats like a real agent and reports the pods bound to it Running
//! (with an IP from its pod CIDR) at once, and completes their deletion.
//! Cheap enough for many nodes in one process, for scale benchmarks.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use flotilla_client::{Api, Client, DeleteParams, ListParams, Reason, Reflector};
use flotilla_objects::core::{ContainerState, ContainerStateRunning, ContainerStatus, Pod, PodIp};
use flotilla_objects::Time;
use tokio_util::sync::CancellationToken;

use crate::config::AgentConfig;
use crate::error::Result;
use crate::pods::status;

/// The runtime name a fake node reports.
pub const RUNTIME: &str = "fake://0";

/// The `n`th address of a CIDR (n from 2: .1 is the gateway).
fn nth_ip(cidr: &str, n: u32) -> Option<Ipv4Addr> {
    let (ip, _) = cidr.split_once('/')?;
    let base: Ipv4Addr = ip.parse().ok()?;
    Some(Ipv4Addr::from(u32::from(base) + n))
}

/// The status a fake node reports for a pod: Running and Ready.
pub fn running_status(pod: &Pod, pod_ip: &str, host_ip: &str) -> flotilla_objects::core::PodStatus {
    let views: Vec<status::ContainerView> = pod
        .spec
        .containers
        .iter()
        .map(|_| status::ContainerView {
            ready: true,
            ..Default::default()
        })
        .collect();
    let mut st = status::pod_status(pod, &[], &views, pod_ip, host_ip);
    let now = st.start_time.unwrap_or_else(Time::now);
    st.phase = "Running".into();
    for c in &mut st.conditions {
        c.status = "True".into();
        c.reason.clear();
    }
    st.container_statuses = pod
        .spec
        .containers
        .iter()
        .map(|c| ContainerStatus {
            name: c.name.clone(),
            ready: true,
            image: c.image.clone(),
            container_id: format!("fake://{}/{}", pod.metadata.uid, c.name),
            started: Some(true),
            state: ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: Some(now),
                }),
                ..Default::default()
            },
            ..Default::default()
        })
        .collect();
    st
}

/// Run the fake node's pods until `stop`.
pub async fn run_pods(
    cfg: &AgentConfig,
    client: Client,
    pod_cidr: &str,
    stop: CancellationToken,
) -> Result<()> {
    let reflector = Reflector::spawn(
        Api::<Pod>::all(client.clone()),
        ListParams::default().fields(&format!("spec.nodeName={}", cfg.name)),
    );
    let cache = reflector.cache();
    let mut changes = cache.changes();
    let host_ip = cfg.node_ip.to_string();
    let mut ips: HashMap<String, String> = HashMap::new();
    let mut next = 2u32;
    loop {
        for pod in cache.list() {
            let api = Api::<Pod>::namespaced(client.clone(), &pod.metadata.namespace);
            let uid = pod.metadata.uid.clone();
            if pod.metadata.deletion_timestamp.is_some() {
                let p = DeleteParams {
                    grace_period_seconds: Some(0),
                    precondition_uid: uid.clone(),
                    ..Default::default()
                };
                match api.delete(&pod.metadata.name, &p).await {
                    Ok(_) => {}
                    Err(e) if e.is(Reason::NotFound) || e.is(Reason::Conflict) => {}
                    Err(e) => tracing::warn!(pod = %pod.metadata.name, "deleting: {e}"),
                }
                ips.remove(&uid);
                continue;
            }
            if pod.status.as_ref().is_some_and(|s| s.phase == "Running") {
                continue;
            }
            let ip = ips
                .entry(uid)
                .or_insert_with(|| {
                    next += 1;
                    nth_ip(pod_cidr, next - 1)
                        .map(|i| i.to_string())
                        .unwrap_or_default()
                })
                .clone();
            let mut p = (*pod).clone();
            p.metadata.resource_version.clear();
            let mut st = running_status(&pod, &ip, &host_ip);
            st.pod_ips = vec![PodIp { ip: ip.clone() }];
            p.status = Some(st);
            match api.replace_status(&p).await {
                Ok(_) => {
                    if let Some(m) = &cfg.metrics {
                        m.pod_started(&pod);
                    }
                }
                Err(e) if e.is(Reason::NotFound) => {}
                Err(e) => tracing::warn!(pod = %pod.metadata.name, "writing the status: {e}"),
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            r = changes.changed() => if r.is_err() { return Ok(()) },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_pods_run_with_an_ip_of_the_cidr() {
        assert_eq!(
            nth_ip("10.244.3.0/24", 2),
            Some(Ipv4Addr::new(10, 244, 3, 2))
        );
        let p: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "uid": "u"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}
        }))
        .unwrap();
        let st = running_status(&p, "10.244.3.2", "10.0.0.1");
        assert_eq!(st.phase, "Running");
        assert!(st.conditions.iter().all(|c| c.status == "True"));
        assert!(st.container_statuses[0].ready);
    }
}
