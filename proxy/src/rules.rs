//! The rules each mode wants, as chains of rule text (no iptables run
//! here). Layout, in the nat table unless said otherwise:
//!
//! - `FLOTILLA-SERVICES` (jumped to from PREROUTING and OUTPUT): one rule
//!   per cluster IP, external IP and load balancer address and port, then
//!   `--dst-type LOCAL -j FLOTILLA-NODEPORTS`.
//! - `FLOTILLA-NODEPORTS`: one rule per node port.
//! - `FLOTILLA-SVC-<hash>`: a service port's endpoints, chosen with
//!   `statistic --mode random` probabilities (1/n, 1/(n-1), ..., 1), after
//!   `recent --rcheck` rules when ClientIP affinity is on.
//! - `FLOTILLA-SVL-<hash>`: the same over the node's own endpoints (traffic
//!   policy Local).
//! - `FLOTILLA-EXT-<hash>`: traffic from outside: masquerade mark (policy
//!   Cluster), then SVC or SVL.
//! - `FLOTILLA-SEP-<hash>`: one endpoint: hairpin mark, affinity `--set`,
//!   DNAT.
//! - `FLOTILLA-MARK-MASQ` marks 0x4000; `FLOTILLA-POSTROUTING` (from
//!   POSTROUTING) masquerades marked packets.
//! - filter `FLOTILLA-SERVICES` (from INPUT, FORWARD, OUTPUT, new
//!   connections only): REJECT for every address and port without
//!   endpoints, so that clients are refused at once.
//!
//! In userspace mode the nat `FLOTILLA-SERVICES` REDIRECTs each service
//! address and port to the proxy's listener for it instead.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use crate::lb::fnv64;
use crate::model::{Ep, Proto, SvcPort};

pub const SERVICES: &str = "FLOTILLA-SERVICES";
pub const NODEPORTS: &str = "FLOTILLA-NODEPORTS";
pub const MARK_MASQ: &str = "FLOTILLA-MARK-MASQ";
pub const POSTROUTING: &str = "FLOTILLA-POSTROUTING";
/// Every chain the proxy writes starts with this.
pub const PREFIX: &str = "FLOTILLA-";
pub const MASQ_MARK: &str = "0x4000";

/// Chains by table ("nat", "filter"), each chain's rules (without
/// `-A CHAIN`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tables {
    pub tables: BTreeMap<&'static str, BTreeMap<String, Vec<String>>>,
}

impl Tables {
    fn chain(&mut self, table: &'static str, name: &str) -> &mut Vec<String> {
        self.tables
            .entry(table)
            .or_default()
            .entry(name.to_string())
            .or_default()
    }

    fn push(&mut self, table: &'static str, chain: &str, rule: String) {
        self.chain(table, chain).push(rule);
    }

    /// Number of rules over all chains.
    pub fn rule_count(&self) -> usize {
        self.tables
            .values()
            .flat_map(|t| t.values())
            .map(Vec::len)
            .sum()
    }
}

/// A chain name for `kind` and `key`: FLOTILLA-KIND-<12 hex digits>.
pub fn chain_name(kind: &str, key: &str) -> String {
    format!(
        "{PREFIX}{kind}-{:012X}",
        fnv64(&[key.as_bytes()]) & 0xffff_ffff_ffff
    )
}

fn sep_name(p: &SvcPort, e: &Ep) -> String {
    chain_name(
        "SEP",
        &format!("{}/{}:{}:{}", p.key, p.proto.as_str(), e.ip, e.port),
    )
}

fn comment(p: &SvcPort) -> String {
    format!("-m comment --comment \"{}\"", p.key.replace('"', ""))
}

fn base(t: &mut Tables) {
    t.chain("nat", SERVICES);
    t.chain("nat", NODEPORTS);
    t.push("nat", MARK_MASQ, format!("-j MARK --or-mark {MASQ_MARK}"));
    t.push(
        "nat",
        POSTROUTING,
        format!("-m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN"),
    );
    t.push(
        "nat",
        POSTROUTING,
        format!("-j MARK --xor-mark {MASQ_MARK}"),
    );
    t.push("nat", POSTROUTING, "-j MASQUERADE".to_string());
    t.chain("filter", SERVICES);
}

fn balance(t: &mut Tables, chain: &str, p: &SvcPort, eps: &[&Ep]) {
    let c = comment(p);
    if let Some(secs) = p.affinity {
        for e in eps {
            let sep = sep_name(p, e);
            t.push(
                "nat",
                chain,
                format!("{c} -m recent --name {sep} --mask 255.255.255.255 --rsource --rcheck --seconds {secs} --reap -j {sep}"),
            );
        }
    }
    let n = eps.len();
    for (i, e) in eps.iter().enumerate() {
        let sep = sep_name(p, e);
        if i + 1 < n {
            let prob = 1.0 / (n - i) as f64;
            t.push(
                "nat",
                chain,
                format!("{c} -m statistic --mode random --probability {prob:.10} -j {sep}"),
            );
        } else {
            t.push("nat", chain, format!("{c} -j {sep}"));
        }
    }
}

fn match_dst(ip: Ipv4Addr, proto: Proto, port: u16) -> String {
    let pr = proto.as_str();
    format!("-d {ip}/32 -p {pr} -m {pr} --dport {port}")
}

fn reject(t: &mut Tables, p: &SvcPort, m: String) {
    let c = comment(p);
    t.push(
        "filter",
        SERVICES,
        format!("{c} {m} -j REJECT --reject-with icmp-port-unreachable"),
    );
}

/// The rules of iptables mode. `cluster_cidr`: traffic to a cluster IP
/// from outside it is masqueraded (None: none is).
pub fn iptables_mode(ports: &[SvcPort], cluster_cidr: Option<&str>) -> Tables {
    let mut t = Tables::default();
    base(&mut t);
    for p in ports {
        let c = comment(p);
        let pr = p.proto.as_str();
        let svc = chain_name("SVC", &format!("{}/{pr}", p.key));
        let svl = chain_name("SVL", &format!("{}/{pr}", p.key));
        let ext = chain_name("EXT", &format!("{}/{pr}", p.key));
        let all: Vec<&Ep> = p.endpoints.iter().collect();
        let local: Vec<&Ep> = p.endpoints.iter().filter(|e| e.local).collect();
        let internal = p.internal_endpoints();
        let external = p.external_endpoints();
        let (use_svc, use_svl) = (p.balanced_over_all(), p.balanced_over_local());
        if use_svc {
            balance(&mut t, &svc, p, &all);
        }
        if use_svl {
            balance(&mut t, &svl, p, &local);
        }
        for e in &p.endpoints {
            let used = (use_svc) || (use_svl && e.local);
            if !used {
                continue;
            }
            let sep = sep_name(p, e);
            t.push("nat", &sep, format!("{c} -s {}/32 -j {MARK_MASQ}", e.ip));
            let recent = p
                .affinity
                .map(|_| format!(" -m recent --name {sep} --mask 255.255.255.255 --rsource --set"))
                .unwrap_or_default();
            t.push(
                "nat",
                &sep,
                format!(
                    "{c} -p {pr} -m {pr}{recent} -j DNAT --to-destination {}:{}",
                    e.ip, e.port
                ),
            );
        }
        // Cluster IP.
        let m = match_dst(p.cluster_ip, p.proto, p.port);
        if internal.is_empty() {
            reject(&mut t, p, m);
        } else {
            if let Some(cidr) = cluster_cidr {
                t.push(
                    "nat",
                    SERVICES,
                    format!("{c} ! -s {cidr} {m} -j {MARK_MASQ}"),
                );
            }
            let to = if p.internal_local { &svl } else { &svc };
            t.push("nat", SERVICES, format!("{c} {m} -j {to}"));
        }
        // From outside: external IPs, load balancer addresses, node port.
        let has_outside = !p.external_ips.is_empty() || p.node_port.is_some();
        if has_outside && !external.is_empty() {
            if !p.external_local {
                t.push("nat", &ext, format!("{c} -j {MARK_MASQ}"));
            }
            let to = if p.external_local { &svl } else { &svc };
            t.push("nat", &ext, format!("{c} -j {to}"));
        }
        for ip in &p.external_ips {
            let m = match_dst(*ip, p.proto, p.port);
            if external.is_empty() {
                reject(&mut t, p, m);
            } else {
                t.push("nat", SERVICES, format!("{c} {m} -j {ext}"));
            }
        }
        if let Some(np) = p.node_port {
            if external.is_empty() {
                reject(
                    &mut t,
                    p,
                    format!("-m addrtype --dst-type LOCAL -p {pr} -m {pr} --dport {np}"),
                );
            } else {
                t.push(
                    "nat",
                    NODEPORTS,
                    format!("{c} -p {pr} -m {pr} --dport {np} -j {ext}"),
                );
            }
        }
    }
    t.push(
        "nat",
        SERVICES,
        format!("-m comment --comment \"node ports\" -m addrtype --dst-type LOCAL -j {NODEPORTS}"),
    );
    t
}

/// The rules of userspace mode: each service address and port is
/// redirected to `listeners[key]` (the proxy's port for it); node ports
/// are listened on directly. Addresses without endpoints are rejected.
pub fn userspace_mode(ports: &[SvcPort], listeners: &HashMap<String, u16>) -> Tables {
    let mut t = Tables::default();
    base(&mut t);
    for p in ports {
        let c = comment(p);
        let Some(lport) = listeners.get(&p.key) else {
            continue;
        };
        let mut dsts = vec![(p.cluster_ip, p.internal_endpoints().is_empty())];
        dsts.extend(
            p.external_ips
                .iter()
                .map(|ip| (*ip, p.external_endpoints().is_empty())),
        );
        for (ip, empty) in dsts {
            let m = match_dst(ip, p.proto, p.port);
            if empty {
                reject(&mut t, p, m);
            } else {
                t.push(
                    "nat",
                    SERVICES,
                    format!("{c} {m} -j REDIRECT --to-ports {lport}"),
                );
            }
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::test_port as port;

    #[test]
    fn probabilities_split_evenly_and_affinity_checks_first() {
        let t = iptables_mode(&[port(3, true)], Some("10.244.0.0/16"));
        let nat = &t.tables["nat"];
        let svc = nat
            .iter()
            .find(|(k, _)| k.starts_with("FLOTILLA-SVC-"))
            .expect("svc chain")
            .1;
        assert_eq!(svc.len(), 6, "{svc:#?}");
        assert!(svc[..3].iter().all(|r| r.contains("--rcheck --seconds 60")));
        assert!(svc[3].contains("--probability 0.3333333333"));
        assert!(svc[4].contains("--probability 0.5000000000"));
        assert!(!svc[5].contains("statistic"));
        let seps = nat
            .keys()
            .filter(|k| k.starts_with("FLOTILLA-SEP-"))
            .count();
        assert_eq!(seps, 3);
        assert!(nat[NODEPORTS][0].contains("--dport 30080"));
        assert!(t.tables["filter"][SERVICES].is_empty());
    }

    #[test]
    fn no_endpoints_rejects_in_filter_and_writes_no_nat_rule() {
        let t = iptables_mode(&[port(0, false)], None);
        let f = &t.tables["filter"][SERVICES];
        assert_eq!(f.len(), 2, "{f:#?}");
        assert!(f[0].contains("-d 10.96.0.10/32") && f[0].contains("REJECT"));
        assert!(f[1].contains("--dport 30080"));
        assert_eq!(
            t.tables["nat"][SERVICES].len(),
            1,
            "only the node ports jump"
        );
        assert!(t.tables["nat"][NODEPORTS].is_empty());
    }

    #[test]
    fn chain_names_fit_iptables_limit() {
        let n = chain_name("SEP", "a-very-long-namespace/a-very-long-name:port");
        assert!(n.len() <= 28, "{n}");
    }
}
