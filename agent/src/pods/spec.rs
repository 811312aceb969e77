//! From a pod's spec to the runtime's configurations: the sandbox (network,
//! hostname, log folder, cgroup parent, host ports) and each container
//! (image, command, environment, mounts, resources, security context).
//! Pure functions of the pod and the node: no runtime calls here.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use flotilla_objects::core::{Container, Pod};
use k8s_cri::v1 as cri;

/// Labels the agent puts on every sandbox and container it makes (the
/// names kubelet uses, so runtime tools show them the same way).
pub const LABEL_POD_UID: &str = "io.kubernetes.pod.uid";
pub const LABEL_POD_NAME: &str = "io.kubernetes.pod.name";
pub const LABEL_POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const LABEL_CONTAINER_NAME: &str = "io.kubernetes.container.name";
/// The node whose agent owns the sandbox or container.
pub const LABEL_NODE: &str = "flotilla.dev/node";

/// Where a pod's files live on the node.
#[derive(Debug, Clone)]
pub struct PodDirs {
    /// Logs: `<pods>/<namespace>_<name>_<uid>/<container>/<attempt>.log`.
    pub logs: PathBuf,
    /// Volumes: `<pods>/<uid>/volumes/<name>`.
    pub volumes: PathBuf,
    /// The pod's /etc/hosts: `<pods>/<uid>/etc-hosts`.
    pub etc_hosts: PathBuf,
}

impl PodDirs {
    pub fn new(pods_dir: &Path, pod: &Pod) -> Self {
        let m = &pod.metadata;
        PodDirs {
            logs: pods_dir
                .join("logs")
                .join(format!("{}_{}_{}", m.namespace, m.name, m.uid)),
            volumes: pods_dir.join(&m.uid).join("volumes"),
            etc_hosts: pods_dir.join(&m.uid).join("etc-hosts"),
        }
    }

    /// The log file of one run of a container.
    pub fn log_file(&self, container: &str, attempt: u32) -> PathBuf {
        self.logs.join(container_log_path(container, attempt))
    }
}

fn container_log_path(container: &str, attempt: u32) -> String {
    format!("{container}/{attempt}.log")
}

/// The cgroup (relative to each hierarchy's root) that holds a pod's
/// containers.
pub fn pod_cgroup(node: &str, uid: &str) -> String {
    format!("/flotilla-{node}/pod-{uid}")
}

fn pod_labels(node: &str, pod: &Pod) -> HashMap<String, String> {
    let m = &pod.metadata;
    HashMap::from([
        (LABEL_POD_UID.to_string(), m.uid.clone()),
        (LABEL_POD_NAME.to_string(), m.name.clone()),
        (LABEL_POD_NAMESPACE.to_string(), m.namespace.clone()),
        (LABEL_NODE.to_string(), node.to_string()),
    ])
}

fn namespace_options(pod: &Pod) -> cri::NamespaceOption {
    cri::NamespaceOption {
        network: if pod.spec.host_network {
            cri::NamespaceMode::Node as i32
        } else {
            cri::NamespaceMode::Pod as i32
        },
        pid: cri::NamespaceMode::Container as i32,
        ipc: cri::NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

/// The sandbox of a pod; `attempt` counts the sandboxes made for it.
pub fn sandbox_config(
    node: &str,
    pod: &Pod,
    dirs: &PodDirs,
    attempt: u32,
) -> cri::PodSandboxConfig {
    let m = &pod.metadata;
    let hostname = if pod.spec.host_network {
        String::new()
    } else if pod.spec.hostname.is_empty() {
        m.name.chars().take(63).collect()
    } else {
        pod.spec.hostname.clone()
    };
    let port_mappings = pod
        .spec
        .containers
        .iter()
        .flat_map(|c| c.ports.iter())
        .filter(|p| p.host_port > 0)
        .map(|p| cri::PortMapping {
            protocol: match p.protocol.as_str() {
                "UDP" => cri::Protocol::Udp as i32,
                "SCTP" => cri::Protocol::Sctp as i32,
                _ => cri::Protocol::Tcp as i32,
            },
            container_port: p.container_port,
            host_port: p.host_port,
            host_ip: String::new(),
        })
        .collect();
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: m.name.clone(),
            uid: m.uid.clone(),
            namespace: m.namespace.clone(),
            attempt,
        }),
        hostname,
        log_directory: dirs.logs.to_string_lossy().into_owned(),
        port_mappings,
        labels: pod_labels(node, pod),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: pod_cgroup(node, &m.uid),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(namespace_options(pod)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A pod field an environment variable may read (`fieldRef`).
fn field_value(pod: &Pod, pod_ip: &str, host_ip: &str, path: &str) -> Option<String> {
    let m = &pod.metadata;
    Some(match path {
        "metadata.name" => m.name.clone(),
        "metadata.namespace" => m.namespace.clone(),
        "metadata.uid" => m.uid.clone(),
        "spec.nodeName" => pod.spec.node_name.clone(),
        "spec.serviceAccountName" => pod.spec.service_account_name.clone(),
        "status.podIP" => pod_ip.to_string(),
        "status.hostIP" => host_ip.to_string(),
        p => {
            let key = p
                .strip_prefix("metadata.labels['")
                .or_else(|| p.strip_prefix("metadata.annotations['"))?
                .strip_suffix("']")?;
            if p.starts_with("metadata.labels") {
                m.labels.get(key).cloned().unwrap_or_default()
            } else {
                m.annotations.get(key).cloned().unwrap_or_default()
            }
        }
    })
}

/// Values of `configMapKeyRef` / `secretKeyRef` the caller looked up:
/// (kind, object name, key) to value; absent means not found.
pub type Lookups = HashMap<(&'static str, String, String), String>;

/// The references to config maps and secrets in a container's environment.
pub fn env_refs(c: &Container) -> Vec<(&'static str, String, String, bool)> {
    c.env
        .iter()
        .filter_map(|e| e.value_from.as_ref())
        .flat_map(|v| {
            let cm = v.config_map_key_ref.as_ref().map(|k| {
                (
                    "ConfigMap",
                    k.name.clone(),
                    k.key.clone(),
                    k.optional == Some(true),
                )
            });
            let s = v.secret_key_ref.as_ref().map(|k| {
                (
                    "Secret",
                    k.name.clone(),
                    k.key.clone(),
                    k.optional == Some(true),
                )
            });
            cm.into_iter().chain(s)
        })
        .collect()
}

/// Expand `$(VAR)` references to variables defined before, as Kubernetes
/// does (`$$` escapes; unknown references stay as written).
pub fn expand(s: &str, vars: &HashMap<String, String>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(a) = after.strip_prefix('$') {
            out.push('$');
            rest = a;
        } else if let Some(body) = after.strip_prefix('(') {
            match body.find(')') {
                Some(end) if vars.contains_key(&body[..end]) => {
                    out.push_str(&vars[&body[..end]]);
                    rest = &body[end + 1..];
                }
                _ => {
                    out.push('$');
                    rest = after;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The environment of a container, in order; an error names a missing
/// reference that is not optional.
pub fn environment(
    pod: &Pod,
    c: &Container,
    pod_ip: &str,
    host_ip: &str,
    lookups: &Lookups,
) -> Result<Vec<(String, String)>, String> {
    let mut vars: HashMap<String, String> = HashMap::new();
    let mut out = Vec::new();
    for e in &c.env {
        let value = match &e.value_from {
            None => expand(&e.value, &vars),
            Some(src) => {
                if let Some(f) = &src.field_ref {
                    field_value(pod, pod_ip, host_ip, &f.field_path)
                        .ok_or_else(|| format!("unsupported fieldRef {:?}", f.field_path))?
                } else if let Some(k) = &src.config_map_key_ref {
                    match lookups.get(&("ConfigMap", k.name.clone(), k.key.clone())) {
                        Some(v) => v.clone(),
                        None if k.optional == Some(true) => continue,
                        None => {
                            return Err(format!(
                                "couldn't find key {} in ConfigMap {}/{}",
                                k.key, pod.metadata.namespace, k.name
                            ))
                        }
                    }
                } else if let Some(k) = &src.secret_key_ref {
                    match lookups.get(&("Secret", k.name.clone(), k.key.clone())) {
                        Some(v) => v.clone(),
                        None if k.optional == Some(true) => continue,
                        None => {
                            return Err(format!(
                                "couldn't find key {} in Secret {}/{}",
                                k.key, pod.metadata.namespace, k.name
                            ))
                        }
                    }
                } else {
                    String::new()
                }
            }
        };
        vars.insert(e.name.clone(), value.clone());
        out.push((e.name.clone(), value));
    }
    Ok(out)
}

/// CPU shares, quota and memory limit from a container's requests and limits.
fn resources(c: &Container) -> cri::LinuxContainerResources {
    let q = |m: &std::collections::BTreeMap<String, String>, k: &str| {
        m.get(k).and_then(|v| flotilla_objects::parse_quantity(v))
    };
    let mut r = cri::LinuxContainerResources::default();
    // As kubelet: shares from the CPU request (or limit), 2 at least.
    let cpu_req = q(&c.resources.requests, "cpu").or_else(|| q(&c.resources.limits, "cpu"));
    r.cpu_shares = cpu_req.map_or(2, |v| ((v * 1024.0) as i64).max(2));
    if let Some(l) = q(&c.resources.limits, "cpu") {
        r.cpu_period = 100_000;
        r.cpu_quota = ((l * 100_000.0) as i64).max(1000);
    }
    if let Some(m) = q(&c.resources.limits, "memory") {
        r.memory_limit_in_bytes = m as i64;
    }
    r
}

/// The mounts of a container: its volume mounts, resolved to host paths.
pub fn mounts(pod: &Pod, c: &Container, dirs: &PodDirs) -> Result<Vec<cri::Mount>, String> {
    let mut out = Vec::new();
    for vm in &c.volume_mounts {
        let vol = pod
            .spec
            .volumes
            .iter()
            .find(|v| v.name == vm.name)
            .ok_or_else(|| format!("volume {:?} is not a volume of the pod", vm.name))?;
        let mut host = if let Some(h) = &vol.host_path {
            PathBuf::from(&h.path)
        } else {
            dirs.volumes.join(&vol.name)
        };
        if !vm.sub_path.is_empty() {
            host = host.join(&vm.sub_path);
        }
        // Config map and secret volumes are read-only, as with kubelet.
        let projected = vol.config_map.is_some() || vol.secret.is_some();
        out.push(cri::Mount {
            container_path: vm.mount_path.clone(),
            host_path: host.to_string_lossy().into_owned(),
            readonly: vm.read_only || projected,
            ..Default::default()
        });
    }
    Ok(out)
}

/// The runtime's security context of a container.
fn security_context(pod: &Pod, c: &Container) -> cri::LinuxContainerSecurityContext {
    let sc = c.security_context.clone().unwrap_or_default();
    let caps = sc.capabilities.unwrap_or_default();
    cri::LinuxContainerSecurityContext {
        namespace_options: Some(namespace_options(pod)),
        run_as_user: sc.run_as_user.map(|value| cri::Int64Value { value }),
        run_as_group: sc.run_as_group.map(|value| cri::Int64Value { value }),
        readonly_rootfs: sc.read_only_root_filesystem == Some(true),
        privileged: sc.privileged == Some(true),
        capabilities: Some(cri::Capability {
            add_capabilities: caps.add,
            drop_capabilities: caps.drop,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Why a container may not start as configured (runAsNonRoot with uid 0).
pub fn refuse(c: &Container) -> Option<String> {
    let sc = c.security_context.as_ref()?;
    (sc.run_as_non_root == Some(true) && sc.run_as_user.unwrap_or(0) == 0).then(|| {
        "container's runAsUser breaks non-root policy (runAsNonRoot is set and the user is root or not given)"
            .to_string()
    })
}

/// A container's configuration for run number `attempt`.
pub fn container_config(
    node: &str,
    pod: &Pod,
    c: &Container,
    attempt: u32,
    env: Vec<(String, String)>,
    mounts: Vec<cri::Mount>,
) -> cri::ContainerConfig {
    let vars: HashMap<String, String> = env.iter().cloned().collect();
    let mut labels = pod_labels(node, pod);
    labels.insert(LABEL_CONTAINER_NAME.to_string(), c.name.clone());
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: c.name.clone(),
            attempt,
        }),
        image: Some(cri::ImageSpec {
            image: c.image.clone(),
            ..Default::default()
        }),
        command: c.command.iter().map(|s| expand(s, &vars)).collect(),
        args: c.args.iter().map(|s| expand(s, &vars)).collect(),
        working_dir: c.working_dir.clone(),
        envs: env
            .into_iter()
            .map(|(key, value)| cri::KeyValue { key, value })
            .collect(),
        mounts,
        labels,
        log_path: container_log_path(&c.name, attempt),
        linux: Some(cri::LinuxContainerConfig {
            resources: Some(resources(c)),
            security_context: Some(security_context(pod, c)),
        }),
        stdin: c.stdin,
        stdin_once: c.stdin_once,
        tty: c.tty,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_objects::core::{EnvVar, EnvVarSource, ObjectFieldSelector};

    fn pod() -> Pod {
        let mut p = Pod::default();
        p.metadata.name = "web".into();
        p.metadata.namespace = "default".into();
        p.metadata.uid = "u1".into();
        p.spec.node_name = "n1".into();
        p
    }

    #[test]
    fn expand_uses_earlier_variables_only() {
        let vars = HashMap::from([("A".to_string(), "x".to_string())]);
        assert_eq!(expand("$(A)-$(B)-$$(A)", &vars), "x-$(B)-$(A)");
    }

    #[test]
    fn environment_reads_fields_and_earlier_values() {
        let p = pod();
        let c = Container {
            env: vec![
                EnvVar {
                    name: "POD".into(),
                    value_from: Some(EnvVarSource {
                        field_ref: Some(ObjectFieldSelector {
                            field_path: "metadata.name".into(),
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                EnvVar {
                    name: "IP".into(),
                    value_from: Some(EnvVarSource {
                        field_ref: Some(ObjectFieldSelector {
                            field_path: "status.podIP".into(),
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                EnvVar {
                    name: "URL".into(),
                    value: "http://$(IP)/$(POD)".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let env = environment(&p, &c, "10.244.1.5", "10.0.0.2", &Lookups::new()).unwrap();
        assert_eq!(
            env[2],
            ("URL".to_string(), "http://10.244.1.5/web".to_string())
        );
    }

    #[test]
    fn host_network_pods_use_the_node_namespace() {
        let mut p = pod();
        p.spec.host_network = true;
        let dirs = PodDirs::new(Path::new("/d"), &p);
        let s = sandbox_config("n1", &p, &dirs, 0);
        let ns = s
            .linux
            .unwrap()
            .security_context
            .unwrap()
            .namespace_options
            .unwrap();
        assert_eq!(ns.network, cri::NamespaceMode::Node as i32);
        assert_eq!(s.log_directory, "/d/logs/default_web_u1");
        assert_eq!(s.labels[LABEL_NODE], "n1");
    }
}
