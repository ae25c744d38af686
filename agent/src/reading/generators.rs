//! Generators, coroutines and async generators of a paused target: each
//! one's state (as `inspect.getgeneratorstate` / `getcoroutinestate` /
//! `getasyncgenstate` name it), where it is suspended, and the object it
//! delegates to (`gi_yieldfrom` / `cr_await` / `ag_await`).
//!
//! Written once against [`Layout`]. The two frame families differ:
//!
//! * 3.9/3.10 (`PyGenObject.gi_frame`, a heap `PyFrameObject`): NULL once
//!   the generator finished (closed); `f_lasti == -1` before its first
//!   instruction (created); running is `gi_running` on 3.9 and
//!   `f_state == FRAME_EXECUTING` on 3.10. The delegate is the value-stack
//!   top when the next instruction is `YIELD_FROM` (Objects/genobject.c
//!   `_PyGen_yf`).
//! * 3.11+ (`gi_iframe`, an embedded `_PyInterpreterFrame`, and
//!   `gi_frame_state`, whose numbering [`GeneratorStates`] gives per
//!   version). The delegate is the stack top when 3.13+ says
//!   `FRAME_SUSPENDED_YIELD_FROM`, or on 3.11/3.12 when the instruction
//!   after `prev_instr` is a `RESUME` with oparg >= 2 (after `yield from` /
//!   `await`).
//!
//! An async generator's `ag_running` is `ag_running_async` (true while an
//! `asend`/`athrow` awaitable is being awaited, even when its frame is
//! suspended at an `await`): `getasyncgenstate` reports RUNNING then, and so
//! does pydeep.

use std::collections::{HashMap, HashSet, VecDeque};

use pydeep_cpython::linetable::LineIndex;

use crate::process::memory::{field_u32, field_u64, field_u8, read_u64, read_vec};
use crate::reading::cpython::code::CodeObject;
use crate::reading::cpython::objects::ObjectError;
use crate::reading::cpython::{FrameKind, GeneratorStates, InstructionPointer, Layout};
use crate::reading::objects::{plausible, Objects};

/// Most bytes read for a generator header with its embedded frame.
const MAX_HEADER: usize = 1024;
/// Longest `yield from` / `await` chain followed.
pub const MAX_CHAIN: usize = 256;
/// Largest plausible value-stack index.
const MAX_STACK: u64 = 1 << 20;

/// What kind of generator-like object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GeneratorKind {
    /// `types.GeneratorType`.
    Generator,
    /// `types.CoroutineType` (`async def`).
    Coroutine,
    /// `types.AsyncGeneratorType`.
    AsyncGenerator,
}

impl GeneratorKind {
    /// The kind of objects whose type is named `type_name` (`tp_name`), if
    /// any.
    pub fn from_type_name(type_name: &str) -> Option<GeneratorKind> {
        match type_name {
            "generator" => Some(GeneratorKind::Generator),
            "coroutine" => Some(GeneratorKind::Coroutine),
            "async_generator" => Some(GeneratorKind::AsyncGenerator),
            _ => None,
        }
    }
}

/// The state `inspect.getgeneratorstate` (`GEN_*`), `getcoroutinestate`
/// (`CORO_*`) and `getasyncgenstate` (`AGEN_*`) report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GeneratorState {
    /// Not started.
    Created,
    /// Waiting at a `yield` / `await`.
    Suspended,
    /// Currently executing (its frame is on a thread's stack), or for an
    /// async generator, being awaited through `asend`/`athrow`.
    Running,
    /// Finished or closed: `gi_frame` is None.
    Closed,
}

/// One generator, coroutine or async generator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generator {
    /// `id()` of the object.
    pub address: u64,
    /// Generator, coroutine or async generator.
    pub kind: GeneratorKind,
    /// Its state.
    pub state: GeneratorState,
    /// `__name__`.
    pub name: String,
    /// `__qualname__`.
    pub qualname: String,
    /// `co_filename` of its code.
    pub file: String,
    /// Address of its code object (0 if unknown).
    pub code: u64,
    /// Address of its frame (`gi_frame`'s `PyFrameObject` on 3.9/3.10, the
    /// embedded `_PyInterpreterFrame` on 3.11+); null when closed.
    pub frame_address: Option<u64>,
    /// `gi_frame.f_lineno`; null when closed.
    pub line: Option<u32>,
    /// `gi_frame.f_lasti` (-1 before the first instruction on 3.9/3.10);
    /// null when closed.
    pub instruction_offset: Option<i64>,
    /// `gi_yieldfrom` / `cr_await` / `ag_await`: `id()` of the object it
    /// delegates to; null if none.
    pub awaiting: Option<u64>,
    /// `type(awaiting).__name__`.
    pub awaiting_type: Option<String>,
}

impl Generator {
    /// How every view names it: `<coroutine fetch suspended at app.py:12>`
    /// (type, `__qualname__`, the `inspect` state, and where its frame
    /// stands). CPython's own repr (`<coroutine object fetch at 0x...>`)
    /// says neither the state nor the place, which is what a stuck task
    /// needs to show.
    pub fn describe(&self, type_name: &str) -> String {
        let state = format!("{:?}", self.state).to_lowercase();
        let file = self.file.rsplit('/').next().unwrap_or("");
        let place = match self.line {
            Some(line) => format!(" at {file}:{line}"),
            None => String::new(),
        };
        format!("<{type_name} {} {state}{place}>", self.qualname)
    }
}

/// Code objects read once per snapshot, with their line tables.
#[derive(Default)]
pub struct Codes {
    cache: HashMap<u64, Option<(CodeObject, LineIndex)>>,
}

impl Codes {
    /// The code object at `address` and its line index (None if unreadable).
    pub fn get(&mut self, objects: &Objects<'_>, address: u64) -> Option<&(CodeObject, LineIndex)> {
        if self.cache.len() > 65_536 {
            self.cache.clear();
        }
        self.cache
            .entry(address)
            .or_insert_with(|| {
                objects.reader.code_object(address).ok().map(|(code, _)| {
                    let lines =
                        LineIndex::new(code.line_table_kind, code.first_line, &code.line_table);
                    (code, lines)
                })
            })
            .as_ref()
    }
}

fn need(value: Option<u64>, field: &'static str) -> Result<u64, ObjectError> {
    value.ok_or(ObjectError::MissingOffset(field))
}

fn invalid(address: u64, detail: impl Into<String>) -> ObjectError {
    ObjectError::Invalid {
        address,
        expected: "generator",
        detail: detail.into(),
    }
}

/// The frame facts both families reduce to.
struct FrameFacts {
    frame: u64,
    code: u64,
    /// Raw `f_lasti` as Python reports it (may be negative).
    lasti: i64,
    state: GeneratorState,
    /// Address of the delegate's slot, if the frame is suspended in a
    /// `yield from` / `await`.
    delegate_slot: Option<u64>,
}

/// Reads the generator, coroutine or async generator at `address`.
pub fn read_generator(
    objects: &Objects<'_>,
    codes: &mut Codes,
    address: u64,
) -> Result<Generator, ObjectError> {
    let info = objects.info(address)?;
    let kind = GeneratorKind::from_type_name(&info.type_info.name)
        .ok_or_else(|| invalid(address, format!("type {}", info.type_info.name)))?;
    let layout = objects.layout();
    let o = &layout.offsets;
    let header = read_vec(objects.memory(), address, header_len(layout), MAX_HEADER)?;
    let running_async = kind == GeneratorKind::AsyncGenerator
        && o.generator_running_async
            .is_some_and(|at| field_u8(&header, at) != 0);
    let mut facts = match layout.semantics.frame_kind {
        FrameKind::FrameObject => frame_object_facts(objects, codes, &header, address)?,
        FrameKind::InterpreterFrame => interpreter_frame_facts(objects, codes, &header, address)?,
    };
    if running_async {
        facts.state = GeneratorState::Running;
    }
    let name = o
        .generator_gi_name
        .and_then(|at| objects.reader.unicode(field_u64(&header, at)).ok())
        .unwrap_or_default();
    let qualname = o
        .generator_gi_qualname
        .and_then(|at| objects.reader.unicode(field_u64(&header, at)).ok())
        .unwrap_or_else(|| name.clone());
    let code = codes.get(objects, facts.code);
    let file = code.map(|(c, _)| c.filename.clone()).unwrap_or_default();
    let open = facts.state != GeneratorState::Closed;
    let line = match (open, code) {
        (true, Some((c, lines))) => {
            if facts.lasti < 0 {
                // PyCode_Addr2Line answers co_firstlineno before the first
                // instruction.
                Some(c.first_line)
            } else {
                lines.line(facts.lasti as u32)
            }
        }
        _ => None,
    };
    let awaiting = match facts.delegate_slot {
        Some(slot) => {
            let value = read_u64(objects.memory(), slot)? & !layout.semantics.executable_tag_mask;
            plausible(value).then_some(value)
        }
        None => None,
    };
    let awaiting_type = awaiting.and_then(|a| objects.info(a).ok().map(|i| i.type_info.name));
    Ok(Generator {
        address,
        kind,
        state: facts.state,
        name,
        qualname,
        file,
        code: facts.code,
        frame_address: open.then_some(facts.frame),
        line,
        instruction_offset: open.then_some(facts.lasti),
        awaiting: awaiting_type.as_ref().and(awaiting),
        awaiting_type,
    })
}

/// A generator's frame as the scopes reader takes it (None when closed).
pub fn frame_ref(
    layout: &Layout,
    generator: &Generator,
) -> Option<crate::reading::scopes::FrameRef> {
    let frame = generator.frame_address?;
    let localsplus = match (layout.interpreter_frames, layout.frame_objects) {
        (Some(at), _) => at.localsplus,
        (None, Some(at)) => at.localsplus,
        (None, None) => return None,
    };
    Some(crate::reading::scopes::FrameRef {
        address: frame,
        code: generator.code,
        instruction_offset: generator.instruction_offset.unwrap_or(0).max(0) as u32,
        globals: 0,
        localsplus: frame.wrapping_add(localsplus),
        is_generator: true,
    })
}

/// Bytes of a generator header, with the embedded frame on 3.11+.
fn header_len(layout: &Layout) -> usize {
    let o = &layout.offsets;
    let fields = [
        o.generator_gi_frame,
        o.generator_gi_qualname,
        o.generator_gi_name,
        o.generator_gi_running,
        o.generator_running_async,
        o.generator_gi_frame_state,
    ];
    let mut end = fields.iter().flatten().max().copied().unwrap_or(64) + 8;
    if let Some(iframe) = o.generator_gi_iframe {
        let frame_size = layout.interpreter_frames.map_or(0, |f| f.size);
        end = end.max(iframe + frame_size.max(80));
    }
    (end as usize).min(MAX_HEADER)
}

/// 3.9/3.10: the state from `gi_frame`, `f_lasti`, `gi_running`/`f_state`.
fn frame_object_facts(
    objects: &Objects<'_>,
    codes: &mut Codes,
    header: &[u8],
    address: u64,
) -> Result<FrameFacts, ObjectError> {
    let layout = objects.layout();
    let o = &layout.offsets;
    let frame = field_u64(header, need(o.generator_gi_frame, "gi_frame")?);
    let code_in_gen = o.generator_gi_code.map_or(0, |at| field_u64(header, at));
    if frame == 0 {
        return Ok(FrameFacts {
            frame: 0,
            code: code_in_gen,
            lasti: -1,
            state: GeneratorState::Closed,
            delegate_slot: None,
        });
    }
    if !plausible(frame) {
        return Err(invalid(address, "gi_frame"));
    }
    let lasti_at = need(o.frame_object_f_lasti, "f_lasti")?;
    let code_at = need(o.frame_object_f_code, "f_code")?;
    let frame_len = [
        Some(lasti_at),
        Some(code_at),
        o.frame_object_f_stacktop,
        o.frame_object_f_valuestack,
        o.frame_object_f_stackdepth,
        o.frame_object_f_state,
    ]
    .iter()
    .flatten()
    .max()
    .copied()
    .unwrap_or(0)
        + 8;
    let bytes = read_vec(objects.memory(), frame, frame_len as usize, 512)?;
    let raw_lasti = field_u32(&bytes, lasti_at) as i32;
    let code = field_u64(&bytes, code_at);
    // frame.f_lasti: 3.10 counts code units (Objects/frameobject.c
    // frame_getlasti doubles it, -1 stays -1).
    let lasti = match layout.semantics.instruction {
        InstructionPointer::LastiCodeUnits if raw_lasti >= 0 => i64::from(raw_lasti) * 2,
        _ => i64::from(raw_lasti),
    };
    let running = match (o.generator_gi_running, o.frame_object_f_state) {
        (Some(at), _) => field_u8(header, at) != 0,
        // 3.10: FRAME_EXECUTING == 0 (cpython/frameobject.h).
        (None, Some(at)) => field_u8(&bytes, at) as i8 == 0,
        (None, None) => false,
    };
    let state = if running {
        GeneratorState::Running
    } else if lasti < 0 {
        GeneratorState::Created
    } else {
        GeneratorState::Suspended
    };
    let mut delegate_slot = None;
    if state == GeneratorState::Suspended {
        let next_opcode = codes
            .get(objects, code)
            .and_then(|(c, _)| c.bytecode.get(lasti as usize + 2).copied());
        if o.opcode_yield_from.is_some() && next_opcode.map(u64::from) == o.opcode_yield_from {
            delegate_slot = match (o.frame_object_f_stacktop, o.frame_object_f_stackdepth) {
                // 3.9: f_stacktop[-1] (NULL while running).
                (Some(at), _) => {
                    let top = field_u64(&bytes, at);
                    (top != 0).then(|| top.wrapping_sub(8))
                }
                // 3.10: f_valuestack[f_stackdepth - 1].
                (None, Some(at)) => {
                    let depth = u64::from(field_u32(&bytes, at));
                    let base = o
                        .frame_object_f_valuestack
                        .map_or(0, |v| field_u64(&bytes, v));
                    (depth > 0 && depth < MAX_STACK && base != 0)
                        .then(|| base.wrapping_add((depth - 1) * 8))
                }
                _ => None,
            };
        }
    }
    Ok(FrameFacts {
        frame,
        code,
        lasti,
        state,
        delegate_slot,
    })
}

/// 3.11+: the state from `gi_frame_state`, the place from the embedded
/// `_PyInterpreterFrame`.
fn interpreter_frame_facts(
    objects: &Objects<'_>,
    codes: &mut Codes,
    header: &[u8],
    address: u64,
) -> Result<FrameFacts, ObjectError> {
    let layout = objects.layout();
    let o = &layout.offsets;
    let s = &layout.semantics;
    let states: GeneratorStates = s
        .generator_states
        .ok_or(ObjectError::MissingOffset("gi_frame_state values"))?;
    let iframe_at = need(o.generator_gi_iframe, "gi_iframe")?;
    let raw_state = field_u8(header, need(o.generator_gi_frame_state, "gi_frame_state")?) as i8;
    let frame = address.wrapping_add(iframe_at);
    let frames = layout
        .interpreter_frames
        .ok_or(ObjectError::MissingOffset("f_executable"))?;
    let code = field_u64(header, iframe_at + frames.executable) & !s.executable_tag_mask;
    let instr = field_u64(header, iframe_at + frames.instruction);
    let code_start = code.wrapping_add(frames.code_adaptive);
    // frame.f_lasti (Objects/frameobject.c): the byte offset of
    // prev_instr (3.11/3.12) or instr_ptr (3.13+), -1 when negative.
    let lasti = (instr.wrapping_sub(code_start) as i64).max(-1);
    let state = if raw_state == states.executing {
        GeneratorState::Running
    } else if raw_state >= states.finished_from {
        GeneratorState::Closed
    } else if raw_state == states.created {
        GeneratorState::Created
    } else if raw_state >= states.suspended && raw_state < states.executing {
        GeneratorState::Suspended
    } else {
        return Err(invalid(address, format!("gi_frame_state {raw_state}")));
    };
    let in_yield_from = match states.suspended_yield_from {
        // 3.13+: FRAME_SUSPENDED_YIELD_FROM (3.15's free-threaded "locked"
        // variant sits between it and FRAME_EXECUTING).
        Some(value) => raw_state >= value && raw_state < states.executing,
        // 3.11/3.12 _PyGen_yf: the next instruction is RESUME with oparg
        // >= 2 (resuming after yield from / await).
        None if state == GeneratorState::Suspended => {
            let offset = lasti + 2;
            codes
                .get(objects, code)
                .and_then(|(c, _)| {
                    let opcode = *c.bytecode.get(offset as usize)?;
                    let oparg = *c.bytecode.get(offset as usize + 1)?;
                    Some((u64::from(opcode), oparg))
                })
                .is_some_and(|(opcode, oparg)| {
                    let resume = [
                        o.opcode_resume,
                        o.opcode_resume_quick,
                        o.opcode_instrumented_resume,
                    ];
                    oparg >= 2 && resume.contains(&Some(opcode))
                })
        }
        None => false,
    };
    let delegate_slot = if in_yield_from {
        stack_slot(
            layout,
            header,
            iframe_at,
            frame,
            u64::from(states.yield_from_depth),
        )
    } else {
        None
    };
    Ok(FrameFacts {
        frame,
        code,
        lasti: if state == GeneratorState::Closed {
            -1
        } else {
            lasti
        },
        state,
        delegate_slot,
    })
}

/// Address of the value `depth` entries below the top of an embedded
/// frame's stack: `localsplus[stacktop - depth]` (3.11-3.13) or
/// `stackpointer[-depth]` (3.14+).
fn stack_slot(
    layout: &Layout,
    header: &[u8],
    iframe_at: u64,
    frame: u64,
    depth: u64,
) -> Option<u64> {
    let o = &layout.offsets;
    if let Some(at) = o.interpreter_frame_stackpointer {
        let pointer = field_u64(header, iframe_at + at);
        let base = frame.wrapping_add(o.interpreter_frame_localsplus?);
        let slot = pointer.wrapping_sub(depth * 8);
        return (pointer != 0 && slot >= base && slot - base < MAX_STACK * 8).then_some(slot);
    }
    let top = field_u32(header, iframe_at + o.interpreter_frame_stacktop?) as i32;
    let index = i64::from(top) - depth as i64;
    let localsplus = layout.interpreter_frames?.localsplus;
    (index >= 0 && (index as u64) < MAX_STACK).then(|| {
        frame
            .wrapping_add(localsplus)
            .wrapping_add(index as u64 * 8)
    })
}

/// Address of the generator whose frame a thread's stack shows at
/// `frame_address` (None if the frame is not a generator's).
pub fn generator_of_frame(objects: &Objects<'_>, frame_address: u64) -> Option<u64> {
    let o = &objects.layout().offsets;
    match objects.layout().semantics.frame_kind {
        FrameKind::FrameObject => {
            let gen = read_u64(objects.memory(), frame_address + o.frame_object_f_gen?).ok()?;
            plausible(gen).then_some(gen)
        }
        // The frame is embedded in the generator (gi_iframe).
        FrameKind::InterpreterFrame => Some(frame_address.wrapping_sub(o.generator_gi_iframe?)),
    }
}

/// Whether the object at `address` is a generator, coroutine or async
/// generator.
pub fn is_generator(objects: &Objects<'_>, address: u64) -> bool {
    objects
        .info(address)
        .is_ok_and(|info| GeneratorKind::from_type_name(&info.type_info.name).is_some())
}

/// Reads the generators at `roots` and every generator their delegation
/// chains reach, each once, at most `limit`; unreadable ones are skipped
/// and counted in the returned number.
pub fn read_all(
    objects: &Objects<'_>,
    codes: &mut Codes,
    roots: impl IntoIterator<Item = u64>,
    limit: usize,
) -> (Vec<Generator>, usize) {
    let mut seen = HashSet::new();
    let mut queue: VecDeque<u64> = roots.into_iter().collect();
    let mut out = Vec::new();
    let mut unreadable = 0;
    while let Some(address) = queue.pop_front() {
        if out.len() >= limit {
            break;
        }
        if !seen.insert(address) {
            continue;
        }
        match read_generator(objects, codes, address) {
            Ok(generator) => {
                if let Some(next) = generator.awaiting {
                    if generator
                        .awaiting_type
                        .as_deref()
                        .and_then(GeneratorKind::from_type_name)
                        .is_some()
                    {
                        queue.push_back(next);
                    }
                }
                out.push(generator);
            }
            Err(_) => unreadable += 1,
        }
    }
    (out, unreadable)
}

/// The delegation chain from `start`: `start`, what it awaits, what that
/// awaits..., as long as each link is a generator in `by_address`; cycle
/// safe, at most [`MAX_CHAIN`] links.
pub fn chain<'g>(by_address: &HashMap<u64, &'g Generator>, start: u64) -> Vec<&'g Generator> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut next = Some(start);
    while let Some(address) = next {
        if out.len() >= MAX_CHAIN || !seen.insert(address) {
            break;
        }
        let Some(generator) = by_address.get(&address) else {
            break;
        };
        out.push(*generator);
        next = generator.awaiting;
    }
    out
}

#[cfg(test)]
mod tests {
    //! The 3.14/3.15 paths (no interpreter here) on a generator laid out in
    //! memory by hand: 3.13's struct offsets with the later versions'
    //! state numbering, tagged stack references and `stackpointer`.
    use super::*;
    use crate::process::memory::SnapshotMemory;
    use pydeep_cpython::layouts;

    const GENERATOR: u64 = 0x10_0000;
    const AWAITED: u64 = 0x20_0000;
    const TYPES: u64 = 0x30_0000;

    fn layout(minor: u32) -> Layout {
        let mut offsets = layouts::CPYTHON_3_13;
        // 3.14 replaced stacktop (an index) by stackpointer (a pointer);
        // reuse its slot in the frame header.
        offsets.interpreter_frame_stackpointer = offsets.interpreter_frame_stacktop.take();
        Layout::of_version(minor, offsets).unwrap()
    }

    /// A coroutine suspended in `await` at `state`, whose stack holds
    /// `stack` (tagged words) with `stackpointer` just past it.
    fn memory(layout: &Layout, state: i8, stack: &[u64]) -> SnapshotMemory {
        let o = &layout.offsets;
        let mut memory = SnapshotMemory::new();
        let mut types = vec![0u8; 1024];
        types[512..521].copy_from_slice(b"coroutine");
        let name_at = o.type_tp_name.unwrap() as usize;
        types[name_at..name_at + 8].copy_from_slice(&(TYPES + 512).to_le_bytes());
        memory.add_region(TYPES, types);
        let mut generator = vec![0u8; 1024];
        let mut put = |at: u64, value: u64| {
            generator[at as usize..at as usize + 8].copy_from_slice(&value.to_le_bytes());
        };
        put(o.object_ob_type.unwrap(), TYPES);
        let iframe = o.generator_gi_iframe.unwrap();
        let localsplus = iframe + o.interpreter_frame_localsplus.unwrap();
        for (i, word) in stack.iter().enumerate() {
            put(localsplus + i as u64 * 8, *word);
        }
        put(
            iframe + o.interpreter_frame_stackpointer.unwrap(),
            GENERATOR + localsplus + stack.len() as u64 * 8,
        );
        generator[o.generator_gi_frame_state.unwrap() as usize] = state as u8;
        memory.add_region(GENERATOR, generator);
        let mut awaited = vec![0u8; 64];
        awaited[8..16].copy_from_slice(&TYPES.to_le_bytes());
        memory.add_region(AWAITED, awaited);
        memory
    }

    fn read(minor: u32, state: i8, stack: &[u64]) -> Generator {
        let layout = layout(minor);
        let memory = memory(&layout, state, stack);
        let objects = Objects::new(&memory, &layout);
        read_generator(&objects, &mut Codes::default(), GENERATOR).unwrap()
    }

    #[test]
    fn on_3_14_a_coroutine_suspended_in_await_delegates_to_the_untagged_stack_top() {
        let generator = read(14, -1, &[0x1234_5670, AWAITED | 1]);
        assert_eq!(generator.kind, GeneratorKind::Coroutine);
        assert_eq!(generator.state, GeneratorState::Suspended);
        assert_eq!(generator.awaiting, Some(AWAITED));
        assert_eq!(generator.awaiting_type.as_deref(), Some("coroutine"));
        let plain = read(14, -2, &[0x1234_5670, AWAITED | 1]);
        assert_eq!(plain.state, GeneratorState::Suspended);
        assert_eq!(plain.awaiting, None, "FRAME_SUSPENDED is a plain yield");
    }

    #[test]
    fn on_3_15_the_awaited_object_is_below_a_null_top() {
        let generator = read(15, 2, &[AWAITED | 1, 1]);
        assert_eq!(generator.state, GeneratorState::Suspended);
        assert_eq!(generator.awaiting, Some(AWAITED));
        assert_eq!(read(15, 0, &[]).state, GeneratorState::Created);
        assert_eq!(read(15, 4, &[]).state, GeneratorState::Running);
        let closed = read(15, 5, &[]);
        assert_eq!(closed.state, GeneratorState::Closed);
        assert_eq!(closed.frame_address, None);
        assert_eq!(read(14, 1, &[]).state, GeneratorState::Closed);
    }
}
