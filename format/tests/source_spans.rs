//! Source files embedded as spans of lines (format version 3): the reader
//! lays every line at its own line number, whether one span, several spans
//! of one file, or the whole file is embedded.

mod common;

use pydeep_format::{proto, Reader, Recording, Writer, WriterOptions};

/// Writes the definitions `define` makes; returns the recording read back
/// to its end.
fn recording(define: impl FnOnce(&mut Writer<Vec<u8>>)) -> Recording<&'static [u8]> {
    let mut writer = Writer::new(Vec::new(), common::header(), WriterOptions::default()).unwrap();
    define(&mut writer);
    let bytes = writer.finish(proto::Footer::default()).unwrap();
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    let mut recording = Recording::new(Reader::new(bytes).unwrap()).unwrap();
    while recording.next_event().unwrap().is_some() {}
    recording
}

#[test]
fn spans_of_a_file_read_back_at_their_own_line_numbers() {
    let mut ids = (0, 0, 0);
    let recording = recording(|writer| {
        let path = writer.intern_string("/srv/app.py");
        ids.0 = writer.define_source_span(path, 3, b"def f():\n    return 1\n".to_vec());
        ids.1 = writer.define_source_span(path, 7, b"def g():\n    pass".to_vec());
        let other = writer.intern_string("/srv/whole.py");
        ids.2 = writer.define_source_file(other, Some(b"x = 1\r\ny = 2\n".to_vec()));
    });
    let tables = recording.tables();
    assert_eq!(
        tables.source_text(ids.0).as_deref(),
        Some("\n\ndef f():\n    return 1")
    );
    let merged = tables.file_text("/srv/app.py").unwrap();
    let lines: Vec<&str> = merged.lines().collect();
    assert_eq!(lines[2], "def f():", "line 3");
    assert_eq!(lines[3], "    return 1");
    assert_eq!(lines[4], "", "not embedded");
    assert_eq!(lines[6], "def g():", "line 7");
    assert_eq!(lines[7], "    pass");
    assert_eq!(lines.len(), 8);
    // A whole file stays byte for byte what was embedded.
    assert_eq!(
        tables.source_text(ids.2).as_deref(),
        Some("x = 1\r\ny = 2\n")
    );
    assert_eq!(
        tables.file_text("/srv/whole.py").as_deref(),
        Some("x = 1\r\ny = 2\n")
    );
    assert_eq!(tables.file_text("/srv/none.py"), None);
    assert_ne!(ids.0, ids.1);
    assert_ne!(ids.1, ids.2);
}
