//! What an agent is started with.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};

/// The default sandbox ("pause") image; `scripts/images` builds one, and a
/// registry mirror for `registry.k8s.io` serves it offline.
pub const DEFAULT_SANDBOX_IMAGE: &str = "registry.k8s.io/pause:3.6";
/// The masters' default --cluster-cidr.
pub const DEFAULT_CLUSTER_CIDR: &str = "10.244.0.0/16";

/// A registry mirror: pulls of images from `registry` go to `endpoint`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryMirror {
    /// "docker.io"
    pub registry: String,
    /// "http://127.0.0.1:5000"
    pub endpoint: String,
}

impl std::str::FromStr for RegistryMirror {
    type Err = String;

    /// `REGISTRY=URL`, as `--registry-mirror docker.io=http://127.0.0.1:5000`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (registry, endpoint) = s
            .split_once('=')
            .ok_or_else(|| format!("registry mirror {s:?} is not REGISTRY=URL"))?;
        if registry.is_empty()
            || !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return Err(format!(
                "registry mirror {s:?} is not REGISTRY=URL (with an http:// or https:// URL)"
            ));
        }
        Ok(RegistryMirror {
            registry: registry.to_string(),
            endpoint: endpoint.to_string(),
        })
    }
}

/// Everything the agent needs to run a node.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The node's name.
    pub name: String,
    /// The node's pool (label `flotilla.dev/nodepool`).
    pub pool: String,
    /// The node's address, reported as InternalIP and used as pods' hostIP.
    pub node_ip: Ipv4Addr,
    /// Folder for the agent's own containerd, pod logs and volumes.
    pub data_dir: PathBuf,
    /// An existing containerd's socket; None: start and supervise our own.
    pub containerd_socket: Option<PathBuf>,
    /// The containerd binary started when no socket is given.
    pub containerd_bin: PathBuf,
    /// No containers at all: pods are reported Running at once
    /// ([`crate::fake`], for scale tests).
    pub fake_runtime: bool,
    /// The node's network namespace (a path such as /run/netns/NAME), when
    /// it is not the agent's own: our containerd, and with it the pods'
    /// network, runs there, and probes connect from there.
    pub netns: Option<PathBuf>,
    /// Registry mirrors written into our containerd's configuration.
    pub registry_mirrors: Vec<RegistryMirror>,
    /// The pod sandbox image.
    pub sandbox_image: String,
    /// Folder of the CNI plugins.
    pub cni_bin_dir: PathBuf,
    /// Name of the node's pod bridge.
    pub cni_bridge: String,
    /// Port of the agent's pod streams (logs, exec) on the node's IP.
    pub stream_port: u16,
    /// Interval of the Lease heartbeat.
    pub lease_interval: Duration,
    /// Interval of the Node status update when nothing changed.
    pub status_interval: Duration,
    /// Interval at which every pod is synced even without a change.
    pub resync_interval: Duration,
    /// Name servers of pods with dnsPolicy ClusterFirst (kubelet's --cluster-dns).
    pub cluster_dns: Vec<std::net::IpAddr>,
    /// The cluster domain of pods' search path (kubelet's --cluster-domain).
    pub cluster_domain: String,
    /// The pods' addresses across the cluster (the masters'
    /// --cluster-cidr): pods' traffic to anywhere else is masqueraded to
    /// the node's address ([`crate::masquerade`]); None: no such rule.
    pub cluster_cidr: Option<String>,
    /// TLS for the pod streams (kubelet's --tls-cert-file,
    /// --tls-private-key-file, --client-ca-file): only callers with a client
    /// certificate of that CA in the group system:masters (the masters
    /// relaying `flt logs` and `flt exec`) are then served.
    pub stream_tls: Option<std::sync::Arc<flotilla_security::tls::ServerTls>>,
    /// Where the agent's series go, and its readiness.
    pub metrics: Option<crate::metrics::AgentMetrics>,
    /// The CA of the masters' certificates, given to pods as ca.crt beside
    /// their ServiceAccount token.
    pub cluster_ca_file: Option<PathBuf>,
}

impl AgentConfig {
    /// A configuration with the defaults for everything but the node's identity.
    pub fn new(name: &str, node_ip: Ipv4Addr, data_dir: PathBuf) -> Self {
        AgentConfig {
            name: name.to_string(),
            pool: flotilla_objects::nodepool::DEFAULT_NODE_POOL.to_string(),
            node_ip,
            data_dir,
            containerd_socket: None,
            containerd_bin: PathBuf::from("containerd"),
            fake_runtime: false,
            netns: None,
            registry_mirrors: Vec::new(),
            sandbox_image: DEFAULT_SANDBOX_IMAGE.to_string(),
            cni_bin_dir: PathBuf::from("/usr/lib/cni"),
            cni_bridge: "flt0".to_string(),
            stream_port: 10250,
            lease_interval: Duration::from_secs(10),
            status_interval: Duration::from_secs(60),
            resync_interval: Duration::from_secs(10),
            cluster_dns: Vec::new(),
            cluster_domain: "cluster.local".to_string(),
            cluster_cidr: Some(DEFAULT_CLUSTER_CIDR.to_string()),
            stream_tls: None,
            metrics: None,
            cluster_ca_file: None,
        }
    }

    /// What a pod's resolv.conf is made from; the host's resolv.conf is
    /// read now (for dnsPolicy Default).
    pub fn node_dns(&self) -> crate::pods::dns::NodeDns {
        crate::pods::dns::NodeDns {
            cluster_dns: self.cluster_dns.clone(),
            cluster_domain: self.cluster_domain.clone(),
            host_resolv_conf: std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.name.is_empty() {
            return Err(Error::Config("the node name is empty".into()));
        }
        if self.cni_bridge.is_empty() || self.cni_bridge.len() > 15 {
            return Err(Error::Config(format!(
                "bridge name {:?} must be 1-15 characters",
                self.cni_bridge
            )));
        }
        if let Some(c) = &self.cluster_cidr {
            crate::masquerade::parse_cidr(c)
                .map_err(|e| Error::Config(format!("--cluster-cidr: {e}")))?;
        }
        Ok(())
    }

    /// Folder of pod logs and volumes.
    pub fn pods_dir(&self) -> PathBuf {
        self.data_dir.join("pods")
    }

    /// Folder of our containerd's files.
    pub fn containerd_dir(&self) -> PathBuf {
        self.data_dir.join("containerd")
    }

    /// Folder of the CNI configuration containerd reads.
    pub fn cni_conf_dir(&self) -> PathBuf {
        self.data_dir.join("cni").join("net.d")
    }

    /// The containerd socket the agent talks to.
    pub fn socket(&self) -> PathBuf {
        self.containerd_socket
            .clone()
            .unwrap_or_else(|| self.containerd_dir().join("containerd.sock"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_parses_registry_and_url() {
        let m: RegistryMirror = "docker.io=http://127.0.0.1:5000".parse().unwrap();
        assert_eq!(m.registry, "docker.io");
        assert_eq!(m.endpoint, "http://127.0.0.1:5000");
        assert!("docker.io".parse::<RegistryMirror>().is_err());
        assert!("docker.io=127.0.0.1:5000"
            .parse::<RegistryMirror>()
            .is_err());
    }
}
