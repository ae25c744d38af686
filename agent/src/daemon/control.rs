//! The control socket: a Unix stream socket (mode 0600) speaking one JSON
//! object per line each way, and the `pydeep ctl` client.
//!
//! Requests (`notes/daemon.md` documents the replies):
//!
//! ```text
//! {"command":"status"}
//! {"command":"snapshot","pid":1234,"locals":true,"heap":false}
//! {"command":"start","pid":1234}
//! {"command":"stop","pid":1234}
//! {"command":"flush"}
//! ```
//!
//! Every reply has `"ok"`; a failed one has `"error"` saying what was wrong.
//! A peer whose uid (SO_PEERCRED) is not the daemon's is refused with an
//! error reply even if the socket's mode was loosened; a malformed request
//! gets an error reply and the connection stays usable.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

/// Longest request line accepted.
pub const MAX_REQUEST: usize = 64 << 10;

/// A connection idle this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// A request, as parsed from one line.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "command", rename_all = "lowercase", deny_unknown_fields)]
pub enum Request {
    /// Every target's state and the daemon's own.
    Status {},
    /// A deep snapshot of `pid` into its stream.
    Snapshot {
        /// The target.
        pid: i32,
        /// With each frame's variables.
        #[serde(default)]
        locals: bool,
        /// With the heap counted by type.
        #[serde(default)]
        heap: bool,
    },
    /// Start recording `pid` (even if no rule selects it).
    Start {
        /// The process.
        pid: i32,
    },
    /// Stop recording `pid` (and do not pick it up again).
    Stop {
        /// The target.
        pid: i32,
    },
    /// Close every open chunk now.
    Flush {},
    /// A bounded trace window inside `pid`, into its recording.
    Trace {
        /// The target.
        pid: i32,
        /// How long the window stays open.
        duration_ms: u64,
        /// C calls too.
        #[serde(default)]
        c_calls: bool,
        /// Line events too.
        #[serde(default)]
        lines: bool,
        /// Only code objects whose `FILE:QUALNAME` this regex matches.
        #[serde(default)]
        functions: Option<String>,
        /// Count every instruction of the selected code objects (needs
        /// `functions`).
        #[serde(default)]
        opcodes: bool,
        /// How long to wait for a thread at a safe point (default 5 s).
        #[serde(default)]
        start_timeout_ms: Option<u64>,
    },
}

/// A request and where its reply goes.
pub type Envelope = (Request, oneshot::Sender<Value>);

/// An error reply.
pub fn error_reply(message: impl std::fmt::Display) -> Value {
    json!({"ok": false, "error": message.to_string()})
}

/// Binds the control socket at `path`, owner-only. A stale socket left by
/// a killed daemon is replaced; a live one (another daemon) is an error.
pub fn bind(path: &Path) -> Result<UnixListener> {
    if let Some(parent) = path.parent() {
        if !parent.as_os_str().is_empty() && !parent.exists() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        anyhow::ensure!(
            meta.file_type().is_socket(),
            "{} exists and is not a socket; remove it or choose another `socket`",
            path.display()
        );
        anyhow::ensure!(
            std::os::unix::net::UnixStream::connect(path).is_err(),
            "another daemon is listening on {}",
            path.display()
        );
        std::fs::remove_file(path).with_context(|| format!("removing stale {}", path.display()))?;
    }
    // The socket is created with mode 0600 from the start (umask), not
    // chmod-ed after a window in which others could connect.
    // SAFETY: umask only swaps the process's file creation mask.
    let previous = unsafe { libc::umask(0o177) };
    let listener = UnixListener::bind(path);
    unsafe { libc::umask(previous) };
    let listener = listener.with_context(|| format!("binding {}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Accepts connections forever, each served on its own task.
pub async fn serve(listener: UnixListener, requests: mpsc::Sender<Envelope>) {
    let owner = nix::unistd::geteuid().as_raw();
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(connection(stream, requests.clone(), owner));
            }
            Err(error) => {
                tracing::warn!("control socket accept failed: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn connection(stream: UnixStream, requests: mpsc::Sender<Envelope>, owner: u32) {
    let (read, mut write) = stream.into_split();
    let peer = read.as_ref().peer_cred();
    match peer {
        Ok(cred) if cred.uid() == owner => {}
        Ok(cred) => {
            tracing::warn!(uid = cred.uid(), pid = ?cred.pid(), "control connection refused");
            let reply = error_reply(format!(
                "permission denied: uid {} is not the daemon's user (uid {owner})",
                cred.uid()
            ));
            let _ = write_reply(&mut write, &reply).await;
            return;
        }
        Err(error) => {
            let _ = write_reply(
                &mut write,
                &error_reply(format!("peer credentials: {error}")),
            )
            .await;
            return;
        }
    }
    let mut reader = tokio::io::BufReader::new(read);
    loop {
        let mut line = Vec::new();
        let read = tokio::time::timeout(
            IDLE_TIMEOUT,
            (&mut reader)
                .take(MAX_REQUEST as u64 + 1)
                .read_until(b'\n', &mut line),
        )
        .await;
        match read {
            Ok(Ok(0)) | Err(_) | Ok(Err(_)) => return,
            Ok(Ok(_)) => {}
        }
        if line.len() > MAX_REQUEST {
            let reply = error_reply(format!("request longer than {MAX_REQUEST} bytes"));
            let _ = write_reply(&mut write, &reply).await;
            return;
        }
        let text = line.trim_ascii();
        if text.is_empty() {
            continue;
        }
        let reply = match serde_json::from_slice::<Request>(text) {
            Err(error) => error_reply(format!(
                "bad request ({error}); send one JSON object per line, such as {{\"command\":\"status\"}}"
            )),
            Ok(request) => {
                let (tx, rx) = oneshot::channel();
                if requests.send((request, tx)).await.is_err() {
                    error_reply("the daemon is shutting down")
                } else {
                    rx.await
                        .unwrap_or_else(|_| error_reply("the daemon is shutting down"))
                }
            }
        };
        if write_reply(&mut write, &reply).await.is_err() {
            return;
        }
    }
}

async fn write_reply(
    write: &mut tokio::net::unix::OwnedWriteHalf,
    reply: &Value,
) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec(reply).unwrap_or_default();
    bytes.push(b'\n');
    write.write_all(&bytes).await
}

/// `pydeep ctl`: sends one request, returns the reply. Waits `timeout` at
/// most for the whole exchange ([`Exit::Timeout`] after it, naming the
/// socket), and stops at once on SIGINT, SIGTERM or SIGHUP
/// ([`crate::cli::signals::Interrupted`]): a daemon that accepts but never
/// answers cannot hold `ctl` forever.
pub fn request(socket: &Path, request: &Value, timeout: Duration) -> Result<Value> {
    use crate::cli::exit::{Exit, Failure};
    use crate::cli::signals::Interrupted;
    let deadline = std::time::Instant::now() + timeout;
    let timed_out = || {
        anyhow::Error::from(Failure::new(
            Exit::Timeout,
            format!(
                "the daemon at {} did not answer within {} s (--timeout); is it stuck, or is something else listening there?",
                socket.display(),
                timeout.as_secs_f64()
            ),
        ))
    };
    // A listener whose backlog is full makes connect(2) wait: it is tried
    // non-blocking (EAGAIN) until the deadline or a signal.
    let stream = loop {
        match connect_now(socket) {
            Ok(stream) => break stream,
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                Interrupted::check(|| "while connecting to the daemon".into())?;
                if std::time::Instant::now() >= deadline {
                    return Err(timed_out());
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "connecting to {} (is `pydeep daemon` running, and are you its user?)",
                        socket.display()
                    )
                })
            }
        }
    };
    // Short timeouts: each expiry is a chance to see a signal or the deadline.
    stream.set_read_timeout(Some(POLL))?;
    stream.set_write_timeout(Some(POLL))?;
    let waited = || {
        Interrupted::check(|| "while waiting for the daemon's reply".into())?;
        if std::time::Instant::now() >= deadline {
            return Err(timed_out());
        }
        Ok(())
    };
    let again = |e: &std::io::Error| {
        matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock
                | std::io::ErrorKind::TimedOut
                | std::io::ErrorKind::Interrupted
        )
    };
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    let mut sent = 0;
    while sent < line.len() {
        waited()?;
        match (&stream).write(&line[sent..]) {
            Ok(n) => sent += n,
            Err(e) if again(&e) => {}
            Err(e) => return Err(e).context("sending the request to the daemon"),
        }
    }
    let mut reply = Vec::new();
    let mut buffer = [0u8; 64 << 10];
    loop {
        waited()?;
        match (&stream).read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => {
                reply.extend_from_slice(&buffer[..n]);
                if reply.contains(&b'\n') {
                    break;
                }
                anyhow::ensure!(
                    reply.len() <= MAX_REPLY,
                    "the daemon's reply is longer than {MAX_REPLY} bytes"
                );
            }
            Err(e) if again(&e) => {}
            Err(e) => return Err(e).context("reading the daemon's reply"),
        }
    }
    let end = reply
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(reply.len());
    let reply = String::from_utf8_lossy(&reply[..end]);
    serde_json::from_str(&reply)
        .with_context(|| format!("the daemon's reply is not JSON: {reply:?}"))
}

/// Connects to `socket` without waiting: EAGAIN if its backlog is full.
fn connect_now(socket: &Path) -> std::io::Result<std::os::unix::net::UnixStream> {
    use std::os::fd::FromRawFd;
    use std::os::unix::ffi::OsStrExt;
    let path = socket.as_os_str().as_bytes();
    // SAFETY: a zeroed sockaddr_un is valid; the path is copied within its
    // bounds (checked), and the descriptor is owned by the stream returned
    // or closed on error.
    unsafe {
        let mut address: libc::sockaddr_un = std::mem::zeroed();
        address.sun_family = libc::AF_UNIX as libc::sa_family_t;
        if path.len() >= address.sun_path.len() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "socket path too long",
            ));
        }
        for (to, from) in address.sun_path.iter_mut().zip(path) {
            *to = *from as libc::c_char;
        }
        let fd = libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        );
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let stream = std::os::unix::net::UnixStream::from_raw_fd(fd);
        let length = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
        if libc::connect(fd, &address as *const _ as *const libc::sockaddr, length) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        stream.set_nonblocking(false)?;
        Ok(stream)
    }
}

/// How often `ctl` looks up from a wait for a signal or its deadline.
const POLL: Duration = Duration::from_millis(50);

/// Longest reply `ctl` reads.
const MAX_REPLY: usize = 16 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_mistakes_are_errors() {
        let parse = |text: &str| serde_json::from_str::<Request>(text);
        assert_eq!(
            parse(r#"{"command":"status"}"#).unwrap(),
            Request::Status {}
        );
        assert_eq!(
            parse(r#"{"command":"snapshot","pid":5,"locals":true}"#).unwrap(),
            Request::Snapshot {
                pid: 5,
                locals: true,
                heap: false
            }
        );
        assert_eq!(
            parse(r#"{"command":"trace","pid":5,"duration_ms":2000,"lines":true}"#).unwrap(),
            Request::Trace {
                pid: 5,
                duration_ms: 2000,
                c_calls: false,
                lines: true,
                functions: None,
                opcodes: false,
                start_timeout_ms: None,
            }
        );
        assert!(parse(r#"{"command":"trace","pid":5}"#).is_err());
        assert!(parse(r#"{"command":"explode"}"#).is_err());
        assert!(parse(r#"{"command":"stop"}"#).is_err());
        assert!(parse(r#"{"command":"status","extra":1}"#).is_err());
        assert!(parse("[]").is_err());
    }
}
