//! `sys.getsizeof()` reproduced from memory: the type's `__sizeof__` plus
//! the pre-header (`_PySys_GetSizeOf` in Python/sysmodule.c).

use super::plausible::{self, Size};
use super::{Kind, ObjectInfo, Objects};
use crate::process::memory::{field_u64, field_u8, read_u64, read_vec};
use crate::reading::cpython::builtins::{DEQUE_BLOCK_LENGTH, DEQUE_BLOCK_SIZE, ODICT_NODE_SIZE};
use crate::reading::cpython::objects::ObjectError;

/// `sys.getsizeof()` of the object, or `None` for kinds whose
/// `__sizeof__` pydeep does not reproduce (types, code, builtin objects
/// other than the ones listed in [`Kind`], instances of builtin subclasses).
/// A size whose memory the target cannot hold (the object's own memory,
/// or a list's or set's separate item table) is [`Size::Implausible`].
pub(super) fn getsizeof(
    objects: &Objects<'_>,
    info: &ObjectInfo,
) -> Result<Option<Size>, ObjectError> {
    let o = &objects.layout().offsets;
    let c = &objects.layout().core;
    let ty = &info.type_info;
    let memory = objects.memory();
    let address = info.address;
    // Where the bytes counted lie, when not all in the object itself.
    let mut items: Option<(u64, u64)> = None;
    // A class deriving from a builtin container is sized by the
    // container's `__sizeof__`, which counts `tp_basicsize` of the object's
    // own type (`_PyObject_SIZE(Py_TYPE(self))`).
    let kind = objects.read_kind(ty);
    let sizeof = match kind {
        Kind::Int | Kind::Bool => {
            let digits = c.long_ob_digit;
            let count = match o.long_lv_tag {
                Some(at) => read_u64(memory, address + at)? >> 3,
                None => objects.reader.var_size(address)?.unsigned_abs(),
            };
            // Objects/longobject.c int___sizeof__.
            let count = if objects
                .layout()
                .semantics
                .objects
                .int_sizeof_counts_a_digit_for_zero
            {
                count.max(1)
            } else {
                count
            };
            digits.saturating_add(count.saturating_mul(c.long_digit_size))
        }
        Kind::Str => {
            let (size, inline) = str_size(objects, address)?;
            items = Some((address, inline));
            size
        }
        Kind::List => {
            let allocated = read_u64(
                memory,
                address + o.list_allocated.ok_or(missing("allocated"))?,
            )?;
            let table = read_u64(memory, address + o.list_ob_item.ok_or(missing("ob_item"))?)?;
            items = Some((table, allocated.saturating_mul(8)));
            ty.basicsize.saturating_add(allocated.saturating_mul(8))
        }
        Kind::Dict | Kind::DefaultDict | Kind::OrderedDict => match dict_size(objects, address)? {
            Some(size) => {
                // Its tables' sizes come from small log2 fields: nothing
                // absurd to check.
                items = Some((address, 0));
                let size = ty.basicsize.saturating_add(size);
                if kind == Kind::OrderedDict {
                    match ordered_dict_extra(objects, address)? {
                        Some(extra) => size.saturating_add(extra),
                        None => return Ok(None),
                    }
                } else {
                    size
                }
            }
            None => return Ok(None),
        },
        Kind::Deque => {
            // deque_sizeof (Modules/_collectionsmodule.c): the blocks
            // spanning leftindex .. leftindex + len.
            let leftindex = read_u64(memory, address + objects.builtins()?.deque().leftindex)?;
            let length = objects.reader.var_size(address)?.max(0) as u64;
            let blocks = leftindex
                .saturating_add(length)
                .saturating_add(DEQUE_BLOCK_LENGTH - 1)
                / DEQUE_BLOCK_LENGTH;
            ty.basicsize
                .saturating_add(blocks.saturating_mul(DEQUE_BLOCK_SIZE))
        }
        Kind::ByteArray => {
            // bytearray_sizeof (Objects/bytearrayobject.c): the allocation.
            let alloc = read_u64(memory, address + objects.builtins()?.bytearray().ob_alloc)?;
            ty.basicsize.saturating_add(alloc)
        }
        Kind::Set | Kind::FrozenSet => {
            let table = read_u64(memory, address + o.set_table.ok_or(missing("table"))?)?;
            let mask = read_u64(memory, address + o.set_mask.ok_or(missing("mask"))?)?;
            let small = address + o.set_smalltable.ok_or(missing("smalltable"))?;
            let entry = c.set_entry_size;
            if table == small {
                ty.basicsize
            } else {
                let bytes = mask.saturating_add(1).saturating_mul(entry);
                items = Some((table, bytes));
                ty.basicsize.saturating_add(bytes)
            }
        }
        Kind::Instance => {
            if !plain_object_base(objects, info)? {
                return Ok(None);
            }
            object_sizeof(objects, info)?
        }
        Kind::None
        | Kind::Float
        | Kind::Complex
        | Kind::Bytes
        | Kind::Tuple
        | Kind::Function
        | Kind::Cell
        | Kind::Module
        | Kind::MemoryView
        | Kind::Range
        | Kind::Slice
        | Kind::Partial
        | Kind::Method
        | Kind::BuiltinFunction
        | Kind::Property
        | Kind::StaticMethod
        | Kind::ClassMethod
        | Kind::Namespace
        | Kind::WeakRef
        | Kind::OpaqueBuiltin => object_sizeof(objects, info)?,
        Kind::Generator => match generator_size(objects, info)? {
            Some(size) => size,
            None => return Ok(None),
        },
        Kind::Type => return Ok(type_size(objects, info)?.map(Size::Bytes)),
        Kind::Other if ty.name == "code" && ty.flags & heap_flag(objects) == 0 => {
            match code_size(objects, info)? {
                Some(size) => size,
                None => return Ok(None),
            }
        }
        Kind::Other if ty.name == "frame" && ty.flags & heap_flag(objects) == 0 => {
            match frame_object_size(objects, info)? {
                Some(size) => size,
                None => return Ok(None),
            }
        }
        Kind::Other => return Ok(None),
    };
    let holdable = match items {
        Some((table, bytes)) => plausible::can_hold(memory, table, bytes),
        None => plausible::can_hold(memory, address, sizeof),
    };
    let size = sizeof.saturating_add(preheader(objects, info));
    Ok(Some(if holdable {
        Size::Bytes(size)
    } else {
        Size::Implausible(size)
    }))
}

fn heap_flag(objects: &Objects<'_>) -> u64 {
    objects.layout().core.tpflags_heaptype
}

/// `type.__sizeof__` (Objects/typeobject.c type___sizeof___impl): a heap
/// type is a `PyHeapTypeObject` plus its cached shared keys
/// (`ht_cached_keys`), a static type a `PyTypeObject`. The pre-header is
/// added for heap types; for static types only on 3.11 and 3.12, whose
/// `_PySys_GetSizeOf` (Python/sysmodule.c) adds the metatype's pre-header
/// without asking `tp_is_gc` (3.9/3.10 ask it, and `type_is_gc` says no
/// for static types; 3.13 skips static types explicitly).
fn type_size(objects: &Objects<'_>, info: &ObjectInfo) -> Result<Option<u64>, ObjectError> {
    let o = &objects.layout().offsets;
    let c = &objects.layout().core;
    let memory = objects.memory();
    let heap = heap_flag(objects);
    let flags = read_u64(memory, info.address + c.type_tp_flags)?;
    let rules = objects.layout().semantics.objects;
    if flags & heap == 0 {
        let size = c.type_size;
        let pre = if rules.static_type_sizeof_adds_preheader {
            preheader(objects, info)
        } else {
            0
        };
        return Ok(Some(size.saturating_add(pre)));
    }
    // sizeof(PyHeapTypeObject) is the basic size of `type` itself: the
    // first static type up the metatype's tp_base chain.
    let mut metatype = info.type_info.clone();
    for _ in 0..64 {
        if metatype.flags & heap == 0 {
            break;
        }
        if metatype.base == 0 {
            return Ok(None);
        }
        metatype = objects.type_info(metatype.base)?;
    }
    if metatype.flags & heap != 0 || metatype.name != "type" {
        return Ok(None);
    }
    let Some(cached_at) = o.heap_type_ht_cached_keys else {
        return Ok(None);
    };
    let keys = read_u64(memory, info.address + cached_at)?;
    let keys_part = if keys == 0 {
        0
    } else {
        match keys_size(objects, keys)? {
            Some(size) => size,
            None => return Ok(None),
        }
    };
    Ok(Some(
        metatype
            .basicsize
            .saturating_add(keys_part)
            .saturating_add(preheader(objects, info)),
    ))
}

/// What `odict_sizeof` (Objects/odictobject.c) adds to the dict's size:
/// the fast-lookup table (`od_fast_nodes_size` pointers) and, when not
/// empty, one `_ODictNode` per key.
fn ordered_dict_extra(objects: &Objects<'_>, address: u64) -> Result<Option<u64>, ObjectError> {
    let Some(fields) = objects.builtins()?.ordered_dict() else {
        return Ok(None);
    };
    let memory = objects.memory();
    let fast_nodes = read_u64(memory, address + fields.od_fast_nodes_size)?;
    if fast_nodes > 1 << 40 {
        return Ok(None);
    }
    let first = read_u64(memory, address + fields.od_first)?;
    let used = match objects.layout().offsets.dict_ma_used {
        Some(at) => read_u64(memory, address + at)?.min(1 << 40),
        None => return Ok(None),
    };
    let nodes = if first == 0 {
        0
    } else {
        used * ODICT_NODE_SIZE
    };
    Ok(Some(fast_nodes * 8 + nodes))
}

/// `gen.__sizeof__` (Objects/genobject.c gen_sizeof), for generators,
/// coroutines and async generators. 3.11+: the object up to its embedded
/// frame plus the frame, `co_framesize` words of its code (the slots of
/// `_PyFrame_NumSlotsForCodeObject` and the frame's specials). They are
/// allocated with `PyObject_GC_NewVar` but keep no `ob_size`: the word
/// where it would be is a pointer, so `object.__sizeof__`'s formula
/// gives absurd sizes (issue 16: "coroutine 611 5374412836671736 bytes").
/// 3.9/3.10: `object.__sizeof__` (the frame is an object of its own).
fn generator_size(objects: &Objects<'_>, info: &ObjectInfo) -> Result<Option<u64>, ObjectError> {
    let o = &objects.layout().offsets;
    let c = &objects.layout().core;
    let Some(iframe) = o.generator_gi_iframe else {
        return Ok(Some(object_sizeof(objects, info)?));
    };
    let code_at = objects
        .layout()
        .interpreter_frames
        .ok_or(missing("f_executable"))?
        .executable;
    let code = read_u64(objects.memory(), info.address + iframe + code_at)?
        & !objects.layout().semantics.executable_tag_mask;
    let header_len = c.code_size.clamp(64, 1024) as usize;
    let header = read_vec(objects.memory(), code, header_len, 1024)?;
    Ok(objects
        .reader
        .frame_size(&header)
        .map(|frame| iframe.saturating_add(frame)))
}

/// `frame.__sizeof__` (Objects/frameobject.c frame_sizeof), from the
/// frame's code object. Where the frame object points at an interpreter
/// frame (`f_frame`, 3.11+): the type's basic size (the object up to its
/// embedded frame's `localsplus`) plus `co_nlocalsplus + co_stacksize`
/// words. Before (3.9/3.10, `f_code` in the object): the basic size plus
/// `co_stacksize + co_nlocals + len(co_cellvars) + len(co_freevars) - 1`
/// words (one is in the struct); `co_nlocals` is `len(co_varnames)`.
fn frame_object_size(objects: &Objects<'_>, info: &ObjectInfo) -> Result<Option<u64>, ObjectError> {
    let o = &objects.layout().offsets;
    let memory = objects.memory();
    let address = info.address;
    let basic = info.type_info.basicsize;
    let header_of = |code: u64| {
        let header_len = o.code_size.unwrap_or(256).clamp(64, 1024) as usize;
        read_vec(memory, code, header_len, 1024)
    };
    let word = |header: &[u8], at: Option<u64>| -> Option<u64> {
        let at = at?;
        (at + 4 <= header.len() as u64)
            .then(|| u64::from(crate::process::memory::field_u32(header, at)))
    };
    let slots = if let Some(f_frame) = o.frame_object_f_frame {
        let code_at = objects
            .layout()
            .interpreter_frames
            .ok_or(missing("f_executable"))?
            .executable;
        let iframe = read_u64(memory, address + f_frame)?;
        let code =
            read_u64(memory, iframe + code_at)? & !objects.layout().semantics.executable_tag_mask;
        let header = header_of(code)?;
        let (Some(locals), Some(stack)) = (
            word(&header, o.code_co_nlocalsplus),
            word(&header, o.code_co_stacksize),
        ) else {
            return Ok(None);
        };
        locals + stack
    } else {
        let Some(f_code) = o.frame_object_f_code else {
            return Ok(None);
        };
        let code = read_u64(memory, address + f_code)?;
        let header = header_of(code)?;
        let Some(stack) = word(&header, o.code_co_stacksize) else {
            return Ok(None);
        };
        let mut names = 0;
        for tuple_at in [o.code_co_varnames, o.code_co_cellvars, o.code_co_freevars] {
            let Some(at) = tuple_at else {
                return Ok(None);
            };
            let tuple = crate::process::memory::field_u64(&header, at);
            names += objects.reader.var_size(tuple)?.unsigned_abs().min(1 << 20);
        }
        (stack + names).saturating_sub(1)
    };
    if slots > 1 << 20 {
        return Ok(None);
    }
    Ok(Some(basic.saturating_add(slots * 8)))
}

/// Values inline in an instance (3.13+, `Py_TPFLAGS_INLINE_VALUES`):
/// allocated with the object after `tp_basicsize`, and left out of its
/// `sys.getsizeof` (3.13-3.15 alike). The allocation adds
/// `_PyInlineValuesSize` (pycore_dict.h) for `n` values: `ROUND_UP(n, 8)`
/// bytes of insertion order and `n + 1` words (the `PyDictValues` header
/// and the values), `n` being the shared keys' usable size then. Right
/// after, `_PyObject_InitInlineValues` takes one from the keys'
/// `dk_usable` while it is over 1 (each instance of a class is made a
/// little smaller) and stores the smaller size as the header's capacity
/// byte: so `n` is the capacity plus one while the keys' `dk_usable` is
/// still over 1, the capacity itself after (for the one instance that
/// took `dk_usable` from 2 to 1 this is 8 bytes short). Matches
/// tracemalloc on 3.13. None when the type keeps no inline values
/// (Some(None) if they cannot be read).
pub(super) fn inline_values(objects: &Objects<'_>, info: &ObjectInfo) -> Option<Option<u64>> {
    let o = &objects.layout().offsets;
    let inline = o.tpflags_inline_values.unwrap_or(0);
    if inline == 0 || info.type_info.flags & inline == 0 {
        return None;
    }
    let memory = objects.memory();
    let read = || -> Option<u64> {
        let at = info.address.checked_add(info.type_info.basicsize)?;
        let capacity = u64::from(read_vec(memory, at, 1, 1).ok()?[0]);
        let keys = read_u64(memory, info.type_info.address + o.heap_type_ht_cached_keys?).ok()?;
        let usable = read_u64(memory, keys + o.dict_keys_dk_usable?).ok()?;
        let n = capacity + u64::from(usable > 1);
        Some(n.next_multiple_of(8) + (n + 1) * 8)
    };
    Some(read())
}

/// An instance's values array kept apart from it (3.11/3.12 `new_values`,
/// Objects/dictobject.c): a prefix of `ROUND_UP(n + 2, 8)` bytes (the
/// insertion order; its size is stored in its last byte, just before
/// `values`) and `n` pointers, where `n` is the shared keys' `dk_nentries
/// + dk_usable`. None for a prefix or count that cannot be true.
pub(super) fn separate_values(objects: &Objects<'_>, keys: u64, values: u64) -> Option<u64> {
    let o = &objects.layout().offsets;
    let memory = objects.memory();
    let prefix = u64::from(read_vec(memory, values.checked_sub(1)?, 1, 1).ok()?[0]);
    let header = read_vec(memory, keys, o.dict_keys_dk_indices? as usize, 256).ok()?;
    let entries = crate::process::memory::field_u64(&header, o.dict_keys_dk_nentries?);
    let usable = crate::process::memory::field_u64(&header, o.dict_keys_dk_usable?);
    let count = entries.checked_add(usable)?;
    let expected_prefix = (count + 2).next_multiple_of(8);
    (count < 256 && prefix == expected_prefix).then(|| prefix + count * 8)
}

/// `code.__sizeof__` (Objects/codeobject.c code_sizeof). 3.11+: the
/// variable-size object rounded up to a word (`_PyObject_VAR_SIZE`);
/// 3.9/3.10: the fixed object, the `co_cell2arg` map, and the opcache
/// (`co_opcache_map`, one byte per code unit, and `co_opcache_size`
/// entries) once a function ran often enough to get one. Both add the
/// `co_extra` block (`_PyCode_SetExtra`, used by debuggers) when present.
fn code_size(objects: &Objects<'_>, info: &ObjectInfo) -> Result<Option<u64>, ObjectError> {
    let o = &objects.layout().offsets;
    let memory = objects.memory();
    let address = info.address;
    let ty = &info.type_info;
    let Some(extra_at) = o.code_co_extra else {
        return Ok(None);
    };
    let mut size = if objects.layout().semantics.objects.code_holds_bytecode {
        let items = objects.reader.var_size(address)?.unsigned_abs();
        if items > 1 << 40 {
            return Ok(None);
        }
        ty.basicsize
            .saturating_add(items.saturating_mul(ty.itemsize))
            .next_multiple_of(8)
    } else {
        let mut size = ty.basicsize;
        if let (Some(cell2arg_at), Some(cellvars_at)) = (o.code_co_cell2arg, o.code_co_cellvars) {
            let cell2arg = read_u64(memory, address + cell2arg_at)?;
            let cellvars = read_u64(memory, address + cellvars_at)?;
            if cell2arg != 0 && cellvars != 0 {
                let count = objects
                    .reader
                    .var_size(cellvars)?
                    .unsigned_abs()
                    .min(1 << 20);
                size = size.saturating_add(count * 8);
            }
        }
        if let (Some(opcache_at), Some(opcache_size_at), Some(code_at)) =
            (o.code_co_opcache, o.code_co_opcache_size, o.code_co_code)
        {
            if read_u64(memory, address + opcache_at)? != 0 {
                let entries = u64::from(
                    crate::process::memory::read_vec(memory, address + opcache_size_at, 1, 1)?[0],
                );
                let code = read_u64(memory, address + code_at)?;
                let code_bytes = objects.reader.var_size(code)?.unsigned_abs().min(1 << 32);
                size = size.saturating_add(code_bytes / 2).saturating_add(
                    entries
                        * o.code_opcache_entry_size
                            .ok_or(missing("sizeof(_PyOpcache)"))?,
                );
            }
        }
        size
    };
    let extra = read_u64(memory, address + extra_at)?;
    if extra != 0 {
        // _PyCodeObjectExtra: ce_size, then ce_size pointers (one inline).
        let entries = read_u64(memory, extra)?;
        if entries > 1 << 20 {
            return Ok(None);
        }
        size = size.saturating_add(8 + entries.max(1) * 8);
    }
    Ok(Some(size))
}

fn missing(field: &'static str) -> ObjectError {
    ObjectError::MissingOffset(field)
}

/// `object.__sizeof__`: `tp_basicsize + |ob_size| * tp_itemsize`.
fn object_sizeof(objects: &Objects<'_>, info: &ObjectInfo) -> Result<u64, ObjectError> {
    let ty = &info.type_info;
    let items = if ty.itemsize > 0 {
        objects
            .reader
            .var_size(info.address)?
            .unsigned_abs()
            .saturating_mul(ty.itemsize)
    } else {
        0
    };
    Ok(ty.basicsize.saturating_add(items))
}

/// What `sys.getsizeof` adds before the object: the GC header when the
/// type is GC-tracked, and from 3.11 two more words when the type keeps a
/// managed dict or weakref list there (`_PyType_PreHeaderSize`,
/// Include/internal/pycore_object.h).
fn preheader(objects: &Objects<'_>, info: &ObjectInfo) -> u64 {
    let c = &objects.layout().core;
    let flags = info.type_info.flags;
    let mut size = 0;
    if flags & c.tpflags_have_gc != 0 {
        // No PyGC_Head on free-threaded builds (object_gc_preheader_size 0).
        size += c.object_gc_preheader_size;
    }
    let managed = c.tpflags_preheader;
    if managed != 0 && flags & managed != 0 {
        size += 16;
    }
    size
}

/// True if the first static type up the `tp_base` chain is `object`, so
/// `object.__sizeof__` applies (and not, say, `list.__sizeof__`).
fn plain_object_base(objects: &Objects<'_>, info: &ObjectInfo) -> Result<bool, ObjectError> {
    let heap = objects.layout().core.tpflags_heaptype;
    let mut ty = info.type_info.clone();
    for _ in 0..64 {
        if ty.flags & heap == 0 {
            return Ok(ty.name == "object");
        }
        if ty.base == 0 {
            return Ok(false);
        }
        ty = objects.type_info(ty.base)?;
    }
    Ok(false)
}

/// `str.__sizeof__` (Objects/unicodeobject.c unicode_sizeof_impl) for
/// compact strings: the header, the characters and their terminator, and
/// a cached UTF-8 copy if one was made; and the bytes of the first two,
/// which lie in the object itself.
fn str_size(objects: &Objects<'_>, address: u64) -> Result<(u64, u64), ObjectError> {
    let o = &objects.layout().offsets;
    let c = &objects.layout().core;
    let ascii_size = o
        .unicode_ascii_size
        .ok_or(missing("sizeof(PyASCIIObject)"))?;
    let compact_size = c.unicode_compact_size;
    let header = read_vec(objects.memory(), address, compact_size as usize, 256)?;
    let length = field_u64(&header, o.unicode_length.ok_or(missing("length"))?);
    let state =
        crate::process::memory::field_u32(&header, o.unicode_state.ok_or(missing("state"))?);
    let kind = u64::from((state >> c.unicode_state_kind_shift) & 7);
    let ascii = (state >> c.unicode_state_ascii_shift) & 1 == 1;
    if length > 1 << 40 {
        return Err(ObjectError::Invalid {
            address,
            expected: "str",
            detail: format!("length {length}"),
        });
    }
    if ascii {
        return Ok((ascii_size + length + 1, ascii_size + length + 1));
    }
    let inline = compact_size + (length + 1) * kind;
    let mut size = inline;
    if let (Some(utf8_at), Some(utf8_length_at)) = (o.unicode_utf8, o.unicode_utf8_length) {
        let utf8 = field_u64(&header, utf8_at);
        if utf8 != 0 && utf8 != address.wrapping_add(compact_size) {
            size = size.saturating_add(field_u64(&header, utf8_length_at).saturating_add(1));
        }
    }
    Ok((size, inline))
}

/// What `dict.__sizeof__` (Objects/dictobject.c `_PyDict_SizeOf`) adds to
/// the basic size: for a split table (`ma_values` set: an instance's
/// `__dict__` sharing its class's keys) the values array — before 3.11
/// `USABLE_FRACTION(dk_size)` slots, from 3.11 `dk_nentries + dk_usable`
/// (`shared_keys_usable_size`), counted even when 3.13 keeps the values
/// inline in the instance; and the keys object when the dict owns it
/// alone (`dk_refcnt == 1`; shared keys are counted in the type).
fn dict_size(objects: &Objects<'_>, address: u64) -> Result<Option<u64>, ObjectError> {
    let o = &objects.layout().offsets;
    let c = &objects.layout().core;
    let memory = objects.memory();
    let keys = read_u64(memory, address + o.dict_ma_keys.ok_or(missing("ma_keys"))?)?;
    let values = read_u64(
        memory,
        address + o.dict_ma_values.ok_or(missing("ma_values"))?,
    )?;
    let indices = o.dict_keys_dk_indices.ok_or(missing("dk_indices"))?;
    let header = read_vec(memory, keys, indices as usize, 256)?;
    let mut size = 0u64;
    if values != 0 {
        let slots = match o.dict_keys_dk_log2_size {
            Some(_) => {
                let usable = field_u64(&header, o.dict_keys_dk_usable.ok_or(missing("dk_usable"))?);
                let entries = field_u64(
                    &header,
                    o.dict_keys_dk_nentries.ok_or(missing("dk_nentries"))?,
                );
                usable.saturating_add(entries)
            }
            None => (field_u64(&header, o.dict_keys_dk_size.ok_or(missing("dk_size"))?) << 1) / 3,
        };
        if slots > 1 << 40 {
            return Ok(None);
        }
        size = slots * 8;
    }
    let refcnt = field_u64(&header, c.dict_keys_dk_refcnt);
    if refcnt != 1 {
        return Ok(Some(size));
    }
    Ok(keys_size(objects, keys)?.map(|keys| size.saturating_add(keys)))
}

/// The size of a `PyDictKeysObject` (`_PyDict_KeysSize` on 3.11+; the
/// same sum spelled out in `_PyDict_SizeOf` on 3.9/3.10).
fn keys_size(objects: &Objects<'_>, keys: u64) -> Result<Option<u64>, ObjectError> {
    let o = &objects.layout().offsets;
    let c = &objects.layout().core;
    let indices = o.dict_keys_dk_indices.ok_or(missing("dk_indices"))?;
    let header = read_vec(objects.memory(), keys, indices as usize, 256)?;
    Ok(Some(match o.dict_keys_dk_log2_size {
        // 3.11+ (_PyDict_KeysSize): header + index bytes + usable entries.
        Some(log2_size_at) => {
            let log2_size = field_u8(&header, log2_size_at);
            let log2_index = field_u8(
                &header,
                o.dict_keys_dk_log2_index_bytes
                    .ok_or(missing("dk_log2_index_bytes"))?,
            );
            let kind = field_u8(&header, o.dict_keys_dk_kind.ok_or(missing("dk_kind"))?);
            if log2_size > 40 || log2_index > 40 {
                return Ok(None);
            }
            let entry = if kind == 0 {
                c.dict_key_entry_size
            } else {
                o.dict_unicode_entry_size
                    .ok_or(missing("sizeof(PyDictUnicodeEntry)"))?
            };
            let usable = ((1u64 << log2_size) << 1) / 3;
            indices + (1 << log2_index) + usable * entry
        }
        // 3.9/3.10: header + dk_size index slots of 1-8 bytes + usable entries.
        None => {
            let size = field_u64(&header, o.dict_keys_dk_size.ok_or(missing("dk_size"))?);
            if size > 1 << 40 {
                return Ok(None);
            }
            let width = match size {
                0..=0xff => 1,
                0x100..=0xffff => 2,
                0x10000..=0xffff_ffff => 4,
                _ => 8,
            };
            let usable = (size << 1) / 3;
            indices + width * size + usable * c.dict_key_entry_size
        }
    }))
}
