//! `flt wait`: block until objects meet a condition, as `kubectl wait`
//! does: `--for=condition=Ready[=true]`, `--for=delete`, or
//! `--for=jsonpath='{.status.phase}'=Running`, over objects named, a
//! selector, or `--all`. Prints `pod/web condition met` per object; exit
//! code 1 with `timed out waiting for the condition on pods/web` when
//! `--timeout` passes first.

use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use clap::Args;
use flotilla_objects::api::Reason;
use flotilla_objects::registry::ResourceInfo;
use serde_json::Value;

use crate::commands::{resolve, singular_qualified, Ctx};

#[derive(Args, Debug)]
pub struct WaitArgs {
    /// KIND/NAME..., or KIND NAME..., or KIND with -l or --all.
    #[arg(required = true)]
    pub targets: Vec<String>,
    /// condition=NAME[=VALUE] (VALUE default true), delete, or
    /// jsonpath='{.path}'=VALUE.
    #[arg(long = "for", required = true, value_name = "CONDITION")]
    pub for_: String,
    /// Label selector (with a KIND).
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Every object of the KIND in the namespace.
    #[arg(long)]
    pub all: bool,
    /// How long to wait (30s, 5m, 1h; 0 checks once).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// What to wait for.
#[derive(Debug, PartialEq)]
enum For {
    Condition { name: String, status: String },
    Delete,
    JsonPath { path: Vec<Step>, value: String },
}

#[derive(Debug, PartialEq)]
enum Step {
    Field(String),
    Index(usize),
}

fn parse_for(s: &str) -> Result<For> {
    if s == "delete" {
        return Ok(For::Delete);
    }
    if let Some(c) = s.strip_prefix("condition=") {
        let (name, status) = c.split_once('=').unwrap_or((c, "true"));
        if name.is_empty() {
            bail!("--for=condition needs a condition name");
        }
        return Ok(For::Condition {
            name: name.to_string(),
            status: status.to_string(),
        });
    }
    if let Some(j) = s.strip_prefix("jsonpath=") {
        let (expr, value) = j.rsplit_once('=').ok_or_else(|| {
            anyhow!("jsonpath wait needs a value: --for=jsonpath='{{.status.phase}}'=Running")
        })?;
        let expr = expr.trim_matches(|c| c == '\'' || c == '"');
        let inner = expr
            .strip_prefix('{')
            .and_then(|e| e.strip_suffix('}'))
            .unwrap_or(expr);
        return Ok(For::JsonPath {
            path: parse_path(inner)?,
            value: value.trim_matches(|c| c == '\'' || c == '"').to_string(),
        });
    }
    bail!("unrecognized condition: \"{s}\" (use condition=NAME[=VALUE], delete or jsonpath=EXPR=VALUE)")
}

/// `.status.containerStatuses[0].ready`
fn parse_path(e: &str) -> Result<Vec<Step>> {
    let mut out = Vec::new();
    for part in e
        .trim_start_matches('.')
        .split('.')
        .filter(|p| !p.is_empty())
    {
        let (field, rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !field.is_empty() {
            out.push(Step::Field(field.to_string()));
        }
        for idx in rest.split('[').filter(|s| !s.is_empty()) {
            let n = idx
                .strip_suffix(']')
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| anyhow!("bad index [{idx} in jsonpath {e:?}"))?;
            out.push(Step::Index(n));
        }
    }
    if out.is_empty() {
        bail!("empty jsonpath");
    }
    Ok(out)
}

fn at<'a>(v: &'a Value, path: &[Step]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, s| match s {
        Step::Field(f) => v.get(f),
        Step::Index(i) => v.get(*i),
    })
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Whether an object meets a condition (`Delete` is handled by the caller).
fn met(obj: &Value, f: &For) -> bool {
    match f {
        For::Delete => false,
        For::Condition { name, status } => obj
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|c| {
                c["type"]
                    .as_str()
                    .is_some_and(|t| t.eq_ignore_ascii_case(name))
                    && c["status"]
                        .as_str()
                        .is_some_and(|s| s.eq_ignore_ascii_case(status))
            }),
        For::JsonPath { path, value } => at(obj, path).is_some_and(|v| scalar(v) == *value),
    }
}

pub async fn wait(ctx: &Ctx, a: WaitArgs) -> Result<()> {
    let f = parse_for(&a.for_)?;
    // The objects: KIND/NAME..., or KIND NAME..., or KIND with a selector.
    let mut objects: Vec<(&'static ResourceInfo, String)> = Vec::new();
    if a.targets[0].contains('/') {
        for t in &a.targets {
            let (k, n) = t
                .split_once('/')
                .ok_or_else(|| anyhow!("there is no need to specify a resource type as a separate argument when passing arguments in resource/name form: {t}"))?;
            objects.push((resolve(k)?, n.to_string()));
        }
    } else {
        let info = resolve(&a.targets[0])?;
        let names = &a.targets[1..];
        if names.is_empty() {
            if a.selector.is_none() && !a.all {
                bail!("resource(s) were provided, but no name was specified");
            }
            for n in crate::commands::names_matching(ctx, info, a.selector.as_deref()).await? {
                objects.push((info, n));
            }
            if objects.is_empty() {
                bail!("no matching resources found");
            }
        } else {
            objects.extend(names.iter().map(|n| (info, n.clone())));
        }
    }
    let deadline = tokio::time::Instant::now() + a.timeout;
    for (info, name) in objects {
        let qualified = singular_qualified(info);
        loop {
            let done = match ctx.client.get(info.plural, ctx.ns(info), &name).await {
                Ok(obj) => met(&obj, &f),
                Err(e) if e.reason == Reason::NotFound => {
                    if f == For::Delete {
                        true
                    } else {
                        return Err(anyhow!(e.message));
                    }
                }
                Err(e) => return Err(anyhow!(e.message)),
            };
            if done {
                println!("{qualified}/{name} condition met");
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "timed out waiting for the condition on {}/{name}",
                    info.plural
                );
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            tokio::time::sleep(left.min(Duration::from_millis(200))).await;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn conditions_parse_as_kubectl_reads_them() {
        assert_eq!(parse_for("delete").unwrap(), For::Delete);
        assert_eq!(
            parse_for("condition=Ready").unwrap(),
            For::Condition {
                name: "Ready".into(),
                status: "true".into()
            }
        );
        assert_eq!(
            parse_for("condition=Available=False").unwrap(),
            For::Condition {
                name: "Available".into(),
                status: "False".into()
            }
        );
        let j = parse_for("jsonpath='{.status.containerStatuses[0].ready}'=true").unwrap();
        assert_eq!(
            j,
            For::JsonPath {
                path: vec![
                    Step::Field("status".into()),
                    Step::Field("containerStatuses".into()),
                    Step::Index(0),
                    Step::Field("ready".into())
                ],
                value: "true".into()
            }
        );
        assert!(parse_for("ready").is_err());
        assert!(parse_for("jsonpath={.status.phase}").is_err());
    }

    #[test]
    fn objects_meet_conditions() {
        let pod = json!({"status": {"phase": "Running", "containerStatuses": [{"ready": true}],
            "conditions": [{"type": "Ready", "status": "True"}]}});
        assert!(met(&pod, &parse_for("condition=ready").unwrap()));
        assert!(!met(&pod, &parse_for("condition=Ready=false").unwrap()));
        assert!(met(
            &pod,
            &parse_for("jsonpath={.status.phase}=Running").unwrap()
        ));
        assert!(met(
            &pod,
            &parse_for("jsonpath={.status.containerStatuses[0].ready}=true").unwrap()
        ));
        assert!(!met(
            &pod,
            &parse_for("jsonpath={.status.phase}=Pending").unwrap()
        ));
    }
}
