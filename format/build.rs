//! Compiles `proto/pydeep.proto` with protox (a pure-Rust protobuf compiler),
//! so building pydeep never needs a system `protoc`.

fn main() {
    // Read at run time, not baked in with env!(): a build script binary
    // copied with a target/ directory from another checkout would otherwise
    // keep compiling that checkout's schema.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let proto_dir = format!("{manifest_dir}/../proto");
    let schema = format!("{proto_dir}/pydeep.proto");
    println!("cargo:rerun-if-changed={schema}");
    let descriptors =
        protox::compile([schema.as_str()], [proto_dir]).expect("compile pydeep.proto");
    prost_build::Config::new()
        .compile_fds(descriptors)
        .expect("generate Rust code for pydeep.proto");
}
