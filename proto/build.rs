fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; prost-build reads PROTOC.
    unsafe { std::env::set_var("PROTOC", protoc) };
    tonic_prost_build::configure()
        // Watch events carry objects serialized once and shared by every watcher.
        .bytes(".flotilla.objects.v1.WatchEvent.object")
        // List items too: the cache's serialized objects, not copied.
        .bytes(".flotilla.objects.v1.ListResponse.items")
        .compile_protos(
            &[
                "proto/etcd/kv.proto",
                "proto/etcd/rpc.proto",
                "proto/flotilla/raft.proto",
                "proto/flotilla/cluster.proto",
                "proto/flotilla/objects.proto",
                "proto/flotilla/node.proto",
                "proto/containerd/tasks.proto",
                "proto/containerd/containers.proto",
                "proto/externalgrpc/externalgrpc.proto",
            ],
            &["proto"],
        )?;
    Ok(())
}
