//! Snapshots inside recordings: `pydeep record --snapshot-every
//! --snapshot-locals --heap-every` on a program that walks through phases
//! of known state (tests/programs/snapshot_recording.py), checked through
//! `pydeep-view scopes`, `heap`, `heap --growth` and `objects` against the
//! truth the program measured in-process, on every interpreter found.
//!
//! The test advances the program to its next phase only once the
//! recording (read while it is written: chunks close every second) holds a
//! snapshot taken inside the current phase, so every phase is seen, and
//! nothing depends on timing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use pydeep_integration::{program, test_pythons, workspace_binary, Python};
use serde_json::Value;

const PHASES: u64 = 2;
const GROW: u64 = 250;

struct Recorder {
    child: Child,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn view(args: &[&str], file: &Path) -> Output {
    let output = Command::new(workspace_binary("pydeep-view"))
        .args(args)
        .arg(file)
        .output()
        .expect("run pydeep-view");
    assert!(
        output.status.success(),
        "pydeep-view {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn json_lines(output: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON document per line"))
        .collect()
}

/// The scopes snapshots of `file` so far (none while no chunk holds one).
fn scopes_so_far(file: &Path) -> Vec<Value> {
    let output = Command::new(workspace_binary("pydeep-view"))
        .args(["scopes", "--json"])
        .arg(file)
        .output()
        .expect("run pydeep-view");
    if !output.status.success() {
        return Vec::new();
    }
    json_lines(&output)
}

/// The phase a snapshot was taken in: the main thread stands on the
/// sigwait() line of phase() with `signum` unbound.
fn phase_of(snapshot: &Value, wait_line: u64) -> Option<u64> {
    let main = snapshot["threads"]
        .as_array()?
        .iter()
        .find(|t| t["is_main"] == true)?;
    let frame = &main["frames"][0];
    if frame["qualname"] != "phase" || frame["line"].as_u64() != Some(wait_line) {
        return None;
    }
    let locals = frame["locals"].as_array()?;
    let signum = locals.iter().find(|v| v["name"] == "signum")?;
    if !signum["value"].is_null() {
        return None;
    }
    let k = locals.iter().find(|v| v["name"] == "k")?;
    k["value"]["repr"].as_str()?.parse().ok()
}

fn wait_for(path: &Path, recorder: &mut Recorder, label: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            return serde_json::from_str(&text).expect("truth is JSON");
        }
        if let Ok(Some(status)) = recorder.child.try_wait() {
            panic!("{label}: pydeep record exited early: {status}");
        }
        assert!(Instant::now() < deadline, "{label}: no {}", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn counts(value: &Value) -> BTreeMap<String, u64> {
    value
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .collect()
}

fn heap_counts(snapshot: &Value) -> BTreeMap<String, u64> {
    snapshot["types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_string(),
                t["count"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Records the phases and returns the recording and each phase's truth.
fn record(python: &Python, dir: &Path) -> (PathBuf, Vec<Value>) {
    let label = python.label();
    let file = dir.join("phases.pdr");
    let prefix = dir.join("truth");
    let mut recorder = Recorder {
        child: Command::new(workspace_binary("pydeep"))
            .args(["record", "-q", "--idle", "-r", "50", "-o"])
            .arg(&file)
            .args([
                "--snapshot-every",
                "150ms",
                "--heap-every",
                "150ms",
                "--snapshot-locals",
                "--snapshot-globals",
                "--",
            ])
            .arg(&python.path)
            .arg(program("snapshot_recording.py"))
            .arg(&prefix)
            .args([PHASES.to_string(), GROW.to_string()])
            .spawn()
            .expect("start pydeep record"),
    };
    let mut truths = Vec::new();
    for k in 1..=PHASES {
        let truth = wait_for(
            &PathBuf::from(format!("{}.{k}.json", prefix.display())),
            &mut recorder,
            &label,
        );
        let wait_line = truth["wait_line"].as_u64().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !scopes_so_far(&file)
            .iter()
            .any(|s| phase_of(s, wait_line) == Some(k))
        {
            assert!(
                Instant::now() < deadline,
                "{label}: no snapshot of phase {k} recorded"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let pid = truth["pid"].to_string();
        let status = Command::new("kill")
            .args(["-USR1", &pid])
            .status()
            .expect("kill");
        assert!(status.success(), "{label}: kill -USR1 {pid}");
        truths.push(truth);
    }
    let status = recorder.child.wait().expect("wait for pydeep record");
    assert!(status.success(), "{label}: pydeep record: {status}");
    (file, truths)
}

/// The stack ids of the main thread's samples, read with the format
/// crate (not through the viewer).
fn main_thread_stacks(file: &Path) -> std::collections::BTreeSet<u64> {
    let mut recording = pydeep_format::Recording::open(file).expect("open recording");
    let mut out = std::collections::BTreeSet::new();
    while let Some(event) = recording.next_event().expect("readable recording") {
        if let pydeep_format::Event::Sample(sample) = event {
            let is_main = recording
                .tables()
                .threads
                .get(&sample.thread)
                .is_some_and(|t| t.is_main);
            if is_main {
                out.insert(sample.stack);
            }
        }
    }
    out
}

#[test]
fn recorded_snapshots_show_each_phases_locals_heap_counts_and_growth_exactly() {
    for python in test_pythons("snapshots in recordings") {
        let label = python.label();
        let dir = tempfile::tempdir().expect("tempdir");
        let (file, truths) = record(&python, dir.path());
        let wait_line = truths[0]["wait_line"].as_u64().unwrap();

        // Scopes: every snapshot taken inside a phase shows its locals.
        let scopes = json_lines(&view(&["scopes", "--json"], &file));
        let mut seen = [0usize; PHASES as usize];
        let mut pauses = Vec::new();
        for snapshot in &scopes {
            pauses.push(snapshot["pause_seconds"].as_f64().unwrap());
            let Some(k) = phase_of(snapshot, wait_line) else {
                continue;
            };
            seen[k as usize - 1] += 1;
            let truth = &truths[k as usize - 1]["locals"];
            let main = snapshot["threads"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["is_main"] == true)
                .unwrap();
            let locals = main["frames"][0]["locals"].as_array().unwrap();
            for (name, expected) in truth.as_object().unwrap() {
                let var = locals
                    .iter()
                    .find(|v| v["name"] == name.as_str())
                    .unwrap_or_else(|| panic!("{label}: phase {k}: no local {name}"));
                let value = &var["value"];
                assert_eq!(value["address"], expected["id"], "{label}: {name} id");
                assert_eq!(value["type"], expected["type"], "{label}: {name} type");
                assert_eq!(value["repr"], expected["repr"], "{label}: {name} repr");
            }
            let k_var = locals.iter().find(|v| v["name"] == "k").unwrap();
            assert_eq!(k_var["binding"], "local", "{label}");
            assert_eq!(k_var["argument"], true, "{label}");
            // Module globals: once, on the outermost frame of the module;
            // its other frames name that one.
            let frames = main["frames"].as_array().unwrap();
            let outermost = frames.last().unwrap();
            assert_eq!(outermost["qualname"], "<module>", "{label}");
            for frame in &frames[..frames.len() - 1] {
                assert!(frame["globals"].is_null(), "{label}: {frame:#}");
                assert!(frame["globals_listed_at"].is_u64(), "{label}: {frame:#}");
                if frame["file"] == outermost["file"] {
                    assert_eq!(
                        frame["globals_listed_at"], outermost["frame_address"],
                        "{label}: {frame:#}"
                    );
                }
            }
            let globals = outermost["globals"].as_array().unwrap();
            assert!(
                globals.iter().all(|g| g["name"] != "__builtins__"),
                "{label}"
            );
            let truth_globals = truths[k as usize - 1]["globals"].as_object().unwrap();
            for (name, expected) in truth_globals {
                let var = globals
                    .iter()
                    .find(|g| g["name"] == name.as_str())
                    .unwrap_or_else(|| panic!("{label}: no global {name}"));
                assert_eq!(var["value"]["address"], expected["id"], "{label}: {name}");
                assert_eq!(var["value"]["type"], expected["type"], "{label}: {name}");
                assert_eq!(var["binding"], "global", "{label}: {name}");
            }
        }
        assert!(
            seen.iter().all(|&n| n > 0),
            "{label}: snapshots per phase {seen:?}"
        );

        // A snapshot's stack is the recording's own StackDef: the (idle)
        // main thread's samples taken in the same phase carry the same id.
        let sampled = main_thread_stacks(&file);
        for snapshot in &scopes {
            if phase_of(snapshot, wait_line).is_none() {
                continue;
            }
            let main = snapshot["threads"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["is_main"] == true)
                .unwrap();
            let stack = main["stack"].as_u64().unwrap();
            assert!(
                sampled.contains(&stack),
                "{label}: snapshot stack {stack} not among the main thread's sampled stacks {sampled:?}"
            );
        }

        let phase_at: BTreeMap<u64, u64> = scopes
            .iter()
            .filter_map(|s| Some((s["time_ns"].as_u64()?, phase_of(s, wait_line)?)))
            .collect();
        // A free-threaded build keeps no GC lists: its heap snapshots come
        // from the walk of mimalloc's heaps (agent/src/reading/mimalloc.rs), held to
        // the same truth.
        let mut quiet_steps = 0;
        let heaps;
        {
            // Heap: every heap snapshot inside a phase counts exactly what
            // gc.get_objects() counted, type by type.
            heaps = json_lines(&view(&["heap", "--json", "--top", "0"], &file));
            let mut last_in: BTreeMap<u64, u64> = BTreeMap::new();
            let mut first_in: BTreeMap<u64, u64> = BTreeMap::new();
            for heap in &heaps {
                let time = heap["time_ns"].as_u64().unwrap();
                // Heap and scopes share a period, so each heap snapshot is
                // also a scopes snapshot of the same time.
                let Some(&k) = phase_at.get(&time) else {
                    continue;
                };
                let truth = counts(&truths[k as usize - 1]["counts"]);
                assert_eq!(heap_counts(heap), truth, "{label}: phase {k} counts");
                let index = heap["index"].as_u64().unwrap();
                last_in.insert(k, index);
                first_in.entry(k).or_insert(index);
            }
            assert_eq!(last_in.len(), PHASES as usize, "{label}: heap per phase");

            // Growth between the last heap snapshot of phase 1 and the first
            // of phase 2: exactly the increases of the truth, Growth by GROW.
            let (a, b) = (last_in[&1].to_string(), first_in[&2].to_string());
            let steps = json_lines(&view(
                &[
                    "heap", "--growth", "--json", "--top", "0", "--index", &a, "--index", &b,
                ],
                &file,
            ));
            assert_eq!(steps.len(), 1, "{label}");
            let before = counts(&truths[0]["counts"]);
            let after = counts(&truths[1]["counts"]);
            let expected: BTreeMap<String, u64> = after
                .iter()
                .filter_map(|(name, &n)| {
                    let was = before.get(name).copied().unwrap_or(0);
                    (n > was).then(|| (name.clone(), n - was))
                })
                .collect();
            let grown: BTreeMap<String, u64> = steps[0]["types"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| {
                    (
                        t["name"].as_str().unwrap().to_string(),
                        t["growth"].as_u64().unwrap(),
                    )
                })
                .collect();
            assert_eq!(grown, expected, "{label}: growth");
            assert_eq!(grown["Growth"], GROW, "{label}");

            // Successive heap snapshots inside one phase: nothing grew.
            let all_steps = json_lines(&view(&["heap", "--growth", "--json"], &file));
            let heap_phase: BTreeMap<u64, u64> = heaps
                .iter()
                .filter_map(|h| {
                    let k = phase_at.get(&h["time_ns"].as_u64()?)?;
                    Some((h["index"].as_u64()?, *k))
                })
                .collect();
            for step in &all_steps {
                let from = heap_phase.get(&step["from"]["index"].as_u64().unwrap());
                let to = heap_phase.get(&step["to"]["index"].as_u64().unwrap());
                if from.is_some() && from == to {
                    quiet_steps += 1;
                    assert_eq!(step["types"], Value::Array(vec![]), "{label}: {step}");
                }
            }
        }

        // Objects: the locals' values with their sys.getsizeof(), split
        // dicts, heap and static types and code objects included.
        let graphs = json_lines(&view(&["objects", "--json"], &file));
        let mut sized = 0;
        for graph in &graphs {
            let Some(&k) = phase_at.get(&graph["time_ns"].as_u64().unwrap()) else {
                continue;
            };
            let truth = &truths[k as usize - 1];
            let expected_sizes = truth["locals"]
                .as_object()
                .unwrap()
                .iter()
                .chain(truth["sized"].as_object().unwrap());
            for (name, expected) in expected_sizes {
                let node = graph["nodes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|n| n["address"] == expected["id"])
                    .unwrap_or_else(|| panic!("{label}: no node for {name}"));
                assert_eq!(node["type"], expected["type"], "{label}: {name}");
                assert_eq!(node["size"], expected["size"], "{label}: {name} size");
                assert_eq!(node["depth"], 0, "{label}: {name}");
                sized += 1;
            }
        }
        assert!(sized > 0, "{label}: no graph inside a phase");
        pauses.sort_by(f64::total_cmp);
        eprintln!(
            "   {label}: {} scopes snapshots ({:?} per phase), {} heap, {quiet_steps} quiet growth steps; pause median {:.2} ms, max {:.2} ms",
            scopes.len(),
            seen,
            heaps.len(),
            pauses[pauses.len() / 2] * 1e3,
            pauses[pauses.len() - 1] * 1e3
        );
    }
}
