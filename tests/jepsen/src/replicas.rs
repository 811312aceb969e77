//! The final comparison of the replicas: once the faults are healed and
//! the load has stopped, every master must hold the same store. A
//! linearizable read through one master fixes a revision R; every master
//! then answers a serializable read of the whole keyspace at R (once it has
//! applied R), and its keys, values, versions and revisions must equal the
//! first one's. A key that a compaction brought back on one master, or a
//! follower that never caught up after a snapshot install was cut short,
//! shows here.

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use flotilla_proto::etcdserverpb::kv_client::KvClient;
use flotilla_proto::etcdserverpb::RangeRequest;
use flotilla_proto::mvccpb::KeyValue;
use flotilla_testkit::{connect, Probe};

/// Keys per page: filler values are 2 KiB, so a page stays near 1 MiB.
const PAGE: i64 = 500;

/// The whole keyspace of `addr` at `revision` (0: a linearizable read at
/// the current revision), in key order, and the revision read.
async fn read_all(addr: &str, revision: i64, serializable: bool) -> Result<(i64, Vec<KeyValue>)> {
    let chan = connect(addr, &Probe::new(Duration::from_secs(2))).await?;
    let mut kv = KvClient::new(chan).max_decoding_message_size(64 << 20);
    let mut out = Vec::new();
    let mut from = vec![0u8];
    let mut at = revision;
    loop {
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            kv.range(RangeRequest {
                key: from.clone(),
                range_end: vec![0],
                limit: PAGE,
                revision: at,
                serializable,
                ..Default::default()
            }),
        )
        .await
        .context("range timed out")?
        .map_err(|s| anyhow!("range at {at} on {addr}: {:?}: {}", s.code(), s.message()))?
        .into_inner();
        if at == 0 {
            at = r.header.as_ref().map(|h| h.revision).unwrap_or(0);
            if at == 0 {
                bail!("{addr} answered no revision");
            }
        }
        let more = r.more;
        if let Some(last) = r.kvs.last() {
            from = last.key.clone();
            from.push(0);
        }
        let empty = r.kvs.is_empty();
        out.extend(r.kvs);
        if !more || empty {
            return Ok((at, out));
        }
    }
}

/// What differs between `a` (the reference) and `b`, if anything: the first
/// key whose presence, value, version or revisions differ. Both are in key
/// order, so the first position where they differ holds it.
pub fn first_difference(a: &[KeyValue], b: &[KeyValue]) -> Option<String> {
    let show = |kv: &KeyValue| {
        format!(
            "value {:?} (mod {}, create {}, version {})",
            String::from_utf8_lossy(&kv.value[..kv.value.len().min(40)]),
            kv.mod_revision,
            kv.create_revision,
            kv.version
        )
    };
    let key = |kv: &KeyValue| String::from_utf8_lossy(&kv.key).into_owned();
    let k = (0..a.len().max(b.len())).find(|&k| a.get(k) != b.get(k))?;
    Some(match (a.get(k), b.get(k)) {
        (Some(x), Some(y)) if x.key == y.key => {
            format!("{}: {} here, {} there", key(x), show(x), show(y))
        }
        (Some(x), Some(y)) if y.key < x.key => {
            format!("{}: absent here, {} there", key(y), show(y))
        }
        (Some(x), _) => format!("{}: {} here, absent there", key(x), show(x)),
        (None, Some(y)) => format!("{}: absent here, {} there", key(y), show(y)),
        (None, None) => return None,
    })
}

/// What [`compare`] found.
#[derive(Debug, Default)]
pub struct Comparison {
    /// The revision every master was read at.
    pub revision: i64,
    /// Keys in the store at that revision.
    pub keys: usize,
    /// Masters whose store equals the reference's (the reference included).
    pub agreeing: usize,
    /// One line per master that differs or could not be read.
    pub differences: Vec<String>,
}

/// Compares every master in `nodes` ((name, client address)) with the
/// first that answers a linearizable read, each at that read's revision
/// (retried until it has applied it, within `timeout`).
pub async fn compare(nodes: &[(String, String)], timeout: Duration) -> Comparison {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut reference = None;
    while reference.is_none() {
        for (name, addr) in nodes {
            if let Ok((rev, kvs)) = read_all(addr, 0, false).await {
                reference = Some((name.clone(), rev, kvs));
                break;
            }
        }
        if reference.is_none() {
            if tokio::time::Instant::now() >= deadline {
                return Comparison {
                    differences: vec![
                        "no master answered a linearizable read of the keyspace".into()
                    ],
                    ..Default::default()
                };
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let Some((rname, rev, want)) = reference else {
        return Comparison::default();
    };
    let mut found = Vec::new();
    let mut agreeing = 1;
    for (name, addr) in nodes {
        if *name == rname {
            continue;
        }
        // Until it has applied `rev`, a master refuses a read at it.
        let got = loop {
            match read_all(addr, rev, true).await {
                Ok((_, kvs)) => break Ok(kvs),
                Err(e) if tokio::time::Instant::now() >= deadline => break Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        };
        match got {
            Ok(kvs) => {
                if let Some(d) = first_difference(&want, &kvs) {
                    found.push(format!(
                        "at revision {rev}, {rname} (here) and {name} (there) differ: {d} ({} and \
                         {} keys)",
                        want.len(),
                        kvs.len()
                    ));
                } else {
                    agreeing += 1;
                }
            }
            Err(e) => found.push(format!(
                "{name} could not be read at revision {rev} (applied on {rname}) within \
                 {timeout:?}: {e:#}"
            )),
        }
    }
    Comparison {
        revision: rev,
        keys: want.len(),
        agreeing,
        differences: found,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(k: &str, v: &str, m: i64) -> KeyValue {
        KeyValue {
            key: k.as_bytes().to_vec(),
            value: v.as_bytes().to_vec(),
            mod_revision: m,
            create_revision: m,
            version: 1,
            lease: 0,
        }
    }

    #[test]
    fn differences_name_the_first_key_that_differs() {
        let a = vec![kv("a", "1", 2), kv("b", "2", 3)];
        assert_eq!(first_difference(&a, &a), None);
        // A key back on one replica (deleted on the other).
        let back = vec![kv("a", "1", 2), kv("ab", "0", 1), kv("b", "2", 3)];
        let d = first_difference(&a, &back).unwrap();
        assert!(d.starts_with("ab: absent here"), "{d}");
        let d = first_difference(&back, &a).unwrap();
        assert!(d.starts_with("ab: value \"0\""), "{d}");
        // Same key, other value or revision.
        let other = vec![kv("a", "1", 2), kv("b", "9", 3)];
        assert!(first_difference(&a, &other)
            .unwrap()
            .starts_with("b: value \"2\""));
        let moved = vec![kv("a", "1", 2), kv("b", "2", 4)];
        assert!(first_difference(&a, &moved).is_some());
        // Missing at the end.
        assert!(first_difference(&a, &a[..1])
            .unwrap()
            .starts_with("b: value"));
        assert!(first_difference(&a[..1], &a)
            .unwrap()
            .starts_with("b: absent here"));
    }
}
