//! The Python script pydeep's PEP 768 start writes for a 3.14+ target
//! (`trace::remote_exec::script`), run on every interpreter found here.
//!
//! No 3.14 can run on this machine, so CPython's own delivery of the script
//! (the debugger_script_path, the eval breaker, `_PyRunRemoteDebugger`) is
//! NOT exercised: the script is run the way `_PyRunRemoteDebugger` runs it
//! (its source compiled as a file and executed in a fresh namespace) in a
//! program of each version, and must load the embedded tracer from a memfd
//! named like the ptrace injection's, call its start function and leave the
//! result where the agent reads it.
#![cfg(target_arch = "x86_64")]

use std::path::Path;
use std::process::Command;

use pydeep::trace::inject;
use pydeep::trace::remote_exec::{script, Load, Placed, LIBRARY_FILE, SCRIPT_FILE};
use pydeep_integration::test_pythons;

#[test]
fn the_start_script_loads_the_tracer_from_a_memfd_and_reports_the_start_result() {
    for python in test_pythons("pep768 script")
        .into_iter()
        .filter(|p| !p.free_threaded)
    {
        let placed = Placed::create(Path::new("/"), None).expect("a directory in /tmp");
        let library = placed
            .write_file(LIBRARY_FILE, inject::TRACER_LIBRARY)
            .unwrap();
        // The agent pid given is this test's: the tracer's watchdog only
        // waits for it; the program ends before any window.
        let text = script(
            &Load::Library(library),
            &placed.directory,
            std::process::id(),
            0,
        )
        .unwrap();
        let script_path = placed.write_file(SCRIPT_FILE, text.as_bytes()).unwrap();
        let output = Command::new(&python.path)
            .arg("-c")
            .arg(
                "import os, sys\n\
                 source = open(sys.argv[1], 'rb').read()\n\
                 exec(compile(source, sys.argv[1], 'exec'), {})\n\
                 maps = open('/proc/self/maps').read()\n\
                 print(sum('/memfd:pydeep-tracer-v5' in line for line in maps.splitlines()))\n\
                 sys.stdout.flush()\n\
                 os._exit(0)\n",
            )
            .arg(&script_path)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}: {}",
            python.label(),
            String::from_utf8_lossy(&output.stderr)
        );
        let mappings: u32 = String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .unwrap();
        assert!(mappings > 0, "{}: no memfd mapping", python.label());
        assert_eq!(
            placed.result().unwrap().as_deref(),
            Some("0"),
            "{}: the start function's result",
            python.label()
        );
        let host = Path::new(&placed.directory).to_path_buf();
        drop(placed);
        assert!(!host.exists(), "{}: files left", python.label());
    }
}
