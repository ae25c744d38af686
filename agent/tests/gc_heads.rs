//! The collector's list heads found by shape (what 3.14+ relies on, where
//! no table gives their offsets) are exactly the three generation heads
//! the headers name, on every interpreter found.

use pydeep::process::memory::read_u64;
use pydeep::reading::heap::generation_heads_by_shape;
use pydeep::Target;
use pydeep_integration::{program, test_pythons};

#[test]
fn gc_list_heads_found_by_shape_are_the_generations_the_headers_name() {
    for python in test_pythons("GC list heads by shape") {
        if python.free_threaded {
            // No PyGC_Head lists: its collector walks mimalloc's heaps.
            let mut child = Killed(
                std::process::Command::new(&python.path)
                    .arg(program("idle_forever.py"))
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .expect("start python"),
            );
            let mut line = String::new();
            std::io::BufRead::read_line(
                &mut std::io::BufReader::new(child.0.stdout.as_mut().unwrap()),
                &mut line,
            )
            .expect("ready line");
            let target = Target::attach(child.0.id() as i32).expect("attach");
            assert!(!target.layout().has_gc_lists(), "{}", python.label());
            eprintln!("   {}: no GC lists (free-threaded)", python.label());
            continue;
        }
        let mut child = std::process::Command::new(&python.path)
            .arg(program("idle_forever.py"))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start python");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
            &mut line,
        )
        .expect("ready line");
        let target = Target::attach(child.id() as i32).expect("attach");
        let o = &target.layout().offsets;
        let main = read_u64(
            target.memory(),
            target.runtime_address() + o.runtime_interpreters_main.unwrap(),
        )
        .unwrap();
        let gc = main + o.interpreter_gc.unwrap();
        let named: Vec<u64> = (0..3)
            .map(|g| gc + o.gc_state_generations.unwrap() + g * o.gc_generation_size.unwrap())
            .collect();
        let guard = target.pause().expect("pause");
        let found =
            generation_heads_by_shape(target.memory(), gc, o.gc_state_collecting.unwrap_or(512));
        drop(guard);
        let _ = child.kill();
        let _ = child.wait();
        // The permanent generation (gc.freeze()) follows the three (after
        // the `generation0` pointer on 3.9-3.11).
        assert!(
            found.len() >= 3 && found[..3] == named[..] && found.len() <= 4,
            "{}: heads by shape {found:x?}, headers name {named:x?}",
            python.label()
        );
        if found.len() == 4 {
            assert!(
                found[3] >= named[2] + o.gc_generation_size.unwrap(),
                "{}",
                python.label()
            );
        }
        eprintln!(
            "   {}: {} heads, the generations at their offsets",
            python.label(),
            found.len()
        );
    }
}

/// A child killed and reaped when dropped.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs a program under `python` and parses its JSON output.
fn run_json(python: &pydeep_integration::Python, name: &str, args: &[String]) -> serde_json::Value {
    let output = std::process::Command::new(&python.path)
        .arg(program(name))
        .args(args)
        .output()
        .expect("run python");
    assert!(
        output.status.success(),
        "{}: {name}: {}",
        python.label(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON")
}

/// 3.14 replaced the generations with an incremental collector's young,
/// old[2] and permanent lists; pydeep finds their heads by shape. Checked
/// in-process (tests/programs/snapshot_gc_lists.py, the same search
/// through ctypes) on 3.13 and the WebAssembly builds of 3.14/3.15, in the
/// GC state the interpreter's own `_Py_DebugOffsets` locates: four heads,
/// lists that walk back to their heads, as many objects on the first three
/// as `gc.get_objects()` returns (within the few the measurement itself
/// makes) and on the fourth as `gc.get_freeze_count()`.
#[test]
fn gc_lists_found_by_shape_hold_what_gc_get_objects_returns_on_3_13_and_later() {
    use pydeep::reading::cpython::debug_offsets::DebugTable;
    use pydeep::reading::cpython::{semantics_for, OffsetsSource, PythonVersion};
    for python in pydeep_integration::bytecode_pythons("GC lists by shape, in-process") {
        if python.free_threaded {
            continue; // no PyGC_Head lists (checked above)
        }
        let (major, minor, patch) = python.version;
        let Some(semantics) = semantics_for(major, minor) else {
            continue;
        };
        let OffsetsSource::DebugOffsets(format) = semantics.offsets else {
            continue;
        };
        let truth = run_json(&python, "debug_offsets_truth.py", &[]);
        let text = truth["table"].as_str().unwrap();
        let bytes: Vec<u8> = (0..text.len() / 2)
            .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        let table = DebugTable::parse(&bytes, format).expect("parse table");
        let version = PythonVersion {
            major,
            minor,
            patch,
            ..Default::default()
        };
        let o = table.to_offsets(&version);
        let (gc, span) = (o.interpreter_gc.unwrap(), o.gc_state_collecting.unwrap());
        let seen = run_json(
            &python,
            "snapshot_gc_lists.py",
            &[gc.to_string(), span.to_string()],
        );
        let lengths: Vec<u64> = seen["lengths"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v.as_u64())
            .collect();
        let label = python.label();
        assert_eq!(lengths.len(), 4, "{label}: heads {}", seen["heads"]);
        let collected: u64 = lengths[..3].iter().sum();
        let objects = seen["get_objects"].as_u64().unwrap();
        assert!(
            collected.abs_diff(objects) <= 16,
            "{label}: {collected} objects on the lists, gc.get_objects() has {objects}"
        );
        assert_eq!(
            Some(lengths[3]),
            seen["freeze_count"].as_u64(),
            "{label}: permanent"
        );
        eprintln!(
            "   {label}: heads at {} of the GC state, {collected} objects (get_objects {objects}), {} frozen",
            seen["heads"], lengths[3]
        );
    }
}
