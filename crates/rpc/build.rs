//! Compiles `proto/*.proto` with `protox`, a pure-Rust protobuf compiler, so
//! that building Cairn never needs a system `protoc`. The descriptor set it
//! produces is handed to `madsim-tonic-build`, which writes both the real
//! tonic code and the simulator's variant (picked by `cfg(madsim)`).

use std::path::PathBuf;

use prost::Message;

const PROTOS: &[&str] = &[
    "proto/echo.proto",
    "proto/mapreduce.proto",
    "proto/raft.proto",
    "proto/node.proto",
    "proto/kv.proto",
    "proto/etcd.proto",
    "proto/shardctrler.proto",
    "proto/shardkv.proto",
    "proto/fs.proto",
    "proto/backup.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(PROTOS, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_path = out_dir.join("cairn_descriptor.bin");
    std::fs::write(&descriptor_path, descriptors.encode_to_vec())?;
    tonic_build::configure()
        .file_descriptor_set_path(&descriptor_path)
        .skip_protoc_run()
        .bytes([
            ".cairn.raft",
            ".cairn.backup",
            ".cairn.kv",
            ".cairn.shardkv",
            ".etcdserverpb",
            // The file store's bulk data: no copy on the way in or out.
            ".cairn.fs.PushRequest.data",
            ".cairn.fs.ReadReply.data",
        ])
        .emit_rerun_if_changed(false)
        .compile_protos(PROTOS, &["proto"])?;
    Ok(())
}
