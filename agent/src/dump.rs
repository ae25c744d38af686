//! `pydeep dump`: every thread's stack of a paused target, optionally with
//! each frame's locals, cells, free variables and module globals, as text
//! or as the JSON documented in notes/snapshots.md.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Instant;

use pydeep_format::linetable::LineIndex;
use serde::Serialize;

use crate::cpython::code::{CodeObject, LineTableKind};
use crate::cpython::objects::ObjectReader;
use crate::objects::{Kind, Objects, Rendering};
use crate::scopes::{frame_globals, frame_variables, thread_frames, Binding, Variable};
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
}

impl Default for DumpOptions {
    fn default() -> Self {
        DumpOptions {
            locals: false,
            globals: false,
            max_depth: 4096,
            max_globals: 200,
            rendering: Rendering::default(),
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
    /// Module globals (only with `--globals`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub globals: Option<Vec<VariableDump>>,
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
    /// `sys.getsizeof()` (null where not reproduced).
    pub size: Option<u64>,
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
pub fn dump(target: &mut Target, options: &DumpOptions) -> Result<Dump, ReadError> {
    let guard = target.pause()?;
    let started = Instant::now();
    let mut samples: Vec<ThreadSample> = Vec::new();
    target.sample_threads(&mut samples)?;
    let names = target.thread_names().unwrap_or_default();
    let target = &*target;
    let objects = Objects::new(target.memory(), target.layout());
    let reader = ObjectReader::new(target.memory(), target.layout());
    let mut codes: HashMap<u64, Option<(CodeObject, LineIndex)>> = HashMap::new();
    let mut threads = Vec::new();
    for sample in &samples {
        let frames = thread_frames(
            target.memory(),
            target.layout(),
            sample.thread_state,
            options.max_depth,
        );
        let mut frame_dumps = Vec::new();
        for frame in &frames {
            let code = codes.entry(frame.code).or_insert_with(|| {
                reader.code_object(frame.code).ok().map(|(code, _)| {
                    let lines = LineIndex::new(
                        line_table_kind(code.line_table_kind),
                        code.first_line,
                        &code.line_table,
                    );
                    (code, lines)
                })
            });
            let Some((code, lines)) = code.as_ref() else {
                continue;
            };
            let locals = options.locals.then(|| {
                frame_variables(&objects, frame, code)
                    .map(|vars| variables(&objects, &vars, &options.rendering))
                    .unwrap_or_default()
            });
            let globals = options.globals.then(|| {
                frame_globals(&objects, frame.globals, options.max_globals)
                    .map(|vars| variables(&objects, &vars, &options.rendering))
                    .unwrap_or_default()
            });
            frame_dumps.push(FrameDump {
                name: code.name.clone(),
                qualname: code.qualname.clone(),
                file: code.filename.clone(),
                line: lines.line(frame.instruction_offset),
                instruction_offset: frame.instruction_offset,
                is_generator: frame.is_generator,
                frame_address: frame.address,
                locals,
                globals,
            });
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
    let pause_seconds = started.elapsed().as_secs_f64();
    drop(guard);
    Ok(Dump {
        schema: DUMP_SCHEMA,
        pid: target.pid(),
        python_version: target.python_version().to_string(),
        pause_seconds,
        threads,
    })
}

fn line_table_kind(kind: LineTableKind) -> pydeep_format::proto::LineTableKind {
    use pydeep_format::proto::LineTableKind as Proto;
    match kind {
        LineTableKind::Lnotab => Proto::LineTableLnotab,
        LineTableKind::Python310 => Proto::LineTable310,
        LineTableKind::Locations => Proto::LineTableLocations,
    }
}

fn variables(objects: &Objects<'_>, vars: &[Variable], rendering: &Rendering) -> Vec<VariableDump> {
    vars.iter()
        .map(|var| VariableDump {
            name: var.name.clone(),
            binding: var.binding,
            argument: var.is_argument,
            cell: (var.cell != 0).then_some(var.cell),
            value: (var.value != 0).then(|| value(objects, var.value, rendering, true)),
        })
        .collect()
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
                name,
                value: value(objects, value_address, rendering, false),
            })
            .collect()
    });
    ValueDump {
        address,
        type_name: info.type_info.name.clone(),
        repr: objects.render(address, rendering),
        size: objects.getsizeof(&info),
        refcount: info.refcount,
        immortal: info.immortal,
        length: objects.length(&info),
        attributes,
    }
}

/// The dump as text, like `py-spy dump`: one block per thread, frames
/// innermost first, variables indented under their frame.
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
            .map_or(String::new(), |n| format!(" \"{n}\""));
        let _ = writeln!(
            out,
            "\nThread {} (native {}){name} ({})",
            thread.thread_id,
            thread.native_id,
            state.join(", ")
        );
        for frame in &thread.frames {
            let line = frame.line.map_or("?".to_string(), |l| l.to_string());
            let _ = writeln!(out, "    {} ({}:{line})", frame.qualname, frame.file);
            for (title, vars) in [("locals", &frame.locals), ("globals", &frame.globals)] {
                let Some(vars) = vars else { continue };
                if vars.is_empty() {
                    continue;
                }
                let _ = writeln!(out, "        {title}:");
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
                        format!("{} = {}", v.type_name, v.repr)
                    });
                    let _ = writeln!(out, "            {}{tags}: {value}", var.name);
                }
            }
        }
    }
    out
}
