//! The clock nemesis' steps: sizes, and the confirmation that a master's
//! wall clock moved (libfaketime, through a dry-run create's
//! `creationTimestamp`).

use std::time::Duration;

use anyhow::{bail, Result};
use rand::rngs::StdRng;
use rand::Rng;

use crate::cluster::Cluster;

/// How far (in seconds) a master's clock, read through a dry-run create's
/// `creationTimestamp`, may be from the offset asked for: second
/// resolution, and a second of libfaketime's cache.
pub(super) const CLOCK_TOLERANCE_S: i64 = 2;

/// A wall-clock step, in seconds: a few seconds, minutes, or days to weeks;
/// forward or back. Never smaller than `2 * CLOCK_TOLERANCE_S + 1`, so that
/// a clock that did not move cannot pass for one that did.
pub(super) fn clock_step(rng: &mut StdRng) -> i64 {
    let size = match rng.gen_range(0..3) {
        0 => rng.gen_range(2 * CLOCK_TOLERANCE_S + 1..=10),
        1 => rng.gen_range(30..=600),
        _ => rng.gen_range(3_600..=30 * 86_400),
    };
    if rng.gen_bool(0.5) {
        size
    } else {
        -size
    }
}

/// Whether a master whose clock read `seen` seconds from the real one has
/// taken a step from `from` to `to`: near `to`, and not near `from` (a
/// clock that did not move must never count as stepped). Only a reset can
/// be too small to tell apart (every step the nemesis takes is larger):
/// it counts once the clock reads near `to`.
fn clock_stepped(seen: i64, from: i64, to: i64) -> bool {
    let near = |a: i64, b: i64| (a - b).abs() <= CLOCK_TOLERANCE_S;
    near(seen, to) && (!near(seen, from) || (to - from).abs() <= 2 * CLOCK_TOLERANCE_S)
}

/// Set master `i`'s wall clock to `offset` seconds from the real one and
/// make sure the step took: a master whose clock does not move would make
/// the nemesis a no-op that always passes. The probe is a dry-run create,
/// whose answer carries the master's own `creationTimestamp` (stored
/// nowhere). Every step is confirmed, the first and the re-steps alike; a
/// master that does not answer within 5 s, or answers with the wrong time,
/// is an error (the clock nemesis runs alone, so nothing else holds it).
pub(super) async fn step_clock(cluster: &mut Cluster, i: usize, offset: i64) -> Result<()> {
    let from = cluster.nodes[i].clock_offset;
    if from == offset {
        return Ok(());
    }
    cluster.set_clock(i, offset)?;
    let name = cluster.nodes[i].name.clone();
    let addr = cluster.nodes[i].client_addr.clone();
    let opts = flotilla_client::ClientOptions {
        connect_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(1),
        retry_for: Duration::ZERO,
        ..Default::default()
    };
    let client = flotilla_client::Client::connect_with(std::slice::from_ref(&addr), opts)?;
    let probe = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "jepsen-clock-probe"},
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut last = None;
    while tokio::time::Instant::now() < deadline {
        if let Ok((obj, _)) = client.create("configmaps", "default", &probe, true).await {
            let stamp = obj["metadata"]["creationTimestamp"].as_str().unwrap_or("");
            if let Ok(t) = chrono::DateTime::parse_from_rfc3339(stamp) {
                let seen = t.timestamp() - chrono::Utc::now().timestamp();
                if clock_stepped(seen, from, offset) {
                    return Ok(());
                }
                last = Some(seen);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    match last {
        Some(seen) => bail!(
            "{name}'s wall clock did not move: {from:+} s to {offset:+} s asked, {seen:+} s \
             seen after 5 s (is libfaketime preloaded?)"
        ),
        None => bail!(
            "could not confirm {name}'s wall clock step from {from:+} s to {offset:+} s: \
             no answer to the probe within 5 s"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn a_clock_that_did_not_move_never_counts_as_stepped() {
        // Every step is large enough to tell apart from where it started.
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..10_000 {
            let step = clock_step(&mut rng);
            assert!(step.abs() > 2 * CLOCK_TOLERANCE_S, "{step}");
            for from in [-600, 0, 7] {
                assert!(!clock_stepped(from, from, from + step), "{from} {step}");
                assert!(clock_stepped(from + step, from, from + step));
            }
        }
        assert!(!clock_stepped(0, 0, 3600));
        assert!(clock_stepped(3601, 0, 3600));
        // A small reset: confirmed by the clock reading near zero.
        assert!(clock_stepped(0, 2, 0));
        assert!(!clock_stepped(300, 300, 0));
    }
}
