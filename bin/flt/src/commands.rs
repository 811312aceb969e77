//! The object commands: apply, create, replace, get, describe, delete, edit,
//! label, annotate, scale, version, api-resources and completion.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use chrono::Utc;
use flotilla_client::{
    ApiError, Client, ClientOptions, DeleteParams, ListParams, Propagation, Reason,
};
use flotilla_objects::patch::{diff, merge_patch};
use flotilla_objects::registry::{self, ResourceInfo, RESOURCES};
use serde_json::{json, Value};

use crate::manifest::{self, Doc};
use crate::print;
use crate::{Cascade, Command, DeleteArgs, EditFormat, FileArgs, MetaArgs};

/// What every object command needs.
pub struct Ctx {
    pub client: Client,
    pub namespace: String,
    /// Whether -n was given (then a manifest's own namespace must agree).
    pub namespace_explicit: bool,
}

impl Ctx {
    pub fn new(
        servers: &[String],
        namespace: String,
        namespace_explicit: bool,
        dial: Duration,
        timeout: Duration,
    ) -> Result<Ctx> {
        let access = crate::access::get();
        let opts = ClientOptions {
            connect_timeout: dial,
            request_timeout: timeout,
            retry_for: timeout.min(Duration::from_secs(10)),
            tls: access.tls,
            credentials: access.credentials,
        };
        let client = Client::connect_with(servers, opts).map_err(|e| anyhow!(e.message))?;
        Ok(Ctx {
            client,
            namespace,
            namespace_explicit,
        })
    }

    /// The namespace a manifest's object goes to: its own, unless -n says
    /// otherwise (an error, as with kubectl).
    pub(crate) fn doc_ns(&self, info: &ResourceInfo, d: &Doc) -> Result<String> {
        if !info.namespaced {
            return Ok(String::new());
        }
        let own = ns_of(&d.object);
        if own.is_empty() {
            return Ok(self.namespace.clone());
        }
        if self.namespace_explicit && own != self.namespace {
            bail!(
                "the namespace from the provided object \"{own}\" does not match the namespace \"{}\". You must pass '--namespace={own}' to perform this operation.",
                self.namespace
            );
        }
        Ok(own.to_string())
    }

    /// The namespace a request for `info` goes to ("" when cluster-scoped).
    pub(crate) fn ns(&self, info: &ResourceInfo) -> &str {
        if info.namespaced {
            &self.namespace
        } else {
            ""
        }
    }
}

/// An API error as one line (the message is Kubernetes' own).
pub(crate) fn api(e: ApiError) -> anyhow::Error {
    anyhow!(e.message)
}

/// `deployment.apps/web`
fn ref_name(info: &ResourceInfo, name: &str) -> String {
    format!("{}/{name}", singular_qualified(info))
}

/// `deployment.apps`, `pod`
pub(crate) fn singular_qualified(info: &ResourceInfo) -> String {
    if info.group.is_empty() {
        info.singular.to_string()
    } else {
        format!("{}.{}", info.singular, info.group)
    }
}

pub(crate) fn resolve(kind: &str) -> Result<&'static ResourceInfo> {
    registry::lookup(kind)
        .ok_or_else(|| anyhow!("the server doesn't have a resource type \"{kind}\""))
}

/// The names of the objects of `info` in the namespace that match a label
/// selector (all of them without one).
pub(crate) async fn names_matching(
    ctx: &Ctx,
    info: &ResourceInfo,
    selector: Option<&str>,
) -> Result<Vec<String>> {
    let p = ListParams {
        label_selector: selector.unwrap_or_default().to_string(),
        ..Default::default()
    };
    let l = ctx
        .client
        .list_all(info.plural, ctx.ns(info), &p)
        .await
        .map_err(api)?;
    Ok(l.items.iter().map(|o| name_of(o).to_string()).collect())
}

pub(crate) fn name_of(v: &Value) -> &str {
    v.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn ns_of(v: &Value) -> &str {
    v.pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("")
}

pub(crate) fn info_of(d: &Doc) -> Result<&'static ResourceInfo> {
    let av = d
        .object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let kind = d.object.get("kind").and_then(Value::as_str).unwrap_or("");
    if kind.is_empty() {
        bail!("error validating {}: kind not set", d.source);
    }
    registry::by_kind(av, kind).ok_or_else(|| {
        anyhow!(
            "resource mapping not found for name: \"{}\" namespace: \"{}\" from \"{}\": no matches for kind \"{kind}\" in version \"{av}\"",
            name_of(&d.object),
            ns_of(&d.object),
            d.source
        )
    })
}

fn warn(ws: &[String]) {
    for w in ws {
        eprintln!("Warning: {w}");
    }
}

/// Report every error but the last, return the last (printed by main).
pub(crate) fn finish(mut errors: Vec<anyhow::Error>) -> Result<()> {
    let last = errors.pop();
    for e in errors {
        eprintln!("Error: {}", crate::cluster::one_line(&e));
    }
    match last {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

pub async fn run(ctx: &Ctx, cmd: Command) -> Result<()> {
    match cmd {
        Command::Apply(a) => write_docs(ctx, a, Verb::Apply).await,
        Command::Auth(a) => crate::auth::run(ctx, a).await,
        Command::Certificate(c) => crate::credentials::certificate(ctx, c).await,
        Command::Create(a) => match a.what {
            None => write_docs(ctx, a.files, Verb::Create).await,
            Some(crate::generate::CreateCmd::Token(t)) => {
                crate::credentials::create_token(ctx, t).await
            }
            Some(crate::generate::CreateCmd::BootstrapToken(t)) => {
                crate::credentials::create_bootstrap_token(ctx, t).await
            }
            Some(cmd) => {
                let (obj, flags, from) = crate::generate::create_manifest(&ctx.namespace, cmd)?;
                let obj = match from {
                    Some(f) => {
                        crate::generate::job_from(ctx, crate::commands::name_of(&obj), &f).await?
                    }
                    None => obj,
                };
                crate::generate::emit(ctx, obj, &flags).await
            }
        },
        Command::Run(a) => {
            if a.rm && !a.stdin {
                bail!("--rm should only be used for attached containers (with -i)");
            }
            let obj = crate::generate::run_manifest(&ctx.namespace, &a)?;
            crate::generate::emit(ctx, obj, &a.flags).await
        }
        Command::Expose(a) => expose(ctx, a).await,
        Command::Wait(a) => crate::wait::wait(ctx, a).await,
        Command::Diff(a) => crate::diff::diff(ctx, a).await,
        Command::Replace(a) => write_docs(ctx, a, Verb::Replace).await,
        Command::Get(a) => crate::get::get(ctx, a).await,
        Command::Describe { kind, names } => describe(ctx, &kind, &names).await,
        Command::Delete(a) => delete(ctx, a).await,
        Command::Edit { kind, name, output } => edit(ctx, &kind, &name, output).await,
        Command::Set(c) => crate::set::run(ctx, c).await,
        Command::Patch(a) => crate::patch::patch(ctx, a).await,
        Command::Label(a) => meta_change(ctx, a, "labels", "labeled").await,
        Command::Annotate(a) => meta_change(ctx, a, "annotations", "annotated").await,
        Command::Scale {
            kind,
            name,
            replicas,
            current_replicas,
        } => scale(ctx, &kind, name.as_deref(), replicas, current_replicas).await,
        Command::Rollout(c) => crate::rollout::run(ctx, c).await,
        Command::Version => {
            println!("flt {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Cordon { node } => crate::nodes::cordon(ctx, &node, true).await,
        Command::Uncordon { node } => crate::nodes::cordon(ctx, &node, false).await,
        Command::Drain(a) => crate::nodes::drain(ctx, a).await,
        Command::ApiResources
        | Command::Complete(_)
        | Command::Explain(_)
        | Command::Config(_)
        | Command::Completion { .. }
        | Command::Cluster(_)
        | Command::Logs(_)
        | Command::Exec(_)
        | Command::Cp(_)
        | Command::PortForward(_)
        | Command::Attach(_)
        | Command::Top(_) => Ok(()),
    }
}

async fn expose(ctx: &Ctx, a: crate::generate::ExposeArgs) -> Result<()> {
    let (kind, name) = match (a.kind.split_once('/'), &a.name) {
        (Some((k, n)), None) => (k.to_string(), n.to_string()),
        (None, Some(n)) => (a.kind.clone(), n.clone()),
        _ => bail!("expose takes KIND/NAME or KIND NAME"),
    };
    let info = resolve(&kind)?;
    if ![
        "Deployment",
        "ReplicaSet",
        "ReplicationController",
        "Pod",
        "Service",
    ]
    .contains(&info.kind)
    {
        bail!("cannot expose a {}", info.kind);
    }
    let obj = ctx
        .client
        .get(info.plural, ctx.ns(info), &name)
        .await
        .map_err(api)?;
    let svc = crate::generate::expose_manifest(&ctx.namespace, info.kind, &obj, &a)?;
    crate::generate::emit(ctx, svc, &a.flags).await
}

// ---- apply / create / replace ----

#[derive(Clone, Copy)]
enum Verb {
    Apply,
    Create,
    Replace,
}

/// Send every object of the manifests; report each; fail at the end if any failed.
async fn write_docs(ctx: &Ctx, a: FileArgs, verb: Verb) -> Result<()> {
    let docs = manifest::read(&a.src.files, a.src.recursive)?;
    let mut errors = Vec::new();
    for d in &docs {
        let (info, ns) = match info_of(d).and_then(|i| Ok((i, ctx.doc_ns(i, d)?))) {
            Ok(x) => x,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let c = &ctx.client;
        let res = match verb {
            Verb::Apply => c
                .apply(&ns, &d.object, a.dry_run)
                .await
                .map(|r| (r.object, r.action, r.warnings)),
            Verb::Create => c
                .create(info.plural, &ns, &d.object, a.dry_run)
                .await
                .map(|(v, w)| (v, "created".to_string(), w)),
            Verb::Replace => c
                .update(info.plural, &ns, &d.object)
                .await
                .map(|(v, w)| (v, "replaced".to_string(), w)),
        };
        match res {
            Ok((v, action, w)) => {
                warn(&w);
                let dry = if a.dry_run { " (server dry run)" } else { "" };
                println!("{} {action}{dry}", ref_name(info, name_of(&v)));
            }
            Err(e) => errors.push(api(e)),
        }
    }
    finish(errors)
}

// ---- describe ----

async fn describe(ctx: &Ctx, kind: &str, names: &[String]) -> Result<()> {
    let info = resolve(kind)?;
    let mut errors = Vec::new();
    let mut first = true;
    for n in names {
        let obj = match ctx.client.get(info.plural, ctx.ns(info), n).await {
            Ok(v) => v,
            Err(e) => {
                errors.push(api(e));
                continue;
            }
        };
        let ev_ns = if info.namespaced {
            ctx.namespace.as_str()
        } else {
            "default"
        };
        let p = ListParams {
            field_selector: format!("involvedObject.name={n},involvedObject.kind={}", info.kind),
            ..Default::default()
        };
        let mut events = match ctx.client.list(registry::EVENT.plural, ev_ns, &p).await {
            Ok(l) => l.items,
            Err(_) => vec![],
        };
        let uid = obj
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or("");
        events.retain(|e| {
            let u = e
                .pointer("/involvedObject/uid")
                .and_then(Value::as_str)
                .unwrap_or("");
            u.is_empty() || u == uid
        });
        events.sort_by(|a, b| {
            let t = |v: &Value| {
                v.get("lastTimestamp")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            t(a).cmp(&t(b))
        });
        if !first {
            println!();
        }
        first = false;
        let text = print::describe(info.kind, &obj, &events, Utc::now());
        if text.ends_with('\n') {
            print!("{text}");
        } else {
            println!("{text}");
        }
    }
    finish(errors)
}

// ---- delete ----

async fn delete(ctx: &Ctx, a: DeleteArgs) -> Result<()> {
    let mut targets: Vec<(&'static ResourceInfo, String, String)> = Vec::new();
    if !a.files.is_empty() {
        if a.kind.is_some() {
            bail!("when -f is given, no kind or names may be given");
        }
        for d in manifest::read(&a.files, false)? {
            let info = info_of(&d)?;
            let ns = ctx.doc_ns(info, &d)?;
            targets.push((info, ns, name_of(&d.object).to_string()));
        }
    } else {
        let Some(kind) = &a.kind else {
            bail!("you must provide one or more resources by kind and name, -l, --all or -f");
        };
        let (kind, mut names) = match kind.split_once('/') {
            Some((k, n)) => (k.to_string(), vec![n.to_string()]),
            None => (kind.clone(), vec![]),
        };
        names.extend(a.names.iter().cloned());
        let info = resolve(&kind)?;
        let ns = ctx.ns(info).to_string();
        if a.selector.is_some() || a.all {
            if !names.is_empty() {
                bail!("names cannot be given together with a selector or --all");
            }
            let p = ListParams {
                label_selector: a.selector.clone().unwrap_or_default(),
                ..Default::default()
            };
            let l = ctx
                .client
                .list_all(info.plural, &ns, &p)
                .await
                .map_err(api)?;
            if l.items.is_empty() {
                eprintln!("No resources found");
            }
            for it in l.items {
                targets.push((info, ns.clone(), name_of(&it).to_string()));
            }
        } else {
            if names.is_empty() {
                bail!("resource(s) were provided, but no name was specified");
            }
            for n in names {
                targets.push((info, ns.clone(), n));
            }
        }
    }
    let propagation = match a.cascade {
        Cascade::Background => Propagation::Background,
        Cascade::Foreground => Propagation::Foreground,
        Cascade::Orphan => Propagation::Orphan,
    };
    let grace = if a.now { Some(0) } else { a.grace_period };
    let mut errors = Vec::new();
    let mut waiting = Vec::new();
    for (info, ns, name) in targets {
        let p = DeleteParams {
            grace_period_seconds: grace,
            propagation: Some(propagation),
            ..Default::default()
        };
        match ctx.client.delete(info.plural, &ns, &name, &p).await {
            Ok((obj, gone)) => {
                println!("{} \"{name}\" deleted", singular_qualified(info));
                if !gone && a.wait {
                    let uid = obj
                        .pointer("/metadata/uid")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string();
                    waiting.push((info, ns, name, uid));
                }
            }
            Err(e) if e.is(Reason::NotFound) && a.ignore_not_found => {}
            Err(e) => errors.push(api(e)),
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(a.timeout);
    for (info, ns, name, uid) in waiting {
        loop {
            match ctx.client.get(info.plural, &ns, &name).await {
                Err(e) if e.is(Reason::NotFound) => break,
                Ok(v)
                    if v.pointer("/metadata/uid").and_then(Value::as_str) != Some(uid.as_str()) =>
                {
                    break
                }
                Ok(_) => {}
                Err(e) => {
                    errors.push(api(e));
                    break;
                }
            }
            if tokio::time::Instant::now() >= deadline {
                errors.push(anyhow!(
                    "timed out waiting for {} \"{name}\" to be deleted (it waits for its finalizers or grace period)",
                    singular_qualified(info)
                ));
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    finish(errors)
}

// ---- edit ----

fn editor() -> String {
    for v in ["FLT_EDITOR", "KUBE_EDITOR", "EDITOR"] {
        if let Ok(e) = std::env::var(v) {
            if !e.trim().is_empty() {
                return e;
            }
        }
    }
    "vi".to_string()
}

const EDIT_HEADER: &str =
    "# Please edit the object below. Lines beginning with a '#' will be ignored,\n\
# and an empty file will abort the edit. If an error occurs while saving this file will be\n\
# reopened with the relevant failures.\n#\n";

fn render(v: &Value, f: EditFormat) -> String {
    match f {
        EditFormat::Yaml => print::to_yaml(v),
        EditFormat::Json => print::to_json(v),
    }
}

async fn edit(ctx: &Ctx, kind: &str, name: &str, format: EditFormat) -> Result<()> {
    let info = resolve(kind)?;
    let ns = ctx.ns(info).to_string();
    let orig = ctx.client.get(info.plural, &ns, name).await.map_err(api)?;
    let ext = if format == EditFormat::Yaml {
        "yaml"
    } else {
        "json"
    };
    let path = std::env::temp_dir().join(format!("flt-edit-{}-{name}.{ext}", std::process::id()));
    let mut header = EDIT_HEADER.to_string();
    loop {
        std::fs::write(&path, format!("{header}{}", render(&orig, format)))
            .with_context(|| format!("writing {}", path.display()))?;
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{} \"$1\"", editor()))
            .arg("sh")
            .arg(&path)
            .status()
            .context("starting the editor")?;
        if !status.success() {
            bail!(
                "the editor exited with {status}; nothing was changed (your edits are in {})",
                path.display()
            );
        }
        let text = std::fs::read_to_string(&path)?;
        let body: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n");
        if body.trim().is_empty() {
            let _ = std::fs::remove_file(&path);
            println!("Edit cancelled, no changes made.");
            return Ok(());
        }
        let edited: Value = match manifest::parse(&body, &path.display().to_string()) {
            Ok(mut d) if d.len() == 1 => d.remove(0).object,
            Ok(_) => bail!(
                "the edited file must hold exactly one object (your edits are in {})",
                path.display()
            ),
            Err(e) => bail!("{e:#} (your edits are in {})", path.display()),
        };
        if edited == orig {
            let _ = std::fs::remove_file(&path);
            println!("Edit cancelled, no changes made.");
            return Ok(());
        }
        let patch = diff(&orig, &edited);
        let mut target = edited.clone();
        let mut attempts = 0;
        let res = loop {
            match ctx.client.update(info.plural, &ns, &target).await {
                Err(e) if e.is(Reason::Conflict) && attempts < 5 => {
                    // Someone else wrote meanwhile: put the user's changes on
                    // top of the latest version and try again.
                    attempts += 1;
                    let mut latest = ctx.client.get(info.plural, &ns, name).await.map_err(api)?;
                    let rv = latest.pointer("/metadata/resourceVersion").cloned();
                    let mut p = patch.clone();
                    if let Some(m) = p.get_mut("metadata").and_then(Value::as_object_mut) {
                        m.remove("resourceVersion");
                    }
                    merge_patch(&mut latest, &p);
                    if let (Some(rv), Some(m)) = (
                        rv,
                        latest.get_mut("metadata").and_then(Value::as_object_mut),
                    ) {
                        m.insert("resourceVersion".into(), rv);
                    }
                    target = latest;
                }
                other => break other,
            }
        };
        match res {
            Ok((_, w)) => {
                warn(&w);
                let _ = std::fs::remove_file(&path);
                println!("{} edited", ref_name(info, name));
                return Ok(());
            }
            Err(e)
                if e.is(Reason::Invalid) && std::io::IsTerminal::is_terminal(&std::io::stdin()) =>
            {
                header = format!("{EDIT_HEADER}# {}\n#\n", e.message);
            }
            Err(e) => bail!("{} (your edits are in {})", e.message, path.display()),
        }
    }
}

// ---- label / annotate / scale ----

async fn meta_change(ctx: &Ctx, a: MetaArgs, field: &str, verb: &str) -> Result<()> {
    let info = resolve(&a.kind)?;
    let ns = ctx.ns(info).to_string();
    let mut set: BTreeMap<String, Value> = BTreeMap::new();
    for c in &a.changes {
        if let Some(k) = c.strip_suffix('-') {
            if k.is_empty() || k.contains('=') {
                bail!("invalid {field} change {c:?}: use KEY=VALUE or KEY-");
            }
            set.insert(k.to_string(), Value::Null);
        } else if let Some((k, v)) = c.split_once('=') {
            if k.is_empty() {
                bail!("invalid {field} change {c:?}: the key is empty");
            }
            set.insert(k.to_string(), Value::String(v.to_string()));
        } else {
            bail!("invalid {field} change {c:?}: use KEY=VALUE or KEY-");
        }
    }
    // The --overwrite check and the write are one step: the patch is
    // conditional on the version checked, and a conflict (a controller
    // wrote the status meanwhile) checks again on the new version.
    let mut attempts = 0;
    loop {
        let cur = ctx
            .client
            .get(info.plural, &ns, &a.name)
            .await
            .map_err(api)?;
        let existing = cur
            .pointer(&format!("/metadata/{field}"))
            .cloned()
            .unwrap_or_else(|| json!({}));
        if !a.overwrite {
            for (k, v) in &set {
                if let (Some(old), Value::String(new)) =
                    (existing.get(k).and_then(Value::as_str), v)
                {
                    if old != new {
                        bail!("'{k}' already has a value ({old}), and --overwrite is false");
                    }
                }
            }
        }
        let rv = cur
            .pointer("/metadata/resourceVersion")
            .cloned()
            .unwrap_or(Value::Null);
        let patch = json!({"metadata": {field: set, "resourceVersion": rv}});
        match ctx
            .client
            .patch(info.plural, &ns, &a.name, &patch, false)
            .await
        {
            Ok(_) => break,
            Err(e) if e.is(Reason::Conflict) && attempts < 10 => attempts += 1,
            Err(e) => return Err(api(e)),
        }
    }
    println!("{} {verb}", ref_name(info, &a.name));
    Ok(())
}

async fn scale(
    ctx: &Ctx,
    kind: &str,
    name: Option<&str>,
    replicas: i64,
    current: Option<i64>,
) -> Result<()> {
    let (kind, name) = match (kind.split_once('/'), name) {
        (Some((k, n)), None) => (k, n),
        (None, Some(n)) => (kind, n),
        (Some(_), Some(_)) => bail!("there is no need to specify a resource type as a separate argument when passing arguments in resource/name form"),
        (None, None) => bail!("resource(s) were provided, but no name was specified"),
    };
    let info = resolve(kind)?;
    // A Job scales through its parallelism, as with kubectl.
    let field = match info.kind {
        "Deployment" | "ReplicaSet" | "ReplicationController" => "replicas",
        "Job" => "parallelism",
        _ => bail!("cannot scale {}: only deployments, replicasets, replicationcontrollers and jobs can be scaled", info.plural),
    };
    if replicas < 0 {
        bail!(
            "The --replicas=COUNT flag is required, and COUNT must be greater than or equal to 0"
        );
    }
    let ns = ctx.ns(info).to_string();
    let mut patch = json!({"spec": {field: replicas}});
    if let Some(want) = current {
        let cur = ctx.client.get(info.plural, &ns, name).await.map_err(api)?;
        let have = cur
            .pointer(&format!("/spec/{field}"))
            .and_then(Value::as_i64)
            .unwrap_or(1);
        if have != want {
            bail!("Expected replicas to be {want}, was {have}");
        }
        patch["metadata"] = json!({"resourceVersion": cur.pointer("/metadata/resourceVersion")});
    }
    ctx.client
        .patch(info.plural, &ns, name, &patch, false)
        .await
        .map_err(api)?;
    println!("{} scaled", ref_name(info, name));
    Ok(())
}

// ---- local commands ----

pub fn api_resources() {
    let mut rows = vec![vec![
        "NAME".to_string(),
        "SHORTNAMES".to_string(),
        "APIVERSION".to_string(),
        "NAMESPACED".to_string(),
        "KIND".to_string(),
    ]];
    for r in RESOURCES {
        rows.push(vec![
            r.plural.to_string(),
            r.short_names.join(","),
            r.api_version(),
            r.namespaced.to_string(),
            r.kind.to_string(),
        ]);
    }
    print!("{}", print::align(&rows));
}
