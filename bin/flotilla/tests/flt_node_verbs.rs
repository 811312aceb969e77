//! `flt top`, `flt attach` and `flt run -i --rm` on a real node (one
//! master, one agent with its own containerd in a test-made host
//! namespace, busybox pods), through the master's relay: a busy-looping
//! pod shows more CPU than an idle one, with kubectl's columns and units;
//! a node without a reachable agent is named in top's error; attach passes
//! standard input to a `stdin: true` container and returns its exit code,
//! and follows another's output; `flt run -i --rm` pipes its input to the
//! container, prints its output, exits with its code and leaves no pod.

mod agent_support;
mod common;

use std::time::Duration;

use agent_support::{flt, flt_in};
use common::{wait_for, Cluster, Opts};
use flotilla_client::{Api, Client};
use flotilla_objects::core::{Node, Pod};
use serde_json::json;
use tokio::io::AsyncBufReadExt as _;

const TIMEOUT: Duration = Duration::from_secs(120);

/// Millicores of a "12m" cell.
fn millis(cell: &str) -> Result<u64, String> {
    cell.strip_suffix('m')
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("not millicores: {cell:?}"))
}

/// The rows of a `flt top` table by their first cell.
fn rows(out: &str) -> Vec<Vec<String>> {
    out.lines()
        .skip(1)
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

fn pod(name: &str, node: &str, container: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1,
            "restartPolicy": "Never", "containers": [container]}
    }))
    .expect("pod")
}

#[tokio::test]
async fn top_attach_and_run_with_stdin_through_the_master() {
    let cluster = Cluster::start(1, Opts::default()).await;
    let node = agent_support::one_node(&cluster).await;
    let name = node.name.clone();
    let client = Client::connect(&[cluster.client_addr(0)]).expect("client");
    let pods = Api::<Pod>::namespaced(client.clone(), "default");
    let busy = json!({"name": "spin", "image": "busybox",
        "command": ["sh", "-c", "while :; do :; done"]});
    let idle = json!({"name": "nap", "image": "busybox", "command": ["sleep", "3600"]});
    let reader = json!({"name": "reader", "image": "busybox", "stdin": true,
        "command": ["sh", "-c", "read l; echo \"got $l\"; echo oops >&2; exit 7"]});
    let ticker = json!({"name": "ticker", "image": "busybox",
        "command": ["sh", "-c", "i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.2; done"]});
    for (n, c) in [
        ("busy", busy),
        ("idle", idle),
        ("reader", reader),
        ("ticker", ticker),
    ] {
        pods.create(&pod(n, &name, c)).await.expect("create");
    }
    for n in ["busy", "idle", "reader", "ticker"] {
        agent_support::running_ip(&pods, n).await;
    }
    let servers = cluster.endpoints();

    // run -i --rm: input piped in, output out, the pod gone afterwards.
    let out = flt_in(
        &servers,
        &[
            "run",
            "t",
            "--rm",
            "-i",
            "--image",
            "busybox",
            "--restart",
            "Never",
            "--",
            "cat",
        ],
        b"hi\n",
    )
    .await
    .ok();
    assert_eq!(out.stdout, "hi\n", "{out}");
    assert!(out.stderr.contains("pod \"t\" deleted"), "{out}");
    flt(&servers, &["get", "pod", "t"])
        .await
        .fails_with("not found");
    let out = flt_in(
        &servers,
        &[
            "run",
            "t2",
            "--rm",
            "-i",
            "--image",
            "busybox",
            "--restart",
            "Never",
            "--",
            "sh",
            "-c",
            "wc -c; exit 3",
        ],
        b"12345",
    )
    .await;
    assert_eq!(out.code, Some(3), "{out}");
    assert_eq!(out.stdout.trim(), "5", "{out}");
    flt(&servers, &["get", "pod", "t2"])
        .await
        .fails_with("not found");
    flt(&servers, &["run", "t3", "--rm", "--image", "busybox"])
        .await
        .fails_with("--rm should only be used for attached containers");

    // top pods: the busy loop uses more CPU than the sleeper.
    wait_for(TIMEOUT, "busy shows more CPU than idle", async || {
        let out = flt(&servers, &["top", "pods"]).await;
        if !out.success() {
            return Err(out.to_string());
        }
        let rows = rows(&out.stdout);
        let cpu_of = |p: &str| -> Result<u64, String> {
            let r = rows
                .iter()
                .find(|r| r[0] == p)
                .ok_or_else(|| format!("no row for {p}: {}", out.stdout))?;
            millis(&r[1])
        };
        let (b, i) = (cpu_of("busy")?, cpu_of("idle")?);
        if b > i {
            Ok(())
        } else {
            Err(format!("busy {b}m, idle {i}m"))
        }
    })
    .await;
    let out = flt(&servers, &["top", "pods", "--sort-by", "cpu"])
        .await
        .ok();
    let mut lines = out.stdout.lines();
    let header: Vec<&str> = lines.next().expect("header").split_whitespace().collect();
    assert_eq!(header, ["NAME", "CPU(cores)", "MEMORY(bytes)"]);
    let first: Vec<&str> = lines.next().expect("a row").split_whitespace().collect();
    assert_eq!(first[0], "busy", "{}", out.stdout);
    assert!(first[2].ends_with("Mi"), "{}", out.stdout);
    let out = flt(
        &servers,
        &[
            "top",
            "pods",
            "-l",
            "app=idle",
            "--containers",
            "--no-headers",
        ],
    )
    .await
    .ok();
    let cells: Vec<&str> = out.stdout.split_whitespace().collect();
    assert_eq!(cells.len(), 4, "{}", out.stdout);
    assert_eq!(&cells[..2], ["idle", "nap"]);
    let out = flt(&servers, &["top", "pods", "-A"]).await.ok();
    assert!(out.stdout.starts_with("NAMESPACE"), "{}", out.stdout);
    // top nodes: the node's pods together, against its allocatable.
    let out = flt(&servers, &["top", "nodes"]).await.ok();
    let header: Vec<&str> = out
        .stdout
        .lines()
        .next()
        .expect("h")
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "CPU(cores)", "CPU%", "MEMORY(bytes)", "MEMORY%"]
    );
    let r = rows(&out.stdout);
    let row = r.iter().find(|r| r[0] == name).expect("the node's row");
    // The busy loop runs among the node's pods.
    assert!(millis(&row[1]).expect("cpu") > 0, "{}", out.stdout);
    assert!(
        row[2].ends_with('%') && row[4].ends_with('%'),
        "{}",
        out.stdout
    );

    // attach -i: the input reaches the process, its output and exit code come back.
    let out = flt_in(&servers, &["attach", "-i", "reader"], b"hello\n").await;
    assert_eq!(out.code, Some(7), "{out}");
    assert_eq!(out.stdout, "got hello\n", "{out}");
    assert!(out.stderr.contains("oops"), "{out}");
    // A container without `stdin: true` takes no input.
    flt_in(&servers, &["attach", "-i", "ticker"], b"x\n")
        .await
        .fails_with("does not take standard input");
    // attach (no -i): the output as it comes.
    let mut cmd = tokio::process::Command::new(common::flt_bin());
    cmd.args(["--server", &servers, "attach", "ticker"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("flt attach");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    for _ in 0..3 {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("flt attach prints the output")
            .expect("read")
            .expect("a line");
        assert!(line.starts_with("tick "), "{line:?}");
    }
    child.kill().await.expect("kill");

    // A node whose agent cannot be reached is named in top's error.
    let ghost: Node = serde_json::from_value(json!({"metadata": {"name": "ghost"}})).expect("node");
    Api::<Node>::all(client.clone())
        .create(&ghost)
        .await
        .expect("create node");
    flt(&servers, &["top", "nodes"])
        .await
        .fails_with("node ghost");
    flt(&servers, &["top", "node", "ghost"])
        .await
        .fails_with("node ghost has no agent address");
}

/// Run `script` in `shell` with flt on PATH and FLT_SERVER set.
async fn shell(sh: &str, args: &[&str], servers: &str) -> common::CmdOut {
    let bin_dir = common::flt_bin()
        .parent()
        .expect("flt's folder")
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = tokio::process::Command::new(sh);
    cmd.args(args)
        .env("PATH", path)
        .env("FLT_SERVER", servers)
        .env_remove("FLT_CONFIG")
        .env("HOME", std::env::temp_dir());
    common::run_command(
        &mut cmd,
        format!("{sh} {args:?}"),
        None,
        Duration::from_secs(60),
    )
    .await
}

#[tokio::test]
async fn zsh_and_fish_complete_live_names() {
    for sh in ["zsh", "fish"] {
        if std::process::Command::new(sh)
            .arg("-c")
            .arg("true")
            .output()
            .is_err()
        {
            panic!("{sh} is needed (apt-get install zsh fish)");
        }
    }
    let cluster = Cluster::start(1, Opts::default()).await;
    let servers = cluster.endpoints();
    for p in ["web-a", "web-b", "db"] {
        flt(&servers, &["run", p, "--image", "busybox"]).await.ok();
    }
    flt(&servers, &["create", "namespace", "other"]).await.ok();
    flt(
        &servers,
        &["-n", "other", "run", "elsewhere", "--image", "busybox"],
    )
    .await
    .ok();
    let dir = tempfile::tempdir().expect("tmp");
    for sh in ["zsh", "fish"] {
        let script = flt(&servers, &["completion", sh]).await.ok().stdout;
        std::fs::write(dir.path().join(sh), script).expect("write");
    }
    let zsh_script = dir.path().join("zsh").display().to_string();
    let fish_script = dir.path().join("fish").display().to_string();

    // zsh: the completion function, with compadd (a builtin of the
    // completion system only) printing what it is given.
    let zsh = async |line: &str| -> Vec<String> {
        let script = format!(
            "compdef() {{ :; }}; compadd() {{ local a; for a in \"$@\"; do [[ $a == -* ]] || print -r -- $a; done }}; \
             source {zsh_script}; words=({line}); CURRENT=${{#words}}; _flt_with_names"
        );
        let out = shell("zsh", &["-f", "-c", &script], &servers).await.ok();
        out.stdout.lines().map(str::to_string).collect()
    };
    assert_eq!(zsh("flt get pods ''").await, ["db", "web-a", "web-b"]);
    assert_eq!(zsh("flt logs web").await, ["web-a", "web-b"]);
    assert_eq!(zsh("flt -n other top pods ''").await, ["elsewhere"]);
    assert_eq!(zsh("flt describe po/w").await, ["po/web-a", "po/web-b"]);

    // fish: its own completion engine, asked as a user's TAB would.
    let fish = async |line: &str| -> Vec<String> {
        let script = format!("source {fish_script}; complete -C '{line}'");
        let out = shell("fish", &["--no-config", "-c", &script], &servers)
            .await
            .ok();
        out.stdout
            .lines()
            .map(|l| l.split('\t').next().unwrap_or("").to_string())
            .collect()
    };
    let got = fish("flt attach ").await;
    for p in ["db", "web-a", "web-b"] {
        assert!(got.contains(&p.to_string()), "{p} missing: {got:?}");
    }
    assert!(!got.contains(&"elsewhere".to_string()), "{got:?}");
    let got = fish("flt get deploy,pods -A ").await;
    assert!(
        !got.contains(&"web-a".to_string()),
        "names of a list of kinds: {got:?}"
    );
    let got = fish("flt get pods -A ").await;
    assert!(got.contains(&"elsewhere".to_string()), "{got:?}");
    assert!(got.contains(&"web-b".to_string()), "{got:?}");
}

/// A master process started here (killed on drop).
struct Master(std::process::Child);

impl Drop for Master {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Role "pod-reader" may read pods (and bob is bound to it), not use their
/// node-side subresources: the relay refuses each with Forbidden naming
/// the verb and the subresource, before any agent is asked.
const BOB_ROLE: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: pod-reader}
rules:
- apiGroups: [""]
  resources: [pods, nodes]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: bob-reads-pods}
subjects:
- {kind: User, name: bob, apiGroup: rbac.authorization.k8s.io}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: pod-reader}
---
apiVersion: v1
kind: Node
metadata: {name: n1}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: default}
spec:
  nodeName: n1
  containers: [{name: web, image: busybox, stdin: true}]
"#;

#[tokio::test]
async fn node_verbs_need_their_subresource_in_rbac() {
    let dir = tempfile::tempdir().expect("tmp");
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(
        &tokens,
        "t-admin,admin,1,system:masters\nt-bob,bob,1002,\"dev\"\n",
    )
    .expect("tokens");
    let (client, peer) = (
        format!("127.0.0.1:{}", common::free_port()),
        format!("127.0.0.1:{}", common::free_port()),
    );
    let log = std::fs::File::create(dir.path().join("master.log")).expect("log");
    let _m = Master(
        std::process::Command::new(common::flotilla_bin())
            .args(["master", "--name", "m1", "--data-dir"])
            .arg(dir.path().join("m1"))
            .args(["--client-addr", &client, "--peer-addr", &peer])
            .args(["--initial-cluster", &format!("m1={peer}")])
            .arg("--token-auth-file")
            .arg(&tokens)
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("flotilla master"),
    );
    let as_user = |token: &str, args: &[&str]| -> Vec<String> {
        ["--token", token]
            .iter()
            .chain(args)
            .map(|s| s.to_string())
            .collect()
    };
    let succeeds = async |what: &str, args: Vec<String>| {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        wait_for(TIMEOUT, what, async || {
            let out = flt(&client, &a).await;
            if out.success() {
                Ok(())
            } else {
                Err(out.to_string())
            }
        })
        .await;
    };
    succeeds(
        "the master serves the admin",
        as_user("t-admin", &["get", "namespaces"]),
    )
    .await;
    let a = as_user("t-admin", &["apply", "-f", "-"]);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    flt_in(&client, &a, BOB_ROLE.as_bytes()).await.ok();
    let bob = |args: &[&str]| as_user("t-bob", args);
    // bob reads pods (so a refusal below is the subresource's)...
    succeeds("bob's binding applies", bob(&["get", "pod", "web"])).await;
    // ... but may not use the node-side verbs.
    for (args, needle) in [
        (
            &["port-forward", "pod/web", "8080:80"][..],
            "cannot create resource \"pods/portforward\"",
        ),
        (
            &["attach", "-i", "web"][..],
            "cannot create resource \"pods/attach\"",
        ),
        (
            &["attach", "web"][..],
            "cannot create resource \"pods/attach\"",
        ),
        (
            &["top", "pods"][..],
            "cannot list resource \"pods/metrics\"",
        ),
        (&["top", "nodes"][..], "cannot get resource \"nodes/stats\""),
    ] {
        let a = bob(args);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let out = flt_in(&client, &a, b"").await;
        assert_ne!(out.code, Some(0), "{out}");
        assert!(out.code.is_some(), "{out}");
        assert!(out.stderr.contains("forbidden"), "{out}");
        assert!(out.stderr.contains("User \"bob\""), "{out}");
        assert!(out.stderr.contains(needle), "{out}");
    }
}
