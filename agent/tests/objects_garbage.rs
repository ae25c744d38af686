//! The object readers, scopes and heap walk over garbage: random bytes full
//! of pointers back into the same region (so every walk can loop, nest and
//! claim huge sizes) end without panicking and with bounded output, for
//! every generated layout.

mod garbage;

use garbage::{garbage, layout, BASE, LEN};
use proptest::prelude::*;
use pydeep::process::memory::SnapshotMemory;
use pydeep::reading::cpython::code::CodeObject;
use pydeep::reading::cpython::Layout;
use pydeep::reading::objects::{Objects, Rendering};
use pydeep::reading::scopes::{frame_globals, frame_variables, thread_frames, FrameRef};

/// Type names whose readers open the object (lists, dicts, strings, ...).
const KINDS: &[&str] = &[
    "list",
    "tuple",
    "dict",
    "set",
    "frozenset",
    "str",
    "int",
    "bool",
    "bytes",
    "float",
    "complex",
    "cell",
    "function",
    "Klass",
];
/// Where the well-formed type objects live, outside the garbage.
const TYPES: u64 = 0x20_0000;

/// Maps one type object per name of [`KINDS`] (tp_name, every subclass
/// flag, heap and managed-dict flags for `Klass`), with garbage sizes.
fn add_types(memory: &mut SnapshotMemory, layout: &Layout, basicsize: u64) {
    let o = &layout.offsets;
    let mut region = vec![0u8; KINDS.len() * 1024 + 1024];
    for (i, name) in KINDS.iter().enumerate() {
        let at = i * 1024;
        let name_at = at + 900;
        region[name_at..name_at + name.len()].copy_from_slice(name.as_bytes());
        let mut put = |offset: Option<u64>, value: u64| {
            if let Some(offset) = offset {
                let offset = at + offset as usize;
                region[offset..offset + 8].copy_from_slice(&value.to_le_bytes());
            }
        };
        put(o.type_tp_name, TYPES + name_at as u64);
        let heap = if *name == "Klass" {
            (1 << 9) | o.tpflags_managed_dict.unwrap_or(0) | o.tpflags_inline_values.unwrap_or(0)
        } else {
            0
        };
        put(o.type_tp_flags, (0xff << 24) | heap);
        put(o.type_tp_basicsize, basicsize);
        put(o.type_tp_itemsize, basicsize % 9);
        put(o.type_tp_dictoffset, basicsize % 64);
        put(o.type_tp_members, BASE + basicsize % LEN as u64);
        put(
            o.heap_type_ht_cached_keys,
            BASE + (basicsize * 7) % LEN as u64,
        );
    }
    memory.add_region(TYPES, region);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn garbage_objects_render_and_walk_without_panicking(
        words in proptest::collection::vec((any::<u8>(), any::<u64>()), 1..64),
        start in 0u64..(LEN as u64 / 8),
        minor in 9u32..=13,
        kind in 0usize..14,
        basicsize in 0u64..4096,
    ) {
        let mut memory = garbage(&words);
        let layout = layout(minor);
        add_types(&mut memory, &layout, basicsize);
        // Most objects of the garbage get a well-formed type, so the
        // readers of every kind run on garbage contents.
        let address = BASE + start * 8;
        for i in 0..LEN as u64 / 64 {
            let object = BASE + i * 64;
            let type_object = TYPES + (((i as usize + kind) % KINDS.len()) * 1024) as u64;
            memory.write(object + layout.offsets.object_ob_type.unwrap(), &type_object.to_le_bytes());
        }
        let objects = Objects::new(&memory, &layout);
        let rendering = Rendering::default();
        let text = objects.render(address, &rendering);
        prop_assert!(text.chars().count() <= rendering.max_length);
        if let Ok(info) = objects.info(address) {
            let _ = objects.getsizeof(&info);
            let _ = objects.length(&info);
            let _ = objects.attributes(&info);
            let edges = objects.referents(&info, 100).unwrap_or_default();
            prop_assert!(edges.len() <= 100);
        }
        let graph = pydeep::reading::graph::walk(&objects, address, &pydeep::reading::graph::GraphOptions {
            max_depth: 5,
            max_objects: 50,
            max_edges: 20,
            redact: None,
        });
        prop_assert!(graph.nodes.len() <= 50);
        let frames = thread_frames(&memory, &layout, address, 64);
        prop_assert!(frames.len() <= 64);
        let _ = frame_globals(&objects, address, 100);
        let code = CodeObject {
            address,
            filename: String::new(),
            name: String::new(),
            qualname: String::new(),
            first_line: 1,
            bytecode: Vec::new(),
            bytecode_deoptimized: Vec::new(),
            line_table: Vec::new(),
            line_table_kind: pydeep::LineTableKind::LineTableLocations,
            varnames: vec!["a".into(), "b".into()],
            cellvars: vec!["c".into()],
            freevars: vec!["d".into()],
            names: Vec::new(),
            consts: Vec::new(),
            const_code_addresses: Vec::new(),
            argcount: 1,
            posonlyargcount: 0,
            kwonlyargcount: 0,
            flags: 0,
            stacksize: 0,
            localspluskinds: Vec::new(),
            frame_size: None,
        };
        let frame = FrameRef {
            address,
            code: address,
            instruction_offset: 0,
            globals: address,
            localsplus: address,
            is_generator: false,
        };
        let _ = frame_variables(&objects, &frame, &code);
    }
}
