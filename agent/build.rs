//! Generates the `protocol` module from `protos/*.proto` with the pure-Rust protobuf parser
//! (no `protoc` binary needed).

use std::path::PathBuf;

fn main() {
    let out =
        PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR set by cargo")).join("protocol");
    std::fs::create_dir_all(&out).expect("create protocol out dir");
    println!("cargo:rerun-if-changed=protos");
    ttrpc_codegen::Codegen::new()
        .out_dir(&out)
        .include("protos")
        .input("protos/agent.proto")
        .rust_protobuf()
        .run()
        .expect("generate ttrpc code from protos/agent.proto");
    // The generated files start with inner attributes, which `include!` cannot take; the
    // `protocol` module puts equivalent outer attributes on the including modules instead.
    for name in ["agent.rs", "agent_ttrpc.rs"] {
        let path = out.join(name);
        let text = std::fs::read_to_string(&path).expect("read generated file");
        let kept: String = text
            .lines()
            .filter(|l| !l.starts_with("#![") && !l.starts_with("//!"))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(&path, kept).expect("write generated file");
    }
}
