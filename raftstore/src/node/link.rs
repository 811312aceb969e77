//! A follower's stream to the leader: the writes it forwards and the read
//! indexes it asks for travel on one long-lived `LeaderStream` per leader,
//! numbered, each answered with its number as soon as it is ready. A call
//! each cost a new h2 stream with headers and trailers both ways, about
//! 0.22 ms of a follower's 0.9 ms put at one client (bench/RESULTS.md);
//! etcd's followers forward on the stream transport they replicate on.
//!
//! A leader that serves no stream (an older master) is asked with calls,
//! as before, for a while ([`CALLS_AFTER_REFUSAL`]); a stream that breaks,
//! stalls or idles is closed, and the next question opens another on the
//! next of the peer's connections. A question whose stream ended gets a
//! retryable error: every forwarded write carries a request id the state
//! machine applies once, and a read index changes nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flotilla_proto::raft::{self as pb, from_leader, to_leader};
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::network::PeerChannels;

/// What a follower asks its leader.
#[derive(Debug)]
enum Ask {
    /// Writes, encoded as `ProposeMany`'s payload.
    Propose(Vec<u8>),
    ReadIndex,
}

/// The leader's answer.
#[derive(Debug, PartialEq)]
enum Reply {
    /// Results, encoded as `ProposeMany`'s answer.
    Proposed(Vec<u8>),
    ReadIndex(u64),
}

/// Why a question got no answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(super) enum LinkError {
    /// The leader serves no stream: ask it with a call.
    #[error("the leader serves no stream")]
    Refused,
    /// Not answered: the stream ended or the leader failed it. Worth a retry.
    #[error("{0}")]
    Failed(String),
}

/// How long a leader that refused a stream is asked with calls before a
/// stream is tried again (it may have been upgraded).
const CALLS_AFTER_REFUSAL: Duration = Duration::from_secs(60);
/// A stream with no question waiting for this long is closed.
const IDLE: Duration = Duration::from_secs(60);
/// How long opening a stream may take.
const OPEN_LIMIT: Duration = Duration::from_secs(2);

/// A question and who waits for its answer.
struct Question {
    ask: Ask,
    tx: oneshot::Sender<Result<Reply, LinkError>>,
}

/// What is known of the stream to one leader.
enum Entry {
    /// A task serves the stream; questions go to it.
    Open {
        id: u64,
        tx: mpsc::UnboundedSender<Question>,
    },
    /// The leader refused a stream: calls until then.
    Refused { until: Instant },
}

/// The streams of this master to leaders, by peer address.
#[derive(Clone)]
pub(super) struct Links(Arc<Inner>);

struct Inner {
    entries: Mutex<HashMap<String, Entry>>,
    channels: PeerChannels,
    metrics: Arc<crate::metrics::StoreMetrics>,
    shutdown: CancellationToken,
    /// No answer for this long while a question waits: the stream is
    /// closed (a connection waiting on a lost packet holds everything on
    /// it), and the questions on it fail, to be asked again on a new one.
    stall: Duration,
    next_id: AtomicU64,
}

impl Links {
    pub(super) fn new(
        channels: PeerChannels,
        metrics: Arc<crate::metrics::StoreMetrics>,
        shutdown: CancellationToken,
        stall: Duration,
    ) -> Self {
        Links(Arc::new(Inner {
            entries: Mutex::default(),
            channels,
            metrics,
            shutdown,
            stall,
            next_id: AtomicU64::new(0),
        }))
    }

    /// The channels to peers, for the calls to a leader that refused a stream.
    pub(super) fn channels(&self) -> &PeerChannels {
        &self.0.channels
    }

    /// Forward writes (`ProposeMany`'s payload) to the leader at `addr`;
    /// its answer is `ProposeMany`'s, one result per write.
    pub(super) async fn propose(&self, addr: &str, writes: Vec<u8>) -> Result<Vec<u8>, LinkError> {
        match self.ask(addr, Ask::Propose(writes)).await? {
            Reply::Proposed(results) => Ok(results),
            other => Err(LinkError::Failed(format!(
                "the leader answered writes with {other:?}"
            ))),
        }
    }

    /// The read index of the leader at `addr`.
    pub(super) async fn read_index(&self, addr: &str) -> Result<u64, LinkError> {
        match self.ask(addr, Ask::ReadIndex).await? {
            Reply::ReadIndex(i) => Ok(i),
            other => Err(LinkError::Failed(format!(
                "the leader answered a read index with {other:?}"
            ))),
        }
    }

    /// Ask the leader at `addr` on its stream (opened first if need be).
    async fn ask(&self, addr: &str, ask: Ask) -> Result<Reply, LinkError> {
        let (tx, rx) = oneshot::channel();
        self.send(addr, Question { ask, tx })?;
        rx.await
            .unwrap_or_else(|_| Err(LinkError::Failed("the stream to the leader ended".into())))
    }

    fn send(&self, addr: &str, mut q: Question) -> Result<(), LinkError> {
        let mut entries = self.0.entries.lock().unwrap_or_else(|p| p.into_inner());
        match entries.get(addr) {
            Some(Entry::Refused { until }) if Instant::now() < *until => {
                return Err(LinkError::Refused)
            }
            Some(Entry::Open { tx, .. }) => match tx.send(q) {
                Ok(()) => return Ok(()),
                // Its task has ended: a new stream.
                Err(mpsc::error::SendError(back)) => q = back,
            },
            _ => {}
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let id = self.0.next_id.fetch_add(1, Ordering::Relaxed);
        tx.send(q)
            .map_err(|_| LinkError::Failed("the stream to the leader ended".into()))?;
        entries.insert(addr.to_string(), Entry::Open { id, tx });
        tokio::spawn(self.clone().run(addr.to_string(), id, rx));
        Ok(())
    }

    /// Serve one stream until it ends, then fail what is left of its
    /// questions and forget it.
    async fn run(self, addr: String, id: u64, mut rx: mpsc::UnboundedReceiver<Question>) {
        let why = self.serve(&addr, &mut rx).await;
        tracing::debug!(leader = %addr, reason = %why, "the stream to the leader ended");
        {
            let mut entries = self.0.entries.lock().unwrap_or_else(|p| p.into_inner());
            // Unless a newer stream took its place.
            if matches!(entries.get(&addr), Some(Entry::Open { id: i, .. }) if *i == id) {
                if why == LinkError::Refused {
                    let until = Instant::now() + CALLS_AFTER_REFUSAL;
                    entries.insert(addr.clone(), Entry::Refused { until });
                } else {
                    entries.remove(&addr);
                }
            }
        }
        rx.close();
        while let Ok(q) = rx.try_recv() {
            let _ = q.tx.send(Err(why.clone()));
        }
    }

    /// Open the stream and carry questions and answers until it ends;
    /// returns why it ended. The questions sent and not answered get that
    /// as their answer.
    async fn serve(&self, addr: &str, rx: &mut mpsc::UnboundedReceiver<Question>) -> LinkError {
        let inner = &self.0;
        let mut client = match inner.channels.client(addr) {
            Ok(c) => c,
            Err(e) => return LinkError::Failed(e),
        };
        inner.metrics.leader_stream_opens.inc();
        let (out, out_rx) = mpsc::unbounded_channel();
        let open =
            client.leader_stream(tokio_stream::wrappers::UnboundedReceiverStream::new(out_rx));
        let mut answers = match tokio::time::timeout(OPEN_LIMIT, open).await {
            Ok(Ok(r)) => r.into_inner(),
            Ok(Err(s)) if s.code() == tonic::Code::Unimplemented => {
                tracing::info!(leader = %addr, "the leader serves no LeaderStream; one call each");
                return LinkError::Refused;
            }
            Ok(Err(s)) => {
                return LinkError::Failed(format!(
                    "opening a stream to the leader: {}",
                    s.message()
                ))
            }
            Err(_) => return LinkError::Failed("opening a stream to the leader timed out".into()),
        };
        let mut waiting = Waiting::default();
        let mut tick = tokio::time::interval(inner.stall.min(IDLE) / 4);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let why = loop {
            tokio::select! {
                q = rx.recv() => {
                    let Some(q) = q else {
                        break LinkError::Failed("the master is stopping".into());
                    };
                    // Its caller gave up before it was sent.
                    if q.tx.is_closed() {
                        continue;
                    }
                    let seq = waiting.add(q.tx);
                    let ask = match q.ask {
                        Ask::Propose(data) => to_leader::Ask::Propose(data),
                        Ask::ReadIndex => to_leader::Ask::ReadIndex(pb::ReadIndexRequest {}),
                    };
                    inner.metrics.forwards_streamed.inc();
                    if out.send(pb::ToLeader { seq, ask: Some(ask) }).is_err() {
                        break LinkError::Failed("the stream to the leader is closed".into());
                    }
                }
                m = answers.next() => match m {
                    Some(Ok(m)) => waiting.answer(m),
                    Some(Err(s)) => break LinkError::Failed(format!("the stream to the leader failed: {}", s.message())),
                    None => break LinkError::Failed("the leader closed the stream".into()),
                },
                _ = tick.tick() => {
                    if waiting.stalled(inner.stall) {
                        break LinkError::Failed(format!(
                            "no answer from the leader for {} ms", inner.stall.as_millis()
                        ));
                    }
                    if waiting.idle(IDLE) {
                        break LinkError::Failed("the stream to the leader was idle".into());
                    }
                }
                _ = inner.shutdown.cancelled() => break LinkError::Failed("the master is stopping".into()),
            }
        };
        waiting.fail(&why);
        why
    }
}

/// The questions sent on one stream and not yet answered, by number.
struct Waiting {
    next: u64,
    by_seq: HashMap<u64, oneshot::Sender<Result<Reply, LinkError>>>,
    /// When the stream last answered, or since when a question waits if
    /// none waited before it.
    heard: Instant,
}

impl Default for Waiting {
    fn default() -> Self {
        Waiting {
            next: 0,
            by_seq: HashMap::new(),
            heard: Instant::now(),
        }
    }
}

impl Waiting {
    /// Number a question sent now.
    fn add(&mut self, tx: oneshot::Sender<Result<Reply, LinkError>>) -> u64 {
        if self.by_seq.is_empty() {
            self.heard = Instant::now();
        }
        self.next += 1;
        self.by_seq.insert(self.next, tx);
        self.next
    }

    /// Hand an answer to whoever waits for its number (an answer to no
    /// question waiting is dropped).
    fn answer(&mut self, m: pb::FromLeader) {
        self.heard = Instant::now();
        let Some(tx) = self.by_seq.remove(&m.seq) else {
            tracing::debug!(seq = m.seq, "an answer to no question waiting");
            return;
        };
        let reply = match m.answer {
            Some(from_leader::Answer::Proposed(data)) => Ok(Reply::Proposed(data)),
            Some(from_leader::Answer::ReadIndex(i)) => Ok(Reply::ReadIndex(i)),
            Some(from_leader::Answer::Failed(why)) => Err(LinkError::Failed(why)),
            None => Err(LinkError::Failed("the leader sent an empty answer".into())),
        };
        let _ = tx.send(reply);
    }

    /// A question waits and nothing was heard for `limit`.
    fn stalled(&self, limit: Duration) -> bool {
        !self.by_seq.is_empty() && self.heard.elapsed() >= limit
    }

    /// Nothing waits and nothing was heard for `limit`.
    fn idle(&self, limit: Duration) -> bool {
        self.by_seq.is_empty() && self.heard.elapsed() >= limit
    }

    fn fail(&mut self, why: &LinkError) {
        for (_, tx) in self.by_seq.drain() {
            let _ = tx.send(Err(why.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(seq: u64, a: from_leader::Answer) -> pb::FromLeader {
        pb::FromLeader {
            seq,
            answer: Some(a),
        }
    }

    #[tokio::test]
    async fn answers_go_to_their_questions_in_any_order() {
        let mut w = Waiting::default();
        let (t1, r1) = oneshot::channel();
        let (t2, r2) = oneshot::channel();
        let (t3, r3) = oneshot::channel();
        let (s1, s2, s3) = (w.add(t1), w.add(t2), w.add(t3));
        assert_eq!((s1, s2, s3), (1, 2, 3));
        w.answer(answer(s3, from_leader::Answer::ReadIndex(7)));
        w.answer(answer(s1, from_leader::Answer::Proposed(b"one".to_vec())));
        // A repeated or unknown number is not taken for another's answer.
        w.answer(answer(s1, from_leader::Answer::ReadIndex(99)));
        w.answer(answer(42, from_leader::Answer::ReadIndex(99)));
        assert_eq!(r3.await.ok(), Some(Ok(Reply::ReadIndex(7))));
        assert_eq!(r1.await.ok(), Some(Ok(Reply::Proposed(b"one".to_vec()))));
        w.answer(answer(
            s2,
            from_leader::Answer::Failed("not the leader".into()),
        ));
        assert_eq!(
            r2.await.ok(),
            Some(Err(LinkError::Failed("not the leader".into())))
        );
        assert!(!w.stalled(Duration::ZERO));
    }

    #[tokio::test]
    async fn a_stream_that_ends_fails_what_waits_and_stalls_only_with_a_question() {
        let mut w = Waiting::default();
        assert!(!w.stalled(Duration::ZERO), "nothing waits");
        assert!(w.idle(Duration::ZERO));
        let (t1, r1) = oneshot::channel();
        w.add(t1);
        assert!(w.stalled(Duration::ZERO));
        assert!(!w.stalled(Duration::from_secs(60)));
        assert!(!w.idle(Duration::ZERO));
        let why = LinkError::Failed("the leader closed the stream".into());
        w.fail(&why);
        assert_eq!(r1.await.ok(), Some(Err(why)));
        assert!(!w.stalled(Duration::ZERO));
    }
}
