//! Reading manifests: files, directories and standard input, multi-document
//! YAML or JSON, `kind: List` unpacked.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use serde_json::Value;

/// One object read from a manifest.
#[derive(Debug, Clone)]
pub struct Doc {
    /// Where it came from, for messages: `examples/web.yaml`.
    pub source: String,
    pub object: Value,
}

fn is_manifest(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

fn files_in(dir: &Path, recursive: bool, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading directory {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            if recursive {
                files_in(&p, recursive, out)?;
            }
        } else if is_manifest(&p) {
            out.push(p);
        }
    }
    Ok(())
}

/// Parse one text: YAML documents (JSON is YAML), `List`s unpacked.
pub fn parse(text: &str, source: &str) -> Result<Vec<Doc>> {
    let mut out = Vec::new();
    for (i, d) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let v = Value::deserialize(d)
            .with_context(|| format!("error parsing {source} (document {})", i + 1))?;
        match v {
            Value::Null => continue,
            Value::Object(_) => {}
            _ => bail!("error parsing {source} (document {}): not an object", i + 1),
        }
        if v.get("kind").and_then(Value::as_str) == Some("List") {
            if let Some(items) = v.get("items").and_then(Value::as_array) {
                for it in items {
                    out.push(Doc {
                        source: source.to_string(),
                        object: it.clone(),
                    });
                }
            }
            continue;
        }
        out.push(Doc {
            source: source.to_string(),
            object: v,
        });
    }
    Ok(out)
}

/// Every object in `paths` (files, directories, `-`), in order.
pub fn read(paths: &[PathBuf], recursive: bool) -> Result<Vec<Doc>> {
    let mut files = Vec::new();
    let mut docs = Vec::new();
    for p in paths {
        if p.as_os_str() == "-" {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading standard input")?;
            docs.extend(parse(&s, "<stdin>")?);
            continue;
        }
        if p.is_dir() {
            files.clear();
            files_in(p, recursive, &mut files)?;
            if files.is_empty() {
                bail!("no manifests (*.yaml, *.yml, *.json) in {}", p.display());
            }
            for f in &files {
                let s = std::fs::read_to_string(f)
                    .with_context(|| format!("reading {}", f.display()))?;
                docs.extend(parse(&s, &f.display().to_string())?);
            }
        } else {
            let s = std::fs::read_to_string(p)
                .with_context(|| format!("the path \"{}\" does not exist", p.display()))?;
            docs.extend(parse(&s, &p.display().to_string())?);
        }
    }
    Ok(docs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_document_yaml_and_lists() {
        let text = "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n---\n\
                    apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Pod, metadata: {name: b}}\n";
        let docs = parse(text, "t.yaml").unwrap();
        let names: Vec<_> = docs
            .iter()
            .map(|d| d.object["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn json_is_accepted_and_garbage_is_an_error() {
        let docs = parse(
            r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"}}"#,
            "p.json",
        )
        .unwrap();
        assert_eq!(docs.len(), 1);
        let e = parse("- a\n- b\n", "x.yaml").unwrap_err();
        assert_eq!(
            e.to_string(),
            "error parsing x.yaml (document 1): not an object"
        );
        assert!(parse("a: [", "y.yaml").is_err());
    }
}
