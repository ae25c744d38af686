//! Virtual environments with real third-party libraries pip-installed, for
//! the tests that run pydeep on code we did not write
//! (snapshot_real_library.rs, trace_real_library.rs).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Python;

/// A venv of `python` with `packages` (pip requirement strings such as
/// `"pyparsing==3.1.4"`) installed, or why there is none (no network, no
/// wheel or sdist that installs on this version: the caller skips the
/// interpreter and says so).
///
/// One venv per package set and interpreter, kept in cargo's target tmpdir
/// (`CARGO_TARGET_TMPDIR`, `<target dir>/tmp`) across runs. It is made
/// under a name of its own and renamed into place only once pip succeeded,
/// so a venv in place is complete, and two tests making the same one at
/// once both end up with one that is (the loser's copy is removed).
pub fn venv_with(python: &Python, packages: &[&str]) -> Result<Python, String> {
    let (a, b, c) = python.version;
    let name = format!(
        "venv-{a}.{b}.{c}{}-{}-{}",
        if python.free_threaded { "t" } else { "" },
        python.path.display().to_string().replace('/', "_"),
        packages.join("+")
    );
    let tmpdir = target_tmpdir();
    let dir = tmpdir.join(&name);
    let bin = |dir: &Path| dir.join("bin").join("python");
    if !bin(&dir).exists() {
        std::fs::create_dir_all(&tmpdir).map_err(|e| format!("{}: {e}", tmpdir.display()))?;
        let making = tmpdir.join(format!("{name}.making-{}", std::process::id()));
        let made = make(python, &making, packages);
        if made.is_ok() && std::fs::rename(&making, &dir).is_err() && !bin(&dir).exists() {
            let _ = std::fs::remove_dir_all(&making);
            return Err(format!("cannot move the venv into {}", dir.display()));
        }
        // Failed, or another test put the same venv in place first.
        let _ = std::fs::remove_dir_all(&making);
        made?;
    }
    Ok(Python {
        path: bin(&dir),
        version: python.version,
        free_threaded: python.free_threaded,
    })
}

/// `python -m venv DIR` and `DIR/bin/python -m pip install PACKAGES`.
fn make(python: &Python, dir: &Path, packages: &[&str]) -> Result<(), String> {
    let run = |command: &mut Command, what: &str| -> Result<(), String> {
        let output = command.output().map_err(|e| format!("{what}: {e}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{what} failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        }
    };
    run(
        Command::new(&python.path)
            .args(["-m", "venv", "--clear"])
            .arg(dir),
        "python -m venv",
    )?;
    run(
        Command::new(dir.join("bin").join("python"))
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(packages),
        &format!("pip install {}", packages.join(" ")),
    )
}

/// `CARGO_TARGET_TMPDIR`, which cargo gives integration tests at compile
/// time only (not this library): `<target dir>/tmp`, found from the
/// running test's `<target dir>/<profile>/deps/<test>`.
fn target_tmpdir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.ancestors()
        .nth(3)
        .expect("the target dir above <profile>/deps/<test>")
        .join("tmp")
}
