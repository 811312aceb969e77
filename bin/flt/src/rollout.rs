//! `flt rollout status|history|undo|restart|pause|resume`, as kubectl
//! does them for Deployments (and DaemonSets where kubectl supports them).

use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use clap::{Args, Subcommand};
use flotilla_objects::api::{EventType, ListParams, WatchParams};
use flotilla_objects::registry::{self, ResourceInfo};
use futures::StreamExt;
use serde_json::{json, Value};

use crate::commands::Ctx;

/// The rollout verbs.
#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Wait for a rollout to finish; exit non-zero if its progress
    /// deadline passes (or --timeout does).
    Status {
        #[command(flatten)]
        target: Target,
        /// Return after printing the status once instead of waiting.
        #[arg(short, long, default_value_t = true, action = clap::ArgAction::Set)]
        watch: bool,
        /// Give up after this long (e.g. 90s, 5m); 0 waits forever.
        #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// List a Deployment's revisions, or show one's pod template.
    History {
        #[command(flatten)]
        target: Target,
        /// Show the pod template of this revision.
        #[arg(long, default_value_t = 0)]
        revision: i64,
    },
    /// Go back to a previous revision's pod template.
    Undo {
        #[command(flatten)]
        target: Target,
        /// The revision to go back to (0: the one before the current).
        #[arg(long, default_value_t = 0)]
        to_revision: i64,
    },
    /// Restart every pod through a rollout (a new template annotation).
    Restart {
        #[command(flatten)]
        target: Target,
    },
    /// Stop rolling out template changes (scaling still happens).
    Pause {
        #[command(flatten)]
        target: Target,
    },
    /// Resume a paused rollout.
    Resume {
        #[command(flatten)]
        target: Target,
    },
}

/// `deploy/web`, or `deploy web`.
#[derive(Debug, Args)]
pub struct Target {
    /// KIND/NAME, or KIND followed by NAME.
    kind: String,
    name: Option<String>,
}

impl Target {
    fn resolve(&self, allowed: &[&str]) -> Result<(&'static ResourceInfo, String)> {
        let (kind, name) = match (self.kind.split_once('/'), &self.name) {
            (Some((k, n)), None) => (k.to_string(), n.to_string()),
            (None, Some(n)) => (self.kind.clone(), n.clone()),
            (Some(_), Some(_)) => bail!("there is no need to specify a resource type as a separate argument when passing arguments in resource/name form"),
            (None, None) => bail!("required resource not specified: give KIND/NAME"),
        };
        let info = registry::lookup(&kind)
            .ok_or_else(|| anyhow!("the server doesn't have a resource type \"{kind}\""))?;
        if !allowed.contains(&info.kind) {
            bail!(
                "no rollout support for {}: {} only",
                info.plural,
                allowed.join(", ")
            );
        }
        Ok((info, name))
    }
}

fn ref_name(info: &ResourceInfo, name: &str) -> String {
    format!("{}.{}/{name}", info.singular, info.group)
}

const REVISION: &str = "deployment.kubernetes.io/revision";
const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";
const HASH_LABEL: &str = "pod-template-hash";
const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";

fn int(v: &Value, ptr: &str) -> i64 {
    v.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

/// kubectl's status line for a Deployment or DaemonSet, and whether the
/// rollout is done; an error when the deadline was exceeded.
pub fn status_line(kind: &str, obj: &Value) -> Result<(String, bool)> {
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    if int(obj, "/metadata/generation") > int(obj, "/status/observedGeneration") {
        let what = if kind == "Deployment" {
            "deployment"
        } else {
            "daemon set"
        };
        return Ok((
            format!("Waiting for {what} spec update to be observed..."),
            false,
        ));
    }
    if kind == "DaemonSet" {
        let desired = int(obj, "/status/desiredNumberScheduled");
        let updated = int(obj, "/status/updatedNumberScheduled");
        let available = int(obj, "/status/numberAvailable");
        if updated < desired {
            return Ok((format!("Waiting for daemon set {name:?} rollout to finish: {updated} out of {desired} new pods have been updated..."), false));
        }
        if available < desired {
            return Ok((format!("Waiting for daemon set {name:?} rollout to finish: {available} of {desired} updated pods are available..."), false));
        }
        return Ok((format!("daemon set {name:?} successfully rolled out"), true));
    }
    let deadline = obj
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Progressing" && c["reason"] == "ProgressDeadlineExceeded");
    if deadline {
        bail!("deployment {name:?} exceeded its progress deadline");
    }
    let replicas = obj
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let updated = int(obj, "/status/updatedReplicas");
    let total = int(obj, "/status/replicas");
    let available = int(obj, "/status/availableReplicas");
    Ok(if updated < replicas {
        (format!("Waiting for deployment {name:?} rollout to finish: {updated} out of {replicas} new replicas have been updated..."), false)
    } else if total > updated {
        (format!("Waiting for deployment {name:?} rollout to finish: {} old replicas are pending termination...", total - updated), false)
    } else if available < updated {
        (format!("Waiting for deployment {name:?} rollout to finish: {available} of {updated} updated replicas are available..."), false)
    } else {
        (format!("deployment {name:?} successfully rolled out"), true)
    })
}

async fn status(
    ctx: &Ctx,
    info: &ResourceInfo,
    name: &str,
    watch: bool,
    timeout: Duration,
) -> Result<()> {
    let ns = ctx.ns(info).to_string();
    let wait = async {
        let mut last = String::new();
        loop {
            let obj = ctx
                .client
                .get(info.plural, &ns, name)
                .await
                .map_err(|e| anyhow!(e.message))?;
            let (line, done) = status_line(info.kind, &obj)?;
            if line != last {
                println!("{line}");
                last = line;
            }
            if done || !watch {
                return Ok(());
            }
            // Wait for the next change of this object.
            let p = WatchParams {
                field_selector: format!("metadata.name={name}"),
                resource_version: obj
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                ..Default::default()
            };
            let mut events = ctx
                .client
                .watch(info.plural, &ns, &p)
                .await
                .map_err(|e| anyhow!(e.message))?;
            loop {
                match events.next().await {
                    Some(Ok(ev)) if ev.kind == EventType::Deleted => {
                        bail!("object has been deleted")
                    }
                    Some(Ok(ev)) if ev.kind == EventType::Bookmark => continue,
                    // A change (or a broken stream): look again.
                    _ => break,
                }
            }
        }
    };
    if timeout.is_zero() {
        return wait.await;
    }
    match tokio::time::timeout(timeout, wait).await {
        Ok(r) => r,
        Err(_) => bail!("timed out waiting for the condition"),
    }
}

/// The Deployment's ReplicaSets (those it controls), oldest revision first.
async fn replica_sets(ctx: &Ctx, ns: &str, d: &Value) -> Result<Vec<Value>> {
    let uid = d
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("");
    let list = ctx
        .client
        .list("replicasets", ns, &ListParams::default())
        .await
        .map_err(|e| anyhow!(e.message))?;
    let mut sets: Vec<Value> = list
        .items
        .into_iter()
        .filter(|rs| {
            rs.pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .is_some_and(|o| o.iter().any(|r| r["uid"] == uid && r["controller"] == true))
        })
        .collect();
    sets.sort_by_key(revision);
    Ok(sets)
}

fn revision(rs: &Value) -> i64 {
    rs.pointer("/metadata/annotations")
        .and_then(|a| a.get(REVISION))
        .and_then(Value::as_str)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// A ReplicaSet's pod template without the hash label it was given.
fn template_of(rs: &Value) -> Value {
    let mut t = rs.pointer("/spec/template").cloned().unwrap_or(json!({}));
    if let Some(labels) = t
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove(HASH_LABEL);
    }
    t
}

async fn history(ctx: &Ctx, info: &ResourceInfo, name: &str, rev: i64) -> Result<()> {
    let ns = ctx.ns(info).to_string();
    let d = ctx
        .client
        .get(info.plural, &ns, name)
        .await
        .map_err(|e| anyhow!(e.message))?;
    let sets = replica_sets(ctx, &ns, &d).await?;
    if rev > 0 {
        let rs = sets
            .iter()
            .find(|r| revision(r) == rev)
            .ok_or_else(|| anyhow!("unable to find the specified revision"))?;
        println!(
            "{}/{name} with revision #{rev}",
            ref_name(info, "").trim_end_matches('/')
        );
        println!("Pod Template:");
        print!("{}", serde_yaml::to_string(&template_of(rs))?);
        return Ok(());
    }
    println!("{}/{name}", ref_name(info, "").trim_end_matches('/'));
    let mut rows = vec![vec!["REVISION".to_string(), "CHANGE-CAUSE".to_string()]];
    for rs in &sets {
        let cause = rs
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(CHANGE_CAUSE))
            .and_then(Value::as_str)
            .unwrap_or("<none>");
        rows.push(vec![revision(rs).to_string(), cause.to_string()]);
    }
    for r in rows {
        println!("{:<10} {}", r[0], r[1]);
    }
    println!();
    Ok(())
}

async fn undo(ctx: &Ctx, info: &ResourceInfo, name: &str, to: i64) -> Result<()> {
    let ns = ctx.ns(info).to_string();
    let d = ctx
        .client
        .get(info.plural, &ns, name)
        .await
        .map_err(|e| anyhow!(e.message))?;
    if d.pointer("/spec/paused").and_then(Value::as_bool) == Some(true) {
        bail!("you cannot rollback a paused deployment; resume it first with 'flt rollout resume' and try again");
    }
    let sets = replica_sets(ctx, &ns, &d).await?;
    let current = sets.iter().map(revision).max().unwrap_or(0);
    let target = if to == 0 {
        sets.iter().rev().find(|r| revision(r) < current)
    } else {
        sets.iter().find(|r| revision(r) == to)
    };
    let Some(rs) = target else {
        if to == 0 {
            bail!("no rollout history found for {}", ref_name(info, name));
        }
        bail!("unable to find specified revision {to} in history");
    };
    let template = template_of(rs);
    let mut current_template = d.pointer("/spec/template").cloned().unwrap_or(json!({}));
    if let Some(l) = current_template
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        l.remove(HASH_LABEL);
    }
    if template == current_template {
        println!(
            "{} skipped rollback (current template already matches revision {})",
            ref_name(info, name),
            revision(rs)
        );
        return Ok(());
    }
    // The whole template is replaced, conditional on the version read.
    let mut d2 = d.clone();
    d2["spec"]["template"] = template;
    ctx.client
        .update(info.plural, &ns, &d2)
        .await
        .map_err(|e| anyhow!(e.message))?;
    println!("{} rolled back", ref_name(info, name));
    Ok(())
}

async fn patch(ctx: &Ctx, info: &ResourceInfo, name: &str, patch: Value, verb: &str) -> Result<()> {
    let ns = ctx.ns(info).to_string();
    ctx.client
        .patch(info.plural, &ns, name, &patch, false)
        .await
        .map_err(|e| anyhow!(e.message))?;
    println!("{} {verb}", ref_name(info, name));
    Ok(())
}

pub async fn run(ctx: &Ctx, cmd: RolloutCommand) -> Result<()> {
    const BOTH: &[&str] = &["Deployment", "DaemonSet"];
    const DEPLOY: &[&str] = &["Deployment"];
    match cmd {
        RolloutCommand::Status {
            target,
            watch,
            timeout,
        } => {
            let (info, name) = target.resolve(BOTH)?;
            status(ctx, info, &name, watch, timeout).await
        }
        RolloutCommand::History { target, revision } => {
            let (info, name) = target.resolve(DEPLOY)?;
            history(ctx, info, &name, revision).await
        }
        RolloutCommand::Undo {
            target,
            to_revision,
        } => {
            let (info, name) = target.resolve(DEPLOY)?;
            undo(ctx, info, &name, to_revision).await
        }
        RolloutCommand::Restart { target } => {
            let (info, name) = target.resolve(BOTH)?;
            let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            let p =
                json!({"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: now}}}}});
            patch(ctx, info, &name, p, "restarted").await
        }
        RolloutCommand::Pause { target } => {
            let (info, name) = target.resolve(DEPLOY)?;
            patch(
                ctx,
                info,
                &name,
                json!({"spec": {"paused": true}}),
                "paused",
            )
            .await
        }
        RolloutCommand::Resume { target } => {
            let (info, name) = target.resolve(DEPLOY)?;
            patch(
                ctx,
                info,
                &name,
                json!({"spec": {"paused": false}}),
                "resumed",
            )
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_follow_kubectl() {
        let d = |gen: i64, obs: i64, st: Value| {
            json!({"metadata": {"name": "web", "generation": gen}, "spec": {"replicas": 3},
                "status": {"observedGeneration": obs}})
            .as_object()
            .cloned()
            .map(|mut o| {
                if let Some(s) = o.get_mut("status").and_then(Value::as_object_mut) {
                    s.extend(st.as_object().cloned().unwrap_or_default());
                }
                Value::Object(o)
            })
            .unwrap_or_default()
        };
        let line = |v: Value| {
            status_line("Deployment", &v)
                .map(|(l, _)| l)
                .unwrap_or_else(|e| e.to_string())
        };
        assert_eq!(
            line(d(2, 1, json!({}))),
            "Waiting for deployment spec update to be observed..."
        );
        assert_eq!(
            line(d(2, 2, json!({"updatedReplicas": 1, "replicas": 4}))),
            "Waiting for deployment \"web\" rollout to finish: 1 out of 3 new replicas have been updated..."
        );
        assert_eq!(
            line(d(2, 2, json!({"updatedReplicas": 3, "replicas": 4}))),
            "Waiting for deployment \"web\" rollout to finish: 1 old replicas are pending termination..."
        );
        assert_eq!(
            line(d(2, 2, json!({"updatedReplicas": 3, "replicas": 3, "availableReplicas": 2}))),
            "Waiting for deployment \"web\" rollout to finish: 2 of 3 updated replicas are available..."
        );
        assert_eq!(
            status_line(
                "Deployment",
                &d(
                    2,
                    2,
                    json!({"updatedReplicas": 3, "replicas": 3, "availableReplicas": 3})
                )
            )
            .ok(),
            Some((
                "deployment \"web\" successfully rolled out".to_string(),
                true
            ))
        );
        let stuck = d(
            2,
            2,
            json!({"conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]}),
        );
        assert_eq!(
            line(stuck),
            "deployment \"web\" exceeded its progress deadline"
        );
    }

    #[test]
    fn templates_compare_without_the_hash_label() {
        let rs = json!({"spec": {"template": {"metadata": {"labels": {"app": "web", "pod-template-hash": "abc"}}}}});
        assert_eq!(
            template_of(&rs),
            json!({"metadata": {"labels": {"app": "web"}}})
        );
    }
}
