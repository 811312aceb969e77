//! Flotilla's Jepsen-style chaos tests.
//!
//! - [`netns`]: a sealed test network (a bridge in a "switch" namespace, one
//!   namespace per master and one for the clients) that is always removed.
//! - [`cluster`]: real `flotilla master` (or etcd) processes in those
//!   namespaces: start, SIGKILL, SIGSTOP/SIGCONT, restart, find the leader.
//! - [`nemesis`]: faults scheduled from a seed (kills, pauses, partitions,
//!   membership changes, clocks, a follower killed during a snapshot
//!   transfer, compactions), each healed at the end; [`store_faults`]: the
//!   Raft positions, filler writes, snapshot files and compactions they use.
//! - [`lazyfs`]: the power-loss layer under a master's data folder.
//! - [`workload`]: concurrent clients speaking the etcd v3 API that record
//!   every operation in a [`history`].
//! - [`checker`]: linearizability (Wing & Gong), sets, watches and leases.
//! - [`replicas`]: the final comparison of every master's store.
//! - [`runner`]: one run inside the client namespace; [`orchestrate`]: the
//!   runs of one invocation, from the root namespace.

pub mod checker;
pub mod cluster;
pub mod history;
pub mod lazyfs;
pub mod nemesis;
pub mod netns;
pub mod objects;
pub mod orchestrate;
pub mod replicas;
pub mod runner;
pub mod store_faults;
pub mod workload;
