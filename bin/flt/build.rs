//! Builds the table `flt explain` reads: every struct of the object
//! definitions (objects/src), with its fields' JSON names, Rust types and
//! doc comments. The definitions are read as text (no dependency on the
//! objects crate at build time): the `object!` blocks and other structs with
//! named fields, `///` lines above them, `#[serde(rename = "...")]`.

use std::fmt::Write as _;
use std::path::Path;

struct Field {
    name: String,
    ty: String,
    doc: String,
}

struct Struct {
    name: String,
    doc: String,
    fields: Vec<Field>,
}

fn camel(snake: &str) -> String {
    let mut out = String::new();
    let mut up = false;
    for c in snake.trim_start_matches("r#").chars() {
        if c == '_' {
            up = true;
        } else if up {
            out.extend(c.to_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn rename_of(attr: &str) -> Option<String> {
    let i = attr.find("rename = \"")? + "rename = \"".len();
    let rest = &attr[i..];
    Some(rest[..rest.find('"')?].to_string())
}

fn parse(text: &str, out: &mut Vec<Struct>) {
    let lines: Vec<&str> = text.lines().collect();
    let mut doc: Vec<String> = Vec::new();
    let mut in_object = false;
    let mut camel_case = false;
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i].trim();
        i += 1;
        if l.starts_with("object! {") {
            in_object = true;
            doc.clear();
            continue;
        }
        if let Some(d) = l.strip_prefix("///") {
            doc.push(d.trim().to_string());
            continue;
        }
        if l.starts_with("#[") {
            camel_case |= l.contains("rename_all = \"camelCase\"");
            continue;
        }
        let Some(name) = l
            .strip_prefix("pub struct ")
            .and_then(|r| r.strip_suffix(" {"))
        else {
            if !l.is_empty() {
                doc.clear();
                camel_case = false;
            }
            if l == "}" {
                in_object = false;
            }
            continue;
        };
        let mut s = Struct {
            name: name.trim().to_string(),
            doc: doc.join(" "),
            fields: Vec::new(),
        };
        let camel_fields = in_object || camel_case;
        doc.clear();
        camel_case = false;
        let mut rename = None;
        while i < lines.len() {
            let f = lines[i].trim();
            i += 1;
            if f == "}" {
                break;
            }
            if let Some(d) = f.strip_prefix("///") {
                doc.push(d.trim().to_string());
                continue;
            }
            if f.starts_with("#[") {
                rename = rename.or(rename_of(f));
                continue;
            }
            let Some(rest) = f.strip_prefix("pub ") else {
                continue;
            };
            let Some((fname, ty)) = rest.split_once(':') else {
                continue;
            };
            let mut ty = ty.trim().to_string();
            // A type over several lines ends with the line ending in ','.
            while !ty.ends_with(',') && i < lines.len() {
                ty.push_str(lines[i].trim());
                i += 1;
            }
            let name = rename.take().unwrap_or_else(|| {
                if camel_fields {
                    camel(fname.trim())
                } else {
                    fname.trim().trim_start_matches("r#").to_string()
                }
            });
            s.fields.push(Field {
                name,
                ty: ty.trim_end_matches(',').trim().to_string(),
                doc: doc.join(" "),
            });
            doc.clear();
        }
        doc.clear();
        if !s.fields.is_empty() && !out.iter().any(|o| o.name == s.name) {
            out.push(s);
        }
    }
}

fn main() {
    // The folder cargo runs this for now: not `env!`, which would keep the
    // folder this script was compiled in, and a build folder shared by two
    // clones would read the other's (or none, and explain nothing).
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let dir = Path::new(&manifest).join("../../objects/src");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<_> = match std::fs::read_dir(&dir) {
        Ok(d) => d.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(e) => panic!("reading the object definitions in {}: {e}", dir.display()),
    };
    files.sort();
    let mut structs = Vec::new();
    for f in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "rs"))
    {
        println!("cargo:rerun-if-changed={}", f.display());
        if let Ok(text) = std::fs::read_to_string(f) {
            parse(&text, &mut structs);
        }
    }
    assert!(
        !structs.is_empty(),
        "no object definitions found in {}",
        dir.display()
    );
    let mut code = String::from("pub static TYPES: &[TypeDoc] = &[\n");
    for s in &structs {
        let _ = writeln!(
            code,
            "    TypeDoc {{ name: {:?}, doc: {:?}, fields: &[",
            s.name, s.doc
        );
        for f in &s.fields {
            let _ = writeln!(
                code,
                "        FieldDoc {{ name: {:?}, ty: {:?}, doc: {:?} }},",
                f.name, f.ty, f.doc
            );
        }
        code.push_str("    ] },\n");
    }
    code.push_str("];\n");
    let out = Path::new(&std::env::var("OUT_DIR").unwrap_or_else(|_| ".".into()))
        .join("explain_types.rs");
    if let Err(e) = std::fs::write(&out, code) {
        panic!("writing {}: {e}", out.display());
    }
}
