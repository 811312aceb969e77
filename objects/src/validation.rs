//! Validation rules per kind, with Kubernetes' field paths and messages.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;

use crate::admit::{quote, FieldError};
use crate::apps::{Deployment, ReplicaSet};
use crate::batch::Job;
use crate::core::{
    ConfigMap, Container, Endpoints, Event, Namespace, Node, Pod, PodSpec, PodTemplateSpec, Probe,
    ReplicationController, Secret, Service, Taint, Volume,
};
use crate::meta::{IntOrString, LabelSelector, ObjectMeta};
use crate::networking::{Ingress, IngressBackend};
use crate::nodepool::{NodePool, NODE_POOL_LABEL};
use crate::registry::ResourceInfo;
use crate::selector::Selector;
use crate::{names, quantity};

type Errors = Vec<FieldError>;

mod workloads;
pub(crate) use workloads::{cron_job, cron_job_update, daemon_set, daemon_set_update};
pub use workloads::{parse_schedule, parse_time_zone};

const PORT_RANGE: &str = "must be between 1 and 65535, inclusive";
const NON_NEGATIVE: &str = "must be greater than or equal to 0";
const IMMUTABLE: &str = "field is immutable";
const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
const TAINT_EFFECTS: &[&str] = &["NoExecute", "NoSchedule", "PreferNoSchedule"];
const MAX_ANNOTATIONS_SIZE: usize = 256 * 1024;
const MAX_DATA_SIZE: usize = 1024 * 1024;
const IP_MSG: &str = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)";

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// One Invalid error per message of a syntax check.
fn check(errs: &mut Errors, path: &str, value: &str, messages: Vec<String>) {
    for m in messages {
        errs.push(FieldError::invalid_str(path, value, m));
    }
}

fn non_negative(errs: &mut Errors, path: &str, v: i64) {
    if v < 0 {
        errs.push(FieldError::invalid(path, v.to_string(), NON_NEGATIVE));
    }
}

fn port_number(errs: &mut Errors, path: &str, port: i32) {
    if !(1..=65535).contains(&port) {
        errs.push(FieldError::invalid(path, port.to_string(), PORT_RANGE));
    }
}

fn one_of(errs: &mut Errors, path: &str, value: &str, supported: &[&str]) {
    if !supported.contains(&value) {
        errs.push(FieldError::not_supported(path, value, supported));
    }
}

fn quantity_field(errs: &mut Errors, path: &str, q: &str) -> Option<f64> {
    match quantity::parse(q) {
        Some(v) => Some(v),
        None => {
            errs.push(FieldError::invalid_str(path, q, quantity::QUANTITY_MSG));
            None
        }
    }
}

/// The check of a kind's names.
fn name_check(info: &ResourceInfo) -> fn(&str) -> Vec<String> {
    match info.kind {
        "Namespace" | "NodePool" => names::dns1123_label,
        "Service" => names::dns1035_label,
        // RBAC objects are named like "system:node" (a path segment).
        "Role" | "ClusterRole" | "RoleBinding" | "ClusterRoleBinding" => names::path_segment,
        _ => names::dns1123_subdomain,
    }
}

pub(crate) fn labels(errs: &mut Errors, path: &str, labels: &BTreeMap<String, String>) {
    for (k, v) in labels {
        check(errs, path, k, names::qualified_name(k));
        check(errs, path, v, names::label_value(v));
    }
}

fn annotations(errs: &mut Errors, path: &str, annotations: &BTreeMap<String, String>) {
    let mut size = 0;
    for (k, v) in annotations {
        check(
            errs,
            path,
            k,
            names::qualified_name(&k.to_ascii_lowercase()),
        );
        size += k.len() + v.len();
    }
    if size > MAX_ANNOTATIONS_SIZE {
        errs.push(FieldError::too_long(path, MAX_ANNOTATIONS_SIZE));
    }
}

/// Rules of every object's metadata.
pub(crate) fn object_meta(info: &ResourceInfo, m: &ObjectMeta) -> Errors {
    let mut errs = Vec::new();
    let name_fn = name_check(info);
    if m.name.is_empty() {
        if m.generate_name.is_empty() {
            errs.push(FieldError::required(
                "metadata.name",
                "name or generateName is required",
            ));
        }
    } else {
        check(&mut errs, "metadata.name", &m.name, name_fn(&m.name));
    }
    if !m.generate_name.is_empty() {
        let prefix = m
            .generate_name
            .strip_suffix('-')
            .filter(|p| !p.is_empty())
            .unwrap_or(&m.generate_name);
        check(
            &mut errs,
            "metadata.generateName",
            &m.generate_name,
            name_fn(prefix),
        );
    }
    if info.namespaced {
        if !m.namespace.is_empty() {
            check(
                &mut errs,
                "metadata.namespace",
                &m.namespace,
                names::dns1123_label(&m.namespace),
            );
        }
    } else if !m.namespace.is_empty() {
        errs.push(FieldError::forbidden(
            "metadata.namespace",
            "not allowed on this type",
        ));
    }
    labels(&mut errs, "metadata.labels", &m.labels);
    annotations(&mut errs, "metadata.annotations", &m.annotations);
    let mut controllers = 0;
    for (i, r) in m.owner_references.iter().enumerate() {
        let p = format!("metadata.ownerReferences[{i}]");
        for (field, value) in [
            ("apiVersion", &r.api_version),
            ("kind", &r.kind),
            ("name", &r.name),
            ("uid", &r.uid),
        ] {
            if value.is_empty() {
                errs.push(FieldError::required(format!("{p}.{field}"), ""));
            }
        }
        if r.controller == Some(true) {
            controllers += 1;
        }
    }
    if controllers > 1 {
        errs.push(FieldError::invalid(
            "metadata.ownerReferences",
            controllers.to_string(),
            "Only one reference can have Controller set to true",
        ));
    }
    for (i, f) in m.finalizers.iter().enumerate() {
        check(
            &mut errs,
            &format!("metadata.finalizers[{i}]"),
            f,
            names::qualified_name(f),
        );
    }
    errs
}

// ---------------------------------------------------------------- selectors

fn label_selector(errs: &mut Errors, path: &str, s: &LabelSelector) {
    labels(errs, &format!("{path}.matchLabels"), &s.match_labels);
    for (i, e) in s.match_expressions.iter().enumerate() {
        let p = format!("{path}.matchExpressions[{i}]");
        check(
            errs,
            &format!("{p}.key"),
            &e.key,
            names::qualified_name(&e.key),
        );
        match e.operator.as_str() {
            "In" | "NotIn" => {
                if e.values.is_empty() {
                    errs.push(FieldError::required(
                        format!("{p}.values"),
                        "must be specified when `operator` is 'In' or 'NotIn'",
                    ));
                }
            }
            "Exists" | "DoesNotExist" => {
                if !e.values.is_empty() {
                    errs.push(FieldError::forbidden(
                        format!("{p}.values"),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    ));
                }
            }
            op => errs.push(FieldError::not_supported(
                format!("{p}.operator"),
                op,
                &["In", "NotIn", "Exists", "DoesNotExist"],
            )),
        }
        for (j, v) in e.values.iter().enumerate() {
            check(errs, &format!("{p}.values[{j}]"), v, names::label_value(v));
        }
    }
}

/// The selector must be valid, non-empty (unless `allow_empty`) and match
/// the template's labels.
fn selector_and_template(
    errs: &mut Errors,
    selector: Option<&LabelSelector>,
    template: &PodTemplateSpec,
    kind: &str,
    allow_empty: bool,
) {
    let Some(sel) = selector else {
        errs.push(FieldError::required("spec.selector", ""));
        return;
    };
    let before = errs.len();
    label_selector(errs, "spec.selector", sel);
    if errs.len() > before {
        return;
    }
    if !allow_empty && sel.match_labels.is_empty() && sel.match_expressions.is_empty() {
        errs.push(FieldError::invalid(
            "spec.selector",
            json(sel),
            format!("empty selector is invalid for {kind}"),
        ));
        return;
    }
    if let Ok(s) = Selector::from_label_selector(sel) {
        if !s.matches(&template.metadata.labels) {
            errs.push(FieldError::invalid(
                "spec.template.metadata.labels",
                json(&template.metadata.labels),
                "`selector` does not match template `labels`",
            ));
        }
    }
}

// ---------------------------------------------------------------- pod specs

fn port_or_name(errs: &mut Errors, path: &str, port: &IntOrString) {
    match port {
        IntOrString::Int(n) => port_number(errs, path, *n),
        IntOrString::String(s) => check(errs, path, s, names::port_name(s)),
    }
}

fn probe(errs: &mut Errors, path: &str, p: &Probe, must_succeed_once: bool) {
    let handlers: Vec<&str> = [
        ("exec", p.exec.is_some()),
        ("httpGet", p.http_get.is_some()),
        ("tcpSocket", p.tcp_socket.is_some()),
    ]
    .into_iter()
    .filter(|(_, set)| *set)
    .map(|(n, _)| n)
    .collect();
    match handlers.as_slice() {
        [] => errs.push(FieldError::required(path, "must specify a handler type")),
        [_] => {}
        [_, second, ..] => errs.push(FieldError::forbidden(
            format!("{path}.{second}"),
            "may not specify more than 1 handler type",
        )),
    }
    if let Some(e) = &p.exec {
        if e.command.is_empty() {
            errs.push(FieldError::required(format!("{path}.exec.command"), ""));
        }
    }
    if let Some(h) = &p.http_get {
        port_or_name(errs, &format!("{path}.httpGet.port"), &h.port);
        one_of(
            errs,
            &format!("{path}.httpGet.scheme"),
            &h.scheme,
            &["HTTP", "HTTPS"],
        );
    }
    if let Some(t) = &p.tcp_socket {
        port_or_name(errs, &format!("{path}.tcpSocket.port"), &t.port);
    }
    for (field, v) in [
        ("initialDelaySeconds", p.initial_delay_seconds),
        ("timeoutSeconds", p.timeout_seconds),
        ("periodSeconds", p.period_seconds),
        ("successThreshold", p.success_threshold),
        ("failureThreshold", p.failure_threshold),
    ] {
        non_negative(errs, &format!("{path}.{field}"), v.into());
    }
    if must_succeed_once && p.success_threshold != 1 {
        errs.push(FieldError::invalid(
            format!("{path}.successThreshold"),
            p.success_threshold.to_string(),
            "must be 1",
        ));
    }
}

const FIELD_REFS: &[&str] = &[
    "metadata.annotations",
    "metadata.labels",
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.podIP",
    "status.podIPs",
];

fn field_ref_supported(path: &str) -> bool {
    FIELD_REFS.contains(&path)
        || ["metadata.labels['", "metadata.annotations['"]
            .iter()
            .any(|p| path.starts_with(p) && path.ends_with("']"))
}

/// Names shared by the containers of a pod.
struct PodNames<'a> {
    volumes: BTreeSet<&'a str>,
    containers: BTreeSet<&'a str>,
    ports: BTreeSet<&'a str>,
}

fn container<'a>(
    errs: &mut Errors,
    path: &str,
    c: &'a Container,
    init: bool,
    seen: &mut PodNames<'a>,
) {
    if c.name.is_empty() {
        errs.push(FieldError::required(format!("{path}.name"), ""));
    } else {
        check(
            errs,
            &format!("{path}.name"),
            &c.name,
            names::dns1123_label(&c.name),
        );
        if !seen.containers.insert(&c.name) {
            errs.push(FieldError::duplicate(
                format!("{path}.name"),
                quote(&c.name),
            ));
        }
    }
    if c.image.trim().is_empty() {
        errs.push(FieldError::required(format!("{path}.image"), ""));
    }
    for (j, p) in c.ports.iter().enumerate() {
        let pp = format!("{path}.ports[{j}]");
        port_number(errs, &format!("{pp}.containerPort"), p.container_port);
        if p.host_port != 0 {
            port_number(errs, &format!("{pp}.hostPort"), p.host_port);
        }
        one_of(errs, &format!("{pp}.protocol"), &p.protocol, PROTOCOLS);
        if !p.name.is_empty() {
            check(
                errs,
                &format!("{pp}.name"),
                &p.name,
                names::port_name(&p.name),
            );
            if !seen.ports.insert(&p.name) {
                errs.push(FieldError::duplicate(format!("{pp}.name"), quote(&p.name)));
            }
        }
    }
    for (j, e) in c.env.iter().enumerate() {
        let ep = format!("{path}.env[{j}]");
        if e.name.is_empty() {
            errs.push(FieldError::required(format!("{ep}.name"), ""));
        } else if e.name.contains('=') || !e.name.chars().all(|c| c.is_ascii_graphic() || c == ' ')
        {
            errs.push(FieldError::invalid_str(
                format!("{ep}.name"),
                &e.name,
                "a valid environment variable name must consist only of printable ASCII characters other than '='",
            ));
        }
        let Some(from) = &e.value_from else { continue };
        let vp = format!("{ep}.valueFrom");
        if !e.value.is_empty() {
            errs.push(FieldError::invalid_str(
                &vp,
                "",
                "may not be specified when `value` is not empty",
            ));
        }
        let count = [
            from.config_map_key_ref.is_some(),
            from.secret_key_ref.is_some(),
            from.field_ref.is_some(),
        ]
        .iter()
        .filter(|s| **s)
        .count();
        if count == 0 {
            errs.push(FieldError::invalid_str(
                &vp,
                "",
                "must specify one of: `fieldRef`, `configMapKeyRef` or `secretKeyRef`",
            ));
        } else if count > 1 {
            errs.push(FieldError::invalid_str(
                &vp,
                "",
                "may not have more than one field specified at a time",
            ));
        }
        for (field, r) in [
            ("configMapKeyRef", &from.config_map_key_ref),
            ("secretKeyRef", &from.secret_key_ref),
        ] {
            let Some(r) = r else { continue };
            if r.name.is_empty() {
                errs.push(FieldError::required(format!("{vp}.{field}.name"), ""));
            }
            if r.key.is_empty() {
                errs.push(FieldError::required(format!("{vp}.{field}.key"), ""));
            } else {
                check(
                    errs,
                    &format!("{vp}.{field}.key"),
                    &r.key,
                    names::config_key(&r.key),
                );
            }
        }
        if let Some(f) = &from.field_ref {
            let fp = format!("{vp}.fieldRef.fieldPath");
            if f.field_path.is_empty() {
                errs.push(FieldError::required(fp, ""));
            } else if !field_ref_supported(&f.field_path) {
                errs.push(FieldError::not_supported(fp, &f.field_path, FIELD_REFS));
            }
        }
    }
    let mut limits = BTreeMap::new();
    for (name, q) in &c.resources.limits {
        let p = format!("{path}.resources.limits[{name}]");
        if let Some(v) = quantity_field(errs, &p, q) {
            if v < 0.0 {
                errs.push(FieldError::invalid_str(&p, q, NON_NEGATIVE));
            }
            limits.insert(name.as_str(), (v, q));
        }
    }
    for (name, q) in &c.resources.requests {
        let p = format!("{path}.resources.requests[{name}]");
        if let Some(v) = quantity_field(errs, &p, q) {
            if v < 0.0 {
                errs.push(FieldError::invalid_str(&p, q, NON_NEGATIVE));
            }
            if let Some((limit, lq)) = limits.get(name.as_str()) {
                if v > *limit {
                    errs.push(FieldError::invalid_str(
                        &p,
                        q,
                        format!("must be less than or equal to {name} limit of {lq}"),
                    ));
                }
            }
        }
    }
    let mut mount_paths = BTreeSet::new();
    for (j, m) in c.volume_mounts.iter().enumerate() {
        let mp = format!("{path}.volumeMounts[{j}]");
        if m.name.is_empty() {
            errs.push(FieldError::required(format!("{mp}.name"), ""));
        } else if !seen.volumes.contains(m.name.as_str()) {
            errs.push(FieldError::not_found(format!("{mp}.name"), &m.name));
        }
        if m.mount_path.is_empty() {
            errs.push(FieldError::required(format!("{mp}.mountPath"), ""));
        } else if !mount_paths.insert(m.mount_path.as_str()) {
            errs.push(FieldError::invalid_str(
                format!("{mp}.mountPath"),
                &m.mount_path,
                "must be unique",
            ));
        }
        relative_path(errs, &format!("{mp}.subPath"), &m.sub_path);
    }
    for (field, p) in [
        ("livenessProbe", &c.liveness_probe),
        ("readinessProbe", &c.readiness_probe),
        ("startupProbe", &c.startup_probe),
    ] {
        let Some(p) = p else { continue };
        if init {
            errs.push(FieldError::forbidden(
                format!("{path}.{field}"),
                "may not be set for init containers",
            ));
        } else {
            probe(
                errs,
                &format!("{path}.{field}"),
                p,
                field != "readinessProbe",
            );
        }
    }
    if c.image_pull_policy.is_empty() {
        errs.push(FieldError::required(format!("{path}.imagePullPolicy"), ""));
    } else {
        one_of(
            errs,
            &format!("{path}.imagePullPolicy"),
            &c.image_pull_policy,
            &["Always", "IfNotPresent", "Never"],
        );
    }
}

/// A path that must be relative and stay inside (empty is fine).
fn relative_path(errs: &mut Errors, path: &str, p: &str) {
    if p.starts_with('/') {
        errs.push(FieldError::invalid_str(path, p, "must be a relative path"));
    }
    if p.split('/').any(|s| s == "..") {
        errs.push(FieldError::invalid_str(path, p, "must not contain '..'"));
    }
}

fn default_mode(errs: &mut Errors, path: &str, mode: Option<i32>) {
    if let Some(m) = mode {
        if !(0..=0o777).contains(&m) {
            errs.push(FieldError::invalid(
                path,
                m.to_string(),
                "must be a number between 0 and 0777 (octal), both inclusive",
            ));
        }
    }
}

fn items(errs: &mut Errors, path: &str, items: &[crate::core::KeyToPath]) {
    for (k, item) in items.iter().enumerate() {
        let ip = format!("{path}.items[{k}]");
        if item.key.is_empty() {
            errs.push(FieldError::required(format!("{ip}.key"), ""));
        }
        if item.path.is_empty() {
            errs.push(FieldError::required(format!("{ip}.path"), ""));
        }
        relative_path(errs, &format!("{ip}.path"), &item.path);
        default_mode(errs, &format!("{ip}.mode"), item.mode);
    }
}

fn volume(errs: &mut Errors, path: &str, v: &Volume) {
    let sources: Vec<&str> = [
        ("emptyDir", v.empty_dir.is_some()),
        ("configMap", v.config_map.is_some()),
        ("secret", v.secret.is_some()),
        ("hostPath", v.host_path.is_some()),
    ]
    .into_iter()
    .filter(|(_, set)| *set)
    .map(|(n, _)| n)
    .collect();
    match sources.as_slice() {
        [] => errs.push(FieldError::required(path, "must specify a volume type")),
        [_] => {}
        [_, second, ..] => errs.push(FieldError::forbidden(
            format!("{path}.{second}"),
            "may not specify more than 1 volume type",
        )),
    }
    if let Some(e) = &v.empty_dir {
        one_of(
            errs,
            &format!("{path}.emptyDir.medium"),
            &e.medium,
            &["", "Memory"],
        );
        if !e.size_limit.is_empty() {
            quantity_field(errs, &format!("{path}.emptyDir.sizeLimit"), &e.size_limit);
        }
    }
    if let Some(c) = &v.config_map {
        if c.name.is_empty() {
            errs.push(FieldError::required(format!("{path}.configMap.name"), ""));
        }
        items(errs, &format!("{path}.configMap"), &c.items);
        default_mode(
            errs,
            &format!("{path}.configMap.defaultMode"),
            c.default_mode,
        );
    }
    if let Some(s) = &v.secret {
        if s.secret_name.is_empty() {
            errs.push(FieldError::required(
                format!("{path}.secret.secretName"),
                "",
            ));
        }
        items(errs, &format!("{path}.secret"), &s.items);
        default_mode(errs, &format!("{path}.secret.defaultMode"), s.default_mode);
    }
    if let Some(h) = &v.host_path {
        if h.path.is_empty() {
            errs.push(FieldError::required(format!("{path}.hostPath.path"), ""));
        }
        one_of(
            errs,
            &format!("{path}.hostPath.type"),
            &h.type_,
            &[
                "",
                "DirectoryOrCreate",
                "Directory",
                "FileOrCreate",
                "File",
                "Socket",
                "CharDevice",
                "BlockDevice",
            ],
        );
    }
}

/// A pod spec at `path` ("spec" or "spec.template.spec"), whose
/// restartPolicy must be one of `restart_policies`.
pub(crate) fn pod_spec(errs: &mut Errors, path: &str, spec: &PodSpec, restart_policies: &[&str]) {
    let mut seen = PodNames {
        volumes: BTreeSet::new(),
        containers: BTreeSet::new(),
        ports: BTreeSet::new(),
    };
    for (i, v) in spec.volumes.iter().enumerate() {
        let vp = format!("{path}.volumes[{i}]");
        if v.name.is_empty() {
            errs.push(FieldError::required(format!("{vp}.name"), ""));
        } else {
            check(
                errs,
                &format!("{vp}.name"),
                &v.name,
                names::dns1123_label(&v.name),
            );
            if !seen.volumes.insert(&v.name) {
                errs.push(FieldError::duplicate(format!("{vp}.name"), quote(&v.name)));
            }
        }
        volume(errs, &vp, v);
    }
    if spec.containers.is_empty() {
        errs.push(FieldError::required(format!("{path}.containers"), ""));
    }
    for (i, c) in spec.containers.iter().enumerate() {
        container(
            errs,
            &format!("{path}.containers[{i}]"),
            c,
            false,
            &mut seen,
        );
    }
    for (i, c) in spec.init_containers.iter().enumerate() {
        container(
            errs,
            &format!("{path}.initContainers[{i}]"),
            c,
            true,
            &mut seen,
        );
    }
    let rp = format!("{path}.restartPolicy");
    if spec.restart_policy.is_empty() {
        let list: Vec<String> = restart_policies.iter().map(|s| quote(s)).collect();
        errs.push(FieldError::required(
            rp,
            format!("valid values: {}", list.join(", ")),
        ));
    } else {
        one_of(errs, &rp, &spec.restart_policy, restart_policies);
    }
    one_of(
        errs,
        &format!("{path}.dnsPolicy"),
        &spec.dns_policy,
        &["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"],
    );
    validate_dns_config(errs, path, spec);
    validate_host_aliases(errs, path, spec);
    crate::scheduling::validate_pod_scheduling(
        errs,
        path,
        spec.affinity.as_ref(),
        &spec.topology_spread_constraints,
    );
    if let Some(g) = spec.termination_grace_period_seconds {
        non_negative(errs, &format!("{path}.terminationGracePeriodSeconds"), g);
    }
    if let Some(a) = spec.active_deadline_seconds {
        if !(1..=i64::from(i32::MAX)).contains(&a) {
            errs.push(FieldError::invalid(
                format!("{path}.activeDeadlineSeconds"),
                a.to_string(),
                "must be between 1 and 2147483647, inclusive",
            ));
        }
    }
    labels(errs, &format!("{path}.nodeSelector"), &spec.node_selector);
    for (field, value, check_fn) in [
        (
            "hostname",
            &spec.hostname,
            names::dns1123_label as fn(&str) -> Vec<String>,
        ),
        ("subdomain", &spec.subdomain, names::dns1123_label),
        (
            "serviceAccountName",
            &spec.service_account_name,
            names::dns1123_subdomain,
        ),
        (
            "schedulerName",
            &spec.scheduler_name,
            names::dns1123_subdomain,
        ),
        ("nodeName", &spec.node_name, names::dns1123_subdomain),
    ] {
        if !value.is_empty() {
            check(errs, &format!("{path}.{field}"), value, check_fn(value));
        }
    }
    for (i, t) in spec.tolerations.iter().enumerate() {
        let tp = format!("{path}.tolerations[{i}]");
        if !t.key.is_empty() {
            check(
                errs,
                &format!("{tp}.key"),
                &t.key,
                names::qualified_name(&t.key),
            );
        }
        match t.operator.as_str() {
            "" | "Equal" => {
                if t.key.is_empty() {
                    errs.push(FieldError::invalid_str(
                        format!("{tp}.operator"),
                        &t.operator,
                        "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
                    ));
                }
                check(
                    errs,
                    &format!("{tp}.value"),
                    &t.value,
                    names::label_value(&t.value),
                );
            }
            "Exists" => {
                if !t.value.is_empty() {
                    errs.push(FieldError::invalid_str(
                        format!("{tp}.operator"),
                        &t.operator,
                        "value must be empty when `operator` is 'Exists'",
                    ));
                }
            }
            op => errs.push(FieldError::not_supported(
                format!("{tp}.operator"),
                op,
                &["Equal", "Exists"],
            )),
        }
        if !t.effect.is_empty() {
            one_of(errs, &format!("{tp}.effect"), &t.effect, TAINT_EFFECTS);
        }
        if t.toleration_seconds.is_some() && t.effect != "NoExecute" {
            errs.push(FieldError::invalid_str(
                format!("{tp}.effect"),
                &t.effect,
                "effect must be 'NoExecute' when `tolerationSeconds` is set",
            ));
        }
    }
}

fn template(errs: &mut Errors, t: &PodTemplateSpec, restart_policies: &[&str]) {
    labels(errs, "spec.template.metadata.labels", &t.metadata.labels);
    annotations(
        errs,
        "spec.template.metadata.annotations",
        &t.metadata.annotations,
    );
    pod_spec(errs, "spec.template.spec", &t.spec, restart_policies);
}

fn taints(errs: &mut Errors, path: &str, taints: &[Taint]) {
    let mut seen = BTreeSet::new();
    for (i, t) in taints.iter().enumerate() {
        let tp = format!("{path}[{i}]");
        if t.key.is_empty() {
            errs.push(FieldError::required(format!("{tp}.key"), ""));
        } else {
            check(
                errs,
                &format!("{tp}.key"),
                &t.key,
                names::qualified_name(&t.key),
            );
        }
        check(
            errs,
            &format!("{tp}.value"),
            &t.value,
            names::label_value(&t.value),
        );
        if t.effect.is_empty() {
            errs.push(FieldError::required(format!("{tp}.effect"), ""));
        } else {
            one_of(errs, &format!("{tp}.effect"), &t.effect, TAINT_EFFECTS);
        }
        if !seen.insert((t.key.as_str(), t.effect.as_str())) {
            errs.push(FieldError::duplicate(
                tp,
                quote(&format!("{}:{}", t.key, t.effect)),
            ));
        }
    }
}

// -------------------------------------------------------------------- kinds

pub(crate) fn namespace(n: &Namespace) -> Errors {
    let mut errs = Vec::new();
    for (i, f) in n.spec.finalizers.iter().enumerate() {
        check(
            &mut errs,
            &format!("spec.finalizers[{i}]"),
            f,
            names::qualified_name(f),
        );
    }
    if let Some(s) = &n.status {
        one_of(
            &mut errs,
            "status.phase",
            &s.phase,
            &["Active", "Terminating"],
        );
    }
    errs
}

pub(crate) fn node(n: &Node) -> Errors {
    let mut errs = Vec::new();
    let cidrs = std::iter::once(("spec.podCIDR".to_string(), &n.spec.pod_cidr)).chain(
        n.spec
            .pod_cidrs
            .iter()
            .enumerate()
            .map(|(i, c)| (format!("spec.podCIDRs[{i}]"), c)),
    );
    for (path, c) in cidrs {
        if !c.is_empty() && !names::is_cidr(c) {
            errs.push(FieldError::invalid_str(
                path,
                c,
                "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
            ));
        }
    }
    taints(&mut errs, "spec.taints", &n.spec.taints);
    errs
}

pub(crate) fn node_update(old: &Node, new: &Node) -> Errors {
    if !old.spec.pod_cidr.is_empty() && old.spec.pod_cidr != new.spec.pod_cidr {
        return vec![FieldError::forbidden(
            "spec.podCIDR",
            "node updates may not change podCIDR except from \"\" to valid",
        )];
    }
    Vec::new()
}

pub(crate) fn node_pool(p: &NodePool) -> Errors {
    let mut errs = Vec::new();
    let s = &p.spec;
    labels(&mut errs, "spec.labels", &s.labels);
    if let Some(v) = s.labels.get(NODE_POOL_LABEL) {
        if *v != p.metadata.name {
            errs.push(FieldError::invalid_str(
                format!("spec.labels[{NODE_POOL_LABEL}]"),
                v,
                "must be the pool's name",
            ));
        }
    }
    taints(&mut errs, "spec.taints", &s.taints);
    for (field, q) in [("cpu", &s.machine.cpu), ("memory", &s.machine.memory)] {
        if !q.is_empty() {
            let path = format!("spec.machine.{field}");
            if let Some(v) = quantity_field(&mut errs, &path, q) {
                if v < 0.0 {
                    errs.push(FieldError::invalid_str(path, q, NON_NEGATIVE));
                }
            }
        }
    }
    if let Some(pods) = s.machine.pods {
        non_negative(&mut errs, "spec.machine.pods", pods.into());
    }
    non_negative(&mut errs, "spec.minSize", s.min_size.into());
    if s.max_size < s.min_size {
        errs.push(FieldError::invalid(
            "spec.maxSize",
            s.max_size.to_string(),
            "must be greater than or equal to spec.minSize",
        ));
    }
    errs
}

pub(crate) fn pod(p: &Pod) -> Errors {
    let mut errs = Vec::new();
    pod_spec(
        &mut errs,
        "spec",
        &p.spec,
        &["Always", "OnFailure", "Never"],
    );
    errs
}

const POD_UPDATE_MSG: &str = "pod updates may not change fields other than `spec.containers[*].image`, `spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` (only additions to existing tolerations)";

pub(crate) fn pod_update(old: &Pod, new: &Pod) -> Errors {
    let mut allowed = old.spec.clone();
    let n = &new.spec;
    for (mine, theirs) in [
        (&mut allowed.containers, &n.containers),
        (&mut allowed.init_containers, &n.init_containers),
    ] {
        if mine.len() == theirs.len() {
            for (o, t) in mine.iter_mut().zip(theirs) {
                o.image = t.image.clone();
            }
        }
    }
    allowed.active_deadline_seconds = n.active_deadline_seconds;
    if allowed
        .tolerations
        .iter()
        .all(|t| n.tolerations.contains(t))
    {
        allowed.tolerations = n.tolerations.clone();
    }
    if allowed != *n {
        return vec![FieldError::forbidden("spec", POD_UPDATE_MSG)];
    }
    Vec::new()
}

pub(crate) fn replication_controller(rc: &ReplicationController) -> Errors {
    let mut errs = Vec::new();
    let s = &rc.spec;
    if let Some(r) = s.replicas {
        non_negative(&mut errs, "spec.replicas", r.into());
    }
    non_negative(
        &mut errs,
        "spec.minReadySeconds",
        s.min_ready_seconds.into(),
    );
    if s.selector.is_empty() {
        errs.push(FieldError::required("spec.selector", ""));
    }
    labels(&mut errs, "spec.selector", &s.selector);
    match &s.template {
        None => errs.push(FieldError::required("spec.template", "")),
        Some(t) => {
            if !s.selector.is_empty()
                && !Selector::from_map(&s.selector).matches(&t.metadata.labels)
            {
                errs.push(FieldError::invalid(
                    "spec.template.metadata.labels",
                    json(&t.metadata.labels),
                    "`selector` does not match template `labels`",
                ));
            }
            template(&mut errs, t, &["Always"]);
        }
    }
    errs
}

pub(crate) fn replica_set(rs: &ReplicaSet) -> Errors {
    let mut errs = Vec::new();
    let s = &rs.spec;
    if let Some(r) = s.replicas {
        non_negative(&mut errs, "spec.replicas", r.into());
    }
    non_negative(
        &mut errs,
        "spec.minReadySeconds",
        s.min_ready_seconds.into(),
    );
    selector_and_template(
        &mut errs,
        s.selector.as_ref(),
        &s.template,
        "replicaset",
        false,
    );
    template(&mut errs, &s.template, &["Always"]);
    errs
}

fn selector_unchanged(old: Option<&LabelSelector>, new: Option<&LabelSelector>) -> Errors {
    if old != new {
        let shown = new.map(json).unwrap_or_else(|| "null".to_string());
        return vec![FieldError::invalid("spec.selector", shown, IMMUTABLE)];
    }
    Vec::new()
}

pub(crate) fn replica_set_update(old: &ReplicaSet, new: &ReplicaSet) -> Errors {
    selector_unchanged(old.spec.selector.as_ref(), new.spec.selector.as_ref())
}

/// A count or percentage of pods: an int >= 0 or "N%".
fn int_or_percent(errs: &mut Errors, path: &str, v: &IntOrString) -> Option<(i64, bool)> {
    match v {
        IntOrString::Int(n) => {
            non_negative(errs, path, (*n).into());
            Some((i64::from(*n), false))
        }
        IntOrString::String(s) => {
            let n = s
                .strip_suffix('%')
                .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|d| d.parse::<i64>().ok());
            if n.is_none() {
                errs.push(FieldError::invalid_str(
                    path,
                    s,
                    "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
                ));
            }
            n.map(|n| (n, true))
        }
    }
}

fn render_int_or_string(v: &IntOrString) -> String {
    match v {
        IntOrString::Int(n) => n.to_string(),
        IntOrString::String(s) => quote(s),
    }
}

pub(crate) fn deployment(d: &Deployment) -> Errors {
    let mut errs = Vec::new();
    let s = &d.spec;
    if let Some(r) = s.replicas {
        non_negative(&mut errs, "spec.replicas", r.into());
    }
    non_negative(
        &mut errs,
        "spec.minReadySeconds",
        s.min_ready_seconds.into(),
    );
    selector_and_template(
        &mut errs,
        s.selector.as_ref(),
        &s.template,
        "deployment",
        false,
    );
    template(&mut errs, &s.template, &["Always"]);
    match s.strategy.type_.as_str() {
        "Recreate" => {
            if s.strategy.rolling_update.is_some() {
                errs.push(FieldError::forbidden(
                    "spec.strategy.rollingUpdate",
                    "may not be specified when strategy `type` is 'Recreate'",
                ));
            }
        }
        "RollingUpdate" => {
            if let Some(ru) = &s.strategy.rolling_update {
                rolling_limits(
                    &mut errs,
                    "spec.strategy.rollingUpdate",
                    ru.max_unavailable.as_ref(),
                    ru.max_surge.as_ref(),
                );
            }
        }
        t => errs.push(FieldError::not_supported(
            "spec.strategy.type",
            t,
            &["Recreate", "RollingUpdate"],
        )),
    }
    if let Some(r) = s.revision_history_limit {
        non_negative(&mut errs, "spec.revisionHistoryLimit", r.into());
    }
    if let Some(p) = s.progress_deadline_seconds {
        non_negative(&mut errs, "spec.progressDeadlineSeconds", p.into());
        if p <= s.min_ready_seconds {
            errs.push(FieldError::invalid(
                "spec.progressDeadlineSeconds",
                p.to_string(),
                "must be greater than minReadySeconds",
            ));
        }
    }
    errs
}

/// maxUnavailable and maxSurge of a rolling update under `prefix`: each a
/// count or a percentage, maxUnavailable at most 100%, not both 0.
fn rolling_limits(
    errs: &mut Errors,
    prefix: &str,
    max_unavailable: Option<&IntOrString>,
    max_surge: Option<&IntOrString>,
) {
    let up = &format!("{prefix}.maxUnavailable");
    let sp = &format!("{prefix}.maxSurge");
    let before = errs.len();
    let unavailable = max_unavailable.and_then(|v| int_or_percent(errs, up, v));
    let surge = max_surge.and_then(|v| int_or_percent(errs, sp, v));
    if let Some((n, true)) = unavailable {
        if n > 100 {
            let shown = max_unavailable
                .map(render_int_or_string)
                .unwrap_or_default();
            errs.push(FieldError::invalid(
                up,
                shown,
                "must not be greater than 100%",
            ));
        }
    }
    let zero = |v: Option<(i64, bool)>| v.is_none_or(|(n, _)| n == 0);
    if zero(unavailable) && zero(surge) && errs.len() == before {
        let shown = max_unavailable
            .map(render_int_or_string)
            .unwrap_or_else(|| "0".into());
        errs.push(FieldError::invalid(
            up,
            shown,
            "may not be 0 when `maxSurge` is 0",
        ));
    }
}

pub(crate) fn deployment_update(old: &Deployment, new: &Deployment) -> Errors {
    selector_unchanged(old.spec.selector.as_ref(), new.spec.selector.as_ref())
}

pub(crate) fn job(j: &Job) -> Errors {
    let mut errs = Vec::new();
    let s = &j.spec;
    for (field, v) in [
        ("parallelism", s.parallelism),
        ("completions", s.completions),
        ("backoffLimit", s.backoff_limit),
        ("ttlSecondsAfterFinished", s.ttl_seconds_after_finished),
    ] {
        if let Some(v) = v {
            non_negative(&mut errs, &format!("spec.{field}"), v.into());
        }
    }
    if let Some(a) = s.active_deadline_seconds {
        non_negative(&mut errs, "spec.activeDeadlineSeconds", a);
    }
    one_of(
        &mut errs,
        "spec.completionMode",
        &s.completion_mode,
        &["NonIndexed", "Indexed"],
    );
    if s.completion_mode == "Indexed" && s.completions.is_none() {
        errs.push(FieldError::required(
            "spec.completions",
            "when completion mode is Indexed",
        ));
    }
    if s.selector.is_some() || s.manual_selector == Some(true) {
        selector_and_template(&mut errs, s.selector.as_ref(), &s.template, "job", false);
    }
    template(&mut errs, &s.template, &["OnFailure", "Never"]);
    errs
}

pub(crate) fn job_update(old: &Job, new: &Job) -> Errors {
    let mut errs = selector_unchanged(old.spec.selector.as_ref(), new.spec.selector.as_ref());
    if old.spec.template != new.spec.template {
        errs.push(FieldError {
            path: "spec.template".into(),
            kind: crate::admit::FieldErrorKind::Invalid,
            value: None,
            detail: IMMUTABLE.into(),
        });
    }
    errs
}

pub(crate) fn service(svc: &Service) -> Errors {
    let mut errs = Vec::new();
    let s = &svc.spec;
    one_of(
        &mut errs,
        "spec.type",
        &s.type_,
        &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
    );
    let external_name = s.type_ == "ExternalName";
    if external_name {
        if s.external_name.is_empty() {
            errs.push(FieldError::required("spec.externalName", ""));
        } else {
            let name = s
                .external_name
                .strip_suffix('.')
                .unwrap_or(&s.external_name);
            check(
                &mut errs,
                "spec.externalName",
                &s.external_name,
                names::dns1123_subdomain(name),
            );
        }
        if !s.cluster_ip.is_empty() {
            errs.push(FieldError::forbidden(
                "spec.clusterIP",
                "may not be set for ExternalName services",
            ));
        }
    } else if s.ports.is_empty() && s.cluster_ip != "None" {
        errs.push(FieldError::required("spec.ports", ""));
    }
    match s.cluster_ip.as_str() {
        "" => {}
        "None" => {
            if matches!(s.type_.as_str(), "NodePort" | "LoadBalancer") {
                errs.push(FieldError::invalid_str(
                    "spec.clusterIP",
                    "None",
                    format!("may not be set to 'None' for {} services", s.type_),
                ));
            }
        }
        ip if !names::is_ipv4(ip) => errs.push(FieldError::invalid_str(
            "spec.clusterIP",
            ip,
            "must be a valid IPv4 address",
        )),
        _ => {}
    }
    one_of(
        &mut errs,
        "spec.sessionAffinity",
        &s.session_affinity,
        &["ClientIP", "None"],
    );
    if let Some(c) = &s.session_affinity_config {
        if s.session_affinity != "ClientIP" {
            errs.push(FieldError::invalid_str(
                "spec.sessionAffinityConfig",
                "",
                "must not be set when `sessionAffinity` is None",
            ));
        } else if let Some(t) = c.client_ip.as_ref().and_then(|c| c.timeout_seconds) {
            if !(1..=86400).contains(&t) {
                errs.push(FieldError::invalid(
                    "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                    t.to_string(),
                    "must be greater than 0 and less than 86400",
                ));
            }
        }
    }
    if !s.internal_traffic_policy.is_empty() {
        one_of(
            &mut errs,
            "spec.internalTrafficPolicy",
            &s.internal_traffic_policy,
            &["Cluster", "Local"],
        );
    }
    if !s.external_traffic_policy.is_empty() {
        if matches!(s.type_.as_str(), "NodePort" | "LoadBalancer") {
            one_of(
                &mut errs,
                "spec.externalTrafficPolicy",
                &s.external_traffic_policy,
                &["Cluster", "Local"],
            );
        } else {
            errs.push(FieldError::invalid_str(
                "spec.externalTrafficPolicy",
                &s.external_traffic_policy,
                "may only be set when `type` is 'NodePort' or 'LoadBalancer'",
            ));
        }
    }
    labels(&mut errs, "spec.selector", &s.selector);
    for (i, ip) in s.external_ips.iter().enumerate() {
        if !names::is_ip(ip) {
            errs.push(FieldError::invalid_str(
                format!("spec.externalIPs[{i}]"),
                ip,
                IP_MSG,
            ));
        }
    }
    if !s.load_balancer_ip.is_empty() && !names::is_ip(&s.load_balancer_ip) {
        errs.push(FieldError::invalid_str(
            "spec.loadBalancerIP",
            &s.load_balancer_ip,
            IP_MSG,
        ));
    }
    let mut port_names = BTreeSet::new();
    let node_ports_allowed = matches!(s.type_.as_str(), "NodePort" | "LoadBalancer");
    for (i, p) in s.ports.iter().enumerate() {
        let pp = format!("spec.ports[{i}]");
        if p.name.is_empty() {
            if s.ports.len() > 1 {
                errs.push(FieldError::required(format!("{pp}.name"), ""));
            }
        } else {
            check(
                &mut errs,
                &format!("{pp}.name"),
                &p.name,
                names::dns1123_label(&p.name),
            );
            if !port_names.insert(p.name.as_str()) {
                errs.push(FieldError::duplicate(format!("{pp}.name"), quote(&p.name)));
            }
        }
        port_number(&mut errs, &format!("{pp}.port"), p.port);
        one_of(&mut errs, &format!("{pp}.protocol"), &p.protocol, PROTOCOLS);
        if let Some(t) = &p.target_port {
            port_or_name(&mut errs, &format!("{pp}.targetPort"), t);
        }
        if p.node_port != 0 {
            if !node_ports_allowed {
                errs.push(FieldError::forbidden(
                    format!("{pp}.nodePort"),
                    format!("may not be used when `type` is '{}'", s.type_),
                ));
            } else if !(30000..=32767).contains(&p.node_port) {
                errs.push(FieldError::invalid(
                    format!("{pp}.nodePort"),
                    p.node_port.to_string(),
                    "provided port is not in the valid range. The range of valid ports is 30000-32767",
                ));
            }
        }
    }
    errs
}

pub(crate) fn service_update(old: &Service, new: &Service) -> Errors {
    let (o, n) = (&old.spec.cluster_ip, &new.spec.cluster_ip);
    if !o.is_empty() && !n.is_empty() && o != n {
        return vec![FieldError::invalid_str("spec.clusterIP", n, IMMUTABLE)];
    }
    Vec::new()
}

pub(crate) fn endpoints(e: &Endpoints) -> Errors {
    let mut errs = Vec::new();
    for (i, s) in e.subsets.iter().enumerate() {
        let sp = format!("subsets[{i}]");
        for (field, list) in [
            ("addresses", &s.addresses),
            ("notReadyAddresses", &s.not_ready_addresses),
        ] {
            for (j, a) in list.iter().enumerate() {
                let ap = format!("{sp}.{field}[{j}]");
                if !names::is_ip(&a.ip) {
                    errs.push(FieldError::invalid_str(format!("{ap}.ip"), &a.ip, IP_MSG));
                }
                if !a.hostname.is_empty() {
                    check(
                        &mut errs,
                        &format!("{ap}.hostname"),
                        &a.hostname,
                        names::dns1123_label(&a.hostname),
                    );
                }
                if !a.node_name.is_empty() {
                    check(
                        &mut errs,
                        &format!("{ap}.nodeName"),
                        &a.node_name,
                        names::dns1123_subdomain(&a.node_name),
                    );
                }
            }
        }
        let mut port_names = BTreeSet::new();
        for (j, p) in s.ports.iter().enumerate() {
            let pp = format!("{sp}.ports[{j}]");
            if p.name.is_empty() {
                if s.ports.len() > 1 {
                    errs.push(FieldError::required(format!("{pp}.name"), ""));
                }
            } else {
                check(
                    &mut errs,
                    &format!("{pp}.name"),
                    &p.name,
                    names::dns1123_label(&p.name),
                );
                if !port_names.insert(p.name.as_str()) {
                    errs.push(FieldError::duplicate(format!("{pp}.name"), quote(&p.name)));
                }
            }
            port_number(&mut errs, &format!("{pp}.port"), p.port);
            one_of(&mut errs, &format!("{pp}.protocol"), &p.protocol, PROTOCOLS);
        }
    }
    errs
}

fn ingress_backend(errs: &mut Errors, path: &str, b: &IngressBackend) {
    let Some(svc) = &b.service else {
        errs.push(FieldError::required(format!("{path}.service"), ""));
        return;
    };
    let sp = format!("{path}.service");
    if svc.name.is_empty() {
        errs.push(FieldError::required(format!("{sp}.name"), ""));
    } else {
        check(
            errs,
            &format!("{sp}.name"),
            &svc.name,
            names::dns1035_label(&svc.name),
        );
    }
    let port = &svc.port;
    let pp = format!("{sp}.port");
    match (port.name.is_empty(), port.number) {
        (false, n) if n != 0 => errs.push(FieldError::invalid(
            pp,
            json(port),
            "cannot set both port name & port number",
        )),
        (false, _) => check(
            errs,
            &format!("{pp}.name"),
            &port.name,
            names::port_name(&port.name),
        ),
        (true, 0) => errs.push(FieldError::required(pp, "port name or number is required")),
        (true, n) => port_number(errs, &format!("{pp}.number"), n),
    }
}

fn ingress_host(errs: &mut Errors, path: &str, host: &str) {
    if names::is_ip(host) {
        errs.push(FieldError::invalid_str(
            path,
            host,
            "must be a DNS name, not an IP address",
        ));
    } else {
        check(errs, path, host, names::wildcard_or_subdomain(host));
    }
}

pub(crate) fn ingress(ing: &Ingress) -> Errors {
    let mut errs = Vec::new();
    let s = &ing.spec;
    if s.default_backend.is_none() && s.rules.is_empty() {
        errs.push(FieldError {
            path: "spec".into(),
            kind: crate::admit::FieldErrorKind::Invalid,
            value: None,
            detail: "either `defaultBackend` or `rules` must be specified".into(),
        });
    }
    if !s.ingress_class_name.is_empty() {
        check(
            &mut errs,
            "spec.ingressClassName",
            &s.ingress_class_name,
            names::dns1123_subdomain(&s.ingress_class_name),
        );
    }
    if let Some(b) = &s.default_backend {
        ingress_backend(&mut errs, "spec.defaultBackend", b);
    }
    for (i, t) in s.tls.iter().enumerate() {
        for (j, h) in t.hosts.iter().enumerate() {
            ingress_host(&mut errs, &format!("spec.tls[{i}].hosts[{j}]"), h);
        }
        if !t.secret_name.is_empty() {
            check(
                &mut errs,
                &format!("spec.tls[{i}].secretName"),
                &t.secret_name,
                names::dns1123_subdomain(&t.secret_name),
            );
        }
    }
    for (i, r) in s.rules.iter().enumerate() {
        let rp = format!("spec.rules[{i}]");
        if !r.host.is_empty() {
            ingress_host(&mut errs, &format!("{rp}.host"), &r.host);
        }
        let Some(http) = &r.http else { continue };
        if http.paths.is_empty() {
            errs.push(FieldError::required(format!("{rp}.http.paths"), ""));
        }
        for (j, p) in http.paths.iter().enumerate() {
            let pp = format!("{rp}.http.paths[{j}]");
            match p.path_type.as_str() {
                "" => errs.push(FieldError::required(
                    format!("{pp}.pathType"),
                    "pathType must be specified",
                )),
                "Exact" | "Prefix" => {
                    if !p.path.starts_with('/') {
                        errs.push(FieldError::invalid_str(
                            format!("{pp}.path"),
                            &p.path,
                            "must be an absolute path",
                        ));
                    }
                }
                "ImplementationSpecific" => {
                    if !p.path.is_empty() && !p.path.starts_with('/') {
                        errs.push(FieldError::invalid_str(
                            format!("{pp}.path"),
                            &p.path,
                            "must be an absolute path",
                        ));
                    }
                }
                t => errs.push(FieldError::not_supported(
                    format!("{pp}.pathType"),
                    t,
                    &["Exact", "ImplementationSpecific", "Prefix"],
                )),
            }
            ingress_backend(&mut errs, &format!("{pp}.backend"), &p.backend);
        }
    }
    errs
}

fn data_keys(errs: &mut Errors, field: &str, data: &BTreeMap<String, String>) -> usize {
    let mut size = 0;
    for (k, v) in data {
        check(errs, &format!("{field}[{k}]"), k, names::config_key(k));
        size += v.len();
    }
    size
}

fn base64_values(
    errs: &mut Errors,
    field: &str,
    data: &BTreeMap<String, String>,
    redact: bool,
) -> usize {
    let mut size = 0;
    for (k, v) in data {
        match base64::engine::general_purpose::STANDARD.decode(v) {
            Ok(bytes) => size += bytes.len(),
            Err(_) => {
                let shown = if redact {
                    "<secret contents redacted>"
                } else {
                    v.as_str()
                };
                errs.push(FieldError::invalid_str(
                    format!("{field}[{k}]"),
                    shown,
                    "a valid base64 string is required",
                ));
            }
        }
    }
    size
}

pub(crate) fn config_map(c: &ConfigMap) -> Errors {
    let mut errs = Vec::new();
    let mut size = data_keys(&mut errs, "data", &c.data);
    data_keys(&mut errs, "binaryData", &c.binary_data);
    size += base64_values(&mut errs, "binaryData", &c.binary_data, false);
    for k in c.data.keys() {
        if c.binary_data.contains_key(k) {
            errs.push(FieldError::invalid_str(
                format!("data[{k}]"),
                k,
                "duplicate of key present in binaryData",
            ));
        }
    }
    if size > MAX_DATA_SIZE {
        errs.push(FieldError::too_long("data", MAX_DATA_SIZE));
    }
    errs
}

fn immutable_data(
    old_immutable: Option<bool>,
    new_immutable: Option<bool>,
    data_changed: &[(&str, bool)],
) -> Errors {
    if old_immutable != Some(true) {
        return Vec::new();
    }
    const MSG: &str = "field is immutable when `immutable` is set";
    let mut errs = Vec::new();
    if new_immutable != Some(true) {
        errs.push(FieldError::forbidden("immutable", MSG));
    }
    for (field, changed) in data_changed {
        if *changed {
            errs.push(FieldError::forbidden(*field, MSG));
        }
    }
    errs
}

pub(crate) fn config_map_update(old: &ConfigMap, new: &ConfigMap) -> Errors {
    immutable_data(
        old.immutable,
        new.immutable,
        &[
            ("data", old.data != new.data),
            ("binaryData", old.binary_data != new.binary_data),
        ],
    )
}

pub(crate) fn secret(s: &Secret) -> Errors {
    let mut errs = Vec::new();
    data_keys(&mut errs, "data", &s.data);
    let size = base64_values(&mut errs, "data", &s.data, true);
    if size > MAX_DATA_SIZE {
        errs.push(FieldError::too_long("data", MAX_DATA_SIZE));
    }
    let required: &[&str] = match s.type_.as_str() {
        "kubernetes.io/tls" => &["tls.crt", "tls.key"],
        "kubernetes.io/dockerconfigjson" => &[".dockerconfigjson"],
        "kubernetes.io/dockercfg" => &[".dockercfg"],
        "kubernetes.io/ssh-auth" => &["ssh-privatekey"],
        _ => &[],
    };
    for key in required {
        if !s.data.contains_key(*key) {
            errs.push(FieldError::required(format!("data[{key}]"), ""));
        }
    }
    errs
}

pub(crate) fn secret_update(old: &Secret, new: &Secret) -> Errors {
    let mut errs = Vec::new();
    if old.type_ != new.type_ {
        errs.push(FieldError::invalid_str("type", &new.type_, IMMUTABLE));
    }
    errs.extend(immutable_data(
        old.immutable,
        new.immutable,
        &[("data", old.data != new.data)],
    ));
    errs
}

pub(crate) fn event(e: &Event) -> Errors {
    let mut errs = Vec::new();
    if e.involved_object.name.is_empty() {
        errs.push(FieldError::required("involvedObject.name", ""));
    }
    non_negative(&mut errs, "count", e.count.into());
    errs
}

pub(crate) fn service_account(_: &crate::core::ServiceAccount) -> Errors {
    // Its name and metadata are checked as every object's are.
    Vec::new()
}

/// dnsConfig as Kubernetes checks it: dnsPolicy None needs a name server;
/// at most 3 name servers (IP addresses), 32 searches, named options.
fn validate_dns_config(errs: &mut Errors, path: &str, spec: &crate::core::PodSpec) {
    let p = format!("{path}.dnsConfig");
    let Some(c) = &spec.dns_config else {
        if spec.dns_policy == "None" {
            errs.push(FieldError::required(
                &p,
                "must provide `dnsConfig` when `dnsPolicy` is None",
            ));
        }
        return;
    };
    if spec.dns_policy == "None" && c.nameservers.is_empty() {
        errs.push(FieldError::required(
            format!("{p}.nameservers"),
            "must provide at least one DNS nameserver when `dnsPolicy` is None",
        ));
    }
    if c.nameservers.len() > 3 {
        errs.push(FieldError::invalid(
            format!("{p}.nameservers"),
            c.nameservers.join(","),
            "must not have more than 3 nameservers",
        ));
    }
    for (i, n) in c.nameservers.iter().enumerate() {
        if n.parse::<std::net::IpAddr>().is_err() {
            errs.push(FieldError::invalid_str(
                format!("{p}.nameservers[{i}]"),
                n,
                "must be a valid IP address",
            ));
        }
    }
    if c.searches.len() > 32 {
        errs.push(FieldError::invalid(
            format!("{p}.searches"),
            c.searches.join(","),
            "must not have more than 32 search paths",
        ));
    }
    for (i, o) in c.options.iter().enumerate() {
        if o.name.is_empty() {
            errs.push(FieldError::required(
                format!("{p}.options[{i}].name"),
                "must not be empty",
            ));
        }
    }
}

/// hostAliases as Kubernetes checks them: an IP address and DNS-1123
/// subdomain names.
fn validate_host_aliases(errs: &mut Errors, path: &str, spec: &crate::core::PodSpec) {
    for (i, a) in spec.host_aliases.iter().enumerate() {
        let p = format!("{path}.hostAliases[{i}]");
        if a.ip.parse::<std::net::IpAddr>().is_err() {
            errs.push(FieldError::invalid_str(
                format!("{p}.ip"),
                &a.ip,
                "must be a valid IP address",
            ));
        }
        for (j, h) in a.hostnames.iter().enumerate() {
            check(
                errs,
                &format!("{p}.hostnames[{j}]"),
                h,
                names::dns1123_subdomain(h),
            );
        }
    }
}
