//! The stack walker: every thread of every interpreter, each frame as (code
//! object, instruction offset), written once against [`Layout`].
//!
//! A sample reads in phases, batching the reads of all threads into one
//! `process_vm_readv` where the data allows: the thread states, then the
//! current-frame pointers and GIL, then each thread's data-stack window
//! (3.11+ keeps frames contiguous in chunks, so a 30-deep stack is one
//! copy), and, when the target is running and the first batch cannot vouch
//! for a stack, one final re-read that detects a stack that changed while
//! it was read (a torn sample); a torn stack is read again at once, up to
//! twice (`sample.rs`; what the checks prove: notes/cpython-frames.md).
//! A 3.11+ walk takes the outer frames of the thread's last walk where the
//! copy holds the same fields at each of them (`reuse.rs`).

mod frames;
mod prefetch;
mod reuse;
#[cfg(test)]
mod reuse_tests;
mod sample;
mod threads;
mod torn;

pub use frames::{walk_frame_objects, walk_interpreter_frames, FrameSource, Walk};
pub use sample::{sample_interpreters, CodeCheck};
pub use threads::{list_threads, InterpreterThreads, ThreadListCache};

/// One frame of a sampled stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameSample {
    /// Address of the code object in the target.
    pub code_address: u64,
    /// Byte offset of the instruction, equal to what `frame.f_lasti`
    /// reports in-process (see notes/cpython-frames.md: on 3.11/3.12 a
    /// frame that is calling points at the last inline cache entry of its
    /// CALL; on 3.13+ at the CALL itself).
    pub instruction_offset: u32,
    /// The frame belongs to a generator, coroutine or async generator.
    pub is_generator: bool,
    /// The frame is an interpreter shim (only kept when asked for).
    pub is_shim: bool,
}

/// One thread's stack and state at the moment of a sample.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ThreadSample {
    /// `PyThreadState.thread_id` (the pthread id, `threading.get_ident()`).
    pub thread_id: u64,
    /// The kernel's thread id (`threading.get_native_id()`), 0 if unknown.
    pub native_id: u64,
    /// Index of the interpreter in the runtime's list (0 = main, the oldest).
    pub interpreter: u32,
    /// True for the main thread of the main interpreter.
    pub is_main: bool,
    /// The thread held the GIL.
    pub holds_gil: bool,
    /// The thread was running (state `R` in /proc), not waiting. The GIL
    /// holder counts as running without asking /proc (it runs Python
    /// code, or a C call made from it: blocking calls release the GIL).
    pub active: bool,
    /// The interpreter's garbage collector was running on this thread
    /// (`gcstate->collecting` set while the thread held the GIL; with the
    /// GIL off, a free-threaded build's, while it was the interpreter's
    /// only thread): the collector's time, not the frames'. Read in the
    /// sample's first batch.
    pub collecting: bool,
    /// Python frames, innermost first.
    pub frames: Vec<FrameSample>,
    /// The stack changed while it was read (non-blocking mode), in every
    /// attempt the sample made.
    pub torn: bool,
    /// The current-frame pointer read after the copy named another frame
    /// than the one read before it (non-blocking mode): the thread called
    /// or returned while its stack was read.
    pub moved: bool,
    /// The stack was deeper than the depth limit, or its chain broke off;
    /// `frames` holds what was read.
    pub truncated: bool,
    /// Address of the thread's `PyThreadState` (diagnostics).
    pub thread_state: u64,
}

/// A thread sample without its frames: what a recording says of the
/// thread besides its stack (small and `Copy`, so the sampler's batches
/// to the sink carry it inline, [`crate::recording::ticks`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ThreadHead {
    /// See [`ThreadSample::thread_id`].
    pub thread_id: u64,
    /// See [`ThreadSample::native_id`].
    pub native_id: u64,
    /// See [`ThreadSample::interpreter`].
    pub interpreter: u32,
    /// See [`ThreadSample::is_main`].
    pub is_main: bool,
    /// See [`ThreadSample::holds_gil`].
    pub holds_gil: bool,
    /// See [`ThreadSample::active`].
    pub active: bool,
    /// See [`ThreadSample::collecting`].
    pub collecting: bool,
    /// See [`ThreadSample::torn`].
    pub torn: bool,
    /// See [`ThreadSample::truncated`].
    pub truncated: bool,
}

impl ThreadSample {
    /// The sample without its frames.
    pub fn head(&self) -> ThreadHead {
        ThreadHead {
            thread_id: self.thread_id,
            native_id: self.native_id,
            interpreter: self.interpreter,
            is_main: self.is_main,
            holds_gil: self.holds_gil,
            active: self.active,
            collecting: self.collecting,
            torn: self.torn,
            truncated: self.truncated,
        }
    }
}

/// Options of a walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalkOptions {
    /// Most frames read per thread (default 4096); deeper stacks are
    /// truncated and flagged.
    pub max_depth: usize,
    /// Most threads read per interpreter (default 4096).
    pub max_threads: usize,
    /// Keep interpreter shim frames (default false).
    pub include_shims: bool,
    /// Re-read each stack's top after the walk to detect torn samples
    /// (default true; pointless while the target is paused).
    pub check_torn: bool,
}

impl Default for WalkOptions {
    fn default() -> Self {
        WalkOptions {
            max_depth: 4096,
            max_threads: 4096,
            include_shims: false,
            check_torn: true,
        }
    }
}

/// Why a sample could not be taken at all (individual broken stacks are
/// flagged, not errors).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WalkError {
    /// A read the walk cannot go on without failed.
    #[error(transparent)]
    Memory(#[from] crate::process::memory::MemoryError),
    /// The runtime's interpreter list is empty or unreadable garbage.
    #[error("no interpreter found in the target (is it finalizing?)")]
    NoInterpreter,
}
