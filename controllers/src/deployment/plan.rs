//! The arithmetic of a rollout, as Kubernetes' deployment controller does
//! it, on plain numbers so that it can be tested exhaustively: how far the
//! new ReplicaSet may grow (maxSurge), how far the old ones may shrink
//! (maxUnavailable), and how a change of `replicas` in the middle of a
//! rollout is spread over the ReplicaSets in proportion.

use flotilla_objects::meta::IntOrString;

/// maxSurge and maxUnavailable resolved against `replicas` (surge rounded
/// up, unavailability down); both zero would stall a rollout, so
/// unavailability is then one (as in Kubernetes).
pub fn fenceposts(
    max_surge: Option<&IntOrString>,
    max_unavailable: Option<&IntOrString>,
    replicas: i32,
) -> (i32, i32) {
    let pct25 = IntOrString::String("25%".into());
    let surge = max_surge
        .unwrap_or(&pct25)
        .scaled_value(replicas, true)
        .unwrap_or(0)
        .max(0);
    let mut unavailable = max_unavailable
        .unwrap_or(&pct25)
        .scaled_value(replicas, false)
        .unwrap_or(0)
        .max(0);
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    (surge, unavailable.min(replicas.max(0)))
}

/// A ReplicaSet as the plan sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rs {
    /// spec.replicas.
    pub replicas: i32,
    /// status.availableReplicas.
    pub available: i32,
}

/// The size the new ReplicaSet should have now, given every ReplicaSet's
/// size (the new one included in `total`).
pub fn new_rs_size(replicas: i32, surge: i32, new_rs: i32, total: i32) -> i32 {
    if new_rs >= replicas {
        return replicas;
    }
    let max_total = replicas + surge;
    if total >= max_total {
        return new_rs;
    }
    let up = (max_total - total).min(replicas - new_rs);
    new_rs + up.max(0)
}

/// How many replicas the old ReplicaSets may lose now without the
/// deployment going below `replicas - unavailable` available pods, with
/// unhealthy old replicas (not available) counted first. Returns the new
/// size of each old ReplicaSet, oldest first as given.
pub fn scale_down_old(replicas: i32, unavailable: i32, new_rs: Rs, old: &[Rs]) -> Vec<i32> {
    let mut sizes: Vec<i32> = old.iter().map(|r| r.replicas).collect();
    let old_total: i32 = sizes.iter().sum();
    if old_total == 0 {
        return sizes;
    }
    let all = old_total + new_rs.replicas;
    let min_available = replicas - unavailable;
    let new_unavailable = (new_rs.replicas - new_rs.available).max(0);
    let mut budget = all - min_available - new_unavailable;
    if budget <= 0 {
        return sizes;
    }
    // First the old replicas that are not available anyway: removing them
    // costs no availability.
    for (i, r) in old.iter().enumerate() {
        if budget <= 0 {
            break;
        }
        let unhealthy = (sizes[i] - r.available).max(0);
        let cut = unhealthy.min(budget);
        sizes[i] -= cut;
        budget -= cut;
    }
    // Then available ones, as long as enough stay available in all.
    let available: i32 = new_rs.available
        + old
            .iter()
            .zip(&sizes)
            .map(|(r, s)| r.available.min(*s))
            .sum::<i32>();
    let mut may_lose = (available - min_available).max(0);
    for (i, r) in old.iter().enumerate() {
        if may_lose <= 0 {
            break;
        }
        let cut = sizes[i].min(r.available.min(sizes[i])).min(may_lose);
        sizes[i] -= cut;
        may_lose -= cut;
    }
    sizes
}

/// Spread a new `replicas` (plus `surge`) over active ReplicaSets in
/// proportion to each one's share of the size they were made for
/// (`annotated`: the deployment's replicas when the ReplicaSet was last
/// scaled by it). `sizes` are the current sizes; the result the new ones.
/// Whatever rounding leaves over goes to the largest (the first of the
/// largest, `sizes` being ordered newest first).
pub fn proportional(replicas: i32, surge: i32, sizes: &[(i32, i32)]) -> Vec<i32> {
    let current: i32 = sizes.iter().map(|s| s.0).sum();
    let allowed = replicas + surge;
    let to_add = allowed - current;
    if to_add == 0 || sizes.is_empty() {
        return sizes.iter().map(|s| s.0).collect();
    }
    let mut out: Vec<i32> = sizes.iter().map(|s| s.0).collect();
    let mut added = 0i32;
    for (i, (size, annotated)) in sizes.iter().enumerate() {
        if *size == 0 && to_add > 0 {
            continue;
        }
        let annotated = if *annotated > 0 { *annotated } else { replicas };
        // The size this ReplicaSet would have had for `replicas`.
        let target = (f64::from(*size) * f64::from(replicas) / f64::from(annotated)).round() as i32;
        let mut delta = target - size;
        // Never move past what is left to add (or remove).
        if to_add > 0 {
            delta = delta.clamp(0, to_add - added);
        } else {
            delta = delta.clamp(to_add - added, 0);
        }
        out[i] += delta;
        added += delta;
    }
    // Leftover to the largest.
    if added != to_add {
        if let Some(i) = (0..out.len()).max_by_key(|&i| (out[i], std::cmp::Reverse(i))) {
            out[i] = (out[i] + to_add - added).max(0);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pct(s: &str) -> IntOrString {
        IntOrString::String(s.into())
    }

    #[test]
    fn fenceposts_round_surge_up_and_unavailability_down() {
        assert_eq!(fenceposts(None, None, 10), (3, 2));
        assert_eq!(fenceposts(Some(&pct("25%")), Some(&pct("25%")), 5), (2, 1));
        assert_eq!(
            fenceposts(Some(&IntOrString::Int(0)), Some(&IntOrString::Int(0)), 5),
            (0, 1)
        );
        assert_eq!(fenceposts(Some(&pct("10%")), Some(&pct("10%")), 3), (1, 0));
        assert_eq!(
            fenceposts(Some(&IntOrString::Int(0)), Some(&pct("100%")), 4),
            (0, 4)
        );
        assert_eq!(
            fenceposts(Some(&IntOrString::Int(2)), Some(&IntOrString::Int(9)), 3),
            (2, 3)
        );
    }

    #[test]
    fn the_new_replica_set_grows_within_the_surge() {
        // 10 replicas, surge 3: total may reach 13.
        assert_eq!(new_rs_size(10, 3, 0, 10), 3);
        assert_eq!(new_rs_size(10, 3, 3, 13), 3);
        assert_eq!(new_rs_size(10, 3, 3, 11), 5);
        assert_eq!(new_rs_size(10, 3, 9, 10), 10);
        assert_eq!(new_rs_size(10, 0, 2, 10), 2);
        assert_eq!(new_rs_size(10, 3, 12, 12), 10, "too big: back to replicas");
    }

    /// Simulate a whole rolling update step by step, with pods becoming
    /// available one round after they are created, and check the promise
    /// (never fewer than replicas - maxUnavailable available) at every step.
    fn roll(replicas: i32, surge: &IntOrString, unavail: &IntOrString) -> usize {
        let (s, u) = fenceposts(Some(surge), Some(unavail), replicas);
        let mut new = Rs {
            replicas: 0,
            available: 0,
        };
        let mut old = vec![Rs {
            replicas,
            available: replicas,
        }];
        let mut steps = 0;
        loop {
            steps += 1;
            assert!(steps < 1000, "no progress: {replicas} {s} {u}");
            let total = new.replicas + old.iter().map(|r| r.replicas).sum::<i32>();
            new.replicas = new_rs_size(replicas, s, new.replicas, total);
            let sizes = scale_down_old(replicas, u, new, &old);
            for (r, n) in old.iter_mut().zip(sizes) {
                r.replicas = n;
                r.available = r.available.min(n);
            }
            let available = new.available + old.iter().map(|r| r.available).sum::<i32>();
            assert!(
                available >= replicas - u,
                "promise broken: {available} < {replicas} - {u} (surge {s})"
            );
            let total = new.replicas + old.iter().map(|r| r.replicas).sum::<i32>();
            assert!(
                total <= replicas + s,
                "surge broken: {total} > {replicas} + {s}"
            );
            // Pods of the new set become available.
            new.available = new.replicas;
            if new.replicas == replicas && old.iter().all(|r| r.replicas == 0) {
                return steps;
            }
        }
    }

    #[test]
    fn rolling_updates_keep_their_promise_for_odd_combinations() {
        for replicas in [1, 2, 3, 5, 7, 10, 13] {
            for surge in [
                IntOrString::Int(0),
                IntOrString::Int(1),
                IntOrString::Int(3),
                pct("25%"),
                pct("50%"),
                pct("100%"),
            ] {
                for unavail in [
                    IntOrString::Int(0),
                    IntOrString::Int(1),
                    IntOrString::Int(2),
                    pct("10%"),
                    pct("25%"),
                    pct("100%"),
                ] {
                    roll(replicas, &surge, &unavail);
                }
            }
        }
    }

    #[test]
    fn unhealthy_old_replicas_go_first() {
        // 4 replicas, maxUnavailable 1, surge 1: old has 4 of which 2 are
        // not available; the new set has 1 unavailable pod. The budget
        // (5 - 3 - 1 = 1) goes to an unhealthy old pod, which costs no
        // availability; no available one may go (2 available < 3).
        let sizes = scale_down_old(
            4,
            1,
            Rs {
                replicas: 1,
                available: 0,
            },
            &[Rs {
                replicas: 4,
                available: 2,
            }],
        );
        assert_eq!(sizes, [3]);
        // As Kubernetes does, nothing goes while the new pod is unavailable
        // and the budget is spent by it (5 - 4 - 1 = 0), even an unhealthy
        // old pod.
        let sizes = scale_down_old(
            4,
            0,
            Rs {
                replicas: 1,
                available: 0,
            },
            &[Rs {
                replicas: 4,
                available: 3,
            }],
        );
        assert_eq!(sizes, [4]);
        // Once the new set has grown (surge) and its pods are available,
        // another old one may go.
        let sizes = scale_down_old(
            4,
            0,
            Rs {
                replicas: 2,
                available: 2,
            },
            &[Rs {
                replicas: 3,
                available: 3,
            }],
        );
        assert_eq!(sizes, [2]);
    }

    #[test]
    fn scaling_in_a_rollout_is_proportional() {
        // 10 replicas (surge 3) split 7 old + 6 new, scaled to 20 (surge 5):
        // allowed 25, 12 to add, split about 7:6.
        let out = proportional(20, 5, &[(6, 10), (7, 10)]);
        assert_eq!(out.iter().sum::<i32>(), 25);
        assert_eq!(out, [12, 13]);
        // Scaled down from 10 to 5 (surge 2): allowed 7.
        let out = proportional(5, 2, &[(6, 10), (7, 10)]);
        assert_eq!(out.iter().sum::<i32>(), 7);
        assert!(out.iter().all(|n| *n >= 0));
        // Nothing to change.
        assert_eq!(proportional(10, 3, &[(6, 10), (7, 10)]), [6, 7]);
    }
}
