//! Every interpreter is sampled: a thread running code in a subinterpreter
//! shows up twice, once per interpreter, each with its own stack.

use pydeep::Target;
use pydeep_integration::{test_pythons, Fixture};

#[test]
fn a_thread_inside_a_subinterpreter_is_sampled_in_both_interpreters() {
    for python in test_pythons("walker: subinterpreters") {
        let label = python.label();
        let running = Fixture::start(&python, "subinterpreter.py", &[]);
        running.wait_ready();
        let pid = running.pid();
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
