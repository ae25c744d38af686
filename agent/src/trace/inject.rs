//! Loading the tracer into a running process and starting it, by ptrace,
//! without gdb and without a file on the target's disk (x86_64 Linux).
//!
//! 1. Every thread is seized (`PTRACE_SEIZE` with `PTRACE_O_TRACECLONE`, so
//!    threads started meanwhile are traced too) and keeps running.
//! 2. An `int3` goes on the entry of interpreter functions only ever called
//!    with the GIL held and never from inside libc ([`SAFE_POINTS`]). The
//!    first thread to hit one is the thread the library is loaded on; every
//!    `int3` is removed at once, and threads that hit one meanwhile are
//!    wound back one byte and resumed, as if nothing happened.
//! 3. On that thread, saving its registers (general and the whole XSAVE
//!    area) and errno: `memfd_create`, the library's bytes written into the
//!    memfd from here through `/proc/PID/fd/N`, `dlopen("/proc/self/fd/N")`,
//!    `close`, then the tracer's start function. Each call returns to
//!    address 0, so the thread stops with SIGSEGV at rip 0, which is caught
//!    here and never delivered. A signal that arrives for the thread
//!    meanwhile is held back and delivered at detach, at the original point.
//! 4. Registers and errno are put back exactly, every thread is detached.
//!
//! `record --trace` loads it earlier, into the program it starts:
//! [`start_at_main`], at `Py_RunMain`, before the program's first line.
//!
//! notes/tracing.md explains why these points are safe and what is not.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::abi;
use super::elf;

/// The tracer library, built from `tracer/` by the agent's build script.
pub static TRACER_LIBRARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/libpydeep_tracer.so"));

/// The name of the memfd the library is loaded from (how a second window
/// finds it in /proc/PID/maps); the PEP 768 script uses it too.
pub use super::remote_exec::MEMFD_NAME;

/// Interpreter functions at whose entry a thread is not inside libc (no
/// malloc, loader or stdio lock of its own), so calling `dlopen` and
/// `pthread_create` on it is safe, and which running Python code calls
/// often: the object allocator (most object creations and deallocations),
/// the GIL's release and re-acquisition around every blocking call
/// (`time.sleep`, I/O, lock waits, and every switch interval), and the
/// frame evaluator (every call from C into Python). On 3.11+ a loop of
/// pure Python calls on small ints may go a long time without any of them
/// (calls are inlined in the eval loop, small ints and frames are not
/// allocated); it always reaches one at its next sleep, I/O or allocation.
pub const SAFE_POINTS: &[&str] = &[
    "PyObject_Malloc",
    "PyObject_Free",
    "PyEval_SaveThread",
    "PyEval_RestoreThread",
    "_PyEval_EvalFrameDefault",
];

/// Why loading the tracer failed.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    /// No thread reached a safe point in time.
    #[error("no thread of process {pid} ran Python code within {waited:?}: every thread is blocked (sleeping, waiting for I/O or a lock), and tracing can start only on a thread that runs Python; retry while the program is busy, or raise --start-timeout")]
    NoSafePoint {
        /// The target.
        pid: i32,
        /// How long pydeep waited.
        waited: Duration,
    },
    /// ptrace was refused.
    #[error("ptrace of process {pid} was refused ({source}); run pydeep as the target's user with ptrace allowed (kernel.yama.ptrace_scope, CAP_SYS_PTRACE, or --cap-add=SYS_PTRACE in a container)")]
    Permission {
        /// The target.
        pid: i32,
        /// The errno.
        source: std::io::Error,
    },
    /// The target exited while the tracer was loaded.
    #[error("process {0} exited while the tracer was being loaded")]
    Exited(i32),
    /// Something the injection needs is missing or failed.
    #[error("{0}")]
    Other(String),
    /// 3.14+: the start through PEP 768 failed.
    #[error(transparent)]
    RemoteExec(#[from] super::remote_exec::RemoteExecError),
}

fn other(message: impl Into<String>) -> InjectError {
    InjectError::Other(message.into())
}

/// One line of /proc/PID/maps.
#[derive(Debug, Clone)]
pub struct Mapping {
    /// Start address.
    pub start: u64,
    /// File offset.
    pub offset: u64,
    /// Path (may end in " (deleted)"), empty for anonymous memory.
    pub path: String,
}

/// The mappings of `pid`.
pub fn maps(pid: i32) -> Result<Vec<Mapping>, InjectError> {
    let text = fs::read_to_string(format!("/proc/{pid}/maps"))
        .map_err(|e| other(format!("cannot read /proc/{pid}/maps: {e}")))?;
    let mut out = Vec::new();
    for line in text.lines().take(1_000_000) {
        let mut parts = line.splitn(6, ' ');
        let range = parts.next().unwrap_or("");
        let _perms = parts.next();
        let offset = parts.next().unwrap_or("0");
        let _dev = parts.next();
        let _inode = parts.next();
        let path = parts.next().unwrap_or("").trim_start().to_owned();
        let start = range.split('-').next().unwrap_or("0");
        let (Ok(start), Ok(offset)) = (
            u64::from_str_radix(start, 16),
            u64::from_str_radix(offset, 16),
        ) else {
            continue;
        };
        out.push(Mapping {
            start,
            offset,
            path,
        });
    }
    Ok(out)
}

/// Where a file mapped into `pid` is loaded and what it exports.
struct Module {
    bias: u64,
    symbols: elf::Symbols,
}

impl Module {
    fn address(&self, name: &str) -> Option<u64> {
        self.symbols
            .values
            .get(name)
            .map(|v| v.wrapping_add(self.bias))
    }
}

/// Most bytes read of one of the target's files.
const MAX_FILE: u64 = 512 << 20;

/// Reads the module mapped from `path` in `pid` (through the target's own
/// root, so a container's files are the container's).
fn module(pid: i32, mappings: &[Mapping], path: &str) -> Result<Module, InjectError> {
    let start = mappings
        .iter()
        .filter(|m| m.path == path && m.offset == 0)
        .map(|m| m.start)
        .min()
        .ok_or_else(|| other(format!("{path} has no mapping at offset 0")))?;
    let file = PathBuf::from(format!("/proc/{pid}/root{path}"));
    let size = fs::metadata(&file)
        .map_err(|e| other(format!("cannot read {}: {e}", file.display())))?
        .len();
    if size > MAX_FILE {
        return Err(other(format!("{path} is larger than {MAX_FILE} bytes")));
    }
    let data = fs::File::open(&file)
        .and_then(|f| elf::read_dynamic(&f, size))
        .map_err(|e| other(format!("cannot read {}: {e}", file.display())))?;
    let symbols = elf::symbols(&data).map_err(|e| other(format!("{path}: {e}")))?;
    Ok(Module {
        bias: start.wrapping_sub(symbols.first_load_vaddr),
        symbols,
    })
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The tracer as loaded in the target.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// Address of the control block.
    pub control: u64,
    /// The library was already loaded by an earlier window.
    pub reused: bool,
    /// What the start function returned (0: started).
    pub start_result: i32,
    /// The function and thread the library was loaded at.
    pub safe_point: String,
    /// How long each phase took, in order (notes/tracing.md, "Opening a
    /// window while sampling").
    pub phases: Vec<(&'static str, Duration)>,
}

/// The phases of a start timed one after another, each from the end of
/// the one before: [`load_and_start`] and the PEP 768 start
/// ([`super::remote_exec::run`]) time theirs alike, for
/// [`Loaded::phases`].
#[derive(Debug)]
pub struct Phases {
    since: Instant,
    ended: Vec<(&'static str, Duration)>,
}

impl Phases {
    /// The first phase starts now.
    pub fn start() -> Phases {
        Phases {
            since: Instant::now(),
            ended: Vec::new(),
        }
    }

    /// Phase `name` ends now; the next starts.
    pub fn end(&mut self, name: &'static str) {
        self.end_at(name, Instant::now());
    }

    /// Phase `name` ended at `at`; the next started then.
    pub fn end_at(&mut self, name: &'static str, at: Instant) {
        self.ended.push((name, at - self.since));
        self.since = at;
    }

    /// Each phase and how long it took, in order.
    pub fn into_vec(self) -> Vec<(&'static str, Duration)> {
        self.ended
    }
}

/// The embedded tracer's own symbols, read once.
fn tracer_symbols() -> Option<&'static elf::Symbols> {
    static SYMBOLS: std::sync::OnceLock<Option<elf::Symbols>> = std::sync::OnceLock::new();
    SYMBOLS
        .get_or_init(|| elf::symbols(TRACER_LIBRARY).ok())
        .as_ref()
}

/// The control block of a tracer an earlier window loaded, if any.
pub fn loaded_control(mappings: &[Mapping]) -> Option<u64> {
    let tracer = tracer_symbols()?;
    let offset = tracer.values.get(abi::CONTROL_SYMBOL)?;
    let prefix = format!("/memfd:{MEMFD_NAME}");
    let start = mappings
        .iter()
        .filter(|m| m.path.starts_with(&prefix) && m.offset == 0)
        .map(|m| m.start)
        .next_back()?;
    Some(
        start
            .wrapping_add(*offset)
            .wrapping_sub(tracer.first_load_vaddr),
    )
}

/// The start function of the tracer whose control block is at `control`
/// in the target (one loaded just now, or by an earlier window: both
/// symbols lie in the same library, a fixed distance apart).
pub fn start_function(control: u64) -> Result<u64, InjectError> {
    let tracer =
        tracer_symbols().ok_or_else(|| other("the embedded tracer is not a readable ELF file"))?;
    let (Some(start), Some(control_value)) = (
        tracer.values.get(abi::START_SYMBOL),
        tracer.values.get(abi::CONTROL_SYMBOL),
    ) else {
        return Err(other("the embedded tracer lacks its exported symbols"));
    };
    Ok(control.wrapping_sub(*control_value).wrapping_add(*start))
}

/// Loads the tracer into `pid` (unless `reuse_control` names one an
/// earlier window loaded) and calls its start function with `agent_pid`
/// and `flags`, waiting at most `timeout` for a thread at a safe point.
pub fn load_and_start(
    pid: i32,
    agent_pid: u32,
    flags: u32,
    timeout: Duration,
    reuse_control: Option<u64>,
) -> Result<Loaded, InjectError> {
    let mut phases = Phases::start();
    let (functions, python, python_path) = target_modules(pid)?;
    phases.end("reading the symbols of libc and the interpreter");
    let safe_points: Vec<(String, u64)> = SAFE_POINTS
        .iter()
        .filter_map(|name| python.address(name).map(|a| (name.to_string(), a)))
        .collect();
    if safe_points.is_empty() {
        return Err(other(format!(
            "{python_path} exports none of {SAFE_POINTS:?}: not a CPython this tracer knows"
        )));
    }
    let mut session = Session::seize(pid)?;
    phases.end("seizing every thread");
    let mut hit = None;
    let outcome = session.run(&safe_points, timeout, |thread| {
        hit = Some(Instant::now());
        inject(thread, pid, &functions, agent_pid, flags, reuse_control)
    });
    if let Some(hit) = hit {
        phases.end_at("waiting for a thread at a safe point", hit);
    }
    phases.end("loading and starting the tracer");
    let detached = session.detach_all();
    phases.end("detaching");
    let (loaded, safe_point) = outcome?;
    detached?;
    Ok(Loaded {
        safe_point,
        phases: phases.into_vec(),
        ..loaded
    })
}

/// The libc functions the injection calls, and the interpreter's module
/// (libpython, or the executable of a static build) with its path.
fn target_modules(pid: i32) -> Result<(Functions, Module, String), InjectError> {
    let mappings = maps(pid)?;
    let libc_path = mappings
        .iter()
        .map(|m| m.path.as_str())
        .find(|p| {
            let name = file_name(p);
            name.starts_with("libc.so") || (name.starts_with("libc-") && name.ends_with(".so"))
        })
        .ok_or_else(|| {
            other(format!(
                "process {pid} has no libc mapped (a static or non-glibc program)"
            ))
        })?
        .to_owned();
    let libc = module(pid, &mappings, &libc_path)?;
    let libc_fn = |name: &str| {
        libc.address(name).ok_or_else(|| {
            other(format!(
                "the target's libc ({libc_path}) exports no {name}: pydeep trace needs glibc 2.34 or later"
            ))
        })
    };
    let functions = Functions {
        errno_location: libc_fn("__errno_location")?,
        memfd_create: libc_fn("memfd_create")?,
        dlopen: libc_fn("dlopen")?,
        dlerror: libc_fn("dlerror")?,
        dlclose: libc_fn("dlclose")?,
        fcntl: libc_fn("fcntl")?,
        close: libc_fn("close")?,
    };
    // The interpreter: libpython if there is one, else the executable.
    let python_path = mappings
        .iter()
        .map(|m| m.path.as_str())
        .find(|p| file_name(p).starts_with("libpython3"))
        .map(str::to_owned)
        .or_else(|| crate::process::procfs::executable(pid).map(|p| p.display().to_string()))
        .ok_or_else(|| other(format!("cannot find the interpreter of process {pid}")))?;
    let python = module(pid, &mappings, &python_path)?;
    Ok((functions, python, python_path))
}

/// The program's entry point (`AT_ENTRY` of its auxiliary vector).
fn entry_point(pid: i32) -> Option<u64> {
    let auxv = fs::read(format!("/proc/{pid}/auxv")).ok()?;
    auxv.chunks_exact(16).take(4096).find_map(|pair| {
        let key = u64::from_le_bytes(pair[..8].try_into().ok()?);
        let value = u64::from_le_bytes(pair[8..].try_into().ok()?);
        (key == libc::AT_ENTRY).then_some(value)
    })
}

/// `record --trace`: loads the tracer into the program `record` just
/// started, before its first line. The program was started with
/// `PTRACE_TRACEME` by the calling thread, so it stops at its `execve`
/// before any of its code ran. Then:
///
/// 1. it is detached with a SIGSTOP (it stays stopped), seized like any
///    target (`PTRACE_SEIZE`, `PTRACE_O_TRACECLONE`), and continued;
/// 2. a breakpoint on its entry point (`AT_ENTRY`): the loader has mapped
///    libc and libpython by then;
/// 3. a breakpoint on `Py_RunMain`, which `python` calls once the
///    interpreter is initialised and before the program's `-c`, `-m` or
///    script runs. The thread holds the GIL there and is at a function
///    boundary with no frame of the interpreter's on its stack: the tracer
///    is loaded and started as at any safe point, then the thread releases
///    the GIL (`PyEval_SaveThread`) until the watchdog has installed the
///    hooks (state past STARTING, at most `timeout`), and takes it back
///    (`PyEval_RestoreThread`);
/// 4. registers and errno restored, every thread detached.
///
/// On any failure (a program that is not a CPython with `Py_RunMain`, a
/// free-threaded one, no call within `timeout`) the program is detached
/// and runs on untouched; `record` then opens the window the usual way.
pub fn start_at_main(
    pid: i32,
    agent_pid: u32,
    flags: u32,
    timeout: Duration,
) -> Result<Loaded, InjectError> {
    let started = Instant::now();
    let tracer = fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("TracerPid:"))
                .and_then(|v| v.trim().parse::<u32>().ok())
        });
    if tracer != Some(std::process::id()) {
        return Err(other(format!(
            "process {pid} is not traced by pydeep (PTRACE_TRACEME refused)"
        )));
    }
    // 1. The exec stop (SIGTRAP) of the child that asked to be traced.
    let until = Instant::now() + Duration::from_secs(2);
    loop {
        let mut status = 0;
        // SAFETY: an out-pointer to an int.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG | WALL) };
        if r == pid {
            if libc::WIFSTOPPED(status) {
                break;
            }
            return Err(InjectError::Exited(pid));
        }
        if r < 0 || Instant::now() >= until {
            return Err(other(format!(
                "process {pid} did not stop at its exec (not traced by pydeep)"
            )));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    // SAFETY: plain ptrace request on our stopped tracee.
    unsafe { libc::ptrace(libc::PTRACE_DETACH, pid, 0, libc::SIGSTOP as libc::c_ulong) };
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let mut status = 0;
        // SAFETY: an out-pointer to an int.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG | libc::WUNTRACED | WALL) };
        if r == pid {
            if libc::WIFSTOPPED(status) {
                break;
            }
            return Err(InjectError::Exited(pid));
        }
        if r < 0 || Instant::now() >= until {
            // SAFETY: kill on our own child.
            unsafe { libc::kill(pid, libc::SIGCONT) };
            return Err(other(format!("process {pid} did not stop")));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut session = match Session::seize(pid) {
        Ok(session) => session,
        Err(error) => {
            // SAFETY: kill on our own child.
            unsafe { libc::kill(pid, libc::SIGCONT) };
            return Err(error);
        }
    };
    // SAFETY: kill on our own child: it runs on, traced.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let outcome = (|| {
        let entry = entry_point(pid).ok_or_else(|| other("no entry point in /proc/PID/auxv"))?;
        session.run(
            &[("the program's entry".to_string(), entry)],
            timeout,
            |_| Ok(()),
        )?;
        let (functions, python, python_path) = target_modules(pid)?;
        if python.address("_Py_DecRefShared").is_some() {
            return Err(other(format!("{python_path} is a free-threaded CPython")));
        }
        let (Some(main), Some(save), Some(restore)) = (
            python.address("Py_RunMain"),
            python.address("PyEval_SaveThread"),
            python.address("PyEval_RestoreThread"),
        ) else {
            return Err(other(format!(
                "{python_path} is not a CPython with Py_RunMain"
            )));
        };
        session.run(&[("Py_RunMain".to_string(), main)], timeout, |thread| {
            inject_and_wait(
                thread,
                pid,
                &functions,
                agent_pid,
                flags,
                None,
                Some((save, restore, timeout)),
            )
        })
    })();
    let detached = session.detach_all();
    let (loaded, safe_point) = outcome?;
    detached?;
    Ok(Loaded {
        safe_point,
        phases: vec![(
            "starting the program up to Py_RunMain, loading and starting the tracer",
            started.elapsed(),
        )],
        ..loaded
    })
}

/// libc functions called in the target.
struct Functions {
    errno_location: u64,
    memfd_create: u64,
    dlopen: u64,
    dlerror: u64,
    dlclose: u64,
    fcntl: u64,
    close: u64,
}

fn inject(
    thread: &mut Stopped<'_>,
    pid: i32,
    functions: &Functions,
    agent_pid: u32,
    flags: u32,
    reuse_control: Option<u64>,
) -> Result<Loaded, InjectError> {
    inject_and_wait(
        thread,
        pid,
        functions,
        agent_pid,
        flags,
        reuse_control,
        None,
    )
}

/// [`inject`], and with `handover` (`PyEval_SaveThread`,
/// `PyEval_RestoreThread` and how long to wait) the thread, which holds the
/// GIL at a point where releasing it is safe, gives it to the watchdog
/// until the hooks are in (or the wait is over), then takes it back: the
/// thread's next Python code is traced.
fn inject_and_wait(
    thread: &mut Stopped<'_>,
    pid: i32,
    functions: &Functions,
    agent_pid: u32,
    flags: u32,
    reuse_control: Option<u64>,
    handover: Option<(u64, u64, Duration)>,
) -> Result<Loaded, InjectError> {
    let errno_address = thread.call(functions.errno_location, &[])?;
    let errno = thread.read_u32(errno_address)?;
    let result = (|| {
        let (control, reused) = match reuse_control {
            Some(control) => (control, true),
            None => (load(thread, pid, functions)?, false),
        };
        let start = start_function(control)?;
        let start_result = thread.call(start, &[agent_pid as u64, flags as u64])? as u32 as i32;
        if let (0, Some((save, restore, wait))) = (start_result, handover) {
            let state = thread.call(save, &[])?;
            let until = Instant::now() + wait;
            while Instant::now() < until {
                let now = thread.read_u32(control + abi::offset::STATE)?;
                if now != abi::STATE_STARTING && now != abi::STATE_IDLE {
                    break;
                }
                // The watchdog (a new thread, traced since its clone) and
                // any other thread run on meanwhile.
                if let Some((tid, status)) = thread
                    .session
                    .next_stop(Instant::now() + Duration::from_millis(2))
                {
                    thread.session.pass(tid, status);
                }
            }
            thread.call(restore, &[state])?;
        }
        Ok(Loaded {
            control,
            reused,
            start_result,
            safe_point: String::new(),
            phases: Vec::new(),
        })
    })();
    // errno as it was, whatever happened.
    thread.write(errno_address, &errno.to_le_bytes())?;
    result
}

/// memfd, bytes, dlopen, close: returns the control block's address.
fn load(thread: &mut Stopped<'_>, pid: i32, functions: &Functions) -> Result<u64, InjectError> {
    let name = thread.push_string(MEMFD_NAME)?;
    // MFD_CLOEXEC: a child the target execs does not inherit it.
    let fd = thread.call(functions.memfd_create, &[name, 1])? as i32;
    if fd < 0 {
        return Err(other("memfd_create failed in the target"));
    }
    let written = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .open(format!("/proc/{pid}/fd/{fd}"))?;
        file.write_all(TRACER_LIBRARY)?;
        file.flush()
    })();
    let (opened, fd) = match written {
        Ok(()) => {
            let (path, fd) = unused_path(thread, functions, fd)?;
            // RTLD_NOW: every symbol bound now, not later on a hot path.
            (thread.call(functions.dlopen, &[path, RTLD_NOW])?, fd)
        }
        Err(_) => (0, fd),
    };
    let why = if opened == 0 {
        let message = thread.call(functions.dlerror, &[])?;
        Some(thread.read_string(message).unwrap_or_default())
    } else {
        None
    };
    thread.call(functions.close, &[fd as u64])?;
    if let Err(e) = written {
        return Err(other(format!(
            "cannot write the tracer into the target's memfd: {e}"
        )));
    }
    if let Some(why) = why {
        return Err(other(format!(
            "dlopen of the tracer failed in the target: {why}"
        )));
    }
    loaded_control(&maps(pid)?)
        .ok_or_else(|| other("the tracer was loaded but is not in the target's maps"))
}

/// `dlopen` flags (glibc).
const RTLD_NOW: u64 = 2;
/// See [`RTLD_NOW`].
const RTLD_NOLOAD: u64 = 4;
/// `fcntl` command: duplicate to the lowest free descriptor at or above
/// the argument, close-on-exec.
const F_DUPFD_CLOEXEC: u64 = 1030;
/// Descriptor numbers tried before giving up on a path no library has.
const PATH_TRIES: i32 = 16;

/// A path to the memfd `fd` that no library loaded in the target was
/// opened by, pushed on the thread's stack, and the descriptor it names.
/// glibc's `dlopen` first compares the path with the names of the loaded
/// objects, and returns the one already loaded if it matches: a target
/// that loaded another pydeep tracer (of an earlier layout) from
/// `/proc/self/fd/N` and closed N gets N again from `memfd_create`, and
/// would be handed the old library. So while `dlopen(RTLD_NOLOAD)` finds
/// one by that name, the memfd moves to a higher descriptor.
fn unused_path(
    thread: &mut Stopped<'_>,
    functions: &Functions,
    mut fd: i32,
) -> Result<(u64, i32), InjectError> {
    for _ in 0..PATH_TRIES {
        let path = thread.push_string(&format!("/proc/self/fd/{fd}"))?;
        let loaded = thread.call(functions.dlopen, &[path, RTLD_NOW | RTLD_NOLOAD])?;
        if loaded == 0 {
            return Ok((path, fd));
        }
        // RTLD_NOLOAD took a reference: give it back.
        thread.call(functions.dlclose, &[loaded])?;
        let moved = thread.call(
            functions.fcntl,
            &[fd as u64, F_DUPFD_CLOEXEC, fd as u64 + 1],
        )? as i32;
        thread.call(functions.close, &[fd as u64])?;
        if moved < 0 {
            return Err(other("fcntl(F_DUPFD_CLOEXEC) failed in the target"));
        }
        fd = moved;
    }
    thread.call(functions.close, &[fd as u64])?;
    Err(other(format!(
        "{PATH_TRIES} descriptor paths in a row name libraries already loaded in the target"
    )))
}

// ---------------------------------------------------------------------------
// ptrace plumbing.

/// Every thread of the target, seized.
struct Session {
    pid: i32,
    /// Seized threads, and whether each is in a ptrace stop now.
    threads: HashMap<i32, bool>,
    /// Signals held back per thread, delivered at detach.
    held: HashMap<i32, Vec<i32>>,
    /// Breakpoints still in place: address → original byte.
    breakpoints: HashMap<u64, u8>,
    /// Addresses where breakpoints were (a late hit is wound back).
    was_breakpoint: HashSet<u64>,
    mem: fs::File,
}

fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

fn list_tasks(pid: i32) -> Vec<i32> {
    fs::read_dir(format!("/proc/{pid}/task"))
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .take(100_000)
                .collect()
        })
        .unwrap_or_default()
}

const WALL: i32 = 0x4000_0000;
/// `__WNOTHREAD`: wait for this thread's own tracees only. The injection
/// may run on a helper thread of a sampler (a trace window opened while
/// sampling) or beside other samplers (the daemon): a `waitpid(-1)`
/// without it would take the stops of their pauses, or the exit status
/// of the program `record` started.
const WNOTHREAD: i32 = 0x2000_0000;
const PTRACE_EVENT_CLONE: i32 = 3;

/// A wait status.
#[derive(Debug, Clone, Copy)]
enum Status {
    Gone,
    Stopped { signal: i32, event: i32 },
}

fn decode(status: i32) -> Status {
    if libc::WIFSTOPPED(status) {
        Status::Stopped {
            signal: libc::WSTOPSIG(status),
            event: status >> 16,
        }
    } else {
        Status::Gone
    }
}

impl Session {
    fn seize(pid: i32) -> Result<Session, InjectError> {
        let mem = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/proc/{pid}/mem"))
            .map_err(|source| match source.raw_os_error() {
                Some(libc::ENOENT) | Some(libc::ESRCH) => InjectError::Exited(pid),
                _ => InjectError::Permission { pid, source },
            })?;
        let mut session = Session {
            pid,
            threads: HashMap::new(),
            held: HashMap::new(),
            breakpoints: HashMap::new(),
            was_breakpoint: HashSet::new(),
            mem,
        };
        // Threads started while seizing are listed again: repeat until the
        // list is stable (new ones after that are traced by TRACECLONE).
        for _ in 0..100 {
            let mut new = false;
            for tid in list_tasks(pid) {
                if session.threads.contains_key(&tid) {
                    continue;
                }
                // SAFETY: plain ptrace request on a thread id.
                let r = unsafe {
                    libc::ptrace(
                        libc::PTRACE_SEIZE,
                        tid,
                        0,
                        libc::PTRACE_O_TRACECLONE as libc::c_ulong,
                    )
                };
                if r == 0 {
                    session.threads.insert(tid, false);
                    new = true;
                } else {
                    let e = errno();
                    match e.raw_os_error() {
                        Some(libc::ESRCH) => {}
                        _ => {
                            let _ = session.detach_all();
                            return Err(InjectError::Permission { pid, source: e });
                        }
                    }
                }
            }
            if !new {
                break;
            }
        }
        if session.threads.is_empty() {
            return Err(InjectError::Exited(pid));
        }
        Ok(session)
    }

    fn poke_byte(&self, address: u64, byte: u8) -> Result<(), InjectError> {
        self.mem.write_all_at(&[byte], address).map_err(|e| {
            other(format!(
                "cannot write the target's code at {address:#x}: {e}"
            ))
        })
    }

    fn peek_byte(&self, address: u64) -> Result<u8, InjectError> {
        let mut b = [0u8];
        self.mem.read_exact_at(&mut b, address).map_err(|e| {
            other(format!(
                "cannot read the target's code at {address:#x}: {e}"
            ))
        })?;
        Ok(b[0])
    }

    fn remove_breakpoints(&mut self) -> Result<(), InjectError> {
        let mut first_error = None;
        for (address, byte) in std::mem::take(&mut self.breakpoints) {
            if let Err(e) = self.poke_byte(address, byte) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// The next stop of any seized thread, or None after `until`.
    fn next_stop(&mut self, until: Instant) -> Option<(i32, Status)> {
        loop {
            let mut status = 0;
            // SAFETY: an out-pointer to an int.
            let tid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG | WALL | WNOTHREAD) };
            if tid > 0 {
                let status = decode(status);
                match status {
                    Status::Gone => {
                        self.threads.remove(&tid);
                    }
                    Status::Stopped { .. } => {
                        self.threads.insert(tid, true);
                    }
                }
                return Some((tid, status));
            }
            if tid < 0 && errno().raw_os_error() == Some(libc::ECHILD) {
                return None;
            }
            if Instant::now() >= until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Registers the thread `tid` just started (it is traced from its
    /// first instruction and must be detached like the others: the tracer's
    /// own watchdog thread starts this way, inside an injected call).
    fn note_clone(&mut self, tid: i32) {
        let mut new_tid: libc::c_ulong = 0;
        // SAFETY: out-pointer to an unsigned long.
        unsafe { libc::ptrace(libc::PTRACE_GETEVENTMSG, tid, 0, &mut new_tid) };
        if new_tid != 0 {
            self.threads.entry(new_tid as i32).or_insert(false);
        }
    }

    fn cont(&mut self, tid: i32, signal: i32) {
        // SAFETY: plain ptrace request.
        unsafe { libc::ptrace(libc::PTRACE_CONT, tid, 0, signal as libc::c_ulong) };
        self.threads.insert(tid, false);
    }

    /// Lets a stopped thread other than the one being injected go on,
    /// winding back a breakpoint it hit and passing on its signal.
    fn pass(&mut self, tid: i32, status: Status) {
        let Status::Stopped { signal, event } = status else {
            return;
        };
        if event == PTRACE_EVENT_CLONE {
            self.note_clone(tid);
            self.cont(tid, 0);
            return;
        }
        if event != 0 {
            // PTRACE_EVENT_STOP: a new thread's first stop, an interrupt,
            // or a group stop.
            self.cont(tid, 0);
            return;
        }
        if signal == libc::SIGTRAP {
            if let Some(mut regs) = get_regs(tid) {
                let at = regs.rip.wrapping_sub(1);
                if self.breakpoints.contains_key(&at) || self.was_breakpoint.contains(&at) {
                    regs.rip = at;
                    set_regs(tid, &regs);
                    self.cont(tid, 0);
                    return;
                }
            }
        }
        self.cont(tid, signal);
    }

    /// Puts breakpoints on `safe_points`, waits for the first hit, removes
    /// them, and runs `work` on that thread; then puts its registers back.
    fn run<T>(
        &mut self,
        safe_points: &[(String, u64)],
        timeout: Duration,
        work: impl FnOnce(&mut Stopped<'_>) -> Result<T, InjectError>,
    ) -> Result<(T, String), InjectError> {
        for (_, address) in safe_points {
            let byte = self.peek_byte(*address)?;
            if byte == 0xcc {
                // Someone else's breakpoint (a debugger): leave it alone.
                continue;
            }
            self.breakpoints.insert(*address, byte);
            self.was_breakpoint.insert(*address);
            if let Err(e) = self.poke_byte(*address, 0xcc) {
                let _ = self.remove_breakpoints();
                return Err(e);
            }
        }
        if self.breakpoints.is_empty() {
            return Err(other(
                "another debugger has breakpoints on every safe point",
            ));
        }
        // A thread left stopped by an earlier run (the program's entry,
        // before the interpreter's) goes on now that the breakpoints are in.
        let stopped: Vec<i32> = self
            .threads
            .iter()
            .filter(|(_, stopped)| **stopped)
            .map(|(tid, _)| *tid)
            .collect();
        for tid in stopped {
            self.cont(tid, 0);
        }
        let started = Instant::now();
        let until = started + timeout;
        let (tid, regs, at) = loop {
            let Some((tid, status)) = self.next_stop(until) else {
                self.remove_breakpoints()?;
                if self.threads.is_empty() {
                    return Err(InjectError::Exited(self.pid));
                }
                return Err(InjectError::NoSafePoint {
                    pid: self.pid,
                    waited: started.elapsed(),
                });
            };
            if let Status::Stopped {
                signal: libc::SIGTRAP,
                event: 0,
            } = status
            {
                if let Some(regs) = get_regs(tid) {
                    let at = regs.rip.wrapping_sub(1);
                    if self.breakpoints.contains_key(&at) {
                        break (tid, regs, at);
                    }
                }
            }
            self.pass(tid, status);
        };
        self.remove_breakpoints()?;
        let name = safe_points
            .iter()
            .find(|(_, a)| *a == at)
            .map_or("?", |(n, _)| n.as_str());
        let safe_point = format!("entry of {name} on thread {tid}");
        // The thread's state as it was before the int3: rip on the entry.
        let mut original = regs;
        original.rip = at;
        let xstate = get_xstate(tid);
        let mut stopped = Stopped {
            session: self,
            tid,
            original,
            // Below the red zone, with room for the strings pushed.
            scratch: original.rsp.wrapping_sub(128) & !0xf,
        };
        let result = work(&mut stopped);
        // Put everything back, whatever happened.
        set_regs(tid, &original);
        if let Some(xstate) = xstate {
            set_xstate(tid, &xstate);
        }
        result.map(|v| (v, safe_point))
    }

    /// Detaches every thread, each stopped first (a running tracee cannot
    /// be detached), delivering any signal held back or caught meanwhile.
    fn detach_all(&mut self) -> Result<(), InjectError> {
        let _ = self.remove_breakpoints();
        let running: Vec<i32> = self
            .threads
            .iter()
            .filter(|(_, stopped)| !**stopped)
            .map(|(tid, _)| *tid)
            .collect();
        for tid in &running {
            // SAFETY: plain ptrace request.
            unsafe { libc::ptrace(libc::PTRACE_INTERRUPT, *tid, 0, 0) };
        }
        let until = Instant::now() + Duration::from_secs(10);
        while self.threads.values().any(|stopped| !stopped) {
            let Some((tid, status)) = self.next_stop(until) else {
                break;
            };
            if let Status::Stopped { signal, event } = status {
                if event == PTRACE_EVENT_CLONE {
                    // A thread started while detaching: it is traced and
                    // stops first thing; wait for that stop too.
                    self.note_clone(tid);
                } else if event == 0 {
                    if signal == libc::SIGTRAP {
                        if let Some(mut regs) = get_regs(tid) {
                            if self.was_breakpoint.contains(&regs.rip.wrapping_sub(1)) {
                                regs.rip = regs.rip.wrapping_sub(1);
                                set_regs(tid, &regs);
                                continue;
                            }
                        }
                    }
                    self.held.entry(tid).or_default().push(signal);
                }
            }
        }
        let mut failed = None;
        for (tid, _) in std::mem::take(&mut self.threads) {
            let mut signals = self.held.remove(&tid).unwrap_or_default();
            let first = if signals.is_empty() {
                0
            } else {
                signals.remove(0)
            };
            // SAFETY: plain ptrace request.
            let r = unsafe { libc::ptrace(libc::PTRACE_DETACH, tid, 0, first as libc::c_ulong) };
            if r != 0 && errno().raw_os_error() != Some(libc::ESRCH) {
                failed.get_or_insert(tid);
            }
            for signal in signals {
                // SAFETY: tgkill on the thread that received it.
                unsafe { libc::syscall(libc::SYS_tgkill, self.pid, tid, signal) };
            }
        }
        match failed {
            Some(tid) => Err(other(format!("could not detach from thread {tid}"))),
            None => Ok(()),
        }
    }
}

fn get_regs(tid: i32) -> Option<libc::user_regs_struct> {
    // SAFETY: user_regs_struct is plain data; ptrace fills it.
    let mut regs: libc::user_regs_struct = unsafe { std::mem::zeroed() };
    // SAFETY: out-pointer to a user_regs_struct.
    let r = unsafe { libc::ptrace(libc::PTRACE_GETREGS, tid, 0, &mut regs) };
    (r == 0).then_some(regs)
}

fn set_regs(tid: i32, regs: &libc::user_regs_struct) {
    // SAFETY: pointer to a user_regs_struct.
    unsafe { libc::ptrace(libc::PTRACE_SETREGS, tid, 0, regs as *const _) };
}

const NT_X86_XSTATE: libc::c_ulong = 0x202;

/// The thread's whole XSAVE area (x87, SSE, AVX, AVX-512 state).
fn get_xstate(tid: i32) -> Option<Vec<u8>> {
    let mut buffer = vec![0u8; 16 * 1024];
    let mut iov = libc::iovec {
        iov_base: buffer.as_mut_ptr().cast(),
        iov_len: buffer.len(),
    };
    // SAFETY: the iovec points at our buffer; the kernel shortens iov_len.
    let r = unsafe { libc::ptrace(libc::PTRACE_GETREGSET, tid, NT_X86_XSTATE, &mut iov) };
    if r != 0 {
        return None;
    }
    buffer.truncate(iov.iov_len);
    Some(buffer)
}

fn set_xstate(tid: i32, state: &[u8]) {
    let mut iov = libc::iovec {
        iov_base: state.as_ptr() as *mut _,
        iov_len: state.len(),
    };
    // SAFETY: the iovec points at the saved area, which the kernel reads.
    unsafe { libc::ptrace(libc::PTRACE_SETREGSET, tid, NT_X86_XSTATE, &mut iov) };
}

/// The thread chosen at a safe point, stopped, with its saved registers.
struct Stopped<'a> {
    session: &'a mut Session,
    tid: i32,
    original: libc::user_regs_struct,
    /// Lowest address used so far below the original stack pointer.
    scratch: u64,
}

/// Longest one injected call may take (dlopen of a few hundred KB).
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

impl Stopped<'_> {
    fn write(&self, address: u64, bytes: &[u8]) -> Result<(), InjectError> {
        self.session.mem.write_all_at(bytes, address).map_err(|e| {
            other(format!(
                "cannot write the target's memory at {address:#x}: {e}"
            ))
        })
    }

    fn read_u32(&self, address: u64) -> Result<u32, InjectError> {
        let mut b = [0u8; 4];
        self.session
            .mem
            .read_exact_at(&mut b, address)
            .map_err(|e| {
                other(format!(
                    "cannot read the target's memory at {address:#x}: {e}"
                ))
            })?;
        Ok(u32::from_le_bytes(b))
    }

    fn read_string(&self, address: u64) -> Option<String> {
        if address == 0 {
            return None;
        }
        let mut b = [0u8; 256];
        let n = self.session.mem.read_at(&mut b, address).ok()?;
        let end = b[..n].iter().position(|&c| c == 0).unwrap_or(n);
        Some(String::from_utf8_lossy(&b[..end]).into_owned())
    }

    /// Copies `text` NUL-terminated onto the thread's stack, below what it
    /// uses, and returns its address.
    fn push_string(&mut self, text: &str) -> Result<u64, InjectError> {
        let mut bytes = text.as_bytes().to_vec();
        bytes.push(0);
        self.scratch = self.scratch.wrapping_sub(bytes.len() as u64) & !0xf;
        self.write(self.scratch, &bytes)?;
        Ok(self.scratch)
    }

    /// Calls `function(args...)` on the thread and returns rax.
    fn call(&mut self, function: u64, args: &[u64]) -> Result<u64, InjectError> {
        let mut regs = self.original;
        // Return address 0 on a 16-byte aligned stack (the ABI's state at
        // a function's entry: rsp + 8 aligned).
        let sp = (self.scratch.wrapping_sub(256) & !0xf).wrapping_sub(8);
        self.write(sp, &0u64.to_le_bytes())?;
        regs.rsp = sp;
        regs.rip = function;
        regs.rax = 0;
        // Not in a system call: no restart logic may touch rip.
        regs.orig_rax = u64::MAX;
        let slots = [
            &mut regs.rdi,
            &mut regs.rsi,
            &mut regs.rdx,
            &mut regs.rcx,
            &mut regs.r8,
            &mut regs.r9,
        ];
        for (slot, value) in slots.into_iter().zip(args) {
            *slot = *value;
        }
        set_regs(self.tid, &regs);
        self.session.cont(self.tid, 0);
        let until = Instant::now() + CALL_TIMEOUT;
        loop {
            let Some((tid, status)) = self.session.next_stop(until) else {
                return Err(other(format!(
                    "an injected call on thread {} did not return within {CALL_TIMEOUT:?}",
                    self.tid
                )));
            };
            if tid != self.tid {
                self.session.pass(tid, status);
                continue;
            }
            let Status::Stopped { signal, event } = status else {
                return Err(InjectError::Exited(self.session.pid));
            };
            if event != 0 {
                if event == PTRACE_EVENT_CLONE {
                    self.session.note_clone(tid);
                }
                self.session.cont(tid, 0);
                continue;
            }
            if signal == libc::SIGSEGV {
                let now = get_regs(tid).ok_or_else(|| other("cannot read registers"))?;
                if now.rip == 0 {
                    return Ok(now.rax);
                }
                return Err(other(format!(
                    "an injected call crashed at {:#x} in the target (SIGSEGV held back)",
                    now.rip
                )));
            }
            // Held back: delivered at detach, at the original point.
            self.session.held.entry(tid).or_default().push(signal);
            self.session.cont(tid, 0);
        }
    }
}
