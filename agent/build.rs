//! Compiles the tracer library (`tracer/`) with rustc alone into OUT_DIR, so
//! the agent embeds its bytes (`agent/src/trace/inject.rs`) and a clean
//! clone needs nothing but `cargo build`: `pydeep trace` loads it into the
//! target from memory, and nothing is installed on the machine.
//!
//! The tracer has no dependencies on purpose: one rustc invocation builds it,
//! with the same compiler cargo uses, optimised whatever the agent's profile
//! (its profile function runs on every call of the target), and with
//! `panic=abort` (nothing may unwind into the interpreter). It is linked
//! with `-z defs`: its panic handler calls a symbol defined nowhere, so a
//! panicking branch the optimiser could not remove fails this build
//! (tracer/src/lib.rs says why).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let source = manifest.join("../tracer/src/lib.rs");
    println!(
        "cargo:rerun-if-changed={}",
        manifest.join("../tracer/src").display()
    );
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it"));
    let library = out.join("libpydeep_tracer.so");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let status = Command::new(rustc)
        .args([
            "--crate-name",
            "pydeep_tracer",
            "--crate-type",
            "cdylib",
            "--edition",
            "2021",
            "-C",
            "opt-level=3",
            "-C",
            "panic=abort",
            "-C",
            "debuginfo=0",
            "-C",
            "strip=debuginfo",
            // Unwind tables, so that CPython's pthread_exit of the
            // watchdog (at the target's exit) unwinds through its frames.
            "-C",
            "force-unwind-tables=yes",
            "-C",
            "link-arg=-Wl,-z,defs",
            "-o",
        ])
        .arg(&library)
        .arg(&source)
        .output()
        .expect("run rustc to build the tracer library");
    let stderr = String::from_utf8_lossy(&status.stderr);
    eprint!("{stderr}");
    assert!(
        !stderr.contains("pydeep_tracer_has_a_panic_path"),
        "tracer/src has a panicking branch the optimiser kept (an index it cannot bound, \
         an unwrap, an overflow check, a formatting call): the tracer runs in the target, \
         where a panic would abort it; rewrite that branch (tracer/src/lib.rs explains)"
    );
    assert!(
        status.status.success(),
        "rustc failed to build tracer/src/lib.rs"
    );
}
