//! 3.14+: starting the tracer through CPython's own remote-debugger
//! protocol (PEP 768, what `sys.remote_exec` uses) instead of ptrace.
//!
//! Written from CPython's sources (Python/remote_debugging.c's sender,
//! Python/ceval_gil.c's `_PyRunRemoteDebugger`, the `debugger_support`
//! section of Include/internal/pycore_debug_offsets.h), with the offsets
//! taken from the target's own `_Py_DebugOffsets`. UNTESTED against a real
//! 3.14 or 3.15: none can run on the machine this was written on (only
//! WebAssembly builds, whose tables confirmed the section's shape). The
//! writer, the file placement and the script are unit tested; notes/tracing.md
//! ("3.14+: PEP 768") says what is and is not known.
//!
//! 1. [`locate`]: `_PyRuntime` → first interpreter → its
//!    `config.remote_debug` (refused unless 1) and its main thread state.
//! 2. [`Placed::create`]: a private directory in the target's own /tmp
//!    (through /proc/PID/root, so a container's /tmp), 0700, owned by the
//!    target's user, a random name; in it, 0600, the tracer library and a
//!    small Python script ([`script`]).
//! 3. [`send`]: the script's path into the main thread state's
//!    `debugger_script_path`, then `debugger_pending_call = 1`, then the
//!    eval-breaker bit, with `process_vm_writev` (no ptrace).
//! 4. At its next eval-breaker check (a loop's back edge, a call's return)
//!    the main thread raises the audit event `remote_debugger_script`, reads
//!    the script through `io.open_code` and runs it: it copies the library
//!    into a memfd, `dlopen`s it with ctypes, calls the start function and
//!    writes its result into the directory. [`run`] waits for
//!    that result (at most `--start-timeout`) and deletes the files.

use std::ffi::CString;
use std::io::{self, Read as _, Write as _};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::process::memory::RemoteMemory;
use crate::reading::cpython::debug_offsets::{DebugTable, DebuggerSupport, TableFormat};
use crate::reading::cpython::{OffsetsSource, PythonVersion, Semantics};

/// `_PY_EVAL_PLEASE_STOP_BIT` (Include/internal/pycore_ceval.h, 3.14 and
/// main): the bit CPython's own sender sets. `_Py_HandlePending` clears it,
/// lets the thread state detach and reattach (a stop-the-world request in
/// free-threaded builds, a GIL hand-over otherwise), then, after the other
/// pending work, calls `_PyRunRemoteDebugger`.
pub const EVAL_PLEASE_STOP_BIT: u64 = 1 << 5;

/// The name of the memfd the script loads the library from, the same as the
/// ptrace injection's (so a later window finds it in /proc/PID/maps).
pub const MEMFD_NAME: &str = "pydeep-tracer-v5";
/// The tracer library's file in the private directory.
pub const LIBRARY_FILE: &str = "pydeep-tracer-v5.so";
/// The script's file.
pub const SCRIPT_FILE: &str = "start.py";
/// Where the script writes the start function's result (renamed from
/// [`RESULT_PART_FILE`] once complete).
pub const RESULT_FILE: &str = "result";
/// The result while it is being written.
pub const RESULT_PART_FILE: &str = "result.part";
/// Every name pydeep may leave in the directory, removed at the end.
const FILES: [&str; 4] = [LIBRARY_FILE, SCRIPT_FILE, RESULT_PART_FILE, RESULT_FILE];
/// Most bytes of a result read back.
const MAX_RESULT: u64 = 4096;

/// Why the PEP 768 start failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoteExecError {
    /// `config.remote_debug` is not 1 in the target.
    #[error("process {pid} runs CPython {version} with remote debugging disabled (PYTHON_DISABLE_REMOTE_DEBUG set, -X disable-remote-debug, or a build configured --without-remote-debug), and on 3.14+ pydeep trace starts its tracer through it (PEP 768); restart the program without that variable or option, on a build with remote debugging")]
    Disabled {
        /// The target.
        pid: i32,
        /// Its version.
        version: String,
    },
    /// A free-threaded build.
    #[error("process {0} runs a free-threaded CPython: pydeep trace's ring has one writer at a time, which only the GIL guarantees")]
    FreeThreaded(i32),
    /// The target's memory could not be read or written, or does not
    /// hold what the table says.
    #[error("process {pid}: {what}")]
    Memory {
        /// The target.
        pid: i32,
        /// What failed.
        what: String,
    },
    /// The script's path does not fit the target's buffer.
    #[error("the script path {path:?} is {len} bytes; the target's debugger_script_path holds {size} with its NUL")]
    PathTooLong {
        /// The path.
        path: String,
        /// Its length.
        len: usize,
        /// The buffer's size.
        size: u64,
    },
    /// The private directory or its files could not be made.
    #[error("cannot place the tracer's files in process {pid}'s /tmp ({what}): {source}")]
    Files {
        /// The target.
        pid: i32,
        /// What was being done.
        what: String,
        /// The error.
        source: io::Error,
    },
    /// No result within the timeout.
    #[error("process {pid}'s main thread did not run pydeep's start script within {waited:?}: it never reached an eval-breaker check (idle in C: sleeping, waiting for I/O or a lock), or an audit hook refused the remote_debugger_script event; retry while the main thread runs Python, or raise --start-timeout")]
    NeverRan {
        /// The target.
        pid: i32,
        /// How long pydeep waited.
        waited: Duration,
    },
    /// The script ran and failed.
    #[error("pydeep's start script failed in process {pid}: {message}")]
    ScriptFailed {
        /// The target.
        pid: i32,
        /// What it wrote.
        message: String,
    },
    /// The target exited meanwhile.
    #[error("process {0} exited while the tracer was being started")]
    Exited(i32),
    /// A path with characters the script would have to quote.
    #[error("unexpected characters in the path {0:?}")]
    UnsafePath(String),
}

/// The table format whose `debugger_support` section a target of these
/// semantics has, if it is one pydeep starts through PEP 768 (3.14+). The
/// one place that decides between PEP 768 and ptrace injection.
pub fn format_for(semantics: &Semantics) -> Option<TableFormat> {
    match semantics.offsets {
        OffsetsSource::DebugOffsets(format) if format.has_debugger_support() => Some(format),
        _ => None,
    }
}

/// Reads and validates the target's table, giving its PEP 768 offsets.
pub fn read_support(
    memory: &dyn RemoteMemory,
    runtime: u64,
    format: TableFormat,
    version: &PythonVersion,
    pid: i32,
) -> Result<DebuggerSupport, RemoteExecError> {
    let bad = |what: String| RemoteExecError::Memory { pid, what };
    let mut bytes = vec![0u8; format.byte_len()];
    memory
        .read(runtime, &mut bytes)
        .map_err(|e| bad(format!("reading _Py_DebugOffsets: {e}")))?;
    let table = DebugTable::parse(&bytes, format).map_err(&bad)?;
    table.validate(version).map_err(&bad)?;
    if table.get("free_threaded") == 1 {
        return Err(RemoteExecError::FreeThreaded(pid));
    }
    table
        .debugger_support()
        .ok_or_else(|| bad("its _Py_DebugOffsets has no debugger_support section".into()))
}

/// Where the request goes: the main thread state, and the offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// The target.
    pub pid: i32,
    /// The main thread's `PyThreadState`.
    pub thread_state: u64,
    /// The table's offsets.
    pub support: DebuggerSupport,
}

fn read_word(memory: &dyn RemoteMemory, address: u64, pid: i32) -> Result<u64, RemoteExecError> {
    let mut word = [0u8; 8];
    memory
        .read(address, &mut word)
        .map_err(|e| RemoteExecError::Memory {
            pid,
            what: format!("reading 0x{address:x}: {e}"),
        })?;
    Ok(u64::from_le_bytes(word))
}

fn add(base: u64, offset: u64, pid: i32) -> Result<u64, RemoteExecError> {
    base.checked_add(offset).ok_or(RemoteExecError::Memory {
        pid,
        what: format!("0x{base:x} + 0x{offset:x} overflows"),
    })
}

/// Follows the sender's steps (remote_debugging.c,
/// `send_exec_to_proc_handle` without a thread id): the first interpreter,
/// its `config.remote_debug` (anything but 1 is refused, as CPython's
/// sender does), its main thread state.
pub fn locate(
    memory: &dyn RemoteMemory,
    runtime: u64,
    support: DebuggerSupport,
    pid: i32,
    version: &PythonVersion,
) -> Result<Plan, RemoteExecError> {
    let interpreter = read_word(memory, add(runtime, support.interpreters_head, pid)?, pid)?;
    if interpreter == 0 {
        return Err(RemoteExecError::Memory {
            pid,
            what: "no interpreter is running (interpreters.head is NULL)".into(),
        });
    }
    let mut enabled = [0u8; 4];
    let at = add(interpreter, support.remote_debugging_enabled, pid)?;
    memory
        .read(at, &mut enabled)
        .map_err(|e| RemoteExecError::Memory {
            pid,
            what: format!("reading config.remote_debug at 0x{at:x}: {e}"),
        })?;
    if i32::from_le_bytes(enabled) != 1 {
        return Err(RemoteExecError::Disabled {
            pid,
            version: version.to_string(),
        });
    }
    let thread_state = read_word(memory, add(interpreter, support.threads_main, pid)?, pid)?;
    if thread_state == 0 {
        return Err(RemoteExecError::Memory {
            pid,
            what: "the interpreter has no main thread state (threads.main is NULL)".into(),
        });
    }
    Ok(Plan {
        pid,
        thread_state,
        support,
    })
}

/// Writes into the target's memory.
pub trait WriteMemory {
    /// Writes all of `bytes` at `address`.
    fn write(&mut self, address: u64, bytes: &[u8]) -> io::Result<()>;
}

/// `process_vm_writev` into a live process, like the ring's writes.
pub struct LiveWrites(pub i32);

impl WriteMemory for LiveWrites {
    fn write(&mut self, address: u64, bytes: &[u8]) -> io::Result<()> {
        super::ring::write(self.0, address, bytes)
    }
}

/// Asks the main thread to run the script at `path` (the target's view):
/// the path and its NUL into `debugger_script_path`, then
/// `debugger_pending_call = 1`, then [`EVAL_PLEASE_STOP_BIT`] in its
/// `eval_breaker`, in that order (the thread reads the flag only after the
/// bit, and the path only after the flag).
pub fn send(
    memory: &dyn RemoteMemory,
    writes: &mut dyn WriteMemory,
    plan: &Plan,
    path: &str,
) -> Result<(), RemoteExecError> {
    let pid = plan.pid;
    let s = &plan.support;
    let len = path.len();
    if path.as_bytes().contains(&0) || len as u64 >= s.debugger_script_path_size {
        return Err(RemoteExecError::PathTooLong {
            path: path.into(),
            len,
            size: s.debugger_script_path_size,
        });
    }
    let support = add(plan.thread_state, s.remote_debugger_support, pid)?;
    let written = |what: &str, e: io::Error| RemoteExecError::Memory {
        pid,
        what: format!("writing {what}: {e}"),
    };
    let mut with_nul = path.as_bytes().to_vec();
    with_nul.push(0);
    writes
        .write(add(support, s.debugger_script_path, pid)?, &with_nul)
        .map_err(|e| written("debugger_script_path", e))?;
    writes
        .write(
            add(support, s.debugger_pending_call, pid)?,
            &1i32.to_le_bytes(),
        )
        .map_err(|e| written("debugger_pending_call", e))?;
    // A read-modify-write from outside: the interpreter changes this word
    // atomically (`_Py_set_eval_breaker_bit` is an atomic OR, the GIL and
    // signal handling set and clear bits, and the bits above 8 hold the
    // instrumentation version), and an update landing between this read
    // and this write is lost. CPython's own sender does exactly this (a
    // plain read, OR, write; remote_debugging.c) and accepts the race: the
    // window is a few microseconds, a lost request bit is set again by
    // whoever still wants it (the GIL's waiter on its next interval), and
    // the version bits change only when monitoring is switched on or off.
    let breaker_at = add(plan.thread_state, s.eval_breaker, pid)?;
    let breaker = read_word(memory, breaker_at, pid)?;
    writes
        .write(breaker_at, &(breaker | EVAL_PLEASE_STOP_BIT).to_le_bytes())
        .map_err(|e| written("eval_breaker", e))?;
    Ok(())
}

/// Takes a request back that was never served: `debugger_pending_call = 0`
/// and an empty path (the thread skips an empty one, ceval_gil.c). If the
/// thread took the request meanwhile, it runs a script that is gone and
/// says so on its stderr ("Can't open debugger script").
pub fn withdraw(writes: &mut dyn WriteMemory, plan: &Plan) {
    let s = &plan.support;
    let support = plan.thread_state.wrapping_add(s.remote_debugger_support);
    let _ = writes.write(
        support.wrapping_add(s.debugger_pending_call),
        &0i32.to_le_bytes(),
    );
    let _ = writes.write(support.wrapping_add(s.debugger_script_path), &[0]);
}

/// The owner the target's files get: the target's filesystem uid and gid
/// (/proc/PID/status, the fourth field of `Uid:` and `Gid:`).
pub fn owner_of(pid: i32) -> io::Result<(u32, u32)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |key: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().nth(3))
            .and_then(|v| v.parse::<u32>().ok())
            .ok_or_else(|| io::Error::other(format!("no {key} line in /proc/{pid}/status")))
    };
    Ok((field("Uid:")?, field("Gid:")?))
}

fn cstring(name: &str) -> io::Result<CString> {
    CString::new(name).map_err(|_| io::Error::other("a NUL in a file name"))
}

fn check(result: libc::c_int) -> io::Result<libc::c_int> {
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(result)
    }
}

/// 128 random bits in hex, from the kernel.
fn random_name() -> io::Result<String> {
    let mut bytes = [0u8; 16];
    let mut filled = 0;
    while filled < bytes.len() {
        // SAFETY: the buffer is valid for the length given.
        let n = unsafe {
            libc::getrandom(bytes[filled..].as_mut_ptr().cast(), bytes.len() - filled, 0)
        };
        if n < 0 {
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::Interrupted {
                return Err(error);
            }
            continue;
        }
        filled += n as usize;
    }
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The private directory in the target's /tmp and the files in it.
/// Every step goes through directory descriptors with `O_NOFOLLOW` (the
/// target's `/tmp` itself may not be a link; names are created with
/// `O_EXCL`/`mkdirat`, which never follow), and dropping it deletes what
/// pydeep wrote, by name, with `unlinkat` (which does not follow links
/// either).
#[derive(Debug)]
pub struct Placed {
    tmp: OwnedFd,
    dir: OwnedFd,
    name: String,
    owner: Option<(u32, u32)>,
    /// The directory as the target sees it (`/tmp/pydeep-…`).
    pub directory: String,
}

impl Placed {
    /// Makes `root/tmp/pydeep-<128 random bits>` (0700), owned by `owner`
    /// when given (pydeep runs as another user, root). `root` is the
    /// target's root (`/proc/PID/root`).
    pub fn create(root: &Path, owner: Option<(u32, u32)>) -> io::Result<Placed> {
        let root_path = cstring(&root.display().to_string())?;
        // SAFETY: valid C strings; every returned descriptor is owned.
        let root_fd = check(unsafe {
            libc::open(
                root_path.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        })?;
        // SAFETY: just opened, owned here.
        let root_fd = unsafe { OwnedFd::from_raw_fd(root_fd) };
        let tmp_name = cstring("tmp")?;
        // SAFETY: as above.
        let tmp = check(unsafe {
            libc::openat(
                root_fd.as_raw_fd(),
                tmp_name.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        })?;
        // SAFETY: as above.
        let tmp = unsafe { OwnedFd::from_raw_fd(tmp) };
        let name = format!("pydeep-{}", random_name()?);
        let c_name = cstring(&name)?;
        // SAFETY: as above.
        check(unsafe { libc::mkdirat(tmp.as_raw_fd(), c_name.as_ptr(), 0o700) })?;
        // SAFETY: as above.
        let dir = check(unsafe {
            libc::openat(
                tmp.as_raw_fd(),
                c_name.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        });
        let dir = match dir {
            // SAFETY: as above.
            Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd) },
            Err(error) => {
                // SAFETY: as above.
                unsafe { libc::unlinkat(tmp.as_raw_fd(), c_name.as_ptr(), libc::AT_REMOVEDIR) };
                return Err(error);
            }
        };
        let placed = Placed {
            tmp,
            dir,
            directory: format!("/tmp/{name}"),
            name,
            owner,
        };
        // The umask may have narrowed mkdirat's mode; state it exactly.
        // SAFETY: an owned descriptor.
        check(unsafe { libc::fchmod(placed.dir.as_raw_fd(), 0o700) })?;
        placed.chown(placed.dir.as_raw_fd())?;
        Ok(placed)
    }

    fn chown(&self, fd: libc::c_int) -> io::Result<()> {
        if let Some((uid, gid)) = self.owner {
            // SAFETY: an open descriptor.
            check(unsafe { libc::fchown(fd, uid, gid) })?;
        }
        Ok(())
    }

    /// Writes `bytes` into a new file `name` (0600, owned like the
    /// directory); returns its path as the target sees it.
    pub fn write_file(&self, name: &str, bytes: &[u8]) -> io::Result<String> {
        let c_name = cstring(name)?;
        // SAFETY: valid C string, owned descriptor.
        let fd = check(unsafe {
            libc::openat(
                self.dir.as_raw_fd(),
                c_name.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                0o600 as libc::c_uint,
            )
        })?;
        // SAFETY: just opened, owned here.
        let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        // SAFETY: an owned descriptor.
        check(unsafe { libc::fchmod(file.as_raw_fd(), 0o600) })?;
        self.chown(file.as_raw_fd())?;
        file.write_all(bytes)?;
        Ok(format!("{}/{name}", self.directory))
    }

    /// The script's result, once it wrote one (at most 4 KiB, never
    /// through a link).
    pub fn result(&self) -> io::Result<Option<String>> {
        let c_name = cstring(RESULT_FILE)?;
        // SAFETY: valid C string, owned descriptor.
        let fd = unsafe {
            libc::openat(
                self.dir.as_raw_fd(),
                c_name.as_ptr(),
                libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            let error = io::Error::last_os_error();
            return match error.kind() {
                io::ErrorKind::NotFound => Ok(None),
                _ => Err(error),
            };
        }
        // SAFETY: just opened, owned here.
        let file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        let mut text = String::new();
        file.take(MAX_RESULT).read_to_string(&mut text)?;
        Ok(Some(text))
    }
}

impl Drop for Placed {
    fn drop(&mut self) {
        for name in FILES {
            if let Ok(c_name) = cstring(name) {
                // SAFETY: valid C string, owned descriptor.
                unsafe { libc::unlinkat(self.dir.as_raw_fd(), c_name.as_ptr(), 0) };
            }
        }
        if let Ok(c_name) = cstring(&self.name) {
            // SAFETY: as above. Fails (and leaves it) if the target's user
            // put files of its own in it.
            unsafe { libc::unlinkat(self.tmp.as_raw_fd(), c_name.as_ptr(), libc::AT_REMOVEDIR) };
        }
    }
}

/// How the script reaches the start function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Load {
    /// Load the library from this file (the target's path) first.
    Library(String),
    /// An earlier window loaded it: call the start function at this
    /// address.
    Loaded {
        /// The start function's address in the target.
        start: u64,
    },
}

/// True if `path` can go into the script as a plain string literal.
fn plain(path: &str) -> bool {
    !path.is_empty()
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b))
}

/// The Python the target runs (in a fresh namespace, on its main thread,
/// holding the GIL). It loads the library the way the ptrace injection
/// does, from a memfd named like its (`/memfd:pydeep-tracer-v5` in the
/// target's maps, so [`super::inject::loaded_control`] finds it as ever),
/// rather than from the file: a /tmp mounted noexec refuses to map a
/// library from it, while reading its bytes works anywhere. If a library
/// an earlier program loaded through `/proc/self/fd/N` kept that name in
/// the loader's list, dlopen of the same name would hand it back, so the
/// memfd moves to a descriptor no loaded object names (as inject.rs does).
/// The start function's result, or the error, goes into the directory's
/// result file, written whole then renamed.
pub fn script(
    load: &Load,
    directory: &str,
    agent_pid: u32,
    flags: u32,
) -> Result<String, RemoteExecError> {
    let start = match load {
        Load::Library(path) => {
            if !plain(path) {
                return Err(RemoteExecError::UnsafePath(path.clone()));
            }
            format!(
                r#"with open("{path}", "rb") as library_file:
            library_bytes = library_file.read()
        fd = os.memfd_create("{memfd}", os.MFD_CLOEXEC)
        try:
            os.write(fd, library_bytes)
            for _ in range(64):
                try:
                    ctypes.CDLL("/proc/self/fd/%d" % fd, mode=os.RTLD_NOLOAD)
                except OSError:
                    break
                moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, fd + 1)
                os.close(fd)
                fd = moved
            library = ctypes.CDLL("/proc/self/fd/%d" % fd)
        finally:
            os.close(fd)
        start = library.{symbol}
        start.argtypes = (ctypes.c_uint, ctypes.c_uint)
        start.restype = ctypes.c_int"#,
                memfd = MEMFD_NAME,
                symbol = super::abi::START_SYMBOL,
            )
        }
        Load::Loaded { start } => {
            format!("start = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_uint, ctypes.c_uint)({start})")
        }
    };
    if !plain(directory) {
        return Err(RemoteExecError::UnsafePath(directory.into()));
    }
    Ok(format!(
        r#"# pydeep trace: starts pydeep's tracer in this process (PEP 768).
def _pydeep_start():
    import os
    try:
        import ctypes, fcntl
        {start}
        result = str(start({agent_pid}, {flags}))
    except BaseException as error:
        result = "error: %r" % (error,)
    with open("{directory}/{part}", "x") as out:
        out.write(result)
    os.rename("{directory}/{part}", "{directory}/{done}")
_pydeep_start()
"#,
        part = RESULT_PART_FILE,
        done = RESULT_FILE,
    ))
}

/// What a PEP 768 start gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    /// What the start function returned.
    pub start_result: i32,
    /// How long each phase took.
    pub phases: Vec<(&'static str, Duration)>,
}

/// What [`run`] asks of the target.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// The target's root (`/proc/PID/root`).
    pub root: &'a Path,
    /// Who the files belong to (`None`: pydeep's own user).
    pub owner: Option<(u32, u32)>,
    /// The library to load, unless `reuse_start` is given.
    pub library: &'a [u8],
    /// The start function of a library an earlier window loaded.
    pub reuse_start: Option<u64>,
    /// The agent's pid, passed to the start function.
    pub agent_pid: u32,
    /// The start function's flags.
    pub flags: u32,
    /// How long to wait for the script's result.
    pub timeout: Duration,
}

/// Places the files, sends the request, waits at most `request.timeout`
/// for the script's result, deletes the files (whatever happened).
pub fn run(
    plan: &Plan,
    memory: &dyn RemoteMemory,
    writes: &mut dyn WriteMemory,
    request: &Request<'_>,
) -> Result<Started, RemoteExecError> {
    let pid = plan.pid;
    let timeout = request.timeout;
    let mut phases = super::inject::Phases::start();
    let files = |what: &str, source: io::Error| RemoteExecError::Files {
        pid,
        what: what.into(),
        source,
    };
    let placed = Placed::create(request.root, request.owner)
        .map_err(|e| files("creating a directory", e))?;
    let how = match request.reuse_start {
        Some(start) => Load::Loaded { start },
        None => Load::Library(
            placed
                .write_file(LIBRARY_FILE, request.library)
                .map_err(|e| files("writing the library", e))?,
        ),
    };
    let text = script(&how, &placed.directory, request.agent_pid, request.flags)?;
    let script_path = placed
        .write_file(SCRIPT_FILE, text.as_bytes())
        .map_err(|e| files("writing the script", e))?;
    phases.end("placing the files");
    send(memory, writes, plan, &script_path)?;
    let until = Instant::now() + timeout;
    let result = loop {
        match placed.result() {
            Ok(Some(text)) => break text,
            Ok(None) => {}
            Err(e) => return Err(files("reading the result", e)),
        }
        if !Path::new(&format!("/proc/{pid}")).exists() {
            return Err(RemoteExecError::Exited(pid));
        }
        if Instant::now() >= until {
            withdraw(writes, plan);
            return Err(RemoteExecError::NeverRan {
                pid,
                waited: timeout,
            });
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    phases.end("waiting for the main thread to run the script");
    drop(placed);
    phases.end("deleting the files");
    let start_result = result
        .trim()
        .parse::<i32>()
        .map_err(|_| RemoteExecError::ScriptFailed {
            pid,
            message: result.trim().chars().take(400).collect(),
        })?;
    Ok(Started {
        start_result,
        phases: phases.into_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::memory::SnapshotMemory;
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};

    const RUNTIME: u64 = 0x10_0000;
    const INTERPRETER: u64 = 0x20_0000;
    const THREAD: u64 = 0x30_0000;

    fn support() -> DebuggerSupport {
        DebuggerSupport {
            interpreters_head: 0x28,
            threads_main: 0x58,
            eval_breaker: 0x18,
            remote_debugger_support: 0x200,
            remote_debugging_enabled: 0x1000,
            debugger_pending_call: 0,
            debugger_script_path: 4,
            debugger_script_path_size: 512,
        }
    }

    fn v14() -> PythonVersion {
        PythonVersion {
            major: 3,
            minor: 14,
            patch: 2,
            ..Default::default()
        }
    }

    /// A target with one interpreter, remote debugging `enabled`, its main
    /// thread state's eval breaker holding `breaker`.
    fn memory(enabled: i32, breaker: u64) -> SnapshotMemory {
        let s = support();
        let mut m = SnapshotMemory::new();
        let mut runtime = vec![0u8; 0x100];
        runtime[0x28..0x30].copy_from_slice(&INTERPRETER.to_le_bytes());
        m.add_region(RUNTIME, runtime);
        let mut interpreter = vec![0u8; 0x2000];
        interpreter[0x58..0x60].copy_from_slice(&THREAD.to_le_bytes());
        let at = s.remote_debugging_enabled as usize;
        interpreter[at..at + 4].copy_from_slice(&enabled.to_le_bytes());
        m.add_region(INTERPRETER, interpreter);
        let mut thread = vec![0u8; 0x800];
        thread[0x18..0x20].copy_from_slice(&breaker.to_le_bytes());
        m.add_region(THREAD, thread);
        m
    }

    #[derive(Default)]
    struct Recorded(Vec<(u64, Vec<u8>)>);

    impl WriteMemory for Recorded {
        fn write(&mut self, address: u64, bytes: &[u8]) -> io::Result<()> {
            self.0.push((address, bytes.to_vec()));
            Ok(())
        }
    }

    #[test]
    fn the_request_writes_the_path_then_the_flag_then_the_breaker_bit() {
        let m = memory(1, 0x0000_0300 | 1);
        let plan = locate(&m, RUNTIME, support(), 7, &v14()).unwrap();
        assert_eq!(plan.thread_state, THREAD);
        let mut writes = Recorded::default();
        send(&m, &mut writes, &plan, "/tmp/pydeep-ab/start.py").unwrap();
        let mut path = b"/tmp/pydeep-ab/start.py".to_vec();
        path.push(0);
        assert_eq!(
            writes.0,
            vec![
                (THREAD + 0x200 + 4, path),
                (THREAD + 0x200, 1i32.to_le_bytes().to_vec()),
                // The version bits and the GIL drop request kept.
                (
                    THREAD + 0x18,
                    (0x0000_0300u64 | 1 | 0x20).to_le_bytes().to_vec()
                ),
            ]
        );
        let mut withdrawn = Recorded::default();
        withdraw(&mut withdrawn, &plan);
        assert_eq!(
            withdrawn.0,
            vec![
                (THREAD + 0x200, 0i32.to_le_bytes().to_vec()),
                (THREAD + 0x200 + 4, vec![0]),
            ]
        );
    }

    #[test]
    fn a_path_that_does_not_fit_with_its_nul_is_refused_before_any_write() {
        let m = memory(1, 0);
        let plan = locate(&m, RUNTIME, support(), 7, &v14()).unwrap();
        let mut writes = Recorded::default();
        let longest = format!("/{}", "a".repeat(510));
        assert_eq!(longest.len(), 511);
        send(&m, &mut writes, &plan, &longest).unwrap();
        assert_eq!(writes.0[0].1.len(), 512);
        let mut writes = Recorded::default();
        let error = send(&m, &mut writes, &plan, &format!("{longest}a")).unwrap_err();
        assert!(matches!(
            error,
            RemoteExecError::PathTooLong {
                len: 512,
                size: 512,
                ..
            }
        ));
        assert!(send(&m, &mut writes, &plan, "/tmp/a\0b").is_err());
        assert!(writes.0.is_empty());
    }

    #[test]
    fn a_target_with_remote_debugging_disabled_is_refused_saying_how_to_enable_it() {
        for value in [0, 2, -1] {
            let m = memory(value, 0);
            let error = locate(&m, RUNTIME, support(), 7, &v14()).unwrap_err();
            assert!(matches!(error, RemoteExecError::Disabled { pid: 7, .. }));
            let message = error.to_string();
            assert!(message.contains("PYTHON_DISABLE_REMOTE_DEBUG"), "{message}");
            assert!(message.contains("3.14.2"), "{message}");
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn a_disabled_target_exits_21_and_a_script_never_run_19() {
        use crate::cli::exit::{exit_for, Exit};
        let disabled = RemoteExecError::Disabled {
            pid: 7,
            version: "3.14.2".into(),
        };
        let error = super::super::inject_failure(disabled.into());
        assert_eq!(exit_for(&error), Exit::RemoteDebugDisabled);
        assert_eq!(Exit::RemoteDebugDisabled as u8, 21);
        let never = RemoteExecError::NeverRan {
            pid: 7,
            waited: Duration::from_secs(2),
        };
        let error = super::super::inject_failure(never.into());
        assert_eq!(exit_for(&error), Exit::NoSafePoint);
        assert!(error.to_string().contains("eval-breaker"));
    }

    #[test]
    fn a_missing_interpreter_or_main_thread_is_an_error_not_a_write() {
        let mut m = memory(1, 0);
        m.write(INTERPRETER + 0x58, &0u64.to_le_bytes());
        assert!(locate(&m, RUNTIME, support(), 7, &v14())
            .unwrap_err()
            .to_string()
            .contains("main thread"));
        m.write(RUNTIME + 0x28, &0u64.to_le_bytes());
        assert!(locate(&m, RUNTIME, support(), 7, &v14())
            .unwrap_err()
            .to_string()
            .contains("no interpreter"));
        let mut wild = support();
        wild.threads_main = u64::MAX;
        let m = memory(1, 0);
        assert!(locate(&m, RUNTIME, wild, 7, &v14()).is_err());
    }

    #[test]
    fn only_tables_with_a_debugger_section_choose_pep_768() {
        use crate::reading::cpython::semantics_for;
        for minor in 9..=13 {
            assert_eq!(
                format_for(&semantics_for(3, minor).unwrap()),
                None,
                "3.{minor}"
            );
        }
        assert_eq!(
            format_for(&semantics_for(3, 14).unwrap()),
            Some(TableFormat::V3_14)
        );
        assert_eq!(
            format_for(&semantics_for(3, 15).unwrap()),
            Some(TableFormat::V3_15)
        );
    }

    #[test]
    fn the_files_are_private_unguessable_and_deleted() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("tmp")).unwrap();
        let placed = Placed::create(root.path(), None).unwrap();
        let other = Placed::create(root.path(), None).unwrap();
        assert_ne!(placed.directory, other.directory);
        let name = placed.directory.strip_prefix("/tmp/pydeep-").unwrap();
        assert_eq!(name.len(), 32);
        let host = root.path().join(placed.directory.trim_start_matches('/'));
        let dir = std::fs::symlink_metadata(&host).unwrap();
        assert!(dir.is_dir());
        assert_eq!(dir.permissions().mode() & 0o7777, 0o700);
        // SAFETY: no arguments.
        assert_eq!(dir.uid(), unsafe { libc::geteuid() });
        let script = placed.write_file(SCRIPT_FILE, b"pass\n").unwrap();
        assert_eq!(script, format!("{}/start.py", placed.directory));
        let file = std::fs::symlink_metadata(host.join(SCRIPT_FILE)).unwrap();
        assert_eq!(file.permissions().mode() & 0o7777, 0o600);
        // A name that exists is never written through (O_EXCL).
        assert!(placed.write_file(SCRIPT_FILE, b"x").is_err());
        // A result that is a link is not followed.
        std::os::unix::fs::symlink("/etc/hostname", host.join(RESULT_FILE)).unwrap();
        assert!(placed.result().is_err());
        std::fs::remove_file(host.join(RESULT_FILE)).unwrap();
        assert_eq!(placed.result().unwrap(), None);
        std::fs::write(host.join(RESULT_FILE), "0").unwrap();
        assert_eq!(placed.result().unwrap().as_deref(), Some("0"));
        drop(placed);
        assert!(!host.exists());
        drop(other);
        assert_eq!(
            std::fs::read_dir(root.path().join("tmp")).unwrap().count(),
            0
        );
    }

    #[test]
    fn a_target_tmp_that_is_a_link_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), root.path().join("tmp")).unwrap();
        assert!(Placed::create(root.path(), None).is_err());
        assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0);
    }

    #[test]
    fn the_script_names_only_its_own_files_and_the_start_function() {
        let fresh = script(
            &Load::Library("/tmp/pydeep-ab/pydeep-tracer-v5.so".into()),
            "/tmp/pydeep-ab",
            4242,
            5,
        )
        .unwrap();
        assert!(fresh.contains("open(\"/tmp/pydeep-ab/pydeep-tracer-v5.so\", \"rb\")"));
        assert!(fresh.contains("os.memfd_create(\"pydeep-tracer-v5\""));
        assert!(fresh.contains("library.pydeep_tracer_v5_start"));
        assert!(fresh.contains("start(4242, 5)"));
        assert!(fresh.contains("\"/tmp/pydeep-ab/result\""));
        let again = script(&Load::Loaded { start: 0x7f00_1234 }, "/tmp/pydeep-ab", 1, 0).unwrap();
        assert!(!again.contains("CDLL"));
        assert!(again.contains(&format!("({})", 0x7f00_1234u64)));
        assert!(script(&Load::Library("/tmp/a\"b".into()), "/tmp/x", 1, 0).is_err());
        assert!(script(&Load::Loaded { start: 1 }, "/tmp/x y", 1, 0).is_err());
    }
}
