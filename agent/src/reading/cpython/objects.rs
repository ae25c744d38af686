//! Readers of the few object kinds the sampler needs from the target: `str`,
//! `bytes`, `int`, tuples, type names, dicts and instance attributes.
//!
//! Written once against [`Layout`]; every length read from the target is
//! capped before anything is allocated.

use super::Layout;
use crate::process::memory::{field_u64, field_u8, read_u64, read_vec, MemoryError, RemoteMemory};

/// Longest string pydeep reads out of the target (a file name, an
/// identifier, a thread name).
pub const MAX_STRING: usize = 64 * 1024;
/// Most items read from one tuple (names of a code object).
pub const MAX_TUPLE: usize = 65_536;
/// Most entries scanned in one dict.
pub const MAX_DICT_ENTRIES: usize = 1 << 20;

/// Why an object could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObjectError {
    /// The memory read failed.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// The bytes read make no sense as the expected object.
    #[error("object at 0x{address:x} is not a valid {expected}: {detail}")]
    Invalid {
        /// Address of the object.
        address: u64,
        /// What it should have been.
        expected: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// The layout lacks an offset this reader needs.
    #[error("offset of {0} is unknown for this CPython version")]
    MissingOffset(&'static str),
}

fn need(value: Option<u64>, name: &'static str) -> Result<u64, ObjectError> {
    value.ok_or(ObjectError::MissingOffset(name))
}

fn invalid(address: u64, expected: &'static str, detail: impl Into<String>) -> ObjectError {
    ObjectError::Invalid {
        address,
        expected,
        detail: detail.into(),
    }
}

/// Object reads against one target's layout.
#[derive(Clone, Copy)]
pub struct ObjectReader<'a> {
    /// The target's memory.
    pub memory: &'a dyn RemoteMemory,
    /// The target's layout.
    pub layout: &'a Layout,
}

impl<'a> ObjectReader<'a> {
    /// A reader over `memory` laid out as `layout`.
    pub fn new(memory: &'a dyn RemoteMemory, layout: &'a Layout) -> ObjectReader<'a> {
        ObjectReader { memory, layout }
    }

    /// The `ob_type` pointer of the object at `address`.
    pub fn type_of(&self, address: u64) -> Result<u64, ObjectError> {
        let offset = self.layout.core.object_ob_type;
        Ok(read_u64(self.memory, address.wrapping_add(offset))?)
    }

    /// `tp_name` of the type at `type_address` (at most 256 bytes).
    pub fn type_name(&self, type_address: u64) -> Result<String, ObjectError> {
        let offset = need(self.layout.offsets.type_tp_name, "tp_name")?;
        let name = read_u64(self.memory, type_address.wrapping_add(offset))?;
        self.c_string(name, 256)
    }

    /// The NUL-terminated string at `address`, at most `limit` bytes.
    pub fn c_string(&self, address: u64, limit: usize) -> Result<String, ObjectError> {
        let mut bytes = vec![0u8; limit];
        // A C string may end close to an unmapped page: shrink the read
        // until it succeeds.
        let mut len = limit;
        loop {
            match self.memory.read(address, &mut bytes[..len]) {
                Ok(()) => break,
                Err(_) if len > 16 => len /= 2,
                Err(e) => return Err(e.into()),
            }
        }
        let end = bytes[..len].iter().position(|&b| b == 0).unwrap_or(len);
        Ok(String::from_utf8_lossy(&bytes[..end]).into_owned())
    }

    /// `ob_size` of a variable-size object.
    pub fn var_size(&self, address: u64) -> Result<i64, ObjectError> {
        let offset = need(self.layout.offsets.var_object_ob_size, "ob_size")?;
        Ok(read_u64(self.memory, address.wrapping_add(offset))? as i64)
    }

    /// The text of the `str` at `address`.
    pub fn unicode(&self, address: u64) -> Result<String, ObjectError> {
        let o = &self.layout.offsets;
        let c = &self.layout.core;
        let state_offset = need(o.unicode_state, "PyASCIIObject.state")?;
        let length_offset = need(o.unicode_length, "PyASCIIObject.length")?;
        let ascii_size = need(o.unicode_ascii_size, "sizeof(PyASCIIObject)")?;
        let header_len = (ascii_size.max(state_offset + 4)) as usize;
        let header = read_vec(self.memory, address, header_len, 1024)?;
        let length = field_u64(&header, length_offset) as usize;
        let state = crate::process::memory::field_u32(&header, state_offset);
        // Bit positions of PyASCIIObject.state (Include/cpython/unicodeobject.h).
        let kind = (state >> c.unicode_state_kind_shift as u32) & 7;
        let compact = (state >> c.unicode_state_compact_shift as u32) & 1 == 1;
        let ascii = (state >> c.unicode_state_ascii_shift as u32) & 1 == 1;
        if !compact {
            return Err(invalid(address, "str", "not a compact string"));
        }
        if !matches!(kind, 1 | 2 | 4) {
            return Err(invalid(address, "str", format!("kind {kind}")));
        }
        if length > MAX_STRING {
            return Err(invalid(address, "str", format!("length {length}")));
        }
        let data = if ascii {
            address.wrapping_add(ascii_size)
        } else {
            // PyCompactUnicodeObject adds utf8_length and utf8 (and
            // wstr_length before 3.12) after PyASCIIObject.
            address.wrapping_add(c.unicode_compact_size)
        };
        let bytes = read_vec(self.memory, data, length * kind as usize, MAX_STRING * 4)?;
        Ok(match kind {
            1 => bytes.iter().map(|&b| b as char).collect(),
            2 => {
                let units: Vec<u16> = bytes
                    .chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .collect();
                String::from_utf16_lossy(&units)
            }
            _ => bytes
                .chunks_exact(4)
                .map(|c| {
                    char::from_u32(u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .unwrap_or(char::REPLACEMENT_CHARACTER)
                })
                .collect(),
        })
    }

    /// The content of the `bytes` object at `address`, refusing more than `limit`.
    pub fn bytes(&self, address: u64, limit: usize) -> Result<Vec<u8>, ObjectError> {
        let sval = need(self.layout.offsets.bytes_ob_sval, "PyBytesObject.ob_sval")?;
        let size = self.var_size(address)?;
        if size < 0 || size as usize > limit {
            return Err(invalid(address, "bytes", format!("size {size}")));
        }
        Ok(read_vec(
            self.memory,
            address.wrapping_add(sval),
            size as usize,
            limit,
        )?)
    }

    /// The item pointers of the tuple at `address`.
    pub fn tuple_items(&self, address: u64) -> Result<Vec<u64>, ObjectError> {
        let items = need(self.layout.offsets.tuple_ob_item, "PyTupleObject.ob_item")?;
        let size = self.var_size(address)?;
        if size < 0 || size as usize > MAX_TUPLE {
            return Err(invalid(address, "tuple", format!("size {size}")));
        }
        let bytes = read_vec(
            self.memory,
            address.wrapping_add(items),
            size as usize * 8,
            MAX_TUPLE * 8,
        )?;
        Ok(bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8-byte chunk")))
            .collect())
    }

    /// The strings of a tuple of `str` (unreadable items become "?").
    pub fn string_tuple(&self, address: u64) -> Result<Vec<String>, ObjectError> {
        Ok(self
            .tuple_items(address)?
            .into_iter()
            .map(|item| self.unicode(item).unwrap_or_else(|_| "?".to_string()))
            .collect())
    }

    /// The value of the `int` at `address`, if it fits in an i64.
    pub fn int(&self, address: u64) -> Result<i64, ObjectError> {
        let o = &self.layout.offsets;
        let c = &self.layout.core;
        let digits_at = c.long_ob_digit;
        let (negative, count) = match o.long_lv_tag {
            // 3.12+: lv_tag = ndigits << 3 | sign (0 positive, 1 zero, 2 negative),
            // Include/cpython/longintrepr.h.
            Some(tag_at) => {
                let tag = read_u64(self.memory, address.wrapping_add(tag_at))?;
                (tag & 3 == 2, (tag >> 3) as usize)
            }
            None => {
                let size = self.var_size(address)?;
                (size < 0, size.unsigned_abs() as usize)
            }
        };
        if count > 3 {
            return Err(invalid(address, "int", "does not fit in 64 bits"));
        }
        let bits = c.long_digit_bits;
        let digits = read_vec(self.memory, address.wrapping_add(digits_at), count * 4, 16)?;
        let mut value: i128 = 0;
        for (i, digit) in digits.chunks_exact(4).enumerate() {
            let digit = u32::from_le_bytes(digit.try_into().expect("4 bytes")) as i128;
            value |= digit << (bits as usize * i);
        }
        let value = if negative { -value } else { value };
        i64::try_from(value).map_err(|_| invalid(address, "int", "out of range"))
    }

    /// The (key, value) pointers of the dict at `address`, in insertion order.
    pub fn dict_items(&self, address: u64) -> Result<Vec<(u64, u64)>, ObjectError> {
        let o = &self.layout.offsets;
        let keys = read_u64(
            self.memory,
            address.wrapping_add(need(o.dict_ma_keys, "ma_keys")?),
        )?;
        let values = read_u64(
            self.memory,
            address.wrapping_add(need(o.dict_ma_values, "ma_values")?),
        )?;
        self.keys_items(keys, values)
    }

    /// Entries of a `PyDictKeysObject`, with values from `values` (a split
    /// table's `PyDictValues`) when it is non-zero.
    pub fn keys_items(&self, keys: u64, values: u64) -> Result<Vec<(u64, u64)>, ObjectError> {
        let o = &self.layout.offsets;
        let c = &self.layout.core;
        let indices = need(o.dict_keys_dk_indices, "dk_indices")?;
        let header = read_vec(self.memory, keys, indices as usize, 256)?;
        let nentries = field_u64(&header, need(o.dict_keys_dk_nentries, "dk_nentries")?) as usize;
        let (index_bytes, entry_size) = match o.dict_keys_dk_log2_size {
            // 3.11+ (pycore_dict.h): sizes are logarithms; unicode-only
            // tables have 16-byte entries without the hash.
            Some(log2_size_at) => {
                let log2_index_bytes = field_u8(
                    &header,
                    need(o.dict_keys_dk_log2_index_bytes, "dk_log2_index_bytes")?,
                );
                let kind = field_u8(&header, need(o.dict_keys_dk_kind, "dk_kind")?);
                let _ = field_u8(&header, log2_size_at);
                if log2_index_bytes > 40 {
                    return Err(invalid(keys, "dict keys", "index size"));
                }
                let entry = if kind == 0 {
                    c.dict_key_entry_size
                } else {
                    need(o.dict_unicode_entry_size, "sizeof(PyDictUnicodeEntry)")?
                };
                (1u64 << log2_index_bytes, entry)
            }
            // 3.9/3.10 (Objects/dict-common.h): index width depends on dk_size.
            None => {
                let size = field_u64(&header, need(o.dict_keys_dk_size, "dk_size")?);
                let width = match size {
                    0..=0xff => 1,
                    0x100..=0xffff => 2,
                    0x10000..=0xffff_ffff => 4,
                    _ => 8,
                };
                (size.saturating_mul(width), c.dict_key_entry_size)
            }
        };
        if nentries > MAX_DICT_ENTRIES || index_bytes > (MAX_DICT_ENTRIES as u64) * 8 {
            return Err(invalid(keys, "dict keys", format!("{nentries} entries")));
        }
        let entries_at = keys.wrapping_add(indices).wrapping_add(index_bytes);
        let entries = read_vec(
            self.memory,
            entries_at,
            nentries * entry_size as usize,
            MAX_DICT_ENTRIES * 24,
        )?;
        let unicode = entry_size == 16;
        let (key_at, value_at) = if unicode { (0, 8) } else { (8, 16) };
        let split_values = if values != 0 {
            // 3.11+: a PyDictValues whose `values` follow a prefix; 3.9/3.10
            // (no dk_log2_size): ma_values is the PyObject* array itself.
            let prefix = match o.dict_keys_dk_log2_size {
                Some(_) => need(o.dict_values_values, "PyDictValues.values")?,
                None => 0,
            };
            let base = values.wrapping_add(prefix);
            let bytes = read_vec(self.memory, base, nentries * 8, MAX_DICT_ENTRIES * 8)?;
            Some(bytes)
        } else {
            None
        };
        let mut out = Vec::new();
        for i in 0..nentries {
            let entry = &entries[i * entry_size as usize..(i + 1) * entry_size as usize];
            let key = field_u64(entry, key_at);
            let value = match &split_values {
                Some(values) => field_u64(values, i as u64 * 8),
                None => field_u64(entry, value_at),
            };
            if key != 0 && value != 0 {
                out.push((key, value));
            }
        }
        Ok(out)
    }

    /// The value stored under the `str` key `name` in the dict at `address`.
    pub fn dict_get_str(&self, address: u64, name: &str) -> Result<Option<u64>, ObjectError> {
        let items = self.dict_items(address)?;
        self.find_str_key(&items, name)
    }

    /// The value of the entry whose key is the `str` `name`. The lengths of
    /// all keys are read in one batch first, so only keys of the right
    /// length are read in full (sys.modules has hundreds of entries).
    pub fn find_str_key(
        &self,
        items: &[(u64, u64)],
        name: &str,
    ) -> Result<Option<u64>, ObjectError> {
        let wanted = name.chars().count() as u64;
        let candidates: Vec<&(u64, u64)> = match self.layout.offsets.unicode_length {
            Some(length_at) => {
                let mut lengths = vec![[0u8; 8]; items.len()];
                let mut pieces: Vec<(u64, &mut [u8])> = items
                    .iter()
                    .zip(lengths.iter_mut())
                    .map(|((key, _), buf)| (key.wrapping_add(length_at), &mut buf[..]))
                    .collect();
                if self.memory.read_many(&mut pieces).is_ok() {
                    items
                        .iter()
                        .zip(&lengths)
                        .filter(|(_, length)| u64::from_le_bytes(**length) == wanted)
                        .map(|(item, _)| item)
                        .collect()
                } else {
                    items.iter().collect()
                }
            }
            None => items.iter().collect(),
        };
        for (key, value) in candidates {
            if self.unicode(*key).ok().as_deref() == Some(name) {
                return Ok(Some(*value));
            }
        }
        Ok(None)
    }

    /// The attribute `name` from the instance dict (or inline values) of
    /// the object at `address`.
    pub fn instance_attribute(&self, address: u64, name: &str) -> Result<Option<u64>, ObjectError> {
        let o = &self.layout.offsets;
        let c = &self.layout.core;
        let type_address = self.type_of(address)?;
        let flags = read_u64(self.memory, type_address.wrapping_add(c.type_tp_flags))?;
        let managed = c.tpflags_managed_dict;
        if managed == 0 || flags & managed == 0 {
            // 3.9/3.10, or a type without a managed dict: tp_dictoffset.
            let dict_offset = read_u64(
                self.memory,
                type_address.wrapping_add(self.layout.core.type_tp_dictoffset),
            )? as i64;
            if dict_offset <= 0 || dict_offset > 4096 {
                return Ok(None);
            }
            let dict = read_u64(self.memory, address.wrapping_add(dict_offset as u64))?;
            return if dict == 0 {
                Ok(None)
            } else {
                self.dict_get_str(dict, name)
            };
        }
        // Managed dicts (Include/internal/pycore_object.h): the dict pointer
        // sits three words before the object (one on free-threaded builds,
        // which have no PyGC_Head: `object_managed_dict_before`). Without a dict, the values
        // live in a split table keyed by the type's ht_cached_keys: four
        // words before the object on 3.11, stored minus one (so odd) in the
        // same slot as the dict on 3.12, inline after the object on 3.13+.
        let slot = read_u64(
            self.memory,
            address.wrapping_sub(need(o.object_managed_dict_before, "managed dict slot")?),
        )?;
        // Py_TPFLAGS_INLINE_VALUES (3.13+; 0 in no table).
        let values = if let Some(inline) = o.tpflags_inline_values.filter(|&f| f != 0) {
            if slot != 0 {
                return self.dict_get_str(slot, name);
            }
            if flags & inline == 0 {
                return Ok(None);
            }
            let basic_size = read_u64(
                self.memory,
                type_address.wrapping_add(self.layout.core.type_tp_basicsize),
            )?;
            address.wrapping_add(basic_size)
        } else if o.long_lv_tag.is_some() {
            if slot & 1 == 0 {
                return if slot == 0 {
                    Ok(None)
                } else {
                    self.dict_get_str(slot, name)
                };
            }
            // _PyDictOrValues_GetValues: the slot holds values - 1.
            slot.wrapping_add(1)
        } else {
            if slot != 0 {
                return self.dict_get_str(slot, name);
            }
            read_u64(self.memory, address.wrapping_sub(32))?
        };
        if values == 0 {
            return Ok(None);
        }
        let cached_keys = read_u64(
            self.memory,
            type_address.wrapping_add(need(o.heap_type_ht_cached_keys, "ht_cached_keys")?),
        )?;
        if cached_keys == 0 {
            return Ok(None);
        }
        let items = self.keys_items(cached_keys, values)?;
        self.find_str_key(&items, name)
    }
}
