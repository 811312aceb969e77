//! The runs of one invocation, from the root namespace: for each target,
//! nemesis and run, build the sealed network, re-execute this binary inside
//! the clients' namespace for the run itself, remove the network, and
//! summarise.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::checker::failover::p50_max;
use crate::checker::Validity;
use crate::cluster::{ClusterOpts, Target};
use crate::nemesis::Nemesis;
use crate::netns::{self, Topology};
use crate::runner::{self, Spec, Verdict};
use crate::workload;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TargetArg {
    Flotilla,
    Etcd,
    /// Flotilla, then etcd, with the same seeds.
    Both,
}

#[derive(Clone, Debug, clap::Args)]
pub struct RunArgs {
    /// What to test.
    #[arg(long, value_enum, default_value = "flotilla")]
    pub target: TargetArg,
    /// Nemesis: `all`, `none`, or a comma-separated list of kill-leader,
    /// kill-random, kill-majority, pause-leader, pause-random,
    /// partition-leader, partition-halves, partition-bridge,
    /// partition-flapping, member, one-way-leader, lossy. Each nemesis gets its own runs.
    #[arg(long, default_value = "all")]
    pub nemesis: String,
    /// Workloads run together in each run: `all` or a comma-separated list
    /// of register, set, watch, lease.
    #[arg(long, default_value = "all")]
    pub workload: String,
    /// Runs per target and nemesis (run k uses seed SEED+k).
    #[arg(long, default_value_t = 1)]
    pub runs: u64,
    /// Seconds of faults per run (then heal, recovery and final reads).
    #[arg(long)]
    pub duration: Option<u64>,
    /// Base seed of the nemesis schedule and the clients' choices (default:
    /// from the clock). Printed, so that a run can be replayed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Every nemesis and workload once, 8 s of faults each (about 2.5
    /// minutes per target).
    #[arg(long)]
    pub quick: bool,
    /// Masters per cluster (3 or 5).
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Folder that receives the run folder `<timestamp>-<seed>/`.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/runs"))]
    pub runs_dir: PathBuf,
    /// The flotilla binary (default: `flotilla` beside this binary).
    #[arg(long)]
    pub flotilla_bin: Option<PathBuf>,
    /// The etcd binary.
    #[arg(long, default_value = "/usr/bin/etcd")]
    pub etcd_bin: PathBuf,
    /// `--snapshot-logs` of the masters (etcd: `--snapshot-count`); small, to
    /// exercise snapshots during the faults.
    #[arg(long, default_value_t = 1000)]
    pub snapshot_logs: u64,
    /// Heartbeat interval of the masters (and of etcd), in milliseconds.
    #[arg(long, default_value_t = 50)]
    pub heartbeat_ms: u64,
    /// Election timeout of the masters and of etcd, in milliseconds. The
    /// defaults (50/250) are valid for both, so both run with the same
    /// timing; etcd refuses an election timeout under five heartbeats and
    /// is given five heartbeats if this is less.
    #[arg(long, default_value_t = 250)]
    pub election_ms: u64,
    /// Deadline of each client request; past it the outcome is unknown.
    #[arg(long, default_value_t = 2000)]
    pub op_timeout_ms: u64,
    /// Seconds the cluster has to recover after the final heal.
    #[arg(long, default_value_t = 30)]
    pub recovery_timeout: u64,
    /// Keep the masters' data directories in the run folders.
    #[arg(long)]
    pub keep_data: bool,
    /// Deliberately unsafe: register reads with `serializable: true`, which
    /// may be stale on a partitioned master. To check that the register
    /// checker catches stale reads end to end (a run should then fail).
    #[arg(long)]
    pub serializable_reads: bool,
}

/// One line of the summary.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunSummary {
    pub dir: String,
    pub target: String,
    pub nemesis: String,
    pub seed: u64,
    pub validity: Option<Validity>,
    pub ops: usize,
    pub violations: usize,
    pub failover_ms: Vec<f64>,
    pub recovery_s: Option<f64>,
    pub error: Option<String>,
    pub replay: String,
}

/// Whether the effective user is root (from /proc/self/status).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

fn utc_timestamp() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

fn parse_list<T>(
    s: &str,
    all: &[T],
    parse: impl Fn(&str) -> Option<T>,
    what: &str,
) -> Result<Vec<T>>
where
    T: Clone,
{
    if s == "all" {
        return Ok(all.to_vec());
    }
    s.split(',')
        .map(|x| parse(x.trim()).with_context(|| format!("unknown {what} {x:?}")))
        .collect()
}

pub async fn run(args: RunArgs) -> Result<i32> {
    if !is_root() {
        bail!("network namespaces need root");
    }
    let quick = args.quick;
    let duration = args.duration.unwrap_or(if quick { 8 } else { 30 });
    let nemeses = parse_list(
        if quick { "all" } else { &args.nemesis },
        &Nemesis::ALL,
        |s| serde_json::from_value(serde_json::Value::String(s.into())).ok(),
        "nemesis",
    )?;
    let workloads: Vec<String> = parse_list(
        if quick { "all" } else { &args.workload },
        &workload::ALL.map(String::from),
        |s| workload::ALL.contains(&s).then(|| s.to_string()),
        "workload",
    )?;
    let runs = if quick { 1 } else { args.runs.max(1) };
    let targets = match args.target {
        TargetArg::Flotilla => vec![Target::Flotilla],
        TargetArg::Etcd => vec![Target::Etcd],
        TargetArg::Both => vec![Target::Flotilla, Target::Etcd],
    };
    if !(3..=9).contains(&args.nodes) {
        bail!("--nodes must be between 3 and 9");
    }
    let stale = netns::cleanup_stale();
    if !stale.is_empty() {
        println!("[jepsen] removed leftovers of dead runs: {stale:?}");
    }
    let exe = std::env::current_exe()?;
    let flotilla_bin = args
        .flotilla_bin
        .clone()
        .unwrap_or_else(|| exe.with_file_name("flotilla"));
    for t in &targets {
        let bin = match t {
            Target::Flotilla => &flotilla_bin,
            Target::Etcd => &args.etcd_bin,
        };
        if !bin.exists() {
            bail!("{} is missing", bin.display());
        }
    }
    if nemeses.contains(&Nemesis::Clock)
        && targets.contains(&Target::Flotilla)
        && !Path::new(crate::cluster::LIBFAKETIME).exists()
    {
        bail!(
            "the clock nemesis needs {} (apt-get install libfaketime)",
            crate::cluster::LIBFAKETIME
        );
    }
    let seed = args.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() % 1_000_000)
            .unwrap_or(1)
    });
    let out = args.runs_dir.join(format!("{}-{seed}", utc_timestamp()));
    std::fs::create_dir_all(&out).with_context(|| format!("create {}", out.display()))?;
    // Use a private copy of the flotilla binary: a rebuild by someone else
    // during the runs must not change the masters that restart mid-run.
    let flotilla_bin = if targets.contains(&Target::Flotilla) {
        let copy = out.join("flotilla");
        std::fs::copy(&flotilla_bin, &copy)
            .with_context(|| format!("copy {} to {}", flotilla_bin.display(), copy.display()))?;
        copy
    } else {
        flotilla_bin
    };
    let exe = {
        let copy = out.join("flotilla-jepsen");
        std::fs::copy(&exe, &copy)
            .with_context(|| format!("copy {} to {}", exe.display(), copy.display()))?;
        copy
    };
    println!(
        "[jepsen] seed {seed}; {} target(s) x {} nemesis(es) x {runs} run(s) of {duration} s; workloads {}; output {}",
        targets.len(),
        nemeses.len(),
        workloads.join(","),
        out.display()
    );

    // Ctrl-C / SIGTERM: let the current run stop and clean up, then stop.
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let flag = interrupted.clone();
        tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            loop {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
                }
                flag.store(true, Ordering::SeqCst);
                eprintln!("[jepsen] interrupted: stopping the current run and cleaning up");
            }
        });
    }

    let mut summaries = Vec::new();
    'all: for &target in &targets {
        // etcd serves no object API: the objects workload is Flotilla's only.
        let workloads: Vec<String> = workloads
            .iter()
            .filter(|w| target == Target::Flotilla || w.as_str() != "objects")
            .cloned()
            .collect();
        if workloads.is_empty() {
            println!("[jepsen] {target}: no workload applies; skipped");
            continue;
        }
        for &nemesis in &nemeses {
            if nemesis == Nemesis::Clock && target == Target::Etcd {
                println!(
                    "[jepsen] etcd / clock: skipped (libfaketime cannot reach etcd: Go reads the clock through the vDSO)"
                );
                continue;
            }
            for k in 0..runs {
                if interrupted.load(Ordering::SeqCst) {
                    break 'all;
                }
                let run_seed = seed + k;
                let name = format!("{target}-{}-{k}", nemesis.name());
                let dir = out.join(&name);
                let replay = format!(
                    "tests/jepsen/run --target {target} --nemesis {} --workload {} --duration {duration} --nodes {} --seed {run_seed} --runs 1{}",
                    nemesis.name(),
                    workloads.join(","),
                    args.nodes,
                    if args.serializable_reads { " --serializable-reads" } else { "" }
                );
                let spec_base = SpecBase {
                    target,
                    nemesis,
                    workloads: workloads.clone(),
                    duration,
                    seed: run_seed,
                    dir: dir.clone(),
                    replay,
                };
                let s = run_one(&args, &flotilla_bin, &exe, spec_base, &interrupted).await;
                summaries.push(s);
            }
        }
    }

    let table = summary_table(&summaries);
    println!("\n{table}");
    std::fs::write(out.join("summary.md"), &table)?;
    runner::write_json(&out.join("summary.json"), &summaries)?;
    let all_valid = summaries
        .iter()
        .all(|s| s.validity == Some(Validity::Valid));
    if all_valid {
        // The binaries are kept only to reproduce a failure.
        let _ = std::fs::remove_file(out.join("flotilla"));
        let _ = std::fs::remove_file(out.join("flotilla-jepsen"));
    }
    let failed: Vec<&RunSummary> = summaries
        .iter()
        .filter(|s| s.validity != Some(Validity::Valid))
        .collect();
    if interrupted.load(Ordering::SeqCst) {
        println!("[jepsen] interrupted; results so far in {}", out.display());
        return Ok(130);
    }
    if failed.is_empty() {
        println!(
            "[jepsen] all {} runs valid (seed {seed}); {}",
            summaries.len(),
            out.display()
        );
        return Ok(0);
    }
    println!(
        "[jepsen] {} of {} runs not valid:",
        failed.len(),
        summaries.len()
    );
    for f in &failed {
        println!(
            "  {} {} seed {}: {} ({})\n    replay: {}",
            f.target,
            f.nemesis,
            f.seed,
            match f.validity {
                Some(Validity::Invalid) => "VIOLATION",
                Some(_) => "unknown",
                None => "harness error",
            },
            f.error.clone().unwrap_or_else(|| f.dir.clone()),
            f.replay
        );
    }
    let any_violation = failed.iter().any(|f| f.validity == Some(Validity::Invalid));
    Ok(if any_violation { 1 } else { 2 })
}

struct SpecBase {
    target: Target,
    nemesis: Nemesis,
    workloads: Vec<String>,
    duration: u64,
    seed: u64,
    dir: PathBuf,
    replay: String,
}

async fn run_one(
    args: &RunArgs,
    flotilla_bin: &Path,
    exe: &Path,
    b: SpecBase,
    interrupted: &AtomicBool,
) -> RunSummary {
    let mut summary = RunSummary {
        dir: b.dir.display().to_string(),
        target: b.target.to_string(),
        nemesis: b.nemesis.name(),
        seed: b.seed,
        validity: None,
        ops: 0,
        violations: 0,
        failover_ms: Vec::new(),
        recovery_s: None,
        error: None,
        replay: b.replay.clone(),
    };
    println!(
        "[jepsen] {} / {} / seed {} ...",
        summary.target, summary.nemesis, b.seed
    );
    let res = async {
        std::fs::create_dir_all(&b.dir)?;
        let run_id = netns::new_run_id();
        let topo = Topology::create(&run_id, args.nodes).context("create the test network")?;
        let spec = Spec {
            target: b.target,
            nemesis: b.nemesis,
            workloads: b.workloads.clone(),
            duration_s: b.duration,
            seed: b.seed,
            run_dir: b.dir.clone(),
            net: topo.spec.clone(),
            cluster: ClusterOpts {
                target: b.target,
                flotilla_bin: flotilla_bin.to_path_buf(),
                etcd_bin: args.etcd_bin.clone(),
                heartbeat_ms: args.heartbeat_ms,
                election_ms: args.election_ms,
                snapshot_logs: args.snapshot_logs,
                fake_clock: (b.nemesis == Nemesis::Clock)
                    .then(|| PathBuf::from(crate::cluster::LIBFAKETIME)),
            },
            op_timeout_ms: args.op_timeout_ms,
            keep_data: args.keep_data,
            recovery_timeout_s: args.recovery_timeout,
            replay: b.replay.clone(),
            serializable_reads: args.serializable_reads,
        };
        let spec_path = b.dir.join("spec.json");
        runner::write_json(&spec_path, &spec)?;
        let mut child = tokio::process::Command::new("ip")
            .args(["netns", "exec", &topo.spec.client_ns])
            .arg(exe)
            .arg("inner")
            .arg("--spec")
            .arg(&spec_path)
            .kill_on_drop(true)
            .spawn()
            .context("start the run in the client namespace")?;
        // Wait; once interrupted, give the run 30 s to wind down.
        let status = loop {
            tokio::select! {
                s = child.wait() => break s?,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {
                    if interrupted.load(Ordering::SeqCst) {
                        match tokio::time::timeout(Duration::from_secs(30), child.wait()).await {
                            Ok(s) => break s?,
                            Err(_) => {
                                let _ = child.kill().await;
                                bail!("run did not stop after the interrupt; killed");
                            }
                        }
                    }
                }
            }
        };
        drop(topo);
        let verdict_path = b.dir.join("verdict.json");
        let text = std::fs::read_to_string(&verdict_path).with_context(|| {
            format!(
                "no verdict (the run exited with {status}); see {}",
                b.dir.display()
            )
        })?;
        let v: Verdict = serde_json::from_str(&text)?;
        Ok::<_, anyhow::Error>(v)
    }
    .await;
    match res {
        Ok(v) => {
            summary.validity = Some(v.validity);
            summary.ops = v.ops;
            summary.violations = v.results.iter().map(|r| r.violations.len()).sum();
            summary.failover_ms = v
                .failovers
                .iter()
                .filter(|f| f.nemesis != "final")
                .filter_map(|f| f.failover_ms)
                .collect();
            summary.recovery_s = v.recovery_s;
            let fo = p50_max(&summary.failover_ms)
                .map(|(p, m)| format!("failover p50 {p:.0} ms, max {m:.0} ms"))
                .unwrap_or_else(|| "no failover measured".into());
            println!(
                "[jepsen] {} / {} / seed {}: {:?}, {} ops ({} ok, {} unknown, {} failed), {} violations, {fo}",
                summary.target,
                summary.nemesis,
                b.seed,
                v.validity,
                v.ops,
                v.ops_ok,
                v.ops_info,
                v.ops_fail,
                summary.violations
            );
            if v.validity != Validity::Valid {
                runner::print_violations(&v);
                for n in &v.notes {
                    println!("    note: {n}");
                }
                println!("    replay: {}", b.replay);
            }
        }
        Err(e) => {
            println!(
                "[jepsen] {} / {}: harness error: {e:#}",
                summary.target, summary.nemesis
            );
            summary.error = Some(format!("{e:#}"));
        }
    }
    summary
}

/// Markdown table per target and nemesis.
pub fn summary_table(runs: &[RunSummary]) -> String {
    let mut groups: BTreeMap<(String, String), Vec<&RunSummary>> = BTreeMap::new();
    for r in runs {
        groups
            .entry((r.target.clone(), r.nemesis.clone()))
            .or_default()
            .push(r);
    }
    let mut s = String::from(
        "| target | nemesis | runs | ops | violations | unknown/error runs | failover p50 | failover max | recovery max |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    for ((t, n), rs) in &groups {
        let fo: Vec<f64> = rs.iter().flat_map(|r| r.failover_ms.clone()).collect();
        let (p50, max) = p50_max(&fo)
            .map(|(p, m)| (format!("{p:.0} ms"), format!("{m:.0} ms")))
            .unwrap_or(("-".into(), "-".into()));
        let rec = rs
            .iter()
            .filter_map(|r| r.recovery_s)
            .fold(None, |a: Option<f64>, x| Some(a.map_or(x, |a| a.max(x))))
            .map(|x| format!("{x:.1} s"))
            .unwrap_or("-".into());
        let violations: usize = rs.iter().map(|r| r.violations).sum();
        let unknown = rs
            .iter()
            .filter(|r| !matches!(r.validity, Some(Validity::Valid) | Some(Validity::Invalid)))
            .count();
        s.push_str(&format!(
            "| {t} | {n} | {} | {} | {violations} | {unknown} | {p50} | {max} | {rec} |\n",
            rs.len(),
            rs.iter().map(|r| r.ops).sum::<usize>()
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_has_the_expected_shape() {
        let t = utc_timestamp();
        assert_eq!(t.len(), 15, "{t}");
        assert!(t.starts_with("20"), "{t}");
    }
}
