//! Delete: at once, or mark the object terminating while something it
//! waits for is pending (finalizers, a pod's grace period, a namespace's
//! contents, foreground or orphan propagation).

use chrono::{DateTime, Duration, Utc};
use flotilla_objects::api::{ApiError, DeleteParams, Propagation, Reason};
use flotilla_objects::registry::ResourceInfo;
use serde_json::{json, Value};

use super::cas::{Outcome, Step};
use super::json::{
    finalizers, is_terminating, meta_mut, same, set_finalizers, str_at, strip_rv, with_rv,
};
use super::{check_name_param, object_key, ApiServer, FOREGROUND_FINALIZER, ORPHAN_FINALIZER};
use crate::store::{Op, Txn};

fn timestamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn parse_timestamp(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

impl ApiServer {
    /// Delete an object: at once, or (finalizers, grace period, namespace
    /// contents, foreground/orphan propagation) mark it terminating. Returns
    /// the object as deleted or as it now waits, and whether it is gone.
    #[tracing::instrument(level = "debug", skip(self, o), fields(kind = info.kind))]
    pub async fn delete(
        &self,
        info: &'static ResourceInfo,
        ns: &str,
        name: &str,
        o: &DeleteParams,
    ) -> Result<(Value, bool), ApiError> {
        let ns = self.object_ns(info, ns)?;
        check_name_param("name", name)?;
        let qn = info.qualified_name();
        let strategy = self.strategy(info);
        if let Some(e) = strategy.forbid_delete(name) {
            return Err(e);
        }
        let key = object_key(info, &ns, name);
        let mut gone = false;
        let outcome = self
            .cas(
                &key,
                || ApiError::not_found(&qn, name),
                || ApiError::conflict(&qn, name),
                |kv, cur| {
                    self.restrict(info, Some(&cur), None)?;
                    let uid = str_at(&cur, "/metadata/uid");
                    if !o.precondition_uid.is_empty() && o.precondition_uid != uid {
                        return Ok(Step::Refuse(ApiError::new(Reason::Conflict, format!(
                            "Operation cannot be fulfilled on {qn} \"{name}\": Precondition failed: UID in precondition: {}, UID in object meta: {uid}", o.precondition_uid))));
                    }
                    if !o.precondition_resource_version.is_empty()
                        && o.precondition_resource_version != kv.mod_revision.to_string()
                    {
                        return Ok(Step::Refuse(ApiError::new(Reason::Conflict, format!(
                            "Operation cannot be fulfilled on {qn} \"{name}\": Precondition failed: ResourceVersion in precondition: {}, ResourceVersion in object meta: {}", o.precondition_resource_version, kv.mod_revision))));
                    }
                    let terminating = is_terminating(&cur);
                    let mut new = cur.clone();
                    strip_rv(&mut new);
                    let mut fins = finalizers(&cur);
                    if !terminating {
                        let add = match o.propagation {
                            Some(Propagation::Foreground) => Some(FOREGROUND_FINALIZER),
                            Some(Propagation::Orphan) => Some(ORPHAN_FINALIZER),
                            _ => None,
                        };
                        if let Some(f) = add {
                            if !fins.iter().any(|x| x == f) {
                                fins.push(f.to_string());
                            }
                        }
                    }
                    let grace = strategy.grace_seconds(&cur, o);
                    let pending =
                        !fins.is_empty() || strategy.waits_beyond_finalizers(&cur) || grace > 0;
                    if !pending {
                        gone = true;
                        if o.dry_run {
                            return Ok(Step::DryRun(cur));
                        }
                        let mut ops: Vec<Op> =
                            strategy.held(&cur).into_iter().map(Op::Delete).collect();
                        ops.push(Op::Delete(key.clone()));
                        return Ok(Step::Write(Txn::new(vec![], ops), cur));
                    }
                    gone = false;
                    set_finalizers(&mut new, &fins);
                    strategy.on_delete(&mut new);
                    self.set_deadline(&mut new, terminating, grace);
                    if same(&new, &cur) {
                        return Ok(Step::Unchanged(cur));
                    }
                    if o.dry_run {
                        return Ok(Step::DryRun(with_rv(new, kv.mod_revision)));
                    }
                    let bytes = self.encode_for_store(&new)?;
                    Ok(Step::Write(
                        Txn::new(vec![], vec![Op::Put(key.clone(), bytes)]),
                        new,
                    ))
                },
            )
            .await?;
        Ok(match outcome {
            Outcome::Written { revision, object } => {
                if gone {
                    (object, true)
                } else {
                    (with_rv(object, revision), false)
                }
            }
            // An earlier attempt of this call wrote: report what is there now.
            Outcome::Replayed { now, attempted } => match now {
                Some(v) => (v, false),
                None if attempted.is_null() => (
                    json!({"apiVersion": info.api_version(), "kind": info.kind,
                        "metadata": {"name": name, "namespace": ns}}),
                    true,
                ),
                None => (attempted, true),
            },
            Outcome::Unchanged(v) => (v, false),
            Outcome::DryRun(v) => (v, gone),
        })
    }

    /// The deletion deadline of an object whose deletion waits: `grace`
    /// seconds from when its deletion started (a shorter grace on a
    /// terminating object moves the deadline earlier, never later, as in
    /// Kubernetes); for a wait without grace, the time the deletion started.
    fn set_deadline(&self, new: &mut Value, terminating: bool, grace: i64) {
        let now = self.now();
        let m = meta_mut(new);
        let current = m.get("deletionGracePeriodSeconds").and_then(Value::as_i64);
        let deadline = m
            .get("deletionTimestamp")
            .and_then(Value::as_str)
            .and_then(parse_timestamp);
        if !terminating {
            m.insert(
                "deletionTimestamp".into(),
                Value::String(timestamp(now + Duration::seconds(grace))),
            );
            m.insert("deletionGracePeriodSeconds".into(), json!(grace));
            return;
        }
        match (current, deadline) {
            (Some(c), Some(d)) if grace > 0 && grace < c => {
                let started = d - Duration::seconds(c);
                m.insert(
                    "deletionTimestamp".into(),
                    Value::String(timestamp(started + Duration::seconds(grace))),
                );
                m.insert("deletionGracePeriodSeconds".into(), json!(grace));
            }
            // Already waiting at least as little: keep the deadline.
            _ => {}
        }
    }
}
