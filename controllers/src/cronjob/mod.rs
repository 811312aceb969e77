//! CronJobs: Jobs created on a schedule, as Kubernetes' CronJob controller
//! (v2) creates them.
//!
//! Each pass brings `status.active` up to date with the jobs the cron job
//! controls, deletes finished jobs beyond the history limits, and, unless
//! suspended, starts the most recent scheduled run that has not started
//! yet: in the cron job's time zone, not if it is older than
//! `startingDeadlineSeconds`, not while a run is active under `Forbid`,
//! after deleting the active runs under `Replace`. A run's Job is named
//! `<cronjob>-<minutes since the epoch>` so that a retried pass cannot
//! start the same run twice. It then sleeps until the next scheduled time.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use flotilla_client::api::encode;
use flotilla_client::events::{EventType, Recorder};
use flotilla_objects::api::{ApiError, DeleteParams, ObjectApi, Propagation, Reason};
use flotilla_objects::batch::{CronJob, Job};
use flotilla_objects::core::ObjectReference;
use flotilla_objects::{ObjectMeta, Time};
use flotilla_runtime::informer::BY_OWNER;
use flotilla_runtime::{
    Action, Controller, Informer, LeaderContext, LeaderLoop, ObjectRef, Reconciler,
};
use futures::future::BoxFuture;
use serde_json::json;

use crate::pods::{controlled_by, latest, owner_ref, written_revision, Freshness};

pub const COMPONENT: &str = "cronjob-controller";
/// The annotation on a run's Job with the time it was scheduled for.
pub const SCHEDULED_AT: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// Missed runs counted before Kubernetes' "too many missed start times".
const MISSED_WARN: usize = 100;

/// Where the controller reads the time (tests move it).
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// The leader loop.
#[derive(Clone)]
pub struct CronJobLoop {
    pub clock: Clock,
}

impl Default for CronJobLoop {
    fn default() -> Self {
        CronJobLoop {
            clock: Arc::new(Utc::now),
        }
    }
}

impl LeaderLoop for CronJobLoop {
    fn name(&self) -> &'static str {
        COMPONENT
    }

    fn run(&self, ctx: LeaderContext) -> BoxFuture<'static, ()> {
        let clock = self.clock.clone();
        Box::pin(async move {
            let crons = ctx.informers.get::<CronJob>();
            let jobs = ctx.informers.get::<Job>();
            let r = Arc::new(CronJobs {
                api: ctx.api.clone(),
                crons: crons.clone(),
                jobs: jobs.clone(),
                recorder: Recorder::new(ctx.api.clone(), COMPONENT),
                clock,
                fresh: Freshness::default(),
            });
            Controller::new(COMPONENT, crons)
                .owns(jobs)
                .run(r, ctx.stop)
                .await
        })
    }
}

struct CronJobs {
    api: Arc<dyn ObjectApi>,
    crons: Informer<CronJob>,
    jobs: Informer<Job>,
    recorder: Recorder,
    clock: Clock,
    fresh: Freshness,
}

/// Complete or Failed, with the condition's type.
fn finished(j: &Job) -> Option<&'static str> {
    let s = j.status.as_ref()?;
    ["Complete", "Failed"].into_iter().find(|t| {
        s.conditions
            .iter()
            .any(|c| c.type_ == *t && c.status == "True")
    })
}

fn job_ref(j: &Job) -> ObjectReference {
    ObjectReference {
        kind: "Job".into(),
        namespace: j.metadata.namespace.clone(),
        name: j.metadata.name.clone(),
        uid: j.metadata.uid.clone(),
    }
}

/// The scheduled times after `after` up to `now` (the last one and how
/// many there were), and the next one after `now`, in the cron job's zone.
pub fn schedule_times(
    cron: &croner::Cron,
    tz: chrono_tz::Tz,
    after: DateTime<Utc>,
    now: DateTime<Utc>,
) -> (Option<DateTime<Utc>>, usize, Option<DateTime<Utc>>) {
    let mut last = None;
    let mut count = 0usize;
    let mut t = after.with_timezone(&tz);
    let now_tz = now.with_timezone(&tz);
    loop {
        match cron.find_next_occurrence(&t, false) {
            Ok(next) if next <= now_tz => {
                count += 1;
                last = Some(next.with_timezone(&Utc));
                t = next;
                // Past this many, only the most recent matters: jump close
                // to now instead of walking every missed minute.
                if count > MISSED_WARN && now_tz - t > chrono::Duration::minutes(2) {
                    t = now_tz - chrono::Duration::minutes(1);
                }
            }
            Ok(next) => return (last, count, Some(next.with_timezone(&Utc))),
            Err(_) => return (last, count, None),
        }
    }
}

impl CronJobs {
    fn owned_jobs(&self, c: &CronJob) -> Vec<Arc<Job>> {
        self.jobs
            .by_index(BY_OWNER, &c.metadata.uid)
            .into_iter()
            .filter(|j| controlled_by(&j.metadata, &c.metadata.uid))
            .collect()
    }

    async fn delete_job(&self, c: &CronJob, j: &Job, why: &str) -> Result<(), ApiError> {
        let dp = DeleteParams {
            propagation: Some(Propagation::Background),
            precondition_uid: j.metadata.uid.clone(),
            ..Default::default()
        };
        match self
            .api
            .delete("jobs", &j.metadata.namespace, &j.metadata.name, &dp)
            .await
        {
            Ok(_) => {
                self.recorder
                    .record(
                        c,
                        EventType::Normal,
                        "SuccessfulDelete",
                        &format!("Deleted job {}{why}", j.metadata.name),
                    )
                    .await;
                Ok(())
            }
            Err(e) if e.is(Reason::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Delete finished jobs beyond the history limits, oldest first.
    async fn cleanup(&self, c: &CronJob, jobs: &[Arc<Job>]) -> Result<(), ApiError> {
        for (kind, limit) in [
            (
                "Complete",
                c.spec.successful_jobs_history_limit.unwrap_or(3),
            ),
            ("Failed", c.spec.failed_jobs_history_limit.unwrap_or(1)),
        ] {
            let mut done: Vec<&Arc<Job>> =
                jobs.iter().filter(|j| finished(j) == Some(kind)).collect();
            let limit = limit.max(0) as usize;
            if done.len() <= limit {
                continue;
            }
            done.sort_by_key(|j| {
                (
                    j.status.as_ref().and_then(|s| s.start_time),
                    j.metadata.creation_timestamp,
                )
            });
            let extra = done.len() - limit;
            for j in done.into_iter().take(extra) {
                self.delete_job(c, j, "").await?;
            }
        }
        Ok(())
    }

    /// Create the Job of the run scheduled at `at`; Ok(None) when it
    /// exists already (an earlier pass created it).
    async fn start(&self, c: &CronJob, at: DateTime<Utc>) -> Result<Option<Job>, ApiError> {
        let t = &c.spec.job_template;
        let mut annotations = t.metadata.annotations.clone();
        annotations.insert(SCHEDULED_AT.into(), Time(at).to_string());
        let job = Job {
            metadata: ObjectMeta {
                name: format!("{}-{}", c.metadata.name, at.timestamp() / 60),
                namespace: c.metadata.namespace.clone(),
                labels: t.metadata.labels.clone(),
                annotations,
                owner_references: vec![owner_ref(c)],
                ..Default::default()
            },
            spec: t.spec.clone(),
            ..Default::default()
        };
        match self
            .api
            .create("jobs", &c.metadata.namespace, encode(&job)?, false)
            .await
        {
            Ok(w) => {
                self.fresh
                    .note(&ObjectRef::of(c), written_revision(&w.object));
                let created: Job = serde_json::from_value(w.object)
                    .map_err(|e| ApiError::internal(e.to_string()))?;
                self.recorder
                    .record(
                        c,
                        EventType::Normal,
                        "SuccessfulCreate",
                        &format!("Created job {}", created.metadata.name),
                    )
                    .await;
                Ok(Some(created))
            }
            Err(e) if e.is(Reason::AlreadyExists) => Ok(None),
            Err(e) => {
                self.recorder
                    .record(
                        c,
                        EventType::Warning,
                        "FailedCreate",
                        &format!("Error creating job: {e}"),
                    )
                    .await;
                Err(e)
            }
        }
    }

    async fn write_status(
        &self,
        key: &ObjectRef,
        c: &CronJob,
        active: &[ObjectReference],
        last: Option<Time>,
        ok: Option<Time>,
    ) -> Result<(), ApiError> {
        let prev = c.status.clone().unwrap_or_default();
        if prev.active == active
            && prev.last_schedule_time == last
            && prev.last_successful_time == ok
        {
            return Ok(());
        }
        let p = json!({"status": {"active": active, "lastScheduleTime": last, "lastSuccessfulTime": ok}});
        match self
            .api
            .patch("cronjobs", &key.namespace, &key.name, p, true, false)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is(Reason::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn sync(&self, key: &ObjectRef, c: &CronJob) -> Result<Action, ApiError> {
        let now = (self.clock)();
        let prev = c.status.clone().unwrap_or_default();
        let jobs = self.owned_jobs(c);
        // Active: the controlled jobs not finished.
        let mut active: Vec<ObjectReference> = jobs
            .iter()
            .filter(|j| finished(j).is_none())
            .map(|j| job_ref(j))
            .collect();
        active.sort_by(|a, b| a.name.cmp(&b.name));
        let mut last_ok = prev.last_successful_time;
        for j in &jobs {
            let was_active = prev.active.iter().any(|r| r.uid == j.metadata.uid);
            if let (true, Some(kind)) = (was_active, finished(j)) {
                self.recorder
                    .record(
                        c,
                        EventType::Normal,
                        "SawCompletedJob",
                        &format!("Saw completed job: {}, condition: {kind}", j.metadata.name),
                    )
                    .await;
            }
            if finished(j) == Some("Complete") {
                let done = j.status.as_ref().and_then(|s| s.completion_time);
                if done > last_ok {
                    last_ok = done;
                }
            }
        }
        self.cleanup(c, &jobs).await?;
        let mut last_schedule = prev.last_schedule_time;
        if c.metadata.deletion_timestamp.is_some() || c.spec.suspend == Some(true) {
            self.write_status(key, c, &active, last_schedule, last_ok)
                .await?;
            return Ok(Action::Await);
        }
        let (Ok(cron), Ok(tz)) = (
            flotilla_objects::parse_schedule(&c.spec.schedule),
            flotilla_objects::parse_time_zone(c.spec.time_zone.as_deref()),
        ) else {
            // Admission refuses these; an object from before is left alone.
            self.recorder
                .record(
                    c,
                    EventType::Warning,
                    "InvalidSchedule",
                    &format!("invalid schedule {:?}", c.spec.schedule),
                )
                .await;
            return Ok(Action::Await);
        };
        let mut earliest = last_schedule
            .map(|t| t.0)
            .or(c.metadata.creation_timestamp.map(|t| t.0))
            .unwrap_or(now);
        if let Some(sds) = c.spec.starting_deadline_seconds {
            earliest = earliest.max(now - chrono::Duration::seconds(sds));
        }
        let (due, missed, next) = schedule_times(&cron, tz, earliest, now);
        if due.is_none() && c.spec.starting_deadline_seconds.is_some() {
            // Times between the last run and the deadline's start are gone.
            let from = last_schedule
                .map(|t| t.0)
                .or(c.metadata.creation_timestamp.map(|t| t.0))
                .unwrap_or(now);
            if let (Some(at), _, _) = schedule_times(&cron, tz, from, earliest) {
                if last_schedule.is_none_or(|l| l.0 < at) {
                    self.recorder
                        .record(
                            c,
                            EventType::Warning,
                            "MissSchedule",
                            &format!("Missed scheduled time to start a job: {}", Time(at)),
                        )
                        .await;
                }
            }
        }
        if missed > MISSED_WARN {
            self.recorder
                .record(
                    c,
                    EventType::Warning,
                    "TooManyMissedTimes",
                    &format!("too many missed start times: {missed}; starting the most recent"),
                )
                .await;
        }
        if let Some(at) = due {
            let policy = c.spec.concurrency_policy.as_str();
            if policy == "Forbid" && !active.is_empty() {
                // Kept for later: it starts when the active run finishes,
                // if that is still within the starting deadline.
                self.recorder
                    .record(c, EventType::Normal, "JobAlreadyActive", "Not starting job because prior execution is running and concurrency policy is Forbid")
                    .await;
            } else {
                if policy == "Replace" {
                    for r in std::mem::take(&mut active) {
                        if let Some(j) = jobs.iter().find(|j| j.metadata.uid == r.uid) {
                            self.delete_job(c, j, " (concurrencyPolicy Replace)")
                                .await?;
                        }
                    }
                }
                if let Some(j) = self.start(c, at).await? {
                    active.push(job_ref(&j));
                }
                last_schedule = Some(Time(at));
            }
        }
        self.write_status(key, c, &active, last_schedule, last_ok)
            .await?;
        Ok(match next {
            Some(t) => Action::RequeueAfter(
                (t - now).to_std().unwrap_or_default() + Duration::from_millis(100),
            ),
            None => Action::Await,
        })
    }
}

#[async_trait::async_trait]
impl Reconciler<CronJob> for CronJobs {
    type Error = ApiError;

    async fn reconcile(
        &self,
        key: &ObjectRef,
        obj: Option<Arc<CronJob>>,
    ) -> Result<Action, ApiError> {
        if obj.is_none() {
            return Ok(Action::Await);
        }
        // The job cache must show the runs this controller started.
        match latest(&self.fresh, key, &self.jobs, &self.crons).await {
            Ok(c) => self.sync(key, &c).await,
            Err(action) => Ok(action),
        }
    }
}

#[cfg(test)]
mod tests;
