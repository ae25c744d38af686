//! Truncated, bit-flipped and hostile files: every complete chunk is read,
//! the damage is reported with its offset, nothing panics.

mod common;

use pydeep_format::{version_check, Chunk, FormatError, Reader, Recording, FORMAT_VERSION, MAGIC};

/// Reads chunks until the end or an error.
fn read_all(data: &[u8]) -> (Vec<Chunk>, Result<(), FormatError>) {
    let mut reader = match Reader::new(data) {
        Ok(reader) => reader,
        Err(error) => return (Vec::new(), Err(error)),
    };
    let mut chunks = Vec::new();
    loop {
        match reader.next_chunk() {
            Ok(Some(chunk)) => chunks.push(chunk),
            Ok(None) => return (chunks, Ok(())),
            Err(error) => return (chunks, Err(error)),
        }
    }
}

/// Drains a Recording over `data`; returns the number of samples and the error, if any.
fn read_events(data: &[u8]) -> (usize, Option<FormatError>) {
    let reader = match Reader::new(data) {
        Ok(reader) => reader,
        Err(error) => return (0, Some(error)),
    };
    let mut recording = match Recording::new(reader) {
        Ok(recording) => recording,
        Err(error) => return (0, Some(error)),
    };
    let mut samples = 0;
    loop {
        match recording.next_event() {
            Ok(Some(pydeep_format::Event::Sample(sample))) => {
                let _ = recording.tables().stack_frames(sample.stack);
                samples += 1;
            }
            Ok(Some(_)) => {}
            Ok(None) => return (samples, None),
            Err(error) => return (samples, Some(error)),
        }
    }
}

fn samples_in(chunks: &[Chunk]) -> usize {
    chunks
        .iter()
        .flat_map(|c| &c.records)
        .filter_map(|r| match &r.kind {
            Some(pydeep_format::proto::record::Kind::Samples(b)) => Some(b.len()),
            _ => None,
        })
        .sum()
}

#[test]
fn a_file_cut_at_every_byte_yields_exactly_the_chunks_before_the_cut() {
    let file = common::small_recording(23);
    let (chunks, result) = read_all(&file);
    result.expect("the whole file is valid");
    assert!(chunks.len() >= 5, "a multi-chunk file");
    let ends: Vec<u64> = chunks.iter().map(|c| c.offset + c.size).collect();
    assert_eq!(*ends.last().unwrap(), file.len() as u64);

    for cut in 0..file.len() {
        let data = &file[..cut];
        let (read, result) = read_all(data);
        let complete = ends.iter().filter(|&&end| end <= cut as u64).count();
        let readable = if complete == 0 {
            16
        } else {
            ends[complete - 1]
        };
        assert_eq!(read.len(), complete, "cut at {cut}");
        assert_eq!(read[..], chunks[..complete], "cut at {cut}");
        match result {
            Err(FormatError::Truncated {
                offset,
                complete_chunks,
            }) => {
                if cut < 16 {
                    assert_eq!((offset, complete_chunks), (0, 0), "cut at {cut}");
                } else {
                    assert_eq!(offset, readable, "cut at {cut}");
                    assert_eq!(complete_chunks, complete as u64, "cut at {cut}");
                }
            }
            other => panic!("cut at {cut}: expected Truncated, got {other:?}"),
        }
        let (samples, error) = read_events(data);
        assert!(
            matches!(error, Some(FormatError::Truncated { .. })),
            "cut at {cut}: {error:?}"
        );
        assert_eq!(samples, samples_in(&chunks[..complete]), "cut at {cut}");
    }
}

#[test]
fn every_single_flipped_bit_is_detected_at_its_chunk() {
    let file = common::small_recording(23);
    let (chunks, _) = read_all(&file);
    for position in 0..file.len() {
        for bit in 0..8 {
            let mut data = file.clone();
            data[position] ^= 1 << bit;
            let (read, result) = read_all(&data);
            let error = result.expect_err("a flipped bit must be detected");
            if position < 16 {
                assert!(read.is_empty());
                match (position, &error) {
                    // A version flipped into another readable one is
                    // caught by the check word after it.
                    (0..=7, FormatError::BadMagic)
                    | (8..=11, FormatError::UnsupportedVersion(_))
                    | (8..=15, FormatError::Corrupt { offset: 12, .. }) => {}
                    _ => panic!("byte {position} bit {bit}: {error:?}"),
                }
                continue;
            }
            let index = chunks
                .iter()
                .position(|c| (position as u64) < c.offset + c.size)
                .unwrap();
            assert_eq!(read[..], chunks[..index], "byte {position} bit {bit}");
            match error {
                FormatError::Corrupt { offset, .. } => {
                    assert_eq!(offset, chunks[index].offset, "byte {position} bit {bit}")
                }
                // A flipped bit in a length field can make the chunk look
                // longer than the rest of the file.
                FormatError::Truncated { offset, .. } => {
                    assert!(
                        position < chunks[index].offset as usize + 4,
                        "byte {position} bit {bit}"
                    );
                    assert_eq!(offset, chunks[index].offset, "byte {position} bit {bit}");
                }
                other => panic!("byte {position} bit {bit}: {other:?}"),
            }
            let _ = read_events(&data);
        }
    }
}

fn file_header() -> Vec<u8> {
    let mut data = MAGIC.to_vec();
    data.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    data.extend_from_slice(&version_check(FORMAT_VERSION).to_le_bytes());
    data
}

#[test]
fn an_absurd_chunk_length_is_refused_as_corrupt() {
    for (compressed, uncompressed) in [(u32::MAX, 10), (10, u32::MAX), ((64 << 20) + 1, 10)] {
        let mut data = file_header();
        data.extend_from_slice(&compressed.to_le_bytes());
        data.extend_from_slice(&uncompressed.to_le_bytes());
        data.extend_from_slice(&[0; 8]);
        data.extend_from_slice(&[0xAB; 100]);
        let (chunks, result) = read_all(&data);
        assert!(chunks.is_empty());
        match result {
            Err(FormatError::Corrupt { offset: 16, reason }) => {
                assert!(reason.contains("limit"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn garbage_after_the_final_chunk_is_reported() {
    let mut file = common::small_recording(3);
    let end = file.len() as u64;
    file.extend_from_slice(b"junk");
    let (chunks, result) = read_all(&file);
    assert!(chunks.last().unwrap().is_final);
    match result {
        Err(FormatError::Corrupt { offset, .. }) => assert_eq!(offset, end),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_foreign_or_newer_file_is_refused_by_its_header() {
    assert!(matches!(
        Reader::new(&b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0"[..]),
        Err(FormatError::BadMagic)
    ));
    // Text-mode mangling: CRLF turned into LF shifts everything after byte 4.
    let file = common::small_recording(1);
    let mut mangled = file[..4].to_vec();
    mangled.extend_from_slice(&file[5..]);
    assert!(matches!(
        Reader::new(&mangled[..]),
        Err(FormatError::BadMagic)
    ));
    let mut newer = file_header();
    newer[8] = FORMAT_VERSION as u8 + 1;
    assert!(matches!(
        Reader::new(&newer[..]),
        Err(FormatError::UnsupportedVersion(v)) if v == FORMAT_VERSION + 1
    ));
    let mut older = file_header();
    older[8] = 0;
    assert!(matches!(
        Reader::new(&older[..]),
        Err(FormatError::UnsupportedVersion(0))
    ));
}

#[test]
fn random_bytes_after_a_valid_header_never_panic() {
    // A cheap, deterministic stand-in for the fuzzer, run on every test.
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let valid = common::small_recording(10);
    for round in 0..2000 {
        let mut data = if round % 2 == 0 {
            valid.clone()
        } else {
            file_header()
        };
        let edits = 1 + next() % 8;
        for _ in 0..edits {
            let len = data.len() as u64;
            match next() % 3 {
                0 => {
                    let i = (next() % len) as usize;
                    data[i] = next() as u8;
                }
                1 => data.truncate((16 + next() % len.saturating_sub(15).max(1)) as usize),
                _ => data.extend_from_slice(&next().to_le_bytes()),
            }
        }
        let _ = read_all(&data);
        let _ = read_events(&data);
    }
}
