//! The recording's file, written on a thread of its own.
//!
//! The sampler must never wait on the disk: a slow or stalled file system
//! (a network mount, a full page cache, a throttled device) would stop its
//! ticks, and the time not observed would then silently land on the next
//! sample. So the `Writer`'s sink is a [`BackgroundFile`]: a write hands
//! the bytes (one chunk) to a writer thread through a bounded queue and
//! returns. Only when [`QUEUED_WRITES`] chunks wait does a write block,
//! which the sampler then records as a gap ("writing the recording").
//!
//! A write that fails on the thread (ENOSPC, EFBIG) is kept and returned,
//! with its OS error code, by the next write or flush, so the session still
//! stops with the documented advice. [`BackgroundFile::close`] waits for
//! every queued chunk and says whether all of them reached the file.
//!
//! Tests slow the writer down with `PYDEEP_TEST_OUTPUT_DELAY_MS` (a delay
//! before each write after the first [`BackgroundFile::sync`], i.e. once
//! the header is on disk; read once at start): nothing else reads it.

use std::fs::File;
use std::io::{self, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Chunks queued before a write waits for the writer thread.
pub const QUEUED_WRITES: usize = 64;

/// What the writer thread is asked to do.
enum Job {
    /// Append these bytes.
    Write(Vec<u8>),
    /// Flush, then answer (every job before it is done).
    Sync(SyncSender<()>),
}

/// The first write error of the thread: its OS error code, or its text.
type Failed = Arc<Mutex<Option<(Option<i32>, String)>>>;

/// A file written by a thread of its own; see the module documentation.
pub struct BackgroundFile {
    jobs: Option<SyncSender<Job>>,
    failed: Failed,
    thread: Option<JoinHandle<File>>,
}

impl BackgroundFile {
    /// Starts the writer thread for `file`.
    pub fn new(file: File) -> io::Result<BackgroundFile> {
        let (jobs, queue) = sync_channel(QUEUED_WRITES);
        let failed: Failed = Arc::default();
        let delay = std::env::var("PYDEEP_TEST_OUTPUT_DELAY_MS")
            .ok()
            .and_then(|ms| ms.parse().ok())
            .map(Duration::from_millis);
        let thread = std::thread::Builder::new()
            .name("pydeep-output".into())
            .spawn({
                let failed = failed.clone();
                move || write_jobs(file, queue, &failed, delay)
            })?;
        Ok(BackgroundFile {
            jobs: Some(jobs),
            failed,
            thread: Some(thread),
        })
    }

    /// Waits until everything written so far is in the file (`pydeep ctl
    /// flush`); the error of a failed write, if one failed.
    pub fn sync(&self) -> io::Result<()> {
        self.check()?;
        let (done, answer) = sync_channel(1);
        if let Some(jobs) = &self.jobs {
            if jobs.send(Job::Sync(done)).is_ok() {
                let _ = answer.recv();
            }
        }
        self.check()
    }

    /// Waits for every queued write and ends the thread; the file, or the
    /// first error a write met.
    pub fn close(mut self) -> io::Result<File> {
        self.jobs = None;
        let file = self
            .thread
            .take()
            .and_then(|t| t.join().ok())
            .ok_or_else(|| io::Error::other("the output thread panicked"))?;
        self.check()?;
        Ok(file)
    }

    /// The error of a write that failed on the thread, if one did.
    fn check(&self) -> io::Result<()> {
        match &*self.failed.lock().unwrap_or_else(|e| e.into_inner()) {
            None => Ok(()),
            Some((Some(code), _)) => Err(io::Error::from_raw_os_error(*code)),
            Some((None, text)) => Err(io::Error::other(text.clone())),
        }
    }
}

impl Write for BackgroundFile {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.check()?;
        let jobs = self
            .jobs
            .as_ref()
            .ok_or_else(|| io::Error::other("the output is closed"))?;
        jobs.send(Job::Write(bytes.to_vec()))
            .map_err(|_| io::Error::other("the output thread ended"))?;
        Ok(bytes.len())
    }

    /// Does not wait: the thread flushes after each write anyway (see
    /// [`BackgroundFile::sync`] to wait).
    fn flush(&mut self) -> io::Result<()> {
        self.check()
    }
}

impl Drop for BackgroundFile {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The writer thread: appends each chunk, stops writing at the first
/// failure (the file then ends at a chunk boundary, readable up to it).
fn write_jobs(
    mut file: File,
    queue: Receiver<Job>,
    failed: &Failed,
    delay: Option<Duration>,
) -> File {
    let mut broken = false;
    let mut delaying = false;
    for job in queue {
        match job {
            Job::Write(bytes) => {
                if broken {
                    continue;
                }
                if let (Some(delay), true) = (delay, delaying) {
                    std::thread::sleep(delay);
                }
                if let Err(error) = file.write_all(&bytes).and_then(|()| file.flush()) {
                    broken = true;
                    *failed.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some((error.raw_os_error(), error.to_string()));
                }
            }
            Job::Sync(done) => {
                delaying = true;
                let _ = done.send(());
            }
        }
    }
    file
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn writes_reach_the_file_in_order_by_close() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let mut out = BackgroundFile::new(File::create(&path).unwrap()).unwrap();
        for i in 0..200u32 {
            out.write_all(&i.to_le_bytes()).unwrap();
        }
        out.sync().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 800);
        out.write_all(b"end").unwrap();
        drop(out.close().unwrap());
        let mut bytes = Vec::new();
        File::open(&path).unwrap().read_to_end(&mut bytes).unwrap();
        assert_eq!(&bytes[..4], &0u32.to_le_bytes());
        assert_eq!(&bytes[796..800], &199u32.to_le_bytes());
        assert_eq!(&bytes[800..], b"end");
    }

    #[test]
    fn a_failed_write_is_returned_by_a_later_call_with_its_os_error() {
        // /dev/full fails every write with ENOSPC.
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let mut out = BackgroundFile::new(full).unwrap();
        out.write_all(b"chunk").unwrap();
        let error = out.sync().unwrap_err();
        assert_eq!(error.raw_os_error(), Some(libc::ENOSPC));
        assert_eq!(
            out.write(b"more").unwrap_err().raw_os_error(),
            Some(libc::ENOSPC)
        );
        assert_eq!(out.close().unwrap_err().raw_os_error(), Some(libc::ENOSPC));
    }
}
