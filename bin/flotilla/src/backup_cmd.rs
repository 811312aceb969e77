//! `flotilla snapshot status FILE` and `flotilla restore`: reading a backup
//! taken with `etcdctl snapshot save`, and building new masters' data
//! folders from it (as `etcdctl snapshot status|restore` do for etcd).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use flotilla_raftstore::backup;

#[derive(Subcommand)]
pub enum SnapshotCmd {
    /// Check a backup file (its checksum and structure) and say what it
    /// holds: revision, keys, versions, leases, size.
    Status(StatusArgs),
}

#[derive(Args)]
pub struct StatusArgs {
    /// The backup, as written by `etcdctl snapshot save FILE`.
    file: PathBuf,
    /// Output format.
    #[arg(short = 'w', long = "write-out", value_enum, default_value = "simple")]
    write_out: Format,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Simple,
    Table,
    Json,
}

#[derive(Args)]
pub struct RestoreArgs {
    /// The backup, as written by `etcdctl snapshot save FILE`.
    #[arg(long)]
    snapshot: PathBuf,
    /// The restored master's name (it must be in --initial-cluster).
    #[arg(long)]
    name: String,
    /// The new cluster's founding members, NAME=PEER_ADDR,...: the same on
    /// every master restored from this backup.
    #[arg(long, value_delimiter = ',', required = true)]
    initial_cluster: Vec<String>,
    /// The new data folder (it must not hold a database).
    #[arg(long)]
    data_dir: PathBuf,
}

pub fn status(cmd: SnapshotCmd) -> Result<()> {
    let SnapshotCmd::Status(a) = cmd;
    let s = backup::status(&a.file).with_context(|| format!("{}", a.file.display()))?;
    match a.write_out {
        Format::Simple => println!(
            "{:x}, {}, {}, {}",
            s.crc,
            s.revision,
            s.keys,
            human(s.bytes)
        ),
        Format::Table => {
            println!("+----------+----------+------------+------------+----------+--------+------------+");
            println!("|   HASH   | REVISION | TOTAL KEYS | VERSIONS   | COMPACT  | LEASES | TOTAL SIZE |");
            println!("+----------+----------+------------+------------+----------+--------+------------+");
            println!(
                "| {:>8x} | {:>8} | {:>10} | {:>10} | {:>8} | {:>6} | {:>10} |",
                s.crc,
                s.revision,
                s.keys,
                s.versions,
                s.compact_revision,
                s.leases,
                human(s.bytes)
            );
            println!("+----------+----------+------------+------------+----------+--------+------------+");
        }
        Format::Json => println!(
            "{}",
            serde_json::json!({
                "hash": s.crc,
                "revision": s.revision,
                "totalKey": s.keys,
                "versions": s.versions,
                "compactRevision": s.compact_revision,
                "leases": s.leases,
                "totalSize": s.bytes,
            })
        ),
    }
    Ok(())
}

fn human(b: u64) -> String {
    match b {
        b if b >= 1 << 30 => format!("{:.1} GB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} kB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

pub fn restore(a: RestoreArgs) -> Result<()> {
    let members = crate::parse_initial_cluster(&a.initial_cluster)?;
    if !members.iter().any(|(n, _)| n == &a.name) {
        bail!(
            "--initial-cluster does not name this master ({}): give every restored master the same list",
            a.name
        );
    }
    let s = backup::restore(&a.snapshot, &a.data_dir)
        .with_context(|| format!("restoring {}", a.snapshot.display()))?;
    println!(
        "restored {} keys at revision {} into {}",
        s.keys,
        s.revision,
        a.data_dir.display()
    );
    println!(
        "start it with: flotilla master --name {} --data-dir {} --initial-cluster {} (and its addresses)",
        a.name,
        a.data_dir.display(),
        a.initial_cluster.join(",")
    );
    Ok(())
}
