//! `flotilla-lazyfs`: test tooling for Flotilla's chaos tests. A FUSE
//! filesystem that simulates power loss, in the spirit of Jepsen's LazyFS.
//!
//! It mirrors a backing folder at a mount point. The backing folder always
//! holds exactly what is durable: file data written through the mount stays
//! in the daemon's memory (a per-file [`overlay::Overlay`]) until that file
//! is fsynced, while metadata operations (create, mkdir, unlink, rename,
//! link, symlink, chmod, ...) go to the backing folder at once, as LazyFS
//! does. Killing the daemon (SIGKILL, or SIGUSR1 which first writes a
//! report) therefore loses exactly what a store did not fsync.
//!
//! This crate owns only that tool (the `flotilla-lazyfs` binary and this
//! library behind it); it depends on nothing else in the workspace. The
//! Jepsen harness (`tests/jepsen`) runs the binary. See `README.md` for the
//! command line and the signals.
//!
//! Modules: [`overlay`] (the pending extents of one file), [`fs`] (the
//! filesystem: node table, file data, names, and the FUSE operations),
//! [`sys`] (system-call wrappers), [`mountpoint`] (detaching dead mounts,
//! readiness), [`report`] (the power-loss report).

pub mod fs;
pub mod mountpoint;
pub mod overlay;
pub mod report;
pub mod sys;
