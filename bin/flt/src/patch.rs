//! `flt patch KIND NAME -p PATCH --type strategic|merge|json`, and the
//! read-change-write loop it shares with `flt set`: the change is made on
//! the latest version and written with that version as a precondition; a
//! conflict (someone wrote meanwhile) makes it again on the newer version.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, ValueEnum};
use flotilla_client::{ObjectApi, Reason};
use flotilla_objects::registry::ResourceInfo;
use serde_json::Value;

use crate::commands::{name_of, resolve, singular_qualified, Ctx};
use crate::generate::{DryRun, GenFlags, GenOutput};
use crate::print;

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum PatchType {
    /// Strategic merge patch: lists such as containers, env, ports and
    /// volumes merge by their key.
    Strategic,
    /// JSON merge patch (RFC 7386): lists are replaced whole.
    Merge,
    /// JSON patch (RFC 6902): a list of operations.
    Json,
}

#[derive(Args, Debug)]
pub struct PatchArgs {
    /// KIND/NAME, or KIND followed by NAME.
    pub kind: String,
    pub name: Option<String>,
    /// The patch, as JSON or YAML.
    #[arg(
        short = 'p',
        long,
        required_unless_present = "patch_file",
        conflicts_with = "patch_file"
    )]
    pub patch: Option<String>,
    /// A file holding the patch.
    #[arg(long, value_name = "FILE")]
    pub patch_file: Option<PathBuf>,
    /// The kind of patch.
    #[arg(long = "type", value_enum, default_value_t = PatchType::Strategic)]
    pub patch_type: PatchType,
    #[command(flatten)]
    pub flags: GenFlags,
}

/// `KIND/NAME`, or `KIND` and `NAME`.
pub(crate) fn split_ref(kind: &str, name: Option<&str>) -> Result<(String, String)> {
    match (kind.split_once('/'), name) {
        (Some((k, n)), None) if !k.is_empty() && !n.is_empty() => Ok((k.to_string(), n.to_string())),
        (None, Some(n)) => Ok((kind.to_string(), n.to_string())),
        (Some(_), Some(_)) => bail!("there is no need to specify a resource type as a separate argument when passing arguments in resource/name form"),
        _ => bail!("resource(s) were provided, but no name was specified"),
    }
}

/// What a read-change-write ended with.
pub(crate) struct Outcome {
    pub object: Value,
    pub changed: bool,
}

/// Read the object, change it with `change`, write it back (checked by the
/// server only with `--dry-run=server`, not at all with `client`); retried
/// on the latest version after a conflict.
pub(crate) async fn update_with(
    ctx: &Ctx,
    info: &ResourceInfo,
    name: &str,
    dry_run: DryRun,
    mut change: impl FnMut(&Value) -> Result<Value>,
) -> Result<Outcome> {
    let ns = ctx.ns(info).to_string();
    let mut attempts = 0;
    loop {
        let cur = ctx
            .client
            .get(info.plural, &ns, name)
            .await
            .map_err(|e| anyhow!(e.message))?;
        let new = change(&cur)?;
        if name_of(&new) != name
            || new.pointer("/metadata/namespace") != cur.pointer("/metadata/namespace")
        {
            bail!("the patch may not change the object's name or namespace");
        }
        if new == cur {
            return Ok(Outcome {
                object: cur,
                changed: false,
            });
        }
        if dry_run == DryRun::Client {
            return Ok(Outcome {
                object: new,
                changed: true,
            });
        }
        // A resourceVersion the change set itself is the user's precondition:
        // its conflict is theirs to see.
        let own_rv =
            new.pointer("/metadata/resourceVersion") != cur.pointer("/metadata/resourceVersion");
        let res = ObjectApi::update(
            &ctx.client,
            info.plural,
            &ns,
            new,
            false,
            dry_run == DryRun::Server,
        )
        .await;
        match res {
            Ok(w) => {
                for w in &w.warnings {
                    eprintln!("Warning: {w}");
                }
                return Ok(Outcome {
                    object: w.object,
                    changed: w.changed,
                });
            }
            Err(e) if e.is(Reason::Conflict) && !own_rv && attempts < 10 => attempts += 1,
            Err(e) => return Err(anyhow!(e.message)),
        }
    }
}

/// Print the result of a change: the object with `-o`, else
/// `deployment.apps/web patched` with kubectl's suffixes.
pub(crate) fn report(info: &ResourceInfo, name: &str, out: &Outcome, flags: &GenFlags, verb: &str) {
    match flags.output {
        Some(GenOutput::Yaml) => print!("{}", print::to_yaml(&out.object)),
        Some(GenOutput::Json) => print!("{}", print::to_json(&out.object)),
        Some(GenOutput::Name) => println!("{}/{name}", singular_qualified(info)),
        None => {
            let how = match (flags.dry_run, out.changed) {
                (_, false) => " (no change)",
                (DryRun::None, true) => "",
                (DryRun::Client, true) => " (dry run)",
                (DryRun::Server, true) => " (server dry run)",
            };
            println!("{}/{name} {verb}{how}", singular_qualified(info));
        }
    }
}

/// A parsed patch, ready to apply to any version of the object.
enum Patch {
    Strategic(Value),
    Merge(Value),
    Json(json_patch::Patch),
}

fn parse(text: &str, how: PatchType) -> Result<Patch> {
    let bad = |e: &dyn std::fmt::Display| anyhow!("unable to parse {:?}: {e}", text.trim());
    let v: Value = serde_yaml::from_str(text).map_err(|e| bad(&e))?;
    Ok(match how {
        PatchType::Json => {
            if !v.is_array() {
                return Err(bad(
                    &"a json patch must be a list of operations ([{\"op\": ..., \"path\": ...}])",
                ));
            }
            Patch::Json(serde_json::from_value(v).map_err(|e| bad(&e))?)
        }
        PatchType::Merge | PatchType::Strategic if !v.is_object() => {
            return Err(bad(&"a merge patch must be an object"));
        }
        PatchType::Merge => Patch::Merge(v),
        PatchType::Strategic => Patch::Strategic(v),
    })
}

fn apply_patch(kind: &str, cur: &Value, p: &Patch) -> Result<Value> {
    let mut out = cur.clone();
    match p {
        Patch::Merge(m) => flotilla_objects::patch::merge_patch(&mut out, m),
        Patch::Strategic(m) => out = crate::strategic::apply(kind, cur, m)?,
        Patch::Json(ops) => json_patch::patch(&mut out, ops)
            .map_err(|e| anyhow!("the json patch cannot be applied: {e}"))?,
    }
    Ok(out)
}

pub async fn patch(ctx: &Ctx, a: PatchArgs) -> Result<()> {
    let (kind, name) = split_ref(&a.kind, a.name.as_deref())?;
    let info = resolve(&kind)?;
    let text = match (&a.patch, &a.patch_file) {
        (Some(p), _) => p.clone(),
        (None, Some(f)) => std::fs::read_to_string(f)
            .with_context(|| format!("reading the patch file {}", f.display()))?,
        (None, None) => {
            bail!("must specify --patch or --patch-file containing the contents of the patch")
        }
    };
    let p = parse(&text, a.patch_type)?;
    let out = update_with(ctx, info, &name, a.flags.dry_run, |cur| {
        apply_patch(info.kind, cur, &p)
    })
    .await?;
    report(info, &name, &out, &a.flags, "patched");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_three_kinds_of_patch() {
        let cur = json!({"metadata": {"name": "w"}, "spec": {"ports": [{"port": 1}], "x": 1}});
        let p = parse(r#"{"spec": {"ports": [{"port": 2}]}}"#, PatchType::Merge).unwrap();
        assert_eq!(
            apply_patch("Service", &cur, &p).unwrap()["spec"]["ports"],
            json!([{"port": 2}])
        );
        let p = parse("spec: {ports: [{port: 2}]}", PatchType::Strategic).unwrap();
        assert_eq!(
            apply_patch("Service", &cur, &p).unwrap()["spec"]["ports"],
            json!([{"port": 1}, {"port": 2}])
        );
        let p = parse(
            r#"[{"op": "replace", "path": "/spec/x", "value": 5}, {"op": "remove", "path": "/spec/ports/0"}]"#,
            PatchType::Json,
        )
        .unwrap();
        let out = apply_patch("Service", &cur, &p).unwrap();
        assert_eq!(out["spec"], json!({"ports": [], "x": 5}));
    }

    #[test]
    fn bad_patches_say_what_is_wrong() {
        let e = |t: &str, how| {
            parse(t, how)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(e("{a: [", PatchType::Merge).starts_with("unable to parse \"{a: [\": "));
        assert_eq!(
            e("[1]", PatchType::Merge),
            "unable to parse \"[1]\": a merge patch must be an object"
        );
        assert!(e(r#"{"op": "add"}"#, PatchType::Json).contains("a json patch must be a list"));
        assert!(
            e(r#"[{"op": "frob", "path": "/a"}]"#, PatchType::Json).starts_with("unable to parse")
        );
        let p = parse(r#"[{"op": "remove", "path": "/nope"}]"#, PatchType::Json).unwrap();
        let err = apply_patch("Pod", &json!({}), &p).unwrap_err().to_string();
        assert!(
            err.starts_with("the json patch cannot be applied: "),
            "{err}"
        );
        assert!(split_ref("deploy/", None).is_err());
        assert_eq!(
            split_ref("deploy", Some("web")).unwrap(),
            ("deploy".to_string(), "web".to_string())
        );
    }
}
