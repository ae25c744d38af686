//! Every class of the interpreter and the Python function each one finds
//! under an attribute name: what a tracer needs where CPython's specializer
//! inlines a call to such a function past the eval-frame hook (3.11.0-3.11.3:
//! `__getitem__`, `getitem.rs`; 3.13: `__init__`).
//!
//! [`for_each_class_function`] walks the classes existing now, from
//! `object` down through `type.__subclasses__` (every class is a subclass of
//! `object`; metaclasses are subclasses of `type`, itself one of `object`),
//! breadth first, each class once (multiple inheritance makes the hierarchy
//! a graph), at most [`MAX_CLASSES`]: a bigger program makes the walk fail
//! rather than stop half-way. [`namespace_function`] is for a class created
//! later: its body's namespace, read when the body returns.
//!
//! The attribute is found as the specializer finds it: `_PyType_Lookup`
//! (the class's MRO; an inherited function is reported once per class that
//! inherits it), kept only if its type is exactly `PyFunction_Type`. All of
//! this runs with the GIL held and calls only C functions of the interpreter
//! (`type.__subclasses__` is looked up on `type` itself, never on a
//! metaclass that could override it); an allocation may still run the
//! garbage collector, and so finalizers, as any C API call may.

use core::cell::UnsafeCell;
use core::ffi::{c_char, c_ulong, c_void};
use core::sync::atomic::{AtomicUsize, Ordering};

use crate::sys::symbol;
use crate::Api;

type GetAttr = unsafe extern "C" fn(*mut c_void, *const c_char) -> *mut c_void;
type CallOne = unsafe extern "C" fn(*mut c_void, *mut c_void) -> *mut c_void;
type Size = unsafe extern "C" fn(*mut c_void) -> isize;
type GetItem = unsafe extern "C" fn(*mut c_void, isize) -> *mut c_void;
type Lookup = unsafe extern "C" fn(*mut c_void, *mut c_void) -> *mut c_void;
type Intern = unsafe extern "C" fn(*const c_char) -> *mut c_void;
type TypeFlags = unsafe extern "C" fn(*mut c_void) -> c_ulong;

/// What the walk calls, resolved with `dlsym` (exported by 3.9-3.13).
pub(crate) struct ClassApi {
    /// `&PyType_Type`.
    type_type: *mut c_void,
    /// `&PyBaseObject_Type` (`object`).
    object_type: *mut c_void,
    /// `&PyFunction_Type`.
    pub(crate) function_type: usize,
    /// `PyObject_GetAttrString`.
    get_attr: GetAttr,
    /// `PyObject_CallOneArg`.
    call_one: CallOne,
    /// `PyList_Size`.
    list_size: Size,
    /// `PyList_GetItem` (borrowed).
    list_get_item: GetItem,
    /// `_PyType_Lookup(type, name)` (borrowed, no exception set).
    type_lookup: Lookup,
    /// `PyUnicode_InternFromString`.
    intern: Intern,
    /// `PyDict_GetItem` (borrowed; keeps a pending exception).
    dict_get_item: Lookup,
    /// `PyType_GetFlags`.
    type_flags: TypeFlags,
}

/// Resolves the walk's functions; None if one is not exported.
pub(crate) fn resolve() -> Option<ClassApi> {
    // SAFETY: each symbol is the C API function (or object) of that name,
    // whose signature the field's type spells.
    unsafe {
        Some(ClassApi {
            type_type: symbol(b"PyType_Type\0")?,
            object_type: symbol(b"PyBaseObject_Type\0")?,
            function_type: symbol(b"PyFunction_Type\0")? as usize,
            get_attr: core::mem::transmute::<*mut c_void, GetAttr>(symbol(
                b"PyObject_GetAttrString\0",
            )?),
            call_one: core::mem::transmute::<*mut c_void, CallOne>(symbol(
                b"PyObject_CallOneArg\0",
            )?),
            list_size: core::mem::transmute::<*mut c_void, Size>(symbol(b"PyList_Size\0")?),
            list_get_item: core::mem::transmute::<*mut c_void, GetItem>(symbol(
                b"PyList_GetItem\0",
            )?),
            type_lookup: core::mem::transmute::<*mut c_void, Lookup>(symbol(b"_PyType_Lookup\0")?),
            intern: core::mem::transmute::<*mut c_void, Intern>(symbol(
                b"PyUnicode_InternFromString\0",
            )?),
            dict_get_item: core::mem::transmute::<*mut c_void, Lookup>(symbol(
                b"PyDict_GetItem\0",
            )?),
            type_flags: core::mem::transmute::<*mut c_void, TypeFlags>(symbol(
                b"PyType_GetFlags\0",
            )?),
        })
    }
}

/// An attribute name as an interned `str`, made once (with the GIL held)
/// and kept for the life of the process.
pub(crate) struct Name {
    text: &'static [u8],
    object: AtomicUsize,
}

impl Name {
    /// `text`: NUL-terminated.
    pub(crate) const fn new(text: &'static [u8]) -> Name {
        Name {
            text,
            object: AtomicUsize::new(0),
        }
    }

    /// The `str` (borrowed; NULL if it could not be made). With the GIL held.
    pub(crate) unsafe fn get(&self, api: &Api, classes: &ClassApi) -> *mut c_void {
        let object = self.object.load(Ordering::Relaxed);
        if object != 0 {
            return object as *mut c_void;
        }
        if self.text.last() != Some(&0) {
            return core::ptr::null_mut();
        }
        let made = (classes.intern)(self.text.as_ptr().cast());
        if made.is_null() {
            (api.err_clear)();
        }
        self.object.store(made as usize, Ordering::Relaxed);
        made
    }
}

/// The most classes a walk visits: past it, the walk fails.
pub(crate) const MAX_CLASSES: usize = 32_768;
/// The visited set: open addressing, at most half full.
const SEEN_CAPACITY: usize = 2 * MAX_CLASSES;

struct Tables {
    /// The classes to visit and visited, in order (a strong reference each
    /// during the walk): the queue of the breadth-first walk.
    order: [usize; MAX_CLASSES],
    /// The classes in `order`, by address.
    seen: [usize; SEEN_CAPACITY],
}

struct Walk(UnsafeCell<Tables>);
// SAFETY: used only with the GIL held, by one walk at a time.
unsafe impl Sync for Walk {}
static WALK: Walk = Walk(UnsafeCell::new(Tables {
    order: [0; MAX_CLASSES],
    seen: [0; SEEN_CAPACITY],
}));

/// Adds `class` to the visited set: true if it was not there. False also if
/// the set is full (never: it holds at most half its capacity).
fn first_sight(seen: &mut [usize; SEEN_CAPACITY], class: usize) -> bool {
    let mask = SEEN_CAPACITY - 1;
    let mut i = (class >> 4).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40 & mask;
    for _ in 0..SEEN_CAPACITY {
        match seen[i] {
            0 => {
                seen[i] = class;
                return true;
            }
            entry if entry == class => return false,
            _ => i = (i + 1) & mask,
        }
    }
    false
}

/// Calls `each` with the Python function (borrowed; exactly
/// `PyFunction_Type`) that each class existing now finds under `name`
/// (NUL-terminated) through its MRO, as many times as classes find it.
/// Returns the number of classes visited, or why the walk failed (more than
/// [`MAX_CLASSES`], a call that failed, or the first error of `each`,
/// which ends the walk). With the GIL held; never re-entered.
pub(crate) unsafe fn for_each_class_function(
    api: &Api,
    classes: &ClassApi,
    name: &Name,
    mut each: impl FnMut(*mut c_void) -> Result<(), &'static str>,
) -> Result<usize, &'static str> {
    let name = name.get(api, classes);
    if name.is_null() {
        return Err("the attribute name could not be made");
    }
    let subclasses = (classes.get_attr)(classes.type_type, c"__subclasses__".as_ptr());
    if subclasses.is_null() {
        (api.err_clear)();
        return Err("type.__subclasses__ was not found");
    }
    let tables = &mut *WALK.0.get();
    (api.inc_ref)(classes.object_type);
    tables.order[0] = classes.object_type as usize;
    first_sight(&mut tables.seen, classes.object_type as usize);
    let mut count = 1;
    let mut result = Ok(());
    let mut next = 0;
    while next < count && result.is_ok() {
        let Some(&class) = tables.order.get(next) else {
            break;
        };
        next += 1;
        let class = class as *mut c_void;
        let found = (classes.type_lookup)(class, name);
        if !found.is_null() && object_type(found) == classes.function_type {
            result = each(found);
            if result.is_err() {
                break;
            }
        }
        let list = (classes.call_one)(subclasses, class);
        if list.is_null() {
            (api.err_clear)();
            result = Err("type.__subclasses__ failed");
            break;
        }
        let size = (classes.list_size)(list);
        for index in 0..size.max(0) {
            let child = (classes.list_get_item)(list, index);
            if child.is_null() || !first_sight(&mut tables.seen, child as usize) {
                continue;
            }
            let Some(slot) = tables.order.get_mut(count) else {
                result = Err("the program has more classes than the tracer walks");
                break;
            };
            (api.inc_ref)(child);
            *slot = child as usize;
            count += 1;
        }
        (api.dec_ref)(list);
    }
    for class in tables.order.iter_mut().take(count) {
        (api.dec_ref)(*class as *mut c_void);
        *class = 0;
    }
    for entry in tables.seen.iter_mut() {
        *entry = 0;
    }
    (api.dec_ref)(subclasses);
    result.map(|()| count)
}

/// The Python function a class body's namespace holds under `name`
/// (borrowed), read when the body returns: the function the class made from
/// it will hold. None if the namespace is not a dict (a metaclass's
/// `__prepare__` may return any mapping, whose lookup could run Python
/// code), or holds no such function. With the GIL held.
pub(crate) unsafe fn namespace_function(
    api: &Api,
    classes: &ClassApi,
    namespace: *mut c_void,
    name: &Name,
) -> Option<*mut c_void> {
    /// `Py_TPFLAGS_DICT_SUBCLASS`.
    const DICT_SUBCLASS: c_ulong = 1 << 29;
    if namespace.is_null()
        || (classes.type_flags)(object_type(namespace) as *mut c_void) & DICT_SUBCLASS == 0
    {
        return None;
    }
    let name = name.get(api, classes);
    if name.is_null() {
        return None;
    }
    let found = (classes.dict_get_item)(namespace, name);
    (!found.is_null() && object_type(found) == classes.function_type).then_some(found)
}

/// `Py_TYPE(object)`: the word after the reference count.
pub(crate) unsafe fn object_type(object: *mut c_void) -> usize {
    core::ptr::read((object as *const usize).add(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_visited_set_sees_each_class_once_even_where_slots_collide() {
        let mut seen = Box::new([0usize; SEEN_CAPACITY]);
        // Addresses 16 bytes apart, and ones 2^40 apart (same low bits).
        let classes: Vec<usize> = (1..2000)
            .map(|i| i << 4)
            .chain((1..50).map(|i| (i << 40) | 0x10))
            .collect();
        for &class in &classes {
            assert!(first_sight(&mut seen, class), "{class:#x} the first time");
        }
        for &class in &classes {
            assert!(!first_sight(&mut seen, class), "{class:#x} again");
        }
        assert_eq!(seen.iter().filter(|&&s| s != 0).count(), classes.len());
    }
}
