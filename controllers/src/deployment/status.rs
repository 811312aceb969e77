//! A Deployment's status: counts summed over its ReplicaSets, and the
//! Available and Progressing conditions (with the progress deadline).

use std::time::Duration;

use chrono::Utc;
use flotilla_client::events::EventType;
use flotilla_objects::api::ApiError;
use flotilla_objects::apps::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet};
use flotilla_objects::Time;
use flotilla_runtime::{Action, ObjectRef};
use serde_json::json;

use super::{plan, rs_replicas, Deployments};

const PROGRESSING: &str = "Progressing";
const AVAILABLE: &str = "Available";
pub const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
pub const DEADLINE_EXCEEDED: &str = "ProgressDeadlineExceeded";

fn condition(s: &DeploymentStatus, type_: &str) -> Option<DeploymentCondition> {
    s.conditions.iter().find(|c| c.type_ == type_).cloned()
}

/// Set a condition, keeping its transition time when its status is unchanged.
fn set(s: &mut DeploymentStatus, mut c: DeploymentCondition) {
    if let Some(old) = s.conditions.iter().find(|x| x.type_ == c.type_) {
        if old.status == c.status {
            c.last_transition_time = old.last_transition_time;
            if old.reason == c.reason && old.message == c.message {
                c.last_update_time = old.last_update_time;
            }
        }
    }
    s.conditions.retain(|x| x.type_ != c.type_);
    s.conditions.push(c);
    s.conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
}

fn cond(type_: &str, status: &str, reason: &str, message: String) -> DeploymentCondition {
    let now = Some(Time::now());
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        last_update_time: now,
        last_transition_time: now,
        reason: reason.into(),
        message,
    }
}

/// A new ReplicaSet was created: the rollout is progressing.
pub(super) async fn note_new_rs(
    c: &Deployments,
    key: &ObjectRef,
    d: &Deployment,
    rs: &str,
) -> Result<(), ApiError> {
    let mut s = d.status.clone().unwrap_or_default();
    set(
        &mut s,
        cond(
            PROGRESSING,
            "True",
            "NewReplicaSetCreated",
            format!("Created new replica set \"{rs}\""),
        ),
    );
    let p = json!({"status": {"conditions": s.conditions}});
    c.api
        .patch("deployments", &key.namespace, &key.name, p, true, false)
        .await?;
    Ok(())
}

/// Compute and write the status; look again when the deadline would pass.
pub(super) async fn sync(
    c: &Deployments,
    key: &ObjectRef,
    d: &Deployment,
    sets: &[std::sync::Arc<ReplicaSet>],
    new: Option<&ReplicaSet>,
) -> Result<Action, ApiError> {
    let replicas = d.spec.replicas.unwrap_or(1);
    let st = |r: &ReplicaSet| r.status.clone().unwrap_or_default();
    let prev = d.status.clone().unwrap_or_default();
    let mut s = prev.clone();
    s.observed_generation = d.metadata.generation;
    s.replicas = sets.iter().map(|r| st(r).replicas).sum();
    s.updated_replicas = new.map_or(0, |r| st(r).replicas);
    s.ready_replicas = sets.iter().map(|r| st(r).ready_replicas).sum();
    s.available_replicas = sets.iter().map(|r| st(r).available_replicas).sum();
    s.unavailable_replicas = (replicas - s.available_replicas).max(0);
    let ru = d.spec.strategy.rolling_update.clone().unwrap_or_default();
    let (_, max_unavailable) = if d.spec.strategy.type_ == "Recreate" {
        (0, replicas)
    } else {
        plan::fenceposts(ru.max_surge.as_ref(), ru.max_unavailable.as_ref(), replicas)
    };
    if s.available_replicas >= replicas - max_unavailable {
        set(
            &mut s,
            cond(
                AVAILABLE,
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.".into(),
            ),
        );
    } else {
        set(
            &mut s,
            cond(
                AVAILABLE,
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.".into(),
            ),
        );
    }
    let new_name = new.map(|r| r.metadata.name.clone()).unwrap_or_default();
    let old_pods: i32 = sets
        .iter()
        .filter(|r| r.metadata.name != new_name)
        .map(|r| rs_replicas(r).max(st(r).replicas))
        .sum();
    let complete = new.is_some()
        && s.updated_replicas == replicas
        && new.is_some_and(|r| st(r).available_replicas == replicas)
        && old_pods == 0;
    let deadline = d.spec.progress_deadline_seconds.unwrap_or(600);
    let mut requeue = None;
    if d.spec.paused {
        set(
            &mut s,
            cond(
                PROGRESSING,
                "Unknown",
                "DeploymentPaused",
                "Deployment is paused".into(),
            ),
        );
    } else if complete {
        set(
            &mut s,
            cond(
                PROGRESSING,
                "True",
                NEW_RS_AVAILABLE,
                format!("ReplicaSet \"{new_name}\" has successfully progressed."),
            ),
        );
    } else {
        let progressed = s.updated_replicas > prev.updated_replicas
            || s.available_replicas > prev.available_replicas
            || condition(&prev, PROGRESSING)
                .is_none_or(|p| p.reason == NEW_RS_AVAILABLE || p.reason == "DeploymentPaused");
        let current = condition(&s, PROGRESSING);
        if progressed {
            let mut p = cond(
                PROGRESSING,
                "True",
                "ReplicaSetUpdated",
                format!("ReplicaSet \"{new_name}\" is progressing."),
            );
            p.last_transition_time = current
                .as_ref()
                .filter(|c| c.status == "True")
                .and_then(|c| c.last_transition_time)
                .or(p.last_transition_time);
            s.conditions.retain(|x| x.type_ != PROGRESSING);
            s.conditions.push(p);
            s.conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
            requeue = Some(Duration::from_secs(deadline.max(0) as u64));
        } else if let Some(cur) = current {
            if cur.reason != DEADLINE_EXCEEDED {
                let since = cur.last_update_time.map(|t| t.0).unwrap_or_else(Utc::now);
                let end = since + chrono::Duration::seconds(i64::from(deadline));
                if Utc::now() >= end {
                    set(
                        &mut s,
                        cond(
                            PROGRESSING,
                            "False",
                            DEADLINE_EXCEEDED,
                            format!("ReplicaSet \"{new_name}\" has timed out progressing."),
                        ),
                    );
                    c.recorder
                        .record(
                            d,
                            EventType::Warning,
                            DEADLINE_EXCEEDED,
                            &format!("Deployment {} has timed out progressing.", d.metadata.name),
                        )
                        .await;
                } else {
                    requeue = (end - Utc::now()).to_std().ok();
                }
            }
        }
    }
    if s != prev {
        let p = json!({"status": s});
        match c
            .api
            .patch("deployments", &key.namespace, &key.name, p, true, false)
            .await
        {
            Ok(_) => {}
            Err(e) if e.is(flotilla_objects::api::Reason::NotFound) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(match requeue {
        Some(d) => Action::RequeueAfter(d + Duration::from_millis(100)),
        None => Action::Await,
    })
}
