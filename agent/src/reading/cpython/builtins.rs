//! Layouts of the builtin objects pydeep opens natively beyond the ones
//! in the generated tables and `_Py_DebugOffsets` (which describe only what
//! the frame walker and the core containers need): `collections.deque`,
//! `OrderedDict`, `defaultdict`, `bytearray`, `memoryview`, `range`,
//! `slice`, `functools.partial`, bound methods, builtin functions,
//! `property`, `staticmethod`/`classmethod`, `types.SimpleNamespace` and
//! weak references.
//!
//! These structs have kept the same field order from 3.9 to 3.13 (checked
//! against each version's headers, cited per field); what moves is the
//! object header (16 bytes, larger on free-threaded builds), so every
//! offset here is counted from the end of the header (`ob_type` + 8) and
//! this is the one place that knows the fields. Fields that only exist on
//! some versions are `None` there.

use super::Layout;

/// `BLOCKLEN` (Modules/_collectionsmodule.c): item slots per deque block.
pub const DEQUE_BLOCK_LENGTH: u64 = 64;
/// `sizeof(block)`: `leftlink`, 64 item pointers, `rightlink`.
pub const DEQUE_BLOCK_SIZE: u64 = 8 + DEQUE_BLOCK_LENGTH * 8 + 8;
/// Offset of `data[0]` in a deque block (after `leftlink`).
pub const DEQUE_BLOCK_DATA: u64 = 8;
/// Offset of `rightlink` in a deque block.
pub const DEQUE_BLOCK_RIGHTLINK: u64 = 8 + DEQUE_BLOCK_LENGTH * 8;
/// `sizeof(_ODictNode)` (Objects/odictobject.c): key, hash, next, prev.
pub const ODICT_NODE_SIZE: u64 = 32;
/// Offset of `next` in an `_ODictNode` (after `key` and `hash`).
pub const ODICT_NODE_NEXT: u64 = 16;

/// Offsets (bytes from the object's start) of the fields read in the
/// builtin objects listed in the module comment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuiltinLayout {
    /// `sizeof(PyObject)`: where the first field of a fixed-size object is.
    pub head: u64,
    /// `sizeof(PyVarObject)`: where the first field of a variable-size
    /// object is.
    pub var_head: u64,
    /// `sizeof(PyDictObject)`: where the fields of `OrderedDict` and
    /// `defaultdict` (which embed a dict) begin.
    pub dict_object_size: Option<u64>,
}

impl BuiltinLayout {
    /// The builtin layouts of `layout`'s target, or `None` when its object
    /// header is not known.
    pub fn of(layout: &Layout) -> Option<BuiltinLayout> {
        let o = &layout.offsets;
        let head = o.object_ob_type? + 8;
        Some(BuiltinLayout {
            head,
            var_head: head + 8,
            // PyDictObject (Include/cpython/dictobject.h): ma_values is its
            // last field on 3.9-3.13.
            dict_object_size: o.dict_ma_values.map(|at| at + 8),
        })
    }

    /// `dequeobject` (Modules/_collectionsmodule.c): `leftblock`,
    /// `rightblock`, `leftindex`, `rightindex`, `state`, `maxlen` after the
    /// var header, on 3.9-3.13 (3.11 moved the free-block cache after
    /// `maxlen`). `len()` is `ob_size`.
    pub fn deque(&self) -> DequeFields {
        DequeFields {
            leftblock: self.var_head,
            leftindex: self.var_head + 16,
            maxlen: self.var_head + 40,
        }
    }

    /// `PyByteArrayObject` (Include/cpython/bytearrayobject.h):
    /// `ob_alloc`, `ob_bytes`, `ob_start` after the var header.
    pub fn bytearray(&self) -> ByteArrayFields {
        ByteArrayFields {
            ob_alloc: self.var_head,
            ob_start: self.var_head + 16,
        }
    }

    /// `PyMemoryViewObject` (Include/memoryobject.h): `mbuf` (the managed
    /// buffer, what `gc.get_referents` reports), `hash`, `flags` (an int,
    /// padded), `exports`, then the `Py_buffer` `view` whose `obj` (what
    /// `memoryview.obj` answers) is its second word.
    pub fn memoryview(&self) -> [(&'static str, u64); 2] {
        [("mbuf", self.var_head), ("obj", self.var_head + 32 + 8)]
    }

    /// `rangeobject` (Objects/rangeobject.c) `start`, `stop`, `step` and
    /// `PySliceObject` (Include/sliceobject.h) `start`, `stop`, `step`:
    /// three object pointers after the header.
    pub fn start_stop_step(&self) -> [u64; 3] {
        [self.head, self.head + 8, self.head + 16]
    }

    /// `partialobject` (Modules/_functoolsmodule.c): `fn`, `args`, `kw`,
    /// `dict`.
    pub fn partial(&self) -> [(&'static str, u64); 4] {
        [
            ("func", self.head),
            ("args", self.head + 8),
            ("keywords", self.head + 16),
            ("__dict__", self.head + 24),
        ]
    }

    /// `PyMethodObject` (Include/cpython/classobject.h): `im_func`, `im_self`.
    pub fn method(&self) -> [(&'static str, u64); 2] {
        [("__func__", self.head), ("__self__", self.head + 8)]
    }

    /// `PyCFunctionObject` (Include/cpython/methodobject.h): `m_ml` (its
    /// `PyMethodDef` starts with `ml_name`), `m_self`, `m_module`.
    pub fn builtin_function(&self) -> BuiltinFunctionFields {
        BuiltinFunctionFields {
            m_ml: self.head,
            references: [("__self__", self.head + 8), ("__module__", self.head + 16)],
        }
    }

    /// `propertyobject` (Objects/descrobject.c): `prop_get`, `prop_set`,
    /// `prop_del`, `prop_doc` (3.12 added `prop_name` after them).
    pub fn property(&self) -> [(&'static str, u64); 4] {
        [
            ("fget", self.head),
            ("fset", self.head + 8),
            ("fdel", self.head + 16),
            ("__doc__", self.head + 24),
        ]
    }

    /// `staticmethod` and `classmethod` (Objects/funcobject.c
    /// `classmethod`/`staticmethod` structs): `cm_callable`, `cm_dict`.
    pub fn static_or_class_method(&self) -> [(&'static str, u64); 2] {
        [("__func__", self.head), ("__dict__", self.head + 8)]
    }

    /// `_PyNamespaceObject` (Objects/namespaceobject.c): `ns_dict`.
    pub fn namespace_dict(&self) -> u64 {
        self.head
    }

    /// `PyWeakReference` (Include/cpython/weakrefobject.h): `wr_object`
    /// (the referent, not owned) and `wr_callback`.
    pub fn weakref(&self) -> WeakRefFields {
        WeakRefFields {
            wr_object: self.head,
            wr_callback: self.head + 8,
        }
    }

    /// `PyODictObject` (Objects/odictobject.c): after the embedded dict,
    /// `od_first`, `od_last`, `od_fast_nodes`, `od_fast_nodes_size`.
    pub fn ordered_dict(&self) -> Option<OrderedDictFields> {
        let dict = self.dict_object_size?;
        Some(OrderedDictFields {
            od_first: dict,
            od_fast_nodes_size: dict + 24,
        })
    }

    /// `defdictobject` (Modules/_collectionsmodule.c): `default_factory`
    /// after the embedded dict.
    pub fn default_factory(&self) -> Option<u64> {
        self.dict_object_size
    }
}

/// Fields of a `collections.deque`.
#[derive(Debug, Clone, Copy)]
pub struct DequeFields {
    /// `leftblock`: the first block.
    pub leftblock: u64,
    /// `leftindex`: the first item's slot in `leftblock`.
    pub leftindex: u64,
    /// `maxlen` (-1 when unbounded).
    pub maxlen: u64,
}

/// Fields of a `bytearray`.
#[derive(Debug, Clone, Copy)]
pub struct ByteArrayFields {
    /// `ob_alloc`: bytes allocated (what `__sizeof__` counts).
    pub ob_alloc: u64,
    /// `ob_start`: the first logical byte.
    pub ob_start: u64,
}

/// Fields of a `builtin_function_or_method`.
#[derive(Debug, Clone, Copy)]
pub struct BuiltinFunctionFields {
    /// `m_ml`: the `PyMethodDef`, whose first field is `ml_name`.
    pub m_ml: u64,
    /// The object references, labelled as Python names them.
    pub references: [(&'static str, u64); 2],
}

/// Fields of a weak reference.
#[derive(Debug, Clone, Copy)]
pub struct WeakRefFields {
    /// `wr_object`: the referent (`Py_None` once it died).
    pub wr_object: u64,
    /// `wr_callback`.
    pub wr_callback: u64,
}

/// Fields of an `OrderedDict` beyond its dict.
#[derive(Debug, Clone, Copy)]
pub struct OrderedDictFields {
    /// `od_first`: null when empty.
    pub od_first: u64,
    /// `od_fast_nodes_size`: slots of the node lookup table.
    pub od_fast_nodes_size: u64,
}
