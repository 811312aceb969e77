//! `flt attach` and `flt run -i --rm`: a container's main process through
//! the masters and its node's agent: its output as it comes, and (with -i)
//! flt's standard input as it comes, its end closing the process's input
//! when the container has `stdinOnce: true` (as `flt run -i` makes it).
//!
//! flt's own terminal is not put in raw mode: input goes line by line as
//! the terminal hands it over, which suits shells and pipes alike.

use std::io::{Read as _, Write as _};
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use clap::Args;
use flotilla_client::{DeleteParams, Reason};
use flotilla_proto::node::AttachFrame;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::commands::Ctx;
use crate::streams::{masters, status_error, ExitStatus};

#[derive(Args, Debug)]
pub struct AttachArgs {
    /// The pod.
    pub pod: String,
    /// The container (default: the pod's only one).
    #[arg(short = 'c', long)]
    pub container: Option<String>,
    /// Pass flt's standard input to the container's process (its spec
    /// needs `stdin: true`).
    #[arg(short = 'i', long)]
    pub stdin: bool,
    /// The container has a terminal (`tty: true`); flt's own stays in
    /// line mode.
    #[arg(short = 't', long)]
    pub tty: bool,
}

/// What to attach to.
pub struct Target {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub stdin: bool,
    /// Output from the start of the container's run.
    pub from_start: bool,
}

/// Read flt's standard input on a thread of its own (a read pending when
/// the session ends must not hold flt), as attach frames.
fn read_stdin(tx: mpsc::Sender<AttachFrame>) {
    std::thread::spawn(move || {
        let mut input = std::io::stdin().lock();
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match input.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = tx.blocking_send(AttachFrame {
                        close_write: true,
                        ..Default::default()
                    });
                    return;
                }
                Ok(n) => {
                    let f = AttachFrame {
                        data: buf[..n].to_vec(),
                        ..Default::default()
                    };
                    if tx.blocking_send(f).is_err() {
                        return;
                    }
                }
            }
        }
    });
}

/// Attach until the container stops (its exit code) or the agent ends the
/// stream (None).
pub async fn session(servers: &[String], dial: Duration, t: Target) -> Result<Option<i32>> {
    let mut c = masters(servers, dial).await?;
    let (tx, rx) = mpsc::channel::<AttachFrame>(16);
    tx.send(AttachFrame {
        namespace: t.namespace,
        pod: t.pod,
        container: t.container,
        stdin: t.stdin,
        from_start: t.from_start,
        ..Default::default()
    })
    .await
    .map_err(|_| anyhow!("the attach stream closed"))?;
    if t.stdin {
        read_stdin(tx.clone());
    }
    // Kept until the end: the request stream stays open while output comes.
    let _keep = tx;
    let mut stream = c
        .attach(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(status_error)?
        .into_inner();
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    while let Some(f) = stream.message().await.map_err(status_error)? {
        if f.exited {
            return Ok(Some(f.exit_code));
        }
        if f.stream == 2 {
            err.write_all(&f.data)?;
            err.flush()?;
        } else {
            out.write_all(&f.data)?;
            out.flush()?;
        }
    }
    Ok(None)
}

fn exit(code: Option<i32>) -> Result<()> {
    match code {
        Some(0) | None => Ok(()),
        Some(c) => Err(ExitStatus(c).into()),
    }
}

pub async fn attach(servers: &[String], dial: Duration, ns: &str, a: AttachArgs) -> Result<()> {
    let t = Target {
        namespace: ns.to_string(),
        pod: a.pod,
        container: a.container.unwrap_or_default(),
        stdin: a.stdin,
        from_start: false,
    };
    exit(session(servers, dial, t).await?)
}

/// How long `flt run -i` waits for its pod to run.
const POD_RUNNING_TIMEOUT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(250);

/// The exit code of the pod's first container, once it terminated.
fn terminated(pod: &Value) -> Option<i32> {
    pod.pointer("/status/containerStatuses/0/state/terminated/exitCode")
        .and_then(Value::as_i64)
        .map(|c| c as i32)
}

/// Wait until pod `name` runs (or already ran to its end).
async fn wait_running(ctx: &Ctx, name: &str) -> Result<()> {
    let deadline = tokio::time::Instant::now() + POD_RUNNING_TIMEOUT;
    loop {
        let p = ctx
            .client
            .get("pods", &ctx.namespace, name)
            .await
            .map_err(|e| anyhow!(e.message))?;
        let phase = p
            .pointer("/status/phase")
            .and_then(Value::as_str)
            .unwrap_or("");
        let started = p
            .pointer("/status/containerStatuses/0/state/running")
            .is_some();
        if started || terminated(&p).is_some() || matches!(phase, "Succeeded" | "Failed") {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "timed out after {}s waiting for pod {name} to run (phase {phase:?})",
                POD_RUNNING_TIMEOUT.as_secs()
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Create the pod `flt run -i` made (its warnings on standard error).
pub async fn create(ctx: &Ctx, pod: &Value) -> Result<()> {
    let (_, warnings) = ctx
        .client
        .create("pods", &ctx.namespace, pod, false)
        .await
        .map_err(|e| anyhow!(e.message))?;
    for w in warnings {
        eprintln!("Warning: {w}");
    }
    Ok(())
}

/// Delete pod `name` and wait until it is gone.
async fn remove(ctx: &Ctx, name: &str) -> Result<()> {
    ctx.client
        .delete("pods", &ctx.namespace, name, &DeleteParams::default())
        .await
        .map_err(|e| anyhow!(e.message))?;
    let deadline = tokio::time::Instant::now() + POD_RUNNING_TIMEOUT;
    loop {
        match ctx.client.get("pods", &ctx.namespace, name).await {
            Err(e) if e.is(Reason::NotFound) => {
                eprintln!("pod \"{name}\" deleted");
                return Ok(());
            }
            Err(e) => return Err(anyhow!(e.message)),
            Ok(_) => {}
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("pod {name} is still there after being deleted");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `flt run NAME -i [--rm]` once the pod is created: wait for it to run,
/// attach with its output from the start, and (--rm) delete it when the
/// session ends or on Ctrl-C. The container's exit code becomes flt's.
pub async fn run_attached(
    servers: &[String],
    dial: Duration,
    ctx: &Ctx,
    name: &str,
    stdin: bool,
    rm: bool,
) -> Result<()> {
    let attached = async {
        wait_running(ctx, name).await?;
        let t = Target {
            namespace: ctx.namespace.clone(),
            pod: name.to_string(),
            container: String::new(),
            stdin,
            from_start: true,
        };
        let code = session(servers, dial, t).await?;
        match code {
            Some(c) => Ok(Some(c)),
            // The stream ended without a code: the pod's status may know.
            None => Ok(ctx
                .client
                .get("pods", &ctx.namespace, name)
                .await
                .ok()
                .as_ref()
                .and_then(terminated)),
        }
    };
    let outcome: Result<Option<i32>> = tokio::select! {
        r = attached => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    if rm {
        remove(ctx, name).await?;
    }
    exit(outcome?)
}
