//! Tests of the store's internals, which its public interface does not
//! reach: the state machine fed log entries one at a time (applying,
//! compaction, reads), the on-disk format, and the log and snapshot
//! storage. The tests through the public interface (a running master,
//! the etcd API) are in `tests/`.

mod apply;
mod carried;
mod common;
mod compaction;
mod filters;
mod format;
mod group;
mod index;
mod mvcc;
mod restart;
mod storage;
