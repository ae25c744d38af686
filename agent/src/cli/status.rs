//! The live status line shown on a terminal while recording.

use std::io::Write;
use std::time::{Duration, Instant};

/// A one-line, self-overwriting status on stderr; silent when disabled.
pub struct StatusLine {
    enabled: bool,
    last_drawn: Option<Instant>,
}

impl StatusLine {
    /// A status line, drawn only if `enabled`.
    pub fn new(enabled: bool) -> Self {
        StatusLine {
            enabled,
            last_drawn: None,
        }
    }

    /// Redraws at most four times a second.
    pub fn update(
        &mut self,
        samples: u64,
        ticks: u64,
        elapsed: Duration,
        lag: Duration,
        errors: u64,
        bytes: u64,
    ) {
        if !self.enabled
            || self
                .last_drawn
                .is_some_and(|t| t.elapsed() < Duration::from_millis(250))
        {
            return;
        }
        self.last_drawn = Some(Instant::now());
        let rate = ticks as f64 / elapsed.as_secs_f64().max(1e-9);
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[2Kpydeep: {samples} samples  {rate:.0} ticks/s  lag {:.2} ms  errors {errors}  {} KiB",
            lag.as_secs_f64() * 1e3,
            bytes / 1024
        );
        let _ = err.flush();
    }

    /// Erases the line.
    pub fn clear(&mut self) {
        if self.enabled && self.last_drawn.is_some() {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        }
    }
}
