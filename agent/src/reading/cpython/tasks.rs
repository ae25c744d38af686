//! The `TaskObj` offsets of one target: the facts crate's field list of
//! its version ([`pydeep_cpython::tasks`]) after its object header.

pub use pydeep_cpython::tasks::{
    task_object_offsets_for, task_object_offsets_with_head, TaskObjectOffsets,
};

/// The 64-bit `TaskObj` offsets of the target's CPython: its minor
/// version's field list after its object header (`ob_type` is the header's
/// last word in both builds).
pub fn task_object_offsets(layout: &super::Layout) -> Option<TaskObjectOffsets> {
    let head = layout.core.object_ob_type + 8;
    task_object_offsets_with_head(layout.version.minor, 8, head)
}
