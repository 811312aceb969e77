//! `flt get`: tables, `-o wide|yaml|json|name|jsonpath=...|custom-columns=...`,
//! `--sort-by`, `-L`, and `-w` / `--watch-only` with `--output-watch-events`.

use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Result};
use chrono::Utc;
use flotilla_client::{EventType, ListParams, WatchParams};
use flotilla_objects::registry::ResourceInfo;
use futures::StreamExt;
use serde_json::{json, Value};

use crate::commands::{api, finish, resolve, singular_qualified, Ctx};
use crate::jsonpath::{scalar, sort_order, Template};
use crate::print::{self, TableOpts};
use crate::GetArgs;

/// `-o`: how `flt get` prints.
#[derive(Clone, Debug)]
pub enum Output {
    Wide,
    Yaml,
    Json,
    Name,
    /// `-o jsonpath=TEMPLATE`
    JsonPath(Template),
    /// `-o custom-columns=HEADER:PATH,...`
    CustomColumns(Vec<(String, Template)>),
}

/// Parse `-o`'s value (clap's value parser).
pub fn parse_output(s: &str) -> Result<Output, String> {
    if let Some(t) = s.strip_prefix("jsonpath=") {
        return Template::parse(t)
            .map(Output::JsonPath)
            .map_err(|e| e.to_string());
    }
    if let Some(spec) = s.strip_prefix("custom-columns=") {
        return parse_columns(spec).map(Output::CustomColumns);
    }
    Ok(match s {
        "wide" => Output::Wide,
        "yaml" => Output::Yaml,
        "json" => Output::Json,
        "name" => Output::Name,
        _ => return Err(format!(
            "unable to match a printer suitable for the output format \"{s}\", allowed formats are: custom-columns,json,jsonpath,name,wide,yaml"
        )),
    })
}

/// `NAME:.metadata.name,IMAGES:.spec.containers[*].image`
pub fn parse_columns(spec: &str) -> Result<Vec<(String, Template)>, String> {
    if spec.trim().is_empty() {
        return Err("custom-columns format specified but no custom columns given".to_string());
    }
    // Commas inside a path's brackets ([?(@.a=="x,y")]) do not split.
    let mut cols = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    let mut parts = Vec::new();
    for (i, c) in spec.char_indices() {
        match c {
            '[' | '{' => depth += 1,
            ']' | '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&spec[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&spec[start..]);
    for p in parts {
        let Some((header, path)) = p.split_once(':') else {
            return Err(format!(
                "unexpected custom-columns spec: {p}, expected <header>:<json-path-expr>"
            ));
        };
        if header.is_empty() || path.is_empty() {
            return Err(format!(
                "unexpected custom-columns spec: {p}, expected <header>:<json-path-expr>"
            ));
        }
        let t = Template::parse_relaxed(path).map_err(|e| e.to_string())?;
        cols.push((header.to_string(), t));
    }
    Ok(cols)
}

/// The rows of a custom-columns table: several values of a path are
/// joined by commas, none is `<none>`.
pub fn column_rows(cols: &[(String, Template)], items: &[Value]) -> Vec<Vec<String>> {
    items
        .iter()
        .map(|it| {
            cols.iter()
                .map(|(_, t)| {
                    let v: Vec<String> = t.values(it).into_iter().map(scalar).collect();
                    if v.is_empty() {
                        "<none>".to_string()
                    } else {
                        v.join(",")
                    }
                })
                .collect()
        })
        .collect()
}

/// What `flt get all` lists.
const ALL: &[&str] = &[
    "pods",
    "services",
    "replicationcontrollers",
    "deployments",
    "replicasets",
    "jobs",
];

fn table_opts(a: &GetArgs, show_kind: bool) -> TableOpts {
    TableOpts {
        wide: matches!(a.output, Some(Output::Wide)),
        all_namespaces: a.all_namespaces,
        no_headers: a.no_headers,
        show_kind,
        show_labels: a.show_labels,
    }
}

/// A table's header and rows, with `-L` columns (before LABELS, as
/// kubectl puts them) and, for watch events, an EVENT column first.
fn table_rows(
    kind: &str,
    items: &[(Option<EventType>, Value)],
    a: &GetArgs,
    opts: &TableOpts,
    header: bool,
) -> Vec<Vec<String>> {
    let now = Utc::now();
    let events = a.output_watch_events;
    let at = |cells: &Vec<String>| cells.len() - usize::from(opts.show_labels);
    let mut rows = Vec::new();
    if header {
        let mut h = print::header(kind, opts);
        let i = at(&h);
        for (k, l) in a.label_columns.iter().enumerate() {
            let name = l.rsplit('/').next().unwrap_or(l).to_ascii_uppercase();
            h.insert(i + k, name);
        }
        if events {
            h.insert(0, "EVENT".to_string());
        }
        rows.push(h);
    }
    for (ev, it) in items {
        let mut r = print::row(kind, it, opts, now);
        let i = at(&r);
        for (k, l) in a.label_columns.iter().enumerate() {
            let v = it
                .pointer("/metadata/labels")
                .and_then(|m| m.get(l))
                .and_then(Value::as_str)
                .unwrap_or("");
            r.insert(i + k, v.to_string());
        }
        if events {
            r.insert(0, ev.map(|e| e.as_str()).unwrap_or("ADDED").to_string());
        }
        rows.push(r);
    }
    rows
}

fn sort(items: &mut [Value], by: Option<&(String, Template)>) -> Result<()> {
    let Some((text, t)) = by else { return Ok(()) };
    if !items.is_empty() && items.iter().all(|it| t.values(it).is_empty()) {
        bail!("couldn't find any field with path {text:?} in the list of objects");
    }
    items.sort_by(|x, y| sort_order(t.values(x).first().copied(), t.values(y).first().copied()));
    Ok(())
}

pub async fn get(ctx: &Ctx, a: GetArgs) -> Result<()> {
    let (kinds, names): (Vec<String>, Vec<String>) = match a.kind.split_once('/') {
        Some((k, n)) => {
            let mut names = vec![n.to_string()];
            names.extend(a.names.iter().cloned());
            (vec![k.to_string()], names)
        }
        None => (
            a.kind
                .split(',')
                .filter(|k| !k.is_empty())
                .flat_map(|k| {
                    // kubectl's "all": the workload kinds and services.
                    if k == "all" {
                        ALL.iter().map(|x| x.to_string()).collect::<Vec<_>>()
                    } else {
                        vec![k.to_string()]
                    }
                })
                .collect(),
            a.names.clone(),
        ),
    };
    let infos = kinds
        .iter()
        .map(|k| resolve(k))
        .collect::<Result<Vec<_>>>()?;
    let sort_by = match &a.sort_by {
        Some(s) => Some((s.clone(), Template::parse_relaxed(s)?)),
        None => None,
    };
    let watching = a.watch || a.watch_only;
    if watching && infos.len() != 1 {
        bail!("you may only specify a single resource type with --watch");
    }
    if a.output_watch_events && !watching {
        bail!("--output-watch-events needs --watch or --watch-only");
    }
    if a.watch_only || (a.watch && a.output_watch_events) {
        return watch(ctx, &a, infos[0], &names).await;
    }
    let show_kind = infos.len() > 1;
    let mut errors = Vec::new();
    let mut collected: Vec<Value> = Vec::new();
    let mut printed_any = false;
    let mut last_rv = String::new();
    let mut column_items: Vec<Value> = Vec::new();
    for info in &infos {
        let ns = if a.all_namespaces { "" } else { ctx.ns(info) };
        let mut items = Vec::new();
        if names.is_empty() {
            let l = ctx
                .client
                .list_all(info.plural, ns, &list_params(&a, a.chunk_size.max(0)))
                .await
                .map_err(api)?;
            last_rv = l.resource_version;
            items = l.items;
        } else {
            for n in &names {
                match ctx.client.get(info.plural, ctx.ns(info), n).await {
                    Ok(v) => items.push(v),
                    Err(e) => errors.push(api(e)),
                }
            }
        }
        sort(&mut items, sort_by.as_ref())?;
        match &a.output {
            None | Some(Output::Wide) => {
                if items.is_empty() {
                    continue;
                }
                if printed_any {
                    println!();
                }
                let opts = table_opts(&a, show_kind);
                let rows: Vec<_> = items.into_iter().map(|i| (None, i)).collect();
                print!(
                    "{}",
                    print::align(&table_rows(info.kind, &rows, &a, &opts, !a.no_headers))
                );
                printed_any = true;
            }
            Some(Output::Name) => {
                for it in &items {
                    println!("{}", print::name_line(&singular_qualified(info), it));
                }
                printed_any |= !items.is_empty();
            }
            Some(Output::CustomColumns(_)) => column_items.extend(items),
            Some(Output::Yaml | Output::Json | Output::JsonPath(_)) => collected.extend(items),
        }
    }
    if let Some(Output::CustomColumns(cols)) = &a.output {
        if !column_items.is_empty() {
            let mut rows = Vec::new();
            if !a.no_headers {
                rows.push(cols.iter().map(|(h, _)| h.clone()).collect());
            }
            rows.extend(column_rows(cols, &column_items));
            print!("{}", print::align(&rows));
            printed_any = true;
        }
    }
    if matches!(
        a.output,
        Some(Output::Yaml | Output::Json | Output::JsonPath(_))
    ) {
        let single = names.len() == 1 && infos.len() == 1 && collected.len() == 1;
        let v = if single {
            collected.remove(0)
        } else {
            print::list(&collected)
        };
        // A missing object is only an error (no empty List before it).
        if !collected.is_empty() || single || errors.is_empty() {
            match &a.output {
                Some(Output::Yaml) => print!("{}", print::to_yaml(&v)),
                Some(Output::JsonPath(t)) => print!("{}", t.render(&v)),
                _ => print!("{}", print::to_json(&v)),
            }
        }
        printed_any = true;
    }
    if !printed_any && errors.is_empty() && names.is_empty() && !a.watch {
        let info = infos[0];
        if a.all_namespaces || !info.namespaced {
            eprintln!("No resources found");
        } else {
            eprintln!("No resources found in {} namespace.", ctx.namespace);
        }
    }
    if a.watch && errors.is_empty() {
        return watch_from(ctx, &a, infos[0], &last_rv, false).await;
    }
    finish(errors)
}

fn list_params(a: &GetArgs, limit: i64) -> ListParams {
    ListParams {
        label_selector: a.selector.clone().unwrap_or_default(),
        field_selector: a.field_selector.clone().unwrap_or_default(),
        limit,
        ..Default::default()
    }
}

/// `--watch-only`, and `-w --output-watch-events`: the objects now (as
/// ADDED events, unless --watch-only), then every change.
async fn watch(
    ctx: &Ctx,
    a: &GetArgs,
    info: &'static ResourceInfo,
    names: &[String],
) -> Result<()> {
    let ns = if a.all_namespaces { "" } else { ctx.ns(info) };
    let mut p = list_params(a, if a.watch_only { 1 } else { 0 });
    if let Some(n) = names.first() {
        p.field_selector = format!("metadata.name={n}");
        p.label_selector.clear();
    }
    let l = ctx.client.list(info.plural, ns, &p).await.map_err(api)?;
    if names.len() == 1 && l.items.is_empty() && !a.watch_only {
        bail!("{} \"{}\" not found", info.plural, names[0]);
    }
    let mut header = !a.no_headers;
    if !a.watch_only {
        for it in l.items {
            print_event(a, info, None, it, header);
            header = false;
        }
    }
    watch_from(ctx, a, info, &l.resource_version, header).await
}

fn print_event(a: &GetArgs, info: &ResourceInfo, ev: Option<EventType>, obj: Value, header: bool) {
    let events = a.output_watch_events;
    let type_ = ev.map(|e| e.as_str()).unwrap_or("ADDED");
    match &a.output {
        Some(Output::Yaml) if events => {
            print!(
                "---\n{}",
                print::to_yaml(&json!({"type": type_, "object": obj}))
            )
        }
        Some(Output::Yaml) => print!("---\n{}", print::to_yaml(&obj)),
        Some(Output::Json) if events => {
            print!("{}", print::to_json(&json!({"type": type_, "object": obj})))
        }
        Some(Output::Json) => print!("{}", print::to_json(&obj)),
        Some(Output::Name) => {
            let n = print::name_line(&singular_qualified(info), &obj);
            if events {
                println!("{type_}\t{n}");
            } else {
                println!("{n}");
            }
        }
        Some(Output::JsonPath(t)) => print!("{}", t.render(&obj)),
        Some(Output::CustomColumns(cols)) => {
            let mut rows = Vec::new();
            if header {
                rows.push(cols.iter().map(|(h, _)| h.clone()).collect());
            }
            rows.extend(column_rows(cols, std::slice::from_ref(&obj)));
            print!("{}", print::align(&rows));
        }
        None | Some(Output::Wide) => {
            let opts = TableOpts {
                no_headers: !header,
                ..table_opts(a, false)
            };
            let rows = table_rows(info.kind, &[(ev, obj)], a, &opts, header);
            print!("{}", print::align(&rows));
        }
    }
    let _ = std::io::stdout().flush();
}

async fn watch_from(
    ctx: &Ctx,
    a: &GetArgs,
    info: &'static ResourceInfo,
    rv: &str,
    mut header: bool,
) -> Result<()> {
    let ns = if a.all_namespaces { "" } else { ctx.ns(info) };
    let mut label_selector = a.selector.clone().unwrap_or_default();
    let mut field_selector = a.field_selector.clone().unwrap_or_default();
    if let Some(n) = a
        .kind
        .split_once('/')
        .map(|(_, n)| n)
        .or(a.names.first().map(String::as_str))
    {
        field_selector = format!("metadata.name={n}");
        label_selector.clear();
    }
    let p = WatchParams {
        label_selector,
        field_selector,
        resource_version: rv.to_string(),
        bookmarks: false,
        bookmark_interval: Duration::ZERO,
    };
    let mut s = ctx.client.watch(info.plural, ns, &p).await.map_err(api)?;
    while let Some(ev) = s.next().await {
        let ev = ev.map_err(api)?;
        if ev.kind == EventType::Bookmark {
            continue;
        }
        print_event(a, info, Some(ev.kind), ev.object, header);
        header = false;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_formats_and_their_errors() {
        assert!(matches!(parse_output("wide"), Ok(Output::Wide)));
        assert!(matches!(
            parse_output("jsonpath={.a}"),
            Ok(Output::JsonPath(_))
        ));
        let e = parse_output("table").unwrap_err();
        assert!(e.starts_with("unable to match a printer suitable for the output format \"table\""));
        let e = parse_output("jsonpath={.a").unwrap_err();
        assert_eq!(e, "error parsing jsonpath {.a: unclosed action");
    }

    #[test]
    fn custom_columns() {
        let cols = parse_columns(
            r#"NAME:.metadata.name,IMAGES:.spec.containers[*].image,RUNNING:.items[?(@.a=="x,y")].b,X:.nope"#,
        )
        .unwrap();
        let heads: Vec<&str> = cols.iter().map(|(h, _)| h.as_str()).collect();
        assert_eq!(heads, ["NAME", "IMAGES", "RUNNING", "X"]);
        let item = json!({"metadata": {"name": "w"}, "spec": {"containers": [{"image": "a"}, {"image": "b"}]}});
        assert_eq!(
            column_rows(&cols, &[item]),
            [["w", "a,b", "<none>", "<none>"]]
        );
        assert_eq!(
            parse_columns("NAME").unwrap_err(),
            "unexpected custom-columns spec: NAME, expected <header>:<json-path-expr>"
        );
        assert!(parse_columns("A:.b,C:").is_err());
        assert!(parse_columns("A:{.b")
            .unwrap_err()
            .contains("unclosed action"));
        assert!(parse_columns("").is_err());
    }

    #[test]
    fn sorting_by_a_path() {
        let mut items = vec![
            json!({"n": "b", "r": 10}),
            json!({"n": "a", "r": 2}),
            json!({"n": "c"}),
        ];
        sort(
            &mut items,
            Some(&(".r".into(), Template::parse_relaxed(".r").unwrap())),
        )
        .unwrap();
        let names: Vec<&str> = items.iter().map(|i| i["n"].as_str().unwrap()).collect();
        assert_eq!(names, ["c", "a", "b"]);
        sort(
            &mut items,
            Some(&("{.n}".into(), Template::parse_relaxed("{.n}").unwrap())),
        )
        .unwrap();
        assert_eq!(items[0]["n"], "a");
        let e = sort(
            &mut items,
            Some(&(".zz".into(), Template::parse_relaxed(".zz").unwrap())),
        );
        assert_eq!(
            e.unwrap_err().to_string(),
            "couldn't find any field with path \".zz\" in the list of objects"
        );
    }
}
