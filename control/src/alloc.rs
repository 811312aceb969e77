//! Service addresses: the cluster IP of every ClusterIP, NodePort and
//! LoadBalancer service, the node ports of the last two, and, when the
//! masters are given a pool (`--lb-pool`), each LoadBalancer service's
//! external address, shown in `status.loadBalancer.ingress` (Flotilla's
//! own load balancer, as k3s's ServiceLB or MetalLB's layer-2 mode: the
//! node proxies answer it).
//!
//! Each address in use is a key in the store (`/flotilla/allocations/...`),
//! written in the same transaction as the service that holds it, with the
//! condition that it does not exist yet: two services can never be given the
//! same address, whichever masters serve them.

use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

use flotilla_objects::api::{ApiError, Reason};
use rand::Rng;
use serde_json::{json, Value};

/// The ranges services draw from.
#[derive(Debug, Clone)]
pub struct ServiceRanges {
    /// Cluster IPs.
    ips: Pool,
    pub node_ports: RangeInclusive<u16>,
    /// Where LoadBalancer services' addresses come from (None: nowhere;
    /// their status is left to whoever provides load balancers).
    lb_pool: Option<Pool>,
}

/// A block of IPv4 addresses.
#[derive(Debug, Clone, Copy)]
struct Pool {
    base: u32,
    prefix: u8,
}

impl Pool {
    fn parse(cidr: &str, what: &str, max_prefix: u8) -> Result<Pool, String> {
        let (ip, len) = cidr
            .split_once('/')
            .ok_or_else(|| format!("{what} {cidr:?} is not ADDRESS/PREFIX"))?;
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|_| format!("{what} {cidr:?}: {ip:?} is not an IPv4 address"))?;
        let prefix: u8 = len
            .parse()
            .ok()
            .filter(|p| *p <= max_prefix)
            .ok_or_else(|| format!("{what} {cidr:?}: the prefix must be 0-{max_prefix}"))?;
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        };
        Ok(Pool {
            base: u32::from(ip) & mask,
            prefix,
        })
    }

    fn size(&self) -> u64 {
        1u64 << (32 - self.prefix)
    }

    fn contains(&self, ip: Ipv4Addr) -> bool {
        let v = u64::from(u32::from(ip));
        v >= u64::from(self.base) && v - u64::from(self.base) < self.size()
    }

    fn cidr(&self) -> String {
        format!("{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }

    /// A random usable address: not the network or broadcast address of a
    /// block larger than two.
    fn random(&self) -> Ipv4Addr {
        let n = if self.size() <= 2 {
            rand::thread_rng().gen_range(0..self.size())
        } else {
            rand::thread_rng().gen_range(1..self.size() - 1)
        };
        Ipv4Addr::from(self.base.wrapping_add(n as u32))
    }
}

impl Default for ServiceRanges {
    fn default() -> Self {
        // Kubernetes' defaults: 10.96.0.0/12 and 30000-32767.
        ServiceRanges {
            ips: Pool {
                base: u32::from(Ipv4Addr::new(10, 96, 0, 0)),
                prefix: 12,
            },
            node_ports: 30000..=32767,
            lb_pool: None,
        }
    }
}

const IP_PREFIX: &str = "/flotilla/allocations/serviceips/";
const PORT_PREFIX: &str = "/flotilla/allocations/nodeports/";
const LB_PREFIX: &str = "/flotilla/allocations/loadbalancerips/";

impl ServiceRanges {
    /// LoadBalancer services get their address from `cidr` (e.g.
    /// "192.168.50.240/28"; a /32 is one address).
    pub fn with_lb_pool(mut self, cidr: &str) -> Result<Self, String> {
        self.lb_pool = Some(Pool::parse(cidr, "load balancer pool", 32)?);
        Ok(self)
    }

    /// `cidr` like "10.96.0.0/12" (at least 8 addresses), `ports` like "30000-32767".
    pub fn parse(cidr: &str, ports: &str) -> Result<Self, String> {
        let ips = Pool::parse(cidr, "service IP range", 29)?;
        let (lo, hi) = ports
            .split_once('-')
            .ok_or_else(|| format!("node port range {ports:?} is not LOW-HIGH"))?;
        let lo: u16 = lo
            .trim()
            .parse()
            .map_err(|_| format!("node port range {ports:?}: bad low port"))?;
        let hi: u16 = hi
            .trim()
            .parse()
            .map_err(|_| format!("node port range {ports:?}: bad high port"))?;
        if lo == 0 || hi < lo {
            return Err(format!("node port range {ports:?} is empty"));
        }
        Ok(ServiceRanges {
            ips,
            node_ports: lo..=hi,
            lb_pool: None,
        })
    }

    pub fn cidr(&self) -> String {
        self.ips.cidr()
    }

    fn contains(&self, ip: Ipv4Addr) -> bool {
        self.ips.contains(ip)
    }

    fn random_ip(&self) -> Ipv4Addr {
        // Skip the network address and the first host (Kubernetes gives it
        // to the API's own service) and the broadcast address (the range
        // holds at least 8 addresses).
        let n = rand::thread_rng().gen_range(2..self.ips.size() - 1);
        Ipv4Addr::from(self.ips.base + n as u32)
    }

    fn random_port(&self) -> u16 {
        rand::thread_rng().gen_range(self.node_ports.clone())
    }
}

pub fn ip_key(ip: &str) -> Vec<u8> {
    format!("{IP_PREFIX}{ip}").into_bytes()
}

pub fn port_key(port: i64) -> Vec<u8> {
    format!("{PORT_PREFIX}{port}").into_bytes()
}

pub fn lb_key(ip: &str) -> Vec<u8> {
    format!("{LB_PREFIX}{ip}").into_bytes()
}

/// The addresses in a service's `status.loadBalancer.ingress`.
fn lb_ips(svc: &Value) -> Vec<&str> {
    svc.pointer("/status/loadBalancer/ingress")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|i| i.get("ip").and_then(Value::as_str))
                .filter(|ip| !ip.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

fn service_type(svc: &Value) -> &str {
    svc.pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
}

fn wants_node_ports(svc: &Value) -> bool {
    matches!(service_type(svc), "NodePort" | "LoadBalancer")
}

/// The allocation keys a service holds.
pub fn held(svc: &Value) -> Vec<Vec<u8>> {
    let mut keys = Vec::new();
    if service_type(svc) == "ExternalName" {
        return keys;
    }
    if let Some(ip) = svc.pointer("/spec/clusterIP").and_then(Value::as_str) {
        if !ip.is_empty() && ip != "None" {
            keys.push(ip_key(ip));
        }
    }
    if wants_node_ports(svc) {
        if let Some(ports) = svc.pointer("/spec/ports").and_then(Value::as_array) {
            for p in ports {
                if let Some(n) = p.get("nodePort").and_then(Value::as_i64) {
                    if n > 0 {
                        keys.push(port_key(n));
                    }
                }
            }
        }
    }
    if service_type(svc) == "LoadBalancer" {
        keys.extend(lb_ips(svc).into_iter().map(lb_key));
    }
    keys
}

/// A LoadBalancer service's address from the pool: the one it asks for
/// (`spec.loadBalancerIP`), else the one it has, else a new one. Other
/// types lose the address they had.
fn assign_lb(
    r: &ServiceRanges,
    svc: &mut Value,
    prev: Option<&Value>,
    name: &str,
) -> Result<(), ApiError> {
    let Some(pool) = r.lb_pool else {
        return Ok(());
    };
    if service_type(svc) != "LoadBalancer" {
        if let Some(st) = svc.get_mut("status").and_then(Value::as_object_mut) {
            st.remove("loadBalancer");
        }
        return Ok(());
    }
    let asked = svc
        .pointer("/spec/loadBalancerIP")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let in_pool = |ip: &str| ip.parse::<Ipv4Addr>().is_ok_and(|a| pool.contains(a));
    let ip = if !asked.is_empty() {
        if !in_pool(&asked) {
            return Err(invalid(
                name,
                format!(
                    "spec.loadBalancerIP: Invalid value: \"{asked}\": not in the load balancer pool {}",
                    pool.cidr()
                ),
            ));
        }
        asked
    } else {
        let had = lb_ips(svc)
            .into_iter()
            .chain(prev.map(lb_ips).unwrap_or_default())
            .find(|ip| in_pool(ip))
            .map(str::to_string);
        had.unwrap_or_else(|| pool.random().to_string())
    };
    let Some(obj) = svc.as_object_mut() else {
        return Ok(());
    };
    let status = obj.entry("status").or_insert_with(|| json!({}));
    if let Some(st) = status.as_object_mut() {
        st.insert("loadBalancer".into(), json!({"ingress": [{"ip": ip}]}));
    }
    Ok(())
}

fn invalid(name: &str, detail: String) -> ApiError {
    ApiError::new(
        Reason::Invalid,
        format!("Service \"{name}\" is invalid: {detail}"),
    )
}

/// Fill in the cluster IP and node ports `svc` lacks (keeping `prev`'s, on
/// an update), and check the ones it names are in range.
pub fn assign(r: &ServiceRanges, svc: &mut Value, prev: Option<&Value>) -> Result<(), ApiError> {
    let name = svc
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let ty = service_type(svc).to_string();
    assign_lb(r, svc, prev, &name)?;
    let Some(spec) = svc.get_mut("spec").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    if ty == "ExternalName" {
        spec.remove("clusterIP");
        spec.remove("clusterIPs");
        return Ok(());
    }
    let mut ip = spec
        .get("clusterIP")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if ip.is_empty() {
        if let Some(p) = prev
            .and_then(|p| p.pointer("/spec/clusterIP"))
            .and_then(Value::as_str)
        {
            ip = p.to_string();
        }
    }
    if ip.is_empty() {
        ip = r.random_ip().to_string();
    } else if ip != "None" {
        let parsed: Ipv4Addr = ip.parse().map_err(|_| {
            invalid(
                &name,
                format!("spec.clusterIP: Invalid value: \"{ip}\": must be a valid IPv4 address"),
            )
        })?;
        let unchanged = prev
            .and_then(|p| p.pointer("/spec/clusterIP"))
            .and_then(Value::as_str)
            == Some(ip.as_str());
        if !r.contains(parsed) && !unchanged {
            return Err(invalid(&name, format!(
                "spec.clusterIPs: Invalid value: [\"{ip}\"]: failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is {}",
                r.cidr()
            )));
        }
    }
    spec.insert("clusterIP".into(), Value::String(ip.clone()));
    spec.insert("clusterIPs".into(), json!([ip]));
    let node_ports = matches!(ty.as_str(), "NodePort" | "LoadBalancer");
    let prev_ports: Vec<(i64, String, i64)> = prev
        .and_then(|p| p.pointer("/spec/ports"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|p| {
                    (
                        p.get("port").and_then(Value::as_i64).unwrap_or(0),
                        p.get("protocol")
                            .and_then(Value::as_str)
                            .unwrap_or("TCP")
                            .to_string(),
                        p.get("nodePort").and_then(Value::as_i64).unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) else {
        return Ok(());
    };
    if !node_ports {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            p.remove("nodePort");
        }
        return Ok(());
    }
    // First the ports given (checked), then the ones to pick, so that a
    // pick never takes a port named later in the same service.
    let range = i64::from(*r.node_ports.start())..=i64::from(*r.node_ports.end());
    let mut used: Vec<i64> = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let n = p.get("nodePort").and_then(Value::as_i64).unwrap_or(0);
        if n == 0 {
            continue;
        }
        if !range.contains(&n) {
            return Err(invalid(&name, format!(
                "spec.ports[{i}].nodePort: Invalid value: {n}: provided port is not in the valid range. The range of valid ports is {}-{}",
                r.node_ports.start(), r.node_ports.end()
            )));
        }
        if used.contains(&n) {
            return Err(invalid(
                &name,
                format!("spec.ports[{i}].nodePort: Duplicate value: {n}"),
            ));
        }
        used.push(n);
    }
    let free = (range.end() - range.start() + 1) as usize;
    for p in ports.iter_mut().filter_map(Value::as_object_mut) {
        if p.get("nodePort").and_then(Value::as_i64).unwrap_or(0) != 0 {
            continue;
        }
        // Keep the port an update's previous version had for it.
        let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
        let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
        let mut n = prev_ports
            .iter()
            .find(|(pp, pr, np)| *pp == port && pr == proto && *np > 0 && !used.contains(np))
            .map(|x| x.2)
            .unwrap_or(0);
        if n == 0 {
            if used.len() >= free {
                return Err(invalid(
                    &name,
                    "spec.ports: Invalid value: more node ports than the range holds".to_string(),
                ));
            }
            loop {
                n = i64::from(r.random_port());
                if !used.contains(&n) {
                    break;
                }
            }
        }
        used.push(n);
        p.insert("nodePort".into(), json!(n));
    }
    Ok(())
}

/// The message for an address someone else holds.
pub fn taken(name: &str, key: &[u8]) -> ApiError {
    let k = String::from_utf8_lossy(key);
    if let Some(ip) = k.strip_prefix(LB_PREFIX) {
        invalid(name, format!(
            "spec.loadBalancerIP: Invalid value: \"{ip}\": failed to allocate IP {ip}: provided IP is already allocated"
        ))
    } else if let Some(ip) = k.strip_prefix(IP_PREFIX) {
        invalid(name, format!(
            "spec.clusterIPs: Invalid value: [\"{ip}\"]: failed to allocate IP {ip}: provided IP is already allocated"
        ))
    } else {
        let port = k.strip_prefix(PORT_PREFIX).unwrap_or(&k);
        invalid(
            name,
            format!("spec.ports: Invalid value: {port}: provided port is already allocated"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assigns_in_range_and_keeps_what_was_given() {
        let r = ServiceRanges::parse("10.100.0.0/16", "30000-30010").unwrap();
        let mut svc = json!({"metadata": {"name": "s"}, "spec": {"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP"}, {"port": 81, "protocol": "TCP", "nodePort": 30005}]}});
        assign(&r, &mut svc, None).unwrap();
        let ip: Ipv4Addr = svc["spec"]["clusterIP"].as_str().unwrap().parse().unwrap();
        assert!(r.contains(ip));
        assert_eq!(svc["spec"]["clusterIPs"], json!([ip.to_string()]));
        let p0 = svc["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
        assert!((30000..=30010).contains(&p0) && p0 != 30005);
        assert_eq!(svc["spec"]["ports"][1]["nodePort"], 30005);
        assert_eq!(held(&svc).len(), 3);

        // An update that omits them keeps the previous ones.
        let mut upd = json!({"metadata": {"name": "s"}, "spec": {"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP"}]}});
        assign(&r, &mut upd, Some(&svc)).unwrap();
        assert_eq!(upd["spec"]["clusterIP"], svc["spec"]["clusterIP"]);
        assert_eq!(upd["spec"]["ports"][0]["nodePort"], p0);
    }

    #[test]
    fn picks_never_take_a_port_named_later() {
        // A range of two ports: the first port must get the one the second
        // does not name, whatever the random draw.
        let r = ServiceRanges::parse("10.100.0.0/16", "30000-30001").unwrap();
        for _ in 0..50 {
            let mut svc = json!({"metadata": {"name": "s"}, "spec": {"type": "NodePort", "ports": [{"port": 80}, {"port": 81, "nodePort": 30001}]}});
            assign(&r, &mut svc, None).unwrap();
            assert_eq!(svc["spec"]["ports"][0]["nodePort"], 30000);
        }
        let mut full = json!({"metadata": {"name": "s"}, "spec": {"type": "NodePort", "ports": [{"port": 80}, {"port": 81}, {"port": 82}]}});
        assert_eq!(
            assign(&r, &mut full, None).unwrap_err().reason,
            Reason::Invalid
        );
    }

    #[test]
    fn out_of_range_and_headless() {
        let r = ServiceRanges::default();
        let mut svc = json!({"metadata": {"name": "s"}, "spec": {"clusterIP": "192.168.1.1", "ports": [{"port": 80}]}});
        let e = assign(&r, &mut svc, None).unwrap_err();
        assert_eq!(e.reason, Reason::Invalid);
        assert!(
            e.message
                .contains("is not in the valid range. The range of valid IPs is 10.96.0.0/12"),
            "{}",
            e.message
        );
        let mut svc = json!({"metadata": {"name": "s"}, "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 80}]}});
        let e = assign(&r, &mut svc, None).unwrap_err();
        assert_eq!(e.message, "Service \"s\" is invalid: spec.ports[0].nodePort: Invalid value: 80: provided port is not in the valid range. The range of valid ports is 30000-32767");
        let mut headless = json!({"metadata": {"name": "h"}, "spec": {"clusterIP": "None", "ports": [{"port": 80, "nodePort": 30001}]}});
        assign(&r, &mut headless, None).unwrap();
        assert!(held(&headless).is_empty());
        assert!(headless["spec"]["ports"][0].get("nodePort").is_none());
    }

    #[test]
    fn load_balancers_get_an_address_from_the_pool_and_keep_it() {
        let r = ServiceRanges::default()
            .with_lb_pool("192.168.50.240/29")
            .unwrap();
        let pool = r.lb_pool.unwrap();
        let lb = |extra: Value| {
            let mut s = json!({"metadata": {"name": "s"}, "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}});
            flotilla_objects::merge_patch(&mut s, &extra);
            s
        };
        let mut svc = lb(json!({}));
        assign(&r, &mut svc, None).unwrap();
        let ip = svc["status"]["loadBalancer"]["ingress"][0]["ip"]
            .as_str()
            .unwrap()
            .to_string();
        let a: Ipv4Addr = ip.parse().unwrap();
        assert!(
            pool.contains(a)
                && a != Ipv4Addr::new(192, 168, 50, 240)
                && a != Ipv4Addr::new(192, 168, 50, 247)
        );
        assert!(held(&svc).contains(&lb_key(&ip)), "the address is held");

        // An update keeps it; a change of type gives it back.
        let mut upd = lb(json!({}));
        assign(&r, &mut upd, Some(&svc)).unwrap();
        assert_eq!(
            upd["status"]["loadBalancer"]["ingress"][0]["ip"],
            ip.as_str()
        );
        let mut cip = json!({"metadata": {"name": "s"}, "spec": {"type": "ClusterIP", "ports": [{"port": 80}]}, "status": svc["status"].clone()});
        assign(&r, &mut cip, Some(&svc)).unwrap();
        assert!(cip["status"].get("loadBalancer").is_none());
        assert!(!held(&cip).contains(&lb_key(&ip)));

        // One asked for must be in the pool.
        let mut asked = lb(json!({"spec": {"loadBalancerIP": "192.168.50.242"}}));
        assign(&r, &mut asked, None).unwrap();
        assert_eq!(
            asked["status"]["loadBalancer"]["ingress"][0]["ip"],
            "192.168.50.242"
        );
        let mut outside = lb(json!({"spec": {"loadBalancerIP": "10.1.2.3"}}));
        let e = assign(&r, &mut outside, None).unwrap_err();
        assert_eq!(e.message, "Service \"s\" is invalid: spec.loadBalancerIP: Invalid value: \"10.1.2.3\": not in the load balancer pool 192.168.50.240/29");
        assert!(taken("s", &lb_key("192.168.50.242"))
            .message
            .contains("provided IP is already allocated"));

        // Without a pool, the status is left to whoever provides balancers.
        let mut none =
            lb(json!({"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}}));
        assign(&ServiceRanges::default(), &mut none, None).unwrap();
        assert_eq!(
            none["status"]["loadBalancer"]["ingress"][0]["ip"],
            "203.0.113.7"
        );
        // A one-address pool hands out that address.
        let one = ServiceRanges::default()
            .with_lb_pool("192.0.2.9/32")
            .unwrap();
        let mut s = lb(json!({}));
        assign(&one, &mut s, None).unwrap();
        assert_eq!(s["status"]["loadBalancer"]["ingress"][0]["ip"], "192.0.2.9");
        assert!(ServiceRanges::default().with_lb_pool("192.0.2.0").is_err());
    }

    #[test]
    fn parse_rejects_bad_ranges() {
        assert!(ServiceRanges::parse("10.0.0.0", "30000-32767").is_err());
        assert!(ServiceRanges::parse("10.0.0.0/31", "30000-32767").is_err());
        assert!(ServiceRanges::parse("10.0.0.0/24", "32767-30000").is_err());
        assert_eq!(
            ServiceRanges::parse("10.0.0.7/24", "1-2").unwrap().cidr(),
            "10.0.0.0/24"
        );
    }
}
