//! The `mt-stream` binary: parses the command line, starts logging, and calls the library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "mt-stream", version, about = "The Monkeytown event-stream pod")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate this pod's HPA and PDB from its budget and server-side-apply them.
    Deploy(mt_stream::deploy::DeployArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts");
    let result = runtime.block_on(async {
        match cli.command {
            Command::Deploy(args) => mt_stream::deploy::run(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("mt-stream: {error:#}");
            ExitCode::FAILURE
        }
    }
}
