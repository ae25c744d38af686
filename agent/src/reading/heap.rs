//! `pydeep heap`: every GC-tracked object of the main interpreter counted
//! by type, by walking the collector's generation lists (what
//! `gc.get_objects()` returns, and objgraph's `show_most_common_types`
//! counts), with a shallow size estimate per type.
//!
//! The lists are doubly linked `PyGC_Head`s (Include/internal/pycore_gc.h)
//! and must be followed one node at a time, so instead of one read per
//! object the walk copies whole 16 KiB blocks of the heap (pymalloc pools
//! are 4-16 KiB and hold many neighbours) and serves headers from them.
//! Meant for a paused target; capped and cycle-safe on garbage.

use std::collections::HashMap;
use std::time::Instant;

use crate::process::memory::{field_u64, read_u64, RemoteMemory};
use crate::reading::cpython::objects::ObjectError;
use crate::reading::mimalloc::{walk_gc_heaps, MimallocLayout};
use crate::reading::objects::Objects;

/// Generations of the 3.9-3.13 collector (`NUM_GENERATIONS`).
const GENERATIONS: u64 = 3;
/// The low bits of `_gc_next`/`_gc_prev` CPython may use as flags: objects
/// and GC heads are only promised `1 << _PyObject_ALIGNMENT_SHIFT` (4)
/// bytes of alignment (Include/object.h), and from 3.13.5 `PyGC_Head` is
/// declared `Py_ALIGNED(4)` on its typedef (Include/internal/pycore_gc.h),
/// which GCC takes as a lower alignment: the generation heads of a GCC
/// build sit at `gc_state + 20`, 4-aligned (measured in the target: the
/// thresholds `gc.get_threshold()` gives follow each head there).
pub const GC_FLAG_BITS: u64 = 3;
/// The alignment of a list head: see [`GC_FLAG_BITS`].
const GC_HEAD_ALIGN: u64 = GC_FLAG_BITS + 1;
/// Most objects visited in one walk.
pub const MAX_OBJECTS: u64 = 200_000_000;
/// Size of the blocks copied from the heap.
const BLOCK: u64 = 16 << 10;
/// Most blocks kept (1 GiB of copies); the cache is emptied past it.
const MAX_BLOCKS: usize = 65_536;

/// Objects of one type.
#[derive(Debug, Clone)]
pub struct TypeCount {
    /// `type.__name__`.
    pub name: String,
    /// Address of the type object.
    pub type_address: u64,
    /// How many objects.
    pub count: u64,
    /// Their total shallow size: `tp_basicsize + |ob_size| * tp_itemsize`
    /// plus the pre-header (GC header, managed dict words). Exact
    /// `sys.getsizeof` for fixed-size objects and tuples; an underestimate
    /// for objects with separate buffers (list, dict, set, str). Objects
    /// whose header claims more memory than the target has are left out
    /// and counted in `implausible`.
    pub bytes: u64,
    /// Objects of this type whose size cannot be true: their `ob_size`
    /// claims items the target's memory cannot hold (a hostile or corrupt
    /// header; see `objects::plausible`).
    pub implausible: u64,
}

/// One walk of the GC lists.
#[derive(Debug, Clone)]
pub struct HeapSummary {
    /// Objects found.
    pub objects: u64,
    /// Per type, most numerous first.
    pub types: Vec<TypeCount>,
    /// The walk stopped at [`MAX_OBJECTS`] or on a broken list.
    pub truncated: bool,
    /// Free-threaded builds: segments of exited threads not walked.
    pub abandoned_segments: u64,
    /// How long the walk took, in seconds.
    pub seconds: f64,
    /// Read system calls made.
    pub read_calls: u64,
}

/// Why the heap could not be walked.
#[derive(Debug, thiserror::Error)]
pub enum HeapError {
    /// An object or list read failed.
    #[error(transparent)]
    Object(#[from] ObjectError),
    /// The version's collector layout is not known to pydeep.
    #[error(
        "walking the GC lists of CPython {0} failed: no collector list was recognised in its GC state (3.9-3.13 are tested)"
    )]
    Unsupported(String),
    /// A free-threaded target keeps no collector lists.
    #[error(
        "CPython {0} keeps no GC lists to walk: its collector finds objects by walking mimalloc's heaps (Python/gc_free_threading.c), and this build lacks the offsets pydeep needs to walk them"
    )]
    NoGcLists(String),
}

/// Copies of heap blocks.
struct Blocks<'a> {
    memory: &'a dyn RemoteMemory,
    blocks: HashMap<u64, Option<Box<[u8]>>>,
}

impl Blocks<'_> {
    /// The `N` bytes at `address`, from a cached block or read directly.
    fn get<const N: usize>(&mut self, address: u64) -> Option<[u8; N]> {
        let start = address & !(BLOCK - 1);
        let offset = (address - start) as usize;
        if offset + N <= BLOCK as usize {
            if self.blocks.len() >= MAX_BLOCKS {
                self.blocks.clear();
            }
            let memory = self.memory;
            let block = self.blocks.entry(start).or_insert_with(|| {
                let mut buf = vec![0u8; BLOCK as usize].into_boxed_slice();
                memory.read(start, &mut buf).ok().map(|_| buf)
            });
            if let Some(block) = block {
                let mut out = [0u8; N];
                out.copy_from_slice(&block[offset..offset + N]);
                return Some(out);
            }
        }
        let mut out = [0u8; N];
        self.memory.read(address, &mut out).ok().map(|_| out)
    }
}

/// What [`walk_objects`] found.
#[derive(Debug, Clone, Copy, Default)]
pub struct WalkStats {
    /// Objects visited.
    pub objects: u64,
    /// The walk stopped at [`MAX_OBJECTS`] or on a broken list.
    pub truncated: bool,
    /// Free-threaded builds: mimalloc segments abandoned by threads that
    /// exited, whose objects were not walked ([`crate::reading::mimalloc`]).
    pub abandoned_segments: u64,
}

/// Calls `visit(object, type, ob_size)` for every object in the main
/// interpreter's GC generations (what `gc.get_objects()` returns), in list
/// order; on a free-threaded build, every tracked object in the threads'
/// mimalloc GC heaps ([`crate::reading::mimalloc`]), page by page. `ob_size` is the word after `ob_type` (meaningful for
/// variable-size objects only).
pub fn walk_objects(
    objects: &Objects<'_>,
    runtime_address: u64,
    visit: &mut dyn FnMut(u64, u64, i64),
) -> Result<WalkStats, HeapError> {
    let memory = objects.memory();
    let layout = objects.layout();
    let o = &layout.offsets;
    let c = &layout.core;
    let version = layout.version.to_string();
    if !layout.has_gc_lists() {
        // Free-threaded: the collector's own walk of mimalloc's heaps.
        let Some(mimalloc) = MimallocLayout::from_offsets(o) else {
            return Err(HeapError::NoGcLists(version));
        };
        let interpreter = main_interpreter(memory, layout, runtime_address)?;
        let walked = walk_gc_heaps(memory, &mimalloc, interpreter, MAX_OBJECTS, visit);
        if walked.threads == 0 {
            return Err(HeapError::Unsupported(version));
        }
        return Ok(WalkStats {
            objects: walked.objects,
            truncated: walked.truncated || walked.bad_pages > 0,
            abandoned_segments: walked.abandoned_segments,
        });
    }
    let (Some(gc_at), Some(_)) = (
        o.interpreter_gc,
        o.runtime_interpreters_main.or(o.runtime_interpreters_head),
    ) else {
        return Err(HeapError::Unsupported(version));
    };
    let head_size = c.gc_head_size;
    let interpreter = main_interpreter(memory, layout, runtime_address)?;
    let gc = interpreter + gc_at;
    let heads = match (o.gc_state_generations, o.gc_generation_size) {
        (Some(generations_at), Some(generation_size)) => (0..GENERATIONS)
            .map(|generation| gc + generations_at + generation * generation_size)
            .collect(),
        // 3.14+ replaced the three generations with `young`, `old[2]` and
        // `permanent_generation` (incremental collector), whose offsets no
        // table gives: their heads are found by shape.
        _ => {
            let span = c.gc_state_collecting.clamp(64, 4096);
            let heads = generation_heads_by_shape(memory, gc, span);
            if heads.is_empty() {
                return Err(HeapError::Unsupported(version));
            }
            heads
        }
    };
    let mut blocks = Blocks {
        memory,
        blocks: HashMap::new(),
    };
    let mut stats = WalkStats::default();
    for head in heads {
        // _gc_next's low bits mark unreachable objects during a collection
        // (NEXT_MASK_UNREACHABLE) and, from 3.14, the old space; a paused
        // target may be inside a collection. CPython keeps flags in the
        // low two bits only ([`GC_FLAG_BITS`]): a head may be 4-aligned.
        let mut node = read_u64(memory, head).map_err(ObjectError::from)? & !GC_FLAG_BITS;
        let mut steps = 0u64;
        // Brent's cycle detection: a list that loops without coming back
        // to its head (garbage, or freed under a running target) meets the
        // node saved at the last power-of-two step within twice its length.
        let mut checkpoint = head;
        while node != head {
            if node == 0
                || !node.is_multiple_of(8)
                || node == checkpoint
                || stats.objects >= MAX_OBJECTS
                || steps > MAX_OBJECTS
            {
                stats.truncated = true;
                break;
            }
            steps += 1;
            if steps.is_power_of_two() {
                checkpoint = node;
            }
            // PyGC_Head (next, prev), then ob_refcnt, ob_type, ob_size.
            let Some(bytes) = blocks.get::<40>(node) else {
                stats.truncated = true;
                break;
            };
            let object_type = field_u64(&bytes, head_size + 8);
            let ob_size = field_u64(&bytes, head_size + 16) as i64;
            visit(node.wrapping_add(head_size), object_type, ob_size);
            stats.objects += 1;
            node = field_u64(&bytes, 0) & !GC_FLAG_BITS;
        }
    }
    Ok(stats)
}

/// The main interpreter: `_PyRuntime.interpreters.main`, or where no table
/// gives it (3.14+) the last of the `interpreters.head` list (newest
/// first, Python/pystate.c).
fn main_interpreter(
    memory: &dyn RemoteMemory,
    layout: &crate::reading::cpython::Layout,
    runtime_address: u64,
) -> Result<u64, HeapError> {
    let o = &layout.offsets;
    let c = &layout.core;
    if let Some(main_at) = o.runtime_interpreters_main {
        return Ok(read_u64(memory, runtime_address + main_at).map_err(ObjectError::from)?);
    }
    let head_at = o
        .runtime_interpreters_head
        .ok_or_else(|| HeapError::Unsupported(layout.version.to_string()))?;
    let mut interpreter = read_u64(memory, runtime_address + head_at).map_err(ObjectError::from)?;
    let next_at = c.interpreter_next;
    for _ in 0..256 {
        let next = read_u64(memory, interpreter + next_at).map_err(ObjectError::from)?;
        if next == 0 || next == interpreter {
            break;
        }
        interpreter = next;
    }
    Ok(interpreter)
}

/// The heads of the collector's object lists inside the `gc` state at
/// `gc` (the first `span` bytes), found by their shape: a `PyGC_Head`
/// whose `_gc_next` and `_gc_prev` both point at itself (an empty list),
/// or whose first node's `_gc_prev` and last node's `_gc_next` point back
/// at it (low flag bits masked). Lists are circular and doubly linked in
/// every version (Include/internal/pycore_gc.h), which no other pair of
/// words in the state is. In address order: for 3.14, young, old[0],
/// old[1], permanent.
pub fn generation_heads_by_shape(memory: &dyn RemoteMemory, gc: u64, span: u64) -> Vec<u64> {
    let Ok(region) = crate::process::memory::read_vec(memory, gc, span as usize, 4096) else {
        return Vec::new();
    };
    let mut heads = Vec::new();
    let mut offset = 0u64;
    while offset + 16 <= span {
        let at = gc + offset;
        let next = field_u64(&region, offset) & !GC_FLAG_BITS;
        let prev = field_u64(&region, offset + 8) & !GC_FLAG_BITS;
        // Objects on a list are 8-aligned (allocated, or static with a
        // pointer-sized first member); the head itself may be 4-aligned.
        let is_head = at.is_multiple_of(GC_HEAD_ALIGN)
            && next != 0
            && prev != 0
            && ((next == at && prev == at)
                || (next != at
                    && prev != at
                    && next.is_multiple_of(8)
                    && prev.is_multiple_of(8)
                    && read_u64(memory, next + 8).is_ok_and(|p| p & !GC_FLAG_BITS == at)
                    && read_u64(memory, prev).is_ok_and(|n| n & !GC_FLAG_BITS == at)));
        if is_head {
            heads.push(at);
            offset += 16;
        } else {
            offset += GC_HEAD_ALIGN;
        }
    }
    heads
}

/// Counts every object in the main interpreter's GC generations by type.
pub fn heap_summary(objects: &Objects<'_>, runtime_address: u64) -> Result<HeapSummary, HeapError> {
    let started = Instant::now();
    let memory = objects.memory();
    let layout = objects.layout();
    let calls_before = memory.read_calls();
    let o = &layout.offsets;
    let c = &layout.core;
    // The GC pre-header sys.getsizeof counts (_PyType_PreHeaderSize): a
    // PyGC_Head, none on free-threaded builds.
    let head_size = c.object_gc_preheader_size;
    // Per type: objects, bytes, objects of implausible size.
    let mut by_type: HashMap<u64, (u64, u64, u64)> = HashMap::new();
    let mut sizes: HashMap<u64, Option<(u64, u64, u64)>> = HashMap::new();
    let stats = walk_objects(
        objects,
        runtime_address,
        &mut |object, object_type, ob_size| {
            let (basic, item, pre) = *sizes
                .entry(object_type)
                .or_insert_with(|| {
                    objects.type_info(object_type).ok().map(|ty| {
                        let mut pre = head_size;
                        let managed = c.tpflags_preheader;
                        if managed != 0 && ty.flags & managed != 0 {
                            pre += 16;
                        }
                        // 3.11+ generators and coroutines keep no ob_size
                        // (the word after ob_type is a pointer): their
                        // shallow size is the fixed part.
                        let itemsize = if ty.kind == crate::reading::objects::Kind::Generator
                            && o.generator_gi_iframe.is_some()
                        {
                            0
                        } else {
                            ty.itemsize
                        };
                        (ty.basicsize, itemsize, pre)
                    })
                })
                .get_or_insert((0, 0, head_size));
            let inline = basic.saturating_add(item.saturating_mul(ob_size.unsigned_abs()));
            let entry = by_type.entry(object_type).or_insert((0, 0, 0));
            entry.0 += 1;
            if crate::reading::objects::plausible::can_hold(memory, object, inline) {
                entry.1 = entry.1.saturating_add(inline.saturating_add(pre));
            } else {
                entry.2 += 1;
            }
        },
    )?;
    let mut types: Vec<TypeCount> = by_type
        .into_iter()
        .map(|(address, (count, bytes, implausible))| TypeCount {
            name: objects
                .type_info(address)
                .map(|t| t.name)
                .unwrap_or_else(|_| format!("<type 0x{address:x}>")),
            type_address: address,
            count,
            bytes,
            implausible,
        })
        .collect();
    types.sort_by(|a, b| b.count.cmp(&a.count).then(a.name.cmp(&b.name)));
    Ok(HeapSummary {
        objects: stats.objects,
        types,
        truncated: stats.truncated,
        abandoned_segments: stats.abandoned_segments,
        seconds: started.elapsed().as_secs_f64(),
        read_calls: memory.read_calls() - calls_before,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::memory::SnapshotMemory;

    const GC: u64 = 0x10_0000;
    const OBJECTS: u64 = 0x20_0000;

    /// A GC state whose three list heads sit at `GC + first`, 24 bytes
    /// apart (`struct gc_generation`): the first empty, the second holding
    /// two objects (the first flagged unreachable), the third one object.
    fn state(first: u64) -> SnapshotMemory {
        let mut state = vec![0u8; 256];
        let mut objects = vec![0u8; 4096];
        let put = |buf: &mut Vec<u8>, at: u64, value: u64| {
            buf[at as usize..at as usize + 8].copy_from_slice(&value.to_le_bytes())
        };
        let heads: Vec<u64> = (0..3).map(|g| GC + first + 24 * g).collect();
        // Empty: both words point at the head itself.
        put(&mut state, first, heads[0]);
        put(&mut state, first + 8, heads[0]);
        // head -> a -> b -> head; a's _gc_next carries NEXT_MASK_UNREACHABLE.
        let (a, b, c) = (OBJECTS, OBJECTS + 64, OBJECTS + 128);
        put(&mut state, first + 24, a);
        put(&mut state, first + 32, b | 2);
        put(&mut objects, 0, b | 1);
        put(&mut objects, 8, heads[1] | 2);
        put(&mut objects, 64, heads[1]);
        put(&mut objects, 72, a);
        put(&mut state, first + 48, c);
        put(&mut state, first + 56, c);
        put(&mut objects, 128, heads[2]);
        put(&mut objects, 136, heads[2]);
        let mut memory = SnapshotMemory::new();
        memory.add_region(GC, state);
        memory.add_region(OBJECTS, objects);
        memory
    }

    #[test]
    fn generation_heads_are_found_at_8_aligned_offsets_as_on_3_13_0() {
        let memory = state(24);
        let heads = generation_heads_by_shape(&memory, GC, 200);
        assert_eq!(heads, vec![GC + 24, GC + 48, GC + 72]);
    }

    #[test]
    fn generation_heads_are_found_at_4_aligned_offsets_as_on_3_13_5() {
        // 3.13.5 built by GCC: PyGC_Head is Py_ALIGNED(4), generations at 20.
        let memory = state(20);
        let heads = generation_heads_by_shape(&memory, GC, 200);
        assert_eq!(heads, vec![GC + 20, GC + 44, GC + 68]);
    }

    #[test]
    fn garbage_state_finds_no_heads_and_never_panics() {
        let mut memory = SnapshotMemory::new();
        let garbage: Vec<u8> = (0..256u32).map(|i| (i * 37 + 11) as u8).collect();
        memory.add_region(GC, garbage);
        assert!(generation_heads_by_shape(&memory, GC, 4096).is_empty());
        assert!(generation_heads_by_shape(&memory, GC + 250, 64).is_empty());
    }
}
