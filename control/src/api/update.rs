//! Update, status, patch and apply: each computes the desired object from
//! the stored one, admits it, and writes it through the read-modify-write
//! loop ([`super::cas`]).

use flotilla_objects::api::{ApiError, Reason, Written};
use flotilla_objects::patch::{diff, merge_patch};
use flotilla_objects::registry::{self, ResourceInfo};
use flotilla_objects::{admit, validate_update};
use serde_json::{json, Value};

use super::cas::{Claim, Outcome, Step};
use super::json::{
    finalizers, is_terminating, meta_mut, same, set_status, str_at, strip_rv, with_rv,
};
use super::{check_name_param, invalid, object_key, ApiServer, CAS_RETRIES, LAST_APPLIED};
use crate::store::{Op, Txn};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    /// Metadata and spec (status kept).
    Main,
    /// Status only.
    Status,
}

/// The part of a manifest that apply remembers.
pub(crate) fn applied_config(manifest: &Value) -> Value {
    let mut m = manifest.clone();
    if let Some(o) = m.as_object_mut() {
        o.remove("status");
    }
    if let Some(md) = m.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in [
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "generation",
            "deletionTimestamp",
        ] {
            md.remove(k);
        }
        if let Some(a) = md.get_mut("annotations").and_then(Value::as_object_mut) {
            a.remove(LAST_APPLIED);
            if a.is_empty() {
                md.remove("annotations");
            }
        }
    }
    m
}

fn set_last_applied(v: &mut Value, config: &Value) {
    let s = serde_json::to_string(config).unwrap_or_default();
    let m = meta_mut(v);
    let a = m.entry("annotations").or_insert_with(|| json!({}));
    if !a.is_object() {
        *a = json!({});
    }
    if let Some(a) = a.as_object_mut() {
        a.insert(LAST_APPLIED.into(), Value::String(s));
    }
}

fn name_required(info: &ResourceInfo) -> ApiError {
    ApiError::new(
        Reason::Invalid,
        format!(
            "{} \"\" is invalid: metadata.name: Required value: name is required",
            info.kind
        ),
    )
}

impl ApiServer {
    /// Replace metadata and spec from `object`; its resourceVersion, when set,
    /// is a precondition.
    pub async fn update(
        &self,
        info: &'static ResourceInfo,
        req_ns: &str,
        object: Value,
        dry_run: bool,
    ) -> Result<Written, ApiError> {
        self.replace_part(info, req_ns, object, Part::Main, dry_run)
            .await
    }

    /// Replace the status from `object`; its resourceVersion, when set, is a
    /// precondition.
    pub async fn update_status(
        &self,
        info: &'static ResourceInfo,
        req_ns: &str,
        object: Value,
        dry_run: bool,
    ) -> Result<Written, ApiError> {
        if !info.has_status {
            return Err(ApiError::new(
                Reason::MethodNotAllowed,
                format!("{} have no status", info.plural),
            ));
        }
        self.replace_part(info, req_ns, object, Part::Status, dry_run)
            .await
    }

    async fn replace_part(
        &self,
        info: &'static ResourceInfo,
        req_ns: &str,
        object: Value,
        part: Part,
        dry_run: bool,
    ) -> Result<Written, ApiError> {
        if !object.is_object() {
            return Err(ApiError::bad_request("the object must be a JSON object"));
        }
        let ns = self.namespace_for(info, req_ns, &object)?;
        let name = str_at(&object, "/metadata/name").to_string();
        if name.is_empty() {
            return Err(name_required(info));
        }
        let rv = str_at(&object, "/metadata/resourceVersion").to_string();
        let precondition = (!rv.is_empty()).then_some(rv);
        self.modify(info, &ns, &name, part, precondition, dry_run, |_cur| {
            Ok(object.clone())
        })
        .await
    }

    /// Apply a JSON merge patch to the object or its status. A
    /// resourceVersion in the patch is a precondition.
    pub async fn patch(
        &self,
        info: &'static ResourceInfo,
        ns: &str,
        name: &str,
        patch: Value,
        status: bool,
        dry_run: bool,
    ) -> Result<Written, ApiError> {
        let ns = self.object_ns(info, ns)?;
        check_name_param("name", name)?;
        if !patch.is_object() {
            return Err(ApiError::bad_request("a merge patch must be a JSON object"));
        }
        if status && !info.has_status {
            return Err(ApiError::new(
                Reason::MethodNotAllowed,
                format!("{} have no status", info.plural),
            ));
        }
        let rv = str_at(&patch, "/metadata/resourceVersion").to_string();
        let precondition = (!rv.is_empty()).then_some(rv);
        let part = if status { Part::Status } else { Part::Main };
        self.modify(info, &ns, name, part, precondition, dry_run, |cur| {
            let mut v = cur.clone();
            merge_patch(&mut v, &patch);
            strip_rv(&mut v);
            Ok(v)
        })
        .await
    }

    /// Create or update from a manifest: fields set by the manifest are set,
    /// fields the previous apply set and this one no longer does are
    /// removed, everything else (other writers' changes) is kept.
    #[tracing::instrument(level = "debug", skip(self, manifest))]
    pub async fn apply(
        &self,
        req_ns: &str,
        manifest: Value,
        dry_run: bool,
    ) -> Result<(Written, &'static str), ApiError> {
        if !manifest.is_object() {
            return Err(ApiError::bad_request("the manifest must be a JSON object"));
        }
        let api_version = str_at(&manifest, "/apiVersion");
        let kind = str_at(&manifest, "/kind");
        if kind.is_empty() {
            return Err(ApiError::bad_request("the manifest has no kind"));
        }
        let info = registry::by_kind(api_version, kind).ok_or_else(|| {
            ApiError::bad_request(format!(
                "no matches for kind \"{kind}\" in version \"{api_version}\""
            ))
        })?;
        let ns = self.namespace_for(info, req_ns, &manifest)?;
        let name = str_at(&manifest, "/metadata/name").to_string();
        if name.is_empty() {
            return Err(name_required(info));
        }
        let config = applied_config(&manifest);
        // Update in place; an object that is not there (modify's NotFound
        // comes from a read through the leader) is created instead.
        for _ in 0..CAS_RETRIES {
            let res = self
                .modify(info, &ns, &name, Part::Main, None, dry_run, |cur| {
                    let last = cur
                        .pointer("/metadata/annotations")
                        .and_then(|a| a.get(LAST_APPLIED))
                        .and_then(Value::as_str)
                        .and_then(|s| serde_json::from_str::<Value>(s).ok())
                        .unwrap_or_else(|| json!({}));
                    let mut v = cur.clone();
                    merge_patch(&mut v, &diff(&last, &config));
                    set_last_applied(&mut v, &config);
                    strip_rv(&mut v);
                    Ok(v)
                })
                .await;
            match res {
                Ok(w) => {
                    let action = if w.changed { "configured" } else { "unchanged" };
                    return Ok((w, action));
                }
                Err(e) if e.is(Reason::NotFound) => {}
                Err(e) => return Err(e),
            }
            let mut obj = config.clone();
            set_last_applied(&mut obj, &config);
            match self.create(info, &ns, obj, dry_run).await {
                Ok(w) => return Ok((w, "created")),
                Err(e) if e.is(Reason::AlreadyExists) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(ApiError::conflict(&info.qualified_name(), &name))
    }

    /// The read-modify-write behind update, status, patch and apply: `f`
    /// turns the stored object into the desired one.
    #[allow(clippy::too_many_arguments)]
    async fn modify<F>(
        &self,
        info: &'static ResourceInfo,
        ns: &str,
        name: &str,
        part: Part,
        precondition: Option<String>,
        dry_run: bool,
        f: F,
    ) -> Result<Written, ApiError>
    where
        F: Fn(&Value) -> Result<Value, ApiError>,
    {
        let key = object_key(info, ns, name);
        let qn = info.qualified_name();
        let strategy = self.strategy(info);
        let mut warnings = Vec::new();
        let outcome = self
            .cas(
                &key,
                || ApiError::not_found(&qn, name),
                || ApiError::conflict(&qn, name),
                |kv, cur| {
                    if let Some(rv) = &precondition {
                        if rv != &kv.mod_revision.to_string() {
                            return Ok(Step::Refuse(ApiError::conflict(&qn, name)));
                        }
                    }
                    let desired = f(&cur)?;
                    let (mut new, w) = self.admit_change(info, ns, name, part, &cur, desired)?;
                    self.restrict(info, Some(&cur), Some(&new))?;
                    warnings = w;
                    strip_rv(&mut new);
                    // A stale value (encrypted with an old key) is written
                    // again even unchanged: that is how keys are rotated.
                    if same(&new, &cur) && !kv.stale {
                        return Ok(Step::Unchanged(cur));
                    }
                    if dry_run {
                        return Ok(Step::DryRun(with_rv(new, kv.mod_revision)));
                    }
                    // A terminating object whose last finalizer went is deleted.
                    let finished = is_terminating(&new)
                        && finalizers(&new).is_empty()
                        && !strategy.waits_beyond_finalizers(&new);
                    let mut txn = Txn::default();
                    // Addresses the caller named itself (not kept from before).
                    let had = strategy.held(&cur);
                    let named: Vec<Vec<u8>> = strategy
                        .held(&new)
                        .into_iter()
                        .filter(|k| !had.contains(k))
                        .collect();
                    if !finished && part == Part::Main {
                        strategy.allocate(&mut new, Some(&cur))?;
                    }
                    let has = if finished {
                        Vec::new()
                    } else {
                        strategy.held(&new)
                    };
                    let claims: Vec<Claim> = has
                        .iter()
                        .filter(|k| !had.contains(k))
                        .map(|k| Claim {
                            key: k.clone(),
                            named: named.contains(k).then(|| strategy.taken(name, k)),
                        })
                        .collect();
                    for k in had.iter().filter(|k| !has.contains(k)) {
                        txn.ops.push(Op::Delete(k.clone()));
                    }
                    txn.ops.push(if finished {
                        Op::Delete(key.clone())
                    } else {
                        Op::Put(key.clone(), self.encode_for_store(&new)?)
                    });
                    Ok(Step::Claim(txn, new, claims))
                },
            )
            .await?;
        Ok(match outcome {
            Outcome::Written { revision, object } => Written {
                object: with_rv(object, revision),
                warnings,
                changed: true,
            },
            Outcome::Replayed { now, attempted } => Written {
                object: now.unwrap_or(attempted),
                warnings,
                changed: true,
            },
            Outcome::Unchanged(object) => Written {
                object,
                warnings,
                changed: false,
            },
            Outcome::DryRun(object) => Written {
                object,
                warnings,
                changed: true,
            },
        })
    }

    /// The object an update would store: the desired object checked against
    /// the stored one and admitted, with what an update keeps carried over.
    fn admit_change(
        &self,
        info: &'static ResourceInfo,
        ns: &str,
        name: &str,
        part: Part,
        cur: &Value,
        desired: Value,
    ) -> Result<(Value, Vec<String>), ApiError> {
        let qn = info.qualified_name();
        if !desired.is_object() {
            return Err(ApiError::bad_request("the object must be a JSON object"));
        }
        let dname = str_at(&desired, "/metadata/name");
        if !dname.is_empty() && dname != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({dname}) does not match the name on the request ({name})"
            )));
        }
        let duid = str_at(&desired, "/metadata/uid");
        let cuid = str_at(cur, "/metadata/uid");
        if !duid.is_empty() && duid != cuid {
            return Err(ApiError::new(
                Reason::Conflict,
                format!("Operation cannot be fulfilled on {qn} \"{name}\": Precondition failed: UID in precondition: {duid}, UID in object meta: {cuid}"),
            ));
        }
        match part {
            Part::Main => {
                let mut d = desired;
                meta_mut(&mut d).insert("name".into(), Value::String(name.to_string()));
                if info.namespaced {
                    meta_mut(&mut d).insert("namespace".into(), Value::String(ns.to_string()));
                } else {
                    meta_mut(&mut d).remove("namespace");
                }
                self.strategy(info).prepare_update(cur, &mut d);
                let a = admit(info, d).map_err(|e| invalid(info, name, &e))?;
                let errs = validate_update(info, cur, &a.object);
                if !errs.is_empty() {
                    return Err(invalid(info, name, &errs));
                }
                Ok((carry_over(info, cur, a.object), a.warnings))
            }
            Part::Status => {
                // Everything but the status stays; the status is admitted
                // (decoded, defaulted, validated) as part of the object.
                let mut n = cur.clone();
                set_status(&mut n, desired.get("status"));
                let a = admit(info, n).map_err(|e| invalid(info, name, &e))?;
                let mut kept = cur.clone();
                set_status(&mut kept, a.object.get("status"));
                Ok((kept, a.warnings))
            }
        }
    }
}

/// What an update keeps from the stored object.
fn carry_over(info: &ResourceInfo, cur: &Value, mut new: Value) -> Value {
    let cm = cur.get("metadata").cloned().unwrap_or_else(|| json!({}));
    {
        let m = meta_mut(&mut new);
        for k in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ] {
            match cm.get(k) {
                Some(v) => {
                    m.insert(k.into(), v.clone());
                }
                None => {
                    m.remove(k);
                }
            }
        }
    }
    if info.has_status {
        let gen = cm.get("generation").and_then(Value::as_i64).unwrap_or(1);
        let bump = cur.get("spec") != new.get("spec");
        meta_mut(&mut new).insert("generation".into(), json!(if bump { gen + 1 } else { gen }));
        set_status(&mut new, cur.get("status"));
    } else {
        meta_mut(&mut new).remove("generation");
    }
    new
}
