//! `flt explain KIND[.field.path]`: the fields of a kind, their types and
//! what they are for, from the object definitions' doc comments (the table
//! build.rs makes of objects/src), in kubectl's layout.

use anyhow::{anyhow, Result};
use clap::Args;

use crate::commands::resolve;

/// A struct of the object definitions.
pub struct TypeDoc {
    pub name: &'static str,
    pub doc: &'static str,
    pub fields: &'static [FieldDoc],
}

/// One field: its JSON name, its Rust type, its doc comment.
pub struct FieldDoc {
    pub name: &'static str,
    pub ty: &'static str,
    pub doc: &'static str,
}

include!(concat!(env!("OUT_DIR"), "/explain_types.rs"));

#[derive(Args, Debug)]
pub struct ExplainArgs {
    /// KIND, or KIND.field.path (`deploy.spec.template.spec.containers`).
    pub path: String,
    /// Print the names of all fields below, as a tree.
    #[arg(long)]
    pub recursive: bool,
}

fn type_doc(name: &str) -> Option<&'static TypeDoc> {
    TYPES.iter().find(|t| t.name == name)
}

/// The struct a Rust type names, looking through Option, Vec, Box and
/// maps' values: `Option<Vec<Container>>` is Container.
fn inner(ty: &str) -> &str {
    let t = ty.trim();
    for w in ["Option<", "Vec<", "Box<"] {
        if let Some(r) = t.strip_prefix(w).and_then(|r| r.strip_suffix('>')) {
            return inner(r);
        }
    }
    if let Some(r) = t
        .strip_prefix("BTreeMap<")
        .and_then(|r| r.strip_suffix('>'))
    {
        return inner(r.split_once(',').map(|(_, v)| v).unwrap_or(r));
    }
    t.rsplit("::").next().unwrap_or(t)
}

/// kubectl's name for a type: `<string>`, `<integer>`, `<[]Container>`,
/// `<map[string]string>`, `<ObjectMeta>`.
pub fn type_name(ty: &str) -> String {
    let t = ty.trim();
    for w in ["Option<", "Box<"] {
        if let Some(r) = t.strip_prefix(w).and_then(|r| r.strip_suffix('>')) {
            return type_name(r);
        }
    }
    if let Some(r) = t.strip_prefix("Vec<").and_then(|r| r.strip_suffix('>')) {
        return format!("[]{}", type_name(r));
    }
    if let Some(r) = t
        .strip_prefix("BTreeMap<")
        .and_then(|r| r.strip_suffix('>'))
    {
        let v = r.split_once(',').map(|(_, v)| v).unwrap_or(r);
        return format!("map[string]{}", type_name(v));
    }
    match t.rsplit("::").next().unwrap_or(t) {
        "String" | "Time" | "str" => "string".to_string(),
        "i32" | "i64" | "u32" | "u64" | "u16" | "usize" => "integer".to_string(),
        "bool" => "boolean".to_string(),
        "f64" | "f32" => "number".to_string(),
        "Value" => "Object".to_string(),
        other => other.to_string(),
    }
}

/// A description indented by four spaces, wrapped at 80 columns.
fn wrap(text: &str, indent: usize) -> String {
    let pad = " ".repeat(indent);
    let mut out = String::new();
    let mut line = String::new();
    for w in text.split_whitespace() {
        if !line.is_empty() && indent + line.len() + 1 + w.len() > 80 {
            out.push_str(&format!("{pad}{line}\n"));
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(w);
    }
    if !line.is_empty() {
        out.push_str(&format!("{pad}{line}\n"));
    }
    out
}

fn fields_text(t: &TypeDoc) -> String {
    let mut out = String::from("FIELDS:\n");
    for f in t.fields {
        out.push_str(&format!("  {}\t<{}>\n", f.name, type_name(f.ty)));
        out.push_str(&wrap(f.doc, 4));
        out.push('\n');
    }
    out
}

fn tree(t: &TypeDoc, depth: usize, out: &mut String) {
    for f in t.fields {
        out.push_str(&format!(
            "{}{}\t<{}>\n",
            "  ".repeat(depth),
            f.name,
            type_name(f.ty)
        ));
        // Depth-limited: a type that contains itself stops somewhere.
        if let Some(sub) = type_doc(inner(f.ty)).filter(|_| depth < 12) {
            tree(sub, depth + 1, out);
        }
    }
}

/// The text `flt explain` prints for `path`.
pub fn explain_text(path: &str, recursive: bool) -> Result<String> {
    let mut parts = path.split('.');
    let kind = parts.next().unwrap_or("");
    let info = resolve(kind)?;
    let top =
        type_doc(info.kind).ok_or_else(|| anyhow!("no field documentation for {}", info.kind))?;
    let mut out = String::new();
    if !info.group.is_empty() {
        out.push_str(&format!("GROUP:      {}\n", info.group));
    }
    out.push_str(&format!(
        "KIND:       {}\nVERSION:    {}\n\n",
        info.kind, info.version
    ));
    let mut t = top;
    let mut field: Option<&FieldDoc> = None;
    let mut walked: Vec<&str> = Vec::new();
    for p in parts {
        let here = match field {
            None => Some(t),
            Some(f) => type_doc(inner(f.ty)),
        };
        let f = here
            .and_then(|h| h.fields.iter().find(|x| x.name == p))
            .ok_or_else(|| {
                let at = if walked.is_empty() {
                    String::new()
                } else {
                    format!(" in {}", walked.join("."))
                };
                anyhow!(
                    "field \"{p}\" does not exist{at} (see `flt explain {}`)",
                    kind
                )
            })?;
        if let Some(h) = here {
            t = h;
        }
        walked.push(p);
        field = Some(f);
    }
    let body = match field {
        None => t,
        Some(f) => {
            out.push_str(&format!("FIELD: {} <{}>\n\n", f.name, type_name(f.ty)));
            match type_doc(inner(f.ty)) {
                Some(sub) => {
                    out.push_str("DESCRIPTION:\n");
                    out.push_str(&wrap(if f.doc.is_empty() { sub.doc } else { f.doc }, 4));
                    out.push('\n');
                    sub
                }
                None => {
                    out.push_str("DESCRIPTION:\n");
                    out.push_str(&wrap(f.doc, 4));
                    return Ok(out);
                }
            }
        }
    };
    if field.is_none() {
        out.push_str("DESCRIPTION:\n");
        out.push_str(&wrap(body.doc, 4));
        out.push('\n');
    }
    if recursive {
        out.push_str("FIELDS:\n");
        tree(body, 1, &mut out);
    } else {
        out.push_str(&fields_text(body));
    }
    Ok(out)
}

pub fn explain(a: &ExplainArgs) -> Result<()> {
    print!("{}", explain_text(&a.path, a.recursive)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_read_as_kubectl_names_them() {
        assert_eq!(type_name("Option<Vec<Container>>"), "[]Container");
        assert_eq!(type_name("BTreeMap<String, String>"), "map[string]string");
        assert_eq!(type_name("Option<i32>"), "integer");
        assert_eq!(
            type_name("Vec<crate::scheduling::TopologySpreadConstraint>"),
            "[]TopologySpreadConstraint"
        );
        assert_eq!(inner("Option<Vec<Container>>"), "Container");
    }

    #[test]
    fn every_kind_has_its_fields_documented() {
        for r in flotilla_objects::registry::RESOURCES {
            let t = explain_text(r.plural, false).unwrap_or_else(|e| panic!("{}: {e}", r.kind));
            assert!(
                t.contains("FIELDS:\n  apiVersion\t<string>\n"),
                "{}: {t}",
                r.kind
            );
            assert!(t.contains("  metadata\t<ObjectMeta>\n"), "{}: {t}", r.kind);
        }
    }

    #[test]
    fn field_paths_walk_through_lists_and_options() {
        let t = explain_text("deploy.spec.template.spec.containers", false).unwrap();
        assert!(t.starts_with("GROUP:      apps\nKIND:       Deployment\nVERSION:    v1\n\nFIELD: containers <[]Container>\n"), "{t}");
        assert!(t.contains("  image\t<string>\n"), "{t}");
        let t = explain_text("po.spec.containers.image", false).unwrap();
        assert!(
            t.contains("FIELD: image <string>\n\nDESCRIPTION:\n    "),
            "{t}"
        );
        assert!(!t.contains("FIELDS:"), "{t}");
        let e = explain_text("deploy.spec.nope", false)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "field \"nope\" does not exist in spec (see `flt explain deploy`)"
        );
        assert!(explain_text("gizmo", false).is_err());
        let t = explain_text("svc.spec", true).unwrap();
        assert!(
            t.contains("\n  ports\t<[]ServicePort>\n    name\t<string>\n"),
            "{t}"
        );
    }
}
