//! `flt logs` and `flt exec`: a pod's log and commands in its containers
//! (with `-i`, flt's standard input read whole and then closed),
//! through any master (the masters relay to the agent of the pod's node),
//! as kubectl does through the API server.

use std::io::{Read as _, Write as _};
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;
use flotilla_proto::node::pod_streams_client::PodStreamsClient;
use flotilla_proto::node::{ExecRequest, LogsRequest, MESSAGE_LIMIT};

use crate::cluster::connect;

/// The exit code of a command run by `flt exec`, to become flt's own.
#[derive(Debug)]
pub struct ExitStatus(pub i32);

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "command terminated with exit code {}", self.0)
    }
}

impl std::error::Error for ExitStatus {}

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// The pod.
    pub pod: String,
    /// The container (default: the pod's only one).
    #[arg(short = 'c', long)]
    pub container: Option<String>,
    /// Go on printing what the container writes until it stops.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// The log of the container's previous run.
    #[arg(short = 'p', long)]
    pub previous: bool,
    /// Only the last N lines (-1: all).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub tail: i64,
    /// Prefix each line with its RFC 3339 time.
    #[arg(long)]
    pub timestamps: bool,
}

#[derive(Args, Debug)]
pub struct ExecArgs {
    /// The pod.
    pub pod: String,
    /// The container (default: the pod's only one).
    #[arg(short = 'c', long)]
    pub container: Option<String>,
    /// Pass flt's standard input to the command (read whole, up to 64 MiB,
    /// then closed).
    #[arg(short = 'i', long)]
    pub stdin: bool,
    /// Allocate a terminal (not supported yet).
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Seconds the command may run (0: no limit of flt's own).
    #[arg(long, default_value_t = 0)]
    pub timeout: i64,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// The most of flt's standard input that `flt exec -i` sends.
pub const STDIN_LIMIT: usize = 64 << 20;

/// A client of the first master that answers.
pub async fn masters(
    servers: &[String],
    dial: Duration,
) -> Result<PodStreamsClient<crate::cluster::Authed>> {
    let mut last = None;
    for s in servers {
        // Streams may last: no request timeout of the channel's own.
        match connect(s, dial, Duration::from_secs(24 * 3600)).await {
            Ok(c) => {
                return Ok(
                    PodStreamsClient::with_interceptor(c, crate::access::headers())
                        .max_decoding_message_size(MESSAGE_LIMIT)
                        .max_encoding_message_size(MESSAGE_LIMIT),
                )
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no master address given")))
}

pub fn status_error(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", s.message())
}

pub async fn logs(servers: &[String], dial: Duration, ns: &str, a: LogsArgs) -> Result<()> {
    let mut c = masters(servers, dial).await?;
    let req = LogsRequest {
        namespace: ns.to_string(),
        pod: a.pod,
        container: a.container.unwrap_or_default(),
        follow: a.follow,
        previous: a.previous,
        tail_lines: a.tail,
        timestamps: a.timestamps,
    };
    let mut stream = c.logs(req).await.map_err(status_error)?.into_inner();
    let mut out = std::io::stdout();
    while let Some(chunk) = stream.message().await.map_err(status_error)? {
        out.write_all(&chunk.data)?;
        out.flush()?;
    }
    Ok(())
}

/// Read all of `r`, refusing more than `limit` bytes.
pub fn read_limited(mut r: impl std::io::Read, limit: usize, what: &str) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    std::io::Read::take(&mut r, limit as u64 + 1).read_to_end(&mut buf)?;
    if buf.len() > limit {
        bail!(
            "{what} is larger than {} MiB, the most flt sends at once",
            limit >> 20
        );
    }
    Ok(buf)
}

pub async fn exec(servers: &[String], dial: Duration, ns: &str, a: ExecArgs) -> Result<()> {
    if a.tty {
        bail!("-t is not supported yet: flt exec runs a command to completion");
    }
    let stdin = if a.stdin {
        Some(read_limited(
            std::io::stdin().lock(),
            STDIN_LIMIT,
            "standard input",
        )?)
    } else {
        None
    };
    let mut c = masters(servers, dial).await?;
    let req = ExecRequest {
        namespace: ns.to_string(),
        pod: a.pod,
        container: a.container.unwrap_or_default(),
        command: a.command,
        timeout_seconds: a.timeout,
        attach_stdin: stdin.is_some(),
        stdin: stdin.unwrap_or_default(),
    };
    let r = c.exec(req).await.map_err(status_error)?.into_inner();
    std::io::stdout().write_all(&r.stdout)?;
    std::io::stderr().write_all(&r.stderr)?;
    if r.exit_code != 0 {
        return Err(ExitStatus(r.exit_code).into());
    }
    Ok(())
}
