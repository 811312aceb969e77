//! The Job controller's arithmetic, free of I/O: how many pods to run,
//! which indexes still need one, completed-index ranges, and the back-off
//! before a failed pod is replaced.

use std::collections::BTreeSet;
use std::time::Duration;

/// Kubernetes' back-off for replacing failed job pods: 10 s doubled per
/// failure, at most 6 minutes.
pub const BACKOFF_BASE: Duration = Duration::from_secs(10);
pub const BACKOFF_CAP: Duration = Duration::from_secs(360);

/// The delay before a new pod after `failures` failures (0: none).
pub fn backoff(failures: u32, base: Duration, cap: Duration) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let factor = 1u32.checked_shl(failures - 1).unwrap_or(u32::MAX);
    base.checked_mul(factor).unwrap_or(cap).min(cap)
}

/// Pods that should be running for a NonIndexed job. `completions` None is
/// a work queue: once one pod has succeeded no new pods start.
pub fn wanted_active(parallelism: i32, completions: Option<i32>, succeeded: i32) -> i32 {
    let parallelism = parallelism.max(0);
    match completions {
        Some(c) => parallelism.min((c - succeeded).max(0)),
        None if succeeded > 0 => 0,
        None => parallelism,
    }
}

/// Whether a NonIndexed job is complete.
pub fn nonindexed_complete(completions: Option<i32>, succeeded: i32, active: i32) -> bool {
    match completions {
        Some(c) => succeeded >= c,
        None => succeeded > 0 && active == 0,
    }
}

/// Indexes (lowest first) that need a pod: not completed, not running, at
/// most enough to bring the running ones up to `parallelism`.
pub fn indexes_to_start(
    completions: i32,
    parallelism: i32,
    completed: &BTreeSet<i32>,
    running: &BTreeSet<i32>,
) -> Vec<i32> {
    let room = (parallelism.max(0) as usize).saturating_sub(running.len());
    (0..completions.max(0))
        .filter(|i| !completed.contains(i) && !running.contains(i))
        .take(room)
        .collect()
}

/// "0-2,4,6-7" from a set of indexes.
pub fn format_ranges(set: &BTreeSet<i32>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut iter = set.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    out.join(",")
}

/// The inverse of [`format_ranges`]; malformed parts are skipped.
pub fn parse_ranges(s: &str) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<i32>(), b.parse::<i32>()) {
                    out.extend(a..=b);
                }
            }
            None => {
                if let Ok(i) = part.parse() {
                    out.insert(i);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_stops_at_the_cap() {
        let b = |n| backoff(n, BACKOFF_BASE, BACKOFF_CAP);
        assert_eq!(b(0), Duration::ZERO);
        assert_eq!(b(1), Duration::from_secs(10));
        assert_eq!(b(2), Duration::from_secs(20));
        assert_eq!(b(4), Duration::from_secs(80));
        assert_eq!(b(6), Duration::from_secs(320));
        assert_eq!(b(7), BACKOFF_CAP);
        assert_eq!(b(64), BACKOFF_CAP, "no overflow on many failures");
    }

    #[test]
    fn active_pods_follow_completions_and_parallelism() {
        assert_eq!(wanted_active(2, Some(4), 0), 2);
        assert_eq!(wanted_active(2, Some(4), 3), 1);
        assert_eq!(wanted_active(2, Some(4), 4), 0);
        assert_eq!(wanted_active(3, None, 0), 3);
        assert_eq!(
            wanted_active(3, None, 1),
            0,
            "a work queue starts nothing once one succeeded"
        );
        assert!(nonindexed_complete(Some(4), 4, 1));
        assert!(
            !nonindexed_complete(None, 1, 1),
            "a work queue waits for its other pods"
        );
        assert!(nonindexed_complete(None, 1, 0));
    }

    #[test]
    fn indexes_start_lowest_first_within_parallelism() {
        let done: BTreeSet<i32> = [0, 2].into();
        let running: BTreeSet<i32> = [1].into();
        assert_eq!(indexes_to_start(6, 3, &done, &running), vec![3, 4]);
        assert_eq!(indexes_to_start(3, 3, &done, &running), Vec::<i32>::new());
    }

    #[test]
    fn ranges_round_trip() {
        let s: BTreeSet<i32> = [0, 1, 2, 4, 6, 7].into();
        assert_eq!(format_ranges(&s), "0-2,4,6-7");
        assert_eq!(parse_ranges("0-2,4,6-7"), s);
        assert_eq!(parse_ranges(""), BTreeSet::new());
        assert_eq!(parse_ranges("x,3"), [3].into());
    }
}
