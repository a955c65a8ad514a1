//! Compiles the .proto files with protox (pure Rust), so no `protoc` has to be
//! installed, and keeps the descriptor set for gRPC server reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "usher/v1/catalog.proto",
        "usher/v1/inventory.proto",
        "usher/v1/orders.proto",
        "usher/v1/identity.proto",
        "usher/v1/reporting.proto",
        "usher/v1/webhooks.proto",
        "usher/events/v1/events.proto",
        "usher/cluster/v1/node.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed=proto/{f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("usher_descriptor.bin"), prost::Message::encode_to_vec(&fds))?;
    // Default stubs let bench's baseline server implement only the calls it serves;
    // Usher implements every method (its tests call each one).
    tonic_prost_build::configure().build_client(true).build_server(true).generate_default_stubs(true).compile_fds(fds)?;
    Ok(())
}
