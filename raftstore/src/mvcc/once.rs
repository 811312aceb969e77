//! Request ids applied at most once: the window of remembered ids.
//!
//! A command carrying a request id ([`Command::Once`]) that wrote something
//! is remembered with its result, so that a retry of it (after an ambiguous
//! failure) replays the result instead of applying twice. The window is
//! bounded both ways:
//!
//! - by time: an id is kept for [`OnceLimits::keep_ms`] of log time (longer
//!   than any retry: the masters' request deadline, 5 s and two election
//!   timeouts but at most 20 s, the client's 15 s), then forgotten;
//! - by size: at most [`OnceLimits::max_ids`] ids and
//!   [`OnceLimits::max_bytes`] of results. A new id that would need a
//!   younger one forgotten is refused with etcd's "too many requests"
//!   (nothing applied; the client retries later) rather than risking a
//!   double apply of the younger one's retry.
//!
//! Log time is the leader's clock, stamped on each log entry it writes
//! ([`Command::At`]), never moving back: every master forgets the same ids
//! at the same entry.

use rocksdb::WriteBatch;

use super::*;

/// The window's bounds.
#[derive(Debug, Clone, Copy)]
pub struct OnceLimits {
    pub keep_ms: u64,
    pub max_ids: i64,
    pub max_bytes: i64,
}

impl Default for OnceLimits {
    fn default() -> Self {
        OnceLimits {
            keep_ms: 60_000,
            max_ids: 2_000_000,
            max_bytes: 512 << 20,
        }
    }
}

/// Results larger than this are not kept for replay (a replay says so).
pub(super) const ONCE_MAX_RESULT: usize = 4 * 1024;
/// Ids forgotten per applied command at most (the rest at the next ones).
const EVICT_PER_APPLY: usize = 64;

/// The window's state, as committed (`Effects::once` carries a new one).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OnceWindow {
    /// Sequence number of the newest remembered id.
    pub seq: i64,
    /// Sequence number of the oldest one (`seq + 1` when empty).
    pub first: i64,
    /// Bytes of the remembered results.
    pub bytes: i64,
    /// Log time: the newest leader stamp applied, in ms.
    pub clock: u64,
}

const META_ONCE_SEQ: &[u8] = b"once_seq";
const META_ONCE_FIRST: &[u8] = b"once_first";
const META_ONCE_BYTES: &[u8] = b"once_bytes";
const META_ONCE_CLOCK: &[u8] = b"once_clock";
/// Results of remembered ids: `once/` ++ id.
const META_ONCE_PREFIX: &[u8] = b"once/";
/// The order they were remembered in: `oncelog/` ++ be(seq) → `once/` key
/// ++ be(log time) ++ be(bytes) (records written before log time: the key
/// alone).
const META_ONCE_LOG_PREFIX: &[u8] = b"oncelog/";

pub(super) fn once_key(id: (u64, u64)) -> Vec<u8> {
    let mut k = META_ONCE_PREFIX.to_vec();
    k.extend_from_slice(&id.0.to_be_bytes());
    k.extend_from_slice(&id.1.to_be_bytes());
    k
}

fn once_log_key(seq: i64) -> Vec<u8> {
    let mut k = META_ONCE_LOG_PREFIX.to_vec();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// One remembered id: its `once/` key, when and how much.
struct Record {
    key: Vec<u8>,
    at: u64,
    bytes: i64,
}

impl Record {
    fn encode(&self) -> Vec<u8> {
        let mut v = self.key.clone();
        v.extend_from_slice(&self.at.to_be_bytes());
        v.extend_from_slice(&self.bytes.to_be_bytes());
        v
    }

    fn decode(raw: &[u8]) -> Option<Record> {
        let klen = META_ONCE_PREFIX.len() + 16;
        if raw.len() == klen {
            return Some(Record {
                key: raw.to_vec(),
                at: 0,
                bytes: 0,
            });
        }
        if raw.len() != klen + 16 {
            return None;
        }
        Some(Record {
            key: raw[..klen].to_vec(),
            at: u64::from_be_bytes(raw[klen..klen + 8].try_into().ok()?),
            bytes: i64::from_be_bytes(raw[klen + 8..].try_into().ok()?),
        })
    }
}

impl KvStore {
    /// Read the window's state from the database (at open and after a
    /// snapshot install).
    pub(super) fn load_once_window(&self) -> Result<OnceWindow, StoreError> {
        let seq = meta_i64(&self.db, META_ONCE_SEQ)?;
        let first = match meta_i64(&self.db, META_ONCE_FIRST)? {
            // Written before the window had a start: the oldest record.
            0 => self.oldest_once_seq()?.unwrap_or(seq + 1),
            f => f,
        };
        Ok(OnceWindow {
            seq,
            first,
            bytes: meta_i64(&self.db, META_ONCE_BYTES)?,
            clock: meta_i64(&self.db, META_ONCE_CLOCK)? as u64,
        })
    }

    fn oldest_once_seq(&self) -> Result<Option<i64>, StoreError> {
        let meta = engine::cf(&self.db, CF_SM_META);
        let mut it = self.db.raw_iterator_cf(meta);
        it.seek(META_ONCE_LOG_PREFIX);
        let first = match it.key() {
            Some(k) if k.starts_with(META_ONCE_LOG_PREFIX) => k[META_ONCE_LOG_PREFIX.len()..]
                .try_into()
                .ok()
                .map(i64::from_be_bytes),
            _ => None,
        };
        it.status()?;
        Ok(first)
    }

    /// The window as this command sees it (earlier commands of the entry
    /// included).
    pub(super) fn once_window(&self, fx: &Effects) -> OnceWindow {
        fx.once
            .unwrap_or_else(|| *self.once.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Advance log time to a leader's stamp. (The window is written with
    /// the commands' write, once however many commands changed it.)
    pub(super) fn stamp(&self, at: u64, fx: &mut Effects) {
        let mut w = self.once_window(fx);
        if at > w.clock {
            w.clock = at;
            fx.once = Some(w);
        }
    }

    pub(super) fn write_window(&self, w: &OnceWindow, batch: &mut WriteBatch) {
        let meta = engine::cf(&self.db, CF_SM_META);
        batch.put_cf(meta, META_ONCE_SEQ, w.seq.to_be_bytes());
        batch.put_cf(meta, META_ONCE_FIRST, w.first.to_be_bytes());
        batch.put_cf(meta, META_ONCE_BYTES, w.bytes.to_be_bytes());
        batch.put_cf(meta, META_ONCE_CLOCK, (w.clock as i64).to_be_bytes());
    }

    /// Forget what the window no longer holds: ids older than the time
    /// bound, and then the oldest while a new one would not fit; their
    /// keys go to `evicted`, for the caller to delete in its write. Returns
    /// false when a new id does not fit without forgetting a young one.
    pub(super) fn make_room(
        &self,
        evicted: &mut Vec<Vec<u8>>,
        fx: &mut Effects,
    ) -> Result<bool, StoreError> {
        let limits = self.once_limits();
        let meta = engine::cf(&self.db, CF_SM_META);
        let mut w = self.once_window(fx);
        let before = w;
        let full = |w: &OnceWindow| {
            w.seq - w.first + 1 >= limits.max_ids
                || w.bytes + ONCE_MAX_RESULT as i64 > limits.max_bytes
        };
        // Records after this one are those of commands applied with this
        // one and not yet written (see `apply`): stamped at this entry's
        // log time, they are the youngest, never old enough to forget.
        let written = self.once.lock().unwrap_or_else(|p| p.into_inner()).seq;
        let mut fits = true;
        for _ in 0..EVICT_PER_APPLY {
            if w.first > w.seq {
                break;
            }
            if w.first > written {
                fits = !full(&w);
                break;
            }
            let log_key = once_log_key(w.first);
            let rec = match self.db.get_cf(meta, &log_key)? {
                Some(raw) => Record::decode(&raw)
                    .ok_or_else(|| StoreError::Corrupt("request id record".into()))?,
                None => {
                    w.first += 1;
                    continue;
                }
            };
            let old = rec.at.saturating_add(limits.keep_ms) < w.clock;
            if !old && !full(&w) {
                break;
            }
            if !old {
                fits = false;
                break;
            }
            evicted.push(rec.key.clone());
            evicted.push(log_key);
            fx.once_keys.push(rec.key);
            w.bytes = (w.bytes - rec.bytes).max(0);
            w.first += 1;
        }
        if fits && full(&w) {
            fits = false;
        }
        if w != before {
            fx.once = Some(w);
        }
        Ok(fits)
    }

    /// Remember a request id's result (the window has room: see
    /// [`KvStore::make_room`]).
    pub(super) fn remember(
        &self,
        id: (u64, u64),
        result: &CommandResult,
        batch: &mut WriteBatch,
        fx: &mut Effects,
    ) -> Result<(), StoreError> {
        let meta = engine::cf(&self.db, CF_SM_META);
        let key = once_key(id);
        let mut stored = ser(result)?;
        if stored.len() > ONCE_MAX_RESULT {
            stored = ser(&CommandResult {
                revision: result.revision,
                outcome: Outcome::Done(Err(KvError::InvalidArgument(
                    "the request was applied, but its result is too large to report again".into(),
                ))),
            })?;
        }
        let mut w = self.once_window(fx);
        w.seq += 1;
        w.first = w.first.max(1);
        let rec = Record {
            key: key.clone(),
            at: w.clock,
            bytes: stored.len() as i64,
        };
        w.bytes += rec.bytes;
        batch.put_cf(meta, &key, stored);
        batch.put_cf(meta, once_log_key(w.seq), rec.encode());
        fx.once_keys.push(key);
        fx.once = Some(w);
        Ok(())
    }

    /// The previous result of a remembered id.
    pub(super) fn remembered(&self, id: (u64, u64)) -> Result<Option<CommandResult>, StoreError> {
        let meta = engine::cf(&self.db, CF_SM_META);
        match self.db.get_cf(meta, once_key(id))? {
            Some(v) => Ok(Some(
                bincode::deserialize(&v).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            )),
            None => Ok(None),
        }
    }

    pub(super) fn once_limits(&self) -> OnceLimits {
        *self.once_limits.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Change the window's bounds (for tests of the bounds).
    #[cfg(test)]
    pub fn set_once_limits(&self, limits: OnceLimits) {
        *self.once_limits.lock().unwrap_or_else(|p| p.into_inner()) = limits;
    }
}
