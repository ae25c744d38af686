//! Every command that prints ends quietly when its reader went away
//! (`pydeep info x.pdr | head -1`): exit status 0 (or death by SIGPIPE,
//! the shell's 141), and no panic message on standard error.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};

use pydeep_format::{proto, FrameKey, Writer, WriterOptions};
use pydeep_integration::workspace_binary;

fn python_312() -> proto::PythonVersion {
    proto::PythonVersion {
        major: 3,
        minor: 12,
        patch: 1,
        ..Default::default()
    }
}

/// A recording with enough code objects, stacks and samples that every
/// output has many lines.
fn write_recording(path: &Path) {
    let header = proto::Header {
        pid: 7,
        python_version: Some(python_312()),
        start_clock_ns: 1_000,
        sampling: Some(proto::SamplingConfig {
            rate_hz: 1000.0,
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut writer = Writer::create(path, true, header, WriterOptions::default()).unwrap();
    let name = writer.intern_string("MainThread");
    writer.define_thread(proto::ThreadDef {
        id: 1,
        name,
        is_main: true,
        ..Default::default()
    });
    let mut frames = Vec::new();
    for function in 0..200u32 {
        let code = writer.next_code_id();
        let name = writer.intern_string(&format!("function_{function}"));
        let filename = writer.intern_string("program.py");
        writer.define_code_object(proto::CodeObjectDef {
            id: code,
            name,
            qualname: name,
            filename,
            first_line: function * 10 + 1,
            // RESUME, LOAD_CONST, RETURN_VALUE in CPython 3.12's numbering.
            bytecode: vec![151, 0, 100, 0, 83, 0],
            python_version: Some(python_312()),
            ..Default::default()
        });
        frames.push(writer.intern_frame(FrameKey {
            code,
            instruction_offset: 2,
            line: function * 10 + 2,
            ..Default::default()
        }));
    }
    for sample in 0..2_000u64 {
        let depth = 1 + (sample as usize * 7) % frames.len();
        let stack = writer.intern_stack(&frames[..depth]);
        writer
            .sample(1_000 + sample * 1_000_000, 1, stack, 3)
            .unwrap();
    }
    writer.finish(proto::Footer::default()).unwrap();
}

/// Runs `binary args` with standard output a pipe whose read end is closed
/// before the command starts writing; returns (status, stderr).
fn run_with_closed_stdout(binary: &str, args: &[&str]) -> (std::process::ExitStatus, String) {
    let mut child = Command::new(workspace_binary(binary))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    drop(child.stdout.take());
    let output = child.wait_with_output().expect("wait");
    (
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn every_printing_command_ends_quietly_when_stdout_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("many.pdr");
    write_recording(&file);
    let file = file.to_str().unwrap();
    let commands: Vec<(&str, Vec<&str>)> = vec![
        ("pydeep", vec!["info", file]),
        ("pydeep", vec!["verify", file]),
        ("pydeep-view", vec!["collapsed", file]),
        ("pydeep-view", vec!["top", file]),
        ("pydeep-view", vec!["flamegraph", file]),
        ("pydeep-view", vec!["speedscope", file]),
        ("pydeep-view", vec!["chrome", file]),
        ("pydeep-view", vec!["pprof", file]),
        ("pydeep-view", vec!["bytecode", file]),
    ];
    for (binary, args) in commands {
        let (status, stderr) = run_with_closed_stdout(binary, &args);
        let quiet_exit = status.code() == Some(0) || status.signal() == Some(libc::SIGPIPE);
        assert!(
            quiet_exit,
            "{binary} {args:?}: {status:?}, stderr: {stderr}"
        );
        assert!(
            !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "{binary} {args:?} complained: {stderr}"
        );
    }
}
