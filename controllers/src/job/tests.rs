//! The Job controller against the in-memory store, with the stand-in
//! kubelet finishing pods as their `test/exit` label says.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_objects::batch::Job;
use flotilla_objects::core::Pod;
use serde_json::{json, Value};

use super::*;
use crate::testenv::{until, Env};

async fn env() -> Env {
    let env = Env::new().await;
    env.run(JobLoop {
        backoff_base: Duration::from_millis(10),
        backoff_cap: Duration::from_millis(40),
    });
    env.kubelet();
    env
}

fn job(name: &str, exit: &str, spec: Value) -> Value {
    let mut j = json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name},
        "spec": {"template": {
            "metadata": {"labels": {"test/exit": exit}},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}
    });
    flotilla_objects::merge_patch(&mut j, &spec);
    j
}

async fn get(env: &Env, name: &str) -> Option<Job> {
    env.typed::<Job>("default").get(name).await.ok()
}

async fn status(env: &Env, name: &str) -> JobStatus {
    get(env, name)
        .await
        .and_then(|j| j.status)
        .unwrap_or_default()
}

fn condition(s: &JobStatus, type_: &str) -> Option<(String, String)> {
    s.conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

fn owned_by<'a>(pods: &'a [Pod], job: &str) -> Vec<&'a Pod> {
    pods.iter()
        .filter(|p| p.metadata.labels.get("job-name").map(String::as_str) == Some(job))
        .collect()
}

#[tokio::test]
async fn completions_four_parallelism_two_completes_with_at_most_two_running() {
    let env = env().await;
    let pods = env.informers.get::<Pod>();
    let mut sub = pods.subscribe();
    let most = Arc::new(Mutex::new(0usize));
    let (m, p2) = (most.clone(), pods.clone());
    let watcher = tokio::spawn(async move {
        while sub.next().await.is_some() {
            let running = p2.list().iter().filter(|p| is_active(p)).count();
            let mut g = m.lock().expect("lock");
            *g = (*g).max(running);
        }
    });
    env.apply(job(
        "pi",
        "0",
        json!({"spec": {"completions": 4, "parallelism": 2}}),
    ))
    .await;
    until("Complete", || async {
        condition(&status(&env, "pi").await, "Complete").is_some()
    })
    .await;
    watcher.abort();
    let s = status(&env, "pi").await;
    assert_eq!((s.succeeded, s.failed, s.active), (4, 0, 0), "{s:?}");
    assert!(s.completion_time.is_some() && s.start_time.is_some());
    assert_eq!(
        owned_by(&env.pods().await, "pi").len(),
        4,
        "exactly four pods ran"
    );
    assert!(
        *most.lock().expect("lock") <= 2,
        "never more than parallelism pods at once"
    );
}

#[tokio::test]
async fn a_failing_job_stops_at_its_backoff_limit() {
    let env = env().await;
    env.apply(job("bad", "1", json!({"spec": {"backoffLimit": 2}})))
        .await;
    until("Failed", || async {
        condition(&status(&env, "bad").await, "Failed").is_some()
    })
    .await;
    let s = status(&env, "bad").await;
    assert_eq!(
        condition(&s, "Failed"),
        Some(("True".into(), "BackoffLimitExceeded".into()))
    );
    assert_eq!(
        s.failed, 3,
        "backoffLimit 2: the third failure ends it: {s:?}"
    );
    assert_eq!(
        owned_by(&env.pods().await, "bad").len(),
        3,
        "no pod after the job failed"
    );
}

#[tokio::test]
async fn on_failure_restarts_count_toward_the_backoff_limit() {
    let env = env().await;
    let j = job(
        "flaky",
        "1",
        json!({"spec": {"backoffLimit": 3, "template": {"spec": {"restartPolicy": "OnFailure"}}}}),
    );
    env.apply(j).await;
    until("Failed", || async {
        condition(&status(&env, "flaky").await, "Failed").is_some()
    })
    .await;
    let s = status(&env, "flaky").await;
    assert_eq!(
        condition(&s, "Failed").map(|c| c.1).as_deref(),
        Some("BackoffLimitExceeded")
    );
    until("the restarting pod is deleted", || async {
        owned_by(&env.pods().await, "flaky").is_empty()
    })
    .await;
}

#[tokio::test]
async fn an_indexed_job_runs_each_index_once_and_tells_the_pod_its_index() {
    let env = env().await;
    env.apply(job(
        "idx",
        "0",
        json!({"spec": {"completions": 3, "parallelism": 3, "completionMode": "Indexed"}}),
    ))
    .await;
    until("Complete", || async {
        condition(&status(&env, "idx").await, "Complete").is_some()
    })
    .await;
    let s = status(&env, "idx").await;
    assert_eq!(s.completed_indexes, "0-2");
    assert_eq!(s.succeeded, 3);
    let pods = env.pods().await;
    let mut seen: Vec<String> = owned_by(&pods, "idx")
        .iter()
        .map(|p| {
            let env_index = p.spec.containers[0]
                .env
                .iter()
                .find(|e| e.name == INDEX_ENV)
                .map(|e| e.value.clone());
            assert_eq!(
                env_index.as_ref(),
                p.metadata.annotations.get(INDEX_ANNOTATION)
            );
            assert_eq!(
                p.spec.hostname,
                format!("idx-{}", env_index.clone().unwrap_or_default())
            );
            env_index.unwrap_or_default()
        })
        .collect();
    seen.sort();
    assert_eq!(seen, ["0", "1", "2"]);
}

#[tokio::test]
async fn a_job_past_its_active_deadline_fails_and_its_pods_go() {
    let env = env().await;
    // Pods that run forever (no test/exit label).
    let mut j = job(
        "slow",
        "0",
        json!({"spec": {"activeDeadlineSeconds": 1, "parallelism": 2, "completions": 2}}),
    );
    j["spec"]["template"]["metadata"]["labels"] = json!({"app": "slow"});
    env.apply(j).await;
    until("two running", || async {
        owned_by(&env.pods().await, "slow").len() == 2
    })
    .await;
    until("Failed", || async {
        condition(&status(&env, "slow").await, "Failed").is_some()
    })
    .await;
    let s = status(&env, "slow").await;
    assert_eq!(
        condition(&s, "Failed").map(|c| c.1).as_deref(),
        Some("DeadlineExceeded")
    );
    until("pods deleted", || async {
        owned_by(&env.pods().await, "slow").is_empty()
    })
    .await;
}

#[tokio::test]
async fn a_suspended_job_starts_nothing_until_resumed_and_ttl_removes_it() {
    let env = env().await;
    env.apply(job(
        "later",
        "0",
        json!({"spec": {"suspend": true, "ttlSecondsAfterFinished": 0}}),
    ))
    .await;
    until("Suspended", || async {
        condition(&status(&env, "later").await, "Suspended")
            == Some(("True".into(), "JobSuspended".into()))
    })
    .await;
    assert!(
        owned_by(&env.pods().await, "later").is_empty(),
        "a suspended job runs no pod"
    );
    env.patch("jobs", "later", json!({"spec": {"suspend": false}}))
        .await;
    // It completes, and with a time to live of 0 it is deleted right after.
    until("deleted after finishing", || async {
        get(&env, "later").await.is_none()
    })
    .await;
}
