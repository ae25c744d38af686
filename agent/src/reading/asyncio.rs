//! `pydeep dump --async`: the generators, coroutines and async generators
//! of a paused target, and its asyncio task tree (each task's name, state,
//! coroutine stack, what it awaits and which tasks await it: the view
//! `python -m asyncio pstree` gives in-process on 3.14).
//!
//! Where things are found:
//!
//! * **Generators**: those whose frames are on a thread's stack (running),
//!   those bound to a local, cell or free variable of a frame (directly or
//!   as an item of a list, tuple, set or dict value), the coroutines of
//!   every task, and everything their `yield from` / `await` chains reach.
//!   With `all`, every generator-like object in the GC lists.
//! * **Tasks**: by walking the GC lists ([`crate::reading::heap::walk_objects`]) for
//!   objects whose type is `_asyncio.Task`, the pure-Python
//!   `asyncio.tasks.Task` (`_PyTask`) or a subclass of either. Asyncio's
//!   own registries changed in every version (3.9-3.11 the `_all_tasks`
//!   WeakSet, 3.12/3.13 `_scheduled_tasks` plus the `_eager_tasks` set,
//!   3.14 per-thread linked lists inside the C module's state) and miss
//!   tasks of other loops or created by third-party task factories; the
//!   GC lists hold every task of every loop and thread in every version,
//!   at the cost of one walk of the heap (1.4-4.3 million objects/s,
//!   notes/snapshots.md).
//!
//! A task awaits its `_fut_waiter` (`task_fut_waiter`): another task, a
//! `gather()` (`_GatheringFuture`, whose `_children` are the gathered tasks)
//! or any future. `awaited_by` is the inverse of those edges.

use std::collections::HashMap;

use pydeep_format::proto;

use crate::process::memory::{read_u64, read_vec};
use crate::reading::cpython::objects::ObjectError;
use crate::reading::cpython::tasks::{task_object_offsets, TaskObjectOffsets};
use crate::reading::generators::{
    chain, generator_of_frame, read_all, Codes, Generator, GeneratorKind,
};
use crate::reading::heap::{walk_objects, HeapError};
use crate::reading::objects::{plausible, Kind, Objects};
use crate::reading::scopes::{frame_variables, FrameRef};
use crate::reading::target::{ReadError, Target};
use crate::reading::walker::{FrameSample, ThreadSample};

/// What [`collect`] reads. Defaults: stacks and tasks, no heap-wide
/// generator search, at most 100,000 generators and 100,000 tasks, 1000
/// items looked at per container variable.
#[derive(Debug, Clone, Copy)]
pub struct AsyncOptions {
    /// Every generator-like object in the GC lists, not only those
    /// reachable from the stacks and tasks (`--all`).
    pub all: bool,
    /// Find asyncio tasks (a walk of the GC lists).
    pub tasks: bool,
    /// Most generators reported.
    pub max_generators: usize,
    /// Most tasks reported.
    pub max_tasks: usize,
    /// Items of a list/tuple/set/dict variable looked at for generators.
    pub max_container_items: usize,
}

impl Default for AsyncOptions {
    fn default() -> Self {
        AsyncOptions {
            all: false,
            tasks: true,
            max_generators: 100_000,
            max_tasks: 100_000,
            max_container_items: 1000,
        }
    }
}

/// An object a task waits on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Awaited {
    /// `id()`.
    pub address: u64,
    /// `type(x).__name__`.
    pub type_name: String,
}

/// One asyncio task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// `id(task)`.
    pub address: u64,
    /// `type(task).__name__`.
    pub type_name: String,
    /// "c" (`_asyncio.Task` and subclasses) or "python"
    /// (`asyncio.tasks._PyTask` and subclasses).
    pub implementation: &'static str,
    /// `task.get_name()`.
    pub name: String,
    /// "pending", "cancelled" or "finished" (`task._state` lowercased);
    /// `all_tasks()` lists the pending ones.
    pub state: String,
    /// `id(task.get_coro())`; null if none.
    pub coroutine: Option<u64>,
    /// The coroutine and what it awaits, down the `cr_await` chain, as
    /// generator addresses: outermost first.
    pub coroutine_stack: Vec<u64>,
    /// `task._fut_waiter`; null if none.
    pub awaiting: Option<Awaited>,
    /// Tasks it waits for: its `_fut_waiter` if that is a task, the tasks
    /// among a `gather()`'s `_children`.
    pub awaiting_tasks: Vec<u64>,
    /// Tasks waiting for it (the inverse of `awaiting_tasks`).
    pub awaited_by: Vec<u64>,
    /// Its coroutine is executing on a thread (`asyncio.current_task()` of
    /// that thread's loop is this task).
    pub running: bool,
}

/// Generators and tasks of one paused moment.
#[derive(Debug, Clone, Default)]
pub struct AsyncSnapshot {
    /// Every generator, coroutine and async generator found.
    pub generators: Vec<Generator>,
    /// Every asyncio task found.
    pub tasks: Vec<Task>,
    /// Objects visited in the GC lists (0 if they were not walked).
    pub heap_objects: u64,
    /// What could not be read.
    pub warnings: Vec<String>,
}

/// How a type relates to asyncio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TaskImplementation {
    C,
    Python,
}

/// Reads generators and tasks of a target the caller has paused.
/// `frames` are the frames of each thread ([`crate::reading::scopes::thread_frames`]);
/// `runtime_address` is `_PyRuntime` ([`crate::Target::runtime_address`]).
pub fn collect(
    objects: &Objects<'_>,
    runtime_address: u64,
    frames: &[Vec<FrameRef>],
    options: &AsyncOptions,
) -> AsyncSnapshot {
    let mut codes = Codes::default();
    let mut snapshot = AsyncSnapshot::default();
    let mut roots = stack_roots(objects, &mut codes, frames, options);
    let mut task_addresses = Vec::new();
    if options.tasks || options.all {
        let mut types: HashMap<u64, (Option<TaskImplementation>, bool)> = HashMap::new();
        let mut heap_generators = Vec::new();
        let walk = walk_objects(objects, runtime_address, &mut |object, object_type, _| {
            let (task, generator) = *types.entry(object_type).or_insert_with(|| {
                let generator = objects
                    .type_info(object_type)
                    .is_ok_and(|t| GeneratorKind::from_type_name(&t.name).is_some());
                (task_implementation(objects, object_type), generator)
            });
            if let Some(implementation) = task {
                if task_addresses.len() < options.max_tasks {
                    task_addresses.push((object, implementation));
                }
            } else if generator && options.all && heap_generators.len() < options.max_generators {
                heap_generators.push(object);
            }
        });
        match walk {
            Ok(stats) => {
                snapshot.heap_objects = stats.objects;
                if stats.truncated {
                    snapshot
                        .warnings
                        .push("the GC lists were not walked to the end".into());
                }
            }
            Err(HeapError::Unsupported(version)) => snapshot.warnings.push(format!(
                "CPython {version}: the GC lists could not be read, so tasks and \
                 heap generators are missing"
            )),
            Err(e) => snapshot
                .warnings
                .push(format!("walking the GC lists failed: {e}")),
        }
        if !options.tasks {
            task_addresses.clear();
        }
        roots.extend(heap_generators);
    }
    let mut tasks = Vec::new();
    for (address, implementation) in task_addresses {
        match read_task(objects, address, implementation) {
            Ok(task) => {
                roots.extend(task.coroutine);
                tasks.push(task);
            }
            Err(e) => snapshot
                .warnings
                .push(format!("task at 0x{address:x} unreadable: {e}")),
        }
    }
    let (generators, unreadable) = read_all(objects, &mut codes, roots, options.max_generators);
    if unreadable > 0 {
        snapshot
            .warnings
            .push(format!("{unreadable} generator objects unreadable"));
    }
    link_tasks(objects, &mut codes, &mut tasks, &generators);
    snapshot.generators = generators;
    snapshot.tasks = tasks;
    snapshot
}

/// Generators running on the stacks and bound to frames' variables.
fn stack_roots(
    objects: &Objects<'_>,
    codes: &mut Codes,
    frames: &[Vec<FrameRef>],
    options: &AsyncOptions,
) -> Vec<u64> {
    let mut roots = Vec::new();
    let is_generator = |address: u64| {
        objects
            .info(address)
            .is_ok_and(|info| GeneratorKind::from_type_name(&info.type_info.name).is_some())
    };
    for frame in frames.iter().flatten() {
        if frame.is_generator {
            if let Some(generator) = generator_of_frame(objects, frame.address) {
                if is_generator(generator) {
                    roots.push(generator);
                }
            }
        }
        let Some((code, _)) = codes.get(objects, frame.code) else {
            continue;
        };
        let Ok(variables) = frame_variables(objects, frame, code) else {
            continue;
        };
        for variable in variables {
            let value = variable.value;
            let Ok(info) = objects.info(value) else {
                continue;
            };
            if GeneratorKind::from_type_name(&info.type_info.name).is_some() {
                roots.push(value);
                continue;
            }
            let limit = options.max_container_items;
            let items: Vec<u64> = match info.type_info.kind {
                Kind::List | Kind::Tuple => objects
                    .sequence_items(value, info.type_info.kind, limit)
                    .map(|(items, _)| items)
                    .unwrap_or_default(),
                Kind::Set | Kind::FrozenSet => objects
                    .set_items(value, limit)
                    .map(|(items, _)| items)
                    .unwrap_or_default(),
                Kind::Dict => objects
                    .dict_items(value, limit)
                    .map(|(items, _)| items.into_iter().map(|(_, v)| v).collect())
                    .unwrap_or_default(),
                _ => Vec::new(),
            };
            roots.extend(items.into_iter().filter(|&item| is_generator(item)));
        }
    }
    roots
}

/// Whether instances of the type at `type_address` are tasks, and of which
/// implementation: the type or one of its bases (`tp_base` chain) is
/// `_asyncio.Task`, or the class `Task` of module `asyncio.tasks`.
fn task_implementation(objects: &Objects<'_>, type_address: u64) -> Option<TaskImplementation> {
    let mut current = type_address;
    for _ in 0..32 {
        if current == 0 {
            return None;
        }
        let info = objects.type_info(current).ok()?;
        // TypeInfo.name is tp_name after its last dot: only types named
        // Task need a second look (the walk meets hundreds of types).
        if info.name == "Task" {
            let full_name = objects.reader.type_name(current).ok()?;
            if full_name == "_asyncio.Task" {
                return Some(TaskImplementation::C);
            }
            if full_name == "Task"
                && type_module(objects, current).as_deref() == Some("asyncio.tasks")
            {
                return Some(TaskImplementation::Python);
            }
        }
        current = info.base;
    }
    None
}

/// `__module__` of a heap type (from its dict).
fn type_module(objects: &Objects<'_>, type_address: u64) -> Option<String> {
    let dict_at = objects.layout().offsets.type_tp_dict?;
    let dict = read_u64(objects.memory(), type_address + dict_at).ok()?;
    let module = objects.reader.dict_get_str(dict, "__module__").ok()??;
    objects.reader.unicode(module).ok()
}

fn invalid(address: u64, detail: impl Into<String>) -> ObjectError {
    ObjectError::Invalid {
        address,
        expected: "asyncio task",
        detail: detail.into(),
    }
}

/// Reads one task.
fn read_task(
    objects: &Objects<'_>,
    address: u64,
    implementation: TaskImplementation,
) -> Result<Task, ObjectError> {
    let info = objects.info(address)?;
    let (name, state, coroutine, waiter) = match implementation {
        TaskImplementation::C => {
            let offsets = task_object_offsets(objects.layout())
                .ok_or(ObjectError::MissingOffset("TaskObj layout"))?;
            read_c_task(objects, address, &offsets)?
        }
        TaskImplementation::Python => {
            let attribute = |name: &str| objects.reader.instance_attribute(address, name);
            let name = match attribute("_name")? {
                Some(name) => objects.reader.unicode(name)?,
                None => String::new(),
            };
            // Until it finishes a task has no `_state` of its own: the
            // class attribute `_state = _PENDING` (asyncio/futures.py) shows.
            let state = match attribute("_state")? {
                Some(state) => objects.reader.unicode(state)?.to_lowercase(),
                None => "pending".to_string(),
            };
            let coroutine = attribute("_coro")?;
            let waiter = attribute("_fut_waiter")?;
            (name, state, coroutine, waiter)
        }
    };
    let none = |a: &Option<u64>| {
        a.filter(|&a| {
            plausible(a)
                && objects
                    .info(a)
                    .is_ok_and(|i| i.type_info.kind != Kind::None)
        })
    };
    let coroutine = none(&coroutine);
    let awaiting = none(&waiter).map(|address| Awaited {
        address,
        type_name: objects
            .info(address)
            .map(|i| i.type_info.name)
            .unwrap_or_default(),
    });
    Ok(Task {
        address,
        type_name: info.type_info.name,
        implementation: match implementation {
            TaskImplementation::C => "c",
            TaskImplementation::Python => "python",
        },
        name,
        state,
        coroutine,
        coroutine_stack: Vec::new(),
        awaiting,
        awaiting_tasks: Vec::new(),
        awaited_by: Vec::new(),
        running: false,
    })
}

type TaskFields = (String, String, Option<u64>, Option<u64>);

/// A C `TaskObj`, validated: the loop and the coroutine must be readable
/// objects, the state 0-2, the name a str (or an int counter, 3.12+).
fn read_c_task(
    objects: &Objects<'_>,
    address: u64,
    offsets: &TaskObjectOffsets,
) -> Result<TaskFields, ObjectError> {
    let len = (offsets.task_name + 8) as usize;
    let bytes = read_vec(objects.memory(), address, len, 512)?;
    let word = |at: u64| crate::process::memory::field_u64(&bytes, at);
    let state = crate::process::memory::field_u32(&bytes, offsets.fut_state);
    let state = match state {
        0 => "pending",
        1 => "cancelled",
        2 => "finished",
        other => {
            return Err(invalid(
                address,
                format!("fut_state {other} (layout mismatch?)"),
            ))
        }
    };
    let loop_object = word(offsets.fut_loop);
    if loop_object != 0 && objects.info(loop_object).is_err() {
        return Err(invalid(
            address,
            "task_loop is not an object (layout mismatch?)",
        ));
    }
    let coroutine = word(offsets.task_coro);
    if coroutine != 0 && objects.info(coroutine).is_err() {
        return Err(invalid(
            address,
            "task_coro is not an object (layout mismatch?)",
        ));
    }
    let name_object = word(offsets.task_name);
    let name = if name_object == 0 {
        String::new()
    } else {
        let name_info = objects.info(name_object)?;
        match name_info.type_info.kind {
            Kind::Str => objects.reader.unicode(name_object)?,
            // 3.12+ keeps the counter until get_name() (Modules/_asynciomodule.c
            // TaskObj_get_name: "Task-%S").
            Kind::Int => format!("Task-{}", objects.reader.int(name_object)?),
            _ => {
                return Err(invalid(
                    address,
                    format!(
                        "task_name is a {} (layout mismatch?)",
                        name_info.type_info.name
                    ),
                ))
            }
        }
    };
    let waiter = word(offsets.task_fut_waiter);
    Ok((
        name,
        state.to_string(),
        (coroutine != 0).then_some(coroutine),
        (waiter != 0).then_some(waiter),
    ))
}

/// The tasks of a `TaskGroup` whose exit the coroutine stack is waiting
/// in: a link running `TaskGroup.__aexit__` (3.11-3.13) or `_aexit` (3.14)
/// of asyncio/taskgroups.py has the group as its `self`, whose `_tasks`
/// set holds the children still running. The parent's `_fut_waiter` is the
/// group's private `_on_completed_fut`, so without this the children
/// would hang off nothing (3.14 records the edge itself in `awaited_by`).
fn task_group_children(
    objects: &Objects<'_>,
    codes: &mut Codes,
    stack: &[u64],
    by_address: &HashMap<u64, &Generator>,
) -> Vec<u64> {
    for address in stack {
        let Some(generator) = by_address.get(address) else {
            continue;
        };
        let is_exit = matches!(
            generator.qualname.as_str(),
            "TaskGroup.__aexit__" | "TaskGroup._aexit"
        ) && generator.file.ends_with("taskgroups.py");
        if !is_exit {
            continue;
        }
        let Some(frame) = crate::reading::generators::frame_ref(objects.layout(), generator) else {
            continue;
        };
        let Some((code, _)) = codes.get(objects, generator.code) else {
            continue;
        };
        let group = frame_variables(objects, &frame, code)
            .unwrap_or_default()
            .into_iter()
            .find(|v| v.name == "self" && v.value != 0)
            .map(|v| v.value);
        let Some(group) = group else {
            continue;
        };
        let Ok(Some(set)) = objects.reader.instance_attribute(group, "_tasks") else {
            continue;
        };
        return objects
            .set_items(set, 100_000)
            .map(|(items, _)| items)
            .unwrap_or_default();
    }
    Vec::new()
}

/// Fills each task's coroutine stack, the tasks it awaits and those that
/// await it.
fn link_tasks(
    objects: &Objects<'_>,
    codes: &mut Codes,
    tasks: &mut [Task],
    generators: &[Generator],
) {
    let by_address: HashMap<u64, &Generator> = generators.iter().map(|g| (g.address, g)).collect();
    let index: HashMap<u64, usize> = tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.address, i))
        .collect();
    let mut edges = Vec::new();
    for (i, task) in tasks.iter_mut().enumerate() {
        if let Some(coroutine) = task.coroutine {
            task.coroutine_stack = chain(&by_address, coroutine)
                .iter()
                .map(|g| g.address)
                .collect();
            task.running = by_address
                .get(&coroutine)
                .is_some_and(|g| g.state == crate::reading::generators::GeneratorState::Running);
        }
        let Some(awaiting) = &task.awaiting else {
            continue;
        };
        let mut awaited = Vec::new();
        if index.contains_key(&awaiting.address) {
            awaited.push(awaiting.address);
        } else if awaiting.type_name == "_GatheringFuture" {
            // asyncio.tasks._GatheringFuture keeps the gathered futures in
            // its `_children` list.
            let children = objects
                .reader
                .instance_attribute(awaiting.address, "_children")
                .ok()
                .flatten()
                .and_then(|list| objects.sequence_items(list, Kind::List, 100_000).ok())
                .map(|(items, _)| items)
                .unwrap_or_default();
            awaited.extend(children.into_iter().filter(|c| index.contains_key(c)));
        }
        if awaited.is_empty() {
            let children = task_group_children(objects, codes, &task.coroutine_stack, &by_address);
            awaited.extend(children.into_iter().filter(|c| index.contains_key(c)));
        }
        for &child in &awaited {
            edges.push((i, child));
        }
        task.awaiting_tasks = awaited;
    }
    for (waiter, child) in edges {
        let waiter_address = tasks[waiter].address;
        if let Some(&c) = index.get(&child) {
            if !tasks[c].awaited_by.contains(&waiter_address) {
                tasks[c].awaited_by.push(waiter_address);
            }
        }
    }
}

/// Reads generators and tasks of `target`, which the caller has paused
/// ([`Target::pause`]); `threads` are its samples of the same pause.
pub fn collect_from_target(
    target: &Target,
    threads: &[ThreadSample],
    options: &AsyncOptions,
) -> Result<AsyncSnapshot, ReadError> {
    // The caller paused the target: each page needs reading only once.
    let memory = crate::process::page_cache::PageCache::new(target.memory());
    let objects = Objects::new(&memory, target.layout());
    let frames: Vec<Vec<FrameRef>> = threads
        .iter()
        .map(|t| target.thread_frames(t, 4096))
        .collect();
    Ok(collect(
        &objects,
        target.runtime_address(),
        &frames,
        options,
    ))
}

/// The recording's ids for what [`to_proto`] references.
pub trait Interner {
    /// The id of string `text`.
    fn string(&mut self, text: &str) -> u64;
    /// The id of a frame (`FrameDef`).
    fn frame(&mut self, frame: &FrameSample) -> u64;
    /// The id of a stack of frame ids, outermost first (`StackDef`).
    fn stack(&mut self, frames: &[u64]) -> u64;
}

/// The place of a generator as a frame (None when closed); f_lasti -1
/// (not started, 3.9/3.10) becomes offset 0, as the walker reports it.
pub fn generator_frame(generator: &Generator) -> Option<FrameSample> {
    generator.frame_address?;
    Some(FrameSample {
        code_address: generator.code,
        instruction_offset: generator.instruction_offset.unwrap_or(0).max(0) as u32,
        is_generator: true,
        is_shim: false,
    })
}

/// The snapshot as the schema's `GeneratorInfo` and `AsyncTaskInfo`
/// records (proto/pydeep.proto), with strings, frames and stacks interned
/// by `interner`. A task's stack is its coroutine stack, outermost first.
pub fn to_proto(
    snapshot: &AsyncSnapshot,
    interner: &mut dyn Interner,
) -> (Vec<proto::GeneratorInfo>, Vec<proto::AsyncTaskInfo>) {
    use crate::reading::generators::GeneratorState;
    let mut frames: HashMap<u64, u64> = HashMap::new();
    let mut generators = Vec::new();
    for generator in &snapshot.generators {
        let frame = generator_frame(generator).map_or(0, |f| interner.frame(&f));
        frames.insert(generator.address, frame);
        generators.push(proto::GeneratorInfo {
            address: generator.address,
            kind: match generator.kind {
                GeneratorKind::Generator => proto::GeneratorKind::Generator,
                GeneratorKind::Coroutine => proto::GeneratorKind::Coroutine,
                GeneratorKind::AsyncGenerator => proto::GeneratorKind::AsyncGenerator,
            } as i32,
            state: match generator.state {
                GeneratorState::Created => proto::GeneratorState::StateCreated,
                GeneratorState::Suspended => proto::GeneratorState::StateSuspended,
                GeneratorState::Running => proto::GeneratorState::StateRunning,
                GeneratorState::Closed => proto::GeneratorState::StateClosed,
            } as i32,
            qualname: interner.string(&generator.qualname),
            frame,
            awaiting: generator.awaiting.unwrap_or(0),
            awaiting_type: generator
                .awaiting_type
                .as_deref()
                .map_or(0, |t| interner.string(t)),
            locals: Vec::new(),
            name: interner.string(&generator.name),
            file: interner.string(&generator.file),
        });
    }
    let tasks = snapshot
        .tasks
        .iter()
        .map(|task| {
            let stack_frames: Vec<u64> = task
                .coroutine_stack
                .iter()
                .filter_map(|g| frames.get(g).copied())
                .filter(|&f| f != 0)
                .collect();
            proto::AsyncTaskInfo {
                address: task.address,
                name: task.name.clone(),
                coroutine: task.coroutine.unwrap_or(0),
                stack: interner.stack(&stack_frames),
                awaited_by: task.awaited_by.clone(),
                done: task.state != "pending",
                awaiting: task.awaiting.as_ref().map_or(0, |a| a.address),
                awaiting_type: task
                    .awaiting
                    .as_ref()
                    .map_or(0, |a| interner.string(&a.type_name)),
                awaiting_tasks: task.awaiting_tasks.clone(),
                state: task.state.clone(),
                coroutine_stack: task.coroutine_stack.clone(),
                running: task.running,
                type_name: interner.string(&task.type_name),
                implementation: task.implementation.to_string(),
            }
        })
        .collect();
    (generators, tasks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reading::generators::GeneratorState;

    #[derive(Default)]
    struct Ids {
        strings: Vec<String>,
        frames: Vec<FrameSample>,
        stacks: Vec<Vec<u64>>,
    }

    impl Interner for Ids {
        fn string(&mut self, text: &str) -> u64 {
            self.strings.push(text.to_string());
            self.strings.len() as u64
        }
        fn frame(&mut self, frame: &FrameSample) -> u64 {
            self.frames.push(*frame);
            100 + self.frames.len() as u64
        }
        fn stack(&mut self, frames: &[u64]) -> u64 {
            self.stacks.push(frames.to_vec());
            1000 + self.stacks.len() as u64
        }
    }

    fn generator(address: u64, state: GeneratorState, awaiting: Option<u64>) -> Generator {
        Generator {
            address,
            kind: GeneratorKind::Coroutine,
            state,
            name: "f".into(),
            qualname: format!("f{address}"),
            file: "x.py".into(),
            code: 0x500,
            frame_address: (state != GeneratorState::Closed).then_some(address + 64),
            line: Some(3),
            instruction_offset: Some(if state == GeneratorState::Created {
                -1
            } else {
                12
            }),
            awaiting,
            awaiting_type: awaiting.map(|_| "coroutine".to_string()),
        }
    }

    #[test]
    fn a_task_becomes_records_whose_stack_is_its_coroutine_chain_outermost_first() {
        let snapshot = AsyncSnapshot {
            generators: vec![
                generator(0x10, GeneratorState::Suspended, Some(0x20)),
                generator(0x20, GeneratorState::Suspended, None),
                generator(0x30, GeneratorState::Closed, None),
                generator(0x40, GeneratorState::Created, None),
            ],
            tasks: vec![Task {
                address: 0x90,
                type_name: "Task".into(),
                implementation: "c",
                name: "main".into(),
                state: "pending".into(),
                coroutine: Some(0x10),
                coroutine_stack: vec![0x10, 0x20],
                awaiting: Some(Awaited {
                    address: 0x99,
                    type_name: "Future".into(),
                }),
                awaiting_tasks: vec![],
                awaited_by: vec![0x91],
                running: false,
            }],
            heap_objects: 0,
            warnings: vec![],
        };
        let mut ids = Ids::default();
        let (generators, tasks) = to_proto(&snapshot, &mut ids);
        assert_eq!(generators.len(), 4);
        assert_eq!(generators[0].frame, 101);
        assert_eq!(generators[0].awaiting, 0x20);
        assert_eq!(generators[2].frame, 0, "a closed generator has no frame");
        assert_eq!(
            generators[2].state,
            proto::GeneratorState::StateClosed as i32
        );
        assert_eq!(ids.frames[2].instruction_offset, 0, "f_lasti -1 becomes 0");
        assert_eq!(ids.frames[0].instruction_offset, 12);
        assert_eq!(ids.stacks, vec![vec![101, 102]]);
        assert_eq!(tasks[0].stack, 1001);
        assert_eq!(tasks[0].awaiting, 0x99);
        assert_eq!(ids.strings[tasks[0].awaiting_type as usize - 1], "Future");
        assert!(!tasks[0].done);
        assert_eq!(tasks[0].awaited_by, vec![0x91]);
    }
}
