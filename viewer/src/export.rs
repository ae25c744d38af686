//! One step from a recording to a picture: a whole recording written as one
//! standard output with each view's defaults, the way `pydeep record
//! --format F` and `pydeep attach --format F` finish (the same writers the
//! viewer's own subcommands use).

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use pydeep_format::files::{Existing, OutputFile};

use crate::aggregate::{Profile, ProfileOptions};
use crate::filter::Filter;
use crate::flamegraph::FlamegraphOptions;
use crate::input::Input;
use crate::pprof::PprofOptions;
use crate::symbols::Granularity;
use crate::ViewError;

/// The outputs a recording can be turned into in one step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Interactive flamegraph SVG (`pydeep-view flamegraph`).
    Flamegraph,
    /// speedscope JSON (`pydeep-view speedscope`).
    Speedscope,
    /// gzipped pprof profile.proto (`pydeep-view pprof`).
    Pprof,
    /// Chrome trace-event JSON for Perfetto (`pydeep-view chrome`).
    Chrome,
    /// Folded stacks, py-spy's `raw` (`pydeep-view collapsed`).
    Collapsed,
    /// The self-contained HTML report (`pydeep-view report`).
    Report,
}

impl Format {
    /// Every format, in the order help texts list them.
    pub const ALL: [Format; 6] = [
        Format::Flamegraph,
        Format::Speedscope,
        Format::Pprof,
        Format::Chrome,
        Format::Collapsed,
        Format::Report,
    ];

    /// The name users type (`--format NAME`).
    pub fn name(self) -> &'static str {
        match self {
            Format::Flamegraph => "flamegraph",
            Format::Speedscope => "speedscope",
            Format::Pprof => "pprof",
            Format::Chrome => "chrome",
            Format::Collapsed => "collapsed",
            Format::Report => "report",
        }
    }

    /// The file name ending an output of this format gets.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Flamegraph => "svg",
            Format::Speedscope => "speedscope.json",
            Format::Pprof => "pb.gz",
            Format::Chrome => "trace.json",
            Format::Collapsed => "txt",
            Format::Report => "html",
        }
    }

    /// The format named `name` (also py-spy's `raw` and `chrometrace`).
    pub fn parse(name: &str) -> Result<Format, String> {
        let alias = match name {
            "raw" => "collapsed",
            "chrometrace" | "perfetto" => "chrome",
            "svg" => "flamegraph",
            "html" => "report",
            other => other,
        };
        Format::ALL
            .into_iter()
            .find(|f| f.name() == alias)
            .ok_or_else(|| {
                let names: Vec<&str> = Format::ALL.iter().map(|f| f.name()).collect();
                format!("unknown format {name:?}: one of {}", names.join(", "))
            })
    }

    /// Where the output of `recording` goes: beside it, its `.pdr`
    /// replaced by this format's extension.
    pub fn path_beside(self, recording: &Path) -> PathBuf {
        let stem = match recording.extension() {
            Some(ext) if ext == "pdr" => recording.with_extension(""),
            _ => recording.to_path_buf(),
        };
        let mut name = stem.into_os_string();
        name.push(".");
        name.push(self.extension());
        PathBuf::from(name)
    }
}

/// What an export wrote.
#[derive(Debug)]
pub struct Exported {
    /// Samples counted in the output (not told for the report, which
    /// counts per view).
    pub samples: Option<u64>,
    /// The damage or gaps of the recording worth a warning, if any.
    pub warnings: Vec<String>,
}

/// Writes all of `recording` as `format` to `output`, created the one safe
/// way ([`OutputFile`]: never through a symbolic link; an existing file
/// only replaced if `replace`, by a new file renamed over it).
pub fn export(
    recording: &Path,
    format: Format,
    output: &Path,
    replace: bool,
) -> Result<Exported, ViewError> {
    let existing = if replace {
        Existing::ReplaceOrWriteDevice
    } else {
        Existing::Refuse
    };
    let file = OutputFile::create(output, existing, 0o666).map_err(|e| {
        ViewError::InvalidArgument(format!("cannot create {}: {e}", output.display()))
    })?;
    let mut out = BufWriter::with_capacity(1 << 16, file);
    let filter = Filter::default();
    let mut warnings = Vec::new();
    let samples = match format {
        Format::Chrome => {
            let mut input = Input::open(recording)?;
            let summary =
                crate::chrome::write(&mut input, &filter, Granularity::Function, &mut out)?;
            warnings.extend(summary.damage);
            Some(summary.samples)
        }
        Format::Report => {
            let report = crate::report::gather(
                recording,
                &filter,
                &crate::report::ReportOptions::default(),
            )?;
            warnings.extend(report.damage.clone());
            crate::report::write_page(&report.data, &mut out)?;
            None
        }
        _ => {
            let options = ProfileOptions {
                thread_states: format == Format::Flamegraph,
            };
            let profile = Profile::read_with(
                &mut Input::open(recording)?,
                &filter,
                Granularity::Function,
                &options,
            );
            warnings.extend(profile.damage.clone());
            warnings.extend(profile.gaps.clone());
            let name = recording.display().to_string();
            match format {
                Format::Flamegraph => {
                    crate::flamegraph::write(&profile, &FlamegraphOptions::default(), &mut out)?
                }
                Format::Speedscope => crate::speedscope::write(&profile, &name, &mut out)?,
                Format::Pprof => crate::pprof::write(&profile, &PprofOptions::default(), &mut out)?,
                Format::Collapsed => crate::collapsed::write(&profile, false, &mut out)?,
                Format::Chrome | Format::Report => unreachable!("handled above"),
            }
            Some(profile.total)
        }
    };
    out.flush()?;
    let file = out
        .into_inner()
        .map_err(|e| ViewError::Write(e.into_error()))?;
    file.commit()?;
    Ok(Exported { samples, warnings })
}
