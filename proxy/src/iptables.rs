//! Writing [`Tables`] to the kernel: one `iptables-restore --noflush` per
//! sync; the first sync (and every periodic resync) writes every chain and
//! removes `FLOTILLA-*` chains it no longer wants (also those a previous
//! run left); later syncs write only the chains that changed. Jump rules
//! from the built-in chains are checked and inserted with `iptables -C/-I`.
//! Rules in chains the proxy did not name are never touched.
//!
//! Two backends of the same tables ([`Backend`]): the legacy ip_tables
//! kernel interface (`iptables-legacy-restore`) and the nf_tables one
//! (`iptables-nft-restore`, Debian's default `iptables`). Measured at
//! 10,000 services x 2 endpoints (bench/RESULTS.md), the nf_tables one
//! reads the whole table back on every restore: a full sync takes tens of
//! seconds there against well under a second with the legacy one, which
//! [`Backend::detect`] therefore prefers when the kernel has ip_tables.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::AsyncWriteExt;

use crate::netns;
use crate::rules::{Tables, PREFIX};
use crate::Error;

/// Jumps from built-in chains: (table, chain, rule).
const JUMPS: &[(&str, &str, &str)] = &[
    (
        "nat",
        "PREROUTING",
        "-m comment --comment flotilla-proxy -j FLOTILLA-SERVICES",
    ),
    (
        "nat",
        "OUTPUT",
        "-m comment --comment flotilla-proxy -j FLOTILLA-SERVICES",
    ),
    (
        "nat",
        "POSTROUTING",
        "-m comment --comment flotilla-proxy -j FLOTILLA-POSTROUTING",
    ),
    (
        "filter",
        "INPUT",
        "-m comment --comment flotilla-proxy -m conntrack --ctstate NEW -j FLOTILLA-SERVICES",
    ),
    (
        "filter",
        "FORWARD",
        "-m comment --comment flotilla-proxy -m conntrack --ctstate NEW -j FLOTILLA-SERVICES",
    ),
    (
        "filter",
        "OUTPUT",
        "-m comment --comment flotilla-proxy -m conntrack --ctstate NEW -j FLOTILLA-SERVICES",
    ),
];

/// Which iptables binaries (and kernel interface) write the rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// `iptables-legacy*`: the ip_tables kernel interface.
    Legacy,
    /// `iptables-nft*`: iptables rules in nf_tables.
    Nft,
}

impl Backend {
    /// Both, for cleanup.
    pub const ALL: [Backend; 2] = [Backend::Legacy, Backend::Nft];

    /// Its `iptables`.
    pub fn iptables(self) -> &'static str {
        match self {
            Backend::Legacy => "iptables-legacy",
            Backend::Nft => "iptables-nft",
        }
    }

    /// Its `iptables-save`.
    pub fn save(self) -> &'static str {
        match self {
            Backend::Legacy => "iptables-legacy-save",
            Backend::Nft => "iptables-nft-save",
        }
    }

    /// Its `iptables-restore`.
    pub fn restore(self) -> &'static str {
        match self {
            Backend::Legacy => "iptables-legacy-restore",
            Backend::Nft => "iptables-nft-restore",
        }
    }

    /// The legacy backend when its tools run and the kernel has ip_tables
    /// (in `netns`), else nf_tables.
    pub async fn detect(netns: Option<&Path>) -> Backend {
        match run(netns, Backend::Legacy.save(), &["-t", "nat"], None).await {
            Ok(_) => Backend::Legacy,
            Err(e) => {
                tracing::info!(error = %e, "no legacy iptables; using nf_tables");
                Backend::Nft
            }
        }
    }
}

/// What one sync did.
#[derive(Debug, Default, Clone, Copy)]
pub struct SyncStats {
    pub full: bool,
    pub chains_written: usize,
    pub chains_removed: usize,
    pub payload_bytes: usize,
    /// Time spent in `iptables-restore` or `nft` (the rest of a sync is
    /// rendering and diffing in this process).
    pub kernel: std::time::Duration,
}

/// Keeps the kernel's FLOTILLA chains equal to the last [`Tables`] given.
pub struct Writer {
    netns: Option<PathBuf>,
    backend: Backend,
    last: Option<Tables>,
}

pub(crate) async fn run(
    netns: Option<&Path>,
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String, Error> {
    let mut cmd =
        netns::command(netns, program).map_err(|e| Error::Io(format!("{program}: {e}")))?;
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::Io(format!("starting {program}: {e}")))?;
    if let (Some(input), Some(mut w)) = (stdin, child.stdin.take()) {
        w.write_all(input.as_bytes())
            .await
            .map_err(|e| Error::Io(format!("writing to {program}: {e}")))?;
        drop(w);
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| Error::Io(format!("{program}: {e}")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::Command {
            command: format!("{program} {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// The FLOTILLA chains present in each table, per `iptables-save`.
async fn existing_chains(
    netns: Option<&Path>,
    backend: Backend,
) -> Result<BTreeMap<String, BTreeSet<String>>, Error> {
    let mut out = BTreeMap::new();
    for table in ["nat", "filter"] {
        let text = run(netns, backend.save(), &["-t", table], None).await?;
        let set: BTreeSet<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix(':'))
            .filter_map(|l| l.split_whitespace().next())
            .filter(|c| c.starts_with(PREFIX))
            .map(str::to_string)
            .collect();
        out.insert(table.to_string(), set);
    }
    Ok(out)
}

fn split_args(rule: &str) -> Vec<String> {
    // Rules here quote only comments, without spaces inside quotes except
    // the node-ports one; a small quote-aware split is enough.
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for ch in rule.chars() {
        match ch {
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

async fn ensure_jumps(netns: Option<&Path>, backend: Backend) -> Result<(), Error> {
    for (table, chain, rule) in JUMPS {
        let rule_args = split_args(rule);
        let mut check: Vec<&str> = vec!["-w", "-t", table, "-C", chain];
        check.extend(rule_args.iter().map(String::as_str));
        if run(netns, backend.iptables(), &check, None).await.is_ok() {
            continue;
        }
        let mut ins: Vec<&str> = vec!["-w", "-t", table, "-I", chain, "1"];
        ins.extend(rule_args.iter().map(String::as_str));
        run(netns, backend.iptables(), &ins, None).await?;
    }
    Ok(())
}

impl Writer {
    pub fn new(netns: Option<PathBuf>, backend: Backend) -> Writer {
        Writer {
            netns,
            backend,
            last: None,
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Forget what was written: the next sync is a full one.
    pub fn force_full(&mut self) {
        self.last = None;
    }

    /// Make the kernel's chains `want`.
    pub async fn sync(&mut self, want: Tables) -> Result<SyncStats, Error> {
        let ns = self.netns.as_deref();
        let full = self.last.is_none();
        let mut stats = SyncStats {
            full,
            ..SyncStats::default()
        };
        let present = if full {
            ensure_jumps(ns, self.backend).await.ok();
            Some(existing_chains(ns, self.backend).await?)
        } else {
            None
        };
        let mut payload = String::new();
        for table in ["nat", "filter"] {
            let empty = BTreeMap::new();
            let want_t = want.tables.get(table).unwrap_or(&empty);
            let last_t = self
                .last
                .as_ref()
                .and_then(|l| l.tables.get(table))
                .unwrap_or(&empty);
            let write: Vec<&String> = want_t
                .iter()
                .filter(|(name, rules)| full || last_t.get(*name) != Some(*rules))
                .map(|(name, _)| name)
                .collect();
            let mut remove: BTreeSet<&String> =
                last_t.keys().filter(|n| !want_t.contains_key(*n)).collect();
            if let Some(p) = &present {
                remove.extend(
                    p.get(table)
                        .into_iter()
                        .flatten()
                        .filter(|n| !want_t.contains_key(*n)),
                );
            }
            if write.is_empty() && remove.is_empty() {
                continue;
            }
            payload.push_str(&format!("*{table}\n"));
            for name in write.iter().copied().chain(remove.iter().copied()) {
                payload.push_str(&format!(":{name} - [0:0]\n"));
            }
            for name in &write {
                for r in &want_t[*name] {
                    payload.push_str(&format!("-A {name} {r}\n"));
                }
            }
            for name in &remove {
                payload.push_str(&format!("-X {name}\n"));
            }
            payload.push_str("COMMIT\n");
            stats.chains_written += write.len();
            stats.chains_removed += remove.len();
        }
        stats.payload_bytes = payload.len();
        if !payload.is_empty() {
            let started = std::time::Instant::now();
            let r = run(
                ns,
                self.backend.restore(),
                &["-w", "--noflush"],
                Some(&payload),
            )
            .await;
            stats.kernel = started.elapsed();
            if let Err(e) = r {
                // The kernel may now hold anything: the next sync writes all.
                self.last = None;
                return Err(e);
            }
        }
        if full {
            ensure_jumps(ns, self.backend).await?;
        }
        self.last = Some(want);
        Ok(stats)
    }
}

/// Remove every jump and chain the proxy writes, in both tables of both
/// backends (a backend whose tools or kernel support are missing holds
/// nothing to remove).
pub async fn cleanup(netns: Option<&Path>) -> Result<usize, Error> {
    let mut n = 0;
    for b in Backend::ALL {
        if run(netns, b.save(), &["-t", "nat"], None).await.is_err() {
            continue;
        }
        n += cleanup_backend(netns, b).await?;
    }
    Ok(n)
}

async fn cleanup_backend(netns: Option<&Path>, backend: Backend) -> Result<usize, Error> {
    for (table, chain, rule) in JUMPS {
        let rule_args = split_args(rule);
        let mut del: Vec<&str> = vec!["-w", "-t", table, "-D", chain];
        del.extend(rule_args.iter().map(String::as_str));
        // A rule inserted twice (by two runs racing) is deleted twice.
        for _ in 0..8 {
            if run(netns, backend.iptables(), &del, None).await.is_err() {
                break;
            }
        }
    }
    let present = existing_chains(netns, backend).await?;
    let mut payload = String::new();
    let mut n = 0;
    for (table, chains) in &present {
        if chains.is_empty() {
            continue;
        }
        payload.push_str(&format!("*{table}\n"));
        for c in chains {
            payload.push_str(&format!(":{c} - [0:0]\n"));
        }
        for c in chains {
            payload.push_str(&format!("-X {c}\n"));
        }
        payload.push_str("COMMIT\n");
        n += chains.len();
    }
    if !payload.is_empty() {
        run(
            netns,
            backend.restore(),
            &["-w", "--noflush"],
            Some(&payload),
        )
        .await?;
    }
    Ok(n)
}

/// Delete the conntrack entries of UDP flows to `dst` that were NATed to
/// `ip:port` (a removed endpoint), so that the next datagram picks a live
/// one.
pub async fn flush_udp(netns: Option<&Path>, dst: &str, ip: std::net::Ipv4Addr, port: u16) {
    let (ip, port) = (ip.to_string(), port.to_string());
    let r = run(
        netns,
        "conntrack",
        &[
            "-D",
            "-p",
            "udp",
            "--orig-dst",
            dst,
            "--dst-nat",
            &ip,
            "--reply-port-src",
            &port,
        ],
        None,
    )
    .await;
    if let Err(e) = r {
        // conntrack exits 1 when nothing matched.
        tracing::debug!(error = %e, dst, ip, port, "conntrack flush");
    }
}

/// Delete the conntrack entries of UDP flows to `dst` that were not NATed
/// (their reply comes from `dst` itself): datagrams sent to a service
/// address before it had a rule.
pub async fn flush_udp_unnated(netns: Option<&Path>, dst: &str) {
    let r = run(
        netns,
        "conntrack",
        &["-D", "-p", "udp", "--orig-dst", dst, "--reply-src", dst],
        None,
    )
    .await;
    if let Err(e) = r {
        tracing::debug!(error = %e, dst, "conntrack flush");
    }
}
