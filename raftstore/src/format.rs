//! The version of the on-disk format: how log entries, the state machine's
//! records and snapshots are encoded.
//!
//! Log entries are bincode encodings of openraft entries of
//! [`crate::types::Command`]s, in which the order of enum variants is the
//! format: a release that changes it (or anything else encoded) raises
//! [`FORMAT_VERSION`] and keeps reading the older versions. Each database
//! records the version it was written in; a master refuses, with a clear
//! message, a database written in a version it does not know (a newer
//! release's), rather than misreading it. Snapshot files carry the version
//! in their magic (`FLTSNAP1`).

use std::path::Path;

use crate::engine::{self, Db, CF_RAFT_META};
use crate::mvcc::StoreError;

/// The format this release writes. It reads this one and every older one.
pub const FORMAT_VERSION: u32 = 1;

const META_FORMAT: &[u8] = b"format_version";

/// Check that this release can read `db`, and record the format in a new
/// database (or in one written before formats were recorded: version 1).
pub(crate) fn check(db: &Db) -> Result<u32, StoreError> {
    let meta = engine::cf(db, CF_RAFT_META);
    match db.get_cf(meta, META_FORMAT)? {
        Some(v) => {
            let found = v
                .as_slice()
                .try_into()
                .map(u32::from_be_bytes)
                .map_err(|_| StoreError::Corrupt("format version".into()))?;
            if found > FORMAT_VERSION || found == 0 {
                return Err(StoreError::UnknownFormat {
                    found,
                    known: FORMAT_VERSION,
                });
            }
            Ok(found)
        }
        None => {
            let mut wo = rocksdb::WriteOptions::default();
            wo.set_sync(true);
            db.put_cf_opt(meta, META_FORMAT, FORMAT_VERSION.to_be_bytes(), &wo)?;
            Ok(FORMAT_VERSION)
        }
    }
}

/// Record `version` as the format of `db`.
pub(crate) fn mark(db: &Db, version: u32) -> Result<(), StoreError> {
    db.put_cf(
        engine::cf(db, CF_RAFT_META),
        META_FORMAT,
        version.to_be_bytes(),
    )?;
    Ok(())
}

/// Record `version` as the format of the master data folder `data_dir`
/// (its database made if missing), as a release writing that version
/// would have: how a test makes a folder that a newer release wrote, to
/// see it refused. Not for a folder a running master has open.
pub fn mark_data_dir(data_dir: &Path, version: u32) -> Result<(), StoreError> {
    let db = engine::open(&data_dir.join("db"))?;
    mark(&db, version)
}
