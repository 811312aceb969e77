//! Every protobuf definition Flotilla speaks, and the code generated from it.
//!
//! Owns: the etcd v3 wire types and services (`mvccpb`, `etcdserverpb`),
//! written from the protocol's public description so that etcd clients work
//! unchanged; Flotilla's master-to-master service (`raft`); and the cluster
//! administration service that `flt` speaks (`cluster`); and the object
//! API (`objects`), whose messages carry objects as JSON.
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
