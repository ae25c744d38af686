//! 3.11.0-3.11.3: keeps `__getitem__` calls going through the eval-frame
//! hook (`evalframe.rs`), which BINARY_SUBSCR_GETITEM would otherwise
//! inline past it (gh-104405, fixed in 3.11.4).
//!
//! How (CPython 3.11.2's Python/ceval.c, Python/specialize.c,
//! Objects/funcobject.c): BINARY_SUBSCR_GETITEM deoptimises unless the
//! class's cached `__getitem__` still has the `func_version` its 16-bit
//! cache entry holds, and `_Py_Specialize_BinarySubscr` refuses to
//! specialise when the function's version (`func_version`, or a new one from
//! the interpreter's counter if it is 0) does not fit in 16 bits. So each
//! `__getitem__` written in Python gets, for the window, a version of its
//! own above 0xFFFF: instructions specialised before deoptimise, no new one
//! specialises, and the generic BINARY_SUBSCR calls the function through
//! the type's slot and `_PyFunction_Vectorcall`, hence the hook.
//!
//! Why that is safe: `func_version` is read only as a cache key, by
//! BINARY_SUBSCR_GETITEM (against the 16-bit copy: never equal) and by
//! CALL_PY_EXACT_ARGS / CALL_PY_WITH_DEFAULTS (against a 32-bit copy, with
//! `min_args` beside it). A unique value is a new version, never another
//! function's: values count down from [`FIRST_VERSION`], across windows,
//! while the interpreter's counter counts up from 1 (it would have to hand
//! out 2^31 versions to meet them; tagging stops at [`LAST_VERSION`]).
//! Every setter that changes what a version stands for (code, defaults,
//! keyword defaults, closure, annotations) resets it to 0. At the window's
//! end each function gets its previous version back if it still holds the
//! one given here (a setter ran otherwise, and the old version would revive
//! caches of what it was); a reference to each is held meanwhile, so the
//! address still names the same function.
//!
//! Which functions: those the class walk finds (`classes.rs`) when the
//! window starts; the `__getitem__` of a class body (or module, or `exec`
//! code: any frame whose code is not `CO_OPTIMIZED`) that returns through
//! the hook during the window; and any function whose frame enters the
//! hook during the window with a code object named `__getitem__` (its
//! `co_name` compared by address with the interned string) while it holds
//! no version of this window ([`entering`], the frame's `f_func`): 3.13's
//! third `__init__` rule (`evalframe.rs`) for 3.11's `__getitem__`. That
//! one catches, at the first call that reaches the hook, a `__getitem__`
//! attached to a class during the window (`cls.__getitem__ = f`,
//! `setattr`), that of a class made during the window with
//! `type(name, bases, namespace)` or whose body's namespace is not a dict,
//! and a tagged function whose defaults or annotations are set during the
//! window, or its code (to one named `__getitem__`): its version reset to
//! 0, it is tagged again, a second entry in the table (at the end only
//! the entry whose version it still holds is given back: 0). Such a first
//! call does reach the hook: a site specialised before, for the class or
//! the function's old version, misses and runs the generic instruction (a
//! specialised instruction misses 53 times, 3.11's `miss_counter_start`,
//! before its site may specialise again).
//!
//! Not covered, missed undetected: a function's first call at a site
//! whose adaptive counter runs out at that very call
//! (BINARY_SUBSCR_ADAPTIVE specialises, gives the function a 16-bit
//! version and runs the inlined frame at once), and its later calls there,
//! until a call elsewhere reaches the hook; a function whose code is not
//! named `__getitem__` (`cls.__getitem__ = lambda self, i: i`, a helper
//! of another name given to `type()`), or whose `co_name` is not the
//! interned string (a code object built or `replace`d with another
//! string); every function past a full table (each re-tagging takes an
//! entry).
//!
//! Cost: on every frame entry through the hook, a test of [`active`] (a
//! static byte, false on every other version; it replaced a test of the
//! code's flags there); during a window on 3.11.0-3.11.3, a read of
//! `co_name` too, and for a `__getitem__` the function's version.
//!
//! The layout is checked on every function before it is touched: the word
//! before `func_version` must be `vectorcall` holding
//! `_PyFunction_Vectorcall` (3.11's `PyFunctionObject`).

use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};

use crate::classes;
use crate::sys::symbol;
use crate::Api;

/// The versions this applies to (`Py_Version`): 3.11.0 up to 3.11.4.
pub(crate) fn needed(version: u64) -> bool {
    (0x030B_0000..0x030B_0400).contains(&version)
}

/// `PyFunctionObject.vectorcall` and `.func_version` on 3.11 (64-bit).
const VECTORCALL_OFFSET: usize = 120;
const VERSION_OFFSET: usize = 128;
/// `_PyInterpreterFrame.f_func` and `.f_locals` on 3.11 (pycore_frame.h;
/// 3.11.2 and 3.11.7 alike).
const F_FUNC_OFFSET: usize = 0;
pub(crate) const F_LOCALS_OFFSET: usize = 24;
/// `PyCodeObject.co_name` on 3.11 (cpython/code.h; `cpython/src/layouts.rs`).
const CO_NAME_OFFSET: usize = 120;

/// The first version handed out; the next ones count down.
const FIRST_VERSION: u32 = 0xFFFF_FFF0;
/// Below it, no more versions are handed out (the window falls back).
const LAST_VERSION: u32 = 0x8000_0000;
/// The most functions one window tags.
const MAX_TAGGED: usize = 4096;

/// What the tagging needs besides the class walk (`Api::classes`).
pub(crate) struct VersionApi {
    /// `_PyFunction_Vectorcall`: what a Python function's `vectorcall`
    /// field holds.
    function_vectorcall: usize,
}

/// Resolves it; None where not exported.
pub(crate) fn resolve() -> Option<VersionApi> {
    Some(VersionApi {
        function_vectorcall: symbol(b"_PyFunction_Vectorcall\0")? as usize,
    })
}

/// One function tagged: its address, its version before, the one given.
#[derive(Clone, Copy)]
struct Tagged {
    function: usize,
    previous: u32,
    given: u32,
}

struct Table(UnsafeCell<[Tagged; MAX_TAGGED]>);
// SAFETY: read and written only with the GIL held.
unsafe impl Sync for Table {}
static TAGGED: Table = Table(UnsafeCell::new(
    [Tagged {
        function: 0,
        previous: 0,
        given: 0,
    }; MAX_TAGGED],
));
static COUNT: AtomicUsize = AtomicUsize::new(0);
/// The next version to give (counting down, across windows).
static NEXT: AtomicU32 = AtomicU32::new(FIRST_VERSION);
/// The first version given in this window.
static WINDOW_FIRST: AtomicU32 = AtomicU32::new(FIRST_VERSION);
/// True while this window's functions are tagged: the hook tags class
/// bodies' functions.
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// The interned `"__getitem__"` (held for good, resolved at the first
/// window's start): a code object's `co_name` is compared with it by
/// address.
static GETITEM_NAME: AtomicUsize = AtomicUsize::new(0);

/// True while this window tags `__getitem__` functions.
#[inline(always)]
pub(crate) fn active() -> bool {
    ACTIVE.load(Ordering::Relaxed)
}

/// Tags every `__getitem__` the classes existing now find. On failure,
/// whatever was tagged is restored and the caller does not use the hook.
/// With the GIL held, before the hook goes in.
pub(crate) unsafe fn start(api: &Api) -> Result<usize, &'static str> {
    let (Some(versions), Some(found)) = (&api.function_versions, &api.classes) else {
        return Err("this interpreter does not export what the __getitem__ fix needs");
    };
    classes::intern_once(
        api,
        found,
        c"__getitem__",
        &GETITEM_NAME,
        "\"__getitem__\" could not be interned",
    )?;
    COUNT.store(0, Ordering::Relaxed);
    WINDOW_FIRST.store(NEXT.load(Ordering::Relaxed), Ordering::Relaxed);
    ACTIVE.store(true, Ordering::Relaxed);
    let mut failed = None;
    let walked = classes::for_each_class_function(api, found, c"__getitem__", |function| {
        if failed.is_none() {
            failed = tag(api, versions, function).err();
        }
    });
    let outcome = match (walked, failed) {
        (_, Some(why)) => Err(why),
        (false, None) => Err("the class walk did not see every class"),
        (true, None) => Ok(COUNT.load(Ordering::Relaxed)),
    };
    if outcome.is_err() {
        restore(api);
    }
    outcome
}

/// The hook's check, during the window ([`active`]), of a frame it is
/// about to evaluate (`optimized`: its code is `CO_OPTIMIZED`). A function's
/// frame whose code is named `__getitem__` (the interned string) gets its
/// function tagged if it holds no version of this window: one attached to
/// a class or made during the window, or whose version a setter reset
/// (module documentation). Returns true for a frame that is not
/// `CO_OPTIMIZED` (a class body's, module's or `exec` code's), whose
/// namespace [`namespace_returned`] looks at when it returns.
#[inline(always)]
pub(crate) unsafe fn entering(
    api: &Api,
    frame: *mut c_void,
    code: *mut c_void,
    optimized: bool,
) -> bool {
    if !optimized {
        return true;
    }
    let name = core::ptr::read((code as *const u8).add(CO_NAME_OFFSET) as *const usize);
    if name == GETITEM_NAME.load(Ordering::Relaxed) {
        getitem_entering(api, frame);
    }
    false
}

/// A `__getitem__` frame's function, unless it holds a version of this
/// window, is tagged (a full table or no version left: left untagged).
#[inline(never)]
unsafe fn getitem_entering(api: &Api, frame: *mut c_void) {
    let Some(versions) = &api.function_versions else {
        return;
    };
    // The frame holds a strong reference to its function.
    let function = core::ptr::read((frame as *const u8).add(F_FUNC_OFFSET) as *const *mut c_void);
    if function.is_null() || tagged_now(function) {
        return;
    }
    let _ = tag(api, versions, function);
}

/// True if `function` holds a version given in this window.
#[inline(always)]
unsafe fn tagged_now(function: *mut c_void) -> bool {
    let current = core::ptr::read((function as *const u8).add(VERSION_OFFSET) as *const u32);
    current > NEXT.load(Ordering::Relaxed) && current <= WINDOW_FIRST.load(Ordering::Relaxed)
}

/// A frame whose code is not `CO_OPTIMIZED` returned (through the hook,
/// with the GIL held, during the window): tags the `__getitem__` its
/// namespace holds, if it is a class body's (or a module's) function. A
/// full table leaves it untagged.
pub(crate) unsafe fn namespace_returned(api: &Api, frame: *mut c_void) {
    let (Some(versions), Some(found)) = (&api.function_versions, &api.classes) else {
        return;
    };
    let namespace =
        core::ptr::read((frame as *const u8).add(F_LOCALS_OFFSET) as *const *mut c_void);
    if namespace.is_null() {
        return;
    }
    if let Some(function) = classes::namespace_function(api, found, namespace, c"__getitem__") {
        let _ = tag(api, versions, function);
        (api.dec_ref)(function);
    }
}

/// Gives `function` a version of its own for the window (once).
unsafe fn tag(api: &Api, versions: &VersionApi, function: *mut c_void) -> Result<(), &'static str> {
    let base = function as *mut u8;
    if core::ptr::read(base.add(VECTORCALL_OFFSET) as *const usize) != versions.function_vectorcall
    {
        return Err("a function's layout is not 3.11's (vectorcall)");
    }
    if tagged_now(function) {
        return Ok(());
    }
    let field = base.add(VERSION_OFFSET) as *mut u32;
    let current = core::ptr::read(field);
    let next = NEXT.load(Ordering::Relaxed);
    let count = COUNT.load(Ordering::Relaxed);
    let table = &mut *TAGGED.0.get();
    let Some(slot) = table.get_mut(count) else {
        return Err("more __getitem__ functions than the tracer tags");
    };
    if next < LAST_VERSION {
        return Err("no function version left to give");
    }
    (api.inc_ref)(function);
    *slot = Tagged {
        function: function as usize,
        previous: current,
        given: next,
    };
    core::ptr::write(field, next);
    NEXT.store(next - 1, Ordering::Relaxed);
    COUNT.store(count + 1, Ordering::Relaxed);
    Ok(())
}

/// As the window ends (with the GIL held, before [`restore`]): the classes
/// whose own `__getitem__` is a Python function holding no version of this
/// window. BINARY_SUBSCR_GETITEM may have run it inline, past the hook: one
/// not named `__getitem__` (a lambda) attached or made during the window,
/// one left untagged (a full table), or one whose first call at a site
/// specialised it there. Each is counted and named in the control block
/// (`crate::note_unwatched`); classes past the walk's cap are not looked
/// at.
pub(crate) unsafe fn unwatched(api: &Api) {
    let (Some(versions), Some(found)) = (&api.function_versions, &api.classes) else {
        return;
    };
    classes::for_each_class_function(api, found, c"__getitem__", |function| {
        let base = function as *const u8;
        if core::ptr::read(base.add(VECTORCALL_OFFSET) as *const usize)
            == versions.function_vectorcall
            && !tagged_now(function)
        {
            crate::note_unwatched(api, classes::function_code(found, function));
        }
    });
}

/// Gives each tagged function back the version it had, if it still holds
/// the one given (with the GIL held), and the reference taken.
pub(crate) unsafe fn restore(api: &Api) {
    ACTIVE.store(false, Ordering::Relaxed);
    let count = COUNT.swap(0, Ordering::Relaxed);
    let table = &mut *TAGGED.0.get();
    for entry in table.iter_mut().take(count) {
        let field = (entry.function as *mut u8).add(VERSION_OFFSET) as *mut u32;
        if core::ptr::read(field) == entry.given {
            core::ptr::write(field, entry.previous);
        }
        (api.dec_ref)(entry.function as *mut c_void);
        entry.function = 0;
    }
}
