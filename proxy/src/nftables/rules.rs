//! The ruleset of nftables mode, as data (no `nft` run here): the chains
//! of Flotilla's own table `ip flotilla` and the elements of its maps.
//!
//! Where iptables mode matches every service address with a rule of its
//! own in one long chain (so the kernel and `iptables-restore` walk, and
//! rewrite, all of them), this mode looks service addresses up in verdict
//! maps, as kube-proxy's nftables mode does:
//!
//! - `services` (jumped to from the nat prerouting and output hooks):
//!   `ip daddr . meta l4proto . th dport vmap @service-ips` (cluster,
//!   external and load balancer addresses), then, for local destinations,
//!   `meta l4proto . th dport vmap @service-nodeports`.
//! - Plain service ports (no affinity, traffic policies Cluster, at most
//!   [`SHARED_MAX`] endpoints), nearly all of them, have no chain of their
//!   own: their addresses lead to shared chains for their number of
//!   endpoints N, `lb-N` (cluster IPs: masquerade mark from outside the
//!   pod range), `lbx-N` (external and load balancer addresses) and
//!   `lbn-N` (node ports: masquerade mark), whose one rule per protocol
//!   DNATs by a map: `dnat ip to ip daddr . tcp dport . numgen random mod
//!   N map @endpoints-tcp`, where `endpoints-tcp` holds each address and
//!   port's endpoints under indices 0..N. An endpoint's change is a
//!   change of elements, and the table has a hundred chains, not one per
//!   service (`nft` reads every chain of the table on each run: at 10,000
//!   services that alone took it 30-40 ms).
//! - Other ports get `svc-<hash>-<key>`: the masquerade mark for the
//!   cluster IP from outside the pod range, then a DNAT rule per endpoint
//!   (`numgen random mod K == 0 dnat to ...`, K = n, n-1, .. 1);
//!   `svl-` is the same over the node's own endpoints (traffic policy
//!   Local); `ext-` takes traffic from outside (node ports, external and
//!   load balancer addresses): masquerade mark unless the policy is Local,
//!   then `svc-` or `svl-`.
//! - ClientIP affinity needs to know which endpoint a client had: then each
//!   endpoint has a chain `sep-` and a set `aff-` of clients with a timeout
//!   (`update @aff-... { ip saddr }`), checked before the random choice.
//! - Hairpin (a pod reaching its own service) is one lookup in
//!   `nat-postrouting`: `ct status dnat ip saddr . ip daddr @hairpin`
//!   marks the packet for masquerade, where `hairpin` holds each
//!   endpoint's `ip . ip`.
//! - Addresses and node ports without endpoints are in
//!   `no-endpoint-services` and `no-endpoint-nodeports`, looked up by the
//!   filter hooks for new connections, whose verdict rejects.
//!
//! A change of one endpoint then rewrites a few elements (or one small
//! chain), whatever the number of services.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;

use crate::lb::fnv64;
use crate::model::{Ep, SvcPort};

/// The table's family and name.
pub const TABLE: &str = "ip flotilla";
/// Maps and sets with fixed declarations, refilled on every full sync.
pub const SERVICE_IPS: &str = "service-ips";
pub const SERVICE_NODEPORTS: &str = "service-nodeports";
pub const NO_EP_IPS: &str = "no-endpoint-services";
pub const NO_EP_NODEPORTS: &str = "no-endpoint-nodeports";
pub const HAIRPIN: &str = "hairpin";
/// Endpoints by address, port and index, per protocol (`tcp dport` in the
/// key: nft 1.0.6 cannot read back a map typed by `th dport` that a rule
/// with a protocol match looks up, and then refuses every later run).
pub const ENDPOINTS: [&str; 2] = ["endpoints-tcp", "endpoints-udp"];
/// Endpoints by node port and index, per protocol.
pub const NODEPORT_ENDPOINTS: [&str; 2] = ["nodeport-endpoints-tcp", "nodeport-endpoints-udp"];

/// The `endpoints` maps' index of a protocol.
fn proto_index(p: &SvcPort) -> usize {
    match p.proto {
        crate::model::Proto::Tcp => 0,
        crate::model::Proto::Udp => 1,
    }
}
/// Plain service ports (no affinity, Cluster traffic policies) with up to
/// this many endpoints balance through the shared chains and the
/// `endpoints` maps; others get chains of their own.
pub const SHARED_MAX: usize = 32;
/// Fixed chains (besides the hooked ones).
pub const SERVICES: &str = "services";
pub const FILTER_SERVICES: &str = "filter-services";
pub const MARK_MASQ: &str = "mark-for-masquerade";
pub const MASQUERADING: &str = "masquerading";
pub const REJECT: &str = "reject-chain";
pub const MASQ_MARK: &str = "0x4000";

/// The maps and sets whose elements a sync writes, with their declarations.
pub const ELEMENT_SETS: [(&str, &str); 9] = [
    (
        SERVICE_IPS,
        "map service-ips { type ipv4_addr . inet_proto . inet_service : verdict; }",
    ),
    (
        SERVICE_NODEPORTS,
        "map service-nodeports { type inet_proto . inet_service : verdict; }",
    ),
    (
        NO_EP_IPS,
        "map no-endpoint-services { type ipv4_addr . inet_proto . inet_service : verdict; }",
    ),
    (
        NO_EP_NODEPORTS,
        "map no-endpoint-nodeports { type inet_proto . inet_service : verdict; }",
    ),
    (HAIRPIN, "set hairpin { type ipv4_addr . ipv4_addr; }"),
    // The key's `numgen random mod 2` only gives the index's type: rules
    // of every modulus look the same maps up.
    (
        ENDPOINTS[0],
        "map endpoints-tcp { typeof ip daddr . tcp dport . numgen random mod 2 : ip daddr . tcp dport; }",
    ),
    (
        ENDPOINTS[1],
        "map endpoints-udp { typeof ip daddr . udp dport . numgen random mod 2 : ip daddr . udp dport; }",
    ),
    (
        NODEPORT_ENDPOINTS[0],
        "map nodeport-endpoints-tcp { typeof tcp dport . numgen random mod 2 : ip daddr . tcp dport; }",
    ),
    (
        NODEPORT_ENDPOINTS[1],
        "map nodeport-endpoints-udp { typeof udp dport . numgen random mod 2 : ip daddr . udp dport; }",
    ),
];

/// The hooked chains: (name, declaration, rules). Their names do not
/// follow the per-service patterns, so they are never taken for stale.
pub const BASE_CHAINS: [(&str, &str, &str); 6] = [
    (
        "nat-prerouting",
        "type nat hook prerouting priority dstnat; policy accept;",
        "jump services",
    ),
    (
        "nat-output",
        "type nat hook output priority -100; policy accept;",
        "jump services",
    ),
    (
        "nat-postrouting",
        "type nat hook postrouting priority srcnat; policy accept;",
        "jump masquerading",
    ),
    (
        "filter-input",
        "type filter hook input priority -1; policy accept;",
        "ct state new jump filter-services",
    ),
    (
        "filter-forward",
        "type filter hook forward priority -1; policy accept;",
        "ct state new jump filter-services",
    ),
    (
        "filter-output",
        "type filter hook output priority -1; policy accept;",
        "ct state new jump filter-services",
    ),
];

/// Chains, elements and sets: the fixed part of the table, one service
/// port's share of it, or (from [`Ruleset::flat`]) all of it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Part {
    /// Regular chains and their rules.
    pub chains: BTreeMap<String, Vec<String>>,
    /// Elements of each of [`ELEMENT_SETS`]: key -> value ("" in a set).
    pub elements: BTreeMap<&'static str, BTreeMap<String, String>>,
    /// Affinity sets: name -> timeout in seconds.
    pub affinity_sets: BTreeMap<String, u32>,
}

impl Part {
    fn push(&mut self, chain: &str, rule: String) {
        self.chains.entry(chain.to_string()).or_default().push(rule);
    }

    fn element(&mut self, set: &'static str, key: String, value: String) {
        self.elements.entry(set).or_default().insert(key, value);
    }

    /// `e`'s element of the hairpin set (`ip . ip`).
    fn hairpin(&mut self, e: &Ep) {
        self.element(HAIRPIN, format!("{} . {}", e.ip, e.ip), String::new());
    }

    /// Add `other`'s chains and affinity sets (not its elements).
    pub fn merge_chains(&mut self, other: &Part) {
        for (c, rules) in &other.chains {
            self.chains.insert(c.clone(), rules.clone());
        }
        for (n, t) in &other.affinity_sets {
            self.affinity_sets.insert(n.clone(), *t);
        }
    }

    /// Number of rules over all chains, and elements over all maps.
    pub fn size(&self) -> (usize, usize) {
        (
            self.chains.values().map(Vec::len).sum(),
            self.elements.values().map(BTreeMap::len).sum(),
        )
    }
}

/// The table's wanted contents (besides [`BASE_CHAINS`] and the
/// declarations of [`ELEMENT_SETS`], which never change): a fixed part and
/// one part per service port, shared ([`Arc`]) with the [`Renderer`] that
/// made them, so that a writer can tell the ports that did not change by
/// pointer.
#[derive(Clone, Debug, Default)]
pub struct Ruleset {
    pub fixed: Arc<Part>,
    /// By "namespace/name:port/protocol".
    pub ports: BTreeMap<String, Arc<Part>>,
}

impl Ruleset {
    /// Everything in one [`Part`]. Two ports may claim the same element
    /// (two services with one external IP and port): the first port by
    /// key has it, as the first rule would in iptables mode.
    pub fn flat(&self) -> Part {
        let mut out = (*self.fixed).clone();
        for part in self.ports.values() {
            out.merge_chains(part);
            for (set, items) in &part.elements {
                let into = out.elements.entry(set).or_default();
                for (k, v) in items {
                    into.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
        }
        out
    }

    /// Number of rules over all chains, and elements over all maps.
    pub fn size(&self) -> (usize, usize) {
        self.flat().size()
    }
}

/// Renders [`Ruleset`]s, keeping each service port's part until the port
/// changes: a sync after one endpoint's change renders one port, not all.
#[derive(Default)]
pub struct Renderer {
    cidr: Option<String>,
    fixed: Option<Arc<Part>>,
    /// By port key: the port as last rendered, its part, and the render
    /// that last saw it.
    cache: HashMap<String, (SvcPort, Arc<Part>, u64)>,
    generation: u64,
}

impl Renderer {
    /// The ruleset of nftables mode for `ports`. `cluster_cidr`: traffic
    /// to a cluster IP from outside it is masqueraded (None: none is).
    pub fn render(&mut self, ports: &[SvcPort], cluster_cidr: Option<&str>) -> Ruleset {
        if self.cidr.as_deref() != cluster_cidr {
            self.cache.clear();
            self.fixed = None;
            self.cidr = cluster_cidr.map(str::to_string);
        }
        let fixed = self
            .fixed
            .get_or_insert_with(|| Arc::new(fixed_part(cluster_cidr)))
            .clone();
        self.generation += 1;
        let generation = self.generation;
        let mut out = BTreeMap::new();
        for p in ports {
            let pk = port_key(p);
            let part = match self.cache.get_mut(&pk) {
                Some((old, part, seen)) => {
                    if old != p {
                        *old = p.clone();
                        *part = Arc::new(port_part(p, cluster_cidr));
                    }
                    *seen = generation;
                    part.clone()
                }
                None => {
                    let part = Arc::new(port_part(p, cluster_cidr));
                    self.cache
                        .insert(pk.clone(), (p.clone(), part.clone(), generation));
                    part
                }
            };
            out.insert(pk, part);
        }
        self.cache.retain(|_, (_, _, seen)| *seen == generation);
        Ruleset { fixed, ports: out }
    }
}

/// Whether `name` is a chain or set this module names after services or
/// endpoint counts (the only ones a full sync may delete as stale).
pub fn is_generated(name: &str) -> bool {
    [
        "svc-", "svl-", "ext-", "sep-", "aff-", "lb-", "lbx-", "lbn-",
    ]
    .iter()
    .any(|p| name.starts_with(p))
}

/// `kind-<8 hex digits>-<readable key>`: unique by the hash of `key`,
/// readable in `nft list`, within nft's identifier syntax and length.
pub fn name(kind: &str, key: &str) -> String {
    let h = fnv64(&[kind.as_bytes(), key.as_bytes()]) & 0xffff_ffff;
    let readable: String = key
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '/' | '.' | '_' | '-' => c,
            _ => '/',
        })
        .take(160)
        .collect();
    format!("{kind}-{h:08X}-{readable}")
}

fn port_key(p: &SvcPort) -> String {
    format!("{}/{}", p.key, p.proto.as_str())
}

fn ep_key(p: &SvcPort, e: &Ep, timeout: u32) -> String {
    format!("{}/{}:{}/{timeout}", port_key(p), e.ip, e.port)
}

/// `numgen random mod K == 0 ` for the `i`th of `n` choices: each rule
/// draws its own number, so that the ith is taken with probability
/// 1/(n-i) of the connections that reach it, as iptables' `statistic`
/// rules do; the last takes the rest. (One rule with `numgen ... map { }`
/// would be shorter, but every such anonymous map is a set of the table's,
/// and the kernel names and finds sets by walking the table's list of
/// them: at 10,000 services a full sync took 10.7 s against 0.7 s.)
fn pick(i: usize, n: usize) -> String {
    if i + 1 < n {
        format!("numgen random mod {} == 0 ", n - i)
    } else {
        String::new()
    }
}

/// Rules that send a connection to one of `eps` (never empty).
fn balance(r: &mut Part, chain: &str, p: &SvcPort, eps: &[&Ep]) {
    let pr = p.proto.as_str();
    let n = eps.len();
    let Some(secs) = p.affinity else {
        for (i, e) in eps.iter().enumerate() {
            let pick = pick(i, n);
            r.push(
                chain,
                format!("meta l4proto {pr} {pick}dnat to {}:{}", e.ip, e.port),
            );
        }
        return;
    };
    // Affinity: a chain and a client set per endpoint; known clients first.
    let mut seps = Vec::new();
    for e in eps {
        let k = ep_key(p, e, secs);
        let (sep, aff) = (name("sep", &k), name("aff", &k));
        r.push(chain, format!("ip saddr @{aff} goto {sep}"));
        // An endpoint in both the svc and the svl chain has one sep chain.
        if !r.chains.contains_key(&sep) {
            r.push(
                &sep,
                format!(
                    "update @{aff} {{ ip saddr }} meta l4proto {pr} dnat to {}:{}",
                    e.ip, e.port
                ),
            );
        }
        r.affinity_sets.insert(aff, secs);
        seps.push(sep);
    }
    for (i, sep) in seps.iter().enumerate() {
        r.push(chain, format!("{}goto {sep}", pick(i, n)));
    }
}

fn addr_key(ip: Ipv4Addr, p: &SvcPort) -> String {
    format!("{ip} . {} . {}", p.proto.as_str(), p.port)
}

/// The shared balancing chains for `n` endpoints: `lb-N` for cluster IPs,
/// `lbx-N` for external and load balancer addresses, `lbn-N` for node
/// ports. Each picks index `numgen random mod N` of the service address's
/// endpoints in a map.
fn shared_chains(r: &mut Part, n: usize, cluster_cidr: Option<&str>) {
    let (lb, lbx, lbn) = (format!("lb-{n}"), format!("lbx-{n}"), format!("lbn-{n}"));
    if let Some(cidr) = cluster_cidr {
        r.push(&lb, format!("ip saddr != {cidr} jump {MARK_MASQ}"));
    }
    r.push(&lbx, format!("jump {MARK_MASQ}"));
    r.push(&lbn, format!("jump {MARK_MASQ}"));
    for (i, pr) in ["tcp", "udp"].into_iter().enumerate() {
        let (eps, np_eps) = (ENDPOINTS[i], NODEPORT_ENDPOINTS[i]);
        let by_addr = format!(
            "meta l4proto {pr} dnat ip to ip daddr . {pr} dport . numgen random mod {n} map @{eps}"
        );
        r.push(&lb, by_addr.clone());
        r.push(&lbx, by_addr);
        r.push(
            &lbn,
            format!(
                "meta l4proto {pr} dnat ip to {pr} dport . numgen random mod {n} map @{np_eps}"
            ),
        );
    }
}

fn fixed_part(cluster_cidr: Option<&str>) -> Part {
    let mut r = Part::default();
    for n in 1..=SHARED_MAX {
        shared_chains(&mut r, n, cluster_cidr);
    }
    r.push(
        SERVICES,
        format!("ip daddr . meta l4proto . th dport vmap @{SERVICE_IPS}"),
    );
    r.push(
        SERVICES,
        format!("fib daddr type local meta l4proto . th dport vmap @{SERVICE_NODEPORTS}"),
    );
    r.push(
        FILTER_SERVICES,
        format!("ip daddr . meta l4proto . th dport vmap @{NO_EP_IPS}"),
    );
    r.push(
        FILTER_SERVICES,
        format!("fib daddr type local meta l4proto . th dport vmap @{NO_EP_NODEPORTS}"),
    );
    r.push(MARK_MASQ, format!("meta mark set meta mark | {MASQ_MARK}"));
    // Hairpin traffic is marked like the rest, so that every masquerade
    // clears the mark first, as in iptables mode.
    r.push(
        MASQUERADING,
        format!(
            "ct status dnat ip saddr . ip daddr @{HAIRPIN} meta mark set meta mark | {MASQ_MARK}"
        ),
    );
    r.push(MASQUERADING, format!("meta mark & {MASQ_MARK} == 0 return"));
    r.push(
        MASQUERADING,
        format!("meta mark set meta mark ^ {MASQ_MARK}"),
    );
    r.push(MASQUERADING, "masquerade".to_string());
    r.push(REJECT, "reject".to_string());
    for set in ELEMENT_SETS.map(|(n, _)| n) {
        r.elements.entry(set).or_default();
    }
    r
}

/// The ruleset of nftables mode for `ports`, rendered afresh
/// ([`Renderer::render`] reuses what did not change).
pub fn nftables_mode(ports: &[SvcPort], cluster_cidr: Option<&str>) -> Ruleset {
    Renderer::default().render(ports, cluster_cidr)
}

/// A plain port's elements: its addresses lead to the shared chains for
/// its number of endpoints, and its endpoints are elements of the
/// `endpoints` maps under each address and index. No chain of its own: a
/// change of its endpoints is a change of elements only.
fn shared_part(p: &SvcPort) -> Part {
    let mut r = Part::default();
    let n = p.endpoints.len();
    let pr = p.proto.as_str();
    let eps = |r: &mut Part, set: &'static str, key: &str| {
        for (i, e) in p.endpoints.iter().enumerate() {
            r.element(
                set,
                format!("{key} . {i}"),
                format!("{} . {}", e.ip, e.port),
            );
        }
    };
    let (by_addr, by_node_port) = (
        ENDPOINTS[proto_index(p)],
        NODEPORT_ENDPOINTS[proto_index(p)],
    );
    eps(&mut r, by_addr, &format!("{} . {}", p.cluster_ip, p.port));
    r.element(
        SERVICE_IPS,
        addr_key(p.cluster_ip, p),
        format!("goto lb-{n}"),
    );
    for ip in &p.external_ips {
        eps(&mut r, by_addr, &format!("{ip} . {}", p.port));
        r.element(SERVICE_IPS, addr_key(*ip, p), format!("goto lbx-{n}"));
    }
    if let Some(np) = p.node_port {
        eps(&mut r, by_node_port, &np.to_string());
        r.element(
            SERVICE_NODEPORTS,
            format!("{pr} . {np}"),
            format!("goto lbn-{n}"),
        );
    }
    for e in &p.endpoints {
        r.hairpin(e);
    }
    r
}

/// One service port's chains and elements.
fn port_part(p: &SvcPort, cluster_cidr: Option<&str>) -> Part {
    let plain = p.affinity.is_none() && !p.internal_local && !p.external_local;
    if plain && (1..=SHARED_MAX).contains(&p.endpoints.len()) {
        return shared_part(p);
    }
    let mut r = Part::default();
    let reject = format!("goto {REJECT}");
    let pk = port_key(p);
    let (svc, svl, ext) = (name("svc", &pk), name("svl", &pk), name("ext", &pk));
    let all: Vec<&Ep> = p.endpoints.iter().collect();
    let local: Vec<&Ep> = p.endpoints.iter().filter(|e| e.local).collect();
    let internal = p.internal_endpoints();
    let external = p.external_endpoints();
    let (use_svc, use_svl) = (p.balanced_over_all(), p.balanced_over_local());
    // The cluster IP's masquerade mark goes first in the chain that the
    // cluster IP leads to (it matches only traffic to the cluster IP).
    let cluster_chain = if p.internal_local { &svl } else { &svc };
    for (chain, used, eps) in [(&svc, use_svc, &all), (&svl, use_svl, &local)] {
        if !used {
            continue;
        }
        if let (Some(cidr), true) = (cluster_cidr, chain == cluster_chain) {
            if !internal.is_empty() {
                r.push(
                    chain,
                    format!(
                        "ip daddr {} ip saddr != {cidr} jump {MARK_MASQ}",
                        p.cluster_ip
                    ),
                );
            }
        }
        balance(&mut r, chain, p, eps);
        for e in eps.iter() {
            r.hairpin(e);
        }
    }
    let cluster_key = addr_key(p.cluster_ip, p);
    if internal.is_empty() {
        r.element(NO_EP_IPS, cluster_key, reject.clone());
    } else {
        r.element(SERVICE_IPS, cluster_key, format!("goto {cluster_chain}"));
    }
    let has_outside = !p.external_ips.is_empty() || p.node_port.is_some();
    if has_outside && !external.is_empty() {
        if !p.external_local {
            r.push(&ext, format!("jump {MARK_MASQ}"));
        }
        let to = if p.external_local { &svl } else { &svc };
        r.push(&ext, format!("goto {to}"));
    }
    for ip in &p.external_ips {
        if external.is_empty() {
            r.element(NO_EP_IPS, addr_key(*ip, p), reject.clone());
        } else {
            r.element(SERVICE_IPS, addr_key(*ip, p), format!("goto {ext}"));
        }
    }
    if let Some(np) = p.node_port {
        let key = format!("{} . {np}", p.proto.as_str());
        if external.is_empty() {
            r.element(NO_EP_NODEPORTS, key, reject.clone());
        } else {
            r.element(SERVICE_NODEPORTS, key, format!("goto {ext}"));
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::test_port as port;

    fn chain<'a>(r: &'a Part, kind: &str) -> (&'a String, &'a Vec<String>) {
        r.chains
            .iter()
            .find(|(k, _)| k.starts_with(kind))
            .unwrap_or_else(|| panic!("no {kind} chain in {r:#?}"))
    }

    #[test]
    fn a_plain_service_port_is_elements_of_the_shared_chains_maps() {
        let r = nftables_mode(&[port(3, false)], Some("10.244.0.0/16")).flat();
        assert!(!r
            .chains
            .keys()
            .any(|k| k.starts_with("svc-") || k.starts_with("ext-")));
        assert_eq!(
            r.elements[SERVICE_IPS]["10.96.0.10 . tcp . 80"],
            "goto lb-3"
        );
        assert_eq!(r.elements[SERVICE_NODEPORTS]["tcp . 30080"], "goto lbn-3");
        let eps = &r.elements["endpoints-tcp"];
        assert_eq!(eps.len(), 3);
        assert_eq!(eps["10.96.0.10 . 80 . 0"], "10.244.1.10 . 8080");
        assert_eq!(eps["10.96.0.10 . 80 . 2"], "10.244.1.12 . 8080");
        assert_eq!(
            r.elements["nodeport-endpoints-tcp"]["30080 . 1"],
            "10.244.1.11 . 8080"
        );
        assert!(r.elements["endpoints-udp"].is_empty());
        assert_eq!(
            r.chains["lb-3"],
            [
                "ip saddr != 10.244.0.0/16 jump mark-for-masquerade",
                "meta l4proto tcp dnat ip to ip daddr . tcp dport . numgen random mod 3 map @endpoints-tcp",
                "meta l4proto udp dnat ip to ip daddr . udp dport . numgen random mod 3 map @endpoints-udp",
            ]
        );
        assert_eq!(r.chains["lbn-3"][0], "jump mark-for-masquerade");
        assert_eq!(r.elements[HAIRPIN].len(), 3);
    }

    #[test]
    fn a_port_with_more_endpoints_than_the_shared_chains_has_a_chain_with_a_rule_per_endpoint() {
        let mut p = port(SHARED_MAX + 1, false);
        p.endpoints.truncate(3);
        p.internal_local = true;
        p.endpoints.iter_mut().for_each(|e| e.local = true);
        let r = nftables_mode(&[p], Some("10.244.0.0/16")).flat();
        let (svl, rules) = chain(&r, "svl-");
        assert_eq!(
            rules,
            &[
                "ip daddr 10.96.0.10 ip saddr != 10.244.0.0/16 jump mark-for-masquerade",
                "meta l4proto tcp numgen random mod 3 == 0 dnat to 10.244.1.10:8080",
                "meta l4proto tcp numgen random mod 2 == 0 dnat to 10.244.1.11:8080",
                "meta l4proto tcp dnat to 10.244.1.12:8080",
            ]
        );
        assert_eq!(
            r.elements[SERVICE_IPS]["10.96.0.10 . tcp . 80"],
            format!("goto {svl}")
        );
        let big = nftables_mode(&[port(SHARED_MAX + 1, false)], None).flat();
        let (svc, rules) = chain(&big, "svc-");
        assert_eq!(rules.len(), SHARED_MAX + 1);
        assert!(svc.ends_with("-default/web/http/tcp"), "{svc}");
        assert!(big.elements["endpoints-tcp"].is_empty());
        let (ext, ext_rules) = chain(&big, "ext-");
        assert_eq!(
            ext_rules,
            &vec![
                "jump mark-for-masquerade".to_string(),
                format!("goto {svc}")
            ]
        );
        assert_eq!(
            big.elements[SERVICE_NODEPORTS]["tcp . 30080"],
            format!("goto {ext}")
        );
    }

    #[test]
    fn affinity_checks_each_endpoints_clients_before_choosing() {
        let r = nftables_mode(&[port(2, true)], None).flat();
        let (_, rules) = chain(&r, "svc-");
        assert_eq!(rules.len(), 4, "{rules:#?}");
        assert!(rules[0].starts_with("ip saddr @aff-") && rules[0].contains(" goto sep-"));
        assert!(rules[2].starts_with("numgen random mod 2 == 0 goto sep-"));
        assert!(rules[3].starts_with("goto sep-"));
        assert_eq!(r.affinity_sets.len(), 2);
        assert!(r.affinity_sets.values().all(|t| *t == 60));
        let seps: Vec<_> = r
            .chains
            .iter()
            .filter(|(k, _)| k.starts_with("sep-"))
            .collect();
        assert_eq!(seps.len(), 2);
        assert!(seps[0].1[0].starts_with("update @aff-"));
        assert!(
            seps[0].1[0].ends_with("meta l4proto tcp dnat to 10.244.1.10:8080")
                || seps[0].1[0].ends_with("meta l4proto tcp dnat to 10.244.1.11:8080")
        );
    }

    #[test]
    fn no_endpoints_rejects_through_the_filter_maps() {
        let r = nftables_mode(&[port(0, false)], None).flat();
        assert_eq!(
            r.elements[NO_EP_IPS]["10.96.0.10 . tcp . 80"],
            "goto reject-chain"
        );
        assert_eq!(
            r.elements[NO_EP_NODEPORTS]["tcp . 30080"],
            "goto reject-chain"
        );
        assert!(r.elements[SERVICE_IPS].is_empty());
        assert!(!r.chains.keys().any(|k| k.starts_with("svc-")));
    }

    #[test]
    fn local_policy_uses_only_local_endpoints_from_outside() {
        let mut p = port(2, false);
        p.external_local = true;
        p.endpoints[1].local = true;
        let r = nftables_mode(&[p], None).flat();
        let (svl, rules) = chain(&r, "svl-");
        assert_eq!(
            rules,
            &vec!["meta l4proto tcp dnat to 10.244.1.11:8080".to_string()]
        );
        let (_, ext) = chain(&r, "ext-");
        assert_eq!(
            ext,
            &vec![format!("goto {svl}")],
            "no masquerade with Local"
        );
    }

    #[test]
    fn names_are_nft_identifiers_and_unique() {
        let a = name("svc", "ns/web:http/tcp");
        let b = name("svc", "ns/web:http/udp");
        assert_ne!(a, b);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c)));
        assert!(name("svc", &"x".repeat(1000)).len() < 200);
    }
}
