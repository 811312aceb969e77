//! Which member leads, and when a cluster is ready, from the etcd
//! Maintenance Status API (`header.member_id`, `leader`) that Flotilla's
//! masters and etcd both answer.
//!
//! - The leader: the answering members that name a leader all name the
//!   same one, and that member answers and names itself.
//! - Ready: every member asked answers, and every one names that leader.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use flotilla_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use flotilla_proto::etcdserverpb::StatusRequest;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// How to ask one member: within what time (to connect and answer), and over
/// TLS or not.
#[derive(Clone, Debug)]
pub struct Probe {
    pub timeout: Duration,
    pub tls: Option<ClientTlsConfig>,
}

impl Probe {
    /// Plaintext, each member given `timeout` to connect and answer.
    pub fn new(timeout: Duration) -> Probe {
        Probe { timeout, tls: None }
    }

    /// Over TLS when `tls` is given.
    pub fn with_tls(mut self, tls: Option<ClientTlsConfig>) -> Probe {
        self.tls = tls;
        self
    }
}

/// The URI of an endpoint given as HOST:PORT (`http://`, or `https://` over
/// TLS) or already as a URI (kept).
pub fn endpoint_uri(endpoint: &str, tls: bool) -> String {
    if endpoint.contains("://") {
        endpoint.to_string()
    } else if tls {
        format!("https://{endpoint}")
    } else {
        format!("http://{endpoint}")
    }
}

/// A gRPC channel to `endpoint`, connected within `probe.timeout`; each
/// request on it also has `probe.timeout`.
pub async fn connect(endpoint: &str, probe: &Probe) -> Result<Channel> {
    let mut ep = Endpoint::from_shared(endpoint_uri(endpoint, probe.tls.is_some()))
        .with_context(|| format!("bad endpoint {endpoint:?}"))?
        .connect_timeout(probe.timeout)
        .timeout(probe.timeout);
    if let Some(tls) = &probe.tls {
        ep = ep.tls_config(tls.clone()).context("TLS configuration")?;
    }
    tokio::time::timeout(probe.timeout, ep.connect())
        .await
        .map_err(|_| anyhow!("connect to {endpoint}: timed out"))?
        .with_context(|| format!("connect to {endpoint}"))
}

/// What one member says of itself and of the leader (0: none known), and
/// where it stands in the Raft log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemberStatus {
    pub member_id: u64,
    pub leader: u64,
    /// Index of the last entry of its log.
    pub raft_index: u64,
    /// Index of the last entry it applied.
    pub applied: u64,
}

/// Maintenance.Status of `endpoint`, connecting and answering within
/// `probe.timeout`.
pub async fn member_status(endpoint: &str, probe: &Probe) -> Result<MemberStatus> {
    let call = async {
        let mut c = MaintenanceClient::new(connect(endpoint, probe).await?);
        let s = c
            .status(StatusRequest {})
            .await
            .map_err(|s| anyhow!("status: {:?}: {}", s.code(), s.message()))?
            .into_inner();
        Ok(MemberStatus {
            member_id: s.header.map(|h| h.member_id).unwrap_or(0),
            leader: s.leader,
            raft_index: s.raft_index,
            applied: s.raft_applied_index,
        })
    };
    tokio::time::timeout(probe.timeout, call)
        .await
        .map_err(|_| anyhow!("status of {endpoint}: timed out"))?
}

/// What each of a list of endpoints answered, in their order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Statuses(pub Vec<(String, Result<MemberStatus, String>)>);

impl Statuses {
    /// Asks every endpoint at once.
    pub async fn probe<S: AsRef<str>>(endpoints: &[S], probe: &Probe) -> Statuses {
        let calls = endpoints.iter().map(|ep| async move {
            let ep = ep.as_ref();
            let s = member_status(ep, probe).await.map_err(|e| format!("{e:#}"));
            (ep.to_string(), s)
        });
        Statuses(futures::future::join_all(calls).await)
    }

    /// The index of the leader: the answering members that name a leader
    /// all name the same one, and it answers and names itself. Otherwise
    /// why not.
    pub fn leader(&self) -> Result<usize, String> {
        if self.0.iter().all(|(_, s)| s.is_err()) {
            return Err(format!("no member answers: {}", self.describe()));
        }
        let named: BTreeSet<u64> = self
            .answers()
            .map(|(_, s)| s.leader)
            .filter(|&l| l != 0)
            .collect();
        let mut named = named.into_iter();
        let (Some(l), None) = (named.next(), named.next()) else {
            return Err(format!(
                "the members do not agree on a leader: {}",
                self.describe()
            ));
        };
        self.answers()
            .find(|(_, s)| s.member_id == l && s.leader == l)
            .map(|(i, _)| i)
            .ok_or_else(|| {
                format!(
                    "leader {l:x} is not among the members that answer, or does not name itself: {}",
                    self.describe()
                )
            })
    }

    /// The index of the leader once the cluster is ready: every endpoint
    /// answers and names the [`Statuses::leader`]. Otherwise why not.
    pub fn ready(&self) -> Result<usize, String> {
        if self.0.is_empty() {
            return Err("no members to ask".to_string());
        }
        if let Some((ep, Err(e))) = self.0.iter().find(|(_, s)| s.is_err()) {
            return Err(format!("{ep} does not answer: {e}"));
        }
        let l = self.leader()?;
        let id = self.0[l].1.as_ref().map(|s| s.member_id).unwrap_or(0);
        match self.answers().find(|(_, s)| s.leader != id) {
            Some(_) => Err(format!(
                "not every member names leader {id:x} yet: {}",
                self.describe()
            )),
            None => Ok(l),
        }
    }

    /// `endpoint: member ID leader ID; ...` (hexadecimal), or the error.
    pub fn describe(&self) -> String {
        self.0
            .iter()
            .map(|(ep, s)| match s {
                Ok(s) => format!("{ep}: member {:x} leader {:x}", s.member_id, s.leader),
                Err(e) => format!("{ep}: {e}"),
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn answers(&self) -> impl Iterator<Item = (usize, &MemberStatus)> {
        self.0
            .iter()
            .enumerate()
            .filter_map(|(i, (_, s))| s.as_ref().ok().map(|s| (i, s)))
    }
}

/// The index (in `endpoints`) of the leader ([`Statuses::leader`]), `None`
/// when the answering members do not agree on one that answers; an error
/// when none answers.
pub async fn leader_of<S: AsRef<str>>(endpoints: &[S], probe: &Probe) -> Result<Option<usize>> {
    let st = Statuses::probe(endpoints, probe).await;
    match st.leader() {
        Ok(l) => Ok(Some(l)),
        Err(_) if st.0.iter().all(|(_, s)| s.is_err()) => {
            bail!("no member answers: {}", st.describe())
        }
        Err(_) => Ok(None),
    }
}

/// Polls (every 100 ms) until the cluster of `endpoints` is ready
/// ([`Statuses::ready`]) and returns the index of its leader; fails after
/// `timeout` with the last reason.
pub async fn wait_ready<S: AsRef<str>>(
    endpoints: &[S],
    probe: &Probe,
    timeout: Duration,
) -> Result<usize> {
    poll_statuses(endpoints, probe, timeout, Statuses::ready)
        .await
        .map_err(|why| anyhow!("not ready after {timeout:?}: {why}"))
}

/// Asks `endpoints` (every 100 ms) until `check` accepts what they answer
/// and returns what it made of it; after `timeout` (at least one round),
/// `check`'s last reason.
pub async fn poll_statuses<S: AsRef<str>, T>(
    endpoints: &[S],
    probe: &Probe,
    timeout: Duration,
    mut check: impl FnMut(&Statuses) -> Result<T, String>,
) -> Result<T, String> {
    let start = Instant::now();
    loop {
        let why = match check(&Statuses::probe(endpoints, probe).await) {
            Ok(v) => return Ok(v),
            Err(why) => why,
        };
        if start.elapsed() >= timeout {
            return Err(why);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(answers: &[Option<(u64, u64)>]) -> Statuses {
        Statuses(
            answers
                .iter()
                .enumerate()
                .map(|(i, a)| {
                    let s = match a {
                        Some((member_id, leader)) => Ok(MemberStatus {
                            member_id: *member_id,
                            leader: *leader,
                            ..Default::default()
                        }),
                        None => Err("connect: refused".to_string()),
                    };
                    (format!("m{i}"), s)
                })
                .collect(),
        )
    }

    #[test]
    fn the_leader_is_named_by_all_that_name_one_and_by_itself() {
        assert_eq!(
            st(&[Some((1, 2)), Some((2, 2)), Some((3, 2))]).leader(),
            Ok(1)
        );
        // A member that does not answer, or knows no leader yet, has no say.
        assert_eq!(st(&[None, Some((2, 2)), Some((3, 0))]).leader(), Ok(1));
        // Two leaders named (a stale one, a new one): none.
        let split = st(&[Some((1, 1)), Some((2, 2)), Some((3, 2))]);
        assert!(split.leader().unwrap_err().contains("do not agree"));
        // The one named does not answer, or does not think it leads.
        assert!(st(&[None, Some((2, 1)), Some((3, 1))]).leader().is_err());
        assert!(st(&[Some((1, 0)), Some((2, 1)), Some((3, 1))])
            .leader()
            .is_err());
        // Nobody knows a leader, nobody answers.
        assert!(st(&[Some((1, 0)), Some((2, 0))]).leader().is_err());
        let silent = st(&[None, None]).leader().unwrap_err();
        assert!(silent.starts_with("no member answers"), "{silent}");
    }

    #[test]
    fn ready_is_every_member_answering_and_naming_the_leader() {
        assert_eq!(
            st(&[Some((1, 2)), Some((2, 2)), Some((3, 2))]).ready(),
            Ok(1)
        );
        let silent = st(&[Some((1, 2)), Some((2, 2)), None]).ready().unwrap_err();
        assert!(silent.contains("m2 does not answer"), "{silent}");
        let behind = st(&[Some((1, 2)), Some((2, 2)), Some((3, 0))]);
        assert_eq!(behind.leader(), Ok(1));
        assert!(behind.ready().unwrap_err().contains("not every member"));
        assert!(st(&[Some((1, 2)), Some((3, 2))]).ready().is_err());
        assert!(st(&[]).ready().is_err());
    }

    #[test]
    fn describe_names_each_endpoint() {
        assert_eq!(
            st(&[Some((0x1a, 0x2b)), None]).describe(),
            "m0: member 1a leader 2b; m1: connect: refused"
        );
    }

    #[test]
    fn uris() {
        assert_eq!(endpoint_uri("127.0.0.1:1", false), "http://127.0.0.1:1");
        assert_eq!(endpoint_uri("127.0.0.1:1", true), "https://127.0.0.1:1");
        assert_eq!(endpoint_uri("https://h:1", false), "https://h:1");
    }

    #[tokio::test]
    async fn nothing_listening() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let eps = [format!("127.0.0.1:{port}")];
        let probe = Probe::new(Duration::from_millis(500));
        assert!(leader_of(&eps, &probe).await.is_err());
        let e = wait_ready(&eps, &probe, Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(e.to_string().starts_with("not ready after"), "{e}");
    }
}
