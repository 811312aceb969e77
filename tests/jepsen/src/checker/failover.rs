//! Failover times: for each fault the nemesis injected, how long until the
//! cluster acknowledged a write again; for each heal, the same.
//!
//! `failover` = (completion of the first acknowledged write invoked at or
//! after the fault) - (fault time); `recovery` likewise from the heal. Writes
//! invoked before the fault do not count, so a fault that does not disturb
//! the cluster shows about one write's latency.

use serde::{Deserialize, Serialize};

use crate::history::{Entry, Status};

/// One line of the nemesis timeline (`nemesis.jsonl`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct NemesisEvent {
    /// Microseconds since the start of the run.
    pub time: u64,
    /// `fault` or `heal` (or `info` for notes).
    pub kind: String,
    /// The nemesis, e.g. `kill-leader`.
    pub nemesis: String,
    /// What was done, e.g. `SIGKILL n2 (leader)`.
    pub action: String,
    #[serde(default)]
    pub nodes: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Failover {
    pub nemesis: String,
    pub action: String,
    pub fault_at_ms: f64,
    /// None: no write was acknowledged after the fault (within the run).
    pub failover_ms: Option<f64>,
    pub heal_at_ms: Option<f64>,
    pub recovery_ms: Option<f64>,
}

/// Completion time of the first acknowledged write invoked at or after `t`.
fn first_write_after(writes: &[&Entry], t: u64) -> Option<u64> {
    writes
        .iter()
        .filter(|e| e.invoke >= t)
        .map(|e| e.complete)
        .min()
}

pub fn failovers(history: &[Entry], timeline: &[NemesisEvent]) -> Vec<Failover> {
    let writes: Vec<&Entry> = history
        .iter()
        .filter(|e| e.status == Status::Ok && e.op.is_write())
        .collect();
    let mut out = Vec::new();
    for (i, f) in timeline.iter().enumerate() {
        if f.kind != "fault" {
            continue;
        }
        let heal = timeline[i + 1..]
            .iter()
            .find(|h| h.kind == "heal" && h.nemesis == f.nemesis);
        let ms = |us: u64| us as f64 / 1000.0;
        out.push(Failover {
            nemesis: f.nemesis.clone(),
            action: f.action.clone(),
            fault_at_ms: ms(f.time),
            failover_ms: first_write_after(&writes, f.time).map(|c| ms(c - f.time)),
            heal_at_ms: heal.map(|h| ms(h.time)),
            recovery_ms: heal
                .and_then(|h| first_write_after(&writes, h.time).map(|c| ms(c - h.time))),
        });
    }
    out
}

/// (p50, max) of the given values.
pub fn p50_max(values: &[f64]) -> Option<(f64, f64)> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    Some((v[(v.len() - 1) / 2], v[v.len() - 1]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Op;

    fn w(invoke: u64, complete: u64) -> Entry {
        Entry::ok(
            1,
            invoke,
            complete,
            Op::Write {
                key: "k".into(),
                value: 1,
            },
        )
    }
    fn ev(time: u64, kind: &str) -> NemesisEvent {
        NemesisEvent {
            time,
            kind: kind.into(),
            nemesis: "kill-leader".into(),
            action: "x".into(),
            nodes: vec![],
        }
    }

    #[test]
    fn failover_is_the_first_write_acknowledged_after_the_fault() {
        let h = vec![
            w(0, 5_000),
            w(900, 50_000),
            w(1_500, 400_000),
            w(2_000, 300_000),
        ];
        let f = failovers(&h, &[ev(1_000, "fault"), ev(600_000, "heal")]);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].failover_ms, Some(299.0));
        assert_eq!(f[0].recovery_ms, None);
        assert_eq!(p50_max(&[3.0, 1.0, 2.0, 10.0]), Some((2.0, 10.0)));
    }
}
