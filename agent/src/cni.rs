//! The node's pod network as CNI configuration for containerd's CRI
//! plugin: Debian's `containernetworking-plugins`, a bridge with host-local
//! address management over the node's pod CIDR (the bridge is the pods'
//! gateway), and portmap for hostPort. containerd adds the loopback itself.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::error::{Error, Result};

/// The file name containerd reads (the first in name order wins).
pub const CONF_FILE: &str = "10-flotilla.conflist";

/// The network configuration for a node with pod CIDR `pod_cidr`.
pub fn conflist(bridge: &str, pod_cidr: &str, ipam_dir: &Path) -> serde_json::Value {
    json!({
        "cniVersion": "0.4.0",
        "name": "flotilla",
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": pod_cidr}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": ipam_dir.to_string_lossy(),
                }
            },
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    })
}

/// Write the configuration (atomically: containerd watches the folder).
pub fn write(conf_dir: &Path, bridge: &str, pod_cidr: &str, ipam_dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(conf_dir)
        .map_err(Error::io(format!("creating {}", conf_dir.display())))?;
    let path = conf_dir.join(CONF_FILE);
    let tmp = conf_dir.join(format!(".{CONF_FILE}.tmp"));
    let body = serde_json::to_vec_pretty(&conflist(bridge, pod_cidr, ipam_dir))
        .map_err(|e| Error::Config(format!("encoding the CNI configuration: {e}")))?;
    std::fs::write(&tmp, body).map_err(Error::io(format!("writing {}", tmp.display())))?;
    std::fs::rename(&tmp, &path).map_err(Error::io(format!("writing {}", path.display())))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridge_over_the_pod_cidr() {
        let c = conflist("flt0", "10.244.3.0/24", Path::new("/d/ipam"));
        assert_eq!(
            c["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
            "10.244.3.0/24"
        );
        assert_eq!(c["plugins"][0]["bridge"], "flt0");
        assert_eq!(c["plugins"][1]["type"], "portmap");
    }
}
