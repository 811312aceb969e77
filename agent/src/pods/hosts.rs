//! A pod's /etc/hosts as kubelet writes it: the loopback lines, the pod's
//! own name at its address (`<ip>\t<host>.<subdomain>.<ns>.svc.<domain>\t<host>`
//! when it has a subdomain), then `spec.hostAliases`; a host-network pod
//! gets the node's /etc/hosts with its aliases after it. The file lives in
//! the pod's folder and is mounted at /etc/hosts in each container that
//! does not mount something there itself.

use std::path::Path;

use flotilla_objects::core::{HostAlias, Pod};
use k8s_cri::v1 as cri;

/// Where a container sees the file.
pub const ETC_HOSTS: &str = "/etc/hosts";

fn aliases(out: &mut String, list: &[HostAlias]) {
    if list.is_empty() {
        return;
    }
    out.push_str("\n# Entries added by HostAliases.\n");
    for a in list {
        out.push_str(&format!("{}\t{}\n", a.ip, a.hostnames.join("\t")));
    }
}

/// The hosts file of `pod` at `pod_ip` in the cluster domain `domain`;
/// `node_hosts` is the node's own /etc/hosts (for host-network pods).
pub fn content(pod: &Pod, pod_ip: &str, domain: &str, node_hosts: &str) -> String {
    let spec = &pod.spec;
    let mut out = String::new();
    if spec.host_network {
        out.push_str("# Kubernetes-managed hosts file (host network).\n");
        out.push_str(node_hosts);
        if !node_hosts.is_empty() && !node_hosts.ends_with('\n') {
            out.push('\n');
        }
        aliases(&mut out, &spec.host_aliases);
        return out;
    }
    out.push_str(
        "# Kubernetes-managed hosts file.\n\
         127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         fe00::0\tip6-mcastprefix\n\
         fe00::1\tip6-allnodes\n\
         fe00::2\tip6-allrouters\n",
    );
    let host: String = if spec.hostname.is_empty() {
        pod.metadata.name.chars().take(63).collect()
    } else {
        spec.hostname.clone()
    };
    let domain = domain.trim_end_matches('.');
    if !spec.subdomain.is_empty() && !domain.is_empty() {
        let ns = &pod.metadata.namespace;
        out.push_str(&format!(
            "{pod_ip}\t{host}.{}.{ns}.svc.{domain}\t{host}\n",
            spec.subdomain
        ));
    } else {
        out.push_str(&format!("{pod_ip}\t{host}\n"));
    }
    aliases(&mut out, &spec.host_aliases);
    out
}

/// Write the pod's hosts file to `path` (whole, through a rename) and
/// return the mount that puts it at /etc/hosts; None when the pod has no
/// address yet (kubelet then leaves the image's file).
pub fn write(
    path: &Path,
    pod: &Pod,
    pod_ip: &str,
    domain: &str,
) -> Result<Option<cri::Mount>, String> {
    if pod_ip.is_empty() && !pod.spec.host_network {
        return Ok(None);
    }
    let node_hosts = if pod.spec.host_network {
        std::fs::read_to_string(ETC_HOSTS).unwrap_or_default()
    } else {
        String::new()
    };
    let text = content(pod, pod_ip, domain, &node_hosts);
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| format!("writing {}: {e}", path.display()))?;
    Ok(Some(cri::Mount {
        container_path: ETC_HOSTS.to_string(),
        host_path: path.to_string_lossy().into_owned(),
        readonly: false,
        ..Default::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Pod {
        let mut p = Pod::default();
        p.metadata.name = "web-0".into();
        p.metadata.namespace = "shop".into();
        p
    }

    const HEAD: &str = "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n";

    #[test]
    fn the_pods_own_name_as_kubelet_writes_it() {
        let p = pod();
        assert_eq!(
            content(&p, "10.244.1.5", "cluster.local", ""),
            format!("{HEAD}10.244.1.5\tweb-0\n")
        );
        let mut p = pod();
        p.spec.hostname = "db".into();
        p.spec.subdomain = "dbs".into();
        assert_eq!(
            content(&p, "10.244.1.5", "cluster.local.", ""),
            format!("{HEAD}10.244.1.5\tdb.dbs.shop.svc.cluster.local\tdb\n")
        );
    }

    #[test]
    fn host_aliases_follow() {
        let mut p = pod();
        p.spec.host_aliases = vec![
            HostAlias {
                ip: "127.0.0.1".into(),
                hostnames: vec!["foo.local".into(), "bar.local".into()],
            },
            HostAlias {
                ip: "fd00::1".into(),
                hostnames: vec!["six".into()],
            },
        ];
        assert_eq!(
            content(&p, "10.244.1.5", "cluster.local", ""),
            format!(
                "{HEAD}10.244.1.5\tweb-0\n\n# Entries added by HostAliases.\n127.0.0.1\tfoo.local\tbar.local\nfd00::1\tsix\n"
            )
        );
        p.spec.host_network = true;
        assert_eq!(
            content(&p, "", "cluster.local", "127.0.0.1 localhost\n10.0.0.1 node1"),
            "# Kubernetes-managed hosts file (host network).\n127.0.0.1 localhost\n10.0.0.1 node1\n\n# Entries added by HostAliases.\n127.0.0.1\tfoo.local\tbar.local\nfd00::1\tsix\n"
        );
    }

    #[test]
    fn written_whole_and_mounted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etc-hosts");
        let m = write(&path, &pod(), "10.244.1.5", "cluster.local")
            .unwrap()
            .expect("a mount");
        assert_eq!(m.container_path, "/etc/hosts");
        assert!(!m.readonly);
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .ends_with("10.244.1.5\tweb-0\n"));
        assert!(write(&path, &pod(), "", "cluster.local").unwrap().is_none());
    }
}
