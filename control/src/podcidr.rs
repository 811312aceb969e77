//! Pod CIDRs of nodes: each node gets a block of `--cluster-cidr`
//! (10.244.0.0/16 by default, a /24 each by default) when it is created
//! without one, and keeps it for life.
//!
//! As with service addresses ([`crate::alloc`]), each block in use is a key
//! in the store (`/flotilla/allocations/podcidrs/...`), written in the same
//! transaction as the node that holds it on the condition that it is free,
//! so no two nodes ever get the same block, whichever masters serve them and
//! across failovers.

use std::net::Ipv4Addr;

use flotilla_objects::api::{ApiError, Reason};
use rand::Rng;
use serde_json::{json, Value};

/// The range node blocks are drawn from.
#[derive(Debug, Clone)]
pub struct PodCidrs {
    base: u32,
    prefix: u8,
    node_prefix: u8,
}

impl Default for PodCidrs {
    fn default() -> Self {
        PodCidrs {
            base: u32::from(Ipv4Addr::new(10, 244, 0, 0)),
            prefix: 16,
            node_prefix: 24,
        }
    }
}

const PREFIX: &str = "/flotilla/allocations/podcidrs/";

fn parse_cidr(cidr: &str) -> Option<(u32, u8)> {
    let (ip, len) = cidr.split_once('/')?;
    let ip: Ipv4Addr = ip.parse().ok()?;
    let len: u8 = len.parse().ok().filter(|l| *l <= 32)?;
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    Some((u32::from(ip) & mask, len))
}

impl PodCidrs {
    /// `cidr` like "10.244.0.0/16"; `node_prefix` the size of each node's
    /// block (24: a /24 each), longer than the cluster's and at most 30.
    pub fn parse(cidr: &str, node_prefix: u8) -> Result<Self, String> {
        let (base, prefix) = parse_cidr(cidr)
            .ok_or_else(|| format!("cluster CIDR {cidr:?} is not IPV4-ADDRESS/PREFIX"))?;
        if node_prefix <= prefix || node_prefix > 30 {
            return Err(format!(
                "node CIDR mask size {node_prefix} must be longer than the cluster CIDR's ({prefix}) and at most 30"
            ));
        }
        Ok(PodCidrs {
            base,
            prefix,
            node_prefix,
        })
    }

    pub fn cidr(&self) -> String {
        format!("{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }

    fn random_block(&self) -> String {
        let blocks = 1u64 << (self.node_prefix - self.prefix);
        let n = rand::thread_rng().gen_range(0..blocks) as u32;
        let start = self.base + (n << (32 - self.node_prefix));
        format!("{}/{}", Ipv4Addr::from(start), self.node_prefix)
    }
}

pub fn key(cidr: &str) -> Vec<u8> {
    format!("{PREFIX}{cidr}").into_bytes()
}

fn invalid(name: &str, cidr: &str, detail: &str) -> ApiError {
    ApiError::new(
        Reason::Invalid,
        format!("Node \"{name}\" is invalid: spec.podCIDR: Invalid value: \"{cidr}\": {detail}"),
    )
}

fn pod_cidr(v: &Value) -> &str {
    v.pointer("/spec/podCIDR")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Fill in the node's pod CIDR (the previous one on an update, else a free
/// block's pick) and check one the node names.
pub fn assign(r: &PodCidrs, node: &mut Value, prev: Option<&Value>) -> Result<(), ApiError> {
    let name = node
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let before = prev.map(pod_cidr).unwrap_or("").to_string();
    let mut cidr = pod_cidr(node).to_string();
    if cidr.is_empty() {
        cidr = if before.is_empty() {
            r.random_block()
        } else {
            before.clone()
        };
    } else {
        let Some((base, len)) = parse_cidr(&cidr) else {
            return Err(invalid(&name, &cidr, "must be a valid IPv4 CIDR"));
        };
        if !before.is_empty() && before != cidr {
            return Err(ApiError::new(
                Reason::Invalid,
                format!("Node \"{name}\" is invalid: spec.podCIDR: Forbidden: node updates may not change podCIDR except from \"\" to valid"),
            ));
        }
        // Normalised, so that "10.244.1.7/24" and "10.244.1.0/24" are one key.
        cidr = format!("{}/{len}", Ipv4Addr::from(base));
    }
    if let Some(spec) = node
        .as_object_mut()
        .map(|o| o.entry("spec").or_insert_with(|| json!({})))
    {
        if let Some(s) = spec.as_object_mut() {
            s.insert("podCIDR".into(), Value::String(cidr.clone()));
            s.insert("podCIDRs".into(), json!([cidr]));
        }
    }
    Ok(())
}

/// The allocation key a node holds.
pub fn held(node: &Value) -> Vec<Vec<u8>> {
    let c = pod_cidr(node);
    if c.is_empty() {
        Vec::new()
    } else {
        vec![key(c)]
    }
}

pub fn taken(name: &str, k: &[u8]) -> ApiError {
    let k = String::from_utf8_lossy(k);
    let cidr = k.strip_prefix(PREFIX).unwrap_or(&k);
    invalid(name, cidr, "already allocated to another node")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_a_block_and_keeps_it() {
        let r = PodCidrs::parse("10.244.0.0/16", 24).unwrap();
        let mut n = json!({"metadata": {"name": "n1"}});
        assign(&r, &mut n, None).unwrap();
        let c = n["spec"]["podCIDR"].as_str().unwrap().to_string();
        assert!(c.starts_with("10.244.") && c.ends_with(".0/24"), "{c}");
        assert_eq!(n["spec"]["podCIDRs"], json!([c.clone()]));
        assert_eq!(held(&n), vec![key(&c)]);
        // An update that omits it keeps it; one that changes it is refused.
        let mut upd = json!({"metadata": {"name": "n1"}, "spec": {"unschedulable": true}});
        assign(&r, &mut upd, Some(&n)).unwrap();
        assert_eq!(upd["spec"]["podCIDR"], c.as_str());
        let mut other = json!({"metadata": {"name": "n1"}, "spec": {"podCIDR": "10.99.0.0/24"}});
        let e = assign(&r, &mut other, Some(&n)).unwrap_err();
        assert!(
            e.message.contains("may not change podCIDR"),
            "{}",
            e.message
        );
    }

    #[test]
    fn a_named_block_is_normalised_and_bad_ones_refused() {
        let r = PodCidrs::default();
        let mut n = json!({"metadata": {"name": "n1"}, "spec": {"podCIDR": "10.244.7.9/24"}});
        assign(&r, &mut n, None).unwrap();
        assert_eq!(n["spec"]["podCIDR"], "10.244.7.0/24");
        let mut bad = json!({"metadata": {"name": "n1"}, "spec": {"podCIDR": "nope"}});
        assert!(assign(&r, &mut bad, None).is_err());
        assert!(PodCidrs::parse("10.244.0.0/16", 16).is_err());
        assert!(taken("n2", &key("10.244.7.0/24"))
            .message
            .contains("\"10.244.7.0/24\": already allocated"));
    }
}
