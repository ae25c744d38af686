//! GIL and activity flags on a paused target whose main thread computes in
//! pure Python (it holds the GIL and is runnable) while another thread
//! sleeps on an Event (no GIL, idle).

use pydeep::Target;
use pydeep_integration::{test_pythons, Fixture};

#[test]
fn the_computing_thread_holds_the_gil_and_is_active_the_sleeping_one_neither() {
    for python in test_pythons("walker: GIL holder and active flags") {
        let label = python.label();
        let running = Fixture::start(&python, "deep_stack.py", &["20", "busy"]);
        running.wait_ready();
        let pid = running.pid() as u64;
        let mut target = Target::attach(pid as i32).expect("attach");
        let mut samples = Vec::new();
        // The sleeping thread writes the ready file just before it goes to
        // sleep and needs the GIL until it blocks in Condition.wait. A thread
        // waiting for the GIL also sleeps in the kernel, so wait until its
        // stack stays the same across samples 20 ms apart (four GIL switch
        // intervals) with Condition.wait innermost.
        let mut previous = None;
        let mut stable = 0;
        for _ in 0..1000 {
            target.sample_threads(&mut samples).expect("sample");
            let idle = samples
                .iter()
                .find(|s| s.native_id != pid)
                .expect("sleeping thread")
                .clone();
            // Condition.wait called by Event.wait: two `wait` frames (3.9
            // and 3.10 have no co_qualname to tell them apart).
            let waits = idle
                .frames
                .iter()
                .take(2)
                .filter(|f| target.code_object(f.code_address).expect("code").1.name == "wait")
                .count();
            let blocked = waits == 2 && !idle.active;
            stable = if blocked && previous.as_ref() == Some(&idle.frames) {
                stable + 1
            } else {
                0
            };
            previous = Some(idle.frames);
            if stable >= 3 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(stable >= 3, "{label}: the sleeping thread never settled");
        for round in 0..5 {
            {
                let _pause = target.pause().expect("pause");
                target.sample_threads(&mut samples).expect("sample");
            }
            let busy = samples
                .iter()
                .find(|s| s.native_id == pid)
                .expect("main thread");
            let idle = samples
                .iter()
                .find(|s| s.native_id != pid)
                .expect("sleeping thread");
            assert!(busy.is_main && !idle.is_main, "{label}: is_main");
            assert!(
                busy.holds_gil,
                "{label} round {round}: computing thread lacks the GIL"
            );
            assert!(
                busy.active,
                "{label} round {round}: computing thread not active"
            );
            assert!(!idle.holds_gil, "{label}: sleeping thread holds the GIL");
            assert!(!idle.active, "{label}: sleeping thread active");
            assert!(
                !busy.torn && !busy.truncated,
                "{label}: paused sample flagged"
            );
        }
    }
}
