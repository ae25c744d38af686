//! Compiles `proto/pydeep.proto` with protox (a pure-Rust protobuf compiler),
//! so building pydeep never needs a system `protoc`.

fn main() {
    let proto_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../proto");
    let schema = format!("{proto_dir}/pydeep.proto");
    println!("cargo:rerun-if-changed={schema}");
    let descriptors =
        protox::compile([schema.as_str()], [proto_dir]).expect("compile pydeep.proto");
    prost_build::Config::new()
        .compile_fds(descriptors)
        .expect("generate Rust code for pydeep.proto");
}
