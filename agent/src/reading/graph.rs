//! `pydeep objects`: the objects reachable from a root, breadth first,
//! bounded by depth and object count, cycle-safe, as labelled nodes and
//! edges. `snapshot::graph_record` turns them into a snapshot's records,
//! which the viewer's library draws (JSON, Graphviz DOT).
//!
//! Root syntax (documented in notes/snapshots.md):
//! - `0xADDRESS`: the object with that `id()`;
//! - `module:NAME:GLOBAL`: `sys.modules[NAME].GLOBAL`;
//! - `thread:THREAD:frame:FUNCTION:local:VARIABLE`: a variable (local, cell
//!   or free) of the innermost frame whose `co_name` or `co_qualname` is
//!   FUNCTION, on the thread named THREAD (or with that native id).

use std::collections::{HashSet, VecDeque};

use crate::process::memory::read_u64;
use crate::reading::cpython::objects::ObjectReader;
use crate::reading::generators::{read_generator, Codes, GeneratorKind};
use crate::reading::objects::{Kind, ObjectInfo, Objects, Rendering};
use crate::reading::retained;
use crate::reading::scopes::frame_variables;
use crate::reading::target::Target;
use crate::reading::walker::ThreadSample;

/// Limits of a walk. Defaults: depth 3, 200 objects, 100 edges per object.
#[derive(Debug, Clone, Copy)]
pub struct GraphOptions {
    /// Edges followed from the root.
    pub max_depth: usize,
    /// Most objects in the graph.
    pub max_objects: usize,
    /// Most edges read per object.
    pub max_edges: usize,
    /// Objects reached through a name that matches (an attribute, a str
    /// dict key), and everything reached only through them, are shown as
    /// `<redacted>`; so are the roots in `redacted_roots` (default: none).
    pub redact: Option<&'static regex::Regex>,
}

impl Default for GraphOptions {
    fn default() -> Self {
        GraphOptions {
            max_depth: 3,
            max_objects: 200,
            max_edges: 100,
            redact: None,
        }
    }
}

/// One object of the graph.
#[derive(Debug, Clone)]
pub struct Node {
    /// `id()`.
    pub address: u64,
    /// `type(x).__name__`.
    pub type_name: String,
    /// `sys.getsizeof()` where reproduced (null when implausible).
    pub size: Option<u64>,
    /// The size the object claims when its memory cannot hold it (a
    /// hostile or corrupt header): a flag with what it said, not a size.
    pub implausible_size: Option<u64>,
    /// `sys.getrefcount(x) - 1`.
    pub refcount: i64,
    /// Short bounded rendering.
    pub repr: String,
    /// Edges from the root to here.
    pub depth: usize,
    /// What would be freed with it: its own bytes (`sys.getsizeof`, and
    /// an instance's separate `__dict__`) and those of every object of the
    /// graph reachable only through it ([`crate::reading::retained`]); a lower
    /// bound where the walk stopped. Null when its own size is unknown.
    pub retained_size: Option<u64>,
}

/// One reference.
#[derive(Debug, Clone)]
pub struct Edge {
    /// Referrer's address.
    pub from: u64,
    /// Referent's address.
    pub to: u64,
    /// `[0]`, `['key']`, `key`, `.attribute`, `cell_contents`, `__globals__`...
    pub label: String,
}

/// The graph as walked.
#[derive(Debug, Clone)]
pub struct Graph {
    /// The root's address.
    pub root: u64,
    /// Objects, breadth first.
    pub nodes: Vec<Node>,
    /// References between them.
    pub edges: Vec<Edge>,
    /// Some references were left out (object cap reached).
    pub truncated: bool,
}

/// Why a root could not be resolved.
#[derive(Debug, thiserror::Error)]
#[error("root `{spec}`: {reason}")]
pub struct RootError {
    spec: String,
    reason: String,
}

/// Resolves a root spec in a (paused) target.
pub fn resolve_root(
    target: &mut Target,
    spec: &str,
    samples: &[ThreadSample],
) -> Result<u64, RootError> {
    let fail = |reason: String| RootError {
        spec: spec.to_string(),
        reason,
    };
    if let Some(hex) = spec.strip_prefix("0x") {
        let address = u64::from_str_radix(hex, 16).map_err(|e| fail(e.to_string()))?;
        // An address typed by the user that holds no object is a mistake
        // to report, not a graph of one unreadable node (exit 0). A root
        // found by name that turns out corrupt is still drawn as such.
        crate::reading::objects::Objects::new(target.memory(), target.layout())
            .info(address)
            .map_err(|e| fail(format!("no object can be read there ({e})")))?;
        return Ok(address);
    }
    let parts: Vec<&str> = spec.split(':').collect();
    match parts.as_slice() {
        ["module", module, name] => {
            let layout = target.layout();
            let reader = ObjectReader::new(target.memory(), layout);
            let o = &layout.offsets;
            let (Some(main_at), Some(modules_at), Some(dict_at)) = (
                o.runtime_interpreters_main,
                o.interpreter_modules,
                o.module_md_dict,
            ) else {
                return Err(fail("module offsets unknown for this version".into()));
            };
            let read =
                |address| read_u64(target.memory(), address).map_err(|e| fail(e.to_string()));
            let interpreter = read(target.runtime_address() + main_at)?;
            let modules = read(interpreter + modules_at)?;
            let module = reader
                .dict_get_str(modules, module)
                .map_err(|e| fail(e.to_string()))?
                .ok_or_else(|| fail(format!("no module {module} in sys.modules")))?;
            let globals = read(module + dict_at)?;
            reader
                .dict_get_str(globals, name)
                .map_err(|e| fail(e.to_string()))?
                .ok_or_else(|| fail(format!("module {module} has no global {name}")))
        }
        ["thread", thread, "frame", function, "local", variable] => {
            let names = target.thread_names().unwrap_or_default();
            let sample = samples
                .iter()
                .find(|s| {
                    names.get(&s.thread_id).map(String::as_str) == Some(*thread)
                        || s.native_id.to_string() == *thread
                })
                .ok_or_else(|| fail(format!("no thread named {thread}")))?;
            let objects = Objects::new(target.memory(), target.layout());
            for frame in target.thread_frames(sample, 4096) {
                let Ok((code, _)) = objects.reader.code_object(frame.code) else {
                    continue;
                };
                if code.name != *function && code.qualname != *function {
                    continue;
                }
                let variables =
                    frame_variables(&objects, &frame, &code).map_err(|e| fail(e.to_string()))?;
                return variables
                    .iter()
                    .find(|v| v.name == *variable && v.value != 0)
                    .map(|v| v.value)
                    .ok_or_else(|| fail(format!("{function} has no bound variable {variable}")));
            }
            Err(fail(format!("no frame {function} on thread {thread}")))
        }
        _ => Err(fail(
            "expected 0xADDRESS, module:NAME:GLOBAL or thread:NAME:frame:FUNCTION:local:VARIABLE"
                .into(),
        )),
    }
}

/// Breadth-first referents walk from `root`.
pub fn walk(objects: &Objects<'_>, root: u64, options: &GraphOptions) -> Graph {
    walk_roots(objects, &[root], options)
}

/// [`walk`], with the root itself redacted (it was named by a name that
/// matches `options.redact`): its value and all it reaches only through it
/// are shown as `<redacted>`.
pub fn walk_redacted_root(objects: &Objects<'_>, root: u64, options: &GraphOptions) -> Graph {
    walk_from(objects, &[root], &[root], options)
}

/// Breadth-first referents walk from several roots at once (each at depth
/// 0), every object once; `Graph::root` is the first root (0 if none).
pub fn walk_roots(objects: &Objects<'_>, roots: &[u64], options: &GraphOptions) -> Graph {
    walk_from(objects, roots, &[], options)
}

/// [`walk_roots`], where the roots in `redacted` (and what is reached only
/// through them) are shown as `<redacted>`.
pub fn walk_from(
    objects: &Objects<'_>,
    roots: &[u64],
    redacted: &[u64],
    options: &GraphOptions,
) -> Graph {
    let root = roots.first().copied().unwrap_or(0);
    let rendering = Rendering {
        max_string: 40,
        max_items: 4,
        max_depth: 0,
        max_length: 80,
        redact: options.redact,
    };
    let mut secret: HashSet<u64> = redacted.iter().copied().collect();
    let mut nodes = Vec::new();
    let mut edges = Vec::new();
    let mut seen: HashSet<u64> = HashSet::new();
    let mut queue: VecDeque<(u64, usize)> = VecDeque::new();
    let mut truncated = false;
    let mut codes = Codes::default();
    let mut owners: Vec<retained::Object> = Vec::new();
    for &root in roots {
        if root != 0 && seen.len() < options.max_objects && seen.insert(root) {
            queue.push_back((root, 0));
        }
    }
    while let Some((address, depth)) = queue.pop_front() {
        let Ok(info) = objects.info(address) else {
            nodes.push(Node {
                address,
                type_name: "?".into(),
                size: None,
                implausible_size: None,
                refcount: 0,
                repr: format!("<unreadable 0x{address:x}>"),
                depth,
                retained_size: None,
            });
            owners.push(retained::Object {
                address,
                bytes: 0,
                refcount: 0,
                immortal: true,
                root: depth == 0,
            });
            continue;
        };
        let hidden = secret.contains(&address);
        let size = objects.getsizeof(&info);
        let generator = (info.type_info.kind == Kind::Generator)
            .then(|| generator_view(objects, &mut codes, &info))
            .flatten();
        nodes.push(Node {
            address,
            type_name: info.type_info.name.clone(),
            size: size.and_then(|s| s.bytes()),
            implausible_size: size.and_then(|s| s.implausible()),
            refcount: info.refcount,
            repr: if hidden {
                crate::reading::redact::REDACTED.to_string()
            } else if let Some((repr, _)) = &generator {
                repr.clone()
            } else {
                objects.render(address, &rendering)
            },
            depth,
            retained_size: None,
        });
        owners.push(retained::Object {
            address,
            bytes: size
                .and_then(|s| s.bytes())
                .unwrap_or(0)
                .saturating_add(separate_dict_bytes(objects, &info)),
            refcount: info.refcount,
            immortal: info.immortal,
            root: depth == 0,
        });
        if depth >= options.max_depth {
            continue;
        }
        let mut referents = objects
            .referents(&info, options.max_edges)
            .unwrap_or_default();
        if let Some((_, frame)) = generator {
            referents.extend(frame);
            referents.truncate(options.max_edges);
        }
        for (label, to) in referents {
            if to == 0 {
                continue;
            }
            if !seen.contains(&to) {
                if seen.len() >= options.max_objects {
                    truncated = true;
                    continue;
                }
                if hidden
                    || crate::reading::redact::edge_name(&label)
                        .is_some_and(|name| crate::reading::redact::matches(options.redact, name))
                {
                    secret.insert(to);
                }
                seen.insert(to);
                queue.push_back((to, depth + 1));
            }
            edges.push(Edge {
                from: address,
                to,
                label,
            });
        }
    }
    let references: Vec<(u64, u64)> = edges.iter().map(|e| (e.from, e.to)).collect();
    let sizes = retained::retained_sizes(&owners, &references);
    for (node, retained) in nodes.iter_mut().zip(sizes) {
        if node.size.is_some() {
            node.retained_size = Some(retained);
        }
    }
    Graph {
        root,
        nodes,
        edges,
        truncated,
    }
}

/// The bytes of an instance's `__dict__` when it is a dict object of its
/// own (3.9/3.10 always, 3.11+ once materialized): its attributes are
/// shown as the instance's edges, so the dict is no node and its bytes
/// belong to the instance. Its attribute values' array too, where no
/// `sys.getsizeof` counts it: inline in the object (3.13+), or kept apart
/// while no dict was made (3.11/3.12). 0 when unknown.
fn separate_dict_bytes(objects: &Objects<'_>, info: &ObjectInfo) -> u64 {
    if info.type_info.kind != Kind::Instance {
        return 0;
    }
    let dict = match objects.instance_dict(info) {
        Ok(crate::reading::objects::InstanceDict::Dict(dict)) => objects
            .info(dict)
            .ok()
            .and_then(|dict| objects.getsizeof(&dict))
            .and_then(|size| size.bytes())
            .unwrap_or(0),
        _ => 0,
    };
    dict.saturating_add(objects.values_bytes_beyond_getsizeof(info).unwrap_or(0))
}

/// A generator's, coroutine's or async generator's rendering, named and
/// stated (`<coroutine worker suspended at app.py:12>`), and the references
/// its frame holds: each bound variable (`f_locals['name']`, as
/// `gi_frame.f_locals` names them in-process) and the object it awaits or
/// delegates to (`cr_await`, `gi_yieldfrom`, `ag_await`). A suspended
/// generator keeps them alive, so a graph walk follows them. `None` when
/// the object cannot be read as one.
fn generator_view(
    objects: &Objects<'_>,
    codes: &mut Codes,
    info: &ObjectInfo,
) -> Option<(String, Vec<(String, u64)>)> {
    let generator = read_generator(objects, codes, info.address).ok()?;
    let repr = generator.describe(&info.type_info.name);
    let mut references = Vec::new();
    if let (Some(frame), Some((code, _))) = (
        crate::reading::generators::frame_ref(objects.layout(), &generator),
        codes.get(objects, generator.code),
    ) {
        for variable in frame_variables(objects, &frame, code).unwrap_or_default() {
            if variable.value != 0 {
                let name = crate::reading::cpython::code::python_str_repr(&variable.name);
                references.push((format!("f_locals[{name}]"), variable.value));
            }
        }
    }
    if let Some(awaiting) = generator.awaiting {
        let label = match generator.kind {
            GeneratorKind::Generator => "gi_yieldfrom",
            GeneratorKind::Coroutine => "cr_await",
            GeneratorKind::AsyncGenerator => "ag_await",
        };
        references.push((label.to_string(), awaiting));
    }
    Some((repr, references))
}
