//! `flt cluster ...`: the masters themselves, through the ClusterAdmin service.

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use flotilla_proto::cluster::cluster_admin_client::ClusterAdminClient;
use flotilla_proto::cluster::{
    AddMasterRequest, MemberInfo, RemoveMasterRequest, StatusRequest, StatusResponse,
};
use tonic::transport::{Channel, Endpoint};

use crate::{ClusterCommand, StatusOutput};

/// A channel whose calls carry flt's credentials.
pub(crate) type Authed =
    tonic::service::interceptor::InterceptedService<Channel, crate::access::Headers>;

/// What the cluster commands need to know.
pub struct Ctx {
    pub servers: Vec<String>,
    pub dial_timeout: Duration,
    pub command_timeout: Duration,
}

pub async fn run(ctx: &Ctx, cmd: ClusterCommand) -> Result<()> {
    match cmd {
        ClusterCommand::Status { output } => cluster_status(ctx, output).await,
        ClusterCommand::AddMaster {
            name,
            peer_addr,
            client_addr,
        } => {
            let req = AddMasterRequest {
                name,
                peer_addr,
                client_addr,
            };
            let members = membership_change(ctx, "add master", move |mut c| {
                let req = req.clone();
                async move { c.add_master(req).await }
            })
            .await?;
            print_members(&members);
            Ok(())
        }
        ClusterCommand::RemoveMaster { name } => {
            let members = membership_change(ctx, "remove master", move |mut c| {
                let req = RemoveMasterRequest { name: name.clone() };
                async move { c.remove_master(req).await }
            })
            .await?;
            print_members(&members);
            Ok(())
        }
    }
}

/// `http://HOST:PORT` for a HOST:PORT (a URL is kept as it is).
pub(crate) fn url_of(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

pub(crate) async fn connect(addr: &str, dial: Duration, request: Duration) -> Result<Channel> {
    let access = crate::access::get();
    let url = match &access.tls {
        Some(_) if !addr.contains("://") => format!("https://{addr}"),
        _ => url_of(addr),
    };
    let mut endpoint = Endpoint::from_shared(url)
        .with_context(|| format!("invalid server address {addr:?}"))?
        .connect_timeout(dial)
        .timeout(request);
    if let Some(tls) = access.tls {
        endpoint = endpoint
            .tls_config(tls)
            .with_context(|| format!("TLS to {addr}"))?;
    }
    match tokio::time::timeout(dial, endpoint.connect()).await {
        Ok(Ok(channel)) => Ok(channel),
        Ok(Err(e)) => Err(anyhow::Error::new(e).context(format!("cannot connect to {addr}"))),
        Err(_) => bail!("cannot connect to {addr}: timed out after {dial:?}"),
    }
}

/// An error and its causes on one line, joined by ": ", leaving out a cause
/// that only repeats the one before it (hyper and tonic nest alike errors).
pub fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let text = cause.to_string().replace('\n', " ");
        if parts
            .last()
            .is_some_and(|p| p == &text || p.ends_with(&text))
        {
            continue;
        }
        parts.push(text);
    }
    parts.join(": ")
}

/// A gRPC error as the server worded it.
fn grpc_error(status: tonic::Status) -> anyhow::Error {
    if status.message().is_empty() {
        anyhow!("{:?}", status.code())
    } else {
        anyhow!("{}", status.message())
    }
}

/// ClusterAdmin.Status of one master, all within `limit`.
async fn status_of(addr: &str, limit: Duration) -> Result<StatusResponse> {
    let call = async {
        let channel = connect(addr, limit, limit).await?;
        let mut client = ClusterAdminClient::with_interceptor(channel, crate::access::headers());
        let resp = client
            .status(StatusRequest {})
            .await
            .map_err(grpc_error)
            .with_context(|| format!("status of {addr}"))?;
        Ok::<_, anyhow::Error>(resp.into_inner())
    };
    match tokio::time::timeout(limit, call).await {
        Ok(r) => r,
        Err(_) => bail!("{addr} did not answer within {limit:?}"),
    }
}

/// Status of the first server in `--server` that answers.
async fn first_status(ctx: &Ctx) -> Result<(String, StatusResponse)> {
    if ctx.servers.is_empty() {
        bail!("no server given (use --server or FLT_SERVER)");
    }
    let mut errors = Vec::new();
    for server in &ctx.servers {
        match status_of(server, ctx.dial_timeout).await {
            Ok(status) => return Ok((server.clone(), status)),
            Err(e) => errors.push(one_line(&e)),
        }
    }
    bail!("no master reachable: {}", errors.join("; "))
}

async fn cluster_status(ctx: &Ctx, output: StatusOutput) -> Result<()> {
    let (server, first) = first_status(ctx).await?;
    let mut members = first.members.clone();
    if members.is_empty() {
        // A master that knows no members still knows itself.
        members.push(MemberInfo {
            id: first.id,
            name: first.name.clone(),
            peer_addr: first.peer_addr.clone(),
            client_addr: if first.client_addr.is_empty() {
                server.clone()
            } else {
                first.client_addr.clone()
            },
            kind: String::new(),
        });
    }

    // Ask every member, and every --server (a member whose client address
    // is not known yet still answers there), all at once, so that an
    // unreachable one costs one timeout. Answers are matched by member id.
    let mut addrs: Vec<String> = members
        .iter()
        .map(|m| m.client_addr.clone())
        .filter(|a| !a.is_empty())
        .collect();
    addrs.extend(ctx.servers.iter().filter(|s| **s != server).cloned());
    let mut seen = std::collections::HashSet::new();
    addrs.retain(|a| seen.insert(a.clone()) && *a != server);
    let mut probes = Vec::new();
    for addr in addrs {
        let limit = ctx.dial_timeout;
        probes.push(tokio::spawn(
            async move { status_of(&addr, limit).await.ok() },
        ));
    }
    let mut by_id = std::collections::HashMap::new();
    by_id.insert(first.id, first.clone());
    for probe in probes {
        if let Ok(Some(s)) = probe.await {
            by_id.entry(s.id).or_insert(s);
        }
    }

    let rows: Vec<MemberStatus> = members
        .iter()
        .map(|m| {
            let status = by_id.get(&m.id);
            let client = match status {
                Some(s) if m.client_addr.is_empty() => s.client_addr.clone(),
                _ => m.client_addr.clone(),
            };
            MemberStatus {
                name: m.name.clone(),
                id: format!("{:x}", m.id),
                peer: m.peer_addr.clone(),
                client,
                role: match status {
                    Some(s) if s.role.is_empty() => "unknown".to_string(),
                    Some(s) => s.role.clone(),
                    None => "unreachable".to_string(),
                },
                term: status.map(|s| s.term),
                last_log: status.map(|s| s.last_log_index),
                applied: status.map(|s| s.applied_index),
            }
        })
        .collect();
    match output {
        StatusOutput::Json => {
            let doc = serde_json::json!({ "members": rows });
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
        StatusOutput::Table => print!("{}", status_table(&rows)),
    }
    Ok(())
}

/// One master as `cluster status` shows it.
#[derive(Debug, serde::Serialize)]
struct MemberStatus {
    name: String,
    id: String,
    peer: String,
    client: String,
    role: String,
    term: Option<u64>,
    last_log: Option<u64>,
    applied: Option<u64>,
}

fn status_table(members: &[MemberStatus]) -> String {
    let cell = |s: &str| {
        if s.is_empty() {
            "-".to_string()
        } else {
            s.to_string()
        }
    };
    let num = |n: Option<u64>| n.map_or_else(|| "-".to_string(), |n| n.to_string());
    let mut rows = vec![[
        "NAME", "ID", "PEER", "CLIENT", "ROLE", "TERM", "LAST-LOG", "APPLIED",
    ]
    .iter()
    .map(|h| h.to_string())
    .collect::<Vec<_>>()];
    for m in members {
        rows.push(vec![
            cell(&m.name),
            m.id.clone(),
            cell(&m.peer),
            cell(&m.client),
            m.role.clone(),
            num(m.term),
            num(m.last_log),
            num(m.applied),
        ]);
    }
    render_table(&rows)
}

/// Sends a membership change to the leader (as the first reachable server
/// sees it), falling back to the other known masters if it cannot be reached.
async fn membership_change<F, Fut>(ctx: &Ctx, what: &str, call: F) -> Result<Vec<MemberInfo>>
where
    F: Fn(ClusterAdminClient<Authed>) -> Fut,
    Fut: std::future::Future<
        Output = std::result::Result<
            tonic::Response<flotilla_proto::cluster::MembershipResponse>,
            tonic::Status,
        >,
    >,
{
    let (server, status) = first_status(ctx).await?;
    let mut targets = Vec::new();
    if let Some(leader) = status
        .members
        .iter()
        .find(|m| m.id == status.leader_id && status.leader_id != 0)
    {
        if !leader.client_addr.is_empty() {
            targets.push(leader.client_addr.clone());
        }
    }
    targets.push(server);
    for s in &ctx.servers {
        targets.push(s.clone());
    }
    for m in &status.members {
        if !m.client_addr.is_empty() {
            targets.push(m.client_addr.clone());
        }
    }
    let mut seen = std::collections::HashSet::new();
    targets.retain(|t| seen.insert(t.clone()));

    let mut errors = Vec::new();
    for target in targets {
        let channel = match connect(&target, ctx.dial_timeout, ctx.command_timeout).await {
            Ok(c) => c,
            Err(e) => {
                errors.push(one_line(&e));
                continue;
            }
        };
        let client = ClusterAdminClient::with_interceptor(channel, crate::access::headers());
        match tokio::time::timeout(ctx.command_timeout, call(client)).await {
            Ok(Ok(resp)) => return Ok(resp.into_inner().members),
            Ok(Err(st)) if st.code() == tonic::Code::Unavailable => {
                errors.push(format!("{target}: {}", grpc_error(st)));
            }
            Ok(Err(st)) => return Err(grpc_error(st)).context(format!("cannot {what}")),
            Err(_) => bail!(
                "cannot {what}: {target} did not answer within {:?}",
                ctx.command_timeout
            ),
        }
    }
    bail!("cannot {what}: {}", errors.join("; "))
}

fn print_members(members: &[MemberInfo]) {
    let mut rows = vec![vec![
        "NAME".to_string(),
        "ID".to_string(),
        "PEER".to_string(),
        "CLIENT".to_string(),
        "KIND".to_string(),
    ]];
    for m in members {
        let cell = |s: &str| {
            if s.is_empty() {
                "-".to_string()
            } else {
                s.to_string()
            }
        };
        rows.push(vec![
            cell(&m.name),
            format!("{:x}", m.id),
            cell(&m.peer_addr),
            cell(&m.client_addr),
            cell(&m.kind),
        ]);
    }
    print!("{}", render_table(&rows));
}

/// Columns padded to their widest cell and separated by three spaces, as
/// kubectl prints them; the last column is not padded.
fn render_table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0; columns];
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if i + 1 < row.len() {
                let pad = widths[i] - cell.chars().count() + 3;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Cli, Command};
    use clap::Parser;

    #[test]
    fn table_is_aligned() {
        let rows = vec![
            vec!["NAME".into(), "ROLE".into(), "TERM".into()],
            vec!["master-1".into(), "leader".into(), "3".into()],
            vec!["m2".into(), "unreachable".into(), "-".into()],
        ];
        let t = render_table(&rows);
        assert_eq!(
            t,
            "NAME       ROLE          TERM\n\
             master-1   leader        3\n\
             m2         unreachable   -\n"
        );
    }

    #[test]
    fn addresses_become_urls() {
        assert_eq!(url_of("127.0.0.1:2379"), "http://127.0.0.1:2379");
        assert_eq!(url_of("http://h:1"), "http://h:1");
    }

    #[test]
    fn cli_parses() {
        let cli = Cli::try_parse_from([
            "flt",
            "--server",
            "a:1,b:2",
            "cluster",
            "add-master",
            "m4",
            "--peer-addr",
            "p:1",
            "--client-addr",
            "c:1",
        ])
        .unwrap();
        assert_eq!(cli.server, Some(vec!["a:1".to_string(), "b:2".to_string()]));
        assert!(matches!(
            cli.command,
            Command::Cluster(ClusterCommand::AddMaster { .. })
        ));
    }
}
