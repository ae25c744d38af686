//! Deep snapshots inside a recording (`--snapshot-every`, `--heap-every`):
//! the target is paused, every thread's frames are read with (when asked)
//! their variables and the objects they reach, and/or the GC lists are
//! counted by type, with the same readers as `objects` and `heap`; `pydeep
//! dump` and `pydeep heap` are such snapshots, `pydeep objects` one
//! holding the graph of one root ([`take_graph`]), recorded into memory
//! ([`crate::cli::live_views::LiveRecording`]). [`take`] reads; [`to_record`] turns what was read into a
//! `Snapshot` record whose threads, stacks, frames and strings are the
//! recording's own interned ids, so a viewer resolves them like samples.

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

use pydeep_format::proto;

use crate::process::memory::read_vec;
use crate::process::page_cache::PageCache;
use crate::reading::asyncio::{collect, to_proto, AsyncOptions, AsyncSnapshot, Interner};
use crate::reading::cpython::code::CodeFingerprint;
use crate::reading::cpython::objects::ObjectReader;
use crate::reading::graph::{walk_from, Graph, GraphOptions};
use crate::reading::heap::{heap_summary, HeapSummary};
use crate::reading::objects::{Objects, Rendering};
use crate::reading::scopes::{
    frame_globals, frame_variables_in, locals_layout, thread_frames, thread_frames_whole, Binding,
    FrameRef, LocalsLayout, Variable,
};
use crate::reading::target::{ReadError, Target};
use crate::reading::values::{ReadValue, Values};
use crate::recording::recorder::{CodeSource, Recorder};
use crate::{FrameSample, PythonVersion, ThreadSample};

/// What one snapshot reads. Defaults: stacks only.
#[derive(Debug, Clone, Copy)]
pub struct SnapshotOptions {
    /// Read every thread's frames (scopes).
    pub scopes: bool,
    /// Read each frame's variables with their values, and the objects they
    /// reach (values only when asked: `--snapshot-locals`).
    pub values: bool,
    /// Read module globals too (`--snapshot-globals`): each module's once
    /// per snapshot, on the outermost frame that uses them.
    pub globals: bool,
    /// Most globals read per module (default 200).
    pub max_globals: usize,
    /// Count the GC-tracked objects by type.
    pub heap: bool,
    /// Look for generators and coroutines reachable from the stacks (with
    /// scopes; on for every scopes snapshot of a recording, `dump --async`).
    pub generators: bool,
    /// Every generator-like object in the GC lists, not only those
    /// reachable from the stacks and tasks (`dump --async --all`).
    pub all_generators: bool,
    /// Find asyncio tasks too (a walk of the GC lists).
    pub tasks: bool,
    /// Deepest stack read per thread (default 4096).
    pub max_depth: usize,
    /// Most objects of the graph from the variables (default 200; 0: none).
    pub max_objects: usize,
    /// References followed from each variable (default 1).
    pub object_depth: usize,
    /// Bounds of rendered values (default: `pydeep dump`'s, 200
    /// characters of a string, 10 items, 2 levels, 1000 characters).
    pub rendering: Rendering,
}

impl Default for SnapshotOptions {
    fn default() -> Self {
        SnapshotOptions {
            scopes: true,
            values: false,
            globals: false,
            max_globals: 200,
            heap: false,
            generators: true,
            all_generators: false,
            tasks: false,
            max_depth: 4096,
            max_objects: 200,
            object_depth: 1,
            // The bounds of `pydeep dump`: one rendering of values.
            rendering: Rendering::default(),
        }
    }
}

/// One variable as read.
#[derive(Debug, Clone)]
pub struct TakenVariable {
    /// Its name.
    pub name: String,
    /// How it is bound.
    pub binding: Binding,
    /// A parameter of the function.
    pub is_argument: bool,
    /// The cell holding it (cell and free variables), 0 otherwise.
    pub cell: u64,
    /// Its value, None when unbound.
    pub value: Option<ReadValue>,
}

impl TakenVariable {
    /// `variable` with its value read into `values` (the target paused).
    fn read(variable: Variable, objects: &Objects<'_>, values: &mut Values) -> TakenVariable {
        TakenVariable {
            value: values.read(objects, &variable.name, variable.value),
            name: variable.name,
            binding: variable.binding,
            is_argument: variable.is_argument,
            cell: variable.cell,
        }
    }
}

/// One frame as read, innermost first.
#[derive(Debug, Clone)]
pub struct TakenFrame {
    /// Code object and instruction, as the sampler records frames.
    pub frame: FrameSample,
    /// Its address in the target.
    pub address: u64,
    /// Variables in `localsplus` order, then module globals (empty unless
    /// values or globals were asked).
    pub variables: Vec<TakenVariable>,
    /// With globals asked: the frame that lists this frame's module
    /// globals, when not this one (0 otherwise).
    pub globals_listed_at: u64,
}

/// One thread as read.
#[derive(Debug, Clone)]
pub struct TakenThread {
    /// The thread's identity and state (its `frames` are not used).
    pub sample: ThreadSample,
    /// Its frames, innermost first.
    pub frames: Vec<TakenFrame>,
}

/// A snapshot as read from the target, before it is interned.
#[derive(Debug, Clone, Default)]
pub struct Taken {
    /// CLOCK_MONOTONIC when the pause began.
    pub clock_ns: u64,
    /// How long the target was stopped (pause and resume included).
    pub pause: Duration,
    /// Every thread (when scopes were asked).
    pub threads: Vec<TakenThread>,
    /// Objects reached from the variables (when values were asked).
    pub graph: Option<Graph>,
    /// Objects by type (when the heap was asked).
    pub heap: Option<HeapSummary>,
    /// Generators, coroutines and (when asked) asyncio tasks.
    pub asynchronous: Option<AsyncSnapshot>,
    /// With values asked: the variables of each generator's frame
    /// (suspended or created), by the generator's address.
    pub generator_locals: HashMap<u64, Vec<TakenVariable>>,
    /// What was asked: variables (values), module globals.
    pub asked: SnapshotOptions,
    /// Limits hit and what could not be read.
    pub warnings: Vec<String>,
    /// The fingerprint of each frame's code object, read in the pause:
    /// the sampler revalidates the target's cached code objects with them
    /// ([`Target::revalidate_codes`]) before resolving the frames, so they
    /// stay named when the target ends (or the object is freed) between
    /// the release and the resolution (`sampled::Sampled::snapshot`).
    pub code_fingerprints: Vec<(u64, CodeFingerprint)>,
}

impl Taken {
    /// The code object address of every frame it holds (threads' and
    /// generators'), to be resolved before it is recorded
    /// ([`crate::recording::codes`]).
    pub fn code_addresses(&self) -> Vec<u64> {
        let generators = self
            .asynchronous
            .iter()
            .flat_map(|found| &found.generators)
            .filter_map(crate::reading::asyncio::generator_frame);
        self.threads
            .iter()
            .flat_map(|t| &t.frames)
            .map(|f| f.frame.code_address)
            .chain(generators.map(|frame| frame.code_address))
            .collect()
    }
}

/// What a snapshot held, for a summary or a control reply.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SnapshotReport {
    /// Threads in the snapshot.
    pub threads: usize,
    /// Frames read.
    pub frames: usize,
    /// Variables read.
    pub variables: usize,
    /// Objects counted (with `heap`).
    pub heap_objects: u64,
    /// Whether the heap was counted.
    #[serde(skip)]
    pub heap: bool,
    /// How long the target was paused, in milliseconds.
    pub pause_ms: f64,
    /// What could not be read.
    pub warnings: Vec<String>,
}

impl SnapshotReport {
    /// What `taken` holds.
    pub fn of(taken: &Taken) -> SnapshotReport {
        SnapshotReport {
            threads: taken.threads.len(),
            frames: taken.threads.iter().map(|t| t.frames.len()).sum(),
            variables: taken
                .threads
                .iter()
                .flat_map(|t| &t.frames)
                .map(|f| f.variables.len())
                .sum(),
            heap_objects: taken.heap.as_ref().map_or(0, |h| h.objects),
            heap: taken.heap.is_some(),
            pause_ms: taken.pause.as_secs_f64() * 1e3,
            warnings: taken.warnings.clone(),
        }
    }

    /// How long the target was paused.
    pub fn pause(&self) -> Duration {
        Duration::from_secs_f64(self.pause_ms / 1e3)
    }
}

/// Pauses `target` and reads what `options` asks for.
///
/// Only reading while the target is stopped (notes/snapshots.md, "The
/// pause"): everything goes through one page cache filled in batches, each
/// code object's slot names are read once, each distinct value is rendered
/// once, and code objects themselves are left to [`to_record`], after the
/// release. `pydeep dump` is this read too.
pub fn take(target: &mut Target, options: &SnapshotOptions) -> Result<Taken, ReadError> {
    let mut taken = Taken {
        asked: *options,
        ..Taken::default()
    };
    let started = Instant::now();
    taken.clock_ns = crate::recording::schedule::monotonic_ns();
    let guard = target.pause()?;
    let mut samples = Vec::new();
    if options.scopes {
        // The threads only: their frames are read below, through the cache.
        target.sample_threads_without_frames(&mut samples)?;
    }
    let target = &*target;
    // The caller paused the target: each page needs reading only once.
    let memory = PageCache::exact(target.memory());
    let objects = Objects::new(&memory, target.layout());
    memory.set_read_ahead(crate::reading::paused_read::FRAME_READ_AHEAD);
    let mut frames_of: Vec<Vec<FrameRef>> = Vec::with_capacity(samples.len());
    for sample in &samples {
        let (frames, cut) = thread_frames_whole(
            &memory,
            target.layout(),
            sample.thread_state,
            options.max_depth,
        );
        if cut {
            taken.warnings.push(format!(
                "thread {}: its stack was cut after {} frames (deeper than the depth limit, or its frame chain broke off: an unreadable frame or a cycle)",
                sample.thread_id,
                frames.len()
            ));
        }
        frames_of.push(frames);
    }
    // Each code object's identity as of the pause (a read per distinct
    // code object, most already in the cache from the walk).
    let reader = ObjectReader::new(&memory, target.layout());
    let fingerprint_len = reader.code_fingerprint_len();
    let mut codes: Vec<u64> = frames_of.iter().flatten().map(|f| f.code).collect();
    codes.sort_unstable();
    codes.dedup();
    for code in codes {
        if let Ok(header) = read_vec(&memory, code, fingerprint_len, fingerprint_len) {
            taken
                .code_fingerprints
                .push((code, reader.code_fingerprint(&header)));
        }
    }
    if options.scopes && (options.generators || options.tasks) {
        let asked = AsyncOptions {
            tasks: options.tasks,
            all: options.all_generators,
            ..AsyncOptions::default()
        };
        // Generators are looked for in every frame up to 4096 deep.
        let deeper;
        let frames = if options.max_depth >= 4096 {
            &frames_of
        } else {
            deeper = samples
                .iter()
                .map(|sample| thread_frames(&memory, target.layout(), sample.thread_state, 4096))
                .collect();
            &deeper
        };
        memory.set_read_ahead(1);
        // A walk of the GC lists (tasks) reads objects allocated together:
        // read ahead there.
        let ahead = PageCache::new(target.memory());
        let found = if options.tasks || options.all_generators {
            collect(
                &Objects::new(&ahead, target.layout()),
                target.runtime_address(),
                frames,
                &asked,
            )
        } else {
            collect(&objects, target.runtime_address(), frames, &asked)
        };
        taken
            .warnings
            .extend(found.warnings.iter().map(|w| format!("async: {w}")));
        taken.asynchronous = Some(found);
    }
    memory.set_read_ahead(1);
    let mut layouts: HashMap<u64, Result<LocalsLayout, String>> = HashMap::new();
    if options.values {
        let codes: Vec<u64> = frames_of.iter().flatten().map(|f| f.code).collect();
        let _ = memory.prefetch(&codes, 64);
        for code in codes {
            layouts
                .entry(code)
                .or_insert_with(|| locals_layout(&objects, code).map_err(|e| e.to_string()));
        }
    }
    // Every frame's variables first (slots and cells), then their objects
    // and types in one batch each, then the renderings.
    // The outermost frame of each module (globals dict), threads in order,
    // carries them; the module's other frames name it.
    let mut listed_at: HashMap<u64, u64> = HashMap::new();
    let mut read_frames = Vec::with_capacity(frames_of.len());
    for frames in &frames_of {
        let mut globals_at = vec![false; frames.len()];
        if options.globals {
            for (index, frame) in frames.iter().enumerate().rev() {
                globals_at[index] = frame.globals != 0
                    && *listed_at.entry(frame.globals).or_insert(frame.address) == frame.address;
            }
        }
        let mut read = Vec::with_capacity(frames.len());
        for (index, frame) in frames.iter().enumerate() {
            let mut variables = Vec::new();
            if let Some(layout) = layouts.get(&frame.code) {
                match layout.as_ref().map_err(String::clone).and_then(|layout| {
                    frame_variables_in(&objects, frame, layout).map_err(|e| e.to_string())
                }) {
                    Ok(vars) => variables.extend(vars),
                    Err(error) => taken.warnings.push(format!(
                        "variables of the frame 0x{:x} (code 0x{:x}): {error}",
                        frame.address, frame.code
                    )),
                }
            }
            if globals_at[index] {
                match frame_globals(&objects, frame.globals, options.max_globals) {
                    Ok(vars) => variables.extend(vars),
                    Err(error) => taken
                        .warnings
                        .push(format!("globals 0x{:x}: {error}", frame.globals)),
                }
            }
            read.push(variables);
        }
        read_frames.push(read);
    }
    let mut addresses: Vec<u64> = read_frames
        .iter()
        .flatten()
        .flatten()
        .map(|var| var.value)
        .collect();
    // The variables of each generator's frame (suspended or created).
    let generator_variables = match (&taken.asynchronous, options.values) {
        (Some(found), true) => generator_variables(&objects, &found.generators),
        _ => Vec::new(),
    };
    addresses.extend(
        generator_variables
            .iter()
            .flat_map(|(_, vars)| vars)
            .map(|var| var.value),
    );
    crate::reading::paused_read::prefetch_values(&memory, &objects, &addresses);
    let mut values = Values::new(options.rendering);
    let mut roots = Vec::new();
    let mut redacted_roots = Vec::new();
    for ((sample, frames), read) in samples.into_iter().zip(&frames_of).zip(read_frames) {
        let mut taken_frames = Vec::with_capacity(frames.len());
        for (frame, variables) in frames.iter().zip(read) {
            for var in &variables {
                if var.binding != Binding::Global {
                    roots.push(var.value);
                    if crate::reading::redact::matches(options.rendering.redact, &var.name) {
                        redacted_roots.push(var.value);
                    }
                }
            }
            let variables = variables
                .into_iter()
                .map(|var| TakenVariable::read(var, &objects, &mut values))
                .collect();
            let listing = listed_at.get(&frame.globals).copied().unwrap_or(0);
            taken_frames.push(TakenFrame {
                frame: FrameSample {
                    code_address: frame.code,
                    instruction_offset: frame.instruction_offset,
                    is_generator: frame.is_generator,
                    is_shim: false,
                },
                address: frame.address,
                variables,
                globals_listed_at: if listing == frame.address { 0 } else { listing },
            });
        }
        taken.threads.push(TakenThread {
            sample,
            frames: taken_frames,
        });
    }
    for (address, variables) in generator_variables {
        let variables = variables
            .into_iter()
            .map(|var| TakenVariable::read(var, &objects, &mut values))
            .collect();
        taken.generator_locals.insert(address, variables);
    }
    if options.values && options.max_objects > 0 {
        let graph = walk_from(
            &objects,
            &roots,
            &redacted_roots,
            &GraphOptions {
                max_depth: options.object_depth,
                max_objects: options.max_objects,
                redact: options.rendering.redact,
                ..GraphOptions::default()
            },
        );
        if graph.truncated {
            taken
                .warnings
                .push(graph_truncated_warning(options.max_objects));
        }
        taken.graph = Some(graph);
    }
    if options.heap {
        // The GC lists: objects allocated together, read ahead.
        let ahead = PageCache::new(target.memory());
        let objects = Objects::new(&ahead, target.layout());
        match heap_summary(&objects, target.runtime_address()) {
            Ok(summary) => {
                if summary.truncated {
                    taken
                        .warnings
                        .push("heap walk truncated (list broken or too long)".into());
                }
                if summary.abandoned_segments > 0 {
                    taken.warnings.push(format!(
                        "heap: {} mimalloc segments of exited threads were not walked; \
                         their objects are not counted",
                        summary.abandoned_segments
                    ));
                }
                taken.heap = Some(summary);
            }
            Err(error) => taken.warnings.push(format!("heap: {error}")),
        }
    }
    drop(guard);
    taken.pause = started.elapsed();
    Ok(taken)
}

/// What `pydeep objects` reads: the object graph from one root (a spec
/// [`crate::reading::graph::resolve_root`] resolves), the target paused while it is
/// walked, as a snapshot holding that graph (`Taken::graph`; a graph cut
/// at `options.max_objects` says so among the warnings). A root named by a
/// name that matches `options.redact` is masked whole.
pub fn take_graph(
    target: &mut Target,
    root: &str,
    options: &GraphOptions,
) -> anyhow::Result<Taken> {
    use anyhow::Context;
    let pid = target.pid();
    let mut taken = Taken {
        asked: SnapshotOptions {
            scopes: false,
            generators: false,
            max_objects: options.max_objects,
            object_depth: options.max_depth,
            ..SnapshotOptions::default()
        },
        ..Taken::default()
    };
    let started = Instant::now();
    taken.clock_ns = crate::recording::schedule::monotonic_ns();
    let guard = target.pause().context("pausing the target")?;
    let mut samples = Vec::new();
    target
        .sample_threads(&mut samples)
        .with_context(|| format!("reading the threads of process {pid}"))?;
    let address = crate::reading::graph::resolve_root(target, root, &samples)?;
    // Paused: each page of the target needs reading only once.
    let memory = PageCache::new(target.memory());
    let objects = Objects::new(&memory, target.layout());
    let root_name = root.rsplit(':').next().unwrap_or_default();
    let graph =
        if !root.starts_with("0x") && crate::reading::redact::matches(options.redact, root_name) {
            crate::reading::graph::walk_redacted_root(&objects, address, options)
        } else {
            crate::reading::graph::walk(&objects, address, options)
        };
    drop(guard);
    taken.pause = started.elapsed();
    if graph.truncated {
        taken
            .warnings
            .push(graph_truncated_warning(options.max_objects));
    }
    taken.graph = Some(graph);
    Ok(taken)
}

/// The variables of each generator with a frame (suspended or created),
/// by the generator's address: while the target is paused.
fn generator_variables(
    objects: &Objects<'_>,
    generators: &[crate::reading::generators::Generator],
) -> Vec<(u64, Vec<Variable>)> {
    let mut layouts: HashMap<u64, Option<LocalsLayout>> = HashMap::new();
    let mut out = Vec::new();
    for generator in generators {
        let Some(frame) = crate::reading::generators::frame_ref(objects.layout(), generator) else {
            continue;
        };
        let Some(layout) = layouts
            .entry(generator.code)
            .or_insert_with(|| locals_layout(objects, generator.code).ok())
        else {
            continue;
        };
        let variables = frame_variables_in(objects, &frame, layout).unwrap_or_default();
        out.push((generator.address, variables));
    }
    out
}

/// Interns what `taken` refers to in `recorder` (threads, frames, stacks,
/// strings) and returns the record. `names` are the threads' names.
pub fn to_record<W: Write>(
    recorder: &mut Recorder<W>,
    source: &mut impl CodeSource,
    pid: i32,
    version: &PythonVersion,
    taken: &Taken,
    names: &HashMap<u64, String>,
) -> proto::Snapshot {
    let mut threads = Vec::with_capacity(taken.threads.len());
    for thread in &taken.threads {
        let name = names.get(&thread.sample.thread_id).map(String::as_str);
        let id = recorder.thread(pid, &thread.sample.head(), name);
        // Stacks are stored outermost first, frames here innermost first.
        let frame_ids: Vec<u64> = thread
            .frames
            .iter()
            .rev()
            .map(|f| recorder.frame(source, pid, version, &f.frame))
            .collect();
        let stack = recorder.stack(&frame_ids);
        let frames = thread
            .frames
            .iter()
            .zip(frame_ids.iter().rev())
            .map(|(frame, &frame_id)| {
                let mut scopes = proto::FrameScopes {
                    frame: frame_id,
                    address: frame.address,
                    globals_listed_at: frame.globals_listed_at,
                    ..Default::default()
                };
                for var in &frame.variables {
                    let record = variable_record(var, &mut |text| recorder.string(text));
                    match var.binding {
                        Binding::Local => scopes.locals.push(record),
                        Binding::Cell => scopes.cells.push(record),
                        Binding::Free => scopes.free_vars.push(record),
                        Binding::Global => scopes.globals.push(record),
                    }
                }
                scopes
            })
            .collect();
        threads.push(proto::ThreadScopes {
            thread: id,
            stack,
            frames,
            activity: if thread.sample.active {
                proto::ThreadActivity::ActivityActive
            } else {
                proto::ThreadActivity::ActivityIdle
            } as i32,
            holds_gil: thread.sample.holds_gil,
        });
    }
    let (objects, edges) = match &taken.graph {
        Some(graph) => graph_record(graph, &mut |text| recorder.string(text)),
        None => (Vec::new(), Vec::new()),
    };
    let (mut generators, tasks) = match &taken.asynchronous {
        Some(found) => to_proto(
            found,
            &mut RecorderInterner {
                recorder,
                source,
                pid,
                version,
            },
        ),
        None => (Vec::new(), Vec::new()),
    };
    for generator in &mut generators {
        if let Some(variables) = taken.generator_locals.get(&generator.address) {
            generator.locals = variables
                .iter()
                .map(|var| variable_record(var, &mut |text| recorder.string(text)))
                .collect();
        }
    }
    let heap = taken
        .heap
        .as_ref()
        .map(|summary| heap_record(summary, &mut |text| recorder.string(text)));
    proto::Snapshot {
        time_ns: taken.clock_ns,
        pid: pid as u32,
        pause_ns: taken.pause.as_nanos() as u64,
        threads,
        objects,
        edges,
        generators,
        tasks,
        heap,
        warnings: taken.warnings.clone(),
        locals: taken.asked.scopes && taken.asked.values,
        globals: taken.asked.scopes && taken.asked.globals,
        asynchronous: taken.asynchronous.is_some(),
    }
}

/// A variable as the schema's `Variable` record, its strings interned by
/// `string`.
fn variable_record(var: &TakenVariable, string: &mut dyn FnMut(&str) -> u64) -> proto::Variable {
    let mut record = proto::Variable {
        name: string(&var.name),
        kind: variable_kind(var) as i32,
        argument: var.is_argument,
        cell: var.cell,
        unbound: var.value.is_none(),
        ..Default::default()
    };
    if let Some(value) = &var.value {
        value_record(value, &mut record, string);
        record.attributes = value
            .attributes
            .iter()
            .flatten()
            .map(|(name, value)| {
                let mut attribute = proto::Variable {
                    name: string(name),
                    kind: proto::VariableKind::VariableUnspecified as i32,
                    ..Default::default()
                };
                value_record(value, &mut attribute, string);
                attribute
            })
            .collect();
    }
    record
}

/// Fills the value fields of `record` from `value`.
fn value_record(
    value: &ReadValue,
    record: &mut proto::Variable,
    string: &mut dyn FnMut(&str) -> u64,
) {
    record.address = value.address;
    record.type_name = if value.type_name.is_empty() {
        0
    } else {
        string(&value.type_name)
    };
    record.value = value.repr.clone();
    record.size = value.size.unwrap_or(0);
    record.implausible_size = value.implausible_size.unwrap_or(0);
    record.refcount = value.refcount;
    record.immortal = value.immortal;
    record.length = value.length;
}

/// An object graph as the records of a snapshot (`Snapshot.objects` and
/// `edges`), its type names interned by `string`; a size not reproduced
/// is 0. The one conversion both recordings and `pydeep objects` use.
pub fn graph_record(
    graph: &Graph,
    string: &mut dyn FnMut(&str) -> u64,
) -> (Vec<proto::ObjectNode>, Vec<proto::ObjectEdge>) {
    let nodes = graph
        .nodes
        .iter()
        .map(|node| proto::ObjectNode {
            address: node.address,
            type_name: string(&node.type_name),
            size: node.size.unwrap_or(0),
            implausible_size: node.implausible_size.unwrap_or(0),
            retained_size: node.retained_size.unwrap_or(0),
            refcount: node.refcount,
            value: node.repr.clone(),
            depth: node.depth as u32,
        })
        .collect();
    let edges = graph
        .edges
        .iter()
        .map(|edge| proto::ObjectEdge {
            from: edge.from,
            to: edge.to,
            kind: edge_kind(&edge.label) as i32,
            label: edge.label.clone(),
        })
        .collect();
    (nodes, edges)
}

/// The warning a snapshot carries when its object graph stopped at
/// `max_objects` (references were left out).
pub fn graph_truncated_warning(max_objects: usize) -> String {
    format!("object graph truncated at {max_objects} objects")
}

/// A heap count as the record of a snapshot (`Snapshot.heap`), its type
/// names interned by `string`. The one conversion both recordings and
/// `pydeep heap` use.
pub fn heap_record(
    summary: &HeapSummary,
    string: &mut dyn FnMut(&str) -> u64,
) -> proto::HeapSummary {
    proto::HeapSummary {
        types: summary
            .types
            .iter()
            .map(|t| proto::TypeCount {
                type_name: string(&t.name),
                count: t.count,
                bytes: t.bytes,
                implausible: t.implausible,
            })
            .collect(),
        total_objects: summary.objects,
        total_bytes: summary.types.iter().map(|t| t.bytes).sum(),
        unreadable: 0,
    }
}

/// The recording's interning, as the asyncio reader's [`Interner`].
struct RecorderInterner<'a, W: Write, S: CodeSource> {
    recorder: &'a mut Recorder<W>,
    source: &'a mut S,
    pid: i32,
    version: &'a PythonVersion,
}

impl<W: Write, S: CodeSource> Interner for RecorderInterner<'_, W, S> {
    fn string(&mut self, text: &str) -> u64 {
        self.recorder.string(text)
    }

    fn frame(&mut self, frame: &FrameSample) -> u64 {
        self.recorder
            .frame(self.source, self.pid, self.version, frame)
    }

    fn stack(&mut self, frames: &[u64]) -> u64 {
        self.recorder.stack(frames)
    }
}

fn variable_kind(var: &TakenVariable) -> proto::VariableKind {
    match var.binding {
        Binding::Local if var.is_argument => proto::VariableKind::VariableArgument,
        Binding::Local => proto::VariableKind::VariableLocal,
        Binding::Cell => proto::VariableKind::VariableCell,
        Binding::Free => proto::VariableKind::VariableFree,
        Binding::Global => proto::VariableKind::VariableGlobal,
    }
}

/// The schema's edge kind of a graph label (see `Objects::referents`).
fn edge_kind(label: &str) -> proto::EdgeKind {
    if label == "key" {
        proto::EdgeKind::EdgeDictKey
    } else if label == "item" {
        proto::EdgeKind::EdgeSetItem
    } else if label == "cell_contents" {
        proto::EdgeKind::EdgeCell
    } else if label.starts_with('.') {
        proto::EdgeKind::EdgeAttribute
    } else if label.starts_with('[') && label[1..].starts_with(|c: char| c.is_ascii_digit()) {
        proto::EdgeKind::EdgeIndex
    } else if label.starts_with('[') {
        proto::EdgeKind::EdgeDictValue
    } else {
        proto::EdgeKind::EdgeOther
    }
}

/// When snapshots are due during a session, and what they cost.
#[derive(Debug, Clone)]
pub struct SnapshotSchedule {
    every: Option<Duration>,
    heap_every: Option<Duration>,
    next: Option<Instant>,
    next_heap: Option<Instant>,
    options: SnapshotOptions,
    /// Missed-tick count of the sampler when the last snapshot ended,
    /// until the next tick is taken.
    missed_before: Option<u64>,
    /// What snapshots cost so far.
    pub stats: SnapshotStats,
}

/// Counters of the snapshots of a session, for its summary.
#[derive(Debug, Clone, Default)]
pub struct SnapshotStats {
    /// Snapshots written.
    pub snapshots: u64,
    /// Of which with a heap count.
    pub heap_snapshots: u64,
    /// Snapshots that could not be taken.
    pub failures: u64,
    /// Total and longest pause.
    pub total_pause: Duration,
    /// Longest pause.
    pub max_pause: Duration,
    /// Longest heap-counting pause and the objects it counted.
    pub max_heap_pause: Duration,
    /// Objects counted by the heap snapshot with the longest pause.
    pub max_heap_objects: u64,
    /// Sampler ticks missed right after a snapshot (the snapshot made the
    /// sampler late).
    pub missed_ticks: u64,
}

impl SnapshotSchedule {
    /// A schedule starting at `start`; `every` for scopes, `heap_every`
    /// for heap counts, `options` for what scopes include.
    pub fn new(
        start: Instant,
        every: Option<Duration>,
        heap_every: Option<Duration>,
        options: SnapshotOptions,
    ) -> Self {
        let every = every.filter(|d| !d.is_zero());
        let heap_every = heap_every.filter(|d| !d.is_zero());
        SnapshotSchedule {
            every,
            heap_every,
            next: every.map(|d| start + d),
            next_heap: heap_every.map(|d| start + d),
            options,
            missed_before: None,
            stats: SnapshotStats::default(),
        }
    }

    /// What to read now, if a snapshot is due; advances the schedule
    /// (a late snapshot is not repeated to catch up).
    pub fn due(&mut self, now: Instant) -> Option<SnapshotOptions> {
        let advance = |next: &mut Option<Instant>, every: Option<Duration>| -> bool {
            match (next.as_mut(), every) {
                (Some(at), Some(every)) if now >= *at => {
                    while *at <= now {
                        *at += every;
                    }
                    true
                }
                _ => false,
            }
        };
        let scopes = advance(&mut self.next, self.every);
        let heap = advance(&mut self.next_heap, self.heap_every);
        (scopes || heap).then_some(SnapshotOptions {
            scopes,
            values: scopes && self.options.values,
            globals: scopes && self.options.globals,
            tasks: scopes && self.options.tasks,
            heap,
            ..self.options
        })
    }

    /// Counts a snapshot taken.
    pub fn taken(&mut self, taken: &SnapshotReport) {
        let pause = taken.pause();
        self.stats.snapshots += 1;
        self.stats.total_pause += pause;
        self.stats.max_pause = self.stats.max_pause.max(pause);
        if taken.heap {
            self.stats.heap_snapshots += 1;
            if pause >= self.stats.max_heap_pause {
                self.stats.max_heap_pause = pause;
                self.stats.max_heap_objects = taken.heap_objects;
            }
        }
    }

    /// Called when the snapshots due were taken, with the sampler's
    /// missed-tick count: what it misses until its next tick is charged to
    /// them.
    pub fn ended(&mut self, missed: u64) {
        self.missed_before = Some(missed);
    }

    /// Called after the sampler took a tick with its missed-tick count:
    /// the ticks skipped since the last snapshot are charged to it.
    pub fn tick(&mut self, missed: u64) {
        if let Some(before) = self.missed_before.take() {
            self.stats.missed_ticks += missed.saturating_sub(before);
        }
    }
}

impl std::fmt::Display for SnapshotStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mean = self.total_pause.as_secs_f64() / self.snapshots.max(1) as f64;
        write!(
            f,
            "  snapshots {} ({} with heap, {} failed), pause mean {:.2} ms max {:.2} ms, ticks missed after snapshots {}",
            self.snapshots,
            self.heap_snapshots,
            self.failures,
            mean * 1e3,
            self.max_pause.as_secs_f64() * 1e3,
            self.missed_ticks
        )?;
        if self.heap_snapshots > 0 {
            write!(
                f,
                "\n  longest heap snapshot: {} objects in {:.2} ms",
                self.max_heap_objects,
                self.max_heap_pause.as_secs_f64() * 1e3
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graph_labels_map_to_the_schemas_edge_kinds() {
        assert_eq!(edge_kind("[3]"), proto::EdgeKind::EdgeIndex);
        assert_eq!(edge_kind("['a']"), proto::EdgeKind::EdgeDictValue);
        assert_eq!(edge_kind("value"), proto::EdgeKind::EdgeOther);
        assert_eq!(edge_kind("key"), proto::EdgeKind::EdgeDictKey);
        assert_eq!(edge_kind(".name"), proto::EdgeKind::EdgeAttribute);
        assert_eq!(edge_kind("item"), proto::EdgeKind::EdgeSetItem);
        assert_eq!(edge_kind("cell_contents"), proto::EdgeKind::EdgeCell);
        assert_eq!(edge_kind("__globals__"), proto::EdgeKind::EdgeOther);
    }

    #[test]
    fn a_schedule_asks_for_scopes_and_heap_each_at_its_own_period() {
        let start = Instant::now();
        let mut schedule = SnapshotSchedule::new(
            start,
            Some(Duration::from_secs(1)),
            Some(Duration::from_secs(2)),
            SnapshotOptions {
                values: true,
                ..Default::default()
            },
        );
        assert!(schedule.due(start).is_none());
        let first = schedule.due(start + Duration::from_millis(1000)).unwrap();
        assert!(first.scopes && first.values && !first.heap);
        assert!(schedule.due(start + Duration::from_millis(1500)).is_none());
        let second = schedule.due(start + Duration::from_millis(2000)).unwrap();
        assert!(second.scopes && second.heap);
        // Late by several periods: one snapshot, not a burst.
        let late = schedule.due(start + Duration::from_millis(7500)).unwrap();
        assert!(late.scopes && late.heap);
        assert!(schedule.due(start + Duration::from_millis(7900)).is_none());
        let heap_only = SnapshotSchedule::new(
            start,
            None,
            Some(Duration::from_secs(1)),
            Default::default(),
        )
        .due(start + Duration::from_secs(1))
        .unwrap();
        assert!(heap_only.heap && !heap_only.scopes && !heap_only.values);
    }
}
