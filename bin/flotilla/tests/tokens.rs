//! Tokens that the masters check against their objects, on real
//! processes: a node that joins with a bootstrap token and gets its client
//! certificate through a CertificateSigningRequest (TLS bootstrap), and a
//! ServiceAccount token that the agent mounts into a real container, which
//! lists what the account's Role allows and nothing else, and stops
//! working once its pod is gone.

mod agent_support;
mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

use common::procs::{flotilla, flt_env as flt, text, Up};

#[tokio::test(flavor = "multi_thread")]
async fn bootstrap_tokens_join_nodes_and_service_account_tokens_work_from_pods() {
    if skip_on_etcd(
        "bootstrap_tokens_join_nodes_and_service_account_tokens_work_from_pods",
        false,
    ) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    let data = dir.path().join("up");
    let base = free_up_base();
    let servers: Vec<String> = [0u16, 10_000, 20_000]
        .iter()
        .map(|d| format!("127.0.0.1:{}", base + d))
        .collect();
    let server = servers.join(",");
    let up_log = dir.path().join("up.log");
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
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&up_log).expect("log"))
        .spawn()
        .expect("flotilla up"));
    let cfg = data.join("flt.yaml").to_string_lossy().to_string();
    let admin = [("FLT_CONFIG", cfg.as_str())];
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
    let with_token = |t: &str, args: &[&str]| {
        let mut a = vec![
            "--server",
            &server,
            "--certificate-authority",
            &ca,
            "--token",
            t,
        ];
        a.extend(args);
        flt(&home, &[], &a)
    };

    // ---- TLS bootstrap with a bootstrap token.
    let manifest = dir.path().join("bootstrap.yaml");
    std::fs::write(
        &manifest,
        r#"apiVersion: v1
kind: Secret
metadata: {name: bootstrap-token-abcdef, namespace: kube-system}
type: bootstrap.kubernetes.io/token
stringData:
  token-id: abcdef
  token-secret: 0123456789abcdef
  usage-bootstrap-authentication: "true"
"#,
    )
    .expect("manifest");
    let o = flt(&home, &admin, &["apply", "-f", &manifest.to_string_lossy()]);
    assert!(o.status.success(), "{}", text(&o));
    let token = "abcdef.0123456789abcdef";
    let o = with_token(token, &["auth", "whoami"]);
    assert!(
        o.status.success() && text(&o).contains("system:bootstrap:abcdef"),
        "{}",
        text(&o)
    );
    let o = with_token(token, &["get", "secrets", "-n", "kube-system"]);
    assert!(
        !o.status.success(),
        "a bootstrap token read secrets: {}",
        text(&o)
    );
    assert!(
        text(&o).contains("User \"system:bootstrap:abcdef\" cannot list resource \"secrets\""),
        "{}",
        text(&o)
    );
    let o = with_token("abcdef.ffffffffffffffff", &["get", "nodes"]);
    assert!(
        !o.status.success(),
        "a wrong secret was accepted: {}",
        text(&o)
    );
    assert!(text(&o).contains("Unauthorized"), "{}", text(&o));

    let token_file = dir.path().join("bootstrap-token");
    std::fs::write(&token_file, format!("{token}\n")).expect("token file");
    let boot_dir = dir.path().join("boot-agent");
    let _boot = Up(Command::new(flotilla_bin())
        .args([
            "agent",
            "--runtime",
            "fake",
            "--name",
            "boot-node",
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
        .arg("--bootstrap-token-file")
        .arg(&token_file)
        .arg("--data-dir")
        .arg(&boot_dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("boot-agent.log")).expect("log"))
        .spawn()
        .expect("flotilla agent"));
    wait_for(
        Duration::from_secs(60),
        "the bootstrapped node registers with its own certificate",
        async || {
            let o = flt(&home, &admin, &["get", "nodes"]);
            anyhow::ensure!(
                o.status.success() && text(&o).contains("boot-node"),
                "{}",
                text(&o)
            );
            Ok(())
        },
    )
    .await;
    let crt =
        std::fs::read_to_string(boot_dir.join("pki/agent.crt")).expect("the node's certificate");
    let der = flotilla_security::tls::certs_from_pem(crt.as_bytes(), Path::new("agent.crt"))
        .expect("pem");
    let id = flotilla_security::authn::identity_of_certificate(der[0].as_ref()).expect("identity");
    assert_eq!(id.user, "system:node:boot-node");
    assert!(id.in_group("system:nodes"), "{id:?}");
    let o = flt(&home, &admin, &["get", "csr", "-o", "json"]);
    assert!(o.status.success(), "{}", text(&o));
    let csrs: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let csr = csrs["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|c| c["spec"]["username"] == "system:bootstrap:abcdef")
        .unwrap_or_else(|| panic!("no CSR by the bootstrap token: {csrs}"));
    assert_eq!(csr["status"]["conditions"][0]["type"], "Approved", "{csr}");
    assert!(
        csr["spec"]["groups"]
            .as_array()
            .is_some_and(|g| g.iter().any(|g| g == "system:bootstrappers")),
        "{csr}"
    );

    // flt makes bootstrap tokens as kubeadm does.
    let o = flt(&home, &admin, &["create", "bootstrap-token", "--ttl", "1h"]);
    assert!(o.status.success(), "{}", text(&o));
    let made = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let id = made.split('.').next().unwrap_or_default().to_string();
    let o = with_token(&made, &["auth", "whoami"]);
    assert!(
        o.status.success() && text(&o).contains(&format!("system:bootstrap:{id}")),
        "{made}: {}",
        text(&o)
    );

    // A request for anything but a node's client certificate is not
    // approved by itself, and the kubelet signer refuses to sign it even
    // once an operator approves it.
    let (req, _) = flotilla_security::csr::client_request("system:node:evil", &["system:masters"])
        .expect("request");
    let evil = dir.path().join("evil-csr.json");
    std::fs::write(
        &evil,
        serde_json::json!({
            "apiVersion": "certificates.k8s.io/v1",
            "kind": "CertificateSigningRequest",
            "metadata": {"name": "evil"},
            "spec": {
                "request": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, req),
                "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
                "usages": ["digital signature", "key encipherment", "client auth"],
            },
        })
        .to_string(),
    )
    .expect("csr file");
    let o = with_token(token, &["create", "-f", &evil.to_string_lossy()]);
    assert!(o.status.success(), "{}", text(&o));
    let o = flt(&home, &admin, &["certificate", "approve", "evil"]);
    assert!(o.status.success(), "{}", text(&o));
    let failed = wait_for(
        Duration::from_secs(30),
        "the signer refuses the approved request",
        async || {
            let o = flt(&home, &admin, &["get", "csr", "evil", "-o", "json"]);
            anyhow::ensure!(o.status.success(), "{}", text(&o));
            let c: serde_json::Value = serde_json::from_slice(&o.stdout)?;
            let conds = c["status"]["conditions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            anyhow::ensure!(conds.iter().any(|x| x["type"] == "Failed"), "{c}");
            Ok(c)
        },
    )
    .await;
    assert_eq!(
        failed["status"]["conditions"][0]["reason"], "FltApprove",
        "{failed}"
    );
    assert!(
        failed["status"]["certificate"]
            .as_str()
            .unwrap_or("")
            .is_empty(),
        "{failed}"
    );

    // ---- A ServiceAccount token in a real container.
    let mut lan = agent_support::lan::Lan::new();
    lan.add_host();
    let host = &lan.hosts[0];
    let registry = agent_support::Registry::start(dir.path(), lan.gateway);
    let node = format!("sa-{}", lan.id);
    let node_user = format!("system:node:{node}");
    let pki_s = pki.to_string_lossy().to_string();
    flotilla(&[
        "certs",
        "issue",
        "--dir",
        &pki_s,
        "--name",
        &node,
        "--common-name",
        &node_user,
        "--org",
        "system:nodes",
        "--san",
        &host.ip.to_string(),
        "--usage",
        "both",
    ]);
    let crt = pki
        .join(format!("{node}.crt"))
        .to_string_lossy()
        .to_string();
    let key = pki
        .join(format!("{node}.key"))
        .to_string_lossy()
        .to_string();
    let agent = agent_support::AgentProc::start_with(
        &server,
        &node,
        host,
        dir.path(),
        &registry,
        &[
            "--trusted-ca-file",
            &ca,
            "--cert-file",
            &crt,
            "--key-file",
            &key,
        ],
    );
    let manifest = dir.path().join("sa.yaml");
    std::fs::write(
        &manifest,
        format!(
            r#"apiVersion: v1
kind: Namespace
metadata: {{name: team}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: reader, namespace: team}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: pod-reader, namespace: team}}
rules: [{{apiGroups: [""], resources: [pods], verbs: [get, list]}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: reader-reads-pods, namespace: team}}
subjects: [{{kind: ServiceAccount, name: reader, namespace: team}}]
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: pod-reader}}
---
apiVersion: v1
kind: Pod
metadata: {{name: client, namespace: team}}
spec:
  nodeName: {node}
  serviceAccountName: reader
  containers: [{{name: c, image: busybox, command: [sleep, "3600"]}}]
"#
        ),
    )
    .expect("manifest");
    let o = flt(&home, &admin, &["apply", "-f", &manifest.to_string_lossy()]);
    assert!(o.status.success(), "{}", text(&o));
    let sa_path = "/var/run/secrets/kubernetes.io/serviceaccount";
    let token = wait_for(
        Duration::from_secs(120),
        "the pod runs and reads its token",
        async || {
            let o = flt(
                &home,
                &admin,
                &[
                    "exec",
                    "-n",
                    "team",
                    "client",
                    "--",
                    "cat",
                    &format!("{sa_path}/token"),
                ],
            );
            anyhow::ensure!(
                o.status.success(),
                "{}\nagent: {}",
                text(&o),
                agent.tail(20)
            );
            Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
        },
    )
    .await;
    for (file, want) in [
        ("namespace", "team".to_string()),
        ("ca.crt", std::fs::read_to_string(&ca).expect("ca")),
    ] {
        let o = flt(
            &home,
            &admin,
            &[
                "exec",
                "-n",
                "team",
                "client",
                "--",
                "cat",
                &format!("{sa_path}/{file}"),
            ],
        );
        assert!(o.status.success(), "{}", text(&o));
        assert_eq!(String::from_utf8_lossy(&o.stdout), want, "{file}");
    }
    // The mount is read-only.
    let o = flt(
        &home,
        &admin,
        &[
            "exec",
            "-n",
            "team",
            "client",
            "--",
            "sh",
            "-c",
            &format!("echo x > {sa_path}/token"),
        ],
    );
    assert!(
        !o.status.success(),
        "the token folder is writable: {}",
        text(&o)
    );

    let o = with_token(&token, &["auth", "whoami"]);
    assert!(
        o.status.success() && text(&o).contains("system:serviceaccount:team:reader"),
        "{}",
        text(&o)
    );
    // flt create token makes one too (not bound to a pod).
    let o = flt(
        &home,
        &admin,
        &[
            "create",
            "token",
            "reader",
            "-n",
            "team",
            "--duration",
            "15m",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let minted = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let o = with_token(&minted, &["get", "pods", "-n", "team"]);
    assert!(
        o.status.success() && text(&o).contains("client"),
        "{}",
        text(&o)
    );
    let o = with_token(&token, &["get", "pods", "-n", "team"]);
    assert!(
        o.status.success() && text(&o).contains("client"),
        "{}",
        text(&o)
    );
    let o = with_token(&token, &["get", "secrets", "-n", "team"]);
    assert!(
        !o.status.success(),
        "the account listed secrets: {}",
        text(&o)
    );
    assert!(
        text(&o).contains("User \"system:serviceaccount:team:reader\" cannot list resource \"secrets\" in API group \"\" in the namespace \"team\""),
        "{}",
        text(&o)
    );
    let o = with_token(&token, &["get", "pods", "-n", "default"]);
    assert!(
        !o.status.success(),
        "the account listed another namespace: {}",
        text(&o)
    );
    // Bound to the pod: once the pod is gone, the token is refused.
    let o = flt(
        &home,
        &admin,
        &[
            "delete",
            "pod",
            "-n",
            "team",
            "client",
            "--grace-period",
            "0",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    wait_for(
        Duration::from_secs(60),
        "the token of a deleted pod is refused",
        async || {
            let o = with_token(&token, &["get", "pods", "-n", "team"]);
            anyhow::ensure!(!o.status.success(), "still accepted: {}", text(&o));
            anyhow::ensure!(text(&o).contains("no longer exists"), "{}", text(&o));
            Ok(())
        },
    )
    .await;
    drop(agent);
}
