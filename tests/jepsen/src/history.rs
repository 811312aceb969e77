//! The history of a run: every operation a client invoked, with when it was
//! invoked, when (and whether) it was answered, and what it returned.
//!
//! One [`Entry`] per operation, written as one JSON line to `history.jsonl`
//! when the operation completes (or when the client gives up on it). Times
//! are microseconds since the start of the run, on the harness's monotonic
//! clock, the same clock the nemesis timeline uses.

use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// How an operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Answered: the operation took effect and returned what is recorded.
    Ok,
    /// Definitely did not take effect (e.g. the connection was refused).
    Fail,
    /// Unknown outcome (timeout, connection cut): it may have taken effect at
    /// any time after its invocation, or never.
    Info,
}

/// What an operation did, and what it returned when it was answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "kebab-case")]
pub enum Op {
    /// Linearizable read of a register; `value` is what was read (None: no key).
    Read { key: String, value: Option<i64> },
    /// Unconditional put of a register.
    Write { key: String, value: i64 },
    /// Delete of a register (a later write creates it again).
    Delete { key: String },
    /// Compare-and-set: a Txn comparing the key's value with `from`, putting
    /// `to` on success. `succeeded` is the Txn's answer (None: unknown).
    Cas {
        key: String,
        from: i64,
        to: i64,
        succeeded: Option<bool>,
    },
    /// Set workload: adds one unique element (a key of its own).
    Add { element: u64 },
    /// Set workload: the final read of every element.
    SetRead { elements: Option<Vec<u64>> },
    /// Watch workload: a put under the watched prefix; `revision` is the
    /// response header's revision (the revision of this write).
    WatchPut {
        key: String,
        value: String,
        revision: Option<i64>,
    },
    /// Watch workload: one event delivered to watcher `watcher`.
    WatchEvent {
        watcher: u32,
        revision: i64,
        key: String,
        value: String,
        delete: bool,
    },
    /// Watch workload: watcher `watcher` (re)opened its watch from `from_revision`.
    WatchOpen { watcher: u32, from_revision: i64 },
    /// Lease workload: grant; `lease` and `ttl` (seconds) are the answer.
    LeaseGrant {
        lease: Option<i64>,
        ttl: Option<i64>,
    },
    /// Lease workload: put `key` attached to `lease`.
    LeasePut { key: String, lease: i64 },
    /// Lease workload: one keep-alive; `ttl` is the answer (0: no such lease).
    LeaseKeepAlive { lease: i64, ttl: Option<i64> },
    /// Lease workload: revoke.
    LeaseRevoke { lease: i64 },
    /// Lease workload: linearizable read of the key attached to `lease`.
    LeaseRead {
        key: String,
        lease: i64,
        present: Option<bool>,
    },
    /// Objects workload: one increment of a counter ConfigMap (read, then
    /// update with the read's resourceVersion, retried on Conflict).
    ObjInc { counter: String },
    /// Objects workload: the final read of a counter.
    ObjCounterRead { counter: String, value: Option<i64> },
    /// Objects workload: a counter value delivered to watcher `watcher`.
    ObjCounterSeen {
        watcher: u32,
        value: i64,
        revision: i64,
    },
    /// Objects workload: watcher `watcher` (re)opened its watch after
    /// resourceVersion `from` ("" : a fresh list, after Gone or at the start).
    ObjWatchOpen { watcher: u32, from: String },
    /// Objects workload: a create with `generateName` by a retrying
    /// client, of a ConfigMap carrying `token` (unique per create).
    ObjCreate { token: String },
    /// Objects workload: the final list of those ConfigMaps: the token of
    /// each object found (a token twice: one create made two objects).
    ObjCreatedList { tokens: Vec<String> },
}

impl Op {
    /// Whether a successful answer means the cluster accepted a write (used
    /// for failover times).
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Op::Write { .. }
                | Op::Delete { .. }
                | Op::Cas {
                    succeeded: Some(true),
                    ..
                }
                | Op::Add { .. }
                | Op::WatchPut { .. }
                | Op::LeasePut { .. }
                | Op::LeaseGrant { .. }
                | Op::ObjInc { .. }
                | Op::ObjCreate { .. }
        )
    }

    /// A watch's delivery or (re)open, of either watch workload: recorded
    /// by the watchers, not a request a client made, so not counted as an
    /// operation.
    pub fn is_watch_record(&self) -> bool {
        matches!(
            self,
            Op::WatchEvent { .. }
                | Op::WatchOpen { .. }
                | Op::ObjCounterSeen { .. }
                | Op::ObjWatchOpen { .. }
        )
    }

    /// Name of the workload this operation belongs to.
    pub fn workload(&self) -> &'static str {
        match self {
            Op::Read { key, .. }
            | Op::Write { key, .. }
            | Op::Delete { key }
            | Op::Cas { key, .. }
                if key.starts_with(crate::objects::KEY_PREFIX) =>
            {
                "objects"
            }
            Op::Read { .. } | Op::Write { .. } | Op::Delete { .. } | Op::Cas { .. } => "register",
            Op::ObjInc { .. }
            | Op::ObjCounterRead { .. }
            | Op::ObjCounterSeen { .. }
            | Op::ObjWatchOpen { .. }
            | Op::ObjCreate { .. }
            | Op::ObjCreatedList { .. } => "objects",
            Op::Add { .. } | Op::SetRead { .. } => "set",
            Op::WatchPut { .. } | Op::WatchEvent { .. } | Op::WatchOpen { .. } => "watch",
            Op::LeaseGrant { .. }
            | Op::LeasePut { .. }
            | Op::LeaseKeepAlive { .. }
            | Op::LeaseRevoke { .. }
            | Op::LeaseRead { .. } => "lease",
        }
    }
}

/// One operation of the history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The client (worker) that ran it.
    pub process: u32,
    /// The master it was sent to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Microseconds since the start of the run, just before sending.
    pub invoke: u64,
    /// Microseconds since the start of the run when the answer arrived, or
    /// when the client gave up (then `status` is `info`).
    pub complete: u64,
    pub status: Status,
    #[serde(flatten)]
    pub op: Op,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Entry {
    pub fn ok(process: u32, invoke: u64, complete: u64, op: Op) -> Entry {
        Entry {
            process,
            node: None,
            invoke,
            complete,
            status: Status::Ok,
            op,
            error: None,
        }
    }

    pub fn info(process: u32, invoke: u64, complete: u64, op: Op) -> Entry {
        Entry {
            status: Status::Info,
            ..Entry::ok(process, invoke, complete, op)
        }
    }

    pub fn is_ok(&self) -> bool {
        self.status == Status::Ok
    }
}

/// The run's clock: microseconds since the run started.
#[derive(Clone, Copy, Debug)]
pub struct Clock(Instant);

impl Clock {
    pub fn start() -> Clock {
        Clock(Instant::now())
    }

    pub fn now(&self) -> u64 {
        self.0.elapsed().as_micros() as u64
    }
}

/// Collects the history in memory and appends it to a JSON-lines file as it
/// goes (so that an interrupted run still leaves what it saw).
#[derive(Clone)]
pub struct Recorder {
    inner: Arc<Mutex<RecorderInner>>,
}

struct RecorderInner {
    entries: Vec<Entry>,
    file: Option<BufWriter<File>>,
}

impl Recorder {
    /// A recorder writing to `path` (None: memory only).
    pub fn new(path: Option<&Path>) -> std::io::Result<Recorder> {
        let file = match path {
            Some(p) => Some(BufWriter::new(File::create(p)?)),
            None => None,
        };
        Ok(Recorder {
            inner: Arc::new(Mutex::new(RecorderInner {
                entries: Vec::new(),
                file,
            })),
        })
    }

    pub fn record(&self, entry: Entry) {
        let mut inner = self.inner.lock().unwrap();
        if let Some(f) = inner.file.as_mut() {
            if let Ok(line) = serde_json::to_string(&entry) {
                let _ = writeln!(f, "{line}");
            }
        }
        inner.entries.push(entry);
    }

    pub fn flush(&self) {
        if let Some(f) = self.inner.lock().unwrap().file.as_mut() {
            let _ = f.flush();
        }
    }

    /// Every entry so far, sorted by invocation time.
    pub fn entries(&self) -> Vec<Entry> {
        let mut v = self.inner.lock().unwrap().entries.clone();
        v.sort_by_key(|e| (e.invoke, e.complete));
        v
    }
}

/// Reads a `history.jsonl` file back (for re-checking a run).
pub fn load(path: &Path) -> anyhow::Result<Vec<Entry>> {
    let text = std::fs::read_to_string(path)?;
    let mut v = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let e: Entry = serde_json::from_str(line)
            .map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), i + 1))?;
        v.push(e);
    }
    v.sort_by_key(|e| (e.invoke, e.complete));
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_records_of_both_watch_workloads_are_not_operations() {
        let seen = Op::ObjCounterSeen {
            watcher: 0,
            value: 1,
            revision: 2,
        };
        let open = Op::ObjWatchOpen {
            watcher: 0,
            from: String::new(),
        };
        assert!(seen.is_watch_record() && open.is_watch_record());
        let inc = Op::ObjInc {
            counter: "c".into(),
        };
        assert!(!inc.is_watch_record());
    }

    #[test]
    fn entries_round_trip_as_json_lines() {
        let e = Entry {
            node: Some("n1".into()),
            error: Some("timeout".into()),
            ..Entry::info(
                3,
                10,
                20,
                Op::Cas {
                    key: "r/1".into(),
                    from: 1,
                    to: 2,
                    succeeded: None,
                },
            )
        };
        let line = serde_json::to_string(&e).unwrap();
        assert!(line.contains("\"f\":\"cas\""), "{line}");
        let back: Entry = serde_json::from_str(&line).unwrap();
        assert_eq!(back, e);
    }
}
