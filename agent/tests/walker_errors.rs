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
        Err(AttachError::NotPython { pid, exe, .. }) => {
            assert_eq!(pid, sleep.id() as i32);
            assert!(exe.contains("sleep"), "exe {exe}");
        }
        Err(other) => panic!("expected NotPython, got {other}"),
        Ok(_) => panic!("attached to sleep as if it were Python"),
    }
}

#[test]
fn permission_advice_names_every_remedy() {
    let text = pydeep::reading::target::PERMISSION_ADVICE;
    for remedy in [
        "CAP_SYS_PTRACE",
        "ptrace_scope",
        "--cap-add SYS_PTRACE",
        "sudo",
    ] {
        assert!(text.contains(remedy), "advice lacks {remedy}");
    }
}

#[test]
fn attaching_to_a_python_older_than_3_9_names_the_version() {
    let Some(home) = std::env::var_os("HOME") else {
        return;
    };
    let old: Vec<_> = ["3.8", "3.7", "3.6"]
        .iter()
        .filter_map(|minor| {
            let dir = std::path::Path::new(&home).join(".pyenv/versions");
            std::fs::read_dir(&dir).ok()?.flatten().find_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let exe = e.path().join("bin/python");
                (name.starts_with(&format!("{minor}.")) && exe.exists()).then_some((name, exe))
            })
        })
        .collect();
    eprintln!("old interpreters: {old:?}");
    for (version, exe) in old {
        let mut child = std::process::Command::new(&exe)
            .args([
                "-c",
                "import time; print('up', flush=True); time.sleep(100)",
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start old python");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
            &mut line,
        )
        .expect("wait for startup");
        let result = Target::attach(child.id() as i32);
        let _ = child.kill();
        let _ = child.wait();
        match result {
            Err(AttachError::UnsupportedVersion { version: found, .. }) => {
                assert!(found.starts_with(&version), "{found} vs {version}");
            }
            Err(other) => panic!("{version}: expected UnsupportedVersion, got {other}"),
            Ok(_) => panic!("{version}: attached to an unsupported Python"),
        }
    }
}
