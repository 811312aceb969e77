//! Faults, scheduled from the run's seed: the same seed gives the same
//! sequence of waits, durations and random choices (which node is the leader
//! at a given moment is up to the cluster). Every fault is healed before the
//! next, and everything is healed at the end ([`heal_all`]).

use std::fs::File;
use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Result};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::checker::failover::NemesisEvent;
use crate::cluster::Cluster;
use crate::history::Clock;
use crate::store_faults;
use crate::workload::WatchFloor;

mod clock;
mod inject;
mod power;
mod store;
use clock::{clock_step, step_clock};
use inject::inject;
use store::Compactions;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Nemesis {
    /// No faults (a baseline).
    None,
    /// SIGKILL the leader, restart it after the fault window.
    KillLeader,
    /// SIGKILL a random master, restart it.
    KillRandom,
    /// SIGKILL a majority of the masters at once, restart them.
    KillMajority,
    /// SIGSTOP the leader, SIGCONT it.
    PauseLeader,
    /// SIGSTOP a random master, SIGCONT it.
    PauseRandom,
    /// Cut the leader off from every other master.
    PartitionLeader,
    /// Split the masters into a random minority and majority.
    PartitionHalves,
    /// Two halves that cannot talk to each other, and one master that
    /// talks to both (a bridge).
    PartitionBridge,
    /// Random minority/majority splits that come and go every few hundred ms.
    PartitionFlapping,
    /// Remove a random master from the membership (ClusterAdmin.RemoveMaster
    /// / MemberRemove), then bring it back empty to join again.
    Member,
    /// One-way loss around the leader: either it hears nobody (its
    /// heartbeats still go out) or nobody hears it (it still hears them).
    OneWayLeader,
    /// A lossy network: every packet between masters is dropped with
    /// probability 0.2-0.5, in both directions.
    Lossy,
    /// A membership change combined with a crash: remove a random master,
    /// then SIGKILL the leader of the masters that remain (with three
    /// masters: no quorum until it restarts); heal by restarting it, then
    /// letting the removed one join again, empty.
    MemberKill,
    /// Step the wall clocks of 1 to all masters by seconds, minutes or
    /// weeks, forward or back, and keep stepping them during the fault
    /// (libfaketime; Flotilla only: etcd, a Go program, reads the clock
    /// through the vDSO where a preloaded library cannot reach).
    Clock,
    /// A membership change during a partition: cut a random master off,
    /// then ask to remove another (with three masters the change needs the
    /// cut-off one, so it cannot finish before the heal). Heal: remove the
    /// rules, see the removal through, stop the removed master and let it
    /// join again, empty.
    MemberPartition,
    /// A follower killed while it receives (or verifies and installs) a
    /// snapshot: cut a follower off, write filler keys until the leader's
    /// log is purged past it, heal, and SIGKILL it 0-100 ms after the
    /// transfer shows in its data folder, or 0-20 ms after the received
    /// file moves on. Heal: restart it and see it catch up.
    SnapshotKill,
    /// Compactions every 100-300 ms through random masters (physical or
    /// not), up to the revision the watch workload's watchers have reached,
    /// while the register workload deletes and writes its keys again.
    Compact,
    /// A power cut: SIGKILL every master (or a random majority) and drop
    /// what their data folders hold unsynced (each master's data folder is
    /// a `flotilla-lazyfs` layer in these runs). Heal: restart them.
    PowerLoss,
}

impl Nemesis {
    /// Every fault-injecting nemesis, in the order `all` runs them.
    pub const ALL: [Nemesis; 18] = [
        Nemesis::KillLeader,
        Nemesis::KillRandom,
        Nemesis::KillMajority,
        Nemesis::PauseLeader,
        Nemesis::PauseRandom,
        Nemesis::PartitionLeader,
        Nemesis::PartitionHalves,
        Nemesis::PartitionBridge,
        Nemesis::PartitionFlapping,
        Nemesis::Member,
        Nemesis::OneWayLeader,
        Nemesis::Lossy,
        Nemesis::MemberKill,
        Nemesis::MemberPartition,
        Nemesis::Clock,
        Nemesis::SnapshotKill,
        Nemesis::Compact,
        Nemesis::PowerLoss,
    ];

    pub fn name(&self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }
}

/// The nemesis timeline: kept in memory and appended to `nemesis.jsonl`.
pub struct Timeline {
    pub events: Vec<NemesisEvent>,
    file: Option<File>,
    clock: Clock,
}

impl Timeline {
    pub fn new(path: Option<&Path>, clock: Clock) -> std::io::Result<Timeline> {
        Ok(Timeline {
            events: Vec::new(),
            file: path.map(File::create).transpose()?,
            clock,
        })
    }

    pub fn record(&mut self, kind: &str, nemesis: &str, action: String, nodes: Vec<String>) {
        let ev = NemesisEvent {
            time: self.clock.now(),
            kind: kind.into(),
            nemesis: nemesis.into(),
            action,
            nodes,
        };
        tracing::info!("nemesis {kind}: {}", ev.action);
        if let Some(f) = self.file.as_mut() {
            if let Ok(line) = serde_json::to_string(&ev) {
                let _ = writeln!(f, "{line}");
            }
        }
        self.events.push(ev);
    }
}

/// What undoes a fault.
enum Undo {
    Restart(Vec<usize>),
    Resume(Vec<usize>),
    HealNetwork,
    Rejoin(usize),
    /// Set these masters' wall clocks right again.
    ResetClocks(Vec<usize>),
    /// See this master's removal through (asking again until it is no
    /// longer a member), stop it, and let it join again, empty. If the
    /// removal cannot be seen through, it stays a member, with its data (a
    /// member that lost its data could break Raft's guarantees: that would
    /// be the harness's fault, not the cluster's).
    FinishRemovalThenRejoin(usize),
    /// Wait (at most 20 s) until this master has applied the leader's log
    /// up to `index`; noted in the timeline either way (a master that never
    /// catches up is caught by the final comparison of the replicas).
    CaughtUp {
        node: usize,
        index: u64,
    },
    /// Note what the compactions of one window did.
    Compactions(Compactions),
    /// Undo each, in order.
    Then(Vec<Undo>),
}

/// Sleeps `d` unless cancelled first (then returns false).
async fn pause_for(d: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = cancel.cancelled() => false,
    }
}

fn names(cluster: &Cluster, idx: &[usize]) -> Vec<String> {
    idx.iter().map(|&i| cluster.nodes[i].name.clone()).collect()
}

/// A random split: (minority, majority).
fn halves(rng: &mut StdRng, members: &[usize]) -> (Vec<usize>, Vec<usize>) {
    let mut v = members.to_vec();
    v.shuffle(rng);
    let minority = v.len() / 2;
    let major = v.split_off(minority);
    (v, major)
}

/// `v` with the leader `l` in it (it replaces the first element if it is
/// missing); `v` unchanged without one.
fn with_leader(mut v: Vec<usize>, l: Option<usize>) -> Vec<usize> {
    if let Some(l) = l {
        if !v.contains(&l) {
            if let Some(x) = v.first_mut() {
                *x = l;
            }
        }
    }
    v
}

/// A random majority of `members`, with the leader `l` in it when given.
fn random_majority(rng: &mut StdRng, members: &[usize], l: Option<usize>) -> Vec<usize> {
    let mut v = members.to_vec();
    v.shuffle(rng);
    v.truncate(members.len() / 2 + 1);
    with_leader(v, l)
}

fn cuts_between(a: &[usize], b: &[usize]) -> Vec<(usize, usize)> {
    a.iter()
        .flat_map(|&x| b.iter().map(move |&y| (x, y)))
        .collect()
}

/// The leader, or a random member if none is found (noted in the timeline).
async fn leader_or_random(
    cluster: &Cluster,
    rng: &mut StdRng,
    tl: &mut Timeline,
    nemesis: &str,
) -> usize {
    let members = cluster.members();
    let fallback = *members.choose(rng).expect("members");
    match cluster.leader().await {
        Some(l) => l,
        None => {
            tl.record(
                "info",
                nemesis,
                format!(
                    "no leader found; using {} instead",
                    cluster.nodes[fallback].name
                ),
                vec![],
            );
            fallback
        }
    }
}

/// The master to send a membership request through: the leader unless it
/// is one of `not`, else the first member that is not.
async fn via(cluster: &Cluster, not: &[usize]) -> usize {
    match cluster.leader().await {
        Some(l) if !not.contains(&l) => l,
        _ => {
            let members = cluster.members();
            *members
                .iter()
                .find(|i| !not.contains(i))
                .unwrap_or(&members[0])
        }
    }
}

/// Ask (again every 500 ms, for `limit`) to remove master `v`, until it is
/// not a member. etcd refuses membership changes for a few seconds after a
/// member (re)started ("unhealthy cluster"), Flotilla while a voter does
/// not answer; "not found" (Flotilla: NotFound, etcd: "member not found")
/// means it is removed already.
async fn remove_until_gone(cluster: &Cluster, v: usize, limit: Duration) -> Result<()> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match cluster.remove_member(v, via(cluster, &[v]).await).await {
            Ok(()) => return Ok(()),
            Err(e) if format!("{e:#}").to_lowercase().contains("not found") => return Ok(()),
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// Fails unless every master in `victims` is running: a signal sent to a
/// master that is not running injects nothing.
fn ensure_running(cluster: &mut Cluster, victims: &[usize], what: &str) -> Result<()> {
    for &v in victims {
        if !cluster.is_running(v) {
            bail!(
                "{what} {}: it is not running, so the fault would not be injected",
                cluster.nodes[v].name
            );
        }
    }
    Ok(())
}

async fn undo(nemesis: Nemesis, u: Undo, cluster: &mut Cluster, tl: &mut Timeline) -> Result<()> {
    let name = nemesis.name();
    match u {
        Undo::Restart(v) => {
            let n = names(cluster, &v);
            tl.record("heal", &name, format!("restart {}", n.join(",")), n);
            for i in v {
                cluster.spawn(i)?;
            }
        }
        Undo::Resume(v) => {
            let n = names(cluster, &v);
            tl.record("heal", &name, format!("SIGCONT {}", n.join(",")), n);
            for i in v {
                cluster.resume(i);
            }
        }
        Undo::HealNetwork => {
            tl.record("heal", &name, "heal network".into(), vec![]);
            cluster.heal_network()?;
        }
        Undo::Rejoin(v) => {
            let n = names(cluster, &[v]);
            tl.record("heal", &name, format!("{} joins again, empty", n[0]), n);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
            loop {
                let through = via(cluster, &[v]).await;
                match cluster.rejoin(v, through).await {
                    Ok(()) => break,
                    Err(e) if tokio::time::Instant::now() >= deadline => {
                        // A heal that did not take: the cluster runs on
                        // without a member it is meant to have.
                        return Err(e.context(format!(
                            "rejoin of {} failed for 15 s",
                            cluster.nodes[v].name
                        )));
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                }
            }
        }
        Undo::FinishRemovalThenRejoin(v) => {
            let n = cluster.nodes[v].name.clone();
            match remove_until_gone(cluster, v, Duration::from_secs(20)).await {
                Ok(()) => {
                    tl.record("heal", &name, format!("{n} is removed; stop it"), vec![n]);
                    cluster.kill(v);
                    cluster.nodes[v].removed = true;
                    Box::pin(undo(nemesis, Undo::Rejoin(v), cluster, tl)).await?;
                }
                Err(e) => tl.record(
                    "info",
                    &name,
                    format!("removal of {n} not seen through in 20 s ({e:#}); it stays a member"),
                    vec![n],
                ),
            }
        }
        Undo::ResetClocks(v) => {
            let n = names(cluster, &v);
            tl.record(
                "heal",
                &name,
                format!("reset wall clocks of {}", n.join(",")),
                n,
            );
            for i in v {
                step_clock(cluster, i, 0).await?;
            }
        }
        Undo::CaughtUp { node, index } => {
            let n = cluster.nodes[node].name.clone();
            let addr = cluster.nodes[node].client_addr.clone();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            let mut last = None;
            while tokio::time::Instant::now() < deadline {
                match store_faults::position(&addr).await {
                    Ok(p) if p.applied >= index => {
                        last = Some(p.applied);
                        break;
                    }
                    Ok(p) => last = Some(p.applied),
                    Err(_) => {}
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let what = match last {
                Some(a) if a >= index => format!("{n} caught up: applied {a} (>= {index})"),
                Some(a) => format!("{n} had not caught up after 20 s: applied {a} of {index}"),
                None => format!("{n} did not answer for 20 s after its restart"),
            };
            tl.record("info", &name, what, vec![n]);
        }
        Undo::Compactions(c) => {
            tl.record(
                "heal",
                &name,
                format!(
                    "stop compacting: {} compactions, up to revision {} ({} failed, {} with \
                     nothing new)",
                    c.done, c.last, c.failed, c.skipped
                ),
                vec![],
            );
        }
        Undo::Then(steps) => {
            for u in steps {
                Box::pin(undo(nemesis, u, cluster, tl)).await?;
            }
        }
    }
    Ok(())
}

/// Runs `nemesis` for `duration` (faults of 3-6 s, 2-4 s apart, after a
/// short warm-up), then heals the last fault. Returns early when cancelled.
pub async fn run(
    nemesis: Nemesis,
    cluster: &mut Cluster,
    seed: u64,
    duration: Duration,
    tl: &mut Timeline,
    cancel: &CancellationToken,
    floor: &WatchFloor,
) -> Result<()> {
    let clock = tl.clock;
    let mut rng = StdRng::seed_from_u64(seed ^ 0x6e65_6d65_7369_7300);
    let end = clock.now() + duration.as_micros() as u64;
    let left = |c: &Clock| Duration::from_micros(end.saturating_sub(c.now()));
    if nemesis == Nemesis::None {
        pause_for(duration, cancel).await;
        return Ok(());
    }
    if !pause_for(Duration::from_millis(rng.gen_range(1500..2500)), cancel).await {
        return Ok(());
    }
    let mut first = true;
    while left(&clock) > Duration::from_secs(2) {
        let window = Duration::from_millis(rng.gen_range(3000..6000)).min(left(&clock));
        let quiet = Duration::from_millis(rng.gen_range(2000..4000));
        let mut u = inject(nemesis, cluster, &mut rng, tl, floor, first).await?;
        first = false;
        let mut ok = true;
        if nemesis == Nemesis::PartitionFlapping {
            // Flip between a fresh random split and no partition.
            let until = clock.now() + window.as_micros() as u64;
            let mut cut = true;
            while ok && clock.now() < until {
                ok = pause_for(Duration::from_millis(rng.gen_range(300..1000)), cancel).await;
                cut = !cut;
                if cut {
                    let (minor, major) = halves(&mut rng, &cluster.members());
                    let a = names(cluster, &minor);
                    tl.record(
                        "info",
                        "partition-flapping",
                        format!(
                            "flap: partition {} | {}",
                            a.join(","),
                            names(cluster, &major).join(",")
                        ),
                        a,
                    );
                    cluster.partition(&cuts_between(&minor, &major))?;
                } else {
                    tl.record("info", "partition-flapping", "flap: heal".into(), vec![]);
                    cluster.heal_network()?;
                }
            }
        } else if let Undo::Compactions(c) = &mut u {
            let until = clock.now() + window.as_micros() as u64;
            while ok && clock.now() < until {
                ok = pause_for(Duration::from_millis(rng.gen_range(100..300)), cancel).await;
                if let Err(e) = c.step(cluster, &mut rng, floor).await {
                    tracing::info!("compaction failed: {e:#}");
                }
            }
        } else if let (Nemesis::Clock, Undo::ResetClocks(victims)) = (nemesis, &u) {
            // Keep stepping: each 1-2 s one of the victims jumps again
            // (back and forth, like a clock that NTP keeps correcting).
            let until = clock.now() + window.as_micros() as u64;
            while ok && clock.now() < until {
                ok = pause_for(Duration::from_millis(rng.gen_range(1000..2000)), cancel).await;
                let Some(&i) = victims.choose(&mut rng) else {
                    break;
                };
                let step = clock_step(&mut rng);
                let to = cluster.nodes[i].clock_offset + step;
                tl.record(
                    "info",
                    "clock",
                    format!(
                        "step {}'s wall clock {step:+} s (now {to:+} s)",
                        cluster.nodes[i].name
                    ),
                    names(cluster, &[i]),
                );
                // Confirmed like the first step: a re-step that did not
                // take is a fault not injected.
                step_clock(cluster, i, to).await?;
            }
        } else {
            ok = pause_for(window, cancel).await;
        }
        undo(nemesis, u, cluster, tl).await?;
        if !ok || !pause_for(quiet.min(left(&clock)), cancel).await {
            return Ok(());
        }
    }
    pause_for(left(&clock), cancel).await;
    Ok(())
}

/// Heals everything: SIGCONT paused masters, restart stopped ones, bring
/// removed ones back, remove every partition.
pub async fn heal_all(cluster: &mut Cluster, tl: &mut Timeline) -> Result<()> {
    tl.record("heal", "final", "heal everything".into(), vec![]);
    cluster.heal_network()?;
    for i in 0..cluster.nodes.len() {
        if cluster.nodes[i].clock_offset != 0 && cluster.is_running(i) {
            step_clock(cluster, i, 0).await?;
        } else if cluster.nodes[i].clock_offset != 0 {
            // Read again when it starts below.
            cluster.set_clock(i, 0)?;
        }
        if cluster.nodes[i].paused {
            cluster.resume(i);
        }
        if cluster.nodes[i].removed {
            undo(Nemesis::Member, Undo::Rejoin(i), cluster, tl).await?;
        } else if !cluster.is_running(i) {
            if cluster.nodes[i].pid().is_some() {
                tl.record(
                    "info",
                    "final",
                    format!("{} had exited on its own", cluster.nodes[i].name),
                    vec![cluster.nodes[i].name.clone()],
                );
                cluster.kill(i);
            }
            cluster.spawn(i)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_kebab_case_and_splits_cover_everyone() {
        assert_eq!(Nemesis::KillLeader.name(), "kill-leader");
        assert_eq!(Nemesis::PartitionFlapping.name(), "partition-flapping");
        let mut rng = StdRng::seed_from_u64(1);
        for n in [3usize, 5] {
            let members: Vec<usize> = (0..n).collect();
            let (a, b) = halves(&mut rng, &members);
            assert_eq!(a.len(), n / 2);
            assert_eq!(a.len() + b.len(), n);
            assert_eq!(cuts_between(&a, &b).len(), a.len() * b.len());
        }
        // Same seed, same choices.
        let pick = |s| {
            let mut r = StdRng::seed_from_u64(s);
            halves(&mut r, &[0, 1, 2, 3, 4])
        };
        assert_eq!(pick(7), pick(7));
    }

    #[test]
    fn the_first_faults_random_picks_take_the_leader_in() {
        assert_eq!(with_leader(vec![0, 2], Some(1)), vec![1, 2]);
        assert_eq!(with_leader(vec![0, 2], Some(2)), vec![0, 2]);
        assert_eq!(with_leader(vec![0, 2], None), vec![0, 2]);
        assert_eq!(with_leader(vec![], Some(1)), Vec::<usize>::new());
    }
}
