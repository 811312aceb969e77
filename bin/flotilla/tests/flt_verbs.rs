//! The kubectl verbs `flt` gained for issue 21, run as the real binary
//! against real masters: patch (strategic, merge, json), set
//! image|env|resources, diff (and its exit codes), get's jsonpath,
//! custom-columns, --sort-by, -L and watch flags, contexts, explain and the
//! completion of live names.
//!
//! Regenerate the golden files with `FLT_UPDATE_GOLDEN=1` and review the diff.

mod common;
mod flt_support;

use std::time::Duration;

use common::*;
use flt_support::*;
use regex::Regex;
use serde_json::Value;

async fn json_of(flt: &Flt, args: &[&str]) -> Value {
    let out = flt.run(args).await.ok();
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out}"))
}

async fn deploy_json(flt: &Flt) -> Value {
    json_of(flt, &["get", "deploy", "web", "-o", "json"]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_and_set_change_workloads() {
    if skip_on_etcd("patch_and_set_change_workloads", false) {
        return;
    }
    let (_c, flt, _home) = cluster_without_workload_controllers().await;
    flt.run(&["apply", "-f", "examples/web.yaml"]).await.ok();

    // Strategic merge (the default): the container is merged by name, so
    // its image and ports stay; env merges by name too.
    let p = r#"{"spec":{"template":{"spec":{"containers":[{"name":"nginx","env":[{"name":"MODE","value":"fast"},{"name":"LEVEL","value":"1"}]}]}}}}"#;
    let out = flt.run(&["patch", "deploy", "web", "-p", p]).await.ok();
    assert_eq!(out.stdout, "deployment.apps/web patched\n");
    let d = deploy_json(&flt).await;
    let c = &d["spec"]["template"]["spec"]["containers"];
    assert_eq!(c.as_array().map(Vec::len), Some(1), "{d}");
    assert_eq!(c[0]["image"], "nginx:1.27");
    assert_eq!(c[0]["ports"][0]["containerPort"], 80);
    assert_eq!(
        c[0]["env"],
        serde_json::json!([{"name": "MODE", "value": "fast"}, {"name": "LEVEL", "value": "1"}])
    );
    // The same patch again changes nothing.
    let out = flt.run(&["patch", "deploy/web", "-p", p]).await.ok();
    assert_eq!(out.stdout, "deployment.apps/web patched (no change)\n");
    // $patch: delete takes one element out.
    let del = r#"{"spec":{"template":{"spec":{"containers":[{"name":"nginx","env":[{"name":"LEVEL","$patch":"delete"}]}]}}}}"#;
    flt.run(&["patch", "deploy", "web", "-p", del]).await.ok();
    let d = deploy_json(&flt).await;
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["env"],
        serde_json::json!([{"name": "MODE", "value": "fast"}])
    );
    // A service's ports merge by port (YAML patches are accepted too).
    flt.run(&[
        "patch",
        "svc",
        "web",
        "-p",
        "spec: {ports: [{name: https, port: 443, targetPort: 443}]}",
    ])
    .await
    .ok();
    let s = json_of(&flt, &["get", "svc", "web", "-o", "json"]).await;
    let ports: Vec<i64> = s["spec"]["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .filter_map(|p| p["port"].as_i64())
        .collect();
    assert_eq!(ports, [80, 443]);

    // Merge patch: lists are replaced whole.
    let out = flt
        .run(&[
            "patch",
            "svc",
            "web",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"ports":[{"name":"http","port":8080,"targetPort":80}]}}"#,
        ])
        .await
        .ok();
    assert_eq!(out.stdout, "service/web patched\n");
    let s = json_of(&flt, &["get", "svc", "web", "-o", "json"]).await;
    assert_eq!(s["spec"]["ports"].as_array().map(Vec::len), Some(1), "{s}");
    // JSON patch (RFC 6902).
    let out = flt
        .run(&[
            "patch",
            "deploy",
            "web",
            "--type=json",
            "-p",
            r#"[{"op":"replace","path":"/spec/replicas","value":4}]"#,
        ])
        .await
        .ok();
    assert_eq!(out.stdout, "deployment.apps/web patched\n");
    assert_eq!(deploy_json(&flt).await["spec"]["replicas"], 4);

    // Dry runs print and change nothing.
    let out = flt
        .run(&[
            "patch",
            "deploy",
            "web",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"replicas":9}}"#,
            "--dry-run=server",
            "-o",
            "json",
        ])
        .await
        .ok();
    let v: Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(v["spec"]["replicas"], 9);
    for (flag, said) in [
        ("--dry-run=client", "dry run"),
        ("--dry-run=server", "server dry run"),
    ] {
        let out = flt
            .run(&[
                "patch",
                "deploy",
                "web",
                "-p",
                r#"{"spec":{"replicas":9}}"#,
                flag,
            ])
            .await
            .ok();
        assert_eq!(
            out.stdout,
            format!("deployment.apps/web patched ({said})\n")
        );
    }
    assert_eq!(deploy_json(&flt).await["spec"]["replicas"], 4);

    // Bad patches: one error line, exit 1, nothing changed.
    let rv = deploy_json(&flt).await["metadata"]["resourceVersion"].clone();
    let out = flt
        .run(&["patch", "deploy", "web", "-p", "{\"spec\": "])
        .await;
    assert_eq!(out.code, Some(1), "{out}");
    assert!(
        out.stderr
            .starts_with("Error: unable to parse \"{\\\"spec\\\":\": ")
            && out.stderr.lines().count() == 1,
        "{out}"
    );
    let out = flt
        .run(&["patch", "deploy", "web", "--type", "json", "-p", r#"[{"op":"test","path":"/spec/replicas","value":1},{"op":"replace","path":"/spec/replicas","value":7}]"#])
        .await;
    assert_eq!(out.code, Some(1), "{out}");
    assert!(
        out.stderr
            .starts_with("Error: the json patch cannot be applied: ")
            && out.stderr.lines().count() == 1,
        "{out}"
    );
    one_error(
        &flt.run(&["patch", "deploy", "web", "--type", "json", "-p", r#"{"op":"add"}"#]).await,
        "unable to parse \"{\\\"op\\\":\\\"add\\\"}\": a json patch must be a list of operations ([{\"op\": ..., \"path\": ...}])",
    );
    one_error(
        &flt.run(&[
            "patch",
            "deploy",
            "web",
            "-p",
            r#"{"spec":{"template":{"spec":{"containers":[{"image":"x"}]}}}}"#,
        ])
        .await,
        "an element of spec.template.spec.containers has no merge key \"name\"",
    );
    one_error(
        &flt.run(&["patch", "deploy", "nope", "-p", "{}"]).await,
        "deployments.apps \"nope\" not found",
    );
    assert_eq!(deploy_json(&flt).await["metadata"]["resourceVersion"], rv);

    // Conflicts are retried on the latest version: concurrent patches of
    // the same object all land.
    let runs = (0..6).map(|i| {
        let label = format!(r#"{{"metadata":{{"labels":{{"racer{i}":"yes"}}}}}}"#);
        let flt = &flt;
        async move { flt.run(&["patch", "deploy", "web", "-p", &label]).await }
    });
    for out in futures::future::join_all(runs).await {
        assert_eq!(out.stdout, "deployment.apps/web patched\n", "{out}");
    }
    let labels = &deploy_json(&flt).await["metadata"]["labels"];
    for i in 0..6 {
        assert_eq!(labels[format!("racer{i}")], "yes", "{labels}");
    }

    // set image
    let out = flt
        .run(&["set", "image", "deploy/web", "nginx=nginx:1.28"])
        .await
        .ok();
    assert_eq!(out.stdout, "deployment.apps/web image updated\n");
    let out = flt
        .run(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.template.spec.containers[*].image}",
        ])
        .await
        .ok();
    assert_eq!(out.stdout, "nginx:1.28");
    flt.run(&["set", "image", "deploy", "web", "*=nginx:1.29"])
        .await
        .ok();
    assert_eq!(
        deploy_json(&flt).await["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.29"
    );
    one_error(
        &flt.run(&["set", "image", "deploy/web", "nope=x"]).await,
        "unable to find container named \"nope\"",
    );
    one_error(
        &flt.run(&["set", "image", "cm/web", "a=b"]).await,
        "configmaps have no pod template to change",
    );

    // set env
    let out = flt
        .run(&["set", "env", "deploy/web", "A=1", "B=two", "MODE-"])
        .await
        .ok();
    assert_eq!(out.stdout, "deployment.apps/web env updated\n");
    let out = flt.run(&["set", "env", "deploy/web", "--list"]).await.ok();
    assert_eq!(
        out.stdout,
        "# Deployment web, container nginx\nA=1\nB=two\n"
    );
    one_error(
        &flt.run(&["set", "env", "deploy/web", "NOPE"]).await,
        "invalid environment variable \"NOPE\": use KEY=VALUE or KEY-",
    );

    // set resources
    let out = flt
        .run(&[
            "set",
            "resources",
            "deploy/web",
            "-c",
            "nginx",
            "--limits=cpu=200m,memory=512Mi",
            "--requests=cpu=150m",
        ])
        .await
        .ok();
    assert_eq!(
        out.stdout,
        "deployment.apps/web resource requirements updated\n"
    );
    assert_eq!(
        deploy_json(&flt).await["spec"]["template"]["spec"]["containers"][0]["resources"],
        serde_json::json!({"limits": {"cpu": "200m", "memory": "512Mi"}, "requests": {"cpu": "150m", "memory": "64Mi"}})
    );
    one_error(
        &flt.run(&["set", "resources", "deploy/web", "--limits=cpu=lots"])
            .await,
        "invalid --limits \"cpu=lots\": \"lots\" is not a quantity",
    );
    one_error(
        &flt.run(&["set", "resources", "svc/web", "--limits=cpu=1"])
            .await,
        "services have no pod template to change",
    );

    // -l and --all: every matching object of the kind, each reported.
    let set = ["set", "env", "deploy", "-l", "app=web", "SELECTED=yes"];
    assert_eq!(flt.out(&set).await, "deployment.apps/web env updated\n");
    let set = ["set", "env", "deploy", "--all", "SELECTED=yes"];
    assert_eq!(
        flt.out(&set).await,
        "deployment.apps/web env updated (no change)\n"
    );
    one_error(
        &flt.run(&["set", "env", "deploy", "-l", "app=nope", "A=1"])
            .await,
        "no deployments found in namespace default",
    );

    // A pod's own spec, and a cronjob's job template.
    flt.out(&["run", "box", "--image=busybox:1.36"]).await;
    let set = ["set", "image", "pod/box", "box=busybox:1.37"];
    assert_eq!(flt.out(&set).await, "pod/box image updated\n");
    let image = "jsonpath={.spec.containers[0].image}";
    assert_eq!(
        flt.out(&["get", "pod", "box", "-o", image]).await,
        "busybox:1.37"
    );
    let cj = [
        "create",
        "cronjob",
        "nightly",
        "--image=busybox",
        "--schedule=0 3 * * *",
    ];
    flt.out(&cj).await;
    let set = ["set", "env", "cj/nightly", "LEVEL=debug"];
    assert_eq!(flt.out(&set).await, "cronjob.batch/nightly env updated\n");
    assert_eq!(
        flt.out(&["set", "env", "cronjob", "nightly", "--list"])
            .await,
        "# CronJob nightly, container busybox\nLEVEL=debug\n"
    );
}

/// A diff's temporary paths and file times differ from run to run.
fn mask_diff(s: &str) -> String {
    let s = Regex::new(r"/(LIVE|MERGED)-\d+/")
        .expect("regex")
        .replace_all(s, "/$1-<n>/");
    let s = Regex::new(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{9} \+0000")
        .expect("regex")
        .replace_all(&s, "<stamp>");
    s.into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_shows_what_apply_would_change() {
    if skip_on_etcd("diff_shows_what_apply_would_change", false) {
        return;
    }
    let (_c, flt, home) = cluster_without_workload_controllers().await;
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg, labels: {app: web}}\ndata: {mode: fast, level: \"1\"}\n";
    let file = home.path().join("cfg.yaml");
    std::fs::write(&file, cm).expect("write");
    let file = file.display().to_string();

    // Not there yet: all of it is new (exit 1: differences).
    let out = flt.run(&["diff", "-f", &file]).await;
    assert_eq!(out.code, Some(1), "{out}");
    assert_eq!(out.stderr, "");
    golden_with("diff_new", &mask_diff(&out.stdout), false);
    // diff changed nothing.
    one_error(
        &flt.run(&["get", "cm", "cfg"]).await,
        "configmaps \"cfg\" not found",
    );

    flt.run(&["apply", "-f", &file]).await.ok();
    let out = flt.run(&["diff", "-f", &file]).await;
    assert_eq!((out.code, out.stdout.as_str()), (Some(0), ""), "{out}");
    // Someone else's label is not something apply would remove.
    flt.run(&["label", "cm", "cfg", "owner=ops"]).await.ok();
    let out = flt.run(&["diff", "-f", &file]).await;
    assert_eq!((out.code, out.stdout.as_str()), (Some(0), ""), "{out}");

    // A changed manifest: the changed lines, with kubectl's headers.
    std::fs::write(
        home.path().join("cfg.yaml"),
        cm.replace("mode: fast", "mode: slow")
            .replace("level: \"1\"", "extra: x"),
    )
    .expect("write");
    let out = flt.stdin(&["diff", "-f", "-"], "").await;
    assert_eq!(out.code, Some(2), "an empty stdin is no manifest: {out}");
    assert_eq!(out.stderr, "Error: no objects passed to diff\n");
    let changed = std::fs::read_to_string(&file).expect("read");
    let out = flt.stdin(&["diff", "-f", "-"], &changed).await;
    assert_eq!(out.code, Some(1), "{out}");
    golden_with("diff_changed", &mask_diff(&out.stdout), false);
    // Still as applied.
    let v = json_of(&flt, &["get", "cm", "cfg", "-o", "json"]).await;
    assert_eq!(v["data"]["mode"], "fast");

    // Another diff program, as KUBECTL_EXTERNAL_DIFF: it gets the LIVE
    // and MERGED directories; its exit code is flt's.
    let out = flt
        .run_env(
            &["diff", "-f", &file],
            &[("FLT_EXTERNAL_DIFF", "diff -r")],
            None,
        )
        .await;
    assert_eq!(out.code, Some(1), "{out}");
    assert!(
        out.stdout.contains("<   mode: fast\n") && out.stdout.contains(">   mode: slow\n"),
        "{out}"
    );
    let out = flt
        .run_env(
            &["diff", "-f", &file],
            &[("KUBECTL_EXTERNAL_DIFF", "exit 3;")],
            None,
        )
        .await;
    assert_eq!(out.code, Some(2), "{out}");
    assert_eq!(out.stderr, "Error: exit 3; exited with 3\n");

    // Errors exit 2 with one line: a missing file, an unknown kind.
    let out = flt.run(&["diff", "-f", "nope.yaml"]).await;
    assert_eq!(out.code, Some(2), "{out}");
    assert_eq!(
        out.stderr,
        "Error: the path \"nope.yaml\" does not exist: No such file or directory (os error 2)\n"
    );
    let out = flt
        .stdin(
            &["diff", "-f", "-"],
            "apiVersion: v9\nkind: Gizmo\nmetadata: {name: g}\n",
        )
        .await;
    assert_eq!(out.code, Some(2), "{out}");
    assert_eq!(out.stderr.lines().count(), 1, "{out}");
    assert!(
        out.stderr
            .contains("no matches for kind \"Gizmo\" in version \"v9\""),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_output_jsonpath_columns_sorting_labels_and_watch_events() {
    if skip_on_etcd(
        "get_output_jsonpath_columns_sorting_labels_and_watch_events",
        false,
    ) {
        return;
    }
    let (_c, flt, _home) = cluster_without_workload_controllers().await;
    flt.stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b-cfg, labels: {app: web, tier: front}}\ndata: {size: \"10\", kind: big}\n---\n\
         apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a-cfg, labels: {app: api}}\ndata: {size: \"2\", kind: small}\n---\n\
         apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c-cfg, labels: {app: web}}\ndata: {size: \"7\", kind: mid}\n",
    )
    .await
    .ok();
    let sel = ["-l", "app"];
    let get = |extra: &[&str]| {
        let mut args = vec!["get", "cm"];
        args.extend(sel);
        args.extend(extra.iter().copied());
        args.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let run = async |extra: &[&str]| {
        let args = get(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        flt.run(&args).await
    };

    let out = run(&["-o", "jsonpath={.items[*].metadata.name}"])
        .await
        .ok();
    assert_eq!(out.stdout, "a-cfg b-cfg c-cfg");
    let out = run(&["-o", r#"jsonpath={range .items[?(@.metadata.labels.app=="web")]}{.metadata.name}{"\t"}{.data.kind}{"\n"}{end}"#])
        .await
        .ok();
    assert_eq!(out.stdout, "b-cfg\tbig\nc-cfg\tmid\n");
    let out = flt
        .run(&[
            "get",
            "cm",
            "b-cfg",
            "-o",
            "jsonpath={.metadata.labels.tier}",
        ])
        .await
        .ok();
    assert_eq!(out.stdout, "front");
    let out = run(&["-o", "custom-columns=NAME:.metadata.name,APP:.metadata.labels.app,TIER:{.metadata.labels.tier},SIZE:data.size"])
        .await
        .ok();
    golden_with("get_custom_columns", &out.stdout, false);
    // --sort-by: by a string, by quantities in strings (by amount, as
    // kubectl sorts them).
    let out = run(&["--sort-by=.data.kind", "-o", "name"]).await.ok();
    assert_eq!(
        out.stdout,
        "configmap/b-cfg\nconfigmap/c-cfg\nconfigmap/a-cfg\n"
    );
    let out = run(&[
        "--sort-by={.data.size}",
        "-o",
        "jsonpath={.items[*].data.size}",
    ])
    .await
    .ok();
    assert_eq!(out.stdout, "2 7 10");
    // -L: label columns (before LABELS).
    let out = run(&["-L", "app,tier", "--show-labels"]).await.ok();
    golden("get_label_columns", &out.stdout);

    // A missing object is a single error; a bad template is one line too.
    one_error(
        &flt.run(&["get", "cm", "nope", "-o", "jsonpath={.metadata.name}"])
            .await,
        "configmaps \"nope\" not found",
    );
    assert_eq!(
        flt.run(&["get", "cm", "nope", "-o", "jsonpath={.metadata.name}"])
            .await
            .stdout,
        ""
    );
    one_error(
        &run(&["-o", "jsonpath={.items[*"]).await,
        "invalid value 'jsonpath={.items[*' for '--output <FORMAT>': error parsing jsonpath {.items[*: unclosed action (see `flt --help`)",
    );
    one_error(
        &run(&["-o", "custom-columns=NAME"]).await,
        "invalid value 'custom-columns=NAME' for '--output <FORMAT>': unexpected custom-columns spec: NAME, expected <header>:<json-path-expr> (see `flt --help`)",
    );
    one_error(
        &run(&["--sort-by=.nope"]).await,
        "couldn't find any field with path \".nope\" in the list of objects",
    );

    // --watch-only --output-watch-events: no listing first, then each
    // change with its type.
    let (mut child, mut lines) = flt.spawn(&[
        "get",
        "cm",
        "--watch-only",
        "--output-watch-events",
        "-L",
        "app",
    ]);
    // The watch has started once it reports a change it was started before:
    // keep labelling until a MODIFIED row arrives.
    let mut seen = Vec::new();
    let mut n = 0;
    loop {
        n += 1;
        flt.run(&["label", "cm", "a-cfg", &format!("round={n}"), "--overwrite"])
            .await
            .ok();
        match tokio::time::timeout(Duration::from_secs(2), lines.next_line()).await {
            Ok(l) => {
                let l = l.expect("read").expect("a line");
                seen.push(l);
                break;
            }
            Err(_) => assert!(n < 15, "no watch line after {n} changes"),
        }
    }
    flt.run(&["delete", "cm", "c-cfg"]).await.ok();
    loop {
        let l = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("a watch line within 20 s")
            .expect("read")
            .expect("a line");
        let done = l.starts_with("DELETED");
        seen.push(l);
        if done {
            break;
        }
    }
    let _ = child.kill().await;
    let seen: Vec<String> = seen
        .iter()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(seen[0], "EVENT NAME DATA AGE APP", "{seen:?}");
    assert!(seen[1].starts_with("MODIFIED a-cfg 2 "), "{seen:?}");
    assert!(
        seen.last()
            .is_some_and(|l| l.starts_with("DELETED c-cfg 2 ") && l.ends_with(" web")),
        "{seen:?}"
    );
    assert!(
        seen.iter().all(|l| !l.contains("b-cfg")),
        "nothing listed first: {seen:?}"
    );

    // -w --output-watch-events: the object now as ADDED, then its changes.
    let (mut child, mut lines) = flt.spawn(&[
        "get",
        "cm",
        "b-cfg",
        "-w",
        "--output-watch-events",
        "--no-headers",
    ]);
    let mut next = async || {
        let l = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("a watch line within 20 s")
            .expect("read")
            .expect("a line");
        l.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    };
    assert_eq!(next().await, "ADDED b-cfg 2");
    // The watch starts at the listing's revision, so this change is seen.
    flt.run(&["label", "cm", "b-cfg", "seen=yes"]).await.ok();
    assert_eq!(next().await, "MODIFIED b-cfg 2");
    let _ = child.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contexts_choose_the_cluster_and_the_namespace() {
    if skip_on_etcd("contexts_choose_the_cluster_and_the_namespace", false) {
        return;
    }
    let (_c, flt, home) = cluster_without_workload_controllers().await;
    let cfg = home.path().join(".flt/config");
    let run = async |args: &[&str]| flt.by_config(args).await;
    one_error(
        &run(&["config", "current-context"]).await,
        "current-context is not set",
    );

    let out = run(&["config", "set-cluster", "live", "--server", &flt.servers])
        .await
        .ok();
    assert_eq!(out.stdout, "Cluster \"live\" set.\n");
    run(&["config", "set-cluster", "other", "--server", "127.0.0.1:1"])
        .await
        .ok();
    let out = run(&["config", "set-credentials", "robot", "--token", "s3cret"])
        .await
        .ok();
    assert_eq!(out.stdout, "User \"robot\" set.\n");
    let out = run(&[
        "config",
        "set-context",
        "dev",
        "--cluster",
        "live",
        "--namespace",
        "team",
    ])
    .await
    .ok();
    assert_eq!(out.stdout, "Context \"dev\" created.\n");
    run(&[
        "config",
        "set-context",
        "far",
        "--cluster",
        "other",
        "--user",
        "robot",
    ])
    .await
    .ok();
    let out = run(&["config", "use-context", "dev"]).await.ok();
    assert_eq!(out.stdout, "Switched to context \"dev\".\n");
    let out = run(&["config", "current-context"]).await.ok();
    assert_eq!(out.stdout, "dev\n");
    let out = run(&["config", "get-contexts"]).await.ok();
    golden_with("config_get_contexts", &out.stdout, false);
    let out = run(&["config", "get-contexts", "-o", "name"]).await.ok();
    assert_eq!(out.stdout, "dev\nfar\n");
    // view hides tokens unless --raw.
    let out = run(&["config", "view"]).await.ok();
    assert!(
        out.stdout.contains("token: REDACTED") && !out.stdout.contains("s3cret"),
        "{out}"
    );
    let out = run(&["config", "view", "--raw"]).await.ok();
    assert!(out.stdout.contains("token: s3cret"), "{out}");
    let out = run(&["config", "view", "--minify"]).await.ok();
    assert!(
        !out.stdout.contains("robot") && out.stdout.contains("name: dev"),
        "{out}"
    );

    // The context's cluster and namespace are used.
    run(&["create", "namespace", "team"]).await.ok();
    let out = run(&["create", "configmap", "c1", "--from-literal=a=b"])
        .await
        .ok();
    assert_eq!(out.stdout, "configmap/c1 created\n");
    let out = flt
        .run(&["get", "cm", "c1", "-n", "team", "-o", "name"])
        .await
        .ok();
    assert_eq!(out.stdout, "configmap/c1\n");
    // -n still wins over the context's namespace.
    one_error(
        &run(&["get", "cm", "c1", "-n", "default"]).await,
        "configmaps \"c1\" not found",
    );

    // Unknown names: one line, exit 1, the file unchanged.
    let before = std::fs::read_to_string(&cfg).expect("config");
    one_error(
        &run(&["config", "use-context", "nope"]).await,
        "no context exists with the name: \"nope\"",
    );
    one_error(
        &run(&["--context", "nope", "get", "ns"]).await,
        &format!("context \"nope\" does not exist in {}", cfg.display()),
    );
    assert_eq!(std::fs::read_to_string(&cfg).expect("config"), before);

    // set-context --current changes the current context's namespace.
    let out = run(&[
        "config",
        "set-context",
        "--current",
        "--namespace",
        "default",
    ])
    .await
    .ok();
    assert_eq!(out.stdout, "Context \"dev\" modified.\n");
    one_error(
        &run(&["get", "cm", "c1"]).await,
        "configmaps \"c1\" not found",
    );
    let out = run(&["config", "delete-context", "far"]).await.ok();
    assert_eq!(
        out.stdout,
        format!("deleted context far from {}\n", cfg.display())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_and_completion_of_live_names() {
    if skip_on_etcd("explain_and_completion_of_live_names", false) {
        return;
    }
    let (_c, flt, home) = cluster_without_workload_controllers().await;

    // explain: the kind's fields from the object definitions.
    let out = flt.run(&["explain", "deploy"]).await.ok();
    golden_with("explain_deploy", &out.stdout, false);
    let out = flt
        .run(&["explain", "deployments.spec.replicas"])
        .await
        .ok();
    assert_eq!(
        out.stdout,
        "GROUP:      apps\nKIND:       Deployment\nVERSION:    v1\n\nFIELD: replicas <integer>\n\nDESCRIPTION:\n    Desired number of pods (default 1).\n"
    );
    let out = flt.run(&["explain", "svc.spec.ports"]).await.ok();
    golden_with("explain_svc_spec_ports", &out.stdout, false);
    one_error(
        &flt.run(&["explain", "pod.spec.nope"]).await,
        "field \"nope\" does not exist in spec (see `flt explain pod`)",
    );
    one_error(
        &flt.run(&["explain", "gizmo"]).await,
        "the server doesn't have a resource type \"gizmo\"",
    );

    // Completion: kinds, and names asked of the masters.
    flt.run(&["apply", "-f", "examples/web.yaml"]).await.ok();
    flt.run(&["run", "box", "--image=busybox"]).await.ok();
    flt.run(&["create", "namespace", "team"]).await.ok();
    flt.run(&["create", "configmap", "only-in-team", "-n", "team"])
        .await
        .ok();
    let script = flt.run(&["completion", "bash"]).await.ok().stdout;
    let script_path = home.path().join("flt.bash");
    std::fs::write(&script_path, script).expect("write");
    let bin_dir = flt_bin().parent().expect("bin dir").to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let complete = async |words: &[&str]| {
        let body = format!(
            "source {}\nCOMP_WORDS=({})\nCOMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))\nCOMPREPLY=()\n\
             _flt_with_names flt \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"\n\
             printf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
            script_path.display(),
            words.iter().map(|w| format!("'{w}'")).collect::<Vec<_>>().join(" ")
        );
        let mut cmd = tokio::process::Command::new("bash");
        cmd.arg("-c")
            .arg(body)
            .env("PATH", &path)
            .env("FLT_SERVER", &flt.servers)
            .env("HOME", home.path())
            .env_remove("FLT_CONFIG");
        let out = run_command(
            &mut cmd,
            format!("complete {words:?}"),
            None,
            Duration::from_secs(30),
        )
        .await
        .ok();
        out.stdout
    };
    assert_eq!(complete(&["flt", "get", "deploy", ""]).await, "web\n");
    assert_eq!(
        complete(&["flt", "describe", "svc/w"]).await,
        "svc/web\nsvc/web-nodeport\n"
    );
    assert_eq!(complete(&["flt", "get", "deploym"]).await, "deployments\n");
    assert_eq!(complete(&["flt", "logs", ""]).await, "box\n");
    assert_eq!(complete(&["flt", "exec", "b"]).await, "box\n");
    assert_eq!(
        complete(&["flt", "delete", "cm", "-n", "team", "o"]).await,
        "only-in-team\n"
    );
    assert_eq!(
        complete(&["flt", "edit", "cm", "o"]).await,
        "\n",
        "only the default namespace"
    );
    let all = complete(&["flt", "get", "cm", "-A", "o"]).await;
    assert_eq!(all, "only-in-team\n");
    // Two-word verbs: the kind and name come after the second word.
    assert_eq!(
        complete(&["flt", "rollout", "status", "deploy/"]).await,
        "deploy/web\n"
    );
    assert_eq!(
        complete(&["flt", "set", "image", "deployments", "w"]).await,
        "web\n"
    );
    // Verbs and flags are still clap's.
    assert!(complete(&["flt", "pat"]).await.contains("patch"));
}
