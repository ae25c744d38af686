//! `pydeep verify` and `pydeep info` on files whose chunks are each intact
//! but do not belong together (issue #14 item 8): one recording's header
//! with another's body, chunks reordered, a chunk duplicated. Whole chunks
//! are moved, so every CRC still holds. `verify` exits 8 naming the
//! problem; the untouched files exit 0. (The library side, with every
//! case, is format/tests/splices.rs.)

use std::path::Path;
use std::process::Command;

use pydeep_format::{proto, FrameKey, Writer, WriterOptions};
use pydeep_integration::workspace_binary;

/// A recording of `pid` with a header chunk, four chunks of 5 samples
/// and the footer's chunk.
fn recording(pid: u32) -> Vec<u8> {
    let header = proto::Header {
        pid,
        argv: vec!["python3".into(), format!("app{pid}.py")],
        start_clock_ns: 1_000_000,
        ..Default::default()
    };
    let options = WriterOptions {
        max_samples_per_chunk: 5,
        ..WriterOptions::default()
    };
    let mut writer = Writer::new(Vec::new(), header, options).unwrap();
    let name = writer.intern_string("MainThread");
    writer.define_thread(proto::ThreadDef {
        id: 1,
        pid,
        name,
        is_main: true,
        ..Default::default()
    });
    let code = writer.next_code_id();
    let function = writer.intern_string("work");
    writer.define_code_object(proto::CodeObjectDef {
        id: code,
        name: function,
        qualname: function,
        ..Default::default()
    });
    let frame = writer.intern_frame(FrameKey {
        code,
        instruction_offset: 2,
        line: 1,
        ..Default::default()
    });
    let stack = writer.intern_stack(&[frame]);
    for i in 0..20 {
        writer
            .sample(2_000_000 + i * 1_000_000, 1, stack, 0)
            .unwrap();
    }
    writer.finish(proto::Footer::default()).unwrap()
}

/// The file header and the chunks (frames included) of `bytes`.
fn chunks(bytes: &[u8]) -> (Vec<u8>, Vec<Vec<u8>>) {
    let mut out = Vec::new();
    let mut at = 16;
    while at < bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        out.push(bytes[at..at + 16 + len].to_vec());
        at += 16 + len;
    }
    (bytes[..16].to_vec(), out)
}

fn pydeep(args: &[&str], file: &Path) -> (Option<i32>, String) {
    let output = Command::new(workspace_binary("pydeep"))
        .args(args)
        .arg(file)
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[test]
fn verify_refuses_files_spliced_reordered_or_duplicated_and_passes_the_originals() {
    let dir = tempfile::tempdir().unwrap();
    let a = recording(1111);
    let b = recording(2222);
    let (file_header, a_chunks) = chunks(&a);
    let (_, b_chunks) = chunks(&b);
    assert_eq!(a_chunks.len(), 6);
    let build = |order: &[(&Vec<Vec<u8>>, usize)]| {
        let mut out = file_header.clone();
        for (source, index) in order {
            out.extend_from_slice(&source[*index]);
        }
        out
    };
    let (a_, b_) = (&a_chunks, &b_chunks);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "A's header, B's body",
            build(&[(a_, 0), (b_, 1), (b_, 2), (b_, 3), (b_, 4), (b_, 5)]),
            "spliced from two recordings",
        ),
        (
            "chunks 2 and 1 swapped",
            build(&[(a_, 0), (a_, 2), (a_, 1), (a_, 3), (a_, 4), (a_, 5)]),
            "out of order",
        ),
        (
            "chunk 1 twice",
            build(&[
                (a_, 0),
                (a_, 1),
                (a_, 1),
                (a_, 2),
                (a_, 3),
                (a_, 4),
                (a_, 5),
            ]),
            "a duplicated chunk",
        ),
    ];
    for (what, bytes, expected) in cases {
        let path = dir.path().join("bad.pdr");
        std::fs::write(&path, &bytes).unwrap();
        let (code, report) = pydeep(&["verify"], &path);
        assert_eq!(code, Some(8), "{what}: {report}");
        assert!(
            report.contains("INVALID") && report.contains(expected),
            "{what}: {report}"
        );
        let (code, info) = pydeep(&["info"], &path);
        assert_eq!(code, Some(0), "{what}: {info}");
        assert!(info.contains(expected), "{what}: info says nothing: {info}");
        eprintln!("{what}: {}", report.lines().nth(1).unwrap_or_default());
    }
    for (name, bytes) in [("a.pdr", &a), ("b.pdr", &b)] {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let (code, report) = pydeep(&["verify"], &path);
        assert_eq!(code, Some(0), "{name}: {report}");
    }
}
