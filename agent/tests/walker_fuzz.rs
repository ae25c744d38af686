//! The walkers over in-memory snapshots: exact on well-formed frame chains,
//! and on garbage (random bytes full of self-pointers, cycles) they end
//! without panicking, within their depth limit and a bounded number of
//! reads.

use proptest::prelude::*;
use pydeep::process::memory::{RemoteMemory, SnapshotMemory};
use pydeep::reading::cpython::{semantics_for, Layout, PythonVersion};
use pydeep::reading::walker::{
    sample_interpreters, walk_frame_objects, walk_interpreter_frames, CodeCheck, FrameSource,
    ThreadListCache, Walk, WalkOptions,
};
use pydeep::ThreadSample;
use pydeep_cpython::layouts;

fn layout(minor: u32) -> Layout {
    let semantics = semantics_for(3, minor).unwrap();
    let offsets = *layouts::ALL
        .iter()
        .find(|t| t.version.1 == minor)
        .expect("generated table");
    Layout::new(
        PythonVersion {
            major: 3,
            minor,
            ..Default::default()
        },
        semantics,
        offsets,
    )
    .unwrap()
}

fn put(memory: &mut SnapshotMemory, address: u64, value: u64) {
    assert!(
        memory.write(address, &value.to_le_bytes()),
        "write at {address:x}"
    );
}

const BASE: u64 = 0x10_0000;

#[test]
fn a_well_formed_data_stack_is_walked_innermost_first_with_exact_offsets() {
    for minor in [11u32, 12, 13] {
        let layout = layout(minor);
        let o = &layout.offsets;
        let frame_size = o.interpreter_frame_size.unwrap() + 32;
        let mut memory = SnapshotMemory::new();
        memory.add_region(BASE, vec![0u8; 64 << 10]);
        let chunk = BASE;
        let code = BASE + 0x8000;
        let co_code = code + o.code_co_code_adaptive.unwrap();
        let code_at = o
            .interpreter_frame_f_code
            .or(o.interpreter_frame_f_executable)
            .unwrap();
        let instr_at = o
            .interpreter_frame_prev_instr
            .or(o.interpreter_frame_instr_ptr)
            .unwrap();
        let depth = 40u64;
        let mut previous = 0;
        let mut frame = chunk + 64;
        for i in 0..depth {
            put(
                &mut memory,
                frame + o.interpreter_frame_previous.unwrap(),
                previous,
            );
            put(&mut memory, frame + code_at, code);
            put(&mut memory, frame + instr_at, co_code + 2 * i);
            previous = frame;
            frame += frame_size;
        }
        let top = previous;
        let mut source = FrameSource::with_chunk_layout(o.stack_chunk_previous);
        source.add_chunk(chunk);
        let before = memory.read_calls();
        let walk =
            walk_interpreter_frames(&memory, &layout, top, &mut source, &WalkOptions::default());
        assert!(!walk.broken && !walk.truncated, "3.{minor}: {walk:?}");
        let offsets: Vec<u32> = walk.frames.iter().map(|f| f.instruction_offset).collect();
        let expected: Vec<u32> = (0..depth as u32).rev().map(|i| 2 * i).collect();
        assert_eq!(offsets, expected, "3.{minor}");
        assert!(walk.frames.iter().all(|f| f.code_address == code));
        // The whole stack came from one window read.
        assert_eq!(memory.read_calls() - before, 1, "3.{minor}: reads");
    }
}

#[test]
fn a_cycle_of_frames_ends_the_walk_as_looped() {
    let layout = layout(12);
    let o = &layout.offsets;
    let mut memory = SnapshotMemory::new();
    memory.add_region(BASE, vec![0u8; 4096]);
    let (a, b) = (BASE + 256, BASE + 1024);
    let code = BASE + 2048;
    for (frame, previous) in [(a, b), (b, a)] {
        put(
            &mut memory,
            frame + o.interpreter_frame_previous.unwrap(),
            previous,
        );
        put(
            &mut memory,
            frame + o.interpreter_frame_f_code.unwrap(),
            code,
        );
        put(
            &mut memory,
            frame + o.interpreter_frame_prev_instr.unwrap(),
            code + o.code_co_code_adaptive.unwrap(),
        );
    }
    let mut source = FrameSource::new();
    let walk = walk_interpreter_frames(&memory, &layout, a, &mut source, &WalkOptions::default());
    assert!(walk.looped && !walk.broken);
    assert_eq!(walk.frames.len(), 2);

    let legacy = self::layout(10);
    let lo = &legacy.offsets;
    let mut memory = SnapshotMemory::new();
    memory.add_region(BASE, vec![0u8; 4096]);
    for (frame, back) in [(a, b), (b, a)] {
        put(&mut memory, frame + lo.frame_object_f_back.unwrap(), back);
        put(&mut memory, frame + lo.frame_object_f_code.unwrap(), code);
    }
    let walk = walk_frame_objects(
        &memory,
        &legacy,
        a,
        &mut FrameSource::new(),
        &WalkOptions::default(),
    );
    assert!(walk.looped && !walk.broken);
    assert_eq!(walk.frames.len(), 2);
}

#[test]
fn a_chain_that_loops_after_a_tail_is_cut_at_its_first_repeated_frame() {
    let layout = layout(12);
    let o = &layout.offsets;
    let mut memory = SnapshotMemory::new();
    memory.add_region(BASE, vec![0u8; 8192]);
    let code = BASE + 6144;
    // a -> b -> c -> d -> e -> c: the walk must show a b c d e, then stop.
    let frames: Vec<u64> = (0..5).map(|i| BASE + 256 + 512 * i).collect();
    let next = [frames[1], frames[2], frames[3], frames[4], frames[2]];
    for (i, (&frame, &previous)) in frames.iter().zip(&next).enumerate() {
        put(
            &mut memory,
            frame + o.interpreter_frame_previous.unwrap(),
            previous,
        );
        put(
            &mut memory,
            frame + o.interpreter_frame_f_code.unwrap(),
            code,
        );
        put(
            &mut memory,
            frame + o.interpreter_frame_prev_instr.unwrap(),
            code + o.code_co_code_adaptive.unwrap() + 2 * i as u64,
        );
    }
    let mut source = FrameSource::new();
    let walk = walk_interpreter_frames(
        &memory,
        &layout,
        frames[0],
        &mut source,
        &WalkOptions::default(),
    );
    assert!(walk.looped && !walk.broken);
    let offsets: Vec<u32> = walk.frames.iter().map(|f| f.instruction_offset).collect();
    assert_eq!(offsets, [0, 2, 4, 6, 8]);
    assert_eq!(walk.visited, frames);
}

#[test]
fn a_stack_deeper_than_the_limit_is_truncated_not_read_to_the_end() {
    let layout = layout(10);
    let o = &layout.offsets;
    let mut memory = SnapshotMemory::new();
    memory.add_region(BASE, vec![0u8; 64 << 10]);
    let code = BASE + 0xf000;
    for i in 0..100u64 {
        let frame = BASE + 256 * (i + 1);
        let back = if i == 99 { 0 } else { frame + 256 };
        put(&mut memory, frame + o.frame_object_f_back.unwrap(), back);
        put(&mut memory, frame + o.frame_object_f_code.unwrap(), code);
    }
    let options = WalkOptions {
        max_depth: 10,
        ..WalkOptions::default()
    };
    let walk = walk_frame_objects(
        &memory,
        &layout,
        BASE + 256,
        &mut FrameSource::new(),
        &options,
    );
    assert!(walk.truncated && !walk.broken);
    assert_eq!(walk.frames.len(), 10);
    assert!(memory.read_calls() <= 10);
}

/// Random words, many of them pointers back into the same region, so chains
/// wander through garbage and loop.
fn garbage() -> impl Strategy<Value = Vec<u64>> {
    prop::collection::vec(
        prop_oneof![
            (0u64..4096).prop_map(|i| BASE + 8 * i),
            (0u64..4096).prop_map(|i| BASE + i),
            (0u64..64).prop_map(|i| u64::MAX - 8 * i),
            any::<u64>(),
            0u64..8,
            Just(0u64),
        ],
        4096,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn garbage_never_panics_and_work_stays_bounded(words in garbage(), minor in 9u32..=13) {
        let layout = layout(minor);
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        let mut memory = SnapshotMemory::new();
        memory.add_region(BASE, bytes);
        let options = WalkOptions { max_depth: 64, max_threads: 16, ..WalkOptions::default() };
        let mut out = Vec::new();
        let mut cache = ThreadListCache::default();
        let never = |_: u64| false;
        let mut check = CodeCheck::new(&never, 0);
        let _ = sample_interpreters(&memory, &layout, BASE, &options, &mut cache, &mut check, &mut out);
        prop_assert!(out.len() <= 256 * 16);
        for thread in &out {
            prop_assert!(thread.frames.len() <= 64);
        }
        // Interpreters (<= 256) x threads (<= 16) x frames (<= 64, twice
        // for skipped shims), each at most two reads, plus the batches.
        prop_assert!(memory.read_calls() <= 256 * 16 * 2 * (2 * 64 + 16) + 256 * 20);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn object_readers_on_garbage_never_panic(words in garbage(), minor in 9u32..=13, at in 0u64..4096) {
        use pydeep::reading::cpython::objects::ObjectReader;
        let layout = layout(minor);
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        let mut memory = SnapshotMemory::new();
        memory.add_region(BASE, bytes);
        let reader = ObjectReader::new(&memory, &layout);
        let address = BASE + 8 * at;
        let _ = reader.unicode(address);
        let _ = reader.int(address);
        let _ = reader.tuple_items(address);
        let _ = reader.string_tuple(address);
        let _ = reader.bytes(address, 1 << 16);
        let _ = reader.dict_items(address);
        let _ = reader.dict_get_str(address, "threading");
        let _ = reader.instance_attribute(address, "_name");
        let _ = reader.code_object(address);
        let _ = reader.type_of(address).and_then(|t| reader.type_name(t));
        // Every read is bounded: even garbage costs a bounded number of reads.
        prop_assert!(memory.read_calls() < 100_000);
    }
}

/// Snapshot memory whose current-frame pointer changes right after the
/// data-stack window of an armed read is copied: the thread returns or
/// calls while pydeep reads it.
struct Changing {
    memory: std::cell::RefCell<SnapshotMemory>,
    /// (address, value) writes, the first made once the piece at `after`
    /// (the window) has been copied in a multi-piece read, the next after
    /// the next such copy, and so on.
    pending: std::cell::RefCell<std::collections::VecDeque<Vec<(u64, u64)>>>,
    after: u64,
    /// Read calls made (each read, read_many or read_prefix is one).
    calls: std::cell::Cell<u64>,
    /// Bytes the last `read_many` asked for (a sample's last batch).
    last_many_bytes: std::cell::Cell<u64>,
}

impl pydeep::process::memory::RemoteMemory for Changing {
    fn read(
        &self,
        address: u64,
        buf: &mut [u8],
    ) -> Result<(), pydeep::process::memory::MemoryError> {
        self.calls.set(self.calls.get() + 1);
        self.memory.borrow().read(address, buf)
    }

    fn read_many(
        &self,
        pieces: &mut [(u64, &mut [u8])],
    ) -> Result<(), pydeep::process::memory::MemoryError> {
        self.calls.set(self.calls.get() + 1);
        let bytes = pieces.iter().map(|(_, buf)| buf.len() as u64).sum();
        self.last_many_bytes.set(bytes);
        for (address, buf) in pieces.iter_mut() {
            self.memory.borrow().read(*address, buf)?;
        }
        Ok(())
    }

    fn read_prefix(
        &self,
        pieces: &mut [(u64, &mut [u8])],
    ) -> Result<usize, pydeep::process::memory::MemoryError> {
        self.calls.set(self.calls.get() + 1);
        let mut done = 0;
        for (address, buf) in pieces.iter_mut() {
            if self.memory.borrow().read(*address, buf).is_err() {
                break;
            }
            done += 1;
            if *address == self.after {
                let next = self.pending.borrow_mut().pop_front();
                for (at, value) in next.into_iter().flatten() {
                    put(&mut self.memory.borrow_mut(), at, value);
                }
            }
        }
        Ok(done)
    }

    fn read_calls(&self) -> u64 {
        self.calls.get()
    }
}

/// One 3.13 interpreter, one thread, three frames F0 <- F1 <- F2 in one
/// data-stack chunk, and a fourth slot F3 above F2 already holding a
/// frame that calls from F2 (as a frame about to be pushed would).
fn one_thread_three_frames() -> (Layout, SnapshotMemory, u64, [u64; 4]) {
    let layout = layout(13);
    let o = &layout.offsets;
    let mut memory = SnapshotMemory::new();
    memory.add_region(BASE, vec![0u8; 64 << 10]);
    let (runtime, interpreter, thread, gil) = (BASE, BASE + 0x1000, BASE + 0x2000, BASE + 0x3000);
    let chunk = BASE + 0x4000;
    let code = BASE + 0xc000;
    put(
        &mut memory,
        runtime + o.runtime_interpreters_head.unwrap(),
        interpreter,
    );
    put(
        &mut memory,
        interpreter + o.interpreter_threads_head.unwrap(),
        thread,
    );
    if let Some(at) = o.interpreter_ceval_gil {
        put(&mut memory, interpreter + at, gil);
    }
    let size = o.interpreter_frame_size.unwrap() + 64;
    let frames = [0u64, 1, 2, 3].map(|i| chunk + 64 + i * size);
    for (i, &frame) in frames.iter().enumerate() {
        let previous = if i == 0 { 0 } else { frames[i - 1] };
        put_frame(&mut memory, &layout, frame, previous, code, 2 * i as u64);
    }
    put_thread_top(&mut memory, &layout, thread, frames[2], chunk);
    (layout, memory, thread, frames)
}

/// Writes a 3.13 frame header at `frame`: its caller, its code object and
/// its instruction `offset` bytes into the code.
fn put_frame(
    memory: &mut SnapshotMemory,
    layout: &Layout,
    frame: u64,
    previous: u64,
    code: u64,
    offset: u64,
) {
    let o = &layout.offsets;
    put(
        memory,
        frame + o.interpreter_frame_previous.unwrap(),
        previous,
    );
    put(
        memory,
        frame + o.interpreter_frame_f_executable.unwrap(),
        code,
    );
    put(
        memory,
        frame + o.interpreter_frame_instr_ptr.unwrap(),
        code + o.code_co_code_adaptive.unwrap() + offset,
    );
}

/// Points `thread`'s current frame at `frame` and its data stack at `chunk`.
fn put_thread_top(
    memory: &mut SnapshotMemory,
    layout: &Layout,
    thread: u64,
    frame: u64,
    chunk: u64,
) {
    let o = &layout.offsets;
    put(memory, thread + o.thread_current_frame.unwrap(), frame);
    put(memory, thread + o.thread_datastack_chunk.unwrap(), chunk);
}

/// The thread's current-frame pointer moves to each of `moves` (frame
/// indexes; None: 0) in turn, one move after each copy of its window, from
/// the second sample on: (the last sample, read calls the second made).
fn sample_while_moving(moves: &[Option<usize>]) -> (ThreadSample, u64) {
    sample_while_changing(|_, at, frames| {
        moves
            .iter()
            .map(|m| vec![(at, m.map_or(0, |i| frames[i]))])
            .collect()
    })
}

/// Like [`sample_while_moving`], with the writes made after each copy of
/// the window given by `steps(memory, pointer address, frames)`, which may
/// also change the memory before the first sample.
fn sample_while_changing(
    steps: impl FnOnce(&mut SnapshotMemory, u64, [u64; 4]) -> Vec<Vec<(u64, u64)>>,
) -> (ThreadSample, u64) {
    let (sample, reads, _) = sample_while_changing_counted(steps);
    (sample, reads)
}

/// [`sample_while_changing`], also returning the bytes the second
/// sample's last batch (its re-read) asked for.
fn sample_while_changing_counted(
    steps: impl FnOnce(&mut SnapshotMemory, u64, [u64; 4]) -> Vec<Vec<(u64, u64)>>,
) -> (ThreadSample, u64, u64) {
    let (layout, mut memory, thread, frames) = one_thread_three_frames();
    let at = thread + layout.offsets.thread_current_frame.unwrap();
    let steps = steps(&mut memory, at, frames);
    let memory = Changing {
        memory: std::cell::RefCell::new(memory),
        pending: Default::default(),
        after: frames[0] - 64,
        calls: std::cell::Cell::new(0),
        last_many_bytes: std::cell::Cell::new(0),
    };
    let options = WalkOptions::default();
    let mut cache = ThreadListCache::default();
    let never = |_: u64| false;
    let mut out = Vec::new();
    let mut reads = 0;
    // The first sample learns where the stack is; the second reads it
    // in one batch, with the pointer read again after the window.
    for round in 0..2 {
        if round == 1 {
            memory.pending.borrow_mut().extend(steps.iter().cloned());
        }
        let mut check = CodeCheck::new(&never, 0);
        let before = memory.read_calls();
        sample_interpreters(
            &memory, &layout, BASE, &options, &mut cache, &mut check, &mut out,
        )
        .expect("sample");
        reads = memory.read_calls() - before;
    }
    (out[0].clone(), reads, memory.last_many_bytes.get())
}

#[test]
fn a_callee_pushed_after_its_bytes_were_copied_tears_the_sample_without_a_later_read() {
    // F3 is pushed (its `previous` written) and named by the pointer only
    // after the window was copied: the copy cannot link the pointer to the
    // stack read. Reading again would give a later moment's stack, chosen
    // because this one looked wrong (issue #13): the sample is torn, in
    // one read, and exactness.rs counts it.
    let previous_at = layout(13).offsets.interpreter_frame_previous.unwrap();
    let (sample, reads) = sample_while_changing(|memory, at, frames| {
        put(memory, frames[3] + previous_at, 0);
        vec![vec![(frames[3] + previous_at, frames[2]), (at, frames[3])]]
    });
    assert!(sample.torn, "{sample:?}");
    assert_eq!(reads, 1, "the first batch only");
}

#[test]
fn a_pointer_that_joins_no_frame_read_tears_the_sample_without_a_later_read() {
    // The pointer names a frame above F2 whose chain never reaches the
    // stack read (F2 returned and F1 called again, one slot higher, or
    // garbage): torn, in one read.
    let previous_at = layout(13).offsets.interpreter_frame_previous.unwrap();
    for late_link in [None, Some(1)] {
        let (sample, reads) = sample_while_changing(|memory, at, frames| {
            put(memory, frames[3] + previous_at, 0);
            let mut step = vec![(at, frames[3])];
            if let Some(i) = late_link {
                step.insert(0, (frames[3] + previous_at, frames[i]));
            }
            vec![step]
        });
        assert!(sample.torn, "{late_link:?}: {sample:?}");
        assert_eq!(reads, 1, "{late_link:?}: the first batch only");
    }
}

#[test]
fn a_frame_linked_to_the_stack_in_the_copy_is_grafted_on_it() {
    // F3 was pushed on F1 (F2 returned) before the window was copied, and
    // the pointer read after the copy names it: the sample is F3 on top
    // of F1, from the one read.
    let previous_at = layout(13).offsets.interpreter_frame_previous.unwrap();
    let (sample, reads) = sample_while_changing(|memory, at, frames| {
        put(memory, frames[3] + previous_at, frames[1]);
        vec![vec![(at, frames[3])]]
    });
    assert!(!sample.torn, "{sample:?}");
    assert_eq!(offsets(&sample), [6, 2, 0], "the stack at the pointer read");
    assert_eq!(reads, 1, "the first batch only");
}

fn offsets(sample: &ThreadSample) -> Vec<u32> {
    sample.frames.iter().map(|f| f.instruction_offset).collect()
}

#[test]
fn a_stack_that_only_called_deeper_while_read_is_kept_in_one_read() {
    for moves in [&[][..], &[Some(3)]] {
        let (sample, reads) = sample_while_moving(moves);
        assert!(!sample.torn, "pointer moved to {moves:?}");
        assert_eq!(reads, 1, "pointer moved to {moves:?}: one read");
        let expected: &[u32] = if moves.is_empty() {
            &[4, 2, 0]
        } else {
            &[6, 4, 2, 0]
        };
        assert_eq!(
            offsets(&sample),
            expected,
            "the stack at the last pointer read, innermost first"
        );
    }
}

#[test]
fn a_stack_whose_innermost_frame_returned_while_read_is_the_stack_after_the_return() {
    // The innermost frame F2 returns while its window is copied: the
    // pointer read after the copy names F1, a frame of the stack read, so
    // the sample is F1 <- F0, from the same read (before: torn, then a
    // re-read and a retry that landed later on whatever ran then).
    let (sample, reads) = sample_while_moving(&[Some(1)]);
    assert!(!sample.torn, "{sample:?}");
    assert_eq!(offsets(&sample), [2, 0], "the stack after the return");
    assert_eq!(reads, 1, "the first batch only");
}

#[test]
fn a_stack_that_grew_into_a_chunk_the_prefetch_missed_is_kept_without_a_re_read() {
    // The first sample learns F0 <- F1 <- F2 in one chunk. Then the thread
    // calls F3 in a new chunk: the second sample's first batch holds the
    // old chunk, the data-stack batch the new one and, after it, the
    // pointer again, which still names F3: the stack is bracketed by it
    // and needs no re-read of every frame (before: a third read).
    let (layout, mut memory, thread, frames) = one_thread_three_frames();
    let o = &layout.offsets;
    let options = WalkOptions::default();
    let mut cache = ThreadListCache::default();
    let never = |_: u64| false;
    let mut out = Vec::new();
    let mut sample = |memory: &SnapshotMemory, out: &mut Vec<ThreadSample>| {
        let mut check = CodeCheck::new(&never, 0);
        let before = memory.read_calls();
        sample_interpreters(memory, &layout, BASE, &options, &mut cache, &mut check, out)
            .expect("sample");
        memory.read_calls() - before
    };
    sample(&memory, &mut out);
    assert_eq!(offsets(&out[0]), [4, 2, 0]);

    let new_chunk = BASE + 0x8000;
    let callee = new_chunk + 64;
    let code = BASE + 0xc000;
    put(
        &mut memory,
        new_chunk + o.stack_chunk_previous.unwrap(),
        frames[0] - 64,
    );
    put(&mut memory, new_chunk + o.stack_chunk_size.unwrap(), 0x4000);
    put_frame(&mut memory, &layout, callee, frames[2], code, 10);
    put_thread_top(&mut memory, &layout, thread, callee, new_chunk);
    let reads = sample(&memory, &mut out);
    assert!(!out[0].torn, "{:?}", out[0]);
    assert_eq!(offsets(&out[0]), [10, 4, 2, 0]);
    assert_eq!(reads, 2, "first batch, the new chunk with the pointer");
}

#[test]
fn an_innermost_frame_object_entering_or_leaving_ends_a_running_read_only() {
    fn walk(memory: &SnapshotMemory, layout: &Layout, first: u64, check_torn: bool) -> Walk {
        let options = WalkOptions {
            check_torn,
            ..WalkOptions::default()
        };
        walk_frame_objects(memory, layout, first, &mut FrameSource::new(), &options)
    }
    for minor in [9u32, 10] {
        let layout = layout(minor);
        let o = &layout.offsets;
        let mut memory = SnapshotMemory::new();
        memory.add_region(BASE, vec![0u8; 4096]);
        let (inner, outer) = (BASE + 256, BASE + 1024);
        let code = BASE + 2048;
        // 3.10: FRAME_CREATED (-2) innermost, FRAME_EXECUTING (0) outer;
        // 3.9: f_executing 0 innermost, 1 outer.
        let (entering, executing) = if minor == 10 { (0xfe, 0) } else { (0, 1) };
        let state_at = o
            .frame_object_f_state
            .or(o.frame_object_f_executing)
            .unwrap();
        for (frame, back, state) in [(inner, outer, entering), (outer, 0, executing)] {
            put(&mut memory, frame + o.frame_object_f_back.unwrap(), back);
            put(&mut memory, frame + o.frame_object_f_code.unwrap(), code);
            put(&mut memory, frame + state_at, state);
        }
        // Paused: the thread state names it, so it is the current frame.
        let paused = walk(&memory, &layout, inner, false);
        assert!(
            !paused.broken && paused.frames.len() == 2,
            "3.{minor}: {paused:?}"
        );
        // Running: it may be a frame popped before the copy.
        let running = walk(&memory, &layout, inner, true);
        assert!(
            running.broken && running.frames.is_empty(),
            "3.{minor}: {running:?}"
        );
        // An outer frame that does not run ends even a paused walk.
        put(&mut memory, outer + state_at, entering);
        put(&mut memory, inner + state_at, executing);
        let broken = walk(&memory, &layout, inner, false);
        assert!(
            broken.broken && broken.frames.len() == 1,
            "3.{minor}: {broken:?}"
        );
    }
}
