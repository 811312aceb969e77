//! One run, inside the clients' namespace: start the masters, run the
//! workloads while the nemesis injects faults, heal, check recovery, do the
//! final reads, check the history, write the verdict.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::checker::failover::NemesisEvent;
use crate::checker::failover::{self, Failover};
use crate::checker::{self, CheckResult, Validity, Violation};
use crate::cluster::{Cluster, ClusterOpts, Target};
use crate::history::{Clock, Op, Recorder, Status};
use crate::nemesis::{self, Nemesis, Timeline};
use crate::netns::NetSpec;
use crate::workload::{self, Ctx};

/// Everything the run needs, written by the orchestrator as `spec.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Spec {
    pub target: Target,
    pub nemesis: Nemesis,
    pub workloads: Vec<String>,
    pub duration_s: u64,
    pub seed: u64,
    pub run_dir: PathBuf,
    pub net: NetSpec,
    pub cluster: ClusterOpts,
    pub op_timeout_ms: u64,
    /// Keep the masters' data directories (in the run folder).
    pub keep_data: bool,
    /// How long the cluster has to recover once everything is healed.
    pub recovery_timeout_s: u64,
    /// The command that replays this run.
    pub replay: String,
    /// Unsafe serializable register reads (see `RunArgs`).
    #[serde(default)]
    pub serializable_reads: bool,
}

/// The outcome of a run (`verdict.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Verdict {
    pub target: Target,
    pub nemesis: String,
    pub seed: u64,
    pub workloads: Vec<String>,
    pub duration_s: u64,
    pub validity: Validity,
    pub ops: usize,
    pub ops_ok: usize,
    pub ops_info: usize,
    pub ops_fail: usize,
    pub results: Vec<CheckResult>,
    pub failovers: Vec<Failover>,
    pub recovered: bool,
    /// Seconds from the final heal until every master agreed on a leader.
    pub recovery_s: Option<f64>,
    /// Why the run did not test what it was asked to: a fault that was not
    /// injected or not healed, a nemesis that injected no fault. Any of
    /// them fails the run (a harness error), whatever the checkers say.
    #[serde(default)]
    pub harness_errors: Vec<String>,
    pub notes: Vec<String>,
    pub replay: String,
}

impl Verdict {
    /// The process exit code for this verdict.
    pub fn exit_code(&self) -> i32 {
        match self.validity {
            Validity::Invalid => 1,
            _ if !self.harness_errors.is_empty() => 2,
            Validity::Valid => 0,
            Validity::Unknown => 3,
        }
    }

    /// Valid: every checker passed and the faults asked for were injected
    /// and healed.
    pub fn is_valid(&self) -> bool {
        self.validity == Validity::Valid && self.harness_errors.is_empty()
    }
}

/// The harness errors of a run: the nemesis failed (a fault not injected,
/// or not healed before the next), the final heal failed, or the timeline
/// holds no fault at all although a nemesis was asked for (its checkers
/// would pass on a run without faults).
pub fn harness_errors(
    nemesis: Nemesis,
    nemesis_result: &Result<()>,
    heal_result: &Result<()>,
    events: &[NemesisEvent],
) -> Vec<String> {
    let mut errors = Vec::new();
    if let Err(e) = nemesis_result {
        errors.push(format!("the {} nemesis failed: {e:#}", nemesis.name()));
    }
    if let Err(e) = heal_result {
        errors.push(format!("the final heal failed: {e:#}"));
    }
    if nemesis != Nemesis::None && !events.iter().any(|e| e.kind == "fault") {
        errors.push(format!(
            "the {} nemesis injected no fault (no fault event in nemesis.jsonl)",
            nemesis.name()
        ));
    }
    errors
}

/// The run's validity: unknown when interrupted; invalid when a checker
/// found a violation (a finding stands even if a fault went wrong); unknown
/// when the harness failed (the run did not test what it was asked to:
/// never valid); otherwise the checkers' verdict.
pub fn judge(interrupted: bool, results: &[CheckResult], harness_errors: &[String]) -> Validity {
    if interrupted {
        Validity::Unknown
    } else if results.iter().any(|r| r.validity == Validity::Invalid) {
        Validity::Invalid
    } else if !harness_errors.is_empty() || results.iter().any(|r| r.validity == Validity::Unknown)
    {
        Validity::Unknown
    } else {
        Validity::Valid
    }
}

/// Runs one test; `abort` is cancelled on Ctrl-C.
pub async fn run(spec: &Spec, abort: CancellationToken) -> Result<Verdict> {
    let dir = &spec.run_dir;
    std::fs::create_dir_all(dir.join("logs"))?;
    let data_tmp;
    let data_root: PathBuf = if spec.keep_data {
        dir.join("data")
    } else {
        data_tmp = tempfile::Builder::new()
            .prefix("flotilla-jepsen-")
            .tempdir()
            .context("temporary data directory")?;
        data_tmp.path().to_path_buf()
    };
    let clock = Clock::start();
    let rec = Recorder::new(Some(&dir.join("history.jsonl")))?;
    let mut tl = Timeline::new(Some(&dir.join("nemesis.jsonl")), clock)?;
    let mut cluster = Cluster::new(
        spec.cluster.clone(),
        &spec.net,
        &data_root,
        &dir.join("logs"),
    );
    let mut notes = Vec::new();

    cluster.start_all()?;
    let leader = cluster
        .wait_ready(Duration::from_secs(60))
        .await
        .context("the cluster did not start")?;
    tl.record(
        "info",
        "start",
        format!("cluster ready, leader {}", cluster.nodes[leader].name),
        vec![],
    );

    let ctx = Ctx {
        nodes: cluster.client_addrs(),
        clock,
        rec: rec.clone(),
        op_timeout: Duration::from_millis(spec.op_timeout_ms),
        seed: spec.seed,
        stop: CancellationToken::new(),
        // Cancelled at the end of the run too; `abort` itself only on Ctrl-C.
        abort: abort.child_token(),
        serializable_reads: spec.serializable_reads,
        watch_floor: Default::default(),
    };
    let stop_on_abort = {
        let (abort, stop) = (abort.clone(), ctx.stop.clone());
        tokio::spawn(async move {
            abort.cancelled().await;
            stop.cancel();
        })
    };
    let watch_start = if spec.workloads.iter().any(|w| w == "watch") {
        workload::current_revision(&ctx, Duration::from_secs(20)).await? + 1
    } else {
        0
    };
    let mut running = workload::start(&ctx, &spec.workloads, watch_start);

    // Faults.
    let nem = nemesis::run(
        spec.nemesis,
        &mut cluster,
        spec.seed,
        Duration::from_secs(spec.duration_s),
        &mut tl,
        &abort,
        &ctx.watch_floor,
    )
    .await;
    if let Err(e) = &nem {
        tl.record("error", &spec.nemesis.name(), format!("{e:#}"), vec![]);
    }

    // Heal everything; the cluster must recover.
    let healed_at = clock.now();
    let heal = nemesis::heal_all(&mut cluster, &mut tl).await;
    if let Err(e) = &heal {
        tl.record("error", "final", format!("{e:#}"), vec![]);
    }
    let ready = if abort.is_cancelled() {
        Err(anyhow::anyhow!("interrupted"))
    } else {
        cluster
            .wait_ready(Duration::from_secs(spec.recovery_timeout_s))
            .await
    };
    let recovered = ready.is_ok();
    let recovery_s = recovered.then(|| (clock.now() - healed_at) as f64 / 1e6);
    match &ready {
        Ok(l) => tl.record(
            "info",
            "final",
            format!(
                "recovered: every master agrees on leader {}",
                cluster.nodes[*l].name
            ),
            vec![],
        ),
        Err(e) => tl.record("info", "final", format!("not recovered: {e:#}"), vec![]),
    }
    // Let the clients work against the healed cluster for a moment.
    if recovered {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(3)) => {}
            _ = abort.cancelled() => {}
        }
    }

    // Stop the load; requests in flight end within their deadline.
    ctx.stop.cancel();
    let drain = Duration::from_millis(spec.op_timeout_ms) + Duration::from_secs(5);
    if tokio::time::timeout(drain, async {
        while running.tasks.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        notes.push("some workers did not stop in time".into());
        running.tasks.abort_all();
    }

    // Final reads.
    if spec.workloads.iter().any(|w| w == "set") && !abort.is_cancelled() {
        workload::set_final_read(&ctx, Duration::from_secs(30)).await;
    }
    let mut targets = Vec::new();
    if let Some(target) = running.watch_target.take() {
        let max = rec
            .entries()
            .iter()
            .filter_map(|e| match e.op {
                Op::WatchPut {
                    revision: Some(r), ..
                } if e.status == Status::Ok => Some(r),
                _ => None,
            })
            .max();
        let _ = target.send(Some(max.unwrap_or(watch_start)));
        targets.push(target);
    }
    if let Some(target) = running.objects_target.take() {
        if !abort.is_cancelled() {
            let last = crate::objects::final_read(&ctx, Duration::from_secs(30)).await;
            let _ = target.send(last);
            crate::objects::final_created(&ctx, Duration::from_secs(30)).await;
        }
        targets.push(target);
    }
    if !targets.is_empty()
        && tokio::time::timeout(Duration::from_secs(30), async {
            while running.watchers.join_next().await.is_some() {}
        })
        .await
        .is_err()
    {
        notes.push("watchers did not catch up within 30 s".into());
    }
    drop(targets);
    running.watchers.abort_all();
    ctx.abort.cancel();
    stop_on_abort.abort();
    rec.flush();

    // Every master must hold the same store once the faults are healed
    // (recovered: every master is a member again, running).
    let diverged = if recovered && !abort.is_cancelled() {
        Some(crate::replicas::compare(&cluster.client_addrs(), Duration::from_secs(30)).await)
    } else {
        None
    };

    // Masters that died on their own are a finding.
    let mut crashed: Vec<String> = tl
        .events
        .iter()
        .filter(|e| e.action.contains("exited on its own"))
        .map(|e| e.action.clone())
        .collect();
    for i in 0..cluster.nodes.len() {
        if !cluster.nodes[i].removed && cluster.nodes[i].pid().is_some() && !cluster.is_running(i) {
            crashed.push(format!("{} exited on its own", cluster.nodes[i].name));
        }
    }
    cluster.kill_all();

    // Check.
    let history = rec.entries();
    let busy = checker::busy_windows(&tl.events);
    let mut results = checker::check_all(&spec.workloads, &history, &busy);
    let mut cluster_violations = Vec::new();
    if !recovered && !abort.is_cancelled() {
        cluster_violations.push(Violation {
            kind: "no-recovery".into(),
            message: format!(
                "the cluster did not recover within {} s after every fault was healed: {:#}",
                spec.recovery_timeout_s,
                ready.as_ref().err().unwrap()
            ),
            excerpt: Vec::new(),
        });
    }
    for d in diverged.iter().flat_map(|c| &c.differences) {
        cluster_violations.push(Violation {
            kind: "replicas-diverge".into(),
            message: d.clone(),
            excerpt: Vec::new(),
        });
    }
    for c in &crashed {
        cluster_violations.push(Violation {
            kind: "master-crashed".into(),
            message: format!("{c} (see logs/)"),
            excerpt: Vec::new(),
        });
    }
    results.push(CheckResult::new(
        "cluster",
        json!({
            "recovered": recovered,
            "recovery_s": recovery_s,
            "replicas": diverged.as_ref().map(|c| json!({
                "revision": c.revision,
                "keys": c.keys,
                "agreeing": c.agreeing,
            })),
        }),
        cluster_violations,
    ));
    let harness_errors = harness_errors(spec.nemesis, &nem, &heal, &tl.events);
    if abort.is_cancelled() {
        notes.push("interrupted".into());
    }
    let validity = judge(abort.is_cancelled(), &results, &harness_errors);
    let count = |s: Status| history.iter().filter(|e| e.status == s).count();
    let real_ops = |s: Option<Status>| {
        history
            .iter()
            .filter(|e| !e.op.is_watch_record())
            .filter(|e| s.is_none_or(|s| e.status == s))
            .count()
    };
    let failovers = failover::failovers(&history, &tl.events);
    let verdict = Verdict {
        target: spec.target,
        nemesis: spec.nemesis.name(),
        seed: spec.seed,
        workloads: spec.workloads.clone(),
        duration_s: spec.duration_s,
        validity,
        ops: real_ops(None),
        ops_ok: real_ops(Some(Status::Ok)),
        ops_info: count(Status::Info),
        ops_fail: count(Status::Fail),
        results,
        failovers: failovers.clone(),
        recovered,
        recovery_s,
        harness_errors,
        notes,
        replay: spec.replay.clone(),
    };
    write_json(&dir.join("verdict.json"), &verdict)?;
    write_json(&dir.join("failover.json"), &failovers)?;
    Ok(verdict)
}

pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(value)? + "\n")
        .with_context(|| format!("write {}", path.display()))
}

/// Prints a verdict's violations, briefly.
pub fn print_violations(v: &Verdict) {
    for r in &v.results {
        for viol in r.violations.iter().take(5) {
            println!("    [{}] {}: {}", r.checker, viol.kind, viol.message);
            // The last operations of an excerpt are the ones that matter.
            for e in viol
                .excerpt
                .iter()
                .skip(viol.excerpt.len().saturating_sub(8))
            {
                println!("        {}", serde_json::to_string(e).unwrap_or_default());
            }
        }
        if let Some(n) = &r.note {
            println!("    [{}] note: {n}", r.checker);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, nemesis: &str) -> NemesisEvent {
        NemesisEvent {
            time: 1,
            kind: kind.into(),
            nemesis: nemesis.into(),
            action: "x".into(),
            nodes: vec![],
        }
    }

    fn passed() -> Vec<CheckResult> {
        vec![CheckResult::new("register", json!({}), vec![])]
    }

    #[test]
    fn a_clean_run_with_its_faults_is_valid() {
        let events = [
            event("info", "start"),
            event("fault", "kill-leader"),
            event("heal", "kill-leader"),
            event("heal", "final"),
        ];
        let errors = harness_errors(Nemesis::KillLeader, &Ok(()), &Ok(()), &events);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(judge(false, &passed(), &errors), Validity::Valid);
        // The baseline asks for no fault.
        let errors = harness_errors(Nemesis::None, &Ok(()), &Ok(()), &events[..1]);
        assert_eq!(judge(false, &passed(), &errors), Validity::Valid);
    }

    #[test]
    fn a_fault_not_injected_or_not_healed_is_a_harness_error() {
        let events = [event("fault", "clock"), event("heal", "final")];
        let failed: Result<()> = Err(anyhow::anyhow!("n2's wall clock did not move"));
        let errors = harness_errors(Nemesis::Clock, &failed, &Ok(()), &events);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("clock nemesis failed"), "{errors:?}");
        assert!(errors[0].contains("did not move"), "{errors:?}");
        assert_ne!(judge(false, &passed(), &errors), Validity::Valid);

        let heal: Result<()> = Err(anyhow::anyhow!("iptables-restore in fjab12n1: exit 1"));
        let errors = harness_errors(Nemesis::PartitionLeader, &Ok(()), &heal, &events);
        assert!(errors[0].contains("final heal failed"), "{errors:?}");
        assert!(errors[0].contains("iptables-restore"), "{errors:?}");
        assert_ne!(judge(false, &passed(), &errors), Validity::Valid);
    }

    #[test]
    fn a_run_without_any_fault_event_is_a_harness_error() {
        let events = [
            event("info", "start"),
            event("info", "member"),
            event("heal", "final"),
        ];
        let errors = harness_errors(Nemesis::Member, &Ok(()), &Ok(()), &events);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].contains("member nemesis injected no fault"),
            "{errors:?}"
        );
        assert_ne!(judge(false, &passed(), &errors), Validity::Valid);
    }

    #[test]
    fn a_violation_stands_even_when_a_fault_went_wrong() {
        let bad = vec![CheckResult::new(
            "set",
            json!({}),
            vec![Violation {
                kind: "lost-add".into(),
                message: "m".into(),
                excerpt: vec![],
            }],
        )];
        let errors = vec!["the lossy nemesis failed: x".to_string()];
        assert_eq!(judge(false, &bad, &errors), Validity::Invalid);
        assert_eq!(judge(true, &passed(), &[]), Validity::Unknown);
    }
}
