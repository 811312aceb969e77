//! `flt set image|env|resources`: change the containers of a workload's pod
//! template (or of a pod), as kubectl does, through the read-change-write
//! loop of `flt patch` (conflicts retried on the latest version).

use anyhow::{anyhow, bail, Result};
use clap::{Args, Subcommand};
use flotilla_objects::registry::ResourceInfo;
use serde_json::{json, Map, Value};

use crate::commands::{finish, names_matching, resolve, Ctx};
use crate::generate::GenFlags;
use crate::patch::{report, split_ref, update_with};

#[derive(Subcommand, Debug)]
pub enum SetCommand {
    /// Change containers' images: `flt set image deploy/web web=nginx:2`
    /// (`*=IMAGE` for every container).
    Image(SetImageArgs),
    /// Set or remove environment variables: `flt set env deploy/web A=1 B-`,
    /// or list them (`--list`).
    Env(SetEnvArgs),
    /// Set containers' resource limits and requests:
    /// `flt set resources deploy/web --limits=cpu=200m,memory=512Mi`.
    Resources(SetResourcesArgs),
}

/// Which objects: by name, or every one of the kind matching `-l`, or `--all`.
#[derive(Args, Debug, Default)]
pub struct Select {
    /// Change every object of the kind that matches this label selector.
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Change every object of the kind in the namespace.
    #[arg(long)]
    pub all: bool,
}

#[derive(Args, Debug)]
pub struct SetImageArgs {
    /// KIND/NAME (or KIND NAME), then CONTAINER=IMAGE ...
    #[arg(required = true, num_args = 2.., value_name = "KIND/NAME CONTAINER=IMAGE")]
    pub args: Vec<String>,
    #[command(flatten)]
    pub select: Select,
    #[command(flatten)]
    pub flags: GenFlags,
}

#[derive(Args, Debug)]
pub struct SetEnvArgs {
    /// KIND/NAME (or KIND NAME), then KEY=VALUE to set and KEY- to remove.
    #[arg(required = true, value_name = "KIND/NAME KEY=VALUE|KEY-")]
    pub args: Vec<String>,
    /// KEY=VALUE to set (repeatable), as well as those given as arguments.
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// The containers to change (a glob: `web`, `side*`, `*`).
    #[arg(short = 'c', long = "containers", default_value = "*")]
    pub containers: String,
    /// Print the environment instead of changing it.
    #[arg(long)]
    pub list: bool,
    #[command(flatten)]
    pub select: Select,
    #[command(flatten)]
    pub flags: GenFlags,
}

#[derive(Args, Debug)]
pub struct SetResourcesArgs {
    /// KIND/NAME, or KIND NAME (KIND alone with -l or --all).
    #[arg(required = true, num_args = 1..=2, value_name = "KIND/NAME")]
    pub args: Vec<String>,
    /// The containers to change (a glob: `web`, `side*`, `*`).
    #[arg(short = 'c', long = "containers", default_value = "*")]
    pub containers: String,
    /// Limits: `cpu=200m,memory=512Mi`.
    #[arg(long)]
    pub limits: Option<String>,
    /// Requests: `cpu=100m,memory=256Mi`.
    #[arg(long)]
    pub requests: Option<String>,
    #[command(flatten)]
    pub select: Select,
    #[command(flatten)]
    pub flags: GenFlags,
}

/// Where a kind keeps its pod spec (None: it has none).
fn pod_spec_pointer(kind: &str) -> Option<&'static str> {
    match kind {
        "Pod" => Some("/spec"),
        "CronJob" => Some("/spec/jobTemplate/spec/template/spec"),
        "Deployment"
        | "ReplicaSet"
        | "ReplicationController"
        | "DaemonSet"
        | "StatefulSet"
        | "Job" => Some("/spec/template/spec"),
        _ => None,
    }
}

/// The targets and the rest of the arguments: `deploy/web A=1`,
/// `deploy web A=1`, or `deploy A=1` with `-l` or `--all`.
async fn targets<'a>(
    ctx: &Ctx,
    args: &'a [String],
    select: &Select,
) -> Result<(&'static ResourceInfo, Vec<String>, &'a [String])> {
    let Some(first) = args.first() else {
        bail!("you must specify the type of resource and its name");
    };
    let many = select.all || select.selector.is_some();
    let (kind, names, rest) = if many {
        if first.contains('/') {
            bail!("names cannot be given together with a selector or --all");
        }
        (first.clone(), Vec::new(), &args[1..])
    } else if first.contains('/') {
        let (k, n) = split_ref(first, None)?;
        (k, vec![n], &args[1..])
    } else {
        match args.get(1) {
            Some(n) if !n.contains('=') => (first.clone(), vec![n.clone()], &args[2..]),
            _ => bail!("resource(s) were provided, but no name was specified"),
        }
    };
    let info = resolve(&kind)?;
    if pod_spec_pointer(info.kind).is_none() {
        bail!("{} have no pod template to change", info.plural);
    }
    if !many {
        return Ok((info, names, rest));
    }
    let names = names_matching(ctx, info, select.selector.as_deref()).await?;
    if names.is_empty() {
        bail!("no {} found in namespace {}", info.plural, ctx.ns(info));
    }
    Ok((info, names, rest))
}

/// Make the change to each target, reporting each; fail at the end if any failed.
async fn each(
    ctx: &Ctx,
    info: &ResourceInfo,
    names: &[String],
    flags: &GenFlags,
    verb: &str,
    change: impl Fn(&Value) -> Result<Value>,
) -> Result<()> {
    let mut errors = Vec::new();
    for name in names {
        match update_with(ctx, info, name, flags.dry_run, &change).await {
            Ok(out) => report(info, name, &out, flags, verb),
            Err(e) => errors.push(e),
        }
    }
    finish(errors)
}

/// kubectl's glob for container names: `*` matches any run of characters.
fn glob(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let mut rest = name;
    for (i, p) in parts.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(p) else {
                return false;
            };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.ends_with(p);
        } else {
            match rest.find(p) {
                Some(at) => rest = &rest[at + p.len()..],
                None => return false,
            }
        }
    }
    true
}

/// Each container (and init container) of the object's pod spec.
fn containers_mut<'a>(kind: &str, obj: &'a mut Value) -> Vec<&'a mut Map<String, Value>> {
    let Some(spec) = pod_spec_pointer(kind).and_then(|p| obj.pointer_mut(p)) else {
        return Vec::new();
    };
    let Some(spec) = spec.as_object_mut() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (k, v) in spec.iter_mut() {
        if k == "initContainers" || k == "containers" {
            if let Some(list) = v.as_array_mut() {
                out.extend(list.iter_mut().filter_map(Value::as_object_mut));
            }
        }
    }
    out
}

/// The containers whose names match `pattern`; none is an error.
fn matching<'a>(
    kind: &str,
    obj: &'a mut Value,
    pattern: &str,
) -> Result<Vec<&'a mut Map<String, Value>>> {
    let cs: Vec<_> = containers_mut(kind, obj)
        .into_iter()
        .filter(|c| glob(pattern, cname(c)))
        .collect();
    if cs.is_empty() {
        bail!("no containers match {pattern:?}");
    }
    Ok(cs)
}

fn cname(c: &Map<String, Value>) -> &str {
    c.get("name").and_then(Value::as_str).unwrap_or("")
}

/// Set images: `NAME=IMAGE`, `*=IMAGE`.
pub fn set_images(kind: &str, obj: &Value, pairs: &[(String, String)]) -> Result<Value> {
    let mut out = obj.clone();
    let mut cs = containers_mut(kind, &mut out);
    for (name, image) in pairs {
        let mut found = false;
        for c in cs.iter_mut() {
            if name == "*" || cname(c) == name {
                c.insert("image".into(), Value::from(image.clone()));
                found = true;
            }
        }
        if !found {
            bail!("unable to find container named \"{name}\"");
        }
    }
    Ok(out)
}

/// An environment change.
#[derive(Debug, Clone, PartialEq)]
pub enum EnvChange {
    Set(String, String),
    Remove(String),
}

pub fn parse_env(arg: &str) -> Result<EnvChange> {
    if let Some((k, v)) = arg.split_once('=') {
        if k.is_empty() {
            bail!("invalid environment variable {arg:?}: the name is empty");
        }
        return Ok(EnvChange::Set(k.to_string(), v.to_string()));
    }
    match arg.strip_suffix('-') {
        Some(k) if !k.is_empty() => Ok(EnvChange::Remove(k.to_string())),
        _ => bail!("invalid environment variable {arg:?}: use KEY=VALUE or KEY-"),
    }
}

pub fn set_env(kind: &str, obj: &Value, pattern: &str, changes: &[EnvChange]) -> Result<Value> {
    let mut out = obj.clone();
    let mut cs = matching(kind, &mut out, pattern)?;
    for c in cs.iter_mut() {
        let env = c.entry("env").or_insert_with(|| json!([]));
        if !env.is_array() {
            *env = json!([]);
        }
        let Some(list) = env.as_array_mut() else {
            continue;
        };
        for ch in changes {
            match ch {
                EnvChange::Set(k, v) => {
                    let e = json!({"name": k, "value": v});
                    match list.iter_mut().find(|x| x["name"] == k.as_str()) {
                        Some(x) => *x = e,
                        None => list.push(e),
                    }
                }
                EnvChange::Remove(k) => list.retain(|x| x["name"] != k.as_str()),
            }
        }
        if list.is_empty() {
            c.remove("env");
        }
    }
    Ok(out)
}

/// `# Deployment web, container web` and each variable, as `--list` prints.
fn list_env(kind: &str, name: &str, obj: &Value, pattern: &str) -> String {
    let mut obj = obj.clone();
    let mut out = String::new();
    for c in containers_mut(kind, &mut obj) {
        if !glob(pattern, cname(c)) {
            continue;
        }
        out.push_str(&format!("# {kind} {name}, container {}\n", cname(c)));
        for e in c.get("env").and_then(Value::as_array).into_iter().flatten() {
            let k = e["name"].as_str().unwrap_or("");
            match (e.get("value"), e.get("valueFrom")) {
                (_, Some(from)) => {
                    let source = from
                        .as_object()
                        .and_then(|m| m.keys().next().cloned())
                        .unwrap_or_default();
                    out.push_str(&format!("# {k} from {source}\n"));
                }
                (Some(v), None) => out.push_str(&format!("{k}={}\n", crate::jsonpath::scalar(v))),
                (None, None) => out.push_str(&format!("{k}=\n")),
            }
        }
    }
    out
}

/// `cpu=200m,memory=512Mi`
pub fn parse_resources(s: &str, what: &str) -> Result<Map<String, Value>> {
    let mut m = Map::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let Some((k, v)) = part.split_once('=') else {
            bail!("invalid --{what} {part:?}: use NAME=QUANTITY, e.g. cpu=200m,memory=512Mi");
        };
        if k.is_empty() || flotilla_objects::parse_quantity(v).is_none() {
            bail!("invalid --{what} {part:?}: {v:?} is not a quantity");
        }
        m.insert(k.to_string(), Value::from(v));
    }
    Ok(m)
}

pub fn set_resources(
    kind: &str,
    obj: &Value,
    pattern: &str,
    limits: &Map<String, Value>,
    requests: &Map<String, Value>,
) -> Result<Value> {
    let mut out = obj.clone();
    let mut cs = matching(kind, &mut out, pattern)?;
    for c in cs.iter_mut() {
        let r = c.entry("resources").or_insert_with(|| json!({}));
        for (field, values) in [("limits", limits), ("requests", requests)] {
            if values.is_empty() {
                continue;
            }
            let m = &mut r[field];
            if !m.is_object() {
                *m = json!({});
            }
            if let Some(m) = m.as_object_mut() {
                m.extend(values.clone());
            }
        }
    }
    Ok(out)
}

pub async fn run(ctx: &Ctx, cmd: SetCommand) -> Result<()> {
    match cmd {
        SetCommand::Image(a) => {
            let (info, names, rest) = targets(ctx, &a.args, &a.select).await?;
            if rest.is_empty() {
                bail!("at least one image update is required (CONTAINER=IMAGE)");
            }
            let pairs = rest
                .iter()
                .map(|p| match p.split_once('=') {
                    Some((c, i)) if !c.is_empty() && !i.is_empty() => {
                        Ok((c.to_string(), i.to_string()))
                    }
                    _ => Err(anyhow!("invalid image update {p:?}: use CONTAINER=IMAGE")),
                })
                .collect::<Result<Vec<_>>>()?;
            each(ctx, info, &names, &a.flags, "image updated", |cur| {
                set_images(info.kind, cur, &pairs)
            })
            .await
        }
        SetCommand::Env(a) => {
            let (info, names, rest) = targets(ctx, &a.args, &a.select).await?;
            if a.list {
                for name in &names {
                    let obj = ctx
                        .client
                        .get(info.plural, ctx.ns(info), name)
                        .await
                        .map_err(|e| anyhow!(e.message))?;
                    print!("{}", list_env(info.kind, name, &obj, &a.containers));
                }
                return Ok(());
            }
            let changes = rest
                .iter()
                .chain(&a.env)
                .map(|s| parse_env(s))
                .collect::<Result<Vec<_>>>()?;
            if changes.is_empty() {
                bail!("at least one environment variable must be provided");
            }
            each(ctx, info, &names, &a.flags, "env updated", |cur| {
                set_env(info.kind, cur, &a.containers, &changes)
            })
            .await
        }
        SetCommand::Resources(a) => {
            let (info, names, rest) = targets(ctx, &a.args, &a.select).await?;
            if !rest.is_empty() {
                bail!("unexpected arguments {rest:?}: use --limits and --requests");
            }
            let limits = parse_resources(a.limits.as_deref().unwrap_or(""), "limits")?;
            let requests = parse_resources(a.requests.as_deref().unwrap_or(""), "requests")?;
            if limits.is_empty() && requests.is_empty() {
                bail!("you must specify an update to requests or limits (in the form of --requests/--limits)");
            }
            each(
                ctx,
                info,
                &names,
                &a.flags,
                "resource requirements updated",
                |cur| set_resources(info.kind, cur, &a.containers, &limits, &requests),
            )
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy() -> Value {
        json!({"spec": {"template": {"spec": {
            "initContainers": [{"name": "init", "image": "busybox"}],
            "containers": [{"name": "web", "image": "nginx:1", "env": [{"name": "A", "value": "1"}]},
                           {"name": "side", "image": "envoy"}]}}}})
    }

    #[test]
    fn images_by_name_and_star() {
        let pairs = vec![("web".to_string(), "nginx:2".to_string())];
        let out = set_images("Deployment", &deploy(), &pairs).unwrap();
        let spec = &out["spec"]["template"]["spec"];
        assert_eq!(spec["containers"][0]["image"], "nginx:2");
        assert_eq!(spec["containers"][1]["image"], "envoy");
        let out = set_images("Deployment", &deploy(), &[("*".into(), "x".into())]).unwrap();
        assert_eq!(
            out["spec"]["template"]["spec"]["initContainers"][0]["image"],
            "x"
        );
        let e = set_images("Deployment", &deploy(), &[("nope".into(), "x".into())]).unwrap_err();
        assert_eq!(e.to_string(), "unable to find container named \"nope\"");
        let pod = json!({"spec": {"containers": [{"name": "c", "image": "a"}]}});
        let out = set_images("Pod", &pod, &[("c".into(), "b".into())]).unwrap();
        assert_eq!(out["spec"]["containers"][0]["image"], "b");
        let cj = json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "c"}]}}}}}});
        let out = set_images("CronJob", &cj, &[("c".into(), "b".into())]).unwrap();
        assert_eq!(
            out.pointer("/spec/jobTemplate/spec/template/spec/containers/0/image"),
            Some(&json!("b"))
        );
    }

    #[test]
    fn env_set_replace_remove_and_list() {
        let ch = vec![
            parse_env("A=2").unwrap(),
            parse_env("B=x=y").unwrap(),
            parse_env("C-").unwrap(),
        ];
        assert_eq!(ch[1], EnvChange::Set("B".into(), "x=y".into()));
        let out = set_env("Deployment", &deploy(), "w*", &ch).unwrap();
        let cs = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(
            cs[0]["env"],
            json!([{"name": "A", "value": "2"}, {"name": "B", "value": "x=y"}])
        );
        assert!(cs[1].get("env").is_none());
        let out = set_env(
            "Deployment",
            &out,
            "web",
            &[parse_env("A-").unwrap(), parse_env("B-").unwrap()],
        )
        .unwrap();
        assert!(out["spec"]["template"]["spec"]["containers"][0]
            .get("env")
            .is_none());
        assert!(parse_env("=1").is_err());
        assert!(parse_env("A").is_err());
        assert!(set_env("Deployment", &deploy(), "zz", &ch).is_err());
        assert_eq!(
            list_env("Deployment", "web", &deploy(), "web"),
            "# Deployment web, container web\nA=1\n"
        );
    }

    #[test]
    fn resources_and_globs() {
        let l = parse_resources("cpu=200m,memory=512Mi", "limits").unwrap();
        let r = parse_resources("cpu=100m", "requests").unwrap();
        let out = set_resources("Deployment", &deploy(), "side", &l, &r).unwrap();
        let c = &out["spec"]["template"]["spec"]["containers"][1];
        assert_eq!(
            c["resources"],
            json!({"limits": {"cpu": "200m", "memory": "512Mi"}, "requests": {"cpu": "100m"}})
        );
        assert!(out["spec"]["template"]["spec"]["containers"][0]
            .get("resources")
            .is_none());
        let e = parse_resources("cpu=lots", "limits").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid --limits \"cpu=lots\": \"lots\" is not a quantity"
        );
        assert!(parse_resources("cpu", "limits").is_err());
        assert!(glob("*", "x") && glob("we*", "web") && glob("*b", "web") && glob("w*b", "web"));
        assert!(!glob("we", "web") && !glob("x*", "web") && !glob("w*x", "web"));
    }
}
