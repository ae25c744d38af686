//! Compiles Google's `proto/profile.proto` (the pprof format, vendored in
//! `viewer/proto/`) with protox, so building the viewer never needs `protoc`.

fn main() {
    // Read at run time, not baked in with env!() (as format/build.rs does):
    // a build script binary copied with a target/ directory from another
    // checkout would otherwise compile that checkout's file.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let proto_dir = format!("{manifest_dir}/proto");
    let schema = format!("{proto_dir}/profile.proto");
    println!("cargo:rerun-if-changed={schema}");
    let descriptors =
        protox::compile([schema.as_str()], [proto_dir.as_str()]).expect("compile profile.proto");
    prost_build::Config::new()
        .compile_fds(descriptors)
        .expect("generate Rust code for profile.proto");
}
