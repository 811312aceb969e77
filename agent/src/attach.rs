//! `flt attach` (and `flt run -i`) on the node: a running container's main
//! process, its output from now on and its standard input.
//!
//! - Output is what containerd copies from the process into the
//!   container's CRI log file: the agent follows that file (from its end,
//!   or from the start of the run for `flt run`), as `flt logs -f` does, so
//!   nothing the process writes is lost between two reads and several
//!   attached clients see the same output.
//! - Standard input, when the container has `stdin: true`, goes through
//!   CRI's Attach: containerd hands back a URL of its streaming server
//!   (127.0.0.1 in the node's network namespace), which the agent opens as
//!   a websocket (Kubernetes' `v4.channel.k8s.io`, stdin only: channel 0)
//!   and writes the client's input to. When the client's input ends (or the
//!   client goes), the agent closes the websocket; for a container with
//!   `stdinOnce: true` (as `flt run -i` makes it) containerd then closes
//!   the process's input, so that it reads end of file.
//!   Why not the FIFO containerd's CRI makes for the process's input
//!   (its path from containerd's tasks API)? Writing there works, but
//!   containerd keeps its own writing end open and closes it only when a
//!   CRI attach session of a stdinOnce container ends: the process would
//!   never read end of file.
//! - The last frame carries the container's exit code once it stopped.

use std::pin::Pin;
use std::sync::Arc;

use flotilla_objects::core::Pod;
use flotilla_proto::node::AttachFrame;
use futures::{SinkExt as _, Stream, StreamExt as _};
use k8s_cri::v1::ContainerState;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::Message;
use tonic::{Status, Streaming};

use crate::logs::{self, FOLLOW_POLL};
use crate::pods::runtime;
use crate::pods::spec::PodDirs;
use crate::pods::Ctx;

pub type FrameStream = Pin<Box<dyn Stream<Item = Result<AttachFrame, Status>> + Send>>;

fn output(stream: &str, text: &str) -> AttachFrame {
    let mut data = Vec::with_capacity(text.len() + 1);
    data.extend_from_slice(text.as_bytes());
    data.push(b'\n');
    AttachFrame {
        data,
        stream: if stream == "stderr" { 2 } else { 1 },
        ..Default::default()
    }
}

/// Attach to `container` of `pod` as `first` asks.
pub async fn attach(
    ctx: Arc<Ctx>,
    pod: Arc<Pod>,
    container: String,
    first: AttachFrame,
    mut inbound: Streaming<AttachFrame>,
) -> Result<FrameStream, Status> {
    let spec = pod
        .spec
        .containers
        .iter()
        .chain(&pod.spec.init_containers)
        .find(|c| c.name == container)
        .cloned()
        .unwrap_or_default();
    if first.stdin && !spec.stdin {
        return Err(Status::failed_precondition(format!(
            "container {container} of pod {} does not take standard input (its spec has no `stdin: true`)",
            pod.metadata.name
        )));
    }
    let obs = runtime::observe(&ctx, &pod.metadata.uid)
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let (id, attempt) = obs
        .latest(&container)
        .0
        .filter(|s| {
            s.state == ContainerState::ContainerRunning as i32
                || (first.from_start && s.state == ContainerState::ContainerExited as i32)
        })
        .map(|s| (s.id.clone(), s.metadata.as_ref().map_or(0, |m| m.attempt)))
        .ok_or_else(|| {
            Status::failed_precondition(format!(
                "container {container} of pod {} is not running",
                pod.metadata.name
            ))
        })?;
    let ws = if first.stdin {
        Some(open_stdin(&ctx, &id, spec.tty).await?)
    } else {
        None
    };
    let path = PodDirs::new(&ctx.cfg.pods_dir(), &pod).log_file(&container, attempt);
    let mut offset = if first.from_start {
        0
    } else {
        logs::read_tail(&path, Some(0))
            .await
            .map(|(_, end)| end)
            .unwrap_or(0)
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<AttachFrame, Status>>(16);

    // Standard input: the client's frames into the websocket's channel 0;
    // its end closes the websocket.
    tokio::spawn(async move {
        let Some(ws) = ws else {
            // Without -i: read the client's frames until it goes.
            while let Ok(Some(_)) = inbound.message().await {}
            return;
        };
        let (mut sink, mut from_server) = ws.split();
        // What the server sends (nothing on channels not asked for, an
        // error on channel 3) is read and dropped so that it never blocks.
        let drain =
            tokio::spawn(async move { while let Some(Ok(_)) = from_server.next().await {} });
        while let Ok(Some(f)) = inbound.message().await {
            if !f.data.is_empty() {
                let mut msg = Vec::with_capacity(f.data.len() + 1);
                msg.push(0u8);
                msg.extend_from_slice(&f.data);
                if sink.send(Message::binary(msg)).await.is_err() {
                    break;
                }
            }
            if f.close_write {
                break;
            }
        }
        let _ = sink.close().await;
        drain.abort();
    });

    // Output: the run's log from `offset`, until the container stops.
    let uid = pod.metadata.uid.clone();
    tokio::spawn(async move {
        let exit = loop {
            let status = runtime::observe(&ctx, &uid)
                .await
                .ok()
                .and_then(|o| o.latest(&container).0.cloned())
                .filter(|s| s.id == id);
            let running = status
                .as_ref()
                .is_some_and(|s| s.state == ContainerState::ContainerRunning as i32);
            let Ok((lines, next)) = logs::read_more(&path, offset).await else {
                break None;
            };
            offset = next;
            for l in &lines {
                if tx.send(Ok(output(&l.stream, &l.text))).await.is_err() {
                    return;
                }
            }
            if !running {
                break status.map(|s| s.exit_code);
            }
            tokio::select! {
                _ = tokio::time::sleep(FOLLOW_POLL) => {}
                _ = tx.closed() => return,
            }
        };
        let _ = tx
            .send(Ok(AttachFrame {
                exited: exit.is_some(),
                exit_code: exit.unwrap_or(0),
                ..Default::default()
            }))
            .await;
    });
    Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Open container `id`'s standard input: CRI Attach (stdin only), then a
/// websocket to the URL containerd's streaming server gave.
async fn open_stdin(ctx: &Ctx, id: &str, tty: bool) -> Result<Ws, Status> {
    let url = ctx
        .cri
        .clone()
        .attach_stdin(id, tty)
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| Status::internal(format!("CRI Attach gave an unexpected URL {url}")))?;
    let (host_port, path) = rest.split_once('/').unwrap_or((rest, ""));
    let addr: std::net::SocketAddr = host_port
        .parse()
        .map_err(|_| Status::internal(format!("CRI Attach gave an unexpected URL {url}")))?;
    let tcp = crate::netns::connect(
        ctx.cfg.netns.as_deref(),
        addr,
        std::time::Duration::from_secs(5),
    )
    .await
    .map_err(|e| {
        Status::unavailable(format!(
            "connecting to the runtime's streaming server at {addr}: {e}"
        ))
    })?;
    let mut ws_req = format!("ws://{host_port}/{path}")
        .into_client_request()
        .map_err(|e| Status::internal(e.to_string()))?;
    ws_req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        tokio_tungstenite::tungstenite::http::HeaderValue::from_static("v4.channel.k8s.io"),
    );
    let (ws, _) = tokio_tungstenite::client_async(ws_req, tcp)
        .await
        .map_err(|e| {
            Status::unavailable(format!(
                "attaching through the runtime's streaming server: {e}"
            ))
        })?;
    Ok(ws)
}
