//! A real node end to end: one master, one `flotilla agent` whose host is a
//! network namespace of the test's own on a test bridge, with its own
//! containerd inside, images from a real registry. The node registers with
//! a pod CIDR and a Lease; a pod bound to it runs (init container first,
//! sharing an emptyDir with the app) with an IP reachable from the node's
//! host namespace; deleting the pod stops it and removes its sandbox.

mod agent_support;
mod common;

use std::time::Duration;

use agent_support::lan::Lan;
use agent_support::{flt, http_get_in, AgentProc, Registry};
use common::{wait_for, Cluster, Opts};
use flotilla_client::{Api, Client, DeleteParams};
use flotilla_objects::coordination::{Lease, NODE_LEASE_NAMESPACE};
use flotilla_objects::core::{Node, Pod};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(90);

fn condition(p: &Pod, t: &str) -> String {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == t))
        .map(|c| c.status.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_pod_bound_to_the_node_runs_with_a_reachable_ip_and_stops_when_deleted() {
    let cluster = Cluster::start(1, Opts::default()).await;
    let mut lan = Lan::new();
    lan.add_host();
    let registry = Registry::start(cluster.dir(), lan.gateway);
    let name = format!("h1-{}", lan.id);
    let mut agent = AgentProc::start(
        &cluster.endpoints(),
        &name,
        &lan.hosts[0],
        cluster.dir(),
        &registry,
    );
    let client = Client::connect(&[cluster.client_addr(0)]).expect("client");

    // The node registers, gets a pod CIDR, turns Ready and renews its lease.
    let nodes = Api::<Node>::all(client.clone());
    let node = wait_for(TIMEOUT, "the node registers and is Ready", async || {
        let n = nodes.get(&name).await.map_err(|e| e.to_string())?;
        let ready = n.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        });
        if ready && !n.spec.pod_cidr.is_empty() {
            Ok(n)
        } else {
            Err(format!("not yet: {:?}", n.status.map(|s| s.conditions)))
        }
    })
    .await;
    assert!(
        node.spec.pod_cidr.starts_with("10.244."),
        "{}",
        node.spec.pod_cidr
    );
    assert_eq!(node.metadata.labels["flotilla.dev/nodepool"], "default");
    let st = node.status.clone().expect("status");
    assert!(st
        .addresses
        .iter()
        .any(|a| a.type_ == "InternalIP" && a.address == lan.hosts[0].ip.to_string()));
    assert!(st
        .node_info
        .container_runtime_version
        .starts_with("containerd://"));
    let leases = Api::<Lease>::namespaced(client.clone(), NODE_LEASE_NAMESPACE);
    let first = wait_for(TIMEOUT, "the lease exists", async || {
        leases.get(&name).await.map_err(|e| e.to_string())
    })
    .await;
    wait_for(TIMEOUT, "the lease is renewed", async || {
        let l = leases.get(&name).await.map_err(|e| e.to_string())?;
        if l.spec.renew_time > first.spec.renew_time {
            Ok(())
        } else {
            Err("not renewed yet".to_string())
        }
    })
    .await;

    // A pod bound to the node: its init container writes a page into an
    // emptyDir that the app container serves.
    let pods = Api::<Pod>::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {
            "nodeName": name,
            "terminationGracePeriodSeconds": 5,
            "volumes": [{"name": "www", "emptyDir": {}}],
            "initContainers": [{"name": "init", "image": "busybox",
                "command": ["sh", "-c", "echo from-init-$POD > /www/index.html"],
                "env": [{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                "volumeMounts": [{"name": "www", "mountPath": "/www"}]}],
            "containers": [{"name": "httpd", "image": "busybox",
                "command": ["sh", "-c", "echo serving $(cat /www/index.html); exec httpd -f -p 8080 -h /www"],
                "volumeMounts": [{"name": "www", "mountPath": "/www"}]},
                // A sidecar reaches the server over the pod's localhost.
                {"name": "sidecar", "image": "busybox",
                "command": ["sh", "-c", "until printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc localhost 8080 > /tmp/page; do sleep 0.2; done; echo sidecar got $(tail -n 1 /tmp/page); exec sleep 3600"]}]
        }
    }))
    .expect("pod");
    pods.create(&pod).await.expect("create");
    let running = wait_for(TIMEOUT, "the pod is Running and Ready", async || {
        let p = pods.get("web").await.map_err(|e| e.to_string())?;
        let phase = p
            .status
            .as_ref()
            .map(|s| s.phase.clone())
            .unwrap_or_default();
        if phase == "Running" && condition(&p, "Ready") == "True" {
            Ok(p)
        } else {
            Err(format!("{:?}", p.status))
        }
    })
    .await;
    let st = running.status.expect("status");
    assert_eq!(st.host_ip, lan.hosts[0].ip.to_string());
    assert!(
        st.pod_ip
            .starts_with(node.spec.pod_cidr.trim_end_matches("0/24")),
        "{} in {}",
        st.pod_ip,
        node.spec.pod_cidr
    );
    assert_eq!(
        st.init_container_statuses[0]
            .state
            .terminated
            .as_ref()
            .map(|t| t.exit_code),
        Some(0)
    );
    assert!(st.container_statuses[0].state.running.is_some());
    assert!(st.container_statuses[0]
        .container_id
        .starts_with("containerd://"));
    for t in ["PodScheduled", "Initialized", "ContainersReady", "Ready"] {
        assert_eq!(
            condition(&pods.get("web").await.expect("get"), t),
            "True",
            "{t}"
        );
    }

    // The pod's IP answers from the node's host namespace.
    let addr: std::net::SocketAddr = format!("{}:8080", st.pod_ip).parse().expect("addr");
    let netns = lan.hosts[0].netns.clone();
    let page = wait_for(Duration::from_secs(20), "the pod answers", async || {
        http_get_in(&netns, addr, "/")
            .await
            .map(|b| b.trim().to_string())
    })
    .await;
    assert_eq!(page, "from-init-web");

    // Logs and exec through the master (which relays to the agent).
    let servers = cluster.endpoints();
    flt(&servers, &["logs", "web"])
        .await
        .fails_with("a container name must be specified for pod web");
    let out = flt(&servers, &["logs", "web", "-c", "httpd"]).await.ok();
    assert_eq!(out.stdout, "serving from-init-web\n");
    let out = wait_for(
        TIMEOUT,
        "the sidecar reached the server over localhost",
        async || {
            let out = flt(&servers, &["logs", "web", "-c", "sidecar"]).await;
            if out.stdout.contains("sidecar got") {
                Ok(out.stdout)
            } else {
                Err(out.to_string())
            }
        },
    )
    .await;
    assert_eq!(out, "sidecar got from-init-web\n");
    let out = flt(&servers, &["logs", "web", "--timestamps", "-c", "httpd"])
        .await
        .ok();
    assert!(
        out.stdout.starts_with("20") && out.stdout.ends_with(" serving from-init-web\n"),
        "{out}"
    );
    let out = flt(
        &servers,
        &["exec", "web", "-c", "httpd", "--", "cat", "/www/index.html"],
    )
    .await
    .ok();
    assert_eq!(out.stdout, "from-init-web\n");
    let out = flt(
        &servers,
        &[
            "exec",
            "web",
            "-c",
            "httpd",
            "--",
            "sh",
            "-c",
            "echo oops >&2; exit 7",
        ],
    )
    .await;
    assert_eq!(out.code, Some(7), "{out}");
    assert_eq!(out.stderr, "oops\n");
    flt(&servers, &["logs", "nosuchpod"])
        .await
        .fails_with("not found");

    // -f follows a container until it exits.
    let counter: Pod = serde_json::from_value(json!({
        "metadata": {"name": "counter"},
        "spec": {"nodeName": name, "restartPolicy": "Never",
            "containers": [{"name": "c", "image": "busybox",
                "command": ["sh", "-c", "for i in 1 2 3; do echo line $i; sleep 1; done"]}]}
    }))
    .expect("pod");
    pods.create(&counter).await.expect("create");
    wait_for(TIMEOUT, "counter runs", async || {
        let p = pods.get("counter").await.map_err(|e| e.to_string())?;
        match p.status.map(|s| s.phase) {
            Some(ph) if ph == "Running" || ph == "Succeeded" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let out = flt(&servers, &["logs", "-f", "counter"]).await.ok();
    assert_eq!(out.stdout, "line 1\nline 2\nline 3\n");
    pods.delete("counter", &DeleteParams::default())
        .await
        .expect("delete");

    // Config maps and secrets: as environment and as read-only files.
    for (res, obj) in [
        (
            "configmaps",
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"},
            "data": {"greeting": "hello", "file.txt": "content"}}),
        ),
        (
            "secrets",
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
            "stringData": {"password": "s3cret"}}),
        ),
    ] {
        client
            .create(res, "default", &obj, false)
            .await
            .expect("create");
    }
    let config: Pod = serde_json::from_value(json!({
        "metadata": {"name": "config"},
        "spec": {"nodeName": name, "restartPolicy": "Never",
            "volumes": [{"name": "settings", "configMap": {"name": "settings"}},
                        {"name": "creds", "secret": {"secretName": "creds", "items": [{"key": "password", "path": "pw"}]}}],
            "containers": [{"name": "c", "image": "busybox",
                "command": ["sh", "-c", "echo $GREETING $PASSWORD $(cat /etc/settings/file.txt) $(cat /etc/creds/pw); touch /etc/settings/x 2>/dev/null || echo read-only"],
                "env": [{"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "greeting"}}},
                        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}}],
                "volumeMounts": [{"name": "settings", "mountPath": "/etc/settings"},
                                 {"name": "creds", "mountPath": "/etc/creds"}]}]}
    }))
    .expect("pod");
    pods.create(&config).await.expect("create");
    wait_for(TIMEOUT, "config succeeds", async || {
        let p = pods.get("config").await.map_err(|e| e.to_string())?;
        match p.status {
            Some(s) if s.phase == "Succeeded" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let out = flt(&servers, &["logs", "config"]).await.ok();
    assert_eq!(out.stdout, "hello s3cret content s3cret\nread-only\n");
    pods.delete("config", &DeleteParams::default())
        .await
        .expect("delete");

    // An agent restart adopts the running containers (same ids, no
    // restart); a pod deleted while the agent was down is stopped when it
    // comes back.
    let before = pods.get("web").await.expect("get").status.expect("status");
    let doomed: Pod = serde_json::from_value(json!({
        "metadata": {"name": "doomed"},
        "spec": {"nodeName": name, "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "600"]}]}
    }))
    .expect("pod");
    let doomed_uid = pods.create(&doomed).await.expect("create").metadata.uid;
    wait_for(TIMEOUT, "doomed runs", async || {
        let p = pods.get("doomed").await.map_err(|e| e.to_string())?;
        match p.status.map(|s| s.phase) {
            Some(ph) if ph == "Running" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    agent.stop();
    pods.delete(
        "doomed",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await
    .expect("delete");
    agent.restart();
    let socket = agent.socket();
    wait_for(
        TIMEOUT,
        "the deleted pod's sandbox is removed",
        async || {
            let mut cri = flotilla_agent::cri::Cri::connect(&socket)
                .await
                .map_err(|e| e.to_string())?;
            let boxes = cri
                .list_pod_sandboxes(Default::default())
                .await
                .map_err(|e| e.to_string())?;
            if boxes
                .iter()
                .any(|b| b.metadata.as_ref().is_some_and(|m| m.uid == doomed_uid))
            {
                Err(format!("{} sandboxes", boxes.len()))
            } else {
                Ok(())
            }
        },
    )
    .await;
    let after = pods.get("web").await.expect("get").status.expect("status");
    assert_eq!(
        after.container_statuses[0].container_id,
        before.container_statuses[0].container_id
    );
    assert_eq!(after.container_statuses[0].restart_count, 0);
    assert_eq!(after.pod_ip, before.pod_ip);

    // Deleting the pod stops its containers and removes its sandbox; the
    // object goes once the agent confirms.
    pods.delete("web", &DeleteParams::default())
        .await
        .expect("delete");
    for pod in ["web", "counter", "config"] {
        wait_for(TIMEOUT, "the pod objects are gone", async || {
            match pods.get(pod).await {
                Err(e) if e.is(flotilla_client::Reason::NotFound) => Ok(()),
                Ok(p) => Err(format!("still there: {:?}", p.metadata.deletion_timestamp)),
                Err(e) => Err(e.to_string()),
            }
        })
        .await;
    }
    let mut cri = flotilla_agent::cri::Cri::connect(&agent.socket())
        .await
        .expect("cri");
    assert!(cri
        .list_pod_sandboxes(Default::default())
        .await
        .expect("list")
        .is_empty());
    assert!(cri.list_containers("").await.expect("list").is_empty());
    assert!(
        http_get_in(&netns, addr, "/").await.is_err(),
        "the pod still answers after its deletion"
    );
    drop(agent);
}
