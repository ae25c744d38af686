//! Where `record` and `attach` write: the `.pdr` recording, and with
//! `--format` one export of it made when recording ends (by the viewer
//! library's [`pydeep_view::export`], the same writers `pydeep-view` uses).

use std::path::{Path, PathBuf};

use pydeep_view::export::Format;

use crate::cli::exit::{Exit, Failure};
use crate::cli::options::RecordOptions;

/// The files one recording session writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outputs {
    /// The recording.
    pub recording: PathBuf,
    /// The export asked for with `--format`, and its path.
    pub export: Option<(Format, PathBuf)>,
    /// False with `--no-pdr`: the recording is deleted once exported.
    pub keep_recording: bool,
}

impl Outputs {
    /// The files of a session of `pid` (the target's for `attach`,
    /// pydeep's own for `record`) as `options` ask.
    pub fn plan(options: &RecordOptions, pid: i32) -> Outputs {
        let default_recording = || {
            let stamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            PathBuf::from(format!("pydeep-{pid}-{stamp}.pdr"))
        };
        let Some(format) = options.format else {
            return Outputs {
                recording: options.output.clone().unwrap_or_else(default_recording),
                export: None,
                keep_recording: true,
            };
        };
        let is_recording = |path: &Path| path.extension().is_some_and(|e| e == "pdr");
        let (recording, export) = match &options.output {
            Some(path) if !is_recording(path) => {
                let recording = if options.no_pdr {
                    // Written beside the export while recording (so a
                    // crash still leaves it readable), deleted after.
                    let mut name = path.clone().into_os_string();
                    name.push(".pdr");
                    PathBuf::from(name)
                } else {
                    recording_beside(path)
                };
                (recording, path.clone())
            }
            Some(path) => (path.clone(), format.path_beside(path)),
            None => {
                let recording = default_recording();
                let export = format.path_beside(&recording);
                (recording, export)
            }
        };
        Outputs {
            recording,
            export: Some((format, export)),
            keep_recording: !options.no_pdr,
        }
    }

    /// Refuses, before anything is recorded, an export path that is taken
    /// (without `force`) or is the recording's own path.
    pub fn check(&self, force: bool) -> Result<(), Failure> {
        let Some((_, export)) = &self.export else {
            return Ok(());
        };
        if export == &self.recording {
            return Err(Failure::new(
                Exit::OutputError,
                format!(
                    "--format would write over the recording {}: name another file with -o",
                    self.recording.display()
                ),
            ));
        }
        if !force && export.symlink_metadata().is_ok() {
            return Err(Failure::new(
                Exit::OutputError,
                format!(
                    "cannot create {}: it exists (replace it with --force, or name another file with -o)",
                    export.display()
                ),
            ));
        }
        Ok(())
    }

    /// Writes the export, if one was asked for, and deletes the recording
    /// with `--no-pdr` once that succeeded. If the export fails the
    /// recording is kept and the error says where it is.
    pub fn finish(&self, force: bool) -> Result<(), Failure> {
        let Some((format, export)) = &self.export else {
            return Ok(());
        };
        match pydeep_view::export::export(&self.recording, *format, export, force) {
            Ok(done) => {
                for warning in &done.warnings {
                    eprintln!("pydeep: warning: {warning}");
                }
                eprintln!("pydeep: wrote {} {}", format.name(), export.display());
                if !self.keep_recording {
                    let _ = std::fs::remove_file(&self.recording);
                }
                Ok(())
            }
            Err(error) => Err(Failure::new(
                Exit::OutputError,
                format!(
                    "cannot write the {} export {}: {error}; the recording is kept at {} (export it later with `pydeep-view {}`)",
                    format.name(),
                    export.display(),
                    self.recording.display(),
                    format.name()
                ),
            )),
        }
    }
}

/// `NAME.pdr` for an export named `NAME.EXT`.
fn recording_beside(export: &Path) -> PathBuf {
    let name = export
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // `profile.speedscope.json` -> `profile.pdr`: drop every extension.
    let stem = name
        .split('.')
        .next()
        .filter(|s| !s.is_empty())
        .unwrap_or("pydeep");
    export.with_file_name(format!("{stem}.pdr"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn plan(args: &[&str]) -> Outputs {
        let mut all = vec!["pydeep", "attach", "1"];
        all.extend_from_slice(args);
        match crate::cli::options::Cli::try_parse_from(all)
            .unwrap()
            .command
        {
            crate::cli::options::Command::Attach { options, .. } => Outputs::plan(&options, 1),
            _ => unreachable!(),
        }
    }

    #[test]
    fn an_export_named_by_o_gets_the_recording_beside_it() {
        let o = plan(&["-o", "/tmp/x/profile.svg", "--format", "flamegraph"]);
        assert_eq!(o.recording, PathBuf::from("/tmp/x/profile.pdr"));
        assert_eq!(
            o.export,
            Some((Format::Flamegraph, PathBuf::from("/tmp/x/profile.svg")))
        );
        assert!(o.keep_recording);
        let o = plan(&["-o", "p.speedscope.json", "-f", "speedscope", "--no-pdr"]);
        assert_eq!(o.recording, PathBuf::from("p.speedscope.json.pdr"));
        assert!(!o.keep_recording);
    }

    #[test]
    fn a_recording_named_by_o_gets_the_export_beside_it() {
        let o = plan(&["-o", "run.pdr", "--format", "raw"]);
        assert_eq!(o.recording, PathBuf::from("run.pdr"));
        assert_eq!(
            o.export,
            Some((Format::Collapsed, PathBuf::from("run.txt")))
        );
        let o = plan(&["--format", "pprof"]);
        let export = o.export.unwrap().1;
        assert!(export.to_string_lossy().ends_with(".pb.gz"));
        assert_eq!(export.with_extension("").with_extension("pdr"), o.recording);
    }

    #[test]
    fn no_pdr_needs_a_format_and_unknown_formats_are_named() {
        let error = crate::cli::options::Cli::try_parse_from(["pydeep", "attach", "1", "--no-pdr"])
            .unwrap_err()
            .to_string();
        assert!(error.contains("--format"), "{error}");
        let error =
            crate::cli::options::Cli::try_parse_from(["pydeep", "attach", "1", "-f", "png"])
                .unwrap_err()
                .to_string();
        assert!(error.contains("one of flamegraph"), "{error}");
    }
}
