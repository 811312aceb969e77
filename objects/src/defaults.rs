//! Kubernetes' defaults, set on admission after decoding.

use base64::Engine;

use crate::apps::{
    DaemonSet, Deployment, ReplicaSet, RollingUpdateDaemonSet, RollingUpdateDeployment,
};
use crate::batch::{CronJob, Job, JobSpec};
use crate::core::{
    Container, Endpoints, Namespace, NamespaceStatus, Pod, PodSpec, PodTemplateSpec, Probe,
    ReplicationController, Secret, Service,
};
use crate::meta::IntOrString;
use crate::nodepool::NodePool;

/// File mode of projected config map and secret files (0644).
const DEFAULT_MODE: i32 = 0o644;

fn set_if_empty(field: &mut String, value: &str) {
    if field.is_empty() {
        *field = value.to_string();
    }
}

fn set_if_zero(field: &mut i32, value: i32) {
    if *field == 0 {
        *field = value;
    }
}

/// imagePullPolicy: Always for ":latest" or no tag, IfNotPresent otherwise
/// (a digest counts as a tag).
fn pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

fn probe(p: &mut Probe) {
    set_if_zero(&mut p.timeout_seconds, 1);
    set_if_zero(&mut p.period_seconds, 10);
    set_if_zero(&mut p.success_threshold, 1);
    set_if_zero(&mut p.failure_threshold, 3);
    if let Some(h) = &mut p.http_get {
        set_if_empty(&mut h.scheme, "HTTP");
        set_if_empty(&mut h.path, "/");
    }
}

fn container(c: &mut Container) {
    if c.image_pull_policy.is_empty() {
        c.image_pull_policy = pull_policy(&c.image).to_string();
    }
    for p in &mut c.ports {
        set_if_empty(&mut p.protocol, "TCP");
    }
    for p in [
        &mut c.liveness_probe,
        &mut c.readiness_probe,
        &mut c.startup_probe,
    ]
    .into_iter()
    .flatten()
    {
        probe(p);
    }
    // A limit without a request: the request is the limit.
    let limits = c.resources.limits.clone();
    for (name, q) in limits {
        c.resources.requests.entry(name).or_insert(q);
    }
}

/// Pod spec defaults; `restart_policy` is the default restartPolicy (none
/// for Job templates).
pub(crate) fn pod_spec(spec: &mut PodSpec, restart_policy: Option<&str>) {
    if let Some(r) = restart_policy {
        set_if_empty(&mut spec.restart_policy, r);
    }
    set_if_empty(&mut spec.dns_policy, "ClusterFirst");
    spec.termination_grace_period_seconds.get_or_insert(30);
    set_if_empty(&mut spec.scheduler_name, "default-scheduler");
    spec.containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut())
        .for_each(container);
    for v in &mut spec.volumes {
        if let Some(c) = &mut v.config_map {
            c.default_mode.get_or_insert(DEFAULT_MODE);
        }
        if let Some(s) = &mut v.secret {
            s.default_mode.get_or_insert(DEFAULT_MODE);
        }
    }
}

fn template(t: &mut PodTemplateSpec, restart_policy: Option<&str>) {
    pod_spec(&mut t.spec, restart_policy);
}

pub(crate) fn pod(p: &mut Pod) {
    pod_spec(&mut p.spec, Some("Always"));
    default_toleration_seconds(&mut p.spec);
    // Kubernetes' ServiceAccount admission: a pod runs as "default".
    if p.spec.service_account_name.is_empty() {
        p.spec.service_account_name = DEFAULT_SERVICE_ACCOUNT.into();
    }
}

/// The service account of pods that name none, made in every namespace.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";

/// Seconds a pod stays on a node that stopped being ready or reachable
/// before it is evicted, unless it says otherwise (Kubernetes'
/// DefaultTolerationSeconds admission).
pub const DEFAULT_TOLERATION_SECONDS: i64 = 300;
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";

fn default_toleration_seconds(spec: &mut PodSpec) {
    for key in [TAINT_NOT_READY, TAINT_UNREACHABLE] {
        let covered = spec.tolerations.iter().any(|t| {
            (t.key == key || t.key.is_empty() && t.operator == "Exists")
                && (t.effect.is_empty() || t.effect == "NoExecute")
        });
        if !covered {
            spec.tolerations.push(crate::core::Toleration {
                key: key.into(),
                operator: "Exists".into(),
                value: String::new(),
                effect: "NoExecute".into(),
                toleration_seconds: Some(DEFAULT_TOLERATION_SECONDS),
            });
        }
    }
}

pub(crate) fn namespace(n: &mut Namespace) {
    let status = n.status.get_or_insert_with(NamespaceStatus::default);
    set_if_empty(&mut status.phase, "Active");
}

pub(crate) fn replication_controller(rc: &mut ReplicationController) {
    rc.spec.replicas.get_or_insert(1);
    if let Some(t) = &mut rc.spec.template {
        template(t, Some("Always"));
        if rc.spec.selector.is_empty() {
            rc.spec.selector = t.metadata.labels.clone();
        }
        if rc.metadata.labels.is_empty() {
            rc.metadata.labels = t.metadata.labels.clone();
        }
    }
}

pub(crate) fn replica_set(rs: &mut ReplicaSet) {
    rs.spec.replicas.get_or_insert(1);
    template(&mut rs.spec.template, Some("Always"));
}

pub(crate) fn deployment(d: &mut Deployment) {
    let spec = &mut d.spec;
    spec.replicas.get_or_insert(1);
    template(&mut spec.template, Some("Always"));
    set_if_empty(&mut spec.strategy.type_, "RollingUpdate");
    if spec.strategy.type_ == "RollingUpdate" {
        let ru = spec
            .strategy
            .rolling_update
            .get_or_insert_with(RollingUpdateDeployment::default);
        ru.max_unavailable
            .get_or_insert_with(|| IntOrString::from("25%"));
        ru.max_surge.get_or_insert_with(|| IntOrString::from("25%"));
    }
    spec.revision_history_limit.get_or_insert(10);
    spec.progress_deadline_seconds.get_or_insert(600);
}

/// Job defaults. The selector is left alone: the server generates it once
/// the uid exists ([`Job::generate_selector`]).
pub(crate) fn job(j: &mut Job) {
    job_spec(&mut j.spec);
}

fn job_spec(spec: &mut JobSpec) {
    if spec.completions.is_none() && spec.parallelism.is_none() {
        spec.completions = Some(1);
    }
    spec.parallelism.get_or_insert(1);
    spec.backoff_limit.get_or_insert(6);
    set_if_empty(&mut spec.completion_mode, "NonIndexed");
    spec.suspend.get_or_insert(false);
    template(&mut spec.template, None);
}

/// CronJob defaults (and its job template's, as a Job's).
pub(crate) fn cron_job(c: &mut CronJob) {
    let spec = &mut c.spec;
    set_if_empty(&mut spec.concurrency_policy, "Allow");
    spec.suspend.get_or_insert(false);
    spec.successful_jobs_history_limit.get_or_insert(3);
    spec.failed_jobs_history_limit.get_or_insert(1);
    job_spec(&mut spec.job_template.spec);
}

/// DaemonSet defaults: RollingUpdate, one node at a time, no surge.
pub(crate) fn daemon_set(d: &mut DaemonSet) {
    let spec = &mut d.spec;
    template(&mut spec.template, Some("Always"));
    set_if_empty(&mut spec.update_strategy.type_, "RollingUpdate");
    if spec.update_strategy.type_ == "RollingUpdate" {
        let ru = spec
            .update_strategy
            .rolling_update
            .get_or_insert_with(RollingUpdateDaemonSet::default);
        ru.max_unavailable.get_or_insert(IntOrString::Int(1));
        ru.max_surge.get_or_insert(IntOrString::Int(0));
    }
    spec.revision_history_limit.get_or_insert(10);
}

pub(crate) fn service(s: &mut Service) {
    let spec = &mut s.spec;
    set_if_empty(&mut spec.type_, "ClusterIP");
    set_if_empty(&mut spec.session_affinity, "None");
    if spec.session_affinity == "ClientIP" {
        spec.session_affinity_config
            .get_or_insert_with(Default::default)
            .client_ip
            .get_or_insert_with(Default::default)
            .timeout_seconds
            .get_or_insert(crate::core::DEFAULT_AFFINITY_TIMEOUT_SECONDS);
    }
    if matches!(spec.type_.as_str(), "NodePort" | "LoadBalancer") {
        set_if_empty(&mut spec.external_traffic_policy, "Cluster");
    }
    if spec.type_ != "ExternalName" {
        set_if_empty(&mut spec.internal_traffic_policy, "Cluster");
    }
    for p in &mut spec.ports {
        set_if_empty(&mut p.protocol, "TCP");
        if p.target_port.is_none() && (1..=65535).contains(&p.port) {
            p.target_port = Some(IntOrString::Int(p.port));
        }
    }
}

pub(crate) fn endpoints(e: &mut Endpoints) {
    for p in e.subsets.iter_mut().flat_map(|s| s.ports.iter_mut()) {
        set_if_empty(&mut p.protocol, "TCP");
    }
}

pub(crate) fn secret(s: &mut Secret) {
    set_if_empty(&mut s.type_, "Opaque");
    for (k, v) in std::mem::take(&mut s.string_data) {
        s.data
            .insert(k, base64::engine::general_purpose::STANDARD.encode(v));
    }
}

pub(crate) fn node_pool(p: &mut NodePool) {
    if p.spec.max_size == 0 {
        p.spec.max_size = p.spec.min_size;
    }
}

#[cfg(test)]
mod tests {
    use super::pull_policy;

    #[test]
    fn image_pull_policy_follows_the_tag() {
        assert_eq!(pull_policy("nginx"), "Always");
        assert_eq!(pull_policy("nginx:latest"), "Always");
        assert_eq!(pull_policy("nginx:1.25"), "IfNotPresent");
        assert_eq!(pull_policy("registry:5000/nginx"), "Always");
        assert_eq!(pull_policy("registry:5000/nginx:1"), "IfNotPresent");
        assert_eq!(pull_policy("nginx@sha256:abcd"), "IfNotPresent");
    }
}
