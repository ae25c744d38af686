//! Every way attaching can fail gives one clear line and its own exit code.

use std::process::{Command, Stdio};

use pydeep_integration::{program, test_pythons, workspace_binary};

fn pydeep(args: &[&str]) -> (i32, String) {
    let out = Command::new(workspace_binary("pydeep"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run pydeep");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_pid_with_no_process_exits_3_and_says_so() {
    let mut gone = Command::new("true").spawn().unwrap();
    let pid = gone.id().to_string();
    gone.wait().unwrap();
    let (code, err) = pydeep(&["attach", &pid, "-d", "1s", "-o", "/dev/null"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("no process with pid"), "{err}");
}

#[test]
fn a_process_that_is_not_python_exits_5_and_says_so() {
    let mut sleeper = Command::new("sleep").arg("30").spawn().unwrap();
    let pid = sleeper.id().to_string();
    let (code, err) = pydeep(&["attach", &pid, "-d", "1s", "-o", "/dev/null"]);
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("not a Python process"), "{err}");
}

#[test]
fn an_unsupported_python_exits_6_and_names_its_version() {
    let home = std::env::var("HOME").unwrap();
    let old = std::fs::read_dir(format!("{home}/.pyenv/versions"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with("2.") || ["3.6.", "3.7.", "3.8."].iter().any(|v| name.starts_with(v))
        })
        .map(|p| p.join("bin/python"))
        .find(|p| p.exists());
    let Some(old) = old else {
        eprintln!("no Python older than 3.9 on this machine: unsupported-version case not run");
        return;
    };
    let mut child = Command::new(&old)
        .arg(program("idle_forever.py"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_ready(&mut child);
    let (code, err) = pydeep(&[
        "attach",
        &child.id().to_string(),
        "-d",
        "1s",
        "-o",
        "/dev/null",
    ]);
    child.kill().unwrap();
    child.wait().unwrap();
    eprintln!("{} -> {err}", old.display());
    assert_eq!(code, 6, "{err}");
    assert!(err.contains("does not support"), "{err}");
}

#[test]
fn ptrace_refused_exits_4_and_explains_how_to_grant_it() {
    // An unprivileged user may not read a root-owned process.
    let runuser = ["/usr/sbin/runuser", "/sbin/runuser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let (Some(runuser), true) = (runuser, nix_is_root()) else {
        eprintln!("not root or no runuser: permission case not run");
        return;
    };
    let python = &test_pythons("permission")[0];
    let mut child = Command::new(&python.path)
        .arg(program("idle_forever.py"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_ready(&mut child);
    // A copy any user can execute (the build tree may sit under /root).
    let dir = tempfile::tempdir().unwrap();
    let binary = dir.path().join("pydeep");
    std::fs::copy(workspace_binary("pydeep"), &binary).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new(runuser)
        .args(["-u", "nobody", "--"])
        .arg(&binary)
        .args([
            "attach",
            &child.id().to_string(),
            "-d",
            "1s",
            "-o",
            "/dev/null",
        ])
        .output()
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("CAP_SYS_PTRACE"), "{err}");
    assert!(err.contains("ptrace_scope"), "{err}");
}

#[test]
fn a_program_that_cannot_start_exits_10() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("never.pdr");
    let (code, err) = pydeep(&[
        "record",
        "-o",
        output.to_str().unwrap(),
        "--",
        "/nonexistent/python",
    ]);
    assert_eq!(code, 10, "{err}");
    assert!(err.contains("cannot start"), "{err}");
    // The output was created before the start was tried, and removed after.
    assert!(!output.exists(), "an empty recording was left");
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc_geteuid() == 0 }
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

fn wait_for_ready(child: &mut std::process::Child) {
    use std::io::BufRead;
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
}

#[test]
fn an_objects_root_address_that_holds_no_object_is_an_error_that_says_so() {
    for python in test_pythons("objects: a root address with no object") {
        let mut child = Command::new(&python.path)
            .arg(program("idle_forever.py"))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        wait_for_ready(&mut child);
        let pid = child.id().to_string();
        let (code, err) = pydeep(&["objects", &pid, "--root", "0xdeadbeef"]);
        let (good, _) = pydeep(&["objects", &pid, "--root", "module:__main__:time"]);
        child.kill().unwrap();
        child.wait().unwrap();
        let label = python.label();
        assert_ne!(code, 0, "{label}: {err}");
        assert!(
            err.contains("0xdeadbeef") && err.contains("no object"),
            "{label}: {err}"
        );
        assert_eq!(good, 0, "{label}: a named root still works");
    }
}
