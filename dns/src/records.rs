//! What one Service (with its EndpointSlices) puts in the cluster zone,
//! and the name helpers the zone and the answers share.
//!
//! Names follow the Kubernetes DNS-based service discovery specification:
//! `<svc>.<ns>.svc.<domain>` (ClusterIP A/AAAA, or one per ready endpoint
//! for a headless service), `<host>.<svc>.<ns>.svc.<domain>` per headless
//! endpoint, `_<port>._<proto>.<svc>.<ns>.svc.<domain>` SRV for named ports,
//! PTR for service and endpoint addresses, CNAME for ExternalName services.
//! Pod names (`a-b-c-d.<ns>.pod.<domain>`) are computed per query, not kept.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use flotilla_objects::core::Service;
use flotilla_objects::discovery::EndpointSlice;
use hickory_proto::rr::Name;

/// The TXT record `dns-version.<domain>` carries (the specification's version).
pub const SCHEMA_VERSION: &str = "1.1.0";

/// An SRV record's data, without the name it hangs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Srv {
    pub port: u16,
    pub weight: u16,
    pub target: Name,
}

/// The records at one name. A node with nothing in it is an empty
/// non-terminal: the name exists (NODATA, not NXDOMAIN).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Node {
    pub a: Vec<Ipv4Addr>,
    pub aaaa: Vec<Ipv6Addr>,
    pub cname: Option<Name>,
    pub srv: Vec<Srv>,
    pub ptr: Vec<Name>,
    pub txt: Vec<String>,
}

fn push_unique<T: PartialEq + Clone>(to: &mut Vec<T>, from: &[T]) {
    for x in from {
        if !to.contains(x) {
            to.push(x.clone());
        }
    }
}

impl Node {
    /// No records: an empty non-terminal.
    pub fn is_empty(&self) -> bool {
        self.a.is_empty()
            && self.aaaa.is_empty()
            && self.cname.is_none()
            && self.srv.is_empty()
            && self.ptr.is_empty()
            && self.txt.is_empty()
    }

    /// Add `other`'s records (another service's at the same name).
    pub fn merge(&mut self, other: &Node) {
        push_unique(&mut self.a, &other.a);
        push_unique(&mut self.aaaa, &other.aaaa);
        if self.cname.is_none() {
            self.cname = other.cname.clone();
        }
        push_unique(&mut self.srv, &other.srv);
        push_unique(&mut self.ptr, &other.ptr);
        push_unique(&mut self.txt, &other.txt);
    }
}

/// The records one source (a service, or the zone's own) puts in the
/// zone, by key, with the empty ancestors of its names.
pub type Records = HashMap<String, Node>;

/// The lower-case key of a name: its labels joined by dots, no final dot.
pub fn key_of(name: &Name) -> String {
    let mut s = name.to_lowercase().to_ascii();
    if s.ends_with('.') {
        s.pop();
    }
    s
}

/// The reverse (PTR) name of an address, without the final dot.
pub fn reverse_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut s = String::with_capacity(72);
            for b in v6.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", b & 0xf, b >> 4));
            }
            s.push_str("ip6.arpa");
            s
        }
    }
}

/// An address as one DNS label: dots (or colons) become dashes.
pub fn ip_label(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => v6.to_string().replace(':', "-"),
    }
}

/// The address a dashed label stands for (`10-244-1-5`), if it is one.
pub fn parse_ip_label(label: &str) -> Option<IpAddr> {
    if label.contains(':') || label.contains('.') {
        return None;
    }
    if let Ok(v4) = label.replace('-', ".").parse::<Ipv4Addr>() {
        return Some(IpAddr::V4(v4));
    }
    label
        .replace('-', ":")
        .parse::<Ipv6Addr>()
        .ok()
        .map(IpAddr::V6)
}

fn fqdn(s: &str) -> Option<Name> {
    let mut n = Name::from_ascii(s).ok()?;
    n.set_fqdn(true);
    Some(n)
}

/// Collects one source's records.
struct Builder<'a> {
    domain: &'a str,
    nodes: Records,
}

impl Builder<'_> {
    fn node(&mut self, key: String) -> &mut Node {
        self.nodes.entry(key).or_default()
    }

    fn add_ip(&mut self, key: &str, ip: IpAddr) {
        let n = self.node(key.to_string());
        match ip {
            IpAddr::V4(v4) if !n.a.contains(&v4) => n.a.push(v4),
            IpAddr::V6(v6) if !n.aaaa.contains(&v6) => n.aaaa.push(v6),
            _ => {}
        }
    }

    fn add_ptr(&mut self, ip: IpAddr, target: &str) {
        if let Some(t) = fqdn(target) {
            let n = self.node(reverse_key(ip));
            if !n.ptr.contains(&t) {
                n.ptr.push(t);
            }
        }
    }

    fn service(&mut self, svc: &Service, slices: &[&EndpointSlice]) {
        let (ns, name) = (&svc.metadata.namespace, &svc.metadata.name);
        let base = format!("{name}.{ns}.svc.{}", self.domain).to_ascii_lowercase();
        if svc.spec.type_ == "ExternalName" {
            let target = fqdn(&svc.spec.external_name);
            self.node(base).cname = target;
            return;
        }
        let headless = svc.spec.cluster_ip == "None";
        if !headless {
            let ips: Vec<&String> = if svc.spec.cluster_ips.is_empty() {
                vec![&svc.spec.cluster_ip]
            } else {
                svc.spec.cluster_ips.iter().collect()
            };
            self.node(base.clone());
            for ip in ips.iter().filter_map(|s| s.parse::<IpAddr>().ok()) {
                self.add_ip(&base, ip);
                self.add_ptr(ip, &format!("{base}."));
            }
            let Some(target) = fqdn(&format!("{base}.")) else {
                return;
            };
            for p in svc.spec.ports.iter().filter(|p| !p.name.is_empty()) {
                let proto = proto_label(&p.protocol);
                let key = format!("_{}._{proto}.{base}", p.name.to_ascii_lowercase());
                self.node(key).srv.push(Srv {
                    port: p.port as u16,
                    weight: 100,
                    target: target.clone(),
                });
            }
            return;
        }
        // Headless: one record per ready endpoint address.
        self.node(base.clone());
        let all = svc.spec.publish_not_ready_addresses;
        for slice in slices {
            for ep in &slice.endpoints {
                if !(all || ep.conditions.is_ready()) {
                    continue;
                }
                for ip in ep.addresses.iter().filter_map(|s| s.parse::<IpAddr>().ok()) {
                    self.add_ip(&base, ip);
                    let host = match &ep.hostname {
                        Some(h) if !h.is_empty() => h.to_ascii_lowercase(),
                        _ => ip_label(ip),
                    };
                    let host_key = format!("{host}.{base}");
                    self.add_ip(&host_key, ip);
                    self.add_ptr(ip, &format!("{host_key}."));
                    let Some(target) = fqdn(&format!("{host_key}.")) else {
                        continue;
                    };
                    for p in &slice.ports {
                        let (Some(pn), Some(port)) = (&p.name, p.port) else {
                            continue;
                        };
                        if pn.is_empty() {
                            continue;
                        }
                        let proto = proto_label(p.protocol.as_deref().unwrap_or("TCP"));
                        let key = format!("_{}._{proto}.{base}", pn.to_ascii_lowercase());
                        let srv = Srv {
                            port: port as u16,
                            weight: 100,
                            target: target.clone(),
                        };
                        let n = self.node(key);
                        if !n.srv.contains(&srv) {
                            n.srv.push(srv);
                        }
                    }
                }
            }
        }
    }

    /// Every ancestor of a name, up to the zone's apex, exists.
    fn finish(mut self) -> Records {
        let suffix = format!(".{}", self.domain);
        let mut missing = Vec::new();
        for key in self.nodes.keys() {
            let Some(mut rest) = key.strip_suffix(&suffix) else {
                continue;
            };
            while let Some((_, parent)) = rest.split_once('.') {
                let k = format!("{parent}{suffix}");
                if !self.nodes.contains_key(&k) {
                    missing.push(k);
                }
                rest = parent;
            }
        }
        for k in missing {
            self.nodes.entry(k).or_default();
        }
        self.nodes
    }
}

fn proto_label(p: &str) -> String {
    if p.is_empty() {
        "tcp".to_string()
    } else {
        p.to_ascii_lowercase()
    }
}

/// The records of `svc` with its endpoint `slices`, in the zone `domain`
/// (lower case, no final dot).
pub fn service_records(domain: &str, svc: &Service, slices: &[&EndpointSlice]) -> Records {
    let mut b = Builder {
        domain,
        nodes: HashMap::new(),
    };
    b.service(svc, slices);
    b.finish()
}

/// The zone's own records: the apex, the name server's address
/// (`ns.dns.<domain>`, the kube-dns ClusterIP), `dns-version`, and the
/// `svc` and `pod` subtrees.
pub fn zone_records(domain: &str, dns_ip: IpAddr) -> Records {
    let mut b = Builder {
        domain,
        nodes: HashMap::new(),
    };
    b.node(domain.to_string());
    b.add_ip(&format!("ns.dns.{domain}"), dns_ip);
    b.node(format!("dns-version.{domain}"))
        .txt
        .push(SCHEMA_VERSION.to_string());
    b.node(format!("pod.{domain}"));
    b.node(format!("svc.{domain}"));
    b.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_labels_round_trip() {
        for ip in ["10.244.1.5", "fd00::1", "2001:db8::ff:1"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(parse_ip_label(&ip_label(ip)), Some(ip));
        }
        assert_eq!(parse_ip_label("web"), None);
        assert_eq!(parse_ip_label("10-244-1"), None);
    }

    #[test]
    fn reverse_names() {
        assert_eq!(
            reverse_key("10.96.0.10".parse().unwrap()),
            "10.0.96.10.in-addr.arpa"
        );
        let v6 = reverse_key("2001:db8::1".parse().unwrap());
        assert!(v6.starts_with("1.0.0.0.0.0.0.0"), "{v6}");
        assert!(v6.ends_with("8.b.d.0.1.0.0.2.ip6.arpa"), "{v6}");
    }

    #[test]
    fn a_service_brings_its_empty_ancestors() {
        let mut s = Service::default();
        s.metadata.namespace = "shop".into();
        s.metadata.name = "Web".into();
        s.spec.cluster_ip = "10.96.0.7".into();
        let r = service_records("cluster.local", &s, &[]);
        assert_eq!(
            r["web.shop.svc.cluster.local"].a,
            vec![Ipv4Addr::new(10, 96, 0, 7)]
        );
        assert!(r["shop.svc.cluster.local"].is_empty());
        assert!(r["svc.cluster.local"].is_empty());
        assert!(r.contains_key("7.0.96.10.in-addr.arpa"));
        assert!(!r.contains_key("cluster.local"));
    }
}
