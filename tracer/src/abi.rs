//! The memory layout the tracer and the agent share: the control block's
//! field offsets, the event record, and the words each side writes.
//!
//! This file is compiled into both: the tracer (`tracer/src/lib.rs`, which
//! checks every offset against its `Control` at compile time) and the agent
//! (`agent/src/trace/ring.rs`, which reads the block with `process_vm_readv`).
//! Change it only together with [`LAYOUT_VERSION`].

/// First word of the control block: "PYDEEPT5" little-endian.
pub const MAGIC: u64 = u64::from_le_bytes(*b"PYDEEPT5");
/// Version of this layout; the exported names carry it too (the tracer's
/// `export_name`s, and the agent's memfd name). 3 since `--opcodes` (the
/// count table) and the watchdog that survives the target's exit; 4 since
/// the block says how calls are recorded ([`offset::CALLS_BY`]); 5 since it
/// names the unwatched functions it counts ([`offset::UNWATCHED_CODES`]).
/// A target holding a tracer of another version gets a new library (its
/// memfd and exported names carry the version, so the old one is never
/// found, and [`MAGIC`] and the version word are checked besides).
pub const LAYOUT_VERSION: u32 = 5;
/// Exported name of the control block.
pub const CONTROL_SYMBOL: &str = "PYDEEP_TRACER_V5";
/// Exported name of the start function:
/// `int start(uint32_t agent_pid, uint32_t flags)`.
pub const START_SYMBOL: &str = "pydeep_tracer_v5_start";

/// Events the ring holds (a power of two).
pub const CAPACITY: u64 = 1 << 19;
/// Size of one event record in bytes.
pub const EVENT_SIZE: u64 = 32;
/// Distinct code objects (and C functions) one window can keep alive; an
/// event naming one more is dropped and counted.
pub const KEPT_CAPACITY: usize = 1 << 16;
/// Code objects of unwatched functions the control block names
/// ([`offset::UNWATCHED_CODES`]); those past it are counted only.
pub const UNWATCHED_CODES_CAPACITY: usize = 32;
/// Bytes of the control block's message (a refusal or failure, UTF-8, NUL
/// padded).
pub const MESSAGE_SIZE: usize = 256;

/// Event kind: a Python function (or generator resumption) was entered.
pub const KIND_CALL: u32 = 1;
/// Event kind: a Python function returned (or a generator yielded).
pub const KIND_RETURN: u32 = 2;
/// Event kind: a C function was called from Python (`--c-calls`).
pub const KIND_C_CALL: u32 = 3;
/// Event kind: a C function returned or raised (`--c-calls`).
pub const KIND_C_RETURN: u32 = 4;

/// Event kind: a new source line starts executing (`--lines`); the
/// event's `LINE` field holds it.
pub const KIND_LINE: u32 = 5;

/// Entries of the selection table (`--functions`, a power of two): one
/// `u64` each, the code object's address with a `SELECT_*` word in its low
/// four bits (code objects are 16-byte aligned), 0 for a free slot. Only
/// the agent writes it (one aligned 8-byte write per entry); the tracer
/// reads it. Slot of an address: [`select_slot`], then linear probing over
/// at most [`SELECT_PROBES`] slots.
pub const SELECT_CAPACITY: usize = 1 << 16;
/// Longest probe sequence in the selection table.
pub const SELECT_PROBES: usize = 64;
/// Selection: the code object matches `--functions`.
pub const SELECT_YES: u64 = 1;
/// Selection: it does not (the tracer writes no event for it).
pub const SELECT_NO: u64 = 2;

/// First slot of `address` in the selection table.
pub fn select_slot(address: u64) -> usize {
    ((address >> 4).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 48) as usize & (SELECT_CAPACITY - 1)
}

/// Flag: record Python calls and returns.
pub const FLAG_CALLS: u32 = 1;
/// Flag: record C calls and returns too.
pub const FLAG_C_CALLS: u32 = 2;
/// Flag: record line events too (a C trace function, `_PyEval_SetTrace`).
pub const FLAG_LINES: u32 = 4;
/// Flag: `--functions`: skip events of code objects the selection table
/// marks [`SELECT_NO`] (the agent filters the rest by itself).
pub const FLAG_SELECT: u32 = 8;
/// Flag: `--opcodes`: count every executed instruction of the selected
/// code objects in the count table (3.9-3.11: `f_trace_opcodes` set by the
/// trace function; 3.12+: a `sys.monitoring` tool).
pub const FLAG_OPCODES: u32 = 16;

/// Flag: the agent asks for raw TSC readings as event times (it found the
/// TSC invariant: `constant_tsc` and `nonstop_tsc`); the tracer says in
/// `offset::CLOCK` whether it uses them.
pub const FLAG_TSC: u32 = 32;

/// Flag (measurements and tests, the agent's `PYDEEP_TRACE_CALLS=profile`):
/// record calls with the C profile function whatever the version.
pub const FLAG_CALLS_BY_PROFILE: u32 = 64;
/// Flag (`PYDEEP_TRACE_CALLS=eval-frame`): record calls with PEP 523's
/// eval-frame hook wherever it is usable (3.9-3.13).
pub const FLAG_CALLS_BY_EVAL_FRAME: u32 = 128;
/// Flag (`PYDEEP_TRACE_CALLS=monitoring`): record calls with a
/// `sys.monitoring` tool wherever it is usable (3.12+).
pub const FLAG_CALLS_BY_MONITORING: u32 = 256;

/// How a window records calls ([`offset::CALLS_BY`]): not chosen yet.
pub const CALLS_BY_NONE: u32 = 0;
/// Calls recorded by a C profile function on every thread
/// (`_PyEval_SetProfile`).
pub const CALLS_BY_PROFILE: u32 = 1;
/// Calls recorded by the global events of pydeep's `sys.monitoring` tool.
pub const CALLS_BY_MONITORING: u32 = 2;
/// Calls recorded by PEP 523's eval-frame hook.
pub const CALLS_BY_EVAL_FRAME: u32 = 3;

/// Clock of the event times: CLOCK_MONOTONIC nanoseconds.
pub const CLOCK_MONOTONIC_NS: u32 = 0;
/// Clock of the event times: raw TSC ticks (`rdtsc`), converted by the
/// agent with (TSC, CLOCK_MONOTONIC) pairs it reads around each drain.
pub const CLOCK_TSC: u32 = 1;

/// Entries of the count table (`--opcodes`, a power of two), each
/// [`count::SIZE`] bytes: (code object, instruction offset) → executions.
/// Written by the tracer with the GIL held; read by the agent once the
/// hooks are removed. Slot of a key: [`count_slot`], then linear probing
/// over at most [`SELECT_PROBES`] slots; a key that finds no slot is
/// counted in `COUNTS_LOST`.
pub const COUNT_CAPACITY: usize = 1 << 16;

/// First slot of (`code`, `offset`) in the count table.
pub fn count_slot(code: u64, offset: u32) -> usize {
    ((code >> 4) ^ (offset as u64).wrapping_mul(0x2545_F491_4F6C_DD1D))
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_shr(48) as usize
        & (COUNT_CAPACITY - 1)
}

/// Offsets inside one count-table entry.
pub mod count {
    /// `u64` address of the code object (0: a free slot).
    pub const CODE: usize = 0;
    /// `u32` instruction offset in bytes, as `dis` numbers them.
    pub const OFFSET: usize = 8;
    /// `u64` executions counted.
    pub const COUNT: usize = 16;
    /// Size of one entry.
    pub const SIZE: usize = 24;
}

/// Command (agent → tracer): trace.
pub const COMMAND_RUN: u32 = 1;
/// Command: remove every hook (the agent then drains what is left).
pub const COMMAND_STOP: u32 = 2;
/// Command: the agent has read every code object: release them and end.
pub const COMMAND_RELEASE: u32 = 3;

/// State (tracer → agent): no window open.
pub const STATE_IDLE: u32 = 0;
/// The watchdog is waiting for the GIL to install the hooks.
pub const STATE_STARTING: u32 = 1;
/// Hooks installed, events flowing.
pub const STATE_TRACING: u32 = 2;
/// The tracer refused: another profiler is installed (see the message).
pub const STATE_REFUSED: u32 = 3;
/// Every hook is removed; the code objects are still kept.
pub const STATE_STOPPED: u32 = 4;
/// The window is over and every kept object released.
pub const STATE_RELEASED: u32 = 5;
/// The tracer could not run (see the message).
pub const STATE_FAILED: u32 = 6;

/// Milliseconds without a heartbeat after which the watchdog decides the
/// agent is gone and ends the window by itself.
pub const HEARTBEAT_TIMEOUT_MS: u64 = 3000;

/// Offsets of the control block's fields (all little-endian).
pub mod offset {
    /// `u64` [`super::MAGIC`].
    pub const MAGIC: u64 = 0;
    /// `u32` [`super::LAYOUT_VERSION`].
    pub const VERSION: u64 = 8;
    /// `u32` one of the `STATE_*` words, written by the tracer.
    pub const STATE: u64 = 12;
    /// `u32` one of the `COMMAND_*` words, written by the agent.
    pub const COMMAND: u64 = 16;
    /// `u32` the `FLAG_*` bits of the window.
    pub const FLAGS: u64 = 20;
    /// `u32` the agent's pid (diagnostics).
    pub const AGENT_PID: u64 = 24;
    /// `u32` threads that got the hook.
    pub const THREADS_HOOKED: u64 = 28;
    /// `u64` a counter the agent bumps while it is alive.
    pub const HEARTBEAT: u64 = 32;
    /// `u64` events written (the ring index is this modulo the capacity).
    pub const WRITE_POS: u64 = 40;
    /// `u64` events the agent has consumed, written by the agent.
    pub const READ_POS: u64 = 48;
    /// `u64` events dropped because the ring was full or the kept-object
    /// table was.
    pub const DROPPED: u64 = 56;
    /// `u64` time of the first and the last drop, in the events' clock
    /// ([`CLOCK`]).
    pub const FIRST_DROP_NS: u64 = 64;
    /// See [`FIRST_DROP_NS`].
    pub const LAST_DROP_NS: u64 = 72;
    /// `u64` objects the window keeps alive.
    pub const KEPT_OBJECTS: u64 = 80;
    /// `u64` address of the event ring in the target.
    pub const RING_ADDRESS: u64 = 88;
    /// `u64` CLOCK_MONOTONIC ns when the hooks were installed and removed.
    pub const START_NS: u64 = 96;
    /// See [`START_NS`].
    pub const STOP_NS: u64 = 104;
    /// `u64` address of the selection table in the target.
    pub const SELECT_ADDRESS: u64 = 112;
    /// `u32` threads that got the line hook (`--lines`).
    pub const THREADS_LINE_HOOKED: u64 = 120;
    /// `u32` the clock of the events' `TIME_NS` field this window: one of
    /// the `CLOCK_*` words, written by the start function (0 in a tracer
    /// built before the TSC clock, which never reads [`super::FLAG_TSC`]).
    pub const CLOCK: u64 = 124;
    /// `u64` address of the count table (`--opcodes`) in the target.
    pub const COUNTS_ADDRESS: u64 = 128;
    /// `u64` instruction executions not counted: the count table was full
    /// (or the frame table of 3.9-3.11, see the tracer).
    pub const COUNTS_LOST: u64 = 136;
    /// `u32` code objects whose instructions are counted (3.12+: those given
    /// local INSTRUCTION events; before, frames given `f_trace_opcodes`).
    pub const COUNTED_CODES: u64 = 144;
    /// `u32` the `sys.monitoring` tool id used for `--opcodes` (3.12+),
    /// plus one; 0 if none.
    pub const MONITORING_TOOL: u64 = 148;
    /// `u32` how the window records calls: one of the `CALLS_BY_*` words,
    /// written by the watchdog before it publishes `STATE_TRACING`.
    pub const CALLS_BY: u64 = 152;
    /// `u32` functions CPython could have called past the window's call
    /// events, found by a walk of the classes as the window ends (3.13: a
    /// class's simple `__init__` without pydeep's local call events;
    /// 3.11.0-3.11.3: a class's Python `__getitem__` without a version of
    /// the window; see the tracer's `evalframe::stop`); 0 if none, and in a tracer built
    /// before this word was given a meaning (it was reserved, always 0).
    /// Each distinct function counted once up to
    /// [`super::UNWATCHED_CODES_CAPACITY`] (two classes holding one
    /// function are one), each class's past it.
    pub const UNWATCHED: u64 = 156;
    /// `[u64; UNWATCHED_CODES_CAPACITY]` addresses of the code objects of
    /// the first [`UNWATCHED`] functions, distinct, 0 after the last (and
    /// for one the window could not keep: its kept-object table was full).
    /// The window holds a reference to each until `COMMAND_RELEASE`, like
    /// the code objects its events name; written before `STATE_STOPPED`.
    pub const UNWATCHED_CODES: u64 = 160;
    /// `[u8; MESSAGE_SIZE]` why the tracer refused or failed.
    pub const MESSAGE: u64 = UNWATCHED_CODES + 8 * super::UNWATCHED_CODES_CAPACITY as u64;
    /// Size of the whole block.
    pub const SIZE: u64 = MESSAGE + super::MESSAGE_SIZE as u64;
}

/// Offsets inside one event record.
pub mod event {
    /// `u64` CLOCK_MONOTONIC ns, or TSC ticks (see `offset::CLOCK`).
    pub const TIME_NS: usize = 0;
    /// `u64` address of the code object (calls, returns) or the C function
    /// object (C calls).
    pub const OBJECT: usize = 8;
    /// `u32` the kernel's thread id.
    pub const THREAD: usize = 16;
    /// `u32` one of the `KIND_*` words.
    pub const KIND: usize = 20;
    /// `u32` instruction offset in bytes (0 when not known: calls, and
    /// line events before 3.11).
    pub const OFFSET: usize = 24;
    /// `u32` source line of a line event (0 otherwise).
    pub const LINE: usize = 28;
}
