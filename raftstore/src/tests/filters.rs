//! Reads through RocksDB's filters: the MVCC family has a prefix
//! extractor (the escaped user key) and bloom filters on it, so a seek for
//! one key's versions may skip files and memtables, and an iterator over
//! many keys must not (see `engine::versions_of_one_key` and
//! `engine::across_keys`). These tests read keys whose versions are spread
//! over the memtable and several flushed files, and compare every answer
//! with a model of the history.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::common::*;
use crate::engine;
use crate::types::Command;

/// Keys chosen to meet the escaping at its edges: a key that is a prefix of
/// others, escaped zero bytes, a byte 0x01 after a zero (the terminator's
/// second byte), and keys that sort between those.
const KEYS: &[&str] = &[
    "a", "a\0", "a\0\u{1}", "a\0b", "a\u{1}", "ab", "abc", "b", "\0", "\0\0", "\u{1}", "k", "k\0",
    "zz",
];

/// One version of a key: its revision, and its value (`None`: deleted).
type Version = (i64, Option<Vec<u8>>);

/// Every version of every key, as the store should have it.
#[derive(Default)]
struct Model {
    /// key -> (revision, value or deleted), oldest first.
    versions: BTreeMap<Vec<u8>, Vec<Version>>,
}

impl Model {
    fn at(&self, key: &[u8], rev: i64) -> Option<&Vec<u8>> {
        self.versions
            .get(key)?
            .iter()
            .rev()
            .find(|(r, _)| *r <= rev)
            .and_then(|(_, v)| v.as_ref())
    }

    /// Live keys in `[key, end)` at `rev` (`end` empty: `key` alone; `end`
    /// `\0`: every key from `key`).
    fn range(&self, key: &[u8], end: &[u8], rev: i64) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.versions
            .keys()
            .filter(|k| match end {
                [] => k.as_slice() == key,
                [0] => k.as_slice() >= key,
                _ => k.as_slice() >= key && k.as_slice() < end,
            })
            .filter_map(|k| Some((k.clone(), self.at(k, rev)?.clone())))
            .collect()
    }
}

fn flush_kv(t: &T) {
    let db = t.store.db();
    db.flush_cf(engine::cf(db, engine::CF_KV)).expect("flush");
}

fn check(t: &T, m: &Model, rng: &mut StdRng, from: i64, to: i64) {
    for rev in [from, (from + to) / 2, to] {
        for key in KEYS {
            let got = t.get(key, rev).map(|kv| kv.value);
            assert_eq!(
                got.as_ref(),
                m.at(key.as_bytes(), rev),
                "get {key:?} at {rev}"
            );
        }
        let all = t.range("\0", "\0", rev).expect("range of every key");
        let got: Vec<_> = all.kvs.into_iter().map(|kv| (kv.key, kv.value)).collect();
        assert_eq!(got, m.range(b"\0", b"\0", rev), "every key at {rev}");
        for _ in 0..20 {
            let a = KEYS[rng.gen_range(0..KEYS.len())];
            let b = KEYS[rng.gen_range(0..KEYS.len())];
            let (key, end) = if a <= b { (a, b) } else { (b, a) };
            let r = t.range(key, end, rev).expect("range");
            let got: Vec<_> = r.kvs.into_iter().map(|kv| (kv.key, kv.value)).collect();
            assert_eq!(
                got,
                m.range(key.as_bytes(), end.as_bytes(), rev),
                "[{key:?}, {end:?}) at {rev}"
            );
        }
    }
}

#[test]
fn reads_of_keys_spread_over_flushed_files_and_the_memtable_match_the_history() {
    for seed in 0..4u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut t = T::new();
        let mut m = Model::default();
        let first = t.store.revision() + 1;
        // Five rounds, each flushed to its own file but the last: a key's
        // versions end up in several files, and many files lack a key.
        for round in 0..5 {
            for _ in 0..30 {
                let key = KEYS[rng.gen_range(0..KEYS.len())];
                let rev = if rng.gen_bool(0.2) {
                    let rev = t.del(key, "");
                    if m.at(key.as_bytes(), rev).is_none() {
                        continue; // nothing deleted, no new revision
                    }
                    m.versions
                        .entry(key.as_bytes().to_vec())
                        .or_default()
                        .push((rev, None));
                    rev
                } else {
                    let value = format!("{round}-{}", rng.gen::<u32>());
                    let rev = t.put(key, &value);
                    m.versions
                        .entry(key.as_bytes().to_vec())
                        .or_default()
                        .push((rev, Some(value.into_bytes())));
                    rev
                };
                assert_eq!(rev, t.store.revision(), "seed {seed}");
            }
            if round < 4 {
                flush_kv(&t);
            }
        }
        let last = t.store.revision();
        check(&t, &m, &mut rng, first, last);
        // Physical compaction seeks each changed key's versions the same
        // way: what it keeps still answers reads from its revision on.
        let upto = (first + last) / 2;
        let (r, _) = t.apply(Command::Compact { revision: upto });
        assert!(matches!(r.outcome, crate::types::Outcome::Done(Ok(()))));
        t.store.compact_physical(upto).expect("compaction");
        flush_kv(&t);
        check(&t, &m, &mut rng, upto, last);
        // And after a restart, from the files alone.
        let t = t.reopen();
        check(&t, &m, &mut rng, upto, last);
    }
}

#[test]
fn a_watch_history_over_flushed_files_names_every_event() {
    let mut t = T::new();
    let mut expected = Vec::new();
    for (i, key) in KEYS.iter().enumerate() {
        let rev = t.put(key, &format!("v{i}"));
        expected.push((rev, key.as_bytes().to_vec()));
        if i % 4 == 3 {
            flush_kv(&t);
        }
    }
    let (h, _) = t
        .store
        .history(1, b"\0", b"\0", 1000)
        .expect("history of every key");
    let got: Vec<_> = h
        .iter()
        .flat_map(|(rev, evs)| evs.iter().map(move |e| (*rev, e.kv.key.clone())))
        .collect();
    assert_eq!(got, expected);
}
