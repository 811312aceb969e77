//! The agent's runtime layer against a real containerd: the agent's own
//! containerd (configuration written, started, supervised), an image pulled
//! through a registry mirror from a real registry on loopback, and a pod
//! sandbox with a busybox container run through CRI, whose output shows in
//! its CRI log file.

mod agent_support;
mod common;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use agent_support::{NodeCleanup, Registry};
use flotilla_agent::containerd::Supervisor;
use flotilla_agent::cri::{ContainerState, Cri};
use flotilla_agent::pods::spec::{self, PodDirs};
use flotilla_agent::AgentConfig;
use flotilla_objects::core::{Container, Pod};

#[tokio::test]
async fn a_busybox_container_runs_through_cri_and_its_output_is_logged() {
    let dir = tempfile::Builder::new()
        .prefix("flotilla-agent-cri-")
        .tempdir()
        .expect("tempdir");
    let node = format!("cri-{}", std::process::id());
    let _cleanup = NodeCleanup {
        node: node.clone(),
        dir: dir.path().to_path_buf(),
    };
    let registry = Registry::start(dir.path(), Ipv4Addr::LOCALHOST);
    let mut cfg = AgentConfig::new(&node, Ipv4Addr::LOCALHOST, dir.path().join("agent"));
    cfg.registry_mirrors = registry.mirrors();
    let containerd = Supervisor::start(&cfg).await.expect("containerd starts");
    let mut cri = Cri::connect(&cfg.socket()).await.expect("connect");
    assert!(cri
        .version()
        .await
        .expect("version")
        .starts_with("containerd://"));

    // `busybox` is docker.io/library/busybox:latest: it comes from the mirror.
    let image_ref = cri.pull_image("busybox", None).await.expect("pull");
    assert!(image_ref.starts_with("sha256:"), "{image_ref}");
    assert!(cri.image_id("busybox").await.expect("status").is_some());

    let mut pod = Pod::default();
    pod.metadata.name = "hello".into();
    pod.metadata.namespace = "default".into();
    pod.metadata.uid = format!("uid-{}", std::process::id());
    pod.spec.host_network = true;
    let c = Container {
        name: "main".into(),
        image: "busybox".into(),
        command: vec![
            "sh".into(),
            "-c".into(),
            "echo hello from $POD_NAME; echo to stderr >&2".into(),
        ],
        ..Default::default()
    };
    pod.spec.containers = vec![c.clone()];
    let dirs = PodDirs::new(&cfg.pods_dir(), &pod);
    std::fs::create_dir_all(dirs.logs.join("main")).expect("log dir");
    let sb_config = spec::sandbox_config(&node, &pod, &dirs, 0);
    let log = cfg.containerd_dir().join("containerd.log");
    let sandbox = cri
        .run_pod_sandbox(sb_config.clone())
        .await
        .unwrap_or_else(|e| {
            let l = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = l.lines().rev().take(30).collect();
            panic!(
                "sandbox: {e}\ncontainerd log (last lines first):\n{}",
                tail.join("\n")
            )
        });
    let env = vec![("POD_NAME".to_string(), "hello".to_string())];
    let config = spec::container_config(&node, &pod, &c, 0, env, vec![]);
    let id = cri
        .create_container(&sandbox, config, sb_config)
        .await
        .expect("create");
    cri.start_container(&id).await.expect("start");

    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let s = cri.container_status(&id).await.expect("status");
        if s.state == ContainerState::ContainerExited as i32 {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the container never exited: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status.exit_code, 0, "{status:?}");
    // stdout and stderr are two pipes: containerd logs each line as it
    // reads it, so their relative order is not fixed (under load stderr's
    // line came first). Each line must be there once, with its stream.
    let raw = std::fs::read_to_string(dirs.log_file("main", 0)).unwrap_or_default();
    let mut lines: Vec<(String, String)> = raw
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(4, ' ');
            let (_, stream, _) = (f.next()?, f.next()?, f.next()?);
            Some((stream.to_string(), f.next()?.to_string()))
        })
        .collect();
    lines.sort();
    assert_eq!(
        lines,
        vec![
            ("stderr".to_string(), "to stderr".to_string()),
            ("stdout".to_string(), "hello from hello".to_string()),
        ],
        "{raw}"
    );

    cri.stop_pod_sandbox(&sandbox).await.expect("stop sandbox");
    cri.remove_pod_sandbox(&sandbox)
        .await
        .expect("remove sandbox");
    flotilla_agent::pods::runtime::remove_cgroups(&spec::pod_cgroup(&node, &pod.metadata.uid));
    assert!(cri
        .list_pod_sandboxes(Default::default())
        .await
        .expect("list")
        .is_empty());
    containerd.stop().await;
}
