//! Names a target controls (`co_qualname`, `co_filename`, thread names)
//! holding ESC, a bell, a line break, XML specials and a bidirectional
//! override are escaped in every text output: `dump`, `info`, and the
//! viewer's `top`, `collapsed`, `scopes` and flamegraph (which stays
//! well-formed XML, checked by the interpreter's own XML parser).

use std::process::{Command, Stdio};

use pydeep_integration::{test_pythons, workspace_binary, Fixture};

/// Runs a workspace binary; panics unless it succeeds; returns stdout.
fn run(binary: &str, args: &[&str]) -> String {
    let out = Command::new(workspace_binary(binary))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{binary} {args:?}: {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// No raw control character but line feed (and tab), no raw override.
fn assert_clean(what: &str, text: &str) {
    for c in text.chars() {
        assert!(
            !(c.is_control() && c != '\n' && c != '\t') && c != '\u{202e}',
            "{what}: raw {c:?} in:\n{text}"
        );
    }
}

#[test]
fn hostile_names_are_escaped_in_every_text_output() {
    for python in test_pythons("escaped names") {
        let label = python.label();
        let fixture = Fixture::start(&python, "evil_names.py", &[]);
        fixture.wait_ready();
        let pid = fixture.pid().to_string();
        let escaped = "evil\\x1b[31m\\x0a<&>\\x07\\u{202e}";

        let dump = run("pydeep", &["dump", &pid]);
        assert_clean(&format!("{label}: dump"), &dump);
        assert!(
            dump.contains(&format!("{escaped}thread")),
            "{label}:\n{dump}"
        );
        assert!(
            dump.contains(&format!("{escaped}file.py")),
            "{label}:\n{dump}"
        );

        let recording = fixture.dir().join("evil.pdr");
        let recording = recording.to_str().unwrap();
        run(
            "pydeep",
            &[
                "attach",
                &pid,
                "-q",
                "-d",
                "1500ms",
                "-r",
                "200",
                "--snapshot-every",
                "300ms",
                "-o",
                recording,
            ],
        );
        assert_clean(
            &format!("{label}: info"),
            &run("pydeep", &["info", recording]),
        );

        let top = run("pydeep-view", &["top", recording]);
        assert_clean(&format!("{label}: top"), &top);
        assert!(top.contains(escaped), "{label}:\n{top}");

        // One stack per line, each ending with its count.
        let collapsed = run("pydeep-view", &["collapsed", recording]);
        assert_clean(&format!("{label}: collapsed"), &collapsed);
        assert!(collapsed.contains(escaped), "{label}:\n{collapsed}");
        for line in collapsed.lines() {
            let count = line.rsplit(' ').next().unwrap();
            assert!(
                count.parse::<u64>().is_ok(),
                "{label}: broken line {line:?}"
            );
        }

        let scopes = run("pydeep-view", &["scopes", recording]);
        assert_clean(&format!("{label}: scopes"), &scopes);
        assert!(scopes.contains(escaped), "{label}:\n{scopes}");

        let svg = fixture.dir().join("evil.svg");
        run(
            "pydeep-view",
            &["flamegraph", recording, "-o", svg.to_str().unwrap()],
        );
        let text = std::fs::read_to_string(&svg).unwrap();
        assert_clean(&format!("{label}: flamegraph"), &text);
        let parsed = Command::new(&python.path)
            .args([
                "-c",
                "import sys, xml.dom.minidom as m; m.parse(sys.argv[1])",
            ])
            .arg(&svg)
            .output()
            .unwrap();
        assert!(
            parsed.status.success(),
            "{label}: the flamegraph is not well-formed XML: {}",
            String::from_utf8_lossy(&parsed.stderr)
        );
    }
}
