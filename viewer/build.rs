//! Compiles Google's `proto/profile.proto` (the pprof format, vendored in
//! `viewer/proto/`) with protox, so building the viewer never needs `protoc`.

fn main() {
    let proto_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/proto");
    let schema = format!("{proto_dir}/profile.proto");
    println!("cargo:rerun-if-changed={schema}");
    let descriptors =
        protox::compile([schema.as_str()], [proto_dir]).expect("compile profile.proto");
    prost_build::Config::new()
        .compile_fds(descriptors)
        .expect("generate Rust code for profile.proto");
}
