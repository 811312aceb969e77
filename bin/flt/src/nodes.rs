//! `flt cordon`, `flt uncordon` and `flt drain`, as kubectl's: mark a node
//! unschedulable (or schedulable again), and drain it: cordon, then delete
//! the pods bound to it that a controller will recreate elsewhere, with
//! their grace periods, and wait until they are gone. Pods no controller
//! owns are refused unless `--force` (they would be lost for good).

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use clap::Args;
use flotilla_client::{Api, DeleteParams, ListParams, Reason};
use flotilla_objects::core::{Node, Pod};
use serde_json::json;

use crate::commands::Ctx;

#[derive(Args, Debug)]
pub struct DrainArgs {
    /// The node.
    pub node: String,
    /// Also delete pods that no controller owns (they are not recreated).
    #[arg(long)]
    pub force: bool,
    /// Seconds each pod gets to stop (default: its own grace period).
    #[arg(long)]
    pub grace_period: Option<i64>,
    /// Give up waiting for the pods after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
}

fn api_err(e: flotilla_client::ApiError) -> anyhow::Error {
    anyhow!(e.message)
}

/// Set spec.unschedulable; prints kubectl's line.
pub async fn cordon(ctx: &Ctx, node: &str, unschedulable: bool) -> Result<()> {
    let nodes = Api::<Node>::all(ctx.client.clone());
    let n = nodes.get(node).await.map_err(api_err)?;
    let verb = if unschedulable {
        "cordoned"
    } else {
        "uncordoned"
    };
    if n.spec.unschedulable == unschedulable {
        println!("node/{node} already {verb}");
        return Ok(());
    }
    nodes
        .patch(node, &json!({"spec": {"unschedulable": unschedulable}}))
        .await
        .map_err(api_err)?;
    println!("node/{node} {verb}");
    Ok(())
}

/// Whether a controller owns the pod (then it is recreated elsewhere).
fn controlled(p: &Pod) -> bool {
    p.metadata
        .owner_references
        .iter()
        .any(|o| o.controller == Some(true))
}

pub async fn drain(ctx: &Ctx, a: DrainArgs) -> Result<()> {
    cordon(ctx, &a.node, true).await?;
    let pods = Api::<Pod>::all(ctx.client.clone());
    let on_node = ListParams::default().fields(&format!("spec.nodeName={}", a.node));
    let list = pods.list_all(&on_node).await.map_err(api_err)?.items;
    let unmanaged: Vec<String> = list
        .iter()
        .filter(|p| !controlled(p))
        .map(|p| format!("{}/{}", p.metadata.namespace, p.metadata.name))
        .collect();
    if !unmanaged.is_empty() && !a.force {
        bail!(
            "cannot delete pods that declare no controller (use --force to override): {}",
            unmanaged.join(", ")
        );
    }
    for p in &list {
        let api = Api::<Pod>::namespaced(ctx.client.clone(), &p.metadata.namespace);
        let params = DeleteParams {
            grace_period_seconds: a.grace_period,
            precondition_uid: p.metadata.uid.clone(),
            ..Default::default()
        };
        match api.delete(&p.metadata.name, &params).await {
            Ok(_) => println!("evicting pod {}/{}", p.metadata.namespace, p.metadata.name),
            Err(e) if e.is(Reason::NotFound) || e.is(Reason::Conflict) => {}
            Err(e) => return Err(api_err(e)),
        }
    }
    let deadline = Instant::now() + Duration::from_secs(a.timeout);
    for p in &list {
        let api = Api::<Pod>::namespaced(ctx.client.clone(), &p.metadata.namespace);
        loop {
            match api.get(&p.metadata.name).await {
                Err(e) if e.is(Reason::NotFound) => break,
                Ok(cur) if cur.metadata.uid != p.metadata.uid => break,
                Ok(_) | Err(_) if Instant::now() >= deadline => bail!(
                    "timed out waiting for pod {}/{} to be deleted",
                    p.metadata.namespace,
                    p.metadata.name
                ),
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        println!("pod/{} evicted", p.metadata.name);
    }
    println!("node/{} drained", a.node);
    Ok(())
}
