//! `flt exec -i`, `flt cp` and `flt port-forward` on a real node (one
//! master, one agent with its own containerd in a test-made host
//! namespace, busybox pods), through the master's relay: standard input
//! reaches the command and is closed; a folder goes into a pod and back
//! byte for byte; an archive from the pod with `../` entries is refused,
//! and so is a pod without tar; a pod's and a service's port answer
//! through local ports, several times and two connections at once.

mod agent_support;
mod common;

use std::path::Path;
use std::time::Duration;

use agent_support::{flt, flt_in};
use common::{wait_for, Cluster, Opts};
use flotilla_client::{Api, Client};
use flotilla_objects::core::{Pod, Service};
use serde_json::json;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};

const TIMEOUT: Duration = Duration::from_secs(120);

/// A ustar archive of regular files with these raw names (no checks).
fn raw_tar(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, body) in entries {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..108].copy_from_slice(b"0000644\0");
        h[108..116].copy_from_slice(b"0000000\0");
        h[116..124].copy_from_slice(b"0000000\0");
        h[124..136].copy_from_slice(format!("{:011o}\0", body.len()).as_bytes());
        h[136..148].copy_from_slice(b"00000000000\0");
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(body);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// Every file under `dir` (relative path, bytes or link target), sorted.
fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let p = e.expect("entry").path();
            let rel = p.strip_prefix(dir).expect("rel").display().to_string();
            let m = std::fs::symlink_metadata(&p).expect("meta");
            if m.file_type().is_symlink() {
                let t = std::fs::read_link(&p).expect("link");
                out.push((format!("{rel} ->"), t.display().to_string().into_bytes()));
            } else if m.is_dir() {
                out.push((format!("{rel}/"), Vec::new()));
                todo.push(p);
            } else {
                out.push((rel, std::fs::read(&p).expect("read")));
            }
        }
    }
    out.sort();
    out
}

/// GET / from 127.0.0.1:port; the body.
async fn get(port: u16) -> Result<String, String> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .map_err(|_| "read timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    match text.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.") && head.contains(" 200") => {
            Ok(body.to_string())
        }
        _ => Err(format!("answer: {text:?}")),
    }
}

/// `flt port-forward ARGS`, running until dropped; the local port it
/// printed.
async fn port_forward(servers: &str, args: &[&str]) -> (tokio::process::Child, u16) {
    let mut cmd = tokio::process::Command::new(common::flt_bin());
    cmd.arg("--server")
        .arg(servers)
        .arg("port-forward")
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("flt port-forward");
    let out = child.stdout.take().expect("stdout");
    let mut lines = tokio::io::BufReader::new(out).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("flt port-forward prints where it listens")
        .expect("read")
        .expect("a line");
    // "Forwarding from 127.0.0.1:PORT -> REMOTE"
    let port = line
        .strip_prefix("Forwarding from 127.0.0.1:")
        .and_then(|r| r.split_once(' '))
        .and_then(|(p, _)| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected: {line:?}"));
    // Keep reading its "Handling connection" lines so it never blocks.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, port)
}

#[tokio::test]
async fn exec_with_stdin_cp_and_port_forward_through_the_master() {
    // The master's audit log records each exec and port-forward.
    let audit_dir = tempfile::tempdir().expect("tempdir");
    let audit = audit_dir.path().join("audit.log");
    let opts = Opts {
        extra_args: vec!["--audit-log-path".into(), audit.display().to_string()],
        ..Default::default()
    };
    let cluster = Cluster::start(1, opts).await;
    let node = agent_support::one_node(&cluster).await;
    let name = node.name.clone();
    let client = Client::connect(&[cluster.client_addr(0)]).expect("client");
    let pods = Api::<Pod>::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "box", "labels": {"app": "box"}},
        "spec": {"nodeName": name, "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "web", "image": "busybox",
                "ports": [{"name": "http", "containerPort": 8080}],
                "command": ["sh", "-c", "mkdir -p /www && echo hello-pf > /www/index.html && exec httpd -f -p 8080 -h /www"]}]}
    }))
    .expect("pod");
    pods.create(&pod).await.expect("create");
    let services = Api::<Service>::namespaced(client.clone(), "default");
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "boxes"},
        "spec": {"selector": {"app": "box"},
            "ports": [{"name": "web", "port": 80, "targetPort": "http"}]}
    }))
    .expect("svc");
    services.create(&svc).await.expect("create service");
    agent_support::running_ip(&pods, "box").await;
    let servers = cluster.endpoints();
    wait_for(TIMEOUT, "the pod serves", async || {
        let out = flt(&servers, &["exec", "box", "--", "cat", "/www/index.html"]).await;
        if out.stdout == "hello-pf\n" {
            Ok(())
        } else {
            Err(out.to_string())
        }
    })
    .await;

    // exec -i: standard input reaches the command, then end of file.
    let text: String = (0..40_000).map(|i| format!("line {i}\n")).collect();
    let out = flt_in(
        &servers,
        &["exec", "-i", "box", "--", "cat"],
        text.as_bytes(),
    )
    .await
    .ok();
    assert_eq!(out.stdout.len(), text.len());
    assert!(out.stdout == text, "cat echoed something else");
    let out = flt_in(
        &servers,
        &["exec", "-i", "box", "--", "sh", "-c", "wc -c; exit 3"],
        b"12345",
    )
    .await;
    assert_eq!(out.code, Some(3), "{out}");
    assert_eq!(out.stdout.trim(), "5");

    // cp: a folder into the pod and back, byte for byte.
    let tmp = tempfile::tempdir().expect("tmp");
    let src = tmp.path().join("site");
    std::fs::create_dir_all(src.join("sub/deeper")).expect("mkdir");
    std::fs::write(src.join("a.txt"), "alpha\n").expect("write");
    let blob: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(src.join("sub/b.bin"), &blob).expect("write");
    std::fs::write(src.join("sub/deeper/empty"), "").expect("write");
    std::os::unix::fs::symlink("../a.txt", src.join("sub/link")).expect("symlink");
    let src_s = src.display().to_string();
    flt(&servers, &["cp", &src_s, "box:/tmp/copied"]).await.ok();
    let out = flt(
        &servers,
        &["exec", "box", "--", "cat", "/tmp/copied/sub/link"],
    )
    .await
    .ok();
    assert_eq!(out.stdout, "alpha\n");
    let back = tmp.path().join("back");
    let back_s = back.display().to_string();
    flt(&servers, &["cp", "default/box:/tmp/copied", &back_s])
        .await
        .ok();
    assert_eq!(tree(&back), tree(&src));
    let one = tmp.path().join("index.html");
    let one_s = one.display().to_string();
    flt(&servers, &["cp", "box:/www/index.html", &one_s])
        .await
        .ok();
    assert_eq!(std::fs::read_to_string(&one).expect("read"), "hello-pf\n");
    flt(&servers, &["cp", "box:/nonexistent", &one_s])
        .await
        .fails_with("tar in pod box failed");

    // port-forward to the pod: several fetches, two connections at once.
    let (mut pf, port) = port_forward(&servers, &["pod/box", ":8080"]).await;
    for _ in 0..3 {
        assert_eq!(
            get(port).await.expect("through the pod's port"),
            "hello-pf\n"
        );
    }
    let (a, b) = tokio::join!(get(port), get(port));
    assert_eq!(
        (a.expect("a"), b.expect("b")),
        ("hello-pf\n".to_string(), "hello-pf\n".to_string())
    );
    pf.kill().await.expect("kill");
    // ... and to the service, whose port 80 targets the pod's "http".
    let (mut pf, port) = port_forward(&servers, &["svc/boxes", "0:web"]).await;
    for _ in 0..3 {
        assert_eq!(get(port).await.expect("through the service"), "hello-pf\n");
    }
    pf.kill().await.expect("kill");
    flt(&servers, &["port-forward", "svc/boxes", "9:99"])
        .await
        .fails_with("does not have a service port 99");

    // A container that answers cp with `../` entries (its own `tar`) is
    // refused, and nothing lands outside the destination.
    let evil = raw_tar(&[("x/../../escaped", b"gotcha")]);
    // (exec runs commands without a shell's PATH search order we could
    // rely on, so the container's own /bin/tar is the one replaced.)
    let script = "cat > /tmp/evil.tar && rm -f /bin/tar && printf '#!/bin/sh\\ncat /tmp/evil.tar\\n' > /bin/tar && chmod +x /bin/tar";
    flt_in(
        &servers,
        &["exec", "-i", "box", "--", "sh", "-c", script],
        &evil,
    )
    .await
    .ok();
    let dest = tmp.path().join("in/x");
    let dest_s = dest.display().to_string();
    flt(&servers, &["cp", "box:/tmp/x", &dest_s])
        .await
        .fails_with("would be written outside the destination");
    assert!(!tmp.path().join("escaped").exists());
    assert!(!tmp.path().join("in/escaped").exists());
    // Without tar in the image, cp says so.
    flt(&servers, &["exec", "box", "--", "rm", "-f", "/bin/tar"])
        .await
        .ok();
    flt(&servers, &["cp", "box:/www", &dest_s])
        .await
        .fails_with("needs `tar` in the container");
    // Every exec and the port-forward, through the master, are in its
    // audit log as Kubernetes records them.
    let text = std::fs::read_to_string(&audit).expect("audit log");
    let events: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| v["objectRef"]["name"] == "box")
        .collect();
    for sub in ["exec", "portforward"] {
        let ev = events
            .iter()
            .find(|v| v["objectRef"]["subresource"] == sub)
            .unwrap_or_else(|| panic!("no pods/{sub} event in:\n{text}"));
        assert_eq!(ev["verb"], "create");
        assert_eq!(ev["responseStatus"]["code"], 200);
        assert_eq!(
            ev["requestURI"],
            format!("/api/v1/namespaces/default/pods/box/{sub}")
        );
    }
}
