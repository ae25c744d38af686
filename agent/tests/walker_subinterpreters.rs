//! Every interpreter is sampled: a thread running code in a subinterpreter
//! shows up twice, once per interpreter, each with its own stack.

use std::process::{Child, Command};

use pydeep::Target;
use pydeep_integration::{program, test_pythons};

struct Running {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_thread_inside_a_subinterpreter_is_sampled_in_both_interpreters() {
    for python in test_pythons("walker: subinterpreters") {
        let label = python.label();
        let dir = tempfile::tempdir().expect("tempdir");
        let ready = dir.path().join("ready");
        let child = Command::new(&python.path)
            .arg(program("subinterpreter.py"))
            .arg(&ready)
            .spawn()
            .expect("start");
        let running = Running { child, _dir: dir };
        for _ in 0..6000 {
            if ready.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(ready.exists(), "{label}: subinterpreter never ran");
        let pid = running.child.id() as i32;
        let mut target = Target::attach(pid).expect("attach");
        let mut samples = Vec::new();
        {
            let _pause = target.pause().expect("pause");
            target.sample_threads(&mut samples).expect("sample");
        }
        let sub: Vec<_> = samples
            .iter()
            .filter(|s| s.interpreter == 1)
            .cloned()
            .collect();
        assert_eq!(sub.len(), 1, "{label}: subinterpreter threads {samples:?}");
        let names: Vec<String> = sub[0]
            .frames
            .iter()
            .map(|f| {
                target
                    .code_object(f.code_address)
                    .expect("code")
                    .1
                    .name
                    .clone()
            })
            .collect();
        assert_eq!(
            names,
            ["sub_wait", "<module>"],
            "{label}: subinterpreter stack"
        );
        let main_side = samples
            .iter()
            .find(|s| s.interpreter == 0 && s.native_id == sub[0].native_id)
            .unwrap_or_else(|| panic!("{label}: runner thread missing from the main interpreter"));
        let outer = target
            .code_object(main_side.frames[0].code_address)
            .expect("code")
            .1
            .name
            .clone();
        assert_eq!(
            outer, "runner",
            "{label}: main-interpreter side of the runner"
        );
        assert!(samples.iter().any(|s| s.is_main), "{label}: no main thread");
    }
}
