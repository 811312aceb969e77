//! Leadership as a stream, fenced writes refused by the state machine once
//! their term is over, and leases as a leader answers for them: a
//! three-master cluster in this process, each
//! master on a runtime (and thread) of its own, so that one can be paused
//! whole, as a SIGSTOP would pause its process.

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use flotilla_raftstore::error::Error;
use flotilla_raftstore::kv::{PutRequest, RangeRequest, RequestOp, TxnRequest};
use flotilla_raftstore::types::{Command, Outcome};
use flotilla_raftstore::{Master, MasterConfig};
use tokio::runtime::Handle;

/// One master on a current-thread runtime of its own.
struct Node {
    handle: Handle,
    master: Master,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Node {
    fn start(cfg: MasterConfig) -> Node {
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let running = flotilla_raftstore::start(cfg).await.expect("start master");
                let _ = tx.send((Handle::current(), running.master.clone()));
                let _ = stopped.await;
                running.shutdown().await;
            });
        });
        let (handle, master) = rx.recv().expect("master started");
        Node {
            handle,
            master,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Freeze every task of this master (its runtime's only thread blocks)
    /// until the returned sender is used or dropped.
    /// Returns once the master is frozen.
    fn pause(&self) -> std::sync::mpsc::Sender<()> {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (frozen, is_frozen) = std::sync::mpsc::channel::<()>();
        self.handle.spawn(async move {
            let _ = frozen.send(());
            let _ = rx.recv();
        });
        is_frozen.recv().expect("the master froze");
        tx
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// Wait until some master other than `not` leads in a term above `above`.
async fn leader(nodes: &[Node], not: Option<usize>, above: u64) -> (usize, u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        for (i, n) in nodes.iter().enumerate() {
            if Some(i) == not {
                continue;
            }
            if let Some(term) = *n.master.leadership().borrow() {
                if term > above {
                    return (i, term);
                }
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no leader elected in 20 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn fenced_put(term: u64, key: &str) -> Command {
    Command::Fenced {
        term,
        cmd: Box::new(Command::Txn(TxnRequest::single(RequestOp::Put(
            PutRequest {
                key: key.into(),
                value: b"v".to_vec(),
                ..Default::default()
            },
        )))),
    }
}

/// The leader, once its own fenced write went through: while it leads, a
/// leader's fenced write is applied (if leadership moved meanwhile, as it
/// may just after the start, the next leader's is).
async fn settled_leader(nodes: &[Node]) -> (usize, u64) {
    settled_leader_above(nodes, 0, "before").await
}

/// [`settled_leader`] in a term above `above`, writing `key`.
async fn settled_leader_above(nodes: &[Node], above: u64, key: &str) -> (usize, u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (l, term) = leader(nodes, None, above).await;
        match propose(&nodes[l], fenced_put(term, key)).await {
            Outcome::Txn(Ok(_)) => return (l, term),
            Outcome::Fenced { .. } if tokio::time::Instant::now() < deadline => {}
            r => panic!("the leader's own fenced write: {r:?}"),
        }
    }
}

/// Propose on `node`'s own runtime (as its leader loops would).
async fn propose(node: &Node, cmd: Command) -> Outcome {
    let m = node.master.clone();
    node.handle
        .spawn(async move { m.propose(cmd).await })
        .await
        .expect("propose task")
        .expect("propose")
        .outcome
}

/// Three masters founding a cluster in `dir`.
fn cluster(dir: &std::path::Path) -> Vec<Node> {
    let names = ["m0", "m1", "m2"];
    let peers: Vec<SocketAddr> = names.iter().map(|_| free_addr()).collect();
    let initial: Vec<(String, String)> = names
        .iter()
        .zip(&peers)
        .map(|(n, p)| (n.to_string(), p.to_string()))
        .collect();
    names
        .iter()
        .zip(&peers)
        .map(|(n, p)| {
            let mut cfg = MasterConfig::new(n, dir.join(n), free_addr(), *p);
            cfg.initial_cluster = initial.clone();
            Node::start(cfg)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_old_leaders_fenced_write_is_refused_after_a_new_leader_is_elected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nodes = cluster(dir.path());
    let (old, term) = settled_leader(&nodes).await;

    // Pause the leader; the others elect a new one.
    let resume = nodes[old].pause();
    leader(&nodes, Some(old), term).await;
    let _ = resume.send(());

    // Back from its pause, the old leader's loop writes with its old term:
    // the store refuses it, whichever way it reaches the log.
    let r = propose(&nodes[old], fenced_put(term, "late")).await;
    assert_eq!(r, Outcome::Fenced { term });
    // The new leader's writes with its own term go through.
    let (new, _) = settled_leader_above(&nodes, term, "after").await;
    let m = &nodes[new].master;
    assert!(exists(m, b"before"));
    assert!(!exists(m, b"late"));

    // The old leader's leadership stream says it no longer leads in `term`.
    let mut lead = nodes[old].master.leadership();
    tokio::time::timeout(Duration::from_secs(10), lead.wait_for(|t| *t != Some(term)))
        .await
        .expect("the old leader still says it leads")
        .expect("leadership stream");
}

/// Whether `key` exists on `m`'s replica now.
fn exists(m: &Master, key: &[u8]) -> bool {
    let r = m.range(&RangeRequest {
        key: key.to_vec(),
        ..Default::default()
    });
    !r.expect("read").kvs.is_empty()
}

/// Run `f` with `node`'s master on its own runtime.
async fn on<T: Send + 'static, F>(node: &Node, f: impl FnOnce(Master) -> F) -> T
where
    F: std::future::Future<Output = T> + Send + 'static,
{
    node.handle
        .spawn(f(node.master.clone()))
        .await
        .expect("task")
}

async fn grant(node: &Node, ttl: i64) -> i64 {
    let r = on(node, move |m| async move {
        m.propose(Command::LeaseGrant { id: 4242, ttl }).await
    })
    .await
    .expect("grant");
    assert_eq!(r.outcome, Outcome::LeaseGranted(Ok((4242, ttl))));
    4242
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_its_peers_does_not_renew_leases() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nodes = cluster(dir.path());
    let (first, _) = settled_leader(&nodes).await;
    let id = grant(&nodes[first], 30).await;
    // Renewed while the leader has its quorum (retried if leadership moves).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let l = loop {
        let (l, _) = leader(&nodes, None, 0).await;
        match on(
            &nodes[l],
            move |m| async move { m.lease_keep_alive(id).await },
        )
        .await
        {
            Ok(renewed) => {
                assert_eq!(renewed, Some(30));
                break l;
            }
            Err(e) => assert!(tokio::time::Instant::now() < deadline, "{e}"),
        }
    };
    // Both followers paused: the leader still takes client calls, but a new
    // leader could be elected behind it (and let the lease expire).
    let followers: Vec<_> = (0..3)
        .filter(|i| *i != l)
        .map(|i| nodes[i].pause())
        .collect();
    let answer = tokio::time::timeout(
        Duration::from_secs(10),
        on(
            &nodes[l],
            move |m| async move { m.lease_keep_alive(id).await },
        ),
    )
    .await;
    assert!(
        !matches!(answer, Ok(Ok(Some(_)))),
        "a leader without a quorum answered a keep-alive with 'renewed'"
    );
    drop(followers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_restarts_the_lease_clocks_before_answering_a_keep_alive() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nodes = cluster(dir.path());
    let (first, _) = settled_leader(&nodes).await;
    // A TTL long enough for keep-alives to keep it on a busy machine.
    let ttl = 5;
    let id = grant(&nodes[first], ttl).await;
    // Kept alive by the leader only: on the followers, whose clocks run
    // from the grant (or from their own term, if leadership moved
    // meanwhile), the lease expires.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let (old, term) = loop {
        let (l, term) = leader(&nodes, None, 0).await;
        // An error here is leadership moving: the next round goes to the
        // new leader.
        if let Ok(kept) = on(
            &nodes[l],
            move |m| async move { m.lease_keep_alive(id).await },
        )
        .await
        {
            assert_eq!(kept, Some(ttl), "the lease expired while kept alive");
        }
        let followers_expired = (0..3).filter(|i| *i != l).all(|i| {
            nodes[i]
                .master
                .local_lease_remaining(id)
                .is_some_and(|(left, _)| left == 0)
        });
        if followers_expired && *nodes[l].master.leadership().borrow() == Some(term) {
            break (l, term);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the followers' lease clocks never ran out"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let resume = nodes[old].pause();
    // The first keep-alive answered in the new term: renewed, not found
    // expired on the clock the new leader kept as a follower. (A refusal
    // for want of a settled leader is retried; an expiry or a timeout
    // waiting for a revocation is the defect.)
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let new = loop {
        let (new, _) = leader(&nodes, Some(old), term).await;
        match on(
            &nodes[new],
            move |m| async move { m.lease_keep_alive(id).await },
        )
        .await
        {
            Ok(kept) => {
                assert_eq!(kept, Some(ttl), "the new leader found the lease expired");
                break new;
            }
            Err(e @ (Error::NoLeader | Error::Unavailable(_))) => {
                assert!(tokio::time::Instant::now() < deadline, "{e}");
            }
            Err(e) => panic!("keep-alive in the new term: {e}"),
        }
    };
    assert!(
        nodes[new].master.local_lease_remaining(id).is_some(),
        "the lease was revoked"
    );
    drop(resume);
}

/// Wait until `f` holds, at most 20 s.
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The early expiry the chaos tests' lossy nemesis found: a leader took
/// over with a revoke of an earlier term in its log, committed but not yet
/// applied, restarted its lease clocks from the leases its store still
/// had, renewed the lease on a keep-alive, and then applied the revoke.
/// A client told "renewed" lost the lease at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_renews_no_lease_that_an_earlier_terms_revoke_removes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nodes = cluster(dir.path());
    let (first, term) = settled_leader(&nodes).await;
    let id = grant(&nodes[first], 30).await;
    until("every master has the lease", || {
        nodes
            .iter()
            .all(|n| n.master.local_lease_remaining(id).is_some())
    })
    .await;
    // The next leader's state machine lags: the revoke below reaches its
    // log and is committed, but it is not applied when it takes over.
    let next = (first + 1) % 3;
    let held = nodes[next].master.hold_applies();
    let r = on(&nodes[first], move |m| async move {
        m.propose(Command::LeaseRevoke { id }).await
    })
    .await
    .expect("revoke");
    assert_eq!(r.outcome, Outcome::Done(Ok(())));
    let to = nodes[next].master.id();
    on(
        &nodes[first],
        move |m| async move { m.move_leader(to).await },
    )
    .await
    .expect("leadership moves to the master whose applies lag");
    let (l, _) = leader(&nodes, Some(first), term).await;
    assert_eq!(l, next);
    // A keep-alive in the new term, while the revoke is still unapplied.
    let m = nodes[next].master.clone();
    let mut answer = nodes[next]
        .handle
        .spawn(async move { m.lease_keep_alive(id).await });
    // It may wait for the applies (and time out): give it the time the
    // defect needs to answer, then let the applies go.
    let early = tokio::time::timeout(Duration::from_secs(3), &mut answer).await;
    drop(held);
    let answer = match early {
        Ok(a) => a,
        Err(_) => answer.await,
    }
    .expect("keep-alive task");
    until("the new leader applies the revoke", || {
        nodes[next].master.local_lease_remaining(id).is_none()
    })
    .await;
    assert!(
        !matches!(answer, Ok(Some(_))),
        "the new leader renewed lease {id}, which the revoke of term {term} removed \
         right after: {answer:?}"
    );
}
