//! Python objects read from the target, written once against [`Layout`]:
//! what an object is (type, `id()`, `sys.getsizeof()`, reference count),
//! its contents (items, attributes, cells) and a bounded short rendering.
//!
//! Remote memory is untrusted: every read here is bounded (string length,
//! item counts, depth), walks are cycle-safe, and garbage yields an error or
//! a placeholder, never a panic or a hang. Version differences live in the
//! layout's offsets and flags; the few that are not offsets (how `ob_size`
//! of an `int` is encoded, where a managed dict sits) are commented with the
//! CPython file that forces them.

mod native;
pub mod plausible;
mod render;
mod size;

pub use render::{float_repr, Rendering};

use std::cell::RefCell;
use std::collections::HashMap;

use crate::process::memory::{field_u32, field_u64, read_u64, read_vec, RemoteMemory};
use crate::reading::cpython::objects::{ObjectError, ObjectReader};
use crate::reading::cpython::Layout;

/// Most items of a container, or attributes of an instance, ever listed.
pub const MAX_ITEMS: usize = 4096;
/// Most bytes of a type object copied (every field read lies below this).
const MAX_TYPE_BYTES: usize = 1024;
/// Most 30-bit digits of an `int` rendered (about 9,000 decimal digits).
pub const MAX_INT_DIGITS: usize = 1000;
/// Most slots (`__slots__` members) read per type in the MRO chain.
const MAX_MEMBERS: usize = 256;
/// Most bases followed up `tp_base`.
const MAX_BASES: usize = 64;

/// Py_TPFLAGS_*_SUBCLASS bits (Include/object.h), the same in 3.9-3.15.
const TPFLAGS_LONG_SUBCLASS: u64 = 1 << 24;
const TPFLAGS_LIST_SUBCLASS: u64 = 1 << 25;
const TPFLAGS_TUPLE_SUBCLASS: u64 = 1 << 26;
const TPFLAGS_BYTES_SUBCLASS: u64 = 1 << 27;
const TPFLAGS_UNICODE_SUBCLASS: u64 = 1 << 28;
const TPFLAGS_DICT_SUBCLASS: u64 = 1 << 29;
const TPFLAGS_TYPE_SUBCLASS: u64 = 1 << 31;

/// What kind of object pydeep knows how to look inside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `None`.
    None,
    /// `bool`.
    Bool,
    /// `int` (any size).
    Int,
    /// `float`.
    Float,
    /// `complex`.
    Complex,
    /// `str` (compact kinds).
    Str,
    /// `bytes`.
    Bytes,
    /// `tuple`.
    Tuple,
    /// `list`.
    List,
    /// `dict`.
    Dict,
    /// `set`.
    Set,
    /// `frozenset`.
    FrozenSet,
    /// A Python function.
    Function,
    /// A closure cell.
    Cell,
    /// A module.
    Module,
    /// A class.
    Type,
    /// An instance of a class defined in Python (a heap type).
    Instance,
    /// `collections.deque`.
    Deque,
    /// `collections.OrderedDict` (a dict with a linked list of its keys).
    OrderedDict,
    /// `collections.defaultdict` (a dict with a `default_factory`).
    DefaultDict,
    /// `bytearray`.
    ByteArray,
    /// `memoryview`.
    MemoryView,
    /// `range`.
    Range,
    /// `slice`.
    Slice,
    /// `functools.partial`.
    Partial,
    /// A bound method (`types.MethodType`).
    Method,
    /// `builtin_function_or_method`.
    BuiltinFunction,
    /// `property`.
    Property,
    /// `staticmethod`.
    StaticMethod,
    /// `classmethod`.
    ClassMethod,
    /// `types.SimpleNamespace`.
    Namespace,
    /// A weak reference (`weakref.ref`).
    WeakRef,
    /// A generator, coroutine or async generator (its frame's variables
    /// are read by `crate::reading::generators`).
    Generator,
    /// A builtin object not opened whose `sys.getsizeof` is
    /// `object.__sizeof__` (asyncio `Task` and `Future`, `contextvars`
    /// `Context` and `ContextVar`).
    OpaqueBuiltin,
    /// Anything else (builtin objects pydeep does not open).
    Other,
}

impl Kind {
    /// Builtin kinds a class can derive from and whose layout its
    /// instances keep (a `Counter` is read as a dict, a namedtuple as a
    /// tuple), plus their `__dict__` or slots.
    pub fn is_base_layout(self) -> bool {
        matches!(
            self,
            Kind::Tuple
                | Kind::List
                | Kind::Dict
                | Kind::Set
                | Kind::FrozenSet
                | Kind::Deque
                | Kind::OrderedDict
                | Kind::DefaultDict
                | Kind::ByteArray
        )
    }
}

/// A type object, as much of it as the readers use.
#[derive(Debug, Clone)]
pub struct TypeInfo {
    /// Address of the type object.
    pub address: u64,
    /// `type.__name__` (for static types the part of `tp_name` after the last dot).
    pub name: String,
    /// `tp_flags`.
    pub flags: u64,
    /// `tp_basicsize`.
    pub basicsize: u64,
    /// `tp_itemsize`.
    pub itemsize: u64,
    /// `tp_dictoffset`.
    pub dictoffset: i64,
    /// `tp_base`.
    pub base: u64,
    /// `tp_members`.
    pub members: u64,
    /// What kind of object instances are.
    pub kind: Kind,
}

/// The header facts of one object.
#[derive(Debug, Clone)]
pub struct ObjectInfo {
    /// Its address (`id()`).
    pub address: u64,
    /// Its type.
    pub type_info: TypeInfo,
    /// `ob_refcnt` (what `sys.getrefcount(x) - 1` reports in-process).
    pub refcount: i64,
    /// 3.12+ immortal object (None, small ints, interned strings...): its
    /// reference count is a marker, not a count.
    pub immortal: bool,
}

/// Object reads against one target: type cache, bounded readers.
pub struct Objects<'a> {
    /// The low-level reader (strings, tuples, dicts).
    pub reader: ObjectReader<'a>,
    types: RefCell<HashMap<u64, TypeInfo>>,
    /// [`Objects::read_kind`] of classes, by type address.
    base_kinds: RefCell<HashMap<u64, Kind>>,
}

fn invalid(address: u64, expected: &'static str, detail: impl Into<String>) -> ObjectError {
    ObjectError::Invalid {
        address,
        expected,
        detail: detail.into(),
    }
}

fn need(value: Option<u64>, field: &'static str) -> Result<u64, ObjectError> {
    value.ok_or(ObjectError::MissingOffset(field))
}

impl<'a> Objects<'a> {
    /// Readers over `memory` laid out as `layout`.
    pub fn new(memory: &'a dyn RemoteMemory, layout: &'a Layout) -> Objects<'a> {
        Objects {
            reader: ObjectReader::new(memory, layout),
            types: RefCell::new(HashMap::new()),
            base_kinds: RefCell::new(HashMap::new()),
        }
    }

    /// The target's memory.
    pub fn memory(&self) -> &'a dyn RemoteMemory {
        self.reader.memory
    }

    /// The target's layout.
    pub fn layout(&self) -> &'a Layout {
        self.reader.layout
    }

    /// The type object at `address` (cached).
    pub fn type_info(&self, address: u64) -> Result<TypeInfo, ObjectError> {
        if let Some(info) = self.types.borrow().get(&address) {
            return Ok(info.clone());
        }
        if !plausible(address) {
            return Err(invalid(address, "type", "misaligned or outside user space"));
        }
        let o = &self.layout().offsets;
        let c = &self.layout().core;
        let len = (c.type_size as usize).min(MAX_TYPE_BYTES);
        let bytes = read_vec(self.memory(), address, len, MAX_TYPE_BYTES)?;
        let full_name = self
            .reader
            .c_string(field_u64(&bytes, need(o.type_tp_name, "tp_name")?), 256)?;
        let flags = field_u64(&bytes, c.type_tp_flags);
        let heap = flags & c.tpflags_heaptype != 0;
        let name = full_name.rsplit('.').next().unwrap_or("").to_string();
        // A class statement names its type without dots; heap types made
        // by C extensions (PyType_FromSpec) carry "module.Name" and are
        // opaque builtin objects, not instances with attributes.
        let kind = classify(&full_name, &name, flags, heap && !full_name.contains('.'));
        let info = TypeInfo {
            address,
            name,
            flags,
            basicsize: field_u64(&bytes, c.type_tp_basicsize),
            itemsize: field_u64(&bytes, c.type_tp_itemsize),
            dictoffset: field_u64(&bytes, c.type_tp_dictoffset) as i64,
            base: field_u64(&bytes, c.type_tp_base),
            members: field_u64(&bytes, c.type_tp_members),
            kind,
        };
        if self.types.borrow().len() < 65_536 {
            self.types.borrow_mut().insert(address, info.clone());
        }
        Ok(info)
    }

    /// How instances of `ty` are laid out: its own kind, or for a class
    /// (an [`Kind::Instance`] type) deriving from a builtin container, the
    /// container's kind (the first base up `tp_base` that is not a class).
    pub fn read_kind(&self, ty: &TypeInfo) -> Kind {
        if ty.kind != Kind::Instance {
            return ty.kind;
        }
        if let Some(kind) = self.base_kinds.borrow().get(&ty.address) {
            return *kind;
        }
        let mut base = ty.base;
        let mut kind = Kind::Instance;
        for _ in 0..MAX_BASES {
            let Ok(next) = self.type_info(base) else {
                break;
            };
            if next.kind != Kind::Instance {
                if next.kind.is_base_layout() {
                    kind = next.kind;
                }
                break;
            }
            base = next.base;
        }
        if self.base_kinds.borrow().len() < 65_536 {
            self.base_kinds.borrow_mut().insert(ty.address, kind);
        }
        kind
    }

    /// Type, reference count and immortality of the object at `address`.
    pub fn info(&self, address: u64) -> Result<ObjectInfo, ObjectError> {
        if !plausible(address) {
            return Err(invalid(
                address,
                "object",
                "misaligned, null or outside user space",
            ));
        }
        let c = &self.layout().core;
        let type_at = c.object_ob_type;
        let header = read_vec(self.memory(), address, (type_at + 8) as usize, 64)?;
        let type_info = self.type_info(field_u64(&header, type_at))?;
        // Py_REFCNT and PEP 683 immortality, per build (cpython/mod.rs).
        let (refcount, immortal) = self.layout().refcount(&header);
        Ok(ObjectInfo {
            address,
            type_info,
            refcount,
            immortal,
        })
    }

    /// `sys.getsizeof()` of the object, for the kinds whose `__sizeof__`
    /// pydeep reproduces (builtins and plain/slotted instances): a size,
    /// or [`plausible::Size::Implausible`] when the object claims more
    /// memory than the target has (a hostile or corrupt header).
    pub fn getsizeof(&self, info: &ObjectInfo) -> Option<plausible::Size> {
        size::getsizeof(self, info).ok().flatten()
    }

    /// The bytes of an instance's attribute values that freeing it frees
    /// and neither its `sys.getsizeof` nor its dict's counts: 3.13+ values
    /// inline in the object (with or without a dict made from them), or
    /// 3.11/3.12 values kept apart while no `__dict__` was made. None when
    /// there are none or they cannot be read.
    pub fn values_bytes_beyond_getsizeof(&self, info: &ObjectInfo) -> Option<u64> {
        if let Some(inline) = size::inline_values(self, info) {
            return inline;
        }
        match self.instance_dict(info).ok()? {
            InstanceDict::Values { keys, values } => size::separate_values(self, keys, values),
            _ => None,
        }
    }

    /// `ob_size` of a variable-size object, checked to be within `limit`.
    pub fn size_field(&self, address: u64, limit: usize) -> Result<usize, ObjectError> {
        let size = self.reader.var_size(address)?;
        if size < 0 || size as usize > limit {
            return Err(invalid(address, "container", format!("size {size}")));
        }
        Ok(size as usize)
    }

    /// Number of items of a container (len()), or of characters of a str.
    pub fn length(&self, info: &ObjectInfo) -> Option<u64> {
        let o = &self.layout().offsets;
        let address = info.address;
        let memory = self.memory();
        // The least memory each item needs, and where the items are: a
        // length that memory cannot hold is not shown.
        let (length, item_bytes, items_at) = match self.read_kind(&info.type_info) {
            Kind::Str => (
                read_u64(memory, address + o.unicode_length?).ok()?,
                1,
                address,
            ),
            Kind::Bytes | Kind::ByteArray => (
                self.reader.var_size(address).ok()?.max(0) as u64,
                1,
                address,
            ),
            Kind::Deque => (
                self.reader.var_size(address).ok()?.max(0) as u64,
                8,
                address,
            ),
            Kind::Tuple => (
                self.reader.var_size(address).ok()?.max(0) as u64,
                8,
                address,
            ),
            Kind::List => (
                self.reader.var_size(address).ok()?.max(0) as u64,
                8,
                read_u64(memory, address + o.list_ob_item?).ok()?,
            ),
            Kind::Dict | Kind::OrderedDict | Kind::DefaultDict => {
                (read_u64(memory, address + o.dict_ma_used?).ok()?, 0, 0)
            }
            Kind::Set | Kind::FrozenSet => (read_u64(memory, address + o.set_used?).ok()?, 0, 0),
            _ => return None,
        };
        let bytes = length.checked_mul(item_bytes.max(1))?;
        let holdable = if item_bytes == 0 {
            bytes <= plausible::ADDRESS_SPACE
        } else {
            plausible::can_hold(memory, items_at, bytes)
        };
        holdable.then_some(length)
    }

    /// The first `limit` item pointers of a tuple or list, and its length.
    pub fn sequence_items(
        &self,
        address: u64,
        kind: Kind,
        limit: usize,
    ) -> Result<(Vec<u64>, usize), ObjectError> {
        let o = &self.layout().offsets;
        let length = self.size_field(address, 1 << 28)?;
        let count = length.min(limit).min(MAX_ITEMS);
        let items_at = match kind {
            Kind::Tuple => address + need(o.tuple_ob_item, "PyTupleObject.ob_item")?,
            Kind::List => read_u64(self.memory(), address + need(o.list_ob_item, "ob_item")?)?,
            _ => return Err(invalid(address, "tuple or list", "other kind")),
        };
        let bytes = read_vec(self.memory(), items_at, count * 8, MAX_ITEMS * 8)?;
        Ok((pointers(&bytes), length))
    }

    /// The first `limit` keys of a set or frozenset, and its length.
    pub fn set_items(&self, address: u64, limit: usize) -> Result<(Vec<u64>, usize), ObjectError> {
        let o = &self.layout().offsets;
        let c = &self.layout().core;
        let used = read_u64(self.memory(), address + need(o.set_used, "set.used")?)? as usize;
        let mask = read_u64(self.memory(), address + need(o.set_mask, "set.mask")?)? as usize;
        let table = read_u64(self.memory(), address + need(o.set_table, "set.table")?)?;
        let entry = c.set_entry_size as usize;
        let key_at = c.set_entry_key;
        if used > 1 << 28 || mask >= 1 << 22 || used > mask + 1 {
            return Err(invalid(address, "set", format!("used {used}, mask {mask}")));
        }
        let bytes = read_vec(self.memory(), table, (mask + 1) * entry, (1 << 22) * 16)?;
        // A deleted slot holds the `dummy` key (Objects/setobject.c); it
        // is told apart by hash -1 in the entry's second word.
        let mut items = Vec::new();
        for chunk in bytes.chunks_exact(entry) {
            if items.len() >= limit.min(MAX_ITEMS) {
                break;
            }
            let key = field_u64(chunk, key_at);
            let hash = field_u64(chunk, if key_at == 0 { 8 } else { 0 }) as i64;
            if key != 0 && hash != -1 {
                items.push(key);
            }
        }
        Ok((items, used))
    }

    /// The first `limit` (key, value) pairs of a dict, and its length.
    pub fn dict_items(
        &self,
        address: u64,
        limit: usize,
    ) -> Result<(Vec<(u64, u64)>, usize), ObjectError> {
        let mut items = self.reader.dict_items(address)?;
        let length = items.len();
        items.truncate(limit.min(MAX_ITEMS));
        Ok((items, length))
    }

    /// The attributes of an instance, in the order CPython keeps them:
    /// its `__dict__` (a dict, 3.11+ inline values or a 3.12 values
    /// pointer) and then its `__slots__` (from every base's members).
    pub fn attributes(&self, info: &ObjectInfo) -> Result<Vec<(String, u64)>, ObjectError> {
        let mut out = Vec::new();
        for (key, value) in self.instance_dict_items(info)? {
            if out.len() >= MAX_ITEMS {
                break;
            }
            let name = self
                .reader
                .unicode(key)
                .unwrap_or_else(|_| format!("<key 0x{key:x}>"));
            out.push((name, value));
        }
        out.extend(self.slots(info)?);
        Ok(out)
    }

    /// The `__dict__` of an instance: `(key, value)` pointers.
    pub fn instance_dict_items(&self, info: &ObjectInfo) -> Result<Vec<(u64, u64)>, ObjectError> {
        match self.instance_dict(info)? {
            InstanceDict::None => Ok(Vec::new()),
            InstanceDict::Dict(dict) => self.reader.dict_items(dict),
            InstanceDict::Values { keys, values } => self.reader.keys_items(keys, values),
        }
    }

    /// Where an instance keeps its `__dict__`.
    pub fn instance_dict(&self, info: &ObjectInfo) -> Result<InstanceDict, ObjectError> {
        let o = &self.layout().offsets;
        let c = &self.layout().core;
        let address = info.address;
        let ty = &info.type_info;
        let managed = c.tpflags_managed_dict;
        if managed == 0 || ty.flags & managed == 0 {
            // 3.9/3.10, or a type without a managed dict: tp_dictoffset
            // (negative offsets count from the end of a variable-size
            // object).
            let at = if ty.dictoffset < 0
                && ty.dictoffset > -4096
                && self.read_kind(ty) == Kind::Tuple
            {
                // A negative offset counts from the end of the items
                // (`_PyObject_ComputedDictPointer`, Objects/object.c):
                // the variable size rounded up to a word. Only tuple
                // subclasses are followed (3.12+ ints keep no ob_size).
                let items = self.size_field(address, 1 << 28)? as u64;
                let end = ty
                    .basicsize
                    .saturating_add(items.saturating_mul(ty.itemsize))
                    .next_multiple_of(8);
                end.wrapping_add(ty.dictoffset as u64)
            } else if ty.dictoffset <= 0 || ty.dictoffset > 4096 {
                return Ok(InstanceDict::None);
            } else {
                ty.dictoffset as u64
            };
            let dict = read_u64(self.memory(), address + at)?;
            return Ok(if dict == 0 {
                InstanceDict::None
            } else {
                InstanceDict::Dict(dict)
            });
        }
        // Managed dicts (Include/internal/pycore_object.h): the dict
        // pointer sits three words before the object. Without a dict, the
        // values live in a split table keyed by the type's ht_cached_keys:
        // four words before the object on 3.11, stored minus one (so odd)
        // in the same slot as the dict on 3.12, inline after the object
        // (at tp_basicsize) on 3.13+.
        let slot = read_u64(
            self.memory(),
            address.wrapping_sub(need(o.object_managed_dict_before, "managed dict slot")?),
        )?;
        // Py_TPFLAGS_INLINE_VALUES (3.13+; 0 in no table).
        let values = if let Some(inline) = o.tpflags_inline_values.filter(|&f| f != 0) {
            if slot != 0 {
                return Ok(InstanceDict::Dict(slot));
            }
            if ty.flags & inline == 0 {
                return Ok(InstanceDict::None);
            }
            let values = address.wrapping_add(ty.basicsize);
            // PyDictValues (3.13 pycore_dict.h): capacity, size, embedded,
            // valid bytes; `valid` is cleared once a dict took the values.
            let mut header = [0u8; 4];
            self.memory().read(values, &mut header)?;
            if header[3] == 0 {
                return Ok(InstanceDict::None);
            }
            values
        } else if o.long_lv_tag.is_some() {
            if slot & 1 == 0 {
                return Ok(if slot == 0 {
                    InstanceDict::None
                } else {
                    InstanceDict::Dict(slot)
                });
            }
            // _PyDictOrValues_GetValues: the slot holds values - 1.
            slot.wrapping_add(1)
        } else {
            if slot != 0 {
                return Ok(InstanceDict::Dict(slot));
            }
            read_u64(self.memory(), address.wrapping_sub(32))?
        };
        if values == 0 {
            return Ok(InstanceDict::None);
        }
        let keys = read_u64(
            self.memory(),
            ty.address + need(o.heap_type_ht_cached_keys, "ht_cached_keys")?,
        )?;
        Ok(if keys == 0 {
            InstanceDict::None
        } else {
            InstanceDict::Values { keys, values }
        })
    }

    /// The `__slots__` of an instance that are set: (name, value), from the
    /// `T_OBJECT_EX` members of its type and every base (most derived
    /// first; CPython's `PyHeapType_GET_MEMBERS`).
    pub fn slots(&self, info: &ObjectInfo) -> Result<Vec<(String, u64)>, ObjectError> {
        let o = &self.layout().offsets;
        let c = &self.layout().core;
        let (Some(size), Some(name_at), Some(type_at), Some(offset_at)) = (
            o.member_def_size,
            o.member_def_name,
            o.member_def_type,
            o.member_def_offset,
        ) else {
            return Ok(Vec::new());
        };
        let object_ex = c.member_type_object_ex as u32;
        let heap = c.tpflags_heaptype;
        let mut out = Vec::new();
        let mut ty = info.type_info.clone();
        for _ in 0..MAX_BASES {
            if ty.flags & heap == 0 {
                break;
            }
            if ty.members != 0 {
                let bytes = read_vec(
                    self.memory(),
                    ty.members,
                    MAX_MEMBERS * size as usize,
                    MAX_MEMBERS * 64,
                )
                .or_else(|_| read_vec(self.memory(), ty.members, 4 * size as usize, 4096))?;
                for member in bytes.chunks_exact(size as usize) {
                    let name = field_u64(member, name_at);
                    if name == 0 {
                        break;
                    }
                    let offset = field_u64(member, offset_at);
                    if field_u32(member, type_at) != object_ex || offset > 1 << 16 {
                        continue;
                    }
                    let value = read_u64(self.memory(), info.address + offset)?;
                    if value != 0 {
                        out.push((self.reader.c_string(name, 256)?, value));
                    }
                }
            }
            if ty.base == 0 {
                break;
            }
            ty = self.type_info(ty.base)?;
        }
        Ok(out)
    }

    /// The object a cell holds (0 if empty).
    pub fn cell_contents(&self, address: u64) -> Result<u64, ObjectError> {
        let at = need(self.layout().offsets.cell_ob_ref, "PyCellObject.ob_ref")?;
        Ok(read_u64(self.memory(), address + at)?)
    }

    /// A function's fields: (name, address) of `__closure__`,
    /// `__defaults__`, `__code__`, `__globals__` that are set, in that
    /// order: a breadth-first walk spends its object budget on what the
    /// function alone holds (its cells) before the module's globals.
    pub fn function_fields(&self, address: u64) -> Vec<(&'static str, u64)> {
        let o = &self.layout().offsets;
        [
            ("__closure__", o.function_func_closure),
            ("__defaults__", o.function_func_defaults),
            ("__code__", o.function_func_code),
            ("__globals__", o.function_func_globals),
        ]
        .into_iter()
        .filter_map(|(name, at)| {
            let value = read_u64(self.memory(), address + at?).ok()?;
            (value != 0).then_some((name, value))
        })
        .collect()
    }

    /// The `__qualname__` of a function.
    pub fn function_qualname(&self, address: u64) -> Result<String, ObjectError> {
        let o = &self.layout().offsets;
        let at = need(
            o.function_func_qualname.or(o.function_func_name),
            "func_qualname",
        )?;
        self.reader.unicode(read_u64(self.memory(), address + at)?)
    }

    /// The objects `gc.get_referents()`-style edges lead to, labelled:
    /// items of sequences and sets, dict keys and values, instance
    /// attributes, cell contents, function closures/globals/defaults.
    /// At most `limit` edges.
    pub fn referents(
        &self,
        info: &ObjectInfo,
        limit: usize,
    ) -> Result<Vec<(String, u64)>, ObjectError> {
        let address = info.address;
        let mut out = Vec::new();
        let kind = self.read_kind(&info.type_info);
        match kind {
            Kind::Tuple | Kind::List => {
                let (items, _) = self.sequence_items(address, kind, limit)?;
                for (i, item) in items.into_iter().enumerate() {
                    out.push((format!("[{i}]"), item));
                }
            }
            Kind::Set | Kind::FrozenSet => {
                for item in self.set_items(address, limit)?.0 {
                    out.push(("item".to_string(), item));
                }
            }
            Kind::Dict | Kind::OrderedDict | Kind::DefaultDict => {
                if kind == Kind::DefaultDict {
                    out.extend(self.native_referents(info, kind)?);
                }
                let items = if kind == Kind::OrderedDict {
                    self.ordered_dict_items(address, limit)?.0
                } else {
                    self.dict_items(address, limit)?.0
                };
                for (key, value) in items {
                    let label = self
                        .reader
                        .unicode(key)
                        .map(|k| {
                            format!("[{}]", crate::reading::cpython::code::python_str_repr(&k))
                        })
                        .unwrap_or_else(|_| "value".to_string());
                    out.push(("key".to_string(), key));
                    out.push((label, value));
                }
            }
            Kind::Cell => {
                let value = self.cell_contents(address)?;
                if value != 0 {
                    out.push(("cell_contents".to_string(), value));
                }
            }
            Kind::Function => {
                for (name, value) in self.function_fields(address) {
                    out.push((name.to_string(), value));
                }
            }
            Kind::Deque => {
                for (i, item) in self.deque_items(address, limit)?.0.into_iter().enumerate() {
                    out.push((format!("[{i}]"), item));
                }
            }
            Kind::Instance => {}
            _ => out.extend(self.native_referents(info, kind)?),
        }
        if info.type_info.kind == Kind::Instance {
            for (name, value) in self.attributes(info)? {
                out.push((format!(".{name}"), value));
            }
        }
        out.truncate(limit);
        Ok(out)
    }
}

/// Where an instance keeps its attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceDict {
    /// No `__dict__` (slotted, or not created yet).
    None,
    /// A real dict at this address.
    Dict(u64),
    /// Values without a dict (3.11+): a split table's keys and values.
    Values {
        /// The type's shared `PyDictKeysObject`.
        keys: u64,
        /// The `PyDictValues`.
        values: u64,
    },
}

fn classify(full_name: &str, name: &str, flags: u64, heap: bool) -> Kind {
    if heap {
        return if flags & TPFLAGS_TYPE_SUBCLASS != 0 {
            Kind::Type
        } else {
            Kind::Instance
        };
    }
    // Types of extension modules are named by their module (`tp_name`
    // "collections.deque"), so another module's `deque` is not taken for
    // this one. 3.9 names the weakref type "weakref", 3.10+
    // "weakref.ReferenceType".
    match full_name {
        "collections.deque" => return Kind::Deque,
        "collections.OrderedDict" => return Kind::OrderedDict,
        "collections.defaultdict" => return Kind::DefaultDict,
        "functools.partial" => return Kind::Partial,
        "types.SimpleNamespace" => return Kind::Namespace,
        "weakref" | "weakref.ReferenceType" => return Kind::WeakRef,
        "bytearray" => return Kind::ByteArray,
        "memoryview" => return Kind::MemoryView,
        "range" => return Kind::Range,
        "slice" => return Kind::Slice,
        "method" => return Kind::Method,
        "builtin_function_or_method" => return Kind::BuiltinFunction,
        "property" => return Kind::Property,
        "staticmethod" => return Kind::StaticMethod,
        "classmethod" => return Kind::ClassMethod,
        "generator" | "coroutine" | "async_generator" => return Kind::Generator,
        "_asyncio.Task"
        | "_asyncio.Future"
        | "Context"
        | "ContextVar"
        | "_contextvars.Context"
        | "_contextvars.ContextVar" => return Kind::OpaqueBuiltin,
        // Builtin iterators keep `object.__sizeof__` (none defines its
        // own), so their size is their type's basic size: checked against
        // `sys.getsizeof` (tests/programs/snapshot_builtins.py).
        "list_iterator"
        | "list_reverseiterator"
        | "tuple_iterator"
        | "set_iterator"
        | "dict_keyiterator"
        | "dict_valueiterator"
        | "dict_itemiterator"
        | "range_iterator"
        | "longrange_iterator"
        | "str_iterator"
        | "str_ascii_iterator"
        | "bytes_iterator"
        | "bytearray_iterator"
        | "callable_iterator"
        | "iterator"
        | "enumerate"
        | "reversed"
        | "zip"
        | "map"
        | "filter"
        | "itertools.count"
        | "itertools.chain"
        | "itertools.cycle"
        | "itertools.repeat"
        | "itertools.islice" => return Kind::OpaqueBuiltin,
        _ => {}
    }
    match name {
        "NoneType" => Kind::None,
        "bool" => Kind::Bool,
        "int" if flags & TPFLAGS_LONG_SUBCLASS != 0 => Kind::Int,
        "float" => Kind::Float,
        "complex" => Kind::Complex,
        "str" if flags & TPFLAGS_UNICODE_SUBCLASS != 0 => Kind::Str,
        "bytes" if flags & TPFLAGS_BYTES_SUBCLASS != 0 => Kind::Bytes,
        "tuple" if flags & TPFLAGS_TUPLE_SUBCLASS != 0 => Kind::Tuple,
        "list" if flags & TPFLAGS_LIST_SUBCLASS != 0 => Kind::List,
        "dict" if flags & TPFLAGS_DICT_SUBCLASS != 0 => Kind::Dict,
        "set" => Kind::Set,
        "frozenset" => Kind::FrozenSet,
        "function" => Kind::Function,
        "cell" => Kind::Cell,
        "module" => Kind::Module,
        "type" if flags & TPFLAGS_TYPE_SUBCLASS != 0 => Kind::Type,
        _ => Kind::Other,
    }
}

/// An object address pydeep follows: non-null, aligned, and below 2**56
/// (user space on every 64-bit Linux), so adding a field offset cannot
/// overflow.
pub fn plausible(address: u64) -> bool {
    address != 0 && address.is_multiple_of(8) && address < 1 << 56
}

fn pointers(bytes: &[u8]) -> Vec<u64> {
    bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8-byte chunk")))
        .collect()
}
