//! `pydeep top PID`: a live view of a running process. A recording session
//! (the one sampling pipeline, on a thread of its own) writes a `.pdr`; this
//! module redraws, every interval, the view the viewer library renders from
//! that file's flushed chunks ([`pydeep_view::top::live_screen`]), and reads
//! the keys that sort it or quit.

use std::io::{IsTerminal, Read as _, Write as _};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use pydeep_view::top::{live_screen, SortBy};

use crate::cli::exit::Exit;
use crate::cli::session::{self, SessionOptions};
use crate::recording::exactness::ReadMode;
use crate::Target;

/// What `pydeep top` was asked for.
#[derive(Debug, Clone)]
pub struct TopOptions {
    /// Samples per second per thread.
    pub rate_hz: f64,
    /// Time between refreshes.
    pub interval: Duration,
    /// Print once after one interval and exit.
    pub once: bool,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Rows of the function table (0 = all).
    pub limit: usize,
    /// Sort by total rather than own share.
    pub sort_by_total: bool,
    /// Keep samples of idle threads.
    pub include_idle: bool,
    /// Keep the recording here (default: a temporary file, deleted).
    pub output: Option<PathBuf>,
}

/// Runs the live view of `pid` until `q`, Ctrl-C, the duration or the
/// target's exit (then the last view stays on the screen).
pub fn run(pid: i32, options: &TopOptions) -> Result<Exit> {
    let interactive = !options.once && std::io::stdout().is_terminal();
    let keep = options.output.is_some();
    let path = options.output.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("pydeep-top-{pid}-{}.pdr", std::process::id()))
    });
    let target = Target::attach(pid).map_err(crate::cli::commands::attach_failure)?;
    let file = session::create_output(&path, keep)?;
    let session_options = SessionOptions {
        rate_hz: options.rate_hz,
        duration: if options.once {
            // Long enough for the first chunk to be flushed (each second).
            Some(options.interval.max(Duration::from_millis(1100)))
        } else {
            options.duration
        },
        read_mode: ReadMode::Adaptive,
        include_idle: options.include_idle,
        subprocesses: false,
        embed_source: false,
        full_source: false,
        max_depth: 4096,
        show_status: false,
        mode: "top",
        snapshot_every: None,
        snapshot_values: false,
        snapshot_tasks: false,
        snapshot_globals: false,
        snapshot_objects: 0,
        redact: None,
        heap_every: None,
        trace: None,
    };
    let sampler = std::thread::Builder::new()
        .name("pydeep-top-sampler".into())
        .spawn(move || session::run(target, None, file, &session_options).map(|(s, _)| s))
        .context("starting the sampler thread")?;

    let mut sort = if options.sort_by_total {
        SortBy::Total
    } else {
        SortBy::Own
    };
    let terminal = if interactive { RawKeys::enable() } else { None };
    let mut next = Instant::now() + options.interval;
    let result = loop {
        if sampler.is_finished() {
            break sampler.join().expect("the sampler thread panicked");
        }
        if interactive {
            match wait_for_key(next) {
                Some(b'q') | Some(b'Q') => crate::cli::signals::stop(),
                Some(b'o') | Some(b'O') => sort = SortBy::Own,
                Some(b't') | Some(b'T') => sort = SortBy::Total,
                _ => {}
            }
            if Instant::now() >= next {
                draw(&path, sort, options.limit, true);
                next = Instant::now() + options.interval;
            } else {
                // A key re-sorts at once.
                draw(&path, sort, options.limit, true);
            }
        } else {
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    drop(terminal);
    let outcome = match result {
        Ok(summary) => {
            // The last view, complete: the recording has its footer now.
            draw(&path, sort, options.limit, interactive);
            if interactive || keep {
                eprintln!("pydeep top: {} samples", summary.samples);
            }
            Ok(Exit::Ok)
        }
        Err(error) => Err(error),
    };
    if !keep {
        let _ = std::fs::remove_file(&path);
    }
    outcome
}

/// Prints the view of the recording at `path` (after clearing the screen
/// when `clear`).
fn draw(path: &std::path::Path, sort: SortBy, limit: usize, clear: bool) {
    let Ok(screen) = live_screen(path, sort, limit) else {
        // The first chunk is not flushed yet: nothing to show.
        return;
    };
    let mut out = std::io::stdout().lock();
    let text = if clear {
        // Home, clear, then lines ending \r\n (the terminal is raw).
        format!("\x1b[H\x1b[2J{}", screen.replace('\n', "\r\n"))
    } else {
        screen
    };
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// Waits until `deadline` for one key on standard input; the key, if one
/// came.
fn wait_for_key(deadline: Instant) -> Option<u8> {
    let timeout = deadline.saturating_duration_since(Instant::now());
    let mut poll = libc::pollfd {
        fd: libc::STDIN_FILENO,
        events: libc::POLLIN,
        revents: 0,
    };
    let millis = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd, count 1.
    let ready = unsafe { libc::poll(&mut poll, 1, millis) };
    if ready <= 0 || poll.revents & libc::POLLIN == 0 {
        return None;
    }
    let mut key = [0u8; 1];
    match std::io::stdin().read(&mut key) {
        Ok(1) => Some(key[0]),
        _ => {
            // End of input: wait out the interval instead of spinning.
            std::thread::sleep(timeout);
            None
        }
    }
}

/// The terminal in non-canonical mode without echo (keys arrive one by one;
/// Ctrl-C still signals) until dropped, which restores it.
struct RawKeys {
    saved: libc::termios,
}

impl RawKeys {
    fn enable() -> Option<RawKeys> {
        if !std::io::stdin().is_terminal() {
            return None;
        }
        // SAFETY: termios is plain data; tcgetattr fills it.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: valid fd and pointer.
        if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut saved) } != 0 {
            return None;
        }
        let mut raw = saved;
        raw.c_lflag &= !(libc::ICANON | libc::ECHO);
        raw.c_cc[libc::VMIN] = 1;
        raw.c_cc[libc::VTIME] = 0;
        // SAFETY: valid fd and pointer.
        if unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &raw) } != 0 {
            return None;
        }
        Some(RawKeys { saved })
    }
}

impl Drop for RawKeys {
    fn drop(&mut self) {
        // SAFETY: valid fd and the attributes read at enable.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.saved) };
    }
}
