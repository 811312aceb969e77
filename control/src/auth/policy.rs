//! The RBAC objects a master authorizes with: an index kept from this
//! replica's own watch of Roles, ClusterRoles and their bindings (in
//! process, as kube-apiserver's RBAC authorizer keeps informers), so that a
//! decision reads memory, never the store. [`follow`] keeps such an index
//! of any kinds.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use flotilla_objects::api::{EventType, ListParams, ObjectApi, WatchParams};
use flotilla_objects::rbac::{
    rule_allows, subject_matches, Attributes, ClusterRole, ClusterRoleBinding, PolicyRule, Role,
    RoleBinding,
};
use flotilla_objects::registry::{self, ResourceInfo};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::ApiServer;

/// (namespace, name) -> object, per kind.
#[derive(Default)]
pub struct Policy {
    roles: HashMap<(String, String), Role>,
    cluster_roles: HashMap<String, ClusterRole>,
    role_bindings: HashMap<(String, String), RoleBinding>,
    cluster_role_bindings: HashMap<String, ClusterRoleBinding>,
}

impl Policy {
    fn cluster_role_rules(&self, name: &str) -> &[PolicyRule] {
        self.cluster_roles
            .get(name)
            .map(|r| r.rules.as_slice())
            .unwrap_or(&[])
    }

    /// Whether some binding grants `user` (in `groups`) a rule matching `a`.
    pub fn allows(&self, user: &str, groups: &[String], a: &Attributes) -> bool {
        for b in self.cluster_role_bindings.values() {
            if b.subjects
                .iter()
                .any(|s| subject_matches(s, user, groups, ""))
                && self
                    .cluster_role_rules(&b.role_ref.name)
                    .iter()
                    .any(|r| rule_allows(r, a))
            {
                return true;
            }
        }
        if a.namespace.is_empty() {
            return false;
        }
        for ((ns, _), b) in &self.role_bindings {
            if *ns != a.namespace
                || !b
                    .subjects
                    .iter()
                    .any(|s| subject_matches(s, user, groups, ns))
            {
                continue;
            }
            let rules: &[PolicyRule] = if b.role_ref.kind == "ClusterRole" {
                self.cluster_role_rules(&b.role_ref.name)
            } else {
                self.roles
                    .get(&(ns.clone(), b.role_ref.name.clone()))
                    .map(|r| r.rules.as_slice())
                    .unwrap_or(&[])
            };
            if rules.iter().any(|r| rule_allows(r, a)) {
                return true;
            }
        }
        false
    }
}

/// An in-memory index of some kinds, kept from a list then a watch.
pub(crate) trait Indexed: Send + Sync + 'static {
    /// Take in one listed or watched object (`Deleted`: remove it).
    fn apply(&mut self, info: &ResourceInfo, kind: EventType, obj: &Value);
    /// Forget every object of `info` (before a fresh list).
    fn clear(&mut self, info: &ResourceInfo);
}

impl Indexed for Policy {
    fn apply(&mut self, info: &ResourceInfo, kind: EventType, obj: &Value) {
        let ns = obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let del = kind == EventType::Deleted;
        fn put<K: std::hash::Hash + Eq, T: DeserializeOwned>(
            m: &mut HashMap<K, T>,
            k: K,
            obj: &Value,
            del: bool,
        ) {
            if del {
                m.remove(&k);
                return;
            }
            match serde_json::from_value::<T>(obj.clone()) {
                Ok(t) => {
                    m.insert(k, t);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "an RBAC object that does not decode is ignored")
                }
            }
        }
        match info.kind {
            "Role" => put(&mut self.roles, (ns, name), obj, del),
            "ClusterRole" => put(&mut self.cluster_roles, name, obj, del),
            "RoleBinding" => put(&mut self.role_bindings, (ns, name), obj, del),
            "ClusterRoleBinding" => put(&mut self.cluster_role_bindings, name, obj, del),
            _ => {}
        }
    }

    fn clear(&mut self, info: &ResourceInfo) {
        match info.kind {
            "Role" => self.roles.clear(),
            "ClusterRole" => self.cluster_roles.clear(),
            "RoleBinding" => self.role_bindings.clear(),
            "ClusterRoleBinding" => self.cluster_role_bindings.clear(),
            _ => {}
        }
    }
}

const KINDS: [&ResourceInfo; 4] = [
    &registry::ROLE,
    &registry::CLUSTER_ROLE,
    &registry::ROLE_BINDING,
    &registry::CLUSTER_ROLE_BINDING,
];

/// The index, and whether every kind has been listed once.
#[derive(Clone)]
pub struct PolicyIndex {
    pub policy: Arc<RwLock<Policy>>,
    synced: watch::Receiver<bool>,
}

/// Keep `index` up to date with `kinds` through `api` until `stop`; the
/// receiver turns true once every kind has been listed.
pub(crate) fn follow<I: Indexed>(
    api: ApiServer,
    kinds: &'static [&'static ResourceInfo],
    index: Arc<RwLock<I>>,
    stop: CancellationToken,
) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    let counts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let tx = Arc::new(tx);
    for info in kinds {
        let (api, index, stop, tx, counts) = (
            api.clone(),
            index.clone(),
            stop.clone(),
            tx.clone(),
            counts.clone(),
        );
        tokio::spawn(async move {
            let mut first = true;
            while !stop.is_cancelled() {
                match follow_kind(&api, info, &*index, &stop, &mut || {
                    if std::mem::take(&mut first)
                        && counts.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1
                            == kinds.len()
                    {
                        let _ = tx.send(true);
                    }
                })
                .await
                {
                    Ok(()) => {}
                    Err(e) => {
                        tracing::debug!(kind = info.kind, error = %e, "authorization watch ended; listing again")
                    }
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
        });
    }
    rx
}

/// Wait until `synced` turns true, for at most `limit`.
pub(crate) async fn wait_synced(synced: &watch::Receiver<bool>, limit: Duration) -> bool {
    let mut rx = synced.clone();
    tokio::time::timeout(limit, rx.wait_for(|s| *s))
        .await
        .is_ok_and(|r| r.is_ok())
}

impl PolicyIndex {
    /// Start following the RBAC kinds through `api`, until `stop`.
    pub fn follow(api: ApiServer, stop: CancellationToken) -> PolicyIndex {
        let policy = Arc::new(RwLock::new(Policy::default()));
        let synced = follow(api, &KINDS, policy.clone(), stop);
        PolicyIndex { policy, synced }
    }

    /// Wait until every kind has been listed, for at most `limit`.
    pub async fn wait_synced(&self, limit: Duration) -> bool {
        wait_synced(&self.synced, limit).await
    }

    pub fn allows(&self, user: &str, groups: &[String], a: &Attributes) -> bool {
        self.policy
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .allows(user, groups, a)
    }
}

/// List `info` into the index (replacing what it held), then follow its
/// changes until the watch ends.
async fn follow_kind<I: Indexed>(
    api: &ApiServer,
    info: &'static ResourceInfo,
    policy: &RwLock<I>,
    stop: &CancellationToken,
    listed: &mut (dyn FnMut() + Send),
) -> Result<(), flotilla_objects::api::ApiError> {
    let list = ObjectApi::list(
        api,
        info.plural,
        "",
        &ListParams {
            serializable: true,
            ..Default::default()
        },
    )
    .await?;
    {
        let mut p = policy.write().unwrap_or_else(|p| p.into_inner());
        p.clear(info);
        for o in &list.items {
            p.apply(info, EventType::Added, o);
        }
    }
    listed();
    let mut w = ObjectApi::watch(
        api,
        info.plural,
        "",
        &WatchParams {
            resource_version: list.resource_version,
            ..Default::default()
        },
    )
    .await?;
    loop {
        let ev = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            ev = w.next() => ev,
        };
        let Some(ev) = ev else { return Ok(()) };
        let ev = ev?;
        if ev.kind == EventType::Bookmark {
            continue;
        }
        let obj: Value = serde_json::from_slice(&ev.object)
            .map_err(|e| flotilla_objects::api::ApiError::internal(e.to_string()))?;
        policy
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .apply(info, ev.kind, &obj);
    }
}
