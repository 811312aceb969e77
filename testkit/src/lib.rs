//! Test and benchmark support shared by `bin/flotilla/tests`, `tests/jepsen`
//! and `bench`: the one place that says
//!
//! - which server a test or benchmark runs against ([`Target`]: Flotilla's
//!   masters or a real etcd, and `FLOTILLA_TEST_TARGET`);
//! - how a member of either is started ([`Member`]: the command line of a
//!   `flotilla master` or of an etcd member, founding or joining);
//! - which member is the leader and when a cluster is ready
//!   ([`leader_of`], [`wait_ready`], [`Statuses`]), from the etcd
//!   Maintenance Status API that both servers answer;
//! - where an object is stored ([`object_key`], [`kind_prefix`]), as the
//!   test-side copy of the control plane's layout;
//! - which ports a test's servers listen on ([`ports`]: below the kernel's
//!   ephemeral range, one test process each).
//!
//! It speaks to servers only over gRPC and starts them only as processes: it
//! must not depend on `flotilla-raftstore`, on RocksDB, on the `flotilla`
//! binary crate nor on the control plane (`flotilla-control`); its
//! dependencies are `flotilla-proto` (the etcd clients) and general crates.
//! The key layout is therefore a copy, and a test in
//! `bin/flotilla/tests/objects.rs` (which can see both) checks that it is
//! the control plane's.

mod cmdline;
mod keys;
mod leader;
pub mod ports;
mod target;

pub use cmdline::{etcd_joined_cluster, Boot, Member, ETCD_BIN, ETCD_MIN_ELECTION_HEARTBEATS};
pub use keys::{kind_prefix, object_key, KEY_PREFIX};
pub use leader::{
    connect, endpoint_uri, leader_of, member_status, poll_statuses, wait_ready, MemberStatus,
    Probe, Statuses,
};
pub use target::{Target, TARGET_ENV};
