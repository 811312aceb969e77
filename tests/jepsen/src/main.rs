//! `flotilla-jepsen`: chaos tests of Flotilla's masters (and of etcd, for
//! comparison). See tests/jepsen/README.md; `tests/jepsen/run` wraps it.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use flotilla_jepsen::{checker, history, netns, orchestrate, runner};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "flotilla-jepsen",
    about = "Jepsen-style chaos tests: real masters in network namespaces, concurrent etcd v3 \
             clients, injected faults, and checkers for every answer"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run tests (as root): build a sealed network per run, start the
    /// masters, inject faults, check the histories.
    Run(Box<orchestrate::RunArgs>),
    /// Check the history of an earlier run folder again.
    Check {
        /// A run folder (holding spec.json and history.jsonl).
        dir: PathBuf,
    },
    /// Remove leftover namespaces of this harness (fj<id>sw/cl/n<i>), with
    /// the processes inside them. Only while no run is active.
    Cleanup {
        /// Only those of this run id (the 4 characters after `fj`).
        #[arg(long)]
        run_id: Option<String>,
    },
    /// Internal: one run, inside the clients' namespace.
    #[command(hide = true)]
    Inner {
        #[arg(long)]
        spec: PathBuf,
    },
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FLOTILLA_JEPSEN_LOG")
                .unwrap_or_else(|_| "warn,flotilla_jepsen=info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let code = match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            2
        }
    };
    std::process::exit(code);
}

fn real_main() -> Result<i32> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    match cli.command {
        Cmd::Run(args) => rt.block_on(orchestrate::run(*args)),
        Cmd::Inner { spec } => {
            let text = std::fs::read_to_string(&spec)
                .with_context(|| format!("read {}", spec.display()))?;
            let spec: runner::Spec = serde_json::from_str(&text)?;
            rt.block_on(async move {
                let abort = CancellationToken::new();
                let a = abort.clone();
                tokio::spawn(async move {
                    let _ = tokio::signal::ctrl_c().await;
                    a.cancel();
                });
                let v = runner::run(&spec, abort).await?;
                Ok(v.exit_code())
            })
        }
        Cmd::Check { dir } => {
            let spec: runner::Spec =
                serde_json::from_str(&std::fs::read_to_string(dir.join("spec.json"))?)?;
            let h = history::load(&dir.join("history.jsonl"))?;
            // The fault windows, from the run's timeline (none if it is missing).
            let events: Vec<checker::failover::NemesisEvent> =
                std::fs::read_to_string(dir.join("nemesis.jsonl"))
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| serde_json::from_str(l).ok())
                    .collect();
            let busy = checker::busy_windows(&events);
            let results = checker::check_all(&spec.workloads, &h, &busy);
            let mut code = 0;
            for r in &results {
                println!("{}: {:?} {}", r.checker, r.validity, r.stats);
                for v in &r.violations {
                    println!("  {}: {}", v.kind, v.message);
                }
                if r.validity != checker::Validity::Valid {
                    code = 1;
                }
            }
            Ok(code)
        }
        Cmd::Cleanup { run_id } => {
            let removed: Vec<String> = match run_id {
                Some(id) => netns::cleanup_prefix(&format!("{}{id}", netns::NS_PREFIX)),
                None => {
                    let mine: Vec<String> = netns::list_namespaces()
                        .into_iter()
                        .filter(|n| netns::is_harness_namespace(n))
                        .collect();
                    mine.iter().flat_map(|n| netns::cleanup_prefix(n)).collect()
                }
            };
            println!("removed {} namespaces: {removed:?}", removed.len());
            Ok(0)
        }
    }
}
