//! Command lines of the members the tests start: `flotilla master` and an
//! etcd member (Debian's /usr/bin/etcd, 3.4).

use std::path::{Path, PathBuf};
use std::process::Command;

use flotilla_proto::etcdserverpb::Member as EtcdMember;

use crate::Target;

/// Where Debian's `etcd-server` package puts etcd.
pub const ETCD_BIN: &str = "/usr/bin/etcd";

/// etcd refuses an election timeout of fewer heartbeats than this; a
/// [`Member`] started as etcd gets at least that many.
pub const ETCD_MIN_ELECTION_HEARTBEATS: u64 = 5;

/// How a member comes up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Boot {
    /// A founding member of the cluster of these members, `(name, peer
    /// HOST:PORT)`: `--initial-cluster name=HOST:PORT,...` (etcd:
    /// `name=http://HOST:PORT,...` and `--initial-cluster-state new`). A
    /// member restarted on its data directory keeps this: both servers then
    /// ignore it.
    New(Vec<(String, String)>),
    /// Flotilla only: a new, empty master that joins the cluster through
    /// these client addresses (`--join HOST:PORT,...`).
    Join(Vec<String>),
    /// etcd only: a member already added with MemberAdd, started with the
    /// grown membership (`name=URL,...`, see [`etcd_joined_cluster`]) and
    /// `--initial-cluster-state existing`.
    Existing(String),
}

/// One member's flags. [`Member::args`] turns them into the command line of
/// either target, [`Member::command`] into a process to spawn.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub data_dir: PathBuf,
    /// HOST:PORT of the client (etcd v3) API.
    pub client_addr: String,
    /// HOST:PORT of the peer (raft) API.
    pub peer_addr: String,
    pub boot: Boot,
    pub heartbeat_ms: u64,
    /// etcd gets at least [`ETCD_MIN_ELECTION_HEARTBEATS`] heartbeats.
    pub election_ms: u64,
    /// `--snapshot-logs` (etcd: `--snapshot-count`).
    pub snapshot_logs: Option<u64>,
    /// `--auto-compaction-retention` in revisions (etcd: with
    /// `--auto-compaction-mode revision`).
    pub auto_compaction_retention: Option<u64>,
    /// Flotilla only: `--insecure-allow-plaintext` (a master that listens
    /// off loopback without TLS).
    pub insecure_allow_plaintext: bool,
    /// etcd only: `--initial-cluster-token`.
    pub cluster_token: Option<String>,
    /// More flags, last.
    pub extra_args: Vec<String>,
}

impl Member {
    /// A member with the masters' default timing (100 ms heartbeats, 300 ms
    /// election timeout) and no optional flag.
    pub fn new(
        name: impl Into<String>,
        data_dir: impl Into<PathBuf>,
        client_addr: impl Into<String>,
        peer_addr: impl Into<String>,
        boot: Boot,
    ) -> Member {
        Member {
            name: name.into(),
            data_dir: data_dir.into(),
            client_addr: client_addr.into(),
            peer_addr: peer_addr.into(),
            boot,
            heartbeat_ms: 100,
            election_ms: 300,
            snapshot_logs: None,
            auto_compaction_retention: None,
            insecure_allow_plaintext: false,
            cluster_token: None,
            extra_args: Vec::new(),
        }
    }

    /// The arguments of `flotilla` (starting with `master`) or of `etcd`.
    ///
    /// # Panics
    /// When the boot is the other target's ([`Boot::Join`] for etcd,
    /// [`Boot::Existing`] for Flotilla).
    pub fn args(&self, target: Target) -> Vec<String> {
        match target {
            Target::Flotilla => self.flotilla_args(),
            Target::Etcd => self.etcd_args(),
        }
    }

    /// `program` with [`Member::args`].
    pub fn command(&self, target: Target, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.args(self.args(target));
        cmd
    }

    fn flotilla_args(&self) -> Vec<String> {
        let data = self.data_dir.to_string_lossy();
        let mut a: Vec<String> = [
            "master",
            "--name",
            &self.name,
            "--data-dir",
            &data,
            "--client-addr",
            &self.client_addr,
            "--peer-addr",
            &self.peer_addr,
            "--heartbeat-interval-ms",
            &self.heartbeat_ms.to_string(),
            "--election-timeout-ms",
            &self.election_ms.to_string(),
        ]
        .map(String::from)
        .into();
        match &self.boot {
            Boot::New(members) => {
                a.push("--initial-cluster".into());
                a.push(initial_cluster(members, ""));
            }
            Boot::Join(addrs) => {
                a.push("--join".into());
                a.push(addrs.join(","));
            }
            Boot::Existing(_) => {
                panic!(
                    "{}: Boot::Existing is etcd's; a master joins with Boot::Join",
                    self.name
                )
            }
        }
        if let Some(n) = self.snapshot_logs {
            a.extend(["--snapshot-logs".into(), n.to_string()]);
        }
        if let Some(n) = self.auto_compaction_retention {
            a.extend(["--auto-compaction-retention".into(), n.to_string()]);
        }
        if self.insecure_allow_plaintext {
            a.push("--insecure-allow-plaintext".into());
        }
        a.extend(self.extra_args.iter().cloned());
        a
    }

    fn etcd_args(&self) -> Vec<String> {
        let data = self.data_dir.to_string_lossy();
        let client_url = format!("http://{}", self.client_addr);
        let peer_url = format!("http://{}", self.peer_addr);
        let mut a: Vec<String> = [
            "--name",
            &self.name,
            "--data-dir",
            &data,
            "--listen-client-urls",
            &client_url,
            "--advertise-client-urls",
            &client_url,
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
        ]
        .map(String::from)
        .into();
        if let Some(token) = &self.cluster_token {
            a.extend(["--initial-cluster-token".into(), token.clone()]);
        }
        let election = self
            .election_ms
            .max(ETCD_MIN_ELECTION_HEARTBEATS * self.heartbeat_ms);
        a.extend(
            [
                "--heartbeat-interval",
                &self.heartbeat_ms.to_string(),
                "--election-timeout",
                &election.to_string(),
                "--logger",
                "zap",
                "--log-outputs",
                "stderr",
            ]
            .map(String::from),
        );
        let (ic, state) = match &self.boot {
            Boot::New(members) => (initial_cluster(members, "http://"), "new"),
            Boot::Existing(ic) => (ic.clone(), "existing"),
            Boot::Join(_) => {
                panic!(
                    "{}: Boot::Join is Flotilla's; etcd joins with Boot::Existing",
                    self.name
                )
            }
        };
        a.extend(["--initial-cluster".into(), ic]);
        a.extend(["--initial-cluster-state".into(), state.into()]);
        if let Some(n) = self.snapshot_logs {
            a.extend(["--snapshot-count".into(), n.to_string()]);
        }
        if let Some(n) = self.auto_compaction_retention {
            a.extend(["--auto-compaction-mode".into(), "revision".into()]);
            a.extend(["--auto-compaction-retention".into(), n.to_string()]);
        }
        a.extend(self.extra_args.iter().cloned());
        a
    }
}

fn initial_cluster(members: &[(String, String)], scheme: &str) -> String {
    members
        .iter()
        .map(|(name, peer)| format!("{name}={scheme}{peer}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The `--initial-cluster` of etcd member `name` (peer URL `peer_url`) just
/// added with MemberAdd: every member of `members` (MemberAdd's or
/// MemberList's answer) as `name=URL`, the new one, still unnamed, as `name`.
pub fn etcd_joined_cluster(members: &[EtcdMember], name: &str, peer_url: &str) -> String {
    members
        .iter()
        .map(|m| {
            let url = m.peer_ur_ls.first().map(String::as_str).unwrap_or("");
            let m_name = if m.name.is_empty() && url == peer_url {
                name
            } else {
                &m.name
            };
            format!("{m_name}={url}")
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> Vec<(String, String)> {
        (1..=3)
            .map(|i| (format!("n{i}"), format!("127.0.0.1:2{i}80")))
            .collect()
    }

    fn member(boot: Boot) -> Member {
        Member::new("n1", "/d/n1", "127.0.0.1:2179", "127.0.0.1:2180", boot)
    }

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn a_founding_master() {
        let mut m = member(Boot::New(three()));
        assert_eq!(
            m.args(Target::Flotilla),
            words(
                "master --name n1 --data-dir /d/n1 --client-addr 127.0.0.1:2179 \
                 --peer-addr 127.0.0.1:2180 --heartbeat-interval-ms 100 --election-timeout-ms 300 \
                 --initial-cluster n1=127.0.0.1:2180,n2=127.0.0.1:2280,n3=127.0.0.1:2380"
            )
        );
        m.snapshot_logs = Some(1000);
        m.auto_compaction_retention = Some(0);
        m.insecure_allow_plaintext = true;
        m.cluster_token = Some("ignored".into());
        m.extra_args = vec!["--controllers=a,b".into()];
        assert_eq!(
            m.args(Target::Flotilla),
            words(
                "master --name n1 --data-dir /d/n1 --client-addr 127.0.0.1:2179 \
                 --peer-addr 127.0.0.1:2180 --heartbeat-interval-ms 100 --election-timeout-ms 300 \
                 --initial-cluster n1=127.0.0.1:2180,n2=127.0.0.1:2280,n3=127.0.0.1:2380 \
                 --snapshot-logs 1000 --auto-compaction-retention 0 --insecure-allow-plaintext \
                 --controllers=a,b"
            )
        );
    }

    #[test]
    fn a_joining_master() {
        let m = member(Boot::Join(vec![
            "10.0.0.2:2379".into(),
            "10.0.0.3:2379".into(),
        ]));
        let a = m.args(Target::Flotilla);
        assert_eq!(a[13..], words("--join 10.0.0.2:2379,10.0.0.3:2379"));
    }

    #[test]
    fn a_founding_etcd_member() {
        let mut m = member(Boot::New(three()));
        m.cluster_token = Some("tok".into());
        assert_eq!(
            m.args(Target::Etcd),
            words(
                "--name n1 --data-dir /d/n1 \
                 --listen-client-urls http://127.0.0.1:2179 --advertise-client-urls http://127.0.0.1:2179 \
                 --listen-peer-urls http://127.0.0.1:2180 --initial-advertise-peer-urls http://127.0.0.1:2180 \
                 --initial-cluster-token tok --heartbeat-interval 100 --election-timeout 500 \
                 --logger zap --log-outputs stderr \
                 --initial-cluster n1=http://127.0.0.1:2180,n2=http://127.0.0.1:2280,n3=http://127.0.0.1:2380 \
                 --initial-cluster-state new"
            )
        );
        m.election_ms = 1000;
        m.snapshot_logs = Some(10);
        m.auto_compaction_retention = Some(5);
        m.insecure_allow_plaintext = true;
        m.extra_args = vec!["--quota-backend-bytes=1".into()];
        let a = m.args(Target::Etcd);
        assert_eq!(a[16..18], words("--election-timeout 1000"));
        assert_eq!(
            a[26..],
            words(
                "--snapshot-count 10 --auto-compaction-mode revision --auto-compaction-retention 5 \
                 --quota-backend-bytes=1"
            )
        );
    }

    #[test]
    fn a_joining_etcd_member() {
        let members = vec![
            EtcdMember {
                name: "n1".into(),
                peer_ur_ls: vec!["http://10.0.0.1:2380".into()],
                ..Default::default()
            },
            EtcdMember {
                name: String::new(),
                peer_ur_ls: vec!["http://10.0.0.4:2380".into()],
                ..Default::default()
            },
        ];
        let ic = etcd_joined_cluster(&members, "n4", "http://10.0.0.4:2380");
        assert_eq!(ic, "n1=http://10.0.0.1:2380,n4=http://10.0.0.4:2380");
        let m = member(Boot::Existing(ic.clone()));
        let a = m.args(Target::Etcd);
        assert_eq!(
            a[a.len() - 4..],
            words(&format!(
                "--initial-cluster {ic} --initial-cluster-state existing"
            ))
        );
    }

    #[test]
    #[should_panic(expected = "Boot::Join is Flotilla's")]
    fn etcd_does_not_join_by_client_address() {
        member(Boot::Join(vec![])).args(Target::Etcd);
    }

    #[test]
    fn command_runs_the_program_with_the_args() {
        let m = member(Boot::New(three()));
        let cmd = m.command(Target::Etcd, Path::new(ETCD_BIN));
        assert_eq!(cmd.get_program(), ETCD_BIN);
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(args, m.args(Target::Etcd));
    }
}
