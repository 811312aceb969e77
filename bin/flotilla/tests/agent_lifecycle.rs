//! Pod lifecycles on a real node (one master, one agent with its own
//! containerd in a test-made host namespace): each restart policy with
//! exit codes and kubelet's back-off, an image that does not exist
//! (ErrImagePull, then ImagePullBackOff with the registry's message),
//! liveness and readiness probes of each kind, and graceful termination of
//! a process that traps SIGTERM and of one that ignores it. The pods run
//! side by side on the one node.

mod agent_support;
mod common;

use std::time::Duration;

use agent_support::lan::Lan;
use agent_support::{AgentProc, Registry};
use common::{wait_for, Cluster, Opts};
use flotilla_client::{Api, Client, DeleteParams, Reason};
use flotilla_objects::core::{ContainerStatus, Pod};
use serde_json::{json, Value};

const TIMEOUT: Duration = Duration::from_secs(120);

fn pod(name: &str, node: &str, policy: &str, containers: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"nodeName": node, "restartPolicy": policy, "containers": containers,
                 "terminationGracePeriodSeconds": 2}
    }))
    .expect("pod")
}

fn sh(name: &str, script: &str) -> Value {
    json!({"name": name, "image": "busybox", "command": ["sh", "-c", script]})
}

async fn until(pods: &Api<Pod>, name: &str, what: &str, f: impl Fn(&Pod) -> bool) -> Pod {
    wait_for(TIMEOUT, &format!("{name}: {what}"), async || {
        let p = pods.get(name).await.map_err(|e| e.to_string())?;
        if f(&p) {
            Ok(p)
        } else {
            Err(format!("{:?}", p.status))
        }
    })
    .await
}

fn phase(p: &Pod) -> &str {
    p.status.as_ref().map_or("", |s| s.phase.as_str())
}

fn cs(p: &Pod) -> ContainerStatus {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.first().cloned())
        .unwrap_or_default()
}

fn waiting_reason(p: &Pod) -> String {
    cs(p).state.waiting.map(|w| w.reason).unwrap_or_default()
}

fn ready(p: &Pod) -> Option<bool> {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status == "True")
}

#[tokio::test]
async fn restart_policies_pull_errors_probes_and_graceful_termination() {
    let cluster = Cluster::start(1, Opts::default()).await;
    let mut lan = Lan::new();
    lan.add_host();
    let registry = Registry::start(cluster.dir(), lan.gateway);
    let node = format!("h1-{}", lan.id);
    let _agent = AgentProc::start(
        &cluster.endpoints(),
        &node,
        &lan.hosts[0],
        cluster.dir(),
        &registry,
    );
    let client = Client::connect(&[cluster.client_addr(0)]).expect("client");
    let pods = Api::<Pod>::namespaced(client.clone(), "default");
    let marks = cluster.dir().join("marks");
    std::fs::create_dir_all(&marks).expect("marks dir");

    let mut all = vec![
        pod(
            "crash",
            &node,
            "Always",
            json!([sh("c", "echo run; exit 3")]),
        ),
        pod("done", &node, "Never", json!([sh("c", "exit 0")])),
        pod("fail", &node, "Never", json!([sh("c", "exit 2")])),
        pod("onfail-ok", &node, "OnFailure", json!([sh("c", "exit 0")])),
        pod(
            "nosuch",
            &node,
            "Always",
            json!([{"name": "c", "image": "nosuch/image:1"}]),
        ),
        // Alive for a few seconds, then its liveness file goes: restarted.
        pod(
            "liveness",
            &node,
            "Always",
            json!([{
            "name": "c", "image": "busybox",
            "command": ["sh", "-c", "touch /tmp/alive; sleep 3; rm /tmp/alive; sleep 600"],
            "livenessProbe": {"exec": {"command": ["test", "-f", "/tmp/alive"]},
                              "periodSeconds": 1, "failureThreshold": 1}}]),
        ),
        // Ready through httpGet; a tcpSocket probe on a closed port never is.
        pod(
            "http-ready",
            &node,
            "Always",
            json!([{
            "name": "c", "image": "busybox",
            "command": ["sh", "-c", "mkdir /www && echo ok > /www/index.html && exec httpd -f -p 8080 -h /www"],
            "ports": [{"name": "http", "containerPort": 8080}],
            "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1}}]),
        ),
        pod(
            "tcp-unready",
            &node,
            "Always",
            json!([{
            "name": "c", "image": "busybox", "command": ["sleep", "600"],
            "readinessProbe": {"tcpSocket": {"port": 9999}, "periodSeconds": 1}}]),
        ),
        // Security contexts: a user, a group and a read-only root; and
        // runAsNonRoot without a user, refused.
        pod(
            "secure",
            &node,
            "Never",
            json!([{
            "name": "c", "image": "busybox",
            "command": ["sh", "-c", "id -u; id -g; touch /x 2>/dev/null || echo read-only"],
            "securityContext": {"runAsUser": 1000, "runAsGroup": 2000, "readOnlyRootFilesystem": true}}]),
        ),
        // Over its memory limit: OOMKilled. It waits a second first: the
        // runtime's shim watches the cgroup for OOM kills only once the
        // process has started, and a kill before that is never reported
        // (in CI the container died in its first second and stayed
        // "Error", exit 137). Kubelet, on the same runtime, has the same
        // blind spot.
        pod(
            "oom",
            &node,
            "Never",
            json!([{"name": "c", "image": "busybox",
            "command": ["sh", "-c", "sleep 1; head -c 200000000 /dev/zero | tail"],
            "resources": {"limits": {"memory": "16Mi"}}}]),
        ),
        pod(
            "nonroot",
            &node,
            "Always",
            json!([{"name": "c", "image": "busybox", "command": ["sleep", "600"],
            "securityContext": {"runAsNonRoot": true}}]),
        ),
    ];
    // Graceful termination: one traps SIGTERM and leaves a mark, one ignores it.
    for (name, script) in [
        ("trapper", "trap 'echo TERM > /marks/trapper; exit 0' TERM; echo up > /marks/trapper-up; while true; do sleep 0.2; done"),
        ("ignorer", "trap '' TERM; echo up > /marks/ignorer-up; while true; do sleep 0.2; done"),
    ] {
        let mut p = pod(name, &node, "Always", json!([sh("c", script)]));
        p.spec.containers[0].volume_mounts = serde_json::from_value(json!([{"name": "marks", "mountPath": "/marks"}])).expect("mounts");
        p.spec.volumes = serde_json::from_value(json!([{"name": "marks", "hostPath": {"path": marks.to_string_lossy()}}])).expect("volumes");
        all.push(p);
    }
    for p in &all {
        pods.create(p).await.expect("create");
    }

    // Always: restarted with the count and the last exit; then back-off.
    let p = until(&pods, "crash", "restarted and backing off", |p| {
        let c = cs(p);
        c.restart_count >= 1
            && c.last_state
                .terminated
                .as_ref()
                .is_some_and(|t| t.exit_code == 3)
            && waiting_reason(p) == "CrashLoopBackOff"
    })
    .await;
    assert_eq!(phase(&p), "Running");
    let out = agent_support::flt(&cluster.endpoints(), &["logs", "crash", "--previous"])
        .await
        .ok();
    assert_eq!(out.stdout, "run\n");
    // Never / OnFailure: terminal phases with the exit codes.
    let p = until(&pods, "done", "Succeeded", |p| phase(p) == "Succeeded").await;
    assert_eq!(
        cs(&p).state.terminated.map(|t| (t.exit_code, t.reason)),
        Some((0, "Completed".into()))
    );
    let p = until(&pods, "fail", "Failed", |p| phase(p) == "Failed").await;
    assert_eq!(
        cs(&p).state.terminated.map(|t| (t.exit_code, t.reason)),
        Some((2, "Error".into()))
    );
    let p = until(&pods, "onfail-ok", "Succeeded", |p| phase(p) == "Succeeded").await;
    assert_eq!(cs(&p).restart_count, 0);
    // A missing image: ErrImagePull with the registry's word, then back-off.
    let p = until(&pods, "nosuch", "ErrImagePull", |p| {
        waiting_reason(p) == "ErrImagePull"
    })
    .await;
    let msg = cs(&p).state.waiting.map(|w| w.message).unwrap_or_default();
    assert!(msg.contains("nosuch/image"), "{msg}");
    until(&pods, "nosuch", "ImagePullBackOff", |p| {
        waiting_reason(p) == "ImagePullBackOff"
    })
    .await;
    assert_eq!(phase(&pods.get("nosuch").await.expect("get")), "Pending");
    // Probes.
    until(&pods, "liveness", "restarted by its liveness probe", |p| {
        cs(p).restart_count >= 1
    })
    .await;
    until(&pods, "http-ready", "Ready through httpGet", |p| {
        ready(p) == Some(true) && cs(p).ready
    })
    .await;
    let p = until(&pods, "tcp-unready", "running", |p| {
        cs(p).state.running.is_some()
    })
    .await;
    assert_eq!(
        ready(&p),
        Some(false),
        "a failing tcpSocket readiness probe"
    );

    // containerd may see the exit before the cgroup's OOM event (under
    // load): the reason is "Error" first, then OOMKilled once the agent
    // reads the runtime's status again.
    let p = until(&pods, "oom", "Failed with reason OOMKilled", |p| {
        phase(p) == "Failed"
            && cs(p).state.terminated.map(|t| t.reason).as_deref() == Some("OOMKilled")
    })
    .await;
    assert_eq!(p.status.map(|s| s.qos_class).as_deref(), Some("Burstable"));
    // Security contexts.
    until(&pods, "secure", "Succeeded", |p| phase(p) == "Succeeded").await;
    let out = agent_support::flt(&cluster.endpoints(), &["logs", "secure"])
        .await
        .ok();
    assert_eq!(out.stdout, "1000\n2000\nread-only\n");
    until(&pods, "nonroot", "refused", |p| {
        waiting_reason(p) == "CreateContainerConfigError"
    })
    .await;

    // Graceful termination.
    for name in ["trapper", "ignorer"] {
        wait_for(TIMEOUT, &format!("{name} is up"), async || {
            if marks.join(format!("{name}-up")).exists() {
                Ok(())
            } else {
                Err("not yet")
            }
        })
        .await;
        pods.delete(name, &DeleteParams::default())
            .await
            .expect("delete");
    }
    for name in ["trapper", "ignorer"] {
        wait_for(TIMEOUT, &format!("{name} is gone"), async || {
            match pods.get(name).await {
                Err(e) if e.is(Reason::NotFound) => Ok(()),
                Ok(_) => Err("still there".to_string()),
                Err(e) => Err(e.to_string()),
            }
        })
        .await;
    }
    assert_eq!(
        std::fs::read_to_string(marks.join("trapper"))
            .expect("the trap ran")
            .trim(),
        "TERM"
    );
    assert!(!marks.join("ignorer").exists());
    // Drain: refused while pods no controller owns are there, then forced;
    // the node stays cordoned until uncordoned.
    let servers = cluster.endpoints();
    let rs: Value = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "keeper"},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "k"}},
            "template": {"metadata": {"labels": {"app": "k"}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}});
    let rs = client
        .create("replicasets", "default", &rs, false)
        .await
        .expect("rs")
        .0;
    let mut owned = pod("owned", &node, "Always", json!([sh("c", "exec sleep 600")]));
    owned.metadata.owner_references = serde_json::from_value(json!([{"apiVersion": "apps/v1",
        "kind": "ReplicaSet", "name": "keeper", "uid": rs["metadata"]["uid"], "controller": true}]))
    .expect("owner");
    pods.create(&owned).await.expect("owned");
    until(&pods, "owned", "running", |p| phase(p) == "Running").await;
    agent_support::flt(&servers, &["drain", &node])
        .await
        .fails_with("cannot delete pods that declare no controller");
    let out = agent_support::flt(
        &servers,
        &["drain", &node, "--force", "--grace-period", "1"],
    )
    .await
    .ok();
    assert!(out.stdout.contains("evicting pod default/owned"), "{out}");
    assert!(
        out.stdout.ends_with(&format!("node/{node} drained\n")),
        "{out}"
    );
    let left = pods
        .list(&flotilla_client::ListParams::default().fields(&format!("spec.nodeName={node}")))
        .await
        .expect("list");
    assert!(
        left.items.is_empty(),
        "{:?}",
        left.items
            .iter()
            .map(|p| &p.metadata.name)
            .collect::<Vec<_>>()
    );
    let n = flotilla_client::Api::<flotilla_objects::core::Node>::all(client.clone())
        .get(&node)
        .await
        .expect("node");
    assert!(n.spec.unschedulable);
    let out = agent_support::flt(&servers, &["uncordon", &node])
        .await
        .ok();
    assert_eq!(out.stdout, format!("node/{node} uncordoned\n"));
}
