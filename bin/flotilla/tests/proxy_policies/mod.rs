//! Scenarios of the proxy test that take a service's finer settings: a
//! service with two ports (one target port by name, one by number), an
//! external IP routed to a node by the network (as operators route them),
//! and `externalTrafficPolicy: Local` on a NodePort, in each mode: h1
//! runs the iptables proxy, h2 the userspace one, h3 the nftables one. s3
//! is not ready by now, so the web pods that answer are s1 (on h1) and s2
//! (on h2).

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};

use agent_support::lan::Lan;
use agent_support::{http_get_in, in_netns};
use flotilla_client::Api;
use flotilla_objects::core::Service;
use serde_json::json;

use super::*;

/// Wait until GETs from the outside host to `addr` were answered by each
/// of `names` and by nothing else.
async fn outside_reaches(netns: &str, addr: SocketAddr, names: &[&str], what: &str) {
    let want: BTreeSet<String> = names.iter().map(|n| n.to_string()).collect();
    let mut seen = BTreeSet::new();
    wait_for(TIMEOUT, what, async || {
        let body = http_get_in(netns, addr, "/").await?;
        seen.insert(body.trim().to_string());
        assert!(seen.is_subset(&want), "{what}: answered by {seen:?}");
        if seen == want {
            Ok(())
        } else {
            Err(format!("seen {seen:?}"))
        }
    })
    .await;
}

pub async fn ports_external_ips_and_local_policy(
    servers: &str,
    svcs: &Api<Service>,
    lan: &Lan,
    outside: &str,
) {
    // Two ports: 80 to the container port named http, 8088 to 8080.
    let multi = svcs
        .create(&service(
            "multi",
            json!({"ports": [
                {"name": "http", "port": 80, "targetPort": "http"},
                {"name": "alt", "port": 8088, "targetPort": 8080}]}),
        ))
        .await
        .expect("multi");
    let ip = multi.spec.cluster_ip.clone();
    for pod in ["c1", "c2", "c3"] {
        for port in [80, 8088] {
            reaches_all(servers, pod, &ip, port, &["s1", "s2"]).await;
        }
    }

    // An external IP: the outside host routes it to a node, which answers
    // it on the service's port without holding the address.
    let o = lan.gateway.octets();
    let external = Ipv4Addr::new(o[0], o[1], o[2], 210);
    svcs.create(&service(
        "external",
        json!({"externalIPs": [external.to_string()]}),
    ))
    .await
    .expect("external");
    let addr = SocketAddr::from((external, 80));
    let route = external.to_string() + "/32";
    for (i, mode) in [(0, "iptables"), (1, "userspace"), (2, "nftables")] {
        let via = lan.hosts[i].ip.to_string();
        let out = in_netns(outside, &["ip", "route", "replace", &route, "via", &via]);
        assert!(out.status.success(), "{out:?}");
        outside_reaches(
            outside,
            addr,
            &["s1", "s2"],
            &format!("the external IP answers through the {mode} node"),
        )
        .await;
    }
    let out = in_netns(outside, &["ip", "route", "del", &route]);
    assert!(out.status.success(), "{out:?}");

    // externalTrafficPolicy Local: a node port sends outside traffic only
    // to the node's own endpoints...
    let local = svcs
        .create(&service(
            "local",
            json!({"type": "NodePort", "externalTrafficPolicy": "Local"}),
        ))
        .await
        .expect("local");
    let np = local.spec.ports[0].node_port as u16;
    for (i, own) in [(0, "s1"), (1, "s2")] {
        let addr = SocketAddr::from((lan.hosts[i].ip, np));
        outside_reaches(
            outside,
            addr,
            &[own],
            &format!("h{}'s node port answers from its own pod", i + 1),
        )
        .await;
        for _ in 0..6 {
            let body = http_get_in(outside, addr, "/").await;
            assert_eq!(
                body.as_deref().map(str::trim),
                Ok(own),
                "through h{}",
                i + 1
            );
        }
    }
    // ... and a node without one does not answer (kube-proxy drops), in
    // both modes; the cluster's own clients still reach it everywhere.
    let only_s1 = svcs
        .create(&service(
            "only-s1",
            json!({"type": "NodePort", "externalTrafficPolicy": "Local", "selector": {"name": "s1"}}),
        ))
        .await
        .expect("only-s1");
    let np = only_s1.spec.ports[0].node_port as u16;
    outside_reaches(
        outside,
        SocketAddr::from((lan.hosts[0].ip, np)),
        &["s1"],
        "the node with the endpoint answers",
    )
    .await;
    for i in [1, 2] {
        let r = http_get_in(outside, SocketAddr::from((lan.hosts[i].ip, np)), "/").await;
        assert!(
            r.is_err(),
            "h{} has no local endpoint but answered {r:?}",
            i + 1
        );
    }
    reaches_all(servers, "c2", &only_s1.spec.cluster_ip, 80, &["s1"]).await;
}
