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
    /// partition-flapping, member, one-way-leader, lossy, member-kill,
    /// member-partition, clock, snapshot-kill, compact, power-loss. Each
    /// nemesis gets its own runs.
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
    /// Every nemesis and workload once, 8 s of faults each (about 7
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
    #[arg(long, default_value = flotilla_testkit::ETCD_BIN)]
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
    /// Deliberately unsafe: Flotilla's masters run with `--unsafe-no-fsync`
    /// (the Raft log and the vote are not fsynced). To check that the
    /// power-loss nemesis catches a store that acknowledges before it
    /// fsyncs (its runs should then fail). etcd 3.4 has no such flag.
    #[arg(long)]
    pub unsafe_no_fsync: bool,
    /// The `flotilla-lazyfs` binary of the power-loss nemesis (default:
    /// beside this binary).
    #[arg(long)]
    pub lazyfs_bin: Option<PathBuf>,
    /// The power-loss nemesis's disks are slow: each fsync takes a random
    /// time from 0 to MS milliseconds (`flotilla-lazyfs --fsync-delay-ms`).
    /// With fsyncs that finish at once, a power cut seldom finds a leader
    /// whose followers hold entries it has not yet fsynced; a slow disk
    /// makes that the common case. 0: fsyncs at once.
    #[arg(long, value_name = "MS", default_value_t = POWER_LOSS_FSYNC_DELAY_MS)]
    pub power_loss_fsync_delay_ms: u64,
}

/// See [`RunArgs::power_loss_fsync_delay_ms`].
pub const POWER_LOSS_FSYNC_DELAY_MS: u64 = 20;

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
    if args.unsafe_no_fsync && targets.contains(&Target::Etcd) {
        bail!("--unsafe-no-fsync: etcd 3.4 has no such flag; use --target flotilla");
    }
    let lazyfs_bin = args
        .lazyfs_bin
        .clone()
        .unwrap_or_else(|| exe.with_file_name("flotilla-lazyfs"));
    if nemeses.contains(&Nemesis::PowerLoss) {
        if !lazyfs_bin.exists() {
            bail!(
                "the power-loss nemesis needs {} (cargo build --release -p flotilla-lazyfs)",
                lazyfs_bin.display()
            );
        }
        if !Path::new("/dev/fuse").exists() {
            bail!("the power-loss nemesis needs /dev/fuse (modprobe fuse)");
        }
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
    let lazyfs_bin = if nemeses.contains(&Nemesis::PowerLoss) {
        let copy = out.join("flotilla-lazyfs");
        std::fs::copy(&lazyfs_bin, &copy)
            .with_context(|| format!("copy {} to {}", lazyfs_bin.display(), copy.display()))?;
        copy
    } else {
        lazyfs_bin
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

    // Every run is planned first, so that the end can tell whether each
    // one got its verdict.
    let mut plan = Vec::new();
    for &target in &targets {
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
                let run_seed = seed + k;
                let name = format!("{target}-{}-{k}", nemesis.name());
                let replay = format!(
                    "tests/jepsen/run --target {target} --nemesis {} --workload {} --duration {duration} --nodes {} --seed {run_seed} --runs 1{}",
                    nemesis.name(),
                    workloads.join(","),
                    args.nodes,
                    if args.serializable_reads { " --serializable-reads" } else { "" }
                ) + if args.unsafe_no_fsync { " --unsafe-no-fsync" } else { "" };
                plan.push(SpecBase {
                    target,
                    nemesis,
                    workloads: workloads.clone(),
                    duration,
                    seed: run_seed,
                    dir: out.join(&name),
                    replay,
                });
            }
        }
    }
    let planned = plan.len();
    if planned == 0 {
        bail!("no run to do: every target, nemesis and workload asked for was skipped");
    }
    println!("[jepsen] {planned} runs planned");

    let mut summaries = Vec::new();
    for spec_base in plan {
        if interrupted.load(Ordering::SeqCst) {
            break;
        }
        let s = run_one(
            &args,
            &flotilla_bin,
            &lazyfs_bin,
            &exe,
            spec_base,
            &interrupted,
        )
        .await;
        summaries.push(s);
    }

    let table = summary_table(&summaries);
    println!("\n{table}");
    std::fs::write(out.join("summary.md"), &table)?;
    runner::write_json(&out.join("summary.json"), &summaries)?;
    let code = exit_code(&summaries, planned);
    if code == 0 {
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
    if code == 0 {
        println!(
            "[jepsen] all {} runs valid (seed {seed}); {}",
            summaries.len(),
            out.display()
        );
        return Ok(0);
    }
    if summaries.len() != planned {
        println!(
            "[jepsen] only {} of {planned} planned runs have a verdict",
            summaries.len()
        );
    }
    println!(
        "[jepsen] {} of {planned} planned runs not valid:",
        failed.len() + planned - summaries.len()
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
    Ok(code)
}

/// The exit code of an invocation that was not interrupted: 0 only when
/// every planned run has a verdict and every verdict is valid; 1 when a
/// checker found a violation; 2 otherwise (a harness error, a run without
/// a verdict, an undecided checker).
pub fn exit_code(summaries: &[RunSummary], planned: usize) -> i32 {
    if summaries
        .iter()
        .any(|s| s.validity == Some(Validity::Invalid))
    {
        1
    } else if planned > 0
        && summaries.len() == planned
        && summaries
            .iter()
            .all(|s| s.validity == Some(Validity::Valid))
    {
        0
    } else {
        2
    }
}

/// Fills a run's summary line from its verdict. A harness error (a fault
/// not injected or not healed, no fault at all) makes the run a harness
/// error unless a checker found a violation.
pub fn summarize(summary: &mut RunSummary, v: &Verdict) {
    summary.validity = if v.validity != Validity::Invalid && !v.harness_errors.is_empty() {
        None
    } else {
        Some(v.validity)
    };
    if !v.harness_errors.is_empty() {
        summary.error = Some(format!("harness error: {}", v.harness_errors.join("; ")));
    }
    summary.ops = v.ops;
    summary.violations = v.results.iter().map(|r| r.violations.len()).sum();
    summary.failover_ms = v
        .failovers
        .iter()
        .filter(|f| f.nemesis != "final")
        .filter_map(|f| f.failover_ms)
        .collect();
    summary.recovery_s = v.recovery_s;
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
    lazyfs_bin: &Path,
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
                lazyfs: (b.nemesis == Nemesis::PowerLoss).then(|| lazyfs_bin.to_path_buf()),
                lazyfs_fsync_delay_ms: args.power_loss_fsync_delay_ms,
                extra_args: if args.unsafe_no_fsync {
                    vec!["--unsafe-no-fsync".into()]
                } else {
                    Vec::new()
                },
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
            summarize(&mut summary, &v);
            let fo = p50_max(&summary.failover_ms)
                .map(|(p, m)| format!("failover p50 {p:.0} ms, max {m:.0} ms"))
                .unwrap_or_else(|| "no failover measured".into());
            println!(
                "[jepsen] {} / {} / seed {}: {}, {} ops ({} ok, {} unknown, {} failed), {} violations, {fo}",
                summary.target,
                summary.nemesis,
                b.seed,
                match summary.validity {
                    Some(x) => format!("{x:?}"),
                    None => "HARNESS ERROR".into(),
                },
                v.ops,
                v.ops_ok,
                v.ops_info,
                v.ops_fail,
                summary.violations
            );
            for e in &v.harness_errors {
                println!("    HARNESS ERROR: {e}");
            }
            // Every note of every run: a valid run's notes matter too.
            for n in &v.notes {
                println!("    note: {n}");
            }
            if !v.is_valid() {
                runner::print_violations(&v);
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

    fn verdict(validity: Validity, harness_errors: &[&str]) -> Verdict {
        Verdict {
            target: Target::Flotilla,
            nemesis: "clock".into(),
            seed: 1,
            workloads: vec!["register".into()],
            duration_s: 8,
            validity,
            ops: 10,
            ops_ok: 10,
            ops_info: 0,
            ops_fail: 0,
            results: vec![],
            failovers: vec![],
            recovered: true,
            recovery_s: Some(0.5),
            harness_errors: harness_errors.iter().map(|e| e.to_string()).collect(),
            notes: vec![],
            replay: String::new(),
        }
    }

    fn summary_of(v: &Verdict) -> RunSummary {
        let mut s = RunSummary {
            dir: "d".into(),
            target: "flotilla".into(),
            nemesis: v.nemesis.clone(),
            seed: v.seed,
            validity: None,
            ops: 0,
            violations: 0,
            failover_ms: vec![],
            recovery_s: None,
            error: None,
            replay: String::new(),
        };
        summarize(&mut s, v);
        s
    }

    #[test]
    fn a_run_with_a_harness_error_fails_the_invocation_and_names_the_fault() {
        let clean = summary_of(&verdict(Validity::Valid, &[]));
        assert_eq!(clean.validity, Some(Validity::Valid));
        assert_eq!(exit_code(std::slice::from_ref(&clean), 1), 0);

        // The checkers found nothing, but the fault was not injected.
        let err = "the clock nemesis failed: n2's wall clock did not move";
        let broken = summary_of(&verdict(Validity::Unknown, &[err]));
        assert_eq!(broken.validity, None);
        assert!(
            broken.error.as_deref().unwrap_or("").contains(err),
            "{broken:?}"
        );
        assert_eq!(exit_code(&[clean.clone(), broken], 2), 2);
        // Even if a verdict said valid (an old verdict.json), its harness
        // errors win.
        let said_valid = summary_of(&verdict(Validity::Valid, &[err]));
        assert_eq!(said_valid.validity, None);
        assert_eq!(exit_code(&[said_valid], 1), 2);

        // A violation stands; it is exit 1.
        let bad = summary_of(&verdict(Validity::Invalid, &[err]));
        assert_eq!(exit_code(&[clean, bad], 2), 1);
    }

    #[test]
    fn every_planned_run_needs_a_valid_verdict() {
        let clean = summary_of(&verdict(Validity::Valid, &[]));
        // A planned run without a summary, or nothing planned at all.
        assert_eq!(exit_code(std::slice::from_ref(&clean), 2), 2);
        assert_eq!(exit_code(&[], 0), 2);
        assert_eq!(exit_code(&[clean.clone(), clean], 2), 0);
    }

    #[test]
    fn timestamp_has_the_expected_shape() {
        let t = utc_timestamp();
        assert_eq!(t.len(), 15, "{t}");
        assert!(t.starts_with("20"), "{t}");
    }
}
