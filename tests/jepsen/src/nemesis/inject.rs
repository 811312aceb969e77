//! One fault of each nemesis: what it does to which masters, and the
//! [`Undo`] that heals it.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;

use super::clock::{clock_step, step_clock};
use super::store::{snapshot_kill, Compactions};
use super::{
    cuts_between, ensure_running, halves, leader_or_random, names, power, random_majority,
    remove_until_gone, via, with_leader, Nemesis, Timeline, Undo,
};
use crate::cluster::Cluster;
use crate::workload::WatchFloor;

/// Injects one fault. The first fault of a run of a nemesis that picks its
/// masters at random takes the leader in (kills or pauses it, puts it in
/// the minority, does not make it the bridge, steps its clock, removes it,
/// cuts its power), so that a single short run (`--quick`) still hits it;
/// later faults pick at random.
pub(super) async fn inject(
    nemesis: Nemesis,
    cluster: &mut Cluster,
    rng: &mut StdRng,
    tl: &mut Timeline,
    floor: &WatchFloor,
    first: bool,
) -> Result<Undo> {
    let name = nemesis.name();
    let members = cluster.members();
    let lead = if first { cluster.leader().await } else { None };
    if let Some(l) = lead {
        tl.record(
            "info",
            &name,
            format!(
                "first fault of the run: random picks take the leader {} in",
                cluster.nodes[l].name
            ),
            vec![],
        );
    }
    Ok(match nemesis {
        Nemesis::None => unreachable!(),
        Nemesis::KillLeader | Nemesis::KillRandom | Nemesis::KillMajority => {
            let victims = match nemesis {
                Nemesis::KillLeader => vec![leader_or_random(cluster, rng, tl, &name).await],
                Nemesis::KillRandom => vec![lead.unwrap_or(*members.choose(rng).unwrap())],
                _ => random_majority(rng, &members, lead),
            };
            ensure_running(cluster, &victims, "SIGKILL")?;
            let n = names(cluster, &victims);
            tl.record("fault", &name, format!("SIGKILL {}", n.join(",")), n);
            for &v in &victims {
                cluster.kill(v);
            }
            Undo::Restart(victims)
        }
        Nemesis::PauseLeader | Nemesis::PauseRandom => {
            let v = if nemesis == Nemesis::PauseLeader {
                leader_or_random(cluster, rng, tl, &name).await
            } else {
                lead.unwrap_or(*members.choose(rng).unwrap())
            };
            ensure_running(cluster, &[v], "SIGSTOP")?;
            let n = names(cluster, &[v]);
            tl.record("fault", &name, format!("SIGSTOP {}", n[0]), n);
            cluster.pause(v);
            Undo::Resume(vec![v])
        }
        Nemesis::PartitionLeader => {
            let l = leader_or_random(cluster, rng, tl, &name).await;
            let others: Vec<usize> = members.iter().copied().filter(|&i| i != l).collect();
            let n = names(cluster, &[l]);
            cluster.partition(&cuts_between(&[l], &others))?;
            tl.record("fault", &name, format!("isolate {}", n[0]), n);
            Undo::HealNetwork
        }
        Nemesis::OneWayLeader => {
            let l = leader_or_random(cluster, rng, tl, &name).await;
            let others: Vec<usize> = members.iter().copied().filter(|&i| i != l).collect();
            let n = names(cluster, &[l]);
            let deaf = rng.gen_bool(0.5);
            // (receiver, sender): the receiver drops what the sender sends.
            let drops: Vec<(usize, usize, Option<f64>)> = others
                .iter()
                .map(|&o| if deaf { (l, o, None) } else { (o, l, None) })
                .collect();
            cluster.drop_inbound(&drops)?;
            let what = if deaf {
                format!("{} hears no master (its messages still go out)", n[0])
            } else {
                format!("no master hears {} (it still hears them)", n[0])
            };
            tl.record("fault", &name, what, n);
            Undo::HealNetwork
        }
        Nemesis::Lossy => {
            let p = rng.gen_range(0.2..0.5);
            let mut drops = Vec::new();
            for &a in &members {
                for &b in &members {
                    if a != b {
                        drops.push((a, b, Some(p)));
                    }
                }
            }
            cluster.drop_inbound(&drops)?;
            let all = names(cluster, &members);
            tl.record(
                "fault",
                &name,
                format!("drop {:.0}% of packets between masters", p * 100.0),
                all,
            );
            Undo::HealNetwork
        }
        Nemesis::PartitionHalves | Nemesis::PartitionFlapping => {
            let (mut minor, mut major) = halves(rng, &members);
            if let Some(l) = lead {
                if let (Some(m), Some(pos)) =
                    (minor.first_mut(), major.iter().position(|&x| x == l))
                {
                    std::mem::swap(m, &mut major[pos]);
                }
            }
            let (a, b) = (names(cluster, &minor), names(cluster, &major));
            cluster.partition(&cuts_between(&minor, &major))?;
            tl.record(
                "fault",
                &name,
                format!("partition {} | {}", a.join(","), b.join(",")),
                a,
            );
            Undo::HealNetwork
        }
        Nemesis::PartitionBridge => {
            let mut v = members.clone();
            v.shuffle(rng);
            // The leader on one side, not the bridge (which keeps a quorum).
            if lead.is_some() && v.last().copied() == lead {
                let n = v.len();
                v.swap(0, n - 1);
            }
            let bridge = v.pop().unwrap();
            let right = v.split_off(v.len() / 2);
            let left = v;
            cluster.partition(&cuts_between(&left, &right))?;
            let (a, b, c) = (
                names(cluster, &left),
                names(cluster, &right),
                names(cluster, &[bridge]),
            );
            tl.record(
                "fault",
                &name,
                format!(
                    "partition {} | {} with bridge {}",
                    a.join(","),
                    b.join(","),
                    c[0]
                ),
                c,
            );
            Undo::HealNetwork
        }
        Nemesis::Clock => {
            let mut v = members.clone();
            v.shuffle(rng);
            v.truncate(rng.gen_range(1..=members.len()));
            let mut v = with_leader(v, lead);
            v.sort_unstable();
            let steps: Vec<i64> = v.iter().map(|_| clock_step(rng)).collect();
            let what: Vec<String> = v
                .iter()
                .zip(&steps)
                .map(|(&i, o)| format!("{} {o:+} s", cluster.nodes[i].name))
                .collect();
            tl.record(
                "fault",
                &name,
                format!("step wall clocks: {}", what.join(", ")),
                names(cluster, &v),
            );
            for (&i, &o) in v.iter().zip(&steps) {
                step_clock(cluster, i, o).await?;
            }
            Undo::ResetClocks(v)
        }
        Nemesis::SnapshotKill => snapshot_kill(cluster, rng, tl).await?,
        Nemesis::PowerLoss => power::power_loss(cluster, rng, tl, lead).await?,
        Nemesis::Compact => {
            let mut c = Compactions::default();
            // The first compaction of a window must take: otherwise
            // nothing was injected.
            let mut first = None;
            for _ in 0..10 {
                match c.step(cluster, rng, floor).await {
                    Ok(Some(r)) => {
                        first = Some(r);
                        break;
                    }
                    Ok(None) | Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
            let Some(r) = first else {
                bail!("no compaction took effect in 10 tries: {c:?}");
            };
            tl.record(
                "fault",
                &name,
                format!("compact at revision {r}, then every 100-300 ms"),
                vec![],
            );
            Undo::Compactions(c)
        }
        Nemesis::MemberPartition => {
            let p = lead.unwrap_or(*members.choose(rng).unwrap());
            let rest: Vec<usize> = members.iter().copied().filter(|&i| i != p).collect();
            let v = *rest.choose(rng).unwrap();
            let (pn, vn) = (cluster.nodes[p].name.clone(), cluster.nodes[v].name.clone());
            cluster.partition(&cuts_between(&[p], &rest))?;
            tl.record("fault", &name, format!("isolate {pn}"), vec![pn.clone()]);
            let through = via(cluster, &[v, p]).await;
            let outcome = match cluster.remove_member(v, through).await {
                Ok(()) => "acknowledged".to_string(),
                Err(e) => format!("not acknowledged ({e:#})"),
            };
            tl.record(
                "fault",
                &name,
                format!("remove {vn} while {pn} is cut off: {outcome}"),
                vec![vn],
            );
            Undo::Then(vec![Undo::HealNetwork, Undo::FinishRemovalThenRejoin(v)])
        }
        Nemesis::Member | Nemesis::MemberKill => {
            let v = lead.unwrap_or(*members.choose(rng).unwrap());
            let n = names(cluster, &[v]);
            // A master that could not be removed is a fault not injected.
            remove_until_gone(cluster, v, Duration::from_secs(15))
                .await
                .with_context(|| format!("could not remove {}", n[0]))?;
            tl.record(
                "fault",
                &name,
                format!("removed member {}", n[0]),
                n.clone(),
            );
            cluster.kill(v);
            cluster.nodes[v].removed = true;
            if nemesis != Nemesis::MemberKill {
                return Ok(Undo::Rejoin(v));
            }
            // Then crash the leader of the masters that remain.
            let rest: Vec<usize> = cluster.members().into_iter().filter(|&i| i != v).collect();
            let l = match cluster.leader().await {
                Some(l) if l != v && rest.contains(&l) => l,
                _ => match rest.choose(rng) {
                    Some(&x) => x,
                    None => return Ok(Undo::Rejoin(v)),
                },
            };
            let ln = names(cluster, &[l]);
            cluster.kill(l);
            tl.record(
                "fault",
                &name,
                format!("SIGKILL {} (with {} removed)", ln[0], n[0]),
                ln,
            );
            Undo::Then(vec![Undo::Restart(vec![l]), Undo::Rejoin(v)])
        }
    })
}
