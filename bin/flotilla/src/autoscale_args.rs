//! The autoscaler's flags, shared by `flotilla master` and `flotilla up`
//! (cluster-autoscaler's names), the provider flags of `flotilla master`,
//! and `flotilla up --autoscale MIN:MAX`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use flotilla_autoscaler::{Autoscaler, Config, Expander, NodeProvider};
use flotilla_runtime::LeaderLoop;

use crate::provider_exec::ExecProvider;
use crate::provider_grpc::GrpcProvider;

/// How the autoscaler decides.
#[derive(Args, Clone)]
pub struct ScaleArgs {
    /// How often the cluster autoscaler looks at unschedulable pods and
    /// idle nodes.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub scan_interval: Duration,
    /// How long a node must be unneeded before the autoscaler removes it.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub scale_down_unneeded_time: Duration,
    /// No scale-down for this long after a scale-up.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub scale_down_delay_after_add: Duration,
    /// A node asked for and not registered within this time is given up
    /// and deleted.
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    pub max_node_provision_time: Duration,
    /// How long a scale-down waits for a drained node's pods to go before
    /// deleting the node anyway.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub max_graceful_termination: Duration,
    /// Most nodes in the cluster, all pools together (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub max_nodes_total: usize,
    /// Which pool grows when several would help: least-waste, most-pods,
    /// priority (the pool's spec.priority) or random.
    #[arg(long, default_value = "least-waste", value_parser = parse_expander)]
    pub expander: Expander,
    /// A node whose pods request less than this share of its CPU and of its
    /// memory may be removed.
    #[arg(long, default_value_t = 0.5)]
    pub scale_down_utilization_threshold: f64,
}

fn parse_expander(s: &str) -> Result<Expander, String> {
    s.parse()
}

impl ScaleArgs {
    pub fn config(&self) -> Result<Config> {
        if self.scan_interval.is_zero() {
            bail!("--scan-interval must be more than 0");
        }
        if !(0.0..=1.0).contains(&self.scale_down_utilization_threshold) {
            bail!("--scale-down-utilization-threshold must be between 0 and 1");
        }
        Ok(Config {
            scan_interval: self.scan_interval,
            scale_down_unneeded_time: self.scale_down_unneeded_time,
            scale_down_delay_after_add: self.scale_down_delay_after_add,
            max_node_provision_time: self.max_node_provision_time,
            max_graceful_termination: self.max_graceful_termination,
            max_nodes_total: self.max_nodes_total,
            expander: self.expander,
            utilization_threshold: self.scale_down_utilization_threshold,
            scale_down_enabled: true,
        })
    }

    /// The autoscaler loop over `provider`.
    pub fn leader_loop(&self, provider: Arc<dyn NodeProvider>) -> Result<Arc<dyn LeaderLoop>> {
        Ok(Arc::new(Autoscaler::new(self.config()?, provider)))
    }
}

/// Where a master's autoscaler gets machines.
#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum CloudProvider {
    /// No autoscaler.
    None,
    /// An operator's command (--exec-provider-command).
    Exec,
    /// A service implementing cluster-autoscaler's externalgrpc
    /// CloudProvider API (--externalgrpc-address); its node groups are the
    /// NodePools of the same names.
    Externalgrpc,
}

/// The autoscaler of `flotilla master`.
#[derive(Args)]
pub struct MasterAutoscaleArgs {
    /// Run the cluster autoscaler with this provider for the node pools
    /// that have a maxSize (none: no autoscaler).
    #[arg(long, value_enum, default_value = "none")]
    pub cloud_provider: CloudProvider,
    /// With --cloud-provider exec: run as `COMMAND create|delete POOL NODE`;
    /// it must be idempotent.
    #[arg(long, value_name = "COMMAND")]
    pub exec_provider_command: Option<PathBuf>,
    /// Pools the provider manages (default: every pool with a maxSize).
    #[arg(long, value_delimiter = ',')]
    pub nodepools: Vec<String>,
    /// How long one call of the exec provider may take.
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    pub exec_provider_timeout: Duration,
    /// With --cloud-provider externalgrpc: the service's address,
    /// http://HOST:PORT or https://HOST:PORT.
    #[arg(long, value_name = "URL")]
    pub externalgrpc_address: Option<String>,
    /// The CA of an https externalgrpc service (default: the system's roots).
    #[arg(long, value_name = "FILE")]
    pub externalgrpc_ca: Option<PathBuf>,
    /// A client certificate (with --externalgrpc-key) for an https
    /// externalgrpc service that asks for one.
    #[arg(long, value_name = "FILE", requires = "externalgrpc_key")]
    pub externalgrpc_cert: Option<PathBuf>,
    /// The key of --externalgrpc-cert.
    #[arg(long, value_name = "FILE", requires = "externalgrpc_cert")]
    pub externalgrpc_key: Option<PathBuf>,
    /// How long one call of the externalgrpc service may take.
    #[arg(long, default_value = "1m", value_parser = humantime::parse_duration)]
    pub externalgrpc_timeout: Duration,
    #[command(flatten)]
    pub scale: ScaleArgs,
}

impl MasterAutoscaleArgs {
    /// The autoscaler loop, if a provider is chosen.
    pub fn leader_loop(&self) -> Result<Option<Arc<dyn LeaderLoop>>> {
        match self.cloud_provider {
            CloudProvider::None => Ok(None),
            CloudProvider::Exec => {
                let Some(cmd) = &self.exec_provider_command else {
                    bail!("--cloud-provider exec needs --exec-provider-command");
                };
                let p = ExecProvider::new(
                    cmd.clone(),
                    self.nodepools.clone(),
                    self.exec_provider_timeout,
                );
                self.scale.leader_loop(Arc::new(p)).map(Some)
            }
            CloudProvider::Externalgrpc => {
                let Some(addr) = &self.externalgrpc_address else {
                    bail!("--cloud-provider externalgrpc needs --externalgrpc-address");
                };
                let tls = if addr.starts_with("https://") {
                    let files = flotilla_security::tls::ClientTlsFiles {
                        ca: self.externalgrpc_ca.clone(),
                        cert: self.externalgrpc_cert.clone(),
                        key: self.externalgrpc_key.clone(),
                    };
                    Some(files.tonic_config()?)
                } else if self.externalgrpc_ca.is_some() || self.externalgrpc_cert.is_some() {
                    bail!("--externalgrpc-ca and --externalgrpc-cert need an https:// address");
                } else {
                    None
                };
                let p =
                    GrpcProvider::new(addr, tls, self.nodepools.clone(), self.externalgrpc_timeout)
                        .map_err(anyhow::Error::msg)?;
                self.scale.leader_loop(Arc::new(p)).map(Some)
            }
        }
    }
}

/// The agents' runtime under `flotilla up --autoscale`.
#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum AgentRuntime {
    /// Real containers through containerd, each agent in a namespace of its own.
    Cri,
    /// No containers (hollow nodes): pods are reported Running at once.
    Fake,
}

/// `flotilla up`'s autoscaling.
#[derive(Args)]
pub struct UpAutoscaleArgs {
    /// Let the local provider keep the pool `default` between MIN and MAX
    /// nodes (agents started and stopped by this process).
    #[arg(long, value_name = "MIN:MAX", value_parser = parse_min_max)]
    pub autoscale: Option<(i32, i32)>,
    /// The runtime of the agents the autoscaler starts.
    #[arg(long, value_enum, default_value = "cri")]
    pub autoscale_runtime: AgentRuntime,
    #[command(flatten)]
    pub scale: ScaleArgs,
}

fn parse_min_max(s: &str) -> Result<(i32, i32), String> {
    let (a, b) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not MIN:MAX"))?;
    let min: i32 = a.parse().map_err(|_| format!("{a:?} is not a number"))?;
    let max: i32 = b.parse().map_err(|_| format!("{b:?} is not a number"))?;
    if min < 0 || max < 1 || max < min {
        return Err(format!("{s}: need 0 <= MIN <= MAX and MAX >= 1"));
    }
    Ok((min, max))
}

#[cfg(test)]
mod tests {
    use super::parse_min_max;

    #[test]
    fn min_max_parses_and_refuses_nonsense() {
        assert_eq!(parse_min_max("1:3"), Ok((1, 3)));
        assert!(parse_min_max("3:1").is_err());
        assert!(parse_min_max("0:0").is_err());
        assert!(parse_min_max("13").is_err());
    }
}
