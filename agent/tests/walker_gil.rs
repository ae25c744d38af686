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
            // A free-threaded target has no GIL to hold.
            assert_eq!(
                busy.holds_gil, !python.free_threaded,
                "{label} round {round}: computing thread's GIL flag"
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

/// Four threads spinning in pure Python (`parallel_spin.py`). On a
/// free-threaded build (no GIL) no sample names a GIL holder and, the
/// machine permitting, several threads are running in the same sample
/// (their kernel state is R at once); on a GIL build at most one thread
/// holds the GIL in any sample. Either way each spinner's stack ends in its
/// own function. Paused samples: the thread states are those at the pause.
#[test]
fn threads_running_at_once_are_each_flagged_running_and_a_free_threaded_target_has_no_gil_holder() {
    for python in test_pythons("walker: parallel threads, GIL or none") {
        let label = python.label();
        let fixture = Fixture::start(&python, "parallel_spin.py", &[]);
        fixture.wait_ready();
        let mut target = Target::attach(fixture.pid()).expect("attach");
        assert_eq!(
            target.layout().version.free_threaded,
            python.free_threaded,
            "{label}: free-threaded flag of the attached target"
        );
        let mut samples = Vec::new();
        let mut most_running = 0;
        let mut spinners_seen = std::collections::BTreeSet::new();
        // Up to 400 paused samples; stop early once two spinners were seen
        // running together (free-threaded) or after 50 (GIL builds).
        for round in 0..400 {
            {
                let _pause = target.pause().expect("pause");
                target.sample_threads(&mut samples).expect("sample");
            }
            let holders = samples.iter().filter(|s| s.holds_gil).count();
            if python.free_threaded {
                assert_eq!(holders, 0, "{label} round {round}: a GIL holder");
            } else {
                assert!(holders <= 1, "{label} round {round}: {holders} GIL holders");
            }
            let mut running = 0;
            for sample in samples.iter().filter(|s| !s.is_main) {
                let Some(innermost) = sample.frames.first() else {
                    continue;
                };
                let name = target
                    .code_object(innermost.code_address)
                    .expect("code")
                    .1
                    .name
                    .clone();
                assert!(
                    name.starts_with("spin_"),
                    "{label} round {round}: spinner innermost frame {name}"
                );
                spinners_seen.insert(name);
                if sample.active {
                    running += 1;
                }
            }
            most_running = most_running.max(running);
            if round >= 50 && (!python.free_threaded || most_running >= 2) {
                break;
            }
        }
        assert_eq!(
            spinners_seen.len(),
            4,
            "{label}: spinners {spinners_seen:?}"
        );
        eprintln!("{label}: at most {most_running} spinners running in one sample");
        if python.free_threaded {
            assert!(
                most_running >= 2,
                "{label}: never two spinners running at once in 400 samples"
            );
        }
    }
}
