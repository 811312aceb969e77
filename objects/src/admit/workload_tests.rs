//! Admission of CronJobs and DaemonSets.

use serde_json::{json, Value};

use crate::admit::admit;
use crate::registry::{ResourceInfo, CRON_JOB, DAEMON_SET};

fn ok(info: &'static ResourceInfo, v: Value) -> Value {
    match admit(info, v) {
        Ok(a) => a.object,
        Err(e) => panic!("rejected: {e:?}"),
    }
}

fn errors(info: &'static ResourceInfo, v: Value) -> Vec<String> {
    match admit(info, v) {
        Ok(a) => panic!("admitted: {}", a.object),
        Err(e) => e.iter().map(ToString::to_string).collect(),
    }
}

fn cron(spec: Value) -> Value {
    let mut c = json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "report", "namespace": "default"},
        "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": {"spec": {
            "restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "busybox"}]}}}}}});
    crate::merge_patch(&mut c, &json!({"spec": spec}));
    c
}

fn ds(spec: Value) -> Value {
    let mut d = json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "logs", "namespace": "default"},
        "spec": {"selector": {"matchLabels": {"app": "logs"}}, "template": {"metadata": {"labels": {"app": "logs"}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}});
    crate::merge_patch(&mut d, &json!({"spec": spec}));
    d
}

#[test]
fn cron_job_defaults_and_rules() {
    let o = ok(&CRON_JOB, cron(json!({})));
    let spec = &o["spec"];
    assert_eq!(spec["concurrencyPolicy"], "Allow");
    assert_eq!(spec["suspend"], false);
    assert_eq!(spec["successfulJobsHistoryLimit"], 3);
    assert_eq!(spec["failedJobsHistoryLimit"], 1);
    assert_eq!(
        spec["jobTemplate"]["spec"]["backoffLimit"], 6,
        "the job template gets a Job's defaults"
    );
    let errs = errors(
        &CRON_JOB,
        cron(
            json!({"schedule": "61 * * * *", "timeZone": "Mars/Olympus", "concurrencyPolicy": "Sometimes"}),
        ),
    );
    assert_eq!(errs.len(), 3, "{errs:?}");
    assert!(
        errs[0].starts_with("spec.schedule: Invalid value: \"61 * * * *\""),
        "{errs:?}"
    );
    assert!(
        errs[1].starts_with("spec.timeZone: Invalid value: \"Mars/Olympus\""),
        "{errs:?}"
    );
    assert!(
        errs[2].starts_with("spec.concurrencyPolicy: Unsupported value: \"Sometimes\""),
        "{errs:?}"
    );
    let errs = errors(
        &CRON_JOB,
        cron(json!({"jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "Always"}}}}})),
    );
    assert_eq!(
        errs,
        vec!["spec.jobTemplate.spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\""]
    );
    let mut long = cron(json!({}));
    long["metadata"]["name"] = json!("a".repeat(53));
    assert!(errors(&CRON_JOB, long)[0].contains("must be no more than 52 characters"));
}

#[test]
fn daemon_set_defaults_and_rules() {
    let o = ok(&DAEMON_SET, ds(json!({})));
    let spec = &o["spec"];
    assert_eq!(spec["updateStrategy"]["type"], "RollingUpdate");
    assert_eq!(spec["updateStrategy"]["rollingUpdate"]["maxUnavailable"], 1);
    assert_eq!(spec["template"]["spec"]["restartPolicy"], "Always");
    let errs = errors(
        &DAEMON_SET,
        ds(json!({"updateStrategy": {"type": "Sometimes"}})),
    );
    assert!(
        errs[0].starts_with("spec.updateStrategy.type: Unsupported value: \"Sometimes\""),
        "{errs:?}"
    );
    let errs = errors(
        &DAEMON_SET,
        ds(json!({"selector": {"matchLabels": {"app": "other"}}})),
    );
    assert_eq!(errs, vec!["spec.template.metadata.labels: Invalid value: {\"app\":\"logs\"}: `selector` does not match template `labels`"]);
}

#[test]
fn pods_get_default_toleration_seconds_unless_they_say_otherwise() {
    let pod = |tolerations: Value| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"},
            "spec": {"tolerations": tolerations, "containers": [{"name": "c", "image": "busybox"}]}})
    };
    let o = ok(&crate::registry::POD, pod(json!([])));
    assert_eq!(
        o["spec"]["tolerations"],
        json!([
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
        ])
    );
    let own = json!([{"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}]);
    let o = ok(&crate::registry::POD, pod(own));
    let t = o["spec"]["tolerations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(t.len(), 2);
    assert_eq!(t[0]["tolerationSeconds"], 5, "its own is kept");
    assert_eq!(t[1]["key"], "node.kubernetes.io/not-ready");
}
