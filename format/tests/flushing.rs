//! When the writer writes chunks: by sample count, by time, on demand; and
//! what a reader sees of a writer that never finished.

mod common;

use std::cell::RefCell;
use std::io::Write;
use std::rc::Rc;
use std::time::Duration;

use pydeep_format::{proto, Event, FormatError, Reader, Recording, Writer, WriterOptions};

/// A sink whose bytes the test can read while the writer still holds it.
#[derive(Clone, Default)]
struct Shared(Rc<RefCell<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Samples readable from what has reached the sink so far, and whether the
/// reader reported the (expected) truncation.
fn readable_samples(sink: &Shared) -> (u64, bool) {
    let bytes = sink.0.borrow().clone();
    let mut recording = Recording::new(Reader::new(&bytes[..]).unwrap()).unwrap();
    let mut samples = 0;
    loop {
        match recording.next_event() {
            Ok(Some(Event::Sample(_))) => samples += 1,
            Ok(Some(_)) => {}
            Ok(None) => return (samples, false),
            Err(FormatError::Truncated { .. }) => return (samples, true),
            Err(error) => panic!("{error}"),
        }
    }
}

fn writer(sink: &Shared, options: WriterOptions) -> Writer<Shared> {
    let mut writer = Writer::new(sink.clone(), common::header(), options).unwrap();
    writer.define_thread(proto::ThreadDef {
        id: 1,
        ..Default::default()
    });
    writer
}

#[test]
fn the_header_is_on_disk_before_the_first_sample() {
    let sink = Shared::default();
    let writer = writer(&sink, WriterOptions::default());
    assert_eq!(writer.stats().chunks, 1);
    assert_eq!(readable_samples(&sink), (0, true));
}

#[test]
fn a_chunk_is_written_every_max_samples_per_chunk_samples() {
    let sink = Shared::default();
    let options = WriterOptions {
        flush_interval: Duration::from_secs(3600),
        max_samples_per_chunk: 3,
        ..WriterOptions::default()
    };
    let mut writer = writer(&sink, options);
    for i in 1..=7u64 {
        writer.sample(i * 1000, 1, 0, 0).unwrap();
        let written = i / 3 * 3;
        assert_eq!(writer.stats().chunks, 1 + i / 3, "after sample {i}");
        assert_eq!(readable_samples(&sink), (written, true), "after sample {i}");
    }
    writer.flush().unwrap();
    assert_eq!(readable_samples(&sink), (7, true));
    writer.finish(proto::Footer::default()).unwrap();
    assert_eq!(readable_samples(&sink), (7, false));
}

#[test]
fn a_chunk_is_written_once_the_flush_interval_has_passed() {
    let sink = Shared::default();
    let options = WriterOptions {
        flush_interval: Duration::from_millis(5),
        max_samples_per_chunk: 1_000_000,
        ..WriterOptions::default()
    };
    let mut writer = writer(&sink, options);
    writer.sample(1000, 1, 0, 0).unwrap();
    // Sleeping only guarantees that at least this much time has passed.
    std::thread::sleep(Duration::from_millis(6));
    assert!(writer.maybe_flush().unwrap(), "the interval has passed");
    assert_eq!(readable_samples(&sink), (1, true));
    assert!(!writer.maybe_flush().unwrap(), "nothing is pending");
    writer.sample(2000, 1, 0, 0).unwrap();
    std::thread::sleep(Duration::from_millis(6));
    // The next sample notices the interval passed and writes both.
    writer.sample(3000, 1, 0, 0).unwrap();
    assert_eq!(readable_samples(&sink), (3, true));
}

#[test]
fn nothing_is_written_before_a_long_interval_or_the_sample_cap() {
    let sink = Shared::default();
    let options = WriterOptions {
        flush_interval: Duration::from_secs(3600),
        max_samples_per_chunk: 1000,
        ..WriterOptions::default()
    };
    let mut writer = writer(&sink, options);
    for i in 0..999 {
        writer.sample(i, 1, 0, 0).unwrap();
    }
    assert!(!writer.maybe_flush().unwrap());
    assert_eq!(writer.stats().chunks, 1);
    assert_eq!(readable_samples(&sink), (0, true));
}

#[test]
fn a_failed_write_stops_the_writer() {
    struct Failing(usize);
    impl Write for Failing {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.0 < buf.len() {
                return Err(std::io::Error::other("disk full"));
            }
            self.0 -= buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut writer =
        Writer::new(Failing(4096), common::header(), WriterOptions::default()).unwrap();
    // Incompressible text, larger than what the sink accepts.
    let mut state = 88172645463325252u64;
    let text: String = (0..20_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(b'a' + (state % 26) as u8)
        })
        .collect();
    let big = writer.intern_string(&text);
    writer.define_thread(proto::ThreadDef {
        id: 1,
        name: big,
        ..Default::default()
    });
    assert!(matches!(writer.flush(), Err(FormatError::Io(_))));
    assert!(matches!(
        writer.sample(1, 1, 0, 0),
        Err(FormatError::WriterFailed)
    ));
}

#[test]
fn header_and_footer_cannot_be_recorded_by_hand() {
    let sink = Shared::default();
    let mut writer = writer(&sink, WriterOptions::default());
    let footer = proto::record::Kind::Footer(proto::Footer::default());
    assert!(matches!(
        writer.record(footer),
        Err(FormatError::InvalidRecord(_))
    ));
}
