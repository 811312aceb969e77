//! The power-loss nemesis: masters killed as by a power cut, with their
//! data folders losing whatever was written and not fsynced (the
//! `flotilla-lazyfs` layer under each one, see [`crate::lazyfs`]).

use anyhow::Result;
use rand::rngs::StdRng;
use rand::Rng;

use super::{ensure_running, names, random_majority, Timeline, Undo};
use crate::cluster::Cluster;
use crate::nemesis::Nemesis;

/// Cut the power of every master (half the time) or of a random majority:
/// their data folders drop what they hold unsynced (an fsync under way
/// included), and the masters are SIGKILLed right after. A
/// minority keeps its data whenever a majority keeps what it acknowledged,
/// so only a majority's loss can show a store that acknowledges before it
/// fsyncs; `lead` (the first fault's leader) is in the majority. Heal:
/// restart them on what they had synced.
pub(super) async fn power_loss(
    cluster: &mut Cluster,
    rng: &mut StdRng,
    tl: &mut Timeline,
    lead: Option<usize>,
) -> Result<Undo> {
    let name = Nemesis::PowerLoss.name();
    let mut victims = cluster.members();
    if rng.gen_bool(0.5) {
        victims = random_majority(rng, &victims, lead);
        victims.sort_unstable();
    }
    ensure_running(cluster, &victims, "power loss of")?;
    let n = names(cluster, &victims);
    let mut lost = Vec::new();
    for (&v, l) in victims.iter().zip(cluster.power_cut(&victims)?) {
        lost.push(format!(
            "{}: {} unsynced bytes in {} files dropped ({} fsyncs, {} writes since the mount)",
            cluster.nodes[v].name, l.unsynced_bytes, l.files_with_unsynced, l.fsyncs, l.writes
        ));
    }
    tl.record(
        "fault",
        &name,
        format!("power loss of {}: {}", n.join(","), lost.join("; ")),
        n,
    );
    Ok(Undo::Restart(victims))
}
