//! `flt diff -f FILE|DIR|-`: what `flt apply` would change. Each object is
//! applied as a server-side dry run (the same three-way merge apply makes,
//! checked by the masters and not saved), and the live object and the
//! result are compared as YAML, in `diff -u -N` form with kubectl's file
//! names (`/tmp/LIVE-N/apps.v1.Deployment.default.web`).
//!
//! Exit codes, as kubectl's: 0 no differences, 1 differences, 2 an error.
//! `FLT_EXTERNAL_DIFF` (or `KUBECTL_EXTERNAL_DIFF`) names another program
//! to compare the two directories with.

use anyhow::{anyhow, Result};
use flotilla_client::Reason;
use flotilla_objects::registry::ResourceInfo;
use serde_json::Value;
use similar::TextDiff;

use crate::commands::{info_of, name_of, Ctx};
use crate::print;
use crate::Manifests;

/// An error of `flt diff`: exit code 2, so that scripts tell it from "there
/// are differences" (1).
#[derive(Debug)]
pub struct DiffError(pub anyhow::Error);

impl std::fmt::Display for DiffError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", crate::cluster::one_line(&self.0))
    }
}

impl std::error::Error for DiffError {}

/// kubectl's file name for an object: `apps.v1.Deployment.default.web`,
/// `v1.Namespace..t1`.
fn file_name(info: &ResourceInfo, ns: &str, name: &str) -> String {
    let group = if info.group.is_empty() {
        String::new()
    } else {
        format!("{}.", info.group)
    };
    format!("{group}{}.{}.{ns}.{name}", info.version, info.kind)
}

/// Secrets' values are not shown: `***`, or `*** (before)` and `*** (after)`
/// where a value changes, as kubectl prints them.
fn mask_secrets(live: &mut Option<Value>, merged: &mut Value) {
    for field in ["data", "stringData"] {
        let before = live
            .as_ref()
            .and_then(|l| l.get(field))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let after = merged
            .get(field)
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let mask = |m: &mut serde_json::Map<String, Value>,
                    other: &serde_json::Map<String, Value>,
                    tag: &str| {
            for (k, v) in m.iter_mut() {
                *v = if other.get(k) == Some(v) {
                    Value::from("***")
                } else {
                    Value::from(format!("*** ({tag})"))
                };
            }
        };
        if let Some(m) = live
            .as_mut()
            .and_then(|l| l.get_mut(field))
            .and_then(Value::as_object_mut)
        {
            mask(m, &after, "before");
        }
        if let Some(m) = merged.get_mut(field).and_then(Value::as_object_mut) {
            mask(m, &before, "after");
        }
    }
}

/// The `diff -u -N` text for one object; empty when nothing differs.
pub fn unified(file: &str, live: &str, merged: &str, tmp: &str, stamp: &str) -> String {
    if live == merged {
        return String::new();
    }
    let pid = std::process::id();
    let a = format!("{tmp}/LIVE-{pid}/{file}");
    let b = format!("{tmp}/MERGED-{pid}/{file}");
    let body = TextDiff::from_lines(live, merged)
        .unified_diff()
        .context_radius(3)
        .header(&format!("{a}\t{stamp}"), &format!("{b}\t{stamp}"))
        .to_string();
    format!("diff -u -N {a} {b}\n{body}")
}

/// One object's two sides, as YAML ("" when it does not exist yet).
struct Pair {
    file: String,
    live: String,
    merged: String,
}

async fn pair(ctx: &Ctx, d: &crate::manifest::Doc) -> Result<Pair> {
    let info = info_of(d)?;
    let ns = ctx.doc_ns(info, d)?;
    let name = name_of(&d.object).to_string();
    let mut live = match ctx.client.get(info.plural, &ns, &name).await {
        Ok(v) => Some(v),
        Err(e) if e.is(Reason::NotFound) => None,
        Err(e) => return Err(anyhow!(e.message)),
    };
    let applied = ctx
        .client
        .apply(&ns, &d.object, true)
        .await
        .map_err(|e| anyhow!(e.message))?;
    let mut merged = applied.object;
    if info.kind == "Secret" {
        mask_secrets(&mut live, &mut merged);
    }
    Ok(Pair {
        file: file_name(info, &ns, &name),
        live: live.as_ref().map(print::to_yaml).unwrap_or_default(),
        merged: print::to_yaml(&merged),
    })
}

/// `FLT_EXTERNAL_DIFF` (else `KUBECTL_EXTERNAL_DIFF`): a program given the
/// LIVE and MERGED directories, as kubectl runs one; its exit code is flt's
/// (1: differences; above 1: an error).
fn external(program: &str, pairs: &[Pair]) -> Result<()> {
    let base = std::env::temp_dir().join(format!("flt-diff-{}", std::process::id()));
    let (live, merged) = (base.join("LIVE"), base.join("MERGED"));
    let run = || -> Result<std::process::ExitStatus> {
        for dir in [&live, &merged] {
            std::fs::create_dir_all(dir).map_err(|e| anyhow!("creating {}: {e}", dir.display()))?;
        }
        for p in pairs {
            // A side that does not exist has no file (diff -N).
            if !p.live.is_empty() {
                std::fs::write(live.join(&p.file), &p.live)?;
            }
            std::fs::write(merged.join(&p.file), &p.merged)?;
        }
        std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{program} \"$1\" \"$2\""))
            .arg("sh")
            .arg(&live)
            .arg(&merged)
            .status()
            .map_err(|e| anyhow!("running {program}: {e}"))
    };
    let status = run();
    let _ = std::fs::remove_dir_all(&base);
    match status?.code() {
        Some(0) => Ok(()),
        Some(1) => Err(crate::streams::ExitStatus(1).into()),
        Some(c) => Err(anyhow!("{program} exited with {c}")),
        None => Err(anyhow!("{program} was killed by a signal")),
    }
}

pub async fn diff(ctx: &Ctx, a: Manifests) -> Result<()> {
    let docs = crate::manifest::read(&a.files, a.recursive).map_err(DiffError)?;
    if docs.is_empty() {
        return Err(DiffError(anyhow!("no objects passed to diff")).into());
    }
    let mut errors = Vec::new();
    let mut pairs = Vec::new();
    for d in &docs {
        match pair(ctx, d).await {
            Ok(p) => pairs.push(p),
            Err(e) => errors.push(e),
        }
    }
    if let Some(last) = errors.pop() {
        for e in errors {
            eprintln!("Error: {}", crate::cluster::one_line(&e));
        }
        return Err(DiffError(last).into());
    }
    let program = ["FLT_EXTERNAL_DIFF", "KUBECTL_EXTERNAL_DIFF"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|p| !p.trim().is_empty()));
    if let Some(program) = program {
        return external(&program, &pairs).map_err(|e| {
            match e.downcast::<crate::streams::ExitStatus>() {
                Ok(status) => status.into(),
                Err(e) => DiffError(e).into(),
            }
        });
    }
    let tmp = std::env::temp_dir().display().to_string();
    let tmp = tmp.trim_end_matches('/');
    let stamp = chrono::Utc::now()
        .format("%Y-%m-%d %H:%M:%S%.9f +0000")
        .to_string();
    let mut differs = false;
    for p in &pairs {
        let text = unified(&p.file, &p.live, &p.merged, tmp, &stamp);
        differs |= !text.is_empty();
        print!("{text}");
    }
    if differs {
        return Err(crate::streams::ExitStatus(1).into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_unified_diff_with_kubectls_headers() {
        let live = "a: 1\nb: 2\nc: 3\n";
        let merged = "a: 1\nb: 5\nc: 3\n";
        let pid = std::process::id();
        let out = unified("v1.ConfigMap.default.cfg", live, merged, "/tmp", "T");
        assert_eq!(
            out,
            format!(
                "diff -u -N /tmp/LIVE-{pid}/v1.ConfigMap.default.cfg /tmp/MERGED-{pid}/v1.ConfigMap.default.cfg\n\
                 --- /tmp/LIVE-{pid}/v1.ConfigMap.default.cfg\tT\n\
                 +++ /tmp/MERGED-{pid}/v1.ConfigMap.default.cfg\tT\n\
                 @@ -1,3 +1,3 @@\n a: 1\n-b: 2\n+b: 5\n c: 3\n"
            )
        );
        assert_eq!(unified("x", live, live, "/tmp", "T"), "");
        // A new object: everything added.
        let out = unified("x", "", "a: 1\n", "/tmp", "T");
        assert!(out.ends_with("@@ -0,0 +1 @@\n+a: 1\n"), "{out}");
    }

    #[test]
    fn secrets_are_masked_and_file_names_are_kubectls() {
        let mut live = Some(json!({"data": {"a": "MQ==", "b": "Mg=="}}));
        let mut merged = json!({"data": {"a": "MQ==", "b": "Mw==", "c": "NA=="}});
        mask_secrets(&mut live, &mut merged);
        assert_eq!(
            live.unwrap()["data"],
            json!({"a": "***", "b": "*** (before)"})
        );
        assert_eq!(
            merged["data"],
            json!({"a": "***", "b": "*** (after)", "c": "*** (after)"})
        );
        let deploy = flotilla_objects::registry::lookup("deploy").unwrap();
        assert_eq!(
            file_name(deploy, "default", "web"),
            "apps.v1.Deployment.default.web"
        );
        let ns = flotilla_objects::registry::lookup("ns").unwrap();
        assert_eq!(file_name(ns, "", "t1"), "v1.Namespace..t1");
    }
}
