//! The NoExecute taint manager: pods on a node with a NoExecute taint are
//! deleted at once if they do not tolerate it, or `tolerationSeconds` after
//! the taint was added if they do (never, with no tolerationSeconds).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use flotilla_client::events::{EventType, Recorder};
use flotilla_objects::api::{DeleteParams, ObjectApi, Reason};
use flotilla_objects::core::{Node, Pod, Taint};
use flotilla_runtime::Informer;
use tokio_util::sync::CancellationToken;

use crate::daemonset::tolerates;
use crate::pods::BY_NODE;

/// When `pod` must leave a node with these taints: None if never.
pub fn eviction_due(pod: &Pod, taints: &[Taint], now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let mut due: Option<DateTime<Utc>> = None;
    for taint in taints.iter().filter(|t| t.effect == "NoExecute") {
        let matching: Vec<_> = pod
            .spec
            .tolerations
            .iter()
            .filter(|t| tolerates(t, taint))
            .collect();
        let at = if matching.is_empty() {
            now
        } else {
            // The shortest tolerationSeconds of those that tolerate it;
            // none with a limit: tolerated for ever.
            let Some(secs) = matching.iter().filter_map(|t| t.toleration_seconds).min() else {
                continue;
            };
            let added = taint.time_added.map_or(now, |t| t.0);
            added + chrono::Duration::seconds(secs.max(0))
        };
        due = Some(due.map_or(at, |d| d.min(at)));
    }
    due
}

pub struct Evictor {
    api: Arc<dyn ObjectApi>,
    nodes: Informer<Node>,
    pods: Informer<Pod>,
    recorder: Recorder,
}

impl Evictor {
    pub fn new(api: Arc<dyn ObjectApi>, nodes: Informer<Node>, pods: Informer<Pod>) -> Self {
        Evictor {
            recorder: Recorder::new(api.clone(), super::COMPONENT),
            api,
            nodes,
            pods,
        }
    }

    /// One look at every tainted node: delete what is due, and say when
    /// the next pod falls due.
    async fn pass(&self) -> Option<DateTime<Utc>> {
        let now = Utc::now();
        let mut next: Option<DateTime<Utc>> = None;
        for node in self.nodes.list() {
            if !node.spec.taints.iter().any(|t| t.effect == "NoExecute") {
                continue;
            }
            for pod in self.pods.by_index(BY_NODE, &node.metadata.name) {
                if pod.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                let Some(at) = eviction_due(&pod, &node.spec.taints, now) else {
                    continue;
                };
                if at > now {
                    next = Some(next.map_or(at, |n| n.min(at)));
                    continue;
                }
                let dp = DeleteParams {
                    precondition_uid: pod.metadata.uid.clone(),
                    ..Default::default()
                };
                match self
                    .api
                    .delete("pods", &pod.metadata.namespace, &pod.metadata.name, &dp)
                    .await
                {
                    Ok(_) => {
                        tracing::info!(pod = %pod.metadata.name, node = %node.metadata.name, "evicted: NoExecute taint");
                        self.recorder
                            .record(
                                pod.as_ref(),
                                EventType::Normal,
                                "TaintManagerEviction",
                                &format!(
                                    "Marking for deletion Pod {}/{}",
                                    pod.metadata.namespace, pod.metadata.name
                                ),
                            )
                            .await;
                    }
                    Err(e) if e.is(Reason::NotFound) || e.is(Reason::Conflict) => {}
                    Err(e) => {
                        tracing::warn!(pod = %pod.metadata.name, error = %e, "eviction failed; retrying");
                        let soon = now + chrono::Duration::seconds(1);
                        next = Some(next.map_or(soon, |n| n.min(soon)));
                    }
                }
            }
        }
        next
    }

    pub async fn run(self, stop: CancellationToken) {
        let mut node_changes = self.nodes.subscribe();
        let mut pod_changes = self.pods.subscribe();
        loop {
            let next = self.pass().await;
            let wait = next
                .map(|t| (t - Utc::now()).to_std().unwrap_or_default())
                .unwrap_or(Duration::from_secs(60));
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = node_changes.next() => {}
                _ = pod_changes.next() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use flotilla_objects::core::Toleration;
    use flotilla_objects::Time;

    use super::*;

    fn taint(key: &str, added: DateTime<Utc>) -> Taint {
        Taint {
            key: key.into(),
            value: String::new(),
            effect: "NoExecute".into(),
            time_added: Some(Time(added)),
        }
    }

    fn tol(key: &str, secs: Option<i64>) -> Toleration {
        Toleration {
            key: key.into(),
            operator: "Exists".into(),
            value: String::new(),
            effect: "NoExecute".into(),
            toleration_seconds: secs,
        }
    }

    #[test]
    fn eviction_times_follow_tolerations() {
        let now = Utc::now();
        let t0 = now - chrono::Duration::seconds(100);
        let taints = [taint("node.kubernetes.io/unreachable", t0)];
        let mut p = Pod::default();
        assert_eq!(
            eviction_due(&p, &taints, now),
            Some(now),
            "no toleration: now"
        );
        p.spec.tolerations = vec![tol("node.kubernetes.io/unreachable", Some(300))];
        assert_eq!(
            eviction_due(&p, &taints, now),
            Some(t0 + chrono::Duration::seconds(300))
        );
        p.spec
            .tolerations
            .push(tol("node.kubernetes.io/unreachable", Some(30)));
        assert_eq!(
            eviction_due(&p, &taints, now),
            Some(t0 + chrono::Duration::seconds(30)),
            "the shortest wins"
        );
        p.spec.tolerations = vec![tol("node.kubernetes.io/unreachable", None)];
        assert_eq!(eviction_due(&p, &taints, now), None, "tolerated for ever");
        let soft = [Taint {
            effect: "NoSchedule".into(),
            ..taint("x", t0)
        }];
        assert_eq!(
            eviction_due(&Pod::default(), &soft, now),
            None,
            "only NoExecute evicts"
        );
    }
}
