//! A hostile target (tests/programs/hostile_memory.py) corrupts its own
//! memory through ctypes: a code object's name points to garbage, a frame
//! chain loops on itself, a list claims 2**60 items, a str claims a length
//! of 2**40, a tuple 2**40 items and an int 2**40 digits. Every agent command that reads it — `attach`, `dump --locals
//! --globals`, `objects`, `heap` — finishes (each run is bounded: a hang
//! fails), reports the bad objects, keeps going with the rest, stays under
//! a memory bound measured as its peak RSS, and leaves the target running.
//! Sizes that no memory of the target could hold are flagged as
//! implausible, never shown as sizes (issue #14 item 6).
//! On every interpreter.

use std::process::Command;

use pydeep_integration::recording::read;
use pydeep_integration::waits::{run_measured, Finished};
use pydeep_integration::{test_pythons, workspace_binary, Fixture, Python};

/// The most memory (peak RSS) any command may use against the hostile
/// target. A healthy run takes about 10 MiB; reading 2**60 list items or a
/// 1 TiB string would take all the machine has.
const MEMORY_BOUND_KIB: u64 = 64 << 10;

/// What hostile_memory.py corrupted, from its ready file.
struct Facts {
    huge: u64,
    wild: u64,
    vast: u64,
}

fn pydeep(args: &[&str], label: &str) -> Finished {
    let what = format!("{label}: pydeep {}", args.join(" "));
    let finished = run_measured(Command::new(workspace_binary("pydeep")).args(args), &what);
    eprintln!(
        "{what}: exit {:?}, peak RSS {} KiB, {:.2} s",
        finished.code,
        finished.max_rss_kib,
        finished.elapsed.as_secs_f64()
    );
    assert!(
        finished.max_rss_kib < MEMORY_BOUND_KIB,
        "{what}: peak RSS {} KiB over the bound {MEMORY_BOUND_KIB} KiB",
        finished.max_rss_kib
    );
    assert_eq!(finished.code, Some(0), "{what}: {}", finished.stderr);
    finished
}

/// The garbage address hostile_memory.py writes into co_name.
const GARBAGE_NAME: &str = "<unreadable str at 0xdead00beef0000>";

fn hostile(python: &Python) {
    let label = python.label();
    // The fixture ends at once if it could not make a corruption (its
    // stderr says which): that fails here, not after a 60 s wait.
    let mut fixture = Fixture::start(python, "hostile_memory.py", &[]);
    let facts = fixture.wait_truth(|_, _| true);
    let facts = Facts {
        huge: facts["huge"].as_u64().unwrap(),
        wild: facts["wild"].as_u64().unwrap(),
        vast: facts["vast"].as_u64().unwrap(),
    };
    let pid = fixture.pid().to_string();
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("hostile.pdr");

    // A recording: complete, the frame with the garbage name recorded as
    // such, the looped thread recorded up to the loop.
    let out = output.to_str().unwrap();
    pydeep(
        &[
            "attach",
            &pid,
            "--blocking",
            "--idle",
            "-q",
            "-r",
            "200",
            "-d",
            "1s",
            "-o",
            out,
        ],
        &label,
    );
    let verify = pydeep(&["verify", out], &label);
    assert!(verify.stdout.contains("OK"), "{label}: {}", verify.stdout);
    let recorded = read(&output);
    assert!(
        recorded.samples_in(GARBAGE_NAME) > 0,
        "{label}: no sample names the garbage co_name: {:?}",
        recorded.stacks
    );
    assert!(recorded.samples_in("looped_inner") > 0, "{label}");
    // The default and the non-blocking sampler meet the same target: the
    // looped chain did not move while read, so it is the target's own,
    // shown up to the loop (cut short), not counted torn (issue #14, 6).
    for (mode, name) in [
        (None, "hostile2.pdr"),
        (Some("--nonblocking"), "hostile3.pdr"),
    ] {
        let path = dir.path().join(name);
        let out = path.to_str().unwrap();
        let mut args = vec![
            "attach", &pid, "--idle", "-r", "1000", "-d", "1s", "-o", out,
        ];
        args.extend(mode);
        let summary = pydeep(&args, &label).stderr;
        let number_after = |after: &str| -> Option<u64> {
            let at = summary.find(after)? + after.len();
            summary[at..]
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        };
        let samples: u64 = summary
            .lines()
            .find(|l| l.contains(" samples in "))
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("{label}: no sample count in {summary}"));
        let torn = number_after("torn samples ")
            .unwrap_or_else(|| panic!("{label}: no torn count in {summary}"));
        // Before, every tick of the looped thread was torn.
        assert!(
            torn * 10 <= samples,
            "{label} {mode:?}: {torn} torn of {samples} samples: {summary}"
        );
        assert!(pydeep(&["verify", out], &label).stdout.contains("OK"));
        let recorded = read(&path);
        assert!(
            recorded.samples_in("looped_inner") > 0,
            "{label} {mode:?}: the looped thread vanished: {:?}",
            recorded.stacks
        );
    }

    // dump: the bad objects are named as unreadable, the loop is reported,
    // everything else is shown.
    let dump = pydeep(&["dump", &pid, "--locals", "--globals"], &label);
    let text = &dump.stdout;
    for expected in [
        GARBAGE_NAME.to_string(),
        format!("huge: list = <unreadable {:#x}>", facts.huge),
        format!("wild: str = <unreadable {:#x}>", facts.wild),
        "looped_inner".to_string(),
        "its stack was cut".to_string(),
        "victim_name: function = <function victim_name>".to_string(),
        format!("vast: tuple = <unreadable {:#x}>", facts.vast),
        "big: int = <int of implausible (claims 1099511627776 digits)>".to_string(),
    ] {
        assert!(
            text.contains(&expected),
            "{label}: dump lacks {expected:?}:\n{text}"
        );
    }

    // objects: the corrupt root is a node marked unreadable, not a hang or
    // an allocation of 2**60 items.
    for (root, address) in [("huge", facts.huge), ("wild", facts.wild)] {
        let graph = pydeep(
            &[
                "objects",
                &pid,
                "--root",
                &format!("module:__main__:{root}"),
                "--format",
                "json",
            ],
            &label,
        );
        let graph: serde_json::Value = serde_json::from_str(&graph.stdout).unwrap();
        let node = &graph["nodes"][0];
        assert_eq!(node["address"].as_u64(), Some(address), "{label}: {graph}");
        assert!(
            node["repr"]
                .as_str()
                .unwrap_or("")
                .starts_with("<unreadable"),
            "{label}: {root}: {node}"
        );
    }

    // The tuple's size is a claim no memory can hold: flagged, with what
    // it claimed, never given as its size.
    let graph = pydeep(
        &[
            "objects",
            &pid,
            "--root",
            "module:__main__:vast",
            "--format",
            "json",
        ],
        &label,
    );
    let graph: serde_json::Value = serde_json::from_str(&graph.stdout).unwrap();
    let node = &graph["nodes"][0];
    assert_eq!(
        node["address"].as_u64(),
        Some(facts.vast),
        "{label}: {graph}"
    );
    assert!(node["size"].is_null(), "{label}: {node}");
    assert!(
        node["implausible_size"].as_u64().unwrap_or(0) > 1 << 43,
        "{label}: {node}"
    );
    let dot = pydeep(&["objects", &pid, "--root", "module:__main__:vast"], &label);
    assert!(
        dot.stdout.contains("size implausible (claims "),
        "{label}: {}",
        dot.stdout
    );

    // heap: the GC walk counts the list among the lists, and the tuple
    // among the tuples, its claimed size left out and flagged.
    let heap = pydeep(&["heap", &pid, "--json", "--top", "0"], &label);
    let heap: serde_json::Value = serde_json::from_str(heap.stdout.trim()).unwrap();
    assert!(
        heap.to_string().contains("\"list\""),
        "{label}: no list counted: {heap}"
    );
    let tuples = heap["types"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "tuple")
        .unwrap_or_else(|| panic!("{label}: no tuple counted: {heap}"));
    assert_eq!(tuples["implausible"].as_u64(), Some(1), "{label}: {tuples}");
    assert!(
        tuples["bytes"].as_u64().unwrap() < 1 << 40,
        "{label}: a claimed size was added up: {tuples}"
    );
    let text = pydeep(&["heap", &pid, "--top", "0"], &label).stdout;
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("tuple "))
        .unwrap_or_else(|| panic!("{label}: no tuple line:\n{text}"));
    assert!(line.contains("+ 1 of implausible size"), "{label}: {line}");

    // The target was read, never hurt.
    assert!(
        fixture.child.try_wait().unwrap().is_none(),
        "{label}: the hostile target died"
    );
}

#[test]
fn a_target_that_corrupts_its_own_memory_is_reported_never_followed() {
    for python in test_pythons("hostile target") {
        hostile(&python);
    }
}
