//! A cluster in memory for the controllers' tests: the API server over the
//! in-memory store, leader loops run for one term, and a stand-in for the
//! node agents that makes pods run, become ready, finish and go.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use flotilla_client::Api;
use flotilla_control::memstore::MemStore;
use flotilla_control::{ApiConfig, ApiServer};
use flotilla_objects::api::{DeleteParams, ObjectApi};
use flotilla_objects::core::Pod;
use flotilla_objects::registry;
use flotilla_objects::Resource;
use flotilla_runtime::{Informers, LeaderContext, LeaderLoop};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

pub struct Env {
    pub api: ApiServer,
    pub dyn_api: Arc<dyn ObjectApi>,
    pub informers: Informers,
    stop: CancellationToken,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Env {
    pub async fn new() -> Env {
        let store = MemStore::new();
        store.set_term(1);
        let api = ApiServer::new(Arc::new(store.clone()), ApiConfig::default());
        api.ensure_namespaces().await.expect("namespaces");
        let dyn_api: Arc<dyn ObjectApi> = Arc::new(api.fenced(1));
        Env {
            informers: Informers::new(dyn_api.clone()),
            api,
            dyn_api,
            stop: CancellationToken::new(),
        }
    }

    /// Run a leader loop for this env's term until the env is dropped.
    pub fn run(&self, l: impl LeaderLoop) {
        let ctx = LeaderContext {
            term: 1,
            api: self.dyn_api.clone(),
            informers: self.informers.clone(),
            stop: self.stop.clone(),
        };
        tokio::spawn(l.run(ctx));
    }

    pub fn typed<K: Resource>(&self, ns: &str) -> Api<K> {
        Api::namespaced_with(self.dyn_api.clone(), ns)
    }

    pub async fn apply(&self, manifest: Value) -> Value {
        self.api
            .apply("default", manifest, false)
            .await
            .expect("apply")
            .0
            .object
    }

    pub async fn patch(&self, plural: &str, name: &str, patch: Value) {
        ObjectApi::patch(&self.api, plural, "default", name, patch, false, false)
            .await
            .expect("patch");
    }

    pub async fn pods(&self) -> Vec<Pod> {
        self.typed::<Pod>("default")
            .list(&Default::default())
            .await
            .expect("pods")
            .items
    }

    /// Stand in for the agents: every pod is bound to `node-<n>`, and runs
    /// and becomes ready unless its labels say `test/ready: "no"`, and ends
    /// as its `test/exit` label says (see `act`); pods being deleted go at once.
    pub fn kubelet(&self) {
        let api = self.api.clone();
        let pods = self.informers.get::<Pod>();
        let stop = self.stop.clone();
        tokio::spawn(async move {
            let mut sub = pods.subscribe();
            let mut n = 0usize;
            loop {
                for p in pods.list() {
                    let _ = act(&api, &p, &mut n).await;
                }
                tokio::select! {
                    _ = sub.next() => {}
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                    _ = stop.cancelled() => return,
                }
            }
        });
    }
}

async fn act(api: &ApiServer, p: &Pod, n: &mut usize) -> Result<(), flotilla_objects::ApiError> {
    let m = &p.metadata;
    if m.deletion_timestamp.is_some() {
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            precondition_uid: m.uid.clone(),
            ..Default::default()
        };
        api.delete(&registry::POD, &m.namespace, &m.name, &dp)
            .await?;
        return Ok(());
    }
    if p.spec.node_name.is_empty() {
        *n += 1;
        api.bind(&m.namespace, &m.name, &format!("node-{}", *n % 3))
            .await?;
        return Ok(());
    }
    let phase = p.status.as_ref().map(|s| s.phase.as_str()).unwrap_or("");
    // A running pod labelled `test/exit` finishes with that exit code:
    // Succeeded for 0; otherwise Failed, or restarted in place under
    // restartPolicy OnFailure (its restart count goes up).
    if let ("Running", Some(code)) = (phase, m.labels.get("test/exit")) {
        let status = if code == "0" {
            json!({"status": {"phase": "Succeeded"}})
        } else if p.spec.restart_policy == "OnFailure" {
            let restarts = p
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.first())
                .map_or(0, |c| c.restart_count);
            json!({"status": {"containerStatuses": [{"name": p.spec.containers[0].name, "restartCount": restarts + 1}]}})
        } else {
            json!({"status": {"phase": "Failed"}})
        };
        ObjectApi::patch(api, "pods", &m.namespace, &m.name, status, true, false).await?;
        return Ok(());
    }
    if phase == "Pending" {
        let ready = m.labels.get("test/ready").map(String::as_str) != Some("no");
        let now = flotilla_objects::Time(Utc::now());
        let status = json!({"status": {"phase": "Running", "conditions": [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Ready", "status": if ready { "True" } else { "False" }, "lastTransitionTime": now.to_string()}]}});
        ObjectApi::patch(api, "pods", &m.namespace, &m.name, status, true, false).await?;
    }
    Ok(())
}

/// Wait (up to 10 s) for a condition on the cluster.
pub async fn until<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
