//! What the runtime runs for one pod ([`Observed`]: its sandbox, IP and
//! every run of every container), and the runtime-side steps of a pod's
//! life: start its sandbox, start one container (image pulled per policy,
//! environment and mounts resolved), and kill it all.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use base64::Engine as _;
use flotilla_client::{Api, Reason};
use flotilla_objects::core::{ConfigMap, Container, Pod, Secret};
use k8s_cri::v1 as cri;

use super::spec::{self, PodDirs, LABEL_POD_UID};
use super::Ctx;
use crate::error::Result;

/// The runtime's view of one pod.
#[derive(Debug, Default)]
pub struct Observed {
    /// The ready sandbox, if any.
    pub sandbox: Option<cri::PodSandbox>,
    /// Sandboxes not ready (dead, or left from an earlier attempt).
    pub stale: Vec<cri::PodSandbox>,
    /// The pod's IP.
    pub ip: String,
    /// Every run of every container of the ready sandbox, by container
    /// name, latest first.
    pub runs: HashMap<String, Vec<cri::ContainerStatus>>,
}

impl Observed {
    /// The latest and previous run of a container.
    pub fn latest(
        &self,
        name: &str,
    ) -> (Option<&cri::ContainerStatus>, Option<&cri::ContainerStatus>) {
        let r = self.runs.get(name);
        (r.and_then(|r| r.first()), r.and_then(|r| r.get(1)))
    }

    pub fn sandbox_attempt(&self) -> u32 {
        self.sandbox
            .iter()
            .chain(&self.stale)
            .filter_map(|s| s.metadata.as_ref().map(|m| m.attempt))
            .max()
            .unwrap_or(0)
    }
}

fn attempt_of(s: &cri::ContainerStatus) -> u32 {
    s.metadata.as_ref().map_or(0, |m| m.attempt)
}

/// Look at what the runtime runs for the pod with this uid.
pub async fn observe(ctx: &Ctx, uid: &str) -> Result<Observed> {
    let mut cri = ctx.cri.clone();
    let mut boxes = cri
        .list_pod_sandboxes(HashMap::from([(
            LABEL_POD_UID.to_string(),
            uid.to_string(),
        )]))
        .await?;
    boxes.sort_by_key(|b| std::cmp::Reverse(b.metadata.as_ref().map_or(0, |m| m.attempt)));
    let mut obs = Observed::default();
    for b in boxes {
        if obs.sandbox.is_none() && b.state == cri::PodSandboxState::SandboxReady as i32 {
            obs.sandbox = Some(b);
        } else {
            obs.stale.push(b);
        }
    }
    let Some(sb) = &obs.sandbox else {
        return Ok(obs);
    };
    obs.ip = cri.pod_sandbox_status(&sb.id).await?.0;
    for c in cri.list_containers(&sb.id).await? {
        let st = cri.container_status(&c.id).await?;
        let name = st
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        obs.runs.entry(name).or_default().push(st);
    }
    for runs in obs.runs.values_mut() {
        runs.sort_by_key(|s| std::cmp::Reverse(attempt_of(s)));
    }
    Ok(obs)
}

/// Start the pod's sandbox (network included); returns its id.
pub async fn start_sandbox(ctx: &Ctx, pod: &Pod, attempt: u32) -> Result<String> {
    let dirs = PodDirs::new(&ctx.cfg.pods_dir(), pod);
    for d in [&dirs.logs, &dirs.volumes] {
        std::fs::create_dir_all(d)
            .map_err(crate::Error::io(format!("creating {}", d.display())))?;
    }
    let mut config = spec::sandbox_config(&ctx.cfg.name, pod, &dirs, attempt);
    config.dns_config = Some(super::dns::dns_config(pod, &ctx.cfg.node_dns()));
    ctx.cri.clone().run_pod_sandbox(config).await
}

/// Why a container could not be started: kubelet's waiting reason and a message.
pub type Waiting = (String, String);

/// Pull the container's image as its pull policy says.
async fn ensure_image(ctx: &Ctx, c: &Container) -> Result<(), Waiting> {
    let mut cri = ctx.cri.clone();
    let present = cri
        .image_id(&c.image)
        .await
        .map_err(|e| ("ErrImageInspect".to_string(), e.runtime_message()))?
        .is_some();
    match c.image_pull_policy.as_str() {
        "Never" if !present => Err((
            "ErrImageNeverPull".to_string(),
            format!(
                "Container image \"{}\" is not present with pull policy of Never",
                c.image
            ),
        )),
        "Never" => Ok(()),
        "IfNotPresent" if present => Ok(()),
        _ => {
            tracing::info!(image = %c.image, "pulling");
            cri.pull_image(&c.image, None)
                .await
                .map(|_| ())
                .map_err(|e| ("ErrImagePull".to_string(), e.runtime_message()))
        }
    }
}

/// The data of a config map (`data` and `binaryData`) or a secret, as
/// bytes; None when it does not exist.
async fn data_of(
    ctx: &Ctx,
    ns: &str,
    kind: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
    let b64 = |v: String| base64::engine::general_purpose::STANDARD.decode(v).ok();
    let r = if kind == "ConfigMap" {
        Api::<ConfigMap>::namespaced(ctx.client.clone(), ns)
            .get(name)
            .await
            .map(|o| {
                o.data
                    .into_iter()
                    .map(|(k, v)| (k, v.into_bytes()))
                    .chain(
                        o.binary_data
                            .into_iter()
                            .filter_map(|(k, v)| b64(v).map(|b| (k, b))),
                    )
                    .collect()
            })
    } else {
        Api::<Secret>::namespaced(ctx.client.clone(), ns)
            .get(name)
            .await
            .map(|o| {
                o.data
                    .into_iter()
                    .filter_map(|(k, v)| b64(v).map(|b| (k, b)))
                    .collect()
            })
    };
    match r {
        Ok(d) => Ok(Some(d)),
        Err(e) if e.is(Reason::NotFound) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// The config map and secret values a container's environment names.
async fn lookups(ctx: &Ctx, pod: &Pod, c: &Container) -> Result<spec::Lookups, String> {
    let mut out = spec::Lookups::new();
    for (kind, name, key, _optional) in spec::env_refs(c) {
        let data = data_of(ctx, &pod.metadata.namespace, kind, &name).await?;
        if let Some(v) = data.and_then(|mut d| d.remove(&key)) {
            out.insert((kind, name, key), String::from_utf8_lossy(&v).into_owned());
        }
    }
    Ok(out)
}

/// The files of a config map or secret volume: (path, bytes, mode).
fn projected(
    data: &BTreeMap<String, Vec<u8>>,
    items: &[flotilla_objects::core::KeyToPath],
    default_mode: Option<i32>,
) -> Result<Vec<(String, Vec<u8>, u32)>, String> {
    let mode = |m: Option<i32>| m.or(default_mode).unwrap_or(0o644) as u32 & 0o777;
    if items.is_empty() {
        return Ok(data
            .iter()
            .map(|(k, v)| (k.clone(), v.clone(), mode(None)))
            .collect());
    }
    items
        .iter()
        .map(|i| {
            let v = data
                .get(&i.key)
                .ok_or_else(|| format!("configmap or secret key {:?} not found", i.key))?;
            if i.path.split('/').any(|c| c == "..") || i.path.starts_with('/') {
                return Err(format!("invalid path {:?}", i.path));
            }
            Ok((i.path.clone(), v.clone(), mode(i.mode)))
        })
        .collect()
}

/// Write the config map and secret volumes of a pod into their folders.
async fn project_volumes(ctx: &Ctx, pod: &Pod, dirs: &PodDirs) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    for v in &pod.spec.volumes {
        let (kind, name, items, mode, optional) = match (&v.config_map, &v.secret) {
            (Some(cm), _) => (
                "ConfigMap",
                &cm.name,
                &cm.items,
                cm.default_mode,
                cm.optional,
            ),
            (None, Some(s)) => (
                "Secret",
                &s.secret_name,
                &s.items,
                s.default_mode,
                s.optional,
            ),
            _ => continue,
        };
        let data = match data_of(ctx, &pod.metadata.namespace, kind, name).await? {
            Some(d) => d,
            None if optional == Some(true) => BTreeMap::new(),
            None => return Err(format!("{} \"{name}\" not found", kind.to_lowercase())),
        };
        let dir = dirs.volumes.join(&v.name);
        for (path, bytes, mode) in projected(&data, items, mode)? {
            let file = dir.join(&path);
            if let Some(parent) = file.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("creating {}: {e}", parent.display()))?;
            }
            std::fs::write(&file, &bytes)
                .map_err(|e| format!("writing {}: {e}", file.display()))?;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode))
                .map_err(|e| format!("chmod {}: {e}", file.display()))?;
        }
    }
    Ok(())
}

/// Start run number `attempt` of a container in the pod's sandbox.
pub async fn start_container(
    ctx: &Ctx,
    pod: &Pod,
    sandbox: &cri::PodSandbox,
    pod_ip: &str,
    c: &Container,
    attempt: u32,
) -> Result<String, Waiting> {
    ensure_image(ctx, c).await?;
    let config_err = |m: String| ("CreateContainerConfigError".to_string(), m);
    let dirs = PodDirs::new(&ctx.cfg.pods_dir(), pod);
    let lookups = lookups(ctx, pod, c).await.map_err(config_err)?;
    let env = spec::environment(pod, c, pod_ip, &ctx.cfg.node_ip.to_string(), &lookups)
        .map_err(config_err)?;
    for v in &pod.spec.volumes {
        if v.host_path.is_none() {
            let d = dirs.volumes.join(&v.name);
            std::fs::create_dir_all(&d)
                .map_err(|e| config_err(format!("creating {}: {e}", d.display())))?;
        }
    }
    if let Some(why) = spec::refuse(c) {
        return Err(config_err(why));
    }
    project_volumes(ctx, pod, &dirs).await.map_err(config_err)?;
    let mut mounts = spec::mounts(pod, c, &dirs).map_err(config_err)?;
    if !mounts
        .iter()
        .any(|m| m.container_path == flotilla_security::satoken::MOUNT_PATH)
        && super::satoken::wanted(ctx, pod).await
    {
        mounts.extend(
            super::satoken::ensure(ctx, pod, &dirs)
                .await
                .map_err(config_err)?,
        );
    }
    if !mounts
        .iter()
        .any(|m| m.container_path == super::hosts::ETC_HOSTS)
    {
        let hosts = super::hosts::write(&dirs.etc_hosts, pod, pod_ip, &ctx.cfg.cluster_domain)
            .map_err(config_err)?;
        mounts.extend(hosts);
    }
    let log = dirs.log_file(&c.name, attempt);
    if let Some(parent) = log.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| config_err(format!("creating {}: {e}", parent.display())))?;
    }
    let sandbox_attempt = sandbox.metadata.as_ref().map_or(0, |m| m.attempt);
    let mut sandbox_config = spec::sandbox_config(&ctx.cfg.name, pod, &dirs, sandbox_attempt);
    sandbox_config.dns_config = Some(super::dns::dns_config(pod, &ctx.cfg.node_dns()));
    let config = spec::container_config(&ctx.cfg.name, pod, c, attempt, env, mounts);
    let mut cri = ctx.cri.clone();
    let id = cri
        .create_container(&sandbox.id, config, sandbox_config)
        .await
        .map_err(|e| ("CreateContainerError".to_string(), e.runtime_message()))?;
    cri.start_container(&id)
        .await
        .map_err(|e| ("RunContainerError".to_string(), e.runtime_message()))?;
    tracing::info!(pod = %pod.metadata.name, container = %c.name, attempt, "started");
    Ok(id)
}

/// Remove the runs of a container older than the previous one.
pub async fn prune_runs(ctx: &Ctx, runs: &[cri::ContainerStatus]) {
    for old in runs.iter().skip(2) {
        if let Err(e) = ctx.cri.clone().remove_container(&old.id).await {
            tracing::warn!(container = %old.id, "removing an old run: {e}");
        }
    }
}

/// Stop every container of the sandbox (the stop signal, then SIGKILL after
/// `grace`), then the sandbox, and remove them all.
pub async fn kill_sandbox(ctx: &Ctx, sandbox_id: &str, grace: i64) -> Result<()> {
    let mut cri = ctx.cri.clone();
    let containers = cri.list_containers(sandbox_id).await?;
    let stops = containers
        .iter()
        .filter(|c| c.state != cri::ContainerState::ContainerExited as i32)
        .map(|c| {
            let mut cri = ctx.cri.clone();
            let id = c.id.clone();
            async move { cri.stop_container(&id, grace).await }
        });
    for r in futures::future::join_all(stops).await {
        r?;
    }
    for c in &containers {
        cri.remove_container(&c.id).await?;
    }
    cri.stop_pod_sandbox(sandbox_id).await?;
    cri.remove_pod_sandbox(sandbox_id).await?;
    Ok(())
}

/// Stop and remove everything the runtime runs for a pod, and its files
/// and cgroups on the node.
pub async fn kill_pod(ctx: &Ctx, uid: &str, grace: i64, dirs: Option<&PodDirs>) -> Result<()> {
    let boxes = ctx
        .cri
        .clone()
        .list_pod_sandboxes(HashMap::from([(
            LABEL_POD_UID.to_string(),
            uid.to_string(),
        )]))
        .await?;
    for b in &boxes {
        kill_sandbox(ctx, &b.id, grace).await?;
    }
    remove_cgroups(&spec::pod_cgroup(&ctx.cfg.name, uid));
    let pod_dir = ctx.cfg.pods_dir().join(uid);
    let _ = std::fs::remove_dir_all(&pod_dir);
    if let Some(d) = dirs {
        let _ = std::fs::remove_dir_all(&d.logs);
    }
    Ok(())
}

/// Remove a pod's cgroup in every hierarchy (empty once its containers are
/// gone; runc leaves the parent).
pub fn remove_cgroups(rel: &str) {
    let root = std::path::Path::new("/sys/fs/cgroup");
    let rel = rel.trim_start_matches('/');
    let mut dirs = vec![root.join(rel)];
    if let Ok(entries) = std::fs::read_dir(root) {
        for e in entries.flatten() {
            dirs.push(e.path().join(rel));
        }
    }
    for d in dirs {
        if d.is_dir() {
            // Child cgroups first (a sandbox's own, if runc left it).
            if let Ok(children) = std::fs::read_dir(&d) {
                for c in children.flatten() {
                    if c.path().is_dir() {
                        let _ = std::fs::remove_dir(c.path());
                    }
                }
            }
            let _ = std::fs::remove_dir(&d);
        }
    }
}

/// How long a worker waits before it looks again when something is in progress.
pub const BUSY_RESYNC: Duration = Duration::from_secs(1);
