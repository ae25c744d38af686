//! `pydeep-view scopes` and `generators`: the threads of a snapshot with
//! their frames and variables, and its generators, coroutines and asyncio
//! tasks, as text or JSON (one JSON document per snapshot and line).

use std::collections::{HashMap, HashSet};
use std::io::Write;

use pydeep_format::proto::{self, GeneratorKind, GeneratorState, ThreadActivity, VariableKind};
use pydeep_format::text::escape;
use pydeep_format::Tables;
use serde_json::{json, Value};

use crate::snapshots::{
    frame_json, frame_label, python_version, stamp, thread_matches, title, Selected,
};

/// What a scopes view shows besides the threads.
#[derive(Debug, Clone, Default)]
pub struct ScopesView {
    /// Only the threads matching one of these (names or numbers, see
    /// [`thread_matches`]); empty: every thread.
    pub threads: Vec<String>,
    /// The snapshot's generators, coroutines and asyncio tasks too
    /// (`pydeep dump --async`, `pydeep-view scopes --async`).
    pub asynchronous: bool,
}

/// Whether the snapshot's variables (`locals`) and module globals
/// (`globals`) were read: as its flags say, or, in recordings before
/// them, as its frames show.
fn read_scopes(snapshot: &proto::Snapshot) -> (bool, bool) {
    let frames = || snapshot.threads.iter().flat_map(|t| &t.frames);
    let locals = snapshot.locals
        || frames().any(|f| !f.locals.is_empty() || !f.cells.is_empty() || !f.free_vars.is_empty());
    let globals = snapshot.globals || frames().any(|f| !f.globals.is_empty());
    (locals, globals)
}

/// The JSON of one snapshot's scopes: the one schema of `pydeep dump
/// --json` and `pydeep-view scopes --json` (notes/viewer.md).
pub fn scopes_json(
    tables: &Tables,
    header: &proto::Header,
    selected: &Selected,
    view: &ScopesView,
) -> Value {
    let mut root = stamp(header, selected);
    let snapshot = &selected.snapshot;
    let (locals_read, globals_read) = read_scopes(snapshot);
    let list: Vec<Value> = snapshot
        .threads
        .iter()
        .filter(|t| thread_matches(tables, t.thread, &view.threads))
        .map(|thread| {
            let definition = tables.threads.get(&thread.thread);
            let frames: Vec<Value> = thread
                .frames
                .iter()
                .map(|frame| {
                    let mut map = frame_json(tables, frame.frame);
                    map.insert("name".into(), json!(code_name(tables, frame.frame)));
                    map.insert(
                        "frame_address".into(),
                        json!((frame.address != 0).then_some(frame.address)),
                    );
                    if locals_read {
                        map.insert(
                            "locals".into(),
                            frame_variables(frame)
                                .into_iter()
                                .map(|v| variable_json(tables, v))
                                .collect(),
                        );
                    }
                    if globals_read {
                        if frame.globals_listed_at != 0 {
                            map.insert("globals_listed_at".into(), json!(frame.globals_listed_at));
                        } else {
                            map.insert(
                                "globals".into(),
                                frame
                                    .globals
                                    .iter()
                                    .map(|v| variable_json(tables, v))
                                    .collect(),
                            );
                        }
                    }
                    Value::Object(map)
                })
                .collect();
            json!({
                "thread": thread.thread,
                "thread_id": definition.map(|t| t.thread_id),
                "native_id": definition.map(|t| t.native_id),
                "name": definition
                    .filter(|t| t.name != 0)
                    .map(|t| tables.string(t.name)),
                "interpreter": definition.map(|t| t.interpreter),
                "is_main": definition.is_some_and(|t| t.is_main),
                "active": activity(thread),
                "holds_gil": thread.holds_gil,
                "stack": thread.stack,
                "frames": frames,
            })
        })
        .collect();
    root.insert("python_version".into(), json!(python_version(header)));
    root.insert("threads".into(), Value::Array(list));
    if view.asynchronous {
        let (generators, tasks) = async_json(tables, header, snapshot);
        root.insert("generators".into(), generators);
        root.insert("tasks".into(), tasks);
    }
    root.insert("warnings".into(), json!(snapshot.warnings));
    Value::Object(root)
}

/// True if the thread was running, false if waiting, None if the snapshot
/// did not record it.
fn activity(thread: &proto::ThreadScopes) -> Option<bool> {
    match ThreadActivity::try_from(thread.activity).unwrap_or(ThreadActivity::ActivityUnspecified) {
        ThreadActivity::ActivityActive => Some(true),
        ThreadActivity::ActivityIdle => Some(false),
        ThreadActivity::ActivityUnspecified => None,
    }
}

/// `co_name` of frame `id`'s code object.
fn code_name(tables: &Tables, id: u64) -> Option<String> {
    let code = tables
        .frames
        .get(&id)
        .and_then(|f| tables.code_objects.get(&f.code))?;
    Some(tables.string(code.name).to_string())
}

/// How a variable is bound ("local", "cell", "free", "global"), and
/// whether it is a parameter.
fn binding(var: &proto::Variable) -> (&'static str, bool) {
    match VariableKind::try_from(var.kind).unwrap_or(VariableKind::VariableUnspecified) {
        VariableKind::VariableArgument => ("local", true),
        VariableKind::VariableLocal => ("local", var.argument),
        VariableKind::VariableCell => ("cell", var.argument),
        VariableKind::VariableFree => ("free", var.argument),
        VariableKind::VariableGlobal => ("global", false),
        VariableKind::VariableUnspecified => ("unknown", var.argument),
    }
}

/// `{"name", "binding", "argument", "cell"?, "value"}`: `value` is null
/// when unbound, else [`value_json`].
fn variable_json(tables: &Tables, var: &proto::Variable) -> Value {
    let (binding, argument) = binding(var);
    let mut map = serde_json::Map::new();
    map.insert("name".into(), json!(tables.string(var.name)));
    map.insert("binding".into(), json!(binding));
    map.insert("argument".into(), json!(argument));
    if var.cell != 0 {
        map.insert("cell".into(), json!(var.cell));
    }
    map.insert(
        "value".into(),
        if var.unbound {
            Value::Null
        } else {
            value_json(tables, var)
        },
    );
    Value::Object(map)
}

/// `{"address", "type", "repr", "size", "implausible_size"?, "refcount",
/// "immortal", "length"?, "attributes"?}` of the value bound to `var`;
/// `repr` and `size` are null when not recorded.
fn value_json(tables: &Tables, var: &proto::Variable) -> Value {
    let mut map = serde_json::Map::new();
    map.insert("address".into(), json!(var.address));
    map.insert(
        "type".into(),
        json!((var.type_name != 0).then(|| tables.string(var.type_name))),
    );
    map.insert(
        "repr".into(),
        json!((!var.value.is_empty()).then_some(var.value.as_str())),
    );
    map.insert("size".into(), json!((var.size != 0).then_some(var.size)));
    if var.implausible_size != 0 {
        map.insert("implausible_size".into(), json!(var.implausible_size));
    }
    map.insert("refcount".into(), json!(var.refcount));
    map.insert("immortal".into(), json!(var.immortal));
    if let Some(length) = var.length {
        map.insert("length".into(), json!(length));
    }
    if !var.attributes.is_empty() {
        let attributes: Vec<Value> = var
            .attributes
            .iter()
            .map(|a| json!({"name": tables.string(a.name), "value": value_json(tables, a)}))
            .collect();
        map.insert("attributes".into(), Value::Array(attributes));
    }
    Value::Object(map)
}

/// The first line of a scopes view: a live process (`pydeep dump`) as
/// py-spy names it, a recording's snapshot by its number and time.
fn scopes_title(header: &proto::Header, selected: &Selected) -> String {
    let version = python_version(header).unwrap_or_else(|| "?".into());
    if header.mode == LIVE_MODE {
        format!(
            "Process {}: CPython {version} (paused {:.2} ms)",
            selected.snapshot.pid,
            selected.snapshot.pause_ns as f64 / 1e6
        )
    } else {
        title(header, selected)
    }
}

/// The `Header.mode` of the one-snapshot recordings the live commands
/// build in memory (`pydeep dump`, `heap`, `objects`).
pub const LIVE_MODE: &str = "live";

/// One snapshot's scopes as text, like `py-spy dump`: one block per
/// thread (its ids, name and state), frames innermost first, variables
/// indented under their frame; with `view.asynchronous` the generators
/// and the asyncio task tree after them. Every name and value the target
/// controls is escaped.
pub fn write_scopes_text(
    out: &mut dyn Write,
    tables: &Tables,
    header: &proto::Header,
    selected: &Selected,
    view: &ScopesView,
) -> std::io::Result<()> {
    let snapshot = &selected.snapshot;
    writeln!(out, "{}", scopes_title(header, selected))?;
    for thread in &snapshot.threads {
        if !thread_matches(tables, thread.thread, &view.threads) {
            continue;
        }
        let definition = tables.threads.get(&thread.thread);
        let name = definition
            .filter(|t| t.name != 0)
            .map_or(String::new(), |t| format!(" \"{}\"", tables.name(t.name)));
        let mut state = Vec::new();
        match activity(thread) {
            Some(true) => state.push("active"),
            Some(false) => state.push("idle"),
            None => {}
        }
        if thread.holds_gil {
            state.push("gil");
        }
        if definition.is_some_and(|t| t.is_main) {
            state.push("main");
        }
        let state = if state.is_empty() {
            String::new()
        } else {
            format!(" ({})", state.join(", "))
        };
        writeln!(
            out,
            "\nThread {} (native {}){name}{state}",
            definition.map_or(0, |t| t.thread_id),
            definition.map_or(0, |t| t.native_id)
        )?;
        for frame in &thread.frames {
            let label = frame_label(tables, frame.frame);
            let line = if label.line == 0 {
                "?".to_string()
            } else {
                label.line.to_string()
            };
            writeln!(out, "    {} ({}:{line})", label.qualname, label.file)?;
            let locals = frame_variables(frame);
            if !locals.is_empty() {
                writeln!(out, "        locals:")?;
                write_variables(out, tables, "            ", &locals)?;
            }
            if !frame.globals.is_empty() {
                writeln!(out, "        globals:")?;
                let globals: Vec<&proto::Variable> = frame.globals.iter().collect();
                write_variables(out, tables, "            ", &globals)?;
            }
            if frame.globals_listed_at != 0 {
                let listing = snapshot
                    .threads
                    .iter()
                    .flat_map(|t| &t.frames)
                    .find(|f| f.address == frame.globals_listed_at)
                    .map(|f| frame_label(tables, f.frame));
                match listing {
                    Some(at) => writeln!(
                        out,
                        "        globals: listed at {} ({}:{})",
                        at.qualname, at.file, at.line
                    )?,
                    None => writeln!(
                        out,
                        "        globals: listed at frame 0x{:x}",
                        frame.globals_listed_at
                    )?,
                }
            }
        }
    }
    if view.asynchronous {
        write_async_sections(out, tables, header, snapshot)?;
    }
    for warning in &snapshot.warnings {
        writeln!(out, "\nwarning: {}", escape(warning))?;
    }
    writeln!(out)
}

/// One line per variable: name, tags, type and rendering.
fn write_variables(
    out: &mut dyn Write,
    tables: &Tables,
    indent: &str,
    vars: &[&proto::Variable],
) -> std::io::Result<()> {
    for var in vars {
        let (binding, argument) = binding(var);
        let mut tags = Vec::new();
        if argument {
            tags.push("arg");
        }
        if matches!(binding, "cell" | "free") {
            tags.push(binding);
        }
        let tags = if tags.is_empty() {
            String::new()
        } else {
            format!(" [{}]", tags.join(", "))
        };
        let type_name = if var.type_name == 0 {
            "?".into()
        } else {
            tables.name(var.type_name)
        };
        let value = if var.unbound {
            "<unbound>".to_string()
        } else if var.value.is_empty() {
            format!("{type_name} at 0x{:x}", var.address)
        } else {
            format!("{type_name} = {}", escape(&var.value))
        };
        writeln!(out, "{indent}{}{tags}: {value}", tables.name(var.name))?;
    }
    Ok(())
}

fn generator_kind(kind: i32) -> &'static str {
    match GeneratorKind::try_from(kind).unwrap_or(GeneratorKind::GeneratorUnspecified) {
        GeneratorKind::Generator => "generator",
        GeneratorKind::Coroutine => "coroutine",
        GeneratorKind::AsyncGenerator => "async_generator",
        GeneratorKind::GeneratorUnspecified => "unknown",
    }
}

/// The state as `inspect` names it: `inspect`'s state
/// without its GEN_/CORO_/AGEN_ prefix, lower case.
fn generator_state(state: i32) -> &'static str {
    match GeneratorState::try_from(state).unwrap_or(GeneratorState::StateUnspecified) {
        GeneratorState::StateCreated => "created",
        GeneratorState::StateSuspended => "suspended",
        GeneratorState::StateRunning => "running",
        GeneratorState::StateClosed => "closed",
        GeneratorState::StateUnspecified => "unknown",
    }
}

/// A generator's line and instruction offset as `gi_frame.f_lineno` and
/// `f_lasti` report them in-process (None when closed). A generator not
/// yet started reports its `def` line (`co_firstlineno`), and before 3.11
/// `f_lasti` -1 (Objects/frameobject.c, Python/ceval.c of 3.9/3.10); the
/// recording stores its frame at offset 0, whose line is the first line
/// of the body.
fn generator_position(
    tables: &Tables,
    header: &proto::Header,
    generator: &proto::GeneratorInfo,
    frame: Option<&crate::snapshots::FrameLabel>,
) -> (Option<u32>, Option<i64>) {
    let Some(frame) = frame else {
        return (None, None);
    };
    if generator.state == GeneratorState::StateCreated as i32 {
        let first_line = tables
            .frames
            .get(&generator.frame)
            .and_then(|f| tables.code_objects.get(&f.code))
            .map(|c| c.first_line)
            .filter(|&l| l != 0);
        let has_offset = header
            .python_version
            .as_ref()
            .is_some_and(|v| pydeep_cpython::created_generator_has_offset(v.major, v.minor));
        let offset = if has_offset {
            i64::from(frame.instruction_offset)
        } else {
            -1
        };
        return (first_line, Some(offset));
    }
    (
        (frame.line != 0).then_some(frame.line),
        Some(i64::from(frame.instruction_offset)),
    )
}

/// The generators and tasks of a snapshot as JSON lists (the
/// `generators` and `tasks` of `pydeep-view generators --json`, and of
/// `scopes --async` and `pydeep dump --async --json`).
fn async_json(
    tables: &Tables,
    header: &proto::Header,
    snapshot: &proto::Snapshot,
) -> (Value, Value) {
    let generators: Vec<Value> = snapshot
        .generators
        .iter()
        .map(|g| {
            let frame = (g.frame != 0).then(|| frame_label(tables, g.frame));
            let (line, offset) = generator_position(tables, header, g, frame.as_ref());
            let mut map = json!({
                "address": g.address,
                "kind": generator_kind(g.kind),
                "state": generator_state(g.state),
                "name": (g.name != 0).then(|| tables.string(g.name)),
                "qualname": tables.string(g.qualname),
                "file": if g.file != 0 {
                    Some(tables.string(g.file).to_string())
                } else {
                    frame.as_ref().map(|f| f.file.clone())
                },
                "line": line,
                "instruction_offset": offset,
                "frame": (g.frame != 0).then_some(g.frame),
                "awaiting": (g.awaiting != 0).then_some(g.awaiting),
                "awaiting_type": (g.awaiting_type != 0).then(|| tables.string(g.awaiting_type)),
            });
            if !g.locals.is_empty() {
                map["locals"] = g.locals.iter().map(|v| variable_json(tables, v)).collect();
            }
            map
        })
        .collect();
    let tasks: Vec<Value> = snapshot
        .tasks
        .iter()
        .map(|t| {
            let stack: Vec<Value> = tables
                .stack_frames(t.stack)
                .into_iter()
                .map(|f| Value::Object(frame_json(tables, f)))
                .collect();
            json!({
                "address": t.address,
                "type": (t.type_name != 0).then(|| tables.string(t.type_name)),
                "implementation": (!t.implementation.is_empty()).then_some(t.implementation.as_str()),
                "name": t.name,
                "coroutine": t.coroutine,
                "coroutine_stack": t.coroutine_stack,
                "stack": stack,
                "state": t.state,
                "done": t.done,
                "running": t.running,
                "awaiting": (t.awaiting != 0).then_some(t.awaiting),
                "awaiting_type": (t.awaiting_type != 0).then(|| tables.string(t.awaiting_type)),
                "awaiting_tasks": t.awaiting_tasks,
                "awaited_by": t.awaited_by,
            })
        })
        .collect();
    (Value::Array(generators), Value::Array(tasks))
}

/// The JSON of one snapshot's generators and tasks.
pub fn generators_json(tables: &Tables, header: &proto::Header, selected: &Selected) -> Value {
    let mut root = stamp(header, selected);
    let (generators, tasks) = async_json(tables, header, &selected.snapshot);
    root.insert("generators".into(), generators);
    root.insert("tasks".into(), tasks);
    Value::Object(root)
}

/// One snapshot's generators and tasks as text.
pub fn write_generators_text(
    out: &mut dyn Write,
    tables: &Tables,
    header: &proto::Header,
    selected: &Selected,
) -> std::io::Result<()> {
    writeln!(out, "{}", title(header, selected))?;
    write_async_sections(out, tables, header, &selected.snapshot)?;
    writeln!(out)
}

/// Where a generator is: `FILE:LINE (offset N)`, or its file.
fn generator_place(
    tables: &Tables,
    header: &proto::Header,
    generator: &proto::GeneratorInfo,
) -> String {
    let label = (generator.frame != 0).then(|| frame_label(tables, generator.frame));
    let Some(frame) = &label else {
        return tables.name(generator.file).into_owned();
    };
    match generator_position(tables, header, generator, Some(frame)) {
        (Some(line), Some(offset)) => format!("{}:{line} (offset {offset})", frame.file),
        _ => frame.file.clone(),
    }
}

/// The generators and coroutines (with their frames' variables when
/// read), then the asyncio task tree like `python -m asyncio pstree`.
fn write_async_sections(
    out: &mut dyn Write,
    tables: &Tables,
    header: &proto::Header,
    snapshot: &proto::Snapshot,
) -> std::io::Result<()> {
    writeln!(
        out,
        "\nGenerators and coroutines ({}):",
        snapshot.generators.len()
    )?;
    for g in &snapshot.generators {
        let kind =
            match GeneratorKind::try_from(g.kind).unwrap_or(GeneratorKind::GeneratorUnspecified) {
                GeneratorKind::AsyncGenerator => "async generator",
                _ => generator_kind(g.kind),
            };
        write!(
            out,
            "    0x{:x} {kind} {} [{}] {}",
            g.address,
            tables.name(g.qualname),
            generator_state(g.state),
            generator_place(tables, header, g)
        )?;
        if g.awaiting != 0 && g.awaiting_type != 0 {
            write!(
                out,
                " -> {} 0x{:x}",
                tables.name(g.awaiting_type),
                g.awaiting
            )?;
        }
        writeln!(out)?;
        if !g.locals.is_empty() {
            writeln!(out, "        locals:")?;
            let locals: Vec<&proto::Variable> = g.locals.iter().collect();
            write_variables(out, tables, "            ", &locals)?;
        }
    }
    writeln!(out, "\nAsyncio tasks ({}):", snapshot.tasks.len())?;
    let tree = TaskTree {
        tables,
        header,
        tasks: snapshot.tasks.iter().map(|t| (t.address, t)).collect(),
        generators: snapshot.generators.iter().map(|g| (g.address, g)).collect(),
    };
    let mut seen = HashSet::new();
    // Tasks nobody awaits at the roots; tasks only in cycles still shown
    // once.
    let roots = snapshot
        .tasks
        .iter()
        .filter(|t| t.awaited_by.is_empty())
        .chain(snapshot.tasks.iter().filter(|t| !t.awaited_by.is_empty()));
    for task in roots {
        tree.write(out, task, 1, &mut seen)?;
    }
    Ok(())
}

/// The tasks of a snapshot, by address, for the task tree.
struct TaskTree<'a> {
    tables: &'a Tables,
    header: &'a proto::Header,
    tasks: HashMap<u64, &'a proto::AsyncTaskInfo>,
    generators: HashMap<u64, &'a proto::GeneratorInfo>,
}

impl TaskTree<'_> {
    /// `task` at `depth`, its coroutine stack under it, then the tasks it
    /// awaits.
    fn write(
        &self,
        out: &mut dyn Write,
        task: &proto::AsyncTaskInfo,
        depth: usize,
        seen: &mut HashSet<u64>,
    ) -> std::io::Result<()> {
        if depth > 64 || !seen.insert(task.address) {
            return Ok(());
        }
        let indent = "    ".repeat(depth);
        let running = if task.running { ", running" } else { "" };
        let state = if task.state.is_empty() {
            if task.done { "done" } else { "pending" }.into()
        } else {
            escape(&task.state)
        };
        writeln!(
            out,
            "{indent}(T) {} [{state}{running}] 0x{:x}",
            escape(&task.name),
            task.address
        )?;
        if task.coroutine_stack.is_empty() {
            // Recordings before coroutine stacks were kept: the stack's frames.
            for frame in self.tables.stack_frames(task.stack).into_iter() {
                let label = frame_label(self.tables, frame);
                writeln!(
                    out,
                    "{indent}      {} {}:{}",
                    label.qualname, label.file, label.line
                )?;
            }
        }
        for address in &task.coroutine_stack {
            if let Some(generator) = self.generators.get(address) {
                writeln!(
                    out,
                    "{indent}      {} {}",
                    self.tables.name(generator.qualname),
                    generator_place(self.tables, self.header, generator)
                )?;
            }
        }
        if task.awaiting != 0 {
            let type_name = if task.awaiting_type == 0 {
                "?".into()
            } else {
                self.tables.name(task.awaiting_type)
            };
            writeln!(
                out,
                "{indent}      awaits {type_name} 0x{:x}",
                task.awaiting
            )?;
        }
        for child in &task.awaiting_tasks {
            if let Some(child) = self.tasks.get(child) {
                self.write(out, child, depth + 1, seen)?;
            }
        }
        Ok(())
    }
}

/// A frame's local scope as one list: its arguments first (as Python
/// declares them, and as `py-spy dump` shows them), then its other locals,
/// cell and free variables, each group in recorded order. The record keeps
/// cells apart, so an argument that is also a cell still comes first.
fn frame_variables(frame: &proto::FrameScopes) -> Vec<&proto::Variable> {
    let all = || {
        frame
            .locals
            .iter()
            .chain(&frame.cells)
            .chain(&frame.free_vars)
    };
    all()
        .filter(|v| v.argument)
        .chain(all().filter(|v| !v.argument))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn variable(name: u64, argument: bool) -> proto::Variable {
        proto::Variable {
            name,
            argument,
            ..Default::default()
        }
    }

    #[test]
    fn arguments_come_first_even_when_they_are_cells() {
        let frame = proto::FrameScopes {
            locals: vec![variable(1, false), variable(2, true)],
            cells: vec![variable(3, true), variable(4, false)],
            free_vars: vec![variable(5, false)],
            ..Default::default()
        };
        let order: Vec<u64> = frame_variables(&frame).iter().map(|v| v.name).collect();
        assert_eq!(order, [2, 3, 1, 4, 5]);
    }
}
