//! `kubectl describe` text for each kind, laid out the way kubectl's
//! describers do: `Key:\tvalue` lines through a tab writer (minimum width 0,
//! padding 2), nested sections indented by two spaces a level.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::table::{event_first_seen, machine, node_roles, service_type};
use super::tabwriter::tabwrite;
use super::util::{
    age, at, flag, format_label_selector, format_labels, human_duration, int, kind_info, list,
    one_line, or, parse_time, rfc1123z, scalar, scalar_at, string_map, text,
};

/// The longest annotation kubectl prints on one line.
const MAX_ANNOTATION_LEN: usize = 140;

/// Accumulates describe lines before the tab writer aligns them.
#[derive(Default)]
struct Out {
    buf: String,
}

impl Out {
    /// Write `s` (which may hold tabs) at `level` (two spaces a level) and end
    /// the line.
    fn line(&mut self, level: usize, s: &str) {
        self.partial(level, s);
        self.buf.push('\n');
    }

    /// Write `s` at `level` without ending the line.
    fn partial(&mut self, level: usize, s: &str) {
        for _ in 0..level {
            self.buf.push_str("  ");
        }
        self.buf.push_str(s);
    }

    /// `Key:\tvalue` at `level`; the value is kept on one line.
    fn field(&mut self, level: usize, key: &str, value: &str) {
        self.line(level, &format!("{key}:\t{}", one_line(value)));
    }

    /// Align everything written and drop trailing spaces.
    fn finish(self) -> String {
        let aligned = tabwrite(&self.buf, 0, 2);
        let mut out = String::with_capacity(aligned.len());
        for l in aligned.lines() {
            out.push_str(l.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `kubectl describe` text for one object of `kind`, with an "Events:"
/// section built from `events` (those about the object, in any order; they
/// are sorted by last timestamp). Kinds without a describer of their own get
/// a generic one: metadata, then every other top-level field as YAML.
pub fn describe(kind: &str, object: &Value, events: &[Value], now: DateTime<Utc>) -> String {
    let mut out = Out::default();
    let canonical = kind_info(kind).map(|k| k.kind).unwrap_or(kind);
    match canonical {
        "Pod" => describe_pod(&mut out, object),
        "Deployment" => describe_deployment(&mut out, object),
        "ReplicaSet" | "ReplicationController" => describe_replica_set(&mut out, object),
        "Job" => describe_job(&mut out, object),
        "Service" => describe_service(&mut out, object),
        "Node" => describe_node(&mut out, object),
        "Namespace" => describe_namespace(&mut out, object),
        "ConfigMap" => describe_config_map(&mut out, object),
        "Secret" => describe_secret(&mut out, object),
        _ => describe_generic(&mut out, canonical, object),
    }
    describe_events(&mut out, events, now);
    out.finish()
}

/// Name, then Namespace when the object has one.
fn name_and_namespace(out: &mut Out, obj: &Value) {
    out.field(0, "Name", text(obj, &["metadata", "name"]));
    let ns = text(obj, &["metadata", "namespace"]);
    if !ns.is_empty() {
        out.field(0, "Namespace", ns);
    }
}

/// Labels and Annotations of the object's metadata.
fn labels_and_annotations(out: &mut Out, obj: &Value) {
    labels_multiline(out, "Labels", &string_map(obj, &["metadata", "labels"]));
    annotations_multiline(
        out,
        "Annotations",
        &string_map(obj, &["metadata", "annotations"]),
    );
}

/// kubectl's `printLabelsMultiline`: `Title:\tk=v`, further pairs on their
/// own lines in the value column, "<none>" when empty. `title` may carry its
/// own indentation ("  Labels").
fn labels_multiline(out: &mut Out, title: &str, pairs: &[(String, String)]) {
    if pairs.is_empty() {
        out.line(0, &format!("{title}:\t<none>"));
        return;
    }
    for (i, (k, v)) in pairs.iter().enumerate() {
        let head = if i == 0 {
            format!("{title}:")
        } else {
            String::new()
        };
        out.line(0, &format!("{head}\t{k}={}", one_line(v)));
    }
}

/// kubectl's `printAnnotationsMultiline`: `key: value`, a long or
/// multi-line value under its key, indented, each line cut at 140.
fn annotations_multiline(out: &mut Out, title: &str, pairs: &[(String, String)]) {
    if pairs.is_empty() {
        out.line(0, &format!("{title}:\t<none>"));
        return;
    }
    for (i, (k, v)) in pairs.iter().enumerate() {
        let head = if i == 0 {
            format!("{title}:")
        } else {
            String::new()
        };
        let value = v.strip_suffix('\n').unwrap_or(v);
        if value.chars().count() + k.chars().count() + 2 > MAX_ANNOTATION_LEN
            || value.contains('\n')
        {
            out.line(0, &format!("{head}\t{k}:"));
            for s in value.split('\n') {
                out.line(
                    0,
                    &format!("\t  {}", shorten(&one_line(s), MAX_ANNOTATION_LEN - 2)),
                );
            }
        } else {
            out.line(0, &format!("{head}\t{k}: {}", one_line(value)));
        }
    }
}

/// `s` cut to `max` characters followed by "...", when longer.
fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() > max {
        format!("{}...", s.chars().take(max).collect::<String>())
    } else {
        s.to_string()
    }
}

/// kubectl's `printController`: "Kind/name" of the controlling owner.
fn controlled_by(obj: &Value) -> Option<String> {
    list(obj, &["metadata", "ownerReferences"])
        .iter()
        .find(|o| flag(o, &["controller"]))
        .map(|o| format!("{}/{}", text(o, &["kind"]), text(o, &["name"])))
}

/// "True"/"False", as Go's `printBool`.
fn go_bool(b: bool) -> &'static str {
    if b {
        "True"
    } else {
        "False"
    }
}

/// The Pod describer: identity, node, status, containers, conditions,
/// volumes, QoS, node selectors and tolerations.
fn describe_pod(out: &mut Out, pod: &Value) {
    name_and_namespace(out, pod);
    if let Some(p) = int(pod, &["spec", "priority"]) {
        out.field(0, "Priority", &p.to_string());
    }
    let pcn = text(pod, &["spec", "priorityClassName"]);
    if !pcn.is_empty() {
        out.field(0, "Priority Class Name", pcn);
    }
    out.field(
        0,
        "Service Account",
        &or(text(pod, &["spec", "serviceAccountName"]), "default"),
    );
    let node = text(pod, &["spec", "nodeName"]);
    if node.is_empty() {
        out.field(0, "Node", "<none>");
    } else {
        out.field(
            0,
            "Node",
            &format!("{node}/{}", text(pod, &["status", "hostIP"])),
        );
    }
    let start = text(pod, &["status", "startTime"]);
    if !start.is_empty() {
        out.field(0, "Start Time", &rfc1123z(start));
    }
    labels_and_annotations(out, pod);
    let deletion = text(pod, &["metadata", "deletionTimestamp"]);
    if deletion.is_empty() {
        out.field(0, "Status", &or(text(pod, &["status", "phase"]), "Pending"));
    } else {
        out.field(0, "Status", "Terminating");
        if let Some(g) = int(pod, &["metadata", "deletionGracePeriodSeconds"]) {
            out.field(0, "Termination Grace Period", &format!("{g}s"));
        }
    }
    for (key, field) in [("Reason", "reason"), ("Message", "message")] {
        let v = text(pod, &["status", field]);
        if !v.is_empty() {
            out.field(0, key, v);
        }
    }
    out.field(0, "IP", text(pod, &["status", "podIP"]));
    let mut ips: Vec<String> = list(pod, &["status", "podIPs"])
        .iter()
        .map(|ip| text(ip, &["ip"]).to_string())
        .collect();
    if ips.is_empty() && !text(pod, &["status", "podIP"]).is_empty() {
        ips.push(text(pod, &["status", "podIP"]).to_string());
    }
    if ips.is_empty() {
        out.field(0, "IPs", "<none>");
    } else {
        out.line(0, "IPs:");
        for ip in &ips {
            out.field(1, "IP", ip);
        }
    }
    if let Some(owner) = controlled_by(pod) {
        out.field(0, "Controlled By", &owner);
    }
    let init = list(pod, &["spec", "initContainers"]);
    if !init.is_empty() {
        let statuses = list(pod, &["status", "initContainerStatuses"]);
        describe_containers(out, "Init Containers", init, Some(statuses), "");
    }
    let statuses = list(pod, &["status", "containerStatuses"]);
    describe_containers(
        out,
        "Containers",
        list(pod, &["spec", "containers"]),
        Some(statuses),
        "",
    );
    let conditions = list(pod, &["status", "conditions"]);
    if !conditions.is_empty() {
        out.line(0, "Conditions:");
        out.line(1, "Type\tStatus");
        for c in conditions {
            out.line(
                1,
                &format!("{} \t{}", text(c, &["type"]), text(c, &["status"])),
            );
        }
    }
    describe_volumes(out, list(pod, &["spec", "volumes"]), "");
    out.field(0, "QoS Class", &qos_class(pod));
    labels_multiline(
        out,
        "Node-Selectors",
        &string_map(pod, &["spec", "nodeSelector"]),
    );
    tolerations_multiline(out, "Tolerations", list(pod, &["spec", "tolerations"]));
}

/// status.qosClass, or kubectl's classes worked out from the containers'
/// cpu and memory requests and limits.
fn qos_class(pod: &Value) -> String {
    let given = text(pod, &["status", "qosClass"]);
    if !given.is_empty() {
        return given.to_string();
    }
    let containers: Vec<&Value> = list(pod, &["spec", "containers"])
        .iter()
        .chain(list(pod, &["spec", "initContainers"]))
        .collect();
    let quantity = |c: &Value, kind: &str, res: &str| scalar_at(c, &["resources", kind, res]);
    let mut any = false;
    let mut guaranteed = !containers.is_empty();
    for c in &containers {
        for res in ["cpu", "memory"] {
            let request = quantity(c, "requests", res);
            let limit = quantity(c, "limits", res);
            any |= !request.is_empty() || !limit.is_empty();
            if limit.is_empty() || (!request.is_empty() && request != limit) {
                guaranteed = false;
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
    .to_string()
}

/// kubectl's `describeContainers`: each container's image, ports, command,
/// state (when `statuses` is given), resources, probes, environment and
/// mounts. `space` is the extra indentation of a pod template ("  ").
fn describe_containers(
    out: &mut Out,
    title: &str,
    containers: &[Value],
    statuses: Option<&[Value]>,
    space: &str,
) {
    out.line(0, &format!("{space}{title}:"));
    let name_indent = if space.is_empty() { "" } else { " " };
    for c in containers {
        let name = text(c, &["name"]);
        let status = statuses.and_then(|s| s.iter().find(|s| text(s, &["name"]) == name));
        out.line(1, &format!("{name_indent}{name}:"));
        if let Some(s) = status {
            out.field(2, "Container ID", text(s, &["containerID"]));
        }
        out.field(2, "Image", text(c, &["image"]));
        if let Some(s) = status {
            out.field(2, "Image ID", text(s, &["imageID"]));
        }
        let ports = list(c, &["ports"]);
        let port_list = |field: &str| {
            ports
                .iter()
                .map(|p| {
                    let n = int(p, &[field]).unwrap_or(0);
                    format!("{n}/{}", or(text(p, &["protocol"]), "TCP"))
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        for (single, plural, field) in [
            ("Port", "Ports", "containerPort"),
            ("Host Port", "Host Ports", "hostPort"),
        ] {
            let s = port_list(field);
            if s.contains(',') {
                out.field(2, plural, &s);
            } else {
                out.field(2, single, &or(s, "<none>"));
            }
        }
        for (key, field) in [("Command", "command"), ("Args", "args")] {
            let parts = list(c, &[field]);
            if !parts.is_empty() {
                out.line(2, &format!("{key}:"));
                for part in parts {
                    for l in scalar(part).split('\n') {
                        out.line(3, &one_line(l));
                    }
                }
            }
        }
        if let Some(s) = status {
            describe_state(out, "State", at(s, &["state"]));
            if at(s, &["lastState", "terminated"]).is_some() {
                describe_state(out, "Last State", at(s, &["lastState"]));
            }
            out.field(2, "Ready", go_bool(flag(s, &["ready"])));
            out.field(
                2,
                "Restart Count",
                &int(s, &["restartCount"]).unwrap_or(0).to_string(),
            );
        }
        for (key, field) in [("Limits", "limits"), ("Requests", "requests")] {
            let res = string_map(c, &["resources", field]);
            if !res.is_empty() {
                out.line(2, &format!("{key}:"));
                for (k, v) in &res {
                    out.field(3, k, v);
                }
            }
        }
        for (key, field) in [
            ("Liveness", "livenessProbe"),
            ("Readiness", "readinessProbe"),
            ("Startup", "startupProbe"),
        ] {
            if let Some(p) = at(c, &[field]).filter(|p| p.is_object()) {
                out.field(2, key, &describe_probe(p));
            }
        }
        describe_env(out, c);
        describe_mounts(out, c);
    }
}

/// kubectl's `describeStatus` of a container state.
fn describe_state(out: &mut Out, name: &str, state: Option<&Value>) {
    let state = state.unwrap_or(&Value::Null);
    if let Some(r) = at(state, &["running"]).filter(|v| v.is_object()) {
        out.field(2, name, "Running");
        out.field(3, "Started", &rfc1123z(text(r, &["startedAt"])));
    } else if let Some(t) = at(state, &["terminated"]).filter(|v| v.is_object()) {
        out.field(2, name, "Terminated");
        for (key, field) in [("Reason", "reason"), ("Message", "message")] {
            let v = text(t, &[field]);
            if !v.is_empty() {
                out.field(3, key, v);
            }
        }
        out.field(
            3,
            "Exit Code",
            &int(t, &["exitCode"]).unwrap_or(0).to_string(),
        );
        if let Some(sig) = int(t, &["signal"]).filter(|s| *s > 0) {
            out.field(3, "Signal", &sig.to_string());
        }
        out.field(3, "Started", &rfc1123z(text(t, &["startedAt"])));
        out.field(3, "Finished", &rfc1123z(text(t, &["finishedAt"])));
    } else {
        out.field(2, name, "Waiting");
        let reason = text(state, &["waiting", "reason"]);
        if !reason.is_empty() {
            out.field(3, "Reason", reason);
        }
    }
}

/// kubectl's `DescribeProbe`, with the API server's defaults for unset
/// fields: "http-get http://:80/ delay=0s timeout=1s period=10s #success=1
/// #failure=3".
fn describe_probe(p: &Value) -> String {
    let attrs = format!(
        "delay={}s timeout={}s period={}s #success={} #failure={}",
        int(p, &["initialDelaySeconds"]).unwrap_or(0),
        int(p, &["timeoutSeconds"]).unwrap_or(1),
        int(p, &["periodSeconds"]).unwrap_or(10),
        int(p, &["successThreshold"]).unwrap_or(1),
        int(p, &["failureThreshold"]).unwrap_or(3),
    );
    if let Some(exec) = at(p, &["exec"]) {
        let cmd: Vec<String> = list(exec, &["command"]).iter().map(scalar).collect();
        format!("exec [{}] {attrs}", cmd.join(" "))
    } else if let Some(h) = at(p, &["httpGet"]) {
        let scheme = or(text(h, &["scheme"]), "HTTP").to_ascii_lowercase();
        let port = scalar_at(h, &["port"]);
        let host = text(h, &["host"]);
        let authority = if port.is_empty() {
            host.to_string()
        } else {
            super::util::join_host_port(host, &port)
        };
        format!(
            "http-get {scheme}://{authority}{} {attrs}",
            text(h, &["path"])
        )
    } else if let Some(t) = at(p, &["tcpSocket"]) {
        format!(
            "tcp-socket {}:{} {attrs}",
            text(t, &["host"]),
            scalar_at(t, &["port"])
        )
    } else if let Some(g) = at(p, &["grpc"]) {
        format!(
            "grpc <pod>:{} {} {attrs}",
            scalar_at(g, &["port"]),
            text(g, &["service"])
        )
    } else {
        format!("unknown {attrs}")
    }
}

/// Environment variables, and their sources, as kubectl lists them.
fn describe_env(out: &mut Out, c: &Value) {
    let env_from = list(c, &["envFrom"]);
    if !env_from.is_empty() {
        out.line(2, "Environment Variables from:");
        for e in env_from {
            let (from, reference) = if let Some(r) = at(e, &["configMapRef"]) {
                ("ConfigMap", r)
            } else {
                ("Secret", at(e, &["secretRef"]).unwrap_or(&Value::Null))
            };
            let name = text(reference, &["name"]);
            let optional = flag(reference, &["optional"]);
            let prefix = text(e, &["prefix"]);
            let from = if prefix.is_empty() {
                from.to_string()
            } else {
                format!("{from} with prefix '{prefix}'")
            };
            out.line(3, &format!("{name}\t{from}\tOptional: {optional}"));
        }
    }
    let env = list(c, &["env"]);
    if env.is_empty() {
        out.line(2, "Environment:\t<none>");
        return;
    }
    out.line(2, "Environment:");
    for e in env {
        let name = text(e, &["name"]);
        let Some(from) = at(e, &["valueFrom"]).filter(|v| v.is_object()) else {
            for (i, l) in text(e, &["value"]).split('\n').enumerate() {
                let head = if i == 0 {
                    format!("{name}:")
                } else {
                    String::new()
                };
                out.line(3, &format!("{head}\t{}", one_line(l)));
            }
            continue;
        };
        let line = if let Some(f) = at(from, &["fieldRef"]) {
            format!(
                "{name}:\t ({}:{})",
                or(text(f, &["apiVersion"]), "v1"),
                text(f, &["fieldPath"])
            )
        } else if let Some(r) = at(from, &["resourceFieldRef"]) {
            format!("{name}:\t ({})", text(r, &["resource"]))
        } else if let Some(s) = at(from, &["secretKeyRef"]) {
            format!(
                "{name}:\t<set to the key '{}' in secret '{}'>\tOptional: {}",
                text(s, &["key"]),
                text(s, &["name"]),
                flag(s, &["optional"])
            )
        } else if let Some(m) = at(from, &["configMapKeyRef"]) {
            format!(
                "{name}:\t<set to the key '{}' of config map '{}'>\tOptional: {}",
                text(m, &["key"]),
                text(m, &["name"]),
                flag(m, &["optional"])
            )
        } else {
            format!("{name}:\t<unknown source>")
        };
        out.line(3, &line);
    }
}

/// Volume mounts sorted by path: "/path from volume (ro|rw[,path=\"sub\"])".
fn describe_mounts(out: &mut Out, c: &Value) {
    let mut mounts: Vec<&Value> = list(c, &["volumeMounts"]).iter().collect();
    if mounts.is_empty() {
        out.line(2, "Mounts:\t<none>");
        return;
    }
    mounts.sort_by_key(|m| text(m, &["mountPath"]));
    out.line(2, "Mounts:");
    for m in mounts {
        let mut flags = vec![if flag(m, &["readOnly"]) { "ro" } else { "rw" }.to_string()];
        let sub = text(m, &["subPath"]);
        if !sub.is_empty() {
            flags.push(format!("path={sub:?}"));
        }
        out.line(
            3,
            &format!(
                "{} from {} ({})",
                text(m, &["mountPath"]),
                text(m, &["name"]),
                flags.join(",")
            ),
        );
    }
}

/// kubectl's `describeVolumes` for the common volume types.
fn describe_volumes(out: &mut Out, volumes: &[Value], space: &str) {
    if volumes.is_empty() {
        out.line(0, &format!("{space}Volumes:\t<none>"));
        return;
    }
    out.line(0, &format!("{space}Volumes:"));
    let name_indent = if space.is_empty() { "" } else { " " };
    for v in volumes {
        out.line(1, &format!("{name_indent}{}:", text(v, &["name"])));
        if let Some(h) = at(v, &["hostPath"]) {
            out.field(2, "Type", "HostPath (bare host directory volume)");
            out.field(2, "Path", text(h, &["path"]));
            out.field(2, "HostPathType", text(h, &["type"]));
        } else if let Some(e) = at(v, &["emptyDir"]) {
            out.field(
                2,
                "Type",
                "EmptyDir (a temporary directory that shares a pod's lifetime)",
            );
            out.field(2, "Medium", text(e, &["medium"]));
            out.field(2, "SizeLimit", &or(scalar_at(e, &["sizeLimit"]), "<unset>"));
        } else if let Some(s) = at(v, &["secret"]) {
            out.field(2, "Type", "Secret (a volume populated by a Secret)");
            out.field(2, "SecretName", text(s, &["secretName"]));
            out.field(2, "Optional", &flag(s, &["optional"]).to_string());
        } else if let Some(c) = at(v, &["configMap"]) {
            out.field(2, "Type", "ConfigMap (a volume populated by a ConfigMap)");
            out.field(2, "Name", text(c, &["name"]));
            out.field(2, "Optional", &flag(c, &["optional"]).to_string());
        } else if let Some(p) = at(v, &["persistentVolumeClaim"]) {
            out.field(
                2,
                "Type",
                "PersistentVolumeClaim (a reference to a PersistentVolumeClaim in the same namespace)",
            );
            out.field(2, "ClaimName", text(p, &["claimName"]));
            out.field(2, "ReadOnly", &flag(p, &["readOnly"]).to_string());
        } else {
            out.line(1, "<unknown>");
        }
    }
}

/// kubectl's `printPodTolerationsMultiline`: "key=value:Effect op=Exists for
/// 300s", one a line.
fn tolerations_multiline(out: &mut Out, title: &str, tolerations: &[Value]) {
    if tolerations.is_empty() {
        out.line(0, &format!("{title}:\t<none>"));
        return;
    }
    for (i, t) in tolerations.iter().enumerate() {
        let head = if i == 0 {
            format!("{title}:")
        } else {
            String::new()
        };
        let key = text(t, &["key"]);
        let value = text(t, &["value"]);
        let effect = text(t, &["effect"]);
        let mut s = key.to_string();
        if !value.is_empty() {
            s.push_str(&format!("={value}"));
        }
        if !effect.is_empty() {
            s.push_str(&format!(":{effect}"));
        }
        if text(t, &["operator"]) == "Exists" && value.is_empty() {
            if key.is_empty() && effect.is_empty() {
                s.push_str("op=Exists");
            } else {
                s.push_str(" op=Exists");
            }
        }
        if let Some(secs) = int(t, &["tolerationSeconds"]) {
            s.push_str(&format!(" for {secs}s"));
        }
        out.line(0, &format!("{head}\t{s}"));
    }
}

/// kubectl's `DescribePodTemplate` for spec.template.
fn describe_pod_template(out: &mut Out, obj: &Value) {
    out.line(0, "Pod Template:");
    let Some(t) = at(obj, &["spec", "template"]).filter(|t| t.is_object()) else {
        out.line(1, "<unset>");
        return;
    };
    labels_multiline(out, "  Labels", &string_map(t, &["metadata", "labels"]));
    let annotations = string_map(t, &["metadata", "annotations"]);
    if !annotations.is_empty() {
        annotations_multiline(out, "  Annotations", &annotations);
    }
    let sa = text(t, &["spec", "serviceAccountName"]);
    if !sa.is_empty() {
        out.field(1, "Service Account", sa);
    }
    let init = list(t, &["spec", "initContainers"]);
    if !init.is_empty() {
        describe_containers(out, "Init Containers", init, None, "  ");
    }
    describe_containers(
        out,
        "Containers",
        list(t, &["spec", "containers"]),
        None,
        "  ",
    );
    describe_volumes(out, list(t, &["spec", "volumes"]), "  ");
    let pcn = text(t, &["spec", "priorityClassName"]);
    if !pcn.is_empty() {
        out.field(1, "Priority Class Name", pcn);
    }
    labels_multiline(
        out,
        "  Node-Selectors",
        &string_map(t, &["spec", "nodeSelector"]),
    );
    tolerations_multiline(out, "  Tolerations", list(t, &["spec", "tolerations"]));
}

/// A conditions table with the given columns, rows from status.conditions.
/// kubectl follows the first `spaced` cells of each row with a space before
/// the tab ("Type \t"), which widens those columns by one.
fn conditions_table(out: &mut Out, obj: &Value, columns: &[(&str, &str)], spaced: usize) {
    let conditions = list(obj, &["status", "conditions"]);
    if conditions.is_empty() {
        return;
    }
    out.line(0, "Conditions:");
    let titles: Vec<&str> = columns.iter().map(|(t, _)| *t).collect();
    out.line(1, &titles.join("\t"));
    let dashes: Vec<String> = titles.iter().map(|t| "-".repeat(t.len())).collect();
    out.line(1, &dashes.join("\t"));
    for c in conditions {
        let cells: Vec<String> = columns
            .iter()
            .enumerate()
            .map(|(i, (_, field))| {
                let v = text(c, &[field]);
                let mut cell = if field.ends_with("Time") {
                    rfc1123z(v)
                } else {
                    one_line(v)
                };
                if i < spaced {
                    cell.push(' ');
                }
                cell
            })
            .collect();
        out.line(1, &cells.join("\t"));
    }
}

/// The Deployment describer.
fn describe_deployment(out: &mut Out, d: &Value) {
    name_and_namespace(out, d);
    out.field(
        0,
        "CreationTimestamp",
        &rfc1123z(text(d, &["metadata", "creationTimestamp"])),
    );
    labels_and_annotations(out, d);
    out.field(
        0,
        "Selector",
        &format_label_selector(at(d, &["spec", "selector"])),
    );
    let count = |f: &str| int(d, &["status", f]).unwrap_or(0);
    out.field(
        0,
        "Replicas",
        &format!(
            "{} desired | {} updated | {} total | {} available | {} unavailable",
            int(d, &["spec", "replicas"]).unwrap_or(1),
            count("updatedReplicas"),
            count("replicas"),
            count("availableReplicas"),
            count("unavailableReplicas"),
        ),
    );
    let strategy = or(text(d, &["spec", "strategy", "type"]), "RollingUpdate");
    out.field(0, "StrategyType", &strategy);
    out.field(
        0,
        "MinReadySeconds",
        &int(d, &["spec", "minReadySeconds"])
            .unwrap_or(0)
            .to_string(),
    );
    if strategy == "RollingUpdate" {
        let part = |f: &str| {
            or(
                scalar_at(d, &["spec", "strategy", "rollingUpdate", f]),
                "25%",
            )
        };
        out.field(
            0,
            "RollingUpdateStrategy",
            &format!(
                "{} max unavailable, {} max surge",
                part("maxUnavailable"),
                part("maxSurge")
            ),
        );
    }
    describe_pod_template(out, d);
    conditions_table(
        out,
        d,
        &[("Type", "type"), ("Status", "status"), ("Reason", "reason")],
        1,
    );
}

/// The ReplicaSet and ReplicationController describer.
fn describe_replica_set(out: &mut Out, rs: &Value) {
    name_and_namespace(out, rs);
    let sel = at(rs, &["spec", "selector"]);
    let selector = if sel
        .is_some_and(|s| s.get("matchLabels").is_some() || s.get("matchExpressions").is_some())
    {
        format_label_selector(sel)
    } else {
        format_labels(&string_map(rs, &["spec", "selector"]))
    };
    out.field(0, "Selector", &selector);
    labels_and_annotations(out, rs);
    if let Some(owner) = controlled_by(rs) {
        out.field(0, "Controlled By", &owner);
    }
    out.field(
        0,
        "Replicas",
        &format!(
            "{} current / {} desired",
            int(rs, &["status", "replicas"]).unwrap_or(0),
            int(rs, &["spec", "replicas"]).unwrap_or(1)
        ),
    );
    describe_pod_template(out, rs);
    conditions_table(
        out,
        rs,
        &[("Type", "type"), ("Status", "status"), ("Reason", "reason")],
        1,
    );
}

/// The Job describer.
fn describe_job(out: &mut Out, job: &Value) {
    name_and_namespace(out, job);
    out.field(
        0,
        "Selector",
        &format_label_selector(at(job, &["spec", "selector"])),
    );
    labels_and_annotations(out, job);
    if let Some(owner) = controlled_by(job) {
        out.field(0, "Controlled By", &owner);
    }
    let spec_int = |f: &str, default: i64| int(job, &["spec", f]).unwrap_or(default);
    out.field(0, "Parallelism", &spec_int("parallelism", 1).to_string());
    out.field(0, "Completions", &spec_int("completions", 1).to_string());
    out.field(
        0,
        "Completion Mode",
        &or(text(job, &["spec", "completionMode"]), "NonIndexed"),
    );
    out.field(0, "Suspend", &flag(job, &["spec", "suspend"]).to_string());
    out.field(0, "Backoff Limit", &spec_int("backoffLimit", 6).to_string());
    let start = text(job, &["status", "startTime"]);
    if !start.is_empty() {
        out.field(0, "Start Time", &rfc1123z(start));
    }
    let completed = text(job, &["status", "completionTime"]);
    if !completed.is_empty() {
        out.field(0, "Completed At", &rfc1123z(completed));
        if let (Some(s), Some(c)) = (parse_time(start), parse_time(completed)) {
            out.field(0, "Duration", &human_duration(c.signed_duration_since(s)));
        }
    }
    if let Some(d) = int(job, &["spec", "activeDeadlineSeconds"]) {
        out.field(0, "Active Deadline Seconds", &format!("{d}s"));
    }
    let count = |f: &str| int(job, &["status", f]).unwrap_or(0);
    let statuses = match int(job, &["status", "ready"]) {
        Some(ready) => format!(
            "{} Active ({ready} Ready) / {} Succeeded / {} Failed",
            count("active"),
            count("succeeded"),
            count("failed")
        ),
        None => format!(
            "{} Active / {} Succeeded / {} Failed",
            count("active"),
            count("succeeded"),
            count("failed")
        ),
    };
    out.field(0, "Pods Statuses", &statuses);
    describe_pod_template(out, job);
}

/// The Service describer (without the Endpoints lines, which need the
/// Endpoints object).
fn describe_service(out: &mut Out, svc: &Value) {
    name_and_namespace(out, svc);
    labels_and_annotations(out, svc);
    out.field(
        0,
        "Selector",
        &format_labels(&string_map(svc, &["spec", "selector"])),
    );
    let type_ = service_type(svc);
    out.field(0, "Type", &type_);
    let policy = text(svc, &["spec", "ipFamilyPolicy"]);
    if !policy.is_empty() {
        out.field(0, "IP Family Policy", policy);
    }
    let join = |f: &str| {
        list(svc, &["spec", f])
            .iter()
            .map(scalar)
            .collect::<Vec<_>>()
            .join(",")
    };
    let families = join("ipFamilies");
    if !families.is_empty() {
        out.field(0, "IP Families", &families);
    }
    out.field(0, "IP", text(svc, &["spec", "clusterIP"]));
    let ips = join("clusterIPs");
    if !ips.is_empty() {
        out.field(0, "IPs", &ips);
    }
    let external = join("externalIPs");
    if !external.is_empty() {
        out.field(0, "External IPs", &external);
    }
    let lb_ip = text(svc, &["spec", "loadBalancerIP"]);
    if !lb_ip.is_empty() {
        out.field(0, "IP", lb_ip);
    }
    if type_ == "ExternalName" {
        out.field(0, "External Name", text(svc, &["spec", "externalName"]));
    }
    let ingress: Vec<String> = list(svc, &["status", "loadBalancer", "ingress"])
        .iter()
        .map(|i| or(text(i, &["ip"]), text(i, &["hostname"])))
        .filter(|s| !s.is_empty())
        .collect();
    if !ingress.is_empty() {
        out.field(0, "LoadBalancer Ingress", &ingress.join(", "));
    }
    for p in list(svc, &["spec", "ports"]) {
        let name = or(text(p, &["name"]), "<unset>");
        let protocol = or(text(p, &["protocol"]), "TCP");
        let port = scalar_at(p, &["port"]);
        out.line(0, &format!("Port:\t{name}\t{port}/{protocol}"));
        let target = or(scalar_at(p, &["targetPort"]), &port);
        out.field(0, "TargetPort", &format!("{target}/{protocol}"));
        if let Some(np) = int(p, &["nodePort"]).filter(|n| *n != 0) {
            out.line(0, &format!("NodePort:\t{name}\t{np}/{protocol}"));
        }
    }
    out.field(
        0,
        "Session Affinity",
        &or(text(svc, &["spec", "sessionAffinity"]), "None"),
    );
    let etp = text(svc, &["spec", "externalTrafficPolicy"]);
    if !etp.is_empty() {
        out.field(0, "External Traffic Policy", etp);
    }
}

/// The Node describer.
fn describe_node(out: &mut Out, node: &Value) {
    out.field(0, "Name", text(node, &["metadata", "name"]));
    out.field(0, "Roles", &or(node_roles(node).join(","), "<none>"));
    labels_and_annotations(out, node);
    out.field(
        0,
        "CreationTimestamp",
        &rfc1123z(text(node, &["metadata", "creationTimestamp"])),
    );
    let mut taints: Vec<(String, String)> = list(node, &["spec", "taints"])
        .iter()
        .map(|t| {
            let (k, v, e) = (text(t, &["key"]), text(t, &["value"]), text(t, &["effect"]));
            let s = if v.is_empty() {
                format!("{k}:{e}")
            } else {
                format!("{k}={v}:{e}")
            };
            (format!("{e},{k}"), s)
        })
        .collect();
    taints.sort();
    if taints.is_empty() {
        out.line(0, "Taints:\t<none>");
    }
    for (i, (_, t)) in taints.iter().enumerate() {
        let head = if i == 0 { "Taints:" } else { "" };
        out.line(0, &format!("{head}\t{t}"));
    }
    out.field(
        0,
        "Unschedulable",
        &flag(node, &["spec", "unschedulable"]).to_string(),
    );
    conditions_table(
        out,
        node,
        &[
            ("Type", "type"),
            ("Status", "status"),
            ("LastHeartbeatTime", "lastHeartbeatTime"),
            ("LastTransitionTime", "lastTransitionTime"),
            ("Reason", "reason"),
            ("Message", "message"),
        ],
        5,
    );
    out.line(0, "Addresses:");
    for a in list(node, &["status", "addresses"]) {
        out.field(1, text(a, &["type"]), text(a, &["address"]));
    }
    for (key, field) in [("Capacity", "capacity"), ("Allocatable", "allocatable")] {
        let res = string_map(node, &["status", field]);
        if !res.is_empty() {
            out.line(0, &format!("{key}:"));
            for (k, v) in &res {
                out.field(1, k, v);
            }
        }
    }
    if at(node, &["status", "nodeInfo"]).is_some_and(Value::is_object) {
        out.line(0, "System Info:");
        for (key, field) in [
            ("Machine ID", "machineID"),
            ("System UUID", "systemUUID"),
            ("Boot ID", "bootID"),
            ("Kernel Version", "kernelVersion"),
            ("OS Image", "osImage"),
            ("Operating System", "operatingSystem"),
            ("Architecture", "architecture"),
            ("Container Runtime Version", "containerRuntimeVersion"),
            ("Kubelet Version", "kubeletVersion"),
            ("Kube-Proxy Version", "kubeProxyVersion"),
        ] {
            out.field(1, key, text(node, &["status", "nodeInfo", field]));
        }
    }
    let cidr = text(node, &["spec", "podCIDR"]);
    if !cidr.is_empty() {
        out.field(0, "PodCIDR", cidr);
        let cidrs: Vec<String> = list(node, &["spec", "podCIDRs"])
            .iter()
            .map(scalar)
            .collect();
        out.field(0, "PodCIDRs", &cidrs.join(","));
    }
    let provider = text(node, &["spec", "providerID"]);
    if !provider.is_empty() {
        out.field(0, "ProviderID", provider);
    }
}

/// The Namespace describer.
fn describe_namespace(out: &mut Out, ns: &Value) {
    out.field(0, "Name", text(ns, &["metadata", "name"]));
    labels_and_annotations(out, ns);
    out.field(0, "Status", &or(text(ns, &["status", "phase"]), "Active"));
}

/// The ConfigMap describer: each data key under a rule, binary data sizes.
fn describe_config_map(out: &mut Out, cm: &Value) {
    name_and_namespace(out, cm);
    labels_and_annotations(out, cm);
    out.line(0, "");
    out.line(0, "Data");
    out.line(0, "====");
    for (k, v) in string_map(cm, &["data"]) {
        out.line(0, &format!("{k}:"));
        out.line(0, "----");
        // Tabs in the value would be taken as columns; show them as spaces.
        out.line(0, &v.replace('\t', "    "));
        out.line(0, "");
    }
    out.line(0, "");
    out.line(0, "BinaryData");
    out.line(0, "====");
    for (k, v) in string_map(cm, &["binaryData"]) {
        out.line(0, &format!("{k}: {} bytes", base64_len(&v)));
    }
    out.line(0, "");
}

/// The Secret describer: type and the size of each value, never the values.
fn describe_secret(out: &mut Out, secret: &Value) {
    name_and_namespace(out, secret);
    labels_and_annotations(out, secret);
    out.line(0, "");
    out.field(0, "Type", &or(text(secret, &["type"]), "Opaque"));
    out.line(0, "");
    out.line(0, "Data");
    out.line(0, "====");
    let mut sizes: Vec<(String, usize)> = string_map(secret, &["data"])
        .into_iter()
        .map(|(k, v)| (k, base64_len(&v)))
        .collect();
    for (k, v) in string_map(secret, &["stringData"]) {
        if !sizes.iter().any(|(key, _)| *key == k) {
            sizes.push((k, v.len()));
        }
    }
    sizes.sort();
    for (k, n) in sizes {
        out.field(0, &k, &format!("{n} bytes"));
    }
}

/// The decoded length of a base64 string.
fn base64_len(s: &str) -> usize {
    let s = s.trim();
    let padding = s.chars().rev().take_while(|c| *c == '=').count();
    (s.len() * 3 / 4).saturating_sub(padding)
}

/// The fallback describer: metadata, then each other top-level field
/// (spec and data first, status last) as indented YAML.
fn describe_generic(out: &mut Out, kind: &str, obj: &Value) {
    name_and_namespace(out, obj);
    labels_and_annotations(out, obj);
    if kind == "NodePool" {
        out.field(0, "Machine", &machine(obj));
        out.field(0, "Size", &super::pool::size(obj));
        if let Some(m) = obj.pointer("/status/message").and_then(Value::as_str) {
            out.field(0, "Autoscaler", m);
        }
        for (title, lines) in super::pool::activity(obj) {
            out.line(0, &format!("{title}:"));
            for l in lines {
                out.line(1, &l);
            }
        }
    }
    let Some(map) = obj.as_object() else {
        return;
    };
    let skip = ["apiVersion", "kind", "metadata"];
    let rank = |k: &str| match k {
        "spec" => 0,
        "data" => 1,
        "status" => 3,
        _ => 2,
    };
    let mut keys: Vec<&String> = map.keys().filter(|k| !skip.contains(&k.as_str())).collect();
    keys.sort_by(|a, b| rank(a).cmp(&rank(b)).then(a.cmp(b)));
    for key in keys {
        let value = &map[key.as_str()];
        let title = title_case(key);
        let empty = match value {
            Value::Null => true,
            Value::Object(m) => m.is_empty(),
            Value::Array(a) => a.is_empty(),
            Value::String(s) => s.is_empty(),
            _ => false,
        };
        if empty {
            out.field(0, &title, "<none>");
        } else if value.is_object() || value.is_array() {
            out.line(0, &format!("{title}:"));
            let yaml = serde_yaml::to_string(value).unwrap_or_else(|e| format!("<{e}>\n"));
            for l in yaml.lines() {
                // Tabs in the YAML would be taken as columns; show them as spaces.
                out.line(1, &l.replace('\t', "    "));
            }
        } else {
            out.field(0, &title, &scalar(value));
        }
    }
}

/// "involvedObject" -> "InvolvedObject".
fn title_case(key: &str) -> String {
    let mut chars = key.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The timestamp events are sorted by: lastTimestamp, else the first-seen time.
fn event_sort_time(ev: &Value) -> Option<DateTime<Utc>> {
    let last = text(ev, &["lastTimestamp"]);
    let t = if last.is_empty() {
        event_first_seen(ev).unwrap_or("")
    } else {
        last
    };
    parse_time(t)
}

/// kubectl's `DescribeEvents`: "Events:\t<none>", or a Type Reason Age From
/// Message table sorted by time, Age as "5m" or "2m (x3 over 10m)".
fn describe_events(out: &mut Out, events: &[Value], now: DateTime<Utc>) {
    if events.is_empty() {
        out.line(0, "Events:\t<none>");
        return;
    }
    let mut sorted: Vec<&Value> = events.iter().collect();
    sorted.sort_by_key(|e| event_sort_time(e));
    out.line(0, "Events:");
    out.line(1, "Type\tReason\tAge\tFrom\tMessage");
    out.line(1, "----\t------\t----\t----\t-------");
    for e in sorted {
        let first = age(event_first_seen(e), now);
        let count = int(e, &["count"]).unwrap_or(0);
        let interval = if at(e, &["series"]).is_some_and(Value::is_object) {
            format!(
                "{} (x{} over {first})",
                age(Some(text(e, &["series", "lastObservedTime"])), now),
                int(e, &["series", "count"]).unwrap_or(0)
            )
        } else if count > 1 {
            format!(
                "{} (x{count} over {first})",
                age(Some(text(e, &["lastTimestamp"])), now)
            )
        } else {
            first
        };
        let source = or(
            text(e, &["source", "component"]),
            text(e, &["reportingController"]),
        );
        out.line(
            1,
            &format!(
                "{}\t{}\t{interval}\t{source}\t{}",
                one_line(text(e, &["type"])),
                one_line(text(e, &["reason"])),
                one_line(text(e, &["message"]).trim())
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_lengths() {
        assert_eq!(base64_len("cGFzc3dvcmQ="), 8);
        assert_eq!(base64_len("YQ=="), 1);
        assert_eq!(base64_len("YWJj"), 3);
        assert_eq!(base64_len(""), 0);
    }

    #[test]
    fn shorten_cuts_long_values() {
        assert_eq!(shorten("abcdef", 3), "abc...");
        assert_eq!(shorten("abc", 3), "abc");
    }
}
