//! `pydeep dump`: every thread's stack of a paused target, optionally with
//! each frame's locals, cells, free variables and module globals, as text
//! or as the JSON documented in notes/snapshots.md.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Instant;

use pydeep_cpython::linetable::LineIndex;
use serde::Serialize;

use crate::asyncio::{AsyncOptions, Task};
use crate::cpython::code::CodeObject;
use crate::generators::Generator;
use crate::objects::{Kind, Objects, Rendering};
use crate::page_cache::PageCache;
use crate::paused_read::{prefetch_values, FRAME_READ_AHEAD, VALUE_BYTES};
use crate::scopes::{
    frame_globals, frame_variables_in, locals_layout, thread_frames_whole, Binding, FrameRef,
    LocalsLayout, Variable,
};
use crate::target::{ReadError, Target};
use crate::walker::ThreadSample;

/// What a dump includes. Defaults: stacks only, up to 4096 frames.
#[derive(Debug, Clone, Copy)]
pub struct DumpOptions {
    /// Read each frame's locals, cells and free variables.
    pub locals: bool,
    /// Read each frame's module globals (`__builtins__` left out).
    pub globals: bool,
    /// Deepest stack read per thread.
    pub max_depth: usize,
    /// Most globals listed per frame (default 200).
    pub max_globals: usize,
    /// Bounds of the rendered values.
    pub rendering: Rendering,
    /// Generators, coroutines and asyncio tasks (`--async`), None to skip.
    pub asynchronous: Option<AsyncOptions>,
}

impl Default for DumpOptions {
    fn default() -> Self {
        DumpOptions {
            locals: false,
            globals: false,
            max_depth: 4096,
            max_globals: 200,
            rendering: Rendering::default(),
            asynchronous: None,
        }
    }
}

/// Schema version of the JSON dump (notes/snapshots.md).
pub const DUMP_SCHEMA: u32 = 1;

/// A dump of every thread (the JSON root).
#[derive(Debug, Clone, Serialize)]
pub struct Dump {
    /// Schema version ([`DUMP_SCHEMA`]).
    pub schema: u32,
    /// The target's pid.
    pub pid: i32,
    /// Its CPython version ("3.11.7").
    pub python_version: String,
    /// How long the target was paused while it was read, in seconds.
    pub pause_seconds: f64,
    /// Every thread of every interpreter.
    pub threads: Vec<ThreadDump>,
    /// With `--async`: generators, coroutines and async generators.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generators: Option<Vec<Generator>>,
    /// With `--async --locals`: the variables of each suspended (or
    /// created) generator's and coroutine's frame, as `gi_frame.f_locals`
    /// / `cr_frame.f_locals` hold them in-process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generator_locals: Option<Vec<GeneratorLocalsDump>>,
    /// With `--async`: asyncio tasks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tasks: Option<Vec<Task>>,
    /// What could not be read: unreadable code objects, stacks cut short,
    /// and with `--async` generators and tasks.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// The variables of one generator's, coroutine's or async generator's frame.
#[derive(Debug, Clone, Serialize)]
pub struct GeneratorLocalsDump {
    /// `id()` of the generator (as in `generators`).
    pub address: u64,
    /// Its `__qualname__`.
    pub qualname: String,
    /// Its frame's locals, cells and free variables in `localsplus` order.
    pub locals: Vec<VariableDump>,
}

/// One thread.
#[derive(Debug, Clone, Serialize)]
pub struct ThreadDump {
    /// `threading.get_ident()`.
    pub thread_id: u64,
    /// `threading.get_native_id()` (0 if unknown).
    pub native_id: u64,
    /// Its name in `threading` (null if unnamed).
    pub name: Option<String>,
    /// Interpreter index (0 = main).
    pub interpreter: u32,
    /// Main thread of the main interpreter.
    pub is_main: bool,
    /// It held the GIL.
    pub holds_gil: bool,
    /// It was running, not waiting (false = idle).
    pub active: bool,
    /// Frames, innermost first.
    pub frames: Vec<FrameDump>,
}

/// One frame.
#[derive(Debug, Clone, Serialize)]
pub struct FrameDump {
    /// `co_name`.
    pub name: String,
    /// `co_qualname` (3.11+; `co_name` before).
    pub qualname: String,
    /// `co_filename`.
    pub file: String,
    /// Line being executed (null if the line table does not say).
    pub line: Option<u32>,
    /// Byte offset of the instruction (`frame.f_lasti`).
    pub instruction_offset: u32,
    /// A generator's or coroutine's frame.
    pub is_generator: bool,
    /// Address of the frame in the target.
    pub frame_address: u64,
    /// Locals, cells and free variables in `localsplus` order (only with
    /// `--locals`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locals: Option<Vec<VariableDump>>,
    /// Module globals (only with `--globals`), listed on the first frame
    /// of the dump (threads in order, innermost frame first) that runs in
    /// that module; later frames of the module have none and name that
    /// frame in `globals_listed_at`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub globals: Option<Vec<VariableDump>>,
    /// The address of the frame whose `globals` list this frame's module
    /// globals (it shares them), when not this one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub globals_listed_at: Option<u64>,
}

/// One variable.
#[derive(Debug, Clone, Serialize)]
pub struct VariableDump {
    /// Its name.
    pub name: String,
    /// "local", "cell", "free" or "global".
    pub binding: Binding,
    /// A parameter of the function.
    pub argument: bool,
    /// Address of the cell holding it (cell and free variables).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cell: Option<u64>,
    /// Its value; null when unbound.
    pub value: Option<ValueDump>,
}

/// One object, rendered.
#[derive(Debug, Clone, Serialize)]
pub struct ValueDump {
    /// `id()`.
    pub address: u64,
    /// `type(x).__name__`.
    #[serde(rename = "type")]
    pub type_name: String,
    /// Bounded `repr()`-like rendering.
    pub repr: String,
    /// `sys.getsizeof()` (null where not reproduced, or implausible).
    pub size: Option<u64>,
    /// The size the object claims when its memory cannot hold it (a
    /// hostile or corrupt header): not a size, a flag with what it said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub implausible_size: Option<u64>,
    /// `sys.getrefcount(x) - 1` (`ob_refcnt`).
    pub refcount: i64,
    /// 3.12+ immortal object (refcount is a marker).
    pub immortal: bool,
    /// `len()` of containers, str and bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub length: Option<u64>,
    /// Attributes of an instance of a Python class (dict and slots).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attributes: Option<Vec<AttributeDump>>,
}

/// One attribute of an instance.
#[derive(Debug, Clone, Serialize)]
pub struct AttributeDump {
    /// Its name.
    pub name: String,
    /// Its value (without further attributes).
    pub value: ValueDump,
}

/// Reads `target` while it is paused: every thread's stack, and the
/// variables `options` asks for.
///
/// Only reading happens while the target is stopped (notes/snapshots.md,
/// "The pause"): the frame chains, each code object's slot names, the
/// variables' slots and each distinct value once, through one page cache
/// filled in batches. The code objects' names, files and line tables
/// (immutable), the dump's structure and its JSON come after the release.
pub fn dump(target: &mut Target, options: &DumpOptions) -> Result<Dump, ReadError> {
    let registries = target
        .thread_registries(target.memory())
        .unwrap_or_default();
    let guard = target.pause()?;
    let started = Instant::now();
    let mut samples: Vec<ThreadSample> = Vec::new();
    // The threads only: their frames are read below, through the cache.
    target.sample_threads_without_frames(&mut samples)?;
    let target = &*target;
    // The target is paused: each page of it needs reading only once.
    let memory = PageCache::exact(target.memory());
    let names = target
        .thread_names_in(&memory, &registries)
        .unwrap_or_default();
    let objects = Objects::new(&memory, target.layout());
    let mut paused = read_paused(&memory, &objects, &samples, options);
    let asynchronous = options.asynchronous.map(|async_options| {
        // Walks of the GC lists: objects allocated together, read ahead.
        let memory = PageCache::new(target.memory());
        crate::asyncio::collect(
            &Objects::new(&memory, target.layout()),
            target.runtime_address(),
            &paused.frames,
            &async_options,
        )
    });
    let generator_variables: Option<Vec<(u64, String, Vec<Variable>)>> = asynchronous
        .as_ref()
        .filter(|_| options.locals)
        .map(|a| generator_variables(&objects, &a.generators, &mut paused.values));
    let pause_seconds = started.elapsed().as_secs_f64();
    drop(guard);
    // Released. Code objects never change: read now, through the pages
    // already copied where they hold them.
    let codes = read_codes(&objects, &paused.frames);
    let (threads, warnings, values) = assemble(&samples, &names, &codes, paused);
    Ok(Dump {
        schema: DUMP_SCHEMA,
        pid: target.pid(),
        python_version: target.python_version().to_string(),
        pause_seconds,
        threads,
        generators: asynchronous.as_ref().map(|a| a.generators.clone()),
        generator_locals: generator_variables.map(|generators| {
            generators
                .into_iter()
                .map(|(address, qualname, variables)| GeneratorLocalsDump {
                    address,
                    qualname,
                    locals: variables.iter().map(|var| values.variable(var)).collect(),
                })
                .collect()
        }),
        tasks: asynchronous.as_ref().map(|a| a.tasks.clone()),
        warnings: warnings
            .into_iter()
            .chain(asynchronous.map(|a| a.warnings).unwrap_or_default())
            .collect(),
    })
}

/// What was read while the target was paused, before anything is named,
/// formatted or arranged.
struct PausedRead {
    /// Every thread's frames, innermost first (as `samples`).
    frames: Vec<Vec<FrameRef>>,
    /// Each thread's walk stopped short of its first frame.
    cut: Vec<bool>,
    /// Each frame's variables, in `frames` order.
    variables: Vec<Vec<FrameVariables>>,
    /// Each distinct value, rendered once.
    values: Values,
}

/// The variables of one frame as read: slots and addresses only (`None`
/// where not asked).
#[derive(Default)]
struct FrameVariables {
    locals: Option<Vec<Variable>>,
    globals: Option<Vec<Variable>>,
}

/// The reading half of [`dump`], run while the target is paused, in
/// rounds: the frame chains; the code objects' slot layouts; every frame's
/// slots (and cells); then every value's object and its type in one batch
/// each, before the values are rendered from the copied pages.
fn read_paused(
    memory: &PageCache<'_>,
    objects: &Objects<'_>,
    samples: &[ThreadSample],
    options: &DumpOptions,
) -> PausedRead {
    // Frames sit together (3.11+: in data-stack chunks; 3.9/3.10: frame
    // objects allocated in call order), and each points to the next:
    // read ahead along the chains.
    memory.set_read_ahead(FRAME_READ_AHEAD);
    let (frames, cut): (Vec<Vec<FrameRef>>, Vec<bool>) = samples
        .iter()
        .map(|sample| {
            thread_frames_whole(
                memory,
                objects.layout(),
                sample.thread_state,
                options.max_depth,
            )
        })
        .unzip();
    memory.set_read_ahead(1);
    let mut layouts: HashMap<u64, Option<LocalsLayout>> = HashMap::new();
    if options.locals {
        let codes: Vec<u64> = frames.iter().flatten().map(|f| f.code).collect();
        let _ = memory.prefetch(&codes, VALUE_BYTES);
        for &code in &codes {
            layouts
                .entry(code)
                .or_insert_with(|| locals_layout(objects, code).ok());
        }
    }
    let variables: Vec<Vec<FrameVariables>> = frames
        .iter()
        .map(|frames| {
            frames
                .iter()
                .map(|frame| FrameVariables {
                    locals: options.locals.then(|| {
                        layouts
                            .get(&frame.code)
                            .and_then(Option::as_ref)
                            .and_then(|layout| frame_variables_in(objects, frame, layout).ok())
                            .unwrap_or_default()
                    }),
                    globals: options.globals.then(|| {
                        frame_globals(objects, frame.globals, options.max_globals)
                            .unwrap_or_default()
                    }),
                })
                .collect()
        })
        .collect();
    let all = || {
        variables
            .iter()
            .flatten()
            .flat_map(|v| v.locals.iter().chain(v.globals.iter()).flatten())
    };
    let addresses: Vec<u64> = all().map(|var| var.value).collect();
    prefetch_values(memory, objects, &addresses);
    let mut values = Values::new(options.rendering);
    for var in all() {
        values.read(objects, &var.name, var.value);
    }
    PausedRead {
        frames,
        cut,
        variables,
        values,
    }
}

/// The code objects of `frames` by address (`None` if unreadable).
fn read_codes(
    objects: &Objects<'_>,
    frames: &[Vec<FrameRef>],
) -> HashMap<u64, Option<(CodeObject, LineIndex)>> {
    let mut codes = HashMap::new();
    for frame in frames.iter().flatten() {
        codes.entry(frame.code).or_insert_with(|| {
            objects
                .reader
                .code_object(frame.code)
                .ok()
                .map(|(code, _)| {
                    let kind = code.line_table_kind;
                    let lines = LineIndex::new(kind, code.first_line, &code.line_table);
                    (code, lines)
                })
        });
    }
    codes
}

/// The arranging half of [`dump`], run after the release: names, line
/// numbers, variables in order, warnings.
fn assemble(
    samples: &[ThreadSample],
    names: &HashMap<u64, String>,
    codes: &HashMap<u64, Option<(CodeObject, LineIndex)>>,
    read: PausedRead,
) -> (Vec<ThreadDump>, Vec<String>, Values) {
    let mut threads = Vec::with_capacity(samples.len());
    // The frame that lists each module's globals (by globals dict).
    let mut globals_listed: HashMap<u64, u64> = HashMap::new();
    // What could not be read, said rather than hidden (a hostile or
    // corrupt target: see tests/programs/hostile_memory.py).
    let mut warnings = Vec::new();
    let threads_read = samples
        .iter()
        .zip(&read.frames)
        .zip(read.cut)
        .zip(read.variables);
    for (((sample, frames), cut), variables) in threads_read {
        let mut frame_dumps = Vec::with_capacity(frames.len());
        for (frame, variables) in frames.iter().zip(variables) {
            let Some(Some((code, lines))) = codes.get(&frame.code) else {
                warnings.push(format!(
                    "thread {}: the code object at {:#x} of the frame at {:#x} is unreadable; frame left out",
                    sample.thread_id, frame.code, frame.address
                ));
                continue;
            };
            let dump = |vars: Option<Vec<Variable>>| {
                vars.map(|vars| {
                    vars.iter()
                        .map(|var| read.values.variable(var))
                        .collect::<Vec<_>>()
                })
            };
            frame_dumps.push(FrameDump {
                name: code.name.clone(),
                qualname: code.qualname.clone(),
                file: code.filename.clone(),
                line: lines.line(frame.instruction_offset),
                instruction_offset: frame.instruction_offset,
                is_generator: frame.is_generator,
                frame_address: frame.address,
                locals: dump(variables.locals),
                globals_listed_at: None,
                globals: dump(variables.globals),
            });
            if let Some(listed) = frame_dumps.last_mut() {
                if listed.globals.is_some() {
                    let first = *globals_listed.entry(frame.globals).or_insert(frame.address);
                    if first != frame.address {
                        listed.globals = None;
                        listed.globals_listed_at = Some(first);
                    }
                }
            }
        }
        if cut {
            warnings.push(format!(
                "thread {}: its stack was cut after {} frames (deeper than the depth limit, or its frame chain broke off: an unreadable frame or a cycle)",
                sample.thread_id,
                frames.len()
            ));
        }
        threads.push(ThreadDump {
            thread_id: sample.thread_id,
            native_id: sample.native_id,
            name: names.get(&sample.thread_id).cloned(),
            interpreter: sample.interpreter,
            is_main: sample.is_main,
            holds_gil: sample.holds_gil,
            active: sample.active,
            frames: frame_dumps,
        });
    }
    (threads, warnings, read.values)
}

/// The variables of each generator with a frame (suspended or created),
/// their values read into `values`: while the target is paused.
fn generator_variables(
    objects: &Objects<'_>,
    generators: &[Generator],
    values: &mut Values,
) -> Vec<(u64, String, Vec<Variable>)> {
    let mut layouts: HashMap<u64, Option<LocalsLayout>> = HashMap::new();
    let mut out = Vec::new();
    for generator in generators {
        let Some(frame) = crate::generators::frame_ref(objects.layout(), generator) else {
            continue;
        };
        let Some(layout) = layouts
            .entry(generator.code)
            .or_insert_with(|| locals_layout(objects, generator.code).ok())
        else {
            continue;
        };
        let variables = frame_variables_in(objects, &frame, layout).unwrap_or_default();
        for var in &variables {
            values.read(objects, &var.name, var.value);
        }
        out.push((generator.address, generator.qualname.clone(), variables));
    }
    out
}

/// Values rendered during one pause, each distinct object once: a deep
/// stack shows the same objects in many frames (the same `self`, the same
/// arguments passed down), and while the target is paused an object reads
/// the same every time.
struct Values {
    rendering: Rendering,
    /// With attributes (variables), without (attributes), redacted.
    full: HashMap<u64, ValueDump>,
    plain: HashMap<u64, ValueDump>,
    redacted: HashMap<u64, ValueDump>,
}

impl Values {
    fn new(rendering: Rendering) -> Values {
        Values {
            rendering,
            full: HashMap::new(),
            plain: HashMap::new(),
            redacted: HashMap::new(),
        }
    }

    /// Reads the value of variable `name` bound to `address` (0: unbound).
    fn read(&mut self, objects: &Objects<'_>, name: &str, address: u64) {
        if address == 0 {
            return;
        }
        if crate::redact::matches(self.rendering.redact, name) {
            self.redacted
                .entry(address)
                .or_insert_with(|| redacted_value(objects, address));
        } else if !self.full.contains_key(&address) {
            let value = self.value(objects, address, true);
            self.full.insert(address, value);
        }
    }

    /// The object at `address`, rendered (cached); `attributes` also lists
    /// an instance's attributes (one level).
    fn value(&mut self, objects: &Objects<'_>, address: u64, attributes: bool) -> ValueDump {
        if !attributes {
            if let Some(value) = self.plain.get(&address) {
                return value.clone();
            }
        }
        let mut value = value(objects, address, &self.rendering, false);
        if attributes {
            value.attributes = self.attributes(objects, address);
        } else {
            self.plain.insert(address, value.clone());
        }
        value
    }

    fn attributes(&mut self, objects: &Objects<'_>, address: u64) -> Option<Vec<AttributeDump>> {
        let info = objects.info(address).ok()?;
        if info.type_info.kind != Kind::Instance {
            return None;
        }
        let attributes = objects.attributes(&info).unwrap_or_default();
        Some(
            attributes
                .into_iter()
                .take(self.rendering.max_items.max(64))
                .map(|(name, value_address)| AttributeDump {
                    value: if crate::redact::matches(self.rendering.redact, &name) {
                        redacted_value(objects, value_address)
                    } else {
                        self.value(objects, value_address, false)
                    },
                    name,
                })
                .collect(),
        )
    }

    /// The dump of `var`, whose value [`Values::read`] read.
    fn variable(&self, var: &Variable) -> VariableDump {
        let values = if crate::redact::matches(self.rendering.redact, &var.name) {
            &self.redacted
        } else {
            &self.full
        };
        VariableDump {
            name: var.name.clone(),
            binding: var.binding,
            argument: var.is_argument,
            cell: (var.cell != 0).then_some(var.cell),
            value: (var.value != 0).then(|| {
                values
                    .get(&var.value)
                    .cloned()
                    .unwrap_or_else(|| unread_value(var.value))
            }),
        }
    }
}

/// A value [`Values::read`] was not asked for (never happens: every
/// variable's value is read while paused); said, not read late.
fn unread_value(address: u64) -> ValueDump {
    ValueDump {
        address,
        type_name: "?".into(),
        repr: format!("<not read while paused 0x{address:x}>"),
        size: None,
        implausible_size: None,
        refcount: 0,
        immortal: false,
        length: None,
        attributes: None,
    }
}

/// A value whose name matches `--redact`: its type and address only.
fn redacted_value(objects: &Objects<'_>, address: u64) -> ValueDump {
    let info = objects.info(address).ok();
    ValueDump {
        address,
        type_name: info
            .as_ref()
            .map_or_else(|| "?".into(), |i| i.type_info.name.clone()),
        repr: crate::redact::REDACTED.into(),
        size: None,
        implausible_size: None,
        refcount: info.as_ref().map_or(0, |i| i.refcount),
        immortal: info.as_ref().is_some_and(|i| i.immortal),
        length: None,
        attributes: None,
    }
}

/// Renders the object at `address`; `attributes` also lists an instance's
/// attributes (one level).
pub fn value(
    objects: &Objects<'_>,
    address: u64,
    rendering: &Rendering,
    attributes: bool,
) -> ValueDump {
    let Ok(info) = objects.info(address) else {
        return ValueDump {
            address,
            type_name: "?".into(),
            repr: format!("<unreadable 0x{address:x}>"),
            size: None,
            implausible_size: None,
            refcount: 0,
            immortal: false,
            length: None,
            attributes: None,
        };
    };
    let attributes = (attributes && info.type_info.kind == Kind::Instance).then(|| {
        objects
            .attributes(&info)
            .unwrap_or_default()
            .into_iter()
            .take(rendering.max_items.max(64))
            .map(|(name, value_address)| AttributeDump {
                value: if crate::redact::matches(rendering.redact, &name) {
                    redacted_value(objects, value_address)
                } else {
                    value(objects, value_address, rendering, false)
                },
                name,
            })
            .collect()
    });
    let size = objects.getsizeof(&info);
    ValueDump {
        address,
        type_name: info.type_info.name.clone(),
        repr: objects.render(address, rendering),
        size: size.and_then(|s| s.bytes()),
        implausible_size: size.and_then(|s| s.implausible()),
        refcount: info.refcount,
        immortal: info.immortal,
        length: objects.length(&info),
        attributes,
    }
}

/// The dump as text, like `py-spy dump`: one block per thread, frames
/// innermost first, variables indented under their frame. Every name and
/// value the target controls goes through [`esc`] (JSON escapes by itself).
pub fn render_text(dump: &Dump) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Process {}: CPython {} (paused {:.2} ms)",
        dump.pid,
        dump.python_version,
        dump.pause_seconds * 1e3
    );
    for thread in &dump.threads {
        let mut state = vec![if thread.active { "active" } else { "idle" }];
        if thread.holds_gil {
            state.push("gil");
        }
        if thread.is_main {
            state.push("main");
        }
        let name = thread
            .name
            .as_deref()
            .map_or(String::new(), |n| format!(" \"{}\"", esc(n)));
        let _ = writeln!(
            out,
            "\nThread {} (native {}){name} ({})",
            thread.thread_id,
            thread.native_id,
            state.join(", ")
        );
        for frame in &thread.frames {
            let line = frame.line.map_or("?".to_string(), |l| l.to_string());
            let _ = writeln!(
                out,
                "    {} ({}:{line})",
                esc(&frame.qualname),
                esc(&frame.file)
            );
            for (title, vars) in [("locals", &frame.locals), ("globals", &frame.globals)] {
                let Some(vars) = vars else { continue };
                if vars.is_empty() {
                    continue;
                }
                let _ = writeln!(out, "        {title}:");
                render_variables(&mut out, "            ", vars);
            }
            if let Some(listed) = frame.globals_listed_at {
                let _ = writeln!(
                    out,
                    "        globals: as listed at frame 0x{listed:x} above"
                );
            }
        }
    }
    if let Some(generators) = &dump.generators {
        render_generators(&mut out, generators, dump.generator_locals.as_deref());
    }
    if let (Some(tasks), Some(generators)) = (&dump.tasks, &dump.generators) {
        render_tasks(&mut out, tasks, generators);
    }
    for warning in &dump.warnings {
        let _ = writeln!(out, "\nwarning: {}", esc(warning));
    }
    out
}

/// Names and values from the target, printable: [`pydeep_format::text::escape`].
fn esc(text: &str) -> std::borrow::Cow<'_, str> {
    pydeep_format::text::escape(text)
}

fn generator_place(generator: &Generator) -> String {
    match (generator.line, generator.instruction_offset) {
        (Some(line), Some(offset)) => {
            format!("{}:{line} (offset {offset})", esc(&generator.file))
        }
        _ => esc(&generator.file).into_owned(),
    }
}

/// One line per variable: name, tags, type and rendering.
fn render_variables(out: &mut String, indent: &str, vars: &[VariableDump]) {
    for var in vars {
        let mut tags = Vec::new();
        if var.argument {
            tags.push("arg");
        }
        match var.binding {
            Binding::Cell => tags.push("cell"),
            Binding::Free => tags.push("free"),
            _ => {}
        }
        let tags = if tags.is_empty() {
            String::new()
        } else {
            format!(" [{}]", tags.join(", "))
        };
        let value = var.value.as_ref().map_or("<unbound>".to_string(), |v| {
            format!("{} = {}", esc(&v.type_name), esc(&v.repr))
        });
        let _ = writeln!(out, "{indent}{}{tags}: {value}", esc(&var.name));
    }
}

fn render_generators(
    out: &mut String,
    generators: &[Generator],
    locals: Option<&[GeneratorLocalsDump]>,
) {
    let locals: HashMap<u64, &GeneratorLocalsDump> = locals
        .unwrap_or_default()
        .iter()
        .map(|l| (l.address, l))
        .collect();
    let _ = writeln!(out, "\nGenerators and coroutines ({}):", generators.len());
    for generator in generators {
        let kind = match generator.kind {
            crate::generators::GeneratorKind::Generator => "generator",
            crate::generators::GeneratorKind::Coroutine => "coroutine",
            crate::generators::GeneratorKind::AsyncGenerator => "async generator",
        };
        let state = format!("{:?}", generator.state).to_lowercase();
        let _ = write!(
            out,
            "    0x{:x} {kind} {} [{state}] {}",
            generator.address,
            esc(&generator.qualname),
            generator_place(generator)
        );
        if let (Some(awaiting), Some(kind)) = (generator.awaiting, &generator.awaiting_type) {
            let _ = write!(out, " -> {} 0x{awaiting:x}", esc(kind));
        }
        let _ = writeln!(out);
        if let Some(frame) = locals.get(&generator.address) {
            if !frame.locals.is_empty() {
                let _ = writeln!(out, "        locals:");
                render_variables(out, "            ", &frame.locals);
            }
        }
    }
}

/// The task tree like `python -m asyncio pstree`: tasks nobody awaits at
/// the roots, each task's coroutine stack under it, then the tasks it
/// awaits.
fn render_tasks(out: &mut String, tasks: &[Task], generators: &[Generator]) {
    let _ = writeln!(out, "\nAsyncio tasks ({}):", tasks.len());
    let by_task: HashMap<u64, &Task> = tasks.iter().map(|t| (t.address, t)).collect();
    let by_generator: HashMap<u64, &Generator> =
        generators.iter().map(|g| (g.address, g)).collect();
    let mut seen = std::collections::HashSet::new();
    let mut roots: Vec<&Task> = tasks.iter().filter(|t| t.awaited_by.is_empty()).collect();
    // Tasks only in cycles still get shown once.
    roots.extend(tasks.iter().filter(|t| !t.awaited_by.is_empty()));
    for task in roots {
        render_task(out, task, 1, &by_task, &by_generator, &mut seen);
    }
}

fn render_task(
    out: &mut String,
    task: &Task,
    depth: usize,
    by_task: &HashMap<u64, &Task>,
    by_generator: &HashMap<u64, &Generator>,
    seen: &mut std::collections::HashSet<u64>,
) {
    if depth > 64 || !seen.insert(task.address) {
        return;
    }
    let indent = "    ".repeat(depth);
    let running = if task.running { ", running" } else { "" };
    let _ = writeln!(
        out,
        "{indent}(T) {} [{}{running}] 0x{:x}",
        esc(&task.name),
        esc(&task.state),
        task.address
    );
    for address in &task.coroutine_stack {
        if let Some(generator) = by_generator.get(address) {
            let _ = writeln!(
                out,
                "{indent}      {} {}",
                esc(&generator.qualname),
                generator_place(generator)
            );
        }
    }
    if let Some(awaiting) = &task.awaiting {
        let _ = writeln!(
            out,
            "{indent}      awaits {} 0x{:x}",
            esc(&awaiting.type_name),
            awaiting.address
        );
    }
    for child in &task.awaiting_tasks {
        if let Some(child) = by_task.get(child) {
            render_task(out, child, depth + 1, by_task, by_generator, seen);
        }
    }
}
