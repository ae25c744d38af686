//! The Python functions classes hold under one name (`__init__` on 3.13),
//! for the eval-frame hook's blind spots: instructions that push a frame of
//! such a function without calling the interpreter's eval function (3.13's
//! CALL_ALLOC_AND_ENTER_INIT, see `evalframe.rs`).
//!
//! Two ways a function is found:
//! - [`for_each_class_function`]: at a window's start, every class that
//!   exists, walked from `object` through `type.__subclasses__` (C API
//!   calls, with the GIL held, by the watchdog), and the function stored
//!   under the name in each heap class's own dict;
//! - [`namespace_function`]: a class body that returns through the hook
//!   (`__build_class__` evaluates it with its namespace as the frame's
//!   locals): the function the namespace holds under the name, before the
//!   class is made of it.
//!
//! The walk is bounded (at most [`MOST_CLASSES`] classes, a stack of
//! [`STACK`] entries) and visits a class once however many bases lead to
//! it (a table of the addresses seen). Every class on the stack is held by
//! a reference until it has been looked at, so a collection that the C API
//! calls may trigger frees none of them meanwhile.

use core::cell::UnsafeCell;
use core::ffi::{c_char, c_ulong, c_void, CStr};
use core::sync::atomic::{AtomicUsize, Ordering};

use crate::Api;

/// `PyObject_CallFunctionObjArgs(callable, ..., NULL)`.
type CallObjArgs = unsafe extern "C" fn(*mut c_void, ...) -> *mut c_void;
/// `PyList_Size(list)`.
type ListSize = unsafe extern "C" fn(*mut c_void) -> isize;
/// `PyList_GetItem(list, index)` (borrowed).
type ListItem = unsafe extern "C" fn(*mut c_void, isize) -> *mut c_void;
/// `PyType_GetFlags(type)`.
type TypeFlags = unsafe extern "C" fn(*mut c_void) -> c_ulong;
/// `PyMapping_GetItemString(mapping, name)` (a new reference).
type MappingItem = unsafe extern "C" fn(*mut c_void, *const c_char) -> *mut c_void;
/// `PyDict_GetItemString(dict, name)` (borrowed; NULL for a non-dict, no
/// exception; a dict subclass's own `__getitem__` is not called).
type DictItem = unsafe extern "C" fn(*mut c_void, *const c_char) -> *mut c_void;
/// `PyObject_GetAttrString(object, name)` (a new reference).
type GetAttr = unsafe extern "C" fn(*mut c_void, *const c_char) -> *mut c_void;
/// `PyType_GetDict(type)` (3.12+, a new reference) or `PyFunction_GetCode`
/// (borrowed).
type ObjectToObject = unsafe extern "C" fn(*mut c_void) -> *mut c_void;

/// What the walk needs of the interpreter, resolved with `dlsym`.
pub(crate) struct ClassApi {
    call_objargs: CallObjArgs,
    list_size: ListSize,
    list_item: ListItem,
    type_flags: TypeFlags,
    mapping_item: MappingItem,
    dict_item: DictItem,
    get_attr: GetAttr,
    /// `PyType_GetDict` where exported (3.12+); else the `__dict__`
    /// attribute (a mapping proxy of the same dict).
    type_dict: Option<ObjectToObject>,
    function_code: ObjectToObject,
    /// `PyUnicode_InternFromString(text)` (a new reference).
    pub(crate) intern: unsafe extern "C" fn(*const c_char) -> *mut c_void,
    /// `&PyBaseObject_Type`, `&PyType_Type`, `&PyFunction_Type`.
    object_type: *mut c_void,
    type_type: *mut c_void,
    function_type: usize,
}

/// Resolves [`ClassApi`] (every name exported by 3.9-3.13).
pub(crate) fn resolve() -> Option<ClassApi> {
    use crate::sys::symbol;
    // SAFETY: each symbol is the C API function (or object) of that name,
    // whose signature the field's type spells.
    unsafe {
        Some(ClassApi {
            call_objargs: core::mem::transmute::<*mut c_void, CallObjArgs>(symbol(
                b"PyObject_CallFunctionObjArgs\0",
            )?),
            list_size: core::mem::transmute::<*mut c_void, ListSize>(symbol(b"PyList_Size\0")?),
            list_item: core::mem::transmute::<*mut c_void, ListItem>(symbol(b"PyList_GetItem\0")?),
            type_flags: core::mem::transmute::<*mut c_void, TypeFlags>(symbol(
                b"PyType_GetFlags\0",
            )?),
            mapping_item: core::mem::transmute::<*mut c_void, MappingItem>(symbol(
                b"PyMapping_GetItemString\0",
            )?),
            dict_item: core::mem::transmute::<*mut c_void, DictItem>(symbol(
                b"PyDict_GetItemString\0",
            )?),
            get_attr: core::mem::transmute::<*mut c_void, GetAttr>(symbol(
                b"PyObject_GetAttrString\0",
            )?),
            type_dict: symbol(b"PyType_GetDict\0")
                .map(|address| core::mem::transmute::<*mut c_void, ObjectToObject>(address)),
            function_code: core::mem::transmute::<*mut c_void, ObjectToObject>(symbol(
                b"PyFunction_GetCode\0",
            )?),
            intern: core::mem::transmute::<
                *mut c_void,
                unsafe extern "C" fn(*const c_char) -> *mut c_void,
            >(symbol(b"PyUnicode_InternFromString\0")?),
            object_type: symbol(b"PyBaseObject_Type\0")?,
            type_type: symbol(b"PyType_Type\0")?,
            function_type: symbol(b"PyFunction_Type\0")? as usize,
        })
    }
}

/// Interns `name` into `cell` the first time (the string is held for good:
/// code objects' `co_name` is compared with it by address); `failure` if
/// CPython could not. With the GIL held.
pub(crate) unsafe fn intern_once(
    api: &Api,
    classes: &ClassApi,
    name: &CStr,
    cell: &AtomicUsize,
    failure: &'static str,
) -> Result<(), &'static str> {
    if cell.load(Ordering::Relaxed) != 0 {
        return Ok(());
    }
    let interned = (classes.intern)(name.as_ptr());
    if interned.is_null() {
        (api.err_clear)();
        return Err(failure);
    }
    cell.store(interned as usize, Ordering::Relaxed);
    Ok(())
}

/// Most classes one walk looks at.
pub(crate) const MOST_CLASSES: usize = 1 << 15;
/// Classes waiting to be looked at, at most.
const STACK: usize = 1 << 13;
/// The table of classes seen (a power of two, twice [`MOST_CLASSES`]).
const SEEN: usize = MOST_CLASSES * 2;

struct Walk {
    stack: [usize; STACK],
    seen: [usize; SEEN],
}
struct WalkCell(UnsafeCell<Walk>);
// SAFETY: used by the watchdog only, with the GIL held, one walk at a time.
unsafe impl Sync for WalkCell {}
static WALK: WalkCell = WalkCell(UnsafeCell::new(Walk {
    stack: [0; STACK],
    seen: [0; SEEN],
}));

/// `Py_TPFLAGS_HEAPTYPE`.
const HEAP_TYPE: c_ulong = 1 << 9;

/// Calls `each` with every Python function (`PyFunction`, borrowed: valid
/// during the call) that a heap class holds in its own dict under `name`,
/// for every class reachable from `object` by `type.__subclasses__`.
/// Returns false if the walk was cut short (more classes than it looks at,
/// or a C API call failed), true if it saw every class. With the GIL held.
pub(crate) unsafe fn for_each_class_function(
    api: &Api,
    classes: &ClassApi,
    name: &CStr,
    mut each: impl FnMut(*mut c_void),
) -> bool {
    let walk = &mut *WALK.0.get();
    walk.seen.fill(0);
    // `type.__subclasses__`, the method descriptor (called on each class
    // directly: a class or metaclass that redefines `__subclasses__` runs
    // no Python code here).
    let subclasses = (classes.get_attr)(classes.type_type, c"__subclasses__".as_ptr());
    if subclasses.is_null() {
        (api.err_clear)();
        return false;
    }
    let mut complete = true;
    let mut depth = 0usize;
    let mut visited = 0usize;
    (api.inc_ref)(classes.object_type);
    walk.stack[0] = classes.object_type as usize;
    depth += 1;
    mark_seen(&mut walk.seen, classes.object_type as usize);
    while depth > 0 {
        depth -= 1;
        let class = walk.stack.get(depth).copied().unwrap_or(0) as *mut c_void;
        if class.is_null() {
            continue;
        }
        visited += 1;
        if (classes.type_flags)(class) & HEAP_TYPE != 0 {
            if let Some(function) = own_function(api, classes, class, name) {
                each(function);
                (api.dec_ref)(function);
            }
        }
        let list = (classes.call_objargs)(subclasses, class, core::ptr::null_mut::<c_void>());
        (api.dec_ref)(class);
        if list.is_null() {
            (api.err_clear)();
            complete = false;
            continue;
        }
        let size = (classes.list_size)(list);
        for i in 0..size.max(0) {
            let child = (classes.list_item)(list, i);
            if child.is_null() {
                (api.err_clear)();
                break;
            }
            if !mark_seen(&mut walk.seen, child as usize) {
                continue;
            }
            if depth >= STACK || visited + depth >= MOST_CLASSES {
                complete = false;
                continue;
            }
            (api.inc_ref)(child);
            if let Some(slot) = walk.stack.get_mut(depth) {
                *slot = child as usize;
                depth += 1;
            }
        }
        (api.dec_ref)(list);
    }
    (api.dec_ref)(subclasses);
    complete
}

/// Marks `address` seen; false if it was already (or the table is full).
fn mark_seen(seen: &mut [usize; SEEN], address: usize) -> bool {
    let mut i = (address >> 4).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
    for _ in 0..SEEN {
        let slot = &mut seen[i & (SEEN - 1)];
        if *slot == address {
            return false;
        }
        if *slot == 0 {
            *slot = address;
            return true;
        }
        i = i.wrapping_add(1);
    }
    false
}

/// The `PyFunction` `class` holds in its own dict under `name` (a new
/// reference), if any.
unsafe fn own_function(
    api: &Api,
    classes: &ClassApi,
    class: *mut c_void,
    name: &CStr,
) -> Option<*mut c_void> {
    let (dict, value) = match classes.type_dict {
        Some(get) => {
            let dict = get(class);
            let value = if dict.is_null() {
                dict
            } else {
                (classes.dict_item)(dict, name.as_ptr())
            };
            if !value.is_null() {
                (api.inc_ref)(value);
            }
            (dict, value)
        }
        None => {
            // A mapping proxy of the class's dict.
            let dict = (classes.get_attr)(class, c"__dict__".as_ptr());
            let value = if dict.is_null() {
                dict
            } else {
                (classes.mapping_item)(dict, name.as_ptr())
            };
            (dict, value)
        }
    };
    if !dict.is_null() {
        (api.dec_ref)(dict);
    }
    if value.is_null() {
        (api.err_clear)();
        return None;
    }
    if is_function(classes, value) {
        Some(value)
    } else {
        (api.dec_ref)(value);
        None
    }
}

/// True if `object` is a `PyFunction` (exactly: what the eval loop inlines).
unsafe fn is_function(classes: &ClassApi, object: *mut c_void) -> bool {
    core::ptr::read((object as *const usize).add(1)) == classes.function_type
}

/// The code object of the `PyFunction` `function` (borrowed).
pub(crate) unsafe fn function_code(classes: &ClassApi, function: *mut c_void) -> *mut c_void {
    (classes.function_code)(function)
}

/// The `PyFunction` a class body's namespace `namespace` (the frame's
/// locals) holds under `name` (a new reference), if any: what the class
/// will hold. Only a dict (or a dict subclass, looked up as a dict: no
/// Python `__getitem__` runs here); another mapping from a metaclass's
/// `__prepare__` gives none. With the GIL held, no exception set.
pub(crate) unsafe fn namespace_function(
    api: &Api,
    classes: &ClassApi,
    namespace: *mut c_void,
    name: &CStr,
) -> Option<*mut c_void> {
    let value = (classes.dict_item)(namespace, name.as_ptr());
    if value.is_null() || !is_function(classes, value) {
        (api.err_clear)();
        return None;
    }
    (api.inc_ref)(value);
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_class_is_seen_once_and_a_full_table_says_so() {
        let mut seen = [0usize; SEEN];
        assert!(mark_seen(&mut seen, 0x1000));
        assert!(!mark_seen(&mut seen, 0x1000), "seen twice");
        assert!(mark_seen(&mut seen, 0x2000));
        for (i, slot) in seen.iter_mut().enumerate() {
            if *slot == 0 {
                *slot = (i + 1) << 4 | 1;
            }
        }
        assert!(!mark_seen(&mut seen, 0x3000), "a full table takes no more");
        assert!(!mark_seen(&mut seen, 0x2000));
    }
}
