//! The `pydeep` binary: parses the command line, runs the command, and turns
//! any error into one clear line and its exit code.

use std::process::ExitCode;

use clap::Parser;
use pydeep::cli::exit::{exit_for, Exit};
use pydeep::cli::options::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The daemon handles its signals on its control plane (tokio).
    if !matches!(cli.command, pydeep::cli::options::Command::Daemon { .. }) {
        pydeep::cli::signals::install();
    }
    match pydeep::cli::commands::run(cli.command) {
        Ok(exit) => exit.code(),
        Err(error) => {
            if let Some(stop) = error
                .chain()
                .find_map(|c| c.downcast_ref::<pydeep::cli::signals::Interrupted>())
            {
                eprintln!("pydeep: {stop}");
                pydeep::cli::signals::die_by(stop.signal);
            }
            let exit = exit_for(&error);
            if exit != Exit::Ok {
                eprintln!("pydeep: error: {error:#}");
            }
            exit.code()
        }
    }
}
