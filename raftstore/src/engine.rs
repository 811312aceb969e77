//! The one RocksDB instance a master keeps: column families and key encodings.
//!
//! Raft's log and vote and the state machine share one database, so that one
//! WAL fsync makes both durable (see [`crate::log_store`]).

use std::path::Path;
use std::sync::Arc;

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, Options, ReadOptions,
    SliceTransform, DB,
};

/// Raft's own metadata: vote, last purged log id. Never part of a snapshot.
pub const CF_RAFT_META: &str = "raft_meta";
/// Raft log entries keyed by big-endian index.
pub const CF_RAFT_LOG: &str = "raft_log";
/// State-machine metadata: applied log id, membership, revision, compaction.
pub const CF_SM_META: &str = "sm_meta";
/// MVCC versions: `escaped(user key) ++ be(u64::MAX - revision)` → record.
pub const CF_KV: &str = "kv";
/// Event history: `be(revision) ++ be(sub)` → (event type, user key).
pub const CF_REV: &str = "rev";
/// Leases: `be(id)` → granted TTL.
pub const CF_LEASE: &str = "lease";
/// Keys attached to leases: `be(id) ++ user key` → empty.
pub const CF_LEASE_KEYS: &str = "lease_keys";

/// Column families that make up the state machine, in snapshot order.
pub const SM_CFS: [&str; 5] = [CF_SM_META, CF_KV, CF_REV, CF_LEASE, CF_LEASE_KEYS];
const ALL_CFS: [&str; 7] = [
    CF_RAFT_META,
    CF_RAFT_LOG,
    CF_SM_META,
    CF_KV,
    CF_REV,
    CF_LEASE,
    CF_LEASE_KEYS,
];

pub type Db = Arc<DB>;

/// How much write-ahead log RocksDB keeps at most before it flushes the
/// column families that pin its oldest file (see [`open_with_wal_limit`]).
pub const MAX_TOTAL_WAL_BYTES: u64 = 64 << 20;

pub fn open(path: &Path) -> Result<Db, rocksdb::Error> {
    open_with_wal_limit(path, MAX_TOTAL_WAL_BYTES)
}

/// [`open`] with a bound on the write-ahead log. All column families share
/// one WAL, and a file is deleted only once every family with a write in
/// it has flushed: a family written rarely (leases, Raft's vote) pinned
/// every file after its last write, and RocksDB's own bound is four times
/// all the families' write buffers (3.5 GiB here). Reached, the families
/// holding the oldest file are flushed.
pub fn open_with_wal_limit(path: &Path, max_wal_bytes: u64) -> Result<Db, rocksdb::Error> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_max_background_jobs(2);
    opts.set_bytes_per_sync(1 << 20);
    opts.set_keep_log_file_num(4);
    opts.set_max_total_wal_size(max_wal_bytes);
    let cache = Cache::new_hyper_clock_cache(BLOCK_CACHE_BYTES, 0);
    let cfs = ALL_CFS
        .iter()
        .map(|n| ColumnFamilyDescriptor::new(*n, cf_options(n, &cache)));
    Ok(Arc::new(DB::open_cf_descriptors(&opts, path, cfs)?))
}

/// The block cache the column families share (RocksDB's default is one of
/// this size per family). Most reads are of the `kv` family; a cache of
/// 128 MiB added about 80 MiB to each master's memory and no throughput on
/// a store of 400,000 keys (bench/RESULTS.md).
const BLOCK_CACHE_BYTES: usize = 32 << 20;

/// Bits per key of the bloom filters (about 1% false positives).
const BLOOM_BITS: f64 = 10.0;

/// Memtables a family may hold, the one written and those waiting for
/// their flush. Reaching the bound stops every write to the database, the
/// log's appends included. RocksDB's 2 was reached under `check perf l`:
/// the write-ahead log's bound switches the memtables of every family with
/// data in the oldest WAL file, the flushes run one family after another,
/// and a second switch came before the last families (the leases') had
/// flushed their first; every write stopped for about 30 ms. A memtable
/// waiting for its flush costs its own size, and only while it waits.
const MAX_WRITE_BUFFERS: i32 = 4;

fn cf_options(name: &str, cache: &Cache) -> Options {
    let mut o = Options::default();
    o.set_compression_type(rocksdb::DBCompressionType::Lz4);
    o.set_max_write_buffer_number(MAX_WRITE_BUFFERS);
    let mut t = BlockBasedOptions::default();
    t.set_block_cache(cache);
    match name {
        // Every write reads the newest version of its key (a seek to the
        // key's prefix) and compaction seeks each changed key: a filter on
        // the user key lets a seek skip the files and the memtable that do
        // not hold the key at all (a new key skips them all).
        CF_KV => {
            t.set_bloom_filter(BLOOM_BITS, false);
            t.set_whole_key_filtering(false);
            o.set_prefix_extractor(SliceTransform::create(
                "flotilla.user_key.v1",
                user_key_prefix,
                Some(has_user_key),
            ));
            o.set_memtable_prefix_bloom_ratio(0.05);
        }
        // Point reads: request ids (most writes look one up that is not
        // there), the window's records, metadata, leases.
        CF_SM_META | CF_LEASE => {
            t.set_bloom_filter(BLOOM_BITS, false);
            o.set_memtable_prefix_bloom_ratio(0.05);
            o.set_memtable_whole_key_filtering(true);
        }
        _ => {}
    }
    o.set_block_based_table_factory(&t);
    o
}

/// The prefix of a [`CF_KV`] key that names its user key: the escaped key
/// and its terminator (`0x00 0x01`, which an escaped byte never forms),
/// without the revision after it. Keys of one user key share it, and a
/// seek to [`encoded_key`] has the same prefix as the key's versions.
pub(crate) fn user_key_prefix(raw: &[u8]) -> &[u8] {
    match user_key_end(raw) {
        Some(end) => &raw[..end],
        None => raw,
    }
}

fn has_user_key(raw: &[u8]) -> bool {
    user_key_end(raw).is_some()
}

/// The length of the escaped user key and its terminator at the start of
/// `raw`. RocksDB asks for it several times per key it writes, seeks or
/// compacts (the prefix filters). It jumps from one zero byte to the next
/// (`memchr`) and over escaped zeros eight bytes at a time, instead of
/// looking at every byte: for a 200-byte key without zeros, the byte-wise
/// scan was a fifth of a master's CPU while it revoked a lease of 200,000
/// such keys; a key of 256 zeros (etcdctl check perf's) is one long run of
/// escapes (bench/RESULTS.md). Its answer is part of every filter on disk:
/// it must stay the byte-wise scan's for every input (see the test).
fn user_key_end(raw: &[u8]) -> Option<usize> {
    const ESCAPED_ZEROS: [u8; 8] = [0, 0xFF, 0, 0xFF, 0, 0xFF, 0, 0xFF];
    let mut i = 0;
    loop {
        while raw.get(i..i + 8) == Some(&ESCAPED_ZEROS[..]) {
            i += 8;
        }
        i += next_zero(raw.get(i..)?)?;
        match raw.get(i + 1)? {
            1 => return Some(i + 2),
            // An escaped 0x00 (`0x00 0xFF`).
            _ => i += 2,
        }
    }
}

/// Where the first zero byte of `bytes` is. Zeros come in runs in some
/// keys (etcdctl check perf's are all zeros): the first byte is looked at
/// before a search, which costs more than that when it is the zero.
fn next_zero(bytes: &[u8]) -> Option<usize> {
    match bytes.first()? {
        0 => Some(0),
        _ => memchr::memchr(0, bytes),
    }
}

/// Read options for a point lookup of one user key's versions in
/// [`CF_KV`] (a seek to [`mvcc_key`] or [`encoded_key`]): the iterator
/// uses the prefix filters and ends after the key's last version.
pub fn versions_of_one_key() -> ReadOptions {
    let mut o = ReadOptions::default();
    o.set_prefix_same_as_start(true);
    o
}

/// Read options for an iterator that crosses user keys. [`CF_KV`] has a
/// prefix extractor, and an iterator in RocksDB's default (prefix) mode
/// may skip keys of other prefixes: every scan of more than one key must
/// use these.
pub fn across_keys() -> ReadOptions {
    let mut o = ReadOptions::default();
    o.set_total_order_seek(true);
    o
}

/// Step an iterator over [`CF_KV`] past one more older version of the
/// user key it decided last (`skipped` of them so far): the next entry,
/// or, once more than 8 were stepped over one at a time, a seek past all
/// of that key's versions, whose encoded prefix `encoded` gives.
pub fn past_older_version(
    it: &mut rocksdb::DBRawIteratorWithThreadMode<'_, DB>,
    skipped: &mut u32,
    encoded: impl FnOnce() -> Vec<u8>,
) {
    *skipped += 1;
    if *skipped > 8 {
        let mut next = encoded();
        next.extend_from_slice(&[0xFF; 9]);
        it.seek(&next);
        *skipped = 0;
    } else {
        it.next();
    }
}

/// The handle of a column family every database opened by [`open`] has.
pub fn cf<'a>(db: &'a DB, name: &str) -> &'a ColumnFamily {
    db.cf_handle(name)
        .unwrap_or_else(|| unreachable!("column family {name} is created at open"))
}

/// Order-preserving, prefix-free encoding of a user key: 0x00 becomes
/// 0x00 0xFF and the key ends with 0x00 0x01.
pub fn encode_key(key: &[u8], out: &mut Vec<u8>) {
    // Sized once (with room for the revision that usually follows): a key
    // of many zero bytes, as etcdctl check perf's are, would otherwise grow
    // the vector as it goes.
    out.reserve(encoded_len(key) + 8);
    let mut rest = key;
    while let Some(i) = next_zero(rest) {
        out.extend_from_slice(&rest[..=i]);
        out.push(0xFF);
        rest = &rest[i + 1..];
    }
    out.extend_from_slice(rest);
    out.extend_from_slice(&[0, 1]);
}

/// The length of [`encode_key`]'s encoding of `key`.
pub fn encoded_len(key: &[u8]) -> usize {
    key.len() + memchr::memchr_iter(0, key).count() + 2
}

pub fn encoded_key(key: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    encode_key(key, &mut v);
    v
}

pub fn mvcc_key(key: &[u8], rev: i64) -> Vec<u8> {
    let mut v = Vec::new();
    encode_key(key, &mut v);
    v.extend_from_slice(&(u64::MAX - rev as u64).to_be_bytes());
    v
}

/// Splits an MVCC key into the user key and the revision.
pub fn decode_mvcc_key(raw: &[u8]) -> Option<(Vec<u8>, i64)> {
    let end = user_key_end(raw)?;
    let rev = mvcc_rev(&raw[end..])?;
    // Unescape what precedes the terminator: every 0x00 is `0x00 0xFF`.
    let escaped = &raw[..end - 2];
    let mut key = Vec::with_capacity(escaped.len());
    let mut rest = escaped;
    while let Some(z) = next_zero(rest) {
        key.extend_from_slice(&rest[..=z]);
        if rest.get(z + 1) != Some(&0xFF) {
            return None;
        }
        rest = &rest[z + 2..];
    }
    key.extend_from_slice(rest);
    Some((key, rev))
}

/// The revision of an MVCC key whose user key `target` names: `raw` is
/// that key's version when it is `target` (an [`mvcc_key`]) but for the
/// revision's 8 bytes. Cheaper than [`decode_mvcc_key`] for a point read,
/// which knows the key it looks for.
pub fn mvcc_rev_of(raw: &[u8], target: &[u8]) -> Option<i64> {
    let plen = target.len().checked_sub(8)?;
    if raw.len() != target.len() || raw[..plen] != target[..plen] {
        return None;
    }
    mvcc_rev(&raw[plen..])
}

fn mvcc_rev(tail: &[u8]) -> Option<i64> {
    Some((u64::MAX - u64::from_be_bytes(tail.try_into().ok()?)) as i64)
}

pub fn rev_key(rev: i64, sub: u32) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..8].copy_from_slice(&(rev as u64).to_be_bytes());
    k[8..].copy_from_slice(&sub.to_be_bytes());
    k
}

pub fn decode_rev_key(raw: &[u8]) -> Option<(i64, u32)> {
    if raw.len() != 12 {
        return None;
    }
    let rev = u64::from_be_bytes(raw[..8].try_into().ok()?) as i64;
    let sub = u32::from_be_bytes(raw[8..].try_into().ok()?);
    Some((rev, sub))
}

pub fn lease_key(id: i64) -> [u8; 8] {
    (id as u64).to_be_bytes()
}

pub fn lease_attach_key(id: i64, key: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + key.len());
    v.extend_from_slice(&lease_key(id));
    v.extend_from_slice(key);
    v
}

/// One version of a key as stored in [`CF_KV`]; the mod revision is in the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub tombstone: bool,
    pub create_revision: i64,
    pub version: i64,
    pub lease: i64,
    pub value: Vec<u8>,
}

impl Record {
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(25 + self.value.len());
        v.push(u8::from(self.tombstone));
        v.extend_from_slice(&self.create_revision.to_be_bytes());
        v.extend_from_slice(&self.version.to_be_bytes());
        v.extend_from_slice(&self.lease.to_be_bytes());
        v.extend_from_slice(&self.value);
        v
    }

    pub fn decode(raw: &[u8]) -> Option<Record> {
        let mut rec = Record::decode_meta(raw)?;
        rec.value = raw[25..].to_vec();
        Some(rec)
    }

    /// [`Record::decode`] without the value (left empty): for a read that
    /// does not return it.
    pub fn decode_meta(raw: &[u8]) -> Option<Record> {
        let head = raw.get(..25)?;
        let i = |r: &[u8]| i64::from_be_bytes(r.try_into().unwrap_or([0; 8]));
        Some(Record {
            tombstone: head[0] != 0,
            create_revision: i(&head[1..9]),
            version: i(&head[9..17]),
            lease: i(&head[17..25]),
            value: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::Strategy;

    #[test]
    fn mvcc_keys_sort_by_key_then_newest_first_and_round_trip() {
        let keys: Vec<&[u8]> = vec![b"a", b"a\0", b"a\0b", b"a\x01", b"ab", b"b", b"\0"];
        let mut enc: Vec<(Vec<u8>, &[u8], i64)> = Vec::new();
        for k in &keys {
            for rev in [1i64, 7, 300] {
                enc.push((mvcc_key(k, rev), k, rev));
            }
        }
        enc.sort_by(|a, b| a.0.cmp(&b.0));
        let order: Vec<(&[u8], i64)> = enc.iter().map(|(_, k, r)| (*k, *r)).collect();
        let mut expected: Vec<(&[u8], i64)> = Vec::new();
        let mut sorted = keys.clone();
        sorted.sort();
        for k in sorted {
            for rev in [300i64, 7, 1] {
                expected.push((k, rev));
            }
        }
        assert_eq!(order, expected);
        for (raw, k, rev) in &enc {
            assert_eq!(decode_mvcc_key(raw), Some((k.to_vec(), *rev)));
            // A seek target without the revision names the same user key.
            let bare = encoded_key(k);
            assert_eq!(encoded_len(k), bare.len());
            assert_eq!(user_key_prefix(raw), &bare[..]);
            assert_eq!(user_key_prefix(&bare), &bare[..]);
        }
        // Not keys this store writes: a bare 0x00, no terminator, a
        // revision of the wrong length.
        for bad in [
            &b"a\0b\0\x01\0\0\0\0\0\0\0\x01"[..],
            b"ab",
            b"a\0\x01\0\0\0",
        ] {
            assert_eq!(decode_mvcc_key(bad), None, "{bad:?}");
        }
    }

    /// The scan RocksDB's prefix filters were built with: what
    /// `user_key_end` answers for every input.
    fn user_key_end_bytewise(raw: &[u8]) -> Option<usize> {
        let mut i = 0;
        while i + 1 < raw.len() {
            if raw[i] == 0 {
                if raw[i + 1] == 1 {
                    return Some(i + 2);
                }
                i += 2;
            } else {
                i += 1;
            }
        }
        None
    }

    /// What the scan's inputs are made of: escaped zeros most often (in
    /// runs, as the scan takes them eight bytes at a time), terminators,
    /// lone zeros, ones and other bytes.
    const PIECES: [&[u8]; 8] = [
        &[0, 0xFF],
        &[0, 0xFF],
        &[0, 0xFF],
        &[0, 1],
        &[0],
        &[1],
        &[0xFF],
        b"a",
    ];

    proptest::proptest! {
        /// Filters on disk hold the prefixes of the byte-wise scan: the
        /// faster scan gives the same for any bytes (few distinct ones, so
        /// that zeros, ones and escapes meet often), and a point read's
        /// revision is the decoder's.
        #[test]
        fn the_user_key_scan_agrees_with_the_bytewise_one(
            raw in proptest::collection::vec(proptest::sample::select(PIECES.to_vec()), 0..30)
                .prop_map(|p| p.concat()),
            key in proptest::collection::vec(proptest::sample::select(vec![0u8, 0, 0, 1, 0xFF, b'a']), 0..40),
            rev in 1i64..i64::MAX,
        ) {
            proptest::prop_assert_eq!(user_key_end(&raw), user_key_end_bytewise(&raw));
            let mk = mvcc_key(&key, rev);
            proptest::prop_assert_eq!(user_key_end(&mk), user_key_end_bytewise(&mk));
            proptest::prop_assert_eq!(decode_mvcc_key(&mk), Some((key.clone(), rev)));
            proptest::prop_assert_eq!(encoded_len(&key) + 8, mk.len());
            proptest::prop_assert_eq!(mvcc_rev_of(&mk, &mvcc_key(&key, 1)), Some(rev));
            let mut other = key.clone();
            other.push(b'a');
            proptest::prop_assert_eq!(mvcc_rev_of(&mk, &mvcc_key(&other, 1)), None);
        }
    }

    /// Not a check: the nanoseconds per call of the scan and of the
    /// byte-wise one, for the keys of bench/RESULTS.md (`cargo test
    /// --release -p flotilla-raftstore scan_speed -- --ignored
    /// --nocapture`).
    #[test]
    #[ignore]
    fn scan_speed() {
        let mut zeros = vec![0u8; 256];
        zeros[250..].copy_from_slice(b"123456");
        let keys: [(&str, Vec<u8>); 4] = [
            ("check perf's: 250 zeros and 6 digits", zeros),
            ("200 digits", format!("{:0200}", 123456).into_bytes()),
            ("8 digits", b"00012345".to_vec()),
            ("an object's", b"/registry/pods/bench/pod-000123".to_vec()),
        ];
        type Scan = fn(&[u8]) -> Option<usize>;
        for (what, key) in keys {
            let raw = mvcc_key(&key, 42);
            for (name, scan) in [
                ("memchr and runs", user_key_end as Scan),
                ("byte-wise", user_key_end_bytewise),
            ] {
                let n = 1_000_000u32;
                let started = std::time::Instant::now();
                for _ in 0..n {
                    std::hint::black_box(scan(std::hint::black_box(&raw)));
                }
                let ns = started.elapsed().as_nanos() as f64 / f64::from(n);
                println!("{what:40} {name:16} {ns:6.1} ns");
            }
        }
    }

    /// The bytes of the write-ahead log files in `dir`.
    fn wal_bytes(dir: &Path) -> u64 {
        std::fs::read_dir(dir)
            .expect("read dir")
            .map(|e| e.expect("entry"))
            .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
            .map(|e| e.metadata().expect("metadata").len())
            .sum()
    }

    #[test]
    fn a_rarely_written_column_family_does_not_pin_the_write_ahead_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let limit = 4 << 20;
        let db = open_with_wal_limit(dir.path(), limit).expect("open");
        // One write to a family that sees no other (a lease granted once).
        db.put_cf(cf(&db, CF_LEASE), b"lease", b"ttl").expect("put");
        let value = vec![7u8; 256 << 10];
        for i in 0u32..160 {
            db.put_cf(cf(&db, CF_KV), i.to_be_bytes(), &value)
                .expect("put");
        }
        // 40 MiB written: the files before the last few megabytes go once
        // the families holding them are flushed (in the background).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while wal_bytes(dir.path()) > 4 * limit {
            assert!(
                std::time::Instant::now() < deadline,
                "{} bytes of write-ahead log kept with a {limit}-byte bound",
                wal_bytes(dir.path())
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert_eq!(
            db.get_cf(cf(&db, CF_LEASE), b"lease").expect("get"),
            Some(b"ttl".to_vec())
        );
    }
}
