//! Reading a source file the target names, as the target itself could.
//!
//! A code object's `co_filename` is whatever the target says: a hostile
//! program can `compile()` code under the name `/etc/shadow`, and the agent
//! (often root, the daemon always) would embed that file's lines in a
//! recording others may read. So a source file is read only
//!
//! * through the target's own root (`/proc/PID/root`, or `/proc/PID/cwd`
//!   for a relative name), resolved with `openat2(RESOLVE_IN_ROOT)` so that
//!   a symbolic link inside a container cannot lead out of it; never as
//!   the agent sees the path;
//! * and only if the target's own credentials (its filesystem uid and
//!   gids, supplementary groups and effective capabilities, from
//!   `/proc/PID/status`) allow reading it and searching every directory on
//!   the way, judged by the files' owners and modes, not by ours.
//!
//! What is refused says why ([`Unreadable`]), and the recording keeps the
//! reason (`SourceFileDef.missing_reason`).

use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path};

/// Why a source file was not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unreadable {
    /// The target's own user could not read it: it is withheld.
    Forbidden(String),
    /// It is not there (or not a regular file, or too large).
    Missing(String),
}

impl Unreadable {
    /// The reason in words, as recorded.
    pub fn reason(&self) -> &str {
        match self {
            Unreadable::Forbidden(why) | Unreadable::Missing(why) => why,
        }
    }
}

/// The credentials a process opens files with (`/proc/PID/status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// Filesystem uid (the fourth `Uid:` field).
    pub uid: u32,
    /// Filesystem gid and supplementary groups.
    pub gids: Vec<u32>,
    /// CAP_DAC_OVERRIDE or CAP_DAC_READ_SEARCH in the effective set: file
    /// modes do not stop it reading.
    pub reads_anything: bool,
}

/// CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (linux/capability.h).
const READ_CAPABILITIES: u64 = (1 << 1) | (1 << 2);

/// Permission bits asked for, as in `access(2)`.
const READ: u32 = 4;
const SEARCH: u32 = 1;

impl Credentials {
    /// The credentials of process `pid` now, if its status is readable.
    pub fn of(pid: i32) -> Option<Credentials> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        Credentials::parse(&status)
    }

    /// Parses the `Uid:`, `Gid:`, `Groups:` and `CapEff:` lines of a
    /// `/proc/PID/status` text.
    pub fn parse(status: &str) -> Option<Credentials> {
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                .map(str::trim)
        };
        let numbers = |text: &str| -> Vec<u32> {
            text.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect()
        };
        let uids = numbers(field("Uid")?);
        let gids = numbers(field("Gid")?);
        let mut groups = vec![*gids.get(3)?];
        groups.extend(numbers(field("Groups").unwrap_or("")));
        let capabilities = u64::from_str_radix(field("CapEff").unwrap_or("0"), 16).unwrap_or(0);
        Some(Credentials {
            uid: *uids.get(3)?,
            gids: groups,
            reads_anything: capabilities & READ_CAPABILITIES != 0,
        })
    }

    /// True if these credentials may `want` (READ or SEARCH) the file
    /// `meta` describes: the owner's bits if they own it, else the group's
    /// if one of their groups does, else the others' (`fs/namei.c`,
    /// `acl_permission_check`; ACLs are not consulted, which can only
    /// refuse more).
    fn may(&self, meta: &std::fs::Metadata, want: u32) -> bool {
        if self.reads_anything {
            return true;
        }
        let mode = meta.mode();
        let bits = if meta.uid() == self.uid {
            mode >> 6
        } else if self.gids.contains(&meta.gid()) {
            mode >> 3
        } else {
            mode
        };
        bits & want == want
    }
}

/// Longest source file read; a larger one is recorded as missing.
pub const MAX_SOURCE_BYTES: u64 = 16 << 20;

/// The bytes of `filename` as the target `pid` names it, read through its
/// root as its own user could, or why not.
pub fn read_as_target(pid: i32, filename: &str) -> Result<Vec<u8>, Unreadable> {
    let credentials = Credentials::of(pid).ok_or_else(|| {
        Unreadable::Forbidden(format!(
            "the credentials of process {pid} could not be read"
        ))
    })?;
    let (base, relative) = match filename.strip_prefix('/') {
        Some(relative) => ("root", relative),
        None => ("cwd", filename),
    };
    let base_dir = open_path(None, Path::new(&format!("/proc/{pid}/{base}")), 0)
        .map_err(|e| Unreadable::Missing(format!("cannot open /proc/{pid}/{base}: {e}")))?;
    let relative = Path::new(relative);
    // Paths in messages as the target names them.
    let named = |path: &Path| match base {
        "root" => Path::new("/").join(path),
        _ => path.to_path_buf(),
    };
    // Every directory on the way must be searchable by the target.
    let mut prefix = std::path::PathBuf::new();
    let components: Vec<Component> = relative.components().collect();
    for component in &components[..components.len().saturating_sub(1)] {
        prefix.push(component);
        let dir = open_path(Some(&base_dir), &prefix, libc::O_DIRECTORY)
            .map_err(|e| Unreadable::Missing(format!("{}: {e}", prefix.display())))?;
        let meta = File::from(dir)
            .metadata()
            .map_err(|e| Unreadable::Missing(e.to_string()))?;
        if !credentials.may(&meta, SEARCH) {
            return Err(forbidden(
                &credentials,
                "its directory",
                &named(&prefix),
                &meta,
            ));
        }
    }
    let fd = open_path(Some(&base_dir), relative, 0).map_err(|e| {
        Unreadable::Missing(format!("cannot open it through /proc/{pid}/{base}: {e}"))
    })?;
    // O_PATH gave no access yet: the checks run on the very inode found.
    let meta = File::from(
        fd.try_clone()
            .map_err(|e| Unreadable::Missing(e.to_string()))?,
    )
    .metadata()
    .map_err(|e| Unreadable::Missing(e.to_string()))?;
    if !meta.is_file() {
        return Err(Unreadable::Missing("not a regular file".into()));
    }
    if !credentials.may(&meta, READ) {
        return Err(forbidden(&credentials, "the file", &named(relative), &meta));
    }
    if meta.len() > MAX_SOURCE_BYTES {
        return Err(Unreadable::Missing(format!(
            "larger than {MAX_SOURCE_BYTES} bytes"
        )));
    }
    // Reopen the inode itself for reading (through the O_PATH descriptor,
    // so nothing is resolved again), bounded by the read too.
    let file = File::open(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map_err(|e| Unreadable::Missing(e.to_string()))?;
    let mut content = Vec::new();
    file.take(MAX_SOURCE_BYTES + 1)
        .read_to_end(&mut content)
        .map_err(|e| Unreadable::Missing(e.to_string()))?;
    if content.len() as u64 > MAX_SOURCE_BYTES {
        return Err(Unreadable::Missing(format!(
            "larger than {MAX_SOURCE_BYTES} bytes"
        )));
    }
    Ok(content)
}

fn forbidden(
    credentials: &Credentials,
    what: &str,
    path: &Path,
    meta: &std::fs::Metadata,
) -> Unreadable {
    Unreadable::Forbidden(format!(
        "not readable by the target's user (uid {}, gids {:?}): {what} {} is mode {:o}, owner {}:{}",
        credentials.uid,
        credentials.gids,
        path.display(),
        meta.mode() & 0o7777,
        meta.uid(),
        meta.gid()
    ))
}

/// `struct open_how` of linux/openat2.h (libc's is not constructible).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// Opens `path` as an `O_PATH` descriptor: beneath `root` taken as the
/// root directory (`RESOLVE_IN_ROOT`: `..` and absolute symbolic links stay
/// inside it; no magic links), or, without `root`, as named.
fn open_path(root: Option<&OwnedFd>, path: &Path, flags: i32) -> std::io::Result<OwnedFd> {
    let name = CString::new(if path.as_os_str().is_empty() {
        b".".as_slice()
    } else {
        path.as_os_str().as_bytes()
    })
    .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let how = OpenHow {
        flags: (libc::O_PATH | libc::O_CLOEXEC | flags) as u64,
        mode: 0,
        resolve: if root.is_some() {
            libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS
        } else {
            0
        },
    };
    let dirfd = root.map_or(libc::AT_FDCWD, |r| r.as_raw_fd());
    // SAFETY: openat2 reads the NUL-terminated name and `how` (its size
    // passed), both alive for the call, and returns a new descriptor we own.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dirfd,
            name.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor returned by the kernel, owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tpython3\nUid:\t1000\t1000\t1000\t1001\nGid:\t100\t100\t100\t101\nGroups:\t27 44 \nCapEff:\t0000000000000000\n";

    #[test]
    fn credentials_are_the_filesystem_ids_with_the_supplementary_groups() {
        let credentials = Credentials::parse(STATUS).unwrap();
        assert_eq!(credentials.uid, 1001);
        assert_eq!(credentials.gids, vec![101, 27, 44]);
        assert!(!credentials.reads_anything);
        let root = STATUS.replace("0000000000000000", "000001ffffffffff");
        assert!(Credentials::parse(&root).unwrap().reads_anything);
    }

    #[test]
    fn our_own_source_is_readable_as_ourselves_and_a_missing_file_is_missing() {
        let me = std::process::id() as i32;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mine.py");
        std::fs::write(&path, "x = 1\n").unwrap();
        let name = path.display().to_string();
        assert_eq!(read_as_target(me, &name).unwrap(), b"x = 1\n");
        assert!(matches!(
            read_as_target(me, &format!("{name}.gone")),
            Err(Unreadable::Missing(_))
        ));
    }
}
