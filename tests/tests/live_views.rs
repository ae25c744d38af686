//! The live commands and the viewer draw a view with one renderer: for one
//! still fixture (tests/programs/live_views.py, blocked in pause(2)), what
//! `pydeep dump`, `objects` and `heap` print for the live process equals
//! what `pydeep-view scopes`, `objects` and `heap` print from a
//! recording's snapshot of the same state: the same dump text and JSON,
//! the same DOT and graph JSON, the same heap table and JSON; on every
//! interpreter. The heap rows of the two classes the fixture keeps in
//! known numbers are checked against its own view (gc.get_objects()
//! counts, sys.getsizeof per instance), in both.

use std::path::Path;

use pydeep_integration::blocking::{process_in, PAUSE};
use pydeep_integration::run::{json_lines, succeeds};
use pydeep_integration::{test_pythons, Fixture};
use serde_json::Value;

/// The keys of a JSON object (and of the objects it holds), sorted.
fn keys_of(value: &Value) -> Vec<String> {
    let mut keys = Vec::new();
    if let Value::Object(map) = value {
        for (key, inner) in map {
            keys.push(key.clone());
            keys.extend(keys_of(inner).into_iter().map(|k| format!("{key}.{k}")));
        }
    }
    keys.sort();
    keys
}

/// Text output without its first line (the title, which names the
/// snapshot's time and pause: those differ between two reads).
fn after_title(text: &[u8]) -> String {
    let text = String::from_utf8_lossy(text);
    text.split_once('\n')
        .map_or("", |(_, rest)| rest)
        .to_string()
}

/// A scopes document without what differs between two reads of the same
/// state: its number, times and pause, and the ids a recording interns
/// (threads, stacks, frames) in the order it met them.
fn without_ids(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(key, value)| {
                    let volatile = matches!(
                        key.as_str(),
                        "index" | "time" | "time_ns" | "pause_seconds" | "thread" | "frame"
                    );
                    // A thread's stack id; a task's stack is a list of frames.
                    let stack_id = key.as_str() == "stack" && value.is_u64();
                    !(volatile || stack_id)
                })
                .map(|(key, value)| (key.clone(), without_ids(value)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_ids).collect()),
        other => other.clone(),
    }
}

fn record_snapshots(pid: &str, recording: &Path) {
    succeeds(
        "pydeep",
        [
            "attach",
            pid,
            "-q",
            "--idle",
            "-d",
            "600ms",
            "--snapshot-every",
            "200ms",
            "--snapshot-locals",
            "--snapshot-globals",
            "--snapshot-async",
            "--heap-every",
            "200ms",
            "-o",
            recording.to_str().unwrap(),
        ],
    );
}

#[test]
fn live_dump_objects_and_heap_print_what_the_viewer_renders_from_a_snapshot_of_the_same_state() {
    for python in test_pythons("live views") {
        let label = python.label();
        let (fixture, truth) =
            Fixture::start_with_truth(&python, "live_views.py", &[], |pid, _| {
                process_in(pid, PAUSE)
            });
        let pid = fixture.pid().to_string();
        let root = format!("0x{:x}", truth["root"].as_u64().unwrap());
        let recording = fixture.dir().join("still.pdr");
        record_snapshots(&pid, &recording);
        let file = recording.to_str().unwrap();

        // dump: the same text and JSON as the recorded snapshot's scopes.
        let live_args = ["dump", &pid, "--locals", "--globals", "--async"];
        let view_args = ["scopes", file, "--index", "0", "--async"];
        let live_text = succeeds("pydeep", live_args);
        let view_text = succeeds("pydeep-view", view_args);
        assert!(
            String::from_utf8_lossy(&live_text).starts_with(&format!("Process {pid}: CPython ")),
            "{label}: {}",
            String::from_utf8_lossy(&live_text)
        );
        let text = after_title(&live_text);
        for expected in [
            "\nThread ",
            // Named where the interpreter imported threading at start-up.
            " (idle, main)\n    hold (",
            "root [arg]: tuple = ({'a': Plain(name='node a', peer=<Plain>), ",
            "        globals:\n",
            "Generators and coroutines (",
            "Asyncio tasks (",
        ] {
            assert!(
                text.contains(expected),
                "{label}: dump lacks {expected:?}:\n{text}"
            );
        }
        assert_eq!(text, after_title(&view_text), "{label}: dump text");
        let live = json_lines(&succeeds("pydeep", live_args.iter().chain(&["--json"])));
        let view = json_lines(&succeeds(
            "pydeep-view",
            view_args.iter().chain(&["--json"]),
        ));
        assert_eq!(live.len(), 1, "{label}: one dump");
        let hold = live[0]["threads"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|t| t["frames"].as_array().unwrap())
            .find(|f| f["qualname"] == "hold")
            .unwrap_or_else(|| panic!("{label}: no hold frame: {:#}", live[0]));
        assert_eq!(
            hold["locals"][0]["value"]["address"], truth["root"],
            "{label}: root"
        );
        assert_eq!(
            without_ids(&live[0]),
            without_ids(&view[0]),
            "{label}: dump JSON"
        );

        // objects: the same DOT text, the same graph JSON.
        let live_args = ["objects", &pid, "--root", &root, "--depth", "1"];
        let view_args = ["objects", file, "--index", "0", "--root", &root];
        let live_dot = String::from_utf8(succeeds("pydeep", live_args)).unwrap();
        let view_dot = String::from_utf8(succeeds("pydeep-view", view_args)).unwrap();
        assert!(live_dot.contains(" -> "), "{label}: {live_dot}");
        assert_eq!(live_dot, view_dot, "{label}: objects DOT");
        let live = json_lines(&succeeds("pydeep", live_args.iter().chain(&["--json"])));
        let view = json_lines(&succeeds(
            "pydeep-view",
            view_args.iter().chain(&["--json"]),
        ));
        assert_eq!(live.len(), 1, "{label}: one graph");
        assert_eq!(
            live[0]["roots"],
            serde_json::json!([truth["root"]]),
            "{label}: objects root"
        );
        let nodes = live[0]["nodes"].as_array().unwrap();
        // The tuple, its dict and its list: the depth-1 graph of root.
        assert_eq!(nodes.len(), 3, "{label}: {:#}", live[0]);
        assert_eq!(nodes[0]["type"], "tuple", "{label}");
        assert_eq!(
            without_ids(&live[0]),
            without_ids(&view[0]),
            "{label}: objects JSON"
        );
        // `--format json` is `--json`.
        let formatted = json_lines(&succeeds(
            "pydeep",
            live_args.iter().chain(&["--format", "json"]),
        ));
        assert_eq!(
            without_ids(&formatted[0]),
            without_ids(&live[0]),
            "{label}: --format json"
        );

        // heap: the same table, the same JSON.
        let live_text = succeeds("pydeep", ["heap", &pid, "--top", "0"]);
        let view_text = succeeds("pydeep-view", ["heap", file, "--index", "0", "--top", "0"]);
        assert_eq!(
            after_title(&live_text),
            after_title(&view_text),
            "{label}: heap text"
        );
        let live = json_lines(&succeeds("pydeep", ["heap", &pid, "--json", "--top", "0"]));
        let view = json_lines(&succeeds(
            "pydeep-view",
            ["heap", file, "--index", "0", "--json", "--top", "0"],
        ));
        assert_eq!(live.len(), 1, "{label}: one count");
        assert_eq!(
            without_ids(&live[0]),
            without_ids(&view[0]),
            "{label}: heap JSON"
        );
        // The kept classes, exactly as the fixture sees them.
        for (name, kept) in truth["kept"].as_object().unwrap() {
            let count = kept["count"].as_u64().unwrap();
            let expected = serde_json::json!({
                "name": name,
                "count": count,
                "bytes": count * kept["size"].as_u64().unwrap(),
            });
            for (what, heap) in [("pydeep heap", &live[0]), ("pydeep-view heap", &view[0])] {
                let row = heap["types"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|t| t["name"] == name.as_str());
                assert_eq!(row, Some(&expected), "{label}: {what}: {name}");
            }
            let line = String::from_utf8_lossy(&live_text)
                .lines()
                .find(|l| l.trim_start().starts_with(&format!("{name} ")))
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "));
            assert_eq!(
                line,
                Some(format!("{name} {count} {} bytes", expected["bytes"])),
                "{label}: heap text row"
            );
        }
        assert_eq!(
            truth["kept"]["LiveSlotted"]["count"], 1237,
            "{label}: the fixture kept what it says"
        );

        // heap growth: none in a still state, live (between counts, and
        // since a saved count) as in the recording, in one schema.
        let steps = |lines: &[Value]| -> Vec<(Value, Value, Value)> {
            lines
                .iter()
                .map(|l| {
                    (
                        l["from"]["index"].clone(),
                        l["to"]["index"].clone(),
                        l["types"].clone(),
                    )
                })
                .collect()
        };
        let none = serde_json::json!([]);
        let view = json_lines(&succeeds(
            "pydeep-view",
            ["heap", file, "--growth", "--json", "--top", "0"],
        ));
        assert!(!view.is_empty(), "{label}: the recording holds heap counts");
        let step = |from: usize| (from.into(), (from + 1).into(), none.clone());
        assert_eq!(
            steps(&view),
            (0..view.len()).map(step).collect::<Vec<_>>(),
            "{label}: recorded growth"
        );
        let live = json_lines(&succeeds(
            "pydeep",
            [
                "heap",
                &pid,
                "--interval",
                "50ms",
                "--count",
                "3",
                "--growth",
                "--json",
            ],
        ));
        assert_eq!(steps(&live), vec![step(0), step(1)], "{label}: live growth");
        assert_eq!(
            keys_of(&live[0]),
            keys_of(&view[0]),
            "{label}: growth JSON keys"
        );
        let saved = fixture.dir().join("saved-count.json");
        std::fs::write(
            &saved,
            succeeds("pydeep", ["heap", &pid, "--json", "--top", "0"]),
        )
        .unwrap();
        let since = json_lines(&succeeds(
            "pydeep",
            ["heap", &pid, "--since", saved.to_str().unwrap(), "--json"],
        ));
        assert_eq!(steps(&since), vec![step(0)], "{label}: growth since");
    }
}
