//! `pydeep-view scopes` and `generators`: the threads of a snapshot with
//! their frames and variables, and its generators, coroutines and asyncio
//! tasks, as text or JSON (one JSON document per snapshot and line).

use std::io::Write;

use pydeep_format::proto::{self, GeneratorKind, GeneratorState, VariableKind};
use pydeep_format::text::escape;
use pydeep_format::Tables;
use serde_json::{json, Value};

use crate::snapshots::{frame_json, frame_label, stamp, thread_matches, title, Selected};

/// The JSON of one snapshot's scopes (schema in notes/viewer.md).
pub fn scopes_json(
    tables: &Tables,
    header: &proto::Header,
    selected: &Selected,
    threads: &[String],
) -> Value {
    let mut root = stamp(header, selected);
    let list: Vec<Value> = selected
        .snapshot
        .threads
        .iter()
        .filter(|t| thread_matches(tables, t.thread, threads))
        .map(|thread| {
            let definition = tables.threads.get(&thread.thread);
            let frames: Vec<Value> = thread
                .frames
                .iter()
                .map(|frame| {
                    let mut map = frame_json(tables, frame.frame);
                    for (key, vars) in [
                        ("locals", &frame.locals),
                        ("cells", &frame.cells),
                        ("free", &frame.free_vars),
                        ("globals", &frame.globals),
                    ] {
                        map.insert(
                            key.into(),
                            vars.iter().map(|v| variable_json(tables, v)).collect(),
                        );
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
                "is_main": definition.is_some_and(|t| t.is_main),
                "stack": thread.stack,
                "frames": frames,
            })
        })
        .collect();
    root.insert("threads".into(), Value::Array(list));
    root.insert("warnings".into(), json!(selected.snapshot.warnings));
    Value::Object(root)
}

fn kind_name(kind: i32) -> &'static str {
    match VariableKind::try_from(kind).unwrap_or(VariableKind::VariableUnspecified) {
        VariableKind::VariableArgument => "argument",
        VariableKind::VariableLocal => "local",
        VariableKind::VariableCell => "cell",
        VariableKind::VariableFree => "free",
        VariableKind::VariableGlobal => "global",
        VariableKind::VariableUnspecified => "unknown",
    }
}

/// `{"name", "kind", "address", "type", "value", "unbound"}`; `address`,
/// `type` and `value` are null when unbound, `value` also when values
/// were not recorded.
fn variable_json(tables: &Tables, var: &proto::Variable) -> Value {
    json!({
        "name": tables.string(var.name),
        "kind": kind_name(var.kind),
        "address": (!var.unbound).then_some(var.address),
        "type": (var.type_name != 0).then(|| tables.string(var.type_name)),
        "value": (!var.unbound && !var.value.is_empty()).then_some(var.value.as_str()),
        "unbound": var.unbound,
    })
}

/// One snapshot's scopes as text, like `pydeep dump`.
pub fn write_scopes_text(
    out: &mut dyn Write,
    tables: &Tables,
    header: &proto::Header,
    selected: &Selected,
    threads: &[String],
) -> std::io::Result<()> {
    writeln!(out, "{}", title(header, selected))?;
    for thread in &selected.snapshot.threads {
        if !thread_matches(tables, thread.thread, threads) {
            continue;
        }
        let definition = tables.threads.get(&thread.thread);
        let name = definition
            .filter(|t| t.name != 0)
            .map_or(String::new(), |t| format!(" \"{}\"", tables.name(t.name)));
        writeln!(
            out,
            "\nThread {} (native {}){name}",
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
            for var in frame
                .locals
                .iter()
                .chain(&frame.cells)
                .chain(&frame.free_vars)
                .chain(&frame.globals)
            {
                let value = if var.unbound {
                    "<unbound>".to_string()
                } else if var.value.is_empty() {
                    format!("{} at 0x{:x}", tables.name(var.type_name), var.address)
                } else {
                    format!("{} = {}", tables.name(var.type_name), escape(&var.value))
                };
                writeln!(
                    out,
                    "        {} [{}]: {value}",
                    tables.name(var.name),
                    kind_name(var.kind)
                )?;
            }
        }
    }
    for warning in &selected.snapshot.warnings {
        writeln!(out, "warning: {}", escape(warning))?;
    }
    writeln!(out)
}

fn generator_kind(kind: i32) -> &'static str {
    match GeneratorKind::try_from(kind).unwrap_or(GeneratorKind::GeneratorUnspecified) {
        GeneratorKind::Generator => "generator",
        GeneratorKind::Coroutine => "coroutine",
        GeneratorKind::AsyncGenerator => "async_generator",
        GeneratorKind::GeneratorUnspecified => "unknown",
    }
}

/// The state as `pydeep dump --async` names it: `inspect`'s state
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

/// The JSON of one snapshot's generators and tasks.
pub fn generators_json(tables: &Tables, header: &proto::Header, selected: &Selected) -> Value {
    let mut root = stamp(header, selected);
    let snapshot = &selected.snapshot;
    let generators: Vec<Value> = snapshot
        .generators
        .iter()
        .map(|g| {
            let frame = (g.frame != 0).then(|| frame_label(tables, g.frame));
            let (line, offset) = generator_position(tables, header, g, frame.as_ref());
            json!({
                "address": g.address,
                "kind": generator_kind(g.kind),
                "state": generator_state(g.state),
                "qualname": tables.string(g.qualname),
                "file": frame.as_ref().map(|f| f.file.clone()),
                "line": line,
                "instruction_offset": offset,
                "frame": (g.frame != 0).then_some(g.frame),
                "awaiting": (g.awaiting != 0).then_some(g.awaiting),
                "awaiting_type": (g.awaiting_type != 0).then(|| tables.string(g.awaiting_type)),
            })
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
                "name": t.name,
                "coroutine": t.coroutine,
                "stack": stack,
                "state": t.state,
                "awaiting": (t.awaiting != 0).then_some(t.awaiting),
                "awaiting_type": (t.awaiting_type != 0).then(|| tables.string(t.awaiting_type)),
                "awaiting_tasks": t.awaiting_tasks,
                "awaited_by": t.awaited_by,
                "done": t.done,
            })
        })
        .collect();
    root.insert("generators".into(), Value::Array(generators));
    root.insert("tasks".into(), Value::Array(tasks));
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
    for g in &selected.snapshot.generators {
        let label = (g.frame != 0).then(|| frame_label(tables, g.frame));
        let at = match (
            &label,
            generator_position(tables, header, g, label.as_ref()).0,
        ) {
            (Some(label), Some(line)) => format!(" at {}:{line}", label.file),
            (Some(label), None) => format!(" in {}", label.file),
            _ => String::new(),
        };
        let awaiting = if g.awaiting == 0 {
            String::new()
        } else {
            format!(" awaiting 0x{:x}", g.awaiting)
        };
        writeln!(
            out,
            "  {} {} 0x{:x} {}{at}{awaiting}",
            generator_state(g.state),
            tables.name(g.qualname),
            g.address,
            generator_kind(g.kind),
        )?;
    }
    for t in &selected.snapshot.tasks {
        writeln!(
            out,
            "  task {:?} 0x{:x} {}{}",
            t.name,
            t.address,
            if t.state.is_empty() {
                if t.done {
                    "done".into()
                } else {
                    "pending".into()
                }
            } else {
                escape(&t.state)
            },
            if t.awaited_by.is_empty() {
                String::new()
            } else {
                format!(
                    " awaited by {}",
                    t.awaited_by
                        .iter()
                        .map(|a| format!("0x{a:x}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        )?;
        for frame in tables.stack_frames(t.stack).into_iter().rev() {
            let label = frame_label(tables, frame);
            writeln!(
                out,
                "      {} ({}:{})",
                label.qualname, label.file, label.line
            )?;
        }
    }
    writeln!(out)
}
