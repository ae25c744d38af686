//! Files of a target's recording stream: their names, rotation of the open
//! file, and retention of the finished ones.
//!
//! A file is written as `NAME-PID-STARTTIME.pdr.part` and renamed to
//! `NAME-PID-STARTTIME.pdr` once its footer is written, so every `.pdr` in
//! the output directory is complete and valid, and a shipper that picks up
//! `*.pdr` never reads a file still being written. STARTTIME is the file's
//! first moment in UTC, `YYYYMMDDTHHMMSS.mmmZ`, so names sort by time.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pydeep_format::files::{Existing, OutputFile};
use pydeep_format::{proto, Writer};

use crate::recording::output::BackgroundFile;

/// Suffix of a file being written.
pub const PART_SUFFIX: &str = ".part";

/// When a target's recording is closed and a new one started.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rotation {
    /// Close a file once it holds this many bytes (default 64 MiB).
    pub max_bytes: u64,
    /// Close a file once it is this old (default 10 minutes).
    pub max_age: Duration,
}

/// When finished recordings are deleted, oldest first.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retention {
    /// Keep the output directory's recordings under this many bytes
    /// (default 1 GiB; files being written count but are never deleted).
    pub max_total_bytes: u64,
    /// Delete finished recordings older than this (default 7 days).
    pub max_age: Duration,
}

/// The open file of one target's stream (its records are written by the
/// recording's sink: [`crate::recording::sink`]).
pub struct StreamFile {
    /// Where it is being written (`.pdr.part`).
    pub part_path: PathBuf,
    /// What it will be called when finished (`.pdr`).
    pub final_path: PathBuf,
    /// When it was opened.
    pub opened: std::time::Instant,
}

impl StreamFile {
    /// Creates the next file of `name`/`pid` in `dir` (mode 0600, never
    /// through a symlink, never over an existing file), with its writer,
    /// `header` written and synced.
    pub fn create(
        dir: &Path,
        name: &str,
        pid: i32,
        header: proto::Header,
    ) -> Result<(StreamFile, Writer<BackgroundFile>), pydeep_format::FormatError> {
        let now = SystemTime::now();
        let mut attempt = 0u32;
        loop {
            let stem = file_stem(name, pid, now, attempt);
            let final_path = dir.join(format!("{stem}.pdr"));
            let part_path = dir.join(format!("{stem}.pdr{PART_SUFFIX}"));
            if final_path.exists() || part_path.exists() {
                attempt += 1;
                continue;
            }
            let created =
                OutputFile::create(&part_path, Existing::Refuse, 0o600).and_then(|output| {
                    crate::cli::session::open_writer(output, header.clone(), Default::default())
                });
            match created {
                Ok(writer) => {
                    let file = StreamFile {
                        part_path,
                        final_path,
                        opened: std::time::Instant::now(),
                    };
                    return Ok((file, writer));
                }
                // Lost a race for the name (another file in the same
                // millisecond): take the next suffix.
                Err(pydeep_format::FormatError::Exists(_)) if attempt < 100 => {
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// After its footer: waits for the output thread, syncs, and gives the
    /// file its final name.
    pub fn finish(self, output: BackgroundFile) -> Result<PathBuf, pydeep_format::FormatError> {
        let file = output.close()?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&self.part_path, &self.final_path)?;
        Ok(self.final_path)
    }
}

/// `NAME-PID-YYYYMMDDTHHMMSS.mmmZ`, with `-N` appended for the N-th file
/// started in the same millisecond.
pub fn file_stem(name: &str, pid: i32, at: SystemTime, attempt: u32) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let stamp = utc_stamp(since);
    if attempt == 0 {
        format!("{name}-{pid}-{stamp}")
    } else {
        format!("{name}-{pid}-{stamp}-{attempt}")
    }
}

/// `YYYYMMDDTHHMMSS.mmmZ` of a time since the Unix epoch.
pub fn utc_stamp(since_epoch: Duration) -> String {
    let seconds = since_epoch.as_secs();
    let (year, month, day) = civil_from_days((seconds / 86_400) as i64);
    let time = seconds % 86_400;
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}.{:03}Z",
        time / 3600,
        time / 60 % 60,
        time % 60,
        since_epoch.subsec_millis()
    )
}

/// The Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// A recording in the output directory.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Its path.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// Last modified: when it was finished (or last written, if unfinished).
    pub modified: SystemTime,
}

/// The recordings in `dir`: finished `.pdr` files and `.pdr.part` files,
/// the latter left by a daemon that was killed (or still being written).
pub fn stored(dir: &Path) -> Vec<Stored> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<Stored> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let ours = name.ends_with(".pdr") || name.ends_with(&format!(".pdr{PART_SUFFIX}"));
            // Only names of the daemon's own form: NAME-PID-STAMP.
            let stem = name.split(".pdr").next().unwrap_or_default();
            let shaped = stem
                .split('-')
                .nth(1)
                .is_some_and(|pid| pid.parse::<i32>().is_ok());
            let meta = entry.metadata().ok()?;
            (ours && shaped && meta.is_file()).then(|| Stored {
                path: entry.path(),
                bytes: meta.len(),
                modified: meta.modified().unwrap_or(UNIX_EPOCH),
            })
        })
        .collect();
    files.sort_by(|a, b| a.modified.cmp(&b.modified).then(a.path.cmp(&b.path)));
    files
}

/// Deletes recordings older than the retention age, then the oldest until
/// the directory's recordings fit the byte limit. Files in `open` (being
/// written) count towards the total but are never deleted. Returns what
/// was deleted.
pub fn enforce(dir: &Path, retention: &Retention, open: &HashSet<PathBuf>) -> Vec<Stored> {
    let files = stored(dir);
    let mut total: u64 = files.iter().map(|f| f.bytes).sum();
    let now = SystemTime::now();
    let mut deleted = Vec::new();
    for file in files {
        if open.contains(&file.path) {
            continue;
        }
        let age = now.duration_since(file.modified).unwrap_or_default();
        if (age > retention.max_age || total > retention.max_total_bytes)
            && std::fs::remove_file(&file.path).is_ok()
        {
            total = total.saturating_sub(file.bytes);
            deleted.push(file);
        }
    }
    deleted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_utc_and_sort_by_time() {
        assert_eq!(utc_stamp(Duration::from_millis(0)), "19700101T000000.000Z");
        // 2026-11-25 14:12:00.123 UTC
        assert_eq!(
            utc_stamp(Duration::from_millis(1_795_615_920_123)),
            "20261125T141200.123Z"
        );
        assert_eq!(
            utc_stamp(Duration::from_secs(951_782_400)),
            "20000229T000000.000Z"
        );
        let at = UNIX_EPOCH + Duration::from_secs(60);
        assert_eq!(file_stem("web", 42, at, 0), "web-42-19700101T000100.000Z");
        assert_eq!(file_stem("web", 42, at, 2), "web-42-19700101T000100.000Z-2");
    }

    #[test]
    fn retention_deletes_the_oldest_and_spares_open_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut paths = Vec::new();
        for (index, age) in [40u64, 30, 20, 10].iter().enumerate() {
            let path = dir.path().join(format!("a-1-{index}.pdr"));
            std::fs::write(&path, vec![0u8; 100]).unwrap();
            let file = std::fs::File::options().write(true).open(&path).unwrap();
            file.set_modified(SystemTime::now() - Duration::from_secs(*age))
                .unwrap();
            paths.push(path);
        }
        std::fs::write(dir.path().join("notes.txt"), "not ours").unwrap();
        let open = HashSet::from([paths[0].clone()]);
        let retention = Retention {
            max_total_bytes: 250,
            max_age: Duration::from_secs(3600),
        };
        let deleted: Vec<PathBuf> = enforce(dir.path(), &retention, &open)
            .into_iter()
            .map(|s| s.path)
            .collect();
        assert_eq!(deleted, [paths[1].clone(), paths[2].clone()]);
        assert!(paths[0].exists() && paths[3].exists());
        assert!(dir.path().join("notes.txt").exists());
        let by_age = Retention {
            max_total_bytes: u64::MAX,
            max_age: Duration::from_secs(5),
        };
        let deleted = enforce(dir.path(), &by_age, &HashSet::new());
        assert_eq!(deleted.len(), 2);
    }
}
