//! The pod network across nodes: two hosts (test-made network namespaces
//! on a test bridge), one agent each; a pod on one host reaches a pod on
//! the other by IP, through the routes the agents keep to each other's pod
//! CIDRs, and the server sees the client pod's own IP (no NAT); a pod
//! reaches a host that is not a node from its node's address.

mod agent_support;
mod common;

use std::time::Duration;

use agent_support::{flt, running_ip, Site};
use common::hollow::Killed;
use common::wait_for;
use flotilla_client::{Api, Client};
use flotilla_objects::core::Pod;
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(90);

#[tokio::test]
async fn a_pod_reaches_a_pod_on_another_node_by_its_ip_without_nat() {
    let site = Site::start(2).await;
    let (cluster, lan, servers) = (&site.cluster, &site.lan, &site.servers);
    let names = [format!("h1-{}", lan.id), format!("h2-{}", lan.id)];
    let _a = site.agent(&names[0], 0);
    let _b = site.agent(&names[1], 1);
    let client = Client::connect(&[cluster.client_addr(0)]).expect("client");
    let pods = Api::<Pod>::namespaced(client, "default");
    for (name, node, cmd) in [
        ("server", &names[0], "mkdir /www && echo hello-from-h1 > /www/index.html && exec httpd -f -vv -p 8080 -h /www"),
        ("client", &names[1], "exec sleep 600"),
    ] {
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"nodeName": node, "terminationGracePeriodSeconds": 0,
                "containers": [{"name": "c", "image": "busybox", "command": ["sh", "-c", cmd]}]}
        }))
        .expect("pod");
        pods.create(&p).await.expect("create");
    }
    let server_ip = running_ip(&pods, "server").await;
    let client_ip = running_ip(&pods, "client").await;
    // (busybox's wget crashes in a network namespace: nc speaks HTTP here.)
    let get = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {server_ip} 8080");
    let out = wait_for(
        TIMEOUT,
        "the client pod reaches the server pod",
        async || {
            let out = flt(servers, &["exec", "client", "--", "sh", "-c", &get]).await;
            if out.success() {
                Ok(out.stdout)
            } else {
                Err(out.to_string())
            }
        },
    )
    .await;
    assert!(
        out.starts_with("HTTP/1.") && out.ends_with("\r\n\r\nhello-from-h1\n"),
        "{out}"
    );
    // httpd -vv logs each client's address: the client pod's own.
    let logs = flt(servers, &["logs", "server"]).await.ok();
    assert!(logs.stderr.is_empty());
    assert!(
        logs.stdout.contains(&client_ip),
        "{} not in the server's log: {}",
        client_ip,
        logs.stdout
    );
}

/// A pod reaches a machine that is not a node (a master, any other host):
/// such a machine has no route to pods, so the pod's traffic leaves its
/// node from the node's address (the agent's masquerade rule) and the
/// answer comes back. Before that rule, pods could not reach the masters'
/// DNS on machines that are not nodes.
#[tokio::test]
async fn a_pod_reaches_a_host_outside_the_cluster_from_its_nodes_address() {
    let site = Site::start(2).await;
    let (cluster, lan, servers) = (&site.cluster, &site.lan, &site.servers);
    let node = format!("h1-{}", lan.id);
    let _a = site.agent(&node, 0);
    // The second host runs no agent, and nothing routes pods' CIDRs to it.
    let www = cluster.dir().join("outside-www");
    std::fs::create_dir_all(&www).expect("www");
    std::fs::write(www.join("index.html"), "hello-from-outside\n").expect("index");
    let log = cluster.dir().join("outside-httpd.log");
    let outside = &lan.hosts[1];
    let _httpd = Killed(
        std::process::Command::new("nsenter")
            .arg(format!("--net={}", outside.netns_path()))
            .args(["/bin/busybox", "httpd", "-f", "-vv", "-p", "8080", "-h"])
            .arg(&www)
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("busybox httpd (busybox-static)"),
    );
    let client = Client::connect(&[cluster.client_addr(0)]).expect("client");
    let pods = Api::<Pod>::namespaced(client, "default");
    let p: Pod = serde_json::from_value(json!({
        "metadata": {"name": "client"},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "c", "image": "busybox", "command": ["sh", "-c", "exec sleep 600"]}]}
    }))
    .expect("pod");
    pods.create(&p).await.expect("create");
    let client_ip = running_ip(&pods, "client").await;
    let get = format!(
        "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {} 8080",
        outside.ip
    );
    let out = wait_for(
        TIMEOUT,
        "the pod reaches the host outside the cluster",
        async || {
            let out = flt(servers, &["exec", "client", "--", "sh", "-c", &get]).await;
            if out.success() && out.stdout.ends_with("hello-from-outside\n") {
                Ok(out.stdout)
            } else {
                Err(out.to_string())
            }
        },
    )
    .await;
    assert!(out.starts_with("HTTP/1."), "{out}");
    // The outside host saw the node's address, not the pod's.
    let seen = std::fs::read_to_string(&log).expect("httpd log");
    assert!(
        seen.contains(&lan.hosts[0].ip.to_string()) && !seen.contains(&client_ip),
        "the outside host should see the node {} and not the pod {client_ip}: {seen}",
        lan.hosts[0].ip
    );
}
