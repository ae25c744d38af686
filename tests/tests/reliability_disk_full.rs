//! The disk fills up mid-recording: `pydeep` stops with a message naming
//! the cause (ENOSPC) and the fix, exits with 9 (output error), and the
//! file stays readable up to the failure (`verify`: truncated, with the
//! samples before it). On every interpreter.
//!
//! The full disk is a 256 KiB tmpfs mounted for the test (we run as root),
//! filled to leave 32 KiB; where mounting is refused, a file size limit
//! (RLIMIT_FSIZE, set in the agent only) stands in and the error is EFBIG.
//! The target runs small code until the first samples are flushed, then
//! imports a module of 64 KiB of incompressible source, which the recorder
//! embeds: the next chunk cannot fit.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use pydeep_format::{Event, FormatError, Recording};
use pydeep_integration::waits::{wait_exit, wait_for_file, wait_for_samples};
use pydeep_integration::{program, test_pythons, workspace_binary, Python};

/// Room left for the recording.
const FREE: usize = 32 << 10;

/// A full file system for one test: a small tmpfs, unmounted on drop, or
/// (if mount is refused) a file size limit for the agent.
enum Full {
    Tmpfs(PathBuf),
    FileSizeLimit(PathBuf),
}

impl Full {
    fn new(dir: &Path, try_mount: bool) -> Full {
        let mount_point = dir.join("small");
        std::fs::create_dir(&mount_point).unwrap();
        let mounted = try_mount
            && Command::new("mount")
                .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
                .arg(&mount_point)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
        if !mounted {
            return Full::FileSizeLimit(mount_point);
        }
        // Fill it: a spare file of FREE bytes, then filler until ENOSPC,
        // then remove the spare.
        let spare = mount_point.join("spare");
        std::fs::write(&spare, vec![1u8; FREE]).unwrap();
        let mut filler = std::fs::File::create(mount_point.join("filler")).unwrap();
        let block = vec![2u8; 4096];
        while filler.write_all(&block).is_ok() {}
        drop(filler);
        std::fs::remove_file(&spare).unwrap();
        Full::Tmpfs(mount_point)
    }

    fn dir(&self) -> &Path {
        match self {
            Full::Tmpfs(path) | Full::FileSizeLimit(path) => path,
        }
    }

    fn method(&self) -> &'static str {
        match self {
            Full::Tmpfs(_) => "256 KiB tmpfs with 32 KiB free",
            Full::FileSizeLimit(_) => "RLIMIT_FSIZE of 32 KiB",
        }
    }

    /// The error the agent must name, and a word of the fix it must give.
    fn cause(&self) -> (&'static str, &'static str) {
        match self {
            Full::Tmpfs(_) => ("ENOSPC", "-o"),
            Full::FileSizeLimit(_) => ("EFBIG", "ulimit -f"),
        }
    }

    fn limit(&self, command: &mut Command) {
        if let Full::FileSizeLimit(_) = self {
            // SAFETY: setrlimit is async-signal-safe; nothing else runs
            // between fork and exec here.
            unsafe {
                command.pre_exec(|| {
                    let limit = libc::rlimit {
                        rlim_cur: FREE as libc::rlim_t,
                        rlim_max: FREE as libc::rlim_t,
                    };
                    if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
    }
}

impl Drop for Full {
    fn drop(&mut self) {
        if let Full::Tmpfs(path) = self {
            let _ = Command::new("umount").arg(path).status();
        }
    }
}

fn fill_up(python: &Python, try_mount: bool) {
    let dir = tempfile::tempdir().unwrap();
    let full = Full::new(dir.path(), try_mount);
    let label = format!("{} ({})", python.label(), full.method());
    let output = full.dir().join("full.pdr");
    let (ready, go) = (dir.path().join("ready"), dir.path().join("go"));
    let mut target = Command::new(&python.path)
        .arg(program("grows_source.py"))
        .args([&ready, &go])
        .arg(dir.path())
        .spawn()
        .unwrap();
    wait_for_file(&ready, &mut target, &label);
    let mut command = Command::new(workspace_binary("pydeep"));
    command
        .args(["attach", &target.id().to_string(), "-q", "-r", "200", "-o"])
        .arg(&output)
        .stderr(Stdio::piped());
    full.limit(&mut command);
    let mut agent = command.spawn().unwrap();
    wait_for_file(&output, &mut agent, &label);
    wait_for_samples(&output, &mut agent, &label);
    std::fs::write(&go, "").unwrap();
    let status = wait_exit(&mut agent, &label);
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut agent.stderr.take().unwrap(), &mut stderr).unwrap();
    let _ = target.kill();
    let _ = target.wait();
    eprintln!("{label}: pydeep said: {}", stderr.trim());
    assert_eq!(status.code(), Some(9), "{label}: {stderr}");
    let (cause, fix) = full.cause();
    assert!(stderr.contains(cause), "{label}: {stderr}");
    assert!(stderr.contains(fix), "{label}: no fix named: {stderr}");
    assert!(stderr.contains("pydeep verify"), "{label}: {stderr}");

    let verify = Command::new(workspace_binary("pydeep"))
        .arg("verify")
        .arg(&output)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&verify.stdout);
    eprintln!("{label}: {report}");
    assert_eq!(verify.status.code(), Some(8), "{label}: {report}");
    assert!(report.contains("readable"), "{label}: {report}");

    // Everything before the failure reads; the end is truncation, never
    // corruption.
    let mut recording = Recording::open(&output).unwrap();
    let mut samples = 0u64;
    loop {
        match recording.next_event() {
            Ok(Some(Event::Sample(_))) => samples += 1,
            Ok(Some(_)) => {}
            Ok(None) | Err(FormatError::Truncated { .. }) => break,
            Err(other) => panic!("{label}: {other}"),
        }
    }
    assert!(samples > 0, "{label}: no sample readable");
    eprintln!("{label}: {samples} samples readable up to the failure");
}

#[test]
fn a_full_disk_stops_the_recording_with_a_clear_error_and_a_readable_file() {
    for python in test_pythons("disk full") {
        fill_up(&python, true);
    }
}

#[test]
fn a_file_size_limit_stops_the_recording_with_a_clear_error_and_a_readable_file() {
    // The stand-in for a full disk where mount is refused, tested on its own
    // so it is known to work wherever it is needed.
    for python in test_pythons("file size limit") {
        fill_up(&python, false);
    }
}

#[test]
fn a_disk_already_full_at_creation_says_so_and_leaves_no_empty_file() {
    for python in test_pythons("disk full at creation") {
        let dir = tempfile::tempdir().unwrap();
        let full = Full::new(dir.path(), true);
        let Full::Tmpfs(mount_point) = &full else {
            eprintln!("mount refused: the full-at-creation case is not run");
            return;
        };
        // Take the last 32 KiB too.
        let mut filler = std::fs::File::create(mount_point.join("last")).unwrap();
        while filler.write_all(&[3u8; 512]).is_ok() {}
        drop(filler);
        let label = python.label();
        let mut target = Command::new(&python.path)
            .arg(program("idle_forever.py"))
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let output = mount_point.join("x.pdr");
        // Retried while the interpreter starts (exit 5 then), bounded.
        let mut last = None;
        for _ in 0..100 {
            let out = Command::new(workspace_binary("pydeep"))
                .args(["attach", &target.id().to_string(), "-q", "-d", "1s", "-o"])
                .arg(&output)
                .output()
                .unwrap();
            if out.status.code() != Some(5) {
                last = Some(out);
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = target.kill();
        let _ = target.wait();
        let out = last.expect("the target never became attachable");
        let stderr = String::from_utf8_lossy(&out.stderr);
        eprintln!("{label}: pydeep said: {}", stderr.trim());
        assert_eq!(out.status.code(), Some(9), "{label}: {stderr}");
        assert!(
            stderr.contains("cannot create") && stderr.contains("ENOSPC") && stderr.contains("-o"),
            "{label}: {stderr}"
        );
        assert!(!output.exists(), "{label}: an empty recording was left");
    }
}
