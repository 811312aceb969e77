//! The agent's Node: registration (capacity and allocatable read from the
//! host, labels, the pool's labels and taints, addresses, versions), the pod
//! CIDR the masters assign, the heartbeat Lease in `kube-node-lease`, and
//! the node's conditions, rewritten on change or every status interval
//! only, so that nodes do not rewrite the store every few seconds.

use std::collections::BTreeMap;
use std::time::Duration;

use flotilla_client::{Api, ApiError, Client, Reason};
use flotilla_objects::coordination::{Lease, LeaseSpec, NODE_LEASE_NAMESPACE};
use flotilla_objects::core::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeStatus,
    NodeSystemInfo,
};
use flotilla_objects::nodepool::{NodePool, NODE_POOL_LABEL};
use flotilla_objects::Time;

use crate::config::AgentConfig;
use crate::error::Result;

/// Resources kept back from pods for the system (kubelet's eviction
/// threshold default).
const RESERVED_MEMORY: u64 = 100 << 20;
/// Pods per node, as kubelet's default.
const MAX_PODS: u32 = 110;

/// What the host has.
#[derive(Debug, Clone, PartialEq)]
pub struct HostInfo {
    pub cpus: usize,
    pub memory_bytes: u64,
    pub kernel: String,
    pub os_image: String,
    pub machine_id: String,
}

impl HostInfo {
    /// Read from /proc and /etc.
    pub fn read() -> HostInfo {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_kib = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        let os_release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
        let os_image = os_release
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_else(|| "Linux".to_string());
        HostInfo {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_bytes: memory_kib * 1024,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            os_image,
            machine_id: std::fs::read_to_string("/etc/machine-id")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
        }
    }
}

fn quantities(cpus: usize, memory: u64) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("cpu".to_string(), cpus.to_string()),
        ("memory".to_string(), format!("{}Ki", memory / 1024)),
        ("pods".to_string(), MAX_PODS.to_string()),
    ])
}

fn condition(type_: &str, ok: bool, reason: &str, message: &str, now: &Time) -> NodeCondition {
    // Ready is good when True; the pressures are good when False.
    let status = if (type_ == "Ready") == ok {
        "True"
    } else {
        "False"
    };
    NodeCondition {
        type_: type_.to_string(),
        status: status.to_string(),
        last_heartbeat_time: Some(*now),
        last_transition_time: Some(*now),
        reason: reason.to_string(),
        message: message.to_string(),
    }
}

/// The node's status as this agent reports it.
pub fn node_status(cfg: &AgentConfig, host: &HostInfo, runtime: &str, ready: bool) -> NodeStatus {
    let now = Time::now();
    let (ready_reason, ready_msg) = if ready {
        ("KubeletReady", "flotilla agent is posting ready status")
    } else {
        ("KubeletNotReady", "the pod network is not configured yet")
    };
    NodeStatus {
        capacity: quantities(host.cpus, host.memory_bytes),
        allocatable: quantities(host.cpus, host.memory_bytes.saturating_sub(RESERVED_MEMORY)),
        conditions: vec![
            condition("Ready", ready, ready_reason, ready_msg, &now),
            condition(
                "MemoryPressure",
                true,
                "KubeletHasSufficientMemory",
                "",
                &now,
            ),
            condition("DiskPressure", true, "KubeletHasNoDiskPressure", "", &now),
            condition("PIDPressure", true, "KubeletHasSufficientPID", "", &now),
        ],
        addresses: vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: cfg.node_ip.to_string(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: cfg.name.clone(),
            },
        ],
        node_info: NodeSystemInfo {
            kubelet_version: format!("flotilla-{}", env!("CARGO_PKG_VERSION")),
            os_image: host.os_image.clone(),
            kernel_version: host.kernel.clone(),
            container_runtime_version: runtime.to_string(),
            architecture: std::env::consts::ARCH
                .replace("x86_64", "amd64")
                .replace("aarch64", "arm64"),
            operating_system: "linux".into(),
            machine_id: host.machine_id.clone(),
        },
        daemon_endpoints: NodeDaemonEndpoints {
            kubelet_endpoint: DaemonEndpoint {
                port: i32::from(cfg.stream_port),
            },
        },
    }
}

/// Keep the transition times of conditions whose status did not change,
/// and tell whether anything but heartbeat times changed.
pub fn merge_conditions(old: &[NodeCondition], new: &mut [NodeCondition]) -> bool {
    let mut changed = old.len() != new.len();
    for c in new.iter_mut() {
        match old.iter().find(|o| o.type_ == c.type_) {
            Some(o) if o.status == c.status => {
                c.last_transition_time = o.last_transition_time;
                changed |= o.reason != c.reason || o.message != c.message;
            }
            _ => changed = true,
        }
    }
    changed
}

fn node_object(cfg: &AgentConfig, pool: Option<&NodePool>, status: NodeStatus) -> Node {
    let mut n = Node::default();
    n.metadata.name = cfg.name.clone();
    let labels = &mut n.metadata.labels;
    if let Some(p) = pool {
        labels.extend(p.spec.labels.clone());
        n.spec.taints = p.spec.taints.clone();
    }
    labels.insert("kubernetes.io/hostname".into(), cfg.name.clone());
    labels.insert("kubernetes.io/os".into(), "linux".into());
    labels.insert(
        "kubernetes.io/arch".into(),
        status.node_info.architecture.clone(),
    );
    labels.insert(NODE_POOL_LABEL.into(), cfg.pool.clone());
    n.status = Some(status);
    n
}

/// Register the node (or take over its existing object: labels and status
/// are ours, the spec the masters' and the operators'); returns the node as
/// stored, with the pod CIDR the masters gave it.
pub async fn register(client: &Client, cfg: &AgentConfig, status: NodeStatus) -> Result<Node> {
    let pool = match Api::<NodePool>::all(client.clone()).get(&cfg.pool).await {
        Ok(p) => Some(p),
        Err(e) if e.is(Reason::NotFound) => None,
        Err(e) => return Err(e.into()),
    };
    let nodes = Api::<Node>::all(client.clone());
    let want = node_object(cfg, pool.as_ref(), status);
    match nodes.create(&want).await {
        Ok(n) => {
            tracing::info!(node = %cfg.name, pod_cidr = %n.spec.pod_cidr, "registered the node");
            Ok(n)
        }
        Err(e) if e.is(Reason::AlreadyExists) => {
            let labels = serde_json::to_value(&want.metadata.labels).unwrap_or_default();
            nodes
                .patch(
                    &cfg.name,
                    &serde_json::json!({"metadata": {"labels": labels}}),
                )
                .await?;
            let status = serde_json::to_value(&want.status).unwrap_or_default();
            let n = nodes
                .patch_status(&cfg.name, &serde_json::json!({"status": status}))
                .await?;
            tracing::info!(node = %cfg.name, pod_cidr = %n.spec.pod_cidr, "took over the existing node");
            Ok(n)
        }
        Err(e) => Err(e.into()),
    }
}

/// Wait until the masters have given the node a pod CIDR.
pub async fn wait_pod_cidr(client: &Client, name: &str) -> Result<String> {
    let nodes = Api::<Node>::all(client.clone());
    loop {
        match nodes.get(name).await {
            Ok(n) if !n.spec.pod_cidr.is_empty() => return Ok(n.spec.pod_cidr),
            Ok(_) => tracing::info!("waiting for the masters to give the node a pod CIDR"),
            Err(e) => tracing::warn!("reading the node: {e}"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The node's heartbeat: a Lease renewed every `interval`.
pub struct Heartbeat {
    api: Api<Lease>,
    name: String,
    duration: Duration,
    lease: Option<Lease>,
}

impl Heartbeat {
    pub fn new(client: &Client, cfg: &AgentConfig) -> Heartbeat {
        Heartbeat {
            api: Api::namespaced(client.clone(), NODE_LEASE_NAMESPACE),
            name: cfg.name.clone(),
            duration: cfg.lease_interval * 4,
            lease: None,
        }
    }

    /// Renew the lease (creating it, and its namespace, the first time).
    pub async fn renew(&mut self) -> Result<(), ApiError> {
        let now = Time::now();
        let mut lease = match self.lease.take() {
            Some(l) => l,
            None => match self.api.get(&self.name).await {
                Ok(l) => l,
                Err(e) if e.is(Reason::NotFound) => return self.create(now).await,
                Err(e) => return Err(e),
            },
        };
        lease.spec.renew_time = Some(now);
        lease.spec.holder_identity = Some(self.name.clone());
        match self.api.replace(&lease).await {
            Ok(l) => {
                self.lease = Some(l);
                Ok(())
            }
            // Read it again next time.
            Err(e) => Err(e),
        }
    }

    async fn create(&mut self, now: Time) -> Result<(), ApiError> {
        // The masters make the namespace kube-node-lease (a node may not
        // create namespaces).
        let mut l = Lease::default();
        l.metadata.name = self.name.clone();
        l.metadata.namespace = NODE_LEASE_NAMESPACE.to_string();
        l.spec = LeaseSpec {
            holder_identity: Some(self.name.clone()),
            lease_duration_seconds: Some(self.duration.as_secs() as i32),
            acquire_time: Some(now),
            renew_time: Some(now),
            lease_transitions: None,
        };
        self.lease = Some(self.api.create(&l).await?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_reports_host_and_conditions() {
        let cfg = AgentConfig::new("n1", "10.0.0.2".parse().unwrap(), "/d".into());
        let host = HostInfo {
            cpus: 2,
            memory_bytes: 4 << 30,
            kernel: "6.1".into(),
            os_image: "Debian".into(),
            machine_id: "m".into(),
        };
        let s = node_status(&cfg, &host, "containerd://1.6", true);
        assert_eq!(s.capacity["memory"], "4194304Ki");
        assert_eq!(
            s.allocatable["memory"],
            format!("{}Ki", (4u64 << 20) - 100 * 1024)
        );
        assert_eq!(s.conditions[0].status, "True");
        assert_eq!(s.conditions[1].status, "False");
        let mut again = node_status(&cfg, &host, "containerd://1.6", true);
        assert!(!merge_conditions(&s.conditions, &mut again.conditions));
        let mut not_ready = node_status(&cfg, &host, "containerd://1.6", false);
        assert!(merge_conditions(&s.conditions, &mut not_ready.conditions));
    }
}
