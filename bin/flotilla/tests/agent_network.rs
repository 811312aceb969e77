//! The pod network across nodes: two hosts (test-made network namespaces
//! on a test bridge), one agent each; a pod on one host reaches a pod on
//! the other by IP, through the routes the agents keep to each other's pod
//! CIDRs, and the server sees the client pod's own IP (no NAT).

mod agent_support;
mod common;

use std::time::Duration;

use agent_support::lan::Lan;
use agent_support::{flt, running_ip, AgentProc, Registry};
use common::{wait_for, Cluster, Opts};
use flotilla_client::{Api, Client};
use flotilla_objects::core::Pod;
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(90);

#[tokio::test]
async fn a_pod_reaches_a_pod_on_another_node_by_its_ip_without_nat() {
    let cluster = Cluster::start(1, Opts::default()).await;
    let mut lan = Lan::new();
    lan.add_host();
    lan.add_host();
    let registry = Registry::start(cluster.dir(), lan.gateway);
    let servers = cluster.endpoints();
    let names = [format!("h1-{}", lan.id), format!("h2-{}", lan.id)];
    let _a = AgentProc::start(&servers, &names[0], &lan.hosts[0], cluster.dir(), &registry);
    let _b = AgentProc::start(&servers, &names[1], &lan.hosts[1], cluster.dir(), &registry);
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
            let out = flt(&servers, &["exec", "client", "--", "sh", "-c", &get]).await;
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
    let logs = flt(&servers, &["logs", "server"]).await.ok();
    assert!(logs.stderr.is_empty());
    assert!(
        logs.stdout.contains(&client_ip),
        "{} not in the server's log: {}",
        client_ip,
        logs.stdout
    );
}
