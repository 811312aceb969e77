//! Transport security and access control on real processes: `flotilla up`
//! (three masters, TLS on client and peer ports, RBAC) driven with flt,
//! etcdctl and openssl as a user would drive them.
//!
//! One cluster for the whole sequence: plaintext and foreign certificates
//! refused at the TLS layer; anonymous and token users refused with
//! Kubernetes' Forbidden wording until a RoleBinding grants them, then
//! allowed exactly what it grants; impersonation only for those allowed
//! it; the etcd API reserved to cluster-admin; a node agent joining with
//! its own certificate, reading only its pods' Secrets and writing only
//! its own Node; and the masters'
//! certificates rotated on disk under load without one failed call.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;

use common::procs::{flotilla, flt_env as flt, text, Up};

/// The serial number of the certificate a TLS server presents, or of a file.
fn served_serial(addr: &str, ca: &Path) -> anyhow::Result<String> {
    let s = Command::new("openssl")
        .args(["s_client", "-connect", addr, "-CAfile"])
        .arg(ca)
        .stdin(std::process::Stdio::null())
        .output()?;
    let pem = String::from_utf8_lossy(&s.stdout).to_string();
    let mut x = Command::new("openssl")
        .args(["x509", "-noout", "-serial"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    use std::io::Write;
    x.stdin.take().expect("stdin").write_all(pem.as_bytes())?;
    let out = x.wait_with_output()?;
    anyhow::ensure!(out.status.success(), "no certificate from {addr}");
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn file_serial(crt: &Path) -> String {
    let o = Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in"])
        .arg(crt)
        .output()
        .expect("openssl x509");
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn etcdctl(pki: &Path, cert: Option<&str>, endpoint: &str, args: &[&str]) -> Output {
    let mut c = Command::new("etcdctl");
    c.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .arg("--dial-timeout=2s")
        .arg("--command-timeout=5s");
    if endpoint.starts_with("https://") {
        c.arg(format!("--cacert={}", pki.join("ca.crt").display()));
    }
    if let Some(stem) = cert {
        c.arg(format!(
            "--cert={}",
            pki.join(format!("{stem}.crt")).display()
        ))
        .arg(format!(
            "--key={}",
            pki.join(format!("{stem}.key")).display()
        ));
    }
    c.args(args).output().expect("run etcdctl")
}

const BINDING: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: alice-view
  namespace: default
subjects:
- kind: User
  apiGroup: rbac.authorization.k8s.io
  name: alice
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: view
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_tokens_rbac_the_etcd_gate_and_certificate_rotation() {
    if skip_on_etcd(
        "tls_tokens_rbac_the_etcd_gate_and_certificate_rotation",
        false,
    ) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, "t-alice,alice,1001,\"dev,qa\"\n").expect("tokens");
    let data = dir.path().join("up");
    let base = free_up_base();
    let servers: Vec<String> = [0u16, 10_000, 20_000]
        .iter()
        .map(|d| format!("127.0.0.1:{}", base + d))
        .collect();
    let log = std::fs::File::create(dir.path().join("up.log")).expect("log");
    let _up = Up(Command::new(flotilla_bin())
        .args([
            "up",
            "--agents",
            "0",
            "--base-port",
            &base.to_string(),
            "--data-dir",
        ])
        .arg(&data)
        .arg("--token-auth-file")
        .arg(&tokens)
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("flotilla up"));
    let cfg = data.join("flt.yaml");
    let cfg_s = cfg.to_string_lossy().to_string();
    let admin = [("FLT_CONFIG", cfg_s.as_str())];
    wait_for(
        Duration::from_secs(60),
        "the admin config works",
        async || {
            let o = flt(&home, &admin, &["get", "namespaces"]);
            anyhow::ensure!(o.status.success(), "{}", text(&o));
            Ok(())
        },
    )
    .await;
    let pki = data.join("pki");
    let ca = pki.join("ca.crt").to_string_lossy().to_string();
    let server = servers.join(",");

    // Plaintext is not served at all.
    let o = flt(&home, &[], &["--server", &servers[0], "get", "namespaces"]);
    assert!(!o.status.success(), "plaintext was served: {}", text(&o));

    // A certificate of another CA, even one claiming system:masters, is
    // refused by the TLS handshake.
    let other = dir.path().join("other");
    let other_s = other.to_string_lossy().to_string();
    flotilla(&["certs", "ca", "--dir", &other_s]);
    flotilla(&[
        "certs",
        "issue",
        "--dir",
        &other_s,
        "--name",
        "mallory",
        "--common-name",
        "mallory",
        "--org",
        "system:masters",
    ]);
    let o = flt(
        &home,
        &[],
        &[
            "--server",
            &server,
            "--certificate-authority",
            &ca,
            "--client-certificate",
            &format!("{other_s}/mallory.crt"),
            "--client-key",
            &format!("{other_s}/mallory.key"),
            "get",
            "namespaces",
        ],
    );
    assert!(
        !o.status.success(),
        "a foreign certificate was accepted: {}",
        text(&o)
    );
    assert!(
        !text(&o).contains("forbidden"),
        "refused by RBAC, not by TLS: {}",
        text(&o)
    );

    // Without credentials: anonymous, allowed nothing.
    let anon = ["--server", &server, "--certificate-authority", &ca];
    let o = flt(&home, &[], &[&anon[..], &["get", "pods"]].concat());
    assert!(!o.status.success());
    assert!(
        text(&o).contains("pods is forbidden: User \"system:anonymous\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""),
        "{}",
        text(&o)
    );

    // An unknown token is unauthorized, not anonymous.
    let o = flt(
        &home,
        &[],
        &[&anon[..], &["--token", "nope", "get", "pods"]].concat(),
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("Unauthorized"), "{}", text(&o));

    // alice by token: known, but bound to nothing yet.
    let alice = [&anon[..], &["--token", "t-alice"]].concat();
    let o = flt(&home, &[], &[&alice[..], &["auth", "whoami"]].concat());
    assert!(o.status.success(), "{}", text(&o));
    let who = text(&o);
    assert!(
        who.contains("alice")
            && who.contains("1001")
            && who.contains("[dev qa system:authenticated]"),
        "{who}"
    );
    let o = flt(
        &home,
        &[],
        &[&alice[..], &["auth", "can-i", "list", "pods"]].concat(),
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "no");
    let o = flt(&home, &[], &[&alice[..], &["get", "pods"]].concat());
    assert!(
        text(&o).contains("pods is forbidden: User \"alice\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""),
        "{}",
        text(&o)
    );

    // The admin binds alice to view in default.
    let manifest = dir.path().join("binding.yaml");
    std::fs::write(&manifest, BINDING).expect("manifest");
    let o = flt(&home, &admin, &["apply", "-f", &manifest.to_string_lossy()]);
    assert!(o.status.success(), "{}", text(&o));
    wait_for(Duration::from_secs(10), "alice may list pods", async || {
        let o = flt(&home, &[], &[&alice[..], &["get", "pods"]].concat());
        anyhow::ensure!(o.status.success(), "{}", text(&o));
        Ok(())
    })
    .await;
    let can = |args: &[&str]| {
        let o = flt(&home, &[], &[&alice[..], &["auth", "can-i"], args].concat());
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    assert_eq!(can(&["list", "pods"]), "yes");
    assert_eq!(can(&["get", "deployments"]), "yes");
    assert_eq!(can(&["delete", "pods"]), "no");
    assert_eq!(can(&["get", "secrets"]), "no");
    assert_eq!(can(&["list", "pods", "-n", "kube-system"]), "no");
    let o = flt(
        &home,
        &[],
        &[&alice[..], &["delete", "pod", "nothing"]].concat(),
    );
    assert!(
        text(&o).contains("pods \"nothing\" is forbidden: User \"alice\" cannot delete"),
        "{}",
        text(&o)
    );

    // Impersonation: the admin may act as alice; alice may not act as bob.
    let o = flt(&home, &admin, &["auth", "whoami", "--as", "alice"]);
    assert!(text(&o).contains("alice"), "{}", text(&o));
    let o = flt(
        &home,
        &admin,
        &["auth", "can-i", "delete", "pods", "--as", "alice"],
    );
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "no",
        "{}",
        text(&o)
    );
    let o = flt(
        &home,
        &[],
        &[&alice[..], &["get", "pods", "--as", "bob"]].concat(),
    );
    assert!(
        text(&o).contains("cannot impersonate resource \"users\""),
        "{}",
        text(&o)
    );

    // The etcd API: cluster-admin only, over TLS only.
    let bob_dir = pki.to_string_lossy().to_string();
    flotilla(&[
        "certs",
        "issue",
        "--dir",
        &bob_dir,
        "--name",
        "bob",
        "--common-name",
        "bob",
    ]);
    let https = format!("https://{}", servers[0]);
    let o = etcdctl(&pki, Some("admin"), &https, &["put", "sec/key", "v"]);
    assert!(o.status.success(), "admin's etcdctl put: {}", text(&o));
    let o = etcdctl(&pki, Some("bob"), &https, &["get", "sec/key"]);
    assert!(!o.status.success(), "bob read the raw keys: {}", text(&o));
    assert!(
        text(&o).contains("reserved to cluster-admin"),
        "{}",
        text(&o)
    );
    let o = etcdctl(
        &pki,
        None,
        &format!("http://{}", servers[0]),
        &["get", "sec/key"],
    );
    assert!(
        !o.status.success(),
        "plaintext etcd API served: {}",
        text(&o)
    );

    // A node agent started on its own, as an operator would: the masters'
    // CA and a certificate naming it system:node:NAME in system:nodes.
    flotilla(&[
        "certs",
        "issue",
        "--dir",
        &bob_dir,
        "--name",
        "tls-node",
        "--common-name",
        "system:node:tls-node",
        "--org",
        "system:nodes",
        "--san",
        "127.0.0.1",
        "--usage",
        "both",
    ]);
    let agent_log = std::fs::File::create(dir.path().join("agent.log")).expect("log");
    let _agent = Up(Command::new(flotilla_bin())
        .args([
            "agent",
            "--runtime",
            "fake",
            "--name",
            "tls-node",
            "--node-ip",
            "127.0.0.1",
            "--stream-port",
            &free_port().to_string(),
            "--metrics-addr",
            "127.0.0.1:0",
            "--server",
            &server,
            "--trusted-ca-file",
            &ca,
        ])
        .arg("--cert-file")
        .arg(pki.join("tls-node.crt"))
        .arg("--key-file")
        .arg(pki.join("tls-node.key"))
        .arg("--data-dir")
        .arg(dir.path().join("agent"))
        .stdout(std::process::Stdio::null())
        .stderr(agent_log)
        .spawn()
        .expect("flotilla agent"));
    wait_for(
        Duration::from_secs(30),
        "the agent registers its Node over TLS",
        async || {
            let o = flt(&home, &admin, &["get", "nodes"]);
            anyhow::ensure!(
                o.status.success() && text(&o).contains("tls-node"),
                "{}",
                text(&o)
            );
            Ok(())
        },
    )
    .await;

    // Node authorization: the agent's certificate reads the Secret of a
    // pod bound to it and nothing else, and writes only what is its own.
    let manifest = dir.path().join("node-objects.yaml");
    std::fs::write(
        &manifest,
        r#"apiVersion: v1
kind: Node
metadata: {name: other-node}
---
apiVersion: v1
kind: Secret
metadata: {name: s-here}
stringData: {k: here}
---
apiVersion: v1
kind: Secret
metadata: {name: s-there}
stringData: {k: there}
---
apiVersion: v1
kind: Pod
metadata: {name: p-here}
spec:
  nodeName: tls-node
  containers: [{name: c, image: busybox}]
  volumes: [{name: s, secret: {secretName: s-here}}]
---
apiVersion: v1
kind: Pod
metadata: {name: p-there}
spec:
  nodeName: other-node
  containers:
  - name: c
    image: busybox
    env: [{name: K, valueFrom: {secretKeyRef: {name: s-there, key: k}}}]
"#,
    )
    .expect("manifest");
    let o = flt(&home, &admin, &["apply", "-f", &manifest.to_string_lossy()]);
    assert!(o.status.success(), "{}", text(&o));
    let node_crt = pki.join("tls-node.crt").to_string_lossy().to_string();
    let node_key = pki.join("tls-node.key").to_string_lossy().to_string();
    let as_node = [
        "--server",
        &server,
        "--certificate-authority",
        &ca,
        "--client-certificate",
        &node_crt,
        "--client-key",
        &node_key,
    ];
    let node_flt = |args: &[&str]| flt(&home, &[], &[&as_node[..], args].concat());
    wait_for(
        Duration::from_secs(10),
        "the node reads the secret of its pod",
        async || {
            let o = node_flt(&["get", "secret", "s-here"]);
            anyhow::ensure!(o.status.success(), "{}", text(&o));
            Ok(())
        },
    )
    .await;
    let refusals: [(&[&str], &str); 6] = [
        (
            &["get", "secret", "s-there"],
            "secrets \"s-there\" is forbidden: User \"system:node:tls-node\" cannot get resource \"secrets\" in API group \"\" in the namespace \"default\": no relationship found between node 'tls-node' and this object",
        ),
        (&["get", "secrets"], "may only get individual secrets"),
        (
            &["label", "node", "other-node", "x=y"],
            "node 'tls-node' may only change the Node that is its own",
        ),
        (
            &["label", "node", "tls-node", "node-restriction.kubernetes.io/tier=gold"],
            "may not change its flotilla.dev/nodepool label nor labels under node-restriction.kubernetes.io/",
        ),
        (&["cordon", "tls-node"], "may not change its spec"),
        (
            &["delete", "pod", "p-there"],
            "can only change or delete pods bound to it, and it is bound to node \"other-node\"",
        ),
    ];
    for (args, says) in refusals {
        let o = node_flt(args);
        assert!(
            !o.status.success() && text(&o).contains(says),
            "flt {args:?} as the node: wanted a refusal saying {says:?}, got: {}",
            text(&o)
        );
    }
    let o = node_flt(&["label", "node", "tls-node", "team=a"]);
    assert!(o.status.success(), "its own label: {}", text(&o));
    let o = flt(&home, &admin, &["get", "secret", "s-there"]);
    assert!(o.status.success(), "the admin still reads it: {}", text(&o));

    // Rotation: every master's certificate replaced on disk while a client
    // calls all three without pause; each master serves its new certificate
    // and no call fails.
    let client = flotilla_client::Client::connect_with(
        &servers,
        flotilla_client::ClientOptions {
            tls: Some(
                flotilla_security::tls::ClientTlsFiles {
                    ca: Some(pki.join("ca.crt")),
                    cert: Some(pki.join("admin.crt")),
                    key: Some(pki.join("admin.key")),
                }
                .tonic_config()
                .expect("tls"),
            ),
            retry_for: Duration::ZERO,
            ..Default::default()
        },
    )
    .expect("client");
    let stop = Arc::new(AtomicBool::new(false));
    let (calls, failures) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load = {
        let (stop, calls, failures) = (stop.clone(), calls.clone(), failures.clone());
        tokio::spawn(async move {
            let mut last_error = None;
            while !stop.load(Ordering::Relaxed) {
                match client.get("namespaces", "", "default").await {
                    Ok(_) => calls.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        last_error = Some(e.to_string());
                        failures.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
            last_error
        })
    };
    for (i, addr) in servers.iter().enumerate() {
        let name = format!("m{}", i + 1);
        let before = served_serial(addr, Path::new(&ca)).expect("served certificate");
        flotilla(&[
            "certs",
            "issue",
            "--dir",
            &bob_dir,
            "--name",
            &name,
            "--common-name",
            &format!("system:master:{name}"),
            "--org",
            "system:masters",
            "--san",
            "127.0.0.1",
            "--san",
            "localhost",
            "--usage",
            "both",
        ]);
        let want = file_serial(&PathBuf::from(&bob_dir).join(format!("{name}.crt")));
        assert_ne!(before, want, "a new certificate");
        wait_for(
            Duration::from_secs(10),
            "the new certificate is served",
            async || {
                let got = served_serial(addr, Path::new(&ca))?;
                anyhow::ensure!(got == want, "{addr} still serves {got}, not {want}");
                Ok(())
            },
        )
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    let last_error = load.await.expect("load");
    let (n, f) = (
        calls.load(Ordering::Relaxed),
        failures.load(Ordering::Relaxed),
    );
    assert!(n > 50, "the load ran: {n} calls");
    assert_eq!(
        f,
        0,
        "{f} of {} calls failed during rotation; last: {last_error:?}",
        n + f
    );
}
