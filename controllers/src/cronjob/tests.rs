//! The CronJob controller against the in-memory store, on a clock the
//! tests move forward (and then poke the cron job so that it looks).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use chrono::{DurationRound, TimeDelta};
use flotilla_objects::batch::{CronJob, Job};
use serde_json::{json, Value};

use super::*;
use crate::job::JobLoop;
use crate::testenv::{until, Env};

struct Cluster {
    env: Env,
    offset: Arc<AtomicI64>,
    pokes: AtomicI64,
}

impl Cluster {
    async fn new() -> Cluster {
        let env = Env::new().await;
        let offset = Arc::new(AtomicI64::new(0));
        let o = offset.clone();
        env.run(CronJobLoop {
            clock: Arc::new(move || {
                Utc::now() + chrono::Duration::milliseconds(o.load(Ordering::SeqCst))
            }),
        });
        env.run(JobLoop {
            backoff_base: Duration::from_millis(10),
            backoff_cap: Duration::from_millis(40),
        });
        env.kubelet();
        Cluster {
            env,
            offset,
            pokes: AtomicI64::new(0),
        }
    }

    fn now(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::milliseconds(self.offset.load(Ordering::SeqCst))
    }

    /// Move the clock to `seconds` past the next minute boundary, and make
    /// the controller look.
    async fn to_next_minute(&self, name: &str, seconds: i64) {
        let now = self.now();
        let boundary =
            now.duration_trunc(TimeDelta::minutes(1)).expect("trunc") + TimeDelta::minutes(1);
        let target = boundary + TimeDelta::seconds(seconds);
        self.offset
            .fetch_add((target - now).num_milliseconds(), Ordering::SeqCst);
        self.poke(name).await;
    }

    async fn poke(&self, name: &str) {
        let n = self.pokes.fetch_add(1, Ordering::SeqCst);
        self.env
            .patch(
                "cronjobs",
                name,
                json!({"metadata": {"labels": {"test/poke": n.to_string()}}}),
            )
            .await;
    }

    async fn jobs(&self) -> Vec<Job> {
        self.env
            .typed::<Job>("default")
            .list(&Default::default())
            .await
            .expect("jobs")
            .items
    }

    /// How many times events with this reason were recorded.
    async fn events(&self, reason: &str) -> i32 {
        let l = self
            .env
            .typed::<flotilla_objects::core::Event>("default")
            .list(&Default::default())
            .await
            .expect("events");
        l.items
            .iter()
            .filter(|e| e.reason == reason)
            .map(|e| e.count.max(1))
            .sum()
    }

    async fn cron(&self, name: &str) -> CronJob {
        self.env
            .typed::<CronJob>("default")
            .get(name)
            .await
            .expect("cronjob")
    }
}

fn cron(name: &str, exit: Option<&str>, spec: Value) -> Value {
    let labels = match exit {
        Some(e) => json!({"test/exit": e}),
        None => json!({"app": name}),
    };
    let mut c = json!({
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": name},
        "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {
            "metadata": {"labels": labels},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}}}
    });
    if let (Value::Object(dst), Value::Object(src)) = (&mut c["spec"], spec) {
        dst.extend(src);
    }
    c
}

fn complete(j: &Job) -> bool {
    finished(j) == Some("Complete")
}

#[tokio::test]
async fn a_run_starts_on_schedule_and_its_completion_is_seen() {
    let c = Cluster::new().await;
    c.env.apply(cron("tick", Some("0"), json!({}))).await;
    c.to_next_minute("tick", 5).await;
    until("one run, completed", || async {
        let jobs = c.jobs().await;
        jobs.len() == 1 && complete(&jobs[0])
    })
    .await;
    let job = c.jobs().await.remove(0);
    let scheduled = c
        .now()
        .duration_trunc(TimeDelta::minutes(1))
        .expect("trunc");
    assert_eq!(
        job.metadata.name,
        format!("tick-{}", scheduled.timestamp() / 60)
    );
    assert_eq!(
        job.metadata.annotations.get(SCHEDULED_AT),
        Some(&Time(scheduled).to_string())
    );
    until("status shows the success", || async {
        let s = c.cron("tick").await.status.unwrap_or_default();
        s.active.is_empty()
            && s.last_successful_time.is_some()
            && s.last_schedule_time == Some(Time(scheduled))
    })
    .await;
}

#[tokio::test]
async fn forbid_skips_while_a_run_is_active_and_replace_replaces_it() {
    let c = Cluster::new().await;
    c.env
        .apply(cron("long", None, json!({"concurrencyPolicy": "Forbid"})))
        .await;
    c.to_next_minute("long", 5).await;
    until("the first run", || async { c.jobs().await.len() == 1 }).await;
    let first = c.jobs().await.remove(0).metadata.name;
    until("it is active", || async {
        c.cron("long").await.status.unwrap_or_default().active.len() == 1
    })
    .await;
    c.to_next_minute("long", 5).await;
    until("JobAlreadyActive", || async {
        c.events("JobAlreadyActive").await > 0
    })
    .await;
    assert_eq!(
        c.jobs()
            .await
            .iter()
            .map(|j| j.metadata.name.clone())
            .collect::<Vec<_>>(),
        vec![first.clone()],
        "Forbid: no second run"
    );

    c.env
        .patch(
            "cronjobs",
            "long",
            json!({"spec": {"concurrencyPolicy": "Replace"}}),
        )
        .await;
    c.to_next_minute("long", 5).await;
    until("the active run is replaced", || async {
        let jobs = c.jobs().await;
        let live: Vec<&Job> = jobs
            .iter()
            .filter(|j| j.metadata.deletion_timestamp.is_none())
            .collect();
        live.len() == 1 && live[0].metadata.name != first
    })
    .await;
}

#[tokio::test]
async fn a_run_past_its_starting_deadline_is_missed_and_history_is_limited() {
    let c = Cluster::new().await;
    c.env
        .apply(cron(
            "late",
            Some("0"),
            json!({"startingDeadlineSeconds": 10, "successfulJobsHistoryLimit": 1}),
        ))
        .await;
    // 30 s after the scheduled time, with a deadline of 10 s: missed.
    c.to_next_minute("late", 30).await;
    until("MissSchedule", || async {
        c.events("MissSchedule").await > 0
    })
    .await;
    assert!(
        c.jobs().await.is_empty(),
        "a run past its starting deadline does not start"
    );
    // Within the deadline, runs start; only the last success is kept.
    for round in 1..=3 {
        c.to_next_minute("late", 2).await;
        until("this round's run completed", || async {
            let jobs = c.jobs().await;
            jobs.iter().any(|j| {
                j.metadata
                    .name
                    .ends_with(&((c.now().timestamp() / 60).to_string()))
                    && complete(j)
            })
        })
        .await;
        c.poke("late").await;
        until("history trimmed to one", || async {
            c.jobs().await.len() == 1
        })
        .await;
        let _ = round;
    }
}

#[tokio::test]
async fn a_suspended_cron_job_starts_nothing() {
    let c = Cluster::new().await;
    c.env
        .apply(cron("held", Some("0"), json!({"suspend": true})))
        .await;
    // A sibling that is not suspended shows when the minute's passes ran.
    c.env.apply(cron("free", Some("0"), json!({}))).await;
    c.to_next_minute("held", 5).await;
    c.poke("free").await;
    until("the sibling ran", || async { c.jobs().await.len() == 1 }).await;
    c.poke("held").await;
    c.poke("free").await;
    until("the sibling's pass after held's", || async {
        c.events("SawCompletedJob").await > 0
    })
    .await;
    assert!(
        c.jobs()
            .await
            .iter()
            .all(|j| j.metadata.name.starts_with("free-")),
        "held started nothing"
    );
    c.env
        .patch("cronjobs", "held", json!({"spec": {"suspend": false}}))
        .await;
    until("resumed: the missed run starts", || async {
        c.jobs().await.len() == 2
    })
    .await;
}

#[test]
fn schedule_times_in_a_time_zone() {
    let cron = flotilla_objects::parse_schedule("0 9 * * *").expect("cron");
    let tz = flotilla_objects::parse_time_zone(Some("Asia/Tokyo")).expect("tz");
    // 09:00 in Tokyo is 00:00 UTC.
    let after = "2026-01-01T12:00:00Z".parse::<DateTime<Utc>>().expect("t");
    let now = "2026-01-03T01:00:00Z".parse::<DateTime<Utc>>().expect("t");
    let (last, count, next) = schedule_times(&cron, tz, after, now);
    assert_eq!(count, 2);
    assert_eq!(last, Some("2026-01-03T00:00:00Z".parse().expect("t")));
    assert_eq!(next, Some("2026-01-04T00:00:00Z".parse().expect("t")));
}

#[test]
fn many_missed_times_do_not_walk_every_minute() {
    let cron = flotilla_objects::parse_schedule("* * * * *").expect("cron");
    let after = "2020-01-01T00:00:00Z".parse::<DateTime<Utc>>().expect("t");
    let now = "2026-01-01T00:00:30Z".parse::<DateTime<Utc>>().expect("t");
    let (last, count, _) = schedule_times(&cron, chrono_tz::UTC, after, now);
    assert_eq!(last, Some("2026-01-01T00:00:00Z".parse().expect("t")));
    assert!(count > MISSED_WARN && count < 10_000, "{count}");
}
