//! Jobs: run pods until enough of them succeed, as Kubernetes' job
//! controller does.
//!
//! Each pass claims the job's pods (adopting orphans that match its
//! selector), counts them, and then:
//! - fails the job when more pods failed than `backoffLimit` allows (with
//!   restartPolicy OnFailure, container restarts of running pods count
//!   too), or when it ran past `activeDeadlineSeconds`: the running pods are
//!   deleted and the Failed condition set (BackoffLimitExceeded,
//!   DeadlineExceeded);
//! - completes it when `completions` pods succeeded (NonIndexed), every
//!   index `0..completions` succeeded once (Indexed, each pod told its
//!   index through `JOB_COMPLETION_INDEX` and the
//!   `batch.kubernetes.io/job-completion-index` annotation), or, with no
//!   `completions`, when one succeeded and none still runs;
//! - otherwise keeps `parallelism` pods running (fewer when fewer
//!   completions remain), replacing failed pods after an exponential
//!   back-off (10 s doubled per failure, at most 6 minutes), or none while
//!   `suspend` is true.
//!
//! Counts only grow: status.succeeded, status.failed and the completed
//! indexes keep what was seen even if the pods are later deleted. A
//! finished job with `ttlSecondsAfterFinished` is deleted (with its pods)
//! that long after it finished.

pub mod plan;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::pods::usable_selector;
use chrono::Utc;
use flotilla_client::events::{EventType, Recorder};
use flotilla_objects::api::{ApiError, DeleteParams, ObjectApi, Propagation, Reason};
use flotilla_objects::batch::{Job, JobCondition, JobStatus};
use flotilla_objects::core::{EnvVar, Pod};
use flotilla_objects::Time;
use flotilla_runtime::informer::BY_NAMESPACE;
use flotilla_runtime::{
    Action, Controller, Informer, LeaderContext, LeaderLoop, ObjectRef, Reconciler,
};
use futures::future::BoxFuture;
use serde_json::json;

use crate::pods::{
    claim_pods, create_pods, delete_pods, is_active, is_ready, latest, owner_ref, phase,
    pod_from_template, sort_for_deletion, Freshness,
};

pub const COMPONENT: &str = "job-controller";
/// The annotation (and label) with an Indexed job pod's index.
pub const INDEX_ANNOTATION: &str = "batch.kubernetes.io/job-completion-index";
/// The environment variable with an Indexed job pod's index.
pub const INDEX_ENV: &str = "JOB_COMPLETION_INDEX";
const DEFAULT_BACKOFF_LIMIT: i32 = 6;

/// The leader loop; the back-off is configurable for tests.
#[derive(Clone, Copy)]
pub struct JobLoop {
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
}

impl Default for JobLoop {
    fn default() -> Self {
        JobLoop {
            backoff_base: plan::BACKOFF_BASE,
            backoff_cap: plan::BACKOFF_CAP,
        }
    }
}

impl LeaderLoop for JobLoop {
    fn name(&self) -> &'static str {
        COMPONENT
    }

    fn run(&self, ctx: LeaderContext) -> BoxFuture<'static, ()> {
        let this = *self;
        Box::pin(async move {
            let jobs = ctx.informers.get::<Job>();
            let pods = ctx.informers.get::<Pod>();
            let r = Arc::new(Jobs {
                api: ctx.api.clone(),
                jobs: jobs.clone(),
                pods: pods.clone(),
                recorder: Recorder::new(ctx.api.clone(), COMPONENT),
                fresh: Freshness::default(),
                backoff: (this.backoff_base, this.backoff_cap),
                failures: Mutex::new(HashMap::new()),
            });
            Controller::new(COMPONENT, jobs)
                .owns(pods)
                .run(r, ctx.stop)
                .await
        })
    }
}

struct Jobs {
    api: Arc<dyn ObjectApi>,
    jobs: Informer<Job>,
    pods: Informer<Pod>,
    recorder: Recorder,
    fresh: Freshness,
    backoff: (Duration, Duration),
    /// Per job: the failures already seen, and when the last new one was
    /// seen (the back-off runs from there).
    failures: Mutex<HashMap<ObjectRef, (i32, Instant)>>,
}

fn condition_true<'a>(s: &'a JobStatus, type_: &str) -> Option<&'a JobCondition> {
    s.conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
}

fn set_condition(s: &mut JobStatus, type_: &str, status: &str, reason: &str, message: &str) {
    if let Some(c) = s.conditions.iter_mut().find(|c| c.type_ == type_) {
        if c.status != status {
            c.last_transition_time = Some(Time::now());
        }
        c.status = status.into();
        c.reason = reason.into();
        c.message = message.into();
        c.last_probe_time = Some(Time::now());
        return;
    }
    s.conditions.push(JobCondition {
        type_: type_.into(),
        status: status.into(),
        last_probe_time: Some(Time::now()),
        last_transition_time: Some(Time::now()),
        reason: reason.into(),
        message: message.into(),
    });
}

fn index_of(p: &Pod) -> Option<i32> {
    p.metadata.annotations.get(INDEX_ANNOTATION)?.parse().ok()
}

fn restarts(p: &Pod) -> i32 {
    p.status.as_ref().map_or(0, |s| {
        s.container_statuses
            .iter()
            .chain(&s.init_container_statuses)
            .map(|c| c.restart_count)
            .sum()
    })
}

/// Whether the job reached the end of the road (with the reason).
fn failure(
    j: &Job,
    failed: i32,
    restarts_on_failure: i32,
    now: chrono::DateTime<Utc>,
) -> Option<(&'static str, &'static str)> {
    let limit = j.spec.backoff_limit.unwrap_or(DEFAULT_BACKOFF_LIMIT).max(0);
    let past_on_failure = j.spec.template.spec.restart_policy == "OnFailure"
        && if limit == 0 {
            restarts_on_failure > 0
        } else {
            restarts_on_failure >= limit
        };
    if failed > limit || past_on_failure {
        return Some((
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
        ));
    }
    let start = j.status.as_ref().and_then(|s| s.start_time)?;
    let ads = j.spec.active_deadline_seconds?;
    (now - start.0 >= chrono::Duration::seconds(ads)).then_some((
        "DeadlineExceeded",
        "Job was active longer than specified deadline",
    ))
}

impl Jobs {
    /// A finished job: remove it once its time to live is over.
    async fn finished(
        &self,
        key: &ObjectRef,
        j: &Job,
        at: Option<Time>,
    ) -> Result<Action, ApiError> {
        let Some(ttl) = j.spec.ttl_seconds_after_finished else {
            return Ok(Action::Await);
        };
        let at = at.map_or_else(Utc::now, |t| t.0);
        let expires = at + chrono::Duration::seconds(i64::from(ttl.max(0)));
        let now = Utc::now();
        if expires > now {
            return Ok(Action::RequeueAfter(
                (expires - now).to_std().unwrap_or_default(),
            ));
        }
        let dp = DeleteParams {
            propagation: Some(Propagation::Background),
            precondition_uid: j.metadata.uid.clone(),
            ..Default::default()
        };
        match self
            .api
            .delete("jobs", &key.namespace, &key.name, &dp)
            .await
        {
            Ok(_) => Ok(Action::Await),
            Err(e) if e.is(Reason::NotFound) || e.is(Reason::Conflict) => Ok(Action::Await),
            Err(e) => Err(e),
        }
    }

    /// The back-off still to wait before a pod replaces a failed one.
    fn backoff_left(&self, key: &ObjectRef, failed: i32) -> Duration {
        let mut m = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let seen = m.entry(key.clone()).or_insert((0, Instant::now()));
        if failed > seen.0 {
            *seen = (failed, Instant::now());
        }
        if failed <= 0 {
            return Duration::ZERO;
        }
        let wait = plan::backoff(failed as u32, self.backoff.0, self.backoff.1);
        wait.saturating_sub(seen.1.elapsed())
    }

    /// New pods for the job (for `indexes` when it is Indexed).
    fn new_pods(&self, j: &Job, count: usize, indexes: &[i32]) -> Vec<Pod> {
        let ns = &j.metadata.namespace;
        let name = &j.metadata.name;
        if indexes.is_empty() {
            return (0..count)
                .map(|_| pod_from_template(&j.spec.template, ns, name, owner_ref(j)))
                .collect();
        }
        indexes
            .iter()
            .map(|i| {
                let mut p =
                    pod_from_template(&j.spec.template, ns, &format!("{name}-{i}"), owner_ref(j));
                p.metadata
                    .annotations
                    .insert(INDEX_ANNOTATION.into(), i.to_string());
                p.metadata
                    .labels
                    .insert(INDEX_ANNOTATION.into(), i.to_string());
                if p.spec.hostname.is_empty() {
                    p.spec.hostname = format!("{name}-{i}");
                }
                for c in p
                    .spec
                    .containers
                    .iter_mut()
                    .chain(p.spec.init_containers.iter_mut())
                {
                    c.env.retain(|e| e.name != INDEX_ENV);
                    c.env.push(EnvVar {
                        name: INDEX_ENV.into(),
                        value: i.to_string(),
                        value_from: None,
                    });
                }
                p
            })
            .collect()
    }

    async fn write_status(&self, key: &ObjectRef, j: &Job, s: &JobStatus) -> Result<(), ApiError> {
        if j.status.as_ref() == Some(s) {
            return Ok(());
        }
        let p = json!({"status": {
            "active": s.active, "succeeded": s.succeeded, "failed": s.failed, "ready": s.ready,
            "startTime": s.start_time, "completionTime": s.completion_time,
            "conditions": s.conditions, "completedIndexes": s.completed_indexes,
        }});
        match self
            .api
            .patch("jobs", &key.namespace, &key.name, p, true, false)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is(Reason::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn sync(&self, key: &ObjectRef, j: &Job) -> Result<Action, ApiError> {
        let prev = j.status.clone().unwrap_or_default();
        if let Some(c) =
            condition_true(&prev, "Complete").or_else(|| condition_true(&prev, "Failed"))
        {
            return self.finished(key, j, c.last_transition_time).await;
        }
        let Some(selector) = usable_selector(j.spec.selector.as_ref()) else {
            return Ok(Action::Await);
        };
        let candidates = self.pods.by_index(BY_NAMESPACE, &key.namespace);
        let (owned, wrote) = claim_pods(&self.api, j, &selector, candidates).await?;
        self.fresh.note(key, wrote);
        if j.metadata.deletion_timestamp.is_some() {
            return Ok(Action::Await);
        }
        let now = Utc::now();
        let indexed = j.spec.completion_mode == "Indexed";
        let completions = j.spec.completions;
        let mut active: Vec<Arc<Pod>> = owned.iter().filter(|p| is_active(p)).cloned().collect();
        let succeeded_pods: Vec<&Arc<Pod>> =
            owned.iter().filter(|p| phase(p) == "Succeeded").collect();
        let failed_now = owned.iter().filter(|p| phase(p) == "Failed").count() as i32;

        let mut s = prev.clone();
        let mut done = plan::parse_ranges(&prev.completed_indexes);
        if indexed {
            let n = completions.unwrap_or(0);
            done.extend(
                succeeded_pods
                    .iter()
                    .filter_map(|p| index_of(p))
                    .filter(|i| (0..n).contains(i)),
            );
            s.completed_indexes = plan::format_ranges(&done);
            s.succeeded = done.len() as i32;
        } else {
            s.succeeded = prev.succeeded.max(succeeded_pods.len() as i32);
        }
        s.failed = prev.failed.max(failed_now);
        let suspended = j.spec.suspend == Some(true);
        if s.start_time.is_none() && !suspended {
            s.start_time = Some(Time::now());
        }
        let restarts_on_failure: i32 = active.iter().map(|p| restarts(p)).sum();
        let check = Job {
            status: Some(s.clone()),
            ..j.clone()
        };
        let failing = failure(&check, s.failed, restarts_on_failure, now);
        let complete = if indexed {
            done.len() as i32 >= completions.unwrap_or(0)
        } else {
            plan::nonindexed_complete(completions, s.succeeded, active.len() as i32)
        };

        if failing.is_some() || complete || suspended {
            let w = delete_pods(&self.api, &self.recorder, j, &active).await;
            self.fresh.note(key, w.revision);
            if let Some(e) = w.error {
                return Err(e);
            }
            s.active = 0;
            s.ready = Some(0);
            if let Some((reason, message)) = failing {
                // Pods stopped because the job failed count as failed.
                s.failed += active.len() as i32;
                set_condition(&mut s, "Failed", "True", reason, message);
                self.write_status(key, j, &s).await?;
                self.recorder
                    .record(j, EventType::Warning, reason, message)
                    .await;
                return self.finished(key, j, Some(Time::now())).await;
            }
            if complete {
                set_condition(
                    &mut s,
                    "Complete",
                    "True",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                );
                s.completion_time = Some(Time::now());
                self.write_status(key, j, &s).await?;
                self.recorder
                    .record(j, EventType::Normal, "Completed", "Job completed")
                    .await;
                return self.finished(key, j, Some(Time::now())).await;
            }
            set_condition(&mut s, "Suspended", "True", "JobSuspended", "Job suspended");
            self.write_status(key, j, &s).await?;
            return Ok(Action::Await);
        }
        if condition_true(&s, "Suspended").is_some() {
            set_condition(&mut s, "Suspended", "False", "JobResumed", "Job resumed");
            s.start_time = Some(Time::now());
        }

        // Keep the right pods running.
        let parallelism = j.spec.parallelism.unwrap_or(1);
        let (mut to_create, mut to_start, mut extra) = (0usize, Vec::new(), Vec::new());
        if indexed {
            let mut running = BTreeSet::new();
            for p in &active {
                match index_of(p) {
                    // A second pod for one index, or one for an index
                    // already done or out of range, goes.
                    Some(i)
                        if (0..completions.unwrap_or(0)).contains(&i)
                            && !done.contains(&i)
                            && running.insert(i) => {}
                    _ => extra.push(p.clone()),
                }
            }
            to_start =
                plan::indexes_to_start(completions.unwrap_or(0), parallelism, &done, &running);
        } else {
            let want = plan::wanted_active(parallelism, completions, s.succeeded) as usize;
            if active.len() < want {
                to_create = want - active.len();
            } else if active.len() > want {
                sort_for_deletion(&mut active);
                extra = active[..active.len() - want].to_vec();
            }
        }
        let mut next = None;
        let mut error = None;
        let mut started = 0usize;
        if to_create > 0 || !to_start.is_empty() {
            let wait = self.backoff_left(key, s.failed);
            if wait.is_zero() {
                let pods = self.new_pods(j, to_create, &to_start);
                let w = create_pods(&self.api, &self.recorder, j, pods).await;
                self.fresh.note(key, w.revision);
                started = w.done;
                error = w.error;
            } else {
                next = Some(wait);
            }
        }
        if !extra.is_empty() {
            let w = delete_pods(&self.api, &self.recorder, j, &extra).await;
            self.fresh.note(key, w.revision);
            error = error.or(w.error);
        }
        s.active = (active.len() + started).saturating_sub(extra.len()) as i32;
        s.ready = Some(active.iter().filter(|p| is_ready(p)).count() as i32);
        self.write_status(key, j, &s).await?;
        if let Some(e) = error {
            return Err(e);
        }
        // Look again at the deadline, if there is one.
        if let (Some(ads), Some(start)) = (j.spec.active_deadline_seconds, s.start_time) {
            let at = start.0 + chrono::Duration::seconds(ads);
            let left = (at - now).to_std().unwrap_or_default();
            next = Some(next.map_or(left, |n: Duration| n.min(left)));
        }
        Ok(next.map_or(Action::Await, |d| {
            Action::RequeueAfter(d + Duration::from_millis(20))
        }))
    }
}

#[async_trait::async_trait]
impl Reconciler<Job> for Jobs {
    type Error = ApiError;

    async fn reconcile(&self, key: &ObjectRef, obj: Option<Arc<Job>>) -> Result<Action, ApiError> {
        if obj.is_none() {
            self.failures
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(key);
            return Ok(Action::Await);
        }
        match latest(&self.fresh, key, &self.pods, &self.jobs).await {
            Ok(j) => self.sync(key, &j).await,
            Err(action) => Ok(action),
        }
    }
}

#[cfg(test)]
mod tests;
