//! Decoding of CPython's line and location tables.
//!
//! A code object maps bytecode offsets to source positions with a compact
//! table whose encoding changed twice:
//!
//! * 3.9 and earlier: `co_lnotab`, pairs of (address increment, signed line
//!   increment); see `Objects/lnotab_notes.txt` of CPython 3.9.
//! * 3.10: `co_linetable` (PEP 626), pairs of (byte length, signed line
//!   delta) where a line delta of -128 means "no line"; see
//!   `Objects/lnotab_notes.txt` of CPython 3.10.
//! * 3.11 and later: the location table (PEP 657), variable-length entries
//!   carrying line, end line, column and end column; see
//!   `Objects/locations.md` and `advance_with_locations` in
//!   `Objects/codeobject.c`.
//!
//! The table bytes come from another process's memory and may be garbage:
//! every decoder here is bounded by the table's length, makes progress on
//! every step, never panics and never loops forever.
//!
//! Offsets are byte offsets into the bytecode, as `dis` numbers them.

use pydeep_format::proto::LineTableKind;

/// One `co_lines()` entry: the bytecode bytes `start..end` belong to `line`
/// (`None` for instructions the compiler gave no line, such as cleanup code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineRange {
    /// First byte offset of the range.
    pub start: u32,
    /// One past the last byte offset of the range.
    pub end: u32,
    /// Source line, or `None` if the range has no line.
    pub line: Option<u32>,
}

/// One `co_positions()` entry: the source span of one code unit (2 bytes).
/// Before 3.11 the tables hold no columns, so `column` and `end_column` are
/// `None` and `end_line` equals `line`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Position {
    /// First line of the span.
    pub line: Option<u32>,
    /// Last line of the span.
    pub end_line: Option<u32>,
    /// 0-based UTF-8 byte column where the span starts.
    pub column: Option<u32>,
    /// 0-based UTF-8 byte column where the span ends (exclusive).
    pub end_column: Option<u32>,
}

/// One decoded table entry: a byte range and its source span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    start: u32,
    end: u32,
    position: Position,
}

/// Converts a computed line (which garbage can drive negative or huge) into
/// the `Option<u32>` the API reports.
fn line_value(line: i64) -> Option<u32> {
    u32::try_from(line).ok()
}

/// Decodes the table into its raw entries, in order. Zero-length entries are
/// kept (callers decide); the number of entries is at most `table.len()`.
fn entries(kind: LineTableKind, first_line: u32, table: &[u8]) -> Vec<Entry> {
    match kind {
        LineTableKind::LineTableLnotab => lnotab_entries(first_line, table),
        LineTableKind::LineTable310 => linetable_310_entries(first_line, table),
        LineTableKind::LineTableLocations => location_entries(first_line, table),
        LineTableKind::LineTableUnspecified => Vec::new(),
    }
}

/// 3.9 `co_lnotab`. CPython 3.9's `PyCode_Addr2Line` adds each address
/// increment and then, if the address is still at or below the query, the
/// line increment: the line increment of a pair applies from the address
/// reached by that pair's address increment. Entries here are the ranges
/// between those addresses; the last one is open-ended (`end == u32::MAX`)
/// because the table does not know the bytecode's length.
fn lnotab_entries(first_line: u32, table: &[u8]) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut line = i64::from(first_line);
    let mut start: u32 = 0;
    let mut address: u32 = 0;
    for pair in table.chunks_exact(2) {
        address = address.saturating_add(u32::from(pair[0]));
        if address > start {
            out.push(Entry {
                start,
                end: address,
                position: lines_only(line_value(line)),
            });
            start = address;
        }
        line += i64::from(pair[1] as i8);
    }
    out.push(Entry {
        start,
        end: u32::MAX,
        position: lines_only(line_value(line)),
    });
    out
}

/// 3.10 `co_linetable`: (byte length, line delta) pairs, -128 meaning "no
/// line" (`advance` in CPython 3.10's `Objects/codeobject.c`).
fn linetable_310_entries(first_line: u32, table: &[u8]) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut line = i64::from(first_line);
    let mut end: u32 = 0;
    for pair in table.chunks_exact(2) {
        let start = end;
        end = end.saturating_add(u32::from(pair[0]));
        let delta = pair[1] as i8;
        let entry_line = if delta == -128 {
            None
        } else {
            line += i64::from(delta);
            line_value(line)
        };
        out.push(Entry {
            start,
            end,
            position: lines_only(entry_line),
        });
    }
    out
}

fn lines_only(line: Option<u32>) -> Position {
    Position {
        line,
        end_line: line,
        column: None,
        end_column: None,
    }
}

/// The 3.11+ location-table entry codes (`_PyCodeLocationInfoKind` in
/// `Include/internal/pycore_code.h`).
const LOCATION_INFO_ONE_LINE0: u8 = 10;
const LOCATION_INFO_ONE_LINE2: u8 = 12;
const LOCATION_INFO_NO_COLUMNS: u8 = 13;
const LOCATION_INFO_LONG: u8 = 14;
const LOCATION_INFO_NONE: u8 = 15;

/// Reads the 6-bit-chunk varint of the location table (`read_varint` in
/// `Objects/codeobject.c`) from `bytes[*index..]`; missing bytes read as 0
/// and the shift is capped so garbage cannot overflow.
fn read_varint(bytes: &[u8], index: &mut usize) -> u64 {
    let mut value: u64 = 0;
    let mut shift = 0u32;
    while let Some(&byte) = bytes.get(*index) {
        *index += 1;
        if shift < 60 {
            value |= u64::from(byte & 63) << shift;
        }
        shift += 6;
        if byte & 64 == 0 {
            break;
        }
    }
    value
}

fn read_signed_varint(bytes: &[u8], index: &mut usize) -> i64 {
    let value = read_varint(bytes, index);
    let magnitude = (value >> 1) as i64;
    if value & 1 == 1 {
        -magnitude
    } else {
        magnitude
    }
}

/// Converts a column stored "plus one" (0 meaning unknown) or a raw byte.
fn column_value(value: i64) -> Option<u32> {
    u32::try_from(value).ok()
}

/// 3.11+ location table (`advance_with_locations` in `Objects/codeobject.c`).
/// Every entry starts with a byte whose top bit is set; an entry's payload is
/// read only from the bytes before the next such byte, so a corrupt entry can
/// neither run past the table nor swallow the entries after it.
fn location_entries(first_line: u32, table: &[u8]) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut line = i64::from(first_line);
    let mut end: u32 = 0;
    let mut index = 0;
    while index < table.len() {
        let first = table[index];
        let payload_end = table[index + 1..]
            .iter()
            .position(|byte| byte & 0x80 != 0)
            .map_or(table.len(), |p| index + 1 + p);
        let payload = &table[index + 1..payload_end];
        index = payload_end;
        if first & 0x80 == 0 {
            // Not an entry start: only possible in garbage. Skip it.
            continue;
        }
        let code = (first >> 3) & 15;
        let start = end;
        end = end.saturating_add((u32::from(first & 7) + 1) * 2);
        let mut cursor = 0;
        let position = match code {
            LOCATION_INFO_NONE => Position::default(),
            LOCATION_INFO_LONG => {
                line += read_signed_varint(payload, &mut cursor);
                let end_line = line.saturating_add(read_varint(payload, &mut cursor) as i64);
                let column = read_varint(payload, &mut cursor) as i64 - 1;
                let end_column = read_varint(payload, &mut cursor) as i64 - 1;
                Position {
                    line: line_value(line),
                    end_line: line_value(end_line),
                    column: column_value(column),
                    end_column: column_value(end_column),
                }
            }
            LOCATION_INFO_NO_COLUMNS => {
                line += read_signed_varint(payload, &mut cursor);
                lines_only(line_value(line))
            }
            LOCATION_INFO_ONE_LINE0..=LOCATION_INFO_ONE_LINE2 => {
                line += i64::from(code - LOCATION_INFO_ONE_LINE0);
                Position {
                    line: line_value(line),
                    end_line: line_value(line),
                    column: payload.first().map(|&c| u32::from(c)),
                    end_column: payload.get(1).map(|&c| u32::from(c)),
                }
            }
            _ => {
                // Short forms 0-9: same line, column in 8-column groups.
                let second = payload.first().copied().unwrap_or(0);
                let column = u32::from(code) << 3 | u32::from(second >> 4);
                Position {
                    line: line_value(line),
                    end_line: line_value(line),
                    column: Some(column),
                    end_column: Some(column + u32::from(second & 15)),
                }
            }
        };
        out.push(Entry {
            start,
            end,
            position,
        });
    }
    out
}

/// The line ranges of a code object as its table stores them, in order:
/// the `co_lines()` of 3.10 and 3.11, which yield every non-empty entry.
/// 3.12+'s `co_lines()` merges neighbours of the same line; see
/// [`merge_line_ranges`].
///
/// 3.9 has no `co_lines()`; its ranges are the stretches between the
/// address increments of `co_lnotab`, the last one ending at `code_len`.
/// Every range is clipped to `code_len`.
pub fn line_ranges(
    kind: LineTableKind,
    first_line: u32,
    table: &[u8],
    code_len: u32,
) -> Vec<LineRange> {
    let mut out: Vec<LineRange> = Vec::new();
    for entry in entries(kind, first_line, table) {
        if entry.start >= code_len {
            break;
        }
        let end = entry.end.min(code_len);
        if end <= entry.start {
            continue;
        }
        out.push(LineRange {
            start: entry.start,
            end,
            line: entry.position.line,
        });
    }
    out
}

/// Merges neighbouring ranges of the same line, as 3.12+'s `co_lines()`
/// does (the "Merge overlapping entries" loop of `lineiter_next` in
/// `Objects/codeobject.c`).
pub fn merge_line_ranges(ranges: &[LineRange]) -> Vec<LineRange> {
    let mut out: Vec<LineRange> = Vec::with_capacity(ranges.len());
    for range in ranges {
        match out.last_mut() {
            Some(last) if last.line == range.line && last.end == range.start => {
                last.end = range.end;
            }
            _ => out.push(*range),
        }
    }
    out
}

/// The `co_positions()` of a code object: one position per 2-byte code unit
/// (inline caches included), in order.
///
/// 3.11+ tables give columns; older tables give lines only. The result stops
/// where the table stops, and never holds more than `code_len / 2` entries.
pub fn positions(
    kind: LineTableKind,
    first_line: u32,
    table: &[u8],
    code_len: u32,
) -> Vec<Position> {
    let entries = entries(kind, first_line, table);
    let mut out = Vec::new();
    let mut current = 0;
    for unit in 0..code_len / 2 {
        let offset = unit * 2;
        // Entries are contiguous and in order, so one forward walk finds the
        // entry of every unit (even in garbage with odd byte lengths).
        while entries.get(current).is_some_and(|e| e.end <= offset) {
            current += 1;
        }
        match entries.get(current) {
            Some(entry) if entry.start <= offset => out.push(entry.position),
            _ => break,
        }
    }
    out
}

/// The source line of the instruction at byte `offset`, as CPython's
/// `PyCode_Addr2Line` computes it (the line a traceback or `f_lineno` shows),
/// or `None` if the instruction has no line or the table does not cover it.
///
/// Scans the table without allocating; for many lookups in one code object
/// use [`LineIndex`].
pub fn line_for_offset(
    kind: LineTableKind,
    first_line: u32,
    table: &[u8],
    offset: u32,
) -> Option<u32> {
    position_for_offset(kind, first_line, table, offset).and_then(|p| p.line)
}

/// The source span of the instruction at byte `offset`, or `None` if the
/// table does not cover it.
pub fn position_for_offset(
    kind: LineTableKind,
    first_line: u32,
    table: &[u8],
    offset: u32,
) -> Option<Position> {
    entries(kind, first_line, table)
        .into_iter()
        .find(|entry| entry.start <= offset && offset < entry.end)
        .map(|entry| entry.position)
}

/// A decoded table for repeated lookups: binary search over its entries.
#[derive(Debug, Clone, Default)]
pub struct LineIndex {
    entries: Vec<Entry>,
}

impl LineIndex {
    /// Decodes `table` once.
    pub fn new(kind: LineTableKind, first_line: u32, table: &[u8]) -> Self {
        let mut entries = entries(kind, first_line, table);
        // Zero-length entries cover nothing; dropping them keeps the starts
        // strictly increasing, which the binary search relies on.
        entries.retain(|entry| entry.end > entry.start);
        entries.sort_by_key(|entry| entry.start);
        entries.dedup_by_key(|entry| entry.start);
        LineIndex { entries }
    }

    /// The span of the instruction at byte `offset`, if covered.
    pub fn position(&self, offset: u32) -> Option<Position> {
        let after = self.entries.partition_point(|entry| entry.start <= offset);
        let entry = self.entries.get(after.checked_sub(1)?)?;
        (offset < entry.end).then_some(entry.position)
    }

    /// The line of the instruction at byte `offset`, if known.
    pub fn line(&self, offset: u32) -> Option<u32> {
        self.position(offset).and_then(|p| p.line)
    }

    /// The last line any instruction's span reaches (its end line where the
    /// table gives one), if the table names a line at all.
    pub fn last_line(&self) -> Option<u32> {
        self.entries
            .iter()
            .filter_map(|e| e.position.end_line.max(e.position.line))
            .max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lnotab_line_increments_apply_from_their_address() {
        // firstlineno 10; +2 bytes -> line 11; +4 bytes, +2 lines -> 13.
        let table = [2, 1, 4, 2];
        let kind = LineTableKind::LineTableLnotab;
        assert_eq!(line_for_offset(kind, 10, &table, 0), Some(10));
        assert_eq!(line_for_offset(kind, 10, &table, 2), Some(11));
        assert_eq!(line_for_offset(kind, 10, &table, 5), Some(11));
        assert_eq!(line_for_offset(kind, 10, &table, 6), Some(13));
        assert_eq!(line_for_offset(kind, 10, &table, 600), Some(13));
    }

    #[test]
    fn linetable_310_minus_128_means_no_line() {
        let table = [4, 1, 2, 0x80, 2, 1];
        let kind = LineTableKind::LineTable310;
        let ranges = line_ranges(kind, 1, &table, 8);
        assert_eq!(
            ranges,
            vec![
                LineRange {
                    start: 0,
                    end: 4,
                    line: Some(2)
                },
                LineRange {
                    start: 4,
                    end: 6,
                    line: None
                },
                LineRange {
                    start: 6,
                    end: 8,
                    line: Some(3)
                },
            ]
        );
    }

    #[test]
    fn location_table_short_one_line_long_and_none_forms() {
        // short form code 1 (column 8 + 2 = 10, width 3), 1 unit;
        // one-line form +1 line, columns 4..9, 2 units;
        // long form: +2 lines, end line +1, columns (5-1)..(7-1), 1 unit;
        // none form, 1 unit.
        let table = [
            0x80 | (1 << 3),
            0x23,
            0x80 | (11 << 3) | 1,
            4,
            9,
            0x80 | (14 << 3),
            4,
            1,
            5,
            7,
            0x80 | (15 << 3),
        ];
        let kind = LineTableKind::LineTableLocations;
        let got = positions(kind, 7, &table, 10);
        let span = |l, el, c, ec| Position {
            line: Some(l),
            end_line: Some(el),
            column: Some(c),
            end_column: Some(ec),
        };
        assert_eq!(
            got,
            vec![
                span(7, 7, 10, 13),
                span(8, 8, 4, 9),
                span(8, 8, 4, 9),
                span(10, 11, 4, 6),
                Position::default(),
            ]
        );
        assert_eq!(line_for_offset(kind, 7, &table, 6), Some(10));
        assert_eq!(line_for_offset(kind, 7, &table, 8), None);
        let index = LineIndex::new(kind, 7, &table);
        assert_eq!(index.line(4), Some(8));
        assert_eq!(index.line(10), None);
    }
}
