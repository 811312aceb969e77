//! Objects as Flotilla's API server serves them, for etcd's side of the
//! object benchmark.
//!
//! A get or list of Flotilla returns each pod as its API server stored it:
//! defaulted (image pull policy, probe fields, tolerations, DNS policy ...)
//! and stamped (uid, creationTimestamp, status), about 1.6 times the bytes
//! the benchmark sends. Kubernetes' API server stores the same defaults in
//! etcd. So that etcd's ranges return (and the client decodes) the same
//! bytes as Flotilla's lists and gets, the pods that those points read are
//! written to etcd in that form, made by Flotilla's own API server code
//! in this process over its in-memory store.

use std::sync::Arc;

use anyhow::{Context, Result};
use flotilla_control::memstore::MemStore;
use flotilla_control::{ApiConfig, ApiServer};
use flotilla_objects::api::ObjectApi;
use serde_json::{json, Value};

/// `pods` (all in `ns`) as a Flotilla master would serve them.
pub async fn as_served(ns: &str, pods: &[Value]) -> Result<Vec<Value>> {
    let api = ApiServer::new(Arc::new(MemStore::new()), ApiConfig::default());
    api.ensure_namespaces()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("system namespaces")?;
    let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
    if let Err(e) = ObjectApi::create(&api, "namespaces", "", namespace, false).await {
        if !e.to_string().contains("already exists") {
            return Err(anyhow::anyhow!("namespace {ns}: {e}"));
        }
    }
    let mut out = Vec::with_capacity(pods.len());
    for p in pods {
        let w = ObjectApi::create(&api, "pods", ns, p.clone(), false)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
            .context("a pod of the benchmark")?;
        out.push(w.object);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn served_pods_carry_the_api_servers_defaults_and_stamps() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p-00001", "namespace": "bench"},
            "spec": {"containers": [{"name": "web", "image": "web:1",
                "readinessProbe": {"httpGet": {"path": "/", "port": 80}}}]}});
        let served = as_served("bench", std::slice::from_ref(&pod))
            .await
            .expect("served");
        let s = &served[0];
        assert_eq!(s["metadata"]["name"], "p-00001");
        assert!(s["metadata"]["uid"].is_string(), "{s}");
        assert!(s["metadata"]["creationTimestamp"].is_string(), "{s}");
        assert_eq!(
            s["spec"]["containers"][0]["imagePullPolicy"],
            "IfNotPresent"
        );
        assert_eq!(
            s["spec"]["containers"][0]["readinessProbe"]["timeoutSeconds"],
            1
        );
        assert_eq!(s["status"]["phase"], "Pending");
        let bytes = |v: &Value| serde_json::to_vec(v).map(|b| b.len()).unwrap_or(0);
        assert!(bytes(s) > bytes(&pod) * 3 / 2, "{s}");
    }
}
