//! `pydeep-view bytecode FILE [--function QUALNAME | --at FILE:LINE] [--top N]`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context};

use super::annotate::{AnnotateOptions, Profile};

/// Arguments of `pydeep-view bytecode`.
#[derive(Debug, Clone, clap::Args)]
pub struct BytecodeArgs {
    /// The .pdr recording.
    pub file: PathBuf,
    /// Show the code objects with this qualname (e.g. `Parser.parse`).
    #[arg(long, conflicts_with = "at")]
    pub function: Option<String>,
    /// Show the code objects of FILE that contain LINE (e.g. `app.py:42`).
    #[arg(long, value_name = "FILE:LINE")]
    pub at: Option<String>,
    /// Show at most N code objects, hottest first.
    #[arg(long, default_value_t = 3)]
    pub top: usize,
    /// Show the inline cache fields (counters, versions) under each
    /// instruction (3.11+).
    #[arg(long)]
    pub show_caches: bool,
}

/// Runs the subcommand, printing to stdout. A closed pipe (`| head`) ends
/// the listing quietly.
pub fn run(args: &BytecodeArgs) -> anyhow::Result<()> {
    let at = match &args.at {
        Some(spec) => {
            let Some((file, line)) = spec.rsplit_once(':') else {
                bail!("--at expects FILE:LINE, got {spec:?}");
            };
            let line: u32 = line
                .parse()
                .with_context(|| format!("--at {spec}: {line:?} is not a line number"))?;
            Some((file.to_string(), line))
        }
        None => None,
    };
    let options = AnnotateOptions {
        function: args.function.clone(),
        at,
        top: args.top,
        show_caches: args.show_caches,
    };
    let profile =
        Profile::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let ids = profile.select(&options)?;
    let mut stdout = std::io::stdout().lock();
    for (index, id) in ids.iter().enumerate() {
        let text = profile.render(*id, options.show_caches)?;
        let separator = if index > 0 { "\n" } else { "" };
        match write!(stdout, "{separator}{text}") {
            Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            other => other.context("writing to stdout")?,
        }
    }
    Ok(())
}
