//! Objects made from flags, as kubectl's generators make them:
//! `flt create namespace|deployment|job|cronjob|configmap|secret|service|
//! serviceaccount|priorityclass`, `flt run` and `flt expose` (`flt create
//! token|bootstrap-token` print credentials: `crate::credentials`). Each builds a manifest;
//! `--dry-run=client -o yaml` prints it, otherwise it is created (with
//! `--dry-run=server`, checked by the server and not saved).

use anyhow::{anyhow, bail, Result};
use clap::{Args, Subcommand, ValueEnum};
use flotilla_objects::registry;
use serde_json::{json, Map, Value};

mod data;

use data::{b64, entries, secret};
pub use data::{DataFlags, SecretCmd};

use crate::commands::Ctx;
use crate::print;

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum, Default)]
pub enum DryRun {
    /// Create the object.
    #[default]
    None,
    /// Only print the object (with -o).
    Client,
    /// Have the server check it without saving it.
    Server,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum GenOutput {
    Yaml,
    Json,
    Name,
}

/// What every generator takes.
#[derive(Args, Debug, Clone, Default)]
pub struct GenFlags {
    /// client: print the object without sending it; server: have the
    /// server check it without saving it.
    #[arg(long, value_enum, default_value_t = DryRun::None, default_missing_value = "client", num_args = 0..=1, require_equals = true)]
    pub dry_run: DryRun,
    /// Print the object made (yaml, json) or its name.
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<GenOutput>,
}

#[derive(Subcommand, Debug)]
pub enum CreateCmd {
    /// A namespace: `flt create namespace dev`.
    #[command(visible_alias = "ns")]
    Namespace {
        name: String,
        #[command(flatten)]
        flags: GenFlags,
    },
    /// A deployment: `flt create deployment web --image=nginx --replicas=3 --port=80`.
    #[command(visible_alias = "deploy")]
    Deployment {
        name: String,
        /// Image(s), one container each.
        #[arg(long, required = true)]
        image: Vec<String>,
        #[arg(short = 'r', long, default_value_t = 1)]
        replicas: i64,
        /// Port the container exposes.
        #[arg(long)]
        port: Option<i32>,
        #[command(flatten)]
        flags: GenFlags,
        /// Command to run (after --).
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// A job: `flt create job pi --image=perl -- perl -e 'print 1'`, or
    /// from a cronjob's template: `flt create job now --from=cronjob/nightly`.
    Job {
        name: String,
        #[arg(long, required_unless_present = "from")]
        image: Option<String>,
        /// cronjob/NAME to take the template from.
        #[arg(long, value_name = "cronjob/NAME")]
        from: Option<String>,
        #[command(flatten)]
        flags: GenFlags,
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// A cronjob: `flt create cronjob nightly --image=busybox --schedule='0 3 * * *' -- date`.
    #[command(visible_alias = "cj")]
    Cronjob {
        name: String,
        #[arg(long, required = true)]
        image: String,
        #[arg(long, required = true)]
        schedule: String,
        /// OnFailure or Never.
        #[arg(long, default_value = "OnFailure")]
        restart: String,
        #[command(flatten)]
        flags: GenFlags,
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// A config map from literals, files and env files.
    #[command(visible_alias = "cm")]
    Configmap {
        name: String,
        #[command(flatten)]
        data: DataFlags,
        #[command(flatten)]
        flags: GenFlags,
    },
    /// A secret: generic, tls or docker-registry.
    #[command(subcommand)]
    Secret(SecretCmd),
    /// A service: clusterip, nodeport, loadbalancer or externalname.
    #[command(subcommand, visible_alias = "svc")]
    Service(ServiceCmd),
    /// A service account: `flt create serviceaccount reader`.
    #[command(visible_alias = "sa")]
    Serviceaccount {
        name: String,
        #[command(flatten)]
        flags: GenFlags,
    },
    /// A token of a service account, printed: `flt create token reader
    /// --duration 10m` (programs present it with --token).
    Token(crate::credentials::TokenArgs),
    /// A bootstrap token for joining nodes (`flotilla agent
    /// --bootstrap-token-file`), printed: `flt create bootstrap-token --ttl 2h`.
    BootstrapToken(crate::credentials::BootstrapTokenArgs),
    /// A priority class: `flt create priorityclass high --value=1000`.
    #[command(visible_alias = "pc")]
    Priorityclass {
        name: String,
        #[arg(long, default_value_t = 0)]
        value: i64,
        #[arg(long)]
        global_default: bool,
        #[arg(long, default_value = "")]
        description: String,
        /// PreemptLowerPriority or Never.
        #[arg(long, default_value = "PreemptLowerPriority")]
        preemption_policy: String,
        #[command(flatten)]
        flags: GenFlags,
    },
}

/// What every service generator takes.
#[derive(Args, Debug, Clone)]
pub struct ServiceFlags {
    pub name: String,
    /// PORT[:TARGET], repeatable.
    #[arg(long)]
    pub tcp: Vec<String>,
    #[command(flatten)]
    pub flags: GenFlags,
}

#[derive(Subcommand, Debug)]
pub enum ServiceCmd {
    /// A ClusterIP service (`--clusterip=None` for a headless one).
    Clusterip {
        #[command(flatten)]
        s: ServiceFlags,
        #[arg(long)]
        clusterip: Option<String>,
    },
    /// A NodePort service.
    Nodeport {
        #[command(flatten)]
        s: ServiceFlags,
        #[arg(long)]
        node_port: Option<i32>,
    },
    /// A LoadBalancer service.
    Loadbalancer {
        #[command(flatten)]
        s: ServiceFlags,
    },
    /// An alias for a DNS name.
    Externalname {
        #[command(flatten)]
        s: ServiceFlags,
        #[arg(long, required = true)]
        external_name: String,
    },
}

/// `flt run NAME --image=I`: one pod, labelled run=NAME.
#[derive(Args, Debug)]
pub struct RunArgs {
    pub name: String,
    #[arg(long, required = true)]
    pub image: String,
    /// Always, OnFailure or Never.
    #[arg(long, default_value = "Always")]
    pub restart: String,
    /// KEY=VALUE, repeatable.
    #[arg(long)]
    pub env: Vec<String>,
    #[arg(long)]
    pub port: Option<i32>,
    /// Labels as k=v,k2=v2 (default run=NAME).
    #[arg(short = 'l', long)]
    pub labels: Option<String>,
    /// The arguments after -- are the command, not arguments to the image's.
    #[arg(long)]
    pub command: bool,
    /// Keep the container's standard input open (stdinOnce), and attach
    /// flt's to it once the pod runs.
    #[arg(short = 'i', long)]
    pub stdin: bool,
    /// Give the container a terminal.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// With -i: delete the pod when the session ends (also on Ctrl-C).
    #[arg(long)]
    pub rm: bool,
    #[command(flatten)]
    pub flags: GenFlags,
    #[arg(last = true)]
    pub args: Vec<String>,
}

/// `flt expose deploy/web --port=80`.
#[derive(Args, Debug)]
pub struct ExposeArgs {
    /// KIND/NAME or KIND (deployment, replicaset, replicationcontroller, pod, service).
    pub kind: String,
    pub name: Option<String>,
    /// The service's port (default: the first container port).
    #[arg(long)]
    pub port: Option<i32>,
    /// Port on the pods (number or name; default: the service port).
    #[arg(long)]
    pub target_port: Option<String>,
    /// ClusterIP, NodePort or LoadBalancer.
    #[arg(long = "type", default_value = "ClusterIP")]
    pub type_: String,
    /// The service's name (default: the object's).
    #[arg(long = "name")]
    pub service_name: Option<String>,
    #[arg(long, default_value = "TCP")]
    pub protocol: String,
    /// Label selector for the pods (default: the object's).
    #[arg(long)]
    pub selector: Option<String>,
    #[command(flatten)]
    pub flags: GenFlags,
}

/// The container name kubectl derives from an image: its last path
/// element without tag or digest.
fn container_name(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    let last = last.split('@').next().unwrap_or(last);
    let last = last.split(':').next().unwrap_or(last);
    last.to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

pub(super) fn meta(name: &str, ns: Option<&str>) -> Value {
    match ns {
        Some(ns) => json!({"name": name, "namespace": ns}),
        None => json!({"name": name}),
    }
}

fn container(image: &str, command: &[String], port: Option<i32>) -> Value {
    let mut c = json!({"name": container_name(image), "image": image});
    if !command.is_empty() {
        c["command"] = json!(command);
    }
    if let Some(p) = port {
        c["ports"] = json!([{"containerPort": p}]);
    }
    c
}

pub(super) fn key_value(s: &str, what: &str) -> Result<(String, String)> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| anyhow!("{what} {s:?} is not KEY=VALUE"))?;
    if k.is_empty() {
        bail!("{what} {s:?} has an empty key");
    }
    Ok((k.to_string(), v.to_string()))
}

/// PORT[:TARGET] of `--tcp`.
fn tcp_ports(specs: &[String]) -> Result<Vec<Value>> {
    specs
        .iter()
        .map(|s| {
            let (p, t) = s.split_once(':').unwrap_or((s, s));
            let port: i32 = p
                .parse()
                .map_err(|_| anyhow!("--tcp {s:?}: {p:?} is not a port number"))?;
            let target: Value = t
                .parse::<i32>()
                .map(|n| json!(n))
                .unwrap_or_else(|_| json!(t));
            Ok(json!({"name": format!("{port}-{}", t.replace(':', "-")), "protocol": "TCP", "port": port, "targetPort": target}))
        })
        .collect()
}

fn service(name: &str, ns: &str, ty: &str, ports: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
        "spec": {"type": ty, "selector": {"app": name}, "ports": ports}})
}

/// The manifest a `create` subcommand makes, and its flags.
pub fn create_manifest(ctx_ns: &str, cmd: CreateCmd) -> Result<(Value, GenFlags, Option<String>)> {
    let ns = Some(ctx_ns);
    Ok(match cmd {
        CreateCmd::Namespace { name, flags } => (
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": meta(&name, None)}),
            flags,
            None,
        ),
        CreateCmd::Deployment {
            name,
            image,
            replicas,
            port,
            flags,
            command,
        } => {
            let containers: Vec<Value> =
                image.iter().map(|i| container(i, &command, port)).collect();
            (
                json!({"apiVersion": "apps/v1", "kind": "Deployment",
                    "metadata": {"name": name, "namespace": ctx_ns, "labels": {"app": name}},
                    "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                        "template": {"metadata": {"labels": {"app": name}},
                            "spec": {"containers": containers}}}}),
                flags,
                None,
            )
        }
        CreateCmd::Job {
            name,
            image,
            from,
            flags,
            command,
        } => match from {
            Some(f) => (json!({"metadata": {"name": name}}), flags, Some(f)),
            None => {
                let image = image.unwrap_or_default();
                (
                    json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": meta(&name, ns),
                        "spec": {"template": {"spec": {"restartPolicy": "Never",
                            "containers": [container(&image, &command, None)]}}}}),
                    flags,
                    None,
                )
            }
        },
        CreateCmd::Cronjob {
            name,
            image,
            schedule,
            restart,
            flags,
            command,
        } => (
            json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": meta(&name, ns),
                "spec": {"schedule": schedule, "jobTemplate": {"metadata": {"name": name},
                    "spec": {"template": {"spec": {"restartPolicy": restart,
                        "containers": [container(&image, &command, None)]}}}}}}),
            flags,
            None,
        ),
        CreateCmd::Configmap { name, data, flags } => {
            let mut d = Map::new();
            let mut bin = Map::new();
            for (k, v) in entries(&data)? {
                match String::from_utf8(v) {
                    Ok(s) => d.insert(k, json!(s)),
                    Err(e) => bin.insert(k, json!(b64(e.as_bytes()))),
                };
            }
            let mut cm =
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(&name, ns)});
            if !d.is_empty() {
                cm["data"] = Value::Object(d);
            }
            if !bin.is_empty() {
                cm["binaryData"] = Value::Object(bin);
            }
            (cm, flags, None)
        }
        CreateCmd::Secret(s) => secret(ctx_ns, s)?,
        CreateCmd::Serviceaccount { name, flags } => (
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(&name, ns)}),
            flags,
            None,
        ),
        CreateCmd::Token(_) | CreateCmd::BootstrapToken(_) => {
            bail!("flt create token and bootstrap-token print a credential, not an object")
        }
        CreateCmd::Service(cmd) => {
            let (s, ty, cluster_ip, node_port, external_name) = match cmd {
                ServiceCmd::Clusterip { s, clusterip } => (s, "ClusterIP", clusterip, None, None),
                ServiceCmd::Nodeport { s, node_port } => (s, "NodePort", None, node_port, None),
                ServiceCmd::Loadbalancer { s } => (s, "LoadBalancer", None, None, None),
                ServiceCmd::Externalname { s, external_name } => {
                    (s, "ExternalName", None, None, Some(external_name))
                }
            };
            let mut ports = tcp_ports(&s.tcp)?;
            let headless = cluster_ip.as_deref() == Some("None");
            if ports.is_empty() && ty != "ExternalName" && !headless {
                bail!("at least one --tcp PORT[:TARGET] is required");
            }
            if let Some(np) = node_port {
                for p in &mut ports {
                    p["nodePort"] = json!(np);
                }
            }
            let mut svc = service(&s.name, ctx_ns, ty, ports);
            if let Some(ip) = cluster_ip {
                svc["spec"]["clusterIP"] = json!(ip);
            }
            if let Some(n) = external_name {
                svc["spec"]["externalName"] = json!(n);
                if let Some(spec) = svc["spec"].as_object_mut() {
                    spec.remove("selector");
                }
            }
            (svc, s.flags, None)
        }
        CreateCmd::Priorityclass {
            name,
            value,
            global_default,
            description,
            preemption_policy,
            flags,
        } => (
            json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": meta(&name, None),
                "value": value, "globalDefault": global_default, "description": description,
                "preemptionPolicy": preemption_policy}),
            flags,
            None,
        ),
    })
}

/// The pod `flt run` makes.
pub fn run_manifest(ns: &str, a: &RunArgs) -> Result<Value> {
    if !["Always", "OnFailure", "Never"].contains(&a.restart.as_str()) {
        bail!("invalid restart policy: {}", a.restart);
    }
    let mut labels = Map::new();
    match &a.labels {
        Some(l) => {
            for kv in l.split(',').filter(|s| !s.is_empty()) {
                let (k, v) = key_value(kv, "--labels")?;
                labels.insert(k, json!(v));
            }
        }
        None => {
            labels.insert("run".into(), json!(a.name));
        }
    }
    let mut c = json!({"name": a.name, "image": a.image});
    if !a.args.is_empty() {
        c[if a.command { "command" } else { "args" }] = json!(a.args);
    }
    if !a.env.is_empty() {
        let env = a
            .env
            .iter()
            .map(|e| key_value(e, "--env").map(|(k, v)| json!({"name": k, "value": v})))
            .collect::<Result<Vec<_>>>()?;
        c["env"] = json!(env);
    }
    if let Some(p) = a.port {
        c["ports"] = json!([{"containerPort": p}]);
    }
    if a.stdin {
        c["stdin"] = json!(true);
        c["stdinOnce"] = json!(true);
    }
    if a.tty {
        c["tty"] = json!(true);
    }
    Ok(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": a.name, "namespace": ns, "labels": labels},
        "spec": {"restartPolicy": a.restart, "containers": [c]}}))
}

/// The service `flt expose` makes for `obj`.
pub fn expose_manifest(ns: &str, kind: &str, obj: &Value, a: &ExposeArgs) -> Result<Value> {
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let selector: Map<String, Value> = match &a.selector {
        Some(s) => s
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|kv| key_value(kv, "--selector").map(|(k, v)| (k, json!(v))))
            .collect::<Result<_>>()?,
        None => {
            let sel = match kind {
                "Deployment" | "ReplicaSet" => obj.pointer("/spec/selector/matchLabels"),
                "ReplicationController" | "Service" => obj.pointer("/spec/selector"),
                _ => obj.pointer("/metadata/labels"),
            };
            if (kind == "Deployment" || kind == "ReplicaSet")
                && obj
                    .pointer("/spec/selector/matchExpressions")
                    .and_then(Value::as_array)
                    .is_some_and(|m| !m.is_empty())
            {
                bail!("couldn't retrieve selectors via --selector flag or introspection: the {} has matchExpressions, which a service cannot use", kind.to_lowercase());
            }
            sel.and_then(Value::as_object).cloned().unwrap_or_default()
        }
    };
    if selector.is_empty() {
        bail!("couldn't retrieve selectors via --selector flag or introspection: {kind} {name:?} has none");
    }
    let containers = match kind {
        "Pod" => obj.pointer("/spec/containers"),
        "Service" => None,
        _ => obj.pointer("/spec/template/spec/containers"),
    };
    let first_port = containers
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| p["containerPort"].as_i64())
        .next();
    let port = match (a.port, first_port, kind) {
        (Some(p), _, _) => i64::from(p),
        (None, Some(p), _) => p,
        (None, None, "Service") => obj
            .pointer("/spec/ports/0/port")
            .and_then(Value::as_i64)
            .unwrap_or(0),
        _ => bail!("couldn't find port via --port flag or introspection"),
    };
    let target: Value = match &a.target_port {
        Some(t) => t
            .parse::<i64>()
            .map(|n| json!(n))
            .unwrap_or_else(|_| json!(t)),
        None => json!(port),
    };
    let svc_name = a.service_name.clone().unwrap_or_else(|| name.to_string());
    let labels = obj
        .pointer("/metadata/labels")
        .cloned()
        .unwrap_or_else(|| json!({}));
    Ok(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": svc_name, "namespace": ns, "labels": labels},
        "spec": {"type": a.type_, "selector": selector,
            "ports": [{"protocol": a.protocol, "port": port, "targetPort": target}]}}))
}

/// Print or send a generated object, as its flags say.
pub async fn emit(ctx: &Ctx, mut obj: Value, flags: &GenFlags) -> Result<()> {
    let kind = obj["kind"].as_str().unwrap_or("").to_string();
    let av = obj["apiVersion"].as_str().unwrap_or("").to_string();
    let info = registry::by_kind(&av, &kind).ok_or_else(|| anyhow!("no kind {kind} in {av}"))?;
    let ns = if info.namespaced {
        obj.pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or(&ctx.namespace)
            .to_string()
    } else {
        String::new()
    };
    if flags.dry_run != DryRun::Client {
        let (v, w) = ctx
            .client
            .create(info.plural, &ns, &obj, flags.dry_run == DryRun::Server)
            .await
            .map_err(|e| anyhow!(e.message))?;
        for w in w {
            eprintln!("Warning: {w}");
        }
        obj = v;
    }
    let qualified = crate::commands::singular_qualified(info);
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    match flags.output {
        Some(GenOutput::Yaml) => print!("{}", print::to_yaml(&obj)),
        Some(GenOutput::Json) => print!("{}", print::to_json(&obj)),
        Some(GenOutput::Name) => println!("{qualified}/{name}"),
        None => {
            let how = match flags.dry_run {
                DryRun::None => "created",
                DryRun::Client => "created (dry run)",
                DryRun::Server => "created (server dry run)",
            };
            println!("{qualified}/{name} {how}");
        }
    }
    Ok(())
}

/// A Job from a CronJob's template, as `kubectl create job --from` makes
/// it: owned by the cronjob, annotated as instantiated by hand.
pub async fn job_from(ctx: &Ctx, name: &str, from: &str) -> Result<Value> {
    let cj = from
        .strip_prefix("cronjob/")
        .or_else(|| from.strip_prefix("cronjobs/"))
        .or_else(|| from.strip_prefix("cj/"))
        .ok_or_else(|| anyhow!("from must be of the form cronjob/NAME, not {from:?}"))?;
    let c = ctx
        .client
        .get("cronjobs", &ctx.namespace, cj)
        .await
        .map_err(|e| anyhow!(e.message))?;
    let tmpl = c.pointer("/spec/jobTemplate").cloned().unwrap_or_default();
    let mut labels = tmpl
        .pointer("/metadata/labels")
        .cloned()
        .unwrap_or_else(|| json!({}));
    if !labels.is_object() {
        labels = json!({});
    }
    let mut annotations = tmpl
        .pointer("/metadata/annotations")
        .cloned()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    annotations["cronjob.kubernetes.io/instantiate"] = json!("manual");
    Ok(json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": ctx.namespace, "labels": labels, "annotations": annotations,
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": cj,
                "uid": c.pointer("/metadata/uid").cloned().unwrap_or_default(), "controller": true}]},
        "spec": tmpl.get("spec").cloned().unwrap_or_default()}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_names_come_from_images() {
        assert_eq!(container_name("nginx"), "nginx");
        assert_eq!(container_name("nginx:1.25"), "nginx");
        assert_eq!(
            container_name("127.0.0.1:5000/lib/busy_box@sha256:ab"),
            "busy-box"
        );
    }

    #[test]
    fn tcp_specs_become_ports() {
        let p = tcp_ports(&["80:8080".into(), "443".into(), "53:dns".into()]).unwrap();
        assert_eq!(
            p[0],
            json!({"name": "80-8080", "protocol": "TCP", "port": 80, "targetPort": 8080})
        );
        assert_eq!(p[1]["targetPort"], 443);
        assert_eq!(p[2]["targetPort"], "dns");
        assert!(tcp_ports(&["http".into()]).is_err());
    }

    #[test]
    fn expose_takes_the_selector_and_port_of_what_it_exposes() {
        let deploy = json!({"metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                "template": {"spec": {"containers": [{"name": "c", "ports": [{"containerPort": 8080}]}]}}}});
        let a = ExposeArgs {
            kind: "deploy".into(),
            name: None,
            port: None,
            target_port: None,
            type_: "NodePort".into(),
            service_name: None,
            protocol: "TCP".into(),
            selector: None,
            flags: GenFlags::default(),
        };
        let s = expose_manifest("default", "Deployment", &deploy, &a).unwrap();
        assert_eq!(s["spec"]["selector"], json!({"app": "web"}));
        assert_eq!(s["spec"]["ports"][0]["port"], 8080);
        assert_eq!(s["spec"]["type"], "NodePort");
        let bare = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}});
        assert!(expose_manifest("default", "Pod", &bare, &a).is_err());
    }
}
