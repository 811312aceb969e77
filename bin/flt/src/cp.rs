//! `flt cp POD:PATH LOCAL` and `flt cp LOCAL POD:PATH`, as kubectl does:
//! through `flt exec` with `tar` in the container (`tar cf - -C DIR NAME`
//! out, `tar xf - -C DIR` in), the archive made and read here. What comes
//! out of a container is not trusted: entries that would land outside the
//! destination (`..`, absolute paths, through or to links pointing out)
//! are refused.

use std::io::Cursor;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use clap::Args;
use flotilla_proto::node::{ExecRequest, ExecResponse};

use crate::streams::{masters, status_error, STDIN_LIMIT};

#[derive(Args, Debug)]
pub struct CpArgs {
    /// Source: a local path, or [NAMESPACE/]POD:PATH.
    pub src: String,
    /// Destination: a local path, or [NAMESPACE/]POD:PATH.
    pub dest: String,
    /// The container (default: the pod's only one).
    #[arg(short = 'c', long)]
    pub container: Option<String>,
}

/// `[NS/]POD:PATH`.
#[derive(Debug, PartialEq)]
struct Remote {
    namespace: Option<String>,
    pod: String,
    path: String,
}

/// A remote spec, or None for a local path (kubectl's rule: a colon,
/// with something before it that is not a path).
fn remote(s: &str) -> Option<Remote> {
    let (who, path) = s.split_once(':')?;
    if who.is_empty() || who.starts_with('.') || who.starts_with('/') {
        return None;
    }
    let (namespace, pod) = match who.split_once('/') {
        Some((ns, pod)) => (Some(ns.to_string()), pod.to_string()),
        None => (None, who.to_string()),
    };
    Some(Remote {
        namespace,
        pod,
        path: path.to_string(),
    })
}

/// The folder and last name of a path in the container.
fn split_remote(path: &str) -> Result<(String, String)> {
    let trimmed = path.trim_end_matches('/');
    let (dir, name) = match trimmed.rsplit_once('/') {
        Some(("", name)) => ("/".to_string(), name.to_string()),
        Some((dir, name)) => (dir.to_string(), name.to_string()),
        None => (".".to_string(), trimmed.to_string()),
    };
    if name.is_empty() || name == "." || name == ".." {
        bail!("cannot copy {path:?}: name a file or folder");
    }
    Ok((dir, name))
}

pub async fn cp(servers: &[String], dial: Duration, ns: &str, a: CpArgs) -> Result<()> {
    match (remote(&a.src), remote(&a.dest)) {
        (Some(r), None) => from_pod(servers, dial, ns, &a, r).await,
        (None, Some(r)) => to_pod(servers, dial, ns, &a, r).await,
        (Some(_), Some(_)) => bail!("copying from a pod to a pod is not supported"),
        (None, None) => bail!("one of src or dest must be a remote file specification (POD:PATH)"),
    }
}

async fn run_tar(
    servers: &[String],
    dial: Duration,
    ns: &str,
    a: &CpArgs,
    r: &Remote,
    command: Vec<String>,
    stdin: Option<Vec<u8>>,
) -> Result<ExecResponse> {
    let mut c = masters(servers, dial).await?;
    let req = ExecRequest {
        namespace: r.namespace.clone().unwrap_or_else(|| ns.to_string()),
        pod: r.pod.clone(),
        container: a.container.clone().unwrap_or_default(),
        command,
        timeout_seconds: 0,
        attach_stdin: stdin.is_some(),
        stdin: stdin.unwrap_or_default(),
    };
    let out = c.exec(req).await.map_err(|s| {
        let m = s.message();
        if m.contains("executable file not found") || m.contains("no such file or directory") {
            anyhow!(
                "flt cp needs `tar` in the container, and pod {} has none: {m}",
                r.pod
            )
        } else {
            status_error(s)
        }
    })?;
    let out = out.into_inner();
    if out.exit_code == 127 {
        bail!(
            "flt cp needs `tar` in the container, and pod {} has none: {}",
            r.pod,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    if out.exit_code != 0 {
        bail!(
            "tar in pod {} failed (exit code {}): {}",
            r.pod,
            out.exit_code,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

async fn from_pod(
    servers: &[String],
    dial: Duration,
    ns: &str,
    a: &CpArgs,
    r: Remote,
) -> Result<()> {
    let (dir, name) = split_remote(&r.path)?;
    let cmd = ["tar", "cf", "-", "-C", &dir, &name]
        .map(String::from)
        .to_vec();
    let out = run_tar(servers, dial, ns, a, &r, cmd, None).await?;
    let dest = PathBuf::from(&a.dest);
    unpack(&out.stdout, &name, &dest)
}

async fn to_pod(servers: &[String], dial: Duration, ns: &str, a: &CpArgs, r: Remote) -> Result<()> {
    let src = Path::new(&a.src);
    let meta = std::fs::symlink_metadata(src).with_context(|| format!("{}", src.display()))?;
    let (dir, name) = if r.path.ends_with('/') || r.path.is_empty() {
        let base = src
            .file_name()
            .ok_or_else(|| anyhow!("cannot copy {}: name a file or folder", src.display()))?;
        let dir = if r.path.is_empty() { "." } else { &r.path };
        (dir.to_string(), base.to_string_lossy().into_owned())
    } else {
        split_remote(&r.path)?
    };
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    if meta.is_dir() {
        b.append_dir_all(&name, src)?;
    } else {
        b.append_path_with_name(src, &name)?;
    }
    let data = b.into_inner()?;
    if data.len() > STDIN_LIMIT {
        bail!(
            "{} makes an archive of {} MiB, more than the {} MiB flt cp sends at once",
            src.display(),
            data.len() >> 20,
            STDIN_LIMIT >> 20
        );
    }
    let cmd = ["tar", "xf", "-", "-C", &dir].map(String::from).to_vec();
    run_tar(servers, dial, ns, a, &r, cmd, Some(data)).await?;
    Ok(())
}

/// A relative path made of names only.
fn plain(p: &Path) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => bail!(
                "refusing {:?}: it would be written outside the destination",
                p
            ),
        }
    }
    Ok(out)
}

/// Whether `target`, a link at `at` (relative to the destination), stays
/// inside the destination.
fn link_inside(at: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let mut depth: i64 = at.components().count() as i64 - 1;
    for c in target.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::ParentDir => depth -= 1,
            Component::CurDir => {}
            _ => return false,
        }
        if depth < 0 {
            return false;
        }
    }
    true
}

/// Unpack a tar of `name` (a file or folder) to `dest`: `name` itself
/// becomes `dest`.
pub fn unpack(data: &[u8], name: &str, dest: &Path) -> Result<()> {
    let mut ar = tar::Archive::new(Cursor::new(data));
    for e in ar.entries()? {
        let mut e = e?;
        let raw = e.path()?.into_owned();
        let rel = plain(&raw)?;
        let rest = rel
            .strip_prefix(name)
            .map_err(|_| anyhow!("refusing {:?}: not under {name:?}, what was asked for", raw))?;
        let rest = rest.to_path_buf();
        // No entry may go through a link (one made by an earlier entry).
        let mut at = dest.to_path_buf();
        for c in rest.components() {
            if std::fs::symlink_metadata(&at).is_ok_and(|m| m.file_type().is_symlink()) {
                bail!("refusing {:?}: it goes through a link", raw);
            }
            at.push(c);
        }
        let kind = e.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            let target = e
                .link_name()?
                .ok_or_else(|| anyhow!("refusing {:?}: a link without a target", raw))?;
            let inside = if kind.is_hard_link() {
                plain(&target).is_ok()
            } else {
                link_inside(&rest, &target)
            };
            if !inside || rest.as_os_str().is_empty() {
                bail!(
                    "refusing {:?}: its link target {:?} is outside the destination",
                    raw,
                    target
                );
            }
            if kind.is_hard_link() {
                bail!("refusing {:?}: hard links are not copied", raw);
            }
        }
        if let Some(parent) = at.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        e.unpack(&at)
            .with_context(|| format!("writing {}", at.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw_tar(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, link) in entries {
            let mut h = tar::Header::new_gnu();
            let gnu = h.as_gnu_mut().expect("gnu");
            gnu.name[..path.len()].copy_from_slice(path.as_bytes());
            gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
            h.set_entry_type(*kind);
            h.set_mode(0o644);
            h.set_size(if kind.is_file() { 2 } else { 0 });
            h.set_cksum();
            let body: &[u8] = if kind.is_file() { b"hi" } else { b"" };
            b.append(&h, body).expect("append");
        }
        b.into_inner().expect("tar")
    }

    #[test]
    fn remote_specs_as_kubectl() {
        assert_eq!(
            remote("ns/web:/tmp/x"),
            Some(Remote {
                namespace: Some("ns".into()),
                pod: "web".into(),
                path: "/tmp/x".into()
            })
        );
        assert_eq!(remote("web:x").map(|r| r.pod), Some("web".into()));
        assert_eq!(remote("./a:b"), None);
        assert_eq!(remote("/tmp/a"), None);
        assert_eq!(
            split_remote("/tmp/d/").expect("split"),
            ("/tmp".into(), "d".into())
        );
        assert_eq!(split_remote("/d").expect("split"), ("/".into(), "d".into()));
        assert!(split_remote("/tmp/..").is_err());
    }

    #[test]
    fn entries_escaping_the_destination_are_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let dest = dir.path().join("out");
        use tar::EntryType::{Regular, Symlink};
        for (entries, why) in [
            (vec![("d/../../evil", Regular, "")], "outside"),
            (vec![("/etc/evil", Regular, "")], "outside"),
            (vec![("d/l", Symlink, "/etc")], "outside the destination"),
            (vec![("d/l", Symlink, "../../x")], "outside the destination"),
            (
                vec![("d/l", Symlink, "."), ("d/l/f", Regular, "")],
                "through a link",
            ),
            (vec![("other/f", Regular, "")], "not under"),
        ] {
            let err = unpack(&raw_tar(&entries), "d", &dest).expect_err("refused");
            assert!(err.to_string().contains(why), "{entries:?}: {err}");
        }
        assert!(!dir.path().join("evil").exists());
        let ok = raw_tar(&[("d/sub/f", Regular, ""), ("d/sub/l", Symlink, "../sub/f")]);
        unpack(&ok, "d", &dest).expect("unpack");
        assert_eq!(std::fs::read(dest.join("sub/l")).expect("read"), b"hi");
    }
}
