//! Admission tests: decoding, defaults, every validation rule with its
//! exact message, updates.

use serde_json::{json, Value};

use super::*;
use crate::registry::{
    CONFIG_MAP, DEPLOYMENT, ENDPOINTS, EVENT, INGRESS, INGRESS_CLASS, JOB, NAMESPACE, NODE,
    NODE_POOL, POD, REPLICATION_CONTROLLER, REPLICA_SET, SECRET, SERVICE,
};

fn ok(info: &'static ResourceInfo, v: Value) -> Admitted {
    match admit(info, v) {
        Ok(a) => a,
        Err(e) => panic!("rejected: {}", invalid_message(info, "x", &e)),
    }
}

fn errors(info: &'static ResourceInfo, v: Value) -> Vec<String> {
    match admit(info, v) {
        Ok(a) => panic!("admitted: {}", a.object),
        Err(e) => e.iter().map(ToString::to_string).collect(),
    }
}

fn container() -> Value {
    json!({"name": "web", "image": "nginx:1.25"})
}

fn pod(spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"}, "spec": spec})
}

fn pod_errors(spec: Value) -> Vec<String> {
    errors(&POD, pod(spec))
}

fn deployment(spec: Value) -> Value {
    let mut base = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [container()]}}
        }
    });
    crate::patch::merge_patch(&mut base, &json!({ "spec": spec }));
    base
}

fn job(spec: Value) -> Value {
    let mut base = json!({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "pi"},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "pi", "image": "perl:5.34"}]}}}
    });
    crate::patch::merge_patch(&mut base, &json!({ "spec": spec }));
    base
}

fn service(spec: Value) -> Value {
    let mut base = json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}
    });
    crate::patch::merge_patch(&mut base, &json!({ "spec": spec }));
    base
}

// ------------------------------------------------------------------- display

#[test]
fn field_error_display_matches_kubernetes() {
    assert_eq!(
        FieldError::required("spec.template.spec.containers[0].image", "").to_string(),
        "spec.template.spec.containers[0].image: Required value"
    );
    assert_eq!(
        FieldError::invalid("spec.replicas", "-1", "must be greater than or equal to 0")
            .to_string(),
        "spec.replicas: Invalid value: -1: must be greater than or equal to 0"
    );
    assert_eq!(
        FieldError::not_supported("spec.template.spec.restartPolicy", "Sometimes", &["Always", "OnFailure", "Never"])
            .to_string(),
        "spec.template.spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\""
    );
    assert_eq!(
        FieldError::duplicate("spec.ports[1].name", quote("http")).to_string(),
        "spec.ports[1].name: Duplicate value: \"http\""
    );
    assert_eq!(
        FieldError::forbidden("spec", "no").to_string(),
        "spec: Forbidden: no"
    );
    assert_eq!(
        FieldError::too_long("metadata.annotations", 262144).to_string(),
        "metadata.annotations: Too long: may not be more than 262144 bytes"
    );
    assert_eq!(
        FieldError::not_found("a.name", "data").to_string(),
        "a.name: Not found: \"data\""
    );
    assert_eq!(
        FieldErrorKind::TypeInvalid.reason(),
        "FieldValueTypeInvalid"
    );
}

#[test]
fn invalid_message_names_kind_group_and_name() {
    let errs = vec![
        FieldError::required("spec.selector", ""),
        FieldError::invalid("spec.replicas", "-1", "must be greater than or equal to 0"),
    ];
    assert_eq!(
        invalid_message(&DEPLOYMENT, "web", &errs),
        "Deployment.apps \"web\" is invalid: spec.selector: Required value, spec.replicas: Invalid value: -1: must be greater than or equal to 0"
    );
    assert_eq!(
        invalid_message(&POD, "p", &errs[..1]),
        "Pod \"p\" is invalid: spec.selector: Required value"
    );
}

// ------------------------------------------------------------------ decoding

#[test]
fn unknown_fields_are_warned_with_full_paths() {
    let mut d = deployment(json!({}));
    d["spec"]["template"]["spec"]["containers"][0]["imagePullSecretz"] = json!(["x"]);
    d["spec"]["bogus"] = json!({"a": 1});
    d["metadata"]["labelz"] = json!({});
    d["extra"] = json!(1);
    let a = ok(&DEPLOYMENT, d);
    assert_eq!(
        a.warnings,
        vec![
            "unknown field \"extra\"",
            "unknown field \"metadata.labelz\"",
            "unknown field \"spec.bogus\"",
            "unknown field \"spec.template.spec.containers[0].imagePullSecretz\"",
        ]
    );
    assert_eq!(a.object.get("extra"), None);
    assert_eq!(a.object["spec"].get("bogus"), None);
    assert_eq!(
        a.object["spec"]["template"]["spec"]["containers"][0].get("imagePullSecretz"),
        None
    );
}

#[test]
fn type_errors_name_the_field() {
    assert_eq!(
        errors(&DEPLOYMENT, deployment(json!({"replicas": "three"}))),
        vec!["spec.replicas: Invalid value: \"three\": expected int32"]
    );
    assert_eq!(
        errors(&DEPLOYMENT, deployment(json!({"template": {"spec": {"containers": [{"name": "a", "ports": [{"containerPort": "80"}]}]}}}))),
        vec!["spec.template.spec.containers[0].ports[0].containerPort: Invalid value: \"80\": expected int32"]
    );
    assert_eq!(
        pod_errors(json!({"containers": {"name": "a"}})),
        vec!["spec.containers: Invalid value: {\"name\":\"a\"}: expected array"]
    );
    assert_eq!(
        pod_errors(json!({"containers": [container()], "hostNetwork": "yes"})),
        vec!["spec.hostNetwork: Invalid value: \"yes\": expected boolean"]
    );
    assert_eq!(
        pod_errors(json!({"containers": [null]})),
        vec!["spec.containers[0]: Invalid value: null: expected object"]
    );
    assert_eq!(
        pod_errors(json!({"containers": [container()], "priority": 5_000_000_000u64})),
        vec!["spec.priority: Invalid value: 5000000000: expected int32"]
    );
    assert_eq!(
        errors(
            &POD,
            json!({"metadata": {"name": "p", "creationTimestamp": "yesterday"}})
        ),
        vec!["metadata.creationTimestamp: Invalid value: \"yesterday\": expected RFC 3339 time"]
    );
    assert_eq!(
        errors(&POD, json!({"metadata": {"name": "p", "labels": {"a": 1}}})),
        vec!["metadata.labels.a: Invalid value: 1: expected string"]
    );
    assert_eq!(
        errors(
            &SERVICE,
            service(json!({"ports": [{"port": 80, "targetPort": true}]}))
        ),
        vec!["spec.ports[0].targetPort: Invalid value: true: expected int32 or string"]
    );
    assert_eq!(
        errors(&POD, json!([1, 2])),
        vec!["Invalid value: [1,2]: expected object"]
    );
    assert_eq!(
        errors(&POD, json!("pod")),
        vec!["Invalid value: \"pod\": expected object"]
    );
}

#[test]
fn api_version_and_kind_must_be_the_kinds() {
    let mut d = deployment(json!({}));
    d["apiVersion"] = json!("apps/v1beta1");
    d["kind"] = json!("StatefulSet");
    assert_eq!(
        errors(&DEPLOYMENT, d),
        vec![
            "apiVersion: Unsupported value: \"apps/v1beta1\": supported values: \"apps/v1\"",
            "kind: Unsupported value: \"StatefulSet\": supported values: \"Deployment\"",
        ]
    );
    // Absent: filled in.
    let a = ok(&NODE_POOL, json!({"metadata": {"name": "gpu"}}));
    assert_eq!(a.object["apiVersion"], "flotilla.dev/v1");
    assert_eq!(a.object["kind"], "NodePool");
}

#[test]
fn nulls_read_as_absent() {
    let mut d = deployment(json!({}));
    d["spec"]["replicas"] = Value::Null;
    d["status"] = Value::Null;
    // A null member of an object inside an array reads as absent too.
    d["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = Value::Null;
    let a = ok(&DEPLOYMENT, d);
    assert_eq!(a.object["spec"]["replicas"], 1);
    assert_eq!(a.object.get("status"), None);
    assert_eq!(
        a.object["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"],
        "IfNotPresent"
    );
    // Without the nulls (decoded in place, not copied): the same object.
    assert_eq!(ok(&DEPLOYMENT, deployment(json!({}))).object, a.object);
}

#[test]
fn malformed_input_never_panics() {
    let junk = [
        json!(null),
        json!(true),
        json!(1e300),
        json!(-9_223_372_036_854_775_808i64),
        json!(u64::MAX),
        json!("x"),
        json!([]),
        json!([[[]]]),
        json!({}),
        json!({"x": {"y": [null, 1, "a"]}}),
        json!([{"a": null}]),
        json!({"a": ""}),
    ];
    let mut shapes: Vec<Value> = Vec::new();
    for j in &junk {
        shapes.push(j.clone());
        shapes.push(json!({ "metadata": j }));
        shapes.push(json!({ "metadata": {"name": j, "labels": j, "ownerReferences": j, "creationTimestamp": j} }));
        shapes.push(json!({ "spec": j }));
        shapes.push(json!({ "status": j }));
        shapes.push(json!({ "data": j, "subsets": j, "involvedObject": j }));
        shapes.push(json!({ "spec": {"replicas": j, "selector": j, "template": j, "containers": j, "ports": j,
            "strategy": j, "rules": j, "taints": j, "machine": j, "type": j, "volumes": j} }));
        shapes.push(json!({ "spec": {"template": {"spec": {"containers": [j, {"name": j, "ports": [j], "env": j,
            "livenessProbe": {"httpGet": {"port": j}}, "resources": {"limits": j}}]}}} }));
        shapes.push(json!({ "spec": {"containers": [{"name": "a", "image": "b", "resources": {"limits": {"cpu": j}}}]} }));
        shapes
            .push(json!({ "spec": {"rules": [{"host": j, "http": {"paths": [{"backend": j}]}}]} }));
    }
    for info in crate::RESOURCES {
        for s in &shapes {
            // Must return, not panic; the outcome itself is not the point.
            let _ = admit(info, s.clone());
            let _ = validate_update(info, s, s);
        }
    }
    // And a few precise outcomes among them.
    assert_eq!(
        errors(&POD, json!({"metadata": {"name": 1e300}})),
        vec!["metadata.name: Invalid value: 1e+300: expected string"]
    );
    assert_eq!(
        errors(
            &DEPLOYMENT,
            json!({"metadata": {"name": "d"}, "spec": {"replicas": u64::MAX}})
        ),
        vec!["spec.replicas: Invalid value: 18446744073709551615: expected int32"]
    );
}

// ------------------------------------------------------------------ metadata

#[test]
fn names_follow_the_kinds_rule() {
    let meta =
        |name: &str| json!({"metadata": {"name": name}, "spec": {"containers": [container()]}});
    assert_eq!(
        errors(&POD, meta("Web_1")),
        vec!["metadata.name: Invalid value: \"Web_1\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"]
    );
    ok(&POD, meta("web.v1-2"));
    assert_eq!(
        errors(&NAMESPACE, json!({"metadata": {"name": "a.b"}})),
        vec!["metadata.name: Invalid value: \"a.b\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character"]
    );
    assert_eq!(
        errors(&SERVICE, json!({"metadata": {"name": "1web"}, "spec": {"ports": [{"port": 80}]}})),
        vec!["metadata.name: Invalid value: \"1web\": a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character"]
    );
    let long = "a".repeat(254);
    assert_eq!(
        errors(&POD, meta(&long)),
        vec![format!(
            "metadata.name: Invalid value: \"{long}\": must be no more than 253 characters"
        )]
    );
    assert_eq!(
        errors(&POD, json!({"spec": {"containers": [container()]}})),
        vec!["metadata.name: Required value: name or generateName is required"]
    );
    ok(
        &POD,
        json!({"metadata": {"generateName": "web-"}, "spec": {"containers": [container()]}}),
    );
    assert_eq!(
        errors(&POD, json!({"metadata": {"generateName": "Web-"}, "spec": {"containers": [container()]}})),
        vec!["metadata.generateName: Invalid value: \"Web-\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"]
    );
}

#[test]
fn metadata_rules() {
    let mut p = pod(json!({"containers": [container()]}));
    p["metadata"]["namespace"] = json!("Prod");
    assert_eq!(
        errors(&POD, p),
        vec!["metadata.namespace: Invalid value: \"Prod\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character"]
    );
    assert_eq!(
        errors(
            &NODE,
            json!({"metadata": {"name": "n1", "namespace": "default"}})
        ),
        vec!["metadata.namespace: Forbidden: not allowed on this type"]
    );

    let mut p = pod(json!({"containers": [container()]}));
    p["metadata"]["labels"] =
        json!({"app": "web", "example.com/tier": "front", "bad key": "x", "ok": "-bad"});
    assert_eq!(
        errors(&POD, p),
        vec![
            "metadata.labels: Invalid value: \"bad key\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
            "metadata.labels: Invalid value: \"-bad\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
        ]
    );
    let mut p = pod(json!({"containers": [container()]}));
    p["metadata"]["labels"] = json!({"a": "x".repeat(64)});
    assert_eq!(
        errors(&POD, p),
        vec![format!(
            "metadata.labels: Invalid value: \"{}\": must be no more than 63 characters",
            "x".repeat(64)
        )]
    );

    let mut p = pod(json!({"containers": [container()]}));
    p["metadata"]["annotations"] = json!({"big": "x".repeat(256 * 1024)});
    assert_eq!(
        errors(&POD, p),
        vec!["metadata.annotations: Too long: may not be more than 262144 bytes"]
    );

    let mut p = pod(json!({"containers": [container()]}));
    p["metadata"]["ownerReferences"] = json!([
        {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "r", "uid": "1", "controller": true},
        {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "s", "controller": true}
    ]);
    assert_eq!(
        errors(&POD, p),
        vec![
            "metadata.ownerReferences[1].uid: Required value",
            "metadata.ownerReferences: Invalid value: 2: Only one reference can have Controller set to true",
        ]
    );
}

// ----------------------------------------------------------------------- pod

#[test]
fn pod_defaults() {
    let a = ok(
        &POD,
        pod(json!({
            "containers": [
                {"name": "a", "image": "nginx", "ports": [{"containerPort": 80}],
                 "livenessProbe": {"httpGet": {"port": 80}},
                 "readinessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 5},
                 "resources": {"limits": {"cpu": "500m"}}},
                {"name": "b", "image": "redis:7"},
                {"name": "c", "image": "redis:latest", "imagePullPolicy": "Never"}
            ],
            "volumes": [{"name": "cfg", "configMap": {"name": "c"}}]
        })),
    );
    let spec = &a.object["spec"];
    assert_eq!(spec["restartPolicy"], "Always");
    assert_eq!(spec["dnsPolicy"], "ClusterFirst");
    assert_eq!(spec["terminationGracePeriodSeconds"], 30);
    assert_eq!(spec["schedulerName"], "default-scheduler");
    assert_eq!(spec["volumes"][0]["configMap"]["defaultMode"], 420);
    let c = &spec["containers"];
    assert_eq!(c[0]["imagePullPolicy"], "Always");
    assert_eq!(c[1]["imagePullPolicy"], "IfNotPresent");
    assert_eq!(c[2]["imagePullPolicy"], "Never");
    assert_eq!(
        c[0]["ports"][0],
        json!({"containerPort": 80, "protocol": "TCP"})
    );
    assert_eq!(
        c[0]["livenessProbe"],
        json!({"httpGet": {"path": "/", "port": 80, "scheme": "HTTP"}, "periodSeconds": 10, "timeoutSeconds": 1,
               "successThreshold": 1, "failureThreshold": 3})
    );
    assert_eq!(c[0]["readinessProbe"]["periodSeconds"], 5);
    assert_eq!(
        c[0]["resources"],
        json!({"limits": {"cpu": "500m"}, "requests": {"cpu": "500m"}})
    );
    assert!(a.warnings.is_empty());
}

#[test]
fn pod_container_rules() {
    assert_eq!(
        pod_errors(json!({})),
        vec!["spec.containers: Required value"]
    );
    assert_eq!(
        pod_errors(json!({"containers": [{"name": "web"}]})),
        vec!["spec.containers[0].image: Required value"]
    );
    assert_eq!(
        pod_errors(json!({"containers": [{"image": "x"}]})),
        vec!["spec.containers[0].name: Required value"]
    );
    assert_eq!(
        pod_errors(json!({"containers": [{"name": "Web", "image": "x"}]})),
        vec!["spec.containers[0].name: Invalid value: \"Web\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character"]
    );
    assert_eq!(
        pod_errors(json!({"containers": [container()], "initContainers": [container()]})),
        vec!["spec.initContainers[0].name: Duplicate value: \"web\""]
    );
    assert_eq!(
        pod_errors(json!({"containers": [{"name": "a", "image": "x", "ports": [
            {"containerPort": 70000}, {"containerPort": 80, "hostPort": -1}, {"containerPort": 81, "protocol": "HTTP"},
            {"containerPort": 82, "name": "http"}, {"containerPort": 83, "name": "http"}, {"containerPort": 84, "name": "8080"}
        ]}]})),
        vec![
            "spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
            "spec.containers[0].ports[1].hostPort: Invalid value: -1: must be between 1 and 65535, inclusive",
            "spec.containers[0].ports[2].protocol: Unsupported value: \"HTTP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
            "spec.containers[0].ports[4].name: Duplicate value: \"http\"",
            "spec.containers[0].ports[5].name: Invalid value: \"8080\": must contain at least one letter (a-z)",
        ]
    );
    assert_eq!(
        pod_errors(json!({"containers": [{"name": "a", "image": "x", "imagePullPolicy": "Sometimes"}]})),
        vec!["spec.containers[0].imagePullPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"IfNotPresent\", \"Never\""]
    );
}

#[test]
fn pod_env_and_resources() {
    assert_eq!(
        pod_errors(json!({"containers": [{"name": "a", "image": "x", "env": [
            {"value": "1"},
            {"name": "A=B"},
            {"name": "C", "value": "x", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "D", "valueFrom": {}},
            {"name": "E", "valueFrom": {"configMapKeyRef": {"name": "c"}, "secretKeyRef": {"name": "s", "key": "k"}}},
            {"name": "F", "valueFrom": {"fieldRef": {"fieldPath": "spec.foo"}}},
            {"name": "G", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}}
        ]}]})),
        vec![
            "spec.containers[0].env[0].name: Required value",
            "spec.containers[0].env[1].name: Invalid value: \"A=B\": a valid environment variable name must consist only of printable ASCII characters other than '='",
            "spec.containers[0].env[2].valueFrom: Invalid value: \"\": may not be specified when `value` is not empty",
            "spec.containers[0].env[3].valueFrom: Invalid value: \"\": must specify one of: `fieldRef`, `configMapKeyRef` or `secretKeyRef`",
            "spec.containers[0].env[4].valueFrom: Invalid value: \"\": may not have more than one field specified at a time",
            "spec.containers[0].env[4].valueFrom.configMapKeyRef.key: Required value",
            "spec.containers[0].env[5].valueFrom.fieldRef.fieldPath: Unsupported value: \"spec.foo\": supported values: \"metadata.annotations\", \"metadata.labels\", \"metadata.name\", \"metadata.namespace\", \"metadata.uid\", \"spec.nodeName\", \"spec.serviceAccountName\", \"status.hostIP\", \"status.podIP\", \"status.podIPs\"",
        ]
    );
    for q in ["100m", "1", "0.5", "128Mi", "1G", "1e3"] {
        ok(
            &POD,
            pod(
                json!({"containers": [{"name": "a", "image": "x", "resources": {"requests": {"cpu": q}}}]}),
            ),
        );
    }
    assert_eq!(
        pod_errors(json!({"containers": [{"name": "a", "image": "x", "resources": {
            "limits": {"cpu": "1", "memory": "lots"}, "requests": {"cpu": "2", "memory": "-1Mi"}}}]})),
        vec![
            "spec.containers[0].resources.limits[memory]: Invalid value: \"lots\": quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
            "spec.containers[0].resources.requests[cpu]: Invalid value: \"2\": must be less than or equal to cpu limit of 1",
            "spec.containers[0].resources.requests[memory]: Invalid value: \"-1Mi\": must be greater than or equal to 0",
        ]
    );
}

#[test]
fn pod_volumes_and_mounts() {
    assert_eq!(
        pod_errors(json!({
            "containers": [{"name": "a", "image": "x", "volumeMounts": [
                {"name": "data", "mountPath": "/data"},
                {"name": "cfg", "mountPath": "/data"},
                {"name": "cfg"},
                {"name": "cfg", "mountPath": "/c", "subPath": "../x"}
            ]}],
            "volumes": [
                {"name": "cfg", "configMap": {"name": "c", "defaultMode": 1000}},
                {"name": "cfg", "emptyDir": {}},
                {"name": "none"},
                {"name": "two", "emptyDir": {}, "hostPath": {"path": "/x"}},
                {"name": "Bad", "secret": {}},
                {"name": "hp", "hostPath": {"path": "/x", "type": "Folder"}},
                {"name": "mem", "emptyDir": {"medium": "Disk", "sizeLimit": "1Gb"}}
            ]
        })),
        vec![
            "spec.volumes[0].configMap.defaultMode: Invalid value: 1000: must be a number between 0 and 0777 (octal), both inclusive",
            "spec.volumes[1].name: Duplicate value: \"cfg\"",
            "spec.volumes[2]: Required value: must specify a volume type",
            "spec.volumes[3].hostPath: Forbidden: may not specify more than 1 volume type",
            "spec.volumes[4].name: Invalid value: \"Bad\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character",
            "spec.volumes[4].secret.secretName: Required value",
            "spec.volumes[5].hostPath.type: Unsupported value: \"Folder\": supported values: \"\", \"DirectoryOrCreate\", \"Directory\", \"FileOrCreate\", \"File\", \"Socket\", \"CharDevice\", \"BlockDevice\"",
            "spec.volumes[6].emptyDir.medium: Unsupported value: \"Disk\": supported values: \"\", \"Memory\"",
            "spec.volumes[6].emptyDir.sizeLimit: Invalid value: \"1Gb\": quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
            "spec.containers[0].volumeMounts[0].name: Not found: \"data\"",
            "spec.containers[0].volumeMounts[1].mountPath: Invalid value: \"/data\": must be unique",
            "spec.containers[0].volumeMounts[2].mountPath: Required value",
            "spec.containers[0].volumeMounts[3].subPath: Invalid value: \"../x\": must not contain '..'",
        ]
    );
}

#[test]
fn pod_probes() {
    assert_eq!(
        pod_errors(json!({"containers": [{"name": "a", "image": "x",
            "livenessProbe": {"successThreshold": 2, "exec": {"command": ["true"]}},
            "readinessProbe": {},
            "startupProbe": {"exec": {}, "tcpSocket": {"port": 0}, "timeoutSeconds": -1}
        }], "initContainers": [{"name": "i", "image": "x", "readinessProbe": {"tcpSocket": {"port": 1}}}]})),
        vec![
            "spec.containers[0].livenessProbe.successThreshold: Invalid value: 2: must be 1",
            "spec.containers[0].readinessProbe: Required value: must specify a handler type",
            "spec.containers[0].startupProbe.tcpSocket: Forbidden: may not specify more than 1 handler type",
            "spec.containers[0].startupProbe.exec.command: Required value",
            "spec.containers[0].startupProbe.tcpSocket.port: Invalid value: 0: must be between 1 and 65535, inclusive",
            "spec.containers[0].startupProbe.timeoutSeconds: Invalid value: -1: must be greater than or equal to 0",
            "spec.initContainers[0].readinessProbe: Forbidden: may not be set for init containers",
        ]
    );
    assert_eq!(
        pod_errors(json!({"containers": [{"name": "a", "image": "x",
            "readinessProbe": {"httpGet": {"port": "Http", "scheme": "FTP"}}}]})),
        vec![
            "spec.containers[0].readinessProbe.httpGet.port: Invalid value: \"Http\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
            "spec.containers[0].readinessProbe.httpGet.scheme: Unsupported value: \"FTP\": supported values: \"HTTP\", \"HTTPS\"",
        ]
    );
}

#[test]
fn pod_spec_rules() {
    assert_eq!(
        pod_errors(json!({"containers": [container()], "restartPolicy": "Sometimes", "dnsPolicy": "Google",
            "terminationGracePeriodSeconds": -5, "activeDeadlineSeconds": 0, "nodeSelector": {"disk": "ssd!"},
            "hostname": "Host"})),
        vec![
            "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"",
            "spec.dnsPolicy: Unsupported value: \"Google\": supported values: \"ClusterFirst\", \"ClusterFirstWithHostNet\", \"Default\", \"None\"",
            "spec.terminationGracePeriodSeconds: Invalid value: -5: must be greater than or equal to 0",
            "spec.activeDeadlineSeconds: Invalid value: 0: must be between 1 and 2147483647, inclusive",
            "spec.nodeSelector: Invalid value: \"ssd!\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
            "spec.hostname: Invalid value: \"Host\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character",
        ]
    );
    assert_eq!(
        pod_errors(json!({"containers": [container()], "tolerations": [
            {"operator": "Exists"},
            {"key": "k", "operator": "Exists", "value": "v"},
            {"operator": "Equal", "value": "v"},
            {"key": "k", "operator": "Like"},
            {"key": "k", "effect": "Never"},
            {"key": "k", "effect": "NoSchedule", "tolerationSeconds": 10},
            {"key": "k", "effect": "NoExecute", "tolerationSeconds": 10}
        ]})),
        vec![
            "spec.tolerations[1].operator: Invalid value: \"Exists\": value must be empty when `operator` is 'Exists'",
            "spec.tolerations[2].operator: Invalid value: \"Equal\": operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
            "spec.tolerations[3].operator: Unsupported value: \"Like\": supported values: \"Equal\", \"Exists\"",
            "spec.tolerations[4].effect: Unsupported value: \"Never\": supported values: \"NoExecute\", \"NoSchedule\", \"PreferNoSchedule\"",
            "spec.tolerations[5].effect: Invalid value: \"NoSchedule\": effect must be 'NoExecute' when `tolerationSeconds` is set",
        ]
    );
}

#[test]
fn pod_host_aliases() {
    let a = ok(
        &POD,
        pod(json!({"containers": [container()], "hostAliases": [
            {"ip": "10.1.2.3", "hostnames": ["foo.local", "bar"]}
        ]})),
    );
    assert_eq!(
        a.object["spec"]["hostAliases"],
        json!([{"ip": "10.1.2.3", "hostnames": ["foo.local", "bar"]}])
    );
    assert_eq!(
        pod_errors(json!({"containers": [container()], "hostAliases": [
            {"ip": "10.1.2", "hostnames": ["ok"]},
            {"ip": "fd00::1", "hostnames": ["Not_OK"]}
        ]})),
        vec![
            "spec.hostAliases[0].ip: Invalid value: \"10.1.2\": must be a valid IP address",
            "spec.hostAliases[1].hostnames[0]: Invalid value: \"Not_OK\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
        ]
    );
}

#[test]
fn pod_updates_change_only_images_deadline_and_tolerations() {
    let old = ok(&POD, pod(json!({"containers": [container()], "tolerations": [{"key": "a", "operator": "Exists"}]}))).object;
    let mut new = old.clone();
    new["spec"]["containers"][0]["image"] = json!("nginx:1.26");
    new["spec"]["activeDeadlineSeconds"] = json!(60);
    // An addition to the existing tolerations (admission added the
    // default not-ready and unreachable ones).
    let mut tolerations = old["spec"]["tolerations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(tolerations.len(), 3, "{tolerations:?}");
    tolerations.push(json!({"key": "b", "operator": "Exists"}));
    new["spec"]["tolerations"] = json!(tolerations);
    new["status"] = json!({"phase": "Running"});
    assert_eq!(validate_update(&POD, &old, &new), vec![]);

    let mut bad = old.clone();
    bad["spec"]["containers"][0]["args"] = json!(["-x"]);
    let errs: Vec<String> = validate_update(&POD, &old, &bad)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        errs,
        vec!["spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`, `spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` (only additions to existing tolerations)"]
    );
    let mut removed = old.clone();
    removed["spec"]["tolerations"] = json!([]);
    assert_eq!(validate_update(&POD, &old, &removed).len(), 1);
    let mut bound = old.clone();
    bound["spec"]["nodeName"] = json!("n1");
    assert_eq!(validate_update(&POD, &old, &bound).len(), 1);
}

// ------------------------------------------------------------ apps and batch

#[test]
fn deployment_defaults() {
    let a = ok(&DEPLOYMENT, deployment(json!({})));
    let spec = &a.object["spec"];
    assert_eq!(spec["replicas"], 1);
    assert_eq!(
        spec["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
    );
    assert_eq!(spec["revisionHistoryLimit"], 10);
    assert_eq!(spec["progressDeadlineSeconds"], 600);
    assert_eq!(spec["template"]["spec"]["restartPolicy"], "Always");
    assert_eq!(
        spec["template"]["spec"]["containers"][0]["imagePullPolicy"],
        "IfNotPresent"
    );
    let r = ok(
        &DEPLOYMENT,
        deployment(json!({"strategy": {"type": "Recreate"}, "replicas": 0})),
    );
    assert_eq!(r.object["spec"]["strategy"], json!({"type": "Recreate"}));
    assert_eq!(r.object["spec"]["replicas"], 0);
}

#[test]
fn deployment_rules() {
    assert_eq!(
        errors(&DEPLOYMENT, deployment(json!({"replicas": -1}))),
        vec!["spec.replicas: Invalid value: -1: must be greater than or equal to 0"]
    );
    assert_eq!(
        errors(&DEPLOYMENT, deployment(json!({"selector": {"matchLabels": {"app": "x"}}}))),
        vec!["spec.template.metadata.labels: Invalid value: {\"app\":\"web\"}: `selector` does not match template `labels`"]
    );
    assert_eq!(
        errors(&DEPLOYMENT, deployment(json!({"selector": null}))),
        vec!["spec.selector: Required value"]
    );
    assert_eq!(
        errors(
            &DEPLOYMENT,
            deployment(json!({"selector": {"matchLabels": null}}))
        ),
        vec!["spec.selector: Invalid value: {}: empty selector is invalid for deployment"]
    );
    assert_eq!(
        errors(&DEPLOYMENT, deployment(json!({"selector": {"matchExpressions": [
            {"key": "app", "operator": "In"}, {"key": "x", "operator": "Exists", "values": ["a"]}, {"key": "y", "operator": "Is"}]}}))),
        vec![
            "spec.selector.matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'",
            "spec.selector.matchExpressions[1].values: Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            "spec.selector.matchExpressions[2].operator: Unsupported value: \"Is\": supported values: \"In\", \"NotIn\", \"Exists\", \"DoesNotExist\"",
        ]
    );
    ok(
        &DEPLOYMENT,
        deployment(
            json!({"selector": {"matchLabels": null, "matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "api"]}]}}),
        ),
    );
    assert_eq!(
        errors(&DEPLOYMENT, deployment(json!({"template": {"spec": {"restartPolicy": "Never"}}}))),
        vec!["spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\""]
    );
    assert_eq!(
        errors(
            &DEPLOYMENT,
            deployment(json!({"template": {"spec": {"containers": [{"name": "web"}]}}}))
        ),
        vec!["spec.template.spec.containers[0].image: Required value"]
    );
    assert_eq!(
        errors(&DEPLOYMENT, deployment(json!({"strategy": {"type": "BlueGreen"}}))),
        vec!["spec.strategy.type: Unsupported value: \"BlueGreen\": supported values: \"Recreate\", \"RollingUpdate\""]
    );
    assert_eq!(
        errors(&DEPLOYMENT, deployment(json!({"strategy": {"type": "Recreate", "rollingUpdate": {}}}))),
        vec!["spec.strategy.rollingUpdate: Forbidden: may not be specified when strategy `type` is 'Recreate'"]
    );
    assert_eq!(
        errors(&DEPLOYMENT, deployment(json!({"strategy": {"rollingUpdate": {"maxUnavailable": 0, "maxSurge": "0%"}}}))),
        vec!["spec.strategy.rollingUpdate.maxUnavailable: Invalid value: 0: may not be 0 when `maxSurge` is 0"]
    );
    assert_eq!(
        errors(
            &DEPLOYMENT,
            deployment(json!({"replicas": -1, "strategy": {"rollingUpdate": {"maxUnavailable": "0%", "maxSurge": 0}}}))
        ),
        vec![
            "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
            "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: \"0%\": may not be 0 when `maxSurge` is 0",
        ]
    );
    assert_eq!(
        errors(&DEPLOYMENT, deployment(json!({"strategy": {"rollingUpdate": {"maxUnavailable": "110%", "maxSurge": -1}}}))),
        vec![
            "spec.strategy.rollingUpdate.maxSurge: Invalid value: -1: must be greater than or equal to 0",
            "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: \"110%\": must not be greater than 100%",
        ]
    );
    assert_eq!(
        errors(&DEPLOYMENT, deployment(json!({"strategy": {"rollingUpdate": {"maxSurge": "lots"}}}))),
        vec!["spec.strategy.rollingUpdate.maxSurge: Invalid value: \"lots\": a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')"]
    );
    assert_eq!(
        errors(&DEPLOYMENT, deployment(json!({"minReadySeconds": 700, "revisionHistoryLimit": -1}))),
        vec![
            "spec.revisionHistoryLimit: Invalid value: -1: must be greater than or equal to 0",
            "spec.progressDeadlineSeconds: Invalid value: 600: must be greater than minReadySeconds",
        ]
    );
}

#[test]
fn selector_is_immutable() {
    let old = ok(&DEPLOYMENT, deployment(json!({}))).object;
    let mut new = old.clone();
    new["spec"]["replicas"] = json!(5);
    assert_eq!(validate_update(&DEPLOYMENT, &old, &new), vec![]);
    new["spec"]["selector"] = json!({"matchLabels": {"app": "web", "v": "2"}});
    let errs: Vec<String> = validate_update(&DEPLOYMENT, &old, &new)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(errs, vec!["spec.selector: Invalid value: {\"matchLabels\":{\"app\":\"web\",\"v\":\"2\"}}: field is immutable"]);

    let mut rs = deployment(json!({}));
    rs["apiVersion"] = json!("apps/v1");
    rs["kind"] = json!("ReplicaSet");
    rs["spec"].as_object_mut().map(|s| s.remove("strategy"));
    let old = ok(&REPLICA_SET, rs).object;
    let mut new = old.clone();
    new["spec"]["selector"] = json!({"matchLabels": {"app": "x"}});
    assert_eq!(validate_update(&REPLICA_SET, &old, &new).len(), 1);
}

#[test]
fn replica_set_rules_and_defaults() {
    let rs = json!({"metadata": {"name": "r"}, "spec": {
        "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [container()]}}}});
    let a = ok(&REPLICA_SET, rs.clone());
    assert_eq!(a.object["spec"]["replicas"], 1);
    assert_eq!(a.object["kind"], "ReplicaSet");
    let mut bad = rs;
    bad["spec"]["replicas"] = json!(-2);
    bad["spec"]["template"]["metadata"]["labels"] = json!({"app": "db"});
    assert_eq!(
        errors(&REPLICA_SET, bad),
        vec![
            "spec.replicas: Invalid value: -2: must be greater than or equal to 0",
            "spec.template.metadata.labels: Invalid value: {\"app\":\"db\"}: `selector` does not match template `labels`",
        ]
    );
}

#[test]
fn replication_controller_rules_and_defaults() {
    let rc = json!({"metadata": {"name": "rc"}, "spec": {
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [container()]}}}});
    let a = ok(&REPLICATION_CONTROLLER, rc.clone());
    assert_eq!(a.object["spec"]["selector"], json!({"app": "web"}));
    assert_eq!(a.object["spec"]["replicas"], 1);
    assert_eq!(a.object["metadata"]["labels"], json!({"app": "web"}));
    let mut bad = rc.clone();
    bad["spec"]["template"]["spec"]["restartPolicy"] = json!("OnFailure");
    bad["spec"]["selector"] = json!({"app": "db"});
    assert_eq!(
        errors(&REPLICATION_CONTROLLER, bad),
        vec![
            "spec.template.metadata.labels: Invalid value: {\"app\":\"web\"}: `selector` does not match template `labels`",
            "spec.template.spec.restartPolicy: Unsupported value: \"OnFailure\": supported values: \"Always\"",
        ]
    );
    assert_eq!(
        errors(&REPLICATION_CONTROLLER, json!({"metadata": {"name": "rc"}})),
        vec![
            "spec.selector: Required value",
            "spec.template: Required value"
        ]
    );
}

#[test]
fn job_defaults_and_rules() {
    let a = ok(&JOB, job(json!({})));
    let spec = &a.object["spec"];
    assert_eq!(spec["parallelism"], 1);
    assert_eq!(spec["completions"], 1);
    assert_eq!(spec["backoffLimit"], 6);
    assert_eq!(spec["completionMode"], "NonIndexed");
    assert_eq!(spec["suspend"], false);
    assert_eq!(
        spec.get("selector"),
        None,
        "generated by the server, not admission"
    );
    let work_queue = ok(&JOB, job(json!({"parallelism": 3})));
    assert_eq!(work_queue.object["spec"].get("completions"), None);

    assert_eq!(
        errors(&JOB, job(json!({"template": {"spec": {"restartPolicy": null}}}))),
        vec!["spec.template.spec.restartPolicy: Required value: valid values: \"OnFailure\", \"Never\""]
    );
    assert_eq!(
        errors(&JOB, job(json!({"template": {"spec": {"restartPolicy": "Always"}}}))),
        vec!["spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\""]
    );
    assert_eq!(
        errors(
            &JOB,
            job(
                json!({"parallelism": -1, "completions": -1, "backoffLimit": -1, "completionMode": "Indexed"})
            )
        ),
        vec![
            "spec.parallelism: Invalid value: -1: must be greater than or equal to 0",
            "spec.completions: Invalid value: -1: must be greater than or equal to 0",
            "spec.backoffLimit: Invalid value: -1: must be greater than or equal to 0",
        ]
    );
    assert_eq!(
        errors(
            &JOB,
            job(json!({"parallelism": 2, "completionMode": "Indexed"}))
        ),
        vec!["spec.completions: Required value: when completion mode is Indexed"]
    );
    assert_eq!(
        errors(&JOB, job(json!({"completionMode": "Sometimes"}))),
        vec!["spec.completionMode: Unsupported value: \"Sometimes\": supported values: \"NonIndexed\", \"Indexed\""]
    );
    assert_eq!(
        errors(&JOB, job(json!({"selector": {"matchLabels": {"app": "pi"}}}))),
        vec!["spec.template.metadata.labels: Invalid value: {}: `selector` does not match template `labels`"]
    );
    assert_eq!(
        errors(&JOB, job(json!({"manualSelector": true}))),
        vec!["spec.selector: Required value"]
    );
    ok(
        &JOB,
        job(
            json!({"manualSelector": true, "selector": {"matchLabels": {"app": "pi"}},
        "template": {"metadata": {"labels": {"app": "pi"}}}}),
        ),
    );
}

#[test]
fn job_selector_and_template_are_immutable() {
    let mut j: crate::batch::Job = serde_json::from_value(ok(&JOB, job(json!({}))).object).unwrap();
    j.metadata.uid = "u1".into();
    j.generate_selector();
    let old = serde_json::to_value(&j).unwrap();
    let mut new = old.clone();
    new["spec"]["parallelism"] = json!(4);
    assert_eq!(validate_update(&JOB, &old, &new), vec![]);
    new["spec"]["template"]["spec"]["containers"][0]["image"] = json!("perl:5.36");
    new["spec"]["selector"] = json!({"matchLabels": {"controller-uid": "u2"}});
    let errs: Vec<String> = validate_update(&JOB, &old, &new)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        errs,
        vec![
            "spec.selector: Invalid value: {\"matchLabels\":{\"controller-uid\":\"u2\"}}: field is immutable",
            "spec.template: Invalid value: field is immutable",
        ]
    );
}

// ----------------------------------------------------------------- services

#[test]
fn service_defaults() {
    let a = ok(
        &SERVICE,
        service(
            json!({"ports": [{"port": 80, "name": "http"}, {"port": 443, "name": "https", "targetPort": "tls"}]}),
        ),
    );
    let spec = &a.object["spec"];
    assert_eq!(spec["type"], "ClusterIP");
    assert_eq!(spec["sessionAffinity"], "None");
    assert_eq!(
        spec["ports"][0],
        json!({"name": "http", "protocol": "TCP", "port": 80, "targetPort": 80})
    );
    assert_eq!(spec["ports"][1]["targetPort"], "tls");
    assert_eq!(spec.get("externalTrafficPolicy"), None);
    assert_eq!(spec["internalTrafficPolicy"], "Cluster");
    assert_eq!(spec.get("sessionAffinityConfig"), None);
    let sticky = ok(
        &SERVICE,
        service(json!({"ports": [{"port": 80}], "sessionAffinity": "ClientIP"})),
    );
    assert_eq!(
        sticky.object["spec"]["sessionAffinityConfig"],
        json!({"clientIP": {"timeoutSeconds": 10800}})
    );
    let ext = ok(
        &SERVICE,
        json!({"metadata": {"name": "db"}, "spec": {"type": "ExternalName", "externalName": "db.example.com"}}),
    );
    assert_eq!(ext.object["spec"].get("internalTrafficPolicy"), None);
    let np = ok(
        &SERVICE,
        service(json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]})),
    );
    assert_eq!(np.object["spec"]["externalTrafficPolicy"], "Cluster");
}

#[test]
fn service_rules() {
    assert_eq!(
        errors(&SERVICE, service(json!({"type": "Magic"}))),
        vec!["spec.type: Unsupported value: \"Magic\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""]
    );
    assert_eq!(
        errors(&SERVICE, service(json!({"ports": null}))),
        vec!["spec.ports: Required value"]
    );
    assert_eq!(
        errors(&SERVICE, service(json!({"ports": [
            {"port": 80, "name": "http"}, {"port": 0, "name": "http"}, {"port": 81}, {"port": 82, "name": "x", "protocol": "ICMP"},
            {"port": 83, "name": "y", "targetPort": 70000}, {"port": 84, "name": "z", "targetPort": "Web", "nodePort": 30001}
        ]}))),
        vec![
            "spec.ports[1].name: Duplicate value: \"http\"",
            "spec.ports[1].port: Invalid value: 0: must be between 1 and 65535, inclusive",
            "spec.ports[2].name: Required value",
            "spec.ports[3].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
            "spec.ports[4].targetPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
            "spec.ports[5].targetPort: Invalid value: \"Web\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
            "spec.ports[5].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'",
        ]
    );
    assert_eq!(
        errors(&SERVICE, service(json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 80}]}))),
        vec!["spec.ports[0].nodePort: Invalid value: 80: provided port is not in the valid range. The range of valid ports is 30000-32767"]
    );
    assert_eq!(
        errors(&SERVICE, service(json!({"clusterIP": "10.0.0.300"}))),
        vec!["spec.clusterIP: Invalid value: \"10.0.0.300\": must be a valid IPv4 address"]
    );
    ok(
        &SERVICE,
        service(json!({"clusterIP": "None", "ports": null})),
    );
    ok(&SERVICE, service(json!({"clusterIP": "10.96.0.10"})));
    assert_eq!(
        errors(&SERVICE, service(json!({"type": "LoadBalancer", "clusterIP": "None"}))),
        vec!["spec.clusterIP: Invalid value: \"None\": may not be set to 'None' for LoadBalancer services"]
    );
    assert_eq!(
        errors(&SERVICE, service(json!({"sessionAffinity": "Sticky", "externalTrafficPolicy": "Local"}))),
        vec![
            "spec.sessionAffinity: Unsupported value: \"Sticky\": supported values: \"ClientIP\", \"None\"",
            "spec.externalTrafficPolicy: Invalid value: \"Local\": may only be set when `type` is 'NodePort' or 'LoadBalancer'",
        ]
    );
    assert_eq!(
        errors(&SERVICE, service(json!({"sessionAffinity": "ClientIP",
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 0}}, "internalTrafficPolicy": "Node"}))),
        vec![
            "spec.sessionAffinityConfig.clientIP.timeoutSeconds: Invalid value: 0: must be greater than 0 and less than 86400",
            "spec.internalTrafficPolicy: Unsupported value: \"Node\": supported values: \"Cluster\", \"Local\"",
        ]
    );
    assert_eq!(
        errors(&SERVICE, service(json!({"sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}}))),
        vec!["spec.sessionAffinityConfig: Invalid value: \"\": must not be set when `sessionAffinity` is None"]
    );
    ok(
        &SERVICE,
        json!({"metadata": {"name": "db"}, "spec": {"type": "ExternalName", "externalName": "db.example.com"}}),
    );
    assert_eq!(
        errors(
            &SERVICE,
            json!({"metadata": {"name": "db"}, "spec": {"type": "ExternalName"}})
        ),
        vec!["spec.externalName: Required value"]
    );
    assert_eq!(
        errors(&SERVICE, json!({"metadata": {"name": "db"}, "spec": {"type": "ExternalName", "externalName": "DB_host"}})),
        vec!["spec.externalName: Invalid value: \"DB_host\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"]
    );
}

#[test]
fn service_cluster_ip_is_immutable_once_set() {
    let old = ok(&SERVICE, service(json!({"clusterIP": "10.96.0.5"}))).object;
    let mut new = old.clone();
    new["spec"]["clusterIP"] = json!("");
    assert_eq!(validate_update(&SERVICE, &old, &new), vec![]);
    new["spec"]["clusterIP"] = json!("10.96.0.6");
    let errs: Vec<String> = validate_update(&SERVICE, &old, &new)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        errs,
        vec!["spec.clusterIP: Invalid value: \"10.96.0.6\": field is immutable"]
    );
    let unset = ok(&SERVICE, service(json!({}))).object;
    assert_eq!(validate_update(&SERVICE, &unset, &new), vec![]);
}

#[test]
fn endpoints_rules() {
    let a = ok(
        &ENDPOINTS,
        json!({"metadata": {"name": "web"}, "subsets": [{"addresses": [{"ip": "10.1.0.5", "nodeName": "n1",
        "targetRef": {"kind": "Pod", "name": "web-1", "namespace": "default"}}], "ports": [{"port": 80}]}]}),
    );
    assert_eq!(
        a.object["subsets"][0]["ports"][0],
        json!({"port": 80, "protocol": "TCP"})
    );
    assert_eq!(a.object.get("spec"), None);
    assert_eq!(
        errors(&ENDPOINTS, json!({"metadata": {"name": "web"}, "subsets": [{
            "addresses": [{"ip": "pod-1"}], "notReadyAddresses": [{"ip": "10.1.0.999"}], "ports": [{"port": 0, "name": "a"}, {"port": 1}]}]})),
        vec![
            "subsets[0].addresses[0].ip: Invalid value: \"pod-1\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
            "subsets[0].notReadyAddresses[0].ip: Invalid value: \"10.1.0.999\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
            "subsets[0].ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive",
            "subsets[0].ports[1].name: Required value",
        ]
    );
}

// ------------------------------------------------------------------ ingress

fn ingress(spec: Value) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "web"}, "spec": spec})
}

#[test]
fn ingress_rules() {
    let backend = json!({"service": {"name": "web", "port": {"number": 80}}});
    ok(
        &INGRESS,
        ingress(
            json!({"rules": [{"host": "*.example.com", "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": backend}]}}]}),
        ),
    );
    assert_eq!(
        errors(&INGRESS, ingress(json!({}))),
        vec!["spec: Invalid value: either `defaultBackend` or `rules` must be specified"]
    );
    assert_eq!(
        errors(&INGRESS, ingress(json!({"rules": [{"host": "Web.Example", "http": {"paths": [
            {"path": "/", "backend": backend},
            {"path": "api", "pathType": "Exact", "backend": backend},
            {"path": "/", "pathType": "Regex", "backend": backend},
            {"path": "/a", "pathType": "Prefix", "backend": {"service": {"port": {"number": 70000}}}},
            {"path": "/b", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80, "name": "http"}}}},
            {"path": "/c", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {}}}},
            {"path": "/d", "pathType": "Prefix", "backend": {}}
        ]}}, {"host": "10.0.0.1"}]}))),
        vec![
            "spec.rules[0].host: Invalid value: \"Web.Example\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
            "spec.rules[0].http.paths[0].pathType: Required value: pathType must be specified",
            "spec.rules[0].http.paths[1].path: Invalid value: \"api\": must be an absolute path",
            "spec.rules[0].http.paths[2].pathType: Unsupported value: \"Regex\": supported values: \"Exact\", \"ImplementationSpecific\", \"Prefix\"",
            "spec.rules[0].http.paths[3].backend.service.name: Required value",
            "spec.rules[0].http.paths[3].backend.service.port.number: Invalid value: 70000: must be between 1 and 65535, inclusive",
            "spec.rules[0].http.paths[4].backend.service.port: Invalid value: {\"name\":\"http\",\"number\":80}: cannot set both port name & port number",
            "spec.rules[0].http.paths[5].backend.service.port: Required value: port name or number is required",
            "spec.rules[0].http.paths[6].backend.service: Required value",
            "spec.rules[1].host: Invalid value: \"10.0.0.1\": must be a DNS name, not an IP address",
        ]
    );
}

fn ingress_class(spec: Value) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
        "metadata": {"name": "flotilla", "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"}},
        "spec": spec})
}

#[test]
fn ingress_class_rules() {
    let a = ok(
        &INGRESS_CLASS,
        ingress_class(json!({"controller": "flotilla.dev/ingress"})),
    );
    let c: crate::networking::IngressClass = serde_json::from_value(a.object).expect("class");
    assert!(c.is_default());
    assert_eq!(
        errors(&INGRESS_CLASS, ingress_class(json!({}))),
        vec!["spec.controller: Required value"]
    );
    assert_eq!(
        errors(
            &INGRESS_CLASS,
            ingress_class(json!({"controller": "nginx", "parameters": {"kind": "Cfg", "scope": "Namespace"}}))
        ),
        vec![
            "spec.controller: Invalid value: \"nginx\": must be a domain-prefixed path (such as \"acme.io/foo\")",
            "spec.parameters.name: Required value",
            "spec.parameters.namespace: Required value: `parameters.scope` is set to 'Namespace'",
        ]
    );
    let old = ingress_class(json!({"controller": "flotilla.dev/ingress"}));
    let new = ingress_class(json!({"controller": "example.com/other"}));
    let errs: Vec<String> = validate_update(&INGRESS_CLASS, &old, &new)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        errs,
        vec!["spec.controller: Invalid value: \"example.com/other\": field is immutable"]
    );
}

// --------------------------------------------------- config maps and secrets

#[test]
fn config_map_rules() {
    let a = ok(
        &CONFIG_MAP,
        json!({"metadata": {"name": "c"}, "data": {"app.conf": "x=1", "KEY_2": "y"}, "binaryData": {"logo.png": "iVBORw0K"}}),
    );
    assert_eq!(a.object["data"]["app.conf"], "x=1");
    assert_eq!(
        errors(&CONFIG_MAP, json!({"metadata": {"name": "c"}, "data": {"bad key": "1", "..": "2", "dup": "x"}, "binaryData": {"dup": "eA==", "b": "not base64!"}})),
        vec![
            "data[..]: Invalid value: \"..\": must not be '..'",
            "data[bad key]: Invalid value: \"bad key\": a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
            "binaryData[b]: Invalid value: \"not base64!\": a valid base64 string is required",
            "data[dup]: Invalid value: \"dup\": duplicate of key present in binaryData",
        ]
    );
    assert_eq!(
        errors(
            &CONFIG_MAP,
            json!({"metadata": {"name": "c"}, "data": {"big": "x".repeat(1024 * 1024 + 1)}})
        ),
        vec!["data: Too long: may not be more than 1048576 bytes"]
    );
}

#[test]
fn secret_defaults_and_rules() {
    let a = ok(
        &SECRET,
        json!({"metadata": {"name": "s"}, "stringData": {"password": "hunter2"}, "data": {"user": "YWRtaW4="}}),
    );
    assert_eq!(a.object["type"], "Opaque");
    assert_eq!(
        a.object["data"],
        json!({"password": "aHVudGVyMg==", "user": "YWRtaW4="})
    );
    assert_eq!(a.object.get("stringData"), None);
    assert_eq!(
        errors(&SECRET, json!({"metadata": {"name": "s"}, "type": "kubernetes.io/tls", "data": {"tls.key": "not*base64"}})),
        vec![
            "data[tls.key]: Invalid value: \"<secret contents redacted>\": a valid base64 string is required",
            "data[tls.crt]: Required value",
        ]
    );
}

#[test]
fn immutable_config_maps_and_secrets() {
    let old = ok(
        &CONFIG_MAP,
        json!({"metadata": {"name": "c"}, "data": {"a": "1"}, "immutable": true}),
    )
    .object;
    let mut new = old.clone();
    new["metadata"]["labels"] = json!({"x": "y"});
    assert_eq!(validate_update(&CONFIG_MAP, &old, &new), vec![]);
    new["data"]["a"] = json!("2");
    new["immutable"] = json!(false);
    let errs: Vec<String> = validate_update(&CONFIG_MAP, &old, &new)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        errs,
        vec![
            "immutable: Forbidden: field is immutable when `immutable` is set",
            "data: Forbidden: field is immutable when `immutable` is set",
        ]
    );
    let mutable = ok(
        &CONFIG_MAP,
        json!({"metadata": {"name": "c"}, "data": {"a": "1"}}),
    )
    .object;
    let mut changed = mutable.clone();
    changed["data"]["a"] = json!("2");
    assert_eq!(validate_update(&CONFIG_MAP, &mutable, &changed), vec![]);

    let old = ok(
        &SECRET,
        json!({"metadata": {"name": "s"}, "data": {"a": "MQ=="}, "immutable": true}),
    )
    .object;
    let mut new = old.clone();
    new["data"]["a"] = json!("Mg==");
    new["type"] = json!("kubernetes.io/basic-auth");
    let errs: Vec<String> = validate_update(&SECRET, &old, &new)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        errs,
        vec![
            "type: Invalid value: \"kubernetes.io/basic-auth\": field is immutable",
            "data: Forbidden: field is immutable when `immutable` is set",
        ]
    );
}

// ------------------------------------------------- namespaces, nodes, events

#[test]
fn namespace_defaults() {
    let a = ok(&NAMESPACE, json!({"metadata": {"name": "prod"}}));
    assert_eq!(
        a.object,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "prod"}, "status": {"phase": "Active"}})
    );
}

#[test]
fn node_rules() {
    let a = ok(
        &NODE,
        json!({"metadata": {"name": "node-1.example"}, "spec": {"podCIDR": "10.1.0.0/24",
        "taints": [{"key": "gpu", "value": "true", "effect": "NoSchedule"}]}}),
    );
    assert_eq!(a.object["spec"]["taints"][0]["effect"], "NoSchedule");
    assert_eq!(
        errors(&NODE, json!({"metadata": {"name": "n"}, "spec": {"podCIDR": "10.1.0.0", "taints": [
            {"key": "a"}, {"key": "b", "effect": "Sometimes"}, {"key": "c", "effect": "NoExecute"}, {"key": "c", "effect": "NoExecute"}, {"effect": "NoSchedule"}]}})),
        vec![
            "spec.podCIDR: Invalid value: \"10.1.0.0\": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
            "spec.taints[0].effect: Required value",
            "spec.taints[1].effect: Unsupported value: \"Sometimes\": supported values: \"NoExecute\", \"NoSchedule\", \"PreferNoSchedule\"",
            "spec.taints[3]: Duplicate value: \"c:NoExecute\"",
            "spec.taints[4].key: Required value",
        ]
    );
    let old = a.object;
    let mut new = old.clone();
    new["spec"]["unschedulable"] = json!(true);
    assert_eq!(validate_update(&NODE, &old, &new), vec![]);
    new["spec"]["podCIDR"] = json!("10.2.0.0/24");
    let errs: Vec<String> = validate_update(&NODE, &old, &new)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(errs, vec!["spec.podCIDR: Forbidden: node updates may not change podCIDR except from \"\" to valid"]);
}

#[test]
fn event_rules() {
    ok(
        &EVENT,
        json!({"metadata": {"name": "web.1"}, "involvedObject": {"kind": "Pod", "name": "web"}, "reason": "Scheduled",
        "type": "Normal", "count": 1, "firstTimestamp": "2026-11-26T18:45:45Z", "source": {"component": "default-scheduler"}}),
    );
    assert_eq!(
        errors(
            &EVENT,
            json!({"metadata": {"name": "e"}, "involvedObject": {"kind": "Pod"}, "count": -1})
        ),
        vec![
            "involvedObject.name: Required value",
            "count: Invalid value: -1: must be greater than or equal to 0"
        ]
    );
}

#[test]
fn node_pool_rules() {
    let a = ok(
        &NODE_POOL,
        json!({"metadata": {"name": "gpu"}, "spec": {"labels": {"accelerator": "a100"},
        "taints": [{"key": "gpu", "effect": "NoSchedule"}], "machine": {"cpu": "8", "memory": "64Gi", "pods": 110}, "minSize": 2}}),
    );
    assert_eq!(a.object["spec"]["maxSize"], 2);
    assert_eq!(
        errors(&NODE_POOL, json!({"metadata": {"name": "gpu"}, "spec": {"labels": {"flotilla.dev/nodepool": "cpu", "x": "-"},
            "taints": [{"key": "gpu"}], "machine": {"cpu": "eight", "pods": -1}, "minSize": -1, "maxSize": -2}})),
        vec![
            "spec.labels: Invalid value: \"-\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
            "spec.labels[flotilla.dev/nodepool]: Invalid value: \"cpu\": must be the pool's name",
            "spec.taints[0].effect: Required value",
            "spec.machine.cpu: Invalid value: \"eight\": quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
            "spec.machine.pods: Invalid value: -1: must be greater than or equal to 0",
            "spec.minSize: Invalid value: -1: must be greater than or equal to 0",
            "spec.maxSize: Invalid value: -2: must be greater than or equal to spec.minSize",
        ]
    );
    assert_eq!(
        errors(
            &NODE_POOL,
            json!({"metadata": {"name": "big"}, "spec": {"minSize": 3, "maxSize": 2}})
        ),
        vec!["spec.maxSize: Invalid value: 2: must be greater than or equal to spec.minSize"]
    );
    assert_eq!(
        errors(&NODE_POOL, json!({"metadata": {"name": "gpu.pool"}})),
        vec!["metadata.name: Invalid value: \"gpu.pool\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character"]
    );
}

// ------------------------------------------------- realistic manifest round trips

/// Every field of `part` is in `whole` with the same value.
fn assert_contains(whole: &Value, part: &Value, path: &str) {
    match (whole, part) {
        (Value::Object(w), Value::Object(p)) => {
            for (k, v) in p {
                let sub = format!("{path}.{k}");
                let got = w.get(k).unwrap_or_else(|| panic!("{sub} was lost"));
                assert_contains(got, v, &sub);
            }
        }
        (Value::Array(w), Value::Array(p)) => {
            assert_eq!(w.len(), p.len(), "{path}: length changed");
            for (i, (wv, pv)) in w.iter().zip(p).enumerate() {
                assert_contains(wv, pv, &format!("{path}[{i}]"));
            }
        }
        _ => assert_eq!(whole, part, "{path} changed"),
    }
}

/// Admitting a manifest keeps every field it had (all known) and only adds
/// defaults; admitting the result again changes nothing.
fn round_trip(info: &'static ResourceInfo, manifest: Value) -> Value {
    let a = ok(info, manifest.clone());
    assert_eq!(a.warnings, Vec::<String>::new());
    assert_contains(&a.object, &manifest, "");
    let again = ok(info, a.object.clone());
    assert_eq!(again.object, a.object, "admission is not idempotent");
    a.object
}

#[test]
fn realistic_deployment_round_trips() {
    let manifest = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "nginx-deployment", "namespace": "default", "labels": {"app": "nginx"},
                     "annotations": {"deployment.kubernetes.io/revision": "1"}},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "nginx"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": {"app": "nginx"}},
                "spec": {
                    "containers": [{
                        "name": "nginx",
                        "image": "nginx:1.14.2",
                        "ports": [{"containerPort": 80, "name": "http"}],
                        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                                {"name": "MODE", "value": "prod"}],
                        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}},
                        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "initialDelaySeconds": 5},
                        "volumeMounts": [{"name": "conf", "mountPath": "/etc/nginx/conf.d", "readOnly": true}]
                    }],
                    "volumes": [{"name": "conf", "configMap": {"name": "nginx-conf"}}],
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "web", "effect": "NoSchedule"}]
                }
            }
        }
    });
    let out = round_trip(&DEPLOYMENT, manifest);
    assert_eq!(
        out["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["scheme"],
        "HTTP"
    );
    let typed: crate::apps::Deployment = serde_json::from_value(out).unwrap();
    assert_eq!(typed.spec.replicas, Some(3));
    assert_eq!(
        typed.spec.template.spec.containers[0].resources.limits["memory"],
        "256Mi"
    );
}

#[test]
fn realistic_service_job_ingress_round_trip() {
    round_trip(
        &SERVICE,
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "my-service", "labels": {"app": "web"}},
            "spec": {"type": "LoadBalancer", "selector": {"app.kubernetes.io/name": "MyApp"},
                "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 9376, "nodePort": 30080},
                          {"name": "https", "port": 443, "targetPort": "https"}],
                "sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 600}},
                "externalTrafficPolicy": "Local", "internalTrafficPolicy": "Local"}}),
    );
    let job = round_trip(
        &JOB,
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "pi"},
            "spec": {"backoffLimit": 4, "ttlSecondsAfterFinished": 100, "activeDeadlineSeconds": 600,
                "template": {"spec": {"restartPolicy": "Never",
                    "containers": [{"name": "pi", "image": "perl:5.34.0", "command": ["perl", "-Mbignum=bpi", "-wle", "print bpi(2000)"]}]}}}}),
    );
    assert_eq!(job["spec"]["completions"], 1);
    round_trip(
        &INGRESS,
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "minimal-ingress",
                "annotations": {"nginx.ingress.kubernetes.io/rewrite-target": "/"}},
            "spec": {"ingressClassName": "nginx-example",
                "tls": [{"hosts": ["https-example.foo.com"], "secretName": "testsecret-tls"}],
                "defaultBackend": {"service": {"name": "default", "port": {"name": "http"}}},
                "rules": [{"host": "https-example.foo.com", "http": {"paths": [
                    {"path": "/testpath", "pathType": "Prefix", "backend": {"service": {"name": "test", "port": {"number": 80}}}}]}}]}}),
    );
}

#[test]
fn stored_objects_with_unknown_fields_still_read() {
    let stored = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "uid": "u"},
        "spec": {"containers": [{"name": "c", "image": "x", "resizePolicy": [{"resourceName": "cpu"}]}], "overhead": {}},
        "status": {"phase": "Running", "hostIPs": [{"ip": "10.0.0.1"}], "resize": "InProgress"}});
    let p: crate::core::Pod = serde_json::from_value(stored).unwrap();
    assert_eq!(p.status.map(|s| s.phase), Some("Running".to_string()));
    assert_eq!(p.metadata.uid, "u");
}
