//! `flt top nodes|pods`: CPU and memory as the nodes' agents measure them
//! (CPU a rate over the agent's last sampling window, memory the working
//! set), through the masters, printed with kubectl's columns and units.

use std::cmp::Reverse;
use std::collections::HashMap;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Args, Subcommand, ValueEnum};
use flotilla_client::ListParams;
use flotilla_proto::node::{NodeStats, StatsRequest};
use serde_json::Value;

use crate::commands::{name_of, Ctx};
use crate::streams::{masters, status_error};

#[derive(Subcommand, Debug)]
pub enum TopCommand {
    /// CPU and memory of nodes (their pods together, as the agents measure
    /// them), against their allocatable figures.
    #[command(visible_aliases = ["nodes", "no"])]
    Node(TopNodeArgs),
    /// CPU and memory of pods (or of their containers).
    #[command(visible_aliases = ["pods", "po"])]
    Pod(TopPodArgs),
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum SortBy {
    Cpu,
    Memory,
}

#[derive(Args, Debug)]
pub struct TopNodeArgs {
    /// One node (all when none).
    pub name: Option<String>,
    #[command(flatten)]
    pub list: ListArgs,
}

/// How the rows are picked and shown.
#[derive(Args, Debug)]
pub struct ListArgs {
    /// Label selector.
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Sort by CPU or memory, largest first.
    #[arg(long, value_enum)]
    pub sort_by: Option<SortBy>,
    /// Do not print the header.
    #[arg(long)]
    pub no_headers: bool,
}

#[derive(Args, Debug)]
pub struct TopPodArgs {
    /// One pod (all of the namespace when none).
    pub name: Option<String>,
    /// Every namespace's pods.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// One line per container.
    #[arg(long)]
    pub containers: bool,
    #[command(flatten)]
    pub list: ListArgs,
}

/// kubectl's CPU: millicores, "12m".
pub fn cpu(nano_cores: u64) -> String {
    format!("{}m", nano_cores / 1_000_000)
}

/// kubectl's memory: mebibytes, "34Mi".
pub fn memory(bytes: u64) -> String {
    format!("{}Mi", bytes / (1024 * 1024))
}

/// Percent of `total` (0 when unknown), as kubectl rounds it.
fn percent(used: f64, total: Option<f64>) -> String {
    match total {
        Some(t) if t > 0.0 => format!("{}%", (used / t * 100.0) as i64),
        _ => "<unknown>".to_string(),
    }
}

/// The header (unless `no_headers`) and rows, aligned as kubectl's tables.
fn table(header: &[&str], rows: &[Vec<String>], no_headers: bool) -> String {
    let mut all: Vec<Vec<String>> = Vec::new();
    if !no_headers {
        all.push(header.iter().map(|s| s.to_string()).collect());
    }
    all.extend(rows.iter().cloned());
    crate::print::align(&all)
}

fn sort<T>(rows: &mut [T], by: Option<SortBy>, key: impl Fn(&T) -> (u64, u64)) {
    match by {
        Some(SortBy::Cpu) => rows.sort_by_key(|r| Reverse(key(r).0)),
        Some(SortBy::Memory) => rows.sort_by_key(|r| Reverse(key(r).1)),
        None => {}
    }
}

fn params(selector: &Option<String>) -> ListParams {
    let mut p = ListParams::default();
    if let Some(s) = selector {
        p = p.labels(s);
    }
    p
}

pub async fn top(servers: &[String], dial: Duration, ctx: &Ctx, cmd: TopCommand) -> Result<()> {
    match cmd {
        TopCommand::Node(a) => nodes(servers, dial, ctx, a).await,
        TopCommand::Pod(a) => pods(servers, dial, ctx, a).await,
    }
}

async fn nodes(servers: &[String], dial: Duration, ctx: &Ctx, a: TopNodeArgs) -> Result<()> {
    let nodes: Vec<Value> = match &a.name {
        Some(n) => vec![ctx
            .client
            .get("nodes", "", n)
            .await
            .map_err(|e| anyhow::anyhow!(e.message))?],
        None => {
            ctx.client
                .list_all("nodes", "", &params(&a.list.selector))
                .await
                .map_err(|e| anyhow::anyhow!(e.message))?
                .items
        }
    };
    let mut c = masters(servers, dial).await?;
    let mut rows: Vec<(Vec<String>, u64, u64)> = Vec::new();
    let mut failed = Vec::new();
    for n in &nodes {
        let name = name_of(n).to_string();
        let req = StatsRequest {
            node: name.clone(),
            namespace: String::new(),
        };
        let stats = match c.stats(req).await {
            Ok(r) => r.into_inner().nodes.into_iter().next(),
            Err(s) => {
                failed.push(s.message().to_string());
                continue;
            }
        };
        let Some(s) = stats else {
            failed.push(format!("node {name}: the agent sent no figures"));
            continue;
        };
        let alloc = |k: &str| {
            n.pointer(&format!("/status/allocatable/{k}"))
                .or_else(|| n.pointer(&format!("/status/capacity/{k}")))
                .and_then(Value::as_str)
                .and_then(flotilla_objects::parse_quantity)
        };
        let used_cores = s.cpu_nano_cores as f64 / 1e9;
        rows.push((
            vec![
                name,
                cpu(s.cpu_nano_cores),
                percent(used_cores, alloc("cpu")),
                memory(s.memory_working_set_bytes),
                percent(s.memory_working_set_bytes as f64, alloc("memory")),
            ],
            s.cpu_nano_cores,
            s.memory_working_set_bytes,
        ));
    }
    sort(&mut rows, a.list.sort_by, |r| (r.1, r.2));
    if !rows.is_empty() {
        let rows: Vec<Vec<String>> = rows.into_iter().map(|r| r.0).collect();
        print!(
            "{}",
            table(
                &["NAME", "CPU(cores)", "CPU%", "MEMORY(bytes)", "MEMORY%"],
                &rows,
                a.list.no_headers
            )
        );
    }
    if !failed.is_empty() {
        bail!("metrics not available: {}", failed.join("; "));
    }
    if nodes.is_empty() {
        bail!("metrics not available yet: no nodes");
    }
    Ok(())
}

async fn pods(servers: &[String], dial: Duration, ctx: &Ctx, a: TopPodArgs) -> Result<()> {
    let ns = if a.all_namespaces {
        String::new()
    } else {
        ctx.namespace.clone()
    };
    let listed: Vec<Value> = match &a.name {
        Some(n) => vec![ctx
            .client
            .get("pods", &ns, n)
            .await
            .map_err(|e| anyhow::anyhow!(e.message))?],
        None => {
            ctx.client
                .list_all("pods", &ns, &params(&a.list.selector))
                .await
                .map_err(|e| anyhow::anyhow!(e.message))?
                .items
        }
    };
    let mut c = masters(servers, dial).await?;
    let req = StatsRequest {
        node: String::new(),
        namespace: ns.clone(),
    };
    let nodes: Vec<NodeStats> = c.stats(req).await.map_err(status_error)?.into_inner().nodes;
    let mut figures = HashMap::new();
    for n in nodes {
        for p in n.pods {
            figures.insert((p.namespace.clone(), p.name.clone()), p);
        }
    }
    let mut rows: Vec<(Vec<String>, u64, u64)> = Vec::new();
    let mut missing = Vec::new();
    for p in &listed {
        let pns = p
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let name = name_of(p).to_string();
        let Some(f) = figures.get(&(pns.clone(), name.clone())) else {
            missing.push(format!("{pns}/{name}"));
            continue;
        };
        let lead = |mut r: Vec<String>| {
            if a.all_namespaces {
                r.insert(0, pns.clone());
            }
            r
        };
        if a.containers {
            for cs in &f.containers {
                rows.push((
                    lead(vec![
                        name.clone(),
                        cs.name.clone(),
                        cpu(cs.cpu_nano_cores),
                        memory(cs.memory_working_set_bytes),
                    ]),
                    cs.cpu_nano_cores,
                    cs.memory_working_set_bytes,
                ));
            }
        } else {
            let cpu_sum: u64 = f.containers.iter().map(|c| c.cpu_nano_cores).sum();
            let mem_sum: u64 = f
                .containers
                .iter()
                .map(|c| c.memory_working_set_bytes)
                .sum();
            rows.push((
                lead(vec![name.clone(), cpu(cpu_sum), memory(mem_sum)]),
                cpu_sum,
                mem_sum,
            ));
        }
    }
    sort(&mut rows, a.list.sort_by, |r| (r.1, r.2));
    let mut header = if a.containers {
        vec!["POD", "NAME", "CPU(cores)", "MEMORY(bytes)"]
    } else {
        vec!["NAME", "CPU(cores)", "MEMORY(bytes)"]
    };
    if a.all_namespaces {
        header.insert(0, "NAMESPACE");
    }
    let printed = !rows.is_empty();
    if printed {
        let rows: Vec<Vec<String>> = rows.into_iter().map(|r| r.0).collect();
        print!("{}", table(&header, &rows, a.list.no_headers));
    }
    if a.name.is_some() && !missing.is_empty() {
        bail!("metrics not available for pod {}", missing.join(", "));
    }
    if listed.is_empty() {
        if a.all_namespaces {
            bail!("no resources found");
        }
        bail!("no resources found in {ns} namespace.");
    }
    if !printed {
        bail!(
            "metrics not available yet for pods {} (an agent measures a pod after its second reading)",
            missing.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_kubectls() {
        assert_eq!(cpu(12_345_678), "12m");
        assert_eq!(cpu(999_999), "0m");
        assert_eq!(memory(34 * 1024 * 1024 + 5), "34Mi");
        assert_eq!(percent(0.5, Some(2.0)), "25%");
        assert_eq!(percent(1.0, None), "<unknown>");
    }

    #[test]
    fn the_table_is_padded_like_kubectls() {
        let rows = vec![
            vec!["busy".to_string(), "998m".to_string(), "1Mi".to_string()],
            vec!["idle-one".to_string(), "0m".to_string(), "0Mi".to_string()],
        ];
        assert_eq!(
            table(&["NAME", "CPU(cores)", "MEMORY(bytes)"], &rows, false),
            "NAME       CPU(cores)   MEMORY(bytes)\nbusy       998m         1Mi\nidle-one   0m           0Mi\n"
        );
        assert_eq!(
            table(&["NAME", "CPU(cores)", "MEMORY(bytes)"], &rows, true)
                .lines()
                .count(),
            2
        );
    }
}
