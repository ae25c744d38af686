//! `pydeep-view objects`: the object graph of a snapshot (the objects
//! reached from the frames' variables, recorded with `--snapshot-locals`)
//! as JSON or Graphviz DOT. `pydeep objects` draws a live process's graph
//! with these same functions. `--root` keeps what is reachable from one object.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt::Write as _;

use pydeep_format::proto;
use pydeep_format::Tables;
use serde_json::{json, Value};

use crate::snapshots::{stamp, Selected};

/// The nodes and edges of a snapshot to show: all of them, or those
/// reachable from `root` (breadth first, each once).
pub fn subgraph(
    snapshot: &proto::Snapshot,
    root: Option<u64>,
) -> (Vec<&proto::ObjectNode>, Vec<&proto::ObjectEdge>) {
    let Some(root) = root else {
        return (
            snapshot.objects.iter().collect(),
            snapshot.edges.iter().collect(),
        );
    };
    let mut out_edges: HashMap<u64, Vec<&proto::ObjectEdge>> = HashMap::new();
    for edge in &snapshot.edges {
        out_edges.entry(edge.from).or_default().push(edge);
    }
    let mut seen: HashSet<u64> = HashSet::from([root]);
    let mut queue = VecDeque::from([root]);
    let mut edges = Vec::new();
    while let Some(address) = queue.pop_front() {
        for edge in out_edges.get(&address).into_iter().flatten() {
            edges.push(*edge);
            if seen.insert(edge.to) {
                queue.push_back(edge.to);
            }
        }
    }
    let nodes = snapshot
        .objects
        .iter()
        .filter(|n| seen.contains(&n.address))
        .collect();
    (nodes, edges)
}

/// The JSON of one snapshot's graph: the stamp, `roots` (the depth-0
/// objects: the variables' values), `nodes` [{`address`, `type`, `size`
/// (null: not reproduced), `refcount`, `repr`, `depth`}], `edges`
/// [{`from`, `to`, `label`}], `warnings` (a graph cut at its object
/// limit says so here).
pub fn graph_json(
    tables: &Tables,
    header: &proto::Header,
    selected: &Selected,
    root: Option<u64>,
) -> Value {
    let mut map = stamp(header, selected);
    let (nodes, edges) = subgraph(&selected.snapshot, root);
    let roots: Vec<u64> = match root {
        Some(root) => vec![root],
        None => nodes
            .iter()
            .filter(|n| n.depth == 0)
            .map(|n| n.address)
            .collect(),
    };
    map.insert("roots".into(), json!(roots));
    map.insert(
        "nodes".into(),
        nodes
            .iter()
            .map(|n| {
                json!({
                    "address": n.address,
                    "type": tables.string(n.type_name),
                    "size": (n.size != 0).then_some(n.size),
                    "implausible_size": (n.implausible_size != 0).then_some(n.implausible_size),
                    "retained_size": (n.retained_size != 0).then_some(n.retained_size),
                    "refcount": n.refcount,
                    "repr": n.value,
                    "depth": n.depth,
                })
            })
            .collect(),
    );
    map.insert(
        "edges".into(),
        edges
            .iter()
            .map(|e| json!({"from": e.from, "to": e.to, "label": e.label}))
            .collect(),
    );
    map.insert("warnings".into(), json!(selected.snapshot.warnings));
    Value::Object(map)
}

fn quote(text: &str) -> String {
    text.chars()
        .flat_map(|c| match c {
            '"' => vec!['\\', '"'],
            '\\' => vec!['\\', '\\'],
            '\n' => vec!['\\', 'n'],
            c if c.is_control() => vec!['?'],
            c => vec![c],
        })
        .collect()
}

/// One snapshot's graph in Graphviz DOT (`digraph snapshot_N`); roots
/// drawn bold.
pub fn graph_dot(tables: &Tables, selected: &Selected, root: Option<u64>) -> String {
    let (nodes, edges) = subgraph(&selected.snapshot, root);
    let mut out = format!(
        "digraph snapshot_{} {{\n  node [shape=box, fontname=\"monospace\"];\n",
        selected.index
    );
    let present: HashSet<u64> = nodes.iter().map(|n| n.address).collect();
    for node in &nodes {
        let size = if node.implausible_size != 0 {
            format!("implausible (claims {} bytes)", node.implausible_size)
        } else if node.size == 0 {
            "?".to_string()
        } else {
            node.size.to_string()
        };
        let bold = if root.map_or(node.depth == 0, |r| r == node.address) {
            ", style=bold"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  n{:x} [label=\"{} 0x{:x}\\nsize {size}, refs {}\\n{}\"{bold}];",
            node.address,
            quote(tables.string(node.type_name)),
            node.address,
            node.refcount,
            quote(&node.value),
        );
    }
    for edge in edges {
        if present.contains(&edge.from) && present.contains(&edge.to) {
            let _ = writeln!(
                out,
                "  n{:x} -> n{:x} [label=\"{}\"];",
                edge.from,
                edge.to,
                quote(&edge.label)
            );
        }
    }
    out.push_str("}\n");
    out
}
