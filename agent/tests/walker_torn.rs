//! Non-blocking sampling of a target that never stops: a stack read while
//! it changed is flagged torn (and counted), and every stack not flagged is
//! a stack the program can really have.

use pydeep::Target;
use pydeep_integration::{test_pythons, Fixture};

/// The busy thread's stacks are `churn`* `main` `<module>`, innermost first.
fn is_possible(names: &[String]) -> bool {
    let churns = names.iter().take_while(|n| *n == "churn").count();
    names[churns..] == ["main".to_string(), "<module>".to_string()]
}

#[test]
fn stacks_changing_under_the_reader_are_flagged_torn_never_shown_wrong() {
    for python in test_pythons("walker: torn reads in non-blocking mode") {
        let label = python.label();
        let running = Fixture::start(&python, "deep_stack.py", &["50", "busy"]);
        running.wait_ready();
        let pid = running.pid();
        let mut target = Target::attach(pid).expect("attach");
        let (mut torn, mut good, mut empty) = (0u32, 0u32, 0u32);
        let mut samples = Vec::new();
        // Until Thread.start() returns, the main thread is legitimately in
        // start -> wait, and the idle thread needs a moment to descend:
        // begin once the main thread is seen churning and the idle thread
        // deep (time-bounded, not count-bounded: a loaded machine is slow).
        let mut churning = false;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            target.sample_threads(&mut samples).expect("sample");
            let idle_deep = samples
                .iter()
                .any(|s| s.native_id != pid as u64 && !s.torn && s.frames.len() > 50);
            let busy = samples.iter().find(|s| s.native_id == pid as u64);
            if let Some(frame) = busy.and_then(|b| if b.torn { None } else { b.frames.first() }) {
                if idle_deep
                    && target
                        .code_object(frame.code_address)
                        .map(|c| c.1.name == "churn")
                        .unwrap_or(false)
                {
                    churning = true;
                    break;
                }
            }
        }
        assert!(churning, "{label}: the main thread never started churning");
        for _ in 0..3000 {
            target.sample_threads(&mut samples).expect("sample");
            let Some(busy) = samples.iter().find(|s| s.native_id == pid as u64) else {
                panic!("{label}: no main thread in {samples:?}");
            };
            if busy.torn {
                torn += 1;
                continue;
            }
            if busy.frames.is_empty() {
                empty += 1;
                continue;
            }
            let mut names = Vec::new();
            for frame in busy.frames.clone() {
                match target.code_object(frame.code_address) {
                    Ok((_, code)) => names.push(code.name.clone()),
                    Err(e) => panic!("{label}: untorn stack with unreadable code: {e}"),
                }
            }
            assert!(
                is_possible(&names),
                "{label}: untorn but impossible stack {names:?}"
            );
            good += 1;
            // The idle thread is never torn.
            let idle = samples
                .iter()
                .find(|s| s.native_id != pid as u64)
                .expect("idle thread");
            assert!(
                !idle.torn && idle.frames.len() > 50,
                "{label}: idle {idle:?}"
            );
        }
        eprintln!("   {label}: 3000 samples: {good} consistent, {torn} torn, {empty} empty");
        assert!(good > 0, "{label}: no consistent sample at all");
    }
}
