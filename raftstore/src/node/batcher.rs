//! Group commit above Raft: proposals batched into log entries, and the
//! writes through openraft that a deposed leader abandons.

use super::*;

/// A command waiting to be put in the log, and who waits for its result.
pub(super) struct Proposal {
    pub(super) cmd: Command,
    pub(super) size: usize,
    pub(super) tx: oneshot::Sender<Result<CommandResult>>,
}

/// Most commands carried by one log entry.
const MAX_BATCH: usize = 512;
/// Most bytes (roughly) carried by one log entry.
const MAX_BATCH_BYTES: usize = 1 << 20;
/// Batches handed to Raft and not yet answered. One: the leader's append
/// no longer holds RaftCore through its fsync (see `crate::durable`), so a
/// second batch in flight overlaps nothing, and the commands that wait for
/// the one in flight make the next batch larger. Measured at 16 clients
/// (three masters on two cores, CPU-bound): 3,081 puts/s with one batch in
/// flight, 2,704 with two, 2,670 with four (bench/RESULTS.md).
const BATCHES_IN_FLIGHT: usize = 1;

pub(super) fn command_size(cmd: &Command) -> usize {
    match cmd {
        Command::Txn(t) => crate::kv::txn_size(t) + 16,
        Command::Batch(b) => b.iter().map(command_size).sum(),
        c => c.wrapped().map_or(64, |inner| command_size(inner) + 24),
    }
}

/// Group commit above Raft: openraft 0.9 appends one log entry at a time,
/// so commands that arrive while earlier ones are being replicated travel
/// together in one entry (one append, one fsync, one AppendEntries).
pub(super) async fn proposer_loop(
    raft: Raft,
    rx: mpsc::UnboundedReceiver<Proposal>,
    metrics: Arc<crate::metrics::StoreMetrics>,
    hold: Arc<super::transfer::Hold>,
) {
    let mut queue = Batches::new(rx, BATCHES_IN_FLIGHT);
    loop {
        let Some((permit, first)) = queue.first().await else {
            return;
        };
        // A leadership transfer appends nothing new until it ends.
        hold.released().await;
        let batch = queue.fill(first, MAX_BATCH, MAX_BATCH_BYTES, |p| p.size, |_, _| true);
        metrics.batch_commands.observe(batch.len() as f64);
        let raft = raft.clone();
        tokio::spawn(async move {
            let _permit = permit;
            write_batch(&raft, batch).await;
        });
    }
}

/// What waits in a channel, taken in batches, with at most `in_flight`
/// batches out at once: the first item waited for, then whatever is queued
/// by then, within a count and a size and only items that go with the
/// first; the item that does not fit starts the next batch.
pub(super) struct Batches<T> {
    rx: mpsc::UnboundedReceiver<T>,
    carry: Option<T>,
    slots: Arc<tokio::sync::Semaphore>,
}

impl<T> Batches<T> {
    pub(super) fn new(rx: mpsc::UnboundedReceiver<T>, in_flight: usize) -> Self {
        Batches {
            rx,
            carry: None,
            slots: Arc::new(tokio::sync::Semaphore::new(in_flight)),
        }
    }

    /// A free slot (held until the batch is answered) and the next batch's
    /// first item; `None` once the channel is closed.
    pub(super) async fn first(&mut self) -> Option<(tokio::sync::OwnedSemaphorePermit, T)> {
        let permit = self.slots.clone().acquire_owned().await.ok()?;
        let first = match self.carry.take() {
            Some(t) => t,
            None => self.rx.recv().await?,
        };
        Some((permit, first))
    }

    /// `first` and what is queued behind it: at most `max` items and
    /// (roughly) `max_bytes` by `size`, each of which `joins` the first.
    pub(super) fn fill(
        &mut self,
        first: T,
        max: usize,
        max_bytes: usize,
        size: impl Fn(&T) -> usize,
        joins: impl Fn(&T, &T) -> bool,
    ) -> Vec<T> {
        let mut bytes = size(&first);
        let mut batch = vec![first];
        while batch.len() < max {
            match self.rx.try_recv() {
                Ok(t) if bytes + size(&t) > max_bytes || !joins(&batch[0], &t) => {
                    self.carry = Some(t);
                    break;
                }
                Ok(t) => {
                    bytes += size(&t);
                    batch.push(t);
                }
                Err(_) => break,
            }
        }
        batch
    }
}

fn write_error(e: &RaftError<NodeId, ClientWriteError<NodeId, MasterNode>>) -> Error {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => Error::NoLeader,
        e => Error::Unavailable(e.to_string()),
    }
}

/// Resolves once this master no longer leads in `term`.
async fn deposed(raft: &Raft, term: u64) {
    let mut rx = raft.metrics();
    // Err: shutting down, which deposes too.
    let _ = rx
        .wait_for(|m| m.state != ServerState::Leader || m.current_term != term)
        .await
        .is_ok();
}

/// Write through openraft, unless this master stops leading first.
///
/// openraft 0.9 answers a write once its entry is applied, or refuses it
/// when the entry is truncated by a newer leader; but when a deposed leader
/// catches up by installing a snapshot, its uncommitted entries vanish
/// without an answer, and the write would wait forever. Two such writes
/// held both batch slots, so the master could never write again, even as
/// leader (found by the partition-leader nemesis). The outcome of an
/// abandoned write is unknown; the caller retries it under the same
/// request id, which the state machine applies at most once.
async fn client_write(raft: &Raft, cmd: Command) -> Result<CommandResult> {
    let term = {
        let m = raft.metrics();
        let m = m.borrow();
        (m.state == ServerState::Leader).then_some(m.current_term)
    };
    // The leader's clock on the entry: the log's time (see `Command::At`).
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let cmd = Command::At {
        ms,
        cmd: Box::new(cmd),
    };
    let write = async {
        raft.client_write(cmd)
            .await
            .map(|r| r.data)
            .map_err(|e| write_error(&e))
    };
    match term {
        None => write.await,
        Some(term) => tokio::select! {
            r = write => r,
            () = deposed(raft, term) => Err(Error::NoLeader),
        },
    }
}

async fn write_batch(raft: &Raft, mut batch: Vec<Proposal>) {
    if batch.len() == 1 {
        if let Some(p) = batch.pop() {
            let _ = p.tx.send(client_write(raft, p.cmd).await);
        }
        return;
    }
    let (cmds, txs): (Vec<Command>, Vec<_>) = batch.into_iter().map(|p| (p.cmd, p.tx)).unzip();
    match client_write(raft, Command::Batch(cmds)).await {
        Ok(resp) => match resp.outcome {
            Outcome::Batch(results) if results.len() == txs.len() => {
                for (tx, r) in txs.into_iter().zip(results) {
                    let _ = tx.send(Ok(r));
                }
            }
            other => {
                for tx in txs {
                    let _ = tx.send(Err(Error::Internal(format!(
                        "unexpected batch outcome {other:?}"
                    ))));
                }
            }
        },
        Err(e) => {
            for tx in txs {
                let _ = tx.send(Err(match &e {
                    Error::NoLeader => Error::NoLeader,
                    other => Error::Unavailable(other.to_string()),
                }));
            }
        }
    }
}
