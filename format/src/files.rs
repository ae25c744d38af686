//! The one way pydeep and pydeep-view open files they did not make and
//! create files they write.
//!
//! * [`read_limited`]: every input file read whole (a saved heap count, the
//!   daemon's configuration, a source file) is read up to a size limit, so
//!   `/dev/zero` or a runaway file fails at once with a clear error instead
//!   of eating memory, and a FIFO without a writer does not hang the open.
//! * [`OutputFile`]: every output file (recordings, exports, graphs, daemon
//!   files) is created without ever following a symbolic link; an existing
//!   file is replaced only when asked, and then by creating a new file
//!   next to it and renaming it over the old one. The old file is never
//!   opened for writing: another user's file keeps its contents (and the
//!   new one is ours, with our mode), and a hard link's other names keep
//!   the old contents.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::FormatError;

/// Reads `path` whole, refusing more than `limit` bytes with an
/// [`io::ErrorKind::InvalidData`] error that says so. The file is opened
/// non-blocking (a FIFO without a writer reads as empty instead of hanging
/// the open) and read with a bound, so a device that never ends
/// (`/dev/zero`) fails after `limit` bytes.
pub fn read_limited(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let file = open_input(path)?;
    let meta = file.metadata()?;
    if meta.is_file() && meta.len() > limit {
        return Err(too_large(limit));
    }
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(too_large(limit));
    }
    Ok(bytes)
}

/// Opens an input file for reading without blocking on it: a FIFO without
/// a writer would hold `open(2)` (restarted after every signal, so deaf to
/// Ctrl-C); opened non-blocking it reads as empty instead. A directory is
/// refused. Reads block as usual after (a pipe with a writer is read to
/// its end). Recordings (`Reader::open`, the viewer) are opened this way.
pub fn open_input(path: &Path) -> io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    if file.metadata()?.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "is a directory, not a file",
        ));
    }
    // SAFETY: fcntl on a descriptor we own, with integer arguments only.
    unsafe {
        use std::os::fd::AsRawFd;
        let fd = file.as_raw_fd();
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK);
        }
    }
    Ok(file)
}

fn too_large(limit: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("larger than {limit} bytes, the most read from such a file"),
    )
}

/// A file being created at a path: see the module documentation.
///
/// When it replaces an existing file, the data goes to a new file beside
/// it until [`OutputFile::commit`] renames it over the old one (or at once,
/// with [`OutputFile::create_now`]). Dropped without a commit, the file it
/// created is removed and an old one is left as it was: a command can
/// create its output first, to fail before doing anything else, and let it
/// go if it fails later.
#[derive(Debug)]
pub struct OutputFile {
    file: Option<File>,
    path: PathBuf,
    /// The new file beside `path`, while it has not replaced it yet.
    temp: Option<PathBuf>,
    /// Created at `path` itself (nothing was there): removed if abandoned.
    in_place: bool,
}

/// What an [`OutputFile`] may do with a path that is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Refuse ([`FormatError::Exists`]): the default of recordings.
    Refuse,
    /// Replace a regular file by a new one (`--force`, and the exports).
    Replace,
    /// Replace a regular file; write into a FIFO or a character device
    /// (`-o /dev/null`, a named pipe) as it is, since those hold no data
    /// to protect and cannot be replaced.
    ReplaceOrWriteDevice,
}

impl OutputFile {
    /// Creates `path` with permission bits `mode` (0o600 for recordings,
    /// 0o666 less the umask for exports). Never through a symbolic link
    /// ([`FormatError::Symlink`]), never over a directory or other special
    /// file ([`FormatError::NotARegularFile`]), and over an existing
    /// regular file only as `existing` allows.
    pub fn create(path: &Path, existing: Existing, mode: u32) -> Result<Self, FormatError> {
        let taken = match std::fs::symlink_metadata(path) {
            Ok(meta) => Some(meta),
            Err(error) if error.kind() == io::ErrorKind::NotFound => None,
            Err(error) => return Err(FormatError::Io(error)),
        };
        let Some(meta) = taken else {
            let file = open_new(path, mode).map_err(|error| creation_error(path, error))?;
            return OutputFile::checked(file, path, None, mode);
        };
        let kind = meta.file_type();
        if kind.is_symlink() {
            return Err(FormatError::Symlink(path.to_path_buf()));
        }
        if existing == Existing::Refuse {
            return Err(FormatError::Exists(path.to_path_buf()));
        }
        if existing == Existing::ReplaceOrWriteDevice && (kind.is_fifo() || kind.is_char_device()) {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(path)
                .map_err(|error| creation_error(path, error))?;
            return Ok(OutputFile {
                file: Some(file),
                path: path.to_path_buf(),
                temp: None,
                in_place: false,
            });
        }
        if !meta.is_file() {
            return Err(FormatError::NotARegularFile(path.to_path_buf()));
        }
        let (file, temp) = open_beside(path, mode)?;
        OutputFile::checked(file, path, Some(temp), mode)
    }

    /// [`OutputFile::create`], then [`OutputFile::commit`] at once: the
    /// new file takes the name before anything is written, as a recording
    /// needs (whatever was written before a crash is found under its name).
    pub fn create_now(path: &Path, existing: Existing, mode: u32) -> Result<File, FormatError> {
        Ok(OutputFile::create(path, existing, mode)?.commit()?)
    }

    fn checked(
        file: File,
        path: &Path,
        temp: Option<PathBuf>,
        mode: u32,
    ) -> Result<Self, FormatError> {
        let in_place = temp.is_none();
        let output = OutputFile {
            file: Some(file),
            path: path.to_path_buf(),
            temp,
            in_place,
        };
        let file = output.file.as_ref().expect("just set");
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(FormatError::NotARegularFile(path.to_path_buf()));
        }
        // The umask can only have removed bits; a private file stays private.
        if mode & 0o077 == 0 && meta.permissions().mode() & 0o777 != mode {
            file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        }
        Ok(output)
    }

    /// The file to write.
    pub fn file(&mut self) -> &mut File {
        self.file
            .as_mut()
            .expect("an OutputFile holds its file until commit")
    }

    /// The path the file is (or will be, after [`OutputFile::commit`]) named.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Gives the new file its name (renaming it over the file it replaces)
    /// and returns it.
    pub fn commit(mut self) -> io::Result<File> {
        self.in_place = false;
        if let Some(temp) = self.temp.take() {
            if let Err(error) = std::fs::rename(&temp, &self.path) {
                let _ = std::fs::remove_file(&temp);
                return Err(error);
            }
        }
        Ok(self
            .file
            .take()
            .expect("an OutputFile holds its file until commit"))
    }
}

impl std::io::Write for OutputFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file().write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file().flush()
    }
}

impl Drop for OutputFile {
    fn drop(&mut self) {
        if let Some(temp) = self.temp.take() {
            let _ = std::fs::remove_file(temp);
        } else if self.in_place {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// `O_CREAT|O_EXCL|O_NOFOLLOW`: a new file or nothing.
fn open_new(path: &Path, mode: u32) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// A new file in the directory of `path`, named `.NAME.PID-N.new`.
fn open_beside(path: &Path, mode: u32) -> Result<(File, PathBuf), FormatError> {
    let name = path
        .file_name()
        .ok_or_else(|| FormatError::NotARegularFile(path.to_path_buf()))?
        .to_string_lossy()
        .into_owned();
    let dir = path.parent().unwrap_or(Path::new(""));
    let mut attempt = 0u32;
    loop {
        let temp = dir.join(format!(".{name}.{}-{attempt}.new", std::process::id()));
        match open_new(&temp, mode) {
            Ok(file) => return Ok((file, temp)),
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists && attempt < 100 => {
                attempt += 1;
            }
            Err(error) => return Err(creation_error(path, error)),
        }
    }
}

fn creation_error(path: &Path, error: io::Error) -> FormatError {
    if error.kind() == io::ErrorKind::AlreadyExists {
        FormatError::Exists(path.to_path_buf())
    } else if error.raw_os_error() == Some(libc::ELOOP) {
        FormatError::Symlink(path.to_path_buf())
    } else {
        FormatError::Io(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_device_that_never_ends_is_refused_after_the_limit() {
        let started = std::time::Instant::now();
        let error = read_limited(Path::new("/dev/zero"), 1 << 20).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert!(error.to_string().contains("larger than 1048576 bytes"));
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn a_small_file_is_read_and_a_large_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"hello").unwrap();
        assert_eq!(read_limited(&path, 5).unwrap(), b"hello");
        assert!(read_limited(&path, 4).is_err());
        assert!(read_limited(dir.path(), 4).is_err());
    }

    #[test]
    fn a_fifo_without_a_writer_does_not_hang() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fifo");
        let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert_eq!(read_limited(&path, 10).unwrap(), b"");
        // A recording named by a FIFO is an error, not a hang.
        assert!(crate::Reader::open(&path).is_err());
    }

    #[test]
    fn replacing_makes_a_new_file_and_leaves_hard_links_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let other = dir.path().join("other-name");
        std::fs::write(&path, b"old").unwrap();
        std::fs::hard_link(&path, &other).unwrap();
        let mut output = OutputFile::create(&path, Existing::Replace, 0o600).unwrap();
        output.file().write_all(b"new").unwrap();
        // Not yet committed: the old file is still there.
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        output.commit().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(std::fs::read(&other).unwrap(), b"old");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Nothing left beside it.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn an_abandoned_replacement_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        std::fs::write(&path, b"old").unwrap();
        let mut output = OutputFile::create(&path, Existing::Replace, 0o644).unwrap();
        output.file().write_all(b"partial").unwrap();
        drop(output);
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn an_abandoned_new_file_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        drop(OutputFile::create(&path, Existing::Refuse, 0o600).unwrap());
        assert!(!path.exists());
        OutputFile::create(&path, Existing::Refuse, 0o600)
            .unwrap()
            .commit()
            .unwrap();
        assert!(path.exists());
    }

    #[test]
    fn links_are_never_followed_and_taken_paths_refused() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("passwd");
        std::fs::write(&victim, b"root:x:0:0").unwrap();
        let link = dir.path().join("out");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
        for existing in [
            Existing::Refuse,
            Existing::Replace,
            Existing::ReplaceOrWriteDevice,
        ] {
            assert!(matches!(
                OutputFile::create(&link, existing, 0o644),
                Err(FormatError::Symlink(_))
            ));
            assert!(matches!(
                OutputFile::create(&dangling, existing, 0o644),
                Err(FormatError::Symlink(_))
            ));
        }
        assert_eq!(std::fs::read(&victim).unwrap(), b"root:x:0:0");
        assert!(!dir.path().join("nowhere").exists());
        assert!(matches!(
            OutputFile::create(&victim, Existing::Refuse, 0o644),
            Err(FormatError::Exists(_))
        ));
        assert!(matches!(
            OutputFile::create(dir.path(), Existing::Replace, 0o644),
            Err(FormatError::NotARegularFile(_))
        ));
        assert!(matches!(
            OutputFile::create(Path::new("/dev/null"), Existing::Replace, 0o644),
            Err(FormatError::NotARegularFile(_))
        ));
        let mut null = OutputFile::create(
            Path::new("/dev/null"),
            Existing::ReplaceOrWriteDevice,
            0o644,
        )
        .unwrap();
        null.file().write_all(b"x").unwrap();
        null.commit().unwrap();
    }
}
