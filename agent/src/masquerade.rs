//! Pods' traffic to addresses outside the cluster leaves the node from the
//! node's own address (as kubenet and ip-masq-agent do it): one nat rule in
//! the node's network namespace, `-s <node's pod CIDR> ! -d <cluster CIDR>
//! -j MASQUERADE`. Traffic between pods keeps its addresses (host-gw,
//! [`crate::routes`]); traffic to masters, other hosts and the outside
//! world comes back to the node, which alone knows the way to its pods.
//! The masters' DNS is such a destination: the proxies send the kube-dns
//! ClusterIP to the masters' addresses, which are not nodes.

use std::path::Path;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// The rule's comment: what wrote it, for someone reading iptables-save.
pub const COMMENT: &str = "flotilla-agent: pods' traffic leaving the cluster";
/// The rule is checked (and put back if someone removed it) this often.
const RESYNC: Duration = Duration::from_secs(30);

/// The rule's arguments after `-t nat -A|-C|-D`.
pub fn rule(pod_cidr: &str, cluster_cidr: &str) -> Vec<String> {
    [
        "POSTROUTING",
        "-s",
        pod_cidr,
        "!",
        "-d",
        cluster_cidr,
        "-m",
        "comment",
        "--comment",
        COMMENT,
        "-j",
        "MASQUERADE",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

async fn iptables(netns: Option<&Path>, op: &str, rule: &[String]) -> Result<bool, String> {
    let mut cmd =
        crate::netns::command_in(netns, Path::new("iptables")).map_err(|e| e.to_string())?;
    let out = cmd
        .args(["-w", "5", "-t", "nat", op])
        .args(rule)
        .output()
        .await
        .map_err(|e| format!("iptables: {e}"))?;
    match out.status.code() {
        Some(0) => Ok(true),
        // -C: the rule is not there.
        Some(1) if op == "-C" => Ok(false),
        _ => Err(format!(
            "iptables -t nat {op} {}: {}",
            rule.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

/// Put the rule in place if it is missing; whether it was added.
pub async fn ensure(netns: Option<&Path>, rule: &[String]) -> Result<bool, String> {
    if iptables(netns, "-C", rule).await? {
        return Ok(false);
    }
    iptables(netns, "-A", rule).await?;
    Ok(true)
}

/// Keep the rule until `stop`; it stays when the agent stops (pods keep
/// running through a restart).
pub async fn run(
    netns: Option<std::path::PathBuf>,
    pod_cidr: String,
    cluster_cidr: String,
    stop: CancellationToken,
) {
    let rule = rule(&pod_cidr, &cluster_cidr);
    let mut tick = tokio::time::interval(RESYNC);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match ensure(netns.as_deref(), &rule).await {
            Ok(true) => {
                tracing::info!(%pod_cidr, %cluster_cidr, "pods' traffic leaving the cluster is masqueraded")
            }
            Ok(false) => {}
            Err(e) => tracing::warn!("{e}"),
        }
    }
}

/// Parse an IPv4 CIDR, `A.B.C.D/N`.
pub fn parse_cidr(s: &str) -> Result<(std::net::Ipv4Addr, u8), String> {
    let (addr, len) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?} is not a CIDR (A.B.C.D/N)"))?;
    let addr: std::net::Ipv4Addr = addr
        .parse()
        .map_err(|_| format!("{s:?}: {addr:?} is not an IPv4 address"))?;
    let len: u8 = len
        .parse()
        .ok()
        .filter(|l| *l <= 32)
        .ok_or_else(|| format!("{s:?}: the prefix length must be 0-32"))?;
    Ok((addr, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_spares_the_cluster() {
        assert_eq!(
            rule("10.244.3.0/24", "10.244.0.0/16").join(" "),
            format!("POSTROUTING -s 10.244.3.0/24 ! -d 10.244.0.0/16 -m comment --comment {COMMENT} -j MASQUERADE")
        );
    }

    #[test]
    fn cidrs_are_checked() {
        assert_eq!(
            parse_cidr("10.244.0.0/16"),
            Ok(("10.244.0.0".parse().unwrap(), 16))
        );
        assert!(parse_cidr("10.244.0.0").is_err());
        assert!(parse_cidr("10.244.0/16").is_err());
        assert!(parse_cidr("10.244.0.0/33").is_err());
    }
}
