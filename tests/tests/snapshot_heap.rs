//! Ground truth for `pydeep heap`: a fixture counts its GC-tracked objects
//! by type with gc.get_objects() (collector disabled, measurement leaving
//! nothing tracked behind) and blocks; pydeep's walk of the GC generation
//! lists must find exactly the same counts per type, on every interpreter.

use std::collections::BTreeMap;

use pydeep_integration::blocking::{process_in, PAUSE};
use pydeep_integration::run::pydeep_json;
use pydeep_integration::{test_pythons, Fixture};

#[test]
fn heap_counts_every_gc_tracked_object_by_type_exactly_as_gc_get_objects_does() {
    for python in test_pythons("snapshot heap") {
        let label = python.label();
        let (fixture, truth) =
            Fixture::start_with_truth(&python, "snapshot_heap.py", &[], |pid, _| {
                process_in(pid, PAUSE)
            });
        let truth: BTreeMap<String, u64> = serde_json::from_value(truth).expect("counts");
        let pid = fixture.pid().to_string();
        let summary = pydeep_json(["heap", &pid, "--json", "--top", "0"]);
        // A walk cut short says so among the warnings (the viewer's schema).
        assert_eq!(summary["warnings"], serde_json::json!([]), "{label}");
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        for entry in summary["types"].as_array().unwrap() {
            *counts
                .entry(entry["name"].as_str().unwrap().to_string())
                .or_default() += entry["count"].as_u64().unwrap();
        }
        assert_eq!(counts, truth, "{label}: counts per type");
        assert_eq!(counts["Marker"], 5000, "{label}");
        assert_eq!(
            summary["objects"].as_u64().unwrap(),
            truth.values().sum::<u64>(),
            "{label}"
        );
        let seconds = summary["pause_seconds"].as_f64().unwrap();
        eprintln!(
            "   {label}: {} objects, paused {:.2} ms, {:.0} objects/s",
            summary["objects"],
            seconds * 1e3,
            summary["objects"].as_f64().unwrap() / seconds,
        );
    }
}
