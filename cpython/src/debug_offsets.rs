//! `_Py_DebugOffsets`: the offsets table CPython 3.13+ keeps at the start of
//! `_PyRuntime` for out-of-process tools.
//!
//! The table is a cookie (`xdebugpy`) followed by `uint64_t`s, grouped in
//! sections. Its shape changes between minor versions (3.14 added sections
//! and fields in the middle of existing ones), so each format here lists its
//! fields in order, as Include/internal/pycore_runtime.h (3.13) and
//! Include/internal/pycore_debug_offsets.h (3.14+) declare them. Every value
//! is read from the target and validated; none is hard-coded.

use crate::layouts::{self, Offsets};
use crate::semantics::PythonVersion;

/// The cookie that starts the table.
pub const COOKIE: &[u8; 8] = b"xdebugpy";

/// One known shape of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableFormat {
    /// CPython 3.13 (pycore_runtime.h).
    V3_13,
    /// CPython 3.14 (pycore_debug_offsets.h): adds threads_main,
    /// code_object_generation, tlbc_generation, stackpointer, tlbc_index,
    /// co_tlbc, and the set, generator, llist and debugger sections.
    V3_14,
    /// CPython 3.15 (checked against 3.15.0rc1's own table): as 3.14, with
    /// thread_state extended (base_frame, last_profiled_frame,
    /// last_profiled_frame_seq after current_frame; holds_gil, gil_requested,
    /// current_exception, exc_state after status), a new err_stackitem
    /// section, type_object's tp_basicsize and tp_dictoffset, a new
    /// heap_type_object section, unicode_object's compactunicodeobject_size
    /// and gc's frame and generation statistics.
    V3_15,
}

// The table's sections, as each version's header declares them. A format
// is the concatenation of its sections (see `TableFormat::fields`), so each
// difference between versions is stated once, in the section it changed.

const HEAD: &[&str] = &["version", "free_threaded"];
const RUNTIME: &[&str] = &[
    "runtime_state.size",
    "runtime_state.finalizing",
    "runtime_state.interpreters_head",
];
const INTERPRETER_3_13: &[&str] = &[
    "interpreter_state.size",
    "interpreter_state.id",
    "interpreter_state.next",
    "interpreter_state.threads_head",
    "interpreter_state.gc",
    "interpreter_state.imports_modules",
    "interpreter_state.sysdict",
    "interpreter_state.builtins",
    "interpreter_state.ceval_gil",
    "interpreter_state.gil_runtime_state",
    "interpreter_state.gil_runtime_state_enabled",
    "interpreter_state.gil_runtime_state_locked",
    "interpreter_state.gil_runtime_state_holder",
];
/// 3.14: threads_main after threads_head; two generation counters at the end.
const INTERPRETER_3_14: &[&str] = &[
    "interpreter_state.size",
    "interpreter_state.id",
    "interpreter_state.next",
    "interpreter_state.threads_head",
    "interpreter_state.threads_main",
    "interpreter_state.gc",
    "interpreter_state.imports_modules",
    "interpreter_state.sysdict",
    "interpreter_state.builtins",
    "interpreter_state.ceval_gil",
    "interpreter_state.gil_runtime_state",
    "interpreter_state.gil_runtime_state_enabled",
    "interpreter_state.gil_runtime_state_locked",
    "interpreter_state.gil_runtime_state_holder",
    "interpreter_state.code_object_generation",
    "interpreter_state.tlbc_generation",
];
const THREAD_3_13: &[&str] = &[
    "thread_state.size",
    "thread_state.prev",
    "thread_state.next",
    "thread_state.interp",
    "thread_state.current_frame",
    "thread_state.thread_id",
    "thread_state.native_thread_id",
    "thread_state.datastack_chunk",
    "thread_state.status",
];
/// 3.15: the frames Tachyon's sampler caches by (base_frame,
/// last_profiled_frame and, from 3.15.0b4, last_profiled_frame_seq), the GIL
/// flags and the exception state; then a new err_stackitem section.
const THREAD_3_15: &[&str] = &[
    "thread_state.size",
    "thread_state.prev",
    "thread_state.next",
    "thread_state.interp",
    "thread_state.current_frame",
    "thread_state.base_frame",
    "thread_state.last_profiled_frame",
    "thread_state.last_profiled_frame_seq",
    "thread_state.thread_id",
    "thread_state.native_thread_id",
    "thread_state.datastack_chunk",
    "thread_state.status",
    "thread_state.holds_gil",
    "thread_state.gil_requested",
    "thread_state.current_exception",
    "thread_state.exc_state",
    "err_stackitem.exc_value",
];
const FRAME_3_13: &[&str] = &[
    "interpreter_frame.size",
    "interpreter_frame.previous",
    "interpreter_frame.executable",
    "interpreter_frame.instr_ptr",
    "interpreter_frame.localsplus",
    "interpreter_frame.owner",
];
const FRAME_3_14_TAIL: &[&str] = &[
    "interpreter_frame.stackpointer",
    "interpreter_frame.tlbc_index",
];
const CODE_3_13: &[&str] = &[
    "code_object.size",
    "code_object.filename",
    "code_object.name",
    "code_object.qualname",
    "code_object.linetable",
    "code_object.firstlineno",
    "code_object.argcount",
    "code_object.localsplusnames",
    "code_object.localspluskinds",
    "code_object.co_code_adaptive",
];
const CODE_3_14_TAIL: &[&str] = &["code_object.co_tlbc"];
const PYOBJECT: &[&str] = &["pyobject.size", "pyobject.ob_type"];
const TYPE_3_13: &[&str] = &[
    "type_object.size",
    "type_object.tp_name",
    "type_object.tp_repr",
    "type_object.tp_flags",
];
const TYPE_3_15_TAIL: &[&str] = &[
    "type_object.tp_basicsize",
    "type_object.tp_dictoffset",
    "heap_type_object.size",
    "heap_type_object.ht_cached_keys",
];
const TUPLE_AND_LIST: &[&str] = &[
    "tuple_object.size",
    "tuple_object.ob_item",
    "tuple_object.ob_size",
    "list_object.size",
    "list_object.ob_item",
    "list_object.ob_size",
];
const SET_3_14: &[&str] = &[
    "set_object.size",
    "set_object.used",
    "set_object.table",
    "set_object.mask",
];
const DICT_TO_BYTES: &[&str] = &[
    "dict_object.size",
    "dict_object.ma_keys",
    "dict_object.ma_values",
    "float_object.size",
    "float_object.ob_fval",
    "long_object.size",
    "long_object.lv_tag",
    "long_object.ob_digit",
    "bytes_object.size",
    "bytes_object.ob_size",
    "bytes_object.ob_sval",
];
const UNICODE_3_13: &[&str] = &[
    "unicode_object.size",
    "unicode_object.state",
    "unicode_object.length",
    "unicode_object.asciiobject_size",
];
const UNICODE_3_15_TAIL: &[&str] = &["unicode_object.compactunicodeobject_size"];
const GC_3_13: &[&str] = &["gc.size", "gc.collecting"];
const GC_3_15_TAIL: &[&str] = &[
    "gc.frame",
    "gc.generation_stats_size",
    "gc.generation_stats",
];
/// 3.14+; llist_node and debugger_support follow it.
const GEN_3_14: &[&str] = &[
    "gen_object.size",
    "gen_object.gi_name",
    "gen_object.gi_iframe",
    "gen_object.gi_frame_state",
];
/// 3.14+: `struct llist_node` (pycore_llist.h), the links of asyncio's
/// per-thread task lists.
const LLIST_NODE_3_14: &[&str] = &["llist_node.next", "llist_node.prev"];
/// 3.14+, the table's last section: what a PEP 768 sender
/// (`sys.remote_exec`, Python/remote_debugging.c) writes. `eval_breaker` and
/// `remote_debugger_support` are offsets in `PyThreadState`,
/// `remote_debugging_enabled` in `PyInterpreterState` (its
/// `config.remote_debug`, an int), `debugger_pending_call` (an int32) and
/// `debugger_script_path` in `_PyRemoteDebuggerSupport`
/// (Include/cpython/pystate.h), and `debugger_script_path_size` is the size
/// of that path buffer (`Py_MAX_SCRIPT_PATH_SIZE`, 512), not an offset.
/// Unchanged in 3.15.0rc1.
const DEBUGGER_SUPPORT_3_14: &[&str] = &[
    "debugger_support.eval_breaker",
    "debugger_support.remote_debugger_support",
    "debugger_support.remote_debugging_enabled",
    "debugger_support.debugger_pending_call",
    "debugger_support.debugger_script_path",
    "debugger_support.debugger_script_path_size",
];

impl TableFormat {
    /// The table's fields after the cookie, in order.
    pub fn fields(self) -> Vec<&'static str> {
        match self {
            TableFormat::V3_13 => [
                HEAD,
                RUNTIME,
                INTERPRETER_3_13,
                THREAD_3_13,
                FRAME_3_13,
                CODE_3_13,
                PYOBJECT,
                TYPE_3_13,
                TUPLE_AND_LIST,
                DICT_TO_BYTES,
                UNICODE_3_13,
                GC_3_13,
            ]
            .concat(),
            TableFormat::V3_14 => [
                HEAD,
                RUNTIME,
                INTERPRETER_3_14,
                THREAD_3_13,
                FRAME_3_13,
                FRAME_3_14_TAIL,
                CODE_3_13,
                CODE_3_14_TAIL,
                PYOBJECT,
                TYPE_3_13,
                TUPLE_AND_LIST,
                SET_3_14,
                DICT_TO_BYTES,
                UNICODE_3_13,
                GC_3_13,
                GEN_3_14,
                LLIST_NODE_3_14,
                DEBUGGER_SUPPORT_3_14,
            ]
            .concat(),
            TableFormat::V3_15 => [
                HEAD,
                RUNTIME,
                INTERPRETER_3_14,
                THREAD_3_15,
                FRAME_3_13,
                FRAME_3_14_TAIL,
                CODE_3_13,
                CODE_3_14_TAIL,
                PYOBJECT,
                TYPE_3_13,
                TYPE_3_15_TAIL,
                TUPLE_AND_LIST,
                SET_3_14,
                DICT_TO_BYTES,
                UNICODE_3_13,
                UNICODE_3_15_TAIL,
                GC_3_13,
                GC_3_15_TAIL,
                GEN_3_14,
                LLIST_NODE_3_14,
                DEBUGGER_SUPPORT_3_14,
            ]
            .concat(),
        }
    }

    /// Size in bytes of the table (3.13: the prefix pydeep knows).
    pub fn byte_len(self) -> usize {
        COOKIE.len() + 8 * self.fields().len()
    }

    /// True if the table has a `debugger_support` section: the target
    /// speaks PEP 768 (3.14+), if its build and configuration allow it.
    pub fn has_debugger_support(self) -> bool {
        self.fields().contains(&DEBUGGER_SUPPORT_3_14[0])
    }
}

/// What a PEP 768 sender needs from the table: the two pointers it follows
/// to the main thread's state, and the `debugger_support` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DebuggerSupport {
    /// `runtime_state.interpreters_head`: offset in `_PyRuntime` of the
    /// first interpreter's address.
    pub interpreters_head: u64,
    /// `interpreter_state.threads_main`: offset in the interpreter of its
    /// main thread state's address.
    pub threads_main: u64,
    /// Offset of `eval_breaker` (a `uintptr_t`) in `PyThreadState`.
    pub eval_breaker: u64,
    /// Offset of `remote_debugger_support` in `PyThreadState`.
    pub remote_debugger_support: u64,
    /// Offset of `config.remote_debug` (an int, 1 when enabled) in
    /// `PyInterpreterState`.
    pub remote_debugging_enabled: u64,
    /// Offset of `debugger_pending_call` (an int32) in
    /// `_PyRemoteDebuggerSupport`.
    pub debugger_pending_call: u64,
    /// Offset of `debugger_script_path` in `_PyRemoteDebuggerSupport`.
    pub debugger_script_path: u64,
    /// Size of the path buffer, its NUL included.
    pub debugger_script_path_size: u64,
}

/// The parsed table: field name to value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebugTable {
    values: Vec<(&'static str, u64)>,
}

impl DebugTable {
    /// Parses `bytes` (the start of `_PyRuntime`) in `format`, checking the
    /// cookie. Values are not validated here; see [`DebugTable::validate`].
    pub fn parse(bytes: &[u8], format: TableFormat) -> Result<DebugTable, String> {
        if bytes.len() < format.byte_len() {
            return Err(format!(
                "table truncated: {} of {} bytes",
                bytes.len(),
                format.byte_len()
            ));
        }
        if &bytes[..8] != COOKIE {
            return Err(format!(
                "cookie is {:?}, expected \"xdebugpy\"",
                String::from_utf8_lossy(&bytes[..8])
            ));
        }
        let values = format
            .fields()
            .into_iter()
            .enumerate()
            .map(|(i, name)| {
                let at = 8 + 8 * i;
                let mut word = [0u8; 8];
                word.copy_from_slice(&bytes[at..at + 8]);
                (name, u64::from_le_bytes(word))
            })
            .collect();
        Ok(DebugTable { values })
    }

    /// The value of `name` (0 if the format has no such field).
    pub fn get(&self, name: &str) -> u64 {
        self.values
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, v)| *v)
    }

    fn has(&self, name: &str) -> bool {
        self.values.iter().any(|(n, _)| *n == name)
    }

    /// Checks the table describes `version` and that every offset is sane:
    /// section sizes within bounds and every field inside its section.
    pub fn validate(&self, version: &PythonVersion) -> Result<(), String> {
        let hex = self.get("version");
        let (major, minor) = ((hex >> 24) & 0xff, (hex >> 16) & 0xff);
        if (major, minor) != (u64::from(version.major), u64::from(version.minor)) {
            return Err(format!(
                "table is for version 0x{hex:08x} ({major}.{minor}), target reports {version}"
            ));
        }
        if self.get("free_threaded") > 1 {
            return Err(format!(
                "free_threaded is {}, expected 0 or 1",
                self.get("free_threaded")
            ));
        }
        // (section, smallest plausible size, largest plausible size)
        let bounds: &[(&str, u64, u64)] = &[
            ("runtime_state", 64, 1 << 24),
            ("interpreter_state", 64, 1 << 24),
            ("thread_state", 64, 1 << 16),
            ("interpreter_frame", 40, 512),
            ("code_object", 64, 1024),
            ("pyobject", 16, 64),
            ("type_object", 128, 2048),
            ("tuple_object", 24, 128),
            ("list_object", 24, 128),
            ("dict_object", 24, 128),
            ("unicode_object", 24, 256),
        ];
        for (section, low, high) in bounds {
            let size = self.get(&format!("{section}.size"));
            if size < *low || size > *high {
                return Err(format!("{section}.size is {size}, outside {low}..={high}"));
            }
            let prefix = format!("{section}.");
            for (name, value) in &self.values {
                if !name.starts_with(&prefix) || name.ends_with(".size") {
                    continue;
                }
                // gil_runtime_state_enabled is 0 outside free-threaded
                // builds; co_code_adaptive is the trailing flexible array.
                if *value > size {
                    return Err(format!("{name} is {value}, beyond {section}.size {size}"));
                }
            }
        }
        self.validate_debugger_support()?;
        let gil = self.get("interpreter_state.gil_runtime_state");
        for field in [
            "interpreter_state.gil_runtime_state_locked",
            "interpreter_state.gil_runtime_state_holder",
        ] {
            if self.get(field) < gil {
                return Err(format!("{field} lies before gil_runtime_state"));
            }
        }
        Ok(())
    }

    /// The `debugger_support` section (and `llist_node` before it) lies in
    /// the structs it names: the int32 and the path buffer inside the
    /// thread state, the int inside the interpreter state, a path buffer of
    /// a plausible size. A table without the section passes.
    fn validate_debugger_support(&self) -> Result<(), String> {
        let Some(d) = self.debugger_support() else {
            return Ok(());
        };
        for name in ["llist_node.next", "llist_node.prev"] {
            if self.get(name) > 64 {
                return Err(format!("{name} is {}, beyond 64", self.get(name)));
            }
        }
        if !(64..=4096).contains(&d.debugger_script_path_size) {
            return Err(format!(
                "debugger_support.debugger_script_path_size is {}, outside 64..=4096",
                d.debugger_script_path_size
            ));
        }
        let thread_size = self.get("thread_state.size");
        let interpreter_size = self.get("interpreter_state.size");
        // (field, offset of its end, the struct it must end inside, that struct)
        let ends = [
            (
                "eval_breaker",
                d.eval_breaker.checked_add(8),
                thread_size,
                "thread_state",
            ),
            (
                "debugger_pending_call",
                d.remote_debugger_support
                    .checked_add(d.debugger_pending_call)
                    .and_then(|at| at.checked_add(4)),
                thread_size,
                "thread_state",
            ),
            (
                "debugger_script_path",
                d.remote_debugger_support
                    .checked_add(d.debugger_script_path)
                    .and_then(|at| at.checked_add(d.debugger_script_path_size)),
                thread_size,
                "thread_state",
            ),
            (
                "remote_debugging_enabled",
                d.remote_debugging_enabled.checked_add(4),
                interpreter_size,
                "interpreter_state",
            ),
        ];
        for (field, end, size, section) in ends {
            if end.is_none_or(|end| end > size) {
                return Err(format!(
                    "debugger_support.{field} ends beyond {section}.size {size}"
                ));
            }
        }
        Ok(())
    }

    /// The PEP 768 offsets, if the table has a `debugger_support` section.
    /// Only meaningful once [`DebugTable::validate`] passed.
    pub fn debugger_support(&self) -> Option<DebuggerSupport> {
        if !self.has("debugger_support.eval_breaker") {
            return None;
        }
        let get = |name: &str| self.get(&format!("debugger_support.{name}"));
        Some(DebuggerSupport {
            interpreters_head: self.get("runtime_state.interpreters_head"),
            threads_main: self.get("interpreter_state.threads_main"),
            eval_breaker: get("eval_breaker"),
            remote_debugger_support: get("remote_debugger_support"),
            remote_debugging_enabled: get("remote_debugging_enabled"),
            debugger_pending_call: get("debugger_pending_call"),
            debugger_script_path: get("debugger_script_path"),
            debugger_script_path_size: get("debugger_script_path_size"),
        })
    }

    /// The table in pydeep's offsets vocabulary.
    pub fn to_offsets(&self, version: &PythonVersion) -> Offsets {
        let some = |name: &str| self.has(name).then(|| self.get(name));
        let gil = self.get("interpreter_state.gil_runtime_state");
        let mut o = layouts::EMPTY;
        o.version = (version.major, version.minor, version.patch);
        // The build flavour is the table's own word, not the version's:
        // a free-threaded table (Py_GIL_DISABLED) lays objects out
        // differently and must only be supplemented by a free-threaded
        // generated table.
        o.free_threaded = self.get("free_threaded") == 1;
        o.runtime_interpreters_head = some("runtime_state.interpreters_head");
        o.interpreter_size = some("interpreter_state.size");
        o.interpreter_id = some("interpreter_state.id");
        o.interpreter_next = some("interpreter_state.next");
        o.interpreter_threads_head = some("interpreter_state.threads_head");
        o.interpreter_gc = some("interpreter_state.gc");
        o.interpreter_modules = some("interpreter_state.imports_modules");
        o.interpreter_sysdict = some("interpreter_state.sysdict");
        o.interpreter_builtins = some("interpreter_state.builtins");
        o.interpreter_ceval_gil = some("interpreter_state.ceval_gil");
        // The table gives offsets of _gil.locked inside the interpreter;
        // the walker follows ceval.gil (which may point at the main
        // interpreter's _gil), so keep them relative to the GIL struct.
        o.gil_locked = some("interpreter_state.gil_runtime_state_locked").map(|v| v - gil);
        o.gil_last_holder = some("interpreter_state.gil_runtime_state_holder").map(|v| v - gil);
        // Free-threaded builds only: `enabled` of the GIL struct, already
        // relative to it (pycore_runtime.h `_Py_Debug_gilruntimestate_enabled`
        // is an offsetof in struct _gil_runtime_state, 0 in default builds).
        if o.free_threaded {
            o.gil_enabled = some("interpreter_state.gil_runtime_state_enabled");
        }
        o.thread_size = some("thread_state.size");
        o.thread_prev = some("thread_state.prev");
        o.thread_next = some("thread_state.next");
        o.thread_interp = some("thread_state.interp");
        o.thread_current_frame = some("thread_state.current_frame");
        o.thread_thread_id = some("thread_state.thread_id");
        o.thread_native_thread_id = some("thread_state.native_thread_id");
        o.thread_datastack_chunk = some("thread_state.datastack_chunk");
        o.interpreter_frame_size = some("interpreter_frame.size");
        o.interpreter_frame_previous = some("interpreter_frame.previous");
        o.interpreter_frame_f_executable = some("interpreter_frame.executable");
        o.interpreter_frame_instr_ptr = some("interpreter_frame.instr_ptr");
        o.interpreter_frame_localsplus = some("interpreter_frame.localsplus");
        o.interpreter_frame_owner = some("interpreter_frame.owner");
        o.code_size = some("code_object.size");
        o.code_co_filename = some("code_object.filename");
        o.code_co_name = some("code_object.name");
        o.code_co_qualname = some("code_object.qualname");
        o.code_co_linetable = some("code_object.linetable");
        o.code_co_firstlineno = some("code_object.firstlineno");
        o.code_co_argcount = some("code_object.argcount");
        o.code_co_localsplusnames = some("code_object.localsplusnames");
        o.code_co_localspluskinds = some("code_object.localspluskinds");
        o.code_co_code_adaptive = some("code_object.co_code_adaptive");
        o.object_ob_type = some("pyobject.ob_type");
        o.type_size = some("type_object.size");
        o.type_tp_name = some("type_object.tp_name");
        o.type_tp_flags = some("type_object.tp_flags");
        o.tuple_ob_item = some("tuple_object.ob_item");
        o.var_object_ob_size = some("tuple_object.ob_size");
        o.list_ob_item = some("list_object.ob_item");
        o.dict_ma_keys = some("dict_object.ma_keys");
        o.dict_ma_values = some("dict_object.ma_values");
        o.float_ob_fval = some("float_object.ob_fval");
        o.long_lv_tag = some("long_object.lv_tag");
        o.long_ob_digit = some("long_object.ob_digit");
        o.bytes_ob_sval = some("bytes_object.ob_sval");
        o.unicode_state = some("unicode_object.state");
        o.unicode_length = some("unicode_object.length");
        o.unicode_ascii_size = some("unicode_object.asciiobject_size");
        o.gc_state_collecting = some("gc.collecting");
        o.generator_gi_name = some("gen_object.gi_name");
        o.generator_gi_iframe = some("gen_object.gi_iframe");
        o.generator_gi_frame_state = some("gen_object.gi_frame_state");
        o.interpreter_frame_stackpointer = some("interpreter_frame.stackpointer");
        // The table has no gi_qualname: it is the word after gi_name in
        // `_PyGenObject_HEAD` (weakreflist, name, qualname in 3.11-3.14).
        if o.generator_gi_qualname.is_none() {
            o.generator_gi_qualname = o.generator_gi_name.map(|at| at + 8);
        }
        // Nor running_async: in every version with a gen_object section it
        // is the char right before gi_frame_state (`_PyGenObject_HEAD`:
        // hooks_inited, closed, running_async, frame_state).
        if self.has("gen_object.gi_frame_state") {
            o.generator_running_async = o.generator_gi_frame_state.map(|at| at.saturating_sub(1));
        }
        o
    }
}

/// Fills fields the debug table lacks from a generated table of the same
/// minor version and build flavour whose every field both know agrees
/// (patch releases may differ: 3.13.5's GC state is not 3.13.0's, so the
/// first generated table that agrees is taken).
pub fn supplement(offsets: &mut Offsets) {
    let agrees = |generated: &Offsets| {
        offsets
            .fields()
            .iter()
            .zip(generated.fields())
            .all(|((_, ours), (_, theirs))| ours.is_none() || theirs.is_none() || *ours == theirs)
    };
    let found = layouts::ALL.iter().find(|g| {
        (g.version.0, g.version.1, g.free_threaded)
            == (offsets.version.0, offsets.version.1, offsets.free_threaded)
            && agrees(g)
    });
    if let Some(generated) = found {
        offsets.fill_missing_from(generated);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a 3.13 table from the generated 3.13 offsets, as the target's
    /// `_Py_DebugOffsets_INIT` would: each table field takes the generated
    /// value of the offsets field `to_offsets` maps it to.
    fn table_3_13(version_hex: u64) -> Vec<u8> {
        let g = layouts::CPYTHON_3_13;
        let fields = TableFormat::V3_13.fields();
        let gil_base = 4096u64;
        let probe = |name: &str| -> Option<u64> {
            let mut bytes = COOKIE.to_vec();
            for field in &fields {
                let value: u64 = if *field == name { 0x5a5a } else { 0 };
                bytes.extend_from_slice(&value.to_le_bytes());
            }
            let offsets = DebugTable::parse(&bytes, TableFormat::V3_13)
                .unwrap()
                .to_offsets(&v(13));
            let index = offsets
                .fields()
                .iter()
                .position(|(_, v)| *v == Some(0x5a5a))?;
            g.fields()[index].1
        };
        let value = |name: &str| -> u64 {
            match name {
                "version" => version_hex,
                "free_threaded" => 0,
                "runtime_state.size" => 100_000,
                "interpreter_state.gil_runtime_state" => gil_base,
                "interpreter_state.gil_runtime_state_locked" => gil_base + g.gil_locked.unwrap(),
                "interpreter_state.gil_runtime_state_holder" => {
                    gil_base + g.gil_last_holder.unwrap()
                }
                "pyobject.size" => 16,
                "tuple_object.size" => 32,
                "list_object.size" => 40,
                "dict_object.size" => 48,
                "unicode_object.size" => 72,
                _ if name.ends_with(".size") && probe(name).is_none() => 64,
                _ => probe(name).unwrap_or(0),
            }
        };
        let mut bytes = COOKIE.to_vec();
        for name in &fields {
            bytes.extend_from_slice(&value(name).to_le_bytes());
        }
        bytes
    }

    fn v(minor: u32) -> PythonVersion {
        PythonVersion {
            major: 3,
            minor,
            ..Default::default()
        }
    }

    #[test]
    fn a_well_formed_table_parses_validates_and_is_supplemented() {
        let bytes = table_3_13(0x030d00f0);
        let table = DebugTable::parse(&bytes, TableFormat::V3_13).unwrap();
        table.validate(&v(13)).unwrap();
        let mut offsets = table.to_offsets(&v(13));
        assert_eq!(offsets.gil_locked, layouts::CPYTHON_3_13.gil_locked);
        assert_eq!(offsets.code_co_consts, None);
        supplement(&mut offsets);
        assert_eq!(offsets.code_co_consts, layouts::CPYTHON_3_13.code_co_consts);
    }

    #[test]
    fn a_table_for_another_version_or_with_a_bad_cookie_is_refused() {
        let bytes = table_3_13(0x030d00f0);
        let table = DebugTable::parse(&bytes, TableFormat::V3_13).unwrap();
        assert!(table.validate(&v(14)).unwrap_err().contains("3.13"));
        let mut broken = bytes.clone();
        broken[0] = b'y';
        assert!(DebugTable::parse(&broken, TableFormat::V3_13)
            .unwrap_err()
            .contains("cookie"));
        assert!(DebugTable::parse(&bytes[..40], TableFormat::V3_13).is_err());
    }

    #[test]
    fn an_offset_beyond_its_struct_is_refused() {
        let mut bytes = table_3_13(0x030d00f0);
        let index = TableFormat::V3_13
            .fields()
            .iter()
            .position(|f| *f == "interpreter_frame.owner")
            .unwrap();
        bytes[8 + 8 * index..16 + 8 * index].copy_from_slice(&4000u64.to_le_bytes());
        let table = DebugTable::parse(&bytes, TableFormat::V3_13).unwrap();
        assert!(table.validate(&v(13)).unwrap_err().contains("owner"));
    }

    #[test]
    fn disagreeing_generated_tables_are_not_mixed_in() {
        let bytes = table_3_13(0x030d00f0);
        let mut offsets = DebugTable::parse(&bytes, TableFormat::V3_13)
            .unwrap()
            .to_offsets(&v(13));
        offsets.code_co_filename = Some(offsets.code_co_filename.unwrap() + 8);
        supplement(&mut offsets);
        assert_eq!(offsets.code_co_consts, None);
    }

    #[test]
    fn later_formats_extend_the_3_13_table() {
        assert!(TableFormat::V3_14.fields().len() > TableFormat::V3_13.fields().len());
        let v15 = TableFormat::V3_15.fields();
        let at = |name: &str| v15.iter().position(|f| *f == name).unwrap();
        assert_eq!(
            at("thread_state.base_frame"),
            at("thread_state.current_frame") + 1
        );
        assert_eq!(at("thread_state.holds_gil"), at("thread_state.status") + 1);
    }
    /// The tables of the WebAssembly builds of CPython 3.14.2 and
    /// 3.15.0rc1 (Pyodide; 32-bit, so the values are not a native build's),
    /// as each dumped its own `_PyRuntime` (the words after the cookie, to
    /// the end of `debugger_support`; the next word is the runtime's own
    /// state). Recorded with tests/programs/debug_offsets_truth.py's
    /// reading of `_PyRuntime`.
    const WASM_3_14_2: &[u64] = &[
        51249904, 0, 166640, 780, 796, 115488, 3656, 3648, 3704, 3712, 3740, 3896, 3884, 3888, 8,
        3976, 0, 3984, 3980, 4136, 0, 704, 0, 4, 8, 52, 92, 96, 144, 16, 44, 4, 0, 28, 40, 38, 32,
        0, 132, 80, 84, 88, 92, 44, 28, 72, 76, 128, 0, 8, 4, 208, 12, 44, 84, 20, 16, 8, 20, 12,
        8, 100, 12, 20, 16, 32, 24, 28, 16, 8, 16, 8, 12, 20, 8, 16, 32, 16, 8, 20, 144, 116, 80,
        12, 36, 35, 0, 4, 12, 184, 4200, 0, 4, 512,
    ];
    const WASM_3_15_0RC1: &[u64] = &[
        51314881, 0, 182000, 908, 924, 115712, 3648, 3644, 3696, 3704, 3732, 3848, 3840, 3844, 8,
        3952, 0, 3960, 3956, 4112, 0, 736, 0, 4, 8, 56, 60, 64, 68, 108, 112, 160, 16, 20, 24, 88,
        176, 0, 44, 4, 0, 28, 40, 38, 32, 0, 132, 80, 84, 88, 92, 44, 28, 72, 76, 128, 0, 8, 4,
        212, 12, 44, 84, 16, 144, 472, 444, 20, 16, 8, 20, 12, 8, 100, 12, 20, 16, 32, 24, 28, 16,
        8, 16, 8, 12, 20, 8, 16, 32, 16, 8, 20, 28, 108, 76, 80, 840, 72, 80, 12, 36, 35, 0, 4, 12,
        208, 4176, 0, 4, 512,
    ];

    fn table_of(words: &[u64]) -> Vec<u8> {
        let mut bytes = COOKIE.to_vec();
        for word in words {
            bytes.extend_from_slice(&word.to_le_bytes());
        }
        bytes
    }

    #[test]
    fn the_3_14_and_3_15_tables_end_with_llist_node_and_debugger_support() {
        for (words, format) in [
            (WASM_3_14_2, TableFormat::V3_14),
            (WASM_3_15_0RC1, TableFormat::V3_15),
        ] {
            // The field list covers the whole table, no more, no less.
            assert_eq!(format.byte_len(), 8 + 8 * words.len(), "{format:?}");
            assert!(format.has_debugger_support());
            let table = DebugTable::parse(&table_of(words), format).unwrap();
            // 32-bit: llist_node's prev is the second pointer.
            assert_eq!(table.get("llist_node.next"), 0);
            assert_eq!(table.get("llist_node.prev"), 4);
            let support = table.debugger_support().unwrap();
            assert_eq!(support.debugger_script_path_size, 512);
            assert_eq!(support.debugger_pending_call, 0);
            assert_eq!(support.debugger_script_path, 4);
            // PyThreadState starts prev, next, interp, eval_breaker.
            assert_eq!(support.eval_breaker, 12);
            assert_eq!(
                support.threads_main,
                table.get("interpreter_state.threads_main")
            );
            assert!(support.remote_debugger_support + 4 + 512 <= table.get("thread_state.size"));
            assert!(support.remote_debugging_enabled < table.get("interpreter_state.size"));
        }
        assert!(!TableFormat::V3_13.has_debugger_support());
        let table = DebugTable::parse(&table_3_13(0x030d00f0), TableFormat::V3_13).unwrap();
        assert_eq!(table.debugger_support(), None);
    }

    /// A 64-bit 3.14 table with plausible values in every field.
    fn table_3_14() -> Vec<u8> {
        let words: Vec<u64> = TableFormat::V3_14
            .fields()
            .iter()
            .map(|name| match *name {
                "version" => 0x030e02f0,
                "free_threaded" => 0,
                "runtime_state.size" => 100_000,
                "interpreter_state.size" => 8192,
                "thread_state.size" => 1024,
                "interpreter_frame.size" => 80,
                "code_object.size" => 200,
                "pyobject.size" => 16,
                "type_object.size" => 400,
                "tuple_object.size" => 32,
                "list_object.size" => 40,
                "dict_object.size" => 48,
                "unicode_object.size" => 72,
                "interpreter_state.gil_runtime_state" => 100,
                "interpreter_state.gil_runtime_state_locked" => 104,
                "interpreter_state.gil_runtime_state_holder" => 112,
                "llist_node.next" => 0,
                "debugger_support.eval_breaker" => 24,
                "debugger_support.remote_debugger_support" => 360,
                "debugger_support.remote_debugging_enabled" => 4000,
                "debugger_support.debugger_pending_call" => 0,
                "debugger_support.debugger_script_path" => 4,
                "debugger_support.debugger_script_path_size" => 512,
                name if name.ends_with(".size") => 64,
                _ => 8,
            })
            .collect();
        table_of(&words)
    }

    fn set(bytes: &mut [u8], format: TableFormat, name: &str, value: u64) {
        let index = format.fields().iter().position(|f| *f == name).unwrap();
        bytes[8 + 8 * index..16 + 8 * index].copy_from_slice(&value.to_le_bytes());
    }

    #[test]
    fn a_debugger_support_section_outside_its_structs_is_refused() {
        let good = table_3_14();
        DebugTable::parse(&good, TableFormat::V3_14)
            .unwrap()
            .validate(&v(14))
            .unwrap();
        for (field, value, says) in [
            // 360 + 4 + 1024 > thread_state.size 1024
            (
                "debugger_support.debugger_script_path_size",
                1024,
                "debugger_script_path",
            ),
            (
                "debugger_support.debugger_script_path_size",
                8,
                "outside 64..=4096",
            ),
            (
                "debugger_support.remote_debugger_support",
                600,
                "debugger_script_path",
            ),
            ("debugger_support.eval_breaker", 1020, "eval_breaker"),
            (
                "debugger_support.remote_debugging_enabled",
                8190,
                "remote_debugging_enabled",
            ),
            (
                "debugger_support.remote_debugger_support",
                u64::MAX,
                "debugger_pending_call",
            ),
            ("llist_node.prev", 4096, "llist_node.prev"),
        ] {
            let mut bytes = good.clone();
            set(&mut bytes, TableFormat::V3_14, field, value);
            let error = DebugTable::parse(&bytes, TableFormat::V3_14)
                .unwrap()
                .validate(&v(14))
                .unwrap_err();
            assert!(error.contains(says), "{field} = {value}: {error}");
        }
    }
}
