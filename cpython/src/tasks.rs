//! Layout of the C accelerator's `_asyncio.Task` (`TaskObj`) per CPython
//! minor version.
//!
//! The struct is private to Modules/_asynciomodule.c (no header, so the
//! generator in cpython/tools cannot take it), and it changed in almost every
//! version: 3.10 added `exception_tb`, 3.11 replaced the
//! `_PyErr_StackItem` of cancelled exceptions by one pointer, 3.13 moved
//! the instance dict and weak references out of the object (managed) and
//! turned the flags into bit fields, 3.14 added `awaited_by`, `is_task` and
//! `awaited_by_is_set`. So each version's field list up to `task_name` is
//! written here as the source declares it, and the offsets are computed
//! from it with the C ABI's rules for the target's pointer size.
//!
//! Checked (agent/tests/asyncio_layout_truth.rs, through ctypes on a live
//! task: the words holding `id(loop)`, `id(task.get_coro())`,
//! `id(task._fut_waiter)`, `id(task.get_name())`, the state before and
//! after `set_result`) on 3.9-3.13 natively and on the WebAssembly
//! (32-bit) builds of 3.14 and 3.15, whose field lists are thereby
//! confirmed; the 64-bit offsets of 3.14/3.15 are computed, not observed.
//! Every task the agent reads is also validated (its `asyncio` module).

use std::collections::HashMap;

/// Offsets in `TaskObj` (bytes from the object's start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskObjectOffsets {
    /// `fut_loop` (`task_loop`): the event loop.
    pub fut_loop: u64,
    /// `fut_result` (`task_result`).
    pub fut_result: u64,
    /// `fut_state`: 0 pending, 1 cancelled, 2 finished (`fut_state` enum).
    pub fut_state: u64,
    /// `task_fut_waiter`: the future the task waits on, or NULL.
    pub task_fut_waiter: u64,
    /// `task_coro`: its coroutine.
    pub task_coro: u64,
    /// `task_name`: a str, or from 3.12 an int until `get_name()` formats
    /// it as "Task-N".
    pub task_name: u64,
}

/// One member of the struct, as declared.
#[derive(Debug, Clone, Copy)]
enum Field {
    /// `PyObject_HEAD` (two words).
    Head,
    /// A pointer.
    Pointer(&'static str),
    /// `int` or an enum.
    Int(&'static str),
    /// `char`.
    Char(&'static str),
    /// `unsigned name: 1`.
    Bit(&'static str),
    /// `_PyErr_StackItem` of 3.9/3.10: four pointers.
    StackItem(&'static str),
}

use Field::*;

/// `FutureObj_HEAD(task)` and `TaskObj` up to `task_name`.
fn fields(minor: u32) -> Option<Vec<Field>> {
    let mut out = vec![
        Head,
        Pointer("loop"),
        Pointer("callback0"),
        Pointer("context0"),
        Pointer("callbacks"),
        Pointer("exception"),
    ];
    if minor >= 10 {
        out.push(Pointer("exception_tb"));
    }
    out.extend([
        Pointer("result"),
        Pointer("source_tb"),
        Pointer("cancel_msg"),
    ]);
    match minor {
        9..=12 => {
            out.extend([
                Int("state"),
                Int("log_tb"),
                Int("blocking"),
                Pointer("dict"),
                Pointer("weakreflist"),
            ]);
            if minor <= 10 {
                out.push(StackItem("cancelled_exc_state"));
            } else {
                out.push(Pointer("cancelled_exc"));
            }
            out.extend([Pointer("fut_waiter"), Pointer("coro"), Pointer("name")]);
        }
        13..=15 => {
            out.push(Pointer("cancelled_exc"));
            if minor >= 14 {
                out.push(Pointer("awaited_by"));
            }
            out.push(Int("state"));
            if minor >= 14 {
                out.extend([Char("is_task"), Char("awaited_by_is_set")]);
            }
            out.extend([
                Bit("log_tb"),
                Bit("blocking"),
                Bit("must_cancel"),
                Bit("log_destroy_pending"),
                Int("num_cancels_requested"),
                Pointer("fut_waiter"),
                Pointer("coro"),
                Pointer("name"),
            ]);
        }
        _ => return None,
    }
    Some(out)
}

/// Byte offsets of `fields` laid out by the C ABI (System V and
/// WebAssembly agree here): each member at the next multiple of its
/// alignment; one-bit fields packed into the current `unsigned` unit from
/// the next free bit.
fn offsets(fields: &[Field], pointer: u64, head: u64) -> HashMap<&'static str, u64> {
    let mut out = HashMap::new();
    let mut bits = 0u64; // bits used so far
    let align = |bits: u64, bytes: u64| bits.div_ceil(8).div_ceil(bytes) * bytes;
    for field in fields {
        match *field {
            Head => bits = head * 8,
            Pointer(name) => {
                let at = align(bits, pointer);
                out.insert(name, at);
                bits = (at + pointer) * 8;
            }
            StackItem(name) => {
                let at = align(bits, pointer);
                out.insert(name, at);
                bits = (at + 4 * pointer) * 8;
            }
            Int(name) => {
                let at = align(bits, 4);
                out.insert(name, at);
                bits = (at + 4) * 8;
            }
            Char(name) => {
                let at = bits.div_ceil(8);
                out.insert(name, at);
                bits = (at + 1) * 8;
            }
            Bit(name) => {
                out.insert(name, bits / 8);
                bits += 1;
            }
        }
    }
    out
}

/// The `TaskObj` offsets of CPython 3.`minor` with `pointer`-byte pointers
/// (8 natively, 4 on WebAssembly), default (not debug, not free-threaded)
/// build.
pub fn task_object_offsets_for(minor: u32, pointer: u64) -> Option<TaskObjectOffsets> {
    task_object_offsets_with_head(minor, pointer, 2 * pointer)
}

/// As [`task_object_offsets_for`], after a `PyObject_HEAD` of `head`
/// bytes: two words by default, four on free-threaded builds (`ob_tid`;
/// `_padding`, `ob_mutex`, `ob_gc_bits`, `ob_ref_local`; `ob_ref_shared`;
/// `ob_type`), where `TaskObj` is otherwise declared the same (3.13).
pub fn task_object_offsets_with_head(
    minor: u32,
    pointer: u64,
    head: u64,
) -> Option<TaskObjectOffsets> {
    let at = offsets(&fields(minor)?, pointer, head);
    Some(TaskObjectOffsets {
        fut_loop: at["loop"],
        fut_result: at["result"],
        fut_state: at["state"],
        task_fut_waiter: at["fut_waiter"],
        task_coro: at["coro"],
        task_name: at["name"],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn computed_offsets_are_those_observed_on_the_installed_interpreters() {
        // (minor, result, state, fut_waiter): from live tasks (3.9-3.13).
        for (minor, result, state, waiter) in [
            (9, 56, 80, 144),
            (10, 64, 88, 152),
            (11, 64, 88, 128),
            (12, 64, 88, 128),
            (13, 64, 96, 112),
        ] {
            let o = task_object_offsets_for(minor, 8).unwrap();
            assert_eq!(
                (o.fut_loop, o.fut_result, o.fut_state, o.task_fut_waiter),
                (16, result, state, waiter),
                "3.{minor}"
            );
            assert_eq!((o.task_coro, o.task_name), (waiter + 8, waiter + 16));
        }
        // 3.14/3.15 on WebAssembly (32-bit): observed loop 8, result 32,
        // state 52, fut_waiter 64, coro 68, name 72.
        for minor in [14, 15] {
            let o = task_object_offsets_for(minor, 4).unwrap();
            assert_eq!(
                (
                    o.fut_loop,
                    o.fut_result,
                    o.fut_state,
                    o.task_fut_waiter,
                    o.task_coro,
                    o.task_name
                ),
                (8, 32, 52, 64, 68, 72)
            );
            let o = task_object_offsets_for(minor, 8).unwrap();
            assert_eq!((o.fut_state, o.task_fut_waiter), (104, 120));
        }
        assert!(task_object_offsets_for(8, 8).is_none());
        // 3.13t: the same fields after a four-word header.
        let o = task_object_offsets_with_head(13, 8, 32).unwrap();
        assert_eq!((o.fut_loop, o.fut_state, o.task_fut_waiter), (32, 112, 128));
    }
}
