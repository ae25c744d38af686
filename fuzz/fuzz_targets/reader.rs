//! Feeds arbitrary bytes to the `.pdr` reader: it must never panic, loop
//! forever or allocate without bound, whatever the input. How the bytes
//! become a file: see `pydeep_format_fuzz::file_of`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pydeep_format::{Event, Reader, Recording};

fn read(input: &[u8]) {
    if let Ok(mut reader) = Reader::new(input) {
        while let Ok(Some(_chunk)) = reader.next_chunk() {}
    }
    let Ok(reader) = Reader::new(input) else {
        return;
    };
    let Ok(mut recording) = Recording::new(reader) else {
        return;
    };
    let mut events = 0u32;
    while let Ok(Some(event)) = recording.next_event() {
        if let Event::Sample(sample) = event {
            if events < 64 {
                let _ = recording.tables().stack_frames(sample.stack);
            }
        }
        events = events.saturating_add(1);
    }
    for id in recording.tables().stacks.keys().take(64) {
        let _ = recording.tables().stack_frames(id);
    }
}

fuzz_target!(|data: &[u8]| {
    if let Some(file) = pydeep_format_fuzz::file_of(data) {
        read(&file);
    }
});
