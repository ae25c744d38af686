//! Values are shown or recorded only when asked, and `--redact REGEX`
//! (on by default: password, secret, token, api_key, ...) masks the values of
//! matching names in `dump`, `objects`, recorded snapshots and recorded
//! command lines, while plain values stay. `--no-redact` shows everything,
//! which proves the secrets were there to hide. On every interpreter.

use std::path::Path;
use std::process::Command;

use pydeep_format::proto::record::Kind;
use pydeep_format::Reader;
use pydeep_integration::{test_pythons, workspace_binary, Fixture, Python};

/// The secret values tests/programs/secrets.py holds.
const SECRETS: &[&str] = &[
    "tok-global-s3cr3t",
    "hunter2-in-dict",
    "sk-in-attribute",
    "hunter2-local",
    "cli-s3cr3t",
];
/// The plain values beside them.
const PLAIN: &[&str] = &[
    "visible-global",
    "visible-user",
    "visible-owner",
    "visible-local",
];

fn pydeep(args: &[&str], label: &str) -> String {
    let output = Command::new(workspace_binary("pydeep"))
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{label}: pydeep {args:?}: {stderr}"
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn hides_secrets(text: &str, what: &str) {
    for secret in SECRETS {
        assert!(!text.contains(secret), "{what} shows {secret}:\n{text}");
    }
    assert!(
        text.contains("<redacted>"),
        "{what}: nothing redacted:\n{text}"
    );
}

/// Every record of a recording as text (Debug), to search for values;
/// embedded source files and code objects' constants are left out: they
/// are the program's own text (the literals are in its source; see
/// `--no-source` in notes/security.md), not values read at run time.
fn recording_text(path: &Path) -> String {
    let mut reader = Reader::open(path).unwrap();
    let mut text = String::new();
    while let Some(chunk) = reader.next_chunk().unwrap() {
        for record in chunk.records {
            if matches!(
                record.kind,
                Some(Kind::SourceFile(_)) | Some(Kind::CodeObject(_))
            ) {
                continue;
            }
            text.push_str(&format!("{record:?}\n"));
        }
    }
    text
}

fn redact(python: &Python) {
    let label = python.label();
    let fixture = Fixture::start(python, "secrets.py", &["--token", "cli-s3cr3t"]);
    fixture.wait_ready();
    let pid = fixture.pid().to_string();

    // dump: masked by default, plain values kept; all shown with --no-redact.
    let dump = pydeep(&["dump", &pid, "--locals", "--globals"], &label);
    hides_secrets(&dump, &format!("{label}: dump"));
    for plain in PLAIN {
        assert!(dump.contains(plain), "{label}: dump lacks {plain}:\n{dump}");
    }
    for name in ["password", "API_TOKEN", "db_password", "secret_key"] {
        assert!(dump.contains(name), "{label}: dump lacks the name {name}");
    }
    let open = pydeep(
        &["dump", &pid, "--locals", "--globals", "--no-redact"],
        &label,
    );
    for secret in &SECRETS[..4] {
        assert!(open.contains(secret), "{label}: --no-redact hides {secret}");
    }
    // A pattern of one's own replaces the default.
    let custom = pydeep(&["dump", &pid, "--locals", "--redact", "greeting"], &label);
    assert!(
        custom.contains("hunter2-local") && !custom.contains("visible-local"),
        "{label}: {custom}"
    );
    let json = pydeep(&["dump", &pid, "--locals", "--globals", "--json"], &label);
    hides_secrets(&json, &format!("{label}: dump --json"));

    // objects: a value under a secret key, and a root named by a secret name.
    for root in [
        "module:__main__:config",
        "module:__main__:account",
        "module:__main__:API_TOKEN",
    ] {
        let graph = pydeep(
            &["objects", &pid, "--root", root, "--format", "json"],
            &label,
        );
        hides_secrets(&graph, &format!("{label}: objects {root}"));
    }
    let graph = pydeep(
        &[
            "objects",
            &pid,
            "--root",
            "module:__main__:config",
            "--format",
            "json",
        ],
        &label,
    );
    assert!(graph.contains("visible-user"), "{label}: {graph}");

    // Recordings: without --snapshot-locals no value at all; with it,
    // values but not the secrets; the command line's --token masked.
    let dir = tempfile::tempdir().unwrap();
    // Records one second of snapshots every 200 ms into NAME, with `extra`
    // options; returns the recording as text and its path.
    let record = |name: &str, extra: &[&str]| {
        let path = dir.path().join(name);
        let mut args = vec!["attach", pid.as_str(), "-q", "--idle", "-d", "1s"];
        args.extend(["--snapshot-every", "200ms"]);
        args.extend(extra);
        args.extend(["-o", path.to_str().unwrap()]);
        pydeep(&args, &label);
        (recording_text(&path), path)
    };
    let (text, bare) = record("bare.pdr", &[]);
    let bare_s = bare.to_str().unwrap();
    assert!(text.contains("Snapshot"), "{label}: no snapshot recorded");
    for value in SECRETS[..4].iter().chain(PLAIN) {
        assert!(
            !text.contains(value),
            "{label}: {value} recorded without --snapshot-locals"
        );
    }
    assert!(
        !text.contains("cli-s3cr3t"),
        "{label}: the command line's token recorded"
    );
    let info = pydeep(&["info", bare_s], &label);
    assert!(info.contains("--token <redacted>"), "{label}: {info}");

    let (text, _) = record("values.pdr", &["--snapshot-locals"]);
    hides_secrets(&text, &format!("{label}: recording with --snapshot-locals"));
    assert!(
        text.contains("visible-local"),
        "{label}: plain values not recorded"
    );

    let (text, _) = record("open.pdr", &["--snapshot-locals", "--no-redact"]);
    assert!(
        text.contains("hunter2-local"),
        "{label}: --no-redact did not record the local"
    );
}

#[test]
fn values_are_recorded_only_when_asked_and_secret_names_are_redacted() {
    for python in test_pythons("redaction") {
        redact(&python);
    }
}
