//! The pod network between nodes, host-gw style: every other node's pod
//! CIDR is routed to that node's InternalIP, in the node's network
//! namespace, and the routes follow the nodes as they come, change and go.
//! No encapsulation and no NAT: a pod's IP is seen as it is on every node.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use flotilla_client::{Api, Client, ListParams, Reflector};
use flotilla_objects::core::Node;
use tokio_util::sync::CancellationToken;

use crate::config::AgentConfig;

/// Every route is written again this often (repairs what someone removed).
const RESYNC: Duration = Duration::from_secs(30);

/// The routes this node needs: pod CIDR to the node that has it.
pub fn wanted(me: &str, my_ip: &str, nodes: &[std::sync::Arc<Node>]) -> BTreeMap<String, String> {
    nodes
        .iter()
        .filter(|n| n.metadata.name != me && !n.spec.pod_cidr.is_empty())
        .filter_map(|n| {
            let ip = n
                .status
                .as_ref()?
                .addresses
                .iter()
                .find(|a| a.type_ == "InternalIP")?
                .address
                .clone();
            (ip != my_ip).then(|| (n.spec.pod_cidr.clone(), ip))
        })
        .collect()
}

async fn ip_route(netns: Option<&Path>, args: &[&str]) -> Result<(), String> {
    let mut cmd = crate::netns::command_in(netns, Path::new("ip")).map_err(|e| e.to_string())?;
    let out = cmd
        .arg("route")
        .args(args)
        .output()
        .await
        .map_err(|e| format!("ip route {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip route {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Keep the routes to other nodes' pods until `stop`.
pub async fn run(cfg: AgentConfig, client: Client, stop: CancellationToken) {
    let reflector = Reflector::spawn(Api::<Node>::all(client), ListParams::default());
    let cache = reflector.cache();
    let mut changes = cache.changes();
    let my_ip = cfg.node_ip.to_string();
    let netns = cfg.netns.as_deref();
    let mut installed: BTreeMap<String, String> = BTreeMap::new();
    let mut resync = tokio::time::interval(RESYNC);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            r = changes.changed() => if r.is_err() { return },
            _ = resync.tick() => installed.clear(),
        }
        if !cache.is_ready() {
            continue;
        }
        let want = wanted(&cfg.name, &my_ip, &cache.list());
        for (cidr, via) in &want {
            if installed.get(cidr) == Some(via) {
                continue;
            }
            match ip_route(netns, &["replace", cidr, "via", via]).await {
                Ok(()) => {
                    tracing::info!(%cidr, %via, "route to another node's pods");
                    installed.insert(cidr.clone(), via.clone());
                }
                Err(e) => tracing::warn!("{e}"),
            }
        }
        let gone: Vec<String> = installed
            .keys()
            .filter(|c| !want.contains_key(*c))
            .cloned()
            .collect();
        for cidr in gone {
            if let Err(e) = ip_route(netns, &["del", &cidr]).await {
                tracing::warn!("{e}");
            }
            installed.remove(&cidr);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_objects::core::{NodeAddress, NodeStatus};
    use std::sync::Arc;

    fn node(name: &str, cidr: &str, ip: &str) -> Arc<Node> {
        let mut n = Node::default();
        n.metadata.name = name.into();
        n.spec.pod_cidr = cidr.into();
        n.status = Some(NodeStatus {
            addresses: vec![NodeAddress {
                type_: "InternalIP".into(),
                address: ip.into(),
            }],
            ..Default::default()
        });
        Arc::new(n)
    }

    #[test]
    fn routes_go_to_every_other_node_with_a_cidr() {
        let nodes = vec![
            node("a", "10.244.1.0/24", "10.0.0.1"),
            node("b", "10.244.2.0/24", "10.0.0.2"),
            node("c", "", "10.0.0.3"),
        ];
        let w = wanted("a", "10.0.0.1", &nodes);
        assert_eq!(w.len(), 1);
        assert_eq!(w["10.244.2.0/24"], "10.0.0.2");
    }
}
