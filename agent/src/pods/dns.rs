//! A pod's /etc/resolv.conf as kubelet makes it from its dnsPolicy and
//! dnsConfig, handed to the runtime as the sandbox's DNS config (containerd
//! writes the file).

use std::net::IpAddr;

use flotilla_objects::core::Pod;
use k8s_cri::v1 as cri;

/// The most name servers a resolv.conf honours.
const MAX_NAMESERVERS: usize = 3;
/// The most search domains kubelet passes.
const MAX_SEARCHES: usize = 32;

/// The node's DNS settings: kubelet's --cluster-dns and --cluster-domain,
/// and the host's resolv.conf (for dnsPolicy Default).
#[derive(Debug, Clone, Default)]
pub struct NodeDns {
    pub cluster_dns: Vec<IpAddr>,
    pub cluster_domain: String,
    pub host_resolv_conf: String,
}

fn host_config(text: &str) -> cri::DnsConfig {
    let mut c = cri::DnsConfig::default();
    for line in text.lines() {
        let mut w = line.split_whitespace();
        match w.next() {
            Some("nameserver") => c.servers.extend(w.next().map(str::to_string)),
            Some("search") | Some("domain") => {
                c.searches = w.map(str::to_string).collect();
            }
            Some("options") => c.options.extend(w.map(str::to_string)),
            _ => {}
        }
    }
    c
}

fn push_unique(list: &mut Vec<String>, v: String) {
    if !list.contains(&v) {
        list.push(v);
    }
}

/// The pod's DNS configuration.
pub fn dns_config(pod: &Pod, node: &NodeDns) -> cri::DnsConfig {
    let spec = &pod.spec;
    let host = || host_config(&node.host_resolv_conf);
    let cluster = match spec.dns_policy.as_str() {
        "None" => false,
        "Default" => false,
        "ClusterFirstWithHostNet" => true,
        // ClusterFirst (the default): a host-network pod uses the host's.
        _ => !spec.host_network,
    };
    let mut c = match spec.dns_policy.as_str() {
        "None" => cri::DnsConfig::default(),
        _ if cluster && !node.cluster_dns.is_empty() => {
            let d = node.cluster_domain.trim_end_matches('.');
            let ns = &pod.metadata.namespace;
            let mut searches = vec![format!("{ns}.svc.{d}"), format!("svc.{d}"), d.to_string()];
            for s in host().searches {
                push_unique(&mut searches, s);
            }
            cri::DnsConfig {
                servers: node.cluster_dns.iter().map(|ip| ip.to_string()).collect(),
                searches,
                options: vec!["ndots:5".to_string()],
            }
        }
        _ => {
            if cluster {
                tracing::warn!(pod = %pod.metadata.name, "no --cluster-dns: the pod uses the host's DNS");
            }
            host()
        }
    };
    if let Some(extra) = &spec.dns_config {
        for s in &extra.nameservers {
            push_unique(&mut c.servers, s.clone());
        }
        for s in &extra.searches {
            push_unique(&mut c.searches, s.clone());
        }
        for o in &extra.options {
            c.options
                .retain(|x| x.split(':').next() != Some(o.name.as_str()));
            c.options.push(match &o.value {
                Some(v) => format!("{}:{v}", o.name),
                None => o.name.clone(),
            });
        }
    }
    c.servers.truncate(MAX_NAMESERVERS);
    c.searches.truncate(MAX_SEARCHES);
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_objects::core::{PodDnsConfig, PodDnsConfigOption};

    fn node() -> NodeDns {
        NodeDns {
            cluster_dns: vec!["10.96.0.10".parse().unwrap()],
            cluster_domain: "cluster.local".into(),
            host_resolv_conf: "nameserver 192.0.2.53\nsearch corp.example\noptions edns0\n".into(),
        }
    }

    fn pod(policy: &str, host_network: bool) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = "p".into();
        p.metadata.namespace = "shop".into();
        p.spec.dns_policy = policy.into();
        p.spec.host_network = host_network;
        p
    }

    #[test]
    fn cluster_first_uses_the_cluster_dns_and_search_path() {
        let c = dns_config(&pod("ClusterFirst", false), &node());
        assert_eq!(c.servers, vec!["10.96.0.10"]);
        assert_eq!(
            c.searches,
            vec![
                "shop.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
                "corp.example"
            ]
        );
        assert_eq!(c.options, vec!["ndots:5"]);
    }

    #[test]
    fn host_network_pods_use_the_host_unless_with_host_net() {
        let c = dns_config(&pod("ClusterFirst", true), &node());
        assert_eq!(c.servers, vec!["192.0.2.53"]);
        let c = dns_config(&pod("ClusterFirstWithHostNet", true), &node());
        assert_eq!(c.servers, vec!["10.96.0.10"]);
        let c = dns_config(&pod("Default", false), &node());
        assert_eq!(c.servers, vec!["192.0.2.53"]);
        assert_eq!(c.options, vec!["edns0"]);
    }

    #[test]
    fn none_takes_only_the_dns_config() {
        let mut p = pod("None", false);
        p.spec.dns_config = Some(PodDnsConfig {
            nameservers: vec!["1.2.3.4".into()],
            searches: vec!["a.example".into()],
            options: vec![PodDnsConfigOption {
                name: "ndots".into(),
                value: Some("2".into()),
            }],
        });
        let c = dns_config(&p, &node());
        assert_eq!(c.servers, vec!["1.2.3.4"]);
        assert_eq!(c.searches, vec!["a.example"]);
        assert_eq!(c.options, vec!["ndots:2"]);
        // Merged into ClusterFirst: options by name override.
        p.spec.dns_policy = "ClusterFirst".into();
        let c = dns_config(&p, &node());
        assert_eq!(c.servers, vec!["10.96.0.10", "1.2.3.4"]);
        assert_eq!(c.options, vec!["ndots:2"]);
    }
}
