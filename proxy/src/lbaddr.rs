//! Load balancer addresses on the node: the elected node puts each address
//! it answers on the interface that holds its node IP, as a /32 labelled
//! `IFACE:flt`, so that the node answers ARP for it (layer 2, like
//! MetalLB's); addresses it no longer answers are removed. The label lets
//! a restarted proxy and `--cleanup` find them.
//!
//! Also the route of the service range to the node's loopback (protocol
//! [`ROUTE_PROTO`]): packets to a cluster IP that no DNAT rule took are
//! then never sent off the node, and reach the filter table's REJECT
//! rules (without a route the kernel drops them with a soft ICMP error and
//! TCP clients wait for their timeout).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use crate::netns;

const LABEL_SUFFIX: &str = ":flt";

async fn ip(ns: Option<&Path>, args: &[&str]) -> Result<String, String> {
    let mut cmd = netns::command(ns, "ip").map_err(|e| e.to_string())?;
    let out = cmd.args(args).output().await.map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// (interface, address, label) of every IPv4 address.
async fn addresses(ns: Option<&Path>) -> Vec<(String, Ipv4Addr, String)> {
    let text = ip(ns, &["-o", "-4", "addr", "show"])
        .await
        .unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            // "2: eth0    inet 172.31.1.11/24 brd ... scope global eth0:flt"
            let f: Vec<&str> = l.split_whitespace().collect();
            let dev = f.get(1)?.to_string();
            let i = f.iter().position(|w| *w == "inet")?;
            let addr = f.get(i + 1)?.split('/').next()?.parse().ok()?;
            let label = f
                .iter()
                .rev()
                .find(|w| w.starts_with(&dev))
                .map(|w| w.trim_end_matches('\\').to_string())
                .unwrap_or_default();
            Some((dev, addr, label))
        })
        .collect()
}

/// The load balancer addresses this node holds.
pub struct Addresses {
    netns: Option<PathBuf>,
    node_ip: Option<Ipv4Addr>,
}

impl Addresses {
    pub fn new(netns: Option<PathBuf>, node_ip: Option<Ipv4Addr>) -> Addresses {
        Addresses { netns, node_ip }
    }

    /// Hold exactly `want`.
    pub async fn apply(&mut self, want: &BTreeSet<Ipv4Addr>) {
        let ns = self.netns.as_deref();
        let all = addresses(ns).await;
        let held: Vec<&(String, Ipv4Addr, String)> =
            all.iter().filter(|a| a.2.ends_with(LABEL_SUFFIX)).collect();
        for (dev, addr, _) in held.iter().copied() {
            if !want.contains(addr) {
                match ip(ns, &["addr", "del", &format!("{addr}/32"), "dev", dev]).await {
                    Ok(_) => {
                        tracing::info!(%addr, "no longer answering this load balancer address")
                    }
                    Err(e) => tracing::warn!(error = %e, "removing a load balancer address"),
                }
            }
        }
        let missing: Vec<&Ipv4Addr> = want
            .iter()
            .filter(|w| !held.iter().any(|h| h.1 == **w))
            .collect();
        if missing.is_empty() {
            return;
        }
        let Some(node_ip) = self.node_ip else {
            tracing::warn!("load balancer addresses need --node-ip");
            return;
        };
        let Some(dev) = all.iter().find(|a| a.1 == node_ip).map(|a| a.0.clone()) else {
            tracing::warn!(%node_ip, "no interface holds the node IP");
            return;
        };
        for addr in missing {
            let label = format!("{dev}{LABEL_SUFFIX}");
            match ip(
                ns,
                &[
                    "addr",
                    "add",
                    &format!("{addr}/32"),
                    "dev",
                    &dev,
                    "label",
                    &label,
                ],
            )
            .await
            {
                Ok(_) => {
                    tracing::info!(%addr, %dev, "answering this load balancer address");
                    // Tell the segment at once (arping is optional).
                    if let Ok(mut c) = netns::command(ns, "arping") {
                        let _ = c
                            .args(["-U", "-c", "1", "-I", &dev, &addr.to_string()])
                            .output()
                            .await;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "adding a load balancer address"),
            }
        }
    }
}

/// The routing protocol number that marks the proxy's routes.
pub const ROUTE_PROTO: &str = "76";

/// Route `cidr` to the loopback device (idempotent).
pub async fn ensure_service_route(ns: Option<&Path>, cidr: &str) {
    if let Err(e) = ip(
        ns,
        &["route", "replace", cidr, "dev", "lo", "proto", ROUTE_PROTO],
    )
    .await
    {
        tracing::warn!(error = %e, "routing the service range to the loopback");
    }
}

/// Remove every address and route the proxy put on the node.
pub async fn cleanup(ns: Option<&Path>) {
    let routes = ip(ns, &["-4", "route", "show", "proto", ROUTE_PROTO])
        .await
        .unwrap_or_default();
    for r in routes.lines() {
        let args: Vec<&str> = r.split_whitespace().collect();
        let mut del = vec!["route", "del"];
        del.extend(args);
        let _ = ip(ns, &del).await;
    }
    for (dev, addr, label) in addresses(ns).await {
        if label.ends_with(LABEL_SUFFIX) {
            let _ = ip(ns, &["addr", "del", &format!("{addr}/32"), "dev", &dev]).await;
        }
    }
}
