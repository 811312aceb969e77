//! `flotilla agent --runtime fake`: a node without containers registers,
//! turns Ready, reports a pod bound to it Running with an IP from its pod
//! CIDR, and completes the pod's deletion.

mod common;

use std::time::Duration;

use common::hollow::{hollow_agent, Killed};
use common::{wait_for, Cluster, Opts};
use flotilla_client::{Api, Client, DeleteParams, Reason};
use flotilla_objects::core::{Node, Pod};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_fake_node_runs_pods_without_containers() {
    let cluster = Cluster::start(1, Opts::default()).await;
    let _agent =
        Killed(hollow_agent("fake-1", None, &cluster.endpoints(), cluster.dir()).expect("agent"));
    let client = Client::connect(&[cluster.client_addr(0)]).expect("client");
    let nodes = Api::<Node>::all(client.clone());
    let node = wait_for(TIMEOUT, "the fake node is Ready", async || {
        let n = nodes.get("fake-1").await.map_err(|e| e.to_string())?;
        let ready = n.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        });
        if ready {
            Ok(n)
        } else {
            Err("not ready".to_string())
        }
    })
    .await;
    assert_eq!(
        node.status
            .expect("status")
            .node_info
            .container_runtime_version,
        "fake://0"
    );
    let pods = Api::<Pod>::namespaced(client, "default");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "p"},
        "spec": {"nodeName": "fake-1", "containers": [{"name": "c", "image": "nosuch"}]}
    }))
    .expect("pod");
    pods.create(&pod).await.expect("create");
    let st = wait_for(TIMEOUT, "the pod runs", async || {
        let p = pods.get("p").await.map_err(|e| e.to_string())?;
        match p.status {
            Some(s) if s.phase == "Running" => Ok(s),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let prefix = node.spec.pod_cidr.trim_end_matches("0/24");
    assert!(
        st.pod_ip.starts_with(prefix),
        "{} in {}",
        st.pod_ip,
        node.spec.pod_cidr
    );
    assert!(st.container_statuses[0].ready);
    // The agent's own endpoints: ready, and the pod's start counted.
    let log_path = cluster.dir().join("fake-1.log");
    let addr = wait_for(TIMEOUT, "the agent logs its metrics address", async || {
        let text = std::fs::read_to_string(&log_path).map_err(|e| e.to_string())?;
        let line = text
            .lines()
            .find(|l| l.contains("serving /metrics"))
            .ok_or("not yet")?;
        let at = line.find("addr=").ok_or("no addr")? + 5;
        Ok::<_, String>(
            line[at..]
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_string(),
        )
    })
    .await;
    let get = |path: &str| {
        let url = format!("http://{addr}/{path}");
        async move {
            let mut cmd = tokio::process::Command::new("curl");
            cmd.args(["-s", "-m", "10", &url]);
            common::run_command(&mut cmd, format!("curl {url}"), None, TIMEOUT)
                .await
                .stdout
        }
    };
    assert_eq!(get("readyz").await, "ok");
    let m = get("metrics").await;
    assert!(
        m.contains("kubelet_pod_start_duration_seconds_count 1"),
        "the pod's start is not counted:\n{m}"
    );
    assert!(m.contains("kubelet_node_name{node=\"fake-1\"} 1"), "{m}");
    pods.delete("p", &DeleteParams::default())
        .await
        .expect("delete");
    wait_for(TIMEOUT, "the pod is gone", async || {
        match pods.get("p").await {
            Err(e) if e.is(Reason::NotFound) => Ok(()),
            Ok(_) => Err("still there".to_string()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
}
