//! The openraft type configuration and the commands that travel through the log.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::kv::{KvError, RequestOp, TxnRequest, TxnResponse};

/// A master as the Raft membership knows it: its name and where its peers reach it.
///
/// The client address is not part of the membership (it can change without a
/// membership change); masters register it in the replicated member directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterNode {
    pub name: String,
    pub peer_addr: String,
}

impl fmt::Display for MasterNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.peer_addr)
    }
}

openraft::declare_raft_types!(
    /// Flotilla's Raft types: u64 member ids, file-backed snapshots (so that a
    /// snapshot of any size streams from and to disk, never whole in memory).
    pub(crate) TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = u64,
        Node = MasterNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = crate::snapshot_data::SnapshotData,
        AsyncRuntime = openraft::TokioRuntime,
        Responder = openraft::impls::OneshotResponder<TypeConfig>,
);

pub type NodeId = u64;
pub(crate) type Raft = openraft::Raft<TypeConfig>;
pub(crate) type LogId = openraft::LogId<NodeId>;
pub(crate) type Vote = openraft::Vote<NodeId>;
pub(crate) type Entry = openraft::Entry<TypeConfig>;
pub(crate) type StoredMembership = openraft::StoredMembership<NodeId, MasterNode>;
pub(crate) type SnapshotMeta = openraft::SnapshotMeta<NodeId, MasterNode>;
pub(crate) type Snapshot = openraft::Snapshot<TypeConfig>;
pub(crate) type StorageError = openraft::StorageError<NodeId>;
pub(crate) type StorageIOError = openraft::StorageIOError<NodeId>;

/// A member id derived from the master's name, so that every master started
/// with the same `--initial-cluster` agrees on the ids without talking.
pub(crate) fn node_id_from_name(name: &str) -> NodeId {
    // FNV-1a, 64 bit; zero is reserved by etcd clients for "no member".
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    if h == 0 {
        1
    } else {
        h
    }
}

/// Where a master serves clients, kept in the replicated member directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberAddrs {
    pub name: String,
    pub peer_addr: String,
    pub client_addr: String,
}

/// A state-machine command: what a log entry asks the store to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Put, delete and transactions: one revision for all the writes it makes.
    Txn(TxnRequest),
    /// Forget history below `revision`.
    Compact {
        revision: i64,
    },
    LeaseGrant {
        id: i64,
        ttl: i64,
    },
    LeaseRevoke {
        id: i64,
    },
    /// Record where a master serves clients.
    RegisterMember {
        id: NodeId,
        addrs: MemberAddrs,
    },
    /// Forget a removed master's addresses.
    UnregisterMember {
        id: NodeId,
    },
    /// Set once by the first leader: the cluster id reported in response headers.
    SetClusterId {
        id: u64,
    },
    /// A command with a unique id: applied once, however often it is
    /// proposed (a retry after an ambiguous failure replays the first result).
    Once {
        id: (NodeId, u64),
        cmd: Box<Command>,
    },
    /// Commands proposed concurrently, carried by one log entry (one fsync)
    /// and applied in order, each with its own revision.
    Batch(Vec<Command>),
    /// A command of a leader-only loop started in Raft term `term`: applied
    /// only if its log entry belongs to that term, that is if it was
    /// proposed by the leader of `term` while it led; refused
    /// ([`Outcome::Fenced`]) once that term is over (a deposed leader's late
    /// write, forwarded to or retried on the next leader). The check is the
    /// state machine's, on every master alike. (Last, so that the encoding
    /// of the variants before it does not change.)
    Fenced {
        term: u64,
        cmd: Box<Command>,
    },
    /// A log entry's command with the time (ms since the Unix epoch) the
    /// leader that wrote the entry stamped it with: the log's clock, by
    /// which remembered request ids are forgotten
    /// (the store's `OnceLimits`). Only ever around an entry's command.
    At {
        ms: u64,
        cmd: Box<Command>,
    },
}

/// What applying a [`Command`] produced, with the store revision after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandResult {
    pub revision: i64,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    Txn(Result<TxnResponse, KvError>),
    Done(Result<(), KvError>),
    LeaseGranted(Result<(i64, i64), KvError>),
    /// The results of a [`Command::Batch`], in order.
    Batch(Vec<CommandResult>),
    /// A [`Command::Once`] whose id was applied before: nothing was done
    /// now; this is the first application's result. (Last, so that the
    /// encoding of the variants before it does not change.)
    Replayed(Box<CommandResult>),
    /// A [`Command::Fenced`] whose term was over: nothing was done.
    Fenced {
        term: u64,
    },
}

impl Command {
    /// The command a wrapper (`Once`, `Fenced`, `At`) carries.
    pub fn wrapped(&self) -> Option<&Command> {
        match self {
            Command::Once { cmd, .. } | Command::Fenced { cmd, .. } | Command::At { cmd, .. } => {
                Some(cmd)
            }
            _ => None,
        }
    }

    /// The command inside every wrapper (itself if it is none).
    pub fn innermost(&self) -> &Command {
        self.wrapped().map_or(self, Command::innermost)
    }

    /// How many client commands this is: a batch counts its members.
    pub fn count(&self) -> usize {
        match self {
            Command::Batch(b) => b.iter().map(Command::count).sum(),
            c => c.wrapped().map_or(1, Command::count),
        }
    }

    /// Whether applying this may visit keys without bound: a range read,
    /// delete or comparison in a transaction, or a lease revoke (which
    /// deletes every key attached). Such an apply may take seconds.
    pub fn unbounded(&self) -> bool {
        fn op(o: &RequestOp) -> bool {
            match o {
                RequestOp::Range(r) => !r.range_end.is_empty(),
                RequestOp::DeleteRange(d) => !d.range_end.is_empty(),
                RequestOp::Put(_) => false,
                RequestOp::Txn(t) => txn(t),
            }
        }
        fn txn(t: &TxnRequest) -> bool {
            t.compare.iter().any(|c| !c.range_end.is_empty())
                || t.success.iter().chain(&t.failure).any(op)
        }
        match self {
            Command::Txn(t) => txn(t),
            Command::LeaseRevoke { .. } => true,
            Command::Batch(b) => b.iter().any(Command::unbounded),
            c => c.wrapped().is_some_and(Command::unbounded),
        }
    }
}

impl CommandResult {
    /// The result, and whether it is the replay of an earlier application.
    pub fn unwrap_replay(self) -> (CommandResult, bool) {
        match self.outcome {
            Outcome::Replayed(first) => (*first, true),
            _ => (self, false),
        }
    }
}

impl Default for CommandResult {
    fn default() -> Self {
        CommandResult {
            revision: 0,
            outcome: Outcome::Done(Ok(())),
        }
    }
}
