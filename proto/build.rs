//! Compiles the `flotilla.v1` protobuf contract without `protoc`: `protox` parses the
//! `.proto` files into a `FileDescriptorSet` (also written to `OUT_DIR` for gRPC
//! reflection) and `tonic-prost-build` generates messages, clients and servers from it.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::{env, fs};

fn main() -> Result<(), Box<dyn Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("proto");
    let package_dir = root.join("flotilla").join("v1");
    println!("cargo:rerun-if-changed={}", package_dir.display());

    let mut files = Vec::new();
    for entry in fs::read_dir(&package_dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "proto") {
            println!("cargo:rerun-if-changed={}", path.display());
            files.push(path);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(format!("no .proto files in {}", package_dir.display()).into());
    }

    let fds = protox::compile(&files, [&root])?;

    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    write_descriptor_set(&out_dir.join("flotilla_v1_descriptor.bin"), &fds)?;

    tonic_prost_build::configure().build_client(true).build_server(true).build_transport(true).compile_fds(fds)?;
    Ok(())
}

fn write_descriptor_set(path: &Path, fds: &prost_types::FileDescriptorSet) -> Result<(), Box<dyn Error>> {
    use prost::Message as _;
    fs::write(path, fds.encode_to_vec())?;
    Ok(())
}
