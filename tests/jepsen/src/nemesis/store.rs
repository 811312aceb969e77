//! The store-level nemeses: a follower killed while it receives a
//! snapshot, and compactions under the workload.

use std::time::Duration;

use anyhow::{bail, Result};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;

use super::{cuts_between, leader_or_random, names, Timeline, Undo};
use crate::cluster::Cluster;
use crate::nemesis::Nemesis;
use crate::store_faults::{self, entries_to_force_snapshot, snapshot_transfer_files};
use crate::workload::WatchFloor;

/// The compaction nemesis' count for one window.
#[derive(Debug, Default)]
pub(super) struct Compactions {
    pub(super) done: u32,
    pub(super) failed: u32,
    /// Nothing new to compact (the watchers had not moved on).
    pub(super) skipped: u32,
    pub(super) last: i64,
}

impl Compactions {
    /// One compaction through a random running master, up to the watch
    /// workload's floor; a failure is counted, not fatal (a master may be
    /// busy), except for the first of a window (then nothing was injected).
    pub(super) async fn step(
        &mut self,
        cluster: &mut Cluster,
        rng: &mut StdRng,
        floor: &WatchFloor,
    ) -> Result<Option<i64>> {
        let running: Vec<usize> = cluster
            .members()
            .into_iter()
            .filter(|&i| cluster.is_running(i))
            .collect();
        let Some(&via) = running.choose(rng) else {
            bail!("no master running to compact through");
        };
        let addr = cluster.nodes[via].client_addr.clone();
        let physical = rng.gen_bool(0.5);
        let head = store_faults::revision(&addr).await;
        let target = match head {
            Ok(h) => floor.floor().map_or(h, |f| f.min(h)) - 1,
            Err(e) => {
                self.failed += 1;
                return Err(e);
            }
        };
        if target <= self.last {
            self.skipped += 1;
            return Ok(None);
        }
        match store_faults::compact(&addr, target, physical).await {
            Ok(()) => {
                self.done += 1;
                self.last = target;
                Ok(Some(target))
            }
            // Compacted there already (in an earlier window).
            Err(e) if format!("{e:#}").contains("compacted") => {
                self.skipped += 1;
                self.last = target;
                Ok(None)
            }
            Err(e) => {
                self.failed += 1;
                Err(e)
            }
        }
    }
}

/// How long after the heal the follower's snapshot transfer must show.
const TRANSFER_WAIT: Duration = Duration::from_secs(15);

/// Cut a follower off, grow the leader's log until it must send that
/// follower a snapshot, heal, and SIGKILL the follower while it receives
/// it (0, 5, 20 or 100 ms after the transfer shows in its data folder) or
/// once it has it (0, 5 or 20 ms after the received file moves on: verified,
/// installed). A transfer that never shows is an error (the fault was not
/// injected) unless the follower caught up from the leader's log.
pub(super) async fn snapshot_kill(
    cluster: &mut Cluster,
    rng: &mut StdRng,
    tl: &mut Timeline,
) -> Result<Undo> {
    let name = Nemesis::SnapshotKill.name();
    let members = cluster.members();
    let l = leader_or_random(cluster, rng, tl, &name).await;
    let followers: Vec<usize> = members
        .iter()
        .copied()
        .filter(|&i| i != l && cluster.is_running(i))
        .collect();
    let Some(&f) = followers.choose(rng) else {
        bail!("no running follower to cut off");
    };
    let others: Vec<usize> = members.iter().copied().filter(|&i| i != f).collect();
    let (fname, lname) = (cluster.nodes[f].name.clone(), cluster.nodes[l].name.clone());
    let (faddr, laddr) = (
        cluster.nodes[f].client_addr.clone(),
        cluster.nodes[l].client_addr.clone(),
    );
    let from = match store_faults::position(&faddr).await {
        Ok(p) => p.raft_index,
        Err(_) => store_faults::position(&laddr).await?.raft_index,
    };
    cluster.partition(&cuts_between(&[f], &others))?;
    tl.record(
        "info",
        &name,
        format!("isolate {fname}"),
        names(cluster, &[f]),
    );
    let target = cluster.opts.target;
    let need = entries_to_force_snapshot(target, cluster.opts.snapshot_logs);
    let puts = store_faults::fill_log(&laddr, from, need, Duration::from_secs(40)).await?;
    tl.record(
        "info",
        &name,
        format!(
            "{puts} filler puts through {lname}: its log is {need} entries past {fname}'s {from}"
        ),
        vec![],
    );
    let before = snapshot_transfer_files(target, &cluster.nodes[f].data_dir);
    // Half the kills land while the snapshot is received, half once the
    // received file moves on (verified, renamed, installed).
    let after_receive = rng.gen_bool(0.5);
    let delays: &[u64] = if after_receive {
        &[0, 5, 20]
    } else {
        &[0, 5, 20, 100]
    };
    let delay = Duration::from_millis(*delays.choose(rng).unwrap_or(&0));
    cluster.heal_network()?;
    tl.record(
        "info",
        &name,
        format!("heal: {fname} can only catch up from a snapshot"),
        vec![],
    );
    let deadline = tokio::time::Instant::now() + TRANSFER_WAIT;
    loop {
        let seen: Vec<String> = snapshot_transfer_files(target, &cluster.nodes[f].data_dir)
            .into_iter()
            .filter(|n| !before.contains(n))
            .collect();
        if !seen.is_empty() {
            let mut when = format!("its snapshot transfer showed ({})", seen.join(", "));
            if after_receive {
                match moved_on(target, &cluster.nodes[f].data_dir, &before, &seen).await {
                    Some(next) => {
                        when = format!(
                            "its received snapshot moved on ({} to {})",
                            seen.join(", "),
                            if next.is_empty() {
                                "none".to_string()
                            } else {
                                next.join(", ")
                            }
                        )
                    }
                    None => when.push_str(", still receiving after 10 s"),
                }
            }
            tokio::time::sleep(delay).await;
            let at_kill = snapshot_transfer_files(target, &cluster.nodes[f].data_dir);
            cluster.kill(f);
            let index = store_faults::position(&laddr)
                .await
                .map(|p| p.raft_index)
                .unwrap_or(from + need);
            tl.record(
                "fault",
                &name,
                format!(
                    "SIGKILL {fname} {} ms after {when}; at the kill: {}",
                    delay.as_millis(),
                    if at_kill.is_empty() {
                        "no transfer file (installing or installed)".to_string()
                    } else {
                        at_kill.join(", ")
                    }
                ),
                vec![fname],
            );
            return Ok(Undo::Then(vec![
                Undo::Restart(vec![f]),
                Undo::CaughtUp { node: f, index },
            ]));
        }
        if tokio::time::Instant::now() >= deadline {
            // etcd keeps its log while a snapshot is in flight (to a
            // follower killed in an earlier window, until its 30 s send
            // timeout): the follower then catches up from the log. Noted,
            // not counted as a fault; anything else is a fault not injected.
            let caught_up = store_faults::position(&faddr)
                .await
                .is_ok_and(|p| p.applied >= from + need);
            if caught_up {
                tl.record(
                    "info",
                    &name,
                    format!(
                        "no snapshot transfer to {fname} within {TRANSFER_WAIT:?}: it caught up \
                         from the leader's log (not a fault)"
                    ),
                    vec![fname],
                );
                return Ok(Undo::Then(Vec::new()));
            }
            bail!(
                "no snapshot transfer to {fname} showed within {TRANSFER_WAIT:?} of the heal, \
                 and it did not catch up: the fault was not injected"
            );
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Waits (at most 10 s) until the transfer files in `dir` differ from
/// `seen` (the received file renamed or removed: received in full); returns
/// them, or None if they never changed.
async fn moved_on(
    target: crate::cluster::Target,
    dir: &std::path::Path,
    before: &[String],
    seen: &[String],
) -> Option<Vec<String>> {
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < until {
        let now: Vec<String> = snapshot_transfer_files(target, dir)
            .into_iter()
            .filter(|n| !before.contains(n))
            .collect();
        if now != seen {
            return Some(now);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    None
}
