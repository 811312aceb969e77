//! Every protobuf definition Flotilla speaks, and the code generated from it.
//!
//! Owns: the etcd v3 wire types and services (`mvccpb`, `etcdserverpb`),
//! written from the protocol's public description so that etcd clients work
//! unchanged; Flotilla's master-to-master service (`raft`); and the cluster
//! administration service that `flt` speaks (`cluster`); the object
//! API (`objects`), whose messages carry objects as JSON; and the node
//! streams (`node`: pod logs, exec and port-forward, served by agents, relayed
//! by masters); the few calls of containerd's API the agent makes; and the
//! cluster-autoscaler's externalgrpc CloudProvider service (`externalgrpc`),
//! whose client the masters' autoscaler is.
//!
//! Must not depend on any other Flotilla crate: protobuf stays at this edge,
//! and the crates above convert it to their own types.

#![allow(clippy::all, missing_docs)]

pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}

pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

pub mod raft {
    tonic::include_proto!("flotilla.raft.v1");
}

pub mod cluster {
    tonic::include_proto!("flotilla.cluster.v1");
}

pub mod objects {
    tonic::include_proto!("flotilla.objects.v1");
}

pub mod node {
    tonic::include_proto!("flotilla.node.v1");

    /// The largest message of the node streams that flt, the masters and
    /// the agents accept: an exec's standard input (flt sends 64 MiB at
    /// most) or output, with room for the rest of the message.
    pub const MESSAGE_LIMIT: usize = 80 << 20;
}

/// The few calls of containerd's own API the agent makes (a command with
/// standard input in a container).
pub mod containerd {
    pub mod tasks {
        tonic::include_proto!("containerd.services.tasks.v1");
    }
    pub mod containers {
        tonic::include_proto!("containerd.services.containers.v1");
    }
}

/// Kubernetes cluster-autoscaler's externalgrpc cloud provider service.
pub mod externalgrpc {
    tonic::include_proto!("clusterautoscaler.cloudprovider.v1.externalgrpc");
}

/// The etcd v3 convention for a prefix range: the `range_end` that, with
/// `key = prefix`, selects every key starting with `prefix` (the prefix with
/// its last byte below 0xff incremented; `[0]`, "every key", when there is
/// none).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    #[test]
    fn prefix_end_follows_etcd() {
        assert_eq!(super::prefix_end(b"a/"), b"a0".to_vec());
        assert_eq!(super::prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(super::prefix_end(b"\xff\xff"), vec![0]);
        assert_eq!(super::prefix_end(b""), vec![0]);
    }
}
