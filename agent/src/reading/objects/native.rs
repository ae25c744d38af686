//! Builtin objects read natively beyond the core containers: their items
//! (`deque`), their references (`partial`, bound methods, `property`...)
//! and their renderings. The field offsets come from
//! [`crate::reading::cpython::builtins`]; every read is bounded.

use super::{Kind, ObjectInfo, Objects, Rendering, MAX_ITEMS};
use crate::process::memory::{read_u64, read_vec};
use crate::reading::cpython::builtins::{
    BuiltinLayout, DEQUE_BLOCK_DATA, DEQUE_BLOCK_LENGTH, DEQUE_BLOCK_RIGHTLINK, ODICT_NODE_NEXT,
};
use crate::reading::cpython::objects::ObjectError;

/// Most deque blocks followed (64 items each: [`MAX_ITEMS`] and more).
const MAX_DEQUE_BLOCKS: usize = MAX_ITEMS / DEQUE_BLOCK_LENGTH as usize + 2;

impl Objects<'_> {
    /// The builtin layouts of this target.
    pub(super) fn builtins(&self) -> Result<BuiltinLayout, ObjectError> {
        BuiltinLayout::of(self.layout()).ok_or(ObjectError::MissingOffset("ob_type"))
    }

    /// The first `limit` items of a `collections.deque`, left to right,
    /// and its length: blocks of 64 slots linked by `rightlink`, the first
    /// item at `leftindex` of `leftblock`.
    pub fn deque_items(
        &self,
        address: u64,
        limit: usize,
    ) -> Result<(Vec<u64>, usize), ObjectError> {
        let fields = self.builtins()?.deque();
        let length = self.size_field(address, 1 << 40)?;
        let mut block = read_u64(self.memory(), address + fields.leftblock)?;
        let mut index = read_u64(self.memory(), address + fields.leftindex)?;
        if index >= DEQUE_BLOCK_LENGTH {
            return Err(super::invalid(
                address,
                "deque",
                format!("leftindex {index}"),
            ));
        }
        let wanted = length.min(limit).min(MAX_ITEMS);
        let mut items = Vec::with_capacity(wanted);
        for _ in 0..MAX_DEQUE_BLOCKS {
            if items.len() >= wanted || !super::plausible(block) {
                break;
            }
            let count = (DEQUE_BLOCK_LENGTH - index).min((wanted - items.len()) as u64);
            let bytes = read_vec(
                self.memory(),
                block + DEQUE_BLOCK_DATA + index * 8,
                count as usize * 8,
                DEQUE_BLOCK_LENGTH as usize * 8,
            )?;
            items.extend(super::pointers(&bytes));
            block = read_u64(self.memory(), block + DEQUE_BLOCK_RIGHTLINK)?;
            index = 0;
        }
        Ok((items, length))
    }

    /// The first `limit` (key, value) pairs of an `OrderedDict` in its own
    /// order (its linked list of nodes, which `move_to_end` reorders
    /// without touching the dict), and its length. Falls back to the
    /// dict's order if the list cannot be read.
    pub fn ordered_dict_items(
        &self,
        address: u64,
        limit: usize,
    ) -> Result<(Vec<(u64, u64)>, usize), ObjectError> {
        let (items, length) = self.dict_items(address, MAX_ITEMS)?;
        let Some(fields) = self.builtins()?.ordered_dict() else {
            return Ok((items.into_iter().take(limit).collect(), length));
        };
        let values: std::collections::HashMap<u64, u64> = items.iter().copied().collect();
        let mut node = read_u64(self.memory(), address + fields.od_first)?;
        let mut ordered = Vec::new();
        while super::plausible(node) && ordered.len() < limit.min(length).min(MAX_ITEMS) {
            let key = read_u64(self.memory(), node)?;
            match values.get(&key) {
                Some(&value) => ordered.push((key, value)),
                None => break,
            }
            node = read_u64(self.memory(), node + ODICT_NODE_NEXT)?;
        }
        if ordered.len() < limit.min(length).min(items.len()) {
            return Ok((items.into_iter().take(limit).collect(), length));
        }
        Ok((ordered, length))
    }

    /// The references of a natively read builtin object that is not a
    /// container, labelled as Python names them (`func`, `__self__`...).
    /// A weak reference's referent is not one (it is not kept alive).
    pub(super) fn native_referents(
        &self,
        info: &ObjectInfo,
        kind: Kind,
    ) -> Result<Vec<(String, u64)>, ObjectError> {
        let b = self.builtins()?;
        let fields: Vec<(&'static str, u64)> = match kind {
            Kind::Partial => b.partial().to_vec(),
            Kind::Method => b.method().to_vec(),
            Kind::BuiltinFunction => b.builtin_function().references.to_vec(),
            Kind::Property => b.property().to_vec(),
            Kind::StaticMethod | Kind::ClassMethod => b.static_or_class_method().to_vec(),
            Kind::Namespace => vec![("__dict__", b.namespace_dict())],
            Kind::WeakRef => vec![("__callback__", b.weakref().wr_callback)],
            Kind::Range | Kind::Slice => {
                let [start, stop, step] = b.start_stop_step();
                vec![("start", start), ("stop", stop), ("step", step)]
            }
            Kind::MemoryView => b.memoryview().to_vec(),
            Kind::DefaultDict => match b.default_factory() {
                Some(at) => vec![("default_factory", at)],
                None => Vec::new(),
            },
            _ => Vec::new(),
        };
        let mut out = Vec::new();
        for (label, at) in fields {
            let value = read_u64(self.memory(), info.address + at)?;
            if value != 0 {
                out.push((label.to_string(), value));
            }
        }
        Ok(out)
    }

    /// The rendering of a natively read builtin object (`None` for kinds
    /// rendered elsewhere). `render` renders a referenced object one level
    /// deeper.
    pub(super) fn render_native(
        &self,
        info: &ObjectInfo,
        kind: Kind,
        rendering: &Rendering,
        render: &mut dyn FnMut(u64) -> String,
    ) -> Result<Option<String>, ObjectError> {
        let address = info.address;
        let b = self.builtins()?;
        let field = |at: u64| read_u64(self.memory(), address + at);
        Ok(Some(match kind {
            Kind::Deque => {
                let (items, length) = self.deque_items(address, rendering.max_items)?;
                let mut parts: Vec<String> = items.iter().map(|&item| render(item)).collect();
                if length > items.len() {
                    parts.push("...".into());
                }
                let maxlen = field(b.deque().maxlen)? as i64;
                if maxlen >= 0 {
                    format!("deque([{}], maxlen={maxlen})", parts.join(", "))
                } else {
                    format!("deque([{}])", parts.join(", "))
                }
            }
            Kind::ByteArray => {
                let fields = b.bytearray();
                let length = self.size_field(address, 1 << 40)?;
                let shown = length.min(rendering.max_string);
                let start = field(fields.ob_start)?;
                let bytes = if shown == 0 {
                    Vec::new()
                } else {
                    read_vec(self.memory(), start, shown, 1 << 20)?
                };
                let more = if length > shown { "..." } else { "" };
                format!("bytearray({}{more})", super::render::bytes_repr(&bytes))
            }
            Kind::MemoryView => format!("<memory at 0x{address:x}>"),
            Kind::Range => {
                let [start, stop, step] = b.start_stop_step();
                let step_text = self.int_decimal(field(step)?)?;
                let bounds = format!(
                    "range({}, {}",
                    self.int_decimal(field(start)?)?,
                    self.int_decimal(field(stop)?)?
                );
                if step_text == "1" {
                    format!("{bounds})")
                } else {
                    format!("{bounds}, {step_text})")
                }
            }
            Kind::Slice => {
                let [start, stop, step] = b.start_stop_step();
                format!(
                    "slice({}, {}, {})",
                    render(field(start)?),
                    render(field(stop)?),
                    render(field(step)?)
                )
            }
            Kind::Partial => {
                let [(_, func), (_, args), (_, keywords), _] = b.partial();
                let mut parts = vec![render(field(func)?)];
                let args = field(args)?;
                if args != 0 {
                    let (items, length) =
                        self.sequence_items(args, Kind::Tuple, rendering.max_items)?;
                    parts.extend(items.iter().map(|&item| render(item)));
                    if length > items.len() {
                        parts.push("...".into());
                    }
                }
                let keywords = field(keywords)?;
                if keywords != 0 {
                    for (key, value) in self.dict_items(keywords, rendering.max_items)?.0 {
                        let name = self.reader.unicode(key).unwrap_or_else(|_| "?".into());
                        if crate::reading::redact::matches(rendering.redact, &name) {
                            parts.push(format!("{name}={}", crate::reading::redact::REDACTED));
                        } else {
                            parts.push(format!("{name}={}", render(value)));
                        }
                    }
                }
                format!("functools.partial({})", parts.join(", "))
            }
            Kind::Method => {
                let [(_, func), (_, receiver)] = b.method();
                let func = field(func)?;
                let name = self
                    .function_qualname(func)
                    .unwrap_or_else(|_| "?".to_string());
                let receiver = field(receiver)?;
                let receiver_type = self
                    .info(receiver)
                    .map(|i| i.type_info.name)
                    .unwrap_or_else(|_| "?".into());
                format!("<bound method {name} of <{receiver_type} object at 0x{receiver:x}>>")
            }
            Kind::BuiltinFunction => {
                let fields = b.builtin_function();
                let def = field(fields.m_ml)?;
                let name = self.reader.c_string(read_u64(self.memory(), def)?, 256)?;
                let receiver = field(fields.references[0].1)?;
                let receiver_type = (receiver != 0)
                    .then(|| self.info(receiver).ok())
                    .flatten()
                    .filter(|i| i.type_info.kind != Kind::Module);
                match receiver_type {
                    Some(receiver_type) => format!(
                        "<built-in method {name} of {} object at 0x{receiver:x}>",
                        receiver_type.type_info.name
                    ),
                    None => format!("<built-in function {name}>"),
                }
            }
            Kind::StaticMethod | Kind::ClassMethod => {
                let [(_, callable), _] = b.static_or_class_method();
                let name = if kind == Kind::StaticMethod {
                    "staticmethod"
                } else {
                    "classmethod"
                };
                format!("<{name}({})>", render(field(callable)?))
            }
            Kind::Namespace => {
                let dict = field(b.namespace_dict())?;
                let (items, length) = self.dict_items(dict, rendering.max_items)?;
                let mut parts: Vec<String> = items
                    .iter()
                    .map(|&(key, value)| {
                        let name = self.reader.unicode(key).unwrap_or_else(|_| "?".into());
                        if crate::reading::redact::matches(rendering.redact, &name) {
                            format!("{name}={}", crate::reading::redact::REDACTED)
                        } else {
                            format!("{name}={}", render(value))
                        }
                    })
                    .collect();
                if length > items.len() {
                    parts.push("...".into());
                }
                format!("namespace({})", parts.join(", "))
            }
            Kind::WeakRef => {
                let referent = field(b.weakref().wr_object)?;
                match self.info(referent) {
                    Ok(target) if target.type_info.kind != Kind::None => format!(
                        "<weakref at 0x{address:x}; to '{}' at 0x{referent:x}>",
                        target.type_info.name
                    ),
                    _ => format!("<weakref at 0x{address:x}; dead>"),
                }
            }
            _ => return Ok(None),
        }))
    }
}
