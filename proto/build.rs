fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; prost-build reads PROTOC.
    unsafe { std::env::set_var("PROTOC", protoc) };
    tonic_prost_build::configure().compile_protos(
        &[
            "proto/etcd/kv.proto",
            "proto/etcd/rpc.proto",
            "proto/flotilla/raft.proto",
            "proto/flotilla/cluster.proto",
            "proto/flotilla/objects.proto",
        ],
        &["proto"],
    )?;
    Ok(())
}
