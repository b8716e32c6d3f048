//! Compiles the `flotilla.v1` protobuf contract without `protoc`: `protox` parses the
//! `.proto` files into a `FileDescriptorSet` (also written to `OUT_DIR` for gRPC
//! reflection) and `tonic-prost-build` generates messages, clients and servers from it.
//! `pbjson-build` generates, from the same descriptors, serde implementations that
//! follow the canonical protobuf JSON mapping (what `flotilla --output json` prints).

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
    let encoded = write_descriptor_set(&out_dir.join("flotilla_v1_descriptor.bin"), &fds)?;

    // Every client and server encodes with `codec::LeanCodec` (prost's, with small first
    // buffers: see `src/codec.rs`).
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(true)
        .codec_path("crate::codec::LeanCodec")
        .compile_fds(fds)?;

    // `flotilla.v1.serde.rs`: Serialize/Deserialize in the canonical proto3 JSON mapping
    // (lowerCamelCase names, enums by name, 64-bit integers as strings, bytes as base64).
    // Every field is written, also at its default value, so a document always has the
    // message's whole shape (fields with presence, i.e. messages and `optional`
    // scalars, are left out when unset, as the mapping says). Readers accept the JSON
    // name or the proto name of a field, skip fields they do not know and read enum
    // names they do not know as 0 (`*_UNSPECIFIED`), so a document written by a newer
    // build (fields are only ever added) still parses.
    pbjson_build::Builder::new()
        .register_descriptors(&encoded)?
        .emit_fields()
        .ignore_unknown_fields()
        .ignore_unknown_enum_variants()
        .build(&[".flotilla.v1"])?;
    Ok(())
}

/// Writes the encoded descriptor set to `path` and returns the bytes.
fn write_descriptor_set(path: &Path, fds: &prost_types::FileDescriptorSet) -> Result<Vec<u8>, Box<dyn Error>> {
    use prost::Message as _;
    let encoded = fds.encode_to_vec();
    fs::write(path, &encoded)?;
    Ok(encoded)
}
