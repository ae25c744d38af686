//! `pydeep-view`: turns pydeep `.pdr` recordings into reports.

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "pydeep-view",
    version,
    about = "Reports from pydeep recordings"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Annotated bytecode: the disassembly of the recorded code objects with
    /// samples per instruction, source lines and specializations.
    Bytecode(pydeep_view::bytecode::cli::BytecodeArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Bytecode(args) => pydeep_view::bytecode::cli::run(&args),
    }
}
