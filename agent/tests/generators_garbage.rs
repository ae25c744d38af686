//! The generator and asyncio readers over garbage: random words full of
//! pointers back into the same region, with well-formed generator,
//! coroutine, async generator and task types, end without panicking and
//! with bounded output for every generated layout (the GC walk included:
//! the garbage is also the interpreter state).

mod garbage;

use garbage::{garbage, layout, BASE, LEN};
use proptest::prelude::*;
use pydeep::process::memory::SnapshotMemory;
use pydeep::reading::asyncio::{collect, AsyncOptions};
use pydeep::reading::cpython::Layout;
use pydeep::reading::generators::{read_all, read_generator, Codes};
use pydeep::reading::objects::Objects;
use pydeep::reading::scopes::FrameRef;

const TYPES: u64 = 0x20_0000;
const KINDS: &[&str] = &[
    "generator",
    "coroutine",
    "async_generator",
    "_asyncio.Task",
    "list",
];

fn memory(words: &[(u8, u64)], layout: &Layout, kind: usize) -> SnapshotMemory {
    let mut memory = garbage(words);
    let o = &layout.offsets;
    let mut region = vec![0u8; KINDS.len() * 1024];
    for (i, name) in KINDS.iter().enumerate() {
        let at = i * 1024;
        let name_at = at + 900;
        region[name_at..name_at + name.len()].copy_from_slice(name.as_bytes());
        let tp_name = o.type_tp_name.unwrap() as usize + at;
        region[tp_name..tp_name + 8].copy_from_slice(&(TYPES + name_at as u64).to_le_bytes());
    }
    memory.add_region(TYPES, region);
    for i in 0..LEN as u64 / 64 {
        let type_object = TYPES + (((i as usize + kind) % KINDS.len()) * 1024) as u64;
        memory.write(
            BASE + i * 64 + o.object_ob_type.unwrap(),
            &type_object.to_le_bytes(),
        );
    }
    memory
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn garbage_generators_and_tasks_are_read_without_panicking(
        words in proptest::collection::vec((any::<u8>(), any::<u64>()), 1..64),
        start in 0u64..(LEN as u64 / 8),
        minor in 9u32..=13,
        kind in 0usize..5,
    ) {
        let layout = layout(minor);
        let memory = memory(&words, &layout, kind);
        let objects = Objects::new(&memory, &layout);
        let address = BASE + start * 8;
        let mut codes = Codes::default();
        let _ = read_generator(&objects, &mut codes, address);
        let roots: Vec<u64> = (0..64).map(|i| BASE + i * 64).collect();
        let (generators, _) = read_all(&objects, &mut codes, roots, 50);
        prop_assert!(generators.len() <= 50);
        let frame = FrameRef {
            address,
            code: address,
            instruction_offset: 0,
            globals: address,
            localsplus: address,
            is_generator: true,
        };
        let options = AsyncOptions {
            all: true,
            max_generators: 100,
            max_tasks: 100,
            ..Default::default()
        };
        let snapshot = collect(&objects, address, &[vec![frame]], &options);
        prop_assert!(snapshot.generators.len() <= 100);
        prop_assert!(snapshot.tasks.len() <= 100);
        for task in &snapshot.tasks {
            prop_assert!(task.coroutine_stack.len() <= pydeep::reading::generators::MAX_CHAIN);
        }
    }
}
