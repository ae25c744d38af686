//! A target that exits while `pydeep trace`'s watchdog waits for its GIL
//! exits cleanly, on every interpreter with a GIL.
//!
//! CPython ends a thread that waits for the GIL once the interpreter
//! finalizes (`take_gil` calls `pthread_exit`). The watchdog is such a
//! thread for as long as a window is open (it takes the GIL every 100 ms to
//! hook new threads) and after it (to release its objects). Its forced
//! unwind once ran into Rust's std thread entry, an `extern "C"` frame that
//! aborts on any unwind: the target printed "thread 'pydeep-tracer'
//! panicked ... panic in a function that cannot unwind" and aborted at its
//! exit (seen once in the full suite on 3.11.2; reproduced here every time).
//! The fixture (`tests/programs/trace_exit.py`) holds the GIL in C at exit,
//! so the watchdog is certainly waiting when finalization starts.

use std::io::Read;
use std::process::{Command, Stdio};

use pydeep_integration::spawned::Spawned;
use pydeep_integration::waits::{wait_exit, wait_for_file};
use pydeep_integration::{program, test_pythons, Python};

#[test]
fn a_target_exiting_while_the_tracer_waits_for_the_gil_exits_cleanly() {
    for python in test_pythons("pydeep trace: target exit") {
        if python.free_threaded {
            continue;
        }
        check(&python);
    }
}

fn check(python: &Python) {
    let what = python.label();
    let dir = tempfile::tempdir().expect("tempdir");
    let ready = dir.path().join("ready");
    let mut target = Command::new(&python.path)
        .arg(program("trace_exit.py"))
        .arg(&ready)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start trace_exit.py");
    let mut target_stderr = target.stderr.take().expect("stderr");
    let target_errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = target_stderr.read_to_string(&mut text);
        text
    });
    wait_for_file(&ready, &mut target, &what);

    let mut trace = Spawned::trace(
        target.id() as i32,
        &dir.path().join("exit.pdr"),
        &["-d", "60s"],
        &what,
    );
    trace.wait_tracing();

    // The target leaves its loop and holds the GIL at exit while the
    // window is open: the watchdog's next rescan waits for the GIL.
    std::fs::write(dir.path().join("end"), "").expect("end");
    let status = wait_exit(&mut target, &what);
    let errors = target_errors.join().expect("stderr reader");
    assert!(
        !errors.contains("panicked") && !errors.contains("pydeep"),
        "{what}: the tracer wrote into the target's stderr:\n{errors}"
    );
    assert!(
        status.success(),
        "{what}: the target ended with {status}:\n{errors}"
    );

    // pydeep sees the target gone and says so (exit 7).
    let traced = wait_exit(&mut trace.child, &what);
    assert_eq!(
        traced.code(),
        Some(7),
        "{what}: pydeep trace ended with {traced}"
    );
    eprintln!("   {what}: the target exited 0 during the window, nothing on its stderr");
}
