//! The few facts `pydeep trace` needs from an ELF file: the dynamic symbols
//! and where the first loadable segment starts. The files come from the
//! target (its libc, its libpython or executable) and are untrusted: every
//! offset is checked against the file, every table capped.

use std::collections::HashMap;

/// Most dynamic symbols read from one file.
const MAX_SYMBOLS: usize = 200_000;

/// Dynamic symbols (defined ones) of an ELF64 little-endian file, by name,
/// with the virtual address of the first `PT_LOAD` segment.
#[derive(Debug, Default)]
pub struct Symbols {
    /// `st_value` of each defined dynamic symbol.
    pub values: HashMap<String, u64>,
    /// `p_vaddr` of the first `PT_LOAD`, rounded down to its page.
    pub first_load_vaddr: u64,
}

/// Why an ELF file could not be read.
#[derive(Debug, thiserror::Error)]
#[error("not a readable ELF64 little-endian x86_64 file: {0}")]
pub struct ElfError(&'static str);

fn u16_at(data: &[u8], at: usize) -> Result<u16, ElfError> {
    data.get(at..at.saturating_add(2))
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .ok_or(ElfError("truncated"))
}

fn u32_at(data: &[u8], at: usize) -> Result<u32, ElfError> {
    data.get(at..at.saturating_add(4))
        .map(|b| u32::from_le_bytes(b.try_into().unwrap_or_default()))
        .ok_or(ElfError("truncated"))
}

fn u64_at(data: &[u8], at: usize) -> Result<u64, ElfError> {
    data.get(at..at.saturating_add(8))
        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
        .ok_or(ElfError("truncated"))
}

fn usize_at(data: &[u8], at: usize) -> Result<usize, ElfError> {
    usize::try_from(u64_at(data, at)?).map_err(|_| ElfError("offset out of range"))
}

/// Most bytes of section headers, and of one symbol or string table, read
/// from a file by [`read_dynamic`].
const MAX_TABLE: u64 = 16 << 20;

/// The parts of the ELF file `file` (`size` bytes) that [`symbols`]
/// reads: its header, program and section headers, dynamic symbol tables
/// and their strings, each at its own offset of a buffer as large as the
/// file whose other bytes stay zero (never touched, so never made
/// resident). A libpython with its debug information is ~30 MB of which
/// these are ~100 KB: reading the whole file took most of the time of
/// opening a trace window (70-160 ms, notes/tracing.md).
pub fn read_dynamic(file: &std::fs::File, size: u64) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt as _;
    let len = usize::try_from(size).map_err(|_| std::io::Error::other("file too large"))?;
    let mut data = vec![0u8; len];
    let read = |data: &mut Vec<u8>, at: usize, count: usize| -> std::io::Result<()> {
        let end = at.saturating_add(count).min(len);
        if at >= end {
            return Ok(());
        }
        file.read_exact_at(&mut data[at..end], at as u64)
    };
    read(&mut data, 0, 64)?;
    let header = |data: &[u8]| -> Option<(usize, usize, usize, usize)> {
        let phoff = usize_at(data, 32).ok()?;
        let shoff = usize_at(data, 40).ok()?;
        let ph = u16_at(data, 54).ok()? as usize * u16_at(data, 56).ok()? as usize;
        let sh = u16_at(data, 58).ok()? as usize * (u16_at(data, 60).ok()? as usize).min(4096);
        Some((phoff, ph, shoff, sh))
    };
    let Some((phoff, ph, shoff, sh)) = header(&data) else {
        return Ok(data);
    };
    read(&mut data, phoff, ph)?;
    read(&mut data, shoff, sh.min(MAX_TABLE as usize))?;
    let entsize = u16_at(&data, 58).unwrap_or(64).max(64) as usize;
    let count = (sh / entsize).min(4096);
    for i in 0..count {
        let at = shoff.saturating_add(i * entsize);
        if u32_at(&data, at.saturating_add(4)).ok() != Some(11) {
            continue;
        }
        let (Ok(offset), Ok(size), Ok(link)) = (
            usize_at(&data, at.saturating_add(24)),
            usize_at(&data, at.saturating_add(32)),
            u32_at(&data, at.saturating_add(40)),
        ) else {
            continue;
        };
        read(&mut data, offset, size.min(MAX_TABLE as usize))?;
        let strings = shoff.saturating_add((link as usize).saturating_mul(entsize));
        if let (Ok(offset), Ok(size)) = (
            usize_at(&data, strings.saturating_add(24)),
            usize_at(&data, strings.saturating_add(32)),
        ) {
            read(&mut data, offset, size.min(MAX_TABLE as usize))?;
        }
    }
    Ok(data)
}

/// Reads the dynamic symbols of `data`.
pub fn symbols(data: &[u8]) -> Result<Symbols, ElfError> {
    if data.get(..4) != Some(b"\x7fELF") {
        return Err(ElfError("no ELF magic"));
    }
    if data.get(4) != Some(&2) || data.get(5) != Some(&1) {
        return Err(ElfError("not 64-bit little-endian"));
    }
    if u16_at(data, 18)? != 62 {
        return Err(ElfError("not x86_64"));
    }
    let phoff = usize_at(data, 32)?;
    let shoff = usize_at(data, 40)?;
    let phentsize = u16_at(data, 54)? as usize;
    let phnum = u16_at(data, 56)? as usize;
    let shentsize = u16_at(data, 58)? as usize;
    let shnum = u16_at(data, 60)? as usize;
    if phentsize < 56 || shentsize < 64 {
        return Err(ElfError("bad header sizes"));
    }
    let mut first_load_vaddr = None;
    for i in 0..phnum {
        let at = phoff.saturating_add(i.saturating_mul(phentsize));
        if u32_at(data, at)? == 1 {
            first_load_vaddr = Some(u64_at(data, at.saturating_add(16))? & !0xfff);
            break;
        }
    }
    let first_load_vaddr = first_load_vaddr.ok_or(ElfError("no PT_LOAD segment"))?;
    let section = |i: usize| shoff.saturating_add(i.saturating_mul(shentsize));
    let mut values = HashMap::new();
    for i in 0..shnum.min(4096) {
        let at = section(i);
        // SHT_DYNSYM
        if u32_at(data, at.saturating_add(4))? != 11 {
            continue;
        }
        let offset = usize_at(data, at.saturating_add(24))?;
        let size = usize_at(data, at.saturating_add(32))?;
        let link = u32_at(data, at.saturating_add(40))? as usize;
        let entsize = usize_at(data, at.saturating_add(56))?.max(24);
        let strings_at = section(link);
        let strings_offset = usize_at(data, strings_at.saturating_add(24))?;
        let strings_size = usize_at(data, strings_at.saturating_add(32))?;
        let strings = data
            .get(strings_offset..strings_offset.saturating_add(strings_size))
            .ok_or(ElfError("string table out of the file"))?;
        let count = (size / entsize).min(MAX_SYMBOLS);
        for s in 0..count {
            let sym = offset.saturating_add(s.saturating_mul(entsize));
            let name = u32_at(data, sym)? as usize;
            let shndx = u16_at(data, sym.saturating_add(6))?;
            let value = u64_at(data, sym.saturating_add(8))?;
            if shndx == 0 || value == 0 {
                continue;
            }
            let Some(tail) = strings.get(name..) else {
                continue;
            };
            let end = tail.iter().position(|&b| b == 0).unwrap_or(0);
            let Ok(name) = std::str::from_utf8(&tail[..end]) else {
                continue;
            };
            if name.is_empty() {
                continue;
            }
            // Versioned duplicates (e.g. two memcpy) keep the first.
            values.entry(name.to_owned()).or_insert(value);
        }
    }
    Ok(Symbols {
        values,
        first_load_vaddr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(symbols(b"").is_err());
        assert!(symbols(b"\x7fELF\x02\x01").is_err());
        let mut header = vec![0u8; 64];
        header[..4].copy_from_slice(b"\x7fELF");
        header[4] = 2;
        header[5] = 1;
        header[18] = 62;
        header[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
        header[54] = 56;
        header[56] = 0xff;
        header[58] = 64;
        assert!(symbols(&header).is_err());
    }

    #[test]
    fn reading_only_the_dynamic_tables_finds_what_reading_the_whole_file_finds() {
        let maps = std::fs::read_to_string("/proc/self/maps").expect("maps");
        let libc = maps
            .lines()
            .filter_map(|l| l.split_whitespace().nth(5))
            .find(|p| p.contains("libc.so") || p.contains("libc-"))
            .expect("libc mapped");
        let whole = symbols(&std::fs::read(libc).expect("read")).expect("libc");
        let file = std::fs::File::open(libc).expect("open");
        let size = file.metadata().expect("size").len();
        let parts = symbols(&read_dynamic(&file, size).expect("read")).expect("libc");
        assert!(whole.values.len() > 1000, "{}", whole.values.len());
        assert_eq!(whole.values, parts.values);
        assert_eq!(whole.first_load_vaddr, parts.first_load_vaddr);
    }

    #[test]
    fn the_embedded_tracer_exports_its_control_block_and_start_function() {
        let found = symbols(super::super::inject::TRACER_LIBRARY).expect("the tracer is ELF");
        assert!(found.values.contains_key(super::super::abi::CONTROL_SYMBOL));
        assert!(found.values.contains_key(super::super::abi::START_SYMBOL));
    }
}
