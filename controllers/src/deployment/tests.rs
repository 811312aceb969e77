//! Deployments against the in-memory cluster (with the ReplicaSet
//! controller and a stand-in for the agents).

use std::sync::{Arc, Mutex};

use flotilla_objects::apps::{Deployment, ReplicaSet};
use flotilla_objects::core::Pod;
use flotilla_runtime::Change;
use serde_json::{json, Value};

use super::*;
use crate::replicaset::ReplicasLoop;
use crate::testenv::{until, Env};

fn deploy(name: &str, replicas: i32, image: &str, extra: Value) -> Value {
    let mut d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": image}]}}}});
    flotilla_objects::merge_patch(&mut d, &extra);
    d
}

async fn env() -> Env {
    let env = Env::new().await;
    env.run(ReplicasLoop::<ReplicaSet>::default());
    env.run(DeploymentLoop);
    env.kubelet();
    env
}

async fn status(env: &Env, name: &str) -> flotilla_objects::apps::DeploymentStatus {
    env.typed::<Deployment>("default")
        .get(name)
        .await
        .expect("deployment")
        .status
        .unwrap_or_default()
}

fn progressing(s: &flotilla_objects::apps::DeploymentStatus) -> String {
    s.conditions
        .iter()
        .find(|c| c.type_ == "Progressing")
        .map(|c| c.reason.clone())
        .unwrap_or_default()
}

async fn complete(env: &Env, name: &str, replicas: i32) {
    until("the rollout completes", || async {
        let d = env
            .typed::<Deployment>("default")
            .get(name)
            .await
            .expect("deployment");
        let s = d.status.clone().unwrap_or_default();
        // The controller has seen the latest spec (not the last rollout's
        // status still standing).
        s.observed_generation == d.metadata.generation
            && s.updated_replicas == replicas
            && s.available_replicas == replicas
            && s.replicas == replicas
            && progressing(&s) == "NewReplicaSetAvailable"
    })
    .await;
}

async fn images(env: &Env) -> Vec<String> {
    let mut v: Vec<String> = env
        .pods()
        .await
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| p.spec.containers[0].image.clone())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn a_deployment_rolls_out_and_a_rolling_update_keeps_its_promise() {
    let env = env().await;
    env.apply(deploy(
        "web",
        5,
        "v1",
        json!({"spec": {"strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}}}}),
    ))
    .await;
    complete(&env, "web", 5).await;
    let sets = env
        .typed::<ReplicaSet>("default")
        .list(&Default::default())
        .await
        .expect("rs")
        .items;
    assert_eq!(sets.len(), 1);
    assert_eq!(
        sets[0]
            .metadata
            .annotations
            .get(REVISION)
            .map(String::as_str),
        Some("1")
    );
    assert!(sets[0].metadata.name.starts_with("web-"));
    // Count ready pods at every change the cache sees during the update.
    let pods = env.informers.get::<Pod>();
    let mut sub = pods.subscribe();
    let worst = Arc::new(Mutex::new(i32::MAX));
    let (w, p2) = (worst.clone(), pods.clone());
    let watcher = tokio::spawn(async move {
        while let Some(c) = sub.next().await {
            if matches!(c, Change::Lagged) {
                continue;
            }
            let ready = p2
                .list()
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none() && crate::pods::is_ready(p))
                .count() as i32;
            let mut w = w.lock().expect("lock");
            *w = (*w).min(ready);
        }
    });
    env.patch(
        "deployments",
        "web",
        json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "v2"}]}}}}),
    )
    .await;
    complete(&env, "web", 5).await;
    until("only v2 pods", || async {
        images(&env).await == vec!["v2"; 5]
    })
    .await;
    watcher.abort();
    let worst = *worst.lock().expect("lock");
    assert!(
        worst >= 4,
        "ready pods fell to {worst}, below replicas - maxUnavailable = 4"
    );
    let sets = env
        .typed::<ReplicaSet>("default")
        .list(&Default::default())
        .await
        .expect("rs")
        .items;
    assert_eq!(sets.len(), 2, "the old set is kept for history");
}

#[tokio::test]
async fn undo_brings_back_the_previous_replica_set_as_the_newest_revision() {
    let env = env().await;
    env.apply(deploy("web", 2, "v1", json!({}))).await;
    complete(&env, "web", 2).await;
    env.patch(
        "deployments",
        "web",
        json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "v2"}]}}}}),
    )
    .await;
    complete(&env, "web", 2).await;
    // What `flt rollout undo` does: the previous set's template, back.
    env.patch(
        "deployments",
        "web",
        json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "v1"}]}}}}),
    )
    .await;
    complete(&env, "web", 2).await;
    until("v1 again", || async { images(&env).await == vec!["v1"; 2] }).await;
    let sets = env
        .typed::<ReplicaSet>("default")
        .list(&Default::default())
        .await
        .expect("rs")
        .items;
    let names: Vec<(String, Option<String>, i32)> = sets
        .iter()
        .map(|r| {
            (
                r.spec.template.spec.containers[0].image.clone(),
                r.metadata.annotations.get(REVISION).cloned(),
                r.spec.replicas.unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        sets.len(),
        2,
        "no third set: the first one came back: {names:?}"
    );
    let v1 = sets
        .iter()
        .find(|r| r.spec.template.spec.containers[0].image == "v1")
        .expect("v1 set");
    assert_eq!(
        v1.metadata.annotations.get(REVISION).map(String::as_str),
        Some("3")
    );
}

#[tokio::test]
async fn recreate_removes_every_old_pod_before_the_new_ones() {
    let env = env().await;
    env.apply(deploy(
        "db",
        3,
        "v1",
        json!({"spec": {"strategy": {"type": "Recreate", "rollingUpdate": null}}}),
    ))
    .await;
    complete(&env, "db", 3).await;
    let pods = env.informers.get::<Pod>();
    let mut sub = pods.subscribe();
    let overlap = Arc::new(Mutex::new(false));
    let (o, p2) = (overlap.clone(), pods.clone());
    let watcher = tokio::spawn(async move {
        while sub.next().await.is_some() {
            let imgs: Vec<String> = p2
                .list()
                .iter()
                .map(|p| p.spec.containers[0].image.clone())
                .collect();
            if imgs.iter().any(|i| i == "v1") && imgs.iter().any(|i| i == "v2") {
                *o.lock().expect("lock") = true;
            }
        }
    });
    env.patch(
        "deployments",
        "db",
        json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "v2"}]}}}}),
    )
    .await;
    complete(&env, "db", 3).await;
    until("only v2", || async { images(&env).await == vec!["v2"; 3] }).await;
    watcher.abort();
    assert!(
        !*overlap.lock().expect("lock"),
        "old and new pods ran at once"
    );
}

#[tokio::test]
async fn a_paused_deployment_scales_but_does_not_roll_out() {
    let env = env().await;
    env.apply(deploy("web", 2, "v1", json!({}))).await;
    complete(&env, "web", 2).await;
    env.patch("deployments", "web", json!({"spec": {"paused": true}}))
        .await;
    env.patch("deployments", "web", json!({"spec": {"replicas": 4, "template": {"spec": {"containers": [{"name": "c", "image": "v2"}]}}}})).await;
    until("scaled to 4 old pods", || async {
        images(&env).await == vec!["v1"; 4]
    })
    .await;
    until("paused condition", || async {
        progressing(&status(&env, "web").await) == "DeploymentPaused"
    })
    .await;
    env.patch("deployments", "web", json!({"spec": {"paused": false}}))
        .await;
    complete(&env, "web", 4).await;
    until("rolled out once resumed", || async {
        images(&env).await == vec!["v2"; 4]
    })
    .await;
}

#[tokio::test]
async fn scaling_during_a_stuck_rollout_is_proportional() {
    let env = env().await;
    env.apply(deploy(
        "web",
        10,
        "v1",
        json!({"spec": {"strategy": {"rollingUpdate": {"maxSurge": 3, "maxUnavailable": 2}}}}),
    ))
    .await;
    complete(&env, "web", 10).await;
    // The new pods never become ready: the rollout stops part way.
    env.patch("deployments", "web", json!({"spec": {"template": {"metadata": {"labels": {"test/ready": "no"}}, "spec": {"containers": [{"name": "c", "image": "v2"}]}}}})).await;
    let sets = env.typed::<ReplicaSet>("default");
    until("the rollout is stuck with surge used", || async {
        let l = sets.list(&Default::default()).await.expect("rs").items;
        l.len() == 2 && l.iter().map(|r| r.spec.replicas.unwrap_or(0)).sum::<i32>() == 13
    })
    .await;
    env.patch("deployments", "web", json!({"spec": {"replicas": 20}}))
        .await;
    until("both sets grew", || async {
        let l = sets.list(&Default::default()).await.expect("rs").items;
        let sizes: Vec<i32> = l.iter().map(|r| r.spec.replicas.unwrap_or(0)).collect();
        // maxSurge 3 is a number, not a share: 20 + 3 pods at most.
        sizes.iter().sum::<i32>() == 23
            && l.iter().all(|r| {
                r.metadata
                    .annotations
                    .get(DESIRED_REPLICAS)
                    .map(String::as_str)
                    == Some("20")
            })
    })
    .await;
    let l = sets.list(&Default::default()).await.expect("rs").items;
    let old = l
        .iter()
        .find(|r| r.spec.template.spec.containers[0].image == "v1")
        .expect("old");
    let new = l
        .iter()
        .find(|r| r.spec.template.spec.containers[0].image == "v2")
        .expect("new");
    let (o, n) = (
        old.spec.replicas.unwrap_or(0),
        new.spec.replicas.unwrap_or(0),
    );
    // Stuck at old 8 + new 5 (13 = 10 + surge 3, 8 = 10 - 2 available),
    // the 10 more pods are spread about 8:5.
    assert!(o > 8 && n > 5, "both grew in proportion: old {o}, new {n}");
}

#[tokio::test]
async fn a_rollout_without_progress_hits_its_deadline_and_history_is_limited() {
    let env = env().await;
    env.apply(deploy(
        "web",
        2,
        "v1",
        json!({"spec": {"progressDeadlineSeconds": 1, "revisionHistoryLimit": 1}}),
    ))
    .await;
    complete(&env, "web", 2).await;
    for v in ["v2", "v3"] {
        env.patch(
            "deployments",
            "web",
            json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": v}]}}}}),
        )
        .await;
        complete(&env, "web", 2).await;
    }
    let sets = env.typed::<ReplicaSet>("default");
    until("one old set kept", || async {
        sets.list(&Default::default())
            .await
            .expect("rs")
            .items
            .len()
            == 2
    })
    .await;
    env.patch("deployments", "web", json!({"spec": {"template": {"metadata": {"labels": {"test/ready": "no"}}, "spec": {"containers": [{"name": "c", "image": "v4"}]}}}})).await;
    until("ProgressDeadlineExceeded", || async {
        progressing(&status(&env, "web").await) == "ProgressDeadlineExceeded"
    })
    .await;
    let s = status(&env, "web").await;
    assert!(
        s.available_replicas >= 1,
        "the old pods keep serving: {s:?}"
    );
}

#[test]
fn template_hashes_are_stable_and_change_with_the_template() {
    let t: PodTemplateSpec = serde_json::from_value(json!({"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "c", "image": "v1"}]}})).expect("t");
    let mut t2 = t.clone();
    t2.spec.containers[0].image = "v2".into();
    assert_eq!(template_hash(&t, 0), template_hash(&t.clone(), 0));
    assert_ne!(template_hash(&t, 0), template_hash(&t2, 0));
    assert_ne!(template_hash(&t, 0), template_hash(&t, 1));
    assert!(template_hash(&t, 0)
        .chars()
        .all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
}
