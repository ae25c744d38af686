//! Attaching to something that is not a CPython process fails with an
//! error that says what was wrong.

use pydeep::{AttachError, Target};

#[test]
fn attaching_to_a_pid_that_does_not_exist_reports_no_such_process() {
    // Above the kernel's pid_max (at most 2^22), so never a live process.
    let pid = 5_000_000;
    match Target::attach(pid) {
        Err(AttachError::NoSuchProcess { pid: p }) => assert_eq!(p, pid),
        Err(other) => panic!("expected NoSuchProcess, got {other}"),
        Ok(_) => panic!("attached to a process that cannot exist"),
    }
}

#[test]
fn attaching_to_a_program_that_is_not_python_reports_not_python() {
    let mut sleep = std::process::Command::new("sleep")
        .arg("100")
        .spawn()
        .expect("start sleep");
    let result = Target::attach(sleep.id() as i32);
    let _ = sleep.kill();
    let _ = sleep.wait();
    match result {
        Err(AttachError::NotPython { pid, exe }) => {
            assert_eq!(pid, sleep.id() as i32);
            assert!(exe.contains("sleep"), "exe {exe}");
        }
        Err(other) => panic!("expected NotPython, got {other}"),
        Ok(_) => panic!("attached to sleep as if it were Python"),
    }
}

#[test]
fn permission_advice_names_every_remedy() {
    let text = pydeep::target::PERMISSION_ADVICE;
    for remedy in [
        "CAP_SYS_PTRACE",
        "ptrace_scope",
        "--cap-add SYS_PTRACE",
        "sudo",
    ] {
        assert!(text.contains(remedy), "advice lacks {remedy}");
    }
}
