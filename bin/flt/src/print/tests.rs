//! Golden tests: each kind's table, wide and all-namespaces variants, and
//! describe output, compared with text laid out by hand from kubectl's rules.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::*;

/// The fixed "now" every test measures ages from.
fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-26T18:45:45Z")
        .unwrap()
        .with_timezone(&Utc)
}

/// A golden constant without the newline that follows its opening quote.
fn golden(s: &str) -> &str {
    s.strip_prefix('\n').unwrap()
}

/// Assert equality, showing both texts in full when they differ.
#[track_caller]
fn check(got: &str, want: &str) {
    assert!(
        got == golden(want),
        "got:\n{got}\nwant:\n{}\n",
        golden(want)
    );
}

const FIVE_M: &str = "2026-11-26T18:40:40Z"; // 5m5s
const THREE_H5: &str = "2026-11-26T15:40:45Z"; // 3h5m
const TWO_D: &str = "2026-11-24T18:45:45Z"; // 2d
const TEN_D: &str = "2026-11-16T18:45:45Z"; // 10d
const FORTY5_D: &str = "2026-10-12T18:45:45Z"; // 45d
const EIGHT_H: &str = "2026-11-26T10:45:45Z"; // 8h
const THIRTY_S: &str = "2026-11-26T18:45:15Z"; // 30s

fn meta(name: &str, ns: Option<&str>, created: &str) -> Value {
    let mut m = json!({"name": name, "uid": format!("uid-{name}"), "creationTimestamp": created});
    if let Some(ns) = ns {
        m["namespace"] = json!(ns);
    }
    m
}

fn opts() -> TableOpts {
    TableOpts::default()
}

fn running_pod() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": meta("web-7d4b9c-abcde", Some("default"), FIVE_M),
        "spec": {"nodeName": "node-1", "containers": [{"name": "web", "image": "nginx:1.27"}]},
        "status": {
            "phase": "Running", "podIP": "10.244.1.5",
            "containerStatuses": [{"name": "web", "ready": true, "restartCount": 0,
                "state": {"running": {"startedAt": FIVE_M}}}]
        }
    })
}

fn pending_pod() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": meta("pending-pod", Some("prod"), TWO_D),
        "spec": {"containers": [{"name": "x", "image": "busybox"}]}
    })
}

#[test]
fn pod_table() {
    let crash = json!({
        "metadata": meta("api-0", Some("default"), THREE_H5),
        "spec": {"containers": [{"name": "api"}, {"name": "proxy"}]},
        "status": {"phase": "Running", "containerStatuses": [
            {"name": "api", "ready": false, "restartCount": 4,
             "state": {"waiting": {"reason": "CrashLoopBackOff"}},
             "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2026-11-26T18:43:45Z"}}},
            {"name": "proxy", "ready": true, "restartCount": 0,
             "state": {"running": {"startedAt": THREE_H5}}}
        ]}
    });
    let mut terminating = running_pod();
    terminating["metadata"] = meta("old-pod", Some("default"), TEN_D);
    terminating["metadata"]["deletionTimestamp"] = json!(THIRTY_S);
    let init = json!({
        "metadata": meta("init-pod", Some("default"), THIRTY_S),
        "spec": {"initContainers": [{"name": "setup"}], "containers": [{"name": "main"}]},
        "status": {"phase": "Pending",
            "initContainerStatuses": [{"name": "setup", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "PodInitializing"}}}],
            "containerStatuses": [{"name": "main", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "PodInitializing"}}}]}
    });
    let items = [running_pod(), crash, pending_pod(), terminating, init];
    check(&table("Pod", &items, &opts(), now()), PODS);
}

#[test]
fn pod_table_wide_all_namespaces() {
    let o = TableOpts {
        wide: true,
        all_namespaces: true,
        ..opts()
    };
    check(
        &table("pods", &[running_pod(), pending_pod()], &o, now()),
        PODS_WIDE_ALL_NS,
    );
}

#[test]
fn pod_status_reasons() {
    let status = |status: Value, extra_meta: Option<(&str, &str)>| {
        let mut pod = json!({"metadata": meta("p", None, FIVE_M),
            "spec": {"containers": [{"name": "c"}]}, "status": status});
        if let Some((k, v)) = extra_meta {
            pod["metadata"][k] = json!(v);
        }
        row("Pod", &pod, &opts(), now())[2].clone()
    };
    assert_eq!(
        status(json!({"phase": "Failed", "reason": "Evicted"}), None),
        "Evicted"
    );
    assert_eq!(
        status(
            json!({"phase": "Running", "containerStatuses": [
            {"name": "c", "state": {"terminated": {"exitCode": 137, "signal": 9}}}]}),
            None
        ),
        "Signal:9"
    );
    assert_eq!(
        status(
            json!({"phase": "Running", "containerStatuses": [
            {"name": "c", "state": {"terminated": {"exitCode": 2}}}]}),
            None
        ),
        "ExitCode:2"
    );
    assert_eq!(
        status(
            json!({"phase": "Pending", "containerStatuses": [
            {"name": "c", "state": {"waiting": {"reason": "ContainerCreating"}}}]}),
            None
        ),
        "ContainerCreating"
    );
    // A finished pod being deleted keeps its phase.
    assert_eq!(
        status(
            json!({"phase": "Succeeded"}),
            Some(("deletionTimestamp", THIRTY_S))
        ),
        "Succeeded"
    );
    assert_eq!(
        status(
            json!({"phase": "Pending", "initContainerStatuses": [
            {"name": "i", "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}]}),
            None
        ),
        "Init:Error"
    );
}

fn deployments() -> [Value; 2] {
    let mut web_meta = meta("web", Some("default"), FORTY5_D);
    web_meta["labels"] = json!({"app": "web"});
    [
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": web_meta,
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1.27"}]}}},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2, "replicas": 3}
        }),
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": meta("api", Some("default"), EIGHT_H),
            "spec": {"selector": {"matchLabels": {"tier": "backend", "app": "api"}},
                "template": {"spec": {"containers": [
                    {"name": "api", "image": "api:v2"}, {"name": "sidecar", "image": "envoy:1.30"}]}}}
        }),
    ]
}

#[test]
fn deployment_table() {
    check(
        &table("Deployment", &deployments(), &opts(), now()),
        DEPLOYMENTS,
    );
}

#[test]
fn deployment_table_wide_with_kind_and_labels() {
    let o = TableOpts {
        wide: true,
        show_kind: true,
        show_labels: true,
        ..opts()
    };
    check(
        &table("deploy", &deployments(), &o, now()),
        DEPLOYMENTS_WIDE_KIND_LABELS,
    );
}

#[test]
fn replica_set_and_replication_controller_tables() {
    let rs = json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": meta("web-7d4b9c", Some("default"), FIVE_M),
        "spec": {"replicas": 3},
        "status": {"replicas": 3, "readyReplicas": 3}
    });
    check(&table("ReplicaSet", &[rs], &opts(), now()), REPLICASETS);
    let rc = json!({
        "apiVersion": "v1", "kind": "ReplicationController",
        "metadata": meta("frontend", Some("default"), "2026-11-26T15:45:45Z"),
        "spec": {"replicas": 2, "selector": {"app": "frontend"},
            "template": {"spec": {"containers": [{"name": "php", "image": "php:8"}]}}},
        "status": {"replicas": 1}
    });
    let o = TableOpts {
        wide: true,
        ..opts()
    };
    check(&table("rc", &[rc], &o, now()), RCS_WIDE);
}

#[test]
fn job_table() {
    let pi = json!({
        "metadata": meta("pi", Some("default"), "2026-11-26T18:40:00Z"),
        "spec": {"completions": 1},
        "status": {"succeeded": 1, "startTime": "2026-11-26T18:40:00Z",
            "completionTime": "2026-11-26T18:40:35Z"}
    });
    let batch = json!({
        "metadata": meta("batch", Some("default"), "2026-11-26T18:35:45Z"),
        "spec": {"parallelism": 3},
        "status": {"active": 3, "startTime": "2026-11-26T18:35:45Z"}
    });
    let unstarted = json!({
        "metadata": meta("unstarted", Some("default"), "2026-11-26T18:45:40Z"),
        "spec": {"completions": 5}
    });
    check(
        &table("jobs", &[pi, batch, unstarted], &opts(), now()),
        JOBS,
    );
}

#[test]
fn cron_job_and_daemon_set_tables() {
    let hourly = json!({
        "metadata": meta("report", Some("default"), "2026-11-26T18:35:45Z"),
        "spec": {"schedule": "0 * * * *", "timeZone": "Europe/Paris", "suspend": false},
        "status": {"active": [{"name": "report-29400000"}], "lastScheduleTime": "2026-11-26T18:45:00Z"}
    });
    let held = json!({
        "metadata": meta("cleanup", Some("default"), "2026-11-26T18:45:40Z"),
        "spec": {"schedule": "*/5 * * * *", "suspend": true}
    });
    check(&table("cj", &[hourly, held], &opts(), now()), CRON_JOBS);
    let logs = json!({
        "metadata": meta("logs", Some("kube-system"), "2026-11-26T18:35:45Z"),
        "spec": {"template": {"spec": {"nodeSelector": {"disk": "ssd", "arch": "amd64"}}}},
        "status": {"desiredNumberScheduled": 3, "currentNumberScheduled": 3, "numberReady": 2,
            "updatedNumberScheduled": 1, "numberAvailable": 2}
    });
    check(&table("ds", &[logs], &opts(), now()), DAEMON_SETS);
}

fn services() -> Vec<Value> {
    let mut web_meta = meta("web", Some("default"), FORTY5_D);
    web_meta["labels"] = json!({"app": "web"});
    vec![
        json!({"metadata": web_meta, "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.10",
            "clusterIPs": ["10.96.0.10"], "selector": {"app": "web"},
            "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}]}}),
        json!({"metadata": meta("web-nodeport", Some("default"), TWO_D),
            "spec": {"type": "NodePort", "clusterIP": "10.96.0.11",
            "ports": [{"port": 80, "nodePort": 30080}, {"port": 443, "nodePort": 30443, "protocol": "TCP"}]}}),
        json!({"metadata": meta("lb", Some("default"), EIGHT_H),
            "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.12",
            "ports": [{"port": 53, "protocol": "UDP"}]}}),
        json!({"metadata": meta("lb2", Some("default"), EIGHT_H),
            "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.13",
            "ports": [{"port": 80, "nodePort": 31000}]},
            "status": {"loadBalancer": {"ingress": [{"hostname": "lb.example.test"}, {"ip": "203.0.113.10"}]}}}),
        json!({"metadata": meta("ext", Some("default"), THIRTY_S),
            "spec": {"type": "ExternalName", "externalName": "db.example.test"}}),
    ]
}

#[test]
fn service_table() {
    check(&table("Service", &services(), &opts(), now()), SERVICES);
}

#[test]
fn service_table_wide() {
    let s = services();
    let o = TableOpts {
        wide: true,
        ..opts()
    };
    check(
        &table("svc", &[s[0].clone(), s[3].clone()], &o, now()),
        SERVICES_WIDE,
    );
}

#[test]
fn endpoints_table() {
    let ep = |name: &str, subsets: Value| json!({"metadata": meta(name, Some("default"), FIVE_M), "subsets": subsets});
    let five: Vec<Value> = (1..=5)
        .map(|i| json!({"ip": format!("10.0.1.{i}")}))
        .collect();
    let items = [
        ep(
            "web",
            json!([{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}], "ports": [{"port": 80}]}]),
        ),
        ep(
            "many",
            json!([{"addresses": five, "ports": [{"port": 8080, "protocol": "TCP"}]}]),
        ),
        ep("headless", json!([{"addresses": [{"ip": "10.0.2.1"}]}])),
        json!({"metadata": meta("empty", Some("default"), FIVE_M)}),
        ep(
            "v6",
            json!([{"addresses": [{"ip": "fd00::1"}], "ports": [{"port": 80}]}]),
        ),
    ];
    check(&table("Endpoints", &items, &opts(), now()), ENDPOINTS);
}

#[test]
fn endpoint_slice_table() {
    let slice = |name: &str, ports: Value, ips: &[&str]| {
        let eps: Vec<Value> = ips.iter().map(|ip| json!({"addresses": [ip]})).collect();
        json!({"metadata": meta(name, Some("default"), FIVE_M), "addressType": "IPv4",
            "ports": ports, "endpoints": eps})
    };
    let items = [
        slice(
            "web-abcde",
            json!([{"name": "http", "port": 80}, {"name": "https", "port": 443}]),
            &["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"],
        ),
        slice("empty-xyz12", json!([]), &[]),
    ];
    check(
        &table("EndpointSlice", &items, &opts(), now()),
        ENDPOINT_SLICES,
    );
}

#[test]
fn ingress_table() {
    let backend = json!({"service": {"name": "web", "port": {"number": 80}}});
    let http = json!({"paths": [{"path": "/", "pathType": "Prefix", "backend": backend}]});
    let items = [
        json!({"metadata": meta("web", Some("default"), FORTY5_D),
            "spec": {"ingressClassName": "nginx", "rules": [{"host": "web.example.test", "http": http}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}}),
        json!({"metadata": meta("catchall", Some("default"), TWO_D),
            "spec": {"tls": [{"hosts": ["x.test"], "secretName": "x"}], "rules": [{"http": http}]}}),
        json!({"metadata": meta("many", Some("default"), EIGHT_H),
            "spec": {"rules": [{"host": "a.test"}, {"host": "b.test"}, {"host": "c.test"}, {"host": "d.test"}]}}),
    ];
    check(&table("ing", &items, &opts(), now()), INGRESSES);
}

fn nodes() -> [Value; 3] {
    let mut n1 = meta("node-1", None, FORTY5_D);
    n1["labels"] =
        json!({"node-role.kubernetes.io/control-plane": "", "kubernetes.io/hostname": "node-1"});
    let mut n2 = meta("node-2", None, "2026-11-18T18:45:45Z");
    n2["labels"] = json!({"kubernetes.io/role": "worker", "node-role.kubernetes.io/gpu": ""});
    [
        json!({"metadata": n1, "status": {
            "conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}],
            "addresses": [{"type": "Hostname", "address": "node-1"}, {"type": "InternalIP", "address": "10.0.0.1"},
                {"type": "ExternalIP", "address": "203.0.113.1"}],
            "nodeInfo": {"kubeletVersion": "v1.31.0", "osImage": "Debian GNU/Linux 12 (bookworm)",
                "kernelVersion": "6.1.0-18-amd64", "containerRuntimeVersion": "containerd://1.7.13"}}}),
        json!({"metadata": n2, "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
        json!({"metadata": meta("node-3", None, FIVE_M), "status": {"nodeInfo": {"kubeletVersion": "v1.31.0"}}}),
    ]
}

#[test]
fn node_table() {
    // Nodes are cluster-scoped: no NAMESPACE column even with -A.
    let o = TableOpts {
        all_namespaces: true,
        ..opts()
    };
    check(&table("Node", &nodes(), &o, now()), NODES);
}

#[test]
fn node_table_wide() {
    let n = nodes();
    let o = TableOpts {
        wide: true,
        ..opts()
    };
    check(
        &table("nodes", &[n[0].clone(), n[2].clone()], &o, now()),
        NODES_WIDE,
    );
}

#[test]
fn node_pool_table() {
    let items = [
        json!({"apiVersion": "flotilla.dev/v1", "kind": "NodePool", "metadata": meta("batch", None, FORTY5_D),
            "spec": {"labels": {"pool": "batch"}, "machine": {"cpu": "4", "memory": "8Gi"}, "minSize": 0, "maxSize": 5},
            "status": {"nodes": 2, "readyNodes": 1}}),
        json!({"apiVersion": "flotilla.dev/v1", "kind": "NodePool", "metadata": meta("general", None, EIGHT_H),
            "spec": {"minSize": 1}}),
    ];
    let o = TableOpts {
        all_namespaces: true,
        ..opts()
    };
    check(&table("NodePool", &items, &o, now()), NODEPOOLS);
}

#[test]
fn namespace_table() {
    let items = [
        json!({"metadata": meta("default", None, FORTY5_D), "status": {"phase": "Active"}}),
        json!({"metadata": meta("kube-system", None, FORTY5_D)}),
        json!({"metadata": meta("doomed", None, THIRTY_S), "status": {"phase": "Terminating"}}),
    ];
    check(&table("ns", &items, &opts(), now()), NAMESPACES);
}

#[test]
fn config_map_table_all_namespaces_with_labels() {
    let mut m = meta("web-config", Some("default"), FIVE_M);
    m["labels"] = json!({"tier": "frontend", "app": "web"});
    let items = [
        json!({"metadata": m, "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}}),
        json!({"metadata": meta("empty", Some("prod"), TWO_D)}),
    ];
    let o = TableOpts {
        all_namespaces: true,
        show_labels: true,
        ..opts()
    };
    check(&table("cm", &items, &o, now()), CONFIGMAPS_ALL_NS_LABELS);
}

#[test]
fn secret_table() {
    let items = [
        json!({"metadata": meta("creds", Some("default"), FIVE_M), "type": "Opaque",
            "data": {"username": "YWRtaW4=", "password": "cGFzc3dvcmQ="}}),
        json!({"metadata": meta("web-tls", Some("default"), FORTY5_D), "type": "kubernetes.io/tls",
            "data": {"tls.crt": "", "tls.key": ""}}),
        json!({"metadata": meta("plain", Some("default"), THIRTY_S), "stringData": {"token": "abc"}}),
    ];
    check(&table("Secret", &items, &opts(), now()), SECRETS);
}

fn events() -> [Value; 2] {
    [
        json!({"metadata": meta("web-1.1", Some("default"), "2026-11-26T18:44:45Z"),
            "involvedObject": {"kind": "Pod", "name": "web-1", "namespace": "default"},
            "type": "Normal", "reason": "Scheduled",
            "message": "Successfully assigned default/web-1 to node-1",
            "source": {"component": "default-scheduler"},
            "firstTimestamp": "2026-11-26T18:44:45Z", "lastTimestamp": "2026-11-26T18:44:45Z", "count": 1}),
        json!({"metadata": meta("web-1.2", Some("default"), "2026-11-26T18:35:45Z"),
            "involvedObject": {"kind": "Pod", "name": "web-1", "fieldPath": "spec.containers{web}"},
            "type": "Warning", "reason": "BackOff", "message": "Back-off restarting failed container\n",
            "source": {"component": "kubelet", "host": "node-1"},
            "firstTimestamp": "2026-11-26T18:35:45Z", "lastTimestamp": "2026-11-26T18:45:15Z", "count": 7}),
    ]
}

#[test]
fn event_table() {
    check(&table("events", &events(), &opts(), now()), EVENTS);
}

#[test]
fn event_table_wide() {
    let o = TableOpts {
        wide: true,
        ..opts()
    };
    check(&table("ev", &events(), &o, now()), EVENTS_WIDE);
}

#[test]
fn unknown_kind_table() {
    let item = json!({"metadata": meta("gizmo", Some("default"), FIVE_M)});
    check(&table("Widget", &[item], &opts(), now()), UNKNOWN_KIND);
}

#[test]
fn no_headers_and_empty_tables() {
    let o = TableOpts {
        no_headers: true,
        ..opts()
    };
    assert_eq!(
        table(
            "Namespace",
            &[json!({"metadata": meta("a", None, FIVE_M)})],
            &o,
            now()
        ),
        "a     Active   5m5s\n"
    );
    assert_eq!(table("Namespace", &[], &o, now()), "");
    assert_eq!(
        table("Namespace", &[], &opts(), now()),
        "NAME   STATUS   AGE\n"
    );
}

#[test]
fn header_and_row_match_table() {
    let o = TableOpts {
        all_namespaces: true,
        ..opts()
    };
    let h = header("Pod", &o);
    assert_eq!(
        h,
        ["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    );
    let r = row("Pod", &running_pod(), &o, now());
    assert_eq!(
        r,
        ["default", "web-7d4b9c-abcde", "1/1", "Running", "0", "5m5s"]
    );
    let t = align(&[h, r]);
    assert_eq!(t, table("Pod", &[running_pod()], &o, now()));
    // NodePool is cluster-scoped and prefixed with its API group.
    let np = json!({"apiVersion": "flotilla.dev/v1", "metadata": meta("batch", None, FIVE_M)});
    let o = TableOpts {
        all_namespaces: true,
        show_kind: true,
        ..opts()
    };
    assert_eq!(
        row("NodePool", &np, &o, now())[0],
        "nodepool.flotilla.dev/batch"
    );
    assert_eq!(
        row("Pod", &running_pod(), &o, now())[1],
        "pod/web-7d4b9c-abcde"
    );
}

#[test]
fn age_uses_human_duration() {
    assert_eq!(age(Some(FIVE_M), now()), "5m5s");
    assert_eq!(age(Some(THREE_H5), now()), "3h5m");
    assert_eq!(age(Some("2026-11-23T14:45:45Z"), now()), "3d4h");
    assert_eq!(age(Some("2024-08-18T18:45:45Z"), now()), "2y100d");
    assert_eq!(age(None, now()), "<unknown>");
}

fn describe_pod_fixture() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-1", "namespace": "default", "creationTimestamp": FIVE_M,
            "labels": {"pod-template-hash": "abc", "app": "web"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-abc",
                "uid": "u1", "controller": true}]},
        "spec": {
            "nodeName": "node-1",
            "containers": [{"name": "web", "image": "nginx:1.27",
                "ports": [{"containerPort": 80, "protocol": "TCP"}],
                "readinessProbe": {"httpGet": {"path": "/", "port": 80}},
                "resources": {"requests": {"memory": "64Mi", "cpu": "100m"}}}],
            "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists",
                "effect": "NoExecute", "tolerationSeconds": 300}]
        },
        "status": {
            "phase": "Running", "hostIP": "10.0.0.1", "podIP": "10.244.1.5",
            "podIPs": [{"ip": "10.244.1.5"}], "startTime": "2026-11-26T18:40:41Z",
            "conditions": [
                {"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "True"},
                {"type": "ContainersReady", "status": "True"}, {"type": "PodScheduled", "status": "True"}],
            "containerStatuses": [{"name": "web", "containerID": "containerd://abc",
                "imageID": "docker.io/library/nginx@sha256:123", "ready": true, "restartCount": 0,
                "state": {"running": {"startedAt": "2026-11-26T18:40:43Z"}}}]
        }
    })
}

fn event(
    reason: &str,
    type_: &str,
    from: &str,
    msg: &str,
    first: &str,
    last: &str,
    count: i64,
) -> Value {
    json!({"metadata": {"name": format!("e-{reason}"), "namespace": "default"},
        "involvedObject": {"kind": "Pod", "name": "web-1"}, "reason": reason, "type": type_,
        "message": msg, "source": {"component": from}, "firstTimestamp": first,
        "lastTimestamp": last, "count": count})
}

#[test]
fn describe_pod_without_events() {
    check(
        &describe("Pod", &describe_pod_fixture(), &[], now()),
        DESCRIBE_POD_NO_EVENTS,
    );
}

#[test]
fn describe_pod_with_events_sorted_by_time() {
    let events = [
        event(
            "BackOff",
            "Warning",
            "kubelet",
            "Back-off restarting failed container",
            "2026-11-26T18:41:45Z",
            "2026-11-26T18:44:45Z",
            3,
        ),
        event(
            "Scheduled",
            "Normal",
            "default-scheduler",
            "Successfully assigned default/web-1 to node-1",
            "2026-11-26T18:40:40Z",
            "2026-11-26T18:40:40Z",
            1,
        ),
        event(
            "Pulled",
            "Normal",
            "kubelet",
            "Container image \"nginx:1.27\" already present on machine",
            "2026-11-26T18:40:42Z",
            "2026-11-26T18:40:42Z",
            1,
        ),
    ];
    check(
        &describe("pod", &describe_pod_fixture(), &events, now()),
        DESCRIBE_POD_EVENTS,
    );
}

fn describe_deployment_fixture() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "creationTimestamp": FORTY5_D,
            "labels": {"app": "web"}, "annotations": {"deployment.kubernetes.io/revision": "1"}},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "nginx", "image": "nginx:1.27",
                    "ports": [{"containerPort": 80}]}]}}},
        "status": {"replicas": 3, "updatedReplicas": 3, "readyReplicas": 3, "availableReplicas": 3,
            "conditions": [
                {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}]}
    })
}

#[test]
fn describe_deployment_without_events() {
    check(
        &describe("Deployment", &describe_deployment_fixture(), &[], now()),
        DESCRIBE_DEPLOYMENT_NO_EVENTS,
    );
}

#[test]
fn describe_deployment_with_events() {
    let events = [
        json!({"metadata": {"name": "web.1"}, "type": "Normal", "reason": "ScalingReplicaSet",
        "message": "Scaled up replica set web-7d4b9c to 3",
        "source": {"component": "deployment-controller"},
        "firstTimestamp": "2026-11-26T18:35:45Z", "lastTimestamp": "2026-11-26T18:35:45Z", "count": 1}),
    ];
    check(
        &describe(
            "deployments.apps",
            &describe_deployment_fixture(),
            &events,
            now(),
        ),
        DESCRIBE_DEPLOYMENT_EVENTS,
    );
}

#[test]
fn describe_service() {
    let mut m = meta("web-nodeport", Some("default"), TWO_D);
    m["labels"] = json!({"app": "web"});
    let svc = json!({"metadata": m, "spec": {"type": "NodePort", "clusterIP": "10.96.0.11",
        "clusterIPs": ["10.96.0.11"], "selector": {"app": "web"},
        "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080, "protocol": "TCP"}]}});
    check(&describe("svc", &svc, &[], now()), DESCRIBE_SERVICE);
}

#[test]
fn describe_falls_back_to_yaml() {
    let np = json!({"apiVersion": "flotilla.dev/v1", "kind": "NodePool",
        "metadata": meta("batch", None, FORTY5_D),
        "spec": {"labels": {"pool": "batch"}, "taints": [{"key": "dedicated", "value": "batch", "effect": "NoSchedule"}],
            "machine": {"cpu": "4", "memory": "8Gi"}, "minSize": 0, "maxSize": 5},
        "status": {"nodes": 2, "readyNodes": 1, "targetSize": 2,
            "message": "scaled up from 1 to 2 (max 5) for 1 pending pod(s): batch-x7k2p",
            "blocked": [{"name": "batch-b4c5d", "reason": "pod default/solo keeps it: not replicated: no controller owns it"}]}});
    check(&describe("NodePool", &np, &[], now()), DESCRIBE_NODEPOOL);
}

#[test]
fn describe_other_kinds_show_their_key_fields() {
    let job = json!({"metadata": meta("pi", Some("default"), FIVE_M),
        "spec": {"completions": 1, "backoffLimit": 4, "selector": {"matchLabels": {"job-name": "pi"}},
            "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "pi", "image": "busybox:1.36",
                "command": ["sh", "-c", "echo 3.14"]}]}}},
        "status": {"succeeded": 1, "startTime": "2026-11-26T18:40:40Z", "completionTime": "2026-11-26T18:40:52Z"}});
    let text = describe("Job", &job, &[], now());
    for line in [
        "Selector:         job-name=pi\n",
        "Parallelism:      1\n",
        "Completions:      1\n",
        "Backoff Limit:    4\n",
        "Duration:         12s\n",
        "Pods Statuses:    0 Active / 1 Succeeded / 0 Failed\n",
        "    Command:\n      sh\n      -c\n      echo 3.14\n",
    ] {
        assert!(text.contains(line), "{line:?} not in:\n{text}");
    }
    let node = describe("Node", &nodes()[1], &[], now());
    for line in [
        "Roles:              gpu,worker\n",
        "Unschedulable:      true\n",
        "Taints:             <none>\n",
    ] {
        assert!(node.contains(line), "{line:?} not in:\n{node}");
    }
    let secret = json!({"metadata": meta("creds", Some("default"), FIVE_M), "type": "Opaque",
        "data": {"password": "cGFzc3dvcmQ="}});
    let text = describe("Secret", &secret, &[], now());
    assert!(text.contains("password:  8 bytes\n"), "{text}");
    assert!(!text.contains("cGFzc3dvcmQ"), "{text}");
}

#[test]
fn output_formats() {
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "v"}});
    assert_eq!(
        to_json(&cm),
        "{\n    \"apiVersion\": \"v1\",\n    \"data\": {\n        \"k\": \"v\"\n    },\n    \"kind\": \"ConfigMap\",\n    \"metadata\": {\n        \"name\": \"c\"\n    }\n}\n"
    );
    assert_eq!(
        to_yaml(&cm),
        "apiVersion: v1\ndata:\n  k: v\nkind: ConfigMap\nmetadata:\n  name: c\n"
    );
    assert_eq!(
        to_yaml(&json!([cm])),
        "apiVersion: v1\nitems:\n- apiVersion: v1\n  data:\n    k: v\n  kind: ConfigMap\n  metadata:\n    name: c\nkind: List\nmetadata:\n  resourceVersion: ''\n"
    );
    let parsed: Value = serde_json::from_str(&to_json(&json!([]))).unwrap();
    assert_eq!(
        parsed,
        json!({"apiVersion": "v1", "kind": "List", "items": [], "metadata": {"resourceVersion": ""}})
    );
    assert_eq!(
        name_line("deployment.apps", &json!({"metadata": {"name": "web"}})),
        "deployment.apps/web"
    );
}

#[test]
fn describe_node() {
    let mut m = meta("node-1", None, FORTY5_D);
    m["labels"] =
        json!({"kubernetes.io/hostname": "node-1", "node-role.kubernetes.io/control-plane": ""});
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": m,
        "spec": {"taints": [{"key": "dedicated", "value": "batch", "effect": "NoSchedule"}]},
        "status": {
            "conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": "2026-11-26T18:45:00Z",
                "lastTransitionTime": "2026-10-12T18:46:00Z", "reason": "KubeletReady",
                "message": "kubelet is posting ready status"}],
            "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}, {"type": "Hostname", "address": "node-1"}],
            "capacity": {"memory": "8Gi", "cpu": "4"}}});
    check(&describe("Node", &node, &[], now()), DESCRIBE_NODE);
}

// Expected output, laid out by hand from kubectl's column rules.
const PODS: &str = r#"
NAME               READY   STATUS             RESTARTS     AGE
web-7d4b9c-abcde   1/1     Running            0            5m5s
api-0              1/2     CrashLoopBackOff   4 (2m ago)   3h5m
pending-pod        0/1     Pending            0            2d
old-pod            1/1     Terminating        0            10d
init-pod           0/1     Init:0/1           0            30s
"#;
const PODS_WIDE_ALL_NS: &str = r#"
NAMESPACE   NAME               READY   STATUS    RESTARTS   AGE    IP           NODE     NOMINATED NODE
default     web-7d4b9c-abcde   1/1     Running   0          5m5s   10.244.1.5   node-1   <none>
prod        pending-pod        0/1     Pending   0          2d     <none>       <none>   <none>
"#;
const DEPLOYMENTS: &str = r#"
NAME   READY   UP-TO-DATE   AVAILABLE   AGE
web    2/3     3            2           45d
api    0/1     0            0           8h
"#;
const DEPLOYMENTS_WIDE_KIND_LABELS: &str = r#"
NAME                  READY   UP-TO-DATE   AVAILABLE   AGE   CONTAINERS    IMAGES              SELECTOR               LABELS
deployment.apps/web   2/3     3            2           45d   nginx         nginx:1.27          app=web                app=web
deployment.apps/api   0/1     0            0           8h    api,sidecar   api:v2,envoy:1.30   app=api,tier=backend   <none>
"#;
const REPLICASETS: &str = r#"
NAME         DESIRED   CURRENT   READY   AGE
web-7d4b9c   3         3         3       5m5s
"#;
const RCS_WIDE: &str = r#"
NAME       DESIRED   CURRENT   READY   AGE   CONTAINERS   IMAGES   SELECTOR
frontend   2         1         0       3h    php          php:8    app=frontend
"#;
const JOBS: &str = r#"
NAME        COMPLETIONS   DURATION   AGE
pi          1/1           35s        5m45s
batch       0/1 of 3      10m        10m
unstarted   0/5                      5s
"#;
const CRON_JOBS: &str = r#"
NAME      SCHEDULE      TIMEZONE       SUSPEND   ACTIVE   LAST SCHEDULE   AGE
report    0 * * * *     Europe/Paris   False     1        45s             10m
cleanup   */5 * * * *   <none>         True      0        <none>          5s
"#;
const DAEMON_SETS: &str = r#"
NAME   DESIRED   CURRENT   READY   UP-TO-DATE   AVAILABLE   NODE SELECTOR         AGE
logs   3         3         2       1            2           arch=amd64,disk=ssd   10m
"#;
const SERVICES: &str = r#"
NAME           TYPE           CLUSTER-IP   EXTERNAL-IP        PORT(S)                      AGE
web            ClusterIP      10.96.0.10   <none>             80/TCP                       45d
web-nodeport   NodePort       10.96.0.11   <none>             80:30080/TCP,443:30443/TCP   2d
lb             LoadBalancer   10.96.0.12   <pending>          53/UDP                       8h
lb2            LoadBalancer   10.96.0.13   203.0.113.10,...   80:31000/TCP                 8h
ext            ExternalName   <none>       db.example.test    <none>                       30s
"#;
const SERVICES_WIDE: &str = r#"
NAME   TYPE           CLUSTER-IP   EXTERNAL-IP                    PORT(S)        AGE   SELECTOR
web    ClusterIP      10.96.0.10   <none>                         80/TCP         45d   app=web
lb2    LoadBalancer   10.96.0.13   203.0.113.10,lb.example.test   80:31000/TCP   8h    <none>
"#;
const ENDPOINTS: &str = r#"
NAME       ENDPOINTS                                               AGE
web        10.0.0.1:80,10.0.0.2:80                                 5m5s
many       10.0.1.1:8080,10.0.1.2:8080,10.0.1.3:8080 + 2 more...   5m5s
headless   10.0.2.1                                                5m5s
empty      <none>                                                  5m5s
v6         [fd00::1]:80                                            5m5s
"#;
const ENDPOINT_SLICES: &str = r#"
NAME          ADDRESSTYPE   PORTS     ENDPOINTS                                AGE
web-abcde     IPv4          80,443    10.0.0.1,10.0.0.2,10.0.0.3 + 1 more...   5m5s
empty-xyz12   IPv4          <unset>   <unset>                                  5m5s
"#;
const INGRESSES: &str = r#"
NAME       CLASS    HOSTS                              ADDRESS     PORTS     AGE
web        nginx    web.example.test                   192.0.2.1   80        45d
catchall   <none>   *                                              80, 443   2d
many       <none>   a.test,b.test,c.test + 1 more...               80        8h
"#;
const NODES: &str = r#"
NAME     STATUS                        ROLES           AGE    VERSION
node-1   Ready                         control-plane   45d    v1.31.0
node-2   NotReady,SchedulingDisabled   gpu,worker      8d     
node-3   Unknown                       <none>          5m5s   v1.31.0
"#;
const NODES_WIDE: &str = r#"
NAME     STATUS    ROLES           AGE    VERSION   INTERNAL-IP   EXTERNAL-IP   OS-IMAGE                         KERNEL-VERSION   CONTAINER-RUNTIME
node-1   Ready     control-plane   45d    v1.31.0   10.0.0.1      203.0.113.1   Debian GNU/Linux 12 (bookworm)   6.1.0-18-amd64   containerd://1.7.13
node-3   Unknown   <none>          5m5s   v1.31.0   <none>        <none>        <unknown>                        <unknown>        <unknown>
"#;
const NODEPOOLS: &str = r#"
NAME      NODES   READY   MIN   MAX      MACHINE    AGE
batch     2       1       0     5        4cpu/8Gi   45d
general   0       0       1     <none>   <none>     8h
"#;
const NAMESPACES: &str = r#"
NAME          STATUS        AGE
default       Active        45d
kube-system   Active        45d
doomed        Terminating   30s
"#;
const CONFIGMAPS_ALL_NS_LABELS: &str = r#"
NAMESPACE   NAME         DATA   AGE    LABELS
default     web-config   3      5m5s   app=web,tier=frontend
prod        empty        0      2d     <none>
"#;
const SECRETS: &str = r#"
NAME      TYPE                DATA   AGE
creds     Opaque              2      5m5s
web-tls   kubernetes.io/tls   2      45d
plain     Opaque              1      30s
"#;
const EVENTS: &str = r#"
LAST SEEN   TYPE      REASON      OBJECT      MESSAGE
60s         Normal    Scheduled   pod/web-1   Successfully assigned default/web-1 to node-1
30s         Warning   BackOff     pod/web-1   Back-off restarting failed container
"#;
const EVENTS_WIDE: &str = r#"
LAST SEEN   TYPE      REASON      OBJECT      SUBOBJECT              SOURCE              MESSAGE                                         FIRST SEEN   COUNT   NAME
60s         Normal    Scheduled   pod/web-1                          default-scheduler   Successfully assigned default/web-1 to node-1   60s          1       web-1.1
30s         Warning   BackOff     pod/web-1   spec.containers{web}   kubelet, node-1     Back-off restarting failed container            10m          7       web-1.2
"#;
const UNKNOWN_KIND: &str = r#"
NAME    AGE
gizmo   5m5s
"#;
const DESCRIBE_POD_NO_EVENTS: &str = r#"
Name:             web-1
Namespace:        default
Service Account:  default
Node:             node-1/10.0.0.1
Start Time:       Thu, 26 Nov 2026 18:40:41 +0000
Labels:           app=web
                  pod-template-hash=abc
Annotations:      <none>
Status:           Running
IP:               10.244.1.5
IPs:
  IP:           10.244.1.5
Controlled By:  ReplicaSet/web-abc
Containers:
  web:
    Container ID:   containerd://abc
    Image:          nginx:1.27
    Image ID:       docker.io/library/nginx@sha256:123
    Port:           80/TCP
    Host Port:      0/TCP
    State:          Running
      Started:      Thu, 26 Nov 2026 18:40:43 +0000
    Ready:          True
    Restart Count:  0
    Requests:
      cpu:        100m
      memory:     64Mi
    Readiness:    http-get http://:80/ delay=0s timeout=1s period=10s #success=1 #failure=3
    Environment:  <none>
    Mounts:       <none>
Conditions:
  Type              Status
  Initialized       True
  Ready             True
  ContainersReady   True
  PodScheduled      True
Volumes:            <none>
QoS Class:          Burstable
Node-Selectors:     <none>
Tolerations:        node.kubernetes.io/not-ready:NoExecute op=Exists for 300s
Events:             <none>
"#;
const DESCRIBE_POD_EVENTS: &str = r#"
Name:             web-1
Namespace:        default
Service Account:  default
Node:             node-1/10.0.0.1
Start Time:       Thu, 26 Nov 2026 18:40:41 +0000
Labels:           app=web
                  pod-template-hash=abc
Annotations:      <none>
Status:           Running
IP:               10.244.1.5
IPs:
  IP:           10.244.1.5
Controlled By:  ReplicaSet/web-abc
Containers:
  web:
    Container ID:   containerd://abc
    Image:          nginx:1.27
    Image ID:       docker.io/library/nginx@sha256:123
    Port:           80/TCP
    Host Port:      0/TCP
    State:          Running
      Started:      Thu, 26 Nov 2026 18:40:43 +0000
    Ready:          True
    Restart Count:  0
    Requests:
      cpu:        100m
      memory:     64Mi
    Readiness:    http-get http://:80/ delay=0s timeout=1s period=10s #success=1 #failure=3
    Environment:  <none>
    Mounts:       <none>
Conditions:
  Type              Status
  Initialized       True
  Ready             True
  ContainersReady   True
  PodScheduled      True
Volumes:            <none>
QoS Class:          Burstable
Node-Selectors:     <none>
Tolerations:        node.kubernetes.io/not-ready:NoExecute op=Exists for 300s
Events:
  Type     Reason     Age               From               Message
  ----     ------     ----              ----               -------
  Normal   Scheduled  5m5s              default-scheduler  Successfully assigned default/web-1 to node-1
  Normal   Pulled     5m3s              kubelet            Container image "nginx:1.27" already present on machine
  Warning  BackOff    60s (x3 over 4m)  kubelet            Back-off restarting failed container
"#;
const DESCRIBE_DEPLOYMENT_NO_EVENTS: &str = r#"
Name:                   web
Namespace:              default
CreationTimestamp:      Mon, 12 Oct 2026 18:45:45 +0000
Labels:                 app=web
Annotations:            deployment.kubernetes.io/revision: 1
Selector:               app=web
Replicas:               3 desired | 3 updated | 3 total | 3 available | 0 unavailable
StrategyType:           RollingUpdate
MinReadySeconds:        0
RollingUpdateStrategy:  25% max unavailable, 25% max surge
Pod Template:
  Labels:  app=web
  Containers:
   nginx:
    Image:         nginx:1.27
    Port:          80/TCP
    Host Port:     0/TCP
    Environment:   <none>
    Mounts:        <none>
  Volumes:         <none>
  Node-Selectors:  <none>
  Tolerations:     <none>
Conditions:
  Type          Status  Reason
  ----          ------  ------
  Available     True    MinimumReplicasAvailable
  Progressing   True    NewReplicaSetAvailable
Events:         <none>
"#;
const DESCRIBE_DEPLOYMENT_EVENTS: &str = r#"
Name:                   web
Namespace:              default
CreationTimestamp:      Mon, 12 Oct 2026 18:45:45 +0000
Labels:                 app=web
Annotations:            deployment.kubernetes.io/revision: 1
Selector:               app=web
Replicas:               3 desired | 3 updated | 3 total | 3 available | 0 unavailable
StrategyType:           RollingUpdate
MinReadySeconds:        0
RollingUpdateStrategy:  25% max unavailable, 25% max surge
Pod Template:
  Labels:  app=web
  Containers:
   nginx:
    Image:         nginx:1.27
    Port:          80/TCP
    Host Port:     0/TCP
    Environment:   <none>
    Mounts:        <none>
  Volumes:         <none>
  Node-Selectors:  <none>
  Tolerations:     <none>
Conditions:
  Type          Status  Reason
  ----          ------  ------
  Available     True    MinimumReplicasAvailable
  Progressing   True    NewReplicaSetAvailable
Events:
  Type    Reason             Age   From                   Message
  ----    ------             ----  ----                   -------
  Normal  ScalingReplicaSet  10m   deployment-controller  Scaled up replica set web-7d4b9c to 3
"#;
const DESCRIBE_SERVICE: &str = r#"
Name:              web-nodeport
Namespace:         default
Labels:            app=web
Annotations:       <none>
Selector:          app=web
Type:              NodePort
IP:                10.96.0.11
IPs:               10.96.0.11
Port:              http  80/TCP
TargetPort:        8080/TCP
NodePort:          http  30080/TCP
Session Affinity:  None
Events:            <none>
"#;
const DESCRIBE_NODEPOOL: &str = r#"
Name:         batch
Labels:       <none>
Annotations:  <none>
Machine:      4cpu/8Gi
Size:         min 0, max 5, target 2 (nodes 2, 1 ready)
Autoscaler:   scaled up from 1 to 2 (max 5) for 1 pending pod(s): batch-x7k2p
Kept:
  batch-b4c5d: pod default/solo keeps it: not replicated: no controller owns it
Spec:
  labels:
    pool: batch
  machine:
    cpu: '4'
    memory: 8Gi
  maxSize: 5
  minSize: 0
  taints:
  - effect: NoSchedule
    key: dedicated
    value: batch
Status:
  blocked:
  - name: batch-b4c5d
    reason: 'pod default/solo keeps it: not replicated: no controller owns it'
  message: 'scaled up from 1 to 2 (max 5) for 1 pending pod(s): batch-x7k2p'
  nodes: 2
  readyNodes: 1
  targetSize: 2
Events:  <none>
"#;
const DESCRIBE_NODE: &str = r#"
Name:               node-1
Roles:              control-plane
Labels:             kubernetes.io/hostname=node-1
                    node-role.kubernetes.io/control-plane=
Annotations:        <none>
CreationTimestamp:  Mon, 12 Oct 2026 18:45:45 +0000
Taints:             dedicated=batch:NoSchedule
Unschedulable:      false
Conditions:
  Type    Status  LastHeartbeatTime                 LastTransitionTime                Reason         Message
  ----    ------  -----------------                 ------------------                ------         -------
  Ready   True    Thu, 26 Nov 2026 18:45:00 +0000   Mon, 12 Oct 2026 18:46:00 +0000   KubeletReady   kubelet is posting ready status
Addresses:
  InternalIP:  10.0.0.1
  Hostname:    node-1
Capacity:
  cpu:     4
  memory:  8Gi
Events:    <none>
"#;
