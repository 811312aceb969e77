//! `flt` as people use it, against a real three-master cluster: the
//! examples apply, output matches kubectl's (golden files in tests/golden,
//! with ages, uids, addresses and revisions masked), errors are one line on
//! stderr with exit code 1.
//!
//! Regenerate the golden files with `FLT_UPDATE_GOLDEN=1` and review the diff.

mod common;
mod flt_support;

use std::time::Duration;

use common::*;
use flt_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn examples_apply_and_read_back_like_kubectl() {
    if skip_on_etcd("examples_apply_and_read_back_like_kubectl", false) {
        return;
    }
    let (_c, flt, _home) = cluster().await;

    let out = flt.run(&["apply", "-f", "examples/"]).await.ok();
    golden("apply_examples", &out.stdout);
    assert_eq!(out.stderr, "");
    let out = flt.run(&["apply", "-f", "examples/"]).await.ok();
    golden("apply_examples_again", &out.stdout);

    // The controllers act on what was applied: the Deployment gets its
    // ReplicaSet (its pods stay Pending: no node runs them) and the Job
    // starts. Wait for both before reading the tables back.
    wait_until(
        Duration::from_secs(20),
        "the deployment's ReplicaSet and the job have started",
        async || {
            let get = async |kind: &str, name: &str| -> serde_json::Value {
                let out = flt.run(&["get", kind, name, "-o", "json"]).await;
                serde_json::from_str(&out.stdout).unwrap_or_default()
            };
            get("deploy", "web").await["status"]["updatedReplicas"] == 3
                && get("job", "pi").await["status"]["startTime"].is_string()
        },
    )
    .await;
    let out = flt.run(&["get", "deploy,rs,svc,cm,ing,job,np"]).await.ok();
    golden("get_many_kinds", &out.stdout);
    let out = flt.run(&["get", "svc", "-o", "wide"]).await.ok();
    golden("get_svc_wide", &out.stdout);
    let out = flt.run(&["get", "deploy", "web", "-o", "yaml"]).await.ok();
    golden("get_deploy_yaml", &out.stdout);
    let out = flt
        .run(&["get", "deployments.apps/web", "-o", "name"])
        .await
        .ok();
    assert_eq!(out.stdout, "deployment.apps/web\n");
    let out = flt.run(&["describe", "deploy", "web"]).await.ok();
    golden("describe_deploy", &out.stdout);
    let out = flt.run(&["api-resources"]).await.ok();
    golden("api_resources", &out.stdout);

    // Empty lists say so on stderr and succeed.
    let out = flt.run(&["get", "daemonsets"]).await.ok();
    assert_eq!(
        (out.stdout.as_str(), out.stderr.as_str()),
        ("", "No resources found in default namespace.\n")
    );
    let out = flt.run(&["-n", "kube-system", "get", "cm"]).await.ok();
    assert_eq!(out.stderr, "No resources found in kube-system namespace.\n");

    // kubectl's everyday edits.
    let out = flt
        .run(&["scale", "deploy", "web", "--replicas=5"])
        .await
        .ok();
    assert_eq!(out.stdout, "deployment.apps/web scaled\n");
    let out = flt
        .run(&["label", "deploy", "web", "tier=front"])
        .await
        .ok();
    assert_eq!(out.stdout, "deployment.apps/web labeled\n");
    let out = flt.run(&["label", "deploy", "web", "tier=back"]).await;
    one_error(
        &out,
        "'tier' already has a value (front), and --overwrite is false",
    );
    flt.run(&["label", "deploy", "web", "tier=back", "--overwrite"])
        .await
        .ok();
    let out = flt
        .run(&["annotate", "deploy", "web", "owner=ops"])
        .await
        .ok();
    assert_eq!(out.stdout, "deployment.apps/web annotated\n");
    // The scale to 5 reaches the status once the controller has acted.
    wait_until(
        Duration::from_secs(20),
        "the deployment shows 5 up to date",
        async || {
            let out = flt.run(&["get", "deploy", "web", "-o", "json"]).await;
            let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_default();
            v["status"]["updatedReplicas"] == 5
        },
    )
    .await;
    let out = flt.run(&["get", "deploy", "--show-labels"]).await.ok();
    golden("get_deploy_labels", &out.stdout);
    let out = flt.run(&["get", "deploy", "web", "-o", "json"]).await.ok();
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(v["spec"]["replicas"], 5);
    assert_eq!(v["metadata"]["labels"]["tier"], "back");
    assert_eq!(v["metadata"]["annotations"]["owner"], "ops");
    assert_eq!(
        v["metadata"]["generation"], 2,
        "only the scale changed the spec"
    );
    // Re-applying an unchanged manifest keeps others' changes (kubectl's
    // three-way merge: the manifest did not change replicas since the last
    // apply, so the scale stands); a manifest that changes a field wins.
    let out = flt.run(&["apply", "-f", "examples/web.yaml"]).await.ok();
    assert!(
        out.stdout.starts_with("deployment.apps/web unchanged\n"),
        "{out}"
    );
    let manifest =
        std::fs::read_to_string(repo_root().join("examples/web.yaml")).expect("web.yaml");
    assert!(manifest.contains("replicas: 3"));
    let out = flt
        .stdin(
            &["apply", "-f", "-"],
            &manifest.replace("replicas: 3", "replicas: 2"),
        )
        .await
        .ok();
    assert!(
        out.stdout.starts_with("deployment.apps/web configured\n"),
        "{out}"
    );
    let v: serde_json::Value = serde_json::from_str(
        &flt.run(&["get", "deploy", "web", "-o", "json"])
            .await
            .ok()
            .stdout,
    )
    .expect("json");
    assert_eq!(v["spec"]["replicas"], 2);
    assert_eq!(v["metadata"]["labels"]["tier"], "back");

    // Deleting waits until the object is gone.
    let out = flt.run(&["delete", "-f", "examples/job.yaml"]).await.ok();
    assert_eq!(out.stdout, "job.batch \"pi\" deleted\n");
    one_error(
        &flt.run(&["get", "job", "pi"]).await,
        "jobs.batch \"pi\" not found",
    );
    let out = flt
        .run(&["delete", "svc", "web-nodeport", "web"])
        .await
        .ok();
    assert_eq!(
        out.stdout,
        "service \"web-nodeport\" deleted\nservice \"web\" deleted\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_one_line_and_change_nothing() {
    if skip_on_etcd("errors_are_one_line_and_change_nothing", false) {
        return;
    }
    let (_c, flt, _home) = cluster().await;

    one_error(
        &flt.run(&["get", "po", "web"]).await,
        "pods \"web\" not found",
    );
    one_error(
        &flt.run(&["get", "frobs"]).await,
        "the server doesn't have a resource type \"frobs\"",
    );
    one_error(
        &flt.run(&["-n", "ghost", "create", "-f", "examples/configmap.yaml"])
            .await,
        "namespaces \"ghost\" not found",
    );

    let bad = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: bad}\nspec:\n  replicas: -1\n  selector: {matchLabels: {app: bad}}\n  template:\n    metadata: {labels: {app: bad}}\n    spec: {containers: [{name: c}]}\n";
    let out = flt.stdin(&["apply", "-f", "-"], bad).await;
    one_error(
        &out,
        "Deployment.apps \"bad\" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal to 0, spec.template.spec.containers[0].image: Required value",
    );
    one_error(
        &flt.run(&["get", "deploy", "bad"]).await,
        "deployments.apps \"bad\" not found",
    );

    // Unknown fields are warned about by path, and the rest applies.
    let odd = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: odd, colour: blue}\ndata: {a: b}\nextra: 1\n";
    let out = flt.stdin(&["apply", "-f", "-"], odd).await.ok();
    assert_eq!(out.stdout, "configmap/odd created\n");
    assert_eq!(
        out.stderr,
        "Warning: unknown field \"extra\"\nWarning: unknown field \"metadata.colour\"\n"
    );

    // replace honours the resourceVersion in the file: a stale one is a Conflict.
    let yaml = flt
        .run(&["get", "cm", "odd", "-o", "yaml"])
        .await
        .ok()
        .stdout;
    flt.run(&["label", "cm", "odd", "x=y"]).await.ok();
    let out = flt.stdin(&["replace", "-f", "-"], &yaml).await;
    one_error(&out, "Operation cannot be fulfilled on configmaps \"odd\": the object has been modified; please apply your changes to the latest version and try again");
    let v: serde_json::Value = serde_json::from_str(
        &flt.run(&["get", "cm", "odd", "-o", "json"])
            .await
            .ok()
            .stdout,
    )
    .expect("json");
    assert_eq!(
        v["metadata"]["labels"]["x"], "y",
        "the failed replace changed nothing"
    );

    // A bad manifest names its file.
    let out = flt
        .stdin(
            &["apply", "-f", "-"],
            "kind: Frob\napiVersion: v9\nmetadata: {name: f}\n",
        )
        .await;
    one_error(&out, "resource mapping not found for name: \"f\" namespace: \"\" from \"<stdin>\": no matches for kind \"Frob\" in version \"v9\"");
    let out = flt.stdin(&["apply", "-f", "-"], "a: [").await;
    assert_eq!(out.code, Some(1), "{out}");
    assert!(
        out.stderr
            .starts_with("Error: error parsing <stdin> (document 1): "),
        "{out}"
    );
    assert_eq!(out.stderr.lines().count(), 1, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edit_config_watch_and_cascading_delete() {
    if skip_on_etcd("edit_config_watch_and_cascading_delete", false) {
        return;
    }
    let (c, flt, home) = cluster_without_workload_controllers().await;
    flt.run(&["apply", "-f", "examples/web.yaml"]).await.ok();

    // edit: the editor changes replicas while someone else labels the
    // object; the edit is retried on top of the newer version, so both stay.
    let script = home.path().join("editor.sh");
    let flt_path = flt_bin();
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nset -e\nsed -i 's/^  replicas: 3$/  replicas: 7/' \"$1\"\n{} label deploy web racer=yes >/dev/null\n",
            flt_path.display()
        ),
    )
    .expect("editor script");
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&script)
        .status()
        .expect("chmod");
    let editor = script.display().to_string();
    let out = flt
        .run_env(
            &["edit", "deploy", "web"],
            &[("FLT_EDITOR", editor.as_str())],
            None,
        )
        .await
        .ok();
    assert_eq!(out.stdout, "deployment.apps/web edited\n");
    let v: serde_json::Value = serde_json::from_str(
        &flt.run(&["get", "deploy", "web", "-o", "json"])
            .await
            .ok()
            .stdout,
    )
    .expect("json");
    assert_eq!(v["spec"]["replicas"], 7);
    assert_eq!(v["metadata"]["labels"]["racer"], "yes");
    // describe shows the object's recent events.
    let uid = v["metadata"]["uid"].as_str().expect("uid").to_string();
    // (Recent: the masters expire events an hour after they last happen.)
    let now = flotilla_objects::Time::now().to_string();
    let event = format!(
        "apiVersion: v1\nkind: Event\nmetadata: {{name: web.1}}\ninvolvedObject: {{kind: Deployment, name: web, namespace: default, uid: {uid}, apiVersion: apps/v1}}\nreason: ScalingReplicaSet\nmessage: Scaled up replica set web-1 to 7\ntype: Normal\ncount: 1\nfirstTimestamp: \"{now}\"\nlastTimestamp: \"{now}\"\nsource: {{component: deployment-controller}}\n"
    );
    flt.stdin(&["create", "-f", "-"], &event).await.ok();
    let out = flt.run(&["describe", "deploy", "web"]).await.ok();
    let events: Vec<&str> = out
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("Events:"))
        .collect();
    // The controller's own events are there too; the one created above
    // is shown as kubectl shows it.
    assert!(events.len() >= 4, "{}", out.stdout);
    assert_eq!(
        events[1].split_whitespace().collect::<Vec<_>>(),
        ["Type", "Reason", "Age", "From", "Message"]
    );
    let ours = events
        .iter()
        .find(|l| l.ends_with("Scaled up replica set web-1 to 7"))
        .unwrap_or_else(|| panic!("{}", out.stdout));
    assert!(
        ours.contains("Normal")
            && ours.contains("ScalingReplicaSet")
            && ours.contains("deployment-controller"),
        "{}",
        out.stdout
    );
    // An editor that changes nothing changes nothing.
    let out = flt
        .run_env(&["edit", "deploy", "web"], &[("FLT_EDITOR", "true")], None)
        .await
        .ok();
    assert_eq!(out.stdout, "Edit cancelled, no changes made.\n");

    // The config file names the masters and the namespace.
    std::fs::create_dir_all(home.path().join(".flt")).expect("mkdir");
    std::fs::write(
        home.path().join(".flt/config"),
        format!("server: {}\nnamespace: kube-system\n", c.client_addr(2)),
    )
    .expect("config");
    let mut cmd = tokio::process::Command::new(flt_bin());
    cmd.args(["get", "cm"])
        .env_remove("FLT_SERVER")
        .env("HOME", home.path());
    let out = run_command(
        &mut cmd,
        "flt get cm (config file)".into(),
        None,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        out.stderr, "No resources found in kube-system namespace.\n",
        "{out}"
    );

    // get -w prints a row per change.
    let (mut child, mut lines) = flt.spawn(&["get", "cm", "-w", "--no-headers"]);
    flt.stdin(
        &["create", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: watched}\ndata: {k: v}\n",
    )
    .await
    .ok();
    let line = loop {
        let l = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("a watch line within 20 s")
            .expect("read")
            .expect("a line");
        if l.starts_with("watched") {
            break l;
        }
    };
    assert_eq!(mask(&line), "watched   1   <age>");
    let _ = child.kill().await;

    // A namespace and everything in it, with a foreground cascade.
    flt.stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: team}\n",
    )
    .await
    .ok();
    flt.run(&["-n", "team", "apply", "-f", "examples/configmap.yaml"])
        .await
        .ok();
    let out = flt.run(&["get", "cm", "-A"]).await.ok();
    golden("get_cm_all_namespaces", &out.stdout);
    let out = flt
        .run(&["delete", "ns", "team", "--cascade=foreground"])
        .await
        .ok();
    assert_eq!(out.stdout, "namespace \"team\" deleted\n");
    one_error(
        &flt.run(&["get", "ns", "team"]).await,
        "namespaces \"team\" not found",
    );
    one_error(
        &flt.run(&["delete", "ns", "default"]).await,
        "namespaces \"default\" is forbidden: this namespace may not be deleted",
    );

    let out = flt.run(&["completion", "bash"]).await.ok();
    assert!(
        out.stdout.contains("_flt()"),
        "{}",
        &out.stdout[..out.stdout.len().min(200)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_people_rely_on() {
    if skip_on_etcd("flags_people_rely_on", false) {
        return;
    }
    let (c, flt, home) = cluster().await;
    let cm = |name: &str, tier: &str| {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, labels: {{tier: {tier}}}}}\ndata: {{k: v}}\n")
    };

    // -f DIR reads the directory; -R descends; --dry-run stores nothing.
    let dir = home.path().join("manifests");
    std::fs::create_dir_all(dir.join("sub")).expect("mkdir");
    std::fs::write(dir.join("a.yaml"), cm("a", "front")).expect("write");
    std::fs::write(dir.join("sub/b.yml"), cm("b", "back")).expect("write");
    let d = dir.display().to_string();
    let out = flt.run(&["apply", "-f", &d, "--dry-run"]).await.ok();
    assert_eq!(out.stdout, "configmap/a created (server dry run)\n");
    one_error(
        &flt.run(&["get", "cm", "a"]).await,
        "configmaps \"a\" not found",
    );
    let out = flt.run(&["apply", "-f", &d, "-R"]).await.ok();
    assert_eq!(out.stdout, "configmap/a created\nconfigmap/b created\n");

    // delete by selector, --ignore-not-found, --all.
    let out = flt.run(&["delete", "cm", "-l", "tier=back"]).await.ok();
    assert_eq!(out.stdout, "configmap \"b\" deleted\n");
    let out = flt
        .run(&["delete", "cm", "b", "--ignore-not-found"])
        .await
        .ok();
    assert_eq!((out.stdout.as_str(), out.stderr.as_str()), ("", ""));
    one_error(
        &flt.run(&["delete", "cm", "b"]).await,
        "configmaps \"b\" not found",
    );
    flt.stdin(&["apply", "-f", "-"], &cm("c", "x")).await.ok();
    let out = flt.run(&["delete", "cm", "--all"]).await.ok();
    assert_eq!(
        out.stdout,
        "configmap \"a\" deleted\nconfigmap \"c\" deleted\n"
    );

    // A pod on a node gets its grace period; --now skips it.
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {nodeName: n1, containers: [{name: c, image: busybox}]}\n";
    flt.stdin(&["create", "-f", "-"], pod).await.ok();
    let out = flt
        .run(&["delete", "po", "p", "--wait=false", "--grace-period=60"])
        .await
        .ok();
    assert_eq!(out.stdout, "pod \"p\" deleted\n");
    let v: serde_json::Value =
        serde_json::from_str(&flt.run(&["get", "po", "p", "-o", "json"]).await.ok().stdout)
            .expect("json");
    assert_eq!(v["metadata"]["deletionGracePeriodSeconds"], 60, "{v}");
    let out = flt.run(&["get", "po", "p"]).await.ok();
    assert!(out.stdout.contains("Terminating"), "{out}");
    flt.run(&["delete", "po", "p", "--now"]).await.ok();
    one_error(&flt.run(&["get", "po", "p"]).await, "pods \"p\" not found");

    // FLT_CONFIG names the config file; its servers may be a YAML list.
    let cfg = home.path().join("other-config");
    std::fs::write(
        &cfg,
        format!(
            "server:\n- 127.0.0.1:1\n- {}\nnamespace: kube-system\n",
            c.client_addr(1)
        ),
    )
    .expect("config");
    let mut cmd = tokio::process::Command::new(flt_bin());
    cmd.args(["get", "ns", "kube-system", "-o", "name"])
        .env_remove("FLT_SERVER")
        .env("FLT_CONFIG", &cfg);
    let out = run_command(
        &mut cmd,
        "flt get ns (FLT_CONFIG)".into(),
        None,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(out.stdout, "namespace/kube-system\n", "{out}");

    for shell in ["zsh", "fish"] {
        let out = flt.run(&["completion", shell]).await.ok();
        assert!(
            out.stdout.contains("flt") && out.stdout.contains("apply"),
            "{shell}: {}",
            out.stdout.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imperative_verbs_create_run_expose_and_wait() {
    if skip_on_etcd("imperative_verbs_create_run_expose_and_wait", false) {
        return;
    }
    let (mut c, flt, _home) = cluster().await;

    // Manifests made from flags, printed (nothing sent) with --dry-run=client.
    let out = flt
        .run(&[
            "create",
            "deployment",
            "web",
            "--image=busybox:1.36",
            "--replicas=2",
            "--port=8080",
            "--dry-run=client",
            "-o",
            "yaml",
        ])
        .await
        .ok();
    golden_with("create_deployment_dry_run", &out.stdout, false);
    one_error(
        &flt.run(&["get", "deploy", "web"]).await,
        "deployments.apps \"web\" not found",
    );

    let out = flt.run(&["create", "namespace", "t1"]).await.ok();
    assert_eq!(out.stdout, "namespace/t1 created\n");
    let out = flt
        .run(&[
            "create",
            "deployment",
            "web",
            "--image=busybox:1.36",
            "--replicas=2",
            "--port=8080",
        ])
        .await
        .ok();
    assert_eq!(out.stdout, "deployment.apps/web created\n");
    let out = flt
        .run(&[
            "expose",
            "deploy/web",
            "--port=80",
            "--target-port=8080",
            "--type=NodePort",
        ])
        .await
        .ok();
    assert_eq!(out.stdout, "service/web created\n");
    let svc = flt.run(&["get", "svc", "web", "-o", "json"]).await.ok();
    let svc: serde_json::Value = serde_json::from_str(&svc.stdout).expect("json");
    assert_eq!(svc["spec"]["selector"], serde_json::json!({"app": "web"}));
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], 8080);
    assert!(svc["spec"]["ports"][0]["nodePort"].as_i64().is_some());

    // wait: a jsonpath the deployment controller makes true; a condition
    // that cannot come true here (no nodes) times out with exit code 1.
    let out = flt
        .run(&[
            "wait",
            "deploy/web",
            "--for=jsonpath={.status.replicas}=2",
            "--timeout=30s",
        ])
        .await
        .ok();
    assert_eq!(out.stdout, "deployment.apps/web condition met\n");
    one_error(
        &flt.run(&[
            "wait",
            "deploy/web",
            "--for=condition=Available",
            "--timeout=1s",
        ])
        .await,
        "timed out waiting for the condition on deployments/web",
    );
    let out = flt
        .run(&[
            "wait",
            "pods",
            "-l",
            "app=web",
            "--for=jsonpath={.status.phase}=Pending",
            "--timeout=10s",
        ])
        .await
        .ok();
    assert_eq!(out.stdout.lines().count(), 2, "{}", out.stdout);

    // run, then wait for its deletion.
    let out = flt
        .run(&[
            "run",
            "box",
            "--image=busybox",
            "--restart=Never",
            "--",
            "sleep",
            "5",
        ])
        .await
        .ok();
    assert_eq!(out.stdout, "pod/box created\n");
    let pod = flt.run(&["get", "pod", "box", "-o", "json"]).await.ok();
    let pod: serde_json::Value = serde_json::from_str(&pod.stdout).expect("json");
    assert_eq!(pod["metadata"]["labels"]["run"], "box");
    assert_eq!(
        pod["spec"]["containers"][0]["args"],
        serde_json::json!(["sleep", "5"])
    );
    flt.run(&["delete", "pod", "box", "--wait=false"])
        .await
        .ok();
    let out = flt
        .run(&["wait", "pod/box", "--for=delete", "--timeout=30s"])
        .await
        .ok();
    assert_eq!(out.stdout, "pod/box condition met\n");

    // A job from a cronjob's template, owned by it.
    flt.run(&[
        "create",
        "cronjob",
        "nightly",
        "--image=busybox",
        "--schedule=0 3 * * *",
        "--",
        "date",
    ])
    .await
    .ok();
    let out = flt
        .run(&["create", "job", "now", "--from=cronjob/nightly"])
        .await
        .ok();
    assert_eq!(out.stdout, "job.batch/now created\n");
    let job = flt.run(&["get", "job", "now", "-o", "json"]).await.ok();
    let job: serde_json::Value = serde_json::from_str(&job.stdout).expect("json");
    assert_eq!(job["metadata"]["ownerReferences"][0]["name"], "nightly");
    assert_eq!(
        job["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"],
        "manual"
    );
    assert_eq!(
        job["spec"]["template"]["spec"]["containers"][0]["command"],
        serde_json::json!(["date"])
    );

    // Config maps and secrets from literals and files.
    let dir = tempfile::tempdir().expect("dir");
    let f = dir.path().join("app.conf");
    std::fs::write(&f, "x=1\n").expect("write");
    let from_file = format!("--from-file={}", f.display());
    let out = flt
        .run(&[
            "create",
            "configmap",
            "cfg",
            "--from-literal=mode=fast",
            &from_file,
        ])
        .await
        .ok();
    assert_eq!(out.stdout, "configmap/cfg created\n");
    let cm = flt.run(&["get", "cm", "cfg", "-o", "json"]).await.ok();
    let cm: serde_json::Value = serde_json::from_str(&cm.stdout).expect("json");
    assert_eq!(
        cm["data"],
        serde_json::json!({"app.conf": "x=1\n", "mode": "fast"})
    );
    let out = flt
        .run(&[
            "create",
            "secret",
            "generic",
            "pw",
            "--from-literal=password=s3cret",
        ])
        .await
        .ok();
    assert_eq!(out.stdout, "secret/pw created\n");
    let out = flt
        .run(&[
            "create",
            "service",
            "clusterip",
            "api",
            "--tcp=80:8080",
            "--dry-run=server",
        ])
        .await
        .ok();
    assert_eq!(out.stdout, "service/api created (server dry run)\n");
    one_error(
        &flt.run(&["get", "svc", "api"]).await,
        "services \"api\" not found",
    );

    // A missing object is only an error: nothing on stdout.
    let out = flt.run(&["get", "job", "pi", "-o", "yaml"]).await;
    assert_eq!(out.stdout, "");
    one_error(&out, "jobs.batch \"pi\" not found");
    // Missing arguments are named.
    let out = flt.run(&["create", "deployment", "x"]).await;
    assert!(out.stderr.contains("--image"), "{}", out.stderr);
    c.assert_none_exited();
}
