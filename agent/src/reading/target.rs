//! An attached CPython process: discovery (through py-spy's library),
//! layout, samples, code objects and thread names.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::process::memory::{read_u64, LiveMemory, MemoryError, RemoteMemory};
use crate::process::pause::{Pause, PauseError, Tasks};
use crate::reading::cpython::code::{CodeFingerprint, CodeObject};
use crate::reading::cpython::objects::{ObjectError, ObjectReader};
use crate::reading::cpython::{
    debug_offsets, FrameKind, Layout, LayoutError, OffsetsSource, PythonVersion,
};
use crate::reading::walker::{
    sample_interpreters, CodeCheck, ThreadListCache, ThreadSample, WalkError, WalkOptions,
};

/// Advice printed with every permission error.
pub const PERMISSION_ADVICE: &str = "reading another process needs ptrace permission: run pydeep \
as root (sudo), or grant it CAP_SYS_PTRACE (`sudo setcap cap_sys_ptrace+ep $(which pydeep)`); \
with kernel.yama.ptrace_scope=1 only a parent may trace its child unless you have CAP_SYS_PTRACE \
(`sudo sysctl kernel.yama.ptrace_scope=0` relaxes it); in Docker, start the container with \
`docker run --cap-add SYS_PTRACE`";

/// Why attaching to a process failed. Each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// No process has this pid.
    #[error("no process with pid {pid}: check the pid (ps aux | grep python)")]
    NoSuchProcess {
        /// The pid asked for.
        pid: i32,
    },
    /// The kernel refused access.
    #[error("permission denied attaching to process {pid}: {advice}")]
    PermissionDenied {
        /// The pid asked for.
        pid: i32,
        /// What to do about it.
        advice: String,
    },
    /// No CPython interpreter could be found or read in the process: it is
    /// not Python, or it has only just started and its interpreter is not
    /// up yet (between fork and exec, or before `Py_Initialize`).
    #[error("process {pid} ({exe}) is not a Python process: no CPython interpreter found in its memory{}", reason_suffix(.reason))]
    NotPython {
        /// The pid asked for.
        pid: i32,
        /// Its executable.
        exe: String,
        /// What was tried and failed, when there is more to say than
        /// "not found" (empty otherwise).
        reason: String,
    },
    /// A CPython version pydeep cannot read.
    #[error("process {pid} runs CPython {version}, which pydeep does not support ({reason}); supported: 3.9 to 3.15")]
    UnsupportedVersion {
        /// The pid asked for.
        pid: i32,
        /// The version found.
        version: String,
        /// Why it is not supported.
        reason: String,
    },
    /// The process exited before or while pydeep attached.
    #[error(
        "process {pid} has exited (or exited while pydeep was attaching): nothing left to read"
    )]
    TargetExited {
        /// The pid asked for.
        pid: i32,
    },
}

/// ": REASON (a process that has only just started ...)" for a
/// [`AttachError::NotPython`] that says what failed.
fn reason_suffix(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!(
            " ({reason}; a Python that has only just started may not have its interpreter up yet: try again)"
        )
    }
}

/// Why a read of an attached process failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// A memory read failed.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// The walk could not start.
    #[error(transparent)]
    Walk(#[from] WalkError),
    /// An object could not be read.
    #[error(transparent)]
    Object(#[from] ObjectError),
    /// The process has exited.
    #[error("process {pid} has exited")]
    TargetExited {
        /// The target's pid.
        pid: i32,
    },
    /// Pausing the process failed.
    #[error("could not pause process {pid}: {detail}")]
    Pause {
        /// The target's pid.
        pid: i32,
        /// What went wrong.
        detail: String,
    },
}

/// Identifies a distinct code object: a code object freed and replaced by
/// another at the same address gets a new id, and so does every code object
/// read through a new [`Target`] (a re-attachment, or the new image after
/// an `exec`): ids are never reused within the agent, so nothing keyed by
/// one can name a code object of an image that is gone.
pub type CodeId = u64;

/// The next [`CodeId`] of any target of this agent.
static NEXT_CODE_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A [`CodeId`] no code object has had before.
fn fresh_code_id() -> CodeId {
    NEXT_CODE_ID.fetch_add(1, Ordering::Relaxed)
}

struct CachedCode {
    id: CodeId,
    code: CodeObject,
    fingerprint: CodeFingerprint,
    validated: u64,
    /// Call sites of this code already classified: (instruction offset,
    /// a call to a waiting function: [`crate::reading::blocking`]).
    blocking_sites: Vec<(u32, bool)>,
}

/// Keeps the target stopped while alive (for `--blocking` samples); see
/// [`crate::process::pause`]. Drop it (or [`PauseGuard::release`] it) on the thread
/// that made it: only that thread may let the target's threads go.
pub struct PauseGuard {
    pause: Option<Pause>,
    paused: Arc<PauseShared>,
}

/// What a [`Target`] and its [`PauseGuard`]s share: how many guards are
/// alive, and the threads the last sample taken while paused found
/// running, which are let go first (the others were waiting anyway).
#[derive(Default)]
struct PauseShared {
    depth: AtomicU32,
    running: Mutex<Vec<i32>>,
}

impl PauseShared {
    fn release(&self, pause: Pause) -> Duration {
        let running = std::mem::take(&mut *self.running.lock().unwrap_or_else(|e| e.into_inner()));
        let stopped = pause.release_first(&running);
        self.depth.fetch_sub(1, Ordering::SeqCst);
        stopped
    }
}

impl PauseGuard {
    /// Lets the target run again; returns how long it was stopped (from
    /// the first thread asked to stop to the last one let go).
    pub fn release(mut self) -> Duration {
        match self.pause.take() {
            Some(pause) => self.paused.release(pause),
            None => Duration::ZERO,
        }
    }

    /// Number of the target's threads stopped.
    pub fn stopped_threads(&self) -> usize {
        self.pause
            .as_ref()
            .map_or(0, |pause| pause.stopped_threads().count())
    }
}

impl Drop for PauseGuard {
    fn drop(&mut self) {
        if let Some(pause) = self.pause.take() {
            self.paused.release(pause);
        }
    }
}

/// glibc x86-64 keeps the kernel tid in `struct pthread` at this offset
/// (nptl/descr.h: after the 704-byte TCB header and a list head). Only
/// used on 3.9/3.10, whose thread states lack native_thread_id; a value is
/// accepted only if it names a thread of the target.
const GLIBC_PTHREAD_TID_OFFSET: u64 = 0x2d0;

/// An attached CPython process.
pub struct Target {
    pid: i32,
    memory: LiveMemory,
    layout: Layout,
    runtime_address: u64,
    options: WalkOptions,
    codes: crate::process::address_hash::AddressMap<u64, CachedCode>,
    generation: u64,
    paused: Arc<PauseShared>,
    stat_files: HashMap<u64, File>,
    tasks: Vec<u64>,
    /// The thread list, kept open for pauses.
    task_directory: Tasks,
    thread_lists: ThreadListCache,
    /// Bumped whenever a cached code object is dropped or replaced.
    code_epoch: u64,
}

/// Thread names read from `threading._active`, and the OS thread each
/// `Thread` object said it runs on ([`Target::named_threads`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ThreadNames {
    /// `Thread.name` by `thread_id` (`threading.get_ident()`).
    pub names: HashMap<u64, String>,
    /// `Thread.native_id` by `thread_id`, where it was set and readable.
    pub natives: HashMap<u64, u64>,
}

impl Target {
    /// Attaches to CPython process `pid`: finds the interpreter and its
    /// version (py-spy's library), then builds the layout. The target keeps
    /// running.
    ///
    /// Every failure is one of the documented kinds, whatever the moment:
    /// a process that has only just started (between fork and exec, or
    /// before its interpreter is up) is [`AttachError::NotPython`], never
    /// an unclassified error. A process that `exec`s while it is read is
    /// read again (up to [`ATTACH_READS`] times), since what was read mixes
    /// two program images.
    pub fn attach(pid: i32) -> Result<Target, AttachError> {
        let mut reads = 0;
        loop {
            let before = crate::process::lifecycle::Identity::of(pid);
            let result = Target::attach_image(pid);
            reads += 1;
            let execed = before.execed_into(&crate::process::lifecycle::Identity::of(pid));
            if !execed || reads >= ATTACH_READS {
                return result;
            }
        }
    }

    /// One attempt of [`Target::attach`], on the program image `pid` runs now.
    fn attach_image(pid: i32) -> Result<Target, AttachError> {
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() || pid <= 0 {
            return Err(AttachError::NoSuchProcess { pid });
        }
        // A zombie has exited (its memory is gone) but keeps its pid until
        // its parent reaps it: that is "exited", not "not Python".
        if !crate::process::procfs::is_alive(pid) {
            return Err(AttachError::TargetExited { pid });
        }
        let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "?".into());
        let process =
            remoteprocess::Process::new(pid).map_err(|e| classify(pid, &exe, &e.to_string()))?;
        let info = py_spy::python_process_info::PythonProcessInfo::new(&process)
            .map_err(|e| classify(pid, &exe, &format!("{e:#}")))?;
        let runtime = info.get_symbol("_PyRuntime").copied();
        let has_python = runtime.is_some()
            || info.get_symbol("Py_Version").is_some()
            || info.libpython_binary.is_some();
        let memory = LiveMemory::new(pid);
        // Probe access before anything else, so a permission problem is
        // reported as one rather than as "not Python".
        if let Some(address) = runtime {
            match read_u64(&memory, address) {
                Err(MemoryError::PermissionDenied { .. }) => {
                    return Err(AttachError::PermissionDenied {
                        pid,
                        advice: PERMISSION_ADVICE.into(),
                    })
                }
                Err(MemoryError::ProcessGone { .. }) => {
                    return Err(AttachError::TargetExited { pid })
                }
                _ => {}
            }
        }
        let found = match py_spy::python_process_info::get_python_version(&info, &process) {
            Ok(version) => version,
            Err(e) if !has_python => {
                let _ = e;
                return Err(AttachError::NotPython {
                    pid,
                    exe,
                    reason: String::new(),
                });
            }
            Err(e) => return Err(classify(pid, &exe, &format!("{e:#}"))),
        };
        let mut version = PythonVersion {
            major: found.major as u32,
            minor: found.minor as u32,
            patch: found.patch as u32,
            release: found.release_flags.clone(),
            free_threaded: false,
            debug_build: false,
        };
        let Some(semantics) = crate::reading::cpython::semantics_for(version.major, version.minor)
        else {
            return Err(AttachError::UnsupportedVersion {
                pid,
                version: version.to_string(),
                reason: if pydeep_cpython::older_than_supported(version.major, version.minor) {
                    "too old".into()
                } else {
                    "too new for this pydeep; upgrade pydeep".into()
                },
            });
        };
        let Some(runtime_address) = runtime else {
            return Err(AttachError::NotPython {
                pid,
                exe,
                reason: format!(
                    "CPython {version} found, but not its _PyRuntime symbol (a stripped binary?)"
                ),
            });
        };
        if matches!(semantics.offsets, OffsetsSource::DebugOffsets(_)) {
            // free_threaded is the third word of _Py_DebugOffsets.
            if let Ok(flag) = read_u64(&memory, runtime_address + 16) {
                let mut cookie = [0u8; 8];
                if memory.read(runtime_address, &mut cookie).is_ok()
                    && &cookie == debug_offsets::COOKIE
                {
                    version.free_threaded = flag == 1;
                }
            }
        }
        let layout = Layout::load(&version, &memory, runtime_address).map_err(|e| match e {
            LayoutError::Unsupported(_) => AttachError::UnsupportedVersion {
                pid,
                version: version.to_string(),
                reason: "no layout for it".into(),
            },
            LayoutError::FreeThreaded(_) => AttachError::UnsupportedVersion {
                pid,
                version: version.to_string(),
                reason:
                    "free-threaded builds are read from 3.13 on (through their _Py_DebugOffsets)"
                        .into(),
            },
            LayoutError::MissingField { .. } => AttachError::UnsupportedVersion {
                pid,
                version: version.to_string(),
                reason: e.to_string(),
            },
            // Read from the target before its interpreter wrote them (or
            // from a hostile one): no interpreter to be found.
            LayoutError::BadDebugOffsets { .. } => classify(pid, &exe, &e.to_string()),
        })?;
        Ok(Target {
            pid,
            memory,
            layout,
            runtime_address,
            options: WalkOptions::default(),
            codes: Default::default(),
            generation: 0,
            paused: Arc::new(PauseShared::default()),
            stat_files: HashMap::new(),
            tasks: Vec::new(),
            task_directory: Tasks::open(pid),
            thread_lists: ThreadListCache::default(),
            code_epoch: 0,
        })
    }

    /// The target's pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The target's CPython version.
    pub fn python_version(&self) -> PythonVersion {
        self.layout.version.clone()
    }

    /// The layout in use (offsets and per-version semantics).
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The target's memory (for readers built on this crate).
    pub fn memory(&self) -> &dyn RemoteMemory {
        &self.memory
    }

    /// Address of `_PyRuntime` in the target.
    pub fn runtime_address(&self) -> u64 {
        self.runtime_address
    }

    /// The walk options in force.
    pub fn walk_options(&self) -> WalkOptions {
        self.options
    }

    /// Walk options (depth limit, shims); see [`WalkOptions`].
    pub fn set_walk_options(&mut self, options: WalkOptions) {
        self.options = options;
    }

    /// Number of `process_vm_readv` calls made so far.
    pub fn read_calls(&self) -> u64 {
        self.memory.read_calls()
    }

    /// Bytes the `process_vm_readv` calls made so far asked for.
    pub fn read_bytes(&self) -> u64 {
        self.memory.read_bytes()
    }

    /// The frames of the thread `sample` was taken of, innermost first,
    /// at most `max_depth` of them: [`crate::reading::scopes::thread_frames`] over
    /// this target's memory and layout.
    pub fn thread_frames(
        &self,
        sample: &ThreadSample,
        max_depth: usize,
    ) -> Vec<crate::reading::scopes::FrameRef> {
        crate::reading::scopes::thread_frames(
            &self.memory,
            &self.layout,
            sample.thread_state,
            max_depth,
        )
    }

    /// Every thread's state (ids, GIL, activity) without its frames: for
    /// callers that read the frames themselves through a page cache while
    /// the target is paused (`pydeep dump`, snapshots), which the walker
    /// would otherwise read once more (on 3.9/3.10 one call per frame).
    pub fn sample_threads_without_frames(
        &mut self,
        out: &mut Vec<ThreadSample>,
    ) -> Result<(), ReadError> {
        let walk = self.options;
        self.options.max_depth = 0;
        let sampled = self.sample_threads(out);
        self.options = walk;
        sampled
    }

    /// Samples every thread of every interpreter into `out` (cleared
    /// first). While a [`PauseGuard`] is alive the torn-read check is
    /// skipped, since nothing can change. In four steps: walk every
    /// stack, checking cached code objects in the same batches; mark the
    /// main thread and the active ones; keep or forget the code objects
    /// checked; flag idle a thread running at a waiting call.
    pub fn sample_threads(&mut self, out: &mut Vec<ThreadSample>) -> Result<(), ReadError> {
        self.generation += 1;
        let checked = self.walk_threads(out)?;
        self.mark_active(out);
        self.revalidate_checked(checked);
        self.idle_at_waiting_calls(out);
        Ok(())
    }

    /// Step 1 of [`Target::sample_threads`]: every thread's stack, by the
    /// walker, with the fingerprints of the cached code objects it names
    /// read in the same batches. Returns those fingerprints, and whether
    /// they were read.
    fn walk_threads(
        &mut self,
        out: &mut Vec<ThreadSample>,
    ) -> Result<(Vec<(u64, CodeFingerprint)>, bool), ReadError> {
        let mut options = self.options;
        options.check_torn = options.check_torn && self.paused.depth.load(Ordering::SeqCst) == 0;
        let reader = ObjectReader::new(&self.memory, &self.layout);
        let codes = &self.codes;
        let generation = self.generation;
        let needs_check = |address: u64| {
            codes
                .get(&address)
                .is_some_and(|c| c.validated != generation)
        };
        let frame_size = |address: u64| codes.get(&address).and_then(|c| c.code.frame_size);
        let mut code_check = CodeCheck::new(&needs_check, reader.code_fingerprint_len())
            .with_frame_sizes(&frame_size);
        let result = sample_interpreters(
            &self.memory,
            &self.layout,
            self.runtime_address,
            &options,
            &mut self.thread_lists,
            &mut code_check,
            out,
        );
        let checked: Vec<(u64, CodeFingerprint)> = code_check
            .pieces
            .iter()
            .map(|(address, bytes)| (*address, reader.code_fingerprint(bytes)))
            .collect();
        if let Err(e) = result {
            if !std::path::Path::new(&format!("/proc/{}", self.pid)).exists() {
                return Err(ReadError::TargetExited { pid: self.pid });
            }
            return Err(e.into());
        }
        Ok((checked, code_check.ok))
    }

    /// Step 2: which thread is the main one, and which threads run.
    fn mark_active(&mut self, out: &mut [ThreadSample]) {
        for thread in out.iter_mut() {
            if thread.native_id == 0 && self.layout.semantics.frame_kind == FrameKind::FrameObject {
                thread.native_id = self.native_id_from_pthread(thread.thread_id);
            }
            thread.is_main = thread.interpreter == 0 && thread.native_id == self.pid as u64;
            thread.active = if self.paused.depth.load(Ordering::SeqCst) > 0 {
                stopped_thread_was_running(self.pid, thread.native_id)
            } else if thread.holds_gil {
                // The GIL holder runs Python code or a C call made from it
                // (blocking calls release the GIL: Py_BEGIN_ALLOW_THREADS),
                // so it is running or runnable, state R. This skips the
                // /proc read (~3 us, a fifth of a sample's cost) for the
                // thread doing the work; the others are asked.
                true
            } else {
                self.thread_running(thread.native_id)
            };
        }
        if self.paused.depth.load(Ordering::SeqCst) > 0 {
            let mut running = self
                .paused
                .running
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            running.clear();
            running.extend(
                out.iter()
                    .filter(|t| t.active && t.native_id != 0)
                    .map(|t| t.native_id as i32),
            );
        }
    }

    /// Step 3: the cached code objects whose fingerprints the walk read
    /// (`checked`, and whether they were read) are valid for this sample,
    /// or forgotten if another object took the address.
    fn revalidate_checked(&mut self, (checked, checked_ok): (Vec<(u64, CodeFingerprint)>, bool)) {
        for (address, fingerprint) in checked {
            let still = checked_ok
                && self
                    .codes
                    .get(&address)
                    .is_some_and(|c| c.fingerprint == fingerprint);
            match self.codes.get_mut(&address) {
                Some(entry) if still => entry.validated = self.generation,
                _ => {
                    self.codes.remove(&address);
                    self.code_epoch += 1;
                }
            }
        }
    }

    /// Step 4 (read running): a thread running without the GIL (state R)
    /// while stopped at a call to a waiting function is idle: woken from
    /// the wait but not yet run, or back from it and not yet holding the
    /// GIL. The kernel cannot tell that from computing without the GIL;
    /// the call site can (blocking.rs). Only such threads pay for the
    /// lookup, once per call site (after step 3, so the code object is
    /// known valid: no read).
    fn idle_at_waiting_calls(&mut self, out: &mut [ThreadSample]) {
        if self.paused.depth.load(Ordering::SeqCst) != 0 {
            return;
        }
        for thread in out.iter_mut() {
            if thread.active && !thread.holds_gil {
                if let Some(top) = thread.frames.first().copied() {
                    if self.blocking_call_at(top.code_address, top.instruction_offset) {
                        thread.active = false;
                    }
                }
            }
        }
    }

    /// The code object at `address`, read once and cached. A cached entry
    /// not validated in the current sample is checked against the target
    /// first, so a recycled address yields a new [`CodeId`].
    pub fn code_object(&mut self, address: u64) -> Result<(CodeId, &CodeObject), ReadError> {
        let reader = ObjectReader::new(&self.memory, &self.layout);
        let fresh = match self.codes.get(&address) {
            Some(entry) if entry.validated == self.generation => false,
            Some(entry) => {
                let mut header = vec![0u8; reader.code_fingerprint_len()];
                self.memory.read(address, &mut header)?;
                reader.code_fingerprint(&header) != entry.fingerprint
            }
            None => true,
        };
        if fresh {
            if self.codes.contains_key(&address) {
                self.code_epoch += 1;
            }
            let (code, fingerprint) = reader.code_object(address)?;
            let id = fresh_code_id();
            self.codes.insert(
                address,
                CachedCode {
                    id,
                    code,
                    fingerprint,
                    validated: self.generation,
                    blocking_sites: Vec::new(),
                },
            );
        }
        let entry = self.codes.get_mut(&address).expect("just inserted");
        entry.validated = self.generation;
        Ok((entry.id, &entry.code))
    }

    /// Takes code objects whose header was read at `fingerprints` (in a
    /// snapshot's pause, after this generation's sample) as read now: a
    /// cached one whose fingerprint matches is valid for this generation,
    /// one that does not match is forgotten (another object took its
    /// address). [`Target::code_object`] then serves the snapshot's frames
    /// without reading the target again, which may have ended meanwhile.
    pub fn revalidate_codes(&mut self, fingerprints: &[(u64, CodeFingerprint)]) {
        for (address, fingerprint) in fingerprints {
            match self.codes.get_mut(address) {
                Some(entry) if entry.fingerprint == *fingerprint => {
                    entry.validated = self.generation;
                }
                Some(_) => {
                    self.codes.remove(address);
                    self.code_epoch += 1;
                }
                None => {}
            }
        }
    }

    /// A counter that changes whenever the code object cached for some
    /// address is dropped or replaced (a freed code object whose address was
    /// reused): while it stays the same, every address keeps its [`CodeId`].
    pub fn code_epoch(&self) -> u64 {
        self.code_epoch
    }

    /// Names of the target's threads as `threading` knows them, by
    /// `thread_id` (`threading.get_ident()`), read from `threading._active`.
    /// Empty if `threading` was never imported.
    pub fn thread_names(&mut self) -> Result<HashMap<u64, String>, ReadError> {
        let registries = self.thread_registries(&self.memory)?;
        self.thread_names_in(&self.memory, &registries)
    }

    /// The thread names by `thread_id`, with the OS thread each `Thread`
    /// object says it runs on: an ident (a `pthread_t`) is reused by the
    /// next thread once one ends, so a name read for an ident belongs to a
    /// sampled thread only if their native ids agree.
    pub fn named_threads(&mut self) -> Result<ThreadNames, ReadError> {
        let registries = self.thread_registries(&self.memory)?;
        self.named_threads_in(&self.memory, &registries, true)
    }

    /// The `threading._active` dict of every interpreter that imported
    /// `threading`. Each is bound once, when `threading` is imported, and
    /// only changed in place after (Lib/threading.py), so a caller about to
    /// pause the target finds them first, while it runs, and reads only
    /// their contents while it is paused ([`Target::thread_names_in`]):
    /// finding them reads every key of `sys.modules`, hundreds of strings
    /// on as many pages.
    pub fn thread_registries(&self, memory: &dyn RemoteMemory) -> Result<Vec<u64>, ReadError> {
        let reader = ObjectReader::new(memory, &self.layout);
        let o = &self.layout.offsets;
        let mut registries = Vec::new();
        let (Some(head_at), Some(modules_at), Some(dict_at)) = (
            o.runtime_interpreters_head,
            o.interpreter_modules,
            o.module_md_dict,
        ) else {
            return Ok(registries);
        };
        let mut interpreter = read_u64(memory, self.runtime_address + head_at)?;
        let mut seen = 0;
        while interpreter != 0 && seen < 256 {
            seen += 1;
            let modules = read_u64(memory, interpreter.wrapping_add(modules_at))?;
            if modules != 0 {
                if let Some(threading) = reader.dict_get_str(modules, "threading")? {
                    let globals = read_u64(memory, threading.wrapping_add(dict_at))?;
                    if let Some(active) = reader.dict_get_str(globals, "_active")? {
                        registries.push(active);
                    }
                }
            }
            interpreter = match o.interpreter_next {
                Some(at) => read_u64(memory, interpreter.wrapping_add(at))?,
                None => 0,
            };
        }
        Ok(registries)
    }

    /// Names of the target's threads by `thread_id` from the
    /// `threading._active` dicts `registries` ([`Target::thread_registries`]),
    /// read through `memory` (a page cache over [`Target::memory`] while the
    /// target is paused). A registry that is no longer a dict is skipped.
    pub fn thread_names_in(
        &self,
        memory: &dyn RemoteMemory,
        registries: &[u64],
    ) -> Result<HashMap<u64, String>, ReadError> {
        Ok(self.named_threads_in(memory, registries, false)?.names)
    }

    /// [`Target::thread_names_in`], and each `Thread`'s `_native_id` when
    /// `with_natives` (a read or two more per thread: only the sampler,
    /// which must tell a reused ident's new thread apart, asks).
    fn named_threads_in(
        &self,
        memory: &dyn RemoteMemory,
        registries: &[u64],
        with_natives: bool,
    ) -> Result<ThreadNames, ReadError> {
        let reader = ObjectReader::new(memory, &self.layout);
        let mut names = HashMap::new();
        let mut natives = HashMap::new();
        for &active in registries {
            let is_dict = reader
                .type_of(active)
                .and_then(|t| reader.type_name(t))
                .is_ok_and(|name| name == "dict");
            if !is_dict {
                continue;
            }
            for (ident, thread) in reader.dict_items(active)? {
                let Ok(ident) = reader.int(ident) else {
                    continue;
                };
                if let Ok(Some(name)) = reader.instance_attribute(thread, "_name") {
                    if let Ok(name) = reader.unicode(name) {
                        names.insert(ident as u64, name);
                    }
                }
                // None until the thread has started (Lib/threading.py
                // `_set_native_id`).
                if !with_natives {
                    continue;
                }
                if let Ok(Some(native)) = reader.instance_attribute(thread, "_native_id") {
                    if let Ok(native) = u64::try_from(reader.int(native).unwrap_or(-1)) {
                        natives.insert(ident as u64, native);
                    }
                }
            }
        }
        Ok(ThreadNames { names, natives })
    }

    /// The text of a source file as the target names it (`co_filename`),
    /// read through `/proc/PID/root` (so paths inside a container resolve)
    /// and, for relative paths, the target's working directory, and only if
    /// the target's own user could read it ([`crate::process::source_access`]).
    /// `None` for pseudo-files like `<string>` or unreadable files; files
    /// over `limit` bytes are refused.
    pub fn source_file(&self, filename: &str, limit: u64) -> Option<Vec<u8>> {
        if filename.is_empty() || filename.starts_with('<') {
            return None;
        }
        crate::process::source_access::read_as_target(self.pid, filename)
            .ok()
            .filter(|content| content.len() as u64 <= limit)
    }

    /// Stops every thread of the target until the guard is dropped (see
    /// [`crate::process::pause`] for how, and for keeping the stop short).
    ///
    /// A stopped thread's kernel state is `t` (traced), so samples taken
    /// while paused judge activity from the system call it was stopped in
    /// instead: a thread stopped in user mode or in a non-blocking system
    /// call was running; one stopped inside a blocking call (futex, poll,
    /// sleep, read, ...) was idle.
    pub fn pause(&self) -> Result<PauseGuard, ReadError> {
        let pause = Pause::stop(self.pid, &self.task_directory).map_err(|e| match e {
            PauseError::Exited { pid } => ReadError::TargetExited { pid },
            PauseError::PermissionDenied { .. } => ReadError::Pause {
                pid: self.pid,
                detail: format!("{e}; {PERMISSION_ADVICE}"),
            },
            other => ReadError::Pause {
                pid: self.pid,
                detail: other.to_string(),
            },
        })?;
        self.paused.depth.fetch_add(1, Ordering::SeqCst);
        Ok(PauseGuard {
            pause: Some(pause),
            paused: self.paused.clone(),
        })
    }

    /// The kernel tid of a 3.9/3.10 thread, read from glibc's `struct
    /// pthread` (the pthread id is its address).
    fn native_id_from_pthread(&mut self, pthread: u64) -> u64 {
        let mut tid = [0u8; 4];
        if pthread == 0
            || self
                .memory
                .read(pthread.wrapping_add(GLIBC_PTHREAD_TID_OFFSET), &mut tid)
                .is_err()
        {
            return 0;
        }
        let tid = u64::from(u32::from_le_bytes(tid));
        if !self.tasks.contains(&tid) {
            self.tasks = list_tasks(self.pid);
        }
        if self.tasks.contains(&tid) {
            tid
        } else {
            0
        }
    }

    /// True if the frame of the code object at `code` stopped at
    /// `offset` is calling a waiting function ([`crate::reading::blocking`]);
    /// remembered per call site.
    fn blocking_call_at(&mut self, code: u64, offset: u32) -> bool {
        let version = (self.layout.version.major, self.layout.version.minor);
        if self.code_object(code).is_err() {
            return false;
        }
        let Some(entry) = self.codes.get_mut(&code) else {
            return false;
        };
        if let Some(&(_, blocks)) = entry.blocking_sites.iter().find(|(at, _)| *at == offset) {
            return blocks;
        }
        let blocks = crate::reading::blocking::blocks_at(&entry.code, version, offset);
        // Bounded: a code object has as many call sites as its bytecode.
        if entry.blocking_sites.len() < 4096 {
            entry.blocking_sites.push((offset, blocks));
        }
        blocks
    }

    /// True if the kernel reports thread `tid` running (state `R`).
    fn thread_running(&mut self, tid: u64) -> bool {
        if tid == 0 {
            return false;
        }
        let pid = self.pid;
        let file = match self.stat_files.entry(tid) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                match File::open(format!("/proc/{pid}/task/{tid}/stat")) {
                    Ok(f) => e.insert(f),
                    Err(_) => return false,
                }
            }
        };
        match stat_state(file) {
            Some(state) => state == b'R',
            None => {
                // The thread is gone; reopen if the tid comes back.
                self.stat_files.remove(&tid);
                false
            }
        }
    }
}

/// For a thread stopped by our pause: true if it was running (stopped in
/// user mode or a non-blocking system call). Asks ptrace for the call it
/// was stopped in ([`crate::process::pause::stopped_thread_was_running`]), else
/// reads `/proc/PID/task/TID/syscall` ("-1 sp pc" in user mode, "NR
/// args..." inside a call; "running" if it is not stopped).
fn stopped_thread_was_running(pid: i32, tid: u64) -> bool {
    if let Some(running) = crate::process::pause::stopped_thread_was_running(tid as i32) {
        return running;
    }
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall")) else {
        return false;
    };
    match text.split_whitespace().next() {
        Some("running") => true,
        Some(number) => number
            .parse::<i64>()
            .map(crate::process::pause::syscall_was_running)
            .unwrap_or(false),
        None => false,
    }
}

/// The state letter of a `/proc/.../stat` file (`R` running or runnable,
/// `S` sleeping, ...), `None` if unreadable.
fn stat_state(file: &File) -> Option<u8> {
    let mut buf = [0u8; 512];
    let n = file.read_at(&mut buf, 0).ok()?;
    // "pid (comm) S ...": the state follows the last ')'.
    let text = &buf[..n];
    let close = text.iter().rposition(|&b| b == b')')?;
    text.get(close + 2).copied()
}

fn list_tasks(pid: i32) -> Vec<u64> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Most reads of a process by [`Target::attach`] when it keeps `exec`ing.
const ATTACH_READS: u32 = 3;

/// The documented kind of an attach failure that py-spy's library (or the
/// layout) reported as `message`: the process is gone or a zombie
/// (exited), access was refused (permission), or else no interpreter
/// could be found in it (not Python, or not Python yet). A version counts
/// as unsupported only once one was read, never from a message: a
/// 3.9 or 3.10 that has not initialised its `sys.version` yet says
/// "Failed to find python version", which is "not Python yet".
fn classify(pid: i32, exe: &str, message: &str) -> AttachError {
    let lower = message.to_lowercase();
    if !std::path::Path::new(&format!("/proc/{pid}")).exists()
        || !crate::process::procfs::is_alive(pid)
    {
        AttachError::TargetExited { pid }
    } else if lower.contains("permission denied") || lower.contains("operation not permitted") {
        AttachError::PermissionDenied {
            pid,
            advice: PERMISSION_ADVICE.into(),
        }
    } else {
        AttachError::NotPython {
            pid,
            exe: exe.into(),
            reason: message.lines().next().unwrap_or_default().into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>() {}

    #[test]
    fn a_target_and_its_pause_guard_can_move_to_a_sampler_thread() {
        assert_send::<Target>();
        assert_send::<PauseGuard>();
    }
}
