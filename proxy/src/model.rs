//! What the proxy serves, computed from the caches: one [`SvcPort`] per
//! service port with the endpoints this node may send it to. Pure: no
//! sockets, no iptables; both modes render from it.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use flotilla_objects::core::{Node, Service, ServicePort};
use flotilla_objects::discovery::EndpointSlice;

use crate::lb;

/// TCP or UDP (SCTP ports are skipped).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn parse(s: &str) -> Option<Proto> {
        match s {
            "" | "TCP" => Some(Proto::Tcp),
            "UDP" => Some(Proto::Udp),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// One endpoint of a service port.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ep {
    pub ip: Ipv4Addr,
    pub port: u16,
    /// On this node (for the Local traffic policies).
    pub local: bool,
}

/// One port of one service, as the proxy serves it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SvcPort {
    /// "namespace/name:port-name": names the chains and listeners.
    pub key: String,
    pub proto: Proto,
    pub cluster_ip: Ipv4Addr,
    pub port: u16,
    pub node_port: Option<u16>,
    /// externalIPs plus the load balancer addresses this node answers.
    pub external_ips: Vec<Ipv4Addr>,
    /// The load balancer addresses among `external_ips`.
    pub lb_ips: Vec<Ipv4Addr>,
    /// ClientIP affinity timeout in seconds.
    pub affinity: Option<u32>,
    pub external_local: bool,
    pub internal_local: bool,
    /// Ready endpoints, sorted.
    pub endpoints: Vec<Ep>,
}

impl SvcPort {
    /// The endpoints traffic from inside the cluster may go to.
    pub fn internal_endpoints(&self) -> Vec<&Ep> {
        self.endpoints
            .iter()
            .filter(|e| !self.internal_local || e.local)
            .collect()
    }

    /// Whether traffic is balanced over all endpoints (a policy Cluster
    /// with endpoints to send to): iptables mode's SVC chain, nftables
    /// mode's `svc-` chain.
    pub fn balanced_over_all(&self) -> bool {
        (!self.internal_local && !self.internal_endpoints().is_empty())
            || (!self.external_local && !self.external_endpoints().is_empty())
    }

    /// Whether traffic is balanced over this node's endpoints (a policy
    /// Local, and a local endpoint): the SVL / `svl-` chain.
    pub fn balanced_over_local(&self) -> bool {
        (self.internal_local || self.external_local) && self.endpoints.iter().any(|e| e.local)
    }

    /// The endpoints traffic from outside (node ports, external and
    /// load balancer addresses) may go to.
    pub fn external_endpoints(&self) -> Vec<&Ep> {
        self.endpoints
            .iter()
            .filter(|e| !self.external_local || e.local)
            .collect()
    }
}

/// Everything the caches say, for one node.
pub struct Inputs<'a> {
    pub node_name: &'a str,
    pub services: &'a [std::sync::Arc<Service>],
    pub slices: &'a [std::sync::Arc<EndpointSlice>],
    pub nodes: &'a [std::sync::Arc<Node>],
}

fn target_port_name(p: &ServicePort) -> &str {
    &p.name
}

/// The service ports this node serves, sorted by key.
pub fn build(inp: &Inputs) -> Vec<SvcPort> {
    let mut by_service: BTreeMap<(&str, &str), Vec<&EndpointSlice>> = BTreeMap::new();
    for s in inp.slices {
        if let Some(svc) = s.service_name() {
            by_service
                .entry((s.metadata.namespace.as_str(), svc))
                .or_default()
                .push(s);
        }
    }
    let mut out = Vec::new();
    for svc in inp.services {
        let spec = &svc.spec;
        if spec.type_ == "ExternalName" {
            continue;
        }
        let Ok(cluster_ip) = spec.cluster_ip.parse::<Ipv4Addr>() else {
            continue; // headless ("None") or not yet allocated
        };
        let ns = svc.metadata.namespace.as_str();
        let name = svc.metadata.name.as_str();
        let mut lb_ips = Vec::new();
        let mut external: Vec<Ipv4Addr> = spec
            .external_ips
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect();
        if spec.type_ == "LoadBalancer" {
            for ing in svc
                .status
                .as_ref()
                .map(|s| s.load_balancer.ingress.as_slice())
                .unwrap_or_default()
            {
                if let Ok(ip) = ing.ip.parse::<Ipv4Addr>() {
                    if lb::answerer(ip, inp.nodes).as_deref() == Some(inp.node_name) {
                        external.push(ip);
                        lb_ips.push(ip);
                    }
                }
            }
        }
        external.sort();
        external.dedup();
        let slices = by_service
            .get(&(ns, name))
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        for p in &spec.ports {
            let Some(proto) = Proto::parse(&p.protocol) else {
                continue;
            };
            let Ok(port) = u16::try_from(p.port) else {
                continue;
            };
            let mut endpoints = Vec::new();
            for s in slices {
                let Some(sp) = s.ports.iter().find(|sp| {
                    sp.name.as_deref().unwrap_or("") == target_port_name(p)
                        && Proto::parse(sp.protocol.as_deref().unwrap_or("TCP")) == Some(proto)
                }) else {
                    continue;
                };
                let Some(ep_port) = sp.port.and_then(|v| u16::try_from(v).ok()) else {
                    continue;
                };
                for e in &s.endpoints {
                    if !e.conditions.is_ready() {
                        continue;
                    }
                    for a in &e.addresses {
                        if let Ok(ip) = a.parse::<Ipv4Addr>() {
                            endpoints.push(Ep {
                                ip,
                                port: ep_port,
                                local: e.node_name.as_deref() == Some(inp.node_name),
                            });
                        }
                    }
                }
            }
            endpoints.sort();
            endpoints.dedup();
            let node_port = (matches!(spec.type_.as_str(), "NodePort" | "LoadBalancer")
                && p.node_port > 0)
                .then(|| u16::try_from(p.node_port).ok())
                .flatten();
            out.push(SvcPort {
                key: format!("{ns}/{name}:{}", p.name),
                proto,
                cluster_ip,
                port,
                node_port,
                external_ips: external.clone(),
                lb_ips: lb_ips.clone(),
                affinity: spec.affinity_timeout().map(|t| t.max(1) as u32),
                external_local: spec.external_traffic_policy == "Local",
                internal_local: spec.internal_traffic_policy == "Local",
                endpoints,
            });
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

/// The load balancer addresses this node answers.
pub fn lb_addresses(ports: &[SvcPort]) -> std::collections::BTreeSet<Ipv4Addr> {
    ports
        .iter()
        .flat_map(|p| p.lb_ips.iter().copied())
        .collect()
}

/// A service port for tests: web:http on 10.96.0.10:80, node port 30080,
/// `eps` endpoints 10.244.1.10.. on port 8080, ClientIP affinity of 60 s.
#[cfg(test)]
pub(crate) fn test_port(eps: usize, affinity: bool) -> SvcPort {
    SvcPort {
        key: "default/web:http".into(),
        proto: Proto::Tcp,
        cluster_ip: Ipv4Addr::new(10, 96, 0, 10),
        port: 80,
        node_port: Some(30080),
        external_ips: vec![],
        lb_ips: vec![],
        affinity: affinity.then_some(60),
        external_local: false,
        internal_local: false,
        endpoints: (0..eps)
            .map(|i| Ep {
                ip: Ipv4Addr::new(10, 244, 1, 10 + i as u8),
                port: 8080,
                local: false,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;

    #[test]
    fn ready_endpoints_by_port_name_and_local_flags() {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"type": "NodePort", "clusterIP": "10.96.0.10", "selector": {"app": "web"},
                "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080}],
                "externalTrafficPolicy": "Local"}
        }))
        .expect("service");
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": "web-1", "namespace": "default",
                "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["10.244.1.5"], "conditions": {"ready": true}, "nodeName": "n1"},
                {"addresses": ["10.244.2.5"], "conditions": {"ready": true}, "nodeName": "n2"},
                {"addresses": ["10.244.2.6"], "conditions": {"ready": false}, "nodeName": "n2"}
            ]
        }))
        .expect("slice");
        let services = [Arc::new(svc)];
        let slices = [Arc::new(slice)];
        let ports = build(&Inputs {
            node_name: "n1",
            services: &services,
            slices: &slices,
            nodes: &[],
        });
        assert_eq!(ports.len(), 1);
        let p = &ports[0];
        assert_eq!(p.key, "default/web:http");
        assert_eq!(p.node_port, Some(30080));
        assert_eq!(p.endpoints.len(), 2, "{:?}", p.endpoints);
        assert_eq!(p.internal_endpoints().len(), 2);
        let ext = p.external_endpoints();
        assert_eq!(ext.len(), 1);
        assert_eq!(ext[0].ip, Ipv4Addr::new(10, 244, 1, 5));
        assert_eq!(ext[0].port, 8080);
    }
}
