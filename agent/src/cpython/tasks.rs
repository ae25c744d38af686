//! Layout of the C accelerator's `_asyncio.Task` (`TaskObj`) and
//! `_asyncio.Future` (`FutureObj`) per CPython minor version.
//!
//! The structs are private to Modules/_asynciomodule.c (no header, so the
//! generator in agent/tools cannot take them), and they changed in almost
//! every version: 3.10 widened the future head, 3.11 replaced the
//! `_PyErr_StackItem` of cancelled exceptions by one pointer and added
//! `exception_tb`, 3.13 moved the instance dict and weak references out of
//! the object (managed) and turned the flags into bit fields, 3.14 added
//! `awaited_by`, `is_task` and `awaited_by_is_set`.
//!
//! 3.9-3.13: the offsets of the source's structs, checked on the installed
//! interpreters (a task's words compared with `id(task._loop)`,
//! `id(task.get_coro())`, `id(task._fut_waiter)`, `id(task.get_name())`
//! and the state before and after `set_result`), and validated on every
//! task read ([`crate::asyncio`]: the loop, coroutine and name must be
//! objects of plausible types, the state 0-2). 3.14/3.15: from the 3.14
//! source, UNTESTED.

/// Offsets in `TaskObj` (bytes from the object's start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskObjectOffsets {
    /// `fut_loop` (`task_loop`): the event loop.
    pub fut_loop: u64,
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

/// The `TaskObj` offsets of CPython 3.`minor` (64-bit, default build).
pub fn task_object_offsets(minor: u32) -> Option<TaskObjectOffsets> {
    let offsets = |fut_state, task_fut_waiter| TaskObjectOffsets {
        fut_loop: 16,
        fut_state,
        task_fut_waiter,
        task_coro: task_fut_waiter + 8,
        task_name: task_fut_waiter + 16,
    };
    Some(match minor {
        // loop, callback0, context0, callbacks, exception, result,
        // source_tb, cancel_msg, state, log_tb, blocking, dict,
        // weakreflist, cancelled_exc_state (4 words), then the task.
        9 => offsets(80, 144),
        10 => offsets(88, 152),
        // + exception_tb; cancelled_exc is one pointer.
        11 | 12 => offsets(88, 128),
        // dict and weakreflist managed; bit fields + num_cancels_requested.
        13 => offsets(96, 112),
        // + awaited_by (before state), is_task, awaited_by_is_set.
        14 | 15 => offsets(104, 120),
        _ => return None,
    })
}
