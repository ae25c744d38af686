//! The values of variables read while a target is paused (snapshots and
//! `pydeep dump`): each distinct object rendered once, with what
//! `sys.getsizeof`, `sys.getrefcount` and `len` say of it and, for an
//! instance of a Python class, its attributes (one level). Names matching
//! `--redact` keep their type and address only.

use std::collections::HashMap;

use crate::reading::objects::{Kind, Objects, Rendering};

/// One object, rendered.
#[derive(Debug, Clone, Default)]
pub struct ReadValue {
    /// `id()`.
    pub address: u64,
    /// `type(x).__name__` ("?" if unreadable).
    pub type_name: String,
    /// Bounded `repr()`-like rendering.
    pub repr: String,
    /// `sys.getsizeof()` (None where not reproduced, or implausible).
    pub size: Option<u64>,
    /// The size the object claims when its memory cannot hold it.
    pub implausible_size: Option<u64>,
    /// `sys.getrefcount(x) - 1` (`ob_refcnt`).
    pub refcount: i64,
    /// 3.12+ immortal object (refcount is a marker).
    pub immortal: bool,
    /// `len()` of containers, str and bytes.
    pub length: Option<u64>,
    /// Attributes of an instance of a Python class (dict and slots), each
    /// without further attributes.
    pub attributes: Option<Vec<(String, ReadValue)>>,
}

/// Values rendered during one pause, each distinct object once: a deep
/// stack shows the same objects in many frames (the same `self`, the same
/// arguments passed down), and while the target is paused an object reads
/// the same every time.
pub struct Values {
    rendering: Rendering,
    /// With attributes (variables), without (attributes), redacted.
    full: HashMap<u64, ReadValue>,
    plain: HashMap<u64, ReadValue>,
    redacted: HashMap<u64, ReadValue>,
}

impl Values {
    /// No value read yet; values are rendered within `rendering`'s bounds.
    pub fn new(rendering: Rendering) -> Values {
        Values {
            rendering,
            full: HashMap::new(),
            plain: HashMap::new(),
            redacted: HashMap::new(),
        }
    }

    /// Reads the value of variable `name` bound to `address` (0: unbound)
    /// and returns it (None when unbound).
    pub fn read(&mut self, objects: &Objects<'_>, name: &str, address: u64) -> Option<ReadValue> {
        if address == 0 {
            return None;
        }
        if crate::reading::redact::matches(self.rendering.redact, name) {
            let value = self
                .redacted
                .entry(address)
                .or_insert_with(|| redacted_value(objects, address));
            return Some(value.clone());
        }
        if let Some(value) = self.full.get(&address) {
            return Some(value.clone());
        }
        let mut value = self.plain(objects, address);
        value.attributes = self.attributes(objects, address);
        self.full.insert(address, value.clone());
        Some(value)
    }

    /// The object at `address`, rendered without attributes (cached).
    fn plain(&mut self, objects: &Objects<'_>, address: u64) -> ReadValue {
        if let Some(value) = self.plain.get(&address) {
            return value.clone();
        }
        let value = value(objects, address, &self.rendering);
        self.plain.insert(address, value.clone());
        value
    }

    fn attributes(
        &mut self,
        objects: &Objects<'_>,
        address: u64,
    ) -> Option<Vec<(String, ReadValue)>> {
        let info = objects.info(address).ok()?;
        if info.type_info.kind != Kind::Instance {
            return None;
        }
        let attributes = objects.attributes(&info).unwrap_or_default();
        Some(
            attributes
                .into_iter()
                .take(self.rendering.max_items.max(64))
                .map(|(name, value_address)| {
                    let value = if crate::reading::redact::matches(self.rendering.redact, &name) {
                        redacted_value(objects, value_address)
                    } else {
                        self.plain(objects, value_address)
                    };
                    (name, value)
                })
                .collect(),
        )
    }
}

/// A value whose name matches `--redact`: its type and address only.
fn redacted_value(objects: &Objects<'_>, address: u64) -> ReadValue {
    let info = objects.info(address).ok();
    ReadValue {
        address,
        type_name: info
            .as_ref()
            .map_or_else(|| "?".into(), |i| i.type_info.name.clone()),
        repr: crate::reading::redact::REDACTED.into(),
        refcount: info.as_ref().map_or(0, |i| i.refcount),
        immortal: info.as_ref().is_some_and(|i| i.immortal),
        ..ReadValue::default()
    }
}

/// Renders the object at `address` (no attributes).
fn value(objects: &Objects<'_>, address: u64, rendering: &Rendering) -> ReadValue {
    let Ok(info) = objects.info(address) else {
        return ReadValue {
            address,
            type_name: "?".into(),
            repr: format!("<unreadable 0x{address:x}>"),
            ..ReadValue::default()
        };
    };
    let size = objects.getsizeof(&info);
    ReadValue {
        address,
        type_name: info.type_info.name.clone(),
        repr: objects.render(address, rendering),
        size: size.and_then(|s| s.bytes()),
        implausible_size: size.and_then(|s| s.implausible()),
        refcount: info.refcount,
        immortal: info.immortal,
        length: objects.length(&info),
        attributes: None,
    }
}
