/*
 * Prints the offsets and sizes pydeep needs from one CPython version's own
 * headers, one line per field: "name<TAB>value<TAB>C expression" (value "-"
 * when the field does not exist in this version).
 *
 * Compiled by gen_layouts.sh against each installed interpreter's headers
 * (include/python3.X and its internal/ directory, with Py_BUILD_CORE so the
 * private structs are visible). Never edit the generated Rust by hand: edit
 * this file and rerun the script.
 *
 * Names follow CPython's where they match; the prefix says which struct the
 * offset is relative to.
 */
#define Py_BUILD_CORE 1
#include <Python.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include "internal/pycore_runtime.h"
#include "internal/pycore_interp.h"
#include "internal/pycore_pystate.h"
#include "internal/pycore_gc.h"
#include "internal/pycore_code.h"
#if PY_VERSION_HEX >= 0x030b0000
#include "internal/pycore_frame.h"
#include "internal/pycore_dict.h"
#include "internal/pycore_genobject.h"
#endif
#ifdef Py_GIL_DISABLED
#include "internal/pycore_tstate.h"
#endif
#include "frameobject.h"
#include "structmember.h"
#include "opcode.h"
#if PY_VERSION_HEX >= 0x030a0000
#include "internal/pycore_moduleobject.h"
#else
/* 3.9 keeps PyModuleObject private to Objects/moduleobject.c; copied here. */
typedef struct {
    PyObject_HEAD
    PyObject *md_dict;
    struct PyModuleDef *md_def;
    void *md_state;
    PyObject *md_weaklist;
    PyObject *md_name;
} PyModuleObject;
#endif
#if PY_VERSION_HEX < 0x030b0000
/* 3.9/3.10 keep the dict internals in Objects/dict-common.h, which is not
 * installed; copied here verbatim (identical in 3.9 and 3.10). */
typedef struct {
    Py_hash_t me_hash;
    PyObject *me_key;
    PyObject *me_value;
} PyDictKeyEntry;
struct _dictkeysobject {
    Py_ssize_t dk_refcnt;
    Py_ssize_t dk_size;
    void *dk_lookup;
    Py_ssize_t dk_usable;
    Py_ssize_t dk_nentries;
    char dk_indices[];
};
#endif

#define F(name, expr) printf("%s\t%lu\t%s\n", #name, (unsigned long)(expr), #expr)
#define NA(name) printf("%s\t-\t-\n", #name)
#define OFF(name, type, field) F(name, offsetof(type, field))
#define SIZE(name, type) F(name, sizeof(type))

/* Which bit of PyASCIIObject.state a bitfield member starts at. */
static int state_shift(void (*set)(PyASCIIObject *)) {
    PyASCIIObject o;
    memset(&o, 0, sizeof o);
    set(&o);
    unsigned int word;
    memcpy(&word, &o.state, sizeof word);
    for (int i = 0; i < 32; i++)
        if (word & (1u << i))
            return i;
    return -1;
}
static void set_kind(PyASCIIObject *o) { o->state.kind = 1; }
static void set_compact(PyASCIIObject *o) { o->state.compact = 1; }
static void set_ascii(PyASCIIObject *o) { o->state.ascii = 1; }

int main(void) {
    F(version_hex, PY_VERSION_HEX);

    /* _PyRuntimeState (the `_PyRuntime` symbol). */
    OFF(runtime_interpreters_head, _PyRuntimeState, interpreters.head);
    OFF(runtime_interpreters_main, _PyRuntimeState, interpreters.main);
    OFF(runtime_main_thread, _PyRuntimeState, main_thread);
#if PY_VERSION_HEX < 0x030c0000
    /* The GIL lives in the runtime up to 3.11 (pycore_runtime.h, ceval.gil). */
    OFF(runtime_gil, _PyRuntimeState, ceval.gil);
    OFF(runtime_gilstate_tstate_current, _PyRuntimeState, gilstate.tstate_current);
#else
    NA(runtime_gil);
    NA(runtime_gilstate_tstate_current);
#endif

    /* struct _gil_runtime_state (pycore_gil.h). */
    OFF(gil_locked, struct _gil_runtime_state, locked);
    OFF(gil_last_holder, struct _gil_runtime_state, last_holder);
#ifdef Py_GIL_DISABLED
    /* Free-threaded builds keep a GIL struct that is off (0) unless
     * PYTHON_GIL=1 or an extension without Py_mod_gil turned it on. */
    OFF(gil_enabled, struct _gil_runtime_state, enabled);
#else
    NA(gil_enabled);
#endif

    /* PyInterpreterState (pycore_interp.h). */
    SIZE(interpreter_size, PyInterpreterState);
    OFF(interpreter_next, PyInterpreterState, next);
    OFF(interpreter_id, PyInterpreterState, id);
#if PY_VERSION_HEX >= 0x030b0000
    OFF(interpreter_threads_head, PyInterpreterState, threads.head);
#else
    OFF(interpreter_threads_head, PyInterpreterState, tstate_head);
#endif
#if PY_VERSION_HEX >= 0x030c0000
    OFF(interpreter_modules, PyInterpreterState, imports.modules);
    /* 3.12 moved the GIL into the interpreter, reached through ceval.gil. */
    OFF(interpreter_ceval_gil, PyInterpreterState, ceval.gil);
#else
    OFF(interpreter_modules, PyInterpreterState, modules);
    NA(interpreter_ceval_gil);
#endif
    OFF(interpreter_sysdict, PyInterpreterState, sysdict);
    OFF(interpreter_builtins, PyInterpreterState, builtins);
    OFF(interpreter_gc, PyInterpreterState, gc);

    /* PyThreadState (cpython/pystate.h). */
    SIZE(thread_size, PyThreadState);
    OFF(thread_prev, PyThreadState, prev);
    OFF(thread_next, PyThreadState, next);
    OFF(thread_interp, PyThreadState, interp);
    OFF(thread_thread_id, PyThreadState, thread_id);
#if PY_VERSION_HEX >= 0x030b0000
    OFF(thread_native_thread_id, PyThreadState, native_thread_id);
    NA(thread_frame);
#if PY_VERSION_HEX >= 0x030d0000
    OFF(thread_current_frame, PyThreadState, current_frame);
    NA(thread_cframe);
    NA(cframe_current_frame);
#else
    /* 3.11/3.12: the current frame is tstate->cframe->current_frame. */
    NA(thread_current_frame);
    OFF(thread_cframe, PyThreadState, cframe);
    OFF(cframe_current_frame, _PyCFrame, current_frame);
#endif
    OFF(thread_datastack_chunk, PyThreadState, datastack_chunk);
    OFF(thread_datastack_top, PyThreadState, datastack_top);
    OFF(thread_datastack_limit, PyThreadState, datastack_limit);
    OFF(stack_chunk_previous, _PyStackChunk, previous);
    OFF(stack_chunk_size, _PyStackChunk, size);
    OFF(stack_chunk_top, _PyStackChunk, top);
    OFF(stack_chunk_data, _PyStackChunk, data);
#else
    NA(thread_native_thread_id);
    OFF(thread_frame, PyThreadState, frame);
    NA(thread_current_frame);
    NA(thread_cframe);
    NA(cframe_current_frame);
    NA(thread_datastack_chunk);
    NA(thread_datastack_top);
    NA(thread_datastack_limit);
    NA(stack_chunk_previous);
    NA(stack_chunk_size);
    NA(stack_chunk_top);
    NA(stack_chunk_data);
#endif

#if PY_VERSION_HEX >= 0x030b0000
    /* _PyInterpreterFrame (pycore_frame.h). */
    SIZE(interpreter_frame_size, _PyInterpreterFrame);
    OFF(interpreter_frame_previous, _PyInterpreterFrame, previous);
#if PY_VERSION_HEX >= 0x030d0000
    OFF(interpreter_frame_f_executable, _PyInterpreterFrame, f_executable);
    NA(interpreter_frame_f_code);
    OFF(interpreter_frame_instr_ptr, _PyInterpreterFrame, instr_ptr);
    NA(interpreter_frame_prev_instr);
#else
    NA(interpreter_frame_f_executable);
    OFF(interpreter_frame_f_code, _PyInterpreterFrame, f_code);
    NA(interpreter_frame_instr_ptr);
    OFF(interpreter_frame_prev_instr, _PyInterpreterFrame, prev_instr);
#endif
    OFF(interpreter_frame_owner, _PyInterpreterFrame, owner);
    OFF(interpreter_frame_stacktop, _PyInterpreterFrame, stacktop);
    OFF(interpreter_frame_localsplus, _PyInterpreterFrame, localsplus);
    OFF(interpreter_frame_f_globals, _PyInterpreterFrame, f_globals);
    OFF(interpreter_frame_f_builtins, _PyInterpreterFrame, f_builtins);
    OFF(interpreter_frame_f_locals, _PyInterpreterFrame, f_locals);
    OFF(interpreter_frame_frame_obj, _PyInterpreterFrame, frame_obj);
#if PY_VERSION_HEX >= 0x030c0000
    OFF(interpreter_frame_f_funcobj, _PyInterpreterFrame, f_funcobj);
    NA(interpreter_frame_is_entry);
    F(frame_owned_by_cstack, FRAME_OWNED_BY_CSTACK);
#else
    OFF(interpreter_frame_f_funcobj, _PyInterpreterFrame, f_func);
    OFF(interpreter_frame_is_entry, _PyInterpreterFrame, is_entry);
    NA(frame_owned_by_cstack);
#endif
    F(frame_owned_by_generator, FRAME_OWNED_BY_GENERATOR);
    NA(frame_object_f_back);
    NA(frame_object_f_code);
    NA(frame_object_f_lasti);
    NA(frame_object_f_gen);
    OFF(frame_object_f_frame, PyFrameObject, f_frame);
#else
    NA(interpreter_frame_size);
    NA(interpreter_frame_previous);
    NA(interpreter_frame_f_executable);
    NA(interpreter_frame_f_code);
    NA(interpreter_frame_instr_ptr);
    NA(interpreter_frame_prev_instr);
    NA(interpreter_frame_owner);
    NA(interpreter_frame_stacktop);
    NA(interpreter_frame_localsplus);
    NA(interpreter_frame_f_globals);
    NA(interpreter_frame_f_builtins);
    NA(interpreter_frame_f_locals);
    NA(interpreter_frame_frame_obj);
    NA(interpreter_frame_f_funcobj);
    NA(interpreter_frame_is_entry);
    NA(frame_owned_by_cstack);
    NA(frame_owned_by_generator);
    /* PyFrameObject (cpython/frameobject.h), the 3.9/3.10 frame. */
    OFF(frame_object_f_back, PyFrameObject, f_back);
    OFF(frame_object_f_code, PyFrameObject, f_code);
    OFF(frame_object_f_lasti, PyFrameObject, f_lasti);
    OFF(frame_object_f_gen, PyFrameObject, f_gen);
    NA(frame_object_f_frame);
#endif
    OFF(frame_object_f_lineno, PyFrameObject, f_lineno);

    /* PyCodeObject (cpython/code.h). */
    SIZE(code_size, PyCodeObject);
    OFF(code_co_extra, PyCodeObject, co_extra);
#if PY_VERSION_HEX < 0x030b0000
    /* What code.__sizeof__ adds on 3.9/3.10 (Objects/codeobject.c). */
    OFF(code_co_cell2arg, PyCodeObject, co_cell2arg);
    OFF(code_co_opcache, PyCodeObject, co_opcache);
    OFF(code_co_opcache_size, PyCodeObject, co_opcache_size);
    SIZE(code_opcache_entry_size, _PyOpcache);
#else
    NA(code_co_cell2arg);
    NA(code_co_opcache);
    NA(code_co_opcache_size);
    NA(code_opcache_entry_size);
#endif
    OFF(code_co_argcount, PyCodeObject, co_argcount);
    OFF(code_co_posonlyargcount, PyCodeObject, co_posonlyargcount);
    OFF(code_co_kwonlyargcount, PyCodeObject, co_kwonlyargcount);
    OFF(code_co_stacksize, PyCodeObject, co_stacksize);
    OFF(code_co_flags, PyCodeObject, co_flags);
    OFF(code_co_firstlineno, PyCodeObject, co_firstlineno);
    OFF(code_co_consts, PyCodeObject, co_consts);
    OFF(code_co_names, PyCodeObject, co_names);
    OFF(code_co_filename, PyCodeObject, co_filename);
    OFF(code_co_name, PyCodeObject, co_name);
#if PY_VERSION_HEX >= 0x030b0000
    OFF(code_co_qualname, PyCodeObject, co_qualname);
    /* Words a frame of this code takes on the data stack: a frame pushed
       at F ends at F + 8 * words, where tstate->datastack_top then points
       (pycore_frame.h _PyFrame_PushUnchecked). co_framesize from 3.12 on;
       on 3.11 co_nlocalsplus + co_stacksize + FRAME_SPECIALS_SIZE
       (_PyFrame_NumSlotsForCodeObject). */
#if PY_VERSION_HEX >= 0x030c0000
    OFF(code_co_framesize, PyCodeObject, co_framesize);
#else
    NA(code_co_framesize);
#endif
    OFF(code_co_nlocalsplus, PyCodeObject, co_nlocalsplus);
    F(frame_specials_words, FRAME_SPECIALS_SIZE);
    OFF(code_co_code_adaptive, PyCodeObject, co_code_adaptive);
    NA(code_co_code);
    OFF(code_co_localsplusnames, PyCodeObject, co_localsplusnames);
    OFF(code_co_localspluskinds, PyCodeObject, co_localspluskinds);
    OFF(code_co_exceptiontable, PyCodeObject, co_exceptiontable);
    OFF(code_co_firsttraceable, PyCodeObject, _co_firsttraceable);
    OFF(code_co_linetable, PyCodeObject, co_linetable);
    NA(code_co_lnotab);
    NA(code_co_varnames);
    NA(code_co_cellvars);
    NA(code_co_freevars);
#else
    NA(code_co_qualname);
    NA(code_co_framesize);
    NA(code_co_nlocalsplus);
    NA(frame_specials_words);
    NA(code_co_code_adaptive);
    OFF(code_co_code, PyCodeObject, co_code);
    NA(code_co_localsplusnames);
    NA(code_co_localspluskinds);
    NA(code_co_exceptiontable);
    NA(code_co_firsttraceable);
#if PY_VERSION_HEX >= 0x030a0000
    OFF(code_co_linetable, PyCodeObject, co_linetable);
    NA(code_co_lnotab);
#else
    NA(code_co_linetable);
    OFF(code_co_lnotab, PyCodeObject, co_lnotab);
#endif
    OFF(code_co_varnames, PyCodeObject, co_varnames);
    OFF(code_co_cellvars, PyCodeObject, co_cellvars);
    OFF(code_co_freevars, PyCodeObject, co_freevars);
#endif

    /* Objects (object.h, cpython/*object.h), for the object readers. */
#ifdef Py_GIL_DISABLED
    /* Free-threaded header (object.h): ob_tid, _padding, ob_mutex,
     * ob_gc_bits, ob_ref_local (uint32), ob_ref_shared, then ob_type; no
     * ob_refcnt (Py_REFCNT = ob_ref_local + (ob_ref_shared >> 2)). */
    NA(object_ob_refcnt);
    OFF(object_ob_tid, PyObject, ob_tid);
    OFF(object_ob_ref_local, PyObject, ob_ref_local);
    OFF(object_ob_ref_shared, PyObject, ob_ref_shared);
    OFF(object_ob_gc_bits, PyObject, ob_gc_bits);
    /* GC objects carry no PyGC_Head before them (_PyType_PreHeaderSize). */
    F(object_gc_preheader_size, 0);
#else
    OFF(object_ob_refcnt, PyObject, ob_refcnt);
    NA(object_ob_tid);
    NA(object_ob_ref_local);
    NA(object_ob_ref_shared);
    NA(object_ob_gc_bits);
    SIZE(object_gc_preheader_size, PyGC_Head);
#endif
#ifdef Py_GIL_DISABLED
    /* Free-threaded builds keep no GC lists: the collector visits the
     * blocks of each thread's mimalloc heaps for GC objects
     * (Python/gc_free_threading.c gc_visit_heaps; pycore_mimalloc.h, the
     * vendored Include/internal/mimalloc/mimalloc/types.h), and so does
     * pydeep (agent/src/reading/mimalloc.rs). */
    OFF(thread_mimalloc_heaps, _PyThreadStateImpl, mimalloc.heaps);
    OFF(thread_mimalloc_initialized, _PyThreadStateImpl, mimalloc.initialized);
    F(mimalloc_heap_gc, _Py_MIMALLOC_HEAP_GC);
    F(mimalloc_heap_gc_pre, _Py_MIMALLOC_HEAP_GC_PRE);
    SIZE(mimalloc_heap_size, mi_heap_t);
    OFF(mimalloc_heap_pages, mi_heap_t, pages);
    F(mimalloc_bin_full, MI_BIN_FULL);
    SIZE(mimalloc_page_queue_size, mi_page_queue_t);
    OFF(mimalloc_page_queue_first, mi_page_queue_t, first);
    SIZE(mimalloc_page_size, mi_page_t);
    OFF(mimalloc_page_slice_count, mi_page_t, slice_count);
    OFF(mimalloc_page_capacity, mi_page_t, capacity);
    OFF(mimalloc_page_reserved, mi_page_t, reserved);
    OFF(mimalloc_page_free, mi_page_t, free);
    OFF(mimalloc_page_used, mi_page_t, used);
    OFF(mimalloc_page_xblock_size, mi_page_t, xblock_size);
    OFF(mimalloc_page_local_free, mi_page_t, local_free);
    OFF(mimalloc_page_xthread_free, mi_page_t, xthread_free);
    OFF(mimalloc_page_xheap, mi_page_t, xheap);
    OFF(mimalloc_page_next, mi_page_t, next);
    OFF(mimalloc_segment_slices, mi_segment_t, slices);
    F(mimalloc_slices_per_segment, MI_SLICES_PER_SEGMENT);
    F(mimalloc_segment_shift, MI_SEGMENT_SHIFT);
    F(mimalloc_segment_slice_shift, MI_SEGMENT_SLICE_SHIFT);
#ifdef MI_ENCODE_FREELIST
    /* Encoded free-list pointers (a debug or secure mimalloc) are not
     * decoded by pydeep: the walk refuses such a build. */
    F(mimalloc_encode_freelist, 1);
#else
    F(mimalloc_encode_freelist, 0);
#endif
    OFF(interpreter_mimalloc_abandoned_count, PyInterpreterState,
        mimalloc.abandoned_pool.abandoned_count);
    F(gc_bits_tracked, _PyGC_BITS_TRACKED);
    F(gc_bits_frozen, _PyGC_BITS_FROZEN);
#else
    NA(thread_mimalloc_heaps);
    NA(thread_mimalloc_initialized);
    NA(mimalloc_heap_gc);
    NA(mimalloc_heap_gc_pre);
    NA(mimalloc_heap_size);
    NA(mimalloc_heap_pages);
    NA(mimalloc_bin_full);
    NA(mimalloc_page_queue_size);
    NA(mimalloc_page_queue_first);
    NA(mimalloc_page_size);
    NA(mimalloc_page_slice_count);
    NA(mimalloc_page_capacity);
    NA(mimalloc_page_reserved);
    NA(mimalloc_page_free);
    NA(mimalloc_page_used);
    NA(mimalloc_page_xblock_size);
    NA(mimalloc_page_local_free);
    NA(mimalloc_page_xthread_free);
    NA(mimalloc_page_xheap);
    NA(mimalloc_page_next);
    NA(mimalloc_segment_slices);
    NA(mimalloc_slices_per_segment);
    NA(mimalloc_segment_shift);
    NA(mimalloc_segment_slice_shift);
    NA(mimalloc_encode_freelist);
    NA(interpreter_mimalloc_abandoned_count);
    NA(gc_bits_tracked);
    NA(gc_bits_frozen);
#endif
#ifdef MANAGED_DICT_OFFSET
    /* Where a managed dict's pointer sits, in bytes before the object
     * (pycore_object.h): three words, one on free-threaded builds. */
    F(object_managed_dict_before, -MANAGED_DICT_OFFSET);
#elif PY_VERSION_HEX >= 0x030b0000
    F(object_managed_dict_before, 3 * sizeof(PyObject *));
#else
    NA(object_managed_dict_before);
#endif
    OFF(object_ob_type, PyObject, ob_type);
    OFF(var_object_ob_size, PyVarObject, ob_size);
    SIZE(type_size, PyTypeObject);
    OFF(type_tp_name, PyTypeObject, tp_name);
    OFF(type_tp_basicsize, PyTypeObject, tp_basicsize);
    OFF(type_tp_itemsize, PyTypeObject, tp_itemsize);
    OFF(type_tp_flags, PyTypeObject, tp_flags);
    OFF(type_tp_dictoffset, PyTypeObject, tp_dictoffset);
    OFF(type_tp_mro, PyTypeObject, tp_mro);
    OFF(type_tp_base, PyTypeObject, tp_base);
    OFF(type_tp_dict, PyTypeObject, tp_dict);
    OFF(heap_type_ht_cached_keys, PyHeapTypeObject, ht_cached_keys);
    OFF(tuple_ob_item, PyTupleObject, ob_item);
    OFF(list_ob_item, PyListObject, ob_item);
    OFF(list_allocated, PyListObject, allocated);
    OFF(dict_ma_used, PyDictObject, ma_used);
    OFF(dict_ma_keys, PyDictObject, ma_keys);
    OFF(dict_ma_values, PyDictObject, ma_values);
    OFF(dict_keys_dk_refcnt, PyDictKeysObject, dk_refcnt);
#if PY_VERSION_HEX >= 0x030b0000
    OFF(dict_keys_dk_log2_size, PyDictKeysObject, dk_log2_size);
    OFF(dict_keys_dk_log2_index_bytes, PyDictKeysObject, dk_log2_index_bytes);
    OFF(dict_keys_dk_kind, PyDictKeysObject, dk_kind);
    NA(dict_keys_dk_size);
    SIZE(dict_unicode_entry_size, PyDictUnicodeEntry);
#else
    NA(dict_keys_dk_log2_size);
    NA(dict_keys_dk_log2_index_bytes);
    NA(dict_keys_dk_kind);
    OFF(dict_keys_dk_size, PyDictKeysObject, dk_size);
    NA(dict_unicode_entry_size);
#endif
#if PY_VERSION_HEX >= 0x030d0000
    OFF(dict_values_values, PyDictValues, values);
    F(tpflags_inline_values, Py_TPFLAGS_INLINE_VALUES);
#elif PY_VERSION_HEX >= 0x030b0000
    OFF(dict_values_values, PyDictValues, values);
    NA(tpflags_inline_values);
#else
    NA(dict_values_values);
    NA(tpflags_inline_values);
#endif
    OFF(dict_keys_dk_usable, PyDictKeysObject, dk_usable);
    OFF(dict_keys_dk_nentries, PyDictKeysObject, dk_nentries);
    OFF(dict_keys_dk_indices, PyDictKeysObject, dk_indices);
    SIZE(dict_key_entry_size, PyDictKeyEntry);
    OFF(dict_key_entry_me_hash, PyDictKeyEntry, me_hash);
    OFF(dict_key_entry_me_key, PyDictKeyEntry, me_key);
    OFF(dict_key_entry_me_value, PyDictKeyEntry, me_value);
    SIZE(unicode_ascii_size, PyASCIIObject);
    SIZE(unicode_compact_size, PyCompactUnicodeObject);
    OFF(unicode_length, PyASCIIObject, length);
    OFF(unicode_hash, PyASCIIObject, hash);
    OFF(unicode_state, PyASCIIObject, state);
    F(unicode_state_kind_shift, state_shift(set_kind));
    F(unicode_state_compact_shift, state_shift(set_compact));
    F(unicode_state_ascii_shift, state_shift(set_ascii));
#if PY_VERSION_HEX >= 0x030c0000
    OFF(long_lv_tag, PyLongObject, long_value.lv_tag);
    OFF(long_ob_digit, PyLongObject, long_value.ob_digit);
#else
    NA(long_lv_tag);
    OFF(long_ob_digit, PyLongObject, ob_digit);
#endif
    SIZE(long_digit_size, digit);
    F(long_digit_bits, PyLong_SHIFT);
    OFF(float_ob_fval, PyFloatObject, ob_fval);
    OFF(bytes_ob_sval, PyBytesObject, ob_sval);
    OFF(bytes_ob_shash, PyBytesObject, ob_shash);
    OFF(cell_ob_ref, PyCellObject, ob_ref);
    OFF(module_md_dict, PyModuleObject, md_dict);
    OFF(function_func_code, PyFunctionObject, func_code);
    OFF(function_func_globals, PyFunctionObject, func_globals);
    OFF(function_func_name, PyFunctionObject, func_name);
    OFF(function_func_qualname, PyFunctionObject, func_qualname);
    OFF(function_func_closure, PyFunctionObject, func_closure);
    OFF(function_func_defaults, PyFunctionObject, func_defaults);
    OFF(function_func_module, PyFunctionObject, func_module);
#if PY_VERSION_HEX >= 0x030b0000
    NA(generator_gi_frame);
    OFF(generator_gi_iframe, PyGenObject, gi_iframe);
    OFF(generator_gi_frame_state, PyGenObject, gi_frame_state);
#else
    OFF(generator_gi_frame, PyGenObject, gi_frame);
    NA(generator_gi_iframe);
    NA(generator_gi_frame_state);
#endif
#if PY_VERSION_HEX < 0x030c0000
    OFF(generator_gi_code, PyGenObject, gi_code);
#else
    NA(generator_gi_code);
#endif
    OFF(generator_gi_name, PyGenObject, gi_name);
    OFF(generator_gi_qualname, PyGenObject, gi_qualname);
    /* Generator states and delegation (agent/src/reading/generators.rs). */
#if PY_VERSION_HEX < 0x030a0000
    OFF(generator_gi_running, PyGenObject, gi_running);
#else
    NA(generator_gi_running);
#endif
#if PY_VERSION_HEX < 0x030b0000
    /* ag_running is ag_running_async (Objects/genobject.c async_gen_memberlist). */
    OFF(generator_running_async, PyAsyncGenObject, ag_running_async);
    OFF(frame_object_f_valuestack, PyFrameObject, f_valuestack);
    F(opcode_yield_from, YIELD_FROM);
    NA(opcode_resume);
#else
    OFF(generator_running_async, PyGenObject, gi_running_async);
    NA(frame_object_f_valuestack);
    NA(opcode_yield_from);
    F(opcode_resume, RESUME);
#endif
#if PY_VERSION_HEX < 0x030a0000
    OFF(frame_object_f_stacktop, PyFrameObject, f_stacktop);
    /* Non-zero while the frame runs (its callers' too); a frame object
       waiting as its code's zombie or in the free list has 0. */
    OFF(frame_object_f_executing, PyFrameObject, f_executing);
#else
    NA(frame_object_f_stacktop);
    NA(frame_object_f_executing);
#endif
#if PY_VERSION_HEX >= 0x030a0000 && PY_VERSION_HEX < 0x030b0000
    OFF(frame_object_f_stackdepth, PyFrameObject, f_stackdepth);
    OFF(frame_object_f_state, PyFrameObject, f_state);
#else
    NA(frame_object_f_stackdepth);
    NA(frame_object_f_state);
#endif
#if PY_VERSION_HEX >= 0x030b0000 && PY_VERSION_HEX < 0x030c0000
    F(opcode_resume_quick, RESUME_QUICK);
#else
    NA(opcode_resume_quick);
#endif
#if PY_VERSION_HEX >= 0x030c0000 && PY_VERSION_HEX < 0x030d0000
    F(opcode_instrumented_resume, INSTRUMENTED_RESUME);
#else
    NA(opcode_instrumented_resume);
#endif
    /* 3.14's _PyInterpreterFrame.stackpointer (from its _Py_DebugOffsets). */
    NA(interpreter_frame_stackpointer);
    SIZE(gc_head_size, PyGC_Head);
    OFF(gc_head_gc_next, PyGC_Head, _gc_next);
    OFF(gc_head_gc_prev, PyGC_Head, _gc_prev);
    OFF(gc_state_generations, struct _gc_runtime_state, generations);
    SIZE(gc_generation_size, struct gc_generation);
    OFF(gc_state_collecting, struct _gc_runtime_state, collecting);
    F(tpflags_managed_dict, 
#ifdef Py_TPFLAGS_MANAGED_DICT
      Py_TPFLAGS_MANAGED_DICT
#else
      0
#endif
    );
    /* Snapshot object readers (agent/src/objects, agent/src/reading/scopes.rs). */
#if PY_VERSION_HEX < 0x030b0000
    OFF(frame_object_f_localsplus, PyFrameObject, f_localsplus);
    OFF(frame_object_f_globals, PyFrameObject, f_globals);
#else
    NA(frame_object_f_localsplus);
    NA(frame_object_f_globals);
#endif
    OFF(set_fill, PySetObject, fill);
    OFF(set_used, PySetObject, used);
    OFF(set_mask, PySetObject, mask);
    OFF(set_table, PySetObject, table);
    OFF(set_smalltable, PySetObject, smalltable);
    SIZE(set_entry_size, setentry);
    OFF(set_entry_key, setentry, key);
    OFF(complex_cval, PyComplexObject, cval);
    OFF(type_tp_members, PyTypeObject, tp_members);
    SIZE(member_def_size, PyMemberDef);
    OFF(member_def_name, PyMemberDef, name);
    OFF(member_def_type, PyMemberDef, type);
    OFF(member_def_offset, PyMemberDef, offset);
    F(member_type_object_ex, T_OBJECT_EX);
    F(tpflags_have_gc, Py_TPFLAGS_HAVE_GC);
    F(tpflags_heaptype, Py_TPFLAGS_HEAPTYPE);
#ifdef Py_TPFLAGS_PREHEADER
    F(tpflags_preheader, Py_TPFLAGS_PREHEADER);
#else
    NA(tpflags_preheader);
#endif
    OFF(unicode_utf8_length, PyCompactUnicodeObject, utf8_length);
    OFF(unicode_utf8, PyCompactUnicodeObject, utf8);
    return 0;
}
