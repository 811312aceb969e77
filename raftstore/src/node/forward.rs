//! A follower's writes to the leader, batched: the writes that queue while
//! the forwarder is busy travel together in one message on the follower's
//! stream to the leader ([`super::link`]), and the leader hands them to its
//! batcher together. Unbatched, each forwarded write cost a gRPC call on
//! both masters, and at 16 clients or more two of three writes reached the
//! leader that way (a client spreads its calls over every master). A
//! leader that serves no stream gets a `ProposeMany` call per batch.

use super::link::{LinkError, Links};
use super::*;

/// A write on its way to the leader, and who waits for its answer.
pub(super) struct Forward {
    /// The leader's peer address.
    pub(super) addr: String,
    pub(super) cmd: Command,
    /// The client's request id, which the leader's log lines about the
    /// write name.
    pub(super) request_id: Option<String>,
    pub(super) deadline: tokio::time::Instant,
    pub(super) tx: oneshot::Sender<Result<CommandResult>>,
}

/// Most writes in one forward.
const MAX_FORWARD: usize = 256;
/// Most bytes (roughly) in one forward.
const MAX_FORWARD_BYTES: usize = 4 << 20;
/// Forwards on their way and not yet answered, at most. Enough that a
/// write does not wait for a slot: a forward goes as soon as the forwarder
/// runs, carrying every write queued by then. With two slots, writes waited
/// a whole commit round for one and 16 clients lost a fifth of their
/// throughput; with 64, 256 and 1,000 clients gained 9-14% over unbatched
/// forwards and 16 clients lost nothing (bench/RESULTS.md).
const FORWARDS_IN_FLIGHT: usize = 64;

/// Take forwards from `rx`, batch those to the same leader, send them.
pub(super) async fn forward_loop(
    links: Links,
    rx: mpsc::UnboundedReceiver<Forward>,
    metrics: Arc<crate::metrics::StoreMetrics>,
) {
    let mut queue = Batches::new(rx, FORWARDS_IN_FLIGHT);
    loop {
        let Some((permit, first)) = queue.first().await else {
            return;
        };
        let mut batch = queue.fill(
            first,
            MAX_FORWARD,
            MAX_FORWARD_BYTES,
            |f| command_size(&f.cmd),
            |a, b| a.addr == b.addr,
        );
        // A caller that gave up (its leader was replaced) needs no answer.
        batch.retain(|f| !f.tx.is_closed());
        if batch.is_empty() {
            continue;
        }
        metrics.forward_commands.observe(batch.len() as f64);
        let (links, metrics) = (links.clone(), metrics.clone());
        tokio::spawn(async move {
            let _permit = permit;
            send(&links, &metrics, batch).await;
        });
    }
}

async fn send(links: &Links, metrics: &crate::metrics::StoreMetrics, batch: Vec<Forward>) {
    let Some(first) = batch.first() else {
        return;
    };
    let addr = first.addr.clone();
    let deadline = batch
        .iter()
        .map(|f| f.deadline)
        .min()
        .unwrap_or(first.deadline);
    let payload = match encode(&batch) {
        Ok(p) => p,
        Err(e) => return answer_all(batch, |_| Err(Error::Internal(e.clone()))),
    };
    let asked = tokio::time::timeout_at(deadline, links.propose(&addr, payload.data));
    let answer = match asked.await {
        Err(_) => return answer_all(batch, timed_out),
        Ok(Ok(data)) => data,
        Ok(Err(LinkError::Refused)) => {
            metrics.forwards_called.inc();
            return send_calls(links.channels(), batch, &addr, deadline).await;
        }
        Ok(Err(LinkError::Failed(why))) => {
            return answer_all(batch, |_| Err(Error::Unavailable(why.clone())))
        }
    };
    answer_results(
        batch,
        network::decode(&flotilla_proto::raft::Payload { data: answer }),
    );
}

/// Hand each write of `batch` its result from the leader's answer.
fn answer_results(
    batch: Vec<Forward>,
    results: std::result::Result<Vec<std::result::Result<CommandResult, String>>, String>,
) {
    match results {
        Ok(results) if results.len() == batch.len() => {
            for (f, r) in batch.into_iter().zip(results) {
                let _ = f.tx.send(r.map_err(Error::Unavailable));
            }
        }
        Ok(results) => {
            let n = results.len();
            answer_all(batch, |_| {
                Err(Error::Internal(format!(
                    "the leader answered {n} results for a different number of writes"
                )))
            })
        }
        Err(e) => answer_all(batch, |_| Err(Error::Internal(e.clone()))),
    }
}

/// The writes of `batch` as `ProposeMany`'s payload: the client's request
/// id (which the leader's log lines about the write name) and the command.
fn encode(batch: &[Forward]) -> std::result::Result<flotilla_proto::raft::Payload, String> {
    let items: Vec<(Option<String>, &Command)> = batch
        .iter()
        .map(|f| (f.request_id.clone(), &f.cmd))
        .collect();
    network::encode(&items)
}

/// `batch` to a leader that serves no stream: one `ProposeMany` call, or
/// one `Propose` call per write to a leader older still.
async fn send_calls(
    channels: &PeerChannels,
    mut batch: Vec<Forward>,
    addr: &str,
    deadline: tokio::time::Instant,
) {
    if batch.len() == 1 {
        if let Some(f) = batch.pop() {
            send_one(channels, addr, f).await;
        }
        return;
    }
    let payload = match encode(&batch) {
        Ok(p) => p,
        Err(e) => return answer_all(batch, |_| Err(Error::Internal(e.clone()))),
    };
    let mut client = match channels.client(addr) {
        Ok(c) => c,
        Err(e) => return answer_all(batch, |_| Err(Error::Unavailable(e.clone()))),
    };
    let reply = tokio::time::timeout_at(deadline, client.propose_many(payload)).await;
    let results = match reply {
        Err(_) => return answer_all(batch, timed_out),
        // A leader of an older build: one call per write, as it knows.
        Ok(Err(s)) if s.code() == tonic::Code::Unimplemented => {
            return send_each(channels, addr, batch).await;
        }
        Ok(Err(s)) => {
            return answer_all(batch, |_| Err(Error::Unavailable(s.message().to_string())));
        }
        Ok(Ok(r)) => network::decode(&r.into_inner()),
    };
    answer_results(batch, results);
}

/// The answer for a forward whose call ran out of time: a timeout for the
/// writes whose own deadline passed, a retryable error for the others (an
/// earlier deadline in their batch ended the call).
fn timed_out(f: &Forward) -> Result<CommandResult> {
    if tokio::time::Instant::now() >= f.deadline {
        Err(Error::Timeout)
    } else {
        Err(Error::Unavailable(
            "a forward to the leader timed out".into(),
        ))
    }
}

fn answer_all(batch: Vec<Forward>, answer: impl Fn(&Forward) -> Result<CommandResult>) {
    for f in batch {
        let r = answer(&f);
        let _ = f.tx.send(r);
    }
}

async fn send_each(channels: &PeerChannels, addr: &str, batch: Vec<Forward>) {
    futures::future::join_all(batch.into_iter().map(|f| send_one(channels, addr, f))).await;
}

/// One write, one `Propose` call.
async fn send_one(channels: &PeerChannels, addr: &str, f: Forward) {
    let r = propose_one(channels, addr, &f).await;
    let _ = f.tx.send(r);
}

async fn propose_one(channels: &PeerChannels, addr: &str, f: &Forward) -> Result<CommandResult> {
    let mut client = channels.client(addr).map_err(Error::Unavailable)?;
    let payload = network::encode(&f.cmd).map_err(Error::Internal)?;
    let mut req = tonic::Request::new(payload);
    // The leader's lines about this write name the client's request.
    if let Some(v) = f
        .request_id
        .as_deref()
        .and_then(|id| tonic::metadata::MetadataValue::try_from(id).ok())
    {
        req.metadata_mut()
            .insert(flotilla_telemetry::request::HEADER, v);
    }
    match tokio::time::timeout_at(f.deadline, client.propose(req)).await {
        Err(_) => Err(Error::Timeout),
        Ok(Ok(p)) => network::decode::<CommandResult>(&p.into_inner()).map_err(Error::Internal),
        // The leader moved or is unreachable: the caller retries.
        Ok(Err(s)) => Err(Error::Unavailable(s.message().to_string())),
    }
}
