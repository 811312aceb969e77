//! `flt port-forward` on the node: one TCP connection to 127.0.0.1:PORT
//! inside the pod's network namespace (the socket is made on a thread that
//! entered it, then handed to tokio), copied both ways with the caller's
//! gRPC stream, half-closes included.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use flotilla_objects::core::Pod;
use flotilla_proto::node::PortForwardFrame;
use futures::Stream;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic::{Status, Streaming};

use crate::pods::{runtime, Ctx};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const CHUNK: usize = 32 * 1024;

pub type FrameStream = Pin<Box<dyn Stream<Item = Result<PortForwardFrame, Status>> + Send>>;

/// The network namespace of a running pod (the node's own with hostNetwork).
async fn pod_netns(ctx: &Ctx, pod: &Pod) -> Result<Option<std::path::PathBuf>, Status> {
    if pod.spec.host_network {
        return Ok(ctx.cfg.netns.clone());
    }
    let obs = runtime::observe(ctx, &pod.metadata.uid)
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let sandbox = obs.sandbox.ok_or_else(|| {
        Status::failed_precondition(format!("pod {} has no running sandbox", pod.metadata.name))
    })?;
    let ns = ctx
        .cri
        .clone()
        .pod_netns(&sandbox.id)
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?
        .ok_or_else(|| {
            Status::internal(format!(
                "the runtime does not tell the network namespace of pod {}",
                pod.metadata.name
            ))
        })?;
    Ok(Some(ns))
}

/// Connect to `first.port` of `pod` and copy both ways until both sides
/// are done.
pub async fn forward(
    ctx: Arc<Ctx>,
    pod: Arc<Pod>,
    first: PortForwardFrame,
    mut inbound: Streaming<PortForwardFrame>,
) -> Result<FrameStream, Status> {
    let port = u16::try_from(first.port)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| Status::invalid_argument(format!("invalid port {}", first.port)))?;
    let netns = pod_netns(&ctx, &pod).await?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let conn = crate::netns::connect(netns.as_deref(), addr, CONNECT_TIMEOUT)
        .await
        .map_err(|e| {
            Status::unavailable(format!(
                "error forwarding port {port} to pod {}: {e}",
                pod.metadata.name
            ))
        })?;
    let (mut rd, mut wr) = conn.into_split();
    // Caller to pod; ends with the caller's stream (or its close_write).
    let upload = tokio::spawn(async move {
        let mut frame = Some(first);
        while let Some(f) = frame.take() {
            if !f.data.is_empty() && wr.write_all(&f.data).await.is_err() {
                return;
            }
            if f.close_write {
                break;
            }
            frame = match inbound.message().await {
                Ok(Some(f)) => Some(f),
                // The caller went away: no more to write.
                Ok(None) | Err(_) => None,
            };
        }
        let _ = wr.shutdown().await;
    });
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<PortForwardFrame, Status>>(8);
    tokio::spawn(async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let read = tokio::select! {
                r = rd.read(&mut buf) => r,
                // The caller went away.
                _ = tx.closed() => {
                    upload.abort();
                    return;
                }
            };
            match read {
                Ok(0) => break,
                Ok(n) => {
                    let f = PortForwardFrame {
                        data: buf[..n].to_vec(),
                        ..Default::default()
                    };
                    if tx.send(Ok(f)).await.is_err() {
                        upload.abort();
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx
                        .send(Err(Status::unavailable(format!(
                            "reading from the pod: {e}"
                        ))))
                        .await;
                    upload.abort();
                    return;
                }
            }
        }
        let close = PortForwardFrame {
            close_write: true,
            ..Default::default()
        };
        if tx.send(Ok(close)).await.is_ok() {
            // The call ends once the caller is done writing too.
            let _ = upload.await;
        } else {
            upload.abort();
        }
    });
    Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
}
