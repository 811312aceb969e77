//! A pod's ServiceAccount token, as kubelet projects it: a token of the
//! pod's account, bound to the pod, with the cluster CA and the namespace,
//! in a read-only folder mounted at
//! /var/run/secrets/kubernetes.io/serviceaccount in every container
//! (unless the pod's or its account's `automountServiceAccountToken` is
//! false, or a container mounts something there itself). The token lives an hour and is renewed once
//! 80% of its life has passed; the files are replaced by rename, so that a
//! reader sees the old token or the new one, never half.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use flotilla_client::Reason;
use flotilla_objects::core::Pod;
use flotilla_proto::objects as pb;
use flotilla_security::satoken::MOUNT_PATH;
use k8s_cri::v1 as cri;

use super::spec::PodDirs;
use super::Ctx;

/// The folder's name among the pod's volumes (a leading dot: no volume
/// of the pod can be called that).
const FOLDER: &str = ".kube-api-access";
/// The lifetime asked for (kubelet's).
const EXPIRATION_SECONDS: i64 = 3600;
/// When the token lives, and when it is renewed: `ISSUED EXPIRES`.
const META: &str = ".issued";

fn folder(dirs: &PodDirs) -> PathBuf {
    dirs.volumes.join(FOLDER)
}

/// Whether the pod gets a token mounted: its own
/// `automountServiceAccountToken`, else its account's, else yes.
pub async fn wanted(ctx: &Ctx, pod: &Pod) -> bool {
    if let Some(w) = pod.spec.automount_service_account_token {
        return w;
    }
    match ctx
        .client
        .get_with(
            "serviceaccounts",
            &pod.metadata.namespace,
            &pod.spec.service_account_name,
            true,
        )
        .await
    {
        Ok(sa) => sa["automountServiceAccountToken"].as_bool() != Some(false),
        // The token request says what is wrong, if anything.
        Err(_) => true,
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Whether the token in `dir` is missing or past 80% of its life.
fn renewal_due(dir: &Path) -> bool {
    let Ok(meta) = std::fs::read_to_string(dir.join(META)) else {
        return true;
    };
    let mut it = meta
        .split_whitespace()
        .filter_map(|s| s.parse::<i64>().ok());
    let (Some(issued), Some(expires)) = (it.next(), it.next()) else {
        return true;
    };
    now() >= issued + (expires - issued) * 8 / 10
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).map_err(|e| format!("writing {}: {e}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))
        .map_err(|e| format!("chmod {}: {e}", tmp.display()))?;
    let file = dir.join(name);
    std::fs::rename(&tmp, &file).map_err(|e| format!("renaming to {}: {e}", file.display()))
}

/// Make (or renew, when due) the pod's token files; the mount of their
/// folder, or None when the masters issue no ServiceAccount tokens.
pub async fn ensure(ctx: &Ctx, pod: &Pod, dirs: &PodDirs) -> Result<Option<cri::Mount>, String> {
    let dir = folder(dirs);
    let mount = cri::Mount {
        container_path: MOUNT_PATH.to_string(),
        host_path: dir.to_string_lossy().into_owned(),
        readonly: true,
        ..Default::default()
    };
    if !renewal_due(&dir) {
        return Ok(Some(mount));
    }
    let m = &pod.metadata;
    let req = pb::CreateTokenRequest {
        namespace: m.namespace.clone(),
        name: pod.spec.service_account_name.clone(),
        audiences: Vec::new(),
        expiration_seconds: EXPIRATION_SECONDS,
        bound_pod_name: m.name.clone(),
        bound_pod_uid: m.uid.clone(),
    };
    let t = match ctx.client.create_token(req).await {
        Ok(t) => t,
        Err(e) if e.is(Reason::MethodNotAllowed) => {
            tracing::debug!(pod = %m.name, "no service account token: {e}");
            return Ok(None);
        }
        Err(e) => {
            // A token still valid serves until it can be renewed.
            if dir.join("token").exists() && !expired(&dir) {
                tracing::warn!(pod = %m.name, "renewing the service account token: {e}");
                return Ok(Some(mount));
            }
            return Err(format!(
                "service account token of {}/{}: {e}",
                m.namespace, pod.spec.service_account_name
            ));
        }
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    if let Some(ca) = &ctx.cfg.cluster_ca_file {
        let pem = std::fs::read(ca).map_err(|e| format!("reading {}: {e}", ca.display()))?;
        write(&dir, "ca.crt", &pem)?;
    }
    write(&dir, "namespace", m.namespace.as_bytes())?;
    write(&dir, "token", t.token.as_bytes())?;
    write(
        &dir,
        META,
        format!("{} {}", now(), t.expiration_timestamp).as_bytes(),
    )?;
    tracing::debug!(pod = %m.name, expires = t.expiration_timestamp, "service account token written");
    Ok(Some(mount))
}

fn expired(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join(META))
        .ok()
        .and_then(|m| m.split_whitespace().nth(1)?.parse::<i64>().ok())
        .is_none_or(|exp| exp <= now())
}

/// Renew the token of a running pod when due (the worker's resync).
pub async fn renew(ctx: &Ctx, pod: &Pod, dirs: &PodDirs) {
    let dir = folder(dirs);
    if dir.join("token").exists() && renewal_due(&dir) {
        if let Err(e) = ensure(ctx, pod, dirs).await {
            tracing::warn!(pod = %pod.metadata.name, "{e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_due_when_missing_or_past_four_fifths() {
        let d = tempfile::tempdir().expect("tmp");
        assert!(renewal_due(d.path()));
        let t = now();
        write(
            d.path(),
            META,
            format!("{} {}", t - 100, t + 900).as_bytes(),
        )
        .expect("w");
        assert!(!renewal_due(d.path()), "10% of its life");
        write(
            d.path(),
            META,
            format!("{} {}", t - 900, t + 100).as_bytes(),
        )
        .expect("w");
        assert!(renewal_due(d.path()), "90% of its life");
        assert!(!expired(d.path()));
        write(d.path(), META, format!("{} {}", t - 900, t - 1).as_bytes()).expect("w");
        assert!(expired(d.path()));
    }
}
