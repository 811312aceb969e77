//! The cluster autoscaler across a leader SIGKILL, with the `exec`
//! provider: three `flotilla master` processes run `--cloud-provider exec`
//! with a script that starts (and stops) hollow agents as processes of
//! their own, idempotently by node name. The leader is killed as soon as
//! the scale-up's intent is in the store; the new leader finishes it: the
//! pool ends with exactly the nodes it intended, every pod Running, and the
//! script was never asked for a node beyond those.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::hollow::node_per_pod_pool;
use common::*;
use flotilla_client::{Api, Client};
use flotilla_objects::apps::Deployment;
use flotilla_objects::core::{Node, Pod};
use flotilla_objects::nodepool::NodePool;
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(90);

/// Stops every agent the script started, however the test ends.
struct Agents(PathBuf);

impl Drop for Agents {
    fn drop(&mut self) {
        let Ok(dir) = std::fs::read_dir(&self.0) else {
            return;
        };
        for e in dir.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "pid") {
                if let Some(pid) = std::fs::read_to_string(&p)
                    .ok()
                    .and_then(|s| s.trim().parse::<i32>().ok())
                {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
    }
}

/// The operator's command: `node.sh create|delete POOL NODE`.
fn script(state: &Path, servers: &str) -> PathBuf {
    let path = state.join("node.sh");
    let body = format!(
        r#"#!/bin/sh
set -e
verb=$1 pool=$2 node=$3
dir={state}
echo "$verb $node" >> "$dir/calls"
pidfile="$dir/$node.pid"
case "$verb" in
create)
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then exit 0; fi
  setsid {bin} agent --runtime fake --name "$node" --pool "$pool" --node-ip 10.0.0.9 \
    --metrics-addr 127.0.0.1:0 --server {servers} --data-dir "$dir/$node" \
    </dev/null >"$dir/$node.log" 2>&1 &
  echo $! > "$pidfile"
  ;;
delete)
  if [ -f "$pidfile" ]; then kill "$(cat "$pidfile")" 2>/dev/null || true; rm -f "$pidfile"; fi
  ;;
esac
"#,
        state = state.display(),
        bin = flotilla_bin().display(),
    );
    std::fs::write(&path, body).expect("script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

fn running(p: &Pod) -> bool {
    p.status.as_ref().is_some_and(|s| s.phase == "Running")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_killed_during_a_scale_up_leaves_exactly_the_intended_nodes() {
    if skip_on_etcd(
        "a_leader_killed_during_a_scale_up_leaves_exactly_the_intended_nodes",
        false,
    ) {
        return;
    }
    let state = tempfile::tempdir().expect("state dir");
    let _agents = Agents(state.path().to_path_buf());
    // The masters' addresses are known only once they run: the script
    // reads them from a file written below.
    let servers_file = state.path().join("servers");
    let cmd = script(state.path(), &format!("$(cat {})", servers_file.display()));
    let opts = Opts {
        extra_args: vec![
            "--cloud-provider".into(),
            "exec".into(),
            "--exec-provider-command".into(),
            cmd.display().to_string(),
            "--nodepools".into(),
            "burst".into(),
            "--scan-interval".into(),
            "1s".into(),
            "--scale-down-unneeded-time".into(),
            "1h".into(),
        ],
        ..Default::default()
    };
    let mut cluster = Cluster::start(3, opts).await;
    std::fs::write(&servers_file, cluster.endpoints()).expect("servers file");
    let addrs: Vec<String> = (0..3).map(|i| cluster.client_addr(i)).collect();
    let client = Client::connect(&addrs).expect("client");
    let pools = Api::<NodePool>::all(client.clone());
    let nodes = Api::<Node>::all(client.clone());
    let pods = Api::<Pod>::namespaced(client.clone(), "default");
    let deploys = Api::<Deployment>::namespaced(client.clone(), "default");

    // Each pod needs a node of its own.
    let (pool, request) = node_per_pod_pool("burst");
    pools.create(&pool).await.expect("create pool");
    let deploy: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "burst", "namespace": "default"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "burst"}},
            "template": {"metadata": {"labels": {"app": "burst"}},
                "spec": {"nodeSelector": {"flotilla.dev/nodepool": "burst"},
                    "containers": [{"name": "c", "image": "busybox",
                    "resources": {"requests": {"cpu": request, "memory": "16Mi"}}}]}}}
    }))
    .expect("deployment");
    deploys.create(&deploy).await.expect("create deployment");

    let intended = wait_for(
        TIMEOUT,
        "the scale-up's intent is in the store",
        async || {
            let p = pools.get("burst").await.map_err(|e| e.to_string())?;
            let st = p.status.unwrap_or_default();
            if st.creating.len() == 2 && st.target_size == Some(2) {
                Ok(st
                    .creating
                    .iter()
                    .map(|o| o.name.clone())
                    .collect::<BTreeSet<_>>())
            } else {
                Err(format!("status {st:?}"))
            }
        },
    )
    .await;
    let leader = cluster.leader().await;
    cluster.kill(leader);

    wait_for(
        TIMEOUT,
        "the intended nodes Ready and both pods Running",
        async || {
            let ns = nodes
                .list(&Default::default())
                .await
                .map_err(|e| e.to_string())?;
            let in_pool: BTreeSet<String> = ns
                .items
                .iter()
                .filter(|n| {
                    n.metadata
                        .labels
                        .get("flotilla.dev/nodepool")
                        .map(String::as_str)
                        == Some("burst")
                })
                .map(|n| n.metadata.name.clone())
                .collect();
            let ps = pods
                .list(&flotilla_client::ListParams::default().labels("app=burst"))
                .await
                .map_err(|e| e.to_string())?;
            let run = ps.items.iter().filter(|p| running(p)).count();
            let st = pools
                .get("burst")
                .await
                .map_err(|e| e.to_string())?
                .status
                .unwrap_or_default();
            if in_pool == intended
                && run == 2
                && st.creating.is_empty()
                && st.target_size == Some(2)
            {
                Ok(())
            } else {
                Err(format!(
                    "pool nodes {in_pool:?} (intended {intended:?}), {run} running, status {st:?}"
                ))
            }
        },
    )
    .await;
    // The script was never asked for a node the first leader did not name.
    let calls = std::fs::read_to_string(state.path().join("calls")).expect("calls");
    let asked: BTreeSet<String> = calls
        .lines()
        .filter_map(|l| l.strip_prefix("create "))
        .map(str::to_string)
        .collect();
    assert_eq!(asked, intended, "calls:\n{calls}");
    assert!(!calls.contains("delete"), "calls:\n{calls}");
}
