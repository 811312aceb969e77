//! Checkers: each takes the whole history and returns a [`CheckResult`].
//!
//! A checker never trusts a client's guess about an unknown outcome: an
//! operation with status `info` may have taken effect at any time after its
//! invocation, or never.

use serde::{Deserialize, Serialize};

use crate::history::Entry;

pub mod failover;
pub mod lease;
pub mod objects;
pub mod register;
pub mod set;
pub mod watch;
pub mod wgl;

/// The verdict of one checker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Validity {
    Valid,
    Invalid,
    /// The checker could not decide (e.g. the search budget ran out).
    Unknown,
}

/// One property that the history breaks, with the operations that show it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Violation {
    /// Short name: `not-linearizable`, `lost-add`, `skipped-event`, `early-expiry`, ...
    pub kind: String,
    pub message: String,
    /// The operations involved (an excerpt of the history).
    pub excerpt: Vec<Entry>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckResult {
    pub checker: String,
    pub validity: Validity,
    /// Counts and other facts worth reporting (operations checked, ...).
    pub stats: serde_json::Value,
    pub violations: Vec<Violation>,
    /// Why the result is `unknown`, if it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl CheckResult {
    pub fn new(checker: &str, stats: serde_json::Value, violations: Vec<Violation>) -> Self {
        CheckResult {
            checker: checker.to_string(),
            validity: if violations.is_empty() {
                Validity::Valid
            } else {
                Validity::Invalid
            },
            stats,
            violations,
            note: None,
        }
    }

    pub fn is_valid(&self) -> bool {
        self.validity == Validity::Valid
    }
}

/// Runs the checker of each named workload on `history`. `busy`: the windows in which faults were
/// active ([`busy_windows`]), which some properties (a lease's late expiry)
/// cannot be judged across.
pub fn check_all(workloads: &[String], history: &[Entry], busy: &[(u64, u64)]) -> Vec<CheckResult> {
    workloads
        .iter()
        .map(|w| match w.as_str() {
            "register" => register::check(history),
            "set" => set::check(history),
            "watch" => watch::check(history),
            "lease" => lease::check_with(history, busy),
            "objects" => objects::check(history),
            other => CheckResult {
                checker: other.to_string(),
                validity: Validity::Unknown,
                stats: serde_json::Value::Null,
                violations: Vec::new(),
                note: Some(format!("no checker named {other}")),
            },
        })
        .collect()
}

/// How long after a heal the cluster may still be settling (a new leader
/// renewing every lease, restarted masters catching up).
pub const SETTLE_US: u64 = 10_000_000;

/// The windows in which faults were active: from each `fault` event to the
/// first `heal` after it plus [`SETTLE_US`] (to `u64::MAX` if none came).
pub fn busy_windows(events: &[failover::NemesisEvent]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for (i, e) in events.iter().enumerate() {
        if e.kind != "fault" {
            continue;
        }
        let heal = events[i + 1..]
            .iter()
            .find(|h| h.kind == "heal")
            .map_or(u64::MAX, |h| h.time.saturating_add(SETTLE_US));
        out.push((e.time, heal));
    }
    out
}

/// Microseconds as milliseconds with one decimal, for messages.
pub(crate) fn ms(us: u64) -> String {
    format!("{:.1}ms", us as f64 / 1000.0)
}
